"""Execution scale-out: runs started per second by 1, 2 and 3 nodes on one PostgreSQL.

    python bench/scaleout_bench.py [--workers 10] [--nodes 1,2,3] [--seconds 15] [--db URL]

Each configuration gets a schema of its own (created here, dropped at the end) and that many
real ``python -m task_scheduler`` processes with ``--workers`` worker threads each. The jobs are
python functions that sleep one second, offered at three times one node's capacity: ``3 x
workers`` interval jobs firing every second (max_instances and misfire_grace_time high enough that
nothing offered is dropped, so a backlog queues up where the nodes cannot keep up). After a
warm-up the bench counts, from ts_runs, the runs started within a window of ``--seconds`` and
prints runs started per second, the ratio to one node and the goal (2.8x with three nodes; the
offered load is 3x, so 3.0x is the ceiling). It also prints how the runs spread over the nodes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from failover_bench import Node, fresh_schema, stop_and_drop, wait_for  # noqa: E402  (a real node, as that bench starts it)

GOAL = 2.8   # runs started per second with 3 nodes over 1 node's (the goal)
JOBS_MODULE = "import time\n\ndef nap():\n    time.sleep(1)\n"


def measure(db: str, nodes: int, args) -> dict:
    """Runs started per second by ``nodes`` nodes over the window, and per node."""
    admin, engine, url, schema = fresh_schema(db, "scaleout")
    folder = Path(tempfile.mkdtemp(prefix="scaleout-bench-"))
    (folder / "benchjobs.py").write_text(JOBS_MODULE)
    jobs = folder / "jobs.yaml"
    jobs.write_text("".join(
        f"- {{id: nap{i}, func: 'benchjobs:nap', max_instances: 100, misfire_grace_time: 3600, "
        f"trigger: {{type: interval, seconds: 1}}}}\n" for i in range(3 * args.workers)))
    os.environ["TS_WORKERS"] = str(args.workers)
    running: list[Node] = []
    try:
        running.extend(Node(f"n{i + 1}", folder, url, jobs) for i in range(nodes))
        wait_for(lambda: all(n.answers() for n in running), 60, "nodes answering", 0.2)
        wait_for(lambda: started_any(engine), 60, "a run started", 0.2)
        time.sleep(args.warmup)   # counted from the first start: the nodes are busy by then
        began = db_now(engine)
        time.sleep(args.seconds)
        return count(engine, began, began + dt.timedelta(seconds=args.seconds), args.seconds)
    finally:
        stop_and_drop(running, engine, admin, schema)


def db_now(engine: sa.Engine) -> dt.datetime:
    """The database's clock, the one started_at is written with (naive UTC)."""
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT timezone('UTC', clock_timestamp())")).scalar()


def started_any(engine: sa.Engine) -> bool:
    with engine.connect() as conn:
        return conn.execute(sa.text(
            "SELECT 1 FROM ts_runs WHERE started_at IS NOT NULL LIMIT 1")).first() is not None


def count(engine: sa.Engine, begin: dt.datetime, end: dt.datetime, seconds: float) -> dict:
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT node, count(*) FROM ts_runs WHERE started_at >= :b AND started_at < :e "
            "GROUP BY node ORDER BY node"), {"b": begin, "e": end}).all()
        queued = conn.execute(sa.text(
            "SELECT count(*) FROM ts_runs WHERE status = 'queued'")).scalar()
    return {"rate": sum(n for _, n in rows) / seconds,
            "per_node": {node: n / seconds for node, n in rows}, "queued": queued}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--nodes", default="1,2,3")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--db", default=os.environ.get(
        "TS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.nodes.split(",")]
    results = {n: measure(args.db, n, args) for n in counts}
    base = results[counts[0]]["rate"]
    print(f"\n{args.workers} workers per node, offered {3 * args.workers} runs/s of 1 s each "
          f"(3x one node), window {args.seconds:g} s, python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs")
    print(f"{'nodes':>5} {'runs started/s':>15} {'ratio':>7} {'queued at end':>14}  per node")
    for n, r in results.items():
        spread = ", ".join(f"{node} {rate:.1f}" for node, rate in r["per_node"].items())
        print(f"{n:>5} {r['rate']:>15.1f} {r['rate'] / base:>6.2f}x {r['queued']:>14}  {spread}")
    if 1 in results and 3 in results:
        ratio = results[3]["rate"] / results[1]["rate"]
        print(f"3 nodes / 1 node: {ratio:.2f}x; goal >= {GOAL}x: "
              f"{'MET' if ratio >= GOAL else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
