"""The audit log (issue 24): every write through the API and the GUI recorded with its actor,
in the same transaction as the change (a change that rolled back leaves no row), reloads as
jobs.yaml with the file's hash, filters and keyset pages, retention, no secret value stored,
and no way to change it through the API."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
import re
import threading

import pytest
import sqlalchemy as sa

import task_scheduler as ts
from conftest import Client, wait_for, write_jobs
from test_security import Browser
from task_scheduler.store.schema import ts_audit, ts_jobs

TOKEN = "audit-token-0123456789abcdef"
SECRETS = ["hunter2-env-secret", "sig-secret-4242", "hdr-secret-7777", "pathsecret9999",
           "kwarg-secret-5151", "run-env-secret-6262", "slack-secret-3131"]
JOB = {"id": "backup", "command": "echo hi", "trigger": {"type": "interval", "hours": 1},
       "env": {"DB_PASSWORD": SECRETS[0], "MODE": "full"},
       "notify": [{"webhook": f"https://hooks.example.com/{SECRETS[3]}", "secret": SECRETS[1],
                   "headers": {"Authorization": SECRETS[2]}, "on": ["failed"]},
                  {"slack": f"https://hooks.slack.com/services/{SECRETS[6]}"}]}


def entries(client, **query) -> list:
    answer = client.get("/api/audit", query=query)
    assert answer.status == 200, answer
    return answer.json["entries"]


def audit_text(service) -> str:
    with service.engine.connect() as conn:
        return json.dumps([list(map(str, row)) for row in conn.execute(sa.select(ts_audit))])


def queued_run(client, job_id: str, body=None) -> str:
    answer = client.post(f"/api/jobs/{job_id}/run", body)
    assert answer.status == 202, answer
    return answer.json["run"]["id"]


@pytest.mark.both_databases
def test_every_write_through_the_api_is_recorded_with_its_actor(make_service):
    service = make_service(token=TOKEN)
    client = Client(ts.create_app(service), TOKEN)
    assert client.post("/api/jobs", JOB).status == 201
    assert client.put("/api/jobs/backup", {**JOB, "timeout": 60}).status == 200
    assert client.post("/api/jobs/backup/pause").status == 200
    assert client.post("/api/jobs/backup/resume").status == 200
    run_id = queued_run(client, "backup")
    wait_for(lambda: service.flush() and service.run(run_id)["status"] == "succeeded", 15)
    rerun = client.post(f"/api/runs/{run_id}/rerun").json["run"]["id"]
    assert client.post(f"/api/runs/{rerun}/cancel").status in (200, 409)
    hb = {"id": "beat", "trigger": {"type": "heartbeat", "every": "1h"}}
    assert client.post("/api/jobs", hb).status == 201
    assert client.post("/api/jobs/beat/ping-token").status == 201
    assert client.delete("/api/jobs/backup").status == 204
    every = [e for e in entries(client) if e["object_type"] != "config"]   # the start's reload
    got = [(e["action"], e["object_type"], e["object_id"]) for e in every][::-1]
    assert got == [("job.create", "job", "backup"), ("job.replace", "job", "backup"),
                   ("job.pause", "job", "backup"), ("job.resume", "job", "backup"),
                   ("run.now", "job", "backup"), ("run.rerun", "job", "backup"),
                   ("run.cancel", "run", rerun), ("job.create", "job", "beat"),
                   ("job.ping_token", "job", "beat"), ("job.delete", "job", "backup")]
    assert {(e["actor"], e["actor_kind"], e["address"]) for e in every} == {
        ("token", "legacy", "127.0.0.1")}
    replaced = next(e for e in every if e["action"] == "job.replace")["detail"]
    assert replaced["changed"] == ["timeout"]
    assert replaced["before"].get("timeout") is None and replaced["after"]["timeout"] == 60
    assert service.run(run_id)["started_by"] == "token"
    assert service.run(rerun)["started_by"] == "token"
    ids = [e["id"] for e in every]
    assert ids == sorted(ids, reverse=True)   # newest first, ids time-ordered


def test_without_a_token_the_actor_is_local_and_nothing_changed_is_not_recorded(service):
    client = Client(ts.create_app(service))
    same = {"id": "a", "command": "true", "replace_existing": True}
    assert client.post("/api/jobs", same).status == 201
    assert client.post("/api/jobs/a/pause").status == 200
    assert client.post("/api/jobs/a/pause").status == 200   # paused already: no change
    assert client.post("/api/jobs", same).status == 201      # the same definition again
    assert [(e["action"], e["actor"], e["actor_kind"]) for e in entries(client, object="job")] == [
        ("job.pause", "local", "local"), ("job.create", "local", "local")]


def test_a_write_that_rolls_back_leaves_no_row(service):
    """A job id taken in the table meanwhile (another node) makes the insert fail: the 409's
    transaction held the audit row, and it is gone with it."""
    client = Client(ts.create_app(service))
    with service.engine.begin() as conn:
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        conn.execute(ts_jobs.insert().values(id="ghost", source="api", definition="{}",
                                             definition_hash="x", paused=False,
                                             created_at=now, updated_at=now))
    answer = client.post("/api/jobs", {"id": "ghost", "command": "true"})
    assert answer.status == 409, answer
    assert client.post("/api/jobs", {"id": "real", "command": "true"}).status == 201
    assert [e["object_id"] for e in entries(client, object="job")] == ["real"]


@pytest.mark.both_databases
def test_a_reload_by_file_edit_is_recorded_as_jobs_yaml_with_its_hash(jobs_file, make_service):
    write_jobs(jobs_file, "- {id: one, command: 'true'}\n- {id: two, command: 'true'}\n")
    service = make_service(poll_interval=0.2)
    client = Client(ts.create_app(service))
    text = "- {id: one, command: 'echo 1'}\n- {id: three, command: 'true'}\n"
    write_jobs(jobs_file, text)
    digest = hashlib.sha256(text.encode()).hexdigest()
    wait_for(lambda: entries(client, action="config.reload")[0]["detail"]["hash"] == digest, 10,
             message="the edit's reload in the audit log")
    latest = [e for e in entries(client) if e["detail"].get("hash") == digest]
    assert {(e["action"], e["object_id"]) for e in latest} == {
        ("config.reload", "jobs.yaml"), ("job.replace", "one"), ("job.create", "three"),
        ("job.delete", "two")}
    assert {(e["actor"], e["actor_kind"]) for e in latest} == {("jobs.yaml", "yaml")}
    reload = next(e for e in latest if e["action"] == "config.reload")["detail"]
    assert reload["asked_by"] == "system" and reload["changes"]["removed"] == 1
    assert client.post("/api/reload").status == 200   # the API asks: said who asked
    assert entries(client, action="config.reload")[0]["detail"]["asked_by"] == "local"


def test_filters_and_keyset_pages(service):
    client = Client(ts.create_app(service))
    for n in range(7):
        assert client.post("/api/jobs", {"id": f"j{n}", "command": "true"}).status == 201
    assert client.post("/api/jobs/j3/pause").status == 200
    seen, before = [], None
    while True:
        query = {"limit": 3, **({"before": before} if before else {})}
        page = client.get("/api/audit", query=query).json
        seen += [e["id"] for e in page["entries"]]
        before = page["next"]
        if before is None:
            break
    assert len(seen) == 9 and len(set(seen)) == 9 and seen == sorted(seen, reverse=True)
    assert [e["action"] for e in entries(client, object="job:j3")] == ["job.pause", "job.create"]
    assert len(entries(client, action="job.")) == 8
    assert len(entries(client, action="job.create")) == 7
    assert entries(client, actor="nobody") == []
    assert len(entries(client, actor="local")) == 8   # and the start's reload: system's
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    assert entries(client, since=later) == [] and len(entries(client, until=later)) == 9
    assert client.get("/api/audit", query={"before": "zz'"}).status == 400
    assert client.get("/api/audit", query={"limit": "0"}).status == 400


def test_retention_prunes_old_rows_only(make_service):
    service = make_service(keep_audit_days=30)
    client = Client(ts.create_app(service))
    for n in range(3):
        assert client.post("/api/jobs", {"id": f"j{n}", "command": "true"}).status == 201
    old = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(days=31)
    with service.engine.begin() as conn:
        conn.execute(ts_audit.update().where(ts_audit.c.object_id != "j2").values(at=old))
    service.prune()
    assert [e["object_id"] for e in entries(client)] == ["j2"]


@pytest.mark.both_databases
def test_no_secret_value_is_ever_stored(make_service, jobs_file):
    write_jobs(jobs_file, f"- id: filed\n  command: 'true'\n  env: {{API_TOKEN: {SECRETS[4]}}}\n")
    service = make_service(token=TOKEN)
    client = Client(ts.create_app(service), TOKEN)
    assert client.post("/api/jobs", JOB).status == 201
    changed = {**JOB, "env": {"DB_PASSWORD": SECRETS[0] + "-new"}, "description": "x"}
    assert client.put("/api/jobs/backup", changed).status == 200
    queued_run(client, "backup", {"env": {"SECRET_KEY": SECRETS[5]}})
    write_jobs(jobs_file, "- id: filed\n  command: 'true'\n")
    assert client.post("/api/reload").status == 200
    assert client.delete("/api/jobs/backup").status == 204
    text = audit_text(service)
    assert "DB_PASSWORD" in text and "SECRET_KEY" in text   # names are kept
    found = [s for s in [*SECRETS, TOKEN] if s in text]
    assert not found, f"secret values in the audit log: {found}"
    assert len(entries(client)) >= 6


def test_the_api_cannot_change_the_audit_log(service):
    """Append-only: GET is the only route; no store method updates a row; retention is the
    one delete (store/retention.py)."""
    client = Client(ts.create_app(service))
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        assert client.request(method, "/api/audit").status == 405
    routes = [(m, p) for m, p, _ in ts.http.app.API_ROUTES if "audit" in p]
    assert routes == [("GET", "/api/audit")]
    sources = {p: p.read_text() for p in ts.store.audit.__file__ and
               __import__("pathlib").Path(ts.__file__).parent.rglob("*.py")}
    writers = {p.name for p, text in sources.items()
               if re.search(r"ts_audit\.(update|delete)\(", text)}
    assert writers == {"retention.py"}


def test_gui_logins_failed_logins_and_logouts_are_recorded(make_service):
    service = make_service(token=TOKEN)
    browser = Browser(ts.create_app(service))
    csrf = browser.csrf("/login")
    status, _, _ = browser.request("POST", "/login", form={"token": "wrong-token-0000000000",
                                                           "csrf_token": csrf})
    assert status == 401
    status, _, _ = browser.request("POST", "/login", form={"token": TOKEN, "csrf_token": csrf})
    assert status == 303
    status, _, _ = browser.request("POST", "/logout", form={"csrf_token": browser.csrf()})
    assert status == 303
    got = [(e["action"], e["actor"]) for e in entries(Client(ts.create_app(service), TOKEN),
                                                      object="session")]
    assert got == [("gui.logout", "token"), ("gui.login", "token"),
                   ("gui.login_failed", "anonymous")]


def table_state(service) -> dict:
    with service.engine.connect() as conn:
        return {r.id: (r.definition_hash, r.paused) for r in conn.execute(
            sa.select(ts_jobs.c.id, ts_jobs.c.definition_hash, ts_jobs.c.paused))}


def test_random_writes_with_failed_commits_record_exactly_the_changes_made(service):
    """Random creates, replaces (some the same), pauses (some twice), resumes and deletes, a
    fifth of them with a commit that fails: the log holds one row for each change the table
    shows, with its action, and none for a write that rolled back or changed nothing."""
    rng = random.Random(24)
    client = Client(ts.create_app(service))
    failing = {"on": False}
    here = threading.get_ident()   # the requests' thread: the scheduler's commits go on

    def fail_commit(conn):
        if failing["on"] and threading.get_ident() == here:
            raise sa.exc.OperationalError("COMMIT", {}, Exception("injected: commit failed"))
    sa.event.listen(service.engine, "commit", fail_commit)
    expected, statuses = [], set()
    try:
        for _ in range(120):
            job_id = f"j{rng.randrange(4)}"
            op = rng.choice(["create", "replace", "pause", "resume", "delete"])
            body = {"id": job_id, "command": f"echo {rng.randrange(3)}", "replace_existing": True}
            before = table_state(service)
            failing["on"] = rng.random() < 0.2
            answer = _write(client, op, job_id, body)
            failing["on"] = False
            statuses.add(answer.status)
            after = table_state(service)
            if before.get(job_id) != after.get(job_id):
                expected.append(_action(op, before.get(job_id), after.get(job_id), job_id))
    finally:
        sa.event.remove(service.engine, "commit", fail_commit)
    got = [(e["action"], e["object_id"]) for e in
           client.get("/api/audit", query={"object": "job", "limit": 500}).json["entries"]][::-1]
    assert got == expected
    assert {200, 201, 204, 503} <= statuses and len(expected) > 20   # each kind happened


def _write(client, op: str, job_id: str, body: dict):
    if op == "create":
        return client.post("/api/jobs", body)
    if op == "replace":
        return client.put(f"/api/jobs/{job_id}", body)
    if op == "delete":
        return client.delete(f"/api/jobs/{job_id}")
    return client.post(f"/api/jobs/{job_id}/{op}")


def _action(op: str, before, after, job_id: str) -> tuple:
    if after is None:
        return "job.delete", job_id
    if before is None:
        return "job.create", job_id
    if before[0] != after[0]:
        return "job.replace", job_id
    return ("job.pause" if after[1] else "job.resume"), job_id
