"""The store's decisions over random workflows (issue 23): two nodes (two stores, two
threads) claim steps and record their ends in random batches and order, each end deciding the
dependents in its own transaction; every step must end exactly as the oracle says, each
attempt's row once, and each workflow run end once with the worst status. On PostgreSQL the
ends of siblings are truly concurrent (the parent row's lock serializes them)."""

from __future__ import annotations

import datetime as dt
import json
import random
import threading
import time

import pytest
import sqlalchemy as sa

from task_scheduler.store import Admission, Store
from task_scheduler.store.schema import create_engine, migrate, new_run_id, ts_runs

from workflow_oracle import expected, outcome, random_graph

pytestmark = pytest.mark.both_databases
WORKFLOWS = 12


def _node(url: str, name: str) -> Store:
    return Store(create_engine(url), name)


def _work(store: Store, seeds: dict, graphs: dict, stop: threading.Event, rng, errors):
    """Claim this node's share of queued steps and end them with their drawn outcomes, a
    random few per transaction."""
    admission = Admission(("",), 4, {"flow": (1, None)})
    try:
        while not stop.is_set():
            started, _ = store.runs.claim(admission)
            if not started:
                time.sleep(rng.random() * 0.01)
                continue
            rng.shuffle(started)
            while started:
                cut = rng.randint(1, 3)
                batch, started = started[:cut], started[cut:]
                with store.write() as conn:
                    now = store.dialect.now_value(conn)
                    store.runs.finish_runs(conn, [(r["id"], {
                        "status": _drawn(r, seeds, graphs), "started_at": now,
                        "finished_at": now, "stdout": "line\n"}) for r in batch])
                time.sleep(rng.random() * 0.003)
    except Exception as exc:   # reported by the test
        errors.append(exc)
        raise


def _drawn(row: dict, seeds: dict, graphs: dict) -> str:
    parent = row["parent_run"]
    base = graphs[parent]["base"].get(row["step_id"], 1)
    return outcome(seeds[parent], row["step_id"], row["attempt"] - base + 1)


def test_random_workflows_end_as_the_rules_say_with_two_nodes(database_url):
    one, two = _node(database_url, "n1"), _node(database_url, "n2")
    migrate(one.engine)
    rng = random.Random(2326)
    seeds, graphs = {}, {}
    at = dt.datetime(2026, 1, 1)
    for index in range(WORKFLOWS):
        graph = random_graph(rng, 10)
        run_id = new_run_id()
        one.runs.queue_runs([{"id": run_id, "job_id": "flow", "trigger": "manual",
                              "scheduled_at": at + dt.timedelta(seconds=index),
                              "status": "queued", "node": "n1"}])
        seeds[run_id], graphs[run_id] = 1000 + index, graph
    stop, errors = threading.Event(), []
    threads = [threading.Thread(target=_work, args=(store, seeds, graphs, stop,
                                                    random.Random(i), errors))
               for i, store in enumerate((one, two))]
    for thread in threads:
        thread.start()
    for run_id, graph in graphs.items():   # started while the nodes already work
        assert one.workflows.start(run_id, graph)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and not errors:
            with one.engine.connect() as conn:
                left = conn.execute(sa.select(sa.func.count()).where(
                    ts_runs.c.id.in_(list(graphs)), ts_runs.c.status == "running")).scalar()
            if not left:
                break
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert not errors, errors
    with one.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.select(ts_runs))]
    nodes = set()
    for run_id, graph in graphs.items():
        final, tries, status = expected(graph, seeds[run_id])
        parent = next(r for r in rows if r["id"] == run_id)
        assert parent["status"] == status, (graph, parent)
        kept = json.loads(parent["workflow"])
        assert [s["id"] for s in kept["steps"]] == [s["id"] for s in graph["steps"]]
        for step in graph["steps"]:
            mine = sorted((r for r in rows if r["parent_run"] == run_id and
                           r["step_id"] == step["id"]), key=lambda r: r["attempt"])
            assert [r["attempt"] for r in mine] == list(range(1, len(mine) + 1))
            assert len(mine) == max(tries[step["id"]], 1), (step, mine)
            assert mine[-1]["status"] == final[step["id"]], (graph, step, mine)
            assert all(r["status"] not in ("queued", "running") for r in mine)
            nodes |= {r["node"] for r in mine if r["node"]}
            if final[step["id"]] == "skipped":
                assert mine[0]["node"] is None and "when" in mine[0]["error"] \
                    or "upstream" in mine[0]["error"]
    assert nodes == {"n1", "n2"}   # both nodes ran steps
    for store in (one, two):
        store.engine.dispose()
