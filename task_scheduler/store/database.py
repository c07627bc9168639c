"""The database the sub-stores share: the engine, this node's id, its dialect, and the one write
transaction (writers taking turns on SQLite, announcements after commit). It runs no domain
SQL: that is in the sub-stores (runs, queries, jobs, nodes, notes, sessions, retention)."""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import functools
import threading
from typing import Optional

import sqlalchemy as sa

from .dialect import dialect_for
from .schema import LIVENESS_LOCK_WAIT, ts_audit


class Database:
    """One engine and the transaction every write takes (the shape of APScheduler's
    SQLAlchemyJobStore: each operation one ``engine.begin()``).

    On PostgreSQL, times that nodes compare (leases, heartbeats, queues) come from the database
    clock; changes are announced with NOTIFY. SQLite has one node: its clock is this machine's,
    and its writers take turns on a lock before they begin (never inside a transaction)."""

    def __init__(self, engine: sa.Engine, node: str):
        self.engine, self.node = engine, node
        self.dialect = dialect_for(engine)
        self._write_lock = self.dialect.write_lock()
        self.on_commit: list = []   # (channel, payload) after each commit: this process's bus
        self.committed: list = []   # called with nothing after every write (the change feed)
        self.waiting: collections.deque = collections.deque()   # one item per writer waiting
        self._audit = threading.local()   # audit rows for this thread's next write (AuditStore)

    @property
    def clustered(self) -> bool:
        """Several nodes may share this database (PostgreSQL): leases, heartbeats, NOTIFY."""
        return self.dialect.clustered

    @contextlib.contextmanager
    def write(self, quiet: bool = False):
        """One write transaction; ``notify(conn, ...)`` inside it announces after commit.
        ``quiet``: it changes no run, job or schedule (a heartbeat, the lease's renewal), so
        the ``committed`` callbacks are not told (what they keep stays fresh)."""
        with self.taking_turn(), self.engine.begin() as conn:
            conn.info["ts.notes"], conn.info["ts.quiet"] = [], quiet
            yield conn
            self._append_audit(conn)
            notes = conn.info.pop("ts.notes")
            quiet = conn.info.pop("ts.quiet")
        for channel, payload in notes:
            for callback in self.on_commit:
                callback(channel, payload)
        if not quiet:
            self.tell_committed()

    @contextlib.contextmanager
    def taking_turn(self):
        """A writer's turn (SQLite's write lock), counted while it waits: retention gives way
        while writers wait."""
        self.waiting.append(None)
        with self.turn():
            self.waiting.pop()      # deque append/pop are atomic: a count without a lock
            yield

    def tell_committed(self) -> None:
        """Runs, jobs or schedules changed: what the ``committed`` callbacks keep is stale."""
        for callback in self.committed:
            callback()

    @staticmethod
    def quiet(conn) -> None:
        """This write transaction changed nothing after all (a claim that found no run): it
        commits as ``write(quiet=True)`` does."""
        conn.info["ts.quiet"] = True

    def audit_rows(self) -> Optional[list]:
        return getattr(self._audit, "rows", None)

    def set_audit_rows(self, rows: Optional[list]) -> None:
        self._audit.rows = rows

    def discard_audit(self) -> None:
        """This write transaction changed nothing after all: the audit rows attached to this
        thread (``AuditStore.attached``) are not written, in it or after it."""
        rows = self.audit_rows()
        if rows:
            rows.clear()

    def changed(self, rowcount: int) -> bool:
        """Whether a statement changed rows; none: ``discard_audit``."""
        if not rowcount:
            self.discard_audit()
        return bool(rowcount)

    def _append_audit(self, conn) -> None:
        """The audit rows attached to this thread, in this transaction: taken once."""
        rows = self.audit_rows()
        if rows:
            conn.execute(ts_audit.insert().values(at=self.now()), list(rows))
            rows.clear()

    def turn(self):
        """The write lock on SQLite (writers take turns before they begin); nothing elsewhere."""
        return self._write_lock or contextlib.nullcontext()

    def notify(self, conn, channel: str, ids: Optional[list] = None) -> None:
        payload = {"node": self.node, "ids": ids if ids is None or len(ids) < 200 else None}
        conn.info["ts.notes"].append((channel, payload))
        self.dialect.publish(conn, self.channel_prefix + channel, payload)

    @functools.cached_property
    def channel_prefix(self) -> str:
        return self.dialect.channel_prefix(self.engine)

    def now(self):
        """The database clock, naive UTC, as a SQL expression (a value on SQLite)."""
        return self.dialect.now()

    def db_time(self) -> dt.datetime:
        with self.engine.connect() as conn:
            return self.dialect.now_value(conn)

    def ping(self) -> None:
        """One round trip (the health check); raises the driver's error when it fails."""
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def bounded(self, conn) -> None:
        """Lease, heartbeat and rescue statements wait at most ``LIVENESS_LOCK_WAIT`` for a
        lock another node holds (a frozen node keeps its locks until the server ends its
        session): past it they fail, and the cluster loop tries again on its next tick."""
        self.dialect.bound_lock_wait(conn, LIVENESS_LOCK_WAIT)
