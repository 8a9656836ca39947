"""Where the tables and dead letters go as files: Parquet and JSONL.

Beam's file sinks write temporary files and rename them on finalize, so a killed run leaves no
partial file in the output folders. Streaming runs write one set of files per window (fileio).
"""
import json
from typing import List

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io import filebasedsink, fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline.core import dead_letters
from pipeline.core.schema import dictionary_columns


class WriteParquetTable(beam.PTransform):
    """pa.Table batches -> `<root>/<name>/part-SSSSS-of-NNNNN.parquet` (batch) or
    `<root>/<name>/part-<window start>-<window end>-SSSSS-of-NNNNN.parquet` (windowed, streaming);
    outputs what was written."""

    def __init__(self, root: str, name: str, schema, windowed: bool = False):
        super().__init__()
        self._folder = FileSystems.join(root, name)
        self._schema = schema
        self._windowed = windowed

    def expand(self, tables):
        if self._windowed:
            schema = self._schema
            return tables | 'WriteParquetPerWindow' >> fileio.WriteToFiles(
                self._folder, file_naming=fileio.default_file_naming('part', '.parquet'),
                sink=lambda _: ParquetTableSink(schema))
        return tables | 'WriteParquet' >> beam.io.Write(
            ParquetFileSink(FileSystems.join(self._folder, 'part'), self._schema))


def parquet_writer(handle, schema) -> pq.ParquetWriter:
    """Our Parquet files: snappy, dictionary encoding on the repeating strings only (on unique strings
    and numbers, pyarrow's default of every column costs time and space for nothing)."""
    return pq.ParquetWriter(handle, schema, compression='snappy',
                            use_dictionary=dictionary_columns(schema))


# Rows gathered before a row group is written: the batches of many small shards would otherwise make
# as many tiny row groups, which bloat the file and slow every reader.
ROW_GROUP_ROWS = 64 * 1024


class CoalescingParquetWriter:
    """Writes pa.Table batches as row groups of at least ROW_GROUP_ROWS rows (the last one of a file
    may hold fewer), holding at most that many rows plus one batch in memory."""

    def __init__(self, handle, schema, row_group_rows: int = ROW_GROUP_ROWS):
        self._writer = parquet_writer(handle, schema)
        self._row_group_rows = row_group_rows
        self._pending: List[pa.Table] = []
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
        assert self._writer is not None, 'fileio opens a sink before it writes'
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
            FileSystems.join(self._root, 'dead_letter'), file_name_suffix='.jsonl')


def write_json_document(document, path: str) -> str:
    """One JSON document to `path` (metrics.json), written by one worker; returns the path. The run's
    summary, written after it, is what marks it complete."""
    with FileSystems.create(path, mime_type='application/json') as handle:
        handle.write(json.dumps(document, indent=2).encode('utf-8') + b'\n')
    return path


def write_text_document(text: str, path: str, mime_type: str = 'text/csv') -> str:
    """One text document to `path` (thresholds.csv), written by one worker, as metrics.json is."""
    with FileSystems.create(path, mime_type=mime_type) as handle:
        handle.write(text.encode('utf-8'))
    return path


# The one file of a small table, named as the file sinks name theirs.
SMALL_TABLE_FILE = 'part-00000-of-00001.parquet'


def write_small_table(rows: List[dict], schema, folder: str) -> str:
    """A small table (the confidence metrics, the confusion matrix: hundreds of rows) as one Parquet
    file in `folder`, written by one worker without the file sink's steps; returns its path. As for
    metrics.json, the run's summary, written after it, is what marks it complete."""
    path = FileSystems.join(folder, SMALL_TABLE_FILE)
    with FileSystems.create(path, mime_type='application/x-parquet') as handle:
        writer = parquet_writer(handle, schema)
        writer.write_table(pa.Table.from_pylist(rows, schema=schema))
        writer.close()
    return path
