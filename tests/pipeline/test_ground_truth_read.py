"""Reading ground truth in a pipeline: every file's usable units in batches keyed by bucket, one
labelled image per URI with the boxes of all its units once merged, and a dead letter per unusable
unit."""
import shutil

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to
from beam_testing import local_test_pipeline
from conftest import ROOT

from pipeline.core.evaluation import bucket_of, unpacked
from pipeline.core.ground_truth import GroundTruthBox, GroundTruthImage, PlacedImage, merge_units
from pipeline.io.ground_truth import resolve_ground_truth
from pipeline.transforms.ground_truth import ReadGroundTruth

FIXTURES = ROOT / 'tests' / 'fixtures' / 'ground_truth'


def test_units_of_one_image_are_merged_and_bad_ones_are_dead_letters(tmp_path):
    shutil.copy(FIXTURES / 'automl_vision.csv', tmp_path)
    (tmp_path / 'more.csv').write_text('gs://folder/im3.png,car,0.5,0.5,,,0.6,0.6,,\n'
                                       'gs://folder/im4.png,car,x,0.5,,,0.6,0.6,,\n')
    pipeline = local_test_pipeline()
    read = pipeline | ReadGroundTruth(resolve_ground_truth(str(tmp_path)), buckets=3)

    def right_bucket(batches):
        assert all(bucket_of(unit.image.image_uri, 3) == bucket for bucket, units in batches
                   for unit in unpacked(units).units())
    assert_that(read.units, right_bucket, label='buckets')
    images = (read.units
              | 'AllUnits' >> beam.FlatMap(lambda batch: unpacked(batch[1]).units())
              | 'Together' >> beam.combiners.ToList()
              | 'Merge' >> beam.FlatMap(merge_units)
              | 'ByUri' >> beam.Map(lambda image: (image.image_uri, image)))
    assert_that(images, equal_to([
        ('gs://folder/image1.png', GroundTruthImage('gs://folder/image1.png', (
            GroundTruthBox('car', (0.1, 0.1, 0.3, 0.3)), GroundTruthBox('bike', (0.7, 0.6, 0.8, 0.9))), 'training')),
        ('gs://folder/im2.png', GroundTruthImage('gs://folder/im2.png', (
            GroundTruthBox('car', (0.1, 0.1, 0.2, 0.3)),), 'unassigned')),
        ('gs://folder/im3.png', GroundTruthImage('gs://folder/im3.png', (
            GroundTruthBox('car', (0.5, 0.5, 0.6, 0.6)),), 'test')),
    ]), label='images')
    assert_that(read.dead_letters | 'Brief' >> beam.Map(
        lambda d: (d['kind'], d['source_file'].rsplit('/', 1)[1], d['image_uri'], d['error_message'], d['payload'])),
        equal_to([('invalid_ground_truth', 'more.csv', 'gs://folder/im4.png',
                   "line 2: X1: expected a number from 0 to 1, got 'x'", 'gs://folder/im4.png,car,x,0.5,,,0.6,0.6,,')]),
        label='dead letters')
    pipeline.run().wait_until_finish()


def test_the_boxes_of_an_image_keep_their_file_order_whatever_order_they_come_in():
    car, bike = GroundTruthBox('car', (0.1, 0.1, 0.3, 0.3)), GroundTruthBox('bike', (0.7, 0.6, 0.8, 0.9))
    units = [PlacedImage('b.csv', (0, 0), GroundTruthImage('u', (bike,))),
             PlacedImage('a.csv', (100, 1), GroundTruthImage('u', (car,), 'test')),
             PlacedImage('a.csv', (0, 7), GroundTruthImage('u', (bike,), None)),
             PlacedImage('a.csv', (0, 2), GroundTruthImage('v', (car,), 'training'))]
    assert merge_units(units) == [GroundTruthImage('u', (bike, car, bike), 'test'),
                                  GroundTruthImage('v', (car,), 'training')]
