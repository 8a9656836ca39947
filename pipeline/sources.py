"""Finding and reading shards: input resolution, shard classification, byte ranges, line batches.

Lines are read as bytes by our own range reader rather than Beam's text source: a bad byte, a
truncated .gz or an unreadable file must become a dead letter, not fail the run.
"""
import gzip
import os
import re
from typing import Dict, Iterator, List, NamedTuple, Optional

import orjson
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

RESULT = 'result'
ERROR = 'error'
OTHER = 'other'
SHARD_KINDS = (RESULT, ERROR, OTHER)

_SHARD_PATTERNS = (
    (re.compile(r'^(image_object_detection|predictions)_\d+\.jsonl(\.gz)?$'), RESULT),
    (re.compile(r'^errors_\d+\.jsonl(\.gz)?$'), ERROR),
)
_GLOB_CHARS = re.compile(r'[*?\[]')
_UTF8_BOM = b'\xef\xbb\xbf'
# Operation / job JSON files are small; anything larger is not one.
_MAX_OPERATION_BYTES = 16 * 1024 * 1024
# Uncompressed shards are split into ranges of this size, read in parallel (16 MB measured 10% faster
# than 64 MB with 2 local workers on the 200k-image benchmark: more, smaller units to balance).
DEFAULT_RANGE_BYTES = 16 * 1024 * 1024
_READ_CHUNK = 1024 * 1024


class InputError(ValueError):
    """--input names nothing that can be read."""


class ReadFailure(Exception):
    """Reading a shard broke part-way; `partial_line` holds the bytes of the unfinished line."""

    def __init__(self, cause: Exception, partial_line: bytes):
        super().__init__(f'{type(cause).__name__}: {cause}')
        self.partial_line = partial_line


class ShardRange(NamedTuple):
    """Bytes [start, end) of one shard: the lines that begin in it. Compressed shards are one range."""
    path: str
    start: int
    end: Optional[int]  # None: to the end of the file (compressed shards)


def scheme_of(path: str) -> str:
    """'gs' for gs://..., 'file' for a local path."""
    head, sep, _ = path.partition('://')
    return head.lower() if sep else 'file'


def base_name(path: str) -> str:
    return path.rstrip('/').rsplit('/', 1)[-1]


def classify(path: str) -> str:
    """RESULT, ERROR or OTHER, by the shard name pattern alone."""
    name = base_name(path)
    for pattern, kind in _SHARD_PATTERNS:
        if pattern.match(name):
            return kind
    return OTHER


def is_compressed(path: str) -> bool:
    return path.lower().endswith('.gz')


def prediction_run(path: str) -> Optional[str]:
    """The nearest enclosing `prediction-*` folder: model and timestamp, so mixed runs stay apart."""
    parts = path.split('/')[:-1]
    for part in reversed(parts):
        if part.startswith('prediction-'):
            return part
    return None


def split_ranges(path: str, size: int, range_bytes: int = DEFAULT_RANGE_BYTES) -> List[ShardRange]:
    if is_compressed(path):
        return [ShardRange(path, 0, None)]
    if size <= 0:
        return [ShardRange(path, 0, 0)]
    return [ShardRange(path, start, min(start + range_bytes, size))
            for start in range(0, size, range_bytes)]


def matched_shards(pattern: str) -> Dict[str, int]:
    """Path -> size of the result and error shards the pattern matches (one listing)."""
    return {metadata.path: metadata.size_in_bytes
            for metadata in FileSystems.match([pattern])[0].metadata_list
            if classify(metadata.path) != OTHER}


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
            except Exception as exc:  # pylint: disable=broad-except
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

    .gz goes through Python's gzip rather than Beam's decompressor: Beam's returns a truncated
    stream's first part without any error, which would lose the rest silently; gzip raises EOFError.
    """
    raw = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    return gzip.GzipFile(fileobj=raw, mode='rb') if is_compressed(path) else raw


def is_blank(line: bytes) -> bool:
    return not line.strip(b' \t\r')


def resolve_input(raw: str) -> str:
    """The glob to match for --input: a glob as given, every file under a folder or prefix, or the
    output directory named inside a saved operation / batch prediction job JSON."""
    text = raw.strip()
    if scheme_of(text) == 'file':
        text = os.path.abspath(text)  # source_file columns then name the full path
    if _GLOB_CHARS.search(text):
        if not _any_match(text):
            raise InputError(f'--input: the glob {text!r} matches no file')
        return text
    pattern = text.rstrip('/') + '/**'
    if _any_match(pattern):
        return pattern  # a folder or prefix: every file under it
    single = _single_file(text)
    if single is None:
        raise InputError(f'--input: nothing found at {text!r}: give a prediction output folder, a '
                         f'prefix holding prediction-* folders, a glob, or an operation JSON')
    if classify(single) != OTHER:
        return text
    return resolve_input(operation_output_directory(single))


def operation_output_directory(path: str) -> str:
    """The output directory named in a saved AutoML operation or Vertex batch prediction job JSON,
    recognised by its content."""
    not_operation = InputError(
        f'--input: {path} is one file that is neither a result or error shard nor a batch prediction '
        f'operation or job JSON naming its output directory')
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        data = handle.read(_MAX_OPERATION_BYTES + 1)
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
        value = document
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
    except Exception as exc:  # pylint: disable=broad-except
        raise InputError(f'--input: could not list {pattern!r}: {exc}') from exc
