"""Ground-truth files: found under a local or gs:// file, folder or glob, their format recognized, and
read unit by unit (a line, a row, a COCO image) with where each unit came from."""
import glob
import os
from typing import Iterator, List, NamedTuple, Optional, Tuple, Union

from apache_beam.io.filesystems import FileSystems

from pipeline.config.options import GROUND_TRUTH_FORMATS
from pipeline.core import ground_truth
from pipeline.core.ground_truth import GroundTruthRejection, GroundTruthUnit, Place
from pipeline.core.shards import scheme_of, split_ranges
from pipeline.io.sources import open_shard, read_range_lines

VERTEX_JSONL, AUTOML_CSV, COCO = GROUND_TRUTH_FORMATS[1:]


class GroundTruthError(ValueError):
    """--ground_truth names nothing to read, or a file whose format cannot be told."""


class Unit(NamedTuple):
    """One unit of a ground-truth file: where it is (line or row number from 1, or the COCO part),
    its text as written (the dead-letter payload), and what it holds."""
    source_file: str
    position: str
    payload: Optional[bytes]
    parsed: GroundTruthUnit


def ground_truth_files(pattern: str) -> List[str]:
    """The files --ground_truth names: a file, every file under a folder or prefix, or a glob."""
    if scheme_of(pattern) == 'file':
        path = os.path.abspath(pattern)
        if os.path.isdir(path):
            files = [p for p in glob.glob(os.path.join(glob.escape(path), '**'), recursive=True) if os.path.isfile(p)]
        elif os.path.isfile(path):
            files = [path]
        else:
            files = [p for p in glob.glob(path, recursive=True) if os.path.isfile(p)]
    elif any(c in pattern for c in '*?['):
        files = _matched(pattern)
    else:  # an object, or every object under it as a folder ('*' does not cross '/' there: '**')
        files = _matched(pattern) if not pattern.endswith('/') else []
        files = files or _matched(pattern.rstrip('/') + '/**')
    if not files:
        raise GroundTruthError(f'--ground_truth: {pattern} holds no file')
    return sorted(files)


# Enough of a file to tell its format.
HEAD_BYTES = 64 * 1024


def resolve_ground_truth(pattern: str, fmt: str = 'auto', skip=None) -> List[Tuple[str, str]]:
    """(path, format) of every file --ground_truth names, the format told from each file's name and
    first bytes when `fmt` is auto; `skip` leaves out our own outputs. Raises GroundTruthError."""
    resolved = []
    for path in ground_truth_files(pattern):
        if skip is not None and skip(path):
            continue
        if fmt != 'auto':
            resolved.append((path, fmt))
            continue
        try:
            with open_shard(path) as handle:
                head = handle.read(HEAD_BYTES)
        except Exception as exc:
            raise GroundTruthError(f'--ground_truth: cannot read {path}: {exc}') from None
        if not head.strip():  # an empty file (a _SUCCESS marker, say) holds no unit in any format
            continue
        resolved.append((path, detect_format(path, head)))
    if not resolved:
        raise GroundTruthError(f'--ground_truth: {pattern} holds no ground truth: only empty files or our own outputs')
    return resolved


def _matched(pattern: str) -> List[str]:
    return [m.path for m in FileSystems.match([pattern])[0].metadata_list if not m.path.endswith('/')]


def detect_format(path: str, head: bytes) -> str:
    """By extension, then by content: a JSON document with `images` is COCO, a line object with
    `imageGcsUri` is Vertex AI's import format, anything else with commas is AutoML's CSV."""
    name = path.lower().removesuffix('.gz')
    if name.endswith('.jsonl'):
        return VERTEX_JSONL
    if name.endswith('.csv'):
        return AUTOML_CSV
    text = head.lstrip()
    if text.startswith(b'{') and b'"images"' in head and b'"imageGcsUri"' not in head:
        return COCO
    if text.startswith(b'{'):
        return VERTEX_JSONL
    if b',' in head:
        return AUTOML_CSV
    raise GroundTruthError(f'--ground_truth: cannot tell the format of {path}; give --ground_truth_format')


def read_units(path: str, fmt: str = 'auto', image_prefix: str = '', start: int = 0,
               end: Optional[int] = None) -> Iterator[Tuple[Place, Unit]]:
    """(place, unit) for every unit of one ground-truth file, in file order; a file that cannot be
    read is one rejection. A JSONL file may be read in byte ranges [start, end) (the lines that begin
    there, as the prediction shards are); the other formats are read whole."""
    if fmt == VERTEX_JSONL:
        yield from _jsonl_units(path, start, end)
        return
    try:
        with open_shard(path) as handle:
            data = handle.read()
    except Exception as exc:  # the file, not a unit, is unusable: one dead letter for it
        yield (start, 0), Unit(path, 'the file', None, GroundTruthRejection(f'could not read the file: {exc!r}'))
        return
    if fmt == 'auto':
        fmt = detect_format(path, data[:HEAD_BYTES])
        if fmt == VERTEX_JSONL:
            yield from _jsonl_units(path, start, end)
            return
    if fmt == COCO:
        images, rejected = ground_truth.parse_coco(data, image_prefix)
        for index, image in enumerate(images):
            yield (0, index), Unit(path, f'images[{index}]', None, image)
        for index, (where, rejection) in enumerate(rejected, start=len(images)):
            yield (0, index), Unit(path, where, None, rejection)
        return
    try:
        text = data.decode('utf-8-sig')
    except UnicodeDecodeError as exc:
        yield (0, 0), Unit(path, 'the file', None, GroundTruthRejection(f'not UTF-8 text: {exc}'))
        return
    for number, row, parsed in ground_truth.parse_automl_csv(text):
        yield (0, number), Unit(path, f'line {number}', row.encode('utf-8'), parsed)


class LineChunk(NamedTuple):
    """Non-blank lines of a JSONL range, read in one go, with their numbers in the range (from 1;
    blank lines are numbered, not given)."""
    source_file: str
    range_start: int
    numbers: List[int]
    lines: List[bytes]

    def position(self, index: int) -> str:
        """Where the index-th line of the chunk is, in words (a dead letter's position)."""
        return line_position(self.range_start, self.numbers[index])


def line_position(range_start: int, number: int) -> str:
    return f'line {number}' if range_start == 0 else f'line {number} of the range from byte {range_start}'


def jsonl_chunks(path: str, start: int, end: Optional[int],
                 lines_per_chunk: int) -> Iterator[Union[LineChunk, Tuple[Place, Unit]]]:
    """The lines of a JSONL range in chunks; a read that breaks gives what was read, then a rejection
    for the rest of the range."""
    chunk = LineChunk(path, start, [], [])
    number = 0
    try:
        with open_shard(path) as handle:
            for number, line in enumerate(read_range_lines(handle, start, end), start=1):
                if line.strip():
                    chunk.numbers.append(number)
                    chunk.lines.append(line)
                    if len(chunk.lines) == lines_per_chunk:
                        yield chunk
                        chunk = LineChunk(path, start, [], [])
    except Exception as exc:
        if chunk.lines:
            yield chunk
        yield (start, number + 1), Unit(path, line_position(start, number + 1) + ' on', None, GroundTruthRejection(
            f'could not read the file from there: {exc!r}'))
        return
    if chunk.lines:
        yield chunk


# Lines read at a time, where the caller takes them one by one.
_LINES_PER_CHUNK = 10_000


def _jsonl_units(path: str, start: int, end: Optional[int]) -> Iterator[Tuple[Place, Unit]]:
    """The units of a JSONL range, each line parsed on its own (the job reads plain lines as columns:
    transforms/ground_truth)."""
    for chunk in jsonl_chunks(path, start, end, _LINES_PER_CHUNK):
        if not isinstance(chunk, LineChunk):
            yield chunk
            continue
        for index, (number, line) in enumerate(zip(chunk.numbers, chunk.lines)):
            yield (start, number), Unit(path, chunk.position(index), line, ground_truth.parse_vertex_line(line))


def ranges_of(path: str, fmt: str, range_bytes: int) -> List[Tuple[str, str, int, Optional[int]]]:
    """(path, format, start, end) of the byte ranges one ground-truth file is read in: JSONL files in
    ranges read by different workers, the others whole."""
    if fmt != VERTEX_JSONL:
        return [(path, fmt, 0, None)]
    size = FileSystems.match([path], limits=[1])[0].metadata_list[0].size_in_bytes
    return [(shard_range.path, fmt, shard_range.start, shard_range.end)
            for shard_range in split_ranges(path, size, range_bytes)]
