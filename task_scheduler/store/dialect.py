"""What differs between SQLite and PostgreSQL, in one place: the clock, row locks (SKIP
LOCKED, lock timeouts), writers taking turns, insert-or-ignore of runs, NOTIFY, WAL checkpoints.
The store modules ask their dialect; none of them branches on the database's name. It holds no
state of its own beyond the engine's name and runs no SQL but what it is handed a connection for."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import threading
from typing import Optional

import functools

import sqlalchemy as sa
import sqlalchemy.dialects.sqlite

from .schema import _FINAL_SQL, SEARCH_TABLE, ts_runs
from ..timeutil import _utcnow


class SQLiteDialect:
    """One node, this machine's clock; writers take turns on a lock before they begin (never
    inside a transaction), so no row lock is ever needed."""

    clustered = False   # one node: no lease, no heartbeats, no NOTIFY

    def write_lock(self) -> Optional[threading.Lock]:
        return threading.Lock()

    def now(self):
        """The database clock, naive UTC: a value here, a SQL expression on PostgreSQL."""
        return _utcnow()

    def now_value(self, conn) -> dt.datetime:
        return _utcnow()

    def ago(self, seconds: float):
        return _utcnow() - dt.timedelta(seconds=seconds)

    def later(self, seconds: float):
        return _utcnow() + dt.timedelta(seconds=seconds)

    def skip_locked(self, query):
        return query

    def lock_rows(self, conn, query) -> None:
        """Lock these rows till commit: here the write lock already serialises writers."""

    def bound_lock_wait(self, conn, seconds: float) -> None:
        """No row locks: a writer waits for the write lock only (busy_timeout bounds it)."""

    def channel_prefix(self, engine: sa.Engine) -> str:
        return ""

    def publish(self, conn, channel: str, payload: dict) -> None:
        """No other node listens: this process's bus hears the commit (Database.write)."""

    def insert_runs(self, conn, values: list[dict]) -> list[str]:
        """Insert runs, leaving out those whose fire key exists; the ids inserted."""
        statement = sa.dialects.sqlite.insert(ts_runs).on_conflict_do_nothing() \
            .returning(ts_runs.c.id)
        if len(values) > 1:
            return [r.id for r in conn.execute(statement, values)]
        return list(conn.execute(statement.values(**values[0])).scalars())

    def insert_new(self, conn, table: sa.Table, row: dict) -> bool:
        """Insert ``row`` unless its unique key is taken; whether it was inserted."""
        statement = sa.dialects.sqlite.insert(table).on_conflict_do_nothing()
        return _inserted(conn, statement, table, row)

    def fired(self, conn, keys: list[tuple]) -> set:
        """Which (job_id, scheduled_at) have a fire row: one lookup each, on this transaction's
        cursor (sqlite3 caches the statement)."""
        to_db = ts_runs.c.scheduled_at.type.dialect_impl(conn.dialect).bind_processor(
            conn.dialect)   # the text SQLAlchemy stores a DateTime as
        cursor = conn.connection.cursor()
        try:
            return {(job_id, at) for job_id, at in keys
                    if cursor.execute(_FIRED_SQLITE, (job_id, to_db(at))).fetchone()}
        finally:
            cursor.close()

    def checkpoint(self, conn) -> None:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    def output_match(self, phrase: str, conds: list, limit: int, oldest: bool = False) -> list:
        """Statements finding the ids of the ``limit`` newest (``oldest``: oldest) runs that
        ``conds`` select whose stdout or stderr holds ``phrase`` (SEARCH_MIN characters or
        more), case folded. Ended runs by the FTS5 index, the phrase quoted as one FTS5 string
        (what a user types never reads as FTS5 syntax: OR, *, -, NEAR); newest first, the index
        is read from its last row back and stops at ``limit`` (a phrase in most runs is found
        in ~15 ms where reading all its matches takes ~130 ms at 100,000 runs): its rowids
        follow insertion, and runs are inserted as their ids are made, so the two orders agree
        but for runs made within moments of each other, and the caller sorts by id. Running
        runs (not indexed) by reading their output (lower(): ASCII case only, as LIKE)."""
        fts = '"' + phrase.replace('"', '""') + '"'
        running = _running(sa.or_(*(self.position(column, phrase) > 0
                                    for column in (ts_runs.c.stdout, ts_runs.c.stderr))))
        if oldest:
            indexed = sa.text(f"ts_runs.rowid IN (SELECT rowid FROM {SEARCH_TABLE} WHERE "
                              f"{SEARCH_TABLE} MATCH :ts_fts)").bindparams(ts_fts=fts)
            return [ids_of([*conds, way], limit, oldest) for way in (indexed, running)]
        rowid = sa.literal_column(f"{SEARCH_TABLE}.rowid")
        indexed = sa.select(ts_runs.c.id).select_from(sa.table(SEARCH_TABLE).join(
            ts_runs, sa.literal_column("ts_runs.rowid") == rowid)).where(
            sa.text(f"{SEARCH_TABLE} MATCH :ts_fts").bindparams(ts_fts=fts), *conds) \
            .order_by(rowid.desc()).limit(limit)
        return [indexed, ids_of([*conds, running], limit)]

    def plan_each(self, conn) -> None:
        """Nothing: SQLite plans each statement as it is prepared."""

    def position(self, column, phrase: str):
        """Where ``phrase`` begins in ``column`` (1-based; 0: nowhere), case folded as lower()."""
        return sa.func.instr(sa.func.lower(column), sa.func.lower(phrase))

    def epoch_seconds(self, column):
        """A DateTime column (naive UTC, stored as text here) as whole seconds since 1970."""
        return sa.cast(sa.func.strftime("%s", column), sa.BigInteger)

    @contextlib.contextmanager
    def checkpoints_outside_lock(self, conn):
        """SQLite copies the WAL into the database in the commit that makes it pass 1,000
        pages, under the write lock: a chunk's commit took up to 100 ms so, and fires waited.
        Retention's connection checkpoints after its chunk instead, without the lock."""
        conn.exec_driver_sql("PRAGMA wal_autocheckpoint=0")
        try:
            yield
        finally:
            conn.exec_driver_sql("PRAGMA wal_autocheckpoint=1000")   # SQLite's default


class PostgresDialect:
    """Several nodes: times they compare come from the database clock, claimers skip rows
    another holds, liveness statements wait a bounded time for locks, changes go out by NOTIFY."""

    clustered = True

    def write_lock(self) -> Optional[threading.Lock]:
        return None   # row locks and MVCC: writers need not take turns

    def now(self):
        return sa.func.timezone("UTC", sa.func.now())

    def now_value(self, conn) -> dt.datetime:
        return conn.execute(sa.select(self.now())).scalar()

    def ago(self, seconds: float):
        return self.now() - _interval(seconds)

    def later(self, seconds: float):
        return self.now() + _interval(seconds)

    def skip_locked(self, query):
        return query.with_for_update(skip_locked=True)

    def lock_rows(self, conn, query) -> None:
        conn.execute(query.with_for_update())

    def bound_lock_wait(self, conn, seconds: float) -> None:
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = {int(seconds * 1000)}")

    def channel_prefix(self, engine: sa.Engine) -> str:
        """NOTIFY channels belong to the whole database: nodes using another schema of it
        (another installation, a test) must not hear this one."""
        with engine.connect() as conn:
            schema = conn.execute(sa.text("SELECT current_schema()")).scalar()
        return "" if schema in (None, "public") else f"{schema}_"

    def publish(self, conn, channel: str, payload: dict) -> None:
        conn.execute(sa.select(sa.func.pg_notify(channel, json.dumps(payload))))

    def insert_runs(self, conn, values: list[dict]) -> list[str]:
        """One statement text whatever the count: see _insert_runs_pg."""
        columns = {c.name: [v[c.name] for v in values] for c in ts_runs.c}
        return list(conn.execute(_insert_runs_pg(), columns).scalars())

    def insert_new(self, conn, table: sa.Table, row: dict) -> bool:
        statement = _pg().insert(table).on_conflict_do_nothing()
        return _inserted(conn, statement, table, row)

    def fired(self, conn, keys: list[tuple]) -> set:
        return {tuple(row) for row in conn.execute(_FIRED_PG, {
            "job_ids": [k[0] for k in keys], "times": [k[1] for k in keys]})}

    def checkpoint(self, conn) -> None:
        """The server checkpoints by itself."""

    def output_match(self, phrase: str, conds: list, limit: int, oldest: bool = False) -> list:
        """As on SQLite, by ILIKE (% and _ escaped): ended runs through the partial pg_trgm
        indexes (the status list written out as their predicate is, so the planner can prove
        it; it walks the newest runs first instead when most hold the phrase), running runs by
        reading their output."""
        pattern = f"%{like_escape(phrase)}%"
        holds = sa.or_(ts_runs.c.stdout.ilike(pattern, escape="\\"),
                       ts_runs.c.stderr.ilike(pattern, escape="\\"))
        # two statements, not one OR: the planner would factor ``holds`` out of the OR, and
        # the indexes' predicate would no longer be implied
        return [ids_of([*conds, way], limit, oldest) for way in (
            sa.and_(sa.text(f"ts_runs.status IN ({_FINAL_SQL})"), holds), _running(holds))]

    def plan_each(self, conn) -> None:
        """Plan this transaction's statements for their own values: a phrase in most runs is
        best found newest first, a rare one through the index, and a plan cached for a prepared
        statement (psycopg prepares a statement run five times) would treat both alike."""
        conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")

    def position(self, column, phrase: str):
        return sa.func.strpos(sa.func.lower(column), sa.func.lower(phrase))

    def epoch_seconds(self, column):
        """A DateTime column (timestamp without time zone, UTC) as whole seconds since 1970."""
        return sa.cast(sa.func.floor(sa.extract("epoch", column)), sa.BigInteger)

    @contextlib.contextmanager
    def checkpoints_outside_lock(self, conn):
        yield


def dialect_for(engine: sa.Engine):
    return PostgresDialect() if engine.dialect.name == "postgresql" else SQLiteDialect()


def _running(holds):
    """The running runs whose output ``holds`` the phrase, as a subquery: found by the status
    index (a few rows), where a condition beside ORDER BY id would walk every run by id."""
    return ts_runs.c.id.in_(sa.select(ts_runs.c.id).where(ts_runs.c.status == "running", holds))


def ids_of(conds: list, limit: int, oldest: bool = False):
    """The ids of the ``limit`` newest (``oldest``: oldest) runs that ``conds`` select."""
    return sa.select(ts_runs.c.id).where(*conds).order_by(
        ts_runs.c.id.asc() if oldest else ts_runs.c.id.desc()).limit(limit)


def like_escape(text: str) -> str:
    """``text`` as a LIKE pattern matching itself (escape character: backslash)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _inserted(conn, statement, table: sa.Table, row: dict) -> bool:
    key = table.primary_key.columns[0]
    return conn.execute(statement.values(**row).returning(key)).first() is not None


def _interval(seconds: float):
    return sa.func.make_interval(0, 0, 0, 0, 0, 0, sa.literal(float(seconds), sa.Float))


# Fires inserted on PostgreSQL as one array per column: the statement's text is the same for any
# number of rows, so psycopg and the server parse it once (a multi-row VALUES differs with each
# count, and parsing it was most of the leader's time at 2,000 fires/s).
@functools.cache
def _insert_runs_pg():
    return _pg().insert(ts_runs).from_select(
        [c.name for c in ts_runs.c],
        sa.select(*[sa.func.unnest(sa.bindparam(c.name, type_=sa.ARRAY(c.type))).label(c.name)
                    for c in ts_runs.c])).on_conflict_do_nothing().returning(ts_runs.c.id)


def _pg():
    """SQLAlchemy's PostgreSQL dialect, imported on first use: a SQLite process never loads
    it (nor its drivers' modules, ~2 MiB)."""
    import sqlalchemy.dialects.postgresql as pg
    return pg

_FIRED_SQLITE = ("SELECT 1 FROM ts_runs WHERE job_id = ? AND scheduled_at = ? "
                 "AND \"trigger\" IN ('schedule', 'catchup') LIMIT 1")
_fire_keys = sa.func.unnest(sa.bindparam("job_ids", type_=sa.ARRAY(sa.String)),
                            sa.bindparam("times", type_=sa.ARRAY(sa.DateTime))
                            ).table_valued("job_id", "scheduled_at").render_derived("k")
_FIRED_PG = sa.select(ts_runs.c.job_id, ts_runs.c.scheduled_at).select_from(_fire_keys.join(
    ts_runs, sa.and_(ts_runs.c.job_id == _fire_keys.c.job_id,
                     ts_runs.c.scheduled_at == _fire_keys.c.scheduled_at))).where(
    ts_runs.c.trigger.in_(("schedule", "catchup")))
