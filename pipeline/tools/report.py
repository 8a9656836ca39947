"""The visual run report: `<output>/report/index.html`, one self-contained page built from a run's
outputs (summary.json, the first dead letters, a bounded sample of the detections), never from the
input. Local runs build it at the end; after a Dataflow job:
`python -m pipeline.report --output ROOT`.
"""
import argparse
import glob
import html
import io
import itertools
import json
import os
import sys
import warnings
from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from pipeline.config.options import OPTIONS_BY_NAME, parse_mirrors, parse_prefixes
from pipeline.core.shards import scheme_of
from pipeline.io.sizes import open_image_file, resolve_allowed
from pipeline.tools import comparison_report, evaluation_report, slices_report
from pipeline.tools.drawing import (
    NATURAL_SIZE,
    blank_canvas,
    box_html,
    figure_data_uri,
    jpeg_data_uri,
    label_select,
    plural,
    section_html,
    shorten,
    why_not_shown,
)

DEFAULT_SAMPLES = OPTIONS_BY_NAME['report_samples'].default
SAMPLE_ROWS = 20_000  # detections read for the gallery, at most
DEAD_LETTERS_PER_KIND = 5
MAX_IMAGE_BYTES = 20 * 1024 * 1024
# Thumbnails are decoded at reduced size where the format allows it (JPEG); an image that would still
# decode to more pixels than this is not shown, so a small file cannot take the report's memory.
MAX_DECODED_PIXELS = 40_000_000
THUMBNAIL_SIDE = 960
SAMPLE_COLUMNS = ['prediction_run', 'image_uri', 'source_file', 'label', 'score', 'rank', 'x_min', 'y_min', 'x_max',
                  'y_max', 'px_x_min', 'px_y_min', 'px_x_max', 'px_y_max', 'image_width', 'image_height']
PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60)]


def read_json(path: str):
    with FileSystems.open(path) as handle:
        return json.loads(handle.read())


def run_files(summary: Mapping, name: str, pattern: Optional[str]) -> List[str]:
    """The files of one output, as the run's summary lists them (never a file that is not the run's);
    a summary without the list (an older run's) falls back to the pattern."""
    listed = summary.get('outputs', {}).get(name)
    if isinstance(listed, list):
        return sorted(listed)
    if not pattern:
        return []
    with warnings.catch_warnings():  # Python warns of glob.escape's "[[]" as a possible nested set
        warnings.simplefilter('ignore', FutureWarning)
        return sorted(m.path for result in FileSystems.match([pattern]) for m in result.metadata_list)


def first_dead_letters(paths: Sequence[str], per_kind: int = DEAD_LETTERS_PER_KIND) -> Dict[str, List[dict]]:
    """The first few dead letters of each kind, read line by line (never the whole file)."""
    found: Dict[str, List[dict]] = {}
    for path in paths:
        with FileSystems.open(path) as handle:
            for line in io.TextIOWrapper(handle, encoding='utf-8'):
                record = json.loads(line)
                bucket = found.setdefault(record['kind'], [])
                if len(bucket) < per_kind:
                    bucket.append(record)
    return found


def sample_detections(paths: Sequence[str], limit: int = SAMPLE_ROWS) -> List[dict]:
    """Up to `limit` detection rows, read batch by batch from the Parquet files through Beam's
    FileSystems (local or gs://), never the whole table."""
    rows: List[dict] = []
    for path in paths:
        with FileSystems.open(path) as handle:
            for batch in pq.ParquetFile(handle).iter_batches(columns=SAMPLE_COLUMNS):
                rows.extend(batch.to_pylist()[:limit - len(rows)])
                if len(rows) >= limit:
                    return rows
    return rows


def choose_gallery(rows: Sequence[dict], count: int) -> List[Tuple[Optional[str], str]]:
    """Up to `count` (prediction run, image URI) spread across runs, labels and scores: round-robin
    over each run's labels (most frequent first), within one the best, the worst, then through the
    range. Deterministic for the same rows."""
    by_label: Dict[Tuple[str, str], Dict[Tuple[Optional[str], str], float]] = {}
    for row in rows:
        key = (row.get('prediction_run'), row['image_uri'])
        scores = by_label.setdefault((key[0] or '', row['label'] or ''), {})
        scores[key] = max(scores.get(key, 0.0), row['score'])
    queues = []
    for group in sorted(by_label, key=lambda name: (-len(by_label[name]), name)):
        ranked = sorted(by_label[group].items(), key=lambda item: (-item[1], item[0][1], item[0][0] or ''))
        # Take the best, the worst, then the middle: the gallery shows the score range.
        spread = [ranked[i] for i in _spread_indices(len(ranked))]
        queues.append([key for key, _ in spread])
    chosen: List[Tuple[Optional[str], str]] = []
    for key in itertools.chain.from_iterable(itertools.zip_longest(*queues)):
        if key is not None and key not in chosen:
            chosen.append(key)
            if len(chosen) == count:
                break
    return chosen


def _spread_indices(n: int) -> List[int]:
    order, seen = [], set()
    for i in [0, n - 1] + [n * k // 8 for k in range(1, 8)] + list(range(n)):
        if 0 <= i < n and i not in seen:
            seen.add(i)
            order.append(i)
    return order


def first_line_rows(rows: Sequence[dict]) -> List[dict]:
    """The rows of the first prediction line among rows of one image (an image listed on several
    lines has a rank-0 row per line; rows are in output order)."""
    first_file = rows[0]['source_file'] if rows else None
    same_file = [r for r in rows if r['source_file'] == first_file]
    end = next((i for i, r in enumerate(same_file[1:], 1) if r['rank'] == 0), len(same_file))
    return same_file[:end]


class BoxOverlay(NamedTuple):
    """A detection's box over its picture, as fractions of the picture's width and height (the page
    draws it over the image, so a filter can hide it and any zoom keeps it in place)."""
    left: float
    top: float
    width: float
    height: float
    label: str
    score: float
    caption: str


def box_overlays(rows: Sequence[dict], canvas_size: Tuple[int, int],
                 full_size: Optional[Tuple[int, int]] = None) -> List[BoxOverlay]:
    """Each row's box, best first: the px_* columns as written over the image's `full_size` (the
    canvas's own size when unknown), or the normalized box where the table has no size."""
    boxes = []
    for row in sorted(rows, key=lambda r: r['rank']):
        if row['px_x_min'] is not None:
            width, height = full_size or canvas_size
            corners = (row['px_x_min'] / width, row['px_y_min'] / height, row['px_x_max'] / width,
                       row['px_y_max'] / height)
        else:
            corners = (row['x_min'], row['y_min'], row['x_max'], row['y_max'])
        x0, y0, x1, y1 = corners
        label = row['label'] or ''
        boxes.append(BoxOverlay(x0, y0, x1 - x0, y1 - y0, label, row['score'],
                                f'{shorten(row["label"] or row.get("label_id") or "?")} {row["score"]:.2f}'))
    return boxes


def overlay_html(boxes: Sequence[BoxOverlay], labels: Sequence[str]) -> str:
    """The boxes as elements over the picture, in each label's colour."""
    return ''.join(box_html((box.left, box.top, box.left + box.width, box.top + box.height),
                            colour_of(labels, box.label), box.caption,
                            {'label': box.label, 'score': f'{box.score:.6g}'}) for box in boxes)


def image_path(uri: str, allowed_scheme: str, mirrors: Mapping[str, str],
               allowed_prefixes: Optional[Sequence[str]] = None) -> str:
    """Where to read an image from, under the same rule as size probing; a mirrored URI must stay
    inside its mirror once resolved (`imgs/../secret` does not)."""
    for source, target in mirrors.items():
        if uri.startswith(source):
            mapped = target + uri[len(source):]
            if scheme_of(target) == 'file':
                mapped = os.path.abspath(mapped)
                target = os.path.abspath(target) + ('/' if target.endswith('/') else '')
            path = resolve_allowed(mapped, scheme_of(target), (target,))
            if path is None:
                raise PermissionError(f'{mapped} leads outside the mirror {target}')
            return path
    path = resolve_allowed(uri, allowed_scheme, tuple(allowed_prefixes or ()) or None)
    if path is None:
        raise PermissionError('outside what this run may open (--probe_allowed_prefixes, or the '
                              'scheme of --input)')
    return path


def load_image(uri: str, allowed_scheme: str, mirrors: Mapping[str, str],
               allowed_prefixes: Optional[Sequence[str]] = None,
               max_side: int = THUMBNAIL_SIDE) -> Tuple[Image.Image, Tuple[int, int]]:
    """(the image decoded at about `max_side`, its full size). JPEG decodes at a reduced scale; an
    image that would still decode to more than MAX_DECODED_PIXELS is refused before decoding."""
    with open_image_file(image_path(uri, allowed_scheme, mirrors, allowed_prefixes)) as handle:
        data = handle.read(MAX_IMAGE_BYTES + 1)
    if len(data) > MAX_IMAGE_BYTES:
        raise ValueError(f'larger than {MAX_IMAGE_BYTES // 2 ** 20} MB')
    image = Image.open(io.BytesIO(data))
    full_size = image.size
    if image.format == 'JPEG':
        image.draft('RGB', (max_side, max_side))
    decoded = image.size[0] * image.size[1]
    if decoded > MAX_DECODED_PIXELS:
        raise ValueError(f'{full_size[0]}x{full_size[1]} pixels: too large to decode for a thumbnail')
    image.load()
    return image, full_size


def label_chart(kept_by_label: Mapping[str, int]) -> Optional[str]:
    if not kept_by_label:
        return None
    labels = list(kept_by_label)[:30]
    figure = Figure(figsize=(7, 0.35 * len(labels) + 1.2))
    axes = figure.subplots()
    # Positions, not the labels themselves, go to barh: matplotlib would try each string as a date.
    positions = list(range(len(labels)))
    axes.barh(positions, [kept_by_label[label] for label in labels][::-1], color='#3c78b4')
    axes.set_yticks(positions, [shorten(label) for label in labels][::-1])
    axes.set_xlabel('kept detections')
    axes.set_title('Kept detections per label')
    return figure_data_uri(figure)


def score_chart(histogram: Mapping, thresholds: Mapping) -> str:
    edges = histogram['bin_edges']
    figure = Figure(figsize=(7, 3.2))
    axes = figure.subplots()
    lefts, widths = edges[:-1], [b - a for a, b in zip(edges, edges[1:])]
    axes.bar(lefts, histogram['all'], width=widths, align='edge', color='#c8c8c8', label='all annotations')
    axes.bar(lefts, histogram['kept'], width=widths, align='edge', color='#3c78b4', alpha=0.8, label='kept')
    axes.axvline(thresholds['score_threshold'], color='#d62728', linestyle='--',
                 label=f'score_threshold {thresholds["score_threshold"]}')
    for index, (label, value) in enumerate(sorted(thresholds.get('label_thresholds', {}).items())):
        axes.axvline(value, color=f'C{index + 1}', linestyle=':',
                     label=f'{shorten(label)} {value}')
    axes.set_xlim(0, 1)
    axes.set_ylim(bottom=0)  # an empty run has no bar: no negative ticks either
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel('score')
    axes.set_ylabel('annotations')
    axes.set_title('Scores before any filter, and kept')
    axes.legend(fontsize=8)
    return figure_data_uri(figure)


def summary_rows(summary: Mapping) -> List[Tuple[str, str]]:
    files, lines, det = summary['files'], summary['lines'], summary['detections']
    dead, sizes = summary['dead_letters'], summary['image_sizes']
    rows = [('result files', files['result']), ('error files', files['error']),
            ('other files', files['other']), ('lines read', lines['read']), ('blank lines', lines['blank']),
            ('images written', summary['images_written']), ('detections in', det['in']),
            ('detections kept', det['kept'])]
    rows += [(f'removed by {step}', n) for step, n in det.get('removed_by', {}).items()]
    rows += [('dead letters', dead['total'])]
    rows += [(f'dead letters: {kind}', n) for kind, n in dead.items() if kind != 'total' and n]  # the kinds met
    rows += [('image sizes known', sizes['known']), ('image sizes unknown', sizes['unknown']),
             ('duplicate image URIs', summary['duplicate_image_uris'])]
    return [(name, f'{value:,}' if isinstance(value, int) else str(value)) for name, value in rows]


SECTIONS = (('run', 'Run'), ('summary-section', 'Summary'), ('labels', 'Labels and scores'),
            ('gallery', 'Gallery'), ('evaluation', 'Evaluation'), ('slices', 'Slices'), ('comparison', 'What changed'),
            ('dead-letters', 'Dead letters'))


# The page's script, inline (it fetches nothing). Tables of class "sortable" sort by the column whose
# heading (in the last row of the table's head) is clicked: by each cell's data-sort number (largest
# first, again: smallest first; cells without one last), else by text. A gallery image enlarges on a
# click (again, or Escape: back). The plain gallery's filters show the images with a box of a label,
# scored at least so much, of a run; the evaluation galleries' hide boxes by outcome, error type, label
# and score, and other runs' galleries.
# Sections fold under their heading and open when a link leads into them.
SCRIPT = """
var lightbox = document.getElementById('lightbox'), enlarged = null;
document.querySelectorAll('figure img').forEach(function (image) {
  image.style.cursor = 'zoom-in';
  image.addEventListener('click', function () {
    var figure = image.closest('figure'), frame = image.closest('.frame');
    var copy = frame ? frame.cloneNode(true) : image.cloneNode(true);
    if (enlarged) { enlarged.remove(); }
    enlarged = copy;
    lightbox.insertBefore(copy, lightbox.firstChild);
    var caption = figure.querySelector('figcaption');
    lightbox.querySelector('p').textContent = caption ? caption.textContent : '';
    lightbox.hidden = false;
  });
});
lightbox.addEventListener('click', function () { lightbox.hidden = true; });
document.addEventListener('keydown', function (event) { if (event.key === 'Escape') { lightbox.hidden = true; } });
function filterGallery() {
  var label = document.getElementById('filter-label').value, runChoice = document.getElementById('filter-run');
  var run = runChoice ? runChoice.value : '*';
  var least = parseFloat(document.getElementById('filter-score').value) || 0, shown = 0;
  var figures = document.querySelectorAll('#gallery-plain figure');
  figures.forEach(function (figure) {
    var kept = 0;
    figure.querySelectorAll('.box').forEach(function (box) {
      var keep = (label === '*' || box.dataset.label === label) && parseFloat(box.dataset.score) >= least;
      box.hidden = !keep;
      kept += keep ? 1 : 0;
    });
    var labels = figure.dataset.labels.split('|');
    var show = (label === '*' || labels.indexOf(label) >= 0) && parseFloat(figure.dataset.best) >= least &&
      (run === '*' || figure.dataset.run === run);
    figure.hidden = !(show && (kept > 0 || !figure.querySelector('.box')));
    shown += figure.hidden ? 0 : 1;
  });
  document.getElementById('filter-count').textContent = shown + ' of ' + figures.length + ' shown';
}
function filterOutcomes() {
  var shown = {}, type = document.getElementById('filter-error-type').value;
  var label = document.getElementById('filter-eval-label').value;
  var least = parseFloat(document.getElementById('filter-eval-score').value) || 0;
  var runChoice = document.getElementById('filter-eval-run'), run = runChoice ? runChoice.value : '*';
  document.querySelectorAll('#outcome-filters input[type=checkbox]').forEach(function (box) {
    shown[box.dataset.outcome] = box.checked;
  });
  document.querySelectorAll('.gallery[data-kind] .box').forEach(function (box) {
    var outcome = box.dataset.outcome, detection = outcome === 'tp' || outcome === 'fp';
    box.hidden = !shown[outcome] || (outcome === 'fp' && type !== '*' && box.dataset.errorType !== type) ||
      (label !== '*' && box.dataset.label !== label) || (detection && parseFloat(box.dataset.score) < least);
  });
  document.querySelectorAll('.run-galleries').forEach(function (galleries) {
    galleries.hidden = run !== '*' && galleries.dataset.run !== run;
  });
}
if (document.getElementById('outcome-filters')) {
  document.querySelectorAll('#outcome-filters input, #outcome-filters select').forEach(function (control) {
    control.addEventListener(control.type === 'number' ? 'input' : 'change', filterOutcomes);
  });
}
if (document.getElementById('filter-label')) {
  document.querySelectorAll('#filter-label, #filter-run').forEach(function (control) {
    control.addEventListener('change', filterGallery);
  });
  document.getElementById('filter-score').addEventListener('input', filterGallery);
  filterGallery();
}
document.querySelectorAll('input.natural-size').forEach(function (control) {
  control.addEventListener('change', function () {
    document.body.classList.toggle('natural', control.checked);
    document.querySelectorAll('input.natural-size').forEach(function (other) { other.checked = control.checked; });
  });
});
// A folded section opens when a link (the table of contents) or the address leads into it.
function unfold(hash) {
  var target = hash && hash.length > 1 && document.getElementById(decodeURIComponent(hash.slice(1)));
  for (var section = target && target.closest('details'); section; section = section.parentElement.closest('details')) {
    section.open = true;
  }
}
document.querySelectorAll('a[href^="#"]').forEach(function (link) {
  link.addEventListener('click', function () { unfold(link.getAttribute('href')); });
});
window.addEventListener('hashchange', function () { unfold(location.hash); });
unfold(location.hash);
document.querySelectorAll('table.sortable').forEach(function (table) {
  var headings = table.tHead.rows[table.tHead.rows.length - 1].cells;  // the last row: one per column
  Array.prototype.forEach.call(headings, function (heading, column) {
    heading.style.cursor = 'pointer';
    heading.title = 'sort by this column';
    heading.addEventListener('click', function () {
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var largestFirst = heading.dataset.order !== 'largest';
      heading.dataset.order = largestFirst ? 'largest' : 'smallest';
      rows.sort(function (a, b) {
        var x = a.cells[column], y = b.cells[column];
        var p = x && x.dataset.sort, q = y && y.dataset.sort;
        if (p === undefined && q === undefined) {
          var order = (x ? x.textContent : '').localeCompare(y ? y.textContent : '');
          return largestFirst ? order : -order;
        }
        if (p === undefined) { return 1; }
        if (q === undefined) { return -1; }
        return largestFirst ? q - p : p - q;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def table_of_contents(evaluated: bool, compared: bool = False, sliced: bool = False) -> str:
    """The page's sections, always in view at the top (a plain link bar: no script)."""
    shown = {'evaluation': evaluated, 'comparison': compared, 'slices': sliced}
    links = ''.join(f'<a href="#{anchor}">{title}</a>' for anchor, title in SECTIONS if shown.get(anchor, True))
    return f'<nav id="toc">{links}</nav>'


def warnings_banner(warnings: Sequence[Mapping]) -> str:
    """The run's warnings, at the top of the page, each with its fix."""
    if not warnings:
        return ''
    esc = html.escape
    items = ''.join(f'<li><strong>{esc(w["message"])}</strong><br>Fix: {esc(w["fix"])} '
                    f'<code>[{esc(w["code"])}]</code></li>' for w in warnings)
    return (f'<div id="warnings" role="alert"><strong>{len(warnings)} warning{"s" if len(warnings) > 1 else ""}'
            f': the run finished, but its answer may not be what you expect</strong><ul>{items}</ul></div>')


def figure_cards(summary: Mapping) -> List[Tuple[str, str, str]]:
    """(key in summary.json, name, value shown) of the figures at the top of the page."""
    cards = [('lines.read', 'lines read', f'{summary["lines"]["read"]:,}'),
             ('images_written', 'images', f'{summary["images_written"]:,}'),
             ('detections.kept', 'detections kept', f'{summary["detections"]["kept"]:,}'),
             ('dead_letters.total', 'dead letters', f'{summary["dead_letters"]["total"]:,}')]
    for run in (summary.get('evaluation') or {}).get('runs', []):
        value = 'n/a' if run['map'] is None else f'{run["map"]:.4f}'
        cards.append((f'evaluation.map.{run["prediction_run"]}', f'mAP, {run["prediction_run"] or "(no run folder)"}',
                      value))
    return cards


def run_header(summary: Mapping) -> str:
    """Which versions ran, when, for how long, on what, with which options (the summary's `run`), and
    the run's figures as cards."""
    esc = html.escape
    run = summary.get('run') or {}
    duration = run.get('duration_s')
    facts = [('tool', f'prediction-tables {run.get("version", "?")}'), ('Apache Beam', run.get('beam_version', '?')),
             ('started', run.get('started') or '?'),
             ('duration', '?' if duration is None else f'{duration:,.1f} s'),
             ('input', str(summary['input'])), ('output', str((run.get('options') or {}).get('output', '?')))]
    parts = ['<section id="run"><dl class="facts">']
    parts += [f'<div><dt>{esc(name)}</dt><dd data-key="run.{esc(name)}">{esc(value)}</dd></div>'
              for name, value in facts]
    parts.append('</dl><div class="cards">')
    parts += [f'<div class="card"><span class="value" data-key="{esc(key)}">{esc(value)}</span>'
              f'<span class="name">{esc(name)}</span></div>' for key, name, value in figure_cards(summary)]
    parts.append('</div>')
    given = run.get('options') or {}
    if run:
        parts.append(f'<details id="options"><summary>Options: {len(given)} given (highlighted), every other one '
                     'at its default</summary><dl class="options">')
        parts += [f'<div class="given"><dt>--{esc(name)}</dt><dd>{esc(given[name])}</dd></div>' if name in given else
                  f'<div><dt>--{esc(name)}</dt><dd>{esc(default_text(option.default))}</dd></div>'
                  for name, option in OPTIONS_BY_NAME.items()]
        parts.append(f'</dl><p>Command line: <code>{esc(" ".join(run.get("command_line") or []))}</code></p>'
                     '</details>')
    parts.append('</section>')
    return ''.join(parts)


def default_text(default) -> str:
    """An option's default as one would write it on the command line."""
    if default is None:
        return '(none)'
    if isinstance(default, (tuple, list, frozenset, set)):
        return ','.join(f'{value:.10g}' if isinstance(value, float) else str(value) for value in default) or '(none)'
    if isinstance(default, dict):
        return ','.join(f'{key}={value}' for key, value in default.items()) or '(none)'
    return str(default).lower() if isinstance(default, bool) else str(default)


def reconciliation_class(summary: Mapping) -> str:
    """Red when it fails, amber when it holds over nothing or under warnings, green otherwise."""
    if not summary['reconciliation']['holds']:
        return 'bad'
    return 'warn' if summary.get('warnings') or not summary['lines']['non_blank'] else 'ok'


def gallery_controls(labels: Sequence[str], runs: Sequence[str] = ()) -> str:
    """The label colours of the boxes, and filters of the gallery's images (a label among their boxes,
    the best score at least, and their prediction run when there are several); they work offline
    (SCRIPT)."""
    esc = html.escape
    legend = ''.join(f'<span class="swatch" style="border-color:rgb{colour_of(labels, label)}">{esc(label or "?")}'
                     f'</span>' for label in labels)
    run_filter = '' if len(runs) < 2 else (
        ' in <select id="filter-run"><option value="*">any prediction run</option>' + ''.join(
            f'<option value="{esc(run)}">{esc(run or "(no run folder)")}</option>' for run in runs) + '</select>')
    return (f'<p class="legend">{legend}</p><p class="filters">Show images with a box of '
            f'{label_select("filter-label", labels)} scored at least '
            '<input id="filter-score" type="number" min="0" max="1" step="0.05" value="0">'
            f'{run_filter} <span id="filter-count"></span> {NATURAL_SIZE}</p>')



def colour_of(labels: Sequence[str], label: str) -> Tuple[int, int, int]:
    """A label's colour: its place among the gallery's labels, in PALETTE."""
    return PALETTE[list(labels).index(label) % len(PALETTE)] if label in labels else PALETTE[0]


def render_html(summary, label_png, score_png, gallery, dead, evaluation_html: str = '',
                labels: Sequence[str] = (), comparison_html: str = '', slices_html: str = '') -> str:
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Prediction run report</title>',
        '<style>body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse}'
        'td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}td.n{text-align:right}'
        '.ok{color:#2a7d2a}.bad{color:#b00}.gallery{display:flex;flex-wrap:wrap;gap:12px}'
        '.gallery h4{flex-basis:100%;margin:8px 0 0}'
        'figure{margin:0;max-width:480px}figure img{max-width:480px;border:1px solid #999}'
        'body.natural figure{max-width:100%}body.natural figure img{max-width:100%}'
        'figcaption{font-size:12px;word-break:break-all}pre{white-space:pre-wrap;word-break:break-all;'
        'font-size:12px;background:#f4f4f4;padding:4px}.warn{color:#8a5a00}'
        '#warnings{background:#fff4d6;border:2px solid #e0a000;padding:8px 16px;margin:1em 0}'
        '#warnings li{margin:4px 0}.facts{display:flex;flex-wrap:wrap;gap:4px 24px;margin:0}'
        '.facts dt{font-size:12px;color:#666}.facts dd{margin:0;font-family:monospace;word-break:break-all}'
        '.cards{display:flex;flex-wrap:wrap;gap:12px;margin:12px 0}.card{border:1px solid #ccc;border-radius:6px;'
        'padding:8px 14px;min-width:110px}.card .value{display:block;font-size:22px;font-weight:bold}'
        '.card .name{font-size:12px;color:#555}.options div{display:flex;gap:12px}.options dd{margin:0}'
        '.given dt{font-weight:bold;background:#fff4d6}#toc{position:sticky;top:0;z-index:1;background:#fff;'
        'border-bottom:1px solid #ccc;padding:6px 0;font-size:14px}#toc a{margin-right:16px}'
        'h2{scroll-margin-top:40px}.swatch{border:3px solid;padding:0 6px;margin:0 8px 4px 0;font-size:13px;'
        'display:inline-block;white-space:nowrap}'
        '#lightbox{position:fixed;inset:0;background:rgba(0,0,0,.85);z-index:2;display:flex;flex-direction:column;'
        'align-items:center;justify-content:center;cursor:zoom-out}#lightbox[hidden]{display:none}'
        '#lightbox img{max-width:95vw;max-height:85vh}#lightbox p{color:#fff;font-size:14px}'
        '.frame{position:relative;display:inline-block;line-height:0}'
        '.frame img{display:block}.box{position:absolute;border:2px solid;box-sizing:border-box}'
        '.box span{position:absolute;left:-2px;bottom:100%;font-size:12px;line-height:15px;color:#fff;'
        'padding:0 3px;white-space:nowrap}.box span.in{bottom:auto;top:-2px}.box span.end{left:auto;right:-2px}'
        'details.section>summary{cursor:pointer;margin:1em 0 .5em}'
        'details.section>summary h2{display:inline;margin:0}th.run-name{text-align:center;word-break:break-all}'
        '</style></head><body>',
        table_of_contents(bool(evaluation_html), bool(comparison_html), bool(slices_html)),
        '<h1>Prediction run report</h1>',
        warnings_banner(summary.get('warnings') or []),
        run_header(summary),
        section_html('summary-section', 'Run summary', summary_html(summary)),
        section_html('labels', 'Labels and scores', ''.join(
            [f'<img alt="Kept detections per label" src="{label_png}">' if label_png else '',
             f'<img alt="Score histogram" src="{score_png}">'])),
        section_html('gallery', 'Gallery', gallery_html(gallery, labels)),
        evaluation_html,
        slices_html,
        comparison_html,
        section_html('dead-letters', 'Dead letters', dead_letters_html(summary, dead)),
    ]
    parts.append(f'<div id="lightbox" hidden><p></p></div><script>{SCRIPT}</script></body></html>')
    return '\n'.join(parts)


def summary_html(summary: Mapping) -> str:
    """Whether the run's counts reconcile, and its figures."""
    esc = html.escape
    reconciliation = summary['reconciliation']
    return ''.join([
        f'<p class="{reconciliation_class(summary)}" id="reconciliation">'
        f'Reconciliation {"holds" if reconciliation["holds"] else "FAILS"}: {esc(reconciliation["text"])}</p>',
        '<table id="summary"><tr><th>figure</th><th>value</th></tr>',
        *(f'<tr><td>{esc(name)}</td><td class="n">{esc(value)}</td></tr>' for name, value in summary_rows(summary)),
        '</table>'])


def gallery_html(gallery: Sequence[Mapping], labels: Sequence[str]) -> str:
    """The sampled prediction lines' pictures with their boxes over them, and the filters."""
    esc = html.escape
    runs = sorted({item.get('run') or '' for item in gallery})  # the filter offers those shown
    parts = [f'<p>{plural(len(gallery), "prediction line", "prediction lines")}, boxes drawn from the rows as '
             'written; click an image to enlarge it.</p>', gallery_controls(labels, runs),
             '<div class="gallery" id="gallery-plain">']
    for item in gallery:
        caption = (f'{esc(item["uri"])} &middot; {plural(item["boxes"], "box", "boxes")}'
                   + (f' &middot; {esc(item["note"])}' if item.get('note') else ''))
        css = ' class="unreadable"' if item.get('unreadable') else ''
        parts.append(f'<figure{css} data-labels="{esc("|".join(item.get("labels", [])))}" '
                     f'data-run="{esc(item.get("run") or "")}" data-best="{item.get("best", 0.0):.6g}">'
                     f'<div class="frame"><img alt="{esc(item["uri"])}" src="{item["image"]}">'
                     f'{item.get("overlay", "")}</div><figcaption>{caption}</figcaption></figure>')
    parts.append('</div>')
    return '\n'.join(parts)


def dead_letters_html(summary: Mapping, dead: Mapping[str, Sequence[dict]]) -> str:
    """The first dead letters of each kind, with their reason and the start of their payload."""
    esc = html.escape
    if not dead:
        return '<p>None.</p>'
    parts = []
    for kind, records in sorted(dead.items()):
        parts.append(f'<h3>{esc(kind)} ({summary["dead_letters"].get(kind, len(records))})</h3><ul>')
        for record in records:
            payload = (record.get('payload') or '')[:300]
            parts.append(f'<li><code>{esc(record.get("source_file") or "")}</code>: '
                         f'{esc(record.get("error_message") or "")}<pre>{esc(payload)}</pre></li>')
        parts.append('</ul>')
    return ''.join(parts)


def build_report(output: str, samples: int = DEFAULT_SAMPLES, mirrors: Optional[Mapping[str, str]] = None,
                 dead_letter_root: Optional[str] = None,
                 allowed_prefixes: Optional[Sequence[str]] = None,
                 summary_path: Optional[str] = None) -> str:
    """Writes `<output>/report/index.html` from the run's summary (default `<output>/summary.json`)
    and the files it lists; returns the page's path."""
    summary = read_json(summary_path or FileSystems.join(output, 'summary.json'))
    rows = sample_detections(run_files(summary, 'detections',
                                       FileSystems.join(glob.escape(output), 'detections', '*.parquet')))
    labels = sorted({row['label'] or '' for row in rows})
    # The scheme of what the run really read (an operation JSON on disk may point to gs://).
    allowed_scheme = scheme_of(summary.get('input_pattern') or summary['input'])
    gallery = []
    for run, uri in choose_gallery(rows, samples):
        line_rows = first_line_rows([r for r in rows if r['image_uri'] == uri and r['prediction_run'] == run])
        item = {'uri': uri, 'run': run, 'boxes': len(line_rows),
                'labels': sorted({row['label'] or '' for row in line_rows}),
                'best': max((row['score'] for row in line_rows), default=0.0)}
        full_size: Optional[Tuple[int, int]]
        try:
            image, full_size = load_image(uri, allowed_scheme, mirrors or {}, allowed_prefixes)
            if line_rows and line_rows[0]['px_x_min'] is None:
                item['note'] = 'size unknown in the table: boxes scaled to the image itself'
        except Exception as exc:  # the boxes still show, on a canvas of the image's shape
            known = line_rows[0]['image_width'] if line_rows else None
            full_size = (known, line_rows[0]['image_height']) if known else None
            image = blank_canvas(full_size)
            item.update(note=why_not_shown(exc), unreadable=True)
        item['image'] = jpeg_data_uri(image, max_side=THUMBNAIL_SIDE)
        item['overlay'] = overlay_html(box_overlays(line_rows, image.size, full_size), labels)
        gallery.append(item)
    dead_pattern = FileSystems.join(glob.escape(dead_letter_root or FileSystems.join(output, 'dead_letter')),
                                    '*.jsonl')
    evaluation_html = (evaluation_section(summary, allowed_scheme, mirrors or {}, allowed_prefixes, samples)
                       if 'evaluation' in summary else '')
    comparison_html = (comparison_section(summary, allowed_scheme, mirrors or {}, allowed_prefixes)
                       if 'comparison' in summary else '')
    slices_html = ('' if 'evaluation' in summary or not run_files(summary, 'evaluation_slices', None) else
                   slices_report.detection_slices_section(
                       evaluation_report.read_table(run_files(summary, 'evaluation_slices', None))))
    page = render_html(summary, label_chart(summary.get('kept_by_label', {})),
                       score_chart(summary['score_histogram'], summary['thresholds']),
                       gallery, first_dead_letters(run_files(summary, 'dead_letters', dead_pattern)),
                       evaluation_html, labels, comparison_html, slices_html)
    path = FileSystems.join(output, 'report', 'index.html')
    with FileSystems.create(path, mime_type='text/html') as handle:
        handle.write(page.encode('utf-8'))
    return path


def evaluation_section(summary: Mapping, allowed_scheme: str, mirrors: Mapping[str, str],
                       allowed_prefixes: Optional[Sequence[str]], samples: int) -> str:
    """The Evaluation section, from the evaluation files the summary lists."""
    metrics = read_json(run_files(summary, 'evaluation_metrics', None)[0])
    confidence = evaluation_report.read_table(run_files(summary, 'evaluation_confidence', None))
    cells = evaluation_report.read_table(run_files(summary, 'evaluation_confusion', None))
    runs = metrics['runs']
    charts = {'ap': evaluation_report.ap_chart(runs), 'curves': evaluation_report.curve_charts(confidence, runs)}
    order = evaluation_report.confusion_labels(cells)  # one label order for every run's matrix
    confusion = {name: chart for name, chart in (
        (run['prediction_run'] or '(no run folder)', evaluation_report.confusion_chart(cells, run['prediction_run'],
                                                                                      order))
        for run in runs) if chart}
    per_run = max(1, min(evaluation_report.GALLERY_PER_RUN, samples // max(1, 2 * len(runs))))
    gallery = []
    for image in evaluation_report.choose_gallery_images(run_files(summary, 'evaluation_matches', None), per_run):
        note = None
        try:
            picture, _ = load_image(image.image_uri, allowed_scheme, mirrors, allowed_prefixes)
        except Exception as exc:  # the boxes still show, on a square canvas (no size in the matches)
            picture, note = blank_canvas(None), why_not_shown(exc)
        gallery.append((image, jpeg_data_uri(picture, max_side=THUMBNAIL_SIDE), note))  # boxes: drawn over it
    confused = {run['prediction_run'] or '(no run folder)':
                evaluation_report.most_confused(cells, run['prediction_run']) for run in runs}
    return evaluation_report.render_section(metrics, charts, confusion, gallery, confused,
                                            slices_report.slices_html(metrics))


def comparison_section(summary: Mapping, allowed_scheme: str, mirrors: Mapping[str, str],
                       allowed_prefixes: Optional[Sequence[str]]) -> str:
    """The "What changed" section, from the summary's comparison and the comparison table."""
    changed, swaps = comparison_report.read_changes(run_files(summary, 'comparison', None))
    gallery = []
    for image in changed:
        note = None
        try:
            picture, _ = load_image(image.image_uri, allowed_scheme, mirrors, allowed_prefixes)
        except Exception as exc:  # the boxes still show, on a square canvas (no size in the table)
            picture, note = blank_canvas(None), why_not_shown(exc)
        gallery.append((image, jpeg_data_uri(picture, max_side=THUMBNAIL_SIDE), note))
    return comparison_report.render_section(summary['comparison'], gallery, swaps)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--output', required=True, help='the output root of a finished run')
    parser.add_argument('--dead_letter', help='the dead-letter root, if not <output>/dead_letter')
    parser.add_argument('--summary', help='the run summary, if not <output>/summary.json')
    parser.add_argument('--report_samples', type=int, default=DEFAULT_SAMPLES)
    parser.add_argument('--report_image_mirror', help='SOURCE_PREFIX=MIRROR_PREFIX[,...]')
    parser.add_argument('--probe_allowed_prefixes',
                        help='comma-separated prefixes whose images may be opened (as for the run)')
    args = parser.parse_args(argv)
    mirrors = parse_mirrors(args.report_image_mirror) if args.report_image_mirror else {}
    prefixes = parse_prefixes(args.probe_allowed_prefixes) if args.probe_allowed_prefixes else None
    print(build_report(args.output, args.report_samples, mirrors, args.dead_letter, prefixes,
                       summary_path=args.summary))
    return 0


if __name__ == '__main__':
    sys.exit(main())
