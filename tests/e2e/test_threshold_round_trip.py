"""Operating thresholds as users run them: an evaluated run writes each label's threshold to
thresholds.csv, and a rerun with `--label_thresholds @thresholds.csv` gets exactly the precision,
recall and tp / fp / fn that the file promised."""
import csv
import json

import pytest
from coco_testing import coco_ground_truth, generated_set, vertex_line

from pipeline.core.operating_thresholds import scores_of
from pipeline.core.schema import THRESHOLD_COLUMNS

PREFIX = 'gs://bucket/images/'
RUN = 'prediction-model_a-2026-12-01T10:00:00.000Z'


@pytest.fixture(scope='module')
def predictions(tmp_path_factory):
    """One prediction run with 3-decimal scores (ties, as real models write them) and its ground truth."""
    tmp = tmp_path_factory.mktemp('thresholds')
    sizes, truth, detections = generated_set(21, images=60)
    detections = [[(label, box, round(score, 3)) for label, box, score in dets] for dets in detections]
    folder = tmp / 'in' / RUN
    folder.mkdir(parents=True)
    lines = [vertex_line(f'{PREFIX}{i}.jpg', size, dets) for i, (size, dets) in enumerate(zip(sizes, detections))]
    (folder / 'predictions_00001.jsonl').write_bytes(b'\n'.join(lines) + b'\n')
    (tmp / 'truth.json').write_text(json.dumps(coco_ground_truth(sizes, truth)))
    return tmp


def evaluate(run, predictions, out, *extra, **kwargs):
    return run('--input', predictions / 'in', '--output', out, '--ground_truth', predictions / 'truth.json',
               '--ground_truth_image_prefix', PREFIX, '--report=false', *extra, **kwargs)


def read_rows(path):
    with open(path, newline='', encoding='utf-8') as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == [column.name for column in THRESHOLD_COLUMNS]
        return list(reader)


@pytest.mark.parametrize('rule, name', [((), 'best_f1'), (('--target_precision', '0.6'), 'target_precision'),
                                        (('--target_recall', '0.3'), 'target_recall')])
def test_a_rerun_with_the_file_gets_what_it_promised(run, predictions, tmp_path, rule, name):
    first = tmp_path / 'first'
    evaluate(run, predictions, first, *rule)
    rows = read_rows(first / 'evaluation' / 'thresholds.csv')
    metrics = json.loads((first / 'evaluation' / 'metrics.json').read_text())
    by_label = {entry['label']: entry for entry in metrics['runs'][0]['labels']}
    assert {row['label'] for row in rows} == set(by_label) and all(row['rule'] == name for row in rows)
    chosen = {row['label']: row for row in rows if row['threshold']}
    assert len(chosen) >= 2
    for label, row in chosen.items():  # metrics.json says the same as the file
        assert by_label[label]['operating_threshold']['threshold'] == float(row['threshold'])
    assert not rows[[row['label'] for row in rows].index('fish')]['threshold']  # never in the ground truth
    second = tmp_path / 'second'
    result = evaluate(run, predictions, second, '--label_thresholds', f'@{first / "evaluation" / "thresholds.csv"}')
    assert 'fish (no ground-truth box' in result.stderr and 'keep --score_threshold' in result.stderr
    summary = json.loads((second / 'summary.json').read_text())
    assert summary['thresholds']['label_thresholds'] == {label: float(row['threshold']) for label, row in chosen.items()}
    rerun = {entry['label']: entry for entry in
             json.loads((second / 'evaluation' / 'metrics.json').read_text())['runs'][0]['labels']}
    for label, row in chosen.items():
        promised = (int(row['tp']), int(row['fp']), int(row['fn']))
        assert (rerun[label]['tp'], rerun[label]['fp'], rerun[label]['fn']) == promised, label
        assert scores_of(*promised) == (float(row['precision']), float(row['recall']), float(row['f1'])), label
    for label in set(by_label) - set(chosen):  # no threshold in the file: as before
        assert (rerun[label]['tp'], rerun[label]['fp']) == (by_label[label]['tp'], by_label[label]['fp'])


def test_a_label_that_never_reaches_the_target_says_why(run, predictions, tmp_path):
    evaluate(run, predictions, tmp_path / 'out', '--target_recall', '1')
    rows = read_rows(tmp_path / 'out' / 'evaluation' / 'thresholds.csv')
    never = [row for row in rows if not row['threshold'] and row['label'] != 'fish']
    assert never and all(row['reason'].startswith('recall never reaches 1 at --eval_iou (at most 0.')
                         and not row['tp'] for row in never)


@pytest.mark.parametrize('extra, message', [
    (('--target_precision', '0.9', '--target_recall', '0.5'), '--target_precision and --target_recall'),
    (('--label_thresholds', '@missing/thresholds.csv'), '@missing/thresholds.csv cannot be read'),
])
def test_wrong_threshold_options_fail_before_any_work(run, predictions, tmp_path, extra, message):
    result = evaluate(run, predictions, tmp_path / 'out', *extra, check=False)
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / 'out').exists()


def test_a_file_of_several_runs_is_refused_for_an_input_of_several(run, predictions, tmp_path):
    table = tmp_path / 'thresholds.csv'
    table.write_text('prediction_run,label,threshold\nrun-a,cat,0.5\nrun-b,cat,0.6\n')
    result = run('--input', predictions / 'in', '--output', tmp_path / 'out', '--label_thresholds', f'@{table}',
                 check=False)
    assert result.returncode == 2 and "2 runs ('run-a', 'run-b')" in result.stderr
    table.write_text(f'prediction_run,label,threshold\nrun-a,cat,0.5\n{RUN},cat,0.625\n')
    run('--input', predictions / 'in', '--output', tmp_path / 'out', '--label_thresholds', f'@{table}',
        '--report=false')
    summary = json.loads((tmp_path / 'out' / 'summary.json').read_text())
    assert summary['thresholds']['label_thresholds'] == {'cat': 0.625}  # the input's run's row


def test_a_users_own_thresholds_csv_stops_the_run_and_survives(run, predictions, tmp_path):
    mine = tmp_path / 'out' / 'evaluation' / 'thresholds.csv'
    mine.parent.mkdir(parents=True)
    mine.write_text('label,threshold\nmy,0.5\n')
    result = evaluate(run, predictions, tmp_path / 'out', '--overwrite', check=False)
    assert result.returncode == 2 and 'operating thresholds go' in result.stderr
    assert mine.read_text() == 'label,threshold\nmy,0.5\n'
