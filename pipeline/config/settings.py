"""The validated, typed settings of a run, one group per concern, so that each part receives only what
it uses (the post-processing never sees a BigQuery field).

The groups' option fields are exactly the options table's groups (`OPTION_GROUPS`, a test checks), and
their defaults live in the table alone. The fields after them are resolved once, at launch, by the
command line (`Settings.resolved`): never given as options.
"""
import dataclasses
import re
from typing import Any, Dict, Mapping, Optional, Tuple, TypeVar, Union

from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.config.options import (
    BATCH,
    BOX_SIZE,
    BUILT_IN_SLICES,
    OPTION_GROUPS,
    OPTIONS,
    OPTIONS_BY_NAME,
    STREAMING,
    OptionError,
    PredictionTableOptions,
    join_path,
)


@dataclasses.dataclass(frozen=True)
class InputSettings:
    input: Optional[str]  # None only in streaming runs without a prefix filter
    input_format: str
    # Run folders whose name another run folder under the input shares, each with the name it is
    # given instead: its path under the input (set at launch from the listing; shards.run_names).
    run_names: Tuple[Tuple[str, str], ...] = ()


@dataclasses.dataclass(frozen=True)
class StreamingSettings:
    input_subscription: Optional[str]
    window_seconds: int
    dedupe_hours: int


@dataclasses.dataclass(frozen=True)
class OutputSettings:
    output: Optional[str]
    dead_letter: Optional[str]
    summary: Optional[str]
    overwrite: bool
    max_dead_letter_ratio: Optional[float]
    fail_on_warning: bool
    report_file: Optional[str] = None  # the report this run builds, listed among its outputs


@dataclasses.dataclass(frozen=True)
class BigQuerySettings:
    output_table: Optional[str]
    images_table: Optional[str]
    dead_letter_table: Optional[str]
    write_disposition: str
    bigquery_method: str
    temp_location: Optional[str] = None  # Beam's --temp_location, for file loads


@dataclasses.dataclass(frozen=True)
class PostprocessingSettings:
    score_threshold: float
    label_thresholds: Mapping[str, float]
    keep_labels: Optional[Tuple[str, ...]]
    drop_labels: Optional[Tuple[str, ...]]
    min_box_area: Optional[float]
    roi: Optional[str]  # a path or WKT as given; see roi_wkt
    roi_min_overlap: Optional[float]
    nms_iou: Optional[float]
    nms_class_agnostic: bool
    max_detections: Optional[int]
    roi_wkt: Optional[str] = None  # the validated region's WKT

    @property
    def score_floor(self) -> float:
        """The lowest threshold any detection is held to: nothing scored below it is ever kept."""
        return min([self.score_threshold, *self.label_thresholds.values()])

    def threshold_for(self, label: Optional[str]) -> float:
        if label is None:
            return self.score_threshold
        return self.label_thresholds.get(label, self.score_threshold)


@dataclasses.dataclass(frozen=True)
class SizeSettings:
    image_size: Optional[Tuple[int, int]]
    image_sizes: Optional[str]
    probe_image_sizes: bool
    probe_allowed_prefixes: Optional[Tuple[str, ...]]
    allowed_scheme: Optional[str] = None  # of the resolved input: what a probe may open


@dataclasses.dataclass(frozen=True)
class ReportSettings:
    report: Optional[bool]
    report_samples: int
    report_image_mirror: Optional[Mapping[str, str]]


@dataclasses.dataclass(frozen=True)
class EvaluationSettings:
    ground_truth: Optional[str]  # None: no evaluation
    ground_truth_format: str
    ground_truth_image_prefix: Optional[str]
    ml_use: Optional[str]
    iou_thresholds: Tuple[float, ...]
    max_dets: Tuple[int, ...]
    eval_iou: float
    eval_confidence: float
    target_precision: Optional[float]  # each label's operating threshold: None and None, the best F1
    target_recall: Optional[float]
    compare_to: Optional[str]  # as given: a run's name, or 'first'
    ground_truth_files: Tuple[Tuple[str, str], ...] = ()  # (path, format) of each file, found at launch
    buckets: int = 1  # images are evaluated in this many buckets, from the input's size at launch
    spill_folder: Optional[str] = None  # a local run's folder for the join's parts (io.spill), made at launch
    # The prediction runs of the input's shards, found at launch: each one is evaluated (every box
    # missed) even when none of its lines can be used.
    runs: Tuple[Optional[str], ...] = ()
    # --image_size, also the size of the ground-truth images that no line of a run gives one.
    fixed_image_size: Optional[Tuple[int, int]] = None

    # (the base run,) that --compare_to names, found at launch (a run may be None: no run folder);
    # () without a comparison.
    compare_base: Tuple[Optional[str], ...] = ()

    @property
    def enabled(self) -> bool:
        return self.ground_truth is not None

    @property
    def joined(self) -> bool:
        """Whether the prediction lines are joined by image bucket: to evaluate them, or compare runs."""
        return self.enabled or self.compare_to is not None


@dataclasses.dataclass(frozen=True)
class SliceSettings:
    """Where the model is weak: each run also evaluated slice by slice of its images."""
    image_attributes: Optional[str]  # a file, folder or glob of attribute rows
    image_attributes_key: str
    slice_by: Tuple[str, ...]
    slice_bins: Union[int, Tuple[float, ...]]  # quantile bins, or edges, of numeric attributes
    attribute_files: Tuple[Tuple[str, str], ...] = ()  # (path, format) of each attribute file, found at launch

    @property
    def enabled(self) -> bool:
        return bool(self.slice_by)

    @property
    def attributes(self) -> Tuple[str, ...]:
        """The sliced attributes that the attribute rows give (not the built-in slices)."""
        return tuple(name for name in self.slice_by if name not in BUILT_IN_SLICES)


@dataclasses.dataclass(frozen=True)
class ExportSettings:
    export: Tuple[str, ...]
    export_select: str
    uncertain_min: float
    uncertain_max: float
    export_ml_use: Optional[str]
    export_image_prefix: Optional[Mapping[str, str]]
    label_studio_from_name: str
    label_studio_to_name: str
    buckets: int = 0  # derived at launch: the exported lines meet by bucket, each image's first kept

    @property
    def enabled(self) -> bool:
        return bool(self.export)


@dataclasses.dataclass(frozen=True)
class LaunchSettings:
    """Set at launch, for the job as a whole."""
    run_id: Optional[str] = None  # names this run in its summary and locks
    job_locks: Tuple[str, ...] = ()  # Cloud Storage locks the job itself releases after its summary
    progress: bool = False  # workers report progress for the launcher to show (local batch runs)
    started: Optional[str] = None  # when the launcher started the run (RFC 3339, UTC): the summary's `run`
    tool_version: Optional[str] = None  # of this package, as the launcher has it
    options: Tuple[Tuple[str, str], ...] = ()  # our options as given on the command line (name, value)
    command_line: Tuple[str, ...] = ()  # every argument given, Beam's own too


T = TypeVar('T')


def required(value: Optional[T], name: str) -> T:
    """A value that the checks across options made present in this kind of run."""
    if value is None:
        raise OptionError(f'--{name} is required here')
    return value


# Each title of OPTION_GROUPS, and the settings group that holds those options.
GROUPS = {'Input': ('input', InputSettings), 'Streaming': ('streaming', StreamingSettings),
          'Outputs': ('outputs', OutputSettings), 'BigQuery': ('bigquery', BigQuerySettings),
          'Thresholds and post-processing': ('postprocessing', PostprocessingSettings),
          'Image sizes': ('sizes', SizeSettings), 'Report': ('report', ReportSettings),
          'Evaluation': ('evaluation', EvaluationSettings), 'Slices': ('slices', SliceSettings),
          'Export': ('export', ExportSettings)}


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every group of a run's settings."""
    input: InputSettings
    streaming: StreamingSettings
    outputs: OutputSettings
    bigquery: BigQuerySettings
    postprocessing: PostprocessingSettings
    sizes: SizeSettings
    report: ReportSettings
    evaluation: EvaluationSettings
    export: ExportSettings
    slices: SliceSettings
    launch: LaunchSettings = LaunchSettings()

    @property
    def mode(self) -> str:
        return STREAMING if self.streaming.input_subscription else BATCH

    @property
    def is_streaming(self) -> bool:
        return self.mode == STREAMING

    @property
    def joined(self) -> bool:
        """Whether the prediction lines meet by image bucket: to evaluate them, compare runs or slice them."""
        return self.evaluation.joined or self.slices.enabled

    @classmethod
    def from_pipeline_options(cls, pipeline_options: PipelineOptions) -> 'Settings':
        raw = pipeline_options.view_as(PredictionTableOptions).get_all_options()
        return cls.from_raw({name: raw.get(name) for name in OPTIONS_BY_NAME})

    @classmethod
    def from_raw(cls, raw: Mapping[str, Optional[str]]) -> 'Settings':
        """Parses every option given as text; raises OptionError naming the first wrong one."""
        values = {}
        for name, text in raw.items():
            if text is None:
                continue
            try:
                values[name] = OPTIONS_BY_NAME[name].parse(str(text))
            except ValueError as exc:
                raise OptionError(f'--{name}: {exc}') from None
        return cls.of(**values)

    @classmethod
    def of(cls, **given: Any) -> 'Settings':
        """Settings from typed values (the options not given take the table's defaults), after the
        checks across options; raises OptionError."""
        unknown = set(given) - set(OPTIONS_BY_NAME)
        if unknown:
            raise TypeError(f'not options: {", ".join(sorted(unknown))}')
        values = {option.name: given.get(option.name, option.default) for option in OPTIONS}
        _check_needs(given)
        _check_mode(given, values)
        _check_and_default(values)
        groups = {attribute: group(**{name: values[name] for name in names})
                  for title, names in OPTION_GROUPS for attribute, group in [GROUPS[title]]}
        return cls(**groups)

    def resolved(self, **derived: Dict[str, Any]) -> 'Settings':
        """These settings with values resolved at launch, by group: resolved(sizes={...}, ...)."""
        return dataclasses.replace(self, **{group: dataclasses.replace(getattr(self, group), **fields)
                                            for group, fields in derived.items()})


# Options that mean something only beside another: given alone, they would quietly do nothing.
# Option -> (the option it works with, or a tuple of options any of which, and what that gives it).
NEEDS: Dict[str, Tuple[Any, str]] = {
    'export_select': ('export', 'the formats to write'), 'uncertain_min': ('export', 'the formats to write'),
    'uncertain_max': ('export', 'the formats to write'), 'label_studio_from_name': ('export', 'with label_studio'),
    'label_studio_to_name': ('export', 'with label_studio'),
    'ground_truth_format': ('ground_truth', 'the labelled boxes to evaluate against'),
    'iou_thresholds': ('ground_truth', 'the labelled boxes to evaluate against'),
    'max_dets': ('ground_truth', 'the labelled boxes to evaluate against'),
    'eval_iou': (('ground_truth', 'compare_to'), 'the labelled boxes, or the base run, to match boxes with'),
    'eval_confidence': ('ground_truth', 'the labelled boxes to evaluate against'),
    'target_precision': ('ground_truth', 'the labelled boxes to evaluate against'),
    'target_recall': ('ground_truth', 'the labelled boxes to evaluate against'),
    'slice_bins': ('slice_by', 'the attributes to slice by'),
    'image_attributes': ('slice_by', 'the attributes to slice by'),
    'image_attributes_key': ('image_attributes', 'the attribute rows'),
}


def _check_needs(given: Mapping[str, Any]) -> None:
    """Each option of NEEDS given with one of the options it works with (a name, or names any of which)."""
    for name, (needed, what) in NEEDS.items():
        alternatives = (needed,) if isinstance(needed, str) else needed
        if given.get(name) is not None and all(given.get(other) in (None, ()) for other in alternatives):
            shown = ' or '.join(f'--{other}' for other in alternatives)
            raise OptionError(f'--{name} needs {shown} ({what}); without it, it would do nothing')


def _check_and_default(values: dict) -> None:
    """The checks that span options, and the defaults that depend on other options."""
    if values['roi_min_overlap'] is not None and values['roi'] is None:
        raise OptionError('--roi_min_overlap needs --roi: the region the overlap is measured against')
    if values['nms_class_agnostic'] and values['nms_iou'] is None:
        raise OptionError('--nms_class_agnostic needs --nms_iou: the IoU above which boxes are '
                          'suppressed')
    if values['target_precision'] is not None and values['target_recall'] is not None:
        raise OptionError('--target_precision and --target_recall each choose the operating thresholds: give one')
    if values['ground_truth'] is None:
        for name in ('ground_truth_image_prefix', 'ml_use'):
            if values[name] is not None:
                raise OptionError(f'--{name} needs --ground_truth: the labelled boxes to evaluate against')
    if values['ground_truth_image_prefix'] is not None and values['ground_truth_format'] not in ('auto', 'coco'):
        raise OptionError('--ground_truth_image_prefix applies to COCO ground truth only (its file_name '
                          f'fields), not to --ground_truth_format={values["ground_truth_format"]}')
    _check_export(values)
    attributes = [name for name in values['slice_by'] or () if name not in BUILT_IN_SLICES]
    if attributes and values['image_attributes'] is None:
        raise OptionError(f'--slice_by {",".join(attributes)} needs --image_attributes: the table that gives each '
                          f'image its {attributes[0]} (built in: {", ".join(BUILT_IN_SLICES)})')
    if BOX_SIZE in (values['slice_by'] or ()) and values['ground_truth'] is None:
        raise OptionError('--slice_by box_size needs --ground_truth: the sizes are those of the labelled boxes '
                          '(pycocotools\' area ranges)')
    if values['image_attributes'] is not None and not attributes:
        raise OptionError(f'--image_attributes is read for the attributes --slice_by names, and it names none '
                          f'({", ".join(values["slice_by"] or ())} are built in): add an attribute, or leave it out')
    if values['image_attributes'] is not None and values['image_attributes_key'] in (values['slice_by'] or ()):
        raise OptionError(f'--slice_by: {values["image_attributes_key"]} is the image URI\'s column '
                          '(--image_attributes_key), not an attribute')
    values['slice_by'] = values['slice_by'] or ()
    if values['output'] is None and values['output_table'] is None:
        raise OptionError('--output or --output_table is required: a folder for the Parquet '
                          'tables, a BigQuery table, or both')
    if values['output_table'] is None:
        for name in ('images_table', 'dead_letter_table'):
            if values[name] is not None:
                raise OptionError(f'--{name} needs --output_table')
    else:
        values['images_table'] = values['images_table'] or values['output_table'] + '_images'
        values['dead_letter_table'] = (values['dead_letter_table']
                                       or values['output_table'] + '_error_records')
    if values['bigquery_method'] is None:
        values['bigquery_method'] = 'streaming_inserts' if values['input_subscription'] else 'file_loads'
    if values['write_disposition'] == 'truncate' and values['bigquery_method'] == 'streaming_inserts':
        raise OptionError('--write_disposition=truncate cannot be used with '
                          '--bigquery_method=streaming_inserts: BigQuery cannot truncate a table '
                          'through streaming inserts; use file_loads')
    if values['dead_letter'] is None and values['output'] is not None:
        values['dead_letter'] = join_path(values['output'], 'dead_letter')
    if values['summary'] is None and values['output'] is not None:
        values['summary'] = join_path(values['output'], 'summary.json')


def _check_export(values: dict) -> None:
    if not values['export']:
        values['export'] = ()
        for name in ('export_ml_use', 'export_image_prefix'):
            if values[name] is not None:
                raise OptionError(f'--{name} needs --export: the formats to write')
        return
    if values['output'] is None:
        raise OptionError('--export writes under <output>/export/: give --output')
    if values['export_select'] == 'disagreements' and values['compare_to'] is None:
        raise OptionError('--export_select=disagreements needs --compare_to: the base run the other runs disagree with')
    if values['export_select'] == 'errors' and values['ground_truth'] is None:
        raise OptionError('--export_select=errors needs --ground_truth: errors are false positives and misses '
                          'against it')
    if values['uncertain_min'] >= values['uncertain_max']:
        raise OptionError(f'--uncertain_min ({values["uncertain_min"]}) must be below --uncertain_max '
                          f'({values["uncertain_max"]})')


def _check_mode(given: Mapping[str, Any], values: dict) -> None:
    """Every option given applies to this kind of run, and every one it needs is there."""
    mode = STREAMING if values['input_subscription'] else BATCH
    for option in OPTIONS:
        if given.get(option.name) is not None and mode not in option.modes:
            if mode == BATCH:
                raise OptionError(f'--{option.name} applies to streaming runs only: add '
                                  f'--input_subscription, or leave it out')
            raise OptionError(f'--{option.name} applies to batch runs only: a streaming run never '
                              f'ends, so it has no summary or report; its counts are Beam counters')
        if mode in option.required_in and values[option.name] is None:
            other = ('; or give --input_subscription for a streaming run' if mode == BATCH else '')
            raise OptionError(f'--{option.name} is required in a {mode} run ({option.label}){other}')
    if mode == STREAMING:
        if values['input'] is not None and (not values['input'].startswith('gs://')
                                            or re.search(r'[*?\[]', values['input'])):
            raise OptionError(f'--input: in a streaming run it is a gs:// folder (no glob) whose shards '
                              f'are loaded (notifications name Cloud Storage objects), got '
                              f'{values["input"]!r}')
        if values['write_disposition'] == 'truncate':
            raise OptionError('--write_disposition=truncate: a streaming run appends each new shard '
                              'to the tables; leave the option out')
