import pathlib
import subprocess
import sys

import orjson
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SAMPLE = ROOT / 'sample'
SHARED_SAMPLES = ROOT / 'tests' / 'fixtures' / 'shared_samples'
KINDS = ('unit', 'pipeline', 'e2e', 'cloud')  # the folders, and the markers they give their tests

# One valid legacy line, for the tests that build odd inputs around it (parametrized at import time).
GOOD = {'ID': 'gs://b/good.jpg', 'annotations': [{
    'display_name': 'A', 'annotation_spec_id': '1', 'image_object_detection': {
        'score': 0.9, 'bounding_box': {'normalized_vertices': [{'x': 0.1, 'y': 0.1}, {'x': 0.5, 'y': 0.5}]}}}]}
GOOD_LINE = orjson.dumps(GOOD)


def pytest_collection_modifyitems(items):
    """Each test is marked with the kind its folder holds: make test-unit runs unit and pipeline."""
    for item in items:
        kind = pathlib.Path(str(item.fspath)).parent.name
        if kind in KINDS:
            item.add_marker(kind)


def run_pipeline(*args, check=True, **kwargs):
    result = subprocess.run([sys.executable, '-m', 'pipeline', *map(str, args)], cwd=ROOT,
                            capture_output=True, text=True, timeout=900, **kwargs)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope='session')
def run():
    """`python -m pipeline ARGS` as a user runs it; fails unless it exits 0 (check=False: any)."""
    return run_pipeline


def greedy_nms(lines, scores, boxes, classes, threshold):
    """Greedy NMS written the plain way, one line and one pair at a time."""
    def iou(p, q):
        overlap = (max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
                   * max(0.0, min(p[3], q[3]) - max(p[1], q[1])))
        union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - overlap
        return overlap / union if union > 0 else 0.0
    keep = [False] * len(scores)
    for line in set(lines):
        rows = sorted((i for i in range(len(scores)) if lines[i] == line), key=lambda i: (-scores[i], i))
        kept = []
        for i in rows:
            if all(classes[k] != classes[i] or iou(boxes[k], boxes[i]) <= threshold for k in kept):
                kept.append(i)
                keep[i] = True
    return keep


@pytest.fixture(scope='session')
def reference_nms():
    """The plain reference that NMS must agree with."""
    return greedy_nms


@pytest.fixture
def legacy_lines():
    """The real legacy AutoML result lines (../shared/samples, copied into the repository)."""
    return (SHARED_SAMPLES / 'automl_legacy_image_object_detection.jsonl').read_bytes().splitlines()


@pytest.fixture
def vertex_lines():
    return [line for line in
            (SHARED_SAMPLES / 'vertex_automl_image_object_detection.jsonl').read_bytes().splitlines()
            if line.strip()]
