"""Server-rendered web GUI of task-scheduler (DESIGN section 7).

The core calls `install_gui(app, service)` from `create_app()`; every handler below is
`gui_xxx(service, ...)`, renders `views/xxx.tpl` and calls the same service functions as the API.
Safety lives in one place, `_guard`: login (when a token is configured) and CSRF for every POST.
Sessions, CSRF tokens and flash messages are HMAC-signed strings in cookies: no server-side state.
Every word on a page comes from the message catalogs (`i18n.py`, `messages/*.json`); the job
form's fields are described in `forms.py`, the timeline and the duration chart in `charts.py`.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import bottle
import yaml

from task_scheduler.errors import SchedulerError
from task_scheduler.audit import acting
from task_scheduler.http.api import events_answer
from task_scheduler.http.io import MAX_OFFSET, YAML_TYPE
from task_scheduler.models import ANONYMOUS, JOB_STATES, RUN_STATUSES, RUN_TRIGGERS

from . import audit, charts, forms, graph, runfilter
from .docs import api_docs_html
from .i18n import LANG_COOKIE, TZ_COOKIE, Locale, choose_language, languages, zone_named

__all__ = ["GUI_ROUTES", "api_docs_html", "install_gui"]

HERE = os.path.dirname(os.path.abspath(__file__))
VIEWS = os.path.join(HERE, "views")
STATIC = os.path.join(HERE, "static")

ACTIVE = ("queued", "running")
PAGE_SIZE = 50
DASH_COUNTS_AGE = 5       # s the dashboard's 24 h counts may lag: a day of 1M runs is 35k rows
                          # (sooner when runs changed: a live dashboard shows its counts move)
JOBS_PAGE_SIZE = 100      # a whole fleet on one page; the filters narrow it down
SESSION_TTL = 12 * 3600   # a working day: long enough not to nag, short enough to expire
LOGIN_FAILURES, LOGIN_WINDOW = 5, 300   # wrong tokens at the login before it answers 429
FLASH_TTL = 60            # the flash only has to survive one 303 redirect
PREFERENCE_TTL = 365 * 86400   # language and time zone: chosen once
HEX = frozenset("0123456789abcdef")   # run ids
CHART_RUNS = 40           # runs in a job's duration chart: enough for a trend, few enough to see
CSP = ("default-src 'self'; img-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")


# -- Pages -----------------------------------------------------------------------------------

def gui_dashboard(service) -> str:
    live = _live(service)   # before the page is read: what changes after it is told
    status = service.status(counts_max_age=DASH_COUNTS_AGE, counts_key=live["cursor"])
    locale = _locale()
    config = status.get("config") or {}
    return _render("dashboard", nav="dashboard", title=_t("title.dashboard"), status=status,
                   config=config, config_errors=_config_errors(config), nodes=service.nodes(),
                   live=live, sla=service.promises.recent(limit=20),
                   timeline=charts.timeline(service, locale, _query(("range",))["range"]))


def gui_jobs(service) -> str:
    filters = _query(("q", "state", "source", "kind", "tag"))
    offset = _int_arg("offset")
    live = _live(service)
    jobs = service.jobs(**{k: v or None for k, v in filters.items()}, limit=JOBS_PAGE_SIZE,
                        offset=offset)
    return _render("jobs", nav="jobs", title=_t("title.jobs"), jobs=jobs, filters=filters,
                   pager=_pager(jobs, JOBS_PAGE_SIZE, offset, filters), live=live,
                   here=bottle.request.fullpath + _qs())


def gui_job_detail(service, job_id: str) -> str:
    live = _live(service, job_id)
    job = access.hide_env(_fetch(lambda i: service.job(i, upcoming=10), job_id))   # 10 fires
    runs, pager = _run_page(service, 20, {}, job_id=job_id)
    recent = service.runs(job_id=job_id, limit=CHART_RUNS)
    definition = yaml.safe_dump(job.get("definition") or {}, sort_keys=False, allow_unicode=True)
    return _render("job_detail", nav="jobs", title=_t("title.job", id=job_id), job=job,
                   runs=runs, definition=definition, pager=pager, where=job.get("defined_at"),
                   chart=charts.duration_chart(recent, _locale()), here=f"/jobs/{job_id}",
                   live=live, graph=graph.job_graph(job))


def gui_calendar(service, name: str) -> str:
    """A calendar's month (``?month=YYYY-MM``): business days, holidays with their names in
    the page's language, excluded and forced days, and the jobs that use it."""
    month = _query(("month",))["month"]
    cal = _fetch(lambda n: service.calendar(n, language=_locale().lang, month=month), name)
    return _render("calendar", nav="jobs", title=_t("title.calendar", name=name), cal=cal)


def _live(service, job_id: str | None = None) -> dict:
    """What a live page's script needs: where the change feed is now, and the job it is about
    (none: every change)."""
    return {"cursor": service.changes_since(None).cursor, "job": job_id}


def gui_live(service):
    """The change feed for the live pages, behind the GUI's login: the same answers as
    ``GET /api/events`` (a stream, or JSON after ``?after=``)."""
    return events_answer(service)


def gui_job_new(service) -> str:
    """The new-job form; ``?clone=ID`` fills it with that job's settings and a free id."""
    source = bottle.request.query.getunicode("clone", "") or ""
    if not source:
        return _render_form(service, "job_new", forms.new_form(), {}, None)
    job = _fetch(service.job, source)
    form = forms.job_to_form(job)
    form["id"] = forms.copy_id(job["id"], lambda i: service.book.get(i) is not None)
    return _render_form(service, "job_new", form, {}, None, clone_of=job["id"])


def gui_job_create(service) -> str:
    source = bottle.request.forms.getunicode("clone_of", "") or ""
    if source:   # what the form does not show, and hidden notify secrets, are the original's
        return _post_job_form(service, "job_new", lambda d: service.clone_job(source, d),
                              "flash.job_created", base=_fetch(service.job, source),
                              clone_of=source)
    return _post_job_form(service, "job_new", service.add_job, "flash.job_created")


def gui_job_edit(service, job_id: str) -> str:
    job = _fetch(service.job, job_id)
    yaml_file = None
    if job.get("source") != "api":
        yaml_file = _act(lambda: service.yaml_snapshot(job_id), f"/jobs/{job_id}")
    return _render_form(service, "job_edit", forms.job_to_form(job), {}, None, job=job,
                        yaml_file=yaml_file)


def gui_job_update(service, job_id: str) -> str:
    job = _fetch(service.job, job_id)
    if job.get("source") != "api":
        return _post_yaml_form(service, job)
    return _post_job_form(service, "job_edit",
                          lambda definition: service.replace_job(job_id, definition),
                          "flash.job_saved", job=job)


def gui_job_yaml(service, job_id: str) -> str:
    """The job as a jobs.yaml entry, to download (the API's ``?format=yaml``, behind the GUI
    login)."""
    text = access.hide_env_yaml(_fetch(service.job_yaml, job_id))
    bottle.response.content_type = YAML_TYPE
    name = f"{job_id}.yaml".replace('"', "")
    bottle.response.set_header("Content-Disposition", f'attachment; filename="{name}"')
    return text


def gui_job_delete(service, job_id: str) -> None:
    _act(lambda: service.delete_job(job_id), f"/jobs/{job_id}")
    _redirect("/jobs", "flash.job_deleted", id=job_id)


def gui_job_action(service, job_id: str, action: str) -> None:
    back = _next_url(f"/jobs/{job_id}")
    if action == "run":
        params = _run_params(back)
        result = _act(lambda: service.run_now(job_id, access.raw_ok(params)), back)
        _redirect(back, "flash.run_queued", link=f"/runs/{result['id']}", id=job_id)
    _act(lambda: (service.pause if action == "pause" else service.resume)(job_id), back)
    _redirect(back, f"flash.job_{action}d", id=job_id)


def _run_params(back: str) -> dict | None:
    """The "run with parameters" fields of the job page: this run's args, kwargs, env."""
    text = {name: (bottle.request.forms.getunicode(f"run_{name}", "") or "").strip()
            for name in ("args", "kwargs", "env")}
    params = {}
    for name, reader in (("args", forms.read_args), ("kwargs", forms.read_json_object),
                         ("env", forms.read_pairs)):
        try:
            value = reader(text[name])
        except forms.FieldError as exc:
            _redirect(back, "flash.run_params", "error", field=name, text=_t(exc.key, **exc.params))
        if value is not forms.OMIT:
            params[name] = value
    return {**params, **forms.read_declared(bottle.request.forms)} or None


def gui_runs(service) -> str:
    filters = _query(runfilter.FIELDS)
    query, problems = runfilter.read_filters(filters, _locale().zone, _t)
    # Only the newest page follows changes: new runs never land on an older one.
    newest = not (bottle.request.query.get("before") or bottle.request.query.get("offset"))
    live = _live(service, filters["job_id"] or None) if newest else None
    runs, pager = _run_page(service, PAGE_SIZE, filters, **query)
    runfilter.match_parts(runs)
    job_ids = [job["id"] for job in service.jobs()]
    return _render("runs", nav="runs", title=_t("title.runs"), runs=runs, filters=filters,
                   job_ids=job_ids, pager=pager, problems=problems, triggers=RUN_TRIGGERS,
                   node_ids=[node["id"] for node in service.nodes()], live=live,
                   window=getattr(runs, "window", None), search_min=runfilter.SEARCH_MIN)


def gui_run_detail(service, run_id: str) -> str:
    run = access.hide_env(_fetch(service.run, run_id))
    active = run.get("status") in ACTIVE
    offsets = {}
    if active:   # what the page shows, and from where its script goes on reading
        for stream in ("stdout", "stderr"):
            out = service.output(run_id, stream, 0)
            run[stream], offsets[stream] = out["text"], out["offset"]
    return _render("run_detail", nav="runs", title=_t("title.run", id=run_id), run=run,
                   active=active, offsets=offsets, refresh=active, graph=graph.run_graph(run))


def gui_run_tail(service, run_id: str) -> str:
    """New output of a run after the offsets the page has (``?stdout=N&stderr=M``), as JSON:
    the run page's script asks twice a second while the run goes on."""
    answer = {}
    for stream in ("stdout", "stderr"):
        text = bottle.request.query.get(stream, "0")
        out = _fetch(lambda rid, s=stream, o=text: service.output(
            rid, s, int(o) if o.isdigit() else 0), run_id)
        answer[stream] = {"text": out["text"], "offset": out["offset"]}
        answer.update(status=out["status"], running=out["running"])
    bottle.response.content_type = "application/json; charset=utf-8"
    bottle.response.set_header("Cache-Control", "no-store")
    return json.dumps(answer, ensure_ascii=False)


def gui_run_rerun(service, run_id: str) -> None:
    back = f"/runs/{run_id}"
    run = _act(lambda: service.rerun(run_id), back)
    _redirect(f"/runs/{run['id']}", "flash.rerun_queued", id=run_id)


def gui_run_retry(service, run_id: str) -> None:
    """A workflow run's failed and skipped steps again (docs/workflows.md)."""
    _act(lambda: service.runlog.retry_workflow(run_id), f"/runs/{run_id}")
    _redirect(f"/runs/{run_id}", "flash.workflow_retried", id=run_id)


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
    _redirect(back, "flash.run_cancelled", id=run_id)


def gui_config(service) -> str:
    config = service.status().get("config") or {}
    return _render("config", nav="config", title=_t("title.config"), config=config,
                   config_errors=_config_errors(config))


def gui_reload(service) -> None:
    try:
        config = service.reload()
    except SchedulerError as exc:
        details = getattr(exc, "details", None) or [{"message": str(exc).strip()}]
        _redirect("/config", "flash.reload_failed", "error", n=len(details),
                  text=_shorten(str(details[0].get("message") or ""), 160))
    _redirect("/config", "flash.reloaded", n=config.get("jobs", 0))


GUI_ROUTES: list[tuple[str, str, Callable[..., Any]]] = [
    ("GET", "/", gui_dashboard),
    ("GET", "/jobs", gui_jobs),
    ("GET", "/jobs/new", gui_job_new),
    ("POST", "/jobs/new", gui_job_create),
    ("GET", "/jobs/<job_id>", gui_job_detail),
    ("GET", "/calendars/<name>", gui_calendar),
    ("GET", "/jobs/<job_id>/edit", gui_job_edit),
    ("POST", "/jobs/<job_id>/edit", gui_job_update),
    ("GET", "/jobs/<job_id>/yaml", gui_job_yaml),
    ("POST", "/jobs/<job_id>/delete", gui_job_delete),
    ("POST", "/jobs/<job_id>/<action:re:run|pause|resume>", gui_job_action),
    ("GET", "/runs", gui_runs),
    ("GET", "/runs/<run_id>", gui_run_detail),
    ("GET", "/runs/<run_id>/<stream:re:stdout|stderr>", gui_run_output),
    ("GET", "/runs/<run_id>/tail", gui_run_tail),
    ("POST", "/runs/<run_id>/cancel", gui_run_cancel),
    ("POST", "/runs/<run_id>/rerun", gui_run_rerun),
    ("POST", "/runs/<run_id>/retry", gui_run_retry),
    ("GET", "/live", gui_live),
    ("GET", "/config", gui_config),
    ("POST", "/config/reload", gui_reload),
    *audit.GUI_ROUTES,
]


def install_gui(app: bottle.Bottle, service) -> None:
    """Register GUI_ROUTES (with access.py's), /static and the security headers on `app`."""
    key = functools.cache(lambda: _derive_key(_token(service) or access.cookie_key(service)))
    for method, path, handler in GUI_ROUTES + access.ACCESS_ROUTES:
        role = access.GUI_ROLES.get((method, path), "admin")   # none named: admins only
        callback = _guard(functools.partial(handler, service), service, key, method, role)
        app.route(path, method, callback, name=handler.__name__, **{"ts.role": role})
    app.route("/static/<path:path>", "GET", _static)
    app.add_hook("after_request", _security_headers)
    app.config["ts.error_page"] = functools.partial(_error_hook, service)
    app.config["ts.gui.logins"] = access.FailureLimiter(LOGIN_FAILURES, LOGIN_WINDOW)


# -- Safety: login, CSRF, flash, headers ----------------------------------------------------

def _guard(handler, service, key: Callable[[], bytes], method: str, role: str):
    def guarded(**kwargs):
        environ = bottle.request.environ
        environ["ts.gui.key"] = key()
        environ["ts.gui.locale"] = _choose_locale(service)
        access.sign_in(service)   # the session's user, unless the core named the actor
        if role != "open" and environ.get("ts.actor") is None:
            # Back to the page after login; a POST's target has no page, so to the dashboard.
            back = bottle.request.fullpath + _qs() if method == "GET" else "/"
            bottle.redirect("/login?" + urlencode({"next": back}), 303)
        if method == "POST" and not _csrf_ok():
            raise _error_page(403, _t("error.403"), _t("error.csrf"))
        access.check_role(role, method)
        with acting(environ["ts.actor"] or ANONYMOUS):   # the session's user, named above
            return handler(**kwargs)
    return guarded


def _choose_locale(service) -> Locale:
    """The page's language and time zone. ``?lang=`` and ``?tz=`` choose and are remembered in
    cookies (``?tz=service`` forgets the browser's zone); Accept-Language is the default."""
    query, cookies = bottle.request.query, bottle.request
    asked = query.get("lang")
    lang = choose_language(asked, cookies.get_cookie(LANG_COOKIE),
                           bottle.request.headers.get("Accept-Language"))
    if asked == lang:
        _set_cookie(LANG_COOKIE, lang, PREFERENCE_TTL, samesite="lax")
    zone = zone_named(cookies.get_cookie(TZ_COOKIE))
    if query.get("tz") == "service":
        zone = None
        bottle.response.delete_cookie(TZ_COOKIE, path="/")
    elif zone_named(query.get("tz")):
        zone = zone_named(query.get("tz"))
        _set_cookie(TZ_COOKIE, str(zone), PREFERENCE_TTL, samesite="lax")
    return Locale(lang, zone or service.timezone, service.timezone)


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


def _set_cookie(name: str, value: str, max_age: int | None, samesite: str = "strict") -> None:
    secure = bottle.request.urlparts.scheme == "https"
    options = {"max_age": max_age} if max_age else {}
    bottle.response.set_cookie(name, value, path="/", httponly=True, samesite=samesite,
                               secure=secure, **options)


def _redirect(url: str, key: str | None = None, kind: str = "ok", link: str | None = None,
              **params):
    """303 to ``url`` with a flash: a catalog key and its values, worded when it is shown (a
    ``text`` value is a core message, translated where it is one of ours)."""
    if key:
        data = json.dumps({"m": key, "p": params, "k": kind, "u": link, "t": int(time.time())})
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
    if time.time() - data.get("t", 0) >= FLASH_TTL:
        return None
    locale, params = _locale(), dict(data.get("p") or {})
    if "text" in params:
        params["text"] = locale.message(str(params["text"]))
    return {**data, "m": locale.t(str(data.get("m")), **params)}


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


# -- The job form -------------------------------------------------------------------------------

def _form() -> dict[str, str]:
    posted = bottle.request.forms
    return {name: (posted.getunicode(name, "") or "").strip() for name in forms.FORM_FIELDS}


def _post_job_form(service, view: str, save: Callable[[dict], Any], done: str,
                   job: dict | None = None, base: dict | None = None, **extra) -> str:
    """Preview, save and redirect, or show the form again with its errors and values. ``base``:
    the job a new one copies (what the form does not manage is taken from it)."""
    form = _form()
    if job is not None:
        form["id"] = job["id"]   # the id of an existing job is not editable
    definition, errors = forms.form_to_definition(form, _t, job or base)
    preview = None
    if not errors and bottle.request.forms.get("action") == "preview":
        preview = _preview(service, definition, form, errors)
    elif not errors:
        errors = _attempt(lambda: save(definition), form)
        if not errors:
            _redirect(f"/jobs/{definition['id']}", done, id=definition["id"])
    if errors:
        bottle.response.status = 422
    return _render_form(service, view, form, errors, preview, job=job, **extra)


def _render_form(service, view: str, form: dict, errors: dict, preview, job=None,
                 **extra) -> str:
    page = ({"nav": "jobs", "title": _t("title.edit", id=job["id"]), "job": job} if job
            else {"nav": "new", "title": _t("title.new")})
    return _render(view, **page, form=form, errors=errors, preview=preview,
                   groups=forms.GROUPS, advanced=forms.advanced_in_use(form, errors),
                   error_links=forms.error_links(errors),
                   default_tz=str(service.timezone), **{"yaml_file": None, "clone_of": None,
                                                        "conflict": None, **extra})


def _post_yaml_form(service, job: dict) -> str:
    """Write a jobs.yaml job's form into the file, or show the form again with its errors, the
    entered values, and (the file changed meanwhile) what changed, with the new version's hash:
    saving again then writes over it knowingly."""
    form, job_id = _form(), job["id"]
    form["id"] = job_id
    base = bottle.request.forms.getunicode("file_hash", "") or ""
    yaml_file = {**(job.get("defined_at") or {}), "hash": base}
    definition, errors = forms.form_to_definition(form, _t, job)
    conflict = preview = None
    status = 422
    if not errors and bottle.request.forms.get("action") == "preview":
        preview = _preview(service, definition, form, errors)
    elif not errors:
        try:
            done = service.edit_yaml_job(job_id, definition, base)
        except SchedulerError as exc:
            if getattr(exc, "code", "") == "file_changed":
                conflict, yaml_file["hash"] = {"diff": _diff_lines(exc.diff)}, exc.hash
            status = exc.status   # a conflict's panel says it all; other refusals at the top
            errors = ({} if conflict else {"_general": _locale().message(str(exc))}
                      if exc.status == 409 else _errors_from(exc, form))
        else:
            where = f"{done['path']}:{done['line']}"
            if not done["applied"]:
                _redirect(f"/jobs/{job_id}", "flash.yaml_not_applied", "error", where=where,
                          text=_shorten(done["error"] or "", 200))
            _redirect(f"/jobs/{job_id}", "flash.yaml_written" if done["changed"] else
                      "flash.yaml_unchanged", where=where, id=job_id)
    bottle.response.status = status if errors or conflict else 200
    return _render_form(service, "job_edit", form, errors, preview, job=job,
                        yaml_file=yaml_file, conflict=conflict)


def _diff_lines(diff: str) -> list[str]:
    """A unified diff's lines, its two file headers said in the page's language."""
    lines = diff.splitlines()
    for index, (mark, key) in enumerate((("---", "edit.diff_then"), ("+++", "edit.diff_now"))):
        if index < len(lines) and lines[index].startswith(mark + " "):
            path = lines[index][4:].rsplit(" (", 1)[0]
            lines[index] = f"{mark} {path} ({_t(key)})"
    return lines


def _config_errors(config: dict) -> list[dict]:
    """Each error of the failed reload: where (line, job, field: as in the log) and what, in
    the page's language where the message is one of ours (``lang`` says which it is)."""
    locale, out = _locale(), []
    for detail in config.get("errors") or []:
        english = str(detail.get("message") or "")
        message = locale.message(english)
        where = [locale.t("config.line", line=detail.get("line") or 1), detail.get("job"),
                 detail.get("field")]
        out.append({"where": " · ".join(str(p) for p in where if p), "message": message,
                    "lang": locale.lang if message != english else "en"})
    return out


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
    """One message per form field, in the page's language where the message is one of ours."""
    locale = _locale()
    if getattr(exc, "status", None) == 409:
        return {"id": locale.message(str(exc))}
    errors: dict[str, str] = {}
    for detail in getattr(exc, "details", None) or []:
        field = forms.error_field(str(detail.get("field") or ""), form["trigger_type"])
        message = locale.message(str(detail.get("message") or exc))
        errors[field] = f"{errors[field]} {message}" if field in errors else message
    return errors or {"_general": locale.message(str(exc))}


# -- Small helpers, also handed to the templates ----------------------------------------------

def _render(name: str, **kwargs) -> str:
    locale = _locale()
    return bottle.template(name, template_lookup=[VIEWS], csrf=_csrf_token(), flash=_pop_flash(),
                           login=bottle.request.environ.get("ts.gui.login", False),
                           path=bottle.request.path, h=_helpers(locale), t=locale.t,
                           lang=locale.lang, languages=languages(), locale=locale,
                           lang_url=_lang_url, **kwargs)


def _helpers(locale: Locale) -> dict:
    return {"nav": NAV, "time": locale.time, "ago": locale.ago, "duration": locale.duration,
            "span": locale.span, "since": locale.since, "word": locale.word,
            "message": locale.message, "trigger": locale.trigger, "elapsed": _elapsed,
            "json": lambda value: json.dumps(value, ensure_ascii=False),
            "pretty_json": lambda value: json.dumps(value, ensure_ascii=False, indent=2),
            "args": lambda value: forms.show_args(value if value else forms.OMIT),
            "can": access.can, "actor": bottle.request.environ.get("ts.actor"),
            "run_statuses": RUN_STATUSES, "job_states": JOB_STATES}


def _elapsed(iso: str) -> str:
    """Time since ``iso`` as h:mm:ss (the run page's script ticks it in the same form)."""
    seconds = int(max((datetime.now(UTC) - datetime.fromisoformat(iso)).total_seconds(), 0))
    hours, rest = divmod(seconds, 3600)
    return (f"{hours}:{rest // 60:02d}" if hours else f"{rest // 60}") + f":{rest % 60:02d}"


def _locale() -> Locale:
    return bottle.request.environ["ts.gui.locale"]


def _t(key: str, **params) -> str:
    return _locale().t(key, **params)


def _lang_url(code: str | None = None, tz: str | None = None) -> str:
    """This page with ``lang`` (or ``tz``) set in its query, the other parameters kept."""
    query = [(k, v) for k, v in bottle.request.query.allitems() if k not in ("lang", "tz")]
    query.append(("lang", code) if code else ("tz", tz or "service"))
    return bottle.request.path + "?" + urlencode(query)


def _fetch(getter: Callable[[str], dict], key: str) -> dict:
    try:
        return getter(key)
    except SchedulerError as exc:
        if getattr(exc, "status", None) != 404:
            raise
        raise _error_page(404, _t("error.404"), _locale().message(str(exc))) from exc


def _error_page(code: int, title: str, message: str) -> bottle.HTTPResponse:
    """An HTML error page as an exception that keeps the cookies set so far."""
    body = _render("error", nav="", title=title, code=code, message=message)
    page = bottle.response.copy(cls=bottle.HTTPResponse)
    page.status, page.body = code, body
    return page


def _error_hook(service, code: int, message: str) -> str:
    """The app's error hook for GUI paths: the same page as the GUI's own errors."""
    environ = bottle.request.environ
    environ.setdefault("ts.gui.key", secrets.token_bytes(32))
    if "ts.gui.locale" not in environ:
        environ["ts.gui.locale"] = _choose_locale(service)
    locale = _locale()
    title = locale.t(f"error.{code}") if f"error.{code}" in locale.english else \
        locale.t("error.other")
    text = locale.message(message)
    return _render("error", nav="", title=title, code=code, message=text[:1].upper() + text[1:])


def _act(call: Callable[[], Any], back: str):
    """Run a POST action; on a service error go back with the message as an error flash."""
    try:
        return call()
    except SchedulerError as exc:
        _redirect(back, "flash.error", "error", text=str(exc))


def _query(names: tuple[str, ...]) -> dict[str, str]:
    return {n: (bottle.request.query.getunicode(n, "") or "").strip() for n in names}


def _qs() -> str:
    query = bottle.request.query_string
    return f"?{query}" if query else ""


def _int_arg(name: str) -> int:
    text = bottle.request.query.get(name, "")
    value = int(text) if text.isascii() and text.isdigit() else 0
    if value > MAX_OFFSET:   # past every database's integer range: was a 500
        raise _error_page(400, _t("error.400"), _t("error.too_far", name=name, max=MAX_OFFSET))
    return value


def _pager(items, limit: int, offset: int, params: dict[str, str]) -> dict:
    total = getattr(items, "total", len(items))
    keep = {k: v for k, v in params.items() if v}

    def url(off: int) -> str:
        return "?" + urlencode({**keep, "offset": off} if off else keep)
    return {"total": total, "first": offset + 1 if items else 0, "last": offset + len(items),
            "prev": url(max(offset - limit, 0)) if offset > 0 else None,
            "next": url(offset + limit) if offset + limit < total else None}


def _run_page(service, limit: int, params: dict[str, str], **query) -> tuple[list, dict]:
    """A page of runs and its pager. Pages follow each other by run id (``?before=``: the same
    cost at any depth, where an offset reads every run it skips); ``?pos=`` only numbers the
    rows; ``?offset=`` still works. The count stops at a cap: then the total reads "N+"."""
    text = bottle.request.query.get("before", "")
    before = text if text and len(text) <= 32 and all(c in HEX for c in text) else None
    offset = 0 if before else _int_arg("offset")
    pos = _int_arg("pos") if before else offset
    runs = service.runs(limit=limit, before=before, offset=offset, **query)
    keep = {k: v for k, v in params.items() if v}

    def url(**cursor) -> str:
        return "?" + urlencode({**keep, **cursor})
    prev = None
    if pos and runs:   # the page before starts `limit` runs newer than this one
        newer = service.runs(limit=limit + 1, after=runs[0]["id"], **query)
        prev = url(before=newer[0]["id"], pos=max(pos - limit, 0)) if len(newer) > limit \
            else url()
    total = pos + runs.total - offset
    return runs, {"total": f"{total}+" if runs.capped else total,
                  "first": pos + 1 if runs else 0, "last": pos + len(runs), "prev": prev,
                  "next": url(before=runs[-1]["id"], pos=pos + len(runs))
                  if runs.total > offset + len(runs) else None}


def _shorten(text: str, size: int) -> str:
    return text if len(text) <= size else text[: size - 1] + "…"


NAV = ("dashboard", "/"), ("jobs", "/jobs"), ("runs", "/runs"), ("config", "/config"), \
    ("audit", "/audit"), ("new", "/jobs/new"), ("users", "/users")


from . import access  # noqa: E402  (its pages use the helpers above: imported once they exist)
