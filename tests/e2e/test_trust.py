"""No silent wrong answers (issue 24): an output path is never a pattern, a run that succeeds over
nothing says so, and what is read is read once and as written."""
import json
import os
import subprocess
import sys

import pyarrow.dataset as ds
import pytest
from conftest import ROOT, SAMPLE

from pipeline.tools import report

INPUT = SAMPLE / 'input'
TRUTH = ROOT / 'tests' / 'fixtures' / 'ground_truth' / 'vertex_import.jsonl'


def tree(folder):
    return {str(path.relative_to(folder)): path.read_bytes()
            for path in sorted(folder.rglob('*')) if path.is_file()}


# 1. An output path is a literal path, never a pattern ------------------------------------------

@pytest.fixture
def neighbours(run, tmp_path):
    """res/model2 holds a finished run of ours, res/modelv a user's files: what a patterned output
    path such as res/model[v2] would match."""
    res = tmp_path / 'res'
    run('--input', INPUT, '--output', res / 'model2', '--report=false')
    (res / 'modelv' / 'detections').mkdir(parents=True)
    (res / 'modelv' / 'detections' / 'part-00000-of-00001.parquet').write_bytes(b'mine')
    (res / 'newA' / 'images').mkdir(parents=True)
    (res / 'newA' / 'images' / 'part-00000-of-00001.parquet').write_bytes(b'mine too')
    return res


@pytest.mark.parametrize('option, name', [
    ('--output', 'model[v2]'), ('--output', 'new*'), ('--output', 'model?'),
    ('--dead_letter', 'model[v2]'), ('--dead_letter', 'new*'), ('--summary', 'model[v2]/summary.json'),
])
def test_an_output_path_with_pattern_characters_is_refused_and_nothing_is_touched(run, neighbours, option,
                                                                                   name):
    before = tree(neighbours)
    args = ['--output', neighbours / 'fresh'] if option != '--output' else []
    result = run('--input', INPUT, *args, option, neighbours / name, '--report=false', check=False)
    assert result.returncode == 2, result.stderr
    assert f'error: {option}: ' in result.stderr and 'Choose a location without * ? [ ]' in result.stderr
    assert tree(neighbours) == before
    assert not (neighbours / 'fresh').exists()


@pytest.mark.parametrize('extra', [
    ['--export', 'coco,vertex_jsonl'],  # export/ under the output
    ['--ground_truth', str(TRUTH)],  # evaluation/ under the output
])
def test_exports_evaluation_and_locks_under_a_patterned_output_are_refused(run, neighbours, extra):
    before = tree(neighbours)
    result = run('--input', INPUT, '--output', neighbours / 'model[v2]', *extra, check=False)
    assert result.returncode == 2 and '--output:' in result.stderr, result.stderr
    assert tree(neighbours) == before
    assert not (neighbours / 'model[v2]').exists()  # not even a lock


def test_a_relative_output_under_a_working_folder_with_brackets_is_refused(neighbours):
    """The full path decides: res/model[v2] as the working folder, output 'o', matches res/model2/o."""
    work = neighbours / 'model[v2]'
    work.mkdir()
    before = tree(neighbours)
    result = subprocess.run([sys.executable, '-m', 'pipeline', '--input', str(INPUT), '--output', 'o'],
                            cwd=work, capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 2 and 'model[v2]/o' in result.stderr, result.stderr
    assert tree(neighbours) == before


def test_the_spill_and_scratch_folders_under_a_temporary_folder_with_brackets(run, neighbours, tmp_path):
    """The evaluation's spill folder lives under $TMPDIR: plain file calls there, no pattern."""
    temporary = tmp_path / 'tmp[1]'
    temporary.mkdir()
    (tmp_path / 'tmp1').mkdir()
    (tmp_path / 'tmp1' / 'keep.txt').write_text('mine')
    before = tree(neighbours)
    run('--input', INPUT, '--output', tmp_path / 'out', '--ground_truth', TRUTH, '--report=false',
        env=dict(os.environ, TMPDIR=str(temporary)))
    assert (tmp_path / 'out' / 'evaluation' / 'metrics.json').exists()
    assert list(temporary.iterdir()) == []  # the spill folder made there is gone
    assert (tmp_path / 'tmp1' / 'keep.txt').read_text() == 'mine'
    assert tree(neighbours) == before


def test_the_report_of_an_older_run_reads_its_own_folder_only(run, neighbours, tmp_path):
    """`python -m pipeline.report` falls back to listing <output>/detections for a summary without
    its file list: the listing takes the folder's name literally."""
    older = tmp_path / 'older[2]'
    subprocess.run(['cp', '-r', str(neighbours / 'model2'), str(older)], check=True)
    summary = json.loads((older / 'summary.json').read_text())
    del summary['outputs']['detections']
    (older / 'summary.json').write_text(json.dumps(summary))
    (older / 'detections' / 'part-00000-of-00001.parquet').unlink()
    (tmp_path / 'older2' / 'detections').mkdir(parents=True)
    (tmp_path / 'older2' / 'detections' / 'part-00000-of-00001.parquet').write_bytes(b'not ours')
    report.build_report(str(older), samples=2)  # reads no file of older2 (it is not Parquet)
    assert (older / 'report' / 'index.html').exists()


# 2. A run never succeeds silently over nothing ---------------------------------------------------

def warnings_of(out):
    return json.loads((out / 'summary.json').read_text())['warnings']


def test_a_ground_truth_that_matches_no_image_gives_null_figures_and_warnings(run, tmp_path):
    out = tmp_path / 'o'
    result = run('--input', INPUT, '--output', out, '--ground_truth', TRUTH, '--export', 'coco')
    runs = json.loads((out / 'evaluation' / 'metrics.json').read_text())['runs']
    assert len(runs) == 2
    for entry in runs:
        assert entry['images_with_prediction'] == 0
        assert entry['map'] is None and entry['mar'] is None
        assert all(label['ap'] is None for label in entry['labels'])
    warnings = warnings_of(out)
    overlap = [w for w in warnings if w['code'] == 'ground_truth_no_overlap']
    assert len(overlap) == 2
    assert overlap[0]['figures']['ground_truth_images'] == 2 and overlap[0]['figures']['shared_images'] == 0
    assert overlap[0]['figures']['ground_truth_only_example'] == 'gs://bucket/filename1.jpeg'
    assert overlap[0]['figures']['prediction_only_example'].startswith('gs://migration-ucaip')
    assert 'imageGcsUri' in overlap[0]['fix']  # a Vertex AI file: the prefix option is COCO's only
    export = [w for w in warnings if w['code'] == 'export_empty']
    assert len(export) == 1 and '--image_sizes' in export[0]['fix'] and 'size' in export[0]['message']
    assert 'warning [ground_truth_no_overlap]' in result.stderr and 'mAP n/a' in result.stdout
    page = (out / 'report' / 'index.html').read_text()
    assert 'id="warnings"' in page and 'share no image' in page and 'class="warn" id="reconciliation"' in page


def test_fail_on_warning_exits_6_with_every_output_written(run, tmp_path):
    out = tmp_path / 'o'
    result = run('--input', INPUT, '--output', out, '--keep_labels', 'salad', '--fail_on_warning',
                 '--report=false', check=False)
    assert result.returncode == 6, result.stderr
    assert (out / 'summary.json').exists() and (out / 'detections').is_dir()
    nothing_kept, warning = warnings_of(out)
    assert warning['code'] == 'label_never_seen' and warning['figures']['near'] == 'Salad'
    assert nothing_kept['code'] == 'no_detections_kept' and nothing_kept['figures']['detections_in'] == 52
    assert "did you mean 'Salad'?" in result.stderr


def test_a_run_without_warnings_lists_none_and_exits_0(run, tmp_path):
    out = tmp_path / 'o'
    run('--input', INPUT, '--output', out, '--keep_labels', 'Salad', '--image_size', '100x100',
        '--fail_on_warning', '--report=false')
    assert warnings_of(out) == []


def test_a_manifest_that_names_none_of_the_images_warns(run, tmp_path):
    manifest = tmp_path / 'sizes.csv'
    manifest.write_text('image_uri,width,height\ngs://elsewhere/a.jpg,10,10\n')
    out = tmp_path / 'o'
    run('--input', INPUT, '--output', out, '--image_sizes', manifest, '--report=false')
    [warning] = warnings_of(out)
    assert warning['code'] == 'image_sizes_no_match' and warning['figures'] == {
        'images': 12, 'from_manifest': 0, 'unknown': 12}


def test_an_input_without_prediction_shards_stops_at_launch_and_says_what_it_holds(run, tmp_path):
    result = run('--input', SAMPLE / 'images', '--output', tmp_path / 'o', check=False)
    assert result.returncode == 2
    assert 'holds no prediction shard' in result.stderr and '3 other file(s)' in result.stderr
    assert '.jpg' in result.stderr
    assert not (tmp_path / 'o').exists()


# 3. Ground truth is read exactly once, exactly as written --------------------------------------

ODD_LABELS = ('plain', 'a, b', 'say "cheese"', 'two\nlines', 'Ünïcødé 中文', ' spaced ')


@pytest.fixture(scope='module')
def exported(tmp_path_factory, run):
    """A run over odd labels, exported in every format (each image's boxes, scored 0.9)."""
    tmp = tmp_path_factory.mktemp('round-trip')
    folder = tmp / 'in' / 'prediction-m-2026-01-01T00:00:00.000Z'
    folder.mkdir(parents=True)
    lines = []
    for i in range(12):
        labels = [ODD_LABELS[(i + k) % len(ODD_LABELS)] for k in range(3)]
        boxes = [[0.1 + 0.05 * k, 0.4 + 0.05 * k, 0.1 + 0.1 * k, 0.5 + 0.1 * k] for k in range(3)]  # x1 x2 y1 y2
        lines.append(json.dumps({'instance': {'content': f'gs://bucket/images/{i}.jpg'}, 'prediction': {
            'ids': ['1', '2', '3'], 'displayNames': labels, 'confidences': [0.9, 0.8, 0.7], 'bboxes': boxes}}))
    (folder / 'predictions_00001.jsonl').write_text('\n'.join(lines) + '\n')
    out = tmp / 'out'
    run('--input', tmp / 'in', '--output', out, '--image_size', '640x480', '--report=false',
        '--export', 'vertex_jsonl,automl_csv,coco,label_studio')
    return tmp, out


@pytest.mark.parametrize('fmt, path', [
    ('vertex_jsonl', 'export/vertex_jsonl'), ('automl_csv', 'export/automl_csv'),
    ('coco', 'export/coco/annotations.json'),
])
def test_every_export_read_back_as_ground_truth_gives_map_1(run, exported, fmt, path):
    tmp, out = exported
    evaluated = tmp / f'eval-{fmt}'
    run('--input', tmp / 'in', '--output', evaluated, '--image_size', '640x480', '--report=false',
        '--ground_truth', out / path, '--fail_on_warning')
    [entry] = json.loads((evaluated / 'evaluation' / 'metrics.json').read_text())['runs']
    assert entry['images_with_prediction'] == 12
    assert {label['label'] for label in entry['labels']} == set(ODD_LABELS)
    assert entry['map'] == pytest.approx(1.0) and entry['mar'] == pytest.approx(1.0)
    summary = json.loads((evaluated / 'summary.json').read_text())
    assert summary['ground_truth']['dead_letters'] == 0


def test_a_link_to_a_ground_truth_folder_is_read_once(run, exported):
    tmp, out = exported
    truth = tmp / 'truth-linked'
    (truth / 'v3').mkdir(parents=True)
    [exported_file] = (out / 'export' / 'vertex_jsonl').glob('*.jsonl')
    (truth / 'v3' / 'labels.jsonl').write_bytes(exported_file.read_bytes())
    os.symlink('v3', truth / 'latest')
    os.symlink('..', truth / 'v3' / 'up')  # a loop
    evaluated = tmp / 'eval-linked'
    run('--input', tmp / 'in', '--output', evaluated, '--report=false', '--ground_truth', truth)
    summary = json.loads((evaluated / 'summary.json').read_text())
    assert summary['ground_truth']['rows_read'] == 12 and summary['ground_truth']['boxes'] == 36


def test_a_ground_truth_without_a_usable_unit_fails_the_run_with_7(run, tmp_path):
    truth = tmp_path / 'truth.csv'
    truth.write_text('gs://b/a.jpg,cat,2,2,,,3,3,,\nnot,a,row,at,all\n')
    result = run('--input', INPUT, '--output', tmp_path / 'o', '--ground_truth', truth, '--report=false',
                 check=False)
    assert result.returncode == 7 and 'no unit of the ground truth could be used' in result.stderr
    summary = json.loads((tmp_path / 'o' / 'summary.json').read_text())
    assert summary['ground_truth']['rows_used'] == 0 and summary['dead_letters']['invalid_ground_truth'] == 2


def test_the_dead_letter_ratio_counts_the_ground_truth(run, tmp_path):
    truth = tmp_path / 'truth.jsonl'
    good = json.dumps({'imageGcsUri': 'gs://bucket/filename1.jpeg'})
    truth.write_text(good + '\n' + '{"broken\n' * 30)
    result = run('--input', INPUT, '--output', tmp_path / 'o', '--ground_truth', truth, '--report=false',
                 '--max_dead_letter_ratio', '0.5', check=False)
    assert result.returncode == 3 and 'ground-truth units' in result.stderr  # 33 of 46 (lines 3 of 15 alone)


# 4. Runs are told apart ------------------------------------------------------------------------

def test_two_run_folders_of_one_name_are_two_runs_named_by_their_path(run, exported):
    tmp, out = exported
    [shard] = (tmp / 'in').rglob('predictions_00001.jsonl')
    lines = shard.read_text().splitlines()
    for model, keep in (('modelA', None), ('modelB', 1)):
        folder = tmp / 'two-models' / model / 'prediction-2024'
        folder.mkdir(parents=True)
        kept = []
        for line in lines:
            record = json.loads(line)
            if keep:
                record['prediction'] = {key: values[:keep] for key, values in record['prediction'].items()}
            kept.append(json.dumps(record))
        (folder / 'predictions_00001.jsonl').write_text('\n'.join(kept) + '\n')
    evaluated = tmp / 'eval-two-models'
    run('--input', tmp / 'two-models', '--output', evaluated, '--report=false',
        '--ground_truth', out / 'export' / 'vertex_jsonl')
    runs = {entry['prediction_run']: entry
            for entry in json.loads((evaluated / 'evaluation' / 'metrics.json').read_text())['runs']}
    assert sorted(runs) == ['modelA/prediction-2024', 'modelB/prediction-2024']
    assert runs['modelA/prediction-2024']['map'] == pytest.approx(1.0)
    assert runs['modelB/prediction-2024']['map'] < 0.7
    detections = ds.dataset(str(evaluated / 'detections')).to_table()
    assert sorted(set(detections.column('prediction_run').to_pylist())) == sorted(runs)


def test_one_box_outside_the_image_is_a_dead_letter_of_its_own_and_the_line_stays(run, tmp_path):
    folder = tmp_path / 'in'
    folder.mkdir()
    vertex = {'instance': {'content': 'gs://b/a.jpg'}, 'prediction': {
        'ids': ['1', '2', '3'], 'displayNames': ['A', 'B', 'C'], 'confidences': [0.9, 0.8, 0.7],
        'bboxes': [[0.1, 0.5, 0.1, 0.5], [0.2, 1.5, 0.2, 0.6], [0.3, 0.6, 0.3, 0.6]]}}
    legacy = {'ID': 'gs://b/c.jpg', 'annotations': [
        {'display_name': label, 'annotation_spec_id': label, 'image_object_detection': {'score': 0.9, 'bounding_box': {
            'normalized_vertices': [{'x': x, 'y': 0.1}, {'x': 0.5, 'y': 0.5}]}}} for label, x in (('A', -0.5), ('B', 0.1))]}
    (folder / 'predictions_1.jsonl').write_text(json.dumps(vertex) + '\n')
    (folder / 'image_object_detection_1.jsonl').write_text('\n' + json.dumps(legacy) + '\n')
    out = tmp_path / 'out'
    run('--input', folder, '--output', out, '--report=false')
    detections = ds.dataset(str(out / 'detections')).to_table().to_pydict()
    assert sorted(zip(detections['image_uri'], detections['label'])) == [
        ('gs://b/a.jpg', 'A'), ('gs://b/a.jpg', 'C'), ('gs://b/c.jpg', 'B')]
    images = ds.dataset(str(out / 'images')).to_table().to_pydict()
    assert sorted(zip(images['image_uri'], images['annotation_count'])) == [('gs://b/a.jpg', 3), ('gs://b/c.jpg', 2)]
    letters = [json.loads(line) for path in (out / 'dead_letter').glob('*.jsonl') for line in path.read_text().splitlines()]
    assert sorted((d['kind'], d['image_uri'], d['error_message'].split(':')[0]) for d in letters) == [
        ('invalid_box', 'gs://b/a.jpg', 'non-blank line 1, annotation 1'),
        ('invalid_box', 'gs://b/c.jpg', 'non-blank line 1, annotation 0')]
    assert all(d['payload'] for d in letters)
    reconciliation = json.loads((out / 'summary.json').read_text())['reconciliation']
    assert reconciliation['holds'] and reconciliation['annotations'] == 5 and reconciliation['box_dead_letters'] == 2


# 5. Outputs stay ours and whole -----------------------------------------------------------------

def test_overwrite_removes_an_earlier_runs_evaluation_and_export_whatever_this_runs_options(run, tmp_path):
    out = tmp_path / 'o'
    run('--input', INPUT, '--output', out, '--ground_truth', TRUTH, '--export', 'vertex_jsonl,coco',
        '--image_size', '100x100', '--report=false')
    assert (out / 'evaluation' / 'metrics.json').exists() and (out / 'export' / 'coco' / 'annotations.json').exists()
    (out / 'evaluation' / 'notes.md').write_text('mine')  # a user's file beside ours stays
    run('--input', INPUT, '--output', out, '--report=false', '--overwrite')
    left = sorted(str(path.relative_to(out)) for path in out.rglob('*') if path.is_file())
    assert not [path for path in left if path.startswith('export/')]
    assert [path for path in left if path.startswith('evaluation/')] == ['evaluation/notes.md']
    run('--input', INPUT, '--output', out, '--ground_truth', TRUTH, '--report=false', '--overwrite')
    assert (out / 'evaluation' / 'metrics.json').exists()


def test_an_export_document_is_written_whole_or_not_at_all(tmp_path):
    from pipeline.core.outputs import OutputLayout
    from pipeline.transforms.export import write_whole

    path = str(tmp_path / 'annotations.json')

    def broken(handle):
        handle.write(b'{"images": [')
        raise RuntimeError('killed half-way')
    with pytest.raises(RuntimeError):
        write_whole(path, broken)
    assert os.listdir(tmp_path) == []
    assert write_whole(path, lambda handle: handle.write(b'{}')) == 2
    assert os.listdir(tmp_path) == ['annotations.json']
    layout = OutputLayout.of('/o', '/o/dead_letter', '/o/summary.json', False, export=True)
    assert layout.owns_name('/o/export/coco/annotations.json.tmp-' + '0' * 32)  # a killed run's: removed
    assert not layout.owns_name('/o/export/coco/annotations.json.bak')


# 7. Smaller ------------------------------------------------------------------------------------

@pytest.mark.parametrize('args, message', [
    (['--score_threshold', '0.2', '--score_threshold=0.9'], '--score_threshold given twice'),
    (['--export_select', 'errors'], '--export_select needs --export'),
    (['--uncertain_min', '0.2'], '--uncertain_min needs --export'),
    (['--eval_iou', '0.6'], '--eval_iou needs --ground_truth'),
    (['--iou_thresholds', '0.5'], '--iou_thresholds needs --ground_truth'),
    (['--export', 'coco', '--export_image_prefix', 'gs://b/=x/,gs://b/=y/'], "'gs://b/' is given twice"),
    (['--runner', 'DataflowRunner', '--project', 'my-project', '--region', 'us-central1',
      '--temp_location', 'gs://my-bucket/tmp'], 'is a local path, which the workers of a remote runner cannot reach'),
])
def test_options_that_would_quietly_not_count_are_refused(run, tmp_path, args, message):
    result = run('--input', INPUT, '--output', tmp_path / 'o', *args, check=False)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / 'o').exists()


def test_help_into_a_closed_pipe_ends_without_a_traceback():
    result = subprocess.run(f'{sys.executable} -m pipeline --help | head -1', shell=True, cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.stdout.startswith('usage:') and 'Traceback' not in result.stderr and 'Error' not in result.stderr


def test_the_reconciliation_says_what_ml_use_left_out(run, tmp_path):
    result = run('--input', INPUT, '--output', tmp_path / 'o', '--ground_truth', TRUTH, '--ml_use', 'test',
                 '--report=false')
    assert ('2 ground-truth rows read == 2 used + 0 dead letters (of the images, 1 of another ML use left out '
            'by --ml_use, 1 evaluated)') in result.stdout


@pytest.fixture
def unreachable_cloud_storage():
    """An environment in which Cloud Storage is a closed local port: the launch cannot reach it,
    whether or not this machine has a network."""
    import socket
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    return dict(os.environ, STORAGE_EMULATOR_HOST=f'http://127.0.0.1:{port}')


@pytest.mark.parametrize('args, named', [
    (['--input', 'gs://some-bucket/predictions/'], '--input'),
    (['--input', str(INPUT), '--ground_truth', 'gs://some-bucket/truth.jsonl'], '--ground_truth'),
    (['--input', str(INPUT), '--image_sizes', 'gs://some-bucket/sizes.csv'], '--image_sizes'),
    (['--input', 'gs://some-bucket/predictions/', '--runner', 'DataflowRunner', '--project', 'my-project',
      '--region', 'us-central1', '--temp_location', 'gs://some-bucket/tmp', '--no_auth', '--dry_run=True',
      '--output', 'gs://some-bucket/out'], '--input, --output'),
])
def test_cloud_storage_out_of_reach_stops_the_launch_with_one_line(run, tmp_path, unreachable_cloud_storage,
                                                                   args, named):
    output = [] if '--output' in args else ['--output', tmp_path / 'o']
    result = run(*args, *output, check=False, env=unreachable_cloud_storage)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f'error: {named}: Cloud Storage cannot be reached from here: no '
                                    f'connection to 127.0.0.1:'), result.stderr
    assert result.stderr.count('\n') == 1 and 'Traceback' not in result.stderr
    assert not (tmp_path / 'o').exists()


def test_a_streaming_dry_run_does_not_need_cloud_storage(tmp_path, unreachable_cloud_storage):
    # Its outputs are written by the workers: the launch itself touches no gs:// location.
    result = subprocess.run([sys.executable, '-m', 'pipeline', '--input_subscription',
                             'projects/my-project/subscriptions/shards', '--output', 'gs://some-bucket/stream',
                             '--runner', 'DataflowRunner', '--project', 'my-project', '--region', 'us-central1',
                             '--temp_location', 'gs://some-bucket/tmp', '--no_auth', '--dry_run=True',
                             '--sdk_location=container'],
                            cwd=ROOT, capture_output=True, text=True, timeout=600, env=unreachable_cloud_storage)
    assert result.returncode == 0 and 'Dry run: the streaming job was built' in result.stdout, result.stderr
