"""Loaded by every Python process the cloud tests start (PYTHONPATH), including Beam's worker
processes: points Beam's apitools BigQuery client, whose base URL is hard-coded, at the emulator.
Used by the tests only; the pipeline itself has no such switch."""
import os

_BASE_URL = os.environ.get('TEST_BIGQUERY_API_BASE_URL')
if _BASE_URL:
    from apache_beam.io.gcp.internal.clients.bigquery import bigquery_v2_client

    bigquery_v2_client.BigqueryV2.BASE_URL = _BASE_URL
