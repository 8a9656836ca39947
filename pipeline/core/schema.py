"""The one definition of the output tables. The Arrow and BigQuery schemas and the docs derive from
these column lists, so a column is added in exactly one place."""
from typing import List, NamedTuple, Tuple

import pyarrow as pa


class Column(NamedTuple):
    name: str
    type: pa.DataType
    nullable: bool
    description: str


RUN_COLUMN = ('the enclosing prediction-* (or batchprediction-*) folder; its path under the input when '
              'another run folder has its name')

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
    Column('prediction_run', pa.string(), True, RUN_COLUMN),
    Column('box_area', pa.float64(), True, 'normalized area, (x_max - x_min) * (y_max - y_min)'),
    Column('px_box_area', pa.float64(), True, 'area in square pixels, where the size is known'),
    Column('box_wkt', pa.string(), True,
           'the box as a WKT POLYGON in pixel coordinates, full precision; null where the size is unknown'),
)

IMAGE_COLUMNS: Tuple[Column, ...] = (
    Column('image_uri', pa.string(), False, 'the image (ID / instance.content)'),
    Column('source_file', pa.string(), True, 'the shard the line came from'),
    Column('source_format', pa.string(), True, 'automl or vertex'),
    Column('prediction_run', pa.string(), True, RUN_COLUMN),
    Column('annotation_count', pa.int32(), True, 'annotations on the line before any filter'),
    Column('detection_count', pa.int32(), True, 'rows written to detections for this line'),
    Column('max_score', pa.float64(), True, 'highest kept score'),
    Column('image_width', pa.int32(), True, 'pixels, when known'),
    Column('image_height', pa.int32(), True, 'pixels, when known'),
    Column('size_source', pa.string(), True, 'manifest, probe or fixed'),
    Column('suppressed_count', pa.int32(), True,
           'detections removed by box filters, the region of interest, NMS and top-K together'),
)

# Evaluation against ground truth (--ground_truth): under <output>/evaluation/, and as BigQuery tables
# <output_table>_eval_matches, _eval_confidence, _eval_confusion and _eval_metrics.
_RUN = Column('prediction_run', pa.string(), True, 'the prediction run evaluated (null: shards outside a run folder)')
MATCH_COLUMNS: Tuple[Column, ...] = (
    _RUN,
    Column('image_uri', pa.string(), False, 'the image'),
    Column('outcome', pa.string(), False, 'tp, fp or fn at --eval_iou'),
    Column('label', pa.string(), True, 'display name (of the detection; of the ground-truth box for fn)'),
    Column('score', pa.float64(), True, 'the detection\'s score; null for fn'),
    Column('rank', pa.int32(), True, 'the detection\'s rank in its image by score (0 first); null for fn'),
    Column('iou', pa.float64(), False, 'tp: with its match; fp: the best with a ground-truth box of its label; '
           'fn: the best with a detection of its label; 0 when none'),
    Column('x_min', pa.float64(), True, 'the detection\'s normalized box; null for fn'),
    Column('y_min', pa.float64(), True, 'the detection\'s normalized box; null for fn'),
    Column('x_max', pa.float64(), True, 'the detection\'s normalized box; null for fn'),
    Column('y_max', pa.float64(), True, 'the detection\'s normalized box; null for fn'),
    Column('gt_x_min', pa.float64(), True, 'the ground-truth box (tp: the match), normalized (a COCO box past its '
           'image\'s edge reaches below 0 or above 1); null for fp'),
    Column('gt_y_min', pa.float64(), True, 'the ground-truth box, normalized; null for fp'),
    Column('gt_x_max', pa.float64(), True, 'the ground-truth box, normalized; null for fp'),
    Column('gt_y_max', pa.float64(), True, 'the ground-truth box, normalized; null for fp'),
    Column('gt_index', pa.int32(), True, 'position of the ground-truth box in its image\'s ground truth; null for fp'),
    Column('error_type', pa.string(), True, 'TIDE\'s type of an error at IoU 0.5 (cls, loc, both, dupe, bkg; miss for '
           'fn), as tidecv classifies it; null for a tp and for a fn that a cls or loc error explains'),
    Column('error_label', pa.string(), True, 'cls: the label of the ground-truth box the detection is on; loc: its '
           'own; null otherwise'),
    Column('error_iou', pa.float64(), True, 'cls and loc: the IoU of the detection with that ground-truth box '
           '(at IoU 0.5, in pixels when the size is known); null otherwise'),
)
CONFIDENCE_COLUMNS: Tuple[Column, ...] = (
    _RUN,
    Column('label', pa.string(), True, 'display name; null for all labels together'),
    Column('iou_threshold', pa.float64(), False, '--eval_iou'),
    Column('confidence_threshold', pa.float64(), False, 'detections scored at or above it count'),
    Column('tp', pa.int64(), False, 'true positives'),
    Column('fp', pa.int64(), False, 'false positives'),
    Column('fn', pa.int64(), False, 'ground-truth boxes missed'),
    Column('precision', pa.float64(), False, 'tp / (tp + fp); 0 when there is no detection'),
    Column('recall', pa.float64(), False, 'tp / (tp + fn); 0 when there is no ground truth'),
    Column('f1', pa.float64(), False, 'harmonic mean of precision and recall; 0 when both are 0'),
)
CONFUSION_COLUMNS: Tuple[Column, ...] = (
    _RUN,
    Column('true_label', pa.string(), True,
           'the ground-truth label; null for background (a detection that matched nothing)'),
    Column('predicted_label', pa.string(), True, 'the detection\'s label; null for background (a missed box)'),
    Column('count', pa.int64(), False, 'boxes in this cell, at --eval_iou and --eval_confidence'),
)
# <output>/comparison/ (core.comparison): a run's boxes against the base run's, image by image.
COMPARISON_COLUMNS: Tuple[Column, ...] = (
    Column('prediction_run', pa.string(), True, 'the run compared (null: shards outside a run folder)'),
    Column('base_run', pa.string(), True, 'the run it is compared against (--compare_to)'),
    Column('image_uri', pa.string(), False, 'an image both runs have'),
    Column('outcome', pa.string(), False, 'same, relabelled, moved (a pair of boxes), added (the run\'s box '
           'alone) or removed (the base\'s box alone)'),
    Column('label', pa.string(), True, 'the run\'s box\'s label; null for removed'),
    Column('base_label', pa.string(), True, 'the base\'s box\'s label; null for added'),
    Column('score', pa.float64(), True, 'the run\'s box\'s score; null for removed'),
    Column('base_score', pa.float64(), True, 'the base\'s box\'s score; null for added'),
    Column('score_change', pa.float64(), True, 'score - base_score, for a pair'),
    Column('iou', pa.float64(), True, 'of the two boxes of a pair; null for added and removed'),
    Column('verdict', pa.string(), True, 'with --ground_truth, who was right on a changed box: fixed (the run is, '
           'the base is not), broken (the other way round), both_wrong or both_right; null for same, and where '
           'the image has no ground truth'),
    Column('x_min', pa.float64(), True, 'the run\'s box, normalized; null for removed'),
    Column('y_min', pa.float64(), True, 'the run\'s box, normalized'),
    Column('x_max', pa.float64(), True, 'the run\'s box, normalized'),
    Column('y_max', pa.float64(), True, 'the run\'s box, normalized'),
    Column('base_x_min', pa.float64(), True, 'the base\'s box, normalized; null for added'),
    Column('base_y_min', pa.float64(), True, 'the base\'s box, normalized'),
    Column('base_x_max', pa.float64(), True, 'the base\'s box, normalized'),
    Column('base_y_max', pa.float64(), True, 'the base\'s box, normalized'),
)
# <output>/evaluation/thresholds.csv (core.operating_thresholds): what --label_thresholds @FILE reads.
THRESHOLD_COLUMNS: Tuple[Column, ...] = (
    _RUN,
    Column('label', pa.string(), False, 'display name'),
    Column('threshold', pa.float64(), True, 'the confidence to ship: detections scored at or above it are kept; '
           'null when the rule cannot be met (see reason)'),
    Column('precision', pa.float64(), True, 'tp / (tp + fp) at the threshold and --eval_iou'),
    Column('recall', pa.float64(), True, 'tp / (tp + fn) at the threshold and --eval_iou'),
    Column('f1', pa.float64(), True, 'harmonic mean of precision and recall'),
    Column('rule', pa.string(), False, 'best_f1, target_precision or target_recall'),
    Column('tp', pa.int64(), True, 'true positives kept at the threshold'),
    Column('fp', pa.int64(), True, 'false positives kept at the threshold'),
    Column('fn', pa.int64(), True, 'ground-truth boxes missed at the threshold'),
    Column('reason', pa.string(), True, 'why the threshold is null; empty otherwise'),
)
# pycocotools' twelve summary numbers, as metrics.json names them for its default maxDets.
STAT_COLUMNS: Tuple[Column, ...] = tuple(
    Column(name, pa.float64(), True, what) for name, what in (
        ('ap', 'AP at IoU 0.50:0.95 (pycocotools\' first number)'), ('ap_50', 'AP at IoU 0.50'),
        ('ap_75', 'AP at IoU 0.75'), ('ap_small', 'AP of boxes up to 32x32 pixels'),
        ('ap_medium', 'AP of boxes from 32x32 to 96x96 pixels'), ('ap_large', 'AP of boxes from 96x96 pixels'),
        ('ar_1', 'AR within 1 detection per image and label (null when --max_dets has no cap 1)'),
        ('ar_10', 'AR within 10 (null when --max_dets has no cap 10)'),
        ('ar_100', 'AR within 100 (null when --max_dets has no cap 100)'),
        ('ar_small', 'AR of small boxes'), ('ar_medium', 'AR of medium boxes'), ('ar_large', 'AR of large boxes')))
SLICE_COLUMNS: Tuple[Column, ...] = (
    _RUN,
    Column('slice_by', pa.string(), False, 'the attribute sliced by (--slice_by): an image attribute, box_size '
           'or prediction_run'),
    Column('slice_value', pa.string(), True, 'the attribute\'s value or bin (such as [10, 20)); null: the '
           'evaluated images without a value'),
    Column('label', pa.string(), True, 'display name; null: the row of all labels'),
    Column('images', pa.int64(), True, 'images in the slice (evaluated ones with ground truth, else those with '
           'a line of the run); null for box_size'),
    Column('ground_truth_boxes', pa.int64(), True, 'ground-truth boxes in the slice (crowd boxes aside); null '
           'without ground truth'),
    Column('detections', pa.int64(), True, 'kept detections in the slice\'s images; null for box_size'),
    Column('tp', pa.int64(), True, 'true positives at --eval_iou; null for box_size'),
    Column('fp', pa.int64(), True, 'false positives at --eval_iou; null for box_size'),
    Column('fn', pa.int64(), True, 'missed ground-truth boxes at --eval_iou; null for box_size'),
    *STAT_COLUMNS,
    Column('detections_per_image', pa.float64(), True, 'detections / images'),
    Column('score_p25', pa.float64(), True, 'the scores\' first quartile (without ground truth; null with it)'),
    Column('score_median', pa.float64(), True, 'the scores\' median (without ground truth)'),
    Column('score_p75', pa.float64(), True, 'the scores\' third quartile (without ground truth)'),
)
METRIC_COLUMNS: Tuple[Column, ...] = (  # BigQuery only; metrics.json holds the same figures
    _RUN,
    Column('label', pa.string(), False, 'display name'),
    Column('iou_threshold', pa.float64(), False, 'one of --iou_thresholds'),
    Column('ap', pa.float64(), True, '101-point interpolated AP at this IoU; null without ground truth'),
    Column('recall', pa.float64(), True, 'the highest recall at this IoU; null without ground truth'),
    Column('ground_truth_boxes', pa.int64(), False, 'ground-truth boxes of the label (crowd boxes aside)'),
    Column('detections', pa.int64(), False, 'kept detections of the label in the evaluated images'),
)


DEAD_LETTER_COLUMNS: Tuple[Column, ...] = (
    Column('timestamp', pa.timestamp('ms', tz='UTC'), False, 'when the line was rejected (RFC 3339 UTC)'),
    Column('kind', pa.string(), False,
           'prediction_error, malformed_line, invalid_record, unreadable_file, write_failure, '
           'invalid_ground_truth or invalid_attribute'),
    Column('source_file', pa.string(), True, 'the shard the line came from'),
    Column('image_uri', pa.string(), True, 'the image, where known'),
    Column('error_code', pa.int64(), True, 'google.rpc.Code number'),
    Column('error_status', pa.string(), True, 'google.rpc.Code name'),
    Column('error_message', pa.string(), True, 'the reason'),
    Column('payload', pa.string(), True, 'the original line (base64 where it is not UTF-8)'),
    Column('payload_encoding', pa.string(), True, 'base64, or null'),
)
# The BigQuery dead-letter table cuts payloads over PAYLOAD_LIMIT_BYTES and keeps these two.
DEAD_LETTER_TABLE_EXTRA_COLUMNS: Tuple[Column, ...] = (
    Column('payload_length', pa.int64(), True, 'length of the full payload in UTF-8 bytes'),
    Column('payload_sha256', pa.string(), True, 'SHA-256 of the full payload, hex'),
)
PAYLOAD_LIMIT_BYTES = 1024 * 1024

# Arrow type -> BigQuery type, for the types our tables use.
_BIGQUERY_TYPES = {
    pa.string(): 'STRING', pa.float64(): 'FLOAT64', pa.int32(): 'INT64', pa.int64(): 'INT64',
    pa.timestamp('ms', tz='UTC'): 'TIMESTAMP',
}


# Strings that repeat from row to row (URIs, labels, file names) are dictionary-encoded in Parquet.
# A WKT box is unique per row and numbers rarely repeat: trying the encoding on them costs time (the
# writer hashes a page's worth before it gives up) for nothing.
UNIQUE_STRING_COLUMNS = frozenset({'box_wkt'})


def dictionary_columns(schema: pa.Schema) -> List[str]:
    return [field.name for field in schema
            if pa.types.is_string(field.type) and field.name not in UNIQUE_STRING_COLUMNS]


def arrow_schema(columns: Tuple[Column, ...]) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.type, nullable=c.nullable) for c in columns])


def bigquery_schema(columns: Tuple[Column, ...]) -> dict:
    """The BigQuery table schema (as WriteToBigQuery and the REST API take it) for these columns."""
    return {'fields': [{'name': c.name, 'type': _BIGQUERY_TYPES[c.type],
                        'mode': 'NULLABLE' if c.nullable else 'REQUIRED',
                        'description': c.description} for c in columns]}


DETECTIONS_SCHEMA = arrow_schema(DETECTION_COLUMNS)
IMAGES_SCHEMA = arrow_schema(IMAGE_COLUMNS)
MATCHES_SCHEMA = arrow_schema(MATCH_COLUMNS)
COMPARISON_SCHEMA = arrow_schema(COMPARISON_COLUMNS)
CONFIDENCE_SCHEMA = arrow_schema(CONFIDENCE_COLUMNS)
CONFUSION_SCHEMA = arrow_schema(CONFUSION_COLUMNS)
SLICE_SCHEMA = arrow_schema(SLICE_COLUMNS)
