"""The report's charts. Precision-recall: COCO's interpolated precision at its 101 recall points, drawn
as a step function, AP in the legend, never a segment to (0, 0) that the curve does not have.
Confusion matrices: one label order for every run, integer ticks for counts."""
import numpy as np
import pytest
from coco_testing import LABELS, cocoeval, generated_set
from matplotlib.cbook import STEP_LOOKUP_MAP

from pipeline.tools.evaluation_report import (
    RECALL_POINTS,
    ap_figure,
    confusion_figure,
    confusion_labels,
    curve_figure,
    most_confused,
)


def run_of(precision, iou=0.5):
    """A metrics.json run whose curves are pycocotools' (T=0 slice of its (R, K) precision)."""
    labels = []
    for k, name in enumerate(LABELS):
        curve = precision[:, k]
        present = not (curve == -1).all()
        labels.append({'label': name, 'ground_truth_boxes': 10 if present else 0,
                       'pr_curve': curve.tolist() if present else None, 'tp': 6, 'fp': 2, 'fn': 4})
    with_truth = [curve['pr_curve'] for curve in labels if curve['pr_curve'] is not None]
    return {'prediction_run': 'run', 'pr_curve_iou': iou, 'pr_curve': np.mean(with_truth, axis=0).tolist(),
            'labels': labels}


def confidence_rows(label, best_f1_at=0.5):
    return [{'prediction_run': 'run', 'label': label, 'iou_threshold': 0.5, 'confidence_threshold': c,
             'precision': 0.9 if c == best_f1_at else 0.5, 'recall': 0.7 if c == best_f1_at else 0.2,
             'f1': 0.79 if c == best_f1_at else 0.29} for c in (0.0, 0.5, 0.9)]


@pytest.mark.parametrize('seed', [0, 3])
def test_each_curve_is_pycocotools_interpolated_precision_as_a_step_function(seed):
    sizes, truth, detections = generated_set(seed)
    precision = cocoeval(sizes, truth, detections).eval['precision'][0, :, :, 0, 2]  # IoU 0.5: (R, K)
    run = run_of(precision)
    figure = curve_figure(confidence_rows(None) + confidence_rows(LABELS[0]), [run])
    pr_axes = figure.axes[0]
    steps = [line for line in pr_axes.get_lines() if line.get_drawstyle() == 'steps-post']
    expected = [run['pr_curve']] + [e['pr_curve'] for e in sorted(
        (e for e in run['labels'] if e['ground_truth_boxes']), key=lambda e: (-e['ground_truth_boxes'], e['label']))]
    assert len(steps) == len(expected)
    for line, curve in zip(steps, expected):
        assert list(line.get_xdata()) == RECALL_POINTS
        assert list(line.get_ydata()) == pytest.approx(curve, abs=0)
        # The path drawn: horizontal then vertical between recall points, never back to the origin.
        xs, ys = STEP_LOOKUP_MAP[line.get_drawstyle()](line.get_xdata(), line.get_ydata())
        at_origin = np.isclose(xs, 0) & np.isclose(ys, 0)
        assert not at_origin.any() or curve[0] == 0
        assert np.all(np.diff(np.asarray(curve)) <= 1e-12)  # COCO's interpolation never rises
    legend = [text.get_text() for text in pr_axes.get_legend().get_texts()]
    assert legend[0] == f'all labels (AP {np.mean(run["pr_curve"]):.3f})'
    assert all('(AP ' in text for text in legend)


def test_the_operating_point_and_the_best_f1_are_marked_on_the_curve_of_their_iou():
    precision = np.tile(np.linspace(1.0, 0.0, 101)[:, None], (1, len(LABELS)))
    run = run_of(precision)
    figure = curve_figure(confidence_rows(None), [run])
    points = {(line.get_marker(), tuple(line.get_xydata()[0])) for line in figure.axes[0].get_lines()
              if line.get_linestyle() == 'None'}
    tp, fp, fn = 6 * len(LABELS), 2 * len(LABELS), 4 * len(LABELS)
    assert points == {('o', (tp / (tp + fn), tp / (tp + fp))), ('*', (0.7, 0.9))}
    # Curves at another IoU than the points': no point is marked on them.
    other = curve_figure(confidence_rows(None), [run_of(precision, iou=0.75)])
    assert not [line for line in other.axes[0].get_lines() if line.get_linestyle() == 'None']


def cell(run, true, predicted, count):
    return {'prediction_run': run, 'true_label': true, 'predicted_label': predicted, 'count': count}


def test_every_runs_confusion_matrix_has_one_label_order_and_counts_have_integer_ticks():
    cells = [cell('a', 'cat', 'cat', 2), cell('a', 'dog', None, 1), cell('b', 'dog', 'dog', 5),
             cell('b', 'cat', 'dog', 1), cell('b', None, 'bird', 1)]
    order = confusion_labels(cells)
    assert order == ['dog', 'cat', 'bird']  # by boxes over both runs: dog 7, cat 3, bird 1
    for run in ('a', 'b'):
        axes = confusion_figure(cells, run, order).axes[0]
        assert [t.get_text() for t in axes.get_xticklabels()] == ['dog', 'cat', 'bird', 'background']
        assert [t.get_text() for t in axes.get_yticklabels()] == ['dog', 'cat', 'bird', 'background']
    figure = confusion_figure(cells, 'b', order)
    counts, shares = figure.axes[0], figure.axes[1]
    bar = next(axes for axes in figure.axes if axes.get_ylabel() == 'boxes')  # counts 0 to 5
    ticks = [tick for tick in bar.get_yticks() if 0 <= tick <= 5]
    assert ticks and all(float(tick).is_integer() for tick in ticks)
    # Beside the counts, each true label's row as shares of its boxes: cat 1 of 1 taken for dog.
    assert [t.get_text() for t in counts.texts] == ['5', '1', '1']
    assert [t.get_text() for t in shares.texts] == ['100%', '100%', '100%']
    assert most_confused(cells, 'b') == [('cat', 'dog', 1, 1.0)]  # background rows and columns aside
    assert most_confused(cells + [cell('b', 'cat', 'cat', 3)], 'b') == [('cat', 'dog', 1, 0.25)]


def test_a_label_without_ground_truth_in_a_run_says_so_instead_of_a_bar_of_zero():
    runs = [{'prediction_run': 'a', 'labels': [{'label': 'cat', 'ap': 0.0}, {'label': 'dog', 'ap': 0.5}]},
            {'prediction_run': 'b', 'labels': [{'label': 'cat', 'ap': None}, {'label': 'dog', 'ap': 0.7}]}]
    axes = ap_figure(runs).axes[0]
    widths = {(patch.get_facecolor(), round(patch.get_y(), 3)): patch.get_width() for patch in axes.patches}
    assert sorted(w for w in widths.values() if w == w) == [0.0, 0.5, 0.7]  # cat in b: no bar (NaN)
    assert [text.get_text() for text in axes.texts] == ['no ground truth']
