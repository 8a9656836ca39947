"""Parsing: batches of lines into Arrow tables of detections and images, dead letters and counts, with
the image sizes resolved per worker."""
import gc
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.transforms.window import GlobalWindows

from pipeline.config.settings import ExportSettings, PostprocessingSettings, Settings, SizeSettings
from pipeline.core import dead_letters, progress, shards
from pipeline.core.dead_letters import INVALID_RECORD
from pipeline.core.decoding import BatchDecoder
from pipeline.core.evaluation import PREDICTED, BucketLines, batch_lines, packed
from pipeline.core.export import export_batch, split_by_bucket, uncertain_lines
from pipeline.core.tables import build_tables
from pipeline.io.sizes import SizeResolver, load_manifest
from pipeline.io.spill import SpillWriter
from pipeline.transforms.coders import ArrowTableCoder  # noqa: F401  (registers the coder of pa.Table)
from pipeline.transforms.count import counted
from pipeline.transforms.read import LineBatch


def kept_positions(batch: LineBatch, decoded) -> List[int]:
    """The place among its range's lines of each line the decoder kept (its rejected lines left out)."""
    rejected = {position for position, _ in decoded.rejections}
    return [batch.first + position for position in range(len(batch.lines)) if position not in rejected]


def line_place(batch: LineBatch, position: int) -> str:
    """Where the position-th line of a batch is in its shard, in words."""
    number = batch.first + position + 1  # blank lines are not counted
    where = '' if batch.range_start == 0 else f' of the range from byte {batch.range_start}'
    return f'non-blank line {number}{where}'


class ParseBatchFn(beam.DoFn):
    """LineBatch -> Arrow tables for detections and images, dead letters, image URIs and counts, and
    the lines' parts of the evaluation."""

    def __init__(self, input_format: str, postprocessing: PostprocessingSettings, sizes: SizeSettings,
                 report_progress: bool = False, evaluation_buckets: int = 0,
                 export: Optional[ExportSettings] = None, spill_folder: Optional[str] = None,
                 run_names: Tuple[Tuple[str, str], ...] = ()):
        self._input_format = input_format
        self._run_names = dict(run_names)
        self._buckets = evaluation_buckets  # when set, each line's kept detections go to the evaluation
        self._spill_folder = spill_folder  # when set, the evaluation's parts wait there (io.spill)
        self._spill = SpillWriter(spill_folder)  # one per bundle (start_bundle)
        self._gathered: Dict[Optional[str], List[BucketLines]] = {}  # run -> lines kept for the evaluation
        self._gathered_rows = 0
        self._export = export if export is not None and export.enabled else None
        self._report_progress = report_progress
        self._postprocessing = postprocessing
        self._sizes = sizes
        self._resolver: Optional[SizeResolver] = None
        self._decoder: Optional[BatchDecoder] = None

    def setup(self):
        tune_garbage_collector()

    def start_bundle(self):
        self._spill = SpillWriter(self._spill_folder)
        self._gathered, self._gathered_rows = {}, 0

    def finish_bundle(self):
        for part in self._gathered_parts():
            yield beam.pvalue.TaggedOutput(part.tag, GlobalWindows.windowed_value(part.value))
        self._spill.close()

    def process(self, batch: LineBatch, manifest):
        if self._resolver is None:
            settings = self._sizes
            self._resolver = SizeResolver(manifest, settings.probe_image_sizes, settings.image_size,
                                          settings.allowed_scheme or 'gs', settings.probe_allowed_prefixes)
        if self._decoder is None:  # per worker: it learns which format the shards hold
            floor = self._postprocessing.score_floor
            if self._export is not None and self._export.export_select == 'uncertain':
                floor = min(floor, self._export.uncertain_min)  # the band is judged before thresholds
            self._decoder = BatchDecoder(self._input_format, floor)
        decoded = self._decoder.decode(batch.lines)
        timestamp = dead_letters.utc_timestamp()
        rejected = [dead_letters.from_rejection(rejection, batch.source_file, batch.lines[position], timestamp)
                    for position, rejection in decoded.rejections]
        rejected += [dead_letters.make_dead_letter(
            dead_letters.INVALID_BOX, batch.source_file,
            f'{line_place(batch, box.position)}, annotation {box.annotation}: {box.message}; the line and its other '
            f'annotations are kept', batch.lines[box.position], box.image_uri, timestamp=timestamp)
            for box in decoded.box_rejections]
        resolve = self._resolver.resolve
        sizes = [resolve(uri) for uri in decoded.lines.image_uris]
        run = shards.prediction_run(batch.source_file, self._run_names)
        tables = build_tables(decoded.lines, sizes, batch.source_file, run, self._postprocessing)
        counts = tables.counts
        if self._report_progress:
            progress.report(kept=tables.detections.num_rows)
        counts.probe_failures.update(self._resolver.probe_failures)
        self._resolver.probe_failures.clear()
        if tables.detections.num_rows:
            yield beam.pvalue.TaggedOutput('detections', tables.detections)
        if tables.images.num_rows:
            yield beam.pvalue.TaggedOutput('images', tables.images)
            yield beam.pvalue.TaggedOutput('image_uris', (run, decoded.lines.image_uris))
        for record in rejected:
            yield beam.pvalue.TaggedOutput('dead_letters', record)
        positions = kept_positions(batch, decoded) if self._export is not None or self._buckets else []
        if self._export is not None:
            yield from self._exported(decoded.lines, tables.rows, sizes, run, batch, positions)
        yield counted(counts)
        if self._buckets:  # last: the lines are kept only once nothing else of the batch can fail
            yield from self._gather_lines(batch, decoded, tables.rows, run, positions, sizes)

    def _exported(self, decoded, rows, sizes, run, batch: LineBatch, positions: List[int]):
        """The batch's lines to export, with their kept boxes (the uncertain ones, or every line), by
        bucket of their image: each image's first line is chosen there, and the errors selection waits
        there for the evaluation to say which images."""
        export = self._export
        assert export is not None
        if export.export_select == 'uncertain':
            lines = uncertain_lines(decoded, export.uncertain_min, export.uncertain_max)
        else:
            lines = np.arange(len(decoded.image_uris))
        if not len(lines):
            return
        exported = export_batch(decoded, rows, lines, sizes, run, batch.source_file, batch.range_start, positions)
        for bucket, part in split_by_bucket(exported, self._buckets or export.buckets).items():
            yield beam.pvalue.TaggedOutput('exported', (bucket, self._spill.put(packed(part))))

    def _gather_lines(self, batch: LineBatch, decoded, rows, run, positions: List[int], sizes):
        """Keeps the batch's lines (with their image sizes) for the evaluation, first sending on what
        was gathered when it is full: a bundle's lines leave in one part per bucket and run, not one per
        batch."""
        lines = batch_lines(decoded.lines, rows, positions, batch.source_file, batch.range_start, run, sizes)
        if self._gathered_rows >= GATHERED_ROWS:
            yield from self._gathered_parts()
        self._gathered.setdefault(run, []).append(lines)  # last: a batch that failed left nothing here
        self._gathered_rows += len(lines.scores) + len(lines.image_uris)

    def _gathered_parts(self) -> list:
        """(bucket, (PREDICTED, run, packed BucketLines or where it waits)) per bucket and run of the
        gathered lines, all made before any is sent, and the gathered lines let go only then (a failure
        here leaves them to the next try)."""
        parts = [beam.pvalue.TaggedOutput('evaluation_parts', (bucket, (PREDICTED, run, self._spill.put(packed(part)))))
                 for run, gathered in self._gathered.items()
                 for bucket, part in BucketLines.joined(gathered).bucket_parts(self._buckets).items()]
        self._gathered, self._gathered_rows = {}, 0
        return parts


# Lines and detections a worker gathers for the evaluation before it sends them on, split by bucket
# (about 15 MB of columns).
GATHERED_ROWS = 300_000


# Python's cyclic collector runs every 700 net container allocations, and a full pass walks every
# object of the worker (Beam, pyarrow, ...). Parsing allocates several dicts and lists per annotation,
# none in a cycle, so with the defaults the collector takes a large share of a run; freezing what
# startup allocated keeps full passes off it for good.
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


class ParseResult(NamedTuple):
    """What parsing gives: Arrow tables of detections and images, dead letters, the image URIs of each
    batch (for the duplicate count), counts, and when the run evaluates, the parts of the join by bucket:
    each line's kept detections (see evaluation.PREDICTED)."""
    detections: beam.PCollection
    images: beam.PCollection
    image_uris: beam.PCollection  # (run, the image URIs of a batch)
    dead_letters: beam.PCollection
    counts: beam.PCollection
    evaluation_parts: beam.PCollection
    exported: beam.PCollection  # (bucket, packed ExportBatch or where it waits) of the lines to export
    manifest: beam.PCollection  # the --image_sizes manifest (one element: uri -> (width, height), or None)


class ParsePredictions(beam.PTransform):
    """LineBatch -> ParseResult."""

    def __init__(self, settings: Settings, manifest):
        super().__init__()
        self._settings = settings
        self._manifest = manifest  # a singleton PCollection: uri -> (width, height), or None

    def expand(self, batches):
        settings = self._settings
        parsed = batches | 'ParseLines' >> beam.ParDo(
            ParseBatchFn(settings.input.input_format, settings.postprocessing, settings.sizes,
                         settings.launch.progress,
                         settings.evaluation.buckets if settings.joined else 0, settings.export,
                         settings.evaluation.spill_folder, settings.input.run_names),
            manifest=beam.pvalue.AsSingleton(self._manifest),
        ).with_output_types(Any, detections=pa.Table, images=pa.Table).with_outputs(
            'detections', 'images', 'image_uris', 'dead_letters', 'counts', 'evaluation_parts', 'exported',
            main='unused',
        ).with_exception_handling(main_tag='unused', dead_letter_tag='failed_batches')
        failed = parsed.failed_batches | 'FailedBatchesToDeadLetters' >> beam.FlatMap(
            failed_batch_to_dead_letters)
        dead = (parsed.dead_letters, failed) | 'FlattenParseDeadLetters' >> beam.Flatten()
        return ParseResult(parsed.detections, parsed.images, parsed.image_uris, dead, parsed.counts,
                           parsed.evaluation_parts, parsed.exported, self._manifest)


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
