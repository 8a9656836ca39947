"""The legacy fast path must agree exactly with the full validator on everything it accepts."""
import orjson
from hypothesis import event, given, settings
from hypothesis import strategies as st

from pipeline.core.formats import Prediction, _fast_automl, _parse_automl, parse_line

good_number = st.one_of(st.floats(0, 1), st.just(0), st.just(1), st.just(0.0), st.just(1.0))
bad_number = st.one_of(st.floats(-0.05, 1.05), st.integers(-1, 2), st.booleans(), st.none(),
                       st.text(max_size=3))
number = st.one_of(good_number, good_number, good_number, bad_number)
vertex = st.one_of(
    st.fixed_dictionaries({}, optional={'x': number, 'y': number}),
    st.fixed_dictionaries({'x': number, 'y': number, 'z': bad_number}),
    st.lists(good_number, max_size=2))
vertices = st.one_of(st.lists(vertex, min_size=2, max_size=2), st.lists(vertex, max_size=3),
                     vertex, st.text(max_size=2))
detection = st.one_of(
    st.fixed_dictionaries({'score': number, 'bounding_box': st.fixed_dictionaries(
        {'normalized_vertices': vertices}, optional={'vertices': st.just([])})}),
    st.fixed_dictionaries({}, optional={'score': number, 'boundingBox': st.fixed_dictionaries(
        {'normalizedVertices': vertices})}),
    st.lists(st.integers(), max_size=2), st.text(max_size=2))
label = st.one_of(st.text(max_size=5), st.text(max_size=5), st.none(), st.integers())
good_vertex = st.fixed_dictionaries({}, optional={'x': good_number, 'y': good_number})
good_annotation = st.fixed_dictionaries({
    'display_name': st.text(max_size=5), 'annotation_spec_id': st.text(max_size=5),
    'image_object_detection': st.fixed_dictionaries({
        'score': good_number,
        'bounding_box': st.fixed_dictionaries({
            'normalized_vertices': st.lists(good_vertex, min_size=2, max_size=2)})})})
annotation = st.one_of(
    good_annotation, good_annotation, good_annotation, good_annotation, good_annotation,
    st.fixed_dictionaries({'display_name': label, 'annotation_spec_id': label,
                           'image_object_detection': detection}),
    st.fixed_dictionaries({}, optional={'display_name': label, 'annotation_spec_id': label,
                                        'image_object_detection': detection,
                                        'displayName': st.text(max_size=3)}),
    st.integers())
good_record = st.fixed_dictionaries({
    'ID': st.text(min_size=1, max_size=8),
    'annotations': st.lists(st.one_of(good_annotation, good_annotation, annotation), min_size=1, max_size=3)})
messy_record = st.fixed_dictionaries(
    {'ID': st.one_of(st.text(min_size=1, max_size=8), st.text(max_size=8), st.none(), st.integers())},
    optional={'annotations': st.one_of(st.lists(annotation, max_size=4), st.none(), st.text(max_size=2)),
              'error': st.just({'code': 5})})
record = st.one_of(good_record, good_record, messy_record)


@settings(max_examples=3000, deadline=None)
@given(record)
def test_fast_path_agrees_with_the_full_validator(value):
    fast = _fast_automl(value)
    event('fast path taken, with annotations' if fast is not None and fast.scores else
          'fast path taken' if fast is not None else 'fast path declined')
    if fast is None:
        return
    full = _parse_automl(value)
    assert fast == full
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool)
               for box in fast.boxes for v in box)


@settings(max_examples=1000, deadline=None)
@given(record, st.sampled_from([0.0, 0.3, 0.5, 1.0]))
def test_below_the_score_floor_only_scores_are_kept_and_nothing_goes_unvalidated(value, floor):
    fast = _fast_automl(value, floor)
    if fast is None:
        return
    full = _parse_automl(value)
    kept = [i for i, score in enumerate(full.scores) if score >= floor]
    assert fast.scores == [full.scores[i] for i in kept]
    assert fast.labels == [full.labels[i] for i in kept]
    assert fast.label_ids == [full.label_ids[i] for i in kept]
    assert fast.boxes == [full.boxes[i] for i in kept]
    assert list(fast.dropped_scores) == [s for s in full.scores if s < floor]


def test_fast_path_takes_the_real_lines(legacy_lines):
    for line in legacy_lines:
        assert _fast_automl(orjson.loads(line)) is not None


def test_fast_path_gives_way_on_anything_unusual():
    base = {'ID': 'gs://b/a.jpg', 'annotations': [{
        'display_name': 'A', 'annotation_spec_id': '1', 'image_object_detection': {
            'score': 0.5, 'bounding_box': {'normalized_vertices': [{'x': 0.1}, {'x': 0.2, 'y': 0.3}]}}}]}
    assert isinstance(_fast_automl(base), Prediction)
    clamped = orjson.loads(orjson.dumps(base).replace(b'"x":0.2', b'"x":1.004'))
    assert _fast_automl(clamped) is None and parse_line(orjson.dumps(clamped)).boxes[0][2] == 1.0
    three = orjson.loads(orjson.dumps(base).replace(b'{"x":0.1}', b'{"x":0.1},{"x":0.9}'))
    assert _fast_automl(three) is None and parse_line(orjson.dumps(three)).boxes[0][2] == 0.9
