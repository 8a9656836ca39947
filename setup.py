"""Packaging for the prediction-tables pipeline.

The pins below are the one place dependency versions live: `make` installs the package with them,
and Dataflow workers install it from this file (`--setup_file` or the Flex Template image).
"""
import re

import setuptools

with open('pipeline/__init__.py', encoding='utf-8') as handle:
    VERSION = re.search(r"__version__ = '([^']+)'", handle.read()).group(1)

INSTALL_REQUIRES = [
    'apache-beam[gcp]==2.77.0',
    'orjson==3.13.0',  # the full validator, and JSON written
    'msgspec==0.22.0',  # the typed decoder of result lines
    'tqdm==4.70.1',  # the live progress bar of a local run
    'shapely==2.2.0',
    'pyarrow==25.0.1',  # Beam 2.77 caps pyarrow below 26
    'numpy==2.4.6',
    'pillow==12.3.0',  # Beam 2.77 caps pillow below 13
    'matplotlib==3.11.2',  # the run report's charts
]

EXTRAS_REQUIRE = {
    'test': [
        'pytest==9.2.0',
        'ruff==0.17.6',  # make lint
        'mypy==2.4.1',  # make lint
        'pytest-xdist==3.8.0',
        'hypothesis==6.170.15',
        'pycocotools==2.0.11',  # the reference for detection metrics
        'tidecv==1.0.1',  # the reference for the error types, with what it imports
        'opencv-python==5.1.0.95',
        'pandas==3.1.1',
        'seaborn==0.13.2',
        'appdirs==1.4.4',
        # Local stand-ins for Cloud Storage and BigQuery, started by the tests.
        'gcp-storage-emulator==2026.7.19',
        'bqemulator==1.4.0',
        'duckdb==1.5.5',  # bqemulator's engine; 1.5.5 matches the spatial extension below
        'duckdb-extension-spatial==1.5.5',
        'psutil==7.2.2',  # the local workers' tests watch the processes of a run
    ],
    'bench': [
        'duckdb==1.5.5',
        'faster-coco-eval==1.8.0',  # the evaluation's anchor
        'psutil==7.2.2',
        'pyinstrument==5.1.3',
    ],
}

setuptools.setup(
    name='prediction-tables',
    version=VERSION,
    description=('Turns object-detection batch prediction output (AutoML Vision and Vertex AI) '
                 'into Parquet or BigQuery tables, with a dead-letter sink.'),
    packages=setuptools.find_packages(include=['pipeline', 'pipeline.*']),
    python_requires='>=3.10',
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
