"""Where the AP goes: TIDE's error types (Bolya et al. 2020), as tidecv 1.0.1 defines them.

tidecv evaluates at IoU 0.5 with its own matching: each image's 100 highest-scored detections over
all labels, greedy by score per label, the first box on a tie in IoU; crowd boxes are not matched but
ignore an unmatched detection of their label that they cover by more than half. Every unmatched
detection gets one type, in this order: `bkg` when its image has no box; `loc` when its best IoU with
a box of its label is in [0.1, 0.5]; `cls` when a box of another label has IoU >= 0.5 with it; `dupe`
when a box of its label that a detection took has IoU >= 0.5 with it; `bkg` when no box reaches 0.1;
else `both`. A box no detection took is `miss` unless a `cls` or `loc` error points at it.

Fixing a type: `cls` and `loc` errors become true positives of the box's label, only the
highest-scored one per box (the others vanish); `both`, `dupe`, `bkg` errors vanish; `miss` boxes no
longer count. dAP is the AP (tidecv's: 101 points, precision without epsilon, a label without boxes
counts 0 when it has detections) after the fix minus before. The special `fp` fix scores true
positives 1 and false positives 0; `fn` counts only the boxes matched.

Here each bucket classifies its detections and boxes (`classify`), and each label keeps, per fix,
its points merged per distinct score (`ErrorCounts`): bounded by distinct scores, like the AP counts.
Equal scores fall in tidecv's order, which it takes from the order it was given its data in: its
stable sort by score keeps the images in the order the ground truth lists them and each image's
detections in line order (the base run); a fixed run pushes the points of every error first, in that
order, then the true positives, so its true positives fall last among equal scores. As for
pycocotools' order (`ties`), the merged counts give each curve, and only the points at the scores
where true and false positives mix are gathered again and put in order (a bucket's `tied_errors`,
read by TIDE_CURVE). The `miss` and `fn` fixes move no true positive ahead of a false one: their
merged curves are exact.
"""
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from pipeline.core.columns import packed_flags, stored_counts, summed_per_score, unpacked_flags, widened
from pipeline.core.matching import (
    FALSE_POSITIVE,
    IGNORED,
    TRUE_POSITIVE,
    Pairs,
    group_pairs,
    group_ranks,
    match_groups,
    within_groups,
)
from pipeline.core.ties import AreaCounts, CurveRule, TieBasis, tie_basis

# tidecv's defaults: positive and background thresholds, detections per image (over all labels).
TIDE_IOU, TIDE_BACKGROUND, TIDE_MAX_DETS = 0.5, 0.1, 100
# The types in tidecv's order; the fixes that change points (all but `miss`) follow `base` in ErrorCounts.
ERROR_TYPES = ('cls', 'loc', 'both', 'dupe', 'bkg', 'miss')
CLS, LOC, BOTH, DUPE, BKG, MISS = range(len(ERROR_TYPES))
POINT_FIXES = ERROR_TYPES[:MISS]  # each a column of ErrorCounts after the base column
ERROR_COLUMNS = 1 + len(POINT_FIXES)
NO_ERROR = -1
# tidecv's recall points: i / 100 (pycocotools' linspace differs from them in the last bit at some).
TIDE_RECALL_POINTS = np.array([i / 100 for i in range(101)])
# tidecv's curve: no epsilon in its precision; in every fixed run (the columns after the base one) a
# score's true positives of the base run fall after its other points; images in the order the ground
# truth lists them (as its COCO loader adds them).
TIDE_CURVE = CurveRule(TIDE_RECALL_POINTS, 0.0, (False,) + (True,) * len(POINT_FIXES), listed_order=True)


class Classified(NamedTuple):
    """A bucket's detections and boxes as tidecv sees them."""
    outcome: np.ndarray  # (D,) TRUE_POSITIVE, FALSE_POSITIVE, IGNORED; -1: beyond its 100 or without a label
    error: np.ndarray  # (D,) an index into ERROR_TYPES, NO_ERROR for a true positive
    target: np.ndarray  # (D,) a fixed cls or loc error: the label it becomes a true positive of; -1 if it vanishes
    box: np.ndarray  # (D,) the box a cls or loc error is on; -1
    box_iou: np.ndarray  # (D,) the IoU of a cls or loc error with that box; NaN for the others
    missed: np.ndarray  # (G,) a `miss` box
    unmatched: np.ndarray  # (G,) a regular box no detection took


class Ranks(NamedTuple):
    """Each detection's rank by score (ties in row order), as group_ranks gives them, when made already."""
    in_image: np.ndarray  # (D,) among its image's detections
    in_group: np.ndarray  # (D,) among its image's detections of its label (any code for no label)


def classify(det_image: np.ndarray, det_label: np.ndarray, det_scores: np.ndarray, det_boxes: np.ndarray,
             gt_image: np.ndarray, gt_label: np.ndarray, gt_boxes: np.ndarray, gt_crowd: np.ndarray,
             image_pairs: Optional[Pairs] = None, ranks: Optional[Ranks] = None) -> Classified:
    """Each detection's outcome and error type, and each box's, for a bucket of images (the rows of an
    image's detections in line order among equal scores; boxes in their image's order). `image_pairs`:
    every overlapping detection and box of an image (group_pairs by image), when already made."""
    if image_pairs is None:
        image_pairs, _ = group_pairs(det_image, det_scores, gt_image, det_boxes, gt_boxes, gt_crowd)
    n_dets, n_labels = len(det_image), int(max(det_label.max(initial=-1), gt_label.max(initial=-1))) + 1
    labelled = det_label >= 0
    every_labelled = bool(labelled.all())
    rank = ranks.in_image if ranks is not None and every_labelled else \
        group_ranks(np.where(labelled, det_image, -1), det_scores)
    kept = labelled & (rank < TIDE_MAX_DETS)
    det_group = np.where(kept, det_image * n_labels + det_label, -1)
    regular = ~gt_crowd
    gt_group = np.where(regular, gt_image * n_labels + gt_label, -1)
    # The kept ones of an image and label come first among its detections of the label: their rank
    # there is their rank among the kept.
    match = match_groups(det_group, det_scores, det_boxes, gt_group, gt_boxes, np.zeros(len(gt_image), dtype=bool),
                         (TIDE_IOU,), first_on_tie=True, pairs=image_pairs,
                         rank=None if ranks is None else ranks.in_group)
    matched = match.outcomes[:, 0] == TRUE_POSITIVE
    used = np.zeros(len(gt_image), dtype=bool)
    used[match.matched_box[matched, 0]] = True
    outcome = np.where(kept, np.where(matched, TRUE_POSITIVE, FALSE_POSITIVE), -1).astype(np.int8)
    # A crowd box ignores an unmatched detection of its label that it covers by more than half.
    crowd_pairs = within_groups(image_pairs, det_group, np.where(gt_crowd, gt_image * n_labels + gt_label, -1))
    covered = np.zeros(n_dets, dtype=bool)
    covered[crowd_pairs.det[crowd_pairs.iou > TIDE_IOU]] = True
    outcome[(outcome == FALSE_POSITIVE) & covered] = IGNORED
    # Every pair of a detection and a regular box of its image, whatever their labels.
    pairs = within_groups(image_pairs, np.where(kept, det_image, -1), np.where(regular, gt_image, -1))
    same = det_label[pairs.det] == gt_label[pairs.gt]
    best_same, box_same = _best(pairs, same, n_dets)
    best_other, box_other = _best(pairs, ~same, n_dets)
    best_used, _ = _best(pairs, same & used[pairs.gt], n_dets)
    best_any, _ = _best(pairs, np.ones(len(pairs.det), dtype=bool), n_dets)
    has_box = np.zeros(int(max(det_image.max(initial=-1), gt_image.max(initial=-1))) + 1, dtype=bool)
    has_box[gt_image[regular]] = True
    error = np.select([~has_box[det_image], (best_same >= TIDE_BACKGROUND) & (best_same <= TIDE_IOU),
                       best_other >= TIDE_IOU, best_used >= TIDE_IOU, best_any <= TIDE_BACKGROUND],
                      [BKG, LOC, CLS, DUPE, BKG], BOTH) if n_dets else np.zeros(0, dtype=np.int64)
    error = np.where(kept & (outcome != TRUE_POSITIVE), error, NO_ERROR).astype(np.int8)
    box = np.where(error == LOC, box_same, np.where(error == CLS, box_other, -1))
    box_iou = np.where(error == LOC, best_same, np.where(error == CLS, best_other, np.nan))
    target = _fixed_targets(error, box, used, det_label, gt_label, det_scores)
    pointed = np.zeros(len(gt_image), dtype=bool)
    on_box = box[box >= 0]
    pointed[on_box[~used[on_box]]] = True
    unmatched = regular & ~used
    return Classified(outcome, error, target, box, box_iou, unmatched & ~pointed, unmatched)


def _best(pairs: Pairs, chosen: np.ndarray, n_dets: int):
    """Per detection, the highest IoU among the chosen pairs (0 if none) and its box, the first box
    on a tie (numpy's argmax, as tidecv takes it); -1 if none. The pairs of a detection are together,
    their boxes in image order (group_pairs by image), so no sort is needed."""
    det, iou, gt = pairs.det[chosen], pairs.iou[chosen], pairs.gt[chosen]
    best = np.zeros(n_dets)
    box = np.full(n_dets, -1, dtype=np.int64)
    if not len(det):
        return best, box
    new_det = np.r_[True, det[1:] != det[:-1]]
    starts = np.flatnonzero(new_det)
    highest = np.maximum.reduceat(iou, starts)
    at_highest = iou == highest[np.cumsum(new_det) - 1]
    first_box = np.minimum.reduceat(np.where(at_highest, gt, np.iinfo(np.int64).max), starts)
    best[det[starts]] = highest
    box[det[starts]] = first_box
    return best, box


def _fixed_targets(error: np.ndarray, box: np.ndarray, used: np.ndarray, det_label: np.ndarray,
                   gt_label: np.ndarray, det_scores: np.ndarray) -> np.ndarray:
    """The label each cls or loc error becomes a true positive of when fixed: the highest-scored of
    the errors pointing at a box no detection took (the first in its image's order on a tie), -1 for
    the others."""
    target = np.full(len(error), -1, dtype=np.int64)
    candidates = np.flatnonzero(((error == CLS) | (error == LOC)) & (box >= 0))
    candidates = candidates[~used[box[candidates]]]
    order = candidates[np.lexsort((candidates, -det_scores[candidates], box[candidates]))]
    best = order[np.r_[True, box[order][1:] != box[order][:-1]]] if len(order) else order
    target[best] = np.where(error[best] == CLS, gt_label[box[best]], det_label[best])
    return target


class ErrorPoints(NamedTuple):
    """What one label's detections add to its error counts, before merging: each point's score and
    whether it is a true or false positive in the base column and after each fix of POINT_FIXES
    (absent: neither), and the detection it is (its place among equal scores)."""
    scores: np.ndarray  # (P,)
    tp: np.ndarray  # (1 + fixes, P) uint8
    fp: np.ndarray  # (1 + fixes, P) uint8
    rows: np.ndarray  # (P,) the detection's row: the label's own, then the fixed errors of other labels


def label_points(label: int, classified: Classified, det_label: np.ndarray, det_scores: np.ndarray) -> ErrorPoints:
    """The points of one label: its own detections (in the base column and every fix but the one of
    their own type), and the fixed cls and loc errors that become true positives of it."""
    own = np.flatnonzero((det_label == label) & ((classified.outcome == TRUE_POSITIVE)
                                                 | (classified.outcome == FALSE_POSITIVE)
                                                 | (classified.error != NO_ERROR)))
    moved = np.flatnonzero(classified.target == label)
    columns = ERROR_COLUMNS
    tp = np.zeros((columns, len(own) + len(moved)), dtype=np.uint8)
    fp = np.zeros_like(tp)
    outcome, error = classified.outcome[own], classified.error[own]
    for column in range(columns):
        stays = (error != column - 1) | (column == 0)  # a detection of the fixed type leaves its own label
        tp[column, :len(own)] = stays & (outcome == TRUE_POSITIVE)
        fp[column, :len(own)] = stays & (outcome == FALSE_POSITIVE)
    tp[1 + classified.error[moved], len(own) + np.arange(len(moved))] = 1
    return ErrorPoints(np.r_[det_scores[own], det_scores[moved]], tp, fp, np.r_[own, moved])


class ErrorCounts:
    """One label's error figures, merged per distinct score: true and false positives in the base
    column and after each fix that changes points, the boxes, the missed boxes, the count of each
    error type (false positives by their own label, misses by the box's)."""

    def __init__(self, scores: np.ndarray, tp: np.ndarray, fp: np.ndarray, ground_truth: int, missed: int,
                 counts: np.ndarray, distinct: bool = False, packed: bool = False):
        self.scores, self.tp, self.fp = scores, tp, fp
        self.ground_truth, self.missed, self.counts, self.distinct = ground_truth, missed, counts, distinct
        self.packed = packed  # tp and fp hold bits (columns.packed_flags): flags, or merged counts all 0 or 1

    @classmethod
    def of(cls, points: ErrorPoints, ground_truth: int, missed: int, errors: np.ndarray) -> 'ErrorCounts':
        """`errors`: the error types of the label's own false positives and misses (ERROR_TYPES). The
        points travel as bits (columns.packed_flags) until merged."""
        return cls(points.scores, packed_flags(points.tp), packed_flags(points.fp), ground_truth, missed,
                   np.bincount(errors, minlength=len(ERROR_TYPES)).astype(np.int64), packed=True)

    def flags(self, name: str) -> np.ndarray:
        """(columns, points) the true ('tp') or false ('fp') positives (or counts, once merged), unpacked."""
        values = getattr(self, name)
        return unpacked_flags(values, ERROR_COLUMNS) if self.packed else values

    @classmethod
    def merge_all(cls, parts: Sequence['ErrorCounts']) -> 'ErrorCounts':
        scores, (tp, fp) = summed_per_score(np.concatenate([part.scores for part in parts]),
                                            *(np.concatenate([part.flags(name) for part in parts], axis=1)
                                              for name in ('tp', 'fp')))
        (tp, fp), packed = stored_counts(tp, fp)
        return cls(scores, tp, fp, sum(part.ground_truth for part in parts),
                   sum(part.missed for part in parts), np.sum([part.counts for part in parts], axis=0), True, packed)

    def settled(self) -> Tuple['ErrorSummary', Optional[TieBasis]]:
        """tidecv's figures of the label from its merged counts, and what ordering its tied points
        needs (None: the merged curves are exact)."""
        merged = self if self.distinct else ErrorCounts.merge_all([self])
        tp, fp = widened(merged.flags('tp')), widened(merged.flags('fp'))
        tp_cum, fp_cum = np.cumsum(tp, axis=1, dtype=np.int64), np.cumsum(fp, axis=1, dtype=np.int64)
        present = (tp + fp).sum(axis=1) > 0  # the label has points in the column
        curves = [tide_curve(merged.scores, tp_cum[column], fp_cum[column], self.ground_truth)
                  for column in range(ERROR_COLUMNS)]
        base_tp = int(tp_cum[0, -1]) if tp_cum.shape[1] else 0
        empty = tuple(bool(not present[column] and self.ground_truth == 0) for column in range(ERROR_COLUMNS))

        def ap(column: int, ground_truth: int) -> Optional[float]:
            if not present[column] and ground_truth == 0:
                return None
            return _mean(tide_curve(merged.scores, tp_cum[column], fp_cum[column], ground_truth)[0])
        fixed = {'miss': ap(0, self.ground_truth - self.missed),
                 'fp': None if empty[0] else _perfect_precision_ap(base_tp, self.ground_truth),
                 'fn': ap(0, base_tp)}
        summary = ErrorSummary(None, fixed, self.counts, np.stack([curve for curve, _ in curves]), empty).raised()
        basis = tie_basis([AreaCounts(merged.scores, tp[column:column + 1], fp[column:column + 1],
                                      tp_cum[column:column + 1], fp_cum[column:column + 1], self.ground_truth,
                                      None if crossing is None else crossing[None])
                           for column, (_, crossing) in enumerate(curves)])
        return summary, basis


def tide_curve(scores: np.ndarray, tp_cum: np.ndarray, fp_cum: np.ndarray,
               ground_truth: int) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """tidecv's interpolated precision at its recall points over cumulative counts at distinct
    scores (0 everywhere without boxes), and the score where each recall point is first reached
    (-inf never; None without boxes)."""
    if ground_truth == 0:
        return np.zeros(len(TIDE_RECALL_POINTS)), None
    tp, fp = tp_cum.astype(np.float64), fp_cum.astype(np.float64)
    with np.errstate(divide='ignore', invalid='ignore'):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    at = np.searchsorted(tp / ground_truth, TIDE_RECALL_POINTS, side='left')
    reached = at < len(envelope)
    values, crossing = np.zeros(len(TIDE_RECALL_POINTS)), np.full(len(TIDE_RECALL_POINTS), -np.inf)
    values[reached] = envelope[at[reached]]
    crossing[reached] = scores[at[reached]]
    return values, crossing


def _mean(values: np.ndarray) -> float:
    """As tidecv averages its recall points (a Python sum, in order)."""
    return float(sum(values.tolist()) / len(values))


def _perfect_precision_ap(true_positives: int, ground_truth: int) -> float:
    """tidecv's `fp` fix: true positives scored 1, false positives 0 (precision 1 up to its recall)."""
    if ground_truth == 0 or true_positives == 0:
        return 0.0
    ones = np.arange(1, true_positives + 1, dtype=np.float64)
    return _mean(tide_curve(np.ones(true_positives), ones, np.zeros(true_positives), ground_truth)[0])


class ErrorSummary(NamedTuple):
    """A label's tidecv AP@0.5 (None: no box and no detection) and after each fix, and its counts;
    the interpolated precision of the base column and of each fix of POINT_FIXES, which its tied
    points raise (`raised`), and which of them are empty (out of tidecv's mean)."""
    ap: Optional[float]
    fixed: dict  # fix name (ERROR_TYPES, 'fp', 'fn') -> AP after it, None where the label is empty then
    counts: np.ndarray  # (ERROR_TYPES,)
    curves: Optional[np.ndarray] = None  # (ERROR_COLUMNS, 101)
    empty: Tuple[bool, ...] = ()  # per column

    def raised(self, precision: Optional[np.ndarray] = None) -> 'ErrorSummary':
        """With the (ERROR_COLUMNS, 1, 101) precision its tied points reach in tidecv's order
        (ties.raises with TIDE_CURVE), and the APs of the columns from the curves."""
        if self.curves is None:
            return self
        curves = self.curves if precision is None else np.maximum(self.curves, precision[:, 0])
        aps = [None if empty else _mean(curve) for curve, empty in zip(curves, self.empty)]
        return self._replace(ap=aps[0], fixed={**self.fixed, **dict(zip(POINT_FIXES, aps[1:]))}, curves=curves)


def label_errors(summary: ErrorSummary) -> dict:
    """metrics.json's `errors` of one label: each type's count and dAP, and the special dAPs."""
    def delta(name: str) -> Optional[float]:
        fixed = summary.fixed[name]
        return None if fixed is None or summary.ap is None else fixed - summary.ap
    return {'ap_50': summary.ap, 'counts': dict(zip(ERROR_TYPES, summary.counts.tolist())),
            'dap': {name: delta(name) for name in ERROR_TYPES}, 'special_dap': {'fp': delta('fp'), 'fn': delta('fn')}}


def run_errors(summaries: List[ErrorSummary]) -> dict:
    """metrics.json's `errors` of a run, as tidecv's summary: its mAP@0.5 over the labels it counts,
    each main type's dAP (negative ones 0, as tidecv) and the special ones, and the counts."""
    def mean(values: List[Optional[float]]) -> Optional[float]:
        present = [value for value in values if value is not None]
        return sum(present) / len(present) if present else None
    base = mean([summary.ap for summary in summaries])
    fixed = {name: mean([summary.fixed[name] for summary in summaries]) for name in (*ERROR_TYPES, 'fp', 'fn')}

    def delta(name: str, floor: bool) -> Optional[float]:
        after = fixed[name]
        if base is None or after is None:
            return None
        value = after - base
        return max(value, 0.0) if floor else value
    counts = np.sum([summary.counts for summary in summaries], axis=0) if summaries else np.zeros(len(ERROR_TYPES))
    return {'ap_50': base, 'counts': dict(zip(ERROR_TYPES, [int(count) for count in counts])),
            'dap': {name: delta(name, True) for name in ERROR_TYPES},
            'special_dap': {'fp': delta('fp', False), 'fn': delta('fn', False)}}
