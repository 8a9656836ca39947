"""Model A against model B as a Beam step: the prediction lines of every run joined by image bucket
(as the evaluation joins them with ground truth), each run's first line of an image compared with the
base run's (core.comparison), and the counts per run and label summed: what crosses the join is one
bucket's lines, and what is merged grows with runs and labels, never with images. With ground truth
in the join as well, each run's images are evaluated at --eval_iou as the evaluation does, and each
changed box says who was right."""
import functools
from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple

import apache_beam as beam
import pyarrow as pa
from apache_beam.transforms.window import GlobalWindows

from pipeline.core import counts as names
from pipeline.core.bucket_evaluation import assemble, detection_outcomes
from pipeline.core.comparison import (
    BucketComparison,
    ImageCounts,
    ImageTruth,
    LabelComparison,
    compare_lines,
    first_lines,
)
from pipeline.core.counts import Counts
from pipeline.io.sizes import SizeResolver
from pipeline.transforms.bucket_parts import BucketParts, bucket_parts, optional_side_inputs
from pipeline.transforms.coders import ArrowTableCoder  # noqa: F401  (registers the coder of pa.Table)
from pipeline.transforms.count import counted_at_bundle_end
from pipeline.transforms.gather import GatheredTables

# Rows of `comparison` gathered before they leave as one Arrow table (and at the end of each bundle).
COMPARISON_TABLE_ROWS = 32 * 1024


class ComparisonResult(NamedTuple):
    figures: beam.PCollection  # ComparisonFigures (one element): comparison.json and the summary's part
    rows: beam.PCollection  # pa.Table batches of the boxes' outcomes (schema.COMPARISON_COLUMNS)
    counts: beam.PCollection  # Counts
    # (bucket, [(run, image URI)]) of the compared images that changed, when asked (--export_select)
    changed: beam.PCollection


class RunComparison(NamedTuple):
    """One run against the base, summed: images, and counts per label (None: boxes without one)."""
    prediction_run: Optional[str]
    images: ImageCounts
    labels: Dict[Optional[str], LabelComparison]


class ComparisonFigures(NamedTuple):
    base_run: Optional[str]
    eval_iou: float
    runs: List[RunComparison]
    judged: bool = False  # against ground truth too: who was right

    def document(self) -> dict:
        """comparison.json: per run (the base aside), its images and, per label, each outcome's count
        and the agreement (the F1 of its boxes against the base's); with ground truth, per run and label
        the changed boxes of each verdict and the images each run gets right where the other does not."""
        judged = ('fixed', 'broken', 'both_wrong', 'both_right', 'images_fixed', 'images_broken')

        def counts_of(counts: LabelComparison) -> dict:
            return {key: value for key, value in counts._asdict().items() if self.judged or key not in judged}
        runs = []
        for run in self.runs:
            total = functools.reduce(LabelComparison.plus, run.labels.values(), LabelComparison())
            runs.append({'prediction_run': run.prediction_run, **run.images._asdict(), 'agreement': total.agreement,
                         **({key: getattr(total, key) for key in judged[:4]} if self.judged else {}),
                         'labels': [{'label': label, **counts_of(counts), 'agreement': counts.agreement}
                                    for label, counts in sorted(run.labels.items(), key=_label_order)]})
        return {'base_run': self.base_run, 'eval_iou': self.eval_iou, 'ground_truth': self.judged, 'runs': runs}


def _label_order(item) -> Tuple[bool, str]:
    return item[0] is not None, item[0] or ''


class TruthSettings(NamedTuple):
    """What the comparison needs to evaluate each run's images as the evaluation does."""
    ml_use: Optional[str]
    max_dets: Tuple[int, ...]
    fixed_size: Optional[Tuple[int, int]]


class CompareBucketFn(beam.DoFn):
    """(bucket, its parts: see evaluation.PREDICTED) -> the boxes' rows of each run against the base
    (main output, Arrow tables gathered per bundle), and per run its images and counts per label."""

    def __init__(self, base_run: Optional[str], eval_iou: float, list_changed: bool = False,
                 truth: Optional[TruthSettings] = None):
        self._base_run = base_run
        self._eval_iou = eval_iou
        self._truth = truth  # with ground truth in the join: how the evaluation reads and matches it
        self._sizes: Optional[SizeResolver] = None
        self._list_changed = list_changed  # the changed images are listed (for --export_select disagreements)
        self._rows = GatheredTables(COMPARISON_TABLE_ROWS, names.COMPARISON_ROWS)
        self._counts = Counts()

    def start_bundle(self):
        self._rows, self._counts = GatheredTables(COMPARISON_TABLE_ROWS, names.COMPARISON_ROWS), Counts()

    def process(self, element, runs: Iterable[Optional[str]], manifest=None):
        bucket, parts = element
        changed: List[Tuple[Optional[str], str]] = []
        joined = bucket_parts(parts)
        by_run = joined.lines
        runs = list(runs)
        judged = self._judged(joined, runs, manifest)
        base, _ = first_lines(by_run.get(self._base_run, []))
        for run in runs:
            if run == self._base_run:
                continue
            lines, further = first_lines(by_run.get(run, []))
            self._counts.scalars[names.COMPARISON_FURTHER_LINES] += further
            if lines is None or base is None:
                only = ImageCounts(only_in_run=0 if lines is None else len(lines.image_uris),
                                   only_in_base=0 if base is None else len(base.image_uris))
                yield beam.pvalue.TaggedOutput('runs', (run, (only, {})))
                continue
            sides = None if judged is None else (judged[run], judged[self._base_run])
            compared: BucketComparison = compare_lines(lines, base, self._base_run, self._eval_iou, sides)
            yield beam.pvalue.TaggedOutput('runs', (run, (compared.images, compared.labels)))
            changed += [(run, uri) for uri in compared.changed] if self._list_changed else []
            gathered = self._rows.add(compared.rows, self._counts)
            if gathered is not None:
                yield gathered
        if changed:
            yield beam.pvalue.TaggedOutput('changed', (bucket, changed))

    def _judged(self, joined: BucketParts, runs: List[Optional[str]],
                manifest) -> Optional[Dict[Optional[str], ImageTruth]]:
        """Each run's ImageTruth in the bucket, as its evaluation has it; None without ground truth."""
        if self._truth is None:
            return None
        if self._sizes is None:  # the images without a line: the manifest's size, else the fixed one
            self._sizes = SizeResolver(manifest, probe=False, fixed=self._truth.fixed_size, allowed_scheme='')
        assembled = assemble(joined.truth, joined.all_lines(), runs, self._truth.ml_use, self._sizes.resolve)
        judged = {}
        for run, (columns, _) in assembled.runs.items():
            at_eval, missed = detection_outcomes(columns, self._eval_iou, self._truth.max_dets)
            judged[run] = ImageTruth.of(columns, at_eval, missed)
        return judged

    def finish_bundle(self):
        gathered = self._rows.take(self._counts)
        if gathered is not None:
            yield GlobalWindows.windowed_value(gathered)
        yield counted_at_bundle_end(self._counts)
        self._counts = Counts()


def _summed(parts: Iterable[Tuple[ImageCounts, Dict[Optional[str], LabelComparison]]]):
    """A run's images and counts per label, summed over its buckets."""
    images, labels = ImageCounts(), {}  # type: ImageCounts, Dict[Optional[str], LabelComparison]
    for part_images, part_labels in parts:
        images = images.plus(part_images)
        for label, counts in part_labels.items():
            labels[label] = labels.get(label, LabelComparison()).plus(counts)
    return images, labels


class CompareRuns(beam.PTransform):
    """(bucket, part) of the prediction lines (see evaluation.PREDICTED), and of the ground truth when
    `truth` is given -> ComparisonResult: every run of `runs` but the base against the base."""

    def __init__(self, base_run: Optional[str], runs: Iterable[Optional[str]], eval_iou: float,
                 list_changed: bool = False, truth: Optional[TruthSettings] = None,
                 manifest: Optional[beam.PCollection] = None):
        super().__init__()
        self._truth = truth
        self._manifest = manifest
        self._list_changed = list_changed
        self._base_run = base_run
        self._runs = list(runs)  # the input's, found at launch: a run without a usable line still counts
        self._eval_iou = eval_iou

    def expand(self, parts):
        runs = parts.pipeline | 'Runs' >> beam.Create(self._runs, reshuffle=False)
        compared = (
            parts
            | 'JoinByBucket' >> beam.GroupByKey()
            | 'CompareImages' >> beam.ParDo(
                CompareBucketFn(self._base_run, self._eval_iou, self._list_changed, self._truth),
                runs=beam.pvalue.AsList(runs), **optional_side_inputs(manifest=self._manifest),
            ).with_output_types(pa.Table).with_outputs('runs', 'counts', 'changed', main='rows'))
        base_run, eval_iou, every_run = self._base_run, self._eval_iou, [run for run in self._runs
                                                                        if run != self._base_run]
        judged = self._truth is not None
        figures = (
            compared.runs
            | 'SumPerRun' >> beam.CombinePerKey(_summed)
            | 'EveryRun' >> beam.combiners.ToList()
            | 'Figures' >> beam.Map(lambda summed: ComparisonFigures(base_run, eval_iou, [
                RunComparison(run, *dict(summed).get(run, (ImageCounts(), {}))) for run in sorted(
                    every_run, key=lambda run: (run is not None, run or ''))], judged)))
        return ComparisonResult(figures, compared.rows, compared.counts, compared.changed)
