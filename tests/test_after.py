"""Jobs that start when others end (``after: {job, on}``): validation, chains on both databases,
retries, paused jobs, restarts, and a randomized check that each matching end queues one run."""

from __future__ import annotations

import datetime as dt
import random
import sys
import threading

import pytest
import sqlalchemy as sa

from task_scheduler.after import after_problems, build_plan, cycles
from task_scheduler.errors import InvalidConfig, InvalidJob
from task_scheduler.models import JobDefinition
from task_scheduler.store import Store
from task_scheduler.store.schema import create_engine, migrate, new_run_id, ts_runs

from conftest import final_runs, wait_for, write_jobs

PY = sys.executable


def _job(job_id, after=None, **fields):
    data = {"id": job_id, "command": [PY, "-c", "pass"], **fields}
    if after is not None:
        data["after"] = after
    return JobDefinition.model_validate(data)


# validation


def test_on_defaults_to_succeeded_and_yaml_on_key_is_read():
    assert _job("b", {"job": "a"}).after.on == ["succeeded"]
    assert _job("b", {"job": "a", True: ["failed"]}).after.on == ["failed"]


@pytest.mark.parametrize("on", [["done"], [], ["queued"], "succeeded"])
def test_bad_on_values_are_refused(on):
    with pytest.raises(ValueError, match="on"):
        _job("b", {"job": "a", "on": on})


def test_heartbeat_job_cannot_follow():
    with pytest.raises(ValueError, match="heartbeat job runs nowhere"):
        JobDefinition.model_validate({"id": "h", "trigger": {"type": "heartbeat", "every": 60},
                                      "after": {"job": "a"}})


def test_cycles_are_found_with_their_path():
    jobs = {"a": _job("a", {"job": "c"}), "b": _job("b", {"job": "a"}),
            "c": _job("c", {"job": "b"}), "d": _job("d", {"job": "c"})}
    found = cycles(jobs, sorted(jobs))
    assert found == [["a", "b", "c", "a"]]   # a's end starts b, b's starts c, c's starts a
    assert cycles({"s": _job("s", {"job": "s"})}, ["s"]) == [["s", "s"]]
    assert cycles({"x": _job("x", {"job": "y"})}, ["x"]) == []   # y unknown: no loop


def test_problems_name_unknown_jobs_and_cycles():
    jobs = {"a": _job("a", {"job": "b"}), "b": _job("b", {"job": "a"}),
            "c": _job("c", {"job": "nope"})}
    details = after_problems(jobs, jobs)
    messages = " | ".join(d["message"] for d in details)
    assert "'nope' does not exist" in messages
    assert "cycle" in messages and "a -> b -> a" in messages
    assert {d["field"] for d in details} == {"after.job"}


def test_plan_says_who_follows_and_holds_paused_jobs():
    plan = build_plan([(_job("a", retries={"max": 2}), False),
                       (_job("b", {"job": "a", "on": ["failed"]}, run_on=["x"]), True),
                       (_job("c", {"job": "a"}), False)])
    assert plan["a"].retry_max == 2
    assert [(d.job_id, set(d.on), d.run_on, d.held) for d in plan["a"].jobs] == [
        ("b", {"failed"}, "x", "paused"), ("c", {"succeeded"}, "", None)]


def test_yaml_reload_reports_unknown_job_and_cycle_with_lines(make_service, jobs_file):
    service = make_service()
    text = f"""\
        - id: a
          command: ['{PY}', '-c', 'pass']
          after: {{job: b}}
        - id: b
          command: ['{PY}', '-c', 'pass']
          after: {{job: a}}
        - id: c
          command: ['{PY}', '-c', 'pass']
          after: {{job: missing}}
        """
    write_jobs(jobs_file, text)
    with pytest.raises(InvalidConfig) as info:
        service.reload()
    assert "jobs.yaml:3: a: after.job: a cycle" in str(info.value)
    assert "a -> b -> a" in str(info.value)
    write_jobs(jobs_file, text.replace("after: {job: a}", "trigger: {type: manual}"))
    with pytest.raises(InvalidConfig) as info:   # names are checked against the API's too
        service.reload()
    assert "jobs.yaml:9: c: after.job: job 'missing' does not exist" in str(info.value)
    assert service.jobs() == []   # nothing applied
    assert "missing" in service.config_status()["error"]


def test_api_job_may_follow_yaml_job_and_yaml_may_follow_api_job(make_service, jobs_file):
    service = make_service()
    service.add_job({"id": "api", "command": [PY, "-c", "pass"]})
    write_jobs(jobs_file, f"""\
        - id: y
          command: ['{PY}', '-c', 'pass']
          after: {{job: api}}
        """)
    service.reload()
    assert service.job("api")["downstream"] == ["y"]
    assert service.job("y")["after"] == {"job": "api", "on": ["succeeded"]}
    with pytest.raises(InvalidJob, match="cycle.*api -> y -> api|cycle.*y -> api -> y"):
        service.replace_job("api", {"command": [PY, "-c", "pass"], "after": {"job": "y"}})
    with pytest.raises(InvalidJob, match="'ghost' does not exist"):
        service.add_job({"id": "z", "command": [PY, "-c", "pass"], "after": {"job": "ghost"}})


# behaviour


def _chain(service, tmp_path, first_code="pass", on=None, retries=None):
    log = tmp_path / "chain.log"
    code = "import sys; open(sys.argv[1], 'a').write(sys.argv[2] + '\\n')"
    service.add_job({"id": "a", "command": [PY, "-c", first_code], **(
        {"retries": retries} if retries else {})})
    service.add_job({"id": "b", "command": [PY, "-c", code, str(log), "b"],
                     "after": {"job": "a", **({"on": on} if on else {})}})
    service.add_job({"id": "c", "command": [PY, "-c", code, str(log), "c"],
                     "after": {"job": "b"}})
    return log


@pytest.mark.both_databases
def test_chain_runs_in_order_once(service, tmp_path):
    log = _chain(service, tmp_path)
    first = service.run_now("a")
    [c] = final_runs(service, "c")
    [b] = final_runs(service, "b")
    assert (b["trigger"], b["upstream_run"]) == ("after", first["id"])
    assert (c["trigger"], c["upstream_run"], c["status"]) == ("after", b["id"], "succeeded")
    assert log.read_text().split() == ["b", "c"]
    assert service.run(c["id"])["upstream_run"] == b["id"]


@pytest.mark.both_databases
def test_on_failed_runs_only_after_a_failure(service, tmp_path):
    log = _chain(service, tmp_path, first_code="raise SystemExit(3)", on=["failed"])
    service.run_now("a")
    [b] = final_runs(service, "b")
    final_runs(service, "c")
    assert b["status"] == "succeeded" and log.read_text().split() == ["b", "c"]
    service.replace_job("a", {"command": [PY, "-c", "pass"]})
    service.run_now("a")
    final_runs(service, "a", 2)
    service.flush()
    assert len(service.runs(job_id="b")) == 1   # a success starts no on: [failed] job


def test_failure_then_successful_retry_starts_succeeded_jobs_once(service, tmp_path):
    flag = tmp_path / "failed-once"
    code = (f"import os, sys; p = {str(flag)!r}\n"
            f"if not os.path.exists(p): open(p, 'w').close(); sys.exit(1)")
    service.add_job({"id": "a", "command": [PY, "-c", code], "retries": {"max": 2}})
    service.add_job({"id": "ok", "command": [PY, "-c", "pass"], "after": {"job": "a"}})
    service.add_job({"id": "bad", "command": [PY, "-c", "pass"],
                     "after": {"job": "a", "on": ["failed"]}})
    service.run_now("a")
    runs = final_runs(service, "a", 2)
    assert sorted(r["status"] for r in runs) == ["failed", "succeeded"]
    [ok] = final_runs(service, "ok")
    assert ok["upstream_run"] == next(r["id"] for r in runs if r["status"] == "succeeded")
    service.flush()
    assert service.runs(job_id="bad") == []   # a failure that is retried is not final


def test_last_failed_attempt_starts_failed_jobs(service):
    service.add_job({"id": "a", "command": [PY, "-c", "raise SystemExit(1)"],
                     "retries": {"max": 1}})
    service.add_job({"id": "bad", "command": [PY, "-c", "pass"],
                     "after": {"job": "a", "on": ["failed"]}})
    service.run_now("a")
    runs = final_runs(service, "a", 2)
    [bad] = final_runs(service, "bad")
    last = max(runs, key=lambda r: r["attempt"])
    assert (last["attempt"], bad["upstream_run"]) == (2, last["id"])


def test_paused_downstream_is_recorded_skipped(service):
    service.add_job({"id": "a", "command": [PY, "-c", "pass"]})
    service.add_job({"id": "b", "command": [PY, "-c", "pass"], "after": {"job": "a"}})
    service.pause("b")
    first = service.run_now("a")
    [b] = final_runs(service, "b")
    assert (b["status"], b["upstream_run"]) == ("skipped", first["id"])
    assert "paused" in b["error"]


def test_cancel_of_queued_run_starts_on_cancelled_jobs(service):
    service.add_job({"id": "a", "command": [PY, "-c", "pass"], "run_on": ["nowhere"]})
    service.add_job({"id": "b", "command": [PY, "-c", "pass"],
                     "after": {"job": "a", "on": ["cancelled"]}})
    queued = service.run_now("a")
    service.cancel(queued["id"])
    [b] = final_runs(service, "b")
    assert (b["upstream_run"], b["status"]) == (queued["id"], "succeeded")


@pytest.mark.both_databases
def test_restart_between_end_and_claim_runs_downstream_once(make_service, tmp_path):
    log = tmp_path / "b.log"
    service = make_service()
    service.add_job({"id": "a", "command": [PY, "-c", "pass"]})
    service.add_job({"id": "b", "command": [PY, "-c", "import sys; open(sys.argv[1], 'a')"
                                            ".write('b\\n')", str(log)],
                     "after": {"job": "a"}, "run_on": ["later"]})   # no node here takes it
    service.run_now("a")
    final_runs(service, "a")
    wait_for(lambda: service.runs(job_id="b"), message="b queued")
    service.stop(grace=2)
    again = make_service(labels=["later"])
    [b] = final_runs(again, "b")
    again.flush()
    assert b["status"] == "succeeded" and log.read_text() == "b\n"
    assert len(again.runs(job_id="b")) == 1


def test_api_shapes(client, service):
    service.add_job({"id": "a", "command": [PY, "-c", "pass"]})
    service.add_job({"id": "b", "command": [PY, "-c", "pass"],
                     "after": {"job": "a", "on": ["succeeded", "failed"]}})
    job = client.get("/api/jobs/a").json
    assert job["downstream"] == ["b"] and job["after"] is None
    assert client.get("/api/jobs/b").json["after"] == {"job": "a",
                                                      "on": ["succeeded", "failed"]}
    run = client.post("/api/jobs/a/run").json["run"]
    assert run["upstream_run"] is None
    [b] = final_runs(service, "b")
    assert client.get(f"/api/runs/{b['id']}").json["upstream_run"] == run["id"]
    refused = client.post("/api/jobs", {"id": "c", "command": "true", "after": {"job": "c"}})
    assert refused.status == 422 and "c -> c" in refused.json["error"]["message"]


# the store, by itself: every end, however often and by whichever path it is recorded, queues
# one run per follower whose on: matches it


ONS = {"s": ["succeeded"], "f": ["failed", "timeout"], "i": ["interrupted"],
       "any": ["succeeded", "failed", "timeout", "cancelled", "interrupted"]}


def _insert_upstream_runs(store, rng, count):
    """Runs of 'up': running here (some with a long-stale heartbeat, for the rescue to take),
    or queued and unclaimed (for cancels)."""
    start, runs = dt.datetime(2026, 1, 1), []
    for index in range(count):
        run_id, attempt = new_run_id(), rng.choice([1, 2])
        queued, stale = rng.random() < 0.2, rng.random() < 0.3
        runs.append((run_id, rng.choice(["succeeded", "failed", "timeout", "cancelled"]),
                     queued))
        with store.write() as conn:
            conn.execute(ts_runs.insert().values(
                id=run_id, job_id="up", trigger="manual", attempt=attempt,
                status="queued" if queued else "running", node=None if queued else "n1",
                scheduled_at=start + dt.timedelta(seconds=index), run_on="",
                heartbeat_at=dt.datetime(2000 if stale else 2100, 1, 1)))
    return runs


def _end_randomly(store, runs, seed):
    """Ends in random batches at a few instants (their runs' times collide), cancels, and
    rescues, all of them again and again."""
    rng = random.Random(seed)
    order = runs[:]
    rng.shuffle(order)
    while order:
        size = rng.randint(1, 7)
        batch, order = order[:size], order[size:]
        at = dt.datetime(2026, 1, 2, 0, 0, rng.randint(0, 3))
        with store.write() as conn:
            store.runs.finish_runs(conn, [(i, {"status": s, "finished_at": at})
                                          for i, s, queued in batch if not queued])
        for run_id, _, queued in batch:
            if queued:
                store.runs.cancel_queued(run_id)
        if rng.random() < 0.3:
            store.liveness.rescue(1.0)


@pytest.mark.both_databases
def test_random_ends_queue_one_run_per_matching_end(database_url):
    rng = random.Random(23)
    engine = create_engine(database_url)
    migrate(engine)
    store = Store(engine, "n1")
    store.after.plan = build_plan(
        [(_job("up", retries={"max": 1}), False)] +
        [(_job(name, {"job": "up", "on": on}), False) for name, on in ONS.items()])
    runs = _insert_upstream_runs(store, rng, 80)
    for round_ in range(3):   # the same ends recorded again and again, three writers at once
        threads = [threading.Thread(target=_end_randomly, args=(store, runs, round_ * 10 + n))
                   for n in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    with engine.connect() as conn:
        rows = conn.execute(sa.select(ts_runs.c.id, ts_runs.c.job_id, ts_runs.c.status,
                                      ts_runs.c.attempt, ts_runs.c.upstream_run)).all()
    engine.dispose()
    ups = [r for r in rows if r.job_id == "up"]
    assert {r.status for r in ups} >= {"succeeded", "interrupted", "cancelled"}
    for name, on in ONS.items():
        expected = sorted(r.id for r in ups if r.status in on and not (
            r.status in ("failed", "timeout", "interrupted") and r.attempt <= 1))
        got = sorted(r.upstream_run for r in rows if r.job_id == name)
        assert got == expected, name


def test_a_deleted_follower_is_queued_no_more(service):
    service.add_job({"id": "a", "command": [PY, "-c", "pass"]})
    service.add_job({"id": "b", "command": [PY, "-c", "pass"], "after": {"job": "a"}})
    service.delete_job("b")
    assert service.job("a")["downstream"] == []
    service.run_now("a")
    final_runs(service, "a")
    service.flush()
    assert service.runs(job_id="b") == []


def test_validate_reports_loops_of_the_file_with_lines(tmp_path):
    from task_scheduler.jobsfile import JobsParser, load_jobs_file
    path = write_jobs(tmp_path / "jobs.yaml", f"""\
        - id: a
          command: ['{PY}', '-c', 'pass']
          after: {{job: b}}
        - id: b
          command: ['{PY}', '-c', 'pass']
          after:
            job: a
        - id: c
          command: ['{PY}', '-c', 'pass']
          after: {{job: made_through_the_api}}
        """)
    for parse in (lambda: load_jobs_file(str(path)),
                  lambda: JobsParser().parse(path.read_text(), str(path))):
        with pytest.raises(InvalidConfig) as info:
            parse()
        assert f"{path}:3: a: after.job: a cycle of jobs starting each other: a -> b -> a" \
            in str(info.value)
        assert "made_through_the_api" not in str(info.value)   # the API may have it


@pytest.mark.both_databases
def test_runs_a_crash_left_running_start_their_followers_at_the_next_start(make_service):
    """The sweep at start-up ends them before the job book is read: the store reads who
    follows whom from ts_jobs then."""
    service = make_service()
    service.add_job({"id": "a", "command": [PY, "-c", "pass"]})
    service.add_job({"id": "b", "command": [PY, "-c", "pass"],
                     "after": {"job": "a", "on": ["interrupted"]}})
    service.stop(grace=2)
    left = new_run_id()
    with service.store.write() as conn:   # what a crash mid-run leaves behind
        conn.execute(ts_runs.insert().values(
            id=left, job_id="a", trigger="manual", attempt=1, status="running",
            node=service.store.node, run_on="", scheduled_at=dt.datetime(2026, 1, 1)))
    again = make_service()
    [b] = final_runs(again, "b")
    assert (b["upstream_run"], b["status"]) == (left, "succeeded")
    assert again.run(left)["status"] == "interrupted"


@pytest.mark.both_databases
@pytest.mark.parametrize("fails", [False, True])
def test_a_workflow_starts_its_followers_once_at_its_own_end(service, tmp_path, fails):
    """The steps of a workflow are runs of its job too, but only the workflow run's end is the
    job's end: a step's end starts no follower, and a failed workflow run (never retried, even
    with job-level retries, which are its steps') starts on: [failed] at once."""
    log = tmp_path / "followers.log"
    append = f"open({str(log)!r}, 'a').write('{{}}\\n')"
    service.add_job({"id": "wf", "retries": {"max": 1, "delay": 0}, "steps": [
        {"id": "one", "command": [PY, "-c", "pass"]},
        {"id": "two", "command": [PY, "-c", "raise SystemExit(1)" if fails else "pass"],
         "after": ["one"]},
        {"id": "three", "command": [PY, "-c", "pass"], "after": ["one"]}]})
    for name, on in (("ok", ["succeeded"]), ("bad", ["failed"])):
        service.add_job({"id": name, "command": [PY, "-c", append.format(name)],
                         "after": {"job": "wf", "on": on}})
    run = service.run_now("wf")
    [ended] = final_runs(service, "wf", timeout=30)
    assert ended["id"] == run["id"] and ended["status"] == ("failed" if fails else "succeeded")
    follower = "bad" if fails else "ok"
    [started] = final_runs(service, follower, timeout=30)
    assert (started["trigger"], started["upstream_run"]) == ("after", run["id"])
    wait_for(lambda: log.exists() and log.read_text().split(), 10, message="the follower ran")
    service.flush()
    assert log.read_text().split() == [follower]
    assert service.runs(job_id="ok" if fails else "bad") == []
