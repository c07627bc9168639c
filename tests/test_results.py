"""Results: what a python job returns is recorded as its run's ``result`` (JSON, capped, secrets
masked), answered by GET /api/runs/{id} and shown on the run page; a value that cannot be
stored leaves the run succeeded with a note in its stderr; command jobs have none."""
from __future__ import annotations

import html
import shutil
import sqlite3
import sys

import pytest

import task_scheduler as ts
import task_scheduler.models as ts_models
from conftest import Client, wait_for
from task_scheduler.output import RESULT_LIMIT
from test_old_database import OLD_DB, OLD_JOBS_YAML

TOKEN = "result-token-0123456789abcdef"
JOBS = f"""
def mapping():
    return {{"rows": 3, "name": "日本語 <b>", "ok": True, "none": None}}

def listing():
    return [1, 2.5, "three"]

def number():
    return 42

def string():
    return "done"

def nothing():
    print("no result")

def a_set():
    return {{1, 2}}

def huge():
    return "x" * {RESULT_LIMIT + 1}

def almost():
    return "x" * {RESULT_LIMIT - 2}

def leaky(token):
    return {{"token": token, "note": "token is " + token}}
"""


@pytest.fixture
def resultjobs(tmp_path):
    (tmp_path / "resultjobs.py").write_text(JOBS)
    yield "resultjobs"
    sys.modules.pop("resultjobs", None)


def ended(service, job: dict) -> dict:
    """Add ``job``, run it once and answer its run as GET /api/runs/{id} does."""
    service.add_job({"trigger": {"type": "manual"}, **job})
    run_id = service.run_now(job["id"])["id"]

    def final():
        service.flush()
        run = service.run(run_id)
        return run if run["status"] in ts_models.FINAL_STATUSES else None
    run = wait_for(final, 15, message=f"the end of run {run_id}")
    service.flush()   # the end may have been seen in the runner's memory before its write
    return run


def api_run(service, run_id: str, token=None) -> dict:
    answer = Client(ts.create_app(service), token).get(f"/api/runs/{run_id}")
    assert answer.status == 200, answer
    return answer.json


@pytest.mark.parametrize("func, value", [
    ("mapping", {"rows": 3, "name": "日本語 <b>", "ok": True, "none": None}),
    ("listing", [1, 2.5, "three"]), ("number", 42), ("string", "done")])
def test_a_python_jobs_return_value_is_its_runs_result(make_service, resultjobs, func, value):
    service = make_service()
    run = ended(service, {"id": func, "func": f"{resultjobs}:{func}"})
    assert run["status"] == "succeeded" and run["result"] == value
    assert api_run(service, run["id"])["result"] == value
    listed = service.runs(job_id=func)
    assert listed and "result" not in listed[0]   # lists stay light


@pytest.mark.both_databases
def test_the_result_is_stored_and_read_back_from_the_database(make_service, resultjobs):
    service = make_service()
    run = ended(service, {"id": "mapping", "func": f"{resultjobs}:mapping"})
    service.runner.recent.clear()   # read from the table, not from this node's memory
    stored = service.store.queries.run(run["id"])
    assert stored.result is not None and '"日本語 <b>"' in stored.result
    assert api_run(service, run["id"])["result"]["name"] == "日本語 <b>"


def test_no_result_for_none_nor_for_a_command(make_service, resultjobs):
    service = make_service()
    run = ended(service, {"id": "nothing", "func": f"{resultjobs}:nothing"})
    assert run["status"] == "succeeded" and run["result"] is None
    assert "not recorded" not in run["stderr"]
    run = ended(service, {"id": "cmd", "command": [sys.executable, "-c", "print(42)"]})
    assert run["status"] == "succeeded" and run["stdout"].strip() == "42"
    assert run["result"] is None and api_run(service, run["id"])["result"] is None


def test_a_value_json_cannot_hold_leaves_the_run_succeeded_and_says_why(make_service,
                                                                          resultjobs):
    service = make_service()
    run = ended(service, {"id": "a_set", "func": f"{resultjobs}:a_set"})
    assert run["status"] == "succeeded" and run["result"] is None
    note = [line for line in run["stderr"].splitlines() if "not recorded" in line]
    assert len(note) == 1 and "a set is not JSON-serialisable" in note[0], run["stderr"]


def test_a_result_over_the_limit_is_refused_whole_with_a_note(make_service, resultjobs):
    service = make_service()
    run = ended(service, {"id": "huge", "func": f"{resultjobs}:huge"})
    assert run["status"] == "succeeded" and run["result"] is None
    assert f"{RESULT_LIMIT + 3} bytes of JSON, over the {RESULT_LIMIT}-byte limit" \
        in run["stderr"]
    run = ended(service, {"id": "almost", "func": f"{resultjobs}:almost"})   # exactly the limit
    assert run["result"] == "x" * (RESULT_LIMIT - 2) and "not recorded" not in run["stderr"]


def test_a_secret_in_the_result_is_masked(make_service, resultjobs):
    service = make_service(token=TOKEN)
    run = ended(service, {"id": "leaky", "func": f"{resultjobs}:leaky",
                          "kwargs": {"token": TOKEN}})
    assert run["result"] == {"token": "***", "note": "token is ***"}
    assert TOKEN not in (service.store.queries.run(run["id"]).result or "")
    assert api_run(service, run["id"], TOKEN)["result"]["token"] == "***"


def test_the_run_page_shows_the_result_escaped(make_service, resultjobs):
    service = make_service()
    run = ended(service, {"id": "mapping", "func": f"{resultjobs}:mapping"})
    page = Client(ts.create_app(service)).get(f"/runs/{run['id']}").text
    start = page.index('data-testid="run-result"')
    shown = html.unescape(page[page.index(">", start) + 1:page.index("</pre>", start)])
    assert '"name": "日本語 <b>"' in shown and '\n  "rows": 3' in shown   # pretty, one per line
    assert "日本語 <b>" not in page and "日本語 &lt;b&gt;" in page
    none = ended(service, {"id": "nothing", "func": f"{resultjobs}:nothing"})
    assert 'data-testid="run-result"' not in Client(ts.create_app(service)).get(
        f"/runs/{none['id']}").text


def test_the_openapi_document_names_the_result(service):
    document = Client(ts.create_app(service)).get("/api/openapi.json").json
    field = document["components"]["schemas"]["ApiRunDetail"]["properties"]["result"]
    assert "python job returned" in field["description"]


def test_an_older_database_gains_the_column_without_a_new_schema_version(tmp_path):
    db = tmp_path / "ts.sqlite"
    shutil.copyfile(OLD_DB, db)
    shutil.copyfile(OLD_JOBS_YAML, tmp_path / "jobs.yaml")
    assert "result" not in columns(db)
    service = ts.SchedulerService(ts.Config(
        config_path=str(tmp_path / "jobs.yaml"), database_url=f"sqlite:///{db}",
        timezone="UTC", port=0, watch=False, poll_interval=3600, shutdown_grace=5,
        kill_grace=1)).start()
    try:
        assert "result" in columns(db)
        old = service.runs(job_id="api_python", limit=1000)[-1]
        assert service.run(old["id"])["result"] is None and old["status"] == "succeeded"
    finally:
        service.stop(grace=2)
    # additive and nullable: nodes of the previous release (schema 2) still start on it
    assert read(db, "SELECT value FROM ts_meta WHERE key = 'schema_version'") == [("2",)]


def columns(db) -> set:
    return {row[1] for row in read(db, "PRAGMA table_info(ts_runs)")}


def read(db, sql: str) -> list:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()
