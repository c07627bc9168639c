"""Schemathesis against the OpenAPI document the server itself serves: no input gives a server
error and no answer contradicts the document (status codes, content types, headers, bodies), with
the token on, so that its enforcement is fuzzed too (schemathesis retries without it and with a
wrong one).

The fuzzed service cannot run anything: its scheduler is paused, so created jobs never fire, and
its runners are stubs, so "run now" of a fuzzed command or python job records a run and executes
nothing. Every route is fuzzed, the destructive ones included: DELETE and PUT only ever reach jobs
the fuzzer made, reload re-reads an empty jobs.yaml in a temporary folder, cancel finds nothing
running. A longer run by hand (examples per operation and phase):

    TS_FUZZ_EXAMPLES=300 pytest tests/test_fuzz.py
"""

from __future__ import annotations

import collections
import os

import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig

import task_scheduler as ts

import task_scheduler.http.guard as ts_guard

import task_scheduler.runner as ts_runner
import task_scheduler.http.app as ts_app
import task_scheduler.executor as ts_executor

TOKEN = "fuzz-token-0123456789"
EXAMPLES = int(os.environ.get("TS_FUZZ_EXAMPLES", "10"))
# A job can be valid JSON Schema and still invalid: a cron field out of range, a callable that
# does not import, a script that is not there, an id in the body that differs from the path.
# Those answer 422 with details, so valid-by-schema bodies may get 422 on these two operations.
SEMANTIC_422 = {"include-operation-id": ["api_create_job", "api_replace_job"],
                "checks": {"positive_data_acceptance": {
                    "expected-statuses": ["2xx", "404", "409", "422"]}}}
# Two times each valid can be out of order (until before since): 422 names until.
RUNS_422 = {"include-operation-id": ["api_list_runs"],
            "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "422"]}}}

# The legacy token is no user: a token of its own is 404 (no such user); a user, a token or a
# name the fuzzer makes up is 404, a second of one name 409, an expiry not a duration 422.
PEOPLE_4XX = {"include-operation-id": ["api_create_user", "api_update_user", "api_delete_user",
                                       "api_create_token", "api_revoke_token"],
              "checks": {"positive_data_acceptance": {
                  "expected-statuses": ["2xx", "404", "409", "422"]}}}


@pytest.fixture
def fuzz_server(make_service, monkeypatch):
    """The served app, counting requests by route and status: every route must be fuzzed."""
    monkeypatch.setattr(ts_runner, "run_command",
                        lambda *a, **kw: ts_executor._Outcome("succeeded", 0))
    monkeypatch.setattr(ts_runner, "run_python", lambda *a, **kw: ts_executor._Outcome("succeeded"))
    # The fuzzer sends a wrong token to every operation, and expects 401 each time, not the
    # 429 a real guesser gets past the limit (tests/test_secrets.py checks that).
    monkeypatch.setattr(ts_guard, "TOKEN_FAILURES", 1 << 30)
    service = make_service(token=TOKEN)
    service.scheduler.pause()
    app, seen = ts.create_app(service), collections.Counter()

    def counting(environ, start_response):
        def start(status, headers, exc_info=None):
            seen[_route(environ["REQUEST_METHOD"], environ["PATH_INFO"]), status[:3]] += 1
            return start_response(status, headers, exc_info)
        return app(environ, start)
    server = ts.serve_in_thread(counting, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    by_route, by_status = collections.Counter(), collections.Counter()
    for (route, status), count in seen.items():
        by_route[route] += count
        by_status[status] += count
    print(f"\nfuzz: {sum(seen.values())} requests, by status {dict(sorted(by_status.items()))}")
    missing = [f"{m} {r}" for m, r, _ in ts_app.API_ROUTES if by_route[m, r] == 0]
    assert not missing, f"never fuzzed: {missing}"


def _route(method: str, path: str) -> tuple:
    for m, route, _ in ts_app.API_ROUTES:
        parts, given = route.split("/"), path.split("/")
        if m == method and len(parts) == len(given) and all(
                p == g or p.startswith("<") for p, g in zip(parts, given, strict=True)):
            return m, route
    return method, "(other)"


@pytest.fixture
def api_schema(fuzz_server):
    config = SchemathesisConfig.from_dict({
        "base-url": fuzz_server,
        "headers": {"Authorization": f"Bearer {TOKEN}"},
        "generation": {"max-examples": EXAMPLES, "database": "none"},
        "operations": [SEMANTIC_422, RUNS_422, PEOPLE_4XX],
    })
    schema = schemathesis.openapi.from_url(f"{fuzz_server}/api/openapi.json", config=config,
                                           headers={"Authorization": f"Bearer {TOKEN}"})
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
def test_api_answers_as_documented(case):
    case.call_and_validate()
