"""Cloud Storage notifications: the pure parser, and the streaming transform that turns them into
shards once per object version (TestStream on the bundle-based DirectRunner, as streaming needs)."""
import json

import apache_beam as beam
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing import test_stream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from beam_testing import local_test_pipeline

from pipeline.io import notifications
from pipeline.io.notifications import Ignored, NotifiedShard, parse_notification
from pipeline.transforms.read import ParseNotificationsFn, ShardsFromNotifications

PREFIX = 'gs://bucket/runs'


def message(name, generation='1', event='OBJECT_FINALIZE', size=100, payload=True, bucket='bucket'):
    attributes = {'eventType': event, 'bucketId': bucket, 'objectId': name,
                  'objectGeneration': generation, 'payloadFormat': 'JSON_API_V1' if payload else 'NONE'}
    data = json.dumps({'bucket': bucket, 'name': name, 'generation': generation,
                       'size': str(size)}).encode() if payload else b''
    return PubsubMessage(data, attributes)


def parse(msg, prefix=PREFIX):
    return parse_notification(msg.data, msg.attributes, prefix)


def test_a_finalized_shard_under_the_prefix_is_read_with_its_size_and_version():
    shard = parse(message('runs/prediction-m-1/predictions_00001.jsonl', generation='17', size=1234))
    assert shard == NotifiedShard('gs://bucket/runs/prediction-m-1/predictions_00001.jsonl', '17', 1234)
    assert shard.dedupe_key == 'gs://bucket/runs/prediction-m-1/predictions_00001.jsonl#17'


def test_the_none_payload_format_is_read_from_the_attributes_alone():
    shard = parse(message('runs/errors_1.jsonl.gz', payload=False))
    assert shard == NotifiedShard('gs://bucket/runs/errors_1.jsonl.gz', '1', None)


def test_the_payload_alone_is_enough_too():
    data = json.dumps({'bucket': 'bucket', 'name': 'runs/errors_1.jsonl', 'generation': 5,
                       'size': '10'}).encode()
    assert parse_notification(data, None, PREFIX) == NotifiedShard('gs://bucket/runs/errors_1.jsonl',
                                                                   '5', 10)


def test_every_other_notification_is_ignored_with_its_reason():
    cases = {
        notifications.NOT_FINALIZE: message('runs/predictions_1.jsonl', event='OBJECT_DELETE'),
        notifications.NOT_A_SHARD: message('runs/prediction-m-1/_SUCCESS'),
        notifications.OUTSIDE_INPUT: message('runs-2/predictions_1.jsonl'),
        notifications.MALFORMED: PubsubMessage(b'{"not": "a notification"}', {}),
    }
    for reason, msg in cases.items():
        parsed = parse(msg)
        assert isinstance(parsed, Ignored) and parsed.reason == reason, (reason, parsed)
    assert parse(PubsubMessage(b'\xff not json', None)).reason == notifications.MALFORMED
    other_bucket = message('runs/predictions_1.jsonl', bucket='other')
    assert parse(other_bucket).reason == notifications.OUTSIDE_INPUT
    assert parse(other_bucket, prefix=None).path == 'gs://other/runs/predictions_1.jsonl'


def test_a_shard_version_comes_out_once_across_windows_and_a_new_version_again():
    a, b = 'runs/predictions_00001.jsonl', 'runs/errors_00001.jsonl'
    stream = (test_stream.TestStream()
              .add_elements([TimestampedValue(message(a, size=10), 1),
                             TimestampedValue(message(b, size=20), 2),
                             TimestampedValue(message(a, size=10), 3),
                             TimestampedValue(message('runs/_SUCCESS'), 4),
                             TimestampedValue(message(a, event='OBJECT_DELETE'), 5)])
              .advance_watermark_to(200)
              .advance_processing_time(100)
              # Redelivered in a later window, and a rewrite of `a` (a new generation).
              .add_elements([TimestampedValue(message(a, size=10), 250),
                             TimestampedValue(message(a, generation='2', size=30), 260)])
              .advance_watermark_to_infinity())
    options = PipelineOptions(runner='BundleBasedDirectRunner', streaming=True)
    pipeline = beam.Pipeline(options=options)
    shards = pipeline | stream | ShardsFromNotifications(PREFIX, window_seconds=60, dedupe_hours=1)
    windowed = shards.shards | beam.ParDo(_with_window_start)
    assert_that(windowed, equal_to([(f'gs://bucket/{a}', 10, 0), (f'gs://bucket/{b}', 20, 0),
                                    (f'gs://bucket/{a}', 30, 240)]))
    pipeline.run().wait_until_finish()


def test_notifications_are_counted_by_outcome():
    pipeline = local_test_pipeline()
    _ = (pipeline
         | beam.Create([message('runs/predictions_1.jsonl'), message('runs/predictions_1.jsonl'),
                        message('runs/_SUCCESS'), message('elsewhere/errors_1.jsonl'),
                        message('runs/errors_1.jsonl', event='OBJECT_METADATA_UPDATE')])
         | beam.ParDo(ParseNotificationsFn(PREFIX)))
    result = pipeline.run()
    result.wait_until_finish()
    counters = {c.key.metric.name: c.committed
                for c in result.metrics().query(MetricsFilter())['counters']}
    assert counters == {'notifications_accepted': 2, 'notifications_ignored_not_a_shard': 1,
                        'notifications_ignored_outside_input': 1,
                        'notifications_ignored_event_type': 1}


def _with_window_start(shard, window=beam.DoFn.WindowParam):
    path, size = shard
    yield path, size, int(window.start)
