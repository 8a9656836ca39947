"""BigQuery tables: the tables prepared before a run, rows checked against the schema, the write, and
the rows BigQuery rejects turned into dead letters."""
from typing import NamedTuple, Optional

import apache_beam as beam
from apache_beam.io.gcp.bigquery_tools import RetryStrategy

from pipeline.config.settings import BigQuerySettings
from pipeline.core import dead_letters
from pipeline.core.dead_letters import WRITE_FAILURE
from pipeline.core.schema import (
    COMPARISON_COLUMNS,
    CONFIDENCE_COLUMNS,
    CONFUSION_COLUMNS,
    DEAD_LETTER_COLUMNS,
    DEAD_LETTER_TABLE_EXTRA_COLUMNS,
    DETECTION_COLUMNS,
    IMAGE_COLUMNS,
    MATCH_COLUMNS,
    METRIC_COLUMNS,
    SLICE_COLUMNS,
    bigquery_schema,
)


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


class BigQueryWriteResult(NamedTuple):
    failures: beam.PCollection  # the rows it could not write, as write_failure dead letters
    done: beam.PCollection  # completes with the writes


class WriteBigQueryTable(beam.PTransform):
    """Row dicts -> a BigQuery table (created by `prepare_tables` before the run) -> BigQueryWriteResult."""

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
        return BigQueryWriteResult(tuple(failures) | 'WriteFailures' >> beam.Flatten(), done)


def table_rows(table):
    """An Arrow table's rows as dicts, as WriteToBigQuery takes them."""
    return table.to_pylist()


def prepare_tables(table_settings: BigQuerySettings, client=None, evaluation: bool = False,
                   comparison: bool = False, slices: bool = False) -> None:
    """Creates the BigQuery tables that are missing (partitioned by ingestion day, detections
    clustered by label and image_uri) and adds the columns an older version's table lacks, before the
    pipeline starts, so both write methods find the same tables."""
    from google.api_core import exceptions
    from google.cloud import bigquery
    retry = bigquery.DEFAULT_RETRY.with_deadline(60)
    for spec, columns, clustering in bigquery_tables(table_settings, evaluation, comparison, slices):
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


def bigquery_tables(table_settings: BigQuerySettings, evaluation: bool = False, comparison: bool = False,
                    slices: bool = False):
    """(table spec, columns, clustering fields) for every BigQuery table this run writes."""
    if table_settings.output_table is None:
        return []
    tables = [(table_settings.output_table, DETECTION_COLUMNS, ('label', 'image_uri')),
              (table_settings.images_table, IMAGE_COLUMNS, ()),
              (table_settings.dead_letter_table, DEAD_LETTER_COLUMNS + DEAD_LETTER_TABLE_EXTRA_COLUMNS, ())]
    if evaluation:
        tables += [(table, columns, ()) for table, columns in evaluation_tables(table_settings.output_table)]
    if comparison:
        tables.append((comparison_table(table_settings.output_table), COMPARISON_COLUMNS, ('prediction_run',)))
    if slices:
        tables.append((slices_table(table_settings.output_table), SLICE_COLUMNS, ()))
    return tables


def comparison_table(output_table: str) -> str:
    """The comparison's table (--compare_to), named after the detections table."""
    return f'{output_table}_comparison'


def slices_table(output_table: str) -> str:
    """The evaluation's slices (--slice_by), named after the detections table."""
    return f'{output_table}_eval_slices'


def evaluation_tables(output_table: str):
    """(table spec, columns) of the evaluation's tables, named after the detections table: matches,
    metrics, confidence and confusion, in that order."""
    return [(f'{output_table}_eval_matches', MATCH_COLUMNS), (f'{output_table}_eval_metrics', METRIC_COLUMNS),
            (f'{output_table}_eval_confidence', CONFIDENCE_COLUMNS),
            (f'{output_table}_eval_confusion', CONFUSION_COLUMNS)]
