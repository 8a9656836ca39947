"""Nothing lost under bad input and faults: every line ends in the output or the dead letters."""
import gzip
import json
import os
import signal
import subprocess
import sys
import time

import orjson
import pyarrow.dataset as ds
import pytest
from conftest import GOOD, GOOD_LINE, ROOT, SAMPLE

from pipeline.io.sizes import resolve_allowed

TRUNCATED_GZ = gzip.compress(b'\n'.join(orjson.dumps(dict(GOOD, ID=f'gs://b/{i}.jpg')) for i in range(3000)))

# shard name -> (bytes, {outcome: count}); outcomes are images or dead-letter kinds.
CASES = {
    'invalid_utf8': (GOOD_LINE + b'\n{"ID":"gs://b/\xff\xfe.jpg","annotations":[]}\n',
                     {'images': 1, 'malformed_line': 1}),
    'no_final_newline': (GOOD_LINE + b'\n' + GOOD_LINE, {'images': 2}),
    'truncated_last_line': (GOOD_LINE + b'\n' + GOOD_LINE[:40], {'images': 1, 'malformed_line': 1}),
    'line_of_50_mb': (orjson.dumps(dict(GOOD, padding='x' * 50_000_000)) + b'\n' + GOOD_LINE + b'\n',
                      {'images': 2}),
    'empty_shard': (b'', {}),
    'only_blank_lines': (b'\n  \n\t\n\r\n', {}),
    'crlf_line_ends': (GOOD_LINE + b'\r\n' + GOOD_LINE + b'\r\n', {'images': 2}),
    'utf8_bom': (b'\xef\xbb\xbf' + GOOD_LINE + b'\n', {'images': 1}),
    'wrong_shape_json': (b'[1, 2]\n"a string"\nnull\n42\n', {'invalid_record': 4}),
    'numbers_as_strings': (GOOD_LINE.replace(b'"score":0.9', b'"score":"0.9"') + b'\n',
                           {'invalid_record': 1}),
    'nan_infinity_1e400': (GOOD_LINE.replace(b'0.9', b'NaN') + b'\n' + GOOD_LINE.replace(b'0.9', b'Infinity')
                           + b'\n' + GOOD_LINE.replace(b'0.9', b'1e400') + b'\n', {'malformed_line': 3}),
    'nested_too_deep': (b'{"ID":"gs://b/x.jpg","annotations":' + b'[' * 5000 + b']' * 5000 + b'}\n',
                        {'malformed_line': 1}),
    'duplicate_keys': (b'{"ID":"gs://b/first.jpg","ID":"gs://b/dup.jpg","annotations":[]}\n', {'images': 1}),
    'boxes_100k': (orjson.dumps(dict(GOOD, annotations=GOOD['annotations'] * 100_000)) + b'\n', {'images': 1}),
    'error_shapes': (b'{"ID":"gs://b/1.jpg","error":{"code":5,"message":"a"}}\n'
                     b'{"ID":"gs://b/2.jpg","status":{"code":3,"message":"b"}}\n'
                     b'{"ID":"gs://b/3.jpg","error":{"status":"NOT_FOUND","message":"c"}}\n'
                     b'{"instance":{"content":"gs://b/4.jpg"},"error":{"code":13,"message":"d"}}\n'
                     b'{"instance":{"content":"gs://b/5.jpg"},"error":{"status":"INTERNAL","message":"e"}}\n',
                     {'prediction_error': 5}),
    'odd_ids': (b''.join(orjson.dumps(dict(GOOD, ID=uri)) + b'\n' for uri in (
        'gs://b/with space.jpg', 'gs://b/"quoted".jpg', 'gs://b/\u00fcnicode-\u5199\u771f.jpg',
        'gs://b/[1].jpg', 'gs://b/*.jpg', 'gs://b/#frag.jpg', 'gs://b/q?.jpg')), {'images': 7}),
}
GZ_CASES = {
    'corrupt_gz': (b'this is not gzip data at all\n' * 10, {'unreadable_file': 1}),
    'truncated_gz': (TRUNCATED_GZ[:len(TRUNCATED_GZ) // 2], {'unreadable_file': 1, 'images': 'some'}),
}


@pytest.fixture(scope='module')
def bad_input_run(run, tmp_path_factory):
    root = tmp_path_factory.mktemp('bad')
    run_dir = root / 'in' / 'prediction-m-1'
    run_dir.mkdir(parents=True)
    names = {}
    for index, (case, (data, _)) in enumerate(CASES.items()):
        name = f'image_object_detection_{index}.jsonl'
        (run_dir / name).write_bytes(data)
        names[name] = case
    for index, (case, (data, _)) in enumerate(GZ_CASES.items()):
        name = f'errors_{index}.jsonl.gz'
        (run_dir / name).write_bytes(data)
        names[name] = case
    out = root / 'out'
    result = run('--input', root / 'in', '--output', out)
    outcomes = {case: {} for case in names.values()}
    for row in ds.dataset(str(out / 'images')).to_table(columns=['source_file']).to_pylist():
        counts = outcomes[names[os.path.basename(row['source_file'])]]
        counts['images'] = counts.get('images', 0) + 1
    for path in (out / 'dead_letter').glob('*.jsonl'):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            counts = outcomes[names[os.path.basename(record['source_file'])]]
            counts[record['kind']] = counts.get(record['kind'], 0) + 1
    return out, outcomes, json.loads((out / 'summary.json').read_text()), result


@pytest.mark.parametrize('case', list(CASES) + list(GZ_CASES))
def test_bad_input_case(bad_input_run, case):
    _, outcomes, _, _ = bad_input_run
    expected = {**CASES, **GZ_CASES}[case][1]
    got = outcomes[case]
    if expected.get('images') == 'some':
        assert 0 < got.pop('images') < 3000
        expected = {k: v for k, v in expected.items() if k != 'images'}
    assert got == expected


def test_bad_input_run_reconciles_and_keeps_odd_ids_verbatim(bad_input_run):
    out, _, summary, result = bad_input_run
    assert summary['reconciliation']['holds'], summary['reconciliation']
    assert summary['lines']['blank'] == 4  # the blank-only shard's lines
    uris = set(ds.dataset(str(out / 'images')).to_table(columns=['image_uri'])['image_uri'].to_pylist())
    assert {'gs://b/[1].jpg', 'gs://b/*.jpg', 'gs://b/q?.jpg', 'gs://b/\u00fcnicode-\u5199\u771f.jpg'} <= uris
    assert 'gs://b/dup.jpg' in uris  # duplicate keys: the last one wins, as in orjson
    assert summary['detections']['in'] >= 100_000


def probe_allowed(uri, scheme, prefixes):
    return resolve_allowed(uri, scheme, prefixes) is not None


def test_probe_allowlist():
    assert probe_allowed('gs://bucket/a.jpg', 'gs', None)
    assert not probe_allowed('/etc/passwd', 'gs', None)
    assert not probe_allowed('file:///etc/passwd', 'gs', None)
    assert not probe_allowed('file:///etc/passwd', 'file', None)
    assert not probe_allowed('relative/path.jpg', 'file', None)
    assert probe_allowed('gs://mine/x.jpg', 'gs', ('gs://mine/',))
    assert not probe_allowed('gs://other/x.jpg', 'gs', ('gs://mine/',))
    assert not probe_allowed('gs://mine-not/x.jpg', 'gs', ('gs://mine/',))
    assert probe_allowed('/data/images/a.png', 'file', ('/data/images/',))
    assert not probe_allowed('/data/images/../../etc/passwd', 'file', ('/data/images/',))


def test_probe_never_opens_what_is_outside_the_allowed_prefixes(run, tmp_path):
    from PIL import Image
    allowed, secret = tmp_path / 'allowed', tmp_path / 'secret'
    allowed.mkdir()
    secret.mkdir()
    Image.new('RGB', (10, 20)).save(allowed / 'ok.png')
    Image.new('RGB', (30, 40)).save(secret / 'no.png')
    run_dir = tmp_path / 'in' / 'prediction-m-1'
    run_dir.mkdir(parents=True)
    uris = [allowed / 'ok.png', secret / 'no.png', f'{allowed}/../secret/no.png', '/etc/passwd',
            'file:///etc/passwd']
    (run_dir / 'image_object_detection_1.jsonl').write_bytes(
        b''.join(orjson.dumps(dict(GOOD, ID=str(uri))) + b'\n' for uri in uris))
    out = tmp_path / 'out'
    run('--input', tmp_path / 'in', '--output', out, '--probe_image_sizes',
        f'--probe_allowed_prefixes={allowed}/')
    sizes = {row['image_uri']: row['image_width'] for row in ds.dataset(str(out / 'images')).to_table().to_pylist()}
    assert sizes[str(allowed / 'ok.png')] == 10
    assert all(sizes[str(uri)] is None for uri in uris[1:])
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['image_sizes']['probe_failures'] == {'skipped_not_allowed': 4}


def test_a_completed_run_is_refused_without_overwrite(run, tmp_path):
    out = tmp_path / 'out'
    run('--input', SAMPLE / 'input', '--output', out)
    (out / 'notes.txt').write_text('mine')
    refused = run('--input', SAMPLE / 'input', '--output', out, check=False)
    assert refused.returncode == 2 and '--overwrite' in refused.stderr
    run('--input', SAMPLE / 'input', '--output', out, '--overwrite', '--score_threshold', '0.9')
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['thresholds']['score_threshold'] == 0.9
    assert (out / 'notes.txt').read_text() == 'mine'  # not ours: never touched


def test_max_dead_letter_ratio_writes_everything_then_fails(run, tmp_path):
    out = tmp_path / 'out'
    result = run('--input', SAMPLE / 'input', '--output', out, '--max_dead_letter_ratio', '0.1',
                 check=False)
    assert result.returncode == 3
    assert '3 of 15 non-blank lines (20.00%)' in result.stderr and 'max_dead_letter_ratio=0.1' in result.stderr
    assert json.loads((out / 'summary.json').read_text())['images_written'] == 12
    assert run('--input', SAMPLE / 'input', '--output', tmp_path / 'ok',
               '--max_dead_letter_ratio', '0.25').returncode == 0


def test_a_killed_run_leaves_no_summary_and_a_rerun_equals_a_clean_run(run, tmp_path):
    sys.path.insert(0, str(ROOT / 'bench'))
    from generate import generate
    generate(str(tmp_path / 'in'), images=20_000, shards=4)
    killed = tmp_path / 'killed'
    process = subprocess.Popen([sys.executable, '-m', 'pipeline', '--input', str(tmp_path / 'in'),
                                '--output', str(killed)], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while not list(killed.glob('**/beam-temp*/*')) and time.monotonic() < deadline:
        time.sleep(0.05)  # kill it once it has started writing
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / 'summary.json').exists()
    assert not list(killed.glob('detections/*.parquet'))  # nothing final: only temporary files

    run('--input', tmp_path / 'in', '--output', killed)  # no --overwrite needed: no summary
    run('--input', tmp_path / 'in', '--output', tmp_path / 'clean')
    for table, columns in (('detections', ['image_uri', 'score', 'x_min', 'rank']),
                           ('images', ['image_uri', 'annotation_count', 'detection_count'])):
        files = sorted(p.name for p in (killed / table).iterdir())
        assert all(name.endswith('.parquet') for name in files), files  # no leftovers
        rows = [sorted(map(str, ds.dataset(str(root / table)).to_table(columns=columns).to_pylist()))
                for root in (killed, tmp_path / 'clean')]
        assert rows[0] == rows[1] and rows[0]


def test_a_failed_bigquery_only_run_removes_its_scratch_folder(tmp_path, monkeypatch):
    """A local run that writes only to BigQuery gets its summary back through a scratch folder of its
    own; the folder is gone when the run fails too."""
    import tempfile

    import apache_beam as beam

    from pipeline import cli

    class Broken(beam.PTransform):
        def __init__(self, *args, **kwargs):
            super().__init__()

        def expand(self, pbegin):
            return pbegin | beam.Create([1]) | beam.Map(lambda _: 1 / 0)
    scratch = tmp_path / 'tmp'
    scratch.mkdir()
    monkeypatch.setattr(tempfile, 'tempdir', str(scratch))
    monkeypatch.setattr(cli, 'PredictionsToTables', Broken)
    plan = cli.prepare(['--input', str(SAMPLE / 'input'), '--output_table', 'my-project:dataset.table',
                        '--bigquery_method=streaming_inserts'], quiet=True)
    with pytest.raises(Exception, match='division by zero'):
        cli.run_batch(plan, plan.settings, local=True)
    assert not os.listdir(scratch)
