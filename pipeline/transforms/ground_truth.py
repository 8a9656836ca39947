"""Reading ground truth: every file --ground_truth names, unit by unit (a line, a row, a COCO image),
into batches of usable units keyed by the bucket of their image (the evaluation joins them with the
prediction lines of the same bucket), and a dead letter for each unit that cannot be used. Rows read ==
rows used + dead letters, as for the predictions."""
from typing import Dict, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam

from pipeline.core import counts as names
from pipeline.core import dead_letters
from pipeline.core.counts import Counts
from pipeline.core.dead_letters import INVALID_GROUND_TRUTH
from pipeline.core.evaluation import bucket_of, packed
from pipeline.core.ground_truth import BucketTruthBuilder, GroundTruthRejection, PlainImage
from pipeline.io import ground_truth as files
from pipeline.transforms.count import counted

# Units gathered per file before they leave in one element per bucket.
UNITS_PER_FLUSH = 20_000
GROUND_TRUTH_RANGE_BYTES = 8 * 1024 * 1024


class ReadUnitsFn(beam.DoFn):
    """(ground-truth file, its format, a byte range of it) -> (bucket, packed BucketTruth) batches of its
    usable units; a dead letter per unusable one; the range's counts."""

    def __init__(self, image_prefix: str, buckets: int):
        self._image_prefix = image_prefix
        self._buckets = buckets

    def process(self, part: Tuple[str, str, int, Optional[int]]):
        path, fmt, start, end = part
        read = used = 0
        pending: Dict[int, BucketTruthBuilder] = {}
        for place, unit in files.read_units(path, fmt, self._image_prefix, start, end, plain=True):
            read += 1
            if isinstance(unit.parsed, GroundTruthRejection):
                yield beam.pvalue.TaggedOutput('dead_letters', dead_letters.make_dead_letter(
                    INVALID_GROUND_TRUTH, unit.source_file, f'{unit.position}: {unit.parsed.message}',
                    unit.payload, unit.parsed.image_uri))
                continue
            used += 1
            builder = pending.get(bucket := bucket_of(unit.parsed.image_uri, self._buckets))
            if builder is None:
                builder = pending[bucket] = BucketTruthBuilder()
            if isinstance(unit.parsed, PlainImage):
                builder.add_plain(place, unit.parsed)
            else:
                builder.add_image(place, unit.parsed)
            if used % UNITS_PER_FLUSH == 0:
                yield from ((bucket, packed(units.build(path))) for bucket, units in pending.items())
                pending = {}
        yield from ((bucket, packed(units.build(path))) for bucket, units in pending.items())
        yield counted(Counts({names.GROUND_TRUTH_ROWS_READ: read, names.GROUND_TRUTH_ROWS_USED: used}))


class GroundTruthRead(NamedTuple):
    units: beam.PCollection  # (bucket, packed BucketTruth)
    dead_letters: beam.PCollection  # invalid_ground_truth records
    counts: beam.PCollection  # Counts


class ReadGroundTruth(beam.PTransform):
    """(path, format) of each ground-truth file -> GroundTruthRead. A JSONL file is read in byte ranges
    on any number of workers, a CSV or COCO file whole by one (a quoted CSV field may hold a line end;
    a COCO document is one JSON value); the units are spread by bucket."""

    def __init__(self, ground_truth_files: Sequence[Tuple[str, str]], image_prefix: Optional[str] = None,
                 buckets: int = 1, range_bytes: int = GROUND_TRUTH_RANGE_BYTES):
        super().__init__()
        self._range_bytes = range_bytes
        self._files = list(ground_truth_files)
        self._image_prefix = image_prefix or ''
        self._buckets = buckets

    def expand(self, pbegin):
        range_bytes = self._range_bytes
        read = (pbegin
                | 'GroundTruthFiles' >> beam.Create(self._files)
                | 'ByteRanges' >> beam.FlatMapTuple(lambda path, fmt: files.ranges_of(path, fmt, range_bytes))
                | 'SpreadRanges' >> beam.Reshuffle()
                | 'ReadUnits' >> beam.ParDo(ReadUnitsFn(self._image_prefix, self._buckets)).with_outputs(
                    'dead_letters', 'counts', main='units'))
        return GroundTruthRead(read.units, read.dead_letters, read.counts)
