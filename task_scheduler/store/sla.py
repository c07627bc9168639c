"""Promises kept (issue 26): the runs the SLA watch looks at, breaches recorded once with their
notifications and history rows in one fenced transaction, heartbeat pings as runs, and ping
tokens (only their hashes). It decides no breach and builds no notification: sla.py does."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from typing import Optional

import sqlalchemy as sa

from .database import Database
from .nodes import NodeStore
from .notes import NoteStore
from .runs import RunStore
from .schema import _SUMMARY_COLUMNS, ts_ping_tokens, ts_runs, ts_sla_breaches
from ..timeutil import _utcnow


class SlaStore:
    """ts_sla_breaches and ts_ping_tokens, and the reads of ts_runs the watch needs."""

    def __init__(self, db: Database, runs: RunStore, notes: NoteStore, nodes: NodeStore):
        self.db, self._runs, self._notes, self._nodes = db, runs, notes, nodes

    def open_runs(self, job_ids: list) -> tuple[dt.datetime, list]:
        """The database's time, and the queued and running runs of these jobs: the partial
        queue index and ix_ts_runs_status keep this to the runs going on, however long the
        history is."""
        with self.db.engine.connect() as conn:
            now = self.db.dialect.now_value(conn)
            if not job_ids:
                return now, []
            rows = conn.execute(sa.select(*_SUMMARY_COLUMNS).where(
                ts_runs.c.status.in_(("queued", "running")),
                ts_runs.c.job_id.in_(job_ids))).all()
        return now, rows

    def record(self, breaches: list[dict], rows: list[dict], notes: dict,
               epoch: Optional[int]) -> list[dict]:
        """In one write fenced by the lease ``epoch``: the history ``rows`` the breaches
        need (an overdue heartbeat's run), each breach unless its key (job, event, subject) is
        recorded already, and the ``notes`` (by breach id) of those recorded now. Returns
        the breaches recorded now: a second look, or a new leader, records none twice."""
        recorded = []
        with self.db.write() as conn:
            self._runs.insert_runs(conn, rows)
            for breach in breaches:
                if self.db.dialect.insert_new(conn, ts_sla_breaches, breach):
                    recorded.append(breach)
                    self._notes.insert_notes(conn, notes.get(breach["id"], []))
            if recorded:
                self.db.notify(conn, "ts_runs")   # live pages show the breach
            self._nodes.fence(conn, epoch)   # last: the lease row is locked for the commit only
        return recorded

    def record_ping(self, run: dict, notes: list[dict]) -> None:
        """A heartbeat job's ping as an ended run, with the notifications its end calls for."""
        with self.db.write() as conn:
            self._runs.insert_runs(conn, [run])
            self._notes.insert_notes(conn, notes)
            self.db.notify(conn, "ts_runs")

    def breaches_of(self, run_ids: list) -> dict:
        """{run id: [breach rows, oldest first]} of these runs (ix_ts_sla_breaches_run)."""
        if not run_ids:
            return {}
        with self.db.engine.connect() as conn:
            rows = conn.execute(sa.select(ts_sla_breaches).where(
                ts_sla_breaches.c.run_id.in_(run_ids)).order_by(ts_sla_breaches.c.id)).all()
        found: dict = {}
        for row in rows:
            found.setdefault(row.run_id, []).append(row)
        return found

    def recent(self, since: dt.datetime, limit: int) -> list:
        """Breaches detected since ``since``, newest first."""
        with self.db.engine.connect() as conn:
            return conn.execute(sa.select(ts_sla_breaches).where(
                ts_sla_breaches.c.detected_at >= since).order_by(
                ts_sla_breaches.c.detected_at.desc()).limit(limit)).all()

    def counts(self) -> list:
        """(job_id, event, breaches) of every breach kept: what /metrics counts."""
        with self.db.engine.connect() as conn:
            return conn.execute(sa.select(
                ts_sla_breaches.c.job_id, ts_sla_breaches.c.event, sa.func.count()).group_by(
                ts_sla_breaches.c.job_id, ts_sla_breaches.c.event).order_by(
                ts_sla_breaches.c.job_id, ts_sla_breaches.c.event)).all()

    # ping tokens

    def set_ping_token(self, job_id: str, token: str) -> None:
        """Create or replace the job's ping token; only its hash is kept."""
        with self.db.write() as conn:
            conn.execute(ts_ping_tokens.delete().where(ts_ping_tokens.c.job_id == job_id))
            conn.execute(ts_ping_tokens.insert().values(
                job_id=job_id, token_hash=token_hash(token), created_at=_utcnow()))

    def ping_token_matches(self, job_id: str, token: str) -> bool:
        with self.db.engine.connect() as conn:
            stored = conn.execute(sa.select(ts_ping_tokens.c.token_hash).where(
                ts_ping_tokens.c.job_id == job_id)).scalar()
        return stored is not None and hmac.compare_digest(stored, token_hash(token))

    def ping_token_created(self, job_id: str) -> Optional[dt.datetime]:
        with self.db.engine.connect() as conn:
            return conn.execute(sa.select(ts_ping_tokens.c.created_at).where(
                ts_ping_tokens.c.job_id == job_id)).scalar()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
