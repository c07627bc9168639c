"""Run starts, written on a connection of their own: one statement, committed on its own, per
batch of starts (the workers waiting at once: ``groupcommit.GroupCommit``).

A start is the only write on a run's path that a worker waits for, and its batches are small
and many (one per handful of runs). Through SQLAlchemy's transaction a batch of ten took
~1.1 ms on SQLite and ~3.6 ms on PostgreSQL on the 2-core machine, most of it Python; the same
UPDATE on the driver's connection in autocommit mode takes ~0.2 and ~0.9 ms (one round trip on
PostgreSQL instead of BEGIN, UPDATE, COMMIT). One UPDATE is atomic by itself."""

from __future__ import annotations

import datetime as dt
import logging
import threading

import sqlalchemy as sa

from .database import Database
from .schema import ts_runs

log = logging.getLogger("task_scheduler")

# Still this node's claim, not started: a run rescued while this node was silent, or cancelled
# before it started, is left alone (its id is not returned).
_SQLITE = ("UPDATE ts_runs SET status = 'running', started_at = ? WHERE id IN ({ids}) "
           "AND status = 'queued' AND node = ? RETURNING id")
_POSTGRES = ("UPDATE ts_runs SET status = 'running', started_at = %s WHERE id = ANY(%s) "
             "AND status = 'queued' AND node = %s RETURNING id")
# The same through the shared transaction, for an in-memory SQLite database (each connection of
# its pool is another database): an embedded service's tests may use one.
_SHARED = ts_runs.update().where(
    ts_runs.c.id.in_(sa.bindparam("ids", expanding=True)), ts_runs.c.status == "queued",
    ts_runs.c.node == sa.bindparam("this_node")).values(
    status="running", started_at=sa.bindparam("start_time")).returning(ts_runs.c.id)


class StartWriter:
    """Marks claimed runs running, on a driver connection kept for it; calls take turns on it
    (the group commit's writes never overlap anyway). A failed call drops the connection, the
    next opens another."""

    def __init__(self, db: Database):
        self.db, self.node = db, db.node
        dialect = db.engine.dialect
        self._sqlite = dialect.name == "sqlite"
        # the text SQLAlchemy stores a DateTime as on SQLite (None: the driver adapts it)
        self._to_db = ts_runs.c.started_at.type.dialect_impl(dialect).bind_processor(dialect)
        self._raw = None
        self._lock = threading.Lock()
        self._shared = self._sqlite and db.engine.url.database in (None, "", ":memory:")
        self._closed = False

    def mark(self, run_ids: list[str], started_at: dt.datetime) -> list[bool]:
        """Per run, whether it was still this node's claim and now reads running."""
        if self._closed:   # the runner stopped: nothing more starts here
            return [False] * len(run_ids)
        if self._shared:
            with self.db.write() as conn:
                started = set(conn.execute(_SHARED, {"ids": run_ids, "this_node": self.node,
                                                     "start_time": started_at}).scalars())
            return [run_id in started for run_id in run_ids]
        at = self._to_db(started_at) if self._to_db else started_at
        with self.db.taking_turn(), self._lock:
            started = self._execute(run_ids, at)
        self.db.tell_committed()
        return [run_id in started for run_id in run_ids]

    def _execute(self, run_ids: list[str], at) -> set:
        raw = self._connection()
        try:
            cursor = raw.cursor()
            try:
                if self._sqlite:
                    cursor.execute(_SQLITE.format(ids=",".join("?" * len(run_ids))),
                                   [at, *run_ids, self.node])
                else:
                    cursor.execute(_POSTGRES, [at, list(run_ids), self.node])
                return {row[0] for row in cursor.fetchall()}
            finally:
                cursor.close()
        except Exception:
            self.close()
            raise

    def _connection(self):
        if self._raw is None:
            raw = self.db.engine.raw_connection()
            try:
                if self._sqlite:
                    raw.driver_connection.isolation_level = None   # each statement commits
                else:
                    raw.driver_connection.autocommit = True
            except Exception:
                raw.invalidate()
                raise
            self._raw = raw
        return self._raw

    def close(self, final: bool = False) -> None:
        """Drop the connection (not back to the pool: it is in autocommit mode); ``final``:
        the runner stopped, and no start is written after this."""
        self._closed = self._closed or final
        raw, self._raw = self._raw, None
        if raw is not None and raw.is_valid:
            try:
                raw.invalidate()
            except Exception as exc:   # closing a broken connection: nothing left to do
                log.debug("start writer: closing its connection: %s", exc)
