"""The guard: one Bottle plugin for every cross-cutting concern of a request: token, Host and
Origin checks, content types, ids, wrong-token limits, and errors as JSON."""

from __future__ import annotations

import collections
import dataclasses
import functools
import ipaddress
import logging
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Optional

import bottle
import sqlalchemy as sa

from ..access import OPEN, Access
from ..audit import acting
from ..config import allowed_hosts
from ..models import ANONYMOUS
from ..errors import (
    Forbidden, JobNotFound, NotFound, RunNotFound, SchedulerError, Unauthorized, UnsupportedMedia)
from .auth import TooManyRequests, check_role, identify
from .io import _ID_CHARS, _error_body, _json_response
from ..text import _clean, _short

if TYPE_CHECKING:
    from ..service import SchedulerService

log = logging.getLogger("task_scheduler")


class HttpGuard:
    """Cross-cutting HTTP concerns as one Bottle plugin (the shape of ``bottle.JSONPlugin``).

    Every route: the ``Host`` must be one this service answers to (a page on another site that
    re-resolves its own name to 127.0.0.1, DNS rebinding, is refused), and unsafe methods from a
    foreign ``Origin`` are refused (a cross-site form). API routes also get: the token, a JSON
    content type on writes (a cross-site form cannot send one), ids checked before any database
    is asked, and our errors mapped to JSON answers."""

    name = "task_scheduler_guard"
    api = 2

    def __init__(self, service: SchedulerService):
        self.service = service
        self.hosts = allowed_hosts(service.config)
        self.proxies = trusted_networks(service.config.trusted_proxies)
        self.failures = FailureLimiter(TOKEN_FAILURES, TOKEN_WINDOW)
        self.access = Access(service.store, service.config, service.audit)

    def apply(self, callback, route):
        api, ping = route.config.get("ts.api", False), route.config.get("ts.ping", False)
        needed = route.config.get("ts.role", "admin")   # a route that names none: admins only
        what = f"{route.method} {route.rule}"
        callback = _as_actor(callback)

        @functools.wraps(callback)
        def guarded(*args, **kwargs):
            request = bottle.request
            request.environ["ts.client"] = client_address(request.environ, self.proxies)
            request.environ["ts.actor"] = None
            try:
                host_problem = self._host_problem(request)
                if host_problem:
                    raise Forbidden(host_problem)
                if request.method not in SAFE_METHODS:
                    self._check_origin(request)
                if not (api and ping and self._ping_token(request, kwargs)):
                    actor = self._identify(request, needed, api)
                    if api:
                        check_role(actor, needed, what)
                if not api:
                    return callback(*args, **kwargs)
                if request.method not in SAFE_METHODS and not ping:   # a ping's body: text
                    _check_write_type(request)
                _check_ids(kwargs)
                result = callback(*args, **kwargs)
            except SchedulerError as exc:
                if not api:
                    raise bottle.HTTPError(exc.status, str(exc)) from None
                return _error_response(exc)
            except bottle.HTTPResponse:
                raise
            except sa.exc.DBAPIError as exc:   # the database is down or locked: not the caller's
                log.error("%s %s: database error: %s", request.method, request.path, _clean(exc))
                if not api:
                    raise bottle.HTTPError(503, "The database is not answering; try again "
                                                "shortly.") from None
                return _json_response(503, _error_body(
                    "unavailable", "the database is not answering; try again shortly"))
            except Exception:
                if not api:
                    raise
                log.exception("API %s %s failed", request.method, request.path)
                return _json_response(500, _error_body("internal", "internal error; see the "
                                                                   "server log"))
            if isinstance(result, bottle.HTTPResponse):
                return result
            status, body = result if isinstance(result, tuple) else (200, result)
            return _json_response(status, body)
        return guarded

    def _identify(self, request, needed: str, api: bool):
        """The actor, in environ["ts.actor"] for the handlers (None: no credentials). An open
        route answers whatever credentials come with it."""
        peer = request.environ.get("REMOTE_ADDR") or "?"
        try:
            actor = identify(request, self.access, self.failures, request.environ["ts.client"],
                             bool(self.proxies) and _in_networks(peer, self.proxies), api)
        except SchedulerError:
            if needed != OPEN:
                raise
            actor = None
        request.environ["ts.actor"] = actor
        return actor

    def _ping_token(self, request, kwargs: dict) -> bool:
        """A ping route also takes the job's own ping token: ``Authorization: Bearer`` or
        ``?token=`` (curl in a crontab). A wrong one counts as a wrong token of its client."""
        scheme, _, value = request.get_header("Authorization", "").partition(" ")
        given = value.strip() if scheme.lower() == "bearer" else request.query.get("token", "")
        job_id = kwargs.get("job_id", "")
        if not given or not (0 < len(job_id) <= 64 and _ID_CHARS.issuperset(job_id)):
            return False
        if self.service.promises.token_valid(job_id, given):
            return True
        if not request.get_header("Authorization"):   # a header is counted by identify
            self.failures.failed(request.environ["ts.client"])
        return False

    def _host_problem(self, request) -> Optional[str]:
        host = request.get_header("Host")
        if host is None or host_allowed(_split_host(host)[0], self.hosts):
            return None
        return (f"Host {_short(host)} is not one this service answers to; use localhost, the "
                f"address it listens on, or add the name with --allowed-hosts (TS_ALLOWED_HOSTS)")

    def _check_origin(self, request) -> None:
        origin = request.get_header("Origin")
        if origin is None:
            return   # not sent by a browser (curl, scripts), or a same-origin GET-like request
        scheme, _, rest = origin.partition("://")
        host = request.get_header("Host")
        if scheme in ("http", "https") and rest and (
                (host is not None and rest.lower() == host.lower())
                or host_allowed(_split_host(rest)[0], self.hosts, explicit_only=True)):
            return
        raise Forbidden(f"a request from the page at {_short(origin)} may not change anything "
                        f"here (cross-site); allowed origins are this service's own and "
                        f"--allowed-hosts")


SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))


def _as_actor(callback):
    """The handler, run as the request's actor (``audit.acting``): the parts it calls record
    who asked. Without credentials (an open route, a ping by its job's ping token) the
    actor is anonymous: such a request may ping, and read health, nothing more."""
    @functools.wraps(callback)
    def as_actor(*args, **kwargs):
        environ = bottle.request.environ
        actor = environ["ts.actor"] or dataclasses.replace(
            ANONYMOUS, address=environ.get("ts.client"))
        with acting(actor):
            return callback(*args, **kwargs)
    return as_actor


def host_allowed(host: str, hosts: dict, explicit_only: bool = False) -> bool:
    host = host.lower().rstrip(".")
    explicit = hosts["explicit"]
    if "*" in explicit or host in explicit or any(
            h.startswith(".") and (host.endswith(h) or host == h[1:]) for h in explicit):
        return True
    if explicit_only:
        return False
    # IP literals cannot be re-pointed by a DNS answer, so no rebinding comes through them.
    return host in hosts["names"] or host == "localhost" or host.endswith(".localhost") \
        or _is_ip(host)


def _split_host(value: str) -> tuple[str, str]:
    """'[::1]:8000' -> ('::1', '8000'); 'example.com:80' -> ('example.com', '80')."""
    value = value.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, rest.lstrip(":")
    host, sep, port = value.rpartition(":")
    return (host, port) if sep and port.isdigit() and ":" not in host else (value, "")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _check_write_type(request) -> None:
    """API writes carry JSON, or nothing without a form's content type: a cross-site form
    (urlencoded, multipart, text/plain) never gets through."""
    ctype = (request.content_type or "").split(";")[0].strip().lower()
    if ctype == "application/json":
        return
    chunked = "chunked" in request.environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    empty = not chunked and (request.environ.get("CONTENT_LENGTH") or "0") == "0"
    # text/plain: what a WSGI server may fill in when a body-less request names no type
    if empty and ctype in ("", "text/plain"):
        return
    raise UnsupportedMedia(f"send the body as JSON with Content-Type: application/json "
                           f"(got {ctype or 'none'})")


def _check_ids(kwargs: dict) -> None:
    for name, value in kwargs.items():
        chars = _ID_CHARS | {"@"} if name == "user_name" else _ID_CHARS   # e-mail addresses
        if not (0 < len(value) <= 64 and chars.issuperset(value)):
            # No job or run has such an id; the database is not asked (PostgreSQL refuses NUL
            # characters in a query, for one).
            raise _NOT_FOUND.get(name, RunNotFound)(
                f"{name.removesuffix('_id').replace('_name', '')} {value!r} does not exist")


_NOT_FOUND = {"job_id": JobNotFound, "user_name": NotFound, "token_id": NotFound}


def _error_response(exc: SchedulerError) -> bottle.HTTPResponse:
    response = _json_response(exc.status, _error_body(exc.code, str(exc), exc.details))
    if isinstance(exc, Unauthorized):
        response.set_header("WWW-Authenticate", 'Bearer realm="task-scheduler"')
    if isinstance(exc, TooManyRequests):
        response.set_header("Retry-After", str(exc.retry_after))
    return response


TOKEN_FAILURES = 20   # wrong tokens a client may send within TOKEN_WINDOW: a typo or a stale
TOKEN_WINDOW = 60     # script, not a guesser (a 16-character token takes ~10^28 guesses)


class FailureLimiter:
    """Failures per client within a sliding ``window``: past ``limit`` the client waits until
    the oldest leaves the window. Only failures count: a client's successes never wait."""

    def __init__(self, limit: int, window: float):
        self.limit, self.window = limit, window
        self._failures: dict[str, collections.deque] = {}
        self._lock = threading.Lock()

    def failed(self, client: str) -> int:
        """Count a failure; the seconds the client must now wait (0: not over its limit)."""
        with self._lock:
            recent = self._recent(client)
            if len(recent) >= self.limit:
                return max(int(recent[0] + self.window - time.monotonic()) + 1, 1)
            recent.append(time.monotonic())
            if len(recent) == self.limit:
                log.warning("%d wrong tokens from %s within %gs: its next ones are answered "
                            "429 for a while", self.limit, client, self.window)
            if len(self._failures) > 10000:   # an address scan: forget the quiet ones
                self._failures = {k: v for k, v in self._failures.items() if v}
            return 0

    def forget(self, client: str) -> None:
        """The client got it right: its failures are forgotten (the GUI's login does this)."""
        with self._lock:
            self._failures.pop(client, None)

    def _recent(self, client: str) -> collections.deque:
        recent = self._failures.setdefault(client, collections.deque())
        while recent and recent[0] < time.monotonic() - self.window:
            recent.popleft()
        return recent


def trusted_networks(values: Iterable) -> tuple:
    """--trusted-proxies as networks; a clear error for what is neither address nor network."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise SchedulerError(f"trusted proxies: {value!r} is not an IP address or network "
                                 f"(e.g. 10.0.0.5 or 10.0.0.0/8)") from None
    return tuple(networks)


def client_address(environ: dict, proxies: tuple) -> str:
    """Who sent a request: the peer, or, when the peer is a trusted proxy, the nearest address
    in X-Forwarded-For that is not one of the trusted proxies (the ones before it could be
    written by the client itself)."""
    peer = environ.get("REMOTE_ADDR") or "?"
    forwarded = environ.get("ts.forwarded_for", environ.get("HTTP_X_FORWARDED_FOR"))
    if not proxies or not forwarded or not _in_networks(peer, proxies):
        return peer
    for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
        if not _in_networks(hop, proxies):
            return hop if _is_ip(hop) else peer
    return peer


def _in_networks(address: str, networks: tuple) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)
