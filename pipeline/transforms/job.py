"""The whole job as one PTransform: shards in, tables, dead letters and the run summary out."""
import logging
from typing import Optional

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import AsList, AsSingleton

from pipeline.core import dead_letters
from pipeline.io.locks import release_gcs_lock
from pipeline.core import summary as run_summary
from pipeline.io import summary_files
from pipeline.config.options import Settings
from pipeline.core.schema import (DEAD_LETTER_COLUMNS, DEAD_LETTER_TABLE_EXTRA_COLUMNS, DETECTION_COLUMNS, DETECTIONS_SCHEMA, IMAGE_COLUMNS, IMAGES_SCHEMA)
from pipeline.io.bigquery import WriteBigQueryTable, table_rows
from pipeline.io.sinks import WriteDeadLetterFiles, WriteParquetTable
from pipeline.transforms.count import (METRICS_NAMESPACE, CountDeadLetters, CountDuplicateImageUris, MergeCountsFn, count_dead_letter)
from pipeline.transforms.parse import LoadManifest, ParsePredictions
from pipeline.transforms.read import ReadNotifiedShards, ReadShards


class PredictionsToTables(beam.PTransform):
    """Batch: reads every shard matched by `pattern`; writes detections, images, dead letters and
    summary.json; outputs the summary dict (one element). Streaming (settings.input_subscription):
    reads each shard its notification announces, writes the same tables (files per window) and counts
    with Beam counters only, as a job that never ends has no summary."""

    def __init__(self, settings: Settings, pattern: Optional[str] = None, skip=None):
        super().__init__()
        self._settings = settings
        self._pattern = pattern
        self._skip = skip  # paths under --input that belong to our own outputs

    def expand(self, pbegin):
        settings = self._settings
        if settings.streaming:
            read = pbegin | 'ReadNotifiedShards' >> ReadNotifiedShards(
                settings.input_subscription, settings.input, settings.window_seconds,
                settings.dedupe_hours)
        else:
            read = pbegin | 'ReadShards' >> ReadShards(self._pattern, skip=self._skip)
        manifest = pbegin | 'ImageSizesManifest' >> LoadManifest(settings.image_sizes)
        parsed = read['batches'] | 'ParsePredictions' >> ParsePredictions(settings, manifest)
        written, write_failures = self._write_tables(parsed)
        dead = ((read['dead_letters'], parsed['dead_letters'], *write_failures)
                | 'AllDeadLetters' >> beam.Flatten())
        written.update(self._write_dead_letters(dead))
        if settings.streaming:
            return dead | 'CountDeadLetters' >> beam.Map(count_dead_letter)
        counts = (
            (read['counts'], parsed['counts'], dead | 'CountDeadLetters' >> CountDeadLetters())
            | 'AllCounts' >> beam.Flatten()
            | 'SumCounts' >> beam.CombineGlobally(MergeCountsFn()))
        duplicates = parsed['image_uris'] | 'DuplicateImageUris' >> CountDuplicateImageUris()
        return self._write_summary(pbegin, counts, duplicates, written)

    def _write_tables(self, parsed):
        """Detections and images to Parquet and/or BigQuery: ({output: completion PCollection},
        [BigQuery write failures as dead letters])."""
        settings = self._settings
        written, write_failures = {}, []
        if settings.output:
            written['detections'] = parsed['detections'] | 'WriteDetections' >> WriteParquetTable(
                settings.output, 'detections', DETECTIONS_SCHEMA, windowed=settings.streaming)
            written['images'] = parsed['images'] | 'WriteImages' >> WriteParquetTable(
                settings.output, 'images', IMAGES_SCHEMA, windowed=settings.streaming)
        if settings.output_table:
            for name, table, columns in (('detections', settings.output_table, DETECTION_COLUMNS),
                                         ('images', settings.images_table, IMAGE_COLUMNS)):
                result = (parsed[name]
                          | f'{name.title()}Rows' >> beam.FlatMap(table_rows)
                          | f'Write{name.title()}Table' >> self._bigquery(table, columns))
                write_failures.append(result['failures'])
                written[f'{name}_table'] = result['done']
        return written, write_failures

    def _write_dead_letters(self, dead):
        """Dead letters go where the detections go: JSONL files, a BigQuery table, or both."""
        settings = self._settings
        written = {}
        if settings.dead_letter:
            written['dead_letters'] = dead | 'WriteDeadLetters' >> WriteDeadLetterFiles(
                settings.dead_letter, windowed=settings.streaming)
        if settings.dead_letter_table:
            result = (dead
                      | 'DeadLettersForBigQuery' >> beam.Map(dead_letters.for_bigquery)
                      | 'WriteDeadLetterTable' >> self._bigquery(
                          settings.dead_letter_table,
                          DEAD_LETTER_COLUMNS + DEAD_LETTER_TABLE_EXTRA_COLUMNS))
            _ = result['failures'] | 'LogLostDeadLetters' >> beam.Map(log_unwritable_dead_letter)
            written['dead_letters_table'] = result['done']
        return written

    def _write_summary(self, pbegin, counts, duplicates, written):
        """summary.json, written last: it waits on every write (side inputs), so a run killed before
        the end leaves no summary."""
        settings, pattern = self._settings, self._pattern
        file_outputs = [name for name in ('detections', 'images', 'dead_letters') if name in written]

        def summarize(_, counts, duplicates, *outputs):
            listed = dict(zip(file_outputs, outputs))  # the BigQuery waits follow the file lists
            summary = run_summary.build_summary(counts, duplicates, settings, pattern, listed,
                                                summary_files.count_output_rows(listed))
            if settings.report_file:
                summary['outputs']['report'] = [settings.report_file]
            summary_files.publish(summary, settings.summary)
            for lock in settings.job_locks:  # a Dataflow job outlives the launcher that locked
                release_gcs_lock(lock, settings.run_id)
            Metrics.counter(METRICS_NAMESPACE, 'duplicate_image_uris').inc(duplicates)
            return summary

        waits = [AsList(written[name]) for name in file_outputs] + [
            AsList(written[name]) for name in written if name not in file_outputs]
        return (pbegin
                | 'SummaryTrigger' >> beam.Create([None])
                | 'WriteSummary' >> beam.Map(
                    summarize, AsSingleton(counts), AsSingleton(duplicates), *waits))

    def _bigquery(self, table, columns):
        settings = self._settings
        return WriteBigQueryTable(table, columns, settings.bigquery_method,
                                  settings.write_disposition, settings.temp_location,
                                  load_every_seconds=settings.window_seconds if settings.streaming else None)


def log_unwritable_dead_letter(record):
    """A dead letter the dead-letter table itself rejected: logged (without its payload) and counted."""
    Metrics.counter(METRICS_NAMESPACE, 'dead_letter_table_write_failures').inc()
    logging.error('The dead-letter table rejected a record of kind %s from %s: %s',
                  record['kind'], record['source_file'], record['error_message'][:500])
