"""Who may do what (issue 24): users with a role, their passwords (scrypt) and API tokens
(sha256 of a random secret), the single sign-on header, and the role a route needs. It turns
credentials into an Actor and checks input; the rows are the store's (store/users.py)."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import hmac
import re
import secrets
import threading
import time
from typing import Optional

import yaml

from .errors import Forbidden, InvalidValue, JobConflict, NotFound
from .models import ROLES, SECRET_SHOWN, Actor, duration_seconds
from .timeutil import _iso, _utcnow

NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")   # also an e-mail address, as a proxy may send
RANK = {role: rank for rank, role in enumerate(ROLES)}
OPEN = "open"          # a route anyone may call: /api/health, the login page
SCRYPT = (2 ** 14, 8, 1)   # n, r, p: 16 MiB and ~50 ms a guess (OWASP's minimum for scrypt)
USERS_TTL = 0.5        # s "are there users?" is remembered: the first user locks the door
TOUCH_EVERY = 300      # s between writes of a token's last_used_at: not a write per request
MIN_PASSWORD = 8
TOKEN_PREFIX = "tsu_"  # tells an API token from the legacy one in a log or a leak scanner


def hash_password(password: str) -> str:
    n, r, p = SCRYPT
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32)
    return f"scrypt${n}${r}${p}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: Optional[str]) -> bool:
    try:
        _, n, r, p, salt, digest = (stored or "").split("$")
        given = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r),
                               p=int(p), dklen=len(digest) // 2, maxmem=64 << 20)
    except (ValueError, TypeError):   # no password set, or a hash this code does not know
        return False
    return hmac.compare_digest(given.hex(), digest)


@functools.cache
def _decoy() -> str:
    return hash_password(secrets.token_urlsafe(16))


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()


def allows(role: str, needed: str) -> bool:
    return needed == OPEN or RANK.get(role, -1) >= RANK[needed]


def refuse(what: str, needed: str, actor: Actor) -> Forbidden:
    return Forbidden(f"{what} needs the {needed} role; you are {actor.role} ({actor.name})")


def check_name(value, what: str = "user name") -> str:
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise InvalidValue(f"{what}: {str(value)[:80]!r} is not valid (1-64 letters, digits, "
                           f"and _ . @ -)")
    return value


def check_role(value) -> str:
    if value not in ROLES:
        raise InvalidValue(f"role: {str(value)[:40]!r} is not a role ({', '.join(ROLES)})")
    return value


def check_new_password(value) -> str:
    if not isinstance(value, str) or len(value) < MIN_PASSWORD or len(value) > 1024:
        raise InvalidValue(f"password: give {MIN_PASSWORD} to 1024 characters")
    return value


def expiry(value) -> Optional[dt.datetime]:
    """'90d', '12h' or seconds from now; None, '' or 'never': no expiry."""
    if value in (None, "", "never"):
        return None
    try:
        seconds = duration_seconds(value) if isinstance(value, (str, int, float)) \
            and not isinstance(value, bool) else -1
    except ValueError:
        seconds = -1
    if not 60 <= seconds <= 10 * 366 * 86400:
        raise InvalidValue(f"expires: {str(value)[:40]!r} is not a duration from a minute to "
                           f"ten years ('90d', '12h', seconds) or 'never'")
    return _utcnow() + dt.timedelta(seconds=seconds)


RAW_RUN_FIELDS = ("args", "kwargs", "env")


def check_raw_run(actor: Optional[Actor], body) -> None:
    """A run's own args, kwargs or env can run anything the job's program allows (LD_PRELOAD,
    PATH): admins only. Declared parameters are for operators."""
    if actor is not None and isinstance(body, dict) and not allows(actor.role, "admin") \
            and any(body.get(name) is not None for name in RAW_RUN_FIELDS):
        raise refuse("a run with its own args, kwargs or env", "admin", actor)


def hide_env(shown: dict, actor: Optional[Actor]) -> dict:
    """A job or run as a viewer or operator sees it: the values of its environment (a job's
    ``definition.env``, a run's ``params.env``) hidden, as notify secrets are for everyone.
    Environment values are where passwords go; admins, who set them, see them."""
    if actor is None or allows(actor.role, "admin"):
        return shown
    for key in ("definition", "params"):
        part = shown.get(key)
        if isinstance(part, dict) and isinstance(part.get("env"), dict):
            shown[key] = {**part, "env": {name: SECRET_SHOWN for name in part["env"]}}
    return shown


def hide_env_yaml(text: str, actor: Optional[Actor]) -> str:
    """A job as a jobs.yaml list of one entry (``?format=yaml``), as hide_env shows it."""
    if actor is None or allows(actor.role, "admin"):
        return text
    entries = [hide_env({"definition": e}, actor)["definition"] for e in yaml.safe_load(text)]
    return yaml.safe_dump(entries, sort_keys=False, allow_unicode=True)


class Access:
    """Credentials to actors, and the users and tokens behind them (thread-safe). Every change
    of a user or a token is recorded in ``audit`` (an AuditLog) as the acting thread's actor
    (``audit.acting``): the API, the GUI and the CLI all change them here."""

    def __init__(self, store, config, audit=None):
        self.users, self.config, self.audit = store.users, config, audit
        self._known: tuple[float, bool] = (0.0, False)
        self._lock = threading.Lock()

    def required(self) -> bool:
        """Credentials are needed: a token is configured, or SSO, or some user exists."""
        if self.config.token or getattr(self.config, "auth_header", None):
            return True
        at, known = self._known
        if time.monotonic() - at > USERS_TTL:
            known = self.users.any_user()
            with self._lock:
                self._known = (time.monotonic(), known)
        return known

    def token_actor(self, secret: str, address: Optional[str]) -> Optional[Actor]:
        if not secret.startswith(TOKEN_PREFIX):
            return None
        row = self.users.token_owner(token_hash(secret))
        now = _utcnow()
        if row is None or row["disabled"] or (row["expires_at"] and row["expires_at"] <= now):
            return None
        used = row["last_used_at"]
        if used is None or (now - used).total_seconds() > TOUCH_EVERY:
            self.users.touch_token(row["id"])
        return Actor(row["user"], "user", row["role"], token_name=row["name"], address=address)

    def password_actor(self, name: str, password: str,
                       address: Optional[str]) -> Optional[Actor]:
        row = self.users.user(name) if NAME.fullmatch(name or "") else None
        # An unknown name costs a hash too: the answer's time does not tell who exists.
        stored = row["password_hash"] if row else _decoy()
        if not check_password(password, stored) or row is None or row["disabled"]:
            return None
        return Actor(row["name"], "user", row["role"], address=address)

    def user_actor(self, name: str, kind: str, address: Optional[str]) -> Optional[Actor]:
        """The user as they are now (a GUI session's, or SSO's); None if gone or disabled.
        SSO names no one known: the default role, or None when it is ``none``."""
        row = self.users.user(name) if NAME.fullmatch(name or "") else None
        if row is not None:
            return None if row["disabled"] else Actor(row["name"], kind, row["role"],
                                                       address=address)
        default = getattr(self.config, "auth_header_default_role", "viewer")
        if kind != "sso" or default not in ROLES:
            return None
        return Actor(name, kind, default, address=address)

    # users and tokens

    def list_users(self) -> list[dict]:
        return [_public(row) for row in self.users.users()]

    def add_user(self, name, role, password=None) -> dict:
        check_name(name)
        check_role(role)
        hashed = hash_password(check_new_password(password)) if password is not None else None
        with self._noted([("user.add", ("user", name), {"role": role,
                                                         "password": hashed is not None})]):
            added = self.users.add_user(name, role, hashed)
        if not added:
            raise JobConflict(f"user {name!r} exists; change it with PUT /api/users/{name} "
                              f"(task-scheduler user set-role)")
        return self.get_user(name)

    def get_user(self, name: str) -> dict:
        row = self.users.user(name) if NAME.fullmatch(str(name)) else None
        if row is None:
            raise NotFound(f"user {str(name)[:80]!r} does not exist (GET /api/users lists them)")
        return _public(row)

    def update_user(self, name: str, role=None, password=None, disabled=None) -> dict:
        now, values, events = self.get_user(name), {}, []
        if role is not None:
            values["role"] = check_role(role)
            if role != now["role"]:
                events.append(("user.set_role", {"before": now["role"], "after": role}))
        if password is not None:
            values["password_hash"] = hash_password(check_new_password(password))
            events.append(("user.set_password", {}))   # never the password nor its hash
        if disabled is not None:
            if not isinstance(disabled, bool):
                raise InvalidValue("disabled: give true or false")
            values["disabled"] = disabled
            if disabled != bool(now["disabled"]):
                events.append(("user.disable" if disabled else "user.enable", {}))
        if values:
            with self._noted([(action, ("user", name), detail) for action, detail in events]):
                self.users.update_user(name, **values)
        return self.get_user(name)

    def delete_user(self, name: str) -> None:
        role = self.get_user(name)["role"]
        with self._noted([("user.delete", ("user", name), {"role": role})]):
            self.users.delete_user(name)

    def create_token(self, user: str, name, expires=None) -> dict:
        self.get_user(user)
        check_name(name, "token name")
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        row = self.users.add_token(user, name, token_hash(secret), expiry(expires))
        if row is None:
            raise JobConflict(f"user {user!r} has a token named {name!r}; revoke it first or "
                              f"choose another name")
        shown = _public(row)
        if self.audit is not None:   # after the commit: the store makes the token's id
            self.audit.record(None, "token.create", ("token", shown["id"]), _token_detail(shown))
        return {**shown, "token": secret}

    def list_tokens(self, user: Optional[str] = None) -> list[dict]:
        return [_public(row) for row in self.users.tokens(user)]

    def token(self, token_id: str) -> dict:
        found = [t for t in self.users.tokens() if t["id"] == token_id]
        if not found:
            raise NotFound(f"token {token_id[:40]!r} does not exist (GET /api/tokens lists "
                           f"yours)")
        return _public(found[0])

    def revoke_token(self, token_id: str) -> None:
        self._revoke(self.token(token_id))

    def revoke_named(self, user: str, name: str) -> None:
        live = [t for t in self.users.tokens(user) if t["name"] == name and not t["revoked_at"]]
        if not live:
            raise NotFound(f"user {user!r} has no live token named {name!r}")
        self._revoke(_public(live[0]))

    def _revoke(self, token: dict) -> None:
        if token["revoked_at"]:
            return   # revoked already: nothing changes, nothing is recorded
        with self._noted([("token.revoke", ("token", token["id"]), _token_detail(token))]):
            self.users.revoke_token(token["id"])

    def _noted(self, events: list):
        """Records ``events`` (action, object, detail) in the block's write transaction; the
        store drops them when that write changes nothing (a name taken meanwhile)."""
        if self.audit is None or not events:
            return contextlib.nullcontext()
        return self.audit.store.audit.attached([self.audit.row(None, action, obj, detail)
                                                for action, obj, detail in events])


def _token_detail(token: dict) -> dict:
    """What the audit log keeps of a token: whose, its name and expiry (never its value)."""
    return {"user": token["user_name"], "name": token["name"],
            "expires_at": token.get("expires_at")}


def _public(row: dict) -> dict:
    """A row as the API shows it: times as ISO text, never a hash."""
    return {k: _iso(v) if isinstance(v, dt.datetime) else v for k, v in row.items()
            if k not in ("password_hash", "token_hash")}
