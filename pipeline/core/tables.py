"""Pure assembly of one batch of parsed lines into Arrow tables for `detections` and `images`.

Everything per annotation happens on columns (numpy, pyarrow), never in a Python loop per detection.
"""
from typing import List, NamedTuple, Optional, Sequence

import numpy as np
import pyarrow as pa

from pipeline.config.settings import PostprocessingSettings
from pipeline.core import counts as names
from pipeline.core import geometry
from pipeline.core.counts import Counts
from pipeline.core.formats import XXYY, Prediction
from pipeline.core.postprocessing import select_detections
from pipeline.core.schema import DETECTIONS_SCHEMA, IMAGES_SCHEMA


class ImageSize(NamedTuple):
    width: int
    height: int
    source: str  # manifest, probe or fixed


class BatchTables(NamedTuple):
    detections: pa.Table
    images: pa.Table
    counts: Counts


def build_tables(predictions: Sequence[Prediction], sizes: Sequence[Optional[ImageSize]],
                 source_file: str, prediction_run: Optional[str],
                 postprocessing: PostprocessingSettings) -> BatchTables:
    """One `images` row per prediction and one `detections` row per kept annotation. Annotations
    the parser dropped below the score floor count as removed by the threshold step."""
    n_images = len(predictions)
    listed_per_line = np.fromiter((len(p.scores) for p in predictions), dtype=np.int64, count=n_images)
    line_index = np.repeat(np.arange(n_images), listed_per_line)
    labels: List[Optional[str]] = []
    label_ids: List[Optional[str]] = []
    scores_list: List[float] = []
    coordinates: List[float] = []
    dropped_list: List[float] = []
    for prediction in predictions:
        labels.extend(prediction.labels)
        label_ids.extend(prediction.label_ids)
        scores_list.extend(prediction.scores)
        coordinates.extend(prediction.coordinates)
        dropped_list.extend(prediction.dropped_scores)
    # + 0.0 turns a -0.0 from the input into 0.0 (it would be written as "-0" in WKT and Parquet).
    scores = np.array(scores_list, dtype=np.float64) + 0.0
    xxyy = np.repeat(np.fromiter((p.coordinate_order == XXYY for p in predictions), dtype=bool, count=n_images),
                     listed_per_line)
    boxes = normalized_boxes(np.array(coordinates, dtype=np.float64).reshape(-1, 4), xxyy)
    dropped = np.array(dropped_list, dtype=np.float64)
    counts_per_line = listed_per_line + np.fromiter(
        (len(p.dropped_scores) for p in predictions), dtype=np.int64, count=n_images)

    selection = select_detections(line_index, scores, boxes, labels, label_ids, postprocessing)
    order, rank = geometry.order_by_rank(line_index[selection.kept], scores[selection.kept])
    rows = selection.kept[order]
    row_line = line_index[rows]

    widths = np.array([s.width if s else np.nan for s in sizes], dtype=np.float64)
    heights = np.array([s.height if s else np.nan for s in sizes], dtype=np.float64)
    row_width, row_height = widths[row_line], heights[row_line]
    size_unknown = np.isnan(row_width)

    image_uri = pa.array([p.image_uri for p in predictions], type=pa.string())
    source_format = pa.array([p.source_format for p in predictions], type=pa.string())
    row_boxes = boxes[rows]
    row_area = geometry.box_areas(row_boxes)
    px_boxes = [pa.array(geometry.to_pixels(row_boxes[:, i], extent), mask=size_unknown)
                for i, extent in enumerate((row_width, row_height, row_width, row_height))]
    detections = pa.Table.from_arrays([
        image_uri.take(row_line),
        pa.array(labels, type=pa.string()).take(rows),
        pa.array(label_ids, type=pa.string()).take(rows),
        pa.array(scores[rows]),
        pa.array(rank),
        pa.array(row_boxes[:, 0]),
        pa.array(row_boxes[:, 1]),
        pa.array(row_boxes[:, 2]),
        pa.array(row_boxes[:, 3]),
        _nullable_int32(row_width, size_unknown),
        _nullable_int32(row_height, size_unknown),
        *px_boxes,
        _repeat(source_file, len(rows)),
        source_format.take(row_line),
        _repeat(prediction_run, len(rows)),
        pa.array(row_area),
        pa.array(row_area * row_width * row_height, mask=size_unknown),
        geometry.polygon_wkt(*px_boxes),
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
        pa.array(np.bincount(line_index[selection.suppressed], minlength=n_images).astype(np.int32)),
    ], schema=IMAGES_SCHEMA)

    removed = dict(selection.removed, threshold=selection.removed['threshold'] + len(dropped))
    counts = Counts({
        names.IMAGES_WRITTEN: n_images,
        names.DETECTIONS_IN: int(len(scores) + len(dropped)),
        names.DETECTIONS_KEPT: int(len(rows)),
        names.IMAGES_WITHOUT_SIZE: int(image_size_unknown.sum()),
        **{names.removed_by(step): count for step, count in removed.items()},
    })
    counts.add_scores('all', np.concatenate([scores, dropped]))
    counts.add_scores('kept', scores[rows])
    for item in detections.column('label').value_counts().to_pylist():
        counts.kept_by_label[names.NO_LABEL if item['values'] is None else item['values']] += item['counts']
    counts.scalars.update(names.size_from(size.source) for size in sizes if size)
    return BatchTables(detections, images, counts)


def normalized_boxes(raw: np.ndarray, xxyy: np.ndarray) -> np.ndarray:
    """Rows of 4 coordinates as the lines gave them (two corners, or [xMin, xMax, yMin, yMax] where
    `xxyy`) -> (x_min, y_min, x_max, y_max), clamped to [0, 1]."""
    if xxyy.any():
        raw[xxyy] = raw[xxyy][:, [0, 2, 1, 3]]
    np.clip(raw, 0.0, 1.0, out=raw)
    return np.hstack([np.minimum(raw[:, :2], raw[:, 2:]), np.maximum(raw[:, :2], raw[:, 2:])]) + 0.0


def _repeat(value: Optional[str], count: int) -> pa.Array:
    return pa.repeat(pa.scalar(value, type=pa.string()), count)


def _nullable_int32(values: np.ndarray, unknown: np.ndarray) -> pa.Array:
    return pa.array(np.where(unknown, 0, values).astype(np.int32), mask=unknown)
