"""Workflows on two real nodes of one PostgreSQL (issue 23): the issue's example runs its steps
on both nodes (run_on labels) in dependency order with the loads overlapping; kill -9 of the
node running a step, then of the leader, mid-workflow: every step completes exactly once
(rescued steps follow their retries), checked with the lines the steps append to a file."""

from __future__ import annotations

import textwrap

import pytest

from conftest import wait_for, write_jobs
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


def test_kill_9_of_a_steps_node_and_of_the_leader_mid_workflow(tmp_path, cluster):  # noqa: F811
    log = tmp_path / "log.txt"
    # A step's first try hangs (its node is killed meanwhile); its retry finds the marker.
    _script(tmp_path / "step.sh", f"""\
        echo "start $TS_STEP_ID $TS_RUN_ID" >> {log}
        if [ "$1" = hang ] && [ ! -e {tmp_path}/$TS_STEP_ID.marker ]; then
          touch {tmp_path}/$TS_STEP_ID.marker; sleep 120
        fi
        echo "done $TS_STEP_ID" >> {log}
        """)
    write_jobs(tmp_path / "jobs.yaml", f"""
        - id: flow
          retries: {{max: 1, delay: 0}}
          steps:
            - {{id: first, command: ['{tmp_path}/step.sh', hang], run_on: [web]}}
            - {{id: second, command: ['{tmp_path}/step.sh', hang], after: [first],
                run_on: [db]}}
            - {{id: third, command: ['{tmp_path}/step.sh'], after: [second]}}
    """)
    a = cluster("node-a", labels="db")    # the leader: started first
    b = cluster("node-b", labels="web")
    assert wait_for(lambda: (a.get("/api/status") or {}).get("leader"), 20) == "node-a"
    run = a.call("/api/jobs/flow/run", "POST")["run"]
    wait_for(lambda: _step(a, run["id"], "first").get("status") == "running", 20, 0.1,
             "the first step to run on node-b")
    b.kill()   # the node running a step
    wait_for(lambda: _step(a, run["id"], "first").get("attempt") == 2, 40, 0.2,
             "the first step rescued and retried")
    b = cluster("node-b", labels="web")   # the retry needs a web node
    wait_for(lambda: _step(b, run["id"], "second").get("status") == "running", 30, 0.1,
             "the second step to run on node-a")
    a.kill()   # the leader, while it runs a step
    wait_for(lambda: _step(b, run["id"], "second").get("attempt") == 2, 40, 0.2,
             "the second step rescued and retried")
    cluster("node-a", labels="db")
    done = _run_ended(b, run["id"], 40)
    assert done["status"] == "succeeded", done
    steps = {s["step_id"]: s for s in done["steps"]}
    assert (steps["first"]["attempt"], steps["second"]["attempt"],
            steps["third"]["attempt"]) == (2, 2, 1)
    first_try = b.get(f"/api/runs/{steps['first']['runs'][0]}")
    assert first_try["status"] == "interrupted" and "node-b" in first_try["error"]
    lines = log.read_text().splitlines()
    done_lines = sorted(line for line in lines if line.startswith("done"))
    assert done_lines == ["done first", "done second", "done third"], lines
    assert len([line for line in lines if line.startswith("start")]) == 5, lines
