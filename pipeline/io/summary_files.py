"""The run summary as a file: written whole (the only mark of a completed run), read back, and the
rows of the files it lists counted."""
import json
import logging
import os
from typing import Dict, List, Mapping, Optional

import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline.core.outputs import summary_temp_path
from pipeline.core.shards import scheme_of


def count_output_rows(outputs: Mapping[str, List[str]]) -> Dict[str, int]:
    """The rows the listed files hold, read back: Parquet footers, dead-letter lines."""
    rows = {}
    for name, paths in outputs.items():
        total = 0
        for path in paths:
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
                if path.endswith('.parquet'):
                    total += pq.ParquetFile(handle).metadata.num_rows
                else:
                    total += sum(chunk.count(b'\n') for chunk in iter(lambda: handle.read(1 << 20), b''))
        rows[name] = total
    return rows


def publish(summary: Dict, path: Optional[str]) -> None:
    """Logs the summary (so a Dataflow job shows it) and writes it to `path` when there is one, in one
    step: a local file under a temporary name, then renamed; a Cloud Storage object appears whole when
    its upload completes. A summary is the only mark of a completed run, so it is never partial."""
    logging.getLogger(__name__).info('Run summary: %s', json.dumps(summary))
    if not path:
        return
    data = json.dumps(summary, indent=2).encode('utf-8') + b'\n'
    if scheme_of(path) != 'file':
        with FileSystems.create(path, mime_type='application/json') as handle:
            handle.write(data)
        return
    temporary = summary_temp_path(path, summary.get('run_id') or os.urandom(16).hex())
    try:
        with open(temporary, 'wb') as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.lexists(temporary):
            os.unlink(temporary)
        raise


def read_summary(path: str) -> Dict:
    with FileSystems.open(path) as handle:
        return json.loads(handle.read())
