"""People and their API tokens (ts_users, ts_api_tokens): rows in, rows out. Passwords and
tokens arrive here already hashed (access.py hashes them); nothing here knows a secret."""

from __future__ import annotations

import secrets
from typing import Optional

import sqlalchemy as sa

from .database import Database
from .schema import ts_api_tokens, ts_meta, ts_sessions, ts_users
from ..timeutil import _utcnow

_USER_COLUMNS = (ts_users.c.name, ts_users.c.role, ts_users.c.disabled, ts_users.c.created_at,
                 ts_users.c.updated_at)
_TOKEN_COLUMNS = (ts_api_tokens.c.id, ts_api_tokens.c.user_name, ts_api_tokens.c.name,
                  ts_api_tokens.c.created_at, ts_api_tokens.c.expires_at,
                  ts_api_tokens.c.last_used_at, ts_api_tokens.c.revoked_at)


class UserStore:
    """Users, their tokens, and the key the GUI signs its cookies with when no token is set."""

    def __init__(self, db: Database):
        self.db = db

    def any_user(self) -> bool:
        with self.db.engine.connect() as conn:
            return conn.execute(sa.select(ts_users.c.name).limit(1)).first() is not None

    def users(self) -> list[dict]:
        with self.db.engine.connect() as conn:
            rows = conn.execute(sa.select(*_USER_COLUMNS).order_by(ts_users.c.name))
            return [dict(row._mapping) for row in rows]

    def user(self, name: str) -> Optional[dict]:
        """The user's row, password hash included (for the login), or None."""
        with self.db.engine.connect() as conn:
            row = conn.execute(sa.select(ts_users).where(ts_users.c.name == name)).first()
        return dict(row._mapping) if row else None

    def add_user(self, name: str, role: str, password_hash: Optional[str]) -> bool:
        """False when the name is taken."""
        now = _utcnow()
        with self.db.write() as conn:
            if conn.execute(sa.select(ts_users.c.name).where(ts_users.c.name == name)).first():
                self.db.discard_audit()
                return False
            conn.execute(ts_users.insert().values(name=name, role=role, disabled=False,
                                                  password_hash=password_hash,
                                                  created_at=now, updated_at=now))
        return True

    def update_user(self, name: str, **values) -> bool:
        """Set role, password_hash or disabled; False when there is no such user."""
        with self.db.write() as conn:
            done = self.db.changed(conn.execute(ts_users.update().where(
                ts_users.c.name == name).values(**values, updated_at=_utcnow())).rowcount)
        return done

    def delete_user(self, name: str) -> bool:
        """The user, their tokens and their sessions go together."""
        with self.db.write() as conn:
            conn.execute(ts_api_tokens.delete().where(ts_api_tokens.c.user_name == name))
            conn.execute(ts_sessions.update().where(ts_sessions.c.user_name == name)
                         .values(revoked_at=_utcnow()))
            return self.db.changed(
                conn.execute(ts_users.delete().where(ts_users.c.name == name)).rowcount)

    def add_token(self, user: str, name: str, token_hash: str, expires_at) -> Optional[dict]:
        """A new token row; None when the user already has a live token of that name."""
        row = {"id": secrets.token_hex(8), "user_name": user, "name": name,
               "token_hash": token_hash, "created_at": _utcnow(), "expires_at": expires_at}
        with self.db.write() as conn:
            if conn.execute(sa.select(ts_api_tokens.c.id).where(
                    ts_api_tokens.c.user_name == user, ts_api_tokens.c.name == name,
                    ts_api_tokens.c.revoked_at.is_(None))).first():
                return None
            conn.execute(ts_api_tokens.insert().values(**row))
        return {k: v for k, v in row.items() if k != "token_hash"}

    def tokens(self, user: Optional[str] = None) -> list[dict]:
        query = sa.select(*_TOKEN_COLUMNS).order_by(ts_api_tokens.c.user_name,
                                                    ts_api_tokens.c.created_at)
        if user is not None:
            query = query.where(ts_api_tokens.c.user_name == user)
        with self.db.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def token_owner(self, token_hash: str) -> Optional[dict]:
        """The live token of this hash with its user's role and state: one read by a unique key,
        so a revoke or a role change holds from the next request on every node."""
        query = (sa.select(ts_api_tokens.c.id, ts_api_tokens.c.name, ts_api_tokens.c.expires_at,
                           ts_api_tokens.c.last_used_at, ts_users.c.name.label("user"),
                           ts_users.c.role, ts_users.c.disabled)
                 .join(ts_users, ts_users.c.name == ts_api_tokens.c.user_name)
                 .where(ts_api_tokens.c.token_hash == token_hash,
                        ts_api_tokens.c.revoked_at.is_(None)))
        with self.db.engine.connect() as conn:
            row = conn.execute(query).first()
        return dict(row._mapping) if row else None

    def revoke_token(self, token_id: str) -> bool:
        with self.db.write() as conn:
            return self.db.changed(conn.execute(
                ts_api_tokens.update().where(ts_api_tokens.c.id == token_id,
                                             ts_api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=_utcnow())).rowcount)

    def touch_token(self, token_id: str) -> None:
        with self.db.write() as conn:
            conn.execute(ts_api_tokens.update().where(ts_api_tokens.c.id == token_id)
                         .values(last_used_at=_utcnow()))

    def cookie_key(self) -> str:
        """A random key shared by every node of this database, made once (two nodes making
        it at once: the second reads the first's)."""
        query = sa.select(ts_meta.c.value).where(ts_meta.c.key == "gui_cookie_key")
        try:
            with self.db.write() as conn:
                key = conn.execute(query).scalar()
                if key is None:
                    key = secrets.token_hex(32)
                    conn.execute(ts_meta.insert().values(key="gui_cookie_key", value=key))
        except sa.exc.IntegrityError:
            with self.db.engine.connect() as conn:
                key = conn.execute(query).scalar()
        return key
