"""The report's Evaluation section: each prediction run's headline figures side by side, AP per label,
precision-recall and F1 against confidence, the confusion matrix, and galleries of the highest-scored
false positives and of missed boxes. Read from the run's own evaluation outputs, in bounded memory:
the per-box table is scanned batch by batch and only the chosen images' rows are kept."""
import heapq
import html
import itertools
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pipeline.tools.drawing import (
    NATURAL_SIZE,
    box_html,
    figure_data_uri,
    label_select,
    plural,
    section_html,
    shorten,
)

GALLERY_PER_RUN = 6  # images in each of a run's two galleries
CURVE_LABELS = 6  # labels with the most ground truth get a curve
CONFUSION_LABELS = 15
# Styles: ground truth dashed, detections solid; a detection's colour says its outcome.
TRUE_POSITIVE = (44, 160, 44)
FALSE_POSITIVE = (214, 39, 40)
GROUND_TRUTH = (31, 119, 180)
MISSED = (255, 127, 14)
LEGEND = ((TRUE_POSITIVE, 'solid', 'detection matched (tp)'), (FALSE_POSITIVE, 'solid', 'false positive (fp)'),
          (GROUND_TRUTH, 'dashed', 'ground truth matched'), (MISSED, 'dashed', 'ground truth missed (fn)'))
MATCH_COLUMNS = ['prediction_run', 'image_uri', 'outcome', 'label', 'score', 'iou', 'x_min', 'y_min', 'x_max',
                 'y_max', 'gt_x_min', 'gt_y_min', 'gt_x_max', 'gt_y_max', 'gt_index', 'error_type', 'error_label',
                 'error_iou']
# The false-positive gallery's groups: TIDE's types (core.error_types), then those tidecv matched.
FP_GROUPS = (('cls', 'cls: right box, wrong label'), ('loc', 'loc: right label, poorly placed (IoU 0.1 to 0.5)'),
             ('both', 'both: wrong label and poorly placed'), ('dupe', 'dupe: a detection already took the box'),
             ('bkg', 'bkg: nothing there'), (None, 'other false positives at --eval_iou'))
ERROR_ROWS = (('cls', 'cls (wrong label)'), ('loc', 'loc (poorly placed)'), ('both', 'both'),
              ('dupe', 'dupe (duplicate)'), ('bkg', 'bkg (background)'), ('miss', 'miss (box not found)'))


class GalleryImage(NamedTuple):
    kind: str  # 'fp' (a highest-scored false positive) or 'fn' (a largest missed box)
    prediction_run: Optional[str]
    image_uri: str
    why: str  # what the gallery shows of it: the false positive's score, or the missed box
    rows: List[dict]  # every matches row of this image and run
    error_type: Optional[str] = None  # a false positive's TIDE type


def read_table(paths: Sequence[str]) -> List[dict]:
    """A small table (confidence metrics, confusion matrix) as rows."""
    rows: List[dict] = []
    for path in paths:
        with FileSystems.open(path) as handle:
            rows += pq.read_table(handle).to_pylist()
    return rows


def _batches(paths: Sequence[str]):
    for path in paths:
        with FileSystems.open(path) as handle:
            yield from pq.ParquetFile(handle).iter_batches(columns=MATCH_COLUMNS, batch_size=65536)


def choose_gallery_images(paths: Sequence[str], per_run: int = GALLERY_PER_RUN) -> List[GalleryImage]:
    """Per run, the images of the highest-scored false positives of each error type (a third of
    `per_run` each, at least one) and of the largest missed boxes (one entry per image), with all their
    rows: two passes over the table, holding only the chosen rows."""
    false_positives: Dict[Tuple[Optional[str], Optional[str]], list] = {}
    misses: Dict[Tuple[Optional[str], Optional[str]], list] = {}
    order = itertools.count()  # ties in value and URI never reach the rows
    for batch in _batches(paths):
        table = pa.Table.from_batches([batch])
        for outcome, heaps, key in (('fp', false_positives, 'score'), ('fn', misses, 'area')):
            chosen = table.filter(pc.equal(table['outcome'], outcome))
            for row in chosen.to_pylist() if chosen.num_rows else ():
                value = row['score'] if key == 'score' else (
                    (row['gt_x_max'] - row['gt_x_min']) * (row['gt_y_max'] - row['gt_y_min']))
                group = row['error_type'] if outcome == 'fp' else None
                heap = heaps.setdefault((row['prediction_run'], group), [])
                item = (value, row['image_uri'], -next(order), row)
                if len(heap) < per_run * 4:
                    heapq.heappush(heap, item)
                elif item[:3] > heap[0][:3]:
                    heapq.heapreplace(heap, item)
    picks: List[Tuple[str, Optional[str], str, str, Optional[str]]] = []
    groups = [group for group, _ in FP_GROUPS]
    for kind, heaps, describe, count in (('fp', false_positives, _describe_fp, max(1, per_run // 3)),
                                         ('fn', misses, _describe_fn, per_run)):
        for run, group in sorted(heaps, key=lambda key: (key[0] or '', groups.index(key[1]) if key[1] in groups
                                                          else len(groups))):
            seen: set = set()
            for _, uri, _, row in sorted(heaps[run, group], key=lambda item: (-item[0], item[1], -item[2])):
                if uri not in seen and len(seen) < count:
                    seen.add(uri)
                    picks.append((kind, run, uri, describe(row), group))
    wanted = {(run, uri) for _, run, uri, _, _ in picks}
    rows: Dict[Tuple[Optional[str], str], List[dict]] = {key: [] for key in wanted}
    uris = pa.array(sorted({uri for _, uri in wanted}), type=pa.string())
    for batch in _batches(paths) if wanted else ():
        table = pa.Table.from_batches([batch])
        for row in table.filter(pc.is_in(table['image_uri'], value_set=uris)).to_pylist():
            image_key = (row['prediction_run'], row['image_uri'])
            if image_key in rows:
                rows[image_key].append(row)
    return [GalleryImage(kind, run, uri, why, rows[(run, uri)], group) for kind, run, uri, why, group in picks]


def _on_other_label(row: dict) -> str:
    """A cls error's box, as its caption says it: 'on a Cheese box, IoU 0.97'."""
    iou = row.get('error_iou')
    return f'on a {shorten(row.get("error_label") or "")} box' + (f', IoU {iou:.2f}' if iou is not None else '')


def _describe_fp(row: dict) -> str:
    what = f'{shorten(row["label"] or "(no label)")} {row["score"]:.2f}'
    if row['error_type'] == 'cls':
        return f'{what} {_on_other_label(row)}'
    if row['error_type'] == 'dupe':
        return f'{what}, a duplicate: another detection took the box'
    return f'{what}, best IoU with a box of its label {row["iou"]:.2f}'


def _describe_fn(row: dict) -> str:
    return f'missed {shorten(row["label"] or "")}, best IoU with a detection of its label {row["iou"]:.2f}'


def outcome_overlay(rows: Sequence[dict]) -> str:
    """The image's boxes as elements over it: ground truth dashed (blue when matched, orange when
    missed, captioned when missed), detections solid (green when matched, red when not, captioned with
    label, score and a false positive's error type). Each says its outcome and error type, for the
    gallery's filters."""
    parts = []
    for row in rows:
        if row['gt_x_min'] is not None:
            missed = row['outcome'] == 'fn'
            parts.append(box_html((row['gt_x_min'], row['gt_y_min'], row['gt_x_max'], row['gt_y_max']),
                                  MISSED if missed else GROUND_TRUTH, shorten(row['label'] or '') if missed else '',
                                  {'outcome': 'fn' if missed else 'gt', 'label': row['label'] or '',
                                   'error-type': (row.get('error_type') or '') if missed else ''}, border='dashed'))
    for row in rows:
        if row['x_min'] is not None:
            caption = f'{shorten(row["label"] or "?")} {row["score"]:.2f}'
            if row.get('error_type') and row['outcome'] == 'fp':
                caption += f' {row["error_type"]}' + (f' {_on_other_label(row)}' if row['error_type'] == 'cls' else '')
            parts.append(box_html((row['x_min'], row['y_min'], row['x_max'], row['y_max']),
                                  TRUE_POSITIVE if row['outcome'] == 'tp' else FALSE_POSITIVE, caption,
                                  {'outcome': row['outcome'], 'label': row['label'] or '',
                                   'score': f'{row["score"]:.6g}',
                                   'error-type': (row.get('error_type') or '') if row['outcome'] == 'fp' else ''}))
    return ''.join(parts)


def _run_name(run: Optional[str]) -> str:
    return run or '(no run folder)'


def ap_chart(runs: Sequence[Mapping]) -> Optional[str]:
    figure = ap_figure(runs)
    return None if figure is None else figure_data_uri(figure)


def ap_figure(runs: Sequence[Mapping]) -> Optional[Figure]:
    """AP per label (with ground truth in a run at least), one bar per run, side by side; a run where
    the label has no ground truth says so instead of a bar of 0."""
    labels = sorted({entry['label'] for run in runs for entry in run['labels'] if entry['ap'] is not None})[:30]
    if not labels:
        return None
    figure = Figure(figsize=(7, 0.3 * len(labels) * max(1, len(runs)) + 1.4))
    axes = figure.subplots()
    height = 0.8 / len(runs)
    for index, run in enumerate(runs):
        ap = {entry['label']: entry['ap'] for entry in run['labels']}
        positions = [p + index * height for p in range(len(labels))]
        values = [ap.get(label) for label in labels]
        axes.barh(positions, [float('nan') if value is None else value for value in values], height=height,
                  label=shorten(_run_name(run['prediction_run'])), color=f'C{index}')
        for position, value in zip(positions, values):
            if value is None:  # no AP at all, which is not an AP of 0
                axes.text(0.01, position, 'no ground truth', va='center', fontsize=7, color=f'C{index}')
    axes.set_yticks([p + 0.4 - height / 2 for p in range(len(labels))], [shorten(label) for label in labels])
    axes.invert_yaxis()
    axes.set_xlim(0, 1)
    axes.set_xlabel('AP (mean over the IoU thresholds)')
    axes.set_title('AP per label')
    axes.legend(fontsize=8)
    return figure


RECALL_POINTS = [i / 100 for i in range(101)]  # pycocotools' recall points, where pr_curve is given


def curve_charts(confidence: Sequence[Mapping], runs: Sequence[Mapping]) -> Optional[str]:
    figure = curve_figure(confidence, runs)
    return None if figure is None else figure_data_uri(figure)


def curve_figure(confidence: Sequence[Mapping], runs: Sequence[Mapping]) -> Optional[Figure]:
    """Per run: precision against recall as COCO draws it (its interpolated precision at 101 recall
    points, a step function, AP in the legend) with the point of --eval_confidence (o) and of the best
    F1 (*) marked, and F1 against confidence, for the labels with the most ground truth and for all
    labels together."""
    if not confidence and not any(run.get('pr_curve') for run in runs):
        return None
    figure = Figure(figsize=(10, 3.6 * len(runs)))
    axes_grid = figure.subplots(len(runs), 2, squeeze=False)
    for (pr_axes, f1_axes), run in zip(axes_grid, runs):
        entries = sorted((e for e in run['labels'] if e['ground_truth_boxes']),
                         key=lambda e: (-e['ground_truth_boxes'], e['label']))[:CURVE_LABELS]
        mine = [r for r in confidence if r['prediction_run'] == run['prediction_run']]
        eval_iou = mine[0]['iou_threshold'] if mine else None
        for index, entry in enumerate([None] + entries):
            label = None if entry is None else entry['label']
            name = 'all labels' if label is None else shorten(label)
            style = {'color': 'black', 'linewidth': 2} if label is None else {'color': f'C{index}'}
            curve = run.get('pr_curve') if entry is None else entry.get('pr_curve')
            rows = sorted((r for r in mine if r['label'] == label), key=lambda r: r['confidence_threshold'])
            if curve is not None:
                pr_axes.step(RECALL_POINTS, curve, where='post', label=f'{name} (AP {sum(curve) / len(curve):.3f})',
                             **style)
                if eval_iou == run.get('pr_curve_iou'):  # the points are at --eval_iou: on this curve's IoU
                    _mark_points(pr_axes, run if entry is None else entry, run, rows, style['color'])
            if rows:
                f1_axes.plot([r['confidence_threshold'] for r in rows], [r['f1'] for r in rows], label=name, **style)
            chosen = None if entry is None else chosen_threshold(entry)
            if chosen is not None:  # where thresholds.csv puts the label
                f1_axes.plot([chosen['threshold']], [chosen['f1']], marker=CHOSEN_MARKERS.get(chosen['rule'], 'D'),
                             markersize=9, linestyle='', color=style['color'])
        pr_axes.set(xlim=(0, 1), ylim=(0, 1.02), xlabel='recall', ylabel='precision',
                    title=f'{shorten(_run_name(run["prediction_run"]))}: precision-recall at IoU '
                          f'{_number(run.get("pr_curve_iou"))}')
        f1_axes.set(xlim=(0, 1), ylim=(0, 1.02), xlabel='confidence threshold', ylabel='F1',
                    title=f'F1 against confidence at IoU {_number(eval_iou)}')
        if pr_axes.get_legend_handles_labels()[0]:
            pr_axes.legend(fontsize=7, title=_legend_title(run), title_fontsize=7)
    figure.tight_layout()
    return figure


def _mark_points(axes, entry: Mapping, run: Mapping, rows: Sequence[Mapping], colour) -> None:
    """The label's (or the run's, summed over its labels) precision and recall at --eval_confidence,
    and at its chosen threshold (thresholds.csv; for all labels, the best F1 of the confidence grid)."""
    labels = run['labels'] if entry is run else [entry]
    precision, recall, _ = operating_point({key: sum(e[key] or 0 for e in labels) for key in ('tp', 'fp', 'fn')})
    if precision is not None and recall is not None:
        axes.plot([recall], [precision], marker='o', linestyle='', color=colour)
    chosen = chosen_threshold(entry) if entry is not run else None
    if chosen is not None:
        axes.plot([chosen['recall']], [chosen['precision']], marker=CHOSEN_MARKERS.get(chosen['rule'], 'D'),
                  markersize=9, linestyle='', color=colour)
        return
    best = max(rows, key=lambda r: r['f1'], default=None)
    if best is not None and best['f1'] > 0:
        axes.plot([best['recall']], [best['precision']], marker='*', markersize=10, linestyle='', color=colour)


# The chosen threshold's mark: a star for the best F1 (as the grid's), a diamond for a target.
CHOSEN_MARKERS = {'best_f1': '*', 'target_precision': 'D', 'target_recall': 'D'}


def chosen_threshold(entry: Mapping) -> Optional[Mapping]:
    """A label's operating threshold from metrics.json, when the rule found one."""
    chosen = entry.get('operating_threshold')
    return chosen if chosen and chosen.get('threshold') is not None else None


def _legend_title(run: Mapping) -> str:
    targets = {(chosen['rule'], chosen.get('target')) for chosen in (chosen_threshold(e) for e in run['labels'])
               if chosen and chosen['rule'] != 'best_f1'}
    shown = [f'{rule.split("_")[1]} \u2265 {_number(target)}' for rule, target in sorted(targets, key=str)]
    return 'o --eval_confidence, * best F1' + ''.join(f', \u25c6 {text} (thresholds.csv)' for text in shown)


def _number(value) -> str:
    return '?' if value is None else f'{value:.2f}'


def confusion_labels(cells: Sequence[Mapping]) -> List[str]:
    """One label order for every run's confusion matrix: the labels with the most boxes over all runs."""
    totals: Dict[str, int] = {}
    for cell in cells:
        for label in (cell['true_label'], cell['predicted_label']):
            if label is not None:
                totals[label] = totals.get(label, 0) + cell['count']
    return sorted(totals, key=lambda name: (-totals[name], name))[:CONFUSION_LABELS]


def confusion_chart(cells: Sequence[Mapping], run: Optional[str],
                    labels: Optional[Sequence[str]] = None) -> Optional[str]:
    figure = confusion_figure(cells, run, labels)
    return None if figure is None else figure_data_uri(figure)


def confusion_figure(cells: Sequence[Mapping], run: Optional[str],
                     labels: Optional[Sequence[str]] = None) -> Optional[Figure]:
    """The confusion matrix of one run as a heat map: `labels` (by default the run's most frequent;
    give every run the same), then background."""
    mine = [cell for cell in cells if cell['prediction_run'] == run]
    if not mine:
        return None
    axis = list(confusion_labels(mine) if labels is None else labels) + [None]
    index = {label: i for i, label in enumerate(axis)}
    grid = [[0] * len(axis) for _ in axis]
    for cell in mine:
        if cell['true_label'] in index and cell['predicted_label'] in index:
            grid[index[cell['true_label']]][index[cell['predicted_label']]] += cell['count']
    names = [shorten(label, 24) if label is not None else 'background' for label in axis]
    side = 1.0 + 0.5 * len(axis)
    figure = Figure(figsize=(2 * side + 1.6, side))
    counts_axes, share_axes = figure.subplots(1, 2)
    totals = [sum(row) for row in grid]
    shares: List[List[float]] = [[count / total if total else 0.0 for count in row] for row, total in zip(grid, totals)]
    panels: List[Tuple[Any, List[list], str, Callable[[float], str]]] = [
        (counts_axes, grid, 'boxes', lambda v: f'{v:,}'),
        (share_axes, shares, 'share of the row', lambda v: f'{v:.0%}')]
    for axes, values, title, text in panels:
        image = axes.imshow(values, cmap='Blues', vmin=0)
        axes.set_xticks(range(len(axis)), names, rotation=60, ha='right', fontsize=8)
        axes.set_yticks(range(len(axis)), names, fontsize=8)
        peak = max(max(row) for row in values) or 1
        for i, row in enumerate(values):
            for j, value in enumerate(row):
                if value:
                    axes.text(j, i, text(value), ha='center', va='center', fontsize=7,
                              color='white' if value > peak / 2 else 'black')
        axes.set_xlabel('predicted label')
        axes.set_ylabel('true label')
        bar = figure.colorbar(image, ax=axes, shrink=0.7, label=title)
        if axes is counts_axes:
            bar.locator = MaxNLocator(integer=True)  # counts: no tick at 0.5
            bar.update_ticks()
    figure.suptitle(f'Confusion matrix: {shorten(_run_name(run))}')
    counts_axes.set_title('boxes', fontsize=10)
    share_axes.set_title('each true label\'s row as shares (sums to 1)', fontsize=10)
    figure.tight_layout()
    return figure


def most_confused(cells: Sequence[Mapping], run: Optional[str], count: int = 5) -> List[Tuple[str, str, int, float]]:
    """The run's largest cells between two labels (true label, predicted label, boxes, share of the
    true label's boxes), most boxes first."""
    mine = [cell for cell in cells if cell['prediction_run'] == run]
    totals: Dict[str, int] = {}
    for cell in mine:
        if cell['true_label'] is not None:
            totals[cell['true_label']] = totals.get(cell['true_label'], 0) + cell['count']
    pairs = [(cell['true_label'], cell['predicted_label'], cell['count'], cell['count'] / totals[cell['true_label']])
             for cell in mine if None not in (cell['true_label'], cell['predicted_label'])
             and cell['true_label'] != cell['predicted_label'] and cell['count']]
    return sorted(pairs, key=lambda pair: (-pair[2], pair[0], pair[1]))[:count]


HEADLINE = (('images', 'images evaluated'), ('ground_truth_boxes', 'ground-truth boxes'),
            ('detections', 'detections'), ('map', 'mAP'), ('map_50', 'mAP@0.5'), ('map_75', 'mAP@0.75'),
            ('mar', 'mAR (AR@100)'))


def figure_text(value) -> str:
    if value is None:
        return 'n/a'
    return f'{value:.4f}' if isinstance(value, float) else str(value)


def render_section(metrics: Mapping, charts: Mapping[str, Optional[str]], confusion: Mapping[str, str],
                   gallery: Sequence[Tuple[GalleryImage, str, Optional[str]]],
                   confused: Optional[Mapping[str, Sequence[Tuple[str, str, int, float]]]] = None,
                   slices: str = '') -> str:
    """The Evaluation section's HTML. `gallery`: (image, picture data URI, note when the picture is a
    blank canvas); `slices`: the part on the slices (slices_report), when the run has them."""
    esc = html.escape
    runs = metrics['runs']
    thresholds = ', '.join(f'{t:.10g}' for t in metrics['iou_thresholds'])  # 0.9 for linspace's 0.8999999999999999
    parts = [f'<p>Against ground truth: AP averaged over IoU {esc(thresholds)}; '
             f'per-box outcomes, curves and confusion matrix at IoU {metrics["eval_iou"]}.</p>',
             '<table id="evaluation-runs"><tr><th>figure</th>'
             + ''.join(f'<th>{esc(_run_name(run["prediction_run"]))}</th>' for run in runs) + '</tr>']
    for key, name in HEADLINE:
        parts.append(f'<tr><td>{esc(name)}</td>' + ''.join(
            f'<td class="n" data-run="{esc(_run_name(run["prediction_run"]))}" data-key="{key}">'
            f'{figure_text(run[key])}</td>' for run in runs) + '</tr>')
    stats = list(dict.fromkeys(name for run in runs for name in run.get('stats', {})))
    if stats:  # pycocotools' twelve summary numbers, in its order and under its names
        parts.append('<tr><th colspan="' + str(len(runs) + 1) + '">COCO summary (pycocotools\' stats)</th></tr>')
    for name in stats:
        parts.append(f'<tr><td>{esc(name)}</td>' + ''.join(
            f'<td class="n" data-run="{esc(_run_name(run["prediction_run"]))}" data-key="stats.{esc(name)}">'
            f'{figure_text(run.get("stats", {}).get(name))}</td>' for run in runs) + '</tr>')
    notes = [f'{_run_name(run["prediction_run"])}: size figures {run["size_figures"]}'
             for run in runs if run.get('size_figures')]
    parts.append('</table>' + ''.join(f'<p class="note">{esc(note)}</p>' for note in notes))
    parts.append(_errors_table(runs))
    parts.append(labels_table(runs))
    parts.append(ap_changes(runs))
    parts.append(slices)
    for key, alt in (('ap', 'AP per label'), ('curves', 'Precision-recall and F1 against confidence')):
        if charts.get(key):
            parts.append(f'<img alt="{alt}" src="{charts[key]}">')
    for run, chart in confusion.items():
        parts.append(f'<img alt="Confusion matrix of {esc(run)}" src="{chart}">')
        pairs = (confused or {}).get(run) or []
        if pairs:
            parts.append(f'<p>Most confused in {esc(run)}:</p><ol class="confused" data-run="{esc(run)}">' + ''.join(
                f'<li>{esc(true)} taken for {esc(predicted)}: {plural(boxes, "box", "boxes")} ({share:.0%} of the '
                f'{esc(true)} boxes)</li>' for true, predicted, boxes, share in pairs) + '</ol>')
    legend = ('<p class="legend">' + ' '.join(
        f'<span style="border:3px {style} rgb{colour};padding:0 6px">{esc(text)}</span>'
        for colour, style, text in LEGEND) + '</p>')
    parts.append(galleries(runs, gallery, legend))
    return section_html('evaluation', 'Evaluation', '\n'.join(parts))


OUTCOME_FILTERS = (('tp', 'matched detections (tp)'), ('fp', 'false positives (fp)'),
                   ('gt', 'matched ground truth'), ('fn', 'missed ground truth (fn)'))


def galleries(runs: Sequence[Mapping], gallery: Sequence[Tuple[GalleryImage, str, Optional[str]]],
              legend: str) -> str:
    """Two galleries per run, each under a heading that names the run: its highest-scored false
    positives, grouped by error type, and its largest missed boxes; above them, filters of the boxes
    by outcome, a false positive's error type, label and score, and of the runs shown."""
    parts = [gallery_filters(runs, gallery)]
    for index, run in enumerate(runs):
        parts.append(f'<div class="run-galleries" data-run="{html.escape(_run_name(run["prediction_run"]))}">')
        parts += [_run_gallery(index, run, kind, title, gallery, legend)
                  for kind, title in (('fp', 'highest-scored false positives, by error type'),
                                      ('fn', 'missed boxes (the largest first)'))]
        parts.append('</div>')
    return '\n'.join(parts)


def gallery_filters(runs: Sequence[Mapping], gallery: Sequence[Tuple[GalleryImage, str, Optional[str]]]) -> str:
    """The evaluation galleries' filters (the page's SCRIPT applies them)."""
    esc = html.escape
    types = ''.join(f'<option value="{key}">{esc(title)}</option>' for key, title in FP_GROUPS if key)
    labels = sorted({row['label'] or '' for image, _, _ in gallery for row in image.rows})
    names = [_run_name(run['prediction_run']) for run in runs]
    run_filter = '' if len(names) < 2 else (
        '; runs: <select id="filter-eval-run"><option value="*">every run</option>' + ''.join(
            f'<option value="{esc(name)}">{esc(name)}</option>' for name in names) + '</select>')
    return ('<p class="filters" id="outcome-filters">Show ' + ''.join(
        f'<label><input type="checkbox" data-outcome="{key}" checked> {esc(title)}</label> '
        for key, title in OUTCOME_FILTERS) + f' false positives of <select id="filter-error-type"><option value="*">'
        f'any type</option>{types}</select>; boxes of {label_select("filter-eval-label", labels)}, detections '
        'scored at least <input id="filter-eval-score" type="number" min="0" max="1" step="0.05" value="0">'
        f'{run_filter} {NATURAL_SIZE}</p>')


def _run_gallery(index: int, run: Mapping, kind: str, title: str,
                 gallery: Sequence[Tuple[GalleryImage, str, Optional[str]]], legend: str) -> str:
    esc = html.escape
    name = _run_name(run['prediction_run'])
    mine = [item for item in gallery if (item[0].kind, item[0].prediction_run) == (kind, run['prediction_run'])]
    parts = [f'<h3>{esc(name)}: {title}</h3>{legend}<div class="gallery" id="gallery-{kind}-{index}" '
             f'data-run="{esc(name)}" data-kind="{kind}">']
    if not mine:
        parts.append('<p>None.</p>')
    group: Optional[str] = ''  # the false positives' error type heading the figures that follow
    for image, picture, note in mine:
        if kind == 'fp' and image.error_type != group:
            group = image.error_type
            heading = dict(FP_GROUPS).get(group, str(group))
            parts.append(f'<h4 data-error-type="{esc(str(group))}">{esc(heading)}</h4>')
        parts.append(_gallery_figure(image, picture, note))
    parts.append('</div>')
    return '\n'.join(parts)


def _gallery_figure(image: GalleryImage, picture: str, note: Optional[str]) -> str:
    esc = html.escape
    caption = f'{esc(image.image_uri)} &middot; {esc(image.why)}' + (f' &middot; {esc(note)}' if note else '')
    css = ' class="unreadable"' if note else ''
    return (f'<figure{css}><div class="frame"><img alt="{esc(image.image_uri)}" src="{picture}">'
            f'{outcome_overlay(image.rows)}</div><figcaption>{caption}</figcaption></figure>')


def operating_point(entry: Mapping) -> Tuple[Optional[float], Optional[float], Optional[float]]:
    """(precision, recall, F1) at --eval_confidence and --eval_iou, from the label's tp, fp and fn."""
    tp, fp, fn = entry['tp'] or 0, entry['fp'] or 0, entry['fn'] or 0
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = (2 * precision * recall / (precision + recall) if precision and recall else
          0.0 if precision is not None and recall is not None else None)
    return precision, recall, f1


def _cell(value: Optional[float], key: str = '') -> str:
    """A number cell that sorts by its value (n/a last)."""
    data = '' if value is None else f' data-sort="{value:.10g}"'
    return f'<td class="n"{data}{key}>{figure_text(value)}</td>'


def labels_table(runs: Sequence[Mapping]) -> str:
    """Per label and run: support, AP, and precision, recall and F1 at --eval_confidence; sortable by
    any column (click its heading). A label without ground truth says so instead of an AP."""
    esc = html.escape
    columns = ('AP', 'precision', 'recall', 'F1', 'tp', 'fp', 'fn', 'chosen threshold')
    # The runs' names once each, over their columns (long names stay readable); the row below sorts.
    head = ('<tr><th colspan="2"></th>' + ''.join(
        f'<th colspan="{len(columns)}" class="run-name">{esc(_run_name(run["prediction_run"]))}</th>' for run in runs)
        + '</tr><tr><th>label</th><th>ground-truth boxes</th>' + ''.join(
            f'<th>{name}</th>' for _ in runs for name in columns) + '</tr>')
    parts = ['<h3>Per label</h3><p class="note">Click a heading to sort. Precision, recall and F1 at '
             '--eval_confidence and --eval_iou; AP over the IoU thresholds; the chosen threshold is the '
             'label\'s in thresholds.csv (best F1, or --target_precision / --target_recall).</p>',
             f'<table id="evaluation-labels" class="sortable"><thead>{head}</thead><tbody>']
    by_run = [{entry['label']: entry for entry in run['labels']} for run in runs]
    for label in sorted({entry['label'] for run in runs for entry in run['labels']}):
        support = max(entries[label]['ground_truth_boxes'] for entries in by_run if label in entries)
        cells = [f'<td>{esc(label)}</td>', _cell(support)]
        for run, entries in zip(runs, by_run):
            entry = entries.get(label)
            if entry is None:
                cells.append('<td></td>' * len(columns))
                continue
            precision, recall, f1 = operating_point(entry)
            where = f' data-run="{esc(_run_name(run["prediction_run"]))}" data-label="{esc(label)}"'
            ap_cell = (_cell(entry['ap'], where) if entry['ground_truth_boxes']
                       else '<td class="n">no ground truth</td>')
            chosen = chosen_threshold(entry)
            cells += [ap_cell, _cell(precision), _cell(recall), _cell(f1),
                      *(f'<td class="n" data-sort="{entry[k]}">{entry[k]:,}</td>' for k in ('tp', 'fp', 'fn')),
                      '<td class="n">n/a</td>' if chosen is None else
                      f'<td class="n" data-sort="{chosen["threshold"]!r}"{where} data-key="threshold" '
                      f'title="{esc(chosen["rule"])}">{chosen["threshold"]:.4g}</td>']
        parts.append(f'<tr>{"".join(cells)}</tr>')
    parts.append('</tbody></table>')
    return '\n'.join(parts)


def ap_changes(runs: Sequence[Mapping]) -> str:
    """For two runs or more: each later run's change in AP per label against the first, largest gain
    first (labels with ground truth in both)."""
    if len(runs) < 2:
        return ''
    esc = html.escape
    base = {e['label']: e['ap'] for e in runs[0]['labels'] if e['ap'] is not None}
    parts = []
    for run in runs[1:]:
        changes = sorted(((e['ap'] - base[e['label']], e['label'], base[e['label']], e['ap'])
                          for e in run['labels'] if e['ap'] is not None and e['label'] in base),
                         key=lambda item: (-item[0], item[1]))
        title = f'{_run_name(run["prediction_run"])} against {_run_name(runs[0]["prediction_run"])}'
        parts.append(f'<h3>Change in AP per label: {esc(title)}</h3><table class="ap-change sortable"><thead><tr>'
                     '<th>label</th><th>change</th><th>AP before</th><th>AP after</th></tr></thead><tbody>')
        parts += [f'<tr><td>{esc(label)}</td><td class="n" data-sort="{change:.10g}">{_signed(change)}</td>'
                  f'{_cell(before)}{_cell(after)}</tr>' for change, label, before, after in changes]
        parts.append('</tbody></table>')
    return '\n'.join(parts)


def _errors_table(runs: Sequence[Mapping]) -> str:
    """TIDE's error types per run side by side: each type's dAP (what fixing it would add to AP@0.5)
    and count, the special dAPs, and tidecv's own AP@0.5 they start from."""
    esc = html.escape
    with_errors = [run for run in runs if run.get('errors')]
    if not with_errors:
        return ''
    names = [esc(_run_name(run['prediction_run'])) for run in with_errors]
    parts = ['<h3>Where the AP goes: error types (TIDE, at IoU 0.5)</h3>',
             '<table id="evaluation-errors"><tr><th>type</th>' + ''.join(f'<th>{name}</th>' for name in names)
             + '</tr>', '<tr><td>AP@0.5 (tidecv\'s)</td>' + ''.join(
                 f'<td class="n" data-run="{name}" data-key="errors.ap_50">{figure_text(run["errors"]["ap_50"])}</td>'
                 for name, run in zip(names, with_errors)) + '</tr>']
    for key, title in ERROR_ROWS:
        parts.append(f'<tr><td>{esc(title)}</td>' + ''.join(
            f'<td class="n" data-run="{name}" data-key="errors.dap.{key}">'
            f'{_signed(run["errors"]["dap"][key])} ({run["errors"]["counts"][key]:,})</td>'
            for name, run in zip(names, with_errors)) + '</tr>')
    for key, title in (('fp', 'all false positives (special)'), ('fn', 'all missed boxes (special)')):
        parts.append(f'<tr><td>{esc(title)}</td>' + ''.join(
            f'<td class="n" data-run="{name}" data-key="errors.special_dap.{key}">'
            f'{_signed(run["errors"]["special_dap"][key])}</td>' for name, run in zip(names, with_errors)) + '</tr>')
    return '\n'.join(parts) + '</table><p class="note">dAP: AP@0.5 after fixing every error of the type, minus ' \
        'AP@0.5 (count in brackets). See docs/evaluation.md, "Where the AP goes".</p>'


def _signed(value: Optional[float]) -> str:
    return 'n/a' if value is None else f'+{value:.4f}' if value >= 0 else f'{value:.4f}'
