"""Runs queued by the ends of other runs (a job's ``after:``), inside the transaction that
records each end, whichever path records it (a run's end, a claim's skip, a cancel, a rescue,
the sweep at start, a ping). The jobs that follow which come as data (``plan``, what
``after.build_plan`` makes, set by the job book whenever its jobs change), never from a call into a
part; the unique index ux_ts_runs_upstream makes each end queue a job once, whoever records it
again."""

from __future__ import annotations

import datetime as dt
import logging
import random
from collections.abc import Mapping
from typing import Optional

import sqlalchemy as sa

from .database import Database
from .runs import _run_row
from .schema import new_run_id, ts_jobs, ts_runs
from ..after import Upstream, build_plan, matches
from ..models import FINAL_STATUSES, JobDefinition
from ..timeutil import _utcnow

log = logging.getLogger("task_scheduler")
MAX_CHAIN = 64   # skipped runs (paused jobs) that start their own followers, in one write
_COLLISION_TRIES = 20   # a fire key (job, time, trigger, attempt) taken by another end's run:
#                         each try moves the time a random part of a millisecond on


class AfterStore:
    """The downstream runs of ended runs."""

    def __init__(self, db: Database):
        self.db = db
        # Replaced whole, never changed in place; None until the job book first sets it (the
        # sweep at start-up ends runs before the book is read): then read from ts_jobs.
        self.plan: Optional[Mapping[str, Upstream]] = None

    def follow(self, conn, run_ids: list, retried: bool) -> None:
        """Queue the runs that the ends of ``run_ids`` call for (as committed in ``conn``: a
        row another path ended first is judged by that end). ``retried``: the path that
        ended them retries failures by the job's ``retries`` (``after.matches``)."""
        if not run_ids:
            return
        plan = self.plan if self.plan is not None else self._stored_plan(conn)
        for _ in range(MAX_CHAIN):
            if not plan or not run_ids:
                return
            ended = conn.execute(sa.select(
                ts_runs.c.id, ts_runs.c.job_id, ts_runs.c.status, ts_runs.c.attempt,
                ts_runs.c.finished_at).where(ts_runs.c.id.in_(sorted(set(run_ids))),
                                             ts_runs.c.parent_run.is_(None))).all()
            ended = [r for r in ended if r.job_id in plan and r.status in FINAL_STATUSES]
            if not ended:
                return
            rows = _downstream_rows(plan, ended, retried, self.db.dialect.now_value(conn))
            inserted = self._insert(conn, rows)
            if any(r["status"] == "queued" for r in inserted):
                self.db.notify(conn, "ts_runs")
            run_ids, retried = [r["id"] for r in inserted if r["status"] != "queued"], False

    def _stored_plan(self, conn) -> Mapping[str, Upstream]:
        """The plan from the jobs in ts_jobs: those with ``after:``, and the jobs they name
        (their retries)."""
        def parsed(where) -> list:
            found = []
            for row in conn.execute(sa.select(ts_jobs.c.definition, ts_jobs.c.paused)
                                    .where(where)):
                try:
                    found.append((JobDefinition.model_validate_json(row.definition), row.paused))
                except ValueError:   # a definition this release cannot read: the book says so
                    continue
            return found
        following = [(d, p) for d, p in parsed(ts_jobs.c.definition.contains('"after"'))
                     if d.after is not None]
        named = sorted({d.after.job for d, _ in following})
        jobs = {d.id: (d, p) for d, p in following + (parsed(ts_jobs.c.id.in_(named))
                                                      if named else [])}
        return build_plan(jobs.values())

    def _insert(self, conn, rows: list[dict]) -> list[dict]:
        """Insert the rows; one whose (job, upstream run) exists is left out. A row refused
        for its fire key alone (another end got the same time: a rescue ends many runs at one
        instant) moves a little later and is inserted again."""
        done: list[dict] = []
        for _ in range(_COLLISION_TRIES):
            if not rows:
                break
            inserted = set(self.db.dialect.insert_runs(conn, [_run_row(r) for r in rows]))
            done += [r for r in rows if r["id"] in inserted]
            rows = [r for r in rows if r["id"] not in inserted]
            taken = set(conn.execute(sa.select(ts_runs.c.job_id, ts_runs.c.upstream_run).where(
                ts_runs.c.upstream_run.in_([r["upstream_run"] for r in rows]))).all()) \
                if rows else set()
            rows = [{**r, "id": _run_id(r["due_at"]), "scheduled_at": r["scheduled_at"]
                     + dt.timedelta(microseconds=random.randint(1, 1000))}
                    for r in rows if (r["job_id"], r["upstream_run"]) not in taken]
        if rows:
            log.error("after: %d runs not queued: no free time for them (%s)", len(rows),
                      ", ".join(f"{r['job_id']} after run {r['upstream_run']}" for r in rows))
        return done


def _run_id(db_now: dt.datetime) -> str:
    """A run id on the database's clock (as the runner's ids: they sort in creation order
    whatever this machine's clock says), ``db_now`` read in this transaction."""
    return new_run_id((db_now - _utcnow()).total_seconds())


def _downstream_rows(plan: Mapping[str, Upstream], ended: list, retried: bool,
                     now: dt.datetime) -> list[dict]:
    """The runs to insert for these ended rows; times made distinct per job (a rescue ends
    many runs at one instant, and a fire key holds one run per time)."""
    rows, last = [], {}
    for end in sorted(ended, key=lambda r: r.id):
        upstream = plan[end.job_id]
        for down in upstream.jobs:
            if not matches(upstream, down, end.status, end.attempt, retried):
                continue
            at = end.finished_at or now
            if down.job_id in last and at <= last[down.job_id]:
                at = last[down.job_id] + dt.timedelta(microseconds=1)
            last[down.job_id] = at
            rows.append(_downstream_row(down, end, at, now))
    return rows


def _downstream_row(down, end, at: dt.datetime, now: dt.datetime) -> dict:
    row = {"id": _run_id(now), "job_id": down.job_id, "trigger": "after", "attempt": 1,
           "scheduled_at": at, "due_at": now, "status": "queued", "run_on": down.run_on,
           "upstream_run": end.id}
    if down.held is not None:
        row.update(status="skipped", finished_at=now, error=(
            f"the job is {down.held}: not run after {end.job_id}'s run {end.id} ended "
            f"{end.status}"))
    return row
