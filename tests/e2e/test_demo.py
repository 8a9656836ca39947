"""The evaluation demo a newcomer runs with `make demo` (issue 24, 7b): the same figures from the
ground truth in each of its three formats, the better model ahead, and nothing to warn about."""
import json

import pytest

from pipeline.tools.demo import BUCKET, RUNS, write_demo

FORMATS = {'coco.json': ['--ground_truth_image_prefix', BUCKET], 'automl.csv': [], 'vertex_import.jsonl': []}


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp('demo')
    write_demo(str(folder), images=12, seed=3)
    return folder


def test_the_demo_is_the_same_for_the_same_seed(demo, tmp_path):
    write_demo(str(tmp_path), images=12, seed=3)
    for path in ('ground_truth/coco.json', 'ground_truth/automl.csv', f'input/{RUNS[0][0]}/predictions_00001.jsonl'):
        assert (tmp_path / path).read_bytes() == (demo / path).read_bytes()


def test_each_ground_truth_format_gives_the_same_figures_and_the_better_model_leads(run, demo, tmp_path):
    figures = {}
    for name, extra in FORMATS.items():
        out = tmp_path / name
        run('--input', demo / 'input', '--output', out, '--image_sizes', demo / 'image_sizes.csv',
            '--ground_truth', demo / 'ground_truth' / name, *extra, '--fail_on_warning', '--report=false')
        runs = json.loads((out / 'evaluation' / 'metrics.json').read_text())['runs']
        figures[name] = {entry['prediction_run']: (entry['map'], entry['map_50'], entry['mar']) for entry in runs}
        assert json.loads((out / 'summary.json').read_text())['warnings'] == []
    first = figures['coco.json']
    for name in FORMATS:
        for run_name, values in figures[name].items():
            assert values == pytest.approx(first[run_name], abs=1e-9), name
    better, weaker = RUNS[0][0], RUNS[1][0]
    assert first[better][0] > first[weaker][0] + 0.2
