"""Reads of run history: pages of runs (keyset cursors, capped counts), one run with its output,
the dashboard's spans and counts, each job's newest run. Reads only: no write, no lock."""

from __future__ import annotations

import datetime as dt
from typing import Optional

import sqlalchemy as sa

from ..models import ENDED_STATUSES, Page, run_to_dict
from .database import Database
from .schema import (
    APS_TABLE, LIVE_COLUMNS, RUN_SPAN_COLUMNS, TOTAL_CAP, _SUMMARY_COLUMNS, ts_jobs, ts_runs)
from ..timeutil import _naive_utc


ACTIVE = ("queued", "running")


class RunQueries:
    """What the API, the GUI and the notifier read of runs."""

    def __init__(self, db: Database):
        self.db = db

    def runs(self, job_id=None, status=None, since=None, limit=50, offset=0,
             trigger=None, before=None, after=None) -> Page:
        """Runs newest first. ``before``/``after`` are run ids (keyset cursors: ids sort by
        time), cheap at any depth where ``offset`` reads every row it skips. ``.total`` counts
        the matches (``before`` included, ``after`` not) up to ``offset + TOTAL_CAP``;
        ``.capped`` says there are more."""
        conds = _filters(job_id, status, trigger, since, before)
        query = sa.select(*_SUMMARY_COLUMNS).where(*conds, *(
            [ts_runs.c.id > after] if after else [])).limit(limit).offset(offset)
        cap = offset + TOTAL_CAP
        with self.db.engine.connect() as conn:
            rows = conn.execute(query.order_by(ts_runs.c.id.asc() if after
                                               else ts_runs.c.id.desc())).all()
            total = conn.execute(sa.select(sa.func.count()).select_from(
                sa.select(ts_runs.c.id).where(*conds).limit(cap + 1).subquery())).scalar()
        page = Page(run_to_dict(r) for r in (reversed(rows) if after else rows))
        page.total, page.capped = min(total, cap), total > cap
        return page

    def run(self, run_id: str):
        with self.db.engine.connect() as conn:
            return conn.execute(sa.select(ts_runs).where(ts_runs.c.id == run_id)).first()

    def run_spans(self, since: dt.datetime, limit: int) -> list:
        """The newest ``limit`` (+1, to tell there are more) runs scheduled since ``since``, only
        what a timeline draws: no output, no counting, no conversion to the API's shape."""
        columns = [ts_runs.c[name] for name in RUN_SPAN_COLUMNS]
        with self.db.engine.connect() as conn:
            return conn.execute(sa.select(*columns).where(
                ts_runs.c.scheduled_at >= _naive_utc(since))
                .order_by(ts_runs.c.id.desc()).limit(limit + 1)).all()

    def run_counts(self, since: dt.datetime) -> dict:
        with self.db.engine.connect() as conn:
            # by an expression: grouping by the bare column, SQLite walks ix_ts_runs_status
            # (all of history, 30x slower at 1M runs) rather than sort one day's rows
            status = ts_runs.c.status + ""
            return dict(conn.execute(sa.select(status, sa.func.count())
                                     .where(ts_runs.c.scheduled_at >= since)
                                     .group_by(status)).all())

    def job_state(self, job_id: str) -> tuple:
        """(next fire as a UTC timestamp, newest run) of one job: two statements built once, on
        one connection (a GET of one job costs a millisecond less than with last_runs)."""
        with self.db.engine.connect() as conn:
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
        with self.db.engine.connect() as conn:
            rows = conn.execute(sa.select(*_SUMMARY_COLUMNS)
                                .where(ts_runs.c.id.in_(newest))).all()
        return {r.job_id: run_to_dict(r) for r in rows}

    def scrape(self, floor: str, pending: set) -> list:
        """For /metrics: the runs created since run id ``floor``, and the ``pending`` ones
        (seen unfinished before) from earlier, with what the counters need; a pending run no
        longer found (pruned) is left out."""
        columns = [ts_runs.c[name] for name in ("id", "job_id", "status", "trigger",
                                                "scheduled_at", "started_at", "finished_at")]
        with self.db.engine.connect() as conn:
            rows = conn.execute(sa.select(*columns).where(ts_runs.c.id >= floor)).all()
            older = pending - {row.id for row in rows}
            if older:
                rows += conn.execute(sa.select(*columns)
                                     .where(ts_runs.c.id.in_(list(older)))).all()
        return rows

    def live_runs(self, floor: str, cap: int) -> tuple[list, list]:
        """For the change feed: the runs whose id is above ``floor`` and the runs queued or
        running, each at most ``cap`` + 1 rows (more: too many to tell one by one), only the
        LIVE_COLUMNS. Two index range reads (the key; ix_ts_runs_status) on one connection."""
        columns = [ts_runs.c[name] for name in LIVE_COLUMNS]
        with self.db.engine.connect() as conn:
            fresh = conn.execute(sa.select(*columns).where(ts_runs.c.id > floor)
                                 .order_by(ts_runs.c.id).limit(cap + 1)).all()
            # unordered: a backlog of 100,000 queued runs is not sorted to take 201 of them
            active = conn.execute(sa.select(*columns).where(ts_runs.c.status.in_(ACTIVE))
                                  .limit(cap + 1)).all()
        return fresh, active

    def live_runs_by_id(self, ids: list) -> list:
        """The LIVE_COLUMNS of these runs (the feed's runs that left queued or running)."""
        columns = [ts_runs.c[name] for name in LIVE_COLUMNS]
        with self.db.engine.connect() as conn:
            return conn.execute(sa.select(*columns).where(ts_runs.c.id.in_(ids))).all()

    def newest_run_id(self) -> Optional[str]:
        with self.db.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.max(ts_runs.c.id))).scalar()

    def previous_outcome(self, job_id: str, before: str) -> Optional[tuple]:
        """(id, status) of the job's last run before ``before`` that ended (for 'recovered')."""
        with self.db.engine.connect() as conn:
            return conn.execute(sa.select(ts_runs.c.id, ts_runs.c.status).where(
                ts_runs.c.job_id == job_id, ts_runs.c.id < before,
                ts_runs.c.status.in_(ENDED_STATUSES))
                .order_by(ts_runs.c.id.desc()).limit(1)).first()


def _filters(job_id, status, trigger, since, before) -> list:
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
    return conds


_aps_jobs = sa.table(APS_TABLE, sa.column("id"), sa.column("next_run_time"))
_NEXT_FIRE = sa.select(_aps_jobs.c.next_run_time).where(_aps_jobs.c.id == sa.bindparam("id"))
_NEWEST_RUN = sa.select(*_SUMMARY_COLUMNS).where(ts_runs.c.job_id == sa.bindparam("id")) \
    .order_by(ts_runs.c.id.desc()).limit(1)
