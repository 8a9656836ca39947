"""Local stand-ins for Cloud Storage (gcp-storage-emulator), BigQuery (bqemulator) and Pub/Sub (the
Google Cloud CLI's emulator), started as processes on free loopback ports and stopped whatever
happens."""
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


def pubsub_emulator_command() -> pathlib.Path:
    """The Pub/Sub emulator's own start script, under the Cloud SDK root (`gcloud info`)."""
    roots = []
    gcloud = shutil.which('gcloud')
    if gcloud:
        found = subprocess.run([gcloud, 'info', '--format=value(installation.sdk_root)'],
                               capture_output=True, text=True, timeout=60).stdout.strip()
        roots.append(pathlib.Path(found.splitlines()[-1]) if found else None)
    roots.append(pathlib.Path('/usr/lib/google-cloud-sdk'))
    for root in filter(None, roots):
        script = root / 'platform' / 'pubsub-emulator' / 'bin' / 'cloud-pubsub-emulator'
        if script.exists():
            return script
    raise RuntimeError('The Pub/Sub emulator is not installed: the streaming tests need the Google '
                       'Cloud CLI with its pubsub-emulator component, and Java 17 or newer')


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
                    dict(os.environ, STORAGE_BASE=str(self.storage_dir), TEST_STORAGE_PRECONDITIONS='1',
                         PYTHONPATH=os.pathsep.join(filter(None, [str(PATCH_DIR), os.environ.get('PYTHONPATH')]))),
                    f'{self.gcs_url}/storage/v1/b')
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

    def start_pubsub(self):
        """The Pub/Sub emulator too; its address joins `env` as PUBSUB_EMULATOR_HOST."""
        self.pubsub_host = f'127.0.0.1:{free_port()}'
        host, port = self.pubsub_host.split(':')
        self._start('pubsub', [str(pubsub_emulator_command()), f'--host={host}', f'--port={port}'],
                    dict(os.environ), f'http://{self.pubsub_host}/')
        self.env['PUBSUB_EMULATOR_HOST'] = self.pubsub_host
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

    def publisher(self):
        from google.cloud import pubsub_v1
        with _environment(PUBSUB_EMULATOR_HOST=self.pubsub_host):
            return pubsub_v1.PublisherClient()

    def subscriber(self):
        from google.cloud import pubsub_v1
        with _environment(PUBSUB_EMULATOR_HOST=self.pubsub_host):
            return pubsub_v1.SubscriberClient()

    def local_path(self, bucket: str, name: str) -> pathlib.Path:
        """Where the storage emulator keeps an object on disk."""
        return self.storage_dir / '.cloudstorage' / bucket / name


@contextlib.contextmanager
def _environment(**values):
    """Sets environment variables for the duration (the Pub/Sub clients read the emulator address
    from the environment when they are created)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class ForwardingProxy:
    """An HTTP proxy on a free loopback port that forwards every request to `target`, headers and
    all, unless `intercept(handler, method, body)` answers it first (returns True)."""

    _HOP_BY_HOP = {'connection', 'keep-alive', 'transfer-encoding', 'content-length', 'host'}

    def __init__(self, target: str):
        import http.server
        import threading

        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get('Content-Length') or 0)
                body = self.rfile.read(length) if length else None
                if not proxy.intercept(self, self.command, body):
                    self.reply(*proxy.forward(self.command, self.path, self.headers, body))

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def reply(self, status, payload, headers=()):
                self.send_response(status)
                for key, value in headers:
                    if key.lower() not in ForwardingProxy._HOP_BY_HOP:
                        self.send_header(key, value.replace(target, proxy.url))
                self.send_header('Content-Length', str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.target = target
        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.url = f'http://127.0.0.1:{self.server.server_address[1]}'
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def forward(self, method, path, headers, body):
        import urllib.error
        request = urllib.request.Request(
            self.target + path, data=body, method=method,
            headers={k: v for k, v in headers.items() if k.lower() not in self._HOP_BY_HOP})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.read(), list(response.headers.items())
        except urllib.error.HTTPError as error:
            return error.code, error.read(), list(error.headers.items())

    def intercept(self, handler, method, body) -> bool:
        return False

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class FlakyProxy(ForwardingProxy):
    """Cloud Storage that answers 503 to every `every`-th request: the storage client's own retries
    must carry the run through."""

    def __init__(self, target: str, every: int):
        super().__init__(target)
        self.every = every
        self.requests = self.failed = 0

    def intercept(self, handler, method, body) -> bool:
        self.requests += 1
        if self.requests % self.every:
            return False
        self.failed += 1
        handler.reply(503, b'{"error": {"code": 503, "message": "injected: service unavailable"}}',
                      [('Content-Type', 'application/json')])
        return True

    def env(self, base_env: dict) -> dict:
        return dict(base_env, STORAGE_EMULATOR_HOST=self.url)


class RejectingProxy(ForwardingProxy):
    """BigQuery's per-row rejection, which the emulator never produces: insertAll requests to
    `table` get insertErrors (reason "invalid") for rows whose JSON contains `marker`; the other rows
    are forwarded. The one place the tests shape a response."""

    def __init__(self, target: str, table: str, marker: str):
        super().__init__(target)
        self.table, self.marker = table, marker
        self.rejected = 0

    def intercept(self, handler, method, body) -> bool:
        if method != 'POST' or not handler.path.split('?')[0].endswith(f'/tables/{self.table}/insertAll'):
            return False
        request = json.loads(body)
        rows = request.get('rows', [])
        rejected = [i for i, row in enumerate(rows) if self.marker in json.dumps(row['json'])]
        kept = [row for i, row in enumerate(rows) if i not in rejected]
        self.rejected += len(rejected)
        if kept:
            status, payload, headers = self.forward(
                'POST', handler.path, handler.headers, json.dumps(dict(request, rows=kept)).encode())
            if status != 200:
                handler.reply(status, payload, headers)
                return True
        errors = [{'index': i, 'errors': [{'reason': 'invalid', 'location': 'label',
                                           'message': f'test rejection of row {i}'}]} for i in rejected]
        handler.reply(200, json.dumps({'kind': 'bigquery#tableDataInsertAllResponse',
                                       'insertErrors': errors}).encode(),
                      [('Content-Type', 'application/json')])
        return True

    def env(self, base_env: dict) -> dict:
        return dict(base_env, BIGQUERY_EMULATOR_HOST=self.url,
                    TEST_BIGQUERY_API_BASE_URL=f'{self.url}/bigquery/v2/')


# The columns two runs must agree on, whatever they ran against (files, tables, emulators).
KEY = ('image_uri', 'label', 'score', 'x_min', 'y_min', 'x_max', 'y_max', 'px_x_min', 'rank',
       'image_width', 'source_format', 'prediction_run', 'box_wkt')


def canonical(rows):
    """Rows as sorted tuples of KEY, to compare outputs from different sinks."""
    return sorted(tuple(row[k] for k in KEY) for row in rows)
