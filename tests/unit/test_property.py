"""Random mixtures of valid and invalid lines in both formats: every non-blank line becomes an image
row or a dead letter, and each valid line's detections match a plain reference implementation."""
import json
import math

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.config.settings import Settings
from pipeline.core import dead_letters
from pipeline.core.decoding import BatchDecoder
from pipeline.core.tables import build_tables

unit = st.floats(0, 1, allow_nan=False)
label = st.sampled_from(['Salad', 'Tomato', 'Baked Goods', 'ü "x"'])


@st.composite
def automl_line(draw):
    annotations = []
    for _ in range(draw(st.integers(0, 6))):
        x1, x2, y1, y2 = (draw(unit) for _ in range(4))
        vertices = [{'x': x1, 'y': y1}, {'x': x2, 'y': y2}]
        if draw(st.booleans()):
            vertices[0] = {key: value for key, value in vertices[0].items() if draw(st.booleans())}
        annotations.append({'annotation_spec_id': str(draw(st.integers(0, 9))), 'display_name': draw(label),
                            'image_object_detection': {'bounding_box': {'normalized_vertices': vertices},
                                                       'score': draw(unit)}})
    return orjson.dumps({'ID': f'gs://b/{draw(st.integers(0, 20))}.jpg', 'annotations': annotations})


@st.composite
def vertex_line(draw):
    n = draw(st.integers(0, 6))
    return orjson.dumps({'instance': {'content': f'gs://v/{draw(st.integers(0, 20))}.jpg'}, 'prediction': {
        'ids': [str(draw(st.integers(0, 9))) for _ in range(n)],
        'displayNames': [draw(label) for _ in range(n)],
        'confidences': [draw(unit) for _ in range(n)],
        'bboxes': [[draw(unit) for _ in range(4)] for _ in range(n)]}})


def corrupt(line_strategy):
    """A valid line broken in one of the ways real files break."""
    return st.tuples(line_strategy, st.integers(0, 5), st.integers(1, 60)).map(lambda t: [
        t[0][:t[2]],                                   # truncated
        t[0].replace(b'0.', b'"0.', 1),                # a number as a string (or broken JSON)
        b'\xff' + t[0],                                # invalid UTF-8
        t[0].replace(b'"ID"', b'"id"').replace(b'"instance"', b'"inst"'),  # missing identity
        b'[' + t[0] + b']',                            # wrong shape
        b'{"ID":"gs://b/e.jpg","error":{"code":5,"message":"gone"}}',
    ][t[1]])


any_line = st.one_of(automl_line(), vertex_line(), corrupt(automl_line()), corrupt(vertex_line()),
                     st.binary(max_size=30), st.sampled_from([b'', b'  ', b'\t\r']))


def reference_rows(line, threshold):
    """(uri, label, score, box) kept from one valid line, straight from the JSON."""
    record = json.loads(line)
    rows = []
    if 'ID' in record:
        for a in record['annotations']:
            det = a['image_object_detection']
            xs = [v.get('x', 0) for v in det['bounding_box']['normalized_vertices']]
            ys = [v.get('y', 0) for v in det['bounding_box']['normalized_vertices']]
            rows.append((record['ID'], a['display_name'], det['score'], (min(xs), min(ys), max(xs), max(ys))))
    else:
        p = record['prediction']
        for name, score, b in zip(p['displayNames'], p['confidences'], p['bboxes']):
            rows.append((record['instance']['content'], name, score,
                         (min(b[0], b[1]), min(b[2], b[3]), max(b[0], b[1]), max(b[2], b[3]))))
    return [row for row in rows if row[2] >= threshold]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(any_line, max_size=25), unit)
def test_every_line_is_accounted_for_and_valid_lines_match_the_reference(lines, threshold):
    non_blank = [line for line in lines if line.strip(b' \t\r')]
    decoded = BatchDecoder(score_floor=threshold).decode(non_blank)
    rejected = [dead_letters.from_rejection(rejection, 'f', non_blank[position])
                for position, rejection in decoded.rejections]
    refused = {position for position, _ in decoded.rejections}
    expected = [row for position, line in enumerate(non_blank) if position not in refused
                for row in reference_rows(line, threshold)]
    tables = build_tables(decoded.lines, [None] * len(decoded.lines.image_uris), 'f', None,
                          Settings.of(input='in', output='out', score_threshold=threshold).postprocessing)
    assert tables.images.num_rows + len(rejected) == len(non_blank)
    rows = tables.detections.to_pylist()
    got = sorted((r['image_uri'], r['label'], r['score'], (r['x_min'], r['y_min'], r['x_max'], r['y_max']))
                 for r in rows)
    assert got == sorted(expected)
    assert all(record['payload'] is not None for record in rejected)
    assert all(not math.isnan(r['score']) for r in rows)
