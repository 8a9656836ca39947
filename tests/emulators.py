"""Local stand-ins for Cloud Storage (gcp-storage-emulator) and BigQuery (bqemulator), started as
processes on free loopback ports and stopped whatever happens."""
import contextlib
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

PROJECT = 'test-project'
BIN = pathlib.Path(sys.executable).parent
PATCH_DIR = pathlib.Path(__file__).resolve().parent / 'emulator_patch'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def wait_until(url: str, process: subprocess.Popen, log: pathlib.Path, seconds: float = 60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f'{url}: the emulator exited: {log.read_text()[-2000:]}')
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f'{url}: no answer after {seconds} s: {log.read_text()[-2000:]}')


def _spatial_extension() -> pathlib.Path:
    import duckdb_extension_spatial  # the extension ships in this package; offline, duckdb would fetch it
    (path,) = pathlib.Path(duckdb_extension_spatial.__file__).parent.glob('extensions/*/spatial.duckdb_extension')
    return path


class Emulators:
    """Both emulators; `env` is the environment a pipeline process needs to use them."""

    def __init__(self, root: pathlib.Path):
        self.root = root
        self.processes = []
        self.storage_dir = root / 'storage'
        self.gcs_port, self.bq_port = free_port(), free_port()
        self.gcs_url = f'http://127.0.0.1:{self.gcs_port}'
        self.bq_url = f'http://127.0.0.1:{self.bq_port}'

    def start(self):
        self.storage_dir.mkdir(parents=True)
        credentials = self.root / 'credentials.json'
        # A throwaway user credential with a token valid far into the future: the clients start at
        # once, offline, instead of spending ~20 s looking for credentials.
        credentials.write_text(json.dumps({
            'type': 'authorized_user', 'client_id': 'test', 'client_secret': 'test',
            'refresh_token': 'test', 'token': 'test-token', 'expiry': '2099-01-01T00:00:00Z'}))
        self.env = dict(os.environ, STORAGE_EMULATOR_HOST=self.gcs_url, BIGQUERY_EMULATOR_HOST=self.bq_url,
                        GOOGLE_APPLICATION_CREDENTIALS=str(credentials), NO_GCE_CHECK='true',
                        GOOGLE_CLOUD_PROJECT=PROJECT,
                        TEST_BIGQUERY_API_BASE_URL=f'{self.bq_url}/bigquery/v2/',
                        PYTHONPATH=os.pathsep.join(filter(None, [str(PATCH_DIR), os.environ.get('PYTHONPATH')])))
        self._start('storage', [str(BIN / 'gcp-storage-emulator'), 'start', '--host', '127.0.0.1',
                                '--port', str(self.gcs_port), '-q'],
                    dict(os.environ, STORAGE_BASE=str(self.storage_dir)), f'{self.gcs_url}/storage/v1/b')
        home = self.root / 'home'
        extensions = home / '.duckdb' / 'extensions' / _spatial_extension().parent.name / 'linux_amd64'
        extensions.mkdir(parents=True)
        shutil.copy(_spatial_extension(), extensions)
        self._start('bigquery', [str(BIN / 'bqemulator'), 'start', '--rest-host', '127.0.0.1',
                                 '--rest-port', str(self.bq_port), '--grpc-port', '0',
                                 '--project', PROJECT, '--log-level', 'error'],
                    dict(os.environ, HOME=str(home),
                         BQEMU_GCS_LOCAL_ROOT=str(self.storage_dir / '.cloudstorage')),
                    f'{self.bq_url}/bigquery/v2/projects/{PROJECT}/datasets')
        return self

    def _start(self, name, command, env, ready_url):
        log = self.root / f'{name}.log'
        process = subprocess.Popen(command, env=env, cwd=self.root, stdout=open(log, 'wb'),
                                   stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        wait_until(ready_url, process, log)

    def stop(self):
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 15)
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)

    def storage_client(self):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage
        return storage.Client(project=PROJECT, credentials=AnonymousCredentials(),
                              client_options={'api_endpoint': self.gcs_url})

    def bigquery_client(self):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery
        return bigquery.Client(project=PROJECT, credentials=AnonymousCredentials(),
                               client_options={'api_endpoint': self.bq_url})

    def local_path(self, bucket: str, name: str) -> pathlib.Path:
        """Where the storage emulator keeps an object on disk."""
        return self.storage_dir / '.cloudstorage' / bucket / name
