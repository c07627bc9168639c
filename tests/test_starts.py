"""The start writer: a batch of claimed runs marked running in one statement of its own, only
those still this node's claim, on both databases; a dropped connection is replaced, and once
the runner stopped nothing starts."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from task_scheduler.store import Store
from task_scheduler.store.schema import create_engine, migrate, ts_runs

pytestmark = pytest.mark.both_databases

NOW = dt.datetime(2026, 12, 5, 6, 0, 0, 123456)


@pytest.fixture
def store(database_url):
    engine = create_engine(database_url)
    migrate(engine)
    store = Store(engine, "n1")
    yield store
    store.starts.close(final=True)
    engine.dispose()


def _queue(store, rows):
    with store.write() as conn:
        conn.execute(ts_runs.insert(), [
            dict(id=i, job_id=f"job-{i}", trigger="manual", attempt=1, scheduled_at=NOW,
                 due_at=NOW, status=status, run_on="", node=node) for i, status, node in rows])


def _rows(store):
    with store.engine.connect() as conn:
        return {r.id: (r.status, r.started_at) for r in conn.execute(
            sa.select(ts_runs.c.id, ts_runs.c.status, ts_runs.c.started_at))}


def test_only_this_nodes_claimed_runs_start_and_each_is_told(store):
    _queue(store, [("a", "queued", "n1"), ("b", "queued", "n2"), ("c", "queued", None),
                   ("d", "running", "n1"), ("e", "cancelled", "n1"), ("f", "queued", "n1")])
    told = []
    store.committed.append(lambda: told.append(1))
    assert store.starts.mark(["a", "b", "c", "d", "e", "f", "gone"], NOW) == \
        [True, False, False, False, False, True, False]
    rows = _rows(store)
    assert rows["a"] == ("running", NOW) and rows["f"] == ("running", NOW)
    assert rows["b"] == ("queued", None) and rows["c"] == ("queued", None)
    assert rows["e"] == ("cancelled", None)
    assert told, "readers that keep states hear of the starts"
    # marking again starts nothing: a start is written once
    assert store.starts.mark(["a", "f"], NOW) == [False, False]


def test_a_dropped_connection_is_replaced_by_the_next_batch(store):
    _queue(store, [("a", "queued", "n1"), ("b", "queued", "n1")])
    assert store.starts.mark(["a"], NOW) == [True]
    store.starts._raw.driver_connection.close()   # the server closed it, say
    with pytest.raises(Exception) as failed:  # noqa: B017  (the driver's own error class)
        store.starts.mark(["b"], NOW)
    assert "closed" in str(failed.value).lower(), failed.value
    assert _rows(store)["b"] == ("queued", None)
    assert store.starts.mark(["b"], NOW) == [True]


def test_nothing_starts_once_the_runner_stopped(store):
    _queue(store, [("a", "queued", "n1")])
    store.starts.close(final=True)
    assert store.starts.mark(["a"], NOW) == [False]
    assert _rows(store)["a"] == ("queued", None)


def test_an_in_memory_sqlite_database_starts_through_the_shared_transaction():
    engine = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool,
                              connect_args={"check_same_thread": False})
    migrate(engine)
    store = Store(engine, "n1")
    _queue(store, [("a", "queued", "n1")])
    assert store.starts.mark(["a"], NOW) == [True]
    assert _rows(store)["a"] == ("running", NOW)
