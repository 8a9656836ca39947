"""Image attributes (--image_attributes): rows read from CSV and JSONL, the slice each value falls in,
and the images of each slice of a bucket."""
import math

import numpy as np
import pytest

from pipeline.core.image_attributes import (
    AttributeProfile,
    AttributeRejection,
    AttributeRow,
    BucketAttributes,
    SliceRule,
    image_values,
    numeric_value,
    parse_csv,
    parse_jsonl_line,
    slice_groups,
)


def test_a_jsonl_line_gives_text_numbers_and_booleans_as_text():
    row = parse_jsonl_line(b'{"uri": "gs://b/1.jpg", "camera": "north", "hour": 7, "night": true, "x": [1]}',
                           'uri', ['camera', 'hour', 'night', 'site'])
    assert row == AttributeRow('gs://b/1.jpg', ('north', 7.0, 'true', None))


@pytest.mark.parametrize('line, message', [
    (b'{"uri": ', 'not valid JSON'),
    (b'[1, 2]', "expected a JSON object with 'uri', got list"),
    (b'{"uri": ""}', "uri: expected the image URI as a non-empty string, got ''"),
    (b'{"uri": 3}', 'uri: expected the image URI as a non-empty string, got 3'),
    (b'{"uri": "gs://b/1.jpg", "camera": {"a": 1}}', 'camera: expected a string, a number or a boolean, got dict'),
])
def test_a_jsonl_line_that_cannot_be_used_says_why(line, message):
    rejection = parse_jsonl_line(line, 'uri', ['camera'])
    assert isinstance(rejection, AttributeRejection) and rejection.message.startswith(message)


def test_csv_rows_follow_their_header_and_name_each_bad_row():
    text = ('\ncamera,uri,hour\n'
            'north,gs://b/1.jpg,7\n'
            '"south, gate",gs://b/2.jpg,\n'
            '\n'
            'east,gs://b/3.jpg\n'
            'west,,4\n'
            'west,gs://b/\udcff.jpg,4\n')
    rows = list(parse_csv(text, 'uri', ['hour', 'camera']))
    assert [(number, unit) for number, _, unit in rows] == [
        (3, AttributeRow('gs://b/1.jpg', ('7', 'north'))),
        (4, AttributeRow('gs://b/2.jpg', (None, 'south, gate'))),
        (6, AttributeRejection('expected 3 fields as the header names, got 2')),
        (7, AttributeRejection('uri: the image URI is empty')),
        (8, AttributeRejection('the row is not UTF-8 text'))]
    assert rows[1][1] == '"south, gate",gs://b/2.jpg,'


def test_a_csv_header_without_the_columns_asked_for_is_one_rejection():
    [(number, _, rejection)] = parse_csv('camera,path\nnorth,gs://b/1.jpg\n', 'uri', ['camera', 'hour'])
    assert number == 1 and rejection.message == 'the header has no column uri, hour; its columns: camera, path'


@pytest.mark.parametrize('value, number', [(3.0, 3.0), ('3', 3.0), (' 2.5 ', 2.5), ('1e3', 1000.0), ('n/a', None),
                                           ('nan', None), ('inf', None), (None, None), (math.inf, None)])
def test_numbers_are_read_from_numbers_and_from_text(value, number):
    assert numeric_value(value) == number


def test_quantile_bins_hold_their_lower_edge_and_the_last_its_upper_one():
    rule = SliceRule.of_profile('hour', AttributeProfile(True, None, (0.0, 5.0, 11.0, 17.0, 23.0)), 4)
    assert [rule.slice_of(value) for value in (0, 4.9, '5', 16.99, 17, 23, -1, 30, None, 'n/a')] == [
        (1, '[0, 5)'), (1, '[0, 5)'), (2, '[5, 11)'), (3, '[11, 17)'), (4, '[17, 23]'), (4, '[17, 23]'),
        (1, '[0, 5)'), (4, '[17, 23]'), (0, None), (0, None)]


def test_edges_given_make_bins_open_at_both_ends():
    rule = SliceRule.of_profile('size', AttributeProfile(True, None, (1.0, 2.0)), (10.0, 100.5))
    assert [rule.slice_of(value)[1] for value in (-5, 10, 99, 100.5, 1e9)] == [
        '< 10', '[10, 100.5)', '[10, 100.5)', '>= 100.5', '>= 100.5']


def test_few_distinct_numbers_are_each_a_slice_and_text_is_sliced_by_value():
    few = SliceRule.of_profile('site', AttributeProfile(True, frozenset({3.0, 1.0, 2.0}), (1.0, 2.0, 3.0)), 4)
    assert [few.slice_of(value) for value in ('3', 1.0, '02')] == [(3, '3'), (1, '1'), (2, '2')]
    text = SliceRule.of_profile('camera', AttributeProfile(False, None, ()), 4)
    assert text.slice_of('north') == (0, 'north') and text.slice_of(7.0) == (0, '7') and text.slice_of(None) == (0, None)
    single = SliceRule.of_profile('x', AttributeProfile(True, None, (2.0, 2.0)), 4)
    assert single.slice_of(2) == (1, '[2, 2]')


def test_an_image_takes_the_values_of_its_first_row_in_file_order():
    parts = [BucketAttributes('b.csv', np.array([2]), ['gs://i/1'], [('late',)]),
             BucketAttributes('a.csv', np.array([9, 4]), ['gs://i/1', 'gs://i/1'], [('second',), ('first',)]),
             BucketAttributes('a.csv', np.array([5]), ['gs://i/2'], [('two',)])]
    values, repeated = image_values(parts, ['gs://i/2', 'gs://i/3', 'gs://i/1'])
    assert values == [('two',), None, ('first',)] and repeated == 2


def test_slice_groups_partition_the_images_by_each_attribute():
    rules = [SliceRule('camera'), SliceRule('hour', (0.0, 10.0, 20.0))]
    groups = slice_groups([('n', 1.0), None, ('s', 15.0), ('n', None)], rules)
    assert {key: images.tolist() for key, images in groups.items()} == {
        ('camera', 0, 'n'): [0, 3], ('camera', 0, None): [1], ('camera', 0, 's'): [2],
        ('hour', 1, '[0, 10)'): [0], ('hour', 0, None): [1, 3], ('hour', 2, '[10, 20]'): [2]}


def test_an_attribute_of_too_many_values_keeps_the_most_frequent_and_one_slice_for_the_rest():
    from pipeline.core.image_attributes import MAX_SLICE_VALUES, OTHER_VALUES, most_frequent
    from pipeline.transforms.read_attributes import MergeProfilesFn
    profiles = MergeProfilesFn(5)
    parts = [profiles.create_accumulator(), profiles.create_accumulator()]
    for image in range(3 * MAX_SLICE_VALUES):  # an id per image, over two files; a few ids repeat
        parts[image % 2] = profiles.add_value(parts[image % 2], f'id-{image % (2 * MAX_SLICE_VALUES):04d}')
    profile = profiles.extract_output(profiles.merge_accumulators(parts))
    assert not profile.numeric and len(profile.frequent) == MAX_SLICE_VALUES
    assert profile.frequent == frozenset(f'id-{i:04d}' for i in range(MAX_SLICE_VALUES))  # seen twice each
    rule = SliceRule.of_profile('image_id', profile, 4)
    assert rule.slice_of('id-0001') == (0, 'id-0001') and rule.slice_of('id-0150') == (1, OTHER_VALUES)
    assert most_frequent({'a': 1, 'b': 2}) is None  # few values: each its own slice
    few = profiles.extract_output(profiles.add_value(profiles.create_accumulator(), 'north'))
    assert few.frequent is None and SliceRule.of_profile('camera', few, 4).slice_of('north') == (0, 'north')


def test_a_profile_tells_numbers_from_text_across_files():
    from pipeline.transforms.read_attributes import MergeProfilesFn
    profiles = MergeProfilesFn(5)
    numbers, texts = profiles.create_accumulator(), profiles.create_accumulator()
    for value in ('1', 2.0, None, '3', '4', '5', '6'):
        numbers = profiles.add_value(numbers, value)
    texts = profiles.add_value(texts, 'seven')
    numeric = profiles.extract_output(profiles.merge_accumulators([numbers, profiles.create_accumulator()]))
    assert numeric.numeric and numeric.distinct == frozenset({1.0, 2.0, 3.0, 4.0, 5.0, 6.0})
    assert numeric.quantiles[0] == 1.0 and numeric.quantiles[-1] == 6.0
    mixed = profiles.extract_output(profiles.merge_accumulators([numbers, texts]))
    assert not mixed.numeric and mixed.distinct is None and mixed.quantiles == ()
