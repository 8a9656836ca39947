"""Dataflow is where users scale: the whole job is built for the DataflowRunner, offline (Beam's
--dry_run with --no_auth), for a batch and a streaming run. A dry run provisions nothing."""
import json
import re
import subprocess
import sys

import pytest
from conftest import ROOT, SAMPLE

DATAFLOW = ['--runner', 'DataflowRunner', '--project', 'my-project', '--region', 'us-central1',
            '--temp_location', 'gs://my-bucket/tmp', '--staging_location', 'gs://my-bucket/staging',
            '--no_auth', '--dry_run=True', '--sdk_location=container']


def dry_run(*args):
    result = subprocess.run([sys.executable, '-m', 'pipeline', *map(str, args), *DATAFLOW], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r'Dry run: the (\w+) job was built for DataflowRunner \((\d+) transforms\); nothing was '
                      r'submitted', result.stdout)
    assert match, result.stdout
    return match.group(1), int(match.group(2))


def test_the_batch_job_builds_for_dataflow_and_provisions_nothing(tmp_path):
    out = tmp_path / 'out'
    out.mkdir()
    summary = {'writer': 'prediction-tables', 'outputs': {}, 'reconciliation': {'holds': True}}
    (out / 'summary.json').write_text(json.dumps(summary))  # a completed run: a real run would refuse
    mode, transforms = dry_run('--input', SAMPLE / 'input', '--output', out, '--score_threshold', '0.5',
                               '--nms_iou', '0.5', '--image_sizes', SAMPLE / 'image_sizes.csv')
    assert mode == 'batch' and transforms > 50
    assert sorted(p.name for p in out.iterdir()) == ['summary.json']  # no lock, nothing removed


@pytest.mark.parametrize('method', ['streaming_inserts', 'file_loads'])
def test_the_streaming_job_builds_for_dataflow_without_touching_bigquery(method):
    mode, transforms = dry_run('--input_subscription', 'projects/my-project/subscriptions/shards',
                               '--output_table', 'my-project:ds.detections', '--output', 'gs://my-bucket/stream',
                               '--bigquery_method', method)
    assert mode == 'streaming' and transforms > 50


def test_the_batch_job_with_evaluation_and_bigquery_builds_for_dataflow(tmp_path):
    _, plain = dry_run('--input', SAMPLE / 'input', '--output', tmp_path / 'a')
    mode, transforms = dry_run('--input', SAMPLE / 'input', '--output', tmp_path / 'b', '--output_table',
                               'my-project:ds.detections',
                               '--ground_truth', ROOT / 'tests' / 'fixtures' / 'ground_truth' / 'coco.json')
    assert mode == 'batch' and transforms > plain + 20  # the ground truth, the join, four tables
    _, exporting = dry_run('--input', SAMPLE / 'input', '--output', tmp_path / 'c',
                           '--ground_truth', ROOT / 'tests' / 'fixtures' / 'ground_truth' / 'coco.json',
                           '--export', 'vertex_jsonl,automl_csv,coco,label_studio', '--export_select', 'errors')
    assert exporting > plain + 20
