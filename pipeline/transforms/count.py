"""Counting: every count reported both as a Beam Metrics counter (seen live on the Dataflow job page)
and as data for the in-pipeline summary; dead letters by kind; duplicate image URIs."""
import collections
import zlib
from typing import Dict, List, Optional, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from pipeline.core import counts as names
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


def _bucketed_uri_counts(element: Tuple[Optional[str], List[str]]):
    """Pre-counts one batch's URIs (of one prediction run: two runs that predict one image are no
    duplicate) into a few hash buckets (crc32: stable across processes), so the per-key combine below
    sees one element per bucket and batch, not one per image."""
    run, uris = element
    buckets: Dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    for uri in uris:
        buckets[zlib.crc32(uri.encode('utf-8')) % DUPLICATE_BUCKETS][(run, uri)] += 1
    return list(buckets.items())


class MergeCountersFn(beam.CombineFn):
    def create_accumulator(self):
        return collections.Counter()

    def add_input(self, accumulator, counter):
        accumulator.update(counter)
        return accumulator

    def merge_accumulators(self, accumulators):
        merged: collections.Counter = collections.Counter()
        for accumulator in accumulators:
            merged.update(accumulator)
        return merged

    def extract_output(self, accumulator):
        return accumulator


class CountDuplicateImageUris(beam.PTransform):
    """(run, image URIs of a batch) -> the distinct image URIs seen on more than one line of one run
    (each line is kept; the summary says so)."""

    def expand(self, image_uris):
        return (image_uris
                | 'BucketUris' >> beam.FlatMap(_bucketed_uri_counts)
                | 'CountPerUri' >> beam.CombinePerKey(MergeCountersFn())
                | 'DuplicatesPerBucket' >> beam.MapTuple(
                    lambda _, counter: sum(1 for n in counter.values() if n > 1))
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
