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


def _nms_one_large_line(boxes: np.ndarray, codes: np.ndarray, iou_threshold: float) -> np.ndarray:
    """NMS over one long line's boxes, given in score order, in blocks.

    Candidates come from a spatial index in which boxes of different sizes never meet: IoU > t needs
    both the widths and the heights of two boxes within a factor t^2 of each other (IoU <= sqrt(
    (w_small / w_large) * (h_small / h_large))), so each box sits in a tile of the plane chosen by
    log(width) and log(height) in bands of 2 log(1/t), and is compared with the boxes of its own and
    the neighbouring tiles only. Crossing strips, a horizontal and a vertical one, never meet. The
    worst case is the number of boxes of similar size overlapping each kept box, not every pair.
    """
    count = len(boxes)
    keep = np.zeros(count, dtype=bool)
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    solid = np.flatnonzero((widths > 0) & (heights > 0))
    keep[:] = True  # a box without area has IoU 0 with every box: it is never suppressed
    if iou_threshold >= 1 or solid.size < 2:
        return keep
    tiles = _size_tiles(widths[solid], heights[solid], iou_threshold)
    line_boxes, line_codes = boxes[solid], codes[solid]
    tree = shapely.STRtree(_boxes_in_tiles(line_boxes, tiles))
    kept = np.zeros(len(solid), dtype=bool)
    undecided = np.ones(len(solid), dtype=bool)
    start = 0
    while True:
        block = np.flatnonzero(undecided[start:])[:_NMS_BLOCK] + start
        if block.size == 0:
            break
        undecided[block] = False
        block_kept = block[_greedy_within(line_boxes[block], line_codes[block], iou_threshold)]
        kept[block_kept] = True
        _suppress_later(block_kept, line_boxes, line_codes, tiles, tree, undecided, iou_threshold)
        start = block[-1] + 1
    keep[solid] = kept
    return keep


def _size_tiles(widths: np.ndarray, heights: np.ndarray, iou_threshold: float) -> np.ndarray:
    """(n, 2) tile indices from log(width) and log(height) in bands of 2 log(1/t) (widened a hair
    against rounding); one tile for all when t is 0."""
    if iou_threshold <= 0:
        return np.zeros((len(widths), 2), dtype=np.int64)
    band = 2 * np.log(1 / iou_threshold) * (1 + 1e-9) + 1e-12
    tiles = np.floor(np.column_stack([np.log(widths), np.log(heights)]) / band).astype(np.int64)
    return tiles - tiles.min(axis=0)


def _boxes_in_tiles(boxes: np.ndarray, tiles: np.ndarray) -> np.ndarray:
    """Boxes (normalized, within [0, 1]) moved into their tiles, two units apart: apart tiles never
    touch. Both sides of a comparison move by the same offset, so overlaps are kept exactly."""
    offset_x, offset_y = 2.0 * tiles[:, 0], 2.0 * tiles[:, 1]
    return shapely.box(boxes[:, 0] + offset_x, boxes[:, 1] + offset_y,
                       boxes[:, 2] + offset_x, boxes[:, 3] + offset_y)


_NEIGHBOURS = np.array([(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)], dtype=np.int64)


def _suppress_later(kept: np.ndarray, boxes: np.ndarray, codes: np.ndarray, tiles: np.ndarray,
                    tree, undecided: np.ndarray, iou_threshold: float) -> None:
    """Marks as decided (suppressed) every undecided box that a kept box suppresses."""
    if kept.size == 0:
        return
    source = np.repeat(kept, len(_NEIGHBOURS))
    shifted = tiles[source] + np.tile(_NEIGHBOURS, (len(kept), 1))
    queries = _boxes_in_tiles(boxes[source], shifted)
    query_index, target = tree.query(queries, predicate='intersects')
    source = source[query_index]
    wanted = undecided[target] & (codes[source] == codes[target])
    source, target = source[wanted], target[wanted]
    undecided[target[_pairwise_iou(boxes[source], boxes[target]) > iou_threshold]] = False


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
