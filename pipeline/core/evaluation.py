"""Detections against ground truth, with COCO's definitions (pycocotools' COCOeval, bbox, area range
"all"): matching per image and label, and average precision from counts that merge associatively.

Pure numpy. Boxes are normalized (x_min, y_min, x_max, y_max): IoU does not change when an image is
scaled, so no image size is needed. Unlike pycocotools, every detection counts (no maxDets cap), and
detections of equal score are taken together (pycocotools orders them by image, then by position).
"""
from typing import Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from pipeline.core.decoding import DecodedLines

# COCO's recall points (0, 0.01, ..., 1).
RECALL_POINTS = np.linspace(0.0, 1.0, 101)

# Outcomes of a detection at one IoU threshold.
FALSE_POSITIVE, TRUE_POSITIVE, IGNORED = 0, 1, 2  # IGNORED: matched to a crowd box


def box_ious(detections: np.ndarray, ground_truth: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """(D, G) IoU; against a crowd box, the intersection over the detection's own area (COCO)."""
    if not len(detections) or not len(ground_truth):
        return np.zeros((len(detections), len(ground_truth)))
    d, g = detections[:, None, :], ground_truth[None, :, :]
    width = np.clip(np.minimum(d[..., 2], g[..., 2]) - np.maximum(d[..., 0], g[..., 0]), 0, None)
    height = np.clip(np.minimum(d[..., 3], g[..., 3]) - np.maximum(d[..., 1], g[..., 1]), 0, None)
    inter = width * height
    det_area = (d[..., 2] - d[..., 0]) * (d[..., 3] - d[..., 1])
    gt_area = (g[..., 2] - g[..., 0]) * (g[..., 3] - g[..., 1])
    union = np.where(crowd[None, :], det_area, det_area + gt_area - inter)
    with np.errstate(divide='ignore', invalid='ignore'):
        return np.where(union > 0, inter / union, 0.0)


class LabelMatch(NamedTuple):
    """One image's detections and ground-truth boxes of one label, matched at each IoU threshold;
    indices are positions in the inputs as given."""
    outcomes: np.ndarray  # (T, D) FALSE_POSITIVE, TRUE_POSITIVE or IGNORED
    matched_box: np.ndarray  # (T, D) the ground-truth box a detection matched, -1 if none
    matched_by: np.ndarray  # (T, G) the detection that matched a box, -1 if none (crowd: the last)
    ious: np.ndarray  # (D, G)


def match_label(scores: np.ndarray, boxes: np.ndarray, ground_truth: np.ndarray, crowd: np.ndarray,
                thresholds: Sequence[float]) -> LabelMatch:
    """COCO's greedy matching: detections by descending score (ties in input order), each to the
    unmatched regular box of highest IoU >= the threshold (a later box wins a tie), else to the crowd
    box of highest IoU (crowd boxes match any number of detections, which are then ignored)."""
    ious = box_ious(boxes, ground_truth, crowd)
    n_thresholds, n_dets, n_boxes = len(thresholds), len(scores), len(ground_truth)
    outcomes = np.full((n_thresholds, n_dets), FALSE_POSITIVE, dtype=np.int8)
    matched_box = np.full((n_thresholds, n_dets), -1, dtype=np.int64)
    matched_by = np.full((n_thresholds, n_boxes), -1, dtype=np.int64)
    if not n_dets or not n_boxes:
        return LabelMatch(outcomes, matched_box, matched_by, ious)
    det_order = np.argsort(-scores, kind='stable')
    regular, crowds = np.flatnonzero(~crowd), np.flatnonzero(crowd)
    for t, threshold in enumerate(thresholds):
        floor = min(threshold, 1 - 1e-10)
        free = np.ones(n_boxes, dtype=bool)
        for det in det_order.tolist():
            box = _best(ious[det], regular[free[regular]], floor)
            if box < 0:
                box = _best(ious[det], crowds, floor)
                if box < 0:
                    continue
                outcomes[t, det] = IGNORED
            else:
                outcomes[t, det] = TRUE_POSITIVE
                free[box] = False
            matched_box[t, det] = box
            matched_by[t, box] = det
    return LabelMatch(outcomes, matched_box, matched_by, ious)


def _best(ious: np.ndarray, candidates: np.ndarray, floor: float) -> int:
    """The candidate of highest IoU >= floor, the last one on a tie; -1 when none."""
    if not len(candidates):
        return -1
    values = ious[candidates]
    best = values.max()
    if best < floor:
        return -1
    return int(candidates[len(values) - 1 - int(np.argmax(values[::-1] == best))])


class PrecisionCounts:
    """For one label: true and false positives per distinct score at each IoU threshold, and the
    ground-truth boxes that count (not crowd). Merging adds them up: the order of images does not
    matter, and memory grows with distinct scores, not with images."""

    def __init__(self, n_thresholds: int, scores: Optional[np.ndarray] = None, tp: Optional[np.ndarray] = None,
                 fp: Optional[np.ndarray] = None, ground_truth: int = 0):
        self.scores = np.zeros(0) if scores is None else scores  # distinct, descending
        self.tp = np.zeros((n_thresholds, 0), dtype=np.int64) if tp is None else tp
        self.fp = np.zeros((n_thresholds, 0), dtype=np.int64) if fp is None else fp
        self.ground_truth = ground_truth

    @classmethod
    def of(cls, scores: np.ndarray, outcomes: np.ndarray, ground_truth: int) -> 'PrecisionCounts':
        """From detections' scores and their (T, D) outcomes, and the image's regular boxes."""
        return cls(outcomes.shape[0], ground_truth=ground_truth).merge(
            cls(outcomes.shape[0], scores, (outcomes == TRUE_POSITIVE).astype(np.int64),
                (outcomes == FALSE_POSITIVE).astype(np.int64)))

    def merge(self, other: 'PrecisionCounts') -> 'PrecisionCounts':
        scores = np.concatenate([self.scores, other.scores])
        distinct, inverse = np.unique(-scores, return_inverse=True)
        tp = np.zeros((self.tp.shape[0], len(distinct)), dtype=np.int64)
        fp = np.zeros_like(tp)
        for counts, parts in ((tp, (self.tp, other.tp)), (fp, (self.fp, other.fp))):
            for t in range(len(counts)):
                counts[t] = np.bincount(inverse, weights=np.concatenate([p[t] for p in parts]),
                                        minlength=len(distinct)).astype(np.int64)
        return PrecisionCounts(len(tp), -distinct, tp, fp, self.ground_truth + other.ground_truth)

    def average_precision(self) -> Optional[np.ndarray]:
        """(T,) COCO's 101-point interpolated precision; None without ground truth (pycocotools' -1)."""
        if not self.ground_truth:
            return None
        result = np.zeros(len(self.tp))
        for t, (tp, fp) in enumerate(zip(np.cumsum(self.tp, axis=1), np.cumsum(self.fp, axis=1))):
            recall = tp / self.ground_truth
            precision = tp / (tp + fp + np.spacing(1))
            envelope = np.maximum.accumulate(precision[::-1])[::-1]
            at = np.searchsorted(recall, RECALL_POINTS, side='left')
            result[t] = np.where(at < len(envelope), envelope[np.minimum(at, len(envelope) - 1)], 0.0).sum() \
                / len(RECALL_POINTS) if len(envelope) else 0.0
        return result

    def recall(self) -> Optional[np.ndarray]:
        """(T,) the highest recall reached; None without ground truth."""
        if not self.ground_truth:
            return None
        return self.tp.sum(axis=1) / self.ground_truth


def mean_over_labels(values: List[Optional[float]]) -> Optional[float]:
    """The mean over labels that have ground truth (the others are None), or None when none has."""
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


# Vertex AI's confidence grid for precision, recall and F1 curves.
CONFIDENCE_GRID = tuple(round(0.05 * i, 2) for i in range(1, 20)) + (0.96, 0.97, 0.98, 0.99)
TP, FP, FN = 'tp', 'fp', 'fn'


class BoxOutcome(NamedTuple):
    """One row of the per-box outcomes at the evaluation IoU: a kept detection (tp or fp), or a
    ground-truth box no detection matched (fn)."""
    outcome: str
    label: Optional[str]
    score: Optional[float]
    rank: Optional[int]  # the detection's rank in its image, by score
    iou: float  # tp: with its match; fp: the best with a box of its label; fn: the best with a detection of its label
    detection: Optional[int]  # position of the detection in the image's detections
    gt_index: Optional[int]  # position of the box in the image's ground truth


class LinePrediction(NamedTuple):
    """The kept detections of one prediction line, with what orders the lines of one image: the line
    first in (source file, position) order is the one evaluated."""
    prediction_run: Optional[str]
    image_uri: str
    order: Tuple[str, int, int]  # (source file, start of the byte range read, position of the line in it)
    labels: List[Optional[str]]
    scores: np.ndarray
    boxes: np.ndarray  # (n, 4) normalized


class RunImage(NamedTuple):
    """What one image adds to one run's figures (or, summed, a run's)."""
    evaluated: int = 0
    without_prediction: int = 0
    predictions_without_ground_truth: int = 0
    other_lines: int = 0  # further lines of an image already evaluated
    detections: int = 0


def line_predictions(decoded: DecodedLines, rows: np.ndarray, positions: Sequence[int], source_file: str,
                     range_start: int, prediction_run: Optional[str]) -> Iterator[LinePrediction]:
    """The kept detections of each decoded line: `rows` are the kept rows of the decoded columns, the
    rows of a line together in rank order (as the detections table holds them); `positions` place each
    decoded line among its byte range's lines."""
    row_line = decoded.line_index[rows]
    bounds = np.searchsorted(row_line, np.arange(len(decoded.image_uris) + 1)).tolist()
    labels, scores, boxes = decoded.labels, decoded.scores[rows], decoded.boxes[rows]
    for line, uri in enumerate(decoded.image_uris):
        start, end = bounds[line], bounds[line + 1]
        yield LinePrediction(prediction_run, uri, (source_file, range_start, positions[line]),
                             [labels[row] for row in rows[start:end].tolist()], scores[start:end], boxes[start:end])


class ImageEvaluation(NamedTuple):
    counts: dict  # label -> PrecisionCounts, for AP over the IoU thresholds
    outcomes: List[BoxOutcome]
    confidence: dict  # label -> (tp, fp, fn) arrays over CONFIDENCE_GRID, at the evaluation IoU
    confusion: dict  # (true label or None, predicted label or None) -> count


def evaluate_image(labels: Sequence[Optional[str]], scores: np.ndarray, boxes: np.ndarray,
                   gt_labels: Sequence[str], gt_boxes: np.ndarray, gt_crowd: np.ndarray,
                   thresholds: Sequence[float], eval_iou: float, eval_confidence: float) -> ImageEvaluation:
    """Everything one image contributes: AP counts per label, per-box outcomes, the confidence curves'
    counts and the confusion matrix's cells. Detections without a label can only be false positives."""
    ranks = np.empty(len(scores), dtype=np.int64)
    ranks[np.argsort(-scores, kind='stable')] = np.arange(len(scores))
    counts, confidence, outcomes = {}, {}, []
    grid = np.array(CONFIDENCE_GRID)
    for label in dict.fromkeys([*gt_labels, *(lbl for lbl in labels if lbl is not None)]):
        dets = np.array([i for i, lbl in enumerate(labels) if lbl == label], dtype=np.int64)
        gts = np.array([i for i, lbl in enumerate(gt_labels) if lbl == label], dtype=np.int64)
        crowd = gt_crowd[gts]
        match = match_label(scores[dets], boxes[dets], gt_boxes[gts], crowd, (*thresholds, eval_iou))
        counts[label] = PrecisionCounts.of(scores[dets], match.outcomes[:-1], int((~crowd).sum()))
        at_iou, matched_box, matched_by = match.outcomes[-1], match.matched_box[-1], match.matched_by[-1]
        tp_scores = scores[dets][at_iou == TRUE_POSITIVE]
        fp_scores = scores[dets][at_iou == FALSE_POSITIVE]
        tp = (tp_scores[None, :] >= grid[:, None]).sum(axis=1)
        confidence[label] = (tp, (fp_scores[None, :] >= grid[:, None]).sum(axis=1), int((~crowd).sum()) - tp)
        for position, det in enumerate(dets.tolist()):
            if at_iou[position] == IGNORED:
                continue
            box = int(matched_box[position])
            regular = match.ious[position][~crowd]
            iou = float(match.ious[position, box]) if box >= 0 else float(regular.max(initial=0.0))
            outcomes.append(BoxOutcome(TP if box >= 0 else FP, label, float(scores[det]), int(ranks[det]), iou,
                                       det, int(gts[box]) if box >= 0 else None))
        for position, gt in enumerate(gts.tolist()):
            if not crowd[position] and matched_by[position] < 0:
                outcomes.append(BoxOutcome(FN, label, None, None, float(match.ious[:, position].max(initial=0.0)),
                                           None, gt))
    for det in (i for i, lbl in enumerate(labels) if lbl is None):
        outcomes.append(BoxOutcome(FP, None, float(scores[det]), int(ranks[det]), 0.0, det, None))
    confusion = confusion_cells(labels, scores, boxes, gt_labels, gt_boxes, gt_crowd, eval_iou, eval_confidence)
    return ImageEvaluation(counts, outcomes, confidence, confusion)


def outcome_rows(prediction_run: Optional[str], image_uri: str, result: ImageEvaluation, boxes: np.ndarray,
                 gt_boxes: np.ndarray) -> List[tuple]:
    """The rows of `matches` for one image, in schema.MATCH_COLUMNS order: detections by rank, then the
    missed boxes in ground-truth order."""
    rows = []
    for row in sorted(result.outcomes, key=lambda o: (o.rank is None, o.rank, o.gt_index)):
        box = (None,) * 4 if row.detection is None else tuple(boxes[row.detection].tolist())
        gt = (None,) * 4 if row.gt_index is None else tuple(gt_boxes[row.gt_index].tolist())
        rows.append((prediction_run, image_uri, row.outcome, row.label, row.score, row.rank, row.iou,
                     *box, *gt, row.gt_index))
    return rows


def metric_rows(prediction_run: Optional[str], labels: dict, thresholds: Sequence[float]) -> List[dict]:
    """The rows of the BigQuery metrics table: per label and IoU threshold, AP and recall."""
    rows = []
    for label, totals in sorted(labels.items()):
        ap, recall = totals.counts.average_precision(), totals.counts.recall()
        for index, threshold in enumerate(thresholds):
            rows.append({'prediction_run': prediction_run, 'label': label, 'iou_threshold': float(threshold),
                         'ap': None if ap is None else float(ap[index]),
                         'recall': None if recall is None else float(recall[index]),
                         'ground_truth_boxes': totals.counts.ground_truth, 'detections': totals.detections})
    return rows


def confusion_cells(labels: Sequence[Optional[str]], scores: np.ndarray, boxes: np.ndarray,
                    gt_labels: Sequence[str], gt_boxes: np.ndarray, gt_crowd: np.ndarray,
                    eval_iou: float, eval_confidence: float) -> dict:
    """The detections at or above the confidence matched to boxes regardless of label (greedy by
    score, IoU >= eval_iou): (true, predicted) per pair, (None, predicted) per unmatched detection,
    (true, None) per unmatched regular box; a detection on a crowd box counts nowhere (COCO)."""
    kept = np.flatnonzero(scores >= eval_confidence)
    match = match_label(scores[kept], boxes[kept], gt_boxes, gt_crowd, (eval_iou,))
    cells: dict = {}
    for position, det in enumerate(kept.tolist()):
        if match.outcomes[0, position] == IGNORED:
            continue
        box = int(match.matched_box[0, position])
        key = (gt_labels[box] if box >= 0 else None, labels[det])
        cells[key] = cells.get(key, 0) + 1
    for box in np.flatnonzero(~gt_crowd).tolist():
        if match.matched_by[0, box] < 0:
            cells[(gt_labels[box], None)] = cells.get((gt_labels[box], None), 0) + 1
    return cells


class LabelTotals(NamedTuple):
    """What one label of one run adds up to: AP counts, detections, and tp/fp/fn at the evaluation IoU,
    overall and at each confidence of CONFIDENCE_GRID."""
    counts: PrecisionCounts
    detections: int
    tp: int
    fp: int
    fn: int
    confidence_tp: np.ndarray
    confidence_fp: np.ndarray
    confidence_fn: np.ndarray


def label_totals(result: ImageEvaluation, label_detections: dict) -> dict:
    """label -> LabelTotals of one image (`label_detections`: label -> its kept detections there)."""
    outcomes: dict = {}
    for row in result.outcomes:
        if row.label is not None:
            outcomes[(row.label, row.outcome)] = outcomes.get((row.label, row.outcome), 0) + 1
    return {label: LabelTotals(counts, label_detections.get(label, 0), outcomes.get((label, TP), 0),
                               outcomes.get((label, FP), 0), outcomes.get((label, FN), 0), *result.confidence[label])
            for label, counts in result.counts.items()}


def merge_totals(first: LabelTotals, second: LabelTotals) -> LabelTotals:
    return LabelTotals(first.counts.merge(second.counts), first.detections + second.detections,
                       first.tp + second.tp, first.fp + second.fp, first.fn + second.fn,
                       first.confidence_tp + second.confidence_tp, first.confidence_fp + second.confidence_fp,
                       first.confidence_fn + second.confidence_fn)


def f1_scores(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray):
    """(precision, recall, f1) arrays; 0 where undefined."""
    with np.errstate(divide='ignore', invalid='ignore'):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return precision, recall, f1


def label_metrics(label: str, totals: LabelTotals, thresholds: Sequence[float]) -> dict:
    """One entry of metrics.json's `labels` (the key names are a contract)."""
    ap, recall = totals.counts.average_precision(), totals.counts.recall()
    _, _, f1 = f1_scores(totals.confidence_tp, totals.confidence_fp, totals.confidence_fn)
    best = int(np.argmax(f1)) if len(f1) else 0
    at = {t: i for i, t in enumerate(thresholds)}
    return {
        'label': label, 'ground_truth_boxes': totals.counts.ground_truth, 'detections': totals.detections,
        'ap': None if ap is None else float(ap.mean()),
        'ap_50': None if ap is None or 0.5 not in at else float(ap[at[0.5]]),
        'ap_75': None if ap is None or 0.75 not in at else float(ap[at[0.75]]),
        'ar': None if recall is None else float(recall.mean()),
        'ap_per_iou': None if ap is None else [float(v) for v in ap],
        'tp': totals.tp, 'fp': totals.fp, 'fn': totals.fn,
        'best_f1': float(f1[best]) if totals.counts.ground_truth else None,
        'best_f1_confidence': CONFIDENCE_GRID[best] if totals.counts.ground_truth else None,
    }


def run_metrics(prediction_run: Optional[str], images: int, detections: int, labels: dict,
                thresholds: Sequence[float]) -> dict:
    """One entry of metrics.json's `runs`: mAP over the labels that have ground truth (`detections`
    counts those without a label too)."""
    entries = [label_metrics(label, totals, thresholds) for label, totals in sorted(labels.items())]
    return {
        'prediction_run': prediction_run, 'images': images,
        'ground_truth_boxes': sum(e['ground_truth_boxes'] for e in entries), 'detections': detections,
        'map': mean_over_labels([e['ap'] for e in entries]),
        'map_50': mean_over_labels([e['ap_50'] for e in entries]),
        'map_75': mean_over_labels([e['ap_75'] for e in entries]),
        'mar': mean_over_labels([e['ar'] for e in entries]),
        'labels': entries,
    }


def confidence_rows(prediction_run: Optional[str], labels: dict, eval_iou: float) -> List[dict]:
    """The rows of `confidence_metrics`: per label and over all labels (label None), at each confidence
    of CONFIDENCE_GRID, at the evaluation IoU."""
    rows = []
    per_label = [(label, t.confidence_tp, t.confidence_fp, t.confidence_fn) for label, t in sorted(labels.items())]
    if per_label:
        per_label.append((None, *(sum(part[i] for part in per_label) for i in (1, 2, 3))))
    for label, tp, fp, fn in per_label:
        precision, recall, f1 = f1_scores(tp, fp, fn)
        for c, confidence in enumerate(CONFIDENCE_GRID):
            rows.append({'prediction_run': prediction_run, 'label': label, 'iou_threshold': eval_iou,
                         'confidence_threshold': confidence, 'tp': int(tp[c]), 'fp': int(fp[c]), 'fn': int(fn[c]),
                         'precision': float(precision[c]), 'recall': float(recall[c]), 'f1': float(f1[c])})
    return rows


def confusion_rows(prediction_run: Optional[str], cells: dict) -> List[dict]:
    """The rows of `confusion_matrix`; background is None."""
    return [{'prediction_run': prediction_run, 'true_label': true, 'predicted_label': predicted, 'count': count}
            for (true, predicted), count in sorted(cells.items(), key=lambda item: (str(item[0][0]), str(item[0][1])))]


def merge_cells(first: dict, second: dict) -> dict:
    merged = dict(first)
    for key, count in second.items():
        merged[key] = merged.get(key, 0) + count
    return merged


def metrics_document(iou_thresholds: Sequence[float], eval_iou: float, runs: List[dict]) -> dict:
    """metrics.json: the runs side by side, in prediction_run order (a run without a name first)."""
    return {'iou_thresholds': [float(t) for t in iou_thresholds], 'eval_iou': float(eval_iou),
            'runs': sorted(runs, key=lambda run: (run['prediction_run'] is not None, run['prediction_run'] or ''))}
