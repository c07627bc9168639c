"""Notifications against real local servers: a webhook receiver (fields and HMAC signature), an
incoming-webhook (Slack-style) receiver, and an SMTP server; every `on:` event; retries of a
receiver that is down, a final failure recorded, delivery after a restart; no secret in the API,
the GUI or the log."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sqlalchemy as sa

import task_scheduler as ts
import task_scheduler.store.schema as ts_schema
import task_scheduler.models as ts_models
from conftest import Client, free_port, wait_for, write_jobs

SECRET = "hook-secret-123"
HEADER_TOKEN = "Bearer header-token-456"


class Receiver:
    """A local HTTP server that records every POST; it can answer errors or be switched off."""

    def __init__(self):
        self.requests: list[dict] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({"path": self.path, "headers": dict(self.headers),
                                          "body": body})
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass
        self.port = free_port()
        self.handler = Handler
        self.server = None
        self.up()

    def up(self):
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self.handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self):
        self.server.shutdown()
        self.server.server_close()

    def url(self, path="/hook"):
        return f"http://127.0.0.1:{self.port}{path}"

    def json(self, index=-1):
        return json.loads(self.requests[index]["body"])


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.down()


@pytest.fixture
def smtp():
    from aiosmtpd.controller import Controller

    class Inbox:
        def __init__(self):
            self.messages = []

        async def handle_DATA(self, server, session, envelope):
            self.messages.append(envelope)
            return "250 OK"
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield f"smtp://127.0.0.1:{controller.port}?from=scheduler@example.com", inbox
    controller.stop()


def notify_service(make_service, **overrides):
    return make_service(notify_delays=(0.2,), public_url="https://sched.example.com",
                        **overrides)


def run_to_end(service, job_id):
    run = service.run_now(job_id)
    return wait_for(lambda: (r := service.run(run["id"]))["status"] in ts_models.FINAL_STATUSES
                    and r, 20, message=f"a run of {job_id}")


def sent_notes(service, run_id, count=1):
    def done():
        notes = service.run(run_id)["notifications"]
        return notes if len(notes) >= count and all(n["status"] != "pending" for n in notes) \
            else None
    return wait_for(done, 20, 0.1, "the notifications to be sent")


def test_webhook_sends_the_run_signed_and_no_secret_shows(make_service, receiver, caplog):
    caplog.set_level(logging.DEBUG, logger="task_scheduler")
    service = notify_service(make_service)
    service.add_job({"id": "broken", "description": "データのバックアップ",
                     "command": "echo working; echo oops >&2; exit 3",
                     "shell": True, "trigger": {"type": "manual"},
                     "notify": [{"webhook": receiver.url("/hook?key=url-secret"),
                                 "secret": SECRET, "headers": {"Authorization": HEADER_TOKEN}}]})
    run = run_to_end(service, "broken")
    note = sent_notes(service, run["id"])[0]
    assert note["status"] == "sent" and note["event"] == "failed" and note["attempts"] == 1
    request = receiver.requests[-1]
    expected = "sha256=" + hmac.new(SECRET.encode(), request["body"], hashlib.sha256).hexdigest()
    assert request["headers"]["X-Task-Scheduler-Signature-256"] == expected
    assert request["headers"]["Authorization"] == HEADER_TOKEN
    assert request["path"] == "/hook?key=url-secret"
    body = receiver.json()
    assert body["event"] == "failed" and body["job"] == {"id": "broken",
                                                         "description": "データのバックアップ"}
    assert body["run"]["id"] == run["id"] and body["run"]["exit_code"] == 3
    assert body["run"]["status"] == "failed" and body["run"]["error"] == "exit code 3"
    assert body["output"] == {"stdout": ["working"], "stderr": ["oops"]}
    assert body["url"] == f"https://sched.example.com/runs/{run['id']}"
    for key in ("scheduled_at", "started_at", "finished_at", "duration_s", "trigger"):
        assert key in body["run"]
    # Secrets: not in the API's job or run, not in the GUI's job page, not in the log.
    client = Client(ts.create_app(service))
    shown = [client.get("/api/jobs/broken").text, client.get(f"/api/runs/{run['id']}").text,
             client.get("/jobs/broken").text,
             "\n".join(r.getMessage() for r in caplog.records)]
    for text in shown:
        for secret in (SECRET, HEADER_TOKEN, "url-secret", "header-token"):
            assert secret not in text
    assert "127.0.0.1" in client.get("/api/jobs/broken").json["notify"][0]["webhook"]


EVENT_JOBS = """
- id: ok
  command: 'true'
  trigger: {type: manual}
  notify: [{webhook: '%(url)s', on: [succeeded]}]
- id: fails
  command: 'false'
  trigger: {type: manual}
  notify: [{webhook: '%(url)s'}]
- id: slow
  command: 'sleep 5'
  timeout: 0.5
  trigger: {type: manual}
  notify: [{webhook: '%(url)s', on: [timeout]}]
- id: flaky
  command: 'if [ -e done ]; then exit 0; else touch done; exit 1; fi'
  shell: true
  trigger: {type: manual}
  notify: [{webhook: '%(url)s', on: [recovered]}]
"""


def test_each_event_is_sent_only_where_asked(make_service, receiver, jobs_file):
    write_jobs(jobs_file, EVENT_JOBS % {"url": receiver.url()})
    service = notify_service(make_service)
    expected = [("ok", "succeeded"), ("fails", "failed"), ("slow", "timeout")]
    for job_id, event in expected:
        run = run_to_end(service, job_id)
        note = sent_notes(service, run["id"])[0]
        assert (note["event"], note["status"]) == (event, "sent")
        assert receiver.json()["event"] == event and receiver.json()["job"]["id"] == job_id
    first = run_to_end(service, "flaky")
    assert first["status"] == "failed" and service.run(first["id"])["notifications"] == []
    second = run_to_end(service, "flaky")   # the first success after a failure
    assert sent_notes(service, second["id"])[0]["event"] == "recovered"
    third = run_to_end(service, "flaky")    # a second success in a row is no recovery
    service.flush()
    assert third["status"] == "succeeded" and service.run(third["id"])["notifications"] == []
    assert [json.loads(r["body"])["event"] for r in receiver.requests] == \
        ["succeeded", "failed", "timeout", "recovered"]


@pytest.mark.both_databases
def test_missed_and_interrupted_are_sent_and_a_restart_still_delivers(
        make_config, receiver, jobs_file):
    write_jobs(jobs_file, f"""
        - id: tick
          command: 'true'
          misfire_grace_time: 1
          trigger: {{type: interval, seconds: 1}}
          notify: [{{webhook: '{receiver.url()}', on: [missed]}}]
        - id: long
          command: 'sleep 60'
          trigger: {{type: manual}}
          notify: [{{webhook: '{receiver.url()}', on: [interrupted]}}]
    """)
    config = make_config(notify_delays=(0.2,))
    first = ts.SchedulerService(config).start()
    run = first.run_now("long")
    wait_for(lambda: first.run(run["id"])["status"] == "running", 10)
    receiver.down()   # nothing can be delivered now
    first.stop(grace=0.2)   # the long run ends interrupted; its notification stays queued
    # The downtime: until 'tick's next stored fire time is past its 1 s grace (with a margin).
    engine = ts_schema.create_engine(config.database_url)
    with engine.connect() as conn:
        due = conn.execute(sa.text(f"SELECT next_run_time FROM {ts_schema.APS_TABLE} "
                                   "WHERE id = 'tick'")).scalar()
    engine.dispose()
    wait_for(lambda: time.time() > due + 1.5, 10, 0.05, "tick's fire to be past its grace")
    receiver.up()
    second = ts.SchedulerService(config).start()
    try:
        note = sent_notes(second, run["id"])[0]
        assert note["event"] == "interrupted" and note["status"] == "sent"
        missed = wait_for(lambda: second.runs(job_id="tick", status="missed"), 10)
        assert sent_notes(second, missed[0]["id"])[0]["event"] == "missed"
        events = {json.loads(r["body"])["event"] for r in receiver.requests}
        assert events == {"interrupted", "missed"}
    finally:
        second.stop()


def test_a_receiver_that_is_down_is_retried_then_given_up(make_service, receiver):
    receiver.down()
    service = make_service(notify_delays=(0.2,), notify_retry_for=1.5)
    service.add_job({"id": "j", "command": "false", "trigger": {"type": "manual"},
                     "notify": [{"webhook": receiver.url()}]})
    run = run_to_end(service, "j")
    note = sent_notes(service, run["id"])[0]
    assert note["status"] == "failed" and note["attempts"] >= 3
    assert all(not a["ok"] for a in note["log"]) and "Connection refused" in note["log"][0][
        "detail"]
    receiver.up()


@pytest.mark.both_databases
def test_a_receiver_answering_errors_is_retried_until_it_answers(make_service, receiver):
    receiver.status = 500
    service = make_service(notify_delays=(0.3,))
    service.add_job({"id": "j", "command": "false", "trigger": {"type": "manual"},
                     "notify": [{"webhook": receiver.url()}]})
    run = run_to_end(service, "j")
    wait_for(lambda: len(receiver.requests) >= 2, 10, message="a retry")
    receiver.status = 200
    note = sent_notes(service, run["id"])[0]
    assert note["status"] == "sent" and note["attempts"] >= 3
    assert note["log"][0]["detail"].startswith("HTTP 500") and note["log"][-1]["ok"]


def test_slack_message_links_the_run(make_service, receiver):
    service = notify_service(make_service)
    service.add_job({"id": "s", "command": "false", "trigger": {"type": "manual"},
                     "notify": [{"slack": receiver.url("/services/T0/B0/xyz")}]})
    run = run_to_end(service, "s")
    sent_notes(service, run["id"])
    text = receiver.json()["text"]
    assert "job s failed" in text and f"<https://sched.example.com/runs/{run['id']}|" in text
    assert service.job("s")["notify"][0]["slack"].endswith("/…")


def test_email_goes_through_the_smtp_server(make_service, smtp):
    url, inbox = smtp
    service = notify_service(make_service, smtp_url=url)
    service.add_job({"id": "mailer", "command": "echo bad news; exit 1", "shell": True,
                     "trigger": {"type": "manual"},
                     "notify": [{"email": ["ops@example.com", "dev@example.com"]}]})
    run = run_to_end(service, "mailer")
    note = sent_notes(service, run["id"])[0]
    assert note["status"] == "sent" and note["target"] == \
        "mail to ops@example.com, dev@example.com"
    envelope = inbox.messages[-1]
    assert envelope.mail_from == "scheduler@example.com"
    assert sorted(envelope.rcpt_tos) == ["dev@example.com", "ops@example.com"]
    message = envelope.content.decode()
    assert "job mailer failed" in message and "bad news" in message
    assert f"https://sched.example.com/runs/{run['id']}" in message


def test_mail_without_an_smtp_server_fails_with_a_clear_reason(make_service):
    service = make_service(notify_delays=(0.2,), notify_retry_for=0.5)
    service.add_job({"id": "m", "command": "false", "trigger": {"type": "manual"},
                     "notify": [{"email": ["ops@example.com"]}]})
    note = sent_notes(service, run_to_end(service, "m")["id"])[0]
    assert note["status"] == "failed" and "--smtp-url" in note["log"][0]["detail"]


def test_notify_in_defaults_and_bad_targets_are_validation_errors(tmp_path):
    path = write_jobs(tmp_path / "jobs.yaml", """
        defaults:
          notify: [{webhook: 'https://hooks.example.com/x', on: [failed, recovered]}]
        jobs:
          - {id: a, command: 'true', trigger: {type: manual}}
    """)
    jobs, _ = ts.load_jobs_file(str(path))
    assert jobs[0].notify[0].on == ["failed", "recovered"]
    path.write_text("- {id: b, command: 'true', notify: [{pager: 'x'}], "
                    "trigger: {type: manual}}\n- {id: c, command: 'true', "
                    "notify: [{webhook: 'ftp://x', on: [sometimes]}]}\n")
    with pytest.raises(ts.InvalidConfig) as error:
        ts.load_jobs_file(str(path))
    text = str(error.value)
    assert "b: notify.0: a notify target needs one of webhook, slack or email" in text
    assert "c: notify.0.webhook: must be an http:// or https:// URL" in text
    assert "c: notify.0.on.0" in text
