"""Model A against model B without labels: each run's boxes matched, image by image, to a base run's.

On the images both runs have (each run's first line of the image, as the evaluation takes it), the
boxes are matched greedily in three passes, each over the pairs of the two runs' boxes in one image:
1. `same`: the same label and IoU >= --eval_iou;
2. `relabelled`: what is left, any label, IoU >= --eval_iou;
3. `moved`: what is left, the same label, IoU in [0.1, --eval_iou).
A box left after the three is `added` (only the run has it) or `removed` (only the base has it).

Greedy "by score" as the evaluation matches, made symmetric: within a pass the pairs are taken in
order of the higher of their two scores, then the lower, then IoU, and a pair is taken when neither
box is taken yet. When a box overlaps one box of the other run, this is the evaluation's order; in
every case A against B mirrors B against A exactly (added <-> removed).

Per label, with the base as the reference: `agreement` is the F1 of the run's boxes against the
base's, 2 * same / (run boxes + base boxes).

With ground truth as well, each changed box says who was right, from each box's outcome at
--eval_iou in its run's evaluation (its row of `matches`): `fixed` (the run's box is a true positive
where the base's is a false positive, or is missing: an added true positive or a removed false
positive), `broken` (the other way round), `both_wrong`, or `both_right`; null where either box's
image has no ground truth or a box is ignored (a crowd box, beyond the caps). Per label, the images
each run gets right (no false positive and no missed box of the label) where the other does not.
"""
from typing import Dict, FrozenSet, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core.bucket_evaluation import ImageColumns
from pipeline.core.columns import joined_codes, rows_of
from pipeline.core.evaluation import BucketLines
from pipeline.core.matching import FALSE_POSITIVE, TRUE_POSITIVE, group_pairs
from pipeline.core.schema import COMPARISON_SCHEMA

SAME, RELABELLED, MOVED, ADDED, REMOVED = 'same', 'relabelled', 'moved', 'added', 'removed'
OUTCOMES = (SAME, RELABELLED, MOVED, ADDED, REMOVED)
MOVED_IOU = 0.1  # the lowest IoU at which a box of the same label counts as moved, not added and removed
FIXED, BROKEN, BOTH_WRONG, BOTH_RIGHT = 'fixed', 'broken', 'both_wrong', 'both_right'
VERDICTS = (FIXED, BROKEN, BOTH_WRONG, BOTH_RIGHT)
UNKNOWN = -1  # a box's outcome where its image has no ground truth


class RunBoxes(NamedTuple):
    """One run's boxes in a bucket's compared images: image positions, label codes (into the shared
    label names; -1: no label), scores and normalized boxes."""
    image: np.ndarray  # (n,) int64
    label: np.ndarray  # (n,) int64
    scores: np.ndarray
    boxes: np.ndarray  # (n, 4) x_min, y_min, x_max, y_max

    @classmethod
    def empty(cls) -> 'RunBoxes':
        return cls(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros((0, 4)))


class Matched(NamedTuple):
    """The pairs taken (positions into the run's and the base's boxes), each with its outcome."""
    run: np.ndarray
    base: np.ndarray
    iou: np.ndarray
    outcome: np.ndarray  # (pairs,) positions in OUTCOMES: SAME, RELABELLED or MOVED

    def unmatched(self, run_boxes: int, base_boxes: int) -> Tuple[np.ndarray, np.ndarray]:
        """(the run's boxes left: added, the base's boxes left: removed)."""
        run_left = np.ones(run_boxes, dtype=bool)
        base_left = np.ones(base_boxes, dtype=bool)
        run_left[self.run] = False
        base_left[self.base] = False
        return np.flatnonzero(run_left), np.flatnonzero(base_left)


def match_runs(run: RunBoxes, base: RunBoxes, eval_iou: float) -> Matched:
    """The three passes over every pair of a run's and the base's boxes in the same image."""
    pairs, _ = group_pairs(run.image, run.scores, base.image, run.boxes, base.boxes,
                           np.zeros(len(base.image), dtype=bool))
    same_label = (run.label[pairs.det] == base.label[pairs.gt]) & (run.label[pairs.det] >= 0)
    high = np.maximum(run.scores[pairs.det], base.scores[pairs.gt])
    low = np.minimum(run.scores[pairs.det], base.scores[pairs.gt])
    order = np.lexsort((pairs.gt, pairs.det, -pairs.iou, -low, -high))  # the passes' order of pairs
    run_taken = np.zeros(len(run.image), dtype=bool)
    base_taken = np.zeros(len(base.image), dtype=bool)
    taken: List[Tuple[np.ndarray, int]] = []
    for name, chosen in ((SAME, same_label & (pairs.iou >= eval_iou)), (RELABELLED, pairs.iou >= eval_iou),
                         (MOVED, same_label & (pairs.iou >= MOVED_IOU) & (pairs.iou < eval_iou))):
        candidates = order[chosen[order]]
        picked = _greedy(pairs.det[candidates], pairs.gt[candidates], run_taken, base_taken)
        taken.append((candidates[picked], OUTCOMES.index(name)))
    rows = np.concatenate([np.zeros(0, dtype=np.int64)] + [pairs_of for pairs_of, _ in taken])
    outcomes = np.concatenate([np.zeros(0, dtype=np.int64)] + [np.full(len(p), o) for p, o in taken])
    return Matched(pairs.det[rows], pairs.gt[rows], pairs.iou[rows], outcomes)


def _greedy(run: np.ndarray, base: np.ndarray, run_taken: np.ndarray, base_taken: np.ndarray) -> np.ndarray:
    """The positions of the pairs (in their order) that sequential greedy takes: a pair is taken when
    neither of its boxes is. Done in rounds: each takes every pair that comes first among the pairs
    left for both of its boxes (sequential greedy would take it too), then drops the pairs of taken
    boxes. Marks the boxes taken."""
    picked: List[np.ndarray] = []
    left = np.flatnonzero(~run_taken[run] & ~base_taken[base])
    while len(left):
        first_of_run = _first_positions(run[left])
        first_of_base = _first_positions(base[left])
        now = left[first_of_run & first_of_base]
        picked.append(now)
        run_taken[run[now]] = True
        base_taken[base[now]] = True
        left = left[~run_taken[run[left]] & ~base_taken[base[left]]]
    return np.sort(np.concatenate([np.zeros(0, dtype=np.int64)] + picked))


def _first_positions(keys: np.ndarray) -> np.ndarray:
    """Whether each position holds the first occurrence of its key."""
    _, first = np.unique(keys, return_index=True)
    flags = np.zeros(len(keys), dtype=bool)
    flags[first] = True
    return flags


class LabelComparison(NamedTuple):
    """One label's comparison of a run against the base, summed over images: each outcome's count,
    and the boxes of each side. `relabelled` counts the base's boxes of the label given another label;
    `relabelled_in`, the run's boxes of the label that the base gave another."""
    same: int = 0
    relabelled: int = 0
    relabelled_in: int = 0
    moved: int = 0
    added: int = 0
    removed: int = 0
    run_boxes: int = 0
    base_boxes: int = 0
    # With ground truth: the changed boxes of each verdict, and the images the run gets right where
    # the base gets them wrong (images_fixed) and the other way round (images_broken).
    fixed: int = 0
    broken: int = 0
    both_wrong: int = 0
    both_right: int = 0
    images_fixed: int = 0
    images_broken: int = 0

    def plus(self, other: 'LabelComparison') -> 'LabelComparison':
        return LabelComparison(*(a + b for a, b in zip(self, other)))

    @property
    def agreement(self) -> Optional[float]:
        """The F1 of the run's boxes of the label against the base's; None when neither has one."""
        boxes = self.run_boxes + self.base_boxes
        return 2 * self.same / boxes if boxes else None


def label_counts(run: RunBoxes, base: RunBoxes, matched: Matched, names: Sequence[Optional[str]],
                 verdict: Optional[np.ndarray] = None,
                 image_errors: Sequence[Tuple[Optional[FrozenSet], Optional[FrozenSet]]] = ()
                 ) -> Dict[Optional[str], LabelComparison]:
    """Per label (None: boxes without one), the outcomes of a bucket's compared boxes; with ground
    truth, the rows' verdicts (comparison_table's order; a removed box counts for the base's label) and
    each compared image's (run's, base's) labels of errors, None where it has no ground truth."""
    added, removed = matched.unmatched(len(run.image), len(base.image))
    run_label, base_label = run.label[matched.run], base.label[matched.base]
    per_label: Dict[Optional[str], LabelComparison] = {}
    codes = np.unique(np.concatenate([run.label, base.label]))
    for code in codes.tolist():
        in_run, in_base = run_label == code, base_label == code
        counts = LabelComparison(
            same=int((in_run & (matched.outcome == OUTCOMES.index(SAME))).sum()),
            relabelled=int((in_base & (matched.outcome == OUTCOMES.index(RELABELLED))).sum()),
            relabelled_in=int((in_run & (matched.outcome == OUTCOMES.index(RELABELLED))).sum()),
            moved=int((in_run & (matched.outcome == OUTCOMES.index(MOVED))).sum()),
            added=int((run.label[added] == code).sum()), removed=int((base.label[removed] == code).sum()),
            run_boxes=int((run.label == code).sum()), base_boxes=int((base.label == code).sum()))
        if verdict is not None:
            row_label = np.concatenate([run_label, run.label[added], base.label[removed]])
            counts = counts._replace(**{name: int(((row_label == code) & (verdict == VERDICTS.index(name))).sum())
                                        for name in VERDICTS})
        per_label[names[code] if code >= 0 else None] = counts
    for run_errors, base_errors in image_errors:
        if run_errors is None or base_errors is None:
            continue
        for label, field in [(label, 'images_fixed') for label in base_errors - run_errors] + [
                (label, 'images_broken') for label in run_errors - base_errors]:
            counts = per_label.get(label, LabelComparison())
            per_label[label] = counts._replace(**{field: getattr(counts, field) + 1})
    return per_label


def changed_images(run: RunBoxes, base: RunBoxes, matched: Matched, images: int) -> np.ndarray:
    """(images,) whether each compared image has a box that is not `same`."""
    added, removed = matched.unmatched(len(run.image), len(base.image))
    changed = np.zeros(images, dtype=bool)
    changed[run.image[added]] = True
    changed[base.image[removed]] = True
    changed[run.image[matched.run[matched.outcome != OUTCOMES.index(SAME)]]] = True
    return changed


class ImageTruth(NamedTuple):
    """What the ground truth says of one run's first lines in a bucket, per image URI: each detection's
    outcome at --eval_iou (in line order: TRUE_POSITIVE, FALSE_POSITIVE or IGNORED), and the labels
    of the image's errors (a false positive, or a missed box)."""
    outcomes: Dict[str, np.ndarray]
    errors: Dict[str, FrozenSet[str]]

    @classmethod
    def of(cls, columns: ImageColumns, at_eval: np.ndarray, missed: np.ndarray) -> 'ImageTruth':
        """From a run's evaluated columns (detections in image order, each image's in line order) and
        bucket_evaluation.detection_outcomes of them."""
        images = len(columns.image_uris)
        per_image = np.split(at_eval, np.searchsorted(columns.det_image, np.arange(1, images)))
        wrong = [set() for _ in range(images)]  # type: List[set]
        for image, code in zip(columns.det_image[at_eval == FALSE_POSITIVE].tolist(),
                               columns.det_label[at_eval == FALSE_POSITIVE].tolist()):
            wrong[image].add(columns.label_names[code] if code >= 0 else None)
        for image, code in zip(columns.gt_image[missed].tolist(), columns.gt_label[missed].tolist()):
            wrong[image].add(columns.label_names[code])
        return cls(dict(zip(columns.image_uris, per_image)),
                   {uri: frozenset(labels) for uri, labels in zip(columns.image_uris, wrong)})

    def outcomes_of(self, uris: Sequence[str], boxes: RunBoxes) -> np.ndarray:
        """(n,) the outcome of each of a run's boxes (RunBoxes of these images, in line order), UNKNOWN
        where its image has no ground truth."""
        counts = np.bincount(boxes.image, minlength=len(uris))
        parts = [self.outcomes.get(uri, np.full(count, UNKNOWN)) for uri, count in zip(uris, counts.tolist())]
        parts = [part if len(part) == count else np.full(count, UNKNOWN) for part, count in zip(parts, counts.tolist())]
        return np.concatenate([np.zeros(0, dtype=np.int64)] + [part.astype(np.int64) for part in parts])


def verdicts(matched: Matched, run_outcome: np.ndarray, base_outcome: np.ndarray) -> np.ndarray:
    """(rows,) positions in VERDICTS of the comparison's rows (pairs, added, removed), -1 for a row
    of `same` or a box whose outcome is not known."""
    added, removed = matched.unmatched(len(run_outcome), len(base_outcome))
    run_side, base_side = run_outcome[matched.run], base_outcome[matched.base]
    judged = ((run_side == TRUE_POSITIVE) | (run_side == FALSE_POSITIVE)) & (
        (base_side == TRUE_POSITIVE) | (base_side == FALSE_POSITIVE)) & (matched.outcome != OUTCOMES.index(SAME))
    run_right, base_right = run_side == TRUE_POSITIVE, base_side == TRUE_POSITIVE
    pairs = np.select([run_right & ~base_right, ~run_right & base_right, ~run_right & ~base_right],
                      [VERDICTS.index(FIXED), VERDICTS.index(BROKEN), VERDICTS.index(BOTH_WRONG)],
                      VERDICTS.index(BOTH_RIGHT))

    def alone(outcome: np.ndarray, right: str, wrong: str) -> np.ndarray:
        return np.select([outcome == TRUE_POSITIVE, outcome == FALSE_POSITIVE],
                         [VERDICTS.index(right), VERDICTS.index(wrong)], -1)
    return np.concatenate([np.where(judged, pairs, -1), alone(run_outcome[added], FIXED, BROKEN),
                           alone(base_outcome[removed], BROKEN, FIXED)]).astype(np.int64)


def first_lines(parts: Sequence[BucketLines]) -> Tuple[Optional[BucketLines], int]:
    """(one run's lines in a bucket, only each image's first in file order, the line the evaluation
    takes; how many further lines were left out). None without a line."""
    if not parts:
        return None, 0
    joined = BucketLines.joined(list(parts))
    order = sorted(range(len(joined.image_uris)), key=lambda line: (
        joined.source_files[joined.file_codes[line]], int(joined.range_starts[line]), int(joined.positions[line])))
    first: Dict[str, int] = {}
    for line in order:
        first.setdefault(joined.image_uris[line], line)
    kept = np.array(sorted(first.values()), dtype=np.int64)
    return joined.lines_at(kept), len(joined.image_uris) - len(kept)


class BucketComparison(NamedTuple):
    """A run against the base over one bucket: the boxes' rows (COMPARISON_COLUMNS), the counts per
    label, and the images: compared, changed, only in the run, only in the base."""
    rows: pa.Table
    labels: Dict[Optional[str], LabelComparison]
    images: 'ImageCounts'
    changed: List[str]  # the URIs of the compared images with a box that is not `same`


class ImageCounts(NamedTuple):
    compared: int = 0
    changed: int = 0
    only_in_run: int = 0
    only_in_base: int = 0

    def plus(self, other: 'ImageCounts') -> 'ImageCounts':
        return ImageCounts(*(a + b for a, b in zip(self, other)))


def compare_lines(run: BucketLines, base: BucketLines, base_run: Optional[str], eval_iou: float,
                  truth: Optional[Tuple[ImageTruth, ImageTruth]] = None) -> BucketComparison:
    """A run's first lines against the base's, on the images both have; with `truth` (the run's and
    the base's), who was right."""
    base_line = {uri: line for line, uri in enumerate(base.image_uris)}
    common = sorted(set(run.image_uris) & set(base_line))
    run_index = {uri: line for line, uri in enumerate(run.image_uris)}
    names, (run_codes, base_codes) = _shared_labels(run, base)
    run_boxes = _boxes_of(run, np.array([run_index[uri] for uri in common], dtype=np.int64), run_codes)
    base_boxes = _boxes_of(base, np.array([base_line[uri] for uri in common], dtype=np.int64), base_codes)
    matched = match_runs(run_boxes, base_boxes, eval_iou)
    changed = changed_images(run_boxes, base_boxes, matched, len(common))
    images = ImageCounts(len(common), int(changed.sum()), len(run_index) - len(common), len(base_line) - len(common))
    verdict, image_errors = None, []  # type: Optional[np.ndarray], List[Tuple[Optional[FrozenSet], Optional[FrozenSet]]]
    if truth is not None:
        run_truth, base_truth = truth
        verdict = verdicts(matched, run_truth.outcomes_of(common, run_boxes),
                           base_truth.outcomes_of(common, base_boxes))
        image_errors = [(run_truth.errors.get(uri), base_truth.errors.get(uri)) for uri in common]
    return BucketComparison(comparison_table(run.prediction_run, base_run, common, names, run_boxes, base_boxes,
                                             matched, verdict),
                            label_counts(run_boxes, base_boxes, matched, names, verdict, image_errors), images,
                            [uri for uri, flag in zip(common, changed.tolist()) if flag])


def _shared_labels(run: BucketLines, base: BucketLines) -> Tuple[List[str], Tuple[np.ndarray, np.ndarray]]:
    """One vocabulary of labels for both runs, and each run's label codes into it."""
    names, codes = joined_codes([(run.label_names, run.label_codes), (base.label_names, base.label_codes)])
    return names, (codes[:len(run.label_codes)].astype(np.int64), codes[len(run.label_codes):].astype(np.int64))


def _boxes_of(lines: BucketLines, chosen: np.ndarray, codes: np.ndarray) -> RunBoxes:
    """The boxes of the chosen lines, the i-th chosen line as image i."""
    rows, offsets = rows_of(lines.offsets, chosen)
    return RunBoxes(np.repeat(np.arange(len(chosen)), np.diff(offsets)), codes[rows], lines.scores[rows],
                    lines.boxes.reshape(-1, 4)[rows])


def comparison_table(run_name: Optional[str], base_run: Optional[str], uris: List[str], names: List[str],
                     run: RunBoxes, base: RunBoxes, matched: Matched, verdict: Optional[np.ndarray] = None) -> pa.Table:
    """The rows of `comparison`: the matched pairs, then the run's boxes left (added), then the
    base's (removed); `verdict`: each row's position in VERDICTS (-1: none), with ground truth."""
    added, removed = matched.unmatched(len(run.image), len(base.image))
    n_pairs, n_added, n_removed = len(matched.run), len(added), len(removed)
    total = n_pairs + n_added + n_removed
    run_rows = np.concatenate([matched.run, added, np.zeros(n_removed, dtype=np.int64)])
    base_rows = np.concatenate([matched.base, np.zeros(n_added, dtype=np.int64), removed])
    has_run = np.r_[np.ones(n_pairs + n_added, dtype=bool), np.zeros(n_removed, dtype=bool)]
    has_base = np.r_[np.ones(n_pairs, dtype=bool), np.zeros(n_added, dtype=bool), np.ones(n_removed, dtype=bool)]
    outcome = np.concatenate([matched.outcome, np.full(n_added, OUTCOMES.index(ADDED)),
                              np.full(n_removed, OUTCOMES.index(REMOVED))]).astype(np.int64)
    image = np.where(has_run, run.image[run_rows] if len(run.image) else 0,
                     base.image[base_rows] if len(base.image) else 0)

    def side(values: np.ndarray, rows: np.ndarray, present: np.ndarray):
        taken = values[rows] if len(values) else np.zeros(total, dtype=values.dtype)
        return pa.array(taken, mask=~present)

    def label(codes: np.ndarray, rows: np.ndarray, present: np.ndarray):
        taken = codes[rows] if len(codes) else np.full(total, -1)
        return pa.array(names + [''], type=pa.string()).take(pa.array(np.where(taken >= 0, taken, len(names)),
                                                                     mask=~present | (taken < 0)))
    score, base_score = side(run.scores, run_rows, has_run), side(base.scores, base_rows, has_base)
    iou = np.r_[matched.iou, np.zeros(n_added + n_removed)]
    return pa.Table.from_arrays([
        pa.repeat(pa.scalar(run_name, type=pa.string()), total),
        pa.repeat(pa.scalar(base_run, type=pa.string()), total),
        pa.array(uris, type=pa.string()).take(pa.array(image)),
        pa.array(list(OUTCOMES), type=pa.string()).take(pa.array(outcome)),
        label(run.label, run_rows, has_run), label(base.label, base_rows, has_base), score, base_score,
        pc.subtract(score, base_score), pa.array(iou, mask=~(has_run & has_base)),
        pa.nulls(total, pa.string()) if verdict is None else pa.array(list(VERDICTS) + [''], type=pa.string()).take(
            pa.array(np.where(verdict >= 0, verdict, len(VERDICTS)), mask=verdict < 0)),
        *(side(run.boxes[:, i], run_rows, has_run) for i in range(4)),
        *(side(base.boxes[:, i], base_rows, has_base) for i in range(4)),
    ], schema=COMPARISON_SCHEMA)
