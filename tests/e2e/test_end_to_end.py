"""`python -m pipeline` run as a user runs it, on the bundled sample; outputs read back with pyarrow."""
import gzip
import json
import os
import subprocess
import sys

import pyarrow.dataset as ds
import pytest
from conftest import ROOT, SAMPLE

from pipeline.core.schema import DETECTIONS_SCHEMA, IMAGES_SCHEMA

SAMPLE_INPUT = SAMPLE / 'input'
MANIFEST = SAMPLE / 'image_sizes.csv'


def run_pipeline(*args, check=True):
    result = subprocess.run([sys.executable, '-m', 'pipeline', *map(str, args)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def read_table(path):
    return ds.dataset(str(path), format='parquet').to_table()


def read_dead_letters(root):
    records = []
    for path in sorted(root.glob('*.jsonl')):
        records += [json.loads(line) for line in path.read_text().splitlines()]
    return records


def reference_rows(threshold):
    """Every (image_uri, score) that should be kept, computed straight from the sample's JSON."""
    return sorted((uri, score) for uri, annotations in read_sample_predictions()
                  for _, score, _ in annotations if score >= threshold)


@pytest.fixture(scope='module')
def sample_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('run') / 'out'
    result = run_pipeline('--input', SAMPLE_INPUT, '--output', out, '--image_sizes', MANIFEST,
                          '--score_threshold', '0.7')
    return out, result


def test_sample_run_writes_both_tables_with_the_contract_types(sample_run):
    out, _ = sample_run
    detections, images = read_table(out / 'detections'), read_table(out / 'images')
    assert detections.schema.equals(DETECTIONS_SCHEMA)
    assert images.schema.equals(IMAGES_SCHEMA)
    assert sorted(zip(detections['image_uri'].to_pylist(), detections['score'].to_pylist())) == \
        reference_rows(0.7)
    assert images.num_rows == 12
    assert sum(images['detection_count'].to_pylist()) == detections.num_rows
    assert all(name.endswith('.parquet') for name in os.listdir(out / 'detections'))


def test_sample_run_pixel_boxes_and_sizes(sample_run):
    out, _ = sample_run
    rows = read_table(out / 'detections').to_pylist()
    sized = [r for r in rows if r['image_width'] is not None]
    unsized = [r for r in rows if r['image_width'] is None]
    assert sized and unsized
    for row in sized:
        assert (row['image_width'], row['image_height']) == (1024, 683)
        assert row['px_x_min'] == pytest.approx(row['x_min'] * 1024)
        assert row['px_y_max'] == pytest.approx(row['y_max'] * 683)
        assert 0 <= row['x_min'] <= row['x_max'] <= 1 and 0 <= row['y_min'] <= row['y_max'] <= 1
    assert all(r['px_x_min'] is None for r in unsized)
    vertex = [r for r in rows if r['source_format'] == 'vertex']
    assert vertex and all(r['prediction_run'].startswith('prediction-salads_vertex') for r in vertex)
    assert all(r['source_file'].startswith(str(SAMPLE_INPUT)) for r in rows)


def test_sample_run_ranks_per_line(sample_run):
    out, _ = sample_run
    images = read_table(out / 'images').to_pylist()
    rows = read_table(out / 'detections').to_pylist()
    by_line = {}
    for row in rows:
        by_line.setdefault((row['source_file'], row['image_uri']), []).append(row)
    for group in by_line.values():
        # Lines with the same URI in one file share a key: ranks repeat once per line.
        ranks = sorted(r['rank'] for r in group)
        assert ranks.count(0) == len([i for i in images if (i['source_file'], i['image_uri']) ==
                                      (group[0]['source_file'], group[0]['image_uri'])
                                      and i['detection_count'] > 0])


def test_sample_run_dead_letters_and_summary(sample_run):
    out, result = sample_run
    dead = read_dead_letters(out / 'dead_letter')
    assert sorted((d['kind'], d['error_code'], d['error_status']) for d in dead) == [
        ('prediction_error', 3, 'INVALID_ARGUMENT'), ('prediction_error', 5, 'NOT_FOUND'),
        ('prediction_error', 5, 'NOT_FOUND')]
    for record in dead:
        assert set(record) == {'timestamp', 'kind', 'source_file', 'image_uri', 'error_code',
                               'error_status', 'error_message', 'payload', 'payload_encoding'}
        assert record['timestamp'].endswith('Z')
        assert {'error', 'status'} & set(json.loads(record['payload']))
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['files'] == {'result': 3, 'error': 2, 'other': 1, 'other_files': [
        str(SAMPLE_INPUT / 'prediction-salads_legacy-2021-03-01T10:52:53.972802Z' / '_SUCCESS')]}
    assert summary['lines'] == {'read': 15, 'blank': 0, 'non_blank': 15}
    assert summary['images_written'] == 12
    assert summary['detections']['kept'] == len(reference_rows(0.7))
    assert summary['detections']['in'] == 52
    assert summary['dead_letters']['prediction_error'] == 3
    assert summary['duplicate_image_uris'] == 3
    assert summary['image_sizes']['from_manifest'] == 4 and summary['images_without_size'] == 8
    assert summary['reconciliation']['holds'] is True
    assert 'OK: 15 non-blank lines read == 12 images + 3 line dead letters' in result.stdout
    assert len(summary['outputs']['detections']) >= 1


def write_messy_input(root):
    run = root / 'prediction-m-2021-01-01T00:00:00Z'
    run.mkdir(parents=True)
    good = b'{"ID":"gs://b/a.jpg","annotations":[{"display_name":"A","image_object_detection":' \
           b'{"bounding_box":{"normalized_vertices":[{},{"x":0.5,"y":0.5}]},"score":0.9}}]}'
    (run / 'image_object_detection_1.jsonl').write_bytes(
        b'\xef\xbb\xbf' + good + b'\r\n\r\n{"ID":\n\xff\xfe\n[1]\n' + good)  # last line: no newline
    (run / 'errors_1.jsonl').write_bytes(b'{"ID":"gs://b/z.jpg","error":{"code":5,"message":"x"}}\n')
    (run / 'errors_2.jsonl.gz').write_bytes(b'corrupt')
    return run


def test_bad_lines_go_to_dead_letters_and_the_run_reconciles(tmp_path):
    write_messy_input(tmp_path / 'in')
    out = tmp_path / 'out'
    result = run_pipeline('--input', tmp_path / 'in', '--output', out, '--image_size', '100x50',
                          '--dead_letter', tmp_path / 'dl')
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['lines'] == {'read': 7, 'blank': 1, 'non_blank': 6}
    assert summary['dead_letters'] == {'prediction_error': 1, 'malformed_line': 2, 'invalid_record': 1, 'invalid_box': 0,
                                       'unreadable_file': 1, 'write_failure': 0, 'invalid_ground_truth': 0, 'invalid_attribute': 0,
                                       'total': 5}
    assert summary['reconciliation']['holds'] and 'OK' in result.stdout
    dead = read_dead_letters(tmp_path / 'dl')
    assert {d['payload_encoding'] for d in dead} == {None, 'base64'}
    images = read_table(out / 'images').to_pylist()
    assert [i['size_source'] for i in images] == ['fixed', 'fixed']
    det = read_table(out / 'detections').to_pylist()
    assert [(d['px_x_max'], d['px_y_max']) for d in det] == [(50.0, 25.0), (50.0, 25.0)]


def test_multi_process_run_matches_single_process(tmp_path, sample_run):
    out, _ = sample_run
    multi = tmp_path / 'multi'
    result = run_pipeline('--input', SAMPLE_INPUT, '--output', multi, '--image_sizes', MANIFEST,
                          '--score_threshold', '0.7', '--direct_num_workers=2',
                          '--direct_running_mode=multi_processing')
    assert 'semi_persistent' not in result.stderr  # each worker's note that it has none, filtered
    for table in ('detections', 'images'):
        one = read_table(out / table).sort_by([('image_uri', 'ascending'), ('source_file', 'ascending')])
        two = read_table(multi / table).sort_by([('image_uri', 'ascending'), ('source_file', 'ascending')])
        assert sorted(map(str, one.to_pylist())) == sorted(map(str, two.to_pylist()))


def test_operation_json_as_input(tmp_path):
    operation = tmp_path / 'operation.json'
    folder = SAMPLE_INPUT / 'prediction-salads_vertex-2021-02-26T02:03:11.435Z'
    operation.write_text(json.dumps({'name': 'projects/1/locations/us-central1/batchPredictionJobs/2',
                                     'outputInfo': {'gcsOutputDirectory': str(folder)}}))
    out = tmp_path / 'out'
    run_pipeline('--input', operation, '--output', out, '--input_format=vertex')
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['images_written'] == 2 and summary['dead_letters']['prediction_error'] == 1


@pytest.mark.parametrize('args, message', [
    (['--output', 'OUT'], '--input is required'),
    (['--input', SAMPLE_INPUT], '--output or --output_table is required'),
    (['--input', 'IN_MISSING', '--output', 'OUT'], '--input: nothing found'),
    (['--input', SAMPLE_INPUT, '--output', 'OUT', '--score_threshold', '2'], '--score_threshold'),
    (['--input', SAMPLE_INPUT, '--output', 'OUT', '--label_thresholds', 'Tomato'], '--label_thresholds'),
    (['--input', SAMPLE_INPUT, '--output', 'OUT', '--image_size', '10by10'], '--image_size'),
    (['--input', SAMPLE_INPUT, '--output', 'OUT', '--image_sizes', 'IN_MISSING.csv'],
     '--image_sizes'),
])
def test_wrong_options_fail_before_any_work(tmp_path, args, message):
    args = [str(a).replace('OUT', str(tmp_path / 'out')).replace('IN_MISSING', str(tmp_path / 'none'))
            for a in args]
    result = run_pipeline(*args, check=False)
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / 'out').exists()


def test_probe_image_sizes_reads_local_image_headers(tmp_path):
    from PIL import Image
    images = tmp_path / 'images'
    images.mkdir()
    Image.new('RGB', (320, 200)).save(images / 'a photo.png')
    Image.new('RGB', (64, 48)).save(images / 'b.jpeg', 'JPEG')
    (images / 'not_an_image.jpg').write_bytes(b'plain text')
    run = tmp_path / 'in' / 'prediction-m-1'
    run.mkdir(parents=True)
    box = '{"display_name":"A","image_object_detection":{"bounding_box":{"normalized_vertices":' \
          '[{"x":0.5,"y":0.5},{"x":1,"y":1}]},"score":0.9}}'
    uris = [images / 'a photo.png', images / 'b.jpeg', images / 'not_an_image.jpg',
            images / 'missing.png', 'gs://bucket/remote.jpg']
    (run / 'image_object_detection_1.jsonl').write_text(
        ''.join(json.dumps({'ID': str(uri), 'annotations': [json.loads(box)]}) + '\n' for uri in uris))
    out = tmp_path / 'out'
    run_pipeline('--input', tmp_path / 'in', '--output', out, '--probe_image_sizes',
                 '--image_size=10x10')
    images_rows = {row['image_uri']: row for row in read_table(out / 'images').to_pylist()}
    sizes = {uri.rsplit('/', 1)[1]: (row['image_width'], row['image_height'], row['size_source'])
             for uri, row in images_rows.items()}
    assert sizes == {'a photo.png': (320, 200, 'probe'), 'b.jpeg': (64, 48, 'probe'),
                     'not_an_image.jpg': (10, 10, 'fixed'), 'missing.png': (10, 10, 'fixed'),
                     'remote.jpg': (10, 10, 'fixed')}  # a gs:// URI is never opened on a local run
    det = {row['image_uri'].rsplit('/', 1)[1]: row for row in read_table(out / 'detections').to_pylist()}
    assert (det['a photo.png']['px_x_min'], det['a photo.png']['px_y_max']) == (160.0, 200.0)
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['image_sizes']['from_probe'] == 2 and summary['image_sizes']['from_fixed'] == 3
    assert summary['image_sizes']['probe_failures'] == {
        'failed_missing': 1, 'failed_unreadable': 1, 'skipped_not_allowed': 1}


def test_input_without_shards_stops_at_launch(tmp_path):
    (tmp_path / 'in').mkdir()
    (tmp_path / 'in' / 'notes.txt').write_text('hello')
    result = run_pipeline('--input', tmp_path / 'in', '--output', tmp_path / 'out', check=False)
    assert result.returncode == 2 and 'holds no prediction shard' in result.stderr and 'notes.txt' in result.stderr
    assert not (tmp_path / 'out').exists()


def test_shards_without_lines_warn(tmp_path):
    (tmp_path / 'in').mkdir()
    (tmp_path / 'in' / 'predictions_00001.jsonl').write_text('\n')
    result = run_pipeline('--input', tmp_path / 'in', '--output', tmp_path / 'out', '--report=false')
    assert 'warning [no_lines]' in result.stderr
    [warning] = json.loads((tmp_path / 'out' / 'summary.json').read_text())['warnings']
    assert warning['figures'] == {'result_files': 1, 'error_files': 0, 'lines_read': 1}


def read_sample_predictions():
    """(image_uri, [(label, score, (x_min, y_min, x_max, y_max))]) per result line of the sample."""
    lines = []
    for path in sorted(SAMPLE_INPUT.rglob('*')):
        if 'errors_' in path.name or not path.name.endswith(('.jsonl', '.jsonl.gz')):
            continue
        data = gzip.decompress(path.read_bytes()) if path.name.endswith('.gz') else path.read_bytes()
        for text in data.decode().splitlines():
            record = json.loads(text)
            if 'ID' in record:
                anns = []
                for a in record['annotations']:
                    det = a['image_object_detection']
                    vs = det['bounding_box']['normalized_vertices']
                    xs, ys = [v.get('x', 0) for v in vs], [v.get('y', 0) for v in vs]
                    anns.append((a['display_name'], det['score'], (min(xs), min(ys), max(xs), max(ys))))
                lines.append((record['ID'], anns))
            else:
                p = record['prediction']
                anns = [(name, score, (b[0], b[2], b[1], b[3]))
                        for name, score, b in zip(p['displayNames'], p['confidences'], p['bboxes'])]
                lines.append((record['instance']['content'], anns))
    return lines


def reference_postprocess(anns, roi, thresholds, default, drop, min_area, min_overlap, iou, k):
    """A plain, one-box-at-a-time reference of the documented steps."""
    import shapely.geometry as sg
    area = lambda b: (b[2] - b[0]) * (b[3] - b[1])
    kept = [a for a in anns if a[1] >= thresholds.get(a[0], default)]
    kept = [a for a in kept if a[0] not in drop]
    kept = [a for a in kept if area(a[2]) >= min_area]
    kept = [a for a in kept if roi.intersection(sg.box(*a[2])).area / area(a[2]) >= min_overlap]
    ordered = sorted(range(len(kept)), key=lambda i: (-kept[i][1], i))
    survivors = []
    for i in ordered:
        box = sg.box(*kept[i][2])
        if all(kept[j][0] != kept[i][0] or
               box.intersection(sg.box(*kept[j][2])).area / box.union(sg.box(*kept[j][2])).area <= iou
               for j in survivors):
            survivors.append(i)
    return [kept[i] for i in survivors[:k]]


def test_every_postprocessing_option_on_the_sample(tmp_path):
    import shapely
    roi_text = 'POLYGON ((0 0, 0.7 0, 0.7 1, 0 1, 0 0))'
    roi_file = tmp_path / 'roi.wkt'
    roi_file.write_text(roi_text + '\n')
    out = tmp_path / 'out'
    result = run_pipeline(
        '--input', SAMPLE_INPUT, '--output', out, '--image_sizes', MANIFEST,
        '--score_threshold', '0.3', '--label_thresholds', 'Salad=0.7,Baked Goods=0.5',
        '--drop_labels', 'Tomato', '--min_box_area', '0.1', '--roi', roi_file,
        '--roi_min_overlap', '0.6', '--nms_iou', '0.1', '--max_detections', '1')
    expected = []
    for uri, anns in read_sample_predictions():
        kept = reference_postprocess(anns, shapely.from_wkt(roi_text), {'Salad': 0.7, 'Baked Goods': 0.5},
                                     0.3, {'Tomato'}, 0.1, 0.6, 0.1, 1)
        expected += [(uri, label, score) for label, score, _ in kept]
    rows = read_table(out / 'detections').to_pylist()
    assert sorted((r['image_uri'], r['label'], r['score']) for r in rows) == sorted(expected)
    assert expected and len(expected) < 52
    summary = json.loads((out / 'summary.json').read_text())
    removed = summary['detections']['removed_by']
    assert set(removed) == {'threshold', 'label_filter', 'min_box_area', 'roi', 'nms', 'max_detections'}
    assert all(removed.values()), removed  # every step has work to do on this input
    assert sum(removed.values()) + summary['detections']['kept'] == summary['detections']['in']
    images = read_table(out / 'images').to_pylist()
    assert sum(i['suppressed_count'] for i in images) == \
        removed['min_box_area'] + removed['roi'] + removed['nms'] + removed['max_detections']
    assert all(i['detection_count'] <= 1 for i in images)
    for row in rows:
        if row['image_width'] is not None:
            ring = shapely.from_wkt(row['box_wkt'])
            assert ring.bounds == (row['px_x_min'], row['px_y_min'], row['px_x_max'], row['px_y_max'])
            assert row['px_box_area'] == pytest.approx(ring.area)
        else:
            assert row['box_wkt'] is None and row['px_box_area'] is None
    assert 'removed, by step' in result.stdout


@pytest.mark.parametrize('roi, message', [
    ('POLYGON ((0 0, 1 1, 1 0, 0 1, 0 0))', '--roi: the polygon is not valid'),
    ('IN_MISSING.wkt', '--roi:'),
    ('POINT (0 0)', '--roi:'),
])
def test_wrong_roi_fails_before_any_work(tmp_path, roi, message):
    result = run_pipeline('--input', SAMPLE_INPUT, '--output', tmp_path / 'out',
                          '--roi', roi.replace('IN_MISSING', str(tmp_path / 'none')), check=False)
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / 'out').exists()


PUBLISHED_LAYOUTS = ROOT / 'tests' / 'fixtures' / 'published_layouts'


def test_layouts_seen_in_published_output(tmp_path):
    """An early Vertex AI job's `batchprediction-<model>-<time>/` folder names the run; a saved online
    prediction response, given by mistake, is a dead letter that says what it is."""
    out, dead = tmp_path / 'out', tmp_path / 'dead'
    run_pipeline('--input', PUBLISHED_LAYOUTS, '--output', out, '--dead_letter', dead)
    images = read_table(out / 'images').to_pylist()
    assert images and {i['prediction_run'] for i in images} == {
        'batchprediction-untitled_1618298013322_202141372930-2021-04-13T09:19:12.163334Z'}
    assert {d['prediction_run'] for d in read_table(out / 'detections').to_pylist()} == {images[0]['prediction_run']}
    letters = read_dead_letters(dead)
    assert [d['kind'] for d in letters] == ['invalid_record', 'invalid_record']
    for letter in letters:
        assert letter['source_file'].endswith('online_responses/predictions_00001.jsonl')
        assert letter['error_message'].startswith('an online prediction response'), letter['error_message']
        assert 'cannot be a batch prediction result line' in letter['error_message']
