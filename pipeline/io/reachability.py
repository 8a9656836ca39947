"""Whether Cloud Storage can be reached from here, asked once at launch in seconds.

Without a network, Beam's Cloud Storage client retries each listing for 120 s and then fails with a
traceback; a launch that names a gs:// location asks first, and stops with one line instead.
"""
import os
import socket
import urllib.parse
from typing import Optional, Tuple

CLOUD_STORAGE = ('storage.googleapis.com', 443)
REACH_TIMEOUT_SECONDS = 5.0


def cloud_storage_endpoint() -> Tuple[str, int]:
    """Where a Cloud Storage request goes first: the emulator named by STORAGE_EMULATOR_HOST, else
    the HTTPS proxy of the environment, else Google's endpoint."""
    for variable in ('STORAGE_EMULATOR_HOST', 'HTTPS_PROXY', 'https_proxy'):
        value = os.environ.get(variable)
        if value:
            address = urllib.parse.urlsplit(value if '://' in value else f'http://{value}')
            default_port = 443 if address.scheme == 'https' else 80
            return address.hostname or CLOUD_STORAGE[0], address.port or default_port
    return CLOUD_STORAGE


def cloud_storage_problem(timeout: float = REACH_TIMEOUT_SECONDS) -> Optional[str]:
    """Why Cloud Storage cannot be reached (its endpoint named), or None when a connection opens."""
    host, port = cloud_storage_endpoint()
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except socket.gaierror as exc:
        return f'{host} does not resolve ({exc.strerror or exc})'
    except OSError as exc:
        return f'no connection to {host}:{port} ({exc.strerror or type(exc).__name__})'
