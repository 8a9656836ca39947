"""A run removes only what runs of ours wrote, says OK only over data that is there, and never runs
twice into one place at once (issue 14, parts 1 and 2)."""
import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from conftest import ROOT, SAMPLE

from pipeline.core import summary as run_summary
from pipeline.core.counts import Counts
from pipeline.core.outputs import LOCK_NAME, OutputLayout, survey
from pipeline.io import summary_files
from pipeline.io.locks import LockHeld, RunLock

INPUT = SAMPLE / 'input'


def tree(folder):
    """Every file under a folder with its content: what a user would check was left alone."""
    return {str(path.relative_to(folder)): path.read_bytes()
            for path in sorted(folder.rglob('*')) if path.is_file()}


def test_dead_letter_folder_keeps_the_users_files(run, tmp_path):
    user = tmp_path / 'd'
    (user / 'sub').mkdir(parents=True)
    (user / 'a.txt').write_text('x')
    (user / 'sub' / 'b.txt').write_text('x')
    before = tree(user)
    run('--input', INPUT, '--output', tmp_path / 'o', '--dead_letter', user, '--report=false')
    run('--input', INPUT, '--output', tmp_path / 'o', '--dead_letter', user, '--report=false',
        '--overwrite')
    after = tree(user)
    assert {name: after[name] for name in before} == before
    assert sorted(set(after) - set(before)) == ['dead_letter-00000-of-00001.jsonl']


def test_dead_letter_in_the_working_directory_removes_nothing_else(run, tmp_path):
    (tmp_path / 'notes.md').write_text('mine')
    (tmp_path / 'data').mkdir()
    (tmp_path / 'data' / 'keep.csv').write_text('1,2')
    result = subprocess.run([sys.executable, '-m', 'pipeline', '--input', str(INPUT), '--output',
                             str(tmp_path / 'o'), '--dead_letter', '.', '--report=false'],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / 'notes.md').read_text() == 'mine'
    assert (tmp_path / 'data' / 'keep.csv').read_text() == '1,2'


@pytest.mark.parametrize('option', ['--output', '--dead_letter'])
def test_an_output_location_equal_to_the_input_is_refused(run, tmp_path, option):
    shards = tmp_path / 'in'
    subprocess.run(['cp', '-r', str(INPUT), str(shards)], check=True)
    before = tree(shards)
    args = ['--output', tmp_path / 'o'] if option == '--dead_letter' else []
    result = run('--input', shards, option, shards, *args, check=False)
    assert result.returncode == 2 and 'is the input itself' in result.stderr
    assert tree(shards) == before


def test_outputs_inside_the_input_are_neither_read_nor_removed(run, tmp_path):
    shards = tmp_path / 'in'
    subprocess.run(['cp', '-r', str(INPUT), str(shards)], check=True)
    before = tree(shards)
    out = shards / 'tables'
    first = run('--input', shards, '--output', out)
    second = run('--input', shards, '--output', out, '--overwrite')
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['files']['other_files'] == [str(next(shards.rglob('_SUCCESS')))]
    assert summary['images_written'] == 12
    assert {name: data for name, data in tree(shards).items() if not name.startswith('tables/')} == before
    assert first.stdout.splitlines()[:9] == second.stdout.splitlines()[:9]


def test_files_of_the_user_in_our_folders_stop_the_run_and_stay(run, tmp_path):
    out = tmp_path / 'o'
    (out / 'images' / 'holiday').mkdir(parents=True)
    (out / 'images' / 'holiday' / 'cat.jpg').write_bytes(b'jpeg')
    (out / 'report').mkdir()
    (out / 'report' / 'q3.docx').write_bytes(b'docx')
    result = run('--input', INPUT, '--output', out, check=False)
    assert result.returncode == 2
    assert str(out / 'images' / 'holiday' / 'cat.jpg') in result.stderr
    assert tree(out) == {'images/holiday/cat.jpg': b'jpeg', 'report/q3.docx': b'docx'}
    (out / 'images' / 'holiday' / 'cat.jpg').unlink()
    run('--input', INPUT, '--output', out)  # report/q3.docx is beside what we write, not in the way
    assert (out / 'report' / 'q3.docx').read_bytes() == b'docx'
    assert (out / 'report' / 'index.html').exists()


def test_a_users_report_or_summary_where_ours_would_go_stops_the_run(run, tmp_path):
    out = tmp_path / 'o'
    (out / 'report').mkdir(parents=True)
    (out / 'report' / 'index.html').write_text('mine')
    result = run('--input', INPUT, '--output', out, check=False)
    assert result.returncode == 2 and 'report/index.html' in result.stderr and '--report=false' in result.stderr
    run('--input', INPUT, '--output', out, '--report=false')
    assert (out / 'report' / 'index.html').read_text() == 'mine'
    elsewhere = tmp_path / 'mine.json'
    elsewhere.write_text('{"my": "notes"}')
    result = run('--input', INPUT, '--output', tmp_path / 'o2', '--summary', elsewhere, check=False)
    assert result.returncode == 2 and str(elsewhere) in result.stderr
    assert elsewhere.read_text() == '{"my": "notes"}'


def test_a_summary_elsewhere_guards_the_completed_run_and_feeds_the_report(run, tmp_path):
    out, summary = tmp_path / 'o', tmp_path / 'runs' / 'summary.json'
    summary.parent.mkdir()
    first = run('--input', INPUT, '--output', out, '--summary', summary)
    assert 'Report:' in first.stdout and not (out / 'summary.json').exists()
    refused = run('--input', INPUT, '--output', out, '--summary', summary, check=False)
    assert refused.returncode == 2 and '--overwrite' in refused.stderr
    # The default summary of a completed run in the same output is guarded too.
    run('--input', INPUT, '--output', tmp_path / 'p')
    refused = run('--input', INPUT, '--output', tmp_path / 'p', '--summary', tmp_path / 'x.json', check=False)
    assert refused.returncode == 2 and '--overwrite' in refused.stderr
    assert json.loads((tmp_path / 'p' / 'summary.json').read_text())['images_written'] == 12


def test_a_second_run_into_a_running_runs_output_is_refused(run, tmp_path):
    sys.path.insert(0, str(ROOT / 'bench'))
    from generate import generate
    generate(str(tmp_path / 'big'), images=20_000, shards=4)
    out = tmp_path / 'o'
    first = subprocess.Popen([sys.executable, '-m', 'pipeline', '--input', str(tmp_path / 'big'),
                              '--output', str(out), '--report=false'], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / LOCK_NAME).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    second = run('--input', INPUT, '--output', out, check=False)
    stdout, stderr = first.communicate(timeout=600)
    assert second.returncode == 2, second.stdout + second.stderr
    assert str(out / LOCK_NAME) in second.stderr and 'is held by run' in second.stderr
    assert first.returncode == 0, stderr
    assert 'OK: ' in stdout and not (out / LOCK_NAME).exists()
    assert pq.read_table(out / 'images').num_rows == 20_000


def test_a_killed_run_left_final_files_and_its_lock_and_the_rerun_replaces_them(run, tmp_path):
    out = tmp_path / 'o'
    run('--input', INPUT, '--output', out, '--report=false')
    (out / 'summary.json').unlink()  # as if killed during finalization, before the summary
    stray = out / 'detections' / 'part-00007-of-00009.parquet'
    stray.write_bytes((out / 'detections' / 'part-00000-of-00001.parquet').read_bytes())
    (out / LOCK_NAME).write_text(json.dumps({'run_id': 'x', 'state': 'running', 'host': 'h',
                                             'pid': 1, 'started': 't', 'input': 'i'}))
    run('--input', INPUT, '--output', out, '--report=false')  # the lock is not held: its run stopped
    assert not stray.exists()
    assert pq.read_table(out / 'detections').num_rows == json.loads(
        (out / 'summary.json').read_text())['detections']['kept']


def test_files_with_our_names_but_no_run_of_ours_are_not_taken(run, tmp_path):
    out = tmp_path / 'o'
    (out / 'detections').mkdir(parents=True)
    (out / 'detections' / 'part-00000-of-00001.parquet').write_bytes(b'not ours')
    result = run('--input', INPUT, '--output', out, check=False)
    assert result.returncode == 2 and 'part-00000-of-00001.parquet' in result.stderr
    assert (out / 'detections' / 'part-00000-of-00001.parquet').read_bytes() == b'not ours'


def test_an_empty_summary_is_not_taken_for_a_completed_run(run, tmp_path):
    out = tmp_path / 'o'
    out.mkdir()
    (out / 'summary.json').write_bytes(b'')
    result = run('--input', INPUT, '--output', out, check=False)
    assert result.returncode == 2 and 'summary.json' in result.stderr
    assert 'holds a completed run' not in result.stderr


def test_local_lock_refuses_a_second_holder_and_is_released_by_a_dead_process(tmp_path):
    path = str(tmp_path / LOCK_NAME)
    first = RunLock(path, 'a' * 32, 'in')
    assert first.acquire() is False
    with pytest.raises(LockHeld, match='is held by run ' + 'a' * 32):
        RunLock(path, 'b' * 32, 'in').acquire()
    first.release(keep=True)  # stopped without a summary: its lock marks its files
    second = RunLock(path, 'b' * 32, 'in')
    assert second.acquire() is True
    second.release(keep=False)
    assert not os.path.exists(path)
    holder = subprocess.Popen([sys.executable, '-c', (
        'import sys, time; sys.path.insert(0, sys.argv[2]); from pipeline.io.locks import RunLock; '
        'RunLock(sys.argv[1], "c" * 32, "in").acquire(); print("held", flush=True); time.sleep(60)'),
        path, str(ROOT)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == 'held'
    with pytest.raises(LockHeld):
        RunLock(path, 'd' * 32, 'in').acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert RunLock(path, 'd' * 32, 'in').acquire() is True  # the kernel dropped the dead run's lock


def test_survey_sorts_ours_from_the_users():
    layout = OutputLayout.of('/o', '/d', '/o/summary.json', report=True)
    existing = ['/o/detections/part-00000-of-00002.parquet', '/o/detections/mine.csv',
                '/o/images/beam-temp-part-' + 'a' * 32 + '/x', '/d/dead_letter-00000-of-00001.jsonl',
                '/d/notes.txt', '/o/report/index.html', '/o/summary.json']
    stale = survey(layout, existing, [], stale_locks=set(layout.lock_files))
    assert '/o/detections/mine.csv' not in stale.ours and '/d/notes.txt' not in stale.ours
    assert [c.path for c in stale.conflicts] == ['/o/detections/mine.csv']
    fresh = survey(layout, existing, ['/o/detections/part-00000-of-00002.parquet'], stale_locks=set())
    assert fresh.ours == ['/o/detections/part-00000-of-00002.parquet']
    assert {c.path for c in fresh.conflicts} == set(existing) - {
        '/o/detections/part-00000-of-00002.parquet', '/d/notes.txt'}


def test_a_stopped_runs_lock_vouches_only_for_the_place_it_guards(run, tmp_path):
    """The output root holds a stopped run's lock; a separate dead-letter root holds none, so a file
    there named like our dead letters is not taken as ours: the run stops and the file survives."""
    layout = OutputLayout.of('/o', '/d', '/o/summary.json', report=False)
    named = '/d/dead_letter-00000-of-00001.jsonl'
    only_output = survey(layout, [named, '/o/detections/part-00000-of-00001.parquet'], [],
                         stale_locks={'/o/' + LOCK_NAME})
    assert only_output.ours == ['/o/detections/part-00000-of-00001.parquet']
    assert [c.path for c in only_output.conflicts] == [named]
    out, dead = tmp_path / 'o', tmp_path / 'd'
    out.mkdir()
    dead.mkdir()
    (out / LOCK_NAME).write_text(json.dumps({'run_id': 'x', 'state': 'ended'}))
    (dead / 'dead_letter-00000-of-00001.jsonl').write_text('another tool wrote this\n')
    result = run('--input', INPUT, '--output', out, '--dead_letter', dead, check=False)
    assert result.returncode == 2 and 'dead_letter-00000-of-00001.jsonl' in result.stderr
    assert (dead / 'dead_letter-00000-of-00001.jsonl').read_text() == 'another tool wrote this\n'


def test_reconciliation_checks_the_rows_of_the_files_it_lists(run, tmp_path):
    out = tmp_path / 'o'
    run('--input', INPUT, '--output', out, '--report=false')
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['reconciliation']['outputs']['detections'] == {
        'files': 1, 'rows': 52, 'expected': 52, 'holds': True}
    listed = summary['outputs']
    rows = summary_files.count_output_rows(listed)
    assert rows == {'detections': 52, 'images': 12, 'dead_letters': 3}
    (out / 'images' / 'part-00000-of-00001.parquet').unlink()
    pq.write_table(ds.dataset(str(out / 'detections')).to_table().slice(0, 5),
                   out / 'images' / 'part-00000-of-00001.parquet')
    counts = Counts({'lines_read': 15, 'images_written': 12, 'dead_letters_prediction_error': 3,
                     'detections_kept': 52})
    from pipeline.config.settings import Settings
    rebuilt = run_summary.build_summary(counts, 0, Settings.of(input='x', output=str(out)), 'x/**', listed,
                                        summary_files.count_output_rows(listed))
    assert not rebuilt['reconciliation']['holds']
    assert 'images files hold 5 rows, not 12' in rebuilt['reconciliation']['text']


def test_the_summary_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / 'summary.json'

    def disk_full(_):
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(os, 'fsync', disk_full)
    with pytest.raises(OSError):
        summary_files.publish({'run_id': 'e' * 32, 'x': 1}, str(path))
    assert list(tmp_path.iterdir()) == []  # neither a partial summary nor its temporary file
    monkeypatch.undo()
    summary_files.publish({'run_id': 'e' * 32, 'x': 1}, str(path))
    assert json.loads(path.read_text()) == {'run_id': 'e' * 32, 'x': 1}


def test_relative_locations_inside_the_input_are_skipped_too(run, tmp_path):
    subprocess.run(['cp', '-r', str(INPUT), str(tmp_path / 'in')], check=True)
    for overwrite in ([], ['--overwrite']):
        result = subprocess.run([sys.executable, '-m', 'pipeline', '--input', 'in', '--output', 'in/tables',
                                 '--report=false', *overwrite], cwd=tmp_path, capture_output=True,
                                text=True, timeout=600, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / 'in' / 'tables' / 'summary.json').read_text())
    assert [os.path.basename(path) for path in summary['files']['other_files']] == ['_SUCCESS']
    assert all(path.startswith(str(tmp_path)) for paths in summary['outputs'].values() for path in paths)


@pytest.mark.parametrize('option, where', [('--dead_letter', 'images/dl'), ('--summary', 'detections/s.json')])
def test_dead_letters_or_a_summary_inside_a_table_folder_are_refused(run, tmp_path, option, where):
    result = run('--input', INPUT, '--output', tmp_path / 'o', option, tmp_path / 'o' / where, check=False)
    assert result.returncode == 2 and 'hold the Parquet tables only' in result.stderr
    assert not (tmp_path / 'o').exists()


def test_a_run_that_fails_has_its_own_exit_code_and_the_next_run_replaces_it(tmp_path, monkeypatch, capsys):
    from pipeline import cli

    def disk_full(summary, path):
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(summary_files, 'publish', disk_full)
    out = tmp_path / 'o'
    assert cli.main(['--input', str(INPUT), '--output', str(out), '--report=false']) == cli.EXIT_RUN_FAILED
    assert 'the run failed' in capsys.readouterr().err
    assert not (out / 'summary.json').exists()
    assert json.loads((out / LOCK_NAME).read_text())['state'] == 'ended'  # marks what it left as ours
    assert list((out / 'detections').glob('*.parquet'))
    monkeypatch.undo()
    assert cli.main(['--input', str(INPUT), '--output', str(out), '--report=false']) == 0
    assert json.loads((out / 'summary.json').read_text())['reconciliation']['holds']
    assert not (out / LOCK_NAME).exists()


def test_the_evaluation_folders_and_metrics_are_ours_only_when_the_run_evaluates():
    evaluating = OutputLayout.of('/o', '/o/dead_letter', '/o/summary.json', report=False, evaluation=True)
    plain = OutputLayout.of('/o', '/o/dead_letter', '/o/summary.json', report=False)
    existing = ['/o/evaluation/metrics.json', '/o/evaluation/matches/part-00000-of-00001.parquet',
                '/o/evaluation/thresholds.csv', '/o/evaluation/confusion_matrix/notes.txt']
    stale = survey(evaluating, existing, [], stale_locks=set(evaluating.lock_files))
    assert stale.ours == sorted(existing[:3])
    assert [c.path for c in stale.conflicts] == ['/o/evaluation/confusion_matrix/notes.txt']
    assert survey(plain, existing, [], stale_locks=set(plain.lock_files)) == ([], [])
    assert evaluating.write_targets('/o/evaluation/metrics.json') == 'it is where the evaluation metrics go'
    assert 'operating thresholds' in evaluating.write_targets('/o/evaluation/thresholds.csv')


def test_the_comparison_folder_and_document_are_ours_only_when_the_run_compares():
    comparing = OutputLayout.of('/o', '/o/dead_letter', '/o/summary.json', report=False, comparison=True)
    plain = OutputLayout.of('/o', '/o/dead_letter', '/o/summary.json', report=False)
    existing = ['/o/comparison.json', '/o/comparison/part-00000-of-00001.parquet', '/o/comparison/notes.txt']
    stale = survey(comparing, existing, [], stale_locks=set(comparing.lock_files))
    assert stale.ours == sorted(existing[:2])
    assert [c.path for c in stale.conflicts] == ['/o/comparison/notes.txt']
    assert survey(plain, existing, [], stale_locks=set(plain.lock_files)) == ([], [])
    assert comparing.write_targets('/o/comparison.json') == 'it is where the comparison of the runs goes'
    assert '/o/comparison' in plain.with_every_folder().table_folders  # --overwrite clears an earlier comparison
