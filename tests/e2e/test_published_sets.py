"""Real sets that other evaluation projects ship in their test suites (tests/fixtures/published_sets,
SOURCES.md there), converted to a Vertex AI batch prediction (some to legacy AutoML Vision lines too)
as a user converts COCO results, and evaluated through the command line: the twelve numbers equal pycocotools', per run and per label,
and the error types equal tidecv's (bbox, default parameters)."""
import contextlib
import copy
import csv
import io
import json
import os

import numpy as np
import pytest
from coco_testing import assert_run_errors_equal_tidecv
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

pytestmark = pytest.mark.e2e

SETS = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'fixtures', 'published_sets')
PREFIX = 'gs://published/'
TWELVE = ['ap', 'ap_50', 'ap_75', 'ap_small', 'ap_medium', 'ap_large', 'ar_1', 'ar_10', 'ar_100', 'ar_small',
          'ar_medium', 'ar_large']


# torchmetrics' set with its two equal scores (0.204, image 987) in the other order: both references
# then give other figures (tidecv's AP@0.5 73.43 against 71.60), so the order is what is tested.
SWAPPED = 'torchmetrics_coco4, its tie swapped'
# The shapes with two more boxes, of no width and of no height (as an annotation whose polygon is a
# line has): pycocotools counts them, as boxes nothing can match.
FLAT = 'faster_coco_eval_shapes, two boxes of no area'
# The shapes with one box reaching a pixel past the image's right edge (a 1-based x_max) and its
# detection narrower: IoU 96/107 = 0.897 as given, 96/106 = 0.906 clipped, on either side of 0.9.
EDGE = 'faster_coco_eval_shapes, a box past the edge'
# The shapes with one box reaching 29% of its image past the right edge (its detection inside the
# image: IoU 0.59 as given, 1.0 clipped) and one box wholly left of its image: pycocotools counts both
# as given (the second a miss); the run too, with a warning.
FAR = 'faster_coco_eval_shapes, boxes far past the edge'
# COCO val2014's set (9 crowd boxes) with `iscrowd` written as JSON's false and true, as some
# converters write it: pycocotools reads them as 0 and 1.
BOOLEAN_CROWD = 'cocoapi_val2014_100, iscrowd as false and true'


def published(name):
    folder = os.path.join(SETS, name.split(',')[0])
    with open(os.path.join(folder, 'ground_truth.json'), encoding='utf-8') as handle:
        truth = json.load(handle)
    with open(os.path.join(folder, 'results.json'), encoding='utf-8') as handle:
        results = json.load(handle)
    # A result names its image by id; a user matches ids as text (the crowd set writes one both ways).
    ids = {str(image['id']): image['id'] for image in truth['images']}
    results = [dict(result, image_id=ids[str(result['image_id'])]) for result in results]
    if name == SWAPPED:
        first, second = [n for n, result in enumerate(results) if result['score'] == 0.204]
        results[first], results[second] = results[second], results[first]
    if name == FLAT:
        truth['annotations'] += [{'id': 99, 'image_id': 1, 'category_id': 1, 'bbox': [200, 200, 0, 10], 'area': 0.0,
                                  'iscrowd': 0},
                                 {'id': 98, 'image_id': 2, 'category_id': 2, 'bbox': [100, 100, 5, 0], 'area': 0,
                                  'iscrowd': 0}]
    if name == EDGE:
        [box] = [annotation for annotation in truth['annotations'] if annotation['id'] == 4]
        box.update(bbox=[150, 24, 107, 111], area=107 * 111)
        [detection] = [result for result in results if result.get('id') == 24]
        detection['bbox'] = [150, 24, 96, 111]
    if name == BOOLEAN_CROWD:
        for annotation in truth['annotations']:
            annotation['iscrowd'] = bool(annotation.get('iscrowd'))
    if name == FAR:
        [box] = [annotation for annotation in truth['annotations'] if annotation['id'] == 4]
        box.update(bbox=[150, 24, 180, 111], area=180 * 111)
        [detection] = [result for result in results if result.get('id') == 24]
        detection['bbox'] = [150, 24, 106, 111]
        truth['annotations'].append({'id': 97, 'image_id': 1, 'category_id': 1, 'bbox': [-60, 200, 40, 30],
                                     'area': 1200, 'iscrowd': 0})
    return truth, results


def prediction_lines(truth, results, legacy=False):
    """One prediction line per ground-truth image, its results in file order, boxes normalized by the
    image's size as the service writes them: Vertex AI's, or legacy AutoML Vision's (`legacy`)."""
    names = {category['id']: category['name'] for category in truth['categories']}
    lines = []
    for image in truth['images']:
        mine = [result for result in results if result['image_id'] == image['id']]
        width, height = image['width'], image['height']
        boxes = [(x / width, y / height, (x + w) / width, (y + h) / height)
                 for x, y, w, h in (result['bbox'] for result in mine)]
        if legacy:
            lines.append(json.dumps({'ID': PREFIX + image['file_name'], 'annotations': [
                {'annotation_spec_id': str(result['category_id']), 'display_name': names[result['category_id']],
                 'image_object_detection': {'score': result['score'], 'bounding_box': {'normalized_vertices': [
                     {'x': x0, 'y': y0}, {'x': x1, 'y': y1}]}}} for result, (x0, y0, x1, y1) in zip(mine, boxes)]}))
            continue
        lines.append(json.dumps({'instance': {'content': PREFIX + image['file_name'], 'mimeType': 'image/jpeg'},
                                 'prediction': {
                                     'ids': [str(result['category_id']) for result in mine],
                                     'displayNames': [names[result['category_id']] for result in mine],
                                     'confidences': [result['score'] for result in mine],
                                     'bboxes': [[x0, x1, y0, y1] for x0, y0, x1, y1 in boxes]}}))
    return lines


def pycocotools_answer(truth, results):
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(truth)
        coco.createIndex()
        evaluation = COCOeval(coco, coco.loadRes(results), 'bbox')
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation


def label_stats(evaluation, k):
    """pycocotools' twelve numbers of one category (index k), None where it gives -1."""
    precision, recall = evaluation.eval['precision'], evaluation.eval['recall']  # (T, R, K, A, M), (T, K, A, M)

    def mean(values):
        values = values[values > -1]
        return float(values.mean()) if len(values) else None
    return dict(zip(TWELVE, [mean(precision[:, :, k, 0, 2]), mean(precision[0, :, k, 0, 2]),
                             mean(precision[5, :, k, 0, 2]), *(mean(precision[:, :, k, a, 2]) for a in (1, 2, 3)),
                             *(mean(recall[:, k, 0, m]) for m in (0, 1, 2)),
                             *(mean(recall[:, k, a, 2]) for a in (1, 2, 3))]))


def tidecv_run(truth, results):
    """tidecv on the same boxes, images and detections in the order of their files."""
    from tidecv import TIDE, Data
    ground_truth, predictions = Data('ground_truth'), Data('predictions')
    known = {image['id'] for image in truth['images']}
    for image in truth['images']:
        ground_truth.add_image(image['id'], image['file_name'])
    for annotation in truth['annotations']:
        if annotation['image_id'] in known:  # as pycocotools, an annotation of no image is left out
            add = ground_truth.add_ignore_region if annotation.get('iscrowd') else ground_truth.add_ground_truth
            add(annotation['image_id'], annotation['category_id'], box=annotation['bbox'])
    for result in results:
        predictions.add_detection(result['image_id'], result['category_id'], result['score'], box=result['bbox'])
    tide = TIDE()
    with contextlib.redirect_stdout(io.StringIO()):
        run = tide.evaluate(ground_truth, predictions, mode=TIDE.BOX)
    return tide, run


# As legacy AutoML Vision lines too: the sets with equal scores and crowd boxes, and a line of no
# annotation.
LEGACY = ' (legacy AutoML Vision lines)'
# pycocotools' own demo set: 100 COCO val2014 photographs, 80 categories, 3-decimal scores.
VAL2014 = 'cocoapi_val2014_100'
# The twelve figures that faster-coco-eval's tests/test_cocoapi_fake_data.py pins for the published
# files of that set: the check that the set here is the published one (SOURCES.md).
VAL2014_PUBLISHED = [0.5045806987249628, 0.6969727247299577, 0.5729816669904824, 0.5856257209410443,
                     0.5193996948036719, 0.5013978986347466, 0.38681277964578054, 0.5936795762842003,
                     0.595352982877607, 0.6398109626113442, 0.5664205978994309, 0.5642905982905982]


@pytest.fixture(scope='module', params=['faster_coco_eval_shapes', 'faster_coco_eval_cat_dog',
                                        'faster_coco_eval_crowd', 'torchmetrics_coco4', SWAPPED,
                                        'object_detection_metrics', FLAT, EDGE, FAR, BOOLEAN_CROWD, VAL2014, 'torchmetrics_issue943',
                                        'torchmetrics_empty_preds', 'torchmetrics_missing_pred',
                                        'torchmetrics_missing_gt', 'mmdet_coco_metric', 'faster_coco_eval_crowd' + LEGACY,
                                        'torchmetrics_coco4' + LEGACY,
                                        'object_detection_metrics' + LEGACY, VAL2014 + LEGACY,
                                        'torchmetrics_empty_preds' + LEGACY])
def evaluated_set(request, tmp_path_factory, run):
    name, legacy = request.param.removesuffix(LEGACY), request.param.endswith(LEGACY)
    truth, results = published(name)
    folder = tmp_path_factory.mktemp(name.split(',')[0])
    shard = folder / 'in' / 'prediction-published-2026-12-05T00:00:00.000Z' / (
        'image_object_detection_1.jsonl' if legacy else 'predictions_00001.jsonl')
    shard.parent.mkdir(parents=True)
    shard.write_text('\n'.join(prediction_lines(truth, results, legacy)) + '\n')
    (folder / 'ground_truth.json').write_text(json.dumps(truth))
    out = folder / 'out'
    result = run('--input', folder / 'in', '--output', out, '--ground_truth', folder / 'ground_truth.json',
                 '--ground_truth_image_prefix', PREFIX, '--report=false', check=False)
    assert result.returncode in (0, 6), result.stderr
    metrics = json.loads((out / 'evaluation' / 'metrics.json').read_text())
    summary = json.loads((out / 'summary.json').read_text())
    return name, truth, results, metrics, summary, out


def test_the_twelve_numbers_equal_pycocotools_per_run_and_per_label(evaluated_set):
    _, truth, results, metrics, _, _ = evaluated_set
    evaluation = pycocotools_answer(truth, results)
    [entry] = metrics['runs']
    for index, stat in enumerate(TWELVE):
        expected = None if evaluation.stats[index] == -1 else evaluation.stats[index]
        assert entry['stats'][stat] == pytest.approx(expected, abs=1e-9), stat
    names = {category['id']: category['name'] for category in truth['categories']}
    labels = {label['label']: label for label in entry['labels']}
    for k, category in enumerate(evaluation.params.catIds):
        expected = label_stats(evaluation, k)
        if all(value is None for value in expected.values()):  # no box and no detection of it
            assert names[category] not in labels or labels[names[category]]['stats']['ap'] is None
            continue
        got = labels[names[category]]['stats']
        for stat in TWELVE:
            assert got[stat] == pytest.approx(expected[stat], abs=1e-9), (names[category], stat)


def test_the_error_types_equal_tidecv(evaluated_set):
    _, truth, results, metrics, _, _ = evaluated_set
    tide, run = tidecv_run(truth, results)
    [entry] = metrics['runs']
    assert_run_errors_equal_tidecv(entry['errors'], tide, run)
    names = {category['id']: category['name'] for category in truth['categories']}
    for label in entry['labels']:
        category = next(k for k, name in names.items() if name == label['label'])
        base = run.ap_data.objs[category]
        expected = None if base.is_empty() else base.get_ap() / 100
        assert label['errors']['ap_50'] == (None if expected is None else pytest.approx(expected, abs=1e-11))


def test_the_val2014_set_here_gives_the_figures_published_for_it():
    assert pycocotools_answer(*published(VAL2014)).stats.tolist() == pytest.approx(VAL2014_PUBLISHED, abs=1e-12)


def test_the_order_of_the_torchmetrics_tie_moves_both_references():
    # The one set with equal scores of a label where true and false positives mix: image 987's two
    # detections at 0.204. Their order on the line moves pycocotools' and tidecv's figures alike;
    # the job follows it in both (the tests above run both orders).
    for reference in (lambda truth, results: pycocotools_answer(truth, results).stats[0],
                      lambda truth, results: tidecv_run(truth, results)[1].ap):
        figures = [reference(*published(name)) for name in ('torchmetrics_coco4', SWAPPED)]
        assert figures[0] != pytest.approx(figures[1], abs=1e-6)


def test_boxes_far_past_their_images_edge_are_counted_as_given_and_warned_of(evaluated_set):
    name, _, _, _, summary, _ = evaluated_set
    warnings = [w for w in summary['warnings'] if w['code'] == 'ground_truth_boxes_past_edge']
    if name != FAR:  # the other sets' boxes lie within 1% of their images (EDGE's a pixel past)
        assert summary['ground_truth']['boxes_past_edge'] == 0 and warnings == []
        return
    assert summary['ground_truth']['dead_letters'] == 0 and summary['ground_truth']['boxes_past_edge'] == 2
    [warning] = warnings
    assert warning['figures'] == {'boxes_past_edge': 2, 'boxes': summary['ground_truth']['boxes']}
    assert 'EXIF' in warning['fix']


def test_annotations_naming_no_image_are_dead_letters_with_their_reason(evaluated_set):
    name, truth, _, metrics, summary, out = evaluated_set
    if name.split(',')[0] != 'faster_coco_eval_crowd':
        assert summary['dead_letters']['invalid_ground_truth'] == 0
        return
    # As published, 12 people and the crowd box name image 2299 (a number); the image is "2299".
    assert summary['ground_truth']['rows_used'] == 1 and summary['dead_letters']['invalid_ground_truth'] == 13
    reasons = [json.loads(line)['error_message'] for path in (out / 'dead_letter').iterdir()
               for line in path.read_text().splitlines()]
    assert sorted(reasons) == sorted(f'annotations[{index}]: image_id 2299 is not an image of the document'
                                     for index in range(1, 14))
    [warning] = [w for w in summary['warnings'] if w['code'] == 'ground_truth_dead_letters']
    assert warning['figures']['dead_letters'] == 13 and warning['figures']['units_read'] == 14
    assert metrics['runs'][0]['stats']['ar_100'] == pytest.approx(0.9)
    assert np.isclose(metrics['runs'][0]['stats']['ap'], 0.45)


def import_ground_truth(truth, folder, form):
    """The COCO ground truth as a user exports it from a Vertex AI dataset (import JSONL) or an AutoML
    Vision one (CSV): boxes normalized by the image's size, no crowd and no COCO area (the formats have
    neither), and the image sizes in a manifest. Returns the ground truth's path, the manifest's, and
    the same boxes as COCO (the box's area)."""
    names = {category['id']: category['name'] for category in truth['categories']}
    boxes = [annotation for annotation in truth['annotations'] if not annotation.get('iscrowd')]
    rows = []
    for image in truth['images']:
        width, height = image['width'], image['height']
        rows.append((PREFIX + image['file_name'], [(names[a['category_id']], a['bbox'][0] / width, a['bbox'][1] / height,
                                                    (a['bbox'][0] + a['bbox'][2]) / width,
                                                    (a['bbox'][1] + a['bbox'][3]) / height)
                                                   for a in boxes if a['image_id'] == image['id']]))
    path = folder / f'ground_truth.{form}'
    with open(path, 'w', encoding='utf-8', newline='') as handle:
        if form == 'jsonl':
            for uri, found in rows:
                handle.write(json.dumps({'imageGcsUri': uri, 'boundingBoxAnnotations': [
                    {'displayName': label, 'xMin': x0, 'xMax': x1, 'yMin': y0, 'yMax': y1}
                    for label, x0, y0, x1, y1 in found]}) + '\n')
        else:
            writer = csv.writer(handle)
            for uri, found in rows:
                writer.writerows([['TEST', uri, label, x0, y0, '', '', x1, y1, '', ''] for label, x0, y0, x1, y1 in found]
                                 or [['TEST', uri] + [''] * 9])
    sizes = folder / 'sizes.csv'
    sizes.write_text('image_uri,width,height\n' + ''.join(f'{PREFIX}{image["file_name"]},{image["width"]},'
                                                          f'{image["height"]}\n' for image in truth['images']))
    return path, sizes, dict(truth, annotations=[dict(a, area=a['bbox'][2] * a['bbox'][3]) for a in boxes])


def in_file_order(truth, results):
    """The same images with ids in the order the file lists them: pycocotools takes ids in order, and
    an import file's images fall in the order of their first appearance."""
    order = {image['id']: rank + 1 for rank, image in enumerate(truth['images'])}
    return (dict(truth, images=[dict(image, id=order[image['id']]) for image in truth['images']],
                 annotations=[dict(a, image_id=order[a['image_id']]) for a in truth['annotations']]),
            [dict(result, image_id=order[result['image_id']]) for result in results])


@pytest.mark.parametrize('form', ['jsonl', 'csv'])
def test_the_val2014_set_as_an_import_ground_truth_equals_pycocotools_and_tidecv(form, tmp_path, run):
    truth, results = published(VAL2014)
    shard = tmp_path / 'in' / 'prediction-published-2026-12-05T00:00:00.000Z' / 'predictions_00001.jsonl'
    shard.parent.mkdir(parents=True)
    shard.write_text('\n'.join(prediction_lines(truth, results)) + '\n')
    ground_truth, sizes, same = import_ground_truth(truth, tmp_path, form)
    result = run('--input', tmp_path / 'in', '--output', tmp_path / 'out', '--ground_truth', ground_truth,
                 '--image_sizes', sizes, '--report=false', check=False)
    assert result.returncode == 0, result.stderr
    [entry] = json.loads((tmp_path / 'out' / 'evaluation' / 'metrics.json').read_text())['runs']
    evaluation = pycocotools_answer(*in_file_order(same, results))
    assert [entry['stats'][stat] for stat in TWELVE] == pytest.approx(evaluation.stats.tolist(), abs=1e-9)
    # Not the figures of COCO's ids in order: equal scores across images fall otherwise (AP 1.2e-5 apart).
    assert entry['stats']['ap'] != pytest.approx(pycocotools_answer(same, results).stats[0], abs=1e-9)
    assert_run_errors_equal_tidecv(entry['errors'], *tidecv_run(*in_file_order(same, results)))


def test_the_same_ground_truth_given_twice_counts_each_box_twice_and_warns(tmp_path, run):
    # A folder holding one ground truth in two formats (an export as import JSONL and as CSV): every
    # box of an image comes twice. pycocotools counts both copies (one detection matches one of them,
    # the other is missed); the run too, and says why its recall halved.
    truth, results = published(VAL2014)
    shard = tmp_path / 'in' / 'prediction-published-2026-12-05T00:00:00.000Z' / 'predictions_00001.jsonl'
    shard.parent.mkdir(parents=True)
    shard.write_text('\n'.join(prediction_lines(truth, results)) + '\n')
    (tmp_path / 'truth').mkdir()
    for form in ('jsonl', 'csv'):
        (tmp_path / form).mkdir()
        ground_truth, sizes, same = import_ground_truth(truth, tmp_path / form, form)
        ground_truth.rename(tmp_path / 'truth' / ground_truth.name)
    result = run('--input', tmp_path / 'in', '--output', tmp_path / 'out', '--ground_truth', tmp_path / 'truth',
                 '--image_sizes', sizes, '--report=false', check=False)
    assert result.returncode == 0, result.stderr
    [entry] = json.loads((tmp_path / 'out' / 'evaluation' / 'metrics.json').read_text())['runs']
    twice = dict(same, annotations=same['annotations'] + [dict(a, id=a['id'] + 10 ** 9) for a in same['annotations']])
    evaluation = pycocotools_answer(*in_file_order(twice, results))
    assert [entry['stats'][stat] for stat in TWELVE] == pytest.approx(evaluation.stats.tolist(), abs=1e-9)
    assert entry['stats']['ar_100'] < 0.6 * pycocotools_answer(*in_file_order(same, results)).stats[8]
    summary = json.loads((tmp_path / 'out' / 'summary.json').read_text())
    [warning] = [w for w in summary['warnings'] if w['code'] == 'ground_truth_repeated_boxes']
    boxed = len({a['image_id'] for a in same['annotations']})
    assert warning['figures'] == {'boxes_repeated': len(same['annotations']), 'images_with_repeated_boxes': boxed,
                                  'boxes': 2 * len(same['annotations']), 'ground_truth_files': 2}
    assert 'ground_truth.csv' in warning['fix'] and 'ground_truth.jsonl' in warning['fix']
    result = run('--input', tmp_path / 'in', '--output', tmp_path / 'once', '--ground_truth',
                 tmp_path / 'truth' / 'ground_truth.csv', '--image_sizes', sizes, '--report=false', check=False)
    summary = json.loads((tmp_path / 'once' / 'summary.json').read_text())
    assert summary['ground_truth']['boxes_repeated'] == 0
    assert not [w for w in summary['warnings'] if w['code'] == 'ground_truth_repeated_boxes']


def test_the_val2014_set_without_its_images_sizes_takes_them_from_the_manifest(tmp_path, run):
    # pycocotools needs no image size; a COCO document may leave them out. The boxes are in pixels
    # and the predictions normalized: the run takes the sizes from --image_sizes, and equals
    # pycocotools and tidecv; without a manifest, each image is a dead letter that says what to give.
    truth, results = published(VAL2014)
    shard = tmp_path / 'in' / 'prediction-published-2026-12-05T00:00:00.000Z' / 'predictions_00001.jsonl'
    shard.parent.mkdir(parents=True)
    shard.write_text('\n'.join(prediction_lines(truth, results)) + '\n')
    sizeless = dict(truth, images=[{k: v for k, v in image.items() if k not in ('width', 'height')}
                                   for image in truth['images']])
    (tmp_path / 'sizeless.json').write_text(json.dumps(sizeless))
    _, sizes, _ = import_ground_truth(truth, tmp_path, 'jsonl')
    result = run('--input', tmp_path / 'in', '--output', tmp_path / 'out', '--ground_truth', tmp_path / 'sizeless.json',
                 '--ground_truth_image_prefix', PREFIX, '--image_sizes', sizes, '--report=false', check=False)
    assert result.returncode == 0, result.stderr
    [entry] = json.loads((tmp_path / 'out' / 'evaluation' / 'metrics.json').read_text())['runs']
    evaluation = pycocotools_answer(sizeless, results)
    assert [entry['stats'][stat] for stat in TWELVE] == pytest.approx(evaluation.stats.tolist(), abs=1e-9)
    assert_run_errors_equal_tidecv(entry['errors'], *tidecv_run(truth, results))
    result = run('--input', tmp_path / 'in', '--output', tmp_path / 'out2', '--ground_truth', tmp_path / 'sizeless.json',
                 '--ground_truth_image_prefix', PREFIX, '--report=false', check=False)
    summary = json.loads((tmp_path / 'out2' / 'summary.json').read_text())
    assert summary['ground_truth']['dead_letters'] >= len(truth['images'])
    reasons = {json.loads(line)['error_message'] for path in (tmp_path / 'out2' / 'dead_letter').iterdir()
               for line in path.read_text().splitlines()}
    assert any('width and height: not given' in reason and '--image_sizes' in reason for reason in reasons)


def test_repeated_annotation_ids_count_each_box_and_warn_that_pycocotools_differs(tmp_path, run):
    # Two documents merged without renumbering: an annotation of image 1 takes the id of one of image 3.
    # pycocotools keeps the last annotation of an id and evaluates it on both images; the run counts
    # each box as given (the figures of the renumbered document) and warns.
    truth, results = published('faster_coco_eval_shapes')
    repeated = json.loads(json.dumps(truth))
    first, last = repeated['annotations'][0], repeated['annotations'][-1]
    assert first['image_id'] != last['image_id']
    first['id'] = last['id']
    shard = tmp_path / 'in' / 'prediction-published-2026-12-05T00:00:00.000Z' / 'predictions_00001.jsonl'
    shard.parent.mkdir(parents=True)
    shard.write_text('\n'.join(prediction_lines(truth, results)) + '\n')
    (tmp_path / 'repeated.json').write_text(json.dumps(repeated))
    result = run('--input', tmp_path / 'in', '--output', tmp_path / 'out', '--ground_truth', tmp_path / 'repeated.json',
                 '--ground_truth_image_prefix', PREFIX, '--report=false', check=False)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / 'out' / 'summary.json').read_text())
    [entry] = json.loads((tmp_path / 'out' / 'evaluation' / 'metrics.json').read_text())['runs']
    stats = [entry['stats'][stat] for stat in TWELVE]
    expected = [None if value == -1 else value for value in pycocotools_answer(truth, results).stats.tolist()]
    assert stats == pytest.approx(expected, abs=1e-9)
    assert stats[0] != pytest.approx(pycocotools_answer(repeated, results).stats[0], abs=1e-3)
    [warning] = [w for w in summary['warnings'] if w['code'] == 'ground_truth_repeated_ids']
    assert warning['figures'] == {'annotation_ids_repeated': 1}


def test_labels_the_ground_truth_spells_otherwise_warn_and_fail_on_warning(tmp_path, run):
    truth, results = published(VAL2014)
    shard = tmp_path / 'in' / 'prediction-published-2026-12-05T00:00:00.000Z' / 'predictions_00001.jsonl'
    shard.parent.mkdir(parents=True)
    shard.write_text('\n'.join(prediction_lines(truth, results)) + '\n')
    renamed = {'person': 'Person', 'traffic light': 'traffic_light'}
    respelled = dict(truth, categories=[dict(category, name=renamed.get(category['name'], category['name']))
                                        for category in truth['categories']])
    (tmp_path / 'respelled.json').write_text(json.dumps(respelled))
    result = run('--input', tmp_path / 'in', '--output', tmp_path / 'out', '--ground_truth', tmp_path / 'respelled.json',
                 '--ground_truth_image_prefix', PREFIX, '--report=false', '--fail_on_warning', check=False)
    assert result.returncode == 6, result.stderr
    summary = json.loads((tmp_path / 'out' / 'summary.json').read_text())
    [warning] = summary['warnings']
    assert warning['code'] == 'label_spelling_mismatch'
    assert [(pair['ground_truth'], pair['prediction']) for pair in warning['figures']['respelled']] == [
        ('Person', 'person'), ('traffic_light', 'traffic light')]
    # As a user reads them: the figures of the run are those of a model that never finds a person.
    assert summary['evaluation']['runs'][0]['stats']['ap'] < pycocotools_answer(truth, results).stats[0] - 0.01
    # The same boxes named by their category ids: nothing in common, mAP 0, and a warning that says so.
    by_id = dict(truth, categories=[dict(category, name=str(category['id'])) for category in truth['categories']])
    (tmp_path / 'by_id.json').write_text(json.dumps(by_id))
    result = run('--input', tmp_path / 'in', '--output', tmp_path / 'out2', '--ground_truth', tmp_path / 'by_id.json',
                 '--ground_truth_image_prefix', PREFIX, '--report=false', check=False)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / 'out2' / 'summary.json').read_text())
    [warning] = summary['warnings']
    assert warning['code'] == 'labels_no_overlap' and summary['evaluation']['runs'][0]['stats']['ap'] == 0
    assert warning['figures']['ground_truth_only']['1'] == 250  # COCO's people, by id
    assert 'warning [labels_no_overlap]' in result.stdout + result.stderr
