"""Cloud Storage in, Parquet and BigQuery out, for real, against local emulators started here."""
import json
import pathlib
import subprocess
import sys

import pyarrow.dataset as ds
import pytest
from conftest import ROOT, SAMPLE
from emulators import PROJECT, Emulators, canonical

BUCKET = 'test-bucket'

@pytest.fixture(scope='module')
def cloud(tmp_path_factory):
    emulators = Emulators(tmp_path_factory.mktemp('emulators')).start()
    try:
        bucket = emulators.storage_client().create_bucket(BUCKET)
        for path in sorted((SAMPLE / 'input').rglob('*')):
            if path.is_file():
                bucket.blob(f'input/{path.relative_to(SAMPLE / "input")}').upload_from_filename(str(path))
        bucket.blob('image_sizes.csv').upload_from_filename(str(SAMPLE / 'image_sizes.csv'))
        emulators.bigquery_client().create_dataset('ds')
        yield emulators
    finally:
        emulators.stop()


@pytest.fixture(scope='module')
def local_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('local') / 'out'
    run(None, '--input', SAMPLE / 'input', '--output', out, '--image_sizes', SAMPLE / 'image_sizes.csv')
    return out


def run(cloud, *args, check=True):
    result = subprocess.run([sys.executable, '-m', 'pipeline', *map(str, args)], cwd=ROOT,
                            env=cloud.env if cloud else None, capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def gcs_args(table, *extra):
    return ['--input', f'gs://{BUCKET}/input', '--image_sizes', f'gs://{BUCKET}/image_sizes.csv',
            '--output_table', f'{PROJECT}:ds.{table}', '--project', PROJECT,
            '--temp_location', f'gs://{BUCKET}/tmp', *extra]


def rows_of_table(cloud, table):
    return [dict(row) for row in cloud.bigquery_client().list_rows(f'{PROJECT}.ds.{table}')]


def local_rows(out, table='detections'):
    return ds.dataset(str(out / table)).to_table().to_pylist()


def test_gcs_input_to_gcs_parquet_and_bigquery_file_loads(cloud, local_run):
    result = run(cloud, *gcs_args('detections', '--output', f'gs://{BUCKET}/out'))
    assert 'OK: 15 non-blank lines read == 12 images + 3 line dead letters' in result.stdout
    expected = canonical(local_rows(local_run))
    assert canonical(rows_of_table(cloud, 'detections')) == expected
    gcs_parquet = ds.dataset(str(cloud.local_path(BUCKET, 'out/detections'))).to_table().to_pylist()
    assert canonical(gcs_parquet) == expected
    images = rows_of_table(cloud, 'detections_images')
    assert sorted((r['image_uri'], r['detection_count']) for r in images) == \
        sorted((r['image_uri'], r['detection_count']) for r in local_rows(local_run, 'images'))
    errors = rows_of_table(cloud, 'detections_error_records')  # the default dead-letter table
    assert sorted(r['error_status'] for r in errors) == ['INVALID_ARGUMENT', 'NOT_FOUND', 'NOT_FOUND']
    assert all(r['payload_length'] == len(r['payload'].encode()) and len(r['payload_sha256']) == 64
               for r in errors)
    gcs_dead = cloud.local_path(BUCKET, 'out/dead_letter')  # --output given too: both sinks
    assert sum(len(p.read_text().splitlines()) for p in gcs_dead.glob('*.jsonl')) == 3
    summary = json.loads(cloud.local_path(BUCKET, 'out/summary.json').read_text())
    assert summary['tables']['output_table'] == f'{PROJECT}:ds.detections'
    table = cloud.bigquery_client().get_table(f'{PROJECT}.ds.detections')
    assert table.time_partitioning.type_ == 'DAY' and table.time_partitioning.field is None
    assert table.clustering_fields == ['label', 'image_uri']
    modes = {field.name: (field.field_type, field.mode) for field in table.schema}
    assert modes['image_uri'] == ('STRING', 'REQUIRED') and modes['rank'][1] == 'NULLABLE'
    assert modes['rank'][0] in ('INTEGER', 'INT64')
    assert modes['score'][0] in ('FLOAT', 'FLOAT64')


def test_bigquery_streaming_inserts_give_the_same_rows(cloud, local_run):
    result = run(cloud, *gcs_args('streamed', '--bigquery_method', 'streaming_inserts',
                                  '--direct_num_workers=2', '--direct_running_mode=multi_processing'))
    assert 'OK:' in result.stdout  # BigQuery only: the summary is still printed
    assert canonical(rows_of_table(cloud, 'streamed')) == canonical(local_rows(local_run))
    assert len(rows_of_table(cloud, 'streamed_error_records')) == 3


def test_truncate_rerun_gives_the_same_table(cloud, local_run):
    for _ in range(2):
        run(cloud, *gcs_args('truncated', '--write_disposition', 'truncate',
                             '--dead_letter_table', f'{PROJECT}:ds.truncated_dl'))
        assert canonical(rows_of_table(cloud, 'truncated')) == canonical(local_rows(local_run))
        assert len(rows_of_table(cloud, 'truncated_dl')) == 3


def test_append_to_an_older_table_adds_the_new_columns(cloud):
    from google.cloud import bigquery
    client = cloud.bigquery_client()
    old = bigquery.Table(f'{PROJECT}.ds.older', schema=[
        bigquery.SchemaField('image_uri', 'STRING', mode='REQUIRED'),
        bigquery.SchemaField('score', 'FLOAT64')])
    client.create_table(old)  # (the emulator cannot read rows written before a schema change)
    run(cloud, *gcs_args('older'))
    table = client.get_table(f'{PROJECT}.ds.older')
    assert [f.name for f in table.schema][:2] == ['image_uri', 'score']
    assert {'box_wkt', 'rank', 'prediction_run'} <= {f.name for f in table.schema}
    # The emulator updates the schema it reports but not its stored table, so the rows loaded after
    # the change cannot be read back here (README: not tested for real).


def test_bigquery_options_fail_before_any_work(cloud):
    result = run(cloud, '--input', f'gs://{BUCKET}/input', '--output_table', f'{PROJECT}:ds.x',
                 '--project', PROJECT, check=False)
    assert result.returncode == 2 and '--temp_location' in result.stderr
    result = run(cloud, *gcs_args('x', '--write_disposition', 'truncate',
                                  '--bigquery_method', 'streaming_inserts'), check=False)
    assert result.returncode == 2 and 'cannot be used with' in result.stderr
    result = run(cloud, '--input', f'gs://{BUCKET}/input', '--output_table', f'{PROJECT}:nodataset.x',
                 '--bigquery_method', 'streaming_inserts', check=False)
    assert result.returncode == 2 and 'dataset test-project.nodataset' in result.stderr
    assert 'create the dataset first' in result.stderr


def test_rows_bigquery_rejects_reach_the_dead_letter_table(cloud, local_run):
    from emulators import RejectingProxy
    marker = '3167707458'  # every detection of one image is rejected by the detections table
    proxy = RejectingProxy(cloud.bq_url, 'rejecting', marker)
    try:
        result = subprocess.run(
            [sys.executable, '-m', 'pipeline', *gcs_args('rejecting', '--bigquery_method',
                                                         'streaming_inserts')],
            cwd=ROOT, env=proxy.env(cloud.env), capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
    finally:
        proxy.stop()
    expected = [row for row in local_rows(local_run) if marker not in row['image_uri']]
    assert canonical(rows_of_table(cloud, 'rejecting')) == canonical(expected)
    failures = [r for r in rows_of_table(cloud, 'rejecting_error_records') if r['kind'] == 'write_failure']
    rejected = len(local_rows(local_run)) - len(expected)
    assert proxy.rejected == rejected > 0 and len(failures) == rejected
    for failure in failures:
        assert 'test rejection' in failure['error_message'] and marker in failure['image_uri']
        assert json.loads(failure['payload'])['image_uri'] == failure['image_uri']
    assert f'write_failure {rejected}' in result.stdout


def test_cloud_storage_faults_are_retried_and_the_output_is_identical(cloud, local_run):
    from emulators import FlakyProxy
    proxy = FlakyProxy(cloud.gcs_url, every=6)
    try:
        result = subprocess.run(
            [sys.executable, '-m', 'pipeline', '--input', f'gs://{BUCKET}/input', '--image_sizes',
             f'gs://{BUCKET}/image_sizes.csv', '--output', f'gs://{BUCKET}/flaky'],
            cwd=ROOT, env=proxy.env(cloud.env), capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
    finally:
        proxy.stop()
    assert proxy.failed >= 5, (proxy.requests, proxy.failed)
    gcs_rows = ds.dataset(str(cloud.local_path(BUCKET, 'flaky/detections'))).to_table().to_pylist()
    assert canonical(gcs_rows) == canonical(local_rows(local_run))
    summary = json.loads(cloud.local_path(BUCKET, 'flaky/summary.json').read_text())
    assert summary['reconciliation']['holds'] and summary['dead_letters']['unreadable_file'] == 0


def test_no_credentials_in_logs_or_dead_letters(cloud):
    result = run(cloud, *gcs_args('quiet', '--output', f'gs://{BUCKET}/quiet'))
    token = json.loads(pathlib.Path(cloud.env['GOOGLE_APPLICATION_CREDENTIALS']).read_text())['token']
    assert token not in result.stdout + result.stderr
    dead = ''.join(p.read_text() for p in cloud.local_path(BUCKET, 'quiet/dead_letter').glob('*.jsonl'))
    assert dead and token not in dead and 'Authorization' not in dead


def test_probe_and_operation_json_on_cloud_storage(cloud):
    import io as _io

    from PIL import Image
    bucket = cloud.storage_client().bucket(BUCKET)
    png = _io.BytesIO()
    Image.new('RGB', (320, 240)).save(png, 'PNG')
    bucket.blob('images/photo.png').upload_from_string(png.getvalue())
    line = {'ID': f'gs://{BUCKET}/images/photo.png', 'annotations': [{
        'display_name': 'A', 'annotation_spec_id': '1', 'image_object_detection': {
            'score': 0.9, 'bounding_box': {'normalized_vertices': [{}, {'x': 0.5, 'y': 0.5}]}}}]}
    missing = dict(line, ID=f'gs://{BUCKET}/images/missing.png')
    bucket.blob('probe-run/prediction-m-1/image_object_detection_0.jsonl').upload_from_string(
        json.dumps(line) + '\n' + json.dumps(missing) + '\n')
    bucket.blob('operation.json').upload_from_string(json.dumps(
        {'metadata': {'batchPredictDetails': {'outputInfo': {
            'gcsOutputDirectory': f'gs://{BUCKET}/probe-run/prediction-m-1'}}}}))
    run(cloud, '--input', f'gs://{BUCKET}/operation.json', '--output', f'gs://{BUCKET}/probed',
        '--probe_image_sizes')
    rows = ds.dataset(str(cloud.local_path(BUCKET, 'probed/detections'))).to_table().to_pylist()
    by_uri = {row['image_uri']: row for row in rows}
    assert (by_uri[line['ID']]['image_width'], by_uri[line['ID']]['px_y_max']) == (320, 120.0)
    assert by_uri[missing['ID']]['image_width'] is None
    summary = json.loads(cloud.local_path(BUCKET, 'probed/summary.json').read_text())
    assert summary['image_sizes']['from_probe'] == 1
    assert sum(summary['image_sizes']['probe_failures'].values()) == 1


def test_cloud_storage_lock_refuses_a_running_run_and_takes_over_an_ended_one(cloud):
    bucket = cloud.storage_client().bucket(BUCKET)
    lock = bucket.blob('locked/.prediction-tables.lock')
    holder = {'run_id': 'f' * 32, 'state': 'running', 'host': 'another-machine', 'pid': 1,
              'started': '2026-12-01T00:00:00Z', 'input': 'gs://x'}
    lock.upload_from_string(json.dumps(holder))
    refused = run(cloud, '--input', f'gs://{BUCKET}/input', '--output', f'gs://{BUCKET}/locked', check=False)
    assert refused.returncode == 2 and 'is held by run ' + 'f' * 32 in refused.stderr
    assert 'another-machine' in refused.stderr and not bucket.blob('locked/summary.json').exists()
    lock.upload_from_string(json.dumps(dict(holder, state='ended')))
    bucket.blob('locked/detections/part-00003-of-00004.parquet').upload_from_string(b'a stopped run')
    run(cloud, '--input', f'gs://{BUCKET}/input', '--output', f'gs://{BUCKET}/locked', '--report=false')
    assert not lock.exists()  # a completed run leaves no lock
    assert not bucket.blob('locked/detections/part-00003-of-00004.parquet').exists()
    assert json.loads(bucket.blob('locked/summary.json').download_as_bytes())['reconciliation']['holds']


def test_a_local_operation_json_pointing_to_cloud_storage_allows_only_cloud_storage(cloud, tmp_path):
    bucket = cloud.storage_client().bucket(BUCKET)
    local_image = tmp_path / 'local.png'
    from PIL import Image
    Image.new('RGB', (11, 13)).save(local_image)
    line = {'ID': str(local_image), 'annotations': []}
    bucket.blob('scheme-run/prediction-m-1/image_object_detection_0.jsonl').upload_from_string(
        json.dumps(line) + '\n')
    operation = tmp_path / 'operation.json'
    operation.write_text(json.dumps({'outputInfo': {'gcsOutputDirectory': f'gs://{BUCKET}/scheme-run'}}))
    run(cloud, '--input', operation, '--output', tmp_path / 'o', '--probe_image_sizes', '--report=false')
    summary = json.loads((tmp_path / 'o' / 'summary.json').read_text())
    assert summary['image_sizes']['probe_failures'] == {'skipped_not_allowed': 1}


def test_evaluation_from_cloud_storage_to_bigquery_equals_the_local_files(cloud, tmp_path):
    """Ground truth read from Cloud Storage; the four evaluation tables in BigQuery hold what the
    Parquet files of the same run hold, and metrics.json lands in the bucket."""
    truth = tmp_path / 'truth.jsonl'
    lines = [json.dumps({'imageGcsUri': row['image_uri'], 'boundingBoxAnnotations': [
        {'displayName': 'Salad', 'xMin': 0.1, 'xMax': 0.9, 'yMin': 0.05, 'yMax': 0.95}]})
        for row in local_rows_of_sample_images()]
    truth.write_text('\n'.join(lines) + '\n')
    cloud.storage_client().bucket(BUCKET).blob('labels/truth.jsonl').upload_from_filename(str(truth))
    attributes = ''.join(json.dumps({'image_uri': row['image_uri'], 'site': f'site-{n % 2}'}) + '\n'
                         for n, row in enumerate(local_rows_of_sample_images()))
    cloud.storage_client().bucket(BUCKET).blob('attributes/sites.jsonl').upload_from_string(attributes)
    result = run(cloud, *gcs_args('evaluated', '--output', f'gs://{BUCKET}/evaluated',
                                  '--ground_truth', f'gs://{BUCKET}/labels/', '--image_attributes',
                                  f'gs://{BUCKET}/attributes/', '--slice_by', 'site,box_size'))
    assert 'mAP@0.5' in result.stdout and 'OK:' in result.stdout
    out = cloud.local_path(BUCKET, 'evaluated/evaluation')
    slices = json.loads((out / 'metrics.json').read_text())['slices']
    assert {entry['slice_value'] for entry in slices if entry['slice_by'] == 'site'} == {'site-0', 'site-1'}
    for table, folder in (('matches', 'matches'), ('confidence', 'confidence_metrics'),
                          ('confusion', 'confusion_matrix'), ('slices', 'slices')):
        files = ds.dataset(str(out / folder)).to_table().to_pylist()
        assert files and same_rows(rows_of_table(cloud, f'evaluated_eval_{table}')) == same_rows(files)
    document = json.loads((out / 'metrics.json').read_text())
    metric_rows = rows_of_table(cloud, 'evaluated_eval_metrics')
    for run_entry in document['runs']:
        for label in run_entry['labels']:
            mine = sorted((r for r in metric_rows if r['prediction_run'] == run_entry['prediction_run']
                           and r['label'] == label['label']), key=lambda r: r['iou_threshold'])
            assert [r['iou_threshold'] for r in mine] == document['iou_thresholds']
            assert [r['ap'] for r in mine] == (label['ap_per_iou'] or [None] * len(mine))


def test_the_comparison_of_two_runs_lands_in_bigquery_as_in_the_files(cloud, tmp_path):
    """--compare_to on the sample's two runs, from Cloud Storage: the comparison table in BigQuery holds
    the rows of the run's own Parquet files, and comparison.json lands in the bucket."""
    bucket = cloud.storage_client().bucket(BUCKET)
    shard = SAMPLE / 'input' / 'prediction-salads_legacy-2021-03-01T10:52:53.972802Z' / 'image_object_detection_0.jsonl'
    lines = [json.loads(line) for line in shard.read_text().splitlines() if line.strip()]
    bucket.blob('compare/prediction-a-2026-12-01T00:00:00Z/image_object_detection_0.jsonl').upload_from_filename(
        str(shard))
    for line in lines:  # the second run: the same lines, each without its last box
        line['annotations'] = line.get('annotations', [])[:-1]
    bucket.blob('compare/prediction-b-2026-12-02T00:00:00Z/image_object_detection_0.jsonl').upload_from_string(
        '\n'.join(json.dumps(line) for line in lines) + '\n')
    result = run(cloud, '--input', f'gs://{BUCKET}/compare', '--output', f'gs://{BUCKET}/compared',
                 '--output_table', f'{PROJECT}:ds.compared', '--project', PROJECT,
                 '--temp_location', f'gs://{BUCKET}/tmp', '--compare_to', 'first')
    assert 'compared with' in result.stdout and 'OK:' in result.stdout
    files = ds.dataset(str(cloud.local_path(BUCKET, 'compared/comparison'))).to_table().to_pylist()
    assert files and same_rows(rows_of_table(cloud, 'compared_comparison')) == same_rows(files)
    document = json.loads(cloud.local_path(BUCKET, 'compared/comparison.json').read_text())
    assert document['runs'][0]['compared'] == len({row['image_uri'] for row in files}) == len({line['ID'] for line in lines})
    assert {row['outcome'] for row in files} == {'same', 'removed'}


def same_rows(rows):
    """Rows of any table, comparable whatever their order (floats to 12 digits)."""
    return sorted(json.dumps({k: round(v, 12) if isinstance(v, float) else v for k, v in row.items()},
                             sort_keys=True) for row in rows)


def local_rows_of_sample_images():
    rows = {}
    for path in (SAMPLE / 'input').rglob('*.jsonl'):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            uri = record.get('ID') or record.get('instance', {}).get('content')
            if uri and 'error' not in record and 'status' not in record:
                rows[uri] = {'image_uri': uri}
    return list(rows.values())
