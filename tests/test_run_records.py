"""What a run records, whatever a job does: output with any bytes, errors without the service's
own tracebacks, one refused record never holding or dropping another, processes of a crashed
service ended at the next start, runs waiting for a worker shown as waiting, and values a run
cannot use refused at validation."""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
import uuid

import pytest
import sqlalchemy as sa

import task_scheduler as ts
import task_scheduler.models as ts_models

import task_scheduler.runner as ts_runner
import task_scheduler.history as ts_history
import task_scheduler.store as ts_store
import task_scheduler.store.runs as ts_runs
import task_scheduler.store.schema as ts_schema
import task_scheduler.timeutil as ts_timeutil
from conftest import final_runs, free_port, start_process, wait_for, write_jobs


def add(service, **definition):
    definition.setdefault("trigger", {"type": "manual"})
    return service.add_job(definition)


def stored(service, run_id):
    """The run as its row says (not the runner's memory of it)."""
    service.flush()
    return service.store.queries.run(run_id)


# -- NUL in output (issue 18 item 3) -----------------------------------------------------------

@pytest.mark.both_databases
def test_nul_in_output_is_recorded_and_holds_no_other_run(service):
    add(service, id="print0", command=["printf", "before\\000after\\n"])
    add(service, id="other", command=["echo", "other"])
    run = service.run_now("print0")
    other = service.run_now("other")
    row = wait_for(lambda: (r := stored(service, run["id"])) is not None and
                   r.status in ts_models.FINAL_STATUSES and r, 30, message="the NUL run's end row")
    assert (row.status, row.stdout) == ("succeeded", "before\ufffdafter\n")
    assert "1 NUL byte(s) of its stdout are stored as U+FFFD" in row.stderr
    # The other run ends on its own time (a loaded machine may run it after print0): its row is
    # waited for, and must say succeeded, not be held back by the NUL row.
    other_row = wait_for(lambda: (r := stored(service, other["id"])) is not None and
                         r.status in ts_models.FINAL_STATUSES and r, 30,
                         message="the other run's end")
    assert other_row.status == "succeeded"
    assert service.history.dropped == 0
    again = service.run_now("print0")   # no 409 "already running": the row did end
    assert final_runs(service, "print0", count=2)[0]["id"] == again["id"]


@pytest.mark.both_databases
def test_nul_in_a_python_error_is_recorded(tmp_path, make_service):
    (tmp_path / "nuljob.py").write_text("def boom():\n    raise ValueError('a\\x00b')\n")
    service = make_service()
    add(service, id="boom", func="nuljob:boom")
    run = service.run_now("boom")
    row = wait_for(lambda: (r := stored(service, run["id"])) is not None and
                   r.status in ts_models.FINAL_STATUSES and r, 30,
                   message="the python run's end row")
    assert row.status == "failed" and "ValueError: a\ufffdb" in row.error


class _PoisonRuns(ts_runs.RunStore):
    """Refuses any write that carries the poisoned run's output, as PostgreSQL refuses a value
    it cannot hold."""

    poisoned = "poisoned"

    def finish_runs(self, conn, updates, notes=None):
        if any(run_id == self.poisoned and "stdout" in fields for run_id, fields in updates):
            raise sa.exc.DataError("UPDATE ts_runs", {}, ValueError("cannot hold this value"))
        return super().finish_runs(conn, updates, notes)


@pytest.mark.both_databases
def test_history_writer_isolates_a_row_the_database_refuses(database_url):
    engine = ts_schema.create_engine(database_url)
    ts_schema.migrate(engine)
    store = ts_store.Store(engine, "node")
    store.runs = _PoisonRuns(store, store.notes)
    now = ts_timeutil._utcnow()
    rows = [{"id": i, "job_id": i, "trigger": "manual", "scheduled_at": now, "status": "running",
             "node": "node", "started_at": now} for i in ("good1", "poisoned", "good2")]
    with store.write() as conn:
        store.runs.insert_runs(conn, rows)
    writer = ts_history.HistoryWriter(store)
    writer.start()
    try:
        for run_id in ("good1", "poisoned", "good2"):
            writer.update(run_id, status="succeeded", finished_at=ts_timeutil._utcnow(),
                          stdout=f"out of {run_id}", exit_code=0)
        assert writer.flush(30)
        got = {r.id: r for r in (store.queries.run(i) for i in ("good1", "poisoned", "good2"))}
        assert got["good1"].status == got["good2"].status == "succeeded"
        assert got["good1"].stdout == "out of good1"
        bad = got["poisoned"]
        assert (bad.status, bad.exit_code, bad.stdout) == ("succeeded", 0, None)
        assert "could not record this run's output" in bad.error
        assert "cannot hold this value" in bad.error
        assert writer.unsettled_ids() == frozenset()
        assert writer.dropped == 0
    finally:
        writer.stop()
        engine.dispose()


# -- notifications of retried attempts (issue 18 item 6) ----------------------------------------

@pytest.mark.both_databases
def test_failed_is_sent_once_for_the_last_attempt_and_retrying_only_when_asked(make_service):
    from test_notify import Receiver
    receiver = Receiver()
    try:
        service = make_service(notify_delays=(0.2,))
        retries = {"max": 2, "delay": 0.1}
        add(service, id="flaky", command=["false"], retries=retries,
            notify=[{"webhook": receiver.url("/default")},
                    {"webhook": receiver.url("/all"), "on": ["failed", "retrying"]}])
        service.run_now("flaky")
        runs = final_runs(service, "flaky", count=3)
        assert [r["status"] for r in runs] == ["failed"] * 3
        last = max(runs, key=lambda r: r["attempt"])

        def sent():
            service.flush()
            notes = [n for r in runs for n in service.run(r["id"])["notifications"]]
            return notes if len(notes) >= 4 and all(n["status"] == "sent" for n in notes) \
                else None
        wait_for(sent, 30, 0.1, "the notifications to be sent")
        got = sorted((r["path"], json.loads(r["body"])["event"],
                      json.loads(r["body"])["run"]["attempt"]) for r in receiver.requests)
        assert got == [("/all", "failed", 3), ("/all", "retrying", 1), ("/all", "retrying", 2),
                       ("/default", "failed", 3)]
        assert last["attempt"] == 3
    finally:
        receiver.down()


# -- values a run cannot use are refused at validation (issue 18 item 7) ------------------------

@pytest.mark.parametrize("fields, field, words", [
    ({"command": ["echo", "a\0b"]}, "command.1", "NUL"),
    ({"command": "echo a\0b"}, "command", "NUL"),
    ({"command": ["echo"], "env": {"A": "x\0y"}}, "env.A", "NUL"),
    ({"command": ["echo"], "env": {"A\0B": "x"}}, "env", "not an environment variable name"),
    ({"command": ["echo"], "env": {"A=B": "x"}}, "env", "'A=B' is not an environment variable"),
    ({"command": ["echo"], "env": {"": "x"}}, "env", "not an environment variable name"),
    ({"command": ["echo"], "args": ["a\0b"]}, "", "args[0]: must not contain a NUL"),
    ({"command": ["echo"], "cwd": "a\0b"}, "cwd", "NUL"),
])
def test_values_no_process_can_take_are_refused_by_the_api(client, fields, field, words):
    answer = client.post("/api/jobs", {"id": "bad", **fields})
    assert answer.status == 422, answer
    details = answer.json["error"]["details"]
    assert any(d["field"] == field and words in d["message"] for d in details), details
    assert client.get("/api/jobs/bad").status == 404


@pytest.mark.parametrize("body, field", [
    ({"env": {"A": "x\0y"}}, "env.A"),
    ({"env": {"A=B": "x"}}, "env"),
    ({"args": ["a\0b"]}, "args"),
])
def test_run_parameters_no_process_can_take_are_refused(client, service, body, field):
    add(service, id="cmd", command=["echo"])
    answer = client.post("/api/jobs/cmd/run", body)
    assert answer.status == 422, answer
    assert any(d["field"] == field for d in answer.json["error"]["details"]), answer.json
    assert service.runs(job_id="cmd") == []


def test_jobs_file_names_the_line_of_a_bad_env_key(tmp_path):
    path = tmp_path / "jobs.yaml"
    path.write_text("- id: a\n  command: ['echo', 'x']\n  env:\n    'A=B': x\n")
    with pytest.raises(ts.InvalidConfig) as caught:
        ts.load_jobs_file(str(path))
    assert f"{path}:4: a: env: 'A=B' is not an environment variable name" in str(caught.value)


def test_a_run_error_never_shows_the_service_traceback(tmp_path, make_service, monkeypatch):
    (tmp_path / "tbjob.py").write_text("def boom():\n    raise ValueError('kaputt')\n")
    service = make_service()
    add(service, id="py", func="tbjob:boom")
    run = service.run_now("py")
    row = wait_for(lambda: (r := stored(service, run["id"])) is not None and
                   r.status in ts_models.FINAL_STATUSES and r, 30, message="the python run's end")
    assert row.error.startswith("ValueError: kaputt") and "tbjob.py" in row.error
    assert "task_scheduler" not in row.error   # the job's own frames only

    def broken(*args, **kwargs):
        raise RuntimeError("inside the service")
    add(service, id="cmd", command=["echo"])
    monkeypatch.setattr(ts_runner, "command_argv", broken)
    run = service.run_now("cmd")
    row = wait_for(lambda: (r := stored(service, run["id"])) is not None and
                   r.status in ts_models.FINAL_STATUSES and r, 30, message="the command run's end")
    assert row.status == "failed"
    assert row.error == "task-scheduler could not run it: RuntimeError: inside the service"


# -- a run waiting for a worker reads queued (issue 18 item 5) ----------------------------------

@pytest.mark.both_databases
def test_a_claimed_run_waiting_for_a_worker_reads_queued(tmp_path, make_service):
    module = f"gate_{uuid.uuid4().hex[:8]}"   # a fresh gate for each database's run
    (tmp_path / f"{module}.py").write_text(
        "import threading\nGATE = threading.Event()\n\n"
        "def wait():\n    GATE.wait(60)\n")
    service = make_service(max_workers=10)
    add(service, id="blocked", func=f"{module}:wait", max_instances=20)
    service.runner.runs.typical = 0.01   # as after quick runs: the runner claims ahead of workers
    runs = [service.run_now("blocked") for _ in range(11)]
    gate = importlib.import_module(module)
    try:
        def ten_running():
            got = [service.run(r["id"]) for r in runs]
            return got if sum(r["status"] == "running" for r in got) == 10 else None
        got = wait_for(ten_running, 30, message="10 runs running")
        waiting = [r for r in got if r["status"] != "running"]
        assert len(waiting) == 1 and waiting[0]["status"] == "queued"
        assert waiting[0]["started_at"] is None
        assert all(r["started_at"] for r in got if r["status"] == "running")
        wait_for(lambda: waiting[0]["id"] in service.runner.active, 30,
                 message="the 11th run claimed ahead by this node")
        service.flush()
        row = service.store.queries.run(waiting[0]["id"])
        assert (row.status, row.started_at, row.node) == ("queued", None, service.store.node)
        assert service.run(waiting[0]["id"])["status"] == "queued"
        assert service.store.runs.active_count("blocked") == 11
        with pytest.raises(ts.JobConflict):   # claimed runs count toward max_instances
            for _ in range(10):
                service.run_now("blocked")
    finally:
        gate.GATE.set()
    done = final_runs(service, "blocked", count=11, timeout=60)
    assert all(r["status"] == "succeeded" and r["started_at"] for r in done)
    eleventh = service.run(waiting[0]["id"])
    assert eleventh["started_at"] >= max(r["started_at"] for r in got if r["started_at"])


# -- processes of a crashed service are ended at its next start (issue 18 item 4, 19 item 7) ----

def _run_pids(run_ids) -> dict:
    """Live (not zombie) processes in /proc that carry one of these TS_RUN_IDs, by run."""
    wanted, found = {f"TS_RUN_ID={r}".encode(): r for r in run_ids}, {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/environ", "rb") as fh:
                environ = fh.read().split(b"\0")
            with open(f"/proc/{name}/stat") as fh:
                state = fh.read().rpartition(")")[2].split()[0]
        except OSError:
            continue
        run_id = next((wanted[e] for e in environ if e in wanted), None)
        if run_id is not None and state != "Z":
            found.setdefault(run_id, []).append(int(name))
    return found


def _serve(tmp_path, database_url, port):
    args = ["--config", str(tmp_path / "jobs.yaml"), "--db", database_url, "--port", str(port),
            "--node-id", "node-one"]
    proc = start_process(args, tmp_path, env={"TS_LOG_LEVEL": "INFO"})
    wait_for(lambda: _call(port, "/api/health"), 30, 0.1, "the service to answer")
    return proc


def _call(port, path, method="GET"):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                     data=b"{}" if method == "POST" else None,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)
    except (OSError, urllib.error.HTTPError):
        return None


@pytest.mark.both_databases
@pytest.mark.slow
def test_processes_of_a_killed_service_are_ended_when_it_starts_again(tmp_path, database_url):
    write_jobs(tmp_path / "jobs.yaml", """
        - {id: sleeper, command: 'sleep 100', max_instances: 5, trigger: {type: manual}}
    """)
    port = free_port()
    proc = _serve(tmp_path, database_url, port)
    runs = [_call(port, "/api/jobs/sleeper/run", "POST")["run"]["id"] for _ in range(4)]
    wait_for(lambda: len(_run_pids(runs)) == 4, 30, 0.1, "4 sleep processes")
    wait_for(lambda: all((_call(port, f"/api/runs/{r}") or {}).get("status") == "running"
                         for r in runs), 30, 0.1, "4 runs running")
    wait_for(lambda: all(_stored_pid(database_url, r) for r in runs), 30, 0.1,
             "the runs' process groups recorded")
    for watch in _fence_watches(proc.pid):   # PostgreSQL: the node's fence watch would end
        os.kill(watch, signal.SIGKILL)       # them at once; here it dies with the node
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    left = _run_pids(runs)
    assert len(left) == 4, "the crash leaves the commands running (what is to be fixed)"
    proc = _serve(tmp_path, database_url, port)
    try:
        assert _run_pids(runs) == {}, "started again: the old processes are gone"
        for run_id in runs:
            run = _call(port, f"/api/runs/{run_id}")
            assert run["status"] == "interrupted"
            assert f"its process group {_stored_pid(database_url, run_id)} was still running " \
                   f"and was ended at the restart of node-one" in run["error"]
        fresh = [_call(port, "/api/jobs/sleeper/run", "POST")["run"]["id"] for _ in range(5)]
        wait_for(lambda: len(_run_pids(fresh)) == 5, 30, 0.1, "5 new sleep processes")
        assert len(_run_pids(runs + fresh)) == 5   # never more than max_instances at once
    finally:
        fresh = locals().get("fresh", [])
        for run_id in fresh:   # or the stop waits out its grace
            _call(port, f"/api/runs/{run_id}/cancel", "POST")
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        for pids in _run_pids(runs + fresh).values():   # nothing of this test outlives it
            for pid in pids:
                os.kill(pid, signal.SIGKILL)


def _fence_watches(parent: int) -> list[int]:
    """The fence watch processes (``python -S -c ...``) a service process started."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as cmd:
                argv = cmd.read().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and b"-S" in argv[1:3]:
            found.append(int(entry))
    return found


def _stored_pid(database_url, run_id):
    engine = ts_schema.create_engine(database_url)
    try:
        return ts_store.Store(engine, "reader").queries.run(run_id).pid
    finally:
        engine.dispose()


@pytest.mark.both_databases
def test_runs_claimed_by_a_dead_or_restarted_node_go_back_to_the_queue(database_url):
    engine = ts_schema.create_engine(database_url)
    ts_schema.migrate(engine)
    store = ts_store.Store(engine, "leader")
    now, old = ts_timeutil._utcnow(), ts_timeutil._utcnow() - dt.timedelta(seconds=60)
    if store.clustered:   # rescue compares with the database's clock
        now = store.db_time().replace(tzinfo=None)
        old = now - dt.timedelta(seconds=60)
    rows = [{"id": "dead1", "job_id": "a", "node": "dead", "heartbeat_at": old},
            {"id": "live1", "job_id": "b", "node": "live", "heartbeat_at": now},
            {"id": "gone1", "job_id": "c", "node": "restarted", "heartbeat_at": now}]
    with store.write() as conn:
        store.runs.insert_runs(conn, [{**r, "trigger": "manual", "scheduled_at": now,
                                  "status": "queued"} for r in rows])
    try:
        assert store.liveness.rescue(10) == []   # nothing had started: nothing is interrupted
        run = store.queries.run
        assert (run("dead1").status, run("dead1").node) == ("queued", None)
        assert run("live1").node == "live"   # a live node keeps what it claimed
        ts_store.Store(engine, "restarted").liveness.sweep("restarted")
        assert (run("gone1").status, run("gone1").node) == ("queued", None)
        limits = {job: (1, None) for job in "abc"}
        started, _ = store.runs.claim(ts_store.Admission(("",), 10, limits))
        assert sorted(r["id"] for r in started) == ["dead1", "gone1"]   # claimable again
    finally:
        engine.dispose()


@pytest.mark.both_databases
def test_a_database_without_the_pid_column_gains_it(database_url):
    engine = ts_schema.create_engine(database_url)
    try:
        ts_schema.migrate(engine)
        with engine.begin() as conn:   # as the release before wrote it
            conn.execute(sa.text("ALTER TABLE ts_runs DROP COLUMN pid"))
        ts_schema.migrate(engine)
        assert "pid" in {c["name"] for c in sa.inspect(engine).get_columns("ts_runs")}
    finally:
        engine.dispose()


@pytest.mark.both_databases
def test_a_claimed_run_not_started_at_stop_goes_back_to_the_queue(tmp_path, make_service):
    module = f"gate_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        "import threading\nGATE = threading.Event()\n\n"
        "def wait():\n    GATE.wait(60)\n")
    service = make_service(max_workers=1)
    add(service, id="blocked", func=f"{module}:wait", max_instances=5)
    service.runner.runs.typical = 0.01   # claims ahead of its one worker
    first, second = service.run_now("blocked"), service.run_now("blocked")
    gate = importlib.import_module(module)
    try:
        wait_for(lambda: second["id"] in service.runner.active and
                 service.run(first["id"])["status"] == "running", 30,
                 message="one run going, one claimed ahead")
        service.stop(grace=0.2)
    finally:
        gate.GATE.set()
    row = service.store.queries.run(second["id"])
    assert (row.status, row.node, row.started_at) == ("queued", None, None)
    assert service.store.queries.run(first["id"]).status == "interrupted"


@pytest.mark.both_databases
def test_run_ends_are_written_as_one_batch(database_url):
    """The writer's batch is one executemany; a statement that cannot take it would make every
    batch fall back to a transaction per row (correct, but far slower)."""
    engine = ts_schema.create_engine(database_url)
    ts_schema.migrate(engine)
    store = ts_store.Store(engine, "node")
    now = ts_timeutil._utcnow()
    ids = [f"run{i}" for i in range(3)]
    try:
        with store.write() as conn:
            store.runs.insert_runs(conn, [{"id": i, "job_id": i, "trigger": "manual",
                                      "scheduled_at": now, "status": "queued", "node": "node"}
                                     for i in ids])
            store.runs.finish_runs(conn, [(i, {"status": "running", "started_at": now})
                                          for i in ids])
            store.runs.finish_runs(conn, [(i, {"status": "succeeded", "finished_at": now})
                                     for i in ids])
        assert {store.queries.run(i).status for i in ids} == {"succeeded"}
    finally:
        engine.dispose()
