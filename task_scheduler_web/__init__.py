"""Server-rendered web GUI of task-scheduler (DESIGN section 7).

The core calls `install_gui(app, service)` from `create_app()`; every handler below is
`gui_xxx(service, ...)`, renders `views/xxx.tpl` and calls the same service functions as the API.
Safety lives in one place, `_guard`: login (when a token is configured) and CSRF for every POST.
Sessions, CSRF tokens and flash messages are HMAC-signed strings in cookies: no server-side state.
"""
from __future__ import annotations

import base64
import collections
import functools
import hashlib
import hmac
import json
import os
import secrets
import shlex
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

import bottle
import yaml

from task_scheduler import SchedulerError

__all__ = ["GUI_ROUTES", "install_gui"]

HERE = os.path.dirname(os.path.abspath(__file__))
VIEWS = os.path.join(HERE, "views")
STATIC = os.path.join(HERE, "static")

RUN_STATUSES = ("queued", "running", "succeeded", "failed", "timeout", "interrupted",
                "missed", "skipped", "cancelled")
JOB_STATES = ("scheduled", "paused", "disabled")
ACTIVE = ("queued", "running")
FORM_FIELDS = ("id", "description", "kind", "target", "trigger_type", "cron_expression",
               "interval_seconds", "run_date", "timezone", "max_instances", "timeout", "tags")
TRIGGER_FIELD = {"cron": "cron_expression", "interval": "interval_seconds", "date": "run_date"}
PAGE_SIZE = 50
JOBS_PAGE_SIZE = 100      # a whole fleet on one page; the filters narrow it down
SESSION_TTL = 12 * 3600   # a working day: long enough not to nag, short enough to expire
FLASH_TTL = 60            # the flash only has to survive one 303 redirect
TIMELINE_BACK_H = 24
TIMELINE_AHEAD_H = 6
TIMELINE_MAX_RUNS = 3000  # keeps the SVG under a few hundred KB even with chatty jobs
CSP = ("default-src 'self'; img-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")


# -- Pages -----------------------------------------------------------------------------------

def gui_dashboard(service) -> str:
    status = service.status()
    config = status.get("config") or {}
    return _render("dashboard", nav="dashboard", title="Dashboard", status=status,
                   config=config, timeline=_timeline(service), nodes=service.nodes())


def gui_jobs(service) -> str:
    filters = _query(("q", "state", "source", "kind", "tag"))
    offset = _int_arg("offset")
    jobs = service.jobs(**{k: v or None for k, v in filters.items()}, limit=JOBS_PAGE_SIZE,
                        offset=offset)
    return _render("jobs", nav="jobs", title="Jobs", jobs=jobs, filters=filters,
                   pager=_pager(jobs, JOBS_PAGE_SIZE, offset, filters),
                   here=bottle.request.fullpath + _qs())


def gui_job_detail(service, job_id: str) -> str:
    job = _fetch(service.job, job_id)
    offset = _int_arg("offset")
    runs = service.runs(job_id=job_id, limit=20, offset=offset)
    definition = yaml.safe_dump(job.get("definition") or {}, sort_keys=False, allow_unicode=True)
    return _render("job_detail", nav="jobs", title=f"Job {job_id}", job=job, runs=runs,
                   definition=definition, pager=_pager(runs, 20, offset, {}),
                   here=f"/jobs/{job_id}")


def gui_job_new(service) -> str:
    form = dict.fromkeys(FORM_FIELDS, "")
    form.update(kind="python", trigger_type="cron", max_instances="1")
    return _render("job_new", nav="new", title="New job", form=form, errors={}, preview=None,
                   default_tz=str(service.timezone))


def gui_job_create(service) -> str:
    return _post_job_form(service, "job_new", {"nav": "new", "title": "New job"},
                          service.add_job, "created")


def gui_job_edit(service, job_id: str) -> str:
    job = _fetch(service.job, job_id)
    if job.get("source") != "api":
        _redirect(f"/jobs/{job_id}", f"Job {job_id} is defined in jobs.yaml: edit it there.",
                  "error")
    return _render("job_edit", nav="jobs", title=f"Edit {job_id}", job=job,
                   form=_job_to_form(job), errors={}, preview=None,
                   default_tz=str(service.timezone))


def gui_job_update(service, job_id: str) -> str:
    job = _fetch(service.job, job_id)
    return _post_job_form(service, "job_edit", {"nav": "jobs", "title": f"Edit {job_id}",
                                                "job": job},
                          lambda definition: service.replace_job(job_id, definition), "saved",
                          job=job)


def gui_job_delete(service, job_id: str) -> None:
    _act(lambda: service.delete_job(job_id), f"/jobs/{job_id}")
    _redirect("/jobs", f"Job {job_id} deleted.")


def gui_job_action(service, job_id: str, action: str) -> None:
    back = _next_url(f"/jobs/{job_id}")
    call = {"run": service.run_now, "pause": service.pause, "resume": service.resume}[action]
    result = _act(lambda: call(job_id), back)
    if action == "run":
        _redirect(back, f"Run of {job_id} queued.", link=f"/runs/{result['id']}")
    _redirect(back, f"Job {job_id} {'paused' if action == 'pause' else 'resumed'}.")


def gui_runs(service) -> str:
    filters = _query(("job_id", "status"))
    offset = _int_arg("offset")
    runs = service.runs(job_id=filters["job_id"] or None, status=filters["status"] or None,
                        limit=PAGE_SIZE, offset=offset)
    job_ids = [job["id"] for job in service.jobs()]
    return _render("runs", nav="runs", title="Runs", runs=runs, filters=filters,
                   job_ids=job_ids, pager=_pager(runs, PAGE_SIZE, offset, filters))


def gui_run_detail(service, run_id: str) -> str:
    run = _fetch(service.run, run_id)
    return _render("run_detail", nav="runs", title=f"Run {run_id}", run=run,
                   active=run.get("status") in ACTIVE)


def gui_run_output(service, run_id: str, stream: str) -> str:
    """The run's stdout or stderr as a text file: the API's twin, but behind the GUI login."""
    run = _fetch(service.run, run_id)
    bottle.response.content_type = "text/plain; charset=utf-8"
    name = f"run-{run_id}-{stream}.txt".replace('"', "")
    bottle.response.set_header("Content-Disposition", f'attachment; filename="{name}"')
    return run.get(stream) or ""


def gui_run_cancel(service, run_id: str) -> None:
    back = f"/runs/{run_id}"
    _act(lambda: service.cancel(run_id), back)
    _redirect(back, f"Run {run_id} cancelled.")


def gui_config(service) -> str:
    config = service.status().get("config") or {}
    return _render("config", nav="config", title="Configuration", config=config)


def gui_reload(service) -> None:
    try:
        config = service.reload()
    except SchedulerError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid file"
        _redirect("/config", f"jobs.yaml was not applied, the running configuration is kept: "
                             f"{_shorten(first, 160)}", "error")
    _redirect("/config", f"jobs.yaml reloaded: {config.get('jobs', '?')} jobs.")


def gui_login(service) -> str:
    if not _token(service):
        _redirect("/")
    return _render("login", nav="login", title="Log in", error=None,
                   next=_next_url("/", bottle.request.query))


def gui_login_post(service) -> str:
    token = _token(service)
    target = _next_url("/")
    if not token:
        _redirect(target)
    limiter: LoginLimiter = bottle.request.app.config["ts.gui.logins"]
    client = bottle.request.remote_addr or "?"
    wait = limiter.wait(client)
    if wait:
        bottle.response.status = 429
        bottle.response.set_header("Retry-After", str(wait))
        return _render("login", nav="login", title="Log in", next=target,
                       error=f"Too many wrong tokens from your address. Try again in {wait} s.")
    given = bottle.request.forms.getunicode("token", "") or ""
    if hmac.compare_digest(given.encode(), token.encode()):
        limiter.forget(client)
        secret = service.store.create_session(SESSION_TTL)
        _set_cookie("ts_session", _sign(f"session:{secret}"), SESSION_TTL)
        _redirect(target, "Logged in.")
    limiter.failed(client)
    bottle.response.status = 401
    return _render("login", nav="login", title="Log in", error="That token is not valid.",
                   next=target)


def gui_logout(service) -> None:
    secret = _session_secret()
    if secret:
        service.store.revoke_session(secret)
    bottle.response.delete_cookie("ts_session", path="/")
    _redirect("/login" if _token(service) else "/", "Logged out.")


class LoginLimiter:
    """Wrong tokens per client address: after ``limit`` within ``window`` seconds, the address
    waits until the oldest of them leaves the window (guessing a token stays slow)."""

    def __init__(self, limit: int = 5, window: float = 300):
        self.limit, self.window = limit, window
        self._failures: dict[str, collections.deque] = {}
        self._lock = threading.Lock()

    def wait(self, client: str) -> int:
        with self._lock:
            recent = self._recent(client)
            if len(recent) < self.limit:
                return 0
            return max(int(recent[0] + self.window - time.monotonic()) + 1, 1)

    def failed(self, client: str) -> None:
        with self._lock:
            self._recent(client).append(time.monotonic())
            if len(self._failures) > 10000:   # an address scan: forget the quiet ones
                self._failures = {k: v for k, v in self._failures.items() if v}

    def forget(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)

    def _recent(self, client: str) -> collections.deque:
        recent = self._failures.setdefault(client, collections.deque())
        while recent and recent[0] < time.monotonic() - self.window:
            recent.popleft()
        return recent


GUI_ROUTES: list[tuple[str, str, Callable[..., Any]]] = [
    ("GET", "/", gui_dashboard),
    ("GET", "/jobs", gui_jobs),
    ("GET", "/jobs/new", gui_job_new),
    ("POST", "/jobs/new", gui_job_create),
    ("GET", "/jobs/<job_id>", gui_job_detail),
    ("GET", "/jobs/<job_id>/edit", gui_job_edit),
    ("POST", "/jobs/<job_id>/edit", gui_job_update),
    ("POST", "/jobs/<job_id>/delete", gui_job_delete),
    ("POST", "/jobs/<job_id>/<action:re:run|pause|resume>", gui_job_action),
    ("GET", "/runs", gui_runs),
    ("GET", "/runs/<run_id>", gui_run_detail),
    ("GET", "/runs/<run_id>/<stream:re:stdout|stderr>", gui_run_output),
    ("POST", "/runs/<run_id>/cancel", gui_run_cancel),
    ("GET", "/config", gui_config),
    ("POST", "/config/reload", gui_reload),
    ("GET", "/login", gui_login),
    ("POST", "/login", gui_login_post),
    ("POST", "/logout", gui_logout),
]
PUBLIC = {gui_login, gui_login_post}


def install_gui(app: bottle.Bottle, service) -> None:
    """Register GUI_ROUTES, /static and the security headers on `app`."""
    key = _derive_key(_token(service))
    for method, path, handler in GUI_ROUTES:
        callback = _guard(functools.partial(handler, service), service, key, method,
                          handler in PUBLIC)
        app.route(path, method, callback, name=handler.__name__)
    app.route("/static/<path:path>", "GET", _static)
    app.add_hook("after_request", _security_headers)
    app.config["ts.error_page"] = _error_hook
    app.config["ts.gui.logins"] = LoginLimiter()


# -- Safety: login, CSRF, flash, headers ----------------------------------------------------

def _guard(handler, service, key: bytes, method: str, public: bool):
    def guarded(**kwargs):
        environ = bottle.request.environ
        environ["ts.gui.key"] = key
        environ["ts.gui.session"] = _session_secret() if _token(service) else None
        if environ["ts.gui.session"] and not service.store.session_active(
                environ["ts.gui.session"]):
            environ["ts.gui.session"] = None   # logged out, expired, or never issued here
        environ["ts.gui.login"] = bool(environ["ts.gui.session"])
        if not public and _token(service) and not environ["ts.gui.login"]:
            # Back to the page after login; a POST's target has no page, so to the dashboard.
            back = bottle.request.fullpath + _qs() if method == "GET" else "/"
            bottle.redirect("/login?" + urlencode({"next": back}), 303)
        if method == "POST" and not _csrf_ok():
            raise _error_page(403, "Forbidden", "The form's security token is missing or "
                              "stale. Nothing was changed: go back, reload the page and retry.")
        return handler(**kwargs)
    return guarded


def _derive_key(token: str | None) -> bytes:
    # Stable across restarts when a token exists; otherwise a fresh key per app (CSRF only).
    if token:
        return hmac.new(token.encode(), b"task-scheduler gui cookies v1", hashlib.sha256).digest()
    return secrets.token_bytes(32)


def _token(service) -> str | None:
    return getattr(service.config, "token", None) or None


def _sign(value: str) -> str:
    mac = hmac.new(bottle.request.environ["ts.gui.key"], value.encode(), hashlib.sha256)
    return f"{value}|{mac.hexdigest()}"


def _unsign(signed: str | None) -> str | None:
    value = (signed or "").rpartition("|")[0]
    return value if value and hmac.compare_digest(_sign(value), signed or "") else None


def _session_secret() -> str | None:
    """The session secret of a cookie this app signed (still to be checked in the store)."""
    value = _unsign(bottle.request.get_cookie("ts_session")) or ""
    secret = value.removeprefix("session:")
    return secret if value.startswith("session:") and secret else None


def _csrf_token() -> str:
    """Bound to the session once logged in (a token from before login, or from another
    session, is refused); before login and without a token, bound to a per-browser seed."""
    env = bottle.request.environ
    if "ts.gui.csrf" not in env:
        session = env.get("ts.gui.session")
        if session:
            env["ts.gui.csrf"] = _sign(f"csrf-session:{session}").rpartition("|")[2]
        else:
            env["ts.gui.csrf"] = _sign(f"csrf:{_csrf_seed()}").rpartition("|")[2]
    return env["ts.gui.csrf"]


def _csrf_seed() -> str:
    seed = bottle.request.get_cookie("ts_csrf") or ""
    if len(seed) != 32:
        seed = secrets.token_hex(16)
        _set_cookie("ts_csrf", seed, None)
        bottle.request.environ["ts.gui.new_seed"] = True
    return seed


def _csrf_ok() -> bool:
    given = bottle.request.forms.get("csrf_token") or ""
    if not bottle.request.get_cookie("ts_csrf") and not bottle.request.environ.get(
            "ts.gui.session"):
        return False
    return bool(given) and hmac.compare_digest(_csrf_token(), given)


def _set_cookie(name: str, value: str, max_age: int | None) -> None:
    secure = bottle.request.urlparts.scheme == "https"
    options = {"max_age": max_age} if max_age else {}
    bottle.response.set_cookie(name, value, path="/", httponly=True, samesite="strict",
                               secure=secure, **options)


def _redirect(url: str, message: str | None = None, kind: str = "ok", link: str | None = None):
    if message:
        data = json.dumps({"m": message, "k": kind, "u": link, "t": int(time.time())})
        packed = base64.urlsafe_b64encode(data.encode()).decode().rstrip("=")
        _set_cookie("ts_flash", _sign(packed), FLASH_TTL)
    bottle.redirect(url, 303)


def _pop_flash() -> dict | None:
    raw = _unsign(bottle.request.get_cookie("ts_flash"))
    if bottle.request.get_cookie("ts_flash") is not None:
        bottle.response.delete_cookie("ts_flash", path="/")
    if not raw:
        return None
    data = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    return data if time.time() - data.get("t", 0) < FLASH_TTL else None


def _next_url(default: str, source=None) -> str:
    """A path of this site from the `next` field, never another site: browsers drop tabs and
    newlines and read a backslash as a slash, so '/\t/evil.com' would mean '//evil.com'."""
    target = (source or bottle.request.forms).getunicode("next", "") or ""
    parts = urlsplit(target)
    ok = (target.startswith("/") and not target.startswith("//") and not parts.scheme
          and not parts.netloc and not any(ch.isspace() or ch == "\\" or ord(ch) < 32
                                           or ord(ch) == 127 for ch in target))
    return target if ok else default


def _security_headers() -> None:
    if bottle.request.path.startswith("/api"):
        return
    headers = bottle.response.headers
    headers["Content-Security-Policy"] = CSP
    headers["X-Frame-Options"] = "DENY"
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "same-origin"
    if not bottle.request.path.startswith("/static/"):
        headers["Cache-Control"] = "no-store"


def _static(path: str):
    return bottle.static_file(path, root=STATIC)


# -- Forms: job definition <-> form fields ---------------------------------------------------

def _form() -> dict[str, str]:
    forms = bottle.request.forms
    return {name: (forms.getunicode(name, "") or "").strip() for name in FORM_FIELDS}


def _post_job_form(service, view: str, page: dict, save: Callable[[dict], Any], done: str,
                   job: dict | None = None) -> str:
    """Preview, save and redirect, or show the form again with its errors and values."""
    form = _form()
    if job is not None:
        form["id"] = job["id"]   # the id of an existing job is not editable
    definition, errors = _form_to_definition(form, job)
    preview = None
    if not errors and bottle.request.forms.get("action") == "preview":
        preview = _preview(service, definition, form, errors)
    elif not errors:
        errors = _attempt(lambda: save(definition), form)
        if not errors:
            _redirect(f"/jobs/{definition['id']}", f"Job {definition['id']} {done}.")
    if errors:
        bottle.response.status = 422
    return _render(view, **page, form=form, errors=errors, preview=preview,
                   default_tz=str(service.timezone))


def _form_to_definition(form: dict[str, str], job: dict | None = None):
    """A jobs.yaml entry from the form; an edited job keeps the fields the form does not show."""
    errors: dict[str, str] = {}
    base = (job or {}).get("definition") or {}
    definition = {k: v for k, v in base.items()
                  if k not in ("func", "command", "description", "tags", "trigger",
                               "max_instances", "timeout")}
    definition["id"] = form["id"]
    if form["description"]:
        definition["description"] = form["description"]
    definition["command" if form["kind"] == "command" else "func"] = form["target"]
    trigger_errors: dict[str, str] = {}
    definition["trigger"] = _form_trigger(form, trigger_errors)
    if job is not None and base.get("trigger") and _same_trigger(form, _job_to_form(job)):
        definition["trigger"] = base["trigger"]  # keeps cron seconds, jitter, start_date...
    else:
        errors.update(trigger_errors)
    for name, number in (("max_instances", _form_int(form, "max_instances", errors)),
                         ("timeout", _form_number(form, "timeout", errors))):
        if number is not None:
            definition[name] = number
    tags = [t.strip() for t in form["tags"].split(",") if t.strip()]
    if tags:
        definition["tags"] = tags
    if form["kind"] not in ("python", "command"):
        errors["kind"] = "Choose python or command."
    return definition, errors


def _form_trigger(form: dict[str, str], errors: dict[str, str]) -> dict:
    kind = form["trigger_type"]
    if kind not in TRIGGER_FIELD:
        errors["trigger_type"] = "Choose cron, interval or date."
        return {}
    trigger: dict[str, Any] = {"type": kind}
    if kind == "cron":
        trigger["expression"] = form["cron_expression"]
    elif kind == "date":
        trigger["run_date"] = form["run_date"]
    else:
        trigger["seconds"] = _form_int(form, "interval_seconds", errors)
    if not form[TRIGGER_FIELD[kind]]:
        errors[TRIGGER_FIELD[kind]] = f"Required for a {kind} trigger."
    if form["timezone"]:
        trigger["timezone"] = form["timezone"]
    return trigger


def _form_int(form: dict[str, str], name: str, errors: dict[str, str]) -> int | None:
    number = _form_number(form, name, errors, whole=True)
    return None if number is None else int(number)


def _form_number(form: dict[str, str], name: str, errors: dict[str, str],
                 whole: bool = False) -> int | float | None:
    """The field as a number, None when empty; text that is no number becomes a form error."""
    text = form[name]
    if not text:
        return None
    try:
        number = int(text) if whole else float(text)
    except ValueError:
        errors[name] = f"{text!r} is not a {'whole ' if whole else ''}number."
        return None
    return int(number) if isinstance(number, float) and number.is_integer() else number


def _job_to_form(job: dict) -> dict[str, str]:
    d = job.get("definition") or {}
    trigger = d.get("trigger") or job.get("trigger") or {}
    kind = job.get("kind") or ("command" if d.get("command") else "python")
    target = d.get("command") or d.get("func") or ""
    form = dict.fromkeys(FORM_FIELDS, "")
    form.update(id=job["id"], description=d.get("description") or "", kind=kind,
                target=shlex.join(target) if isinstance(target, list) else str(target),
                trigger_type=trigger.get("type", "cron"), timezone=trigger.get("timezone") or "",
                max_instances=_str(d.get("max_instances")), timeout=_str(d.get("timeout")),
                tags=", ".join(d.get("tags") or []))
    form.update(_trigger_to_form(trigger))
    return form


def _trigger_to_form(trigger: dict) -> dict[str, str]:
    if trigger.get("type") == "interval":
        units = {"weeks": 604800, "days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}
        total = sum(float(trigger.get(u) or 0) * n for u, n in units.items())
        return {"interval_seconds": str(int(total)) if total.is_integer() else str(total)}
    if trigger.get("type") == "date":
        return {"run_date": _str(trigger.get("run_date"))}
    if trigger.get("expression"):
        return {"cron_expression": trigger["expression"]}
    fields = ("minute", "hour", "day", "month", "day_of_week")
    return {"cron_expression": " ".join(str(trigger.get(f, "*")) for f in fields)}


def _same_trigger(form: dict[str, str], before: dict[str, str]) -> bool:
    keys = ("trigger_type", "timezone", TRIGGER_FIELD.get(form["trigger_type"], "trigger_type"))
    return all(form[k] == before[k] for k in keys)


def _attempt(call: Callable[[], Any], form: dict[str, str]) -> dict[str, str]:
    """Run a service call; turn its validation errors into {form field: message}."""
    try:
        call()
    except SchedulerError as exc:
        return _errors_from(exc, form)
    return {}


def _preview(service, definition: dict, form: dict[str, str], errors: dict[str, str]):
    try:
        return service.preview_trigger(definition["trigger"], count=5)
    except SchedulerError as exc:
        errors.update(_errors_from(exc, form))
        return None


def _errors_from(exc, form: dict[str, str]) -> dict[str, str]:
    if getattr(exc, "status", None) == 409:
        return {"id": str(exc)}
    errors: dict[str, str] = {}
    for detail in getattr(exc, "details", None) or []:
        field = _form_field(str(detail.get("field") or ""), form["trigger_type"])
        message = str(detail.get("message") or exc)
        errors[field] = f"{errors[field]} {message}" if field in errors else message
    return errors or {"_general": str(exc)}


def _form_field(field: str, trigger_type: str) -> str:
    head, _, rest = field.partition(".")
    if head == "trigger":
        return "timezone" if rest == "timezone" else TRIGGER_FIELD.get(trigger_type, "trigger_type")
    if head in ("func", "command", "args", "shell"):
        return "target"
    return head if head in FORM_FIELDS else "_general"


# -- Dashboard timeline ------------------------------------------------------------------------

def _timeline(service) -> dict:
    """One SVG lane per job: runs of the last day as bars, the next hours' fires as diamonds."""
    now = datetime.now(UTC)
    start, end = now - timedelta(hours=TIMELINE_BACK_H), now + timedelta(hours=TIMELINE_AHEAD_H)
    left, width, lane = 180, 1000, 22
    span = (end - start).total_seconds()

    def x(moment: datetime) -> float:
        ratio = min(max((moment - start).total_seconds() / span, 0.0), 1.0)
        return round(left + ratio * (width - left - 12), 1)

    runs_by_job: dict[str, list] = {}
    for run in service.runs(since=start, limit=TIMELINE_MAX_RUNS):
        runs_by_job.setdefault(run["job_id"], []).append(run)
    # Most recently active first, then the soonest next fire (sort is stable, ISO UTC sorts).
    jobs = sorted(service.jobs(), key=lambda j: (j.get("next_run_time") or "~", j["id"]))
    jobs.sort(key=lambda j: _latest(runs_by_job.get(j["id"], [])), reverse=True)
    lanes = [_lane(i * lane, lane, job, runs_by_job.get(job["id"], []), x, now, end)
             for i, job in enumerate(jobs)]
    return {"lanes": lanes, "width": width, "left": left, "height": max(len(lanes), 1) * lane,
            "now_x": x(now), "ticks": [{"x": x(t), "label": t.strftime("%H:%M")}
                                       for t in _ticks(start, end)]}


def _latest(runs: list) -> str:
    return max((r.get("started_at") or r.get("scheduled_at") or "" for r in runs), default="")


def _lane(y: int, height: int, job: dict, runs: list, x, now: datetime, end: datetime):
    mid = y + height / 2
    marks = []
    for iso in job.get("next_run_times") or []:
        moment = _parse(iso)
        if moment and now <= moment <= end:
            cx = x(moment)
            marks.append({"points": f"{cx},{mid - 6} {cx + 5},{mid} {cx},{mid + 6} {cx - 5},{mid}",
                          "title": f"{job['id']}: next fire {_fmt_time(iso)}"})
    return {"y": y, "text_y": mid + 4, "height": height, "job_id": job["id"],
            "label": _shorten(job["id"], 24), "state": job.get("state", ""), "marks": marks,
            "bars": [_bar(run, x, now, mid) for run in runs]}


def _bar(run: dict, x, now: datetime, mid: float) -> dict:
    begin = _parse(run.get("started_at")) or _parse(run.get("scheduled_at")) or now
    finish = _parse(run.get("finished_at")) or (now if run.get("status") in ACTIVE else begin)
    x1, x2 = x(begin), x(finish)
    title = (f"{run['job_id']}: {run['status']} ({run.get('trigger') or 'schedule'})\n"
             f"started {_fmt_time(run.get('started_at') or run.get('scheduled_at'))}\n"
             f"finished {_fmt_time(run.get('finished_at'))}\n"
             f"duration {_fmt_duration(run.get('duration_s'))}")
    return {"x": x1, "y": mid - 7, "w": max(round(x2 - x1, 1), 3), "h": 14,
            "status": run["status"], "title": title, "href": f"/runs/{run['id']}"}


def _ticks(start: datetime, end: datetime) -> list[datetime]:
    tick = start.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    tick += timedelta(hours=(3 - tick.hour % 3) % 3)
    out = []
    while tick < end:
        out.append(tick)
        tick += timedelta(hours=3)
    return out


# -- Small helpers, also handed to the templates ----------------------------------------------

def _render(name: str, **kwargs) -> str:
    return bottle.template(name, template_lookup=[VIEWS], csrf=_csrf_token(), flash=_pop_flash(),
                           login=bottle.request.environ.get("ts.gui.login", False),
                           path=bottle.request.path, h=HELPERS, **kwargs)


def _fetch(getter: Callable[[str], dict], key: str) -> dict:
    try:
        return getter(key)
    except SchedulerError as exc:
        if getattr(exc, "status", None) != 404:
            raise
        raise _error_page(404, "Not found", str(exc)) from exc


def _error_page(code: int, title: str, message: str) -> bottle.HTTPResponse:
    """An HTML error page as an exception that keeps the cookies set so far."""
    body = _render("error", nav="", title=title, code=code, message=message)
    page = bottle.response.copy(cls=bottle.HTTPResponse)
    page.status, page.body = code, body
    return page


ERROR_TITLES = {400: "Bad request", 403: "Forbidden", 404: "Not found",
                405: "Method not allowed", 413: "Too large", 500: "Internal error",
                503: "Unavailable"}


def _error_hook(code: int, message: str) -> str:
    """The app's error hook for GUI paths: the same page as the GUI's own errors."""
    bottle.request.environ.setdefault("ts.gui.key", secrets.token_bytes(32))
    return _render("error", nav="", title=ERROR_TITLES.get(code, "Error"), code=code,
                   message=message[:1:].upper() + message[1:])


def _act(call: Callable[[], Any], back: str):
    """Run a POST action; on a service error go back with the message as an error flash."""
    try:
        return call()
    except SchedulerError as exc:
        _redirect(back, str(exc), "error")


def _query(names: tuple[str, ...]) -> dict[str, str]:
    return {n: (bottle.request.query.getunicode(n, "") or "").strip() for n in names}


def _qs() -> str:
    query = bottle.request.query_string
    return f"?{query}" if query else ""


def _int_arg(name: str) -> int:
    text = bottle.request.query.get(name, "")
    return max(int(text), 0) if text.isdigit() else 0


def _pager(items, limit: int, offset: int, params: dict[str, str]) -> dict:
    total = getattr(items, "total", len(items))
    keep = {k: v for k, v in params.items() if v}

    def url(off: int) -> str:
        return "?" + urlencode({**keep, "offset": off} if off else keep)
    return {"total": total, "first": offset + 1 if items else 0, "last": offset + len(items),
            "prev": url(max(offset - limit, 0)) if offset > 0 else None,
            "next": url(offset + limit) if offset + limit < total else None}


def _parse(iso: str | None) -> datetime | None:
    try:
        moment = datetime.fromisoformat(iso) if iso else None
    except (TypeError, ValueError):
        return None
    return moment.replace(tzinfo=UTC) if moment and not moment.tzinfo else moment


def _fmt_time(iso: str | None) -> str:
    moment = _parse(iso)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "—"


def _fmt_ago(iso: str | None) -> str:
    moment = _parse(iso)
    if not moment:
        return ""
    seconds = (moment - datetime.now(UTC)).total_seconds()
    text = _fmt_span(abs(seconds))
    return f"in {text}" if seconds > 0 else f"{text} ago"


def _fmt_span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def _shorten(text: str, size: int) -> str:
    return text if len(text) <= size else text[: size - 1] + "…"


def _str(value: Any) -> str:
    return "" if value is None else str(value)


NAV = [("dashboard", "/", "Dashboard"), ("jobs", "/jobs", "Jobs"), ("runs", "/runs", "Runs"),
       ("config", "/config", "Config"), ("new", "/jobs/new", "New job")]
HELPERS = {"nav": NAV, "time": _fmt_time, "ago": _fmt_ago, "duration": _fmt_duration,
           "span": _fmt_span, "run_statuses": RUN_STATUSES, "job_states": JOB_STATES}
