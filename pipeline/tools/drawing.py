"""What the report draws with: charts and photos as data URIs (the page stays self-contained), a blank
canvas for an image it cannot show, the reason in words, and labels shortened for charts."""
import base64
import errno
import html
import io
from typing import Mapping, Optional, Sequence, Tuple

import matplotlib
from PIL import Image, ImageDraw, UnidentifiedImageError

# Labels are data, shown as plain text: a '$' in a display name must not start matplotlib's math mode.
# Figures are drawn without pyplot (no display, no global state) straight to PNG bytes.
matplotlib.rcParams['text.parse_math'] = False

CHART_LABEL_CHARS = 40
CANVAS_SIDE = 480
CANVAS_COLOUR = (236, 236, 236)
# Pictures in a grid at 480 px, or each at its natural size up to the page's width (every gallery).
NATURAL_SIZE = '<label><input type="checkbox" class="natural-size"> pictures at their natural size</label>'


def shorten(text: str, limit: int = CHART_LABEL_CHARS) -> str:
    """A label for a chart or a caption: at most `limit` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[:limit - 1] + '\u2026'


def plural(count: int, one: str, many: str) -> str:
    return f'{count:,} {one if count == 1 else many}'


def section_html(anchor: str, title: str, body: str) -> str:
    """A section of the page that its heading folds and unfolds (open at first); the table of contents
    links to the heading's `anchor`."""
    return (f'<details class="section" open><summary><h2 id="{html.escape(anchor)}">{html.escape(title)}</h2>'
            f'</summary>\n{body}\n</details>')


def label_select(element_id: str, labels: Sequence[str]) -> str:
    """A choice of one label, or any (value '*'), for a gallery's filters."""
    options = ''.join(f'<option value="{html.escape(label)}">{html.escape(label or "(no label)")}</option>'
                      for label in labels)
    return f'<select id="{element_id}"><option value="*">any label</option>{options}</select>'


# A caption's height as a share of a picture's (15 px of a picture shown 480 px high, about).
CAPTION_ROOM = 0.04


def box_html(corners: Tuple[float, float, float, float], colour: Tuple[int, int, int], caption: str,
             data: Mapping[str, str], border: str = 'solid') -> str:
    """A box drawn over its picture as a page element: `corners` (x_min, y_min, x_max, y_max) in
    fractions of the picture, placed in percentages (any zoom keeps it in place), its caption above it
    (inside it at the picture's top edge, and ending at its right side past the picture's middle, so
    that it stays on the picture), `data` as data-* attributes for the page's filters. A box reaching
    past the picture (a COCO ground-truth box may) is drawn as far as the picture's edge."""
    x0, y0, x1, y1 = (min(max(value, 0.0), 1.0) for value in corners)
    place = f'left:{x0:.4%};top:{y0:.4%};width:{x1 - x0:.4%};height:{y1 - y0:.4%}'
    attributes = ''.join(f' data-{name}="{html.escape(value)}"' for name, value in data.items())
    sides = ' '.join(side for side, near in (('in', y0 < CAPTION_ROOM), ('end', x0 > 0.6)) if near)
    placed = f' class="{sides}"' if sides else ''
    label = f'<span{placed} style="background:rgb{colour}">{html.escape(caption)}</span>' if caption else ''
    return f'<div class="box"{attributes} style="{place};border-color:rgb{colour};border-style:{border}">{label}</div>'


def figure_data_uri(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format='png', dpi=100, bbox_inches='tight')
    return 'data:image/png;base64,' + base64.b64encode(buffer.getvalue()).decode('ascii')


def jpeg_data_uri(image: Image.Image, max_side: Optional[int] = None) -> str:
    """A photo embedded in the page (JPEG keeps the page small; the boxes stay sharp enough)."""
    if max_side and max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.convert('RGB').save(buffer, 'JPEG', quality=85)
    return 'data:image/jpeg;base64,' + base64.b64encode(buffer.getvalue()).decode('ascii')


def blank_canvas(size: Optional[Tuple[int, int]], side: int = CANVAS_SIDE) -> Image.Image:
    """A plain canvas of the image's aspect ratio (square when its size is unknown), about `side`
    pixels on its longer side, with a thin frame, for boxes whose image cannot be shown."""
    width, height = size if size and size[0] > 0 and size[1] > 0 else (1, 1)
    scale = side / max(width, height)
    canvas = Image.new('RGB', (max(16, round(width * scale)), max(16, round(height * scale))), CANVAS_COLOUR)
    ImageDraw.Draw(canvas).rectangle([0, 0, canvas.width - 1, canvas.height - 1], outline=(160, 160, 160))
    return canvas


def why_not_shown(exc: BaseException) -> str:
    """Why an image is not in the page, said in words for the reader (never an exception's name)."""
    if isinstance(exc, PermissionError):
        return ('the report may not open this image: it lies outside what this run may open '
                '(--probe_allowed_prefixes, or the scheme of --input); give --report_image_mirror to show it')
    if isinstance(exc, FileNotFoundError) or getattr(exc, 'errno', None) == errno.ENOENT:
        return 'the image is not at this address (any more)'
    if isinstance(exc, UnidentifiedImageError):
        return 'the file is not an image the report can decode'
    if isinstance(exc, ValueError):
        return f'the image is not shown: {exc}'
    return 'the image could not be read from where it is stored'
