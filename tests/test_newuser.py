"""What a new user hit in the first hour: an edited job module that reload did not see, a date
job in the past accepted and then stuck, a silent Ctrl-C, a busy port found too late, --help
without the flags the README uses, an explicit --config that does not exist, status lists,
attempt numbers, and errors with HTTP advice in Python."""

from __future__ import annotations

import datetime as dt
import signal
import socket
import subprocess
import sys
import time

import pytest

import sqlalchemy as sa
import task_scheduler as ts
import task_scheduler.cli as ts_cli
import task_scheduler.store.schema as ts_schema
from conftest import Client, ROOT, child_env, free_port, start_process, wait_for, write_jobs


def test_an_edited_job_module_is_imported_again_on_reload(tmp_path, make_service):
    name = f"ts_edited_{tmp_path.name.replace('-', '_')}"   # one module per parameter
    module = tmp_path / f"{name}.py"
    module.write_text("def first():\n    print('one')\n")
    jobs = write_jobs(tmp_path / "jobs.yaml", f"""
        - {{id: edited, func: '{name}:first', trigger: {{type: interval, hours: 1}}}}
    """)
    service = make_service(config_path=str(jobs))
    run = service.run_now("edited")
    wait_for(lambda: service.run(run["id"])["status"] == "succeeded", 10)
    assert service.run(run["id"])["stdout"] == "one\n"
    module.write_text("def first():\n    print('uno')\n\ndef second():\n    print('two')\n")
    write_jobs(jobs, f"""
        - {{id: edited, func: '{name}:second', trigger: {{type: interval, hours: 1}}}}
    """)
    assert ts.load_jobs_file(str(jobs))[0][0].func == f"{name}:second"   # validate
    config = service.reload()
    assert config["error"] is None, config["error"]   # the service agrees with validate
    run = service.run_now("edited")
    wait_for(lambda: service.run(run["id"])["status"] == "succeeded", 10)
    assert service.run(run["id"])["stdout"] == "two\n"


@pytest.mark.both_databases
def test_a_date_in_the_past_is_refused_and_a_fired_date_job_is_finished(make_service):
    service = make_service()
    client = Client(ts.create_app(service))
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)).isoformat()
    answer = client.post("/api/jobs", {"id": "late", "command": "true",
                                       "trigger": {"type": "date", "run_date": past}})
    assert answer.status == 422 and "has passed" in answer.json["error"]["message"]
    assert answer.json["error"]["details"][0]["field"] == "trigger.run_date"
    recent = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)).isoformat()
    answer = client.post("/api/jobs", {"id": "graced", "command": "true",
                                       "trigger": {"type": "date", "run_date": recent}})
    assert answer.status == 201   # its grace (60 s) still covers now: it runs at once
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)).isoformat()
    client.post("/api/jobs", {"id": "soon", "command": "true", "misfire_grace_time": 1,
                              "trigger": {"type": "date", "run_date": soon}})
    wait_for(lambda: (service.job("soon")["last_run"] or {}).get("status") == "succeeded", 10,
             message="the date job's run")
    job = service.job("soon")
    assert job["state"] == "finished" and job["next_run_time"] is None
    assert [j["id"] for j in service.jobs(state="finished")] == ["graced", "soon"]
    wait_for(lambda: service.job("graced")["last_run"], 10, message="the graced job's run")


@pytest.mark.slow
def test_ctrl_c_says_what_it_waits_for_and_a_second_one_stops_at_once(tmp_path):
    write_jobs(tmp_path / "jobs.yaml", "- {id: long, command: 'sleep 60', "
                                       "trigger: {type: interval, hours: 1}}\n")
    port = free_port()
    proc = start_process(["--port", str(port)], tmp_path)
    log = tmp_path / "service.log"
    try:
        wait_for(lambda: b"serving on" in log.read_bytes(), 30, 0.1, "the service")
        import urllib.request
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/jobs/long/run",
                                         method="POST")
        urllib.request.urlopen(request, timeout=5).close()
        wait_for(lambda: b'"status": "running"' in urllib.request.urlopen(
            f"http://127.0.0.1:{port}/api/runs?job_id=long", timeout=5).read(), 10)
        proc.send_signal(signal.SIGINT)
        wait_for(lambda: b"waiting up to" in log.read_bytes(), 10, 0.1, "what it waits for")
        assert b"long (" in log.read_bytes()   # the job it waits for is named
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
        assert time.monotonic() - started < 8   # not the 30 s grace
    finally:
        if proc.poll() is None:
            proc.kill()
    engine = ts_schema.create_engine(f"sqlite:///{tmp_path / 'task_scheduler.sqlite'}")
    with engine.connect() as conn:
        status = conn.execute(sa.select(ts_schema.ts_runs.c.status)).scalar()
    engine.dispose()
    assert status == "interrupted"


def test_a_busy_port_is_found_before_anything_starts(tmp_path):
    write_jobs(tmp_path / "jobs.yaml", "- {id: j, command: 'true', "
                                       "trigger: {type: interval, seconds: 1}}\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "task_scheduler", "--port", str(port)],
                                cwd=tmp_path, capture_output=True, text=True, timeout=30,
                                env=child_env())
    assert result.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "started" not in result.stderr   # no scheduler ran, no job fired
    assert not (tmp_path / "task_scheduler.sqlite-wal").exists()


def test_help_shows_the_run_flags_and_a_missing_explicit_config_fails(tmp_path):
    result = subprocess.run([sys.executable, "-m", "task_scheduler", "--help"],
                            capture_output=True, text=True, timeout=30, env=child_env(),
                            cwd=ROOT)
    for flag in ("--port", "--config", "--db", "--host", "--token-file", "--allowed-hosts",
                 "--labels", "validate"):
        assert flag in result.stdout, flag
    result = subprocess.run([sys.executable, "-m", "task_scheduler", "--config",
                             str(tmp_path / "nope.yaml")], capture_output=True, text=True,
                            timeout=30, env=child_env(), cwd=tmp_path)
    assert result.returncode == 2 and "nope.yaml does not exist" in result.stderr


def test_token_file_and_a_warning_for_a_token_in_ps(tmp_path, capsys):
    (tmp_path / "token").write_text("from-a-file\n")
    args = ts_cli._parser().parse_args(["run", "--token-file", str(tmp_path / "token")])
    assert ts.Config.from_args(args, {}).token == "from-a-file"
    with pytest.raises(ts.SchedulerError, match="cannot read the token file"):
        args = ts_cli._parser().parse_args(["run", "--token-file", "/nonexistent"])
        ts.Config.from_args(args, {})


@pytest.mark.both_databases
def test_status_lists_and_attempt_numbers(make_service):
    service = make_service()
    client = Client(ts.create_app(service))
    service.add_job({"id": "bad", "command": "false", "trigger": {"type": "interval", "hours": 1},
                     "retries": {"max": 1, "delay": 0}})
    service.run_now("bad")
    wait_for(lambda: len(service.runs(job_id="bad", status="failed")) == 2, 15)
    runs = client.get("/api/runs?status=failed,timeout&job_id=bad").json
    assert runs["total"] == 2 and sorted(r["attempt"] for r in runs["runs"]) == [1, 2]
    answer = client.get("/api/runs?status=failed,nope")
    assert answer.status == 400 and "'nope' is not one of" in answer.json["error"]["message"]
    assert client.get("/api/jobs?state=scheduled,paused").json["total"] == 1


def test_python_errors_carry_no_http_advice(make_service):
    service = make_service()
    definition = {"id": "twice", "command": "true", "trigger": {"type": "interval", "hours": 1}}
    service.add_job(definition)
    with pytest.raises(ts.JobConflict) as error:
        service.add_job(definition)
    assert "PUT" not in str(error.value) and "HTTP" not in str(error.value)
    assert service.add_job({**definition, "replace_existing": True})["id"] == "twice"
