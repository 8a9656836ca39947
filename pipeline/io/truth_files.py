"""Ground-truth files: found under a local or gs:// file, folder or glob, their format recognized, and
read unit by unit (a line, a row, a COCO image) with where each unit came from."""
import codecs
import collections
import glob
import os
from typing import Iterator, List, NamedTuple, Optional, Tuple, Union

import orjson
from apache_beam.io.filesystems import FileSystems

from pipeline.config.options import GROUND_TRUTH_FORMATS
from pipeline.core import counts as names
from pipeline.core import truth_formats
from pipeline.core.shards import scheme_of, split_ranges
from pipeline.core.truth_formats import GroundTruthRejection, GroundTruthUnit, Place
from pipeline.io.sources import Unlisted, discover, open_shard, read_range_lines

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


def ground_truth_files(pattern: str, option: str = 'ground_truth') -> List[str]:
    """The files --ground_truth (or another `option` that reads a side table) names: a file, every
    file under a folder or prefix, or a glob. Local links are followed as under --input: each real
    file once, whichever links lead to it."""
    if scheme_of(pattern) == 'file':
        files = _local_files(os.path.abspath(pattern), option)
    elif any(c in pattern for c in '*?['):
        files = _matched(pattern, option)
    else:  # an object, or every object under it as a folder ('*' does not cross '/' there: '**')
        files = _matched(pattern, option) if not pattern.endswith('/') else []
        files = files or _matched(pattern.rstrip('/') + '/**', option)
    if not files:
        raise GroundTruthError(f'--{option}: {pattern} holds no file')
    return sorted(files)


def _local_files(path: str, option: str) -> List[str]:
    """Every real file under a local file, folder or glob once, found through as many links as lead
    to it (a link loop ends where it starts)."""
    roots = [path] if os.path.lexists(path) else glob.glob(path, recursive=True)
    seen, files = set(), []
    for root in roots:
        for found in discover(glob.escape(root) + ('/**' if os.path.isdir(root) else '')):
            if isinstance(found, Unlisted):
                raise GroundTruthError(f'--{option}: {found.path}: {found.reason}')
            info = os.stat(found.path)
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                files.append(found.path)
    return files


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
        head = read_head(path, 'ground_truth')
        if not head.strip():  # an empty file (a _SUCCESS marker, say) holds no unit in any format
            continue
        resolved.append((path, detect_format(path, head)))
    if not resolved:
        raise GroundTruthError(f'--ground_truth: {pattern} holds no ground truth: only empty files or our own outputs')
    return resolved


def read_head(path: str, option: str) -> bytes:
    """The first HEAD_BYTES of a file an `option` names (decompressed); raises GroundTruthError."""
    try:
        with open_shard(path) as handle:
            return handle.read(HEAD_BYTES)
    except Exception as exc:
        raise GroundTruthError(f'--{option}: cannot read {path}: {exc}') from None


def _matched(pattern: str, option: str) -> List[str]:
    try:
        return [m.path for m in FileSystems.match([pattern])[0].metadata_list if not m.path.endswith('/')]
    except Exception as exc:
        raise GroundTruthError(f'--{option}: could not list {pattern!r}: {exc}') from None


def detect_format(path: str, head: bytes) -> str:
    """By extension, then by content (after a BOM and white space): a JSON object on the first line is
    an import line (Vertex AI JSONL) unless it is a whole COCO document; a first JSON value that spans
    lines is a COCO document; anything else with commas is AutoML's CSV."""
    name = path.lower().removesuffix('.gz')
    if name.endswith('.jsonl'):
        return VERTEX_JSONL
    if name.endswith('.csv'):
        return AUTOML_CSV
    text = head.removeprefix(codecs.BOM_UTF8).lstrip()
    if text.startswith(b'{'):
        try:
            first = orjson.loads(text.partition(b'\n')[0])
        except orjson.JSONDecodeError:  # a document over several lines, or longer than the head
            first = None
        if isinstance(first, dict):
            return COCO if COCO_KEYS & first.keys() and 'imageGcsUri' not in first else VERTEX_JSONL
        imports, images = text.find(b'"imageGcsUri"'), text.find(b'"images"')
        return VERTEX_JSONL if imports >= 0 and (images < 0 or imports < images) else COCO
    if text.startswith(b'['):
        raise GroundTruthError(f'--ground_truth: {path} holds a JSON array, which is none of the formats '
                               f'(COCO is an object with images, annotations and categories)')
    if b',' in head:
        return AUTOML_CSV
    raise GroundTruthError(f'--ground_truth: cannot tell the format of {path}; give --ground_truth_format')


COCO_KEYS = {'images', 'annotations', 'categories'}


def read_units(path: str, fmt: str = 'auto', image_prefix: str = '', start: int = 0,
               end: Optional[int] = None, size_of: Optional[truth_formats.SizeOf] = None,
               tally: Optional[collections.Counter] = None) -> Iterator[Tuple[Place, Unit]]:
    """(place, unit) for every unit of one ground-truth file, in file order; a file that cannot be
    read is one rejection. A JSONL file may be read in byte ranges [start, end) (the lines that begin
    there, as the prediction shards are); the other formats are read whole. `size_of`: the run's own
    size of an image, for COCO images the document gives none; `tally` counts the COCO annotations
    whose id repeats an earlier one's."""
    if fmt == VERTEX_JSONL:
        yield from _jsonl_units(path, start, end)
        return
    try:
        with open_shard(path) as handle:
            data = handle.read()
    except Exception as exc:  # the file, not a unit, is unusable: one dead letter for it
        yield (start, 0, 0), Unit(path, 'the file', None, GroundTruthRejection(f'could not read the file: {exc!r}'))
        return
    if fmt == 'auto':
        fmt = detect_format(path, data[:HEAD_BYTES])
        if fmt == VERTEX_JSONL:
            yield from _jsonl_units(path, start, end)
            return
    if fmt == COCO:
        images, ranks, rejected, repeated = truth_formats.parse_coco_in_order(data, image_prefix, size_of)
        if tally is not None:
            tally[names.GROUND_TRUTH_REPEATED_IDS] += repeated
        # Placed as pycocotools orders them (by id), and as the file lists them (tidecv's order).
        for index, (image, rank) in enumerate(zip(images, ranks)):
            yield (0, rank, index), Unit(path, f'images[{index}]', None, image)
        for index, (where, rejection) in enumerate(rejected, start=len(images)):
            yield (0, index, index), Unit(path, where, None, rejection)
        return
    # A byte that is not UTF-8 spoils its row only (the row says so), not the file.
    text = data.removeprefix(codecs.BOM_UTF8).decode('utf-8', 'surrogateescape')
    for number, row, parsed in truth_formats.parse_automl_csv(text):
        yield (0, number, 0), Unit(path, f'line {number}', row.encode('utf-8', 'surrogateescape'), parsed)


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
        yield (start, number + 1, 0), Unit(path, line_position(start, number + 1) + ' on', None, GroundTruthRejection(
            f'could not read the file from there: {exc!r}'))
        return
    if chunk.lines:
        yield chunk


# Lines read at a time, where the caller takes them one by one.
_LINES_PER_CHUNK = 10_000


def _jsonl_units(path: str, start: int, end: Optional[int]) -> Iterator[Tuple[Place, Unit]]:
    """The units of a JSONL range, each line parsed on its own (the job reads plain lines as columns:
    transforms/read_truth)."""
    for chunk in jsonl_chunks(path, start, end, _LINES_PER_CHUNK):
        if not isinstance(chunk, LineChunk):
            yield chunk
            continue
        for index, (number, line) in enumerate(zip(chunk.numbers, chunk.lines)):
            yield (start, number, 0), Unit(path, chunk.position(index), line, truth_formats.parse_vertex_line(line))


def ranges_of(path: str, fmt: str, range_bytes: int) -> List[Tuple[str, str, int, Optional[int]]]:
    """(path, format, start, end) of the byte ranges one ground-truth file is read in: JSONL files in
    ranges read by different workers, the others whole."""
    if fmt != VERTEX_JSONL:
        return [(path, fmt, 0, None)]
    size = FileSystems.match([path], limits=[1])[0].metadata_list[0].size_in_bytes
    return [(shard_range.path, fmt, shard_range.start, shard_range.end)
            for shard_range in split_ranges(path, size, range_bytes)]
