"""Loaded by every Python process the cloud tests start (PYTHONPATH), including Beam's worker
processes: points Beam's apitools BigQuery client, whose base URL is hard-coded, at the emulator.
Used by the tests only; the pipeline itself has no such switch."""
import os

_BASE_URL = os.environ.get('TEST_BIGQUERY_API_BASE_URL')
if _BASE_URL:
    from apache_beam.io.gcp.internal.clients.bigquery import bigquery_v2_client

    bigquery_v2_client.BigqueryV2.BASE_URL = _BASE_URL

# The Cloud Storage emulator ignores ifGenerationMatch, on which the pipeline's run lock relies
# (an object created only if absent). In the emulator's own process (TEST_STORAGE_PRECONDITIONS),
# its handlers answer 412 as Cloud Storage does when the object's generation is not the one asked
# for (0: the object must not exist), for uploads, reads and deletes.
if os.environ.get('TEST_STORAGE_PRECONDITIONS'):
    import functools
    import threading
    from http import HTTPStatus

    from gcp_storage_emulator import storage as _storage
    from gcp_storage_emulator.exceptions import NotFound
    from gcp_storage_emulator.handlers import objects as _objects

    _expected = threading.local()

    class _PreconditionFailed(Exception):
        pass

    def _generation(storage, bucket, name) -> str:
        try:
            return str(storage.get_file_obj(bucket, name).get('generation') or '0')
        except NotFound:
            return '0'

    def _refuse(response):
        response.status = HTTPStatus.PRECONDITION_FAILED
        response.json({'error': {'code': 412, 'message': 'At least one of the pre-conditions you '
                                 'specified did not hold.'}})

    _create_file = _storage.Storage.create_file

    def create_file(self, bucket_name, file_name, *args, **kwargs):
        wanted = getattr(_expected, 'generation', None)
        if wanted is not None and _generation(self, bucket_name, file_name) != wanted:
            raise _PreconditionFailed()
        return _create_file(self, bucket_name, file_name, *args, **kwargs)

    _storage.Storage.create_file = create_file

    def _guard_upload(handler):
        @functools.wraps(handler)
        def guarded(request, response, storage, *args, **kwargs):
            _expected.generation = (request.query.get('ifGenerationMatch') or [None])[0]
            try:
                return handler(request, response, storage, *args, **kwargs)
            except _PreconditionFailed:
                _refuse(response)
            finally:
                _expected.generation = None
        return guarded

    def _guard_existing(handler):
        @functools.wraps(handler)
        def guarded(request, response, storage, *args, **kwargs):
            wanted = (request.query.get('ifGenerationMatch') or [None])[0]
            if wanted is not None and _generation(storage, request.params['bucket_name'],
                                                  request.params['object_id']) != wanted:
                return _refuse(response)
            return handler(request, response, storage, *args, **kwargs)
        return guarded

    _objects.insert = _guard_upload(_objects.insert)
    for _name in ('get', 'download', 'delete'):
        setattr(_objects, _name, _guard_existing(getattr(_objects, _name)))
