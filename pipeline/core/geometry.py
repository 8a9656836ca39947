"""Pure, vectorized box geometry over the columns of a batch (numpy arrays, one row per annotation):
thresholds, ranks, pixel boxes, and the post-processing steps (label and area filters, region of
interest, non-maximum suppression, top-K) with shapely 2's array functions."""
import functools
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import shapely


def threshold_mask(scores: np.ndarray, labels: Sequence[Optional[str]], score_threshold: float,
                   label_thresholds: Mapping[Any, float]) -> np.ndarray:
    """True where score >= the label's threshold (or the global one): the API's inclusive meaning."""
    if not label_thresholds:
        return scores >= score_threshold
    thresholds = np.fromiter((label_thresholds.get(label, score_threshold) for label in labels),
                             dtype=np.float64, count=len(labels))
    return scores >= thresholds


def order_by_rank(line_index: np.ndarray, scores: np.ndarray):
    """(order, rank): the rows sorted by line then score descending, ties kept in input order, and each
    sorted row's rank within its line (0 for the line's highest score)."""
    order = np.lexsort((np.arange(len(scores)), -scores, line_index))
    sorted_lines = line_index[order]
    first_of_line = np.searchsorted(sorted_lines, sorted_lines, side='left')
    rank = (np.arange(len(order)) - first_of_line).astype(np.int32)
    return order, rank


def to_pixels(normalized: np.ndarray, extent: np.ndarray) -> np.ndarray:
    """Normalized coordinates times the image's width (x) or height (y); NaN where the size is unknown."""
    return normalized * extent


def box_areas(boxes: np.ndarray) -> np.ndarray:
    """Normalized areas of (x_min, y_min, x_max, y_max) rows."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def parse_roi(wkt: str):
    """A valid, non-empty POLYGON or MULTIPOLYGON from WKT; ValueError saying what is wrong."""
    try:
        region = shapely.from_wkt(wkt.strip())
    except shapely.errors.GEOSException as exc:
        raise ValueError(f'not valid WKT: {exc}') from None
    if region is None or region.geom_type not in ('Polygon', 'MultiPolygon'):
        kind = 'nothing' if region is None else region.geom_type
        raise ValueError(f'expected a POLYGON or MULTIPOLYGON, got {kind}')
    if region.is_empty:
        raise ValueError('the region is empty')
    if not region.is_valid:
        raise ValueError(f'the polygon is not valid: {shapely.is_valid_reason(region)}')
    if shapely.area(shapely.intersection(region, shapely.box(0, 0, 1, 1))) <= 0:
        raise ValueError(f'the region lies wholly outside the image (normalized coordinates are 0 to '
                         f'1, bounds given: {", ".join(f"{v:g}" for v in region.bounds)}): every box '
                         f'would be dropped')
    return region


@functools.lru_cache(maxsize=8)
def region_of_interest(wkt: str):
    """The parsed and prepared region, once per worker rather than once per batch."""
    region = parse_roi(wkt)
    shapely.prepare(region)
    return region


def boxes_to_geometries(boxes: np.ndarray) -> np.ndarray:
    return shapely.box(boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3])


def roi_mask(boxes: np.ndarray, region, min_overlap: Optional[float]) -> np.ndarray:
    """True for boxes inside the region: any overlap (area > 0) by default, or at least `min_overlap`
    of the box's area. A zero-area box counts as inside when it touches the region."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=bool)
    shapely.prepare(region)  # a no-op when already prepared
    geometries = boxes_to_geometries(boxes)
    areas = box_areas(boxes)
    inside = np.zeros(len(boxes), dtype=bool)
    degenerate = areas <= 0
    inside[degenerate] = shapely.intersects(region, geometries[degenerate])
    solid = np.flatnonzero(~degenerate)
    # Boxes the region covers overlap it entirely: only those crossing its boundary need the
    # (costly) intersection polygon.
    covered = shapely.covers(region, geometries[solid])
    inside[solid[covered]] = True
    crossing = solid[~covered]
    crossing = crossing[shapely.intersects(region, geometries[crossing])]
    overlap = shapely.area(shapely.intersection(geometries[crossing], region)) / areas[crossing]
    inside[crossing] = overlap > 0 if min_overlap is None else overlap >= min_overlap
    return inside


# Lines with more boxes than this get a spatial index (shapely's STRtree) for NMS, in which only boxes
# of similar size meet (see _nms_one_large_line for the worst case). Smaller lines, nearly all of
# them, are suppressed together: their boxes padded into a (lines, boxes) grid, every pair's IoU at
# once, then one vectorized step per rank instead of a Python loop per line.
NMS_INDEX_MIN_BOXES = 64
# Grid cells (lines x boxes x boxes) per chunk of lines: bounds the memory of the pairwise arrays.
_NMS_CHUNK_CELLS = 1 << 21


def nms_mask(line_index: np.ndarray, scores: np.ndarray, boxes: np.ndarray, classes: np.ndarray,
             iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression within each line: in score order (ties by input order) a box is
    kept unless its IoU with an already kept box of the same class is above the threshold. A
    suppressed box suppresses nothing. `classes` holds one key per box (all equal: class-agnostic).
    IoU is computed from the coordinates (intersection width times height), the same on both paths."""
    keep = np.zeros(len(scores), dtype=bool)
    if len(scores) == 0:
        return keep
    order, rank = order_by_rank(line_index, scores)
    sorted_lines = line_index[order]
    _, line_position, line_sizes = np.unique(sorted_lines, return_inverse=True, return_counts=True)
    class_codes = np.unique(classes, return_inverse=True)[1].reshape(-1)
    codes = class_codes[order]
    small = line_sizes[line_position] <= NMS_INDEX_MIN_BOXES
    keep[order[small]] = _nms_small_lines(line_position[small], rank[small], boxes[order[small]],
                                          codes[small], iou_threshold)
    large = np.flatnonzero(~small)
    if large.size:
        bounds = np.flatnonzero(np.diff(sorted_lines[large])) + 1
        for rows in np.split(order[large], bounds):
            keep[rows] = _nms_one_large_line(boxes[rows], class_codes[rows], iou_threshold)
    return keep


def _pairwise_iou(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """IoU of boxes (..., 4) broadcast against each other; 0 where the union is empty."""
    width = np.minimum(first[..., 2], second[..., 2]) - np.maximum(first[..., 0], second[..., 0])
    height = np.minimum(first[..., 3], second[..., 3]) - np.maximum(first[..., 1], second[..., 1])
    overlap = np.clip(width, 0, None) * np.clip(height, 0, None)
    union = ((first[..., 2] - first[..., 0]) * (first[..., 3] - first[..., 1])
             + (second[..., 2] - second[..., 0]) * (second[..., 3] - second[..., 1]) - overlap)
    return np.divide(overlap, union, out=np.zeros_like(overlap), where=union > 0)


def _nms_small_lines(line_position: np.ndarray, rank: np.ndarray, boxes: np.ndarray,
                     codes: np.ndarray, iou_threshold: float) -> np.ndarray:
    """NMS over many short lines at once; rows come sorted by line and rank (score order)."""
    if len(rank) == 0:
        return np.zeros(0, dtype=bool)
    lines, line_row = np.unique(line_position, return_inverse=True)
    width = int(rank.max()) + 1
    grid = np.zeros((len(lines), width, 4))
    grid_codes = np.full((len(lines), width), -1)
    present = np.zeros((len(lines), width), dtype=bool)
    grid[line_row, rank], grid_codes[line_row, rank], present[line_row, rank] = boxes, codes, True
    keep = present.copy()
    chunk = max(1, _NMS_CHUNK_CELLS // (width * width))
    for start in range(0, len(lines), chunk):
        part = slice(start, start + chunk)
        cells = grid[part]
        # suppresses[l, i, j]: box i of line l would suppress box j if i is kept.
        suppresses = ((_pairwise_iou(cells[:, :, None, :], cells[:, None, :, :]) > iou_threshold)
                      & (grid_codes[part][:, :, None] == grid_codes[part][:, None, :]))
        kept = keep[part]
        for j in range(1, width):
            kept[:, j] &= ~np.any(kept[:, :j] & suppresses[:, :j, j], axis=1)
    return keep[line_row, rank]


# Boxes of a long line resolved together: a block's pairwise IoU at once, then one bulk query of the
# spatial index for the boxes the block keeps.
_NMS_BLOCK = 256
# Size classes per log(1/t): finer classes leave fewer pairs of boxes that cannot reach the threshold
# but need more queries. Low thresholds (log(1/t) >= 1) leave wide bands, so they get more classes.
_SIZE_CLASSES_PER_BAND = {False: 2, True: 4}


def _nms_one_large_line(boxes: np.ndarray, codes: np.ndarray, iou_threshold: float) -> np.ndarray:
    """NMS over one long line's boxes, given in score order, in blocks.

    Two boxes' IoU is bounded by their sizes alone (see `_iou_bound`), so each box gets a size class
    (log width, log height) and a kept box is compared only with the boxes of the classes that can
    reach the threshold with its own: crossing strips or a tiny box on a large one never meet. The
    index holds the undecided boxes and is rebuilt once half of them are decided, so a kept box does
    not meet, again and again, boxes already suppressed.
    """
    keep = np.ones(len(boxes), dtype=bool)  # a box without area has IoU 0 with every box: kept
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    solid = np.flatnonzero((widths > 0) & (heights > 0))
    if iou_threshold >= 1 or solid.size < 2:
        return keep
    index = _SizeClassIndex(boxes[solid], codes[solid], iou_threshold)
    start = 0
    while True:
        block = np.flatnonzero(index.undecided[start:])[:_NMS_BLOCK] + start
        if block.size == 0:
            break
        index.undecided[block] = False
        block_kept = block[_greedy_within(index.boxes[block], index.codes[block], iou_threshold)]
        index.kept[block_kept] = True
        index.suppress_by(block_kept)
        start = block[-1] + 1
    keep[solid] = index.kept
    return keep


def _iou_bound(size_gap_x: np.ndarray, size_gap_y: np.ndarray, nested: np.ndarray) -> np.ndarray:
    """The highest IoU two boxes can have when their log widths differ by `size_gap_x` and their log
    heights by `size_gap_y` (both >= 0): the overlap is at most the smaller width times the smaller
    height. One box larger both ways ("nested") gives exp(-(gx + gy)); one wider, the other taller
    ("crossing") gives 1 / (exp(gx) + exp(gy) - 1). Equal when either gap is 0."""
    crossing = 1 / (np.exp(size_gap_x) + np.exp(size_gap_y) - 1)
    return np.where(nested, np.exp(-(size_gap_x + size_gap_y)), crossing)


class _SizeClassIndex:
    """The solid boxes of one line, in score order, in a spatial index by size class: each class is
    moved to its own place of the plane (two units apart), so one query meets one class only."""

    def __init__(self, boxes: np.ndarray, codes: np.ndarray, iou_threshold: float):
        self.boxes, self.codes, self.threshold = boxes, codes, iou_threshold
        self.kept = np.zeros(len(boxes), dtype=bool)
        self.undecided = np.ones(len(boxes), dtype=bool)
        self.log_sizes = np.log(np.column_stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]]))
        self.classes, self.reach = self._size_classes(iou_threshold)
        self._build()

    def _size_classes(self, iou_threshold: float):
        """(n, 2) class per box, and the class offsets whose boxes can reach the threshold."""
        if iou_threshold <= 0:
            self.span = 0
            return np.zeros((len(self.boxes), 2), dtype=np.int64), np.zeros((1, 2), dtype=np.int64)
        per_band = _SIZE_CLASSES_PER_BAND[bool(np.log(1 / iou_threshold) >= 1)]
        band = np.log(1 / iou_threshold) / per_band
        sizes = self.log_sizes
        classes = np.floor(sizes / band).astype(np.int64)
        span = per_band + 2
        steps = np.arange(-span, span + 1)
        offsets = np.array([(dx, dy) for dx in steps for dy in steps], dtype=np.int64)
        # Two boxes whose classes are d apart differ by more than (|d| - 1) bands in log size.
        gaps = np.clip(np.abs(offsets) - 1, 0, None) * band
        nested = offsets[:, 0] * offsets[:, 1] > 0
        reachable = _iou_bound(gaps[:, 0], gaps[:, 1], nested) >= iou_threshold * (1 - 1e-9)
        self.span = span
        return classes - classes.min(axis=0) + span, offsets[reachable]

    def _build(self) -> None:
        """The index over the undecided boxes (the kept ones never need to be found again)."""
        self.members = np.flatnonzero(self.undecided)
        self.tree = shapely.STRtree(self._placed(self.members, self.classes[self.members]))
        self.occupied, member_class = np.unique(self._class_key(self.classes[self.members]), return_inverse=True)
        # The log sizes each occupied class actually spans: tighter than its cell of the grid.
        self.lowest = np.full((len(self.occupied), 2), np.inf)
        self.highest = np.full((len(self.occupied), 2), -np.inf)
        np.minimum.at(self.lowest, member_class.reshape(-1), self.log_sizes[self.members])
        np.maximum.at(self.highest, member_class.reshape(-1), self.log_sizes[self.members])

    def _class_key(self, classes: np.ndarray) -> np.ndarray:
        """One integer per class, for classes up to `span` beyond the highest one."""
        return classes[:, 0] * (int(self.classes[:, 1].max()) + 2 * self.span + 1) + classes[:, 1]

    def _placed(self, rows: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """Boxes (normalized, within [0, 1]) moved to the place of a class. Both sides of a query move
        by the same offset and rounding keeps the order of coordinates, so overlaps are kept."""
        offset_x, offset_y = 2.0 * classes[:, 0], 2.0 * classes[:, 1]
        boxes = self.boxes[rows]
        return shapely.box(boxes[:, 0] + offset_x, boxes[:, 1] + offset_y,
                           boxes[:, 2] + offset_x, boxes[:, 3] + offset_y)

    def candidates(self, kept: np.ndarray):
        """(source, target): the undecided boxes of the same class code that overlap a kept box and
        whose size class can reach the threshold with it."""
        source = np.repeat(kept, len(self.reach))
        target_classes = self.classes[source] + np.tile(self.reach, (len(kept), 1))
        keys = self._class_key(target_classes)
        at = np.minimum(np.searchsorted(self.occupied, keys), len(self.occupied) - 1)
        present = self.occupied[at] == keys
        if self.threshold > 0:  # from the kept box's own size to the sizes the class spans, exactly
            sizes = self.log_sizes[source]
            gaps = np.maximum(np.maximum(self.lowest[at] - sizes, sizes - self.highest[at]), 0)
            crossing = np.zeros(len(gaps), dtype=bool)  # the crossing bound: the higher of the two
            present &= _iou_bound(gaps[:, 0], gaps[:, 1], crossing) >= self.threshold * (1 - 1e-9)
        source, target_classes = source[present], target_classes[present]
        query_index, member = self.tree.query(self._placed(source, target_classes))
        source, target = source[query_index], self.members[member]
        wanted = self.undecided[target] & (self.codes[source] == self.codes[target])
        return source[wanted], target[wanted]

    def suppress_by(self, kept: np.ndarray) -> None:
        """Marks as decided (suppressed) every undecided box that one of `kept` suppresses."""
        if kept.size == 0:
            return
        source, target = self.candidates(kept)
        suppressed = target[_pairwise_iou(self.boxes[source], self.boxes[target]) > self.threshold]
        self.undecided[suppressed] = False
        decided = len(self.members) - np.count_nonzero(self.undecided[self.members])
        if 2 * decided >= len(self.members) and self.undecided.any():
            self._build()


def _greedy_within(boxes: np.ndarray, codes: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS among a few boxes in score order: the keep-mask."""
    suppresses = ((_pairwise_iou(boxes[:, None, :], boxes[None, :, :]) > iou_threshold)
                  & (codes[:, None] == codes[None, :]))
    kept = np.ones(len(boxes), dtype=bool)
    for j in range(1, len(boxes)):
        kept[j] = not np.any(kept[:j] & suppresses[:j, j])
    return kept


def top_k_mask(line_index: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """True for the k highest scores of each line (ties by input order)."""
    keep = np.zeros(len(scores), dtype=bool)
    order, rank = order_by_rank(line_index, scores)
    keep[order[rank < k]] = True
    return keep


def polygon_wkt(x_min: pa.Array, y_min: pa.Array, x_max: pa.Array, y_max: pa.Array) -> pa.Array:
    """Boxes as WKT POLYGONs, at full double precision: Arrow writes each number in its shortest form
    that reads back to the same double (GEOS's writer keeps 16 digits, which does not always)."""
    x1, y1, x2, y2 = (pc.cast(column, pa.string()) for column in (x_min, y_min, x_max, y_max))
    return pc.binary_join_element_wise(
        'POLYGON ((', x1, ' ', y1, ', ', x2, ' ', y1, ', ', x2, ' ', y2, ', ', x1, ' ', y2, ', ',
        x1, ' ', y1, '))', '')
