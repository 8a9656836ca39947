"""The post-processing steps, in the order they run: score thresholds, label filter, box area,
region of interest, non-maximum suppression, top-K. Each step keeps a subset of the rows the steps
before it kept, and counts what it removed. Pure: numpy and the geometry module."""
from typing import Dict, NamedTuple, Optional, Sequence

import numpy as np

from pipeline.config.settings import PostprocessingSettings
from pipeline.core import geometry


class Selection(NamedTuple):
    kept: np.ndarray  # row indices that survive every step
    suppressed: np.ndarray  # row indices removed by the box filters, ROI, NMS or top-K
    removed: Dict[str, int]  # rows removed by each step, in order


# The steps in the order they apply; those after the label filter count as "suppressed" per image.
STEPS = ('threshold', 'label_filter', 'min_box_area', 'roi', 'nms', 'max_detections')
_SUPPRESSING_STEPS = STEPS[2:]


def select_detections(line_index: np.ndarray, scores: np.ndarray, boxes: np.ndarray,
                      labels: Sequence[Optional[str]], label_ids: Sequence[Optional[str]],
                      postprocessing: PostprocessingSettings) -> Selection:
    """Applies score thresholds -> label filter -> box area -> region of interest -> NMS -> top-K,
    each on the rows the previous steps kept, and counts what each step removed."""
    alive = np.arange(len(scores))
    removed: Dict[str, int] = {}
    suppressed = []
    for step in STEPS:
        mask = _step_mask(step, alive, line_index, scores, boxes, labels, label_ids, postprocessing)
        if mask is None:
            continue
        removed[step] = int(len(alive) - mask.sum())
        if step in _SUPPRESSING_STEPS:
            suppressed.append(alive[~mask])
        alive = alive[mask]
    suppressed_rows = np.concatenate(suppressed) if suppressed else np.zeros(0, dtype=np.int64)
    return Selection(alive, suppressed_rows, removed)


def _step_mask(step, alive, line_index, scores, boxes, labels, label_ids,
               postprocessing: PostprocessingSettings) -> Optional[np.ndarray]:
    """The keep-mask of one step over the `alive` rows, or None when the step is off."""
    if step == 'threshold':
        alive_labels = [labels[i] for i in alive.tolist()] if postprocessing.label_thresholds else ()
        return geometry.threshold_mask(scores[alive], alive_labels, postprocessing.score_threshold,
                                       postprocessing.label_thresholds)
    if step == 'label_filter':
        if postprocessing.keep_labels is None and postprocessing.drop_labels is None:
            return None
        keep, drop = set(postprocessing.keep_labels or ()), set(postprocessing.drop_labels or ())
        return np.fromiter(
            ((postprocessing.keep_labels is None or labels[i] in keep) and labels[i] not in drop
             for i in alive.tolist()), dtype=bool, count=len(alive))
    if step == 'min_box_area':
        if postprocessing.min_box_area is None:
            return None
        return geometry.box_areas(boxes[alive]) >= postprocessing.min_box_area
    if step == 'roi':
        if postprocessing.roi_wkt is None:
            return None
        return geometry.roi_mask(boxes[alive], geometry.region_of_interest(postprocessing.roi_wkt),
                                 postprocessing.roi_min_overlap)
    if step == 'nms':
        if postprocessing.nms_iou is None:
            return None
        if postprocessing.nms_class_agnostic:
            classes = np.zeros(len(alive), dtype=np.int64)
        else:
            # Per label by display name; a box without one is grouped by its label id.
            classes = np.array([labels[i] if labels[i] is not None else f'\0id:{label_ids[i]}'
                                for i in alive.tolist()], dtype=object)
        return geometry.nms_mask(line_index[alive], scores[alive], boxes[alive], classes,
                                 postprocessing.nms_iou)
    if postprocessing.max_detections is None:
        return None
    return geometry.top_k_mask(line_index[alive], scores[alive], postprocessing.max_detections)
