"""The evaluation's definition, one image at a time, in plain Python: the reference that the tests hold
to pycocotools, and that they hold the product's column path (`core/bucket_evaluation`,
`core/matching`) to. It is not product code: the job evaluates buckets of images on columns."""
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from pipeline.config.options import COCO_MAX_DETS
from pipeline.core.evaluation import (
    FALSE_POSITIVE,
    FN,
    FP,
    IGNORED,
    TP,
    TRUE_POSITIVE,
    LabelTotals,
    PrecisionCounts,
    grid_counts,
    in_pixels,
    merge_all_totals,
)


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
                thresholds: Sequence[float], ious: Optional[np.ndarray] = None) -> LabelMatch:
    """COCO's greedy matching (see `greedy`) at each threshold, as arrays."""
    if ious is None:
        ious = box_ious(boxes, ground_truth, crowd)
    n_dets, n_boxes = ious.shape
    order = sorted(range(n_dets), key=scores.tolist().__getitem__, reverse=True)
    rows, is_crowd = ious.tolist(), crowd.tolist()
    regular = [g for g in range(n_boxes) if not is_crowd[g]]
    crowds = [g for g in range(n_boxes) if is_crowd[g]]
    matches = [greedy(rows, order, regular, crowds, threshold, n_boxes) for threshold in thresholds]
    return LabelMatch(np.array([m[0] for m in matches], dtype=np.int8).reshape(len(thresholds), n_dets),
                      np.array([m[1] for m in matches], dtype=np.int64).reshape(len(thresholds), n_dets),
                      np.array([m[2] for m in matches], dtype=np.int64).reshape(len(thresholds), n_boxes), ious)


def greedy(rows: List[List[float]], order: List[int], regular: List[int], crowds: List[int], threshold: float,
           n_boxes: int):
    """COCO's greedy matching at one IoU threshold: detections in `order` (descending score, ties in
    input order), each to the unmatched regular box of highest IoU >= the threshold (a later box wins a
    tie), else to the crowd box of highest IoU (crowd boxes match any number of detections, which are
    then ignored). `rows`: the (D, G) IoU as lists. Returns (outcome per detection, the box each
    matched or -1, the detection each box was matched by or -1; a crowd box: the last).

    An image holds a few boxes per label: plain lists beat numpy's cost per call here."""
    floor = min(threshold, 1 - 1e-10)
    free = [True] * n_boxes
    outcome, box_of, by = [FALSE_POSITIVE] * len(rows), [-1] * len(rows), [-1] * n_boxes
    for det in order:
        row = rows[det]
        best, value = -1, floor
        for box in regular:
            if free[box] and row[box] >= value:
                best, value = box, row[box]
        if best >= 0:
            outcome[det] = TRUE_POSITIVE
            free[best] = False
        else:
            for box in crowds:
                if row[box] >= value:
                    best, value = box, row[box]
            if best < 0:
                continue
            outcome[det] = IGNORED
        box_of[det] = best
        by[best] = det
    return outcome, box_of, by


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


class LabelAtIou(NamedTuple):
    """One label of one image at the evaluation IoU: the scores of its true and false positives, its
    regular ground-truth boxes and how many of them were missed."""
    tp_scores: List[float]
    fp_scores: List[float]
    regular: int
    missed: int


class LabelCounts(NamedTuple):
    """One label of one image, for AP: its detections' scores (in rank order, within the last cap) and
    their outcome at each IoU threshold (lists, made into arrays once per many images)."""
    scores: List[float]
    outcomes: List[List[int]]  # per threshold, per detection
    regular: int
    max_dets: Tuple[int, ...] = ()

    def precision_counts(self) -> 'PrecisionCounts':
        outcomes = np.array(self.outcomes, dtype=np.int8).reshape(len(self.outcomes), len(self.scores))
        within = np.array([(outcomes[:, :cap or None] == TRUE_POSITIVE).sum(axis=1) for cap in self.max_dets],
                          dtype=np.int64).reshape(len(self.max_dets), len(self.outcomes))
        return PrecisionCounts.of(np.array(self.scores, dtype=np.float64), outcomes, self.regular, within)


class ImageEvaluation(NamedTuple):
    label_counts: dict  # label -> LabelCounts, for AP over the IoU thresholds
    outcomes: List[BoxOutcome]
    at_eval: dict  # label -> LabelAtIou
    confusion: dict  # (true label or None, predicted label or None) -> count

    @property
    def counts(self) -> dict:
        """label -> PrecisionCounts of this image alone."""
        return {label: counts.precision_counts() for label, counts in self.label_counts.items()}

    @property
    def confidence(self) -> dict:
        """label -> (tp, fp, fn) arrays over CONFIDENCE_GRID, at the evaluation IoU."""
        return {label: grid_counts(part.tp_scores, part.fp_scores, part.regular)
                for label, part in self.at_eval.items()}


def evaluate_image(labels: Sequence[Optional[str]], scores: np.ndarray, boxes: np.ndarray,
                   gt_labels: Sequence[str], gt_boxes: np.ndarray, gt_crowd: np.ndarray,
                   thresholds: Sequence[float], eval_iou: float, eval_confidence: float,
                   max_dets: Sequence[int] = COCO_MAX_DETS,
                   size: Optional[Tuple[float, float]] = None) -> ImageEvaluation:
    """Everything one image contributes: AP counts per label, per-box outcomes, what the confidence
    curves count and the confusion matrix's cells. Detections without a label can only be false
    positives; a label's detections past the last of `max_dets` (0: no cap) are not evaluated at all,
    as in pycocotools. With the image's `size` (width, height), IoU is taken on pixels. IoU is
    computed once for the image (numpy); the rest works on a few boxes per label, in plain lists,
    which is several times faster than numpy on arrays this small."""
    score_list = scores.tolist()
    by_score = sorted(range(len(score_list)), key=score_list.__getitem__, reverse=True)
    ranks = [0] * len(score_list)
    for rank, det in enumerate(by_score):
        ranks[det] = rank
    if size is not None:
        scale = np.array([size], dtype=np.float64)
        boxes_px = in_pixels(boxes, np.repeat(scale, len(boxes), axis=0))
        iou_rows = box_ious(boxes_px, in_pixels(gt_boxes, np.repeat(scale, len(gt_boxes), axis=0)), gt_crowd).tolist()
    else:
        iou_rows = box_ious(boxes, gt_boxes, gt_crowd).tolist()
    dets_of: dict = {}
    for det in by_score:  # each label's detections in descending score order, ties in input order
        dets_of.setdefault(labels[det], []).append(det)
    cap = max_dets[-1] or None
    dets_of = {label: dets if label is None else dets[:cap] for label, dets in dets_of.items()}
    gts_of: dict = {}
    for gt, label in enumerate(gt_labels):
        gts_of.setdefault(label, []).append(gt)
    is_crowd = gt_crowd.tolist()
    all_thresholds = (*thresholds, eval_iou)
    label_counts, at_eval, outcomes = {}, {}, []
    for label in dict.fromkeys([*gt_labels, *(lbl for lbl in labels if lbl is not None)]):
        dets, gts = dets_of.get(label, []), gts_of.get(label, [])
        crowd = [is_crowd[g] for g in gts]
        rows = [[iou_rows[d][g] for g in gts] for d in dets]
        regular = [p for p, c in enumerate(crowd) if not c]
        crowds = [p for p, c in enumerate(crowd) if c]
        order = list(range(len(dets)))  # dets are in score order already
        matches = [greedy(rows, order, regular, crowds, t, len(gts)) for t in all_thresholds]
        label_counts[label] = LabelCounts([score_list[d] for d in dets], [m[0] for m in matches[:-1]], len(regular),
                                          tuple(max_dets))
        at_iou, matched_box, matched_by = matches[-1]
        tp_scores, fp_scores, missed = [], [], 0
        for position, det in enumerate(dets):
            if at_iou[position] == IGNORED:
                continue
            box = matched_box[position]
            if box >= 0:
                iou = rows[position][box]
                tp_scores.append(score_list[det])
            else:
                iou = max((rows[position][g] for g in regular), default=0.0)
                fp_scores.append(score_list[det])
            outcomes.append(BoxOutcome(TP if box >= 0 else FP, label, score_list[det], ranks[det], iou, det,
                                       gts[box] if box >= 0 else None))
        for position in regular:
            if matched_by[position] < 0:
                missed += 1
                outcomes.append(BoxOutcome(FN, label, None, None, max((row[position] for row in rows), default=0.0),
                                           None, gts[position]))
        at_eval[label] = LabelAtIou(tp_scores, fp_scores, len(regular), missed)
    for det in dets_of.get(None, []):
        outcomes.append(BoxOutcome(FP, None, score_list[det], ranks[det], 0.0, det, None))
    confusion = confusion_cells(labels, scores, boxes, gt_labels, gt_boxes, gt_crowd, eval_iou, eval_confidence,
                                iou_rows=iou_rows, by_score=by_score)
    return ImageEvaluation(label_counts, outcomes, at_eval, confusion)


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


def confusion_cells(labels: Sequence[Optional[str]], scores: np.ndarray, boxes: np.ndarray,
                    gt_labels: Sequence[str], gt_boxes: np.ndarray, gt_crowd: np.ndarray,
                    eval_iou: float, eval_confidence: float, iou_rows: Optional[List[List[float]]] = None,
                    by_score: Optional[List[int]] = None) -> dict:
    """The detections at or above the confidence matched to boxes regardless of label (greedy by
    score, IoU >= eval_iou): (true, predicted) per pair, (None, predicted) per unmatched detection,
    (true, None) per unmatched regular box; a detection on a crowd box counts nowhere (COCO).
    `iou_rows` and `by_score`: the image's IoU and score order, when already computed."""
    score_list = scores.tolist()
    if iou_rows is None:
        iou_rows = box_ious(boxes, gt_boxes, gt_crowd).tolist()
    if by_score is None:
        by_score = sorted(range(len(score_list)), key=score_list.__getitem__, reverse=True)
    kept = [det for det in by_score if score_list[det] >= eval_confidence]
    is_crowd = gt_crowd.tolist()
    regular = [g for g, c in enumerate(is_crowd) if not c]
    outcome, box_of, matched_by = greedy([iou_rows[d] for d in kept], list(range(len(kept))), regular,
                                         [g for g, c in enumerate(is_crowd) if c], eval_iou, len(is_crowd))
    cells: dict = {}
    for position, det in enumerate(kept):
        if outcome[position] == IGNORED:
            continue
        box = box_of[position]
        key = (gt_labels[box] if box >= 0 else None, labels[det])
        cells[key] = cells.get(key, 0) + 1
    for box in regular:
        if matched_by[box] < 0:
            cells[(gt_labels[box], None)] = cells.get((gt_labels[box], None), 0) + 1
    return cells


def label_totals(result: ImageEvaluation, label_detections: dict) -> dict:
    """label -> LabelTotals of one image (`label_detections`: label -> its kept detections there)."""
    totals = {}
    for label, counts in result.label_counts.items():
        at_eval = result.at_eval[label]
        totals[label] = LabelTotals(counts.precision_counts(), label_detections.get(label, 0),
                                    len(at_eval.tp_scores), len(at_eval.fp_scores), at_eval.missed,
                                    *grid_counts(at_eval.tp_scores, at_eval.fp_scores, at_eval.regular))
    return totals


def merge_totals(first: LabelTotals, second: LabelTotals) -> LabelTotals:
    return merge_all_totals([first, second])


def settled_with_ties(parts):
    """Bucket evaluations merged and settled as the job does: the counts per label, then the tied
    detections at the scores where outcomes mix, gathered by label and chunk and put in pycocotools'
    order, and likewise the tied error points in tidecv's."""
    from pipeline.core.error_types import TIDE_CURVE
    from pipeline.core.evaluation import raised_errors, raised_totals, settled
    from pipeline.core.ties import COCO_CURVE, raises, tied_parts
    totals = {}
    for part in parts:
        for label, value in part.labels.items():
            totals[label] = merge_totals(totals[label], value) if label in totals else value
    totals = {label: settled(value) for label, value in totals.items()}
    for kind, raise_totals, rule in (('ties', raised_totals, COCO_CURVE), ('error_ties', raised_errors, TIDE_CURVE)):
        bases = {label: getattr(value, kind) for label, value in totals.items() if getattr(value, kind) is not None}
        gathered = {}
        for part in parts:
            tied = part.tied if kind == 'ties' else part.tied_errors
            for key, chunk in ({} if tied is None else tied_parts(tied, bases)).items():
                gathered.setdefault(key, []).append(chunk)
        for (label, _), chunks in gathered.items():
            totals[label] = raise_totals(totals[label], raises(chunks, bases[label], rule))
    return totals, {label: value.ties for label, value in totals.items() if value.ties is not None}


def in_ground_truth_order(columns, first_image):
    """Columns whose images are numbered from `first_image` in one ground-truth file (pycocotools'
    image ids in the tests' sets)."""
    images = len(columns.image_uris)
    return columns._replace(image_files=['truth.json'], image_file_codes=np.zeros(images, dtype=np.int32),
                            image_places=np.stack([np.zeros(images, dtype=np.int64),
                                                   np.arange(first_image, first_image + images),
                                                   np.arange(first_image, first_image + images)], axis=1))
