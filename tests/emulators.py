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


class RejectingProxy:
    """An HTTP proxy in front of the BigQuery emulator that makes BigQuery's per-row rejection
    happen: for insertAll requests to `table`, rows whose JSON contains `marker` are answered with
    insertErrors (reason "invalid") and only the others are forwarded. The emulator itself never
    rejects single rows, so this is the one place the tests shape a response."""

    def __init__(self, target: str, table: str, marker: str):
        import http.server
        import threading
        import urllib.error

        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _forward(self, method, body=None):
                request = urllib.request.Request(target + self.path, data=body, method=method,
                                                 headers={k: v for k, v in self.headers.items()
                                                          if k.lower() not in ('host', 'content-length')})
                try:
                    with urllib.request.urlopen(request, timeout=60) as response:
                        status, payload, headers = response.status, response.read(), response.headers
                except urllib.error.HTTPError as error:
                    status, payload, headers = error.code, error.read(), error.headers
                return status, payload, headers.get('Content-Type', 'application/json')

            def _reply(self, status, payload, content_type='application/json'):
                self.send_response(status)
                self.send_header('Content-Type', content_type)
                self.send_header('Content-Length', str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):
                self._reply(*self._forward('GET'))

            def do_DELETE(self):
                self._reply(*self._forward('DELETE'))

            def do_PATCH(self):
                body = self.rfile.read(int(self.headers.get('Content-Length', 0)))
                self._reply(*self._forward('PATCH', body))

            def do_PUT(self):
                body = self.rfile.read(int(self.headers.get('Content-Length', 0)))
                self._reply(*self._forward('PUT', body))

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get('Content-Length', 0)))
                if not self.path.split('?')[0].endswith(f'/tables/{table}/insertAll'):
                    self._reply(*self._forward('POST', body))
                    return
                request = json.loads(body)
                rows = request.get('rows', [])
                rejected = [i for i, row in enumerate(rows) if marker in json.dumps(row['json'])]
                kept = [row for i, row in enumerate(rows) if i not in rejected]
                proxy.rejected += len(rejected)
                if kept:
                    status, payload, _ = self._forward('POST', json.dumps(dict(request, rows=kept)).encode())
                    if status != 200:
                        self._reply(status, payload)
                        return
                errors = [{'index': i, 'errors': [{'reason': 'invalid', 'location': 'label',
                                                   'message': f'test rejection of row {i}'}]}
                          for i in rejected]
                self._reply(200, json.dumps({'kind': 'bigquery#tableDataInsertAllResponse',
                                             'insertErrors': errors}).encode())

        self.rejected = 0
        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.url = f'http://127.0.0.1:{self.server.server_address[1]}'
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def env(self, base_env: dict) -> dict:
        return dict(base_env, BIGQUERY_EMULATOR_HOST=self.url,
                    TEST_BIGQUERY_API_BASE_URL=f'{self.url}/bigquery/v2/')

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
