import hashlib

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from beam_testing import local_test_pipeline

from pipeline.core import dead_letters
from pipeline.core.schema import (
    DEAD_LETTER_COLUMNS,
    DETECTION_COLUMNS,
    DETECTIONS_SCHEMA,
    IMAGE_COLUMNS,
    PAYLOAD_LIMIT_BYTES,
    bigquery_schema,
)
from pipeline.io.bigquery import row_problem, write_failure
from pipeline.io.sinks import WriteParquetTable

COLUMNS = {c.name: (c.type, c.nullable) for c in IMAGE_COLUMNS}


def test_bigquery_schema_is_derived_from_the_column_lists():
    fields = {f['name']: (f['type'], f['mode']) for f in bigquery_schema(DETECTION_COLUMNS)['fields']}
    assert [f['name'] for f in bigquery_schema(DETECTION_COLUMNS)['fields']] == [c.name for c in DETECTION_COLUMNS]
    assert fields['image_uri'] == ('STRING', 'REQUIRED')
    assert fields['score'] == ('FLOAT64', 'NULLABLE') and fields['rank'] == ('INT64', 'NULLABLE')
    dead = {f['name']: f['type'] for f in bigquery_schema(DEAD_LETTER_COLUMNS)['fields']}
    assert dead['timestamp'] == 'TIMESTAMP' and dead['error_code'] == 'INT64'


def image_row(**overrides):
    row = {'image_uri': 'gs://b/a.jpg', 'source_file': 'f', 'source_format': 'automl',
           'prediction_run': None, 'annotation_count': 2, 'detection_count': 1, 'max_score': 0.5,
           'image_width': None, 'image_height': None, 'size_source': None, 'suppressed_count': 0}
    row.update(overrides)
    return row


def test_rows_are_checked_against_the_schema():
    assert row_problem(image_row(), COLUMNS) is None
    assert row_problem(image_row(max_score=1), COLUMNS) is None  # an int is a valid FLOAT64
    assert 'REQUIRED but null' in row_problem(image_row(image_uri=None), COLUMNS)
    assert 'not a valid int32' in row_problem(image_row(detection_count='1'), COLUMNS)
    assert 'not a valid int32' in row_problem(image_row(detection_count=True), COLUMNS)
    assert 'not in the table schema: extra' in row_problem(image_row(extra=1), COLUMNS)


def test_write_failure_keeps_the_row_as_payload():
    record = write_failure('p:d.t', image_row(), 'bad')
    assert record['kind'] == 'write_failure' and 'p:d.t rejected the row: bad' in record['error_message']
    assert '"image_uri":"gs://b/a.jpg"' in record['payload'] and record['image_uri'] == 'gs://b/a.jpg'


def test_big_payloads_are_cut_for_bigquery_with_length_and_hash():
    payload = ('é' * (PAYLOAD_LIMIT_BYTES // 2 + 10)).encode()
    record = dead_letters.make_dead_letter('malformed_line', 'f', 'x', payload)
    row = dead_letters.for_bigquery(record)
    assert row['payload_length'] == len(payload)
    assert row['payload_sha256'] == hashlib.sha256(payload).hexdigest()
    assert len(row['payload'].encode()) <= PAYLOAD_LIMIT_BYTES and payload.decode().startswith(row['payload'])
    assert record['payload'] == payload.decode()  # the JSONL sink keeps it whole
    small = dead_letters.for_bigquery(dead_letters.make_dead_letter('malformed_line', 'f', 'x', b'abc'))
    assert small['payload'] == 'abc' and small['payload_length'] == 3
    empty = dead_letters.for_bigquery(dead_letters.make_dead_letter('unreadable_file', 'f', 'x'))
    assert empty['payload'] is None and empty['payload_length'] is None


def test_parquet_tables_keep_every_row_with_dictionaries_on_repeating_strings_only(tmp_path):
    rows = [{name: None for name in DETECTIONS_SCHEMA.names} for _ in range(300)]
    for i, row in enumerate(rows):
        row.update(image_uri=f'gs://b/{i % 7}.jpg', label='Salad', score=i / 300, box_wkt=f'POLYGON (({i} 0))')
    tables = [pa_table(rows[:100]), pa_table(rows[100:])]
    with local_test_pipeline() as p:
        _ = p | beam.Create(tables) | WriteParquetTable(str(tmp_path), 'detections', DETECTIONS_SCHEMA)
    (path,) = (tmp_path / 'detections').glob('part-*-of-*.parquet')
    parquet = pq.ParquetFile(path)
    assert sorted(parquet.read().to_pylist(), key=lambda r: r['score']) == rows
    columns = {parquet.metadata.row_group(0).column(i).path_in_schema: i
               for i in range(parquet.metadata.num_columns)}
    encodings = lambda name: parquet.metadata.row_group(0).column(columns[name]).encodings
    assert 'RLE_DICTIONARY' in encodings('image_uri') and 'RLE_DICTIONARY' in encodings('label')
    assert 'RLE_DICTIONARY' not in encodings('box_wkt') and 'RLE_DICTIONARY' not in encodings('score')


def pa_table(rows):
    return pa.Table.from_pylist(rows, schema=DETECTIONS_SCHEMA)
