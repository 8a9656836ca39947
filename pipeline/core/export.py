"""Kept boxes written back out for people: the import formats of Vertex AI and AutoML Vision, COCO, and
Label Studio's tasks with pre-annotations. Pure: each image becomes its own lines, rows or JSON pieces,
and the one-document formats (COCO, Label Studio) are written as a stream over the images, never
holding them all (`write_coco`, `write_label_studio`).

Ids are deterministic from run to run whatever the order the images come in: an image's COCO id is
derived from its URI, a category's from its label's place in the sorted labels.
"""
import csv
import hashlib
import io
import urllib.parse
from typing import IO, Callable, Dict, Iterable, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import orjson

from pipeline.core.columns import bucket_of
from pipeline.core.decoding import DecodedLines
from pipeline.core.truth_formats import ML_USE_LABEL

Box = Tuple[float, float, float, float]  # x_min, y_min, x_max, y_max, normalized
# Vertex AI's import limits for image object detection: boxes per image, and the smallest box side as
# a share of the image side and in pixels (where the image's size is known).
VERTEX_MAX_BOXES = 500
VERTEX_MIN_SIDE = 0.01
VERTEX_MIN_PIXELS = 8
AUTOML_ML_USE = {'training': 'TRAIN', 'validation': 'VALIDATION', 'test': 'TEST'}


class ExportImage(NamedTuple):
    """One image and its kept boxes, by descending score."""
    image_uri: str
    labels: List[Optional[str]]
    scores: List[float]
    boxes: List[Box]
    width: Optional[int] = None
    height: Optional[int] = None
    prediction_run: Optional[str] = None


class ExportBatch(NamedTuple):
    """The exported lines of one batch, as columns (one Beam element, pickled in one piece), with where
    each line is (its shard, the byte range and its position there): an image's first line wins."""
    prediction_run: Optional[str]
    image_uris: List[str]
    offsets: np.ndarray  # (lines + 1,): the boxes of line i are offsets[i]:offsets[i + 1]
    labels: List[Optional[str]]
    scores: np.ndarray
    boxes: np.ndarray  # (boxes, 4) normalized
    widths: List[Optional[int]]
    heights: List[Optional[int]]
    source_file: str = ''
    range_start: int = 0
    positions: Sequence[int] = ()  # of each line among its range's lines

    def lines(self, chosen: Sequence[int]) -> 'ExportBatch':
        """The batch with only the `chosen` lines."""
        bounds = self.offsets.tolist()
        rows = [row for line in chosen for row in range(bounds[line], bounds[line + 1])]
        counts = [bounds[line + 1] - bounds[line] for line in chosen]
        index = np.array(rows, dtype=np.int64)
        return ExportBatch(self.prediction_run, [self.image_uris[line] for line in chosen],
                           np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), [self.labels[r] for r in rows],
                           self.scores[index], self.boxes.reshape(-1, 4)[index], [self.widths[line] for line in chosen],
                           [self.heights[line] for line in chosen], self.source_file, self.range_start,
                           [self.positions[line] for line in chosen] if len(self.positions) else ())

    def images(self) -> Iterator[ExportImage]:
        bounds, scores, boxes = self.offsets.tolist(), self.scores.tolist(), self.boxes.tolist()
        for line, uri in enumerate(self.image_uris):
            start, end = bounds[line], bounds[line + 1]
            yield ExportImage(uri, self.labels[start:end], scores[start:end], [tuple(b) for b in boxes[start:end]],
                              self.widths[line], self.heights[line], self.prediction_run)


def split_by_bucket(batch: ExportBatch, buckets: int) -> Dict[int, ExportBatch]:
    """The batch's lines by the bucket of their image (for the `errors` selection, which waits for the
    evaluation of each bucket)."""
    groups: Dict[int, List[int]] = {}
    for line, uri in enumerate(batch.image_uris):
        groups.setdefault(bucket_of(uri, buckets), []).append(line)
    return {bucket: batch.lines(lines) for bucket, lines in groups.items()}


def export_batch(decoded: DecodedLines, rows: np.ndarray, lines: np.ndarray, sizes: Sequence,
                 prediction_run: Optional[str], source_file: str = '', range_start: int = 0,
                 positions: Sequence[int] = ()) -> ExportBatch:
    """The chosen `lines` of a batch with their kept rows (`rows`: the detections table's rows, a line's
    together by descending score); `sizes`: each line's ImageSize or None; `positions`: each decoded
    line's among its range's lines."""
    row_line = decoded.line_index[rows]
    chosen = rows[np.isin(row_line, lines)]
    per_line = np.bincount(decoded.line_index[chosen], minlength=len(decoded.image_uris))[lines]
    picked = lines.tolist()
    return ExportBatch(prediction_run, [decoded.image_uris[i] for i in picked],
                       np.concatenate([[0], np.cumsum(per_line)]).astype(np.int64),
                       [decoded.labels[r] for r in chosen.tolist()], decoded.scores[chosen], decoded.boxes[chosen],
                       [sizes[i].width if sizes[i] else None for i in picked],
                       [sizes[i].height if sizes[i] else None for i in picked], source_file, range_start,
                       [positions[i] for i in picked] if len(positions) else ())


def first_lines(batches: Iterable[ExportBatch]) -> Tuple[List[ExportBatch], int]:
    """(the batches with only each image's first line of its run, in file order: the line the
    evaluation uses; the number of further lines left out). The batches hold every line of some images
    (those of one bucket)."""
    batches = list(batches)
    first: Dict[Tuple[Optional[str], str], Tuple[Tuple[str, int, int], int, int]] = {}
    total = 0
    for number, batch in enumerate(batches):
        for line, uri in enumerate(batch.image_uris):
            total += 1
            place = (batch.source_file, batch.range_start, batch.positions[line] if len(batch.positions) else line)
            key = (batch.prediction_run, uri)
            if key not in first or place < first[key][0]:
                first[key] = (place, number, line)
    chosen: Dict[int, List[int]] = {}
    for _, number, line in first.values():
        chosen.setdefault(number, []).append(line)
    kept = [batches[number].lines(sorted(lines_of)) for number, lines_of in sorted(chosen.items())]
    return kept, total - len(first)


def uncertain_lines(decoded: DecodedLines, low: float, high: float) -> np.ndarray:
    """The lines with an annotation scored in [low, high), before any threshold (the decoder must keep
    the rows from `low` up)."""
    in_band = (decoded.scores >= low) & (decoded.scores < high)
    return np.unique(decoded.line_index[in_band])


class Removed(NamedTuple):
    """What an export left out of an image, by reason."""
    no_label: int = 0  # a box without a display name cannot be imported
    too_small: int = 0  # a side under Vertex AI's minimum
    over_limit: int = 0  # past Vertex AI's 500 boxes per image


def _labelled(image: ExportImage):
    return [(label, score, box) for label, score, box in zip(image.labels, image.scores, image.boxes)
            if label is not None]


def vertex_boxes(image: ExportImage) -> Tuple[List[Tuple[str, float, Box]], Removed]:
    """The boxes Vertex AI's import accepts, highest scores first, and what the limits removed."""
    labelled = _labelled(image)
    large = [(label, score, box) for label, score, box in labelled if _large_enough(box, image)]
    ranked = sorted(large, key=lambda item: -item[1])
    kept = ranked[:VERTEX_MAX_BOXES]
    return kept, Removed(len(image.labels) - len(labelled), len(labelled) - len(large), len(ranked) - len(kept))


# Box sides are differences of decimals written in binary (0.11 - 0.1 = 0.00999...): a side within this
# of a limit meets it.
_SLACK = 1e-9


def _large_enough(box: Box, image: ExportImage) -> bool:
    width, height = box[2] - box[0], box[3] - box[1]
    if width < VERTEX_MIN_SIDE - _SLACK or height < VERTEX_MIN_SIDE - _SLACK:
        return False
    if image.width and image.height:
        return (width * image.width >= VERTEX_MIN_PIXELS - _SLACK
                and height * image.height >= VERTEX_MIN_PIXELS - _SLACK)
    return True


def vertex_jsonl_line(image: ExportImage, ml_use: Optional[str] = None) -> Tuple[bytes, Removed]:
    """One line of Vertex AI's `image_bounding_box_io_format_1.0.0`, and what its limits removed."""
    kept, removed = vertex_boxes(image)
    record: Dict = {'imageGcsUri': image.image_uri, 'boundingBoxAnnotations': [
        {'displayName': label, 'xMin': box[0], 'xMax': box[2], 'yMin': box[1], 'yMax': box[3]}
        for label, _, box in kept]}
    if ml_use:
        record['dataItemResourceLabels'] = {ML_USE_LABEL: ml_use}
    return orjson.dumps(record), removed


def automl_csv_rows(image: ExportImage, ml_use: Optional[str] = None) -> Tuple[str, Removed]:
    """`[ML_USE,]GCS_PATH,LABEL,X_MIN,Y_MIN,,,X_MAX,Y_MAX,,` rows of one image (quoted as CSV requires),
    or one row with an empty label and box for an image without boxes."""
    labelled = _labelled(image)
    prefix = [AUTOML_ML_USE[ml_use]] if ml_use else []
    rows = [prefix + [image.image_uri, label, _number(box[0]), _number(box[1]), '', '', _number(box[2]),
                      _number(box[3]), '', ''] for label, _, box in labelled]
    if not rows:
        rows = [prefix + [image.image_uri] + [''] * 9]
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator='\n').writerows(rows)
    return buffer.getvalue(), Removed(no_label=len(image.labels) - len(labelled))


def _number(value: float) -> str:
    return repr(float(value))


def coco_image_id(image_uri: str) -> int:
    """A positive id from the URI, at most 2^53 - 1 (JavaScript reads it exactly): the same image has
    the same id in every run."""
    return coco_id(image_uri)


def rewrite_uri(uri: str, prefixes: Optional[Mapping[str, str]]) -> str:
    """`--export_image_prefix`: the first SOURCE prefix that starts the URI is replaced by its TARGET."""
    for source, target in (prefixes or {}).items():
        if uri.startswith(source):
            return target + uri[len(source):]
    return uri


def label_studio_url(uri: str, prefixes: Optional[Mapping[str, str]] = None) -> str:
    """The image as a URL Label Studio opens: the rewritten prefix as given, the rest of the path
    percent-encoded (a `#`, `?`, `&`, space or line break in an object name is a character of the name)."""
    for source, target in (prefixes or {}).items():
        if uri.startswith(source):
            return target + urllib.parse.quote(uri[len(source):], safe='/')
    scheme, separator, rest = uri.partition('://')
    if not separator:
        return urllib.parse.quote(uri, safe='/')
    host, slash, path = rest.partition('/')
    return f'{scheme}://{host}{slash}{urllib.parse.quote(path, safe="/")}'


def write_coco(handle: IO[bytes], images: Callable[[], Iterable[ExportImage]],
               prefixes: Optional[Mapping[str, str]] = None) -> Tuple[int, int, int]:
    """A COCO document, streamed: `images` is called twice (images, then annotations), so nothing is
    held but one image at a time, the labels and the ids given. An image whose size is unknown is left
    out (COCO needs it). An image on several prediction lines is one COCO image per line, each with
    its own id. Returns (images written, annotations written, images left out)."""
    labels: set = set()
    written = left_out = annotations = 0
    handle.write(b'{"images":[')
    for image, image_id in _with_ids(images()):
        if image_id is None:
            left_out += 1
            continue
        labels.update(label for label in image.labels if label is not None)
        handle.write((b',' if written else b'') + orjson.dumps({
            'id': image_id, 'file_name': rewrite_uri(image.image_uri, prefixes),
            'width': image.width, 'height': image.height}))
        written += 1
    category = {label: index + 1 for index, label in enumerate(sorted(labels))}
    annotation_ids: set = set()
    handle.write(b'],"annotations":[')
    for image, image_id in _with_ids(images()):
        if image_id is None:
            continue
        assert image.width and image.height
        for index, (label, score, box) in enumerate(_labelled(image)):
            x, y = clean(box[0] * image.width), clean(box[1] * image.height)
            w, h = clean((box[2] - box[0]) * image.width), clean((box[3] - box[1]) * image.height)
            handle.write((b',' if annotations else b'') + orjson.dumps({
                'id': unique_coco_id(f'{image_id}#{index}', annotation_ids), 'image_id': image_id,
                'category_id': category[label], 'bbox': [x, y, w, h], 'area': clean(w * h), 'score': score,
                'iscrowd': 0}))
            annotations += 1
    handle.write(b'],"categories":' + orjson.dumps([{'id': category[label], 'name': label}
                                                      for label in sorted(category)]) + b'}')
    return written, annotations, left_out


def _with_ids(images: Iterable[ExportImage]) -> Iterator[Tuple[ExportImage, Optional[int]]]:
    """Each image with its COCO id (None: size unknown); a URI seen again gets the next id of its own.
    Called twice over the same images, it gives the same ids."""
    seen: Dict[str, int] = {}
    taken: set = set()
    for image in images:
        if not (image.width and image.height):
            yield image, None
            continue
        occurrence = seen[image.image_uri] = seen.get(image.image_uri, 0) + 1
        yield image, unique_coco_id(image.image_uri if occurrence == 1 else f'{image.image_uri}#{occurrence}', taken)


MAX_COCO_ID = 2 ** 53 - 1


def coco_id(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode('utf-8')).digest()[:8], 'big') >> 11 or 1


def unique_coco_id(text: str, taken: set) -> int:
    """coco_id, rehashed in the rare case another part of the document has it already."""
    candidate, attempt = coco_id(text), 0
    while candidate in taken:
        attempt += 1
        candidate = coco_id(f'{text}#again{attempt}')
    taken.add(candidate)
    return candidate


def clean(value: float) -> float:
    """A coordinate without binary noise in its last digits (74.01216769999999 -> 74.0121677): twelve
    significant digits, far finer than a pixel."""
    return float(f'{value:.12g}')


def label_studio_task(image: ExportImage, from_name: str = 'label', to_name: str = 'image',
                      prefixes: Optional[Mapping[str, str]] = None) -> Dict:
    """One Label Studio task: the image, and the run's boxes as a prediction (pre-annotations), in
    percent of the image; `original_width`/`original_height` where the size is known."""
    results = []
    for label, score, box in _labelled(image):
        result = {'type': 'rectanglelabels', 'from_name': from_name, 'to_name': to_name,
                  'value': {'x': clean(box[0] * 100), 'y': clean(box[1] * 100), 'width': clean((box[2] - box[0]) * 100),
                            'height': clean((box[3] - box[1]) * 100), 'rotation': 0, 'rectanglelabels': [label]},
                  'score': score}
        if image.width and image.height:
            result.update(original_width=image.width, original_height=image.height)
        results.append(result)
    return {'data': {'image': label_studio_url(image.image_uri, prefixes)},
            'predictions': [{'model_version': image.prediction_run or '', 'score': max(image.scores, default=0.0),
                             'result': results}]}


def write_label_studio(handle: IO[bytes], images: Iterable[ExportImage], from_name: str = 'label',
                       to_name: str = 'image', prefixes: Optional[Mapping[str, str]] = None) -> Tuple[int, int]:
    """A JSON list of tasks, streamed one image at a time; returns (tasks, boxes) written."""
    handle.write(b'[')
    count = boxes = 0
    for image in images:
        task = label_studio_task(image, from_name, to_name, prefixes)
        handle.write((b',' if count else b'') + orjson.dumps(task))
        count += 1
        boxes += len(task['predictions'][0]['result'])
    handle.write(b']')
    return count, boxes
