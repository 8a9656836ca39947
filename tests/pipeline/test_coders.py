"""The coders of the big elements: exact round trips, sizes said without encoding, and the pipeline's
PCollections of batches and tables actually using them."""
import pickle

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to
from beam_testing import local_test_pipeline

from pipeline.config.settings import Settings
from pipeline.transforms.coders import ArrowTableCoder, LineBatchCoder
from pipeline.transforms.parse import ParsePredictions
from pipeline.transforms.read import LineBatch

TABLE = pa.table({'uri': ['gs://b/1.jpg', None, 'gs://b/ü.jpg'], 'score': [0.5, None, 1.0],
                  'boxes': pa.array([[1.0, 2.0], [], None], type=pa.list_(pa.float64()))})


@pytest.mark.parametrize('table', [TABLE, TABLE.slice(1, 1), TABLE.schema.empty_table()])
def test_a_table_comes_back_equal_with_its_schema(table):
    coder = ArrowTableCoder()
    decoded = coder.decode(coder.encode(table))
    assert decoded.equals(table) and decoded.schema == table.schema


def test_sizes_are_said_without_encoding(monkeypatch):
    batch = LineBatch('gs://b/run/predictions_1.jsonl', [b'x' * 100, b'y' * 50], 10, 2)
    monkeypatch.setattr(pickle, 'dumps', lambda *_: pytest.fail('pickled to measure'))
    assert ArrowTableCoder().estimate_size(TABLE) == TABLE.nbytes
    assert ArrowTableCoder().get_impl().get_estimated_size_and_observables(TABLE) == (TABLE.nbytes, [])
    assert LineBatchCoder().estimate_size(batch) == 150 + len(batch.source_file) + 16


def test_a_batch_comes_back_equal():
    batch = LineBatch('gs://b/run/predictions_1.jsonl', [b'{"a": 1}', b''], 1024, 7)
    coder = LineBatchCoder()
    assert coder.decode(coder.encode(batch)) == batch


def test_the_parsed_tables_and_the_batches_have_their_coders(tmp_path):
    line = b'{"ID":"gs://b/1.jpg","annotations":[]}'
    with local_test_pipeline() as p:
        batches = p | beam.Create([LineBatch('image_object_detection_1.jsonl', [line])]).with_output_types(LineBatch)
        manifest = p | 'NoManifest' >> beam.Create([None])
        parsed = batches | ParsePredictions(Settings.of(input='gs://b/in', output=str(tmp_path)), manifest)
        # Across a shuffle, the tables are encoded and decoded by their coder.
        rows = (parsed.images | beam.Reshuffle() | beam.Map(lambda table: table.column('image_uri').to_pylist()))
        assert_that(rows, equal_to([['gs://b/1.jpg']]))
        assert isinstance(beam.coders.registry.get_coder(parsed.images.element_type), ArrowTableCoder)
        assert isinstance(beam.coders.registry.get_coder(parsed.detections.element_type), ArrowTableCoder)
        assert isinstance(beam.coders.registry.get_coder(batches.element_type), LineBatchCoder)
