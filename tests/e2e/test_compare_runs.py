"""Model A against model B as users run it: `--compare_to` over an input of two prediction runs, no
ground truth; every outcome on images made for it, the counts, the rows, the mirror and identical runs."""
import json
import re
import shutil
import subprocess

import pyarrow.parquet as pq
import pytest
from coco_testing import legacy_line, vertex_line

from pipeline.tools.demo import BUCKET, write_demo

RUN_A = 'prediction-model_a-2026-12-01T10:00:00.000Z'
RUN_B = 'prediction-model_b-2026-12-02T10:00:00.000Z'
SIZE = (1000, 800)
PREFIX = 'gs://bucket/images/'

# Per image: the base's (A's) boxes and the run's (B's), as (label, [x, y, w, h] pixels, score).
CAT, DOG = [100, 100, 200, 200], [500, 400, 200, 200]
IMAGES = {
    'same.jpg': ([('cat', CAT, 0.9)], [('cat', [105, 100, 200, 200], 0.8)]),
    'relabelled.jpg': ([('cat', CAT, 0.9)], [('dog', CAT, 0.7)]),
    'moved.jpg': ([('dog', DOG, 0.6)], [('dog', [600, 400, 200, 200], 0.65)]),  # IoU 1/3
    'added.jpg': ([], [('cat', CAT, 0.5)]),
    'removed.jpg': ([('dog', DOG, 0.4)], []),
    'mixed.jpg': ([('cat', CAT, 0.9), ('dog', DOG, 0.8)], [('cat', CAT, 0.95), ('cat', [800, 50, 100, 100], 0.3)]),
}
ONLY_A, ONLY_B = ['only_a.jpg'], ['only_b_1.jpg', 'only_b_2.jpg']
EXPECTED = {  # B against A, per label: same, relabelled, relabelled_in, moved, added, removed, boxes of B, of A
    'cat': dict(same=2, relabelled=1, relabelled_in=0, moved=0, added=2, removed=0, run_boxes=4, base_boxes=3),
    'dog': dict(same=0, relabelled=0, relabelled_in=1, moved=1, added=0, removed=2, run_boxes=2, base_boxes=3),
}


def write_runs(root, a_images, b_images):
    for run, images, line in ((RUN_A, a_images, vertex_line), (RUN_B, b_images, legacy_line)):
        folder = root / run
        folder.mkdir(parents=True)
        name = 'predictions_00001.jsonl' if line is vertex_line else 'image_object_detection_1.jsonl'
        (folder / name).write_bytes(b'\n'.join(line(PREFIX + uri, SIZE, dets) for uri, dets in images) + b'\n')


@pytest.fixture(scope='module')
def compared(tmp_path_factory, run):
    tmp = tmp_path_factory.mktemp('compare')
    a = [(uri, base) for uri, (base, _) in IMAGES.items()] + [(uri, [('cat', CAT, 0.5)]) for uri in ONLY_A]
    b = [(uri, other) for uri, (_, other) in IMAGES.items()] + [(uri, [('dog', DOG, 0.5)]) for uri in ONLY_B]
    b.append(('same.jpg', [('bird', DOG, 0.99)]))  # a further line of an image: not compared
    write_runs(tmp / 'in', a, b)
    outputs = {}
    for base in (RUN_A, RUN_B):
        out = tmp / f'against-{base[11:18]}'
        result = run('--input', tmp / 'in', '--output', out, '--compare_to', base, '--report=false')
        outputs[base] = (out, result)
    return outputs


def labels_of(document):
    (run,) = document['runs']
    return run, {entry['label']: entry for entry in run['labels']}


def test_each_outcome_is_counted_per_label(compared):
    out, result = compared[RUN_A]
    document = json.loads((out / 'comparison.json').read_text())
    assert document['base_run'] == RUN_A and document['eval_iou'] == 0.5
    run, labels = labels_of(document)
    assert run['prediction_run'] == RUN_B
    assert (run['compared'], run['changed'], run['only_in_run'], run['only_in_base']) == (6, 5, 2, 1)
    for label, expected in EXPECTED.items():
        got = {key: labels[label][key] for key in expected}
        assert got == expected, label
        assert labels[label]['agreement'] == pytest.approx(2 * expected['same'] / (expected['run_boxes']
                                                                                 + expected['base_boxes']))
    assert run['agreement'] == pytest.approx(2 * 2 / (6 + 6))
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['comparison']['runs'] == document['runs'] and summary['comparison']['further_lines'] == 1
    assert summary['reconciliation']['holds'] and 'agreement 0.3333; 5 of 6 images changed' in result.stdout


def test_the_rows_say_each_box_and_its_pair(compared):
    out, _ = compared[RUN_A]
    rows = pq.read_table(out / 'comparison').to_pylist()
    by_image = {}
    for row in rows:
        by_image.setdefault(row['image_uri'][len(PREFIX):], []).append(row)
    assert sorted(by_image) == sorted(IMAGES)  # the images both runs have, and only those
    assert [(r['outcome'], r['label'], r['base_label']) for r in by_image['relabelled.jpg']] == [
        ('relabelled', 'dog', 'cat')]
    (moved,) = by_image['moved.jpg']
    assert moved['outcome'] == 'moved' and moved['iou'] == pytest.approx(1 / 3)
    assert moved['score_change'] == pytest.approx(0.65 - 0.6) and moved['x_min'] == 0.6 and moved['base_x_min'] == 0.5
    (same,) = by_image['same.jpg']  # the further line (a bird) is not compared
    assert (same['outcome'], same['label'], same['score'], same['base_score']) == ('same', 'cat', 0.8, 0.9)
    assert [r['outcome'] for r in by_image['added.jpg']] == ['added'] and by_image['added.jpg'][0]['base_x_min'] is None
    assert [r['outcome'] for r in by_image['removed.jpg']] == ['removed'] and by_image['removed.jpg'][0]['score'] is None
    assert sorted(r['outcome'] for r in by_image['mixed.jpg']) == ['added', 'removed', 'same']


def test_b_against_a_mirrors_a_against_b(compared):
    forward = labels_of(json.loads((compared[RUN_A][0] / 'comparison.json').read_text()))
    backward = labels_of(json.loads((compared[RUN_B][0] / 'comparison.json').read_text()))
    assert (forward[0]['only_in_run'], forward[0]['only_in_base']) == (backward[0]['only_in_base'],
                                                                      backward[0]['only_in_run'])
    assert forward[0]['agreement'] == backward[0]['agreement']
    for label, ahead in forward[1].items():
        back = backward[1][label]
        assert (ahead['same'], ahead['moved'], ahead['added'], ahead['removed'], ahead['relabelled']) == (
            back['same'], back['moved'], back['removed'], back['added'], back['relabelled_in']), label


def test_identical_runs_agree_fully(tmp_path, run):
    images = [(uri, base) for uri, (base, _) in IMAGES.items()]
    write_runs(tmp_path / 'in', images, images)
    run('--input', tmp_path / 'in', '--output', tmp_path / 'out', '--compare_to', 'first', '--report=false')
    run_figures, labels = labels_of(json.loads((tmp_path / 'out' / 'comparison.json').read_text()))
    assert run_figures['agreement'] == 1.0 and run_figures['changed'] == 0
    assert all(entry['agreement'] == 1.0 and entry['same'] == entry['run_boxes'] == entry['base_boxes']
               for entry in labels.values())
    assert {row['outcome'] for row in pq.read_table(tmp_path / 'out' / 'comparison').to_pylist()} == {'same'}


@pytest.mark.parametrize('extra, message', [
    (('--compare_to', 'prediction-nope'), "no prediction run 'prediction-nope' in the input"),
    (('--compare_to', 'first', '--eval_iou', '0'), 'an IoU of 0 matches boxes that do not overlap'),
])
def test_a_wrong_comparison_fails_before_any_work(compared, run, tmp_path, extra, message):
    source = compared[RUN_A][0].parent / 'in'
    result = run('--input', source, '--output', tmp_path / 'out', *extra, check=False)
    assert result.returncode == 2 and message in result.stderr and not (tmp_path / 'out').exists()
    single = run('--input', source / RUN_A, '--output', tmp_path / 'out', '--compare_to', 'first', check=False)
    assert single.returncode == 2 and 'a comparison needs two or more' in single.stderr


def test_runs_over_other_images_compare_nothing_and_say_so(tmp_path, run):
    write_runs(tmp_path / 'in', [('a.jpg', [('cat', CAT, 0.9)])], [('b.jpg', [('cat', CAT, 0.9)])])
    result = run('--input', tmp_path / 'in', '--output', tmp_path / 'out', '--compare_to', 'first', '--report=false')
    summary = json.loads((tmp_path / 'out' / 'summary.json').read_text())
    (run_figures,) = summary['comparison']['runs']
    assert (run_figures['compared'], run_figures['agreement']) == (0, None)
    assert [w['code'] for w in summary['warnings']] == ['comparison_no_overlap']
    assert 'share no image' in result.stderr


@pytest.fixture(scope='module')
def demo_report(tmp_path_factory, run):
    """The demo's two model versions compared, with the report (the bundled pictures mirrored)."""
    demo = tmp_path_factory.mktemp('compare-report')
    write_demo(str(demo), images=16, seed=5)
    out = demo / 'out'
    run('--input', demo / 'input', '--output', out, '--image_sizes', demo / 'image_sizes.csv',
        '--compare_to', 'first', '--report_image_mirror', f'{BUCKET}={demo / "images"}/')
    return out


def test_the_report_says_what_changed_as_comparison_json_does(demo_report):
    text = (demo_report / 'report' / 'index.html').read_text()
    document = json.loads((demo_report / 'comparison.json').read_text())
    (run_figures,) = document['runs']
    assert '<a href="#comparison">What changed</a>' in text and '<h2 id="comparison">What changed</h2>' in text
    assert re.search(r'data-key="agreement">([^<]+)<', text)[1] == f'{run_figures["agreement"]:.4f}'
    table = text.split('id="comparison-labels-0"')[1].split('</table>')[0]
    shown = dict(re.findall(r'data-key="agreement" data-label="([^"]*)" data-sort="[^"]+">([^<]+)<', table))
    assert shown == {entry['label']: f'{entry["agreement"]:.4f}' for entry in run_figures['labels']}
    assert list(shown.values()) == sorted(shown.values())  # the lowest agreement first
    gallery = text.split('id="gallery-changes-0"')[1].split('</div>\n')[0]
    assert gallery.count('<figure><div class="frame"><img') >= 2  # the pictures, mirrored
    outcomes = set(re.findall(r'data-outcome="(\w+)" data-side="(run|base)"', text))
    assert {('removed', 'base'), ('added', 'run'), ('same', 'base'), ('same', 'run')} <= outcomes
    assert re.search(r'data-outcome="\w+" data-side="base" style="[^"]*border-style:dashed', text)
    swaps = re.findall(r'<li>(\w+) became (\w+): ', text.split('class="swaps"')[1].split('</ol>')[0])
    rows = pq.read_table(demo_report / 'comparison').to_pylist()
    relabelled = {(r['base_label'], r['label']) for r in rows if r['outcome'] == 'relabelled'}
    assert swaps and set(swaps) <= relabelled


def test_the_comparison_report_opens_without_console_errors(demo_report):
    chromium = shutil.which('chromium') or shutil.which('chromium-browser')
    result = subprocess.run([chromium, '--headless', '--no-sandbox', '--disable-gpu', '--enable-logging=stderr',
                             '--v=0', '--dump-dom', (demo_report / 'report' / 'index.html').as_uri()],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and 'id="comparison"' in result.stdout
    assert 'CONSOLE' not in result.stderr and 'Uncaught' not in result.stderr, result.stderr[-2000:]


def test_disagreements_exports_the_images_a_run_changed(compared, run, tmp_path):
    source = compared[RUN_A][0].parent / 'in'
    out = tmp_path / 'out'
    run('--input', source, '--output', out, '--compare_to', RUN_A, '--report=false', '--image_size', '1000x800',
        '--export', 'vertex_jsonl,coco', '--export_select', 'disagreements')
    rows = pq.read_table(out / 'comparison').to_pylist()
    expected = {row['image_uri'] for row in rows if row['outcome'] != 'same'}
    assert expected == {PREFIX + uri for uri in IMAGES if uri != 'same.jpg'}
    (path,) = (out / 'export' / 'vertex_jsonl').glob('*.jsonl')
    exported = [json.loads(line) for line in path.read_text().splitlines()]
    assert {line['imageGcsUri'] for line in exported} == expected and len(exported) == len(expected)
    by_uri = {line['imageGcsUri']: line for line in exported}  # the compared run's boxes (B), not the base's
    assert [box['displayName'] for box in by_uri[PREFIX + 'relabelled.jpg']['boundingBoxAnnotations']] == ['dog']
    coco = json.loads(next((out / 'export' / 'coco').glob('*.json')).read_text())
    assert {image['file_name'] for image in coco['images']} == expected  # every format, the same images
    needs = run('--input', source, '--output', tmp_path / 'other', '--export', 'coco', '--export_select',
                'disagreements', check=False)
    assert needs.returncode == 2 and '--export_select=disagreements needs --compare_to' in needs.stderr


def test_a_users_own_comparison_json_stops_the_run_and_survives(compared, run, tmp_path):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'comparison.json').write_text('{"mine": true}')
    result = run('--input', compared[RUN_A][0].parent / 'in', '--output', out, '--compare_to', 'first',
                 '--overwrite', check=False)
    assert result.returncode == 2 and 'comparison of the runs goes' in result.stderr
    assert (out / 'comparison.json').read_text() == '{"mine": true}'


@pytest.mark.parametrize('real_shaped', [False, True])
def test_with_ground_truth_each_changed_box_says_who_was_right_as_the_matches_tables_do(tmp_path, run, real_shaped):
    """Two runs over the same images with ground truth: every verdict of a changed box, and every
    label's images each run gets right where the other does not, follow from the two runs' own rows of
    `matches` (the evaluation's outcome of each box at --eval_iou). Real-shaped: scores of 2 decimals
    (many ties) and boxes on whole pixels, as labelling tools and real models write them."""
    import numpy as np
    from coco_testing import LABELS, coco_ground_truth, generated_set, in_whole_pixels
    sizes, truth, detections = generated_set(61, images=50)
    rng = np.random.default_rng(61)
    changed = [[(str(rng.choice(LABELS)) if rng.random() < 0.15 else label,
                 [v + rng.normal(0, 0.1) * box[2 + i % 2] for i, v in enumerate(box[:2])] + box[2:],
                 float(rng.random())) for label, box, _ in dets if rng.random() > 0.25] for dets in detections]
    if real_shaped:
        truth, detections = in_whole_pixels(truth, [[(name, b, round(s, 2)) for name, b, s in d] for d in detections])
        _, changed = in_whole_pixels(truth, [[(name, b, round(s, 2)) for name, b, s in d] for d in changed])
    for folder, images in ((RUN_A, detections), (RUN_B, changed)):
        (tmp_path / 'in' / folder).mkdir(parents=True)
        (tmp_path / 'in' / folder / 'image_object_detection_1.jsonl').write_bytes(b'\n'.join(
            legacy_line(f'{PREFIX}{i}.jpg', size, dets) for i, (size, dets) in enumerate(zip(sizes, images))) + b'\n')
    (tmp_path / 'truth.json').write_text(json.dumps(coco_ground_truth(sizes, truth)))
    out = tmp_path / 'o'
    result = run('--input', tmp_path / 'in', '--output', out, '--ground_truth', tmp_path / 'truth.json',
                 '--ground_truth_image_prefix', PREFIX, '--compare_to', RUN_A, '--report=false', check=False)
    assert result.returncode in (0, 6), result.stderr  # 6: the warning of the extra ground-truth annotation
    matches = pq.read_table(out / 'evaluation' / 'matches').to_pylist()
    outcome = {(m['prediction_run'], m['image_uri'], m['score'], m['x_min'], m['y_min']): m['outcome']
               for m in matches if m['outcome'] != 'fn'}
    verdicts = {}
    for row in pq.read_table(out / 'comparison').to_pylist():
        mine = outcome.get((RUN_B, row['image_uri'], row['score'], row['x_min'], row['y_min']))
        theirs = outcome.get((RUN_A, row['image_uri'], row['base_score'], row['base_x_min'], row['base_y_min']))
        if row['outcome'] == 'same':
            expected = None
        elif row['outcome'] == 'added':  # a box `matches` leaves out (on a crowd box) has no verdict
            expected = {'tp': 'fixed', 'fp': 'broken'}.get(mine)
        elif row['outcome'] == 'removed':
            expected = {'tp': 'broken', 'fp': 'fixed'}.get(theirs)
        else:
            expected = {('tp', 'fp'): 'fixed', ('fp', 'tp'): 'broken', ('fp', 'fp'): 'both_wrong',
                        ('tp', 'tp'): 'both_right'}.get((mine, theirs))
        assert row['verdict'] == expected, row
        verdicts[expected] = verdicts.get(expected, 0) + 1
    assert verdicts.get('fixed') and verdicts.get('broken') and verdicts.get('both_wrong')
    wrong = {}  # (run, image) -> the labels of its false positives and missed boxes
    for m in matches:
        if m['outcome'] in ('fp', 'fn'):
            wrong.setdefault((m['prediction_run'], m['image_uri']), set()).add(m['label'])
    document = json.loads((out / 'comparison.json').read_text())
    assert document['ground_truth'] is True
    for label in document['runs'][0]['labels']:
        images = [f'{PREFIX}{i}.jpg' for i in range(len(sizes))]
        fixed = sum(label['label'] in wrong.get((RUN_A, uri), ()) and label['label'] not in wrong.get((RUN_B, uri), ())
                    for uri in images)
        broken = sum(label['label'] in wrong.get((RUN_B, uri), ()) and label['label'] not in wrong.get((RUN_A, uri), ())
                     for uri in images)
        assert (label['images_fixed'], label['images_broken']) == (fixed, broken), label['label']
    assert 'against the ground truth: fixed' in result.stdout
    mirror = tmp_path / 'mirror'
    run('--input', tmp_path / 'in', '--output', mirror, '--ground_truth', tmp_path / 'truth.json',
        '--ground_truth_image_prefix', PREFIX, '--compare_to', RUN_B, '--report=false', check=False)
    (there,) = json.loads((mirror / 'comparison.json').read_text())['runs']
    (here,) = document['runs']
    assert (there['fixed'], there['broken'], there['both_wrong']) == (here['broken'], here['fixed'], here['both_wrong'])
    assert {label['label']: (label['images_fixed'], label['images_broken']) for label in there['labels']} == {
        label['label']: (label['images_broken'], label['images_fixed']) for label in here['labels']}
