"""The PTransforms that wire the pure parts together. Elements stay coarse: a batch of lines in, Arrow
tables out, never one element per detection."""
import collections
import gc
import logging
import zlib
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms import window
from apache_beam.transforms.deduplicate import DeduplicatePerKey
from apache_beam.utils.timestamp import Duration

from pipeline import dead_letters, notifications, sources
from pipeline.formats import INVALID_RECORD, UNREADABLE_FILE, Prediction, parse_line
from pipeline.options import Settings
from pipeline.sizes import SizeResolver, load_manifest
from pipeline.sources import scheme_of
from pipeline.tables import build_tables

METRICS_NAMESPACE = 'prediction_tables'
# A batch of lines is one element: big enough to amortize Beam's per-element cost, small enough that
# its Arrow tables stay a few MB.
BATCH_LINES = 2000
BATCH_BYTES = 8 * 1024 * 1024
MAX_LISTED_OTHER_FILES = 100
DUPLICATE_BUCKETS = 64


class LineBatch(NamedTuple):
    """Non-blank lines of one shard, in file order."""
    source_file: str
    lines: List[bytes]


def counted(counts: Dict[str, int]) -> beam.pvalue.TaggedOutput:
    """Reports counts both as Beam Metrics (seen live in the Dataflow console) and as data for the
    in-pipeline summary."""
    for name, value in counts.items():
        if isinstance(value, int) and value:
            Metrics.counter(METRICS_NAMESPACE, name).inc(value)
    return beam.pvalue.TaggedOutput('counts', counts)


class DiscoverFilesFn(beam.DoFn):
    """An input pattern -> every file under it, counted by kind; result and error shards go on as
    (path, size), and what cannot be read there (a dangling or looping link, a folder that cannot be
    listed) becomes an `unreadable_file` dead letter."""

    def __init__(self, skip=None):
        self._skip = skip

    def process(self, pattern: str):
        for found in sources.discover(pattern, self._skip):
            kind = sources.classify(found.path)
            counts = {f'files_{kind}': 1}
            if isinstance(found, sources.Unlisted):
                yield beam.pvalue.TaggedOutput('dead_letters', dead_letters.make_dead_letter(
                    UNREADABLE_FILE, found.path, f'could not read this entry under --input: {found.reason}'))
            elif kind == sources.OTHER:
                counts['other_files'] = [found.path]
            else:
                yield found.path, found.size
            yield counted(counts)


class ReadRangeFn(beam.DoFn):
    """ShardRange -> LineBatch; blank lines are counted and skipped; a file that cannot be read (or a
    .gz that breaks part-way) becomes one `unreadable_file` dead letter after the lines read before it."""

    def __init__(self, batch_lines: int = BATCH_LINES, batch_bytes: int = BATCH_BYTES):
        self._batch_lines = batch_lines
        self._batch_bytes = batch_bytes

    def process(self, shard_range: sources.ShardRange):
        path = shard_range.path
        lines_read = blank = 0
        batch: List[bytes] = []
        batch_bytes = 0
        try:
            with sources.open_shard(path) as handle:
                for line in sources.read_range_lines(handle, shard_range.start, shard_range.end):
                    lines_read += 1
                    if sources.is_blank(line):
                        blank += 1
                        continue
                    batch.append(line)
                    batch_bytes += len(line)
                    if len(batch) >= self._batch_lines or batch_bytes >= self._batch_bytes:
                        yield LineBatch(path, batch)
                        batch, batch_bytes = [], 0
        except Exception as exc:  # pylint: disable=broad-except
            if batch:
                yield LineBatch(path, batch)
                batch = []
            yield beam.pvalue.TaggedOutput(
                'dead_letters', unreadable_dead_letter(shard_range, exc, lines_read))
        if batch:
            yield LineBatch(path, batch)
        yield counted({'lines_read': lines_read, 'blank_lines': blank})


def unreadable_dead_letter(shard_range: sources.ShardRange, exc: Exception, lines_read: int) -> dict:
    """One `unreadable_file` dead letter; its payload is the unfinished line at the break, if any."""
    where = (f'bytes {shard_range.start}-{shard_range.end}' if shard_range.end is not None
             else 'the file')
    partial = getattr(exc, 'partial_line', b'') or None
    message = (f'could not read {where}: {exc if isinstance(exc, sources.ReadFailure) else repr(exc)}; '
               f'{lines_read} complete lines were read before the failure'
               + (f', and the payload holds the {len(partial)} bytes of the unfinished line'
                  if partial else ''))
    return dead_letters.make_dead_letter(UNREADABLE_FILE, shard_range.path, message, partial)


class ReadShards(beam.PTransform):
    """A file pattern -> {'batches': LineBatch, 'dead_letters': dict, 'counts': dict}. `skip` leaves
    out the paths of our own outputs when they lie under the input."""

    def __init__(self, pattern: str, range_bytes: int = sources.DEFAULT_RANGE_BYTES,
                 batch_lines: int = BATCH_LINES, skip=None):
        super().__init__()
        self._pattern = pattern
        self._range_bytes = range_bytes
        self._batch_lines = batch_lines
        self._skip = skip

    def expand(self, pbegin):
        shards = (
            pbegin
            | 'InputPattern' >> beam.Create([self._pattern])
            | 'DiscoverFiles' >> beam.ParDo(DiscoverFilesFn(self._skip)).with_outputs(
                'dead_letters', 'counts', main='shards'))
        read = shards.shards | 'ReadShardRanges' >> ReadShardRanges(self._range_bytes, self._batch_lines)
        counts = (shards.counts, read['counts']) | 'FlattenReadCounts' >> beam.Flatten()
        dead = (shards.dead_letters, read['dead_letters']) | 'FlattenReadDeadLetters' >> beam.Flatten()
        return dict(read, counts=counts, dead_letters=dead)


class ReadShardRanges(beam.PTransform):
    """(path, size) of shards -> {'batches': LineBatch, 'dead_letters': dict, 'counts': dict}: each
    shard split into byte ranges, spread over the workers, read as batches of lines."""

    def __init__(self, range_bytes: int = sources.DEFAULT_RANGE_BYTES, batch_lines: int = BATCH_LINES):
        super().__init__()
        self._range_bytes = range_bytes
        self._batch_lines = batch_lines

    def expand(self, shards):
        range_bytes = self._range_bytes
        read = (
            shards
            | 'SplitIntoRanges' >> beam.FlatMapTuple(
                lambda path, size: sources.split_ranges(path, size, range_bytes))
            | 'Balance' >> beam.Reshuffle()
            | 'ReadRanges' >> beam.ParDo(ReadRangeFn(self._batch_lines)).with_outputs(
                'dead_letters', 'counts', main='batches'))
        return {'batches': read.batches, 'dead_letters': read.dead_letters, 'counts': read.counts}


@beam.typehints.with_output_types(Tuple[str, Any])  # a str key: a deterministic coder for the state
class ParseNotificationsFn(beam.DoFn):
    """Pub/Sub message -> (dedupe key, NotifiedShard) for the shards under --input; every other
    notification is counted by why it is ignored."""

    def __init__(self, prefix: Optional[str]):
        self._prefix = prefix

    def process(self, message):
        parsed = notifications.parse_notification(message.data, message.attributes, self._prefix)
        if isinstance(parsed, notifications.Ignored):
            Metrics.counter(METRICS_NAMESPACE, f'notifications_ignored_{parsed.reason}').inc()
            logging.info('Ignored a notification (%s): %s', parsed.reason, parsed.detail)
            return
        Metrics.counter(METRICS_NAMESPACE, 'notifications_accepted').inc()
        yield parsed.dedupe_key, parsed


class SizeNotifiedShardFn(beam.DoFn):
    """NotifiedShard -> (path, size), the size from the notification or else from Cloud Storage; a
    shard that cannot be found any more becomes an `unreadable_file` dead letter."""

    def process(self, shard: notifications.NotifiedShard):
        Metrics.counter(METRICS_NAMESPACE, f'files_{sources.classify(shard.path)}').inc()
        size = shard.size
        if size is None:
            try:
                size = FileSystems.match([shard.path], limits=[1])[0].metadata_list[0].size_in_bytes
            except Exception as exc:  # pylint: disable=broad-except
                yield beam.pvalue.TaggedOutput('dead_letters', unreadable_dead_letter(
                    sources.ShardRange(shard.path, 0, None), exc, 0))
                return
        yield shard.path, size


class ShardsFromNotifications(beam.PTransform):
    """Pub/Sub messages (Cloud Storage notifications) -> {'shards': (path, size) in fixed windows,
    'dead_letters': shards that could not be found}. A shard version notified again (Pub/Sub
    redelivers, buckets re-notify) within the dedupe horizon comes out once."""

    def __init__(self, prefix: Optional[str], window_seconds: int, dedupe_hours: int):
        super().__init__()
        self._prefix = prefix
        self._window_seconds = window_seconds
        self._dedupe_hours = dedupe_hours

    def expand(self, messages):
        shards = (
            messages
            | 'ParseNotifications' >> beam.ParDo(ParseNotificationsFn(self._prefix))
            # Still in the global window: a redelivery in a later window is a duplicate too.
            | 'OncePerShardVersion' >> DeduplicatePerKey(
                processing_time_duration=Duration(seconds=self._dedupe_hours * 3600))
            | 'Shards' >> beam.Values()
            | 'Window' >> beam.WindowInto(window.FixedWindows(self._window_seconds))
            | 'ShardSizes' >> beam.ParDo(SizeNotifiedShardFn()).with_outputs(
                'dead_letters', main='shards'))
        return {'shards': shards.shards, 'dead_letters': shards.dead_letters}


class ReadNotifiedShards(beam.PTransform):
    """A Pub/Sub subscription of Cloud Storage notifications -> the same outputs as ReadShards, in
    fixed windows."""

    def __init__(self, subscription: str, prefix: Optional[str], window_seconds: int,
                 dedupe_hours: int, batch_lines: int = BATCH_LINES):
        super().__init__()
        self._subscription = subscription
        self._shards = ShardsFromNotifications(prefix, window_seconds, dedupe_hours)
        self._batch_lines = batch_lines

    def expand(self, pbegin):
        shards = (pbegin
                  | 'ReadNotifications' >> beam.io.ReadFromPubSub(
                      subscription=self._subscription, with_attributes=True)
                  | 'ShardsFromNotifications' >> self._shards)
        read = shards['shards'] | 'ReadShardRanges' >> ReadShardRanges(batch_lines=self._batch_lines)
        dead = (shards['dead_letters'], read['dead_letters']) | 'FlattenReadDeadLetters' >> beam.Flatten()
        return dict(read, dead_letters=dead)


class ParseBatchFn(beam.DoFn):
    """LineBatch -> Arrow tables for detections and images, dead letters, image URIs and counts."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self._resolver: Optional[SizeResolver] = None

    def setup(self):
        tune_garbage_collector()

    def process(self, batch: LineBatch, manifest):
        settings = self._settings
        if self._resolver is None:
            self._resolver = SizeResolver(manifest, settings.probe_image_sizes, settings.image_size,
                                          # the resolved input's scheme; streaming
                                          # without --input: Cloud Storage objects
                                          settings.input_scheme or scheme_of(settings.input or 'gs://'),
                                          settings.probe_allowed_prefixes)
        timestamp = dead_letters.utc_timestamp()
        score_floor = settings.score_floor
        predictions, sizes, rejected = [], [], []
        for line in batch.lines:
            parsed = parse_line(line, settings.input_format, score_floor)
            if isinstance(parsed, Prediction):
                predictions.append(parsed)
                sizes.append(self._resolver.resolve(parsed.image_uri))
            else:
                rejected.append(dead_letters.from_rejection(parsed, batch.source_file, line, timestamp))
        tables = build_tables(predictions, sizes, batch.source_file,
                              sources.prediction_run(batch.source_file), settings)
        counts = dict(tables.counts)
        counts.update(self._resolver.probe_failures)
        self._resolver.probe_failures.clear()
        if tables.detections.num_rows:
            yield beam.pvalue.TaggedOutput('detections', tables.detections)
        if tables.images.num_rows:
            yield beam.pvalue.TaggedOutput('images', tables.images)
            yield beam.pvalue.TaggedOutput('image_uris', [p.image_uri for p in predictions])
        for record in rejected:
            yield beam.pvalue.TaggedOutput('dead_letters', record)
        yield counted(counts)


# Python's cyclic collector runs every 700 net container allocations, and a full pass walks every
# object of the worker (Beam, pyarrow, ...). Parsing allocates about 6 dicts and lists per annotation,
# none in a cycle: with the defaults the collector took over 20% of a run (200k-image benchmark, 13.9 s
# -> 10.7 s in one process). Freezing what startup allocated keeps full passes off it for good.
GC_YOUNG_THRESHOLD = 100_000


def tune_garbage_collector() -> None:
    """Once per worker process, before the first batch."""
    if gc.get_threshold()[0] < GC_YOUNG_THRESHOLD:
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, 50, 100)


def failed_batch_to_dead_letters(failure):
    """The net under ParseBatchFn: a batch that raised unexpectedly becomes one invalid_record dead
    letter per line, so no line is lost even to a bug."""
    batch, (exc_type, exc_repr, _) = failure
    message = f'unexpected error while processing this batch: {exc_type.__name__}: {exc_repr}'
    timestamp = dead_letters.utc_timestamp()
    for line in batch.lines:
        yield dead_letters.make_dead_letter(INVALID_RECORD, batch.source_file, message, line,
                                            timestamp=timestamp)


class ParsePredictions(beam.PTransform):
    """LineBatch -> {'detections', 'images' (pa.Table), 'dead_letters' (dict), 'image_uris', 'counts'}."""

    def __init__(self, settings: Settings, manifest):
        super().__init__()
        self._settings = settings
        self._manifest = manifest  # a singleton PCollection: uri -> (width, height), or None

    def expand(self, batches):
        parsed = batches | 'ParseLines' >> beam.ParDo(
            ParseBatchFn(self._settings),
            manifest=beam.pvalue.AsSingleton(self._manifest),
        ).with_outputs(
            'detections', 'images', 'image_uris', 'dead_letters', 'counts', main='unused',
        ).with_exception_handling(main_tag='unused', dead_letter_tag='failed_batches')
        failed = parsed.failed_batches | 'FailedBatchesToDeadLetters' >> beam.FlatMap(
            failed_batch_to_dead_letters)
        dead = (parsed.dead_letters, failed) | 'FlattenParseDeadLetters' >> beam.Flatten()
        return {'detections': parsed.detections, 'images': parsed.images,
                'image_uris': parsed.image_uris, 'dead_letters': dead, 'counts': parsed.counts}


class LoadManifest(beam.PTransform):
    """The image-sizes manifest as a singleton PCollection (None when no manifest is given), read on a
    worker through FileSystems so gs:// manifests work on Dataflow."""

    def __init__(self, path: Optional[str]):
        super().__init__()
        self._path = path

    def expand(self, pbegin):
        return (pbegin
                | 'ManifestPath' >> beam.Create([self._path])
                | 'LoadManifest' >> beam.Map(lambda path: load_manifest(path) if path else None))


def count_dead_letter(record: dict) -> dict:
    counts = {f'dead_letters_{record["kind"]}': 1}
    Metrics.counter(METRICS_NAMESPACE, next(iter(counts))).inc()
    return counts


class CountDeadLetters(beam.PTransform):
    """Dead letters by kind, counted from the dead-letter output itself."""

    def expand(self, dead):
        return (dead
                | 'KindCount' >> beam.Map(count_dead_letter)
                | 'SumKinds' >> beam.CombineGlobally(MergeCountsFn()).without_defaults())


def _bucketed_uri_counts(uris: List[str]):
    """Pre-counts one batch's URIs into a few hash buckets (crc32: stable across processes), so the
    per-key combine below sees one element per bucket and batch, not one per image."""
    buckets: Dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    for uri in uris:
        buckets[zlib.crc32(uri.encode('utf-8')) % DUPLICATE_BUCKETS][uri] += 1
    return list(buckets.items())


class MergeCountersFn(beam.CombineFn):
    def create_accumulator(self):
        return collections.Counter()

    def add_input(self, accumulator, counter):
        accumulator.update(counter)
        return accumulator

    def merge_accumulators(self, accumulators):
        merged = collections.Counter()
        for accumulator in accumulators:
            merged.update(accumulator)
        return merged

    def extract_output(self, accumulator):
        return accumulator


class CountDuplicateImageUris(beam.PTransform):
    """Distinct image URIs seen on more than one line (each line is kept; the summary says so)."""

    def expand(self, image_uris):
        return (image_uris
                | 'BucketUris' >> beam.FlatMap(_bucketed_uri_counts)
                | 'CountPerUri' >> beam.CombinePerKey(MergeCountersFn())
                | 'DuplicatesPerBucket' >> beam.MapTuple(
                    lambda _, counter: sum(1 for n in counter.values() if n > 1))
                | 'SumDuplicates' >> beam.CombineGlobally(sum))


class MergeCountsFn(beam.CombineFn):
    """Sums dicts of counts; list values (the other files) are concatenated up to a cap."""

    def create_accumulator(self):
        return {}

    def add_input(self, accumulator, counts):
        for name, value in counts.items():
            if isinstance(value, list):
                listed = accumulator.setdefault(name, [])
                listed.extend(value[:MAX_LISTED_OTHER_FILES - len(listed)])
            else:
                accumulator[name] = accumulator.get(name, 0) + value
        return accumulator

    def merge_accumulators(self, accumulators):
        merged = {}
        for accumulator in accumulators:
            self.add_input(merged, accumulator)
        return merged

    def extract_output(self, accumulator):
        return accumulator
