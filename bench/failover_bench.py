"""Failover time of a cluster of nodes on one PostgreSQL, against published figures.

    python bench/failover_bench.py [--kills 10] [--stops 10] [--nodes 3] [--jobs 1] [--db URL]

Graceful stops and kills side by side: --stops times the leader is stopped with SIGTERM while
it runs a long command (it hands the lease over first, then waits for the run), --kills times
it is killed with SIGKILL; each is measured the same way, below.

Starts --nodes real `python -m task_scheduler` processes on a schema of their own (created here,
dropped at the end) with --jobs jobs firing every second, then --kills times: waits until the
leader has fired for a few seconds, kills it with SIGKILL at a random moment of a second, starts
a replacement node, and measures the failover: from the kill to the new leader's first fire (the
first run row recorded with the new lease epoch; its id holds its creation time, and the
database is on this machine, so both times come from one clock). Also shown: when the lease was
taken (acquired_at), and when a worker started that first run. At the end ts_runs is read for
duplicate fires (one (job, time) twice) and lost fire times (a gap in a job's 1 s sequence).
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
GOAL = 10.0   # seconds: our p99 failover goal
ANCHORS = [   # (system, published figure, low and high seconds)
    ("Quartz clustered JDBC store", "15-22 s to recover a dead node's jobs", 15, 22),
    ("Airflow HA scheduler", "30 s to declare a scheduler dead", 30, 30),
    ("Cronicle", "up to 60 s for a backup server to take over", 60, 60),
    ("APScheduler 4", "30 s lease on its data store", 30, 30),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Node:
    def __init__(self, name: str, folder: Path, url: str, jobs: Path):
        self.name, self.port = name, free_port()
        self.log = folder / f"{name}.log"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TS_LOG_LEVEL": "WARNING"}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "task_scheduler", "--db", url, "--port", str(self.port),
                 "--node-id", name, "--config", str(jobs)],
                cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT)

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/status",
                                        timeout=2) as resp:
                return "role" in json.load(resp)
        except OSError:
            return False


def wait_for(predicate, timeout: float, what: str, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout}s")
        time.sleep(interval)


def lease(engine: sa.Engine):
    """The live lease: (holder, epoch, acquired_at), or None."""
    with engine.connect() as conn:
        return conn.execute(sa.text(
            "SELECT holder, epoch, acquired_at FROM ts_lease WHERE name = 'leader' "
            "AND expires_at > timezone('UTC', now())")).first()


def first_fire(engine: sa.Engine, epoch: int):
    """The first fire recorded by ``epoch`` that is to run: (id, started_at). Not a missed
    one, nor one skipped because a run of the job still counts as going (the killed leader's
    run, until it is rescued): those never start."""
    with engine.connect() as conn:
        return conn.execute(sa.text(
            "SELECT id, started_at FROM ts_runs WHERE epoch = :e "
            "AND status NOT IN ('missed', 'skipped') "
            "AND trigger IN ('schedule', 'catchup') ORDER BY id LIMIT 1"), {"e": epoch}).first()


def fired_for(engine: sa.Engine, epoch: int) -> float:
    with engine.connect() as conn:
        span = conn.execute(sa.text(
            "SELECT max(scheduled_at) - min(scheduled_at) FROM ts_runs "
            "WHERE epoch = :e AND status <> 'missed'"), {"e": epoch}).scalar()
    return span.total_seconds() if span is not None else 0.0


def run_time(run_id: str) -> float:
    return int(run_id[:14], 16) / 1e6


def utc_seconds(moment: dt.datetime) -> float:
    return moment.replace(tzinfo=dt.UTC).timestamp()


def percentile(values: list, p: float) -> float:
    """Nearest rank: with 10 samples, p99 is the largest."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def long_running_on(engine: sa.Engine, node: str) -> bool:
    with engine.connect() as conn:
        return bool(conn.execute(sa.text(
            "SELECT 1 FROM ts_runs WHERE job_id = 'long' AND status = 'running' AND node = :n"),
            {"n": node}).first())


def kill_once(engine, nodes, spawn, rand, how: str = "kill") -> dict:
    current = wait_for(lambda: lease(engine), 30, "leader")
    wait_for(lambda: fired_for(engine, current.epoch) >= 3, 30, "3 s of fires by the leader")
    if how == "stop":   # the case that took 30 s: the leader has a long run to wait for
        wait_for(lambda: long_running_on(engine, current.holder), 30, "a long run on it")
    time.sleep(rand.random())   # land anywhere in a second: sometimes inside a commit
    victim = next(n for n in nodes if n.name == current.holder)
    killed = time.time()
    victim.proc.send_signal(signal.SIGKILL if how == "kill" else signal.SIGTERM)
    nodes.remove(victim)
    nodes.append(spawn())

    def taken():
        row = lease(engine)
        return row if row is not None and row.epoch > current.epoch else None
    new = wait_for(taken, 30, "new leader", 0.01)
    fire = wait_for(lambda: first_fire(engine, new.epoch), 30, "first fire of the new leader")
    started = wait_for(lambda: first_fire(engine, new.epoch).started_at, 30, "its run started")
    victim.proc.wait(60)
    return {"how": how, "from": victim.name, "to": new.holder, "epoch": new.epoch,
            "lease": utc_seconds(new.acquired_at) - killed,
            "fire": run_time(fire.id) - killed, "started": utc_seconds(started) - killed}


def history(engine: sa.Engine) -> tuple[int, int, int]:
    """(fire rows, duplicate (job, time) pairs, gaps in a job's 1 s sequence)."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT job_id, scheduled_at FROM ts_runs WHERE trigger IN ('schedule', 'catchup') "
            "AND job_id LIKE 'j%' ORDER BY job_id, scheduled_at")).all()
    duplicates = len(rows) - len(set(rows))
    steps = (dt.timedelta(0), dt.timedelta(seconds=1))   # a duplicate, or the next second
    gaps = sum(1 for a, b in itertools.pairwise(rows)
               if a.job_id == b.job_id and b.scheduled_at - a.scheduled_at not in steps)
    return len(rows), duplicates, gaps


def report(events: list, totals: tuple, args) -> None:
    stops = [k for k in events if k["how"] == "stop"]
    kills = [k for k in events if k["how"] == "kill"]
    print(f"\n{len(stops)} graceful stops (SIGTERM, a long run going) and {len(kills)} kills "
          f"(SIGKILL) of the leader, {args.nodes} nodes, {args.jobs} job(s) every second; "
          f"lease_ttl 5 s, renewed every 1 s")
    print(f"{'#':>3} {'how':>4}  {'from':>5} -> {'to':<5} {'epoch':>5}  {'lease taken':>11}  "
          f"{'first fire':>10}  {'run started':>11}")
    for i, k in enumerate(events, 1):
        print(f"{i:>3} {k['how']:>4}  {k['from']:>5} -> {k['to']:<5} {k['epoch']:>5}  "
              f"{k['lease']:>10.2f}s  {k['fire']:>9.2f}s  {k['started']:>10.2f}s")
    print(f"\n{'takeover, seconds after the signal':<36} {'graceful stop':>22} {'kill -9':>22}")
    for label, key in (("lease taken (p50 / p99 / max)", "lease"),
                       ("first fire (p50 / p99 / max)", "fire")):
        cells = [" / ".join(f"{percentile([k[key] for k in group], p):.2f}" for p in (50, 99))
                 + f" / {max(k[key] for k in group):.2f}" if group else "-"
                 for group in (stops, kills)]
        print(f"{label:<36} {cells[0]:>22} {cells[1]:>22}")
    if not kills:
        return
    fires = [k["fire"] for k in kills]
    p50, p99, worst = percentile(fires, 50), percentile(fires, 99), max(fires)
    rows, duplicates, gaps = totals
    print(f"\nfailover (kill -> new leader's first fire): p50 {p50:.2f} s, p99 {p99:.2f} s, "
          f"max {worst:.2f} s")
    print(f"fire rows {rows}: duplicate fires {duplicates}, lost fire times {gaps}")
    print(f"our p99 goal {GOAL:g} s: measured p99 is {p99 / GOAL:.2f}x the goal\n")
    print(f"{'system':<30} {'published figure':<44} {'x our goal':>10} {'x our p99':>10}")
    print(f"{'task-scheduler (measured)':<30} {f'p99 {p99:.1f} s':<44} {p99 / GOAL:>10.2f} "
          f"{1:>10.1f}")
    for name, figure, low, high in ANCHORS:
        print(f"{name:<30} {figure:<44} {ratio(low, high, GOAL):>10} {ratio(low, high, p99):>10}")


def ratio(low: float, high: float, base: float) -> str:
    return f"{low / base:.1f}" if low == high else f"{low / base:.1f}-{high / base:.1f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--stops", type=int, default=10)
    parser.add_argument("--nodes", type=int, default=3, choices=(2, 3))
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--db", default=os.environ.get(
        "TS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rand = random.Random(seed)
    admin, engine, url, schema = fresh_schema(args.db, "ts_bench")
    folder = Path(tempfile.mkdtemp(prefix="failover-bench-"))
    jobs = folder / "jobs.yaml"
    jobs.write_text("".join(f"- {{id: j{i}, command: 'true', trigger: {{type: interval, "
                            f"seconds: 1}}}}\n" for i in range(args.jobs)) +
                    "- {id: long, command: 'sleep 8', trigger: {type: interval, seconds: 2}}\n")
    names = (f"n{i}" for i in itertools.count(1))
    nodes: list[Node] = []
    print(f"schema {schema}, node logs in {folder} (kept if this fails), seed {seed}")
    try:
        nodes.extend(Node(next(names), folder, url, jobs) for _ in range(args.nodes))
        wait_for(lambda: all(n.answers() for n in nodes), 60, "nodes answering", 0.2)
        kills = []
        order = ["stop"] * args.stops + ["kill"] * args.kills
        rand.shuffle(order)
        for i, how in enumerate(order):
            kills.append(kill_once(engine, nodes, lambda: Node(next(names), folder, url, jobs),
                                   rand, how))
            k = kills[-1]
            print(f"{how} {i + 1}/{len(order)}: {k['from']} -> {k['to']}, first fire "
                  f"{k['fire']:.2f} s after the signal", flush=True)
        wait_for(lambda: fired_for(engine, kills[-1]["epoch"]) >= 3, 30, "fires after the last")
        report(kills, history(engine), args)
        shutil.rmtree(folder)
        return 0
    except Exception:
        for node in nodes:
            print(f"--- {node.log}:\n{node.log.read_text(errors='replace')[-3000:]}")
        raise
    finally:
        stop_and_drop(nodes, engine, admin, schema)


def fresh_schema(db: str, prefix: str) -> tuple[sa.Engine, sa.Engine, str, str]:
    """A new schema on the PostgreSQL ``db``: an engine on the database, one on the schema, the
    URL nodes are given to use it, and its name (``stop_and_drop`` drops it)."""
    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(db.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    url = f"{db}{'&' if '?' in db else '?'}options=-csearch_path%3D{schema}"
    return admin, sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1)), \
        url, schema


def stop_and_drop(nodes: list, engine: sa.Engine, admin: sa.Engine, schema: str) -> None:
    """Stop the nodes (TERM, KILL after 30 s) and drop their schema."""
    for node in nodes:
        node.proc.send_signal(signal.SIGTERM)
    for node in nodes:
        try:
            node.proc.wait(30)
        except subprocess.TimeoutExpired:
            node.proc.kill()
    engine.dispose()
    with admin.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


if __name__ == "__main__":
    sys.exit(main())
