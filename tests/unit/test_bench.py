"""The benchmark's cost model: fixed seconds and marginal cost per annotation from runs at two sizes,
and the size from which the 2-process pipeline overtakes the plain Python baseline; and the targets
checked against a run."""
import sys

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / 'bench'))
from cost_model import cost_model  # bench/ is not a package: imported from its folder
from targets import DUCKDB, ONE_PROCESS, target_checks

TWO_PROCESSES, BASELINE = 'pipeline, 2 processes', 'python baseline'


def result(contender, images, seconds, threshold=0.5):
    return {'contender': contender, 'images': images, 'annotations': images * 20,
            'threshold': threshold, 'median_s': seconds}


def line(fixed, us_per_annotation):
    return lambda images: fixed + us_per_annotation * 1e-6 * images * 20


def test_fits_fixed_and_marginal_cost_and_finds_the_crossing():
    pipeline, baseline = line(3.0, 1.0), line(0.1, 1.3)
    results = [result(name, images, cost(images))
               for images in (20_000, 200_000)
               for name, cost in ((TWO_PROCESSES, pipeline), (BASELINE, baseline))]
    model = {entry['contender']: entry for entry in cost_model(results, pipeline=TWO_PROCESSES, baseline=BASELINE)}
    assert model[TWO_PROCESSES]['fixed_s'] == pytest.approx(3.0)
    assert model[TWO_PROCESSES]['marginal_us_per_annotation'] == pytest.approx(1.0)
    assert model[BASELINE]['fixed_s'] == pytest.approx(0.1)
    # 3.0 + 1.0e-6 a = 0.1 + 1.3e-6 a  ->  a = 9.67 M annotations = 483,333 images of 20.
    crossing = model[TWO_PROCESSES]['faster_than_baseline_from_images']
    assert crossing == pytest.approx(2.9 / 0.3e-6 / 20)
    assert pipeline(crossing) == pytest.approx(baseline(crossing))
    assert 'faster_than_baseline_from_images' not in model[BASELINE]


def test_no_crossing_when_the_pipeline_costs_more_per_annotation_and_no_fit_from_one_size():
    results = [result(TWO_PROCESSES, 20_000, 3.5), result(TWO_PROCESSES, 200_000, 9.0),
               result(BASELINE, 20_000, 0.5), result(BASELINE, 200_000, 4.0),
               result('one size only', 20_000, 1.0)]
    model = {entry['contender']: entry for entry in cost_model(results, pipeline=TWO_PROCESSES, baseline=BASELINE)}
    assert 'faster_than_baseline_from_images' not in model[TWO_PROCESSES]
    assert 'one size only' not in model


def test_thresholds_are_fitted_apart():
    results = [result(BASELINE, images, seconds, threshold)
               for threshold, (small, large) in ((0.5, (1.0, 4.0)), (0.0, (2.0, 11.0)))
               for images, seconds in ((20_000, small), (200_000, large))]
    slopes = {entry['threshold']: entry['marginal_us_per_annotation'] for entry in cost_model(results, pipeline=TWO_PROCESSES, baseline=BASELINE)}
    assert slopes[0.5] == pytest.approx(3.0 / 3.6e6 * 1e6)
    assert slopes[0.0] == pytest.approx(9.0 / 3.6e6 * 1e6)


def test_the_pipelines_marginal_cost_is_a_multiple_of_the_anchors():
    duckdb = 'duckdb, 2 threads'
    results = [result(name, images, cost(images))
               for images in (200_000, 1_000_000)
               for name, cost in ((TWO_PROCESSES, line(3.0, 1.2)), (duckdb, line(0.2, 0.4)), (BASELINE, line(0.1, 2.0)))]
    model = {entry['contender']: entry
             for entry in cost_model(results, pipeline=TWO_PROCESSES, baseline=BASELINE, anchor=duckdb)}
    assert model[TWO_PROCESSES]['marginal_vs_anchor'] == pytest.approx(3.0)
    assert 'marginal_vs_anchor' not in model[duckdb] and 'marginal_vs_anchor' not in model[BASELINE]


def timed(fmt, images, contender, seconds, peak_mb=900.0, threshold=0.5):
    return {'format': fmt, 'images': images, 'contender': contender, 'median_s': seconds,
            'peak_mb': peak_mb, 'threshold': threshold}


def test_the_targets_say_which_are_met_from_the_rows_a_run_has():
    results = [timed('legacy', 200_000, TWO_PROCESSES, 10.0), timed('legacy', 200_000, DUCKDB, 4.0),
               timed('vertex', 200_000, TWO_PROCESSES, 10.0, peak_mb=1100), timed('vertex', 200_000, DUCKDB, 2.0),
               timed('legacy', 1_000_000, ONE_PROCESS, 40.0), timed('legacy', 1_000_000, TWO_PROCESSES, 25.0),
               timed('legacy', 1_000_000, DUCKDB, 10.0),
               timed('legacy', 200_000, TWO_PROCESSES, 1.0, threshold=0.0)]  # another threshold: not a target
    model = [{'format': 'legacy', 'threshold': 0.5, 'contender': TWO_PROCESSES, 'marginal_vs_anchor': 1.4},
             {'format': 'vertex', 'threshold': 0.5, 'contender': TWO_PROCESSES, 'marginal_vs_anchor': 3.0}]
    checks = {(c['format'], c['target']): (round(c['measured'], 3), c['met']) for c in target_checks(results, model)}
    assert checks == {
        ('legacy', '200,000 images, 2 processes, x DuckDB wall time'): (2.5, True),  # at the limit: met
        ('legacy', '1,000,000 images, 2 processes, x DuckDB wall time'): (2.5, False),
        ('legacy', '1,000,000 images, 2 processes faster than 1 by'): (1.6, False),
        ('legacy', '200,000 images, 2 processes, peak MB'): (900.0, True),
        ('legacy', '1,000,000 images, 2 processes, peak MB'): (900.0, True),
        ('legacy', 'marginal cost per annotation, 2 processes, x DuckDB'): (1.4, True),
        ('vertex', '200,000 images, 2 processes, x DuckDB wall time'): (5.0, False),
        ('vertex', '200,000 images, 2 processes, peak MB'): (1100.0, False),
        ('vertex', 'marginal cost per annotation, 2 processes, x DuckDB'): (3.0, False),
    }


def test_each_repeat_starts_with_the_next_contender():
    from run import in_turn  # bench/run.py: the benchmark's own loop
    names = {'a': 1, 'b': 2, 'c': 3}
    orders = [in_turn(names, repeat) for repeat in range(4)]
    assert orders == [['a', 'b', 'c'], ['b', 'c', 'a'], ['c', 'a', 'b'], ['a', 'b', 'c']]
    assert in_turn([], 3) == []


def test_the_twelve_numbers_are_held_to_faster_coco_evals():
    from run import twelve_numbers_difference
    anchor = [0.5, 0.7, 0.4, -1.0, 0.3, 0.6, 0.2, 0.5, 0.55, -1.0, 0.35, 0.65]
    names = ['ap', 'ap_50', 'ap_75', 'ap_small', 'ap_medium', 'ap_large', 'ar_1', 'ar_10', 'ar_100', 'ar_small',
             'ar_medium', 'ar_large']
    ours = {name: None if value == -1 else value for name, value in zip(names, anchor)}
    ours['ap'] += 2e-10  # another order of summation
    assert twelve_numbers_difference(ours, anchor) == pytest.approx(2e-10)
    with pytest.raises(AssertionError, match='ar_10 by 0.001'):
        twelve_numbers_difference(ours | {'ar_10': 0.501}, anchor)
    with pytest.raises(AssertionError, match='ap_small: 0.0 here, -1.0'):
        twelve_numbers_difference(ours | {'ap_small': 0.0}, anchor)  # a figure where pycocotools has none
    with pytest.raises(AssertionError, match='ap_large: None here'):
        twelve_numbers_difference(ours | {'ap_large': None}, anchor)
