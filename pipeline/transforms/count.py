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


def _bucketed_uris(element: Tuple[Optional[str], List[str]]):
    """One batch's URIs (of one prediction run: two runs that predict one image are no duplicate) into
    a few hash buckets (crc32: stable across processes), as (the set of them, those listed twice in the
    batch): the per-key combine below sees one element per bucket and batch, not one per image, and
    merges sets in C."""
    run, uris = element
    buckets: Dict[int, List[str]] = collections.defaultdict(list)
    for uri in uris:
        buckets[zlib.crc32(uri.encode('utf-8')) % DUPLICATE_BUCKETS].append(uri)
    for bucket, listed in buckets.items():
        seen = set(listed)
        repeated = set() if len(seen) == len(listed) else {
            uri for uri, lines in collections.Counter(listed).items() if lines > 1}
        yield (run, bucket), (seen, repeated)


class MergeUriSetsFn(beam.CombineFn):
    """(URIs seen, URIs seen more than once) of the parts -> the same of the whole."""

    def create_accumulator(self):
        return set(), set()

    def add_input(self, accumulator, part):
        seen, repeated = accumulator
        part_seen, part_repeated = part
        repeated |= part_repeated
        repeated |= seen & part_seen
        seen |= part_seen
        return seen, repeated

    def merge_accumulators(self, accumulators):
        merged = self.create_accumulator()
        for accumulator in accumulators:
            merged = self.add_input(merged, accumulator)
        return merged

    def extract_output(self, accumulator):
        return accumulator


class CountDuplicateImageUris(beam.PTransform):
    """(run, image URIs of a batch) -> the distinct image URIs seen on more than one line of one run
    (each line is kept; the summary says so)."""

    def expand(self, image_uris):
        return (image_uris
                | 'BucketUris' >> beam.FlatMap(_bucketed_uris)
                | 'UrisPerBucket' >> beam.CombinePerKey(MergeUriSetsFn())
                | 'DuplicatesPerBucket' >> beam.MapTuple(lambda _, sets: len(sets[1]))
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
