"""Evaluation as users run it: `python -m pipeline --ground_truth ...` over two prediction runs (one
in each format) against COCO ground truth with crowd boxes; each run's metrics.json equals
pycocotools' on that run's detections, and every output, count and dead letter is accounted for."""
import json

import pyarrow.parquet as pq
import pytest
from coco_testing import coco_ground_truth, generated_set, legacy_line, pycocotools_eval, vertex_line
from conftest import ROOT

from pipeline.core.evaluation import CONFIDENCE_GRID
from pipeline.io.truth_files import read_units

PREFIX = 'gs://bucket/images/'
RUN_A, RUN_B = 'prediction-model_a-2026-11-30T10:00:00.000Z', 'prediction-model_b-2026-11-30T11:00:00.000Z'


@pytest.fixture(scope='module')
def evaluated(tmp_path_factory, run):
    """One run of the CLI; its outputs and pycocotools' figures for each prediction run."""
    tmp = tmp_path_factory.mktemp('evaluation')
    sizes, truth, detections = generated_set(11, images=40)
    uris = [f'{PREFIX}{i}.jpg' for i in range(len(sizes))]
    run_b = [dets[::2] for dets in detections]
    folder_a, folder_b = tmp / 'in' / RUN_A, tmp / 'in' / RUN_B
    folder_a.mkdir(parents=True)
    folder_b.mkdir(parents=True)
    # Run A (Vertex AI): every 3rd image has no line; a line for an image outside the ground truth.
    lines_a = [vertex_line(uri, size, dets) for i, (uri, size, dets) in enumerate(zip(uris, sizes, detections))
               if i % 3]
    lines_a.append(vertex_line(f'{PREFIX}unlabelled.jpg', sizes[1], detections[1]))
    (folder_a / 'predictions_00001.jsonl').write_bytes(b'\n'.join(lines_a) + b'\n')
    # Run B (legacy): every image, and a second line for image 4 in a later shard (not evaluated).
    lines_b = [legacy_line(uri, size, dets) for uri, size, dets in zip(uris, sizes, run_b)]
    (folder_b / 'image_object_detection_1.jsonl').write_bytes(b'\n'.join(lines_b) + b'\n')
    (folder_b / 'image_object_detection_2.jsonl').write_bytes(legacy_line(uris[4], sizes[4], detections[4]) + b'\n')
    (tmp / 'truth.json').write_text(json.dumps(coco_ground_truth(sizes, truth)))
    out = tmp / 'out'
    result = run('--input', tmp / 'in', '--output', out, '--ground_truth', tmp / 'truth.json',
                          '--ground_truth_image_prefix', PREFIX, '--report=false')
    expected = {RUN_A: pycocotools_eval(sizes, truth, [d if i % 3 else [] for i, d in enumerate(detections)]),
                RUN_B: pycocotools_eval(sizes, truth, run_b)}
    return result, out, expected, (sizes, truth, detections, run_b)


def test_each_run_equals_pycocotools(evaluated):
    _, out, expected, _ = evaluated
    document = json.loads((out / 'evaluation' / 'metrics.json').read_text())
    runs = {run['prediction_run']: run for run in document['runs']}
    assert list(runs) == [RUN_A, RUN_B]
    for name, (per_label, stats) in expected.items():
        run = runs[name]
        assert run['map'] == pytest.approx(stats[0], abs=1e-9)
        assert run['map_50'] == pytest.approx(stats[1], abs=1e-9)
        assert run['map_75'] == pytest.approx(stats[2], abs=1e-9)
        assert run['mar'] == pytest.approx(stats[8], abs=1e-9)
        labels = {entry['label']: entry for entry in run['labels']}
        for label, values in per_label.items():
            if values is None:  # no ground truth (fish): AP null, as pycocotools' -1
                assert label not in labels or labels[label]['ap'] is None
            else:
                assert labels[label]['ap_per_iou'] == pytest.approx(values.tolist(), abs=1e-9)


def test_the_summary_accounts_for_the_ground_truth_and_what_was_evaluated(evaluated):
    result, out, _, (sizes, truth, _, _) = evaluated
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['ground_truth'] == {
        'rows_read': len(sizes) + 1, 'rows_used': len(sizes), 'dead_letters': 1, 'images_other_ml_use': 0,
        'images': len(sizes), 'boxes': sum(map(len, truth)), 'boxes_past_edge': 0, 'annotation_ids_repeated': 0,
        'boxes_repeated': 0, 'images_with_repeated_boxes': 0,
        'images_by_ml_use': {}, 'holds': True}
    evaluation = summary['evaluation']
    runs = {run['prediction_run']: run for run in evaluation['runs']}
    assert runs[RUN_A]['images_without_prediction'] == len(range(0, len(sizes), 3))
    assert runs[RUN_A]['predictions_without_ground_truth'] == 1
    assert runs[RUN_B]['further_lines_of_evaluated_images'] == 1
    assert evaluation['images_evaluated'] == 2 * len(sizes)
    assert summary['dead_letters']['invalid_ground_truth'] == 1
    assert summary['reconciliation']['holds'] and summary['reconciliation']['outputs']['evaluation_matches']['holds']
    assert 'ground-truth rows read ==' in result.stdout and 'mAP@0.5' in result.stdout
    dead = [json.loads(line) for path in (out / 'dead_letter').glob('*.jsonl') for line in path.read_text().splitlines()]
    (record,) = [d for d in dead if d['kind'] == 'invalid_ground_truth']
    assert record['source_file'].endswith('truth.json') and '12345' in record['error_message']


def test_per_box_outcomes_cover_every_kept_detection_and_every_missed_box(evaluated):
    _, out, _, (sizes, truth, detections, run_b) = evaluated
    matches = pq.read_table(out / 'evaluation' / 'matches').to_pylist()
    of_b = [row for row in matches if row['prediction_run'] == RUN_B]
    detected = [row for row in of_b if row['outcome'] in ('tp', 'fp')]
    document = json.loads((out / 'evaluation' / 'metrics.json').read_text())
    (labels,) = [run['labels'] for run in document['runs'] if run['prediction_run'] == RUN_B]
    assert len(detected) == sum(label['tp'] + label['fp'] for label in labels)
    # Every kept detection has a row but those COCO ignores (matched to a crowd box); the second line
    # of image 4 is not evaluated.
    ignored = sum(map(len, run_b)) - len(detected)
    assert 0 < ignored < 10 and any(crowd for boxes in truth for _, _, crowd in boxes)
    for row in of_b:
        if row['outcome'] == 'fn':
            assert row['score'] is None and row['x_min'] is None and row['gt_index'] is not None
        elif row['outcome'] == 'tp':
            assert row['iou'] >= 0.5 and row['gt_x_min'] is not None
        else:  # an fp may overlap a box that a higher-scored detection took
            assert row['gt_index'] is None and row['score'] is not None and row['gt_x_min'] is None
    tp = sum(row['outcome'] == 'tp' for row in of_b)
    fn = sum(row['outcome'] == 'fn' for row in of_b)
    regular = sum(1 for boxes in truth for _, _, crowd in boxes if not crowd)
    assert tp + fn == regular
    confidence = pq.read_table(out / 'evaluation' / 'confidence_metrics').to_pylist()
    for run in document['runs']:
        rows = [row for row in confidence if row['prediction_run'] == run['prediction_run']]
        assert len(rows) == (len(run['labels']) + 1) * len(CONFIDENCE_GRID)
    confusion = pq.read_table(out / 'evaluation' / 'confusion_matrix').to_pylist()
    assert {row['prediction_run'] for row in confusion} == {RUN_A, RUN_B}
    assert any(row['true_label'] is None for row in confusion) and any(row['predicted_label'] is None
                                                                      for row in confusion)


def test_a_rerun_replaces_the_evaluation_and_a_users_file_there_stops_it(evaluated, run, tmp_path):
    _, out, _, _ = evaluated
    stray = out / 'evaluation' / 'matches' / 'notes.txt'
    stray.write_text('mine')
    try:
        refused = run('--input', out.parent / 'in', '--output', out, '--ground_truth', out.parent / 'truth.json',
                      '--ground_truth_image_prefix', PREFIX, '--overwrite', check=False)
        assert refused.returncode == 2 and 'notes.txt' in refused.stderr
    finally:
        stray.unlink()


FIXTURES = ROOT / 'tests' / 'fixtures' / 'ground_truth'


@pytest.mark.parametrize('fixture, extra, images, other_ml_use', [
    ('vertex_import.jsonl', [], 2, 0),
    ('automl_vision.csv', [], 3, 0),
    ('automl_vision.csv', ['--ml_use', 'TRAIN'], 1, 2),
    ('coco.json', ['--ground_truth_image_prefix', 'gs://coco/'], 3, 0),
])
def test_each_ground_truth_format_end_to_end(run, tmp_path, fixture, extra, images, other_ml_use):
    """Predictions that are the fixture's own boxes: AP 1 for every label with ground truth."""
    prefix = extra[1] if extra and extra[0] == '--ground_truth_image_prefix' else ''
    boxes_of = {}  # one prediction line per image, with the boxes of all its units
    for _, unit in read_units(str(FIXTURES / fixture), 'auto', prefix):
        boxes_of.setdefault(unit.parsed.image_uri, []).extend(unit.parsed.boxes)
    folder = tmp_path / 'in' / 'prediction-m-2026-12-01T00:00:00.000Z'
    folder.mkdir(parents=True)
    lines = [legacy_line(uri, (1, 1), [(box.label, [box.box[0], box.box[1], box.box[2] - box.box[0],
                                                    box.box[3] - box.box[1]], 0.9)
                                       for box in boxes if not box.crowd])
             for uri, boxes in boxes_of.items()]
    (folder / 'image_object_detection_1.jsonl').write_bytes(b'\n'.join(lines) + b'\n')
    out = tmp_path / 'out'
    run('--input', tmp_path / 'in', '--output', out, '--ground_truth', FIXTURES / fixture, '--report=false', *extra)
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['ground_truth']['images'] == images
    assert summary['ground_truth']['images_other_ml_use'] == other_ml_use
    if fixture == 'automl_vision.csv':  # every image's ML use, whichever --ml_use asked for
        assert summary['ground_truth']['images_by_ml_use'] == {'training': 1, 'test': 1, 'unassigned': 1}
    assert summary['ground_truth']['holds'] and summary['reconciliation']['holds']
    (metrics,) = json.loads((out / 'evaluation' / 'metrics.json').read_text())['runs']
    with_truth = [label for label in metrics['labels'] if label['ground_truth_boxes']]
    assert with_truth and all(label['ap'] == pytest.approx(1.0) for label in with_truth)
    assert metrics['map'] == pytest.approx(1.0) and metrics['images'] == images


@pytest.mark.parametrize('args, fragment', [
    (['--ml_use', 'test'], '--ml_use needs --ground_truth'),
    (['--ground_truth', 'GT', '--ground_truth_format', 'csv'], 'one of auto, vertex_jsonl, automl_csv, coco'),
    (['--ground_truth', 'GT', '--iou_thresholds', '0.5,0.5'], 'gives a threshold twice'),
    (['--ground_truth', 'GT', '--eval_iou', '0'], 'above 0'),
    (['--ground_truth', 'GT', '--ml_use', 'holdout'], 'one of training (or train)'),
    (['--ground_truth', 'GT/nothing-here'], 'holds no file'),
    (['--ground_truth', 'GT/notes.txt'], 'cannot tell the format'),
    (['--ground_truth', 'GT', '--ground_truth_format', 'automl_csv', '--ground_truth_image_prefix', 'x/'],
     'applies to COCO ground truth only'),
])
def test_wrong_evaluation_options_stop_the_run_before_any_work(run, tmp_path, args, fragment):
    (tmp_path / 'gt').mkdir()
    (tmp_path / 'gt' / 'labels.jsonl').write_text('')
    (tmp_path / 'gt' / 'notes.txt').write_text('no commas and no JSON here')
    args = [str(tmp_path / 'gt' / a[3:]) if a.startswith('GT/') else str(tmp_path / 'gt' / 'labels.jsonl')
            if a == 'GT' else a for a in args]
    result = run('--input', ROOT / 'sample' / 'input', '--output', tmp_path / 'out', *args, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert fragment in result.stderr and not (tmp_path / 'out').exists()


def test_a_streaming_run_refuses_evaluation(run, tmp_path):
    result = run('--input_subscription', 'projects/my-project/subscriptions/shards', '--output_table',
                 'my-project:dataset.detections', '--ground_truth', tmp_path, check=False)
    assert result.returncode == 2 and '--ground_truth applies to batch runs only' in result.stderr


def test_a_local_run_spills_its_join_to_a_folder_of_its_own_and_removes_it(tmp_path, monkeypatch):
    """The join's parts wait in files of a folder the run makes under $TMPDIR (a reference travels
    instead), and the folder is gone when the run ends."""
    import os
    import tempfile

    from pipeline import cli
    scratch = tmp_path / 'scratch'
    scratch.mkdir()
    monkeypatch.setattr(tempfile, 'tempdir', str(scratch))
    seen = {}
    remove = cli.remove_spill_folder

    def watched(folder):
        seen[folder] = sorted(os.listdir(folder)) if folder and os.path.isdir(folder) else None
        remove(folder)
    monkeypatch.setattr(cli, 'remove_spill_folder', watched)
    folder = tmp_path / 'in' / 'prediction-m-2026-12-01T00:00:00.000Z'
    folder.mkdir(parents=True)
    (folder / 'image_object_detection_1.jsonl').write_bytes(
        legacy_line('gs://folder/image1.png', (1, 1), [('car', [0.1, 0.1, 0.2, 0.2], 0.9)]) + b'\n')
    assert cli.main(['--input', str(tmp_path / 'in'), '--output', str(tmp_path / 'out'), '--ground_truth',
                     str(FIXTURES / 'vertex_import.jsonl'), '--report=false', '--quiet']) == 0
    ((spill, files),) = seen.items()
    assert os.path.dirname(spill) == str(scratch) and files and all(name.endswith('.parts') for name in files)
    assert not os.listdir(scratch)
    (metrics,) = json.loads((tmp_path / 'out' / 'evaluation' / 'metrics.json').read_text())['runs']
    assert metrics['images'] == 2


@pytest.mark.parametrize('table', ['confidence_metrics', 'confusion_matrix'])
def test_a_users_file_named_as_our_small_table_stops_the_run_and_stays(run, tmp_path, table):
    """The small tables are written straight to their one file: a file of that name that no run of
    ours wrote is never overwritten."""
    folder = tmp_path / 'in' / 'prediction-m-2026-12-01T00:00:00.000Z'
    folder.mkdir(parents=True)
    (folder / 'image_object_detection_1.jsonl').write_bytes(
        legacy_line('gs://folder/image1.png', (1, 1), [('car', [0.1, 0.1, 0.2, 0.2], 0.9)]) + b'\n')
    users = tmp_path / 'out' / 'evaluation' / table / 'part-00000-of-00001.parquet'
    users.parent.mkdir(parents=True)
    users.write_bytes(b'not ours')
    result = run('--input', tmp_path / 'in', '--output', tmp_path / 'out', '--ground_truth',
                 FIXTURES / 'vertex_import.jsonl', '--report=false', check=False)
    assert result.returncode == 2 and 'part-00000-of-00001.parquet' in result.stderr
    assert users.read_bytes() == b'not ours'
