"""Image-attribute files (--image_attributes): found under a local or gs:// file, folder or glob like
the ground truth, their format told (CSV with a header, or JSONL), checked at launch for the columns
--slice_by names, and read row by row with where each row came from."""
import codecs
from typing import Iterator, List, Optional, Sequence, Set, Tuple

import orjson

from pipeline.core.image_attributes import AttributeRejection, AttributeUnit, parse_csv, parse_jsonl_line
from pipeline.io.sources import open_shard, read_range_lines
from pipeline.io.truth_files import GroundTruthError, ground_truth_files, read_head

ATTRIBUTES_CSV, ATTRIBUTES_JSONL = 'csv', 'jsonl'
OPTION = 'image_attributes'


class AttributeFileError(ValueError):
    """--image_attributes names nothing to read, or a file that lacks the columns asked for."""


def resolve_image_attributes(pattern: str, key: str, names: Sequence[str], skip=None) -> List[Tuple[str, str]]:
    """(path, format) of every non-empty file --image_attributes names; each CSV header holds `key`
    and every attribute of `names`, and every JSONL file names `key` and each attribute in its first
    lines. Raises AttributeFileError."""
    try:
        heads = [(path, read_head(path, OPTION)) for path in ground_truth_files(pattern, OPTION)
                 if skip is None or not skip(path)]
    except GroundTruthError as exc:
        raise AttributeFileError(str(exc)) from None
    resolved = []
    for path, head in heads:
        head = head.removeprefix(codecs.BOM_UTF8)
        if not head.strip():
            continue
        fmt = attribute_format(path, head)
        _check_head(path, fmt, head, key, names)
        resolved.append((path, fmt))
    if not resolved:
        raise AttributeFileError(f'--{OPTION}: {pattern} holds no image attributes: only empty files or our own '
                                 'outputs')
    return resolved


def attribute_format(path: str, head: bytes) -> str:
    """By extension (.csv, .jsonl or .json, before .gz), then by content: a JSON object first is JSONL."""
    name = path.lower().removesuffix('.gz')
    if name.endswith('.csv'):
        return ATTRIBUTES_CSV
    if name.endswith(('.jsonl', '.json', '.ndjson')):
        return ATTRIBUTES_JSONL
    return ATTRIBUTES_JSONL if head.lstrip().startswith(b'{') else ATTRIBUTES_CSV


def _check_head(path: str, fmt: str, head: bytes, key: str, names: Sequence[str]) -> None:
    wanted = (key, *names)
    if fmt == ATTRIBUTES_CSV:
        text = head.decode('utf-8', 'replace')
        first = next(parse_csv(text + '\n', key, names), None)
        if first is not None and isinstance(first[2], AttributeRejection) and first[0] == _header_line(text):
            raise AttributeFileError(f'--{OPTION}: {path}: {first[2].message} (--image_attributes_key names '
                                     f'the image URI\'s column, --slice_by the attributes)')
        return
    seen: Set[str] = set()
    for line in head.split(b'\n')[:-1] or head.split(b'\n'):
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(record, dict):
            seen.update(record)
    missing = [name for name in wanted if name not in seen]
    if missing:
        raise AttributeFileError(f'--{OPTION}: {path}: no key {", ".join(missing)} in its first lines; they hold '
                                 f'{", ".join(sorted(seen)) or "no JSON object"} (--image_attributes_key names the '
                                 'image URI\'s key, --slice_by the attributes)')


def _header_line(text: str) -> int:
    """The line number of the first non-blank line."""
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            return number
    return 0


def read_attribute_file(path: str, fmt: str, key: str, names: Sequence[str]) -> Iterator[
        Tuple[int, Optional[bytes], AttributeUnit]]:
    """(line number from 1, the row as written, what it holds) of every non-blank row of one file; a
    file that cannot be read (or stops being readable) gives one rejection for the rest."""
    number = 0
    try:
        if fmt == ATTRIBUTES_JSONL:
            with open_shard(path) as handle:
                for number, line in enumerate(read_range_lines(handle, 0, None), start=1):
                    if line.strip():
                        yield number, line, parse_jsonl_line(line, key, names)
            return
        with open_shard(path) as handle:
            data = handle.read()
    except Exception as exc:
        yield number + 1, None, AttributeRejection(f'could not read the file from line {number + 1} on: {exc!r}')
        return
    text = data.removeprefix(codecs.BOM_UTF8).decode('utf-8', 'surrogateescape')
    for number, written, unit in parse_csv(text, key, names):
        yield number, written.encode('utf-8', 'surrogateescape'), unit
