"""Promises kept (issue 26): a late start, a long run and a silent heartbeat raise `late`,
`long_running` and `overdue` once each, delivered to a real local webhook receiver (opt-in by
`on:`), recorded in the run's history, counted in /metrics and shown on the job; heartbeat jobs
take pings with a ping token that can do nothing else, and cannot be run here."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import pytest
import sqlalchemy as sa

import task_scheduler.store.schema as ts_schema
import task_scheduler as ts
from conftest import Client, wait_for
from test_notify import receiver  # noqa: F401  (the fixture: a real local webhook receiver)

TOKEN = "service-token-0123456789abcdef"


def soon(seconds: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).isoformat()


def events_received(webhook) -> list[tuple[str, str]]:
    return sorted((r["headers"]["X-Task-Scheduler-Event"], json.loads(r["body"])["job"]["id"])
                  for r in webhook.requests)


@pytest.mark.both_databases
def test_late_long_and_silent_are_each_told_once_to_a_webhook(make_service,
                                                             receiver):  # noqa: F811
    service = make_service(sla_every=0.2, notify_delays=(0.2,))
    hook = lambda *events: [{"webhook": receiver.url(), "on": list(events)},   # noqa: E731
                            {"webhook": receiver.url("/default")}]   # default on: no SLA event
    service.add_job({"id": "stuck", "command": "true", "run_on": ["nowhere"],
                     "trigger": {"type": "date", "run_date": soon(0.5)},
                     "sla": {"start_within": "1s"}, "notify": hook("late")})
    service.add_job({"id": "slow", "command": "sleep 30", "trigger": {"type": "manual"},
                     "sla": {"max_duration": 1}, "notify": hook("long_running")})
    service.add_job({"id": "backup", "trigger": {"type": "heartbeat", "every": "1s"},
                     "notify": hook("overdue")})
    slow = service.run_now("slow")
    wait_for(lambda: len(receiver.requests) >= 3, 20, 0.05, "three SLA notifications")
    assert events_received(receiver) == [("late", "stuck"), ("long_running", "slow"),
                                         ("overdue", "backup")]
    assert {r["path"] for r in receiver.requests} == {"/hook"}
    for _ in range(5):   # looking again decides nothing new: each breach is once
        assert service.promises.check() == []
    assert len(receiver.requests) == 3
    late = next(json.loads(r["body"]) for r in receiver.requests
                if r["headers"]["X-Task-Scheduler-Event"] == "late")
    assert late["run"]["status"] == "queued" and "start_within" in late["detail"]

    # a row in each run's history
    assert service.run(slow["id"])["sla_breaches"][0]["event"] == "long_running"
    assert service.run(slow["id"])["status"] == "running"   # it keeps running
    silent = service.runs(job_id="backup")[0]
    assert (silent["trigger"], silent["status"]) == ("heartbeat", "missed")
    assert "no ping since" in silent["error"]
    assert [b["event"] for b in service.run(silent["id"])["sla_breaches"]] == ["overdue"]
    assert service.job("backup")["last_run"]["sla_breaches"] == ["overdue"]
    service.cancel(slow["id"])


def test_a_breach_is_recorded_once_with_its_notifications(service):
    """The store's unique key: the same breach decided twice (a second look, a new leader)
    is recorded, and its notifications queued, once."""
    run_id = "0" * 20
    breach = {"id": "b1", "job_id": "j", "event": "overdue", "subject": "2026-01-01T00:00:00",
              "run_id": run_id, "due_at": dt.datetime(2026, 1, 1), "detected_at":
              dt.datetime(2026, 1, 1), "detail": "no ping"}
    note = {"id": "n1", "run_id": run_id, "job_id": "j", "event": "overdue", "target": "{}",
            "payload": "{}", "status": "sent", "attempts": 0, "next_at": dt.datetime(2026, 1, 1),
            "created_at": dt.datetime(2026, 1, 1), "log": "[]"}
    assert service.store.sla.record([breach], [], {"b1": [note]}, None) == [breach]
    again = {**breach, "id": "b2"}
    assert service.store.sla.record([again], [], {"b2": [{**note, "id": "n2"}]}, None) == []
    assert [n.id for n in service.store.notes.notes_of(run_id)] == ["n1"]


def heartbeat_client(make_service, **overrides):
    service = make_service(token=TOKEN, **overrides)
    service.add_job({"id": "backup", "trigger": {"type": "heartbeat", "every": "1d",
                                                   "grace": "2h"}})
    service.add_job({"id": "other", "trigger": {"type": "heartbeat", "every": "1h"}})
    service.add_job({"id": "plain", "command": "true"})
    return service, Client(ts.create_app(service, gui=None), token=TOKEN)


def test_a_ping_token_is_shown_once_stored_hashed_and_only_pings(make_service):
    service, client = heartbeat_client(make_service)
    answer = client.post("/api/jobs/backup/ping-token")
    assert answer.status == 201 and answer.headers["Cache-Control"] == "no-store"
    token = answer.json["token"]
    with service.engine.connect() as conn:
        stored = conn.execute(sa.select(ts_schema.ts_ping_tokens)).all()
    assert [(r.job_id, r.token_hash) for r in stored] == [
        ("backup", hashlib.sha256(token.encode()).hexdigest())]
    assert "token" not in client.get("/api/jobs/backup").json   # never shown again

    bare = Client(ts.create_app(service, gui=None))   # what curl sends: no service token
    curl = {"Content-Type": "application/x-www-form-urlencoded"}
    ping = bare.post(f"/api/jobs/backup/ping?token={token}", body=b"backup done",
                     headers=curl)
    assert ping.status == 201, ping
    assert (ping.json["run"]["trigger"], ping.json["run"]["status"]) == ("ping", "succeeded")
    assert service.run(ping.json["run"]["id"])["stdout"] == "backup done"
    bearer = {"Authorization": f"Bearer {token}"}
    assert bare.post("/api/jobs/backup/ping", headers=bearer).status == 201
    assert bare.post("/api/jobs/backup/ping?token=wrong-token").status == 401
    assert bare.post("/api/jobs/backup/ping", headers={"Authorization": "Bearer no"}).status \
        == 401
    assert bare.post("/api/jobs/other/ping", headers=bearer).status == 401   # its job only
    assert bare.get("/api/jobs", headers=bearer).status == 401               # pings only
    assert bare.post("/api/jobs/plain/run", headers=bearer).status == 401
    rotated = client.post("/api/jobs/backup/ping-token").json["token"]
    assert bare.post("/api/jobs/backup/ping", headers=bearer).status == 401   # rotated away
    assert bare.post(f"/api/jobs/backup/ping?token={rotated}").status == 201
    assert client.post("/api/jobs/backup/ping").status == 201   # the service token pings too


def test_a_failed_ping_records_its_body_capped_and_masked(make_service):
    service, client = heartbeat_client(make_service, output_limit=1000)
    body = (f"backup failed; token was {TOKEN}\n" + "x" * 5000).encode()
    answer = client.post("/api/jobs/backup/ping?status=fail", body=body,
                         headers={"Content-Type": "text/plain"})
    assert answer.status == 201
    run = service.run(answer.json["run"]["id"])
    assert (run["status"], run["trigger"], run["truncated"]) == ("failed", "ping", True)
    assert run["stdout"].startswith("backup failed; token was ***")
    assert TOKEN not in run["stdout"] and "bytes truncated" in run["stdout"]
    job = client.get("/api/jobs/backup").json
    assert job["last_run"]["id"] == run["id"] and job["kind"] == "heartbeat"
    expected = dt.datetime.fromisoformat(run["scheduled_at"]) + dt.timedelta(days=1)
    assert dt.datetime.fromisoformat(job["next_run_time"]) == expected


def test_heartbeat_jobs_are_pinged_not_run(make_service):
    service, client = heartbeat_client(make_service)
    refused = client.post("/api/jobs/backup/run")
    assert refused.status == 409 and "/api/jobs/backup/ping" in refused.json["error"]["message"]
    not_beat = client.post("/api/jobs/plain/ping")
    assert not_beat.status == 409 and "not a heartbeat job" in not_beat.json["error"]["message"]
    assert client.post("/api/jobs/plain/ping-token").status == 409
    assert client.post("/api/jobs/backup/ping?status=maybe").status == 400
    assert client.post("/api/jobs/nope/ping").status == 404


def test_heartbeat_and_sla_validation_says_what_is_wrong(make_service):
    service, client = heartbeat_client(make_service)
    with_command = client.post("/api/jobs", {"id": "hb", "command": "true",
                                             "trigger": {"type": "heartbeat", "every": "1h"}})
    assert with_command.status == 422
    assert "a heartbeat job has no command" in with_command.json["error"]["message"]
    bad = client.post("/api/jobs", {"id": "hb", "trigger": {"type": "heartbeat",
                                                            "every": "soon"}})
    assert bad.status == 422 and "'soon' is not a duration" in bad.json["error"]["message"]
    empty = client.post("/api/jobs", {"id": "s", "command": "true", "sla": {}})
    assert empty.status == 422 and "start_within" in empty.json["error"]["message"]
    ok = client.post("/api/jobs", {"id": "s", "command": "true",
                                   "sla": {"start_within": "5m", "max_duration": "2h"}})
    assert ok.status == 201 and ok.json["sla"] == {"start_within": "5m", "max_duration": "2h"}


def test_breaches_are_counted_in_metrics(make_service):
    service = make_service(sla_every=0.2)
    service.add_job({"id": "quiet", "trigger": {"type": "heartbeat", "every": 1}})
    client = Client(ts.create_app(service, gui=None))
    line = 'ts_sla_breaches_total{job="quiet",event="overdue"} 1'
    wait_for(lambda: line in client.get("/metrics").text, 15, 0.1, "the breach in /metrics")
    assert "# TYPE ts_sla_breaches_total counter" in client.get("/metrics").text
