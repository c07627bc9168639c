"""The audit log's rows (ts_audit): appended, read newest first by keyset pages, and nothing
else: there is no update, and rows are deleted only by retention (store/retention.py). Rows
given to ``attached`` go into the next write transaction of the same thread, so an action
and its record commit together or not at all."""

from __future__ import annotations

import contextlib
from typing import Optional

import sqlalchemy as sa

from .database import Database
from .schema import ts_audit

AUDIT_COLUMNS = ("actor", "actor_kind", "token_name", "address", "action", "object_type",
                 "object_id", "detail")


class AuditStore:
    """Appends and reads ts_audit."""

    def __init__(self, db: Database):
        self.db = db

    def append(self, rows: list[dict]) -> None:
        """Rows in a transaction of their own (an action that wrote nothing, or not here)."""
        with self.db.write() as conn:
            conn.execute(ts_audit.insert().values(at=self.db.now()), rows)

    @contextlib.contextmanager
    def attached(self, rows: list[dict]):
        """Within the block, the first write transaction of this thread appends ``rows``;
        none did by its end (the action wrote nothing, or wrote from another thread): they
        are appended then, in their own. An error in the block appends nothing; nor does a
        block that empties the list it is given (nothing changed)."""
        pending, previous = list(rows), self.db.audit_rows()
        self.db.set_audit_rows(pending)
        try:
            yield pending   # emptied by the block: nothing to record after all
        finally:
            self.db.set_audit_rows(previous)
        if pending:
            self.append(pending)

    def page(self, conds: dict, before: Optional[str], limit: int) -> list:
        """Rows newest first matching ``conds`` (actor, action or action prefix ending in
        '.', object_type, object_id, since, until), older than the id ``before``."""
        query = sa.select(ts_audit).order_by(ts_audit.c.id.desc()).limit(limit)
        for name in ("actor", "object_type", "object_id"):
            if conds.get(name):
                query = query.where(ts_audit.c[name] == conds[name])
        action = conds.get("action")
        if action:
            query = query.where(ts_audit.c.action.startswith(action, autoescape=True)
                                if action.endswith(".") else ts_audit.c.action == action)
        if conds.get("since"):
            query = query.where(ts_audit.c.at >= conds["since"])
        if conds.get("until"):
            query = query.where(ts_audit.c.at < conds["until"])
        if before:
            query = query.where(ts_audit.c.id < before)
        with self.db.engine.connect() as conn:
            return conn.execute(query).all()
