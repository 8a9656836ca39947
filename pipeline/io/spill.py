"""Where the evaluation's join parts wait on a local run: in files of a folder the run made for itself,
so that a reference of a few bytes goes through the join instead of the part. The local runner holds
and copies whatever a GroupByKey carries, several times over, in its own process and through gRPC; on
Dataflow the shuffle service carries the parts themselves and nothing is spilled."""
import logging
import os
import re
import shutil
import socket
import tempfile
import uuid
from typing import BinaryIO, List, Optional, Tuple, Union

SpillRef = Tuple[str, int, int]  # (file, offset, length): a tuple, so Beam's coder encodes it natively
Payload = Union[bytes, SpillRef]

SPILL_PREFIX = 'prediction-tables-join-'


# A run's folder names its host and process, so a later run can tell the folders of runs that were
# killed (a `finally` cannot run on SIGKILL) from those of runs still going.
_OWNED = re.compile(re.escape(SPILL_PREFIX) + r'(?P<host>.+)-(?P<pid>[0-9]+)-[A-Za-z0-9_]{8}')


def make_spill_folder() -> Optional[str]:
    """A new folder of this run's own under the system's temporary folder ($TMPDIR); None when none
    can be made there (the parts then travel through the join themselves, in memory). The folders of
    runs of this host that are gone are removed first."""
    remove_stale_spill_folders(tempfile.gettempdir())
    try:
        return tempfile.mkdtemp(prefix=f'{SPILL_PREFIX}{socket.gethostname()}-{os.getpid()}-')
    except OSError as exc:
        logging.getLogger(__name__).warning(
            'The evaluation keeps its join in memory: no folder could be made under %s (%s); set TMPDIR to a '
            'writable disk to spare the memory', tempfile.gettempdir(), exc)
        return None


def remove_stale_spill_folders(parent: str) -> List[str]:
    """Removes the spill folders under `parent` that runs of this host left when they were killed
    (their process is gone); returns them. A folder of a live process, of another host or named
    otherwise is left alone."""
    removed: List[str] = []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    host = socket.gethostname()
    for name in names:
        match = _OWNED.fullmatch(name)
        path = os.path.join(parent, name)
        if (match and match['host'] == host and not _alive(int(match['pid'])) and os.path.isdir(path)
                and not os.path.islink(path)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    if removed:
        logging.getLogger(__name__).warning('Removed %d spill folders of killed runs: %s', len(removed),
                                            ', '.join(removed))
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's, or no such number: not ours to judge
    return True


def remove_spill_folder(folder: Optional[str]) -> None:
    """The run made it (make_spill_folder) and only the run's workers wrote in it."""
    if folder and os.path.basename(folder.rstrip('/')).startswith(SPILL_PREFIX):
        shutil.rmtree(folder, ignore_errors=True)


class SpillWriter:
    """Appends parts to one file per writer (one per bundle: a retried bundle writes a file of its own,
    and the references of a failed attempt are dropped with it). Without a folder (a run whose shuffle
    carries the parts: Dataflow), each part passes as it is."""

    def __init__(self, folder: Optional[str]):
        self._folder = folder
        self._handle: Optional[BinaryIO] = None
        self._path = ''
        self._offset = 0

    def put(self, data: bytes) -> Payload:
        if self._folder is None:
            return data
        if self._handle is None:
            self._path = os.path.join(self._folder, f'{uuid.uuid4().hex}.parts')
            self._handle = open(self._path, 'xb')  # pylint: disable=consider-using-with
            self._offset = 0
        handle = self._handle
        handle.write(data)
        ref = (self._path, self._offset, len(data))
        self._offset += len(data)
        return ref

    def close(self) -> None:
        """Before the bundle ends: its references are read only after the join."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def read_payload(payload: Payload) -> bytes:
    """The part itself: as it came, or read back from its file."""
    if isinstance(payload, bytes):
        return payload
    path, offset, length = payload
    with open(path, 'rb') as handle:
        handle.seek(offset)
        data = handle.read(length)
    if len(data) != length:
        raise OSError(f'{path} holds {len(data)} of the {length} bytes spilled at {offset}: was it removed or cut?')
    return data
