"""``after:`` on two real PostgreSQL nodes whose leader is killed (SIGKILL) while upstream runs
end: each matching end of the upstream runs its downstream job exactly once (rows in ts_runs,
and lines the downstream job appends to a file)."""

from __future__ import annotations

import collections
import sys
import time

import pytest
import sqlalchemy as sa

from conftest import wait_for, write_jobs
from task_scheduler.store.schema import create_engine, ts_runs
from test_cluster import cluster, leader_of  # noqa: F401,F811 (cluster: the fixture)

pytestmark = pytest.mark.postgres
PY = sys.executable


def _running_on(engine, node: str) -> bool:
    with engine.connect() as conn:
        return bool(conn.execute(sa.select(sa.func.count()).select_from(ts_runs).where(
            ts_runs.c.status == "running", ts_runs.c.node == node)).scalar())


def _settled(engine) -> bool:
    with engine.connect() as conn:
        return not conn.execute(sa.select(sa.func.count()).select_from(ts_runs).where(
            ts_runs.c.status.in_(("queued", "running")))).scalar()


@pytest.mark.slow
def test_downstream_runs_once_per_matching_end_across_leader_kills(tmp_path, cluster,  # noqa: F811
                                                                    postgres_url):
    out = tmp_path / "down.log"
    write_jobs(tmp_path / "jobs.yaml", f"""
        - id: up
          command: ['{PY}', '-c', 'import random, sys, time; time.sleep(random.random() * 0.4);
            sys.exit(random.random() < 0.3)']
          trigger: {{type: interval, seconds: 0.5}}
          max_instances: 3
          retries: {{max: 1, delay: 0}}
        - id: down
          command: ['{PY}', '-c', 'import os, sys; open(sys.argv[1], "a").write(
            os.environ["TS_RUN_ID"] + "\\n")', '{out}']
          after: {{job: up, on: [succeeded, failed]}}
          max_instances: 50
    """)
    nodes = {"n1": cluster("n1"), "n2": cluster("n2")}
    engine = create_engine(postgres_url)
    try:
        for kill in range(2):
            time.sleep(4)   # upstream runs end all the time meanwhile
            victim = leader_of(nodes.values())
            wait_for(lambda v=victim: _running_on(engine, v), 10, 0.02, "a run on the leader")
            nodes[victim].kill()   # mid-run: ended by the rescue, or by the sweep at its start
            if not kill:
                time.sleep(12)   # past node_timeout (10 s): the new leader rescues its runs
            nodes[victim] = cluster(victim)
        time.sleep(3)
        survivor = next(n for n in nodes.values() if n.proc.poll() is None)
        survivor.call("/api/jobs/up/pause", "POST")
        wait_for(lambda: _settled(engine), 60, 0.5, "every run to end")
        with engine.connect() as conn:
            rows = conn.execute(sa.select(ts_runs.c.id, ts_runs.c.job_id, ts_runs.c.status,
                                          ts_runs.c.attempt, ts_runs.c.trigger,
                                          ts_runs.c.upstream_run)).all()
    finally:
        engine.dispose()
    ups = [r for r in rows if r.job_id == "up"]
    expected = {r.id for r in ups if r.status == "succeeded"
                or (r.status == "failed" and r.attempt > 1)}
    downs = [r for r in rows if r.job_id == "down" and r.trigger == "after"]
    per_end = collections.Counter(r.upstream_run for r in downs)
    assert len(expected) > 10
    assert any(r.status == "interrupted" for r in ups + downs)   # the kills hit runs
    assert set(per_end) == expected and set(per_end.values()) == {1}
    lines = collections.Counter(out.read_text().split())
    ran = {r.id for r in rows if r.job_id == "down" and r.status == "succeeded"}
    assert set(lines.values()) == {1}   # no run of down ran twice
    assert ran <= set(lines) <= {r.id for r in rows if r.job_id == "down"}
