"""The confidence threshold to ship, per label: chosen on the exact curve of a label's true and false
positives at --eval_iou over every distinct score, by one rule:

- `best_f1` (the default): the threshold of the highest F1, the highest such threshold on a tie;
- `target_precision` P: the lowest threshold at which precision reaches P (the most recall that
  keeps precision at P or above);
- `target_recall` R: the highest threshold at which recall reaches R (the fewest detections that
  keep recall at R or above).

A threshold keeps the detections scored at or above it (the decoder's inclusive meaning), so a rerun
with `--label_thresholds @thresholds.csv` keeps exactly the detections counted here: greedy matching,
NMS and the maxDets caps all go by score, and what scores below a threshold never changes what
happens above it. The rerun's tp, fp and fn are these, exactly.
"""
import csv
import io
from typing import Dict, List, NamedTuple, Optional, Sequence

import numpy as np

BEST_F1, TARGET_PRECISION, TARGET_RECALL = 'best_f1', 'target_precision', 'target_recall'


class ThresholdRule(NamedTuple):
    """How each label's threshold is chosen: BEST_F1, or a target precision or recall."""
    name: str = BEST_F1
    target: Optional[float] = None  # the precision or recall to reach

    @classmethod
    def of(cls, target_precision: Optional[float] = None, target_recall: Optional[float] = None) -> 'ThresholdRule':
        if target_precision is not None:
            return cls(TARGET_PRECISION, target_precision)
        if target_recall is not None:
            return cls(TARGET_RECALL, target_recall)
        return cls()


class OperatingThreshold(NamedTuple):
    """A label's chosen threshold and what it gives at --eval_iou; `threshold` None with the reason
    when the rule cannot be met."""
    threshold: Optional[float]
    tp: Optional[int]
    fp: Optional[int]
    fn: Optional[int]
    precision: Optional[float]
    recall: Optional[float]
    f1: Optional[float]
    rule: str
    reason: Optional[str] = None
    target: Optional[float] = None  # the rule's precision or recall to reach

    @classmethod
    def none(cls, rule: ThresholdRule, reason: str) -> 'OperatingThreshold':
        return cls(None, None, None, None, None, None, None, rule.name, reason, rule.target)


def scores_of(tp: int, fp: int, fn: int):
    """(precision, recall, f1) of counts, as the threshold file and the metrics state them (0 where
    undefined)."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def choose(scores: np.ndarray, tp: np.ndarray, fp: np.ndarray, ground_truth: int,
           rule: ThresholdRule) -> OperatingThreshold:
    """The threshold by `rule`, from a label's distinct scores (descending) and its true and false
    positives at each one, over `ground_truth` regular boxes."""
    if not ground_truth:
        return OperatingThreshold.none(rule, 'no ground-truth box of the label: precision and recall need one')
    if not len(scores):
        return OperatingThreshold.none(rule, 'no detection of the label was evaluated')
    kept_tp, kept_fp = np.cumsum(tp, dtype=np.int64), np.cumsum(fp, dtype=np.int64)  # at each threshold
    precision = kept_tp / np.maximum(kept_tp + kept_fp, 1)
    recall = kept_tp / ground_truth
    target = 0.0 if rule.target is None else rule.target
    if rule.name == TARGET_PRECISION:
        reached = np.flatnonzero(precision >= target)
        if not len(reached):
            return OperatingThreshold.none(rule, f'precision never reaches {rule.target:g} at --eval_iou '
                                                 f'(at most {precision.max():.4f})')
        at = int(reached[-1])
    elif rule.name == TARGET_RECALL:
        reached = np.flatnonzero(recall >= target)
        if not len(reached):
            return OperatingThreshold.none(rule, f'recall never reaches {rule.target:g} at --eval_iou '
                                                 f'(at most {recall.max():.4f})')
        at = int(reached[0])
    else:
        if not kept_tp[-1]:
            return OperatingThreshold.none(rule, 'no true positive at any threshold')
        with np.errstate(divide='ignore', invalid='ignore'):
            f1 = np.where(kept_tp > 0, 2 * precision * recall / (precision + recall), 0.0)
        at = int(np.argmax(f1))  # the first of the highest: the highest threshold
    tp_at, fp_at = int(kept_tp[at]), int(kept_fp[at])
    fn_at = ground_truth - tp_at
    precision_at, recall_at, f1_at = scores_of(tp_at, fp_at, fn_at)
    return OperatingThreshold(float(scores[at]), tp_at, fp_at, fn_at, precision_at, recall_at, f1_at, rule.name,
                              target=rule.target)


def threshold_rows(prediction_run: Optional[str], chosen: List[tuple]) -> List[dict]:
    """The rows of thresholds.csv for one run: (label, OperatingThreshold) pairs, in label order."""
    return [{'prediction_run': prediction_run, 'label': label, **point._asdict()}
            for label, point in sorted(chosen, key=lambda item: item[0])]


def csv_text(rows: List[dict], columns: List[str]) -> str:
    """thresholds.csv: a header, then the rows; numbers as Python writes them back exactly (repr), a
    null as an empty field."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator='\n')
    writer.writerow(columns)
    for row in rows:
        writer.writerow(['' if row[name] is None else repr(row[name]) if isinstance(row[name], float) else row[name]
                         for name in columns])
    return buffer.getvalue()


class FileThresholds(NamedTuple):
    """What a thresholds file gives one run: label -> threshold, and the labels it has none for."""
    thresholds: Dict[str, float]
    without: Dict[str, str]  # label -> the file's reason


def read_csv_thresholds(text: str, runs: Sequence[Optional[str]]) -> FileThresholds:
    """The thresholds of one run in a thresholds.csv: its only run's, or the run of the input
    (`runs`: the input's prediction runs) when the file holds several; raises ValueError saying what
    to fix."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [name for name in ('prediction_run', 'label', 'threshold') if name not in (reader.fieldnames or ())]
    if missing:
        raise ValueError(f'not a thresholds file: no {", ".join(missing)} column (a thresholds.csv that an '
                         f'evaluated run wrote has prediction_run, label, threshold, ...)')
    by_run: Dict[str, List[dict]] = {}
    for row in reader:
        by_run.setdefault(row['prediction_run'] or '', []).append(row)
    if not by_run:
        raise ValueError('the file holds no threshold')
    chosen = _chosen_run(sorted(by_run), [run or '' for run in runs])
    thresholds: Dict[str, float] = {}
    without: Dict[str, str] = {}
    for number, row in enumerate(by_run[chosen], start=2):
        label, value = row['label'], (row['threshold'] or '').strip()
        if not label or not label.strip():
            raise ValueError(f'line {number}: the label is empty')
        if label in thresholds or label in without:
            raise ValueError(f'line {number}: {label!r} is given twice for run {chosen!r}')
        if not value:
            without[label] = row.get('reason') or 'no threshold'
            continue
        try:
            threshold = float(value)
        except ValueError:
            raise ValueError(f'line {number}: threshold {value!r} of {label!r} is not a number') from None
        if not 0 <= threshold <= 1:
            raise ValueError(f'line {number}: threshold {value!r} of {label!r} is outside 0 to 1')
        thresholds[label] = threshold
    return FileThresholds(thresholds, without)


def _chosen_run(in_file: List[str], in_input: List[str]) -> str:
    if len(in_file) == 1:
        return in_file[0]
    named = [run for run in in_file if run in in_input]
    if len(named) == 1 and len(set(in_input)) == 1:
        return named[0]
    shown = ', '.join(repr(run) for run in in_file)
    raise ValueError(f'the file holds the thresholds of {len(in_file)} runs ({shown}) and the input is not '
                     'one of them alone: keep the rows of the run to apply (one prediction_run) in the file')
