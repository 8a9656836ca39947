"""Counting: every count reported both as a Beam Metrics counter (seen live on the Dataflow job page)
and as data for the in-pipeline summary; dead letters by kind; duplicate image URIs."""
from typing import List, Optional, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from pipeline.core import counts as names
from pipeline.core.columns import fingerprints, repeated_count, split_by_key
from pipeline.core.counts import Counts

METRICS_NAMESPACE = 'prediction_tables'
DUPLICATE_BUCKETS = 64


def counted(counts: Counts) -> beam.pvalue.TaggedOutput:
    """Reports counts both as Beam Metrics (seen live in the Dataflow console) and as data for the
    in-pipeline summary."""
    for name, value in counts.metric_items():
        Metrics.counter(METRICS_NAMESPACE, name).inc(value)
    return beam.pvalue.TaggedOutput('counts', counts)


def count_dead_letter(record: dict) -> Counts:
    name = names.dead_letters(record['kind'])
    Metrics.counter(METRICS_NAMESPACE, name).inc()
    return Counts({name: 1})


class CountDeadLetters(beam.PTransform):
    """Dead letters by kind, counted from the dead-letter output itself."""

    def expand(self, dead):
        return (dead
                | 'KindCount' >> beam.Map(count_dead_letter)
                | 'SumKinds' >> beam.CombineGlobally(MergeCountsFn()).without_defaults())


# Parts a key's fingerprints are gathered in before they are put together in one array.
PRINT_PARTS = 256


def _bucketed_uris(element: Tuple[Optional[str], List[str]]):
    """One batch's URIs (of one prediction run: two runs that predict one image are no duplicate) as
    their fingerprints (core.columns: 16 bytes each), split by a few buckets of them: the per-key
    combine below sees one element per bucket and batch, not one per image. As Python sets of URIs,
    1,000,000 images held about 500 MB more at the end of the run, in the workers and the runner."""
    run, uris = element
    if not uris:
        return
    prints = fingerprints(uris)
    for bucket, rows in split_by_key((prints[:, 0] % DUPLICATE_BUCKETS).astype(np.int64)).items():
        yield (run, bucket), prints[rows]


class CountRepeatedUrisFn(beam.CombineFn):
    """Fingerprints of URIs, (n, 2) arrays -> how many distinct ones occur more than once. The parts
    are gathered as they come (put together every PRINT_PARTS parts) and counted once, at the end;
    they cross between processes as one pickle (the accumulator's coder)."""

    def create_accumulator(self):
        return []

    def add_input(self, accumulator, part):
        accumulator.append(part)
        return _gathered(accumulator)

    def merge_accumulators(self, accumulators):
        return _gathered([part for accumulator in accumulators for part in accumulator])

    def extract_output(self, accumulator) -> int:
        return repeated_count(np.concatenate(accumulator)) if accumulator else 0

    def get_accumulator_coder(self):
        return beam.coders.PickleCoder()


def _gathered(parts: List[np.ndarray]) -> List[np.ndarray]:
    return [np.concatenate(parts)] if len(parts) > PRINT_PARTS else parts


class CountDuplicateImageUris(beam.PTransform):
    """(run, image URIs of a batch) -> the distinct image URIs seen on more than one line of one run
    (each line is kept; the summary says so)."""

    def expand(self, image_uris):
        return (image_uris
                | 'BucketUris' >> beam.FlatMap(_bucketed_uris)
                | 'UrisPerBucket' >> beam.CombinePerKey(CountRepeatedUrisFn())
                | 'DuplicatesPerBucket' >> beam.Values()
                | 'SumDuplicates' >> beam.CombineGlobally(sum))


class MergeCountsFn(beam.CombineFn):
    """Counts of the parts -> the counts of the whole."""

    def create_accumulator(self):
        return Counts()

    def add_input(self, accumulator, counts):
        return accumulator.merge(counts)

    def merge_accumulators(self, accumulators):
        merged = Counts()
        for accumulator in accumulators:
            merged.merge(accumulator)
        return merged

    def extract_output(self, accumulator):
        return accumulator


def counted_at_bundle_end(counts: Counts) -> beam.pvalue.TaggedOutput:
    """`counted`, from a DoFn's finish_bundle: counts gathered over a bundle leave as one element (in
    the global window, as finish_bundle outputs must say), not one per input."""
    output = counted(counts)
    return beam.pvalue.TaggedOutput(output.tag, GlobalWindows.windowed_value(output.value))
