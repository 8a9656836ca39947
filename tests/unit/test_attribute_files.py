"""Image-attribute files on disk: found, their format told, checked at launch for the columns asked
for, and read row by row (gzipped too)."""
import codecs
import gzip

import pytest

from pipeline.core.image_attributes import AttributeRejection, AttributeRow
from pipeline.io.attribute_files import AttributeFileError, read_attribute_file, resolve_image_attributes


def test_a_folder_of_csv_and_jsonl_files_resolves_each_with_its_format(tmp_path):
    (tmp_path / 'a.csv').write_bytes(codecs.BOM_UTF8 + b'image_uri,camera\ngs://b/1.jpg,north\n')
    (tmp_path / 'b.jsonl.gz').write_bytes(gzip.compress(b'{"image_uri": "gs://b/2.jpg", "camera": "south"}\n'))
    (tmp_path / 'c').write_text('{"image_uri": "gs://b/3.jpg", "camera": 7}\n')
    (tmp_path / '_SUCCESS').write_text('')
    assert resolve_image_attributes(str(tmp_path), 'image_uri', ['camera']) == [
        (str(tmp_path / 'a.csv'), 'csv'), (str(tmp_path / 'b.jsonl.gz'), 'jsonl'), (str(tmp_path / 'c'), 'jsonl')]
    assert list(read_attribute_file(str(tmp_path / 'b.jsonl.gz'), 'jsonl', 'image_uri', ['camera'])) == [
        (1, b'{"image_uri": "gs://b/2.jpg", "camera": "south"}', AttributeRow('gs://b/2.jpg', ('south',)))]
    [(number, _, row)] = read_attribute_file(str(tmp_path / 'a.csv'), 'csv', 'image_uri', ['camera'])
    assert number == 2 and row == AttributeRow('gs://b/1.jpg', ('north',))  # the BOM is not in the header


@pytest.mark.parametrize('name, text, message', [
    ('a.csv', 'uri,camera\n', 'the header has no column image_uri'),
    ('a.csv', 'image_uri,site\n', 'the header has no column camera; its columns: image_uri, site'),
    ('a.jsonl', '{"image_uri": "x", "site": 1}\n', 'no key camera in its first lines'),
    ('a.jsonl', 'not json\n', 'no key image_uri, camera in its first lines; they hold no JSON object'),
])
def test_a_file_without_the_columns_asked_for_stops_the_launch(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(AttributeFileError, match=message):
        resolve_image_attributes(str(tmp_path / name), 'image_uri', ['camera'])


def test_nothing_to_read_stops_the_launch(tmp_path):
    with pytest.raises(AttributeFileError, match='--image_attributes: .* holds no file'):
        resolve_image_attributes(str(tmp_path / 'missing*.csv'), 'image_uri', ['camera'])
    (tmp_path / 'empty.csv').write_text('\n')
    with pytest.raises(AttributeFileError, match='only empty files'):
        resolve_image_attributes(str(tmp_path / 'empty.csv'), 'image_uri', ['camera'])


def test_a_file_that_breaks_while_read_gives_what_was_read_then_one_rejection(tmp_path):
    whole = gzip.compress(b''.join(b'{"image_uri": "gs://b/%d.jpg", "camera": "n"}\n' % i for i in range(2000)))
    (tmp_path / 'cut.jsonl.gz').write_bytes(whole[:len(whole) // 2])
    units = list(read_attribute_file(str(tmp_path / 'cut.jsonl.gz'), 'jsonl', 'image_uri', ['camera']))
    assert all(isinstance(unit, AttributeRow) for _, _, unit in units[:-1]) and len(units) > 1
    number, payload, rejection = units[-1]
    assert isinstance(rejection, AttributeRejection) and payload is None and number == len(units)
    assert rejection.message.startswith(f'could not read the file from line {number} on')
