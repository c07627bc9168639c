"""Each fire time of a job runs once: a fire that has a row never fires again, whatever
restarts, failovers or catch-ups follow; and no job's trigger can stop the scheduler loop."""

from __future__ import annotations

import datetime as dt
import json
import signal
import urllib.request

import pytest
import sqlalchemy as sa

import task_scheduler as ts
from conftest import final_runs, free_port, start_process, wait_for, write_jobs


def _fire_rows(engine, job_id):
    with engine.connect() as conn:
        return conn.execute(sa.select(ts.ts_runs.c.scheduled_at, ts.ts_runs.c.trigger,
                                      ts.ts_runs.c.status)
                            .where(ts.ts_runs.c.job_id == job_id,
                                   ts.ts_runs.c.trigger.in_(("schedule", "catchup")))).all()


def _soon(seconds: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).isoformat()


def test_a_date_job_fires_once_across_restarts(jobs_file, make_config):
    write_jobs(jobs_file, f"""
        - id: once
          command: ['echo', 'once']
          misfire_grace_time: null
          trigger: {{type: date, run_date: '{_soon(1.5)}'}}
    """)
    config = make_config()
    service = ts.SchedulerService(config).start()
    try:
        final_runs(service, "once", timeout=30)
    finally:
        service.stop()
    for _ in range(2):   # restarted twice: each start would re-add the date job
        service = ts.SchedulerService(config).start()
        try:
            service.flush()
            rows = _fire_rows(service.engine, "once")
            assert len(rows) == 1, rows
            assert service.job("once")["state"] == "finished"
        finally:
            service.stop()


def test_an_api_date_job_fires_once_when_restarted_or_edited(make_config):
    config = make_config()
    service = ts.SchedulerService(config).start()
    try:
        service.add_job({"id": "later", "command": "true", "misfire_grace_time": None,
                         "trigger": {"type": "date", "run_date": _soon(1.0)}})
        final_runs(service, "later", timeout=30)
        # an edit that keeps the date adds the job to the schedule again: still no new fire
        service.replace_job("later", {"id": "later", "command": "true", "description": "x",
                                      "misfire_grace_time": None,
                                      "trigger": service.job("later")["trigger"]})
        service.pause("later")
        service.resume("later")
        service.flush()
        assert len(_fire_rows(service.engine, "later")) == 1
    finally:
        service.stop()
    service = ts.SchedulerService(config).start()
    try:
        service.flush()
        assert len(_fire_rows(service.engine, "later")) == 1
    finally:
        service.stop()


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_a_date_job_runs_once_when_the_process_is_stopped_and_started(tmp_path, database_url,
                                                                      stop):
    """The issue's repro with the real CLI: a date job due in a few seconds, its run, the
    process stopped (SIGTERM or kill -9) and started again: one run for that fire time."""
    jobs = write_jobs(tmp_path / "jobs.yaml", f"""
        - id: once
          command: ['echo', 'once']
          trigger: {{type: date, run_date: '{_soon(4)}'}}
    """)
    port = free_port()
    args = ["--config", str(jobs), "--db", database_url, "--port", str(port)]

    def call(path):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api{path}", timeout=5) as resp:
            return json.loads(resp.read())

    def up():
        try:
            return call("/health")["status"] == "ok"
        except OSError:
            return False

    def runs():
        return call("/runs?job_id=once")["runs"]

    log = tmp_path / "service.log"
    proc = start_process(args, tmp_path)
    try:
        wait_for(up, 60, 0.1, "the service to start")
        wait_for(lambda: [r for r in runs() if r["status"] == "succeeded"], 60, 0.2,
                 "the date job's run")
        proc.send_signal(stop)
        proc.wait(30)
        for restart in range(1, 3):
            proc = start_process(args, tmp_path)
            wait_for(up, 60, 0.1, "the service to start again")
            # Once leading (on PostgreSQL after a kill -9, when the dead node's lease ends), the
            # first wakeup either fires it again or logs that it was not fired again.
            wait_for(lambda: len(runs()) > 1 or log.read_text().count(
                "not fired again, already recorded: once at") >= restart, 120, 0.2,  # noqa: B023
                "the first wakeup as leader")
            assert [(r["scheduled_at"], r["trigger"]) for r in runs()] == \
                [(runs()[0]["scheduled_at"], "schedule")]
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    engine = ts.create_engine(database_url)
    try:
        assert len(_fire_rows(engine, "once")) == 1
    finally:
        engine.dispose()
