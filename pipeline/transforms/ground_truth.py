"""Reading ground truth: every file --ground_truth names, unit by unit, into one labelled image per
image URI (an image listed on several lines or rows has all their boxes), and a dead letter for each
unit that cannot be used. Rows read == rows used + dead letters, as for the predictions."""
from typing import Iterable, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam

from pipeline.core import counts as names
from pipeline.core import dead_letters
from pipeline.core.counts import Counts
from pipeline.core.dead_letters import INVALID_GROUND_TRUTH
from pipeline.core.ground_truth import GroundTruthImage, GroundTruthRejection
from pipeline.io import ground_truth as files
from pipeline.transforms.count import counted, counted_at_bundle_end


class ReadUnitsFn(beam.DoFn):
    """(ground-truth file, its format) -> (image URI, (file, position, GroundTruthImage)) per usable
    unit; a dead letter per unusable one; the file's counts."""

    def __init__(self, image_prefix: str):
        self._image_prefix = image_prefix

    def process(self, file: Tuple[str, str]):
        path, fmt = file
        read = used = 0
        for index, unit in enumerate(files.read_units(path, fmt, self._image_prefix)):
            read += 1
            if isinstance(unit.parsed, GroundTruthRejection):
                yield beam.pvalue.TaggedOutput('dead_letters', dead_letters.make_dead_letter(
                    INVALID_GROUND_TRUTH, unit.source_file, f'{unit.position}: {unit.parsed.message}',
                    unit.payload, unit.parsed.image_uri))
            else:
                used += 1
                yield unit.parsed.image_uri, (path, index, unit.parsed)
        yield counted(Counts({names.GROUND_TRUTH_ROWS_READ: read, names.GROUND_TRUTH_ROWS_USED: used}))


def merge_units(element: Tuple[str, Iterable[Tuple[str, int, GroundTruthImage]]]) -> GroundTruthImage:
    """The boxes of every unit of one image, in (file, position) order whatever order the units come
    in; its ML use, the first one given."""
    uri, keyed = element
    units = [unit for _, _, unit in sorted(keyed, key=lambda k: (k[0], k[1]))]
    uses = [unit.ml_use for unit in units if unit.ml_use is not None]
    return GroundTruthImage(uri, tuple(box for unit in units for box in unit.boxes), uses[0] if uses else None)


class MergeUnitsFn(beam.DoFn):
    """(image URI, its units) -> (image URI, GroundTruthImage) when the image is of `ml_use` (or no ML use
    is asked for); the images left out are counted, per bundle."""

    def __init__(self, ml_use: Optional[str]):
        self._ml_use = ml_use
        self._other = 0

    def start_bundle(self):
        self._other = 0

    def process(self, element):
        image = merge_units(element)
        if self._ml_use is None or image.ml_use == self._ml_use:
            yield image.image_uri, image
        else:
            self._other += 1

    def finish_bundle(self):
        if self._other:
            yield counted_at_bundle_end(Counts({names.GROUND_TRUTH_OTHER_ML_USE: self._other}))


class GroundTruthRead(NamedTuple):
    images: beam.PCollection  # (image URI, GroundTruthImage), one per image
    dead_letters: beam.PCollection  # invalid_ground_truth records
    counts: beam.PCollection  # Counts


class ReadGroundTruth(beam.PTransform):
    """(path, format) of each ground-truth file -> GroundTruthRead, keeping only the images of `ml_use`
    when given. The files are read whole, one per worker at a time (a ground-truth file is small next
    to the predictions it labels)."""

    def __init__(self, ground_truth_files: Sequence[Tuple[str, str]], image_prefix: Optional[str] = None,
                 ml_use: Optional[str] = None):
        super().__init__()
        self._files = list(ground_truth_files)
        self._image_prefix = image_prefix or ''
        self._ml_use = ml_use

    def expand(self, pbegin):
        read = (pbegin
                | 'GroundTruthFiles' >> beam.Create(self._files)
                | 'SpreadFiles' >> beam.Reshuffle()
                | 'ReadUnits' >> beam.ParDo(ReadUnitsFn(self._image_prefix)).with_outputs(
                    'dead_letters', 'counts', main='units'))
        merged = (read.units
                  | 'ByImage' >> beam.GroupByKey()
                  | 'MergeUnits' >> beam.ParDo(MergeUnitsFn(self._ml_use)).with_outputs('counts', main='images'))
        counts = (read.counts, merged.counts) | 'GroundTruthCounts' >> beam.Flatten()
        return GroundTruthRead(merged.images, read.dead_letters, counts)
