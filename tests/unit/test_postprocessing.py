"""Post-processing against hand-computed cases."""
import numpy as np
import pyarrow as pa
import pytest
import shapely

from pipeline.config.options import OptionError
from pipeline.config.settings import Settings
from pipeline.core import geometry
from pipeline.core.decoding import DecodedLines
from pipeline.core.formats import AUTOML, Prediction
from pipeline.core.postprocessing import select_detections
from pipeline.core.tables import ImageSize, build_tables


def nms(boxes, scores, classes=None, threshold=0.5, lines=None):
    boxes = np.asarray(boxes, dtype=float)
    n = len(boxes)
    classes = np.asarray(classes if classes is not None else ['a'] * n, dtype=object)
    lines = np.asarray(lines if lines is not None else [0] * n)
    return geometry.nms_mask(lines, np.asarray(scores, dtype=float), boxes, classes, threshold).tolist()


def test_nms_nested_boxes():
    # The inner box covers 25% of the outer one: IoU 0.25.
    boxes = [(0, 0, 1, 1), (0, 0, 0.5, 0.5)]
    assert nms(boxes, [0.9, 0.8], threshold=0.2) == [True, False]
    assert nms(boxes, [0.9, 0.8], threshold=0.25) == [True, True]  # suppression needs IoU > threshold
    assert nms(boxes, [0.7, 0.8], threshold=0.2) == [False, True]


def test_nms_chain_suppressed_box_suppresses_nothing():
    # A-B IoU = 0.6 (A suppresses B), B-C IoU = 0.6 (B would suppress C), A-C IoU = 0.25: C survives.
    a, b, c = (0, 0, 1, 1), (0.25, 0, 1.25, 1), (0.5, 0, 1.5, 1)
    iou = lambda p, q: shapely.box(*p).intersection(shapely.box(*q)).area / shapely.box(*p).union(shapely.box(*q)).area
    assert iou(a, b) == pytest.approx(0.6) and iou(b, c) == pytest.approx(0.6)
    assert iou(a, c) == pytest.approx(1 / 3)
    assert nms([a, b, c], [0.9, 0.8, 0.7], threshold=0.5) == [True, False, True]


def test_nms_equal_scores_break_ties_by_input_order():
    boxes = [(0, 0, 1, 1), (0, 0, 1, 1), (0, 0, 1, 1)]
    assert nms(boxes, [0.5, 0.5, 0.5]) == [True, False, False]
    assert nms(boxes, [0.4, 0.5, 0.5]) == [False, True, False]


def test_nms_per_label_versus_class_agnostic():
    boxes = [(0, 0, 1, 1), (0, 0, 1, 1)]
    assert nms(boxes, [0.9, 0.8], classes=['cat', 'dog']) == [True, True]
    assert nms(boxes, [0.9, 0.8], classes=[0, 0]) == [True, False]


def test_nms_is_per_line_and_zero_area_boxes_have_iou_zero():
    boxes = [(0, 0, 1, 1), (0, 0, 1, 1), (0.5, 0.5, 0.5, 0.9), (0.5, 0.5, 0.5, 0.9)]
    assert nms(boxes, [0.9, 0.8, 0.7, 0.6], lines=[0, 1, 2, 2], threshold=0.0) == [True, True, True, True]


def test_nms_large_line_uses_the_index_and_agrees_with_small_path(monkeypatch):
    rng = np.random.default_rng(7)
    n = 500
    xy = rng.random((n, 2)) * 0.9
    wh = rng.random((n, 2)) * 0.1
    boxes = np.c_[xy, xy + wh]
    scores = rng.random(n).round(2)  # many ties
    classes = rng.choice(['a', 'b'], n)
    indexed = nms(boxes, scores, classes, threshold=0.3)
    monkeypatch.setattr(geometry, 'NMS_INDEX_MIN_BOXES', 10 ** 9)
    assert nms(boxes, scores, classes, threshold=0.3) == indexed
    assert 0 < sum(indexed) < n


@pytest.mark.parametrize('index_from', [64, 3])  # 3: most lines take the spatial-index path
@pytest.mark.parametrize('seed', range(4))
def test_nms_agrees_with_a_plain_reference_on_random_lines(reference_nms, monkeypatch, seed, index_from):
    monkeypatch.setattr(geometry, 'NMS_INDEX_MIN_BOXES', index_from)
    rng = np.random.default_rng(seed)
    n = 400
    lines = rng.integers(0, 20, n)
    xy = rng.random((n, 2)) * 0.7
    boxes = np.c_[xy, xy + rng.random((n, 2)) * 0.3]
    boxes[::17, 2] = boxes[::17, 0]  # some zero-area boxes
    scores = rng.integers(0, 10, n) / 10  # many ties
    classes = rng.choice(['a', 'b', 'c'], n)
    threshold = [0.0, 0.2, 0.4, 0.6][seed]
    expected = reference_nms(lines.tolist(), scores.tolist(), boxes.tolist(), classes.tolist(), threshold)
    assert nms(boxes, scores, classes, threshold=threshold, lines=lines) == expected
    assert 0 < sum(expected) < n


def test_nms_on_100k_boxes_in_one_line_stays_sparse():
    rng = np.random.default_rng(1)
    n = 100_000
    xy = rng.random((n, 2)) * 0.99
    boxes = np.c_[xy, xy + 0.005]
    kept = nms(boxes, rng.random(n), threshold=0.5)
    assert 0.5 * n < sum(kept) < n


# A U shape; coordinates are binary fractions so that overlap fractions are exact.
CONCAVE_U = 'POLYGON ((0 0, 1 0, 1 1, 0.75 1, 0.75 0.25, 0.25 0.25, 0.25 1, 0 1, 0 0))'


def test_roi_concave_polygon():
    region = geometry.parse_roi(CONCAVE_U)
    boxes = np.array([
        (0.375, 0.5, 0.625, 0.875),       # inside the notch of the U: outside the region
        (0.0625, 0.0625, 0.1875, 0.1875),  # in the bottom bar
        (0.125, 0.5, 0.375, 0.75),        # half in the left arm
        (0.25, 0.375, 0.25, 0.625),       # zero-area box on the arm's edge: touches, so inside
        (0.5, 0.5, 0.5, 0.625),           # zero-area box in the notch
    ])
    assert geometry.roi_mask(boxes, region, None).tolist() == [False, True, True, True, False]
    assert geometry.roi_mask(boxes, region, 0.5).tolist() == [False, True, True, True, False]
    assert geometry.roi_mask(boxes, region, 0.51).tolist() == [False, True, False, True, False]


@pytest.mark.parametrize('min_overlap', [None, 0.5, 1.0])
def test_roi_agrees_with_intersecting_every_box(min_overlap):
    region = geometry.parse_roi(CONCAVE_U)
    rng = np.random.default_rng(5)
    corners = rng.integers(0, 65, (2000, 4)) / 64  # binary fractions: exact areas on both sides
    boxes = np.c_[np.minimum(corners[:, 0], corners[:, 2]), np.minimum(corners[:, 1], corners[:, 3]),
                  np.maximum(corners[:, 0], corners[:, 2]), np.maximum(corners[:, 1], corners[:, 3])]
    expected = []
    for box in boxes:
        shape = shapely.box(*box)
        if shape.area == 0:
            expected.append(region.intersects(shape))
        else:
            fraction = region.intersection(shape).area / shape.area
            expected.append(fraction > 0 if min_overlap is None else fraction >= min_overlap)
    assert geometry.roi_mask(boxes, region, min_overlap).tolist() == expected
    assert 0 < sum(expected) < len(boxes)


def test_roi_multipolygon():
    region = geometry.parse_roi('MULTIPOLYGON (((0 0, 0.2 0, 0.2 0.2, 0 0.2, 0 0)), '
                                '((0.8 0.8, 1 0.8, 1 1, 0.8 1, 0.8 0.8)))')
    boxes = np.array([(0.05, 0.05, 0.1, 0.1), (0.85, 0.85, 0.95, 0.95), (0.4, 0.4, 0.6, 0.6),
                      (0.1, 0.1, 0.3, 0.3)])
    assert geometry.roi_mask(boxes, region, None).tolist() == [True, True, False, True]
    assert geometry.roi_mask(boxes, region, 0.3).tolist() == [True, True, False, False]


@pytest.mark.parametrize('wkt, fragment', [
    ('POLYGON ((0 0, 1 1, 1 0, 0 1, 0 0))', 'not valid: Self-intersection'),
    ('LINESTRING (0 0, 1 1)', 'expected a POLYGON or MULTIPOLYGON'),
    ('POLYGON EMPTY', 'empty'),
    ('POLYGON ((0 0, 1 0', 'not valid WKT'),
])
def test_invalid_roi(wkt, fragment):
    with pytest.raises(ValueError, match=fragment):
        geometry.parse_roi(wkt)


def test_top_k_with_ties():
    lines = np.array([0, 0, 0, 0, 1])
    scores = np.array([0.5, 0.9, 0.5, 0.5, 0.1])
    assert geometry.top_k_mask(lines, scores, 2).tolist() == [True, True, False, False, True]


def test_wkt_is_full_precision_and_reads_back_exactly():
    rng = np.random.default_rng(0)
    coords = rng.random((2000, 4)) * 1000
    coords[:, 2:] += coords[:, :2]
    wkt = geometry.polygon_wkt(*(pa.array(coords[:, i]) for i in range(4)))
    bounds = shapely.bounds(shapely.from_wkt(wkt.to_numpy(zero_copy_only=False)))
    assert (bounds == coords).all()
    assert wkt[0].as_py().startswith('POLYGON ((')
    assert geometry.polygon_wkt(*(pa.array([None], pa.float64()),) * 4)[0].as_py() is None


def settings(roi_wkt=None, **overrides):
    """The post-processing settings; roi_wkt is resolved at launch, never an option."""
    return Settings.of(input='in', output='out', dead_letter='dl', **overrides).resolved(
        postprocessing={'roi_wkt': roi_wkt}).postprocessing


def test_steps_apply_in_order_and_count_what_they_remove():
    boxes = np.array([
        (0.0, 0.0, 0.5, 0.5),   # 0 Tomato .95
        (0.0, 0.0, 0.5, 0.5),   # 1 Tomato .90: NMS with 0
        (0.0, 0.0, 0.01, 0.01),  # 2 Tomato .85: too small
        (0.6, 0.6, 0.9, 0.9),   # 3 Salad  .80: outside the ROI
        (0.1, 0.1, 0.3, 0.3),   # 4 Cheese .75: dropped label
        (0.2, 0.0, 0.4, 0.2),   # 5 None   .70: no display name, kept by --drop_labels
        (0.0, 0.2, 0.2, 0.4),   # 6 Salad  .65: top-K
        (0.0, 0.0, 0.1, 0.1),   # 7 Salad  .10: below threshold
    ])
    scores = np.array([0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.1])
    labels = ['Tomato', 'Tomato', 'Tomato', 'Salad', 'Cheese', None, 'Salad', 'Salad']
    selection = select_detections(np.zeros(8, dtype=int), scores, boxes, labels, ['1'] * 8, settings(
        score_threshold=0.5, drop_labels=('Cheese',), min_box_area=0.001,
        roi_wkt='POLYGON ((0 0, 0.55 0, 0.55 0.55, 0 0.55, 0 0))', nms_iou=0.5, max_detections=2))
    assert sorted(selection.kept.tolist()) == [0, 5]
    assert selection.removed == {'threshold': 1, 'label_filter': 1, 'min_box_area': 1, 'roi': 1,
                                 'nms': 1, 'max_detections': 1}
    assert sorted(selection.suppressed.tolist()) == [1, 2, 3, 6]


def test_keep_labels_drops_detections_without_a_display_name():
    selection = select_detections(np.zeros(3, dtype=int), np.ones(3), np.zeros((3, 4)),
                                  ['A', None, 'B'], [None, '7', None], settings(keep_labels=('A',)))
    assert selection.kept.tolist() == [0] and selection.suppressed.size == 0


def test_tables_gain_areas_wkt_and_suppressed_count():
    prediction = Prediction('gs://b/a.jpg', AUTOML, ['A', 'A'], [None, None], [0.9, 0.8],
                            [0.0, 0.0, 0.5, 0.25, 0.0, 0.0, 0.5, 0.25])
    tables = build_tables(DecodedLines.of([prediction, prediction._replace(image_uri='gs://b/b.jpg')]),
                          [ImageSize(200, 100, 'fixed'), None], 'f', None, settings(nms_iou=0.5))
    rows = tables.detections.to_pylist()
    assert [r['box_area'] for r in rows] == [0.125, 0.125]
    assert rows[0]['px_box_area'] == 0.125 * 200 * 100 and rows[1]['px_box_area'] is None
    assert rows[0]['box_wkt'] == 'POLYGON ((0 0, 100 0, 100 25, 0 25, 0 0))'
    assert rows[1]['box_wkt'] is None
    assert tables.images['suppressed_count'].to_pylist() == [1, 1]
    assert tables.counts.get('removed_by_nms') == 2


@pytest.mark.parametrize('raw, fragment', [
    ({'nms_iou': '1.2'}, '--nms_iou'), ({'max_detections': '0'}, '--max_detections: expected a whole number >= 1'),
    ({'max_detections': '2.5'}, '--max_detections'), ({'min_box_area': '-1'}, '--min_box_area'),
    ({'roi_min_overlap': '0.5'}, '--roi_min_overlap needs --roi'),
    ({'roi': 'x', 'roi_min_overlap': '2'}, '--roi_min_overlap'),
    ({'keep_labels': 'a,,b'}, '--keep_labels: a label is empty'),
    ({'drop_labels': '["a", 1]'}, '--drop_labels: expected a JSON array'),
    ({'nms_class_agnostic': 'true'}, '--nms_class_agnostic needs --nms_iou'),
])
def test_wrong_postprocessing_options(raw, fragment):
    with pytest.raises(OptionError, match=fragment.replace('[', r'\[')):
        Settings.from_raw({'input': 'in', 'output': 'out', **raw})


def test_label_lists_parse_names_with_spaces_and_json():
    s = Settings.from_raw({'input': 'in', 'output': 'out', 'keep_labels': 'Baked Goods, Salad',
                           'drop_labels': '["A, B"]'})
    assert s.postprocessing.keep_labels == ('Baked Goods', 'Salad') and s.postprocessing.drop_labels == ('A, B',)
