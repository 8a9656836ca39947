"""Warnings: what a run that "succeeded" found wrong with what it was given. A run over nothing (no
shared image with the ground truth, a manifest that names none of the images, a label that never
occurs, an export that wrote nothing) exits 0 with figures that look like answers; its summary says
so instead, each warning with the figures behind it and the fix. Pure: built from the summary's own
figures and the settings."""
import difflib
import re
import shlex
from typing import Dict, Iterable, List, Mapping, NamedTuple, Optional

from pipeline.config.settings import Settings
from pipeline.core.formats import COORDINATE_TOLERANCE

# Below this share of one side's images found on the other, a join (ground truth, sizes) warns; so do
# a run's labels, below this share of the ground truth's boxes or of the run's detections.
LOW_OVERLAP = 0.5
# The labels each side has alone that a summary lists, the most frequent first.
LABEL_EXAMPLES = 10


class RunWarning(NamedTuple):
    code: str
    message: str
    figures: Mapping
    fix: str

    def as_dict(self) -> Dict:
        return {'code': self.code, 'message': self.message, 'figures': dict(self.figures), 'fix': self.fix}


def run_warnings(summary: Mapping, settings: Settings, seen_labels: Optional[Iterable[str]] = None) -> List[Dict]:
    """Every warning of a finished batch run, as the summary's `warnings` list. `seen_labels`: the
    labels of the annotations the run listed (None: not gathered)."""
    found: List[RunWarning] = []
    found += nothing_read(summary)
    found += nothing_kept(summary)
    found += ground_truth_overlap(summary, settings)
    found += ground_truth_dead_letters(summary, settings)
    found += ground_truth_past_edge(summary)
    found += ground_truth_repeated_ids(summary)
    found += ground_truth_repeated_boxes(summary, settings)
    found += label_overlap_warnings(summary)
    found += sizes_overlap(summary, settings)
    if seen_labels is not None:
        found += labels_never_seen(settings, set(seen_labels))
    found += empty_exports(summary, settings)
    found += comparison_overlap(summary)
    found += attributes_overlap(summary, settings)
    return [warning.as_dict() for warning in found]


def nothing_read(summary: Mapping) -> List[RunWarning]:
    lines = summary['lines']['non_blank']
    if lines:
        return []
    files = summary['files']
    return [RunWarning(
        'no_lines', f'the input\'s {files["result"]} result and {files["error"]} error shards hold no '
        f'prediction line: every table is empty', {'result_files': files['result'], 'error_files': files['error'],
                                                    'lines_read': summary['lines']['read']},
        'check that --input names the output of a finished batch prediction job')]


def nothing_kept(summary: Mapping) -> List[RunWarning]:
    detections = summary['detections']
    if detections['kept'] or not detections['in']:
        return []
    return [RunWarning(
        'no_detections_kept', f'none of the {detections["in"]:,} detections read was kept; '
        f'the detections table is empty', {'detections_in': detections['in'], 'removed_by': detections['removed_by']},
        'lower --score_threshold (or --label_thresholds), or loosen the step that removed them')]


def ground_truth_overlap(summary: Mapping, settings: Settings) -> List[RunWarning]:
    """A run that shares under half of either side's images with the ground truth."""
    if 'evaluation' not in summary:
        return []
    truth_images = summary['ground_truth']['images']
    coco = any(fmt == 'coco' for _, fmt in settings.evaluation.ground_truth_files or ())
    prefix_hint = ((' (--ground_truth_image_prefix is joined to COCO file names'
                    + (f': now {settings.evaluation.ground_truth_image_prefix!r})'
                       if settings.evaluation.ground_truth_image_prefix else ', and none is given)'))
                   if coco or settings.evaluation.ground_truth_image_prefix else
                   ': the ground truth\'s imageGcsUri or GCS_PATH must equal the prediction lines\' ID or '
                   'instance content, scheme and bucket included')
    if not truth_images:
        return [RunWarning(
            'no_ground_truth_images', 'the ground truth holds no image to evaluate against'
            + (f' of ML use {settings.evaluation.ml_use!r}' if settings.evaluation.ml_use else ''),
            {'ground_truth_rows_read': summary['ground_truth']['rows_read'],
             'images_other_ml_use': summary['ground_truth']['images_other_ml_use']},
            'check --ground_truth' + (' and --ml_use' if settings.evaluation.ml_use else ''))]
    found = []
    for run in summary['evaluation']['runs']:
        shared = run['images_with_prediction']
        run_images = shared + run['predictions_without_ground_truth']
        if shared >= LOW_OVERLAP * truth_images and shared >= LOW_OVERLAP * run_images:
            continue
        name = run['prediction_run'] or '(no run folder)'
        examples = (f'; a ground-truth image without prediction: {run["ground_truth_only"]!r}'
                    if run.get('ground_truth_only') else '') + (
            f'; a predicted image without ground truth: {run["prediction_only"]!r}'
            if run.get('prediction_only') else '')
        what = ('no image: its figures are null, not 0' if not shared
                else f'only {shared:,} images ({shared / max(truth_images, run_images):.0%})')
        found.append(RunWarning(
            'ground_truth_no_overlap' if not shared else 'ground_truth_low_overlap',
            f'run {name} and the ground truth share {what}. The ground truth has {truth_images:,} images, '
            f'the run {run_images:,} prediction lines{examples}',
            {'prediction_run': run['prediction_run'], 'ground_truth_images': truth_images,
             'predicted_images': run_images, 'shared_images': shared,
             'ground_truth_only_example': run.get('ground_truth_only'),
             'prediction_only_example': run.get('prediction_only')},
            ml_use_hint(summary['ground_truth'], settings) + 'make both sides name images by the same URI'
            + prefix_hint))
    return found


def ground_truth_past_edge(summary: Mapping) -> List[RunWarning]:
    """COCO boxes reaching past their image's edge by more than the coordinate tolerance (a share of its
    side): counted as given, as pycocotools counts them, but they often mean sizes that do not belong to
    the images."""
    truth = summary.get('ground_truth') or {}
    past = truth.get('boxes_past_edge') or 0
    if not past:
        return []
    boxes = truth['boxes']
    reach = "reaches past its image's edge" if past == 1 else "reach past their images' edges"
    return [RunWarning(
        'ground_truth_boxes_past_edge', f'{past:,} of the {boxes:,} ground-truth boxes evaluated '
        f'({past / max(boxes, 1):.1%}) {reach} by more than {COORDINATE_TOLERANCE:.0%} of the side: counted as '
        f'given, as pycocotools counts them, a box can be matched only on its part inside the image, where '
        f'detections lie',
        {'boxes_past_edge': past, 'boxes': boxes},
        'check the width and height the COCO document gives those images (an image turned by its EXIF '
        'orientation has them swapped) and that each bbox is [x, y, width, height] in pixels')]


def ground_truth_repeated_ids(summary: Mapping) -> List[RunWarning]:
    """COCO annotations sharing an id: each counts here as given, but pycocotools keeps one annotation
    per id (the last) and evaluates it in place of the others, so figures compared with its differ."""
    repeated = (summary.get('ground_truth') or {}).get('annotation_ids_repeated') or 0
    if not repeated:
        return []
    return [RunWarning(
        'ground_truth_repeated_ids', f'{repeated:,} COCO ground-truth annotations repeat the id of an earlier one: '
        f'each counts here as given, but pycocotools keeps one annotation per id (the last) and evaluates it in '
        f'place of the others, on their images, so its figures on this document are not these',
        {'annotation_ids_repeated': repeated},
        'give each annotation an id of its own (documents merged without renumbering repeat them)')]


def ground_truth_repeated_boxes(summary: Mapping, settings: Settings) -> List[RunWarning]:
    """Ground-truth boxes equal to another box of their image: each counts as given, as pycocotools
    counts it, but one detection can match only one of them, so the others are missed. The same
    ground truth given twice (a folder holding it in two formats) makes one of every box."""
    truth = summary.get('ground_truth') or {}
    repeated = truth.get('boxes_repeated') or 0
    if not repeated:
        return []
    boxes, images = truth['boxes'], truth['images_with_repeated_boxes']
    files = [path for path, _ in settings.evaluation.ground_truth_files or ()]
    given = (f'--ground_truth is {len(files):,} files ({", ".join(files[:3])}{", ..." if len(files) > 3 else ""}): '
             f'if two of them hold the same ground truth, give one; else ' if len(files) > 1 else '')
    return [RunWarning(
        'ground_truth_repeated_boxes', f'{repeated:,} of the {boxes:,} ground-truth boxes evaluated '
        f'({repeated / max(boxes, 1):.1%}), in {images:,} images, repeat another box of their image exactly '
        f'(label, crowd flag and coordinates): each counts as a box to find, as pycocotools counts it, and one '
        f'detection can match only one of them, so recall and AP are lower than on the boxes given once',
        {'boxes_repeated': repeated, 'images_with_repeated_boxes': images, 'boxes': boxes,
         'ground_truth_files': len(files)},
        given + 'remove the repeated annotations')]


def ml_use_hint(truth: Mapping, settings: Settings) -> str:
    """With no --ml_use, a ground truth of several ML uses: the run likely predicted one of them."""
    uses = truth.get('images_by_ml_use') or {}
    if settings.evaluation.ml_use or len(uses) < 2:
        return ''
    held = ', '.join(f'{use} {images:,}' for use, images in uses.items())
    likely = 'test' if 'test' in uses else min(uses, key=lambda use: (uses[use], use))  # a batch over held-out images
    return (f'give --ml_use (the ground truth holds images of several ML uses: {held}; '
            f'--ml_use {likely} evaluates the {likely} images alone), or ')


def ground_truth_dead_letters(summary: Mapping, settings: Settings) -> List[RunWarning]:
    """Ground-truth units that could not be used: the figures are those of a smaller ground truth
    than the one given (their boxes are neither found nor missed; a detection on one is a false
    positive)."""
    truth = summary.get('ground_truth')
    if not truth or not truth['dead_letters']:
        return []
    dead, read = truth['dead_letters'], truth['rows_read']
    where = settings.outputs.dead_letter or settings.bigquery.dead_letter_table or 'the dead letters'
    return [RunWarning(
        'ground_truth_dead_letters', f'{dead:,} of the {read:,} ground-truth units read ({dead / max(read, 1):.0%}) '
        f'could not be used: the figures are computed without their boxes, and a detection on one of them '
        f'counts as a false positive', {'dead_letters': dead, 'units_read': read, 'units_used': truth['rows_used']},
        f'read the reasons of the dead letters of kind invalid_ground_truth in {where}, fix those units, '
        f'and run again')]


def folded(label: str) -> str:
    """A label as a mistaken spelling of it still reads: case, spaces, underscores and hyphens aside."""
    return re.sub(r'[\s_-]+', '', label.casefold())


def label_overlap(labels: Iterable[Mapping]) -> Dict:
    """A run's labels against the ground truth's, from metrics.json's entries of the run's labels
    (`label`, `ground_truth_boxes`, `detections`): labels match only when spelled the same, so a box of a
    label the run never predicts is missed, and a detection of a label the ground truth lacks is a false
    positive. `respelled`: a label of either side alone that the other side spells otherwise (`Person`
    and `person`, `traffic light` and `traffic_light`), a label the other side also has included."""
    truth = {entry['label']: entry['ground_truth_boxes'] for entry in labels if entry['ground_truth_boxes']}
    predicted = {entry['label']: entry['detections'] for entry in labels if entry['detections']}
    shared = truth.keys() & predicted.keys()
    truth_only = {label: n for label, n in truth.items() if label not in predicted}
    predicted_only = {label: n for label, n in predicted.items() if label not in truth}
    # A label one side has alone, against the other side's labels spelled alike (shared ones too: a
    # ground truth that spells a label two ways loses the boxes of the spelling the run does not use).
    predicted_as: Dict[str, List[str]] = {}
    truth_as: Dict[str, List[str]] = {}
    for label in sorted(predicted):
        predicted_as.setdefault(folded(label), []).append(label)
    for label in sorted(truth):
        truth_as.setdefault(folded(label), []).append(label)
    respelled = [(label, other) for label in sorted(truth_only) for other in predicted_as.get(folded(label), ())]
    respelled += [(other, label) for label in sorted(predicted_only) for other in truth_as.get(folded(label), ())
                  if other not in truth_only]

    def most(counts: Mapping[str, int]) -> Dict[str, int]:
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:LABEL_EXAMPLES])
    return {'ground_truth_labels': len(truth), 'predicted_labels': len(predicted), 'shared_labels': len(shared),
            'ground_truth_boxes': sum(truth.values()), 'boxes_of_shared_labels': sum(truth[k] for k in shared),
            'detections': sum(predicted.values()), 'detections_of_shared_labels': sum(predicted[k] for k in shared),
            'ground_truth_only': most(truth_only), 'prediction_only': most(predicted_only),
            'shared': sorted(shared) if len(shared) <= LABEL_EXAMPLES else None,
            'respelled': [{'ground_truth': label, 'boxes': truth[label], 'prediction': other,
                           'detections': predicted[other]} for label, other in respelled]}


def label_overlap_warnings(summary: Mapping) -> List[RunWarning]:
    """A run whose labels and the ground truth's differ: spelled otherwise (`Person` and `person`), none
    in common, or in common for under half of either side's boxes. Its figures then count the boxes of
    the other labels as missed and their detections as false positives."""
    found = []
    for run in summary.get('evaluation', {}).get('runs', ()):
        overlap = run.get('label_overlap')
        if overlap and run.get('images_with_prediction') and overlap['ground_truth_labels'] \
                and overlap['predicted_labels']:
            found += respelled_labels(run, overlap) + labels_shared(run, overlap)
    return found


def respelled_labels(run: Mapping, overlap: Mapping) -> List[RunWarning]:
    pairs = overlap['respelled']
    if not pairs:
        return []
    return [RunWarning(
        'label_spelling_mismatch',
        f'run {run["prediction_run"] or "(no run folder)"} and the ground truth spell {len(pairs)} '
        f'label{"s" if len(pairs) > 1 else ""} otherwise: '
        + '; '.join(f'{pair["ground_truth"]!r} ({pair["boxes"]:,} boxes) and {pair["prediction"]!r} '
                    f'({pair["detections"]:,} detections)' for pair in pairs[:LABEL_EXAMPLES])
        + '. Labels match only when spelled the same: those boxes count as missed (their label\'s AP 0), those '
        'detections as false positives (outside mAP)', {'prediction_run': run['prediction_run'], 'respelled': pairs},
        'spell each label the same on both sides (in the ground truth, or in the model\'s label names), and run again')]


ALIKE = ('make both sides name each label alike (label ids against names, or names in another language, match '
         'nothing)')


def labels_shared(run: Mapping, overlap: Mapping) -> List[RunWarning]:
    boxes, detections = overlap['ground_truth_boxes'], overlap['detections']
    few_boxes = overlap['boxes_of_shared_labels'] < LOW_OVERLAP * boxes
    few_detections = overlap['detections_of_shared_labels'] < LOW_OVERLAP * detections
    if not few_boxes and not few_detections:
        return []
    none = not overlap['boxes_of_shared_labels']
    what = ('no label: every box counts as missed (mAP 0) and every detection as a false positive' if none
            else label_shortfall(overlap, few_boxes, few_detections))
    sides = (('the ground truth', 'ground_truth_only'), ('the run', 'prediction_only'))
    alone = [f'{side} alone has {", ".join(map(repr, overlap[key]))}' for side, key in sides if overlap[key]]
    keys = ('ground_truth_labels', 'predicted_labels', 'shared_labels', 'ground_truth_boxes', 'boxes_of_shared_labels',
            'detections', 'detections_of_shared_labels', 'ground_truth_only', 'prediction_only')
    return [RunWarning(
        'labels_no_overlap' if none else 'labels_low_overlap',
        f'run {run["prediction_run"] or "(no run folder)"} and the ground truth share {what}'
        + ''.join(f'; {part}' for part in alone),
        {'prediction_run': run['prediction_run'], **{key: overlap[key] for key in keys}},
        ALIKE if none else label_fix(overlap, few_boxes, few_detections))]


def label_shortfall(overlap: Mapping, few_boxes: bool, few_detections: bool) -> str:
    """The side (or sides) with under half of its boxes or detections on shared labels, and what that costs."""
    boxes, on_boxes = overlap['ground_truth_boxes'], overlap['boxes_of_shared_labels']
    detections, on_detections = overlap['detections'], overlap['detections_of_shared_labels']
    shares, costs = [], []
    if few_boxes:
        shares.append(f'{on_boxes:,} of the ground truth\'s {boxes:,} boxes ({on_boxes / boxes:.0%})')
        costs.append('the boxes of the other labels count as missed (their AP 0)')
    if few_detections:
        shares.append(f'{on_detections:,} of the run\'s {detections:,} detections ({on_detections / detections:.0%})')
        costs.append(f'the detections of the other labels{"" if costs else " count"} as false positives (outside mAP)')
    return f'labels on only {" and ".join(shares)}: {", ".join(costs)}'


def label_fix(overlap: Mapping, few_boxes: bool, few_detections: bool) -> str:
    """Name labels alike; and for a model of more labels than the ground truth's, keep the shared ones."""
    fix = ALIKE + '; the boxes of labels the model was never trained on are missed rightly' if few_boxes else ''
    if not few_detections:
        return fix
    shared = overlap.get('shared') or []
    named = shared and not any(',' in label for label in shared)  # commas would need a JSON array
    keep = ('to evaluate only the labels the ground truth has, keep them: '
            + (f'--keep_labels {shlex.quote(",".join(shared))}' if named
               else f'--keep_labels with the {overlap["shared_labels"]:,} labels both sides have'))
    return f'{fix}; {keep}' if fix else f'{keep}, or {ALIKE}'


def comparison_overlap(summary: Mapping) -> List[RunWarning]:
    """A run compared with the base on under half of either one's images (or none)."""
    if 'comparison' not in summary:
        return []
    found = []
    base = summary['comparison']['base_run'] or '(no run folder)'
    for run in summary['comparison']['runs']:
        shared = run['compared']
        run_images, base_images = shared + run['only_in_run'], shared + run['only_in_base']
        if shared >= LOW_OVERLAP * run_images and shared >= LOW_OVERLAP * base_images and shared:
            continue
        name = run['prediction_run'] or '(no run folder)'
        what = 'no image: its agreement is null, not 0' if not shared else f'only {shared:,} images'
        found.append(RunWarning(
            'comparison_no_overlap' if not shared else 'comparison_low_overlap',
            f'run {name} and the base run {base} share {what}. The run has {run_images:,} images, the base '
            f'{base_images:,}', {'prediction_run': run['prediction_run'], 'base_run': summary['comparison']['base_run'],
                                 'run_images': run_images, 'base_images': base_images, 'shared_images': shared},
            'compare runs over the same images (the same URIs), or choose another --compare_to'))
    return found


def attributes_overlap(summary: Mapping, settings: Settings) -> List[RunWarning]:
    """Image attributes given for under half of the images sliced (or none): the slices of the others
    are their `null` value."""
    if 'image_attributes' not in summary:
        return []
    matched, evaluated = summary['image_attributes']['images_with_attributes'], summary['image_attributes']['images']
    if matched >= LOW_OVERLAP * evaluated and (matched or not evaluated):
        return []
    rows = summary['image_attributes']['rows_used']
    return [RunWarning(
        'image_attributes_no_match' if not matched else 'image_attributes_low_match',
        f'the image attributes name {matched:,} of the {evaluated:,} images sliced ({rows:,} rows used): the '
        f'others fall in each attribute\'s null slice', {'images_with_attributes': matched,
                                                        'images_sliced': evaluated, 'attribute_rows_used': rows},
        f'make --image_attributes name images by the URIs the predictions use (in its column '
        f'{settings.slices.image_attributes_key})')]


def sizes_overlap(summary: Mapping, settings: Settings) -> List[RunWarning]:
    """--image_sizes that gives the size of under half of the images."""
    images = summary['images_written']
    matched = summary['image_sizes']['from_manifest']
    if not settings.sizes.image_sizes or not images or matched >= LOW_OVERLAP * images:
        return []
    return [RunWarning(
        'image_sizes_no_match' if not matched else 'image_sizes_low_match',
        f'--image_sizes gave the size of {matched:,} of the {images:,} images'
        + ('' if matched else ': its image URIs match none of the predictions\''),
        {'images': images, 'from_manifest': matched, 'unknown': summary['image_sizes']['unknown']},
        'list each image by the URI the predictions name (their ID or instance content), or give '
        '--image_size for one size, or --probe_image_sizes')]


def labels_never_seen(settings: Settings, seen: set) -> List[RunWarning]:
    """A label that --keep_labels, --drop_labels or --label_thresholds names and no annotation has."""
    post = settings.postprocessing
    found = []
    for option, labels in (('keep_labels', post.keep_labels or ()), ('drop_labels', post.drop_labels or ()),
                           ('label_thresholds', tuple(post.label_thresholds))):
        for label in labels:
            if label in seen:
                continue
            near = near_spelling(label, seen)
            found.append(RunWarning(
                'label_never_seen', f'--{option} names {label!r}, which no annotation scored at or above '
                f'{post.score_floor} has'
                + (f' (did you mean {near!r}?)' if near else ''),
                {'option': option, 'label': label, 'near': near},
                f'write the label as the predictions spell it{f": {near!r}" if near else ""}'))
    return found


def near_spelling(label: str, seen: Iterable[str]) -> Optional[str]:
    """The seen label closest to `label`: the same but for case or spaces first, then a close match."""
    seen = sorted(seen)
    folded = {candidate.casefold().strip(): candidate for candidate in seen}
    if label.casefold().strip() in folded:
        return folded[label.casefold().strip()]
    close = difflib.get_close_matches(label, seen, n=1, cutoff=0.75)
    return close[0] if close else None


SIZE_OPTIONS = '--image_sizes, --image_size or --probe_image_sizes'


def empty_exports(summary: Mapping, settings: Settings) -> List[RunWarning]:
    """An export format that wrote no image, and why."""
    found = []
    for fmt, figures in summary.get('export', {}).items():
        if figures['images']:
            continue
        removed = figures['removed']
        if removed.get('size_unknown'):
            why, fix = (f'{fmt} needs each image\'s size, and {removed["size_unknown"]:,} boxes had none',
                        f'give {SIZE_OPTIONS}')
        elif settings.export.export_select == 'errors':
            why, fix = ('no evaluated image had a false positive or a miss',
                        'nothing to review; --export_select kept exports every image')
        elif settings.export.export_select == 'disagreements':
            why, fix = ('no compared image had a box that is not the same as the base run\'s',
                        'nothing to review; --export_select kept exports every image')
        elif settings.export.export_select == 'uncertain':
            why, fix = (f'no annotation scored in [{settings.export.uncertain_min}, {settings.export.uncertain_max})',
                        'widen --uncertain_min and --uncertain_max')
        elif removed:
            why, fix = ('the format\'s limits removed every box: ' + ', '.join(f'{k} {v}' for k, v in removed.items()),
                        'see docs/export.md for the format\'s limits')
        else:
            why, fix = ('the run kept no detection', 'lower the thresholds')
        figures = {'format': fmt, 'select': settings.export.export_select, 'removed': dict(removed)}
        found.append(RunWarning('export_empty', f'the {fmt} export wrote no image: {why}', figures, fix))
    return found


def render(warnings: List[Mapping]) -> str:
    """The console's lines: one per warning, with its fix."""
    return '\n'.join(f'warning [{w["code"]}]: {w["message"]}\n  fix: {w["fix"]}' for w in warnings)
