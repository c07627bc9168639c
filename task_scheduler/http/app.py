"""The WSGI app: the route table, create_app() with the guard plugin, the OpenAPI and docs
pages, /metrics, and the GUI plugin when one is given or installed."""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import threading
from typing import TYPE_CHECKING, Any

import bottle

from .api import (
    MAX_STREAMS, api_audit, api_calendar, api_cancel_run, api_create_job, api_delete_job,
    api_events, api_get_job, api_get_run, api_health, api_index, api_list_jobs, api_list_runs,
    api_nodes, api_pause_job, api_ping_job, api_ping_token, api_reload, api_replace_job,
    api_rerun_run, api_resume_job, api_retry_run, api_run_job, api_run_stderr, api_run_stdout,
    api_status)
from .accounts import (
    api_create_token, api_create_user, api_delete_user, api_list_tokens, api_list_users,
    api_revoke_token, api_update_user, api_whoami)
from .guard import HttpGuard
from .io import _PING_ROUTES, _common_headers, _error_page, _raw_json
from ..metrics import RunStats, metrics_text

if TYPE_CHECKING:
    from ..service import SchedulerService

log = logging.getLogger("task_scheduler")
GUI_ENTRY_POINTS = "task_scheduler.gui"
DISCOVER = object()   # create_app's default: the installed GUI, if any


def api_openapi(service):
    """This API as an OpenAPI 3.1 document, generated from the models that validate requests."""
    return _raw_json(200, _openapi(_secured()))


def _openapi(secured: bool) -> str:
    """The OpenAPI document as JSON text. Its module (and the response models in it: ~0.8 MiB)
    is imported on the first ask: a service that is never asked does without."""
    from .openapi import openapi_json
    return openapi_json(tuple(API_ROUTES), secured)


def api_docs(service):
    """A readable page of this API, rendered on the server from the OpenAPI document."""
    secured = _secured()
    gui = bottle.request.app.config["ts.gui"]
    if gui is None:   # the core alone: the document itself is the reference
        body = _DOCS_WITHOUT_GUI
    else:             # the page's template lives with the GUI
        body = gui.api_docs_html(_openapi(secured), secured)
    return bottle.HTTPResponse(body, headers={
        "Content-Type": "text/html; charset=utf-8", "Content-Security-Policy": DOCS_CSP})


def _secured() -> bool:
    """Credentials are needed: a token, SSO, or a user exists."""
    return bottle.request.app.config["ts.access"].required()


_DOCS_WITHOUT_GUI = ('<!doctype html><html lang="en"><meta charset="utf-8"><title>API</title>'
                     '<p>This API is described by <a href="/api/openapi.json">/api/openapi.json'
                     '</a> (OpenAPI 3.1); docs/api.md has examples.</p></html>')


def api_metrics(service):
    """Prometheus metrics (text exposition format 0.0.4)."""
    stats = bottle.request.app.config["ts.run_stats"]
    return bottle.HTTPResponse(metrics_text(service, stats),
                               headers={"Content-Type": METRICS_CONTENT_TYPE})


API_ROUTES = [
    ("GET", "/api/", api_index),
    ("GET", "/api", api_index),
    ("GET", "/api/health", api_health),
    ("GET", "/api/status", api_status),
    ("GET", "/api/jobs", api_list_jobs),
    ("POST", "/api/jobs", api_create_job),
    ("GET", "/api/jobs/<job_id>", api_get_job),
    ("PUT", "/api/jobs/<job_id>", api_replace_job),
    ("DELETE", "/api/jobs/<job_id>", api_delete_job),
    ("POST", "/api/jobs/<job_id>/pause", api_pause_job),
    ("POST", "/api/jobs/<job_id>/resume", api_resume_job),
    ("POST", "/api/jobs/<job_id>/run", api_run_job),
    ("POST", "/api/jobs/<job_id>/ping", api_ping_job),
    ("POST", "/api/jobs/<job_id>/ping-token", api_ping_token),
    ("GET", "/api/runs", api_list_runs),
    ("GET", "/api/runs/<run_id>", api_get_run),
    ("GET", "/api/runs/<run_id>/stdout", api_run_stdout),
    ("GET", "/api/runs/<run_id>/stderr", api_run_stderr),
    ("POST", "/api/runs/<run_id>/cancel", api_cancel_run),
    ("POST", "/api/runs/<run_id>/rerun", api_rerun_run),
    ("POST", "/api/runs/<run_id>/retry", api_retry_run),
    ("GET", "/api/nodes", api_nodes),
    ("GET", "/api/calendars/<name>", api_calendar),
    ("GET", "/api/events", api_events),
    ("POST", "/api/reload", api_reload),
    ("GET", "/api/audit", api_audit),
    ("GET", "/api/openapi.json", api_openapi),
    ("GET", "/api/docs", api_docs),
    ("GET", "/metrics", api_metrics),
    ("GET", "/api/whoami", api_whoami),
    ("GET", "/api/users", api_list_users),
    ("POST", "/api/users", api_create_user),
    ("PUT", "/api/users/<user_name>", api_update_user),
    ("DELETE", "/api/users/<user_name>", api_delete_user),
    ("GET", "/api/tokens", api_list_tokens),
    ("POST", "/api/tokens", api_create_token),
    ("DELETE", "/api/tokens/<token_id>", api_revoke_token),
]
# The role each route needs (docs/security.md): the guard refuses the others with 403, and
# tests/test_roles.py fails for a route missing here (the guard would treat it as admin-only).
# "open": anyone, no credentials needed.
API_ROLES = {
    **{("GET", path): "viewer" for method, path, _ in API_ROUTES if method == "GET"},
    ("GET", "/api/health"): "open",
    ("GET", "/api/users"): "admin",
    ("GET", "/api/audit"): "admin",
    ("POST", "/api/jobs"): "admin",
    ("PUT", "/api/jobs/<job_id>"): "admin",
    ("DELETE", "/api/jobs/<job_id>"): "admin",
    ("POST", "/api/jobs/<job_id>/pause"): "operator",
    ("POST", "/api/jobs/<job_id>/resume"): "operator",
    ("POST", "/api/jobs/<job_id>/run"): "operator",   # raw args, kwargs, env: admin
    ("POST", "/api/jobs/<job_id>/ping"): "operator",   # or the job's own ping token
    ("POST", "/api/jobs/<job_id>/ping-token"): "operator",
    ("POST", "/api/runs/<run_id>/cancel"): "operator",
    ("POST", "/api/runs/<run_id>/rerun"): "operator",
    ("POST", "/api/runs/<run_id>/retry"): "operator",
    ("POST", "/api/reload"): "admin",
    ("POST", "/api/users"): "admin",
    ("PUT", "/api/users/<user_name>"): "admin",
    ("DELETE", "/api/users/<user_name>"): "admin",
    ("POST", "/api/tokens"): "viewer",                # one's own; another's: admin (handler)
    ("DELETE", "/api/tokens/<token_id>"): "viewer",   # likewise
}


def create_app(service: SchedulerService, gui: Any = DISCOVER) -> bottle.Bottle:
    """The WSGI app: the JSON API under /api and, with a GUI, the pages on the same app.

    ``gui`` is a module or object with ``install_gui(app, service)`` and
    ``api_docs_html(document, secured)`` (the GUI package), or None for the API alone. By
    default it is the one installed under the entry point group ``task_scheduler.gui``: the core
    never imports the GUI by name, so the GUI can import the core."""
    gui = discover_gui() if gui is DISCOVER else gui
    app = bottle.Bottle(catchall=True)
    app.config.update({"json.enable": False, "ts.run_stats": RunStats(service.clock), "ts.gui": gui,
                       "ts.streams": threading.BoundedSemaphore(MAX_STREAMS)})
    guard = HttpGuard(service)
    app.install(guard)
    app.config["ts.access"] = guard.access
    for method, path, handler in API_ROUTES:
        app.route(path, method, functools.partial(handler, service), name=handler.__name__,
                  **{"ts.api": True, "ts.role": API_ROLES.get((method, path), "admin"),
                     "ts.ping": path in _PING_ROUTES})
    for code in (c for c in bottle.HTTP_CODES if c >= 400):
        app.error(code)(_error_page)
    app.add_hook("after_request", _common_headers)
    if gui is not None:
        gui.install_gui(app, service)
    return app


@functools.cache
def discover_gui() -> Any:
    """The GUI installed as a plugin (pyproject's ``task_scheduler.gui`` entry point), or None:
    the API alone still serves. A GUI that is there but broken fails loudly."""
    found = importlib.metadata.entry_points(group=GUI_ENTRY_POINTS)
    if not found:
        log.info("no GUI installed (entry point group %s): serving the API only; "
                 "create_app(service, gui=<the GUI package>) adds a vendored one",
                 GUI_ENTRY_POINTS)
        return None
    plugin = sorted(found, key=lambda ep: ep.name)[0]
    try:
        return plugin.load()
    except ModuleNotFoundError as exc:
        if exc.name != plugin.module:
            raise
        log.info("GUI %s is registered but not importable: serving the API only", plugin.value)
        return None


METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DOCS_CSP = ("default-src 'none'; style-src 'self'; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'")
