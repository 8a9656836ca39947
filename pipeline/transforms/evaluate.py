"""Evaluation against ground truth as a Beam step: the kept detections of each prediction line joined
with the ground truth by bucket (a hash of the image URI: one element carries many images, and a
worker holds one bucket at a time), each image evaluated on its own, and the per-label counts of each
prediction run combined (they merge in any order, so the figures are exact with memory that grows
with distinct scores, never with images); then the detections at the scores where true and false
positives mix, gathered by label and put in pycocotools' order (core.ties)."""
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.transforms.window import GlobalWindows

from pipeline.config.options import COCO_MAX_DETS
from pipeline.config.settings import required
from pipeline.core import counts as names
from pipeline.core.bucket_evaluation import BucketEvaluation, ImageColumns, assemble, evaluate_images, image_subset
from pipeline.core.counts import Counts
from pipeline.core.evaluation import (
    PREDICTED,
    TIE_KINDS,
    EvaluationFigures,
    LabelTotals,
    RunImage,
    held_scores,
    is_merged,
    merge_all_totals,
    merge_cells,
    packed,
    settled,
    unpacked,
)
from pipeline.core.image_attributes import (
    BUILT_IN_SLICES,
    BucketAttributes,
    SliceKey,
    SliceRule,
    image_values,
    slice_groups,
)
from pipeline.core.operating_thresholds import ThresholdRule
from pipeline.core.ties import TieBasis, raises, tied_parts
from pipeline.io.sizes import SizeResolver
from pipeline.io.spill import SpillWriter, read_payload
from pipeline.transforms.bucket_parts import bucket_parts, optional_side_inputs
from pipeline.transforms.coders import ArrowTableCoder  # noqa: F401  (registers the coder of pa.Table)
from pipeline.transforms.count import counted_at_bundle_end
from pipeline.transforms.gather import GatheredTables


class EvaluationResult(NamedTuple):
    figures: beam.PCollection  # EvaluationFigures (one element): metrics.json and the small tables' rows
    matches: beam.PCollection  # pa.Table batches of the per-box outcomes (schema.MATCH_COLUMNS)
    counts: beam.PCollection  # Counts
    # (bucket, [(run, image URI)]) of the images with a false positive or a miss, when asked for
    errors: beam.PCollection


# Rows of `matches` gathered before they leave as one Arrow table (and at the end of each bundle).
MATCH_TABLE_ROWS = 32 * 1024


class EvaluateBucketFn(beam.DoFn):
    """(bucket, its parts: see evaluation.PREDICTED) -> for the bucket's
    images, per run: (run, RunImage), label totals keyed (run, label), confusion cells keyed by run;
    the per-box outcomes as Arrow tables (main output) and the counts, gathered per bundle. Each image
    is evaluated on its own; what it adds is summed over the bucket before it leaves."""

    def __init__(self, thresholds: Sequence[float], eval_iou: float, eval_confidence: float,
                 ml_use: Optional[str] = None, max_dets: Sequence[int] = COCO_MAX_DETS,
                 spill_folder: Optional[str] = None, fixed_size: Optional[Tuple[int, int]] = None,
                 error_images: bool = True, sliced: Sequence[str] = ()):
        self._sliced = tuple(sliced)  # the image attributes each run is also evaluated by, slice by slice
        self._error_images = error_images  # the images with an error are listed (for --export_select errors)
        self._spill_folder = spill_folder  # when set, the tied detections wait there (io.spill)
        self._fixed_size = fixed_size  # --image_size
        self._sizes: Optional[SizeResolver] = None  # the run's own sizes, without probing: from the manifest
        self._spill = SpillWriter(spill_folder)  # one per bundle (start_bundle)
        self._thresholds = tuple(thresholds)
        self._eval_iou = eval_iou
        self._eval_confidence = eval_confidence
        self._ml_use = ml_use
        self._max_dets = tuple(max_dets)
        self._matches = GatheredTables(MATCH_TABLE_ROWS, names.EVALUATION_MATCH_ROWS)
        self._counts = Counts()

    def start_bundle(self):
        self._matches, self._counts = GatheredTables(MATCH_TABLE_ROWS, names.EVALUATION_MATCH_ROWS), Counts()
        self._spill = SpillWriter(self._spill_folder)

    def process(self, element, runs: Iterable[Optional[str]], manifest=None, rules: Sequence[SliceRule] = ()):
        bucket_id, parts = element
        if self._sizes is None:  # the images without a line: the manifest's size, else the fixed one
            self._sizes = SizeResolver(manifest, probe=False, fixed=self._fixed_size, allowed_scheme='')
        errors = []
        runs = list(runs)
        joined = bucket_parts(parts)
        bucket = assemble(joined.truth, joined.all_lines(), runs, self._ml_use, self._sizes.resolve)
        scalars = self._counts.scalars
        slices = self._slices(joined.attributes, bucket.image_uris, rules)
        scalars[names.GROUND_TRUTH_OTHER_ML_USE] += bucket.other_ml_use
        for use, images in bucket.images_by_ml_use.items():
            scalars[names.ground_truth_ml_use(use)] += images
        scalars[names.GROUND_TRUTH_IMAGES] += len(bucket.image_uris)
        scalars[names.GROUND_TRUTH_BOXES] += bucket.gt_boxes
        scalars[names.GROUND_TRUTH_BOXES_PAST_EDGE] += bucket.gt_past_edge
        scalars[names.GROUND_TRUTH_BOXES_REPEATED] += bucket.gt_repeated.boxes
        scalars[names.GROUND_TRUTH_IMAGES_WITH_REPEATED_BOXES] += bucket.gt_repeated.images
        for run, (columns, counts) in bucket.runs.items():
            scalars[names.IMAGES_EVALUATED] += counts.evaluated
            scalars[names.IMAGES_WITHOUT_PREDICTION] += counts.without_prediction
            scalars[names.PREDICTIONS_WITHOUT_GROUND_TRUTH] += counts.predictions_without_ground_truth
            scalars[names.FURTHER_LINES_OF_EVALUATED_IMAGES] += counts.other_lines
            if not columns.image_uris:
                yield beam.pvalue.TaggedOutput('run_parts', (run, (counts, {})))
                continue
            result = evaluate_images(columns, run, self._thresholds, self._eval_iou, self._eval_confidence,
                                     self._max_dets)
            yield from self._group_outputs(run, result, counts)
            if self._error_images:
                errors += [(run, uri) for uri in result.images_with_errors()]
            gathered = self._matches.add(result.matches, self._counts)
            if gathered is not None:
                yield gathered
            yield from self._slice_outputs(run, columns, slices)
        if errors:
            yield beam.pvalue.TaggedOutput('errors', (bucket_id, errors))

    def _slice_outputs(self, run: Optional[str], columns: ImageColumns, slices: Dict[SliceKey, np.ndarray]):
        """Each slice of a run's images evaluated as pycocotools would evaluate those images alone."""
        for key, images in slices.items():
            sliced = image_subset(columns, images)
            result = evaluate_images(sliced, run, self._thresholds, self._eval_iou, self._eval_confidence,
                                     self._max_dets, details=False)
            predicted = int(np.count_nonzero(required(sliced.predicted, 'predicted')))
            yield from self._group_outputs((run, *key), result, RunImage(
                evaluated=len(images), detections=len(sliced.det_scores), without_prediction=len(images) - predicted))

    def _group_outputs(self, group, result: BucketEvaluation, counts: RunImage):
        """What a run, or a slice of it (run, attribute, place, value), adds to its figures."""
        for label, totals in result.labels.items():
            yield beam.pvalue.TaggedOutput('totals', ((group, label), totals))
        counts = counts._replace(beyond_max_dets=result.beyond_max_dets, without_size=result.images_without_size)
        yield beam.pvalue.TaggedOutput('run_parts', (group, (counts, result.cells)))
        for kind, tied in (('ties', result.tied), ('error_ties', result.tied_errors)):
            if tied is not None and len(tied.scores):
                yield beam.pvalue.TaggedOutput('tied', (group, kind, self._spill.put(packed(tied))))

    def _slices(self, parts: List[BucketAttributes], image_uris: List[str],
                rules: Sequence[SliceRule]) -> Dict[SliceKey, np.ndarray]:
        """The bucket's evaluated images (positions) in each slice of each sliced attribute."""
        if not self._sliced:
            return {}
        values, repeated = image_values(parts, image_uris)
        self._counts.scalars[names.IMAGE_ATTRIBUTE_ROWS_REPEATED] += repeated
        self._counts.scalars[names.IMAGES_SLICED] += len(values)
        self._counts.scalars[names.IMAGES_WITH_ATTRIBUTES] += sum(row is not None for row in values)
        by_name = {rule.attribute: rule for rule in rules}
        return slice_groups(values, [by_name.get(name, SliceRule(name)) for name in self._sliced])

    def finish_bundle(self):
        self._spill.close()
        gathered = self._matches.take(self._counts)
        if gathered is not None:
            yield GlobalWindows.windowed_value(gathered)
        yield counted_at_bundle_end(self._counts)
        self._counts = Counts()


# Detections a label's gathered parts may hold before they are merged into counts per distinct score:
# what a worker holds for one label stays below twice this, or twice the label's distinct scores.
COMPACT_AT = 2_000_000


class MergeTotalsFn(beam.CombineFn):
    """LabelTotals of the buckets -> the run's, for one label, settled with the threshold `rule`
    chooses. Parts are gathered and merged many at once (two by two would sort the growing score list
    once per bucket): at the end, and whenever the parts gathered since the last merge hold more than
    COMPACT_AT detections and more than the merged ones, so each merge at least doubles what is merged
    and a label's N detections are sorted O(log N) times, not once per bucket."""

    def __init__(self, rule: ThresholdRule = ThresholdRule()):
        self._rule = rule

    def create_accumulator(self):
        return []

    def add_input(self, accumulator, totals: LabelTotals):
        accumulator.append(totals)
        return _compacted(accumulator)

    def merge_accumulators(self, accumulators):
        return _compacted([totals for accumulator in accumulators for totals in accumulator])

    def extract_output(self, accumulator):
        return settled(merge_all_totals(accumulator), self._rule) if accumulator else None

    def get_accumulator_coder(self):
        return beam.coders.PickleCoder()


def _compacted(parts: List[LabelTotals]) -> List[LabelTotals]:
    if len(parts) < 2:
        return parts
    gathered = held_scores([part for part in parts if not is_merged(part)])
    if gathered > max(COMPACT_AT, held_scores([part for part in parts if is_merged(part)])):
        return [merge_all_totals(parts)]
    return parts


class GatherTiedScoresFn(beam.DoFn):
    """(run, kind of order, a bucket's TiedDetections) -> ((run, label, kind, chunk), the part of
    them at the scores of the label where outcomes mix): the only detections (or error points) whose
    order among equal scores counts."""

    def process(self, element, bases: Dict[Tuple[Optional[str], str, str], TieBasis]):
        run, kind, payload = element
        mine = {label: basis for (basis_run, label, basis_kind), basis in bases.items()
                if basis_run == run and basis_kind == kind}
        if not mine:
            return
        for (label, chunk), part in tied_parts(unpacked(read_payload(payload)), mine).items():
            yield (run, label, kind, chunk), packed(part)


def _raises_of_chunk(element, bases: Dict[Tuple[Optional[str], str, str], TieBasis]):
    """((run, label, kind, chunk), packed parts) -> ((run, label, kind), ties.raises of the chunk in
    the kind's order)."""
    (run, label, kind, _), parts = element
    return (run, label, kind), raises([unpacked(part) for part in parts], bases[run, label, kind],
                                      TIE_KINDS[kind].curve)


def _highest(raised: Iterable[np.ndarray]) -> np.ndarray:
    return np.maximum.reduce(list(raised))


def _sum_run_parts(parts: Iterable[Tuple[RunImage, dict]]) -> Tuple[RunImage, dict]:
    """A run's image counts and confusion cells, summed over its buckets."""
    images, cells = RunImage(), {}  # type: RunImage, dict
    for part_images, part_cells in parts:
        images = images.plus(part_images)
        cells = merge_cells(cells, part_cells)
    return images, cells


class EvaluateAgainstGroundTruth(beam.PTransform):
    """(bucket, part) of the prediction lines and of the ground truth (see evaluation.PREDICTED) ->
    EvaluationResult."""

    def __init__(self, thresholds: Sequence[float], eval_iou: float, eval_confidence: float,
                 ml_use: Optional[str] = None, known_runs: Sequence[Optional[str]] = (),
                 max_dets: Sequence[int] = COCO_MAX_DETS, spill_folder: Optional[str] = None,
                 fixed_size: Optional[Tuple[int, int]] = None, manifest: Optional[beam.PCollection] = None,
                 error_images: bool = True, rule: ThresholdRule = ThresholdRule(), slice_by: Sequence[str] = (),
                 rules: Optional[beam.PCollection] = None):
        super().__init__()
        self._slice_by = tuple(slice_by)  # --slice_by, built-in slices too
        self._rules = rules  # a SliceRule per sliced image attribute (read_attributes)
        self._rule = rule  # how each label's operating threshold is chosen
        self._error_images = error_images  # False: `errors` stays empty (nothing reads it)
        self._spill_folder = spill_folder
        self._fixed_size = fixed_size
        self._manifest = manifest  # --image_sizes: a singleton, uri -> (width, height) or None
        self._max_dets = tuple(max_dets)
        self._thresholds = tuple(thresholds)
        self._eval_iou = eval_iou
        self._eval_confidence = eval_confidence
        self._ml_use = ml_use
        self._known_runs = list(known_runs)  # evaluated even when none of their lines is usable

    def expand(self, parts):
        of_lines = parts | 'RunsOfLines' >> beam.FlatMapTuple(lambda _, part: [part[1]] if part[0] == PREDICTED else [])
        known = parts.pipeline | 'RunsOfShards' >> beam.Create(self._known_runs, reshuffle=False)
        runs = (of_lines, known) | 'AllRuns' >> beam.Flatten() | 'DistinctRuns' >> beam.Distinct()
        sliced = [name for name in self._slice_by if name not in BUILT_IN_SLICES]
        evaluated = (
            parts
            | 'JoinByBucket' >> beam.GroupByKey()
            | 'EvaluateImages' >> beam.ParDo(
                EvaluateBucketFn(self._thresholds, self._eval_iou, self._eval_confidence, self._ml_use,
                                 self._max_dets, self._spill_folder, self._fixed_size, self._error_images, sliced),
                runs=beam.pvalue.AsList(runs), **optional_side_inputs(manifest=self._manifest, rules=self._rules),
            ).with_output_types(pa.Table).with_outputs(
                'totals', 'run_parts', 'counts', 'errors', 'tied', main='matches'))
        totals = evaluated.totals | 'MergePerRunAndLabel' >> beam.CombinePerKey(MergeTotalsFn(self._rule))
        # Equal scores in pycocotools' order (and tidecv's, for the error types): only those where
        # true and false positives mix (see ties).
        bases = beam.pvalue.AsDict(totals | 'ScoresWithMixedOutcomes' >> beam.FlatMapTuple(
            lambda key, t: [((*key, kind), basis) for kind, basis in (('ties', t.ties), ('error_ties', t.error_ties))
                            if basis is not None]))
        raised = (
            evaluated.tied
            | 'GatherTiedDetections' >> beam.ParDo(GatherTiedScoresFn(), bases=bases)
            | 'ByLabelAndChunk' >> beam.GroupByKey()
            | 'InPycocotoolsOrder' >> beam.Map(_raises_of_chunk, bases=bases)
            | 'RaisedPerRunAndLabel' >> beam.CombinePerKey(_highest))
        run_parts = evaluated.run_parts | 'SumPerRun' >> beam.CombinePerKey(_sum_run_parts)
        thresholds, eval_iou, max_dets, slice_by = self._thresholds, self._eval_iou, self._max_dets, self._slice_by
        figures = (
            (totals | 'LabelsOfRuns' >> beam.MapTuple(
                lambda key, t: ('labels', key[0], key[1], t._replace(ties=None, error_ties=None))),
             raised | 'TiesOfRuns' >> beam.MapTuple(lambda key, r: (key[2], key[0], key[1], r)),
             run_parts | 'Runs' >> beam.MapTuple(lambda run, part: ('run', run, *part)))
            | 'FiguresOfRuns' >> beam.Flatten()
            | 'EveryRunsFigures' >> beam.combiners.ToList()
            | 'Figures' >> beam.Map(lambda parts: EvaluationFigures.of(thresholds, eval_iou, parts, max_dets,
                                                                      slice_by)))
        return EvaluationResult(figures, evaluated.matches, evaluated.counts, evaluated.errors)
