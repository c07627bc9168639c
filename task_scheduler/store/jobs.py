"""Job definitions as rows (ts_jobs), the service's key/value meta, and the next fire times the
leader left in APScheduler's table. Takes data, returns rows; knows nothing of triggers."""

from __future__ import annotations

from typing import Optional

import sqlalchemy as sa

from ..errors import JobConflict
from .database import Database
from .schema import APS_TABLE, ts_jobs, ts_meta
from ..text import _clean
from ..timeutil import _utcnow


class JobStore:
    """The rows of ts_jobs and ts_meta."""

    def __init__(self, db: Database):
        self.db = db

    def get_meta(self, key: str) -> Optional[str]:
        with self.db.engine.connect() as conn:
            return conn.execute(sa.select(ts_meta.c.value).where(ts_meta.c.key == key)).scalar()

    def set_meta(self, key: str, value: str, notify_ids: Optional[list] = None) -> None:
        """Set a meta value; with ``notify_ids``, other nodes are told those jobs changed (a
        changed calendar changes the jobs that use it) in the same transaction."""
        with self.db.write() as conn:
            if conn.execute(ts_meta.update().where(ts_meta.c.key == key)
                            .values(value=value)).rowcount == 0:
                conn.execute(ts_meta.insert().values(key=key, value=value))
            if notify_ids:
                self.db.notify(conn, "ts_jobs", notify_ids)

    def job_rows(self, ids: Optional[list] = None) -> list:
        query = sa.select(ts_jobs)
        if ids is not None:
            query = query.where(ts_jobs.c.id.in_(ids))
        with self.db.engine.connect() as conn:
            return conn.execute(query).all()

    def job_signatures(self) -> dict:
        """{id: (definition_hash, paused)}: enough to see which jobs changed elsewhere."""
        with self.db.engine.connect() as conn:
            return {r.id: (r.definition_hash, r.paused) for r in conn.execute(
                sa.select(ts_jobs.c.id, ts_jobs.c.definition_hash, ts_jobs.c.paused))}

    def jobs_mark(self) -> tuple:
        """(count, newest updated_at) of ts_jobs: changes when a job is added, edited, paused,
        resumed or deleted (the change feed's look for changes it was not told of)."""
        with self.db.engine.connect() as conn:
            return tuple(conn.execute(sa.select(sa.func.count(), sa.func.max(
                ts_jobs.c.updated_at))).one())

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
            with self.db.write() as conn:
                for names, rows in alike.items():
                    conn.execute(ts_jobs.update().where(ts_jobs.c.id == sa.bindparam("_id"))
                                 .values({n: sa.bindparam(n) for n in names if n != "id"}),
                                 rows)
                if new:
                    conn.execute(ts_jobs.insert(), new)
                if deletes:
                    conn.execute(ts_jobs.delete().where(ts_jobs.c.id.in_(deletes)))
                self.db.notify(conn, "ts_jobs", sorted({v["id"] for v in upserts} | set(deletes)))
        except sa.exc.IntegrityError as exc:
            raise JobConflict(f"a job with that id was just created elsewhere: {_clean(exc)}") \
                from None

    def set_paused(self, job_id: str, paused: bool) -> bool:
        with self.db.write() as conn:
            changed = conn.execute(ts_jobs.update().where(ts_jobs.c.id == job_id)
                                   .values(paused=paused, updated_at=_utcnow())).rowcount
            self.db.notify(conn, "ts_jobs", [job_id])
        return bool(changed)

    def next_run_times(self, ids: Optional[list] = None) -> dict:
        """{id: next fire (UTC timestamp)} from APScheduler's table, as the leader left it."""
        table = sa.table(APS_TABLE, sa.column("id"), sa.column("next_run_time"))
        query = sa.select(table.c.id, table.c.next_run_time)
        if ids is not None and len(ids) < 500:   # a page; a full scan beats a huge IN list
            query = query.where(table.c.id.in_(ids))
        with self.db.engine.connect() as conn:
            return {i: t for i, t in conn.execute(query) if t is not None}
