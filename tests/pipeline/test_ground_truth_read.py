"""Reading ground truth as the parse step does: every range's usable units in parts keyed by bucket,
one labelled image per URI with the boxes of all its units once merged, a dead letter per unusable
unit, and rows read == rows used + dead letters (the job's own run: tests/e2e/test_evaluation_run.py)."""
import shutil

from conftest import ROOT

from pipeline.core.columns import bucket_of
from pipeline.core.counts import GROUND_TRUTH_ROWS_READ, GROUND_TRUTH_ROWS_USED
from pipeline.core.evaluation import LABELLED, unpacked
from pipeline.core.truth_formats import GroundTruthBox, GroundTruthImage, PlacedImage, merge_units
from pipeline.io.truth_files import resolve_ground_truth
from pipeline.transforms.read_truth import read_truth_range, truth_ranges

FIXTURES = ROOT / 'tests' / 'fixtures' / 'ground_truth'


def test_units_of_one_image_are_merged_and_bad_ones_are_dead_letters(tmp_path):
    shutil.copy(FIXTURES / 'automl_vision.csv', tmp_path)
    (tmp_path / 'more.csv').write_text('gs://folder/im3.png,car,0.5,0.5,,,0.6,0.6,,\n'
                                       'gs://folder/im4.png,car,x,0.5,,,0.6,0.6,,\n')
    outputs = {}
    for work in truth_ranges(resolve_ground_truth(str(tmp_path))):
        for output in read_truth_range(work, '', 3):
            outputs.setdefault(output.tag, []).append(output.value)
    parts = outputs['evaluation_parts']
    assert {kind for _, (kind, _, _) in parts} == {LABELLED}
    units = [(bucket, unit) for bucket, (_, _, data) in parts for unit in unpacked(data).units()]
    assert all(bucket_of(unit.image.image_uri, 3) == bucket for bucket, unit in units)
    assert merge_units(unit for _, unit in units) == [
        GroundTruthImage('gs://folder/im2.png', (GroundTruthBox('car', (0.1, 0.1, 0.2, 0.3)),), 'unassigned'),
        GroundTruthImage('gs://folder/im3.png', (GroundTruthBox('car', (0.5, 0.5, 0.6, 0.6)),), 'test'),
        GroundTruthImage('gs://folder/image1.png', (
            GroundTruthBox('car', (0.1, 0.1, 0.3, 0.3)), GroundTruthBox('bike', (0.7, 0.6, 0.8, 0.9))), 'training'),
    ]
    assert [(d['kind'], d['source_file'].rsplit('/', 1)[1], d['image_uri'], d['error_message'], d['payload'])
            for d in outputs['dead_letters']] == [
        ('invalid_ground_truth', 'more.csv', 'gs://folder/im4.png', "line 2: X1: expected a number from 0 to 1, got 'x'",
         'gs://folder/im4.png,car,x,0.5,,,0.6,0.6,,')]
    read = sum(counts.scalars[GROUND_TRUTH_ROWS_READ] for counts in outputs['counts'])
    used = sum(counts.scalars[GROUND_TRUTH_ROWS_USED] for counts in outputs['counts'])
    assert read == used + len(outputs['dead_letters']) and used == len(units)


def test_the_boxes_of_an_image_keep_their_file_order_whatever_order_they_come_in():
    car, bike = GroundTruthBox('car', (0.1, 0.1, 0.3, 0.3)), GroundTruthBox('bike', (0.7, 0.6, 0.8, 0.9))
    units = [PlacedImage('b.csv', (0, 0, 0), GroundTruthImage('u', (bike,))),
             PlacedImage('a.csv', (100, 1, 0), GroundTruthImage('u', (car,), 'test')),
             PlacedImage('a.csv', (0, 7, 0), GroundTruthImage('u', (bike,), None)),
             PlacedImage('a.csv', (0, 2, 0), GroundTruthImage('v', (car,), 'training'))]
    assert merge_units(units) == [GroundTruthImage('u', (bike, car, bike), 'test'),
                                  GroundTruthImage('v', (car,), 'training')]


def test_a_range_that_fails_unexpectedly_is_one_dead_letter_naming_the_file_and_bytes():
    from pipeline.transforms.read_truth import TruthRange, failed_range_to_dead_letter
    record = failed_range_to_dead_letter((TruthRange('gs://b/truth.jsonl', 'vertex_jsonl', 0, 8), (
        ValueError, "ValueError('boom')", None)))
    assert (record['kind'], record['source_file']) == ('invalid_ground_truth', 'gs://b/truth.jsonl')
    assert record['error_message'] == ("unexpected error while reading bytes 0-8 of this ground-truth file: "
                                       "ValueError: ValueError('boom')")
