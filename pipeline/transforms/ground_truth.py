"""Reading ground truth: every file --ground_truth names, unit by unit (a line, a row, a COCO image),
into batches of usable units keyed by the bucket of their image (the evaluation joins them with the
prediction lines of the same bucket), and a dead letter for each unit that cannot be used. Rows read ==
rows used + dead letters, as for the predictions."""
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam

from pipeline.core import counts as names
from pipeline.core import dead_letters
from pipeline.core.counts import Counts
from pipeline.core.dead_letters import INVALID_GROUND_TRUTH
from pipeline.core.evaluation import bucket_of
from pipeline.core.ground_truth import BucketTruth, GroundTruthImage, GroundTruthRejection
from pipeline.io import ground_truth as files
from pipeline.transforms.count import counted

# Units gathered per file before they leave in one element per bucket.
UNITS_PER_FLUSH = 20_000


class ReadUnitsFn(beam.DoFn):
    """(ground-truth file, its format) -> (bucket, BucketTruth) batches of its usable units; a dead
    letter per unusable one; the file's counts."""

    def __init__(self, image_prefix: str, buckets: int):
        self._image_prefix = image_prefix
        self._buckets = buckets

    def process(self, file: Tuple[str, str]):
        path, fmt = file
        read = used = 0
        pending: Dict[int, List[Tuple[int, GroundTruthImage]]] = {}
        for index, unit in enumerate(files.read_units(path, fmt, self._image_prefix)):
            read += 1
            if isinstance(unit.parsed, GroundTruthRejection):
                yield beam.pvalue.TaggedOutput('dead_letters', dead_letters.make_dead_letter(
                    INVALID_GROUND_TRUTH, unit.source_file, f'{unit.position}: {unit.parsed.message}',
                    unit.payload, unit.parsed.image_uri))
                continue
            used += 1
            bucket = bucket_of(unit.parsed.image_uri, self._buckets)
            pending.setdefault(bucket, []).append((index, unit.parsed))
            if used % UNITS_PER_FLUSH == 0:
                yield from ((bucket, BucketTruth.of(path, units)) for bucket, units in pending.items())
                pending = {}
        yield from ((bucket, BucketTruth.of(path, units)) for bucket, units in pending.items())
        yield counted(Counts({names.GROUND_TRUTH_ROWS_READ: read, names.GROUND_TRUTH_ROWS_USED: used}))


class GroundTruthRead(NamedTuple):
    units: beam.PCollection  # (bucket, BucketTruth)
    dead_letters: beam.PCollection  # invalid_ground_truth records
    counts: beam.PCollection  # Counts


class ReadGroundTruth(beam.PTransform):
    """(path, format) of each ground-truth file -> GroundTruthRead. A file is read whole by one worker
    (a ground-truth file is small next to the predictions it labels); its units are spread by bucket."""

    def __init__(self, ground_truth_files: Sequence[Tuple[str, str]], image_prefix: Optional[str] = None,
                 buckets: int = 1):
        super().__init__()
        self._files = list(ground_truth_files)
        self._image_prefix = image_prefix or ''
        self._buckets = buckets

    def expand(self, pbegin):
        read = (pbegin
                | 'GroundTruthFiles' >> beam.Create(self._files)
                | 'SpreadFiles' >> beam.Reshuffle()
                | 'ReadUnits' >> beam.ParDo(ReadUnitsFn(self._image_prefix, self._buckets)).with_outputs(
                    'dead_letters', 'counts', main='units'))
        return GroundTruthRead(read.units, read.dead_letters, read.counts)
