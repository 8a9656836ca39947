import orjson
import pytest

from pipeline.core.dead_letters import INVALID_RECORD, MALFORMED_LINE, PREDICTION_ERROR
from pipeline.core.formats import AUTOML, VERTEX, Prediction, Rejection, parse_line


def automl_line(annotations, uri='gs://b/a.jpg', **extra):
    return orjson.dumps({'ID': uri, 'annotations': annotations, **extra})


def annotation(x1=0.1, y1=0.2, x2=0.5, y2=0.6, score=0.9, label='Salad', label_id='123'):
    return {'annotation_spec_id': label_id, 'display_name': label,
            'image_object_detection': {'bounding_box': {'normalized_vertices': [
                {'x': x1, 'y': y1}, {'x': x2, 'y': y2}], 'vertices': []}, 'score': score}}


def vertex_line(uri='gs://b/v.jpg', **prediction):
    base = {'ids': ['1', '2'], 'displayNames': ['A', 'B'], 'confidences': [0.9, 0.4],
            'bboxes': [[0.1, 0.5, 0.2, 0.6], [0.0, 1.0, 0.0, 1.0]]}
    base.update(prediction)
    base = {key: value for key, value in base.items() if value is not None}
    return orjson.dumps({'instance': {'content': uri, 'mimeType': 'image/jpeg'}, 'prediction': base})


def assert_rejected(result, kind, *fragments):
    assert isinstance(result, Rejection), result
    assert result.kind == kind, result
    for fragment in fragments:
        assert fragment in result.message, result.message


# --- legacy AutoML -----------------------------------------------------------------------------

def test_real_legacy_lines_parse(legacy_lines):
    parsed = [parse_line(line) for line in legacy_lines]
    assert all(isinstance(p, Prediction) for p in parsed)
    assert [len(p.scores) for p in parsed] == [4, 4] + [5] * 8
    first = parsed[0]
    assert first.source_format == AUTOML
    assert first.image_uri.endswith('279324025_3e74a32a84_o.jpg')
    assert first.labels[:2] == ['Baked Goods', 'Tomato']
    assert first.label_ids[0] == '3163553338344079360'
    assert first.scores[0] == pytest.approx(0.96192992)
    assert first.boxes[0] == pytest.approx((0.019032001, 0.047988813, 0.5898183, 0.78811049))


def test_real_legacy_omitted_zero_and_integer_coordinates(legacy_lines):
    first = parse_line(legacy_lines[0])
    # {"x":0.056096584} omits y = 0; {"x":0.99545622,"y":1} has an integer coordinate.
    assert first.boxes[2] == pytest.approx((0.056096584, 0.0, 0.91519189, 0.98487538))
    assert first.boxes[3][3] == 1.0
    empty_vertex = parse_line(legacy_lines[2])  # {} is (0, 0)
    assert empty_vertex.boxes[1][:2] == (0.0, 0.0)


def test_real_legacy_repeated_ids_are_separate_predictions(legacy_lines):
    uris = [parse_line(line).image_uri for line in legacy_lines]
    assert len(uris) == 10 and len(set(uris)) == 2


def test_camel_case_online_predict_shape():
    line = orjson.dumps({'ID': 'gs://b/c.jpg', 'annotations': [{
        'annotationSpecId': '316', 'displayName': 'Baked Goods',
        'imageObjectDetection': {'boundingBox': {'normalizedVertices': [
            {'x': 0.019, 'y': 0.047}, {'x': 0.58, 'y': 0.78}]}, 'score': 0.96}}]})
    parsed = parse_line(line)
    assert parsed.labels == ['Baked Goods'] and parsed.label_ids == ['316']
    assert parsed.boxes == [(0.019, 0.047, 0.58, 0.78)]


def test_box_is_min_max_over_all_vertices():
    ann = annotation()
    ann['image_object_detection']['bounding_box']['normalized_vertices'] = [
        {'x': 0.7, 'y': 0.1}, {'x': 0.2, 'y': 0.9}, {'x': 0.5}]
    assert parse_line(automl_line([ann])).boxes == [(0.2, 0.0, 0.7, 0.9)]


def test_no_annotations_key_or_empty_list_is_an_image_without_detections():
    assert parse_line(b'{"ID":"gs://b/x.jpg"}').scores == []
    assert parse_line(b'{"ID":"gs://b/x.jpg","annotations":[]}').scores == []
    assert parse_line(b'{"ID":"gs://b/x.jpg","annotations":null}').scores == []


def test_label_id_only_and_integer_label_id():
    ann = annotation(label=None, label_id=42)
    del ann['display_name']
    parsed = parse_line(automl_line([ann]))
    assert parsed.labels == [None] and parsed.label_ids == ['42']


def test_uri_with_spaces_and_escapes_is_kept_verbatim():
    uri = 'gs://b/dir with space/ü "q" [1]*#?.png'
    assert parse_line(automl_line([annotation()], uri=uri)).image_uri == uri


def test_clamps_coordinates_within_tolerance():
    parsed = parse_line(automl_line([annotation(x1=-0.004, y1=0.0, x2=1.009, y2=1.0)]))
    assert parsed.boxes == [(0.0, 0.0, 1.0, 1.0)]


@pytest.mark.parametrize('vertices, where', [
    ([{'x': 0.1}, {'x': 1.2}], 'normalized_vertices[1].x: 1.2'), ([{'x': -0.02}, {'x': 0.5}], '[0].x: -0.02')])
def test_a_box_outside_the_image_is_left_out_alone(vertices, where):
    bad = annotation()
    bad['image_object_detection']['bounding_box']['normalized_vertices'] = vertices
    result = parse_line(automl_line([annotation(), bad, annotation()]))
    assert len(result.scores) == 2 and len(result.boxes) == 2
    [(index, message)] = result.rejected_boxes
    assert index == 1 and message.startswith('annotations[1]') and where in message
    assert 'outside the image' in message


def test_a_vertex_box_outside_the_image_is_left_out_alone():
    line = orjson.dumps({'instance': {'content': 'gs://b/a.jpg'}, 'prediction': {
        'ids': ['1', '2'], 'displayNames': ['A', 'B'], 'confidences': [0.9, 0.8],
        'bboxes': [[0.1, 1.5, 0.1, 0.5], [0.2, 0.6, 0.2, 0.6]]}})
    result = parse_line(line)
    assert result.labels == ['B'] and result.scores == [0.8] and result.label_ids == ['2']
    assert result.rejected_boxes == ((0, 'prediction.bboxes[0][1]: 1.5 is outside the image (normalized '
                                          'coordinates are 0 to 1)'),)


@pytest.mark.parametrize('mutate, fragment', [
    (lambda a: a['image_object_detection'].update(score='0.5'), 'image_object_detection.score: expected a number'),
    (lambda a: a['image_object_detection'].update(score=1.5), 'must be in [0, 1]'),
    (lambda a: a['image_object_detection'].update(score=True), 'score'),
    (lambda a: a['image_object_detection'].pop('score'), 'score'),
    (lambda a: a['image_object_detection']['bounding_box'].update(normalized_vertices=[{'x': 0.1}]),
     'at least 2 vertices'),
    (lambda a: a['image_object_detection']['bounding_box'].update(
        normalized_vertices=[{'x': '0.1'}, {'x': 0.2}]), 'normalized_vertices[0].x'),
    (lambda a: a['image_object_detection']['bounding_box'].update(  # a type error beats a box outside
        normalized_vertices=[{'x': 1.2}, {'x': '0.2'}]), 'normalized_vertices[1].x: expected a number'),
    (lambda a: a.pop('image_object_detection'), 'image_object_detection: missing'),
    (lambda a: (a.pop('display_name'), a.pop('annotation_spec_id')), 'neither display_name'),
    (lambda a: a.update(display_name=7), 'display_name: expected a string'),
])
def test_invalid_annotation_names_field_and_index(mutate, fragment):
    bad = annotation()
    mutate(bad)
    result = parse_line(automl_line([annotation(), annotation(), bad]))
    assert_rejected(result, INVALID_RECORD, fragment)
    assert 'annotations[2]' in result.message
    assert result.image_uri == 'gs://b/a.jpg'


@pytest.mark.parametrize('line, fragment', [
    (b'{"annotations":[]}', 'ID'),
    (b'{"ID":42,"annotations":[]}', 'ID'),
    (b'{"ID":"","annotations":[]}', 'ID'),
    (b'{"ID":"gs://b/x.jpg","annotations":{}}', 'annotations: expected a list'),
    (b'{"ID":"gs://b/x.jpg","annotations":[1]}', 'annotations[0]: expected an object'),
    (b'[1,2]', 'expected a JSON object, got an array'),
    (b'"text"', 'got a string'),
    (b'null', 'got null'),
    (b'{"foo":1}', 'neither a legacy AutoML record'),
])
def test_invalid_records(line, fragment):
    assert_rejected(parse_line(line), INVALID_RECORD, fragment)


@pytest.mark.parametrize('line', [
    b'{"ID":"gs://b/x.jpg",', b'not json', b'{"ID":"gs://b/x.jpg","annotations":[NaN]}',
    b'{"x": Infinity}', b'{"x": 1e400}', b'\xff\xfe{"ID":"a"}', b'{"ID":"gs://b/\xc3"}',
    b'[' * 2000 + b']' * 2000,
])
def test_malformed_lines(line):
    assert_rejected(parse_line(line), MALFORMED_LINE, 'not valid JSON')


# --- error lines -------------------------------------------------------------------------------

@pytest.mark.parametrize('line, code, status, message', [
    (b'{"ID":"gs://b/m.jpg","error":{"code":5,"message":"Image not found."}}', 5, 'NOT_FOUND',
     'Image not found.'),
    (b'{"ID":"gs://b/m.jpg","status":{"code":3,"message":"bad"}}', 3, 'INVALID_ARGUMENT', 'bad'),
    (b'{"ID":"gs://b/m.jpg","error":{"status":"NOT_FOUND","message":"gone"}}', 5, 'NOT_FOUND', 'gone'),
    (b'{"instance":{"content":"gs://b/m.jpg","mimeType":"image/jpeg"},'
     b'"error":{"status":"PERMISSION_DENIED","message":"no"}}', 7, 'PERMISSION_DENIED', 'no'),
    (b'{"instance":{"content":"gs://b/m.jpg"},"error":{"code":13}}', 13, 'INTERNAL', ''),
])
def test_error_lines_fill_code_and_status(line, code, status, message):
    result = parse_line(line)
    assert result == Rejection(PREDICTION_ERROR, message, 'gs://b/m.jpg', code, status)


def test_error_line_is_an_error_whatever_the_forced_format():
    line = b'{"ID":"gs://b/m.jpg","error":{"code":5,"message":"x"}}'
    assert parse_line(line, VERTEX).kind == PREDICTION_ERROR


def test_error_status_must_be_an_object():
    assert_rejected(parse_line(b'{"ID":"gs://b/m.jpg","error":"boom"}'), INVALID_RECORD, 'error')


# --- Vertex AI ---------------------------------------------------------------------------------

def test_real_vertex_lines_parse(vertex_lines):
    parsed = parse_line(vertex_lines[0])
    assert parsed.source_format == VERTEX
    assert parsed.image_uri == 'gs://migration-ucaip-trainingaip-20210226015226/279324025_3e74a32a84_o.jpg'
    assert parsed.labels == ['Salad', 'Baked Goods']
    assert parsed.label_ids == ['7754337640727445504', '8330798393030868992']
    # [xMin, xMax, yMin, yMax] -> (x_min, y_min, x_max, y_max)
    assert parsed.boxes[0] == pytest.approx((0.382205, 0.29858154, 0.9760891, 0.9979937))


def test_vertex_reversed_bbox_is_swapped_and_numeric_ids_accepted():
    parsed = parse_line(vertex_line(ids=[1, 2], bboxes=[[0.5, 0.1, 0.6, 0.2], [0.0, 1.0, 0.0, 1.0]]))
    assert parsed.boxes[0] == (0.1, 0.2, 0.5, 0.6)
    assert parsed.label_ids == ['1', '2']


def test_vertex_without_ids_and_names_has_null_labels():
    parsed = parse_line(vertex_line(ids=None, displayNames=None))
    assert parsed.labels == [None, None] and parsed.label_ids == [None, None]


def test_vertex_snake_case_display_names():
    line = orjson.dumps({'instance': {'content': 'gs://b/v.jpg'}, 'prediction': {
        'display_names': ['A'], 'confidences': [0.5], 'bboxes': [[0, 1, 0, 1]]}})
    assert parse_line(line).labels == ['A']


@pytest.mark.parametrize('prediction, fragment', [
    ({'confidences': [0.9]}, 'differ in length'),
    ({'ids': ['1']}, 'ids=1'),
    ({'confidences': None}, 'confidences: missing'),
    ({'bboxes': None}, 'bboxes: missing'),
    ({'bboxes': [[0.1, 0.5, 0.2], [0, 1, 0, 1]]}, 'bboxes[0]: expected 4 numbers'),
    ({'bboxes': [[0.1, 0.5, 0.2, '0.6'], [0, 1, 0, 1]]}, 'bboxes[0][3]'),
    ({'confidences': [0.9, '0.4']}, 'confidences[1]'),
])
def test_invalid_vertex_records(prediction, fragment):
    assert_rejected(parse_line(vertex_line(**prediction)), INVALID_RECORD, fragment)


def test_vertex_instance_without_content_is_invalid():
    line = b'{"instance":{"mimeType":"image/jpeg"},"prediction":{"confidences":[],"bboxes":[]}}'
    assert_rejected(parse_line(line), INVALID_RECORD, 'instance.content')


def test_forced_format_rejects_the_other_format(vertex_lines, legacy_lines):
    assert_rejected(parse_line(vertex_lines[0], AUTOML), INVALID_RECORD, '--input_format=automl')
    assert_rejected(parse_line(legacy_lines[0], VERTEX), INVALID_RECORD, '--input_format=vertex')
    assert parse_line(vertex_lines[0], VERTEX).source_format == VERTEX
