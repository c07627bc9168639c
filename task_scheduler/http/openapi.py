"""The OpenAPI 3.1 document, generated from the models that validate requests and shape answers."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import functools
import json
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from ..config import __version__
from .api import api_health
from .io import (
    ID_PATTERN, AuditQuery, CalendarQuery, EventsQuery, JobQuery, JobsQuery, MAX_BODY, OutputQuery,
    PingQuery, RunsQuery,
    YAML_TYPE, _OPEN_ROUTES)
from ..store.schema import TOTAL_CAP
from ..models import (
    JOB_STATES, JobDefinition, NOTIFY_EVENTS, RUN_STATUSES, RUN_TRIGGERS, SLA_EVENTS, STEP_WHEN,
    RunParams)


_REF = "#/components/schemas/{model}"


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")   # answers gain fields, never lose them (DESIGN)


class ApiMatch(_Out):
    """The first line of a run's output holding the phrase searched for (masked as output is)."""

    stream: Literal["stdout", "stderr"]
    line: str = Field(description="the line, up to 240 characters around the phrase; '…' "
                                  "marks a cut")
    line_number: int = Field(description="its number in the stream, from 1")
    start: int = Field(description="where the phrase begins in line (characters, from 0)")
    length: int = Field(description="the phrase's length in line")


class ApiRun(_Out):
    """A run (times in UTC); attempt counts retries."""

    id: str
    job_id: str
    status: Literal[RUN_STATUSES]
    trigger: Literal[RUN_TRIGGERS]
    attempt: int
    scheduled_at: dt.datetime
    started_at: Optional[dt.datetime]
    finished_at: Optional[dt.datetime]
    duration_s: Optional[float]
    exit_code: Optional[int]
    error: Optional[str]
    truncated: bool
    node: Optional[str] = Field(description="the node that ran it")
    run_on: list[str] = Field(description="labels a node needs to run it (from the job)")
    rerun_of: Optional[str] = Field(description="the run this one reran")
    started_by: Optional[str] = Field(description="who asked for it (manual runs, reruns: the "
                                      "actor's name); null for the schedule's fires and retries")
    upstream_run: Optional[str] = Field(None, description="trigger after: the run of the job "
                                        "its after: names whose end queued it")
    due_at: Optional[dt.datetime] = Field(None, description="queued runs: when it may start "
                                          "(a retry waits for its delay)")
    waiting: Optional[str] = Field(None, description="queued runs: why it has not started")
    match: Optional[ApiMatch] = Field(None, description="with q: its first line holding the "
                                      "phrase (null: the output changed since it was found)")
    sla_breaches: Optional[list[Literal[SLA_EVENTS]]] = Field(
        None, description="a job's last run: the SLA events it raised (docs/sla.md)")
    parent_run: Optional[str] = Field(None, description="a step: its workflow run")
    step_id: Optional[str] = Field(None, description="a step: which step of the workflow")
    output: Optional[str] = Field(None, description="a step with output: the value it "
                                  "exported to later steps")


class ApiStep(_Out):
    """A step of a workflow run: its newest run (status pending: not queued yet)."""

    step_id: str
    after: list[str]
    when: Literal[STEP_WHEN]
    run_id: Optional[str]
    status: Literal[(*RUN_STATUSES, "pending")]
    attempt: Optional[int]
    node: Optional[str]
    started_at: Optional[dt.datetime]
    finished_at: Optional[dt.datetime]
    output: Optional[str] = Field(description="the value exported (output: NAME)")
    error: Optional[str]
    runs: list[str] = Field(description="the ids of all its runs (retries, earlier attempts)")


class ApiStepNode(_Out):
    """A step of a job's workflow, as defined."""

    id: str
    after: list[str]
    when: Literal[STEP_WHEN]
    kind: Literal["python", "command"]
    output: Optional[str]
    run_on: list[str]


class ApiAuditEntry(_Out):
    """One entry of the audit log (times in UTC, the database's clock)."""

    id: str = Field(description="time-ordered: newer entries sort after older ones")
    at: dt.datetime
    actor: str = Field(description="a user name, token (the legacy token), local, jobs.yaml "
                                   "or system")
    actor_kind: Literal["user", "legacy", "sso", "yaml", "system", "local"]
    token_name: Optional[str] = Field(description="the API token used, if any")
    address: Optional[str] = Field(description="the client's address")
    action: str = Field(description="e.g. job.create, job.pause, run.now, config.reload "
                                    "(docs/security.md lists them)")
    object_type: str
    object_id: str
    detail: dict[str, Any] = Field(description="the change (before/after of a definition, "
                                               "parameter names); secrets never appear")


class ApiAuditPage(_Out):
    """A page of the audit log, newest first; ``next``: the ``before`` of the next page."""

    entries: list[ApiAuditEntry]
    next: Optional[str]


class ApiRunDetail(ApiRun):
    """A run with its output (each stream capped; truncated says if a middle was cut)."""

    stdout: str
    stderr: str
    params: Optional[dict[str, Any]] = Field(description="this run's own args, kwargs, env")
    result: Any = Field(None, description="what a python job returned (JSON, up to 64 KiB, "
                                          "secrets masked); null: none, or not recorded (its "
                                          "stderr says why)")
    notifications: list[ApiNotification] = Field([], description="what was sent about it")
    sla_breaches: list[ApiBreach] = Field([], description="promises it broke: late, "
                                          "long_running, overdue (docs/sla.md)")
    steps: Optional[list[ApiStep]] = Field(None, description="a workflow run: its steps "
                                           "(docs/workflows.md)")


class ApiBreach(_Out):
    """An SLA breach, a row of its run's history."""

    event: Literal[SLA_EVENTS]
    due_at: dt.datetime = Field(description="when the promise fell due")
    detected_at: dt.datetime
    detail: str


class ApiNotification(_Out):
    """One notification about a run: where to (no secrets), its state and each attempt."""

    id: str
    event: Literal[NOTIFY_EVENTS]
    target: str
    status: Literal["pending", "sent", "failed"]
    attempts: int
    log: list[dict[str, Any]] = Field(description="each attempt: at, ok, detail")


class ApiJob(_Out):
    """A job as applied: its definition, state, next five fire times and last run."""

    id: str
    description: str
    kind: Literal["python", "command", "heartbeat", "workflow"]
    func: Optional[str]
    command: Optional[list[str]] = Field(description="argv of a command job")
    args: list[Any]
    kwargs: dict[str, Any]
    trigger: dict[str, Any] = Field(description="the trigger as in jobs.yaml, defaults filled in")
    trigger_text: str
    source: Literal["yaml", "api"]
    state: Literal[JOB_STATES]
    next_run_time: Optional[dt.datetime]
    next_run_times: list[dt.datetime] = Field(description="the next five, calendar applied "
                                              "(skipped days left out, moved fires moved)")
    calendars: list[str] = Field([], description="the calendars it uses (business_day "
                                 "trigger, calendar:)")
    max_instances: int
    coalesce: bool
    misfire_grace_time: Optional[float]
    timeout: Optional[float]
    tags: list[str]
    isolation: Optional[Literal["thread", "process"]] = Field(
        description="python jobs: where it runs (process: cancel and timeout end it); "
                    "null for commands")
    run_on: list[str] = Field(description="only a node with all these labels runs it")
    notify: list[dict[str, Any]] = Field(description="notification targets, secrets hidden")
    sla: Optional[dict[str, Any]] = Field(description="start_within, max_duration as given")
    after: Optional[dict[str, Any]] = Field(None, description="{job, on}: it runs once per "
                                            "end of that job's runs with a status in on")
    downstream: list[str] = Field([], description="the jobs whose after: names this one")
    is_enabled: bool
    paused: bool
    last_run: Optional[ApiRun] = Field(description="the last run that finished in this process")
    definition: Optional[dict[str, Any]] = Field(None, description="the definition as given "
                                                 "(JobDefinition); in a list only with ?full=1")
    created_at: dt.datetime
    updated_at: dt.datetime
    steps: Optional[list[ApiStepNode]] = Field(None, description="a workflow: its steps")
    defined_at: Optional[ApiDefinedAt] = Field(None, description="a jobs.yaml job (one job "
                                               "asked for by id): where its entry starts")


class ApiDefinedAt(_Out):
    """Where a jobs.yaml job is defined: the file as configured, and its entry's first line."""

    path: str
    line: int


class ApiJobPage(_Out):
    """A page of jobs; total counts all matches."""

    jobs: list[ApiJob]
    total: int


class ApiRunPage(_Out):
    """A page of runs, newest first; total counts the matches (see total_capped)."""

    runs: list[ApiRun]
    total: int
    total_capped: bool = Field(description=f"there are more matches than total (counting "
                               f"stops {TOTAL_CAP:,} past the offset)")
    search_window: Optional[int] = Field(None, description="a phrase too short for the index "
                                         "was looked for in only this many newest runs")


class ApiRunQueued(_Out):
    """The run just queued (status queued, trigger manual)."""

    run: ApiRun


class ApiRunRetried(_Out):
    """The workflow run retried (running again, its attempt one higher) with its steps."""

    run: ApiRunDetail


class ApiPinged(_Out):
    """The ping as the run it was recorded as (trigger ping, succeeded or failed)."""

    run: ApiRun


class ApiPingToken(_Out):
    """A heartbeat job's new ping token: shown this once (only its hash is kept)."""

    job_id: str
    token: str
    ping: str = Field(description="the path to POST pings to")
    note: str


class ApiErrorDetail(_Out):
    """One problem: the field (dotted path) and what is wrong; line in jobs.yaml errors."""

    field: Optional[str] = None
    message: str
    line: Optional[int] = None


class ApiErrorInfo(_Out):
    code: str
    message: str
    details: list[ApiErrorDetail]


class ApiError(_Out):
    """Every failure: a code, a message for people, details naming each field."""

    error: ApiErrorInfo


NAME_PATTERN = r"^[A-Za-z0-9_.@-]{1,64}$"
Role = Literal["viewer", "operator", "admin"]


class ApiWhoami(_Out):
    """Who this request is, and its role."""

    name: str
    kind: str = Field(description="user, legacy (the --token), sso, local (no credentials "
                                  "configured)")
    role: Role
    token_name: Optional[str]
    address: Optional[str]


class ApiUser(_Out):
    """A user (never their password hash)."""

    name: str
    role: Role
    disabled: bool
    created_at: dt.datetime
    updated_at: dt.datetime


class ApiUsers(_Out):
    """Every user, by name."""

    users: list[ApiUser]


class ApiToken(_Out):
    """An API token (never its secret, but once: ``token`` in the answer that creates it)."""

    id: str
    user_name: str
    name: str
    created_at: dt.datetime
    expires_at: Optional[dt.datetime]
    token: Optional[str] = None


class ApiTokens(_Out):
    """API tokens, with last_used_at (to a few minutes) and revoked_at."""

    tokens: list[ApiToken]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserBody(_In):
    """A new user; without a password they sign in by API token or SSO only."""

    name: str = Field(pattern=NAME_PATTERN)
    role: Role
    password: Optional[str] = Field(None, min_length=8, max_length=1024)


class UserChange(_In):
    """What to change of a user."""

    role: Optional[Role] = None
    password: Optional[str] = Field(None, min_length=8, max_length=1024)
    disabled: Optional[bool] = None


class TokenBody(_In):
    """A new API token; ``user``: an admin making one for someone else."""

    name: str = Field(pattern=NAME_PATTERN)
    expires: Optional[str] = Field(None, description="90d, 12h, or never (the default)")
    user: Optional[str] = Field(None, pattern=NAME_PATTERN)


class ApiIndex(_Out):
    """What this API is, and where its docs and main collections are."""

    name: str
    version: str
    links: dict[str, str] = Field(description="docs, openapi, jobs, runs, nodes, status, "
                                  "health, metrics: each a path on this server")


class ApiHealth(_Out):
    """Liveness of the scheduler thread and the database."""

    status: Literal["ok", "unavailable"]
    scheduler: str = Field(description="running (leads), standby (a follower), down, stopped")
    db: str


class ApiConfig(_Out):
    """The state of jobs.yaml: when it was last applied, and the errors of the last reload."""

    path: Optional[str]
    loaded_at: Optional[dt.datetime]
    hash: Optional[str]
    jobs: int
    error: Optional[str]
    errors: list[dict[str, Any]]
    changes: Optional[dict[str, int]] = Field(None, description="what the last reload applied")
    drift: Optional[dict[str, Any]] = Field(None, description="set when this node's jobs.yaml "
                                            "differs from what the leader applied")


class ApiStatus(_Out):
    """The service at a glance."""

    version: str
    started_at: Optional[dt.datetime]
    uptime_s: float
    node: str
    role: str
    leader: Optional[str] = Field(description="the node holding the leader lease")
    scheduler: str
    timezone: str
    jobs: dict[str, int]
    runs_24h: dict[str, int]
    active_runs: int
    config: ApiConfig


class ApiOutput(_Out):
    """Output of a run after a byte offset: ask again from ``offset`` while ``running``."""

    text: str
    offset: int = Field(description="bytes of the stream so far: the next ?offset=")
    status: Literal[RUN_STATUSES]
    running: bool
    truncated: bool = Field(description="a middle part of the stream was not kept")


class ApiNode(_Out):
    """One task-scheduler process on this database."""

    id: str
    host: str
    pid: int
    role: Literal["leader", "follower"]
    labels: list[str]
    heartbeat_age_s: float = Field(description="seconds since its last heartbeat (DB clock)")
    running: int = Field(description="runs it is running")
    version: str
    config_hash: Optional[str] = Field(description="sha256 of its own jobs.yaml")
    alive: bool = Field(description="heard from within node_timeout")
    started_at: Optional[dt.datetime]
    schema_version: Optional[int] = Field(None, description="the database schema its release "
                                          "knows; null: a release before this field")


class ApiNodes(_Out):
    """The nodes, the leader marked."""

    nodes: list[ApiNode]


class ApiClosedDay(_Out):
    """A day a calendar closes besides its weekly days off."""

    date: dt.date
    kind: Literal["holiday", "excluded"]
    name: Optional[str] = Field(description="the holiday's name (in ?lang= where offered)")


class ApiCalendar(_Out):
    """A calendar of jobs.yaml (extends resolved) and its days from ``from`` to ``to``."""

    name: str
    weekdays: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]]
    holidays: Optional[str] = Field(description="country code of the holidays library")
    subdiv: Optional[str]
    exclude: list[list[dt.date]] = Field(description="closed days, as [first, last] ranges")
    include: list[list[dt.date]] = Field(description="forced business days, as ranges")
    jobs: list[str] = Field(description="the jobs that use it")
    from_: dt.date = Field(alias="from")
    to: dt.date
    business_days: list[dt.date]
    closed: list[ApiClosedDay] = Field(description="holidays and excluded days (not weekends)")


class ApiReload(_Out):
    """jobs.yaml was read and applied."""

    config: ApiConfig


class ApiRunChange(_Out):
    """A run as the change feed tells it (``run`` events)."""

    id: str
    job_id: str
    status: Literal[RUN_STATUSES]
    node: Optional[str]
    trigger: Literal[RUN_TRIGGERS]
    started_at: Optional[dt.datetime]
    finished_at: Optional[dt.datetime]


class ApiChange(_Out):
    """One change: ``run`` (data: ApiRunChange), ``job`` (data: id and state, ``deleted`` when
    gone), or ``reset`` (data empty: more changed than is told one by one; read again)."""

    event: Literal["run", "job", "reset"]
    data: dict[str, Any]


class ApiChanges(_Out):
    """The changes after the cursor given, and the cursor to ask from next time.

    ``reset``: this node cannot say what changed since that cursor (another node's, or too
    old): read again what you show."""

    cursor: str
    reset: bool
    events: list[ApiChange]


@dataclasses.dataclass(frozen=True)
class _Op:
    """How one route is documented: its answer (a model, a media type, or None for no body),
    its query and body models, and the statuses it adds to the ones every route can answer."""

    status: int
    answer: Any
    tag: str
    query: Optional[type] = None
    body: Optional[type] = None
    errors: tuple = ()


_OPERATIONS = {
    "api_index": _Op(200, ApiIndex, "about"),
    "api_health": _Op(200, ApiHealth, "service"),
    "api_status": _Op(200, ApiStatus, "service"),
    "api_list_jobs": _Op(200, ApiJobPage, "jobs", query=JobsQuery),
    "api_create_job": _Op(201, ApiJob, "jobs", body=JobDefinition, errors=(409,)),
    "api_get_job": _Op(200, ApiJob, "jobs", query=JobQuery),
    "api_replace_job": _Op(200, ApiJob, "jobs", body=JobDefinition, errors=(409,)),
    "api_delete_job": _Op(204, None, "jobs", errors=(409,)),
    "api_pause_job": _Op(200, ApiJob, "jobs"),
    "api_resume_job": _Op(200, ApiJob, "jobs"),
    "api_run_job": _Op(202, ApiRunQueued, "jobs", body=RunParams, errors=(409,)),
    "api_ping_job": _Op(201, ApiPinged, "jobs", query=PingQuery, errors=(409,)),
    "api_ping_token": _Op(201, ApiPingToken, "jobs", errors=(409,)),
    "api_rerun_run": _Op(202, ApiRunQueued, "runs", errors=(409,)),
    "api_retry_run": _Op(202, ApiRunRetried, "runs", errors=(409,)),
    "api_list_runs": _Op(200, ApiRunPage, "runs", query=RunsQuery, errors=(422,)),
    "api_get_run": _Op(200, ApiRunDetail, "runs"),
    "api_run_stdout": _Op(200, "text/plain", "runs", query=OutputQuery),
    "api_run_stderr": _Op(200, "text/plain", "runs", query=OutputQuery),
    "api_cancel_run": _Op(200, ApiRun, "runs", errors=(409,)),
    "api_nodes": _Op(200, ApiNodes, "service"),
    "api_calendar": _Op(200, ApiCalendar, "jobs", query=CalendarQuery, errors=(422,)),
    "api_events": _Op(200, ApiChanges, "runs", query=EventsQuery),
    "api_reload": _Op(200, ApiReload, "service"),
    "api_audit": _Op(200, ApiAuditPage, "service", query=AuditQuery),
    "api_openapi": _Op(200, "application/json", "about"),
    "api_docs": _Op(200, "text/html", "about"),
    "api_metrics": _Op(200, "text/plain", "about"),
    "api_whoami": _Op(200, ApiWhoami, "people"),
    "api_list_users": _Op(200, ApiUsers, "people"),
    "api_create_user": _Op(201, ApiUser, "people", body=UserBody, errors=(409,)),
    "api_update_user": _Op(200, ApiUser, "people", body=UserChange),
    "api_delete_user": _Op(204, None, "people"),
    "api_list_tokens": _Op(200, ApiTokens, "people"),
    "api_create_token": _Op(201, ApiToken, "people", body=TokenBody, errors=(409,)),
    "api_revoke_token": _Op(204, None, "people"),
}
_ERROR_TEXTS = {
    400: "Malformed JSON, or a query parameter that is unknown or out of range",
    401: "Missing or wrong token: send Authorization: Bearer <token>",
    403: "Your role may not do this: the message names the role needed (docs/security.md)",
    404: "No such job, run, calendar or route",
    405: "Method not allowed on this path (the Allow header lists the allowed ones)",
    409: "Conflict: the id is taken, the job comes from jobs.yaml (edit the file, or use Edit on "
         "its GUI page), or the run cannot be started or cancelled now",
    413: f"Body over {MAX_BODY} bytes",
    415: "Body not sent as Content-Type: application/json",
    422: "Invalid job definition or jobs.yaml, or query values that do not fit together: "
         "details name each field",
    429: "Too many wrong tokens from this client: wait Retry-After seconds (the right token "
         "always passes)",
    503: "The database is unavailable",
}
_API_TEXT = """JSON in and out. Every failure answers `{"error": {"code", "message", "details"}}`.

**Security.** Creating or changing a command job (or a python job naming any importable
callable) runs code as the service's user: this API is remote code execution by design. Without
a token the server only binds loopback; with `--token`/`TS_API_TOKEN` every route but
`/api/health` needs `Authorization: Bearer <token>`. See docs/api.md."""


@functools.lru_cache(maxsize=2)
def openapi_json(routes: tuple, secured: bool) -> str:
    """The OpenAPI document of ``routes`` as JSON text."""
    return json.dumps(openapi_document(routes, secured))


def openapi_document(routes: list, secured: bool = False) -> dict:
    """This API as an OpenAPI 3.1 document; every schema comes from the pydantic models that
    validate the requests (JobDefinition, JobsQuery, RunsQuery) or shape the answers (Api*)."""
    schemas: dict = {}
    models = [(JobDefinition, "validation"), (RunParams, "validation"), (UserBody, "validation"),
              (UserChange, "validation"), (TokenBody, "validation"),
              *((m, "serialization") for m in _RESPONSE_MODELS)]
    for model, mode in models:
        schema = model.model_json_schema(ref_template=_REF, mode=mode)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    paths: dict = {}
    seen: collections.Counter = collections.Counter()
    for method, route, handler in routes:
        path = route.replace("<", "{").replace(">", "}")
        op = _operation(route, handler, secured)
        seen[handler.__name__] += 1   # a handler on two paths (/api/ and /api): ids stay unique
        if seen[handler.__name__] > 1:
            op["operationId"] += f"_{seen[handler.__name__]}"
        paths.setdefault(path, {})[method.lower()] = op
    doc = {"openapi": "3.1.0",
           "info": {"title": "task-scheduler", "version": __version__, "description": _API_TEXT},
           "paths": paths, "components": {"schemas": schemas}}
    if secured:
        doc["components"]["securitySchemes"] = {"bearerAuth": {
            "type": "http", "scheme": "bearer", "description": "--token or TS_API_TOKEN"}}
        doc["security"] = [{"bearerAuth": []}]
    return doc


def _operation(route: str, handler, secured: bool) -> dict:
    op = _OPERATIONS[handler.__name__]
    summary, _, rest = (handler.__doc__ or handler.__name__).replace("``", "").partition("\n")
    out = {"operationId": handler.__name__, "summary": summary.strip(), "tags": [op.tag]}
    if rest.strip():
        out["description"] = " ".join(line.strip() for line in rest.splitlines()).strip()
    params = [{"name": part[1:-1], "in": "path", "required": True,
               "schema": {"type": "string", "pattern": ID_PATTERN}}
              for part in route.split("/") if part.startswith("<")]
    out["parameters"] = params + (_query_parameters(op.query) if op.query else [])
    if op.body is not None:
        out["requestBody"] = {"required": op.body is not RunParams, "content": {
            "application/json": {"schema": {"$ref": _REF.format(model=op.body.__name__)}}}}
    if route in _OPEN_ROUTES:
        out["security"] = []
    out["responses"] = _responses(op, handler, secured and route not in _OPEN_ROUTES)
    return out


def _query_parameters(model: type[BaseModel]) -> list:
    """A query model's fields as OpenAPI parameters (optional; null is no query value)."""
    params = []
    for name, prop in model.model_json_schema()["properties"].items():
        prop = {k: v for k, v in prop.items() if k != "title"}
        choices = [s for s in prop.pop("anyOf", []) if s.get("type") != "null"]
        if len(choices) == 1:
            prop.update(choices[0])
        elif choices:
            prop["anyOf"] = choices
        if prop.get("default", 0) is None:
            del prop["default"]
        param = {"name": name, "in": "query", "required": False}
        if "description" in prop:
            param["description"] = prop.pop("description")
        params.append({**param, "schema": prop})
    return params


def _responses(op: _Op, handler, secured: bool) -> dict:
    answer = op.answer
    if answer is None:
        out = {str(op.status): {"description": "Done; no content"}}
    elif isinstance(answer, str):
        schema = {"type": "object"} if answer == "application/json" else {"type": "string"}
        out = {str(op.status): {"description": "OK", "content": {answer: {"schema": schema}}}}
    else:
        out = {str(op.status): _json_answer(answer.__doc__, answer.__name__)}
    if op.query is JobQuery:   # ?format=yaml
        out[str(op.status)]["content"][YAML_TYPE.split(";")[0]] = {"schema": {"type": "string"}}
    if op.query is OutputQuery:   # ?offset= answers JSON, Accept: text/event-stream a stream
        out[str(op.status)]["content"].update({
            "application/json": {"schema": {"$ref": _REF.format(model="ApiOutput")}},
            "text/event-stream": {"schema": {"type": "string"}}})
    if op.query is EventsQuery:
        out[str(op.status)]["content"]["text/event-stream"] = {"schema": {"type": "string"}}
    codes = [400, 404, 405, 413, 415, 422, 503, *op.errors, *([401, 403, 429] if secured else [])]
    for code in sorted(codes):
        out[str(code)] = _json_answer(_ERROR_TEXTS[code], "ApiError")
    out["405"]["headers"] = {"Allow": {"required": True, "schema": {"type": "string"},
                                       "description": "the methods this path answers"}}
    if secured:
        out["401"]["headers"] = {"WWW-Authenticate": {"required": True,
                                                      "schema": {"type": "string"}}}
        out["429"]["headers"] = {"Retry-After": {"required": True, "schema": {"type": "string"},
                                                 "description": "seconds to wait"}}
    if handler is api_health:
        out["503"] = _json_answer("The scheduler thread or the database is down", "ApiHealth")
    return out


def _json_answer(text: Optional[str], model: str) -> dict:
    return {"description": (text or model).strip().splitlines()[0],
            "content": {"application/json": {"schema": {"$ref": _REF.format(model=model)}}}}


_RESPONSE_MODELS = (ApiJob, ApiJobPage, ApiRun, ApiRunDetail, ApiRunPage, ApiRunQueued,
                    ApiError, ApiIndex, ApiHealth, ApiStatus, ApiNodes, ApiReload, ApiOutput,
                    ApiChanges, ApiRunChange, ApiCalendar, ApiAuditPage, ApiWhoami, ApiUser,
                    ApiUsers, ApiToken, ApiTokens)
