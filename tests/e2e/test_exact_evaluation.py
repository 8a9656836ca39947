"""Evaluation exact on real data (issue 25): every run is in metrics.json, pycocotools' own IoU
thresholds, its maxDets and the twelve numbers, as a user runs the tool."""
import json

import numpy as np
from conftest import ROOT

from pipeline.config.options import COCO_IOU_THRESHOLDS

TRUTH = ROOT / 'tests' / 'fixtures' / 'ground_truth' / 'vertex_import.jsonl'


def test_the_default_thresholds_are_pycocotools_own_bit_for_bit():
    expected = np.linspace(.5, 0.95, int(np.round((0.95 - .5) / .05)) + 1, endpoint=True)  # COCOeval's Params
    assert list(COCO_IOU_THRESHOLDS) == expected.tolist() and COCO_IOU_THRESHOLDS[8] == 0.8999999999999999


def test_a_run_without_a_usable_line_is_in_the_metrics_with_every_box_missed(run, tmp_path):
    shard = tmp_path / 'in' / 'prediction-m-1' / 'predictions_1.jsonl'
    shard.parent.mkdir(parents=True)
    shard.write_text('{"bad": 1}\nnot json\n')
    out = tmp_path / 'o'
    run('--input', tmp_path / 'in', '--output', out, '--ground_truth', TRUTH, '--report=false',
        '--max_dead_letter_ratio', '1')
    metrics = json.loads((out / 'evaluation' / 'metrics.json').read_text())
    assert metrics['iou_thresholds'] == list(COCO_IOU_THRESHOLDS)
    [entry] = metrics['runs']
    assert entry['prediction_run'] == 'prediction-m-1' and entry['images'] == 2 and entry['map'] is None
    assert [(label['fn'], label['tp'], label['best_f1']) for label in entry['labels']] == [(1, 0, None)] * 2
    codes = [warning['code'] for warning in json.loads((out / 'summary.json').read_text())['warnings']]
    assert 'ground_truth_no_overlap' in codes
