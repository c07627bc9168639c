"""The run queue: runs inserted (each fire key once), claimed by a node, started, ended,
cancelled (their heartbeats, rescue and start-up sweep are in liveness.py). Takes data (the rows,
an Admission built before the transaction) and returns rows: it calls into no other part while a
transaction is open."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING, Optional

import sqlalchemy as sa

from .database import Database
from .notes import NoteStore
from .workflows import WorkflowStore, ends_recorded
from .schema import _SUMMARY_COLUMNS, _TAKEN, ts_jobs, ts_runs
from ..models import FINAL_STATUSES
from ..timeutil import _utcnow

if TYPE_CHECKING:
    from .after import AfterStore

DONE_MARK = ":done"   # ts_hash's suffix for a schedule with no fire time left (finish_job)


@dataclasses.dataclass(frozen=True)
class Admission:
    """What a node may start, decided before the write transaction that claims: the placement
    labels it serves, how many it may take (``limit``), each job's (max_instances,
    misfire_grace_time) (a job missing from ``limits`` no longer exists), and the runs it
    ended whose end is not written yet (``ended``: they do not count against max_instances)."""

    labels_ok: tuple
    limit: int
    limits: Mapping[str, tuple[int, Optional[float]]]
    ended: frozenset = frozenset()


class RunStore:
    """ts_runs as a queue shared by the nodes: every write of a run's life."""

    def __init__(self, db: Database, notes: NoteStore,
                 workflows: Optional[WorkflowStore] = None):
        self.db, self.notes = db, notes
        self.workflows = workflows or WorkflowStore(db)   # steps decided at each end
        self.after: AfterStore = db.after   # the Store's: runs that ends queue (after:)
        self.node = db.node

    def insert_runs(self, conn, rows: list[dict]) -> list[str]:
        """Insert runs; a row whose fire key (job, time, trigger, attempt) exists is left out.
        Returns the ids inserted. Rows inserted ended (missed, pings) start their followers."""
        if not rows:
            return []
        ids = self.db.dialect.insert_runs(conn, [_run_row(r) for r in rows])
        ended = {r["id"] for r in rows if r["status"] in FINAL_STATUSES}
        if ended:
            self.after.follow(conn, [i for i in ids if i in ended], retried=False)
        return ids

    def fired(self, conn, keys: list[tuple]) -> set:
        """Which (job_id, scheduled_at) of ``keys`` already have a fire row (scheduled or
        catch-up, any status). The unique key tells the two triggers apart, so this is the check
        that a fire time is recorded once (ScheduleStore.commit asks it for schedules computed
        afresh, and for catch-ups). Each key is one lookup on uq_ts_runs_fire: a statement of
        many ORs took ~90 ms per 1,000 keys on SQLite and ~230 ms on PostgreSQL, planning it."""
        return self.db.dialect.fired(conn, keys) if keys else set()

    def queue_runs(self, rows: list[dict]) -> list[str]:
        """Queue runs (manual, retry) in one transaction and wake the workers of every node."""
        with self.db.write() as conn:
            ids = self.insert_runs(conn, rows)
            if any(r["status"] == "queued" for r in rows):
                self.db.notify(conn, "ts_runs")
        return ids

    def claim(self, admission: Admission) -> tuple[list, list]:
        """Take up to ``admission.limit`` queued runs that are due and placeable here: they are
        claimed by this node (``node`` set; they stay ``queued`` until a worker starts them).
        Runs that may not start are ended in the same transaction: ``skipped`` while
        max_instances runs of the job go on (on any node: claimers of one job take turns on its
        row), ``missed`` for a scheduled fire that waited past its grace, ``cancelled`` when the
        job is gone. Returns (started rows, ended rows): the caller queues the ended runs'
        notifications and starts the others after the commit."""
        with self.db.write() as conn:
            now = self.db.dialect.now_value(conn)
            query = (sa.select(*_SUMMARY_COLUMNS, ts_runs.c.params)
                     .where(ts_runs.c.status == "queued", ts_runs.c.due_at <= now,
                            ts_runs.c.run_on.in_(admission.labels_ok), ts_runs.c.node.is_(None))
                     .order_by(ts_runs.c.due_at, ts_runs.c.id).limit(admission.limit))
            rows = conn.execute(self.db.dialect.skip_locked(query)).all()
            if not rows:
                self.db.quiet(conn)   # the idle poll: readers keep what they read
                return [], []
            running = self._running(conn, {r.job_id for r in rows}, admission.ended)
            started, ended = _admit(rows, running, admission.limits, now)
            self._take(conn, started, now)
            self._end(conn, ended, now)
            ended += [dict(r._mapping) for r in ends_recorded(
                conn, [r["id"] for r in ended], False, self.workflows, self.after)]
        return started, ended

    def _take(self, conn, started: list[dict], now) -> None:
        if started:
            conn.execute(ts_runs.update().where(ts_runs.c.id.in_([r["id"] for r in started]))
                         .values(node=self.node, heartbeat_at=now))
        for run in started:
            run.update(node=self.node, heartbeat_at=now)

    def _end(self, conn, ended: list[dict], now) -> None:
        for run in ended:
            run["finished_at"] = now
        if ended:
            conn.execute(ts_runs.update().where(ts_runs.c.id == sa.bindparam("_id"))
                         .values(status=sa.bindparam("status"), finished_at=now,
                                 error=sa.bindparam("error")),
                         [{"_id": r["id"], "status": r["status"], "error": r["error"]}
                          for r in ended])

    def start_fresh(self, conn, fires: list[dict], admission: Optional[Admission]) -> list[dict]:
        """Of the leader's fires about to be inserted, the ones this node takes at once: they
        are inserted claimed by this node (still ``queued``), so no claim reads them back. A
        fire that may not start (max_instances) stays queued for a claim to decide. Returns
        the fires started."""
        if admission is None or admission.limit <= 0:
            return []
        fresh = [f for f in fires
                 if f["status"] == "queued" and f["run_on"] in admission.labels_ok]
        if not fresh:
            return []
        running = self._running(conn, {f["job_id"] for f in fresh}, admission.ended)
        now = self.db.dialect.now_value(conn)
        started = []
        for fire in fresh:
            limits = admission.limits.get(fire["job_id"])
            if len(started) < admission.limit and limits is not None and \
                    running[fire["job_id"]] < limits[0]:
                running[fire["job_id"]] += 1
                fire.update(node=self.node, heartbeat_at=now)
                started.append(fire)
        return started

    def _running(self, conn, job_ids: set, ended: frozenset) -> collections.Counter:
        """Running runs per job, any node, and runs a node claimed to start; ``ended``: ended
        here, their end not written yet. The jobs' rows are locked first (PostgreSQL):
        claimers of one job take turns."""
        job_ids = sorted(job_ids)
        self.db.dialect.lock_rows(conn, sa.select(ts_jobs.c.id).where(
            ts_jobs.c.id.in_(job_ids)).order_by(ts_jobs.c.id))
        going = [_TAKEN, ts_runs.c.job_id.in_(job_ids), ts_runs.c.parent_run.is_(None)]
        if ended:
            going.append(ts_runs.c.id.not_in(ended))
        return collections.Counter(dict(conn.execute(
            sa.select(ts_runs.c.job_id, sa.func.count()).where(*going)
            .group_by(ts_runs.c.job_id)).all()))

    def finish_runs(self, conn, updates: list, notes: Optional[dict] = None) -> list:
        """Starts, final states and output of this node's runs, and their notifications; a run
        no longer running or claimed here is left alone (it was rescued while this node was
        silent). In id order, as the heartbeat locks them. The steps among the ended runs are
        decided in this transaction (WorkflowStore.settle): returns the workflow runs ended."""
        notes = notes or {}
        alike: dict[tuple, list] = {}   # one executemany per set of fields changed
        for run_id, fields in sorted(updates, key=lambda u: u[0]):
            if notes.get(run_id):   # the notes go only with a run still running
                if conn.execute(ts_runs.update().where(ts_runs.c.id == run_id, *self._mine())
                                .values(**fields)).rowcount:
                    self.notes.insert_notes(conn, notes[run_id])
            else:
                alike.setdefault(tuple(sorted(fields)), []).append({**fields, "_id": run_id})
        for names, rows in alike.items():
            conn.execute(ts_runs.update().where(ts_runs.c.id == sa.bindparam("_id"),
                                                *self._mine())
                         .values({n: sa.bindparam(n) for n in names}), rows)
        return ends_recorded(conn, [i for i, f in updates if f.get("status") in FINAL_STATUSES],
                             True, self.workflows, self.after)

    def _mine(self) -> tuple:
        return mine(self.node)

    def cancel_queued(self, run_id: str) -> bool:
        with self.db.write() as conn:
            done = bool(conn.execute(ts_runs.update().where(   # not claimed by a node yet
                ts_runs.c.id == run_id, ts_runs.c.status == "queued",
                ts_runs.c.node.is_(None)).values(
                status="cancelled", finished_at=_utcnow(),
                error="cancelled before it started")).rowcount)
            ends_recorded(conn, [run_id] if done else [], False, self.workflows, self.after)
            return done

    def request_cancel(self, run_id: str) -> bool:
        """Ask the node running (or holding) ``run_id`` to cancel it (it looks at each
        heartbeat)."""
        with self.db.write() as conn:
            return bool(conn.execute(ts_runs.update().where(ts_runs.c.id == run_id, _TAKEN)
                .values(cancel_requested=True)).rowcount)

    def add_to_error(self, run_id: str, text: str) -> None:
        with self.db.write() as conn:
            conn.execute(ts_runs.update().where(ts_runs.c.id == run_id).values(
                error=sa.func.coalesce(ts_runs.c.error, "") + text))

    def active_count(self, job_id: str, ended: frozenset = frozenset()) -> int:
        """Queued and running runs of a job; ``ended``: runs whose end is not written yet."""
        where = [ts_runs.c.job_id == job_id, ts_runs.c.status.in_(("queued", "running")),
                 ts_runs.c.parent_run.is_(None)]   # a workflow's steps are not runs of it
        if ended:
            where.append(ts_runs.c.id.not_in(ended))
        with self.db.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(ts_runs).where(*where)
                                ).scalar()


def _admit(rows: list, running: collections.Counter, limits_of: Mapping,
           now: dt.datetime) -> tuple:
    """Which claimed runs start, and which end (and why), in queue order."""
    started, ended = [], []
    for row in rows:
        run = dict(row._mapping)
        limits = limits_of.get(run["job_id"])
        late = (now - run["scheduled_at"]).total_seconds()
        if limits is None:
            ended.append({**run, "status": "cancelled", "error": "the job no longer exists"})
        elif run["trigger"] in ("schedule", "catchup") and limits[1] is not None \
                and late > limits[1]:
            ended.append({**run, "status": "missed", "error": f"waited {late:.1f}s for a "
                          f"worker (misfire_grace_time {limits[1]:g}s)"})
        elif run.get("parent_run") is not None:   # a step: its workflow run was admitted
            started.append(run)
        elif running[run["job_id"]] >= limits[0]:
            ended.append({**run, "status": "skipped", "error": f"{running[run['job_id']]} "
                          f"run(s) still going (max_instances={limits[0]})"})
        else:
            running[run["job_id"]] += 1
            started.append(run)
    return started, ended


def mine(node: str) -> tuple:
    """The runs ``node`` runs or has claimed: the only rows its run writes may change.
    (No IN: an expanding parameter cannot go into the writer's executemany.)"""
    return (sa.or_(ts_runs.c.status == "running", ts_runs.c.status == "queued"),
            ts_runs.c.node == node)


def _run_row(fields: dict) -> dict:
    row = {c.name: None for c in ts_runs.c}
    row.update(attempt=1, truncated=False, run_on="", cancel_requested=False)
    row.update(fields)
    if row["due_at"] is None:
        row["due_at"] = row["scheduled_at"]
    return row
