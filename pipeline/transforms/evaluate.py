"""Evaluation against ground truth as a Beam step: the kept detections of each prediction line joined
with the image's ground truth by URI, each image evaluated on its own (no worker holds more than one
image's boxes), and the per-label counts of each prediction run combined (they merge in any order).
The job does not run it yet."""
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np

from pipeline.core.evaluation import (
    LabelTotals,
    evaluate_image,
    label_totals,
    merge_cells,
    merge_totals,
    metrics_document,
    run_metrics,
)
from pipeline.core.ground_truth import GroundTruthImage


class LinePrediction(NamedTuple):
    """The kept detections of one prediction line, with what orders the lines of one image: the line
    first in (source file, position) order is the one evaluated."""
    prediction_run: Optional[str]
    image_uri: str
    order: Tuple[str, int]  # (source file, position of the line in it)
    labels: List[Optional[str]]
    scores: np.ndarray
    boxes: np.ndarray  # (n, 4) normalized


class RunImage(NamedTuple):
    """What one image adds to one run's figures."""
    evaluated: int = 0
    without_prediction: int = 0
    predictions_without_ground_truth: int = 0
    other_lines: int = 0  # further lines of an image already evaluated
    detections: int = 0


class EvaluationResult(NamedTuple):
    metrics: beam.PCollection  # the metrics.json document (one element)
    runs: beam.PCollection  # (prediction_run, RunImage) summed per run
    confusion: beam.PCollection  # (prediction_run, {(true label, predicted label): count})
    images: beam.PCollection  # (prediction_run, image URI, ImageEvaluation) of each evaluated image


def _empty_line(run: Optional[str], uri: str) -> LinePrediction:
    return LinePrediction(run, uri, ('', -1), [], np.zeros(0), np.zeros((0, 4)))


class EvaluateImageFn(beam.DoFn):
    """(image URI, {'predictions': lines, 'truth': images}) -> per run: (run, RunImage), the image's
    label totals keyed (run, label), its confusion cells keyed by run, and the image's evaluation."""

    def __init__(self, thresholds: Sequence[float], eval_iou: float, eval_confidence: float):
        self._thresholds = tuple(thresholds)
        self._eval_iou = eval_iou
        self._eval_confidence = eval_confidence

    def process(self, element, runs: Iterable[Optional[str]]):
        uri, joined = element
        lines: List[LinePrediction] = list(joined['predictions'])
        truth: List[GroundTruthImage] = list(joined['truth'])
        if not truth:
            for line in lines:
                yield beam.pvalue.TaggedOutput(
                    'runs', (line.prediction_run, RunImage(predictions_without_ground_truth=1)))
            return
        boxes = [box for image in truth for box in image.boxes]
        gt_labels = [box.label for box in boxes]
        gt_boxes = np.array([box.box for box in boxes], dtype=np.float64).reshape(-1, 4)
        gt_crowd = np.array([box.crowd for box in boxes], dtype=bool)
        for run in runs:
            mine = sorted((line for line in lines if line.prediction_run == run), key=lambda line: line.order)
            line = mine[0] if mine else _empty_line(run, uri)
            result = evaluate_image(line.labels, line.scores, line.boxes, gt_labels, gt_boxes, gt_crowd,
                                    self._thresholds, self._eval_iou, self._eval_confidence)
            per_label = {label: line.labels.count(label) for label in set(line.labels) if label is not None}
            for label, totals in label_totals(result, per_label).items():
                yield beam.pvalue.TaggedOutput('totals', ((run, label), totals))
            yield beam.pvalue.TaggedOutput('cells', (run, result.confusion))
            yield beam.pvalue.TaggedOutput('runs', (run, RunImage(
                evaluated=1, without_prediction=0 if mine else 1, other_lines=max(len(mine) - 1, 0),
                detections=len(line.scores))))
            yield run, uri, result


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


class EvaluateAgainstGroundTruth(beam.PTransform):
    """{'predictions': LinePrediction, 'truth': (image URI, GroundTruthImage)} -> EvaluationResult."""

    def __init__(self, thresholds: Sequence[float], eval_iou: float, eval_confidence: float):
        super().__init__()
        self._thresholds = tuple(thresholds)
        self._eval_iou = eval_iou
        self._eval_confidence = eval_confidence

    def expand(self, inputs: Dict[str, beam.PCollection]):
        predictions, truth = inputs['predictions'], inputs['truth']
        runs = (predictions
                | 'RunOfLine' >> beam.Map(lambda line: line.prediction_run)
                | 'DistinctRuns' >> beam.Distinct())
        evaluated = (
            {'predictions': predictions | 'ByImage' >> beam.Map(lambda line: (line.image_uri, line)),
             'truth': truth}
            | 'JoinWithGroundTruth' >> beam.CoGroupByKey()
            | 'EvaluateImages' >> beam.ParDo(
                EvaluateImageFn(self._thresholds, self._eval_iou, self._eval_confidence),
                runs=beam.pvalue.AsList(runs)).with_outputs('totals', 'cells', 'runs', main='images'))
        totals = evaluated.totals | 'MergePerRunAndLabel' >> beam.CombinePerKey(MergeTotalsFn())
        run_images = evaluated.runs | 'SumPerRun' >> beam.CombinePerKey(_sum_run_images)
        confusion = evaluated.cells | 'CellsPerRun' >> beam.CombinePerKey(_merge_all_cells)
        thresholds, eval_iou = self._thresholds, self._eval_iou
        metrics = (
            {'totals': totals | 'ByRun' >> beam.MapTuple(lambda key, t: (key[0], (key[1], t))),
             'images': run_images}
            | 'JoinPerRun' >> beam.CoGroupByKey()
            | 'RunMetrics' >> beam.MapTuple(lambda run, parts: _run_entry(run, parts, thresholds))
            | 'AllRuns' >> beam.combiners.ToList()
            | 'Document' >> beam.Map(lambda runs: metrics_document(thresholds, eval_iou, runs)))
        return EvaluationResult(metrics, run_images, confusion, evaluated.images)


def _merge_all_cells(parts: Iterable[dict]) -> dict:
    merged: dict = {}
    for cells in parts:
        merged = merge_cells(merged, cells)
    return merged


def _run_entry(run: Optional[str], parts: dict, thresholds: Sequence[float]) -> dict:
    images = _sum_run_images(parts['images'])
    return run_metrics(run, images.evaluated, images.detections, dict(parts['totals']), thresholds)

