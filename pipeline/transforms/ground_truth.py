"""Reading ground truth: each byte range of a ground-truth JSONL file (a whole file for CSV and COCO) is
a work item read beside the prediction shards, in the same step (no stage and no join input of its
own); its usable units leave in one element per bucket, packed, for the evaluation to join with the
prediction lines of the same bucket, and each unit that cannot be used is a dead letter. Rows read ==
rows used + dead letters, as for the predictions."""
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam

from pipeline.core import counts as names
from pipeline.core import dead_letters
from pipeline.core.counts import Counts
from pipeline.core.dead_letters import INVALID_GROUND_TRUTH
from pipeline.core.evaluation import LABELLED, bucket_of, packed
from pipeline.core.ground_truth import BucketTruthBuilder, GroundTruthRejection, PlainImage
from pipeline.io import ground_truth as files
from pipeline.io.spill import Payload
from pipeline.transforms.count import counted

# Units gathered before they leave in one element per bucket (each flush makes an element per bucket:
# few and large is cheaper), and the byte ranges JSONL files are read in.
UNITS_PER_FLUSH = 50_000
GROUND_TRUTH_RANGE_BYTES = 32 * 1024 * 1024


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


def read_truth_range(work: TruthRange, image_prefix: str, buckets: int,
                     payload: Callable[[bytes], Payload] = lambda part: part) -> Iterator:
    """The outputs of one range, tagged as the parse step's: 'evaluation_parts' (bucket, (LABELLED,
    None, payload of a packed BucketTruth)) for its usable units, 'dead_letters' an invalid_ground_truth
    record per unusable one, and 'counts'."""
    read = used = 0
    pending: Dict[int, BucketTruthBuilder] = {}
    for place, unit in files.read_units(work.path, work.fmt, image_prefix, work.start, work.end, plain=True):
        read += 1
        if isinstance(unit.parsed, GroundTruthRejection):
            yield beam.pvalue.TaggedOutput('dead_letters', dead_letters.make_dead_letter(
                INVALID_GROUND_TRUTH, unit.source_file, f'{unit.position}: {unit.parsed.message}',
                unit.payload, unit.parsed.image_uri))
            continue
        used += 1
        builder = pending.get(bucket := bucket_of(unit.parsed.image_uri, buckets))
        if builder is None:
            builder = pending[bucket] = BucketTruthBuilder()
        if isinstance(unit.parsed, PlainImage):
            builder.add_plain(place, unit.parsed)
        else:
            builder.add_image(place, unit.parsed)
        if used % UNITS_PER_FLUSH == 0:
            yield from _parts(pending, work.path, payload)
            pending = {}
    yield from _parts(pending, work.path, payload)
    yield counted(Counts({names.GROUND_TRUTH_ROWS_READ: read, names.GROUND_TRUTH_ROWS_USED: used}))


def _parts(pending: Dict[int, BucketTruthBuilder], path: str, payload) -> Iterator[beam.pvalue.TaggedOutput]:
    for bucket, units in pending.items():
        yield beam.pvalue.TaggedOutput('evaluation_parts',
                                       (bucket, (LABELLED, None, payload(packed(units.build(path))))))
