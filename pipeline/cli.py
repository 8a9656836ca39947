"""`python -m pipeline`: parse and check the options, build the job, run it, print the summary."""
import dataclasses
import logging
import re
import sys
from typing import List, Optional

import apache_beam as beam
from apache_beam.io.filesystem import BeamIOError, CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipeline import geometry
from pipeline import summary as run_summary
from pipeline.job import PredictionsToTables
from pipeline.options import OptionError, Settings
from pipeline.sizes import ManifestError, check_manifest_header
from pipeline.sources import InputError, resolve_input

# Without --runner, batch runs on the FnApiRunner: the DirectRunner of Beam 2.77 would first try to
# download the Prism runner, and these machines are offline.
DEFAULT_LOCAL_RUNNER = 'FnApiRunner'
_MAX_ROI_BYTES = 16 * 1024 * 1024
LOCAL_RUNNERS = ('FnApiRunner', 'DirectRunner', 'BundleBasedDirectRunner', 'SwitchingDirectRunner')


def prepare(argv: Optional[List[str]]):
    """(pipeline options, settings, input pattern); raises on a wrong option before any work."""
    pipeline_options = PipelineOptions(argv)
    settings = Settings.from_pipeline_options(pipeline_options)
    pattern = resolve_input(settings.input)
    if settings.image_sizes:
        try:
            check_manifest_header(settings.image_sizes)
        except ManifestError as exc:
            raise OptionError(f'--image_sizes: {exc}') from None
    if settings.roi is not None:
        settings = dataclasses.replace(settings, roi_wkt=read_roi(settings.roi))
    standard = pipeline_options.view_as(StandardOptions)
    if not standard.runner:
        standard.runner = DEFAULT_LOCAL_RUNNER
    return pipeline_options, settings, pattern


def read_roi(value: str) -> str:
    """The --roi region as WKT: given inline, or read from a file (local or gs://); validated."""
    text = value.strip()
    if not re.match(r'(?i)^\s*(MULTI)?POLYGON\b', text):
        try:
            with FileSystems.open(text, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
                text = handle.read(_MAX_ROI_BYTES).decode('utf-8').strip()
        except (OSError, UnicodeDecodeError, BeamIOError) as exc:
            raise OptionError(f'--roi: {value!r} is neither WKT (POLYGON or MULTIPOLYGON) nor a '
                              f'readable file: {exc}') from None
    try:
        geometry.parse_roi(text)
    except ValueError as exc:
        raise OptionError(f'--roi: {exc}') from None
    return text


def is_local(pipeline_options: PipelineOptions) -> bool:
    runner = pipeline_options.view_as(StandardOptions).runner or DEFAULT_LOCAL_RUNNER
    return runner.rsplit('.', 1)[-1] in LOCAL_RUNNERS


class _DropBeamTagWarning(logging.Filter):
    """Beam 2.77 warns, wrongly, that the tags of a ParDo wrapped in with_exception_handling are not
    declared in its type hints; the warning says nothing about this pipeline."""

    def filter(self, record):
        return 'requested in with_outputs() but not declared' not in record.getMessage()


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
    for handler in logging.getLogger().handlers:
        handler.addFilter(_DropBeamTagWarning())
    try:
        pipeline_options, settings, pattern = prepare(argv if argv is not None else sys.argv[1:])
    except (OptionError, InputError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    pipeline = beam.Pipeline(options=pipeline_options)
    _ = pipeline | 'PredictionsToTables' >> PredictionsToTables(settings, pattern)
    result = pipeline.run()
    if not is_local(pipeline_options):
        print(f'Job submitted; the summary will be written to {run_summary.summary_path(settings)}')
        return 0
    result.wait_until_finish()
    summary = run_summary.read_summary(run_summary.summary_path(settings))
    print(run_summary.render(summary))
    files = summary['files']
    if not files['result'] and not files['error']:
        print(f'warning: no result or error shard was found under {settings.input} '
              f'(looked for image_object_detection_N.jsonl, predictions_N.jsonl, errors_N.jsonl, '
              f'and their .gz)', file=sys.stderr)
    print(f'Summary: {run_summary.summary_path(settings)}')
    return 0 if summary['reconciliation']['holds'] else 1
