"""Evaluation against ground truth as a Beam step: the kept detections of each prediction line joined
with the ground truth by bucket (a hash of the image URI: one element carries many images, and a
worker holds one bucket at a time), each image evaluated on its own, and the per-label counts of each
prediction run combined (they merge in any order, so the figures are exact with memory that grows
with distinct scores, never with images)."""
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.transforms.window import GlobalWindows

from pipeline.core import counts as names
from pipeline.core.counts import Counts
from pipeline.core.evaluation import (
    LabelAccumulator,
    LabelTotals,
    LinePrediction,
    RunImage,
    confidence_rows,
    confusion_rows,
    evaluate_image,
    merge_cells,
    merge_totals,
    metric_rows,
    metrics_document,
    outcome_rows,
    run_metrics,
)
from pipeline.core.ground_truth import GroundTruthImage, merge_units
from pipeline.core.schema import MATCHES_SCHEMA
from pipeline.core.tables import rows_to_table
from pipeline.transforms.count import counted_at_bundle_end


class EvaluationResult(NamedTuple):
    metrics: beam.PCollection  # the metrics.json document (one element)
    runs: beam.PCollection  # (prediction_run, RunImage) summed per run
    matches: beam.PCollection  # pa.Table batches of the per-box outcomes (schema.MATCH_COLUMNS)
    confidence: beam.PCollection  # rows of schema.CONFIDENCE_COLUMNS, as dicts
    confusion: beam.PCollection  # rows of schema.CONFUSION_COLUMNS, as dicts
    metric_rows: beam.PCollection  # rows of schema.METRIC_COLUMNS, as dicts
    counts: beam.PCollection  # Counts


def _empty_line(run: Optional[str], uri: str) -> LinePrediction:
    return LinePrediction(run, uri, ('', -1, -1), [], np.zeros(0), np.zeros((0, 4)))


# Rows of `matches` gathered before they leave as one Arrow table (and at the end of each bundle).
MATCH_TABLE_ROWS = 32 * 1024


class EvaluateBucketFn(beam.DoFn):
    """(bucket, {'predictions': [BucketLines], 'truth': [BucketTruth]}) -> for the bucket's
    images, per run: (run, RunImage), label totals keyed (run, label), confusion cells keyed by run;
    the per-box outcomes as Arrow tables (main output) and the counts, gathered per bundle. Each image
    is evaluated on its own; what it adds is summed over the bucket before it leaves."""

    def __init__(self, thresholds: Sequence[float], eval_iou: float, eval_confidence: float,
                 ml_use: Optional[str] = None):
        self._thresholds = tuple(thresholds)
        self._eval_iou = eval_iou
        self._eval_confidence = eval_confidence
        self._ml_use = ml_use
        self._rows: List[tuple] = []
        self._counts = Counts()

    def start_bundle(self):
        self._rows, self._counts = [], Counts()

    def process(self, element, runs: Iterable[Optional[str]]):
        _, joined = element
        runs = list(runs)
        lines_of: Dict[str, List[LinePrediction]] = {}
        for batch in joined['predictions']:
            for line in batch.lines():
                lines_of.setdefault(line.image_uri, []).append(line)
        truth = merge_units(unit for batch in joined['truth'] for unit in batch.units())
        scalars = self._counts.scalars
        if self._ml_use is not None:
            scalars[names.GROUND_TRUTH_OTHER_ML_USE] += sum(image.ml_use != self._ml_use for image in truth)
            truth = [image for image in truth if image.ml_use == self._ml_use]
        labelled = {image.image_uri for image in truth}
        run_images: Dict[Optional[str], RunImage] = {}
        for uri, lines in lines_of.items():
            if uri not in labelled:
                for line in lines:
                    _add(run_images, line.prediction_run, RunImage(predictions_without_ground_truth=1))
                scalars[names.PREDICTIONS_WITHOUT_GROUND_TRUTH] += len(lines)
        accumulators: Dict[Tuple[Optional[str], str], LabelAccumulator] = {}
        cells: Dict[Optional[str], dict] = {}
        for image in truth:
            self._evaluate(image, lines_of.get(image.image_uri, []), runs, accumulators, cells, run_images)
        for (run, label), accumulator in accumulators.items():
            yield beam.pvalue.TaggedOutput('totals', ((run, label), accumulator.totals()))
        for run, run_cells in cells.items():
            yield beam.pvalue.TaggedOutput('cells', (run, run_cells))
        for run, image_counts in run_images.items():
            yield beam.pvalue.TaggedOutput('runs', (run, image_counts))
        if len(self._rows) >= MATCH_TABLE_ROWS:
            yield self._matches()

    def _evaluate(self, image: GroundTruthImage, lines: List[LinePrediction], runs, accumulators, cells,
                  run_images) -> None:
        """One image against each run's first line of it."""
        gt_labels = [box.label for box in image.boxes]
        gt_boxes = np.array([box.box for box in image.boxes], dtype=np.float64).reshape(-1, 4)
        gt_crowd = np.array([box.crowd for box in image.boxes], dtype=bool)
        scalars = self._counts.scalars
        scalars[names.GROUND_TRUTH_IMAGES] += 1
        scalars[names.GROUND_TRUTH_BOXES] += len(image.boxes)
        for run in runs:
            mine = sorted((line for line in lines if line.prediction_run == run), key=lambda line: line.order)
            line = mine[0] if mine else _empty_line(run, image.image_uri)
            result = evaluate_image(line.labels, line.scores, line.boxes, gt_labels, gt_boxes, gt_crowd,
                                    self._thresholds, self._eval_iou, self._eval_confidence)
            per_label: Dict[str, int] = {}
            for label in line.labels:
                if label is not None:
                    per_label[label] = per_label.get(label, 0) + 1
            for label in result.label_counts:
                accumulator = accumulators.get((run, label))
                if accumulator is None:
                    accumulator = accumulators[(run, label)] = LabelAccumulator()
                accumulator.add(result.label_counts[label], result.at_eval[label], per_label.get(label, 0))
            cells[run] = merge_cells(cells.get(run, {}), result.confusion)
            counts = RunImage(evaluated=1, without_prediction=0 if mine else 1,
                              other_lines=max(len(mine) - 1, 0), detections=len(line.scores))
            _add(run_images, run, counts)
            scalars[names.IMAGES_EVALUATED] += 1
            scalars[names.IMAGES_WITHOUT_PREDICTION] += counts.without_prediction
            scalars[names.FURTHER_LINES_OF_EVALUATED_IMAGES] += counts.other_lines
            self._rows.extend(outcome_rows(run, image.image_uri, result, line.boxes, gt_boxes))

    def finish_bundle(self):
        if self._rows:
            yield GlobalWindows.windowed_value(self._matches())
        yield counted_at_bundle_end(self._counts)
        self._counts = Counts()

    def _matches(self):
        table = rows_to_table(self._rows, MATCHES_SCHEMA)
        self._counts.scalars[names.EVALUATION_MATCH_ROWS] += table.num_rows
        self._rows = []
        return table


def _add(run_images: Dict[Optional[str], RunImage], run: Optional[str], counts: RunImage) -> None:
    run_images[run] = _sum_run_images([run_images.get(run, RunImage()), counts])


class MergeTotalsFn(beam.CombineFn):
    def create_accumulator(self):
        return None

    def add_input(self, accumulator, totals: LabelTotals):
        return totals if accumulator is None else merge_totals(accumulator, totals)

    def merge_accumulators(self, accumulators):
        merged = None
        for accumulator in accumulators:
            if accumulator is not None:
                merged = accumulator if merged is None else merge_totals(merged, accumulator)
        return merged

    def extract_output(self, accumulator):
        return accumulator


def _sum_run_images(parts: Iterable[RunImage]) -> RunImage:
    return RunImage(*(sum(values) for values in zip(RunImage(), *parts)))


class RunFigures(NamedTuple):
    """One run's label totals and image counts, joined."""
    prediction_run: Optional[str]
    labels: dict  # label -> LabelTotals
    images: RunImage


class EvaluateAgainstGroundTruth(beam.PTransform):
    """{'predictions': (bucket, BucketLines), 'truth': (bucket, BucketTruth)} -> EvaluationResult."""

    def __init__(self, thresholds: Sequence[float], eval_iou: float, eval_confidence: float,
                 ml_use: Optional[str] = None):
        super().__init__()
        self._thresholds = tuple(thresholds)
        self._eval_iou = eval_iou
        self._eval_confidence = eval_confidence
        self._ml_use = ml_use

    def expand(self, inputs):
        predictions, truth = inputs['predictions'], inputs['truth']
        runs = (predictions
                | 'RunsOfLines' >> beam.MapTuple(lambda _, lines: lines.prediction_run)
                | 'DistinctRuns' >> beam.Distinct())
        evaluated = (
            {'predictions': predictions, 'truth': truth}
            | 'JoinByBucket' >> beam.CoGroupByKey()
            | 'EvaluateImages' >> beam.ParDo(
                EvaluateBucketFn(self._thresholds, self._eval_iou, self._eval_confidence, self._ml_use),
                runs=beam.pvalue.AsList(runs)).with_outputs('totals', 'cells', 'runs', 'counts', main='matches'))
        totals = evaluated.totals | 'MergePerRunAndLabel' >> beam.CombinePerKey(MergeTotalsFn())
        run_images = evaluated.runs | 'SumPerRun' >> beam.CombinePerKey(_sum_run_images)
        confusion = (evaluated.cells
                     | 'CellsPerRun' >> beam.CombinePerKey(_merge_all_cells)
                     | 'ConfusionRows' >> beam.FlatMapTuple(confusion_rows))
        figures = (
            {'totals': totals | 'ByRun' >> beam.MapTuple(lambda key, t: (key[0], (key[1], t))),
             'images': run_images}
            | 'JoinPerRun' >> beam.CoGroupByKey()
            | 'RunFigures' >> beam.MapTuple(lambda run, parts: RunFigures(
                run, dict(parts['totals']), _sum_run_images(parts['images']))))
        thresholds, eval_iou = self._thresholds, self._eval_iou
        metrics = (
            figures
            | 'RunMetrics' >> beam.Map(lambda f: run_metrics(
                f.prediction_run, f.images.evaluated, f.images.detections, f.labels, thresholds))
            | 'AllRuns' >> beam.combiners.ToList()
            | 'Document' >> beam.Map(lambda runs: metrics_document(thresholds, eval_iou, runs)))
        confidence = figures | 'ConfidenceRows' >> beam.FlatMap(
            lambda f: confidence_rows(f.prediction_run, f.labels, eval_iou))
        metric_table = figures | 'MetricRows' >> beam.FlatMap(
            lambda f: metric_rows(f.prediction_run, f.labels, thresholds))
        return EvaluationResult(metrics, run_images, evaluated.matches, confidence, confusion, metric_table,
                                evaluated.counts)


def _merge_all_cells(parts: Iterable[dict]) -> dict:
    merged: dict = {}
    for cells in parts:
        merged = merge_cells(merged, cells)
    return merged
