"""Exports as users run them (issue 18): the sample's kept boxes in the four formats, each read back by
its format's reader; the uncertain selection; the files ours, counted in the summary; wrong export
options refused before any work."""
import contextlib
import gzip
import io
import json

import pyarrow.parquet as pq
import pytest
from conftest import SAMPLE
from pycocotools.coco import COCO

from pipeline.core.formats import Prediction, parse_line
from pipeline.core.truth_formats import GroundTruthImage
from pipeline.io.truth_files import read_units

ALL = 'vertex_jsonl,automl_csv,coco,label_studio'


@pytest.fixture(scope='module')
def exported(run, tmp_path_factory):
    out = tmp_path_factory.mktemp('export') / 'out'
    result = run('--input', SAMPLE / 'input', '--output', out, '--image_sizes', SAMPLE / 'image_sizes.csv',
                 '--score_threshold', '0.5', '--export', ALL, '--export_ml_use', 'test', '--report=false')
    return result, out


def kept_boxes(out, threshold=0.5):
    """(image URI, label, box) of the kept detections of each image's first line of its run (the line an
    export writes, as the evaluation uses it), read from the input with the full validator."""
    first = {}
    for path in sorted((SAMPLE / 'input').rglob('*.jsonl*')):
        data = gzip.decompress(path.read_bytes()) if path.suffix == '.gz' else path.read_bytes()
        for line in data.splitlines():
            parsed = parse_line(line)
            if isinstance(parsed, Prediction):
                first.setdefault((path.parent.name, parsed.image_uri), parsed)
    return sorted((p.image_uri, label, box) for p in first.values()
                  for label, score, box in zip(p.labels, p.scores, p.boxes) if score >= threshold)


def test_an_image_on_several_lines_is_exported_once_and_the_others_counted(exported):
    _, out = exported
    lines = pq.read_table(out / 'images').to_pylist()
    first = {(r['prediction_run'], r['image_uri']) for r in lines}
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['export_further_lines'] == len(lines) - len(first) == 9
    assert summary['export']['label_studio']['images'] == len(first)


def test_vertex_and_automl_exports_read_back_as_the_kept_boxes(exported):
    _, out = exported
    for fmt, suffix in (('vertex_jsonl', 'jsonl'), ('automl_csv', 'csv')):
        (path,) = (out / 'export' / fmt).glob(f'part-*.{suffix}')
        units = [unit.parsed for _, unit in read_units(str(path), fmt)]
        assert all(isinstance(unit, GroundTruthImage) and unit.ml_use == 'test' for unit in units)
        boxes = sorted((unit.image_uri, box.label, box.box) for unit in units for box in unit.boxes)
        assert boxes == kept_boxes(out), fmt
        assert len({unit.image_uri for unit in units}) == len({uri for uri, _, _ in kept_boxes(out)} | {
            row['image_uri'] for row in pq.read_table(out / 'images').to_pylist()})


def test_coco_and_label_studio_documents_load(exported):
    _, out = exported
    coco = COCO()
    with contextlib.redirect_stdout(io.StringIO()):
        coco.dataset = json.loads((out / 'export' / 'coco' / 'annotations.json').read_text())
        coco.createIndex()
    sized = pq.read_table(out / 'images').to_pylist()
    first = {(r['prediction_run'], r['image_uri']): r for r in sized}.values()
    assert len(coco.dataset['images']) == sum(1 for r in first if r['image_width'])
    tasks = json.loads((out / 'export' / 'label_studio' / 'tasks.json').read_text())
    assert len(tasks) == len(first)
    assert sum(len(t['predictions'][0]['result']) for t in tasks) == len(kept_boxes(out))


def test_the_summary_counts_and_lists_the_exports(exported):
    result, out = exported
    summary = json.loads((out / 'summary.json').read_text())
    kept = len(kept_boxes(out))
    assert summary['export']['vertex_jsonl']['boxes'] == kept == summary['export']['automl_csv']['boxes']
    first = {(r['prediction_run'], r['image_uri']): r for r in pq.read_table(out / 'images').to_pylist()}
    assert summary['export']['coco']['removed'] == {'size_unknown': sum(1 for r in first.values() if not r['image_width'])}
    assert {f'export_{fmt}' for fmt in ALL.split(',')} <= set(summary['outputs'])
    assert 'export coco' in result.stdout


def test_a_users_file_in_an_export_folder_stops_the_run_and_stays(run, exported):
    _, out = exported
    mine = out / 'export' / 'coco' / 'my-notes.txt'
    mine.write_text('mine')
    try:
        refused = run('--input', SAMPLE / 'input', '--output', out, '--export', 'coco', '--overwrite', check=False)
        assert refused.returncode == 2 and 'my-notes.txt' in refused.stderr and mine.read_text() == 'mine'
    finally:
        mine.unlink()


def test_uncertain_exports_only_the_images_with_a_score_in_the_band(run, tmp_path):
    out = tmp_path / 'out'
    run('--input', SAMPLE / 'input', '--output', out, '--export', 'vertex_jsonl', '--export_select', 'uncertain',
        '--uncertain_min', '0.4', '--uncertain_max', '0.6', '--score_threshold', '0.9', '--report=false')
    (path,) = (out / 'export' / 'vertex_jsonl').glob('*.jsonl')
    exported_uris = [json.loads(line)['imageGcsUri'] for line in path.read_text().splitlines()]
    expected = set()
    for shard in (SAMPLE / 'input').rglob('*.jsonl'):
        for line in shard.read_text().splitlines():
            record = json.loads(line)
            if 'error' in record or 'status' in record:
                continue
            scores = ([a['image_object_detection']['score'] for a in record.get('annotations', [])]
                      if 'ID' in record else record['prediction']['confidences'])
            if any(0.4 <= s < 0.6 for s in scores):
                expected.add(record.get('ID') or record['instance']['content'])
    assert expected and set(exported_uris) == expected


@pytest.mark.parametrize('args, fragment', [
    (['--export_select', 'errors', '--export', 'coco'], '--export_select=errors needs --ground_truth'),
    (['--export', 'coco,coco'], 'names a format twice'),
    (['--export', 'yolo'], 'comma-separated formats'),
    (['--export_ml_use', 'test'], '--export_ml_use needs --export'),
    (['--export', 'coco', '--uncertain_min', '0.8', '--uncertain_max', '0.2'], 'must be below --uncertain_max'),
])
def test_wrong_export_options_stop_the_run_before_any_work(run, tmp_path, args, fragment):
    result = run('--input', SAMPLE / 'input', '--output', tmp_path / 'out', *args, check=False)
    assert result.returncode == 2 and fragment in result.stderr, result.stderr
    assert not (tmp_path / 'out').exists()


def test_errors_exports_the_images_with_a_false_positive_or_a_miss(run, tmp_path):
    """Ground truth equal to the kept boxes for some images (no error) and with one more box for the
    others (a miss): exactly the images the evaluation's matches show an fp or fn in are exported."""
    first = tmp_path / 'first'
    run('--input', SAMPLE / 'input', '--output', first, '--score_threshold', '0.5', '--report=false')
    rows = pq.read_table(first / 'detections').to_pylist()
    uris = sorted({row['image_uri'] for row in pq.read_table(first / 'images').to_pylist()})
    lines = []
    for index, uri in enumerate(uris):
        boxes = [{'displayName': r['label'], 'xMin': r['x_min'], 'yMin': r['y_min'], 'xMax': r['x_max'],
                  'yMax': r['y_max']} for r in rows if r['image_uri'] == uri]
        if index % 2:
            boxes.append({'displayName': 'Salad', 'xMin': 0.0, 'yMin': 0.0, 'xMax': 0.05, 'yMax': 0.05})
        lines.append(json.dumps({'imageGcsUri': uri, 'boundingBoxAnnotations': boxes}))
    (tmp_path / 'truth.jsonl').write_text('\n'.join(lines) + '\n')
    out = tmp_path / 'out'
    run('--input', SAMPLE / 'input', '--output', out, '--score_threshold', '0.5', '--report=false',
        '--ground_truth', tmp_path / 'truth.jsonl', '--export', 'vertex_jsonl', '--export_select', 'errors')
    matches = pq.read_table(out / 'evaluation' / 'matches').to_pylist()
    expected = {r['image_uri'] for r in matches if r['outcome'] != 'tp'}
    (path,) = (out / 'export' / 'vertex_jsonl').glob('*.jsonl')
    exported = {json.loads(line)['imageGcsUri'] for line in path.read_text().splitlines()}
    assert expected and exported == expected
    assert set(uris[1::2]) <= exported


def test_a_streaming_run_refuses_exports(run):
    result = run('--input_subscription', 'projects/my-project/subscriptions/shards', '--output_table',
                 'my-project:dataset.detections', '--export', 'coco', check=False)
    assert result.returncode == 2 and '--export applies to batch runs only' in result.stderr
