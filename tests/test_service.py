"""The service: reconcile of jobs.yaml into the store, restarts that keep schedule phase and pause
state, crash recovery, the database lock, retention, schema versions."""

from __future__ import annotations

import os
import signal
import stat
import threading
import time

import pytest
import sqlalchemy as sa

import task_scheduler as ts

import task_scheduler.store.retention as ts_retention
import task_scheduler.jobsfile as ts_jobsfile
import task_scheduler.store.schedules as ts_schedules
import task_scheduler.store.schema as ts_schema
import task_scheduler.timeutil as ts_timeutil
from conftest import final_runs, free_port, start_process, wait_for, write_jobs

TWO_JOBS = """
- id: every_hour
  command: 'true'
  trigger: {type: interval, hours: 1}
- id: nightly
  command: 'true'
  trigger: {type: cron, expression: '30 2 * * *'}
- id: dormant
  command: 'true'
  is_enabled: false
  trigger: {type: interval, seconds: 1}
"""


@pytest.mark.both_databases
def test_yaml_jobs_become_rows_and_schedules(jobs_file, make_service):
    write_jobs(jobs_file, TWO_JOBS)
    service = make_service()
    jobs = {j["id"]: j for j in service.jobs()}
    assert set(jobs) == {"every_hour", "nightly", "dormant"}
    assert jobs["every_hour"]["source"] == "yaml" and jobs["every_hour"]["state"] == "scheduled"
    assert jobs["dormant"]["state"] == "disabled" and jobs["dormant"]["next_run_time"] is None
    assert jobs["nightly"]["next_run_time"].endswith("+00:00")
    assert len(jobs["nightly"]["next_run_times"]) == 5
    with service.engine.connect() as conn:
        rows = conn.execute(sa.select(ts_schema.ts_jobs.c.id, ts_schema.ts_jobs.c.source)).all()
        aps = conn.execute(sa.text(f"SELECT id FROM {ts_schema.APS_TABLE}")).scalars().all()
    assert sorted(rows) == [("dormant", "yaml"), ("every_hour", "yaml"), ("nightly", "yaml")]
    assert sorted(aps) == ["every_hour", "nightly"]   # a disabled job is never fired


@pytest.mark.both_databases
def test_the_queue_indexes_are_partial_on_either_database(service):
    """Their predicates are given to SQLAlchemy per database (schema._partial): both databases
    still get them, so the queue's index never holds the history."""
    with service.engine.connect() as conn:
        indexes = {i["name"]: i for i in sa.inspect(conn).get_indexes("ts_runs")}
    name = service.engine.dialect.name
    for index in ("ix_ts_runs_queue", "ix_ts_runs_taken"):
        where = indexes[index].get("dialect_options", {}).get(f"{name}_where")
        assert where is not None and "queued" in str(where), (index, indexes[index])


def test_every_aps_job_calls_execute_job_with_the_id(jobs_file, make_service):
    write_jobs(jobs_file, TWO_JOBS)
    service = make_service()
    job = service.scheduler.get_job("nightly")
    assert job.func_ref == "task_scheduler:execute_job" and job.args == ("nightly",)


@pytest.mark.both_databases
def test_restart_keeps_phase_pause_and_history(jobs_file, make_config):
    write_jobs(jobs_file, TWO_JOBS)
    config = make_config()
    first = ts.SchedulerService(config).start()
    before = first.job("every_hour")["next_run_time"]
    first.pause("nightly")
    run = first.run_now("every_hour")
    wait_for(lambda: first.run(run["id"])["status"] == "succeeded", 10)
    first.stop()
    # A restart that reset the schedule would compute a later phase: it is kept to the
    # microsecond, so the stop and start alone make that visible; 50 ms more to be sure.
    time.sleep(0.05)
    second = ts.SchedulerService(config).start()
    try:
        assert second.job("every_hour")["next_run_time"] == before
        assert second.job("nightly")["state"] == "paused"
        assert second.job("nightly")["next_run_time"] is None
        assert second.run(run["id"])["status"] == "succeeded"
        assert second.job("every_hour")["last_run"]["id"] == run["id"]
    finally:
        second.stop()


@pytest.mark.both_databases
def test_restart_on_the_applied_file_parses_writes_and_unpickles_nothing(jobs_file, make_config,
                                                                          monkeypatch):
    """The jobs.yaml last applied is neither parsed nor written again at a restart, and no stored
    job is unpickled for it (10,000 jobs took seconds); the next save applies as usual."""
    write_jobs(jobs_file, TWO_JOBS)
    config = make_config()
    ts.SchedulerService(config).start().stop()

    def stored():
        with ts_schema.create_engine(config.database_url).connect() as conn:
            return (conn.execute(sa.text(f"SELECT * FROM {ts_schema.APS_TABLE} ORDER BY id")).all(),
                    conn.execute(sa.select(ts_schema.ts_jobs).order_by(ts_schema.ts_jobs.c.id)).all())
    before, calls = stored(), []
    for cls, name in ((ts_jobsfile.JobsParser, "parse"),
                      (ts_schedules.ScheduleStore, "lookup_job")):
        original = getattr(cls, name)
        monkeypatch.setattr(cls, name, lambda self, *a, _o=original, _n=name:
                            calls.append(_n) or _o(self, *a))
    second = ts.SchedulerService(config).start()
    try:
        assert calls == [] and stored() == before
        assert second.status()["config"]["jobs"] == 3 and second.status()["config"]["error"] is None
        phase = second.job("every_hour")["next_run_time"]
        assert phase is not None and second.job("every_hour")["state"] == "scheduled"
        write_jobs(jobs_file, TWO_JOBS.replace("hours: 1}", "hours: 1}\n  timeout: 9"))
        assert second.reload()["changes"] == {"added": 0, "rescheduled": 0, "modified": 1,
                                              "removed": 0, "unchanged": 2}
        assert second.job("every_hour")["timeout"] == 9 and "parse" in calls
        assert second.job("every_hour")["next_run_time"] == phase   # an option change
    finally:
        second.stop()


@pytest.mark.both_databases
def test_changes_apply_by_id(jobs_file, make_service):
    write_jobs(jobs_file, TWO_JOBS)
    service = make_service()
    phase = service.job("every_hour")["next_run_time"]
    nightly = service.job("nightly")["next_run_time"]
    service.pause("every_hour")
    write_jobs(jobs_file, TWO_JOBS.replace("expression: '30 2 * * *'", "expression: '45 3 * * *'")
               .replace("interval, hours: 1}", "interval, hours: 1}\n  timeout: 9"))
    changes_before = service.status()["config"]
    service.reload()
    after = service.job("every_hour")
    assert after["timeout"] == 9 and after["state"] == "paused"   # option change keeps pause
    service.resume("every_hour")
    assert service.job("every_hour")["next_run_time"] == phase    # ... and the phase
    assert service.job("nightly")["next_run_time"] != nightly      # trigger change reschedules
    assert ":45:00" in service.job("nightly")["next_run_time"]
    assert service.status()["config"]["hash"] != changes_before["hash"]


def test_removed_yaml_job_keeps_its_history(jobs_file, make_service):
    write_jobs(jobs_file, TWO_JOBS)
    service = make_service()
    run = service.run_now("nightly")
    final_runs(service, "nightly")
    write_jobs(jobs_file, "- {id: every_hour, command: 'true', "
                          "trigger: {type: interval, hours: 1}}")
    service.reload()
    with pytest.raises(ts.JobNotFound):
        service.job("nightly")
    assert service.scheduler.get_job("nightly") is None
    assert service.run(run["id"])["job_id"] == "nightly"


def test_broken_file_at_start_keeps_stored_jobs(jobs_file, make_config):
    write_jobs(jobs_file, TWO_JOBS)
    config = make_config()
    ts.SchedulerService(config).start().stop()
    write_jobs(jobs_file, "- id: [broken\n")
    service = ts.SchedulerService(config).start()
    try:
        assert {j["id"] for j in service.jobs()} == {"every_hour", "nightly", "dormant"}
        assert "YAML syntax" in service.status()["config"]["error"]
    finally:
        service.stop()


def test_api_jobs_are_not_touched_by_yaml(jobs_file, make_service):
    service = make_service()
    service.add_job({"id": "mine", "command": "true", "trigger": {"type": "interval", "hours": 2}})
    write_jobs(jobs_file, TWO_JOBS)
    service.reload()
    assert service.job("mine")["source"] == "api"
    write_jobs(jobs_file, "- {id: mine, command: 'true', trigger: {type: interval, hours: 1}}")
    with pytest.raises(ts.InvalidConfig, match="already used by jobs created through the API"):
        service.reload()
    assert {j["id"] for j in service.jobs()} == {"every_hour", "nightly", "dormant", "mine"}


def test_yaml_job_cannot_be_edited_through_the_api(jobs_file, make_service):
    write_jobs(jobs_file, TWO_JOBS)
    service = make_service()
    with pytest.raises(ts.JobConflict, match="edit the file"):
        service.delete_job("nightly")
    with pytest.raises(ts.JobConflict, match="edit the file"):
        service.replace_job("nightly", {"command": "true", "trigger": {"type": "interval",
                                                                       "hours": 1}})


def test_sqlite_file_is_private(tmp_path):
    url = f"sqlite:///{tmp_path / 'private.sqlite'}"
    service = ts.SchedulerService(ts.Config(config_path=None, database_url=url)).start()
    try:
        for suffix in ("", "-wal"):
            mode = stat.S_IMODE(os.stat(tmp_path / f"private.sqlite{suffix}").st_mode)
            assert mode == 0o600, (suffix, oct(mode))
    finally:
        service.stop()


def test_second_scheduler_on_one_sqlite_file_is_refused(tmp_path):
    config = ts.Config(config_path=None, database_url=f"sqlite:///{tmp_path / 'one.sqlite'}")
    first = ts.SchedulerService(config).start()
    try:
        with pytest.raises(ts.SchedulerError, match="already used by a running task-scheduler"):
            ts.SchedulerService(config).start()
    finally:
        first.stop()
    ts.SchedulerService(config).start().stop()   # free again after a stop


def test_newer_schema_is_refused_older_is_migrated(sqlite_url):
    engine = ts_schema.create_engine(sqlite_url)
    assert ts_schema.migrate(engine) == ts_schema.SCHEMA_VERSION
    with engine.begin() as conn:
        conn.execute(ts_schema.ts_meta.update().values(value=str(ts_schema.SCHEMA_VERSION + 1)))
    with pytest.raises(ts.SchedulerError, match="newer than this task-scheduler"):
        ts_schema.migrate(engine)
    with engine.begin() as conn:
        conn.execute(ts_schema.ts_meta.delete())
    assert ts_schema.migrate(engine) == ts_schema.SCHEMA_VERSION
    engine.dispose()


@pytest.mark.both_databases
def test_retention_by_count_and_age(make_service):
    service = make_service(keep_runs=3, keep_days=1)
    service.add_job({"id": "r", "command": "true", "trigger": {"type": "interval", "hours": 1}})
    old = ts_timeutil._utcnow().replace(year=2000)
    rows = [finished_run("r", f"000{i}", ts_timeutil._utcnow()) for i in range(6)]
    rows.append(finished_run("r", "0000z", old))
    with service.store.write() as conn:
        service.store.runs.insert_runs(conn, rows)
    assert service.runs(job_id="r").total == 7
    service.prune()
    remaining = service.runs(job_id="r")
    assert [r["id"] for r in remaining] == ["0005", "0004", "0003"]


def finished_run(job_id, run_id, scheduled_at, trigger="manual"):
    return {"id": run_id, "job_id": job_id, "trigger": trigger, "scheduled_at": scheduled_at,
            "status": "succeeded", "finished_at": scheduled_at}


@pytest.mark.both_databases
def test_unique_fire_key_runs_a_fire_once(make_service):
    service = make_service()
    row = finished_run("x", ts_schema.new_run_id(), ts_timeutil._utcnow(), "schedule")
    insert = service.store.runs.insert_runs
    with service.store.write() as conn:
        assert insert(conn, [row]) == [row["id"]]
    with service.store.write() as conn:
        assert insert(conn, [{**row, "id": ts_schema.new_run_id()}]) == []
        assert insert(conn, [{**row, "id": ts_schema.new_run_id()},
                             {**row, "id": "other", "attempt": 2}]) == ["other"]


@pytest.mark.slow
@pytest.mark.both_databases
def test_kill_9_mid_run_then_restart(tmp_path, database_url):
    """A real process killed with SIGKILL during a run: after restart the jobs, the schedule
    phase, the pause state and the history are intact, and the cut-off run is interrupted."""
    jobs = write_jobs(tmp_path / "jobs.yaml", """
        - {id: phase, command: 'true', trigger: {type: interval, hours: 3}}
        - {id: paused_one, command: 'true', trigger: {type: interval, hours: 1}}
        - {id: slow, command: 'sleep 60', trigger: {type: interval, hours: 1}}
    """)
    port = free_port()
    args = ["--config", str(jobs), "--db", database_url, "--port", str(port)]
    proc = start_process(args, tmp_path)
    base = f"http://127.0.0.1:{port}/api"
    try:
        import json
        import urllib.request

        def call(path, method="GET"):
            req = urllib.request.Request(base + path, method=method)
            with urllib.request.urlopen(req, timeout=5) as resp:
                return json.loads(resp.read() or b"null")

        def up():
            try:
                return call("/health")["status"] == "ok"
            except OSError:
                return False
        wait_for(up, 30, 0.1, "the service to start")
        phase = call("/jobs/phase")["next_run_time"]
        call("/jobs/paused_one/pause", "POST")
        done = call("/jobs/phase/run", "POST")["run"]
        wait_for(lambda: call(f"/runs/{done['id']}")["status"] == "succeeded", 10)
        run = call("/jobs/slow/run", "POST")["run"]
        wait_for(lambda: call(f"/runs/{run['id']}")["status"] == "running", 10)
        # the writer commits "running" within a batch; give it a moment to be durable
        service_db = ts_schema.create_engine(database_url)
        wait_for(lambda: _status_in_db(service_db, run["id"]) == "running", 10)
        wait_for(lambda: _status_in_db(service_db, done["id"]) == "succeeded", 10)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        service_db.dispose()
        proc = start_process(args, tmp_path)
        wait_for(up, 30, 0.1, "the service to restart")
        assert call("/jobs/phase")["next_run_time"] == phase
        assert call("/jobs/paused_one")["state"] == "paused"
        assert call(f"/runs/{done['id']}")["status"] == "succeeded"
        cut = call(f"/runs/{run['id']}")
        assert cut["status"] == "interrupted" and "interrupted" in cut["error"]
        assert {j["id"] for j in call("/jobs")["jobs"]} == {"phase", "paused_one", "slow"}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def _status_in_db(engine, run_id):
    with engine.connect() as conn:
        return conn.execute(sa.select(ts_schema.ts_runs.c.status)
                            .where(ts_schema.ts_runs.c.id == run_id)).scalar()


@pytest.mark.slow
def test_sigterm_waits_for_runs_and_exits_0(tmp_path, sqlite_url):
    jobs = write_jobs(tmp_path / "jobs.yaml", """
        - {id: short, command: 'sleep 1', trigger: {type: interval, hours: 1}}
    """)
    port = free_port()
    proc = start_process(["--config", str(jobs), "--db", sqlite_url, "--port", str(port)],
                         tmp_path)
    import json
    import urllib.request

    def up():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2):
                return True
        except OSError:
            return False
    wait_for(up, 30, 0.1, "the service to start")
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/jobs/short/run", method="POST")
    with urllib.request.urlopen(req, timeout=5) as resp:
        run_id = json.loads(resp.read())["run"]["id"]

    def status():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/runs/{run_id}", timeout=5) as r:
            return json.loads(r.read())["status"]
    wait_for(lambda: status() == "running", 10, message="the command to start")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    engine = ts_schema.create_engine(sqlite_url)
    assert _status_in_db(engine, run_id) == "succeeded"   # finished within the grace period
    engine.dispose()


@pytest.mark.both_databases
def test_retention_deletes_in_chunks_releasing_the_write_lock(make_service, monkeypatch):
    service = make_service(keep_runs=2, keep_days=1)
    now, old = ts_timeutil._utcnow(), ts_timeutil._utcnow().replace(year=2000)
    rows = [finished_run("c", f"001{i}", now.replace(microsecond=i)) for i in range(7)]
    rows += [finished_run("c", f"000{i}", old.replace(minute=i)) for i in range(3)]
    with service.store.write() as conn:
        service.store.runs.insert_runs(conn, rows)
    # the first chunk of 2, then every chunk "too slow" for a 0 s budget: 1 run each
    monkeypatch.setattr(ts_retention, "PRUNE_CHUNK", 2)
    monkeypatch.setattr(ts_retention, "PRUNE_CHUNK_S", 0)
    deletes = []

    def count(conn, cursor, statement, *args):
        if statement.startswith("DELETE FROM ts_runs"):
            deletes.append(service.store._write_lock is None or service.store._write_lock.locked())
    sa.event.listen(service.store.engine, "before_cursor_execute", count)
    assert service.prune() == 8
    assert [r["id"] for r in service.runs(job_id="c")] == ["0016", "0015"]
    # 3 old runs in 2 chunks (2, 1), 5 past keep_runs in 4 chunks (2, 1, 1, 1)
    assert len(deletes) == 6 and all(deletes)


@pytest.mark.both_databases
def test_retention_gives_way_to_waiting_writers_and_stops_with_the_service(make_service):
    service = make_service(keep_runs=1, keep_days=1)
    now = ts_timeutil._utcnow()
    with service.store.write() as conn:
        service.store.runs.insert_runs(conn, [finished_run("w", f"00{i:03d}", now.replace(
            microsecond=i)) for i in range(50)])
    service.store.waiting.append(None)   # a writer waits for the lock: no chunk starts
    pruned = []
    thread = threading.Thread(target=lambda: pruned.append(service.prune()))
    thread.start()
    time.sleep(0.3)
    assert service.runs(job_id="w").total == 50
    service.store.waiting.pop()
    thread.join(10)
    assert pruned == [49] and service.runs(job_id="w").total == 1


@pytest.mark.both_databases
def test_run_ends_are_written_while_a_prune_runs(make_service):
    service = make_service()
    service.add_job({"id": "e", "command": "true", "trigger": {"type": "manual"}})
    release, started = threading.Event(), threading.Event()

    def long_prune():   # a prune of many rows, as long as this test wants
        started.set()
        release.wait(30)
    service.history._prune, service.history._next_prune = long_prune, 0
    service.run_now("e")   # its end wakes the history writer, which starts the prune
    wait_for(started.is_set, 10, message="the prune to start")
    run = service.run_now("e")
    try:
        wait_for(lambda: service.run(run["id"])["status"] == "succeeded", 10,
                 message="the run's end to be written during the prune")
    finally:
        release.set()
