"""Reading ground truth, a step of its own: each byte range of a ground-truth JSONL file (a whole file
for CSV and COCO) is a work item, spread over the workers; its usable units leave in one element per
bucket, packed, for the evaluation to join with the prediction lines of the same bucket, and each
unit that cannot be used is a dead letter. Rows read == rows used + dead letters, as for the
predictions."""
import collections
import itertools
from typing import Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np

from pipeline.core import counts as names
from pipeline.core import dead_letters
from pipeline.core import truth_formats as core
from pipeline.core.columns import bucket_of
from pipeline.core.counts import Counts
from pipeline.core.dead_letters import INVALID_GROUND_TRUTH
from pipeline.core.evaluation import LABELLED, packed
from pipeline.core.truth_formats import BucketTruth, BucketTruthBuilder, GroundTruthRejection, Place
from pipeline.io import truth_files as files
from pipeline.io.sizes import SizeResolver
from pipeline.io.spill import Payload, SpillWriter
from pipeline.transforms.bucket_parts import optional_side_inputs
from pipeline.transforms.count import counted

# Units (of JSONL: lines, plain or not) gathered before they leave in one element per bucket (each
# flush makes an element per bucket: few and large is cheaper), and the byte ranges JSONL files are
# read in.
UNITS_PER_FLUSH = 50_000
GROUND_TRUTH_RANGE_BYTES = 16 * 1024 * 1024


class TruthRange(NamedTuple):
    """A byte range of a ground-truth file to read: the lines that begin in [start, end) of a JSONL
    file, or a whole file (start 0, end None)."""
    path: str
    fmt: str
    start: int
    end: Optional[int]


def truth_ranges(ground_truth_files: Sequence[Tuple[str, str]],
                 range_bytes: int = GROUND_TRUTH_RANGE_BYTES) -> List[TruthRange]:
    """The work items of the ground-truth files (path, format): JSONL files in ranges that different
    workers read, the others whole (a quoted CSV field may hold a line end; a COCO document is one
    JSON value)."""
    return [TruthRange(*part) for path, fmt in ground_truth_files for part in files.ranges_of(path, fmt, range_bytes)]


class GroundTruthRead(NamedTuple):
    parts: beam.PCollection  # (bucket, (LABELLED, None, payload of a packed BucketTruth)): the join's
    dead_letters: beam.PCollection  # an invalid_ground_truth record per unit that cannot be used
    counts: beam.PCollection  # Counts: ground-truth rows read and used


class ReadGroundTruth(beam.PTransform):
    """Ground-truth files ((path, format) pairs) -> GroundTruthRead: the files' ranges spread over the
    workers and read; a range that fails unexpectedly is one dead letter, so no file is lost to a bug."""

    def __init__(self, ground_truth_files: Sequence[Tuple[str, str]], image_prefix: str, buckets: int,
                 spill_folder: Optional[str] = None, range_bytes: int = GROUND_TRUTH_RANGE_BYTES,
                 fixed_size: Optional[Tuple[int, int]] = None, manifest: Optional[beam.PCollection] = None):
        super().__init__()
        self._ranges = truth_ranges(ground_truth_files, range_bytes)
        self._read = ReadTruthRangeFn(image_prefix, buckets, spill_folder, fixed_size)
        self._manifest = manifest  # --image_sizes: the size of a COCO image its document does not give

    def expand(self, pbegin):
        read = (
            pbegin
            | 'GroundTruthRanges' >> beam.Create(self._ranges, reshuffle=False)  # spread just below
            | 'SpreadGroundTruth' >> beam.Reshuffle()
            | 'ReadGroundTruthRanges' >> beam.ParDo(
                self._read, **optional_side_inputs(manifest=self._manifest)).with_outputs(
                'evaluation_parts', 'dead_letters', 'counts', main='unused',
            ).with_exception_handling(main_tag='unused', dead_letter_tag='failed_ranges'))
        failed = read.failed_ranges | 'FailedRangesToDeadLetters' >> beam.Map(failed_range_to_dead_letter)
        dead = (read.dead_letters, failed) | 'FlattenGroundTruthDeadLetters' >> beam.Flatten()
        return GroundTruthRead(read.evaluation_parts, dead, read.counts)


class ReadTruthRangeFn(beam.DoFn):
    """TruthRange -> its tagged outputs (read_truth_range); on a local run the parts wait in the run's
    spill folder (io.spill), one file per bundle. A COCO image its document gives no size takes the
    run's own (--image_sizes' manifest, else --image_size), without probing."""

    def __init__(self, image_prefix: str, buckets: int, spill_folder: Optional[str] = None,
                 fixed_size: Optional[Tuple[int, int]] = None):
        self._image_prefix = image_prefix
        self._buckets = buckets
        self._spill_folder = spill_folder
        self._spill = SpillWriter(spill_folder)  # one per bundle (start_bundle)
        self._fixed_size = fixed_size
        self._sizes: Optional[SizeResolver] = None

    def start_bundle(self):
        self._spill = SpillWriter(self._spill_folder)

    def finish_bundle(self):
        self._spill.close()

    def process(self, work: TruthRange, manifest=None):
        if self._sizes is None:
            self._sizes = SizeResolver(manifest, probe=False, fixed=self._fixed_size, allowed_scheme='')
        yield from read_truth_range(work, self._image_prefix, self._buckets, self._spill.put, self._size_of)

    def _size_of(self, uri: str) -> Optional[Tuple[float, float]]:
        size = self._sizes.resolve(uri) if self._sizes is not None else None
        return None if size is None else (size.width, size.height)


def failed_range_to_dead_letter(failure) -> dict:
    """The net under ReadTruthRangeFn: a range that raised unexpectedly is one dead letter."""
    work, (exc_type, exc_repr, _) = failure
    return dead_letters.make_dead_letter(
        INVALID_GROUND_TRUTH, work.path, f'unexpected error while reading bytes {work.start}-{work.end} of '
        f'this ground-truth file: {exc_type.__name__}: {exc_repr}')


def read_truth_range(work: TruthRange, image_prefix: str, buckets: int,
                     payload: Callable[[bytes], Payload] = lambda part: part,
                     size_of: Optional[core.SizeOf] = None) -> Iterator:
    """The outputs of one range, tagged: 'evaluation_parts' (bucket, (LABELLED, None, payload of a
    packed BucketTruth)) for its usable units, 'dead_letters' an invalid_ground_truth record per
    unusable one, and 'counts'. `size_of`: the run's own size of an image (files.read_units)."""
    tally = collections.Counter({names.GROUND_TRUTH_ROWS_READ: 0, names.GROUND_TRUTH_ROWS_USED: 0})
    if work.fmt == files.VERTEX_JSONL:  # plain lines as columns, a chunk at a time
        for chunk in files.jsonl_chunks(work.path, work.start, work.end, UNITS_PER_FLUSH):
            if isinstance(chunk, files.LineChunk):
                yield from _chunk_outputs(chunk, buckets, payload, tally)
            else:
                yield from _units_outputs([chunk], work.path, buckets, payload, tally)
    else:
        units = files.read_units(work.path, work.fmt, image_prefix, work.start, work.end, size_of, tally)
        for flush in _batched(units, UNITS_PER_FLUSH):
            yield from _units_outputs(flush, work.path, buckets, payload, tally)
    yield counted(Counts(tally))


def _chunk_outputs(chunk: files.LineChunk, buckets: int, payload, tally: collections.Counter) -> Iterator:
    """A chunk of JSONL lines: the plain ones split by bucket as columns, the others one by one."""
    plain, declined = core.plain_vertex_lines(chunk.lines)
    taken = len(plain.taken)
    places = np.stack([np.full(taken, chunk.range_start, dtype=np.int64),
                       np.array(chunk.numbers, dtype=np.int64)[plain.taken], np.zeros(taken, dtype=np.int64)], axis=1)
    tally[names.GROUND_TRUTH_ROWS_READ] += taken
    tally[names.GROUND_TRUTH_ROWS_USED] += taken
    for bucket, part in plain.bucket_parts(chunk.source_file, places, buckets).items():
        yield _part_output(bucket, part, payload)
    units = (((chunk.range_start, chunk.numbers[index], 0), files.Unit(
        chunk.source_file, chunk.position(index), chunk.lines[index],
        core.parse_vertex_line_fully(chunk.lines[index]))) for index in declined)
    yield from _units_outputs(units, chunk.source_file, buckets, payload, tally)


def _units_outputs(units: Iterable[Tuple[Place, files.Unit]], path: str, buckets: int, payload,
                   tally: collections.Counter) -> Iterator:
    """Units one by one: the usable ones gathered per bucket, a dead letter for each of the others."""
    pending: Dict[int, BucketTruthBuilder] = {}
    for place, unit in units:
        tally[names.GROUND_TRUTH_ROWS_READ] += 1
        if isinstance(unit.parsed, GroundTruthRejection):
            yield beam.pvalue.TaggedOutput('dead_letters', dead_letters.make_dead_letter(
                INVALID_GROUND_TRUTH, unit.source_file, f'{unit.position}: {unit.parsed.message}',
                unit.payload, unit.parsed.image_uri))
            continue
        tally[names.GROUND_TRUTH_ROWS_USED] += 1
        bucket = bucket_of(unit.parsed.image_uri, buckets)
        if bucket not in pending:
            pending[bucket] = BucketTruthBuilder()
        pending[bucket].add_image(place, unit.parsed)
    for bucket, builder in pending.items():
        yield _part_output(bucket, builder.build(path), payload)


def _part_output(bucket: int, part: BucketTruth, payload) -> beam.pvalue.TaggedOutput:
    return beam.pvalue.TaggedOutput('evaluation_parts', (bucket, (LABELLED, None, payload(packed(part)))))


def _batched(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch
