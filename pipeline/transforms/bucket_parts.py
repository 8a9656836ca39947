"""What one bucket of the join by image bucket holds, read back and sorted by kind: the prediction
lines of each run, the ground truth and the image attributes (see evaluation.PREDICTED). The
evaluation, the comparison and the slices without ground truth each take theirs from it."""
from typing import Dict, Iterable, List, NamedTuple, Optional

import apache_beam as beam

from pipeline.core.evaluation import ATTRIBUTED, LABELLED, PREDICTED, BucketLines, unpacked
from pipeline.core.image_attributes import BucketAttributes
from pipeline.core.truth_formats import BucketTruth
from pipeline.io.spill import read_payload


class BucketParts(NamedTuple):
    lines: Dict[Optional[str], List[BucketLines]]  # per run, its parts in the order they came
    truth: List[BucketTruth]
    attributes: List[BucketAttributes]

    def all_lines(self) -> List[BucketLines]:
        return [part for parts in self.lines.values() for part in parts]


def bucket_parts(parts: Iterable[tuple]) -> BucketParts:
    """A bucket's (kind, run, payload) parts, each read back (from the spill folder on a local run)."""
    sorted_parts = BucketParts({}, [], [])
    for kind, run, data in parts:
        part = unpacked(read_payload(data))
        if kind == PREDICTED:
            sorted_parts.lines.setdefault(run, []).append(part)
        elif kind == LABELLED:
            sorted_parts.truth.append(part)
        elif kind == ATTRIBUTED:
            sorted_parts.attributes.append(part)
    return sorted_parts


def optional_side_inputs(manifest: Optional[beam.PCollection] = None,
                         rules: Optional[beam.PCollection] = None) -> Dict[str, beam.pvalue.AsSideInput]:
    """The side inputs a bucket's DoFn takes when the run has them: --image_sizes' manifest (a
    singleton), the slice rules (a list). Without one the DoFn's default stands, and the graph has no
    step (and the local runner no stage) that only makes an empty side input."""
    given = {'manifest': beam.pvalue.AsSingleton(manifest) if manifest is not None else None,
             'rules': beam.pvalue.AsList(rules) if rules is not None else None}
    return {name: side_input for name, side_input in given.items() if side_input is not None}
