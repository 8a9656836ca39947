"""Evaluation exact on real data (issue 25): every run is in metrics.json, pycocotools' own IoU
thresholds, its maxDets and the twelve numbers, as a user runs the tool."""
import json

import numpy as np
import pytest
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


def test_max_dets_through_the_command_line_equals_pycocotools(run, tmp_path):
    from coco_testing import coco_ground_truth, cocoeval, crowded_set, label_stats, vertex_line
    sizes, truth, detections = crowded_set(21)
    folder = tmp_path / 'in' / 'prediction-m-2026-12-01T00:00:00.000Z'
    folder.mkdir(parents=True)
    lines = [vertex_line(f'gs://bucket/{i}.jpg', size, dets) for i, (size, dets) in enumerate(zip(sizes, detections))]
    (folder / 'predictions_00001.jsonl').write_bytes(b'\n'.join(lines) + b'\n')
    (tmp_path / 'truth.json').write_text(json.dumps(coco_ground_truth(sizes, truth)))
    coco = cocoeval(sizes, truth, detections)
    for extra, capped in (([], True), (['--max_dets', '1,10,0'], False)):
        out = tmp_path / ('o' + str(capped))
        result = run('--input', tmp_path / 'in', '--output', out, '--ground_truth', tmp_path / 'truth.json',
                     '--ground_truth_image_prefix', 'gs://bucket/', '--report=false', *extra, check=False)
        assert result.returncode in (0, 6), result.stderr  # 6: the warnings of the extra ground-truth image
        metrics = json.loads((out / 'evaluation' / 'metrics.json').read_text())
        [entry] = metrics['runs']
        if capped:
            assert metrics['max_dets'] == [1, 10, 100] and entry['detections_beyond_max_dets'] > 0
            for name, index in (('ap', 0), ('ap_50', 1), ('ap_75', 2), ('ar_1', 6), ('ar_10', 7), ('ar_100', 8)):
                assert entry['stats'][name] == pytest.approx(coco.stats[index], abs=1e-9), name
            for label in entry['labels']:
                expected = label_stats(coco, label['label'])
                assert expected is None or label['stats']['ar_10'] == pytest.approx(expected['ar_10'], abs=1e-9)
            assert 'AR@1 ' in result.stdout and 'AR@100 ' in result.stdout
        else:
            assert set(entry['stats']) == {'ap', 'ap_50', 'ap_75', 'ar_1', 'ar_10', 'ar_all', 'ap_small', 'ap_medium',
                                           'ap_large', 'ar_small', 'ar_medium', 'ar_large'}
            assert entry['detections_beyond_max_dets'] == 0
            assert entry['stats']['ar_all'] >= coco.stats[8] - 1e-12  # every detection may match


def test_max_dets_must_increase(run, tmp_path):
    result = run('--input', ROOT / 'sample' / 'input', '--output', tmp_path / 'o', '--ground_truth', TRUTH,
                 '--max_dets', '10,1', check=False)
    assert result.returncode == 2 and '--max_dets' in result.stderr and 'increasing order' in result.stderr


@pytest.mark.parametrize('truth_format', ['coco', 'vertex_jsonl'])
def test_iou_is_taken_on_pixels_as_pycocotools_takes_it(run, tmp_path, truth_format):
    # pycocotools' IoU of these boxes is exactly 0.75, a match at 0.75; on normalized coordinates it
    # would be 0.7499999999999992, no match there. COCO gives the size; otherwise the run knows it.
    from coco_testing import coco_ground_truth, cocoeval, normalized_box, vertex_line
    sizes, truth, detections = [(500, 281)], [[('cat', [26, 189, 18, 49], False)]], [[('cat', [25, 188, 21, 44], 0.9)]]
    folder = tmp_path / 'in' / 'prediction-m-2026-12-01T00:00:00.000Z'
    folder.mkdir(parents=True)
    (folder / 'predictions_00001.jsonl').write_bytes(vertex_line('gs://bucket/0.jpg', sizes[0], detections[0]) + b'\n')
    if truth_format == 'coco':
        truth_file = tmp_path / 'truth.json'
        truth_file.write_text(json.dumps(coco_ground_truth(sizes, truth)))
        extra = ['--ground_truth_image_prefix', 'gs://bucket/']
    else:
        x_min, y_min, x_max, y_max = normalized_box(truth[0][0][1], sizes[0])
        truth_file = tmp_path / 'truth.jsonl'
        truth_file.write_text(json.dumps({'imageGcsUri': 'gs://bucket/0.jpg', 'boundingBoxAnnotations': [
            {'displayName': 'cat', 'xMin': x_min, 'yMin': y_min, 'xMax': x_max, 'yMax': y_max}]}) + '\n')
        extra = ['--image_size', '500x281']
    out = tmp_path / 'o'
    run('--input', tmp_path / 'in', '--output', out, '--ground_truth', truth_file, *extra, '--report=false',
        check=False)
    [entry] = json.loads((out / 'evaluation' / 'metrics.json').read_text())['runs']
    coco = cocoeval(sizes, truth, detections)
    assert coco.stats[0] == pytest.approx(0.6, abs=1e-12)
    assert entry['stats']['ap'] == pytest.approx(coco.stats[0], abs=1e-12)
    cat = next(label for label in entry['labels'] if label['label'] == 'cat')
    assert cat['ap_per_iou'][5] == pytest.approx(1.0) and cat['ap_per_iou'][6] == 0.0  # matched at 0.75, not 0.8


TWELVE = ['ap', 'ap_50', 'ap_75', 'ap_small', 'ap_medium', 'ap_large', 'ar_1', 'ar_10', 'ar_100', 'ar_small',
          'ar_medium', 'ar_large']


def test_all_twelve_numbers_through_the_command_line_equal_pycocotools(run, tmp_path):
    from coco_testing import coco_ground_truth, cocoeval, generated_set, legacy_line, with_mask_areas
    sizes, truth, detections = generated_set(31, images=50)
    truth = with_mask_areas(truth, 31)
    folder = tmp_path / 'in' / 'prediction-m-2026-12-01T00:00:00.000Z'
    folder.mkdir(parents=True)
    lines = [legacy_line(f'gs://bucket/{i}.jpg', size, dets) for i, (size, dets) in enumerate(zip(sizes, detections))]
    (folder / 'image_object_detection_1.jsonl').write_bytes(b'\n'.join(lines) + b'\n')
    (tmp_path / 'truth.json').write_text(json.dumps(coco_ground_truth(sizes, truth)))
    out = tmp_path / 'o'
    result = run('--input', tmp_path / 'in', '--output', out, '--ground_truth', tmp_path / 'truth.json',
                 '--ground_truth_image_prefix', 'gs://bucket/', '--report=false', check=False)
    assert result.returncode in (0, 6), result.stderr
    [entry] = json.loads((out / 'evaluation' / 'metrics.json').read_text())['runs']
    coco = cocoeval(sizes, truth, detections)
    assert list(entry['stats']) == TWELVE and 'size_figures' not in entry
    for index, name in enumerate(TWELVE):
        expected = None if coco.stats[index] == -1 else coco.stats[index]
        assert entry['stats'][name] == pytest.approx(expected, abs=1e-9), name
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['evaluation']['runs'][0]['stats'] == entry['stats']


def test_without_image_sizes_the_size_figures_are_null_and_say_why(run, tmp_path):
    out = tmp_path / 'o'
    run('--input', ROOT / 'sample' / 'input', '--output', out, '--ground_truth', TRUTH, '--report=false', check=False)
    for entry in json.loads((out / 'evaluation' / 'metrics.json').read_text())['runs']:
        assert all(entry['stats'][f'{kind}_{size}'] is None for kind in ('ap', 'ar')
                   for size in ('small', 'medium', 'large'))
        assert 'have no known size' in entry['size_figures'] and '--image_sizes' in entry['size_figures']


def write_run(folder, lines):
    folder.mkdir(parents=True)
    (folder / 'predictions_00001.jsonl').write_bytes(b'\n'.join(lines) + b'\n')


def vertex_truth_line(uri, size, boxes):
    from coco_testing import normalized_box
    annotations = []
    for label, box, _ in boxes:
        x_min, y_min, x_max, y_max = normalized_box(box, size)
        annotations.append({'displayName': label, 'xMin': x_min, 'yMin': y_min, 'xMax': x_max, 'yMax': y_max})
    return json.dumps({'imageGcsUri': uri, 'boundingBoxAnnotations': annotations})


@pytest.mark.parametrize('truth_format', ['coco', 'vertex_jsonl'])
@pytest.mark.parametrize('labelled_first', [True, False])
def test_equal_scores_fall_in_the_ground_truths_image_order(run, tmp_path, truth_format, labelled_first):
    # The case: two 100x100 images, a box in one, a detection on it and one in the other image,
    # both at 0.5. pycocotools takes the images in order: AP 1.0 when the labelled one is first, else 0.5.
    from coco_testing import cocoeval, vertex_line
    order = [0, 1] if labelled_first else [1, 0]
    sizes = [(100, 100)] * 2
    truth = [[('cat', [10, 10, 50, 50], False)], []]
    detections = [[('cat', [10, 10, 50, 50], 0.5)], [('cat', [20, 20, 30, 30], 0.5)]]
    # The prediction lines in the other order, so that only the ground truth's order can make the answer.
    write_run(tmp_path / 'in' / 'prediction-m-2026-12-01T00:00:00.000Z',
              [vertex_line(f'gs://bucket/{i}.jpg', sizes[i], detections[i]) for i in reversed(order)])
    if truth_format == 'coco':
        truth_file = tmp_path / 'truth.json'  # listed in the other order too: COCO's order is its ids'
        truth_file.write_text(json.dumps({
            'images': [{'id': rank, 'file_name': f'{i}.jpg', 'width': 100, 'height': 100}
                       for rank, i in reversed(list(enumerate(order)))],
            'annotations': [{'id': 1, 'image_id': order.index(0), 'category_id': 1, 'bbox': [10, 10, 50, 50],
                             'iscrowd': 0, 'area': 2500}],
            'categories': [{'id': 1, 'name': 'cat'}]}))
        extra = ['--ground_truth_image_prefix', 'gs://bucket/']
    else:
        truth_file = tmp_path / 'truth.jsonl'
        truth_file.write_text(''.join(vertex_truth_line(f'gs://bucket/{i}.jpg', sizes[i], truth[i]) + '\n'
                                      for i in order))
        extra = ['--image_size', '100x100']
    out = tmp_path / 'o'
    run('--input', tmp_path / 'in', '--output', out, '--ground_truth', truth_file, *extra, '--report=false',
        check=False)
    [entry] = json.loads((out / 'evaluation' / 'metrics.json').read_text())['runs']
    coco = cocoeval([sizes[i] for i in order], [truth[i] for i in order], [detections[i] for i in order])
    assert coco.stats[0] == pytest.approx(1.0 if labelled_first else 0.5)
    assert entry['stats']['ap'] == pytest.approx(coco.stats[0], abs=1e-12)


@pytest.mark.parametrize('truth_format', ['coco', 'vertex_jsonl'])
def test_rounded_scores_of_two_runs_give_pycocotools_twelve_numbers(run, tmp_path, truth_format):
    # Real models round their scores (3 decimals on COCO's published results): many equal scores, of
    # true and false positives mixed, in images that the ground truth lists in an order of its own.
    from coco_testing import cocoeval, generated_set, legacy_line, vertex_line, with_mask_areas
    sizes, truth, detections = generated_set(41, images=60)
    truth = with_mask_areas(truth, 41) if truth_format == 'coco' else \
        [[(label, box, False) for label, box, _ in boxes] for boxes in truth]  # Vertex AI's has no crowd
    order = np.random.default_rng(41).permutation(len(sizes)).tolist()  # the ground truth's image order
    runs = {'prediction-a-2026-12-01T00:00:00.000Z': 3, 'prediction-b-2026-12-02T00:00:00.000Z': 2}
    for name, decimals in runs.items():
        rounded = [[(label, box, round(score, decimals)) for label, box, score in dets] for dets in detections]
        make = vertex_line if decimals == 3 else legacy_line
        write_run(tmp_path / 'in' / name, [make(f'gs://bucket/{i}.jpg', size, dets)
                                          for i, (size, dets) in enumerate(zip(sizes, rounded))])
    if truth_format == 'coco':
        from coco_testing import area_of
        truth_file = tmp_path / 'truth.json'
        truth_file.write_text(json.dumps({  # ids in the ground truth's order, listed in the images' own
            'images': [{'id': order.index(i), 'file_name': f'{i}.jpg', 'width': w, 'height': h}
                       for i, (w, h) in enumerate(sizes)],
            'annotations': [{'id': n + 1, 'image_id': order.index(i), 'category_id': 1 + ['cat', 'dog', 'bird',
                                                                                           'fish'].index(entry[0]),
                             'bbox': entry[1], 'iscrowd': int(entry[2]), 'area': area_of(entry)}
                            for n, (i, entry) in enumerate((i, e) for i, boxes in enumerate(truth) for e in boxes)],
            'categories': [{'id': k + 1, 'name': name} for k, name in enumerate(['cat', 'dog', 'bird', 'fish'])]}))
        extra = ['--ground_truth_image_prefix', 'gs://bucket/']
    else:  # two files: the images in order of first appearance, files by name
        half = len(order) // 2
        (tmp_path / 'truth').mkdir()
        for name, part in (('b.jsonl', order[half:]), ('a.jsonl', order[:half])):
            (tmp_path / 'truth' / name).write_text(''.join(
                vertex_truth_line(f'gs://bucket/{i}.jpg', sizes[i], truth[i]) + '\n' for i in part))
        truth_file = tmp_path / 'truth'
        extra = ['--image_sizes', tmp_path / 'sizes.csv']
        (tmp_path / 'sizes.csv').write_text('image_uri,width,height\n' + ''.join(
            f'gs://bucket/{i}.jpg,{w},{h}\n' for i, (w, h) in enumerate(sizes)))
    out = tmp_path / 'o'
    result = run('--input', tmp_path / 'in', '--output', out, '--ground_truth', truth_file, *extra,
                 '--report=false', check=False)
    assert result.returncode in (0, 6), result.stderr
    entries = json.loads((out / 'evaluation' / 'metrics.json').read_text())['runs']
    assert [entry['prediction_run'] for entry in entries] == list(runs)
    for entry, decimals in zip(entries, runs.values()):
        rounded = [[(label, box, round(score, decimals)) for label, box, score in detections[i]] for i in order]
        coco = cocoeval([sizes[i] for i in order], [truth[i] for i in order], rounded)
        for index, name in enumerate(TWELVE):
            expected = None if coco.stats[index] == -1 else coco.stats[index]
            assert entry['stats'][name] == pytest.approx(expected, abs=1e-9), (entry['prediction_run'], name)
        # The curves too, point by point: pycocotools' interpolated precision at --eval_iou (0.5).
        precision = coco.eval['precision'][0, :, :, 0, 2]  # (R, K), area "all", maxDets 100
        assert entry['pr_curve_iou'] == 0.5
        for label in entry['labels']:
            expected = precision[:, ['cat', 'dog', 'bird', 'fish'].index(label['label'])]
            assert label['pr_curve'] == (None if (expected == -1).all() else pytest.approx(expected.tolist(), abs=1e-9))
        if truth_format == 'coco':  # and the error types as tidecv's COCO loader orders them: as the file lists
            from coco_testing import tide_run
            tide, tide_figures = tide_run([sizes[i] for i in order], [truth[i] for i in order], rounded,
                                          listed=[order.index(i) for i in range(len(order))])
            assert entry['errors']['ap_50'] * 100 == pytest.approx(tide_figures.ap, abs=1e-9)
            main = tide.get_main_errors()['predictions']
            assert {name: entry['errors']['dap'][name] * 100 for name in ('cls', 'loc', 'dupe', 'bkg', 'miss')} == \
                pytest.approx({name: main[short] for short, name in (('Cls', 'cls'), ('Loc', 'loc'), ('Dupe', 'dupe'),
                                                                      ('Bkg', 'bkg'), ('Miss', 'miss'))}, abs=1e-9)


@pytest.mark.parametrize('option', ['--image_size', '--image_sizes'])
def test_image_size_gives_the_size_of_ground_truth_images_without_a_line(run, tmp_path, option):
    # Vertex AI ground truth has no sizes: --image_size gives every image's, and a manifest the sizes
    # of those it lists, also of those no line of the run covers (their missed boxes count in the size
    # figures, as pycocotools counts them).
    from coco_testing import cocoeval, generated_set, vertex_line
    sizes, truth, detections = generated_set(51, images=30)
    sizes = [(640, 480)] * len(sizes)
    truth = [[(label, box, False) for label, box, _ in boxes if box[0] + box[2] <= 640 and box[1] + box[3] <= 480]
             for boxes in truth]
    detections = [[(label, box, score) for label, box, score in dets if box[0] + box[2] <= 640
                   and box[1] + box[3] <= 480] for dets in detections]
    covered = [i for i in range(len(sizes)) if i % 4]  # every 4th image: no line at all
    write_run(tmp_path / 'in' / 'prediction-m-2026-12-01T00:00:00.000Z',
              [vertex_line(f'gs://bucket/{i}.jpg', sizes[i], detections[i]) for i in covered])
    (tmp_path / 'truth.jsonl').write_text(''.join(vertex_truth_line(f'gs://bucket/{i}.jpg', sizes[i], truth[i]) + '\n'
                                                  for i in range(len(sizes))))
    out = tmp_path / 'o'
    (tmp_path / 'sizes.csv').write_text('image_uri,width,height\n' + ''.join(
        f'gs://bucket/{i}.jpg,640,480\n' for i in range(len(sizes))))
    value = '640x480' if option == '--image_size' else tmp_path / 'sizes.csv'
    result = run('--input', tmp_path / 'in', '--output', out, '--ground_truth', tmp_path / 'truth.jsonl',
                 option, value, '--report=false', check=False)
    assert result.returncode in (0, 6), result.stderr
    [entry] = json.loads((out / 'evaluation' / 'metrics.json').read_text())['runs']
    assert 'size_figures' not in entry and entry['images_with_prediction'] < entry['images']
    coco = cocoeval(sizes, truth, [detections[i] if i in covered else [] for i in range(len(sizes))])
    for index, name in enumerate(TWELVE):
        expected = None if coco.stats[index] == -1 else coco.stats[index]
        assert entry['stats'][name] == pytest.approx(expected, abs=1e-9), name
