"""Where the tables and dead letters go: Parquet and JSONL files, and BigQuery tables.

Beam's file sinks write temporary files and rename them on finalize, so a killed run leaves no
partial file in the output folders. Streaming runs write one set of files per window (fileio).
"""
from typing import Optional

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io import fileio, filebasedsink
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.gcp.bigquery_tools import RetryStrategy

from pipeline import dead_letters
from pipeline.formats import WRITE_FAILURE
from pipeline.options import join_path
from pipeline.schema import (DEAD_LETTER_COLUMNS, DEAD_LETTER_TABLE_EXTRA_COLUMNS, DETECTION_COLUMNS,
                             IMAGE_COLUMNS, bigquery_schema, dictionary_columns)


class WriteParquetTable(beam.PTransform):
    """pa.Table batches -> `<root>/<name>/part-SSSSS-of-NNNNN.parquet` (batch) or
    `<root>/<name>/part-<window start>-<window end>-SSSSS-of-NNNNN.parquet` (windowed, streaming);
    outputs what was written."""

    def __init__(self, root: str, name: str, schema, windowed: bool = False):
        super().__init__()
        self._folder = join_path(root, name)
        self._schema = schema
        self._windowed = windowed

    def expand(self, tables):
        if self._windowed:
            schema = self._schema
            return tables | 'WriteParquetPerWindow' >> fileio.WriteToFiles(
                self._folder, file_naming=fileio.default_file_naming('part', '.parquet'),
                sink=lambda _: ParquetTableSink(schema))
        return tables | 'WriteParquet' >> beam.io.Write(
            ParquetFileSink(join_path(self._folder, 'part'), self._schema))


def parquet_writer(handle, schema) -> pq.ParquetWriter:
    """Our Parquet files: snappy, dictionary encoding on the repeating strings only (writing 400k
    detections: 0.37 s with it on every column, as pyarrow's default, 0.21 s so, and 12% smaller)."""
    return pq.ParquetWriter(handle, schema, compression='snappy',
                            use_dictionary=dictionary_columns(schema))


# Rows gathered before a row group is written: the batches of many small shards would otherwise make
# as many tiny row groups (10,000 one-row shards: 10,000 row groups, 34 MB, 5.5 s to read).
ROW_GROUP_ROWS = 64 * 1024


class CoalescingParquetWriter:
    """Writes pa.Table batches as row groups of at least ROW_GROUP_ROWS rows (the last one of a file
    may hold fewer), holding at most that many rows plus one batch in memory."""

    def __init__(self, handle, schema, row_group_rows: int = ROW_GROUP_ROWS):
        self._writer = parquet_writer(handle, schema)
        self._row_group_rows = row_group_rows
        self._pending = []
        self._pending_rows = 0

    def write(self, table) -> None:
        self._pending.append(table)
        self._pending_rows += table.num_rows
        if self._pending_rows >= self._row_group_rows:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            table = pa.concat_tables(self._pending)
            self._writer.write_table(table, row_group_size=max(table.num_rows, 1))
            self._pending, self._pending_rows = [], 0

    def close(self) -> None:
        self._flush()
        self._writer.close()


class ParquetFileSink(filebasedsink.FileBasedSink):
    """pa.Table elements into `<prefix>-SSSSS-of-NNNNN.parquet`, through Beam's file sink protocol
    (temporary files, renamed when the write is finalized): Beam's WriteToParquetBatched with our
    writer settings and row groups coalesced."""

    def __init__(self, file_path_prefix: str, schema):
        super().__init__(file_path_prefix, coder=None, file_name_suffix='.parquet',
                         mime_type='application/x-parquet',
                         compression_type=CompressionTypes.UNCOMPRESSED)  # snappy is per page
        self._schema = schema

    def open(self, temp_path):
        handle = super().open(temp_path)
        return CoalescingParquetWriter(handle, self._schema), handle

    def write_record(self, file_handle, value):
        file_handle[0].write(value)

    def close(self, file_handle):
        writer, handle = file_handle
        writer.close()
        handle.close()


class ParquetTableSink(fileio.FileSink):
    """A fileio sink of pa.Table elements: one Parquet file per (window, shard), row groups
    coalesced. fileio calls flush() just before it closes the file."""

    def __init__(self, schema):
        self._schema = schema
        self._writer = None

    def open(self, fh):
        self._writer = CoalescingParquetWriter(fh, self._schema)

    def write(self, record):
        self._writer.write(record)

    def flush(self):
        if self._writer is not None:
            self._writer.close()  # writes the footer; the file handle stays open for fileio
            self._writer = None


class WriteDeadLetterFiles(beam.PTransform):
    """Dead-letter records -> JSON lines under `<root>/dead_letter-SSSSS-of-NNNNN.jsonl`, or
    `<root>/dead_letter-<window start>-<window end>-SSSSS-of-NNNNN.jsonl` when windowed."""

    def __init__(self, root: str, windowed: bool = False):
        super().__init__()
        self._root = root
        self._windowed = windowed

    def expand(self, records):
        lines = records | 'ToJsonLines' >> beam.Map(dead_letters.to_json_line)
        if self._windowed:
            return lines | 'WriteJsonLinesPerWindow' >> fileio.WriteToFiles(
                self._root, file_naming=fileio.default_file_naming('dead_letter', '.jsonl'),
                sink=fileio.TextSink)
        return lines | 'WriteJsonLines' >> beam.io.WriteToText(
            join_path(self._root, 'dead_letter'), file_name_suffix='.jsonl')


class ValidateRowFn(beam.DoFn):
    """Checks each row against the table's schema before a load job sees it: a row BigQuery would
    reject goes to the dead letters (kind write_failure) instead of failing the whole load."""

    def __init__(self, table: str, columns):
        self._table = table
        self._columns = {c.name: (c.type, c.nullable) for c in columns}

    def process(self, row: dict):
        problem = row_problem(row, self._columns)
        if problem is None:
            yield row
        else:
            yield beam.pvalue.TaggedOutput('invalid', write_failure(self._table, row, problem))


_PYTHON_TYPES = {'string': (str,), 'double': (float, int), 'int32': (int,), 'int64': (int,),
                 'timestamp[ms, tz=UTC]': (str,)}


def row_problem(row: dict, columns) -> Optional[str]:
    """Why BigQuery would reject this row under the schema, or None."""
    unknown = set(row) - set(columns)
    if unknown:
        return f'fields not in the table schema: {", ".join(sorted(unknown))}'
    for name, (arrow_type, nullable) in columns.items():
        value = row.get(name)
        if value is None:
            if not nullable:
                return f'{name} is REQUIRED but null'
            continue
        if isinstance(value, bool) or not isinstance(value, _PYTHON_TYPES[str(arrow_type)]):
            return f'{name}: {type(value).__name__} is not a valid {arrow_type}'
    return None


def write_failure(table: str, row: dict, message: str) -> dict:
    return dead_letters.make_dead_letter(
        WRITE_FAILURE, row.get('source_file') or table, f'{table} rejected the row: {message}',
        dead_letters.to_json_line(row).encode('utf-8'), image_uri=row.get('image_uri'))


def _failed_row_to_dead_letter(table: str, failure) -> dict:
    """Beam's failed_rows_with_errors element: (destination, row, errors)."""
    _, row, errors = failure
    messages = '; '.join(error.get('message', str(error)) if isinstance(error, dict) else str(error)
                         for error in (errors or []))
    return write_failure(table, row, messages or 'rejected by BigQuery')


class WriteBigQueryTable(beam.PTransform):
    """Row dicts -> a BigQuery table (created by `prepare_tables` before the run). Outputs
    {'failures': the rows it could not write, as write_failure dead letters, 'done': a PCollection
    that completes with the writes}."""

    def __init__(self, table: str, columns, method: str, write_disposition: str,
                 temp_location: Optional[str] = None, load_every_seconds: Optional[int] = None):
        super().__init__()
        self._table = table
        self._columns = columns
        self._method = method
        self._write_disposition = write_disposition
        self._temp_location = temp_location
        self._load_every_seconds = load_every_seconds  # file loads of an unbounded input

    def expand(self, rows):
        checked = rows | 'ValidateRows' >> beam.ParDo(
            ValidateRowFn(self._table, self._columns)).with_outputs('invalid', main='valid')
        inserts = self._method == 'streaming_inserts'
        result = checked.valid | 'WriteToBigQuery' >> beam.io.WriteToBigQuery(
            self._table,
            schema=bigquery_schema(self._columns),
            method=(beam.io.WriteToBigQuery.Method.STREAMING_INSERTS if inserts
                    else beam.io.WriteToBigQuery.Method.FILE_LOADS),
            create_disposition=beam.io.BigQueryDisposition.CREATE_IF_NEEDED,
            write_disposition=(beam.io.BigQueryDisposition.WRITE_TRUNCATE
                               if self._write_disposition == 'truncate'
                               else beam.io.BigQueryDisposition.WRITE_APPEND),
            insert_retry_strategy=RetryStrategy.RETRY_ON_TRANSIENT_ERROR,
            custom_gcs_temp_location=self._temp_location,
            triggering_frequency=None if inserts else self._load_every_seconds,
            temp_file_format='NEWLINE_DELIMITED_JSON')
        failures = [checked.invalid]
        if inserts:
            table = self._table
            done = result.failed_rows_with_errors | 'FailedRowsToDeadLetters' >> beam.Map(
                lambda failure: _failed_row_to_dead_letter(table, failure))
            failures.append(done)
        else:
            done = result.destination_load_jobid_pairs
        return {'failures': tuple(failures) | 'WriteFailures' >> beam.Flatten(), 'done': done}


def table_rows(table):
    """An Arrow table's rows as dicts, as WriteToBigQuery takes them."""
    return table.to_pylist()


def prepare_tables(settings, client=None) -> None:
    """Creates the BigQuery tables that are missing (partitioned by ingestion day, detections
    clustered by label and image_uri) and adds the columns an older version's table lacks, before the
    pipeline starts, so both write methods find the same tables."""
    from google.cloud import bigquery  # pylint: disable=import-outside-toplevel
    from google.api_core import exceptions  # pylint: disable=import-outside-toplevel
    retry = bigquery.DEFAULT_RETRY.with_deadline(60)
    for spec, columns, clustering in bigquery_tables(settings):
        project, _, rest = spec.rpartition(':')
        table_id = f'{project}.{rest}'
        client = client or bigquery.Client(project=project)
        dataset_id = table_id.rsplit('.', 1)[0]
        try:
            client.get_dataset(dataset_id, retry=retry)
        except exceptions.NotFound:
            raise ValueError(f'the dataset {dataset_id} of {spec} does not exist: create the dataset '
                             f'first (it sets the data location)') from None
        schema = [bigquery.SchemaField.from_api_repr(field)
                  for field in bigquery_schema(columns)['fields']]
        try:
            table = client.get_table(table_id, retry=retry)
        except exceptions.NotFound:
            table = bigquery.Table(table_id, schema=schema)
            table.time_partitioning = bigquery.TimePartitioning(type_=bigquery.TimePartitioningType.DAY)
            table.clustering_fields = list(clustering) or None
            client.create_table(table, retry=retry)
            continue
        present = {field.name for field in table.schema}
        added = [field for field in schema if field.name not in present]
        if added:
            table.schema = list(table.schema) + [
                bigquery.SchemaField(f.name, f.field_type, mode='NULLABLE', description=f.description)
                for f in added]
            client.update_table(table, ['schema'], retry=retry)


def bigquery_tables(settings):
    """(table spec, columns, clustering fields) for every BigQuery table this run writes."""
    if settings.output_table is None:
        return []
    return [(settings.output_table, DETECTION_COLUMNS, ('label', 'image_uri')),
            (settings.images_table, IMAGE_COLUMNS, ()),
            (settings.dead_letter_table, DEAD_LETTER_COLUMNS + DEAD_LETTER_TABLE_EXTRA_COLUMNS, ())]
