"""GUI sessions, kept in the database so that a logout holds on every node and across restarts.
Only the hash of a session's secret is stored."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from typing import Optional

import sqlalchemy as sa

from .database import Database
from .schema import ts_sessions
from ..timeutil import _utcnow


class SessionStore:
    """Create, check and revoke GUI sessions (ts_sessions)."""

    def __init__(self, db: Database):
        self.db = db

    def create_session(self, ttl: float, user_name: Optional[str] = None) -> str:
        """A new session of a user (None: the legacy token); returns the secret for the cookie
        (only its hash is stored)."""
        secret, now = secrets.token_urlsafe(32), _utcnow()
        with self.db.write() as conn:
            conn.execute(ts_sessions.insert().values(
                id=_secret_hash(secret), created_at=now,
                expires_at=now + dt.timedelta(seconds=ttl), user_name=user_name))
        return secret

    def session_active(self, secret: str) -> bool:
        return self.session_user(secret) is not None

    def session_user(self, secret: str) -> Optional[tuple[Optional[str]]]:
        """``(user_name,)`` of a live session (None inside: the legacy token), else None."""
        with self.db.engine.connect() as conn:
            row = conn.execute(sa.select(ts_sessions.c.expires_at, ts_sessions.c.revoked_at,
                                         ts_sessions.c.user_name)
                               .where(ts_sessions.c.id == _secret_hash(secret))).first()
        if row is None or row.revoked_at is not None or row.expires_at <= _utcnow():
            return None
        return (row.user_name,)

    def revoke_session(self, secret: str) -> None:
        with self.db.write() as conn:
            conn.execute(ts_sessions.update().where(ts_sessions.c.id == _secret_hash(secret))
                         .values(revoked_at=_utcnow()))


def _secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
