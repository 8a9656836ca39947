"""The report's slices: with ground truth, the "Where the model is weak" part of the Evaluation
section (per attribute of --slice_by, each run's AP per slice value with its support, worst first);
without, a Slices section of its own (each slice's detections per image and scores)."""
import html
from typing import Mapping, Optional, Sequence

from pipeline.tools.drawing import section_html
from pipeline.tools.evaluation_report import figure_text


def slices_html(metrics: Mapping) -> str:
    """A table per attribute sliced by (metrics.json's `slices`); empty without slices."""
    entries = metrics.get('slices')
    if not entries:
        return ''
    parts = ['<h3 id="slices">Where the model is weak: slices</h3>'
             '<p class="note">Each slice\'s images evaluated on their own (box_size: the boxes of that size). '
             'Worst AP first; a slice with few images or boxes has a wide margin. Click a heading to sort.</p>']
    for attribute in dict.fromkeys(entry['slice_by'] for entry in entries):
        rows = sorted((entry for entry in entries if entry['slice_by'] == attribute), key=_worst_first)
        parts.append(_table(attribute, rows))
    return '\n'.join(parts)


def _worst_first(entry: Mapping):
    ap = entry['stats'].get('ap')
    return ap is None, ap if ap is not None else 0.0, str(entry['prediction_run']), str(entry['slice_value'])


def _table(attribute: str, rows: Sequence[Mapping]) -> str:
    esc = html.escape
    runs = len({entry['prediction_run'] for entry in rows})
    head = ('<tr><th>value</th>' + ('<th>run</th>' if runs > 1 else '')
            + ''.join(f'<th>{name}</th>' for name in ('AP', '', 'AP50', 'AR', 'images', 'ground-truth boxes',
                                                       'tp', 'fp', 'fn')) + '</tr>')
    body = []
    for entry in rows:
        ap, value = entry['stats'].get('ap'), entry['slice_value']
        name = '(no value)' if value is None else value
        run = entry['prediction_run'] or '(no run folder)'
        body.append(
            f'<tr data-slice-by="{esc(attribute)}" data-value="{esc(name)}" data-run="{esc(run)}"><td>{esc(name)}</td>'
            + (f'<td>{esc(run)}</td>' if runs > 1 else '') + _number(ap)
            + f'<td><span class="bar" style="display:inline-block;height:10px;background:#4a7;width:'
              f'{round(120 * (ap or 0))}px"></span></td>'
            + _number(entry['stats'].get('ap_50')) + _number(entry.get('mar'))
            + ''.join(_number(entry.get(key)) for key in ('images', 'ground_truth_boxes', 'tp', 'fp', 'fn')) + '</tr>')
    return (f'<h4>by {esc(attribute)}</h4><table class="sortable slices" data-slice-by="{esc(attribute)}">'
            f'<thead>{head}</thead><tbody>{"".join(body)}</tbody></table>')


def _number(value: Optional[float]) -> str:
    """A number cell that sorts by its value; n/a where there is none (box_size has no image counts)."""
    data = '' if value is None else f' data-sort="{value:.10g}"'
    shown = f'{value:,}' if isinstance(value, int) else figure_text(value)
    return f'<td class="n"{data}>{shown}</td>'


def detection_slices_section(rows: Sequence[Mapping]) -> str:
    """Without ground truth: the Slices section, from the slices table's rows of all labels (label
    null): per attribute, each run's slices with their images, detections per image and score
    quartiles, sortable; '' without rows."""
    whole = [row for row in rows if row['label'] is None]
    if not whole:
        return ''
    parts = ['<p class="note">No ground truth: what each slice\'s detections look like (each image\'s first '
             'line). A slice whose detections per image or scores stand apart from the others is where to look '
             'first. Click a heading to sort; the table per label is in evaluation/slices/.</p>']
    esc = html.escape
    for attribute in dict.fromkeys(row['slice_by'] for row in whole):
        mine = [row for row in whole if row['slice_by'] == attribute]
        head = ''.join(f'<th>{name}</th>' for name in ('value', 'run', 'images', 'detections', 'detections per image',
                                                       'score p25', 'score median', 'score p75'))
        body = ''.join(
            f'<tr data-slice-by="{esc(attribute)}" data-value="{esc(_value(row))}"><td>{esc(_value(row))}</td>'
            f'<td>{esc(row["prediction_run"] or "(no run folder)")}</td>'
            + ''.join(_number(row[key]) for key in ('images', 'detections', 'detections_per_image', 'score_p25',
                                                   'score_median', 'score_p75')) + '</tr>' for row in mine)
        parts.append(f'<h4>by {esc(attribute)}</h4><table class="sortable slices" data-slice-by="{esc(attribute)}">'
                     f'<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')
    return section_html('slices', 'Slices', '\n'.join(parts))


def _value(row: Mapping) -> str:
    return '(no value)' if row['slice_value'] is None else row['slice_value']
