"""The notifications queue (ts_notifications): rows queued with the end of a run (built by the
notifier before the transaction), taken by the leader's sender, their outcome recorded. It
builds no notification and sends none."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from .database import Database
from .schema import ts_notifications


class NoteStore:
    """Queue, take and record notifications."""

    def __init__(self, db: Database):
        self.db = db

    def insert_notes(self, conn, notes: list[dict]) -> None:
        """Inside a write that ends their runs: the notes go with the ends, or not at all."""
        if notes:
            conn.execute(ts_notifications.insert(), notes)
            self.db.notify(conn, "ts_notes")

    def queue_notes(self, notes: list[dict]) -> None:
        if notes:
            with self.db.write() as conn:
                self.insert_notes(conn, notes)

    def take_notes(self, limit: int, hold: float) -> list:
        """Due notifications, held for ``hold`` seconds (a sender that dies mid-send leaves
        them due again then)."""
        with self.db.write(quiet=True) as conn:   # notifications: no run, job or schedule
            now = self.db.dialect.now_value(conn)
            query = (sa.select(ts_notifications).where(ts_notifications.c.status == "pending",
                                                       ts_notifications.c.next_at <= now)
                     .order_by(ts_notifications.c.next_at).limit(limit))
            rows = conn.execute(self.db.dialect.skip_locked(query)).all()
            if rows:
                conn.execute(ts_notifications.update().where(
                    ts_notifications.c.id.in_([r.id for r in rows]))
                    .values(next_at=now + dt.timedelta(seconds=hold)))
        return rows

    def record_note(self, note_id: str, **values: Any) -> None:
        with self.db.write() as conn:
            conn.execute(ts_notifications.update().where(ts_notifications.c.id == note_id)
                         .values(**values))

    def notes_of(self, run_id: str) -> list:
        with self.db.engine.connect() as conn:
            return conn.execute(sa.select(ts_notifications).where(
                ts_notifications.c.run_id == run_id).order_by(ts_notifications.c.id)).all()
