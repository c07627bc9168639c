"""The schedule store: APScheduler's job table (SQLAlchemyJobStore) with fires inserted as runs
in the same transaction, each fire time recorded once."""

from __future__ import annotations

import bisect
import datetime as dt
import logging
import pickle
import sys
from typing import TYPE_CHECKING, Optional

import sqlalchemy as sa
from apscheduler.jobstores.base import ConflictingIdError, JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.util import datetime_to_utc_timestamp, utc_timestamp_to_datetime

from .runs import DONE_MARK, Admission, _run_row
from .schema import APS_TABLE, _take_turns
from ..timeutil import _iso

if TYPE_CHECKING:
    from . import Store

log = logging.getLogger("task_scheduler")


class ScheduleStore(SQLAlchemyJobStore):
    """APScheduler's SQLAlchemy job store, its table unchanged but for one column, with the
    schedule held in memory by the leader: reads never ask the database, and writes wait in
    memory until ``commit()`` writes them with the wakeup's fires in one transaction that
    proves the lease is still held (a deposed leader writes nothing). Only the scheduler
    thread changes it; ``hashes`` tells which definition each job was built from."""

    def __init__(self, store: Store):
        super().__init__(engine=store.engine, tablename=APS_TABLE, pickle_protocol=4)
        self.jobs_t.append_column(sa.Column("ts_hash", sa.String(80)))
        self.db = store
        self.epoch: Optional[int] = None   # the lease epoch while this node leads
        self.loaded = False
        self._stored: set = set()
        self.hashes: dict[str, Optional[str]] = {}
        self._times: dict[str, Optional[float]] = {}   # id -> next fire (UTC timestamp)
        self._due: list = []                            # sorted (timestamp, id), paused left out
        self._jobs: dict = {}                           # unpickled on first use
        self._pending: dict = {}                        # id -> job to write, or None: delete
        self._moved: dict = {}                          # id -> next fire only (no new pickle)
        self._recomputed: dict = {}                     # id -> when put (see _unrecorded)
        self.done: set = set()                          # ids with no fire time left: kept
        self.now: Optional[dt.datetime] = None          # the scheduler's clock, this wakeup

    def start(self, scheduler, alias):
        """APScheduler creates the table here without a lock: nodes starting together on a new
        database race to create it, and the loser exits. They take turns, as migrate() does."""
        super(SQLAlchemyJobStore, self).start(scheduler, alias)
        with self.engine.begin() as conn:
            _take_turns(conn)
            self.jobs_t.create(conn, checkfirst=True)

    def load(self) -> None:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(self.jobs_t.c.id, self.jobs_t.c.next_run_time,
                                          self.jobs_t.c.ts_hash)).all()
        ids = [sys.intern(r.id) for r in rows]   # the book's id strings, not 10,000 copies
        self._times = {i: r.next_run_time for i, r in zip(ids, rows, strict=True)}
        self._stored = set(self._times)   # ids with a row in the table
        self.hashes = {i: (r.ts_hash or "").removesuffix(DONE_MARK) or None
                       for i, r in zip(ids, rows, strict=True)}
        self.done = {i for i, r in zip(ids, rows, strict=True)
                     if (r.ts_hash or "").endswith(DONE_MARK)}
        self._due = sorted((t, i) for i, t in self._times.items() if t is not None)
        self._jobs, self._pending, self._moved, self.loaded = {}, {}, {}, True
        self._recomputed = {}

    def invalidate(self) -> None:
        """Forget the memory: the next use reads the table again (after a failed commit)."""
        self.loaded = False

    def ids(self) -> list:
        self._ensure()
        return list(self._times)

    def preload(self, ids) -> None:
        """Unpickle these jobs with a query per 500, not one each (the first wakeup checks
        every job)."""
        self._ensure()
        self._fetch([i for i in ids if i in self._times])

    def stamp(self, job_id) -> tuple[bool, Optional[float]]:
        """(stored at all, next fire timestamp or None when paused), without unpickling."""
        self._ensure()
        return job_id in self._times, self._times.get(job_id)

    def lookup_job(self, job_id):
        self._ensure()
        return self._fetch([job_id]).get(job_id) if job_id in self._times else None

    def get_due_jobs(self, now, most: Optional[int] = None):
        """The jobs due at ``now``, earliest first; ``most``: at most that many."""
        self._ensure()
        limit = datetime_to_utc_timestamp(now)
        ids = [i for _, i in self._due[:min(bisect.bisect_right(self._due, (limit, "\uffff")),
                                            len(self._due) if most is None else most)]]
        jobs = self._fetch(ids)
        return [jobs[i] for i in ids if i in jobs]

    def get_next_run_time(self):
        self._ensure()
        return utc_timestamp_to_datetime(self._due[0][0]) if self._due else None

    def get_all_jobs(self):
        self._ensure()
        jobs = self._fetch(list(self._times))
        ordered = sorted(jobs.values(), key=lambda j: (self._times[j.id] is None,
                                                       self._times[j.id] or 0, j.id))
        return ordered

    def add_job(self, job):
        self._ensure()
        if job.id in self._times:
            raise ConflictingIdError(job.id)
        self._put(job)

    def update_job(self, job):
        self._ensure()
        if job.id not in self._times:
            raise JobLookupError(job.id)
        self._put(job)

    def remove_job(self, job_id):
        self._ensure()
        if job_id not in self._times:
            raise JobLookupError(job_id)
        self._unindex(job_id)
        del self._times[job_id]
        self._jobs.pop(job_id, None)
        self.hashes.pop(job_id, None)
        self.done.discard(job_id)
        self._pending[job_id] = None

    def move_job(self, job, next_run_time) -> None:
        """A fire moved the job on: only its next fire time changes, so only that column is
        written (pickling every fired job was most of a wakeup's cost)."""
        job._modify(next_run_time=next_run_time)
        self._unindex(job.id)
        stamp = self._times[job.id] = datetime_to_utc_timestamp(next_run_time)
        bisect.insort(self._due, (stamp, job.id))
        if job.id not in self._pending:
            self._moved[job.id] = stamp

    def finish_job(self, job) -> None:
        """A schedule with no fire time left (a date job after its fire) is kept, marked done
        and with no next fire time, not deleted: a restart or a takeover would add the job
        again and fire it once more (and its row may be pruned by then)."""
        job._modify(next_run_time=None)
        self.done.add(job.id)
        self._put(job)

    def remove_all_jobs(self):
        for job_id in self.ids():
            self.remove_job(job_id)

    def commit(self, fires: list[dict], notes: list[dict] = (),
               admission: Optional[Admission] = None, epoch: Optional[int] = None) -> tuple:
        """Write the pending schedule changes, insert the fires (and the notifications of the
        missed ones, built before), in one transaction fenced by ``epoch``, the lease this
        node held when the wakeup began (read then: a step-down while it ran sets ``self.epoch``
        to None, and a fence read at the end let a node that had handed the lease over commit
        fires its successor had recorded as catch-ups); ``admission`` (built before too) says
        which fires this node's workers take at once. Returns the ids of the runs inserted,
        and the rows of those started: the caller starts them after the commit."""
        moved = [{"i": i, "t": t} for i, t in sorted(self._moved.items())
                 if i not in self._pending]
        if not self._pending and not moved and not fires:
            return [], []
        with self.db.write() as conn:
            fired = fires
            fires = self._unrecorded(conn, fires)
            self._write(conn)
            if moved:
                conn.execute(self.jobs_t.update().where(self.jobs_t.c.id == sa.bindparam("i"))
                             .values(next_run_time=sa.bindparam("t")), moved)
            started = self.db.runs.start_fresh(conn, fires, admission)
            inserted = self.db.runs.insert_runs(conn, fires)
            kept = set(inserted)
            self.db.notes.insert_notes(conn, [n for n in notes if n["run_id"] in kept])
            if any(f["status"] == "queued" and f.get("node") is None for f in fires):
                self.db.notify(conn, "ts_runs")   # not for fires claimed here already
            # Last, so that the lease row is locked only for the commit itself: the renewal
            # waits for that lock, and a long first write (10,000 jobs) would let it lapse.
            self.db.nodes.fence(conn, epoch)
        self._pending.clear()
        self._moved.clear()
        for fire in fired:
            self._recomputed.pop(fire["job_id"], None)
        return inserted, [_run_row(f) for f in started if f["id"] in kept]

    def _unrecorded(self, conn, fires: list[dict]) -> list[dict]:
        """The fires whose time has no row yet. A stored schedule is moved past its fires in
        the transaction that records them, so only a schedule computed afresh from its trigger
        (a job added again on a restart or a takeover, rebuilt, resumed) can come back to a
        recorded time, and only to a time not after it was computed (every row was recorded
        by then): a date job's only fire time is its run_date, whenever it is added. Such a
        first fire is looked up; a recorded one is left out, never fired again. (A second of
        slack: a cron schedule computed within a second starts at that second.) Every catch-up
        is looked up too: it is due from before this node led, when another leader (or this
        node's previous life) may have recorded it; there are few, once per takeover or start."""
        keys = [(f["job_id"], f["scheduled_at"]) for f in fires
                if f["trigger"] == "catchup" or f["trigger"] == "schedule" and f[
                    "scheduled_at"].replace(tzinfo=dt.UTC).timestamp() <=
                self._recomputed.get(f["job_id"], -1) + 1]
        recorded = self.db.runs.fired(conn, keys)
        if not recorded:
            return fires
        log.info("not fired again, already recorded: %s", ", ".join(
            f"{job_id} at {_iso(at)}" for job_id, at in sorted(recorded)[:20]) +
            (f" and {len(recorded) - 20} more" if len(recorded) > 20 else ""))
        return [f for f in fires if (f["job_id"], f["scheduled_at"]) not in recorded]

    def _write(self, conn) -> None:
        """The pending jobs in three statements (deleted, changed, new), not one per job: the
        first wakeup after loading 10,000 jobs writes them all, inside the fenced commit."""
        table, pending = self.jobs_t, sorted(self._pending.items())
        gone = [i for i, job in pending if job is None and i in self._stored]
        rows = [{"i": i, "next_run_time": datetime_to_utc_timestamp(job.next_run_time),
                 "job_state": pickle.dumps(job.__getstate__(), self.pickle_protocol),
                 "ts_hash": self._stored_hash(i)} for i, job in pending if job is not None]
        for start in range(0, len(gone), 500):
            conn.execute(table.delete().where(table.c.id.in_(gone[start:start + 500])))
        changed = [r for r in rows if r["i"] in self._stored]
        if changed:
            conn.execute(table.update().where(table.c.id == sa.bindparam("i")).values(
                {c: sa.bindparam(c) for c in ("next_run_time", "job_state", "ts_hash")}),
                changed)
        new = [{"id" if k == "i" else k: v for k, v in r.items()} for r in rows
               if r["i"] not in self._stored]
        if new:
            conn.execute(table.insert(), new)
        self._stored.difference_update(gone)
        self._stored.update(r["id"] for r in new)

    def _stored_hash(self, job_id: str) -> Optional[str]:
        built = self.hashes.get(job_id)
        return built + DONE_MARK if built is not None and job_id in self.done else built

    def _put(self, job) -> None:
        self._unindex(job.id)
        stamp = datetime_to_utc_timestamp(job.next_run_time)
        self._times[job.id] = stamp
        if stamp is not None:
            bisect.insort(self._due, (stamp, job.id))
        self._jobs[job.id] = job
        self._pending[job.id] = job
        self._moved.pop(job.id, None)
        self._recomputed[job.id] = self.now.timestamp() if self.now is not None else float("inf")

    def _unindex(self, job_id: str) -> None:
        stamp = self._times.get(job_id)
        if stamp is not None:
            index = bisect.bisect_left(self._due, (stamp, job_id))
            if index < len(self._due) and self._due[index] == (stamp, job_id):
                del self._due[index]

    def _ensure(self) -> None:
        if not self.loaded:
            self.load()

    def _fetch(self, ids: list) -> dict:
        """The jobs of ``ids``, unpickling the ones not in memory yet (one query). A job that
        cannot be restored is logged and left in the table (APScheduler would delete it)."""
        missing = [i for i in ids if i not in self._jobs]
        for start in range(0, len(missing), 500):
            chunk = missing[start:start + 500]
            with self.engine.connect() as conn:
                rows = conn.execute(sa.select(self.jobs_t.c.id, self.jobs_t.c.job_state)
                                    .where(self.jobs_t.c.id.in_(chunk))).all()
            for row in rows:
                try:
                    job = self._reconstitute_job(row.job_state)
                except Exception:
                    log.exception("schedule of job %s cannot be read; it does not fire", row.id)
                    continue
                # The column is the truth: a commit may have moved it without a new pickle.
                job.next_run_time = utc_timestamp_to_datetime(self._times.get(row.id)) \
                    if self._times.get(row.id) is not None else None
                if job.next_run_time is not None:
                    job.next_run_time = job.next_run_time.astimezone(job.trigger.timezone) \
                        if hasattr(job.trigger, "timezone") else job.next_run_time
                self._jobs[row.id] = job
        return {i: self._jobs[i] for i in ids if i in self._jobs}
