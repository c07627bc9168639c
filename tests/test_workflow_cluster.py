"""Workflows on two real nodes of one PostgreSQL (issue 23): the issue's example runs its steps
on both nodes (run_on labels) in dependency order with the loads overlapping; kill -9 of the
node running a step, then of the leader, mid-workflow: every step completes exactly once
(rescued steps follow their retries), checked with the lines the steps append to a file, and
``publish`` (after nightly_etl succeeded) runs once per succeeded run, never for a failed one."""

from __future__ import annotations

import collections
import textwrap

import pytest
import sqlalchemy as sa

from conftest import wait_for, write_jobs
from task_scheduler.store.schema import create_engine, ts_runs
from test_after_cluster import _settled
from test_cluster import Node, cluster  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _script(path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(0o755)


def _run_ended(node: Node, run_id: str, timeout: float) -> dict:
    return wait_for(lambda: (r := node.get(f"/api/runs/{run_id}")) and
                    r["status"] not in ("queued", "running") and r, timeout, 0.2,
                    f"workflow run {run_id} to end")


def _step(node: Node, run_id: str, step_id: str) -> dict:
    run = node.get(f"/api/runs/{run_id}") or {"steps": []}
    return next((s for s in run.get("steps", []) if s["step_id"] == step_id), {})


def test_the_example_runs_on_both_nodes_in_order(tmp_path, cluster):  # noqa: F811
    log = tmp_path / "log.txt"
    _script(tmp_path / "step.sh", f"""\
        echo "start $TS_STEP_ID" >> {log}
        if [ "$TS_STEP_ID" = load_a ] || [ "$TS_STEP_ID" = load_b ]; then
          n=0
          while [ $(grep -c '^start load_' {log}) -lt 2 ] && [ $n -lt 200 ]; do
            sleep 0.05; n=$((n+1)); done
        fi
        echo "end $TS_STEP_ID $ROWS" >> {log}
        echo 7
        """)
    write_jobs(tmp_path / "jobs.yaml", f"""
        - id: nightly_etl
          steps:
            - {{id: extract, command: ['{tmp_path}/step.sh'], output: ROWS, run_on: [db]}}
            - {{id: transform, command: ['{tmp_path}/step.sh'], after: [extract],
                run_on: [web]}}
            - {{id: load_a, command: ['{tmp_path}/step.sh'], after: [transform],
                run_on: [db]}}
            - {{id: load_b, command: ['{tmp_path}/step.sh'], after: [transform],
                run_on: [web]}}
            - {{id: report, command: '{tmp_path}/step.sh', shell: true,
                after: [load_a, load_b], when: all_done}}
    """)
    a, b = cluster("node-a", labels="db"), cluster("node-b", labels="web")
    run = b.call("/api/jobs/nightly_etl/run", "POST")["run"]
    done = _run_ended(a, run["id"], 40)
    assert done["status"] == "succeeded", done
    nodes = {s["step_id"]: s["node"] for s in done["steps"]}
    assert nodes["extract"] == nodes["load_a"] == "node-a"
    assert nodes["transform"] == nodes["load_b"] == "node-b"
    lines = [tuple(line.split()[:2]) for line in log.read_text().splitlines()]
    at = {line: i for i, line in enumerate(lines)}
    assert len(lines) == len(at) == 10   # each step started and ended once
    assert at[("end", "extract")] < at[("start", "transform")]
    assert at[("end", "transform")] < min(at[("start", "load_a")], at[("start", "load_b")])
    assert at[("start", "load_a")] < at[("end", "load_b")]   # the loads overlap
    assert at[("start", "load_b")] < at[("end", "load_a")]
    assert max(at[("end", "load_a")], at[("end", "load_b")]) < at[("start", "report")]
    assert all(line.split()[2:] == ["7"] for line in log.read_text().splitlines()
               if line.startswith("end ") and "extract" not in line)


def _hang_once(tmp_path, step_id: str) -> object:
    """Make ``step_id``'s next try hang (the script deletes the file as it starts)."""
    (flag := tmp_path / f"hang.{step_id}").touch()
    return flag


def _started(node: Node, run_id: str, step_id: str, flag) -> None:
    """The step's command started, and the database shows it running: a kill -9 before the
    running status is written puts the claimed step back in the queue as never started."""
    wait_for(lambda: not flag.exists() and _step(node, run_id, step_id).get("status") ==
             "running", 30, 0.1, f"{step_id} to run")


def _rows(postgres_url) -> list:
    engine = create_engine(postgres_url)
    try:
        wait_for(lambda: _settled(engine), 30, 0.2, "every run to end")
        with engine.connect() as conn:
            return conn.execute(sa.select(ts_runs.c.id, ts_runs.c.job_id, ts_runs.c.status,
                                          ts_runs.c.trigger, ts_runs.c.upstream_run)).all()
    finally:
        engine.dispose()


def test_kill_9_of_a_steps_node_and_of_the_leader_mid_workflow(tmp_path, cluster,  # noqa: F811
                                                                postgres_url):
    """Run 1 loses the node running its first step, run 2 the leader while it runs the second
    step, run 3 fails: each step completes once, and ``publish`` (after nightly_etl succeeded)
    runs once for each of runs 1 and 2 and never for run 3."""
    log, published = tmp_path / "log.txt", tmp_path / "published.txt"
    _script(tmp_path / "step.sh", f"""\
        echo "start $TS_STEP_ID $TS_WORKFLOW_RUN" >> {log}
        if [ -e {tmp_path}/fail.$TS_STEP_ID ]; then exit 1; fi
        if [ -e {tmp_path}/hang.$TS_STEP_ID ]; then
          rm {tmp_path}/hang.$TS_STEP_ID; sleep 120
        fi
        echo "done $TS_STEP_ID $TS_WORKFLOW_RUN" >> {log}
        """)
    write_jobs(tmp_path / "jobs.yaml", f"""
        - id: nightly_etl
          retries: {{max: 1, delay: 0}}
          steps:
            - {{id: first, command: ['{tmp_path}/step.sh'], run_on: [web]}}
            - {{id: second, command: ['{tmp_path}/step.sh'], after: [first], run_on: [db]}}
            - {{id: third, command: ['{tmp_path}/step.sh'], after: [second]}}
        - id: publish
          command: ['/bin/sh', '-c', 'echo "$TS_RUN_ID" >> {published}']
          after: {{job: nightly_etl, on: [succeeded]}}
    """)
    a = cluster("node-a", labels="db")    # the leader: started first
    b = cluster("node-b", labels="web")
    assert wait_for(lambda: (a.get("/api/status") or {}).get("leader"), 20) == "node-a"
    flag = _hang_once(tmp_path, "first")
    run1 = a.call("/api/jobs/nightly_etl/run", "POST")["run"]["id"]
    _started(a, run1, "first", flag)
    b.kill()   # the node running a step
    wait_for(lambda: _step(a, run1, "first").get("attempt") == 2, 40, 0.2,
             "the first step rescued and retried")
    b = cluster("node-b", labels="web")   # the retry needs a web node
    done1 = _run_ended(a, run1, 40)
    flag = _hang_once(tmp_path, "second")
    run2 = a.call("/api/jobs/nightly_etl/run", "POST")["run"]["id"]
    _started(b, run2, "second", flag)
    a.kill()   # the leader, while it runs a step
    wait_for(lambda: _step(b, run2, "second").get("attempt") == 2, 40, 0.2,
             "the second step rescued and retried")
    cluster("node-a", labels="db")
    done2 = _run_ended(b, run2, 40)
    (tmp_path / "fail.third").touch()
    run3 = b.call("/api/jobs/nightly_etl/run", "POST")["run"]["id"]
    done3 = _run_ended(b, run3, 40)
    assert (done1["status"], done2["status"], done3["status"]) == (
        "succeeded", "succeeded", "failed"), (done1, done2, done3)
    attempts = [tuple(s["attempt"] for s in sorted(d["steps"], key=lambda s: s["step_id"]))
                for d in (done1, done2, done3)]   # first, second, third
    assert attempts == [(2, 1, 1), (1, 2, 1), (1, 1, 2)]
    for done, step, node in ((done1, "first", "node-b"), (done2, "second", "node-a")):
        first_try = b.get(f"/api/runs/{_step(b, done['id'], step)['runs'][0]}")
        assert first_try["status"] == "interrupted" and node in first_try["error"], first_try
    lines = collections.Counter(tuple(line.split()) for line in log.read_text().splitlines())
    tries = {run: dict(zip(("first", "second", "third"), n, strict=True)) for run, n in
             zip((run1, run2, run3), attempts, strict=True)}
    assert lines == {**{("start", s, r): n for r, t in tries.items() for s, n in t.items()},
                     **{("done", s, r): 1 for r in (run1, run2) for s in tries[r]},
                     ("done", "first", run3): 1, ("done", "second", run3): 1}, lines
    publishes = [r for r in _rows(postgres_url) if r.job_id == "publish"]
    assert sorted((r.trigger, r.upstream_run, r.status) for r in publishes) == sorted(
        ("after", run, "succeeded") for run in (run1, run2)), publishes
    assert sorted(published.read_text().split()) == sorted(r.id for r in publishes)


def test_a_kill_9_just_after_a_steps_command_starts_counts_that_try(tmp_path, cluster):  # noqa: F811
    """Each start of a step's command is a try the run records (its attempt), even when the
    node dies at once: the docs (cluster.md) say a claimed run goes back to the queue only if
    nothing of it ran."""
    log, flag = tmp_path / "log.txt", tmp_path / "hang.only"
    _script(tmp_path / "step.sh", f"""\
        echo "start $TS_STEP_ID" >> {log}
        if [ -e {flag} ]; then rm {flag}; sleep 30; fi
        """)
    write_jobs(tmp_path / "jobs.yaml", f"""
        - id: nightly_etl
          steps:
            - {{id: only, command: ['{tmp_path}/step.sh'], run_on: [db]}}
    """)
    b = cluster("node-b", labels="web")
    a = cluster("node-a", labels="db")
    flag.touch()
    run = b.call("/api/jobs/nightly_etl/run", "POST")["run"]["id"]
    wait_for(lambda: not flag.exists(), 20, 0.01, "the step's command to start")
    a.kill()   # before its running status is written, most of the time
    cluster("node-a", labels="db")
    done = _run_ended(b, run, 40)
    starts = log.read_text().splitlines().count("start only")
    assert done["steps"][0]["attempt"] == starts, (done, starts)   # each try recorded
