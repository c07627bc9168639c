"""The change feed and GET /api/events (issue 25): runs queued, started and ended and jobs
changed are told to readers, as JSON after a cursor or as a stream; written by another process
(SQLite) or another node (PostgreSQL) too; streams are bounded and a gone client frees its slot;
the GUI's /live is behind the GUI's login; nobody reading costs the database nothing."""

from __future__ import annotations

import datetime as dt
import json
import socket
import subprocess
import sys
import time

import pytest

import task_scheduler as ts
import task_scheduler.http.api as ts_api
from task_scheduler.store.schema import new_run_id
from conftest import Client, wait_for
from test_starvation import kill

QUEUED_FOREVER = {"id": "nowhere", "command": "true", "trigger": {"type": "manual"},
                  "run_on": ["no-such-label"]}   # no node has the label: it stays queued


class Reader:
    """Polls /api/events as a client that has no stream would, keeping every event."""

    def __init__(self, client: Client):
        self.client = client
        answer = client.get("/api/events")
        assert answer.status == 200, answer
        self.cursor, self.events, self.resets = answer.json["cursor"], [], 0

    def poll(self) -> list:
        answer = self.client.get("/api/events", query={"after": self.cursor})
        assert answer.status == 200, answer
        self.cursor = answer.json["cursor"]
        self.resets += answer.json["reset"]
        self.events += [(e["event"], e["data"]) for e in answer.json["events"]]
        return self.events

    def runs(self, run_id: str) -> list:
        return [data for kind, data in self.events if kind == "run" and data["id"] == run_id]

    def until(self, predicate, timeout: float = 5.0, message: str = ""):
        return wait_for(lambda: (self.poll(), predicate())[1], timeout, 0.05, message)


@pytest.mark.both_databases
def test_a_run_is_told_queued_running_and_ended(service, client):
    reader = Reader(client)
    service.add_job({"id": "short", "command": "sleep 1.5", "trigger": {"type": "manual"}})
    run = service.run_now("short")
    reader.until(lambda: any(r["status"] == "running" for r in reader.runs(run["id"])),
                 message="running")
    ended = reader.until(lambda: [r for r in reader.runs(run["id"])
                                  if r["status"] == "succeeded"], message="succeeded")[-1]
    assert ended["job_id"] == "short" and ended["trigger"] == "manual"
    assert ended["node"] == service.store.node
    assert ended["started_at"] and ended["finished_at"] >= ended["started_at"]
    statuses = [r["status"] for r in reader.runs(run["id"])]
    assert statuses.index("running") < statuses.index("succeeded")

    service.add_job(QUEUED_FOREVER)
    waiting = service.run_now("nowhere")
    queued = reader.until(lambda: reader.runs(waiting["id"]), message="queued")
    assert queued[0]["status"] == "queued" and queued[0]["started_at"] is None
    service.cancel(waiting["id"])
    reader.until(lambda: reader.runs(waiting["id"])[-1]["status"] == "cancelled",
                 message="cancelled")
    assert reader.resets == 0


@pytest.mark.both_databases
def test_jobs_are_told_paused_resumed_and_deleted(service, client):
    reader = Reader(client)
    service.add_job({"id": "j", "command": "true", "trigger": {"type": "interval", "hours": 1}})

    def states():
        return [data["state"] for kind, data in reader.events if kind == "job"
                and data["id"] == "j"]
    reader.until(lambda: "scheduled" in states(), message="added")
    service.pause("j")
    reader.until(lambda: states()[-1] == "paused", message="paused")
    service.resume("j")
    reader.until(lambda: states()[-1] == "scheduled", message="resumed")
    service.delete_job("j")
    reader.until(lambda: states()[-1] == "deleted", message="deleted")


def test_a_run_written_by_another_process_is_told(service, client, sqlite_url):
    """Another process on the SQLite file sends no notification: the feed's own look finds it."""
    reader = Reader(client)
    run_id = new_run_id()
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(sep=" ")
    script = ("import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); "
              "db.execute(\"INSERT INTO ts_runs (id, job_id, trigger, attempt, scheduled_at, "
              "started_at, finished_at, status, truncated, node, run_on, cancel_requested) "
              "VALUES (?, 'elsewhere', 'manual', 1, ?, ?, ?, 'failed', 0, 'other', '', 0)\", "
              "(sys.argv[2], sys.argv[3], sys.argv[3], sys.argv[3])); db.commit()")
    subprocess.run([sys.executable, "-c", script, sqlite_url.removeprefix("sqlite:///"),
                    run_id, now], check=True, timeout=30)
    told = reader.until(lambda: reader.runs(run_id), 5, "the other process's run")
    assert told[0]["status"] == "failed" and told[0]["node"] == "other"
    assert told[0]["job_id"] == "elsewhere"


@pytest.mark.postgres
def test_a_run_on_another_node_is_told_on_this_one(postgres_url, tmp_path):
    """Two nodes on one database: a run queued on b, started and ended wherever, is told by a."""
    services = [ts.SchedulerService(ts.Config(config_path=None, node=node, watch=False,
                                              database_url=postgres_url)).start()
                for node in ("a", "b")]
    try:
        a, b = services
        reader = Reader(Client(ts.create_app(a)))
        b.add_job({"id": "there", "command": "sleep 2", "trigger": {"type": "manual"}})
        reader.until(lambda: ("job", {"id": "there", "state": "manual"}) in reader.events,
                     message="the job added on b")
        run = b.run_now("there")
        reader.until(lambda: [r for r in reader.runs(run["id"]) if r["status"] == "running"],
                     message="running, told on a")
        reader.until(lambda: [r for r in reader.runs(run["id"])
                              if r["status"] == "succeeded"], message="ended, told on a")
    finally:
        for service in services:
            service.stop(grace=2)


def test_too_many_changes_at_once_are_one_reset(service, client):
    service.changes.CAP = 3
    reader = Reader(client)
    service.add_job({**QUEUED_FOREVER, "max_instances": 10})
    with service.changes._looking:   # one look sees all five: on a loaded machine a look fell
        for _ in range(5):           # between two of them and told the first one by one
            service.run_now("nowhere")
    reader.until(lambda: ("reset", {}) in reader.events, message="a reset")
    assert not [e for e in reader.events if e[0] == "run"]
    count = len(reader.events)
    time.sleep(3)   # several looks at the same backlog, past the window of fresh ids
    reader.poll()
    assert len(reader.events) == count, "one reset per change, not one per look"


def test_cursors_the_feed_cannot_answer_are_a_reset_and_bad_ones_400(client):
    assert client.get("/api/events", query={"after": "00000000.5"}).json["reset"] is True
    for bad in ("x", "abc.1", "00000000.-1", "0" * 8 + "." + "9" * 30):
        answer = client.get("/api/events", query={"after": bad})
        assert answer.status == 400, (bad, answer)
        assert "after" in answer.json["error"]["message"]
    assert client.get("/api/events", query={"since": "1"}).status == 400


def test_nobody_reading_costs_the_database_nothing(service, client, monkeypatch):
    looks = []
    real = service.store.queries.live_runs
    monkeypatch.setattr(service.store.queries, "live_runs",
                        lambda *args: looks.append(1) or real(*args))
    service.add_job({"id": "busy", "command": "true", "trigger": {"type": "manual"},
                     "max_instances": 10})
    runs = [service.run_now("busy") for _ in range(3)]
    wait_for(lambda: all(service.run(r["id"])["status"] == "succeeded" for r in runs), 10,
             message="the runs to end")   # their commits poke the feed: a reader would look
    assert service.flush()
    assert looks == []   # commits and runs, but no reader: no look
    reader = Reader(client)
    run = service.run_now("busy")
    reader.until(lambda: reader.runs(run["id"]), message="a look once read")
    assert looks


def test_events_need_the_token_and_live_needs_the_gui_login(make_service):
    service = make_service(token="s3cret-token-for-events")
    app = ts.create_app(service)
    assert Client(app).get("/api/events").status == 401
    assert Client(app, token="s3cret-token-for-events").get("/api/events").status == 200
    answer = Client(app).get("/live")
    assert answer.status == 303 and "/login" in answer.headers["Location"]
    bearer = Client(app, token="s3cret-token-for-events").get("/live")
    assert bearer.status == 303   # the GUI's own login, as every page of it
    assert Client(app).get("/api/events", headers={"Host": "evil.example"}).status == 403


def test_the_gui_feed_answers_as_the_api_does(service, client):
    first = client.get("/live")
    assert first.status == 200 and first.headers["Cache-Control"] == "no-store"
    service.add_job({"id": "g", "command": "true", "trigger": {"type": "manual"}})
    run = service.run_now("g")

    def told():
        answer = client.get("/live", query={"after": first.json["cursor"]})
        return [e for e in answer.json["events"] if e["data"].get("id") == run["id"]]
    wait_for(told, 5)


def open_events(base: str, path: str = "/api/events"):
    """An event stream on a raw socket, its first bytes read: a client we can kill."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n"
                 .encode())
    return sock, sock.recv(4096)


def read_events(sock, until: bytes, timeout: float = 5.0) -> bytes:
    data, deadline = b"", time.monotonic() + timeout
    sock.settimeout(0.5)
    while until not in data and time.monotonic() < deadline:
        try:
            data += sock.recv(65536)
        except TimeoutError:
            pass
    return data


def test_a_stream_tells_runs_and_resumes_after_its_last_event(service, live_server):
    service.add_job({"id": "s", "command": "true", "trigger": {"type": "manual"}})
    sock, first = open_events(live_server)
    try:
        assert first.startswith(b"HTTP/1.1 200") and b"text/event-stream" in first
        assert b"retry: 1000" in first + read_events(sock, b"retry:")
        run = service.run_now("s")
        data = read_events(sock, b'"succeeded"')
        assert b"event: run" in data and run["id"].encode() in data and b'"succeeded"' in data
        last_id = [line for line in data.decode().splitlines() if line.startswith("id: ")][-1]
    finally:
        sock.close()
    cursor = last_id.removeprefix("id: ")
    again = service.run_now("s")
    host = live_server.removeprefix("http://")
    resumed = socket.create_connection(tuple([host.split(":")[0], int(host.split(":")[1])]))
    try:
        resumed.sendall(f"GET /api/events HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream"
                        f"\r\nLast-Event-ID: {cursor}\r\n\r\n".encode())
        data = read_events(resumed, again["id"].encode())
        assert again["id"].encode() in data and run["id"].encode() not in data
    finally:
        resumed.close()


def test_streams_are_bounded_and_a_gone_client_frees_its_slot(service, live_server, client):
    streams = [open_events(live_server) for _ in range(ts_api.MAX_STREAMS)]
    assert all(first.startswith(b"HTTP/1.1 200") for _, first in streams)
    extra, first = open_events(live_server)
    first += read_events(extra, b"}}")
    extra.close()
    assert first.startswith(b"HTTP/1.1 503")
    body = json.loads(first.partition(b"\r\n\r\n")[2])
    assert "poll" in body["error"]["message"]
    gui, first = open_events(live_server, "/live")   # the GUI's stream shares the slots
    gui.close()
    assert first.startswith(b"HTTP/1.1 503")
    host, port = live_server.removeprefix("http://").split(":")
    import http.client
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/api/events")
    assert conn.getresponse().status == 200   # polling needs no slot
    conn.close()
    for sock, _ in streams:
        kill(sock)

    def slot_free():
        sock, first = open_events(live_server)
        sock.close()
        return first.startswith(b"HTTP/1.1 200")
    wait_for(slot_free, 8, 0.2, "a slot of the killed streams to be free")


def test_the_dashboards_counts_move_when_runs_change_and_stay_cached_when_not(service):
    service.add_job({"id": "c", "command": "true", "trigger": {"type": "manual"}})
    key = service.changes_since(None).cursor
    assert service.status(counts_max_age=60, counts_key=key)["runs_24h"] == {}
    run = service.run_now("c")
    wait_for(lambda: service.run(run["id"])["status"] == "succeeded")
    service.flush()
    assert service.status(counts_max_age=60, counts_key=key)["runs_24h"] == {}   # cached
    moved = wait_for(lambda: service.changes_since(key).events and
                     service.changes_since(key).cursor)
    counted = wait_for(lambda: service.status(counts_max_age=60, counts_key=moved)
                       ["runs_24h"], 3, 0.1, "a recount once the cursor moved")
    assert counted == {"succeeded": 1}
