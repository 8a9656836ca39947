"""The launch's question "can Cloud Storage be reached?", against real sockets."""
import socket

import pytest

from pipeline.io import reachability


@pytest.mark.parametrize('environment, endpoint', [
    ({}, ('storage.googleapis.com', 443)),
    ({'STORAGE_EMULATOR_HOST': 'http://127.0.0.1:4443'}, ('127.0.0.1', 4443)),
    ({'STORAGE_EMULATOR_HOST': 'localhost:9023'}, ('localhost', 9023)),
    ({'HTTPS_PROXY': 'http://proxy.corp:3128'}, ('proxy.corp', 3128)),
    ({'https_proxy': 'https://proxy.corp'}, ('proxy.corp', 443)),
    ({'STORAGE_EMULATOR_HOST': 'http://emulator:80', 'HTTPS_PROXY': 'http://proxy:3128'}, ('emulator', 80)),
])
def test_the_endpoint_is_the_first_place_a_request_goes(monkeypatch, environment, endpoint):
    for variable in ('STORAGE_EMULATOR_HOST', 'HTTPS_PROXY', 'https_proxy'):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    assert reachability.cloud_storage_endpoint() == endpoint


def test_a_listening_endpoint_is_reachable_and_a_closed_one_says_why(monkeypatch):
    with socket.socket() as server:
        server.bind(('127.0.0.1', 0))
        server.listen()
        monkeypatch.setenv('STORAGE_EMULATOR_HOST', f'http://127.0.0.1:{server.getsockname()[1]}')
        assert reachability.cloud_storage_problem(timeout=5) is None
    problem = reachability.cloud_storage_problem(timeout=5)
    assert problem is not None and problem.startswith('no connection to 127.0.0.1:')


def test_a_name_that_does_not_resolve_says_so(monkeypatch):
    monkeypatch.setenv('STORAGE_EMULATOR_HOST', 'http://no-such-host.invalid:4443')
    problem = reachability.cloud_storage_problem(timeout=5)
    assert problem is not None and problem.startswith('no-such-host.invalid does not resolve')
