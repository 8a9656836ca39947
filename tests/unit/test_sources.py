import gzip
import io
import json
import random

import pytest

from pipeline.core import shards
from pipeline.core.shards import ERROR, OTHER, RESULT
from pipeline.io import sources
from pipeline.io.sources import InputError


@pytest.mark.parametrize('name, kind', [
    ('image_object_detection_0.jsonl', RESULT), ('image_object_detection_12.jsonl.gz', RESULT),
    ('predictions_00001.jsonl', RESULT), ('predictions_00002.jsonl.gz', RESULT),
    ('errors_0.jsonl', ERROR), ('errors_00001.jsonl.gz', ERROR),
    ('_SUCCESS', OTHER), ('input.csv', OTHER), ('predictions.jsonl', OTHER),
    ('predictions_00001.jsonl.bak', OTHER), ('my_errors_1.jsonl', OTHER),
])
def test_classify_by_name_pattern(name, kind):
    assert shards.classify(f'gs://b/out/prediction-m-2021/{name}') == kind


def test_prediction_run_is_the_nearest_prediction_folder():
    assert shards.prediction_run(
        'gs://b/x/prediction-salads-2021-03-01T10:52:53.972802Z/predictions_00001.jsonl') == \
        'prediction-salads-2021-03-01T10:52:53.972802Z'
    assert shards.prediction_run('/data/prediction-a/sub/prediction-b/errors_1.jsonl') == 'prediction-b'
    assert shards.prediction_run('/data/other/errors_1.jsonl') is None


def read_all(data: bytes, range_bytes: int):
    lines = []
    for shard_range in shards.split_ranges('f.jsonl', len(data), range_bytes):
        lines.extend(sources.read_range_lines(io.BytesIO(data), shard_range.start, shard_range.end))
    return lines


@pytest.mark.parametrize('range_bytes', [1, 2, 3, 7, 16, 64, 1000, 10 ** 6])
def test_ranges_partition_lines_exactly(range_bytes):
    rng = random.Random(range_bytes)
    lines = [bytes(rng.choice(b'ab{}" \t') for _ in range(rng.randint(0, 30))) for _ in range(60)]
    data = b'\n'.join(lines)  # the last line has no newline
    assert read_all(data, range_bytes) == lines
    assert read_all(data + b'\n', range_bytes) == lines


def test_long_line_spanning_many_chunks(monkeypatch):
    monkeypatch.setattr(sources, '_READ_CHUNK', 7)
    lines = [b'x' * 100, b'', b'y' * 33, b'z']
    data = b'\n'.join(lines) + b'\n'
    for range_bytes in (5, 50, 1000):
        assert read_all(data, range_bytes) == lines


def test_crlf_and_bom_are_removed():
    data = b'\xef\xbb\xbf{"a":1}\r\n{"b":2}\r\n\r\n'
    assert read_all(data, 4) == [b'{"a":1}', b'{"b":2}', b'']


def test_compressed_shards_are_one_range():
    assert shards.split_ranges('gs://b/errors_1.jsonl.gz', 10 ** 9) == [
        shards.ShardRange('gs://b/errors_1.jsonl.gz', 0, None)]
    assert shards.split_ranges('f.jsonl', 0) == [shards.ShardRange('f.jsonl', 0, 0)]
    assert len(shards.split_ranges('f.jsonl', 10, 3)) == 4


@pytest.mark.parametrize('size, range_bytes', [(10, 3), (117_892_152, 16 * 2 ** 20), (5, 5), (1, 16), (99, 10)])
def test_ranges_cover_the_shard_in_as_few_ranges_of_one_size(size, range_bytes):
    ranges = shards.split_ranges('f.jsonl', size, range_bytes)
    assert ranges[0].start == 0 and ranges[-1].end == size
    assert all(a.end == b.start for a, b in zip(ranges, ranges[1:]))
    lengths = {r.end - r.start for r in ranges}
    assert max(lengths) <= range_bytes and max(lengths) - min(lengths) <= 1
    assert len(ranges) == -(-size // range_bytes)


def test_gzip_shard_reads_through_filesystems(tmp_path):
    path = tmp_path / 'predictions_00001.jsonl.gz'
    path.write_bytes(gzip.compress(b'{"a":1}\n{"b":2}'))
    with sources.open_shard(str(path)) as handle:
        assert list(sources.read_range_lines(handle, 0, None)) == [b'{"a":1}', b'{"b":2}']


def test_blank_means_only_ascii_whitespace():
    assert shards.is_blank(b' \t\r') and shards.is_blank(b'')
    assert not shards.is_blank(b'\x00') and not shards.is_blank(b'{}')


def test_resolve_folder_glob_and_single_shard(tmp_path):
    run = tmp_path / 'prediction-m-1'
    run.mkdir()
    (run / 'predictions_00001.jsonl').write_text('{}\n')
    assert sources.resolve_input(str(tmp_path)) == f'{tmp_path}/**'
    assert sources.resolve_input(str(tmp_path) + '/') == f'{tmp_path}/**'
    assert sources.resolve_input(f'{tmp_path}/*/pred*') == f'{tmp_path}/*/pred*'
    shard = str(run / 'predictions_00001.jsonl')
    assert sources.resolve_input(shard) == shard


@pytest.mark.parametrize('document', [
    {'name': 'op', 'metadata': {'batchPredictDetails': {'outputInfo': {'gcsOutputDirectory': '{dir}'}}}},
    {'metadata': {'batch_predict_details': {'output_info': {'gcs_output_directory': '{dir}'}}}},
    {'name': 'projects/p/locations/l/batchPredictionJobs/1', 'outputInfo': {'gcsOutputDirectory': '{dir}'}},
    {'output_info': {'gcs_output_directory': '{dir}'}},
])
def test_resolve_operation_json_by_content(tmp_path, document):
    run = tmp_path / 'prediction-m-1'
    run.mkdir()
    (run / 'errors_1.jsonl').write_text('')
    operation = tmp_path / 'operation.txt'
    operation.write_text(json.dumps(document).replace('{dir}', str(run)))
    assert sources.resolve_input(str(operation)) == f'{run}/**'


@pytest.mark.parametrize('content, fragment', [
    ('{"metadata": {}}', 'names no output directory'),
    ('id,uri\n', 'neither a result or error shard'),
])
def test_resolve_rejects_other_single_files(tmp_path, content, fragment):
    path = tmp_path / 'thing.json'
    path.write_text(content)
    with pytest.raises(InputError, match=fragment):
        sources.resolve_input(str(path))


def test_resolve_missing_input(tmp_path):
    with pytest.raises(InputError, match='nothing found'):
        sources.resolve_input(str(tmp_path / 'missing'))
    with pytest.raises(InputError, match='matches no file'):
        sources.resolve_input(str(tmp_path / '*.jsonl'))


def test_run_folders_of_one_name_are_named_by_their_path_under_the_input():
    from pipeline.core.shards import prediction_run, run_names
    paths = ['gs://b/in/modelA/prediction-2024/predictions_1.jsonl', 'gs://b/in/modelB/prediction-2024/errors_1.jsonl',
             'gs://b/in/prediction-2025/predictions_1.jsonl', 'gs://b/in/loose.jsonl']
    names = run_names(paths, 'gs://b/in/')
    assert names == {'gs://b/in/modelA/prediction-2024': 'modelA/prediction-2024',
                     'gs://b/in/modelB/prediction-2024': 'modelB/prediction-2024'}
    assert [prediction_run(path, names) for path in paths] == [
        'modelA/prediction-2024', 'modelB/prediction-2024', 'prediction-2025', None]
