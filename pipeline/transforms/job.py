"""The whole job, batch and streaming: two short composites over the same read, parse-and-filter and
write steps."""
import datetime
import logging
from typing import Any, Dict, Iterable, NamedTuple, Optional, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import AsDict, AsList, AsSingleton, PCollection

from pipeline.config.options import join_path
from pipeline.config.settings import Settings, required
from pipeline.core import counts as names
from pipeline.core import dead_letters
from pipeline.core import summary as run_summary
from pipeline.core.counts import Counts
from pipeline.core.evaluation import unpacked
from pipeline.core.export import ExportBatch, first_lines
from pipeline.core.operating_thresholds import ThresholdRule, csv_text
from pipeline.core.outputs import (
    COMPARISON_FILE,
    COMPARISON_FOLDER,
    EVALUATION_FOLDER,
    METRICS_FILE,
    SLICES_FOLDER,
    THRESHOLDS_FILE,
)
from pipeline.core.schema import (
    COMPARISON_COLUMNS,
    COMPARISON_SCHEMA,
    CONFIDENCE_SCHEMA,
    CONFUSION_SCHEMA,
    DEAD_LETTER_COLUMNS,
    DEAD_LETTER_TABLE_EXTRA_COLUMNS,
    DETECTION_COLUMNS,
    DETECTIONS_SCHEMA,
    IMAGE_COLUMNS,
    IMAGES_SCHEMA,
    MATCHES_SCHEMA,
    SLICE_COLUMNS,
    SLICE_SCHEMA,
    THRESHOLD_COLUMNS,
)
from pipeline.core.slices import metrics_with_slices, slice_rows
from pipeline.io import summary_files
from pipeline.io.bigquery import WriteBigQueryTable, comparison_table, evaluation_tables, slices_table, table_rows
from pipeline.io.locks import release_gcs_lock
from pipeline.io.sinks import (
    WriteDeadLetterFiles,
    WriteParquetTable,
    write_json_document,
    write_small_table,
    write_text_document,
)
from pipeline.io.spill import read_payload
from pipeline.transforms.compare import CompareRuns, TruthSettings
from pipeline.transforms.count import (
    METRICS_NAMESPACE,
    CountDeadLetters,
    CountDuplicateImageUris,
    MergeCountsFn,
    count_dead_letter,
    counted,
)
from pipeline.transforms.evaluate import EvaluateAgainstGroundTruth
from pipeline.transforms.export import ExportsWritten, WriteExports
from pipeline.transforms.parse import LoadManifest, ParsePredictions, ParseResult
from pipeline.transforms.read import ReadNotifiedShards, ReadResult, ReadShards
from pipeline.transforms.read_attributes import AttributesRead, ReadImageAttributes
from pipeline.transforms.read_truth import GroundTruthRead, ReadGroundTruth
from pipeline.transforms.slice_detections import SliceDetections


class TablesWritten(NamedTuple):
    """What the table writes produced: the Parquet files written (None without --output), the
    BigQuery writes' completions, and the rows BigQuery rejected, as dead letters."""
    detection_files: Optional[PCollection]
    image_files: Optional[PCollection]
    table_writes: Tuple[PCollection, ...]
    rejected_rows: Tuple[PCollection, ...]


class EvaluationWritten(NamedTuple):
    """What the evaluation produced and wrote: metrics.json's document, each run's image counts, the
    files written under <output>/evaluation/ (None without --output), the rows of the two small tables,
    the BigQuery writes (and the rows they rejected) and the evaluation's counts."""
    metrics: PCollection
    runs: PCollection
    metrics_file: Optional[PCollection]
    thresholds_file: Optional[PCollection]
    match_files: Optional[PCollection]
    confidence_files: Optional[PCollection]
    confusion_files: Optional[PCollection]
    slice_files: Optional[PCollection]  # with --slice_by
    confidence_rows: PCollection  # their number (one element)
    confusion_rows: PCollection
    table_writes: Tuple[PCollection, ...]
    rejected_rows: Tuple[PCollection, ...]
    counts: PCollection  # the evaluation's and the ground truth's reading
    errors: PCollection  # (bucket, [(run, image URI)]) with a false positive or a miss
    dead_letters: PCollection  # the units of ground truth that cannot be used


class PredictionsToTables(beam.PTransform):
    """The batch job: every shard matched by `pattern` -> detections, images, dead letters and
    summary.json; outputs the summary dict (one element), written after every other output."""

    def __init__(self, settings: Settings, pattern: str, skip=None):
        super().__init__()
        self._settings = settings
        self._pattern = pattern
        self._skip = skip  # paths under --input that belong to our own outputs

    def expand(self, pbegin):
        settings = self._settings
        read = pbegin | 'ReadShards' >> ReadShards(self._pattern, skip=self._skip,
                                                   report_progress=settings.launch.progress)
        parsed = parse_and_filter(pbegin, read, settings)
        tables = write_tables(parsed, settings)
        attributes = read_image_attributes(pbegin, settings)
        truth = read_ground_truth(pbegin, settings, parsed.manifest)
        evaluation = evaluate(parsed, settings, truth, attributes) if truth else None
        sliced = (slice_detections(parsed, settings, attributes)
                  if settings.slices.enabled and not settings.evaluation.enabled else None)
        comparison = compare(parsed, settings, truth) if settings.evaluation.compare_base else None
        exports = exported = None
        if settings.export.enabled:
            if settings.export.export_select == 'errors':
                exported = select_images(parsed.exported, required(evaluation, 'ground_truth').errors)
            elif settings.export.export_select == 'disagreements':
                exported = select_images(parsed.exported, required(comparison, 'compare_to').changed)
            else:
                exported = first_lines_of_images(parsed.exported)
            exports = exported.batches | 'Export' >> WriteExports(required(settings.outputs.output, 'output'),
                                                                  settings.export)
        dead = all_dead_letters(read, parsed, tables, evaluation, comparison, attributes, sliced)
        dead_written = write_dead_letters(dead, settings)
        counts = (
            (read.counts, parsed.counts, dead | 'CountDeadLetters' >> CountDeadLetters(),
             *((evaluation.counts,) if evaluation else ()),
             *((attributes.counts,) if attributes else ()),
             *((sliced.counts,) if sliced else ()),
             *((comparison.counts,) if comparison else ()),
             *((exports.counts, exported.counts) if exports and exported else ()))
            | 'AllCounts' >> beam.Flatten()
            | 'SumCounts' >> beam.CombineGlobally(MergeCountsFn()))
        duplicates = parsed.image_uris | 'DuplicateImageUris' >> CountDuplicateImageUris()
        return self._write_summary(pbegin, counts, duplicates, tables, dead_written, evaluation, exports, comparison,
                                   sliced)

    def _write_summary(self, pbegin, counts, duplicates, tables: TablesWritten,
                       dead_written: 'DeadLettersWritten', evaluation: Optional[EvaluationWritten],
                       exports: Optional[ExportsWritten], comparison: Optional['ComparisonWritten'] = None,
                       sliced: Optional['SlicesWritten'] = None):
        """summary.json, written last: it waits on every write (side inputs), so a run killed before
        the end leaves no summary."""
        settings, pattern = self._settings, self._pattern

        def summarize(_, counts, duplicates, table_writes=(), metrics_document=None, run_images=None,
                      confidence_rows=0, confusion_rows=0, comparison_document=None, slice_row_count=None,
                      **listed):
            del table_writes  # waited for, not read
            outcome = None if metrics_document is None else run_summary.EvaluationOutcome(
                metrics_document, run_images, confidence_rows, confusion_rows)
            rows = summary_files.count_output_rows({name: paths for name, paths in listed.items()
                                                    if name not in DOCUMENTS and not name.startswith('export_')})
            run = run_summary.run_record(settings, datetime.datetime.now(datetime.timezone.utc), beam.__version__)
            summary = run_summary.build_summary(counts, duplicates, settings, pattern, listed, rows, outcome, run,
                                                comparison_document, slice_row_count)
            if settings.outputs.report_file:
                summary['outputs']['report'] = [settings.outputs.report_file]
            summary_files.publish(summary, settings.outputs.summary)
            for lock in settings.launch.job_locks:  # a Dataflow job outlives the launcher that locked
                release_gcs_lock(lock, required(settings.launch.run_id, 'run_id'))
            Metrics.counter(METRICS_NAMESPACE, names.DUPLICATE_IMAGE_URIS).inc(duplicates)
            return summary

        written_files = [('detections', tables.detection_files), ('images', tables.image_files),
                         ('dead_letters', dead_written.files)]
        table_writes = tables.table_writes + dead_written.table_writes
        waits: Dict[str, Any] = {}
        if evaluation is not None:
            written_files += [('evaluation_metrics', evaluation.metrics_file),
                              ('evaluation_thresholds', evaluation.thresholds_file),
                              ('evaluation_matches', evaluation.match_files),
                              ('evaluation_confidence', evaluation.confidence_files),
                              ('evaluation_confusion', evaluation.confusion_files),
                              ('evaluation_slices', evaluation.slice_files)]
            table_writes += evaluation.table_writes
            waits.update(metrics_document=AsSingleton(evaluation.metrics), run_images=AsDict(evaluation.runs),
                         confidence_rows=AsSingleton(evaluation.confidence_rows),
                         confusion_rows=AsSingleton(evaluation.confusion_rows))
        if sliced is not None:
            written_files.append(('evaluation_slices', sliced.files))
            table_writes += sliced.table_writes
            waits['slice_row_count'] = AsSingleton(sliced.rows | 'CountSliceRows' >> beam.Map(len))
        if comparison is not None:
            written_files += [('comparison', comparison.row_files), ('comparison_json', comparison.document_file)]
            table_writes += comparison.table_writes
            waits['comparison_document'] = AsSingleton(comparison.document)
        if exports is not None:
            written_files += [(f'export_{fmt}', files) for fmt, files in exports.files.items()]
        waits.update({name: AsList(written) for name, written in written_files if written is not None})
        if table_writes:
            waits['table_writes'] = AsList(table_writes | 'TableWrites' >> beam.Flatten())
        return (pbegin
                | 'SummaryTrigger' >> beam.Create([None])
                | 'WriteSummary' >> beam.Map(
                    summarize, counts=AsSingleton(counts), duplicates=AsSingleton(duplicates), **waits))


class StreamingPredictionsToTables(beam.PTransform):
    """The streaming job: each shard its Cloud Storage notification announces -> the same tables (files
    per window); counts are Beam counters only, as a job that never ends has no summary. Outputs the
    dead letters' counts."""

    def __init__(self, settings: Settings):
        super().__init__()
        self._settings = settings

    def expand(self, pbegin):
        settings = self._settings
        streaming = settings.streaming
        read = pbegin | 'ReadNotifiedShards' >> ReadNotifiedShards(
            required(streaming.input_subscription, 'input_subscription'), settings.input.input,
            streaming.window_seconds, streaming.dedupe_hours)
        parsed = parse_and_filter(pbegin, read, settings)
        tables = write_tables(parsed, settings)
        dead = all_dead_letters(read, parsed, tables)
        write_dead_letters(dead, settings)
        return dead | 'CountDeadLetters' >> beam.Map(count_dead_letter)


def parse_and_filter(pbegin, read: ReadResult, settings: Settings) -> ParseResult:
    """The step both jobs share: lines parsed and validated, thresholds and post-processing applied,
    image sizes resolved."""
    manifest = pbegin | 'ImageSizesManifest' >> LoadManifest(settings.sizes.image_sizes)
    return read.batches | 'ParsePredictions' >> ParsePredictions(settings, manifest)


def write_tables(parsed: ParseResult, settings: Settings) -> TablesWritten:
    """Detections and images to Parquet and/or BigQuery."""
    detection_files = image_files = None
    if settings.outputs.output:
        detection_files = parsed.detections | 'WriteDetections' >> WriteParquetTable(
            settings.outputs.output, 'detections', DETECTIONS_SCHEMA, windowed=settings.is_streaming)
        image_files = parsed.images | 'WriteImages' >> WriteParquetTable(
            settings.outputs.output, 'images', IMAGES_SCHEMA, windowed=settings.is_streaming)
    table_writes, rejected = [], []
    if settings.bigquery.output_table:
        for name, tables, table, columns in (
                ('Detections', parsed.detections, settings.bigquery.output_table, DETECTION_COLUMNS),
                ('Images', parsed.images, settings.bigquery.images_table, IMAGE_COLUMNS)):
            result = (tables
                      | f'{name}Rows' >> beam.FlatMap(table_rows)
                      | f'Write{name}Table' >> bigquery_write(settings, required(table, 'output_table'), columns))
            rejected.append(result.failures)
            table_writes.append(result.done)
    return TablesWritten(detection_files, image_files, tuple(table_writes), tuple(rejected))


class ExportedLines(NamedTuple):
    batches: PCollection  # ExportBatch: each image's first line of its run, in file order
    counts: PCollection  # Counts: the further lines of the exported images, left out


def _first_lines(batches: Iterable[ExportBatch]):
    """A bucket's exported lines -> each image's first line, and the count of the others, tagged."""
    kept, further = first_lines(batches)
    yield from kept
    if further:
        yield counted(Counts({names.EXPORT_FURTHER_LINES: further}))


def first_lines_of_images(batches: PCollection) -> ExportedLines:
    """(bucket, packed ExportBatch or where it waits) -> each image's first line: an image on several
    prediction lines is exported once, from the line the evaluation uses."""
    chosen = (batches
              | 'ExportedLinesByBucket' >> beam.GroupByKey()
              | 'FirstLineOfEachImage' >> beam.FlatMap(
                  lambda element: _first_lines(unpacked(read_payload(data)) for data in element[1]))
              .with_outputs('counts', main='batches'))
    return ExportedLines(chosen.batches, chosen.counts)


def select_images(batches: PCollection, listed: PCollection) -> ExportedLines:
    """(bucket, packed ExportBatch or where it waits) and (bucket, [(run, image URI)]) -> the first line
    of each image listed for the run of the line: those the evaluation found a false positive or a miss
    in, or those where a run disagrees with the base run."""
    def keep(element):
        _, joined = element
        wanted = {pair for part in joined['listed'] for pair in part}
        with_errors = []
        for batch in (unpacked(read_payload(data)) for data in joined['batches']):
            lines = [line for line, uri in enumerate(batch.image_uris) if (batch.prediction_run, uri) in wanted]
            if lines:
                with_errors.append(batch.lines(lines))
        yield from _first_lines(with_errors)
    chosen = ({'batches': batches, 'listed': listed}
              | 'JoinListedByBucket' >> beam.CoGroupByKey()
              | 'ListedImages' >> beam.FlatMap(keep).with_outputs('counts', main='batches'))
    return ExportedLines(chosen.batches, chosen.counts)


def all_dead_letters(read: ReadResult, parsed: ParseResult, tables: TablesWritten,
                     evaluation: Optional[EvaluationWritten] = None,
                     comparison: Optional['ComparisonWritten'] = None, attributes: Optional[AttributesRead] = None,
                     sliced: Optional['SlicesWritten'] = None) -> PCollection:
    extra = (evaluation.dead_letters, *evaluation.rejected_rows) if evaluation else ()
    extra += comparison.rejected_rows if comparison else ()
    extra += (attributes.dead_letters,) if attributes else ()
    extra += sliced.rejected_rows if sliced else ()
    return ((read.dead_letters, parsed.dead_letters, *tables.rejected_rows, *extra)
            | 'AllDeadLetters' >> beam.Flatten())


def read_image_attributes(pbegin, settings: Settings) -> Optional[AttributesRead]:
    """The image attributes (--image_attributes), read for the join by bucket when an attribute is
    sliced by."""
    slices, options = settings.slices, settings.evaluation
    if not slices.attributes:
        return None
    return pbegin | 'ReadImageAttributes' >> ReadImageAttributes(
        slices.attribute_files, slices.image_attributes_key, slices.attributes, slices.slice_bins, options.buckets,
        options.spill_folder)


def read_ground_truth(pbegin, settings: Settings, manifest=None) -> Optional[GroundTruthRead]:
    """The ground truth (--ground_truth), read once for the joins by bucket that take it: the
    evaluation's, and the comparison's; a COCO image without its size takes the run's (`manifest`:
    --image_sizes, and --image_size)."""
    options = settings.evaluation
    if not options.enabled:
        return None
    return pbegin | 'ReadGroundTruth' >> ReadGroundTruth(
        options.ground_truth_files, options.ground_truth_image_prefix or '', options.buckets, options.spill_folder,
        fixed_size=options.fixed_image_size, manifest=manifest)


def evaluate(parsed: ParseResult, settings: Settings, truth: GroundTruthRead,
             attributes: Optional[AttributesRead] = None) -> EvaluationWritten:
    """The kept detections evaluated against the ground truth, and the evaluation's outputs:
    metrics.json and three Parquet tables under <output>/evaluation/, and/or four BigQuery tables."""
    options, slices = settings.evaluation, settings.slices
    result = ((parsed.evaluation_parts, truth.parts, *((attributes.parts,) if attributes else ()))
              | 'LinesAndGroundTruth' >> beam.Flatten()
              | 'Evaluate' >> EvaluateAgainstGroundTruth(options.iou_thresholds, options.eval_iou,
                                                         options.eval_confidence, options.ml_use, options.runs,
                                                         options.max_dets, options.spill_folder,
                                                         options.fixed_image_size, parsed.manifest,
                                                         error_images=settings.export.enabled
                                                         and settings.export.export_select == 'errors',
                                                         rule=ThresholdRule.of(options.target_precision,
                                                                               options.target_recall),
                                                         slice_by=slices.slice_by,
                                                         rules=attributes.rules if attributes else None))
    figures = result.figures
    metrics = figures | 'MetricsDocument' >> beam.Map(metrics_with_slices)
    runs = figures | 'RunImages' >> beam.FlatMap(lambda f: [(run.prediction_run, run.images) for run in f.runs])
    confidence_rows = figures | 'CountConfidenceRows' >> beam.Map(lambda f: len(f.confidence_rows()))
    confusion_rows = figures | 'CountConfusionRows' >> beam.Map(lambda f: len(f.confusion_rows()))
    metrics_file = thresholds_file = match_files = confidence_files = confusion_files = slice_files = None
    root = settings.outputs.output
    if root:
        evaluation_root = join_path(root, EVALUATION_FOLDER)
        metrics_file = metrics | 'WriteMetrics' >> beam.Map(write_json_document,
                                                            join_path(evaluation_root, METRICS_FILE))
        thresholds_path, fields = join_path(evaluation_root, THRESHOLDS_FILE), [c.name for c in THRESHOLD_COLUMNS]
        thresholds_file = figures | 'WriteThresholds' >> beam.Map(
            lambda f: write_text_document(csv_text(f.threshold_rows(), fields), thresholds_path))
        match_files = result.matches | 'WriteMatches' >> WriteParquetTable(evaluation_root, 'matches', MATCHES_SCHEMA)
        confidence_folder = join_path(evaluation_root, 'confidence_metrics')
        confidence_files = figures | 'WriteConfidence' >> beam.Map(
            lambda f: write_small_table(f.confidence_rows(), CONFIDENCE_SCHEMA, confidence_folder))
        confusion_folder = join_path(evaluation_root, 'confusion_matrix')
        confusion_files = figures | 'WriteConfusion' >> beam.Map(
            lambda f: write_small_table(f.confusion_rows(), CONFUSION_SCHEMA, confusion_folder))
        if slices.enabled:
            slices_folder = join_path(evaluation_root, SLICES_FOLDER)
            slice_files = metrics | 'WriteSlices' >> beam.Map(
                lambda document: write_small_table(slice_rows(document['slices']), SLICE_SCHEMA, slices_folder))
    table_writes, rejected = [], []
    if settings.bigquery.output_table:
        for (name, rows), (table, columns) in zip(
                (('Matches', result.matches | 'MatchRows' >> beam.FlatMap(table_rows)),
                 ('Metrics', figures | 'MetricRows' >> beam.FlatMap(lambda f: f.metric_rows())),
                 ('Confidence', figures | 'ConfidenceRows' >> beam.FlatMap(lambda f: f.confidence_rows())),
                 ('Confusion', figures | 'ConfusionRows' >> beam.FlatMap(lambda f: f.confusion_rows()))),
                evaluation_tables(required(settings.bigquery.output_table, 'output_table'))):
            written = rows | f'WriteEval{name}Table' >> bigquery_write(settings, table, columns)
            rejected.append(written.failures)
            table_writes.append(written.done)
        if slices.enabled:
            written = (metrics | 'SliceRows' >> beam.FlatMap(lambda document: slice_rows(document['slices']))
                       | 'WriteEvalSlicesTable' >> bigquery_write(
                           settings, slices_table(required(settings.bigquery.output_table, 'output_table')),
                           SLICE_COLUMNS))
            rejected.append(written.failures)
            table_writes.append(written.done)
    counts = (result.counts, truth.counts)
    return EvaluationWritten(metrics, runs, metrics_file, thresholds_file, match_files, confidence_files,
                             confusion_files, slice_files, confidence_rows, confusion_rows, tuple(table_writes),
                             tuple(rejected), counts | 'EvaluationCounts' >> beam.Flatten(), result.errors,
                             truth.dead_letters)


class SlicesWritten(NamedTuple):
    """The slices without ground truth: the rows (one list), the table's file (None without --output),
    its BigQuery write, and the counts of the join."""
    rows: PCollection
    files: Optional[PCollection]
    table_writes: Tuple[PCollection, ...]
    rejected_rows: Tuple[PCollection, ...]
    counts: PCollection


def slice_detections(parsed: ParseResult, settings: Settings, attributes: Optional[AttributesRead]) -> SlicesWritten:
    """--slice_by without ground truth: each run's detections slice by slice, into
    <output>/evaluation/slices/ and <table>_eval_slices."""
    parts = ((parsed.evaluation_parts, *((attributes.parts,) if attributes else ()))
             | 'LinesAndAttributes' >> beam.Flatten())
    result = parts | 'SliceDetections' >> SliceDetections(settings.slices.slice_by,
                                                          attributes.rules if attributes else None)
    files = None
    if settings.outputs.output:
        folder = join_path(settings.outputs.output, EVALUATION_FOLDER, SLICES_FOLDER)
        files = result.rows | 'WriteSlices' >> beam.Map(write_small_table, SLICE_SCHEMA, folder)
    table_writes, rejected = (), ()  # type: Tuple[PCollection, ...], Tuple[PCollection, ...]
    if settings.bigquery.output_table:
        written = (result.rows | 'SliceRows' >> beam.FlatMap(lambda rows: rows)
                   | 'WriteEvalSlicesTable' >> bigquery_write(settings, slices_table(settings.bigquery.output_table),
                                                              SLICE_COLUMNS))
        table_writes, rejected = (written.done,), (written.failures,)
    return SlicesWritten(result.rows, files, table_writes, rejected, result.counts)


class ComparisonWritten(NamedTuple):
    """What the comparison of the runs produced and wrote: comparison.json's document, the files
    written (None without --output), and its counts."""
    document: PCollection
    document_file: Optional[PCollection]
    row_files: Optional[PCollection]
    table_writes: Tuple[PCollection, ...]
    rejected_rows: Tuple[PCollection, ...]  # rows the BigQuery table refused: dead letters
    counts: PCollection
    changed: PCollection  # (bucket, [(run, image URI)]) of the images that changed


def compare(parsed: ParseResult, settings: Settings, truth: Optional[GroundTruthRead] = None) -> ComparisonWritten:
    """Every run against the base run (--compare_to), image by image: <output>/comparison/ (a row per
    box and outcome) and <output>/comparison.json; with ground truth, who was right."""
    options = settings.evaluation
    (base,) = options.compare_base
    parts = parsed.evaluation_parts
    if truth is not None:
        parts = (parts, truth.parts) | 'LinesAndGroundTruthToCompare' >> beam.Flatten()
    result = parts | 'CompareRuns' >> CompareRuns(
        base, options.runs, options.eval_iou,
        list_changed=settings.export.enabled and settings.export.export_select == 'disagreements',
        truth=None if truth is None else TruthSettings(options.ml_use, options.max_dets, options.fixed_image_size),
        manifest=parsed.manifest)
    document = result.figures | 'ComparisonDocument' >> beam.Map(lambda figures: figures.document())
    document_file = row_files = None
    root = settings.outputs.output
    if root:
        document_file = document | 'WriteComparisonDocument' >> beam.Map(
            write_json_document, join_path(root, COMPARISON_FILE))
        row_files = result.rows | 'WriteComparison' >> WriteParquetTable(root, COMPARISON_FOLDER, COMPARISON_SCHEMA)
    table_writes, rejected = (), ()  # type: Tuple[PCollection, ...], Tuple[PCollection, ...]
    if settings.bigquery.output_table:
        table = comparison_table(settings.bigquery.output_table)
        written = (result.rows | 'ComparisonRows' >> beam.FlatMap(table_rows)
                   | 'WriteComparisonTable' >> bigquery_write(settings, table, COMPARISON_COLUMNS))
        table_writes, rejected = (written.done,), (written.failures,)
    return ComparisonWritten(document, document_file, row_files, table_writes, rejected, result.counts, result.changed)


# The files of one document each: listed in the summary, their rows not counted.
DOCUMENTS = ('evaluation_metrics', 'evaluation_thresholds', 'comparison_json')


class DeadLettersWritten(NamedTuple):
    files: Optional[PCollection]  # the JSONL files written; None without --dead_letter
    table_writes: Tuple[PCollection, ...]


def write_dead_letters(dead: PCollection, settings: Settings) -> DeadLettersWritten:
    """Dead letters go where the detections go: JSONL files, a BigQuery table, or both."""
    files: Optional[PCollection] = None
    table_writes: Tuple[PCollection, ...] = ()
    if settings.outputs.dead_letter:
        files = dead | 'WriteDeadLetters' >> WriteDeadLetterFiles(
            settings.outputs.dead_letter, windowed=settings.is_streaming)
    if settings.bigquery.dead_letter_table:
        result = (dead
                  | 'DeadLettersForBigQuery' >> beam.Map(dead_letters.for_bigquery)
                  | 'WriteDeadLetterTable' >> bigquery_write(
                      settings, required(settings.bigquery.dead_letter_table, 'dead_letter_table'),
                      DEAD_LETTER_COLUMNS + DEAD_LETTER_TABLE_EXTRA_COLUMNS))
        _ = result.failures | 'LogLostDeadLetters' >> beam.Map(log_unwritable_dead_letter)
        table_writes = (result.done,)
    return DeadLettersWritten(files, table_writes)


def bigquery_write(settings: Settings, table: str, columns) -> WriteBigQueryTable:
    return WriteBigQueryTable(table, columns, settings.bigquery.bigquery_method, settings.bigquery.write_disposition,
                              settings.bigquery.temp_location,
                              load_every_seconds=settings.streaming.window_seconds if settings.is_streaming else None)


def log_unwritable_dead_letter(record):
    """A dead letter the dead-letter table itself rejected: logged (without its payload) and counted."""
    Metrics.counter(METRICS_NAMESPACE, names.DEAD_LETTER_TABLE_WRITE_FAILURES).inc()
    logging.error('The dead-letter table rejected a record of kind %s from %s: %s',
                  record['kind'], record['source_file'], record['error_message'][:500])
