import hashlib
import math

import numpy as np
import pytest

from pipeline.config.settings import Settings
from pipeline.core import geometry
from pipeline.core.decoding import BatchDecoder, DecodedLines
from pipeline.core.formats import AUTOML, VERTEX, Prediction, parse_line
from pipeline.core.schema import DETECTIONS_SCHEMA, IMAGES_SCHEMA
from pipeline.core.tables import ImageSize, build_tables


def settings(**overrides):
    return Settings.of(input='in', output='out', dead_letter='out/dead_letter', **overrides).postprocessing


def prediction(uri, scores, labels=None, fmt=AUTOML):
    n = len(scores)
    labels = labels or [f'L{i}' for i in range(n)]
    coordinates = [c for i in range(n) for c in (0.1 * i / n, 0.2, 0.5, 0.5 + 0.1 * i / n)]
    return Prediction(uri, fmt, labels, [str(i) for i in range(n)], list(scores), coordinates)


def test_threshold_is_inclusive_and_label_overrides_win():
    scores = np.array([0.5, 0.49, 0.7, 0.2])
    labels = ['A', 'A', 'B', 'C']
    assert geometry.threshold_mask(scores, labels, 0.5, {}).tolist() == [True, False, True, False]
    assert geometry.threshold_mask(scores, labels, 0.5, {'B': 0.8, 'C': 0.2}).tolist() == \
        [True, False, False, True]


def test_ranks_per_line_with_ties_in_input_order():
    lines = np.array([0, 0, 0, 1, 1, 2])
    scores = np.array([0.5, 0.9, 0.5, 0.1, 0.3, 0.7])
    order, rank = geometry.order_by_rank(lines, scores)
    assert order.tolist() == [1, 0, 2, 4, 3, 5]
    assert rank.tolist() == [0, 1, 2, 0, 1, 0]


def test_tables_have_the_contract_schemas_and_per_line_ranks():
    preds = [prediction('gs://b/a.jpg', [0.3, 0.9, 0.6]), prediction('gs://b/a.jpg', []),
             prediction('gs://b/c.jpg', [0.1], fmt=VERTEX)]
    sizes = [ImageSize(200, 100, 'manifest'), None, ImageSize(10, 10, 'fixed')]
    tables = build_tables(DecodedLines.of(preds), sizes, 'gs://b/prediction-m-1/x.jsonl', 'prediction-m-1',
                          settings(score_threshold=0.5))
    assert tables.detections.schema == DETECTIONS_SCHEMA
    assert tables.images.schema == IMAGES_SCHEMA
    det = tables.detections.to_pydict()
    assert det['score'] == [0.9, 0.6] and det['rank'] == [0, 1]
    assert det['label'] == ['L1', 'L2'] and det['label_id'] == ['1', '2']
    assert det['image_width'] == [200, 200] and det['px_x_max'] == [100.0, 100.0]
    assert det['px_y_max'][0] == pytest.approx(100 * (0.5 + 0.1 / 3))
    assert det['prediction_run'] == ['prediction-m-1'] * 2
    img = tables.images.to_pydict()
    assert img['annotation_count'] == [3, 0, 1]
    assert img['detection_count'] == [2, 0, 0]
    assert img['max_score'] == [0.9, None, None]
    assert img['image_width'] == [200, None, 10]
    assert img['size_source'] == ['manifest', None, 'fixed']
    assert img['source_format'] == [AUTOML, AUTOML, VERTEX]
    core = {k: v for k, v in tables.counts.as_metrics().items() if not k.startswith(('score_bin_', 'kept_label='))}
    assert core == {'images_written': 3, 'detections_in': 4, 'annotations_read': 4, 'detections_kept': 2,
                    'removed_by_threshold': 2, 'images_without_size': 1,
                    'images_size_from_manifest': 1, 'images_size_from_fixed': 1}
    # Scores 0.3, 0.9, 0.6, 0.1 in 20 bins of 0.05; the kept ones are 0.9 and 0.6.
    assert {k: v for k, v in tables.counts.as_metrics().items() if k.startswith('score_bin_')} == {
        'score_bin_all_06': 1, 'score_bin_all_18': 1, 'score_bin_all_12': 1, 'score_bin_all_02': 1,
        'score_bin_kept_18': 1, 'score_bin_kept_12': 1}
    assert tables.counts.as_metrics()['kept_label=L1'] == 1 and tables.counts.as_metrics()['kept_label=L2'] == 1


@pytest.mark.parametrize('options', [
    {'score_threshold': 0.8}, {'score_threshold': 0.9, 'label_thresholds': {'Salad': 0.75}},
    {'score_threshold': 0.7, 'nms_iou': 0.3, 'max_detections': 2, 'keep_labels': ('Salad', 'Tomato')},
])
def test_dropping_below_the_score_floor_at_parse_time_changes_no_output(legacy_lines, vertex_lines,
                                                                          options):
    chosen = settings(**options)
    lines = legacy_lines + vertex_lines
    all_listed = [parse_line(line) for line in lines]
    floored = BatchDecoder(score_floor=chosen.score_floor).decode(lines)
    assert not floored.rejections and len(floored.lines.dropped_scores) > 0  # the floor was used
    sizes = [ImageSize(640, 480, 'fixed')] * len(lines)
    expected = build_tables(DecodedLines.of(all_listed), sizes, 'f', None, chosen)
    actual = build_tables(floored.lines, sizes, 'f', None, chosen)
    assert actual.detections.equals(expected.detections)
    assert actual.images.equals(expected.images)
    assert actual.counts == expected.counts


def test_unknown_size_gives_null_pixels():
    tables = build_tables(DecodedLines.of([prediction('gs://b/a.jpg', [0.8])]), [None], 'f', None, settings())
    row = tables.detections.to_pylist()[0]
    assert row['image_width'] is None and row['px_x_min'] is None and row['px_y_max'] is None
    assert row['x_max'] == 0.5 and row['prediction_run'] is None


def test_empty_batch_gives_empty_tables():
    tables = build_tables(DecodedLines.of([]), [], 'f', None, settings())
    assert tables.detections.num_rows == 0 and tables.images.num_rows == 0
    assert tables.detections.schema == DETECTIONS_SCHEMA


def test_pixel_boxes_are_normalized_times_size():
    norm = np.array([0.0, 0.25, 1.0])
    assert geometry.to_pixels(norm, np.array([640.0, 640.0, 640.0])).tolist() == [0.0, 160.0, 640.0]
    assert math.isnan(geometry.to_pixels(np.array([0.5]), np.array([np.nan]))[0])


def test_each_line_keeps_its_rows_in_rank_order_and_its_place_for_the_evaluation():
    from pipeline.core.columns import bucket_of
    from pipeline.core.evaluation import batch_lines
    lines = [b'{"ID": "a", "annotations": []}', b'not json',
             b'{"ID": "b", "annotations": [' + b','.join(
                 b'{"display_name": "%s", "image_object_detection": {"score": %s, "bounding_box": '
                 b'{"normalized_vertices": [{"x": 0.1, "y": 0.1}, {"x": 0.%d, "y": 0.5}]}}}' % (label, score, i + 2)
                 for i, (label, score) in enumerate([(b'x', b'0.2'), (b'y', b'0.9'), (b'x', b'0.05')])) + b']}']
    decoded = BatchDecoder().decode(lines)
    settings = Settings.of(input='i', output='o', score_threshold=0.1)
    tables = build_tables(decoded.lines, [None, None], 'f', None, settings.postprocessing)
    positions = [10 + p for p in range(len(lines)) if p not in {q for q, _ in decoded.rejections}]
    batch = batch_lines(decoded.lines, tables.rows, positions, 'f', 4096, 'run')
    buckets = batch.bucket_parts(1)
    assert list(buckets) == [0]
    a, b = buckets[0].lines()
    assert bucket_of('b', 7) in batch.bucket_parts(7)
    assert (a.image_uri, a.order, a.labels, len(a.scores)) == ('a', ('f', 4096, 10), [], 0)
    assert (b.image_uri, b.order, b.labels, b.scores.tolist()) == ('b', ('f', 4096, 12), ['y', 'x'], [0.9, 0.2])
    assert b.boxes[:, 2].tolist() == [0.3, 0.2]  # the rows of the detections table, in its order


def test_fingerprints_are_stable_and_repeats_are_counted_once_each():
    from pipeline.core.columns import fingerprints, repeated_count
    uris = ['gs://b/a.jpg', 'gs://b/ü #[*].jpg', 'gs://b/a.jpg', 'gs://b/c.jpg', 'gs://b/a.jpg', 'gs://b/c.jpg', '']
    prints = fingerprints(uris)
    assert prints.shape == (7, 2) and prints.dtype == np.uint64
    # BLAKE2b-128 of the UTF-8 bytes, little-endian halves: the same in every process and on every machine
    assert prints[0].tobytes() == hashlib.blake2b(b'gs://b/a.jpg', digest_size=16).digest()
    assert repeated_count(prints) == 2  # a (three times) and c (twice)
    assert [repeated_count(fingerprints(u)) for u in ([], ['x'], ['x', 'x'], ['x', 'y'], ['x', 'x', 'x', 'y'])] == [
        0, 0, 1, 0, 1]
    # rows that share their first half only are not repeats
    same_high = np.array([[1, 2], [1, 3], [1, 2], [4, 3]], dtype=np.uint64)
    assert repeated_count(same_high) == 1
