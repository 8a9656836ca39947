"""The run summary: built from the counts the pipeline combined, and rendered for the console."""
import datetime
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from pipeline.config.settings import Settings
from pipeline.core import counts as names
from pipeline.core.counts import HISTOGRAM_BINS, Counts
from pipeline.core.dead_letters import (
    DEAD_LETTER_KINDS,
    INVALID_ATTRIBUTE,
    INVALID_BOX,
    INVALID_GROUND_TRUTH,
    LINE_DEAD_LETTER_KINDS,
)
from pipeline.core.evaluation import RunImage
from pipeline.core.outputs import SUMMARY_WRITER
from pipeline.core.postprocessing import STEPS
from pipeline.core.run_warnings import label_overlap, run_warnings
from pipeline.core.shards import SHARD_KINDS
from pipeline.core.slices import slice_rows
from pipeline.core.truth_formats import ML_USES

SIZE_SOURCES = ('manifest', 'probe', 'fixed')


class EvaluationOutcome(NamedTuple):
    """What the evaluation gave, for the summary: metrics.json, each run's image counts, and the rows
    of the two small tables (the matches' rows are counted as they are made)."""
    metrics: Mapping
    runs: Mapping[Optional[str], RunImage]
    confidence_rows: int
    confusion_rows: int


def run_record(settings: Settings, finished: datetime.datetime, beam_version: str) -> Dict:
    """The summary's `run` section: which versions ran, when, for how long, with which options."""
    started = settings.launch.started
    duration = None if started is None else round(
        (finished - datetime.datetime.fromisoformat(started)).total_seconds(), 3)
    return {'version': settings.launch.tool_version, 'beam_version': beam_version, 'started': started,
            'finished': finished.isoformat(timespec='milliseconds'),
            'duration_s': duration, 'options': dict(settings.launch.options),
            'command_line': list(settings.launch.command_line)}


def build_summary(counts: Counts, duplicate_image_uris: int, settings: Settings, pattern: str,
                  outputs: Optional[Mapping[str, List[str]]] = None,
                  output_rows: Optional[Mapping[str, int]] = None,
                  evaluation: Optional[EvaluationOutcome] = None, run: Optional[Mapping] = None,
                  comparison: Optional[Mapping] = None, slice_row_count: Optional[int] = None) -> Dict:
    """`output_rows`: the rows the files listed in `outputs` hold, per output, as read back; `run`:
    the run's record (run_record); `comparison`: comparison.json's document; `slice_row_count`: the
    rows of the slices table of a run without ground truth."""
    get = counts.get
    lines_read, blank = get(names.LINES_READ), get(names.BLANK_LINES)
    non_blank = lines_read - blank
    images = get(names.IMAGES_WRITTEN)
    dead = {kind: get(names.dead_letters(kind)) for kind in DEAD_LETTER_KINDS}
    line_dead = sum(dead[kind] for kind in LINE_DEAD_LETTER_KINDS)
    expected_rows = {'detections': get(names.DETECTIONS_KEPT), 'images': images,
                     'dead_letters': sum(dead.values())}
    ground_truth = None
    if evaluation is not None:
        expected_rows.update(evaluation_matches=get(names.EVALUATION_MATCH_ROWS),
                             evaluation_confidence=evaluation.confidence_rows,
                             evaluation_confusion=evaluation.confusion_rows)
        ground_truth = ground_truth_section(counts, dead[INVALID_GROUND_TRUTH])
        if 'slices' in evaluation.metrics:
            expected_rows['evaluation_slices'] = len(slice_rows(evaluation.metrics['slices']))
    attributes = attributes_section(counts, dead[INVALID_ATTRIBUTE]) if settings.slices.attributes else None
    if slice_row_count is not None:  # the slices without ground truth
        expected_rows['evaluation_slices'] = slice_row_count
    if comparison is not None:
        expected_rows['comparison'] = get(names.COMPARISON_ROWS)
    files_check = {name: {'files': len((outputs or {}).get(name, [])), 'rows': rows,
                          'expected': expected_rows[name], 'holds': rows == expected_rows[name]}
                   for name, rows in (output_rows or {}).items()}
    lines_hold = non_blank == images + line_dead
    annotations, detections_in = get(names.ANNOTATIONS_READ), get(names.DETECTIONS_IN)
    annotations_hold = annotations == detections_in + dead[INVALID_BOX]
    holds = lines_hold and annotations_hold and all(check['holds'] for check in files_check.values())
    text = (f'{non_blank} non-blank lines read {"==" if lines_hold else "!="} {images} images + '
            f'{line_dead} line dead letters')
    if dead[INVALID_BOX] or not annotations_hold:
        text += (f'; {annotations} annotations {"==" if annotations_hold else "!="} {detections_in} detections in + '
                 f'{dead[INVALID_BOX]} box dead letters')
    if ground_truth is not None:
        holds = holds and ground_truth['holds']
        text += (f'; {ground_truth["rows_read"]} ground-truth rows read {"==" if ground_truth["holds"] else "!="} '
                 f'{ground_truth["rows_used"]} used + {ground_truth["dead_letters"]} dead letters')
        if ground_truth['images_other_ml_use']:  # read and valid, but not evaluated: say so beside the sum
            text += (f' (of the images, {ground_truth["images_other_ml_use"]} of another ML use left out by '
                     f'--ml_use, {ground_truth["images"]} evaluated)')
    if attributes is not None:
        holds = holds and attributes['holds']
        text += (f'; {attributes["rows_read"]} image attribute rows read {"==" if attributes["holds"] else "!="} '
                 f'{attributes["rows_used"]} used + {attributes["dead_letters"]} dead letters')
    missing = [f'{name} files hold {check["rows"]} rows, not {check["expected"]}'
               for name, check in files_check.items() if not check['holds']]
    if missing:
        text += '; ' + '; '.join(missing)
    elif files_check:
        text += '; the files written hold every row'
    summary: Dict[str, Any] = {
        'writer': SUMMARY_WRITER,
        'run_id': settings.launch.run_id,
        **({'run': dict(run)} if run is not None else {}),
        'input': settings.input.input,
        'input_pattern': pattern,
        'files': {
            **{kind: get(names.files(kind)) for kind in SHARD_KINDS},
            'other_files': sorted(counts.other_files),
        },
        'lines': {'read': lines_read, 'blank': blank, 'non_blank': non_blank},
        'images_written': images,
        'detections': {
            'in': get(names.DETECTIONS_IN),
            'kept': get(names.DETECTIONS_KEPT),
            'below_threshold': get(names.removed_by('threshold')),
            'removed_by': {step: get(names.removed_by(step)) for step in STEPS
                           if names.removed_by(step) in counts.scalars},  # the steps in force
        },
        'dead_letters': {**dead, 'total': sum(dead.values())},
        'image_sizes': {
            'known': images - get(names.IMAGES_WITHOUT_SIZE),
            'unknown': get(names.IMAGES_WITHOUT_SIZE),
            **{f'from_{source}': get(names.size_from(source)) for source in SIZE_SOURCES},
            'probe_failures': dict(sorted(counts.probe_failures.items())),
        },
        'images_without_size': get(names.IMAGES_WITHOUT_SIZE),
        'duplicate_image_uris': duplicate_image_uris,
        'reconciliation': {
            'non_blank_lines': non_blank,
            'images': images,
            'line_dead_letters': line_dead,
            'annotations': annotations,
            'box_dead_letters': dead[INVALID_BOX],
            'holds': holds,
            'outputs': files_check,
            'text': text,
        },
        'tables': {name: getattr(settings.bigquery, name) for name in
                   ('output_table', 'images_table', 'dead_letter_table') if getattr(settings.bigquery, name)},
        'thresholds': {'score_threshold': settings.postprocessing.score_threshold,
                       'label_thresholds': dict(settings.postprocessing.label_thresholds)},
        'outputs': {name: sorted(paths) for name, paths in (outputs or {}).items()},
        'score_histogram': {
            'bin_edges': [round(i / HISTOGRAM_BINS, 6) for i in range(HISTOGRAM_BINS + 1)],
            'all': list(counts.score_bins['all']),
            'kept': list(counts.score_bins['kept']),
        },
        'kept_by_label': dict(sorted(counts.kept_by_label.items(), key=lambda item: (-item[1], item[0]))),
        **({} if evaluation is None else {'ground_truth': ground_truth,
                                          'evaluation': evaluation_section(counts, evaluation)}),
        **({} if attributes is None else {'image_attributes': attributes}),
        **({'export': export_section(counts, settings.export.export),
            'export_further_lines': get(names.EXPORT_FURTHER_LINES)} if settings.export.enabled else {}),
        **({} if comparison is None else {'comparison': {
            **comparison, 'further_lines': get(names.COMPARISON_FURTHER_LINES)}}),
    }
    summary['warnings'] = run_warnings(summary, settings, counts.seen_labels)
    return summary


EXPORT_REMOVED = ('no_label', 'too_small', 'over_limit', 'size_unknown')


def export_section(counts: Counts, formats) -> Dict:
    """Per export format: images and boxes written, and what the format's limits removed."""
    return {fmt: {'images': counts.get(names.exported_images(fmt)), 'boxes': counts.get(names.exported_boxes(fmt)),
                  'removed': {reason: counts.get(names.export_removed(fmt, reason)) for reason in EXPORT_REMOVED
                              if counts.get(names.export_removed(fmt, reason))}}
            for fmt in formats}


def ground_truth_section(counts: Counts, dead_letters: int) -> Dict:
    """The ground truth as read: rows read == rows used + dead letters."""
    read, used = counts.get(names.GROUND_TRUTH_ROWS_READ), counts.get(names.GROUND_TRUTH_ROWS_USED)
    return {'rows_read': read, 'rows_used': used, 'dead_letters': dead_letters,
            'images_other_ml_use': counts.get(names.GROUND_TRUTH_OTHER_ML_USE),
            'images': counts.get(names.GROUND_TRUTH_IMAGES), 'boxes': counts.get(names.GROUND_TRUTH_BOXES),
            'boxes_past_edge': counts.get(names.GROUND_TRUTH_BOXES_PAST_EDGE),
            'annotation_ids_repeated': counts.get(names.GROUND_TRUTH_REPEATED_IDS),
            'boxes_repeated': counts.get(names.GROUND_TRUTH_BOXES_REPEATED),
            'images_with_repeated_boxes': counts.get(names.GROUND_TRUTH_IMAGES_WITH_REPEATED_BOXES),
            'images_by_ml_use': {use: counts.get(names.ground_truth_ml_use(use)) for use in ML_USES
                                 if counts.get(names.ground_truth_ml_use(use))},
            'holds': read == used + dead_letters}


def attributes_section(counts: Counts, dead_letters: int) -> Dict:
    """The image attributes as read: rows read == rows used + dead letters; rows that repeat an image's
    (its first counts); the images sliced (counts.IMAGES_SLICED) and those with a row."""
    read, used = counts.get(names.IMAGE_ATTRIBUTE_ROWS_READ), counts.get(names.IMAGE_ATTRIBUTE_ROWS_USED)
    return {'rows_read': read, 'rows_used': used, 'dead_letters': dead_letters,
            'rows_repeated': counts.get(names.IMAGE_ATTRIBUTE_ROWS_REPEATED), 'images': counts.get(names.IMAGES_SLICED),
            'images_with_attributes': counts.get(names.IMAGES_WITH_ATTRIBUTES), 'holds': read == used + dead_letters}


def evaluation_section(counts: Counts, evaluation: EvaluationOutcome) -> Dict:
    """Per run, side by side: the headline figures of metrics.json and what was (not) evaluated."""
    metrics = evaluation.metrics
    runs = []
    for run in metrics['runs']:
        images = evaluation.runs.get(run['prediction_run'], RunImage())
        runs.append({key: run[key] for key in ('prediction_run', 'images', 'detections', 'ground_truth_boxes',
                                               'map', 'map_50', 'map_75', 'mar', 'stats',
                                               'detections_beyond_max_dets', 'size_figures') if key in run}
                    | {'images_with_prediction': images.with_prediction,
                       'ground_truth_only': images.ground_truth_only, 'prediction_only': images.prediction_only,
                       'images_without_prediction': images.without_prediction,
                       'predictions_without_ground_truth': images.predictions_without_ground_truth,
                       'further_lines_of_evaluated_images': images.other_lines,
                       'label_overlap': label_overlap(run.get('labels', ()))})
    return {
        'iou_thresholds': metrics['iou_thresholds'], 'eval_iou': metrics['eval_iou'],
        'images_evaluated': counts.get(names.IMAGES_EVALUATED),
        'images_without_prediction': counts.get(names.IMAGES_WITHOUT_PREDICTION),
        'predictions_without_ground_truth': counts.get(names.PREDICTIONS_WITHOUT_GROUND_TRUTH),
        'further_lines_of_evaluated_images': counts.get(names.FURTHER_LINES_OF_EVALUATED_IMAGES),
        'runs': runs,
        **({'slices': slice_extremes(metrics['slices'])} if 'slices' in metrics else {}),
    }


def render(summary: Mapping) -> str:
    """The summary as the console shows it at the end of a run."""
    files, lines, detections = summary['files'], summary['lines'], summary['detections']
    dead, sizes = summary['dead_letters'], summary['image_sizes']
    by_source = ', '.join(f'{source} {sizes["from_" + source]}' for source in SIZE_SOURCES)
    rows = [
        ('files matched', f'{files["result"]} result, {files["error"]} error, {files["other"]} other'),
        ('lines read', f'{lines["read"]} ({lines["blank"]} blank)'),
        ('images written', summary['images_written']),
        ('detections in / kept', f'{detections["in"]} / {detections["kept"]}'),
        ('removed, by step', ', '.join(f'{step} {n}' for step, n in detections['removed_by'].items())),
        ('dead letters', ', '.join(f'{kind} {dead[kind]}' for kind in DEAD_LETTER_KINDS
                                   if (kind != INVALID_GROUND_TRUTH or 'ground_truth' in summary)
                                   and (kind != INVALID_ATTRIBUTE or 'image_attributes' in summary))),
        ('image sizes', f'{sizes["known"]} known ({by_source}), {sizes["unknown"]} unknown'),
        ('duplicate image URIs', f'{summary["duplicate_image_uris"]} (each line kept as its own prediction)'),
        ('reconciliation', ('OK: ' if summary['reconciliation']['holds'] else 'FAILED: ')
         + summary['reconciliation']['text']),
    ]
    if 'evaluation' in summary:
        rows[-1:-1] = evaluation_rows(summary)
    if 'comparison' in summary:
        rows[-1:-1] = comparison_rows(summary['comparison'])
    for fmt, figures in summary.get('export', {}).items():
        removed = ', '.join(f'{reason.replace("_", " ")} {n}' for reason, n in figures['removed'].items())
        rows.insert(len(rows) - 1, (f'export {fmt}', f'{figures["images"]} images, {figures["boxes"]} boxes'
                                    + (f' (left out: {removed})' if removed else '')))
    if summary.get('export_further_lines'):
        rows.insert(len(rows) - 1, ('export, lines left out', f'{summary["export_further_lines"]} further lines of '
                                    f'images exported from their first line'))
    if files['other_files']:
        rows.insert(1, ('other files (not parsed)', ', '.join(files['other_files'][:5])
                        + (' ...' if len(files['other_files']) > 5 else '')))
    width = max(len(name) for name, _ in rows)
    return '\n'.join(f'{name.ljust(width)}  {value}' for name, value in rows)


def evaluation_rows(summary: Mapping) -> List[tuple]:
    truth, evaluation = summary['ground_truth'], summary['evaluation']
    rows = [('ground truth', f'{truth["rows_read"]} rows read, {truth["images"]} images, {truth["boxes"]} boxes'
             + (f', {truth["images_other_ml_use"]} images of another ML use left out'
                if truth['images_other_ml_use'] else '')),
            ('evaluated', f'{evaluation["images_evaluated"]} images over the runs; '
                          f'{evaluation["images_without_prediction"]} without prediction, '
                          f'{evaluation["predictions_without_ground_truth"]} prediction lines without ground truth')]
    removed = {step: n for step, n in summary['detections']['removed_by'].items() if n}
    if removed:  # AP's curve stops where they were cut: say so beside the figures
        rows.append(('detections evaluated', f'the {summary["detections"]["kept"]:,} kept, not the '
                     + ', '.join(f'{n:,} removed by {step}' for step, n in removed.items())
                     + ' (recall stops where they were cut: --score_threshold 0 and no post-processing measure '
                       'the whole model)'))
    for run in evaluation['runs']:
        recalls = ''.join(f', AR@{name[3:]} {_figure(value)}' for name, value in run.get('stats', {}).items()
                          if name.startswith('ar_') and name[3:] not in ('small', 'medium', 'large'))
        rows.append((f'  {run["prediction_run"] or "(no run folder)"}',
                     f'mAP {_figure(run["map"])}, mAP@0.5 {_figure(run["map_50"])}, '
                     f'mAP@0.75 {_figure(run["map_75"])}' + (recalls or f', mAR {_figure(run["mar"])}')))
        stats = run.get('stats', {})
        if any(stats.get(f'ap_{size}') is not None for size in ('small', 'medium', 'large')):
            rows.append(('    small / medium / large', ', '.join(
                f'{kind} ' + ' / '.join(_figure(stats.get(f'{kind.lower()}_{size}'))
                                        for size in ('small', 'medium', 'large')) for kind in ('AP', 'AR'))))
        for part in evaluation.get('slices', []):
            if part['prediction_run'] == run['prediction_run']:
                rows.append((f'    by {part["slice_by"]}', _slice_text(part)))
    return rows


def _slice_text(part: Mapping) -> str:
    def one(end: Optional[Mapping]) -> str:
        if end is None:
            return 'n/a'
        support = '' if end['images'] is None else f' ({end["images"]} images)'
        return f'{end["value"] if end["value"] is not None else "(no value)"} AP {_figure(end["ap"])}{support}'
    return f'{part["slices"]} slices; worst {one(part["worst"])}, best {one(part["best"])}'


def slice_extremes(slices: Sequence[Mapping]) -> List[Dict[str, Any]]:
    """Per run and attribute of metrics.json's `slices`: how many slices, and the one of lowest and of
    highest AP (None without any AP), for the summary and the console."""
    groups: Dict[Tuple[Optional[str], str], List[Mapping]] = {}
    for entry in slices:
        groups.setdefault((entry['prediction_run'], entry['slice_by']), []).append(entry)
    extremes = []
    for (run, attribute), entries in groups.items():
        scored = sorted((entry for entry in entries if entry['stats']['ap'] is not None),
                        key=lambda entry: entry['stats']['ap'])
        ends = {'worst': scored[0], 'best': scored[-1]} if scored else {}
        extremes.append({'prediction_run': run, 'slice_by': attribute, 'slices': len(entries),
                         **{name: {'value': end['slice_value'], 'ap': end['stats']['ap'], 'images': end['images']}
                            for name, end in ends.items()},
                         **({} if scored else {'worst': None, 'best': None})})
    return extremes


def comparison_rows(comparison: Mapping) -> List[tuple]:
    """Each run against the base: the agreement of its boxes, the images compared and changed, and
    the images only one of the two has."""
    rows = [('compared with', f'{comparison["base_run"] or "(no run folder)"} (at IoU {comparison["eval_iou"]:g})')]
    for run in comparison['runs']:
        totals = {outcome: sum(label[outcome] for label in run['labels'])
                  for outcome in ('same', 'relabelled', 'moved', 'added', 'removed')}
        rows.append((f'  {run["prediction_run"] or "(no run folder)"}',
                     f'agreement {_figure(run["agreement"])}; {run["changed"]} of {run["compared"]} images changed; '
                     + ', '.join(f'{outcome} {count}' for outcome, count in totals.items())
                     + f'; images only in the run {run["only_in_run"]}, only in the base {run["only_in_base"]}'
                     + (f'; against the ground truth: fixed {run["fixed"]}, broken {run["broken"]}, both wrong '
                        f'{run["both_wrong"]}' if comparison.get('ground_truth') else '')))
    return rows


def _figure(value: Optional[float]) -> str:
    return 'n/a' if value is None else f'{value:.4f}'
