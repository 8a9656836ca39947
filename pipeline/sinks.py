"""Where the tables and dead letters go. Beam's file sinks write temporary files and rename them on
finalize, so a killed run leaves no partial file in the output folders."""
import apache_beam as beam

from pipeline import dead_letters
from pipeline.options import join_path


class WriteParquetTable(beam.PTransform):
    """pa.Table batches -> `<root>/<name>/part-SSSSS-of-NNNNN.parquet`; outputs the written paths."""

    def __init__(self, root: str, name: str, schema):
        super().__init__()
        self._prefix = join_path(root, name, 'part')
        self._schema = schema

    def expand(self, tables):
        return tables | 'WriteParquet' >> beam.io.WriteToParquetBatched(
            self._prefix, schema=self._schema, codec='snappy', file_name_suffix='.parquet')


class WriteDeadLetterFiles(beam.PTransform):
    """Dead-letter records -> JSON lines under `<root>/dead_letter-SSSSS-of-NNNNN.jsonl`."""

    def __init__(self, root: str):
        super().__init__()
        self._prefix = join_path(root, 'dead_letter')

    def expand(self, records):
        return (records
                | 'ToJsonLines' >> beam.Map(dead_letters.to_json_line)
                | 'WriteJsonLines' >> beam.io.WriteToText(self._prefix, file_name_suffix='.jsonl'))
