"""Request and response plumbing: JSON bodies within limits, query models, JSON and error answers,
common headers."""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Annotated, Any, Literal, Optional

import bottle
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictStr, ValidationError

from ..errors import BadRequest, InvalidQuery, PayloadTooLarge, UnsupportedMedia
from ..models import JOB_STATES, RUN_STATUSES, RUN_TRIGGERS, _Model
from ..store.schema import SEARCH_MAX, SEARCH_MIN, SEARCH_SCAN
from ..text import _clean, _json_default, _short
from ..timeutil import _naive_utc

log = logging.getLogger("task_scheduler")


MAX_BODY = 1 << 20   # a job definition is a few hundred bytes; 1 MiB is generous
MAX_OFFSET = 10 ** 9  # keeps OFFSET inside every database's integer range
ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"   # JobDefinition.id's rule; run ids (hex) follow it too
_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


def _one_of(allowed: tuple):
    """A query value naming one or more (comma-separated) of ``allowed``."""
    def check(value: str) -> str:
        parts = [p.strip() for p in value.split(",") if p.strip()]
        bad = [p for p in parts if p not in allowed] or ([] if parts else [value])
        if bad:
            raise ValueError(f"{bad[0]!r} is not one of {', '.join(allowed)} (several may be "
                             f"given, comma-separated)")
        return ",".join(parts)
    return check


def _list_pattern(allowed: tuple) -> str:
    value = f"({'|'.join(allowed)})"
    return f"^ *(, *)*{value} *(, *({value} *)?)*$"


class JobsQuery(_Model):
    """The query string of ``GET /api/jobs``: every filter given must match."""

    q: Optional[StrictStr] = Field(None, description="text in the id, description, func, "
                                   "command or tags (case-insensitive)")
    state: Optional[Annotated[StrictStr, AfterValidator(_one_of(JOB_STATES))]] = Field(
        None, description=f"one of {', '.join(JOB_STATES)}, or several: paused,disabled",
        json_schema_extra={"pattern": _list_pattern(JOB_STATES)})
    source: Optional[Literal["yaml", "api"]] = None
    kind: Optional[Literal["python", "command", "heartbeat"]] = None
    tag: Optional[StrictStr] = Field(None, description="jobs carrying this tag")
    limit: Annotated[int, Field(ge=1, le=10000)] = 100
    offset: Annotated[int, Field(ge=0, le=MAX_OFFSET)] = 0
    full: bool = Field(False, description="1: each job with its definition too (GET "
                       "/api/jobs/{id} has it; a list leaves it out: it repeats the rest)")


class JobQuery(_Model):
    """The query string of ``GET /api/jobs/{id}``."""

    format: Literal["json", "yaml"] = Field("json", description="yaml: the job as a jobs.yaml "
                                            "entry (application/yaml; secrets hidden as in "
                                            "JSON), ready to paste into jobs.yaml or to POST "
                                            "as JSON once read")


class PingQuery(_Model):
    """The query string of ``POST /api/jobs/{id}/ping``."""

    status: Literal["ok", "fail"] = Field("ok", description="fail: the work failed (the run "
                                          "is recorded failed, the body as its output)")
    token: Optional[StrictStr] = Field(None, description="the job's ping token, for clients "
                                       "that cannot send a header (Authorization: Bearer is "
                                       "better: a URL may be logged by proxies)")


class CalendarQuery(_Model):
    """The query string of ``GET /api/calendars/{name}``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    from_: Optional[StrictStr] = Field(None, alias="from", description="first day, YYYY-MM-DD "
                                       "(default: the first of this month)")
    to: Optional[StrictStr] = Field(None, description="last day, YYYY-MM-DD (default: the end "
                                    "of from's month); at most 732 days in all")
    lang: Optional[StrictStr] = Field(None, description="language of holiday names, e.g. ja, "
                                      "en (default: the country's own)")


CURSOR_PATTERN = r"^[0-9a-f]{8}\.[0-9]{1,18}$"   # the change feed's epoch and sequence


class OutputQuery(_Model):
    """The query string of ``GET /api/runs/{id}/stdout`` (and stderr)."""

    offset: Optional[Annotated[int, Field(ge=0, le=1 << 40)]] = Field(
        None, description="answer JSON with what came after this byte of the stream")


class EventsQuery(_Model):
    """The query string of ``GET /api/events``."""

    after: Optional[Annotated[StrictStr, Field(pattern=CURSOR_PATTERN)]] = Field(
        None, description="answer JSON with the events after this cursor (the cursor of the "
                          "last answer); without it, the present cursor and no events")


class RunsQuery(_Model):
    """The query string of ``GET /api/runs``; runs come newest first."""

    job_id: Optional[Annotated[StrictStr, Field(pattern=ID_PATTERN)]] = None
    status: Optional[Annotated[StrictStr, AfterValidator(_one_of(RUN_STATUSES))]] = Field(
        None, description=f"one of {', '.join(RUN_STATUSES)}, or several: failed,timeout",
        json_schema_extra={"pattern": _list_pattern(RUN_STATUSES)})
    trigger: Optional[Literal[RUN_TRIGGERS]] = None
    since: Optional[dt.datetime] = Field(None, description="runs scheduled at or after this "
                                         "time (ISO 8601; UTC when it has no offset)")
    until: Optional[dt.datetime] = Field(None, description="runs scheduled at or before this "
                                         "time (ISO 8601; UTC when it has no offset)")
    node: Optional[Annotated[StrictStr, Field(min_length=1, max_length=255,
                                              pattern=r"^[^\x00-\x1f\x7f]+$")]] = Field(
        None, description="runs claimed or run by this node (its id, GET /api/nodes)")
    q: Optional[Annotated[StrictStr, Field(max_length=SEARCH_MAX)]] = Field(
        None, description=f"a phrase in the run's stdout or stderr, any case, as typed (no "
        f"operators, no wildcards); each run then carries its first matching line as "
        f"`match`. A phrase under {SEARCH_MIN} characters is looked for in the newest "
        f"{SEARCH_SCAN:,} runs only (`search_window`). Empty: no search")
    limit: Annotated[int, Field(ge=1, le=1000)] = 50
    offset: Annotated[int, Field(ge=0, le=MAX_OFFSET)] = 0
    before: Optional[Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{1,32}$")]] = Field(
        None, description="a run id: only runs older than it (the next page after a page "
        "ending with that run; fast at any depth, where offset reads every run it skips)")



class AuditQuery(_Model):
    """The query string of ``GET /api/audit``; entries come newest first."""

    actor: Optional[Annotated[StrictStr, Field(max_length=255)]] = Field(
        None, description="entries of this actor (a user name, token, local, jobs.yaml, "
                          "system, cli:OS-USER)")
    action: Optional[Annotated[StrictStr, Field(max_length=64)]] = Field(
        None, description="this action (job.pause), or every action of a kind ending in a "
                          "dot (job.)")
    object: Optional[Annotated[StrictStr, Field(max_length=300)]] = Field(
        None, description="this kind of object (job) or this one (job:nightly)")
    since: Optional[dt.datetime] = Field(None, description="entries at or after this time "
                                         "(ISO 8601; UTC when it has no offset)")
    until: Optional[dt.datetime] = Field(None, description="entries before this time")
    before: Optional[Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{1,32}$")]] = Field(
        None, description="entries older than this entry's id (the page's next)")
    limit: Annotated[int, Field(ge=1, le=500)] = 50


def audit_query() -> AuditQuery:
    """``GET /api/audit``'s query, times as naive UTC."""
    query = _query_params(AuditQuery)
    return query.model_copy(update={"since": _naive_utc(query.since),
                                    "until": _naive_utc(query.until)})


def runs_query() -> RunsQuery:
    """``GET /api/runs``'s query: times as naive UTC and in order (each valid, the two out of
    order: 422), a blank phrase none."""
    query = _query_params(RunsQuery)
    since, until = _naive_utc(query.since), _naive_utc(query.until)
    if since and until and until < since:
        raise InvalidQuery(f"query parameter until: {query.until.isoformat()} is before since "
                         f"({query.since.isoformat()})",
                         [{"field": "until", "message": "before since"}])
    return query.model_copy(update={"since": since, "until": until,
                                    "q": (query.q or "").strip() or None})


_OPEN_ROUTES = {"/api/health"}   # everything else needs the token when one is configured
_PING_ROUTES = {"/api/jobs/<job_id>/ping"}   # ...or, here, the job's own ping token


def _json_response(status: int, body: Any) -> bottle.HTTPResponse:
    if body is None:
        return bottle.HTTPResponse(status=status)
    return _raw_json(status, json.dumps(body, default=_json_default, ensure_ascii=False))


def _raw_json(status: int, text: str) -> bottle.HTTPResponse:
    return bottle.HTTPResponse(text, status=status,
                               headers={"Content-Type": "application/json; charset=utf-8"})


def _error_body(code: str, message: str, details: Optional[list] = None) -> dict:
    return {"error": {"code": code, "message": message, "details": details or []}}


def _text(body: str, content_type: str = "text/plain; charset=utf-8") -> bottle.HTTPResponse:
    return bottle.HTTPResponse(body, headers={"Content-Type": content_type})


YAML_TYPE = "application/yaml; charset=utf-8"   # RFC 9512 registered it (2024)


def _error_page(error: bottle.HTTPError):
    """Every error page of the app: JSON under /api; elsewhere the GUI's page (one hook, so an
    unknown path and an unknown job look the same)."""
    status = error.status_code
    messages = {404: f"no route for {bottle.request.method} {bottle.request.path}",
                405: f"method {bottle.request.method} is not allowed on {bottle.request.path}; "
                     f"allowed: {error.headers.get('Allow', 'none')}",
                413: "request body too large"}
    message = messages.get(status, error.body if isinstance(error.body, str) and status < 500
                           else "internal error; see the server log")
    if status >= 500 and error.exception is not None:
        log.error("unhandled error on %s", bottle.request.path, exc_info=error.exception)
    if bottle.request.path.startswith("/api/") or bottle.request.path in ("/api", "/metrics"):
        bottle.response.content_type = "application/json; charset=utf-8"
        return json.dumps(_error_body(_ERROR_CODES.get(status, "internal" if status >= 500 else
                                                       "error"), message), ensure_ascii=False)
    render = bottle.request.app.config.get("ts.error_page")
    if render is not None:
        return render(status, message)
    bottle.response.content_type = "text/plain; charset=utf-8"
    return f"{status}: {message}\n"


_ERROR_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                405: "method_not_allowed", 413: "too_large", 414: "uri_too_long",
                415: "unsupported_media_type", 422: "invalid"}


def _common_headers() -> None:
    bottle.response.set_header("X-Content-Type-Options", "nosniff")


def _query_params(model: type[BaseModel]) -> BaseModel:
    """The query string validated by ``model``: 400 naming each bad or unknown parameter."""
    values = {}
    for name, value in bottle.request.query.allitems():
        try:   # Bottle hands over latin-1; URLs carry UTF-8
            name, value = name.encode("latin-1").decode(), value.encode("latin-1").decode()
        except UnicodeError:
            raise BadRequest("the query string is not UTF-8",
                             [{"field": "", "message": "not UTF-8"}]) from None
        field = model.model_fields.get(name)
        if field is not None and field.annotation == Optional[dt.datetime]:
            values[name] = _query_time(name, value)   # pydantic would take Unix seconds too
        else:
            values[name] = value
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        details = [_query_detail(err, model) for err in exc.errors()]
        raise BadRequest("; ".join(f"query parameter {d['field']}: {d['message']}"
                                   for d in details), details) from None


def _query_detail(err: dict, model: type[BaseModel]) -> dict:
    name = ".".join(str(p) for p in err["loc"][:1])
    if err["type"] == "extra_forbidden":
        return {"field": name, "message": f"unknown parameter (known: "
                                          f"{', '.join(model.model_fields)})"}
    return {"field": name, "message": f"{err['msg']} (got {_short(err['input'])})"}


def _query_time(name: str, value: str) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"query parameter {name}: {_short(value)} is not an ISO 8601 time "
                         f"(e.g. 2026-01-31T12:00:00Z)",
                         [{"field": name, "message": "not an ISO 8601 time"}]) from None


def _json_body() -> Any:
    """The request body as JSON: 415 unless sent as JSON, 413 over MAX_BODY, 400 unless it is
    one complete JSON text (NaN, Infinity and unpaired surrogates are not JSON either)."""
    ctype = (bottle.request.content_type or "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise UnsupportedMedia(f"send the body as JSON with Content-Type: application/json "
                               f"(got {ctype or 'none'})")
    raw = _raw_body()
    if not raw.strip():
        raise BadRequest("the body is empty: send a JSON object")
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_not_json,
                           parse_float=_finite_float)
        json.dumps(value, ensure_ascii=False).encode("utf-8")   # no unpaired surrogate escapes
    except UnicodeDecodeError as exc:
        raise BadRequest(f"body is not UTF-8: {exc.reason} at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
                         [{"field": "", "message": exc.msg, "line": exc.lineno}]) from None
    except (ValueError, RecursionError) as exc:   # also UnicodeEncodeError: a lone surrogate
        raise BadRequest(f"body is not acceptable JSON: {_clean(exc)}") from None
    return value


def _raw_body() -> bytes:
    """The request body as bytes, whatever its type: 413 over MAX_BODY, 400 when cut short."""
    environ = bottle.request.environ
    length = _content_length(environ)
    if length > MAX_BODY:
        raise PayloadTooLarge(f"body of {length} bytes is over the limit of {MAX_BODY} bytes")
    try:
        raw = environ["wsgi.input"].read(length) if length else b""
    except OSError as exc:   # the client went away, or stalled past the server's timeout
        raise BadRequest(f"could not read the body: {_clean(exc)}") from None
    if len(raw) < length:
        raise BadRequest(f"the body ended after {len(raw)} of {length} bytes")
    return raw


def _content_length(environ: dict) -> int:
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        raise BadRequest("send the body with a Content-Length header (chunked transfer "
                         "encoding is not supported)")
    value = environ.get("CONTENT_LENGTH") or "0"
    if not (value.isascii() and value.isdigit()):
        raise BadRequest(f"Content-Length: {value!r} is not a number of bytes")
    return int(value)


def _not_json(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {_short(text)} is out of range")
    return value
