"""Lines to predictions the fast way: the typed decoders of `records` (C, one pass) for the common
valid lines, the full validator of `formats` for every line they decline.

A line declined by the typed path is not rejected by it: `formats.parse_line` decides, so the dead
letters and their messages are the full validator's, and what the typed path accepts is exactly what
the full validator would give (tests/unit/test_decoding.py holds the two to that).
"""
from itertools import chain
from typing import Callable, List, Optional, Tuple, Union

import msgspec
from msgspec import UNSET

from pipeline.core import records
from pipeline.core.formats import AUTOML, VERTEX, XXYY, Prediction, Rejection, parse_line

Converter = Callable[[object, bytes], Optional[Prediction]]


class LineParser:
    """parse(line) -> Prediction or Rejection. Annotations of legacy lines scored below
    `score_floor` keep only their score (Prediction.dropped_scores); every one is validated."""

    def __init__(self, input_format: str = 'auto', score_floor: float = 0.0):
        self._input_format = input_format
        self._score_floor = score_floor
        typed: List[Tuple[msgspec.json.Decoder, Converter]] = []
        if input_format != VERTEX:
            typed += [(records.LEGACY_DECODER, self._legacy), (records.CAMEL_LEGACY_DECODER, self._camel)]
        if input_format != AUTOML:
            typed.append((records.VERTEX_DECODER, self._vertex))
        self._typed = typed  # the last one that succeeded comes first: shards hold one format

    def parse(self, line: bytes) -> Union[Prediction, Rejection]:
        if line.isascii() or _is_utf8(line):  # msgspec does not check the strings it skips
            for position, (decoder, convert) in enumerate(self._typed):
                try:
                    record = decoder.decode(line)
                except (msgspec.DecodeError, RecursionError):  # nesting deeper than msgspec goes
                    continue
                prediction = convert(record, line)
                if prediction is None:
                    break
                if position:
                    self._typed.insert(0, self._typed.pop(position))
                return prediction
        return parse_line(line, self._input_format)

    def _legacy(self, record, line: bytes = b'') -> Optional[Prediction]:
        if (record.error is not UNSET or record.status is not UNSET or record.instance is not UNSET
                or record.prediction is not UNSET):
            return None
        annotations = record.annotations
        if not annotations:
            return Prediction(record.ID, AUTOML, [], [], [], [])
        floor = self._score_floor
        labels: List[Optional[str]] = []
        label_ids: List[Optional[str]] = []
        scores: List[float] = []
        coordinates: List[float] = []
        dropped: List[float] = []
        for annotation in annotations:
            detection = annotation.image_object_detection
            score = detection.score
            if score < floor:
                dropped.append(score)
                continue
            vertices = detection.bounding_box.normalized_vertices
            if len(vertices) == 2:
                first, second = vertices
                coordinates += (first.x, first.y, second.x, second.y)
            else:  # the box spans every vertex given
                xs, ys = [v.x for v in vertices], [v.y for v in vertices]
                coordinates += (min(xs), min(ys), max(xs), max(ys))
            labels.append(annotation.display_name)
            label_id = annotation.annotation_spec_id
            label_ids.append(label_id if label_id.__class__ is str else str(label_id))
            scores.append(score)
        return Prediction(record.ID, AUTOML, labels, label_ids, scores, coordinates, dropped or ())

    def _camel(self, record, line: bytes) -> Optional[Prediction]:
        """The full validator prefers a snake_case key to its camelCase twin: a line holding any of
        them goes there."""
        if any(key in line for key in records.SNAKE_CASE_KEYS):
            return None
        return self._legacy(record)

    def _vertex(self, record, line: bytes) -> Optional[Prediction]:
        if (record.ID is not UNSET or record.annotations is not UNSET or record.error is not UNSET
                or record.status is not UNSET):
            return None
        prediction = record.prediction
        if prediction.display_names is not UNSET:
            return None
        count = len(prediction.confidences)
        ids, names = prediction.ids, prediction.displayNames
        if (len(prediction.bboxes) != count or (ids is not None and len(ids) != count)
                or (names is not None and len(names) != count)):
            return None  # the full validator names the lengths
        if ids is None:
            ids = [None] * count
        elif int in map(type, ids):
            ids = [str(i) if i.__class__ is int else i for i in ids]
        return Prediction(record.instance.content, VERTEX, names if names is not None else [None] * count,
                          ids, prediction.confidences, list(chain.from_iterable(prediction.bboxes)),
                          coordinate_order=XXYY)


def _is_utf8(line: bytes) -> bool:
    try:
        line.decode('utf-8')
    except UnicodeDecodeError:
        return False
    return True
