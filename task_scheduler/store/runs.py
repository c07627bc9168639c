"""The run store: every SQL statement about runs, nodes, the lease, notifications and GUI sessions.
Takes data, returns rows."""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import functools
import hashlib
import json
import logging
import secrets
import threading
import time
from typing import Any, Optional

import sqlalchemy as sa
import sqlalchemy.dialects.postgresql
import sqlalchemy.dialects.sqlite

from ..errors import JobConflict, NotLeader, SchedulerError
from ..models import ENDED_STATUSES, FINAL_STATUSES, Page, run_to_dict
from ..processes import _pid_alive
from .schema import (
    APS_TABLE, LEASE, LIVENESS_LOCK_WAIT, PRUNE_CHUNK, PRUNE_CHUNK_S, RUN_SPAN_COLUMNS, TOTAL_CAP,
    _SUMMARY_COLUMNS, _TAKEN, ts_jobs, ts_lease, ts_meta, ts_nodes, ts_notifications, ts_runs,
    ts_sessions)
from ..text import _clean
from ..timeutil import _naive_utc, _utcnow

log = logging.getLogger("task_scheduler")


class Store:
    """Every SQL statement of the service, each operation one ``engine.begin()`` with a domain
    answer (the shape of APScheduler's SQLAlchemyJobStore): callers say what they want done.

    On PostgreSQL, times that nodes compare (leases, heartbeats, queues) come from the database
    clock; changes are announced with NOTIFY. SQLite has one node: its clock is this machine's,
    and its writers take turns on a lock before they begin (never inside a transaction)."""

    def __init__(self, engine: sa.Engine, node: str):
        self.engine, self.node = engine, node
        self.postgres = engine.dialect.name == "postgresql"
        self._write_lock = None if self.postgres else threading.Lock()
        self.on_commit: list = []   # (channel, payload) after each commit: this process's bus
        self.waiting: collections.deque = collections.deque()   # one item per writer waiting

    @contextlib.contextmanager
    def write(self):
        """One write transaction; ``notify(conn, ...)`` inside it announces after commit."""
        self.waiting.append(None)   # retention gives way while writers wait (_give_way)
        with self._write_lock or contextlib.nullcontext():
            self.waiting.pop()      # deque append/pop are atomic: a count without a lock
            with self.engine.begin() as conn:
                conn.info["ts.notes"] = []
                yield conn
                notes = conn.info.pop("ts.notes")
        for channel, payload in notes:
            for callback in self.on_commit:
                callback(channel, payload)

    def notify(self, conn, channel: str, ids: Optional[list] = None) -> None:
        payload = {"node": self.node, "ids": ids if ids is None or len(ids) < 200 else None}
        conn.info["ts.notes"].append((channel, payload))
        if self.postgres:
            conn.execute(sa.select(sa.func.pg_notify(self.channel_prefix + channel,
                                                     json.dumps(payload))))

    @functools.cached_property
    def channel_prefix(self) -> str:
        """NOTIFY channels belong to the whole database: nodes using another schema of it
        (another installation, a test) must not hear this one."""
        if not self.postgres:
            return ""
        with self.engine.connect() as conn:
            schema = conn.execute(sa.text("SELECT current_schema()")).scalar()
        return "" if schema in (None, "public") else f"{schema}_"

    def now(self, conn=None):
        """The database clock, naive UTC, as a SQL expression (a value on SQLite)."""
        if self.postgres:
            return sa.func.timezone("UTC", sa.func.now())
        return _utcnow()

    def _ago(self, seconds: float):
        if self.postgres:
            return sa.func.timezone("UTC", sa.func.now() - sa.func.make_interval(
                0, 0, 0, 0, 0, 0, sa.literal(float(seconds), sa.Float)))
        return _utcnow() - dt.timedelta(seconds=seconds)

    def db_time(self) -> dt.datetime:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(self.now())).scalar() if self.postgres else _utcnow()

    # meta

    def get_meta(self, key: str) -> Optional[str]:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(ts_meta.c.value).where(ts_meta.c.key == key)).scalar()

    def set_meta(self, key: str, value: str) -> None:
        with self.write() as conn:
            if conn.execute(ts_meta.update().where(ts_meta.c.key == key)
                            .values(value=value)).rowcount == 0:
                conn.execute(ts_meta.insert().values(key=key, value=value))

    # job definitions

    def job_rows(self, ids: Optional[list] = None) -> list:
        query = sa.select(ts_jobs)
        if ids is not None:
            query = query.where(ts_jobs.c.id.in_(ids))
        with self.engine.connect() as conn:
            return conn.execute(query).all()

    def job_signatures(self) -> dict:
        """{id: (definition_hash, paused)}: enough to see which jobs changed elsewhere."""
        with self.engine.connect() as conn:
            return {r.id: (r.definition_hash, r.paused) for r in conn.execute(
                sa.select(ts_jobs.c.id, ts_jobs.c.definition_hash, ts_jobs.c.paused))}

    def write_jobs(self, upserts: list[dict], deletes: list[str]) -> None:
        """Insert or update job rows (by id, in id order) and delete others, in one transaction;
        JobConflict if an inserted id appeared meanwhile (another node)."""
        if not upserts and not deletes:
            return
        try:
            new, alike = [], {}   # one statement per kind of change, not one per job
            for values in sorted(upserts, key=lambda v: v["id"]):
                if values.pop("_new"):
                    new.append(values)
                else:
                    alike.setdefault(tuple(sorted(values)), []).append(
                        {**values, "_id": values["id"]})
            with self.write() as conn:
                for names, rows in alike.items():
                    conn.execute(ts_jobs.update().where(ts_jobs.c.id == sa.bindparam("_id"))
                                 .values({n: sa.bindparam(n) for n in names if n != "id"}),
                                 rows)
                if new:
                    conn.execute(ts_jobs.insert(), new)
                if deletes:
                    conn.execute(ts_jobs.delete().where(ts_jobs.c.id.in_(deletes)))
                self.notify(conn, "ts_jobs", sorted({v["id"] for v in upserts} | set(deletes)))
        except sa.exc.IntegrityError as exc:
            raise JobConflict(f"a job with that id was just created elsewhere: {_clean(exc)}") \
                from None

    def set_paused(self, job_id: str, paused: bool) -> bool:
        with self.write() as conn:
            changed = conn.execute(ts_jobs.update().where(ts_jobs.c.id == job_id)
                                   .values(paused=paused, updated_at=_utcnow())).rowcount
            self.notify(conn, "ts_jobs", [job_id])
        return bool(changed)

    def next_run_times(self, ids: Optional[list] = None) -> dict:
        """{id: next fire (UTC timestamp)} from APScheduler's table, as the leader left it."""
        table = sa.table(APS_TABLE, sa.column("id"), sa.column("next_run_time"))
        query = sa.select(table.c.id, table.c.next_run_time)
        if ids is not None and len(ids) < 500:   # a page; a full scan beats a huge IN list
            query = query.where(table.c.id.in_(ids))
        with self.engine.connect() as conn:
            return {i: t for i, t in conn.execute(query) if t is not None}

    # runs: the queue

    def insert_runs(self, conn, rows: list[dict]) -> list[str]:
        """Insert runs; a row whose fire key (job, time, trigger, attempt) exists is left out.
        Returns the ids inserted."""
        if not rows:
            return []
        values = [_run_row(r) for r in rows]
        if self.postgres:   # one statement text whatever the count: see _INSERT_RUNS_PG
            columns = {c.name: [v[c.name] for v in values] for c in ts_runs.c}
            return list(conn.execute(_INSERT_RUNS_PG, columns).scalars())
        statement = sa.dialects.sqlite.insert(ts_runs).on_conflict_do_nothing() \
            .returning(ts_runs.c.id)
        return [r.id for r in conn.execute(statement, values)] if len(values) > 1 else \
            list(conn.execute(statement.values(**values[0])).scalars())

    def fired(self, conn, keys: list[tuple]) -> set:
        """Which (job_id, scheduled_at) of ``keys`` already have a fire row (scheduled or
        catch-up, any status). The unique key tells the two triggers apart, so this is the check
        that a fire time is recorded once (ScheduleStore.commit asks it for schedules computed
        afresh, and for catch-ups). Each key is one lookup on uq_ts_runs_fire: a statement of
        many ORs took ~90 ms per 1,000 keys on SQLite and ~230 ms on PostgreSQL, planning it."""
        if not keys:
            return set()
        if self.postgres:
            return {tuple(row) for row in conn.execute(_FIRED_PG, {
                "job_ids": [k[0] for k in keys], "times": [k[1] for k in keys]})}
        to_db = ts_runs.c.scheduled_at.type.dialect_impl(conn.dialect).bind_processor(
            conn.dialect)   # the text SQLAlchemy stores a DateTime as
        cursor = conn.connection.cursor()   # this transaction's; sqlite3 caches the statement
        try:
            return {(job_id, at) for job_id, at in keys
                    if cursor.execute(_FIRED_SQLITE, (job_id, to_db(at))).fetchone()}
        finally:
            cursor.close()

    def queue_runs(self, rows: list[dict]) -> list[str]:
        """Queue runs (manual, retry) in one transaction and wake the workers of every node."""
        with self.write() as conn:
            ids = self.insert_runs(conn, rows)
            if any(r["status"] == "queued" for r in rows):
                self.notify(conn, "ts_runs")
        return ids

    def claim(self, labels_ok: list[str], limit: int, policy, notes_for=lambda runs: [],
              ended: frozenset = frozenset()) -> tuple[list, list]:
        """Take up to ``limit`` queued runs that are due and placeable here: they are claimed by
        this node (``node`` set; they stay ``queued`` until a worker starts them). Runs that
        may not start are ended in the same transaction: ``skipped`` while max_instances runs
        of the job go on (on any node: claimers of one job take turns on its row), ``missed``
        for a scheduled fire that waited past its grace, ``cancelled`` when the job is gone.
        ``policy(job_id)`` gives (max_instances, grace) or None. Returns (started rows, ended
        rows)."""
        with self.write() as conn:
            return self._claim(conn, labels_ok, limit, policy, notes_for, ended)

    def _claim(self, conn, labels_ok: list[str], limit: int, policy, notes_for,
               ended: frozenset) -> tuple[list, list]:
        now = conn.execute(sa.select(self.now())).scalar() if self.postgres else _utcnow()
        query = (sa.select(*_SUMMARY_COLUMNS, ts_runs.c.params)
                 .where(ts_runs.c.status == "queued", ts_runs.c.due_at <= now,
                        ts_runs.c.run_on.in_(labels_ok), ts_runs.c.node.is_(None))
                 .order_by(ts_runs.c.due_at, ts_runs.c.id).limit(limit))
        if self.postgres:
            query = query.with_for_update(skip_locked=True)
        rows = conn.execute(query).all()
        if not rows:
            return [], []
        running = self._running(conn, {r.job_id for r in rows}, ended)
        started, ended = _admit(rows, running, policy, now)
        if started:
            conn.execute(ts_runs.update().where(ts_runs.c.id.in_([r["id"] for r in started]))
                         .values(node=self.node, heartbeat_at=now))
        for run in ended:
            run["finished_at"] = now
        if ended:
            conn.execute(ts_runs.update().where(ts_runs.c.id == sa.bindparam("_id"))
                         .values(status=sa.bindparam("status"), finished_at=now,
                                 error=sa.bindparam("error")),
                         [{"_id": r["id"], "status": r["status"], "error": r["error"]}
                          for r in ended])
        self.insert_notes(conn, notes_for(ended))
        for run in started:
            run.update(node=self.node, heartbeat_at=now)
        return started, ended

    def start_fresh(self, conn, fires: list[dict], labels_ok: list[str], limit: int, policy,
                    ended: frozenset = frozenset()) -> list[dict]:
        """Of the leader's fires about to be inserted, the ones this node takes at once: they
        are inserted claimed by this node (still ``queued``), so no claim reads them back. A
        fire that may not start (max_instances) stays queued for a claim to decide. Returns
        the fires started."""
        fresh = [f for f in fires if f["status"] == "queued" and f["run_on"] in labels_ok]
        if not fresh or limit <= 0:
            return []
        running = self._running(conn, {f["job_id"] for f in fresh}, ended)
        now = conn.execute(sa.select(self.now())).scalar() if self.postgres else _utcnow()
        started = []
        for fire in fresh:
            limits = policy(fire["job_id"])
            if len(started) < limit and limits is not None and \
                    running[fire["job_id"]] < limits[0]:
                running[fire["job_id"]] += 1
                fire.update(node=self.node, heartbeat_at=now)
                started.append(fire)
        return started

    def _running(self, conn, job_ids: set, ended: frozenset) -> collections.Counter:
        """Running runs per job, any node, and runs a node claimed to start; ``ended``: ended
        here, their end not written yet. On PostgreSQL the jobs' rows are locked first:
        claimers of one job take turns."""
        job_ids = sorted(job_ids)
        if self.postgres:
            conn.execute(sa.select(ts_jobs.c.id).where(ts_jobs.c.id.in_(job_ids))
                         .order_by(ts_jobs.c.id).with_for_update())
        going = [_TAKEN, ts_runs.c.job_id.in_(job_ids)]
        if ended:
            going.append(ts_runs.c.id.not_in(ended))
        return collections.Counter(dict(conn.execute(
            sa.select(ts_runs.c.job_id, sa.func.count()).where(*going)
            .group_by(ts_runs.c.job_id)).all()))

    def finish_runs(self, conn, updates: list, notes: Optional[dict] = None) -> None:
        """Starts, final states and output of this node's runs, and their notifications; a run
        no longer running or claimed here is left alone (it was rescued while this node was
        silent). In id order, as the heartbeat locks them."""
        notes = notes or {}
        alike: dict[tuple, list] = {}   # one executemany per set of fields changed
        for run_id, fields in sorted(updates, key=lambda u: u[0]):
            if notes.get(run_id):   # the notes go only with a run still running
                if conn.execute(ts_runs.update().where(ts_runs.c.id == run_id, *self._mine())
                                .values(**fields)).rowcount:
                    self.insert_notes(conn, notes[run_id])
            else:
                alike.setdefault(tuple(sorted(fields)), []).append({**fields, "_id": run_id})
        for names, rows in alike.items():
            conn.execute(ts_runs.update().where(ts_runs.c.id == sa.bindparam("_id"),
                                                *self._mine())
                         .values({n: sa.bindparam(n) for n in names}), rows)

    def _mine(self) -> tuple:
        """The runs this node runs or has claimed: the only rows its run writes may change.
        (No IN: an expanding parameter cannot go into the writer's executemany.)"""
        return (sa.or_(ts_runs.c.status == "running", ts_runs.c.status == "queued"),
                ts_runs.c.node == self.node)

    # notifications: queued with the end of a run, sent by the leader

    def insert_notes(self, conn, notes: list[dict]) -> None:
        if notes:
            conn.execute(ts_notifications.insert(), notes)
            self.notify(conn, "ts_notes")

    def queue_notes(self, notes: list[dict]) -> None:
        if notes:
            with self.write() as conn:
                self.insert_notes(conn, notes)

    def take_notes(self, limit: int, hold: float) -> list:
        """Due notifications, held for ``hold`` seconds (a sender that dies mid-send leaves
        them due again then)."""
        with self.write() as conn:
            now = conn.execute(sa.select(self.now())).scalar() if self.postgres else _utcnow()
            query = (sa.select(ts_notifications).where(ts_notifications.c.status == "pending",
                                                       ts_notifications.c.next_at <= now)
                     .order_by(ts_notifications.c.next_at).limit(limit))
            if self.postgres:
                query = query.with_for_update(skip_locked=True)
            rows = conn.execute(query).all()
            if rows:
                conn.execute(ts_notifications.update().where(
                    ts_notifications.c.id.in_([r.id for r in rows]))
                    .values(next_at=now + dt.timedelta(seconds=hold)))
        return rows

    def record_note(self, note_id: str, **values: Any) -> None:
        with self.write() as conn:
            conn.execute(ts_notifications.update().where(ts_notifications.c.id == note_id)
                         .values(**values))

    def notes_of(self, run_id: str) -> list:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(ts_notifications).where(
                ts_notifications.c.run_id == run_id).order_by(ts_notifications.c.id)).all()

    def previous_outcome(self, job_id: str, before: str) -> Optional[tuple]:
        """(id, status) of the job's last run before ``before`` that ended (for 'recovered')."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(ts_runs.c.id, ts_runs.c.status).where(
                ts_runs.c.job_id == job_id, ts_runs.c.id < before,
                ts_runs.c.status.in_(ENDED_STATUSES))
                .order_by(ts_runs.c.id.desc()).limit(1)).first()

    def cancel_queued(self, run_id: str) -> bool:
        with self.write() as conn:
            return bool(conn.execute(ts_runs.update().where(   # not claimed by a node yet
                ts_runs.c.id == run_id, ts_runs.c.status == "queued",
                ts_runs.c.node.is_(None)).values(
                status="cancelled", finished_at=_utcnow(),
                error="cancelled before it started")).rowcount)

    def request_cancel(self, run_id: str) -> bool:
        """Ask the node running (or holding) ``run_id`` to cancel it (it looks at each
        heartbeat)."""
        with self.write() as conn:
            return bool(conn.execute(ts_runs.update().where(ts_runs.c.id == run_id, _TAKEN)
                .values(cancel_requested=True)).rowcount)

    def heartbeat_runs(self) -> tuple[set, set]:
        """Mark this node's running runs alive. Returns (ids still running here, ids whose
        cancel was asked for). The rows are locked in id order first: the history writer ends
        a batch of them in that order, and one UPDATE would lock them in scan order (deadlock)."""
        with self.write() as conn:
            self._bounded(conn)
            ids = conn.execute(sa.select(ts_runs.c.id).where(*self._mine())
                .order_by(ts_runs.c.id).with_for_update()).scalars().all()
            rows = conn.execute(ts_runs.update().where(
                ts_runs.c.id.in_(ids), *self._mine())
                .values(heartbeat_at=self.now())
                .returning(ts_runs.c.id, ts_runs.c.cancel_requested)).all()
        return {r.id for r in rows}, {r.id for r in rows if r.cancel_requested}

    def rescue(self, silent_for: float) -> list:
        """Runs whose node stopped heart-beating become ``interrupted``, naming the node; runs
        it had claimed but not started go back to the queue (nothing of them ran). Rows
        another transaction holds (a frozen node's history writer, say) are skipped, not
        waited for: they are looked at again next time."""
        with self.write() as conn:
            self._bounded(conn)
            claimed = conn.execute(sa.select(ts_runs.c.id).where(
                ts_runs.c.status == "queued", ts_runs.c.node.is_not(None),
                ts_runs.c.heartbeat_at < self._ago(silent_for))
                .order_by(ts_runs.c.id).with_for_update(skip_locked=True)).scalars().all()
            if claimed and conn.execute(ts_runs.update().where(
                    ts_runs.c.id.in_(claimed), ts_runs.c.status == "queued")
                    .values(node=None, heartbeat_at=None)).rowcount:
                self.notify(conn, "ts_runs")
            ids = conn.execute(sa.select(ts_runs.c.id).where(
                ts_runs.c.status == "running", ts_runs.c.heartbeat_at < self._ago(silent_for))
                .order_by(ts_runs.c.id).with_for_update(skip_locked=True)).scalars().all()
            if not ids:
                return []
            return conn.execute(ts_runs.update().where(
                ts_runs.c.id.in_(ids), ts_runs.c.status == "running")
                .values(status="interrupted", finished_at=self.now(),
                        error=sa.literal("interrupted: node ") + sa.func.coalesce(
                            ts_runs.c.node, "?") + sa.literal(
                            f" stopped heart-beating for over {silent_for:g}s (killed, or its "
                            f"machine is gone)"))
                .returning(*_SUMMARY_COLUMNS)).all()

    def sweep(self, node: Optional[str]) -> list:
        """At start-up: runs left ``running`` by this node's previous life (all runs on
        SQLite, where only one node exists) are interrupted, and those it had claimed but not
        started go back to the queue. Returns the interrupted ones."""
        where = [ts_runs.c.status == "running"]
        claimed = [ts_runs.c.status == "queued", ts_runs.c.node.is_not(None)]
        if node is not None:
            where.append(ts_runs.c.node == node)
            claimed.append(ts_runs.c.node == node)
        with self.write() as conn:
            conn.execute(ts_runs.update().where(*claimed).values(node=None, heartbeat_at=None))
            return conn.execute(ts_runs.update().where(*where).values(
                status="interrupted", finished_at=_utcnow(),
                error=f"interrupted: the service stopped without finishing this run (found at "
                      f"start-up on {self.node})").returning(*_SUMMARY_COLUMNS)).all()

    def runs_of_processes(self, run_ids: list) -> list:
        """(id, node, pid, job_id) of the runs with these ids: which processes found at
        start-up are runs of this database."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(ts_runs.c.id, ts_runs.c.node, ts_runs.c.pid,
                                          ts_runs.c.job_id)
                                .where(ts_runs.c.id.in_(run_ids[:1000]))).all()

    def add_to_error(self, run_id: str, text: str) -> None:
        with self.write() as conn:
            conn.execute(ts_runs.update().where(ts_runs.c.id == run_id).values(
                error=sa.func.coalesce(ts_runs.c.error, "") + text))

    def active_count(self, job_id: str, ended: frozenset = frozenset()) -> int:
        """Queued and running runs of a job; ``ended``: runs whose end is not written yet."""
        where = [ts_runs.c.job_id == job_id, ts_runs.c.status.in_(("queued", "running"))]
        if ended:
            where.append(ts_runs.c.id.not_in(ended))
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(ts_runs).where(*where)
                                ).scalar()

    # runs: reads

    def runs(self, job_id=None, status=None, since=None, limit=50, offset=0,
             trigger=None, before=None, after=None) -> Page:
        """Runs newest first. ``before``/``after`` are run ids (keyset cursors: ids sort by
        time), cheap at any depth where ``offset`` reads every row it skips. ``.total`` counts
        the matches (``before`` included, ``after`` not) up to ``offset + TOTAL_CAP``;
        ``.capped`` says there are more."""
        conds = []
        if job_id:
            conds.append(ts_runs.c.job_id == job_id)
        if status:
            conds.append(ts_runs.c.status.in_(status.split(",") if isinstance(status, str)
                                              else status))
        if trigger:
            conds.append(ts_runs.c.trigger == trigger)
        if since:
            conds.append(ts_runs.c.scheduled_at >= _naive_utc(since))
        if before:
            conds.append(ts_runs.c.id < before)
        query = sa.select(*_SUMMARY_COLUMNS).where(*conds, *(
            [ts_runs.c.id > after] if after else [])).limit(limit).offset(offset)
        cap = offset + TOTAL_CAP
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(ts_runs.c.id.asc() if after
                                               else ts_runs.c.id.desc())).all()
            total = conn.execute(sa.select(sa.func.count()).select_from(
                sa.select(ts_runs.c.id).where(*conds).limit(cap + 1).subquery())).scalar()
        page = Page(run_to_dict(r) for r in (reversed(rows) if after else rows))
        page.total, page.capped = min(total, cap), total > cap
        return page

    def run(self, run_id: str):
        with self.engine.connect() as conn:
            return conn.execute(sa.select(ts_runs).where(ts_runs.c.id == run_id)).first()

    def run_spans(self, since: dt.datetime, limit: int) -> list:
        """The newest ``limit`` (+1, to tell there are more) runs scheduled since ``since``, only
        what a timeline draws: no output, no counting, no conversion to the API's shape."""
        columns = [ts_runs.c[name] for name in RUN_SPAN_COLUMNS]
        with self.engine.connect() as conn:
            return conn.execute(sa.select(*columns).where(
                ts_runs.c.scheduled_at >= _naive_utc(since))
                .order_by(ts_runs.c.id.desc()).limit(limit + 1)).all()

    def run_counts(self, since: dt.datetime) -> dict:
        with self.engine.connect() as conn:
            # by an expression: grouping by the bare column, SQLite walks ix_ts_runs_status
            # (all of history, 30x slower at 1M runs) rather than sort one day's rows
            status = ts_runs.c.status + ""
            return dict(conn.execute(sa.select(status, sa.func.count())
                                     .where(ts_runs.c.scheduled_at >= since)
                                     .group_by(status)).all())

    def job_state(self, job_id: str) -> tuple:
        """(next fire as a UTC timestamp, newest run) of one job: two statements built once, on
        one connection (a GET of one job costs a millisecond less than with last_runs)."""
        with self.engine.connect() as conn:
            next_time = conn.execute(_NEXT_FIRE, {"id": job_id}).scalar()
            last = conn.execute(_NEWEST_RUN, {"id": job_id}).first()
        return next_time, run_to_dict(last) if last is not None else None

    def last_runs(self, job_ids: Optional[list] = None) -> dict:
        """{job_id: its newest run} for these jobs (all jobs when None)."""
        # one index probe per job (a max per job_id), not a scan of every job's history
        newest = sa.select(sa.select(sa.func.max(ts_runs.c.id)).where(
            ts_runs.c.job_id == ts_jobs.c.id).scalar_subquery())
        if job_ids is not None:
            newest = newest.where(ts_jobs.c.id.in_(job_ids))
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(*_SUMMARY_COLUMNS)
                                .where(ts_runs.c.id.in_(newest))).all()
        return {r.job_id: run_to_dict(r) for r in rows}

    def prune(self, keep_runs: int, keep_days: float, stopping=lambda: False) -> int:
        """Retention: finished runs older than keep_days, and all but keep_runs per job; GUI
        sessions past their expiry; nodes silent for a day. Runs go in chunks of a few ms, each
        its own transaction begun only when no other writer waits: fires wait one chunk at most.
        ``stopping()`` true ends it early (the service stops)."""
        cutoff = _utcnow() - dt.timedelta(days=keep_days)
        deleted = self._delete_runs([ts_runs.c.scheduled_at < cutoff], [ts_runs.c.scheduled_at],
                                    stopping)
        for job_id, edge in self._run_edges(keep_runs).items():
            deleted += self._delete_runs([ts_runs.c.job_id == job_id, ts_runs.c.id < edge],
                                         [ts_runs.c.id], stopping)
        with self.write() as conn:
            conn.execute(ts_sessions.delete().where(ts_sessions.c.expires_at < _utcnow()))
            conn.execute(ts_notifications.delete().where(
                ts_notifications.c.created_at < cutoff, ts_notifications.c.status != "pending"))
            conn.execute(ts_nodes.delete().where(ts_nodes.c.heartbeat_at < self._ago(86400)))
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
        with self.engine.connect() as conn:   # reads: no lock held
            job_ids = conn.execute(sa.select(jobs.c.id).where(jobs.c.id.is_not(None))).scalars()
            edges = {job: conn.execute(sa.select(ts_runs.c.id).where(job_id == job).order_by(
                ts_runs.c.id.desc()).offset(keep_runs - 1).limit(1)).scalar() for job in job_ids}
        return {job: edge for job, edge in edges.items() if edge is not None}

    def _delete_runs(self, conds: list, order: list, stopping) -> int:
        """Delete the finished runs matching ``conds``: the ids of a chunk are read without the
        lock (by the index that ``order`` walks), then deleted by primary key; the chunk grows
        or shrinks so that the lock is held about PRUNE_CHUNK_S."""
        # by an expression: the status index would be walked instead of the one ``order`` uses
        final = (ts_runs.c.status + "").in_(FINAL_STATUSES)
        select = sa.select(ts_runs.c.id).where(*conds, final).order_by(*order)
        deleted, size = 0, PRUNE_CHUNK
        with self.engine.connect() as conn, self._checkpoints_outside_lock(conn):
            while not stopping():
                ids = conn.execute(select.limit(size)).scalars().all()
                conn.rollback()   # end the read: no snapshot kept while the others write
                if not ids:
                    break
                self._give_way()
                began = time.monotonic()
                with self._write_lock or contextlib.nullcontext(), conn.begin():
                    count = conn.execute(ts_runs.delete().where(ts_runs.c.id.in_(ids),
                                                                final)).rowcount
                took = time.monotonic() - began
                deleted += count
                if count == 0:   # deleted meanwhile (another node prunes): never loop forever
                    break
                if not self.postgres:
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
                size = max(1, min(5000, int(size * PRUNE_CHUNK_S / max(took, 1e-4))))
                # as long again without the lock or the GIL: firing's Python runs meanwhile
                time.sleep(max(took, 0.002))
        return deleted

    @contextlib.contextmanager
    def _checkpoints_outside_lock(self, conn):
        """SQLite copies the WAL into the database in the commit that makes it pass 1,000
        pages, under the write lock: a chunk's commit took up to 100 ms so, and fires waited.
        Retention's connection checkpoints after its chunk instead, without the lock; its
        pages are checkpointed before another writer's commit would have to."""
        if self.postgres:
            yield
            return
        conn.exec_driver_sql("PRAGMA wal_autocheckpoint=0")
        try:
            yield
        finally:
            conn.exec_driver_sql("PRAGMA wal_autocheckpoint=1000")   # SQLite's default

    def _give_way(self, limit: float = 1.0) -> None:
        """Wait (up to ``limit`` s) until no writer waits for the write lock: fires, claims and
        run ends go first, and a retention chunk starts in a gap between them."""
        until = time.monotonic() + limit
        while self.waiting and time.monotonic() < until:
            time.sleep(0.001)

    # nodes and the leader lease (PostgreSQL)

    def register_node(self, values: dict, silent_for: float) -> list:
        """Add this node; refuse when a live node (another process) already has its id.
        Returns the other live nodes: (id, version, schema_version)."""
        with self.write() as conn:
            row = conn.execute(sa.select(ts_nodes, (ts_nodes.c.heartbeat_at > self._ago(
                silent_for)).label("alive")).where(ts_nodes.c.id == self.node)
                .with_for_update()).first()
            if row is not None and row.alive and (row.host, row.pid) != (values["host"],
                                                                        values["pid"]) \
                    and not (row.host == values["host"] and not _pid_alive(row.pid)):
                raise SchedulerError(f"node id {self.node!r} is in use by a live node (pid "
                                     f"{row.pid} on {row.host}); give each node its own "
                                     f"--node-id (TS_NODE_ID)")
            conn.execute(ts_nodes.delete().where(ts_nodes.c.id == self.node))
            conn.execute(ts_nodes.insert().values(id=self.node, started_at=self.now(),
                                                  heartbeat_at=self.now(), **values))
            return [(r.id, r.version, r.schema_version) for r in conn.execute(
                sa.select(ts_nodes).where(ts_nodes.c.id != self.node,
                                          ts_nodes.c.heartbeat_at > self._ago(silent_for)))]

    def heartbeat_node(self, role: str, running: int, config_hash: Optional[str]) -> None:
        with self.write() as conn:
            self._bounded(conn)
            if not conn.execute(ts_nodes.update().where(ts_nodes.c.id == self.node).values(
                    heartbeat_at=self.now(), role=role, running=running,
                    config_hash=config_hash)).rowcount:
                log.warning("node %s: its row was gone (pruned while silent?); joining again",
                            self.node)

    def leave(self) -> None:
        with self.write() as conn:
            conn.execute(ts_nodes.delete().where(ts_nodes.c.id == self.node))

    def nodes(self) -> list:
        with self.engine.connect() as conn:
            now = conn.execute(sa.select(self.now())).scalar() if self.postgres else _utcnow()
            return [(r, (now - r.heartbeat_at).total_seconds()) for r in conn.execute(
                sa.select(ts_nodes).order_by(ts_nodes.c.id))]

    def lease(self):
        """(holder, epoch, seconds left) of the leader lease as the database sees it now."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(ts_lease.c.holder, ts_lease.c.epoch,
                                         ts_lease.c.expires_at, self.now().label("now"))
                               .where(ts_lease.c.name == LEASE)).first()
        if row is None or row.expires_at is None:
            return None, 0, 0.0
        return row.holder, row.epoch, (row.expires_at - row.now).total_seconds()

    def acquire_lease(self, ttl: float) -> tuple[Optional[int], dt.datetime]:
        """Take the lease when it is free or expired (each take is a new epoch); returns
        (epoch or None, database time)."""
        with self.write() as conn:
            self._bounded(conn)
            row = conn.execute(ts_lease.update().where(
                ts_lease.c.name == LEASE,
                sa.or_(ts_lease.c.holder.is_(None), ts_lease.c.expires_at < self.now()))
                .values(holder=self.node, epoch=ts_lease.c.epoch + 1,
                        expires_at=self.now() + sa.func.make_interval(
                            0, 0, 0, 0, 0, 0, sa.literal(float(ttl), sa.Float)),
                        acquired_at=self.now())
                .returning(ts_lease.c.epoch, self.now().label("now"))).first()
            if row is not None:
                self.notify(conn, "ts_lease")
        return (row.epoch, row.now) if row else (None, self.db_time())

    def renew_lease(self, epoch: int, ttl: float) -> Optional[dt.datetime]:
        """Extend the lease held with ``epoch``; the database time, or None when lost."""
        with self.write() as conn:
            self._bounded(conn)
            row = conn.execute(ts_lease.update().where(
                ts_lease.c.name == LEASE, ts_lease.c.holder == self.node,
                ts_lease.c.epoch == epoch, ts_lease.c.expires_at > self.now())
                .values(expires_at=self.now() + sa.func.make_interval(
                    0, 0, 0, 0, 0, 0, sa.literal(float(ttl), sa.Float)))
                .returning(self.now().label("now"))).first()
        return row.now if row else None

    def release_lease(self, epoch: int) -> None:
        """Hand the lease back at once (a graceful stop): the others take it without waiting."""
        with self.write() as conn:
            self._bounded(conn)
            if conn.execute(ts_lease.update().where(
                    ts_lease.c.name == LEASE, ts_lease.c.holder == self.node,
                    ts_lease.c.epoch == epoch).values(holder=None, expires_at=None)).rowcount:
                self.notify(conn, "ts_lease")

    def _bounded(self, conn) -> None:
        """Lease, heartbeat and rescue statements wait at most ``LIVENESS_LOCK_WAIT`` for a
        lock another node holds (a frozen node keeps its locks until the server ends its
        session): past it they fail, and the cluster loop tries again on its next tick."""
        if self.postgres:
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = {int(LIVENESS_LOCK_WAIT * 1000)}")

    def fence(self, conn, epoch: Optional[int]) -> None:
        """Inside a leader's write: prove the lease is still ours with ``epoch``. The row lock
        (FOR SHARE) makes a takeover wait for this transaction, or this one see the takeover."""
        if not self.postgres or epoch is None:
            return
        held = conn.execute(sa.select(ts_lease.c.epoch).where(
            ts_lease.c.name == LEASE, ts_lease.c.holder == self.node, ts_lease.c.epoch == epoch,
            ts_lease.c.expires_at > self.now()).with_for_update(read=True)).first()
        if held is None:
            raise NotLeader(f"node {self.node} no longer holds the lease of epoch {epoch}")

    # GUI sessions: kept here so that a logout holds on every node and across restarts

    def create_session(self, ttl: float) -> str:
        """A new session; returns the secret for the cookie (only its hash is stored)."""
        secret, now = secrets.token_urlsafe(32), _utcnow()
        with self.write() as conn:
            conn.execute(ts_sessions.insert().values(
                id=_secret_hash(secret), created_at=now,
                expires_at=now + dt.timedelta(seconds=ttl)))
        return secret

    def session_active(self, secret: str) -> bool:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(ts_sessions.c.expires_at, ts_sessions.c.revoked_at)
                               .where(ts_sessions.c.id == _secret_hash(secret))).first()
        return row is not None and row.revoked_at is None and row.expires_at > _utcnow()

    def revoke_session(self, secret: str) -> None:
        with self.write() as conn:
            conn.execute(ts_sessions.update().where(ts_sessions.c.id == _secret_hash(secret))
                         .values(revoked_at=_utcnow()))


def _admit(rows: list, running: collections.Counter, policy, now: dt.datetime) -> tuple:
    """Which claimed runs start, and which end (and why), in queue order."""
    started, ended = [], []
    for row in rows:
        run = dict(row._mapping)
        limits = policy(run["job_id"])
        late = (now - run["scheduled_at"]).total_seconds()
        if limits is None:
            ended.append({**run, "status": "cancelled", "error": "the job no longer exists"})
        elif run["trigger"] in ("schedule", "catchup") and limits[1] is not None \
                and late > limits[1]:
            ended.append({**run, "status": "missed", "error": f"waited {late:.1f}s for a "
                          f"worker (misfire_grace_time {limits[1]:g}s)"})
        elif running[run["job_id"]] >= limits[0]:
            ended.append({**run, "status": "skipped", "error": f"{running[run['job_id']]} "
                          f"run(s) still going (max_instances={limits[0]})"})
        else:
            running[run["job_id"]] += 1
            started.append(run)
    return started, ended


# Fires inserted on PostgreSQL as one array per column: the statement's text is the same for any
# number of rows, so psycopg and the server parse it once (a multi-row VALUES differs with each
# count, and parsing it was most of the leader's time at 2,000 fires/s).
_INSERT_RUNS_PG = sa.dialects.postgresql.insert(ts_runs).from_select(
    [c.name for c in ts_runs.c],
    sa.select(*[sa.func.unnest(sa.bindparam(c.name, type_=sa.ARRAY(c.type))).label(c.name)
                for c in ts_runs.c])).on_conflict_do_nothing().returning(ts_runs.c.id)


DONE_MARK = ":done"   # ts_hash's suffix for a schedule with no fire time left (finish_job)
_FIRED_SQLITE = ("SELECT 1 FROM ts_runs WHERE job_id = ? AND scheduled_at = ? "
                 "AND \"trigger\" IN ('schedule', 'catchup') LIMIT 1")
_fire_keys = sa.func.unnest(sa.bindparam("job_ids", type_=sa.ARRAY(sa.String)),
                            sa.bindparam("times", type_=sa.ARRAY(sa.DateTime))
                            ).table_valued("job_id", "scheduled_at").render_derived("k")
_FIRED_PG = sa.select(ts_runs.c.job_id, ts_runs.c.scheduled_at).select_from(_fire_keys.join(
    ts_runs, sa.and_(ts_runs.c.job_id == _fire_keys.c.job_id,
                     ts_runs.c.scheduled_at == _fire_keys.c.scheduled_at))).where(
    ts_runs.c.trigger.in_(("schedule", "catchup")))


_aps_jobs = sa.table(APS_TABLE, sa.column("id"), sa.column("next_run_time"))
_NEXT_FIRE = sa.select(_aps_jobs.c.next_run_time).where(_aps_jobs.c.id == sa.bindparam("id"))
_NEWEST_RUN = sa.select(*_SUMMARY_COLUMNS).where(ts_runs.c.job_id == sa.bindparam("id")) \
    .order_by(ts_runs.c.id.desc()).limit(1)


def _run_row(fields: dict) -> dict:
    row = {c.name: None for c in ts_runs.c}
    row.update(attempt=1, truncated=False, run_on="", cancel_requested=False)
    row.update(fields)
    if row["due_at"] is None:
        row["due_at"] = row["scheduled_at"]
    return row


def _secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
