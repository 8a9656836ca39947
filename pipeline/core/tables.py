"""Pure assembly of one batch of parsed lines into Arrow tables for `detections` and `images`.

Everything per annotation happens on columns (numpy, pyarrow), never in a Python loop per detection.
"""
import collections
from typing import NamedTuple, Optional, Sequence

import numpy as np
import pyarrow as pa

from pipeline.config.settings import PostprocessingSettings
from pipeline.core import counts as names
from pipeline.core import geometry
from pipeline.core.counts import Counts
from pipeline.core.decoding import DecodedLines
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
    rows: np.ndarray  # per detection row: its row in the decoded columns (rows of a line together, by rank)


def build_tables(decoded: DecodedLines, sizes: Sequence[Optional[ImageSize]],
                 source_file: str, prediction_run: Optional[str],
                 postprocessing: PostprocessingSettings) -> BatchTables:
    """One `images` row per line and one `detections` row per kept annotation. Annotations the
    decoder left out below the score floor count as removed by the threshold step."""
    n_images = len(decoded.image_uris)
    line_index, labels, label_ids = decoded.line_index, decoded.labels, decoded.label_ids
    scores, boxes, dropped = decoded.scores, decoded.boxes, decoded.dropped_scores
    counts_per_line = decoded.annotations_per_line

    selection = select_detections(line_index, scores, boxes, labels, label_ids, postprocessing)
    order, rank = geometry.order_by_rank(line_index[selection.kept], scores[selection.kept])
    rows = selection.kept[order]
    row_line = line_index[rows]

    widths = np.array([s.width if s else np.nan for s in sizes], dtype=np.float64)
    heights = np.array([s.height if s else np.nan for s in sizes], dtype=np.float64)
    row_width, row_height = widths[row_line], heights[row_line]
    size_unknown = _mask(np.isnan(row_width))

    image_uri = pa.array(decoded.image_uris, type=pa.string())
    source_format = pa.array(decoded.source_formats, type=pa.string())
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
    image_size_unknown = _mask(np.isnan(widths))
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
        names.ANNOTATIONS_READ: int(counts_per_line.sum()),
        names.DETECTIONS_KEPT: int(len(rows)),
        names.IMAGES_WITHOUT_SIZE: 0 if image_size_unknown is None else int(image_size_unknown.sum()),
        **{names.removed_by(step): count for step, count in removed.items()},
    })
    counts.add_scores('all', np.concatenate([scores, dropped]))
    counts.add_scores('kept', scores[rows])
    for item in detections.column('label').value_counts().to_pylist():
        counts.kept_by_label[names.NO_LABEL if item['values'] is None else item['values']] += item['counts']
    if postprocessing.keep_labels or postprocessing.drop_labels or postprocessing.label_thresholds:
        counts.add_seen_labels(labels)
    for source, count in collections.Counter(size.source for size in sizes if size).items():
        counts.scalars[names.size_from(source)] += count
    return BatchTables(detections, images, counts, rows)


def _repeat(value: Optional[str], count: int) -> pa.Array:
    return pa.repeat(pa.scalar(value, type=pa.string()), count)


def _mask(unknown: np.ndarray) -> Optional[np.ndarray]:
    """A null mask for pyarrow, or None when nothing is null (an all-false mask costs as much)."""
    return unknown if unknown.any() else None


def _nullable_int32(values: np.ndarray, unknown: Optional[np.ndarray]) -> pa.Array:
    if unknown is None:
        return pa.array(values.astype(np.int32))
    return pa.array(np.where(unknown, 0, values).astype(np.int32), mask=unknown)
