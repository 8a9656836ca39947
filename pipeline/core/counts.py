"""Every count of a run: its name (the Beam counter's, in one place) and a typed, mergeable object
that carries counts from the workers to the summary.

A batch's counts and the whole run's are the same type: `merge` adds one into another, so any number
of partial counts, combined in any order, give the run's. The summary reads the fields; the Beam
counters are `metric_items()`, whose names are those the job page has always shown.
"""
import collections
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

import numpy as np

# Scalar counts: a line, an image, a detection, a file, as they pass.
LINES_READ = 'lines_read'
BLANK_LINES = 'blank_lines'
IMAGES_WRITTEN = 'images_written'
IMAGES_WITHOUT_SIZE = 'images_without_size'
DETECTIONS_IN = 'detections_in'
ANNOTATIONS_READ = 'annotations_read'  # on the lines written: detections in + boxes rejected alone
DETECTIONS_KEPT = 'detections_kept'

# Evaluation against ground truth (--ground_truth): the ground truth read, and what was evaluated.
GROUND_TRUTH_ROWS_READ = 'ground_truth_rows_read'  # lines, CSV rows or COCO images
GROUND_TRUTH_ROWS_USED = 'ground_truth_rows_used'
GROUND_TRUTH_OTHER_ML_USE = 'ground_truth_images_other_ml_use'  # left out by --ml_use
GROUND_TRUTH_IMAGES = 'ground_truth_images'  # distinct images evaluated against (after --ml_use)
GROUND_TRUTH_BOXES = 'ground_truth_boxes'
# COCO boxes reaching past their image's edge by more than the coordinate tolerance (kept as given).
GROUND_TRUTH_BOXES_PAST_EDGE = 'ground_truth_boxes_past_edge'
# COCO annotations whose id an earlier annotation of their document has (each counted as given).
GROUND_TRUTH_REPEATED_IDS = 'ground_truth_annotation_ids_repeated'
# Boxes equal to an earlier box of their image (label, crowd flag, coordinates), and the images holding
# them: each counted as given (the same ground truth given twice, say).
GROUND_TRUTH_BOXES_REPEATED = 'ground_truth_boxes_repeated'
GROUND_TRUTH_IMAGES_WITH_REPEATED_BOXES = 'ground_truth_images_with_repeated_boxes'
IMAGES_EVALUATED = 'images_evaluated'  # per run, summed over the runs
IMAGES_WITHOUT_PREDICTION = 'images_without_prediction'
PREDICTIONS_WITHOUT_GROUND_TRUTH = 'predictions_without_ground_truth'
FURTHER_LINES_OF_EVALUATED_IMAGES = 'further_lines_of_evaluated_images'
EVALUATION_MATCH_ROWS = 'evaluation_match_rows'
# Slices (--image_attributes): the attribute rows read and used, rows that repeat an image's (the
# first in file order counts); the images sliced (with ground truth, the evaluated ones; without, each
# run's images with a line, summed over the runs) and those of them that have a row.
IMAGE_ATTRIBUTE_ROWS_READ = 'image_attribute_rows_read'
IMAGE_ATTRIBUTE_ROWS_USED = 'image_attribute_rows_used'
IMAGE_ATTRIBUTE_ROWS_REPEATED = 'image_attribute_rows_repeated'
IMAGES_SLICED = 'images_sliced'
IMAGES_WITH_ATTRIBUTES = 'images_with_attributes'
# Run against run (--compare_to): lines of an image beyond its first (of its run), not compared; rows.
COMPARISON_FURTHER_LINES = 'comparison_further_lines'
COMPARISON_ROWS = 'comparison_rows'
# Export (--export): lines of an image beyond its first (of its run), left out of every format.
EXPORT_FURTHER_LINES = 'export_further_lines'


def exported_images(fmt: str) -> str:
    return f'exported_images_{fmt}'


def exported_boxes(fmt: str) -> str:
    return f'exported_boxes_{fmt}'


def export_removed(fmt: str, reason: str) -> str:
    """Boxes an export left out: no label, too small or over the limit (Vertex AI), size unknown (COCO)."""
    return f'export_removed_{fmt}_{reason}'


# Beam counters only (not in the summary): the duplicate count is also a summary field of its own;
# the others belong to streaming runs and to the dead-letter table.
DUPLICATE_IMAGE_URIS = 'duplicate_image_uris'
DEAD_LETTER_TABLE_WRITE_FAILURES = 'dead_letter_table_write_failures'
NOTIFICATIONS_ACCEPTED = 'notifications_accepted'

# Score histograms (of every annotation, and of the kept ones) use fixed bins, so partial counts from
# any number of batches add up exactly.
HISTOGRAM_BINS = 20
HISTOGRAMS = ('all', 'kept')
MAX_LISTED_OTHER_FILES = 100
# Distinct labels gathered for the warnings on --keep_labels, --drop_labels and --label_thresholds.
MAX_SEEN_LABELS = 10_000
NO_LABEL = '(no display name)'


def files(kind: str) -> str:
    """Files under --input by kind: result, error or other."""
    return f'files_{kind}'


def removed_by(step: str) -> str:
    """Detections a post-processing step removed."""
    return f'removed_by_{step}'


def dead_letters(kind: str) -> str:
    return f'dead_letters_{kind}'


def notifications_ignored(reason: str) -> str:
    return f'notifications_ignored_{reason}'


def ground_truth_ml_use(use: str) -> str:
    """Ground-truth images of an ML use (training, validation, test, unassigned), --ml_use or not."""
    return f'ground_truth_images_ml_use_{use}'


def size_from(source: str) -> str:
    """Images whose size came from the manifest, a probe or the fixed size."""
    return f'images_size_from_{source}'


class Counts:
    """Counts of part of a run (a batch, a file) or of all of it."""

    __slots__ = ('scalars', 'score_bins', 'kept_by_label', 'probe_failures', 'other_files', 'seen_labels')

    def __init__(self, scalars: Optional[Mapping[str, int]] = None):
        self.scalars: collections.Counter = collections.Counter(scalars or {})
        self.score_bins: Dict[str, List[int]] = {name: [0] * HISTOGRAM_BINS for name in HISTOGRAMS}
        self.kept_by_label: collections.Counter = collections.Counter()
        self.probe_failures: collections.Counter = collections.Counter()  # by reason
        self.other_files: List[str] = []  # the first MAX_LISTED_OTHER_FILES
        # The labels of the annotations listed (at or above the score floor), up to MAX_SEEN_LABELS;
        # None where the run does not gather them (no option names a label).
        self.seen_labels: Optional[set] = None

    def get(self, name: str) -> int:
        return int(self.scalars.get(name, 0))

    def add_scores(self, histogram: str, scores: np.ndarray) -> None:
        """Counts per bin [k/BINS, (k+1)/BINS), the last bin closed. A decimal score on a bin edge
        (0.3) falls in the bin it starts, which np.histogram's float edges do not guarantee."""
        bins = np.minimum(np.floor(scores * HISTOGRAM_BINS + 1e-9).astype(np.int64), HISTOGRAM_BINS - 1)
        for index, count in enumerate(np.bincount(bins, minlength=HISTOGRAM_BINS).tolist()):
            self.score_bins[histogram][index] += count

    def add_other_files(self, paths: Iterable[str]) -> None:
        room = MAX_LISTED_OTHER_FILES - len(self.other_files)
        if room > 0:
            self.other_files.extend(list(paths)[:room])

    def add_seen_labels(self, labels: Iterable[Optional[str]]) -> None:
        seen = self.seen_labels if self.seen_labels is not None else set()
        if len(seen) < MAX_SEEN_LABELS:
            seen.update(label for label in set(labels) if label is not None)
        self.seen_labels = seen

    def merge(self, other: 'Counts') -> 'Counts':
        """Adds `other` into these counts; returns them."""
        self.scalars.update(other.scalars)
        for name, bins in other.score_bins.items():
            self.score_bins[name] = [a + b for a, b in zip(self.score_bins[name], bins)]
        self.kept_by_label.update(other.kept_by_label)
        self.probe_failures.update(other.probe_failures)
        self.add_other_files(other.other_files)
        if other.seen_labels is not None:
            self.add_seen_labels(other.seen_labels)
        return self

    def metric_items(self) -> Iterator[Tuple[str, int]]:
        """(Beam counter name, value) of every non-zero count."""
        yield from ((name, value) for name, value in self.scalars.items() if value)
        for name, bins in self.score_bins.items():
            yield from ((f'score_bin_{name}_{i:02d}', n) for i, n in enumerate(bins) if n)
        yield from ((f'kept_label={label}', n) for label, n in self.kept_by_label.items() if n)
        yield from ((f'probe_{reason}', n) for reason, n in self.probe_failures.items() if n)

    def as_metrics(self) -> Dict[str, int]:
        return dict(self.metric_items())

    def __eq__(self, other) -> bool:
        return (isinstance(other, Counts) and self.as_metrics() == other.as_metrics()
                and self.other_files == other.other_files)

    def __repr__(self) -> str:
        return f'Counts({self.as_metrics()!r}, other_files={self.other_files!r})'
