"""Retention: finished runs past their age or count, GUI sessions past expiry, old sent
notifications, nodes silent for a day. Deletes in short chunks that give way to every other
writer: a fire waits one chunk at most. It never deletes a run that has not ended."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time

import sqlalchemy as sa

from ..models import FINAL_STATUSES
from .database import Database
from .schema import (
    PRUNE_CHUNK, PRUNE_CHUNK_S, ts_audit, ts_nodes, ts_notifications, ts_runs, ts_sessions,
    ts_sla_breaches)
from ..timeutil import _utcnow

log = logging.getLogger("task_scheduler")


_parent = ts_runs.alias("parent")
# A step of a workflow run still going stays: its row is what the run's next decision reads
# (store/workflows.py); gone, the step would look not yet started and run again.
_NOT_A_LIVE_STEP = sa.or_(ts_runs.c.parent_run.is_(None), ~sa.exists().where(
    _parent.c.id == ts_runs.c.parent_run, _parent.c.status == "running"))


# One statement for every job's probe (built once: building it per job was most of a probe's
# Python).
_EDGE = sa.select(ts_runs.c.id).where(ts_runs.c.job_id == sa.bindparam("job")).order_by(
    ts_runs.c.id.desc()).offset(sa.bindparam("skip")).limit(1)


_PAUSE = threading.Event()   # never set: a short wait that gives the GIL away


class Retention:
    """Prunes history in chunks, each its own transaction begun in a gap between writers."""

    def __init__(self, db: Database):
        self.db = db

    def prune(self, keep_runs: int, keep_days: float, stopping=lambda: False,
              keep_audit_days: float = 365) -> int:
        """Retention: finished runs older than keep_days, and all but keep_runs per job; audit
        rows older than keep_audit_days (the only delete of the audit log); GUI
        sessions past their expiry; nodes silent for a day. Runs go in chunks of a few ms, each
        its own transaction begun only when no other writer waits: fires wait one chunk at most.
        ``stopping()`` true ends it early (the service stops)."""
        cutoff = _utcnow() - dt.timedelta(days=keep_days)
        deleted = self._delete_runs([ts_runs.c.scheduled_at < cutoff], [ts_runs.c.scheduled_at],
                                    stopping)
        for job_id, edge in self._run_edges(keep_runs).items():
            deleted += self._delete_runs([ts_runs.c.job_id == job_id, ts_runs.c.id < edge],
                                         [ts_runs.c.id], stopping)
        with self.db.write() as conn:
            conn.execute(ts_sessions.delete().where(ts_sessions.c.expires_at < _utcnow()))
            conn.execute(ts_notifications.delete().where(
                ts_notifications.c.created_at < cutoff, ts_notifications.c.status != "pending"))
            conn.execute(ts_sla_breaches.delete().where(ts_sla_breaches.c.detected_at < cutoff))
            conn.execute(ts_audit.delete().where(
                ts_audit.c.at < _utcnow() - dt.timedelta(days=keep_audit_days)))
            conn.execute(ts_nodes.delete().where(
                ts_nodes.c.heartbeat_at < self.db.dialect.ago(86400)))
        if deleted:
            log.info("retention: pruned %d runs", deleted)
        return deleted

    def _run_edges(self, keep_runs: int) -> dict:
        """{job_id: id of its keep_runs-th newest run} for each job with more runs than that,
        all from the (job_id, id) index: the job ids by skipping through it (a GROUP BY would
        count every job's whole history), each edge by one probe that reads keep_runs entries."""
        job_id = ts_runs.c.job_id
        jobs = sa.select(sa.func.min(job_id).label("id")).cte("jobs", recursive=True)
        jobs = jobs.union_all(sa.select(sa.select(sa.func.min(job_id)).where(
            job_id > jobs.c.id).scalar_subquery()).where(jobs.c.id.is_not(None)))
        edges = {}
        with self.db.engine.connect() as conn:   # reads: no lock held
            job_ids = conn.execute(sa.select(jobs.c.id).where(jobs.c.id.is_not(None))).scalars()
            for count, job in enumerate(job_ids.all(), 1):
                edges[job] = conn.execute(_EDGE, {"job": job, "skip": keep_runs - 1}).scalar()
                if count % 50 == 0:
                    # One probe is a little Python and a little SQLite; a thousand of them in a
                    # row held the GIL through a fire burst (a fifth of its GIL samples).
                    _PAUSE.wait(0.001)
        return {job: edge for job, edge in edges.items() if edge is not None}

    def _delete_runs(self, conds: list, order: list, stopping) -> int:
        """Delete the finished runs matching ``conds``: the ids of a chunk are read without the
        lock (by the index that ``order`` walks), then deleted by primary key; the chunk grows
        or shrinks so that the lock is held about PRUNE_CHUNK_S."""
        # by an expression: the status index would be walked instead of the one ``order`` uses
        final = (ts_runs.c.status + "").in_(FINAL_STATUSES)
        select = sa.select(ts_runs.c.id).where(*conds, final, _NOT_A_LIVE_STEP).order_by(*order)
        deleted, size = 0, PRUNE_CHUNK
        dialect = self.db.dialect
        with self.db.engine.connect() as conn, dialect.checkpoints_outside_lock(conn):
            while not stopping():
                ids = conn.execute(select.limit(size)).scalars().all()
                conn.rollback()   # end the read: no snapshot kept while the others write
                if not ids:
                    break
                self._give_way()
                began = time.monotonic()
                with self.db.turn(), conn.begin():
                    count = conn.execute(ts_runs.delete().where(ts_runs.c.id.in_(ids),
                                                                final)).rowcount
                took = time.monotonic() - began
                deleted += count
                if count == 0:   # deleted meanwhile (another node prunes): never loop forever
                    break
                dialect.checkpoint(conn)   # its own pages, without the lock (see the dialect)
                size = max(1, min(5000, int(size * PRUNE_CHUNK_S / max(took, 1e-4))))
                # as long again without the lock or the GIL: firing's Python runs meanwhile
                time.sleep(max(took, 0.002))
        return deleted

    def _give_way(self, limit: float = 1.0) -> None:
        """Wait (up to ``limit`` s) until no writer waits for the write lock: fires, claims and
        run ends go first, and a retention chunk starts in a gap between them."""
        until = time.monotonic() + limit
        while self.db.waiting and time.monotonic() < until:
            time.sleep(0.001)
