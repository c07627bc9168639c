"""Who is at the GUI, and what they may do there: the login (name and password, or the legacy
token), the session's user, the role every GUI route needs (GUI_ROLES), the page of one's own
API tokens (/account) and the admin's page of users (/users)."""
from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

import bottle

from task_scheduler.access import OPEN, allows, check_raw_run
from task_scheduler.access import hide_env as core_hide_env
from task_scheduler.access import hide_env_yaml as core_hide_env_yaml
from task_scheduler.http.guard import FailureLimiter
from task_scheduler.models import ROLES, Actor

from . import (
    SESSION_TTL, _act, _error_page, _next_url, _redirect, _render, _session_secret, _set_cookie,
    _sign, _t, _token)

__all__ = ["ACCESS_ROUTES", "FailureLimiter", "GUI_ROLES", "can", "check_role", "sign_in"]


# -- Who is here --------------------------------------------------------------------------------

def sign_in(service) -> None:
    """The session's user as the request's actor, unless the core's guard named one (SSO, the
    loopback install without users). A disabled or deleted user's session ends here."""
    environ = bottle.request.environ
    secret = _session_secret() if _access().required() else None
    session = service.store.sessions.session_user(secret) if secret else None
    actor = None
    if session is not None:
        client = environ.get("ts.client")
        actor = Actor("token", "legacy", "admin", address=client) if session[0] is None \
            else _access().user_actor(session[0], "user", client)
    environ["ts.gui.session"] = secret if actor else None
    environ["ts.gui.login"] = actor is not None
    if environ.get("ts.actor") is None:
        environ["ts.actor"] = actor


def can(role: str) -> bool:
    """The page's viewer may do what needs ``role`` (the templates hide the rest)."""
    actor = bottle.request.environ.get("ts.actor")
    return actor is not None and allows(actor.role, role)


def check_role(role: str, method: str) -> None:
    actor = bottle.request.environ.get("ts.actor")
    if role != OPEN and not allows(actor.role, role):
        raise _error_page(403, _t("error.403"), _t("access.forbidden", role=_t(f"role.{role}"),
                                                   mine=_t(f"role.{actor.role}")))


def cookie_key(service) -> str:
    return service.store.users.cookie_key()


def raw_ok(params: dict | None) -> dict | None:
    """This run's own args, kwargs, env: admins only (a 403 as an error flash)."""
    check_raw_run(bottle.request.environ.get("ts.actor"), params)
    return params


def hide_env(shown: dict) -> dict:
    return core_hide_env(shown, bottle.request.environ.get("ts.actor"))


def hide_env_yaml(text: str) -> str:
    return core_hide_env_yaml(text, bottle.request.environ.get("ts.actor"))


def _access():
    return bottle.request.app.config["ts.access"]


def _actor() -> Actor:
    return bottle.request.environ["ts.actor"]


# -- Login and logout ---------------------------------------------------------------------------

def gui_login(service) -> str:
    if not _access().required() or bottle.request.environ.get("ts.actor"):
        _redirect("/")
    return _login_page(service, None, _next_url("/", bottle.request.query))


def gui_login_post(service) -> str:
    """A user's name and password; without a name, the field is the legacy token."""
    target = _next_url("/")
    if not _access().required():
        _redirect(target)
    limiter: FailureLimiter = bottle.request.app.config["ts.gui.logins"]
    # The client as the core's guard tells it: behind a --trusted-proxies proxy, the address
    # it forwards (else every user behind the proxy would share one limit).
    client = bottle.request.environ.get("ts.client") or bottle.request.remote_addr or "?"
    name = (bottle.request.forms.getunicode("name", "") or "").strip()
    given = bottle.request.forms.getunicode("token", "") or ""
    actor = _check_login(service, name, given, client)
    if actor is not None:   # the right token or password always passes
        limiter.forget(client)
        secret = service.store.sessions.create_session(
            SESSION_TTL, actor.name if actor.kind == "user" else None)
        service.audit.record(actor, "gui.login", ("session", "gui"))
        _set_cookie("ts_session", _sign(f"session:{secret}"), SESSION_TTL)
        _redirect(target, "flash.logged_in")
    wait = limiter.failed(client)   # counted; past the limit, the seconds to wait
    if not wait:   # a guesser past the limit is not recorded at every try
        service.audit.record(Actor(name[:64] or "anonymous", "anonymous", "viewer",
                                   address=client), "gui.login_failed", ("session", "gui"))
    if wait:
        bottle.response.status = 429
        bottle.response.set_header("Retry-After", str(wait))
        return _login_page(service, _t("login.too_many", n=wait), target)
    bottle.response.status = 401
    return _login_page(service, _t("login.invalid"), target)


def _check_login(service, name: str, given: str, client: str) -> Actor | None:
    """Who logs in (a user, or the legacy token's holder); None for wrong credentials."""
    if name:
        return _access().password_actor(name, given, client)
    token = _token(service)
    if token and hmac.compare_digest(given.encode(), token.encode()):
        return Actor("token", "legacy", "admin", address=client)
    return None


def _login_page(service, error: str | None, target: str) -> str:
    return _render("login", nav="login", title=_t("title.login"), error=error, next=target,
                   legacy=bool(_token(service)))


def gui_logout(service) -> None:
    secret = _session_secret()
    if secret:
        service.store.sessions.revoke_session(secret)
        service.audit.record(None, "gui.logout", ("session", "gui"))
    bottle.response.delete_cookie("ts_session", path="/")
    _redirect("/login" if _access().required() else "/", "flash.logged_out")


# -- Your API tokens ----------------------------------------------------------------------------

def gui_account(service, created: dict | None = None) -> str:
    actor = _actor()
    known = actor.kind == "user" or _access().users.user(actor.name) is not None
    tokens = _access().list_tokens(actor.name) if known else []
    return _render("account", nav="account", title=_t("title.account"), me=actor,
                   tokens=tokens, known=known, created=created)


def gui_token_create(service) -> str:
    """The new token is shown on this answer, once: never in a redirect's flash cookie."""
    form = bottle.request.forms
    made = _act(lambda: _access().create_token(
        _actor().name, (form.getunicode("name", "") or "").strip(),
        (form.getunicode("expires", "") or "").strip() or None), "/account")
    bottle.response.set_header("Cache-Control", "no-store")
    return gui_account(service, created=made)


def gui_token_revoke(service, token_id: str) -> None:
    access, actor = _access(), _actor()
    token = _act(lambda: access.token(token_id), "/account")
    if token["user_name"] != actor.name and not allows(actor.role, "admin"):
        raise _error_page(403, _t("error.403"), _t("access.not_yours"))
    _act(lambda: access.revoke_token(token_id), "/account")
    back = "/account" if token["user_name"] == actor.name else "/users"
    _redirect(back, "flash.token_revoked", name=token["name"])


# -- Users (admins) -------------------------------------------------------------------------------

def gui_users(service) -> str:
    return _render("users", nav="users", title=_t("title.users"), users=_access().list_users(),
                   tokens=_access().list_tokens(), roles=ROLES)


def gui_user_add(service) -> None:
    form = bottle.request.forms
    name = (form.getunicode("name", "") or "").strip()
    password = form.getunicode("password", "") or None
    _act(lambda: _access().add_user(name, form.get("role"), password), "/users")
    _redirect("/users", "flash.user_added", name=name)


def gui_user_change(service, user_name: str) -> None:
    """One change of a user: ``action`` role (with ``role``), disable, enable or delete."""
    access, action = _access(), bottle.request.forms.get("action", "")
    changes: dict[str, Callable[[], Any]] = {
        "role": lambda: access.update_user(user_name, role=bottle.request.forms.get("role")),
        "disable": lambda: access.update_user(user_name, disabled=True),
        "enable": lambda: access.update_user(user_name, disabled=False),
        "delete": lambda: access.delete_user(user_name)}
    if action not in changes:
        raise _error_page(400, _t("error.400"), _t("users.bad_action"))
    _act(changes[action], "/users")
    _redirect("/users", f"flash.user_{action}", name=user_name)


ACCESS_ROUTES: list[tuple[str, str, Callable[..., Any]]] = [
    ("GET", "/login", gui_login),
    ("POST", "/login", gui_login_post),
    ("POST", "/logout", gui_logout),
    ("GET", "/account", gui_account),
    ("POST", "/account/tokens", gui_token_create),
    ("POST", "/account/tokens/<token_id>/revoke", gui_token_revoke),
    ("GET", "/users", gui_users),
    ("POST", "/users", gui_user_add),
    ("POST", "/users/<user_name>", gui_user_change),
]
# The role each GUI route needs (docs/security.md; tests/test_roles.py fails for a route not
# named here). Pages that only show are for viewers; the forms that create or edit jobs, admins.
GUI_ROLES = {
    ("GET", "/"): "viewer",
    ("GET", "/jobs"): "viewer",
    ("GET", "/jobs/new"): "admin",
    ("POST", "/jobs/new"): "admin",
    ("GET", "/jobs/<job_id>"): "viewer",
    ("GET", "/calendars/<name>"): "viewer",
    ("GET", "/jobs/<job_id>/edit"): "admin",
    ("POST", "/jobs/<job_id>/edit"): "admin",
    ("GET", "/jobs/<job_id>/yaml"): "viewer",
    ("POST", "/jobs/<job_id>/delete"): "admin",
    ("POST", "/jobs/<job_id>/<action:re:run|pause|resume>"): "operator",   # raw params: admin
    ("GET", "/runs"): "viewer",
    ("GET", "/runs/<run_id>"): "viewer",
    ("GET", "/runs/<run_id>/<stream:re:stdout|stderr>"): "viewer",
    ("GET", "/runs/<run_id>/tail"): "viewer",
    ("POST", "/runs/<run_id>/cancel"): "operator",
    ("POST", "/runs/<run_id>/rerun"): "operator",
    ("POST", "/runs/<run_id>/retry"): "operator",
    ("GET", "/live"): "viewer",
    ("GET", "/config"): "viewer",
    ("POST", "/config/reload"): "admin",
    ("GET", "/login"): "open",
    ("POST", "/login"): "open",
    ("POST", "/logout"): "viewer",
    ("GET", "/account"): "viewer",
    ("POST", "/account/tokens"): "viewer",
    ("POST", "/account/tokens/<token_id>/revoke"): "viewer",   # one's own; another's: admin
    ("GET", "/users"): "admin",
    ("GET", "/audit"): "admin",
    ("POST", "/users"): "admin",
    ("POST", "/users/<user_name>"): "admin",
}
