"""Shared fixtures: real SQLite files, the real PostgreSQL, services, an in-process WSGI client
and a real server."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa

import task_scheduler as ts
from bench.chaos import PortBlock
import task_scheduler.models as ts_models

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_ENV = "TS_TEST_POSTGRES_URL"


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02, message: str = ""):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message or predicate}")
        time.sleep(interval)


def write_jobs(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


BOTH_DATABASES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def pytest_generate_tests(metafunc):
    """A test using ``database_url`` runs on a real SQLite file; one marked ``both_databases``
    (the dialect is its subject: claims, the lease, unique keys, migrations, several nodes, the
    bus, fire-once, run records) runs on the real PostgreSQL too."""
    if "database_url" in metafunc.fixturenames:
        both = metafunc.definition.get_closest_marker("both_databases")
        if both:
            metafunc.parametrize("database_url", BOTH_DATABASES, indirect=True)


@pytest.fixture
def database_url(request, tmp_path):
    """A real SQLite file, or a fresh schema on the real PostgreSQL (see pytest_generate_tests)."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return f"sqlite:///{tmp_path / 'ts.sqlite'}"
    return request.getfixturevalue("postgres_url")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    """Slow tests first (the order is otherwise kept): the workers start the long clusters, chaos
    runs and soaks at once and fill the time they take with the quick tests, instead of one worker
    starting a two-minute chaos test when the others have nothing left to do."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'ts.sqlite'}"


@pytest.fixture
def postgres_url():
    """A fresh schema on the real server, dropped afterwards. Required under CI."""
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        if os.environ.get("CI"):
            pytest.fail(f"{POSTGRES_ENV} is not set: PostgreSQL tests are required in CI")
        pytest.skip(f"{POSTGRES_ENV} is not set")
    schema = f"ts_test_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(base.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in base else "?"
    yield f"{base}{sep}options=-csearch_path%3D{schema}"
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    engine.dispose()


@pytest.fixture
def jobs_file(tmp_path):
    return write_jobs(tmp_path / "jobs.yaml", "[]\n")


@pytest.fixture
def make_config(tmp_path, jobs_file, database_url):
    def make(**overrides):
        values = dict(config_path=str(jobs_file), database_url=database_url, port=0,
                      shutdown_grace=5, kill_grace=1, poll_interval=3600, debounce=0.1)
        values.update(overrides)
        return ts.Config(**values)
    return make


@pytest.fixture
def make_service(make_config):
    services = []

    def make(**overrides):
        service = ts.SchedulerService(make_config(**overrides)).start()
        services.append(service)
        return service
    yield make
    for service in services:
        service.stop(grace=2)


@pytest.fixture
def service(make_service):
    return make_service()


class Client:
    """Calls the WSGI app in-process: no sockets, real Bottle routing and error handling."""

    def __init__(self, app, token: str | None = None):
        self.app, self.token = app, token

    def request(self, method, path, json_body=None, body=None, headers=None, query=None):
        headers = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers.setdefault("Content-Type", "application/json")
        body = body or b""
        path, _, qs = path.partition("?")
        if query:
            qs = urlencode(query)
        environ = {
            "REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": qs,
            "SERVER_NAME": "test", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.input": io.BytesIO(body), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
            "CONTENT_LENGTH": str(len(body)), "wsgi.version": (1, 0), "wsgi.multithread": True,
            "wsgi.multiprocess": False, "wsgi.run_once": False, "REMOTE_ADDR": "127.0.0.1",
        }
        if "Content-Type" in headers:
            environ["CONTENT_TYPE"] = headers.pop("Content-Type")
        if self.token and "Authorization" not in headers:
            headers["Authorization"] = f"Bearer {self.token}"
        for name, value in headers.items():
            environ["HTTP_" + name.upper().replace("-", "_")] = value
        captured = {}

        def start_response(status, response_headers, exc_info=None):
            captured["status"] = int(status.split()[0])
            captured["headers"] = dict(response_headers)
        chunks = self.app(environ, start_response)
        data = b"".join(chunks)
        if hasattr(chunks, "close"):
            chunks.close()
        return Response(captured["status"], captured["headers"], data)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, json_body=None, **kw):
        return self.request("POST", path, json_body=json_body, **kw)

    def put(self, path, json_body=None, **kw):
        return self.request("PUT", path, json_body=json_body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)


class Response:
    def __init__(self, status, headers, data):
        self.status, self.headers, self.data = status, headers, data

    @property
    def json(self):
        return json.loads(self.data)

    @property
    def text(self):
        return self.data.decode()

    def __repr__(self):
        return f"<Response {self.status} {self.data[:300]!r}>"


@pytest.fixture
def client(service):
    return Client(ts.create_app(service))


@pytest.fixture
def live_server(service):
    """The real HTTP server (waitress) on a free port, for end-to-end tests."""
    server = ts.serve_in_thread(ts.create_app(service), "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


# Each xdist worker hands out ports from its own block (20000 + 400 per worker), in turn:
# see bench/chaos.py PortBlock for why not the kernel's pick.
free_port = PortBlock(20_000, workers=30).take


def child_env(**extra) -> dict:
    """The environment for a child ``python -m task_scheduler``: this checkout is importable."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", **extra}


def start_process(args, cwd, env=None):
    """``python -m task_scheduler ...`` as a real child process, output to a log file."""
    log = open(Path(cwd) / "service.log", "ab")
    full_env = child_env(**(env or {}))
    return subprocess.Popen([sys.executable, "-m", "task_scheduler", *args], cwd=cwd,
                            stdout=log, stderr=subprocess.STDOUT, env=full_env)


def final_runs(service, job_id, count=1, timeout=15.0):
    """Wait until ``job_id`` has ``count`` finished runs in the database; return them."""
    def done():
        service.flush()
        runs = [r for r in service.runs(job_id=job_id, limit=1000)
                if r["status"] in ts_models.FINAL_STATUSES]
        return runs if len(runs) >= count else None
    return wait_for(done, timeout, message=f"{count} finished runs of {job_id}")
