"""Image attributes, the side table the evaluation is sliced by (--image_attributes, --slice_by): a
CSV file with a header, or JSONL, each row naming an image (its URI) and giving it attributes; the
value of each sliced attribute of a row; and the slice each value falls in, numbers binned. Pure."""
import bisect
import collections
import math
from typing import Any, Dict, FrozenSet, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import orjson

from pipeline.config.options import BOX_SIZE, BUILT_IN_SLICES, PREDICTION_RUN  # noqa: F401 (re-exported)
from pipeline.core.truth_formats import csv_rows, not_utf8

# A sliced attribute's value as read: text, a number, or None (not given).
AttributeValue = Union[str, float, None]


class AttributeRow(NamedTuple):
    """One image's values of the sliced attributes, in the order --slice_by names them."""
    image_uri: str
    values: Tuple[AttributeValue, ...]


class AttributeRejection(NamedTuple):
    message: str
    image_uri: Optional[str] = None


AttributeUnit = Union[AttributeRow, AttributeRejection]


def parse_jsonl_line(line: bytes, key: str, names: Sequence[str]) -> AttributeUnit:
    """One JSON object: `key` holds the image URI; each named attribute a string, a number or a
    boolean (read as the text true or false), or null or nothing (not given)."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return AttributeRejection(f'not valid JSON: {exc}')
    if not isinstance(record, dict):
        return AttributeRejection(f'expected a JSON object with {key!r}, got {type(record).__name__}')
    uri = record.get(key)
    if not isinstance(uri, str) or not uri.strip():
        return AttributeRejection(f'{key}: expected the image URI as a non-empty string, got {uri!r}')
    values: List[AttributeValue] = []
    for name in names:
        value = record.get(name)
        if isinstance(value, bool):
            values.append('true' if value else 'false')
        elif isinstance(value, (int, float)):
            values.append(float(value))
        elif value is None or isinstance(value, str):
            values.append(value if value is None or value.strip() else None)
        else:
            return AttributeRejection(f'{name}: expected a string, a number or a boolean, got '
                                      f'{type(value).__name__}', uri)
    return AttributeRow(uri, tuple(values))


def parse_csv(text: str, key: str, names: Sequence[str]) -> Iterator[Tuple[int, str, AttributeUnit]]:
    """(line number from 1, the row as written, what it holds) for each non-blank row after the header
    (the first non-blank row), which names the columns: `key` the image URI's, the others attributes.
    Values are text (a number is told from it later, attribute by attribute: numeric_value); an empty
    one is not given. A header without `key` or a named attribute is one rejection for the file."""
    rows = csv_rows(text)
    header = next(rows, None)
    if header is None:
        return
    columns = [column.strip() for column in header[2]]
    missing = [name for name in (key, *names) if name not in columns]
    if missing:
        yield header[0], header[1], AttributeRejection(
            f'the header has no column {", ".join(missing)}; its columns: {", ".join(columns)}')
        return
    at = [columns.index(name) for name in (key, *names)]
    for number, written, fields in rows:
        if not_utf8(written):
            yield number, written, AttributeRejection('the row is not UTF-8 text')
        elif len(fields) != len(columns):
            yield number, written, AttributeRejection(
                f'expected {len(columns)} fields as the header names, got {len(fields)}')
        elif not fields[at[0]].strip():
            yield number, written, AttributeRejection(f'{key}: the image URI is empty')
        else:
            values = tuple(fields[i].strip() or None for i in at[1:])
            yield number, written, AttributeRow(fields[at[0]].strip(), values)


def numeric_value(value: AttributeValue) -> Optional[float]:
    """The value as a finite number (a number, or text that reads as one), else None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


# Text values an attribute is sliced by at most: past them, the most frequent are kept and the rest
# are one slice (OTHER_VALUES). An attribute that names each image apart (an id, a timestamp) would
# otherwise make a slice per image.
MAX_SLICE_VALUES = 100
OTHER_VALUES = '(other values)'


class SliceRule(NamedTuple):
    """How one attribute's values become slices: each value its own slice (text, the `kept` ones when
    there are too many, the rest in OTHER_VALUES; or `numbers`, the few distinct numbers of a numeric
    attribute, each its own), or numbers in bins between increasing `edges` (-inf and inf at the ends
    for bins open there; the last bin of quantiles holds its upper edge)."""
    attribute: str
    edges: Optional[Tuple[float, ...]] = None
    numbers: Tuple[float, ...] = ()
    kept: Optional[FrozenSet[str]] = None

    @classmethod
    def of_profile(cls, attribute: str, profile: 'AttributeProfile',
                   bins: Union[int, Tuple[float, ...]]) -> 'SliceRule':
        """The rule for an attribute whose values are profiled: text by value; numbers in `bins`
        quantile bins (a count) or between the edges given, or by value when there are no more
        distinct numbers than quantile bins."""
        if not profile.numeric:
            return cls(attribute, kept=profile.frequent)
        if not isinstance(bins, int):
            return cls(attribute, (-math.inf, *bins, math.inf))
        if profile.distinct is not None and len(profile.distinct) <= bins:
            return cls(attribute, numbers=tuple(sorted(profile.distinct)))
        return cls(attribute, tuple(sorted(set(float(q) for q in profile.quantiles))))

    def slice_of(self, value: AttributeValue) -> Tuple[int, Optional[str]]:
        """(the slice's place among the attribute's, its name); (0, None) for a value not given."""
        if self.edges is None and not self.numbers:
            if value is None:
                return 0, None
            name = _text(value)
            return (0, name) if self.kept is None or name in self.kept else (1, OTHER_VALUES)
        number = numeric_value(value)
        if number is None:
            return 0, None
        if self.numbers:
            return bisect.bisect_left(self.numbers, number) + 1, _number(number)
        edges = self.edges or ()
        if len(edges) == 1:
            return 1, f'[{_number(edges[0])}, {_number(edges[0])}]'
        # bin i holds [edges[i], edges[i + 1]); the last one its upper edge too
        index = min(max(bisect.bisect_right(edges, number) - 1, 0), len(edges) - 2)
        return index + 1, _bin_name(edges[index], edges[index + 1], last=index == len(edges) - 2)


class AttributeProfile(NamedTuple):
    """What choosing an attribute's slices needs of all its values: whether every one given is a
    number, its distinct numbers (None past a bound), and their quantiles; for text, its most
    frequent values when it has more than MAX_SLICE_VALUES (None: every value its own slice)."""
    numeric: bool
    distinct: Optional[FrozenSet[float]]
    quantiles: Tuple[float, ...]
    frequent: Optional[FrozenSet[str]] = None


def most_frequent(counts: Dict[str, int], limit: int = MAX_SLICE_VALUES) -> Optional[FrozenSet[str]]:
    """The `limit` values counted most often (ties: the first in text order), or None when there are
    no more values than that."""
    if len(counts) <= limit:
        return None
    return frozenset(sorted(counts, key=lambda value: (-counts[value], value))[:limit])


def value_name(value: AttributeValue) -> Optional[str]:
    """A value as its slice names it when the attribute is sliced by value."""
    return None if value is None else _text(value)


def _bin_name(low: float, high: float, last: bool) -> str:
    if low == -math.inf:
        return f'< {_number(high)}'
    if high == math.inf:
        return f'>= {_number(low)}'
    return f'[{_number(low)}, {_number(high)}{"]" if last else ")"}'


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(float(value))


def _text(value: Any) -> str:
    return _number(value) if isinstance(value, float) else str(value)


class BucketAttributes(NamedTuple):
    """The attribute rows of one file that fall in one bucket: one Beam element."""
    source_file: str
    lines: np.ndarray  # (rows,) int64: each row's line number in its file
    image_uris: List[str]
    values: List[Tuple[AttributeValue, ...]]


def image_values(parts: Sequence[BucketAttributes], image_uris: Sequence[str]) -> Tuple[
        List[Optional[Tuple[AttributeValue, ...]]], int]:
    """(each image's values, from its first row in (file, line) order, None for an image without a
    row; the rows of the parts that repeat an image's, left out)."""
    first: dict = {}
    rows = 0
    for part in sorted(parts, key=lambda part: part.source_file):
        for _, uri, values in sorted(zip(part.lines.tolist(), part.image_uris, part.values), key=lambda row: row[0]):
            rows += 1
            first.setdefault(uri, values)
    return [first.get(uri) for uri in image_uris], rows - len(first)


# A slice of a run's evaluated images: (attribute, the value's place among the attribute's, the value
# or bin, None for the images without one).
SliceKey = Tuple[str, int, Optional[str]]


def slice_groups(values: Sequence[Optional[Tuple[AttributeValue, ...]]], rules: Sequence[SliceRule]) -> Dict[
        SliceKey, np.ndarray]:
    """Each slice of the images (positions, increasing) by each rule's attribute (the rules in the
    order of the values' tuples)."""
    groups: Dict[SliceKey, List[int]] = collections.defaultdict(list)
    for image, row in enumerate(values):
        for position, rule in enumerate(rules):
            order, name = rule.slice_of(None if row is None else row[position])
            groups[rule.attribute, order, name].append(image)
    return {key: np.array(images, dtype=np.int64) for key, images in groups.items()}
