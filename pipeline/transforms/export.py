"""Exports for review and relabeling: the exported lines' boxes written in each format asked for, under
<output>/export/<format>/. JSONL and CSV are sharded (Vertex AI and AutoML import several files); COCO
and Label Studio are one JSON document each, written by one final step that streams over the images
(a GroupByKey's iterable, read twice for COCO), never holding all boxes."""
import uuid
from typing import IO, Callable, Dict, NamedTuple, Optional, TypeVar

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipeline.config.settings import ExportSettings
from pipeline.core import counts as names
from pipeline.core.counts import Counts
from pipeline.core.export import (
    ExportBatch,
    Removed,
    automl_csv_rows,
    vertex_jsonl_line,
    write_coco,
    write_label_studio,
)
from pipeline.core.outputs import EXPORT_DOCUMENTS, EXPORT_FOLDER, summary_temp_path
from pipeline.transforms.count import counted

T = TypeVar('T')
JSONL, CSV, COCO, LABEL_STUDIO = 'vertex_jsonl', 'automl_csv', 'coco', 'label_studio'


def _removed_counts(fmt: str, removed: Removed, images: int, boxes: int) -> Counts:
    return Counts({names.exported_images(fmt): images, names.exported_boxes(fmt): boxes,
                   **{names.export_removed(fmt, reason): n for reason, n in removed._asdict().items() if n}})


class FormatLinesFn(beam.DoFn):
    """ExportBatch -> the lines (JSONL) or rows (CSV) of its images; the batch's counts tagged."""

    def __init__(self, fmt: str, ml_use: Optional[str]):
        self._fmt = fmt
        self._ml_use = ml_use

    def process(self, batch: ExportBatch):
        totals = [0, 0, 0]
        boxes = 0
        for image in batch.images():
            if self._fmt == JSONL:
                line, removed = vertex_jsonl_line(image, self._ml_use)
                yield line.decode('utf-8')
            else:
                text, removed = automl_csv_rows(image, self._ml_use)
                yield text[:-1]  # the sink ends each element with a newline
            totals = [a + b for a, b in zip(totals, removed)]
            boxes += len(image.labels) - sum(removed)
        yield counted(_removed_counts(self._fmt, Removed(*totals), len(batch.image_uris), boxes))


def write_whole(path: str, write: Callable[[IO[bytes]], T]) -> T:
    """Writes a file through `write` under a temporary name, then renames it: a run killed half-way
    leaves no truncated file under the final name (a Cloud Storage object appears whole anyway; a later
    run removes the temporary one, which bears our name)."""
    temporary = summary_temp_path(path, uuid.uuid4().hex)
    try:
        with FileSystems.create(temporary, mime_type='application/json') as handle:
            result = write(handle)
        FileSystems.rename([temporary], [path])
    except BaseException:
        if FileSystems.exists(temporary):  # ours, made above: a retry writes a whole one of its own
            FileSystems.delete([temporary])
        raise
    return result


def write_document(element, fmt: str, path: str, export: ExportSettings):
    """(None, every ExportBatch) -> the one COCO or Label Studio document; its counts tagged."""
    _, batches = element

    def images():  # a GroupByKey's iterable may be read again: COCO reads it twice
        return (image for batch in batches for image in batch.images())

    def write(handle) -> Counts:
        if fmt == COCO:
            written, boxes, left_out = write_coco(handle, images, export.export_image_prefix)
            return Counts({names.exported_images(fmt): written, names.exported_boxes(fmt): boxes,
                           names.export_removed(fmt, 'size_unknown'): left_out})
        written, boxes = write_label_studio(handle, images(), export.label_studio_from_name,
                                            export.label_studio_to_name, export.export_image_prefix)
        return Counts({names.exported_images(fmt): written, names.exported_boxes(fmt): boxes})
    counts = write_whole(path, write)
    yield path
    yield counted(counts)


class ExportsWritten(NamedTuple):
    files: Dict[str, beam.PCollection]  # format -> the files written
    counts: beam.PCollection


class WriteExports(beam.PTransform):
    """ExportBatch -> the files of each export format, and their counts."""

    def __init__(self, output: str, export: ExportSettings):
        super().__init__()
        self._output = output
        self._export = export

    def expand(self, batches):
        files, counts = {}, []
        for fmt in self._export.export:
            folder = FileSystems.join(self._output, EXPORT_FOLDER, fmt)
            if fmt in (JSONL, CSV):
                lines = batches | f'Format_{fmt}' >> beam.ParDo(
                    FormatLinesFn(fmt, self._export.export_ml_use)).with_outputs('counts', main='lines')
                files[fmt] = lines.lines | f'Write_{fmt}' >> beam.io.WriteToText(
                    FileSystems.join(folder, 'part'), file_name_suffix='.jsonl' if fmt == JSONL else '.csv')
                counts.append(lines.counts)
            else:
                written = (batches
                           | f'OneKey_{fmt}' >> beam.Map(lambda batch: (None, batch))
                           | f'All_{fmt}' >> beam.GroupByKey()
                           | f'Write_{fmt}' >> beam.FlatMap(
                               write_document, fmt, FileSystems.join(folder, EXPORT_DOCUMENTS[fmt]), self._export
                           ).with_outputs('counts', main='files'))
                files[fmt] = written.files
                counts.append(written.counts)
        return ExportsWritten(files, counts | 'ExportCounts' >> beam.Flatten())
