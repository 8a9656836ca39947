"""Pure parsing of one prediction line (bytes) into a `Prediction` or a `Rejection`.

Both formats of ../shared/formats.md: legacy AutoML Vision (`ID` + `annotations`, snake_case or camelCase)
and Vertex AI (`instance` + `prediction` with parallel arrays). A rejection says which dead-letter kind
the line is and why, naming the field and the annotation index.
"""
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple, Union

import orjson
from google.rpc import code_pb2

from pipeline.core.dead_letters import INVALID_RECORD, MALFORMED_LINE, PREDICTION_ERROR

AUTOML = 'automl'
VERTEX = 'vertex'


# Coordinates this far outside [0, 1] are float noise and are clamped; beyond it the record is invalid.
COORDINATE_TOLERANCE = 0.01

# google.rpc.Code: numeric code <-> enum name, from Google's own definition.
RPC_CODES = {value.number: value.name for value in code_pb2.Code.DESCRIPTOR.values}
RPC_STATUS_NAMES = {name: code for code, name in RPC_CODES.items()}

Box = Tuple[float, float, float, float]  # x_min, y_min, x_max, y_max, normalized


class Prediction(NamedTuple):
    """One valid result line, as the full validator gives it: the image and its annotations as
    parallel lists, the coordinates one flat list of 4 numbers per annotation."""
    image_uri: str
    source_format: str
    labels: List[Optional[str]]
    label_ids: List[Optional[str]]
    scores: List[float]
    coordinates: List[float]  # x_min, y_min, x_max, y_max of each annotation, normalized
    # Annotations left out of the lists above (tests build such predictions; the typed decoder of
    # `decoding` leaves out those below the score floor): only their scores, for counts and histograms.
    dropped_scores: Sequence[float] = ()
    # (index on the line, why) of the annotations left out because their box lies outside the image:
    # each one is a dead letter of its own, and the line keeps its other annotations.
    rejected_boxes: Tuple[Tuple[int, str], ...] = ()

    @property
    def boxes(self) -> List[Box]:
        flat = self.coordinates
        return [(flat[i], flat[i + 1], flat[i + 2], flat[i + 3]) for i in range(0, len(flat), 4)]


class Rejection(NamedTuple):
    """A line that goes to the dead-letter sink, and why."""
    kind: str
    message: str
    image_uri: Optional[str] = None
    error_code: Optional[int] = None
    error_status: Optional[str] = None


class _Invalid(Exception):
    """Raised inside the parser for a line that is JSON but not a valid record."""


class _BadBox(_Invalid):
    """An annotation's box lies outside the image: that annotation is rejected, not the line."""


def parse_line(line: bytes, input_format: str = 'auto') -> Union[Prediction, Rejection]:
    """The full validator of one non-blank line; `input_format` is 'auto', AUTOML or VERTEX. Every
    line the typed decoder of `decoding` declines comes here, which names the dead-letter kind and
    the field (and annotation index) at fault."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return Rejection(MALFORMED_LINE, f'not valid JSON: {exc}')
    if not isinstance(record, dict):
        return Rejection(INVALID_RECORD, f'expected a JSON object, got {_json_type(record)}')
    image_uri = _image_uri_or_none(record)
    try:
        status = _error_status(record)
        if status is not None:
            code, name, message = status
            return Rejection(PREDICTION_ERROR, message, image_uri, code, name)
        record_format = _detect_format(record, input_format)
        if record_format == VERTEX:
            return _parse_vertex(record)
        return _parse_automl(record)
    except _Invalid as exc:
        return Rejection(INVALID_RECORD, str(exc), image_uri)


# The keys of a saved online prediction response: legacy AutoML's `payload`, Vertex AI's `predictions`.
ONLINE_RESPONSE_KEYS = ('payload', 'predictions')


def _detect_format(record: dict, input_format: str) -> str:
    looks_vertex = 'instance' in record or 'prediction' in record
    looks_automl = 'ID' in record or 'annotations' in record
    if not looks_vertex and not looks_automl and any(key in record for key in ONLINE_RESPONSE_KEYS):
        raise _Invalid('an online prediction response (`payload` or `predictions`), saved to a file: it '
                       'carries no image URI, so it cannot be a batch prediction result line; run a batch '
                       'prediction, or write one line per image with its URI')
    if input_format == AUTOML:
        if looks_vertex and not looks_automl:
            raise _Invalid('a Vertex AI record, but --input_format=automl')
        return AUTOML
    if input_format == VERTEX:
        if looks_automl and not looks_vertex:
            raise _Invalid('a legacy AutoML record, but --input_format=vertex')
        return VERTEX
    if looks_vertex and not looks_automl:
        return VERTEX
    if looks_automl and not looks_vertex:
        return AUTOML
    raise _Invalid('neither a legacy AutoML record (ID, annotations) nor a Vertex AI record '
                   '(instance, prediction)')


def _image_uri_or_none(record: dict) -> Optional[str]:
    uri = record.get('ID')
    if uri is None:
        instance = record.get('instance')
        if isinstance(instance, dict):
            uri = instance.get('content')
    return uri if isinstance(uri, str) and uri else None


def _error_status(record: dict) -> Optional[Tuple[Optional[int], Optional[str], str]]:
    """(code, status name, message) when the line carries a google.rpc.Status, else None."""
    for key in ('error', 'status'):
        value = record.get(key)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise _Invalid(f'{key}: expected a google.rpc.Status object, got {_json_type(value)}')
        return _normalize_status(key, value)
    return None


def _normalize_status(key: str, status: dict) -> Tuple[Optional[int], Optional[str], str]:
    code = status.get('code')
    name = status.get('status')
    if code is not None and (isinstance(code, bool) or not isinstance(code, int)):
        if isinstance(code, str) and code in RPC_STATUS_NAMES:
            name, code = name or code, None  # the enum name written in the code field
        else:
            raise _Invalid(f'{key}.code: expected an integer, got {_json_type(code)}')
    if name is not None and not isinstance(name, str):
        raise _Invalid(f'{key}.status: expected an enum name, got {_json_type(name)}')
    if code is None and name is not None:
        code = RPC_STATUS_NAMES.get(name)
    if name is None and code is not None:
        name = RPC_CODES.get(code)
    message = status.get('message')
    if message is None:
        message = ''
    elif not isinstance(message, str):
        message = orjson.dumps(message).decode()
    return code, name, message


def _parse_automl(record: dict) -> Prediction:
    image_uri = _require_uri(record.get('ID'), 'ID')
    annotations = record.get('annotations')
    if annotations is None:
        annotations = []
    elif not isinstance(annotations, list):
        raise _Invalid(f'annotations: expected a list, got {_json_type(annotations)}')
    labels: List[Optional[str]] = []
    label_ids: List[Optional[str]] = []
    scores: List[float] = []
    coordinates: List[float] = []
    rejected: List[Tuple[int, str]] = []
    for index, annotation in enumerate(annotations):
        where = f'annotations[{index}]'
        if not isinstance(annotation, dict):
            raise _Invalid(f'{where}: expected an object, got {_json_type(annotation)}')
        label = _optional_label(_get(annotation, 'display_name', 'displayName'), f'{where}.display_name')
        label_id = _optional_label_id(
            _get(annotation, 'annotation_spec_id', 'annotationSpecId'), f'{where}.annotation_spec_id')
        if label is None and label_id is None:
            raise _Invalid(f'{where}: has neither display_name nor annotation_spec_id')
        detection = _get(annotation, 'image_object_detection', 'imageObjectDetection')
        if not isinstance(detection, dict):
            raise _Invalid(f'{where}.image_object_detection: missing or not an object')
        where = f'{where}.image_object_detection'
        score = _score(detection.get('score'), f'{where}.score')
        try:
            coordinates.extend(_automl_box(detection, where))
        except _BadBox as exc:
            rejected.append((index, str(exc)))
            continue
        scores.append(score)
        labels.append(label)
        label_ids.append(label_id)
    return Prediction(image_uri, AUTOML, labels, label_ids, scores, coordinates, rejected_boxes=tuple(rejected))


def _automl_box(detection: dict, where: str) -> Box:
    box = _get(detection, 'bounding_box', 'boundingBox')
    if not isinstance(box, dict):
        raise _Invalid(f'{where}.bounding_box: missing or not an object')
    vertices = _get(box, 'normalized_vertices', 'normalizedVertices')
    where = f'{where}.bounding_box.normalized_vertices'
    if not isinstance(vertices, list) or len(vertices) < 2:
        raise _Invalid(f'{where}: expected at least 2 vertices, got {_describe(vertices)}')
    for index, vertex in enumerate(vertices):
        if not isinstance(vertex, dict):
            raise _Invalid(f'{where}[{index}]: expected an object, got {_json_type(vertex)}')
    found = _coordinates([(vertex.get(axis, 0), f'{where}[{index}].{axis}')
                          for index, vertex in enumerate(vertices) for axis in 'xy'])
    xs, ys = found[0::2], found[1::2]
    return min(xs), min(ys), max(xs), max(ys)


def _parse_vertex(record: dict) -> Prediction:
    instance = record.get('instance')
    if not isinstance(instance, dict):
        raise _Invalid(f'instance: expected an object, got {_json_type(instance)}')
    image_uri = _require_uri(instance.get('content'), 'instance.content')
    prediction = record.get('prediction')
    if not isinstance(prediction, dict):
        raise _Invalid(f'prediction: expected an object, got {_json_type(prediction)}')
    confidences = _required_array(prediction, 'confidences', 'confidences')
    bboxes = _required_array(prediction, 'bboxes', 'bboxes')
    ids = _array(prediction, 'ids', 'ids', required=False)
    names = _array(prediction, 'display_names', 'displayNames', required=False)
    lengths = {'confidences': len(confidences), 'bboxes': len(bboxes)}
    if ids is not None:
        lengths['ids'] = len(ids)
    if names is not None:
        lengths['displayNames'] = len(names)
    if len(set(lengths.values())) > 1:
        found = ', '.join(f'{key}={value}' for key, value in lengths.items())
        raise _Invalid(f'prediction: parallel arrays differ in length ({found})')
    count = len(confidences)
    labels: List[Optional[str]] = ([_optional_label(name, f'prediction.displayNames[{i}]')
                                     for i, name in enumerate(names)] if names is not None else [None] * count)
    label_ids: List[Optional[str]] = ([_optional_label_id(value, f'prediction.ids[{i}]')
                                        for i, value in enumerate(ids)] if ids is not None else [None] * count)
    scores = [_score(value, f'prediction.confidences[{i}]') for i, value in enumerate(confidences)]
    boxes: List[Optional[Box]] = []
    rejected: List[Tuple[int, str]] = []
    for i, value in enumerate(bboxes):
        try:
            boxes.append(_vertex_box(value, f'prediction.bboxes[{i}]'))
        except _BadBox as exc:
            boxes.append(None)
            rejected.append((i, str(exc)))
    kept = [i for i, box in enumerate(boxes) if box is not None]
    return Prediction(image_uri, VERTEX, [labels[i] for i in kept], [label_ids[i] for i in kept],
                      [scores[i] for i in kept], [c for i in kept for c in boxes[i] or ()],
                      rejected_boxes=tuple(rejected))


def _vertex_box(value: Any, where: str) -> Box:
    """[xMin, xMax, yMin, yMax], swapped into order when reversed."""
    if not isinstance(value, list) or len(value) != 4:
        raise _Invalid(f'{where}: expected 4 numbers [xMin, xMax, yMin, yMax], got {_describe(value)}')
    x1, x2, y1, y2 = _coordinates([(v, f'{where}[{i}]') for i, v in enumerate(value)])
    return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)


def _required_array(container: dict, snake: str, camel: str) -> list:
    value = _array(container, snake, camel, required=True)
    assert value is not None  # _array raised otherwise
    return value


def _array(container: dict, snake: str, camel: str, required: bool) -> Optional[list]:
    value = _get(container, snake, camel)
    if value is None:
        if required:
            raise _Invalid(f'prediction.{camel}: missing')
        return None
    if not isinstance(value, list):
        raise _Invalid(f'prediction.{camel}: expected a list, got {_json_type(value)}')
    return value


def _get(container: dict, snake: str, camel: str) -> Any:
    value = container.get(snake)
    return container.get(camel) if value is None else value


def _require_uri(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise _Invalid(f'{where}: expected the image URI as a non-empty string, got {_describe(value)}')
    return value


def _optional_label(value: Any, where: str) -> Optional[str]:
    if value is None or isinstance(value, str):
        return value
    raise _Invalid(f'{where}: expected a string, got {_json_type(value)}')


def _optional_label_id(value: Any, where: str) -> Optional[str]:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # int64 ids are documented as numbers and written as strings
    if isinstance(value, float) and abs(value) >= 2.0 ** 64:
        # JSON integers beyond 64 bits reach us as floats, their exact digits already lost.
        raise _Invalid(f'{where}: the integer is too large (above 2^64) to be kept exactly; an id '
                       f'that large must be written as a string')
    raise _Invalid(f'{where}: expected a string or an integer, got {_json_type(value)}')


def _score(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid(f'{where}: expected a number in [0, 1], got {_describe(value)}')
    if not 0.0 <= value <= 1.0:
        raise _Invalid(f'{where}: must be in [0, 1], got {value!r}')
    return float(value)


def _coordinates(values: List[Tuple[Any, str]]) -> List[float]:
    """Each (value, where) as a coordinate. Every one is checked as a number first: a box outside the
    image (_BadBox) is the box's fault only when the line holds nothing worse."""
    outside: Optional[_BadBox] = None
    found = []
    for value, where in values:
        try:
            found.append(_coordinate(value, where))
        except _BadBox as exc:
            outside = outside or exc
    if outside is not None:
        raise outside
    return found


def _coordinate(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid(f'{where}: expected a number, got {_describe(value)}')
    if value < 0.0:
        if value < -COORDINATE_TOLERANCE:
            raise _BadBox(f'{where}: {value!r} is outside the image (normalized coordinates are 0 to 1)')
        return 0.0
    if value > 1.0:
        if value > 1.0 + COORDINATE_TOLERANCE:
            raise _BadBox(f'{where}: {value!r} is outside the image (normalized coordinates are 0 to 1)')
        return 1.0
    return float(value)


def _json_type(value: Any) -> str:
    if value is None:
        return 'null'
    if isinstance(value, bool):
        return 'a boolean'
    if isinstance(value, (int, float)):
        return 'a number'
    if isinstance(value, str):
        return 'a string'
    if isinstance(value, list):
        return 'an array'
    return 'an object'


def _describe(value: Any) -> str:
    """The JSON type, with a short rendering of small values."""
    if value is None:
        return 'null'
    if isinstance(value, (str, int, float, bool)) or (isinstance(value, list) and len(value) <= 4):
        text = orjson.dumps(value).decode()
        if len(text) <= 60:
            return f'{_json_type(value)} {text}'
    return _json_type(value)
