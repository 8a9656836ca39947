"""Cloud Storage notifications (Pub/Sub messages) -> the shards a streaming run must read.

A bucket configured with `gcloud storage buckets notifications create` publishes one message per
object change. The object is named in the message attributes (`bucketId`, `objectId`,
`objectGeneration`, `eventType`) and, with the JSON_API_V1 payload format, in the JSON payload too
(`bucket`, `name`, `generation`, `size`). Both are read, so the NONE payload format works as well.
"""
from typing import Mapping, NamedTuple, Optional, Union

import orjson

from pipeline.io import sources

OBJECT_FINALIZE = 'OBJECT_FINALIZE'

# Why a notification is ignored; each reason is a counter `notifications_ignored_<reason>`.
NOT_FINALIZE = 'event_type'        # a delete, archive or metadata update: nothing new to read
NOT_A_SHARD = 'not_a_shard'        # _SUCCESS, images, anything not named like a result or error shard
OUTSIDE_INPUT = 'outside_input'    # not under the --input prefix
MALFORMED = 'malformed'            # names no object: not a Cloud Storage notification
IGNORE_REASONS = (NOT_FINALIZE, NOT_A_SHARD, OUTSIDE_INPUT, MALFORMED)


class NotifiedShard(NamedTuple):
    """One generation of one shard object."""
    path: str                 # gs://bucket/name
    generation: str
    size: Optional[int]       # bytes, when the payload says (JSON_API_V1); else looked up

    @property
    def dedupe_key(self) -> str:
        """What a redelivery or a repeated notification of the same object version shares."""
        return f'{self.path}#{self.generation}'


class Ignored(NamedTuple):
    reason: str
    detail: str


def parse_notification(data: bytes, attributes: Optional[Mapping[str, str]],
                       prefix: Optional[str]) -> Union[NotifiedShard, Ignored]:
    """The shard a notification announces, or why it is ignored. `prefix` is --input (gs://...),
    a folder as in batch runs: gs://b/run matches gs://b/run/x but not gs://b/run-2/x."""
    attributes = attributes or {}
    payload = _payload(data)
    event = attributes.get('eventType')
    bucket = attributes.get('bucketId') or _text(payload.get('bucket'))
    name = attributes.get('objectId') or _text(payload.get('name'))
    generation = attributes.get('objectGeneration') or _text(payload.get('generation')) or ''
    if not bucket or not name:
        return Ignored(MALFORMED, f'no bucket and object name in attributes {dict(attributes)!r} '
                                  f'or payload {data[:200]!r}')
    path = f'gs://{bucket}/{name}'
    if event is not None and event != OBJECT_FINALIZE:
        return Ignored(NOT_FINALIZE, f'{event} of {path}')
    if sources.classify(path) == sources.OTHER:
        return Ignored(NOT_A_SHARD, path)
    if prefix and not path.startswith(prefix.rstrip('/') + '/'):
        return Ignored(OUTSIDE_INPUT, path)
    return NotifiedShard(path, generation, _size(payload.get('size')))


def _payload(data: bytes) -> dict:
    if not data:
        return {}
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError:
        return {}
    return payload if isinstance(payload, dict) else {}


def _text(value) -> Optional[str]:
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return str(value)
    return None


def _size(value) -> Optional[int]:
    """The JSON API writes sizes as decimal strings."""
    text = _text(value)
    return int(text) if text is not None and text.isdigit() else None
