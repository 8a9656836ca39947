"""One prediction run's images of a bucket evaluated together, on columns: the AP counts (over all
areas and per area range), per-box outcomes, confidence counts and confusion cells of its images,
summed, in a few dozen numpy operations per bucket. tests/unit/test_bucket_evaluation.py holds it to
the one-image definition of tests/evaluation_reference.py and to pycocotools' twelve numbers."""
from collections import Counter
from typing import Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core.columns import concat_ranges, joined_codes, label_codes, packed_flags, recoded
from pipeline.core.error_types import (
    ERROR_COLUMNS,
    ERROR_TYPES,
    MISS,
    NO_ERROR,
    Classified,
    ErrorCounts,
    ErrorPoints,
    Ranks,
    classify,
    label_points,
)
from pipeline.core.evaluation import (
    COCO_MAX_DETS,
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
    in_pixels,
)
from pipeline.core.formats import COORDINATE_TOLERANCE
from pipeline.core.matching import GroupMatch, group_pairs, group_ranks, match_groups, rows_in_groups
from pipeline.core.schema import MATCHES_SCHEMA
from pipeline.core.tables import ImageSize
from pipeline.core.ties import TiedDetections
from pipeline.core.truth_formats import BucketTruth, GroundTruthImage


class ImageColumns(NamedTuple):
    """The evaluated images of one run in a bucket: each image's kept detections (its first line) and
    its ground truth, flattened; labels as codes into `label_names` (-1: no label)."""
    image_uris: List[str]
    label_names: List[str]
    det_image: np.ndarray  # (D,) the image of each detection
    det_label: np.ndarray  # (D,)
    det_scores: np.ndarray
    det_boxes: np.ndarray  # (D, 4)
    gt_image: np.ndarray
    gt_label: np.ndarray
    gt_boxes: np.ndarray  # (G, 4)
    gt_crowd: np.ndarray
    gt_position: np.ndarray  # (G,) position in its image's ground truth
    image_sizes: Optional[np.ndarray] = None  # (images, 2) width, height in pixels; NaN (or None): unknown
    gt_area: Optional[np.ndarray] = None  # (G,) the ground truth's own area of each box (COCO), NaN if none
    # Where each image is first in the ground truth: the file (a position in image_files) and place
    # of its first unit, which order the images as pycocotools does. None: as given.
    image_files: Optional[List[str]] = None
    image_file_codes: Optional[np.ndarray] = None  # (images,)
    image_places: Optional[np.ndarray] = None  # (images, 3): its first unit's Place
    predicted: Optional[np.ndarray] = None  # (images,) bool: the run has a line of the image; None: unknown

    def image_order(self) -> Tuple[List[str], np.ndarray, np.ndarray]:
        """(files, each image's file, each image's place): the images' order in the ground truth."""
        images = len(self.image_uris)
        if self.image_files is None or self.image_file_codes is None or self.image_places is None:
            unplaced = np.zeros(images, dtype=np.int64)
            return [''], np.zeros(images, dtype=np.int32), np.stack([unplaced, np.arange(images), unplaced], axis=1)
        return self.image_files, self.image_file_codes, self.image_places

    @classmethod
    def of(cls, images: Sequence[Tuple[str, Sequence[Optional[str]], np.ndarray, np.ndarray, GroundTruthImage]]):
        """From (image URI, detection labels, scores, boxes, ground truth) per image."""
        det_counts = [len(scores) for _, _, scores, _, _ in images]
        gt_counts = [len(truth.boxes) for *_, truth in images]
        boxes = [box for *_, truth in images for box in truth.boxes]
        det_labels = [label for _, labels, *_ in images for label in labels]
        names, codes = label_codes(det_labels + [box.label for box in boxes])
        return cls([uri for uri, *_ in images], names,
                   np.repeat(np.arange(len(images)), det_counts), codes[:len(det_labels)].astype(np.int64),
                   np.concatenate([np.zeros(0)] + [scores for _, _, scores, _, _ in images]),
                   np.concatenate([np.zeros((0, 4))] + [b.reshape(-1, 4) for _, _, _, b, _ in images]),
                   np.repeat(np.arange(len(images)), gt_counts), codes[len(det_labels):].astype(np.int64),
                   np.array([box.box for box in boxes], dtype=np.float64).reshape(-1, 4),
                   np.array([box.crowd for box in boxes], dtype=bool),
                   np.concatenate([np.zeros(0, dtype=np.int64)] + [np.arange(n) for n in gt_counts]),
                   np.array([truth.size or (np.nan, np.nan) for *_, truth in images], dtype=np.float64).reshape(-1, 2),
                   np.array([np.nan if box.area is None else box.area for box in boxes], dtype=np.float64))


def image_subset(columns: ImageColumns, images: np.ndarray) -> ImageColumns:
    """The columns of some of the images (increasing positions), renumbered in their order: what
    pycocotools is given when it evaluates those images alone (a slice)."""
    number = np.full(len(columns.image_uris), -1, dtype=np.int64)
    number[images] = np.arange(len(images))
    dets, gts = np.flatnonzero(number[columns.det_image] >= 0), np.flatnonzero(number[columns.gt_image] >= 0)

    def taken(values: Optional[np.ndarray], rows: np.ndarray) -> Optional[np.ndarray]:
        return None if values is None else values[rows]
    return columns._replace(
        image_uris=[columns.image_uris[i] for i in images.tolist()], det_image=number[columns.det_image[dets]],
        det_label=columns.det_label[dets], det_scores=columns.det_scores[dets], det_boxes=columns.det_boxes[dets],
        gt_image=number[columns.gt_image[gts]], gt_label=columns.gt_label[gts], gt_boxes=columns.gt_boxes[gts],
        gt_crowd=columns.gt_crowd[gts], gt_position=columns.gt_position[gts],
        image_sizes=taken(columns.image_sizes, images), gt_area=taken(columns.gt_area, gts),
        image_file_codes=taken(columns.image_file_codes, images), image_places=taken(columns.image_places, images),
        predicted=taken(columns.predicted, images))


class BucketEvaluation(NamedTuple):
    labels: Dict[str, LabelTotals]
    cells: Dict[Tuple[Optional[str], Optional[str]], int]
    matches: pa.Table
    tied: TiedDetections  # the evaluated detections, for pycocotools' order among equal scores
    tied_errors: Optional[TiedDetections]  # the error points (areas: ERROR_COLUMNS), for tidecv's order
    beyond_max_dets: int  # detections past the last cap of their image and label: not evaluated
    images_without_size: int  # evaluated images whose size is unknown: no area range for them

    def images_with_errors(self) -> List[str]:
        """The images with a false positive or a missed box at the evaluation IoU."""
        outcome = self.matches.column('outcome')
        return pc.unique(self.matches.column('image_uri').filter(pc.not_equal(outcome, TP))).to_pylist()


def evaluate_images(columns: ImageColumns, prediction_run: Optional[str], thresholds: Sequence[float],
                    eval_iou: float, eval_confidence: float, max_dets: Sequence[int] = COCO_MAX_DETS,
                    details: bool = True) -> BucketEvaluation:
    """`details`: also the per-box rows, the confusion cells and the error types (a slice of a run
    needs only its counts: without them, its rows are empty, its cells and errors none)."""
    det_boxes, gt_boxes = _pixel_boxes(columns)
    # Every overlapping detection and box of an image, made once: the matching by label, the error
    # types and the confusion cells each take theirs from them.
    # The ranks by score in the image, and in the image and label, likewise made once.
    image_pairs, rank = group_pairs(columns.det_image, columns.det_scores, columns.gt_image, det_boxes, gt_boxes,
                                    columns.gt_crowd)
    matched = _matched(columns, det_boxes, gt_boxes, image_pairs, thresholds, eval_iou, max_dets)
    classified = classify(columns.det_image, columns.det_label, columns.det_scores, det_boxes, columns.gt_image,
                          columns.gt_label, gt_boxes, columns.gt_crowd, image_pairs,
                          Ranks(rank, matched.rank_in_group)) if details else None
    labels, points = _label_totals(columns, matched, classified, len(thresholds), max_dets)
    matches = MATCHES_SCHEMA.empty_table() if classified is None else _matches_table(
        columns, prediction_run, matched, len(thresholds), rank, classified)
    cells = _confusion(columns, det_boxes, gt_boxes, columns.label_names, eval_iou, eval_confidence, image_pairs,
                       rank) if details else {}
    unsized = len(columns.image_uris) if columns.image_sizes is None else \
        int(np.isnan(columns.image_sizes).any(axis=1).sum())
    outcomes = matched.match.outcomes[:, None, :len(thresholds)]
    if matched.sized is not None:
        outcomes = np.concatenate([outcomes, matched.sized], axis=1)
    row_in_image = rows_in_groups(columns.det_image)  # equal scores: in row order
    # The evaluated detections that count somewhere (not ignored in every area range and threshold).
    counted = np.flatnonzero((columns.det_label >= 0) & ~matched.beyond & (outcomes != IGNORED).any(axis=(1, 2)))
    tied = _tied(columns, prediction_run, counted, columns.det_label[counted], outcomes[counted], row_in_image)
    tied_errors = None if classified is None else _tied(columns, prediction_run, *_error_points(points),
                                                        row_in_image)
    return BucketEvaluation(labels, cells, matches, tied, tied_errors, int(matched.beyond.sum()), unsized)


def detection_outcomes(columns: ImageColumns, eval_iou: float,
                       max_dets: Sequence[int] = COCO_MAX_DETS) -> Tuple[np.ndarray, np.ndarray]:
    """((D,) each detection's outcome at the evaluation IoU: TRUE_POSITIVE, FALSE_POSITIVE or IGNORED
    (beyond the caps, or on a crowd box); (G,) the regular boxes missed): what `matches` says of them,
    without the rest of the evaluation."""
    det_boxes, gt_boxes = _pixel_boxes(columns)
    image_pairs, _ = group_pairs(columns.det_image, columns.det_scores, columns.gt_image, det_boxes, gt_boxes,
                                 columns.gt_crowd)
    matched = _matched(columns, det_boxes, gt_boxes, image_pairs, (eval_iou,), eval_iou, max_dets)
    return matched.at_eval, matched.missed


class _Matched(NamedTuple):
    """A bucket's detections matched as pycocotools does, at AP's thresholds then the evaluation IoU."""
    match: GroupMatch  # over the area range "all"
    beyond: np.ndarray  # (D,) past the last maxDets cap of their image and label: not evaluated
    rank_in_group: np.ndarray  # (D,) in their image and label, by score
    ranges: Optional[Tuple[np.ndarray, np.ndarray]]  # the boxes and detections outside each area range
    sized: Optional[np.ndarray]  # (D, 3, T) the outcomes in the small, medium and large ranges
    at_eval: np.ndarray  # (D,) the outcome at the evaluation IoU (IGNORED beyond the caps)
    missed: np.ndarray  # (G,) regular boxes no detection took at the evaluation IoU
    best_regular: np.ndarray  # (D,) the best IoU with a regular box of the label
    best_detection: np.ndarray  # (G,) the best IoU with a detection of the label


def _matched(columns: ImageColumns, det_boxes: np.ndarray, gt_boxes: np.ndarray, image_pairs, thresholds,
             eval_iou: float, max_dets: Sequence[int]) -> _Matched:
    n_labels = max(len(columns.label_names), 1)
    det_group = np.where(columns.det_label >= 0, columns.det_image * n_labels + columns.det_label, -1)
    # Each image's detections of a label past the last cap are not evaluated at all (pycocotools).
    rank_in_group = group_ranks(det_group, columns.det_scores)
    beyond = (det_group >= 0) & (rank_in_group >= (max_dets[-1] or np.iinfo(np.int64).max))
    det_group[beyond] = -1
    # Columns: AP's thresholds and the evaluation IoU, over pycocotools' area range "all"; the small,
    # medium and large ranges follow when the images' sizes are known (_sized_outcomes).
    n_thresholds = len(thresholds)
    gt_group = columns.gt_image * n_labels + columns.gt_label
    ranges = _area_ranges(columns, det_boxes, gt_boxes)
    gt_ignored = det_ignored = None
    if ranges is not None and (ranges[0][:, 0].any() or ranges[1][:, 0].any()):  # above 1e10 square pixels
        gt_ignored, det_ignored = (np.repeat(out[:, :1], n_thresholds + 1, axis=1) for out in ranges)
    match = match_groups(det_group, columns.det_scores, det_boxes, gt_group, gt_boxes, columns.gt_crowd,
                         (*thresholds, eval_iou), gt_ignored, det_ignored, pairs=image_pairs, rank=rank_in_group)
    sized = None if ranges is None else _sized_outcomes(
        det_group, gt_group, columns, det_boxes, gt_boxes, ranges, thresholds, match)
    regular = ~columns.gt_crowd
    # fp: the best IoU with a regular box of its label; fn: the best with any detection of its label.
    best_regular = np.zeros(len(det_group))
    on_regular = regular[match.pairs.gt]
    np.maximum.at(best_regular, match.pairs.det[on_regular], match.pairs.iou[on_regular])
    best_detection = np.zeros(len(gt_group))
    np.maximum.at(best_detection, match.pairs.gt, match.pairs.iou)
    return _Matched(match, beyond, rank_in_group, ranges, sized, np.where(beyond, IGNORED, match.outcomes[:, -1]),
                    regular & match.box_free[:, -1], best_regular, best_detection)


def _label_totals(columns: ImageColumns, matched: _Matched, classified: Optional[Classified], n_thresholds: int,
                  max_dets: Sequence[int]) -> Tuple[Dict[str, LabelTotals], Dict[int, ErrorPoints]]:
    """What each label present in the bucket adds to its run's totals, and its error points by label
    code (none without `classified`). The flags of every detection are packed once; each label
    takes its rows of them."""
    det_code, gt_code, regular = columns.det_label, columns.gt_label, ~columns.gt_crowd
    evaluated = np.where(matched.beyond, -1, det_code)
    order = np.argsort(evaluated, kind='stable')  # each label's evaluated detections together, in row order
    bounds = np.searchsorted(evaluated[order], np.arange(len(columns.label_names) + 1))
    outcomes = matched.match.outcomes[:, :n_thresholds]
    tp = outcomes == TRUE_POSITIVE
    areas = _PackedOutcomes.of(outcomes)
    by_area = None if matched.sized is None or matched.ranges is None else [
        _PackedOutcomes.of(matched.sized[:, area]) for area in range(len(AREA_RANGES) - 1)]
    caps = [cap or np.iinfo(np.int64).max for cap in max_dets]
    labels, points = {}, {}
    for code in np.unique(np.r_[det_code[det_code >= 0], gt_code]).tolist():
        rows, boxes = order[bounds[code]:bounds[code + 1]], gt_code == code
        scores, rank = columns.det_scores[rows], matched.rank_in_group[rows]
        within = np.array([tp[rows[rank < cap]].sum(axis=0) for cap in caps],
                          dtype=np.int64).reshape(len(caps), n_thresholds)
        regular_boxes = int((boxes & regular).sum())
        counts = areas.counts(rows, scores, regular_boxes, within)
        sized = None if by_area is None or matched.ranges is None else tuple(
            packed.counts(rows, scores, int((boxes & regular & ~matched.ranges[0][:, area]).sum()))
            for area, packed in enumerate(by_area, start=1))
        at_eval = matched.at_eval[rows]
        tp_scores, fp_scores = scores[at_eval == TRUE_POSITIVE], scores[at_eval == FALSE_POSITIVE]
        grid_tp, grid_fp, grid_fn = grid_counts(tp_scores, fp_scores, regular_boxes)
        counted = at_eval != IGNORED  # the curve of the operating threshold, at --eval_iou
        if classified is not None:
            points[code] = label_points(code, classified, det_code, columns.det_scores)
        labels[columns.label_names[code]] = LabelTotals(
            counts, int((det_code == code).sum()), len(tp_scores), len(fp_scores), int((boxes & matched.missed).sum()),
            grid_tp, grid_fp, grid_fn, sized,
            errors=None if classified is None else _label_errors(code, classified, det_code, points[code],
                                                                 boxes & regular),
            operating=PrecisionCounts.of(scores[counted], at_eval[None, counted], regular_boxes))
    return labels, points


class _PackedOutcomes(NamedTuple):
    """The (D, T) outcomes of a bucket's detections in one area range, as the AP counts carry them:
    true and false positive flags packed (columns.packed_flags), and which detections count at all
    (a detection ignored at every threshold, outside the range, adds nothing)."""
    tp: np.ndarray  # (bytes, D)
    fp: np.ndarray
    counted: np.ndarray  # (D,)
    thresholds: int

    @classmethod
    def of(cls, outcomes: np.ndarray) -> '_PackedOutcomes':
        return cls(packed_flags(outcomes.T == TRUE_POSITIVE), packed_flags(outcomes.T == FALSE_POSITIVE),
                   (outcomes != IGNORED).any(axis=1), outcomes.shape[1])

    def counts(self, rows: np.ndarray, scores: np.ndarray, ground_truth: int,
               within: Optional[np.ndarray] = None) -> PrecisionCounts:
        """The AP counts of some detections (rows), whose scores are given."""
        kept = self.counted[rows]
        rows = rows[kept]
        return PrecisionCounts(self.thresholds, scores[kept], self.tp[:, rows], self.fp[:, rows], ground_truth,
                               within=within, packed=True)


def _tied(columns: ImageColumns, prediction_run: Optional[str], rows: np.ndarray, labels: np.ndarray,
          outcomes: np.ndarray, row_in_image: np.ndarray) -> TiedDetections:
    """Detections (rows, counted under `labels`, with their (rows, areas, thresholds) outcomes) with
    what equal scores are ordered by: their image's place in the ground truth and their row among its
    detections."""
    files, file_codes, places = columns.image_order()
    image = columns.det_image[rows]
    return TiedDetections.of(prediction_run, columns.label_names, labels, columns.det_scores[rows], files,
                             file_codes[image], places[image], row_in_image[rows], outcomes, TRUE_POSITIVE,
                             FALSE_POSITIVE)


# pycocotools' areaRng, in square pixels, bounds included: all, small, medium, large.
AREA_RANGES = (('all', 0.0, 1e5 ** 2), ('small', 0.0, 32.0 ** 2), ('medium', 32.0 ** 2, 96.0 ** 2),
               ('large', 96.0 ** 2, 1e5 ** 2))


def _sized_outcomes(det_group: np.ndarray, gt_group: np.ndarray, columns: ImageColumns, det_boxes: np.ndarray,
                    gt_boxes: np.ndarray, ranges, thresholds: Sequence[float], match) -> np.ndarray:
    """(D, 3, T): each detection's outcome in the small, medium and large ranges. A detection or box
    that overlaps nothing enough to be matched at any threshold is matched in no range either: a
    detection is a false positive in the ranges that hold it, ignored in the others. A group (image
    and label) whose other members all fall in the same ranges needs no matching of its own: in a
    range that holds them it matches as over all areas, in the others all is ignored. Only those
    members of the groups of mixed sizes are matched again, range by range."""
    gt_out, det_out = ranges
    n_thresholds = len(thresholds)
    all_outcomes = match.outcomes[:, :n_thresholds]
    det_in, gt_in = ~det_out[:, 1:], ~gt_out[:, 1:]
    det_bits, gt_bits = det_in @ np.array([1, 2, 4]), gt_in @ np.array([1, 2, 4])
    live = match.pairs.iou >= min(min(thresholds), 1 - 1e-10)
    det_live = np.zeros(len(det_group), dtype=bool)
    gt_live = np.zeros(len(gt_group), dtype=bool)
    det_live[match.pairs.det[live]] = True
    gt_live[match.pairs.gt[live]] = True
    keys, bits = np.r_[det_group, gt_group], np.r_[det_bits, gt_bits]
    present = (keys >= 0) & np.r_[det_live, gt_live]
    groups, inverse = np.unique(keys[present], return_inverse=True)
    low = np.full(len(groups), 8)
    high = np.full(len(groups), -1)
    np.minimum.at(low, inverse, bits[present])
    np.maximum.at(high, inverse, bits[present])
    mixed = groups[low != high]
    outcomes = np.where(det_in[:, :, None], all_outcomes[:, None, :], IGNORED).astype(np.int8)
    dets = np.flatnonzero(det_live & np.isin(det_group, mixed))
    boxes = np.flatnonzero(gt_live & np.isin(gt_group, mixed))
    if len(dets):
        again = match_groups(det_group[dets], columns.det_scores[dets], det_boxes[dets], gt_group[boxes],
                             gt_boxes[boxes], columns.gt_crowd[boxes], tuple(thresholds) * 3,
                             np.repeat(gt_out[boxes, 1:], n_thresholds, axis=1),
                             np.repeat(det_out[dets, 1:], n_thresholds, axis=1))
        outcomes[dets] = again.outcomes.reshape(len(dets), 3, n_thresholds)
    return outcomes


def _label_errors(code: int, classified: Classified, det_code: np.ndarray, points: ErrorPoints,
                  boxes: np.ndarray) -> ErrorCounts:
    """One label's error counts in a bucket: its points in each fix, its boxes and missed ones, and
    the types of its own errors."""
    missed = int((boxes & classified.missed).sum())
    own = classified.error[(det_code == code) & (classified.error != NO_ERROR)]
    return ErrorCounts.of(points, int(boxes.sum()), missed,
                          np.r_[own.astype(np.int64), np.full(missed, MISS, dtype=np.int64)])


def _error_points(points: Dict[int, ErrorPoints]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every label's error points as (their detections' rows, the label they count under, their
    (points, ERROR_COLUMNS, 1) outcomes): tidecv's order among equal scores reads them (`_tied`)."""
    codes = sorted(points)
    rows = np.concatenate([np.zeros(0, dtype=np.int64)] + [points[code].rows for code in codes])
    labels = np.concatenate([np.zeros(0, dtype=np.int64)] + [np.full(len(points[code].rows), code) for code in codes])
    tp, fp = (np.concatenate([np.zeros((ERROR_COLUMNS, 0), dtype=np.uint8)] + [getattr(points[code], name)
                                                                              for code in codes], axis=1)
              for name in ('tp', 'fp'))
    return rows, labels, np.where(tp.T, TRUE_POSITIVE, np.where(fp.T, FALSE_POSITIVE, IGNORED))[:, :, None]


def _area_ranges(columns: ImageColumns, det_boxes: np.ndarray, gt_boxes: np.ndarray):
    """((G, 4), (D, 4)): the boxes and detections outside each of AREA_RANGES, or None when no image's
    size is known. A box's area is its ground truth's own (COCO's `area`), else its pixel box's; a
    detection's, its pixel box's. An area not known (an image without size) is outside none."""
    if columns.image_sizes is None or np.isnan(columns.image_sizes).all():
        return None
    sized = ~np.isnan(columns.image_sizes).any(axis=1)

    def pixel_area(boxes, image):
        return np.where(sized[image], (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), np.nan)
    gt_area = pixel_area(gt_boxes, columns.gt_image)
    if columns.gt_area is not None:
        gt_area = np.where(np.isnan(columns.gt_area), gt_area, columns.gt_area)
    det_area = pixel_area(det_boxes, columns.det_image)
    lows, highs = (np.array([bound for bound in bounds]) for bounds in zip(*((lo, hi) for _, lo, hi in AREA_RANGES)))

    def outside(area):
        return (area[:, None] < lows[None, :]) | (area[:, None] > highs[None, :])
    return outside(gt_area), outside(det_area)


def _pixel_boxes(columns: ImageColumns) -> Tuple[np.ndarray, np.ndarray]:
    """The detections' and boxes' coordinates in pixels where their image's size is known."""
    if columns.image_sizes is None or np.isnan(columns.image_sizes).all():
        return columns.det_boxes, columns.gt_boxes
    return (in_pixels(columns.det_boxes, columns.image_sizes[columns.det_image]),
            in_pixels(columns.gt_boxes, columns.image_sizes[columns.gt_image]))


def _matches_table(columns: ImageColumns, prediction_run, matched: _Matched, eval_column: int, rank,
                   classified: Classified) -> pa.Table:
    """The rows of `matches`: every detection not ignored (tp or fp), then every missed regular box
    (`eval_column`: the match's column of the evaluation IoU)."""
    match, at_eval, missed = matched.match, matched.at_eval, matched.missed
    best_regular, best_detection = matched.best_regular, matched.best_detection
    dets = np.flatnonzero(at_eval != IGNORED)
    fns = np.flatnonzero(missed)
    tp = at_eval[dets] == TRUE_POSITIVE
    box = match.matched_box[dets, eval_column]
    gt_of_det = np.where(tp, box, 0)
    n_dets, n_fns = len(dets), len(fns)
    uris = pa.array(columns.image_uris, type=pa.string())
    det_nulls = np.r_[np.zeros(n_dets, dtype=bool), np.ones(n_fns, dtype=bool)]
    gt_nulls = np.r_[~tp, np.zeros(n_fns, dtype=bool)]
    outcome = np.r_[np.where(tp, 0, 1), np.full(n_fns, 2)]  # codes into (TP, FP, FN)
    label_code = np.r_[columns.det_label[dets], columns.gt_label[fns]]
    iou = np.r_[np.where(tp, match.matched_iou[dets, eval_column], best_regular[dets]), best_detection[fns]]

    def det_column(values):
        return pa.array(np.r_[values[dets], np.zeros(n_fns, dtype=values.dtype)], mask=det_nulls)

    def gt_column(values):
        return pa.array(np.r_[values[gt_of_det], values[fns]], mask=gt_nulls)
    arrays = [
        pa.repeat(pa.scalar(prediction_run, type=pa.string()), n_dets + n_fns),
        uris.take(pa.array(np.r_[columns.det_image[dets], columns.gt_image[fns]])),
        pa.array([TP, FP, FN], type=pa.string()).take(pa.array(outcome)),
        pa.array(columns.label_names, type=pa.string()).take(pa.array(np.maximum(label_code, 0), mask=label_code < 0)),
        det_column(columns.det_scores), det_column(rank).cast(pa.int32()), pa.array(iou),
        *(det_column(columns.det_boxes[:, i]) for i in range(4)),
        *(gt_column(columns.gt_boxes[:, i]) if len(columns.gt_boxes) else pa.nulls(n_dets + n_fns, pa.float64())
          for i in range(4)),
        (gt_column(columns.gt_position) if len(columns.gt_boxes) else pa.nulls(n_dets + n_fns, pa.int64())
         ).cast(pa.int32()),
        *_error_columns(columns, classified, dets, fns),
    ]
    return pa.Table.from_arrays(arrays, schema=MATCHES_SCHEMA)


def _error_columns(columns: ImageColumns, classified: Classified, dets: np.ndarray, fns: np.ndarray):
    """`error_type`, `error_label` and `error_iou` of the rows: the detections' (dets), then the missed
    boxes' (fns)."""
    names = pa.array(list(ERROR_TYPES), type=pa.string())
    codes = np.r_[classified.error[dets], np.where(classified.missed[fns], MISS, NO_ERROR)].astype(np.int64)
    box = classified.box[dets]
    box_label = np.full(len(dets), -1, dtype=np.int64)
    box_label[box >= 0] = columns.gt_label[box[box >= 0]]
    label = np.r_[box_label, np.full(len(fns), -1)]
    label_names = pa.array(columns.label_names, type=pa.string())
    iou = np.r_[classified.box_iou[dets], np.full(len(fns), np.nan)]
    return (names.take(pa.array(np.maximum(codes, 0), mask=codes < 0)),
            label_names.take(pa.array(np.maximum(label, 0), mask=label < 0)),
            pa.array(iou, mask=np.isnan(iou)))


def _confusion(columns: ImageColumns, det_boxes: np.ndarray, gt_boxes: np.ndarray, names, eval_iou: float,
               eval_confidence: float, image_pairs=None, image_rank: Optional[np.ndarray] = None):
    """The confusion cells: the detections at or above the confidence matched to any box of their
    image (greedy by score, at eval_iou). `image_rank`: each detection's rank in its image by score,
    its rank among the image's confident ones too (they all come first)."""
    det_code, gt_code = columns.det_label, columns.gt_label
    confident = columns.det_scores >= eval_confidence
    match = match_groups(np.where(confident, columns.det_image, -1), columns.det_scores, det_boxes,
                         columns.gt_image, gt_boxes, columns.gt_crowd, (eval_iou,), pairs=image_pairs,
                         rank=image_rank)
    outcome, box = match.outcomes[:, 0], match.matched_box[:, 0]
    # A cell's code: (true + 1) * (labels + 1) + predicted + 1, with -1 (background, or no label) as 0.
    # Only the cells that occur are counted (sparse): a dense matrix of 50,000 labels would not fit.
    side = len(names) + 1
    matched = confident & (outcome == TRUE_POSITIVE)
    unmatched = confident & (outcome == FALSE_POSITIVE)
    left = ~columns.gt_crowd & match.box_free[:, 0]
    pairs = ((gt_code[box[matched]], det_code[matched]),
             (np.full(int(unmatched.sum()), -1), det_code[unmatched]),
             (gt_code[left], np.full(int(left.sum()), -1)))
    codes = np.concatenate([np.zeros(0, dtype=np.int64)] + [(true.astype(np.int64) + 1) * side + predicted + 1
                                                            for true, predicted in pairs])
    cells, counts = np.unique(codes, return_counts=True)
    label_name = [None] + names  # code 0 reads as None: background, or a detection without a label
    return {(label_name[cell // side], label_name[cell % side]): count
            for cell, count in zip(cells.tolist(), counts.tolist())}


class RepeatedBoxes(NamedTuple):
    """Ground-truth boxes that repeat an earlier box of their image exactly (label, crowd flag and
    coordinates), and the images holding them: each counts as a box to find, as pycocotools counts it,
    though one detection can match only one of them."""
    boxes: int = 0
    images: int = 0


class Assembled(NamedTuple):
    """A bucket's ground truth and lines, put together: the evaluated images (of the ML use asked for,
    if any), their boxes as columns, and each run's first line of every image."""
    image_uris: List[str]
    gt_boxes: int
    other_ml_use: int  # images of the ground truth left out by --ml_use
    runs: Dict[Optional[str], Tuple[ImageColumns, RunImage]]
    image_sizes: Optional[np.ndarray] = None  # (images, 2): each evaluated image's size from its ground truth
    images_by_ml_use: Mapping[str, int] = {}  # the ground truth's images of each ML use given, --ml_use or not
    gt_past_edge: int = 0  # evaluated boxes past their image's edge by more than the tolerance (COCO's)
    gt_repeated: RepeatedBoxes = RepeatedBoxes()  # evaluated boxes repeating a box of their image


def _ranks(values: Sequence) -> np.ndarray:
    """Each value's rank among the distinct values (sorted), for ordering by it with numpy."""
    if not len(values):
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.array(values, dtype=object), return_inverse=True)[1].reshape(-1)


def _group_starts(sorted_keys: np.ndarray) -> np.ndarray:
    return np.r_[True, sorted_keys[1:] != sorted_keys[:-1]] if len(sorted_keys) else np.zeros(0, dtype=bool)


def assemble(truth: Sequence[BucketTruth], lines: Sequence[BucketLines], runs: Sequence[Optional[str]],
             ml_use: Optional[str], size_of: Optional[Callable[[str], Optional[ImageSize]]] = None) -> Assembled:
    """The columns `evaluate_images` takes, for each run, from the bucket's elements, in numpy: an
    image's boxes are its units' in (file, place) order; its ML use the first given; its size the
    ground truth's, else the run's line's, else `size_of` its URI (the run's own sizes: --image_sizes,
    --image_size; None: unknown); a run's line of an
    image is its first in (file, range, position) order."""
    names = sorted(set().union(*(part.label_names for part in truth), *(part.label_names for part in lines)))
    index = {name: code for code, name in enumerate(names)}
    uris = [uri for part in truth for uri in part.image_uris]
    part_of = np.repeat(np.arange(len(truth)), [len(part.image_uris) for part in truth])
    places = np.concatenate([np.zeros((0, 3), dtype=np.int64)] + [part.positions for part in truth])
    uri_rank = _ranks(uris)
    order = np.lexsort((places[:, 1], places[:, 0], _ranks([part.source_file for part in truth])[part_of], uri_rank))
    image_of = np.cumsum(_group_starts(uri_rank[order])) - 1  # of each unit in `order`
    n_images = int(image_of[-1]) + 1 if len(order) else 0
    image_use = _image_ml_uses([use for part in truth for use in part.ml_uses], order, image_of, n_images)
    keep = np.ones(n_images, dtype=bool) if ml_use is None else image_use == ml_use
    kept = keep[image_of]
    units, number = order[kept], (np.cumsum(keep) - 1)[image_of[kept]]  # evaluated images renumbered
    base = np.cumsum([0] + [len(part.label_codes) for part in truth])
    unit_start = np.concatenate([np.zeros(0, dtype=np.int64)] + [part.offsets[:-1] + base[p]
                                                                 for p, part in enumerate(truth)])
    unit_end = np.concatenate([np.zeros(0, dtype=np.int64)] + [part.offsets[1:] + base[p]
                                                               for p, part in enumerate(truth)])
    boxes = concat_ranges(unit_start[units], unit_end[units])
    gt_image = np.repeat(number, unit_end[units] - unit_start[units])
    first_units = units[_group_starts(number)]
    image_uris = [uris[unit] for unit in first_units.tolist()]
    image_order = ([part.source_file for part in truth], part_of[first_units], places[first_units])
    gt_areas = np.concatenate([np.zeros(0)] + [part.box_areas() for part in truth])[boxes]
    image_sizes = _first_sizes(np.concatenate([np.zeros((0, 2))] + [part.unit_sizes() for part in truth])[units],
                               number, len(image_uris))
    first_box = np.searchsorted(gt_image, np.arange(len(image_uris)))
    truth_columns = (
        gt_image,
        np.concatenate([np.zeros(0, dtype=np.int64)] + [recoded(part.label_codes, part.label_names, index)
                                                        for part in truth])[boxes],
        np.concatenate([np.zeros((0, 4))] + [part.boxes for part in truth])[boxes],
        np.concatenate([np.zeros(0, dtype=bool)] + [part.crowd for part in truth])[boxes],
        np.arange(len(boxes)) - first_box[gt_image])
    detections = (
        np.concatenate([np.zeros(0, dtype=np.int64)] + [recoded(part.label_codes, part.label_names, index)
                                                        for part in lines]),
        np.concatenate([np.zeros(0)] + [part.scores for part in lines]),
        np.concatenate([np.zeros((0, 4))] + [part.boxes.reshape(-1, 4) for part in lines]))
    by_run = {run: _run_columns(run, image_uris, names, lines, detections, truth_columns, image_sizes, gt_areas,
                                image_order, size_of) for run in runs}
    return Assembled(image_uris, len(boxes), n_images - int(keep.sum()), by_run, image_sizes,
                     dict(Counter(use for use in image_use.tolist() if use is not None)),
                     past_edge(truth_columns[2]), repeated_boxes(*truth_columns[:4]))


def past_edge(boxes: np.ndarray) -> int:
    """The (normalized) boxes reaching past their image's edge by more than the coordinate tolerance."""
    outside = (boxes < -COORDINATE_TOLERANCE) | (boxes > 1.0 + COORDINATE_TOLERANCE)
    return int(np.count_nonzero(outside.any(axis=1)))


def repeated_boxes(gt_image: np.ndarray, labels: np.ndarray, boxes: np.ndarray, crowd: np.ndarray) -> RepeatedBoxes:
    """The boxes equal to an earlier box of their image in label, crowd flag and coordinates: the same
    ground truth given twice (two files, or one document merged twice) makes one of each. Rows are
    hashed first (one sort of one column, where a sort of the seven takes eight times as long); rows
    of equal hash are then compared in full."""
    hashed = _row_hashes(gt_image, labels, crowd, boxes)
    order = np.argsort(hashed)
    equal = np.flatnonzero(hashed[order][1:] == hashed[order][:-1])
    if not len(equal):
        return RepeatedBoxes()
    rows = np.unique(np.r_[order[equal], order[equal + 1]])
    keys = (gt_image[rows], labels[rows], crowd[rows], *boxes[rows].T)
    order = np.lexsort(keys[::-1])
    same = np.ones(len(rows) - 1, dtype=bool)
    for key in keys:
        ordered = key[order]
        same &= ordered[1:] == ordered[:-1]
    repeats = rows[order[1:][same]]
    return RepeatedBoxes(len(repeats), len(np.unique(gt_image[repeats])))


_HASH_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)


def _row_hashes(*columns: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row of the columns (boxes: (rows, 4)), equal for equal rows (-0.0 as 0.0)."""
    hashed = np.zeros(len(columns[0]), dtype=np.uint64)
    for column in columns:
        values = (column + 0.0).view(np.uint64) if column.dtype.kind == 'f' else column.astype(np.uint64)
        for part in (values if values.ndim == 2 else values[:, None]).T:
            hashed ^= part
            hashed *= _HASH_MULTIPLIER
            hashed ^= hashed >> np.uint64(29)
    return hashed


def _image_ml_uses(uses: List[Optional[str]], order: np.ndarray, image_of: np.ndarray, images: int) -> np.ndarray:
    """Each image's ML use (objects; None: none given): the first its units give, in `order`."""
    if not any(use is not None for use in uses):
        return np.full(images, None, dtype=object)
    given = np.array([use is not None for use in uses], dtype=bool)[order]
    first_given = np.full(images, len(order))
    np.minimum.at(first_given, image_of, np.where(given, np.arange(len(order)), len(order)))
    return np.array(uses + [None], dtype=object)[np.r_[order, len(uses)][first_given]]


def _first_sizes(unit_sizes: np.ndarray, image_of_unit: np.ndarray, images: int) -> np.ndarray:
    """(images, 2): each image's size from the first of its units (in order) that gives one, NaN if none."""
    sizes = np.full((images, 2), np.nan)
    known = np.flatnonzero(~np.isnan(unit_sizes).any(axis=1))
    first_images, first = np.unique(image_of_unit[known], return_index=True)
    sizes[first_images] = unit_sizes[known[first]]
    return sizes


def _run_columns(run, image_uris: List[str], names: List[str], lines: Sequence[BucketLines], detections,
                 truth_columns, image_sizes: Optional[np.ndarray] = None, gt_areas: Optional[np.ndarray] = None,
                 image_order: Optional[Tuple[List[str], np.ndarray, np.ndarray]] = None,
                 size_of: Optional[Callable[[str], Optional[ImageSize]]] = None):
    """One run's columns: each evaluated image's first line of the run (none: every box missed), and
    what the run's lines add to its counts. `detections`: the labels, scores and boxes of all the
    bucket's lines, one part after the other."""
    evaluated = {uri: n for n, uri in enumerate(image_uris)}
    mine = [p for p, part in enumerate(lines) if part.prediction_run == run]
    all_uris = [uri for p in mine for uri in lines[p].image_uris]
    line_image = np.array([evaluated.get(uri, -1) for uri in all_uris], dtype=np.int64)
    row_base = np.cumsum([0] + [len(part.scores) for part in lines])
    line_start = np.concatenate([np.zeros(0, dtype=np.int64)] + [lines[p].offsets[:-1] + row_base[p] for p in mine])
    line_end = np.concatenate([np.zeros(0, dtype=np.int64)] + [lines[p].offsets[1:] + row_base[p] for p in mine])
    known = np.flatnonzero(line_image >= 0)
    positions = np.concatenate([np.zeros(0, dtype=np.int64)] + [lines[p].positions for p in mine])
    range_starts = np.concatenate([np.zeros(0, dtype=np.int64)] + [lines[p].range_starts for p in mine])
    files, file_codes = joined_codes([(lines[p].source_files, lines[p].file_codes) for p in mine])
    file_rank = _ranks(files)[file_codes]
    order = known[np.lexsort((positions[known], range_starts[known], file_rank[known], line_image[known]))]
    chosen = order[_group_starts(line_image[order])]  # each image's first line, by image
    rows = concat_ranges(line_start[chosen], line_end[chosen])
    labels, scores, boxes = detections
    # An image's size: its ground truth's (COCO), else the one the run knows for its evaluated line.
    sizes = np.full((len(image_uris), 2), np.nan) if image_sizes is None else image_sizes.copy()
    line_sizes = np.concatenate([np.zeros((0, 2))] + [lines[p].line_sizes() for p in mine])
    unsized = np.isnan(sizes[line_image[chosen]]).any(axis=1)
    sizes[line_image[chosen][unsized]] = line_sizes[chosen][unsized]
    if size_of is not None:  # the images no line of the run gives a size
        for image in np.flatnonzero(np.isnan(sizes).any(axis=1)).tolist():
            size = size_of(image_uris[image])
            if size is not None:
                sizes[image] = (size.width, size.height)
    columns = ImageColumns(image_uris, names, np.repeat(line_image[chosen], line_end[chosen] - line_start[chosen]),
                           labels[rows], scores[rows], boxes[rows], *truth_columns)._replace(image_sizes=sizes,
                                                                                              gt_area=gt_areas)
    missing = np.ones(len(image_uris), dtype=bool)
    missing[line_image[chosen]] = False
    columns = columns._replace(predicted=~missing)
    if image_order is not None:
        columns = columns._replace(image_files=image_order[0], image_file_codes=image_order[1],
                                   image_places=image_order[2])
    unknown = np.flatnonzero(line_image < 0).tolist()
    counts = RunImage(evaluated=len(image_uris), without_prediction=len(image_uris) - len(chosen),
                      predictions_without_ground_truth=len(line_image) - len(known),
                      other_lines=len(known) - len(chosen), detections=len(rows),
                      ground_truth_only=min((image_uris[i] for i in np.flatnonzero(missing).tolist()), default=None),
                      prediction_only=min((all_uris[i] for i in unknown), default=None))
    return columns, counts
