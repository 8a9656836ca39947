"""Slices (issue 28, part 1): each run evaluated slice by slice of its images, by image attributes
from a side table, by box size and by run, as a user runs it; each slice's twelve numbers are
pycocotools' on that slice's images alone."""
import csv
import json
import re

import pyarrow.parquet as pq
import pytest

TWELVE = ['ap', 'ap_50', 'ap_75', 'ap_small', 'ap_medium', 'ap_large', 'ar_1', 'ar_10', 'ar_100', 'ar_small',
          'ar_medium', 'ar_large']
RUN = 'prediction-m-2026-12-01T00:00:00.000Z'


@pytest.fixture(scope='module')
def sliced_run(tmp_path_factory):
    """60 generated images; camera `night` never detects anything (its AP is 0, the others' is not);
    hour a number from 0 to 23; a few attribute rows that cannot be used."""
    from coco_testing import coco_ground_truth, generated_set, legacy_line, with_mask_areas
    from conftest import run_pipeline
    tmp_path = tmp_path_factory.mktemp('slices')
    sizes, truth, detections = generated_set(41, images=60)
    truth = with_mask_areas(truth, 41)
    cameras = ['day', 'dusk', 'night']
    camera = [cameras[i % 3] for i in range(60)]
    hour = [(i * 7) % 24 for i in range(60)]
    detections = [[] if camera[i] == 'night' else dets for i, dets in enumerate(detections)]
    folder = tmp_path / 'in' / RUN
    folder.mkdir(parents=True)
    lines = [legacy_line(f'gs://bucket/{i}.jpg', size, dets) for i, (size, dets) in enumerate(zip(sizes, detections))]
    (folder / 'image_object_detection_1.jsonl').write_bytes(b'\n'.join(lines) + b'\n')
    (tmp_path / 'truth.json').write_text(json.dumps(coco_ground_truth(sizes, truth)))
    with open(tmp_path / 'attributes.csv', 'w', newline='', encoding='utf-8') as handle:
        writer = csv.writer(handle)
        writer.writerow(['image', 'camera', 'hour'])
        writer.writerows([f'gs://bucket/{i}.jpg', camera[i], hour[i]] for i in range(60))
        writer.writerow(['gs://bucket/0.jpg', 'night', '3'])  # repeats image 0: the first row counts
        writer.writerow(['gs://bucket/1.jpg', 'day'])  # a field short
        writer.writerow(['', 'day', '4'])  # no image
    out = tmp_path / 'o'
    result = run_pipeline('--input', tmp_path / 'in', '--output', out, '--ground_truth', tmp_path / 'truth.json',
                          '--ground_truth_image_prefix', 'gs://bucket/', '--report=false',
                          '--image_attributes', tmp_path / 'attributes.csv', '--image_attributes_key', 'image',
                          '--slice_by', 'camera,hour,box_size,prediction_run', '--max_dead_letter_ratio', '1',
                          check=False)
    assert result.returncode in (0, 6), result.stderr  # 6: the warnings of the extra ground-truth annotation
    return dict(out=out, sizes=sizes, truth=truth, detections=detections, camera=camera, hour=hour, result=result)


def _slices(out):
    return json.loads((out / 'evaluation' / 'metrics.json').read_text())['slices']


def test_each_camera_slice_equals_pycocotools_on_its_images_alone(sliced_run):
    from coco_testing import cocoeval
    slices = {entry['slice_value']: entry for entry in _slices(sliced_run['out']) if entry['slice_by'] == 'camera'}
    assert set(slices) == {'day', 'dusk', 'night'}
    for value, entry in slices.items():
        images = [i for i, camera in enumerate(sliced_run['camera']) if camera == value]
        assert entry['images'] == len(images) and entry['prediction_run'] == RUN
        if value == 'night':  # no detection at all: pycocotools cannot load an empty result list
            assert {entry['stats'][name] for name in TWELVE} <= {0.0, None} and entry['stats']['ap'] == 0
            continue
        coco = cocoeval(*([part[i] for i in images] for part in (sliced_run['sizes'], sliced_run['truth'],
                                                                   sliced_run['detections'])))
        for index, name in enumerate(TWELVE):
            expected = None if coco.stats[index] == -1 else coco.stats[index]
            assert entry['stats'][name] == pytest.approx(expected, abs=1e-9), (value, name)
    assert slices['night']['stats']['ap'] == 0 and slices['night']['tp'] == 0 and slices['night']['fn'] > 0
    assert slices['day']['stats']['ap'] > 0.05 and slices['dusk']['stats']['ap'] > 0.05


def test_numeric_attributes_fall_in_quantile_bins_that_partition_the_images(sliced_run):
    from coco_testing import cocoeval
    entries = [entry for entry in _slices(sliced_run['out']) if entry['slice_by'] == 'hour']
    assert len(entries) == 4 and entries[0]['slice_value'] == '[0, 5)' and entries[-1]['slice_value'].endswith('23]')
    assert sum(entry['images'] for entry in entries) == 60
    for entry in entries:
        low, high = (float(edge) for edge in entry['slice_value'][1:-1].split(', '))
        images = [i for i, hour in enumerate(sliced_run['hour'])
                  if low <= hour < high or (entry['slice_value'].endswith(']') and hour == high)]
        assert entry['images'] == len(images), entry['slice_value']
        coco = cocoeval(*([part[i] for i in images] for part in (sliced_run['sizes'], sliced_run['truth'],
                                                                   sliced_run['detections'])))
        assert entry['stats']['ap'] == pytest.approx(coco.stats[0], abs=1e-9)


def test_box_size_and_prediction_run_slices_are_the_runs_own_figures(sliced_run):
    metrics = json.loads((sliced_run['out'] / 'evaluation' / 'metrics.json').read_text())
    [run] = metrics['runs']
    by_size = {entry['slice_value']: entry for entry in metrics['slices'] if entry['slice_by'] == 'box_size'}
    assert list(by_size) == ['small', 'medium', 'large']
    for size, entry in by_size.items():
        assert entry['stats']['ap'] == pytest.approx(run['stats'][f'ap_{size}'], abs=1e-12)
        assert entry['stats']['ar_100'] == pytest.approx(run['stats'][f'ar_{size}'], abs=1e-12)
    [whole] = [entry for entry in metrics['slices'] if entry['slice_by'] == 'prediction_run']
    assert whole['slice_value'] == RUN and whole['stats'] == run['stats'] and whole['images'] == run['images']


def test_the_slices_table_holds_a_row_per_slice_and_label(sliced_run):
    rows = pq.read_table(sliced_run['out'] / 'evaluation' / 'slices').to_pylist()
    slices = _slices(sliced_run['out'])
    assert len([row for row in rows if row['label'] is None]) == len(slices)
    night = [row for row in rows if row['slice_by'] == 'camera' and row['slice_value'] == 'night']
    assert night[0]['label'] is None and night[0]['ap'] == 0 and night[0]['images'] == 20
    assert {row['label'] for row in night[1:]} == {label['label'] for label in next(
        entry for entry in slices if entry['slice_value'] == 'night')['labels']}


def test_bad_attribute_rows_are_dead_letters_and_the_summary_reconciles(sliced_run):
    summary = json.loads((sliced_run['out'] / 'summary.json').read_text())
    attributes = summary['image_attributes']
    assert attributes == {'rows_read': 63, 'rows_used': 61, 'dead_letters': 2, 'rows_repeated': 1, 'images': 60,
                          'images_with_attributes': 60, 'holds': True}
    letters = [json.loads(line) for path in (sliced_run['out'] / 'dead_letter').glob('*.jsonl')
               for line in path.read_text().splitlines()]
    messages = sorted(letter['error_message'] for letter in letters if letter['kind'] == 'invalid_attribute')
    assert messages == ['line 63: expected 3 fields as the header names, got 2', 'line 64: image: the image URI is empty']


def test_attributes_that_name_few_evaluated_images_are_a_warning_with_both_counts(sliced_run, tmp_path):
    from conftest import run_pipeline
    attributes = tmp_path / 'attributes.jsonl'
    attributes.write_text(''.join(json.dumps({'image_uri': f'gs://bucket/{i}.jpg', 'site': 'a' if i % 2 else 'b'})
                                  + '\n' for i in range(10)))
    source = sliced_run['out'].parent
    out = tmp_path / 'o'
    result = run_pipeline('--input', source / 'in', '--output', out, '--ground_truth', source / 'truth.json',
                          '--ground_truth_image_prefix', 'gs://bucket/', '--report=false', '--image_attributes',
                          attributes, '--slice_by', 'site', check=False)
    assert result.returncode in (0, 6), result.stderr
    summary = json.loads((out / 'summary.json').read_text())
    [warning] = [w for w in summary['warnings'] if w['code'] == 'image_attributes_low_match']
    assert warning['figures'] == {'images_with_attributes': 10, 'images_sliced': 60, 'attribute_rows_used': 10}
    values = {entry['slice_value']: entry['images'] for entry in json.loads(
        (out / 'evaluation' / 'metrics.json').read_text())['slices']}
    assert values == {'a': 5, 'b': 5, None: 50}


def test_a_slice_by_a_column_the_attributes_lack_stops_before_any_work(sliced_run, tmp_path):
    from conftest import run_pipeline
    source = sliced_run['out'].parent
    result = run_pipeline('--input', source / 'in', '--output', tmp_path / 'o', '--ground_truth',
                          source / 'truth.json', '--image_attributes', source / 'attributes.csv',
                          '--image_attributes_key', 'image', '--slice_by', 'camera,weather', check=False)
    assert result.returncode == 2 and 'the header has no column weather' in result.stderr
    assert not (tmp_path / 'o').exists()


def test_the_report_shows_each_slice_worst_first_with_its_support(sliced_run):
    from pipeline.tools import report
    page = open(report.build_report(str(sliced_run['out']), 4), encoding='utf-8').read()
    slices = _slices(sliced_run['out'])
    for attribute in ('camera', 'hour', 'box_size', 'prediction_run'):
        table = page.split(f'<table class="sortable slices" data-slice-by="{attribute}">')[1].split('</table>')[0]
        shown = re.findall(r'<tr data-slice-by="[^"]+" data-value="([^"]+)"[^>]*><td>[^<]*</td><td class="n"'
                           r'(?: data-sort="([^"]+)")?>', table)
        entries = [entry for entry in slices if entry['slice_by'] == attribute]
        assert len(shown) == len(entries)
        aps = [float(ap) for _, ap in shown if ap]
        assert aps == sorted(aps), attribute  # worst first
        by_value = {entry['slice_value']: entry for entry in entries}
        for value, ap in shown:
            assert float(ap) == pytest.approx(by_value[value]['stats']['ap'], abs=1e-9)
    night = page.split('data-value="night"')[1].split('</tr>')[0]
    assert '>20<' in night and '>46<' in night  # its images and ground-truth boxes


def test_the_summary_and_the_console_name_each_attributes_worst_and_best_slice(sliced_run):
    summary = json.loads((sliced_run['out'] / 'summary.json').read_text())
    camera = next(part for part in summary['evaluation']['slices'] if part['slice_by'] == 'camera')
    slices = [entry for entry in _slices(sliced_run['out']) if entry['slice_by'] == 'camera']
    best = max(slices, key=lambda entry: entry['stats']['ap'])
    assert camera == {'prediction_run': RUN, 'slice_by': 'camera', 'slices': 3,
                      'worst': {'value': 'night', 'ap': 0.0, 'images': 20},
                      'best': {'value': best['slice_value'], 'ap': best['stats']['ap'], 'images': 20}}
    assert 'by camera' in sliced_run['result'].stdout
    assert '3 slices; worst night AP 0.0000 (20 images)' in sliced_run['result'].stdout


def test_without_ground_truth_each_slice_gives_its_detection_statistics(sliced_run, tmp_path):
    from conftest import run_pipeline
    source, out = sliced_run['out'].parent, tmp_path / 'o'
    result = run_pipeline('--input', source / 'in', '--output', out, '--report=false', '--image_attributes',
                          source / 'attributes.csv', '--image_attributes_key', 'image', '--slice_by',
                          'camera,prediction_run', '--max_dead_letter_ratio', '1')
    assert 'OK:' in result.stdout
    rows = pq.read_table(out / 'evaluation' / 'slices').to_pylist()
    assert not (out / 'evaluation' / 'metrics.json').exists()
    for value in ('day', 'dusk', 'night'):
        images = [i for i, camera in enumerate(sliced_run['camera']) if camera == value]
        scores = [score for i in images for _, _, score in sliced_run['detections'][i]]
        [whole] = [row for row in rows if row['slice_value'] == value and row['label'] is None]
        assert (whole['images'], whole['detections']) == (20, len(scores))
        assert whole['detections_per_image'] == len(scores) / 20 and whole['ap'] is None and whole['tp'] is None
        if scores:  # the median is one of the scores, at the middle rank
            ranked = sorted(scores)
            assert whole['score_median'] in ranked
            assert abs(ranked.index(whole['score_median']) - (len(ranked) - 1) / 2) <= 1
            assert whole['score_p25'] <= whole['score_median'] <= whole['score_p75']
        labels = {row['label']: row['detections'] for row in rows if row['slice_value'] == value and row['label']}
        assert sum(labels.values()) == len(scores)
    [run] = [row for row in rows if row['slice_by'] == 'prediction_run' and row['label'] is None]
    assert run['slice_value'] == RUN and run['images'] == 60
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['image_attributes']['images'] == 60 and summary['image_attributes']['holds']
    assert summary['outputs']['evaluation_slices']
    from pipeline.tools import report
    page = open(report.build_report(str(out), 4), encoding='utf-8').read()
    assert '<a href="#slices">Slices</a>' in page and '<a href="#evaluation">' not in page
    table = page.split('<table class="sortable slices" data-slice-by="camera">')[1].split('</table>')[0]
    assert re.findall(r'data-value="([^"]+)"', table) == ['day', 'dusk', 'night']
    night = table.split('data-value="night"')[1].split('</tr>')[0]
    assert '<td class="n" data-sort="20">20</td><td class="n" data-sort="0">0</td>' in night


@pytest.mark.parametrize('name', ['part-00000-of-00001.parquet', 'my notes, #1 [draft].txt'])
def test_a_users_own_file_in_the_slices_folder_stops_the_run_and_survives(sliced_run, tmp_path, name):
    from conftest import run_pipeline
    source, out = sliced_run['out'].parent, tmp_path / 'o'
    (out / 'evaluation' / 'slices').mkdir(parents=True)
    (out / 'evaluation' / 'slices' / name).write_text('mine')
    result = run_pipeline('--input', source / 'in', '--output', out, '--image_attributes', source / 'attributes.csv',
                          '--image_attributes_key', 'image', '--slice_by', 'camera', '--overwrite', check=False)
    assert result.returncode == 2, result.stderr
    assert (out / 'evaluation' / 'slices' / name).read_text() == 'mine'
    assert not (out / 'summary.json').exists()
