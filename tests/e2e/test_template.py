"""The Flex Template: metadata generated from the options, regexes consistent with validation, the
launcher entry file, the image definition, the make targets and the worker package."""
import ast
import json
import re
import subprocess
import sys
import tarfile
import venv

import pyarrow.dataset as ds
import pytest
from conftest import ROOT, SAMPLE

from pipeline.cli import read_roi
from pipeline.config.options import BATCH, MODES, OPTIONS, OPTIONS_BY_NAME, STREAMING, OptionError
from pipeline.config.settings import Settings
from pipeline.tools import template

METADATA = ROOT / 'templates' / 'metadata.json'
STREAMING_METADATA = ROOT / 'templates' / 'metadata-streaming.json'
FILES = {BATCH: METADATA, STREAMING: STREAMING_METADATA}


@pytest.mark.parametrize('mode', MODES)
def test_committed_metadata_is_what_the_generator_produces(mode):
    assert FILES[mode].read_text(encoding='utf-8') == template.render(mode), 'run `make metadata`'


@pytest.mark.parametrize('mode, required', [(BATCH, 'input'), (STREAMING, 'input_subscription')])
def test_one_parameter_per_option_of_the_mode(mode, required):
    document = json.loads(FILES[mode].read_text())
    parameters = document['parameters']
    assert [p['name'] for p in parameters] == [o.name for o in OPTIONS if mode in o.modes]
    for parameter in parameters:
        assert parameter['label'] and parameter['helpText']
        assert parameter['isOptional'] is (parameter['name'] != required)
    assert document.get('streaming', False) is (mode == STREAMING)
    names = {p['name'] for p in parameters}
    assert ({'window_seconds', 'dedupe_hours', 'input_subscription'} <= names) is (mode == STREAMING)
    assert ({'report', 'summary', 'overwrite', 'max_dead_letter_ratio'} <= names) is (mode == BATCH)


# Values as a Dataflow user would pass them: (option, value, accepted by the pipeline).
CASES = [
    ('input', 'gs://bucket/predictions/', True), ('input', 'gs://my-bucket.example/a b/[x]', True),
    ('input', '/local/path', False), ('input', 'gs://', False), ('input', 'gs://B/x', False),
    ('output', 'gs://bucket/out', True), ('output', 's3://bucket/out', False),
    ('dead_letter', 'gs://bucket/dl', True), ('image_sizes', 'gs://bucket/sizes.csv', True),
    ('image_sizes', 'sizes.csv', False),
    ('input_format', 'auto', True), ('input_format', 'automl', True), ('input_format', 'vertex', True),
    ('input_format', 'Vertex', False), ('input_format', 'csv', False), ('input_format', '', False),
    ('score_threshold', '0', True), ('score_threshold', '0.5', True), ('score_threshold', '1', True),
    ('score_threshold', '1.0', True), ('score_threshold', '.25', True), ('score_threshold', '0.', True),
    ('score_threshold', '1.5', False), ('score_threshold', '-0.1', False), ('score_threshold', '5e-1', False),
    ('score_threshold', 'nan', False), ('score_threshold', ' 0.5', False), ('score_threshold', '', False),
    ('label_thresholds', 'Tomato=0.6', True), ('label_thresholds', 'Tomato=0.6,Baked Goods=0.3', True),
    ('label_thresholds', 'a=b=0.25', True), ('label_thresholds', 'Tomato = 0.6 , Salad=1', True),
    ('label_thresholds', '{"A, B": 0.6}', True), ('label_thresholds', 'Tomato', False),
    ('label_thresholds', 'Tomato=2', False), ('label_thresholds', '=0.5', False),
    ('label_thresholds', 'A=0.5,', False), ('label_thresholds', ' =0.5', False),
    ('image_size', '1024x768', True), ('image_size', '640X480', True), ('image_size', '1024', False),
    ('image_size', '0x10', False), ('image_size', '10 x 10', False),
    ('probe_image_sizes', 'true', True), ('probe_image_sizes', 'false', True),
    ('probe_image_sizes', 'True', True), ('probe_image_sizes', 'yes', False), ('probe_image_sizes', '1', False),
    ('nms_class_agnostic', 'false', True), ('nms_class_agnostic', 'maybe', False),
    ('keep_labels', 'Baked Goods,Salad', True), ('keep_labels', '["A, B"]', True),
    ('keep_labels', 'a,,b', False), ('keep_labels', '', False), ('drop_labels', 'Cheese', True),
    ('min_box_area', '0.01', True), ('min_box_area', '2', False),
    ('max_detections', '100', True), ('max_detections', '0', False), ('max_detections', '2.5', False),
    ('max_detections', '-3', False),
    ('nms_iou', '0.5', True), ('nms_iou', '1.01', False), ('roi_min_overlap', '0.25', True),
    ('roi', 'POLYGON ((0 0, 1 0, 1 1, 0 0))', True), ('roi', 'multipolygon (((0 0, 1 0, 1 1, 0 0)))', True),
    ('roi', 'gs://bucket/roi.wkt', True), ('roi', 'POINT (0 0)', False), ('roi', 'roi.wkt', False),
    ('output_table', 'my-project:dataset.table', True), ('output_table', 'my-project.dataset.table', True),
    ('output_table', 'example.com:my-project:ds.t_1', True), ('output_table', 'dataset.table', False),
    ('output_table', 'my-project:data set.table', False), ('output_table', 'P:ds.t', False),
    ('images_table', 'my-project:ds.images', True), ('images_table', 'ds.images', False),
    ('dead_letter_table', 'my-project:ds.errors', True), ('dead_letter_table', 'errors', False),
    ('write_disposition', 'append', True), ('write_disposition', 'truncate', True),
    ('write_disposition', 'WRITE_APPEND', False), ('bigquery_method', 'file_loads', True),
    ('bigquery_method', 'streaming_inserts', True), ('bigquery_method', 'storage_write_api', False),
    ('summary', 'gs://bucket/runs/summary.json', True), ('summary', 'summary.json', False),
    ('overwrite', 'true', True), ('overwrite', 'no', False),
    ('report', 'false', True), ('report', 'off', False), ('report_samples', '24', True),
    ('report_samples', '0', False), ('report_image_mirror', 'gs://b/images/=gs://mirror/images/', True),
    ('report_image_mirror', 'gs://a/=/x/,gs://b/=/y/', True), ('report_image_mirror', 'gs://b/images/', False),
    ('max_dead_letter_ratio', '0.01', True), ('max_dead_letter_ratio', '5%', False),
    ('fail_on_warning', 'true', True), ('fail_on_warning', 'yes', False),
    ('output', 'gs://bucket/res/model-v2', True), ('output', 'gs://bucket/res/model[v2]', False),
    ('dead_letter', 'gs://bucket/dead*', False), ('summary', 'gs://bucket/run?/summary.json', False),
    ('input_subscription', 'projects/my-project/subscriptions/shard-loader', True),
    ('input_subscription', 'projects/example.com:my-project/subscriptions/s.1~x', True),
    ('input_subscription', 'projects/my-project/topics/shards', False),
    ('input_subscription', 'projects/my-project/subscriptions/ab', False),
    ('input_subscription', 'projects/my-project/subscriptions/1abc', False),
    ('input_subscription', 'shard-loader', False),
    ('window_seconds', '60', True), ('window_seconds', '0', False), ('window_seconds', '1.5', False),
    ('dedupe_hours', '24', True), ('dedupe_hours', '-1', False),
    ('ground_truth', 'gs://bucket/labels/', True), ('ground_truth', 'gs://bucket/labels/*.csv', True),
    ('ground_truth', 'labels.jsonl', False), ('ground_truth', 'gs://', False),
    ('ground_truth_format', 'auto', True), ('ground_truth_format', 'coco', True),
    ('ground_truth_format', 'vertex_jsonl', True), ('ground_truth_format', 'automl_csv', True),
    ('ground_truth_format', 'COCO', False), ('ground_truth_format', 'csv', False),
    ('ground_truth_image_prefix', 'gs://bucket/images/', True), ('ground_truth_image_prefix', '', False),
    ('ml_use', 'test', True), ('ml_use', 'TEST', True), ('ml_use', 'Train', True), ('ml_use', 'holdout', False),
    ('ml_use', '', False), ('iou_thresholds', '0.5,0.75', True), ('iou_thresholds', '0.5, 0.75', True),
    ('iou_thresholds', '0.5', True), ('iou_thresholds', '1.5', False), ('iou_thresholds', '0.5;0.75', False),
    ('iou_thresholds', '', False), ('max_dets', '1,10,100', True), ('max_dets', '100', True),
    ('max_dets', '1, 10, 0', True), ('max_dets', '1;10', False), ('max_dets', '-1', False), ('max_dets', '', False),
    ('eval_iou', '0.5', True), ('eval_iou', '1', True), ('eval_iou', '2', False),
    ('eval_confidence', '0', True), ('eval_confidence', '0.9', True), ('eval_confidence', '90%', False),
    ('target_precision', '0.9', True), ('target_precision', '1.5', False), ('target_recall', '0.5', True),
    ('target_recall', 'high', False),
    ('compare_to', 'first', True), ('compare_to', 'prediction-model-2026-12-01T10:00:00.000Z', True),
    ('compare_to', ' first', False), ('compare_to', '', False),
    ('image_attributes', 'gs://bucket/attributes/', True), ('image_attributes', 'gs://bucket/a/*.csv', True),
    ('image_attributes', 'attributes.csv', False), ('image_attributes', 'gs://', False),
    ('image_attributes_key', 'uri', True), ('image_attributes_key', 'image path', True),
    ('image_attributes_key', ' ', False), ('image_attributes_key', '', False),
    ('slice_by', 'camera,box_size', True), ('slice_by', 'camera, site', True), ('slice_by', 'prediction_run', True),
    ('slice_by', 'camera,,site', False), ('slice_by', '', False), ('slice_by', ',camera', False),
    ('slice_bins', '4', True), ('slice_bins', '0,10,100', True), ('slice_bins', '-1.5, 2e3', True),
    ('slice_bins', 'quartiles', False), ('slice_bins', '', False), ('slice_bins', '4;10', False),
    ('label_thresholds', '@gs://bucket/out/evaluation/thresholds.csv', True),
    ('label_thresholds', '@/local/thresholds.csv', False),
    ('export', 'coco', True), ('export', 'vertex_jsonl,automl_csv,coco,label_studio', True),
    ('export', 'yolo', False), ('export', 'coco, label_studio', False), ('export', '', False),
    ('export_select', 'kept', True), ('export_select', 'uncertain', True), ('export_select', 'all', False),
    ('uncertain_min', '0.2', True), ('uncertain_min', '2', False), ('uncertain_max', '0.8', True),
    ('export_ml_use', 'test', True), ('export_ml_use', 'unassigned', False),
    ('export_image_prefix', 'gs://b/=/data/local-files/?d=b/', True), ('export_image_prefix', 'gs://b/', False),
    ('label_studio_from_name', 'label', True), ('label_studio_from_name', 'my label', False),
    ('label_studio_to_name', 'img.1', True), ('label_studio_to_name', '', False),
]
# Well-shaped values whose content the pipeline still rejects at launch (checked before any work).
SHAPE_ONLY = {('label_thresholds', '{"A": 2}'), ('keep_labels', '["a", 1]'), ('iou_thresholds', '0.5,0.5'),
              ('iou_thresholds', '0,0.5'), ('eval_iou', '0'), ('export', 'coco,coco'),
              ('uncertain_max', '0.1'), ('max_dets', '10,1'), ('max_dets', '0,10'), ('slice_bins', '1'),
              ('slice_bins', '10,0'), ('slice_by', 'camera,camera'), ('slice_by', 'image_uri')}
EVALUATION = {'ground_truth_format', 'ground_truth_image_prefix', 'ml_use', 'iou_thresholds', 'max_dets',
              'eval_iou', 'eval_confidence', 'target_precision', 'target_recall'}
SLICES = {'image_attributes', 'image_attributes_key', 'slice_by', 'slice_bins'}
EXPORT = {'export_select', 'uncertain_min', 'uncertain_max', 'export_ml_use', 'export_image_prefix',
          'label_studio_from_name', 'label_studio_to_name'}


def accepted(name, value):
    raw = {'input': 'gs://bucket/in', 'output': 'gs://bucket/out', name: value}
    if STREAMING in OPTIONS_BY_NAME[name].modes and BATCH not in OPTIONS_BY_NAME[name].modes:
        raw.setdefault('input_subscription', 'projects/my-project/subscriptions/shard-loader')
    if name == 'roi_min_overlap':
        raw['roi'] = 'POLYGON ((0 0, 1 0, 1 1, 0 0))'
    if name == 'nms_class_agnostic':
        raw['nms_iou'] = '0.5'
    if name in ('images_table', 'dead_letter_table'):
        raw['output_table'] = 'my-project:ds.t'
    if name in EVALUATION:
        raw['ground_truth'] = 'gs://bucket/labels.jsonl'
    if name in EXPORT:
        raw['export'] = 'coco'
    if name in SLICES:
        raw.update({'ground_truth': 'gs://bucket/labels.jsonl', 'image_attributes': 'gs://bucket/attributes.csv'})
        raw.setdefault('slice_by', 'camera')
        raw[name] = value
        if name == 'slice_by' and {part.strip() for part in value.split(',')} <= {'box_size', 'prediction_run'}:
            del raw['image_attributes']  # read only for attributes of its own
    try:
        Settings.from_raw(raw)
        if name == 'roi' and not value.startswith('gs://'):
            read_roi(value)  # inline WKT is checked at launch; a gs:// file is read there too
    except OptionError:
        return False
    on_dataflow = {'input', 'output', 'dead_letter', 'image_sizes', 'summary', 'ground_truth',
                   'image_attributes'}  # gs:// there
    if name == 'label_thresholds' and value.startswith('@'):  # a file, read at launch: gs:// on Dataflow
        return value.startswith('@gs://')
    return value.startswith('gs://') if name in on_dataflow else True


@pytest.mark.parametrize('name, value, expected', CASES)
def test_regexes_agree_with_validation(name, value, expected):
    regex = OPTIONS_BY_NAME[name].regex
    assert accepted(name, value) is expected
    assert bool(re.match(regex, value)) is expected, (name, value, regex)


@pytest.mark.parametrize('name, value', sorted(SHAPE_ONLY))
def test_content_errors_the_regex_cannot_see_fail_at_launch(name, value):
    assert re.match(OPTIONS_BY_NAME[name].regex, value)
    assert not accepted(name, value)


def test_every_option_with_a_shape_has_cases():
    assert {name for name, _, _ in CASES} == {o.name for o in OPTIONS if o.regex}


def run(args, cwd=ROOT, check=True):
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_launcher_entry_file_gives_the_same_output_as_python_m_pipeline(tmp_path):
    roi = 'POLYGON ((0 0, 0.9 0, 0.9 1, 0 1, 0 0))'
    values = {'input_format': 'auto', 'score_threshold': '0.3', 'label_thresholds': 'Salad=0.7',
              'image_sizes': str(SAMPLE / 'image_sizes.csv'), 'image_size': '640x480',
              'probe_image_sizes': 'false', 'keep_labels': 'Salad,Baked Goods,Tomato',
              'drop_labels': 'Tomato', 'min_box_area': '0.01', 'max_detections': '3', 'nms_iou': '0.5',
              'nms_class_agnostic': 'false', 'roi': roi, 'roi_min_overlap': '0.5',
              'probe_allowed_prefixes': 'gs://images-bucket/', 'overwrite': 'false',
              'max_dead_letter_ratio': '0.5', 'fail_on_warning': 'false', 'report': 'true', 'report_samples': '5',
              'report_image_mirror': 'gs://migration-ucaip-trainingaip-20210226015226/=/nonexistent/',
              'ground_truth': str(ROOT / 'tests' / 'fixtures' / 'ground_truth' / 'coco.json'),
              'ground_truth_format': 'coco', 'ground_truth_image_prefix': 'gs://migration-ucaip-trainingaip-20210226015226/',
              'ml_use': 'unassigned', 'iou_thresholds': '0.5,0.75', 'max_dets': '1,5,50', 'eval_iou': '0.6', 'eval_confidence': '0.4',
              'export': 'vertex_jsonl,label_studio', 'export_select': 'uncertain', 'uncertain_min': '0.2',
              'uncertain_max': '0.9', 'export_ml_use': 'test', 'export_image_prefix': 'gs://x/=/y/',
              'label_studio_from_name': 'tag', 'label_studio_to_name': 'img', 'target_recall': '0.3',
              'image_attributes': str(tmp_path / 'attributes.csv'), 'image_attributes_key': 'uri',
              'slice_by': 'camera,box_size', 'slice_bins': '3'}
    (tmp_path / 'attributes.csv').write_text('uri,camera\ngs://migration-ucaip-trainingaip-20210226015226/a.jpg,x\n')
    all_names = [p['name'] for p in json.loads(METADATA.read_text())['parameters']]
    bigquery = {'output_table', 'images_table', 'dead_letter_table', 'write_disposition',
                'bigquery_method'}  # run against the emulator in test_cloud.py
    # One target at a time (--target_recall stands for both); --compare_to needs two runs (the sample has one).
    exclusive = {'target_precision', 'compare_to'}
    names = [name for name in all_names if name not in bigquery | exclusive]
    assert set(values) | {'input', 'output', 'dead_letter', 'summary'} == set(names)

    def args(out):
        given = dict(values, input=str(SAMPLE / 'input'), output=str(out), dead_letter=str(out / 'dl'),
                     summary=str(out / 'summary.json'))
        return [f'--{name}={given[name]}' for name in names]
    launcher_out, module_out = tmp_path / 'launcher', tmp_path / 'module'
    run([sys.executable, str(ROOT / 'templates' / 'main.py'), *args(launcher_out)], cwd=tmp_path)
    run([sys.executable, '-m', 'pipeline', *args(module_out)])
    for table in ('detections', 'images'):
        rows = [sorted(map(str, ds.dataset(str(out / table)).to_table().to_pylist()))
                for out in (launcher_out, module_out)]
        assert rows[0] == rows[1] and rows[0]
    summaries = [json.loads((out / 'summary.json').read_text()) for out in (launcher_out, module_out)]
    assert summaries[0]['detections'] == summaries[1]['detections']
    assert summaries[0]['ground_truth'] == summaries[1]['ground_truth']
    assert summaries[0]['image_attributes'] == summaries[1]['image_attributes'] and summaries[0]['image_attributes'][
        'rows_used'] == 1
    assert summaries[0]['evaluation']['eval_iou'] == 0.6
    assert summaries[0]['export'] == summaries[1]['export'] and summaries[0]['export']['label_studio']['images']


def test_dockerfile_matches_the_package():
    dockerfile = (ROOT / 'templates' / 'Dockerfile').read_text()
    setup = (ROOT / 'setup.py').read_text()
    beam_pin = re.search(r"'apache-beam\[gcp\]==([0-9.]+)'", setup).group(1)
    assert f'ARG BEAM_VERSION={beam_pin}' in dockerfile
    assert 'FROM apache/beam_python3.11_sdk:${BEAM_VERSION}' in dockerfile
    assert re.search(r'FROM python:3\.11\.\d+-slim', dockerfile)  # same Python as the SDK image
    assert 'ENV FLEX_TEMPLATE_PYTHON_PY_FILE=${WORKDIR}/main.py' in dockerfile
    assert 'COPY templates/main.py ./main.py' in dockerfile
    assert re.search(r'template-launcher-base:\w+', dockerfile)  # pinned, not :latest
    assert ':latest' not in dockerfile
    for source in re.findall(r'^COPY (?!--from)(.+) \S+$', dockerfile, re.M):
        for path in source.split():
            assert (ROOT / path).exists(), path
    assert 'pip install --no-cache-dir -r requirements.lock' in dockerfile


def test_the_runtime_lock_agrees_with_the_direct_pins():
    """The image installs requirements.lock: every direct pin of setup.py must be there, at its
    version, and nothing in the lock may be left unpinned."""
    tree = ast.parse((ROOT / 'setup.py').read_text())
    pins = next(ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
                and getattr(node.targets[0], 'id', None) == 'INSTALL_REQUIRES')
    lock = {}
    for line in (ROOT / 'requirements.lock').read_text().splitlines():
        if line.strip() and not line.startswith('#'):
            name, sep, version = line.partition('==')
            assert sep and version, f'not pinned: {line}'
            lock[name.lower().replace('_', '-')] = version
    assert pins
    for requirement in pins:
        name, version = re.match(r'([A-Za-z0-9_.-]+)(?:\[[^]]*\])?==([0-9.]+)', requirement).groups()
        assert lock.get(name.lower().replace('_', '-')) == version, requirement


@pytest.mark.parametrize('target, variables, expected', [
    ('template-image', 'PROJECT=p REGION=us-central1 REPOSITORY=r TAG=t',
     'gcloud builds submit . --project p --config templates/cloudbuild.yaml '
     '--substitutions _IMAGE=us-central1-docker.pkg.dev/p/r/prediction-tables:t'),
    ('template', 'PROJECT=p REGION=us-central1 REPOSITORY=r BUCKET=b TAG=t',
     'gcloud dataflow flex-template build gs://b/templates/prediction-tables-t.json --project p '
     '--image us-central1-docker.pkg.dev/p/r/prediction-tables:t --sdk-language PYTHON '
     '--metadata-file templates/metadata.json'),
    ('run-dataflow', 'PROJECT=p REGION=us-central1 REPOSITORY=r BUCKET=b TAG=t JOB_NAME=j '
     'INPUT=gs://b/in OUTPUT=gs://b/out PARAMETERS=score_threshold=0.5~label_thresholds=A=0.6,B=0.2',
     'gcloud dataflow flex-template run j --project p --region us-central1 --template-file-gcs-location '
     'gs://b/templates/prediction-tables-t.json --staging-location gs://b/staging --temp-location '
     'gs://b/temp --parameters "^~^input=gs://b/in~output=gs://b/out~sdk_container_image='
     'us-central1-docker.pkg.dev/p/r/prediction-tables:t~score_threshold=0.5~label_thresholds=A=0.6,B=0.2"'),
    ('template-streaming', 'PROJECT=p REGION=us-central1 REPOSITORY=r BUCKET=b TAG=t',
     'gcloud dataflow flex-template build gs://b/templates/prediction-tables-streaming-t.json '
     '--project p --image us-central1-docker.pkg.dev/p/r/prediction-tables:t --sdk-language PYTHON '
     '--metadata-file templates/metadata-streaming.json'),
    ('run-dataflow-streaming', 'PROJECT=p REGION=us-central1 REPOSITORY=r BUCKET=b TAG=t JOB_NAME=j '
     'SUBSCRIPTION=shard-loader OUTPUT_TABLE=p:ds.detections INPUT=gs://b/predictions '
     'PARAMETERS=window_seconds=30',
     'gcloud dataflow flex-template run j --project p --region us-central1 --template-file-gcs-location '
     'gs://b/templates/prediction-tables-streaming-t.json --staging-location gs://b/staging '
     '--temp-location gs://b/temp --parameters "^~^input_subscription=projects/p/subscriptions/'
     'shard-loader~output_table=p:ds.detections~input=gs://b/predictions~sdk_container_image='
     'us-central1-docker.pkg.dev/p/r/prediction-tables:t~window_seconds=30"'),
    ('streaming-setup', 'PROJECT=p SOURCE_BUCKET=predictions-bucket TOPIC=shards SUBSCRIPTION=loader '
     'OBJECT_PREFIX=batch/',
     'gcloud storage buckets notifications create gs://predictions-bucket --project p '
     '--topic=projects/p/topics/shards --event-types=OBJECT_FINALIZE --payload-format=json '
     '--object-prefix=batch/\n'
     'gcloud pubsub subscriptions create loader --project p --topic shards --ack-deadline 600'),
])
def test_make_targets_dry_run_print_the_exact_command(target, variables, expected):
    result = run(['make', '--no-print-directory', target, 'DRY_RUN=1', *variables.split()])
    assert result.stdout.strip() == expected


def test_make_targets_name_the_missing_variable():
    result = run(['make', '--no-print-directory', 'run-dataflow', 'DRY_RUN=1', 'PROJECT=p',
                  'REGION=r', 'REPOSITORY=x', 'BUCKET=b'], check=False)
    assert result.returncode != 0 and 'INPUT is not set' in result.stderr


def test_source_distribution_has_every_module_and_runs_in_a_fresh_environment(tmp_path):
    run([sys.executable, 'setup.py', '-q', 'sdist', '--dist-dir', str(tmp_path / 'dist')])
    (archive,) = (tmp_path / 'dist').glob('*.tar.gz')
    with tarfile.open(archive) as tar:
        packaged = {name.split('/', 1)[1] for name in tar.getnames() if name.endswith('.py')}
    modules = {str(path.relative_to(ROOT)) for path in (ROOT / 'pipeline').glob('*.py')}
    assert modules <= packaged

    env_dir = tmp_path / 'env'
    venv.create(env_dir, with_pip=True)
    python = env_dir / 'bin' / 'python'
    run([str(python), '-m', 'pip', 'install', '--quiet', '--no-deps', str(archive)])
    # The dependencies come from the project's environment (installing Beam again would take
    # minutes); the package itself comes only from the archive.
    site = run([str(python), '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])']).stdout
    deps = run([sys.executable, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])']).stdout
    (tmp_path / 'env_site').write_text(site)
    with open(site.strip() + '/project_dependencies.pth', 'w') as handle:
        handle.write(deps.strip() + '\n')
    where = run([str(python), '-c', 'import pipeline; print(pipeline.__file__)'], cwd=tmp_path).stdout
    assert where.startswith(str(env_dir))
    run([str(python), '-m', 'pipeline', '--input', str(SAMPLE / 'input'), '--output',
         str(tmp_path / 'out')], cwd=tmp_path)
    assert json.loads((tmp_path / 'out' / 'summary.json').read_text())['reconciliation']['holds']
