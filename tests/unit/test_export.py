"""Exports read back by the readers their formats are for: our own ground-truth readers (Vertex AI
JSONL, AutoML CSV), pycocotools (COCO, evaluated against itself), and Python's csv and json; Vertex
AI's import limits counted; ids the same whatever the order of the images."""
import contextlib
import csv
import io
import json

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pipeline.core.export import (
    VERTEX_MAX_BOXES,
    ExportImage,
    automl_csv_rows,
    coco_image_id,
    label_studio_task,
    vertex_jsonl_line,
    write_coco,
    write_label_studio,
)
from pipeline.core.truth_formats import GroundTruthImage, parse_automl_csv, parse_vertex_line

ODD_LABELS = ['Baked Goods', 'a, b', 'say "cheese"', 'Gâteau 蛋糕', "it's"]


def images():
    return [
        ExportImage('gs://b/with space/a.jpg', ODD_LABELS, [0.9, 0.8, 0.7, 0.6, 0.5],
                    [(0.1, 0.1, 0.5, 0.5), (0.2, 0.3, 0.4, 0.9), (0.0, 0.0, 1.0, 1.0), (0.5, 0.5, 0.75, 0.6),
                     (0.3, 0.3, 0.4, 0.4)], 640, 480, 'prediction-m-1'),
        ExportImage('gs://b/comma,quote".jpg', ['cat', None], [0.4, 0.3], [(0.2, 0.2, 0.3, 0.3), (0.1, 0.1, 0.2, 0.2)],
                    None, None, 'prediction-m-1'),
        ExportImage('gs://b/empty.jpg', [], [], [], 100, 100, 'prediction-m-1'),
    ]


def test_vertex_lines_read_back_as_the_exported_boxes():
    for image in images():
        line, removed = vertex_jsonl_line(image, 'test')
        parsed = parse_vertex_line(line)
        assert isinstance(parsed, GroundTruthImage) and parsed.ml_use == 'test'
        expected = [(label, box) for label, box in zip(image.labels, image.boxes) if label is not None]
        assert [(b.label, b.box) for b in parsed.boxes] == expected
        assert removed.no_label == image.labels.count(None)


def test_vertex_limits_keep_the_highest_scores_and_count_what_they_remove():
    boxes = [(0.0, 0.0, 0.5, 0.5)] * 600 + [(0.1, 0.1, 0.105, 0.5), (0.1, 0.1, 0.11, 0.5)]
    scores = [i / 1000 for i in range(600)] + [0.99, 0.98]
    image = ExportImage('gs://b/x.jpg', ['a'] * 602, scores, boxes, 640, 480)
    line, removed = vertex_jsonl_line(image)
    kept = json.loads(line)['boundingBoxAnnotations']
    assert len(kept) == VERTEX_MAX_BOXES and removed.over_limit == 100
    # 0.005 of the side is under 0.01; 0.01 x 640 = 6.4 px is under 8 px
    assert removed.too_small == 2
    assert 'dataItemResourceLabels' not in json.loads(line)
    _, unknown_size = vertex_jsonl_line(image._replace(width=None, height=None))
    assert unknown_size.too_small == 1  # without a size only the share of the side applies


def test_automl_rows_read_back_with_pythons_csv_and_our_reader():
    for image in images():
        text, removed = automl_csv_rows(image, 'training')
        rows = list(csv.reader(io.StringIO(text)))
        assert all(len(row) == 11 and row[0] == 'TRAIN' and row[1] == image.image_uri for row in rows)
        parsed = [unit for _, _, unit in parse_automl_csv(text)]
        boxes = [(b.label, b.box) for unit in parsed for b in unit.boxes]
        assert boxes == [(label, box) for label, box in zip(image.labels, image.boxes) if label is not None]
        assert all(unit.ml_use == 'training' and unit.image_uri == image.image_uri for unit in parsed)
        assert removed.no_label == image.labels.count(None)
    assert automl_csv_rows(images()[2])[0] == 'gs://b/empty.jpg,,,,,,,,,\n'


def test_coco_loads_in_pycocotools_and_scores_ap_one_against_itself():
    buffer = io.BytesIO()
    counts = write_coco(buffer, images, {'gs://b/': 'https://host/b/'})
    assert counts == (2, 5, 1)  # the image of unknown size is left out, and counted
    document = json.loads(buffer.getvalue())
    assert {image['file_name'] for image in document['images']} == {'https://host/b/with space/a.jpg',
                                                                     'https://host/b/empty.jpg'}
    ground_truth = COCO()
    ground_truth.dataset = json.loads(buffer.getvalue())  # pycocotools adds keys to what it is given
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth.createIndex()
        results = ground_truth.loadRes([{key: a[key] for key in ('image_id', 'category_id', 'bbox', 'score')}
                                        for a in document['annotations']])
        evaluation = COCOeval(ground_truth, results, 'bbox')
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)
    again = io.BytesIO()
    write_coco(again, lambda: reversed(images()), {'gs://b/': 'https://host/b/'})
    reordered = json.loads(again.getvalue())
    assert sorted(map(json.dumps, reordered['annotations'])) == sorted(map(json.dumps, document['annotations']))
    assert reordered['categories'] == document['categories']
    assert coco_image_id('gs://b/empty.jpg') == coco_image_id('gs://b/empty.jpg') > 0
    twice = io.BytesIO()
    write_coco(twice, lambda: images() + images())  # an image on two prediction lines: two ids
    ids = [image['id'] for image in json.loads(twice.getvalue())['images']]
    assert len(ids) == len(set(ids)) == 4


def test_label_studio_tasks_in_percent_with_the_run_as_model_version():
    buffer = io.BytesIO()
    assert write_label_studio(buffer, images(), 'tag', 'img', {'gs://b/': '/data/local-files/?d=b/'}) == (3, 6)
    tasks = json.loads(buffer.getvalue())
    first = tasks[0]
    assert first['data']['image'] == '/data/local-files/?d=b/with%20space/a.jpg'  # percent-encoded
    (prediction,) = first['predictions']
    assert prediction['model_version'] == 'prediction-m-1' and prediction['score'] == 0.9
    result = prediction['result'][1]
    assert result['from_name'] == 'tag' and result['to_name'] == 'img' and result['type'] == 'rectanglelabels'
    value = result['value']
    assert value['rectanglelabels'] == ['a, b'] and value['rotation'] == 0
    assert [value[k] for k in ('x', 'y', 'width', 'height')] == pytest.approx([20.0, 30.0, 20.0, 60.0])
    assert (result['original_width'], result['original_height']) == (640, 480)
    assert 'original_width' not in label_studio_task(images()[1])['predictions'][0]['result'][0]
    assert tasks[2]['predictions'][0]['result'] == []


def test_label_studio_urls_are_percent_encoded_after_the_prefix():
    from pipeline.core.export import label_studio_url
    assert label_studio_url('gs://b/a #1?&x\n.jpg') == 'gs://b/a%20%231%3F%26x%0A.jpg'
    assert label_studio_url('gs://b/d/a#1.jpg', {'gs://b/': '/data/local-files/?d='}) == '/data/local-files/?d=d/a%231.jpg'
    assert label_studio_url('images/a b.jpg') == 'images/a%20b.jpg'


def test_coco_ids_fit_javascript_numbers_and_coordinates_carry_no_float_noise():
    from pipeline.core.export import MAX_COCO_ID, clean, write_coco
    images = [ExportImage(f'gs://b/{i}.jpg', ['A'], [0.9], [(0.1, 0.2, 0.3000001, 0.4)], 640, 480) for i in range(300)]
    handle = io.BytesIO()
    write_coco(handle, lambda: iter(images))
    document = json.loads(handle.getvalue())
    ids = [image['id'] for image in document['images']] + [a['id'] for a in document['annotations']]
    assert all(0 < i <= MAX_COCO_ID for i in ids) and len(set(ids[:300])) == 300 and len(set(ids[300:])) == 300
    assert clean(74.01216769999999) == 74.0121677 and clean(0.1 * 3) == 0.3
    assert all(len(repr(v)) < 14 for a in document['annotations'] for v in a['bbox'])
