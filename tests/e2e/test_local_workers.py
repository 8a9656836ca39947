"""Local batch runs over a large input use worker processes, one per core up to a cap, unless the user
chose Beam's direct-runner flags; small inputs stay in one process, where Beam starts fastest."""
import os

import pytest
from apache_beam.options.pipeline_options import DirectOptions
from conftest import SAMPLE

from pipeline import cli
from pipeline.core import shards

MB = 1024 * 1024
LEGACY, VERTEX = 'image_object_detection_1.jsonl', 'predictions_00001.jsonl'
LEGACY_BIG = 800 * MB  # about 3.6 M annotations of the legacy format: past the crossing
VERTEX_BIG = 330 * MB  # the same in Vertex AI's format, which spells fewer keys


@pytest.mark.parametrize('sizes, cpus, workers', [
    ({LEGACY: 700 * MB}, 8, 1),  # below the crossing: one process
    ({VERTEX: 300 * MB}, 8, 1),
    ({LEGACY: LEGACY_BIG}, 1, 1),  # one core
    ({LEGACY: LEGACY_BIG}, 2, 2),
    ({VERTEX: VERTEX_BIG}, 2, 2),  # a Vertex AI input of this size is as much work
    ({VERTEX: 700 * MB}, 64, cli.MAX_LOCAL_WORKERS),  # capped: each worker takes memory
    ({LEGACY + '.gz': 120 * MB, VERTEX + '.gz': 10 * MB}, 8, 2),  # compressed: more work per byte; a .gz
    # is one unit of work, so no more workers than shards
    ({LEGACY: LEGACY_BIG // 2, 'image_object_detection_2.jsonl': LEGACY_BIG // 2}, 4, 4),  # the total counts
])
def test_workers_follow_the_work_in_the_input_the_cores_and_the_units_of_work(sizes, cpus, workers):
    assert cli.local_workers(sizes, cpus) == workers


def test_the_estimate_weighs_each_format_by_its_bytes_per_annotation():
    assert shards.annotations_estimate('gs://b/run/' + LEGACY, 235 * 1000) == pytest.approx(1000)
    assert shards.annotations_estimate('/x/' + VERTEX, 95 * 1000) == pytest.approx(1000)
    assert shards.annotations_estimate('/x/' + VERTEX + '.gz', 33 * 1000) == pytest.approx(1000)


def prepared(tmp_path, *extra):
    plan = cli.prepare(['--input', str(SAMPLE / 'input'), '--output', str(tmp_path / 'out'), *extra])
    return plan.pipeline_options.view_as(DirectOptions)


def test_a_large_local_input_runs_on_worker_processes(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, 'LOCAL_PARALLEL_MIN_ANNOTATIONS', 1)  # the sample counts as large
    monkeypatch.setattr(os, 'cpu_count', lambda: 4)
    direct = prepared(tmp_path)
    assert (direct.direct_num_workers, direct.direct_running_mode) == (4, 'multi_processing')
    assert 'running on 4 local worker processes' in capsys.readouterr().err


@pytest.mark.parametrize('flag', ['--direct_num_workers=1', '--direct_running_mode=in_memory'])
def test_the_users_direct_runner_flags_win(tmp_path, monkeypatch, capsys, flag):
    monkeypatch.setattr(cli, 'LOCAL_PARALLEL_MIN_ANNOTATIONS', 1)
    direct = prepared(tmp_path, flag)
    assert (direct.direct_num_workers, direct.direct_running_mode) == (1, 'in_memory')
    assert 'worker processes' not in capsys.readouterr().err


def test_small_inputs_and_other_runners_are_left_alone(tmp_path, capsys):
    assert prepared(tmp_path).direct_num_workers == 1  # the sample is far below the threshold
    direct = prepared(tmp_path, '--runner=BundleBasedDirectRunner')
    assert direct.direct_num_workers == 1
    assert capsys.readouterr().err == ''


def test_a_run_on_worker_processes_prints_the_same_summary(tmp_path, monkeypatch, capsys):
    args = ['--input', str(SAMPLE / 'input'), '--image_size', '640x480', '--report=false']
    first, second = tmp_path / 'in-this-process', tmp_path / 'on-worker-processes'
    assert cli.main(args + ['--output', str(first)]) == 0
    one = capsys.readouterr().out
    monkeypatch.setattr(cli, 'LOCAL_PARALLEL_MIN_ANNOTATIONS', 1)
    monkeypatch.setattr(os, 'cpu_count', lambda: 2)
    assert cli.main(args + ['--output', str(second)]) == 0
    captured = capsys.readouterr()
    assert 'running on 2 local worker processes' in captured.err
    # Only the output's own path differs (a checkout's path may hold any word).
    assert one.replace(str(first), str(second)) == captured.out
