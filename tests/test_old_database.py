"""Databases written by older code keep loading (issue 21: the single file becomes a package).

``tests/data/db-main-11b5a2a.sqlite`` was written by ``task_scheduler.py`` of main at 11b5a2a
(``tests/data/make_old_db.py`` says how and what it holds). Its APScheduler rows hold pickles
that name ``task_scheduler:execute_job`` and trigger classes under the module name
``task_scheduler``. Each test opens a copy of it with today's code, through public names only,
so the same tests hold before and after the split.
"""

from __future__ import annotations

import datetime as dt
import io
import pickle
import shutil
import sqlite3
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from conftest import wait_for
from task_scheduler import Config, SchedulerService

DATA = Path(__file__).resolve().parent / "data"
OLD_DB = DATA / "db-main-11b5a2a.sqlite"
OLD_JOBS_YAML = DATA / "db-main-11b5a2a.jobs.yaml"
FINAL = {"succeeded", "failed", "timeout", "missed", "skipped", "interrupted", "cancelled"}
APS_TABLE = "ts_apscheduler_jobs"   # the table's name is part of the stored format

# id: (source, state, trigger type)
EXPECTED_JOBS = {
    "yaml_cron_tz": ("yaml", "scheduled", "cron"),
    "yaml_crontab": ("yaml", "scheduled", "cron"),
    "yaml_interval": ("yaml", "scheduled", "interval"),
    "yaml_disabled": ("yaml", "disabled", "cron"),
    "yaml_manual": ("yaml", "manual", "manual"),
    "yaml_date_future": ("yaml", "scheduled", "date"),
    "yaml_notify": ("yaml", "manual", "manual"),
    "api_python": ("api", "scheduled", "interval"),
    "api_cron_paused": ("api", "paused", "cron"),
    "api_date_fired": ("api", "finished", "date"),
    "api_date_future": ("api", "scheduled", "date"),
    "api_fails": ("api", "manual", "manual"),
    "api_jitter": ("api", "scheduled", "interval"),
}


class NamingUnpickler(pickle.Unpickler):
    """Unpickles with today's code and records every module-qualified name the pickle asks for."""

    def __init__(self, data: bytes, names: set):
        super().__init__(io.BytesIO(data))
        self.names = names

    def find_class(self, module, name):
        self.names.add(f"{module}:{name}")
        return super().find_class(module, name)


def raw(path: Path, sql: str) -> list:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def ts(value) -> float:
    return dt.datetime.fromisoformat(value).timestamp()


@pytest.fixture
def old_db(tmp_path):
    """A copy of the old database and of the jobs.yaml it was made with, and its Config."""
    db = tmp_path / "ts.sqlite"
    shutil.copyfile(OLD_DB, db)
    shutil.copyfile(OLD_JOBS_YAML, tmp_path / "jobs.yaml")
    # timezone: the one the file was made with (a job's stored schedule hash includes it)
    config = Config(config_path=str(tmp_path / "jobs.yaml"), database_url=f"sqlite:///{db}",
                    timezone="UTC", port=0, watch=False, poll_interval=3600, debounce=0.1,
                    shutdown_grace=5, kill_grace=1)
    return db, config


@pytest.fixture
def old_service(old_db):
    db, config = old_db
    before = dict(raw(db, f"SELECT id, next_run_time FROM {APS_TABLE}"))
    service = SchedulerService(config).start()
    yield service, db, before
    service.stop(grace=2)


def test_the_file_really_holds_pickles_named_after_the_single_module(old_db):
    """The point of the fixture: its APScheduler rows name ``task_scheduler`` (the module), and
    today's code unpickles every one of them into working triggers."""
    rows = raw(old_db[0], f"SELECT id, next_run_time, job_state FROM {APS_TABLE}")
    assert {r[0] for r in rows} == {job for job, (_, state, kind) in EXPECTED_JOBS.items()
                                   if state not in ("manual", "disabled")}
    names: set = set()
    now = dt.datetime.now(dt.UTC)
    for job_id, _, blob in rows:
        state = NamingUnpickler(blob, names).load()
        assert state["func"] == "task_scheduler:execute_job", job_id
        assert state["args"] == (job_id,)
        trigger = state["trigger"]
        assert type(trigger).__module__.split(".")[0] in ("task_scheduler", "apscheduler")
        if type(trigger).__name__ != "DateTrigger":   # a date trigger may be in the past
            assert trigger.get_next_fire_time(None, now) > now, job_id
    assert "task_scheduler:CrontabTrigger" in names   # a class pickled under the module's name
    # Everything the pickles name: a package split must keep each of these importable.
    assert names == {
        "task_scheduler:CrontabTrigger",
        "apscheduler.triggers.date:DateTrigger", "apscheduler.triggers.interval:IntervalTrigger",
        "builtins:getattr", "datetime:datetime", "datetime:timedelta", "datetime:timezone",
        "zoneinfo:ZoneInfo"}
    crontab = pickle.loads(dict((r[0], r[2]) for r in rows)["yaml_cron_tz"])["trigger"]
    assert type(crontab).__name__ == "CrontabTrigger"
    assert type(crontab).__module__.split(".")[0] == "task_scheduler"


def test_every_job_loads_with_its_trigger_and_state(old_service):
    service, _, before = old_service
    jobs = {j["id"]: j for j in service.jobs()}
    assert {k: (j["source"], j["state"], j["trigger"]["type"]) for k, j in jobs.items()} \
        == EXPECTED_JOBS
    paused = jobs["api_cron_paused"]
    assert paused["paused"] is True and paused["next_run_time"] is None
    assert paused["trigger"] == {"type": "cron", "expression": "0 * * * *"}
    assert jobs["api_date_fired"]["next_run_time"] is None
    assert jobs["yaml_disabled"]["func"] == "task_scheduler:http_check"
    assert jobs["yaml_cron_tz"]["definition"]["retries"] == {"max": 2, "delay": 60, "backoff": 2}
    assert jobs["yaml_cron_tz"]["timeout"] == 30
    assert jobs["yaml_manual"]["definition"]["env"] == {"GREETING": "hello"}
    assert jobs["api_python"]["kwargs"] == {"sep": ", "}
    jitter = jobs["api_jitter"]
    assert (jitter["max_instances"], jitter["coalesce"], jitter["misfire_grace_time"]) \
        == (2, False, None)
    notify = jobs["yaml_notify"]["notify"]
    assert [t["webhook"].split("/")[2] for t in notify] == ["127.0.0.1:9"]
    assert "s3cret" not in str(notify) and "/hook" not in str(notify)   # still redacted

    # Dates far ahead: the stored next_run_time is the one shown.
    assert ts(jobs["yaml_date_future"]["next_run_time"]) == before["yaml_date_future"] \
        == dt.datetime(3026, 1, 1, tzinfo=dt.UTC).timestamp()
    assert ts(jobs["api_date_future"]["next_run_time"]) == before["api_date_future"] \
        == dt.datetime(2099, 6, 1, 12, tzinfo=ZoneInfo("Asia/Tokyo")).timestamp()

    # Every scheduled job gets a next fire time from now on (stale ones are caught up).
    start = time.time()

    def all_ahead():
        found = {j["id"]: j for j in service.jobs(state="scheduled")}
        return found if all(j["next_run_time"] and ts(j["next_run_time"]) >= start - 1
                            for j in found.values()) else None
    ahead = wait_for(all_ahead, 15, message="every scheduled job's next fire from now on")
    assert set(ahead) == {k for k, v in EXPECTED_JOBS.items() if v[1] == "scheduled"}
    berlin = dt.datetime.fromisoformat(ahead["yaml_cron_tz"]["next_run_time"]) \
        .astimezone(ZoneInfo("Europe/Berlin"))
    assert (berlin.hour, berlin.minute, berlin.weekday() < 5) == (9, 15, True)
    new_york = dt.datetime.fromisoformat(ahead["yaml_crontab"]["next_run_time"]) \
        .astimezone(ZoneInfo("America/New_York"))
    assert (new_york.hour, new_york.minute) == (2, 30)
    assert len(ahead["yaml_crontab"]["next_run_times"]) == 5


def test_old_runs_and_their_output_are_listed(old_service):
    service, _, _ = old_service
    stored = raw(OLD_DB, "SELECT id, job_id, trigger, attempt, status FROM ts_runs")
    assert len(stored) >= 10
    old_ids = {r[0] for r in stored}   # not the runs of this start (catch-up, new fires)
    listed = {r["id"]: r for r in service.runs(limit=1000)}
    for run_id, job_id, trigger, attempt, status in stored:
        assert (listed[run_id]["job_id"], listed[run_id]["trigger"], listed[run_id]["attempt"],
                listed[run_id]["status"]) == (job_id, trigger, attempt, status)

    def only(job_id, trigger="manual", **match):
        runs = [r for r in service.runs(job_id=job_id, trigger=trigger, limit=1000)
                if r["id"] in old_ids and all(r.get(k) == v for k, v in match.items())]
        return service.run(runs[-1]["id"])   # the oldest of them

    crontab = only("yaml_crontab")
    assert (crontab["status"], crontab["stdout"], crontab["stderr"]) \
        == ("succeeded", "crontab-out\n", "crontab-err\n")
    assert service.output(crontab["id"], "stderr")["text"] == "crontab-err\n"
    with_params = only("yaml_manual", rerun_of=None)
    assert with_params["stdout"] == "hi from params\n"
    assert with_params["params"] == {"args": ["from", "params"], "env": {"GREETING": "hi"}}
    rerun = [r for r in service.runs(job_id="yaml_manual", limit=100)
             if r.get("rerun_of") == with_params["id"]]
    assert len(rerun) == 1 and service.run(rerun[0]["id"])["stdout"] == "hi from params\n"
    assert only("api_python")["stdout"] == "hello, api\n"
    failed = only("api_fails")
    assert failed["status"] == "failed" and "ValueError" in failed["error"]
    notify = only("yaml_notify")
    assert (notify["status"], notify["exit_code"], notify["stderr"]) == ("failed", 3, "failing\n")
    retry = only("yaml_notify", trigger="retry")
    assert (retry["attempt"], retry["status"]) == (2, "failed")
    # the last attempt's notification, still pending when the old code stopped, with its log
    # (it may be retried or given up on by now: its status is not asserted)
    notes = retry["notifications"]
    assert [n["event"] for n in notes] == ["failed"]
    assert "127.0.0.1:9" in notes[0]["target"] and "s3cret" not in str(notes)
    assert "Connection refused" in notes[0]["log"][0]["detail"]
    assert only("api_date_fired", trigger="schedule")["stdout"] == "fired-once\n"
    assert only("yaml_interval", trigger="schedule")["stdout"] == "tick\n"


def test_old_jobs_run_now_and_fire_on_their_stored_schedule(old_service):
    service, _, before = old_service
    old_ids = {r[0] for r in raw(OLD_DB, "SELECT id FROM ts_runs")}
    manual = [service.run_now("yaml_crontab"), service.run_now("api_python"),
              service.run_now("yaml_manual", {"args": ["again"]})]
    done = [wait_for(lambda r=run: (lambda got: got if got["status"] in FINAL else None)(
        service.run(r["id"])), 15, message=f"run of {run['job_id']}") for run in manual]
    assert [(r["status"], r["stdout"]) for r in done] == [
        ("succeeded", "crontab-out\n"), ("succeeded", "hello, api\n"),
        ("succeeded", "hello again\n")]

    # The 2-second interval job fires again, in the phase of its stored pickle: its trigger
    # (start_date and all) came from the old row, not from a fresh build at this start.
    def new_fire():
        service.flush()
        fires = [r for r in service.runs(job_id="yaml_interval", trigger="schedule", limit=50)
                 if r["id"] not in old_ids and r["status"] == "succeeded"]
        return fires or None
    fire = wait_for(new_fire, 15, message="a new scheduled fire of yaml_interval")[0]
    assert service.run(fire["id"])["stdout"] == "tick\n"
    phase = (ts(fire["scheduled_at"]) - before["yaml_interval"]) % 2
    assert min(phase, 2 - phase) < 0.002, (fire["scheduled_at"], before["yaml_interval"])
