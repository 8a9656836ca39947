"""Detections against ground truth, with COCO's definitions (pycocotools' COCOeval, bbox): average
precision and recall from counts that merge associatively, the metrics and the small tables' rows, and
the columns that carry prediction lines to the join.

Pure. Each image's detections of a label past the last maxDets cap are not evaluated (pycocotools');
detections of equal score are merged as one point of the curve, then put in pycocotools' order where
that matters (`ties`). Matching is `matching` (one matcher, one IoU), over a bucket of images at once
(`bucket_evaluation`); the tests hold both to a one-image definition of their own
(tests/evaluation_reference.py), itself held to pycocotools.
"""
import pickle
from typing import Any, Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from pipeline.config.options import COCO_MAX_DETS
from pipeline.core.columns import (
    buckets_of,
    compacted,
    joined_codes,
    label_codes,
    packed_flags,
    rows_of,
    split_by_key,
    stored_counts,
    summed_per_score,
    unpacked_flags,
    widened,
)
from pipeline.core.decoding import DecodedLines
from pipeline.core.error_types import TIDE_CURVE, ErrorCounts, ErrorSummary, label_errors, run_errors
from pipeline.core.matching import FALSE_POSITIVE, IGNORED, TRUE_POSITIVE  # noqa: F401 (the outcomes, re-exported)
from pipeline.core.operating_thresholds import OperatingThreshold, ThresholdRule, choose, threshold_rows
from pipeline.core.ties import (
    COCO_CURVE,
    RECALL_POINTS,
    AreaCounts,
    CurveRule,
    TieBasis,
    area_sample,
    basis_of,
    mixing_scores,
    union_of_scores,
)


def in_pixels(boxes: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Normalized (n, 4) boxes scaled by their image's (n, 2) width and height, where known (NaN: left
    normalized). IoU is then pycocotools' own, on pixels: a coordinate within 1e-9 of a whole pixel is
    that pixel (normalizing 25 by 500 and scaling back gives 25 again, not 25.000000000000004)."""
    scale = np.where(np.isnan(sizes), 1.0, sizes)[:, [0, 1, 0, 1]]
    scaled = boxes * scale
    whole = np.round(scaled)
    near = (np.abs(scaled - whole) <= 1e-9 * np.maximum(np.abs(scaled), 1)) & (scale != 1.0)
    return np.where(near, whole, scaled)


class PrecisionCounts:
    """For one label: true and false positives per score at each IoU threshold, and the ground-truth
    boxes that count (not crowd). Merging adds them up per distinct score: the order of images does
    not matter, and memory grows with distinct scores, not with images. `within`: (caps, T) the true
    positives among each image's first detections of the label, for each of pycocotools' maxDets
    (AR@1, AR@10, AR@100)."""

    def __init__(self, n_thresholds: int, scores: Optional[np.ndarray] = None, tp: Optional[np.ndarray] = None,
                 fp: Optional[np.ndarray] = None, ground_truth: int = 0, distinct: bool = False,
                 within: Optional[np.ndarray] = None, packed: bool = False):
        self.scores = np.zeros(0) if scores is None else scores
        self.tp = np.zeros((n_thresholds, 0), dtype=np.int64) if tp is None else tp
        self.fp = np.zeros((n_thresholds, 0), dtype=np.int64) if fp is None else fp
        self.ground_truth = ground_truth
        self.distinct = distinct or scores is None  # the scores are distinct and descending (merged)
        self.within = np.zeros((0, n_thresholds), dtype=np.int64) if within is None else within
        self.n_thresholds = n_thresholds
        self.packed = packed  # tp and fp hold bits (columns.packed_flags): flags, or merged counts all 0 or 1

    @classmethod
    def of(cls, scores: np.ndarray, outcomes: np.ndarray, ground_truth: int,
           within: Optional[np.ndarray] = None) -> 'PrecisionCounts':
        """From detections' scores and their (T, D) outcomes, and the image's regular boxes: kept as
        they are (a bit per detection and threshold) until counts are merged."""
        return cls(outcomes.shape[0], scores, packed_flags(outcomes == TRUE_POSITIVE),
                   packed_flags(outcomes == FALSE_POSITIVE), ground_truth, within=within, packed=True)

    def flags(self, name: str) -> np.ndarray:
        """(T, points) the true ('tp') or false ('fp') positives (merged: their counts), unpacked."""
        values = getattr(self, name)
        return unpacked_flags(values, self.n_thresholds) if self.packed else values

    @classmethod
    def merge_all(cls, parts: Sequence['PrecisionCounts']) -> 'PrecisionCounts':
        """The counts of many parts at once (one sort for all: merging them two by two would sort as
        many times)."""
        scores, (tp, fp) = summed_per_score(np.concatenate([part.scores for part in parts]),
                                            *(np.concatenate([part.flags(name) for part in parts], axis=1)
                                              for name in ('tp', 'fp')))
        counted = [part.within for part in parts if len(part.within)]  # an empty part counts no cap
        within = np.asarray(np.sum(counted, axis=0, dtype=np.int64)) if counted else parts[0].within
        (tp, fp), packed = stored_counts(tp, fp)
        return PrecisionCounts(parts[0].n_thresholds, scores, tp, fp, sum(part.ground_truth for part in parts), True,
                               within, packed)

    def numbers(self) -> 'PrecisionCounts':
        """The same counts with tp and fp as 4-byte numbers (or wider), for reading them."""
        tp, fp = self.flags('tp'), self.flags('fp')
        if not self.packed and tp.dtype != np.uint8:
            return self
        return PrecisionCounts(self.n_thresholds, self.scores, widened(tp), widened(fp), self.ground_truth,
                               self.distinct, self.within)

    def merge(self, other: 'PrecisionCounts') -> 'PrecisionCounts':
        return PrecisionCounts.merge_all([self, other])

    def recall_within(self) -> Optional[np.ndarray]:
        """(caps, T) the recall within each maxDets cap; None without ground truth."""
        return self.within / self.ground_truth if self.ground_truth else None

    def interpolated(self) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        """((T, 101) COCO's interpolated precision at each recall point, (T, 101) the score at which
        each recall point is first reached, -inf where it never is); None without ground truth. Equal
        scores are one point of the curve here: `ties` refines the points of a tied score where true
        and false positives mix, the only ones where their order counts."""
        if not self.ground_truth:
            return None
        merged = self if self.distinct else PrecisionCounts.merge_all([self])  # distinct scores, descending
        return merged.curve(*merged.cumulative())

    def cumulative(self) -> Tuple[np.ndarray, np.ndarray]:
        """(T, S) the true and false positives at each score and above, of merged counts."""
        assert self.distinct, 'cumulative counts are of merged counts'
        return np.cumsum(self.flags('tp'), axis=1, dtype=np.int64), np.cumsum(self.flags('fp'), axis=1, dtype=np.int64)

    def curve(self, tp_total: np.ndarray, fp_total: np.ndarray) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        """`interpolated` of merged counts from their cumulative counts (made once: `ties` reads them too)."""
        if not self.ground_truth:
            return None
        precision = np.zeros((len(tp_total), len(RECALL_POINTS)))
        crossing = np.full(precision.shape, -np.inf)
        for t, (tp, fp) in enumerate(zip(tp_total, fp_total)):
            recall = tp / self.ground_truth
            envelope = np.maximum.accumulate((tp / (tp + fp + np.spacing(1)))[::-1])[::-1]
            at = np.searchsorted(recall, RECALL_POINTS, side='left')
            reached = at < len(envelope)
            precision[t, reached] = envelope[at[reached]]
            crossing[t, reached] = self.scores[at[reached]]
        return precision, crossing

    def average_precision(self) -> Optional[np.ndarray]:
        """(T,) COCO's 101-point interpolated precision; None without ground truth (pycocotools' -1)."""
        interpolated = self.interpolated()
        return None if interpolated is None else interpolated[0].mean(axis=1)

    def recall(self) -> Optional[np.ndarray]:
        """(T,) the highest recall reached; None without ground truth."""
        if not self.ground_truth:
            return None
        return self.flags('tp').sum(axis=1) / self.ground_truth


class PrecisionSummary(NamedTuple):
    """What the metrics need of a label's merged PrecisionCounts, small enough to travel: COCO's
    interpolated precision at each threshold and recall point (AP is its mean over the recall points),
    the highest recall at each threshold, the recall within each maxDets cap (None without ground
    truth), and the regular boxes."""
    precision: Optional[np.ndarray]  # (T, 101)
    best_recall: Optional[np.ndarray]
    ground_truth: int
    within: Optional[np.ndarray] = None

    def raised(self, precision: np.ndarray) -> 'PrecisionSummary':
        """With the precision its tied detections reach in pycocotools' order (ties.raises)."""
        return self if self.precision is None else self._replace(precision=np.maximum(self.precision, precision))

    def recall_within(self) -> Optional[np.ndarray]:
        return self.within

    def average_precision(self) -> Optional[np.ndarray]:
        return None if self.precision is None else self.precision.mean(axis=1)

    def recall(self) -> Optional[np.ndarray]:
        return self.best_recall


def settled(totals: 'LabelTotals', rule: ThresholdRule = ThresholdRule()) -> 'LabelTotals':
    """A run's label totals with the AP counts reduced to what the metrics need, what ordering its
    tied detections needs (None: the merged curve is exact), and the threshold `rule` chooses."""
    areas = [_merging(totals), *(_merging_counts(counts) for counts in totals.by_area or ())]
    merged = [counts if counts.distinct else PrecisionCounts.merge_all([counts]) for counts in areas]
    # One area range at a time: a label's counts and running sums of every range at once would hold
    # some 250 bytes per distinct score and range (1 GB for a label of 825,000 scores).
    # The scores whose outcomes mix, from the counts as stored (only which are above 0 matters).
    tied = union_of_scores([mixing_scores(counts.scores, counts.flags('tp'), counts.flags('fp'),
                                          counts.ground_truth > 0) for counts in merged])
    summaries, samples = [], []
    for a, counts in enumerate(merged):
        numbers = counts.numbers()
        running = numbers.cumulative()
        curve = numbers.curve(*running)
        summaries.append(PrecisionSummary(None if curve is None else curve[0], numbers.recall(),
                                          numbers.ground_truth, numbers.recall_within()))
        if len(tied):
            samples.append(area_sample(AreaCounts(numbers.scores, numbers.tp, numbers.fp, *running,
                                                  numbers.ground_truth, None if curve is None else curve[1]),
                                       tied, first=a == 0))
    ties = basis_of(tied, samples) if len(tied) else None
    errors, error_ties = totals.errors.settled() if isinstance(totals.errors, ErrorCounts) else (totals.errors, None)
    return totals._replace(counts=summaries[0], by_area=None if totals.by_area is None else tuple(summaries[1:]),
                           ties=ties, errors=errors, error_ties=error_ties, operating=_operating(totals, rule))


def _operating(totals: 'LabelTotals', rule: ThresholdRule) -> Optional[OperatingThreshold]:
    if not isinstance(totals.operating, PrecisionCounts):
        return totals.operating
    operating = totals.operating
    merged = (operating if operating.distinct else PrecisionCounts.merge_all([operating])).numbers()
    return choose(merged.scores, merged.tp[0], merged.fp[0], merged.ground_truth, rule)


def raised_totals(totals: 'LabelTotals', precision: np.ndarray) -> 'LabelTotals':
    """Settled totals with the (areas, T, 101) precision of their tied detections (ties.raises)."""
    assert isinstance(totals.counts, PrecisionSummary), 'raised once settled'
    by_area = None if totals.by_area is None else tuple(
        _settled_counts(counts).raised(precision[area]) for area, counts in enumerate(totals.by_area, start=1))
    return totals._replace(counts=totals.counts.raised(precision[0]), by_area=by_area)


def raised_errors(totals: 'LabelTotals', precision: np.ndarray) -> 'LabelTotals':
    """Settled totals with the (ERROR_COLUMNS, 1, 101) precision of their tied error points in
    tidecv's order (ties.raises with error_types.TIDE_CURVE)."""
    assert isinstance(totals.errors, ErrorSummary), 'raised once settled'
    return totals._replace(errors=totals.errors.raised(precision))


def _settled_counts(counts) -> PrecisionSummary:
    assert isinstance(counts, PrecisionSummary), 'raised once settled'
    return counts


def _merging(totals: 'LabelTotals') -> 'PrecisionCounts':
    """The AP counts of totals still being merged (settled ones are not merged again)."""
    assert isinstance(totals.counts, PrecisionCounts), 'settled totals are final'
    return totals.counts


def mean_over_labels(values: List[Optional[float]]) -> Optional[float]:
    """The mean over labels that have ground truth (the others are None), or None when none has."""
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


# Vertex AI's confidence grid for precision, recall and F1 curves.
CONFIDENCE_GRID = tuple(round(0.05 * i, 2) for i in range(1, 20)) + (0.96, 0.97, 0.98, 0.99)
TP, FP, FN = 'tp', 'fp', 'fn'


class LinePrediction(NamedTuple):
    """The kept detections of one prediction line, with what orders the lines of one image: the line
    first in (source file, position) order is the one evaluated."""
    prediction_run: Optional[str]
    image_uri: str
    order: Tuple[str, int, int]  # (source file, start of the byte range read, position of the line in it)
    labels: List[Optional[str]]
    scores: np.ndarray
    boxes: np.ndarray  # (n, 4) normalized


# Images are evaluated in buckets (a hash of their URI): one Beam element carries the lines or ground
# truth of many images, and a worker holds one bucket at a time. The count of buckets follows the size
# of the input, so that a bucket holds about this many bytes of prediction lines whatever the run's size.
BUCKET_INPUT_BYTES = 16 * 1024 * 1024
MAX_BUCKETS = 1 << 20


# What the join by bucket carries, one element per part of a bucket:
# (PREDICTED, prediction run, packed BucketLines), (LABELLED, None, packed BucketTruth) or
# (ATTRIBUTED, None, packed image_attributes.BucketAttributes).
PREDICTED, LABELLED, ATTRIBUTED = 0, 1, 2


def packed(part: Union['BucketLines', Any]) -> bytes:
    """A bucket's part (BucketLines, BucketTruth) as it travels to the join: bytes, so that a runner
    that groups in its own memory (the local one) holds one buffer per part, not its objects."""
    return pickle.dumps(part, protocol=pickle.HIGHEST_PROTOCOL)


def unpacked(data: bytes):
    return pickle.loads(data)


def bucket_count(input_bytes: int) -> int:
    return max(1, min(MAX_BUCKETS, -(-input_bytes // BUCKET_INPUT_BYTES)))


class RunImage(NamedTuple):
    """What one image adds to one run's figures (or, summed, a run's), with an image URI of each side
    that the other lacks (the first in URI order), for the warning when the two hardly overlap."""
    evaluated: int = 0
    without_prediction: int = 0
    predictions_without_ground_truth: int = 0
    other_lines: int = 0  # further lines of an image already evaluated
    detections: int = 0
    ground_truth_only: Optional[str] = None  # an evaluated image without a line of the run
    prediction_only: Optional[str] = None  # an image of the run's lines without ground truth
    beyond_max_dets: int = 0  # detections past the last maxDets cap of their image and label
    without_size: int = 0  # evaluated images whose size is unknown

    @property
    def with_prediction(self) -> int:
        """Ground-truth images the run has a line for: the images both sides share."""
        return self.evaluated - self.without_prediction

    def plus(self, other: 'RunImage') -> 'RunImage':
        return RunImage(self.evaluated + other.evaluated, self.without_prediction + other.without_prediction,
                        self.predictions_without_ground_truth + other.predictions_without_ground_truth,
                        self.other_lines + other.other_lines, self.detections + other.detections,
                        _first(self.ground_truth_only, other.ground_truth_only),
                        _first(self.prediction_only, other.prediction_only),
                        self.beyond_max_dets + other.beyond_max_dets, self.without_size + other.without_size)


def _first(a: Optional[str], b: Optional[str]) -> Optional[str]:
    return b if a is None else a if b is None else min(a, b)


class BucketLines(NamedTuple):
    """Prediction lines of one run as columns: one Beam element, pickled in one piece whatever the
    number of lines (a list of LinePrediction would be pickled line by line), each label's and file's
    text once. The parse step gathers the lines of many batches in one and splits it by bucket."""
    prediction_run: Optional[str]
    source_files: List[str]
    file_codes: np.ndarray  # (lines,) int32: each line's file, a position in source_files
    range_starts: np.ndarray  # (lines,) int64: the start of the byte range each line was read in
    positions: np.ndarray  # (lines,) int64: of each line among its byte range's lines
    image_uris: List[str]
    offsets: np.ndarray  # (lines + 1,): the rows of line i are offsets[i]:offsets[i + 1]
    label_names: List[str]
    label_codes: np.ndarray  # (rows,) int32: positions in label_names, -1 for a detection without one
    scores: np.ndarray
    boxes: np.ndarray  # (rows, 4) normalized
    sizes: Optional[np.ndarray] = None  # (lines, 2) each line's image size in pixels, NaN unknown; None: all

    @classmethod
    def of(cls, prediction_run: Optional[str], source_file: str, range_start: int, positions: Sequence[int],
           image_uris: List[str], offsets: np.ndarray, labels: Sequence[Optional[str]], scores: np.ndarray,
           boxes: np.ndarray, sizes: Optional[np.ndarray] = None) -> 'BucketLines':
        """Lines of one byte range."""
        names, codes = label_codes(labels)
        lines = len(image_uris)
        return cls(prediction_run, [source_file], np.zeros(lines, dtype=np.int32),
                   np.full(lines, range_start, dtype=np.int64), np.asarray(positions, dtype=np.int64), image_uris,
                   np.asarray(offsets, dtype=np.int64), names, codes, scores, boxes, sizes)

    def line_sizes(self) -> np.ndarray:
        """(lines, 2) each line's image size in pixels, NaN where the run does not know it."""
        return np.full((len(self.image_uris), 2), np.nan) if self.sizes is None else self.sizes

    @classmethod
    def joined(cls, parts: Sequence['BucketLines']) -> 'BucketLines':
        """The lines of parts of one run, one part after the other."""
        if len(parts) == 1:
            return parts[0]
        files, file_codes = joined_codes([(part.source_files, part.file_codes) for part in parts])
        labels, codes = joined_codes([(part.label_names, part.label_codes) for part in parts])
        row_base = np.cumsum([0] + [len(part.scores) for part in parts])
        return cls(parts[0].prediction_run, files, file_codes, np.concatenate([part.range_starts for part in parts]),
                   np.concatenate([part.positions for part in parts]),
                   [uri for part in parts for uri in part.image_uris],
                   np.concatenate([[0]] + [part.offsets[1:] + base for part, base in zip(parts, row_base)]),
                   labels, codes, np.concatenate([part.scores for part in parts]),
                   np.concatenate([part.boxes.reshape(-1, 4) for part in parts]),
                   None if all(part.sizes is None for part in parts) else
                   np.concatenate([part.line_sizes() for part in parts]))

    def lines_at(self, lines: np.ndarray) -> 'BucketLines':
        """Some of the lines (positions into these columns), in the order given, with only the names
        of files and labels they use."""
        rows, offsets = rows_of(self.offsets, lines)
        files, file_codes = compacted(self.source_files, self.file_codes[lines])
        labels, label_codes_ = compacted(self.label_names, self.label_codes[rows])
        return BucketLines(self.prediction_run, files, file_codes, self.range_starts[lines], self.positions[lines],
                           [self.image_uris[i] for i in lines.tolist()], offsets, labels, label_codes_,
                           self.scores[rows], self.boxes[rows], None if self.sizes is None else self.sizes[lines])

    def bucket_parts(self, buckets: int) -> Dict[int, 'BucketLines']:
        """The lines split by the bucket of their image, each bucket's in their order."""
        groups = split_by_key(buckets_of(self.image_uris, buckets))
        return {bucket: self.lines_at(lines) for bucket, lines in groups.items()}

    def lines(self) -> Iterator[LinePrediction]:
        bounds, positions = self.offsets.tolist(), self.positions.tolist()
        files, starts = self.file_codes.tolist(), self.range_starts.tolist()
        labels = [self.label_names[code] if code >= 0 else None for code in self.label_codes.tolist()]
        for line, uri in enumerate(self.image_uris):
            start, end = bounds[line], bounds[line + 1]
            order = (self.source_files[files[line]], starts[line], positions[line])
            yield LinePrediction(self.prediction_run, uri, order, labels[start:end], self.scores[start:end],
                                 self.boxes[start:end])


def batch_lines(decoded: DecodedLines, rows: np.ndarray, positions: Sequence[int], source_file: str,
                range_start: int, prediction_run: Optional[str],
                sizes: Optional[Sequence[Optional[Tuple[int, int]]]] = None) -> BucketLines:
    """The kept detections of each decoded line of a batch: `rows` are the kept rows of the decoded
    columns, the rows of a line together in rank order (as the detections table holds them);
    `positions` place each decoded line among its byte range's lines; `sizes` each line's image size
    (width, height), None where unknown."""
    per_line = np.bincount(decoded.line_index[rows], minlength=len(decoded.image_uris))
    known = None if sizes is None or all(size is None for size in sizes) else np.array(
        [(np.nan, np.nan) if size is None else (size[0], size[1]) for size in sizes], dtype=np.float64)
    return BucketLines.of(prediction_run, source_file, range_start, positions, list(decoded.image_uris),
                          np.r_[0, np.cumsum(per_line)], [decoded.labels[row] for row in rows.tolist()],
                          decoded.scores[rows], decoded.boxes[rows], known)


def grid_counts(tp_scores: Sequence[float], fp_scores: Sequence[float], regular: int):
    """(tp, fp, fn) arrays over CONFIDENCE_GRID: what a confidence threshold at each point keeps."""
    grid = np.array(CONFIDENCE_GRID)
    tp = (np.asarray(tp_scores, dtype=np.float64)[None, :] >= grid[:, None]).sum(axis=1)
    fp = (np.asarray(fp_scores, dtype=np.float64)[None, :] >= grid[:, None]).sum(axis=1)
    return tp, fp, regular - tp


def metric_rows(prediction_run: Optional[str], labels: dict, thresholds: Sequence[float]) -> List[dict]:
    """The rows of the BigQuery metrics table: per label and IoU threshold, AP and recall."""
    rows = []
    for label, totals in sorted(labels.items()):
        ap, recall = totals.counts.average_precision(), totals.counts.recall()
        for index, threshold in enumerate(thresholds):
            rows.append({'prediction_run': prediction_run, 'label': label, 'iou_threshold': float(threshold),
                         'ap': None if ap is None else float(ap[index]),
                         'recall': None if recall is None else float(recall[index]),
                         'ground_truth_boxes': totals.counts.ground_truth, 'detections': totals.detections})
    return rows


class LabelTotals(NamedTuple):
    """What one label of one run adds up to: AP counts, detections, and tp/fp/fn at the evaluation IoU,
    overall and at each confidence of CONFIDENCE_GRID. `counts`: while being merged, PrecisionCounts;
    once settled, a PrecisionSummary (the same methods, a few numbers)."""
    counts: Union['PrecisionCounts', 'PrecisionSummary']
    detections: int
    tp: int
    fp: int
    fn: int
    confidence_tp: np.ndarray
    confidence_fp: np.ndarray
    confidence_fn: np.ndarray
    # The AP counts of the small, medium and large area ranges (None: no image size known).
    by_area: Optional[Tuple[Union['PrecisionCounts', 'PrecisionSummary'], ...]] = None
    ties: Optional[TieBasis] = None  # once settled, when its tied detections' order counts
    errors: Optional[Union['ErrorCounts', 'ErrorSummary']] = None  # TIDE's error types (error_types)
    error_ties: Optional[TieBasis] = None  # once settled, when its tied error points' order counts
    # The true and false positives at --eval_iou per score (a one-column PrecisionCounts) while being
    # merged; once settled, the label's chosen threshold (operating_thresholds).
    operating: Optional[Union['PrecisionCounts', OperatingThreshold]] = None


def held_scores(parts: Sequence[LabelTotals]) -> int:
    """The scores the AP, error and operating counts of totals being merged hold (one per detection or
    distinct score)."""
    return sum(len(_merging(part).scores) + (len(part.errors.scores) if isinstance(part.errors, ErrorCounts) else 0)
               + (len(part.operating.scores) if isinstance(part.operating, PrecisionCounts) else 0)
               for part in parts)


def is_merged(totals: LabelTotals) -> bool:
    """Whether totals are the merge of others (counts per distinct score), not one bucket's."""
    return _merging(totals).distinct


def merge_all_totals(parts: Sequence[LabelTotals]) -> LabelTotals:
    """Many parts' totals at once (one sort of the scores for them all)."""
    confidence_tp, confidence_fp, confidence_fn = (np.sum([getattr(part, name) for part in parts], axis=0)
                                                   for name in ('confidence_tp', 'confidence_fp', 'confidence_fn'))
    errors = [part.errors for part in parts if isinstance(part.errors, ErrorCounts)]
    operating = [part.operating for part in parts if isinstance(part.operating, PrecisionCounts)]
    return LabelTotals(PrecisionCounts.merge_all([_merging(part) for part in parts]),
                       sum(part.detections for part in parts), sum(part.tp for part in parts),
                       sum(part.fp for part in parts), sum(part.fn for part in parts),
                       confidence_tp, confidence_fp, confidence_fn, _merged_by_area(parts),
                       errors=ErrorCounts.merge_all(errors) if errors else None,
                       operating=PrecisionCounts.merge_all(operating) if operating else None)


def _merged_by_area(parts: Sequence[LabelTotals]):
    """The area ranges' counts of parts merged; None when a part has none (an image without a size
    leaves the run's size figures null in any case)."""
    if any(part.by_area is None for part in parts):
        return None
    areas = [part.by_area for part in parts if part.by_area is not None]
    return tuple(PrecisionCounts.merge_all([_merging_counts(by_area[area]) for by_area in areas])
                 for area in range(len(areas[0])))


def _merging_counts(counts) -> 'PrecisionCounts':
    assert isinstance(counts, PrecisionCounts), 'settled counts are final'
    return counts


def f1_scores(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray):
    """(precision, recall, f1) arrays; 0 where undefined."""
    with np.errstate(divide='ignore', invalid='ignore'):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return precision, recall, f1


SIZES = ('small', 'medium', 'large')
SIZE_STATS = tuple(f'{kind}_{size}' for kind in ('ap', 'ar') for size in SIZES)


def stat_names(max_dets: Sequence[int]) -> List[str]:
    """The names of the `stats` of metrics.json, in pycocotools' order and as it prints them (AR by
    cap; 0: no cap)."""
    return ['ap', 'ap_50', 'ap_75', *(f'ap_{size}' for size in SIZES), *(f'ar_{cap or "all"}' for cap in max_dets),
            *(f'ar_{size}' for size in SIZES)]


def label_stats(ap: Optional[np.ndarray], within: Optional[np.ndarray], thresholds: Sequence[float],
                max_dets: Sequence[int], by_area: Optional[Sequence[Any]] = None) -> dict:
    """pycocotools' summary numbers of one label (null where it gives -1: no ground truth, of the
    size range or at all, or the threshold not among those evaluated; the size figures also without
    the images' sizes)."""
    at = {t: i for i, t in enumerate(thresholds)}
    recall = [None] * len(max_dets) if within is None or len(within) != len(max_dets) else \
        [float(row.mean()) for row in within]
    sized_ap, sized_ar = [None] * len(SIZES), [None] * len(SIZES)  # type: List[Optional[float]], List[Optional[float]]
    if by_area is not None and ap is not None:
        sized_ap = [None if (value := counts.average_precision()) is None else float(value.mean())
                    for counts in by_area]
        sized_ar = [None if (value := counts.recall()) is None else float(value.mean()) for counts in by_area]
    return dict(zip(stat_names(max_dets), [
        None if ap is None else float(ap.mean()),
        None if ap is None or 0.5 not in at else float(ap[at[0.5]]),
        None if ap is None or 0.75 not in at else float(ap[at[0.75]]),
        *sized_ap, *(None if ap is None else value for value in recall), *sized_ar]))


def curve_threshold(thresholds: Sequence[float], eval_iou: Optional[float]) -> int:
    """The IoU threshold (its position) whose precision-recall curve metrics.json gives: --eval_iou
    when it is one of the thresholds (the tp, fp and fn are at it), else 0.5, else the first."""
    for wanted in (eval_iou, 0.5):
        if wanted is not None and wanted in thresholds:
            return list(thresholds).index(wanted)
    return 0


def label_metrics(label: str, totals: LabelTotals, thresholds: Sequence[float],
                  max_dets: Sequence[int] = COCO_MAX_DETS, curve_at: int = 0) -> dict:
    """One entry of metrics.json's `labels` (the key names are a contract); `pr_curve` is COCO's
    interpolated precision at its 101 recall points (0, 0.01, ... 1) at the thresholds[curve_at]."""
    ap, recall = totals.counts.average_precision(), totals.counts.recall()
    if isinstance(totals.counts, PrecisionSummary):  # settled (the pipeline's)
        precision = totals.counts.precision
    else:
        interpolated = totals.counts.interpolated()
        precision = None if interpolated is None else interpolated[0]
    _, _, f1 = f1_scores(totals.confidence_tp, totals.confidence_fp, totals.confidence_fn)
    best = int(np.argmax(f1)) if len(f1) else 0
    at = {t: i for i, t in enumerate(thresholds)}
    return {
        'label': label, 'ground_truth_boxes': totals.counts.ground_truth, 'detections': totals.detections,
        'ap': None if ap is None else float(ap.mean()),
        'ap_50': None if ap is None or 0.5 not in at else float(ap[at[0.5]]),
        'ap_75': None if ap is None or 0.75 not in at else float(ap[at[0.75]]),
        'ar': None if recall is None else float(recall.mean()),
        'ap_per_iou': None if ap is None else [float(v) for v in ap],
        'pr_curve': None if precision is None else precision[curve_at].tolist(),
        'tp': totals.tp, 'fp': totals.fp, 'fn': totals.fn,
        'best_f1': float(f1[best]) if totals.counts.ground_truth else None,
        'best_f1_confidence': CONFIDENCE_GRID[best] if totals.counts.ground_truth else None,
        'stats': label_stats(ap, totals.counts.recall_within(), thresholds, max_dets, totals.by_area),
        'errors': label_errors(totals.errors) if isinstance(totals.errors, ErrorSummary) else None,
        'operating_threshold': totals.operating._asdict() if isinstance(totals.operating, OperatingThreshold)
        else None,
    }


def run_metrics(prediction_run: Optional[str], images: int, detections: int, labels: dict,
                thresholds: Sequence[float], with_prediction: Optional[int] = None,
                max_dets: Sequence[int] = COCO_MAX_DETS, beyond_max_dets: int = 0,
                images_without_size: Optional[int] = None, eval_iou: Optional[float] = None) -> dict:
    """One entry of metrics.json's `runs`: mAP over the labels that have ground truth (`detections`
    counts those without a label too). A run that shares no image with the ground truth
    (`with_prediction` 0) was not evaluated at all: its figures are null, not 0. The size figures
    (AP and AR small, medium, large) need every evaluated image's size: null otherwise, with why."""
    curve_at = curve_threshold(thresholds, eval_iou)
    entries = [label_metrics(label, totals, thresholds, max_dets, curve_at) for label, totals in sorted(labels.items())]
    # In label order, whatever order the labels came in: the run's error figures are means over them.
    summaries = [totals.errors for _, totals in sorted(labels.items()) if isinstance(totals.errors, ErrorSummary)]
    unsized = images if images_without_size is None else images_without_size
    if unsized:
        entries = [entry | {'stats': entry['stats'] | dict.fromkeys(SIZE_STATS)} for entry in entries]
    if with_prediction == 0:
        entries = [entry | {key: None for key in ('ap', 'ap_50', 'ap_75', 'ar', 'ap_per_iou', 'pr_curve', 'best_f1',
                                                  'best_f1_confidence', 'errors', 'operating_threshold')}
                   | {'stats': dict.fromkeys(entry['stats'])} for entry in entries]
    return {
        'prediction_run': prediction_run, 'images': images,
        **({} if with_prediction is None else {'images_with_prediction': with_prediction}),
        'ground_truth_boxes': sum(e['ground_truth_boxes'] for e in entries), 'detections': detections,
        'detections_beyond_max_dets': beyond_max_dets,
        **({'size_figures': f'null: {unsized} of the {images} evaluated images have no known size (give '
                            f'--image_sizes, --probe_image_sizes or --image_size; COCO ground truth gives it)'}
           if unsized else {}),
        'map': mean_over_labels([e['ap'] for e in entries]),
        'map_50': mean_over_labels([e['ap_50'] for e in entries]),
        'map_75': mean_over_labels([e['ap_75'] for e in entries]),
        'mar': mean_over_labels([e['ar'] for e in entries]),
        'stats': {name: mean_over_labels([e['stats'][name] for e in entries]) for name in stat_names(max_dets)},
        'errors': run_errors(summaries) if summaries and with_prediction != 0 else None,
        'pr_curve_iou': thresholds[curve_at],
        'pr_curve': mean_curve([e['pr_curve'] for e in entries]),
        'labels': entries,
    }


def mean_curve(curves: Sequence[Optional[List[float]]]) -> Optional[List[float]]:
    """The all-labels curve, as pycocotools averages: at each recall point, the mean over the labels
    with ground truth; None when no label has any."""
    present = [curve for curve in curves if curve is not None]
    return np.mean(present, axis=0).tolist() if present else None


def confidence_rows(prediction_run: Optional[str], labels: dict, eval_iou: float) -> List[dict]:
    """The rows of `confidence_metrics`: per label and over all labels (label None), at each confidence
    of CONFIDENCE_GRID, at the evaluation IoU."""
    rows = []
    per_label = [(label, t.confidence_tp, t.confidence_fp, t.confidence_fn) for label, t in sorted(labels.items())]
    if per_label:
        per_label.append((None, *(sum(part[i] for part in per_label) for i in (1, 2, 3))))
    for label, tp, fp, fn in per_label:
        precision, recall, f1 = f1_scores(tp, fp, fn)
        for c, confidence in enumerate(CONFIDENCE_GRID):
            rows.append({'prediction_run': prediction_run, 'label': label, 'iou_threshold': eval_iou,
                         'confidence_threshold': confidence, 'tp': int(tp[c]), 'fp': int(fp[c]), 'fn': int(fn[c]),
                         'precision': float(precision[c]), 'recall': float(recall[c]), 'f1': float(f1[c])})
    return rows


def confusion_rows(prediction_run: Optional[str], cells: dict) -> List[dict]:
    """The rows of `confusion_matrix`; background is None."""
    return [{'prediction_run': prediction_run, 'true_label': true, 'predicted_label': predicted, 'count': count}
            for (true, predicted), count in sorted(cells.items(), key=lambda item: (str(item[0][0]), str(item[0][1])))]


def merge_cells(first: dict, second: dict) -> dict:
    merged = dict(first)
    for key, count in second.items():
        merged[key] = merged.get(key, 0) + count
    return merged


def metrics_document(iou_thresholds: Sequence[float], eval_iou: float, runs: List[dict],
                     max_dets: Sequence[int] = COCO_MAX_DETS, slices: Optional[List[dict]] = None) -> dict:
    """metrics.json: the runs side by side, in prediction_run order (a run without a name first), and
    their slices when asked for (--slice_by)."""
    return {'iou_thresholds': [float(t) for t in iou_thresholds], 'max_dets': list(max_dets),
            'eval_iou': float(eval_iou),
            'runs': sorted(runs, key=lambda run: _run_order(run['prediction_run'])),
            **({} if slices is None else {'slices': slices})}


def _run_order(run: Optional[str]) -> Tuple[bool, str]:
    return run is not None, run or ''


class RunFigures(NamedTuple):
    """One prediction run's evaluation, gathered: its label totals (settled), image counts and
    confusion cells."""
    prediction_run: Optional[str]
    labels: dict  # label -> LabelTotals
    images: RunImage
    cells: dict  # (true label, predicted label) -> count


class SliceFigures(NamedTuple):
    """One slice of a run's evaluated images, by an image attribute, evaluated on its own."""
    prediction_run: Optional[str]
    slice_by: str
    order: int  # the value's place among the attribute's (bins in order; 0 for text)
    slice_value: Optional[str]  # None: the images without a value
    labels: dict  # label -> LabelTotals
    images: RunImage


class TieKind(NamedTuple):
    """One order of equal scores that the figures follow: the curve its tied parts are read by, and
    what they raise in settled totals."""
    curve: CurveRule
    raise_totals: Callable[['LabelTotals', np.ndarray], 'LabelTotals']


# pycocotools' order for the AP counts (LabelTotals.ties, a bucket's `tied`); tidecv's for the error
# types (LabelTotals.error_ties, a bucket's `tied_errors`).
TIE_KINDS = {'ties': TieKind(COCO_CURVE, raised_totals), 'error_ties': TieKind(TIDE_CURVE, raised_errors)}


class EvaluationFigures(NamedTuple):
    """Every run's figures in one value: the small outputs (metrics.json, the confidence, confusion and
    metric rows, the slices) are all made from it."""
    iou_thresholds: Tuple[float, ...]
    eval_iou: float
    runs: List[RunFigures]
    max_dets: Tuple[int, ...] = COCO_MAX_DETS
    slices: Sequence[SliceFigures] = ()
    slice_by: Tuple[str, ...] = ()  # --slice_by, in its order

    @classmethod
    def of(cls, iou_thresholds: Sequence[float], eval_iou: float, parts: Iterable[tuple],
           max_dets: Sequence[int] = COCO_MAX_DETS, slice_by: Sequence[str] = ()) -> 'EvaluationFigures':
        """From ('labels', group, label, LabelTotals settled), ('ties', group, label, the precision its
        tied detections reach: ties.raises), ('error_ties', group, label, the same of its tied error
        points) and ('run', group, RunImage, cells) parts; a group is a run, or a slice of one: (run,
        attribute, place, value)."""
        labels: Dict[Any, dict] = {}
        images: Dict[Any, Tuple[RunImage, dict]] = {}
        raised: Dict[Tuple[str, Any, str], np.ndarray] = {}
        for part in parts:
            if part[0] == 'labels':
                labels.setdefault(part[1], {})[part[2]] = part[3]
            elif part[0] in TIE_KINDS:
                raised[part[0], part[1], part[2]] = part[3]
            else:
                images[part[1]] = (part[2], part[3])
        for (kind, group, label), precision in raised.items():
            labels[group][label] = TIE_KINDS[kind].raise_totals(labels[group][label], precision)
        groups = set(labels) | set(images)
        runs = sorted((group for group in groups if not isinstance(group, tuple)), key=_run_order)
        slices = sorted((group for group in groups if isinstance(group, tuple)),
                        key=lambda group: (_run_order(group[0]), group[2], group[3] is None, group[3] or ''))
        return cls(tuple(iou_thresholds), eval_iou, [
            RunFigures(run, labels.get(run, {}), *images.get(run, (RunImage(), {}))) for run in runs],
            tuple(max_dets), [SliceFigures(group[0], group[1], group[2], group[3], labels.get(group, {}),
                                           images.get(group, (RunImage(), {}))[0]) for group in slices],
            tuple(slice_by))

    def metrics_document(self) -> dict:
        return metrics_document(self.iou_thresholds, self.eval_iou, [
            run_metrics(run.prediction_run, run.images.evaluated, run.images.detections, run.labels,
                        self.iou_thresholds, run.images.with_prediction, self.max_dets, run.images.beyond_max_dets,
                        run.images.without_size, self.eval_iou)
            for run in self.runs], self.max_dets)

    def confidence_rows(self) -> List[dict]:
        return [row for run in self.runs for row in confidence_rows(run.prediction_run, run.labels, self.eval_iou)]

    def confusion_rows(self) -> List[dict]:
        return [row for run in self.runs for row in confusion_rows(run.prediction_run, run.cells)]

    def threshold_rows(self) -> List[dict]:
        """The rows of thresholds.csv: each run's chosen threshold per label."""
        return [row for run in self.runs for row in threshold_rows(run.prediction_run, [
            (label, totals.operating) for label, totals in run.labels.items()
            if isinstance(totals.operating, OperatingThreshold)])]

    def metric_rows(self) -> List[dict]:
        return [row for run in self.runs for row in metric_rows(run.prediction_run, run.labels, self.iou_thresholds)]
