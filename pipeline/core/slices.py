"""Where the model is weak: each run's figures slice by slice (--slice_by), as metrics.json's `slices`
and the rows of <output>/evaluation/slices/. A slice by an image attribute is its images evaluated on
their own (what pycocotools gives on those images alone); box_size is the run's area ranges
(pycocotools' areaRng); prediction_run is each run whole. Pure."""
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from pipeline.core.columns import concat_ranges
from pipeline.core.evaluation import (
    SIZES,
    BucketLines,
    EvaluationFigures,
    LabelTotals,
    RunFigures,
    mean_over_labels,
    run_metrics,
    stat_names,
)
from pipeline.core.image_attributes import BOX_SIZE, PREDICTION_RUN, SliceRule, slice_groups
from pipeline.core.schema import STAT_COLUMNS

# What a slice keeps of its run_metrics entry, and of each label's.
_SLICE_KEYS = ('prediction_run', 'images', 'images_with_prediction', 'ground_truth_boxes', 'detections', 'map',
               'map_50', 'map_75', 'mar', 'stats', 'size_figures')
_LABEL_KEYS = ('label', 'ground_truth_boxes', 'detections', 'ap', 'ap_50', 'ap_75', 'ar', 'tp', 'fp', 'fn', 'stats')


def metrics_with_slices(figures: EvaluationFigures) -> dict:
    """metrics.json, with `slices` when --slice_by asks for them."""
    document = figures.metrics_document()
    if figures.slice_by:
        document['slices'] = slice_entries(figures)
    return document


def slice_entries(figures: EvaluationFigures) -> List[dict]:
    """Per run, per attribute of --slice_by (in its order), per value (bins in order, the images
    without a value last): the run's figures on the slice."""
    entries = []
    for run in figures.runs:
        for attribute in figures.slice_by:
            if attribute == PREDICTION_RUN:
                entries.append(_entry(figures, run.prediction_run, attribute, run.prediction_run, run.labels,
                                      run.images))
            elif attribute == BOX_SIZE:
                entries += [_box_size_entry(figures, run, size) for size in range(len(SIZES))]
            else:
                entries += [_entry(figures, run.prediction_run, attribute, part.slice_value, part.labels, part.images)
                            for part in figures.slices
                            if part.prediction_run == run.prediction_run and part.slice_by == attribute]
    return entries


def _entry(figures: EvaluationFigures, run: Optional[str], attribute: str, value: Optional[str], labels: dict,
           images) -> dict:
    metrics = run_metrics(run, images.evaluated, images.detections, labels, figures.iou_thresholds,
                          images.with_prediction, figures.max_dets, images.beyond_max_dets, images.without_size,
                          figures.eval_iou)
    label_entries = [{key: entry[key] for key in _LABEL_KEYS} for entry in metrics['labels']]
    return {'prediction_run': run, 'slice_by': attribute, 'slice_value': value,
            **{key: metrics[key] for key in _SLICE_KEYS[1:] if key in metrics},
            **{key: sum(entry[key] for entry in label_entries) for key in ('tp', 'fp', 'fn')},
            'labels': label_entries}


def _box_size_entry(figures: EvaluationFigures, run: RunFigures, size: int) -> dict:
    """The run over one of COCO's area ranges: AP and AR of the boxes and detections of that size,
    as pycocotools gives them with that range alone (AR within the last cap only)."""
    names = stat_names(figures.max_dets)
    labels = []
    for label, totals in sorted(run.labels.items()):
        stats = _box_size_stats(figures, totals, size, names)
        labels.append({'label': label, 'ground_truth_boxes': _range_boxes(totals, size), 'detections': None,
                       'ap': stats['ap'], 'ap_50': stats['ap_50'], 'ap_75': stats['ap_75'],
                       'ar': stats[_last_recall(figures)], 'tp': None, 'fp': None, 'fn': None,
                       'stats': stats})
    unsized = run.images.without_size or run.images.evaluated == 0 or run.images.with_prediction == 0
    if unsized:
        labels = [entry | {key: None for key in ('ap', 'ap_50', 'ap_75', 'ar')} | {'stats': dict.fromkeys(names)}
                  for entry in labels]
    stats = {name: mean_over_labels([entry['stats'][name] for entry in labels]) for name in names}
    return {'prediction_run': run.prediction_run, 'slice_by': BOX_SIZE, 'slice_value': SIZES[size],
            'images': None, 'ground_truth_boxes': sum(entry['ground_truth_boxes'] for entry in labels),
            'detections': None, 'map': stats['ap'], 'map_50': stats['ap_50'], 'map_75': stats['ap_75'],
            'mar': stats[_last_recall(figures)], 'stats': stats, 'tp': None, 'fp': None, 'fn': None,
            'labels': labels}


def _last_recall(figures: EvaluationFigures) -> str:
    """The stat of AR within the last maxDets cap (pycocotools' ar_100)."""
    return stat_names(figures.max_dets)[6 + len(figures.max_dets) - 1]


def _range_boxes(totals: LabelTotals, size: int) -> int:
    return 0 if totals.by_area is None else totals.by_area[size].ground_truth


def _box_size_stats(figures: EvaluationFigures, totals: LabelTotals, size: int, names: Sequence[str]) -> dict:
    stats: Dict[str, Optional[float]] = dict.fromkeys(names)
    if totals.by_area is None:
        return stats
    counts = totals.by_area[size]
    ap, recall = counts.average_precision(), counts.recall()
    if ap is None or recall is None:
        return stats
    at = {t: i for i, t in enumerate(figures.iou_thresholds)}
    stats['ap'] = stats[f'ap_{SIZES[size]}'] = float(ap.mean())
    stats['ap_50'] = float(ap[at[0.5]]) if 0.5 in at else None
    stats['ap_75'] = float(ap[at[0.75]]) if 0.75 in at else None
    stats[_last_recall(figures)] = stats[f'ar_{SIZES[size]}'] = float(np.mean(recall))
    return stats


def slice_rows(entries: Sequence[dict]) -> List[Dict[str, Any]]:
    """The rows of the slices table (schema.SLICE_COLUMNS): per slice, one of all its labels (label
    null), then one per label."""
    rows = []
    for entry in entries:
        for label in (None, *entry['labels']):
            source = entry if label is None else label
            rows.append({'prediction_run': entry['prediction_run'], 'slice_by': entry['slice_by'],
                         'slice_value': entry['slice_value'], 'label': None if label is None else label['label'],
                         'images': entry['images'], 'ground_truth_boxes': source['ground_truth_boxes'],
                         'detections': source['detections'], 'tp': source['tp'], 'fp': source['fp'],
                         'fn': source['fn'],
                         **{column.name: source['stats'].get(column.name) for column in STAT_COLUMNS},
                         'detections_per_image': None if not entry['images'] or source['detections'] is None
                         else source['detections'] / entry['images'],
                         'score_p25': None, 'score_median': None, 'score_p75': None})
    return rows


# Without ground truth: what the detections of each slice look like (images, detections per image,
# score quantiles per label), for the same table.
SCORE_QUANTILES = 5  # min, p25, median, p75, max


class SliceCounts(NamedTuple):
    """A slice's images (with a line of the run) and their detections, summed over buckets."""
    images: int = 0
    detections: int = 0

    def plus(self, other: 'SliceCounts') -> 'SliceCounts':
        return SliceCounts(self.images + other.images, self.detections + other.detections)


def bucket_detection_slices(run: Optional[str], lines: BucketLines, values, rules: Sequence[SliceRule],
                            whole_run: bool) -> Tuple[Dict[tuple, SliceCounts], Dict[tuple, np.ndarray]]:
    """One run's first lines of a bucket, sliced: (slice key (run, attribute, place, value) -> its
    counts; (slice key, label or None for all) -> the scores of its detections). `whole_run`: also
    the run whole, as the slice prediction_run."""
    groups = slice_groups(values, rules)
    if whole_run:
        groups[PREDICTION_RUN, 0, run] = np.arange(len(lines.image_uris))
    counts, scores = {}, {}
    for (attribute, order, value), images in groups.items():
        key = (run, attribute, order, value)
        rows = concat_ranges(lines.offsets[images], lines.offsets[images + 1])
        counts[key] = SliceCounts(len(images), len(rows))
        if not len(rows):
            continue
        scores[key, None] = lines.scores[rows]
        codes = lines.label_codes[rows]
        for code in np.unique(codes[codes >= 0]).tolist():  # a detection without a label: in the all-labels row
            scores[key, lines.label_names[code]] = lines.scores[rows][codes == code]
    return counts, scores


def detection_slice_rows(counts: Dict[tuple, SliceCounts], quantiles: Dict[tuple, Tuple[int, Sequence[float]]],
                         slice_by: Sequence[str]) -> List[Dict[str, Any]]:
    """The slices table without ground truth: per run, attribute (in --slice_by's order) and value,
    a row of all labels then one per label: images, detections, detections per image and score
    quantiles (the figures that need ground truth null). `quantiles`: (slice key, label) -> (count,
    [min, p25, median, p75, max])."""
    position = {name: index for index, name in enumerate(slice_by)}
    rows = []
    for key in sorted(counts, key=lambda key: (str(key[0]), position.get(key[1], 0), key[2], key[3] is None,
                                               key[3] or '')):
        run, attribute, _, value = key
        labels = sorted(label for slice_key, label in quantiles if slice_key == key and label is not None)
        for label in (None, *labels):
            detections, values = quantiles.get((key, label), (0, []))
            images = counts[key].images
            rows.append({'prediction_run': run, 'slice_by': attribute, 'slice_value': value,
                         'label': label, 'images': images,
                         'ground_truth_boxes': None, 'detections': detections,
                         'tp': None, 'fp': None, 'fn': None,
                         **{column.name: None for column in STAT_COLUMNS},
                         'detections_per_image': detections / images if images else None,
                         **_score_quantiles(values)})
    return rows


def _score_quantiles(values: Sequence[float]) -> Dict[str, Optional[float]]:
    named = ('score_p25', 'score_median', 'score_p75')
    if len(values) != SCORE_QUANTILES:
        return dict.fromkeys(named)
    return dict(zip(named, (float(value) for value in values[1:4])))
