"""Evaluation as a Beam step: two prediction runs against the same ground truth, each run's mAP equal
to pycocotools' on its own detections; images without prediction, predictions without ground truth
and further lines of one image counted, and only an image's first line evaluated."""
import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that
from beam_testing import local_test_pipeline
from coco_testing import generated_set, normalized, pycocotools_eval

from pipeline.config.options import COCO_IOU_THRESHOLDS
from pipeline.core.columns import bucket_of
from pipeline.core.evaluation import LABELLED, PREDICTED, BucketLines, LinePrediction, RunImage, packed
from pipeline.core.truth_formats import BucketTruth, GroundTruthBox, GroundTruthImage
from pipeline.io.spill import SpillWriter
from pipeline.transforms.coders import ArrowTableCoder
from pipeline.transforms.evaluate import EvaluateAgainstGroundTruth


def line(run, uri, position, size, dets):
    return LinePrediction(run, uri, ('f.jsonl', 0, position), [label for label, _, _ in dets],
                          np.array([score for _, _, score in dets]),
                          np.array([normalized(box, size) for _, box, _ in dets]).reshape(-1, 4))


def lines_in_buckets(lines, buckets):
    """Elements as the job makes them: (bucket, (PREDICTED, run, packed BucketLines)), several per bucket and per run."""
    out = []
    for start in range(0, len(lines), 7):
        grouped = {}
        for line in lines[start:start + 7]:
            grouped.setdefault((bucket_of(line.image_uri, buckets), line.prediction_run), []).append(line)
        for (bucket, run), group in grouped.items():
            counts = np.cumsum([0] + [len(line.scores) for line in group])
            out.append((bucket, (PREDICTED, run, packed(BucketLines.of(run, 'f.jsonl', 0, [line.order[2] for line in group],
                                            [line.image_uri for line in group], counts,
                                            [label for line in group for label in line.labels],
                                            np.concatenate([line.scores for line in group]),
                                            np.concatenate([line.boxes for line in group]).reshape(-1, 4))))))
    return out


def truth_in_buckets(images, buckets):
    grouped = {}
    for position, image in enumerate(images):
        grouped.setdefault(bucket_of(image.image_uri, buckets), []).append(((0, position, 0), image))
    return [(bucket, (LABELLED, None, packed(BucketTruth.of('truth.jsonl', units)))) for bucket, units in grouped.items()]


def spilled(parts, folder):
    """The same parts as a local run carries them: each waits in a file, a reference travels."""
    writer = SpillWriter(str(folder))
    refs = [(bucket, (kind, run, writer.put(data))) for bucket, (kind, run, data) in parts]
    writer.close()
    return refs


@pytest.mark.parametrize('spill', [False, True])
def test_two_runs_side_by_side_equal_pycocotools_each(spill, tmp_path):
    sizes, truth, detections = generated_set(8, images=30)
    other = [dets[::2] for dets in detections]  # run B: every other detection
    uris = [f'gs://b/{i}.jpg' for i in range(len(sizes))]
    lines = [line('run-a', uri, i, size, dets) for i, (uri, size, dets) in enumerate(zip(uris, sizes, detections))
             if i % 5]  # every 5th image has no line of run A: all its boxes are missed
    lines += [line('run-b', uri, i, size, dets) for i, (uri, size, dets) in enumerate(zip(uris, sizes, other))]
    lines.append(line('run-b', uris[1], 999, sizes[1], detections[1]))  # a later line of the same image
    lines.append(line('run-a', 'gs://b/unlabelled.jpg', 0, (10, 10), []))  # no ground truth
    ground_truth = [(uri, GroundTruthImage(uri, tuple(GroundTruthBox(label, tuple(normalized(box, size)), crowd)
                                                      for label, box, crowd in boxes)))
                    for uri, size, boxes in zip(uris, sizes, truth)]
    expected_a = pycocotools_eval(sizes, truth, [d if i % 5 else [] for i, d in enumerate(detections)])[1]
    expected_b = pycocotools_eval(sizes, truth, other)[1]

    buckets = 4
    pipeline = local_test_pipeline()
    parts = lines_in_buckets(lines, buckets) + truth_in_buckets([image for _, image in ground_truth], buckets)
    if spill:
        parts = spilled(parts, tmp_path)
    result = (pipeline
              | 'Parts' >> beam.Create(parts)
              | EvaluateAgainstGroundTruth(COCO_IOU_THRESHOLDS, 0.5, 0.5))
    # The matches tables say their size to Beam without being pickled (transforms.coders).
    assert isinstance(beam.coders.registry.get_coder(result.matches.element_type), ArrowTableCoder)

    def check_metrics(documents):
        (document,) = documents
        runs = {run['prediction_run']: run for run in document['runs']}
        assert list(runs) == ['run-a', 'run-b']
        for name, stats in (('run-a', expected_a), ('run-b', expected_b)):
            assert runs[name]['map'] == pytest.approx(stats[0], abs=1e-9)
            assert runs[name]['map_50'] == pytest.approx(stats[1], abs=1e-9)
            assert runs[name]['mar'] == pytest.approx(stats[8], abs=1e-9)
            assert runs[name]['images'] == len(sizes)
        assert runs['run-b']['detections'] == sum(map(len, other))

    def check_runs(pairs):
        runs = dict(pairs)
        assert runs['run-a'] == RunImage(evaluated=len(sizes), without_prediction=len(range(0, len(sizes), 5)),
                                         predictions_without_ground_truth=1, other_lines=0,
                                         detections=sum(len(d) for i, d in enumerate(detections) if i % 5),
                                         ground_truth_only='gs://b/0.jpg', prediction_only='gs://b/unlabelled.jpg',
                                         without_size=len(sizes))  # no size given: no area range
        assert runs['run-b'].other_lines == 1 and runs['run-b'].without_prediction == 0

    assert_that(result.figures | 'Document' >> beam.Map(lambda figures: figures.metrics_document()), check_metrics,
                label='metrics')
    assert_that(result.figures | 'Runs' >> beam.FlatMap(lambda figures: [(run.prediction_run, run.images)
                                                                          for run in figures.runs]),
                check_runs, label='runs')
    pipeline.run().wait_until_finish()


def test_accumulators_cross_between_stages_unchanged():
    """What the evaluation's workers send to the merge (a label's parts, numpy arrays inside) goes
    through the combine's own accumulator coder, one pickle, and comes back settling to the same."""
    from pipeline.core.evaluation import LabelTotals, PrecisionCounts
    from pipeline.transforms import evaluate
    rng = np.random.default_rng(7)
    grid = np.zeros(23, dtype=np.int64)
    parts = [LabelTotals(PrecisionCounts.of(rng.integers(0, 10, n) / 10,
                                            rng.integers(0, 3, (len(COCO_IOU_THRESHOLDS), n)), 3), n, 1, 1, 1,
                         grid, grid, grid) for n in (0, 4, 9)]
    combine = evaluate.MergeTotalsFn()
    coder = combine.get_accumulator_coder()
    crossed = coder.decode(coder.encode(parts))
    assert [np.array_equal(a.counts.tp, b.counts.tp) and np.array_equal(a.counts.scores, b.counts.scores)
            for a, b in zip(parts, crossed)] == [True] * 3
    before, after = combine.extract_output(parts), combine.extract_output(crossed)
    assert before.counts.average_precision().tolist() == after.counts.average_precision().tolist()


def test_merging_in_steps_gives_what_merging_at_once_gives(monkeypatch):
    """A label's parts compacted whenever they grow past a bound (here 5 scores) settle into the same
    AP, recall and counts as parts merged once at the end."""
    from pipeline.core.evaluation import LabelTotals, PrecisionCounts
    from pipeline.transforms import evaluate
    rng = np.random.default_rng(4)

    def part():
        n = int(rng.integers(0, 6))
        outcomes = rng.integers(0, 3, (len(COCO_IOU_THRESHOLDS), n))
        scores = rng.integers(0, 10, n) / 10  # ties across parts
        grid = np.zeros(23, dtype=np.int64)
        return LabelTotals(PrecisionCounts.of(scores, outcomes, int(rng.integers(0, 4))), n, 1, 1, 1, grid, grid, grid)
    parts = [part() for _ in range(40)]
    combine = evaluate.MergeTotalsFn()
    at_once = combine.extract_output(combine.merge_accumulators([[p] for p in parts]))
    monkeypatch.setattr(evaluate, 'COMPACT_AT', 5)
    accumulator = combine.create_accumulator()
    for p in parts[:25]:
        accumulator = combine.add_input(accumulator, p)
    other = combine.create_accumulator()
    for p in parts[25:]:
        other = combine.add_input(other, p)
    assert len(accumulator) < 25
    in_steps = combine.extract_output(combine.merge_accumulators([accumulator, other]))
    assert np.allclose(in_steps.counts.average_precision(), at_once.counts.average_precision(), atol=1e-12)
    assert in_steps.counts.recall().tolist() == at_once.counts.recall().tolist()
    assert (in_steps.detections, in_steps.tp, in_steps.counts.ground_truth) == (
        at_once.detections, at_once.tp, at_once.counts.ground_truth)


def test_a_label_past_the_bound_is_merged_a_logarithmic_number_of_times(monkeypatch):
    """Once a label's merged counts hold more than COMPACT_AT distinct scores, a merge on every new
    bucket would sort them again each time (quadratic in the run's detections); merging when the
    gathered parts outgrow the merged ones keeps it to O(log) merges, with the same figures."""
    from pipeline.core.evaluation import LabelTotals, PrecisionCounts
    from pipeline.transforms import evaluate
    rng = np.random.default_rng(5)
    grid = np.zeros(23, dtype=np.int64)
    parts = [LabelTotals(PrecisionCounts.of(rng.random(4), rng.integers(0, 3, (len(COCO_IOU_THRESHOLDS), 4)), 2),
                         4, 1, 1, 1, grid, grid, grid) for _ in range(256)]  # distinct scores: nothing shrinks
    combine = evaluate.MergeTotalsFn()
    at_once = combine.extract_output(list(parts))
    merges = []
    monkeypatch.setattr(evaluate, 'merge_all_totals', lambda given: _counted(merges, given))
    monkeypatch.setattr(evaluate, 'COMPACT_AT', 8)
    accumulator = combine.create_accumulator()
    for part in parts:
        accumulator = combine.add_input(accumulator, part)
    assert 5 <= len(merges) <= 10  # 1,024 detections from 8: about log2(128); merging each bucket: 250
    in_steps = combine.extract_output(accumulator)
    assert in_steps.counts.average_precision().tolist() == at_once.counts.average_precision().tolist()
    assert in_steps.counts.recall().tolist() == at_once.counts.recall().tolist()


def _counted(merges, given):
    from pipeline.core.evaluation import merge_all_totals
    merges.append(len(given))
    return merge_all_totals(given)
