"""`python -m pipeline`: parse and check the options, build the job, run it, print the summary."""
import dataclasses
import logging
import os
import re
import shutil
import sys
import tempfile
from typing import List, Optional

import apache_beam as beam
from apache_beam.io.filesystem import BeamIOError, CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (DirectOptions, GoogleCloudOptions,
                                                  PipelineOptions, StandardOptions)
from google.api_core.exceptions import GoogleAPIError

from pipeline import geometry
from pipeline import summary as run_summary
from pipeline.job import PredictionsToTables
from pipeline.options import OptionError, Settings, join_path
from pipeline.sinks import prepare_tables
from pipeline.sizes import ManifestError, check_manifest_header
from pipeline.sources import InputError, matched_shards, resolve_input, scheme_of, split_ranges

# Without --runner, batch runs on the FnApiRunner: the DirectRunner of Beam 2.77 would first try to
# download the Prism runner, and these machines are offline. The FnApiRunner does not run unbounded
# sources in real time, so local streaming runs use the bundle-based DirectRunner.
DEFAULT_LOCAL_RUNNER = 'FnApiRunner'
DEFAULT_LOCAL_STREAMING_RUNNER = 'BundleBasedDirectRunner'
_MAX_ROI_BYTES = 16 * 1024 * 1024
LOCAL_RUNNERS = ('FnApiRunner', 'DirectRunner', 'BundleBasedDirectRunner', 'SwitchingDirectRunner')
# A local batch run over at least this much input runs on worker processes, one per core up to
# MAX_LOCAL_WORKERS, unless --direct_num_workers or --direct_running_mode is given. Starting and
# stopping them costs about 1.5 s, which pays from about 400 MB of shards (make bench, threshold 0.5:
# 1 process 1.75 s + 1.81 us per annotation, 2 processes 3.28 s + 0.94 us); each takes ~450 MB.
LOCAL_PARALLEL_MIN_BYTES = 512 * 1024 * 1024
MAX_LOCAL_WORKERS = 8
_DIRECT_FLAGS = ('--direct_num_workers', '--direct_running_mode')


def prepare(argv: Optional[List[str]]):
    """(pipeline options, settings, input pattern or None when streaming); raises on a wrong option
    before any work."""
    argv = sys.argv[1:] if argv is None else argv
    pipeline_options = PipelineOptions(argv)
    settings = Settings.from_pipeline_options(pipeline_options)
    pattern = None if settings.streaming else resolve_input(settings.input)
    if settings.image_sizes:
        try:
            check_manifest_header(settings.image_sizes)
        except ManifestError as exc:
            raise OptionError(f'--image_sizes: {exc}') from None
    if settings.roi is not None:
        settings = dataclasses.replace(settings, roi_wkt=read_roi(settings.roi))
    standard = pipeline_options.view_as(StandardOptions)
    if settings.streaming:
        standard.streaming = True
    if not standard.runner:
        standard.runner = DEFAULT_LOCAL_STREAMING_RUNNER if settings.streaming else DEFAULT_LOCAL_RUNNER
    if pattern and standard.runner == DEFAULT_LOCAL_RUNNER and not any(
            arg.startswith(_DIRECT_FLAGS) for arg in argv):
        use_local_workers(pipeline_options, local_workers(matched_shards(pattern), os.cpu_count() or 1))
    if settings.output and not settings.streaming:
        # A streaming job adds windowed files to what earlier jobs wrote there; nothing is removed.
        clear_output_root(settings)
    if settings.output_table:
        settings = prepare_bigquery(settings, pipeline_options)
    return pipeline_options, settings, pattern


def local_workers(shards, cpus: int) -> int:
    """How many local worker processes a batch run over these shards (path -> size) should use; 1
    runs in this process."""
    if sum(shards.values()) < LOCAL_PARALLEL_MIN_BYTES:
        return 1
    ranges = sum(len(split_ranges(path, size)) for path, size in shards.items())
    return max(1, min(cpus, MAX_LOCAL_WORKERS, ranges))


def use_local_workers(pipeline_options: PipelineOptions, workers: int) -> None:
    """Sets Beam's direct-runner options for `workers` processes, and tells the user why."""
    if workers > 1:
        direct = pipeline_options.view_as(DirectOptions)
        direct.direct_num_workers = workers
        direct.direct_running_mode = 'multi_processing'
        print(f'Large input: running on {workers} local worker processes '
              f'(--direct_num_workers=1 runs in one process)', file=sys.stderr)


def clear_output_root(settings: Settings) -> None:
    """Refuses an output root that holds a completed run unless --overwrite; otherwise removes what
    an earlier run (completed, or killed before its summary) left in our folders, so the output is
    exactly this run's. Files of the user's own in the root are never touched."""
    summary_file = join_path(settings.output, 'summary.json')
    if FileSystems.exists(summary_file) and not settings.overwrite:
        raise OptionError(f'--output: {settings.output} holds a completed run ({summary_file}); '
                          f'pass --overwrite to replace it, or choose another --output')
    folders = [join_path(settings.output, name) for name in ('detections', 'images', 'report')]
    if settings.dead_letter:
        folders.append(settings.dead_letter)
    leftovers = [metadata.path for result in FileSystems.match([join_path(f, '**') for f in folders])
                 for metadata in result.metadata_list]
    for path in (settings.summary, summary_file):
        if path and FileSystems.exists(path):
            leftovers.append(path)
    if leftovers:
        FileSystems.delete(sorted(set(leftovers)))
        logging.warning('Removed %d files left by an earlier run in %s', len(set(leftovers)),
                        settings.output)
    # A killed run also leaves Beam's temporary folders, which a local file system keeps when empty
    # (Cloud Storage has no empty folders).
    for folder in folders:
        if scheme_of(folder) == 'file' and os.path.isdir(folder):
            for name in os.listdir(folder):
                if name.startswith('beam-temp-'):
                    shutil.rmtree(os.path.join(folder, name), ignore_errors=True)


def prepare_bigquery(settings: Settings, pipeline_options: PipelineOptions) -> Settings:
    """Checks what BigQuery output needs, and creates or extends the tables before the run."""
    cloud = pipeline_options.view_as(GoogleCloudOptions)
    if settings.bigquery_method == 'file_loads' and not (cloud.temp_location or '').startswith('gs://'):
        raise OptionError('--temp_location: BigQuery file loads stage their files in Cloud Storage; '
                          'give --temp_location=gs://BUCKET/tmp (or use --bigquery_method=streaming_inserts)')
    if not cloud.project:
        cloud.project = settings.output_table.rpartition(':')[0]
    try:
        prepare_tables(settings)
    except (ValueError, GoogleAPIError) as exc:
        raise OptionError(f'--output_table: {exc}') from None
    return dataclasses.replace(settings, temp_location=cloud.temp_location)


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


class _DropBeamNoise(logging.Filter):
    """Warnings of Beam 2.77 that say nothing about this pipeline: the tags of a ParDo wrapped in
    with_exception_handling "not declared" in its type hints (they are); in streaming file loads,
    the mixed windowing of a Flatten inside Beam's own BigQueryBatchFileLoads; and each local worker
    process's note that it has no semi-persistent directory (only Dataflow workers have one)."""

    def filter(self, record):
        message = record.getMessage()
        return not ('requested in with_outputs() but not declared' in message
                    or ('All input pcollections must have the same window' in message
                        and 'BigQueryBatchFileLoads' in message)
                    or 'No semi_persistent_directory found' in message)


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
    for handler in logging.getLogger().handlers:
        handler.addFilter(_DropBeamNoise())
    try:
        pipeline_options, settings, pattern = prepare(argv)
    except (OptionError, InputError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    local = is_local(pipeline_options)
    if settings.streaming:
        return run_streaming(pipeline_options, settings, local)
    scratch = None
    if local and settings.summary is None:
        # BigQuery output only: the summary still comes back to print, through a scratch file.
        scratch = tempfile.mkdtemp(prefix='prediction-tables-')
        settings = dataclasses.replace(settings, summary=os.path.join(scratch, 'summary.json'))
    pipeline = beam.Pipeline(options=pipeline_options)
    _ = pipeline | 'PredictionsToTables' >> PredictionsToTables(settings, pattern)
    result = pipeline.run()
    if not local:
        print('Job submitted; the run summary will be logged'
              + (f' and written to {settings.summary}' if settings.summary else ''))
        if settings.output and settings.report:
            print(f'When the job has finished: python -m pipeline.report --output {settings.output}')
        return 0
    result.wait_until_finish()
    summary = run_summary.read_summary(settings.summary)
    if scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    print_outcome(summary, settings, summary_file=None if scratch else settings.summary)
    if not summary['reconciliation']['holds']:
        return 1
    return check_dead_letter_ratio(summary, settings.max_dead_letter_ratio)


def run_streaming(pipeline_options: PipelineOptions, settings: Settings, local: bool) -> int:
    """Starts the streaming job; a local one runs in the foreground until it is interrupted."""
    pipeline = beam.Pipeline(options=pipeline_options)
    _ = pipeline | 'PredictionsToTables' >> PredictionsToTables(settings)
    result = pipeline.run()
    where = ', '.join(filter(None, [settings.output, settings.output_table]))
    print(f'Streaming: loading each shard notified on {settings.input_subscription}'
          + (f' under {settings.input}' if settings.input else '') + f' into {where}; counts are the '
          f'Beam counters of namespace prediction_tables'
          + ('. Stop with Ctrl-C.' if local else '. Drain the job to stop it.'), flush=True)
    if local:
        try:
            result.wait_until_finish()
        except KeyboardInterrupt:
            print('Stopped.')
    return 0


def print_outcome(summary, settings: Settings, summary_file: Optional[str]) -> None:
    """The end of a local run's console output: the summary, where it is, and the report."""
    print(run_summary.render(summary))
    files = summary['files']
    if not files['result'] and not files['error']:
        print(f'warning: no result or error shard was found under {settings.input} '
              f'(looked for image_object_detection_N.jsonl, predictions_N.jsonl, errors_N.jsonl, '
              f'and their .gz)', file=sys.stderr)
    if summary_file:
        print(f'Summary: {summary_file}')
    if settings.output and settings.report is not False:
        from pipeline.report import build_report  # pylint: disable=import-outside-toplevel
        path = build_report(settings.output, settings.report_samples,
                            settings.report_image_mirror or {}, settings.dead_letter,
                            settings.probe_allowed_prefixes)
        print(f'Report: {path}')


def check_dead_letter_ratio(summary, limit: Optional[float]) -> int:
    """3 when line dead letters exceed --max_dead_letter_ratio of the non-blank lines, else 0."""
    reconciliation = summary['reconciliation']
    lines, dead = reconciliation['non_blank_lines'], reconciliation['line_dead_letters']
    if limit is None or lines == 0 or dead / lines <= limit:
        return 0
    print(f'error: {dead} of {lines} non-blank lines ({dead / lines:.2%}) went to the dead letters, '
          f'more than --max_dead_letter_ratio={limit}; every output was written', file=sys.stderr)
    return 3
