"""Dead letters: their kinds, and the records every dead-letter sink writes (the contract)."""
import base64
import datetime
import hashlib
from typing import TYPE_CHECKING, Optional

import orjson

from pipeline.core.schema import DEAD_LETTER_COLUMNS, PAYLOAD_LIMIT_BYTES

if TYPE_CHECKING:
    from pipeline.core.formats import Rejection

# A line that is not JSON; JSON that is not a valid record; a record that is the prediction service's
# own error; a file (or range of one) that cannot be read; a row the output table rejected; a line, row
# or image of the ground truth that cannot be used (evaluation); a row of image attributes that cannot
# be used (slices).
MALFORMED_LINE = 'malformed_line'
INVALID_RECORD = 'invalid_record'
PREDICTION_ERROR = 'prediction_error'
UNREADABLE_FILE = 'unreadable_file'
WRITE_FAILURE = 'write_failure'
INVALID_GROUND_TRUTH = 'invalid_ground_truth'
INVALID_ATTRIBUTE = 'invalid_attribute'
# One annotation of a kept line whose box lies outside the image: the line and its other boxes stay.
INVALID_BOX = 'invalid_box'
LINE_DEAD_LETTER_KINDS = (PREDICTION_ERROR, MALFORMED_LINE, INVALID_RECORD)
DEAD_LETTER_KINDS = LINE_DEAD_LETTER_KINDS + (INVALID_BOX, UNREADABLE_FILE, WRITE_FAILURE, INVALID_GROUND_TRUTH,
                                              INVALID_ATTRIBUTE)

FIELDS = tuple(column.name for column in DEAD_LETTER_COLUMNS)


def utc_timestamp(now: Optional[datetime.datetime] = None) -> str:
    """RFC 3339 UTC with milliseconds, e.g. 2026-11-27T09:30:00.123Z."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return now.astimezone(datetime.timezone.utc).isoformat(timespec='milliseconds').replace('+00:00', 'Z')


def encode_payload(payload: Optional[bytes]):
    """(text, encoding): the line as UTF-8 text, or base64 of its bytes where it is not valid UTF-8."""
    if payload is None:
        return None, None
    try:
        return payload.decode('utf-8'), None
    except UnicodeDecodeError:
        return base64.b64encode(payload).decode('ascii'), 'base64'


def make_dead_letter(kind: str, source_file: str, message: str, payload: Optional[bytes] = None,
                     image_uri: Optional[str] = None, error_code: Optional[int] = None,
                     error_status: Optional[str] = None, timestamp: Optional[str] = None) -> dict:
    text, encoding = encode_payload(payload)
    return {
        'timestamp': timestamp or utc_timestamp(),
        'kind': kind,
        'source_file': source_file,
        'image_uri': image_uri,
        'error_code': error_code,
        'error_status': error_status,
        'error_message': message,
        'payload': text,
        'payload_encoding': encoding,
    }


def from_rejection(rejection: 'Rejection', source_file: str, line: bytes,
                   timestamp: Optional[str] = None) -> dict:
    return make_dead_letter(rejection.kind, source_file, rejection.message, line,
                            rejection.image_uri, rejection.error_code, rejection.error_status,
                            timestamp)


def for_bigquery(record: dict) -> dict:
    """The dead-letter row for the BigQuery table: a payload over PAYLOAD_LIMIT_BYTES is cut (a
    streaming-insert row is capped near 9 MB), with the full length and SHA-256 kept beside it."""
    payload = record['payload']
    row = dict(record, payload_length=None, payload_sha256=None)
    if payload is not None:
        data = payload.encode('utf-8')
        row['payload_length'] = len(data)
        row['payload_sha256'] = hashlib.sha256(data).hexdigest()
        if len(data) > PAYLOAD_LIMIT_BYTES:
            row['payload'] = data[:PAYLOAD_LIMIT_BYTES].decode('utf-8', 'ignore')
    return row


def to_json_line(record: dict) -> str:
    return orjson.dumps(record).decode('utf-8')
