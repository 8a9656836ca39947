"""Boxes drawn over a picture as page elements: placed in fractions of the picture, their captions kept
on the picture near its top and right edges."""
import re

import pytest

from pipeline.tools.drawing import box_html


def caption_class(corners):
    html = box_html(corners, (255, 0, 0), 'person 0.9', {'label': 'person'})
    found = re.search(r'<span(?: class="([^"]*)")? style=', html)
    assert found, html
    return found.group(1) or ''


@pytest.mark.parametrize('corners, placed', [
    ((0.1, 0.3, 0.2, 0.5), ''),  # above the box
    ((0.1, 0.0, 0.2, 0.5), 'in'),  # at the picture's top: inside the box
    ((0.8, 0.3, 0.95, 0.5), 'end'),  # past the middle: ending at the box's right side
    ((0.7, 0.01, 1.0, 0.2), 'in end'),
])
def test_a_caption_stays_on_the_picture(corners, placed):
    assert caption_class(corners) == placed


def test_a_box_is_placed_in_percentages_with_its_data_escaped():
    html = box_html((0.25, 0.5, 0.75, 1.0), (0, 128, 255), 'a<b', {'label': 'x"y'})
    assert 'left:25.0000%;top:50.0000%;width:50.0000%;height:50.0000%' in html
    assert 'data-label="x&quot;y"' in html and '>a&lt;b</span>' in html


def test_a_box_past_the_picture_is_drawn_to_its_edge():
    # A COCO ground-truth box may reach past its image (pycocotools counts it as given).
    html = box_html((-0.3, 0.5, 1.2, 1.0), (0, 128, 255), 'cat', {'label': 'cat'})
    assert 'left:0.0000%;top:50.0000%;width:100.0000%;height:50.0000%' in html
