"""A run lock per output location, so that two runs never write into the same place at once.

Local folders: a lock file held with flock(2), which the kernel releases when the process dies, so a
killed run never blocks the next one. Cloud Storage: an object created only if absent
(ifGenerationMatch=0); the job removes it after writing its summary. A lock left by a run that has
ended without a summary (killed, failed) stays as the evidence that the files bearing our names there
are that run's, which the next run may replace.
"""
import errno
import fcntl
import json
import os
import socket
import time
from typing import Optional

from pipeline.core.shards import scheme_of

RUNNING = 'running'
ENDED = 'ended'  # the run stopped without a summary: its lock only marks its files


class LockHeld(Exception):
    """Another run holds the lock; the message names the lock and the holder."""


def lock_document(run_id: str, input_location: Optional[str], state: str = RUNNING) -> bytes:
    return json.dumps({'run_id': run_id, 'state': state, 'host': socket.gethostname(),
                       'pid': os.getpid(), 'started': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
                       'input': input_location}).encode('utf-8') + b'\n'


def describe_holder(data: bytes) -> str:
    try:
        holder = json.loads(data)
        return (f'run {holder["run_id"]} started {holder["started"]} on {holder["host"]} '
                f'(pid {holder["pid"]}), reading {holder.get("input")}')
    except (ValueError, KeyError, TypeError):
        return 'a run whose lock cannot be read'


def is_stale(data: bytes) -> bool:
    """Whether a lock's holder is known to have stopped: it says so, or it was a process of this
    machine that no longer exists."""
    try:
        holder = json.loads(data)
    except ValueError:
        return False
    if not isinstance(holder, dict):
        return False
    if holder.get('state') == ENDED:
        return True
    if holder.get('host') != socket.gethostname() or not isinstance(holder.get('pid'), int):
        return False
    try:
        os.kill(holder['pid'], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class RunLock:
    """The lock at `path` for the run `run_id`. acquire() says whether it took over the lock of an
    earlier run of ours that had stopped (whose files it may then replace)."""

    def __init__(self, path: str, run_id: str, input_location: Optional[str]):
        self.path = path
        self._run_id = run_id
        self._input = input_location
        self._fd: Optional[int] = None
        self._generation: Optional[int] = None
        self.took_over = False

    def acquire(self) -> bool:
        self.took_over = self._acquire_gcs() if scheme_of(self.path) == 'gs' else self._acquire_local()
        return self.took_over

    def release(self, keep: bool) -> None:
        """Without `keep` the lock goes (the run completed, or it stopped before writing anything).
        With it, the lock stays, marked as ended, as the evidence of which files are ours."""
        if scheme_of(self.path) == 'gs':
            self._release_gcs(keep)
        elif self._fd is not None:
            try:
                if not keep:
                    os.unlink(self.path)
                else:
                    _rewrite(self._fd, lock_document(self._run_id, self._input, ENDED))
            finally:
                os.close(self._fd)  # drops the flock
                self._fd = None

    # Local folders ------------------------------------------------------------------------------
    def _acquire_local(self) -> bool:
        os.makedirs(os.path.dirname(self.path) or '.', exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_fd(fd)
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    raise LockHeld(f'{self.path} is held by {describe_holder(holder)}: wait for that '
                                   f'run to end, or write elsewhere') from None
                raise
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path, follow_symlinks=False).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the holder removed it between our open and our flock: start again
                os.close(fd)
                continue
            earlier = _read_fd(fd)
            _rewrite(fd, lock_document(self._run_id, self._input))
            self._fd = fd
            return bool(earlier.strip())  # it was not held, so its run has stopped

    # Cloud Storage ------------------------------------------------------------------------------
    def _blob(self):
        return gcs_blob(self.path)

    def _acquire_gcs(self) -> bool:
        from google.api_core import exceptions
        blob = self._blob()
        took_over = False
        for _ in range(3):
            try:
                blob.upload_from_string(lock_document(self._run_id, self._input),
                                        content_type='application/json', if_generation_match=0)
                self._generation = blob.generation
                return took_over
            except exceptions.PreconditionFailed:
                pass
            try:
                blob.reload()
                holder = blob.download_as_bytes(if_generation_match=blob.generation)
            except (exceptions.NotFound, exceptions.PreconditionFailed):
                continue  # it went away meanwhile: try again
            if not is_stale(holder):
                raise LockHeld(f'{self.path} is held by {describe_holder(holder)}: wait for that run '
                               f'to end; if no run is writing there any more, delete {self.path}')
            try:
                blob.delete(if_generation_match=blob.generation)
                took_over = True
            except (exceptions.NotFound, exceptions.PreconditionFailed):
                continue
        raise LockHeld(f'{self.path}: another run keeps taking this lock')

    def _release_gcs(self, keep: bool) -> None:
        from google.api_core import exceptions
        if self._generation is None:
            return
        blob = self._blob()
        try:
            if not keep:
                blob.delete(if_generation_match=self._generation)
            else:
                blob.upload_from_string(lock_document(self._run_id, self._input, ENDED),
                                        content_type='application/json',
                                        if_generation_match=self._generation)
        except (exceptions.NotFound, exceptions.PreconditionFailed):
            pass  # the job released it, or another run took it over
        self._generation = None


def release_gcs_lock(path: str, run_id: str) -> None:
    """Run by the job itself after its summary (a Dataflow job outlives its launcher): removes the
    lock if it is still this run's."""
    from google.api_core import exceptions
    blob = gcs_blob(path)
    try:
        blob.reload()
        holder = json.loads(blob.download_as_bytes(if_generation_match=blob.generation))
        if isinstance(holder, dict) and holder.get('run_id') == run_id:
            blob.delete(if_generation_match=blob.generation)
    except (exceptions.NotFound, exceptions.PreconditionFailed, ValueError):
        pass


def gcs_blob(path: str):
    """The Cloud Storage object at `path`, through Beam's own storage client (imported here: local
    runs never need it)."""
    from apache_beam.io.gcp.gcsio import GcsIO, parse_gcs_path
    bucket, name = parse_gcs_path(path)
    return GcsIO().client.bucket(bucket).blob(name)


def _read_fd(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 64 * 1024)


def _rewrite(fd: int, data: bytes) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, data)
    os.fsync(fd)
