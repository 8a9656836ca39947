"""A local batch run shows its progress on stderr, reported by the workers through logging, in one
process and on worker processes alike; --quiet shows none."""
import json

import pytest
from conftest import SAMPLE

from pipeline import cli
from pipeline.io.sources import matched_shards, resolve_input
from pipeline.tools import progress as display

ARGS = ['--input', str(SAMPLE / 'input'), '--image_size', '640x480', '--report=false']


@pytest.mark.parametrize('workers', [['--direct_num_workers=1'],
                                     ['--direct_num_workers=2', '--direct_running_mode=multi_processing']])
def test_the_last_progress_line_accounts_for_the_whole_input(tmp_path, monkeypatch, capsys, workers):
    monkeypatch.setattr(display, 'LINE_EVERY_SECONDS', 0.05)
    assert cli.main(ARGS + ['--output', str(tmp_path / 'out'), *workers]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith('progress: ')]
    assert lines, err
    summary = json.loads((tmp_path / 'out' / 'summary.json').read_text())
    shards = len(matched_shards(resolve_input(str(SAMPLE / 'input'))))
    assert lines[-1].startswith(f'progress: {shards}/{shards} shards, ')
    assert f'(100%), {summary["lines"]["read"]:,} lines, ' in lines[-1]
    assert f', {summary["detections"]["kept"]:,} detections kept, ' in lines[-1]


def test_quiet_shows_no_progress(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(display, 'LINE_EVERY_SECONDS', 0.01)
    assert cli.main(ARGS + ['--output', str(tmp_path / 'out'), '--quiet']) == 0
    captured = capsys.readouterr()
    assert 'progress' not in captured.err and 'OK' in captured.out


def test_a_listing_that_fails_costs_the_progress_not_the_run(tmp_path, monkeypatch, capsys, caplog):
    def failing(*_):
        raise OSError('the listing went away')
    monkeypatch.setattr(cli, 'matched_shards', failing)
    monkeypatch.setattr(display, 'LINE_EVERY_SECONDS', 0.01)
    assert cli.main(ARGS + ['--output', str(tmp_path / 'out'), '--direct_num_workers=1']) == 0
    captured = capsys.readouterr()
    assert 'No progress shown: listing the input failed (the listing went away)' in caplog.text
    assert 'progress:' not in captured.err and 'OK' in captured.out
