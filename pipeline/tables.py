"""Pure assembly of one batch of parsed lines into Arrow tables for `detections` and `images`.

Everything per annotation happens on columns (numpy, pyarrow), never in a Python loop per detection.
"""
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa

from pipeline import geometry
from pipeline.formats import Prediction
from pipeline.options import Settings
from pipeline.schema import DETECTIONS_SCHEMA, IMAGES_SCHEMA


class ImageSize(NamedTuple):
    width: int
    height: int
    source: str  # manifest, probe or fixed


class BatchTables(NamedTuple):
    detections: pa.Table
    images: pa.Table
    counts: dict


def build_tables(predictions: Sequence[Prediction], sizes: Sequence[Optional[ImageSize]],
                 source_file: str, prediction_run: Optional[str], settings: Settings) -> BatchTables:
    """One `images` row per prediction and one `detections` row per kept annotation."""
    n_images = len(predictions)
    counts_per_line = np.fromiter((len(p.scores) for p in predictions), dtype=np.int64, count=n_images)
    line_index = np.repeat(np.arange(n_images), counts_per_line)
    labels: List[Optional[str]] = []
    label_ids: List[Optional[str]] = []
    scores_list: List[float] = []
    boxes_list: List[Tuple[float, float, float, float]] = []
    for prediction in predictions:
        labels.extend(prediction.labels)
        label_ids.extend(prediction.label_ids)
        scores_list.extend(prediction.scores)
        boxes_list.extend(prediction.boxes)
    scores = np.asarray(scores_list, dtype=np.float64)
    boxes = np.asarray(boxes_list, dtype=np.float64).reshape(-1, 4)

    keep = geometry.threshold_mask(scores, labels, settings.score_threshold, settings.label_thresholds)
    kept = np.flatnonzero(keep)
    order, rank = geometry.order_by_rank(line_index[kept], scores[kept])
    rows = kept[order]
    row_line = line_index[rows]

    widths = np.array([s.width if s else np.nan for s in sizes], dtype=np.float64)
    heights = np.array([s.height if s else np.nan for s in sizes], dtype=np.float64)
    row_width, row_height = widths[row_line], heights[row_line]
    size_unknown = np.isnan(row_width)

    image_uri = pa.array([p.image_uri for p in predictions], type=pa.string())
    source_format = pa.array([p.source_format for p in predictions], type=pa.string())
    row_boxes = boxes[rows]
    detections = pa.Table.from_arrays([
        image_uri.take(row_line),
        pa.array(_take(labels, rows), type=pa.string()),
        pa.array(_take(label_ids, rows), type=pa.string()),
        pa.array(scores[rows]),
        pa.array(rank),
        pa.array(row_boxes[:, 0]),
        pa.array(row_boxes[:, 1]),
        pa.array(row_boxes[:, 2]),
        pa.array(row_boxes[:, 3]),
        _nullable_int32(row_width, size_unknown),
        _nullable_int32(row_height, size_unknown),
        pa.array(geometry.to_pixels(row_boxes[:, 0], row_width), mask=size_unknown),
        pa.array(geometry.to_pixels(row_boxes[:, 1], row_height), mask=size_unknown),
        pa.array(geometry.to_pixels(row_boxes[:, 2], row_width), mask=size_unknown),
        pa.array(geometry.to_pixels(row_boxes[:, 3], row_height), mask=size_unknown),
        _repeat(source_file, len(rows)),
        source_format.take(row_line),
        _repeat(prediction_run, len(rows)),
    ], schema=DETECTIONS_SCHEMA)

    detection_count = np.bincount(row_line, minlength=n_images).astype(np.int32)
    max_score = np.full(n_images, np.nan)
    first_rows = rank == 0
    max_score[row_line[first_rows]] = scores[rows][first_rows]
    image_size_unknown = np.isnan(widths)
    images = pa.Table.from_arrays([
        image_uri,
        _repeat(source_file, n_images),
        source_format,
        _repeat(prediction_run, n_images),
        pa.array(counts_per_line.astype(np.int32)),
        pa.array(detection_count),
        pa.array(max_score, mask=np.isnan(max_score)),
        _nullable_int32(widths, image_size_unknown),
        _nullable_int32(heights, image_size_unknown),
        pa.array([s.source if s else None for s in sizes], type=pa.string()),
    ], schema=IMAGES_SCHEMA)

    counts = {
        'images_written': n_images,
        'detections_in': int(len(scores)),
        'detections_kept': int(len(rows)),
        'detections_below_threshold': int(len(scores) - len(kept)),
        'images_without_size': int(image_size_unknown.sum()),
    }
    for size in sizes:
        if size:
            key = f'images_size_from_{size.source}'
            counts[key] = counts.get(key, 0) + 1
    return BatchTables(detections, images, counts)


def _take(values: List[Optional[str]], rows: np.ndarray) -> List[Optional[str]]:
    return [values[i] for i in rows.tolist()]


def _repeat(value: Optional[str], count: int) -> pa.Array:
    return pa.array([value] * count, type=pa.string())


def _nullable_int32(values: np.ndarray, unknown: np.ndarray) -> pa.Array:
    return pa.array(np.where(unknown, 0, values).astype(np.int32), mask=unknown)
