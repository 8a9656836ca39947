"""Shards by name: which files are results or errors, which prediction run they belong to, and the
byte ranges an uncompressed shard is read in. Pure: no file is opened here."""
import re
from typing import List, NamedTuple, Optional

RESULT = 'result'
ERROR = 'error'
OTHER = 'other'
SHARD_KINDS = (RESULT, ERROR, OTHER)
_SHARD_PATTERNS = (
    (re.compile(r'^(image_object_detection|predictions)_\d+\.jsonl(\.gz)?$'), RESULT),
    (re.compile(r'^errors_\d+\.jsonl(\.gz)?$'), ERROR),
)
# Uncompressed shards are split into ranges of this size, read in parallel: smaller ranges give the
# workers more units to balance (16 MB beat 64 MB in the benchmark).
DEFAULT_RANGE_BYTES = 16 * 1024 * 1024


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


# Folders a prediction run writes into: `prediction-<model>-<time>`, and `batchprediction-<model>-<time>`
# from early Vertex AI batch jobs (seen in output Google published).
RUN_FOLDER_PREFIXES = ('prediction-', 'batchprediction-')


def prediction_run(path: str) -> Optional[str]:
    """The nearest enclosing run folder: model and timestamp, so mixed runs stay apart."""
    parts = path.split('/')[:-1]
    for part in reversed(parts):
        if part.startswith(RUN_FOLDER_PREFIXES):
            return part
    return None


def split_ranges(path: str, size: int, range_bytes: int = DEFAULT_RANGE_BYTES) -> List[ShardRange]:
    if is_compressed(path):
        return [ShardRange(path, 0, None)]
    if size <= 0:
        return [ShardRange(path, 0, 0)]
    return [ShardRange(path, start, min(start + range_bytes, size))
            for start in range(0, size, range_bytes)]


def is_blank(line: bytes) -> bool:
    return not line.strip(b' \t\r')
