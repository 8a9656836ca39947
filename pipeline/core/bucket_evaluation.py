"""One prediction run's images of a bucket evaluated together, on columns: what `evaluation.evaluate_image`
gives image by image (its AP counts, per-box outcomes, confidence counts and confusion cells), summed
over the images, in a few dozen numpy operations per bucket (tests/unit/test_bucket_evaluation.py holds
the two to the same answers)."""
import itertools
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core.evaluation import (
    FALSE_POSITIVE,
    FN,
    FP,
    IGNORED,
    TP,
    TRUE_POSITIVE,
    BucketLines,
    LabelTotals,
    PrecisionCounts,
    RunImage,
    grid_counts,
)
from pipeline.core.ground_truth import BucketTruth, GroundTruthImage
from pipeline.core.matching import match_groups
from pipeline.core.schema import MATCHES_SCHEMA


class ImageColumns(NamedTuple):
    """The evaluated images of one run in a bucket: each image's kept detections (its first line) and
    its ground truth, flattened."""
    image_uris: List[str]
    det_image: np.ndarray  # (D,) the image of each detection
    det_labels: List[Optional[str]]
    det_scores: np.ndarray
    det_boxes: np.ndarray  # (D, 4)
    gt_image: np.ndarray
    gt_labels: List[str]
    gt_boxes: np.ndarray  # (G, 4)
    gt_crowd: np.ndarray
    gt_position: np.ndarray  # (G,) position in its image's ground truth

    @classmethod
    def of(cls, images: Sequence[Tuple[str, Sequence[Optional[str]], np.ndarray, np.ndarray, GroundTruthImage]]):
        """From (image URI, detection labels, scores, boxes, ground truth) per image."""
        det_counts = [len(scores) for _, _, scores, _, _ in images]
        gt_counts = [len(truth.boxes) for *_, truth in images]
        boxes = [box for *_, truth in images for box in truth.boxes]
        return cls([uri for uri, *_ in images],
                   np.repeat(np.arange(len(images)), det_counts), [lbl for _, labels, *_ in images for lbl in labels],
                   np.concatenate([np.zeros(0)] + [scores for _, _, scores, _, _ in images]),
                   np.concatenate([np.zeros((0, 4))] + [b.reshape(-1, 4) for _, _, _, b, _ in images]),
                   np.repeat(np.arange(len(images)), gt_counts), [box.label for box in boxes],
                   np.array([box.box for box in boxes], dtype=np.float64).reshape(-1, 4),
                   np.array([box.crowd for box in boxes], dtype=bool),
                   np.concatenate([np.zeros(0, dtype=np.int64)] + [np.arange(n) for n in gt_counts]))


class BucketEvaluation(NamedTuple):
    labels: Dict[str, LabelTotals]
    cells: Dict[Tuple[Optional[str], Optional[str]], int]
    matches: pa.Table

    def images_with_errors(self) -> List[str]:
        """The images with a false positive or a missed box at the evaluation IoU."""
        outcome = self.matches.column('outcome')
        return pc.unique(self.matches.column('image_uri').filter(pc.not_equal(outcome, TP))).to_pylist()


def _codes(values: Sequence[Optional[str]], index: Dict[str, int]) -> np.ndarray:
    return np.array([-1 if value is None else index[value] for value in values], dtype=np.int64)


def evaluate_images(columns: ImageColumns, prediction_run: Optional[str], thresholds: Sequence[float],
                    eval_iou: float, eval_confidence: float) -> BucketEvaluation:
    names = sorted(set(columns.gt_labels) | {label for label in columns.det_labels if label is not None})
    index = {name: code for code, name in enumerate(names)}
    det_code, gt_code = _codes(columns.det_labels, index), _codes(columns.gt_labels, index)
    n_labels = max(len(names), 1)
    det_group = np.where(det_code >= 0, columns.det_image * n_labels + det_code, -1)
    match = match_groups(det_group, columns.det_scores, columns.det_boxes, columns.gt_image * n_labels + gt_code,
                         columns.gt_boxes, columns.gt_crowd, (*thresholds, eval_iou))
    at_eval = match.outcomes[:, -1]
    regular = ~columns.gt_crowd
    missed = regular & match.box_free[:, -1]
    # fp: the best IoU with a regular box of its label; fn: the best with any detection of its label.
    best_regular = np.zeros(len(det_code))
    on_regular = regular[match.pairs.gt]
    np.maximum.at(best_regular, match.pairs.det[on_regular], match.pairs.iou[on_regular])
    best_detection = np.zeros(len(gt_code))
    np.maximum.at(best_detection, match.pairs.gt, match.pairs.iou)
    labels = {}
    for code, name in enumerate(names):
        mine, boxes = det_code == code, gt_code == code
        scores = columns.det_scores[mine]
        counts = PrecisionCounts.of(scores, match.outcomes[mine, :-1].T, int((boxes & regular).sum()))
        tp_scores, fp_scores = scores[at_eval[mine] == TRUE_POSITIVE], scores[at_eval[mine] == FALSE_POSITIVE]
        labels[name] = LabelTotals(counts, int(mine.sum()), len(tp_scores), len(fp_scores),
                                   int((boxes & missed).sum()),
                                   *grid_counts(tp_scores, fp_scores, int((boxes & regular).sum())))
    rank = _rank_in_image(columns)
    matches = _matches_table(columns, prediction_run, match, at_eval, missed, best_regular, best_detection, rank)
    cells = _confusion(columns, det_code, gt_code, names, eval_iou, eval_confidence)
    return BucketEvaluation(labels, cells, matches)


def _rank_in_image(columns: ImageColumns) -> np.ndarray:
    order = np.lexsort((np.arange(len(columns.det_scores)), -columns.det_scores, columns.det_image))
    _, first, counts = np.unique(columns.det_image[order], return_index=True, return_counts=True)
    rank = np.zeros(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order)) - np.repeat(first, counts)
    return rank


def _matches_table(columns: ImageColumns, prediction_run, match, at_eval, missed, best_regular,
                   best_detection, rank) -> pa.Table:
    """The rows of `matches`: every detection not ignored (tp or fp), then every missed regular box."""
    dets = np.flatnonzero(at_eval != IGNORED)
    fns = np.flatnonzero(missed)
    tp = at_eval[dets] == TRUE_POSITIVE
    box = match.matched_box[dets, -1]
    gt_of_det = np.where(tp, box, 0)
    n_dets, n_fns = len(dets), len(fns)
    uris = pa.array(columns.image_uris, type=pa.string())
    det_nulls = np.r_[np.zeros(n_dets, dtype=bool), np.ones(n_fns, dtype=bool)]
    gt_nulls = np.r_[~tp, np.zeros(n_fns, dtype=bool)]
    outcome = np.where(tp, TP, FP).tolist() + [FN] * n_fns
    label_of = [columns.det_labels[d] for d in dets.tolist()] + [columns.gt_labels[g] for g in fns.tolist()]
    iou = np.r_[np.where(tp, match.matched_iou[dets, -1], best_regular[dets]), best_detection[fns]]

    def det_column(values):
        return pa.array(np.r_[values[dets], np.zeros(n_fns, dtype=values.dtype)], mask=det_nulls)

    def gt_column(values):
        return pa.array(np.r_[values[gt_of_det], values[fns]], mask=gt_nulls)
    arrays = [
        pa.repeat(pa.scalar(prediction_run, type=pa.string()), n_dets + n_fns),
        uris.take(pa.array(np.r_[columns.det_image[dets], columns.gt_image[fns]])),
        pa.array(outcome, type=pa.string()), pa.array(label_of, type=pa.string()),
        det_column(columns.det_scores), det_column(rank).cast(pa.int32()), pa.array(iou),
        *(det_column(columns.det_boxes[:, i]) for i in range(4)),
        *(gt_column(columns.gt_boxes[:, i]) if len(columns.gt_boxes) else pa.nulls(n_dets + n_fns, pa.float64())
          for i in range(4)),
        (gt_column(columns.gt_position) if len(columns.gt_boxes) else pa.nulls(n_dets + n_fns, pa.int64())
         ).cast(pa.int32()),
    ]
    return pa.Table.from_arrays(arrays, schema=MATCHES_SCHEMA)


def _confusion(columns: ImageColumns, det_code, gt_code, names, eval_iou: float, eval_confidence: float):
    """The confusion cells: the detections at or above the confidence matched to any box of their
    image (greedy by score, at eval_iou)."""
    confident = columns.det_scores >= eval_confidence
    match = match_groups(np.where(confident, columns.det_image, -1), columns.det_scores, columns.det_boxes,
                         columns.gt_image, columns.gt_boxes, columns.gt_crowd, (eval_iou,))
    outcome, box = match.outcomes[:, 0], match.matched_box[:, 0]
    label_name = names + [None]  # code -1 (a detection without a label) reads as None
    cells: Dict[Tuple[Optional[str], Optional[str]], int] = {}

    def count(true_codes, predicted_codes):
        pairs, counts = np.unique(np.stack([true_codes, predicted_codes], axis=1).reshape(-1, 2), axis=0,
                                  return_counts=True)
        for (true, predicted), n in zip(pairs.tolist(), counts.tolist()):
            key = (label_name[true], label_name[predicted])
            cells[key] = cells.get(key, 0) + n
    matched = confident & (outcome == TRUE_POSITIVE)
    count(gt_code[box[matched]], det_code[matched])
    unmatched = confident & (outcome == FALSE_POSITIVE)
    count(np.full(int(unmatched.sum()), -1), det_code[unmatched])
    left = ~columns.gt_crowd & match.box_free[:, 0]
    count(gt_code[left], np.full(int(left.sum()), -1))
    return cells


class Assembled(NamedTuple):
    """A bucket's ground truth and lines, put together: the evaluated images (of the ML use asked for,
    if any), their boxes as columns, and each run's first line of every image."""
    image_uris: List[str]
    gt_image: np.ndarray
    gt_labels: List[str]
    gt_boxes: np.ndarray
    gt_crowd: np.ndarray
    gt_position: np.ndarray
    other_ml_use: int  # images of the ground truth left out by --ml_use
    runs: Dict[Optional[str], Tuple[ImageColumns, RunImage]]


def assemble(truth: Sequence[BucketTruth], lines: Sequence[BucketLines], runs: Sequence[Optional[str]],
             ml_use: Optional[str]) -> Assembled:
    """The columns `evaluate_images` takes, for each run, from the bucket's elements, without a Python
    object per box: an image's boxes are its units' in (file, place) order; its ML use the first given;
    a run's line of an image is its first in (file, range, position) order."""
    units = sorted((uri, part.source_file, part.positions[i], p, i)
                   for p, part in enumerate(truth) for i, uri in enumerate(part.image_uris))
    box_base = np.cumsum([0] + [len(part.labels) for part in truth])
    image_uris: List[str] = []
    gt_index: List[int] = []
    gt_image: List[int] = []
    other = 0
    for uri, group in itertools.groupby(units, key=lambda unit: unit[0]):
        members = list(group)
        uses = [truth[p].ml_uses[i] for _, _, _, p, i in members if truth[p].ml_uses[i] is not None]
        if ml_use is not None and (uses[0] if uses else None) != ml_use:
            other += 1
            continue
        for _, _, _, p, i in members:
            start, end = truth[p].offsets[i], truth[p].offsets[i + 1]
            gt_index.extend(range(box_base[p] + start, box_base[p] + end))
        gt_image.extend([len(image_uris)] * (len(gt_index) - len(gt_image)))
        image_uris.append(uri)
    all_labels = [label for part in truth for label in part.labels]
    index = np.array(gt_index, dtype=np.int64)
    image_of = np.array(gt_image, dtype=np.int64)
    boxes = np.concatenate([np.zeros((0, 4))] + [part.boxes for part in truth])[index]
    crowd = np.concatenate([np.zeros(0, dtype=bool)] + [part.crowd for part in truth])[index]
    first_of_image = np.searchsorted(image_of, np.arange(len(image_uris)))
    position = np.arange(len(index)) - first_of_image[image_of] if len(index) else np.zeros(0, dtype=np.int64)
    labels = [all_labels[i] for i in gt_index]
    by_run = {run: _run_columns(run, image_uris, lines, image_of, labels, boxes, crowd, position) for run in runs}
    return Assembled(image_uris, image_of, labels, boxes, crowd, position, other, by_run)


def _run_columns(run, image_uris, lines: Sequence[BucketLines], gt_image, gt_labels, gt_boxes, gt_crowd,
                 gt_position):
    """One run's columns: each evaluated image's first line of the run (none: every box missed), and
    what the run's lines add to its counts."""
    evaluated = {uri: n for n, uri in enumerate(image_uris)}
    mine = sorted((uri, (part.source_file, part.range_start, part.positions[i]), p, i)
                  for p, part in enumerate(lines) if part.prediction_run == run
                  for i, uri in enumerate(part.image_uris))
    row_base = np.cumsum([0] + [len(part.scores) for part in lines])
    chosen: Dict[int, Tuple[int, int]] = {}
    without_truth = further = 0
    for uri, group in itertools.groupby(mine, key=lambda line: line[0]):
        members = list(group)
        if uri not in evaluated:
            without_truth += len(members)
            continue
        _, _, p, i = members[0]
        further += len(members) - 1
        chosen[evaluated[uri]] = (row_base[p] + int(lines[p].offsets[i]), row_base[p] + int(lines[p].offsets[i + 1]))
    rows: List[int] = []
    det_image: List[int] = []
    for image in sorted(chosen):
        start, end = chosen[image]
        rows.extend(range(start, end))
        det_image.extend([image] * (end - start))
    row_index = np.array(rows, dtype=np.int64)
    all_labels = [label for part in lines for label in part.labels]
    columns = ImageColumns(
        image_uris, np.array(det_image, dtype=np.int64), [all_labels[r] for r in rows],
        np.concatenate([np.zeros(0)] + [part.scores for part in lines])[row_index],
        np.concatenate([np.zeros((0, 4))] + [part.boxes.reshape(-1, 4) for part in lines])[row_index],
        gt_image, gt_labels, gt_boxes, gt_crowd, gt_position)
    counts = RunImage(evaluated=len(image_uris), without_prediction=len(image_uris) - len(chosen),
                      predictions_without_ground_truth=without_truth, other_lines=further, detections=len(rows))
    return columns, counts
