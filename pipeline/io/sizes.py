"""Image sizes: a manifest (CSV or JSONL), a bounded probe of the image header, or one fixed size.

A manifest size wins over a probe, a probe over the fixed size. Files are opened through Beam's
FileSystems, so local paths and gs:// work alike.
"""
import collections
import csv
import io
import os
from typing import Dict, Iterable, List, Optional, Tuple

import orjson
from apache_beam.io.filesystems import FileSystems
from PIL import Image

from pipeline.config.options import MAX_IMAGE_SIDE
from pipeline.core.shards import scheme_of
from pipeline.core.tables import ImageSize
from pipeline.io.sources import NotARegularFile, open_regular_file

MANIFEST_COLUMNS = ('image_uri', 'width', 'height')
# Header bytes read to learn a size: a first small read covers almost every image; a JPEG with large
# EXIF or ICC blocks before its frame header gets one larger read. Pixels are never decoded.
PROBE_FIRST_READ = 64 * 1024
PROBE_MAX_READ = 1024 * 1024


class ManifestError(ValueError):
    """The image-sizes manifest is malformed; the message names the row."""


def manifest_format(path: str) -> str:
    lowered = path.lower()
    if lowered.endswith('.csv'):
        return 'csv'
    if lowered.endswith(('.jsonl', '.json')):
        return 'jsonl'
    raise ManifestError(f'{path}: the manifest must end in .csv, .jsonl or .json')


MAX_LISTED_PROBLEMS = 10


def parse_manifest(data: bytes, fmt: str, name: str = 'manifest') -> Dict[str, Tuple[int, int]]:
    """image_uri -> (width, height). Every row is checked; the error lists the first
    MAX_LISTED_PROBLEMS wrong rows by number (a URI given twice with different sizes is one)."""
    rows = _csv_rows(data, name) if fmt == 'csv' else _jsonl_rows(data, name)
    sizes: Dict[str, Tuple[int, int]] = {}
    problems: List[str] = []
    wrong = 0
    for where, row in rows:
        try:
            uri = row.get('image_uri')
            if not isinstance(uri, str) or not uri:
                raise ManifestError(f'{where}: image_uri is missing or empty')
            size = (_positive_int(row.get('width'), f'{where}: width'),
                    _positive_int(row.get('height'), f'{where}: height'))
            if sizes.setdefault(uri, size) != size:
                raise ManifestError(f'{where}: {uri} is listed twice with different sizes '
                                    f'({sizes[uri][0]}x{sizes[uri][1]} and {size[0]}x{size[1]})')
        except ManifestError as exc:
            wrong += 1
            if len(problems) < MAX_LISTED_PROBLEMS:
                problems.append(str(exc))
    if problems:
        more = f'\n  ... {wrong - len(problems)} more wrong rows' if wrong > len(problems) else ''
        raise ManifestError(f'{wrong} wrong rows:\n  ' + '\n  '.join(problems) + more)
    return sizes


def load_manifest(path: str) -> Dict[str, Tuple[int, int]]:
    with FileSystems.open(path) as handle:
        return parse_manifest(handle.read(), manifest_format(path), path)


def check_manifest(path: str) -> int:
    """Fails fast, before the pipeline starts, on a manifest that is missing or has any wrong row;
    returns how many images it sizes."""
    manifest_format(path)
    if not FileSystems.exists(path):
        raise ManifestError(f'{path}: no such file')
    try:
        return len(load_manifest(path))
    except UnicodeDecodeError as exc:
        raise ManifestError(f'{path}: not UTF-8 text: {exc}') from None


def _check_csv_header(header, name: str) -> None:
    missing = [c for c in MANIFEST_COLUMNS if c not in header]
    if missing:
        raise ManifestError(f'{name}: the CSV header must name {",".join(MANIFEST_COLUMNS)}; '
                            f'missing {", ".join(missing)}')


def _csv_rows(data: bytes, name: str) -> Iterable[Tuple[str, dict]]:
    text = data.decode('utf-8-sig')
    reader = csv.DictReader(io.StringIO(text))
    _check_csv_header(reader.fieldnames or [], name)
    for number, row in enumerate(reader, start=2):
        yield f'{name} line {number}', row


def _jsonl_rows(data: bytes, name: str) -> Iterable[Tuple[str, dict]]:
    for number, line in enumerate(data.lstrip(b'\xef\xbb\xbf').splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ManifestError(f'{name} line {number}: not valid JSON: {exc}') from None
        if not isinstance(row, dict):
            raise ManifestError(f'{name} line {number}: expected an object')
        yield f'{name} line {number}', row


def _positive_int(value, where: str) -> int:
    if isinstance(value, bool):
        raise ManifestError(f'{where} must be a positive integer, got {value!r}')
    try:
        number = int(value.strip()) if isinstance(value, str) else value
    except ValueError:
        raise ManifestError(f'{where} must be a positive integer, got {value!r}') from None
    if not isinstance(number, int) or number <= 0:
        raise ManifestError(f'{where} must be a positive integer, got {value!r}')
    if number > MAX_IMAGE_SIDE:
        raise ManifestError(f'{where} must be at most {MAX_IMAGE_SIDE}, got {value!r}')
    return number


def size_from_header(head: bytes) -> Tuple[int, int]:
    """(width, height) from an image's first bytes; Pillow reads the header lazily, never the pixels."""
    with Image.open(io.BytesIO(head)) as image:
        return image.size


def open_image_file(path: str):
    """A local image only when it is a regular file (a FIFO or /dev/stdin would block); a remote one
    through FileSystems."""
    if scheme_of(path) == 'file':
        return open_regular_file(path)
    return FileSystems.open(path)


def probe_size(path: str) -> Tuple[int, int]:
    """Reads at most PROBE_MAX_READ bytes of the image to learn its size; raises on failure."""
    with open_image_file(path) as handle:
        head = handle.read(PROBE_FIRST_READ)
        try:
            return size_from_header(head)
        except Exception:
            if len(head) < PROBE_FIRST_READ:
                raise
        head += handle.read(PROBE_MAX_READ - len(head))
    return size_from_header(head)


def resolve_allowed(uri: str, scheme: str, prefixes: Optional[Tuple[str, ...]]) -> Optional[str]:
    """The path to open for an image URI found inside a prediction line, or None when it may not be
    opened: it must lie under one of the allowed prefixes or, without any, have the input's scheme.
    A local path is judged by where it really leads (links and `..` resolved), and that real path is
    what is opened; a remote URI with `.` or `..` segments is never opened."""
    uri_scheme = scheme_of(uri)
    if uri_scheme == 'file':
        if '://' in uri or not uri.startswith('/'):
            return None  # file:// URIs and relative paths are never probed
        real = os.path.realpath(uri)
        if prefixes:
            allowed = any(real.startswith(_real_prefix(prefix)) for prefix in prefixes
                          if scheme_of(prefix) == 'file')
        else:
            allowed = scheme == 'file'
        return real if allowed else None
    if any(part in ('.', '..') for part in uri.split('://', 1)[-1].split('/')):
        return None
    if prefixes:
        return uri if any(uri.startswith(prefix) for prefix in prefixes) else None
    return uri if uri_scheme == scheme else None


def _real_prefix(prefix: str) -> str:
    """A local prefix resolved as the paths it is compared with; a trailing '/' means a folder."""
    real = os.path.realpath(prefix)
    return real.rstrip('/') + '/' if prefix.endswith('/') else real


class SizeResolver:
    """Resolves each image's size from the manifest, a probe, or the fixed size, in that order.

    Probes are cached (an image listed on several lines is read once per worker) and only touch URIs
    that `resolve_allowed` lets through, so a line naming /etc/passwd on a gs:// run is never opened.
    """

    def __init__(self, manifest: Optional[Dict[str, Tuple[int, int]]], probe: bool,
                 fixed: Optional[Tuple[int, int]], allowed_scheme: str,
                 allowed_prefixes: Optional[Tuple[str, ...]] = None, cache_size: int = 100_000):
        self._manifest = manifest or {}
        self._probe = probe
        self._fixed = ImageSize(fixed[0], fixed[1], 'fixed') if fixed else None
        self._allowed_scheme = allowed_scheme
        self._allowed_prefixes = allowed_prefixes
        self._cache: 'collections.OrderedDict[str, Optional[ImageSize]]' = collections.OrderedDict()
        self._cache_size = cache_size
        self.probe_failures: Dict[str, int] = collections.Counter()  # by reason

    def resolve(self, uri: str) -> Optional[ImageSize]:
        known = self._manifest.get(uri)
        if known is not None:
            return ImageSize(known[0], known[1], 'manifest')
        if self._probe:
            probed = self._probe_cached(uri)
            if probed is not None:
                return probed
        return self._fixed

    def _probe_cached(self, uri: str) -> Optional[ImageSize]:
        if uri in self._cache:
            self._cache.move_to_end(uri)
            return self._cache[uri]
        result = self._probe_once(uri)
        self._cache[uri] = result
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return result

    def _probe_once(self, uri: str) -> Optional[ImageSize]:
        path = resolve_allowed(uri, self._allowed_scheme, self._allowed_prefixes)
        if path is None:
            self.probe_failures['skipped_not_allowed'] += 1
            return None
        try:
            width, height = probe_size(path)
        except FileNotFoundError:
            self.probe_failures['failed_missing'] += 1
            return None
        except NotARegularFile:
            self.probe_failures['failed_not_a_file'] += 1
            return None
        except Exception:
            self.probe_failures['failed_unreadable'] += 1
            return None
        if max(width, height) > MAX_IMAGE_SIDE:
            self.probe_failures['failed_too_large'] += 1
            return None
        return ImageSize(width, height, 'probe')
