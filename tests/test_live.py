"""Watching a run live (offsets, Server-Sent Events, from another node), running with parameters,
rerunning a run, and manual-only jobs."""

from __future__ import annotations

import http.client
import json
import time

import pytest

import task_scheduler as ts
import task_scheduler.models as ts_models
import task_scheduler.output as ts_output
from conftest import Client, wait_for

TICKER = {"id": "ticker", "command": "for i in 1 2 3 4 5 6; do echo line $i; sleep 0.3; done",
          "shell": True, "trigger": {"type": "manual"}}


def test_offsets_tail_a_running_command(service):
    client = Client(ts.create_app(service))
    service.add_job(TICKER)
    run = client.post("/api/jobs/ticker/run").json["run"]
    seen, offset, while_running = "", 0, []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        chunk = client.get(f"/api/runs/{run['id']}/stdout?offset={offset}").json
        assert chunk["offset"] >= offset
        seen, offset = seen + chunk["text"], chunk["offset"]
        if chunk["running"] and chunk["text"]:
            while_running.append(chunk["text"])
        if not chunk["running"]:
            break
        time.sleep(0.05)
    assert seen == "".join(f"line {i}\n" for i in range(1, 7))
    assert while_running and "line 1" in while_running[0], "output showed while it ran"
    final = client.get(f"/api/runs/{run['id']}/stdout?offset={offset}").json
    assert final == {"text": "", "offset": offset, "status": "succeeded", "running": False,
                     "truncated": False}
    assert client.get(f"/api/runs/{run['id']}/stdout?offset=-1").status == 400


def test_offsets_in_a_capped_stream_say_what_was_not_kept():
    capped = ts_output.CappedOutput(20)
    capped.write(b"0123456789" * 5)
    text, after = ts_output.output_since(*capped.parts(), 3)
    assert after == 50 and text.startswith("3456789") and "bytes not kept" in text
    assert text.endswith("0123456789")
    assert ts_output.output_parts(capped.text()) == capped.parts()   # read back from the database
    euro = "€".encode()
    assert ts_output.output_since(euro[:2], b"", 2, 0) == ("", 0)   # half a character waits


def test_server_sent_events_stream_the_output_until_the_end(service, live_server):
    service.add_job(TICKER)
    run = service.run_now("ticker")
    host, port = live_server.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=20)
    conn.request("GET", f"/api/runs/{run['id']}/stdout",
                 headers={"Accept": "text/event-stream"})
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type").startswith("text/event-stream")
    events, started = [], time.monotonic()
    while True:
        line = response.fp.readline().decode()
        if line.startswith("event:"):
            name = line.split(":", 1)[1].strip()
            data = json.loads(response.fp.readline().decode().split(":", 1)[1])
            events.append((name, data, time.monotonic() - started))
            if name == "end":
                break
    conn.close()
    text = "".join(d["text"] for n, d, _ in events if n == "output")
    assert text == "".join(f"line {i}\n" for i in range(1, 7))
    assert events[-1][:2] == ("end", {"status": "succeeded", "offset": len(text)})
    assert len([e for e in events if e[0] == "output"]) >= 3, "it came in pieces, as written"


@pytest.mark.postgres
def test_output_of_a_run_on_another_node_shows_within_a_second(tmp_path, postgres_url):
    here = ts.SchedulerService(ts.Config(config_path=None, database_url=postgres_url,
                                         node="here")).start()
    there = ts.SchedulerService(ts.Config(config_path=None, database_url=postgres_url,
                                          node="there", labels=("far",))).start()
    try:
        here.add_job({"id": "far", "command": "echo first; sleep 3; echo second",
                      "shell": True, "run_on": ["far"], "trigger": {"type": "manual"}})
        wait_for(lambda: there.book.get("far"), 5, message="the job on the other node")
        run = here.run_now("far")
        printed = wait_for(lambda: here.run(run["id"])["status"] == "running"
                           and time.monotonic(), 10)
        assert here.run(run["id"])["node"] == "there"
        seen = wait_for(lambda: here.output(run["id"], "stdout")["text"] == "first\n"
                        and time.monotonic(), 5, message="the first line on this node")
        assert seen - printed < 2.0   # flushed by the other node, read from the database
        assert here.output(run["id"], "stdout")["running"]
    finally:
        there.stop(grace=0.5)
        here.stop(grace=0.5)


PARAMS_MODULE = '''
def greet(name, punctuation="!"):
    print(f"hello {name}{punctuation}")
'''


def test_run_with_parameters_and_rerun(tmp_path, make_service):
    (tmp_path / "ts_params_mod.py").write_text(PARAMS_MODULE)
    service = make_service()
    client = Client(ts.create_app(service))
    service.add_job({"id": "greet", "func": "ts_params_mod:greet", "args": ["job"],
                     "trigger": {"type": "manual"}})
    service.add_job({"id": "show", "command": "echo \"$GREETING\" \"$@\"", "shell": True,
                     "env": {"GREETING": "hi"}, "trigger": {"type": "manual"}})
    answer = client.post("/api/jobs/greet/run", {"args": ["run"], "kwargs": {"punctuation": "?"}})
    assert answer.status == 202
    run = wait_run(service, answer.json["run"]["id"])
    assert run["stdout"] == "hello run?\n"
    assert run["params"] == {"args": ["run"], "kwargs": {"punctuation": "?"}}
    rerun = client.post(f"/api/runs/{run['id']}/rerun")
    assert rerun.status == 202 and rerun.json["run"]["rerun_of"] == run["id"]
    again = wait_run(service, rerun.json["run"]["id"])
    assert again["stdout"] == "hello run?\n" and again["trigger"] == "manual"
    shown = wait_run(service, client.post("/api/jobs/show/run", {
        "args": ["a b", "c"], "env": {"GREETING": "hey"}}).json["run"]["id"])
    assert shown["stdout"] == "hey a b c\n"
    for job_id, body, words in [
            ("greet", {"kwargs": {"nope": 1}}, "greet() has no parameter 'nope'"),
            ("greet", {"args": []}, "greet() needs the argument 'name'"),
            ("greet", {"env": {"A": "b"}}, "env is for command jobs and python jobs with"),
            ("show", {"kwargs": {"a": 1}}, "kwargs are for python jobs only"),
            ("show", {"env": {"A": 1}}, "env.A"),
            ("show", {"colour": "red"}, "colour")]:
        answer = client.post(f"/api/jobs/{job_id}/run", body)
        assert answer.status == 422, answer
        assert words in answer.text, answer.text
    assert client.post("/api/jobs/greet/run", body=b"[1]",
                       headers={"Content-Type": "application/json"}).status == 422
    running = service.run_now("show")
    if service.run(running["id"])["status"] not in ts_models.FINAL_STATUSES:
        assert client.post(f"/api/runs/{running['id']}/rerun").status in (202, 409)


def wait_run(service, run_id):
    return wait_for(
        lambda: (r := service.run(run_id))["status"] in ts_models.FINAL_STATUSES and r, 15)


def test_manual_only_jobs_never_fire_but_run_by_hand(tmp_path, make_service, jobs_file):
    jobs_file.write_text("- {id: by_hand, command: 'echo hand', trigger: {type: manual}}\n"
                         "- {id: no_trigger, command: 'echo none'}\n")
    service = make_service()
    for job_id in ("by_hand", "no_trigger"):
        job = service.job(job_id)
        assert job["state"] == "manual" and job["next_run_time"] is None
        assert job["next_run_times"] == [] and "manual" in job["trigger_text"]
        assert service.scheduler.get_job(job_id) is None
    assert wait_run(service, service.run_now("by_hand")["id"])["stdout"] == "hand\n"
    assert [j["id"] for j in service.jobs(state="manual")] == ["by_hand", "no_trigger"]
    service.flush()
    assert len(service.runs(job_id="no_trigger")) == 0   # nothing fired by itself
