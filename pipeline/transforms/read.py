"""Reading shards: discovery under --input or Cloud Storage notifications, byte ranges spread over the
workers, batches of lines out. Elements stay coarse: a batch of lines, never one element per line."""
import logging
from typing import Any, List, NamedTuple, Optional, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms import window
from apache_beam.transforms.deduplicate import DeduplicatePerKey
from apache_beam.utils.timestamp import Duration

from pipeline.core import counts as names
from pipeline.core import dead_letters, progress
from pipeline.core.counts import Counts
from pipeline.core.dead_letters import UNREADABLE_FILE
from pipeline.core.shards import DEFAULT_RANGE_BYTES, OTHER, ShardRange, classify, is_blank, split_ranges
from pipeline.io import notifications, sources
from pipeline.transforms.coders import LineBatchCoder
from pipeline.transforms.count import METRICS_NAMESPACE, counted

# A batch of lines is one element: big enough to amortize Beam's per-element cost, small enough that
# its Arrow tables stay a few MB.
BATCH_LINES = 2000
BATCH_BYTES = 8 * 1024 * 1024


class LineBatch(NamedTuple):
    """Non-blank lines of one shard, in file order; (range_start, first) places them in the shard: the
    byte range they were read from and the position of the first one among that range's lines."""
    source_file: str
    lines: List[bytes]
    range_start: int = 0
    first: int = 0


beam.coders.registry.register_coder(LineBatch, LineBatchCoder)


class DiscoverFilesFn(beam.DoFn):
    """An input pattern -> every file under it, counted by kind; result and error shards go on as
    (path, size), and what cannot be read there (a dangling or looping link, a folder that cannot be
    listed) becomes an `unreadable_file` dead letter."""

    def __init__(self, skip=None):
        self._skip = skip

    def process(self, pattern: str):
        for found in sources.discover(pattern, self._skip):
            kind = classify(found.path)
            counts = Counts({names.files(kind): 1})
            if isinstance(found, sources.Unlisted):
                yield beam.pvalue.TaggedOutput('dead_letters', dead_letters.make_dead_letter(
                    UNREADABLE_FILE, found.path, f'could not read this entry under --input: {found.reason}'))
            elif kind == OTHER:
                counts.add_other_files([found.path])
            else:
                yield found.path, found.size
            yield counted(counts)


class ReadRangeFn(beam.DoFn):
    """ShardRange -> LineBatch; blank lines are counted and skipped; a file that cannot be read (or a
    .gz that breaks part-way) becomes one `unreadable_file` dead letter after the lines read before it."""

    def __init__(self, batch_lines: int = BATCH_LINES, batch_bytes: int = BATCH_BYTES,
                 report_progress: bool = False):
        self._batch_lines = batch_lines
        self._batch_bytes = batch_bytes
        self._report_progress = report_progress

    def process(self, shard_range: ShardRange):
        path = shard_range.path
        lines_read = blank = reported_lines = emitted = 0
        batch: List[bytes] = []
        batch_bytes = 0
        try:
            with sources.open_shard(path) as handle:
                for line in sources.read_range_lines(handle, shard_range.start, shard_range.end):
                    lines_read += 1
                    if is_blank(line):
                        blank += 1
                        continue
                    batch.append(line)
                    batch_bytes += len(line)
                    if len(batch) >= self._batch_lines or batch_bytes >= self._batch_bytes:
                        yield LineBatch(path, batch, shard_range.start, emitted)
                        emitted += len(batch)
                        if self._report_progress:  # the batch's bytes and the line ends read since
                            progress.report(bytes=batch_bytes + lines_read - reported_lines,
                                            lines=lines_read - reported_lines)
                            reported_lines = lines_read
                        batch, batch_bytes = [], 0
        except Exception as exc:
            if batch:
                yield LineBatch(path, batch, shard_range.start, emitted)
                batch = []
            yield beam.pvalue.TaggedOutput(
                'dead_letters', unreadable_dead_letter(shard_range, exc, lines_read))
        if batch:
            yield LineBatch(path, batch, shard_range.start, emitted)
        if self._report_progress:
            progress.report(bytes=batch_bytes + lines_read - reported_lines, lines=lines_read - reported_lines,
                            range_of=progress.shard_key(path))
        yield counted(Counts({names.LINES_READ: lines_read, names.BLANK_LINES: blank}))


def unreadable_dead_letter(shard_range: ShardRange, exc: Exception, lines_read: int) -> dict:
    """One `unreadable_file` dead letter; its payload is the unfinished line at the break, if any."""
    where = (f'bytes {shard_range.start}-{shard_range.end}' if shard_range.end is not None
             else 'the file')
    partial = getattr(exc, 'partial_line', b'') or None
    message = (f'could not read {where}: {exc if isinstance(exc, sources.ReadFailure) else repr(exc)}; '
               f'{lines_read} complete lines were read before the failure'
               + (f', and the payload holds the {len(partial)} bytes of the unfinished line'
                  if partial else ''))
    return dead_letters.make_dead_letter(UNREADABLE_FILE, shard_range.path, message, partial)


class ReadResult(NamedTuple):
    """What reading gives: batches of lines, the dead letters of what could not be read, counts."""
    batches: beam.PCollection
    dead_letters: beam.PCollection
    counts: beam.PCollection


class ReadShards(beam.PTransform):
    """A file pattern -> ReadResult. `skip` leaves out the paths of our own outputs when they lie under
    the input."""

    def __init__(self, pattern: str, range_bytes: int = DEFAULT_RANGE_BYTES,
                 batch_lines: int = BATCH_LINES, skip=None, report_progress: bool = False):
        super().__init__()
        self._pattern = pattern
        self._range_bytes = range_bytes
        self._batch_lines = batch_lines
        self._skip = skip
        self._report_progress = report_progress

    def expand(self, pbegin):
        shards = (
            pbegin
            | 'InputPattern' >> beam.Create([self._pattern])
            | 'DiscoverFiles' >> beam.ParDo(DiscoverFilesFn(self._skip)).with_outputs(
                'dead_letters', 'counts', main='shards'))
        read = shards.shards | 'ReadShardRanges' >> ReadShardRanges(self._range_bytes, self._batch_lines,
                                                                    self._report_progress)
        counts = (shards.counts, read.counts) | 'FlattenReadCounts' >> beam.Flatten()
        dead = (shards.dead_letters, read.dead_letters) | 'FlattenReadDeadLetters' >> beam.Flatten()
        return ReadResult(read.batches, dead, counts)


class ReadShardRanges(beam.PTransform):
    """(path, size) of shards -> ReadResult: each shard split into byte ranges, spread over the
    workers, read as batches of lines."""

    def __init__(self, range_bytes: int = DEFAULT_RANGE_BYTES, batch_lines: int = BATCH_LINES,
                 report_progress: bool = False):
        super().__init__()
        self._range_bytes = range_bytes
        self._batch_lines = batch_lines
        self._report_progress = report_progress

    def expand(self, shards):
        range_bytes = self._range_bytes
        ranges = shards | 'SplitIntoRanges' >> beam.FlatMapTuple(
            lambda path, size: split_ranges(path, size, range_bytes))
        read = (
            ranges
            | 'Balance' >> beam.Reshuffle()
            | 'ReadRanges' >> beam.ParDo(ReadRangeFn(
                self._batch_lines, report_progress=self._report_progress)).with_output_types(
                LineBatch).with_outputs(
                'dead_letters', 'counts', main='batches'))
        return ReadResult(read.batches, read.dead_letters, read.counts)


@beam.typehints.with_output_types(Tuple[str, Any])  # a str key: a deterministic coder for the state
class ParseNotificationsFn(beam.DoFn):
    """Pub/Sub message -> (dedupe key, NotifiedShard) for the shards under --input; every other
    notification is counted by why it is ignored."""

    def __init__(self, prefix: Optional[str]):
        self._prefix = prefix

    def process(self, message):
        parsed = notifications.parse_notification(message.data, message.attributes, self._prefix)
        if isinstance(parsed, notifications.Ignored):
            Metrics.counter(METRICS_NAMESPACE, names.notifications_ignored(parsed.reason)).inc()
            logging.info('Ignored a notification (%s): %s', parsed.reason, parsed.detail)
            return
        Metrics.counter(METRICS_NAMESPACE, names.NOTIFICATIONS_ACCEPTED).inc()
        yield parsed.dedupe_key, parsed


class SizeNotifiedShardFn(beam.DoFn):
    """NotifiedShard -> (path, size), the size from the notification or else from Cloud Storage; a
    shard that cannot be found any more becomes an `unreadable_file` dead letter."""

    def process(self, shard: notifications.NotifiedShard):
        Metrics.counter(METRICS_NAMESPACE, names.files(classify(shard.path))).inc()
        size = shard.size
        if size is None:
            try:
                size = FileSystems.match([shard.path], limits=[1])[0].metadata_list[0].size_in_bytes
            except Exception as exc:
                yield beam.pvalue.TaggedOutput('dead_letters', unreadable_dead_letter(
                    ShardRange(shard.path, 0, None), exc, 0))
                return
        yield shard.path, size


class NotifiedShards(NamedTuple):
    shards: beam.PCollection  # (path, size) in fixed windows
    dead_letters: beam.PCollection  # shards that could not be found


class ShardsFromNotifications(beam.PTransform):
    """Pub/Sub messages (Cloud Storage notifications) -> NotifiedShards. A shard version notified again (Pub/Sub
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
        return NotifiedShards(shards.shards, shards.dead_letters)


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
        read = shards.shards | 'ReadShardRanges' >> ReadShardRanges(batch_lines=self._batch_lines)
        dead = (shards.dead_letters, read.dead_letters) | 'FlattenReadDeadLetters' >> beam.Flatten()
        return ReadResult(read.batches, dead, read.counts)
