"""Ground truth in its three formats, from fixtures in each format's published shape; every unit that
cannot be used is a rejection with a reason, never an exception."""
import json

import pytest
from conftest import ROOT

from pipeline.core.dead_letters import INVALID_GROUND_TRUTH
from pipeline.core.truth_formats import (
    GroundTruthBox,
    GroundTruthImage,
    GroundTruthRejection,
    parse_automl_csv,
    parse_automl_row,
    parse_coco,
    parse_vertex_line,
)

FIXTURES = ROOT / 'tests' / 'fixtures' / 'ground_truth'


def test_the_automl_csv_sample_rows():
    rows = list(parse_automl_csv((FIXTURES / 'automl_vision.csv').read_text()))
    assert [number for number, _, _ in rows] == [1, 2, 3, 4]
    assert rows[0][1] == 'TRAIN,gs://folder/image1.png,car,0.1,0.1,,,0.3,0.3,,'
    assert [unit for _, _, unit in rows] == [
        GroundTruthImage('gs://folder/image1.png', (GroundTruthBox('car', (0.1, 0.1, 0.3, 0.3)),), 'training'),
        GroundTruthImage('gs://folder/image1.png', (GroundTruthBox('bike', (0.7, 0.6, 0.8, 0.9)),), 'training'),
        GroundTruthImage('gs://folder/im2.png', (GroundTruthBox('car', (0.1, 0.1, 0.2, 0.3)),), 'unassigned'),
        GroundTruthImage('gs://folder/im3.png', (), 'test'),
    ]


def test_csv_without_ml_use_with_quoted_paths_and_short_rows():
    rows = list(parse_automl_csv('"gs://b/a, b ""c"".jpg",cat,0,0,,,1,0.5,,\n\n'
                                 'gs://b/d.jpg,dog,0.2,0.2,,,0.4,0.4\nvalidation,gs://b/e.jpg\n'))
    assert [(n, unit) for n, _, unit in rows] == [
        (1, GroundTruthImage('gs://b/a, b "c".jpg', (GroundTruthBox('cat', (0.0, 0.0, 1.0, 0.5)),))),
        (3, GroundTruthImage('gs://b/d.jpg', (GroundTruthBox('dog', (0.2, 0.2, 0.4, 0.4)),))),
        (4, GroundTruthImage('gs://b/e.jpg', (), 'validation')),
    ]


@pytest.mark.parametrize('row, message', [
    ('TRAIN,gs://b/a.jpg,car,0.1,0.1,,,0.3,0.3,,,extra', 'expected at most 11 columns'),
    ('SOMETIMES,gs://b/a.jpg,car,0.1,0.1,,,0.3,0.3,,', "ML use 'SOMETIMES' is none of"),
    ('gs://b/a.jpg,car,x,0.1,,,0.3,0.3,,', "X1: expected a number from 0 to 1, got 'x'"),
    ('gs://b/a.jpg,car,0.1,0.1,,,1.5,0.3,,', 'X3: 1.5 is outside the image'),
    ('gs://b/a.jpg,,0.1,0.1,,,0.3,0.3,,', 'a box without a label'),
    ('gs://b/a.jpg,car,0.1,,,,0.3,0.3,,', 'vertex 1 has only one coordinate'),
    ('gs://b/a.jpg,car,0.1,0.1,,,,,,', 'a box needs at least 2 vertices, got 1'),
    ('gs://b/a.jpg,car,0.1,0.1,,,0.1,0.3,,', 'the box has no area'),
    (',car,0.1,0.1,,,0.3,0.3,,', 'the image path (GCS_PATH) is missing'),
])
def test_bad_csv_rows_are_rejected_with_a_reason(row, message):
    (_, written, unit), = parse_automl_csv(row + '\n')
    assert written == row
    assert isinstance(unit, GroundTruthRejection) and unit.kind == INVALID_GROUND_TRUTH
    assert message in unit.message, unit.message


@pytest.mark.parametrize('header', ['ml_use,gcs_path,label,x_min,y_min,,,x_max,y_max,,', 'image,label,xmin,ymin,xmax,ymax'])
def test_a_header_row_is_a_dead_letter_that_says_so_and_the_rows_after_it_are_read(header):
    rows = list(parse_automl_csv(f'\n{header}\ngs://b/d.jpg,dog,0.2,0.2,,,0.4,0.4\n'))
    assert [n for n, _, _ in rows] == [2, 3]
    assert isinstance(rows[0][2], GroundTruthRejection) and rows[0][2].message.startswith('a header row')
    assert rows[1][2] == GroundTruthImage('gs://b/d.jpg', (GroundTruthBox('dog', (0.2, 0.2, 0.4, 0.4)),))
    # Below the first row, names are a bad row like any other.
    (_, _, first), (_, _, second) = parse_automl_csv(f'gs://b/d.jpg,dog,0.2,0.2,,,0.4,0.4\n{header}\n')
    assert not second.message.startswith('a header row')
    (_, _, words), = parse_automl_csv('gs://b/d.jpg,dog,a,b,,,c,d\n')  # a path: a bad row, not a header
    assert not words.message.startswith('a header row')


def test_the_vertex_import_lines():
    lines = (FIXTURES / 'vertex_import.jsonl').read_bytes().splitlines()
    assert [parse_vertex_line(line) for line in lines] == [
        GroundTruthImage('gs://bucket/filename1.jpeg', (GroundTruthBox('Tomato', (0.3, 0.3, 0.7, 0.6)),
                                                       GroundTruthBox('Salad', (0.1, 0.2, 0.5, 0.9))), 'test'),
        GroundTruthImage('gs://bucket/filename2.jpeg', (), 'training'),
    ]


@pytest.mark.parametrize('line, message, uri', [
    (b'{"imageGcsUri": "gs://b/a.jpg",', 'not valid JSON', None),
    (b'[]', 'expected a JSON object with imageGcsUri', None),
    (b'{"boundingBoxAnnotations": []}', 'imageGcsUri: expected the image URI', None),
    (b'{"imageGcsUri": "gs://b/a.jpg", "boundingBoxAnnotations": [{"displayName": "x", "xMin": "0.1", '
     b'"xMax": 0.2, "yMin": 0, "yMax": 1}]}', "boundingBoxAnnotations[0].xMin: expected a number", 'gs://b/a.jpg'),
    (b'{"imageGcsUri": "gs://b/a.jpg", "boundingBoxAnnotations": [{"xMin": 0.1, "xMax": 0.2, "yMin": 0, '
     b'"yMax": 1}]}', 'boundingBoxAnnotations[0].displayName: expected a non-empty string', 'gs://b/a.jpg'),
    (b'{"imageGcsUri": "gs://b/a.jpg", "dataItemResourceLabels": {"aiplatform.googleapis.com/ml_use": "x"}}',
     "ML use 'x' is none of", 'gs://b/a.jpg'),
])
def test_bad_vertex_lines_are_rejected_with_a_reason(line, message, uri):
    unit = parse_vertex_line(line)
    assert isinstance(unit, GroundTruthRejection) and message in unit.message, unit
    assert unit.image_uri == uri


def test_coco_boxes_are_normalized_by_their_own_image():
    images, rejected = parse_coco((FIXTURES / 'coco.json').read_bytes(), image_prefix='gs://bucket/images/')
    assert not rejected
    assert images == [
        GroundTruthImage('gs://bucket/images/a.jpg', (GroundTruthBox('dog', (0.1, 0.1, 0.6, 0.6), area=76800.0),
                                                      GroundTruthBox('person', (0.0, 0.0, 1.0, 1.0), crowd=True,
                                                                     area=307200.0)),
                         size=(640.0, 480.0)),
        GroundTruthImage('gs://bucket/images/sub/b c.jpg', (GroundTruthBox('dog', (0.1, 0.1, 0.4, 0.3), area=1200.0),),
                         size=(100.0, 200.0)),
        GroundTruthImage('gs://bucket/images/empty.jpg', (), size=(50.0, 50.0)),
    ]


def test_the_coco_prefix_joins_file_names_and_leaves_uris_as_they_are():
    document = json.dumps({'images': [{'id': 1, 'file_name': 'a.jpg', 'width': 10, 'height': 10},
                                      {'id': 2, 'file_name': '/sub/b.jpg', 'width': 10, 'height': 10},
                                      {'id': 3, 'file_name': 'gs://other/c.jpg', 'width': 10, 'height': 10},
                                      {'id': 4, 'file_name': 'https://host/d.jpg', 'width': 10, 'height': 10}],
                           'annotations': [], 'categories': []}).encode()
    images, rejected = parse_coco(document, image_prefix='gs://bucket/images/')
    assert not rejected
    assert [image.image_uri for image in images] == ['gs://bucket/images/a.jpg', 'gs://bucket/images/sub/b.jpg',
                                                     'gs://other/c.jpg', 'https://host/d.jpg']


def test_bad_coco_parts_are_rejected_and_the_rest_is_kept():
    document = (b'{"images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 100},'
                b' {"id": 2, "file_name": "b.jpg", "width": 0, "height": 100}],'
                b' "annotations": [{"image_id": 9, "category_id": 1, "bbox": [0, 0, 10, 10]},'
                b' {"image_id": 1, "category_id": 7, "bbox": [0, 0, 10, 10]},'
                b' {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10]},'
                b' {"image_id": 1, "category_id": 1, "bbox": [90, 0, 1e999, 10]},'
                b' {"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]},'
                b' {"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": -1},'
                b' {"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": "big"},'
                b' {"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 150}],'
                b' "categories": [{"id": 1, "name": "cat"}]}')
    images, rejected = parse_coco(document)
    assert images == [GroundTruthImage('a.jpg', (GroundTruthBox('cat', (0.1, 0.1, 0.3, 0.3)),
                                                 GroundTruthBox('cat', (0.1, 0.1, 0.3, 0.3), area=150.0)),
                                       size=(100.0, 100.0))]
    assert [(where, r.message.split(':')[0]) for where, r in rejected] == [
        ('images[1]', 'width'), ('annotations[0]', 'image_id 9 is not an image of the document'),
        ('annotations[1]', 'category_id 7 is not a category of the document'), ('annotations[2]', 'bbox'),
        ('annotations[3]', 'bbox x + width'), ('annotations[5]', 'area'), ('annotations[6]', 'area')]
    assert parse_coco(b'{"images": 1}')[1][0][1].message.startswith('expected a COCO object')
    assert parse_coco(b'not json')[1][0][1].message.startswith('not valid JSON')


def test_a_row_is_a_unit_of_its_own():
    assert parse_automl_row(['TEST', 'gs://b/a.jpg', '', '', '', '', '', '', '', '', '']) == \
        GroundTruthImage('gs://b/a.jpg', (), 'test')


def test_the_plain_path_gives_what_the_full_check_gives():
    """A Vertex box taken by the one-expression check equals the full check's box, on random values
    around the edges (0, 1, swapped, equal, ints, bools, strings, out of range)."""
    import random

    from pipeline.core import truth_formats
    rng = random.Random(17)
    values = [0, 1, 0.0, 1.0, 0.5, 0.25, 0.75, 1.0000001, -0.0, True, '0.5', None, 2, -1]
    for _ in range(3000):
        annotation = {'displayName': rng.choice(['car', '', 7]),
                      **{key: rng.choice(values + [rng.random()]) for key in ('xMin', 'xMax', 'yMin', 'yMax')}}
        plain = truth_formats._plain_vertex_annotation(annotation)
        if plain is None:
            continue
        assert plain == truth_formats._vertex_annotation(annotation, 'a'), annotation


def test_the_typed_import_line_decoder_answers_as_the_full_check():
    """Random import lines, valid and not: the typed path's image (or its decline, then the full
    check) equals what the full check alone gives."""
    import json
    import random

    from pipeline.core.truth_formats import parse_vertex_line, parse_vertex_line_fully
    rng = random.Random(5)
    numbers = [0, 1, 0.0, 0.5, 1.0, 0.2, 0.9, -0.0, 1.0000001, -1e-9, 2, True, None, '0.5']

    def box():
        fields = {'displayName': rng.choice(['car', '', 'dog', 3]),
                  **{k: rng.choice(numbers) for k in ('xMin', 'xMax', 'yMin', 'yMax')}}
        if rng.random() < 0.1:
            del fields[rng.choice(list(fields))]
        return fields
    for _ in range(3000):
        line = {'imageGcsUri': rng.choice(['gs://b/a.jpg', '', ' ', 5]),
                'boundingBoxAnnotations': [box() for _ in range(rng.randint(0, 3))]}
        if rng.random() < 0.3:
            line['dataItemResourceLabels'] = {'aiplatform.googleapis.com/ml_use': rng.choice(
                ['test', 'TRAIN', 'holdout', '', 7])}
        if rng.random() < 0.05:
            line['boundingBoxAnnotations'] = None
        data = json.dumps(line).encode()
        assert parse_vertex_line(data) == parse_vertex_line_fully(data), data
    assert parse_vertex_line(b'{"imageGcsUri": "gs://b/\xff.jpg"}') == parse_vertex_line_fully(
        b'{"imageGcsUri": "gs://b/\xff.jpg"}')
