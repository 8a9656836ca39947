"""Finding and reading shards: input resolution, discovery under --input, the range reader and the
gzip reader.

Lines are read as bytes by our own range reader rather than Beam's text source: a bad byte, a
truncated or damaged .gz or an unreadable file must become a dead letter, and Beam's reader would
fail the run or hide the break (its decompressor returns a truncated stream's first part without an
error).
"""
import errno
import fcntl
import glob
import os
import re
import stat
import zlib
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Set, Tuple, Union

import orjson
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline.core.shards import OTHER, classify, is_compressed, scheme_of

_GLOB_CHARS = re.compile(r'[*?\[]')
_UTF8_BOM = b'\xef\xbb\xbf'
# Operation / job JSON files are small; anything larger is not one.
_MAX_OPERATION_BYTES = 16 * 1024 * 1024
_READ_CHUNK = 1024 * 1024


class InputError(ValueError):
    """--input names nothing that can be read."""


class ReadFailure(Exception):
    """Reading a shard broke part-way; `partial_line` holds the bytes of the unfinished line."""

    def __init__(self, cause: Exception, partial_line: bytes):
        super().__init__(f'{type(cause).__name__}: {cause}')
        self.partial_line = partial_line


class Found(NamedTuple):
    """A file under --input (a local one after resolving its links)."""
    path: str
    size: int


class Unlisted(NamedTuple):
    """Something under --input that cannot be read: a dangling or looping link, a folder that
    cannot be listed. It becomes an `unreadable_file` dead letter."""
    path: str
    reason: str


def discover(pattern: str, skip: Optional[Callable[[str], bool]] = None
             ) -> Iterator[Union[Found, Unlisted]]:
    """Every file the input pattern covers, in a stable order. Local links are followed, each folder
    and file read once (loop protection); `skip` leaves out paths that belong to our own outputs."""
    skip = skip or (lambda path: False)
    if scheme_of(pattern) == 'file':
        yield from _discover_local(pattern, skip)
        return
    for metadata in FileSystems.match([pattern])[0].metadata_list:
        if not skip(metadata.path):
            yield Found(metadata.path, metadata.size_in_bytes)


def _discover_local(pattern: str, skip: Callable[[str], bool]) -> Iterator[Union[Found, Unlisted]]:
    roots = glob.glob(pattern[:-3] if pattern.endswith('/**') else pattern)
    seen: Set[Tuple[int, int]] = set()
    stack = sorted(roots, reverse=True)
    while stack:
        path = stack.pop()
        if skip(path):
            continue
        try:
            info = os.stat(path)
        except OSError as exc:
            yield Unlisted(path, _link_problem(path, exc))
            continue
        key = (info.st_dev, info.st_ino)
        if key in seen:
            continue  # a folder or file reached again through a link: read once
        seen.add(key)
        if not stat.S_ISDIR(info.st_mode):
            yield Found(path, info.st_size if stat.S_ISREG(info.st_mode) else 0)
            continue
        try:
            names = os.listdir(path)
        except OSError as exc:
            yield Unlisted(path, f'the folder cannot be listed: {exc.strerror or exc}')
            continue
        stack.extend(os.path.join(path, name) for name in sorted(names, reverse=True))


def _link_problem(path: str, exc: OSError) -> str:
    if os.path.islink(path):
        if exc.errno == errno.ELOOP:
            return 'a link that loops (too many levels of symbolic links)'
        return f'a link to {os.readlink(path)!r}, which cannot be read: {exc.strerror or exc}'
    return f'cannot be read: {exc.strerror or exc}'


def matched_shards(pattern: str, skip: Optional[Callable[[str], bool]] = None) -> Dict[str, int]:
    """Path -> size of the result and error shards under the pattern (one listing)."""
    return {found.path: found.size for found in discover(pattern, skip)
            if isinstance(found, Found) and classify(found.path) != OTHER}


SHARD_NAMES = 'image_object_detection_N.jsonl, predictions_N.jsonl, errors_N.jsonl, or their .gz'


def check_holds_shards(pattern: str, skip: Optional[Callable[[str], bool]] = None, named: int = 3) -> None:
    """Raises InputError, saying what the input holds instead, when it holds no result or error shard:
    a run over it would write empty tables."""
    others: List[str] = []
    unreadable: List[str] = []
    for found in discover(pattern, skip):
        if isinstance(found, Unlisted):
            unreadable.append(found.path)
        elif classify(found.path) != OTHER:
            return
        else:
            others.append(found.path)
    what = [f'{len(others)} other file(s) ({", ".join(os.path.basename(p) for p in others[:named])}'
            f'{", ..." if len(others) > named else ""})'] if others else []
    what += [f'{len(unreadable)} that cannot be read ({", ".join(unreadable[:named])})'] if unreadable else []
    raise InputError(f'--input: {input_root(pattern)} holds no prediction shard ({SHARD_NAMES}); found '
                     + ' and '.join(what or ['nothing']) + '. Give the output folder of a batch prediction job')


def read_range_lines(handle, start: int, end: Optional[int]) -> Iterator[bytes]:
    """Yields the lines (without their line end) that begin in [start, end) of an open file.

    A line that begins before `start` belongs to the previous range; one that begins before `end`
    is read to its end even past `end`. The last line may have no newline. A BOM at the start of the
    file is dropped. Memory is bounded by the chunk size plus the longest line.
    """
    if start > 0:
        handle.seek(start - 1)
        position = start - 1  # the file offset of buffer[0]
    else:
        position = 0
    # read1 returns what one underlying read gives: on a truncated .gz the bytes decoded before the
    # break are returned before the error is raised, instead of being lost with it.
    read = getattr(handle, 'read1', handle.read)
    buffer = b''
    cursor = 0
    skipping = start > 0  # inside the line that began in the previous range
    first = start == 0
    while True:
        newline = buffer.find(b'\n', cursor)
        if newline < 0:
            try:
                chunk = read(_READ_CHUNK)
            except Exception as exc:
                raise ReadFailure(exc, b'' if skipping else buffer[cursor:]) from exc
            if not chunk:
                tail = buffer[cursor:]
                if tail and not skipping and (end is None or position + cursor < end):
                    yield _clean(tail, first)
                return
            buffer = buffer[cursor:] + chunk
            position += cursor
            cursor = 0
            continue
        line_start = position + cursor
        if not skipping:
            if end is not None and line_start >= end:
                return
            yield _clean(buffer[cursor:newline], first)
            first = False
        skipping = False
        cursor = newline + 1
        if end is not None and position + cursor >= end:
            return  # the next line begins in the next range


def _clean(line: bytes, first: bool) -> bytes:
    if first and line.startswith(_UTF8_BOM):
        line = line[len(_UTF8_BOM):]
    return line[:-1] if line.endswith(b'\r') else line


def open_shard(path: str):
    """A binary file object over the shard's (decompressed) bytes.

    A local path is opened only when it is a regular file once links are resolved: a FIFO or a
    device named like a shard would block or never end. .gz goes through our own reader rather than
    Beam's decompressor, which returns a truncated stream's first part without any error.
    """
    raw = open_regular_file(path) if scheme_of(path) == 'file' else FileSystems.open(
        path, compression_type=CompressionTypes.UNCOMPRESSED)
    return GzipLineSafeReader(raw) if is_compressed(path) else raw


class NotARegularFile(OSError):
    """A local path that resolves to a FIFO, a device, a socket or a folder."""


_FILE_KINDS = ((stat.S_ISDIR, 'a folder'), (stat.S_ISFIFO, 'a FIFO'), (stat.S_ISCHR, 'a character device'),
               (stat.S_ISBLK, 'a block device'), (stat.S_ISSOCK, 'a socket'))


def open_regular_file(path: str):
    """Opens a local file for reading without ever blocking on it: O_NONBLOCK keeps the open of a
    FIFO from waiting for a writer, and anything but a regular file is refused."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _FILE_KINDS if test(mode)), 'not a regular file')
            raise NotARegularFile(errno.EINVAL, f'{path} is {kind}, not a regular file')
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, 'rb')
    except BaseException:
        os.close(fd)
        raise


class GzipLineSafeReader:
    """Decompresses a gzip stream (one or more members) in small steps, so that on damage every byte
    decodable before it has been handed out before the error is raised: zlib drops the output of a
    call that fails, so the failing step is replayed on a copy of the decoder over ever shorter
    prefixes of its input. An empty file is not a gzip file."""

    _STEP = 64 * 1024

    def __init__(self, raw):
        self._raw = raw
        self._decoder = zlib.decompressobj(wbits=31)
        self._pending: Optional[Exception] = None
        self._started = False
        self._done = False

    def read1(self, size: int = -1) -> bytes:
        while not self._done:
            if self._pending is not None:
                error, self._pending = self._pending, None
                self._done = True
                raise error
            out = self._step()
            if out:
                return out
        return b''

    read = read1

    def _step(self) -> bytes:
        data = self._raw.read(self._STEP)
        if not data:
            self._done = True
            if not self._started:
                raise EOFError('an empty file is not a gzip file')
            if not self._decoder.eof:
                raise EOFError('the gzip stream ended before its end-of-stream marker (truncated)')
            return b''
        self._started = True
        return self._feed(data)

    def _feed(self, data: bytes) -> bytes:
        out: List[bytes] = []
        while data:
            if self._decoder.eof:
                if not data.strip(b'\0'):
                    return b''.join(out)  # zero padding after the last member, as gzip allows
                self._decoder = zlib.decompressobj(wbits=31)
            before = self._decoder.copy()
            try:
                out.append(self._decoder.decompress(data))
            except zlib.error as exc:
                out.append(_decodable_prefix(before, data))
                self._pending = exc
                return b''.join(out)
            data = self._decoder.unused_data
        return b''.join(out)

    def close(self):
        self._raw.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _decodable_prefix(decoder, data: bytes) -> bytes:
    """What the decoder yields from the longest prefix of `data` it accepts without an error."""
    low, high, best = 0, len(data), b''
    while low < high:
        middle = (low + high + 1) // 2
        attempt = decoder.copy()
        try:
            best, low = attempt.decompress(data[:middle]), middle
        except zlib.error:
            high = middle - 1
    return best


def resolve_input(raw: str, _seen: Optional[Set[str]] = None) -> str:
    """The pattern to read for --input: a glob as given (a glob that matches folders reads everything
    under them), every file under a folder or prefix, or the output directory named inside a saved
    operation / batch prediction job JSON. A path that exists as written is taken literally, even
    with glob characters in it."""
    text = raw.strip()
    if scheme_of(text) == 'file':
        text = os.path.abspath(text)  # source_file columns then name the full path
        if os.path.isdir(text):
            pattern = glob.escape(text) + '/**'
            if not any(True for found in discover(pattern) if isinstance(found, Found)):
                raise InputError(f'--input: the folder {text} holds no file')
            return pattern
        if os.path.lexists(text):
            return _resolve_single(text, _seen)
    if _GLOB_CHARS.search(text):
        if _any_match(text):
            return text
        if _any_match(text.rstrip('/') + '/**'):
            return text.rstrip('/') + '/**'  # a glob of folders: everything under them
        raise InputError(f'--input: the glob {text!r} matches no file or folder')
    pattern = text.rstrip('/') + '/**'
    if _any_match(pattern):
        return pattern  # a folder or prefix: every file under it
    single = _single_file(text)
    if single is None:
        raise InputError(f'--input: nothing found at {text!r}: give a prediction output folder, a '
                         f'prefix holding prediction-* folders, a glob, or an operation JSON')
    return _resolve_single(single, _seen)


def _resolve_single(path: str, seen: Optional[Set[str]]) -> str:
    """One file: a shard read as it is, or an operation JSON naming the output directory to read."""
    if classify(path) != OTHER:
        return glob.escape(path) if scheme_of(path) == 'file' else path
    seen = set(seen or ())
    if path in seen or len(seen) >= 8:
        raise InputError(f'--input: the operation JSON {path} leads back to itself '
                         f'({" -> ".join(sorted(seen))}): it must name a prediction output folder')
    return resolve_input(operation_output_directory(path), seen | {path})


_ESCAPED = re.compile(r'\[([*?\[])\]')  # glob.escape's forms


def input_root(pattern: str) -> str:
    """The location a pattern reads: its folder or prefix, glob escapes undone; for a real glob, the
    part before its first glob character."""
    body = pattern[:-3] if pattern.endswith('/**') else pattern
    if not _GLOB_CHARS.search(_ESCAPED.sub('', body)):
        return _ESCAPED.sub(r'\1', body)
    return re.split(r'[[*?]', body, maxsplit=1)[0].rstrip('/')


def operation_output_directory(path: str) -> str:
    """The output directory named in a saved AutoML operation or Vertex batch prediction job JSON,
    recognised by its content."""
    not_operation = InputError(
        f'--input: {path} is one file that is neither a result or error shard nor a batch prediction '
        f'operation or job JSON naming its output directory')
    try:
        handle = (open_regular_file(path) if scheme_of(path) == 'file'
                  else FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED))
        with handle:
            data = handle.read(_MAX_OPERATION_BYTES + 1)
    except OSError as exc:
        raise InputError(f'--input: {path} cannot be read: {exc.strerror or exc}') from None
    if len(data) > _MAX_OPERATION_BYTES:
        raise not_operation
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise not_operation from None
    if not isinstance(document, dict):
        raise not_operation
    for route in (('metadata', 'batchPredictDetails', 'outputInfo', 'gcsOutputDirectory'),
                  ('metadata', 'batch_predict_details', 'output_info', 'gcs_output_directory'),
                  ('outputInfo', 'gcsOutputDirectory'),
                  ('output_info', 'gcs_output_directory')):
        value: Any = document
        for key in route:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, str) and value:
            return value
    raise InputError(f'--input: {path} is JSON but names no output directory (expected '
                     f'metadata.batchPredictDetails.outputInfo.gcsOutputDirectory or '
                     f'outputInfo.gcsOutputDirectory, or their snake_case forms)')


def _single_file(path: str) -> Optional[str]:
    """The path itself when it names one existing file."""
    for metadata in _match(path):
        if metadata.path == path:
            return metadata.path
    return None


def _any_match(pattern: str) -> bool:
    return bool(_match(pattern))


def _match(pattern: str):
    try:
        return FileSystems.match([pattern], limits=[1])[0].metadata_list
    except Exception as exc:
        raise InputError(f'--input: could not list {pattern!r}: {exc}') from exc
