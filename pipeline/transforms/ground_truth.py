"""Reading ground truth: every file --ground_truth names, unit by unit, into one labelled image per
image URI (an image listed on several lines or rows has all their boxes), and a dead letter for each
unit that cannot be used. The job does not evaluate against it yet."""
from typing import Iterable, List, NamedTuple, Optional, Tuple

import apache_beam as beam

from pipeline.core import dead_letters
from pipeline.core.ground_truth import INVALID_GROUND_TRUTH, GroundTruthImage, GroundTruthRejection
from pipeline.io import ground_truth as files
from pipeline.transforms.count import METRICS_NAMESPACE

GROUND_TRUTH_ROWS_READ = 'ground_truth_rows_read'
GROUND_TRUTH_OTHER_ML_USE = 'ground_truth_images_other_ml_use'


class ReadUnitsFn(beam.DoFn):
    """A ground-truth file -> (image URI, GroundTruthImage) per usable unit; dead letters tagged."""

    def __init__(self, fmt: str, image_prefix: str):
        self._fmt = fmt
        self._image_prefix = image_prefix

    def process(self, path: str):
        for index, unit in enumerate(files.read_units(path, self._fmt, self._image_prefix)):
            beam.metrics.Metrics.counter(METRICS_NAMESPACE, GROUND_TRUTH_ROWS_READ).inc()
            if isinstance(unit.parsed, GroundTruthRejection):
                yield beam.pvalue.TaggedOutput('dead_letters', dead_letters.make_dead_letter(
                    INVALID_GROUND_TRUTH, unit.source_file, f'{unit.position}: {unit.parsed.message}',
                    unit.payload, unit.parsed.image_uri))
            else:
                yield unit.parsed.image_uri, (path, index, unit.parsed)


def merge_units(element: Tuple[str, Iterable[Tuple[str, int, GroundTruthImage]]]) -> GroundTruthImage:
    """The boxes of every unit of one image, in (file, position) order whatever order the units come
    in; its ML use, the first one given."""
    uri, keyed = element
    units = [unit for _, _, unit in sorted(keyed, key=lambda k: (k[0], k[1]))]
    uses = [unit.ml_use for unit in units if unit.ml_use is not None]
    return GroundTruthImage(uri, tuple(box for unit in units for box in unit.boxes), uses[0] if uses else None)


class GroundTruthRead(NamedTuple):
    images: beam.PCollection  # (image URI, GroundTruthImage), one per image
    dead_letters: beam.PCollection  # invalid_ground_truth records


class ReadGroundTruth(beam.PTransform):
    """The ground-truth files -> GroundTruthRead, keeping only the images of `ml_use` when given."""

    def __init__(self, paths: List[str], fmt: str = 'auto', image_prefix: str = '', ml_use: Optional[str] = None):
        super().__init__()
        self._paths = paths
        self._fmt = fmt
        self._image_prefix = image_prefix
        self._ml_use = ml_use

    def expand(self, pbegin):
        read = (pbegin
                | 'GroundTruthFiles' >> beam.Create(self._paths)
                | 'SpreadFiles' >> beam.Reshuffle()
                | 'ReadUnits' >> beam.ParDo(ReadUnitsFn(self._fmt, self._image_prefix)).with_outputs(
                    'dead_letters', main='units'))
        images = (read.units
                  | 'ByImage' >> beam.GroupByKey()
                  | 'MergeUnits' >> beam.Map(merge_units))
        if self._ml_use is not None:
            images = images | 'OfThisMlUse' >> beam.Filter(_of_ml_use, self._ml_use)
        return GroundTruthRead(images | 'KeyByImage' >> beam.Map(lambda image: (image.image_uri, image)),
                               read.dead_letters)


def _of_ml_use(image: GroundTruthImage, ml_use: str) -> bool:
    if image.ml_use == ml_use:
        return True
    beam.metrics.Metrics.counter(METRICS_NAMESPACE, GROUND_TRUTH_OTHER_ML_USE).inc()
    return False
