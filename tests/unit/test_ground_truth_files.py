"""Ground-truth files: which files --ground_truth names, their format told by name or content, and
their units read with where each one came from."""
import shutil

import pytest
from conftest import ROOT

from pipeline.core.truth_formats import GroundTruthImage, GroundTruthRejection, PlacedImage
from pipeline.io.truth_files import (
    AUTOML_CSV,
    COCO,
    VERTEX_JSONL,
    GroundTruthError,
    detect_format,
    ground_truth_files,
    read_units,
)

FIXTURES = ROOT / 'tests' / 'fixtures' / 'ground_truth'


def test_a_file_a_folder_or_a_glob(tmp_path):
    folder = tmp_path / 'truth'
    shutil.copytree(FIXTURES, folder)
    (folder / 'sub').mkdir()
    (folder / 'sub' / 'more.csv').write_text('gs://b/x.jpg,cat,0,0,,,1,1,,\n')
    everything = ground_truth_files(str(folder))
    assert [p.rsplit('/', 1)[1] for p in everything] == ['SOURCES.md', 'automl_vision.csv', 'coco.json',
                                                          'more.csv', 'vertex_import.jsonl']
    assert ground_truth_files(str(folder / '**' / '*.csv')) == [str(folder / 'automl_vision.csv'),
                                                                str(folder / 'sub' / 'more.csv')]
    assert ground_truth_files(str(folder / 'coco.json')) == [str(folder / 'coco.json')]
    with pytest.raises(GroundTruthError, match='holds no file'):
        ground_truth_files(str(tmp_path / 'nothing-here'))


@pytest.mark.parametrize('name, head, fmt', [
    ('a.jsonl', b'', VERTEX_JSONL), ('a.jsonl.gz', b'', VERTEX_JSONL), ('A.CSV', b'', AUTOML_CSV),
    ('a.json', b'{"info": {}, "images": []}', COCO), ('a.json', b'{"imageGcsUri": "gs://b/a.jpg"}', VERTEX_JSONL),
    ('labels', b'TEST,gs://b/a.jpg,,,,,,,,,', AUTOML_CSV),
])
def test_the_format_by_name_then_content(name, head, fmt):
    assert detect_format(f'/data/{name}', head) == fmt


def test_a_format_that_cannot_be_told_is_an_error():
    with pytest.raises(GroundTruthError, match='give --ground_truth_format'):
        detect_format('/data/labels', b'hello')


def test_units_say_where_they_came_from(tmp_path):
    csv_units = [unit for _, unit in read_units(str(FIXTURES / 'automl_vision.csv'))]
    assert [u.position for u in csv_units] == ['line 1', 'line 2', 'line 3', 'line 4']
    assert csv_units[3].payload == b'TEST,gs://folder/im3.png,,,,,,,,,'
    coco = [unit for _, unit in read_units(str(FIXTURES / 'coco.json'), image_prefix='gs://b/')]
    assert [u.position for u in coco] == ['images[0]', 'images[1]', 'images[2]']
    assert coco[0].parsed.image_uri == 'gs://b/a.jpg' and coco[0].payload is None
    vertex = [unit for _, unit in read_units(str(FIXTURES / 'vertex_import.jsonl'), VERTEX_JSONL)]
    assert all(isinstance(u.parsed, GroundTruthImage) for u in vertex) and vertex[1].position == 'line 2'
    bad = tmp_path / 'bad.csv'
    bad.write_bytes(b'gs://b/a.jpg,cat,0,0,,,1,1,,\n\xff\xfe\n')
    (_, good), (_, unit) = read_units(str(bad))  # the bad bytes spoil their own row only
    assert isinstance(good.parsed, GroundTruthImage) and good.position == 'line 1'
    assert isinstance(unit.parsed, GroundTruthRejection) and unit.parsed.message == 'the row is not UTF-8 text'
    assert unit.payload == b'\xff\xfe' and unit.position == 'line 2'
    ((_, missing),) = read_units(str(tmp_path / 'gone.csv'))
    assert missing.position == 'the file' and 'could not read the file' in missing.parsed.message


def test_a_jsonl_file_read_in_byte_ranges_gives_every_line_once_in_order(tmp_path):
    from pipeline.io.truth_files import ranges_of
    path = tmp_path / 'labels.jsonl'
    lines = [b'{"imageGcsUri": "gs://b/%d.jpg", "boundingBoxAnnotations": []}' % i for i in range(500)]
    path.write_bytes(b'\n'.join(lines[:250]) + b'\n\n' + b'\n'.join(lines[250:]) + b'\n')
    ranges = ranges_of(str(path), VERTEX_JSONL, 1000)
    assert len(ranges) > 10
    units = [item for _, _, start, end in ranges for item in read_units(str(path), VERTEX_JSONL, '', start, end)]
    assert [unit.parsed.image_uri for _, unit in units] == [f'gs://b/{i}.jpg' for i in range(500)]
    assert [place for place, _ in units] == sorted(place for place, _ in units)
    assert units[-1][1].position.startswith('line ') and 'of the range from byte' in units[-1][1].position


def test_empty_files_beside_the_ground_truth_are_left_out(tmp_path):
    from pipeline.io.truth_files import GroundTruthError, resolve_ground_truth
    (tmp_path / '_SUCCESS').write_bytes(b'')
    (tmp_path / 'labels.jsonl').write_bytes(b'{"imageGcsUri": "gs://b/a.jpg"}\n')
    assert resolve_ground_truth(str(tmp_path)) == [(str(tmp_path / 'labels.jsonl'), VERTEX_JSONL)]
    (tmp_path / 'labels.jsonl').unlink()
    with pytest.raises(GroundTruthError, match='holds no ground truth'):
        resolve_ground_truth(str(tmp_path))


@pytest.mark.parametrize('lines_per_chunk', [2, 50_000])
def test_plain_lines_as_columns_hold_what_the_images_hold(tmp_path, monkeypatch, lines_per_chunk):
    """The job reads JSONL lines a chunk at a time, the plain ones as columns split by bucket; put back
    together, they give the same images as the lines parsed one by one, and every line that is not
    plain (a box without area, an odd ML use, not an object, bad UTF-8) still comes through the full
    check, with its own place."""
    from pipeline.core.evaluation import unpacked
    from pipeline.core.truth_formats import merge_units
    from pipeline.transforms import read_truth as reading
    monkeypatch.setattr(reading, 'UNITS_PER_FLUSH', lines_per_chunk)
    path = tmp_path / 'labels.jsonl'
    box = '{"displayName": "%s", "xMin": %s, "yMin": 0.1, "xMax": 0.5, "yMax": 0.9}'
    path.write_bytes((FIXTURES / 'vertex_import.jsonl').read_bytes() + '\n'.join([
        '{"imageGcsUri": 7}',
        '{"imageGcsUri": "gs://b/flat.jpg", "boundingBoxAnnotations": [%s, %s]}' % (box % ('cat', 0.2), box % ('cat', 0.5)),
        '{"imageGcsUri": "gs://b/use.jpg", "dataItemResourceLabels": {"aiplatform.googleapis.com/ml_use": "holdout"}}',
        '{"imageGcsUri": "gs://b/Train.jpg", "boundingBoxAnnotations": [%s], '
        '"dataItemResourceLabels": {"aiplatform.googleapis.com/ml_use": " Train "}}' % (box % ('dog', 0.1)),
        '',
        '{"imageGcsUri": "gs://b/caf\u00e9.jpg", "boundingBoxAnnotations": [%s]}' % (box % ('chat noir', 0.1)),
        '{"imageGcsUri": "gs://b/cat.jpg", "boundingBoxAnnotations": [%s]}' % (box % ('cat', 0)),
    ]).encode() + '\n{"imageGcsUri": "gs://b/x.jpg", "boundingBoxAnnotations": [{"displayName": "\xe9"}]}\n'.encode(
        'latin-1'))
    outputs = {}
    for work in reading.truth_ranges([(str(path), VERTEX_JSONL)], range_bytes=400):
        for output in reading.read_truth_range(work, '', 3):
            outputs.setdefault(output.tag, []).append(output.value)
    units = [unit for _, (_, _, data) in outputs['evaluation_parts'] for unit in unpacked(data).units()]
    expected = [(place, unit) for work in reading.truth_ranges([(str(path), VERTEX_JSONL)], range_bytes=400)
                for place, unit in read_units(str(path), VERTEX_JSONL, '', work.start, work.end)]
    assert merge_units(units) == merge_units(
        PlacedImage(unit.source_file, place, unit.parsed) for place, unit in expected
        if not isinstance(unit.parsed, GroundTruthRejection)) != []
    rejected = [f'{unit.position}: {unit.parsed.message}' for _, unit in expected
                if isinstance(unit.parsed, GroundTruthRejection)]
    assert [record['error_message'] for record in outputs['dead_letters']] == rejected
    assert len(rejected) == 4  # not an object, the flat box, the odd ML use, bad UTF-8
