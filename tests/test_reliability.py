"""Faults injected for real: a locked or restarted database, downtime with missed fires, clocks
that change, duplicate schedulers, processes that die by signals, jobs that never return."""

from __future__ import annotations

import datetime as dt
import pickle
import sqlite3
import threading
import time
import uuid
import zoneinfo

import pytest
import sqlalchemy as sa

import task_scheduler as ts
import task_scheduler.history as ts_history
import task_scheduler.store as ts_store
import task_scheduler.store.schema as ts_schema
import task_scheduler.timeutil as ts_timeutil
import task_scheduler.triggers as ts_triggers
from conftest import final_runs, wait_for, write_jobs

UTC = dt.UTC


def add(service, **definition):
    definition.setdefault("trigger", {"type": "interval", "hours": 1})
    return service.add_job(definition)


# -- database faults ---------------------------------------------------------------------------

def test_sqlite_locked_beyond_busy_timeout_scheduler_survives(tmp_path, make_service, sqlite_url):
    service = make_service(database_url=sqlite_url, busy_timeout=0.2)
    service.scheduler.retry_wait = 0.3
    add(service, id="tick", command=["true"], trigger={"type": "interval", "seconds": 0.5})
    final_runs(service, "tick", count=1)
    add(service, id="during", command=["sleep", "0.5"])
    path = sqlite_url.removeprefix("sqlite:///")
    locker = sqlite3.connect(path, timeout=5)
    during = service.run_now("during")
    # in flight when the database locks (a run must be claimed, through the database, to start)
    wait_for(lambda: service.run(during["id"])["status"] == "running", 10)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        wait_for(lambda: not service.health()[0], 10, message="health to report the fault")
        assert service.health()[1]["scheduler"] == "down"
        wait_for(lambda: service.run(during["id"])["status"] == "succeeded", 10)
    finally:
        locker.rollback()
        locker.close()
    wait_for(lambda: service.health()[0], 15, message="health to recover")
    service.flush(30)
    with service.engine.connect() as conn:   # finished while locked, written after
        assert conn.execute(sa.select(ts_schema.ts_runs.c.status)
                            .where(ts_schema.ts_runs.c.id == during["id"])).scalar() == "succeeded"
    assert service.scheduler.alive()
    before = len(final_runs(service, "tick", count=1))
    final_runs(service, "tick", count=before + 2, timeout=15)   # firing resumed by itself
    service.flush()
    runs = service.runs(job_id="tick", limit=1000)
    keys = [(r["scheduled_at"], r["trigger"], r["attempt"]) for r in runs]
    assert len(keys) == len(set(keys)), "a fire time was recorded twice"


@pytest.mark.postgres
def test_postgres_connections_killed_mid_run(postgres_url, make_service):
    # Its own application_name: the test ends this service's sessions, not those of the tests
    # running beside it on the same server.
    name = f"ts-killed-{uuid.uuid4().hex[:8]}"
    service = make_service(database_url=f"{postgres_url}&application_name={name}")
    add(service, id="slow", command=["sleep", "1"])
    add(service, id="tick", command=["true"], trigger={"type": "interval", "seconds": 0.5})
    final_runs(service, "tick", count=1)
    run = service.run_now("slow")
    wait_for(lambda: service.run(run["id"])["status"] == "running", 5)
    admin = sa.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.connect() as conn:
        killed = conn.execute(sa.text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = :name AND pid <> pg_backend_pid()"), {"name": name}).scalar()
    admin.dispose()
    assert killed >= 1
    wait_for(lambda: service.run(run["id"])["status"] == "succeeded", 15)
    service.flush()
    with service.engine.connect() as conn:
        status = conn.execute(sa.select(ts_schema.ts_runs.c.status)
                              .where(ts_schema.ts_runs.c.id == run["id"])).scalar()
    assert status == "succeeded"
    count = len(final_runs(service, "tick", count=1))
    final_runs(service, "tick", count=count + 2, timeout=15)
    assert service.health()[0]


def test_health_reports_503_when_the_database_is_gone(make_service, client_factory=None):
    service = make_service()
    app = ts.create_app(service)
    from conftest import Client
    http = Client(app)
    assert http.get("/api/health").status == 200
    service.engine.dispose()
    real_connect = service.engine.connect

    def broken():
        raise sa.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))
    service.engine.connect = broken
    try:
        answer = http.get("/api/health")
        assert answer.status == 503 and answer.json["db"].startswith("error")
    finally:
        service.engine.connect = real_connect
    assert http.get("/api/health").status == 200


# -- downtime: catch-up and missed fires ---------------------------------------------------------

def _downtime(jobs_file, make_config, job_yaml, seconds):
    write_jobs(jobs_file, job_yaml)
    config = make_config()
    first = ts.SchedulerService(config).start()
    first.stop()
    time.sleep(seconds)   # the downtime itself: the service is stopped, nothing to poll
    return ts.SchedulerService(config).start()


@pytest.mark.both_databases
def test_missed_fires_within_grace_run_as_one_catchup(jobs_file, make_config):
    service = _downtime(jobs_file, make_config, """
        - {id: j, command: 'true', misfire_grace_time: 60, coalesce: true,
           trigger: {type: interval, seconds: 1}}
    """, 3.2)
    try:
        wait_for(lambda: service.runs(job_id="j", trigger="catchup", status="succeeded"), 10,
                 message="the catch-up run")
        runs = final_runs(service, "j", count=1)
        catchups = [r for r in service.runs(job_id="j", limit=100) if r["trigger"] == "catchup"]
        assert len(catchups) == 1 and catchups[0]["status"] == "succeeded"
        ran = [r for r in runs if r["status"] != "missed"]
        assert ran[-1]["trigger"] == "catchup"
        # The fire times coalesced into the catch-up are rows too: never a silent gap.
        coalesced = service.runs(job_id="j", status="missed", limit=100)
        assert len(coalesced) >= 1 and all("coalesced" in r["error"] for r in coalesced)
        assert {r["scheduled_at"] for r in coalesced} < {r["scheduled_at"] for r in runs}
    finally:
        service.stop()


@pytest.mark.both_databases
def test_missed_fires_without_coalesce_each_run(jobs_file, make_config):
    service = _downtime(jobs_file, make_config, """
        - {id: j, command: 'true', misfire_grace_time: 60, coalesce: false, max_instances: 10,
           trigger: {type: interval, seconds: 1}}
    """, 3.2)
    try:
        wait_for(lambda: service.flush() and len(service.runs(job_id="j", trigger="catchup",
                                                              status="succeeded")) >= 3, 10)
    finally:
        service.stop()


@pytest.mark.both_databases
def test_missed_fires_beyond_grace_are_recorded_missed(jobs_file, make_config):
    service = _downtime(jobs_file, make_config, """
        - {id: j, command: 'true', misfire_grace_time: 1, coalesce: false, max_instances: 5,
           trigger: {type: interval, seconds: 1}}
    """, 3.2)
    try:
        missed = wait_for(lambda: service.flush() and service.runs(job_id="j", status="missed"),
                          10, message="a missed run")
        assert "misfire_grace_time 1s" in missed[0]["error"]
        assert missed[0]["started_at"] is None
    finally:
        service.stop()


# -- processes and python jobs -------------------------------------------------------------------

def test_command_killed_by_a_signal_is_failed(service):
    add(service, id="suicide", command="kill -9 $$", shell=True)
    run = service.run_now("suicide")
    wait_for(lambda: service.run(run["id"])["status"] == "failed", 10)
    got = service.run(run["id"])
    assert got["exit_code"] == -9 and got["error"] == "killed by signal SIGKILL"


def test_python_job_that_never_returns_is_visible_and_blocks_only_itself(tmp_path, service):
    name = f"blocker_{tmp_path.name.replace('-', '_')}"   # a fresh module for each run
    (tmp_path / f"{name}.py").write_text(
        "import threading\nrelease = threading.Event()\n"
        "def wait():\n    release.wait(30)\n")
    add(service, id="stuck", func=f"{name}:wait", trigger={"type": "interval", "seconds": 0.3})
    add(service, id="other", command=["true"], trigger={"type": "interval", "seconds": 0.3})
    wait_for(lambda: any(r["status"] == "running" for r in service.runs(job_id="stuck")), 10)
    final_runs(service, "other", count=3)
    skipped = wait_for(lambda: service.flush() and service.runs(job_id="stuck", status="skipped"),
                       10)
    assert skipped
    with pytest.raises(ts.JobConflict, match="python job"):
        service.cancel(service.runs(job_id="stuck", status="running")[0]["id"])
    import importlib
    importlib.import_module(name).release.set()


# -- time ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("zone, day, expression, expected", [
    # clocks go back: 02:30 exists twice, it fires once
    ("Europe/Berlin", dt.date(2024, 10, 27), "30 2 * * *", ["2024-10-27T00:30:00+00:00"]),
    ("America/New_York", dt.date(2024, 11, 3), "30 1 * * *", ["2024-11-03T05:30:00+00:00"]),
    # clocks go forward: 02:30 does not exist, it fires once, right after the change (03:00
    # local), as Debian's cron runs the skipped minutes' jobs
    ("Europe/Berlin", dt.date(2025, 3, 30), "30 2 * * *", ["2025-03-30T01:00:00+00:00"]),
    ("America/New_York", dt.date(2025, 3, 9), "30 2 * * *", ["2025-03-09T07:00:00+00:00"]),
])
def test_cron_fires_once_on_dst_days(zone, day, expression, expected):
    tz = zoneinfo.ZoneInfo(zone)
    trigger = pickle.loads(pickle.dumps(ts_triggers.crontab_trigger(expression, tz)))  # as stored
    start = dt.datetime.combine(day, dt.time(0), tz) - dt.timedelta(hours=12)
    fires = ts_triggers.fire_times(trigger, trigger.get_next_fire_time(None, start), 4)
    on_day = [f.astimezone(UTC).isoformat() for f in fires
              if f.astimezone(tz).date() == day]
    assert on_day == expected


def test_hourly_cron_still_fires_every_real_hour_when_clocks_go_back():
    tz = zoneinfo.ZoneInfo("Europe/Berlin")
    trigger = ts_triggers.crontab_trigger("0 * * * *", tz)
    start = dt.datetime(2024, 10, 26, 23, 30, tzinfo=UTC)
    fires = ts_triggers.fire_times(trigger, trigger.get_next_fire_time(None, start), 4)
    assert [f.astimezone(UTC).hour for f in fires] == [0, 1, 2, 3]   # 02:00 local twice


def test_every_trigger_has_a_timezone(make_service):
    service = make_service(timezone="Asia/Tokyo")
    job = add(service, id="tokyo", command=["true"], trigger={"type": "cron", "hour": 9,
                                                              "minute": 0})
    assert job["next_run_time"].endswith("T00:00:00+00:00")   # 09:00 in Tokyo is 00:00 UTC
    berlin = add(service, id="berlin", command=["true"],
                 trigger={"type": "cron", "hour": 9, "minute": 0, "timezone": "Europe/Berlin"})
    assert berlin["next_run_time"][11:13] in ("07", "08")


# -- exactly once ---------------------------------------------------------------------------------

@pytest.mark.postgres
def test_two_schedulers_on_one_postgres_run_each_fire_once(tmp_path, postgres_url):
    jobs = write_jobs(tmp_path / "jobs.yaml", """
        - {id: shared, command: 'true', trigger: {type: interval, seconds: 0.5}}
    """)
    configs = [ts.Config(config_path=str(jobs), database_url=postgres_url, watch=False,
                         node=f"node{i}") for i in (1, 2)]
    services = [ts.SchedulerService(c).start() for c in configs]
    try:
        final_runs(services[0], "shared", count=8, timeout=20)
        for s in services:
            s.flush()
        runs = services[0].runs(job_id="shared", limit=1000)
        times = [r["scheduled_at"] for r in runs if r["trigger"] == "schedule"]
        assert len(times) == len(set(times)), "a fire time ran twice"
    finally:
        for s in services:
            s.stop(grace=2)


@pytest.mark.both_databases
def test_shutdown_does_not_advance_a_schedule_without_recording(jobs_file, make_config):
    write_jobs(jobs_file, "- {id: j, command: 'true', trigger: {type: interval, seconds: 0.2}}\n")
    config = make_config()
    service = ts.SchedulerService(config).start()
    final_runs(service, "j", count=2)
    service.stop()
    engine = ts_schema.create_engine(config.database_url)
    with engine.connect() as conn:
        next_ts = conn.execute(sa.text(f"SELECT next_run_time FROM {ts_schema.APS_TABLE}")).scalar()
        last = conn.execute(sa.select(sa.func.max(ts_schema.ts_runs.c.scheduled_at))).scalar()
    engine.dispose()
    # The stored next fire is the one right after the last recorded fire: none was skipped.
    gap = dt.datetime.fromtimestamp(next_ts, UTC).replace(tzinfo=None) - last
    assert dt.timedelta(0) < gap <= dt.timedelta(seconds=0.45)


def test_retention_runs_in_the_background_without_blocking_fires(make_service):
    service = make_service(keep_runs=2)
    add(service, id="t", command=["true"], trigger={"type": "interval", "seconds": 0.2})
    final_runs(service, "t", count=4)
    pruned = threading.Event()
    service.history._prune = lambda: (service.prune(), pruned.set())
    service.history._next_prune = 0
    wait_for(lambda: pruned.is_set(), 10)
    service.flush()
    wait_for(lambda: service.flush() and service.runs(job_id="t").total <= 4, 10)
    count = service.runs(job_id="t").total
    final_runs(service, "t", count=min(count, 2) + 1)


@pytest.mark.both_databases
def test_stop_ends_commands_past_the_grace_and_records_them(tmp_path, make_config):
    config = make_config(shutdown_grace=0.5, kill_grace=0.5)
    service = ts.SchedulerService(config).start()
    pidfile = tmp_path / "pid"
    add(service, id="long", shell=True, command=f"echo $$ > {pidfile}; trap '' TERM; sleep 60")
    run = service.run_now("long")
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 10)
    started = time.monotonic()
    service.stop()
    assert time.monotonic() - started < 10
    engine = ts_schema.create_engine(config.database_url)
    with engine.connect() as conn:
        runs = ts_schema.ts_runs
        row = conn.execute(sa.select(runs).where(runs.c.id == run["id"])).first()
    engine.dispose()
    assert row.status == "interrupted" and row.finished_at is not None
    pid = int(pidfile.read_text())
    from test_executor import pid_alive
    wait_for(lambda: not pid_alive(pid), 5, message="the command's group to be killed")


def test_history_writer_gives_up_after_bounded_retries_and_says_so(sqlite_url, caplog,
                                                                  monkeypatch):
    engine = ts_schema.create_engine(sqlite_url)
    ts_schema.migrate(engine)
    writer = ts_history.HistoryWriter(ts_store.Store(engine, "node"))
    monkeypatch.setattr(writer, "RETRY_DELAYS", (0.01, 0.01))
    writer.start()
    engine.dispose()
    monkeypatch.setattr(engine.dialect, "connect", _refuse)   # the database stays away
    writer.update("r1", status="succeeded", finished_at=ts_timeutil._utcnow())
    writer.flush(10)
    assert writer.dropped == 1
    assert any("dropping 1 run records after retries" in r.getMessage() for r in caplog.records)
    writer.stop()
    engine.dispose()


def _refuse(*args, **kwargs):
    raise sqlite3.OperationalError("database is locked")


def test_script_that_lost_its_run_bit_is_a_failed_run(tmp_path, service):
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    add(service, id="noexec", func="./job.sh")
    script.chmod(0o644)
    run = service.run_now("noexec")
    wait_for(lambda: service.run(run["id"])["status"] == "failed", 10)
    got = service.run(run["id"])
    assert got["exit_code"] == 126 and "cannot start" in got["error"]


def test_api_answers_503_not_500_while_the_database_is_away(make_service, monkeypatch):
    from conftest import Client
    service = make_service()
    http = Client(ts.create_app(service))
    dbapi_error = service.engine.dialect.loaded_dbapi.OperationalError

    def refuse(*args, **kwargs):
        raise dbapi_error("the database is away")
    service.engine.dispose()
    monkeypatch.setattr(service.engine.dialect, "connect", refuse)
    answer = http.get("/api/runs")
    assert answer.status == 503 and answer.json["error"]["code"] == "unavailable"
