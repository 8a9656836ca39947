"""The typed decoder (msgspec structs, with the full validator for the lines it declines) gives
exactly what the full validator alone gives: the same predictions, tables, counts and dead letters,
for any line, in both formats, at any score floor."""
import json

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pipeline.config.settings import Settings
from pipeline.core import dead_letters, decoding
from pipeline.core.decoding import BatchDecoder, BoxRejection, DecodedLines
from pipeline.core.formats import AUTOML, VERTEX, Prediction, Rejection, parse_line
from pipeline.core.tables import ImageSize, build_tables

good_number = st.one_of(st.floats(0, 1), st.just(0), st.just(1), st.just(0.0), st.just(1.0), st.just(-0.0))
bad_number = st.one_of(st.floats(-0.05, 1.05), st.integers(-1, 2), st.booleans(), st.none(),
                       st.text(max_size=3), st.just(2 ** 70), st.just(1e300))
number = st.one_of(good_number, good_number, good_number, bad_number)
label = st.one_of(st.text(max_size=5), st.text(max_size=5), st.none(), st.integers(-2 ** 65, 2 ** 65),
                  st.floats(), st.just(2 ** 63 + 5))


KEYS = ('display_name', 'annotation_spec_id', 'image_object_detection', 'bounding_box', 'normalized_vertices')
CAMEL_KEYS = ('displayName', 'annotationSpecId', 'imageObjectDetection', 'boundingBox', 'normalizedVertices')


def legacy_annotation(snake=True):
    """Any annotation, mostly broken somewhere."""
    name, spec, det, box, verts = KEYS if snake else CAMEL_KEYS
    vertex = st.one_of(st.fixed_dictionaries({}, optional={'x': number, 'y': number}),
                       st.fixed_dictionaries({'x': number, 'y': number, 'z': bad_number}),
                       st.lists(good_number, max_size=2))
    good_vertex = st.fixed_dictionaries({}, optional={'x': good_number, 'y': good_number})
    vertices = st.one_of(st.lists(good_vertex, min_size=2, max_size=2), st.lists(good_vertex, min_size=2, max_size=2),
                         st.lists(vertex, max_size=4), vertex, st.none())
    detection = st.one_of(
        st.fixed_dictionaries({'score': number, box: st.fixed_dictionaries(
            {verts: vertices}, optional={'vertices': st.just([])})}),
        st.fixed_dictionaries({}, optional={'score': number, box: st.fixed_dictionaries({verts: vertices})}),
        st.none(), st.text(max_size=2))
    return st.one_of(
        st.fixed_dictionaries({name: st.text(max_size=5), spec: st.one_of(st.text(max_size=5), st.integers()),
                               det: detection}),
        st.fixed_dictionaries({}, optional={name: label, spec: label, det: detection}),
        st.integers())


def good_annotation(snake=True):
    """A valid annotation as batchPredict (snake_case) or the online predict response writes it."""
    keys = KEYS if snake else CAMEL_KEYS
    return st.fixed_dictionaries({
        keys[0]: st.sampled_from(['Salad', 'Tomato', 'ü "x"', '']), keys[1]: st.one_of(st.text(max_size=3), st.integers()),
        keys[2]: st.fixed_dictionaries({'score': good_number, keys[3]: st.fixed_dictionaries({keys[4]: st.lists(
            st.fixed_dictionaries({}, optional={'x': good_number, 'y': good_number}), min_size=2, max_size=3)},
            optional={'vertices': st.just([])})})})


annotation = st.one_of(good_annotation(), good_annotation(), good_annotation(), good_annotation(snake=False),
                       legacy_annotation(), legacy_annotation(snake=False),
                       st.builds(lambda a, b: {**a, **b} if isinstance(a, dict) and isinstance(b, dict) else a,
                                 legacy_annotation(), legacy_annotation(snake=False)))  # both spellings
status = st.fixed_dictionaries({}, optional={'code': st.one_of(st.integers(0, 20), st.text(max_size=3)),
                                             'status': st.sampled_from(['NOT_FOUND', 'X']),
                                             'message': st.text(max_size=5)})
uri = st.one_of(st.text(min_size=1, max_size=8), st.text(max_size=2), st.none(), st.integers())
good_legacy_record = st.fixed_dictionaries({'ID': st.text(min_size=1, max_size=8)}, optional={
    'annotations': st.one_of(st.lists(good_annotation(), max_size=5), st.lists(good_annotation(snake=False), max_size=5),
                             st.lists(annotation, max_size=5))})
legacy_record = st.one_of(good_legacy_record, good_legacy_record, good_legacy_record, st.fixed_dictionaries(
    {'ID': uri},
    optional={'annotations': st.one_of(st.lists(annotation, max_size=4), st.lists(annotation, max_size=4),
                                       st.none(), st.text(max_size=2)),
              'error': st.one_of(status, st.none()), 'status': status, 'instance': st.none(),
              'vertices': st.just([])}))


@st.composite
def vertex_record(draw):
    n = draw(st.integers(0, 4))
    length = lambda: st.sampled_from([n, n, n, n, n + 1, max(n - 1, 0)])
    box = st.one_of(st.lists(good_number, min_size=4, max_size=4), st.lists(good_number, min_size=4, max_size=4),
                    st.lists(number, min_size=3, max_size=5), st.none())
    prediction = {'confidences': st.lists(number, min_size=draw(length()), max_size=n + 1),
                  'bboxes': st.lists(box, min_size=draw(length()), max_size=n + 1)}
    optional = {'ids': st.one_of(st.lists(label, min_size=draw(length()), max_size=n + 1), st.none()),
                'displayNames': st.one_of(st.lists(st.one_of(st.text(max_size=4), st.none()),
                                                   min_size=draw(length()), max_size=n + 1), st.none()),
                'display_names': st.lists(st.text(max_size=2), max_size=n)}
    if draw(st.integers(0, 3)):  # mostly valid
        return {'instance': {'content': draw(st.text(min_size=1, max_size=8)), 'mimeType': 'image/jpeg'},
                'prediction': {'ids': [draw(st.one_of(st.text(max_size=3), st.integers())) for _ in range(n)],
                               'displayNames': [draw(st.sampled_from(['Salad', 'ü', ''])) for _ in range(n)],
                               'confidences': [draw(good_number) for _ in range(n)],
                               'bboxes': [[draw(good_number) for _ in range(4)] for _ in range(n)]}}
    fields = {'instance': st.one_of(st.fixed_dictionaries({'content': uri}, optional={'mimeType': st.text(max_size=3)}),
                                    st.none()),
              'prediction': st.one_of(st.fixed_dictionaries(prediction, optional=optional), st.none())}
    return draw(st.fixed_dictionaries(fields, optional={'error': status, 'ID': st.text(max_size=2)}))


def dumps(value, indent=None):
    return json.dumps(value, ensure_ascii=False, indent=indent).encode()  # integers of any size, NaN


@st.composite
def serialized(draw, record):
    """Compact JSON, indented JSON, or a line broken in one of the ways real files break."""
    line = dumps(draw(record))
    return draw(st.sampled_from([
        line, line, line, line,
        dumps(json.loads(line), indent=2).replace(b'\n', b' '),
        line[:draw(st.integers(1, 80))],                   # truncated
        line.replace(b'0.', b'"0.', 1),                    # a number as a string, or broken JSON
        line.replace(b'"ID"', b'"x": "\xff", "ID"', 1),     # invalid UTF-8 in a field never read
        b'[' + line + b']',                                # wrong shape
        line.replace(b'"ID"', b'"ID": "dup", "ID"', 1),    # a duplicate key: the last one counts
    ]))


any_line = st.one_of(serialized(legacy_record), serialized(vertex_record()), st.binary(max_size=20),
                     st.sampled_from([b'{"predictions": [{"ids": []}]}', b'{"payload": []}', b'null']))
floors = st.sampled_from([0.0, 0.3, 0.5, 1.0])
formats = st.sampled_from(['auto', 'auto', AUTOML, VERTEX])


def decode_line(line, input_format='auto', score_floor=0.0):
    """One line through the batch decoder: its columns, or its rejection."""
    batch = BatchDecoder(input_format, score_floor).decode([line])
    return batch.rejections[0][1] if batch.rejections else batch.lines


def view(lines: DecodedLines):
    return (lines.image_uris, lines.source_formats, lines.annotations_per_line.tolist(), lines.line_index.tolist(),
            lines.labels, lines.label_ids, lines.scores.tolist(), lines.boxes.tolist(), lines.dropped_scores.tolist())


def assert_agrees(line, input_format, floor):
    """The typed path against the full validator, for one line: rejections identical; the columns
    the same, or (a legacy line taken by the typed path) with the annotations below the floor
    reduced to their scores."""
    typed = decode_line(line, input_format, floor)
    full = parse_line(line, input_format)
    if isinstance(full, Rejection):
        assert typed == full
        event(f'rejected: {full.kind}')
        return
    assert isinstance(typed, DecodedLines)
    kept = [i for i, score in enumerate(full.scores) if score >= floor]
    floored = Prediction(full.image_uri, full.source_format, [full.labels[i] for i in kept],
                         [full.label_ids[i] for i in kept], [full.scores[i] for i in kept],
                         [c for i in kept for c in full.coordinates[4 * i:4 * i + 4]],
                         [s for s in full.scores if s < floor], full.rejected_boxes)
    assert view(typed) in (view(DecodedLines.of([full])), view(DecodedLines.of([floored])))
    floored_differs = view(typed) == view(DecodedLines.of([floored])) != view(DecodedLines.of([full]))
    event(f'{full.source_format}, {"with" if full.scores else "without"} annotations, '
          f'{"floored" if floored_differs else "as is"}')


# 4,200 lines in all, one test per input format so that the test workers share them.
@pytest.mark.parametrize('input_format', ['auto', 'automl', 'vertex'])
@settings(max_examples=1400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(line=any_line, floor=floors)
def test_any_line_gives_what_the_full_validator_gives(line, input_format, floor):
    assert_agrees(line, input_format, floor)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(any_line, max_size=12), formats, floors, st.sampled_from([
    {}, {'label_thresholds': {'Salad': 0.2}}, {'nms_iou': 0.4, 'max_detections': 2}, {'drop_labels': ('',)}]))
def test_any_batch_gives_the_tables_counts_and_dead_letters_of_the_full_validator(lines, input_format, floor,
                                                                                 options):
    postprocessing = Settings.of(input='in', output='out', score_threshold=floor, **options).postprocessing

    def tables(decoded, rejections):
        sizes = [ImageSize(640, 480, 'fixed') if i % 2 else None for i in range(len(decoded.image_uris))]
        return (build_tables(decoded, sizes, 'f', 'run', postprocessing),
                [dead_letters.from_rejection(rejection, 'f', lines[position], timestamp='t')
                 for position, rejection in rejections])

    batch = BatchDecoder(input_format, postprocessing.score_floor).decode(lines)
    typed, typed_dead = tables(batch.lines, batch.rejections)
    full_parsed = [parse_line(line, input_format) for line in lines]
    full, full_dead = tables(DecodedLines.of([p for p in full_parsed if isinstance(p, Prediction)]),
                             [(i, p) for i, p in enumerate(full_parsed) if isinstance(p, Rejection)])
    assert typed.detections.equals(full.detections)
    assert typed.images.equals(full.images)
    assert typed.counts == full.counts
    assert typed_dead == full_dead


@pytest.fixture
def full_validator_forbidden(monkeypatch):
    def forbidden(line, input_format='auto'):
        raise AssertionError(f'the full validator was asked about {line[:80]!r}')
    monkeypatch.setattr(decoding, 'parse_line', forbidden)


def test_the_real_lines_of_both_formats_take_the_typed_path(legacy_lines, vertex_lines, full_validator_forbidden):
    batch = BatchDecoder().decode(legacy_lines + vertex_lines)
    assert not batch.rejections and len(batch.lines.image_uris) == len(legacy_lines + vertex_lines)


def test_a_saved_online_response_is_in_camel_case_and_takes_the_typed_path(full_validator_forbidden):
    line = (b'{"ID":"gs://b/a.jpg","annotations":[{"annotationSpecId":"1","displayName":"Salad",'
            b'"imageObjectDetection":{"boundingBox":{"normalizedVertices":[{"x":0.5},{"x":0.9,"y":1}]},'
            b'"score":0.9}}]}')
    decoded = decode_line(line)
    assert decoded.labels == ['Salad'] and decoded.boxes.tolist() == [[0.5, 0.0, 0.9, 1.0]]


def test_what_the_typed_path_declines_is_decided_by_the_full_validator():
    parser = BatchDecoder()
    noise = b'{"ID":"gs://b/a.jpg","annotations":[{"display_name":"A","annotation_spec_id":"1",' \
            b'"image_object_detection":{"score":0.5,"bounding_box":{"normalized_vertices":[{"x":1.004},{}]}}}]}'
    assert parser.decode([noise]).lines.boxes.tolist() == [[0.0, 0.0, 1.0, 0.0]]  # within the tolerance
    outside = noise.replace(b'1.004', b'1.02')
    decoded = parser.decode([outside])  # the line stays, without its box outside the image
    assert decoded.rejections == [] and decoded.lines.annotations_per_line.tolist() == [1]
    assert decoded.box_rejections == [BoxRejection(
        0, 0, 'annotations[0].image_object_detection.bounding_box.normalized_vertices[0].x: '
        '1.02 is outside the image (normalized coordinates are 0 to 1)', 'gs://b/a.jpg')]
    assert parser.decode([outside.replace(b'{}', b'{"y":"0"}')]).rejections[0][1].kind == 'invalid_record'
    assert decode_line(b'{"ID":"gs://b/a.jpg","x":"\xff"}').kind == 'malformed_line'
    for depth in (100, 5000):  # msgspec raises RecursionError past its own limit
        nested = b'{"ID":"gs://b/a.jpg","annotations":' + b'[' * depth + b']' * depth + b'}'
        assert decode_line(nested) == parse_line(nested)


def test_an_online_prediction_response_is_named_as_such():
    for line in (b'{"predictions": [{"ids": ["1"], "confidences": [0.9]}], "deployedModelId": "1"}',
                 b'{"payload": [{"displayName": "Salad"}]}'):
        for input_format in ('auto', AUTOML, VERTEX):
            rejection = decode_line(line, input_format)
            assert rejection.kind == 'invalid_record'
            assert rejection.message.startswith('an online prediction response'), rejection.message
            assert 'no image URI' in rejection.message


def test_the_format_of_the_last_line_is_tried_first(legacy_lines, vertex_lines):
    decoder = BatchDecoder()
    decoder.decode(legacy_lines)
    assert decoder._typed[0][0] is decoding.records.LEGACY_DECODER
    assert not decoder.decode(vertex_lines + legacy_lines + vertex_lines).rejections
    assert decoder._typed[0][0] is decoding.records.VERTEX_DECODER
