"""Progress of a local batch run: what workers report after each batch, and the line shown for it.

Workers report through logging, a channel every runner already has: the in-process runner hands the
records over as they are, and local worker processes forward theirs to the launcher as text. Only
local runs report (a Dataflow job shows its progress in the console, and its workers' logs would fill
with these lines); `--quiet` turns it off.
"""
import logging
import re
import zlib
from typing import Dict, Mapping, Optional

from pipeline.core.shards import DEFAULT_RANGE_BYTES, split_ranges

LOGGER = 'prediction_tables.progress'
MARKER = 'prediction-tables progress:'
_REPORT_RE = re.compile(re.escape(MARKER) + r'((?: [a-z_]+=\d+)+)')

# What a report may carry: bytes and lines read, detections kept, and a shard range finished (the
# crc32 of its shard's path: a number survives any log format, a path with odd characters may not).
FIELDS = ('bytes', 'lines', 'kept', 'range_of')


def shard_key(path: str) -> int:
    return zlib.crc32(path.encode('utf-8'))


def encode(**fields: int) -> str:
    return MARKER + ''.join(f' {name}={value}' for name, value in fields.items())


def report(**fields: int) -> None:
    """One report of a worker, on the logging channel (the launcher collects it)."""
    logging.getLogger(LOGGER).info(encode(**fields))


def decode(text: str) -> Optional[Dict[str, int]]:
    """The fields of a report found anywhere in `text` (a forwarded log entry holds it quoted), else None."""
    match = _REPORT_RE.search(text)
    if match is None:
        return None
    fields = dict(item.split('=') for item in match.group(1).split())
    return {name: int(value) for name, value in fields.items() if name in FIELDS}


class Progress:
    """Totals of the reports so far, against what the input listing said there is to read."""

    def __init__(self, shard_sizes: Mapping[str, int], range_bytes: int = DEFAULT_RANGE_BYTES):
        self.total_bytes = sum(shard_sizes.values())
        self.total_shards = len(shard_sizes)
        self._ranges_left: Dict[int, int] = {}  # per shard key: ranges not finished yet
        for path, size in shard_sizes.items():
            key = shard_key(path)
            self._ranges_left[key] = self._ranges_left.get(key, 0) + len(split_ranges(path, size, range_bytes))
        self.bytes = self.lines = self.kept = self.shards_done = 0

    def add(self, report: Mapping[str, int]) -> None:
        self.bytes += report.get('bytes', 0)
        self.lines += report.get('lines', 0)
        self.kept += report.get('kept', 0)
        key = report.get('range_of')
        if key is not None and self._ranges_left.get(key, 0) > 0:
            self._ranges_left[key] -= 1
            if self._ranges_left[key] == 0:
                self.shards_done += 1

    @property
    def fraction(self) -> float:
        return min(self.bytes / self.total_bytes, 1.0) if self.total_bytes else 0.0

    def seconds_left(self, elapsed: float) -> Optional[float]:
        """At the rate so far; None until a few percent are read (the start-up would skew it)."""
        if self.fraction < 0.02:
            return None
        return elapsed * (1.0 - self.fraction) / self.fraction

    def line(self, elapsed: float) -> str:
        left = self.seconds_left(elapsed)
        parts = [f'{self.shards_done}/{self.total_shards} shards',
                 # a compressed shard reports the bytes of its lines, more than its size on disk
                 f'{human_bytes(min(self.bytes, self.total_bytes))} of {human_bytes(self.total_bytes)} '
                 f'({self.fraction:.0%})',
                 f'{self.lines:,} lines', f'{self.kept:,} detections kept', f'{elapsed:.0f} s elapsed']
        if left is not None:
            parts.append(f'about {left:.0f} s left')
        return 'progress: ' + ', '.join(parts)


def human_bytes(count: float) -> str:
    for unit in ('B', 'KB', 'MB', 'GB', 'TB'):
        if count < 1000 or unit == 'TB':
            return f'{count:.0f} {unit}' if unit == 'B' else f'{count:.1f} {unit}'
        count /= 1000
    raise AssertionError('unreachable')

