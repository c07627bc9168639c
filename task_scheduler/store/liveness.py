"""The liveness of runs: this node's runs marked alive, runs of a silent node rescued (ended
``interrupted``, or put back in the queue when they never started), runs left by this node's
previous life swept at start-up, and the processes found then matched to their runs."""

from __future__ import annotations

from typing import Optional

import sqlalchemy as sa

from .after import AfterStore
from .database import Database
from .runs import mine
from .schema import _SUMMARY_COLUMNS, ts_runs
from .workflows import WorkflowStore, ends_recorded
from ..timeutil import _utcnow


class RunLiveness:
    """Heartbeats, rescue and sweep of runs."""

    def __init__(self, db: Database, workflows: WorkflowStore):
        self.db, self.workflows = db, workflows
        self.after: AfterStore = db.after   # the Store's: runs that ends queue (after:)
        self.node = db.node

    def heartbeat_runs(self) -> tuple[set, set]:
        """Mark this node's running runs alive. Returns (ids still running here, ids whose
        cancel was asked for). The rows are locked in id order first: the history writer ends
        a batch of them in that order, and one UPDATE would lock them in scan order (deadlock).
        Quiet: only heartbeat_at changes, which readers may see a moment late."""
        with self.db.write(quiet=True) as conn:
            self.db.bounded(conn)
            ids = conn.execute(sa.select(ts_runs.c.id).where(*mine(self.node))
                .order_by(ts_runs.c.id).with_for_update()).scalars().all()
            rows = conn.execute(ts_runs.update().where(
                ts_runs.c.id.in_(ids), *mine(self.node))
                .values(heartbeat_at=self.db.now())
                .returning(ts_runs.c.id, ts_runs.c.cancel_requested)).all()
        return {r.id for r in rows}, {r.id for r in rows if r.cancel_requested}

    def rescue(self, silent_for: float) -> list:
        """Runs whose node stopped heart-beating become ``interrupted``, naming the node; runs
        it had claimed but not started go back to the queue (nothing of them ran). Rows
        another transaction holds (a frozen node's history writer, say) are skipped, not
        waited for: they are looked at again next time."""
        dialect = self.db.dialect
        with self.db.write() as conn:
            self.db.bounded(conn)
            claimed = conn.execute(dialect.skip_locked(sa.select(ts_runs.c.id).where(
                ts_runs.c.status == "queued", ts_runs.c.node.is_not(None),
                ts_runs.c.heartbeat_at < dialect.ago(silent_for))
                .order_by(ts_runs.c.id))).scalars().all()
            if claimed and conn.execute(ts_runs.update().where(
                    ts_runs.c.id.in_(claimed), ts_runs.c.status == "queued")
                    .values(node=None, heartbeat_at=None)).rowcount:
                self.db.notify(conn, "ts_runs")
            ids = conn.execute(dialect.skip_locked(sa.select(ts_runs.c.id).where(
                ts_runs.c.status == "running", ts_runs.c.heartbeat_at < dialect.ago(silent_for))
                .order_by(ts_runs.c.id))).scalars().all()
            if not ids:
                if not claimed:
                    self.db.quiet(conn)   # nothing rescued
                return []
            rows = conn.execute(ts_runs.update().where(
                ts_runs.c.id.in_(ids), ts_runs.c.status == "running")
                .values(status="interrupted", finished_at=dialect.now(),
                        error=sa.literal("interrupted: node ") + sa.func.coalesce(
                            ts_runs.c.node, "?") + sa.literal(
                            f" stopped heart-beating for over {silent_for:g}s (killed, or its "
                            f"machine is gone)"))
                .returning(*_SUMMARY_COLUMNS)).all()
            return rows + ends_recorded(conn, [r.id for r in rows], True,   # as after_rescue
                                        self.workflows, self.after)

    def sweep(self, node: Optional[str]) -> list:
        """At start-up: runs left ``running`` by this node's previous life (all runs on
        SQLite, where only one node exists) are interrupted, and those it had claimed but not
        started go back to the queue. Returns the interrupted ones."""
        where = [ts_runs.c.status == "running", ts_runs.c.workflow.is_(None)]   # a workflow
        #   run is held by no node: its steps are what ran here
        claimed = [ts_runs.c.status == "queued", ts_runs.c.node.is_not(None)]
        if node is not None:
            where.append(ts_runs.c.node == node)
            claimed.append(ts_runs.c.node == node)
        with self.db.write() as conn:
            conn.execute(ts_runs.update().where(*claimed).values(node=None, heartbeat_at=None))
            rows = conn.execute(ts_runs.update().where(*where).values(
                status="interrupted", finished_at=_utcnow(),
                error=f"interrupted: the service stopped without finishing this run (found at "
                      f"start-up on {self.node})").returning(*_SUMMARY_COLUMNS)).all()
            return rows + ends_recorded(conn, [r.id for r in rows], False,   # never retried
                                        self.workflows, self.after)

    def runs_of_processes(self, run_ids: list) -> list:
        """(id, node, pid, job_id) of the runs with these ids: which processes found at
        start-up are runs of this database."""
        with self.db.engine.connect() as conn:
            return conn.execute(sa.select(ts_runs.c.id, ts_runs.c.node, ts_runs.c.pid,
                                          ts_runs.c.job_id)
                                .where(ts_runs.c.id.in_(run_ids[:1000]))).all()
