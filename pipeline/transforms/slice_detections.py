"""Slices without ground truth (--slice_by alone): the prediction lines and the image attributes joined
by bucket, as the evaluation joins them; each run's images (their first line) sliced, and per slice
its images and detections summed, and its scores per label in Beam's quantile sketches (what crosses
the join is per slice and label, never per image)."""
from typing import Iterable, List, NamedTuple, Optional, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.transforms.stats import ApproximateQuantilesCombineFn

from pipeline.config.options import PREDICTION_RUN
from pipeline.core import counts as names
from pipeline.core.comparison import first_lines
from pipeline.core.counts import Counts
from pipeline.core.image_attributes import BUILT_IN_SLICES, SliceRule, image_values
from pipeline.core.slices import SCORE_QUANTILES, SliceCounts, bucket_detection_slices, detection_slice_rows
from pipeline.transforms.bucket_parts import bucket_parts, optional_side_inputs
from pipeline.transforms.count import counted_at_bundle_end


class DetectionSlices(NamedTuple):
    rows: beam.PCollection  # one element: the slices table's rows (schema.SLICE_COLUMNS)
    counts: beam.PCollection  # Counts: attribute rows repeated, images with attributes


class SliceDetections(beam.PTransform):
    """(bucket, part) of the prediction lines and the image attributes -> DetectionSlices."""

    def __init__(self, slice_by: Sequence[str], rules: Optional[beam.PCollection] = None):
        super().__init__()
        self._slice_by = tuple(slice_by)
        self._rules = rules

    def expand(self, parts):
        slice_by = self._slice_by
        sliced = (
            parts
            | 'JoinByBucket' >> beam.GroupByKey()
            | 'SliceImages' >> beam.ParDo(SliceBucketFn(slice_by), **optional_side_inputs(rules=self._rules))
            .with_outputs('scores', 'counts', main='slices'))
        counts = sliced.slices | 'SumPerSlice' >> beam.CombinePerKey(_summed)
        quantiles = sliced.scores | 'ScoresPerSliceAndLabel' >> beam.CombinePerKey(ScoreQuantilesFn())
        rows = (
            (counts | 'SliceCounts' >> beam.MapTuple(lambda key, value: ('counts', key, value)),
             quantiles | 'SliceScores' >> beam.MapTuple(lambda key, value: ('scores', key, value)))
            | 'FiguresOfSlices' >> beam.Flatten()
            | 'EverySlicesFigures' >> beam.combiners.ToList()
            | 'SliceRows' >> beam.Map(_rows, slice_by))
        return DetectionSlices(rows, sliced.counts)


def _summed(parts: Iterable[SliceCounts]) -> SliceCounts:
    total = SliceCounts()
    for part in parts:
        total = total.plus(part)
    return total


def _rows(parts: List[tuple], slice_by: Sequence[str]) -> List[dict]:
    counts = {key: value for kind, key, value in parts if kind == 'counts'}
    quantiles = {key: value for kind, key, value in parts if kind == 'scores'}
    return detection_slice_rows(counts, quantiles, slice_by)


class SliceBucketFn(beam.DoFn):
    """(bucket, parts) -> per run and slice: (slice key, SliceCounts) (main), ((slice key, label),
    scores) tagged 'scores'; and the counts, gathered per bundle."""

    def __init__(self, slice_by: Sequence[str]):
        self._attributes = tuple(name for name in slice_by if name not in BUILT_IN_SLICES)
        self._whole_run = PREDICTION_RUN in slice_by
        self._counts = Counts()

    def start_bundle(self):
        self._counts = Counts()

    def process(self, element, rules: Sequence[SliceRule] = ()):
        joined = bucket_parts(element[1])
        by_run, attributes = joined.lines, joined.attributes
        by_name = {rule.attribute: rule for rule in rules}
        chosen = [by_name.get(name, SliceRule(name)) for name in self._attributes]
        scalars = self._counts.scalars
        scalars[names.IMAGE_ATTRIBUTE_ROWS_REPEATED] += image_values(attributes, [])[1]
        for run, lines in by_run.items():
            first, _ = first_lines(lines)
            if first is None:
                continue
            values, _ = image_values(attributes, first.image_uris)
            scalars[names.IMAGES_SLICED] += len(values)
            scalars[names.IMAGES_WITH_ATTRIBUTES] += sum(row is not None for row in values)
            counts, scores = bucket_detection_slices(run, first, values, chosen, self._whole_run)
            yield from counts.items()
            for key, values_ in scores.items():
                yield beam.pvalue.TaggedOutput('scores', (key, values_))

    def finish_bundle(self):
        yield counted_at_bundle_end(self._counts)
        self._counts = Counts()


class ScoreQuantilesFn(beam.CombineFn):
    """Score arrays of one slice and label -> (how many, [min, p25, median, p75, max]) by Beam's
    quantile sketch (exact for small slices)."""

    def __init__(self):
        self._quantiles = ApproximateQuantilesCombineFn.create(SCORE_QUANTILES, input_batched=True)

    def create_accumulator(self):
        return 0, self._quantiles.create_accumulator()

    def add_input(self, accumulator, scores: np.ndarray):
        count, state = accumulator
        return count + len(scores), self._quantiles.add_input(state, scores.tolist())

    def merge_accumulators(self, accumulators):
        accumulators = list(accumulators)
        return (sum(count for count, _ in accumulators),
                self._quantiles.merge_accumulators([state for _, state in accumulators]))

    def extract_output(self, accumulator):
        count, state = accumulator
        return count, self._quantiles.extract_output(state) if count else []
