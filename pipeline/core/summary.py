"""The run summary: built from the counts the pipeline combined, and rendered for the console."""
from typing import Dict, List, Mapping, Optional

from pipeline.config.settings import Settings
from pipeline.core import counts as names
from pipeline.core.counts import HISTOGRAM_BINS, Counts
from pipeline.core.dead_letters import DEAD_LETTER_KINDS, LINE_DEAD_LETTER_KINDS
from pipeline.core.outputs import SUMMARY_WRITER
from pipeline.core.postprocessing import STEPS
from pipeline.core.shards import SHARD_KINDS

SIZE_SOURCES = ('manifest', 'probe', 'fixed')


def build_summary(counts: Counts, duplicate_image_uris: int, settings: Settings, pattern: str,
                  outputs: Optional[Mapping[str, List[str]]] = None,
                  output_rows: Optional[Mapping[str, int]] = None) -> Dict:
    """`output_rows`: the rows the files listed in `outputs` hold, per output, as read back."""
    get = counts.get
    lines_read, blank = get(names.LINES_READ), get(names.BLANK_LINES)
    non_blank = lines_read - blank
    images = get(names.IMAGES_WRITTEN)
    dead = {kind: get(names.dead_letters(kind)) for kind in DEAD_LETTER_KINDS}
    line_dead = sum(dead[kind] for kind in LINE_DEAD_LETTER_KINDS)
    expected_rows = {'detections': get(names.DETECTIONS_KEPT), 'images': images,
                     'dead_letters': sum(dead.values())}
    files_check = {name: {'files': len((outputs or {}).get(name, [])), 'rows': rows,
                          'expected': expected_rows[name], 'holds': rows == expected_rows[name]}
                   for name, rows in (output_rows or {}).items()}
    lines_hold = non_blank == images + line_dead
    holds = lines_hold and all(check['holds'] for check in files_check.values())
    text = (f'{non_blank} non-blank lines read {"==" if lines_hold else "!="} {images} images + '
            f'{line_dead} line dead letters')
    missing = [f'{name} files hold {check["rows"]} rows, not {check["expected"]}'
               for name, check in files_check.items() if not check['holds']]
    if missing:
        text += '; ' + '; '.join(missing)
    elif files_check:
        text += '; the files written hold every row'
    return {
        'writer': SUMMARY_WRITER,
        'run_id': settings.launch.run_id,
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
        ('dead letters', ', '.join(f'{kind} {dead[kind]}' for kind in DEAD_LETTER_KINDS)),
        ('image sizes', f'{sizes["known"]} known ({by_source}), {sizes["unknown"]} unknown'),
        ('duplicate image URIs', f'{summary["duplicate_image_uris"]} (each line kept as its own prediction)'),
        ('reconciliation', ('OK: ' if summary['reconciliation']['holds'] else 'FAILED: ')
         + summary['reconciliation']['text']),
    ]
    if files['other_files']:
        rows.insert(1, ('other files (not parsed)', ', '.join(files['other_files'][:5])
                        + (' ...' if len(files['other_files']) > 5 else '')))
    width = max(len(name) for name, _ in rows)
    return '\n'.join(f'{name.ljust(width)}  {value}' for name, value in rows)
