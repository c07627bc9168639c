"""The audit log (issue 24): who did what, to which object, when and from where. ``AuditLog``
builds rows (the actor, the action, the object, a detail with secrets masked) and hands them to
the store: attached to the write of the change itself where the change is one transaction
(``attached``), else right after it (``record``). It reads pages for ``GET /api/audit`` and
the GUI. It knows nothing of HTTP: the guard says who acts (``acting``) for the request's
thread, and the parts that change things ask ``current_actor``."""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import re
from collections.abc import Callable
from typing import Any, Optional

from .models import SECRET_SHOWN, SYSTEM, Actor, JobDefinition, redact_target
from .output import SecretMask, notify_secrets
from .timeutil import _iso

_ACTOR: contextvars.ContextVar[Actor] = contextvars.ContextVar("ts_actor", default=SYSTEM)
YAML_ACTOR = Actor("jobs.yaml", "yaml", "admin")
# Names whose values are never kept (kwargs, declared params): a value under such a name is a
# secret more often than not.
SECRET_NAME = re.compile(r"(?i)pass|secret|token|key|auth|cred|private|cookie|session|sig")
MAX_LIMIT = 500


@contextlib.contextmanager
def acting(actor: Actor):
    """``actor`` acts on this thread within the block (the guard: the request's actor)."""
    token = _ACTOR.set(actor)
    try:
        yield actor
    finally:
        _ACTOR.reset(token)


def current_actor() -> Actor:
    """Who acts on this thread: the request's actor, else the scheduler itself (SYSTEM)."""
    return _ACTOR.get()


class AuditLog:
    """Rows of the audit log, built here and written by the store (``store.audit``)."""

    def __init__(self, store, new_id: Callable[[], str], secrets: list):
        self.store, self._new_id, self._secrets = store, new_id, [s for s in secrets if s]
        self._mask = SecretMask(self._secrets)   # built once: a reload records many rows

    def record(self, actor: Optional[Actor], action: str, obj: tuple[str, str],
               detail: Optional[dict] = None) -> None:
        """Record an action that is done (its change committed), in a transaction of its own:
        e.g. ``service.audit.record(actor, "user.add", ("user", name), {"role": role})``."""
        self.store.audit.append([self.row(actor, action, obj, detail)])

    def attached(self, action: str, obj: tuple[str, str], detail: Optional[dict] = None,
                 actor: Optional[Actor] = None):
        """A context manager: the action done inside it is recorded in its own write
        transaction (nothing if it raises); see ``AuditStore.attached``."""
        return self.store.audit.attached([self.row(actor, action, obj, detail)])

    def row(self, actor: Optional[Actor], action: str, obj: tuple[str, str],
            detail: Optional[dict] = None, secrets: tuple = ()) -> dict:
        actor = actor or current_actor()
        text = json.dumps(detail or {}, sort_keys=True, default=str, ensure_ascii=False)
        return {"id": self._new_id(), "actor": actor.name[:255], "actor_kind": actor.kind,
                "token_name": actor.token_name, "address": (actor.address or None) and
                actor.address[:64], "action": action, "object_type": obj[0],
                "object_id": str(obj[1])[:255],
                "detail": (SecretMask([*self._secrets, *secrets]) if any(secrets)
                           else self._mask).text(text)}

    def job_change(self, action: str, job_id: str, before: Optional[JobDefinition],
                   after: Optional[JobDefinition], actor: Optional[Actor] = None,
                   extra: Optional[dict] = None) -> dict:
        """A row for a job added, replaced or deleted: both definitions, masked, and the names
        of the fields that changed."""
        shown = [job_masked(d) for d in (before, after)]
        detail = {"before": shown[0], "after": shown[1],
                  "changed": changed_fields(*shown), **(extra or {})}
        secrets = [v for d in (before, after) if d is not None
                   for v in notify_secrets(d.notify) + list(named_secrets(d.env))]
        return self.row(actor, action, ("job", job_id), detail, tuple(secrets))

    def page(self, actor: Optional[str] = None, action: Optional[str] = None,
             obj: Optional[str] = None, since: Optional[dt.datetime] = None,
             until: Optional[dt.datetime] = None, before: Optional[str] = None,
             limit: int = 50) -> dict:
        """Rows newest first; ``obj`` is 'type' or 'type:id'; ``next`` is the ``before`` of
        the next page (None: this is the last)."""
        kind, _, ident = (obj or "").partition(":")
        rows = self.store.audit.page({"actor": actor, "action": action, "object_type": kind,
                                      "object_id": ident, "since": since, "until": until},
                                     before, limit + 1)
        entries = [entry_dict(r) for r in rows[:limit]]
        return {"entries": entries, "next": entries[-1]["id"] if len(rows) > limit else None}


def entry_dict(row) -> dict:
    """An audit row as the API answers it."""
    return {"id": row.id, "at": _iso(row.at), "actor": row.actor, "actor_kind": row.actor_kind,
            "token_name": row.token_name, "address": row.address, "action": row.action,
            "object_type": row.object_type, "object_id": row.object_id,
            "detail": json.loads(row.detail)}


def job_masked(defn: Optional[JobDefinition]) -> Optional[dict]:
    """A definition as the audit log keeps it: notify targets as the API shows them, every
    env value hidden (names kept), kwargs and declared params' defaults under secret-looking
    names hidden."""
    if defn is None:
        return None
    shown = defn.dump()
    if shown.get("notify"):
        shown["notify"] = [redact_target(t) for t in shown["notify"]]
    if shown.get("env"):
        shown["env"] = dict.fromkeys(shown["env"], SECRET_SHOWN)
    if shown.get("kwargs"):
        shown["kwargs"] = named_values(shown["kwargs"])
    return shown


def named_values(values: dict) -> dict:
    """Values by name, those under secret-looking names hidden."""
    return {k: SECRET_SHOWN if SECRET_NAME.search(k) else v for k, v in values.items()}


def named_secrets(values: dict) -> list:
    """The values under secret-looking names: masked wherever else they appear too."""
    return [v for k, v in values.items() if SECRET_NAME.search(k) and isinstance(v, str)]


def changed_fields(before: Optional[dict], after: Optional[dict]) -> list[str]:
    """The top-level fields that differ (env compared by its names only: values are hidden)."""
    before, after = before or {}, after or {}
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


def run_detail(params: Optional[dict]) -> dict:
    """What the audit log keeps of a run's parameters: declared params' values (hidden under
    secret-looking names), the names of raw kwargs and env, the count of raw args."""
    params = params or {}
    detail: dict[str, Any] = {}
    if params.get("params"):
        detail["params"] = named_values(params["params"])
    for name in ("kwargs", "env"):
        if params.get(name):
            detail[f"{name}_names"] = sorted(params[name])
    if params.get("args") is not None:
        detail["args_count"] = len(params["args"])
    return detail
