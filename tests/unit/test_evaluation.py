"""The evaluation core against pycocotools itself: on generated sets (several labels, crowd boxes,
images without detections or without ground truth, a label that has no ground truth) every AP,
mAP, mAP@0.5/0.75 and mAR equals COCOeval's to 1e-9, and each detection's outcome equals a plain
matcher written as pycocotools' loop."""
import numpy as np
import pytest
from coco_testing import LABELS, cocoeval, crowded_set, generated_set, label_stats, normalized, pycocotools_eval
from evaluation_reference import box_ious, evaluate_image, label_totals, match_label, merge_totals

from pipeline.config.options import COCO_IOU_THRESHOLDS
from pipeline.core.evaluation import (
    CONFIDENCE_GRID,
    FALSE_POSITIVE,
    IGNORED,
    TRUE_POSITIVE,
    PrecisionCounts,
    confidence_rows,
    confusion_rows,
    mean_over_labels,
    merge_cells,
    metrics_document,
    run_metrics,
)


def our_eval(sizes, truth, detections):
    counts = {label: PrecisionCounts(len(COCO_IOU_THRESHOLDS)) for label in LABELS}
    for size, boxes, dets in zip(sizes, truth, detections):
        for label in LABELS:
            gt = [(normalized(b, size), crowd) for name, b, crowd in boxes if name == label]
            mine = [(normalized(b, size), score) for name, b, score in dets if name == label]
            crowd = np.array([c for _, c in gt], dtype=bool)
            scores = np.array([s for _, s in mine])
            match = match_label(scores, np.array([b for b, _ in mine]).reshape(-1, 4),
                                np.array([b for b, _ in gt]).reshape(-1, 4), crowd, COCO_IOU_THRESHOLDS)
            counts[label] = counts[label].merge(PrecisionCounts.of(scores, match.outcomes, int((~crowd).sum())))
    return counts


@pytest.mark.parametrize('seed', range(6))
def test_ap_map_and_mar_equal_pycocotools(seed):
    sizes, truth, detections = generated_set(seed)
    theirs, stats = pycocotools_eval(sizes, truth, detections)
    counts = our_eval(sizes, truth, detections)
    for label in LABELS:
        ap = counts[label].average_precision()
        if theirs[label] is None:
            assert ap is None, label
        else:
            np.testing.assert_allclose(ap, theirs[label], rtol=0, atol=1e-9, err_msg=label)
    aps = [counts[label].average_precision() for label in LABELS]
    assert mean_over_labels([None if a is None else float(a.mean()) for a in aps]) == pytest.approx(stats[0], abs=1e-9)
    assert mean_over_labels([None if a is None else float(a[0]) for a in aps]) == pytest.approx(stats[1], abs=1e-9)
    assert mean_over_labels([None if a is None else float(a[5]) for a in aps]) == pytest.approx(stats[2], abs=1e-9)
    recalls = [counts[label].recall() for label in LABELS]
    assert mean_over_labels([None if r is None else float(r.mean()) for r in recalls]) == pytest.approx(stats[8], abs=1e-9)


def test_counts_merge_in_any_order():
    sizes, truth, detections = generated_set(11)
    forward = our_eval(sizes, truth, detections)
    backward = our_eval(sizes[::-1], truth[::-1], detections[::-1])
    for label in LABELS:
        a, b = forward[label], backward[label]
        assert (a.scores == b.scores).all() and (a.tp == b.tp).all() and (a.fp == b.fp).all()
        assert a.ground_truth == b.ground_truth


def plain_match(scores, ious, crowd, threshold):
    """pycocotools' evaluateImg loop, transcribed: detections by score, boxes regular first."""
    det_order = sorted(range(len(scores)), key=lambda i: -scores[i])
    box_order = sorted(range(len(crowd)), key=lambda g: crowd[g])
    matched, outcome = set(), {}
    for d in det_order:
        best, m = min(threshold, 1 - 1e-10), -1
        for g in box_order:
            if g in matched and not crowd[g]:
                continue
            if m > -1 and not crowd[m] and crowd[g]:
                break
            if ious[d][g] < best:
                continue
            best, m = ious[d][g], g
        if m == -1:
            outcome[d] = (FALSE_POSITIVE, -1)
        else:
            outcome[d] = (IGNORED if crowd[m] else TRUE_POSITIVE, m)
            matched.add(m)
    return [outcome[d] for d in range(len(scores))]


def test_each_detection_gets_the_outcome_of_the_plain_matcher():
    rng = np.random.default_rng(3)
    for _ in range(300):
        n_gt, n_det = int(rng.integers(0, 6)), int(rng.integers(0, 8))
        corners = rng.random((n_gt + n_det, 2, 2))
        boxes = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)
        if n_gt and n_det and rng.random() < 0.3:
            boxes[n_gt] = boxes[0]  # an exact duplicate: IoU 1
        gt, dets = boxes[:n_gt], boxes[n_gt:]
        crowd = rng.random(n_gt) < 0.25
        scores = rng.random(n_det)
        match = match_label(scores, dets, gt, crowd, (0.3, 0.5, 1.0))
        ious = box_ious(dets, gt, crowd)
        for t, threshold in enumerate((0.3, 0.5, 1.0)):
            expected = plain_match(scores.tolist(), ious.tolist(), crowd.tolist(), threshold)
            assert list(zip(match.outcomes[t].tolist(), match.matched_box[t].tolist())) == expected


def image_arrays(size, boxes, dets):
    gt_labels = [label for label, _, _ in boxes]
    gt_boxes = np.array([normalized(b, size) for _, b, _ in boxes]).reshape(-1, 4)
    gt_crowd = np.array([c for _, _, c in boxes], dtype=bool)
    labels = [label for label, _, _ in dets]
    scores = np.array([s for _, _, s in dets])
    det_boxes = np.array([normalized(b, size) for _, b, _ in dets]).reshape(-1, 4)
    return labels, scores, det_boxes, gt_labels, gt_boxes, gt_crowd


@pytest.mark.parametrize('seed', range(3))
def test_an_image_contributes_the_counts_outcomes_curves_and_cells_of_plain_matching(seed):
    sizes, truth, detections = generated_set(seed, images=25)
    merged = {label: PrecisionCounts(len(COCO_IOU_THRESHOLDS)) for label in LABELS}
    for size, boxes, dets in zip(sizes, truth, detections):
        labels, scores, det_boxes, gt_labels, gt_boxes, gt_crowd = image_arrays(size, boxes, dets)
        labels = [None if i % 9 == 4 else label for i, label in enumerate(labels)]  # some without a label
        result = evaluate_image(labels, scores, det_boxes, gt_labels, gt_boxes, gt_crowd,
                                COCO_IOU_THRESHOLDS, 0.5, 0.4)
        for label, counts in result.counts.items():
            merged[label] = merged[label].merge(counts)
        ious = box_ious(det_boxes, gt_boxes, gt_crowd).tolist()
        for label in set(gt_labels) | {lbl for lbl in labels if lbl}:
            dets_of = [i for i, lbl in enumerate(labels) if lbl == label]
            gts_of = [g for g, lbl in enumerate(gt_labels) if lbl == label]
            plain = plain_match([scores[i] for i in dets_of], [[ious[d][g] for g in gts_of] for d in dets_of],
                                [bool(gt_crowd[g]) for g in gts_of], 0.5)
            rows = {(o.outcome, o.detection, o.gt_index) for o in result.outcomes if o.label == label}
            expected = {('tp' if state == TRUE_POSITIVE else 'fp', d, gts_of[m] if m >= 0 else None)
                        for d, (state, m) in zip(dets_of, plain) if state != IGNORED}
            matched = {gts_of[m] for state, m in plain if state == TRUE_POSITIVE}
            expected |= {('fn', None, g) for g in gts_of if not gt_crowd[g] and g not in matched}
            assert rows == expected
            tp, fp, fn = result.confidence[label]
            for c, confidence in enumerate(CONFIDENCE_GRID):
                above = [d for d in dets_of if scores[d] >= confidence]
                again = plain_match([scores[d] for d in above], [[ious[d][g] for g in gts_of] for d in above],
                                    [bool(gt_crowd[g]) for g in gts_of], 0.5)
                assert tp[c] == sum(state == TRUE_POSITIVE for state, _ in again)
                assert fp[c] == sum(state == FALSE_POSITIVE for state, _ in again)
                assert fn[c] == sum(not gt_crowd[g] for g in gts_of) - tp[c]
        assert sum(o.outcome == 'fp' and o.label is None for o in result.outcomes) == labels.count(None)
        above = [d for d in range(len(scores)) if scores[d] >= 0.4]
        plain = plain_match([scores[d] for d in above], [ious[d] for d in above], gt_crowd.tolist(), 0.5)
        cells = {}
        for d, (state, m) in zip(above, plain):
            if state != IGNORED:
                key = (gt_labels[m] if m >= 0 else None, labels[d])
                cells[key] = cells.get(key, 0) + 1
        for g in range(len(gt_labels)):
            if not gt_crowd[g] and all(m != g for state, m in plain if state == TRUE_POSITIVE):
                cells[(gt_labels[g], None)] = cells.get((gt_labels[g], None), 0) + 1
        assert result.confusion == cells
    reference = our_eval(sizes, truth, detections)
    for label in LABELS:
        assert (merged[label].average_precision() is None) == (reference[label].average_precision() is None)
        if reference[label].ground_truth:
            assert merged[label].ground_truth == reference[label].ground_truth


def reference_totals(sizes, truth, detections, max_dets=(1, 10, 100)):
    """label -> LabelTotals of a generated set, image by image with the reference, merged."""
    totals = {}
    for size, boxes, dets in zip(sizes, truth, detections):
        labels, scores, det_boxes, gt_labels, gt_boxes, gt_crowd = image_arrays(size, boxes, dets)
        result = evaluate_image(labels, scores, det_boxes, gt_labels, gt_boxes, gt_crowd, COCO_IOU_THRESHOLDS, 0.5,
                                0.5, max_dets)
        per_label = {label: labels.count(label) for label in set(labels)}
        for label, part in label_totals(result, per_label).items():
            totals[label] = merge_totals(totals[label], part) if label in totals else part
    return totals


@pytest.mark.parametrize('seed', range(3))
def test_the_run_metrics_are_pycocotools_summary(seed):
    sizes, truth, detections = generated_set(seed)
    _, stats = pycocotools_eval(sizes, truth, detections)
    totals = reference_totals(sizes, truth, detections)
    metrics = run_metrics('prediction-m-1', len(sizes), sum(map(len, detections)), totals, COCO_IOU_THRESHOLDS)
    assert metrics['map'] == pytest.approx(stats[0], abs=1e-9)
    assert metrics['map_50'] == pytest.approx(stats[1], abs=1e-9)
    assert metrics['map_75'] == pytest.approx(stats[2], abs=1e-9)
    assert metrics['mar'] == pytest.approx(stats[8], abs=1e-9)
    assert metrics['detections'] == sum(map(len, detections))
    assert set(metrics) == {'prediction_run', 'images', 'ground_truth_boxes', 'detections', 'map', 'map_50',
                            'map_75', 'mar', 'labels', 'stats', 'detections_beyond_max_dets', 'size_figures',
                            'errors', 'pr_curve_iou', 'pr_curve'}
    assert metrics['stats']['ap_small'] is None and 'have no known size' in metrics['size_figures']
    for name, index in (('ap', 0), ('ap_50', 1), ('ap_75', 2), ('ar_1', 6), ('ar_10', 7), ('ar_100', 8)):
        assert metrics['stats'][name] == pytest.approx(stats[index], abs=1e-9), name
    fish = next(e for e in metrics['labels'] if e['label'] == 'fish')  # predicted, never in the ground truth
    assert fish['ap'] is None and fish['best_f1'] is None and fish['fp'] == fish['detections'] > 0
    for entry in metrics['labels']:
        assert entry['tp'] + entry['fn'] == entry['ground_truth_boxes']
        assert entry['tp'] + entry['fp'] <= entry['detections']  # the rest matched crowd boxes
        assert set(entry) == {'label', 'ground_truth_boxes', 'detections', 'ap', 'ap_50', 'ap_75', 'ar',
                              'ap_per_iou', 'pr_curve', 'tp', 'fp', 'fn', 'best_f1', 'best_f1_confidence', 'stats',
                              'errors', 'operating_threshold'}


@pytest.mark.parametrize('eval_iou, at', [(0.5, 0), (COCO_IOU_THRESHOLDS[5], 5), (0.52, 0)])
def test_the_curves_are_pycocotools_interpolated_precision_at_its_101_recall_points(eval_iou, at):
    """Per label, and over the labels with ground truth, at --eval_iou when it is a threshold (else 0.5)."""
    sizes, truth, detections = generated_set(1)
    precision = cocoeval(sizes, truth, detections).eval['precision'][:, :, :, 0, 2]  # (T, R, K)
    totals = reference_totals(sizes, truth, detections)
    metrics = run_metrics('run', len(sizes), 0, totals, COCO_IOU_THRESHOLDS, eval_iou=eval_iou)
    assert metrics['pr_curve_iou'] == COCO_IOU_THRESHOLDS[at]
    for entry in metrics['labels']:
        expected = precision[at, :, LABELS.index(entry['label'])]
        if (expected == -1).all():
            assert entry['pr_curve'] is None
        else:
            assert entry['pr_curve'] == pytest.approx(expected.tolist(), abs=1e-12)
            assert np.mean(entry['pr_curve']) == pytest.approx(entry['ap_per_iou'][at], abs=1e-12)
    with_truth = [k for k in range(len(LABELS)) if (precision[at, :, k] > -1).any()]
    assert metrics['pr_curve'] == pytest.approx(precision[at][:, with_truth].mean(axis=1).tolist(), abs=1e-12)


def test_confidence_and_confusion_rows_and_the_document():
    sizes, truth, detections = generated_set(4, images=15)
    totals, cells = {}, {}
    for size, boxes, dets in zip(sizes, truth, detections):
        labels, scores, det_boxes, gt_labels, gt_boxes, gt_crowd = image_arrays(size, boxes, dets)
        result = evaluate_image(labels, scores, det_boxes, gt_labels, gt_boxes, gt_crowd, (0.5,), 0.5, 0.3)
        for label, part in label_totals(result, {}).items():
            totals[label] = merge_totals(totals[label], part) if label in totals else part
        cells = merge_cells(cells, result.confusion)
    rows = confidence_rows('run-a', totals, 0.5)
    assert len(rows) == (len(totals) + 1) * len(CONFIDENCE_GRID)
    overall = [r for r in rows if r['label'] is None]
    for c, row in enumerate(overall):
        assert row['tp'] == sum(r['tp'] for r in rows if r['label'] is not None and r['confidence_threshold']
                                == CONFIDENCE_GRID[c])
        if row['tp'] + row['fp']:
            assert row['precision'] == pytest.approx(row['tp'] / (row['tp'] + row['fp']))
        assert row['iou_threshold'] == 0.5 and row['prediction_run'] == 'run-a'
    assert [r['tp'] for r in overall] == sorted((r['tp'] for r in overall), reverse=True)  # fewer kept, fewer tp
    matrix = confusion_rows('run-a', cells)
    regular = sum(1 for boxes in truth for _, _, crowd in boxes if not crowd)
    assert sum(r['count'] for r in matrix if r['true_label'] is not None) == regular
    assert all(set(r) == {'prediction_run', 'true_label', 'predicted_label', 'count'} for r in matrix)
    document = metrics_document((0.5, 0.75), 0.5, [{'prediction_run': 'b'}, {'prediction_run': None},
                                                   {'prediction_run': 'a'}])
    assert document == {'iou_thresholds': [0.5, 0.75], 'max_dets': [1, 10, 100], 'eval_iou': 0.5,
                        'runs': [{'prediction_run': None}, {'prediction_run': 'a'}, {'prediction_run': 'b'}]}


@pytest.mark.parametrize('seed', range(3))
def test_max_dets_caps_each_image_and_label_and_gives_ar_at_1_10_100_as_pycocotools(seed):
    sizes, truth, detections = crowded_set(seed)
    assert max(sum(d[0] == label for d in dets) for dets in detections for label in LABELS) > 100
    coco = cocoeval(sizes, truth, detections)
    totals = reference_totals(sizes, truth, detections)
    metrics = run_metrics('run', len(sizes), sum(map(len, detections)), totals, COCO_IOU_THRESHOLDS)
    for name, index in (('ap', 0), ('ap_50', 1), ('ap_75', 2), ('ar_1', 6), ('ar_10', 7), ('ar_100', 8)):
        assert metrics['stats'][name] == pytest.approx(coco.stats[index], abs=1e-9), name
    for entry in metrics['labels']:
        expected = label_stats(coco, entry['label'])
        if expected is None:
            assert entry['stats']['ap'] is None
            continue
        for name, value in expected.items():
            assert entry['stats'][name] == pytest.approx(value, abs=1e-9), (entry['label'], name)
    # Uncapped (0), every detection is evaluated: more of them are counted, none fewer.
    uncapped = reference_totals(sizes, truth, detections, max_dets=(0,))
    judged = sum(t.tp + t.fp for t in totals.values())
    assert sum(t.tp + t.fp for t in uncapped.values()) > judged
    assert all(uncapped[label].tp >= totals[label].tp for label in totals)


def test_counts_packed_as_bits_merge_to_the_counts_of_the_flags_themselves():
    # The parts travel with their flags packed (a bit per threshold); merged, with already merged
    # counts among them, they give what the same flags unpacked give, for AP and error counts alike.
    from pipeline.core.error_types import ERROR_COLUMNS, ErrorCounts, ErrorPoints
    rng = np.random.default_rng(7)
    parts, plain, error_parts, error_plain = [], [], [], []
    for size in (0, 1, 9, 40):
        scores = np.round(rng.random(size), 2)  # equal scores within and across parts
        outcomes = rng.choice([TRUE_POSITIVE, FALSE_POSITIVE, IGNORED], size=(len(COCO_IOU_THRESHOLDS), size))
        parts.append(PrecisionCounts.of(scores, outcomes, 3))
        plain.append(PrecisionCounts(len(COCO_IOU_THRESHOLDS), scores, (outcomes == TRUE_POSITIVE).astype(np.uint8),
                                     (outcomes == FALSE_POSITIVE).astype(np.uint8), 3))
        tp = rng.integers(0, 2, (ERROR_COLUMNS, size)).astype(np.uint8)
        fp = (1 - tp) * rng.integers(0, 2, (ERROR_COLUMNS, size)).astype(np.uint8)
        error_parts.append(ErrorCounts.of(ErrorPoints(scores, tp, fp, np.arange(size)), 3, 1, np.arange(6)))
        error_plain.append(ErrorCounts(scores, tp, fp, 3, 1, np.ones(6, dtype=np.int64)))
    merged = PrecisionCounts.merge_all([PrecisionCounts.merge_all(parts[:2])] + parts[2:])
    expected = PrecisionCounts.merge_all(plain)
    assert parts[-1].tp.nbytes == 2 * 40  # 10 thresholds in 2 bytes per detection
    assert merged.scores.tolist() == expected.scores.tolist()
    assert merged.tp.tolist() == expected.tp.tolist() and merged.fp.tolist() == expected.fp.tolist()
    errors = ErrorCounts.merge_all([ErrorCounts.merge_all(error_parts[:2])] + error_parts[2:])
    expected_errors = ErrorCounts.merge_all(error_plain)
    assert errors.scores.tolist() == expected_errors.scores.tolist()
    assert errors.tp.tolist() == expected_errors.tp.tolist() and errors.fp.tolist() == expected_errors.fp.tolist()
    (summary, basis), (expected_summary, expected_basis) = errors.settled(), expected_errors.settled()
    assert (summary.ap, summary.fixed) == (expected_summary.ap, expected_summary.fixed)
    assert summary.counts.tolist() == expected_summary.counts.tolist() == [4] * 6
    assert basis is not None and basis.scores.tolist() == expected_basis.scores.tolist()


def test_counts_merged_per_score_wait_in_the_fewest_bytes_and_read_as_the_counts_themselves():
    # At distinct scores each merged count is 0 or 1, and they wait as bits (a 32nd of 4-byte counts);
    # with repeats, a byte each while under 256. Read, they are the counts in descending score order.
    from pipeline.core.error_types import ERROR_COLUMNS, ErrorCounts, ErrorPoints
    rng = np.random.default_rng(11)
    scores = rng.permutation(200) / 200 + 0.001
    outcomes = rng.choice([TRUE_POSITIVE, FALSE_POSITIVE, IGNORED], size=(len(COCO_IOU_THRESHOLDS), 200))
    parts = [PrecisionCounts.of(scores[i:i + 50], outcomes[:, i:i + 50], 2) for i in range(0, 200, 50)]
    merged = PrecisionCounts.merge_all(parts)
    order = np.argsort(-scores)
    assert merged.packed and merged.tp.nbytes == 2 * 200
    assert merged.numbers().tp.tolist() == (outcomes == TRUE_POSITIVE)[:, order].astype(int).tolist()
    assert merged.numbers().fp.tolist() == (outcomes == FALSE_POSITIVE)[:, order].astype(int).tolist()
    as_numbers = PrecisionCounts(len(COCO_IOU_THRESHOLDS), merged.scores, merged.numbers().tp, merged.numbers().fp,
                                 merged.ground_truth, True, merged.within)
    assert merged.average_precision().tolist() == as_numbers.average_precision().tolist()
    assert merged.recall().tolist() == as_numbers.recall().tolist()
    again = PrecisionCounts.merge_all([merged, parts[0]])  # its scores twice: counts of 2, as numbers
    assert not again.packed and max(again.tp.max(), again.fp.max()) == 2
    assert again.tp.dtype == np.uint8 and again.numbers().tp.dtype == np.int32  # a byte each while they wait
    assert again.average_precision().tolist() == again.numbers().average_precision().tolist()
    tp = rng.integers(0, 2, (ERROR_COLUMNS, 200)).astype(np.uint8)
    fp = (1 - tp) * rng.integers(0, 2, (ERROR_COLUMNS, 200)).astype(np.uint8)
    errors = ErrorCounts.merge_all([ErrorCounts.of(ErrorPoints(scores[i:i + 50], tp[:, i:i + 50], fp[:, i:i + 50],
                                                               np.arange(50)), 3, 1, np.arange(6))
                                    for i in range(0, 200, 50)])
    assert errors.packed
    numbers = ErrorCounts(errors.scores, errors.flags('tp').astype(np.int32), errors.flags('fp').astype(np.int32),
                          errors.ground_truth, errors.missed, errors.counts, True)
    (summary, basis), (expected, expected_basis) = errors.settled(), numbers.settled()
    assert (summary.ap, summary.fixed) == (expected.ap, expected.fixed)
    assert (basis is None) == (expected_basis is None)
