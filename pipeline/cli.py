"""`python -m pipeline`: parse and check the options, build the job, run it, print the summary."""
import datetime
import difflib
import functools
import logging
import os
import re
import shutil
import sys
import tempfile
import textwrap
import uuid
from contextlib import nullcontext
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.io.filesystem import BeamIOError, CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (
    DirectOptions,
    GoogleCloudOptions,
    PipelineOptions,
    StandardOptions,
    TestOptions,
    _BeamArgumentParser,
)
from google.api_core.exceptions import GoogleAPIError

import pipeline
from pipeline.config.options import (
    LOCATION_OPTIONS,
    MODES,
    OPTION_GROUPS,
    OPTIONS,
    OPTIONS_BY_NAME,
    OptionError,
    PredictionTableOptions,
    ThresholdsFile,
    parse_output_path,
    pattern_problem,
)
from pipeline.config.settings import EvaluationSettings, Settings, SliceSettings, required
from pipeline.core import geometry
from pipeline.core import summary as run_summary
from pipeline.core.evaluation import bucket_count
from pipeline.core.operating_thresholds import read_csv_thresholds
from pipeline.core.outputs import OutputLayout, overlaps_with_input
from pipeline.core.run_warnings import render as render_warnings
from pipeline.core.shards import annotations_estimate, prediction_run, run_names, scheme_of, split_ranges
from pipeline.io import summary_files
from pipeline.io.attribute_files import AttributeFileError, resolve_image_attributes
from pipeline.io.bigquery import prepare_tables
from pipeline.io.local_workers import PreloadedWorkers, runner_starting
from pipeline.io.locks import RunLock
from pipeline.io.provision import provision, release_untouched
from pipeline.io.reachability import cloud_storage_problem
from pipeline.io.sizes import ManifestError, check_manifest
from pipeline.io.sources import InputError, check_holds_shards, input_root, matched_shards, resolve_input
from pipeline.io.spill import make_spill_folder, remove_spill_folder
from pipeline.io.truth_files import GroundTruthError, resolve_ground_truth
from pipeline.tools.progress import ProgressDisplay
from pipeline.tools.template import shown_default
from pipeline.transforms.job import PredictionsToTables, StreamingPredictionsToTables

# Without --runner, batch runs on the FnApiRunner: the DirectRunner of Beam 2.77 would first try to
# download the Prism runner, and these machines are offline. The FnApiRunner does not run unbounded
# sources in real time, so local streaming runs use the bundle-based DirectRunner.
DEFAULT_LOCAL_RUNNER = 'FnApiRunner'
DEFAULT_LOCAL_STREAMING_RUNNER = 'BundleBasedDirectRunner'
_MAX_ROI_BYTES = 16 * 1024 * 1024
_MAX_THRESHOLDS_BYTES = 16 * 1024 * 1024  # a thresholds.csv holds a row per run and label
LOCAL_RUNNERS = ('FnApiRunner', 'DirectRunner', 'BundleBasedDirectRunner', 'SwitchingDirectRunner')
# A local batch run over about this many annotations or more runs on worker processes, one per core up
# to MAX_LOCAL_WORKERS, unless --direct_num_workers or --direct_running_mode is given: starting them has
# a fixed cost that only a large input repays. Where 2 processes and 1 cross in the benchmark, in
# either format (docs/benchmark.md): with workers forked from the launcher (io.local_workers), about
# 1.5 M annotations (350 MB of legacy shards, 140 MB of Vertex AI ones); where Beam starts each worker
# as a new Python, 3.4 M (770 and 320 MB).
LOCAL_PARALLEL_MIN_ANNOTATIONS = 1_500_000
SPAWNED_WORKERS_MIN_ANNOTATIONS = 3_400_000
MAX_LOCAL_WORKERS = 8
_DIRECT_FLAGS = ('--direct_num_workers', '--direct_running_mode')
QUIET_FLAG = '--quiet'  # of the launcher alone: no progress on stderr
# Set in the template image (templates/Dockerfile): the process is the Flex Template launcher.
FLEX_TEMPLATE_VARIABLE = 'FLEX_TEMPLATE_PYTHON_PY_FILE'


class LaunchPlan(NamedTuple):
    """What validation settled, before any work: Beam's options, ours, the input pattern (None when
    streaming) and the places the run writes."""
    pipeline_options: PipelineOptions
    settings: Settings
    pattern: Optional[str]
    layout: Optional[OutputLayout]


def prepare(argv: Optional[List[str]], quiet: bool = False) -> LaunchPlan:
    """Checks every argument, option, the input, the manifest and the region, and where the run would
    write, and resolves what follows from them; raises OptionError or InputError before anything is
    written or removed. `quiet`: a local batch run shows no progress."""
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='milliseconds')
    argv = sys.argv[1:] if argv is None else argv
    check_arguments(argv)
    pipeline_options = PipelineOptions(argv)
    settings = Settings.from_pipeline_options(pipeline_options)
    check_cloud_storage_reachable(pipeline_options, settings.is_streaming)
    pattern = None if settings.is_streaming else resolve_input(required(settings.input.input, 'input'))
    if settings.sizes.image_sizes:
        try:
            check_manifest(settings.sizes.image_sizes)
        except ManifestError as exc:
            raise OptionError(f'--image_sizes: {exc}') from None
    standard = pipeline_options.view_as(StandardOptions)
    if settings.is_streaming:
        standard.streaming = True
    if not standard.runner:
        standard.runner = DEFAULT_LOCAL_STREAMING_RUNNER if settings.is_streaming else DEFAULT_LOCAL_RUNNER
    local = is_local(pipeline_options)
    if not local and not is_dry_run(pipeline_options):
        check_remote_paths(settings, pattern)
    layout = None if pattern is None else output_layout(settings, local, pattern)
    cloud = pipeline_options.view_as(GoogleCloudOptions)
    if settings.bigquery.output_table:
        check_bigquery_options(settings, cloud)
    skip = layout.is_ours_to_skip if layout else None
    input_shards = functools.cache(lambda: matched_shards(required(pattern, 'input'), skip))  # listed once
    if pattern is not None:
        check_input(pattern, skip, input_shards)
    run_names_ = shared_run_names(pattern, input_shards) if pattern else ()
    settings = settings.resolved(
        input={'run_names': run_names_},
        evaluation={**resolved_evaluation(settings.evaluation, input_shards, skip, dict(run_names_),
                                          settings.joined),
                    'fixed_image_size': settings.sizes.image_size},
        export={'buckets': input_buckets(input_shards)} if settings.export.enabled else {},
        slices=resolved_slices(settings.slices, skip),
        launch={'run_id': uuid.uuid4().hex, 'started': started, 'command_line': tuple(argv),
                'tool_version': pipeline.__version__,
                'options': given_options(pipeline_options),
                'progress': local and pattern is not None and not quiet,
                # A Dataflow job outlives its launcher: it releases its Cloud Storage locks itself.
                'job_locks': tuple(lock for lock in (layout.lock_files if layout and not local else ())
                                   if scheme_of(lock) == 'gs')},
        outputs={} if layout is None else {'output': layout.output, 'dead_letter': layout.dead_letter,
                                           'summary': layout.summary, 'report_file': layout.report},
        postprocessing={'roi_wkt': read_roi(settings.postprocessing.roi)
                        if settings.postprocessing.roi is not None else None,
                        **file_thresholds(settings.postprocessing.label_thresholds, input_shards, dict(run_names_),
                                          quiet)},
        # Streaming without --input: the notified shards are Cloud Storage objects.
        sizes={'allowed_scheme': scheme_of(pattern) if pattern else 'gs'},
        bigquery={'temp_location': cloud.temp_location})
    if pattern and layout and standard.runner == DEFAULT_LOCAL_RUNNER and not any(
            arg.startswith(_DIRECT_FLAGS) for arg in argv):
        use_local_workers(pipeline_options, local_workers(input_shards(), os.cpu_count() or 1,
                                                          forked=PreloadedWorkers.available(2)))
    return LaunchPlan(pipeline_options, settings, pattern, layout)


def check_cloud_storage_reachable(pipeline_options: PipelineOptions, streaming: bool) -> None:
    """Raises InputError, in seconds, when a location that the launch lists or reads is on gs:// and
    Cloud Storage cannot be reached (Beam's client would retry each listing for two minutes, then
    fail with a traceback). A streaming launch leaves its outputs to the workers."""
    values = pipeline_options.view_as(PredictionTableOptions).get_all_options()
    remote = [name for name in LOCATION_OPTIONS if str(values.get(name) or '').startswith('gs://')
              and not (streaming and OPTIONS_BY_NAME[name].parse is parse_output_path)]
    if not remote:
        return
    problem = cloud_storage_problem()
    if problem:
        named = ', '.join(f'--{name}' for name in remote)
        raise InputError(f'{named}: Cloud Storage cannot be reached from here: {problem}. Check the '
                         f'network (or HTTPS_PROXY), or give local paths; nothing was read or written')


def check_input(pattern: str, skip, input_shards) -> None:
    """Raises InputError when the input holds no shard, saying what it holds instead; a listing that
    fails here is left for the run's own reading to report, file by file."""
    try:
        shards = input_shards()
    except Exception as exc:
        logging.getLogger(__name__).warning('Listing the input at launch failed (%s)', exc)
        return
    if not shards:
        check_holds_shards(pattern, skip)


def input_buckets(input_shards) -> int:
    """The buckets the exported lines meet in, by the input's size (one when the listing fails)."""
    try:
        return bucket_count(sum(input_shards().values()))
    except Exception:
        return 1


def shared_run_names(pattern: str, input_shards) -> Tuple[Tuple[str, str], ...]:
    """The run folders whose name another one shares, named by their path under the input (none when
    the listing fails: check_input has said so)."""
    try:
        return tuple(sorted(run_names(input_shards(), input_root(pattern)).items()))
    except Exception:
        return ()


def resolved_evaluation(evaluation: EvaluationSettings, input_shards, skip, renamed: Dict[str, str],
                        joined: bool) -> dict:
    """The ground-truth files with their formats, the count of evaluation buckets from the size of the
    input (`input_shards`: path -> size), the input's prediction runs and the base run of a comparison;
    raises OptionError."""
    if not joined:  # nothing meets by bucket: no ground truth, comparison or slices
        return {}
    files: Tuple[Tuple[str, str], ...] = ()
    if evaluation.enabled:
        try:
            files = tuple(resolve_ground_truth(required(evaluation.ground_truth, 'ground_truth'),
                                               evaluation.ground_truth_format, skip))
        except GroundTruthError as exc:
            raise OptionError(str(exc)) from None
    try:
        shards = input_shards()
    except Exception:  # check_input has said so; the runs are then those of the lines read
        shards = {}
    runs = tuple(sorted({prediction_run(path, renamed) for path in shards},
                        key=lambda run: (run is not None, run or '')))
    base = () if evaluation.compare_to is None else (compare_base(evaluation.compare_to, runs),)
    return {'ground_truth_files': files, 'buckets': bucket_count(sum(shards.values())), 'runs': runs,
            'compare_base': base}


def resolved_slices(slices: SliceSettings, skip) -> dict:
    """The image-attribute files with their formats, each checked for the columns --slice_by names;
    raises OptionError."""
    if not slices.attributes:
        return {}
    try:
        return {'attribute_files': tuple(resolve_image_attributes(
            required(slices.image_attributes, 'image_attributes'), slices.image_attributes_key, slices.attributes,
            skip))}
    except AttributeFileError as exc:
        raise OptionError(str(exc)) from None


def compare_base(given: str, runs: Sequence[Optional[str]]) -> Optional[str]:
    """The run --compare_to names among the input's (`first`: the first in name order); raises
    OptionError when the input has fewer than two runs or not this one."""
    shown = ', '.join('(no run folder)' if run is None else run for run in runs) or 'none'
    if len(runs) < 2:
        raise OptionError(f'--compare_to: the input holds {len(runs)} prediction run(s) ({shown}); a comparison '
                          'needs two or more (give a prefix that holds the run folders)')
    if given == 'first':
        return runs[0]
    if given not in runs:
        raise OptionError(f'--compare_to: no prediction run {given!r} in the input; its runs: {shown} (or give '
                          'first)')
    return given


def output_layout(settings: Settings, local: bool, pattern: str) -> OutputLayout:
    """Where a batch run writes, local locations in full (as the input's: summaries then list files
    wherever a rerun starts), checked against the input."""
    outputs = settings.outputs
    report = settings.report.report if settings.report.report is not None else local
    layout = OutputLayout.of(absolute(outputs.output), absolute(outputs.dead_letter),
                             absolute(outputs.summary), report,
                             evaluation=settings.evaluation.enabled or settings.slices.enabled,
                             export=settings.export.enabled, comparison=settings.evaluation.compare_to is not None)
    check_locations(layout, required(settings.input.input, 'input'), pattern)
    return layout


def check_arguments(argv: Sequence[str]) -> None:
    """Every argument is one of our options or one of Beam's, spelled out in full (Beam would only
    warn and drop it, and a misspelled threshold would quietly filter nothing)."""
    parser = _BeamArgumentParser(allow_abbrev=False, add_help=False)
    for options_class in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
        options_class._add_argparse_args(parser)
    try:
        _, unknown = parser.parse_known_args(list(argv))
    except SystemExit:
        raise OptionError('an argument has a value of the wrong kind (see the message above)') from None
    known = sorted(option for action in parser._actions
                   for option in action.option_strings)
    repeated = repeated_options(argv)
    if repeated and not os.environ.get(FLEX_TEMPLATE_VARIABLE):
        raise OptionError(', '.join(f'--{name}' for name in repeated) + ' given twice: give each option once '
                          '(only the last would count)')
    problems = []
    for index, arg in enumerate(unknown):
        if arg.startswith('-'):
            name = arg.split('=', 1)[0]
            guess = difflib.get_close_matches(name, known, n=1)
            problems.append(f'{name}' + (f' (did you mean {guess[0]}?)' if guess else ''))
        elif index == 0 or not unknown[index - 1].startswith('-') or '=' in unknown[index - 1]:
            problems.append(f'{arg!r} (a value without an option)')
    if not problems:
        return
    message = ('unknown argument: ' + '; '.join(problems) + '. Options are written in full '
               '(python -m pipeline --help lists them)')
    if os.environ.get(FLEX_TEMPLATE_VARIABLE):
        # Under the Flex Template launcher the template metadata has already checked the user's
        # parameters; what is left comes from Dataflow itself and must not stop the launch.
        logging.warning('%s', message)
        return
    raise OptionError(message)


REMOTE_PATHS = ('input', 'output', 'dead_letter', 'summary', 'ground_truth', 'image_sizes', 'image_attributes')


def check_remote_paths(settings: Settings, pattern: Optional[str]) -> None:
    """A job on remote workers reads and writes Cloud Storage: a local path would be the workers' own
    disks, and the outputs would vanish with them. (A local operation JSON may name a gs:// input.)"""
    values: Dict[str, Optional[str]] = {
        'input': pattern, 'output': settings.outputs.output, 'dead_letter': settings.outputs.dead_letter,
        'summary': settings.outputs.summary, 'ground_truth': settings.evaluation.ground_truth,
        'image_sizes': settings.sizes.image_sizes, 'image_attributes': settings.slices.image_attributes}
    for name in REMOTE_PATHS:
        value = values[name]
        if value and scheme_of(value) == 'file':
            raise OptionError(f'--{name}: {value!r} is a local path, which the workers of a remote runner '
                              f'cannot reach; give a gs:// location (or leave out --runner for a local run)')


def repeated_options(argv: Sequence[str]) -> List[str]:
    """Our options given more than once: Beam keeps the last, and the first would quietly not count."""
    seen: Dict[str, int] = {}
    for arg in argv:
        if arg.startswith('--'):
            name = arg[2:].split('=', 1)[0]
            if name in OPTIONS_BY_NAME:
                seen[name] = seen.get(name, 0) + 1
    return [name for name, count in seen.items() if count > 1]


def absolute(path: Optional[str]) -> Optional[str]:
    return os.path.abspath(path) if path and scheme_of(path) == 'file' else path


def check_locations(layout: OutputLayout, raw_input: str, pattern: str) -> None:
    """An output location equal to the input would read and remove the input: refused. One inside
    it, or holding it, is fine: each side leaves the other's files alone. Dead letters or a summary
    inside a table folder would make that table unreadable: refused. So is a location whose full path
    (a relative one with the working folder's) holds a pattern character."""
    for name, value in layout.locations().items():
        problem = pattern_problem(value)
        if problem:
            raise OptionError(f'--{name}: {problem}')
    for name, value in layout.inside_tables():
        raise OptionError(f'--{name}: {value} lies inside {layout.output}/detections or /images, '
                          f'which hold the Parquet tables only; choose another location')
    locations = [raw_input.strip(), input_root(pattern)]
    if scheme_of(raw_input) == 'file':
        locations = [os.path.realpath(location) for location in locations]
        layout_real = OutputLayout(*(os.path.realpath(value) if value and scheme_of(value) == 'file'
                                     else value for value in layout))
    else:
        layout_real = layout
    for name, value in overlaps_with_input(layout_real, locations):
        raise OptionError(f'--{name}: {value} is the input itself; write the outputs elsewhere '
                          f'(a folder inside the input is fine)')


def provision_outputs(plan: LaunchPlan) -> List[RunLock]:
    """Takes the locks and clears what earlier runs of ours left (batch), prepares the BigQuery
    tables; raises OptionError."""
    locks = []
    if plan.layout is not None:
        settings = plan.settings
        locks = provision(plan.layout, settings.outputs.overwrite, required(settings.launch.run_id, 'run_id'),
                          settings.input.input)
    try:
        if plan.settings.bigquery.output_table:
            prepare_tables(plan.settings.bigquery, evaluation=plan.settings.evaluation.enabled,
                           comparison=bool(plan.settings.evaluation.compare_base), slices=plan.settings.slices.enabled)
    except (ValueError, GoogleAPIError) as exc:
        release_untouched(locks)
        raise OptionError(f'--output_table: {exc}') from None
    except BaseException:
        release_untouched(locks)
        raise
    return locks


def given_options(pipeline_options: PipelineOptions) -> Tuple[Tuple[str, str], ...]:
    """Our options the command line gave, as given (name, text), in the options' order."""
    raw = pipeline_options.view_as(PredictionTableOptions).get_all_options()
    return tuple((option.name, str(raw[option.name])) for option in OPTIONS if raw.get(option.name) is not None)


def local_workers(shards, cpus: int, forked: bool = True) -> int:
    """How many local worker processes a batch run over these shards (path -> size) should use; 1
    runs in this process. `forked`: whether the workers can be forked from this process, which makes
    them pay from a smaller input."""
    least = LOCAL_PARALLEL_MIN_ANNOTATIONS if forked else SPAWNED_WORKERS_MIN_ANNOTATIONS
    if sum(annotations_estimate(path, size) for path, size in shards.items()) < least:
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


def check_bigquery_options(settings: Settings, cloud: GoogleCloudOptions) -> None:
    """What BigQuery output needs from Beam's options; the project defaults to the table's."""
    if settings.bigquery.bigquery_method == 'file_loads' and not (cloud.temp_location or '').startswith('gs://'):
        raise OptionError('--temp_location: BigQuery file loads stage their files in Cloud Storage; '
                          'give --temp_location=gs://BUCKET/tmp (or use --bigquery_method=streaming_inserts)')
    if not cloud.project:
        cloud.project = required(settings.bigquery.output_table, 'output_table').rpartition(':')[0]


def file_thresholds(given, input_shards, renamed: Dict[str, str], quiet: bool) -> dict:
    """`--label_thresholds @FILE` read (local or gs://): the thresholds of the file's run, or of the
    input's one run when the file holds several; the labels the file has none for keep
    --score_threshold, and the launch says so. {} when the option is not a file."""
    if not isinstance(given, ThresholdsFile):
        return {}
    try:
        text = read_launch_file(given.path, _MAX_THRESHOLDS_BYTES)
    except (OSError, ValueError, BeamIOError) as exc:
        raise OptionError(f'--label_thresholds: @{given.path} cannot be read ({exc}); @FILE takes the whole '
                          'value: to change a label\'s threshold, edit the file') from None
    try:
        runs = [prediction_run(path, renamed) for path in input_shards()]
    except Exception:  # check_input has said so
        runs = []
    try:
        read = read_csv_thresholds(text, runs)
    except ValueError as exc:
        raise OptionError(f'--label_thresholds: @{given.path}: {exc}') from None
    if read.without and not quiet:
        print(f'--label_thresholds: {len(read.without)} label(s) have no threshold in {given.path} and keep '
              f'--score_threshold: ' + '; '.join(f'{label} ({why})' for label, why in sorted(read.without.items())),
              file=sys.stderr)
    return {'label_thresholds': read.thresholds}


def read_launch_file(path: str, limit: int) -> str:
    """A small text file an option names (local or gs://), read whole at launch; raises ValueError
    when it is not UTF-8 or holds more than `limit` bytes (it is then not what the option reads)."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f'it holds over {limit:,} bytes')
    return data.decode('utf-8-sig')  # UnicodeDecodeError is a ValueError


def read_roi(value: str) -> str:
    """The --roi region as WKT: given inline, or read from a file (local or gs://); validated."""
    text = value.strip()
    if not re.match(r'(?i)^\s*(MULTI)?POLYGON\b', text):
        try:
            text = read_launch_file(text, _MAX_ROI_BYTES).strip()
        except (OSError, ValueError, BeamIOError) as exc:
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
                    or 'No semi_persistent_directory found' in message
                    or 'direct_running_mode should be `multi_processing` or `multi_threading`' in message)


EXIT_RECONCILIATION_FAILED = 1
EXIT_BAD_LAUNCH = 2
EXIT_TOO_MANY_DEAD_LETTERS = 3
EXIT_REPORT_FAILED = 4
EXIT_RUN_FAILED = 5
EXIT_WARNINGS = 6
EXIT_GROUND_TRUTH_UNUSABLE = 7


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
    for handler in logging.getLogger().handlers:
        handler.addFilter(_DropBeamNoise())
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(arg in ('-h', '--help') for arg in argv):
        try:
            print(help_text(), flush=True)
        except BrokenPipeError:  # `--help | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if '--version' in argv:
        print(f'prediction-tables {pipeline.__version__} (Apache Beam {beam.__version__})')
        return 0
    quiet = QUIET_FLAG in argv
    argv = [arg for arg in argv if arg != QUIET_FLAG]
    try:
        plan = prepare(argv, quiet)
        local = is_local(plan.pipeline_options)
        if is_dry_run(plan.pipeline_options):
            return dry_run(plan)
        locks = provision_outputs(plan)
    except (OptionError, InputError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return EXIT_BAD_LAUNCH
    settings = plan.settings
    if settings.is_streaming:
        return run_streaming(plan.pipeline_options, settings, local)
    completed = submitted = False
    try:
        code, completed, submitted = run_batch(plan, settings, local)
    except Exception as exc:
        logging.getLogger(__name__).error('The run failed', exc_info=True)
        print(f'error: the run failed ({type(exc).__name__}: {exc}); it wrote no summary, so nothing of '
              f'it counts as complete: the next run into the same place replaces what it left',
              file=sys.stderr)
        code = EXIT_RUN_FAILED
    finally:
        if local or not submitted:  # a submitted Dataflow job releases its own locks
            for lock in locks:
                lock.release(keep=not completed)
    return code


def batch_layout(plan: LaunchPlan) -> OutputLayout:
    """The output layout, which every batch run has."""
    assert plan.layout is not None, 'a batch run has an output layout'
    return plan.layout


def is_dry_run(pipeline_options: PipelineOptions) -> bool:
    return bool(pipeline_options.view_as(TestOptions).dry_run)


def dry_run(plan: LaunchPlan) -> int:
    """Beam's --dry_run: the runner builds the whole job (the DataflowRunner offline, with --no_auth)
    and submits nothing, so nothing is provisioned either: no lock, no file removed, no table made."""
    pipeline = beam.Pipeline(options=plan.pipeline_options)
    if plan.settings.is_streaming:
        _ = pipeline | 'PredictionsToTables' >> StreamingPredictionsToTables(plan.settings)
    else:
        _ = pipeline | 'PredictionsToTables' >> PredictionsToTables(
            plan.settings, required(plan.pattern, 'input'), skip=batch_layout(plan).is_ours_to_skip)
    runner_starting()
    result = pipeline.run()
    runner = plan.pipeline_options.view_as(StandardOptions).runner
    job = getattr(result, 'job', None)  # the DataflowRunner's: the job it would have submitted
    built = (f' ({len(job.proto_pipeline.components.transforms)} transforms)'
             if job is not None and hasattr(job, 'proto_pipeline') else '')
    print(f'Dry run: the {plan.settings.mode} job was built for {runner}{built}; nothing was submitted, '
          f'and no lock, file or table was touched')
    return 0


def run_batch(plan: LaunchPlan, settings: Settings, local: bool) -> Tuple[int, bool, bool]:
    """(exit code, whether the summary was written, whether a remote job was submitted)."""
    scratch = None
    if local and settings.outputs.summary is None:
        # BigQuery output only: the summary still comes back to print, through a scratch file.
        scratch = tempfile.mkdtemp(prefix='prediction-tables-')
        settings = settings.resolved(outputs={'summary': os.path.join(scratch, 'summary.json')})
    spill = make_spill_folder() if local and (settings.joined or settings.export.enabled) else None
    if spill:
        settings = settings.resolved(evaluation={'spill_folder': spill})
    try:
        try:
            run_pipeline(plan, settings, local)
        finally:
            remove_spill_folder(spill)  # the local run is over, failed or not (a Dataflow job has none)
        if not local:
            print_submitted(plan, settings)
            return 0, False, True
        summary = summary_files.read_summary(required(settings.outputs.summary, 'summary'))
    finally:
        if scratch:  # ours, made above: gone whether the run succeeded or not
            shutil.rmtree(scratch, ignore_errors=True)
    report_ok = print_outcome(summary, settings, summary_file=None if scratch else settings.outputs.summary)
    if not summary['reconciliation']['holds']:
        return EXIT_RECONCILIATION_FAILED, True, False
    code = check_ground_truth_used(summary) or check_dead_letter_ratio(summary, settings.outputs.max_dead_letter_ratio)
    if not code and summary.get('warnings') and settings.outputs.fail_on_warning:
        print(f'error: the run ended with {len(summary["warnings"])} warning(s) and --fail_on_warning is '
              f'set; every output was written', file=sys.stderr)
        code = EXIT_WARNINGS
    return code or (0 if report_ok else EXIT_REPORT_FAILED), True, False


def run_pipeline(plan: LaunchPlan, settings: Settings, local: bool) -> None:
    """Builds the batch job and runs it: to its end on a local runner, to its submission otherwise."""
    workers = preloaded_worker_count(plan.pipeline_options) if local else 0
    preloaded = PreloadedWorkers.start(workers) if workers else None  # None: Beam starts the workers
    with preloaded or nullcontext():
        runner = None if preloaded is None else preloaded_runner(plan.pipeline_options, preloaded)
        pipeline = beam.Pipeline(runner=runner, options=plan.pipeline_options)
        pattern, skip = required(plan.pattern, 'input'), batch_layout(plan).is_ours_to_skip
        _ = pipeline | 'PredictionsToTables' >> PredictionsToTables(settings, pattern, skip=skip)
        with progress_display(pattern, skip) if settings.launch.progress else nullcontext():
            runner_starting()
            result = pipeline.run()  # a local runner returns when the pipeline has run
        if local:
            result.wait_until_finish()


def preloaded_worker_count(pipeline_options: PipelineOptions) -> int:
    """The worker processes of a local run on Beam's FnApiRunner that can be forked from this one
    (io.local_workers), 0 when Beam starts them itself (one process, another runner, another OS)."""
    runner = pipeline_options.view_as(StandardOptions).runner or DEFAULT_LOCAL_RUNNER
    direct = pipeline_options.view_as(DirectOptions)
    workers = direct.direct_num_workers or 0
    if runner.rsplit('.', 1)[-1] != DEFAULT_LOCAL_RUNNER or direct.direct_running_mode != 'multi_processing':
        return 0
    return workers if PreloadedWorkers.available(workers) else 0


def preloaded_runner(pipeline_options: PipelineOptions, workers: PreloadedWorkers):
    """Beam's FnApiRunner with the preloaded workers' command as its worker processes' environment.
    The runner takes its own environment in the 'in_memory' running mode only ('multi_processing'
    would put back Beam's command); the number of workers still comes from direct_num_workers."""
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from apache_beam.transforms.environments import SubprocessSDKEnvironment
    pipeline_options.view_as(DirectOptions).direct_running_mode = 'in_memory'
    return FnApiRunner(default_environment=SubprocessSDKEnvironment.from_command_string(workers.command()))


def print_submitted(plan: LaunchPlan, settings: Settings) -> None:
    print('Job submitted; the run summary will be logged'
          + (f' and written to {settings.outputs.summary}' if settings.outputs.summary else ''))
    if settings.outputs.output and settings.report.report:
        elsewhere = settings.outputs.summary != batch_layout(plan).default_summary
        print(f'When the job has finished: python -m pipeline.report --output {settings.outputs.output}'
              + (f' --summary {settings.outputs.summary}' if elsewhere else ''))


def progress_display(pattern: str, skip):
    """The progress display over what the input holds now; a listing that fails costs the progress,
    never the run."""
    try:
        return ProgressDisplay(matched_shards(pattern, skip))
    except Exception as exc:
        logging.getLogger(__name__).warning('No progress shown: listing the input failed (%s)', exc)
        return nullcontext()


def help_text() -> str:
    """--help: every option of the table by concern, with its default, and a word on Beam's own."""
    lines = ['usage: python -m pipeline --input PREDICTIONS --output FOLDER [options] [Beam options]',
             '       python -m pipeline --input_subscription SUBSCRIPTION --output_table TABLE [options]',
             '', 'Turns object-detection batch prediction output (legacy AutoML Vision and Vertex AI '
             'JSONL shards) into Parquet or BigQuery tables, with a dead-letter sink and a run '
             'summary that accounts for every input line.']
    for title, names in OPTION_GROUPS:
        lines += ['', f'{title}:']
        for name in names:
            option = OPTIONS_BY_NAME[name]
            default = option.default
            shown = '' if default in (None, {}) else f' (default: {shown_default(default)})'
            runs = '' if option.modes == MODES else f' [{", ".join(option.modes)} runs]'
            lines.append(f'  --{name}' + ('[=true|false]' if option.flag else '=VALUE') + runs)
            lines += textwrap.wrap(option.help + shown, width=96, initial_indent=' ' * 6,
                                   subsequent_indent=' ' * 6)
    lines += ['', 'Other:', '  -h, --help      this text', '  --version       the version',
              '  --quiet         no progress on stderr (a local batch run shows it by default)',
              '', "Beam's own options (--runner, --project, --region, --temp_location, "
              '--direct_num_workers, ...) are accepted as Beam documents them. Without --runner a '
              'batch run is local (FnApiRunner). Exit codes: 0 done; 1 the reconciliation failed; 2 '
              'wrong options, input or output location (nothing was done); 3 more dead letters than '
              '--max_dead_letter_ratio; 4 the report could not be built (tables and summary are '
              'complete); 5 the run failed (no summary: the next run replaces what it left); 6 the run '
              'ended with a warning and --fail_on_warning is set (every output was written); 7 no unit of '
              'the ground truth could be used (the evaluation is empty).']
    return '\n'.join(lines)


def run_streaming(pipeline_options: PipelineOptions, settings: Settings, local: bool) -> int:
    """Starts the streaming job; a local one runs in the foreground until it is interrupted."""
    pipeline = beam.Pipeline(options=pipeline_options)
    _ = pipeline | 'PredictionsToTables' >> StreamingPredictionsToTables(settings)
    runner_starting()
    result = pipeline.run()
    where = ', '.join(filter(None, [settings.outputs.output, settings.bigquery.output_table]))
    print(f'Streaming: loading each shard notified on {settings.streaming.input_subscription}'
          + (f' under {settings.input.input}' if settings.input.input else '') + f' into {where}; counts are the '
          f'Beam counters of namespace prediction_tables'
          + ('. Stop with Ctrl-C.' if local else '. Drain the job to stop it.'), flush=True)
    if local:
        try:
            result.wait_until_finish()
        except KeyboardInterrupt:
            print('Stopped.')
    return 0


def print_outcome(summary, settings: Settings, summary_file: Optional[str]) -> bool:
    """The end of a local run's console output: the summary, where it is, and the report; False when
    the report failed (the tables and the summary stay as written)."""
    print(run_summary.render(summary))
    if summary.get('warnings'):
        print(amber(render_warnings(summary['warnings']), sys.stderr), file=sys.stderr)
    if summary_file:
        print(f'Summary: {summary_file}')
    if not settings.outputs.report_file:
        return True
    from pipeline.tools.report import build_report
    try:
        path = build_report(required(settings.outputs.output, 'output'), settings.report.report_samples,
                            settings.report.report_image_mirror or {}, settings.outputs.dead_letter,
                            settings.sizes.probe_allowed_prefixes, summary_path=settings.outputs.summary)
    except Exception as exc:
        logging.getLogger(__name__).error('The report failed', exc_info=True)
        print(f'error: the report could not be built ({type(exc).__name__}: {exc}); the tables and '
              f'the summary are complete', file=sys.stderr)
        return False
    print(f'Report: {path}')
    return True


def amber(text: str, stream) -> str:
    """`text` in amber on a terminal (plain when piped or NO_COLOR is set)."""
    if not getattr(stream, 'isatty', lambda: False)() or os.environ.get('NO_COLOR'):
        return text
    return f'\033[33m{text}\033[0m'


def check_dead_letter_ratio(summary, limit: Optional[float]) -> int:
    """3 when line, ground-truth and image-attribute dead letters exceed --max_dead_letter_ratio of the
    non-blank lines, ground-truth units and attribute rows read, else 0."""
    reconciliation = summary['reconciliation']
    lines, dead = reconciliation['non_blank_lines'], reconciliation['line_dead_letters']
    counted = ['non-blank lines']
    for section, name in (('ground_truth', 'ground-truth units'), ('image_attributes', 'image attribute rows')):
        if summary.get(section):
            lines, dead = lines + summary[section]['rows_read'], dead + summary[section]['dead_letters']
            counted.append(name)
    what = ', '.join(counted[:-1]) + ' and ' + counted[-1] if len(counted) > 1 else counted[0]
    if limit is None or lines == 0 or dead / lines <= limit:
        return 0
    print(f'error: {dead} of {lines} {what} ({dead / lines:.2%}) went to the dead letters, '
          f'more than --max_dead_letter_ratio={limit}; every output was written', file=sys.stderr)
    return EXIT_TOO_MANY_DEAD_LETTERS


def check_ground_truth_used(summary) -> int:
    """7 when the run evaluated against ground truth of which no unit could be used, else 0."""
    truth = summary.get('ground_truth')
    if truth is None or truth['rows_used']:
        return 0
    print(f'error: no unit of the ground truth could be used ({truth["rows_read"]} read, {truth["dead_letters"]} '
          f'dead letters: see their reasons): the evaluation is empty; every other output was written',
          file=sys.stderr)
    return EXIT_GROUND_TRUTH_UNUSABLE
