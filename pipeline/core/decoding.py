"""A batch of lines to columns, the fast way: the typed decoders of `records` (C, one pass) for the
common valid lines, the full validator of `formats` for every line they decline.

A line declined by the typed path is not rejected by it: `formats.parse_line` decides, so the dead
letters and their messages are the full validator's, and what the typed path accepts gives exactly
the tables the full validator's predictions would (tests/unit/test_decoding.py holds the two to that).
Only the annotations at or above the score floor are taken apart beyond their score.
"""
from array import array
from itertools import chain
from operator import itemgetter
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

import msgspec
import numpy as np
from msgspec import UNSET

from pipeline.core import records
from pipeline.core.formats import AUTOML, VERTEX, Prediction, Rejection, parse_line


class DecodedLines(NamedTuple):
    """The valid lines of a batch as columns: one entry per line, in line order, and one row per
    annotation listed (at or above the score floor), the rows of a line together and in its order."""
    image_uris: List[str]
    source_formats: List[str]
    annotations_per_line: np.ndarray  # int64: every annotation of the line, listed or not
    line_index: np.ndarray  # int64, per row: the line it belongs to
    labels: List[Optional[str]]
    label_ids: List[Optional[str]]
    scores: np.ndarray  # float64 per row
    boxes: np.ndarray  # (rows, 4) float64: x_min, y_min, x_max, y_max, clamped to [0, 1]
    dropped_scores: np.ndarray  # the scores of the annotations below the floor, not listed

    @classmethod
    def of(cls, predictions: Sequence[Prediction]) -> 'DecodedLines':
        """The columns of predictions given one by one (the full validator's, or a test's)."""
        columns = _Columns()
        for prediction in predictions:
            columns.add_prediction(prediction)
        return columns.build()


class BoxRejection(NamedTuple):
    """An annotation left out of a kept line: its box lies outside the image."""
    position: int  # of the line in the batch
    annotation: int  # its index on the line
    message: str
    image_uri: str


class DecodedBatch(NamedTuple):
    lines: DecodedLines
    rejections: List[Tuple[int, Rejection]]  # (position of the line in the batch, why)
    box_rejections: List[BoxRejection] = []


class BatchDecoder:
    """decode(lines) -> DecodedBatch. Every annotation is validated; those scored below `score_floor`
    keep only their score (no row of theirs could survive the thresholds)."""

    def __init__(self, input_format: str = 'auto', score_floor: float = 0.0):
        self._input_format = input_format
        self._score_floor = score_floor
        typed: List[Tuple[msgspec.json.Decoder, Callable]] = []
        if input_format != VERTEX:
            typed += [(records.LEGACY_DECODER, _plain_legacy), (records.CAMEL_LEGACY_DECODER, _plain_camel)]
        if input_format != AUTOML:
            typed.append((records.VERTEX_DECODER, _plain_vertex))
        self._typed = typed  # the last one that succeeded comes first: shards hold one format

    def decode(self, lines: Sequence[bytes]) -> DecodedBatch:
        columns = _Columns(self._score_floor)
        rejections: List[Tuple[int, Rejection]] = []
        box_rejections: List[BoxRejection] = []
        for position, line in enumerate(lines):
            record = self._typed_record(line)
            if record is not None:
                columns.add_record(record)
                continue
            parsed = parse_line(line, self._input_format)
            if isinstance(parsed, Prediction):
                columns.add_prediction(parsed)
                box_rejections += [BoxRejection(position, index, message, parsed.image_uri)
                                   for index, message in parsed.rejected_boxes]
            else:
                rejections.append((position, parsed))
        return DecodedBatch(columns.build(), rejections, box_rejections)

    def _typed_record(self, line: bytes):
        """The line as a typed record when one of the structs describes it as a plain result line,
        else None (the full validator decides)."""
        if not (line.isascii() or is_utf8(line)):  # msgspec does not check the strings it skips
            return None
        for position, (decoder, plain) in enumerate(self._typed):
            try:
                record = decoder.decode(line)
            except (msgspec.DecodeError, RecursionError):  # nesting deeper than msgspec goes
                continue
            if not plain(record, line):
                return None
            if position:
                self._typed.insert(0, self._typed.pop(position))
            return record
        return None


def _plain_legacy(record, line: bytes) -> bool:
    """No error or status, and no Vertex key: a result line (the full validator takes the rest)."""
    return (record.error is UNSET and record.status is UNSET and record.instance is UNSET
            and record.prediction is UNSET)


def _plain_camel(record, line: bytes) -> bool:
    """The full validator prefers a snake_case key to its camelCase twin: a line holding any goes there."""
    return _plain_legacy(record, line) and not any(key in line for key in records.SNAKE_CASE_KEYS)


def _plain_vertex(record, line: bytes) -> bool:
    prediction = record.prediction
    count = len(prediction.confidences)
    return (record.ID is UNSET and record.annotations is UNSET and record.error is UNSET
            and record.status is UNSET and prediction.display_names is UNSET
            and len(prediction.bboxes) == count
            and (prediction.ids is None or len(prediction.ids) == count)
            and (prediction.displayNames is None or len(prediction.displayNames) == count))


class _Columns:
    """Collects a batch line by line, in two parts: legacy lines of the typed path (each taken apart
    as soon as it is decoded, while its objects are still in the CPU's cache), and the lines whose rows
    are columns already (Vertex lines of the typed path, the full validator's predictions); `build`
    puts the parts together."""

    def __init__(self, score_floor: float = 0.0):
        self._floor = score_floor
        self.uris: List[str] = []
        self.formats: List[str] = []
        self.counts: List[int] = []
        self.legacy = _Part()
        self.other = _Part()  # rows as [xMin, xMax, yMin, yMax] where `xxyy` says so
        self.xxyy: List[bool] = []  # per line of `other`

    def add_record(self, record) -> None:
        if isinstance(record, records.VertexLine):  # the common case of today's service, inlined
            prediction = record.prediction
            count = len(prediction.confidences)
            ids, names = prediction.ids, prediction.displayNames
            part = self.other
            part.lines.append(len(self.uris))
            part.listed.append(count)
            part.labels += names if names is not None else [None] * count
            part.label_ids += ids if ids is not None else [None] * count  # an int becomes a string in build()
            part.scores.extend(prediction.confidences)
            part.coordinates.extend(chain.from_iterable(prediction.bboxes))
            self.xxyy.append(True)
            self.uris.append(record.instance.content)
            self.formats.append(VERTEX)
            self.counts.append(count)
        else:
            self._add_legacy(record)

    def _add_legacy(self, record) -> None:
        annotations = record.annotations or ()
        part, floor = self.legacy, self._floor
        scores, extend_coordinates = part.scores, part.coordinates.extend
        listed_before = len(scores)
        for annotation in annotations:
            detection = annotation.image_object_detection
            score = detection.score
            if score < floor:
                part.dropped.append(score)
                continue
            vertices = detection.bounding_box.normalized_vertices
            if len(vertices) == 2:
                first, second = vertices
                extend_coordinates((first.x, first.y, second.x, second.y))
            else:  # the box spans every vertex given
                xs, ys = [v.x for v in vertices], [v.y for v in vertices]
                extend_coordinates((min(xs), min(ys), max(xs), max(ys)))
            part.labels.append(annotation.display_name)
            part.label_ids.append(annotation.annotation_spec_id)  # an int becomes a string in build()
            scores.append(score)
        part.add_line(len(self.uris), len(scores) - listed_before)
        self._add_line(record.ID, AUTOML, len(annotations))

    def add_prediction(self, prediction: Prediction) -> None:
        self._add_other(prediction.image_uri, prediction.source_format, prediction.labels,
                        prediction.label_ids, prediction.scores, prediction.coordinates, False,
                        prediction.dropped_scores, len(prediction.rejected_boxes))

    def _add_line(self, uri: str, source_format: str, annotations: int) -> None:
        self.uris.append(uri)
        self.formats.append(source_format)
        self.counts.append(annotations)

    def _add_other(self, uri, source_format, labels, label_ids, scores, coordinates, xxyy, dropped=(),
                   rejected: int = 0) -> None:
        part = self.other
        part.add_line(len(self.uris), len(scores))
        part.labels += labels
        part.label_ids += label_ids
        part.scores.extend(scores)
        part.coordinates.extend(coordinates)
        part.dropped.extend(dropped)
        self.xxyy.append(xxyy)
        self._add_line(uri, source_format, len(scores) + len(dropped) + rejected)

    def build(self) -> DecodedLines:
        legacy, other = self.legacy, self.other
        # The rows of the other part below the floor leave first: their strings are never converted,
        # their boxes never reordered.
        other_scores, other_lines = np.frombuffer(other.scores), other.line_index()
        other_raw, other_xxyy = other.raw_boxes(), np.repeat(np.array(self.xxyy, dtype=bool), other.listed)
        other_labels, other_ids, other_dropped = other.labels, other.label_ids, np.frombuffer(other.dropped)
        listed = other_scores >= self._floor
        if not listed.all():
            rows = np.flatnonzero(listed)
            other_dropped = np.concatenate([other_dropped, other_scores[~listed]])
            other_scores, other_lines, other_raw = other_scores[rows], other_lines[rows], other_raw[rows]
            other_xxyy = other_xxyy[rows]
            other_labels, other_ids = _taken(other_labels, rows), _taken(other_ids, rows)
        if other_xxyy.all():
            other_raw = other_raw[:, [0, 2, 1, 3]]
        elif other_xxyy.any():
            other_raw = other_raw.copy()
            other_raw[other_xxyy] = other_raw[other_xxyy][:, [0, 2, 1, 3]]
        return DecodedLines(
            self.uris, self.formats, np.array(self.counts, dtype=np.int64),
            np.concatenate([legacy.line_index(), other_lines]),
            _joined(legacy.labels, other_labels), _joined(_label_ids(legacy.label_ids), _label_ids(other_ids)),
            np.concatenate([np.frombuffer(legacy.scores), other_scores]) + 0.0,
            normalized_boxes(np.concatenate([legacy.raw_boxes(), other_raw])),
            np.concatenate([np.frombuffer(legacy.dropped), other_dropped]))


def _taken(values: list, rows: np.ndarray) -> list:
    """values[rows] of a list, in C."""
    if len(rows) < 2:
        return [values[i] for i in rows.tolist()]
    return list(itemgetter(*rows.tolist())(values))


def _label_ids(ids: list) -> list:
    """Label ids as strings: an integer id (valid in both formats) is written as its digits."""
    if int in map(type, ids):
        return [str(i) if i.__class__ is int else i for i in ids]
    return ids


class _Part:
    """Rows of some of a batch's lines: strings in lists, numbers in arrays of doubles (converted while
    the line is fresh in the cache, and read by numpy without a copy)."""

    def __init__(self):
        self.lines: List[int] = []  # the batch position of each line
        self.listed: List[int] = []  # rows per line
        self.labels: List[Optional[str]] = []
        self.label_ids: list = []
        self.scores = array('d')
        self.coordinates = array('d')  # 4 per row
        self.dropped = array('d')

    def add_line(self, line: int, listed: int) -> None:
        self.lines.append(line)
        self.listed.append(listed)

    def line_index(self) -> np.ndarray:
        return np.repeat(np.array(self.lines, dtype=np.int64), self.listed)

    def raw_boxes(self) -> np.ndarray:
        return np.frombuffer(self.coordinates, dtype=np.float64).reshape(-1, 4)


def _joined(first: list, second: list) -> list:
    return first + second if first and second else first or second


def normalized_boxes(raw: np.ndarray) -> np.ndarray:
    """Rows of two corners in either order -> (x_min, y_min, x_max, y_max), clamped to [0, 1]."""
    np.clip(raw, 0.0, 1.0, out=raw)
    return np.hstack([np.minimum(raw[:, :2], raw[:, 2:]), np.maximum(raw[:, :2], raw[:, 2:])]) + 0.0


def is_utf8(line: bytes) -> bool:
    try:
        line.decode('utf-8')
    except UnicodeDecodeError:
        return False
    return True
