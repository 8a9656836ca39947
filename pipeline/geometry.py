"""Pure, vectorized box geometry over the columns of a batch (numpy arrays, one row per annotation):
thresholds, ranks, pixel boxes, and the post-processing steps (label and area filters, region of
interest, non-maximum suppression, top-K) with shapely 2's array functions."""
import functools
from typing import Mapping, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import shapely


def threshold_mask(scores: np.ndarray, labels: Sequence[Optional[str]], score_threshold: float,
                   label_thresholds: Mapping[str, float]) -> np.ndarray:
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


# Lines with more boxes than this get a spatial index (shapely's STRtree) for NMS, so a line of
# 100,000 boxes never compares every pair. Smaller lines, nearly all of them, are suppressed together:
# their boxes padded into a (lines, boxes) grid, every pair's IoU at once, then one vectorized step
# per rank instead of a Python loop per line.
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


def _nms_one_large_line(boxes: np.ndarray, codes: np.ndarray, iou_threshold: float) -> np.ndarray:
    """NMS over one long line's boxes, given in score order, with a spatial index for candidates."""
    count = len(boxes)
    keep = np.zeros(count, dtype=bool)
    decided = np.zeros(count, dtype=bool)
    tree = shapely.STRtree(boxes_to_geometries(boxes))
    for i in range(count):
        if decided[i]:
            continue
        keep[i] = decided[i] = True
        candidates = tree.query(shapely.box(*boxes[i]))
        candidates = candidates[~decided[candidates] & (codes[candidates] == codes[i])]
        if candidates.size:
            decided[candidates[_pairwise_iou(boxes[i], boxes[candidates]) > iou_threshold]] = True
    return keep


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
