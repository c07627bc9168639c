"""The schema: every table, the engine (SQLite pragmas, private files), migrations between
schema versions, and run ids on the database's clock."""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from typing import Any, Optional

import sqlalchemy as sa

from ..config import __version__
from ..errors import SchedulerError
from ..models import FINAL_STATUSES

log = logging.getLogger("task_scheduler")


SCHEMA_VERSION = 2



_metadata = sa.MetaData()
ts_meta = sa.Table(
    "ts_meta", _metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
ts_jobs = sa.Table(
    "ts_jobs", _metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("source", sa.String(8), nullable=False),
    sa.Column("definition", sa.Text, nullable=False),
    sa.Column("definition_hash", sa.String(64), nullable=False),
    sa.Column("paused", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)
ts_runs = sa.Table(
    "ts_runs", _metadata,
    sa.Column("id", sa.String(32), primary_key=True),   # time-ordered: newest sorts last
    sa.Column("job_id", sa.String(64), nullable=False),
    sa.Column("trigger", sa.String(16), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False, default=1),
    sa.Column("scheduled_at", sa.DateTime, nullable=False),
    sa.Column("started_at", sa.DateTime),
    sa.Column("finished_at", sa.DateTime),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("exit_code", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("stdout", sa.Text),
    sa.Column("stderr", sa.Text),
    sa.Column("truncated", sa.Boolean, nullable=False, default=False),
    sa.Column("node", sa.String(255)),
    sa.Column("due_at", sa.DateTime),                   # a queued run starts from then on
    sa.Column("heartbeat_at", sa.DateTime),             # its node still runs it
    sa.Column("epoch", sa.Integer),                     # the lease epoch that recorded the fire
    sa.Column("run_on", sa.String(255), nullable=False, default=""),   # labels a node needs
    sa.Column("params", sa.Text),                       # this run's own args/kwargs/env (JSON)
    sa.Column("rerun_of", sa.String(32)),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False),
    sa.Column("pid", sa.Integer),   # a command's process group: found again after a crash
    sa.Column("result", sa.Text),   # a python job's return value, as JSON text
    sa.Column("started_by", sa.String(255)),   # who asked for the run; NULL: the schedule
    *(WORKFLOW_COLUMNS := (   # issue 23: a workflow run's steps are its child runs
        sa.Column("parent_run", sa.String(32)),   # a step: the workflow run it belongs to
        sa.Column("step_id", sa.String(64)),      # a step: which one
        sa.Column("workflow", sa.Text),           # a workflow run: its graph (workflow.graph_of)
        sa.Column("step_output", sa.Text))),      # a step's exported output (``output:``)
    sa.Column("upstream_run", sa.String(32)),   # trigger after: the run whose end queued it
    sa.UniqueConstraint("job_id", "scheduled_at", "trigger", "attempt", name="uq_ts_runs_fire"),
    sa.Index("ix_ts_runs_job_id", "job_id", "id"),
    # "runs since T" by status (the 24 h counts, retention by age) from the index alone
    sa.Index("ix_ts_runs_since", "scheduled_at", "status"),
    sa.Index("ix_ts_runs_status", "status"),
    # a step's row once per attempt, whoever decides it (store/workflows.py)
    sa.Index("uq_ts_runs_step", "parent_run", "step_id", "attempt", unique=True),
)
# The queue: only queued rows are in it, however long the history grows.
_PG_WHERE: dict = {}   # partial index -> its predicate, set on PostgreSQL (pg_predicates)


def _partial(name: str, *columns, where, unique: bool = False) -> sa.Index:
    """A partial index. Its PostgreSQL predicate is set when a PostgreSQL database migrates:
    ``postgresql_where=`` here would load SQLAlchemy's PostgreSQL dialect (and its drivers'
    modules, ~2 MiB) in every process, SQLite ones too."""
    index = sa.Index(name, *columns, unique=unique, sqlite_where=where)
    _PG_WHERE[index] = where
    return index


def pg_predicates() -> None:
    for index, where in _PG_WHERE.items():
        index.dialect_options["postgresql"]["where"] = where


ix_ts_runs_queue = _partial("ix_ts_runs_queue", ts_runs.c.due_at, ts_runs.c.id,
                            where=ts_runs.c.status == "queued")
# A job's ``after:`` queues one run per upstream end: whoever records that end again (a retried
# write, a rescue, a new leader) inserts nothing more.
ux_ts_runs_upstream = _partial("ux_ts_runs_upstream", ts_runs.c.job_id, ts_runs.c.upstream_run,
                               unique=True, where=ts_runs.c.upstream_run.is_not(None))
ts_nodes = sa.Table(
    "ts_nodes", _metadata,
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("version", sa.String(32), nullable=False),
    sa.Column("labels", sa.Text, nullable=False, default=""),
    sa.Column("started_at", sa.DateTime, nullable=False),
    sa.Column("heartbeat_at", sa.DateTime, nullable=False),
    sa.Column("role", sa.String(16), nullable=False, default="follower"),
    sa.Column("config_hash", sa.String(64)),
    sa.Column("running", sa.Integer, nullable=False, default=0),
    sa.Column("schema_version", sa.Integer),   # the schema its code knows (NULL: older code)
)
ts_lease = sa.Table(
    "ts_lease", _metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("holder", sa.String(255)),
    sa.Column("epoch", sa.Integer, nullable=False, default=0),
    sa.Column("expires_at", sa.DateTime),
    sa.Column("acquired_at", sa.DateTime),
)
ts_notifications = sa.Table(
    "ts_notifications", _metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("run_id", sa.String(32), nullable=False),
    sa.Column("job_id", sa.String(64), nullable=False),
    sa.Column("event", sa.String(16), nullable=False),
    sa.Column("target", sa.Text, nullable=False),     # as defined: secrets stay in the database
    sa.Column("payload", sa.Text, nullable=False),    # what is sent, fixed when the run ended
    sa.Column("status", sa.String(8), nullable=False),   # pending, sent, failed
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_at", sa.DateTime, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("log", sa.Text, nullable=False, default="[]"),   # each attempt: at, ok, detail
    sa.Index("ix_ts_notifications_run", "run_id"),
    sa.Index("ix_ts_notifications_due", "status", "next_at"),
)
ts_sessions = sa.Table(
    "ts_sessions", _metadata,
    sa.Column("id", sa.String(64), primary_key=True),   # sha256 of the secret in the cookie
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("expires_at", sa.DateTime, nullable=False),
    sa.Column("revoked_at", sa.DateTime),
    sa.Column("user_name", sa.String(64)),   # None: logged in with the legacy token
)
# People (issue 24): a role each, a password as an scrypt hash (its salt and parameters in the
# text), and API tokens kept only as the sha256 of their secret. New tables: create_all.
ts_users = sa.Table(
    "ts_users", _metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("password_hash", sa.Text),   # None: no password login (SSO or tokens only)
    sa.Column("disabled", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)
ts_api_tokens = sa.Table(
    "ts_api_tokens", _metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("user_name", sa.String(64), nullable=False),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("expires_at", sa.DateTime),
    sa.Column("last_used_at", sa.DateTime),
    sa.Column("revoked_at", sa.DateTime),
    sa.Index("ix_ts_api_tokens_user", "user_name", "name"),
)
# A promise broken (issue 26): one row per breach, decided by the leader in the transaction
# that queues its notifications; the unique key makes a breach once, whoever decides it again
# (a new leader, a second look). ``subject``: the fire's time (late), the run (long_running),
# the silence's start (overdue). A new table: create_all adds it, no schema step.
ts_sla_breaches = sa.Table(
    "ts_sla_breaches", _metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("job_id", sa.String(64), nullable=False),
    sa.Column("event", sa.String(16), nullable=False),      # late, long_running, overdue
    sa.Column("subject", sa.String(64), nullable=False),
    sa.Column("run_id", sa.String(32), nullable=False),     # the run it is about (or records it)
    sa.Column("due_at", sa.DateTime, nullable=False),       # when the promise fell due
    sa.Column("detected_at", sa.DateTime, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.UniqueConstraint("job_id", "event", "subject", name="uq_ts_sla_breaches"),
    sa.Index("ix_ts_sla_breaches_run", "run_id"),
    sa.Index("ix_ts_sla_breaches_detected", "detected_at"),
)
# A heartbeat job's ping token: only its hash (as GUI sessions); it may ping that job, nothing else.
ts_ping_tokens = sa.Table(
    "ts_ping_tokens", _metadata,
    sa.Column("job_id", sa.String(64), primary_key=True),
    sa.Column("token_hash", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
)
# The audit log (issue 24): who did what to which object, when (the database's clock) and
# from where. Append-only: the store has no update of it, and deletes only by retention.
ts_audit = sa.Table(
    "ts_audit", _metadata,
    sa.Column("id", sa.String(32), primary_key=True),   # time-ordered, as run ids
    sa.Column("at", sa.DateTime, nullable=False),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("actor_kind", sa.String(16), nullable=False),
    sa.Column("token_name", sa.String(255)),
    sa.Column("address", sa.String(64)),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("object_type", sa.String(16), nullable=False),
    sa.Column("object_id", sa.String(255), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),   # JSON, secrets masked
    sa.Index("ix_ts_audit_at", "at", "id"),         # newest first, keyset pages, retention
    sa.Index("ix_ts_audit_actor", "actor", "id"),
    sa.Index("ix_ts_audit_object", "object_type", "object_id", "id"),
)
APS_TABLE = "ts_apscheduler_jobs"
TOTAL_CAP = 1_000     # runs counted past the offset: exact for a job's history (keep_runs 1000)
PRUNE_CHUNK = 200     # runs in retention's first chunk; later ones are sized by time:
PRUNE_CHUNK_S = 0.003  # seconds a chunk holds the write lock: what a fire may wait for it
RUN_SPAN_COLUMNS = ("id", "job_id", "trigger", "status", "scheduled_at", "started_at",
                    "finished_at")   # what the dashboard's timeline draws of a run
LIVE_COLUMNS = ("id", "job_id", "status", "node", "trigger", "started_at",
                "finished_at")   # what the change feed tells of a run
_SUMMARY_COLUMNS = [c for c in ts_runs.c if c.name not in ("stdout", "stderr", "params",
                                                           "result", "workflow")]
# Runs that count against max_instances: running, or claimed by a node and waiting for one of
# its workers (they read ``queued`` until their code runs, but they will run). Counted per job
# at every claim: an index of just these rows keeps that from reading the whole queue.
_TAKEN = sa.or_(ts_runs.c.status == "running",
                sa.and_(ts_runs.c.status == "queued", ts_runs.c.node.is_not(None)))
ix_ts_runs_taken = _partial("ix_ts_runs_taken", ts_runs.c.job_id, where=_TAKEN)
LEASE = "leader"
SEARCH_TABLE = "ts_runs_text"   # SQLite: the FTS5 index of finished runs' output
SEARCH_MAX = 200     # characters of a phrase searched for: longer is refused, not cut
SEARCH_MIN = 3       # a trigram index finds phrases of 3 characters and more; shorter ones:
SEARCH_SCAN = 5_000  # the newest runs (of those filtered) read for a short phrase (~100 ms)
SEARCH_INLINE = 20_000   # runs indexed inside migrate on PostgreSQL (~2 s); more: after start
_FINAL_SQL = ", ".join(f"'{s}'" for s in sorted(FINAL_STATUSES))   # constants: no user text


def new_run_id(offset: float = 0.0) -> str:
    """Sortable by creation time (microseconds, hex) with random bits against collisions (not
    secret: ``random``, as ``secrets`` would read the OS for each fire). ``offset``: seconds
    from this machine's clock to the database's (``Cluster.offset``): ids made on nodes whose
    clocks differ still sort in the database's order."""
    micros = time.time_ns() // 1000 + int(offset * 1_000_000)
    with _LAST_ID_LOCK:   # not back in time within a process: ``offset`` is measured again
        # as the node runs, and a correction of a few ms made ids of later writes sort before
        # earlier ones (the audit log's newest-first order broke on PostgreSQL). A jump of more
        # than a second (the first measurement on a skewed machine) is taken as it is.
        last = _LAST_ID_MICROS[0]
        if last - 1_000_000 < micros <= last:
            micros = last + 1
        _LAST_ID_MICROS[0] = micros
    return f"{micros:014x}{random.getrandbits(24):06x}"


_LAST_ID_LOCK = threading.Lock()
_LAST_ID_MICROS = [0]


def create_engine(url: str, busy_timeout: float = 30.0) -> sa.Engine:
    """An engine tuned for us: SQLite in WAL mode with a private file; PostgreSQL with pre-ping,
    UTC sessions, and time limits so that a stalled peer never holds a lock for long."""
    if url.startswith("sqlite"):
        _make_private_sqlite(url)
        engine = sa.create_engine(url, connect_args={"timeout": busy_timeout})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    connect_args = {}
    if "postgresql" in url:
        parsed = sa.make_url(url)
        given = parsed.query.get("options", "")   # e.g. -csearch_path=... : kept, ours added
        # what pg_stat_activity shows for this node's sessions (a URL may name them)
        name = parsed.query.get("application_name", "task-scheduler")
        url = parsed.difference_update_query(["options", "application_name"])
        # A leader stopped inside a transaction (SIGSTOP) would hold its lease row's lock, and
        # a takeover waits for it: the server ends such a transaction after 4 s, before the
        # lease (5 s) runs out, so failover is not stretched. Dead peers: keepalives.
        connect_args = {"application_name": name, "connect_timeout": 10,
                        "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
                        "keepalives_count": 3,
                        # a statement whose packets go unanswered (a silent partition) fails
                        # after 20 s instead of TCP's ~15 min: the node's loops go on
                        "tcp_user_timeout": 20000,
                        "options": f"{given} -c timezone=UTC "
                                   f"-c idle_in_transaction_session_timeout=4000 "
                                   f"-c lock_timeout=10000".strip()}
    return sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10,
                            connect_args=connect_args)


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA cache_size=-512")
    cur.close()


def _sqlite_path(url: str) -> Optional[str]:
    if not url.startswith("sqlite"):
        return None
    path = sa.make_url(url).database
    return None if not path or path == ":memory:" or path.startswith("file:") else path


def _make_private_sqlite(url: str) -> None:
    """The job store holds pickles: the file is created 0600 (SQLite gives -wal/-shm the same)."""
    path = _sqlite_path(url)
    if path is None:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    os.chmod(path, 0o600)


def migrate(engine: sa.Engine) -> int:
    """Create or upgrade our tables; refuse a schema newer than this code. Returns the version.
    Nodes starting together on PostgreSQL take turns (an advisory lock)."""
    if engine.dialect.name == "postgresql":
        pg_predicates()
    with engine.begin() as conn:
        _take_turns(conn)
        _metadata.create_all(conn)
        row = conn.execute(sa.select(ts_meta.c.value).where(ts_meta.c.key == "schema_version"))
        version = int(row.scalar() or 0)
        if version > SCHEMA_VERSION:
            raise SchedulerError(f"the database has schema version {version}, newer than this "
                                 f"task-scheduler {__version__} knows ({SCHEMA_VERSION}): a "
                                 f"newer release has upgraded it. Upgrade task-scheduler on "
                                 f"this node to that release (docs/cluster.md, rolling "
                                 f"upgrades); this node does not start meanwhile")
        for step in range(version + 1, SCHEMA_VERSION + 1) if version else ():
            _MIGRATIONS[step](conn)
        if version == 0:
            conn.execute(ts_meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
        elif version < SCHEMA_VERSION:
            conn.execute(ts_meta.update().where(ts_meta.c.key == "schema_version")
                         .values(value=str(SCHEMA_VERSION)))
        _add_workflow_columns(conn)
        _add_missing_column(conn, "ts_runs", sa.Column("upstream_run", sa.String(32)))
        for index in ts_runs.indexes:   # those added since a database was created, too
            index.create(conn, checkfirst=True)
        if "ix_ts_runs_scheduled_at" in {i["name"] for i in sa.inspect(conn).get_indexes(
                "ts_runs")}:   # became ix_ts_runs_since
            conn.execute(sa.text("DROP INDEX ix_ts_runs_scheduled_at"))
        _add_missing_column(conn, APS_TABLE, sa.Column("ts_hash", sa.String(80)))
        # Additive, nullable, no version step: nodes of the previous release leave them alone.
        _add_missing_column(conn, "ts_runs", sa.Column("pid", sa.Integer))
        _add_missing_column(conn, "ts_runs", sa.Column("result", sa.Text))
        _add_missing_column(conn, "ts_runs", sa.Column("started_by", sa.String(255)))
        _add_missing_column(conn, "ts_nodes", sa.Column("schema_version", sa.Integer))
        _add_missing_column(conn, "ts_sessions", sa.Column("user_name", sa.String(64)))
        _create_search(conn)
        if conn.execute(sa.select(ts_lease.c.name).where(ts_lease.c.name == LEASE)).first() \
                is None:
            conn.execute(ts_lease.insert().values(name=LEASE, epoch=0))
    return SCHEMA_VERSION


def _add_workflow_columns(conn) -> None:
    """The columns of workflows (additive, nullable: nodes of the previous release leave them
    alone), before the indexes that use them."""
    for column in WORKFLOW_COLUMNS:
        _add_missing_column(conn, "ts_runs", sa.Column(column.name, column.type))


def _create_search(conn) -> None:
    """The index that output search uses, created with what it must hold already (no schema
    step: additive, and nodes of the previous release go on without it). Finished runs only:
    a running run's output is rewritten each second, and indexing it each time would hold the
    write lock long; searches read those few runs directly (RunQueries)."""
    if conn.dialect.name == "sqlite":
        _create_search_sqlite(conn)
    elif conn.dialect.name == "postgresql":
        _create_search_postgres(conn)


def _create_search_sqlite(conn) -> None:
    """An FTS5 table over ts_runs' own text (external content: the output is not stored twice)
    with the trigram tokenizer (any substring of 3+ characters, Japanese too, case folded),
    kept in step by triggers on every path that writes a run: inserted ended (pings,
    skipped), ended by an update, output changed after the end, deleted (retention)."""
    if sa.inspect(conn).has_table(SEARCH_TABLE):
        return
    began = time.monotonic()
    final, t = _FINAL_SQL, SEARCH_TABLE
    for ddl in (
            f"CREATE VIRTUAL TABLE {t} USING fts5(stdout, stderr, content='ts_runs', "
            f"content_rowid='rowid', tokenize='trigram')",
            f"CREATE TRIGGER {t}_insert AFTER INSERT ON ts_runs WHEN new.status IN ({final}) "
            f"BEGIN INSERT INTO {t}(rowid, stdout, stderr) "
            f"VALUES (new.rowid, new.stdout, new.stderr); END",
            f"CREATE TRIGGER {t}_delete AFTER DELETE ON ts_runs WHEN old.status IN ({final}) "
            f"BEGIN INSERT INTO {t}({t}, rowid, stdout, stderr) "
            f"VALUES ('delete', old.rowid, old.stdout, old.stderr); END",
            f"CREATE TRIGGER {t}_update AFTER UPDATE OF status, stdout, stderr ON ts_runs "
            f"WHEN old.status IN ({final}) OR new.status IN ({final}) BEGIN "
            f"INSERT INTO {t}({t}, rowid, stdout, stderr) SELECT 'delete', old.rowid, "
            f"old.stdout, old.stderr WHERE old.status IN ({final}); "
            f"INSERT INTO {t}(rowid, stdout, stderr) SELECT new.rowid, new.stdout, "
            f"new.stderr WHERE new.status IN ({final}); END",
            f"INSERT INTO {t}(rowid, stdout, stderr) SELECT rowid, stdout, stderr "
            f"FROM ts_runs WHERE status IN ({final})"):
        conn.exec_driver_sql(ddl)
    _log_backfill(began)


def _create_search_postgres(conn) -> None:
    """pg_trgm GIN indexes on the finished runs' stdout and stderr (partial: a running run's
    output, rewritten each second, is not indexed), here when the history is small; a longer
    one is left to ``build_search_index`` after start (CREATE INDEX here would stop every
    node's writes to ts_runs while it reads all of it). Without the extension (not on the
    server, no right to create it) search still works, by a scan: said once, here."""
    if all(_index_valid(conn, name) for name, _ in _TRIGRAM_INDEXES):
        return
    ops = _trigram_ops(conn)
    if ops is None or conn.execute(sa.select(sa.func.count()).select_from(
            sa.select(ts_runs.c.id).limit(SEARCH_INLINE + 1).subquery())).scalar() > SEARCH_INLINE:
        return
    began = time.monotonic()
    for name, column in _TRIGRAM_INDEXES:
        if _index_valid(conn, name) is False:   # an interrupted concurrent build's leftover
            conn.exec_driver_sql(f"DROP INDEX {name}")
        conn.exec_driver_sql(_trigram_index(name, column, ops, ""))
    _log_backfill(began)


def build_search_index(engine: sa.Engine) -> bool:
    """PostgreSQL, after migrate: the trigram indexes that migrate left to build (a long
    history) built CONCURRENTLY: every node goes on writing runs meanwhile, and searches read
    the runs until they are done. One node builds at a time (an advisory lock: the others
    skip); an index an interrupted build left invalid is dropped and built again (an invalid
    index is never used). Returns whether it built anything."""
    if engine.dialect.name != "postgresql":
        return False
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")   # CONCURRENTLY needs it
        ops, todo = _trigram_found(conn), [(name, column) for name, column in _TRIGRAM_INDEXES
                                            if not _index_valid(conn, name)]
        key = sa.func.hashtext(sa.func.current_schema())
        if ops is None or not todo or not conn.execute(
                sa.select(sa.func.pg_try_advisory_lock(0x7453_7478, key))).scalar():
            return False
        try:
            began = time.monotonic()
            log.info("output search: indexing the output of the runs so far, concurrently "
                     "(searches read the runs until it is done)")
            for name, column in todo:
                if _index_valid(conn, name) is False:
                    conn.exec_driver_sql(f"DROP INDEX CONCURRENTLY {name}")
                conn.exec_driver_sql(_trigram_index(name, column, ops, "CONCURRENTLY"))
            log.info("output search: indexed in %.1f s", time.monotonic() - began)
        finally:
            conn.execute(sa.select(sa.func.pg_advisory_unlock(0x7453_7478, key)))
    return True


_TRIGRAM_INDEXES = [(f"ix_ts_runs_{c}_trgm", c) for c in ("stdout", "stderr")]


def _trigram_index(name: str, column: str, ops: str, how: str) -> str:
    return (f"CREATE INDEX {how} IF NOT EXISTS {name} ON ts_runs USING gin ({column} {ops}) "
            f"WHERE status IN ({_FINAL_SQL})")


def _index_valid(conn, name: str) -> Optional[bool]:
    """Whether this schema's index ``name`` is usable; None: there is none."""
    return conn.execute(sa.text(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relname = :name AND c.relnamespace = current_schema()::regnamespace"),
        {"name": name}).scalar()


def _trigram_found(conn) -> Optional[str]:
    """pg_trgm's operator class, qualified by the schema holding the extension; None: none."""
    found = conn.exec_driver_sql("SELECT extnamespace::regnamespace::text FROM pg_extension "
                                 "WHERE extname = 'pg_trgm'").scalar()
    return None if found is None else f"{found}.gin_trgm_ops"


def _trigram_ops(conn) -> Optional[str]:
    """pg_trgm's operator class, the extension created if it is not there: in ``public``
    where it can be (one for the database: dropping a deployment's schema must not drop it; a
    deployment's own schema need not be on the search path, so the class is qualified)."""
    error = None
    for ddl in (None, "CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public",
                "CREATE EXTENSION IF NOT EXISTS pg_trgm"):
        try:
            if ddl is not None:
                with conn.begin_nested():   # a refusal must not end migrate's transaction
                    conn.exec_driver_sql(ddl)
        except sa.exc.DBAPIError as exc:   # no right to it, not on the server, or a race
            error = exc
        found = _trigram_found(conn)
        if found is not None:
            return found
    log.warning("output search: the pg_trgm extension could not be created (%s); searches "
                "of run output read every run instead of an index (docs/api.md, finding runs)",
                _first_line(error))
    return None


def _first_line(exc: Optional[BaseException]) -> str:
    text = str(getattr(exc, "orig", exc) or "").strip()
    return text.splitlines()[0] if text else "unknown reason"


def _log_backfill(began: float) -> None:
    took = time.monotonic() - began
    if took > 1:
        log.info("output search: indexed the output of existing runs in %.1f s", took)


def _take_turns(conn) -> None:
    """Nodes creating tables in one PostgreSQL schema wait for each other (till this commits).
    The lock is the schema's: deployments in other schemas of the same database (or a node
    frozen mid-migration in one) do not hold each other up. Nodes of one release share the
    key; an older release never migrates a schema a newer one is migrating (it refuses a
    newer schema), so the key of older releases (one bigint) need not be taken too."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(
            0x7453_6368, sa.func.hashtext(sa.func.current_schema()))))


def _migrate_to_2(conn) -> None:
    """Runs become a queue that several nodes share (due_at, heartbeat, epoch, placement, a
    cancel request), runs may carry their own parameters, and attempts count from 1."""
    for name in ("due_at", "heartbeat_at", "epoch", "run_on", "params", "rerun_of",
                 "cancel_requested"):
        _add_missing_column(conn, "ts_runs", ts_runs.c[name].copy())
    conn.execute(ts_runs.update().where(ts_runs.c.due_at.is_(None))
                 .values(due_at=ts_runs.c.scheduled_at))
    # Two steps keep (job, time, trigger, attempt) unique all along: PostgreSQL checks each row.
    conn.execute(ts_runs.update().values(attempt=-(ts_runs.c.attempt + 1)))
    conn.execute(ts_runs.update().values(attempt=-ts_runs.c.attempt))


def _add_missing_column(conn, table: str, column: sa.Column) -> None:
    inspector = sa.inspect(conn)
    if not inspector.has_table(table) or column.name in {
            c["name"] for c in inspector.get_columns(table)}:
        return
    ddl = f"ALTER TABLE {table} ADD COLUMN {column.name} {column.type.compile(conn.dialect)}"
    if not column.nullable:
        default = column.default.arg if column.default is not None else ""
        ddl += f" NOT NULL DEFAULT {_sql_literal(conn, default)}"
    conn.execute(sa.text(ddl))


def _sql_literal(conn, value: Any) -> str:
    if isinstance(value, bool):
        return ("true" if value else "false") if conn.dialect.name == "postgresql" \
            else str(int(value))
    return "'" + str(value).replace("'", "''") + "'"


_MIGRATIONS = {2: _migrate_to_2}
LIVENESS_LOCK_WAIT = 1.0   # seconds a lease/heartbeat/rescue statement waits for a row lock
