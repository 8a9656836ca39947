"""Local batch runs over a large input use worker processes, one per core up to a cap, unless the user
chose Beam's direct-runner flags; small inputs stay in one process, where Beam starts fastest."""
import os

import pytest
from apache_beam.options.pipeline_options import DirectOptions
from conftest import SAMPLE

from pipeline import cli

MB = 1024 * 1024
BIG = cli.LOCAL_PARALLEL_MIN_BYTES


@pytest.mark.parametrize('shards, cpus, workers', [
    ({'a.jsonl': BIG - 1}, 8, 1),  # below the threshold: one process
    ({'a.jsonl': BIG}, 1, 1),  # one core
    ({'a.jsonl': BIG}, 2, 2),
    ({'a.jsonl': BIG}, 64, cli.MAX_LOCAL_WORKERS),  # capped: each worker takes memory
    ({'a.jsonl.gz': BIG, 'b.jsonl.gz': 10 * MB}, 8, 2),  # a .gz is one unit of work: no more workers
    ({'a.jsonl': BIG // 2, 'b.jsonl': BIG // 2}, 4, 4),  # the total counts, not the largest shard
])
def test_workers_follow_the_input_size_the_cores_and_the_units_of_work(shards, cpus, workers):
    assert cli.local_workers(shards, cpus) == workers


def prepared(tmp_path, *extra):
    plan = cli.prepare(['--input', str(SAMPLE / 'input'), '--output', str(tmp_path / 'out'), *extra])
    return plan.pipeline_options.view_as(DirectOptions)


def test_a_large_local_input_runs_on_worker_processes(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, 'LOCAL_PARALLEL_MIN_BYTES', 1)  # the sample counts as large
    monkeypatch.setattr(os, 'cpu_count', lambda: 4)
    direct = prepared(tmp_path)
    assert (direct.direct_num_workers, direct.direct_running_mode) == (4, 'multi_processing')
    assert 'running on 4 local worker processes' in capsys.readouterr().err


@pytest.mark.parametrize('flag', ['--direct_num_workers=1', '--direct_running_mode=in_memory'])
def test_the_users_direct_runner_flags_win(tmp_path, monkeypatch, capsys, flag):
    monkeypatch.setattr(cli, 'LOCAL_PARALLEL_MIN_BYTES', 1)
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
    monkeypatch.setattr(cli, 'LOCAL_PARALLEL_MIN_BYTES', 1)
    monkeypatch.setattr(os, 'cpu_count', lambda: 2)
    assert cli.main(args + ['--output', str(second)]) == 0
    captured = capsys.readouterr()
    assert 'running on 2 local worker processes' in captured.err
    # Only the output's own path differs (a checkout's path may hold any word).
    assert one.replace(str(first), str(second)) == captured.out
