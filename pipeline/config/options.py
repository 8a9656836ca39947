"""The pipeline's options: one table that feeds the command line, validation and the template metadata.

Every option is read as a string (the Flex Template launcher passes each parameter as `--name=value`)
and turned into a typed value by its parser, which raises `ValueError` with a message that says what is
wrong. `settings.Settings` runs every parser and the checks across options before any work.
"""
import dataclasses
import json
import math
import re
from typing import Any, Callable, Mapping, Optional, Tuple, Union

import numpy as np
import orjson
from apache_beam.options.pipeline_options import PipelineOptions


class OptionError(ValueError):
    """An option value is wrong; the message names the option and what to fix."""


INPUT_FORMATS = ('auto', 'automl', 'vertex')
GROUND_TRUTH_FORMATS = ('auto', 'vertex_jsonl', 'automl_csv', 'coco')
EXPORT_FORMATS = ('vertex_jsonl', 'automl_csv', 'coco', 'label_studio')
EXPORT_SELECTIONS = ('kept', 'uncertain', 'errors', 'disagreements')
# COCO's IoU thresholds for AP: 0.50, 0.55, ..., 0.95.
# pycocotools' iouThrs, bit for bit: np.linspace(.5, 0.95, 10), whose 9th value is 0.8999999999999999.
COCO_IOU_THRESHOLDS = tuple(np.linspace(0.5, 0.95, 10).tolist())
COCO_MAX_DETS = (1, 10, 100)  # pycocotools' maxDets

# The shapes of option values. Each parser checks its value against the same pattern that the template
# metadata publishes, so what the Dataflow console accepts and what the pipeline accepts cannot drift.
_FRACTION = r'(0(\.[0-9]*)?|1(\.0*)?|\.[0-9]+)'
FRACTION_RE = rf'^{_FRACTION}$'
BOOL_RE = r'^(true|false|True|False|TRUE|FALSE)$'
IMAGE_SIZE_RE = r'^([1-9][0-9]*)[xX]([1-9][0-9]*)$'
POSITIVE_INT_RE = r'^[1-9][0-9]*$'
INPUT_FORMAT_RE = r'^(auto|automl|vertex)$'
# On Dataflow every path is a Cloud Storage URI: gs://BUCKET[/OBJECT].
_BUCKET = r'gs://[a-z0-9][-_.a-z0-9]{1,220}[a-z0-9]'
GCS_PATH_RE = rf'^{_BUCKET}(/.*)?$'
# Beam's file sinks and FileSystems.match read a path as a pattern, and there is no way to quote these
# characters in one: a folder we write is never named with them (it would match other folders' files).
PATTERN_CHARACTERS = '*?[]'
OUTPUT_PATH_RE = rf'^{_BUCKET}(/[^*?\[\]]*)?$'
_LABEL_ITEM = r'[^,]*[^,\s][^,]*'
LABELS_RE = rf'^(\[.*\]|{_LABEL_ITEM}(,{_LABEL_ITEM})*)$'
_THRESHOLD_ITEM = rf'{_LABEL_ITEM}=\s*{_FRACTION}\s*'
LABEL_THRESHOLDS_RE = rf'^(\{{.*\}}|@{_BUCKET}/.+|{_THRESHOLD_ITEM}(,{_THRESHOLD_ITEM})*)$'
# PROJECT:DATASET.TABLE or PROJECT.DATASET.TABLE (a domain-scoped project is "example.com:project").
_PROJECT = r'([a-z0-9.-]+:)?[a-z][-a-z0-9]{4,28}[a-z0-9]'
TABLE_RE = rf'^({_PROJECT})[:.]([A-Za-z0-9_]{{1,1024}})\.([A-Za-z0-9_-]{{1,1024}})$'
WRITE_DISPOSITION_RE = r'^(append|truncate)$'
BIGQUERY_METHOD_RE = r'^(file_loads|streaming_inserts)$'
ROI_RE = rf'^((?i:(multi)?polygon)\s*\(.*\)|{_BUCKET}/.+)$'
# projects/PROJECT/subscriptions/NAME, with Pub/Sub's rules for the name.
GROUND_TRUTH_FORMAT_RE = r'^(auto|vertex_jsonl|automl_csv|coco)$'
ML_USE_RE = r'^(?i:training|train|validation|test|unassigned)$'
FRACTIONS_RE = rf'^\s*{_FRACTION}\s*(,\s*{_FRACTION}\s*)*$'
EXPORT_RE = r'^(vertex_jsonl|automl_csv|coco|label_studio)(,(vertex_jsonl|automl_csv|coco|label_studio))*$'
EXPORT_SELECT_RE = r'^(kept|uncertain|errors|disagreements)$'
EXPORT_ML_USE_RE = r'^(training|validation|test)$'
NAME_RE = r'^[A-Za-z_][A-Za-z0-9_.-]*$'
RUN_NAME_RE = r'^\S(.*\S)?$'
# The slices that need no image attributes: COCO's box sizes, and the prediction runs themselves.
BOX_SIZE, PREDICTION_RUN = 'box_size', 'prediction_run'
BUILT_IN_SLICES = (BOX_SIZE, PREDICTION_RUN)
ATTRIBUTE_NAMES_RE = r'^\s*[^,\s]([^,]*[^,\s])?\s*(,\s*[^,\s]([^,]*[^,\s])?\s*)*$'
_NUMBER = r'[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?'
SLICE_BINS_RE = rf'^\s*{_NUMBER}\s*(,\s*{_NUMBER}\s*)*$'
SUBSCRIPTION_RE = rf'^projects/({_PROJECT})/subscriptions/([A-Za-z][-A-Za-z0-9_.~+%]{{2,254}})$'

# A run is a batch run over what --input holds, or a streaming run over what --input_subscription
# announces. Some options belong to one mode only.
BATCH = 'batch'
STREAMING = 'streaming'
MODES = (BATCH, STREAMING)


def _check_shape(text: str, pattern: str, expected: str) -> re.Match:
    match = re.match(pattern, text)
    if not match:
        raise ValueError(f'expected {expected}, got {text!r}')
    return match


def parse_bool(text: str) -> bool:
    return _check_shape(text, BOOL_RE, 'true or false').group(1).lower() == 'true'


def parse_fraction(text: str) -> float:
    """A number in [0, 1] written as a plain decimal: thresholds, IoU, overlap fractions."""
    _check_shape(text, FRACTION_RE, 'a number between 0 and 1 (e.g. 0.5)')
    return float(text)


# Image sides are INT32 columns: a size must fit in one.
MAX_IMAGE_SIDE = 2 ** 31 - 1


def parse_image_size(text: str) -> Tuple[int, int]:
    match = _check_shape(text, IMAGE_SIZE_RE, 'WIDTHxHEIGHT with positive integers (e.g. 1024x768)')
    width, height = int(match.group(1)), int(match.group(2))
    if max(width, height) > MAX_IMAGE_SIDE:
        raise ValueError(f'{text!r}: a side is at most {MAX_IMAGE_SIDE} pixels')
    return width, height


def parse_input_format(text: str) -> str:
    _check_shape(text, INPUT_FORMAT_RE, f'one of {", ".join(INPUT_FORMATS)}')
    return text


class ThresholdsFile(Mapping[str, float]):
    """`--label_thresholds @FILE` until the launch reads the file (cli): the thresholds are not known
    yet, and using them before is a mistake that must not pass for "no threshold"."""

    def __init__(self, path: str):
        self.path = path

    def _unread(self, *_):
        raise RuntimeError(f'--label_thresholds @{self.path} is read at launch, before any use')

    __getitem__ = __iter__ = __len__ = _unread


def parse_label_thresholds(text: str) -> Mapping[str, float]:
    """`"Tomato=0.6,Baked Goods=0.3"` (split at the last `=`), a JSON object for labels with commas, or
    `@FILE`: a thresholds.csv that an evaluated run wrote (local or gs://), read at launch."""
    stripped = text.strip()
    if not stripped:
        return {}
    if stripped.startswith('@'):
        path = parse_path(stripped[1:])
        return ThresholdsFile(path)
    if stripped.startswith('{'):
        try:
            raw = json.loads(stripped, object_pairs_hook=list)
        except ValueError as exc:
            raise ValueError(f'not a valid JSON object: {exc}') from None
        if not isinstance(raw, list) or not stripped.endswith('}'):
            raise ValueError('expected a JSON object of label to threshold')
        items = raw
    else:
        items = []
        for item in stripped.split(','):
            if '=' not in item:
                raise ValueError(f'item {item.strip()!r} has no "=": write LABEL=THRESHOLD')
            label, _, value = item.rpartition('=')
            items.append((label.strip(), value.strip()))
    thresholds = {}
    for label, value in items:
        if not isinstance(label, str) or not label.strip():
            raise ValueError('a label is empty')
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError(f'threshold of {label!r} must be a number, got {value!r}')
        if not isinstance(value, str):
            value = repr(float(value)) if 0 <= value <= 1 else str(value)
        if label in thresholds:
            raise ValueError(f'{label!r} is given twice: give each label one threshold')
        try:
            thresholds[label] = parse_fraction(value)
        except ValueError as exc:
            raise ValueError(f'threshold of {label!r}: {exc}') from None
    return thresholds


def parse_labels(text: str) -> Tuple[str, ...]:
    """Comma-separated display names (spaces allowed), or a JSON array for names with commas."""
    stripped = text.strip()
    if stripped.startswith('['):
        try:
            labels = orjson.loads(stripped)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f'not a valid JSON array: {exc}') from None
        if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
            raise ValueError('expected a JSON array of label names')
    else:
        labels = [label.strip() for label in stripped.split(',')]
    if not labels or any(not label.strip() for label in labels):
        raise ValueError(f'a label is empty in {text!r}')
    return tuple(labels)


def parse_prefixes(text: str) -> Tuple[str, ...]:
    prefixes = tuple(prefix.strip() for prefix in text.split(',') if prefix.strip())
    if not prefixes:
        raise ValueError('expected one or more comma-separated prefixes')
    for prefix in prefixes:
        if prefix.lower().startswith('gs:') and not re.match(rf'^{_BUCKET}/', prefix):
            raise ValueError(f'{prefix!r}: a gs:// prefix must name a bucket and end its name with "/"')
    return prefixes


def parse_mirrors(text: str) -> Mapping[str, str]:
    """"gs://bucket/prefix/=local/dir/,..." -> {source prefix: where to read it instead}."""
    mirrors = {}
    for item in text.split(','):
        source, sep, target = item.partition('=')
        if not sep or not source.strip() or not target.strip():
            raise ValueError(f'expected SOURCE_PREFIX=MIRROR_PREFIX, got {item!r}')
        if source.strip() in mirrors:
            raise ValueError(f'{source.strip()!r} is given twice: give each source prefix one target')
        mirrors[source.strip()] = target.strip()
    return mirrors


def parse_ml_use(text: str) -> str:
    """An ML use in any case, `train` for `training`, as Vertex AI and AutoML write it."""
    use = _check_shape(text.strip(), ML_USE_RE, 'one of training (or train), validation, test, unassigned')
    return {'train': 'training'}.get(use.group(0).lower(), use.group(0).lower())


def parse_iou_thresholds(text: str) -> Tuple[float, ...]:
    """Distinct IoU thresholds in (0, 1], comma-separated, in increasing order."""
    _check_shape(text, FRACTIONS_RE, 'comma-separated numbers between 0 and 1 (e.g. 0.5,0.75)')
    values = [float(item) for item in text.split(',')]
    if min(values) <= 0:
        raise ValueError('an IoU threshold of 0 matches boxes that do not overlap: give thresholds above 0')
    if len(set(values)) != len(values):
        raise ValueError(f'{text!r} gives a threshold twice')
    return tuple(sorted(values))


MAX_DETS_RE = r'^\s*[0-9]+\s*(,\s*[0-9]+\s*)*$'


def parse_max_dets(text: str) -> Tuple[int, ...]:
    """pycocotools' maxDets: increasing caps of detections per image and label, comma-separated; the
    last bounds AP, each gives an AR; 0 (last) means no cap."""
    _check_shape(text, MAX_DETS_RE, 'comma-separated whole numbers in increasing order (e.g. 1,10,100)')
    values = [int(item) for item in text.split(',')]
    ordered = [value or float('inf') for value in values]
    if ordered != sorted(set(ordered)):
        raise ValueError(f'{text!r}: give each cap once, in increasing order (0, no cap, last)')
    return tuple(values)


def parse_positive_iou(text: str) -> float:
    value = parse_fraction(text)
    if value <= 0:
        raise ValueError('an IoU of 0 matches boxes that do not overlap: give a number above 0')
    return value


def parse_export_formats(text: str) -> Tuple[str, ...]:
    """Distinct export formats, comma-separated, in the order given."""
    formats = _check_shape(text.strip(), EXPORT_RE, f'comma-separated formats among {", ".join(EXPORT_FORMATS)}'
                           ).group(0).split(',')
    if len(set(formats)) != len(formats):
        raise ValueError(f'{text!r} names a format twice')
    return tuple(formats)


def parse_run_name(text: str) -> str:
    """A prediction run's name as the tables give it, or `first`; checked against the input at launch."""
    return _check_shape(text, RUN_NAME_RE, 'a prediction run\'s name (its folder), or first').group(0)


def parse_attribute_name(text: str) -> str:
    """A column of the image attributes (a CSV header's or a JSON key), as written, spaces around it
    aside."""
    return _check_shape(text.strip(), RUN_NAME_RE, 'a column name').group(0)


def parse_slice_by(text: str) -> Tuple[str, ...]:
    """Distinct attribute names, comma-separated, in the order given."""
    _check_shape(text, ATTRIBUTE_NAMES_RE, 'comma-separated attribute names (such as camera,box_size)')
    names = tuple(name.strip() for name in text.split(','))
    if len(set(names)) != len(names):
        raise ValueError(f'{text!r} names an attribute twice')
    return names


def parse_slice_bins(text: str) -> Union[int, Tuple[float, ...]]:
    """A count of quantile bins (2 or more), or the increasing edges of the bins, comma-separated."""
    _check_shape(text, SLICE_BINS_RE, 'a count of bins (such as 4), or increasing bin edges (such as 0,10,100)')
    items = [item.strip() for item in text.split(',')]
    if len(items) == 1 and re.fullmatch(r'\+?\d+', items[0]):
        count = int(items[0])
        if count < 2:
            raise ValueError('give 2 or more bins, or the bin edges (such as 10 for below and from 10)')
        return count
    edges = tuple(float(item) for item in items)
    if any(not math.isfinite(edge) for edge in edges) or list(edges) != sorted(set(edges)):
        raise ValueError(f'{text!r}: give each edge once, in increasing order')
    return edges


def parse_positive_int(text: str) -> int:
    return int(_check_shape(text, POSITIVE_INT_RE, 'a whole number >= 1').group(0))


def parse_table(text: str) -> str:
    """A BigQuery table spec, normalized to PROJECT:DATASET.TABLE."""
    match = _check_shape(text, TABLE_RE, 'a BigQuery table as PROJECT:DATASET.TABLE or PROJECT.DATASET.TABLE')
    return f'{match.group(1)}:{match.group(3)}.{match.group(4)}'


def parse_choice(pattern: str, choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        return _check_shape(text, pattern, f'one of {choices}').group(0)
    return parse


def parse_subscription(text: str) -> str:
    return _check_shape(text.strip(), SUBSCRIPTION_RE,
                        'projects/PROJECT/subscriptions/NAME (a name of 3 to 255 characters)').group(0)


def pattern_problem(path: str) -> Optional[str]:
    """Why a location we write cannot hold `path`'s pattern characters (None when it has none)."""
    found = ' '.join(dict.fromkeys(c for c in path if c in PATTERN_CHARACTERS))
    if not found:
        return None
    return (f'{path!r} holds {found}, which Beam\'s file sinks read as a pattern: writing there would '
            f'match, and replace, the files of other folders. Choose a location without * ? [ ]')


def parse_output_path(text: str) -> str:
    """A location we write: a path (parse_path) without pattern characters."""
    value = parse_path(text)
    problem = pattern_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def parse_path(text: str) -> str:
    """A local path, or a gs:// URI with a valid bucket name."""
    value = text.strip()
    if not value:
        raise ValueError('must not be empty')
    if value.lower().startswith('gs:') and not re.match(GCS_PATH_RE, value):
        raise ValueError(f'expected gs://BUCKET/PATH with a valid bucket name, got {text!r}')
    return value


@dataclasses.dataclass(frozen=True)
class Option:
    """One pipeline option. `regex` describes a valid value on Dataflow (for the template metadata);
    `modes` are the kinds of run it applies to, `required_in` those that cannot do without it."""
    name: str
    label: str
    help: str
    parse: Callable[[str], Any]
    default: Any = None
    flag: bool = False
    regex: Optional[str] = None
    required_in: Tuple[str, ...] = ()
    modes: Tuple[str, ...] = MODES


OPTIONS = (
    Option('input', 'Prediction output',
           'Required in batch runs: a prediction output folder, a prefix holding several '
           'prediction-* folders, a glob, or a saved batch prediction operation/job JSON; every result '
           'and error shard under it is read. In streaming runs, optional: a gs:// folder, and only '
           'shards under it are loaded.',
           parse_path, regex=GCS_PATH_RE, required_in=(BATCH,)),
    Option('input_subscription', 'Cloud Storage notifications subscription',
           'Streaming: projects/PROJECT/subscriptions/NAME, a Pub/Sub subscription receiving the '
           'bucket\'s Cloud Storage notifications (OBJECT_FINALIZE). Each new result or error shard is '
           'loaded as it lands; the job runs until it is drained or cancelled.',
           parse_subscription, regex=SUBSCRIPTION_RE, required_in=(STREAMING,), modes=(STREAMING,)),
    Option('window_seconds', 'Output window (seconds)',
           'Streaming: Parquet and dead-letter files are written per fixed window of this many seconds '
           '(by notification publish time).',
           parse_positive_int, default=60, regex=POSITIVE_INT_RE, modes=(STREAMING,)),
    Option('dedupe_hours', 'Deduplication horizon (hours)',
           'Streaming: a shard version (object and generation) notified again within this many hours '
           'is not loaded again.',
           parse_positive_int, default=24, regex=POSITIVE_INT_RE, modes=(STREAMING,)),
    Option('output', 'Parquet output root',
           'Folder (local or gs://) that receives detections/, images/, dead_letter/ and '
           'summary.json. Required unless --output_table is given; both may be.',
           parse_output_path, regex=OUTPUT_PATH_RE),
    Option('output_table', 'BigQuery detections table',
           'Detections table, PROJECT:DATASET.TABLE or PROJECT.DATASET.TABLE. The images table is '
           '<table>_images unless --images_table names another; dead letters go to '
           '<table>_error_records unless --dead_letter_table names another.',
           parse_table, regex=TABLE_RE),
    Option('images_table', 'BigQuery images table', 'Images table; default <output_table>_images.',
           parse_table, regex=TABLE_RE),
    Option('dead_letter_table', 'BigQuery dead-letter table',
           'Dead-letter table; default <output_table>_error_records.', parse_table, regex=TABLE_RE),
    Option('write_disposition', 'BigQuery write disposition',
           'append (default) or truncate: what a run does to rows already in the tables.',
           parse_choice(WRITE_DISPOSITION_RE, 'append, truncate'), default='append',
           regex=WRITE_DISPOSITION_RE),
    Option('bigquery_method', 'BigQuery write method',
           'file_loads (load jobs from files under --temp_location; the default in batch runs, and in '
           'streaming runs one load per --window_seconds) or streaming_inserts (the default in '
           'streaming runs: rows land within seconds).',
           parse_choice(BIGQUERY_METHOD_RE, 'file_loads, streaming_inserts'), regex=BIGQUERY_METHOD_RE),
    Option('overwrite', 'Overwrite a completed run',
           'Replace the outputs of a completed previous run of ours (one with a summary.json). '
           'Without it such a run is refused; what a run of ours left when it stopped before its '
           'summary is always replaced. Files that no run of ours wrote are never removed.',
           parse_bool, default=False, flag=True, regex=BOOL_RE, modes=(BATCH,)),
    Option('max_dead_letter_ratio', 'Maximum dead-letter ratio',
           'When line dead letters exceed this share (0 to 1) of the non-blank lines, the run still '
           'writes everything, then exits with code 3 and the figures, so a scheduler can alert.',
           parse_fraction, regex=FRACTION_RE, modes=(BATCH,)),
    Option('fail_on_warning', 'Fail on a warning',
           'Exit with code 6 when the run ends with a warning (a ground truth that shares few images '
           'with a run, a manifest that names few of the images, a label that never occurs, an empty '
           'export...); every output is written all the same. The warnings are in summary.json.',
           parse_bool, default=False, flag=True, regex=BOOL_RE, modes=(BATCH,)),
    Option('report', 'Build the visual report',
           'Write <output>/report/index.html after the run: summary, label and score charts, a gallery '
           'of images with their boxes, the first dead letters. Default: on for local runs; after a '
           'Dataflow job, build it with python -m pipeline.report --output ROOT.',
           parse_bool, flag=True, regex=BOOL_RE, modes=(BATCH,)),
    Option('report_samples', 'Report gallery size', 'Images in the report gallery.',
           parse_positive_int, default=24, regex=POSITIVE_INT_RE, modes=(BATCH,)),
    Option('report_image_mirror', 'Report image mirror',
           'SOURCE_PREFIX=MIRROR_PREFIX[,...]: read the gallery\'s images under SOURCE_PREFIX from '
           'MIRROR_PREFIX instead (such as a local copy of gs:// images).', parse_mirrors,
           regex=r'^[^=,]+=[^=,]+(,[^=,]+=[^=,]+)*$', modes=(BATCH,)),
    Option('summary', 'Run summary path',
           'Where to write summary.json; default <output>/summary.json. With BigQuery output only, '
           'the summary is printed and logged, and written here when given.',
           parse_output_path, regex=OUTPUT_PATH_RE, modes=(BATCH,)),
    Option('dead_letter', 'Dead-letter root',
           'Folder for dead-letter JSONL files. Default: <output>/dead_letter.',
           parse_output_path, regex=OUTPUT_PATH_RE),
    Option('input_format', 'Input format',
           'auto (detected per line), automl (legacy AutoML Vision) or vertex (Vertex AI).',
           parse_input_format, default='auto', regex=INPUT_FORMAT_RE),
    Option('score_threshold', 'Score threshold',
           'Keep detections with score >= this (0 to 1), as the API\'s params.score_threshold.',
           parse_fraction, default=0.0, regex=FRACTION_RE),
    Option('label_thresholds', 'Per-label thresholds',
           'Per-label overrides by display name: "Tomato=0.6,Baked Goods=0.3", a JSON object '
           '{"A, B": 0.6} for labels that contain commas, or @FILE: the thresholds.csv of an evaluated run '
           '(local or gs://; its only run\'s rows, or those of the input\'s run), read at launch.',
           parse_label_thresholds, default={}, regex=LABEL_THRESHOLDS_RE),
    Option('image_size', 'Image size for every image',
           'One size for every image, WIDTHxHEIGHT (e.g. 1024x768).',
           parse_image_size, regex=IMAGE_SIZE_RE),
    Option('image_sizes', 'Image sizes manifest',
           'CSV (header image_uri,width,height) or JSONL with those keys, giving each image\'s size.',
           parse_path, regex=GCS_PATH_RE),
    Option('probe_image_sizes', 'Probe image sizes',
           'Read each image\'s header to learn its size when no other source gives it.',
           parse_bool, default=False, flag=True, regex=BOOL_RE),
    Option('probe_allowed_prefixes', 'Prefixes that may be probed',
           'Comma-separated URI prefixes (such as gs://my-images/) whose images may be opened by '
           '--probe_image_sizes. Default: any image with the same scheme as --input (gs:// or local); '
           'an image URI outside them is never opened.', parse_prefixes),
    Option('keep_labels', 'Labels to keep',
           'Keep only these labels: comma-separated display names (spaces allowed), or a JSON array '
           'for names with commas. A detection without a display name is dropped.',
           parse_labels, regex=LABELS_RE),
    Option('drop_labels', 'Labels to drop',
           'Drop these labels (same syntax as --keep_labels). A detection without a display name is '
           'kept.', parse_labels, regex=LABELS_RE),
    Option('min_box_area', 'Minimum box area',
           'Drop boxes whose normalized area (0 to 1) is below this.',
           parse_fraction, regex=FRACTION_RE),
    Option('max_detections', 'Maximum detections per line',
           'Keep at most this many detections (>= 1) per prediction line, highest scores first, '
           'after NMS.', parse_positive_int, regex=POSITIVE_INT_RE),
    Option('nms_iou', 'NMS IoU threshold',
           'Non-maximum suppression: drop a box whose IoU with a higher-scoring kept box is above '
           'this (0 to 1). Per label unless --nms_class_agnostic.',
           parse_fraction, regex=FRACTION_RE),
    Option('nms_class_agnostic', 'Class-agnostic NMS',
           'Run non-maximum suppression across labels instead of per label.',
           parse_bool, default=False, flag=True, regex=BOOL_RE),
    Option('roi', 'Region of interest',
           'A region of interest as WKT (POLYGON or MULTIPOLYGON) in normalized image coordinates, '
           'or a path (local or gs://) to a file holding it. Boxes outside it are dropped.',
           parse_path, regex=ROI_RE),
    Option('roi_min_overlap', 'Minimum ROI overlap',
           'Keep a box when at least this fraction (0 to 1) of its area lies inside --roi. '
           'Default: any overlap.', parse_fraction, regex=FRACTION_RE),
    Option('ground_truth', 'Ground truth',
           'A file, folder or glob (local or gs://) of labelled boxes: Vertex AI import JSONL, AutoML '
           'Vision CSV or COCO JSON. Turns evaluation on: <output>/evaluation/ receives metrics.json, '
           'matches/, confidence_metrics/ and confusion_matrix/, each prediction run evaluated on its own.',
           parse_path, regex=GCS_PATH_RE, modes=(BATCH,)),
    Option('ground_truth_format', 'Ground truth format',
           'auto (by extension, then by content), vertex_jsonl, automl_csv or coco.',
           parse_choice(GROUND_TRUTH_FORMAT_RE, ', '.join(GROUND_TRUTH_FORMATS)), default='auto',
           regex=GROUND_TRUTH_FORMAT_RE, modes=(BATCH,)),
    Option('ground_truth_image_prefix', 'COCO image prefix',
           'COCO only: the prefix joined to each image\'s file_name to make the image URI the '
           'predictions name (such as gs://bucket/images/); a file_name that is a URI already is taken as '
           'it is. Default: file_name as it is.',
           parse_path, regex=r'^.+$', modes=(BATCH,)),
    Option('ml_use', 'Ground truth ML use',
           'Evaluate only the ground-truth images of this ML use: training (or train), validation, test '
           'or unassigned, in any case.', parse_ml_use, regex=ML_USE_RE, modes=(BATCH,)),
    Option('iou_thresholds', 'IoU thresholds for AP',
           'Comma-separated IoU thresholds (above 0, at most 1) over which AP and AR are averaged. '
           "Default: pycocotools' own, np.linspace(0.5, 0.95, 10), bit for bit.",
           parse_iou_thresholds, default=COCO_IOU_THRESHOLDS, regex=FRACTIONS_RE, modes=(BATCH,)),
    Option('max_dets', 'Detections per image and label',
           "pycocotools' maxDets: comma-separated, increasing caps of the detections of each image and "
           'label, by score. The last one bounds what AP sees (the others are not evaluated at all); each '
           'one gives an AR (ar_1, ar_10, ar_100). 0, last, means no cap.',
           parse_max_dets, default=COCO_MAX_DETS, regex=MAX_DETS_RE, modes=(BATCH,)),
    Option('eval_iou', 'Evaluation IoU',
           'The IoU (above 0, at most 1) of the per-box outcomes, the tp/fp/fn counts, the confidence '
           'metrics and the confusion matrix; and at which --compare_to matches two runs\' boxes.',
           parse_positive_iou, default=0.5, regex=FRACTION_RE, modes=(BATCH,)),
    Option('eval_confidence', 'Confusion matrix confidence',
           'The confidence (0 to 1) at or above which detections enter the confusion matrix.',
           parse_fraction, default=0.5, regex=FRACTION_RE, modes=(BATCH,)),
    Option('target_precision', 'Target precision per label',
           'Each label\'s operating threshold in <output>/evaluation/thresholds.csv: the lowest at which its '
           'precision at --eval_iou reaches this (0 to 1), instead of the best F1. Not with --target_recall.',
           parse_fraction, regex=FRACTION_RE, modes=(BATCH,)),
    Option('target_recall', 'Target recall per label',
           'Each label\'s operating threshold: the highest at which its recall at --eval_iou reaches this '
           '(0 to 1), instead of the best F1. Not with --target_precision.',
           parse_fraction, regex=FRACTION_RE, modes=(BATCH,)),
    Option('compare_to', 'Base run to compare against',
           'A prediction_run of the input (the name the tables give it), or first (the first in name order): '
           'every other run is compared with it image by image, boxes matched at --eval_iou, into '
           '<output>/comparison/ and comparison.json. Needs no ground truth.',
           parse_run_name, regex=RUN_NAME_RE, modes=(BATCH,)),
    Option('image_attributes', 'Image attributes',
           'A file, folder or glob (local or gs://) of image attributes to slice the evaluation by (--slice_by): '
           'CSV with a header, or JSONL; one column or key is the image URI (--image_attributes_key), the '
           'others are attributes (text, numbers, booleans). The first row of an image counts.',
           parse_path, regex=GCS_PATH_RE, modes=(BATCH,)),
    Option('image_attributes_key', 'Image URI column',
           'The column (CSV) or key (JSONL) of --image_attributes that holds the image URI.',
           parse_attribute_name, default='image_uri', regex=RUN_NAME_RE, modes=(BATCH,)),
    Option('slice_by', 'Slice the evaluation by',
           'Comma-separated attributes of --image_attributes, or box_size (COCO\'s small, medium and large) '
           'or prediction_run: each run is also evaluated slice by slice (the twelve numbers, tp/fp/fn and AP per '
           'label of each value) into metrics.json\'s slices and <output>/evaluation/slices/.',
           parse_slice_by, regex=ATTRIBUTE_NAMES_RE, modes=(BATCH,)),
    Option('slice_bins', 'Bins of numeric attributes',
           'How a numeric attribute is sliced: a count of quantile bins (of its values in --image_attributes), '
           'or increasing edges (such as 0,10,100: below 0, [0, 10), [10, 100), from 100). With no more '
           'distinct values than bins, each value is a slice.',
           parse_slice_bins, default=4, regex=SLICE_BINS_RE, modes=(BATCH,)),
    Option('export', 'Export formats',
           'Write the kept boxes for review and relabeling under <output>/export/<format>/: comma-separated '
           'vertex_jsonl (Vertex AI import), automl_csv (AutoML Vision import), coco, label_studio.',
           parse_export_formats, regex=EXPORT_RE, modes=(BATCH,)),
    Option('export_select', 'Images to export',
           'kept (every image with its kept boxes, none included: pre-annotations), uncertain (images with '
           'an annotation scored in [--uncertain_min, --uncertain_max) before thresholds), errors (needs '
           '--ground_truth: images with a false positive or a miss at --eval_iou) or disagreements (needs '
           '--compare_to: each compared run\'s images with a box that is not the same as the base run\'s).',
           parse_choice(EXPORT_SELECT_RE, ', '.join(EXPORT_SELECTIONS)), default='kept', regex=EXPORT_SELECT_RE,
           modes=(BATCH,)),
    Option('uncertain_min', 'Uncertain band, low end', 'The lowest score (0 to 1) of the uncertain band.',
           parse_fraction, default=0.3, regex=FRACTION_RE, modes=(BATCH,)),
    Option('uncertain_max', 'Uncertain band, high end', 'The score (0 to 1) the uncertain band stops below.',
           parse_fraction, default=0.7, regex=FRACTION_RE, modes=(BATCH,)),
    Option('export_ml_use', 'ML use of exported images',
           'Vertex AI and AutoML exports: the ML use written for every image (training, validation or test); '
           'none by default.', parse_choice(EXPORT_ML_USE_RE, 'training, validation, test'),
           regex=EXPORT_ML_USE_RE, modes=(BATCH,)),
    Option('export_image_prefix', 'Exported image URIs',
           'COCO and Label Studio exports: SOURCE_PREFIX=TARGET_PREFIX[,...] rewrites image URIs into what the '
           'labeling tool can open (such as gs://bucket/=/data/local-files/?d=). A target may hold "=".',
           parse_mirrors, regex=r'^[^=,]+=[^,]+(,[^=,]+=[^,]+)*$', modes=(BATCH,)),
    Option('label_studio_from_name', 'Label Studio control name',
           'The from_name of the exported results: the RectangleLabels control of the labeling config.',
           parse_choice(NAME_RE, 'a name of letters, digits, _, . and -'), default='label', regex=NAME_RE,
           modes=(BATCH,)),
    Option('label_studio_to_name', 'Label Studio image name',
           'The to_name of the exported results: the Image object of the labeling config.',
           parse_choice(NAME_RE, 'a name of letters, digits, _, . and -'), default='image', regex=NAME_RE,
           modes=(BATCH,)),
)

OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}
# The options that name a file, folder or glob (local or gs://) that the launch lists or reads: every
# location we write, and those we read (--ground_truth_image_prefix is a prefix, never listed).
LOCATION_OPTIONS = tuple(option.name for option in OPTIONS if option.parse is parse_output_path
                         or option.name in ('input', 'image_sizes', 'roi', 'ground_truth', 'image_attributes'))

# The options by concern, as --help shows them; every option is in exactly one group (a test checks).
OPTION_GROUPS = (
    ('Input', ('input', 'input_format')),
    ('Streaming', ('input_subscription', 'window_seconds', 'dedupe_hours')),
    ('Outputs', ('output', 'dead_letter', 'summary', 'overwrite', 'max_dead_letter_ratio', 'fail_on_warning')),
    ('BigQuery', ('output_table', 'images_table', 'dead_letter_table', 'write_disposition',
                  'bigquery_method')),
    ('Thresholds and post-processing', ('score_threshold', 'label_thresholds', 'keep_labels',
                                        'drop_labels', 'min_box_area', 'roi', 'roi_min_overlap',
                                        'nms_iou', 'nms_class_agnostic', 'max_detections')),
    ('Image sizes', ('image_size', 'image_sizes', 'probe_image_sizes', 'probe_allowed_prefixes')),
    ('Report', ('report', 'report_samples', 'report_image_mirror')),
    ('Evaluation', ('ground_truth', 'ground_truth_format', 'ground_truth_image_prefix', 'ml_use',
                    'iou_thresholds', 'max_dets', 'eval_iou', 'eval_confidence', 'target_precision',
                    'target_recall', 'compare_to')),
    ('Slices', ('image_attributes', 'image_attributes_key', 'slice_by', 'slice_bins')),
    ('Export', ('export', 'export_select', 'uncertain_min', 'uncertain_max', 'export_ml_use',
                'export_image_prefix', 'label_studio_from_name', 'label_studio_to_name')),
)


class PredictionTableOptions(PipelineOptions):
    """Registers the table's options with Beam, so they also show on the Dataflow job page."""

    @classmethod
    def _add_argparse_args(cls, parser):
        for option in OPTIONS:
            if option.flag:
                parser.add_argument(
                    f'--{option.name}', nargs='?', const='true', default=None, help=option.help)
            else:
                parser.add_argument(f'--{option.name}', default=None, help=option.help)


def join_path(root: str, *parts: str) -> str:
    """Joins path parts with '/', for local paths and gs:// alike: the Beam-free twin of
    FileSystems.join, for the layers that stay pure (a test checks they agree on our paths)."""
    return '/'.join([root.rstrip('/')] + [part.strip('/') for part in parts])
