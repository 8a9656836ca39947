import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SAMPLE = ROOT / 'sample'
SHARED_SAMPLES = ROOT / 'tests' / 'fixtures' / 'shared_samples'


@pytest.fixture
def legacy_lines():
    """The real legacy AutoML result lines (../shared/samples, copied into the repository)."""
    return (SHARED_SAMPLES / 'automl_legacy_image_object_detection.jsonl').read_bytes().splitlines()


@pytest.fixture
def vertex_lines():
    return [line for line in
            (SHARED_SAMPLES / 'vertex_automl_image_object_detection.jsonl').read_bytes().splitlines()
            if line.strip()]
