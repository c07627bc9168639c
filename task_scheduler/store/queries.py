"""Reads of run history: pages of runs (keyset cursors, capped counts), one run with its output,
the dashboard's spans and counts, each job's newest run. Reads only: no write, no lock."""

from __future__ import annotations

import datetime as dt
from typing import Optional

import sqlalchemy as sa

from ..models import ENDED_STATUSES, Page, run_to_dict
from ..output import find_line, match_line
from .database import Database
from .dialect import ids_of, like_escape
from .schema import (
    APS_TABLE, LIVE_COLUMNS, RUN_SPAN_COLUMNS, SEARCH_MIN, SEARCH_SCAN, TOTAL_CAP,
    _SUMMARY_COLUMNS, ts_jobs, ts_runs)
from ..timeutil import _naive_utc


ACTIVE = ("queued", "running")


class RunQueries:
    """What the API, the GUI and the notifier read of runs."""

    def __init__(self, db: Database):
        self.db = db

    def runs(self, job_id=None, status=None, since=None, limit=50, offset=0,
             trigger=None, before=None, after=None, until=None, node=None, q=None) -> Page:
        """Runs newest first. ``before``/``after`` are run ids (keyset cursors: ids sort by
        time), cheap at any depth where ``offset`` reads every row it skips. ``.total`` counts
        the matches (``before`` included, ``after`` not) up to ``offset + TOTAL_CAP``;
        ``.capped`` says there are more. ``q``: a phrase in stdout or stderr (see _search);
        ``.window`` is set when only the newest runs were searched."""
        conds = _filters(job_id, status, trigger, since, before, until, node)
        if q:   # output is stored with NUL as U+FFFD (history._db_text): so is the phrase
            return self._search_page(conds, q.replace("\0", "\ufffd"), limit, offset, after)
        cap = offset + TOTAL_CAP
        with self.db.engine.connect() as conn:
            rows = conn.execute(sa.select(*_SUMMARY_COLUMNS).where(*conds, *(
                [ts_runs.c.id > after] if after else [])).limit(limit).offset(offset)
                .order_by(ts_runs.c.id.asc() if after else ts_runs.c.id.desc())).all()
            total = conn.execute(sa.select(sa.func.count()).select_from(
                sa.select(ts_runs.c.id).where(*conds).limit(cap + 1).subquery())).scalar()
        return _page(reversed(rows) if after else rows, total, cap)

    def _search_page(self, conds: list, phrase: str, limit: int, offset: int,
                     after: Optional[str]) -> Page:
        """``runs`` with a phrase: the ids of the newest matches (up to the count's cap) found
        once, by each way the database has to find them, then the page's rows by id."""
        cap = offset + TOTAL_CAP
        with self.db.engine.connect() as conn:
            self.db.dialect.plan_each(conn)
            ids = _merged(conn, self._search(conds, phrase, cap + 1), cap + 1)
            wanted = ids[offset:offset + limit]
            if after:   # the page just newer than ``after``
                wanted = _merged(conn, self._search([*conds, ts_runs.c.id > after], phrase,
                                                    limit, oldest=True), limit, oldest=True)
            rows = conn.execute(sa.select(*_SUMMARY_COLUMNS).where(ts_runs.c.id.in_(wanted))
                                .order_by(ts_runs.c.id.desc())).all() if wanted else []
        page = _page(rows, len(ids), cap)
        page.window = None if len(phrase) >= SEARCH_MIN else SEARCH_SCAN
        return page

    def _search(self, conds: list, phrase: str, limit: int, oldest: bool = False) -> list:
        """Statements finding the ids of the newest (``oldest``: oldest) ``limit`` runs that
        ``conds`` select and whose output holds ``phrase``: through the database's index for
        SEARCH_MIN characters or more (dialect.output_match); a shorter phrase no trigram
        index can find, so it is looked for in the newest SEARCH_SCAN of those runs."""
        if len(phrase) >= SEARCH_MIN:
            return self.db.dialect.output_match(phrase, conds, limit, oldest)
        pattern = f"%{like_escape(phrase)}%"
        newest = sa.select(ts_runs.c.id, ts_runs.c.stdout, ts_runs.c.stderr).where(*conds) \
            .order_by(ts_runs.c.id.desc()).limit(SEARCH_SCAN).subquery()   # read first
        return [ids_of([ts_runs.c.id.in_(sa.select(newest.c.id).where(sa.or_(
            newest.c.stdout.ilike(pattern, escape="\\"),
            newest.c.stderr.ilike(pattern, escape="\\"))))], limit, oldest)]

    def matches(self, run_ids: list, phrase: str) -> dict:
        """{run id: the first line holding ``phrase``} (stdout before stderr): found by the
        database, which sends back only a window around it and the newlines before it (an
        output may be a MiB). Output is stored masked: so is the line."""
        if not run_ids or not phrase:
            return {}
        phrase = phrase.replace("\0", "\ufffd")
        found = {}
        with self.db.engine.connect() as conn:
            for row in conn.execute(_match_query(self.db.dialect, run_ids, phrase)):
                stream = "stdout" if row.out_at else "stderr" if row.err_at else None
                if stream is None:   # lower() and the index fold case apart (rare): read it
                    text = self._whole(conn, row.id)
                    found[row.id] = find_line(text, phrase) if text else None
                    continue
                at, start, window, newlines = (row.out_at, row.out_from, row.out_text,
                                               row.out_lines) if stream == "stdout" else (
                    row.err_at, row.err_from, row.err_text, row.err_lines)
                found[row.id] = {"stream": stream, **match_line(
                    window, at - start, len(phrase), start > 1,
                    len(window) >= _WINDOW * 2 + len(phrase)), "line_number": newlines + 1}
        return {k: v for k, v in found.items() if v}

    def _whole(self, conn, run_id: str) -> Optional[dict]:
        row = conn.execute(sa.select(ts_runs.c.stdout, ts_runs.c.stderr)
                           .where(ts_runs.c.id == run_id)).first()
        return row and {"stdout": row.stdout or "", "stderr": row.stderr or ""}

    def run(self, run_id: str):
        with self.db.engine.connect() as conn:
            return conn.execute(sa.select(ts_runs).where(ts_runs.c.id == run_id)).first()

    def run_spans(self, since: dt.datetime, limit: int, job_ids: Optional[list] = None,
                  windows: tuple = ()) -> list:
        """The newest ``limit`` (+1, to tell there are more) runs scheduled since ``since`` (of
        these jobs only, when given), and of each (job ids, from, to) window in ``windows``
        those of these jobs scheduled from ``from`` until before ``to``;
        only what a timeline draws: no output, no counting, no conversion to the API's shape."""
        columns = [ts_runs.c[name] for name in RUN_SPAN_COLUMNS]
        runs = ts_runs.c
        conds = [] if job_ids is not None and not job_ids else [sa.and_(
            runs.scheduled_at >= _naive_utc(since),
            *([] if job_ids is None else [runs.job_id.in_(job_ids)]))]
        conds += [sa.and_(runs.scheduled_at >= _naive_utc(a), runs.scheduled_at < _naive_utc(b),
                          runs.job_id.in_(jobs)) for jobs, a, b in windows]
        cond = sa.or_(*conds) if conds else sa.false()
        with self.db.engine.connect() as conn:
            return conn.execute(sa.select(*columns).where(cond)
                                .order_by(ts_runs.c.id.desc()).limit(limit + 1)).all()

    def run_buckets(self, since: dt.datetime, width: int, offset: int) -> list:
        """(job_id, bucket, status, n) of the runs scheduled since ``since``: bucket ``k``
        holds the runs scheduled from ``k * width - offset`` seconds after 1970-01-01 UTC
        (``offset``: a zone's UTC offset, so that buckets start at its hour edges) for
        ``width`` seconds. One range read of ix_ts_runs_since: grouping by the bare job_id,
        SQLite would rather walk uq_ts_runs_fire in job order (twice as slow at 1M runs)."""
        epoch = self.db.dialect.epoch_seconds(ts_runs.c.scheduled_at)
        bucket = (epoch + sa.literal_column(str(int(offset)))).self_group().op("/")(
            sa.literal_column(str(int(width))))
        job = ts_runs.c.job_id + ""
        with self.db.engine.connect() as conn:
            return conn.execute(sa.select(job, bucket, ts_runs.c.status, sa.func.count())
                                .where(ts_runs.c.scheduled_at >= _naive_utc(since))
                                .group_by(job, bucket, ts_runs.c.status)).all()

    def first_run_since(self, since: dt.datetime) -> Optional[dt.datetime]:
        """When the oldest run scheduled since ``since`` was scheduled (one index probe)."""
        with self.db.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.min(ts_runs.c.scheduled_at)).where(
                ts_runs.c.scheduled_at >= _naive_utc(since))).scalar()

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
        newest = sa.select(sa.select(ts_runs.c.id).where(
            ts_runs.c.job_id == ts_jobs.c.id, ts_runs.c.parent_run.is_(None))
            .order_by(ts_runs.c.id.desc()).limit(1).scalar_subquery())
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
                                                "scheduled_at", "started_at", "finished_at",
                                                "step_id")]
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


def _merged(conn, statements: list, limit: int, oldest: bool = False) -> list:
    """The ids that any of ``statements`` finds, the ``limit`` newest (``oldest``: oldest),
    newest first. One statement per way of finding them: an OR of them would hide each way's
    index from the planner (PostgreSQL's partial indexes, SQLite's FTS table)."""
    found: set = set()
    for statement in statements:
        found.update(conn.execute(statement).scalars())
    return sorted(sorted(found, reverse=not oldest)[:limit], reverse=True)


def _page(rows, total: int, cap: int) -> Page:
    page = Page(run_to_dict(r) for r in rows)
    page.total, page.capped = min(total, cap), total > cap
    return page


_WINDOW = 400   # characters read on each side of a match: a line longer is shown cut


def _match_query(dialect, run_ids: list, phrase: str):
    """Per run: where the phrase is in each stream, the text around it, the newlines before."""
    found = sa.select(ts_runs.c.id, ts_runs.c.stdout, ts_runs.c.stderr,
                      dialect.position(ts_runs.c.stdout, phrase).label("out_at"),
                      dialect.position(ts_runs.c.stderr, phrase).label("err_at")) \
        .where(ts_runs.c.id.in_(run_ids)).subquery()
    columns = [found.c.id, found.c.out_at, found.c.err_at]
    for name, text, at in (("out", found.c.stdout, found.c.out_at),
                           ("err", found.c.stderr, found.c.err_at)):
        start = sa.case((at > _WINDOW, at - _WINDOW), else_=1)
        before = sa.func.substr(text, 1, sa.case((at > 1, at - 1), else_=0))
        columns += [start.label(f"{name}_from"),
                    sa.func.substr(text, start, _WINDOW * 2 + len(phrase)).label(f"{name}_text"),
                    (sa.func.length(before) - sa.func.length(sa.func.replace(before, "\n", "")))
                    .label(f"{name}_lines")]
    return sa.select(*columns)


def _filters(job_id, status, trigger, since, before, until=None, node=None) -> list:
    # a workflow's steps are listed when asked for (trigger=step), or on their run's page
    conds = [] if trigger == "step" else [ts_runs.c.parent_run.is_(None)]
    if job_id:
        conds.append(ts_runs.c.job_id == job_id)
    if status:
        conds.append(ts_runs.c.status.in_(status.split(",") if isinstance(status, str)
                                          else status))
    if trigger:
        conds.append(ts_runs.c.trigger == trigger)
    if since:
        conds.append(ts_runs.c.scheduled_at >= _naive_utc(since))
    if until:
        conds.append(ts_runs.c.scheduled_at <= _naive_utc(until))
    if node:
        conds.append(ts_runs.c.node == node)
    if before:
        conds.append(ts_runs.c.id < before)
    return conds


_aps_jobs = sa.table(APS_TABLE, sa.column("id"), sa.column("next_run_time"))
_NEXT_FIRE = sa.select(_aps_jobs.c.next_run_time).where(_aps_jobs.c.id == sa.bindparam("id"))
_NEWEST_RUN = sa.select(*_SUMMARY_COLUMNS).where(ts_runs.c.job_id == sa.bindparam("id"),
                                                 ts_runs.c.parent_run.is_(None)) \
    .order_by(ts_runs.c.id.desc()).limit(1)
