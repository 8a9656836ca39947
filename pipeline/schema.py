"""The one definition of the output tables. Arrow schemas (and, later, BigQuery schemas and docs) derive
from these column lists, so a column is added in exactly one place."""
from typing import NamedTuple, Tuple

import pyarrow as pa


class Column(NamedTuple):
    name: str
    type: pa.DataType
    nullable: bool
    description: str


DETECTION_COLUMNS: Tuple[Column, ...] = (
    Column('image_uri', pa.string(), False, 'the image (ID / instance.content)'),
    Column('label', pa.string(), True, 'display name'),
    Column('label_id', pa.string(), True, 'annotation_spec_id / Vertex id, as a string'),
    Column('score', pa.float64(), True, 'confidence in [0, 1]'),
    Column('rank', pa.int32(), True, '0 for the highest kept score on the line, then 1, 2, ...'),
    Column('x_min', pa.float64(), True, 'normalized box, in [0, 1]'),
    Column('y_min', pa.float64(), True, 'normalized box, in [0, 1]'),
    Column('x_max', pa.float64(), True, 'normalized box, in [0, 1]'),
    Column('y_max', pa.float64(), True, 'normalized box, in [0, 1]'),
    Column('image_width', pa.int32(), True, 'pixels, when known'),
    Column('image_height', pa.int32(), True, 'pixels, when known'),
    Column('px_x_min', pa.float64(), True, 'box in pixels: x_min times width'),
    Column('px_y_min', pa.float64(), True, 'box in pixels: y_min times height'),
    Column('px_x_max', pa.float64(), True, 'box in pixels: x_max times width'),
    Column('px_y_max', pa.float64(), True, 'box in pixels: y_max times height'),
    Column('source_file', pa.string(), True, 'the shard the line came from'),
    Column('source_format', pa.string(), True, 'automl or vertex'),
    Column('prediction_run', pa.string(), True, 'the enclosing prediction-* folder'),
    Column('box_area', pa.float64(), True, 'normalized area, (x_max - x_min) * (y_max - y_min)'),
    Column('px_box_area', pa.float64(), True, 'area in square pixels, where the size is known'),
    Column('box_wkt', pa.string(), True,
           'the box as a WKT POLYGON in pixel coordinates, full precision; null where the size is unknown'),
)

IMAGE_COLUMNS: Tuple[Column, ...] = (
    Column('image_uri', pa.string(), False, 'the image (ID / instance.content)'),
    Column('source_file', pa.string(), True, 'the shard the line came from'),
    Column('source_format', pa.string(), True, 'automl or vertex'),
    Column('prediction_run', pa.string(), True, 'the enclosing prediction-* folder'),
    Column('annotation_count', pa.int32(), True, 'annotations on the line before any filter'),
    Column('detection_count', pa.int32(), True, 'rows written to detections for this line'),
    Column('max_score', pa.float64(), True, 'highest kept score'),
    Column('image_width', pa.int32(), True, 'pixels, when known'),
    Column('image_height', pa.int32(), True, 'pixels, when known'),
    Column('size_source', pa.string(), True, 'manifest, probe or fixed'),
    Column('suppressed_count', pa.int32(), True,
           'detections removed by box filters, the region of interest, NMS and top-K together'),
)


def arrow_schema(columns: Tuple[Column, ...]) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.type, nullable=c.nullable) for c in columns])


DETECTIONS_SCHEMA = arrow_schema(DETECTION_COLUMNS)
IMAGES_SCHEMA = arrow_schema(IMAGE_COLUMNS)
