"""The report's "What changed" section, from summary.json's `comparison` and the comparison table: per
run against the base, per label how the boxes changed and how far the runs agree, the label pairs
most often swapped, and a gallery of the images that changed most, both runs' boxes over the picture
(base dashed, run solid)."""
import collections
import heapq
import html
import itertools
from typing import Counter, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from pipeline.tools.drawing import NATURAL_SIZE, box_html, plural, section_html, shorten

OUTCOME_COLOURS = {'same': (44, 160, 44), 'relabelled': (148, 103, 189), 'moved': (255, 127, 14),
                   'added': (214, 39, 40), 'removed': (31, 119, 180)}
COLUMNS = ['prediction_run', 'image_uri', 'outcome', 'label', 'base_label', 'score', 'base_score', 'iou',
           'x_min', 'y_min', 'x_max', 'y_max', 'base_x_min', 'base_y_min', 'base_x_max', 'base_y_max']
GALLERY_PER_RUN = 8
SWAPS_SHOWN = 5


class ChangedImage(NamedTuple):
    prediction_run: Optional[str]
    image_uri: str
    changes: int  # its boxes that are not `same`
    rows: List[dict]


def _batches(paths: Sequence[str]):
    for path in paths:
        with FileSystems.open(path) as handle:
            yield from pq.ParquetFile(handle).iter_batches(columns=COLUMNS, batch_size=65536)


def read_changes(paths: Sequence[str], per_run: int = GALLERY_PER_RUN
                 ) -> Tuple[List[ChangedImage], Dict[Optional[str], Dict[Tuple[str, str], int]]]:
    """(per run, the images with the most boxes that changed, with all their rows; per run, how often
    each (base label, run label) pair was swapped): two passes over the table, holding counts per image
    of one batch at a time and the chosen images' rows."""
    heaps: Dict[Optional[str], list] = {}
    swaps: Dict[Optional[str], Counter] = collections.defaultdict(collections.Counter)
    order = itertools.count()
    for batch in _batches(paths):
        table = pa.Table.from_batches([batch])
        changed = table.filter(pc.not_equal(table['outcome'], 'same'))
        per_image: Dict[Tuple[Optional[str], str], int] = {}
        for run, uri, outcome, label, base_label in zip(*(changed[name].to_pylist() for name in (
                'prediction_run', 'image_uri', 'outcome', 'label', 'base_label'))):
            per_image[run, uri] = per_image.get((run, uri), 0) + 1
            if outcome == 'relabelled':
                swaps[run][base_label or '', label or ''] += 1
        for (run, uri), count in per_image.items():  # an image's rows are together: one batch, or two
            heap = heaps.setdefault(run, [])
            item = (count, uri, -next(order))
            if len(heap) < per_run:
                heapq.heappush(heap, item)
            elif item > heap[0]:
                heapq.heapreplace(heap, item)
    wanted = {(run, uri): count for run, heap in heaps.items() for count, uri, _ in heap}
    rows: Dict[Tuple[Optional[str], str], List[dict]] = {key: [] for key in wanted}
    uris = pa.array(sorted({uri for _, uri in wanted}), type=pa.string())
    for batch in _batches(paths) if wanted else ():
        table = pa.Table.from_batches([batch])
        for row in table.filter(pc.is_in(table['image_uri'], value_set=uris)).to_pylist():
            if (row['prediction_run'], row['image_uri']) in rows:
                rows[row['prediction_run'], row['image_uri']].append(row)
    chosen = sorted(wanted.items(), key=lambda item: (item[0][0] or '', -item[1], item[0][1]))
    return [ChangedImage(run, uri, count, rows[run, uri]) for (run, uri), count in chosen], dict(swaps)


def changes_overlay(rows: Sequence[dict]) -> str:
    """Both runs' boxes over the picture: the base's dashed, the run's solid, coloured by outcome,
    each captioned with its label and score (and the base's label on a relabelled box)."""
    parts = []
    for row in rows:
        colour = OUTCOME_COLOURS[row['outcome']]
        if row['base_x_min'] is not None:
            caption = f'{shorten(row["base_label"] or "?")} {row["base_score"]:.2f}' if row['outcome'] == 'removed' \
                else ''
            parts.append(box_html((row['base_x_min'], row['base_y_min'], row['base_x_max'], row['base_y_max']), colour,
                                  caption, {'outcome': row['outcome'], 'side': 'base'}, border='dashed'))
        if row['x_min'] is not None:
            caption = f'{shorten(row["label"] or "?")} {row["score"]:.2f}'
            if row['outcome'] == 'relabelled':
                caption += f' (base: {shorten(row["base_label"] or "?")})'
            parts.append(box_html((row['x_min'], row['y_min'], row['x_max'], row['y_max']), colour, caption,
                                  {'outcome': row['outcome'], 'side': 'run'}))
    return ''.join(parts)


def _name(run: Optional[str]) -> str:
    return run or '(no run folder)'


def _number(value: Optional[float]) -> str:
    return 'n/a' if value is None else f'{value:.4f}'


# With ground truth: who was right on the changed boxes, and the images each side gets right alone.
JUDGED = (('fixed', 'fixed'), ('broken', 'broken'), ('both_wrong', 'both wrong'),
          ('images_fixed', 'images now right'), ('images_broken', 'images now wrong'))


def labels_table(run: Mapping, index: int) -> str:
    """Per label: the boxes of each side, each outcome, and the agreement, lowest agreement first;
    with ground truth, who was right; sortable by any column."""
    esc = html.escape
    judged = [(key, name) for key, name in JUDGED if all(key in entry for entry in run['labels'])]
    head = ('<tr><th>label</th><th>agreement</th><th>base boxes</th><th>run boxes</th><th>same</th>'
            '<th>relabelled (from)</th><th>relabelled (to)</th><th>moved</th><th>added</th><th>removed</th>'
            + ''.join(f'<th>{name}</th>' for _, name in judged) + '</tr>')
    rows = []
    for entry in sorted(run['labels'], key=lambda e: (e['agreement'] if e['agreement'] is not None else 2,
                                                      e['label'] or '')):
        agreement = entry['agreement']
        cells = [f'<td>{esc(entry["label"] or "(no label)")}</td>',
                 f'<td class="n" data-key="agreement" data-label="{esc(entry["label"] or "")}"'
                 + ('' if agreement is None else f' data-sort="{agreement:.10g}"') + f'>{_number(agreement)}</td>']
        cells += [f'<td class="n" data-sort="{entry[key]}" data-key="{key}">{entry[key]:,}</td>' for key in (
            'base_boxes', 'run_boxes', 'same', 'relabelled', 'relabelled_in', 'moved', 'added', 'removed',
            *(key for key, _ in judged))]
        rows.append(f'<tr>{"".join(cells)}</tr>')
    return (f'<table id="comparison-labels-{index}" class="sortable" data-run="{esc(_name(run["prediction_run"]))}">'
            f'<thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>')


def render_section(comparison: Mapping, gallery: Sequence[Tuple[ChangedImage, str, Optional[str]]],
                   swaps: Mapping[Optional[str], Mapping[Tuple[str, str], int]]) -> str:
    """The "What changed" section. `gallery`: (image, picture data URI, note when it is a blank canvas)."""
    esc = html.escape
    base = _name(comparison['base_run'])
    parts = [f'<p>Each run against the base run <strong>{esc(base)}</strong>, image by image on the images both '
             f'have, boxes matched at IoU {comparison["eval_iou"]:g}: same, relabelled, moved (the same label, IoU '
             '0.1 up to that), added (only the run has it), removed (only the base has it). Agreement: the F1 of '
             'the run\'s boxes against the base\'s.'
             + (' Against the ground truth, each changed box is fixed (the run is right where the base was not), '
                'broken (the other way round) or both wrong; "images now right": the images the run gets right for '
                'the label (no false positive, no missed box) where the base did not, "now wrong" the other way.'
                if comparison.get('ground_truth') else '') + '</p>']
    legend = '<p class="legend">' + ' '.join(
        f'<span style="border:3px solid rgb{colour};padding:0 6px">{outcome}</span>'
        for outcome, colour in OUTCOME_COLOURS.items()) + ' base boxes dashed, the run\'s solid</p>'
    for index, run in enumerate(comparison['runs']):
        name = _name(run['prediction_run'])
        parts.append(f'<h3>{esc(name)} against {esc(base)}</h3>')
        parts.append(f'<p class="comparison-facts" data-run="{esc(name)}">agreement <strong data-key="agreement">'
                     f'{_number(run["agreement"])}</strong>; {run["changed"]:,} of '
                     f'{plural(run["compared"], "image", "images")} compared changed; images only in the run '
                     f'{run["only_in_run"]:,}, only in the base {run["only_in_base"]:,}'
                     + (f'; against the ground truth: fixed <strong data-key="fixed">{run["fixed"]:,}</strong>, broken '
                        f'<strong data-key="broken">{run["broken"]:,}</strong>, both wrong {run["both_wrong"]:,}'
                        if comparison.get('ground_truth') else '') + '</p>')
        parts.append(labels_table(run, index))
        swapped = sorted((swaps.get(run['prediction_run']) or {}).items(), key=lambda item: (-item[1], item[0]))
        if swapped:
            parts.append('<p>Most often relabelled:</p><ol class="swaps">' + ''.join(
                f'<li>{esc(before)} became {esc(after)}: {plural(count, "box", "boxes")}</li>'
                for (before, after), count in swapped[:SWAPS_SHOWN]) + '</ol>')
        mine = [item for item in gallery if item[0].prediction_run == run['prediction_run']]
        parts.append(f'<h4>The images that changed most</h4>{legend}<p class="filters">{NATURAL_SIZE}</p>'
                     f'<div class="gallery" id="gallery-changes-{index}" data-run="{esc(name)}">')
        if not mine:
            parts.append('<p>None.</p>')
        for image, picture, note in mine:
            caption = (f'{esc(image.image_uri)} &middot; {plural(image.changes, "change", "changes")}'
                       + (f' &middot; {esc(note)}' if note else ''))
            css = ' class="unreadable"' if note else ''
            parts.append(f'<figure{css}><div class="frame"><img alt="{esc(image.image_uri)}" src="{picture}">'
                         f'{changes_overlay(image.rows)}</div><figcaption>{caption}</figcaption></figure>')
        parts.append('</div>')
    return section_html('comparison', 'What changed', '\n'.join(parts))
