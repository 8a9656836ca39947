"""Ground truth in the three formats users hold it in, each unit (a JSONL line, a CSV row, a COCO
image) into labelled boxes of one image, or into the reason it cannot be used.

- Vertex AI's image bounding-box import JSONL (`image_bounding_box_io_format_1.0.0`): `imageGcsUri`,
  `boundingBoxAnnotations` [{`displayName`, `xMin`, `xMax`, `yMin`, `yMax`}], normalized, and
  `dataItemResourceLabels` {`aiplatform.googleapis.com/ml_use`: ...}.
- AutoML Vision's CSV: `[ML_USE,]GCS_PATH,LABEL,X1,Y1,X2,Y2,X3,Y3,X4,Y4`, normalized vertices, the box
  spanning the vertices given (`X_MIN,Y_MIN,,,X_MAX,Y_MAX,,` is the common shorthand); a row with
  neither label nor box is an image without objects.
- COCO JSON: `images`, `annotations` (pixel `bbox` [x, y, w, h], `iscrowd`), `categories`; boxes are
  normalized by their image's own width and height.

Pure: the callers read the files and say where each unit came from.
"""
import codecs
import csv
import io
import json
import math
import re
from array import array
from typing import (
    Annotated,
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import msgspec
import numpy as np
import orjson

from pipeline.core.columns import buckets_of, compacted, label_codes, rows_of, split_by_key
from pipeline.core.dead_letters import INVALID_GROUND_TRUTH
from pipeline.core.decoding import is_utf8
from pipeline.core.formats import COORDINATE_TOLERANCE

ML_USES = ('training', 'validation', 'test', 'unassigned')
_ML_USE_SPELLINGS = {'train': 'training', 'training': 'training', 'validation': 'validation', 'test': 'test',
                     'unassigned': 'unassigned'}
ML_USE_LABEL = 'aiplatform.googleapis.com/ml_use'

Box = Tuple[float, float, float, float]  # x_min, y_min, x_max, y_max, normalized


class GroundTruthBox(NamedTuple):
    label: str
    box: Box
    crowd: bool = False
    area: Optional[float] = None  # COCO's `area` (square pixels), which pycocotools' area ranges use


class GroundTruthImage(NamedTuple):
    """The labelled boxes of one image from one unit of ground truth (none: an image without objects)."""
    image_uri: str
    boxes: Tuple[GroundTruthBox, ...]
    ml_use: Optional[str] = None  # one of ML_USES
    size: Optional[Tuple[float, float]] = None  # (width, height) in pixels, when the format gives it (COCO)


class GroundTruthRejection(NamedTuple):
    message: str
    image_uri: Optional[str] = None
    kind: str = INVALID_GROUND_TRUTH


GroundTruthUnit = Union[GroundTruthImage, GroundTruthRejection]


# (the start of the byte range read, the unit's number in it: orders a file's units as pycocotools does;
# where the file lists its units in another order, that order: a COCO image's index in `images`, else 0).
Place = Tuple[int, int, int]


class PlacedImage(NamedTuple):
    """A usable unit with where it came from: the boxes of one image are put together in this order."""
    source_file: str
    position: Place
    image: GroundTruthImage


class BucketTruth(NamedTuple):
    """Usable units of one ground-truth file that fall in one bucket, as columns: one Beam element,
    pickled in one piece (a list of PlacedImage would be pickled unit by unit), each label's text once
    (the boxes hold codes)."""
    source_file: str
    positions: np.ndarray  # (units, 3) int64: each unit's Place
    image_uris: List[str]
    ml_uses: List[Optional[str]]
    offsets: np.ndarray  # (units + 1,): the boxes of unit i are offsets[i]:offsets[i + 1]
    label_names: List[str]
    label_codes: np.ndarray  # (boxes,) int32: positions in label_names
    boxes: np.ndarray  # (boxes, 4) float64
    crowd: np.ndarray  # (boxes,) bool
    sizes: Optional[np.ndarray] = None  # (units, 2) float64 width and height in pixels, NaN unknown; None: all
    areas: Optional[np.ndarray] = None  # (boxes,) float64 COCO's area of each box, NaN when not given; None: all

    def unit_sizes(self) -> np.ndarray:
        """(units, 2) each unit's image size in pixels, NaN where the ground truth does not give it."""
        return np.full((len(self.image_uris), 2), np.nan) if self.sizes is None else self.sizes

    def box_areas(self) -> np.ndarray:
        """(boxes,) each box's area as the ground truth gives it (COCO), NaN where it does not."""
        return np.full(len(self.label_codes), np.nan) if self.areas is None else self.areas

    @classmethod
    def of(cls, source_file: str, units: Sequence[Tuple[Place, GroundTruthImage]]) -> 'BucketTruth':
        builder = BucketTruthBuilder()
        for place, image in units:
            builder.add_image(place, image)
        return builder.build(source_file)

    def units(self) -> Iterator[PlacedImage]:
        boxes, crowd, codes = self.boxes.tolist(), self.crowd.tolist(), self.label_codes.tolist()
        offsets, positions = self.offsets.tolist(), self.positions.tolist()
        sizes = [None if np.isnan(size).any() else tuple(size) for size in self.unit_sizes().tolist()]
        areas = [None if area != area else area for area in self.box_areas().tolist()]
        for unit, uri in enumerate(self.image_uris):
            yield PlacedImage(self.source_file, tuple(positions[unit]), GroundTruthImage(uri, tuple(
                GroundTruthBox(self.label_names[codes[i]], tuple(boxes[i]), crowd[i], areas[i])
                for i in range(offsets[unit], offsets[unit + 1])), self.ml_uses[unit], sizes[unit]))


class BucketTruthBuilder:
    """Gathers one file's usable units of one bucket into a BucketTruth, plain lines without an object
    per box."""

    def __init__(self):
        self.range_starts: List[int] = []
        self.numbers: List[int] = []
        self.listed: List[int] = []
        self.image_uris: List[str] = []
        self.ml_uses: List[Optional[str]] = []
        self.offsets = [0]
        self.labels: List[str] = []
        self.boxes: List[float] = []
        self.crowd_boxes: List[int] = []  # the positions of the crowd boxes (plain lines have none)
        self.sizes: List[Tuple[float, float]] = []
        self.areas: List[float] = []

    def add_image(self, place: Place, image: GroundTruthImage) -> None:
        self.range_starts.append(place[0])
        self.numbers.append(place[1])
        self.listed.append(place[2])
        self.image_uris.append(image.image_uri)
        self.ml_uses.append(image.ml_use)
        self.sizes.append(image.size or (np.nan, np.nan))
        for box in image.boxes:
            if box.crowd:
                self.crowd_boxes.append(len(self.labels))
            self.labels.append(box.label)
            self.areas.append(np.nan if box.area is None else box.area)
            self.boxes += box.box
        self.offsets.append(len(self.labels))

    def build(self, source_file: str) -> BucketTruth:
        names, codes = label_codes(self.labels)
        crowd = np.zeros(len(self.labels), dtype=bool)
        crowd[self.crowd_boxes] = True
        positions = np.array([self.range_starts, self.numbers, self.listed], dtype=np.int64).T.reshape(-1, 3)
        offsets = np.array(self.offsets, dtype=np.int64)
        boxes = np.array(self.boxes, dtype=np.float64).reshape(-1, 4)
        sizes = np.array(self.sizes, dtype=np.float64).reshape(-1, 2)
        areas = np.array(self.areas, dtype=np.float64)
        return BucketTruth(source_file, positions, self.image_uris, self.ml_uses, offsets, names, codes, boxes, crowd,
                           None if np.isnan(sizes).all() else sizes, None if np.isnan(areas).all() else areas)


def merge_units(units: Iterable[PlacedImage]) -> List[GroundTruthImage]:
    """One image per URI with the boxes of all its units in (file, position) order, whatever order
    the units come in; its ML use, the first one given."""
    by_uri: Dict[str, List[PlacedImage]] = {}
    for unit in units:
        by_uri.setdefault(unit.image.image_uri, []).append(unit)
    merged = []
    for uri in sorted(by_uri):
        ordered = [unit.image for unit in sorted(by_uri[uri], key=lambda u: (u.source_file, u.position))]
        uses = [image.ml_use for image in ordered if image.ml_use is not None]
        sizes = [image.size for image in ordered if image.size is not None]
        merged.append(GroundTruthImage(uri, tuple(box for image in ordered for box in image.boxes),
                                       uses[0] if uses else None, sizes[0] if sizes else None))
    return merged


class _Invalid(Exception):
    pass


def ml_use(text: Any) -> Optional[str]:
    """An ML use as written by Vertex AI or AutoML (any case; `train` for `training`), or None."""
    if text is None or text == '':
        return None
    use = _ML_USE_SPELLINGS.get(str(text).strip().lower())
    if use is None:
        raise _Invalid(f'ML use {text!r} is none of TRAINING, VALIDATION, TEST, UNASSIGNED')
    return use


def _coordinate(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise _Invalid(f'{where}: expected a number from 0 to 1, got {value!r}')
    if not -COORDINATE_TOLERANCE <= value <= 1 + COORDINATE_TOLERANCE:
        raise _Invalid(f'{where}: {value!r} is outside the image (normalized coordinates are 0 to 1)')
    return min(max(float(value), 0.0), 1.0)


def _edge(pixels: float, side: float, where: str) -> float:
    """A COCO box's edge in pixels, normalized by the image's side, as given: past the image's edge
    too (pycocotools takes every box as given; the run warns of such boxes)."""
    if not math.isfinite(pixels):
        raise _Invalid(f'{where}: {pixels!r} is not a finite number of pixels')
    return pixels / side


def _box(xs: Sequence[float], ys: Sequence[float], where: str) -> Box:
    box = (min(xs), min(ys), max(xs), max(ys))
    if box[2] <= box[0] or box[3] <= box[1]:
        raise _Invalid(f'{where}: the box has no area ({box[0]}, {box[1]}) to ({box[2]}, {box[3]})')
    return box


def _uri(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(f'{where}: expected the image URI as a non-empty string, got {value!r}')
    return value


# -- Vertex AI import JSONL ------------------------------------------------------------------------

class _ImportBox(msgspec.Struct, gc=False):  # no cycles: the collector need not track them
    displayName: Annotated[str, msgspec.Meta(min_length=1)]
    xMin: Annotated[float, msgspec.Meta(ge=0, le=1)]
    xMax: Annotated[float, msgspec.Meta(ge=0, le=1)]
    yMin: Annotated[float, msgspec.Meta(ge=0, le=1)]
    yMax: Annotated[float, msgspec.Meta(ge=0, le=1)]


class _ImportLine(msgspec.Struct, gc=False):
    """The common, valid shape of an import line, decoded and checked in C; every other line goes to
    the full check, whose answers (and messages) are the contract."""
    imageGcsUri: Annotated[str, msgspec.Meta(min_length=1)]
    boundingBoxAnnotations: List[_ImportBox] = []
    dataItemResourceLabels: Dict[str, str] = {}


_IMPORT_LINE = msgspec.json.Decoder(_ImportLine)


class PlainLines(NamedTuple):
    """The plain import lines of a chunk as columns: no object per box or per line."""
    taken: np.ndarray  # (lines,) int64: the position of each line in the chunk
    image_uris: List[str]
    ml_uses: List[Optional[str]]
    offsets: np.ndarray  # (lines + 1,): the boxes of line i are offsets[i]:offsets[i + 1]
    label_names: List[str]
    label_codes: np.ndarray  # (boxes,) positions in label_names
    boxes: np.ndarray  # (boxes, 4) float64: x_min, y_min, x_max, y_max

    def lines_at(self, lines: np.ndarray) -> 'PlainLines':
        """The columns of some of the lines (positions into these columns), in the order given."""
        rows, offsets = rows_of(self.offsets, lines)
        return PlainLines(self.taken[lines], [self.image_uris[i] for i in lines.tolist()],
                          [self.ml_uses[i] for i in lines.tolist()], offsets,
                          self.label_names, self.label_codes[rows], self.boxes[rows])

    def bucket_parts(self, source_file: str, places: np.ndarray, buckets: int) -> Dict[int, BucketTruth]:
        """The lines as one BucketTruth per bucket of their image, each bucket's in file order;
        `places` (lines, 3) gives each line's."""
        return {bucket: self.lines_at(lines).as_truth(source_file, places[lines])
                for bucket, lines in split_by_key(buckets_of(self.image_uris, buckets)).items()}

    def as_truth(self, source_file: str, places: np.ndarray) -> BucketTruth:
        """As a BucketTruth, with the labels its boxes use only."""
        names, codes = compacted(self.label_names, self.label_codes)
        return BucketTruth(source_file, places, self.image_uris, self.ml_uses, self.offsets, names, codes,
                           self.boxes, np.zeros(len(codes), dtype=bool))


def plain_vertex_lines(lines: Sequence[bytes]) -> Tuple[PlainLines, List[int]]:
    """(the common, valid import lines of a chunk as columns, through the typed decoder; the positions
    of the others, which the full check decides with its messages)."""
    taken: List[int] = []
    declined: List[int] = []
    uris: List[str] = []
    uses: List[Optional[str]] = []
    counts: List[int] = []
    labels: List[str] = []
    coordinates = array('d')
    decode = _IMPORT_LINE.decode
    for position, line in enumerate(lines):
        if not (line.isascii() or is_utf8(line)):  # msgspec does not check the strings it skips
            declined.append(position)
            continue
        try:
            record = decode(line)
        except (msgspec.DecodeError, RecursionError):
            declined.append(position)
            continue
        use = record.dataItemResourceLabels.get(ML_USE_LABEL) if record.dataItemResourceLabels else None
        if not record.imageGcsUri.strip() or (use and use.strip().lower() not in _ML_USE_SPELLINGS):
            declined.append(position)
            continue
        taken.append(position)
        uris.append(record.imageGcsUri)
        uses.append(ml_use(use))
        boxes = record.boundingBoxAnnotations
        counts.append(len(boxes))
        for box in boxes:  # taken apart at once, while the objects are in the CPU's cache
            labels.append(box.displayName)
            coordinates.extend((box.xMin, box.yMin, box.xMax, box.yMax))
    names, codes = label_codes(labels)
    box_array = np.frombuffer(coordinates, dtype=np.float64).reshape(-1, 4)
    plain = PlainLines(np.array(taken, dtype=np.int64), uris, uses, np.r_[0, np.cumsum(counts, dtype=np.int64)],
                       names, codes, box_array)
    flat = (box_array[:, 0] >= box_array[:, 2]) | (box_array[:, 1] >= box_array[:, 3])
    if not flat.any():
        return plain, declined
    # A line with a box without area is for the full check to name.
    with_flat = np.unique(np.repeat(np.arange(len(counts)), counts)[flat])
    kept = np.setdiff1d(np.arange(len(counts)), with_flat)
    return plain.lines_at(kept), sorted(declined + plain.taken[with_flat].tolist())


def parse_vertex_line(line: bytes) -> GroundTruthUnit:
    """One line of an `image_bounding_box_io_format_1.0.0` import file: the typed decoder for the
    common case, the full check (orjson) for the rest."""
    plain, declined = plain_vertex_lines([line])
    if declined:
        return parse_vertex_line_fully(line)
    return GroundTruthImage(plain.image_uris[0], tuple(
        GroundTruthBox(plain.label_names[code], tuple(box))
        for code, box in zip(plain.label_codes.tolist(), plain.boxes.tolist())), plain.ml_uses[0])


def parse_vertex_line_fully(line: bytes) -> GroundTruthUnit:
    """One import line through the full check: every rejection names the field and what is wrong."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return GroundTruthRejection(f'not valid JSON: {exc}')
    uri = record.get('imageGcsUri') if isinstance(record, dict) else None
    try:
        if not isinstance(record, dict):
            raise _Invalid('expected a JSON object with imageGcsUri')
        uri = _uri(uri, 'imageGcsUri')
        labels = record.get('dataItemResourceLabels') or {}
        if not isinstance(labels, dict):
            raise _Invalid('dataItemResourceLabels: expected an object')
        annotations = record.get('boundingBoxAnnotations') or []
        if not isinstance(annotations, list):
            raise _Invalid('boundingBoxAnnotations: expected a list')
        boxes = tuple(_plain_vertex_annotation(a) or _vertex_annotation(a, f'boundingBoxAnnotations[{i}]')
                      for i, a in enumerate(annotations))
        return GroundTruthImage(uri, boxes, ml_use(labels.get(ML_USE_LABEL)))
    except _Invalid as exc:
        return GroundTruthRejection(str(exc), uri if isinstance(uri, str) and uri else None)


def _plain_vertex_annotation(annotation: Any) -> Optional[GroundTruthBox]:
    """The common case checked in one expression (names and messages are only built for the others,
    by _vertex_annotation): a label, four numbers within [0, 1], a box with an area."""
    if annotation.__class__ is not dict:
        return None
    label: Any = annotation.get('displayName')
    x_min: Any = annotation.get('xMin')
    x_max: Any = annotation.get('xMax')
    y_min: Any = annotation.get('yMin')
    y_max: Any = annotation.get('yMax')
    if (label.__class__ is str and label and _plain(x_min) and _plain(x_max) and _plain(y_min) and _plain(y_max)
            and x_min < x_max and y_min < y_max):
        return GroundTruthBox(label, (float(x_min), float(y_min), float(x_max), float(y_max)))
    return None


def _plain(value: Any) -> bool:
    return (value.__class__ is float or value.__class__ is int) and 0 <= value <= 1


def _vertex_annotation(annotation: Any, where: str) -> GroundTruthBox:
    if not isinstance(annotation, dict):
        raise _Invalid(f'{where}: expected an object')
    label = annotation.get('displayName')
    if not isinstance(label, str) or not label:
        raise _Invalid(f'{where}.displayName: expected a non-empty string, got {label!r}')
    x_min, x_max, y_min, y_max = (_coordinate(annotation.get(key), f'{where}.{key}')
                                  for key in ('xMin', 'xMax', 'yMin', 'yMax'))
    for low, high, axis in ((x_min, x_max, 'x'), (y_min, y_max, 'y')):
        if low > high:  # never swapped silently: the file says something else than it means
            raise _Invalid(f'{where}: {axis}Min {low} is greater than {axis}Max {high} (an inverted box)')
    return GroundTruthBox(label, _box((x_min, x_max), (y_min, y_max), where))


# -- AutoML Vision CSV ------------------------------------------------------------------------------

def parse_automl_csv(text: str) -> Iterator[Tuple[int, str, GroundTruthUnit]]:
    """(line number from 1, the row as written, what it holds) for each non-blank row of a CSV file
    (csv_rows); a row holding a byte that is not UTF-8 is a rejection of its own."""
    first = True
    for number, written, fields in csv_rows(text):
        if not_utf8(written):
            yield number, written, GroundTruthRejection('the row is not UTF-8 text')
        else:
            parsed = parse_automl_row(fields)
            if first and isinstance(parsed, GroundTruthRejection) and _header_row(fields):
                parsed = GroundTruthRejection(
                    'a header row: the AutoML CSV format has none ([ML_USE,]GCS_PATH,LABEL,X1,Y1,...,Y4); the '
                    'rows after it are read, this one is not (give the file without it)')
            yield number, written, parsed
        first = False


def _header_row(fields: List[str]) -> bool:
    """A first row of column names, as a table tool writes it: three or more names, not one number nor
    one path."""
    named = [field.strip() for field in fields if field.strip()]
    return len(named) >= 3 and not any(_DECIMAL.fullmatch(field) or '/' in field for field in named)


def csv_rows(text: str) -> Iterator[Tuple[int, str, List[str]]]:
    """(line number from 1, the row as written, its fields) for each non-blank row of CSV text, split
    by the csv module's rules alone: a quoted field keeps its line breaks, and only \\n, \\r and \\r\\n
    end a row (not U+2028, U+0085 or a form feed). `text` is decoded with surrogateescape (not_utf8)."""
    consumed: List[str] = []

    def lines() -> Iterator[str]:
        for line in io.StringIO(text, newline=''):
            consumed.append(line)
            yield line

    number = 1
    for fields in csv.reader(lines()):
        written = ''.join(consumed).rstrip('\r\n')
        first, number = number, number + len(consumed)
        consumed.clear()
        if any(field.strip() for field in fields):
            yield first, written, fields


def not_utf8(text: str) -> bool:
    """Whether text decoded with surrogateescape held a byte that is not UTF-8."""
    return bool(_NOT_UTF8.search(text))


_NOT_UTF8 = re.compile('[\udc80-\udcff]')  # the bytes surrogateescape could not decode


def parse_automl_row(fields: List[str]) -> GroundTruthUnit:
    """`[ML_USE,]GCS_PATH,LABEL,X1,Y1,X2,Y2,X3,Y3,X4,Y4`; trailing empty fields may be left out. The
    path and the label are taken as written; numbers may have spaces around them."""
    uri = None
    try:
        if len(fields) > 11:
            raise _Invalid(f'expected at most 11 columns ([ML_USE,]GCS_PATH,LABEL,X1,Y1,...,Y4), got {len(fields)}')
        use = None
        if len(fields) == 11 or (fields and fields[0].strip().lower() in _ML_USE_SPELLINGS):
            use, fields = ml_use(fields[0]), fields[1:]  # an unknown ML use raises
        if not fields or not fields[0].strip():
            raise _Invalid('the image path (GCS_PATH) is missing')
        uri = fields[0]
        label = fields[1] if len(fields) > 1 else ''
        numbers = [field.strip() for field in fields[2:]] + [''] * (8 - len(fields[2:]))
        if not label.strip() and not any(numbers):
            return GroundTruthImage(uri, (), use)
        if not label.strip():
            raise _Invalid('a box without a label')
        return GroundTruthImage(uri, (GroundTruthBox(label, _csv_box(numbers)),), use)
    except _Invalid as exc:
        return GroundTruthRejection(str(exc), uri)


def _csv_box(numbers: List[str]) -> Box:
    xs, ys = [], []
    for vertex in range(4):
        x, y = numbers[2 * vertex], numbers[2 * vertex + 1]
        if not x and not y:
            continue
        if not x or not y:
            raise _Invalid(f'vertex {vertex + 1} has only one coordinate')
        xs.append(_coordinate(_number(x), f'X{vertex + 1}'))
        ys.append(_coordinate(_number(y), f'Y{vertex + 1}'))
    if len(xs) < 2:
        raise _Invalid(f'a box needs at least 2 vertices, got {len(xs)}')
    return _box(xs, ys, 'the box')


# A decimal number as a CSV writes it (Python's float() would also take "0.1_5", "nan" or "١").
_DECIMAL = re.compile(r'[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?')


def _number(text: str) -> Any:
    return float(text) if _DECIMAL.fullmatch(text) else text


# -- COCO -------------------------------------------------------------------------------------------

CocoParts = Tuple[List[GroundTruthImage], List[Tuple[str, GroundTruthRejection]]]


class _CocoPart(msgspec.Struct, gc=False):
    """A part of a COCO document with only the fields we read, taken as a dict is (`get`); the full
    checks below decide what its values are worth."""

    def get(self, key: str, default: Any = None) -> Any:
        value = getattr(self, key, _ABSENT)
        return default if value is _ABSENT else value


_ABSENT: Any = msgspec.UNSET


class _CocoImage(_CocoPart):
    id: Any = _ABSENT
    file_name: Any = _ABSENT
    width: Any = _ABSENT
    height: Any = _ABSENT


class _CocoAnnotation(_CocoPart):
    id: Any = _ABSENT
    image_id: Any = _ABSENT
    category_id: Any = _ABSENT
    area: Any = _ABSENT
    bbox: Any = _ABSENT
    iscrowd: Any = _ABSENT


class _CocoCategory(_CocoPart):
    id: Any = _ABSENT
    name: Any = _ABSENT


class _CocoDocument(_CocoPart):
    images: List[_CocoImage]
    annotations: List[_CocoAnnotation] = []
    categories: List[_CocoCategory] = []


_COCO_DOCUMENT = msgspec.json.Decoder(_CocoDocument)


SizeOf = Callable[[str], Optional[Tuple[float, float]]]


def parse_coco(document: bytes, image_prefix: str = '', size_of: Optional[SizeOf] = None) -> CocoParts:
    """(an image per COCO image, with its boxes; (what, why) for each part that cannot be used). The
    image URI is `image_prefix` joined to `file_name`; an image the document gives no width and
    height takes them from `size_of` its URI (the run's --image_sizes or --image_size), if it knows."""
    read = parse_coco_in_order(document, image_prefix, size_of)
    return read.images, read.rejected


class CocoRead(NamedTuple):
    images: List[GroundTruthImage]
    ranks: List[int]  # each image's rank among the document's image ids in order
    rejected: List[Tuple[str, GroundTruthRejection]]
    repeated_ids: int = 0  # annotations whose id an earlier annotation has


def parse_coco_in_order(document: bytes, image_prefix: str = '', size_of: Optional[SizeOf] = None) -> CocoRead:
    """parse_coco's images and rejections, with each image's rank among the document's image ids in
    order: pycocotools evaluates the images in that order (numbers before strings here; pycocotools
    cannot order a mix); and how many annotations repeat an earlier one's id (pycocotools keeps one
    annotation per id, the last, and evaluates it in place of the others: here each counts as given)."""
    document = document.removeprefix(codecs.BOM_UTF8)
    try:  # the common shape, typed: what we do not read (segmentation polygons...) is never built
        data: Any = _COCO_DOCUMENT.decode(document)
    except (msgspec.DecodeError, RecursionError):
        try:
            data = orjson.loads(document)
        except orjson.JSONDecodeError as exc:
            try:  # NaN and Infinity, which pycocotools' json.load takes: the parts holding one are rejected
                data = json.loads(document)
            except (ValueError, RecursionError):
                return CocoRead([], [], [('the document', GroundTruthRejection(f'not valid JSON: {exc}'))])
    if not isinstance(data, (dict, _CocoPart)) or not isinstance(data.get('images'), list):
        return CocoRead([], [], [('the document',
                                  GroundTruthRejection('expected a COCO object with images, annotations, categories'))])
    rejected: List[Tuple[str, GroundTruthRejection]] = []
    categories = _coco_categories(data.get('categories'), rejected)
    images: Dict[Any, Tuple[str, float, float]] = {}
    order: List[Any] = []
    for index, image in enumerate(data.get('images') or []):
        try:
            if not isinstance(image, (dict, _CocoPart)):
                raise _Invalid('expected an object')
            file_name = _uri(image.get('file_name'), 'file_name')
            width, height = _image_size(image, _joined(image_prefix, file_name), size_of)
            image_id = _coco_id(image.get('id'), 'id')
            if image_id in images:
                raise _Invalid(f'id {image_id!r} is used by another image')
            images[image_id] = (_joined(image_prefix, file_name), width, height)
            order.append(image_id)
        except _Invalid as exc:
            rejected.append((f'images[{index}]', GroundTruthRejection(str(exc))))
    boxes: Dict[Any, List[GroundTruthBox]] = {image_id: [] for image_id in order}
    for index, annotation in enumerate(data.get('annotations') or []):
        try:
            image_id, box = _coco_annotation(annotation, images, categories)
            boxes[image_id].append(box)
        except _Invalid as exc:
            image_id = annotation.get('image_id') if isinstance(annotation, (dict, _CocoPart)) else None
            uri = images[image_id][0] if isinstance(image_id, (int, str)) and image_id in images else None
            rejected.append((f'annotations[{index}]', GroundTruthRejection(str(exc), uri)))
    ranks = {image_id: rank for rank, image_id in enumerate(sorted(order, key=lambda i: (isinstance(i, str), i)))}
    return CocoRead([GroundTruthImage(images[i][0], tuple(boxes[i]), size=images[i][1:]) for i in order],
                    [ranks[i] for i in order], rejected, _repeated_ids(data.get('annotations')))


def _repeated_ids(annotations: Any) -> int:
    """The annotations whose id (a number or a string) an earlier annotation has."""
    ids = [part.get('id') for part in annotations or () if isinstance(part, (dict, _CocoPart))]
    given = [i for i in ids if isinstance(i, (int, str, float)) and not isinstance(i, bool)]
    return len(given) - len(set(given))


def _image_size(image: Any, uri: str, size_of: Optional[SizeOf]) -> Tuple[float, float]:
    """A COCO image's width and height: the document's; when it gives neither (pycocotools needs
    none), the run's own size of the image, else a rejection that says where to give it."""
    if image.get('width') is None and image.get('height') is None:
        known = size_of(uri) if size_of is not None else None
        if known is None:
            raise _Invalid('width and height: not given; the boxes are in pixels and the predictions '
                           'normalized, so give the images\' sizes (--image_sizes, or --image_size for one size)')
        return float(known[0]), float(known[1])
    return _side(image.get('width'), 'width'), _side(image.get('height'), 'height')


def _side(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise _Invalid(f'{name}: expected a positive number, got {value!r}')
    return float(value)


def _coco_id(value: Any, name: str) -> Any:
    """An id as COCO writes them: a whole number or a string (a list or an object cannot be one)."""
    if isinstance(value, bool) or not isinstance(value, (int, str, float)) or value != value:
        raise _Invalid(f'{name}: expected a number or a string, got {value!r}')
    return value


_AMBIGUOUS = object()  # a category id given twice: which name its boxes have cannot be told


def _coco_categories(categories: Any, rejected: List[Tuple[str, GroundTruthRejection]]) -> Dict[Any, Any]:
    names: Dict[Any, Any] = {}
    for index, category in enumerate(categories if isinstance(categories, list) else []):
        try:
            if not (isinstance(category, (dict, _CocoPart)) and isinstance(category.get('name'), str)
                    and category.get('name')):
                raise _Invalid('expected an object with id and name')
            category_id = _coco_id(category.get('id'), 'id')
            if category_id in names:
                names[category_id] = _AMBIGUOUS
                raise _Invalid(f'id {category_id!r} is given to another category too: the boxes of either '
                               f'cannot be told apart')
            names[category_id] = category.get('name')
        except _Invalid as exc:
            rejected.append((f'categories[{index}]', GroundTruthRejection(str(exc))))
    return names


def _coco_annotation(annotation: Any, images: Dict[Any, Tuple[str, float, float]],
                     categories: Dict[Any, str]) -> Tuple[Any, GroundTruthBox]:
    if not isinstance(annotation, (dict, _CocoPart)):
        raise _Invalid('expected an object')
    image_id = _coco_id(annotation.get('image_id'), 'image_id')
    if image_id not in images:
        raise _Invalid(f'image_id {image_id!r} is not an image of the document')
    category_id = _coco_id(annotation.get('category_id'), 'category_id')
    if category_id not in categories:
        raise _Invalid(f'category_id {category_id!r} is not a category of the document')
    if categories[category_id] is _AMBIGUOUS:
        raise _Invalid(f'category_id {category_id!r} is the id of two categories')
    bbox = annotation.get('bbox')
    if (not isinstance(bbox, list) or len(bbox) != 4
            or any(isinstance(v, bool) or not isinstance(v, (int, float)) or v != v for v in bbox)):
        raise _Invalid(f'bbox: expected [x, y, width, height] in pixels, got {bbox!r}')
    _, width, height = images[image_id]
    x, y, w, h = bbox
    if not (w >= 0 and h >= 0):  # a negative width is never flipped silently
        raise _Invalid(f'bbox: width and height must not be negative, got {w!r} and {h!r}')
    # The box as given, as pycocotools takes it: of no width or height (a box nothing can match), or
    # reaching past the image's edge (a 1-based x_max, say), never clipped.
    box = (_edge(x, width, 'bbox x'), _edge(y, height, 'bbox y'), _edge(x + w, width, 'bbox x + width'),
           _edge(y + h, height, 'bbox y + height'))
    crowd = annotation.get('iscrowd', 0)
    if crowd.__class__ not in (int, bool) or crowd not in (0, 1):  # JSON's false and true, as pycocotools reads them
        raise _Invalid(f'iscrowd: expected 0 or 1, got {crowd!r}')
    area = annotation.get('area')
    if area is not None and (isinstance(area, bool) or not isinstance(area, (int, float)) or not area >= 0
                             or area == float('inf')):
        raise _Invalid(f'area: expected a number of square pixels >= 0, got {area!r}')
    return image_id, GroundTruthBox(categories[category_id], box, crowd == 1, None if area is None else float(area))


def _joined(prefix: str, file_name: str) -> str:
    """The image URI of a COCO file_name: the prefix joined to it, unless it is a URI already (a
    prefix before gs://... never names an image)."""
    if not prefix or '://' in file_name:
        return file_name
    return prefix.rstrip('/') + '/' + file_name.lstrip('/')
