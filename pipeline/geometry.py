"""Pure, vectorized box arithmetic over the columns of a batch (numpy arrays, one row per annotation)."""
from typing import Mapping, Optional, Sequence

import numpy as np


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
