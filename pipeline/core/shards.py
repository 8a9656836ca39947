"""Shards by name: which files are results or errors, which prediction run they belong to, and the
byte ranges an uncompressed shard is read in. Pure: no file is opened here."""
import re
from typing import Dict, Iterable, List, Mapping, NamedTuple, Optional, Set

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


# A shard's bytes per annotation, by format, measured on the benchmark's sets (docs/benchmark.md): the
# legacy format spells every key of every annotation, Vertex AI's parallel arrays do not; gzip takes
# either to about 33 bytes. What weighs the work in an input before any of it is read.
_BYTES_PER_ANNOTATION = (('image_object_detection_', 235), ('predictions_', 95))
_OTHER_BYTES_PER_ANNOTATION = 235  # error shards (no annotations) and other names: as legacy
_COMPRESSED_BYTES_PER_ANNOTATION = 33


def annotations_estimate(path: str, size: int) -> float:
    """About how many annotations a shard of this name and size holds."""
    if is_compressed(path):
        return size / _COMPRESSED_BYTES_PER_ANNOTATION
    name = base_name(path)
    per = next((bytes_ for prefix, bytes_ in _BYTES_PER_ANNOTATION if name.startswith(prefix)),
               _OTHER_BYTES_PER_ANNOTATION)
    return size / per


def is_compressed(path: str) -> bool:
    return path.lower().endswith('.gz')


# Folders a prediction run writes into: `prediction-<model>-<time>`, and `batchprediction-<model>-<time>`
# from early Vertex AI batch jobs (seen in output Google published).
RUN_FOLDER_PREFIXES = ('prediction-', 'batchprediction-')


def run_folder(path: str) -> Optional[str]:
    """The nearest run folder enclosing a shard, as a path."""
    parts = path.split('/')[:-1]
    for end in range(len(parts), 0, -1):
        if parts[end - 1].startswith(RUN_FOLDER_PREFIXES):
            return '/'.join(parts[:end])
    return None


def prediction_run(path: str, renamed: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The nearest enclosing run folder: model and timestamp, so mixed runs stay apart; a folder whose
    name another one shares goes by the name `renamed` gives it (run_names)."""
    folder = run_folder(path)
    if folder is None:
        return None
    return (renamed or {}).get(folder) or folder.rsplit('/', 1)[-1]


def run_names(paths: Iterable[str], root: str) -> Dict[str, str]:
    """Run folder -> its path under `root`, for the run folders whose name another one shares
    (modelA/prediction-2024 and modelB/prediction-2024 are two runs, never merged)."""
    by_name: Dict[str, Set[str]] = {}
    for folder in filter(None, map(run_folder, paths)):
        by_name.setdefault(folder.rsplit('/', 1)[-1], set()).add(folder)
    prefix = root.rstrip('/') + '/'
    return {folder: folder[len(prefix):] if folder.startswith(prefix) else folder
            for folders in by_name.values() if len(folders) > 1 for folder in sorted(folders)}


def split_ranges(path: str, size: int, range_bytes: int = DEFAULT_RANGE_BYTES) -> List[ShardRange]:
    """At most `range_bytes` each, all of one size (to a byte): the local runner deals a stage's ranges
    to its workers in turn, and shards of 7 full ranges and a short one gave one worker all the short
    ones (55% of the bytes against 45%)."""
    if is_compressed(path):
        return [ShardRange(path, 0, None)]
    if size <= 0:
        return [ShardRange(path, 0, 0)]
    count = -(-size // range_bytes)
    bounds = [size * i // count for i in range(count + 1)]
    return [ShardRange(path, start, end) for start, end in zip(bounds, bounds[1:])]


def is_blank(line: bytes) -> bool:
    return not line.strip(b' \t\r')
