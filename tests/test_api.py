"""The JSON API of DESIGN section 6: every route, the one error form for every failure class,
the token on and off, the OpenAPI document and /api/docs, /metrics, the keep-alive server, and
API jobs (and the pause of any job) surviving a reload and a restart."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import json
import os
import re
import socket
import time
import urllib.request
from pathlib import Path

import pytest

import task_scheduler as ts

import hmac

import task_scheduler.store.queries as ts_queries
import task_scheduler.http.app as ts_app
import task_scheduler.http.guard as ts_guard
import task_scheduler.http.io as ts_io
import task_scheduler.metrics as ts_metrics
import task_scheduler.models as ts_models
import task_scheduler.http.openapi as ts_openapi
import task_scheduler.store.schema as ts_schema
import task_scheduler.http.server as ts_server
import task_scheduler.timeutil as ts_timeutil
from conftest import Client, wait_for, write_jobs

YAML_JOBS = """\
- id: from_yaml
  command: 'true'
  trigger: {type: interval, hours: 1}
"""
JOB_FIELDS = {"id", "description", "kind", "func", "command", "args", "kwargs", "trigger",
              "trigger_text", "source", "state", "next_run_time", "next_run_times",
              "max_instances", "coalesce", "misfire_grace_time", "timeout", "tags", "last_run"}
RUN_FIELDS = {"id", "job_id", "status", "trigger", "scheduled_at", "started_at", "finished_at",
              "duration_s", "exit_code", "error", "truncated"}


def job(job_id="api_job", **fields):
    return {"id": job_id, "command": "true", "trigger": {"type": "interval", "hours": 1},
            **fields}


def create(client, **fields):
    response = client.post("/api/jobs", job(**fields))
    assert response.status == 201, response
    return response.json


def assert_error(response, status, code, *words):
    """The one error form: {"error": {"code", "message", "details"}} with the right status."""
    assert response.status == status, response
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code and body["error"]["message"]
    assert isinstance(body["error"]["details"], list)
    for word in words:
        assert word in body["error"]["message"], body
    return body["error"]


def wait_run(client, run_id, timeout=15.0):
    def final():
        run = client.get(f"/api/runs/{run_id}").json
        return run if run["status"] in ts_models.FINAL_STATUSES else None
    return wait_for(final, timeout, message=f"run {run_id} to finish")


@pytest.fixture
def yaml_client(jobs_file, service, client):
    write_jobs(jobs_file, YAML_JOBS)
    assert client.post("/api/reload").status == 200
    return client


# jobs: writes and reads

def test_create_answers_201_with_the_job_shape(client):
    created = create(client, description="made by curl", tags=["a", "b"],
                     trigger={"type": "cron", "expression": "30 2 * * *", "timezone": "UTC"})
    assert JOB_FIELDS <= set(created)
    assert created["source"] == "api" and created["kind"] == "command"
    assert created["state"] == "scheduled" and created["command"] == ["true"]
    assert created["trigger_text"] == "cron 30 2 * * * (UTC)"
    times = [dt.datetime.fromisoformat(t) for t in created["next_run_times"]]
    assert len(times) == 5 and times == sorted(times) and len(set(times)) == 5
    assert all(t.utcoffset() == dt.timedelta(0) and (t.hour, t.minute) == (2, 30) for t in times)
    assert created["next_run_time"] == created["next_run_times"][0]
    assert created["last_run"] is None
    assert client.get("/api/jobs/api_job").json == created


def test_create_conflicts_and_validation(yaml_client):
    create(yaml_client)
    assert_error(yaml_client.post("/api/jobs", job()), 409, "conflict", "already exists")
    posted = assert_error(yaml_client.post("/api/jobs", job("from_yaml")), 409, "conflict",
                          "edit the file")
    put = assert_error(yaml_client.put("/api/jobs/from_yaml", job("from_yaml")), 409, "conflict")
    assert posted["message"] == put["message"] and "jobs.yaml" in posted["message"]
    replacing = job("from_yaml", replace_existing=True)   # no way around the file either
    assert assert_error(yaml_client.post("/api/jobs", replacing), 409, "conflict") == posted
    bad = {"id": "bad id!", "command": "true", "colour": "red",
           "trigger": {"type": "interval", "seconds": -5}, "max_instances": "two"}
    error = assert_error(yaml_client.post("/api/jobs", bad), 422, "invalid")
    fields = {d["field"] for d in error["details"]}
    assert {"id", "colour", "trigger.seconds", "max_instances"} <= fields, error
    error = assert_error(yaml_client.post("/api/jobs", job(trigger={"type": "cron",
                                                                     "minute": "*/61"})), 422,
                         "invalid")
    assert [d["field"] for d in error["details"]] == ["trigger.minute"]
    assert_error(yaml_client.post("/api/jobs", job(func="no_such_module_xyz:run",
                                                   command=None)), 422, "invalid", "import")


@pytest.mark.parametrize("body", [[], [1, 2], "a job", 42, None, True])
def test_a_body_that_is_not_an_object_is_422(client, body):
    response = client.request("POST", "/api/jobs", body=json.dumps(body).encode(),
                              headers={"Content-Type": "application/json"})
    error = assert_error(response, 422, "invalid", "must be a mapping")
    assert error["details"] and error["details"][0]["message"]


def test_put_replaces_an_api_job_and_refuses_yaml_jobs(yaml_client):
    create(yaml_client)
    changed = job(description="changed", trigger={"type": "interval", "minutes": 5})
    response = yaml_client.put("/api/jobs/api_job", changed)
    assert response.status == 200, response
    assert response.json["description"] == "changed" and response.json["trigger_text"] == "every 5m"
    assert yaml_client.get("/api/jobs/api_job").json["description"] == "changed"
    without_id = {k: v for k, v in changed.items() if k != "id"}
    assert yaml_client.put("/api/jobs/api_job", without_id).status == 200
    assert_error(yaml_client.put("/api/jobs/api_job", job("other")), 422, "invalid", "differs")
    error = assert_error(yaml_client.put("/api/jobs/from_yaml", job("from_yaml")), 409,
                         "conflict", "edit the file")
    assert "jobs.yaml" in error["message"]
    assert_error(yaml_client.put("/api/jobs/nobody", job("nobody")), 404, "not_found")


def test_delete_removes_api_jobs_keeps_runs_and_refuses_yaml_jobs(yaml_client, service):
    create(yaml_client)
    run = yaml_client.post("/api/jobs/api_job/run").json["run"]
    wait_run(yaml_client, run["id"])
    response = yaml_client.delete("/api/jobs/api_job")
    assert response.status == 204 and response.data == b""
    assert_error(yaml_client.get("/api/jobs/api_job"), 404, "not_found")
    assert_error(yaml_client.delete("/api/jobs/api_job"), 404, "not_found")
    service.flush()
    assert yaml_client.get("/api/runs", query={"job_id": "api_job"}).json["total"] == 1
    assert_error(yaml_client.delete("/api/jobs/from_yaml"), 409, "conflict", "edit the file")
    assert yaml_client.get("/api/jobs/from_yaml").status == 200


def test_pause_and_resume_any_job(yaml_client):
    create(yaml_client)
    for job_id in ("api_job", "from_yaml"):
        paused = yaml_client.post(f"/api/jobs/{job_id}/pause")
        assert paused.status == 200, paused
        assert paused.json["state"] == "paused" and paused.json["next_run_time"] is None
        assert paused.json["next_run_times"] == []
        assert yaml_client.post(f"/api/jobs/{job_id}/pause").json["state"] == "paused"
        resumed = yaml_client.post(f"/api/jobs/{job_id}/resume").json
        assert resumed["state"] == "scheduled" and len(resumed["next_run_times"]) == 5
    assert_error(yaml_client.post("/api/jobs/nobody/pause"), 404, "not_found")
    assert_error(yaml_client.post("/api/jobs/nobody/resume"), 404, "not_found")


def test_run_now_queues_a_manual_run_with_output(client):
    create(client, command=["sh", "-c", "echo out; echo err >&2; exit 3"])
    response = client.post("/api/jobs/api_job/run")
    assert response.status == 202, response
    queued = response.json["run"]
    assert RUN_FIELDS <= set(queued)
    assert queued["status"] == "queued" and queued["trigger"] == "manual"
    run = wait_run(client, queued["id"])
    assert run["status"] == "failed" and run["exit_code"] == 3
    assert run["stdout"] == "out\n" and run["stderr"] == "err\n" and run["duration_s"] >= 0
    stdout = client.get(f"/api/runs/{queued['id']}/stdout")
    assert stdout.status == 200 and stdout.text == "out\n"
    assert stdout.headers["Content-Type"].startswith("text/plain")
    assert client.get(f"/api/runs/{queued['id']}/stderr").text == "err\n"
    last = client.get("/api/jobs/api_job").json["last_run"]
    assert last["id"] == queued["id"] and last["status"] == "failed"
    assert_error(client.post("/api/jobs/nobody/run"), 404, "not_found")
    for path in ("", "/stdout", "/stderr"):
        assert_error(client.get(f"/api/runs/nope{path}"), 404, "not_found")


def test_run_now_is_409_while_max_instances_run(client, tmp_path):
    create(client, command=["sleep", "30"])
    first = client.post("/api/jobs/api_job/run").json["run"]
    assert_error(client.post("/api/jobs/api_job/run"), 409, "conflict", "already running")
    client.post(f"/api/runs/{first['id']}/cancel")


def test_cancel_kills_the_whole_process_group(client, tmp_path):
    pidfile = tmp_path / "child.pid"
    create(client, command=["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"])
    run = client.post("/api/jobs/api_job/run").json["run"]
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), message="child pid")
    child = int(pidfile.read_text())
    # The row says running a moment after the process starts (it said queued once under load).
    wait_for(lambda: client.get(f"/api/runs/{run['id']}").json["status"] == "running", 10,
             message="the run's row to say running")
    response = client.post(f"/api/runs/{run['id']}/cancel")
    assert response.status == 200, response
    # At once: cancelled if the group went within a moment of TERM, else still being ended.
    assert response.json["id"] == run["id"] and response.json["status"] in ("cancelled",
                                                                            "running")
    assert "stdout" not in response.json

    def child_gone():
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return True
        return _is_zombie(child)
    wait_for(child_gone, message="the job's child process to be killed")
    assert wait_run(client, run["id"])["status"] == "cancelled"
    assert_error(client.post(f"/api/runs/{run['id']}/cancel"), 409, "conflict", "not running")
    assert_error(client.post("/api/runs/nope/cancel"), 404, "not_found")


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


@pytest.mark.both_databases
def test_cancel_a_queued_run(make_service):
    client = Client(ts.create_app(make_service(max_workers=1)))
    create(client, job_id="busy", command=["sleep", "30"])
    create(client, job_id="waiting")
    busy = client.post("/api/jobs/busy/run").json["run"]
    wait_for(lambda: client.get(f"/api/runs/{busy['id']}").json["status"] == "running")
    queued = client.post("/api/jobs/waiting/run").json["run"]
    response = client.post(f"/api/runs/{queued['id']}/cancel")
    assert response.status == 200 and response.json["id"] == queued["id"]
    assert response.json["status"] in ("queued", "cancelled")
    assert client.post(f"/api/runs/{busy['id']}/cancel").status == 200
    assert wait_run(client, busy["id"])["status"] == "cancelled"
    run = wait_run(client, queued["id"])
    assert run["status"] == "cancelled" and run["started_at"] is None


def test_reload_applies_the_file_or_answers_422(jobs_file, client):
    write_jobs(jobs_file, YAML_JOBS)
    response = client.post("/api/reload")
    assert response.status == 200 and response.json["config"]["jobs"] == 1
    assert response.json["config"]["error"] is None
    write_jobs(jobs_file, YAML_JOBS + "- id: broken\n  trigger: {type: nope}\n")
    error = assert_error(client.post("/api/reload"), 422, "invalid_config", "broken")
    assert error["details"] and all(d["message"] for d in error["details"])
    assert [j["id"] for j in client.get("/api/jobs").json["jobs"]] == ["from_yaml"]


def test_reload_without_a_file_is_400(make_service):
    service = make_service(config_path=None)
    assert_error(Client(ts.create_app(service)).post("/api/reload"), 400, "bad_request")


# jobs and runs: filters and pagination

@pytest.mark.both_databases
def test_list_jobs_leaves_definitions_out_and_shows_each_change_at_once(client):
    """A list's Job has every contract field but ``definition`` (?full=1 and GET of one job
    have it); the answer kept between requests never hides a change made meanwhile."""
    create(client, job_id="a", description="first", env={"K": "v"})
    create(client, job_id="b")
    items = client.get("/api/jobs").json["jobs"]
    assert [j["id"] for j in items] == ["a", "b"]
    assert all(JOB_FIELDS <= set(j) and "definition" not in j for j in items)
    full = client.get("/api/jobs?full=1").json["jobs"]
    one = client.get("/api/jobs/a").json
    assert full[0]["definition"] == one["definition"] and one["definition"]["env"] == {"K": "v"}
    assert {k: v for k, v in full[0].items() if k != "definition"} == items[0]
    assert_error(client.get("/api/jobs?full=maybe"), 400, "bad_request", "full")
    for _ in range(3):   # each change shows in the very next list
        run = client.post("/api/jobs/a/run").json["run"]
        listed = {j["id"]: j for j in client.get("/api/jobs").json["jobs"]}
        assert listed["a"]["last_run"]["id"] == run["id"] and listed["b"]["last_run"] is None
        ended = wait_run(client, run["id"])
        assert client.get("/api/jobs?q=first").json["jobs"][0]["last_run"]["status"] \
            == ended["status"]
    client.post("/api/jobs/b/pause")
    assert [j["state"] for j in client.get("/api/jobs").json["jobs"]] == ["scheduled", "paused"]
    client.delete("/api/jobs/b")
    assert [j["id"] for j in client.get("/api/jobs").json["jobs"]] == ["a"]


@pytest.mark.both_databases
def test_list_jobs_filters_and_pages(yaml_client, tmp_path):
    create(yaml_client, job_id="alpha", description="Nightly BACKUP", tags=["ops"])
    create(yaml_client, job_id="beta", func="json:dumps", args=[{}], command=None,   # dumps(obj)
           tags=["ops", "py"])
    create(yaml_client, job_id="gamma", is_enabled=False)
    yaml_client.post("/api/jobs/alpha/pause")

    def ids(**query):
        body = yaml_client.get("/api/jobs", query=query).json
        return [j["id"] for j in body["jobs"]], body["total"]
    assert ids() == (["alpha", "beta", "from_yaml", "gamma"], 4)
    assert ids(q="backup") == (["alpha"], 1)
    assert ids(q="JSON:DUMPS") == (["beta"], 1)
    assert ids(state="paused") == (["alpha"], 1)
    assert ids(state="disabled") == (["gamma"], 1)
    assert ids(state="scheduled") == (["beta", "from_yaml"], 2)
    assert ids(source="yaml") == (["from_yaml"], 1)
    assert ids(source="api", kind="python") == (["beta"], 1)
    assert ids(kind="command") == (["alpha", "from_yaml", "gamma"], 3)
    assert ids(tag="ops") == (["alpha", "beta"], 2)
    assert ids(tag="py", q="beta") == (["beta"], 1)
    assert ids(limit=2) == (["alpha", "beta"], 4)
    assert ids(limit=2, offset=2) == (["from_yaml", "gamma"], 4)
    assert ids(offset=10) == ([], 4)
    assert ids(q="") == (["alpha", "beta", "from_yaml", "gamma"], 4)
    assert_error(yaml_client.get("/api/jobs?state="), 400, "bad_request", "state")
    assert yaml_client.get("/api/jobs?q=%C3%A9t%C3%A9").json["total"] == 0   # UTF-8 query


@pytest.mark.both_databases
def test_list_runs_filters_and_pages(client, service):
    create(client, job_id="ok", command="true")
    create(client, job_id="bad", command="false")
    done = []
    for job_id in ("ok", "bad", "ok"):
        done.append(wait_run(client, client.post(f"/api/jobs/{job_id}/run").json["run"]["id"]))
    service.flush()

    def ids(**query):
        body = client.get("/api/runs", query=query).json
        assert all(RUN_FIELDS <= set(r) and "stdout" not in r for r in body["runs"])
        return [r["id"] for r in body["runs"]], body["total"]
    newest_first = [r["id"] for r in reversed(done)]
    assert ids() == (newest_first, 3)
    assert ids(job_id="ok") == ([done[2]["id"], done[0]["id"]], 2)
    assert ids(status="failed") == ([done[1]["id"]], 1)
    assert ids(status="succeeded", job_id="bad") == ([], 0)
    assert ids(limit=1, offset=1) == ([newest_first[1]], 3)
    assert ids(since=done[1]["scheduled_at"]) == (newest_first[:2], 2)
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    assert ids(since=future) == ([], 0)
    assert ids(since=future.replace("+00:00", "Z")) == ([], 0)
    assert ids(trigger="manual")[1] == 3


@pytest.mark.parametrize("path, query, word", [
    ("/api/jobs", "limit=abc", "limit"),
    ("/api/jobs", "limit=0", "limit"),
    ("/api/jobs", "limit=10001", "limit"),
    ("/api/jobs", "offset=-1", "offset"),
    ("/api/jobs", "state=sleeping", "state"),
    ("/api/jobs", "source=cli", "source"),
    ("/api/jobs", "kind=shell", "kind"),
    ("/api/jobs", "stat=paused", "unknown parameter"),
    ("/api/jobs", "q=%FF", "UTF-8"),
    ("/api/runs", "status=done", "status"),
    ("/api/runs", "since=yesterday", "since"),
    ("/api/runs", "trigger=cron", "trigger"),
    ("/api/runs", "limit=1001", "limit"),
    ("/api/runs", "offset=99999999999999999999", "offset"),
])
def test_bad_query_values_are_400(client, path, query, word):
    error = assert_error(client.get(f"{path}?{query}"), 400, "bad_request", word)
    assert error["details"] and error["details"][0]["field"] in query


# the one error form for every failure

def post_raw(client, body, content_type="application/json", **headers):
    if content_type:
        headers["Content-Type"] = content_type
    return client.request("POST", "/api/jobs", body=body, headers=headers)


@pytest.mark.parametrize("body, word", [
    (b"{bad", "malformed JSON at line 1"),
    (b'{"id": "x",', "malformed JSON"),
    (b"", "empty"),
    (b"   ", "empty"),
    (b'{"id": NaN}', "NaN"),
    (b'{"timeout": Infinity}', "Infinity"),
    (b'{"timeout": 1e999}', "out of range"),
    (b'{"id": "\\ud800"}', "acceptable JSON"),
    (b'{"id": "\xff"}', "not UTF-8"),
    (b'{"n": ' + b"1" * 5000 + b"}", "acceptable JSON"),
    (b"[" * 100000 + b"]" * 100000, "acceptable JSON"),
])
def test_malformed_json_is_400(client, body, word):
    assert_error(post_raw(client, body), 400, "bad_request", word)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/jsonx"])
def test_a_body_not_sent_as_json_is_415(client, content_type):
    assert_error(post_raw(client, json.dumps(job()).encode(), content_type), 415,
                 "unsupported_media_type", "application/json")
    assert post_raw(client, json.dumps(job()).encode(),
                    "Application/JSON; charset=utf-8").status == 201


def test_a_body_over_the_limit_is_413(client):
    body = json.dumps(job(description="x" * ts_io.MAX_BODY)).encode()
    assert_error(post_raw(client, body), 413, "too_large", str(ts_io.MAX_BODY))
    assert_error(client.request("PUT", "/api/jobs/api_job", body=body,
                                headers={"Content-Type": "application/json"}), 413, "too_large")


def test_bad_length_headers_are_400(client):
    chunked = post_raw(client, b"{}", **{"Transfer-Encoding": "chunked"})
    assert_error(chunked, 400, "bad_request", "Content-Length")
    environ = {"CONTENT_LENGTH": "12abc"}
    with pytest.raises(ts.BadRequest, match="not a number of bytes"):
        ts_io._content_length(environ)


@pytest.mark.parametrize("method, path", [
    ("GET", "/api/nope"), ("GET", "/api//"), ("GET", "/api/jobs/"), ("GET", "/api/jobs/a/b/c"),
    ("POST", "/api/runs/x/y"), ("GET", "/api/jobs/nobody"), ("GET", "/api/runs/nothing"),
])
def test_unknown_routes_and_ids_are_404(client, method, path):
    assert_error(client.request(method, path), 404, "not_found")


@pytest.mark.parametrize("method, path, allowed", [
    ("PATCH", "/api/jobs", "GET,POST"), ("DELETE", "/api/jobs", "GET,POST"),
    ("GET", "/api/reload", "POST"), ("PATCH", "/api/jobs/x", "DELETE,GET,PUT"),
    ("GET", "/api/jobs/x/run", "POST"), ("DELETE", "/api/runs/x", "GET"),
    ("PUT", "/api/health", "GET"), ("POST", "/metrics", "GET"),
])
def test_a_wrong_method_is_405_with_allow(client, method, path, allowed):
    response = client.request(method, path)
    assert_error(response, 405, "method_not_allowed", method)
    assert sorted(response.headers["Allow"].split(",")) == sorted(allowed.split(","))


ODD_BODIES = [
    pytest.param("POST", b'{"id": "x", "command": "true", "trigger": {"type": "interval", '
                 b'"seconds": 1e300}}', id="huge-interval"),
    pytest.param("POST", b'{"id": "x", "command": "true", "trigger": {"type": "interval", '
                 b'"days": 62797100.3}}', id="interval-past-9999"),
    pytest.param("POST", b'{"id": "x", "command": "true", "trigger": {"type": "interval", '
                 b'"hours": 1, "jitter": 1e300}}', id="huge-jitter"),
    pytest.param("POST", b'{"id": "x", "command": "true", "trigger": {"type": "interval", '
                 b'"hours": 1, "start_date": "9999-12-31T23:00:00"}}', id="start-in-9999"),
    pytest.param("POST", b'{"id": "x", "command": "echo \'unbalanced", "trigger": {"type": '
                 b'"interval", "hours": 1}}', id="unbalanced-quote"),
    pytest.param("POST", b'{"id": "x", "command": "true", "trigger": {"type": "date", '
                 b'"run_date": "not a date"}}', id="bad-date"),
    pytest.param("POST", b'{"id": "x", "command": "true", "trigger": {"type": "cron", '
                 b'"expression": "* * * * * * *"}}', id="bad-crontab"),
    pytest.param("POST", b'{"id": "x", "command": "true", "trigger": {"type": "interval", '
                 b'"hours": 1, "timezone": "Mars/Olympus"}}', id="bad-zone"),
    pytest.param("POST", b'{"id": "x", "command": "", "trigger": {}}', id="empty-command"),
    pytest.param("POST", b'{"id": "x", "command": "true", "description": "nul \\u0000 byte", '
                 b'"trigger": {"type": "interval", "hours": 1}}', id="nul-in-string"),
    pytest.param("PUT", b'"just a string"', id="put-a-string"),
    pytest.param("PUT", b'{"id": 5}', id="put-a-number-id"),
]


@pytest.mark.parametrize("method, body", ODD_BODIES)
def test_odd_bodies_get_an_answer_not_a_500(client, caplog, method, body):
    create(client)
    path = "/api/jobs" if method == "POST" else "/api/jobs/api_job"
    response = client.request(method, path, body=body, headers={"Content-Type": "application/json"})
    assert response.status < 500, response
    assert response.status < 300 or set(response.json) == {"error"}
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


@pytest.mark.parametrize("path", ["/api/jobs/a%00b", "/api/runs/a%00b", "/api/runs/" + "f" * 65,
                                  "/api/jobs/a%20b/pause", "/api/runs/%E2%9C%93/stdout"])
def test_ids_that_cannot_exist_are_404_without_asking_the_database(client, path):
    method = "POST" if path.endswith("pause") else "GET"
    from urllib.parse import unquote
    assert_error(client.request(method, unquote(path, "latin-1")), 404, "not_found")


def test_odd_query_values_get_an_answer(client):
    for query in ("job_id=a%00b", "since=0001-01-01T00:00:00%2B01:00",
                  "since=9999-12-31T23:59:59-01:00"):
        response = client.get(f"/api/runs?{query}")
        assert response.status in (200, 400), (query, response)
    assert client.get("/api/runs?since=0001-01-01T00:00:00%2B01:00").status == 200
    assert ts_io.ID_PATTERN == ts.JobDefinition.model_json_schema()["properties"]["id"]["pattern"]


# security: the token, headers

def test_token_guards_every_route_but_health(make_service):
    service = make_service(token="s3cret-token-for-tests")
    app = ts.create_app(service)
    anonymous, wrong = Client(app), Client(app, token="wrong")
    right = Client(app, token="s3cret-token-for-tests")
    assert anonymous.get("/api/health").status == 200
    wrong_tries = 0
    for method, route, _ in ts_app.API_ROUTES:
        path = route.replace("<job_id>", "some_job").replace("<run_id>", "some_run")
        for client in (anonymous, wrong):
            if route == "/api/health":
                continue
            response = client.request(method, path, json_body=job() if method != "GET" else None)
            wrong_tries += client is wrong
            if client is wrong and wrong_tries > ts_guard.TOKEN_FAILURES:   # guessing: slowed down
                assert_error(response, 429, "too_many_requests", "too many wrong tokens")
                assert int(response.headers["Retry-After"]) > 0
                continue
            error = assert_error(response, 401, "unauthorized", "Bearer")
            headers = {k.lower(): v for k, v in response.headers.items()}
            assert headers["www-authenticate"].startswith("Bearer"), error
    assert right.get("/api/jobs").status == 200
    assert right.get("/metrics").status == 200
    assert right.post("/api/jobs", job()).status == 201
    assert Client(app).get("/api/jobs", headers={
        "Authorization": "bearer s3cret-token-for-tests"}).status == 200
    for header in ("s3cret-token-for-tests", "Basic s3cret-token-for-tests",
                   "Bearer s3cret-token-for-test", "Bearer s3cret-token-for-tests2", "Bearer"):
        response = Client(app).get("/api/jobs", headers={"Authorization": header})
        assert response.status == 429, header   # wrong, from a client past its limit


def test_token_is_compared_in_constant_time(make_service, monkeypatch):
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    client = Client(ts.create_app(make_service(token="s3cret-token-for-tests")), token="guess")
    assert client.get("/api/jobs").status == 401
    assert calls == [(b"guess", b"s3cret-token-for-tests")]


def test_without_a_token_every_route_is_open(client):
    create(client)
    for path in ("/api/", "/api", "/api/status", "/api/jobs", "/api/jobs/api_job", "/api/runs",
                 "/metrics", "/api/openapi.json", "/api/docs"):
        assert client.get(path).status == 200, path


def test_without_a_token_the_cli_binds_only_loopback(tmp_path, capsys):
    (tmp_path / "jobs.yaml").write_text("[]\n")
    code = ts.main(["run", "--host", "0.0.0.0", "--config", str(tmp_path / "jobs.yaml"),
                    "--db", f"sqlite:///{tmp_path / 'ts.sqlite'}"])
    assert code == 2 and "refusing to bind 0.0.0.0 without a token" in capsys.readouterr().err
    assert not (tmp_path / "ts.sqlite").exists()


def test_every_answer_says_nosniff(client):
    create(client)
    answers = [client.get("/api/jobs"), client.get("/api/jobs/api_job"), client.get("/api/nope"),
               client.request("PATCH", "/api/jobs"), post_raw(client, b"{"),
               client.get("/api/docs"), client.get("/metrics"), client.get("/api/openapi.json"),
               client.delete("/api/jobs/api_job")]
    assert all(a.headers.get("X-Content-Type-Options") == "nosniff" for a in answers), answers


# the index, the OpenAPI document, /api/docs

def test_the_api_root_answers_an_index_of_links_that_work(client):
    index = client.get("/api/")
    assert index.status == 200 and index.headers["Content-Type"].startswith("application/json")
    assert index.json["name"] == "task-scheduler" and index.json["version"] == ts.__version__
    assert client.get("/api").json == index.json
    links = index.json["links"]
    assert {"docs", "openapi", "jobs", "runs", "status", "health"} <= set(links)
    for name, path in links.items():
        assert client.get(path).status == 200, (name, path)
    ts_openapi.ApiIndex.model_validate(index.json)
    assert set(index.json) <= set(ts_openapi.ApiIndex.model_fields)


def test_the_api_root_needs_the_token_like_every_route_but_health(make_service):
    token = "s3cret-token-for-tests"
    app = ts.create_app(make_service(token=token))
    for path in ("/api/", "/api"):
        assert_error(Client(app).get(path), 401, "unauthorized")
        assert Client(app, token=token).get(path).status == 200


def test_openapi_summaries_are_whole_sentences_and_the_count_cap_is_the_stores(client):
    doc = client.get("/api/openapi.json").json
    ops = [op for item in doc["paths"].values() for op in item.values()]
    for op in ops:
        assert op["summary"].endswith((".", ")")), op["summary"]
        assert not re.search(r"\b(up to|the new|and|or|of|with)$", op["summary"]), op["summary"]
    assert len({op["operationId"] for op in ops}) == len(ops)
    runs = doc["paths"]["/api/runs"]["get"]
    page = json.dumps([runs, doc["components"]["schemas"]["ApiRunPage"]])
    assert f"{ts_schema.TOTAL_CAP:,}" in page and "10,000" not in page
    assert f"offset` + {ts_schema.TOTAL_CAP:,}" in (Path(__file__).parents[1] / "docs"
                                                    / "embedding.md").read_text()


def test_openapi_document_covers_every_route_from_the_models(client):
    doc = client.get("/api/openapi.json").json
    assert doc["openapi"].startswith("3.1")
    routes = {(m.lower(), r.replace("<", "{").replace(">", "}")) for m, r, _ in ts_app.API_ROUTES}
    documented = {(m, p) for p, item in doc["paths"].items() for m in item}
    assert documented == routes
    schemas = doc["components"]["schemas"]
    definition = ts.JobDefinition.model_json_schema(ref_template="#/components/schemas/{model}")
    assert schemas["JobDefinition"] == {k: v for k, v in definition.items() if k != "$defs"}
    assert all(schemas[name] == schema for name, schema in definition["$defs"].items())
    body = doc["paths"]["/api/jobs"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/JobDefinition"}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert {"404", "405", "415", "422"} <= set(op["responses"]), (method, path)
            assert "Allow" in op["responses"]["405"]["headers"]
    params = {p["name"] for p in doc["paths"]["/api/runs"]["get"]["parameters"]}
    assert {"job_id", "status", "since", "limit", "offset"} <= params
    assert "security" not in doc


def test_openapi_document_with_a_token_declares_bearer_auth(make_service):
    token = "s3cret-token-for-tests"
    client = Client(ts.create_app(make_service(token=token)), token=token)
    doc = client.get("/api/openapi.json").json
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert doc["security"] == [{"bearerAuth": []}]
    assert doc["paths"]["/api/health"]["get"]["security"] == []
    assert "401" in doc["paths"]["/api/jobs"]["get"]["responses"]


def test_response_models_document_every_field_the_api_sends(client):
    """Fields are added freely (DESIGN), but each must be in the document."""
    create(client)
    run = wait_run(client, client.post("/api/jobs/api_job/run").json["run"]["id"])
    answers = [(ts_openapi.ApiJob, client.get("/api/jobs/api_job").json),
               (ts_openapi.ApiRunDetail, run),
               (ts_openapi.ApiRun, client.get("/api/runs").json["runs"][0]),
               (ts_openapi.ApiRun, client.get("/api/jobs/api_job").json["last_run"]),
               (ts_openapi.ApiStatus, client.get("/api/status").json),
               (ts_openapi.ApiHealth, client.get("/api/health").json),
               (ts_openapi.ApiReload, client.post("/api/reload").json),
               (ts_openapi.ApiError, client.get("/api/jobs/nope").json)]
    for model, answer in answers:
        model.model_validate(answer)
        assert set(answer) <= set(model.model_fields), (model.__name__, set(answer))
    assert JOB_FIELDS <= set(ts_openapi.ApiJob.model_fields)
    assert RUN_FIELDS <= set(ts_openapi.ApiRun.model_fields)


def test_docs_page_is_self_contained_html_of_the_document(client):
    response = client.get("/api/docs")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    page = response.text
    doc = client.get("/api/openapi.json").json
    for path, item in doc["paths"].items():
        for method in item:
            assert f"{method.upper()} {path}" in page
    for name in doc["components"]["schemas"]:
        assert f'id="schema-{name}"' in page
    assert "<script" not in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "remote code execution" in page


def test_docs_curl_examples_name_the_address_the_page_was_asked_at(client, live_server):
    page = client.get("/api/docs", headers={"Host": "127.0.0.1:8765"}).text
    assert "curl -s http://127.0.0.1:8765/api/jobs" in page
    assert "http://127.0.0.1:8000/api" not in page
    with urllib.request.urlopen(f"{live_server}/api/docs", timeout=10) as answer:
        served = answer.read().decode()
    assert f"curl -s {live_server}/api/jobs" in served


# /metrics

def parse_metrics(text: str) -> dict:
    """A strict reader of the text format: every sample belongs to a declared family, and
    histogram buckets are cumulative and end with +Inf == _count."""
    assert text.endswith("\n")
    types, samples = {}, {}
    line_re = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|'
                         r'\\[\\"n])*",?)*\})? (-?[0-9.e+-]+|\+Inf|-Inf|NaN)$')
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name not in types and kind in ("gauge", "counter", "histogram", "summary")
            types[name] = kind
            continue
        if line.startswith("# HELP "):
            continue
        match = line_re.match(line)
        assert match, line
        name = match.group(1)
        family = next(f for f in types if name == f or (name.startswith(f) and name[len(f):] in (
            "_bucket", "_sum", "_count")))
        if types[family] == "counter":
            assert name.endswith("_total"), name
        samples[name + (match.group(2) or "")] = float(match.group(3))
    for family, kind in types.items():
        if kind == "histogram":
            buckets = [v for k, v in samples.items() if k.startswith(family + "_bucket")]
            assert buckets == sorted(buckets) and buckets[-1] == samples[family + "_count"]
            assert list(samples).index(f'{family}_bucket{{le="+Inf"}}') >= 0
    return samples


@pytest.mark.both_databases
def test_metrics_in_the_prometheus_text_format(jobs_file, client, service):
    write_jobs(jobs_file, YAML_JOBS)
    client.post("/api/reload")
    create(client, command=["sh", "-c", "sleep 0.2"])
    create(client, job_id="quick", trigger={"type": "interval", "seconds": 1})
    client.post("/api/jobs/from_yaml/pause")
    run = wait_run(client, client.post("/api/jobs/api_job/run").json["run"]["id"])
    service.flush()
    response = client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    metrics = parse_metrics(response.text)
    assert metrics['task_scheduler_jobs{state="scheduled"}'] == 2
    assert metrics['task_scheduler_jobs{state="paused"}'] == 1
    assert metrics['task_scheduler_jobs{state="disabled"}'] == 0
    assert metrics['task_scheduler_runs_finished_total{job_id="api_job",status="succeeded"}'] == 1
    assert metrics["task_scheduler_run_duration_seconds_count"] >= 1
    assert metrics['task_scheduler_job_run_duration_seconds_count{job_id="api_job"}'] == 1
    assert 0.2 <= metrics['task_scheduler_job_run_duration_seconds_sum{job_id="api_job"}'] \
        <= run["duration_s"] + 0.01
    assert metrics["task_scheduler_reloads_total"] == 1
    assert metrics["task_scheduler_reload_failures_total"] == 0
    assert metrics["task_scheduler_scheduler_running"] == 1

    def scheduled_run_counted():
        service.flush()
        found = parse_metrics(client.get("/metrics").text)
        return found if found["task_scheduler_fire_lateness_seconds_count"] >= 1 else None
    metrics = wait_for(scheduled_run_counted, message="a scheduled run of quick in /metrics")
    assert metrics['task_scheduler_runs_finished_total{job_id="quick",status="succeeded"}'] >= 1
    assert metrics['task_scheduler_runs_finished_total{job_id="api_job",status="succeeded"}'] == 1
    write_jobs(jobs_file, "- id: [broken\n")
    client.post("/api/reload")
    metrics = parse_metrics(client.get("/metrics").text)
    assert metrics["task_scheduler_reload_failures_total"] == 1
    assert metrics["task_scheduler_config_error"] == 1


def test_metrics_count_runs_when_the_database_clock_is_behind_this_machine(make_service):
    """Run ids carry the database's clock (a node's offset from it); /metrics reads them by the
    same clock: a run made right after start is counted though the database runs behind."""
    service = make_service()
    service.cluster.offset = -5.0   # the database's clock 5 s behind this machine's
    client = Client(ts.create_app(service))
    client.post("/api/jobs", {"id": "behind", "command": ["true"]})
    run = wait_run(client, client.post("/api/jobs/behind/run").json["run"]["id"])
    assert run["status"] == "succeeded"
    service.flush()
    metrics = parse_metrics(client.get("/metrics").text)
    assert metrics['task_scheduler_runs_finished_total{job_id="behind",status="succeeded"}'] == 1


def test_run_ids_start_with_their_creation_time_as_metrics_expects():
    """RunStats reads the runs created since its last scrape by id: ids must sort by time."""
    before = f"{int(time.time() * 1e6):014x}"
    first, second = ts_schema.new_run_id(), ts_schema.new_run_id()
    assert before <= first[:14] <= second[:14] <= f"{int(time.time() * 1e6):014x}"


def test_metrics_escape_label_values():
    assert ts_metrics._labels({"job_id": 'a"b\\c\nd'}) == '{job_id="a\\"b\\\\c\\nd"}'
    assert ts_metrics._number(float("inf")) == "+Inf" and ts_metrics._number(0.25) == "0.25"
    assert ts_metrics._number(3) == "3" and ts_metrics._number(True) == "1"


# the server: real HTTP, keep-alive

def test_real_server_keeps_connections_alive_and_answers_405(live_server):
    host, port = live_server.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/api/health")
    first = conn.getresponse()
    assert first.status == 200 and json.loads(first.read())["status"] == "ok"
    sock = conn.sock
    conn.request("PATCH", "/api/jobs")
    response = conn.getresponse()
    assert response.status == 405 and response.getheader("Allow") == "GET,POST"
    assert json.loads(response.read())["error"]["code"] == "method_not_allowed"
    # A body the app never reads (415) is skipped, not taken for the next request.
    conn.request("POST", "/api/jobs", body=b'{"id": "x"}', headers={"Content-Type": "text/x"})
    response = conn.getresponse()
    assert response.status == 415 and response.read()
    conn.request("GET", "/api/jobs")
    response = conn.getresponse()
    assert response.status == 200 and json.loads(response.read())["total"] == 0
    assert conn.sock is sock
    conn.close()


def test_real_server_answers_413_to_big_bodies_and_survives(live_server):
    host, port = live_server.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("POST", "/api/jobs", body=b"x" * (2 * ts_io.MAX_BODY),
                 headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 413 and b'"too_large"' in response.read()
    conn.request("GET", "/api/health")   # the unread body was skipped: the connection lives
    assert conn.getresponse().status == 200
    conn.close()
    # Past max_request_body_size waitress answers at the headers (plain text, not the API's
    # JSON: the app never sees the request) and closes without reading the body. Only the
    # headers are sent: body bytes the server never reads make its close a reset, which can
    # reach the client before the answer does (and a send into it breaks the pipe).
    limit = ts_server.HTTP_SETTINGS["max_request_body_size"]
    head = (f"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {3 * limit}\r\n")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"{head}\r\n".encode())
        assert_closed_after_413(sock, sock.recv(65536), limit)
    # With Expect: 100-continue, waitress 3.0.2 still says 100 Continue (its send_continue
    # clears the error's "completed"), then answers 413 once max_request_body_size bytes came.
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"{head}Expect: 100-continue\r\n\r\n".encode())
        first = sock.recv(65536)
        if first.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"):
            with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                sock.sendall(b"x" * limit)
            first = first.partition(b"\r\n\r\n")[2] or sock.recv(65536)
        assert_closed_after_413(sock, first, limit)


def assert_closed_after_413(sock, answer, limit):
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 413 ")
    assert b"Connection: close" in rest and f"max_body of {limit}".encode() in rest


def test_real_server_answers_expect_100_continue_at_once(live_server):
    host, port = live_server.removeprefix("http://").split(":")
    body = json.dumps(job(description="x" * 2000)).encode()
    with socket.create_connection((host, int(port)), timeout=0.5) as sock:
        sock.sendall(f"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                     f"Expect: 100-continue\r\n\r\n".encode())
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue\r\n")   # before the timeout
        sock.sendall(body)
        assert sock.recv(65536).startswith(b"HTTP/1.1 201 ")


def test_real_server_reads_chunked_bodies(live_server):
    """waitress de-chunks the body and sets Content-Length, so the app sees an ordinary body
    (a server that passes chunked input through still gets 400: test_bad_length_headers_are_400)."""
    host, port = live_server.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    body = json.dumps(job(job_id="chunky")).encode()
    conn.request("POST", "/api/jobs", body=iter([body[:10], body[10:]]), encode_chunked=True,
                 headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    response = conn.getresponse()
    assert response.status == 201 and json.loads(response.read())["id"] == "chunky"
    conn.close()


def test_real_server_answers_idle_and_broken_clients_without_harm(live_server):
    host, port = live_server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"NONSENSE\r\n\r\n")   # the standard library answers HTTP/0.9 style
        assert b"400" in sock.recv(65536)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        # A Content-Length that is not a number cannot be skipped safely (request smuggling).
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: many\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 400")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /api/health HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):   # HTTP/1.0 without keep-alive: closed after one
            answer += chunk
        assert answer.startswith(b"HTTP/1.0 200") and b'"ok"' in answer   # in its version
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/api/status")
    assert conn.getresponse().status == 200


# survival: API jobs and pause state across a reload and a restart

@pytest.mark.both_databases
def test_api_jobs_and_pauses_survive_reload_and_restart(jobs_file, make_config):
    write_jobs(jobs_file, YAML_JOBS)
    service = ts.SchedulerService(make_config()).start()
    try:
        client = Client(ts.create_app(service))
        create(client, job_id="mine", trigger={"type": "interval", "minutes": 7})
        create(client, job_id="mine_paused")
        client.post("/api/jobs/mine_paused/pause")
        client.post("/api/jobs/from_yaml/pause")
        write_jobs(jobs_file, YAML_JOBS.replace("hours: 1", "hours: 2") +
                   "- id: second\n  command: 'true'\n  trigger: {type: interval, hours: 1}\n")
        assert client.post("/api/reload").status == 200
        before = {j["id"]: j for j in client.get("/api/jobs").json["jobs"]}
        assert set(before) == {"from_yaml", "mine", "mine_paused", "second"}
        assert before["from_yaml"]["state"] == "paused"
        assert before["from_yaml"]["trigger_text"] == "every 2h"
        assert before["mine_paused"]["state"] == "paused"
        assert before["mine"]["source"] == "api" and before["mine"]["state"] == "scheduled"
    finally:
        service.stop(grace=1)
    service = ts.SchedulerService(make_config()).start()
    try:
        after = {j["id"]: j for j in Client(ts.create_app(service)).get("/api/jobs").json["jobs"]}
    finally:
        service.stop(grace=1)
    assert set(after) == set(before)
    for job_id, old in before.items():
        new = after[job_id]
        assert (new["source"], new["state"], new["trigger"]) == \
            (old["source"], old["state"], old["trigger"]), job_id
    assert after["mine"]["next_run_time"] == before["mine"]["next_run_time"]   # phase kept


@pytest.mark.both_databases
def test_list_runs_pages_by_cursor_and_caps_the_count(client, service, monkeypatch):
    now = ts_timeutil._utcnow()
    rows = [{"id": f"00{i}", "job_id": "k", "trigger": "manual", "status": "succeeded",
             "scheduled_at": now.replace(microsecond=i), "finished_at": now} for i in range(5)]
    with service.store.write() as conn:
        service.store.runs.insert_runs(conn, rows)

    def page(**query):
        body = client.get("/api/runs", query={"job_id": "k", "limit": 2, **query}).json
        return [r["id"] for r in body["runs"]], body["total"], body["total_capped"]
    assert page() == (["004", "003"], 5, False)
    assert page(before="003") == (["002", "001"], 3, False)
    assert page(before="001") == (["000"], 1, False)
    assert page(before="001", offset=1) == ([], 1, False)
    monkeypatch.setattr(ts_queries, "TOTAL_CAP", 3)
    assert page() == (["004", "003"], 3, True)      # at least 3: counting stopped there
    assert page(offset=2) == (["002", "001"], 5, False)
    assert_error(client.get("/api/runs?before=x'"), 400, "bad_request", "before")
