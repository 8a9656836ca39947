"""COCO's greedy matching for many images at once, on columns.

The tests hold this module to a one-image definition in plain Python (tests/evaluation_reference.py)
and, column by column, to a transcription of pycocotools' evaluateImg. Here every (image, label)
group of a bucket of images is matched in the same numpy operations: the k-th detection of every
group, at every column (IoU threshold, area range), takes its box in one step, so the cost is a few
dozen array operations per bucket instead of per image. A group's detections never compete with
another group's boxes, so stepping through the ranks k = 0, 1, ... together gives each group exactly
its own greedy order.
"""
from typing import NamedTuple, Optional, Sequence

import numpy as np

from pipeline.core.columns import concat_ranges

# Outcomes of a detection at one IoU threshold; IGNORED: matched to an ignored box (crowd, or outside
# the area range), or outside the area range and unmatched.
FALSE_POSITIVE, TRUE_POSITIVE, IGNORED = 0, 1, 2
# Pairs made at once, before those that do not overlap are dropped: bounds what one group holds.
PAIRS_AT_ONCE = 1 << 20


class Pairs(NamedTuple):
    """Every (detection, box) of the same group that overlap, with their IoU (against a crowd box: the
    intersection over the detection's own area)."""
    det: np.ndarray
    gt: np.ndarray
    iou: np.ndarray


class GroupMatch(NamedTuple):
    outcomes: np.ndarray  # (D, T) FALSE_POSITIVE, TRUE_POSITIVE or IGNORED
    matched_box: np.ndarray  # (D, T) the box each detection matched, -1 if none
    matched_iou: np.ndarray  # (D, T) the IoU with it, 0 if none
    box_free: np.ndarray  # (G, T) a regular box no detection took (meaningless for crowd boxes)
    pairs: Pairs


def _runs(sorted_keys: np.ndarray):
    """(the distinct keys, the first position of each, its count) of sorted keys."""
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]) if len(sorted_keys) else \
        np.zeros(0, dtype=np.int64)
    return sorted_keys[starts], starts, np.diff(np.r_[starts, len(sorted_keys)])


def group_pairs(det_group: np.ndarray, det_scores: np.ndarray, gt_group: np.ndarray,
                det_boxes: np.ndarray, gt_boxes: np.ndarray, gt_crowd: np.ndarray):
    """(pairs, rank of each detection in its group by descending score, ties in input order). A
    detection or box of group -1 takes part in no pair."""
    det_order = np.lexsort((-det_scores, det_group))  # stable: ties stay in input order
    det_order = det_order[np.searchsorted(det_group[det_order], 0):]
    gt_order = np.argsort(gt_group, kind='stable')
    gt_order = gt_order[np.searchsorted(gt_group[gt_order], 0):]
    d_ids, d_first, d_counts = _runs(det_group[det_order])
    rank = _ranks_in_order(det_order, d_first, d_counts, len(det_group))
    g_ids, g_first, g_counts = _runs(gt_group[gt_order])
    # The box run of each detection's group (-1: its group has no box), then each detection with every
    # box of its group: by group, then detection (by rank), then box, as the matching steps expect.
    at = np.minimum(np.searchsorted(g_ids, d_ids), max(len(g_ids) - 1, 0))
    box_run = np.where(g_ids[at] == d_ids, at, -1) if len(g_ids) else np.full(len(d_ids), -1)
    run_of = np.repeat(box_run, d_counts)
    with_boxes = run_of >= 0
    dets, runs = det_order[with_boxes], run_of[with_boxes]
    # Pairs are made a slice of detections at a time, and only those that overlap are kept (a pair of
    # IoU 0 is never matched, and 0 is every best IoU's floor): one image of 5,000 detections and
    # 5,000 boxes of one label is 25 M pairs, nearly all apart.
    ends = np.cumsum(g_counts[runs])
    cuts = np.searchsorted(ends, np.arange(PAIRS_AT_ONCE, int(ends[-1]) if len(ends) else 0, PAIRS_AT_ONCE), 'right')
    parts = []
    for start, stop in zip(np.r_[0, cuts], np.r_[cuts, len(dets)]):
        if stop <= start:
            continue
        some = runs[start:stop]
        det = np.repeat(dets[start:stop], g_counts[some])
        gt = gt_order[concat_ranges(g_first[some], g_first[some] + g_counts[some])]
        iou = _pair_ious(det_boxes, gt_boxes, det, gt, gt_crowd[gt])
        overlap = iou > 0
        parts.append((det[overlap], gt[overlap], iou[overlap]))
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return Pairs(empty, empty, np.zeros(0)), rank
    return Pairs(*(np.concatenate(column) for column in zip(*parts))), rank


def within_groups(pairs: Pairs, det_group: np.ndarray, gt_group: np.ndarray) -> Pairs:
    """The pairs whose detection and box are of the same group (not -1), in their order."""
    group = det_group[pairs.det]
    keep = np.flatnonzero((group >= 0) & (group == gt_group[pairs.gt]))
    return Pairs(pairs.det[keep], pairs.gt[keep], pairs.iou[keep])


def group_ranks(det_group: np.ndarray, det_scores: np.ndarray) -> np.ndarray:
    """Each detection's rank in its group by descending score, ties in input order (as pycocotools
    orders one image's detections of a label); group -1 is ranked as a group too."""
    det_order = np.lexsort((-det_scores, det_group))
    _, first, counts = _runs(det_group[det_order])
    return _ranks_in_order(det_order, first, counts, len(det_group))


def rows_in_groups(det_group: np.ndarray) -> np.ndarray:
    """Each detection's row among its group's, in input order (a stable sort of the groups alone)."""
    order = np.argsort(det_group, kind='stable')
    _, first, counts = _runs(det_group[order])
    return _ranks_in_order(order, first, counts, len(det_group))


def _ranks_in_order(order: np.ndarray, first: np.ndarray, counts: np.ndarray, size: int) -> np.ndarray:
    rank = np.zeros(size, dtype=np.int64)
    rank[order] = np.arange(len(order)) - np.repeat(first, counts)
    return rank


def _pair_ious(det_boxes: np.ndarray, gt_boxes: np.ndarray, det: np.ndarray, gt: np.ndarray,
               crowd: np.ndarray) -> np.ndarray:
    """The IoU of each pair (det[i], gt[i]), on one contiguous column per coordinate, in place where
    it can (about four times faster than on the gathered (pairs, 4) rows, to the same bits)."""
    dx0, dy0, dx1, dy1 = (np.take(np.ascontiguousarray(det_boxes[:, i]), det) for i in range(4))
    gx0, gy0, gx1, gy1 = (np.take(np.ascontiguousarray(gt_boxes[:, i]), gt) for i in range(4))
    inter = np.minimum(dx1, gx1)
    inter -= np.maximum(dx0, gx0)
    np.maximum(inter, 0, out=inter)
    height = np.minimum(dy1, gy1)
    height -= np.maximum(dy0, gy0)
    np.maximum(height, 0, out=height)
    inter *= height
    det_area = dx1 - dx0
    det_area *= dy1 - dy0
    union = gx1 - gx0
    union *= gy1 - gy0
    union += det_area
    union -= inter
    if crowd.any():  # against a crowd box: the intersection over the detection's own area
        union = np.where(crowd, det_area, union)
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_groups(det_group: np.ndarray, det_scores: np.ndarray, det_boxes: np.ndarray, gt_group: np.ndarray,
                 gt_boxes: np.ndarray, gt_crowd: np.ndarray, thresholds: Sequence[float],
                 gt_ignored: Optional[np.ndarray] = None, det_ignored: Optional[np.ndarray] = None,
                 first_on_tie: bool = False, pairs: Optional[Pairs] = None,
                 rank: Optional[np.ndarray] = None) -> GroupMatch:
    """Each group's detections by descending score (ties in input order), each to the free box of its
    group with the highest IoU >= the column's threshold that is not ignored (the later box on a tie),
    else to the ignored box of highest IoU, then ignored itself (crowd boxes are never used up, other
    ignored ones are); every column at once. `gt_ignored` (G, C): the boxes ignored in each column
    (crowd boxes, and those outside its area range; default: the crowd boxes); `det_ignored` (D, C):
    the detections ignored in a column when they match nothing (outside its area range), as
    pycocotools' evaluateImg. `first_on_tie`: the earlier box on a tie in IoU (tidecv's argmax).
    `pairs`: made once for wider groups (group_pairs by image), of which those within a group are used;
    `rank`: each detection's in its group (group_ranks), when the caller has it."""
    if pairs is None:
        pairs, rank = group_pairs(det_group, det_scores, gt_group, det_boxes, gt_boxes, gt_crowd)
    else:
        pairs = within_groups(pairs, det_group, gt_group)
        rank = group_ranks(det_group, det_scores) if rank is None else rank
    floors = np.minimum(np.asarray(thresholds, dtype=np.float64), 1 - 1e-10)
    n_dets, n_boxes, n_thresholds = len(det_group), len(gt_group), len(floors)
    outcomes = np.full((n_dets, n_thresholds), FALSE_POSITIVE, dtype=np.int8)
    matched_box = np.full((n_dets, n_thresholds), -1, dtype=np.int64)
    matched_iou = np.zeros((n_dets, n_thresholds))
    box_free = np.ones((n_boxes, n_thresholds), dtype=bool)
    ignored = gt_crowd[:, None] if gt_ignored is None else gt_ignored | gt_crowd[:, None]
    ignored = np.broadcast_to(ignored, (n_boxes, n_thresholds))
    any_ignored = bool(ignored.any())
    # Only a pair that reaches the lowest threshold can be taken: the others wait in no step.
    live = np.flatnonzero(pairs.iou >= floors.min(initial=np.inf))
    pair_rank = rank[pairs.det[live]]
    by_rank = live[np.argsort(pair_rank, kind='stable')]  # within a rank: by group, then by box
    bounds = np.searchsorted(rank[pairs.det[by_rank]], np.arange(int(pair_rank.max(initial=-1)) + 2))
    for k in range(len(bounds) - 1):
        chosen = by_rank[bounds[k]:bounds[k + 1]]
        if not len(chosen):
            continue
        det, gt, iou = pairs.det[chosen], pairs.gt[chosen], pairs.iou[chosen]
        starts = np.flatnonzero(np.r_[True, det[1:] != det[:-1]])
        owner = np.cumsum(np.r_[True, det[1:] != det[:-1]]) - 1
        reaches = iou[:, None] >= floors[None, :]
        usable = reaches & box_free[gt]
        pair_ignored = ignored[gt]
        taken = _take(usable & ~pair_ignored, iou, starts, owner, first_on_tie)
        _record(taken, det, gt, iou, starts, outcomes, matched_box, matched_iou, TRUE_POSITIVE)
        rows, cols = np.nonzero(taken >= 0)
        box_free[gt[taken[rows, cols]], cols] = False
        if any_ignored:  # most sets have no crowd box and no area range
            on_ignored = _take(usable & pair_ignored, iou, starts, owner)
            on_ignored[taken >= 0] = -1
            _record(on_ignored, det, gt, iou, starts, outcomes, matched_box, matched_iou, IGNORED)
            rows, cols = np.nonzero(on_ignored >= 0)
            used = gt[on_ignored[rows, cols]]
            regular = ~gt_crowd[used]  # an ignored box that is not crowd is used up (pycocotools)
            box_free[used[regular], cols[regular]] = False
    if det_ignored is not None:
        outcomes[(outcomes == FALSE_POSITIVE) & det_ignored] = IGNORED
    return GroupMatch(outcomes, matched_box, matched_iou, box_free, pairs)


def _take(candidate: np.ndarray, iou: np.ndarray, starts: np.ndarray, owner: np.ndarray,
          first_on_tie: bool = False) -> np.ndarray:
    """(detections, T): per detection (a run of pairs from `starts`) the pair of highest IoU among the
    candidates, the last on a tie (the first with `first_on_tie`); -1 when it has none."""
    value = np.where(candidate, iou[:, None], -1.0)
    best = np.maximum.reduceat(value, starts, axis=0)
    at_best = candidate & (value == best[owner])
    if first_on_tie:
        position = np.where(at_best, np.arange(len(iou))[:, None], len(iou))
        first = np.minimum.reduceat(position, starts, axis=0)
        return np.where(first < len(iou), first, -1)
    position = np.where(at_best, np.arange(len(iou))[:, None], -1)
    return np.maximum.reduceat(position, starts, axis=0)


def _record(taken, det, gt, iou, starts, outcomes, matched_box, matched_iou, outcome) -> None:
    rows, cols = np.nonzero(taken >= 0)
    pair = taken[rows, cols]
    who = det[starts[rows]]
    outcomes[who, cols] = outcome
    matched_box[who, cols] = gt[pair]
    matched_iou[who, cols] = iou[pair]
