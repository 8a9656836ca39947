"""Streaming, for real: Cloud Storage notifications published to the Pub/Sub emulator, shards in the
Cloud Storage emulator, rows into the BigQuery emulator and windowed Parquet, on the bundle-based
DirectRunner; checked against a batch run of the same shards."""
import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.dataset as ds
import pytest
from conftest import ROOT, SAMPLE
from emulators import PROJECT, Emulators, canonical
from google.api_core.exceptions import GoogleAPIError
from google.api_core.retry import Retry

BUCKET = 'stream-bucket'
TOPIC = f'projects/{PROJECT}/topics/shard-notifications'
WAIT_SECONDS = 240


@pytest.fixture(scope='module')
def cloud(tmp_path_factory):
    emulators = Emulators(tmp_path_factory.mktemp('emulators')).start().start_pubsub()
    try:
        emulators.storage_client().create_bucket(BUCKET)
        emulators.bigquery_client().create_dataset('ds')
        emulators.publisher().create_topic(name=TOPIC)
        upload(emulators, 'image_sizes.csv', SAMPLE / 'image_sizes.csv')
        yield emulators
    finally:
        emulators.stop()


def upload(cloud, name, path):
    blob = cloud.storage_client().bucket(BUCKET).blob(name)
    blob.upload_from_filename(str(path))
    blob.reload()
    return blob


def notify(cloud, blob, event='OBJECT_FINALIZE', payload=True):
    """What a bucket notification configuration publishes (payload format JSON_API_V1 or NONE)."""
    data = json.dumps({'kind': 'storage#object', 'bucket': BUCKET, 'name': blob.name,
                       'generation': str(blob.generation), 'size': str(blob.size),
                       'contentType': 'application/octet-stream'}).encode() if payload else b''
    cloud.publisher().publish(
        TOPIC, data, eventType=event, bucketId=BUCKET, objectId=blob.name,
        objectGeneration=str(blob.generation),
        payloadFormat='JSON_API_V1' if payload else 'NONE').result(timeout=30)


def start_streaming(cloud, log, subscription, prefix, output, table, *extra):
    """The job in its own process group, its output in `log` (a file: a pipe nobody reads could
    fill up, and reading one blocks while the job lives)."""
    command = [sys.executable, '-m', 'pipeline', '--input_subscription', subscription,
               '--input', prefix, '--output', output, '--output_table', f'{PROJECT}:ds.{table}',
               '--image_sizes', f'gs://{BUCKET}/image_sizes.csv', '--project', PROJECT,
               '--window_seconds', '2', *extra]
    with open(log, 'wb') as handle:
        process = subprocess.Popen(command, cwd=ROOT, env=cloud.env, stdout=handle,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while 'Streaming: loading each shard notified on' not in log.read_text():
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    return process


def stop(process, log):
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return log.read_text()


def rows_of(cloud, table):
    # A short retry: the emulator answers 500 while it runs a load job, and the client's default
    # retry would wait out 600 s.
    rows = cloud.bigquery_client().list_rows(f'{PROJECT}.ds.{table}', retry=Retry(deadline=30),
                                             timeout=30)
    return [dict(row) for row in rows]


def wait_for(condition, process, what, log, progress=lambda: ''):
    """Polls `condition`; a failure shows how far it got (`progress`) and the end of the job's log,
    the only traces of why."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        assert process.poll() is None, 'the streaming job exited:\n' + log.read_text()[-8000:]
        try:
            if condition():
                return
        except GoogleAPIError:
            pass  # the emulator is busy: ask again
        time.sleep(1)
    try:
        reached = progress()
    except GoogleAPIError as exc:
        reached = f'(the emulator did not answer: {exc})'
    pytest.fail(f'{what}: not within {WAIT_SECONDS} s; reached: {reached}; the job\'s log ends with:\n'
                f'{log.read_text()[-8000:]}')


def files_of(cloud, folder):
    root = cloud.local_path(BUCKET, folder)
    return sorted(p for p in root.rglob('*') if p.is_file() and '.temp' not in str(p)) \
        if root.exists() else []


@pytest.mark.parametrize('method', ['streaming_inserts', 'file_loads'])
def test_each_notified_shard_is_loaded_once_with_the_rows_of_a_batch_run(cloud, tmp_path, method):
    """Each method in its own folder, tables and subscription: `method` names all three."""
    subscription = f'projects/{PROJECT}/subscriptions/loader-{method}'
    cloud.subscriber().create_subscription(name=subscription, topic=TOPIC)
    prefix, out, table = f'gs://{BUCKET}/{method}/predictions', f'{method}/stream-out', method
    log = tmp_path / 'streaming.log'
    process = start_streaming(cloud, log, subscription, prefix, f'gs://{BUCKET}/{out}', table,
                              '--bigquery_method', method, '--temp_location', f'gs://{BUCKET}/tmp')
    try:
        shards = []
        for path in sorted((SAMPLE / 'input').rglob('*')):
            if path.is_file():
                shards.append(upload(cloud, f'{method}/predictions/{path.relative_to(SAMPLE / "input")}',
                                     path))
        for blob in shards:
            notify(cloud, blob, payload=blob.name.endswith('.gz'))  # both payload formats
        repeated = next(b for b in shards if b.name.endswith('/image_object_detection_0.jsonl'))
        notify(cloud, repeated)  # a second notification of the same version
        outside = upload(cloud, f'{method}/elsewhere/predictions_1.jsonl', SAMPLE / 'input' / next(
            p.relative_to(SAMPLE / 'input') for p in (SAMPLE / 'input').rglob('predictions_*.jsonl')))
        notify(cloud, outside)
        notify(cloud, repeated, event='OBJECT_DELETE')
        gone = upload(cloud, f'{method}/predictions/gone/predictions_00001.jsonl',
                      SAMPLE / 'image_sizes.csv')
        gone.delete()  # deleted before the job read it: a dead letter, not a failed job
        notify(cloud, gone, payload=False)

        batch = tmp_path / 'batch'
        result = subprocess.run(
            [sys.executable, '-m', 'pipeline', '--input', prefix, '--output', str(batch),
             '--image_sizes', f'gs://{BUCKET}/image_sizes.csv', '--project', PROJECT],
            cwd=ROOT, env=cloud.env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout + result.stderr
        expected = ds.dataset(str(batch / 'detections')).to_table().to_pylist()
        expected_images = ds.dataset(str(batch / 'images')).to_table().to_pylist()
        expected_dead = [json.loads(line) for path in sorted((batch / 'dead_letter').glob('*.jsonl'))
                         for line in path.read_text().splitlines()]
        assert expected and expected_dead

        wait_for(lambda: (len(rows_of(cloud, table)) >= len(expected)
                          and len(rows_of(cloud, f'{table}_images')) >= len(expected_images)
                          and len(rows_of(cloud, f'{table}_error_records')) > len(expected_dead)),
                 process, 'the rows of every notified shard in BigQuery', log,
                 lambda: (f'{len(rows_of(cloud, table))} of {len(expected)} detections, '
                          f'{len(rows_of(cloud, f"{table}_images"))} of {len(expected_images)} images, '
                          f'{len(rows_of(cloud, f"{table}_error_records"))} of {len(expected_dead) + 1} '
                          f'error records; windowed files: {[p.name for p in files_of(cloud, out)]}'))
        # A redelivery after the rows arrived, then a new shard: once that shard's rows are in, the
        # redelivery has been through the job too.
        notify(cloud, repeated)
        late = upload(cloud, f'{method}/predictions/late/errors_1.jsonl',
                      next((SAMPLE / 'input').rglob('errors_*.jsonl')))
        notify(cloud, late)
        wait_for(lambda: any(r['source_file'].endswith('/late/errors_1.jsonl')
                             for r in rows_of(cloud, f'{table}_error_records')),
                 process, 'the late shard', log)
        parquet_dead = lambda: [json.loads(line) for path in files_of(cloud, f'{out}/dead_letter')
                                for line in path.read_text().splitlines()]
        wait_for(lambda: any(r['source_file'].endswith('/late/errors_1.jsonl') for r in parquet_dead()),
                 process, 'the late shard\'s dead letters in the windowed files', log)
    finally:
        output = stop(process, log)

    def early(rows):
        return [r for r in rows if '/late/' not in r['source_file']]
    assert canonical(early(rows_of(cloud, table))) == canonical(expected), output[-5000:]
    assert 'Traceback' not in output, output[-5000:]
    streamed = early(ds.dataset(str(cloud.local_path(BUCKET, f'{out}/detections')))
                     .to_table().to_pylist())
    assert canonical(streamed) == canonical(expected)
    assert sorted((r['image_uri'], r['source_file'], r['detection_count'])
                  for r in early(rows_of(cloud, f'{table}_images'))) == \
        sorted((r['image_uri'], r['source_file'], r['detection_count']) for r in expected_images)
    dead_key = lambda r: (r['kind'], r['source_file'], r['payload'], r['error_code'])
    expected_dead_keys = sorted(map(dead_key, expected_dead + [
        {'kind': 'unreadable_file', 'source_file': f'{prefix}/gone/predictions_00001.jsonl',
         'payload': None, 'error_code': None}]))
    assert sorted(map(dead_key, early(rows_of(cloud, f'{table}_error_records')))) == expected_dead_keys
    assert sorted(map(dead_key, early(parquet_dead()))) == expected_dead_keys
    names = [p.name for p in files_of(cloud, f'{out}/detections')]
    assert names and all(name.startswith('part-') and name.endswith('.parquet') for name in names)
    assert not any('elsewhere' in r['source_file'] for r in rows_of(cloud, table))
