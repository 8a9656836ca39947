"""TIDE's error types (tidecv 1.0.1 is the contract): each type's count and dAP, per run and per label,
and the special fp and fn dAPs, equal to tidecv's on generated sets where every type occurs; and the
classification of single cases as tidecv's code makes it."""
import numpy as np
import pytest
from coco_testing import (
    LABELS,
    TIDE_NAMES,
    assert_run_errors_equal_tidecv,
    crowded_set,
    generated_set,
    normalized,
    tide_run,
)
from evaluation_reference import in_ground_truth_order, settled_with_ties

from pipeline.config.options import COCO_IOU_THRESHOLDS
from pipeline.core.bucket_evaluation import ImageColumns, evaluate_images
from pipeline.core.error_types import ERROR_TYPES, classify
from pipeline.core.evaluation import run_metrics
from pipeline.core.truth_formats import GroundTruthBox, GroundTruthImage


def image_rows(sizes, truth, detections):
    """A generated set as ImageColumns.of takes it: (URI, labels, scores, boxes, ground truth) per image."""
    images = []
    for i, (size, boxes, dets) in enumerate(zip(sizes, truth, detections)):
        ground = GroundTruthImage(f'gs://b/{i}.jpg', tuple(
            GroundTruthBox(entry[0], tuple(normalized(entry[1], size)), entry[2]) for entry in boxes),
            size=tuple(map(float, size)))
        images.append((f'gs://b/{i}.jpg', [label for label, _, _ in dets], np.array([s for _, _, s in dets]),
                       np.array([normalized(box, size) for _, box, _ in dets]).reshape(-1, 4), ground))
    return images


def evaluated(sizes, truth, detections, buckets=2, listed=None):
    """run_metrics of a generated set evaluated in buckets and settled as the job settles them, tied
    scores in pycocotools' and tidecv's orders (`listed`: the images in the order a COCO file lists
    them, its ids in order being their indices)."""
    images = image_rows(sizes, truth, detections)
    step = -(-len(images) // buckets)
    at = np.arange(len(images)) if listed is None else np.argsort(listed)  # each image's place in the file
    parts = []
    for start in range(0, len(images), step):
        columns = in_ground_truth_order(ImageColumns.of(images[start:start + step]), start)
        columns.image_places[:, 2] = at[start:start + step]
        parts.append(evaluate_images(columns, 'run', COCO_IOU_THRESHOLDS, 0.5, 0.5))
    totals, _ = settled_with_ties(parts)
    return run_metrics('run', len(images), 0, totals, COCO_IOU_THRESHOLDS), parts


@pytest.mark.parametrize('seed, crowded, whole_pixels, decimals', [
    (0, False, False, None), (1, False, False, None), (2, True, False, None), (3, False, False, None),
    (4, True, False, None), (5, False, False, None), (6, False, True, None), (7, True, True, None),
    (8, False, True, None), (9, False, False, 3), (10, False, False, 2), (11, True, False, 2), (12, False, True, 1),
    (13, True, True, 1), (14, False, False, 1)])
def test_counts_and_daps_equal_tidecv(seed, crowded, whole_pixels, decimals):
    # Whole pixels, as PASCAL VOC and labelling tools write boxes: IoU lands on 0.1 and 0.5 and ties
    # between boxes more often, where tidecv's first-box and inclusive-bound rules decide. Rounded
    # scores, as real models write them: equal scores of true and false positives, which tidecv
    # orders by the order it was given the images and detections in.
    from coco_testing import in_whole_pixels
    from tidecv.errors.main_errors import BoxError, ClassError, MissedError
    sizes, truth, detections = crowded_set(seed, images=30) if crowded else generated_set(seed, images=80)
    if whole_pixels:
        truth, detections = in_whole_pixels(truth, detections)
    if decimals is not None:
        detections = [[(label, box, round(score, decimals)) for label, box, score in dets] for dets in detections]
    metrics, _ = evaluated(sizes, truth, detections)
    tide, run = tide_run(sizes, truth, detections)
    counts = assert_run_errors_equal_tidecv(metrics['errors'], tide, run)
    if seed in (0, 1):
        assert all(count > 0 for count in counts.values()), counts  # every type occurs
    # Per label: the counts by the label of the detection (of the box for a miss), and the AP after each fix.
    for entry in metrics['labels']:
        k = LABELS.index(entry['label']) + 1
        mine = [error for error in run.errors
                if (error.gt if isinstance(error, MissedError) else error.pred)['class'] == k]
        assert entry['errors']['counts'] == {name: sum(TIDE_NAMES[e.short_name] == name for e in mine)
                                             for name in ERROR_TYPES}, entry['label']
        base = run.ap_data.objs[k]
        assert entry['errors']['ap_50'] == (None if base.is_empty() else pytest.approx(base.get_ap() / 100, abs=1e-11))
        for kind, name in ((ClassError, 'cls'), (BoxError, 'loc')):
            fixed = run.fix_errors(lambda error, kind=kind: isinstance(error, kind)).objs[k]
            expected = None if fixed.is_empty() or base.is_empty() else (fixed.get_ap() - base.get_ap()) / 100
            assert entry['errors']['dap'][name] == (None if expected is None else pytest.approx(expected, abs=1e-11))


@pytest.mark.parametrize('seed, decimals', [(21, 1), (22, 2), (23, 1)])
def test_equal_scores_of_images_fall_in_the_order_the_file_lists_them(seed, decimals):
    # tidecv's COCO loader adds the images in the order the file lists them, where pycocotools takes
    # their ids in order: its tied scores of different images fall in the file's order.
    sizes, truth, detections = generated_set(seed, images=60)
    detections = [[(label, box, round(score, decimals)) for label, box, score in dets] for dets in detections]
    listed = np.random.default_rng(seed).permutation(len(sizes)).tolist()
    metrics, _ = evaluated(sizes, truth, detections, listed=listed)
    _, run = tide_run(sizes, truth, detections, listed=listed)
    _, in_id_order = tide_run(sizes, truth, detections)
    assert run.ap != pytest.approx(in_id_order.ap, abs=1e-9)  # the order moves tidecv's figures here
    assert metrics['errors']['ap_50'] * 100 == pytest.approx(run.ap, abs=1e-9)
    fixed = {name: run.fix_main_errors()[kind] for kind, name in
             ((kind, TIDE_NAMES[kind.short_name]) for kind in run.fix_main_errors())}
    for name, value in fixed.items():
        assert metrics['errors']['dap'][name] * 100 == pytest.approx(value, abs=1e-9), name


def test_the_types_fall_as_tidecv_orders_its_tests():
    # One image with a box of each label: a detection on each case, tidecv's order of tests deciding.
    cat, dog = [100, 100, 200, 200], [400, 100, 200, 200]  # xywh in a 1000 x 1000 image
    truth = [[('cat', cat, False), ('dog', dog, False)]]
    detections = [[
        ('cat', cat, 0.9),  # true positive
        ('cat', [100, 100, 200, 195], 0.8),  # a second on the cat box: dupe
        ('dog', [100, 100, 200, 200], 0.7),  # a dog on the cat box: cls
        ('dog', [450, 150, 200, 200], 0.6),  # a dog half on the dog box (IoU 0.39): loc
        ('bird', [800, 800, 100, 100], 0.5),  # nothing there: bkg
        ('bird', [130, 100, 200, 200], 0.4),  # a bird over the cat box by 0.74, no bird box: cls
    ]]
    metrics, parts = evaluated([(1000, 1000)], truth, detections, buckets=1)
    rows = {(row['label'], row['score']): row for row in parts[0].matches.to_pylist()}
    assert rows['cat', 0.9]['error_type'] is None and rows['cat', 0.8]['error_type'] == 'dupe'
    assert (rows['dog', 0.7]['error_type'], rows['dog', 0.7]['error_label']) == ('cls', 'cat')
    assert (rows['dog', 0.6]['error_type'], rows['dog', 0.6]['error_label']) == ('loc', 'dog')
    assert rows['bird', 0.5]['error_type'] == 'bkg' and rows['bird', 0.4]['error_type'] == 'cls'
    # The IoU with the box behind a cls or loc error (intersection over union of the xywh boxes above).
    assert rows['dog', 0.7]['error_iou'] == 1.0
    assert rows['dog', 0.6]['error_iou'] == pytest.approx(150 * 150 / (2 * 200 * 200 - 150 * 150), abs=1e-12)
    assert rows['bird', 0.4]['error_iou'] == pytest.approx(170 * 200 / (2 * 200 * 200 - 170 * 200), abs=1e-12)
    assert rows['cat', 0.8]['error_iou'] is None and rows['bird', 0.5]['error_iou'] is None
    assert rows['cat', 0.9]['error_iou'] is None
    _, run = tide_run([(1000, 1000)], truth, detections)
    assert metrics['errors']['counts'] == {TIDE_NAMES[kind.short_name]: count
                                           for kind, count in run.count_errors().items()}


def test_a_missed_box_explained_by_a_cls_error_is_not_a_miss():
    det_image, gt_image = np.array([0]), np.array([0, 0])
    boxes = np.array([[0.1, 0.1, 0.3, 0.3], [0.6, 0.6, 0.9, 0.9]])
    result = classify(det_image, np.array([1]), np.array([0.9]), boxes[:1], gt_image, np.array([0, 0]), boxes,
                      np.zeros(2, dtype=bool))
    assert result.error.tolist() == [ERROR_TYPES.index('cls')] and result.target.tolist() == [0]
    assert result.unmatched.tolist() == [True, True] and result.missed.tolist() == [False, True]


def test_the_runs_error_figures_do_not_depend_on_the_order_its_labels_came_in():
    # The labels' totals reach the figures in whatever order the runner delivers them; the run's error
    # figures average over the labels, so they are taken in label order (a float sum's last bits
    # follow its order: a run of 1,000,000 images differed in the 17th digit from one run to the next).
    sizes, truth, detections = generated_set(21, 40)
    images = image_rows(sizes, truth, detections)
    columns = in_ground_truth_order(ImageColumns.of(images), 0)
    totals, _ = settled_with_ties([evaluate_images(columns, 'run', COCO_IOU_THRESHOLDS, 0.5, 0.5)])
    assert len(totals) >= 3
    forward = run_metrics('run', len(images), 0, dict(sorted(totals.items())), COCO_IOU_THRESHOLDS)
    backward = run_metrics('run', len(images), 0, dict(sorted(totals.items(), reverse=True)), COCO_IOU_THRESHOLDS)
    assert forward['errors'] == backward['errors']
