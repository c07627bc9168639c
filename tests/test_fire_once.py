"""Each fire time of a job runs once: a fire that has a row never fires again, whatever
restarts, failovers or catch-ups follow; and no job's trigger can stop the scheduler loop."""

from __future__ import annotations

import datetime as dt
import json
import signal
import urllib.request

import pytest
import sqlalchemy as sa
from apscheduler.triggers.interval import IntervalTrigger

import task_scheduler as ts

import task_scheduler.calendars as ts_calendars
import task_scheduler.store.schema as ts_schema
import task_scheduler.timeutil as ts_timeutil
import task_scheduler.triggers as ts_triggers
from conftest import Client, final_runs, free_port, start_process, wait_for, write_jobs

# A fire's row is its unique key (job, time, trigger, attempt): what each dialect does with it
# is the subject, so every test here runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.both_databases


def _fire_rows(engine, job_id):
    with engine.connect() as conn:
        return conn.execute(sa.select(ts_schema.ts_runs.c.scheduled_at, ts_schema.ts_runs.c.trigger,
                                      ts_schema.ts_runs.c.status)
                            .where(ts_schema.ts_runs.c.job_id == job_id,
                                   ts_schema.ts_runs.c.trigger.in_(("schedule", "catchup")))).all()


def _fire_rows_of(config, job_id):
    engine = ts_schema.create_engine(config.database_url)
    try:
        return _fire_rows(engine, job_id)
    finally:
        engine.dispose()


def _clear(config, job_id) -> None:
    engine = ts_schema.create_engine(config.database_url)
    with engine.begin() as conn:
        conn.execute(ts_schema.ts_runs.delete().where(ts_schema.ts_runs.c.job_id == job_id))
    engine.dispose()


def _soon(seconds: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).isoformat()


def _probe(base: str, job_id: str) -> None:
    """Wait until this node leads and has had a wakeup since: a date job added now has run (on
    PostgreSQL after a kill -9 the node leads once the dead node's lease ends; its first wakeup
    as leader is the one that would fire an old date job again)."""
    def get(path):
        try:
            with urllib.request.urlopen(base + path, timeout=5) as resp:
                return json.loads(resp.read())
        except OSError:
            return None
    wait_for(lambda: (get("/api/status") or {}).get("scheduler") == "running", 120, 0.2,
             "this node to lead")
    body = json.dumps({"id": job_id, "command": "true", "misfire_grace_time": None,
                       "trigger": {"type": "date", "run_date": _soon(0.2)}}).encode()
    request = urllib.request.Request(base + "/api/jobs", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).close()
    wait_for(lambda: [r for r in (get(f"/api/runs?job_id={job_id}") or {}).get("runs", [])
                      if r["status"] == "succeeded"], 60, 0.2, "the probe job's run")


def _date_job_that_ran(jobs_file, make_config, command: str, seconds: float) -> ts.Config:
    """A service whose jobs.yaml has the date job ``once`` (due in ``seconds``, grace null) ran
    it and stopped; its config, to start the service again on the same database."""
    write_jobs(jobs_file, f"""
        - id: once
          command: {command}
          misfire_grace_time: null
          trigger: {{type: date, run_date: '{_soon(seconds)}'}}
    """)
    config = make_config()
    service = ts.SchedulerService(config).start()
    try:
        final_runs(service, "once", timeout=30)
    finally:
        service.stop()
    return config


def test_a_date_job_fires_once_across_restarts(jobs_file, make_config):
    config = _date_job_that_ran(jobs_file, make_config, "['echo', 'once']", 1.5)
    for _ in range(2):   # restarted twice: each start would re-add the date job
        service = ts.SchedulerService(config).start()
        try:
            service.flush()
            rows = _fire_rows(service.engine, "once")
            assert len(rows) == 1, rows
            assert service.job("once")["state"] == "finished"
        finally:
            service.stop()



def test_a_catchup_of_a_fire_another_leader_recorded_is_not_inserted(jobs_file, make_config):
    """A fire time recorded (by a leader that lost its lease, or this node's previous life)
    while the stored schedule was not moved past it: the next leader's catch-up of that time
    is looked up and left out (bench/chaos.py saw a writer job's fire recorded as schedule and
    catchup after a partition of the leader)."""
    config = make_config()
    for lead in (1.5, 4, 10):   # a loaded machine may start the service past a short lead
        start = _soon(lead)
        write_jobs(jobs_file, f"""
            - id: hourly
              command: ['true']
              misfire_grace_time: null
              trigger: {{type: interval, hours: 1, start_date: '{start}'}}
        """)
        service = ts.SchedulerService(config).start()
        try:
            due = service.job("hourly")["next_run_time"]
        finally:
            service.stop()
        at = dt.datetime.fromisoformat(due).astimezone(dt.UTC).replace(tzinfo=None)
        if at < dt.datetime.fromisoformat(start).replace(tzinfo=None) + dt.timedelta(minutes=1) \
                and not _fire_rows_of(config, "hourly"):
            break   # stopped before its first fire: the schedule still says it is due
        _clear(config, "hourly")
    else:
        pytest.fail("the service never stopped before the job's first fire")
    engine = ts_schema.create_engine(config.database_url)
    with engine.begin() as conn:   # recorded elsewhere; the schedule still says it is due
        conn.execute(ts_schema.ts_runs.insert().values(
            id=ts_schema.new_run_id(), job_id="hourly", trigger="schedule", attempt=1,
            scheduled_at=at, status="succeeded", run_on=""))
    engine.dispose()
    wait_for(lambda: dt.datetime.now(dt.UTC).replace(tzinfo=None) > at, 10, 0.05,
             "the fire time to pass")
    service = ts.SchedulerService(config).start()
    try:
        wait_for(lambda: service.job("hourly")["next_run_time"] != due, 10, 0.05,
                 "the schedule to move past the recorded fire")
        service.flush()
        assert [(r.trigger, r.status) for r in _fire_rows(service.engine, "hourly")] == \
            [("schedule", "succeeded")]
    finally:
        service.stop()


def test_a_fired_date_job_stays_done_when_its_row_is_pruned(jobs_file, make_config):
    """The schedule itself remembers the fire: retention may have deleted its row by the time
    of a restart, and a date job with misfire_grace_time null would then run again."""
    config = _date_job_that_ran(jobs_file, make_config, "'true'", 1.0)
    engine = ts_schema.create_engine(config.database_url)
    with engine.begin() as conn:   # what retention does to old runs
        conn.execute(ts_schema.ts_runs.delete())
    engine.dispose()
    for _ in range(2):
        service = ts.SchedulerService(config).start()
        try:
            service.scheduler.ask(None).wait(10)
            service.flush()
            assert _fire_rows(service.engine, "once") == []
            assert service.job("once")["state"] == "finished"
            assert service.job("once")["next_run_time"] is None
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

    proc = start_process(args, tmp_path)
    try:
        wait_for(up, 60, 0.1, "the service to start")
        wait_for(lambda: [r for r in runs() if r["status"] == "succeeded"], 60, 0.2,
                 "the date job's run")
        # Its fire: "schedule", or "catchup" when a loaded machine started the service after
        # the date (seen under four workers); either way the one row that fire ever gets.
        fired = [(r["scheduled_at"], r["trigger"]) for r in runs()]
        assert len(fired) == 1 and fired[0][1] in ("schedule", "catchup"), fired
        proc.send_signal(stop)
        proc.wait(30)
        for restart in range(2):
            proc = start_process(args, tmp_path)
            wait_for(up, 60, 0.1, "the service to start again")
            _probe(f"http://127.0.0.1:{port}", f"probe{restart}")
            assert [(r["scheduled_at"], r["trigger"]) for r in runs()] == fired
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    engine = ts_schema.create_engine(database_url)
    try:
        assert len(_fire_rows(engine, "once")) == 1
    finally:
        engine.dispose()


# -- no value stops the scheduler -----------------------------------------------------------------

def _runs_soon(service, job_id="soon"):
    """A job due in a moment runs: the scheduler loop is alive and firing."""
    service.add_job({"id": job_id, "command": "true",
                     "trigger": {"type": "date", "run_date": _soon(0.5)}})
    final_runs(service, job_id, timeout=30)
    assert service.health()[1]["scheduler"] == "running"


FAR_TRIGGERS = [{"type": "date", "run_date": "3026-01-01T00:00:00Z"},
                {"type": "cron", "year": "2400"}]


@pytest.mark.parametrize("trigger", FAR_TRIGGERS, ids=["date-3026", "cron-year-2400"])
def test_a_far_future_job_from_the_api_does_not_stop_the_scheduler(service, trigger):
    client = Client(ts.create_app(service))
    answer = client.post("/api/jobs", {"id": "typo", "command": "true", "trigger": trigger})
    assert answer.status == 201, answer
    # the scheduler's next wait is now centuries: it used to end its thread (OverflowError)
    _runs_soon(service)
    assert client.get("/api/health").json["scheduler"] == "running"
    assert service.job("typo")["next_run_time"].startswith(("3026", "2400"))


def test_far_future_jobs_from_jobs_yaml_do_not_stop_the_scheduler(jobs_file, make_service):
    write_jobs(jobs_file, """
        - {id: typo, command: 'true', trigger: {type: date, run_date: '3026-01-01T00:00:00Z'}}
        - {id: leap, command: 'true', trigger: {type: cron, year: '2400'}}
    """)
    service = make_service()
    _runs_soon(service)
    service.stop()
    service = make_service()   # and after a restart
    _runs_soon(service, "soon2")


@pytest.mark.parametrize("run_date", ["9999-12-31T23:59:59+14:00", "9999-12-31T23:59:59-12:00",
                                      "9999-06-01T00:00:00Z"])
def test_a_time_that_cannot_be_scheduled_is_a_422_naming_the_field(client, run_date):
    answer = client.post("/api/jobs", {"id": "typo", "command": "true",
                                       "trigger": {"type": "date", "run_date": run_date}})
    assert answer.status == 422, answer
    detail = answer.json["error"]["details"][0]
    assert detail["field"] == "trigger.run_date" and "too far ahead" in detail["message"]
    answer = client.post("/api/jobs", {"id": "typo", "command": "true", "trigger": {
        "type": "cron", "expression": "* * * * *", "start_date": run_date}})
    assert answer.status == 422 and answer.json["error"]["details"][0]["field"] == \
        "trigger.start_date", answer
    assert client.get("/api/health").json["scheduler"] == "running"


def test_an_unschedulable_time_in_jobs_yaml_is_a_config_error(jobs_file, make_service):
    write_jobs(jobs_file, """
        - {id: typo, command: 'true', trigger: {type: date, run_date: '9999-12-31T23:59:59+14:00'}}
    """)
    service = make_service()
    error = service.config_status()["errors"][0]
    assert error["field"] == "trigger.run_date" and "too far ahead" in error["message"]
    assert service.health()[1]["scheduler"] == "running"


class RaisingTrigger(IntervalTrigger):
    """Fires in a moment, then its next fire time cannot be computed (after ``good`` calls)."""

    def __init__(self, good: int):
        super().__init__(seconds=3600, timezone=dt.UTC)
        self.good = good

    def get_next_fire_time(self, previous, now):
        if self.good <= 0:
            raise RuntimeError("this trigger is broken")
        self.good -= 1
        return now + dt.timedelta(seconds=0.3)


def test_one_job_whose_trigger_raises_is_set_aside_and_the_others_fire(make_service,
                                                                        monkeypatch):
    real = ts_triggers.build_trigger

    def build(spec, default_tz, now=None):   # the scheduler's triggers: built with ``now``
        if now is not None and getattr(spec, "seconds", None) in (7, 9):
            return RaisingTrigger(good=0 if spec.seconds == 7 else 1)
        return real(spec, default_tz, now)
    # the scheduler's and the book's triggers are built by calendars.job_trigger
    monkeypatch.setattr(ts_calendars, "build_trigger", build)
    service = make_service()
    service.add_job({"id": "good", "command": "true", "trigger": {"type": "interval",
                                                                  "seconds": 1}})
    service.add_job({"id": "at_once", "command": "true", "trigger": {"type": "interval",
                                                                     "seconds": 7}})
    service.add_job({"id": "on_fire", "command": "true", "trigger": {"type": "interval",
                                                                     "seconds": 9}})
    for job_id in ("at_once", "on_fire"):
        missed = final_runs(service, job_id, timeout=30)
        assert missed[0]["status"] == "missed" and "this trigger is broken" in missed[0]["error"]
        assert service.scheduler.get_job(job_id) is None   # off the schedule
    final_runs(service, "good", count=3, timeout=30)
    assert service.health()[1]["scheduler"] == "running"
    service.scheduler.ask(None).wait(10)   # checked again: recorded once, not at each wakeup
    service.flush()
    assert len(service.runs(job_id="at_once")) == len(service.runs(job_id="on_fire")) == 1


def test_store_fired_finds_scheduled_and_catchup_rows_only(service):
    at = ts_timeutil._utcnow()
    rows = [{"id": ts_schema.new_run_id(), "job_id": job_id, "trigger": trigger, "scheduled_at": at,
             "status": "succeeded"}
            for job_id, trigger in (("s", "schedule"), ("c", "catchup"), ("m", "manual"),
                                    ("r", "retry"))]
    with service.store.write() as conn:
        service.store.runs.insert_runs(conn, rows)
    keys = [(job_id, at) for job_id in "scmrx"] + [("s", at + dt.timedelta(microseconds=1))]
    with service.store.write() as conn:
        assert service.store.runs.fired(conn, keys) == {("s", at), ("c", at)}


@pytest.mark.slow
@pytest.mark.postgres
def test_a_date_job_runs_once_when_another_node_takes_over(tmp_path, postgres_url):
    """Two nodes: the leader fires the date job and is killed (kill -9); the node that takes
    over adds the job to its schedule again, and does not fire it again."""
    from test_cluster import Node
    write_jobs(tmp_path / "jobs.yaml", f"""
        - id: once
          command: ['echo', 'once']
          trigger: {{type: date, run_date: '{_soon(5)}'}}
    """)
    nodes = [Node(tmp_path, postgres_url, "node-a"), Node(tmp_path, postgres_url, "node-b")]
    try:
        leader_id = wait_for(lambda: (nodes[0].get("/api/status") or {}).get("leader"), 30,
                             0.1, "a leader")
        leader = next(n for n in nodes if n.id == leader_id)
        other = next(n for n in nodes if n is not leader)
        wait_for(lambda: [r for r in (other.get("/api/runs?job_id=once") or {}).get("runs", [])
                          if r["status"] == "succeeded"], 60, 0.2, "the date job's run")
        leader.kill()
        _probe(f"http://127.0.0.1:{other.port}", "probe")
        runs = other.get("/api/runs?job_id=once")["runs"]
        assert [(r["trigger"], r["status"]) for r in runs] == [("schedule", "succeeded")], runs
    finally:
        for node in nodes:
            node.stop()


def test_a_burst_larger_than_a_wakeups_chunk_runs_each_job_once(jobs_file, make_service):
    """More jobs due at one instant than one wakeup records (scheduler.FIRE_CHUNK): the rest
    stay due and the next wakeups record them, each once, all run, none missed."""
    from task_scheduler.scheduler import FIRE_CHUNK
    count = 2 * FIRE_CHUNK + 37
    at = _soon(4)
    write_jobs(jobs_file, "".join(
        f"- {{id: b{i}, func: 'os:getpid', misfire_grace_time: null, "
        f"trigger: {{type: date, run_date: '{at}'}}}}\n" for i in range(count)))
    service = make_service()
    runs = ts_schema.ts_runs

    def ended():
        service.flush()
        with service.engine.connect() as conn:
            return conn.execute(sa.select(runs.c.job_id, runs.c.status, runs.c.started_at,
                                          runs.c.scheduled_at)).all()
    rows = wait_for(lambda: (r := ended()) and all(x.status == "succeeded" for x in r)
                    and len(r) >= count and r, 60, message=f"{count} runs of the burst")
    assert sorted(r.job_id for r in rows) == sorted(f"b{i}" for i in range(count))
    assert all(r.started_at is not None and r.started_at >= r.scheduled_at for r in rows)
    assert {service.job(f"b{i}")["state"] for i in (0, FIRE_CHUNK, count - 1)} == {"finished"}


@pytest.mark.postgres
def test_a_wakeup_that_outlives_its_lease_commits_nothing(jobs_file, make_config, postgres_url):
    """A node stops leading (a graceful stop hands the lease over) while its wakeup is being
    built: that wakeup must not commit. Its fence once read the lease epoch at the end, after
    the step-down had set it to None, and None proved nothing: the fires went in under the old
    epoch while the successor, which had not seen them, recorded the same times as catch-ups
    (the chaos run's "fires recorded twice")."""
    write_jobs(jobs_file, """
        - {id: every, func: 'os:getpid', trigger: {type: interval, seconds: 1}}
    """)
    service = ts.SchedulerService(make_config(database_url=postgres_url)).start()
    try:
        final_runs(service, "every", timeout=30)
        store = service.scheduler._store
        old_epoch, due_job = store.epoch, store.get_due_jobs
        stepped = {}

        def step_down_midway(now, most=None):
            jobs = due_job(now, most)
            if jobs and not stepped:
                stepped["at"] = ts_timeutil._naive_utc(jobs[0].next_run_time)
                service.scheduler.step_down()   # what a graceful stop does first
                service.store.nodes.release_lease(old_epoch)
            return jobs
        store.get_due_jobs = step_down_midway
        wait_for(lambda: stepped, 10, message="a wakeup with a due fire")
        store.get_due_jobs = due_job
        service.flush()
        rows = [r for r in _fire_rows(service.engine, "every") if r.scheduled_at == stepped["at"]]
        with service.engine.connect() as conn:
            epochs = conn.execute(sa.select(ts_schema.ts_runs.c.epoch).where(
                ts_schema.ts_runs.c.job_id == "every",
                ts_schema.ts_runs.c.scheduled_at == stepped["at"])).scalars().all()
        # nothing under the lease handed over (nor under none); a later lease may fire it
        assert all(e is not None and e > old_epoch for e in epochs), (rows, epochs)
    finally:
        service.stop()
