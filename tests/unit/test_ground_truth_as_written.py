"""Ground truth is read exactly once and exactly as written (issue 24, part 3): links, the csv
module's rules, formats told by content, and no silent fix-ups."""
import codecs
import json
import os

import pytest
from conftest import ROOT

from pipeline.core.truth_formats import (
    GroundTruthImage,
    GroundTruthRejection,
    parse_automl_csv,
    parse_coco,
    parse_vertex_line,
)
from pipeline.io.truth_files import COCO, VERTEX_JSONL, GroundTruthError, detect_format, ground_truth_files

BOX = '0.1,0.1,,,0.5,0.5,,'


def test_a_link_to_a_sub_folder_and_a_link_loop_read_each_file_once(tmp_path):
    (tmp_path / 'v3').mkdir()
    (tmp_path / 'v3' / 'labels.jsonl').write_text('{"imageGcsUri": "gs://b/a.jpg"}\n')
    os.symlink('v3', tmp_path / 'latest')
    os.symlink('.', tmp_path / 'v3' / 'loop')
    assert ground_truth_files(str(tmp_path)) == [str(tmp_path / 'latest' / 'labels.jsonl')]
    assert len(ground_truth_files(str(tmp_path / '**' / '*.jsonl'))) == 1


def test_a_link_that_loops_on_itself_is_named(tmp_path):
    os.symlink('self', tmp_path / 'self')
    with pytest.raises(GroundTruthError, match='loops'):
        ground_truth_files(str(tmp_path))


def rows(text):
    return [(number, parsed) for number, _, parsed in parse_automl_csv(text)]


@pytest.mark.parametrize('label', ['Cat\nDog', 'A\u2028B', 'A\u0085B', 'A\fB', ' Salad ', 'a, "b"', 'Ünïcødé'])
def test_a_csv_label_is_read_as_written(label):
    quoted = '"' + label.replace('"', '""') + '"'
    ((number, image), (second, other)) = rows(f'gs://b/ a.jpg,{quoted},{BOX}\r\ngs://b/c.jpg,x,{BOX}\n')
    assert number == 1 and image.image_uri == 'gs://b/ a.jpg' and image.boxes[0].label == label
    assert second == 2 + label.count('\n') and other.boxes[0].label == 'x'


def test_a_csv_number_is_a_decimal_as_a_csv_writes_it():
    [(_, rejected)] = rows('gs://b/a.jpg,x,0.1_5,0.1,,,0.5,0.5,,\n')
    assert isinstance(rejected, GroundTruthRejection) and "'0.1_5'" in rejected.message
    [(_, fine)] = rows('gs://b/a.jpg,x, 0.1 ,0.1,,,0.5,.5,,\n')
    assert fine.boxes[0].box == (0.1, 0.1, 0.5, 0.5)


def test_one_row_with_a_byte_that_is_not_utf8_is_one_rejection():
    data = f'gs://b/a.jpg,x,{BOX}\ngs://b/b.jpg,caf\xe9,{BOX}\ngs://b/c.jpg,y,{BOX}\n'.encode('cp1252')
    found = rows(data.decode('utf-8', 'surrogateescape'))
    assert [type(parsed).__name__ for _, parsed in found] == ['GroundTruthImage', 'GroundTruthRejection',
                                                              'GroundTruthImage']


@pytest.mark.parametrize('name, head, fmt', [
    ('coco.json', codecs.BOM_UTF8 + b'{"images": [], "annotations": []}', COCO),
    ('coco.json', b'{"info": {"description": "' + b'x' * 70_000 + b'"}, "images": []}', COCO),
    ('coco.json', b'{\n  "info": {},\n  "images": [\n', COCO),
    ('labels.txt', codecs.BOM_UTF8 + b'{"imageGcsUri": "gs://b/a.jpg"}\n{"imageGcsUri": "gs://b/b.jpg"}\n',
     VERTEX_JSONL),
    ('labels.txt', b'  \n{"imageGcsUri": "gs://b/a.jpg", "images": 1}\n', VERTEX_JSONL),
    ('one-line.txt', b'{"images": [{"id": 1}], "annotations": []}', COCO),
])
def test_the_format_is_told_by_the_first_json_value(name, head, fmt):
    assert detect_format(f'/data/{name}', head[:64 * 1024]) == fmt


def test_a_json_array_is_none_of_the_formats():
    with pytest.raises(GroundTruthError, match='JSON array'):
        detect_format('/data/a.json', b'[{"imageGcsUri": "gs://b/a.jpg"}]')


def coco(annotations, categories=({'id': 1, 'name': 'cat'},), images=({'id': 1, 'file_name': 'a.jpg',
                                                                          'width': 100, 'height': 100},)):
    return json.dumps({'images': list(images), 'annotations': annotations,
                       'categories': list(categories)}).encode()


def annotation(**given):
    return {'id': 1, 'image_id': 1, 'category_id': 1, 'bbox': [10, 10, 20, 20], **given}


def test_a_coco_document_with_nan_keeps_its_other_boxes():
    document = coco([annotation(), annotation(bbox=[10, 10, float('nan'), 20])])  # json writes NaN
    assert b'NaN' in document
    images, rejected = parse_coco(document)
    assert len(images[0].boxes) == 1 and [where for where, _ in rejected] == ['annotations[1]']


@pytest.mark.parametrize('change, message', [
    ({'bbox': [30, 10, -20, 20]}, 'width and height must not be negative'),
    ({'iscrowd': '0'}, 'iscrowd'), ({'iscrowd': 'false'}, 'iscrowd'), ({'iscrowd': 2}, 'iscrowd'),
    ({'iscrowd': -1}, 'iscrowd'),
    ({'image_id': [1]}, 'image_id: expected a number or a string'),
    ({'category_id': {'a': 1}}, 'category_id: expected a number or a string'),
])
def test_a_coco_box_that_says_something_odd_is_rejected_not_fixed(change, message):
    images, rejected = parse_coco(coco([annotation(), annotation(**change)]))
    assert len(images[0].boxes) == 1
    [(where, rejection)] = rejected
    assert where == 'annotations[1]' and message in rejection.message


def test_a_coco_box_of_no_width_or_height_is_a_box_as_pycocotools_counts_it():
    # pycocotools keeps it among the image's boxes: nothing can match it, so it is a miss.
    images, rejected = parse_coco(coco([annotation(bbox=[10, 5, 0, 4]), annotation(bbox=[1, 2, 3, 0], area=0)]))
    assert rejected == [] and [box.box for box in images[0].boxes] == [(0.1, 0.05, 0.1, 0.09), (0.01, 0.02, 0.04, 0.02)]


def test_a_coco_box_past_the_edge_keeps_its_extent():
    # A 1-based x_max (101 on a 100-pixel image), a box half past the edge and one wholly outside the
    # image are taken as pycocotools takes them, not clipped (the run warns of the last two); an edge
    # that is not a finite number is a dead letter.
    images, rejected = parse_coco(coco([annotation(bbox=[50, 10, 51, 20]), annotation(bbox=[-30, 10, 60, 20]),
                                        annotation(bbox=[150, 10, 20, 20]), annotation(bbox=[50, 10, 1e309, 20])]))
    assert [box.box for box in images[0].boxes] == [(0.5, 0.1, 1.01, 0.3), (-0.3, 0.1, 0.3, 0.3), (1.5, 0.1, 1.7, 0.3)]
    [(where, rejection)] = rejected
    assert where == 'annotations[3]' and rejection.message == 'bbox x + width: inf is not a finite number of pixels'


def test_iscrowd_zero_and_one_are_taken():
    # JSON's false and true too: pycocotools reads them as 0 and 1 (int(True) is 1).
    images, rejected = parse_coco(coco([annotation(iscrowd=0), annotation(iscrowd=1), annotation(iscrowd=False),
                                        annotation(iscrowd=True)]))
    assert [box.crowd for box in images[0].boxes] == [False, True, False, True] and rejected == []


def test_an_unhashable_image_id_is_one_rejection():
    images, rejected = parse_coco(coco([], images=({'id': [1], 'file_name': 'a.jpg', 'width': 9, 'height': 9},
                                                   {'id': 2, 'file_name': 'b.jpg', 'width': 9, 'height': 9})))
    assert [image.image_uri for image in images] == ['b.jpg'] and rejected[0][0] == 'images[0]'


def test_a_category_id_given_twice_relabels_nothing():
    categories = ({'id': 1, 'name': 'cat'}, {'id': 1, 'name': 'dog'}, {'id': 2, 'name': 'bird'})
    images, rejected = parse_coco(coco([annotation(), annotation(category_id=2)], categories=categories))
    assert [box.label for box in images[0].boxes] == ['bird']
    assert [where for where, _ in rejected] == ['categories[1]', 'annotations[0]']


@pytest.mark.parametrize('box', [
    {'xMin': 0.7, 'xMax': 0.3, 'yMin': 0.1, 'yMax': 0.5}, {'xMin': 0.1, 'xMax': 0.5, 'yMin': 0.9, 'yMax': 0.2}])
def test_an_inverted_vertex_box_is_rejected_not_swapped(box):
    line = json.dumps({'imageGcsUri': 'gs://b/a.jpg', 'boundingBoxAnnotations': [{'displayName': 'x', **box}]})
    parsed = parse_vertex_line(line.encode())
    assert isinstance(parsed, GroundTruthRejection) and 'inverted' in parsed.message
    assert not isinstance(parsed, GroundTruthImage)


TYPED_COCO = [  # odd values, each object a JSON object: the typed decoder takes them, the checks decide
    coco([annotation(), annotation(iscrowd=1), annotation(bbox=[30, 10, -20, 20]), annotation(iscrowd='0'),
          annotation(image_id=[1]), annotation(category_id=9), annotation(bbox='x'), annotation(iscrowd=None)]),
    coco([annotation()], categories=({'id': 1, 'name': 'cat'}, {'id': 1, 'name': 'dog'}, {'name': 'no id'})),
    coco([annotation(segmentation=[[1, 2, 3, 4]], area=3.5)],
         images=({'id': 1, 'file_name': 'a.jpg', 'width': 100, 'height': 100, 'coco_url': 'x'},
                 {'id': 2, 'file_name': 7, 'width': 1, 'height': 1}, {'id': 3, 'width': -1})),
    (ROOT / 'tests' / 'fixtures' / 'ground_truth' / 'coco.json').read_bytes(),
]
UNTYPED_COCO = [
    coco([annotation(), {'not': 'an annotation'}, 'a string'], categories=({'id': 1, 'name': 'cat'}, 7)),
    coco([], images=({'id': 1, 'file_name': 'a.jpg', 'width': 9, 'height': 9}, [1])),
    b'{"images": {"not": "a list"}}', b'{"images": [], "annotations": null, "categories": null}',
]


@pytest.mark.parametrize('document, typed_path', [(d, True) for d in TYPED_COCO] + [(d, False) for d in UNTYPED_COCO])
def test_the_typed_coco_decoder_gives_what_the_full_reading_gives(document, typed_path, monkeypatch):
    from pipeline.core import truth_formats
    try:
        truth_formats._COCO_DOCUMENT.decode(document)
        took = True
    except truth_formats.msgspec.DecodeError:
        took = False
    assert took is typed_path
    typed = parse_coco(document, 'gs://b/')

    class Declines:
        def decode(self, data):
            raise truth_formats.msgspec.DecodeError('declined')
    monkeypatch.setattr(truth_formats, '_COCO_DOCUMENT', Declines())
    assert typed == parse_coco(document, 'gs://b/')


def test_a_coco_image_without_its_size_takes_the_runs_own_or_says_where_to_give_it():
    document = coco([annotation(bbox=[10, 5, 20, 10])], images=({'id': 1, 'file_name': 'a.jpg'},))
    images, rejected = parse_coco(document, size_of=lambda uri: (200, 50) if uri == 'a.jpg' else None)
    assert rejected == [] and images[0].size == (200.0, 50.0) and images[0].boxes[0].box == (0.05, 0.1, 0.15, 0.3)
    images, rejected = parse_coco(document)
    assert images == [] and 'width and height: not given' in rejected[0][1].message
    assert '--image_sizes' in rejected[0][1].message
    half = coco([annotation()], images=({'id': 1, 'file_name': 'a.jpg', 'width': 100},))
    images, rejected = parse_coco(half, size_of=lambda uri: (200, 50))  # a size half given is the document's error
    assert images == [] and rejected[0][1].message.startswith('height: expected a positive number')


def test_coco_annotations_repeating_an_id_are_counted_and_each_kept():
    # pycocotools keeps one annotation per id (the last) and evaluates it in place of the others.
    from pipeline.core.truth_formats import parse_coco_in_order
    document = coco([annotation(id=1), annotation(id=1, bbox=[50, 50, 10, 10]), annotation(id='1'),
                     annotation(id=True), annotation(id=True), {'image_id': 1, 'category_id': 1, 'bbox': [1, 1, 2, 2]},
                     annotation(id=7), annotation(id=7), annotation(id=7)])
    read = parse_coco_in_order(document)
    assert len(read.images[0].boxes) == 9 and read.rejected == []
    assert read.repeated_ids == 3  # the second 1 and two more 7s: '1' is another id, true and none are no ids
