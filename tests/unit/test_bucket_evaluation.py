"""The bucket path (many images at once, on columns) against the reference (`evaluate_image`, one image
at a time, itself held to pycocotools): the same AP counts, tp/fp/fn, confidence counts, confusion
cells and per-box rows, on generated sets with crowd boxes, detections without a label, ties in score
and images without detections or without boxes."""
import itertools
from collections import Counter

import numpy as np
import pytest
from coco_testing import crowded_set, generated_set, normalized
from evaluation_reference import (
    evaluate_image,
    in_ground_truth_order,
    label_totals,
    match_label,
    merge_totals,
    outcome_rows,
    settled_with_ties,
)

from pipeline.config.options import COCO_IOU_THRESHOLDS
from pipeline.core.bucket_evaluation import ImageColumns, RepeatedBoxes, evaluate_images, repeated_boxes
from pipeline.core.evaluation import merge_cells
from pipeline.core.matching import FALSE_POSITIVE, IGNORED, TRUE_POSITIVE, match_groups
from pipeline.core.truth_formats import GroundTruthBox, GroundTruthImage


def images_of(seed, ties=False, unlabelled=False, crowded=False):
    sizes, truth, detections = crowded_set(seed) if crowded else generated_set(seed, images=30)
    rng = np.random.default_rng(seed)
    images = []
    for i, (size, boxes, dets) in enumerate(zip(sizes, truth, detections)):
        labels = [None if unlabelled and rng.random() < 0.1 else label for label, _, _ in dets]
        scores = np.array([round(score, 1) if ties else score for _, _, score in dets])
        det_boxes = np.array([normalized(box, size) for _, box, _ in dets]).reshape(-1, 4)
        ground = GroundTruthImage(f'gs://b/{i}.jpg', tuple(GroundTruthBox(label, tuple(normalized(box, size)), crowd)
                                                           for label, box, crowd in boxes))
        images.append((f'gs://b/{i}.jpg', labels, scores, det_boxes, ground))
    return images


def reference(images, eval_iou, eval_confidence, max_dets=(1, 10, 100)):
    totals, cells, rows = {}, {}, []
    for uri, labels, scores, boxes, ground in images:
        gt_boxes = np.array([b.box for b in ground.boxes]).reshape(-1, 4)
        result = evaluate_image(labels, scores, boxes, [b.label for b in ground.boxes], gt_boxes,
                                np.array([b.crowd for b in ground.boxes], dtype=bool), COCO_IOU_THRESHOLDS,
                                eval_iou, eval_confidence, max_dets)
        per_label = {label: labels.count(label) for label in set(labels) if label is not None}
        for label, part in label_totals(result, per_label).items():
            totals[label] = merge_totals(totals[label], part) if label in totals else part
        cells = merge_cells(cells, result.confusion)
        rows += outcome_rows('run', uri, result, boxes, gt_boxes)
    return totals, cells, rows


@pytest.mark.parametrize('seed, ties, unlabelled, eval_iou, eval_confidence, crowded, max_dets', [
    (1, False, False, 0.5, 0.5, False, (1, 10, 100)), (2, True, False, 0.5, 0.3, False, (1, 10, 100)),
    (3, False, True, 0.75, 0.0, False, (1, 10, 100)), (4, True, True, 0.3, 0.9, False, (1, 10, 100)),
    (5, False, False, 0.95, 0.5, False, (1, 10, 100)), (6, True, True, 1.0, 0.5, False, (1, 10, 100)),
    (7, False, True, 0.5, 0.5, True, (1, 10, 100)), (8, True, False, 0.5, 0.2, True, (3, 50)),
    (9, False, False, 0.5, 0.5, True, (5, 0))])
def test_the_bucket_path_gives_the_references_answers(seed, ties, unlabelled, eval_iou, eval_confidence, crowded,
                                                      max_dets):
    images = images_of(seed, ties, unlabelled, crowded)
    totals, cells, rows = reference(images, eval_iou, eval_confidence, max_dets)
    got = evaluate_images(ImageColumns.of(images), 'run', COCO_IOU_THRESHOLDS, eval_iou, eval_confidence, max_dets)
    if crowded and max_dets[-1]:
        assert got.beyond_max_dets > 0
    assert sorted(got.labels) == sorted(totals)
    for label, expected in totals.items():
        mine = got.labels[label]
        assert (mine.detections, mine.tp, mine.fp, mine.fn) == (expected.detections, expected.tp, expected.fp,
                                                                expected.fn), label
        for name in ('confidence_tp', 'confidence_fp', 'confidence_fn'):
            assert getattr(mine, name).tolist() == getattr(expected, name).tolist(), (label, name)
        a, b = mine.counts.average_precision(), expected.counts.average_precision()
        assert (a is None and b is None) or np.allclose(a, b, rtol=0, atol=1e-12), label
        assert mine.counts.ground_truth == expected.counts.ground_truth
        assert mine.counts.within.tolist() == expected.counts.within.tolist(), label
    assert got.cells == cells
    as_rows = {tuple(None if v is None else (round(v, 12) if isinstance(v, float) else v)
                     for v in list(row.values())[:-3])  # the error types: test_error_types
               for row in got.matches.to_pylist()}
    assert as_rows == {tuple(None if v is None else (round(v, 12) if isinstance(v, float) else v) for v in row)
                       for row in rows}
    assert got.matches.num_rows == len(rows)


def test_an_empty_bucket_and_images_without_boxes_or_detections():
    empty = GroundTruthImage('u', ())
    got = evaluate_images(ImageColumns.of([('u', [], np.zeros(0), np.zeros((0, 4)), empty)]), None,
                          COCO_IOU_THRESHOLDS, 0.5, 0.5)
    assert got.labels == {} and got.cells == {} and got.matches.num_rows == 0
    only_dets = [('v', ['a'], np.array([0.9]), np.array([[0.1, 0.1, 0.5, 0.5]]), GroundTruthImage('v', ()))]
    got = evaluate_images(ImageColumns.of(only_dets), None, COCO_IOU_THRESHOLDS, 0.5, 0.5)
    assert got.matches.to_pylist()[0]['outcome'] == 'fp' and got.cells == {(None, 'a'): 1}


def test_group_matching_equals_the_per_label_matcher_at_every_threshold():
    rng = np.random.default_rng(3)
    for _ in range(200):
        n_dets, n_boxes = int(rng.integers(0, 7)), int(rng.integers(0, 6))
        boxes = lambda n: np.sort(rng.random((n, 2, 2)), axis=1).transpose(0, 2, 1).reshape(n, 4)[:, [0, 2, 1, 3]]
        dets, gts = boxes(n_dets), boxes(n_boxes)
        scores = rng.integers(0, 4, n_dets) / 4  # ties on purpose
        crowd = rng.random(n_boxes) < 0.3
        thresholds = (0.1, 0.3, 0.5, 0.7)
        expected = match_label(scores, dets, gts, crowd, thresholds)
        got = match_groups(np.zeros(n_dets, dtype=np.int64), scores, dets, np.zeros(n_boxes, dtype=np.int64), gts,
                           crowd, thresholds)
        assert got.outcomes.T.tolist() == expected.outcomes.tolist()
        assert got.matched_box.T.tolist() == expected.matched_box.tolist()


def test_assembling_a_bucket_follows_the_order_rules():
    """Units of one image spread over files and ranges, ML uses given on some units only, several lines
    of one image per run, lines without ground truth: `assemble` gives what the plain rules give
    (`merge_units` for the ground truth, the first line in (file, range, position) order per run)."""
    from pipeline.core.bucket_evaluation import assemble
    from pipeline.core.evaluation import BucketLines
    from pipeline.core.truth_formats import BucketTruth, merge_units
    rng = np.random.default_rng(7)
    uris = [f"gs://b/{i}.jpg" for i in range(5)]
    parts, placed = [], []
    for file in ('t2.jsonl', 't1.jsonl'):
        for range_start in (4096, 0):
            units = []
            for number in range(8):
                uri = uris[rng.integers(len(uris))]
                boxes = tuple(GroundTruthBox(str(rng.choice(['cat', 'dog', 'eel'])), (0.1 * k, 0.1, 0.1 * k + 0.05, 0.3),
                                             bool(rng.random() < 0.2)) for k in range(rng.integers(0, 3)))
                use = [None, 'test', 'training'][rng.integers(3)]
                units.append(((range_start, number, 0), GroundTruthImage(uri, boxes, use)))
            parts.append(BucketTruth.of(file, units))
            placed += list(parts[-1].units())
    lines = []
    for run in ('a', 'b'):
        for file, range_start in (('p2', 0), ('p1', 64), ('p1', 0)):
            chosen = [str(uri) for uri in rng.choice(uris + ['gs://b/none.jpg'], size=5)]
            counts = rng.integers(0, 3, size=len(chosen))
            labels = [str(rng.choice(['cat', 'dog', 'fox'])) if rng.random() > 0.1 else None
                      for _ in range(int(counts.sum()))]
            lines.append(BucketLines.of(run, file, range_start, list(rng.permutation(len(chosen))), chosen,
                                        np.r_[0, np.cumsum(counts)], labels, rng.random(len(labels)),
                                        rng.random((len(labels), 4))))
    # As the parse step sends them: a run's lines joined, then split by bucket (here, by a hash into 2).
    regathered = [part for run in ('a', 'b') for part in BucketLines.joined(
        [line for line in lines if line.prediction_run == run]).bucket_parts(2).values()]
    assert sorted(line for part in regathered for line in map(_comparable, part.lines())) == sorted(
        line for part in lines for line in map(_comparable, part.lines()))
    for ml_use, given in itertools.product((None, 'test'), (lines, regathered)):
        got = assemble(parts, given, ['a', 'b'], ml_use)
        merged = [image for image in merge_units(placed) if ml_use is None or image.ml_use == ml_use]
        assert got.image_uris == [image.image_uri for image in merged]
        assert got.other_ml_use == len(merge_units(placed)) - len(merged)
        every = Counter(image.ml_use for image in merge_units(placed) if image.ml_use is not None)
        assert got.images_by_ml_use == every  # whatever --ml_use asks for
        for run in ('a', 'b'):
            columns, counts = got.runs[run]
            assert [(columns.label_names[code], tuple(box), crowd) for code, box, crowd in zip(
                columns.gt_label.tolist(), columns.gt_boxes.tolist(), columns.gt_crowd.tolist())] == [
                (box.label, box.box, box.crowd) for image in merged for box in image.boxes]
            assert columns.gt_image.tolist() == [n for n, image in enumerate(merged) for _ in image.boxes]
            assert columns.gt_position.tolist() == [k for image in merged for k in range(len(image.boxes))]
            first = {}
            for line in sorted((line for part in lines if part.prediction_run == run for line in part.lines()),
                               key=lambda line: line.order):
                first.setdefault(line.image_uri, line)
            evaluated = [first[image.image_uri] for image in merged if image.image_uri in first]
            assert [columns.label_names[code] if code >= 0 else None for code in columns.det_label.tolist()] == [
                label for line in evaluated for label in line.labels]
            assert columns.det_scores.tolist() == [score for line in evaluated for score in line.scores.tolist()]
            assert columns.det_image.tolist() == [n for n, image in enumerate(merged) if image.image_uri in first
                                                  for _ in first[image.image_uri].scores]
            mine = [line for part in lines if part.prediction_run == run for line in part.lines()]
            known = [line for line in mine if line.image_uri in {image.image_uri for image in merged}]
            assert (counts.without_prediction, counts.predictions_without_ground_truth, counts.other_lines) == (
                len(merged) - len(evaluated), len(mine) - len(known), len(known) - len(evaluated))


def _comparable(line):
    return (line.prediction_run, line.image_uri, line.order, line.labels, line.scores.tolist(), line.boxes.tolist())


def test_repeated_boxes_are_those_equal_to_a_box_of_their_image_in_label_crowd_and_coordinates():
    box, other = [0.1, 0.2, 0.5, 0.6], [0.1, 0.2, 0.5, 0.6 + 1e-12]
    rows = [(0, 0, False, box), (0, 0, False, box), (0, 0, False, box),  # two repeats of the first
            (0, 1, False, box),  # another label
            (0, 0, True, box),  # a crowd box
            (0, 0, False, other),  # one coordinate apart
            (1, 0, False, box),  # another image
            (2, 2, False, [-0.0, 0.0, 0.3, 0.3]), (2, 2, False, [0.0, -0.0, 0.3, 0.3])]  # -0.0 is 0.0
    image, label, crowd, boxes = (np.array(column) for column in zip(*rows))
    order = np.random.default_rng(3).permutation(len(rows))  # in any order
    assert repeated_boxes(image[order], label[order], boxes[order], crowd[order]) == RepeatedBoxes(boxes=3, images=2)
    assert repeated_boxes(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros((0, 4)),
                          np.zeros(0, dtype=bool)) == RepeatedBoxes(0, 0)


def test_the_confusion_cells_of_many_labels_are_only_those_that_occur():
    """Sparse: one cell per pair that occurs (a dense matrix of 50,000 labels took 20 GB)."""
    images = []
    for i in range(300):
        boxes = np.array([[k * 0.09, 0.1, k * 0.09 + 0.08, 0.5] for k in range(10)])
        ground = GroundTruthImage(f'gs://b/{i}.jpg', tuple(GroundTruthBox(f'label-{i * 10 + (k + 1) % 10}', tuple(b))
                                                           for k, b in enumerate(boxes)))
        images.append((f'gs://b/{i}.jpg', [f'label-{i * 10 + k}' for k in range(10)], np.full(10, 0.9), boxes, ground))
    got = evaluate_images(ImageColumns.of(images), 'run', COCO_IOU_THRESHOLDS, 0.5, 0.5)
    assert got.cells == {(f'label-{i * 10 + (k + 1) % 10}', f'label-{i * 10 + k}'): 1
                         for i in range(300) for k in range(10)}


def test_pairs_made_a_few_at_a_time_give_the_same_answers(monkeypatch):
    """Pairs are made in slices of detections and only overlapping ones kept: slices of 7 pairs,
    cutting through groups, give the reference's answers."""
    from pipeline.core import matching
    monkeypatch.setattr(matching, 'PAIRS_AT_ONCE', 7)
    images = images_of(8, ties=True)
    totals, cells, rows = reference(images, 0.5, 0.5)
    got = evaluate_images(ImageColumns.of(images), 'run', COCO_IOU_THRESHOLDS, 0.5, 0.5)
    assert {label: (t.tp, t.fp, t.fn) for label, t in got.labels.items()} == {
        label: (t.tp, t.fp, t.fn) for label, t in totals.items()}
    assert got.cells == cells
    assert got.matches.num_rows == len(rows)


def test_with_image_sizes_both_paths_take_iou_on_pixels():
    from evaluation_reference import box_ious

    from pipeline.core.evaluation import in_pixels
    size = (500.0, 281.0)
    gt = np.array([[26 / 500, 189 / 281, 44 / 500, 238 / 281]])
    det = np.array([[25 / 500, 188 / 281, 46 / 500, 232 / 281]])
    assert box_ious(det, gt, np.zeros(1, dtype=bool))[0, 0] < 0.75  # normalized: just under
    pixels = in_pixels(det, np.array([size]))
    assert pixels.tolist() == [[25.0, 188.0, 46.0, 232.0]]
    assert box_ious(pixels, in_pixels(gt, np.array([size])), np.zeros(1, dtype=bool))[0, 0] == 0.75
    assert in_pixels(det, np.full((1, 2), np.nan)).tolist() == det.tolist()  # no size: as given
    ground = GroundTruthImage('u', (GroundTruthBox('cat', tuple(gt[0])),), size=size)
    images = [('u', ['cat'], np.array([0.9]), det, ground)]
    thresholds = (0.75, 0.8)
    reference_result = evaluate_image(['cat'], np.array([0.9]), det, ['cat'], gt, np.zeros(1, dtype=bool),
                                      thresholds, 0.75, 0.5, size=size)
    assert reference_result.label_counts['cat'].outcomes == [[1], [0]]
    columns = ImageColumns.of(images)._replace(image_sizes=np.array([size]))
    got = evaluate_images(columns, 'run', thresholds, 0.75, 0.5)
    assert got.labels['cat'].tp == 1 and got.labels['cat'].counts.flags('tp')[:, 0].tolist() == [1, 0]


def evaluate_img_transcribed(scores, ious, crowd, gt_area, det_area, area_range, threshold):
    """pycocotools' COCOeval.evaluateImg for one image, label, area range and threshold, transcribed
    loop for loop: (outcome, matched box) per detection in input order, and the boxes used up."""
    lo, hi = area_range
    gt_ignore = [bool(c) or a < lo or a > hi for c, a in zip(crowd, gt_area)]
    gtind = sorted(range(len(crowd)), key=lambda g: gt_ignore[g])  # stable, as mergesort
    dtind = sorted(range(len(scores)), key=lambda d: -scores[d])
    gtm, result = {}, {}
    for d in dtind:
        iou, m = min(threshold, 1 - 1e-10), -1
        for g in gtind:
            if g in gtm and not crowd[g]:
                continue
            if m > -1 and not gt_ignore[m] and gt_ignore[g]:
                break
            if ious[d][g] < iou:
                continue
            iou, m = ious[d][g], g
        if m == -1:
            outcome = IGNORED if det_area[d] < lo or det_area[d] > hi else FALSE_POSITIVE
            result[d] = (outcome, -1)
            continue
        gtm[m] = d
        result[d] = (IGNORED if gt_ignore[m] else TRUE_POSITIVE, m)
    return [result[d] for d in range(len(scores))], {g for g in gtm if not crowd[g]}


def test_area_ranges_match_as_pycocotools_evaluate_img():
    from evaluation_reference import box_ious
    rng = np.random.default_rng(5)
    ranges = [(0, 1e10), (0, 32 ** 2), (32 ** 2, 96 ** 2), (96 ** 2, 1e10)]
    thresholds = (0.1, 0.5, 0.75)
    for _ in range(300):
        n_gt, n_det = int(rng.integers(0, 7)), int(rng.integers(0, 9))
        corners = rng.random((n_gt + n_det, 2, 2)) * 200
        boxes = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)
        if n_gt and n_det and rng.random() < 0.3:
            boxes[n_gt] = boxes[0]
        gt, dets = boxes[:n_gt], boxes[n_gt:]
        crowd = rng.random(n_gt) < 0.2
        scores = np.round(rng.random(n_det), 1)
        gt_area = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1]) * rng.choice([1.0, 0.5], n_gt)  # COCO's own area
        det_area = (dets[:, 2] - dets[:, 0]) * (dets[:, 3] - dets[:, 1])
        columns = [(r, t) for r in ranges for t in thresholds]
        gt_ignored = np.array([[a < lo or a > hi for lo, hi in (r for r, _ in columns)] for a in gt_area],
                              dtype=bool).reshape(n_gt, len(columns))
        det_ignored = np.array([[a < lo or a > hi for lo, hi in (r for r, _ in columns)] for a in det_area],
                               dtype=bool).reshape(n_det, len(columns))
        match = match_groups(np.zeros(n_det, dtype=np.int64), scores, dets, np.zeros(n_gt, dtype=np.int64), gt, crowd,
                             [t for _, t in columns], gt_ignored, det_ignored)
        ious = box_ious(dets, gt, crowd).tolist()
        for c, (area_range, threshold) in enumerate(columns):
            expected, used = evaluate_img_transcribed(scores.tolist(), ious, crowd.tolist(), gt_area.tolist(),
                                                      det_area.tolist(), area_range, threshold)
            got = list(zip(match.outcomes[:, c].tolist(), match.matched_box[:, c].tolist()))
            assert got == expected, (area_range, threshold)
            assert {g for g in range(n_gt) if not crowd[g] and not match.box_free[g, c]} == used


@pytest.mark.parametrize('seed, whole_pixels, decimals', [
    (0, False, None), (1, False, None), (2, False, None), (3, False, None), (4, True, None), (5, True, None),
    (6, True, None), (7, False, 3), (8, False, 2), (9, True, 1), (10, False, 1), (11, True, 2)])
def test_all_twelve_numbers_equal_pycocotools_with_sizes_and_coco_areas(seed, whole_pixels, decimals):
    from coco_testing import LABELS, area_of, cocoeval, in_whole_pixels, with_mask_areas

    from pipeline.core.evaluation import SIZE_STATS, run_metrics
    sizes, truth, detections = crowded_set(seed, images=24) if seed % 2 else generated_set(seed, images=60)
    if whole_pixels:
        truth, detections = in_whole_pixels(truth, detections)
    if decimals is not None:  # scores as real models round them: many equal ones, some of mixed outcomes
        detections = [[(label, box, round(score, decimals)) for label, box, score in dets] for dets in detections]
    truth = with_mask_areas(truth, seed)
    coco = cocoeval(sizes, truth, detections)
    images = []
    for i, (size, boxes, dets) in enumerate(zip(sizes, truth, detections)):
        ground = GroundTruthImage(f'gs://b/{i}.jpg', tuple(
            GroundTruthBox(entry[0], tuple(normalized(entry[1], size)), entry[2], area_of(entry)) for entry in boxes),
            size=tuple(map(float, size)))
        images.append((f'gs://b/{i}.jpg', [label for label, _, _ in dets], np.array([s for _, _, s in dets]),
                       np.array([normalized(box, size) for _, box, _ in dets]).reshape(-1, 4), ground))
    half = len(images) // 2  # two buckets, merged as the job merges them
    parts = [evaluate_images(in_ground_truth_order(ImageColumns.of(part), first), 'run', COCO_IOU_THRESHOLDS,
                             0.5, 0.5)
             for part, first in ((images[:half], 0), (images[half:], half))]
    assert all(part.images_without_size == 0 for part in parts)
    totals, bases = settled_with_ties(parts)
    if decimals is not None:
        assert bases, 'the rounded scores mix outcomes somewhere'
    metrics = run_metrics('run', len(images), 0, totals, COCO_IOU_THRESHOLDS, images_without_size=0)
    names = ['ap', 'ap_50', 'ap_75', 'ap_small', 'ap_medium', 'ap_large', 'ar_1', 'ar_10', 'ar_100', 'ar_small',
             'ar_medium', 'ar_large']
    assert list(metrics['stats']) == names and 'size_figures' not in metrics
    for index, name in enumerate(names):
        expected = None if coco.stats[index] == -1 else coco.stats[index]
        assert metrics['stats'][name] == pytest.approx(expected, abs=1e-9), name
    assert any(metrics['stats'][name] not in (None, 0.0) for name in SIZE_STATS)
    for entry in metrics['labels']:  # per label, as pycocotools' precision and recall arrays hold it
        k = LABELS.index(entry['label'])
        precision = coco.eval['precision'][:, :, k, 0, 2]
        if (precision != -1).any():
            assert np.abs(totals[entry['label']].counts.precision - precision).max() <= 1e-12, entry['label']
        for a, size in enumerate(('small', 'medium', 'large'), 1):
            precision = coco.eval['precision'][:, :, k, a, 2]
            recall = coco.eval['recall'][:, k, a, 2]
            expected_ap = None if (precision == -1).all() else precision.mean()
            expected_ar = None if (recall == -1).all() else recall.mean()
            assert entry['stats'][f'ap_{size}'] == pytest.approx(expected_ap, abs=1e-9), (entry['label'], size)
            assert entry['stats'][f'ar_{size}'] == pytest.approx(expected_ar, abs=1e-9), (entry['label'], size)


def test_tied_scores_gathered_in_many_small_chunks_give_the_same_numbers(monkeypatch):
    from pipeline.core import ties
    monkeypatch.setattr(ties, 'TIE_CHUNK', 7)  # a label's tied scores in many chunks, settled apart
    test_all_twelve_numbers_equal_pycocotools_with_sizes_and_coco_areas(12, False, 2)


def test_a_label_without_mixed_outcomes_at_equal_scores_needs_no_ordering():
    from pipeline.core.evaluation import settled
    images = images_of(13)  # continuous scores: no two equal
    result = evaluate_images(ImageColumns.of(images), 'run', COCO_IOU_THRESHOLDS, 0.5, 0.5)
    assert all(settled(totals).ties is None for totals in result.labels.values())
    assert len(result.tied.scores) == sum(len(t.counts.scores) for t in result.labels.values())


@pytest.mark.parametrize('seed, whole_pixels', [(21, False), (22, True), (23, False), (24, True)])
def test_a_slice_of_a_bucket_equals_pycocotools_on_its_images_alone(seed, whole_pixels):
    """image_subset keeps each image's place in the ground truth: ties among the slice's images fall as
    pycocotools orders them when given those images alone."""
    from coco_testing import area_of, cocoeval, in_whole_pixels, with_mask_areas

    from pipeline.core.bucket_evaluation import image_subset
    from pipeline.core.evaluation import run_metrics
    sizes, truth, detections = generated_set(seed, images=60)
    detections = [[(label, box, round(score, 2)) for label, box, score in dets] for dets in detections]
    if whole_pixels:  # as labelling tools write boxes: IoU lands on the thresholds, areas on the bounds
        truth, detections = in_whole_pixels(truth, detections)
    truth = with_mask_areas(truth, seed)
    images = [(f'gs://b/{i}.jpg', [label for label, _, _ in dets], np.array([s for _, _, s in dets]),
               np.array([normalized(box, size) for _, box, _ in dets]).reshape(-1, 4),
               GroundTruthImage(f'gs://b/{i}.jpg', tuple(GroundTruthBox(entry[0], tuple(normalized(entry[1], size)),
                                                                        entry[2], area_of(entry)) for entry in boxes),
                                size=tuple(map(float, size))))
              for i, (size, boxes, dets) in enumerate(zip(sizes, truth, detections))]
    columns = in_ground_truth_order(ImageColumns.of(images), 0)
    chosen = np.flatnonzero(np.random.default_rng(seed).random(len(images)) < 0.5)
    part = evaluate_images(image_subset(columns, chosen), 'run', COCO_IOU_THRESHOLDS, 0.5, 0.5)
    totals, _ = settled_with_ties([part])
    stats = run_metrics('run', len(chosen), 0, totals, COCO_IOU_THRESHOLDS, images_without_size=0)['stats']
    coco = cocoeval(*([values[i] for i in chosen] for values in (sizes, truth, detections)))
    for index, name in enumerate(stats):
        expected = None if coco.stats[index] == -1 else coco.stats[index]
        assert stats[name] == pytest.approx(expected, abs=1e-9), name
