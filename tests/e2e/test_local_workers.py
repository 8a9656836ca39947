"""Local batch runs over a large input use worker processes, one per core up to a cap, unless the user
chose Beam's direct-runner flags; small inputs stay in one process, where Beam starts fastest. The
worker processes are forked from the launcher (io.local_workers), and never outlive it."""
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import psutil
import pytest
from apache_beam.options.pipeline_options import DirectOptions
from conftest import ROOT, SAMPLE

from pipeline import cli
from pipeline.core import shards
from pipeline.io import local_workers

MB = 1024 * 1024
LEGACY, VERTEX = 'image_object_detection_1.jsonl', 'predictions_00001.jsonl'
LEGACY_BIG = 800 * MB  # about 3.6 M annotations of the legacy format: past either crossing
VERTEX_BIG = 330 * MB  # the same in Vertex AI's format, which spells fewer keys


@pytest.mark.parametrize('sizes, cpus, workers', [
    ({LEGACY: 300 * MB}, 8, 1),  # below the crossing: one process
    ({VERTEX: 120 * MB}, 8, 1),
    ({LEGACY: LEGACY_BIG}, 1, 1),  # one core
    ({LEGACY: LEGACY_BIG}, 2, 2),
    ({VERTEX: VERTEX_BIG}, 2, 2),  # a Vertex AI input of this size is as much work
    ({VERTEX: 700 * MB}, 64, cli.MAX_LOCAL_WORKERS),  # capped: each worker takes memory
    ({LEGACY + '.gz': 120 * MB, VERTEX + '.gz': 10 * MB}, 8, 2),  # compressed: more work per byte; a .gz
    # is one unit of work, so no more workers than shards
    ({LEGACY: LEGACY_BIG // 2, 'image_object_detection_2.jsonl': LEGACY_BIG // 2}, 4, 4),  # the total counts
])
def test_workers_follow_the_work_in_the_input_the_cores_and_the_units_of_work(sizes, cpus, workers):
    assert cli.local_workers(sizes, cpus) == workers


def test_workers_that_beam_starts_anew_pay_from_a_larger_input():
    """About 3 M annotations: past the crossing of forked workers, below that of Beam's own."""
    assert cli.local_workers({LEGACY: 700 * MB}, 2) == 2
    assert cli.local_workers({LEGACY: 700 * MB}, 2, forked=False) == 1
    assert cli.local_workers({LEGACY: LEGACY_BIG}, 2, forked=False) == 2


def test_the_estimate_weighs_each_format_by_its_bytes_per_annotation():
    assert shards.annotations_estimate('gs://b/run/' + LEGACY, 235 * 1000) == pytest.approx(1000)
    assert shards.annotations_estimate('/x/' + VERTEX, 95 * 1000) == pytest.approx(1000)
    assert shards.annotations_estimate('/x/' + VERTEX + '.gz', 33 * 1000) == pytest.approx(1000)


def prepared(tmp_path, *extra):
    plan = cli.prepare(['--input', str(SAMPLE / 'input'), '--output', str(tmp_path / 'out'), *extra])
    return plan.pipeline_options.view_as(DirectOptions)


def test_a_large_local_input_runs_on_worker_processes(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, 'LOCAL_PARALLEL_MIN_ANNOTATIONS', 1)  # the sample counts as large
    monkeypatch.setattr(cli, 'SPAWNED_WORKERS_MIN_ANNOTATIONS', 1)
    monkeypatch.setattr(os, 'cpu_count', lambda: 4)
    direct = prepared(tmp_path)
    assert (direct.direct_num_workers, direct.direct_running_mode) == (4, 'multi_processing')
    assert 'running on 4 local worker processes' in capsys.readouterr().err


@pytest.mark.parametrize('flag', ['--direct_num_workers=1', '--direct_running_mode=in_memory'])
def test_the_users_direct_runner_flags_win(tmp_path, monkeypatch, capsys, flag):
    monkeypatch.setattr(cli, 'LOCAL_PARALLEL_MIN_ANNOTATIONS', 1)
    monkeypatch.setattr(cli, 'SPAWNED_WORKERS_MIN_ANNOTATIONS', 1)
    direct = prepared(tmp_path, flag)
    assert (direct.direct_num_workers, direct.direct_running_mode) == (1, 'in_memory')
    assert 'worker processes' not in capsys.readouterr().err


def test_small_inputs_and_other_runners_are_left_alone(tmp_path, capsys):
    assert prepared(tmp_path).direct_num_workers == 1  # the sample is far below the threshold
    direct = prepared(tmp_path, '--runner=BundleBasedDirectRunner')
    assert direct.direct_num_workers == 1
    assert capsys.readouterr().err == ''


def test_a_run_on_worker_processes_prints_the_same_summary(tmp_path, monkeypatch, capsys):
    args = ['--input', str(SAMPLE / 'input'), '--image_size', '640x480', '--report=false']
    first, second = tmp_path / 'in-this-process', tmp_path / 'on-worker-processes'
    assert cli.main(args + ['--output', str(first)]) == 0
    one = capsys.readouterr().out
    monkeypatch.setattr(cli, 'LOCAL_PARALLEL_MIN_ANNOTATIONS', 1)
    monkeypatch.setattr(cli, 'SPAWNED_WORKERS_MIN_ANNOTATIONS', 1)
    monkeypatch.setattr(os, 'cpu_count', lambda: 2)
    assert cli.main(args + ['--output', str(second)]) == 0
    captured = capsys.readouterr()
    assert 'running on 2 local worker processes' in captured.err
    # Only the output's own path differs (a checkout's path may hold any word).
    assert one.replace(str(first), str(second)) == captured.out


@pytest.fixture
def short_tmp(monkeypatch):
    """A temporary folder of a short path, for the workers' socket (pytest's own paths are too long
    for a Unix socket, and the run would then start Beam's workers itself)."""
    folder = tempfile.mkdtemp(prefix='pt-', dir='/tmp')
    monkeypatch.setattr(tempfile, 'tempdir', folder)
    yield pathlib.Path(folder)
    shutil.rmtree(folder, ignore_errors=True)


def launched(args, tmp):
    """A launcher process of its own (as a user starts one), TMPDIR short enough for the socket."""
    return psutil.Popen([sys.executable, '-m', 'pipeline', *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL, env=dict(os.environ, TMPDIR=str(tmp)))


def test_worker_processes_are_forked_from_the_launcher_not_started_anew(tmp_path, short_tmp):
    args = ['--input', SAMPLE / 'input', '--image_size', '640x480', '--report=false']
    one = launched(args + ['--output', tmp_path / 'one', '--direct_num_workers=1'], short_tmp).communicate()[0]
    launcher = launched(args + ['--output', tmp_path / 'two', '--direct_num_workers=2',
                                '--direct_running_mode=multi_processing'], short_tmp)
    seen = set()  # (pid, command line) of every process under the launcher, as each was (sh, then what
    # it runs; a zombie's is empty)
    while launcher.poll() is None:
        for child in launcher.children(recursive=True):
            try:
                seen.add((child.pid, ' '.join(child.cmdline())))
            except psutil.Error:
                pass
        time.sleep(0.02)
    assert launcher.returncode == 0
    assert one.replace(bytes(tmp_path / 'one'), bytes(tmp_path / 'two')) == launcher.stdout.read()
    commands = [command for _, command in seen]
    worker_commands = {pid for pid, command in seen
                       if command.startswith(sys.executable) and local_workers.__name__ in command}
    assert len(worker_commands) == 2, commands  # Beam's two worker commands
    assert not any(local_workers.BEAM_WORKER_MODULE in command for command in commands)  # none imported Beam anew
    assert not list(short_tmp.iterdir())  # the socket's folder removed


def test_a_process_that_has_run_a_pipeline_forks_no_worker(tmp_path, monkeypatch, capsys):
    """A second run in one process (a notebook) gets Beam's own worker processes: the first run's gRPC
    threads would be in the forked workers."""
    assert cli.main(['--input', str(SAMPLE / 'input'), '--output', str(tmp_path / 'out'), '--report=false']) == 0
    assert not local_workers.PreloadedWorkers.available(2)


def command_line(process: psutil.Process) -> str:
    try:
        return ' '.join(process.cmdline())
    except psutil.Error:  # gone meanwhile
        return ''


def test_killing_the_launcher_stops_its_workers(tmp_path, short_tmp):
    """The OOM killer or a kill -9 takes the launcher only: its forked workers die with it (Linux's
    parent-death signal), and Beam's worker commands follow as their worker's socket closes."""
    sys.path.insert(0, str(ROOT / 'bench'))
    from generate import generate
    generate(str(tmp_path / 'in'), images=20_000, shards=4)
    out = tmp_path / 'out'
    launcher = launched(['--input', tmp_path / 'in', '--output', out, '--direct_num_workers=2',
                         '--direct_running_mode=multi_processing', '--quiet'], short_tmp)
    deadline = time.monotonic() + 60
    while not list(out.glob('**/beam-temp*/*')) and time.monotonic() < deadline:
        time.sleep(0.05)  # the workers are writing
    workers = launcher.children(recursive=True)
    assert any(local_workers.__name__ in command_line(process) for process in workers)
    launcher.kill()
    launcher.wait()
    gone, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, [process.cmdline() for process in alive]


def test_a_worker_command_that_finds_no_waiting_worker_runs_beams_own(tmp_path, monkeypatch):
    assert local_workers._taken(str(tmp_path / 'none')) is None  # no socket: every worker taken
    monkeypatch.setattr(local_workers, '_TAKE_TIMEOUT_S', 0.2)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = tempfile.mktemp(prefix='pt-', dir='/tmp')
    listener.bind(path)
    listener.listen(1)
    try:
        assert local_workers._taken(path) is None  # a socket that no worker answers
    finally:
        listener.close()
        os.unlink(path)


def test_workers_are_preloaded_only_where_they_can_be():
    assert not local_workers.PreloadedWorkers.available(1)  # one worker: Beam runs it in this process
    fresh = subprocess.run([sys.executable, '-c', 'from pipeline.io.local_workers import PreloadedWorkers; '
                            'print(PreloadedWorkers.available(2))'], cwd=ROOT, capture_output=True, text=True)
    assert fresh.stdout.strip() == str(sys.platform.startswith('linux'))


def test_workers_that_cannot_be_forked_leave_the_run_to_beams_own(short_tmp, monkeypatch, caplog):
    """No process left to fork (EAGAIN under a process limit): the launch says so and goes on; nothing
    of the attempt is left behind."""
    def no_process_left():
        raise BlockingIOError(11, 'Resource temporarily unavailable')
    monkeypatch.setattr(os, 'fork', no_process_left)
    assert local_workers.PreloadedWorkers.start(2) is None
    assert 'Beam starts each one' in caplog.text and 'Resource temporarily unavailable' in caplog.text
    assert not list(short_tmp.iterdir())
