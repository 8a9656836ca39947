"""Detections of equal score in pycocotools' order, at any scale.

pycocotools orders a label's detections by descending score with a stable sort over its images' lists
(images in ground-truth order, each image's detections in line order), and every detection is a point
of the precision-recall curve. The merged counts (`evaluation.PrecisionCounts`) hold one point per
distinct score: exact wherever a score's detections are all true or all false positives (their
order moves no point that matters), not where they mix. So the evaluation settles in two steps:

1. the counts merged per distinct score give each label's curve and, for the scores where true and
   false positives mix (`TieBasis`), the positives above them and where each recall point falls;
2. only the detections at those scores are gathered (by label and chunk of scores), put in
   pycocotools' order, and their own points give `raises`: per recall point, the precision the
   merged curve missed. The exact interpolated precision is the merged one raised to it.

The state merged per label stays bounded by its distinct scores; a chunk gathers about TIE_CHUNK
detections (one score's detections, if more, are gathered together).
"""
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from pipeline.core.columns import joined_codes

# COCO's recall points (0, 0.01, ..., 1).
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
# Detections of tied scores a chunk gathers (a single score's may be more).
TIE_CHUNK = 1 << 20


class CurveRule(NamedTuple):
    """How a precision-recall curve is read, and in what order equal scores fall in it: pycocotools'
    (COCO_CURVE) or tidecv's (error_types.TIDE_CURVE)."""
    recall_points: np.ndarray  # where the interpolated precision is read
    epsilon: float  # added to a point's detections before dividing (pycocotools: np.spacing(1))
    # Per area (the first axis of the flags): the true positives of area 0 fall after the others of
    # their score (tidecv pushes the errors of a fixed run before its true positives).
    positives_last: Tuple[bool, ...] = ()
    # The images of a file in the order it lists them (tidecv's data keeps the order it was given
    # them in), not pycocotools' (a COCO file's image ids in order): the third column of a Place.
    listed_order: bool = False


COCO_CURVE = CurveRule(RECALL_POINTS, float(np.spacing(1)))


class TiedDetections(NamedTuple):
    """Evaluated detections of one prediction run, with what pycocotools orders equal scores by: the
    place of their image in the ground truth (its first unit's file and place in it: COCO's image ids
    in order, else the order of first appearance, files by name) and their row among their image's
    (line order among equal scores). Outcomes per area range and threshold, packed as bits (or, for
    tidecv's order, a label's error points: outcomes per column of error_types.ErrorCounts)."""
    prediction_run: Optional[str]
    label_names: List[str]
    label_codes: np.ndarray  # (D,) int32
    scores: np.ndarray  # (D,)
    source_files: List[str]
    file_codes: np.ndarray  # (D,) int32: the file of the first unit of the detection's image
    places: np.ndarray  # (D, 3) int64: that unit's place in its file (truth_formats.Place)
    positions: np.ndarray  # (D,) int64: the detection's row among its image's
    tp: np.ndarray  # (D, bytes) uint8: np.packbits of the (D, areas * thresholds) true positives
    fp: np.ndarray  # the same, of the false positives
    areas: int
    thresholds: int

    @classmethod
    def of(cls, prediction_run: Optional[str], label_names: List[str], label_codes: np.ndarray, scores: np.ndarray,
           source_files: List[str], file_codes: np.ndarray, places: np.ndarray, positions: np.ndarray,
           outcomes: np.ndarray, true_positive: int, false_positive: int) -> 'TiedDetections':
        """From (D, areas, thresholds) outcomes."""
        flat = outcomes.reshape(len(scores), outcomes.shape[1] * outcomes.shape[2])
        return cls(prediction_run, label_names, label_codes.astype(np.int32), scores, source_files,
                   file_codes.astype(np.int32), places.astype(np.int64).reshape(-1, 3), positions.astype(np.int64),
                   np.packbits(flat == true_positive, axis=1), np.packbits(flat == false_positive, axis=1),
                   outcomes.shape[1], outcomes.shape[2])

    def at(self, rows: np.ndarray) -> 'TiedDetections':
        return self._replace(label_codes=self.label_codes[rows], scores=self.scores[rows],
                             file_codes=self.file_codes[rows], places=self.places[rows],
                             positions=self.positions[rows], tp=self.tp[rows], fp=self.fp[rows])

    def flags(self) -> Tuple[np.ndarray, np.ndarray]:
        """(D, areas, thresholds) true and false positives."""
        shape = (len(self.scores), self.areas, self.thresholds)
        tp, fp = (np.unpackbits(bits, axis=1, count=self.areas * self.thresholds).astype(bool).reshape(shape)
                  for bits in (self.tp, self.fp))
        return tp, fp


class AreaCounts(NamedTuple):
    """One area range's merged counts of a label, as `tie_basis` reads them."""
    scores: np.ndarray  # (S,) distinct, descending
    tp: np.ndarray  # (T, S)
    fp: np.ndarray  # (T, S)
    tp_total: np.ndarray  # (T, S) the true positives at each score and above (a cumulative sum)
    fp_total: np.ndarray  # (T, S)
    ground_truth: int
    crossing: Optional[np.ndarray]  # (T, 101) the score where each recall point is first reached; None: no truth


class TieBasis(NamedTuple):
    """What ordering one label's tied detections needs of its merged counts, per area range (all,
    then small, medium and large when known) and threshold."""
    scores: np.ndarray  # (M,) the scores where true and false positives mix somewhere, descending
    mixed: np.ndarray  # (A, T, M) where they do
    tp_before: np.ndarray  # (A, T, M) the true positives of higher scores
    fp_before: np.ndarray  # (A, T, M)
    ground_truth: np.ndarray  # (A,) the boxes that count
    crossing: np.ndarray  # (A, T, 101) the score where each recall point is first reached, -inf never
    chunks: np.ndarray  # (M,) the chunk that gathers each score's detections

    def chunk_of(self, scores: np.ndarray) -> np.ndarray:
        """Each score's chunk, -1 for a score that is not tied with mixed outcomes."""
        at = np.searchsorted(-self.scores, -scores)
        found = at < len(self.scores)
        found[found] = self.scores[at[found]] == scores[found]
        return np.where(found, self.chunks[np.minimum(at, len(self.scores) - 1)], -1)


def tie_basis(areas: Sequence[AreaCounts]) -> Optional[TieBasis]:
    """The basis of a label whose counts mix true and false positives at some score of an area range
    with ground truth; None when none does (its merged curve is exact)."""
    scores = union_of_scores([mixing_scores(area.scores, area.tp, area.fp, area.crossing is not None)
                              for area in areas])
    if not len(scores):
        return None
    return basis_of(scores, [area_sample(area, scores, first=a == 0) for a, area in enumerate(areas)])


def mixing_scores(scores: np.ndarray, tp: np.ndarray, fp: np.ndarray, with_truth: bool) -> np.ndarray:
    """The scores of one area range's merged counts where true and false positives mix at some
    threshold (none without ground truth: its curve has no point to raise)."""
    return scores[((tp > 0) & (fp > 0)).any(axis=0)] if with_truth else np.zeros(0)


def union_of_scores(parts: Sequence[np.ndarray]) -> np.ndarray:
    """The distinct scores of the parts, descending."""
    return -np.unique(-np.concatenate([np.zeros(0), *parts]))


class AreaSample(NamedTuple):
    """What a TieBasis takes of one area range's counts, at the basis' scores (M)."""
    mixed: np.ndarray  # (T, M)
    tp_before: np.ndarray  # (T, M)
    fp_before: np.ndarray  # (T, M)
    ground_truth: int
    crossing: np.ndarray  # (T, 101)
    sizes: Optional[np.ndarray]  # (M,) the detections at each score (the first area range's only)


def area_sample(area: AreaCounts, scores: np.ndarray, first: bool = False) -> AreaSample:
    """One area range's part of a basis at `scores`: where its outcomes mix, its positives of higher
    scores and its crossings; for the first range (all areas), how many detections each score has."""
    shape = (area.tp.shape[0], len(scores))
    mixed = np.zeros(shape, dtype=bool)
    tp_before, fp_before = np.zeros(shape, dtype=np.int64), np.zeros(shape, dtype=np.int64)
    crossing = np.full((shape[0], len(RECALL_POINTS)), -np.inf)
    at = np.searchsorted(-area.scores, -scores)  # the scores above each
    column = np.minimum(at, max(len(area.scores) - 1, 0))
    if area.crossing is not None:
        present = at < len(area.scores)
        present[present] = area.scores[at[present]] == scores[present]
        for before, totals in ((tp_before, area.tp_total), (fp_before, area.fp_total)):
            if len(area.scores):  # the counts of the scores above: the total at the score before, 0 at the top
                before[:] = np.where(at > 0, totals[:, np.maximum(at - 1, 0)], 0)
        if len(area.scores):
            mixed[:] = present & (area.tp[:, column] > 0) & (area.fp[:, column] > 0)
        crossing[:] = area.crossing
    sizes = None
    if first:
        sizes = (area.tp[:, column] + area.fp[:, column]).max(axis=0) if len(area.scores) else \
            np.zeros(len(scores), dtype=np.int64)
    return AreaSample(mixed, tp_before, fp_before, area.ground_truth, crossing, sizes)


def basis_of(scores: np.ndarray, samples: Sequence[AreaSample]) -> TieBasis:
    """A TieBasis from each area range's sample at its scores (the first range's sizes chunk them)."""
    sizes = samples[0].sizes
    assert sizes is not None, 'the first area range gives the sizes'
    chunks = (np.cumsum(sizes) - sizes) // TIE_CHUNK
    return TieBasis(scores, np.stack([sample.mixed for sample in samples]),
                    np.stack([sample.tp_before for sample in samples]),
                    np.stack([sample.fp_before for sample in samples]),
                    np.array([sample.ground_truth for sample in samples]),
                    np.stack([sample.crossing for sample in samples]), chunks)


def tied_parts(detections: TiedDetections, bases: Dict[str, TieBasis]) -> Dict[Tuple[str, int], TiedDetections]:
    """(label, chunk) -> the detections at the scores of `bases` (by label) where outcomes mix."""
    parts = {}
    for code, label in enumerate(detections.label_names):
        basis = bases.get(label)
        if basis is None:
            continue
        rows = np.flatnonzero(detections.label_codes == code)
        chunk = basis.chunk_of(detections.scores[rows])
        for value in np.unique(chunk[chunk >= 0]).tolist():
            part = detections.at(rows[chunk == value])
            parts[label, value] = part._replace(label_names=[label], label_codes=np.zeros(len(part.scores), np.int32))
    return parts


def raises(parts: Sequence[TiedDetections], basis: TieBasis, rule: CurveRule = COCO_CURVE) -> np.ndarray:
    """(A, T, R) for one label: the interpolated precision that its tied detections (of one chunk
    or more, from any buckets) reach at each recall point in the rule's order (pycocotools' by
    default); the exact one is the merged curve's raised to it, point by point."""
    files, codes = joined_codes([(part.source_files, part.file_codes) for part in parts])
    file_rank = np.argsort(np.argsort(np.array(files, dtype=object)))[codes] if files else codes
    scores = np.concatenate([part.scores for part in parts])
    places = np.concatenate([part.places for part in parts])
    positions = np.concatenate([part.positions for part in parts])
    flags = [part.flags() for part in parts]
    tp, fp = (np.concatenate([flag[i] for flag in flags]) for i in (0, 1))
    keys = (positions, places[:, 1], places[:, 0], *((places[:, 2],) if rule.listed_order else ()), file_rank)
    orders = {False: np.lexsort((*keys, -scores))}
    if any(rule.positives_last):
        orders[True] = np.lexsort((*keys, tp[:, 0, 0], -scores))
    areas = min(basis.mixed.shape[0], tp.shape[1])
    raised = np.zeros((basis.mixed.shape[0], basis.mixed.shape[1], len(rule.recall_points)))
    for a in range(areas):
        order = orders[a < len(rule.positives_last) and rule.positives_last[a]]
        group = np.searchsorted(-basis.scores, -scores[order])
        for t in range(basis.mixed.shape[1]):
            raised[a, t] = _column_raises(tp[order, a, t], fp[order, a, t], group, basis, a, t, rule)
    return raised


def _column_raises(tp: np.ndarray, fp: np.ndarray, group: np.ndarray, basis: TieBasis, a: int, t: int,
                   rule: CurveRule) -> np.ndarray:
    """One area range and threshold: the points of each mixed score's detections in order (from the
    positives above it), the highest precision among them, which every recall point reached at a
    higher score sees, and the highest from the point where a recall point is reached on."""
    raised = np.zeros(len(rule.recall_points))
    rows = np.flatnonzero(basis.mixed[a, t, group] & (tp | fp))  # an ignored detection repeats a point
    if not len(rows):
        return raised
    g, tp, fp = group[rows], tp[rows].astype(np.int64), fp[rows].astype(np.int64)
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    lengths = np.diff(np.r_[starts, len(g)])
    true_positives = np.cumsum(tp)
    false_positives = np.cumsum(fp)
    true_positives += np.repeat(basis.tp_before[a, t, g[starts]] - (true_positives - tp)[starts], lengths)
    false_positives += np.repeat(basis.fp_before[a, t, g[starts]] - (false_positives - fp)[starts], lengths)
    tps, fps = true_positives.astype(np.float64), false_positives.astype(np.float64)
    precision = tps / (fps + tps + rule.epsilon)  # pycocotools' own expression with its epsilon
    recall = tps / basis.ground_truth[a]
    highest = np.maximum.reduceat(precision, starts)
    group_scores = basis.scores[g[starts]]
    # A recall point first reached at a higher score than a group's sees all the group's points.
    after = np.maximum.accumulate(highest[::-1])[::-1]
    crossing = basis.crossing[a, t]
    first_after = np.searchsorted(-group_scores, -crossing, side='right')
    seen = first_after < len(starts)
    raised[seen] = after[first_after[seen]]
    # A recall point first reached within a group: from its point on.
    inside = np.searchsorted(-group_scores, -crossing)
    inside_found = inside < len(starts)
    inside_found[inside_found] = group_scores[inside[inside_found]] == crossing[inside_found]
    for point in np.flatnonzero(inside_found).tolist():
        start = starts[inside[point]]
        end = start + lengths[inside[point]]
        at = start + int(np.searchsorted(recall[start:end], rule.recall_points[point], side='left'))
        if at < end:
            raised[point] = max(raised[point], precision[at:end].max())
    return raised
