"""Coders for the big elements of the pipeline: Beam samples the size of the elements on every edge,
and for a type it has no coder for it pickles the whole element just to count its bytes (a batch's
lines, an Arrow table of thousands of rows). These coders say the size from what the element already
knows."""
import pickle

import apache_beam as beam
import pyarrow as pa


class ArrowTableCoder(beam.coders.Coder):
    """An Arrow table as an Arrow IPC stream; its size is the size of its buffers."""

    def encode(self, table: pa.Table) -> bytes:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return sink.getvalue().to_pybytes()

    def decode(self, encoded: bytes) -> pa.Table:
        return pa.ipc.open_stream(encoded).read_all()

    def estimate_size(self, table: pa.Table) -> int:
        return table.nbytes

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self):
        return pa.Table


class LineBatchCoder(beam.coders.Coder):
    """A read.LineBatch (a named tuple of a path, its lines and two ints), pickled; its size is the
    size of its lines."""

    def encode(self, batch) -> bytes:
        return pickle.dumps(batch, pickle.HIGHEST_PROTOCOL)

    def decode(self, encoded: bytes):
        return pickle.loads(encoded)

    def estimate_size(self, batch) -> int:
        return sum(map(len, batch.lines)) + len(batch.source_file) + 16

    def is_deterministic(self) -> bool:
        return False


beam.coders.registry.register_coder(pa.Table, ArrowTableCoder)
