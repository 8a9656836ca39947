"""Local worker processes that start at once: forked from the launcher after Beam and the pipeline
are imported, instead of each being a new Python that imports them again.

Beam's local runner starts every worker process with `python -m
apache_beam.runners.worker.sdk_worker_main`, which imports Beam's worker, then the pipeline's modules
as its steps are unpickled: 2.5-3 s before the first stage can run, on every run, whatever its size.
Here the launcher forks the workers once its own imports are done, before Beam starts any thread or
gRPC server; each child waits on a Unix socket. Beam's runner still starts a process per worker, the
command of `PreloadedWorkers.command()`: a Python that imports nothing but this module's standard
library, hands its environment (the runner's addresses, the pipeline options) to a waiting child, and
exits with the child's exit code, so the runner sees a worker process as it always does. The child
runs Beam's own worker main. A command that finds no child waiting runs Beam's worker itself.
"""
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import threading
from typing import List, Optional

# The longest path of a Unix socket (sun_path) on Linux, its terminating zero included.
_SOCKET_PATH_MAX = 107
BEAM_WORKER_MODULE = 'apache_beam.runners.worker.sdk_worker_main'
# Whether a pipeline has run in this process: Beam's runner then started gRPC and its threads, which a
# forked child would inherit in whatever state they were (a worker forked after that can hang). A
# process runs our launcher once; a notebook that runs it again gets Beam's own worker processes.
_runner_started = False
# How long a worker command waits for a waiting child to take its request before it runs Beam's
# worker itself (a child takes it at once; none is waiting once all have been taken).
_TAKE_TIMEOUT_S = 10.0
_TAKEN = b'T'


class PreloadedWorkers:
    """`count` forked worker processes waiting for Beam's runner. Use as a context manager around the
    run: on leaving, the children that were not needed are stopped and every child is reaped."""

    def __init__(self, count: int):
        self._folder = tempfile.mkdtemp(prefix='prediction-tables-workers-')
        self.socket_path = os.path.join(self._folder, 'workers')
        self._children: List[int] = []
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(self.socket_path)
            listener.listen(count)
            parent = os.getpid()
            for _ in range(count):
                pid = os.fork()
                if pid == 0:  # the child: never returns
                    _serve(listener, parent)
                self._children.append(pid)
        except BaseException:
            listener.close()
            self.close()
            raise
        listener.close()  # the children hold it open until each has taken a request

    @classmethod
    def start(cls, count: int) -> Optional['PreloadedWorkers']:
        """The workers, or None when they cannot be started (no room for the socket, no process left
        to fork): the run then gets Beam's own worker processes, and the launch says why."""
        try:
            return cls(count)
        except OSError as exc:
            logging.getLogger(__name__).warning(
                'Starting the worker processes the slower way (Beam starts each one): %s', exc)
            return None

    @staticmethod
    def available(count: int) -> bool:
        """Whether more than one worker is asked for, this platform forks (Linux), a fork is safe (no
        pipeline has run in this process, no other thread runs) and the socket's path fits (a long
        TMPDIR would not)."""
        folder = tempfile.gettempdir()
        return (count > 1 and sys.platform.startswith('linux') and hasattr(os, 'fork') and not _runner_started
                and threading.active_count() == 1
                and len(os.path.join(folder, 'prediction-tables-workers-XXXXXXXX', 'workers')) <= _SOCKET_PATH_MAX)

    def command(self) -> str:
        """The worker command for Beam's runner (run through a shell)."""
        return f'{shlex.quote(sys.executable)} -m {__name__} {shlex.quote(self.socket_path)}'

    def close(self) -> None:
        """Reaps the children that ran a worker; stops and reaps those still waiting (workers the
        runner did not ask for, or a run that failed before it started its workers)."""
        waiting = []
        for pid in self._children:
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == 0:
                    waiting.append(pid)
            except ChildProcessError:
                pass
        for pid in waiting:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        self._children = []
        shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self) -> 'PreloadedWorkers':
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def runner_starting() -> None:
    """Called before any pipeline of this process runs: from then on, no worker is forked from it."""
    global _runner_started
    _runner_started = True


def _serve(listener: socket.socket, parent: int) -> None:
    """A forked child: waits for one worker command, then runs Beam's worker main with its
    environment; the command learns the exit code. Exits, never returns."""
    code = 1
    try:
        _exit_with_parent(parent)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the launcher's to handle; it stops us
        connection, _ = listener.accept()
        listener.close()
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a worker stops on it, as Beam's do
        connection.sendall(_TAKEN)
        request = connection.makefile('rb').readline()  # one line of JSON (json.dumps writes no line end)
        if not request.endswith(b'\n'):
            raise ConnectionError('the worker command went away')
        os.environ.clear()
        os.environ.update(json.loads(request))
        # The command gone (the runner stopped the worker): this process goes too.
        threading.Thread(target=_exit_on_close, args=(connection,), daemon=True).start()
        code = _run_beam_worker()
        connection.sendall(b'%d\n' % code)
    except KeyboardInterrupt:
        code = 128 + signal.SIGINT
    except BaseException:  # the command reports it as a failed worker
        import traceback
        traceback.print_exc()
    finally:
        os._exit(code)


def _run_beam_worker() -> int:
    """Beam's worker main, as a fresh worker process would run it: its logging replaces the
    launcher's handlers this process inherited."""
    from apache_beam.runners.worker import sdk_worker_main
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    try:
        sdk_worker_main.main([])
    except SystemExit as exc:  # sys.exit(None) is a success, sys.exit('message') a failure
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return 0


def _exit_with_parent(parent: int) -> None:
    """The child dies with the launcher, however the launcher ends (Linux's parent-death signal)."""
    import ctypes
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the launcher ended before the signal was set
        os._exit(1)


def _exit_on_close(connection: socket.socket) -> None:
    try:
        while connection.recv(1):
            pass
    except OSError:
        pass
    os._exit(1)


def main(argv: List[str]) -> int:
    """The worker command: hands this process's environment to a waiting child and waits for its exit
    code; runs Beam's worker itself when no child takes the request."""
    connection = _taken(argv[1])
    if connection is None:
        os.execv(sys.executable, [sys.executable, '-m', BEAM_WORKER_MODULE])
    connection.sendall(json.dumps(dict(os.environ)).encode('utf-8') + b'\n')
    answer = connection.makefile('rb').readline()  # the worker's exit code
    return int(answer) if answer.endswith(b'\n') else 1  # nothing: the worker died without a word


def _taken(path: str) -> Optional[socket.socket]:
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.settimeout(_TAKE_TIMEOUT_S)
        connection.connect(path)
        if connection.recv(1) != _TAKEN:
            raise ConnectionError('no child took the request')
        connection.settimeout(None)
        return connection
    except OSError:
        connection.close()
        return None


if __name__ == '__main__':
    sys.exit(main(sys.argv))
