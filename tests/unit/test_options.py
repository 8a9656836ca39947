import re

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.config.options import OPTIONS, OptionError, parse_label_thresholds
from pipeline.config.settings import Settings

SUB = '--input_subscription=projects/my-project/subscriptions/shard-loader'


def settings(*args):
    return Settings.from_pipeline_options(PipelineOptions(list(args)))


def test_defaults_and_derived_dead_letter_root():
    s = settings('--input', 'in', '--output', 'gs://bucket/out/')
    assert s.input.input_format == 'auto' and s.postprocessing.score_threshold == 0.0 and s.postprocessing.label_thresholds == {}
    assert s.outputs.dead_letter == 'gs://bucket/out/dead_letter'
    assert s.sizes.image_size is None and s.sizes.probe_image_sizes is False


def test_bigquery_table_defaults_follow_the_detections_table():
    s = settings('--input=in', '--output_table=my-project.ds.detections')
    assert s.bigquery.output_table == 'my-project:ds.detections'
    assert s.bigquery.images_table == 'my-project:ds.detections_images'
    assert s.bigquery.dead_letter_table == 'my-project:ds.detections_error_records'
    assert s.outputs.output is None and s.outputs.dead_letter is None and s.outputs.summary is None
    both = settings('--input=in', '--output=out', '--output_table=my-project:ds.t',
                    '--dead_letter_table=other-project:ds2.errors', '--summary=gs://bkt/s.json')
    assert both.outputs.dead_letter == 'out/dead_letter' and both.bigquery.dead_letter_table == 'other-project:ds2.errors'
    assert both.outputs.summary == 'gs://bkt/s.json' and settings('--input=in', '--output=o').outputs.summary == 'o/summary.json'


def test_values_are_typed():
    s = settings('--input=in', '--output=out', '--score_threshold=0.5', '--image_size=1024x768',
                 '--input_format=vertex', '--label_thresholds=Tomato=0.6, Baked Goods=0.3',
                 '--dead_letter=dl')
    assert s.postprocessing.score_threshold == 0.5 and s.sizes.image_size == (1024, 768) and s.input.input_format == 'vertex'
    assert s.postprocessing.label_thresholds == {'Tomato': 0.6, 'Baked Goods': 0.3}
    assert s.outputs.dead_letter == 'dl'
    assert s.postprocessing.threshold_for('Tomato') == 0.6 and s.postprocessing.threshold_for('Cheese') == 0.5


@pytest.mark.parametrize('args, value', [
    (['--probe_image_sizes'], True), (['--probe_image_sizes=true'], True),
    (['--probe_image_sizes=false'], False), (['--probe_image_sizes=False'], False), ([], False),
])
def test_boolean_flag_forms(args, value):
    assert settings('--input=in', '--output=out', *args).sizes.probe_image_sizes is value


def test_label_thresholds_split_at_last_equals_and_json_for_commas():
    assert parse_label_thresholds('a=b=0.25') == {'a=b': 0.25}
    assert parse_label_thresholds('{"A, B": 0.6, "C": 1}') == {'A, B': 0.6, 'C': 1.0}
    assert parse_label_thresholds('') == {}


@pytest.mark.parametrize('args, fragment', [
    (['--output=out'], '--input is required'),
    (['--input=in'], '--output or --output_table is required'),
    (['--input=in', '--output_table=my-project:d.t', '--bigquery_method=streaming_inserts',
      '--write_disposition=truncate'], 'cannot be used with --bigquery_method=streaming_inserts'),
    (['--input=in', '--output=out', '--images_table=my-project:d.t'], '--images_table needs --output_table'),
    (['--input=in', '--output=out', '--score_threshold=1.5'], '--score_threshold: expected a number between 0 and 1'),
    (['--input=in', '--output=out', '--score_threshold=-0.1'], '--score_threshold'),
    (['--input=in', '--output=out', '--score_threshold=nan'], '--score_threshold'),
    (['--input=in', '--output=out', '--score_threshold=high'], '--score_threshold: expected a number'),
    (['--input=in', '--output=out', '--image_size=1024'], '--image_size: expected WIDTHxHEIGHT'),
    (['--input=in', '--output=out', '--image_size=0x10'], '--image_size'),
    (['--input=in', '--output=out', '--input_format=csv'], '--input_format: expected one of auto'),
    (['--input=in', '--output=out', '--label_thresholds=Tomato'], '--label_thresholds: item'),
    (['--input=in', '--output=out', '--label_thresholds=Tomato=2'], "threshold of 'Tomato'"),
    (['--input=in', '--output=out', '--label_thresholds==0.5'], 'a label is empty'),
    (['--input=in', '--output=out', '--label_thresholds={"A": "x"}'], "threshold of 'A'"),
    (['--input=in', '--output=out', '--label_thresholds={"A": 0.5'], 'not a valid JSON object'),
    (['--input=in', '--output=out', '--label_thresholds=[1]'], 'item'),
    (['--input=in', '--output=out', '--probe_image_sizes=maybe'], '--probe_image_sizes'),
    (['--input=in', '--output=out', '--window_seconds=30'], '--window_seconds applies to streaming runs'),
    (['--input=in', '--output=out', '--dedupe_hours=2'], '--dedupe_hours applies to streaming runs'),
    ([SUB, '--output=out', '--report'], '--report applies to batch runs only'),
    ([SUB, '--output=out', '--summary=s.json'], '--summary applies to batch runs only'),
    ([SUB, '--output=out', '--max_dead_letter_ratio=0.1'], '--max_dead_letter_ratio applies to batch'),
    ([SUB, '--output=out', '--input=local/folder'], '--input: in a streaming run it is a gs:// folder'),
    ([SUB, '--output=out', '--input=gs://bucket/*/runs'], '--input: in a streaming run it is a gs:// folder'),
    ([SUB, '--output_table=my-project:d.t', '--write_disposition=truncate'],
     'a streaming run appends'),
    ([SUB], '--output or --output_table is required'),
    (['--input_subscription=projects/my-project/topics/t', '--output=out'], '--input_subscription: expected'),
    ([SUB, '--output=out', '--window_seconds=0'], '--window_seconds: expected a whole number'),
])
def test_wrong_options_name_the_option(args, fragment):
    with pytest.raises(OptionError) as raised:
        settings(*args)
    assert fragment in str(raised.value)


def test_a_subscription_makes_a_streaming_run_with_its_defaults():
    streaming = settings(SUB, '--output_table=my-project:d.t', '--input=gs://bucket/runs/')
    assert streaming.is_streaming and streaming.mode == 'streaming'
    assert (streaming.streaming.window_seconds, streaming.streaming.dedupe_hours) == (60, 24)
    assert streaming.bigquery.bigquery_method == 'streaming_inserts'
    assert streaming.outputs.summary is None
    batch = settings('--input=in', '--output_table=my-project:d.t')
    assert not batch.is_streaming and batch.bigquery.bigquery_method == 'file_loads'
    assert settings(SUB, '--output=out').input.input is None  # every shard the bucket announces
    loads = settings(SUB, '--output_table=my-project:d.t', '--bigquery_method=file_loads')
    assert loads.is_streaming and loads.bigquery.bigquery_method == 'file_loads'  # one load per window


def test_each_settings_group_holds_exactly_its_options_and_no_default_of_its_own():
    import dataclasses

    from pipeline.config.options import OPTION_GROUPS
    from pipeline.config.settings import GROUPS
    for title, names in OPTION_GROUPS:
        _, group = GROUPS[title]
        fields = dataclasses.fields(group)
        options = [field.name for field in fields if field.default is dataclasses.MISSING]
        assert options == list(names), title
        derived = [field.name for field in fields if field.default is not dataclasses.MISSING]
        assert not set(derived) & {o.name for o in OPTIONS}, title  # resolved at launch, not options


# The options a run accepts, as users' scripts and templates know them: a change here is a change of
# contract (add to the list, never rename or drop without a deprecation).
ACCEPTED = ['input', 'input_subscription', 'window_seconds', 'dedupe_hours', 'output', 'output_table',
            'images_table', 'dead_letter_table', 'write_disposition', 'bigquery_method', 'overwrite',
            'max_dead_letter_ratio', 'fail_on_warning', 'report', 'report_samples', 'report_image_mirror', 'summary',
            'dead_letter', 'input_format', 'score_threshold', 'label_thresholds', 'image_size',
            'image_sizes', 'probe_image_sizes', 'probe_allowed_prefixes', 'keep_labels', 'drop_labels',
            'min_box_area', 'max_detections', 'nms_iou', 'nms_class_agnostic', 'roi', 'roi_min_overlap',
            'ground_truth', 'ground_truth_format', 'ground_truth_image_prefix', 'ml_use', 'iou_thresholds',
            'max_dets', 'eval_iou', 'eval_confidence', 'target_precision', 'target_recall', 'compare_to',
            'image_attributes', 'image_attributes_key', 'slice_by', 'slice_bins', 'export', 'export_select',
            'uncertain_min', 'uncertain_max',
            'export_ml_use', 'export_image_prefix', 'label_studio_from_name', 'label_studio_to_name']


def test_the_options_accepted_are_the_contract():
    assert [option.name for option in OPTIONS] == ACCEPTED


@pytest.mark.parametrize('root', ['/data/out', '/data/out/', 'gs://bucket/out', 'gs://bucket/out/', 'out'])
def test_the_pure_join_agrees_with_beams(root):
    from apache_beam.io.filesystems import FileSystems

    from pipeline.config.options import join_path
    for parts in (('detections',), ('report', 'index.html'), ('dead_letter',), ('summary.json',)):
        assert join_path(root, *parts) == FileSystems.join(root, *parts)


@pytest.mark.parametrize('raw, message', [
    ({'slice_by': 'camera'}, '--slice_by camera needs --image_attributes'),
    ({'slice_by': 'box_size'}, '--slice_by box_size needs --ground_truth'),
    ({'slice_by': 'camera', 'ground_truth': 'g.jsonl'}, '--slice_by camera needs --image_attributes'),
    ({'slice_by': 'box_size', 'ground_truth': 'g.jsonl', 'image_attributes': 'a.csv'},
     '--image_attributes is read for the attributes --slice_by names, and it names none'),
    ({'slice_by': 'image_uri', 'ground_truth': 'g.jsonl', 'image_attributes': 'a.csv'},
     "--slice_by: image_uri is the image URI's column"),
    ({'slice_bins': '3', 'ground_truth': 'g.jsonl'}, '--slice_bins needs --slice_by'),
    ({'image_attributes_key': 'uri', 'ground_truth': 'g.jsonl', 'slice_by': 'box_size'},
     '--image_attributes_key needs --image_attributes'),
    ({'slice_by': 'a,a', 'ground_truth': 'g.jsonl'}, "--slice_by: 'a,a' names an attribute twice"),
    ({'slice_bins': '1', 'slice_by': 'box_size', 'ground_truth': 'g.jsonl'}, '--slice_bins: give 2 or more bins'),
])
def test_slice_options_that_cannot_work_fail_with_what_to_fix(raw, message):
    with pytest.raises(OptionError, match=re.escape(message)):
        Settings.from_raw({'input': 'gs://bucket/in', 'output': 'gs://bucket/out', **raw})


def test_slice_options_are_typed():
    slices = Settings.from_raw({'input': 'gs://bucket/in', 'output': 'gs://bucket/out', 'ground_truth': 'g.jsonl',
                                'image_attributes': 'a.csv', 'slice_by': ' camera , box_size',
                                'slice_bins': '0, 2.5,1e2'}).slices
    assert slices.slice_by == ('camera', 'box_size') and slices.attributes == ('camera',)
    assert slices.slice_bins == (0.0, 2.5, 100.0) and slices.image_attributes_key == 'image_uri'


@pytest.mark.parametrize('name', ['ground_truth', 'image_attributes'])
def test_a_remote_run_refuses_a_local_file_it_would_read_on_the_workers(name):
    from pipeline.cli import check_remote_paths
    raw = {'input': 'gs://bucket/in', 'output': 'gs://bucket/out', 'ground_truth': 'gs://bucket/truth.jsonl',
           'image_attributes': 'gs://bucket/attributes.csv', 'slice_by': 'camera', name: '/home/me/local.csv'}
    with pytest.raises(OptionError, match=f'--{name}: .* is a local path, which the workers of a remote runner'):
        check_remote_paths(Settings.from_raw(raw), 'gs://bucket/in/**')
    check_remote_paths(Settings.from_raw(dict(raw, **{name: 'gs://bucket/x.csv'})), 'gs://bucket/in/**')
