"""task-scheduler: a resilient, persistent, observable task scheduler in one module.

One process runs APScheduler 3 with its jobs and every run's history in a database (SQLite by
default, PostgreSQL for production), applies edits of ``jobs.yaml`` live, and serves a JSON REST API
and a web GUI from one Bottle app on one port (served by waitress).

Run it::

    python -m task_scheduler                 # or: task-scheduler run --config jobs.yaml
    task-scheduler validate jobs.yaml        # check a file before saving it

Environment: TS_CONFIG, TS_DATABASE_URL, TS_HOST, TS_PORT, TS_API_TOKEN, TS_LOG_LEVEL, TS_TIMEZONE
(command-line flags win).

Embed it::

    from task_scheduler import Config, SchedulerService, create_app
    service = SchedulerService(Config(config_path="jobs.yaml", database_url="sqlite:///ts.sqlite"))
    service.start()
    app = create_app(service)          # a WSGI app
    service.stop()
"""

from __future__ import annotations

if __name__ == "__main__":
    # python -m task_scheduler: hand over to the one importable copy of the module (job references
    # resolve to it) before this copy runs too; running both doubled import time and ~20 MiB.
    import sys
    import task_scheduler
    sys.exit(task_scheduler.main())

import argparse
import bisect
import collections
import concurrent.futures
import contextlib
import contextvars
import dataclasses
import datetime as dt
import difflib
import fcntl
import functools
import hashlib
import hmac
import http.client
import importlib
import importlib.util
import inspect
import io
import itertools
import ipaddress
import json
import logging
import os
import pickle
import random
import re
import resource
import secrets
import selectors
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import traceback
import types
import urllib.error
import urllib.parse
import urllib.request
import warnings
import zoneinfo
from collections.abc import Iterable
from typing import Annotated, Any, Literal, Optional, Union

import bottle
import sqlalchemy as sa
import sqlalchemy.dialects.postgresql
import sqlalchemy.dialects.sqlite
import waitress
import yaml
from apscheduler.jobstores.base import ConflictingIdError, JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_RUNNING
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.cron.fields import DEFAULT_VALUES
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from apscheduler.util import (
    astimezone,
    convert_to_datetime,
    datetime_to_utc_timestamp,
    utc_timestamp_to_datetime,
)
from cronsim import CronSim, CronSimError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    AfterValidator,
    BeforeValidator,
    Discriminator,
    Tag,
    model_validator,
)

__version__ = "0.1.0"
__all__ = [
    "Config",
    "SchedulerService",
    "create_app",
    "serve_in_thread",
    "execute_job",
    "JobDefinition",
    "SchedulerError",
    "JobNotFound",
    "RunNotFound",
    "InvalidJob",
    "InvalidConfig",
    "JobConflict",
    "BadRequest",
    "load_jobs_file",
    "current_run",
    "RunContext",
    "http_check",
    "main",
]
log = logging.getLogger("task_scheduler")


# --------------------------------------------------------------------------------------------
# Constants and configuration
# --------------------------------------------------------------------------------------------

SCHEMA_VERSION = 2
RUN_STATUSES = ("queued", "running", "succeeded", "failed", "timeout", "interrupted", "missed",
                "skipped", "cancelled")
FINAL_STATUSES = frozenset(RUN_STATUSES) - {"queued", "running"}
ENDED_STATUSES = ("succeeded", "failed", "timeout", "interrupted")   # what "recovered" looks at
RUN_TRIGGERS = ("schedule", "manual", "retry", "catchup")
JOB_STATES = ("scheduled", "paused", "disabled", "finished", "manual")
SCRIPT_SUFFIXES = (".sh", ".bash", ".bat", ".cmd", ".ps1", ".py")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
LABEL_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,32}")
MAX_LABELS = 8                # a node matches run_on by its label subsets: 2**8 at most
MAX_CONFIG_BYTES = 16 << 20   # a 10,000-job jobs.yaml is about 2 MB
MAX_ALIAS_NODES = 1_000_000   # values YAML aliases may add to a file: far beyond honest use
_ANCHOR = re.compile(r"(^|[\s\[{,:-])&\S", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class Config:
    """Every setting of one service; build it with ``from_env()``/``from_args()`` or by hand."""

    config_path: Optional[str] = "jobs.yaml"
    database_url: str = "sqlite:///task_scheduler.sqlite"
    host: str = "127.0.0.1"
    port: int = 8000
    token: Optional[str] = None
    log_level: str = "INFO"
    timezone: Optional[str] = None        # default for triggers without one; None: the system's
    node: str = dataclasses.field(default_factory=socket.gethostname)
    max_workers: int = 10
    output_limit: int = 1 << 20           # bytes kept per stream and run (head + tail)
    keep_runs: int = 1000                 # runs kept per job
    keep_days: float = 30                 # runs older than this are pruned
    shutdown_grace: float = 30.0          # seconds running runs get on stop
    kill_grace: float = 5.0               # seconds between TERM and KILL
    watch: bool = True                    # watchdog on the folder of config_path
    poll_interval: float = 30.0           # hash poll for file systems without events
    debounce: float = 0.3                 # one editor save is several events
    busy_timeout: float = 30.0            # SQLite: seconds a writer waits for a lock
    allowed_hosts: tuple = ()             # Host names to answer besides loopback (reverse proxy)
    max_config_bytes: int = MAX_CONFIG_BYTES
    labels: tuple = ()                    # this node's labels, for jobs' run_on
    queue_poll: float = 1.0               # seconds between looks at the run queue (NOTIFY wakes)
    lease_ttl: float = 5.0                # a leader's lease; failover takes about this plus 1 s
    lease_renew: float = 1.0              # seconds between renewals (and takeover attempts)
    heartbeat_every: float = 2.0          # seconds between node and run heartbeats
    node_timeout: float = 10.0            # a node silent this long is dead; its runs rescued
    public_url: Optional[str] = None      # this service's address in notifications' links
    smtp_url: Optional[str] = None        # smtp://user:pass@host:587?from=... for mail
    notify_retry_for: float = 3600.0      # seconds a notification is retried before giving up
    notify_delays: tuple = (10, 30, 60, 120, 300, 600)   # between attempts; the last repeats
    pass_env: tuple = ()                  # TS_* variables command jobs get all the same
    trusted_proxies: tuple = ()           # peers whose X-Forwarded-For names the client

    _ENV = {"config_path": "TS_CONFIG", "database_url": "TS_DATABASE_URL", "host": "TS_HOST",
            "port": "TS_PORT", "token": "TS_API_TOKEN", "log_level": "TS_LOG_LEVEL",
            "timezone": "TS_TIMEZONE", "allowed_hosts": "TS_ALLOWED_HOSTS",
            "labels": "TS_NODE_LABELS", "node": "TS_NODE_ID", "public_url": "TS_PUBLIC_URL",
            "smtp_url": "TS_SMTP_URL", "pass_env": "TS_PASS_ENV",
            "trusted_proxies": "TS_TRUSTED_PROXIES"}

    @classmethod
    def from_env(cls, env: Optional[dict] = None, **overrides: Any) -> Config:
        env = os.environ if env is None else env
        values = {name: env[var] for name, var in cls._ENV.items() if env.get(var)}
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "port" in values:
            values["port"] = _parse_port(values["port"])
        if isinstance(values.get("allowed_hosts"), str):
            values["allowed_hosts"] = tuple(h for h in values["allowed_hosts"].split(",") if h)
        if isinstance(values.get("labels"), str):
            values["labels"] = _parse_labels(values["labels"])
        for name in ("pass_env", "trusted_proxies"):
            if isinstance(values.get(name), str):
                values[name] = tuple(x.strip() for x in values[name].split(",") if x.strip())
        return cls(**values)

    @classmethod
    def from_args(cls, args: argparse.Namespace, env: Optional[dict] = None) -> Config:
        env = os.environ if env is None else env
        token_file = args.token_file or env.get("TS_API_TOKEN_FILE")
        token = args.token or (_read_token(token_file) if token_file else None)
        config = cls.from_env(env, config_path=args.config, database_url=args.db,
                              host=args.host, port=args.port, token=token,
                              log_level=args.log_level, allowed_hosts=args.allowed_hosts,
                              labels=args.labels, node=args.node_id,
                              public_url=args.public_url, smtp_url=args.smtp_url,
                              pass_env=getattr(args, "pass_env", None),
                              trusted_proxies=getattr(args, "trusted_proxies", None))
        return config

    @functools.cached_property
    def base_dir(self) -> str:
        """The folder of jobs.yaml: relative scripts and python modules resolve against it."""
        return os.path.dirname(os.path.abspath(self.config_path or "jobs.yaml"))


def _parse_labels(text: str) -> tuple:
    labels = tuple(sorted({x.strip() for x in text.split(",") if x.strip()}))
    bad = [x for x in labels if not LABEL_PATTERN.fullmatch(x)]
    if bad:
        raise SchedulerError(f"labels: {bad[0]!r} is not a label (letters, digits, _ . -; "
                             f"up to 32)")
    if len(labels) > MAX_LABELS:
        raise SchedulerError(f"labels: {len(labels)} given; a node has at most {MAX_LABELS}")
    return labels


def _read_token(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            token = fh.read().strip()
    except OSError as exc:
        raise SchedulerError(f"cannot read the token file {path}: {exc.strerror}") from None
    if not token:
        raise SchedulerError(f"the token file {path} is empty")
    return token


MIN_TOKEN = 16   # characters; a short token is guessed, even at the rate the API allows


def check_token(token: Optional[str]) -> None:
    """Refuse a token that is empty, blank or short, saying how to make a good one."""
    if token is None:
        return
    problem = ("is empty or blank" if not token.strip() else
               "has spaces or line breaks at its ends" if token != token.strip() else
               f"has {len(token)} characters; at least {MIN_TOKEN} are needed"
               if len(token) < MIN_TOKEN else None)
    if problem:
        raise SchedulerError(f"the API token {problem}. Make one with: python -c \"import "
                             f"secrets; print(secrets.token_urlsafe(32))\"")


def _parse_port(value: Any) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise SchedulerError(f"port: {value!r} is not a number (1-65535, or 0 for any)") from None
    if not 0 <= port <= 65535:
        raise SchedulerError(f"port: {port} is out of range (1-65535, or 0 for any)")
    return port


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------

class SchedulerError(Exception):
    """Root of our errors; ``status`` is the HTTP status, ``details`` lists field errors."""

    status = 500
    code = "error"

    def __init__(self, message: str, details: Optional[list] = None):
        super().__init__(message)
        self.details = details or []


class BadRequest(SchedulerError, ValueError): status = 400; code = "bad_request"  # noqa: E701,E702
class Unauthorized(SchedulerError): status = 401; code = "unauthorized"  # noqa: E701,E702
class Forbidden(SchedulerError): status = 403; code = "forbidden"  # noqa: E701,E702
class JobNotFound(SchedulerError, LookupError): status = 404; code = "not_found"  # noqa: E701,E702
class RunNotFound(SchedulerError, LookupError): status = 404; code = "not_found"  # noqa: E701,E702
class JobConflict(SchedulerError): status = 409; code = "conflict"  # noqa: E701,E702
class PayloadTooLarge(SchedulerError): status = 413; code = "too_large"  # noqa: E701,E702
class UnsupportedMedia(SchedulerError): status = 415; code = "unsupported_media_type"  # noqa: E701,E702
class InvalidJob(SchedulerError, ValueError): status = 422; code = "invalid"  # noqa: E701,E702
class Unavailable(SchedulerError): status = 503; code = "unavailable"  # noqa: E701,E702
class InvalidConfig(InvalidJob): code = "invalid_config"  # noqa: E701,E702


# --------------------------------------------------------------------------------------------
# Models: the jobs.yaml schema, validation with line numbers, dict shapes of the API
# --------------------------------------------------------------------------------------------

Number = Union[StrictInt, StrictFloat]
CronField = Union[StrictStr, StrictInt]
DateValue = Union[StrictStr, dt.datetime, dt.date]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _TriggerBase(_Model):
    timezone: Optional[StrictStr] = None
    jitter: Optional[Annotated[Number, Field(ge=0, le=86400)]] = None   # at most a day


class IntervalSpec(_TriggerBase):
    type: Literal["interval"]
    weeks: Annotated[Number, Field(ge=0)] = 0
    days: Annotated[Number, Field(ge=0)] = 0
    hours: Annotated[Number, Field(ge=0)] = 0
    minutes: Annotated[Number, Field(ge=0)] = 0
    seconds: Annotated[Number, Field(ge=0)] = 0
    start_date: Optional[DateValue] = None
    end_date: Optional[DateValue] = None

    @model_validator(mode="after")
    def _positive(self) -> IntervalSpec:
        total = _interval_seconds(self)
        if not total > 0:
            raise ValueError("an interval needs one of weeks, days, hours, minutes, seconds > 0")
        if not total <= 100 * 366 * 86400:   # also rejects .inf; longer overflows datetimes
            raise ValueError("an interval must be at most 100 years")
        if total < 0.1:   # shorter would keep the scheduler catching up forever
            raise ValueError("an interval must be at least 0.1 seconds")
        return self


class CronSpec(_TriggerBase):
    type: Literal["cron"]
    expression: Optional[StrictStr] = None
    year: Optional[CronField] = None
    month: Optional[CronField] = None
    day: Optional[CronField] = None
    week: Optional[CronField] = None
    day_of_week: Optional[CronField] = None
    hour: Optional[CronField] = None
    minute: Optional[CronField] = None
    second: Optional[CronField] = None
    start_date: Optional[DateValue] = None
    end_date: Optional[DateValue] = None

    @model_validator(mode="after")
    def _one_form(self) -> CronSpec:
        fields = [f for f in _CRON_FIELDS if getattr(self, f) is not None]
        if self.expression is not None and fields:
            raise ValueError(f"give either expression or fields ({', '.join(fields)}), not both")
        if self.expression is None and not fields:
            raise ValueError("give expression: '30 2 * * *' or fields such as hour and minute")
        return self


class DateSpec(_TriggerBase):
    type: Literal["date"]
    run_date: DateValue


class ManualSpec(_Model):
    """No schedule: the job runs only when started by hand or through the API."""

    type: Literal["manual"]


TriggerSpec = Annotated[Union[IntervalSpec, CronSpec, DateSpec, ManualSpec],
                        Field(discriminator="type")]
_CRON_FIELDS = ("year", "month", "day", "week", "day_of_week", "hour", "minute", "second")


NOTIFY_EVENTS = ("failed", "timeout", "interrupted", "missed", "succeeded", "recovered",
                 "retrying")
NOTIFY_DEFAULT_ON = ["failed", "timeout", "interrupted", "missed"]
_URL = r"^https?://[^\s/?#]+[^\s]*$"


class _NotifyBase(_Model):
    on: Annotated[list[Literal[NOTIFY_EVENTS]], Field(min_length=1)] = NOTIFY_DEFAULT_ON


class WebhookTarget(_NotifyBase):
    """A JSON POST; with ``secret``, signed with HMAC-SHA256 (as GitHub signs webhooks)."""

    webhook: Annotated[StrictStr, Field(pattern=_URL)]
    headers: dict[StrictStr, StrictStr] = {}
    secret: Optional[StrictStr] = None


class SlackTarget(_NotifyBase):
    """An incoming-webhook message (Slack, Mattermost and the like)."""

    slack: Annotated[StrictStr, Field(pattern=_URL)]


class EmailTarget(_NotifyBase):
    """Mail through the service's SMTP server (--smtp-url)."""

    email: Annotated[list[Annotated[StrictStr, Field(pattern=r"^[^@\s]+@[^@\s]+$")]],
                     Field(min_length=1, max_length=50)]


def _notify_kind(value: Any) -> Optional[str]:
    if isinstance(value, dict):
        return next((k for k in ("webhook", "slack", "email") if k in value), None)
    return next((k for k in ("webhook", "slack", "email") if hasattr(value, k)), None)


def _yaml_on(value: Any) -> Any:
    """YAML 1.1 reads an unquoted ``on:`` key as the boolean true: it means 'on' here."""
    if isinstance(value, dict) and True in value and "on" not in value:
        value = {("on" if key is True else key): item for key, item in value.items()}
    return value


NotifyTarget = Annotated[Union[Annotated[WebhookTarget, Tag("webhook")],
                               Annotated[SlackTarget, Tag("slack")],
                               Annotated[EmailTarget, Tag("email")]],
                         Discriminator(_notify_kind), BeforeValidator(_yaml_on)]


def _no_nul(value: str) -> str:
    """A value the OS takes as a C string (argv, env, paths) ends at a NUL: refuse it."""
    if "\0" in value:
        raise ValueError("must not contain a NUL character (\\0)")
    return value


def _env_name(value: str) -> str:
    if not value or "=" in value or "\0" in value:
        raise ValueError(f"{value!r} is not an environment variable name (it must be "
                         f"non-empty, without '=' or a NUL character)")
    return value


CString = Annotated[StrictStr, AfterValidator(_no_nul)]
EnvMap = dict[Annotated[StrictStr, AfterValidator(_env_name)], CString]


def _argv_problem(args: list) -> Optional[str]:
    """Extra argv of a command job: each becomes a C string."""
    bad = next((i for i, a in enumerate(args) if "\0" in str(a)), None)
    return None if bad is None else f"args[{bad}]: must not contain a NUL character (\\0)"


class RetrySpec(_Model):
    max: Annotated[StrictInt, Field(ge=0, le=100)] = 0
    delay: Annotated[Number, Field(ge=0)] = 0
    backoff: Annotated[Number, Field(ge=1)] = 1


MAX_NESTING = 100   # levels of lists and objects in args/kwargs: pydantic's dump fails near 255


def _shallow(value):
    """args or kwargs nested no deeper than MAX_NESTING (counted without recursion)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_NESTING:
            raise ValueError(f"nested deeper than {MAX_NESTING} levels of lists and objects")
        if isinstance(item, (list, dict)):
            stack.extend((child, depth + 1) for child in
                         (item.values() if isinstance(item, dict) else item))
    return value


class JobDefinition(_Model):
    """One entry of jobs.yaml, and the body of ``POST /api/jobs``."""

    id: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    func: Optional[CString] = Field(None, description="pkg.mod:func, or a script path")
    command: Union[CString, list[CString], None] = None
    shell: StrictBool = False
    args: Annotated[list[Any], AfterValidator(_shallow)] = []
    kwargs: Annotated[dict[StrictStr, Any], AfterValidator(_shallow)] = {}
    description: StrictStr = ""
    tags: list[StrictStr] = []
    is_enabled: StrictBool = True
    trigger: TriggerSpec = Field(default_factory=lambda: ManualSpec(type="manual"),
                                 description="none: runs only by hand (type manual)")
    max_instances: Annotated[StrictInt, Field(ge=1, le=1000)] = 1
    coalesce: StrictBool = True
    misfire_grace_time: Optional[Annotated[Number, Field(gt=0)]] = 60
    timeout: Optional[Annotated[Number, Field(gt=0)]] = None
    retries: Optional[RetrySpec] = None
    env: EnvMap = {}
    cwd: Optional[CString] = None
    replace_existing: StrictBool = True
    run_on: Annotated[list[Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_.-]{1,32}$")]],
                      Field(max_length=8, description="node labels: only a node with all of "
                                                      "them runs this job")] = []
    notify: Annotated[list[NotifyTarget], Field(max_length=20)] = []

    @model_validator(mode="after")
    def _one_target(self) -> JobDefinition:
        if (self.func is None) == (self.command is None):
            raise ValueError("give exactly one of func (a python callable or a script) or command")
        if self.command is not None and not self.command:
            raise ValueError("command: must not be empty")
        if self.shell and not isinstance(self.command, str):
            raise ValueError("shell: true needs command as a string")
        if self.kind == "command" and _argv_problem(self.args):
            raise ValueError(_argv_problem(self.args))
        return self

    @property
    def kind(self) -> str:
        return "command" if self.command is not None or _is_script(self.func) else "python"

    def dump(self) -> dict:
        """The definition as given (defaults left out), JSON- and YAML-ready."""
        return self.model_dump(mode="json", exclude_unset=True)


class RunParams(_Model):
    """The optional body of ``POST /api/jobs/{id}/run``: parameters of this run only. args
    replace the job's args; kwargs and env are merged over the job's."""

    args: Optional[Annotated[list[Any], AfterValidator(_shallow)]] = Field(
        None, description="positional arguments (python) or extra argv (commands)")
    kwargs: Optional[Annotated[dict[StrictStr, Any], AfterValidator(_shallow)]] = Field(
        None, description="python jobs only")
    env: Optional[EnvMap] = Field(None, description="command jobs only")


def _is_script(func: Optional[str]) -> bool:
    return bool(func) and ("/" in func or "\\" in func or func.lower().endswith(SCRIPT_SUFFIXES))


def _interval_seconds(spec: IntervalSpec) -> float:
    return (spec.weeks * 604800 + spec.days * 86400 + spec.hours * 3600 + spec.minutes * 60
            + spec.seconds)


class _SharedFieldsSet(set):
    """A model's set of given fields, one object for all models given the same fields (the
    book's definitions: two 216-byte sets a job, ~4 MiB per 10,000 jobs). Definitions are
    never changed in place, so it refuses changes; model_copy gets a plain set."""

    __slots__ = ()

    def __copy__(self) -> set:
        return set(self)

    def __deepcopy__(self, memo) -> set:
        return set(self)

    def _refuse(self, *args, **kwargs):
        raise TypeError("a set of fields shared by many definitions cannot change")

    add = update = discard = remove = pop = clear = _refuse
    __ior__ = __iand__ = __isub__ = __ixor__ = _refuse


@functools.lru_cache(maxsize=256)   # distinct sets of given fields: a handful in practice
def _shared_fields(fields: frozenset) -> _SharedFieldsSet:
    return _SharedFieldsSet(fields)


def share_fields(defn: JobDefinition) -> JobDefinition:
    """``defn`` (and the models in it) with their sets of given fields shared."""
    for model in (defn, defn.trigger, defn.retries, *defn.notify):
        if model is not None:
            object.__setattr__(model, "__pydantic_fields_set__",
                               _shared_fields(frozenset(model.__pydantic_fields_set__)))
    return defn


def definition_hash(defn: JobDefinition) -> str:
    return hashlib.sha256(json.dumps(defn.dump(), sort_keys=True).encode()).hexdigest()


def parse_job(data: Any, base_dir: str) -> JobDefinition:
    """Validate one job (a dict) fully: schema, trigger, callable or script. Raises InvalidJob."""
    if not isinstance(data, dict):
        message = f"a job must be a mapping, got {_type_name(data)}"
        raise InvalidJob(message, [{"field": "", "message": message, "line": None}])
    try:
        defn = JobDefinition.model_validate(data)
    except ValidationError as exc:
        details = _pydantic_details(exc.errors())
        details += _partial_checks(data, details, base_dir)
        raise InvalidJob(_details_text(details, data.get("id")), details) from None
    details = check_job(defn, base_dir)
    if details:
        raise InvalidJob(_details_text(details, defn.id), details)
    return defn


def check_job(defn: JobDefinition, base_dir: str) -> list[dict]:
    """What pydantic cannot see: the trigger builds, the callable imports and takes the job's
    args and kwargs, the script exists, a command line needs no shell it does not get."""
    details = [{"field": f"trigger.{f}" if f else "trigger", "message": m, "line": None}
               for f, m in trigger_problems(defn.trigger)]
    problem = _target_problem(defn, base_dir)
    if problem:
        details.append({"field": problem[0], "message": problem[1], "line": None})
    return details


_CRON_RANGES = {"year": "1970-9999", "month": "1-12 or jan-dec",
                "day": "1-31, last, '1st mon'-'5th sun', 'last fri'", "week": "1-53",
                "day_of_week": "0-6 with 0 = Monday, or mon-sun", "hour": "0-23",
                "minute": "0-59", "second": "0-59"}


def trigger_problems(spec) -> list[tuple[str, str]]:
    """Each wrong part of a trigger as (field, message), field by field."""
    utc = dt.UTC
    if isinstance(spec, ManualSpec):
        return []
    if spec.timezone:
        try:
            _zone(spec.timezone)
        except ValueError as exc:
            return [("timezone", str(exc).removeprefix("timezone: "))]
    problems = []
    for name in ("run_date", "start_date", "end_date"):
        value = getattr(spec, name, None)
        if value is not None and (problem := _date_problem(name, value)):
            problems.append((name, problem))
    if isinstance(spec, CronSpec):
        problems += _cron_problems(spec)
    if not problems:
        try:
            trigger = build_trigger(spec, utc)
        except (ValueError, TypeError, OverflowError) as exc:
            field = _trigger_field(exc).lstrip(".")
            return [(field, _clean(exc).removeprefix(f"{field}: "))]
        try:
            first = trigger.get_next_fire_time(None, dt.datetime.now(utc))
            if first is not None:
                trigger.get_next_fire_time(first, first)
        except (OverflowError, ValueError):
            problems.append(("", "its fire times run past the year 9999"))
        else:
            if first is None and isinstance(spec, CronSpec) and spec.end_date is None:
                problems.append(("expression" if spec.expression else "",
                                 "it matches no time from now on, so it would never fire"))
    return problems


LATEST_TIME = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)   # later overflows datetime arithmetic
#                                                        (a zone's offset, a grace, a jitter)


def _date_problem(name: str, value) -> Optional[str]:
    try:
        when = convert_to_datetime(value, dt.UTC, name)
    except ValueError as exc:
        if "out of range" not in str(exc):
            return (f"{value!r} is not a date/time (ISO 8601, e.g. '2026-12-24 18:00:00' or "
                    f"'2026-12-24T18:00:00+01:00')")
        when = None
    if when is None or when >= LATEST_TIME:
        return (f"{str(value)!r} is too far ahead: times up to the end of the year 9998 can be "
                f"scheduled")
    return None


def _cron_problems(spec: CronSpec) -> list[tuple[str, str]]:
    if spec.expression is not None:
        return [("expression", message) for message in crontab_problems(spec.expression)]
    return [(name, problem) for name in _CRON_FIELDS if getattr(spec, name) is not None
            and (problem := _aps_field_problem(name, getattr(spec, name)))]


def _partial_checks(data: dict, details: list, base_dir: str) -> list:
    """When the schema fails elsewhere, still check the trigger and the target on their own, so
    one pass reports every error of a job."""
    failed = {d["field"].split(".")[0] for d in details}
    stub = {"id": "x", "trigger": {"type": "date", "run_date": "2000-01-01"}, "command": "true"}
    parts = []
    if "trigger" not in failed and "trigger" in data:
        parts.append({**stub, "trigger": data["trigger"]})
    if not failed & {"func", "command", "shell", "args", "env", "cwd"}:
        keys = ("func", "command", "shell", "args", "env", "cwd")
        target = {k: data[k] for k in keys if k in data}
        if "func" in target or "command" in target:
            parts.append({**stub, "command": None, **target})
    found = []
    for part in parts:
        try:
            found += check_job(JobDefinition.model_validate(part), base_dir)
        except ValidationError:
            continue   # already reported by the full validation
    return found


def _target_problem(defn: JobDefinition, base_dir: str) -> Optional[tuple[str, str]]:
    if defn.kind == "python":
        try:
            func = resolve_callable(defn.func, base_dir)
        except InvalidJob as exc:
            return "func", str(exc)
        return _call_problem(func, defn.args, defn.kwargs)
    if defn.shell:
        return None
    field = "func" if defn.command is None else "command"
    syntax = shell_syntax(defn.command) if isinstance(defn.command, str) else None
    if syntax:
        return field, (f"{syntax!r} is shell syntax, but this command runs without a shell: "
                       f"add shell: true, or quote it")
    try:
        argv = command_argv(defn, base_dir)
    except ValueError as exc:   # shlex: an unbalanced quote
        return field, f"cannot split the command line: {exc}"
    exe = argv[0]
    if os.sep in exe or "/" in exe:
        if not os.path.isfile(exe):
            return field, f"script {exe} does not exist"
        if not os.access(exe, os.X_OK):
            return field, f"script {exe} is not executable (chmod +x {shlex.quote(exe)})"
    elif shutil.which(exe, path=_job_env(defn).get("PATH")) is None:
        return field, f"program {exe!r} is not found on PATH"
    return None


def _call_problem(func, args: list, kwargs: dict) -> Optional[tuple[str, str]]:
    """Whether ``func(*args, **kwargs)`` binds, so that a missing argument is a validation error
    and not a failed run at 2 a.m. A callable without a readable signature is accepted."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return None
    name = getattr(func, "__name__", "the callable")
    params = signature.parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        for key in (k for k in kwargs if k not in params):   # a typo is said before what's missing
            close = difflib.get_close_matches(key, list(params), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            return "kwargs", f"{name}() has no parameter {key!r}{hint}"
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        reason = str(exc)
        for pattern, field, message in _BIND_MESSAGES:
            match = re.fullmatch(pattern, reason)
            if match:
                return field, message.format(name, *match.groups(), len(args))
        return "kwargs", f"{name}() cannot be called with these args and kwargs: {reason}"
    return None


_BIND_MESSAGES = (   # inspect's words -> ours: which field to change, and how
    (r"missing a required (?:keyword-only )?argument: '(.*)'", "kwargs",
     "{0}() needs the argument '{1}': give it in kwargs"),
    (r"too many positional arguments", "args",
     "{0}() takes fewer positional arguments than the {1} in args"),
    (r"multiple values for argument '(.*)'", "kwargs",
     "{0}() would get '{1}' twice: from args and from kwargs"),
    (r"'(.*)' parameter is positional only, but was passed as a keyword", "kwargs",
     "{0}() takes '{1}' only by position: move it from kwargs to args"),
)


def shell_syntax(line: str) -> Optional[str]:
    """The first piece of shell syntax outside single quotes in a command line (a pipe, a
    redirection, ``;``, ``&&``, ``$VAR``, a backquote), or None. Without a shell, shlex passes
    it on as a literal argument: ``echo a | tr a b`` prints ``a | tr a b``."""
    quote, i = "", 0
    while i < len(line):
        ch = line[i]
        if ch == "\\" and quote != "'":
            i += 2
            continue
        if quote and ch == quote:
            quote = ""
        elif not quote and ch in "'\"":
            quote = ch
        elif quote != "'" and (found := _SHELL_SYNTAX.match(line, i)) and (
                not quote or found[0][0] in "$`"):
            return found[0]
        i += 1
    return None


_SHELL_SYNTAX = re.compile(r"[|&;<>]+|`|\$(?:\(|\{|[A-Za-z_][A-Za-z0-9_]*|[0-9#?!$*@-])")


def resolve_callable(ref: str, base_dir: Optional[str] = None, seen_within: float = 0.0):
    """Import ``pkg.mod:func`` or ``pkg.mod.func``; the folder of jobs.yaml is importable. A
    jobs.yaml module whose file was looked at less than ``seen_within`` seconds ago is not
    looked at again (runs pass 1 s: under load each stat costs a wait for the GIL; validation
    and reload always look)."""
    if base_dir and base_dir not in sys.path:
        sys.path.insert(0, base_dir)
    module_name, sep, attr = ref.partition(":")
    if not sep:
        module_name, _, attr = ref.rpartition(".")
    if not module_name or not attr:
        raise InvalidJob(f"{ref!r} is not a callable reference (use 'package.module:function')")
    try:
        obj = _import_fresh(module_name, base_dir, seen_within)
    except Exception as exc:  # any import-time error of user code is a validation error
        raise InvalidJob(f"cannot import module {module_name!r}: {_clean(exc)}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise InvalidJob(f"module {module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise InvalidJob(f"{ref!r} is not callable")
    return obj


def _import_fresh(name: str, base_dir: Optional[str], seen_within: float = 0.0):
    """Import a job's module; a module from the jobs.yaml folder is imported again when its
    file changed since, so an edited job takes effect as ``validate`` says it will. (Modules it
    imports in turn are not: restart for those.)"""
    module = sys.modules.get(name)
    path = getattr(module, "__file__", None)
    if module is not None and not (base_dir and path and _inside(path, base_dir)):
        return module   # not a jobs.yaml module: never imported again
    now = time.monotonic()
    if module is not None and now - getattr(module, "__ts_seen__", -1e9) < seen_within:
        return module
    if module is not None and _file_stamp(path) == getattr(module, "__ts_stamp__", None):
        module.__ts_seen__ = now
        return module   # unchanged: no lock on each run (the workers would queue on it)
    with _import_lock:
        module = sys.modules.get(name)
        if module is None:
            importlib.invalidate_caches()   # a file created since the last import
            module = importlib.import_module(name)
            module.__ts_stamp__ = _file_stamp(getattr(module, "__file__", None))
            return module
        path = getattr(module, "__file__", None)
        if base_dir and path and _inside(path, base_dir):
            stamp = _file_stamp(path)
            if stamp != getattr(module, "__ts_stamp__", stamp):
                with contextlib.suppress(OSError):   # a stale .pyc of the same size and second
                    os.unlink(importlib.util.cache_from_source(path))
                module = importlib.reload(module)
                log.info("module %s changed on disk: imported again", name)
            module.__ts_stamp__ = stamp
        return module


_import_lock = threading.Lock()


@functools.lru_cache(maxsize=1024)
def _inside(path: str, folder: str) -> bool:
    """Is ``path`` in ``folder``? Asked on every python run: remembered."""
    return os.path.abspath(path).startswith(os.path.join(os.path.abspath(folder), ""))


def _file_stamp(path: Optional[str]) -> Optional[tuple]:
    try:
        info = os.stat(path) if path else None
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_size) if info else None


def check_params(defn: JobDefinition, params: Any, base_dir: str) -> Optional[dict]:
    """Parameters of one run, validated like the job's own; InvalidJob naming what is wrong."""
    if params is None or params == {}:
        return None
    try:
        given = RunParams.model_validate(params)
    except ValidationError as exc:
        details = [_pydantic_detail(e) for e in exc.errors()]
        raise InvalidJob(_details_text(details, defn.id), details) from None
    wrong = "env" if defn.kind == "python" else "kwargs"
    if getattr(given, wrong) is not None:
        message = ("env is for command jobs only" if wrong == "env" else
                   "kwargs are for python jobs only")
        raise InvalidJob(f"job {defn.id}: {wrong}: {message}",
                         [{"field": wrong, "message": message, "line": None}])
    if defn.kind == "command" and given.args is not None and _argv_problem(given.args):
        problem = _argv_problem(given.args)
        raise InvalidJob(f"job {defn.id}: {problem}",
                         [{"field": "args", "message": problem, "line": None}])
    if defn.kind == "python":
        func = resolve_callable(defn.func, base_dir)
        args = defn.args if given.args is None else given.args
        problem = _call_problem(func, args, {**defn.kwargs, **(given.kwargs or {})})
        if problem:
            raise InvalidJob(f"job {defn.id}: {problem[0]}: {problem[1]}",
                             [{"field": problem[0], "message": problem[1], "line": None}])
    return given.model_dump(exclude_none=True)


def command_argv(defn: JobDefinition, base_dir: str) -> list[str]:
    """The argv of a command job; relative script paths resolve against the jobs.yaml folder."""
    extra = [str(a) for a in defn.args]
    if defn.command is None:
        return [_resolve_path(defn.func, base_dir), *extra]
    if defn.shell:
        return ["/bin/sh", "-c", defn.command, "sh", *extra]
    argv = shlex.split(defn.command) if isinstance(defn.command, str) else list(defn.command)
    if argv and ("/" in argv[0]) and not os.path.isabs(argv[0]):
        argv[0] = _resolve_path(argv[0], base_dir)
    return [*argv, *extra]


def _resolve_path(path: str, base_dir: str) -> str:
    return os.path.normpath(os.path.join(base_dir, os.path.expanduser(path)))


def _job_env(defn: JobDefinition, passed: Optional[dict] = None) -> dict:
    """The environment a command job starts from: the service's, less every ``TS_*`` variable
    (the service's own settings, its token, database and SMTP URLs among them), plus what
    --pass-env (TS_PASS_ENV) names and the job's own ``env``. The runner adds TS_JOB_ID,
    TS_RUN_ID and TS_SCHEDULED_AT, and a run's own ``env`` parameters."""
    own = {name: value for name, value in os.environ.items() if not name.startswith("TS_")}
    return {**own, **(passed or {}), **defn.env}


SECRET_ENV = ("TS_API_TOKEN", "TS_SMTP_URL", "TS_DATABASE_URL")   # held by the service alone


def load_jobs_file(path: str, parser: Optional[JobsParser] = None,
                   limit: int = MAX_CONFIG_BYTES) -> tuple[list[JobDefinition], str]:
    """Read, parse and validate a whole jobs.yaml. Returns (jobs, sha256); raises InvalidConfig."""
    text, digest = read_jobs_file(path, limit)
    return (parser or JobsParser()).parse(text, path), digest


def read_jobs_file(path: str, limit: int = MAX_CONFIG_BYTES) -> tuple[str, str]:
    """The text of jobs.yaml and the sha256 of its bytes; InvalidConfig if it cannot be read.
    Only a regular file of at most ``limit`` bytes is read, and the open never blocks: a FIFO
    would hang the reloader, /dev/zero would fill the memory."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise _unreadable(path, f"cannot read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _unreadable(path, f"not a regular file ({_file_kind(info.st_mode)}); "
                                    f"jobs.yaml must be a plain file")
        raw = fh.read(limit + 1) if info.st_size <= limit else b""
    if info.st_size > limit or len(raw) > limit:
        raise _unreadable(path, f"larger than {limit} bytes (max_config_bytes); split it, or "
                                f"raise the limit")
    return raw.decode("utf-8", "replace"), hashlib.sha256(raw).hexdigest()


def _unreadable(path: str, message: str) -> InvalidConfig:
    return InvalidConfig(f"{path}: {message}",
                         [{"line": None, "job": None, "field": "", "message": message}])


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISDIR, "a directory"))
    return next((name for test, name in kinds if test(mode)), "not a plain file")


class JobsParser:
    """Parses jobs.yaml fast, remembering the entries of its last good parse: a one-job edit of a
    10,000-job file re-reads and re-validates that job only. The fast path uses libyaml and
    builds no YAML nodes; any doubt or error falls back to ``parse_jobs_text``, the one path that
    reports errors with line numbers."""

    def __init__(self):
        # digest of a top-level item's text -> its definition: only that, as the book shares the
        # definitions; the loaded items and JSON keys kept besides cost ~15 MiB per 10,000 jobs
        self._known: dict[bytes, JobDefinition] = {}

    def parse(self, text: str, path: str = "jobs.yaml") -> list[JobDefinition]:
        jobs = self._parse_fast(text, path)
        return jobs if jobs is not None else parse_jobs_text(text, path)

    def _parse_fast(self, text: str, path: str) -> Optional[list[JobDefinition]]:
        if _ANCHOR.search(text):
            return None   # aliases are expanded only on the path that bounds them
        try:
            keyed = self._load(text)
        except (yaml.YAMLError, ValueError):
            return None
        if keyed is None:
            return None
        base_dir = os.path.dirname(os.path.abspath(path))
        known, targets, jobs = {}, {}, []
        for key, item in keyed:
            defn = self._known.get(key) if item is None else _fast_definition(item)
            if defn is None:
                return None
            target = (defn.func, json.dumps(defn.command), defn.shell, json.dumps(defn.args,
                      default=str), json.dumps(defn.kwargs, default=str, sort_keys=True),
                      defn.env.get("PATH"), defn.cwd)
            if target not in targets:   # one look-up per distinct program, not per job
                targets[target] = _target_problem(defn, base_dir)
            if targets[target] is not None:
                return None
            if key is not None:
                known[key] = defn
            jobs.append(defn)
        if len({j.id for j in jobs}) != len(jobs):
            return None
        self._known = known   # only what this file uses
        return jobs

    def _load(self, text: str) -> Optional[list[tuple[Optional[bytes], Any]]]:
        """(digest of the item's text, the loaded item or None when the digest is known) per
        job; digest None for a file loaded whole; None for an empty or odd file."""
        if not text.strip():
            return None
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        chunks = _top_level_items(text)
        if chunks is not None:
            try:
                keys = [hashlib.blake2b(c.encode(), digest_size=16).digest() for c in chunks]
                return [(k, None if k in self._known else _load_one(c, loader))
                        for k, c in zip(keys, chunks, strict=True)]
            except (yaml.YAMLError, ValueError):
                pass   # an alias to another item, an odd layout: load the whole file
        data = yaml.load(text, Loader=loader)
        items, problems = _job_items(None, data) if data is not None else ([], ["empty"])
        return None if problems else [(None, item) for item in items]


def _fast_definition(item: Any) -> Optional[JobDefinition]:
    """A loaded item's definition, or None to let the full parse report on it."""
    if not isinstance(item, dict):
        return None
    try:
        json.dumps(item, sort_keys=True)
    except (TypeError, ValueError):   # YAML dates, sets, mixed keys: the full path decides
        return None
    try:
        defn = JobDefinition.model_validate(item)
    except ValidationError:
        return None
    return None if trigger_problems(defn.trigger) else defn


def _top_level_items(text: str) -> Optional[list[str]]:
    """The text of each item of a top-level block sequence (``- ...`` at column 0), or None when
    the file has another shape (a mapping, directives, several documents)."""
    chunks: list[list[str]] = []
    for line in text.splitlines(keepends=True):
        if line.startswith("- ") or line.rstrip() == "-":
            chunks.append([line])
        elif chunks and line[:1] in (" ", "\t", "#", "\n", "\r"):
            chunks[-1].append(line)
        elif chunks or line.strip()[:1] not in ("", "#"):
            return None   # text before the first item, or at column 0 between items
    return ["".join(c) for c in chunks] or None


def _load_one(chunk: str, loader) -> Any:
    loaded = yaml.load(chunk, Loader=loader)
    if not isinstance(loaded, list) or len(loaded) != 1:
        raise ValueError("not exactly one item")
    return loaded[0]


def parse_jobs_text(text: str, path: str = "jobs.yaml") -> list[JobDefinition]:
    """Validate a whole file; any error rejects all of it (``file:line: job: field: message``)."""
    base_dir = os.path.dirname(os.path.abspath(path))
    root, data = _yaml_compose(text, path)
    items, details = _job_items(root, data)
    prefix = ["jobs"] if isinstance(data, dict) else []
    jobs, first_line = [], {}
    for index, item in enumerate(items):
        jid = item.get("id") if isinstance(item, dict) else None
        where = [*prefix, index]
        if isinstance(jid, str) and jid in first_line:
            details.append({"line": _line_of(root, [*where, "id"]), "job": jid, "field": "id",
                            "message": f"duplicate id (first defined on line {first_line[jid]})"})
            continue
        if isinstance(jid, str):
            first_line[jid] = _line_of(root, [*where, "id"])
        try:
            jobs.append(parse_job(item, base_dir))
        except InvalidJob as exc:
            for d in exc.details:
                fpath = d["field"].split(".")
                details.append({**d, "job": jid or f"#{index + 1}",
                                "line": _line_of(root, [*where, *fpath]),
                                "message": d["message"] + _yaml_hint(root, [*where, *fpath])})
    if details:
        details.sort(key=lambda d: d["line"] or 0)   # stable: a line's details keep their order
        raise InvalidConfig(_config_error_text(path, details), details)
    return jobs


def _yaml_compose(text: str, path: str):
    if not text.strip():
        detail = {"line": 1, "job": None, "field": "",
                  "message": "file is empty; write [] to remove every job"}
        raise InvalidConfig(_config_error_text(path, [detail]), [detail])
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        _check_expansion(root, path)
        return root, loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        detail = _yaml_error_detail(exc, text)
        raise InvalidConfig(_config_error_text(path, [detail]), [detail]) from None
    except RecursionError:
        detail = {"line": None, "job": None, "field": "", "message": "YAML nested too deeply"}
        raise InvalidConfig(_config_error_text(path, [detail]), [detail]) from None
    finally:
        loader.dispose()


def _check_expansion(root, path: str) -> None:
    """Refuse aliases that expand to far more than the file holds (a 'billion laughs'): the
    parsed document shares the aliased values, but validating and storing them copies each."""
    sizes: dict[int, int] = {}

    def size(node) -> int:
        if id(node) not in sizes:
            children = (node.value if isinstance(node, yaml.SequenceNode) else
                        [n for pair in node.value for n in pair]
                        if isinstance(node, yaml.MappingNode) else [])
            sizes[id(node)] = 1 + sum(size(child) for child in children)
        return sizes[id(node)]
    if root is not None and size(root) > len(sizes) + MAX_ALIAS_NODES:
        detail = {"line": None, "job": None, "field": "",
                  "message": f"YAML aliases expand to {size(root)} values, more than "
                             f"{MAX_ALIAS_NODES} beyond what the file holds; write the values "
                             f"out or use fewer aliases"}
        raise InvalidConfig(_config_error_text(path, [detail]), [detail])


def _yaml_error_detail(exc: yaml.YAMLError, text: str) -> dict:
    mark = getattr(exc, "context_mark", None) or getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark else None
    message = f"YAML syntax: {getattr(exc, 'problem', None) or exc}"
    for mark in (getattr(exc, "context_mark", None), getattr(exc, "problem_mark", None)):
        token = _token_at(text, mark)
        if token[:1] in ("*", "%", "@", "`"):
            return {"line": mark.line + 1, "job": None, "field": "",
                    "message": f"`{token}` must be quoted in YAML: '{token}'"}
    return {"line": line, "job": None, "field": "", "message": message}


def _token_at(text: str, mark) -> str:
    """The plain token around a YAML error mark (``*/5`` for an unquoted cron step)."""
    if mark is None:
        return ""
    lines = text.splitlines()
    source = lines[mark.line] if mark.line < len(lines) else ""
    start = mark.column
    while start > 0 and source[start - 1] not in " \t{[,:":
        start -= 1
    rest = source[start:]
    end = next((i for i, ch in enumerate(rest) if ch in " \t,}]#"), len(rest))
    return rest[:end]


def _job_items(root, data) -> tuple[list, list]:
    """The list of job mappings of either form, with ``defaults`` merged in."""
    if data is None:
        return [], []
    if isinstance(data, list):
        return data, []
    if not isinstance(data, dict):
        return [], [{"line": 1, "job": None, "field": "",
                     "message": f"expected a list of jobs or {{defaults, jobs}}, got "
                                f"{_type_name(data)}"}]
    unknown = sorted(set(data) - {"defaults", "jobs"})
    if "id" in data:
        return [], [{"line": 1, "job": None, "field": "",
                     "message": "this is one job, not a list: start each job with '- ', or use "
                                "{defaults: ..., jobs: [...]}"}]
    if unknown:
        return [], [{"line": _line_of(root, [unknown[0]]), "job": None, "field": unknown[0],
                     "message": "unknown top-level key (valid: defaults, jobs)"}]
    defaults, jobs = data.get("defaults") or {}, data.get("jobs") or []
    if not isinstance(defaults, dict) or not isinstance(jobs, list):
        return [], [{"line": 1, "job": None, "field": "defaults" if not isinstance(defaults, dict)
                     else "jobs", "message": "defaults must be a mapping and jobs a list"}]
    return [{**defaults, **j} if isinstance(j, dict) else j for j in jobs], []


def _node_at(root, path: list):
    node = root
    for key in path:
        if isinstance(node, yaml.MappingNode):
            match = [v for k, v in node.value if k.value == str(key)]
            if not match:
                return node
            node = match[0]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        elif isinstance(node, yaml.SequenceNode) and str(key).isdigit():
            idx = int(key)
            if idx >= len(node.value):
                return node
            node = node.value[idx]
        else:
            return node
    return node


def _line_of(root, path: list) -> Optional[int]:
    node = _node_at(root, [p for p in path if p != ""]) if root is not None else None
    return node.start_mark.line + 1 if node is not None else None


def _yaml_hint(root, path: list) -> str:
    """Explain YAML 1.1 surprises at the failing value: on/no, 12:30, 010."""
    node = _node_at(root, [p for p in path if p != ""]) if root is not None else None
    if not isinstance(node, yaml.ScalarNode) or node.style is not None:
        return ""
    value, tag = node.value, node.tag.rsplit(":", 1)[-1]
    if tag == "bool" and value.lower() not in ("true", "false"):
        return f" (YAML reads unquoted {value} as a boolean; quote it: '{value}')"
    if tag in ("int", "float") and ":" in value:
        return f" (YAML reads unquoted {value} as a base-60 number; quote it: '{value}')"
    if tag == "int" and len(value) > 1 and value.startswith("0") and value.isdigit():
        return f" (YAML reads unquoted {value} as an octal number; quote it: '{value}')"
    return ""


def _pydantic_details(errors: list) -> list[dict]:
    """One detail per mistake: pydantic reports a value that fits no member of a union once per
    member (``minutes: '5'`` is neither an int nor a float); say what the field takes instead.
    When the value had the shape of one member (a list for ``command``), its errors alone count."""
    groups: dict[tuple, list] = {}
    for err in errors:
        loc = tuple(str(p) for p in err["loc"])
        cut = next((i for i, p in enumerate(loc) if _is_branch(p, i, loc) and
                    not (i == 1 and loc[0] == "trigger")), len(loc))   # a tagged union: one
        groups.setdefault(loc[:cut], []).append((err, cut < len(loc) - 1))
    details = []
    for group in groups.values():
        deeper = [err for err, deep in group if deep]
        if deeper or len(group) == 1:
            details += [_pydantic_detail(err) for err in deeper or [group[0][0]]]
        else:
            details.append(_union_detail([err for err, _ in group]))
    return details


def _pydantic_detail(err: dict) -> dict:
    """One pydantic error as a detail a person can act on."""
    loc, field = [str(p) for p in err["loc"]], _field_of(err["loc"])
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "extra_forbidden":
        return {"field": field, "message": _unknown_key(loc), "line": None}
    if kind in ("union_tag_invalid", "union_tag_not_found") and loc[:1] == ["notify"]:
        return {"field": field, "message": "a notify target needs one of webhook, slack or email",
                "line": None}
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        message = ("needs a type: interval, cron, date or manual"
                   if kind == "union_tag_not_found" else
                   f"type must be one of: interval, cron, date, manual; got "
                   f"{_short(ctx.get('tag'))}")
        return {"field": "trigger.type", "message": message, "line": None}
    if kind == "missing":
        message = "is required"
    elif kind == "string_pattern_mismatch" and loc[-1:] in (["webhook"], ["slack"]):
        message = f"must be an http:// or https:// URL, got {_short(value)}"
    elif kind == "string_pattern_mismatch":
        most = re.search(r"\{1,(\d+)\}", ctx.get("pattern", ""))
        message = (f"may only use letters, digits, '_', '.' and '-' (1 to "
                   f"{most[1] if most else 64} characters), got {_short(value)}")
    elif kind in _BOUNDS:
        words, key = _BOUNDS[kind]
        message = f"must be {words} {ctx.get(key)}, got {_short(value)}"
    elif kind == "too_long":
        message = (f"may have at most {ctx.get('max_length')} items, got "
                   f"{ctx.get('actual_length')}")
    elif kind in _EXPECTED:
        return _union_detail([err])
    else:
        message = err["msg"].removeprefix("Value error, ")
        if kind != "value_error" and not isinstance(value, dict):
            message = f"{message}, got {_short(value)}"
    return {"field": field, "message": message, "line": None}


def _union_detail(errs: list) -> dict:
    """A value of a type the field does not take: which types it takes, said once."""
    if any(err["type"] not in _EXPECTED for err in errs):   # a member's own rule says more
        return _pydantic_detail(next(err for err in errs if err["type"] not in _EXPECTED))
    kinds = {_EXPECTED[err["type"]] for err in errs}
    expected = " or ".join(k for k in _TYPE_ORDER if k in kinds and _SUBSUMED.get(k) not in kinds)
    value = errs[0].get("input")
    message = f"must be {expected}, got {_short(value)}"
    if isinstance(value, str) and _looks_numeric(value) and "text" not in kinds:
        message = f"must be {expected}, got the text {_short(value)}: write it without quotes"
    return {"field": _field_of(errs[0]["loc"]), "message": message, "line": None}


def _field_of(loc) -> str:
    parts = [str(p) for p in loc]
    if parts[-1:] == ["[key]"]:   # a mapping's key is wrong: the message names it
        parts = parts[:-2]
    return ".".join(p for i, p in enumerate(parts) if not _is_branch(p, i, parts))


def _is_branch(part: str, index: int, loc) -> bool:
    """Whether a part of a pydantic location names a union member (trigger.cron.minute,
    minutes.int), not a field."""
    if index == 1 and loc[0] == "trigger":
        return part in ("interval", "cron", "date", "manual")
    if index == 2 and loc[0] == "notify":   # notify.0.webhook.secret -> notify.0.secret
        return part in ("webhook", "slack", "email")
    return index > 0 and _is_member(part)


def _is_member(part: str) -> bool:
    return part in ("str", "int", "float", "bool", "dict", "datetime", "date") or \
        part.startswith(("list[", "function-"))


def _unknown_key(loc: list) -> str:
    known = _KNOWN_KEYS.get(loc[1] if loc[0] == "trigger" and len(loc) > 2 else loc[0]
                            if len(loc) > 1 else "", ())
    close = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.7)
    return f"unknown key; did you mean {close[0]!r}?" if close else "unknown key"


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


_BOUNDS = {"greater_than_equal": ("at least", "ge"), "greater_than": ("more than", "gt"),
           "less_than_equal": ("at most", "le"), "less_than": ("less than", "lt")}
_EXPECTED = {"int_type": "a whole number", "int_parsing": "a whole number",
             "int_from_float": "a whole number", "float_type": "a number",
             "float_parsing": "a number", "string_type": "text", "bool_type": "true or false",
             "bool_parsing": "true or false", "list_type": "a list", "dict_type": "a mapping",
             "model_type": "a mapping", "model_attributes_type": "a mapping",
             "datetime_type": "a date/time", "datetime_parsing": "a date/time",
             "datetime_from_date_parsing": "a date/time", "date_type": "a date/time",
             "date_parsing": "a date/time", "date_from_datetime_inexact": "a date/time"}
_TYPE_ORDER = ("text", "a whole number", "a number", "true or false", "a date/time", "a list",
               "a mapping")
_SUBSUMED = {"a whole number": "a number", "text": "a date/time"}   # the second says it all
_KNOWN_KEYS = {"": tuple(JobDefinition.model_fields), "retries": tuple(RetrySpec.model_fields),
               **{spec.model_fields["type"].annotation.__args__[0]: tuple(spec.model_fields)
                  for spec in (IntervalSpec, CronSpec, DateSpec)}}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _details_text(details: list, job_id: Any) -> str:
    head = f"job {job_id}: " if job_id else ""
    return "; ".join(f"{head}{d['field'] + ': ' if d['field'] else ''}{d['message']}"
                     for d in details)


def _config_error_text(path: str, details: list) -> str:
    lines = []
    for d in details:
        parts = [f"{path}:{d['line'] or 1}", d.get("job"), d.get("field"), d["message"]]
        lines.append(": ".join(str(p) for p in parts if p))
    return "\n".join(lines)


def _trigger_field(exc: Exception) -> str:
    text = str(exc)
    for name in ("expression", *_CRON_FIELDS, "timezone", "run_date", "start_date", "end_date"):
        if f"'{name}'" in text or text.startswith(name):
            return "." + name
    return ""


def _clean(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0] if text else text


def _type_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", type(None): "nothing"}.get(
        type(value), type(value).__name__)


# Triggers: our specs -> APScheduler trigger objects
#
# A crontab line means what Debian's cron makes of it, DST included. cronsim (Healthchecks.io's
# cron engine) computes the times and CrontabTrigger adapts it to APScheduler. The APScheduler
# field form becomes a crontab line whenever one says exactly the same; only what none can
# (seconds, years, ISO weeks, days that APScheduler ANDs and cron would OR) keeps APScheduler's
# CronTrigger, with the same DST rules (DstSafeCronTrigger).

def build_trigger(spec, default_tz, now: Optional[dt.datetime] = None):
    """An APScheduler trigger for a spec (None: a manual job); ``default_tz`` applies where the
    spec names none. An interval without start_date starts one interval after ``now`` when given
    (the scheduler's clock, the database's in a cluster), else after this machine's time as
    APScheduler does."""
    if isinstance(spec, ManualSpec):
        return None
    tz = _zone(spec.timezone) if spec.timezone else default_tz
    if isinstance(spec, IntervalSpec):
        start = spec.start_date
        if start is None and now is not None:
            start = now + dt.timedelta(seconds=_interval_seconds(spec))
        return IntervalTrigger(weeks=0, days=0, hours=0, minutes=0, seconds=_interval_seconds(spec),
                               start_date=start, end_date=spec.end_date, timezone=tz,
                               jitter=spec.jitter)
    if isinstance(spec, DateSpec):
        return DateTrigger(run_date=spec.run_date, timezone=tz)
    common = dict(timezone=tz, start_date=spec.start_date, end_date=spec.end_date,
                  jitter=spec.jitter)
    fields = {f: getattr(spec, f) for f in _CRON_FIELDS if getattr(spec, f) is not None}
    expression = spec.expression if spec.expression is not None else fields_crontab(fields)
    if expression is not None:
        return CrontabTrigger(expression, **common)
    return DstSafeCronTrigger(**fields, **common)


def crontab_trigger(expression: str, tz=None, jitter=None, start_date=None, end_date=None):
    """The trigger of a crontab line; ``tz`` defaults to the system's zone."""
    return CrontabTrigger(expression, tz if tz is not None else _local_zone(),
                          start_date=start_date, end_date=end_date, jitter=jitter)


class CrontabTrigger(BaseTrigger):
    """Fires when Debian's cron would run a crontab line; cronsim computes the times.

    DST, as in Debian's cron: a job whose hour field starts with ``*`` follows real time: it fires
    whenever the clock shows a matching time, so twice in a repeated hour and never in a skipped
    one. Any other job fires each matching wall-clock time once: a repeated time at its first
    occurrence, a skipped one right after the change (skipped times of one night fire once,
    together). Debian also counts a minute field starting with ``*`` as "real time"
    (``*/15 2 * * *`` fires 8 times when clocks go back and never when they go forward); here a
    fixed hour is enough for the wall-clock rule (4 times, and once), as issue 14 asks."""

    def __init__(self, expression: str, timezone, start_date=None, end_date=None, jitter=None):
        problems = crontab_problems(expression)
        if problems:
            raise ValueError(f"expression: {problems[0]}")
        tz = astimezone(timezone)
        self.__setstate__({"version": 1, "expression": expression, "timezone": tz,
                           "start_date": convert_to_datetime(start_date, tz, "start_date"),
                           "end_date": convert_to_datetime(end_date, tz, "end_date"),
                           "jitter": jitter})

    def get_next_fire_time(self, previous_fire_time, now):
        base = self._next_after(_after(previous_fire_time, now, self.start_date))
        return _finish(base, self.end_date, self.jitter, self._next_after)

    def _next_after(self, moment: dt.datetime) -> Optional[dt.datetime]:
        """The first fire time strictly after ``moment``; None if none comes within 50 years."""
        for fire in CronSim(self._cronsim, moment.astimezone(self.timezone)):
            # cronsim counts wall-clock time from a time in the second pass of a repeated hour,
            # so the first pass's times come first: skip them. A wildcard-hour time it puts in
            # a gap (a zone that changes at midnight) does not exist: skip it too.
            if _utc(fire) > moment and not _is_imaginary(fire):
                return _utc(fire).astimezone(self.timezone)
        return None

    def __getstate__(self):
        return {"version": 1, "expression": self.expression, "timezone": self.timezone,
                "start_date": self.start_date, "end_date": self.end_date, "jitter": self.jitter}

    def __setstate__(self, state):
        if state.get("version", 1) > 1:
            raise ValueError(f"got version {state['version']} of a CrontabTrigger, but this "
                             f"task-scheduler reads version 1 only")
        self.expression, self.timezone = state["expression"], state["timezone"]
        self.start_date, self.end_date = state["start_date"], state["end_date"]
        self.jitter = state["jitter"]
        self._cronsim = _cronsim_expression(self.expression)

    def __str__(self):
        return f"cron[{self.expression}]"

    def __repr__(self):
        options = [repr(self.expression), f"timezone='{self.timezone}'"]
        options += [f"{name}={value!r}" for name in ("start_date", "end_date", "jitter")
                    if (value := getattr(self, name)) is not None]
        return f"<{type(self).__name__} ({', '.join(options)})>"


class DstSafeCronTrigger(CronTrigger):
    """APScheduler's CronTrigger for what no crontab line can say (seconds, years, ISO weeks,
    days that APScheduler ANDs and cron would OR), with CrontabTrigger's DST rules: a fixed hour
    fires each wall-clock time once (the first of a repeated time; right after the change for a
    skipped one), a wildcard hour ('*', '*/N') at every real time whose clock matches. APScheduler
    alone fires a fixed time twice when clocks go back and loses the first hour after they go
    forward (its issues #529/#606). Triggers stored by earlier versions load as this class."""

    def get_next_fire_time(self, previous_fire_time, now):
        base = self._next_after(_after(previous_fire_time, now, self.start_date))
        return _finish(base, self.end_date, self.jitter, self._next_after)

    def _next_after(self, moment: dt.datetime) -> Optional[dt.datetime]:
        wall_clock = self._copy(dt.UTC)   # in UTC, CronTrigger counts wall-clock time: no DST
        if self._fixed_hour():
            return _wall_clock_fire(wall_clock, moment, self.timezone, _first_occurrence)
        # Real time: APScheduler steps through both passes of a repeated hour, and the wall-clock
        # pass finds what it loses after clocks go forward; the earlier of the two is next.
        # (As "now", not as the previous fire time: inside a repeated hour, Python's == between
        # zones is always False, and APScheduler then returns the previous fire time again.)
        real = self._copy(self.timezone).get_next_fire_time(None, moment + _MICROSECOND)
        if real is not None and _is_imaginary(real):
            real = None
        wall = _wall_clock_fire(wall_clock, moment, self.timezone, _if_real)
        return min((t for t in (real, wall) if t is not None), key=_utc, default=None)

    def _fixed_hour(self) -> bool:
        return not str(self.fields[self.FIELD_NAMES.index("hour")]).startswith("*")

    def _copy(self, tz) -> CronTrigger:
        """A plain CronTrigger with these fields in ``tz``, without dates or jitter."""
        copy = CronTrigger.__new__(CronTrigger)
        copy.__setstate__({**CronTrigger.__getstate__(self), "timezone": tz, "start_date": None,
                           "end_date": None, "jitter": None})
        return copy


_MICROSECOND = dt.timedelta(microseconds=1)


def _after(previous: Optional[dt.datetime], now: dt.datetime, start_date) -> dt.datetime:
    """The UTC moment the next fire time must come strictly after: the previous fire time as
    APScheduler feeds it back (jitter included), or just before now for the first one."""
    moment = _utc(previous if previous is not None else now - _MICROSECOND)
    if start_date is not None:
        moment = max(moment, _utc(start_date) - _MICROSECOND)
    return moment


def _finish(base, end_date, jitter, next_after) -> Optional[dt.datetime]:
    """``base`` (None past ``end_date``), moved later by up to ``jitter`` seconds of real time,
    but always to before the following base time. APScheduler feeds the jittered time back as the
    previous fire time and the next fire comes strictly after it, so each base time fires once and
    in order: none again (jitter into a repeated hour used to loop), none skipped (jitter longer
    than the spacing used to eat fires)."""
    if base is None or (end_date is not None and _utc(base) > _utc(end_date)):
        return None
    if not jitter:
        return base
    following = next_after(base)
    latest = [_utc(base) + dt.timedelta(seconds=jitter)]
    if following is not None:
        latest.append(_utc(following) - _MICROSECOND)
    if end_date is not None:
        latest.append(_utc(end_date))
    room = (min(latest) - _utc(base)).total_seconds()
    fire = min(_utc(base) + dt.timedelta(seconds=random.uniform(0, room)), min(latest))
    return fire.astimezone(base.tzinfo)


def _wall_clock_fire(wall_clock: CronTrigger, moment: dt.datetime, tz, place):
    """The first real time after ``moment`` among the wall-clock times that ``wall_clock`` (a
    CronTrigger in UTC) produces, each placed in ``tz`` by ``place`` (None: it does not fire)."""
    wall = wall_clock.get_next_fire_time(None, _wall(moment, tz).replace(tzinfo=dt.UTC))
    while wall is not None:
        fire = place(wall.replace(tzinfo=tz))
        if fire is not None and _utc(fire) > moment:
            return fire
        wall = wall_clock.get_next_fire_time(wall, wall)
    return None


def _first_occurrence(local: dt.datetime) -> dt.datetime:
    """A fixed-time job fires at a wall-clock time's first occurrence; a time that clocks skip
    fires right after the change (Debian's cron runs the skipped minutes' jobs then)."""
    return _change_of(local) if _is_imaginary(local) else local


def _if_real(local: dt.datetime) -> Optional[dt.datetime]:
    """A real-time job does not fire at a wall-clock time that clocks skip."""
    return None if _is_imaginary(local) else local


def _change_of(local: dt.datetime) -> dt.datetime:
    """The instant clocks jump over ``local``, a wall-clock time that does not exist."""
    # For a time in a gap, fold=1 reads it with the offset after the change and fold=0 with the
    # one before: the change lies between the two readings. Bisect to the second.
    after = local.replace(fold=1).utcoffset()
    low, high = int(local.replace(fold=1).timestamp()), int(local.replace(fold=0).timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if dt.datetime.fromtimestamp(middle, local.tzinfo).utcoffset() == after:
            high = middle
        else:
            low = middle
    return dt.datetime.fromtimestamp(high, local.tzinfo)


def _is_imaginary(local: dt.datetime) -> bool:
    """Whether a wall-clock time does not exist (skipped when clocks go forward)."""
    return _utc(local).astimezone(local.tzinfo).replace(tzinfo=None) != local.replace(tzinfo=None)


def _utc(moment: dt.datetime) -> dt.datetime:
    """An aware time in UTC. Compare times of one zone this way: Python compares them by wall
    clock, ignoring fold, so 02:30 summer time looks later than 02:10 winter time."""
    return moment.astimezone(dt.UTC)


def _wall(moment: dt.datetime, tz) -> dt.datetime:
    return moment.astimezone(tz).replace(tzinfo=None)


# Crontab lines: validation, and the line cronsim gets

@dataclasses.dataclass(frozen=True)
class _CrontabField:
    name: str
    low: int
    high: int
    names: tuple = ()           # names[i] means low + i
    max_step: int = 0
    valid: str = ""


_CRONTAB_FIELDS = (
    _CrontabField("minute", 0, 59, max_step=60, valid="0-59"),
    _CrontabField("hour", 0, 23, max_step=24, valid="0-23"),
    _CrontabField("day-of-month", 1, 31, max_step=31, valid="1-31, L for the last day"),
    _CrontabField("month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep",
                                   "oct", "nov", "dec"), max_step=12, valid="1-12 or jan-dec"),
    _CrontabField("day-of-week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat"),
                  max_step=7, valid="0-7 or sun-sat, 0 and 7 being Sunday; N#K the K-th day N "
                                    "of the month (5#3: the third Friday), NL the last (5L)"),
)
_CRONTAB_FORMS = "lists a,b; ranges a-b; steps */N, a-b/N or a/N"
_MACROS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
           "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *",
           "@annually": "0 0 1 1 *"}
_ITEM = re.compile(r"(?:(\*)|([a-z0-9]+)(?:-([a-z0-9]+))?)(?:/([0-9]+))?")
_WEEKDAY_OF_MONTH = re.compile(r"([a-z]+|[0-9]+)#([0-9]+)|([0-9]+)l")


def crontab_problems(expression: str) -> tuple[str, ...]:
    """What is wrong with a crontab line (one message per wrong field); () when it is valid."""
    text = expression.strip()
    if text.startswith("@"):
        return () if text in _MACROS else (
            f"{text!r} is not a supported macro (valid: {', '.join(_MACROS)})",)
    parts = text.split()
    if len(parts) != 5:
        return (f"{text!r} needs 5 fields (minute hour day-of-month month day-of-week) or a "
                f"macro such as @daily, got {len(parts)}",)
    problems = tuple(problem for part, field in zip(parts, _CRONTAB_FIELDS, strict=True)
                     if (problem := _crontab_field_problem(part, field)))
    return problems or _day_problem(parts)


def _crontab_field_problem(text: str, field: _CrontabField) -> Optional[str]:
    for item in text.lower().split(","):
        reason = _crontab_item_problem(item, field)
        if reason is not None:
            return (f"{text!r} is not a valid {field.name} field{reason} "
                    f"(valid: {field.valid}; {_CRONTAB_FORMS})")
    return None


def _crontab_item_problem(item: str, field: _CrontabField) -> Optional[str]:
    """None if ``item`` (one element of a list) is valid, else why not (": ..." or "")."""
    if field.name == "day-of-month" and item == "l":
        return None
    special = _WEEKDAY_OF_MONTH.fullmatch(item) if field.name == "day-of-week" else None
    if special:
        day, nth = special[1] or special[3], special[2]
        if _crontab_value(day, field) is None:
            return f": {day!r} is not a day (0-7 or sun-sat)"
        return f": #{nth} is not 1-5" if nth is not None and not 1 <= _int(nth) <= 5 else None
    match = _ITEM.fullmatch(item)
    if not match:
        return ""
    _, first, last, step = match.groups()
    for token in (first, last):
        if token is not None and _crontab_value(token, field) is None:
            return f": {token!r} is {_what_token_is_not(token, field)}"
    if last is not None and _crontab_value(first, field) > _crontab_value(last, field):
        return f": the range {first}-{last} runs backwards"
    if step is not None and not 1 <= _int(step) <= field.max_step:
        return f": the step {step} is not 1-{field.max_step}"
    return None


def _what_token_is_not(token: str, field: _CrontabField) -> str:
    if token.isdigit():
        return f"not {field.low}-{field.high}"
    if field.names:
        return f"not a name ({field.names[0]}-{field.names[-1]})"
    return "not a number"


def _crontab_value(token: str, field: _CrontabField) -> Optional[int]:
    if token.isdigit():
        return _int(token) if field.low <= _int(token) <= field.high else None
    return field.names.index(token) + field.low if token in field.names else None


def _int(digits: str) -> int:
    """A number in a cron field; a huge one counts as too large (int() refuses 4,300 digits)."""
    return int(digits) if len(digits) <= 9 else 10**9


def _crontab_values(text: str, field: _CrontabField) -> set[int]:
    """The numbers a valid list of '*', 'a', 'a-b' and steps selects."""
    values: set[int] = set()
    for item in text.lower().split(","):
        star, first, last, step = _ITEM.fullmatch(item).groups()
        low = field.low if star else _crontab_value(first, field)
        high = field.high if star or (step and not last) else _crontab_value(last or first, field)
        values.update(range(low, high + 1, int(step or 1)))
    return values


def _day_problem(parts: list[str]) -> tuple[str, ...]:
    """Valid fields, but a day-of-month that none of the months has (cronsim checks it). Other
    lines that never fire show when trigger_problems asks for the first fire time."""
    try:
        CronSim(_cronsim_expression(" ".join(parts)), dt.datetime(2000, 1, 1))
    except CronSimError:
        return (f"day-of-month {parts[2]!r} never occurs in month {parts[3]!r}",)
    return ()


def _cronsim_expression(expression: str) -> str:
    """The line cronsim gets: a macro expanded; with a fixed hour, a minute field starting with
    '*' spelled out, so that cronsim applies its wall-clock rules (see CrontabTrigger)."""
    minute, hour, *days = _MACROS.get(expression.strip(), expression).split()
    if minute.startswith("*") and not hour.startswith("*"):
        minute = ",".join(map(str, sorted(_crontab_values(minute, _CRONTAB_FIELDS[0]))))
    return " ".join([minute, hour, *days])


# The APScheduler field form: validation, and the crontab line that says the same

_APS_NUMBERS = re.compile(r"\*(?:/[0-9]+)?|[0-9]+(?:-[0-9]+)?(?:/[0-9]+)?")
_APS_NAMES = re.compile(r"([a-z]+)(?:-([a-z]+))?")
_APS_POSITION = re.compile(r"(1st|2nd|3rd|4th|5th|last) +([a-z]+)")
_APS_WEEKDAYS = _CrontabField("day_of_week", 0, 6, ("mon", "tue", "wed", "thu", "fri", "sat",
                                                    "sun"))
_APS_FIELD_NAMES = {"month": _CRONTAB_FIELDS[3].names, "day_of_week": _APS_WEEKDAYS.names}


def fields_crontab(fields: dict) -> Optional[str]:
    """The crontab line that fires exactly when ``CronTrigger(**fields)`` does, or None when no
    line can say it: seconds, years or ISO weeks, or days that APScheduler ANDs (its day and
    day_of_week fields both restricted) where cron would OR them."""
    items = _aps_items(fields)
    if not all(_aps_item_ok(name, item) for name, its in items.items() for item in its):
        return None
    second = _crontab_values(",".join(items["second"]), _CRONTAB_FIELDS[0])
    if items["year"] != ["*"] or items["week"] != ["*"] or second != {0}:
        return None
    days = _aps_days(items["day"], items["day_of_week"])
    if days is None:
        return None
    month = ",".join(_aps_month(item) for item in items["month"])
    line = " ".join([",".join(items["minute"]), ",".join(items["hour"]), days[0], month, days[1]])
    return None if crontab_problems(line) else line   # 31 February: APScheduler's to report


def _aps_field_problem(name: str, value) -> Optional[str]:
    """Whether APScheduler reads a field the way it is written: its parser takes a valid prefix
    and drops the rest ('jan-dec/3' runs monthly, 'may-7' in May), so check the grammar first."""
    items = [item.lower() for item in re.split(" *, *", str(value).strip())]
    try:
        if not all(_aps_item_ok(name, item) for item in items):
            raise ValueError(value)
        CronTrigger(**{name: value}, timezone=dt.UTC)   # ranges and steps
    except ValueError:
        return (f"{value!r} is not a valid {name.replace('_', ' ')} field "
                f"({_CRON_RANGES[name]}, '*', '*/N', 'a-b', 'a-b/N', lists 'a,b')")
    return None


def _aps_items(fields: dict) -> dict[str, list[str]]:
    """Every field's items as APScheduler fills the fields in: '*' above the largest field given,
    its default (the minimum) below the smallest."""
    names = CronTrigger.FIELD_NAMES
    smallest = max(names.index(name) for name in fields)
    items = {}
    for index, name in enumerate(names):
        value = fields.get(name)
        if value is None:
            value = DEFAULT_VALUES[name] if index > smallest else "*"
        items[name] = [item.lower() for item in re.split(" *, *", str(value).strip())]
    return items


def _aps_item_ok(name: str, item: str) -> bool:
    if _APS_NUMBERS.fullmatch(item):
        return True
    names = _APS_NAMES.fullmatch(item) if name in _APS_FIELD_NAMES else None
    if names:
        return all(n is None or n in _APS_FIELD_NAMES[name] for n in names.groups())
    position = _APS_POSITION.fullmatch(item) if name == "day" else None
    return item == "last" if position is None else position[2] in _APS_WEEKDAYS.names


def _aps_month(item: str) -> str:
    names = _APS_NAMES.fullmatch(item)
    if not names:
        return item
    return "-".join(str(_CRONTAB_FIELDS[3].names.index(n) + 1) for n in names.groups() if n)


def _aps_days(day: list[str], day_of_week: list[str]) -> Optional[tuple[str, str]]:
    """Cron's day-of-month and day-of-week for APScheduler's day and day_of_week, or None. The
    two fields must both match in APScheduler; in cron only when one of them starts with '*',
    otherwise either does. APScheduler's weekday positions become cron's N#K and NL."""
    positions = [item for item in day if _APS_POSITION.fullmatch(item)]
    numbers = [item for item in day if item not in positions]
    weekdays = _crontab_values(",".join(day_of_week), _APS_WEEKDAYS)
    dow = "*" if len(weekdays) == 7 else ",".join(str(d) for d in sorted(
        (w + 1) % 7 for w in weekdays))   # APScheduler counts from Monday = 0, cron Sunday = 0
    dom = ",".join("L" if item == "last" else item for item in numbers)
    if "last" not in numbers and numbers and \
            _crontab_values(dom, _CRONTAB_FIELDS[2]) == set(range(1, 32)):
        dom = "*"
    if positions:
        if dow != "*" or dom.startswith("*"):
            return None
        return dom or "*", ",".join(map(_aps_position, positions))
    if dom == "*" or dow == "*" or dom.startswith("*"):
        return dom, dow
    return None


def _aps_position(item: str) -> str:
    order, weekday = _APS_POSITION.fullmatch(item).groups()
    day = (_APS_WEEKDAYS.names.index(weekday) + 1) % 7
    return f"{day}L" if order == "last" else f"{day}#{order[0]}"


def _zone(name: str):
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"timezone: {name!r} is not a known IANA time zone "
                         f"(e.g. 'UTC', 'Europe/Berlin')") from None


def trigger_text(spec) -> str:
    """A short human description of a trigger spec."""
    if isinstance(spec, ManualSpec):
        return "manual: runs only when started"
    zone = f" ({spec.timezone})" if spec.timezone else ""
    if isinstance(spec, IntervalSpec):
        return f"every {_duration_text(_interval_seconds(spec))}{zone}"
    if isinstance(spec, DateSpec):
        return f"once at {spec.run_date}{zone}"
    if spec.expression is not None:
        return f"cron {spec.expression}{zone}"
    return "cron " + " ".join(f"{f}={getattr(spec, f)}" for f in _CRON_FIELDS
                              if getattr(spec, f) is not None) + zone


def _duration_text(seconds: float) -> str:
    parts, rest = [], seconds
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if rest >= size:
            parts.append(f"{int(rest // size)}{unit}")
            rest %= size
    if rest or not parts:
        parts.append(f"{rest:g}s")
    return " ".join(parts)


# Dict shapes of the API and the GUI

def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _naive_utc(value: Optional[dt.datetime]) -> Optional[dt.datetime]:
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(dt.UTC).replace(tzinfo=None)


def _iso(value: Optional[dt.datetime]) -> Optional[str]:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat()


def _aware(value) -> Optional[dt.datetime]:
    """A stored time (naive UTC, or ISO text in a live run) as an aware UTC datetime."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value is None or value.tzinfo is None:
        return value and value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def run_to_dict(row: Any, output: bool = False) -> dict:
    """A run row (or live run dict) in the API's Run shape."""
    get = row.get if isinstance(row, dict) else row._mapping.get
    started, finished = get("started_at"), get("finished_at")
    out = {
        "id": get("id"), "job_id": get("job_id"), "status": get("status"),
        "trigger": get("trigger"), "attempt": get("attempt") or 1,
        "scheduled_at": _iso(get("scheduled_at")), "started_at": _iso(started),
        "finished_at": _iso(finished),
        "duration_s": round((finished - started).total_seconds(), 3)
        if started and finished else None,
        "exit_code": get("exit_code"), "error": get("error"), "truncated": bool(get("truncated")),
        "node": get("node"), "run_on": [x for x in (get("run_on") or "").split(",") if x],
        "rerun_of": get("rerun_of"),
    }
    if get("status") == "queued":
        out["due_at"] = _iso(get("due_at"))
    if output:
        out["stdout"], out["stderr"] = get("stdout") or "", get("stderr") or ""
        out["params"] = json.loads(get("params") or "null")
    return out


class Page(list):
    """A list of results with the ``total`` count of all matches (before limit/offset);
    ``capped``: there are more than ``total`` (counting stopped, see ``TOTAL_CAP``)."""

    total: int = 0
    capped: bool = False


# --------------------------------------------------------------------------------------------
# Store: tables, migrations, every SQL statement, APScheduler's job table, the history writer
# --------------------------------------------------------------------------------------------

_metadata = sa.MetaData()
ts_meta = sa.Table(
    "ts_meta", _metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
ts_jobs = sa.Table(
    "ts_jobs", _metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("source", sa.String(8), nullable=False),
    sa.Column("definition", sa.Text, nullable=False),
    sa.Column("definition_hash", sa.String(64), nullable=False),
    sa.Column("paused", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)
ts_runs = sa.Table(
    "ts_runs", _metadata,
    sa.Column("id", sa.String(32), primary_key=True),   # time-ordered: newest sorts last
    sa.Column("job_id", sa.String(64), nullable=False),
    sa.Column("trigger", sa.String(16), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False, default=1),
    sa.Column("scheduled_at", sa.DateTime, nullable=False),
    sa.Column("started_at", sa.DateTime),
    sa.Column("finished_at", sa.DateTime),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("exit_code", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("stdout", sa.Text),
    sa.Column("stderr", sa.Text),
    sa.Column("truncated", sa.Boolean, nullable=False, default=False),
    sa.Column("node", sa.String(255)),
    sa.Column("due_at", sa.DateTime),                   # a queued run starts from then on
    sa.Column("heartbeat_at", sa.DateTime),             # its node still runs it
    sa.Column("epoch", sa.Integer),                     # the lease epoch that recorded the fire
    sa.Column("run_on", sa.String(255), nullable=False, default=""),   # labels a node needs
    sa.Column("params", sa.Text),                       # this run's own args/kwargs/env (JSON)
    sa.Column("rerun_of", sa.String(32)),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False),
    sa.Column("pid", sa.Integer),   # a command's process group: found again after a crash
    sa.UniqueConstraint("job_id", "scheduled_at", "trigger", "attempt", name="uq_ts_runs_fire"),
    sa.Index("ix_ts_runs_job_id", "job_id", "id"),
    # "runs since T" by status (the 24 h counts, retention by age) from the index alone
    sa.Index("ix_ts_runs_since", "scheduled_at", "status"),
    sa.Index("ix_ts_runs_status", "status"),
)
# The queue: only queued rows are in it, however long the history grows.
ix_ts_runs_queue = sa.Index("ix_ts_runs_queue", ts_runs.c.due_at, ts_runs.c.id,
                            postgresql_where=ts_runs.c.status == "queued",
                            sqlite_where=ts_runs.c.status == "queued")
ts_nodes = sa.Table(
    "ts_nodes", _metadata,
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("version", sa.String(32), nullable=False),
    sa.Column("labels", sa.Text, nullable=False, default=""),
    sa.Column("started_at", sa.DateTime, nullable=False),
    sa.Column("heartbeat_at", sa.DateTime, nullable=False),
    sa.Column("role", sa.String(16), nullable=False, default="follower"),
    sa.Column("config_hash", sa.String(64)),
    sa.Column("running", sa.Integer, nullable=False, default=0),
    sa.Column("schema_version", sa.Integer),   # the schema its code knows (NULL: older code)
)
ts_lease = sa.Table(
    "ts_lease", _metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("holder", sa.String(255)),
    sa.Column("epoch", sa.Integer, nullable=False, default=0),
    sa.Column("expires_at", sa.DateTime),
    sa.Column("acquired_at", sa.DateTime),
)
ts_notifications = sa.Table(
    "ts_notifications", _metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("run_id", sa.String(32), nullable=False),
    sa.Column("job_id", sa.String(64), nullable=False),
    sa.Column("event", sa.String(16), nullable=False),
    sa.Column("target", sa.Text, nullable=False),     # as defined: secrets stay in the database
    sa.Column("payload", sa.Text, nullable=False),    # what is sent, fixed when the run ended
    sa.Column("status", sa.String(8), nullable=False),   # pending, sent, failed
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_at", sa.DateTime, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("log", sa.Text, nullable=False, default="[]"),   # each attempt: at, ok, detail
    sa.Index("ix_ts_notifications_run", "run_id"),
    sa.Index("ix_ts_notifications_due", "status", "next_at"),
)
ts_sessions = sa.Table(
    "ts_sessions", _metadata,
    sa.Column("id", sa.String(64), primary_key=True),   # sha256 of the secret in the cookie
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("expires_at", sa.DateTime, nullable=False),
    sa.Column("revoked_at", sa.DateTime),
)
APS_TABLE = "ts_apscheduler_jobs"
TOTAL_CAP = 1_000     # runs counted past the offset: exact for a job's history (keep_runs 1000)
PRUNE_CHUNK = 200     # runs in retention's first chunk; later ones are sized by time:
PRUNE_CHUNK_S = 0.003  # seconds a chunk holds the write lock: what a fire may wait for it
RUN_SPAN_COLUMNS = ("id", "job_id", "trigger", "status", "scheduled_at", "started_at",
                    "finished_at")   # what the dashboard's timeline draws of a run
_SUMMARY_COLUMNS = [c for c in ts_runs.c if c.name not in ("stdout", "stderr", "params")]
# Runs that count against max_instances: running, or claimed by a node and waiting for one of
# its workers (they read ``queued`` until their code runs, but they will run). Counted per job
# at every claim: an index of just these rows keeps that from reading the whole queue.
_TAKEN = sa.or_(ts_runs.c.status == "running",
                sa.and_(ts_runs.c.status == "queued", ts_runs.c.node.is_not(None)))
ix_ts_runs_taken = sa.Index("ix_ts_runs_taken", ts_runs.c.job_id, postgresql_where=_TAKEN,
                            sqlite_where=_TAKEN)
LEASE = "leader"


def new_run_id(offset: float = 0.0) -> str:
    """Sortable by creation time (microseconds, hex) with random bits against collisions (not
    secret: ``random``, as ``secrets`` would read the OS for each fire). ``offset``: seconds
    from this machine's clock to the database's (``Cluster.offset``): ids made on nodes whose
    clocks differ still sort in the database's order."""
    micros = time.time_ns() // 1000 + int(offset * 1_000_000)
    return f"{micros:014x}{random.getrandbits(24):06x}"


def create_engine(url: str, busy_timeout: float = 30.0) -> sa.Engine:
    """An engine tuned for us: SQLite in WAL mode with a private file; PostgreSQL with pre-ping,
    UTC sessions, and time limits so that a stalled peer never holds a lock for long."""
    if url.startswith("sqlite"):
        _make_private_sqlite(url)
        engine = sa.create_engine(url, connect_args={"timeout": busy_timeout})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    connect_args = {}
    if "postgresql" in url:
        parsed = sa.make_url(url)
        given = parsed.query.get("options", "")   # e.g. -csearch_path=... : kept, ours added
        url = parsed.difference_update_query(["options"])
        # A leader stopped inside a transaction (SIGSTOP) would hold its lease row's lock, and
        # a takeover waits for it: the server ends such a transaction after 4 s, before the
        # lease (5 s) runs out, so failover is not stretched. Dead peers: keepalives.
        connect_args = {"application_name": "task-scheduler", "connect_timeout": 10,
                        "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
                        "keepalives_count": 3,
                        # a statement whose packets go unanswered (a silent partition) fails
                        # after 20 s instead of TCP's ~15 min: the node's loops go on
                        "tcp_user_timeout": 20000,
                        "options": f"{given} -c timezone=UTC "
                                   f"-c idle_in_transaction_session_timeout=4000 "
                                   f"-c lock_timeout=10000".strip()}
    return sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10,
                            connect_args=connect_args)


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_path(url: str) -> Optional[str]:
    if not url.startswith("sqlite"):
        return None
    path = sa.make_url(url).database
    return None if not path or path == ":memory:" or path.startswith("file:") else path


def _make_private_sqlite(url: str) -> None:
    """The job store holds pickles: the file is created 0600 (SQLite gives -wal/-shm the same)."""
    path = _sqlite_path(url)
    if path is None:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    os.chmod(path, 0o600)


def migrate(engine: sa.Engine) -> int:
    """Create or upgrade our tables; refuse a schema newer than this code. Returns the version.
    Nodes starting together on PostgreSQL take turns (an advisory lock)."""
    with engine.begin() as conn:
        _take_turns(conn)
        _metadata.create_all(conn)
        row = conn.execute(sa.select(ts_meta.c.value).where(ts_meta.c.key == "schema_version"))
        version = int(row.scalar() or 0)
        if version > SCHEMA_VERSION:
            raise SchedulerError(f"the database has schema version {version}, newer than this "
                                 f"task-scheduler {__version__} knows ({SCHEMA_VERSION}): a "
                                 f"newer release has upgraded it. Upgrade task-scheduler on "
                                 f"this node to that release (docs/cluster.md, rolling "
                                 f"upgrades); this node does not start meanwhile")
        for step in range(version + 1, SCHEMA_VERSION + 1) if version else ():
            _MIGRATIONS[step](conn)
        if version == 0:
            conn.execute(ts_meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
        elif version < SCHEMA_VERSION:
            conn.execute(ts_meta.update().where(ts_meta.c.key == "schema_version")
                         .values(value=str(SCHEMA_VERSION)))
        for index in ts_runs.indexes:   # those added since a database was created, too
            index.create(conn, checkfirst=True)
        if "ix_ts_runs_scheduled_at" in {i["name"] for i in sa.inspect(conn).get_indexes(
                "ts_runs")}:   # became ix_ts_runs_since
            conn.execute(sa.text("DROP INDEX ix_ts_runs_scheduled_at"))
        _add_missing_column(conn, APS_TABLE, sa.Column("ts_hash", sa.String(80)))
        # Additive, nullable, no version step: nodes of the previous release leave them alone.
        _add_missing_column(conn, "ts_runs", sa.Column("pid", sa.Integer))
        _add_missing_column(conn, "ts_nodes", sa.Column("schema_version", sa.Integer))
        if conn.execute(sa.select(ts_lease.c.name).where(ts_lease.c.name == LEASE)).first() \
                is None:
            conn.execute(ts_lease.insert().values(name=LEASE, epoch=0))
    return SCHEMA_VERSION


def _take_turns(conn) -> None:
    """Nodes creating tables on one PostgreSQL wait for each other (till this commits)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(0x7453_6368_6564)))


def _migrate_to_2(conn) -> None:
    """Runs become a queue that several nodes share (due_at, heartbeat, epoch, placement, a
    cancel request), runs may carry their own parameters, and attempts count from 1."""
    for name in ("due_at", "heartbeat_at", "epoch", "run_on", "params", "rerun_of",
                 "cancel_requested"):
        _add_missing_column(conn, "ts_runs", ts_runs.c[name].copy())
    conn.execute(ts_runs.update().where(ts_runs.c.due_at.is_(None))
                 .values(due_at=ts_runs.c.scheduled_at))
    # Two steps keep (job, time, trigger, attempt) unique all along: PostgreSQL checks each row.
    conn.execute(ts_runs.update().values(attempt=-(ts_runs.c.attempt + 1)))
    conn.execute(ts_runs.update().values(attempt=-ts_runs.c.attempt))


def _add_missing_column(conn, table: str, column: sa.Column) -> None:
    inspector = sa.inspect(conn)
    if not inspector.has_table(table) or column.name in {
            c["name"] for c in inspector.get_columns(table)}:
        return
    ddl = f"ALTER TABLE {table} ADD COLUMN {column.name} {column.type.compile(conn.dialect)}"
    if not column.nullable:
        default = column.default.arg if column.default is not None else ""
        ddl += f" NOT NULL DEFAULT {_sql_literal(conn, default)}"
    conn.execute(sa.text(ddl))


def _sql_literal(conn, value: Any) -> str:
    if isinstance(value, bool):
        return ("true" if value else "false") if conn.dialect.name == "postgresql" \
            else str(int(value))
    return "'" + str(value).replace("'", "''") + "'"


_MIGRATIONS = {2: _migrate_to_2}


class NotLeader(SchedulerError):
    """A write for the leader was refused: another node holds the lease now (fencing)."""


class Store:
    """Every SQL statement of the service, each operation one ``engine.begin()`` with a domain
    answer (the shape of APScheduler's SQLAlchemyJobStore): callers say what they want done.

    On PostgreSQL, times that nodes compare (leases, heartbeats, queues) come from the database
    clock; changes are announced with NOTIFY. SQLite has one node: its clock is this machine's,
    and its writers take turns on a lock before they begin (never inside a transaction)."""

    def __init__(self, engine: sa.Engine, node: str):
        self.engine, self.node = engine, node
        self.postgres = engine.dialect.name == "postgresql"
        self._write_lock = None if self.postgres else threading.Lock()
        self.on_commit: list = []   # (channel, payload) after each commit: this process's bus
        self.waiting: collections.deque = collections.deque()   # one item per writer waiting

    @contextlib.contextmanager
    def write(self):
        """One write transaction; ``notify(conn, ...)`` inside it announces after commit."""
        self.waiting.append(None)   # retention gives way while writers wait (_give_way)
        with self._write_lock or contextlib.nullcontext():
            self.waiting.pop()      # deque append/pop are atomic: a count without a lock
            with self.engine.begin() as conn:
                conn.info["ts.notes"] = []
                yield conn
                notes = conn.info.pop("ts.notes")
        for channel, payload in notes:
            for callback in self.on_commit:
                callback(channel, payload)

    def notify(self, conn, channel: str, ids: Optional[list] = None) -> None:
        payload = {"node": self.node, "ids": ids if ids is None or len(ids) < 200 else None}
        conn.info["ts.notes"].append((channel, payload))
        if self.postgres:
            conn.execute(sa.select(sa.func.pg_notify(self.channel_prefix + channel,
                                                     json.dumps(payload))))

    @functools.cached_property
    def channel_prefix(self) -> str:
        """NOTIFY channels belong to the whole database: nodes using another schema of it
        (another installation, a test) must not hear this one."""
        if not self.postgres:
            return ""
        with self.engine.connect() as conn:
            schema = conn.execute(sa.text("SELECT current_schema()")).scalar()
        return "" if schema in (None, "public") else f"{schema}_"

    def now(self, conn=None):
        """The database clock, naive UTC, as a SQL expression (a value on SQLite)."""
        if self.postgres:
            return sa.func.timezone("UTC", sa.func.now())
        return _utcnow()

    def _ago(self, seconds: float):
        if self.postgres:
            return sa.func.timezone("UTC", sa.func.now() - sa.func.make_interval(
                0, 0, 0, 0, 0, 0, sa.literal(float(seconds), sa.Float)))
        return _utcnow() - dt.timedelta(seconds=seconds)

    def db_time(self) -> dt.datetime:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(self.now())).scalar() if self.postgres else _utcnow()

    # meta

    def get_meta(self, key: str) -> Optional[str]:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(ts_meta.c.value).where(ts_meta.c.key == key)).scalar()

    def set_meta(self, key: str, value: str) -> None:
        with self.write() as conn:
            if conn.execute(ts_meta.update().where(ts_meta.c.key == key)
                            .values(value=value)).rowcount == 0:
                conn.execute(ts_meta.insert().values(key=key, value=value))

    # job definitions

    def job_rows(self, ids: Optional[list] = None) -> list:
        query = sa.select(ts_jobs)
        if ids is not None:
            query = query.where(ts_jobs.c.id.in_(ids))
        with self.engine.connect() as conn:
            return conn.execute(query).all()

    def job_signatures(self) -> dict:
        """{id: (definition_hash, paused)}: enough to see which jobs changed elsewhere."""
        with self.engine.connect() as conn:
            return {r.id: (r.definition_hash, r.paused) for r in conn.execute(
                sa.select(ts_jobs.c.id, ts_jobs.c.definition_hash, ts_jobs.c.paused))}

    def write_jobs(self, upserts: list[dict], deletes: list[str]) -> None:
        """Insert or update job rows (by id, in id order) and delete others, in one transaction;
        JobConflict if an inserted id appeared meanwhile (another node)."""
        if not upserts and not deletes:
            return
        try:
            new, alike = [], {}   # one statement per kind of change, not one per job
            for values in sorted(upserts, key=lambda v: v["id"]):
                if values.pop("_new"):
                    new.append(values)
                else:
                    alike.setdefault(tuple(sorted(values)), []).append(
                        {**values, "_id": values["id"]})
            with self.write() as conn:
                for names, rows in alike.items():
                    conn.execute(ts_jobs.update().where(ts_jobs.c.id == sa.bindparam("_id"))
                                 .values({n: sa.bindparam(n) for n in names if n != "id"}),
                                 rows)
                if new:
                    conn.execute(ts_jobs.insert(), new)
                if deletes:
                    conn.execute(ts_jobs.delete().where(ts_jobs.c.id.in_(deletes)))
                self.notify(conn, "ts_jobs", sorted({v["id"] for v in upserts} | set(deletes)))
        except sa.exc.IntegrityError as exc:
            raise JobConflict(f"a job with that id was just created elsewhere: {_clean(exc)}") \
                from None

    def set_paused(self, job_id: str, paused: bool) -> bool:
        with self.write() as conn:
            changed = conn.execute(ts_jobs.update().where(ts_jobs.c.id == job_id)
                                   .values(paused=paused, updated_at=_utcnow())).rowcount
            self.notify(conn, "ts_jobs", [job_id])
        return bool(changed)

    def next_run_times(self, ids: Optional[list] = None) -> dict:
        """{id: next fire (UTC timestamp)} from APScheduler's table, as the leader left it."""
        table = sa.table(APS_TABLE, sa.column("id"), sa.column("next_run_time"))
        query = sa.select(table.c.id, table.c.next_run_time)
        if ids is not None and len(ids) < 500:   # a page; a full scan beats a huge IN list
            query = query.where(table.c.id.in_(ids))
        with self.engine.connect() as conn:
            return {i: t for i, t in conn.execute(query) if t is not None}

    # runs: the queue

    def insert_runs(self, conn, rows: list[dict]) -> list[str]:
        """Insert runs; a row whose fire key (job, time, trigger, attempt) exists is left out.
        Returns the ids inserted."""
        if not rows:
            return []
        values = [_run_row(r) for r in rows]
        if self.postgres:   # one statement text whatever the count: see _INSERT_RUNS_PG
            columns = {c.name: [v[c.name] for v in values] for c in ts_runs.c}
            return list(conn.execute(_INSERT_RUNS_PG, columns).scalars())
        statement = sa.dialects.sqlite.insert(ts_runs).on_conflict_do_nothing() \
            .returning(ts_runs.c.id)
        return [r.id for r in conn.execute(statement, values)] if len(values) > 1 else \
            list(conn.execute(statement.values(**values[0])).scalars())

    def fired(self, conn, keys: list[tuple]) -> set:
        """Which (job_id, scheduled_at) of ``keys`` already have a fire row (scheduled or
        catch-up, any status). The unique key tells the two triggers apart, so this is the check
        that a fire time is recorded once (ScheduleStore.commit asks it for schedules computed
        afresh, and for catch-ups). Each key is one lookup on uq_ts_runs_fire: a statement of
        many ORs took ~90 ms per 1,000 keys on SQLite and ~230 ms on PostgreSQL, planning it."""
        if not keys:
            return set()
        if self.postgres:
            return {tuple(row) for row in conn.execute(_FIRED_PG, {
                "job_ids": [k[0] for k in keys], "times": [k[1] for k in keys]})}
        to_db = ts_runs.c.scheduled_at.type.dialect_impl(conn.dialect).bind_processor(
            conn.dialect)   # the text SQLAlchemy stores a DateTime as
        cursor = conn.connection.cursor()   # this transaction's; sqlite3 caches the statement
        try:
            return {(job_id, at) for job_id, at in keys
                    if cursor.execute(_FIRED_SQLITE, (job_id, to_db(at))).fetchone()}
        finally:
            cursor.close()

    def queue_runs(self, rows: list[dict]) -> list[str]:
        """Queue runs (manual, retry) in one transaction and wake the workers of every node."""
        with self.write() as conn:
            ids = self.insert_runs(conn, rows)
            if any(r["status"] == "queued" for r in rows):
                self.notify(conn, "ts_runs")
        return ids

    def claim(self, labels_ok: list[str], limit: int, policy, notes_for=lambda runs: [],
              ended: frozenset = frozenset()) -> tuple[list, list]:
        """Take up to ``limit`` queued runs that are due and placeable here: they are claimed by
        this node (``node`` set; they stay ``queued`` until a worker starts them). Runs that
        may not start are ended in the same transaction: ``skipped`` while max_instances runs
        of the job go on (on any node: claimers of one job take turns on its row), ``missed``
        for a scheduled fire that waited past its grace, ``cancelled`` when the job is gone.
        ``policy(job_id)`` gives (max_instances, grace) or None. Returns (started rows, ended
        rows)."""
        with self.write() as conn:
            return self._claim(conn, labels_ok, limit, policy, notes_for, ended)

    def _claim(self, conn, labels_ok: list[str], limit: int, policy, notes_for,
               ended: frozenset) -> tuple[list, list]:
        now = conn.execute(sa.select(self.now())).scalar() if self.postgres else _utcnow()
        query = (sa.select(*_SUMMARY_COLUMNS, ts_runs.c.params)
                 .where(ts_runs.c.status == "queued", ts_runs.c.due_at <= now,
                        ts_runs.c.run_on.in_(labels_ok), ts_runs.c.node.is_(None))
                 .order_by(ts_runs.c.due_at, ts_runs.c.id).limit(limit))
        if self.postgres:
            query = query.with_for_update(skip_locked=True)
        rows = conn.execute(query).all()
        if not rows:
            return [], []
        running = self._running(conn, {r.job_id for r in rows}, ended)
        started, ended = _admit(rows, running, policy, now)
        if started:
            conn.execute(ts_runs.update().where(ts_runs.c.id.in_([r["id"] for r in started]))
                         .values(node=self.node, heartbeat_at=now))
        for run in ended:
            run["finished_at"] = now
        if ended:
            conn.execute(ts_runs.update().where(ts_runs.c.id == sa.bindparam("_id"))
                         .values(status=sa.bindparam("status"), finished_at=now,
                                 error=sa.bindparam("error")),
                         [{"_id": r["id"], "status": r["status"], "error": r["error"]}
                          for r in ended])
        self.insert_notes(conn, notes_for(ended))
        for run in started:
            run.update(node=self.node, heartbeat_at=now)
        return started, ended

    def start_fresh(self, conn, fires: list[dict], labels_ok: list[str], limit: int, policy,
                    ended: frozenset = frozenset()) -> list[dict]:
        """Of the leader's fires about to be inserted, the ones this node takes at once: they
        are inserted claimed by this node (still ``queued``), so no claim reads them back. A
        fire that may not start (max_instances) stays queued for a claim to decide. Returns
        the fires started."""
        fresh = [f for f in fires if f["status"] == "queued" and f["run_on"] in labels_ok]
        if not fresh or limit <= 0:
            return []
        running = self._running(conn, {f["job_id"] for f in fresh}, ended)
        now = conn.execute(sa.select(self.now())).scalar() if self.postgres else _utcnow()
        started = []
        for fire in fresh:
            limits = policy(fire["job_id"])
            if len(started) < limit and limits is not None and \
                    running[fire["job_id"]] < limits[0]:
                running[fire["job_id"]] += 1
                fire.update(node=self.node, heartbeat_at=now)
                started.append(fire)
        return started

    def _running(self, conn, job_ids: set, ended: frozenset) -> collections.Counter:
        """Running runs per job, any node, and runs a node claimed to start; ``ended``: ended
        here, their end not written yet. On PostgreSQL the jobs' rows are locked first:
        claimers of one job take turns."""
        job_ids = sorted(job_ids)
        if self.postgres:
            conn.execute(sa.select(ts_jobs.c.id).where(ts_jobs.c.id.in_(job_ids))
                         .order_by(ts_jobs.c.id).with_for_update())
        going = [_TAKEN, ts_runs.c.job_id.in_(job_ids)]
        if ended:
            going.append(ts_runs.c.id.not_in(ended))
        return collections.Counter(dict(conn.execute(
            sa.select(ts_runs.c.job_id, sa.func.count()).where(*going)
            .group_by(ts_runs.c.job_id)).all()))

    def finish_runs(self, conn, updates: list, notes: Optional[dict] = None) -> None:
        """Starts, final states and output of this node's runs, and their notifications; a run
        no longer running or claimed here is left alone (it was rescued while this node was
        silent). In id order, as the heartbeat locks them."""
        notes = notes or {}
        alike: dict[tuple, list] = {}   # one executemany per set of fields changed
        for run_id, fields in sorted(updates, key=lambda u: u[0]):
            if notes.get(run_id):   # the notes go only with a run still running
                if conn.execute(ts_runs.update().where(ts_runs.c.id == run_id, *self._mine())
                                .values(**fields)).rowcount:
                    self.insert_notes(conn, notes[run_id])
            else:
                alike.setdefault(tuple(sorted(fields)), []).append({**fields, "_id": run_id})
        for names, rows in alike.items():
            conn.execute(ts_runs.update().where(ts_runs.c.id == sa.bindparam("_id"),
                                                *self._mine())
                         .values({n: sa.bindparam(n) for n in names}), rows)

    def _mine(self) -> tuple:
        """The runs this node runs or has claimed: the only rows its run writes may change.
        (No IN: an expanding parameter cannot go into the writer's executemany.)"""
        return (sa.or_(ts_runs.c.status == "running", ts_runs.c.status == "queued"),
                ts_runs.c.node == self.node)

    # notifications: queued with the end of a run, sent by the leader

    def insert_notes(self, conn, notes: list[dict]) -> None:
        if notes:
            conn.execute(ts_notifications.insert(), notes)
            self.notify(conn, "ts_notes")

    def queue_notes(self, notes: list[dict]) -> None:
        if notes:
            with self.write() as conn:
                self.insert_notes(conn, notes)

    def take_notes(self, limit: int, hold: float) -> list:
        """Due notifications, held for ``hold`` seconds (a sender that dies mid-send leaves
        them due again then)."""
        with self.write() as conn:
            now = conn.execute(sa.select(self.now())).scalar() if self.postgres else _utcnow()
            query = (sa.select(ts_notifications).where(ts_notifications.c.status == "pending",
                                                       ts_notifications.c.next_at <= now)
                     .order_by(ts_notifications.c.next_at).limit(limit))
            if self.postgres:
                query = query.with_for_update(skip_locked=True)
            rows = conn.execute(query).all()
            if rows:
                conn.execute(ts_notifications.update().where(
                    ts_notifications.c.id.in_([r.id for r in rows]))
                    .values(next_at=now + dt.timedelta(seconds=hold)))
        return rows

    def record_note(self, note_id: str, **values: Any) -> None:
        with self.write() as conn:
            conn.execute(ts_notifications.update().where(ts_notifications.c.id == note_id)
                         .values(**values))

    def notes_of(self, run_id: str) -> list:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(ts_notifications).where(
                ts_notifications.c.run_id == run_id).order_by(ts_notifications.c.id)).all()

    def previous_outcome(self, job_id: str, before: str) -> Optional[tuple]:
        """(id, status) of the job's last run before ``before`` that ended (for 'recovered')."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(ts_runs.c.id, ts_runs.c.status).where(
                ts_runs.c.job_id == job_id, ts_runs.c.id < before,
                ts_runs.c.status.in_(ENDED_STATUSES))
                .order_by(ts_runs.c.id.desc()).limit(1)).first()

    def cancel_queued(self, run_id: str) -> bool:
        with self.write() as conn:
            return bool(conn.execute(ts_runs.update().where(   # not claimed by a node yet
                ts_runs.c.id == run_id, ts_runs.c.status == "queued",
                ts_runs.c.node.is_(None)).values(
                status="cancelled", finished_at=_utcnow(),
                error="cancelled before it started")).rowcount)

    def request_cancel(self, run_id: str) -> bool:
        """Ask the node running (or holding) ``run_id`` to cancel it (it looks at each
        heartbeat)."""
        with self.write() as conn:
            return bool(conn.execute(ts_runs.update().where(ts_runs.c.id == run_id, _TAKEN)
                .values(cancel_requested=True)).rowcount)

    def heartbeat_runs(self) -> tuple[set, set]:
        """Mark this node's running runs alive. Returns (ids still running here, ids whose
        cancel was asked for). The rows are locked in id order first: the history writer ends
        a batch of them in that order, and one UPDATE would lock them in scan order (deadlock)."""
        with self.write() as conn:
            self._bounded(conn)
            ids = conn.execute(sa.select(ts_runs.c.id).where(*self._mine())
                .order_by(ts_runs.c.id).with_for_update()).scalars().all()
            rows = conn.execute(ts_runs.update().where(
                ts_runs.c.id.in_(ids), *self._mine())
                .values(heartbeat_at=self.now())
                .returning(ts_runs.c.id, ts_runs.c.cancel_requested)).all()
        return {r.id for r in rows}, {r.id for r in rows if r.cancel_requested}

    def rescue(self, silent_for: float) -> list:
        """Runs whose node stopped heart-beating become ``interrupted``, naming the node; runs
        it had claimed but not started go back to the queue (nothing of them ran). Rows
        another transaction holds (a frozen node's history writer, say) are skipped, not
        waited for: they are looked at again next time."""
        with self.write() as conn:
            self._bounded(conn)
            claimed = conn.execute(sa.select(ts_runs.c.id).where(
                ts_runs.c.status == "queued", ts_runs.c.node.is_not(None),
                ts_runs.c.heartbeat_at < self._ago(silent_for))
                .order_by(ts_runs.c.id).with_for_update(skip_locked=True)).scalars().all()
            if claimed and conn.execute(ts_runs.update().where(
                    ts_runs.c.id.in_(claimed), ts_runs.c.status == "queued")
                    .values(node=None, heartbeat_at=None)).rowcount:
                self.notify(conn, "ts_runs")
            ids = conn.execute(sa.select(ts_runs.c.id).where(
                ts_runs.c.status == "running", ts_runs.c.heartbeat_at < self._ago(silent_for))
                .order_by(ts_runs.c.id).with_for_update(skip_locked=True)).scalars().all()
            if not ids:
                return []
            return conn.execute(ts_runs.update().where(
                ts_runs.c.id.in_(ids), ts_runs.c.status == "running")
                .values(status="interrupted", finished_at=self.now(),
                        error=sa.literal("interrupted: node ") + sa.func.coalesce(
                            ts_runs.c.node, "?") + sa.literal(
                            f" stopped heart-beating for over {silent_for:g}s (killed, or its "
                            f"machine is gone)"))
                .returning(*_SUMMARY_COLUMNS)).all()

    def sweep(self, node: Optional[str]) -> list:
        """At start-up: runs left ``running`` by this node's previous life (all runs on
        SQLite, where only one node exists) are interrupted, and those it had claimed but not
        started go back to the queue. Returns the interrupted ones."""
        where = [ts_runs.c.status == "running"]
        claimed = [ts_runs.c.status == "queued", ts_runs.c.node.is_not(None)]
        if node is not None:
            where.append(ts_runs.c.node == node)
            claimed.append(ts_runs.c.node == node)
        with self.write() as conn:
            conn.execute(ts_runs.update().where(*claimed).values(node=None, heartbeat_at=None))
            return conn.execute(ts_runs.update().where(*where).values(
                status="interrupted", finished_at=_utcnow(),
                error=f"interrupted: the service stopped without finishing this run (found at "
                      f"start-up on {self.node})").returning(*_SUMMARY_COLUMNS)).all()

    def runs_of_processes(self, run_ids: list) -> list:
        """(id, node, pid, job_id) of the runs with these ids: which processes found at
        start-up are runs of this database."""
        with self.engine.connect() as conn:
            return conn.execute(sa.select(ts_runs.c.id, ts_runs.c.node, ts_runs.c.pid,
                                          ts_runs.c.job_id)
                                .where(ts_runs.c.id.in_(run_ids[:1000]))).all()

    def add_to_error(self, run_id: str, text: str) -> None:
        with self.write() as conn:
            conn.execute(ts_runs.update().where(ts_runs.c.id == run_id).values(
                error=sa.func.coalesce(ts_runs.c.error, "") + text))

    def active_count(self, job_id: str, ended: frozenset = frozenset()) -> int:
        """Queued and running runs of a job; ``ended``: runs whose end is not written yet."""
        where = [ts_runs.c.job_id == job_id, ts_runs.c.status.in_(("queued", "running"))]
        if ended:
            where.append(ts_runs.c.id.not_in(ended))
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(ts_runs).where(*where)
                                ).scalar()

    # runs: reads

    def runs(self, job_id=None, status=None, since=None, limit=50, offset=0,
             trigger=None, before=None, after=None) -> Page:
        """Runs newest first. ``before``/``after`` are run ids (keyset cursors: ids sort by
        time), cheap at any depth where ``offset`` reads every row it skips. ``.total`` counts
        the matches (``before`` included, ``after`` not) up to ``offset + TOTAL_CAP``;
        ``.capped`` says there are more."""
        conds = []
        if job_id:
            conds.append(ts_runs.c.job_id == job_id)
        if status:
            conds.append(ts_runs.c.status.in_(status.split(",") if isinstance(status, str)
                                              else status))
        if trigger:
            conds.append(ts_runs.c.trigger == trigger)
        if since:
            conds.append(ts_runs.c.scheduled_at >= _naive_utc(since))
        if before:
            conds.append(ts_runs.c.id < before)
        query = sa.select(*_SUMMARY_COLUMNS).where(*conds, *(
            [ts_runs.c.id > after] if after else [])).limit(limit).offset(offset)
        cap = offset + TOTAL_CAP
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(ts_runs.c.id.asc() if after
                                               else ts_runs.c.id.desc())).all()
            total = conn.execute(sa.select(sa.func.count()).select_from(
                sa.select(ts_runs.c.id).where(*conds).limit(cap + 1).subquery())).scalar()
        page = Page(run_to_dict(r) for r in (reversed(rows) if after else rows))
        page.total, page.capped = min(total, cap), total > cap
        return page

    def run(self, run_id: str):
        with self.engine.connect() as conn:
            return conn.execute(sa.select(ts_runs).where(ts_runs.c.id == run_id)).first()

    def run_spans(self, since: dt.datetime, limit: int) -> list:
        """The newest ``limit`` (+1, to tell there are more) runs scheduled since ``since``, only
        what a timeline draws: no output, no counting, no conversion to the API's shape."""
        columns = [ts_runs.c[name] for name in RUN_SPAN_COLUMNS]
        with self.engine.connect() as conn:
            return conn.execute(sa.select(*columns).where(
                ts_runs.c.scheduled_at >= _naive_utc(since))
                .order_by(ts_runs.c.id.desc()).limit(limit + 1)).all()

    def run_counts(self, since: dt.datetime) -> dict:
        with self.engine.connect() as conn:
            # by an expression: grouping by the bare column, SQLite walks ix_ts_runs_status
            # (all of history, 30x slower at 1M runs) rather than sort one day's rows
            status = ts_runs.c.status + ""
            return dict(conn.execute(sa.select(status, sa.func.count())
                                     .where(ts_runs.c.scheduled_at >= since)
                                     .group_by(status)).all())

    def job_state(self, job_id: str) -> tuple:
        """(next fire as a UTC timestamp, newest run) of one job: two statements built once, on
        one connection (a GET of one job costs a millisecond less than with last_runs)."""
        with self.engine.connect() as conn:
            next_time = conn.execute(_NEXT_FIRE, {"id": job_id}).scalar()
            last = conn.execute(_NEWEST_RUN, {"id": job_id}).first()
        return next_time, run_to_dict(last) if last is not None else None

    def last_runs(self, job_ids: Optional[list] = None) -> dict:
        """{job_id: its newest run} for these jobs (all jobs when None)."""
        # one index probe per job (a max per job_id), not a scan of every job's history
        newest = sa.select(sa.select(sa.func.max(ts_runs.c.id)).where(
            ts_runs.c.job_id == ts_jobs.c.id).scalar_subquery())
        if job_ids is not None:
            newest = newest.where(ts_jobs.c.id.in_(job_ids))
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(*_SUMMARY_COLUMNS)
                                .where(ts_runs.c.id.in_(newest))).all()
        return {r.job_id: run_to_dict(r) for r in rows}

    def prune(self, keep_runs: int, keep_days: float, stopping=lambda: False) -> int:
        """Retention: finished runs older than keep_days, and all but keep_runs per job; GUI
        sessions past their expiry; nodes silent for a day. Runs go in chunks of a few ms, each
        its own transaction begun only when no other writer waits: fires wait one chunk at most.
        ``stopping()`` true ends it early (the service stops)."""
        cutoff = _utcnow() - dt.timedelta(days=keep_days)
        deleted = self._delete_runs([ts_runs.c.scheduled_at < cutoff], [ts_runs.c.scheduled_at],
                                    stopping)
        for job_id, edge in self._run_edges(keep_runs).items():
            deleted += self._delete_runs([ts_runs.c.job_id == job_id, ts_runs.c.id < edge],
                                         [ts_runs.c.id], stopping)
        with self.write() as conn:
            conn.execute(ts_sessions.delete().where(ts_sessions.c.expires_at < _utcnow()))
            conn.execute(ts_notifications.delete().where(
                ts_notifications.c.created_at < cutoff, ts_notifications.c.status != "pending"))
            conn.execute(ts_nodes.delete().where(ts_nodes.c.heartbeat_at < self._ago(86400)))
        if deleted:
            log.info("retention: pruned %d runs", deleted)
        return deleted

    def _run_edges(self, keep_runs: int) -> dict:
        """{job_id: id of its keep_runs-th newest run} for each job with more runs than that,
        all from the (job_id, id) index: the job ids by skipping through it (a GROUP BY would
        count every job's whole history), each edge by one probe that reads keep_runs entries."""
        job_id = ts_runs.c.job_id
        jobs = sa.select(sa.func.min(job_id).label("id")).cte("jobs", recursive=True)
        jobs = jobs.union_all(sa.select(sa.select(sa.func.min(job_id)).where(
            job_id > jobs.c.id).scalar_subquery()).where(jobs.c.id.is_not(None)))
        with self.engine.connect() as conn:   # reads: no lock held
            job_ids = conn.execute(sa.select(jobs.c.id).where(jobs.c.id.is_not(None))).scalars()
            edges = {job: conn.execute(sa.select(ts_runs.c.id).where(job_id == job).order_by(
                ts_runs.c.id.desc()).offset(keep_runs - 1).limit(1)).scalar() for job in job_ids}
        return {job: edge for job, edge in edges.items() if edge is not None}

    def _delete_runs(self, conds: list, order: list, stopping) -> int:
        """Delete the finished runs matching ``conds``: the ids of a chunk are read without the
        lock (by the index that ``order`` walks), then deleted by primary key; the chunk grows
        or shrinks so that the lock is held about PRUNE_CHUNK_S."""
        # by an expression: the status index would be walked instead of the one ``order`` uses
        final = (ts_runs.c.status + "").in_(FINAL_STATUSES)
        select = sa.select(ts_runs.c.id).where(*conds, final).order_by(*order)
        deleted, size = 0, PRUNE_CHUNK
        with self.engine.connect() as conn, self._checkpoints_outside_lock(conn):
            while not stopping():
                ids = conn.execute(select.limit(size)).scalars().all()
                conn.rollback()   # end the read: no snapshot kept while the others write
                if not ids:
                    break
                self._give_way()
                began = time.monotonic()
                with self._write_lock or contextlib.nullcontext(), conn.begin():
                    count = conn.execute(ts_runs.delete().where(ts_runs.c.id.in_(ids),
                                                                final)).rowcount
                took = time.monotonic() - began
                deleted += count
                if count == 0:   # deleted meanwhile (another node prunes): never loop forever
                    break
                if not self.postgres:
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
                size = max(1, min(5000, int(size * PRUNE_CHUNK_S / max(took, 1e-4))))
                # as long again without the lock or the GIL: firing's Python runs meanwhile
                time.sleep(max(took, 0.002))
        return deleted

    @contextlib.contextmanager
    def _checkpoints_outside_lock(self, conn):
        """SQLite copies the WAL into the database in the commit that makes it pass 1,000
        pages, under the write lock: a chunk's commit took up to 100 ms so, and fires waited.
        Retention's connection checkpoints after its chunk instead, without the lock; its
        pages are checkpointed before another writer's commit would have to."""
        if self.postgres:
            yield
            return
        conn.exec_driver_sql("PRAGMA wal_autocheckpoint=0")
        try:
            yield
        finally:
            conn.exec_driver_sql("PRAGMA wal_autocheckpoint=1000")   # SQLite's default

    def _give_way(self, limit: float = 1.0) -> None:
        """Wait (up to ``limit`` s) until no writer waits for the write lock: fires, claims and
        run ends go first, and a retention chunk starts in a gap between them."""
        until = time.monotonic() + limit
        while self.waiting and time.monotonic() < until:
            time.sleep(0.001)

    # nodes and the leader lease (PostgreSQL)

    def register_node(self, values: dict, silent_for: float) -> list:
        """Add this node; refuse when a live node (another process) already has its id.
        Returns the other live nodes: (id, version, schema_version)."""
        with self.write() as conn:
            row = conn.execute(sa.select(ts_nodes, (ts_nodes.c.heartbeat_at > self._ago(
                silent_for)).label("alive")).where(ts_nodes.c.id == self.node)
                .with_for_update()).first()
            if row is not None and row.alive and (row.host, row.pid) != (values["host"],
                                                                        values["pid"]) \
                    and not (row.host == values["host"] and not _pid_alive(row.pid)):
                raise SchedulerError(f"node id {self.node!r} is in use by a live node (pid "
                                     f"{row.pid} on {row.host}); give each node its own "
                                     f"--node-id (TS_NODE_ID)")
            conn.execute(ts_nodes.delete().where(ts_nodes.c.id == self.node))
            conn.execute(ts_nodes.insert().values(id=self.node, started_at=self.now(),
                                                  heartbeat_at=self.now(), **values))
            return [(r.id, r.version, r.schema_version) for r in conn.execute(
                sa.select(ts_nodes).where(ts_nodes.c.id != self.node,
                                          ts_nodes.c.heartbeat_at > self._ago(silent_for)))]

    def heartbeat_node(self, role: str, running: int, config_hash: Optional[str]) -> None:
        with self.write() as conn:
            self._bounded(conn)
            if not conn.execute(ts_nodes.update().where(ts_nodes.c.id == self.node).values(
                    heartbeat_at=self.now(), role=role, running=running,
                    config_hash=config_hash)).rowcount:
                log.warning("node %s: its row was gone (pruned while silent?); joining again",
                            self.node)

    def leave(self) -> None:
        with self.write() as conn:
            conn.execute(ts_nodes.delete().where(ts_nodes.c.id == self.node))

    def nodes(self) -> list:
        with self.engine.connect() as conn:
            now = conn.execute(sa.select(self.now())).scalar() if self.postgres else _utcnow()
            return [(r, (now - r.heartbeat_at).total_seconds()) for r in conn.execute(
                sa.select(ts_nodes).order_by(ts_nodes.c.id))]

    def lease(self):
        """(holder, epoch, seconds left) of the leader lease as the database sees it now."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(ts_lease.c.holder, ts_lease.c.epoch,
                                         ts_lease.c.expires_at, self.now().label("now"))
                               .where(ts_lease.c.name == LEASE)).first()
        if row is None or row.expires_at is None:
            return None, 0, 0.0
        return row.holder, row.epoch, (row.expires_at - row.now).total_seconds()

    def acquire_lease(self, ttl: float) -> tuple[Optional[int], dt.datetime]:
        """Take the lease when it is free or expired (each take is a new epoch); returns
        (epoch or None, database time)."""
        with self.write() as conn:
            self._bounded(conn)
            row = conn.execute(ts_lease.update().where(
                ts_lease.c.name == LEASE,
                sa.or_(ts_lease.c.holder.is_(None), ts_lease.c.expires_at < self.now()))
                .values(holder=self.node, epoch=ts_lease.c.epoch + 1,
                        expires_at=self.now() + sa.func.make_interval(
                            0, 0, 0, 0, 0, 0, sa.literal(float(ttl), sa.Float)),
                        acquired_at=self.now())
                .returning(ts_lease.c.epoch, self.now().label("now"))).first()
            if row is not None:
                self.notify(conn, "ts_lease")
        return (row.epoch, row.now) if row else (None, self.db_time())

    def renew_lease(self, epoch: int, ttl: float) -> Optional[dt.datetime]:
        """Extend the lease held with ``epoch``; the database time, or None when lost."""
        with self.write() as conn:
            self._bounded(conn)
            row = conn.execute(ts_lease.update().where(
                ts_lease.c.name == LEASE, ts_lease.c.holder == self.node,
                ts_lease.c.epoch == epoch, ts_lease.c.expires_at > self.now())
                .values(expires_at=self.now() + sa.func.make_interval(
                    0, 0, 0, 0, 0, 0, sa.literal(float(ttl), sa.Float)))
                .returning(self.now().label("now"))).first()
        return row.now if row else None

    def release_lease(self, epoch: int) -> None:
        """Hand the lease back at once (a graceful stop): the others take it without waiting."""
        with self.write() as conn:
            self._bounded(conn)
            if conn.execute(ts_lease.update().where(
                    ts_lease.c.name == LEASE, ts_lease.c.holder == self.node,
                    ts_lease.c.epoch == epoch).values(holder=None, expires_at=None)).rowcount:
                self.notify(conn, "ts_lease")

    def _bounded(self, conn) -> None:
        """Lease, heartbeat and rescue statements wait at most ``LIVENESS_LOCK_WAIT`` for a
        lock another node holds (a frozen node keeps its locks until the server ends its
        session): past it they fail, and the cluster loop tries again on its next tick."""
        if self.postgres:
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = {int(LIVENESS_LOCK_WAIT * 1000)}")

    def fence(self, conn, epoch: Optional[int]) -> None:
        """Inside a leader's write: prove the lease is still ours with ``epoch``. The row lock
        (FOR SHARE) makes a takeover wait for this transaction, or this one see the takeover."""
        if not self.postgres or epoch is None:
            return
        held = conn.execute(sa.select(ts_lease.c.epoch).where(
            ts_lease.c.name == LEASE, ts_lease.c.holder == self.node, ts_lease.c.epoch == epoch,
            ts_lease.c.expires_at > self.now()).with_for_update(read=True)).first()
        if held is None:
            raise NotLeader(f"node {self.node} no longer holds the lease of epoch {epoch}")

    # GUI sessions: kept here so that a logout holds on every node and across restarts

    def create_session(self, ttl: float) -> str:
        """A new session; returns the secret for the cookie (only its hash is stored)."""
        secret, now = secrets.token_urlsafe(32), _utcnow()
        with self.write() as conn:
            conn.execute(ts_sessions.insert().values(
                id=_secret_hash(secret), created_at=now,
                expires_at=now + dt.timedelta(seconds=ttl)))
        return secret

    def session_active(self, secret: str) -> bool:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(ts_sessions.c.expires_at, ts_sessions.c.revoked_at)
                               .where(ts_sessions.c.id == _secret_hash(secret))).first()
        return row is not None and row.revoked_at is None and row.expires_at > _utcnow()

    def revoke_session(self, secret: str) -> None:
        with self.write() as conn:
            conn.execute(ts_sessions.update().where(ts_sessions.c.id == _secret_hash(secret))
                         .values(revoked_at=_utcnow()))


def _admit(rows: list, running: collections.Counter, policy, now: dt.datetime) -> tuple:
    """Which claimed runs start, and which end (and why), in queue order."""
    started, ended = [], []
    for row in rows:
        run = dict(row._mapping)
        limits = policy(run["job_id"])
        late = (now - run["scheduled_at"]).total_seconds()
        if limits is None:
            ended.append({**run, "status": "cancelled", "error": "the job no longer exists"})
        elif run["trigger"] in ("schedule", "catchup") and limits[1] is not None \
                and late > limits[1]:
            ended.append({**run, "status": "missed", "error": f"waited {late:.1f}s for a "
                          f"worker (misfire_grace_time {limits[1]:g}s)"})
        elif running[run["job_id"]] >= limits[0]:
            ended.append({**run, "status": "skipped", "error": f"{running[run['job_id']]} "
                          f"run(s) still going (max_instances={limits[0]})"})
        else:
            running[run["job_id"]] += 1
            started.append(run)
    return started, ended


# Fires inserted on PostgreSQL as one array per column: the statement's text is the same for any
# number of rows, so psycopg and the server parse it once (a multi-row VALUES differs with each
# count, and parsing it was most of the leader's time at 2,000 fires/s).
_INSERT_RUNS_PG = sa.dialects.postgresql.insert(ts_runs).from_select(
    [c.name for c in ts_runs.c],
    sa.select(*[sa.func.unnest(sa.bindparam(c.name, type_=sa.ARRAY(c.type))).label(c.name)
                for c in ts_runs.c])).on_conflict_do_nothing().returning(ts_runs.c.id)


DONE_MARK = ":done"   # ts_hash's suffix for a schedule with no fire time left (finish_job)
_FIRED_SQLITE = ("SELECT 1 FROM ts_runs WHERE job_id = ? AND scheduled_at = ? "
                 "AND \"trigger\" IN ('schedule', 'catchup') LIMIT 1")
_fire_keys = sa.func.unnest(sa.bindparam("job_ids", type_=sa.ARRAY(sa.String)),
                            sa.bindparam("times", type_=sa.ARRAY(sa.DateTime))
                            ).table_valued("job_id", "scheduled_at").render_derived("k")
_FIRED_PG = sa.select(ts_runs.c.job_id, ts_runs.c.scheduled_at).select_from(_fire_keys.join(
    ts_runs, sa.and_(ts_runs.c.job_id == _fire_keys.c.job_id,
                     ts_runs.c.scheduled_at == _fire_keys.c.scheduled_at))).where(
    ts_runs.c.trigger.in_(("schedule", "catchup")))


_aps_jobs = sa.table(APS_TABLE, sa.column("id"), sa.column("next_run_time"))
_NEXT_FIRE = sa.select(_aps_jobs.c.next_run_time).where(_aps_jobs.c.id == sa.bindparam("id"))
_NEWEST_RUN = sa.select(*_SUMMARY_COLUMNS).where(ts_runs.c.job_id == sa.bindparam("id")) \
    .order_by(ts_runs.c.id.desc()).limit(1)


def _run_row(fields: dict) -> dict:
    row = {c.name: None for c in ts_runs.c}
    row.update(attempt=1, truncated=False, run_on="", cancel_requested=False)
    row.update(fields)
    if row["due_at"] is None:
        row["due_at"] = row["scheduled_at"]
    return row


def _secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ScheduleStore(SQLAlchemyJobStore):
    """APScheduler's SQLAlchemy job store, its table unchanged but for one column, with the
    schedule held in memory by the leader: reads never ask the database, and writes wait in
    memory until ``commit()`` writes them with the wakeup's fires in one transaction that
    proves the lease is still held (a deposed leader writes nothing). Only the scheduler
    thread changes it; ``hashes`` tells which definition each job was built from."""

    def __init__(self, store: Store):
        super().__init__(engine=store.engine, tablename=APS_TABLE, pickle_protocol=4)
        self.jobs_t.append_column(sa.Column("ts_hash", sa.String(80)))
        self.db = store
        self.epoch: Optional[int] = None   # the lease epoch while this node leads
        self.loaded = False
        self._stored: set = set()
        self.hashes: dict[str, Optional[str]] = {}
        self._times: dict[str, Optional[float]] = {}   # id -> next fire (UTC timestamp)
        self._due: list = []                            # sorted (timestamp, id), paused left out
        self._jobs: dict = {}                           # unpickled on first use
        self._pending: dict = {}                        # id -> job to write, or None: delete
        self._moved: dict = {}                          # id -> next fire only (no new pickle)
        self._recomputed: dict = {}                     # id -> when put (see _unrecorded)
        self.done: set = set()                          # ids with no fire time left: kept
        self.now: Optional[dt.datetime] = None          # the scheduler's clock, this wakeup

    def start(self, scheduler, alias):
        """APScheduler creates the table here without a lock: nodes starting together on a new
        database race to create it, and the loser exits. They take turns, as migrate() does."""
        super(SQLAlchemyJobStore, self).start(scheduler, alias)
        with self.engine.begin() as conn:
            _take_turns(conn)
            self.jobs_t.create(conn, checkfirst=True)

    def load(self) -> None:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(self.jobs_t.c.id, self.jobs_t.c.next_run_time,
                                          self.jobs_t.c.ts_hash)).all()
        self._times = {r.id: r.next_run_time for r in rows}
        self._stored = set(self._times)   # ids with a row in the table
        self.hashes = {r.id: (r.ts_hash or "").removesuffix(DONE_MARK) or None for r in rows}
        self.done = {r.id for r in rows if (r.ts_hash or "").endswith(DONE_MARK)}
        self._due = sorted((t, i) for i, t in self._times.items() if t is not None)
        self._jobs, self._pending, self._moved, self.loaded = {}, {}, {}, True
        self._recomputed = {}

    def invalidate(self) -> None:
        """Forget the memory: the next use reads the table again (after a failed commit)."""
        self.loaded = False

    def ids(self) -> list:
        self._ensure()
        return list(self._times)

    def preload(self, ids) -> None:
        """Unpickle these jobs with a query per 500, not one each (the first wakeup checks
        every job)."""
        self._ensure()
        self._fetch([i for i in ids if i in self._times])

    def stamp(self, job_id) -> tuple[bool, Optional[float]]:
        """(stored at all, next fire timestamp or None when paused), without unpickling."""
        self._ensure()
        return job_id in self._times, self._times.get(job_id)

    def lookup_job(self, job_id):
        self._ensure()
        return self._fetch([job_id]).get(job_id) if job_id in self._times else None

    def get_due_jobs(self, now):
        self._ensure()
        limit = datetime_to_utc_timestamp(now)
        ids = [i for _, i in self._due[:bisect.bisect_right(self._due, (limit, "\uffff"))]]
        jobs = self._fetch(ids)
        return [jobs[i] for i in ids if i in jobs]

    def get_next_run_time(self):
        self._ensure()
        return utc_timestamp_to_datetime(self._due[0][0]) if self._due else None

    def get_all_jobs(self):
        self._ensure()
        jobs = self._fetch(list(self._times))
        ordered = sorted(jobs.values(), key=lambda j: (self._times[j.id] is None,
                                                       self._times[j.id] or 0, j.id))
        return ordered

    def add_job(self, job):
        self._ensure()
        if job.id in self._times:
            raise ConflictingIdError(job.id)
        self._put(job)

    def update_job(self, job):
        self._ensure()
        if job.id not in self._times:
            raise JobLookupError(job.id)
        self._put(job)

    def remove_job(self, job_id):
        self._ensure()
        if job_id not in self._times:
            raise JobLookupError(job_id)
        self._unindex(job_id)
        del self._times[job_id]
        self._jobs.pop(job_id, None)
        self.hashes.pop(job_id, None)
        self.done.discard(job_id)
        self._pending[job_id] = None

    def move_job(self, job, next_run_time) -> None:
        """A fire moved the job on: only its next fire time changes, so only that column is
        written (pickling every fired job was most of a wakeup's cost)."""
        job._modify(next_run_time=next_run_time)
        self._unindex(job.id)
        stamp = self._times[job.id] = datetime_to_utc_timestamp(next_run_time)
        bisect.insort(self._due, (stamp, job.id))
        if job.id not in self._pending:
            self._moved[job.id] = stamp

    def finish_job(self, job) -> None:
        """A schedule with no fire time left (a date job after its fire) is kept, marked done
        and with no next fire time, not deleted: a restart or a takeover would add the job
        again and fire it once more (and its row may be pruned by then)."""
        job._modify(next_run_time=None)
        self.done.add(job.id)
        self._put(job)

    def remove_all_jobs(self):
        for job_id in self.ids():
            self.remove_job(job_id)

    def commit(self, fires: list[dict], notes: list[dict] = (), start=None) -> tuple:
        """Write the pending schedule changes, insert the fires (and the notifications of the
        missed ones), in one fenced transaction; ``start(conn, fires)`` marks the fires this
        node's workers take at once. Returns the ids of the runs inserted, and those started."""
        moved = [{"i": i, "t": t} for i, t in sorted(self._moved.items())
                 if i not in self._pending]
        if not self._pending and not moved and not fires:
            return [], []
        with self.db.write() as conn:
            fired = fires
            fires = self._unrecorded(conn, fires)
            self._write(conn)
            if moved:
                conn.execute(self.jobs_t.update().where(self.jobs_t.c.id == sa.bindparam("i"))
                             .values(next_run_time=sa.bindparam("t")), moved)
            started = start(conn, fires) if start is not None else []
            inserted = self.db.insert_runs(conn, fires)
            kept = set(inserted)
            self.db.insert_notes(conn, [n for n in notes if n["run_id"] in kept])
            if any(f["status"] == "queued" and f.get("node") is None for f in fires):
                self.db.notify(conn, "ts_runs")   # not for fires claimed here already
            # Last, so that the lease row is locked only for the commit itself: the renewal
            # waits for that lock, and a long first write (10,000 jobs) would let it lapse.
            self.db.fence(conn, self.epoch)
        self._pending.clear()
        self._moved.clear()
        for fire in fired:
            self._recomputed.pop(fire["job_id"], None)
        return inserted, [_run_row(f) for f in started if f["id"] in kept]

    def _unrecorded(self, conn, fires: list[dict]) -> list[dict]:
        """The fires whose time has no row yet. A stored schedule is moved past its fires in
        the transaction that records them, so only a schedule computed afresh from its trigger
        (a job added again on a restart or a takeover, rebuilt, resumed) can come back to a
        recorded time, and only to a time not after it was computed (every row was recorded
        by then): a date job's only fire time is its run_date, whenever it is added. Such a
        first fire is looked up; a recorded one is left out, never fired again. (A second of
        slack: a cron schedule computed within a second starts at that second.) Every catch-up
        is looked up too: it is due from before this node led, when another leader (or this
        node's previous life) may have recorded it; there are few, once per takeover or start."""
        keys = [(f["job_id"], f["scheduled_at"]) for f in fires
                if f["trigger"] == "catchup" or f["trigger"] == "schedule" and f[
                    "scheduled_at"].replace(tzinfo=dt.UTC).timestamp() <=
                self._recomputed.get(f["job_id"], -1) + 1]
        recorded = self.db.fired(conn, keys) if keys else set()
        if not recorded:
            return fires
        log.info("not fired again, already recorded: %s", ", ".join(
            f"{job_id} at {_iso(at)}" for job_id, at in sorted(recorded)[:20]) +
            (f" and {len(recorded) - 20} more" if len(recorded) > 20 else ""))
        return [f for f in fires if (f["job_id"], f["scheduled_at"]) not in recorded]

    def _write(self, conn) -> None:
        """The pending jobs in three statements (deleted, changed, new), not one per job: the
        first wakeup after loading 10,000 jobs writes them all, inside the fenced commit."""
        table, pending = self.jobs_t, sorted(self._pending.items())
        gone = [i for i, job in pending if job is None and i in self._stored]
        rows = [{"i": i, "next_run_time": datetime_to_utc_timestamp(job.next_run_time),
                 "job_state": pickle.dumps(job.__getstate__(), self.pickle_protocol),
                 "ts_hash": self._stored_hash(i)} for i, job in pending if job is not None]
        for start in range(0, len(gone), 500):
            conn.execute(table.delete().where(table.c.id.in_(gone[start:start + 500])))
        changed = [r for r in rows if r["i"] in self._stored]
        if changed:
            conn.execute(table.update().where(table.c.id == sa.bindparam("i")).values(
                {c: sa.bindparam(c) for c in ("next_run_time", "job_state", "ts_hash")}),
                changed)
        new = [{"id" if k == "i" else k: v for k, v in r.items()} for r in rows
               if r["i"] not in self._stored]
        if new:
            conn.execute(table.insert(), new)
        self._stored.difference_update(gone)
        self._stored.update(r["id"] for r in new)

    def _stored_hash(self, job_id: str) -> Optional[str]:
        built = self.hashes.get(job_id)
        return built + DONE_MARK if built is not None and job_id in self.done else built

    def _put(self, job) -> None:
        self._unindex(job.id)
        stamp = datetime_to_utc_timestamp(job.next_run_time)
        self._times[job.id] = stamp
        if stamp is not None:
            bisect.insort(self._due, (stamp, job.id))
        self._jobs[job.id] = job
        self._pending[job.id] = job
        self._moved.pop(job.id, None)
        self._recomputed[job.id] = self.now.timestamp() if self.now is not None else float("inf")

    def _unindex(self, job_id: str) -> None:
        stamp = self._times.get(job_id)
        if stamp is not None:
            index = bisect.bisect_left(self._due, (stamp, job_id))
            if index < len(self._due) and self._due[index] == (stamp, job_id):
                del self._due[index]

    def _ensure(self) -> None:
        if not self.loaded:
            self.load()

    def _fetch(self, ids: list) -> dict:
        """The jobs of ``ids``, unpickling the ones not in memory yet (one query). A job that
        cannot be restored is logged and left in the table (APScheduler would delete it)."""
        missing = [i for i in ids if i not in self._jobs]
        for start in range(0, len(missing), 500):
            chunk = missing[start:start + 500]
            with self.engine.connect() as conn:
                rows = conn.execute(sa.select(self.jobs_t.c.id, self.jobs_t.c.job_state)
                                    .where(self.jobs_t.c.id.in_(chunk))).all()
            for row in rows:
                try:
                    job = self._reconstitute_job(row.job_state)
                except Exception:
                    log.exception("schedule of job %s cannot be read; it does not fire", row.id)
                    continue
                # The column is the truth: a commit may have moved it without a new pickle.
                job.next_run_time = utc_timestamp_to_datetime(self._times.get(row.id)) \
                    if self._times.get(row.id) is not None else None
                if job.next_run_time is not None:
                    job.next_run_time = job.next_run_time.astimezone(job.trigger.timezone) \
                        if hasattr(job.trigger, "timezone") else job.next_run_time
                self._jobs[row.id] = job
        return {i: self._jobs[i] for i in ids if i in self._jobs}


class HistoryWriter:
    """One thread writes the ends of runs (status, output) in batches, so workers never wait on
    the database; retention runs now and then in a thread of its own (a prune of many rows
    takes seconds, and run ends are written meanwhile)."""

    BATCH = 500
    LINGER = 0.05   # seconds a write waits for more: a burst's ends go in a few transactions,
    #                 not one per run, and leave the database (and the GIL) to the starts
    RETRY_DELAYS = (0.5, 1, 2, 4, 8, 15, 30)   # about a minute of outage is bridged

    def __init__(self, store: Store, prune=None, prune_every: float = 600):
        self._store, self._prune = store, prune
        self._queue: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._prune_every, self._next_prune = prune_every, time.monotonic() + 5
        self._stopping = False
        self._urgent = 0   # flushes waiting: no lingering then
        self._thread = threading.Thread(target=self._loop, name="ts-history", daemon=True)
        self._pruner: Optional[threading.Thread] = None
        self.dropped = 0
        # Runs ended here whose end is not written yet: the table still says "running", and a
        # claim must not count them against max_instances (a retry, the next fire).
        self.unsettled: set = set()

    def start(self) -> None:
        self._thread.start()

    def update(self, run_id: str, notes: Optional[list] = None, **fields: Any) -> None:
        """Change a run of this node (its start, output, end); ``notes`` are queued if it ends
        here."""
        if fields.get("status") in FINAL_STATUSES:
            with self._cond:
                self.unsettled.add(run_id)
        self._put((run_id, fields, notes or []))

    def unsettled_ids(self) -> frozenset:
        with self._cond:
            return frozenset(self.unsettled)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued before this call is committed."""
        done = threading.Event()
        with self._cond:
            self._urgent += 1
        self._put(done)
        return done.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        self.flush(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)
        if self._pruner:
            self._pruner.join(timeout)   # it stops at its next chunk

    def _put(self, item) -> None:
        with self._cond:
            self._queue.append(item)
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._stopping, timeout=30)
                self._cond.wait_for(lambda: self._urgent or self._stopping or
                                    len(self._queue) >= self.BATCH, timeout=self.LINGER)
                if self._stopping and not self._queue:
                    return
                batch = [self._queue.popleft() for _ in range(min(self.BATCH, len(self._queue)))]
                self._urgent -= sum(isinstance(item, threading.Event) for item in batch)
            try:
                self._write_with_retry(batch)
                self._maybe_prune()
            except Exception:
                log.exception("history writer: unexpected error; continuing")

    def _write_with_retry(self, batch: list) -> None:
        merged: dict[str, dict] = {}
        notes: dict[str, list] = {}
        for item in batch:
            if isinstance(item, tuple):
                merged.setdefault(item[0], {}).update(_db_text(item[1]))
                notes.setdefault(item[0], []).extend(item[2])
        pending = list(merged.items())
        for delay in (*self.RETRY_DELAYS, None):
            try:
                if pending:
                    self._write(pending, notes)
                break
            except Exception as exc:
                # One row the database refuses (or any error of a batch) must not hold or drop
                # the others: write them one at a time; only an outage is waited out.
                if not _transient(exc):
                    log.warning("history writer: %d run records were refused together (%s); "
                                "writing them one at a time", len(pending), _clean(exc))
                    pending = self._write_each(pending, notes)
                    if not pending:
                        break
                if delay is None or self._stopping:
                    self.dropped += len(pending)
                    log.error("history writer: dropping %d run records after retries: %s",
                              len(pending), _clean(exc))
                    break
                log.warning("history writer: database error, retrying in %ss: %s", delay,
                            _clean(exc))
                time.sleep(delay)
        with self._cond:
            self.unsettled -= {run_id for run_id, fields in merged.items()
                               if fields.get("status") in FINAL_STATUSES}
        for item in batch:
            if isinstance(item, threading.Event):
                item.set()

    def _write(self, updates: list, notes: dict) -> None:
        with self._store.write() as conn:
            self._store.finish_runs(conn, updates, notes)

    def _write_each(self, updates: list, notes: dict) -> list:
        """Write each row in a transaction of its own. A row the database refuses for what it
        holds is written again in a minimal form (its state, no output) that says why. Returns
        the rows left when an outage began, to be tried again."""
        for index, (run_id, fields) in enumerate(updates):
            for attempt in range(2):
                try:
                    if fields:
                        self._write([(run_id, fields)], notes)
                    break
                except Exception as exc:
                    if _transient(exc):
                        return updates[index:]
                    log.error("history writer: run %s: the database refused its record (%s); "
                              "%s", run_id, _clean(exc),
                              "dropped" if attempt else "writing it without its output")
                    self.dropped += attempt
                    fields = _minimal_fields(fields, exc)
        return []

    @property
    def stopping(self) -> bool:
        return self._stopping

    def _maybe_prune(self) -> None:
        if not self._prune or time.monotonic() < self._next_prune or \
                (self._pruner and self._pruner.is_alive()):
            return
        self._next_prune = time.monotonic() + self._prune_every
        self._pruner = threading.Thread(target=self._run_prune, name="ts-prune", daemon=True)
        self._pruner.start()

    def _run_prune(self) -> None:
        try:
            self._prune()
        except Exception:
            log.exception("retention: prune failed; trying again next time")


def _db_text(fields: dict) -> dict:
    """Text a database can hold: PostgreSQL refuses NUL in text (a job's output, its error),
    so NUL becomes U+FFFD on both databases alike."""
    return {k: v.replace("\0", "\ufffd") if isinstance(v, str) and "\0" in v else v
            for k, v in fields.items()}


def _transient(exc: BaseException) -> bool:
    """An outage or a lock (wait and try again), not a row the database refuses."""
    return isinstance(exc, sa.exc.OperationalError) or \
        getattr(exc, "connection_invalidated", False)


def _minimal_fields(fields: dict, exc: Optional[BaseException]) -> dict:
    """A run's record without its output, saying why the output is missing."""
    keep = {k: v for k, v in fields.items()
            if k in ("status", "started_at", "finished_at", "exit_code", "truncated")}
    if exc is not None and "status" in fields:
        reason = _clean(exc).splitlines()[0][:300].replace("\0", "\ufffd")
        keep["error"] = f"task-scheduler could not record this run's output and error: {reason}"
    return keep


# --------------------------------------------------------------------------------------------
# Executor: execute_job(), python and command runners, output capture
# --------------------------------------------------------------------------------------------



@dataclasses.dataclass(frozen=True)
class RunContext:
    """What a python job may know of its run: ``current_run()`` inside the job."""

    service: Any
    run_id: str
    job_id: str
    scheduled_at: Optional[dt.datetime]


_current_run: contextvars.ContextVar = contextvars.ContextVar("task_scheduler_run", default=None)


def current_run() -> Optional[RunContext]:
    """The run of the python job calling this, or None outside a run."""
    return _current_run.get()


def execute_job(job_id: str) -> None:
    """The callable every APScheduler job names, so that no user callable is ever pickled
    into the job store. Nothing calls it: the leader's scheduler turns each fire into a
    queued run, and a worker on some node runs it (see _Scheduler and Runner)."""
    raise SchedulerError(f"job {job_id}: fires are queued as runs by task-scheduler's own "
                         f"scheduler; use SchedulerService.run_now() to run a job")


class CappedOutput:
    """Bytes of one stream, capped: the head and the tail are kept, a marker stands between.
    ``total`` counts every byte written: a reader tails by byte offsets into that stream."""

    def __init__(self, limit: int):
        self._half = max(limit // 2, 1)
        self._head = bytearray()
        self._tail: collections.deque = collections.deque()
        self._tail_size = 0
        self.dropped = 0
        self.total = 0
        self.nuls = 0   # NUL bytes seen: stored text shows them as U+FFFD (see output_text)
        self._lock = threading.Lock()

    def write(self, data: bytes) -> None:
        with self._lock:
            self.total += len(data)
            self.nuls += data.count(0)
            room = self._half - len(self._head)
            if room > 0:
                self._head += data[:room]
                data = data[room:]
            if not data:
                return
            self._tail.append(bytes(data))
            self._tail_size += len(data)
            while self._tail_size - len(self._tail[0]) >= self._half:
                self._tail_size -= len(self._tail[0])
                self.dropped += len(self._tail.popleft())

    @property
    def truncated(self) -> bool:
        return self.dropped > 0

    def parts(self) -> tuple[bytes, bytes, int]:
        """(head, tail, total): what is kept of the stream, and how long it is."""
        with self._lock:
            tail, head, total = b"".join(self._tail), bytes(self._head), self.total
        return head, tail[max(len(tail) - self._half, 0):], total

    def text(self) -> str:
        return output_text(*self.parts())


def output_text(head: bytes, tail: bytes, total: int) -> str:
    """The stored text of a stream: UTF-8 with replacement, and NUL (``find -print0``) as
    U+FFFD, which every database holds (PostgreSQL refuses NUL in text)."""
    dropped = total - len(head) - len(tail)
    if not dropped:
        return (head + tail).decode("utf-8", "replace").replace("\0", "\ufffd")
    return (head.decode("utf-8", "replace") + f"\n[... {dropped} bytes truncated ...]\n"
            + tail.decode("utf-8", "replace")).replace("\0", "\ufffd")


def _nul_note(out: CappedOutput, err: CappedOutput) -> str:
    """What a run's stderr says about NUL bytes replaced in its stored output."""
    said = [f"{n} NUL byte(s) of its {name}" for n, name in ((out.nuls, "stdout"),
                                                             (err.nuls, "stderr")) if n]
    return f"\n[task-scheduler: {' and '.join(said)} are stored as U+FFFD]\n" if said else ""


_TRUNCATED = re.compile(r"\n\[\.\.\. (\d+) bytes truncated \.\.\.\]\n")


def output_parts(text: str) -> tuple[bytes, bytes, int]:
    """``CappedOutput.parts`` of a stored output (``output_text`` read back)."""
    found = _TRUNCATED.search(text)
    if found is None:
        data = text.encode()
        return data, b"", len(data)
    head, tail = text[:found.start()].encode(), text[found.end():].encode()
    return head, tail, len(head) + int(found.group(1)) + len(tail)


def output_since(head: bytes, tail: bytes, total: int, offset: int) -> tuple[str, int]:
    """What came after byte ``offset`` of a stream that is still kept (a note stands for a
    dropped middle), and the offset to ask from next. A character cut by the end of what was
    written so far is left for the next call."""
    tail_start = max(total - len(tail), len(head))
    data = head[offset:]
    gap = tail_start - max(offset, len(head))
    if gap > 0:
        data += f"\n[... {gap} bytes not kept ...]\n".encode()
    data += tail[max(offset - tail_start, 0):]
    keep = len(data) - _partial_utf8(data)
    return data[:keep].decode("utf-8", "replace"), max(total - (len(data) - keep), offset)


def _partial_utf8(data: bytes) -> int:
    """How many bytes at the end of ``data`` begin a UTF-8 character not yet complete."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:   # the first byte of a character: does it need more?
            need = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else \
                4 if byte & 0xF8 == 0xF0 else 1
            return back if need > back else 0
    return 0


MASK_REFRESH = 5.0   # seconds a run may go on masking every job's secrets as they were
MIN_MASKED = 4   # shorter values would mask ordinary text (a password "pw" in every "pwd")
MASK = b"***"


class SecretMask:
    """Known secret values (the token, passwords in the database and SMTP URLs, notify targets'
    secrets, headers and URLs), replaced by ``***`` in what a run writes, as CI systems mask
    secrets in their logs. A stream is masked as it is captured: the end of a piece that could
    begin a secret is held back until the next piece tells (``split``)."""

    def __init__(self, values):
        found = sorted({v.encode() for v in values if isinstance(v, str) and
                        len(v.strip()) >= MIN_MASKED}, key=len, reverse=True)
        self.empty = not found
        self._pattern = re.compile(b"|".join(map(re.escape, found))) if found else None
        self._prefixes = {s[:k] for s in found for k in range(1, len(s))}
        self._ends = {p[-1] for p in self._prefixes}   # a piece ending in "\n" holds nothing
        self._longest = max(map(len, found), default=0)

    def bytes(self, data: bytes) -> bytes:
        return data if self._pattern is None else self._pattern.sub(MASK, data)

    def text(self, text: Optional[str]) -> Optional[str]:
        if self._pattern is None or not text:
            return text
        return self.bytes(text.encode("utf-8", "surrogatepass")).decode("utf-8", "replace")

    def split(self, data: bytes) -> tuple[bytes, bytes]:
        """(masked, held back): ``data`` masked up to where a secret may have begun."""
        if self._pattern is None:
            return data, b""
        hold = 0 if not data or data[-1] not in self._ends else next(
            (k for k in range(min(self._longest - 1, len(data)), 0, -1)
             if data[-k:] in self._prefixes), 0)
        cut, pos, parts = len(data) - hold, 0, []
        for found in self._pattern.finditer(data):
            if found.start() >= cut:
                break
            parts += [data[pos:found.start()], MASK]
            pos = found.end()
        cut = max(cut, pos)   # a secret that ran into the held-back end is masked whole
        parts.append(data[pos:cut])
        return b"".join(parts), data[cut:]


def service_secrets(config: Config) -> list:
    """The secret values a service holds by its configuration."""
    values = [config.token]
    for url in (config.database_url, config.smtp_url):
        password = urllib.parse.urlsplit(url).password if url else None
        if password:
            values += [password, urllib.parse.unquote(password)]
    return values


def notify_secrets(targets: list) -> list:
    """The secret values of notify targets: what ``redact_target`` hides from the API."""
    values = []
    for target in targets:
        values += [getattr(target, "secret", None), getattr(target, "slack", None),
                   *(getattr(target, "headers", None) or {}).values()]
        url = urllib.parse.urlsplit(getattr(target, "webhook", None) or "")
        if url.path not in ("", "/") or url.query:   # where redact_target hides the path
            values.append(url.geturl())
    return values


class MaskedOutput(CappedOutput):
    """A CappedOutput that never holds a secret: what is written is masked before it is kept
    (so the head/tail cap and live readers only ever see ``***``)."""

    def __init__(self, limit: int, mask: SecretMask):
        super().__init__(limit)
        self._mask, self._held, self._mask_lock = mask, b"", threading.Lock()

    def write(self, data: bytes) -> None:
        if self._mask.empty:
            return super().write(data)
        with self._mask_lock:   # one order of pieces: threads of a python job write too
            ready, self._held = self._mask.split(self._held + bytes(data))
            if ready:
                super().write(ready)

    def settle(self) -> str:
        """The stream has ended: what was held back goes in, masked. Returns the final text."""
        with self._mask_lock:
            held, self._held = self._held, b""
            if held:
                super().write(self._mask.bytes(held))
        return self.text()


class _ThreadRouter(io.TextIOBase):
    """Stands in for sys.stdout/sys.stderr: writes from a thread bound to a run go to that run's
    capture (threads a run starts are bound to it too: ``_start_bound``), everything else to
    the real stream, up to SPILL_BYTES a minute (``_Spill``)."""

    def __init__(self, original):
        self._original = original
        self._local = threading.local()
        self._spill = _Spill(original)

    def bind(self, sink: Optional[CappedOutput]) -> None:
        self._local.sink = sink

    def bound(self) -> Optional[CappedOutput]:
        return getattr(self._local, "sink", None)

    def write(self, text: str) -> int:
        sink = getattr(self._local, "sink", None)
        if sink is None:
            return self._spill.write(text)
        sink.write(text.encode("utf-8", "replace"))
        return len(text)

    def flush(self) -> None:
        if getattr(self._local, "sink", None) is None:
            self._original.flush()

    def __getattr__(self, name):
        return getattr(self._original, name)


SPILL_BYTES = 256 << 10   # characters a minute that no run owns may write to the real stream:
SPILL_WINDOW = 60.0       # the service's own prints pass, a thread printing in a loop does not


class _Spill:
    """Writes no run owns (a thread started outside any run, at an import): passed to the real
    stream up to SPILL_BYTES per SPILL_WINDOW; past that dropped, and the count logged when the
    window ends."""

    def __init__(self, original):
        self._original = original
        self._lock = threading.Lock()
        self._window_end, self._left, self._dropped = 0.0, SPILL_BYTES, 0

    def write(self, text: str) -> int:
        with self._lock:
            now, dropped = time.monotonic(), 0
            if now >= self._window_end:
                dropped, self._dropped = self._dropped, 0
                self._window_end, self._left = now + SPILL_WINDOW, SPILL_BYTES
            passed = len(text) <= self._left
            self._left -= len(text) if passed else 0
            first = not passed and not self._dropped
            self._dropped += 0 if passed else len(text)
        # Outside the lock: the log may write to this very stream.
        where = getattr(self._original, "name", "the console")
        if first:
            log.warning("output to %s that no run owns (a thread started outside any run) "
                        "passes at most %d characters a minute; the rest of this minute's is "
                        "dropped and counted", where, SPILL_BYTES)
        if dropped:
            log.warning("%d characters written to %s outside any run were dropped in the last "
                        "minute", dropped, where)
        return self._original.write(text) if passed else len(text)


def _start_bound(thread: threading.Thread, *args, **kwargs):
    """``threading.Thread.start`` while python jobs are captured: a thread started by a run
    is bound to that run (its prints, its log records, ``current_run()``)."""
    stdout, stderr, handler = sys.stdout, sys.stderr, _installed[0]
    if isinstance(stdout, _ThreadRouter) and isinstance(stderr, _ThreadRouter) and \
            handler is not None and stdout.bound() is not None:
        binding = (stdout.bound(), stderr.bound(), *handler.bound())
        context, run = contextvars.copy_context(), thread.run

        def bound_run():
            stdout.bind(binding[0])
            stderr.bind(binding[1])
            handler.bind(binding[2], binding[3])
            try:
                context.run(run)
            finally:
                stdout.bind(None)
                stderr.bind(None)
                handler.bind(None)
        thread.run = bound_run
    return _thread_start(thread, *args, **kwargs)


_thread_start = threading.Thread.start


class _RunLogHandler(logging.Handler):
    """Log records emitted by a thread that runs a python job go to that run's stderr; the
    same records reach the service's own log handlers only up to a budget per run (a job that
    logs 100 MB must not write 100 MB to the service log)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self._local = threading.local()
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def bind(self, sink: Optional[CappedOutput], budget: Optional[list] = None) -> None:
        self._local.sink, self._local.budget = sink, budget
        if budget is not None:   # handlers added since the last run get the budget check too
            for handler in logging.getLogger().handlers:
                if handler is not self and self.budget_filter not in handler.filters:
                    handler.addFilter(self.budget_filter)

    def bound(self) -> tuple:
        return getattr(self._local, "sink", None), getattr(self._local, "budget", None)

    def emit(self, record: logging.LogRecord) -> None:
        sink = getattr(self._local, "sink", None)
        if sink is not None:
            sink.write((self.format(record) + "\n").encode("utf-8", "replace"))

    def budget_filter(self, record: logging.LogRecord) -> bool:
        """[bytes left, bytes dropped] of the run bound to this thread; pass when unbound."""
        budget = getattr(self._local, "budget", None)
        if budget is None:
            return True
        decided = getattr(record, "_ts_pass", None)   # one record meets several handlers
        if decided is not None:
            return decided
        size = len(record.getMessage()) + 64   # the message plus time, level and name
        record._ts_pass = budget[0] >= size
        budget[0 if record._ts_pass else 1] += -size if record._ts_pass else size
        _mask_record(record, getattr(self._local, "sink", None))
        return record._ts_pass


def _mask_record(record: logging.LogRecord, sink) -> None:
    """A run's log record as the service log gets it: known secrets masked, in the message and
    in the traceback (every handler then formats the masked text)."""
    mask = getattr(sink, "_mask", None)
    if mask is None or mask.empty:
        return
    record.msg, record.args = mask.text(record.getMessage()), None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    record.exc_text = mask.text(record.exc_text)


_capture_lock = threading.Lock()
_installed: list = [None]   # the _RunLogHandler installed


def _capture_routers() -> tuple[_ThreadRouter, _ThreadRouter, _RunLogHandler]:
    """Install (once, and again if someone replaced sys.stdout since) the per-thread routers."""
    handler = _installed[0]
    if isinstance(sys.stdout, _ThreadRouter) and isinstance(sys.stderr, _ThreadRouter) and \
            handler is not None and handler in logging.getLogger().handlers:
        return sys.stdout, sys.stderr, handler   # installed: no lock on each run
    with _capture_lock:
        for name in ("stdout", "stderr"):
            if not isinstance(getattr(sys, name), _ThreadRouter):
                original = getattr(sys, name)
                setattr(sys, name, _ThreadRouter(original))
                if getattr(sys, f"__{name}__") is original:   # jobs that write there, too
                    setattr(sys, f"__{name}__", getattr(sys, name))
        threading.Thread.start = _start_bound
        root = logging.getLogger()
        handler = next((h for h in root.handlers if isinstance(h, _RunLogHandler)), None)
        if handler is None:
            handler = _RunLogHandler()
            root.addHandler(handler)
        _installed[0] = handler
        return sys.stdout, sys.stderr, handler


@dataclasses.dataclass
class _Outcome:
    status: str
    exit_code: Optional[int] = None
    error: Optional[str] = None
    stdout: str = ""
    stderr: str = ""
    truncated: bool = False


@dataclasses.dataclass
class _ActiveRun:
    run: dict
    out: CappedOutput
    err: CappedOutput
    proc: Optional[subprocess.Popen] = None
    stop_reason: Optional[str] = None    # "cancelled" or "interrupted" once we end it
    stop_error: Optional[str] = None
    rescued: bool = False                # given up by the cluster: its end is not recorded
    flushed: tuple = (0, 0)              # output sizes last written to the database
    claimed: float = dataclasses.field(default_factory=time.monotonic)
    began: Optional[dt.datetime] = None  # when a worker took it up (claimed ahead: later)
    on_spawn: Any = None                 # told a command's pid (= its process group)
    watch: Any = None                    # told the process group (the cluster's fence watch)


def run_python(func, args: list, kwargs: dict, limit: int, out: Optional[CappedOutput] = None,
               err: Optional[CappedOutput] = None) -> _Outcome:
    """Call a python job in this thread with its output and log records captured (into ``out``
    and ``err``: readable while it runs); its log records reach the service log up to
    ``limit`` bytes."""
    out, err = out or CappedOutput(limit), err or CappedOutput(limit)
    stdout, stderr, handler = _capture_routers()
    budget = [limit, 0]
    stdout.bind(out)
    stderr.bind(err)
    handler.bind(err, budget)
    try:
        func(*args, **kwargs)
        status, error = "succeeded", None
    except BaseException as exc:  # SystemExit and KeyboardInterrupt in a job are failures too
        status = "failed"
        # The job's own frames only: this function's frame names the service's file.
        error = f"{type(exc).__name__}: {exc}\n" + "".join(traceback.format_exception(
            type(exc), exc, exc.__traceback__.tb_next))
    finally:
        stdout.bind(None)
        stderr.bind(None)
        handler.bind(None)
    if budget[1]:
        log.warning("%s: %d bytes of its log records were not written to this log (limit %d "
                    "bytes per run); the run's stderr keeps their head and tail",
                    getattr(func, "__qualname__", func), budget[1], limit)
    return _Outcome(status, None, error, out.text(), err.text(), out.truncated or err.truncated)


def run_command(argv: list, env: dict, cwd: str, timeout: Optional[float], limit: int,
                kill_grace: float, active: _ActiveRun) -> _Outcome:
    """Run a command in its own session (process group). On timeout or cancel the whole group
    gets TERM, then KILL after ``kill_grace``, and so do processes that left the group
    (``setsid``) but carry this run's TS_RUN_ID. Output is read until the group is gone."""
    out, err = active.out, active.err
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, cwd=cwd, env=env, start_new_session=True)
    except OSError as exc:
        return _Outcome("failed", 127 if isinstance(exc, FileNotFoundError) else 126,
                        f"cannot start {argv[0]}: {exc.strerror or exc}")
    except (ValueError, TypeError) as exc:   # what validation lets through: one line, no trace
        return _Outcome("failed", 126, f"cannot start: {_clean(exc)}")
    active.proc = proc
    if active.watch is not None:
        active.watch(proc.pid)
    if active.on_spawn is not None:
        active.on_spawn(proc.pid)
    if active.stop_reason:   # cancelled while starting
        kill_group(proc, kill_grace)
    reader = _PipeReader({proc.stdout: out, proc.stderr: err})
    timed_out = False
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        kill_group(proc, kill_grace)
        code = proc.wait()
    if timed_out or active.stop_reason:
        kill_escaped(env.get("TS_RUN_ID"), kill_grace)
    note = _finish_output(reader, proc, kill_grace)
    status, code, error = _command_status(code, timed_out, active.stop_reason, timeout)
    if note:
        err.write(f"\n[task-scheduler: {note}]\n".encode())
    return _Outcome(status, code, error, out.text(), err.text(), out.truncated or err.truncated)


class _PipeReader:
    """Reads a command's pipes from one thread, and can stop reading: a process that left the
    group may hold a pipe open long after the run is over."""

    def __init__(self, pipes: dict):
        self._selector = selectors.DefaultSelector()
        for pipe, sink in pipes.items():
            os.set_blocking(pipe.fileno(), False)
            self._selector.register(pipe, selectors.EVENT_READ, sink)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ts-pipes", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        try:
            while self._selector.get_map() and not self._stop.is_set():
                for key, _ in self._selector.select(timeout=0.1):
                    self._read(key)
        except (OSError, ValueError) as exc:
            log.debug("output pipes: %s", exc)
        finally:
            for key in list(self._selector.get_map().values()):
                self._selector.unregister(key.fileobj)
                key.fileobj.close()
            self._selector.close()

    def _read(self, key) -> None:
        try:
            data = os.read(key.fd, 65536)
        except BlockingIOError:
            return
        if data:
            key.data.write(data)
        else:
            self._selector.unregister(key.fileobj)
            key.fileobj.close()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the end of every pipe; True when all ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(1)


def _finish_output(reader: _PipeReader, proc: subprocess.Popen, grace: float) -> Optional[str]:
    """After the command ended: read what its pipes still bring. Children left in its group get
    ``grace``, then KILL; once the group is gone nothing more is waited for. Returns a note for
    the run's stderr when output was left unread."""
    if reader.join(0.05):
        return None
    deadline = time.monotonic() + grace
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        if reader.join(0.05):
            return None
    if _group_alive(proc.pid):
        _signal_group(proc.pid, signal.SIGKILL)
    if reader.join(0.2):   # what the group wrote before it went
        return None
    reader.stop()
    return ("a process that left the command's process group (setsid, a daemon) still holds "
            "its output; what it writes now is not captured")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_escaped(run_id: Optional[str], grace: float) -> int:
    """TERM, then KILL, the processes of this user that carry ``TS_RUN_ID=run_id`` in their
    environment: descendants of a run that left its process group. Linux only (/proc); a
    process that cleared its environment is not found. Returns how many were signalled."""
    if not run_id or not os.path.isdir("/proc"):
        return 0
    needle = f"TS_RUN_ID={run_id}\0".encode()
    pids = [pid for pid in _proc_pids() if pid != os.getpid() and needle in _environ_of(pid)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while sig == signal.SIGTERM and time.monotonic() < deadline and any(
                _pid_alive(p) for p in pids):
            time.sleep(0.05)
    if pids:
        log.info("run %s: ended %d processes that had left its process group", run_id,
                 len(pids))
    return len(pids)


def run_processes() -> dict[str, list[int]]:
    """The processes of this user that carry a ``TS_RUN_ID`` (runs' commands and what they
    started), by run id; Linux only (/proc)."""
    found: dict[str, list[int]] = {}
    if not os.path.isdir("/proc"):
        return found
    for pid in _proc_pids():
        if pid == os.getpid():
            continue
        for entry in _environ_of(pid).split(b"\0"):
            if entry.startswith(b"TS_RUN_ID="):
                found.setdefault(entry[10:].decode("utf-8", "replace"), []).append(pid)
                break
    return found


def end_processes(pids: list[int], grace: float) -> list[int]:
    """TERM the process groups of ``pids`` and the processes themselves, KILL what is left
    after ``grace`` seconds; never this service's own group. Returns the groups signalled."""
    own = os.getpgrp()
    groups = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            groups.add(os.getpgid(pid))
    groups -= {own, 0, 1}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for group in groups:
            _signal_group(group, sig)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_pid_alive(p) for p in pids):
            time.sleep(0.05)
        if not any(_pid_alive(p) for p in pids):
            break
    return sorted(groups)


def _proc_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _environ_of(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return fh.read() + b"\0"
    except OSError:   # gone, or another user's
        return b""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return os.path.exists(f"/proc/{pid}") and not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return False


def kill_group(proc: subprocess.Popen, grace: float) -> None:
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass  # still alive after TERM: KILL follows
    _signal_group(proc.pid, signal.SIGKILL)   # also children that ignored TERM


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        log.debug("process group %d already gone", pgid)


def _command_status(code: int, timed_out: bool, stop_reason: Optional[str], timeout) -> tuple:
    if stop_reason == "cancelled":
        return "cancelled", code, "cancelled by request"
    if stop_reason == "interrupted":
        return "interrupted", code, "the service stopped; process group killed"
    if timed_out:
        return "timeout", code, f"timed out after {timeout:g}s; process group killed"
    if code == 0:
        return "succeeded", 0, None
    if code < 0:
        return "failed", code, f"killed by signal {signal.Signals(-code).name}"
    return "failed", code, f"exit code {code}"


# --------------------------------------------------------------------------------------------
# Cluster: the bus (LISTEN/NOTIFY), this node, the leader lease
# --------------------------------------------------------------------------------------------

class Bus:
    """Tells this process what changed: its own commits at once, other nodes' through
    PostgreSQL LISTEN/NOTIFY on a connection of its own. Each time that connection is made (at
    start, and back after a loss) every subscriber hears ``None``: notifications sent before
    it listened were missed."""

    CHANNELS = ("ts_jobs", "ts_runs", "ts_lease", "ts_notes")
    POLL = 1.0   # seconds between looks at the stop flag while no notification comes

    def __init__(self, store: Store):
        self._store = store
        self._subscribers: dict[str, list] = collections.defaultdict(list)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="ts-listen", daemon=True)
        self._prefix = ""
        self._listening = threading.Event()
        # A channel of this listener's own: stop() notifies it, so the listener ends now rather
        # than at its next look (notifies() waits up to a second; ~0.9 s of every stop).
        self._wake_channel = f"ts_wake_{secrets.token_hex(8)}"
        store.on_commit.append(self.deliver)

    def subscribe(self, channel: str, callback) -> None:
        self._subscribers[channel].append(callback)

    def deliver(self, channel: str, payload: Optional[dict]) -> None:
        for callback in self._subscribers.get(channel, ()):
            try:
                callback(payload)
            except Exception:
                log.exception("bus: a %s subscriber failed", channel)

    def start(self, timeout: float = 10.0) -> None:
        """Listen; returns once LISTEN holds, so that what is read afterwards misses no change
        (later ones are announced)."""
        if self._store.postgres:
            self._thread.start()
            if not self._listening.wait(timeout):
                log.warning("bus: not listening yet after %gs; changes made meanwhile on other "
                            "nodes are taken in once it is", timeout)

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._wake_listener()
            self._thread.join(3)

    def _wake_listener(self) -> None:
        try:
            with self._store.engine.connect() as conn:
                conn.execute(sa.text(f'NOTIFY "{self._wake_channel}"'))
                conn.commit()
        except sa.exc.DBAPIError as exc:   # the database is away: the listener's poll ends it
            log.debug("bus: could not wake the listener (%s)", _clean(exc))

    def _listen(self) -> None:
        import psycopg
        delay = 0.5
        while not self._stopping.is_set():
            try:
                with psycopg.connect(_conninfo(self._store.engine), autocommit=True) as conn:
                    self._prefix = self._store.channel_prefix
                    for channel in self.CHANNELS:
                        conn.execute(f'LISTEN "{self._prefix}{channel}"')
                    conn.execute(f'LISTEN "{self._wake_channel}"')
                    self._listening.set()
                    for channel in self.CHANNELS:   # whatever happened before, look again
                        self.deliver(channel, None)
                    delay = 0.5
                    while not self._stopping.is_set():
                        for note in conn.notifies(timeout=self.POLL):
                            if self._stopping.is_set():
                                break
                            self._received(note.channel, note.payload)
            except Exception as exc:   # psycopg.Error, OSError: the server or network went away
                if self._stopping.is_set():
                    return
                log.warning("bus: LISTEN connection lost (%s); reconnecting in %ss", _clean(exc),
                            delay)
                self._stopping.wait(delay)
                delay = min(delay * 2, 10)

    def _received(self, channel: str, text: str) -> None:
        try:
            payload = json.loads(text)
        except ValueError:
            payload = None
        if isinstance(payload, dict) and payload.get("node") == self._store.node:
            return   # this node's own commit, delivered when it committed
        self.deliver(channel.removeprefix(self._prefix), payload)


def _conninfo(engine: sa.Engine) -> str:
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


class Cluster:
    """This process as a node: its row in ts_nodes and heartbeat, the leader lease (taken,
    renewed, handed back; each take a new epoch that fences the leader's writes), the rescue of
    runs whose node went silent, and the offset of this machine's clock from the database's.
    On SQLite there is one node: it leads from the start and none of the rest runs."""

    def __init__(self, service: SchedulerService):
        self._service, self.config, self.store = service, service.config, service.store
        self.role = "follower"
        self.epoch: Optional[int] = None
        self.offset = 0.0          # database clock minus this machine's clock, seconds
        self.failovers = 0         # times this node saw the lease move to a new holder
        self._fire_until = 0.0     # monotonic: firing stops then unless the lease is renewed
        self._next_heartbeat = 0.0
        self._last_holder: Optional[str] = None
        self._failing = False
        self._resigned = False     # stopping: never take or renew the lease again
        self._lease_lock = threading.Lock()   # the loop's lease statements, and resign()
        self._reached_last = -float("inf")   # monotonic: the last tick that reached the
        self._reached_since = 0.0            # database, and the start of that unbroken run
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ts-cluster", daemon=True)

    @property
    def clustered(self) -> bool:
        return self.store.postgres

    def join(self) -> None:
        """Register this node (a live node with the same id is refused) and interrupt the runs
        this node's previous life left running (SQLite: every such run)."""
        if self.clustered:
            others = self.store.register_node(
                {"host": socket.gethostname(), "pid": os.getpid(), "version": __version__,
                 "labels": ",".join(self.config.labels), "role": "follower",
                 "schema_version": SCHEMA_VERSION}, self.config.node_timeout)
            mixed = [f"{node} ({version}, schema {schema or 'older'})"
                     for node, version, schema in others
                     if (version, schema) != (__version__, SCHEMA_VERSION)]
            if mixed:   # a rolling upgrade: fine for a while (docs/cluster.md)
                log.warning("node %s (%s, schema %d) joins nodes of other releases: %s; "
                            "upgrade them all to one release", self.store.node, __version__,
                            SCHEMA_VERSION, ", ".join(mixed))
        swept = self.store.sweep(self.store.node if self.clustered else None)
        if swept:
            log.warning("marked %d runs interrupted (left running by a crash)", len(swept))
            self._service.book.load()   # the notifications name the jobs' targets
            self.store.queue_notes(self._service.notifier.notes_for(
                [dict(r._mapping) for r in swept]))

    def start(self) -> None:
        """Lead at once on SQLite; on PostgreSQL try for the lease now, then keep at it."""
        if not self.clustered:
            self.role, self._fire_until = "leader", float("inf")
            self._service.lead(None, initial=True)
            return
        self._service.bus.subscribe("ts_lease", lambda _payload: self._wake.set())
        try:
            self._tick(initial=True)
        except sa.exc.DBAPIError as exc:
            if not _lock_busy(exc):
                raise
            log.info("cluster: the lease row is busy (a frozen leader?); trying again")
        self._thread.start()

    def resign(self) -> None:
        """A stopping node hands the lease over before it waits for its runs (for up to the
        shutdown grace): another node leads within about a second (the release is announced),
        while this one goes on heart-beating the runs it still has."""
        self._resigned = True
        if not self.clustered:
            return
        with self._lease_lock:
            epoch = self.epoch if self.role == "leader" else None
            if epoch is None:
                return
            self._step_down("this node is stopping; the lease is handed over")
            try:
                self.store.release_lease(epoch)
            except sa.exc.DBAPIError as exc:
                log.warning("cluster: could not hand the lease back (%s); it expires by "
                            "itself", _clean(exc))

    def stop(self) -> None:
        """Hand the lease back at once (the others need not wait for it to expire) and leave."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(5)
        if not self.clustered:
            return
        try:
            if self.role == "leader" and self.epoch is not None:
                self._service.scheduler.step_down()
                self.store.release_lease(self.epoch)
            self.store.leave()
        except sa.exc.DBAPIError as exc:
            log.warning("cluster: could not leave cleanly (%s); the lease expires by itself",
                        _clean(exc))
        self.role = "follower"

    def may_fire(self) -> bool:
        """True while this node leads and its lease was renewed recently enough: a leader that
        cannot renew stops firing before the lease can expire."""
        return self.role == "leader" and time.monotonic() < self._fire_until

    def now(self) -> dt.datetime:
        """The database's time (UTC, aware), from this machine's clock and the last offset."""
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.offset)

    def lost(self, reason: str) -> None:
        """The scheduler found its write fenced off: step down now."""
        if self.role == "leader":
            self._step_down(reason)
            self._wake.set()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            started = time.monotonic()
            self._wake.wait(max(0.0, self.config.lease_renew - (time.monotonic() - started)))
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                self._tick()
                if self._failing:
                    log.info("cluster: the database answers again")
                self._failing = False
            except sa.exc.DBAPIError as exc:
                if _lock_busy(exc):   # bounded wait on another node's lock: next tick
                    log.info("cluster: a lease or heartbeat row was busy; trying again")
                elif not self._failing:
                    log.warning("cluster: database error: %s", _clean(exc))
                self._failing = self._failing or not _lock_busy(exc)
            except Exception:
                log.exception("cluster: unexpected error; continuing")
            if self.role == "leader" and time.monotonic() >= self._fire_until:
                self._step_down("the lease could not be renewed in time")
            try:
                self._service.runner.fence_if_due()
            except Exception:
                log.exception("cluster: self-fencing failed; continuing")

    def _tick(self, initial: bool = False) -> None:
        busy = None
        try:
            with self._lease_lock:
                self._lease_tick(initial)
        except sa.exc.DBAPIError as exc:   # a busy lease row must not hold the heartbeat back
            if not _lock_busy(exc):
                raise
            busy = exc
        reached = time.monotonic()
        if reached - self._reached_last > self.config.heartbeat_every * 1.5:
            self._reached_since = reached   # back from an outage, or from a pause of its own
        self._reached_last = reached
        if time.monotonic() >= self._next_heartbeat:
            self._next_heartbeat = time.monotonic() + self.config.heartbeat_every
            self._heartbeat()
        if busy is not None:
            raise busy

    def _lease_tick(self, initial: bool) -> None:
        sent, local = time.monotonic(), time.time()
        epoch = None
        if self.role == "leader":
            db_now = self.store.renew_lease(self.epoch, self.config.lease_ttl)
            if db_now is None:
                self._step_down("another node holds the lease")
                db_now = self.store.db_time()
            else:
                self._fire_until = sent + self.config.lease_ttl - LEASE_MARGIN
        elif self._resigned:
            db_now = self.store.db_time()
        else:
            epoch, db_now = self.store.acquire_lease(self.config.lease_ttl)
        # Before leading: the new leader's first wakeup builds the schedule by this offset (at
        # start-up the first tick leads with none measured yet).
        self.offset = db_now.replace(tzinfo=dt.UTC).timestamp() - (local + time.time()) / 2
        if epoch is not None:
            self._fire_until = sent + self.config.lease_ttl - LEASE_MARGIN
            self._take_lead(epoch, initial)

    def may_rescue(self) -> bool:
        """A node's silence proves it dead only while this node could itself have heard it:
        after an outage of the database (or a pause of this process) every node's heartbeat
        is old, and the live ones heartbeat again within seconds. So this node gives nothing up
        until it has reached the database without a break for ``node_timeout`` itself."""
        return time.monotonic() - self._reached_since >= self.config.node_timeout

    def _heartbeat(self) -> None:
        runner = self._service.runner
        since = time.monotonic()
        self.store.heartbeat_node(self.role, len(runner.active),
                                  self._service.config_status().get("hash"))
        alive, cancels = self.store.heartbeat_runs()
        runner.after_heartbeat(alive, cancels, since)
        if self.role == "leader" and self.may_rescue():
            runner.after_rescue(self.store.rescue(self.config.node_timeout))
        holder = self.store.lease()[0]
        if holder and holder != self._last_holder:
            if self._last_holder is not None:
                self.failovers += 1
            self._last_holder = holder

    def _take_lead(self, epoch: int, initial: bool) -> None:
        self.role, self.epoch = "leader", epoch
        log.warning("node %s leads now (lease epoch %d)", self.store.node, epoch)
        self._service.lead(epoch, initial=initial)

    def _step_down(self, reason: str) -> None:
        log.warning("node %s stops leading: %s", self.store.node, reason)
        self.role, self.epoch, self._fire_until = "follower", None, 0.0
        self._service.scheduler.step_down()


LEASE_MARGIN = 1.5   # seconds a leader stops firing before its lease could expire
OUTPUT_FLUSH = 0.4   # seconds between writes of running output: a line shows on any node in <1 s
LIVENESS_LOCK_WAIT = 1.0   # seconds a lease/heartbeat/rescue statement waits for a row lock
# Self-fencing. The leader gives a node's runs up (and retries them elsewhere) once their
# heartbeat is ``node_timeout`` old on the database clock. A node that cannot heartbeat ends
# its own command runs first: TERM at FENCE_AT of node_timeout after the last heartbeat that
# got through (counted from when it was sent, so never later than the database's stamp), KILL
# at FENCE_KILL. The rest of node_timeout is the margin for a slow kill and a late tick.
FENCE_AT = 0.5
FENCE_KILL = 0.7


def _lock_busy(exc: sa.exc.DBAPIError) -> bool:
    """PostgreSQL's lock_timeout (55P03): a row was busy, the database is fine."""
    return getattr(exc.orig, "sqlstate", None) == "55P03"


def label_sets(labels: tuple) -> list[str]:
    """Every ``run_on`` a node with ``labels`` may run: the sorted subsets, comma-joined."""
    ordered = sorted(set(labels))
    return [",".join(c) for n in range(len(ordered) + 1)
            for c in itertools.combinations(ordered, n)]


# --------------------------------------------------------------------------------------------
# Jobs: definitions as applied, the one reconcile path, APScheduler's loop
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(slots=True)   # no __dict__: ~100 bytes less on each of 10,000 jobs
class JobRecord:
    """A job definition as applied: one row of ts_jobs, kept in memory for fast reads."""

    definition: JobDefinition
    source: str
    paused: bool
    hash: str
    created_at: dt.datetime
    updated_at: dt.datetime
    trigger: Any = None   # the built APScheduler trigger, for next fire times
    view: Optional[tuple] = None   # (key, job dict, JSON) cached by JobBook.view

    @property
    def state(self) -> str:
        if not self.definition.is_enabled:
            return "disabled"
        if isinstance(self.definition.trigger, ManualSpec):
            return "manual"
        if self.finished():
            return "finished"
        return "paused" if self.paused else "scheduled"

    def finished(self) -> bool:
        """A date job whose time has come: it fires at once (or has), and never again."""
        spec = self.definition.trigger
        return isinstance(spec, DateSpec) and self.trigger is not None and \
            self.trigger.run_date <= dt.datetime.now(dt.UTC)

    @property
    def run_on(self) -> str:
        return ",".join(sorted(set(self.definition.run_on)))

    def schedule_hash(self, timezone) -> str:
        """definition:trigger-spec:trigger-code: what the APScheduler job was built from. The
        spec part says whether the schedule itself changed (the phase starts again)."""
        spec = json.dumps(self.definition.trigger.model_dump(mode="json"), sort_keys=True)
        spec_hash = hashlib.sha256(f"{spec}|{timezone}".encode()).hexdigest()[:16]
        return f"{self.hash[:16]}:{spec_hash}:{TRIGGER_VERSION}"


TRIGGER_VERSION = "2"   # raised when trigger classes change: stored jobs get today's triggers


class JobBook:
    """The job definitions as applied (ts_jobs), in memory on every node for fast reads, and the
    one reconcile path that changes them. Reads take no lock (a claim reads the book inside
    its transaction, so nothing may make it wait)."""

    def __init__(self, store: Store, timezone):
        self.store, self.timezone = store, timezone
        self.records: dict[str, JobRecord] = {}
        self.lock = threading.RLock()   # one writer at a time; taken before any transaction

    def load(self) -> None:
        with self.lock:
            self.records = dict(filter(None, map(self._record, self.store.job_rows())))

    def refresh(self, ids: Optional[list] = None) -> list[str]:
        """Take in changes made elsewhere (all jobs when ``ids`` is None); the ids changed."""
        with self.lock:
            if ids is None:
                signatures = self.store.job_signatures()
                ids = [i for i, sig in signatures.items() if (rec := self.records.get(i)) is None
                       or (rec.hash, rec.paused) != sig]
                ids += [i for i in self.records if i not in signatures]
            rows = dict(filter(None, map(self._record, self.store.job_rows(ids)))) if ids else {}
            changed = []
            for job_id in ids:
                old, new = self.records.get(job_id), rows.get(job_id)
                if new is None:
                    if self.records.pop(job_id, None) is not None:
                        changed.append(job_id)
                elif old is None or (old.hash, old.paused) != (new.hash, new.paused):
                    self.records[job_id] = new
                    changed.append(job_id)
            return changed

    def get(self, job_id: str) -> Optional[JobRecord]:
        return self.records.get(job_id)

    def require(self, job_id: str) -> JobRecord:
        rec = self.records.get(job_id)
        if rec is None:
            raise JobNotFound(f"job {job_id!r} does not exist")
        return rec

    def reconcile(self, desired: dict, source: str, remove_missing: bool = True) -> dict:
        """Diff desired definitions against the applied ones by id and hash and write the
        difference to ts_jobs in one transaction: added, rescheduled (trigger changed),
        modified (options only: the next fire time is kept), removed, unchanged."""
        changes: dict[str, list] = {"added": [], "rescheduled": [], "modified": [],
                                    "removed": [], "unchanged": []}
        with self.lock:
            upserts, now = [], _utcnow()
            for job_id, defn in desired.items():
                rec = self.records.get(job_id)
                if rec is not None and rec.source != source:
                    raise JobConflict(f"job {job_id!r} already exists with source {rec.source}")
                kind = _change_kind(rec, defn)
                changes[kind].append(job_id)
                if kind == "unchanged":
                    rec.definition = share_fields(defn)   # equal (same hash): keep one copy
                else:
                    upserts.append({"_new": rec is None, "id": job_id, "source": source,
                                    "definition": json.dumps(defn.dump()),
                                    "definition_hash": definition_hash(defn),
                                    "paused": rec.paused if rec else False, "updated_at": now,
                                    **({"created_at": now} if rec is None else {})})
            if remove_missing:
                changes["removed"] = sorted(i for i, r in self.records.items()
                                            if r.source == source and i not in desired)
            self.store.write_jobs(upserts, changes["removed"])
            for values in upserts:
                self.records[values["id"]] = self._new_record(values, desired[values["id"]])
            for job_id in changes["removed"]:
                self.records.pop(job_id, None)
        touched = {k: v for k, v in changes.items() if v and k != "unchanged"}
        if touched:
            log.info("reconcile (%s): %s", source,
                     ", ".join(f"{k} {len(v)}" for k, v in touched.items()))
        return changes

    def set_paused(self, job_id: str, paused: bool) -> bool:
        """Pause or resume; True when that changed anything."""
        with self.lock:
            rec = self.require(job_id)
            if rec.paused == paused:
                return False
            if not self.store.set_paused(job_id, paused):
                raise JobNotFound(f"job {job_id!r} does not exist")
            self.records[job_id] = dataclasses.replace(rec, paused=paused, view=None)
        log.info("job %s %s", job_id, "paused" if paused else "resumed")
        return True

    def select(self, q=None, state=None, source=None, kind=None, tag=None) -> list[JobRecord]:
        needle = q.lower() if q else None
        states = set(state.split(",") if isinstance(state, str) else state) if state else None
        return [r for _, r in sorted(self.records.items())
                if (states is None or r.state in states)
                and (source is None or r.source == source)
                and (kind is None or r.definition.kind == kind)
                and (tag is None or tag in r.definition.tags)
                and (needle is None or needle in _search_text(r))]

    def view(self, rec: JobRecord, next_ts: Optional[float], last_run: Optional[dict]
             ) -> tuple[dict, str]:
        """A job's dict and JSON, kept on its record until its state, next fire time or last
        run changes (a new definition is a new record): computing next fire times is the bulk
        of the cost, so a list of 1,000 jobs is answered in milliseconds."""
        key = (rec.paused, rec.state, next_ts, last_run and (last_run["id"], last_run["status"]))
        if rec.view is None or rec.view[0] != key:
            job = self._job_dict(rec, next_ts, last_run)
            rec.view = (key, job, json.dumps(job, default=_json_default, ensure_ascii=False))
        return rec.view[1], rec.view[2]

    def trigger_of(self, rec: JobRecord):
        if rec.trigger is None:
            rec.trigger = build_trigger(rec.definition.trigger, self.timezone)
        return rec.trigger

    def _job_dict(self, rec: JobRecord, next_ts: Optional[float], last_run) -> dict:
        d = rec.definition
        next_time = (dt.datetime.fromtimestamp(next_ts, dt.UTC)
                     if next_ts is not None and rec.state == "scheduled" else None)
        definition = d.dump()
        if definition.get("notify"):   # the API and the GUI never show a secret
            definition["notify"] = [redact_target(t) for t in definition["notify"]]
        return {
            "id": d.id, "description": d.description, "kind": d.kind, "func": d.func,
            "command": _command_list(d), "args": d.args, "kwargs": d.kwargs,
            "trigger": d.trigger.model_dump(mode="json", exclude_none=True),
            "trigger_text": trigger_text(d.trigger), "source": rec.source, "state": rec.state,
            "next_run_time": _iso(next_time),
            "next_run_times": [_iso(t) for t in self._fire_times(rec, next_time, 5)],
            "max_instances": d.max_instances, "coalesce": d.coalesce,
            "misfire_grace_time": d.misfire_grace_time, "timeout": d.timeout, "tags": d.tags,
            "run_on": d.run_on, "notify": definition.get("notify", []),
            "is_enabled": d.is_enabled, "paused": rec.paused,
            "last_run": last_run, "definition": definition,
            "created_at": _iso(rec.created_at), "updated_at": _iso(rec.updated_at),
        }

    def _fire_times(self, rec: JobRecord, first: Optional[dt.datetime], count: int) -> list:
        return fire_times(self.trigger_of(rec), first, count) if first is not None else []

    def _record(self, row) -> Optional[tuple[str, JobRecord]]:
        try:
            defn = share_fields(JobDefinition.model_validate(json.loads(row.definition)))
        except (ValidationError, ValueError) as exc:
            log.error("job %s in the database no longer validates, skipped: %s", row.id,
                      _clean(exc))
            return None
        # the definition's id, and an interned source: not two more strings per job
        rec = JobRecord(defn, sys.intern(row.source), row.paused, row.definition_hash,
                        row.created_at, row.updated_at)
        self._date_trigger(rec)
        return (defn.id if defn.id == row.id else row.id), rec

    def _new_record(self, values: dict, defn: JobDefinition) -> JobRecord:
        old = self.records.get(values["id"])
        rec = JobRecord(share_fields(defn), values["source"], values["paused"],
                        values["definition_hash"], old.created_at if old else values["updated_at"],
                        values["updated_at"])
        self._date_trigger(rec)
        return rec

    def _date_trigger(self, rec: JobRecord) -> None:
        """Only a date job's state needs its trigger (finished()); the others build theirs when
        a view asks: 10,000 eager triggers cost ~2 MiB and a tenth of a second."""
        if isinstance(rec.definition.trigger, DateSpec):
            self.trigger_of(rec)


def _change_kind(rec: Optional[JobRecord], defn: JobDefinition) -> str:
    if rec is None:
        return "added"
    if rec.hash == definition_hash(defn):
        return "unchanged"
    old = rec.definition
    if old.is_enabled != defn.is_enabled or old.trigger != defn.trigger:
        return "rescheduled"
    return "modified"


class _Scheduler(BackgroundScheduler):
    """APScheduler's loop, run by the leader only. Each wakeup applies the job changes asked
    for, turns due fires into rows (queued; or missed, saying why: past the grace, or coalesced
    into a later fire, never a silent gap) and commits both with the schedule in one fenced
    transaction. It fires on the database's clock. A database error does not end the loop
    (pitfall A8): the wakeup is retried from the stored state."""

    retry_wait = 2.0
    max_wait = 3600.0   # the longest sleep: a wait of centuries overflows the thread's timer

    def __init__(self, service: SchedulerService, store: ScheduleStore, **kwargs):
        super().__init__(jobstores={"default": store}, **kwargs)
        self._service, self._store = service, store
        self.last_error: Optional[str] = None
        self.leading_since: Optional[dt.datetime] = None
        self._asked: set = set()
        self._asked_all = False
        self._waiters: list = []
        self._asked_lock = threading.Lock()
        self._broken: dict[str, tuple] = {}   # id -> (definition hash, reason) last recorded

    def lead(self, epoch: Optional[int]) -> threading.Event:
        """Fire from now on: the schedule is read afresh from the table and checked against
        every job definition before the first fire (the event: that is done)."""
        self._store.epoch = epoch
        self._store.invalidate()
        self.leading_since = _naive_utc(self._service.cluster.now())
        self.resume()
        return self.ask(None)

    def step_down(self) -> None:
        if self.state == STATE_RUNNING:
            self.pause()
        self._store.epoch = None
        self._store.invalidate()
        self._release_waiters()

    def ask(self, ids: Optional[Iterable] = None) -> threading.Event:
        """Make APScheduler's jobs match these definitions (all when None) at the next wakeup,
        which comes at once; the event is set when that wakeup has committed."""
        done = threading.Event()
        with self._asked_lock:
            if ids is None:
                self._asked_all = True
            else:
                self._asked.update(ids)
            self._waiters.append(done)
        if self.state == STATE_RUNNING:
            self.wakeup()
        else:
            done.set()   # not leading: the leader applies it
        return done

    def alive(self) -> bool:
        thread = getattr(self, "_thread", None)
        return self.running and thread is not None and thread.is_alive()

    def _process_jobs(self):
        if self.state != STATE_RUNNING:
            return None
        if not self._service.cluster.may_fire():
            return 0.2   # not renewed lately: fire nothing until it is (or this node steps down)
        try:
            wait = self._wakeup()
        except NotLeader as exc:
            self._forget()
            self._service.cluster.lost(str(exc))
            return None
        except Exception as exc:
            self._forget()
            self.last_error = f"{type(exc).__name__}: {_clean(exc)}"
            log.error("scheduler loop: %s; retrying in %ss", self.last_error, self.retry_wait)
            return self.retry_wait
        self.last_error = None
        return wait

    def _wakeup(self) -> Optional[float]:
        now = self._service.cluster.now().astimezone(self.timezone)
        self._store.now = now   # what a schedule computed in this wakeup is computed at
        with self._asked_lock:
            ids, everything, waiters = self._asked, self._asked_all, self._waiters
            self._asked, self._asked_all, self._waiters = set(), False, []
        try:
            with self._jobstores_lock:
                if everything:
                    ids = set(self._store.ids()) | set(self._service.book.records)
                self._store.preload([i for i in ids if not self._in_step(i)])
                fires: list = []
                for job_id in sorted(ids):
                    try:
                        self._sync(job_id, now)
                    except _LOOP_ERRORS:
                        raise
                    except Exception as exc:
                        fires += self._set_aside(job_id, None, now, exc)
                for job in self._store.get_due_jobs(now):
                    try:
                        fires += self._fire(job, now)
                    except _LOOP_ERRORS:
                        raise
                    except Exception as exc:
                        fires += self._set_aside(job.id, job.next_run_time, now, exc)
                missed = [row for row in fires if row["status"] == "missed"]
                inserted, started = self._store.commit(
                    fires, self._service.notifier.notes_for(missed), self._service.runner.start_in)
                next_time = self._store.get_next_run_time()
        except Exception:
            with self._asked_lock:   # ask again after the retry; release the callers now
                self._asked.update(ids)
                self._asked_all = self._asked_all or everything
            raise
        finally:
            for done in waiters:
                done.set()
        if started:
            self._service.runner.take(started, [])
        if len(inserted) > len(started):
            self._service.runner.wake()   # what this node did not take: its next claim
        if next_time is None:
            return None
        return min(max((next_time - self._service.cluster.now()).total_seconds(), 0.0),
                   self.max_wait)

    def _set_aside(self, job_id: str, moment: Optional[dt.datetime], now: dt.datetime,
                   exc: Exception) -> list[dict]:
        """One job's schedule could not be computed (its trigger raised): it is logged, taken
        off the schedule and recorded once as a missed fire saying why, and the other jobs fire
        on. A new definition of it (or the next start) schedules it again."""
        reason = (f"not scheduled: its trigger failed ({type(exc).__name__}: {_clean(exc)}); "
                  f"it is scheduled again when its definition changes")
        log.error("job %s: %s", job_id, reason, exc_info=exc)
        if self._store.stamp(job_id)[0]:
            self._store.remove_job(job_id)
        rec = self._service.book.get(job_id)
        if rec is None or self._broken.get(job_id) == (rec.hash, reason):
            return []
        self._broken[job_id] = (rec.hash, reason)
        return [self._row(types.SimpleNamespace(id=job_id), moment or now, rec, "missed",
                          reason)]

    def _forget(self) -> None:
        """After a failed commit: memory is ahead of the table; read it again, check it all."""
        self._store.invalidate()
        with self._asked_lock:
            self._asked_all = True

    def _release_waiters(self) -> None:
        with self._asked_lock:
            waiters, self._waiters = self._waiters, []
        for done in waiters:
            done.set()

    def _sync(self, job_id: str, now: dt.datetime) -> None:
        """Make APScheduler's job match its definition: add, rebuild, pause or remove it."""
        rec = self._service.book.get(job_id)
        if self._in_step(job_id):
            return   # every job on a restart: unpickling 10,000 jobs took seconds
        job = self._store.lookup_job(job_id) if self._store.stamp(job_id)[0] else None
        if rec is None or not rec.definition.is_enabled or rec.state == "manual":
            if job is not None:
                self._store.remove_job(job_id)
            return
        want = rec.schedule_hash(self.timezone)
        if job is None:
            trigger = build_trigger(rec.definition.trigger, self.timezone, now)
            first = None if rec.paused else trigger.get_next_fire_time(None, now)
            if first is not None or (rec.paused and not rec.finished()):
                self._store.hashes[job_id] = want
                self.add_job(EXECUTE_JOB, trigger=trigger, args=[job_id], id=job_id,
                             name=job_id, next_run_time=first, **_aps_options(rec.definition))
            return
        if self._store.hashes.get(job_id) != want:
            self._rebuild(rec, job, want, now)
        elif rec.paused != (job.next_run_time is None) and job_id not in self._store.done:
            first = None if rec.paused else job.trigger.get_next_fire_time(None, now)
            if first is None and not rec.paused:
                self._store.remove_job(job_id)   # resumed after its only fire time
            else:
                self.modify_job(job_id, next_run_time=first)

    def _in_step(self, job_id: str) -> bool:
        """Does the stored schedule match the definition (known without unpickling)?"""
        rec = self._service.book.get(job_id)
        stored, stamp = self._store.stamp(job_id)
        return stored and rec is not None and rec.definition.is_enabled and \
            rec.state != "manual" and (rec.paused == (stamp is None) or
                                       job_id in self._store.done) and \
            self._store.hashes.get(job_id) == rec.schedule_hash(self.timezone)

    def _rebuild(self, rec: JobRecord, job, want: str, now: dt.datetime) -> None:
        """A changed definition: a new schedule starts from now; the same schedule on today's
        trigger code keeps its next fire time (and so its phase); options change in place."""
        have = (self._store.hashes.get(rec.definition.id) or "").split(":")
        new_def, new_spec, new_code = want.split(":")
        changes = _aps_options(rec.definition)
        trigger = build_trigger(rec.definition.trigger, self.timezone, now)
        if len(have) == 3 and have[1] != new_spec:
            first = None if rec.paused else trigger.get_next_fire_time(None, now)
            if first is None and not rec.paused:
                self._store.remove_job(job.id)
                return
            self._store.done.discard(job.id)   # a new schedule: fire times again
            changes.update(trigger=trigger, next_run_time=first)
        else:
            if len(have) != 3 or have[2] != new_code:   # stored by older code (or before v2)
                changes["trigger"] = trigger
            if rec.paused != (job.next_run_time is None) and job.id not in self._store.done:
                changes["next_run_time"] = None if rec.paused else trigger.get_next_fire_time(
                    None, now)
        self._store.hashes[job.id] = want
        self.modify_job(job.id, **changes)

    def _fire(self, job, now: dt.datetime) -> list[dict]:
        """The rows of a due job's fire times, and its schedule moved past them."""
        times, left_out, following = _due_times(job, now)
        rec = self._service.book.get(job.id)
        rows = []
        if job.coalesce and len(times) > 1:
            reason = f"coalesced: the fire at {_iso(times[-1])} ran in its place"
            rows += [self._row(job, t, rec, "missed", reason) for t in times[:-1]]
            times = times[-1:]
        for moment in times:
            late = (now - moment).total_seconds()
            if job.misfire_grace_time is not None and late > job.misfire_grace_time:
                rows.append(self._row(job, moment, rec, "missed", f"missed by {late:.1f}s "
                                      f"(misfire_grace_time {job.misfire_grace_time:g}s)"))
            else:
                rows.append(self._row(job, moment, rec, "queued", None))
        if left_out:
            rows[0]["error"] += f"; and {left_out} earlier fire times were missed as well"
        if following is None:
            self._store.finish_job(job)
        else:
            self._store.move_job(job, following)
        return rows

    def _row(self, job, moment: dt.datetime, rec: Optional[JobRecord], status: str,
             error: Optional[str]) -> dict:
        scheduled = _naive_utc(moment)
        late_start = self.leading_since is not None and scheduled < self.leading_since
        row = {"id": new_run_id(self._service.cluster.offset), "job_id": job.id,
               "status": status, "attempt": 1,
               "trigger": "catchup" if late_start and status == "queued" else "schedule",
               "scheduled_at": scheduled, "due_at": scheduled, "error": error,
               "epoch": self._store.epoch, "run_on": rec.run_on if rec else ""}
        if status != "queued":
            row["finished_at"] = _naive_utc(self._service.cluster.now())
        return row


EXECUTE_JOB = "task_scheduler:execute_job"
# The loop's own errors end a wakeup (retried from the table, or the node steps down); any other
# error while scheduling a job is that job's, which is set aside while the others fire on.
_LOOP_ERRORS = (sa.exc.SQLAlchemyError, NotLeader)
CLAIM_AHEAD = 500       # runs a node claims beyond its workers, at most (see Runner._capacity)
MAX_MISSED_ROWS = 100   # missed fire times recorded one by one per job and wakeup; more are
#                         counted in the first row (a job every second, down for a day)


def _due_times(job, now: dt.datetime, limit: int = 100_000) -> tuple[list, int, Any]:
    """The fire times of ``job`` due by ``now`` (the last MAX_MISSED_ROWS + 1 of them), how many
    more were due, and the next fire time after them. After ``limit`` steps behind, the next
    fire time is taken from now on (APScheduler would walk every missed time)."""
    times: collections.deque = collections.deque(maxlen=MAX_MISSED_ROWS + 1)
    current, count = job.next_run_time, 0
    while current is not None and current <= now and count < limit:
        times.append(current)
        count += 1
        current = job.trigger.get_next_fire_time(current, now)
    if current is not None and current <= now:
        current = job.trigger.get_next_fire_time(None, now)
    return list(times), count - len(times), current


def fire_times(trigger, first: dt.datetime, count: int) -> list:
    times, current = [first], first
    while len(times) < count:
        try:
            current = trigger.get_next_fire_time(current, current)
        except (OverflowError, ValueError):   # past the year 9999
            break
        # timestamps, not datetimes: two times of one zone compare by wall clock (fold ignored)
        if current is None or current.timestamp() <= times[-1].timestamp():
            break
        times.append(current)
    return times


def _aps_options(defn: JobDefinition) -> dict:
    return dict(max_instances=defn.max_instances, coalesce=defn.coalesce,
                misfire_grace_time=defn.misfire_grace_time)


def _command_list(defn: JobDefinition) -> Optional[list]:
    if defn.command is None:
        return [defn.func, *map(str, defn.args)] if defn.kind == "command" else None
    if isinstance(defn.command, list) or defn.shell:
        return [defn.command] if defn.shell else list(defn.command)
    return shlex.split(defn.command)


def _search_text(rec: JobRecord) -> str:
    d = rec.definition
    return " ".join([d.id, d.description, d.func or "", str(d.command or ""), *d.tags]).lower()


def _local_zone():
    from tzlocal import get_localzone   # APScheduler's own dependency
    return get_localzone()


# --------------------------------------------------------------------------------------------
# Runner: the life of a run on this node (claim, execute, finish, retry, cancel)
# --------------------------------------------------------------------------------------------

_FENCE_WATCH = r"""
import os, select, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
kill_after, fd = float(sys.argv[1]), sys.stdin.fileno()
groups, termed, deadline, buf = set(), set(), float("inf"), b""
def end(pgids, sig):
    for pgid in pgids:
        try:
            os.killpg(pgid, sig)
        except OSError:
            pass
while True:
    if select.select([fd], [], [], 0.1)[0]:
        data = os.read(fd, 65536)
        if not data:
            if groups:
                end(groups, signal.SIGTERM)
                time.sleep(min(kill_after, 1.0))
                end(groups, signal.SIGKILL)
            break
        *lines, buf = (buf + data).split(b"\n")
        for line in lines:
            op, _, arg = line.partition(b" ")
            if op == b"D":
                deadline, termed = float(arg), set()
            elif op == b"+":
                groups.add(int(arg))
            elif op == b"-":
                groups.discard(int(arg))
    now = time.monotonic()
    if now >= deadline and groups:
        end(groups - termed, signal.SIGTERM)
        termed |= groups
        if now >= deadline + kill_after:
            end(groups, signal.SIGKILL)
            groups.clear()
"""


class _FenceWatch:
    """A tiny process beside this node (python -S, no imports of ours) that ends the process
    groups of this node's command runs when the node stops heart-beating them: past the
    fencing deadline it sends TERM, ``kill_after`` seconds later KILL; when this node dies
    (its pipe closes) at once. It acts while this process cannot: paused (SIGSTOP) or dead."""

    def __init__(self, kill_after: float):
        self._lock = threading.Lock()
        self._broken = False
        self._proc = subprocess.Popen([sys.executable, "-S", "-c", _FENCE_WATCH,
                                       f"{kill_after:g}"], stdin=subprocess.PIPE,
                                      start_new_session=True, close_fds=True)

    def deadline(self, at: float) -> None:
        self._send(f"D {at!r}")

    def add(self, pgid: int) -> None:
        self._send(f"+ {pgid}")

    def remove(self, pgid: int) -> None:
        self._send(f"- {pgid}")

    def close(self) -> None:
        with self._lock, contextlib.suppress(OSError):
            self._proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(3)

    def _send(self, line: str) -> None:
        with self._lock:
            try:
                self._proc.stdin.write(line.encode() + b"\n")
                self._proc.stdin.flush()
            except (OSError, ValueError) as exc:   # it died, or was closed at stop
                if not self._broken:
                    log.error("fence watch: cannot reach it (%s); runs of this node are not "
                              "ended by it if this node pauses", exc)
                self._broken = True


class Runner:
    """Runs queued runs on this node: the leader's fires, manual runs and retries all take this
    one path. It claims what its free workers can start, runs it in its thread pool, writes the
    end through the history writer, queues the retry, and ends runs asked to stop."""

    def __init__(self, service: SchedulerService):
        self._service, self.config = service, service.config
        self.pool = concurrent.futures.ThreadPoolExecutor(self.config.max_workers, "ts-run")
        self.active: dict[str, _ActiveRun] = {}
        self.recent: collections.OrderedDict = collections.OrderedDict()   # ended here, maybe
        # not yet committed by the history writer: reads must still find them
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._hurry = threading.Event()
        self._stopping = False
        self._failing = False
        self._labels_ok = label_sets(self.config.labels)
        self._fence_at = float("inf")   # monotonic: self-fencing deadline (see FENCE_AT)
        self._watch: Optional[_FenceWatch] = None
        # Retries (with the run they follow) held until that run's end is committed: another
        # node's claim would count the run as still going (max_instances) and skip the retry.
        # Retries the database refused wait here too.
        self._held: list = []
        # Seconds a run here takes (a moving average), for the claim-ahead; until runs tell,
        # taken to be long: nothing is claimed ahead of free workers.
        self._typical = 10.0
        self._masked: tuple = (0.0, [])   # (monotonic refresh time, every job's secrets)
        self._masks: dict = {}
        self._thread = threading.Thread(target=self._loop, name="ts-runner", daemon=True)
        self._flusher = threading.Thread(target=self._flush_output, name="ts-output",
                                         daemon=True)

    def start(self) -> None:
        if self._service.store.postgres:   # other nodes may give this node's runs up
            try:
                self._watch = _FenceWatch(self.config.node_timeout * (FENCE_KILL - FENCE_AT))
            except OSError as exc:
                log.error("fence watch: cannot start %s (%s); this node's commands are ended "
                          "by itself only, not while it is paused", sys.executable, exc)
            self._fenced_until(time.monotonic())
        self._thread.start()
        self._flusher.start()

    def wake(self, _payload: Any = None) -> None:
        self._wake.set()

    def hurry(self) -> None:
        self._hurry.set()

    # queueing

    def run_now(self, job_id: str, params: Optional[dict] = None, rerun_of: Optional[str] = None
                ) -> dict:
        rec = self._service.book.require(job_id)
        limit = rec.definition.max_instances
        if self._service.store.active_count(job_id, self._service.history.unsettled_ids()) \
                >= limit:
            raise JobConflict(f"job {job_id!r} is already running (max_instances={limit})")
        now = self._service.now()
        run = {"id": new_run_id(self._service.cluster.offset), "job_id": job_id,
               "trigger": "manual", "attempt": 1,
               "scheduled_at": now, "due_at": now, "status": "queued", "run_on": rec.run_on,
               "params": json.dumps(params) if params else None, "rerun_of": rerun_of}
        self._service.store.queue_runs([run])
        self.wake()
        return run_to_dict(_run_row(run))

    # claiming and executing

    def _loop(self) -> None:
        while not self._stopping:
            self._wake.wait(self.config.queue_poll)
            self._wake.clear()
            try:
                self.queue_held()
                self._claim_while_free()
                if self._failing:
                    log.info("runner: the database answers again")
                self._failing = False
            except sa.exc.DBAPIError as exc:
                if not self._failing:
                    log.warning("runner: cannot claim runs: %s", _clean(exc))
                self._failing = True
            except Exception:
                log.exception("runner: unexpected error; continuing")

    def _flush_output(self) -> None:
        """Output of running runs reaches the database while it changes, a batch at a time:
        any node can show it, and a crash keeps what was written."""
        while not self._stopping:
            time.sleep(OUTPUT_FLUSH)
            for active in list(self.active.values()):
                written = (active.out.total, active.err.total)
                if written != active.flushed:
                    active.flushed = written
                    self._service.history.update(active.run["id"], stdout=active.out.text(),
                                                 stderr=active.err.text(),
                                                 truncated=active.out.truncated
                                                 or active.err.truncated)

    def _claim_while_free(self) -> None:
        while not self._stopping:
            free = self._capacity() - len(self.active)
            if free <= 0 or time.monotonic() >= self._fence_at:   # fenced: it would end them
                return
            started, ended = self._service.store.claim(self._labels_ok, min(free, 200),
                                                       self._policy,
                                                       self._service.notifier.notes_for,
                                                       self._service.history.unsettled_ids())
            self.take(started, ended)
            if len(started) + len(ended) < free:
                return

    def start_in(self, conn, fires: list[dict]) -> list[dict]:
        """The leader's fresh fires this node's free workers take, inside its wakeup."""
        free = self._capacity() - len(self.active)
        if free <= 0 or self._stopping or time.monotonic() >= self._fence_at:
            return []
        return self._service.store.start_fresh(conn, fires, self._labels_ok, free, self._policy,
                                               self._service.history.unsettled_ids())

    def take(self, started: list, ended: list) -> None:
        """Start claimed runs in the pool; remember the ones the claim ended."""
        for run in ended:
            self._remember(run)
            log.warning("run %s of %s %s: %s", run["id"], run["job_id"], run["status"],
                        run["error"])
        for run in started:
            mask = self.mask_for(run["job_id"])
            active = _ActiveRun(run, MaskedOutput(self.config.output_limit, mask),
                                MaskedOutput(self.config.output_limit, mask))
            active.on_spawn = functools.partial(self._spawned, run["id"])
            active.watch = self._watch and self._watch.add
            with self._lock:
                self.active[run["id"]] = active
            try:
                self.pool.submit(self._execute, active)
            except RuntimeError:   # the service stopped between the claim and now
                self.finish(active, _Outcome("interrupted", error="service stopped"))

    def mask_for(self, job_id: str) -> SecretMask:
        """The secrets masked in a run's output: the service's, this job's notify targets'
        (as they are now) and every job's (as they were at most MASK_REFRESH seconds ago: the
        book is not walked for each run)."""
        now = time.monotonic()
        if now >= self._masked[0]:
            values = [v for rec in list(self._service.book.records.values())
                      if rec.definition.notify for v in notify_secrets(rec.definition.notify)]
            self._masked = (now + MASK_REFRESH, values)
        rec = self._service.book.get(job_id)
        own = notify_secrets(rec.definition.notify) if rec is not None else []
        key = frozenset([*self._service.secrets, *self._masked[1], *own])
        if key not in self._masks:
            if len(self._masks) > 64:
                self._masks.clear()
            self._masks[key] = SecretMask(key)
        return self._masks[key]

    def _spawned(self, run_id: str, pid: int) -> None:
        """A command started: its row keeps the process group, to be found after a crash."""
        self._service.history.update(run_id, pid=pid)

    def end_leftovers(self, clustered: bool) -> None:
        """At start-up, before any run starts: processes of runs this node left (a crash, a
        ``kill -9``) still run and carry TS_RUN_ID. End them (TERM their groups, KILL after
        the grace), so that they never run beside new runs nor past max_instances, and say so
        in each run. On PostgreSQL only this node's runs (by node id): another node's
        processes on this host are its own."""
        found = run_processes()
        if not found:
            return
        store = self._service.store
        for row in store.runs_of_processes(sorted(found)):
            if clustered and row.node != store.node:
                continue
            groups = end_processes(found[row.id], self.config.kill_grace)
            shown = ", ".join(map(str, groups or found[row.id]))
            note = (f"; its process group {shown} was still running and was ended at the "
                    f"restart of {store.node}")
            log.warning("run %s of %s: %d processes left by the service's last life were "
                        "still running (group %s); ended them", row.id, row.job_id,
                        len(found[row.id]), shown)
            store.add_to_error(row.id, note)

    def _capacity(self) -> int:
        """How many runs this node holds at once: its workers, and as many more as they
        would start within about a second at the typical run time here. Short runs are so
        claimed a batch per transaction, not one per free worker (a burst of 200 no-op runs:
        2 claims, not 20); long runs are claimed one per free worker, so that another node
        can start what this one cannot yet. Claimed-ahead runs say ``queued`` (with this
        node) while they wait; a worker makes them ``running``, with its ``started_at``."""
        workers = self.config.max_workers
        return workers + min(CLAIM_AHEAD, int(workers * 1.0 / max(self._typical, 0.002)))

    def _policy(self, job_id: str) -> Optional[tuple]:
        rec = self._service.book.get(job_id)   # no lock: this runs inside the claim
        return None if rec is None else (rec.definition.max_instances,
                                         rec.definition.misfire_grace_time)

    def _execute(self, active: _ActiveRun) -> None:
        run = active.run
        if active.stop_reason is not None:   # cancelled while it waited for a worker
            run["started_at"] = None
            self.finish(active, _Outcome(active.stop_reason, error=active.stop_error or
                                         "cancelled before it started"))
            return
        active.began = self._service.now()
        # Only now does the run read running, with the time its code starts (a claimed run
        # waits for a worker as queued); the writer merges this with a quick run's end.
        run.update(status="running", started_at=active.began)
        self._service.history.update(run["id"], status="running", started_at=active.began)
        rec = self._service.book.get(run["job_id"])
        token = _current_run.set(RunContext(self._service, run["id"], run["job_id"],
                                            run["scheduled_at"]))
        try:
            outcome = (self._run_job(rec.definition, active) if rec is not None else
                       _Outcome("cancelled", error="the job was removed before it started"))
        except Exception as exc:  # our own failure: record it rather than lose the run; the
            # traceback (the service's files) goes to the service log only
            log.exception("run %s of %s failed inside task-scheduler", run["id"], run["job_id"])
            outcome = _Outcome("failed", error=f"task-scheduler could not run it: "
                                                f"{type(exc).__name__}: {_clean(exc)}")
        finally:
            _current_run.reset(token)
        self.finish(active, outcome)

    def _run_job(self, defn: JobDefinition, active: _ActiveRun) -> _Outcome:
        params = json.loads(active.run.get("params") or "null") or {}
        limit, base_dir = self.config.output_limit, self.config.base_dir
        if defn.kind == "python":
            try:
                func = resolve_callable(defn.func, base_dir, seen_within=1.0)
            except InvalidJob as exc:
                return _Outcome("failed", error=f"func: {exc}")
            return _settled(active, run_python(func, params.get("args", defn.args),
                                               {**defn.kwargs, **params.get("kwargs", {})},
                                               limit, active.out, active.err))
        run = active.run
        env = {**_job_env(defn, self._service.passed_env), **params.get("env", {}),
               "TS_JOB_ID": defn.id,
               "TS_RUN_ID": run["id"], "TS_SCHEDULED_AT": _iso(run["scheduled_at"]) or ""}
        cwd = _resolve_path(defn.cwd, base_dir) if defn.cwd else base_dir
        argv = command_argv(defn.model_copy(update={"args": params.get("args", defn.args)}),
                            base_dir)
        return _settled(active, run_command(argv, env, cwd, defn.timeout, limit,
                                            self.config.kill_grace, active))

    # ending

    def finish(self, active: _ActiveRun, outcome: _Outcome) -> None:
        run = active.run
        with self._lock:
            if self.active.pop(run["id"], None) is None:
                return   # already recorded (the service stopped while this run went on)
        if active.began is None and self._stopping and outcome.status == "interrupted":
            # Claimed but never started: back to the queue (the next start, another node).
            self._service.history.update(run["id"], node=None, heartbeat_at=None)
            return
        if self._watch is not None and active.proc is not None:
            self._watch.remove(active.proc.pid)
        if active.stop_reason is None and outcome.status == "failed" and \
                active.proc is not None and time.monotonic() >= self._fence_at:
            # Killed by the fence watch while this process was paused (SIGSTOP): say so.
            active.stop_reason, active.stop_error = "interrupted", self._fence_reason()
        if active.stop_reason == "interrupted" and outcome.status != "interrupted":
            outcome = dataclasses.replace(outcome, status="interrupted",
                                          error=active.stop_error or outcome.error)
        fields = dict(status=outcome.status, finished_at=self._service.now(),
                      exit_code=outcome.exit_code, stdout=outcome.stdout,
                      error=self.mask_for(run["job_id"]).text(outcome.error),
                      stderr=outcome.stderr + _nul_note(active.out, active.err),
                      truncated=outcome.truncated)
        fields = _db_text(fields)   # as stored: the API, notifications and the row agree
        if active.began is None:
            fields["started_at"] = None   # ended before a worker took it up
        else:
            fields["started_at"] = active.began
            took = (fields["finished_at"] - active.began).total_seconds()
            self._typical += (max(took, 0.0) - self._typical) * 0.2
        run.update(fields)
        if not active.rescued:
            notifier = self._service.notifier
            previous = self._previous(run) \
                if outcome.status == "succeeded" and notifier.wants_previous(run["job_id"]) \
                else None
            self._service.history.update(run["id"], notes=notifier.notes_for([run], previous),
                                         **fields)
        self._remember(run)
        level = logging.INFO if outcome.status == "succeeded" else logging.WARNING
        log.log(level, "run %s of %s: %s%s", run["id"], run["job_id"], outcome.status,
                f" ({_clean(Exception(fields['error']))})" if outcome.error else "")
        if not active.rescued and outcome.status in ("failed", "timeout", "interrupted"):
            self._retry(run)   # interrupted: by this node's stop or its self-fencing
        self.wake()

    def _previous(self, run: dict) -> Optional[str]:
        """How the job's run before this one ended: the later of the table's answer and the
        runs ended here whose end the history writer has not written yet."""
        found = self._service.store.previous_outcome(run["job_id"], run["id"])
        best = tuple(found) if found else ("", None)
        with self._lock:
            for other in self.recent.values():
                if other["job_id"] == run["job_id"] and best[0] < other["id"] < run["id"] \
                        and other.get("status") in ENDED_STATUSES:
                    best = (other["id"], other["status"])
        return best[1]

    def _retry(self, run: dict) -> None:
        """Queue the next attempt of a failed run (durable: it survives a restart)."""
        rec = self._service.book.get(run["job_id"])
        spec = rec.definition.retries if rec else None
        if spec is None or run["attempt"] > spec.max:
            return
        delay = spec.delay * spec.backoff ** (run["attempt"] - 1)
        retry = {"id": new_run_id(self._service.cluster.offset), "job_id": run["job_id"],
                 "trigger": "retry",
                 "attempt": run["attempt"] + 1, "scheduled_at": run["scheduled_at"],
                 "due_at": self._service.now() + dt.timedelta(seconds=delay),
                 "status": "queued", "run_on": run.get("run_on") or "",
                 "params": run.get("params")}
        if self._service.store.postgres:
            with self._lock:
                self._held.append((retry, run["id"]))
            self.queue_held()
        else:   # one node: its claims leave out runs whose end is not written yet
            try:
                self._service.store.queue_runs([retry])
            except sa.exc.DBAPIError as exc:
                log.error("run %s of %s: could not queue its retry: %s", run["id"],
                          run["job_id"], _clean(exc))
                return
        log.info("run %s of %s will be retried in %ss (attempt %d of %d)", run["id"],
                 run["job_id"], delay, retry["attempt"], spec.max + 1)

    def after_rescue(self, rows: list) -> None:
        """Runs the leader found orphaned (their node went silent): tell, retry where allowed."""
        self._service.store.queue_notes(self._service.notifier.notes_for(
            [dict(r._mapping) for r in rows]))
        for row in rows:
            run = run_to_dict(row)
            log.warning("run %s of %s: %s", run["id"], run["job_id"], run["error"])
            self._retry({**run, "scheduled_at": row.scheduled_at, "run_on": row.run_on})

    def after_heartbeat(self, alive: set, cancels: set, since: float) -> None:
        """Runs of this node the database no longer shows running were rescued while this node
        was silent (stopped, cut off): end them here, or they would run twice."""
        self._fenced_until(since)
        self.queue_held()
        for run_id, active in list(self.active.items()):
            if run_id in cancels:
                self._stop(active, "cancelled")
            elif run_id not in alive and active.claimed < since:
                active.rescued = True
                self._stop(active, "interrupted", "interrupted: this node was silent too long "
                           "and the run was given up (and retried) elsewhere")

    def queue_held(self) -> None:
        """Queue the held retries whose run's end is committed (the unique fire key drops one
        that the leader's rescue queued already)."""
        unsettled = self._service.history.unsettled_ids()
        with self._lock:
            ready = [retry for retry, after in self._held if after not in unsettled]
            self._held = [(retry, after) for retry, after in self._held if after in unsettled]
        if not ready:
            return
        try:
            self._service.store.queue_runs(ready)
        except sa.exc.DBAPIError as exc:
            log.warning("could not queue %d retries yet (%s); trying again", len(ready),
                        _clean(exc))
            with self._lock:
                self._held.extend((retry, None) for retry in ready)

    def _fenced_until(self, heartbeat_sent: float) -> None:
        if time.monotonic() >= self._fence_at:   # back after the deadline (a pause): runs the
            self.fence_if_due()                  # watch ended are marked before it moves on
        self._fence_at = heartbeat_sent + self.config.node_timeout * FENCE_AT
        if self._watch is not None:
            self._watch.deadline(self._fence_at)

    def fence_if_due(self) -> None:
        """Self-fencing: this node has not heart-beaten its runs for FENCE_AT of node_timeout
        (the database is unreachable from here, or this process was paused), so the leader may
        soon give them up and retry them elsewhere. End its command runs now, before that can
        happen; their end (and why) is written when the database answers again. A python
        job's thread cannot be ended: it goes on (docs/cluster.md)."""
        if time.monotonic() < self._fence_at:
            return
        ending = [a for a in list(self.active.values()) if a.stop_reason is None
                  and (a.proc is not None or a.began is None)]
        if ending:
            log.warning("node %s: no heartbeat got through for %.0fs; ending its %d command "
                        "runs before another node may give them up (self-fencing)",
                        self._service.store.node, time.monotonic() - self._fence_at +
                        self.config.node_timeout * FENCE_AT, len(ending))
        for active in ending:
            self._stop(active, "interrupted", self._fence_reason())

    def _fence_reason(self) -> str:
        silent = time.monotonic() - self._fence_at + self.config.node_timeout * FENCE_AT
        return (f"interrupted: node {self._service.store.node} could not heartbeat for "
                f"{silent:.0f}s (database unreachable, or the node paused), so it ended the "
                f"run itself before another node could give it up (self-fencing)")

    def cancel(self, run_id: str) -> dict:
        """Cancel a queued run, or end a running command (on whichever node runs it)."""
        for _ in range(3):   # a queued run may be claimed meanwhile: look again
            active = self.active.get(run_id)
            if active is not None:
                self._stop(active, "cancelled")
                waiting = active.began is None   # claimed ahead: no worker will run it now
                return run_to_dict({**active.run, "status": "cancelled", "started_at": None}
                                   if waiting else active.run)
            row = self._service.store.run(run_id)
            if row is None:
                raise RunNotFound(f"run {run_id!r} does not exist")
            if row.status == "queued" and self._service.store.cancel_queued(run_id):
                log.info("run %s of %s cancelled before it started", run_id, row.job_id)
                return run_to_dict(self._service.store.run(run_id))
            if row.status in ("queued", "running") and \
                    row.node not in (None, self._service.store.node):   # held by another node
                if row.status == "running":
                    self._refuse_python(row.job_id, run_id)
                self._service.store.request_cancel(run_id)
                log.info("run %s of %s: cancel asked of node %s", run_id, row.job_id, row.node)
                return run_to_dict(row)
            if row.status in FINAL_STATUSES:
                break
        raise JobConflict(f"run {run_id} is not running (status {row.status})")

    def _stop(self, active: _ActiveRun, reason: str, error: Optional[str] = None) -> None:
        if reason == "cancelled" and active.began is not None:
            self._refuse_python(active.run["job_id"], active.run["id"])
        ending = active.stop_reason is not None   # a killer is at work already
        active.stop_reason, active.stop_error = reason, error
        if active.proc is not None and not ending:
            threading.Thread(target=kill_group, args=(active.proc, self.config.kill_grace),
                             daemon=True).start()
        log.info("run %s of %s: %s", active.run["id"], active.run["job_id"],
                 "cancelled" if reason == "cancelled" else "being ended")

    def _refuse_python(self, job_id: str, run_id: str) -> None:
        rec = self._service.book.get(job_id)
        if rec is not None and rec.definition.kind == "python":
            raise JobConflict(f"run {run_id} is a python job; a running thread cannot be "
                              f"stopped from outside (make the job return, or run it as a "
                              f"command job to get timeout and cancel)")

    def _remember(self, run: dict) -> None:
        with self._lock:
            self.recent[run["id"]] = run
            while len(self.recent) > 500:   # far more than one writer batch can hold back
                self.recent.popitem(last=False)

    # stopping

    _stop_by: Optional[float] = None   # monotonic time by which stop() is done, once it began

    def stop(self, grace: float) -> None:
        """Claim nothing more; give running runs ``grace`` seconds (saying what is awaited);
        then end commands (TERM, KILL) and record what is left as interrupted."""
        self._stopping = True
        self._wake.set()
        self._thread.join(5)
        # what the log counts down: the time left for the whole stop, TERM and KILL included
        self._stop_by = time.monotonic() + grace + self.config.kill_grace + 1
        self._wait(grace)
        for active in list(self.active.values()):
            if active.proc is not None and active.proc.poll() is None:
                active.stop_reason = "interrupted"
                grace_kill = 0 if self._hurry.is_set() else self.config.kill_grace
                threading.Thread(target=kill_group, args=(active.proc, grace_kill),
                                 daemon=True).start()
        self._wait(0.5 if self._hurry.is_set() else self.config.kill_grace + 1)
        for active in list(self.active.values()):
            self.finish(active, _Outcome("interrupted", error="service stopped"))
        self.pool.shutdown(wait=False, cancel_futures=True)
        if self._held and self._service.history.flush(10):
            self.queue_held()   # their runs' ends are written: other nodes may take them
        if self._watch is not None:
            self._watch.close()

    def _wait(self, seconds: float) -> None:
        deadline, next_note = time.monotonic() + seconds, time.monotonic()
        while self.active and time.monotonic() < deadline and not self._hurry.is_set():
            if time.monotonic() >= next_note and seconds > 1:
                next_note = time.monotonic() + 5
                left = ", ".join(f"{a.run['job_id']} ({a.run['id']}, "
                                 f"{time.monotonic() - a.claimed:.0f}s)"
                                 for a in list(self.active.values())[:5])
                log.info("stopping: waiting up to %.0fs for %d running runs: %s",
                         max((self._stop_by or deadline) - time.monotonic(), 0),
                         len(self.active), left)
            self._hurry.wait(0.05)


def _settled(active: _ActiveRun, outcome: _Outcome) -> _Outcome:
    """The outcome with the run's output as it ends: masked to the last byte."""
    if not isinstance(active.out, MaskedOutput):
        return outcome
    return dataclasses.replace(outcome, stdout=active.out.settle(), stderr=active.err.settle())


# --------------------------------------------------------------------------------------------
# Notifications: webhook, Slack, mail; queued with the end of a run, sent by the leader
# --------------------------------------------------------------------------------------------

class Notifier:
    """Tells people how runs ended. What to send is queued in the database in the transaction
    that ends the run (a restart or a failover loses nothing, and a run never waits for it); the
    leader sends it, retrying with backoff for ``notify_retry_for`` seconds, and each attempt is
    recorded on the run. Secrets (webhook secrets and headers, Slack URLs, the SMTP password)
    never reach the API, the GUI or the log."""

    def __init__(self, service: SchedulerService):
        self._service, self.config = service, service.config
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ts-notify", daemon=True)
        # Each destination is sent to by one sender at a time, destinations side by side: a
        # slow or dead one holds its own notices only.
        self._senders = concurrent.futures.ThreadPoolExecutor(NOTIFY_SENDERS, "ts-notify-send")
        self._busy: set = set()            # destinations a sender works for
        self._queues: dict = {}            # destination -> deque of notice rows
        self._queued: set = set()          # ids of the notices in those queues
        self._busy_lock = threading.Lock()

    def start(self) -> None:
        self._service.bus.subscribe("ts_notes", lambda _payload: self._wake.set())
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(15)
        self._senders.shutdown(wait=True, cancel_futures=True)   # a delivery: NOTIFY_TIMEOUT
        waiting = [row for queue in self._queues.values() for row in queue]
        for row in waiting:   # due again now, not when their hold runs out: a restart sends
            try:
                self._service.store.record_note(row.id, next_at=row.next_at)
            except sa.exc.DBAPIError as exc:
                log.warning("notifications: %s stays held a while: %s", row.id, _clean(exc))

    def notes_for(self, runs: list, previous: Optional[str] = None) -> list[dict]:
        """The notifications the ends of these runs call for (by each job's ``notify``)."""
        notes = []
        for run in runs:
            rec = self._service.book.get(run["job_id"])
            if rec is None or not rec.definition.notify:
                continue
            events = _events(run["status"], previous, _will_retry(rec.definition, run))
            for target in rec.definition.notify:
                for event in events & set(target.on):
                    notes.append(self._note(run, rec, event, target))
        return notes

    def wants_previous(self, job_id: str) -> bool:
        rec = self._service.book.get(job_id)
        return rec is not None and any("recovered" in t.on for t in rec.definition.notify)

    def _note(self, run: dict, rec: JobRecord, event: str, target) -> dict:
        now = self._service.now()
        return {"id": new_run_id(), "run_id": run["id"], "job_id": run["job_id"],
                "event": event, "target": json.dumps(target.model_dump()),
                "payload": json.dumps(self._payload(run, rec, event), ensure_ascii=False),
                "status": "pending", "attempts": 0, "next_at": now, "created_at": now,
                "log": "[]"}

    def _payload(self, run: dict, rec: JobRecord, event: str) -> dict:
        shown = run_to_dict(run)
        lines = {name: (run.get(name) or "").splitlines()[-NOTIFY_LINES:]
                 for name in ("stdout", "stderr")}
        base = (self.config.public_url or self._service.base_url or "").rstrip("/")
        return {"event": event, "job": {"id": rec.definition.id,
                                        "description": rec.definition.description},
                "run": {k: shown[k] for k in ("id", "status", "trigger", "attempt",
                                              "scheduled_at", "started_at", "finished_at",
                                              "duration_s", "exit_code", "error", "node")},
                "output": lines, "url": f"{base}/runs/{run['id']}" if base else None}

    # sending (the leader)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            if self._service.cluster.role != "leader":
                continue
            try:
                self._dispatch()
            except sa.exc.DBAPIError as exc:
                log.warning("notifications: database error: %s", _clean(exc))
            except Exception:
                log.exception("notifications: unexpected error; continuing")

    def _dispatch(self) -> None:
        """Queue due notices by destination; a destination with no sender at work gets one.
        A notice already queued (taken again once its hold ran out) is not queued twice."""
        for row in self._service.store.take_notes(20, hold=NOTIFY_TIMEOUT * 3):
            where = _destination(json.loads(row.target))
            with self._busy_lock:
                if row.id in self._queued:
                    continue
                self._queued.add(row.id)
                self._queues.setdefault(where, collections.deque()).append(row)
                idle = where not in self._busy
                self._busy.add(where)
            if idle:
                self._senders.submit(self._send_queue, where)

    def _send_queue(self, where: str) -> None:
        """One destination's notices in order, until none is left. After a failure the rest
        wait for their turn (the destination is down: each would take the whole deadline);
        they are due again when their hold runs out."""
        try:
            while not self._stopping.is_set():
                with self._busy_lock:
                    queue = self._queues.get(where)
                    if not queue:   # at once with the check: a notice queued now finds no
                        self._busy.discard(where)   # sender and starts one
                        self._queues.pop(where, None)
                        return
                    row = queue.popleft()
                try:
                    ok = self._attempt(row)
                finally:
                    with self._busy_lock:
                        self._queued.discard(row.id)
                if not ok:
                    break
        except Exception:
            log.exception("notifications to %s: unexpected error; continuing", where)
        with self._busy_lock:   # failed: what waits is due again when its hold runs out
            if not self._stopping.is_set():   # stopping: stop() releases what waits
                for row in self._queues.pop(where, ()):
                    self._queued.discard(row.id)
            self._busy.discard(where)
        self._wake.set()

    def _attempt(self, row) -> bool:
        target = json.loads(row.target)
        try:
            detail, ok = self._send(target, row), True
        except Exception as exc:   # a refused connection, an HTTP error, SMTP's complaint
            detail, ok = _clean(exc), False
        attempts = row.attempts + 1
        now = self._service.now()
        history = [*json.loads(row.log), {"at": _iso(now), "ok": ok, "detail": detail[:300]}]
        given_up = not ok and (now - row.created_at).total_seconds() >= self.config.\
            notify_retry_for
        delay = self.config.notify_delays[min(attempts, len(self.config.notify_delays)) - 1]
        self._service.store.record_note(
            row.id, attempts=attempts, log=json.dumps(history[-20:]),
            status="sent" if ok else "failed" if given_up else "pending",
            next_at=now + dt.timedelta(seconds=0 if ok or given_up else delay))
        level = logging.INFO if ok else logging.WARNING
        log.log(level, "notification %s of run %s (%s to %s): %s%s", row.id, row.run_id,
                row.event, target_text(target), "sent" if ok else "failed: " + detail,
                "; given up" if given_up else "" if ok else f"; again in {delay:g}s")
        return ok

    def _send(self, target: dict, row) -> str:
        payload = json.loads(row.payload)
        if "webhook" in target:
            body = json.dumps(payload, ensure_ascii=False).encode()
            headers = {"Content-Type": "application/json", **target.get("headers", {}),
                       "X-Task-Scheduler-Event": row.event,
                       "X-Task-Scheduler-Delivery": row.id}
            if target.get("secret"):
                digest = hmac.new(target["secret"].encode(), body, hashlib.sha256).hexdigest()
                headers["X-Task-Scheduler-Signature-256"] = f"sha256={digest}"
            return _post(target["webhook"], body, headers)
        if "slack" in target:
            body = json.dumps({"text": _summary(payload, link=True)}, ensure_ascii=False)
            return _post(target["slack"], body.encode(), {"Content-Type": "application/json"})
        return self._mail(target["email"], payload)

    def _mail(self, addresses: list, payload: dict) -> str:
        import smtplib
        from email.message import EmailMessage
        if not self.config.smtp_url:
            raise SchedulerError("no SMTP server is set up (--smtp-url or TS_SMTP_URL)")
        url = urllib.parse.urlsplit(self.config.smtp_url)
        sender = dict(urllib.parse.parse_qsl(url.query)).get(
            "from", f"task-scheduler@{socket.gethostname()}")
        message = EmailMessage()
        message["Subject"] = _summary(payload, link=False).splitlines()[0][:200]
        message["From"], message["To"] = sender, ", ".join(addresses)
        message.set_content(_mail_text(payload))
        secure = url.scheme == "smtps"
        deadline = time.monotonic() + NOTIFY_TIMEOUT
        smtp = (smtplib.SMTP_SSL if secure else smtplib.SMTP)(
            url.hostname or "localhost", url.port or (465 if secure else 587),
            timeout=NOTIFY_TIMEOUT)
        with smtp, _deadline(lambda: smtp.sock, deadline):
            smtp.ehlo()
            if not secure and smtp.has_extn("starttls"):
                smtp.starttls()
                smtp.ehlo()
            elif not secure and url.username:
                raise SchedulerError(f"{url.hostname} offers no STARTTLS: the password is not "
                                     f"sent in clear (use smtps://)")
            if url.username:
                smtp.login(urllib.parse.unquote(url.username),
                           urllib.parse.unquote(url.password or ""))
            smtp.send_message(message)
        return f"mailed {len(addresses)} address(es) through {url.hostname}"


NOTIFY_LINES = 20     # last lines of each stream in a notification
NOTIFY_TIMEOUT = 10   # seconds one delivery may take, all of it (not each read)
NOTIFY_SENDERS = 8    # destinations sent to at once (each slow one holds one sender)


def _will_retry(defn: JobDefinition, run: dict) -> bool:
    """A failed or timed-out attempt that its job's ``retries`` run again (Runner._retry)."""
    return run["status"] in ("failed", "timeout") and defn.retries is not None and \
        run.get("attempt", 1) <= defn.retries.max


def _events(status: str, previous: Optional[str], retrying: bool = False) -> set:
    if retrying:   # 'failed' and 'timeout' go out once, for the last attempt
        return {"retrying"}
    if status == "succeeded":
        recovered = previous in ("failed", "timeout", "interrupted")
        return {"succeeded", "recovered"} if recovered else {"succeeded"}
    return {status} & set(NOTIFY_EVENTS)


def _post(url: str, body: bytes, headers: dict) -> str:
    """POST within NOTIFY_TIMEOUT in all. A redirect is not followed: it would carry the
    Authorization header and the signature to wherever the target points."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    deadline = time.monotonic() + NOTIFY_TIMEOUT
    opener = urllib.request.build_opener(_NoRedirect, _DeadlineHTTPHandler(deadline),
                                         _DeadlineHTTPSHandler(deadline))
    try:
        with opener.open(request, timeout=NOTIFY_TIMEOUT) as response:
            return f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        where = target_text({'webhook': url})
        if 300 <= exc.code < 400:
            location = urllib.parse.urlsplit(exc.headers.get("Location") or "")
            raise SchedulerError(
                f"HTTP {exc.code} from {where}: redirects are not followed (Location: "
                f"{_short(location._replace(query='', fragment='').geturl())}); set the "
                f"target's final address") from None
        raise SchedulerError(f"HTTP {exc.code} from {where}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        if time.monotonic() >= deadline:
            raise SchedulerError(f"{target_text({'webhook': url})}: no complete answer within "
                                 f"{NOTIFY_TIMEOUT}s") from None
        reason = getattr(exc, "reason", exc)   # the URL, with its secret, stays out
        raise SchedulerError(f"{target_text({'webhook': url})}: {_clean(reason)}") from None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None   # urllib then raises the 3xx as an HTTPError


class _DeadlineMixin:
    """An http.client connection whose socket is shut down at ``deadline`` (monotonic): a
    target that trickles a byte every few seconds cannot stretch the per-read timeout."""

    def __init__(self, *args, deadline: float, **kwargs):
        super().__init__(*args, **kwargs)
        self._deadline = deadline

    def connect(self) -> None:
        super().connect()
        self._ts_guard = _deadline(lambda sock=self.sock: sock, self._deadline)
        self._ts_guard.__enter__()

    def close(self) -> None:
        guard = getattr(self, "_ts_guard", None)
        if guard is not None:
            guard.__exit__(None, None, None)
        super().close()


class _DeadlineHTTP(_DeadlineMixin, http.client.HTTPConnection):
    pass


class _DeadlineHTTPS(_DeadlineMixin, http.client.HTTPSConnection):
    pass


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: float):
        super().__init__()
        self._deadline = deadline

    def http_open(self, req):
        return self.do_open(functools.partial(_DeadlineHTTP, deadline=self._deadline), req)


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: float):
        super().__init__()
        self._deadline = deadline

    def https_open(self, req):
        return self.do_open(functools.partial(_DeadlineHTTPS, deadline=self._deadline), req,
                            context=self._context)


class _deadline:
    """Shut down the socket ``get_sock()`` gives at ``deadline`` (monotonic), unless left
    before: a read blocked on it returns at once."""

    def __init__(self, get_sock, deadline: float):
        self._timer = threading.Timer(max(deadline - time.monotonic(), 0), self._cut, (get_sock,))
        self._timer.daemon = True

    def __enter__(self):
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()

    @staticmethod
    def _cut(get_sock) -> None:
        sock = get_sock()
        if sock is not None:   # closed already (an answer in time): shutdown() just fails
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _destination(target: dict) -> str:
    """Where a notice goes, as far as slowness goes: a web server, or the mail server."""
    if "email" in target:
        return "smtp"
    url = urllib.parse.urlsplit(target.get("webhook") or target.get("slack") or "")
    return f"{url.scheme}://{url.netloc.rpartition('@')[2]}"


def _summary(payload: dict, link: bool) -> str:
    run, job = payload["run"], payload["job"]
    mark = {"succeeded": "✓", "recovered": "✓"}.get(payload["event"], "✗")
    text = f"{mark} task-scheduler: job {job['id']} {payload['event']} (run {run['id']})"
    if run.get("error"):
        text += f"\n{run['error'].splitlines()[0][:300]}"
    if link and payload.get("url"):
        text += f"\n<{payload['url']}|Open the run>"
    return text


def _mail_text(payload: dict) -> str:
    run = payload["run"]
    lines = [_summary(payload, link=False), "", *(f"{k}: {v}" for k, v in run.items()
                                                  if v is not None)]
    if payload.get("url"):
        lines += ["", payload["url"]]
    for name, tail in payload["output"].items():
        if tail:
            lines += ["", f"--- last lines of {name} ---", *tail]
    return "\n".join(lines) + "\n"


def target_text(target: dict) -> str:
    """A notify target for people and logs: where it goes, without its secrets."""
    if "email" in target:
        return "mail to " + ", ".join(target["email"])
    url = urllib.parse.urlsplit(target.get("webhook") or target.get("slack") or "")
    kind = "webhook" if "webhook" in target else "slack"
    port = f":{url.port}" if url.port else ""
    return f"{kind} {url.scheme}://{url.hostname}{port}{'/…' if url.path not in ('', '/') else ''}"


def redact_target(target: dict) -> dict:
    """A notify target as the API and the GUI show it: the secrets replaced."""
    shown = dict(target)
    for key in ("webhook", "slack"):
        if key in shown:
            shown[key] = target_text({key: shown[key]}).split(" ", 1)[1]
    if shown.get("secret"):
        shown["secret"] = SECRET_SHOWN
    if shown.get("headers"):
        shown["headers"] = dict.fromkeys(shown["headers"], SECRET_SHOWN)
    return shown


SECRET_SHOWN = "(hidden)"


def restore_secrets(given: Any, stored: list) -> Any:
    """A notify list sent back as it was shown (secrets hidden, as the GUI's edit form and a
    GET-then-PUT do): each hidden value is taken from the stored target at the same place, when
    that target goes the same way. A secret is bound to its URL: a target whose URL changed
    gets no stored secret, and a hidden placeholder sent with it is refused."""
    if not isinstance(given, list):
        return given
    restored = []
    for index, target in enumerate(given):
        old = stored[index].model_dump() if index < len(stored) else {}
        if isinstance(target, dict) and _notify_kind(target) == _notify_kind(old):
            target = dict(target)
            for key in ("webhook", "slack"):
                if key in target and old.get(key) and target[key] == redact_target(old)[key]:
                    target[key] = old[key]
            _refuse_moved_secret(index, target, old)
            if target.get("secret") == SECRET_SHOWN:
                target["secret"] = old.get("secret")
            if isinstance(target.get("headers"), dict):
                target["headers"] = {name: old.get("headers", {}).get(name, value)
                                     if value == SECRET_SHOWN else value
                                     for name, value in target["headers"].items()}
        restored.append(target)
    return restored


def _refuse_moved_secret(index: int, target: dict, old: dict) -> None:
    if target.get("webhook") == old.get("webhook"):
        return
    hidden = [f"notify.{index}.secret"] if target.get("secret") == SECRET_SHOWN else []
    if isinstance(target.get("headers"), dict):
        hidden += [f"notify.{index}.headers.{name}" for name, value in target["headers"].items()
                   if value == SECRET_SHOWN]
    if hidden:
        message = (f"the webhook's URL changed, and a secret stays with the URL it was given for "
                   f"({target_text(old)}): give {', '.join(hidden)} again for the new URL, or "
                   f"leave them out")
        raise InvalidJob(f"{hidden[0]}: {message}",
                         [{"field": field, "message": message, "line": None} for field in hidden])


# --------------------------------------------------------------------------------------------
# Scheduler service: the front door
# --------------------------------------------------------------------------------------------

_NO_FILE = "no jobs.yaml"   # SchedulerService._seen_hash while there is none (said once)


class SchedulerService:
    """Everything but HTTP, thread-safe: it hands the work to the store, the job book, the
    schedule (APScheduler), the runner, the cluster and the reloader."""

    def __init__(self, config: Config):
        check_token(config.token)
        self.config = config
        self.secrets = service_secrets(config)
        # Read before start() takes the secrets out of os.environ: passed on as they were.
        self.passed_env = {n: os.environ[n] for n in config.pass_env if n in os.environ}
        self.engine = create_engine(config.database_url, config.busy_timeout)
        self.timezone = _zone(config.timezone) if config.timezone else _local_zone()
        self.store = Store(self.engine, config.node)
        self.bus = Bus(self.store)
        self.book = JobBook(self.store, self.timezone)
        self.history = HistoryWriter(self.store, prune=self.prune)
        self.cluster = Cluster(self)
        self.runner = Runner(self)
        self.notifier = Notifier(self)
        self.scheduler = _Scheduler(self, ScheduleStore(self.store), timezone=self.timezone)
        self.reloader = Reloader(self) if config.config_path else None
        self.base_url: Optional[str] = None   # how jobs reach this service's API (http_check)
        self.started_at: Optional[dt.datetime] = None
        self._counts: tuple = (-float("inf"), {})   # (monotonic time, runs_24h) for status()
        self.stopping = False
        self._config_state = {"path": config.config_path and os.path.abspath(config.config_path),
                              "loaded_at": None, "hash": None, "jobs": 0, "error": None,
                              "errors": [], "reloads": 0, "failures": 0, "applied": None}
        self._seen_hash: Optional[str] = None
        self._parser = JobsParser()
        self._lockfile = None
        self.bus.subscribe("ts_jobs", self._jobs_changed)
        self.bus.subscribe("ts_runs", self.runner.wake)

    # lifecycle

    def start(self) -> SchedulerService:
        """Migrate, recover from a crash, join the cluster (leading at once on SQLite: jobs.yaml
        is applied before the first fire), then serve. Returns at once."""
        self._lock_database()
        migrate(self.engine)
        self._seal_environ()
        self.started_at = _utcnow()
        self.cluster.join()
        self.runner.end_leftovers(self.cluster.clustered)
        self.bus.start()   # listening before the book is read: no change of jobs falls between
        self.book.load()
        self.history.start()
        self.scheduler.start(paused=True)
        self.runner.start()
        self.notifier.start()
        self.cluster.start()
        if self.reloader is not None:
            if self.cluster.role != "leader":
                self._reload_quietly()   # validate this node's copy; the leader applies its own
            self.reloader.start()
        log.info("task-scheduler %s started as %s (node %s): %d jobs, database %s", __version__,
                 self.cluster.role, self.store.node, len(self.book.records),
                 self.engine.url.render_as_string(hide_password=True))
        return self

    def _seal_environ(self) -> None:
        """Take this service's secrets out of os.environ: python jobs share this process and
        read os.environ (command jobs get no TS_* variable anyway: ``_job_env``)."""
        given = {"TS_API_TOKEN": self.config.token, "TS_SMTP_URL": self.config.smtp_url,
                 "TS_DATABASE_URL": self.config.database_url}
        for name in SECRET_ENV:
            if os.environ.get(name) and os.environ.get(name) == given[name]:
                del os.environ[name]

    def lead(self, epoch: Optional[int], initial: bool = False) -> None:
        """This node leads from now: jobs.yaml is applied here, and the schedule fires here."""
        if initial:
            self._reload_quietly()
        elif self.reloader is not None:
            self.reloader.poke(0)   # off the cluster thread: a big file takes a moment
        synced = self.scheduler.lead(epoch)
        if initial:   # start() returns with every job scheduled
            synced.wait(10)

    def stop(self, grace: Optional[float] = None) -> None:
        """Stop firing, give running runs ``grace`` seconds, end what is left, record it all."""
        if self.stopping:
            return
        self.stopping = True
        grace = self.config.shutdown_grace if grace is None else grace
        if self.reloader is not None:
            self.reloader.stop()
        self.scheduler.step_down()
        self.cluster.resign()   # the lease first: firing goes on elsewhere while runs end here
        self.runner.stop(grace)
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        self.history.stop()
        self.notifier.stop()
        self.cluster.stop()
        self.bus.stop()
        self.engine.dispose()
        if self._lockfile is not None:
            self._lockfile.close()
        log.info("task-scheduler stopped")

    def hurry(self) -> None:
        """Stop now: no more waiting for running runs (a second Ctrl-C)."""
        self.runner.hurry()

    def now(self) -> dt.datetime:
        """The database's time as naive UTC, as runs record it."""
        return _naive_utc(self.cluster.now())

    def _lock_database(self) -> None:
        """Two schedulers on one SQLite store run every job twice (pitfall A1): refuse."""
        path = _sqlite_path(self.config.database_url)
        if path is None:
            return
        self._lockfile = open(path + ".lock", "a+")
        try:
            fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lockfile.seek(0)
            holder = self._lockfile.read().strip() or "another process"
            self._lockfile.close()
            self._lockfile = None
            raise SchedulerError(f"database {path} is already used by a running task-scheduler "
                                 f"({holder}); only one scheduler may use a SQLite database "
                                 f"(use PostgreSQL for several nodes)") from None
        self._lockfile.truncate(0)
        self._lockfile.write(f"pid {os.getpid()} on {self.config.node}\n")
        self._lockfile.flush()

    def _jobs_changed(self, payload: Optional[dict]) -> None:
        if payload and payload.get("node") == self.store.node:
            return   # this node's own change: its book has it already
        changed = self.book.refresh(payload.get("ids") if payload else None)
        if changed and self.cluster.role == "leader":
            self.scheduler.ask(changed)

    # health and status

    def health(self) -> tuple[bool, dict]:
        scheduler_ok = self.scheduler.alive() and not self.scheduler.last_error
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            db = "ok"
        except sa.exc.SQLAlchemyError as exc:
            db = f"error: {_clean(exc)}"
        body = {"status": "ok" if scheduler_ok and db == "ok" else "unavailable",
                "scheduler": self._scheduler_state() if scheduler_ok else "down", "db": db}
        return body["status"] == "ok", body

    def status(self, counts_max_age: float = 0) -> dict:
        """The service's state; ``runs_24h`` may be up to ``counts_max_age`` seconds old (the
        dashboard: counting a day of a million-run history is most of what it costs)."""
        counts = collections.Counter(r.state for r in self.book.records.values())
        return {
            "version": __version__,
            "started_at": _iso(self.started_at),
            "uptime_s": round((_utcnow() - self.started_at).total_seconds(), 1)
            if self.started_at else 0,
            "node": self.store.node,
            "role": self.cluster.role,
            "leader": self._leader(),
            "scheduler": self._scheduler_state(),
            "timezone": str(self.timezone),
            "jobs": {"total": len(self.book.records), **{s: counts.get(s, 0) for s in JOB_STATES}},
            "runs_24h": self._run_counts(counts_max_age),
            "active_runs": len(self.runner.active),
            "config": self.config_status(),
        }

    def _run_counts(self, max_age: float) -> dict:
        at, counts = self._counts
        if time.monotonic() - at > max_age:
            counts = self.store.run_counts(_utcnow() - dt.timedelta(hours=24))
            self._counts = (time.monotonic(), counts)
        return dict(counts)

    def _leader(self) -> Optional[str]:
        if not self.cluster.clustered:
            return self.store.node
        holder, _, left = self.store.lease()
        return holder if left > 0 else None

    def _scheduler_state(self) -> str:
        if self.stopping or not self.scheduler.running:
            return "stopped"
        if not self.scheduler.alive():
            return "down"
        return "running" if self.cluster.role == "leader" else "standby"

    def nodes(self) -> list[dict]:
        """The cluster's nodes (SQLite: this one), the leader marked."""
        if not self.cluster.clustered:
            return [{"id": self.store.node, "host": socket.gethostname(), "pid": os.getpid(),
                     "role": "leader", "labels": list(self.config.labels),
                     "heartbeat_age_s": 0.0, "running": len(self.runner.active),
                     "version": __version__, "config_hash": self._config_state["hash"],
                     "alive": True, "started_at": _iso(self.started_at),
                     "schema_version": SCHEMA_VERSION}]
        leader = self._leader()
        return [{"id": row.id, "host": row.host, "pid": row.pid,
                 "role": "leader" if row.id == leader else "follower",
                 "labels": [x for x in row.labels.split(",") if x],
                 "heartbeat_age_s": round(age, 1), "running": row.running,
                 "version": row.version, "config_hash": row.config_hash,
                 "alive": age < self.config.node_timeout, "started_at": _iso(row.started_at),
                 "schema_version": row.schema_version}
                for row, age in self.store.nodes()]

    def config_status(self) -> dict:
        state = self._config_state
        out = {"changes": state.get("changes"),   # counts by kind of the last applied reload
               **{k: state[k] for k in ("path", "loaded_at", "hash", "jobs", "error", "errors")}}
        applied = state.get("applied")
        out["drift"] = None if not applied or not state["hash"] or applied["hash"] == \
            state["hash"] else {"leader": applied.get("node"), "leader_hash": applied["hash"],
                                "this_hash": state["hash"]}
        return out

    def metrics_state(self) -> dict:
        return {"reloads": self._config_state["reloads"],
                "reload_failures": self._config_state["failures"],
                "history_dropped": self.history.dropped, "failovers": self.cluster.failovers}

    # jobs: reads

    def jobs(self, q: Optional[str] = None, state: Optional[str] = None,
             source: Optional[str] = None, kind: Optional[str] = None, tag: Optional[str] = None,
             limit: Optional[int] = None, offset: int = 0) -> Page:
        """Jobs matching every given filter, by id; ``.total`` counts all matches."""
        views, total = self._page(q, state, source, kind, tag, limit, offset)
        page = Page(dict(view[0]) for view in views)
        page.total = total
        return page

    def jobs_json(self, q=None, state=None, source=None, kind=None, tag=None, limit=None,
                  offset: int = 0) -> tuple[list[str], int]:
        """``jobs()`` as one JSON text per job, and the total: the API's fast path."""
        views, total = self._page(q, state, source, kind, tag, limit, offset)
        return [view[1] for view in views], total

    def job(self, job_id: str) -> dict:
        return dict(self._views([self.book.require(job_id)])[0][0])

    def job_json(self, job_id: str) -> str:
        return self._views([self.book.require(job_id)])[0][1]

    def preview_trigger(self, trigger: dict, count: int = 5) -> list:
        """The next fire times of a trigger spec (for forms); raises InvalidJob."""
        try:
            spec = JobDefinition.model_validate({"id": "preview", "command": "true",
                                                 "trigger": trigger}).trigger
        except ValidationError as exc:
            details = [_pydantic_detail(e) for e in exc.errors()]
            raise InvalidJob(_details_text(details, None), details) from None
        details = [{"field": f"trigger.{f}" if f else "trigger", "message": m, "line": None}
                   for f, m in trigger_problems(spec)]
        if details:
            raise InvalidJob(_details_text(details, None), details)
        trig = build_trigger(spec, self.timezone)
        first = trig.get_next_fire_time(None, dt.datetime.now(self.timezone)) if trig else None
        return [_iso(t) for t in fire_times(trig, first, count)] if first else []

    def _page(self, q, state, source, kind, tag, limit, offset) -> tuple[list, int]:
        matches = self.book.select(q, state, source, kind, tag)
        return self._views(matches[offset:offset + limit if limit is not None else None]), \
            len(matches)

    def _views(self, records: list) -> list:
        ids = [r.definition.id for r in records]
        if len(ids) == 1:
            next_time, newest = self.store.job_state(ids[0])
            next_times = {ids[0]: next_time} if next_time is not None else {}
            last = {ids[0]: newest} if newest is not None else {}
        else:
            next_times = self.store.next_run_times(ids) if ids else {}
            last = self.store.last_runs(ids) if ids else {}
        for run in self.runner.recent.values():   # ended here, maybe not yet in the table
            if run["job_id"] in last and run["id"] >= last[run["job_id"]]["id"]:
                last[run["job_id"]] = run_to_dict(run)
        return [self.book.view(r, next_times.get(r.definition.id), last.get(r.definition.id))
                for r in records]

    # jobs: writes (all through the one reconcile path)

    def add_job(self, definition: dict, source: str = "api") -> dict:
        """Add a job; with ``replace_existing: true`` in the definition an existing API job of
        that id is replaced instead (so a program can add its jobs at every start)."""
        defn = parse_job(definition, self.config.base_dir)
        self._refuse_past_date(defn)
        with self.book.lock:
            rec = self.book.get(defn.id)
            if rec is not None and not (definition.get("replace_existing") is True
                                        and rec.source == source):
                raise JobConflict(f"job {defn.id!r} already exists (source {rec.source}); "
                                  f"replace it instead of adding it")
            self._apply(self.book.reconcile({defn.id: defn}, source, remove_missing=False))
        return self.job(defn.id)

    def replace_job(self, job_id: str, definition: dict) -> dict:
        if isinstance(definition, dict) and definition.get("id", job_id) != job_id:
            raise InvalidJob(f"id: {definition.get('id')!r} in the body differs from {job_id!r} "
                             f"in the path", [{"field": "id", "message": "differs from the path",
                                               "line": None}])
        rec = self.book.get(job_id)
        if isinstance(definition, dict) and rec is not None and "notify" in definition:
            definition = {**definition, "notify": restore_secrets(definition["notify"],
                                                                  rec.definition.notify)}
        defn = parse_job({**definition, "id": job_id} if isinstance(definition, dict)
                         else definition, self.config.base_dir)
        self._refuse_past_date(defn)
        with self.book.lock:
            self._editable(job_id)
            self._apply(self.book.reconcile({job_id: defn}, "api", remove_missing=False))
        return self.job(job_id)

    def delete_job(self, job_id: str) -> None:
        with self.book.lock:
            self._editable(job_id)
            self.store.write_jobs([], [job_id])
            self.book.records.pop(job_id, None)
        self._apply({"removed": [job_id]})

    def pause(self, job_id: str) -> dict:
        if self.book.set_paused(job_id, True):
            self._apply({"modified": [job_id]})
        return self.job(job_id)

    def resume(self, job_id: str) -> dict:
        if self.book.set_paused(job_id, False):
            self._apply({"modified": [job_id]})
        return self.job(job_id)

    def reconcile(self, desired: dict, source: str, remove_missing: bool = True) -> dict:
        changes = self.book.reconcile(desired, source, remove_missing)
        self._apply(changes)
        return changes

    def _apply(self, changes: dict) -> None:
        """Have the schedule follow the book now when this node leads (waiting a moment for the
        scheduler, never inside a transaction); otherwise the leader hears it by NOTIFY."""
        ids = [i for kind, ids in changes.items() if kind != "unchanged" for i in ids]
        if ids and self.cluster.role == "leader":
            self.scheduler.ask(ids).wait(5)

    def _editable(self, job_id: str) -> JobRecord:
        rec = self.book.require(job_id)
        if rec.source == "yaml":
            raise JobConflict(f"job {job_id!r} is defined in {self.config.config_path}; edit the "
                              f"file to change or remove it (pause, resume and run work here)")
        return rec

    def _refuse_past_date(self, defn: JobDefinition) -> None:
        """A date job whose time (and grace) has passed would never fire: say so."""
        if not isinstance(defn.trigger, DateSpec):
            return
        when = build_trigger(defn.trigger, self.timezone).run_date
        grace = defn.misfire_grace_time
        # seconds compared, not when + grace: a huge grace overflows a datetime
        if grace is not None and (self.cluster.now() - when).total_seconds() > grace:
            message = (f"{_iso(when)} has passed (misfire_grace_time {grace:g}s): a date job "
                       f"runs once, at a time to come; run it now instead, or give a later date")
            raise InvalidJob(f"job {defn.id}: trigger.run_date: {message}",
                             [{"field": "trigger.run_date", "message": message, "line": None}])

    # reload

    def reload(self, initial: bool = False, force: bool = False) -> dict:
        """Read jobs.yaml and, when this node leads, apply it if it validates; else keep
        everything and record why. A file already applied (same hash) is skipped unless
        ``force``. Followers validate their copy and report drift from the leader's. The file
        is parsed outside every other lock: fires and API calls never wait on a big file.
        Returns the config status; raises InvalidConfig when the file is bad."""
        path = self.config.config_path
        if not path or self.reloader is None:
            raise BadRequest("this service has no jobs.yaml (config_path is not set)")
        with self.reloader.lock:   # one reload at a time: the file read last is applied last
            leading = self.cluster.role == "leader"
            try:
                text, digest = read_jobs_file(path, self.config.max_config_bytes)
            except InvalidConfig as exc:
                if not os.path.lexists(path) and not any(
                        r.source == "yaml" for r in self.book.records.values()):
                    return self._no_jobs_file(path)
                return self._reload_failed(exc, None)
            state = self._config_state
            if digest == self._seen_hash and not force and not state["error"] and (
                    not leading or (state["applied"] or {}).get("hash") == digest):
                return self.config_status()
            if initial and leading and not force and self._kept_as_applied(digest):
                return self.config_status()
            try:
                jobs = self._parser.parse(text, path)
            except InvalidConfig as exc:
                return self._reload_failed(exc, digest)
            if leading:
                with self.book.lock:
                    conflict = _api_id_conflict(self.book.records, path, jobs)
                    if conflict is not None:
                        return self._reload_failed(conflict, digest)
                    changes = self.reconcile({j.id: j for j in jobs}, "yaml")
                applied = {"hash": digest, "node": self.store.node, "at": _iso(_utcnow())}
                self.store.set_meta("config", json.dumps(applied))
                state.update(changes={k: len(v) for k, v in changes.items()}, applied=applied)
            else:
                applied = self.store.get_meta("config")
                state["applied"] = json.loads(applied) if applied else None
            self._seen_hash = digest
            state.update(loaded_at=_iso(_utcnow()), hash=digest, jobs=len(jobs), error=None,
                         errors=[], reloads=state["reloads"] + (0 if initial else 1))
            if not leading and self.config_status()["drift"]:
                log.warning("jobs.yaml here (%s) differs from what the leader %s applied (%s): "
                            "the leader's applies", digest[:12], state["applied"]["node"],
                            state["applied"]["hash"][:12])
        return self.config_status()

    def _no_jobs_file(self, path: str) -> dict:
        """No jobs.yaml, and no job from one: not an error (a service may run on API jobs
        alone, and the file may come later). Said once; a jobs.yaml that goes away after its
        jobs were applied is still an error (they are kept, and the file should say so)."""
        if self._seen_hash != _NO_FILE:
            log.info("no jobs.yaml (%s), starting with none", os.path.abspath(path))
            self._seen_hash = _NO_FILE
        self._config_state.update(error=None, errors=[], hash=None, jobs=0)
        return self.config_status()

    def _kept_as_applied(self, digest: str) -> bool:
        """A start on the very file ts_jobs was last reconciled with (its hash is written after
        that commit): nothing to parse, validate or write. Parsing 10,000 jobs took a second;
        the parser learns the file at the first reload that changes it."""
        applied = self.store.get_meta("config")
        applied = json.loads(applied) if applied else None
        if not applied or applied.get("hash") != digest:
            return False
        count = sum(1 for r in self.book.records.values() if r.source == "yaml")
        self._seen_hash = digest
        self._config_state.update(
            applied=applied, loaded_at=_iso(_utcnow()), hash=digest, jobs=count, error=None,
            errors=[], changes={"added": 0, "rescheduled": 0, "modified": 0, "removed": 0,
                                "unchanged": count})
        log.info("jobs.yaml is as last applied (%s): %d jobs kept", digest[:12], count)
        return True

    def _reload_quietly(self) -> None:
        if self.reloader is None:
            return
        try:
            self.reload(initial=True)
        except InvalidConfig:
            log.warning("keeping the jobs stored in the database")

    def _reload_failed(self, exc: InvalidConfig, digest: Optional[str]) -> dict:
        """Keep the error for /api/status and raise it; log it once per file content and error
        (the poll and repeated events retry a bad file without flooding the log)."""
        new_error = digest != self._seen_hash or self._config_state["error"] != str(exc)
        self._seen_hash = digest
        self._config_state.update(error=str(exc), errors=exc.details)
        if new_error:
            self._config_state["failures"] += 1
            log.error("jobs.yaml not applied, the running configuration is kept:\n%s", exc)
        raise exc

    # runs

    def runs(self, job_id: Optional[str] = None, status=None,
             since: Optional[dt.datetime] = None, limit: int = 50, offset: int = 0,
             trigger: Optional[str] = None, before: Optional[str] = None,
             after: Optional[str] = None) -> Page:
        """Runs newest first (without their output); ``.total`` counts the matches (up to a
        cap: ``.capped``); ``before``/``after`` are run-id cursors (see ``Store.runs``)."""
        page = self.store.runs(job_id, status, since, limit, offset, trigger, before, after)
        for index, run in enumerate(page):
            live = self._live(run["id"])
            page[index] = self._explain(run_to_dict(live) if live is not None else run)
        return page

    def run_spans(self, since: dt.datetime, limit: int) -> tuple[list[dict], bool]:
        """For the timeline: the newest ``limit`` runs since ``since`` as dicts of the
        RUN_SPAN_COLUMNS (times aware, UTC) and ``duration_s``, and whether there were more.
        At a million runs this is several times cheaper than ``runs()``."""
        rows = self.store.run_spans(since, limit)
        spans = []
        for row in rows[:limit]:
            live = self._live(row.id) if row.status in ("queued", "running") else None
            values = [live.get(k, v) for k, v in zip(RUN_SPAN_COLUMNS, row, strict=True)] \
                if live is not None else row
            run_id, job_id, trigger, status, scheduled, began, ended = values
            scheduled, began, ended = _aware(scheduled), _aware(began), _aware(ended)
            spans.append({"id": run_id, "job_id": job_id, "trigger": trigger, "status": status,
                          "scheduled_at": scheduled, "started_at": began, "finished_at": ended,
                          "duration_s": round((ended - began).total_seconds(), 3)
                          if began and ended else None})
        return spans, len(rows) > limit

    def run(self, run_id: str) -> dict:
        """One run with its stdout and stderr (live output for a run still going), and what
        was sent about it."""
        live = self._live(run_id)
        if live is not None:
            run = run_to_dict(live, output=True)
        else:
            row = self.store.run(run_id)
            if row is None:
                raise RunNotFound(f"run {run_id!r} does not exist")
            run = self._explain(run_to_dict(row, output=True))
        run["notifications"] = [
            {"id": n.id, "event": n.event, "target": target_text(json.loads(n.target)),
             "status": n.status, "attempts": n.attempts, "log": json.loads(n.log)}
            for n in self.store.notes_of(run_id)] if run["status"] in FINAL_STATUSES else []
        return run

    def _explain(self, run: dict) -> dict:
        """Why a queued run has not started: no live node has its labels, or a retry's delay."""
        if run["status"] != "queued":
            return run
        if run.get("node"):
            run["waiting"] = f"claimed by node {run['node']}: waits for a free worker there"
        elif run["run_on"] and not any(set(run["run_on"]) <= set(node["labels"])
                                     for node in self.nodes() if node["alive"]):
            run["waiting"] = (f"no live node has the labels {', '.join(run['run_on'])}; it "
                              f"starts when one does (--labels)")
        elif run.get("due_at") and dt.datetime.fromisoformat(run["due_at"]) > \
                self.cluster.now():
            run["waiting"] = f"a retry: due at {run['due_at']}"
        return run

    def _live(self, run_id: str) -> Optional[dict]:
        active = self.runner.active.get(run_id)
        if active is not None:
            return {**active.run, "stdout": active.out.text(), "stderr": active.err.text()}
        return self.runner.recent.get(run_id)

    def output(self, run_id: str, stream: str, offset: int = 0) -> dict:
        """A run's stdout or stderr after byte ``offset``, to tail a run that goes on: from
        memory on the node running it, else as that node last wrote it (under a second old)."""
        active = self.runner.active.get(run_id)
        if active is not None:
            parts, status = (active.out if stream == "stdout" else active.err).parts(), \
                active.run["status"]
        else:
            run = self.run(run_id)
            parts, status = output_parts(run[stream]), run["status"]
        text, after = output_since(*parts, min(offset, parts[2]))
        return {"text": text, "offset": after, "status": status,
                "running": status in ("queued", "running"),
                "truncated": parts[2] > len(parts[0]) + len(parts[1])}

    def run_now(self, job_id: str, params: Optional[dict] = None) -> dict:
        """Queue a manual run, optionally with parameters of its own (``RunParams``: args,
        kwargs, env); returns it (status queued, trigger manual)."""
        rec = self.book.require(job_id)
        return self.runner.run_now(job_id, check_params(rec.definition, params,
                                                        self.config.base_dir))

    def rerun(self, run_id: str) -> dict:
        """Run a finished run's job again, with the same parameters; linked by rerun_of."""
        run = self.run(run_id)
        if run["status"] not in FINAL_STATUSES:
            raise JobConflict(f"run {run_id} is {run['status']}; rerun it once it has ended")
        return self.runner.run_now(run["job_id"], run.get("params"), rerun_of=run_id)

    def cancel(self, run_id: str) -> dict:
        """Cancel a queued run, or kill a running command's process group (any node)."""
        return self.runner.cancel(run_id)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the run history written so far is in the database (tests, shutdown)."""
        return self.history.flush(timeout)

    def prune(self) -> int:
        return self.store.prune(self.config.keep_runs, self.config.keep_days,
                                stopping=lambda: self.history.stopping)


# --------------------------------------------------------------------------------------------
# Reloader: watchdog on the folder, debounce, validate-then-apply
# --------------------------------------------------------------------------------------------

class Reloader:
    """Watches the folder of jobs.yaml (editors save by rename), debounces bursts of events, and
    reloads in its own thread; a slow hash poll catches what events miss (NFS, symlink swaps)."""

    def __init__(self, service: SchedulerService):
        self._service = service
        self._path = os.path.abspath(service.config.config_path)
        self._cond = threading.Condition()
        self._due: Optional[float] = None
        self._stopping = False
        self._observer = None
        self._thread = threading.Thread(target=self._loop, name="ts-reloader", daemon=True)
        self.lock = threading.Lock()   # held by SchedulerService.reload: one reload at a time

    def start(self) -> None:
        if self._service.config.watch:
            self._observer = self._watch()
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(5)
        if self._thread.is_alive():   # never started when the service failed to start
            self._thread.join(5)

    def poke(self, delay: Optional[float] = None) -> None:
        """Ask for a reload after the debounce delay (a later poke pushes it back)."""
        with self._cond:
            self._due = time.monotonic() + (self._service.config.debounce if delay is None
                                            else delay)
            self._cond.notify()

    def _watch(self):
        from watchdog.observers import Observer
        observer = Observer()
        try:
            observer.schedule(_FileEvents(self), os.path.dirname(self._path), recursive=False)
            observer.start()
        except OSError as exc:
            log.warning("cannot watch %s (%s); polling every %ss instead", self._path,
                        _clean(exc), self._service.config.poll_interval)
            return None
        return observer

    def _loop(self) -> None:
        poll = self._service.config.poll_interval
        next_poll = time.monotonic() + poll
        while self._wait(next_poll):
            next_poll = time.monotonic() + poll
            self._reload()

    def _wait(self, next_poll: float) -> bool:
        """Sleep until a poke's debounce ends or the poll is due; False when stopping. Each wake
        recomputes the deadline: Condition.wait_for would keep the first one (the slow poll)."""
        with self._cond:
            while not self._stopping:
                now = time.monotonic()
                if self._due is not None and self._due <= now:
                    self._due = None
                    return True
                if now >= next_poll:
                    return True
                self._cond.wait(min(next_poll, self._due if self._due is not None
                                    else next_poll) - now)
            return False

    def _reload(self) -> None:
        try:
            self._service.reload()
        except InvalidConfig:
            pass  # recorded and logged by reload(); the running configuration stays
        except Exception:
            log.exception("reloader: unexpected error; the running configuration is kept")


class _FileEvents:
    """A watchdog handler that only pokes the reloader; it can never raise (pitfall C5)."""

    def __init__(self, reloader: Reloader):
        self._reloader = reloader
        self._name = os.path.basename(reloader._path)

    def dispatch(self, event) -> None:
        try:
            if event.event_type not in ("created", "modified", "moved", "closed", "deleted"):
                return
            paths = (getattr(event, "dest_path", "") or "", event.src_path or "")
            if any(os.path.basename(os.fsdecode(p)) == self._name for p in paths):
                self._reloader.poke()
        except Exception:
            log.exception("reloader: bad file event %r", event)


def _api_id_conflict(records: dict, path: str, jobs: list) -> Optional[InvalidConfig]:
    """The error for jobs.yaml ids already taken by API jobs (DESIGN 5), with their lines."""
    ids = [j.id for j in jobs if j.id in records and records[j.id].source != "yaml"]
    if not ids:
        return None
    lines = _id_lines(path, ids)
    details = [{"line": lines.get(i), "job": i, "field": "id", "message": "already used by jobs "
                "created through the API: rename it here, or delete the API job"} for i in ids]
    return InvalidConfig(_config_error_text(path, details), details)


def _id_lines(path: str, ids: list) -> dict:
    """{id: line} of jobs in jobs.yaml; re-reads the file, so only for error messages."""
    try:
        root, _ = _yaml_compose(read_jobs_file(path)[0], path)
    except InvalidConfig:
        return {}   # the file changed since it validated: the next reload reports it
    items = root if isinstance(root, yaml.SequenceNode) else _node_at(root, ["jobs"])
    lines = {}
    for item in items.value if isinstance(items, yaml.SequenceNode) else []:
        for key, value in item.value if isinstance(item, yaml.MappingNode) else []:
            if key.value == "id" and value.value in ids:
                lines.setdefault(value.value, value.start_mark.line + 1)
    return lines


# --------------------------------------------------------------------------------------------
# HTTP: API handlers, route table, create_app(), server
# --------------------------------------------------------------------------------------------

MAX_BODY = 1 << 20   # a job definition is a few hundred bytes; 1 MiB is generous
MAX_OFFSET = 10 ** 9  # keeps OFFSET inside every database's integer range
ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"   # JobDefinition.id's rule; run ids (hex) follow it too
_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
HTTP_SETTINGS = {   # waitress's, each for a reason
    # Handlers mostly wait on the database (a cancel, up to the kill grace): 12 may wait while
    # others answer, within the database pool (SQLite 5+10, PostgreSQL 10+10) with room for the
    # scheduler's own use; more would only contend for the GIL. Further requests queue.
    "threads": 12,
    "connection_limit": 4000,   # idle connections cost a descriptor and a few KiB each
    "backlog": 2048,        # a burst of new connections waits in the kernel, not refused (the
                            # stdlib's 5 refused them); Linux caps it at net.core.somaxconn
    "channel_timeout": 60,  # an idle or stalled connection is closed after a minute,
    "cleanup_interval": 10,  # looked for every 10 s (waitress's 30 s made that up to 90 s)
    "ident": None,          # no Server header: no telling scanners the server and its version
    "asyncore_use_poll": True,   # select() cannot watch descriptors above 1023
    # No proxy is trusted with X-Forwarded-Host/-Proto: Bottle would build redirects and the
    # cookies' Secure flag from them. _proxy_headers drops them (and keeps X-Forwarded-For
    # aside for --trusted-proxies), not waitress, whose one trusted proxy would replace
    # REMOTE_ADDR for every request.
    "clear_untrusted_proxy_headers": False,
    # A body a little over MAX_BODY is read and gets the API's JSON 413; past this, waitress
    # answers a plain 413 at the headers without reading the body.
    "max_request_body_size": 4 * MAX_BODY,
    # What a client can make us hold in memory before the app (and its token check) sees the
    # request: browsers send under 8 KiB of headers; bodies past 64 KiB wait in a temp file.
    "max_request_header_size": 64 << 10,
    "inbuf_overflow": 64 << 10,
    "log_socket_errors": False,   # a client resetting its connection is not a server error
    # Send what the app writes at once: a live stream's small events would otherwise wait for
    # 18 KB; other answers are written in one piece anyway.
    "send_bytes": 1,
}


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
    kind: Optional[Literal["python", "command"]] = None
    tag: Optional[StrictStr] = Field(None, description="jobs carrying this tag")
    limit: Annotated[int, Field(ge=1, le=10000)] = 100
    offset: Annotated[int, Field(ge=0, le=MAX_OFFSET)] = 0


class OutputQuery(_Model):
    """The query string of ``GET /api/runs/{id}/stdout`` (and stderr)."""

    offset: Optional[Annotated[int, Field(ge=0, le=1 << 40)]] = Field(
        None, description="answer JSON with what came after this byte of the stream")


class RunsQuery(_Model):
    """The query string of ``GET /api/runs``; runs come newest first."""

    job_id: Optional[Annotated[StrictStr, Field(pattern=ID_PATTERN)]] = None
    status: Optional[Annotated[StrictStr, AfterValidator(_one_of(RUN_STATUSES))]] = Field(
        None, description=f"one of {', '.join(RUN_STATUSES)}, or several: failed,timeout",
        json_schema_extra={"pattern": _list_pattern(RUN_STATUSES)})
    trigger: Optional[Literal[RUN_TRIGGERS]] = None
    since: Optional[dt.datetime] = Field(None, description="runs scheduled at or after this "
                                         "time (ISO 8601; UTC when it has no offset)")
    limit: Annotated[int, Field(ge=1, le=1000)] = 50
    offset: Annotated[int, Field(ge=0, le=MAX_OFFSET)] = 0
    before: Optional[Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{1,32}$")]] = Field(
        None, description="a run id: only runs older than it (the next page after a page "
        "ending with that run; fast at any depth, where offset reads every run it skips)")


def api_health(service):
    """Liveness: 200 when the scheduler thread runs and the database answers, else 503."""
    ok, body = service.health()
    return (200 if ok else 503), body


def api_status(service):
    """Version, node, job counts, runs of the last 24 h by status, the state of jobs.yaml."""
    return service.status()


def api_list_jobs(service):
    """Jobs by id, filtered and paged; ``total`` counts every match."""
    texts, total = service.jobs_json(**_query_params(JobsQuery).model_dump())
    return _raw_json(200, f'{{"jobs": [{", ".join(texts)}], "total": {total}}}')


def api_create_job(service):
    """Create a job (source api) from one jobs.yaml entry as JSON.

    A command job runs any program as the service's user: see Security in docs/api.md."""
    return 201, service.add_job(_json_body())


def api_get_job(service, job_id):
    """One job, with its next five fire times and last run."""
    return _raw_json(200, service.job_json(job_id))


def api_replace_job(service, job_id):
    """Replace a job created through the API (a jobs.yaml job: 409, edit the file)."""
    return service.replace_job(job_id, _json_body())


def api_delete_job(service, job_id):
    """Delete a job created through the API (a jobs.yaml job: 409); its runs stay."""
    service.delete_job(job_id)
    return 204, None


def api_pause_job(service, job_id):
    """Pause a job (any source); the pause survives reloads and restarts."""
    return service.pause(job_id)


def api_resume_job(service, job_id):
    """Resume a paused job."""
    return service.resume(job_id)


def api_run_job(service, job_id):
    """Queue a run now (trigger manual); 409 while max_instances runs are going.

    An optional body gives this run its own kwargs and args (python) or args and env
    (commands), checked like the job's own; the job keeps its definition."""
    body = _json_body() if _content_length(bottle.request.environ) else None
    return 202, {"run": service.run_now(job_id, body)}


def api_rerun_run(service, run_id):
    """Run a finished run's job again with the same parameters (trigger manual, rerun_of)."""
    return 202, {"run": service.rerun(run_id)}


def api_list_runs(service):
    """Runs, newest first, filtered and paged; ``total`` counts the matches, up to
    ``offset`` + 10,000 (``total_capped`` is true when there are more)."""
    query = _query_params(RunsQuery).model_dump()
    query["since"] = _utc_naive(query["since"])
    page = service.runs(**query)
    return {"runs": list(page), "total": page.total, "total_capped": page.capped}


def api_get_run(service, run_id):
    """One run with its stdout and stderr (live while it runs)."""
    return service.run(run_id)


def api_run_stdout(service, run_id):
    """A run's stdout as text; ``?offset=N`` answers JSON with what came after byte N, the new
    offset and whether the run goes on; ``Accept: text/event-stream`` streams it live (SSE)."""
    return _output(service, run_id, "stdout")


def api_run_stderr(service, run_id):
    """A run's stderr, as stdout is answered."""
    return _output(service, run_id, "stderr")


def _output(service, run_id: str, stream: str):
    query = _query_params(OutputQuery)
    if "text/event-stream" in bottle.request.get_header("Accept", ""):
        return _event_stream(service, run_id, stream, query.offset or 0)
    if query.offset is not None:
        return service.output(run_id, stream, query.offset)
    return _text(service.run(run_id)[stream])


def _event_stream(service, run_id: str, stream: str, offset: int) -> bottle.HTTPResponse:
    """Server-Sent Events: an ``output`` event per new piece, ``end`` when the run ends. Each
    stream holds a server thread, so only a few at a time (clients may poll ?offset instead)."""
    service.output(run_id, stream, offset)   # 404 now, not inside the stream
    streams = bottle.request.app.config["ts.streams"]
    if not streams.acquire(blocking=False):
        raise Unavailable("too many live streams at once; poll with ?offset= instead")

    def events():
        try:
            yield "retry: 1000\n\n"
            at, quiet = offset, 0.0
            while True:
                out = service.output(run_id, stream, at)
                if out["text"] or out["offset"] != at:
                    yield _sse("output", {"text": out["text"], "offset": out["offset"]})
                    at, quiet = out["offset"], 0.0
                if not out["running"]:
                    yield _sse("end", {"status": out["status"], "offset": at})
                    return
                quiet += STREAM_POLL
                if quiet >= STREAM_KEEPALIVE:
                    yield ": still running\n\n"
                    quiet = 0.0
                time.sleep(STREAM_POLL)
        except (SchedulerError, sa.exc.SQLAlchemyError) as exc:
            yield _sse("error", {"message": str(exc)})
        finally:
            streams.release()
    return bottle.HTTPResponse(events(), headers={
        "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no"})


def _sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


STREAM_POLL = 0.25   # seconds between looks at a streamed run's output
MAX_STREAMS = 4      # live streams at once: each holds one of the server's threads
# A comment this often while a run is quiet: it keeps proxies from closing an idle stream, and
# it is how a stream finds its client gone (waitress reads nothing while it answers, so only a
# failed write tells): a killed client's slot is free again within about two of these.
STREAM_KEEPALIVE = 1.0


def api_cancel_run(service, run_id):
    """Cancel a queued run, or kill a running command's process group (TERM, then KILL).

    The answer comes at once: the run as it is then, ``cancelled`` if its command ended within
    CANCEL_WAIT of the TERM, else still ``running`` while the group is ended in the background
    (KILL after the kill grace). A cancel holds a server thread for no longer than that."""
    active = service.runner.active.get(run_id)
    again = active is not None and active.stop_reason is not None   # being ended already
    service.cancel(run_id)
    deadline = time.monotonic() + (0 if again else CANCEL_WAIT)
    while run_id in service.runner.active and time.monotonic() < deadline:
        time.sleep(0.01)   # in memory: most commands end within milliseconds of TERM
    run = service.run(run_id)
    return {k: v for k, v in run.items() if k not in ("stdout", "stderr")}


CANCEL_WAIT = 0.25   # seconds a cancel waits for the command to go (30 at once: ~0.6 s of 12
                     # threads; every later cancel of the same run answers without waiting)


def api_nodes(service):
    """The cluster's nodes (on SQLite: this one), with role, labels, heartbeat age, runs."""
    return {"nodes": service.nodes()}


def api_reload(service):
    """Read and apply jobs.yaml now; 422 with the errors (the running jobs stay as they are)."""
    return {"config": service.reload(force=True)}


def api_openapi(service):
    """This API as an OpenAPI 3.1 document, generated from the models that validate requests."""
    return _raw_json(200, openapi_json(bool(service.config.token)))


def api_docs(service):
    """A readable page of this API, rendered on the server from the OpenAPI document."""
    secured = bool(service.config.token)
    try:
        from task_scheduler_web import api_docs_html   # the page's template lives with the GUI
    except ImportError:   # this module vendored alone: the document itself is the reference
        body = _DOCS_WITHOUT_GUI
    else:
        body = api_docs_html(openapi_json(secured), secured)
    return bottle.HTTPResponse(body, headers={
        "Content-Type": "text/html; charset=utf-8", "Content-Security-Policy": DOCS_CSP})


_DOCS_WITHOUT_GUI = ('<!doctype html><html lang="en"><meta charset="utf-8"><title>API</title>'
                     '<p>This API is described by <a href="/api/openapi.json">/api/openapi.json'
                     '</a> (OpenAPI 3.1); docs/api.md has examples.</p></html>')


def api_metrics(service):
    """Prometheus metrics (text exposition format 0.0.4)."""
    stats = bottle.request.app.config["ts.run_stats"]
    return bottle.HTTPResponse(metrics_text(service, stats),
                               headers={"Content-Type": METRICS_CONTENT_TYPE})


API_ROUTES = [
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
    ("GET", "/api/runs", api_list_runs),
    ("GET", "/api/runs/<run_id>", api_get_run),
    ("GET", "/api/runs/<run_id>/stdout", api_run_stdout),
    ("GET", "/api/runs/<run_id>/stderr", api_run_stderr),
    ("POST", "/api/runs/<run_id>/cancel", api_cancel_run),
    ("POST", "/api/runs/<run_id>/rerun", api_rerun_run),
    ("GET", "/api/nodes", api_nodes),
    ("POST", "/api/reload", api_reload),
    ("GET", "/api/openapi.json", api_openapi),
    ("GET", "/api/docs", api_docs),
    ("GET", "/metrics", api_metrics),
]
_OPEN_ROUTES = {"/api/health"}   # everything else needs the token when one is configured


def create_app(service: SchedulerService) -> bottle.Bottle:
    """The WSGI app: the JSON API under /api and the GUI, on one Bottle app."""
    gui = _gui_package()
    app = bottle.Bottle(catchall=True)
    app.config.update({"json.enable": False, "ts.run_stats": RunStats(),
                       "ts.streams": threading.BoundedSemaphore(MAX_STREAMS)})
    app.install(HttpGuard(service))
    for method, path, handler in API_ROUTES:
        app.route(path, method, functools.partial(handler, service), name=handler.__name__,
                  **{"ts.api": True, "ts.open": path in _OPEN_ROUTES})
    for code in (c for c in bottle.HTTP_CODES if c >= 400):
        app.error(code)(_error_page)
    app.add_hook("after_request", _common_headers)
    if gui is not None:
        gui.install_gui(app, service)
    return app


def _gui_package():
    """The GUI package; None when this module is used without it (the API alone still serves).
    A GUI that is there but broken fails loudly."""
    try:
        import task_scheduler_web
    except ModuleNotFoundError as exc:
        if exc.name != "task_scheduler_web":
            raise
        log.info("task_scheduler_web is not installed: serving the API only")
        return None
    return task_scheduler_web


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

    def apply(self, callback, route):
        api, open_route = route.config.get("ts.api", False), route.config.get("ts.open", False)

        @functools.wraps(callback)
        def guarded(*args, **kwargs):
            request = bottle.request
            request.environ["ts.client"] = client_address(request.environ, self.proxies)
            try:
                host_problem = self._host_problem(request)
                if host_problem:
                    raise Forbidden(host_problem)
                if request.method not in SAFE_METHODS:
                    self._check_origin(request)
                if not api:
                    return callback(*args, **kwargs)
                if not open_route:
                    _check_token(self.service, self.failures, request.environ["ts.client"])
                if request.method not in SAFE_METHODS:
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


def allowed_hosts(config: Config) -> dict:
    """The names a request's Host may carry: loopback, the bound address, this machine's names
    and --allowed-hosts (``.example.com`` also allows subdomains; ``*`` allows any)."""
    explicit = {h.strip().lower().rstrip(".") for h in config.allowed_hosts if h.strip()}
    names = {config.host.lower(), socket.gethostname().lower()}
    return {"explicit": explicit, "names": names | explicit}


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
        if not (0 < len(value) <= 64 and _ID_CHARS.issuperset(value)):
            # No job or run has such an id; the database is not asked (PostgreSQL refuses NUL
            # characters in a query, for one).
            raise (JobNotFound if name == "job_id" else RunNotFound)(
                f"{name.removesuffix('_id')} {value!r} does not exist")


def _error_response(exc: SchedulerError) -> bottle.HTTPResponse:
    response = _json_response(exc.status, _error_body(exc.code, str(exc), exc.details))
    if isinstance(exc, Unauthorized):
        response.set_header("WWW-Authenticate", 'Bearer realm="task-scheduler"')
    if isinstance(exc, TooManyRequests):
        response.set_header("Retry-After", str(exc.retry_after))
    return response


def _check_token(service, failures: Optional[FailureLimiter] = None,
                 client: str = "?") -> None:
    """The right token always passes; a wrong one counts against its client, and a client
    past TOKEN_FAILURES within TOKEN_WINDOW seconds is answered 429 until they age out."""
    token = service.config.token
    if not token:
        return
    given = bottle.request.get_header("Authorization", "")
    scheme, _, value = given.partition(" ")
    # Header values arrive as latin-1 text: back to their bytes, compared in constant time.
    given_bytes = value.strip().encode("latin-1", "replace")
    if scheme.lower() == "bearer" and hmac.compare_digest(given_bytes, token.encode()):
        return
    if failures is not None and given:   # no header at all is no guess
        wait = failures.failed(client)
        if wait:
            raise TooManyRequests(f"too many wrong tokens from {client}; try again in {wait}s",
                                  retry_after=wait)
    raise Unauthorized("missing or wrong token: send 'Authorization: Bearer <token>'")


TOKEN_FAILURES = 20   # wrong tokens a client may send within TOKEN_WINDOW: a typo or a stale
TOKEN_WINDOW = 60     # script, not a guesser (a 16-character token takes ~10^28 guesses)


class TooManyRequests(SchedulerError):
    status, code = 429, "too_many_requests"

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


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


def _json_response(status: int, body: Any) -> bottle.HTTPResponse:
    if body is None:
        return bottle.HTTPResponse(status=status)
    return _raw_json(status, json.dumps(body, default=_json_default, ensure_ascii=False))


def _raw_json(status: int, text: str) -> bottle.HTTPResponse:
    return bottle.HTTPResponse(text, status=status,
                               headers={"Content-Type": "application/json; charset=utf-8"})


def _json_default(value: Any):
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return str(value)


def _error_body(code: str, message: str, details: Optional[list] = None) -> dict:
    return {"error": {"code": code, "message": message, "details": details or []}}


def _text(body: str) -> bottle.HTTPResponse:
    return bottle.HTTPResponse(body, headers={"Content-Type": "text/plain; charset=utf-8"})


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


def _utc_naive(value: Optional[dt.datetime]) -> Optional[dt.datetime]:
    """A time as naive UTC; beyond what datetime can hold in UTC, the earliest or latest."""
    if value is None or value.tzinfo is None:
        return value
    try:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    except OverflowError:
        return dt.datetime.min if value.year < 2000 else dt.datetime.max


def _json_body() -> Any:
    """The request body as JSON: 415 unless sent as JSON, 413 over MAX_BODY, 400 unless it is
    one complete JSON text (NaN, Infinity and unpaired surrogates are not JSON either)."""
    request = bottle.request
    ctype = (request.content_type or "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise UnsupportedMedia(f"send the body as JSON with Content-Type: application/json "
                               f"(got {ctype or 'none'})")
    length = _content_length(request.environ)
    if length > MAX_BODY:
        raise PayloadTooLarge(f"body of {length} bytes is over the limit of {MAX_BODY} bytes")
    try:
        raw = request.environ["wsgi.input"].read(length) if length else b""
    except OSError as exc:   # the client went away, or stalled past the server's timeout
        raise BadRequest(f"could not read the body: {_clean(exc)}") from None
    if len(raw) < length:
        raise BadRequest(f"the body ended after {len(raw)} of {length} bytes")
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


def make_server(app, host: str, port: int, trusted_proxies: tuple = ()) -> _HttpServer:
    """waitress on ``host:port``, listening when this returns. One thread reads and writes every
    connection and only complete requests reach the bounded pool of threads that run ``app``, so
    slow and idle clients cost a file descriptor, not a thread; no one client address (but a
    trusted proxy's) holds more than a quarter of the connections (``_ChannelGate``)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # restart at once, even
        sock.bind((host, port))                                      # with old connections
        return _HttpServer(app, sock, trusted_proxies)               # in TIME_WAIT
    except BaseException:
        sock.close()
        raise


def serve_in_thread(app, host: str = "127.0.0.1", port: int = 0) -> _HttpServer:
    """Serve ``app`` from a background thread; ``server.server_port`` tells the port."""
    server = make_server(app, host, port)
    threading.Thread(target=server.serve_forever, name="ts-http", daemon=True).start()
    return server


class _HttpServer:
    """waitress's server with the socketserver methods the CLI and the tests use:
    ``serve_forever()``, ``shutdown()`` from another thread (it returns once serving has
    stopped and the worker threads are gone), ``server_close()``."""

    def __init__(self, app, sock: socket.socket, trusted_proxies: tuple = ()):
        self.server_port = sock.getsockname()[1]
        self._map: dict = {}
        self._done = threading.Event()
        settings = {**HTTP_SETTINGS, "connection_limit": _connection_limit()}
        with warnings.catch_warnings():   # send_bytes is deprecated, and still what we need
            warnings.simplefilter("ignore", DeprecationWarning)
            self._server = waitress.create_server(_proxy_headers(app), map=self._map,
                                                  sockets=[sock], **settings)
        self._server.task_dispatcher.queue_logger = _QueueLog()
        # waitress makes each connection with server.channel_class(server, conn, addr, adj,
        # map=...): an instance attribute puts the gate in that one place.
        gate = _ChannelGate(settings["connection_limit"], trusted_networks(trusted_proxies))
        self._server.channel_class = gate
        maintenance = self._server.maintenance   # every cleanup_interval, even when full

        def sweep(now: float) -> None:
            maintenance(now)
            if len(self._server.active_channels) >= gate.pressure:
                gate.sweep(self._server)
        self._server.maintenance = sweep

    def serve_forever(self) -> None:
        try:
            self._server.run()   # until _close has emptied the socket map
        finally:
            self.server_close()

    def shutdown(self) -> None:
        with contextlib.suppress(OSError):   # the wake-up pipe is closed: serving has ended
            self._server.trigger.pull_trigger(self._close)   # runs in the serving thread
        self._done.wait()

    def server_close(self) -> None:
        self._close()
        self._server.task_dispatcher.shutdown()   # lets a running request finish, up to 5 s
        self._done.set()

    def _close(self) -> None:
        self._server.close()   # the listening socket and the wake-up pipe
        for channel in list(self._server.active_channels.values()):
            channel.handle_close()   # also wakes a worker thread waiting to write to it


class _ChannelGate:
    """Where waitress makes a connection's channel: a client address past its share of the
    connections (a quarter of the limit) gets room by closing its own longest-idle connection,
    or is closed at once; and once the server is three quarters full, connections idle for
    IDLE_UNDER_PRESSURE are closed (not after channel_timeout). One client holding thousands of
    idle connections so cannot keep a health check or another user out. Runs in the serving
    thread; channels close in it too, but a lock keeps the counts right whatever closes them."""

    def __init__(self, limit: int, trusted: tuple):
        self.per_client, self.pressure = max(limit // 4, 16), limit * 3 // 4
        self.trusted = trusted
        self.counts: collections.Counter = collections.Counter()
        self._lock = threading.Lock()
        self._next_sweep = self._quiet_until = 0.0

    def __call__(self, server, conn, addr, adj, map=None):
        client = addr[0] if isinstance(addr, tuple) else str(addr)
        if len(server.active_channels) >= self.pressure:
            self.sweep(server)
        with self._lock:
            full = self.counts[client] >= self.per_client
        if full and not _in_networks(client, self.trusted) and not self._evict(server, client):
            self._refuse(conn, client)
            return None
        channel = _GatedChannel(server, conn, addr, adj, map=map)
        channel.ts_gate, channel.ts_client = self, client
        with self._lock:
            self.counts[client] += 1
        return channel

    def left(self, client: str) -> None:
        with self._lock:
            self.counts[client] -= 1
            if self.counts[client] <= 0:
                del self.counts[client]

    def _evict(self, server, client: str) -> bool:
        cutoff = time.time() - 1   # a connection opened this very second is not idle yet
        idle = [c for c in list(server.active_channels.values())
                if getattr(c, "ts_client", None) == client and not c.requests
                and c.last_activity < cutoff]
        if not idle:
            return False
        min(idle, key=lambda c: c.last_activity).handle_close()
        return True

    def sweep(self, server) -> None:
        now = time.time()
        if now < self._next_sweep:
            return
        self._next_sweep = now + 1
        for channel in list(server.active_channels.values()):
            if not channel.requests and channel.last_activity < now - IDLE_UNDER_PRESSURE:
                channel.will_close = True   # as waitress's maintenance: the loop closes it

    def _refuse(self, conn, client: str) -> None:
        with contextlib.suppress(OSError):
            conn.close()
        if time.monotonic() >= self._quiet_until:   # once a minute: a flood is one line
            self._quiet_until = time.monotonic() + 60
            log.warning("%s holds %d connections, none of them idle: more are refused (at most "
                        "%d per client address; a reverse proxy belongs in --trusted-proxies)",
                        client, self.per_client, self.per_client)


class _GatedChannel(waitress.channel.HTTPChannel):
    def del_channel(self, map=None):
        gate = self.__dict__.pop("ts_gate", None)   # once, however often it is closed
        if gate is not None:
            gate.left(self.ts_client)
        super().del_channel(map)


IDLE_UNDER_PRESSURE = 5.0   # seconds an idle connection is kept once the server is 3/4 full


_PROXY_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_HOST", "HTTP_X_FORWARDED_PROTO",
                  "HTTP_X_FORWARDED_PORT", "HTTP_X_FORWARDED_BY", "HTTP_FORWARDED")


def _proxy_headers(app):
    """Forwarding headers never reach the app; X-Forwarded-For is kept aside as
    ``ts.forwarded_for``, which ``client_address`` believes from a trusted proxy only."""
    def strip(environ, start_response):
        environ["ts.forwarded_for"] = environ.get("HTTP_X_FORWARDED_FOR")
        for name in _PROXY_HEADERS:
            environ.pop(name, None)
        return app(environ, start_response)
    return strip


class _QueueLog:
    """waitress logs a warning for every request that waits for a worker thread: thousands of
    lines in a burst of clients, when a queue is how a bounded pool is meant to work. Only a
    lasting queue says something (too few threads, or slow handlers), so pass on one a minute."""

    def __init__(self):
        self.quiet_until = 0.0

    def warning(self, msg: str, *args) -> None:
        if time.monotonic() >= self.quiet_until:
            self.quiet_until = time.monotonic() + 60
            logging.getLogger("waitress.queue").warning(
                msg + " (requests wait for a free thread; shown once a minute at most)", *args)


def _connection_limit() -> int:
    """HTTP_SETTINGS' connection_limit within the limit on open files, raising the soft limit
    toward the hard one (systemd's default soft limit is 1024): past it accept() fails, and
    waitress retries it in a busy loop. 256 descriptors stay for the database, pipes and logs."""
    wanted = HTTP_SETTINGS["connection_limit"]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted + 256:
        soft = wanted + 256 if hard == resource.RLIM_INFINITY else min(wanted + 256, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return wanted if soft == resource.RLIM_INFINITY else max(64, min(wanted, soft - 256))


# --------------------------------------------------------------------------------------------
# API schema and metrics: the OpenAPI document, the /api/docs page, /metrics
# --------------------------------------------------------------------------------------------

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DOCS_CSP = ("default-src 'none'; style-src 'self'; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'")
DURATION_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600)   # a quick check .. an hour's backup
LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 30, 60)       # a fire on time is well under 0.1 s
_REF = "#/components/schemas/{model}"


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")   # answers gain fields, never lose them (DESIGN)


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
    due_at: Optional[dt.datetime] = Field(None, description="queued runs: when it may start "
                                          "(a retry waits for its delay)")
    waiting: Optional[str] = Field(None, description="queued runs: why it has not started")


class ApiRunDetail(ApiRun):
    """A run with its output (each stream capped; truncated says if a middle was cut)."""

    stdout: str
    stderr: str
    params: Optional[dict[str, Any]] = Field(description="this run's own args, kwargs, env")
    notifications: list[ApiNotification] = Field([], description="what was sent about it")


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
    kind: Literal["python", "command"]
    func: Optional[str]
    command: Optional[list[str]] = Field(description="argv of a command job")
    args: list[Any]
    kwargs: dict[str, Any]
    trigger: dict[str, Any] = Field(description="the trigger as in jobs.yaml, defaults filled in")
    trigger_text: str
    source: Literal["yaml", "api"]
    state: Literal[JOB_STATES]
    next_run_time: Optional[dt.datetime]
    next_run_times: list[dt.datetime]
    max_instances: int
    coalesce: bool
    misfire_grace_time: Optional[float]
    timeout: Optional[float]
    tags: list[str]
    run_on: list[str] = Field(description="only a node with all these labels runs it")
    notify: list[dict[str, Any]] = Field(description="notification targets, secrets hidden")
    is_enabled: bool
    paused: bool
    last_run: Optional[ApiRun] = Field(description="the last run that finished in this process")
    definition: dict[str, Any] = Field(description="the definition as given (JobDefinition)")
    created_at: dt.datetime
    updated_at: dt.datetime


class ApiJobPage(_Out):
    """A page of jobs; total counts all matches."""

    jobs: list[ApiJob]
    total: int


class ApiRunPage(_Out):
    """A page of runs, newest first; total counts the matches up to offset + 10,000."""

    runs: list[ApiRun]
    total: int
    total_capped: bool = Field(description="there are more matches than total (counting "
                               "stops 10,000 past the offset)")


class ApiRunQueued(_Out):
    """The run just queued (status queued, trigger manual)."""

    run: ApiRun


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


class ApiReload(_Out):
    """jobs.yaml was read and applied."""

    config: ApiConfig


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
    api_health: _Op(200, ApiHealth, "service"),
    api_status: _Op(200, ApiStatus, "service"),
    api_list_jobs: _Op(200, ApiJobPage, "jobs", query=JobsQuery),
    api_create_job: _Op(201, ApiJob, "jobs", body=JobDefinition, errors=(409,)),
    api_get_job: _Op(200, ApiJob, "jobs"),
    api_replace_job: _Op(200, ApiJob, "jobs", body=JobDefinition, errors=(409,)),
    api_delete_job: _Op(204, None, "jobs", errors=(409,)),
    api_pause_job: _Op(200, ApiJob, "jobs"),
    api_resume_job: _Op(200, ApiJob, "jobs"),
    api_run_job: _Op(202, ApiRunQueued, "jobs", body=RunParams, errors=(409,)),
    api_rerun_run: _Op(202, ApiRunQueued, "runs", errors=(409,)),
    api_list_runs: _Op(200, ApiRunPage, "runs", query=RunsQuery),
    api_get_run: _Op(200, ApiRunDetail, "runs"),
    api_run_stdout: _Op(200, "text/plain", "runs", query=OutputQuery),
    api_run_stderr: _Op(200, "text/plain", "runs", query=OutputQuery),
    api_cancel_run: _Op(200, ApiRun, "runs", errors=(409,)),
    api_nodes: _Op(200, ApiNodes, "service"),
    api_reload: _Op(200, ApiReload, "service"),
    api_openapi: _Op(200, "application/json", "about"),
    api_docs: _Op(200, "text/html", "about"),
    api_metrics: _Op(200, "text/plain", "about"),
}
_ERROR_TEXTS = {
    400: "Malformed JSON, or a query parameter that is unknown or out of range",
    401: "Missing or wrong token: send Authorization: Bearer <token>",
    404: "No such job, run or route",
    405: "Method not allowed on this path (the Allow header lists the allowed ones)",
    409: "Conflict: the id is taken, the job comes from jobs.yaml (edit the file), or the run "
         "cannot be started or cancelled now",
    413: f"Body over {MAX_BODY} bytes",
    415: "Body not sent as Content-Type: application/json",
    422: "Invalid job definition or jobs.yaml: details name each field",
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
def openapi_json(secured: bool) -> str:
    """The OpenAPI document as JSON text, built once per process and token setting."""
    return json.dumps(openapi_document(secured))


def openapi_document(secured: bool = False) -> dict:
    """This API as an OpenAPI 3.1 document; every schema comes from the pydantic models that
    validate the requests (JobDefinition, JobsQuery, RunsQuery) or shape the answers (Api*)."""
    schemas: dict = {}
    models = [(JobDefinition, "validation"), (RunParams, "validation"),
              *((m, "serialization") for m in _RESPONSE_MODELS)]
    for model, mode in models:
        schema = model.model_json_schema(ref_template=_REF, mode=mode)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    paths: dict = {}
    for method, route, handler in API_ROUTES:
        path = route.replace("<", "{").replace(">", "}")
        paths.setdefault(path, {})[method.lower()] = _operation(route, handler, secured)
    doc = {"openapi": "3.1.0",
           "info": {"title": "task-scheduler", "version": __version__, "description": _API_TEXT},
           "paths": paths, "components": {"schemas": schemas}}
    if secured:
        doc["components"]["securitySchemes"] = {"bearerAuth": {
            "type": "http", "scheme": "bearer", "description": "--token or TS_API_TOKEN"}}
        doc["security"] = [{"bearerAuth": []}]
    return doc


def _operation(route: str, handler, secured: bool) -> dict:
    op = _OPERATIONS[handler]
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
    if op.query is OutputQuery:   # ?offset= answers JSON, Accept: text/event-stream a stream
        out[str(op.status)]["content"].update({
            "application/json": {"schema": {"$ref": _REF.format(model="ApiOutput")}},
            "text/event-stream": {"schema": {"type": "string"}}})
    codes = [400, 404, 405, 413, 415, 422, 503, *op.errors, *([401, 429] if secured else [])]
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
                    ApiError, ApiHealth, ApiStatus, ApiNodes, ApiReload, ApiOutput)


# /metrics: Prometheus text format, written by hand

class RunStats:
    """Counters of finished runs for /metrics. At each scrape the runs created since the last
    one are read from ts_runs (so runs of every node count) and counted once when final: the
    counters only grow, as Prometheus expects, and start at zero with the process."""

    overlap = 300.0   # seconds of runs re-read each scrape: history rows commit a little late

    def __init__(self):
        self.lock = threading.Lock()
        self.started = self.floor = time.time()
        self.counted: set = set()       # final runs in the overlap window, already counted
        self.pending: set = set()       # runs seen queued or running
        self.by_status: collections.Counter = collections.Counter()   # (job_id, status)
        self.job_seconds: dict = {}     # job_id -> [sum of run seconds, runs]
        self.duration = _Histogram(DURATION_BUCKETS)
        self.lateness = _Histogram(LATENESS_BUCKETS)

    def update(self, engine: sa.Engine) -> None:
        with self.lock:
            now = time.time()
            # Run ids begin with their creation time, microseconds in 14 hex digits (new_run_id).
            floor = f"{int(self.floor * 1e6):014x}"
            columns = [ts_runs.c[name] for name in ("id", "job_id", "status", "trigger",
                                                    "scheduled_at", "started_at", "finished_at")]
            with engine.connect() as conn:
                rows = conn.execute(sa.select(*columns).where(ts_runs.c.id >= floor)).all()
                older = self.pending - {row.id for row in rows}
                if older:
                    rows += conn.execute(sa.select(*columns)
                                         .where(ts_runs.c.id.in_(list(older)))).all()
            self.pending -= older
            for row in rows:
                self._take(row)
            self.floor = max(self.started, now - self.overlap)
            self.counted = {i for i in self.counted if i >= floor}

    def _take(self, row) -> None:
        if row.id in self.counted:
            return
        if row.status not in FINAL_STATUSES:
            self.pending.add(row.id)
            return
        self.pending.discard(row.id)
        self.counted.add(row.id)
        self.by_status[row.job_id, row.status] += 1
        if row.started_at and row.finished_at:
            seconds = max(0.0, (row.finished_at - row.started_at).total_seconds())
            self.duration.observe(seconds)
            total = self.job_seconds.setdefault(row.job_id, [0.0, 0])
            total[0] += seconds
            total[1] += 1
        if row.started_at and row.trigger in ("schedule", "catchup"):
            self.lateness.observe(max(0.0, (row.started_at - row.scheduled_at).total_seconds()))


class _Histogram:
    def __init__(self, bounds: tuple):
        self.bounds = tuple(float(b) for b in bounds) + (float("inf"),)
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[next(i for i, b in enumerate(self.bounds) if value <= b)] += 1
        self.sum += value

    def samples(self) -> list:
        cumulative = [sum(self.counts[:i + 1]) for i in range(len(self.counts))]
        return ([("_bucket", {"le": b}, n) for b, n in zip(self.bounds, cumulative, strict=True)]
                + [("_sum", {}, self.sum), ("_count", {}, cumulative[-1])])


def metrics_text(service: SchedulerService, stats: RunStats) -> str:
    """The metrics of ``service`` in the Prometheus text exposition format 0.0.4."""
    stats.update(service.engine)
    status, state, nodes = service.status(), service.metrics_state(), service.nodes()
    prefix = "task_scheduler_"
    families = [
        ("info", "gauge", "Version and node of this process",
         [("", {"version": __version__, "node": service.config.node}, 1)]),
        ("scheduler_running", "gauge", "1 while the scheduler thread is running and leads",
         [("", {}, int(status["scheduler"] == "running"))]),
        ("leader", "gauge", "1 while this node holds the leader lease",
         [("", {"node": service.config.node}, int(status["role"] == "leader"))]),
        ("nodes", "gauge", "Nodes of the cluster by liveness (SQLite: this one)",
         [("", {"alive": str(alive).lower()}, sum(1 for n in nodes if n["alive"] == alive))
          for alive in (True, False)]),
        ("failovers_total", "counter", "Times this node saw the lease move to a new leader",
         [("", {}, state.get("failovers", 0))]),
        ("jobs", "gauge", "Jobs by state",
         [("", {"state": s}, status["jobs"].get(s, 0)) for s in JOB_STATES]),
        ("runs_active", "gauge", "Runs queued or running in this process",
         [("", {}, status["active_runs"])]),
        ("runs_finished_total", "counter", "Runs finished since this process started, by job "
         "and final status", [("", {"job_id": j, "status": s}, n)
                              for (j, s), n in sorted(stats.by_status.items())]),
        ("run_duration_seconds", "histogram", "Run time from start to end, all jobs",
         stats.duration.samples()),
        ("job_run_duration_seconds", "summary", "Run time from start to end, by job",
         [(suffix, {"job_id": j}, v) for j, (total, count) in sorted(stats.job_seconds.items())
          for suffix, v in (("_sum", total), ("_count", count))]),
        ("fire_lateness_seconds", "histogram", "Start of a scheduled run after its fire time",
         stats.lateness.samples()),
        ("reloads_total", "counter", "jobs.yaml reloads applied", [("", {}, state["reloads"])]),
        ("reload_failures_total", "counter", "jobs.yaml reloads rejected as invalid",
         [("", {}, state["reload_failures"])]),
        ("config_error", "gauge", "1 while the last jobs.yaml reload failed",
         [("", {}, int(bool(status["config"]["error"])))]),
        ("history_dropped_total", "counter", "Run history writes given up on",
         [("", {}, state.get("history_dropped", 0))]),
    ]
    lines = []
    for name, kind, text, samples in families:
        lines += [f"# HELP {prefix}{name} {_help_text(text)}", f"# TYPE {prefix}{name} {kind}"]
        lines += [f"{prefix}{name}{suffix}{_labels(labels)} {_number(value)}"
                  for suffix, labels, value in samples]
    return "\n".join(lines) + "\n"


def _labels(labels: dict) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_label_value(v)}"' for k, v in labels.items()) + "}"


def _label_value(value: Any) -> str:
    text = _number(value) if isinstance(value, float) else str(value)
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _help_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: Any) -> str:
    if isinstance(value, float):
        if value != value:
            return "NaN"
        if value in (float("inf"), float("-inf")):
            return "+Inf" if value > 0 else "-Inf"
        return repr(value)
    return str(int(value))


# --------------------------------------------------------------------------------------------
# Built-in jobs
# --------------------------------------------------------------------------------------------

def http_check(url: str, timeout: float = 10.0, expect_status: int = 200,
               contains: Optional[str] = None) -> None:
    """A health check: GET ``url``; fails (raises) unless the status and body are as expected.
    A path (``/api/health``) means this service's own address, whatever port it listens on."""
    if url.startswith("/"):
        context = _current_run.get()
        base = context.service.base_url if context is not None else None
        if not base:
            raise RuntimeError(f"{url} is a path: it needs the address of the service running "
                               f"this job (task-scheduler run sets it); give a full URL")
        url = base + url
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            status, body = resp.status, resp.read(1 << 20).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read(1 << 20).decode("utf-8", "replace")
    elapsed = time.monotonic() - started
    print(f"GET {url} -> {status} in {elapsed * 1000:.0f} ms")
    if status != expect_status:
        raise RuntimeError(f"{url} answered {status}, expected {expect_status}")
    if contains is not None and contains not in body:
        raise RuntimeError(f"{url} answered without {contains!r}")


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

def main(argv: Optional[list] = None) -> int:
    """``task-scheduler [run] [...]``, ``task-scheduler validate [PATH]``, ``--version``."""
    args = _parser().parse_args(_default_command(sys.argv[1:] if argv is None else argv))
    if args.command == "validate":
        return _cmd_validate(args.path)
    try:
        config = Config.from_args(args)
        explicit = args.config or os.environ.get("TS_CONFIG")
        if explicit and not os.path.exists(explicit):
            raise SchedulerError(f"config file {explicit} does not exist (--config or "
                                 f"TS_CONFIG); create it (an empty list is []) or leave the "
                                 f"setting out to use ./jobs.yaml")
        logging.basicConfig(level=config.log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        if args.token:
            log.warning("--token shows in ps to every user of this machine; prefer "
                        "TS_API_TOKEN or --token-file")
        return _cmd_run(config)
    except SchedulerError as exc:
        print(f"task-scheduler: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="task-scheduler", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"task-scheduler {__version__}")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run the scheduler with its API and GUI (the default)",
                         description="Run the scheduler with its API and GUI (the default "
                                     "command). Flags win over the environment variables named.",
                         epilog="Other commands: 'task-scheduler validate [PATH]' checks a "
                                "jobs.yaml; 'task-scheduler --version'.")
    flags = (
        ("--config", "jobs.yaml path (TS_CONFIG; default ./jobs.yaml; a path given here must "
                     "exist)"),
        ("--db", "database URL (TS_DATABASE_URL; default sqlite:///./task_scheduler.sqlite; "
                 "postgresql://user@host/db for production and for several nodes)"),
        ("--host", "bind address (TS_HOST; default 127.0.0.1; anything else needs a token)"),
        ("--port", "port (TS_PORT; default 8000)"),
        ("--token", "API/GUI bearer token (TS_API_TOKEN); visible in ps: prefer the variable "
                    "or --token-file"),
        ("--token-file", "read the token from this file (TS_API_TOKEN_FILE)"),
        ("--allowed-hosts", "comma-separated Host names to answer besides loopback and the "
                            "bound address, e.g. the name a reverse proxy passes "
                            "(TS_ALLOWED_HOSTS; '.example.com' allows subdomains)"),
        ("--node-id", "this node's name in a cluster (TS_NODE_ID; default the host name; "
                      "each node of one database needs its own)"),
        ("--labels", "comma-separated labels of this node, for jobs' run_on (TS_NODE_LABELS; "
                     "e.g. db,backup)"),
        ("--public-url", "this service's address as people reach it, for links in "
                         "notifications (TS_PUBLIC_URL; e.g. https://sched.example.com)"),
        ("--smtp-url", "mail server for email notifications (TS_SMTP_URL; "
                       "smtp://user:pass@host:587?from=me@example.com uses STARTTLS, smtps:// "
                       "TLS); visible in ps: prefer the variable"),
        ("--pass-env", "comma-separated TS_* variables command jobs get all the same "
                       "(TS_PASS_ENV; jobs get no TS_* variable of the service otherwise)"),
        ("--trusted-proxies", "comma-separated addresses (or networks, 10.0.0.0/8) of reverse "
                              "proxies whose X-Forwarded-For names the client, for the limit on "
                              "wrong tokens and connections (TS_TRUSTED_PROXIES)"),
        ("--log-level", "DEBUG, INFO, WARNING, ERROR (TS_LOG_LEVEL)"),
    )
    for flag, text in flags:
        run.add_argument(flag, help=text)
    val = sub.add_parser("validate", help="check a jobs.yaml; exit 1 with file:line errors")
    val.add_argument("path", nargs="?", default=os.environ.get("TS_CONFIG", "jobs.yaml"))
    return parser


def _default_command(argv: list) -> list:
    if argv in (["-h"], ["--help"]):
        return ["run", "--help"]   # the flags people look for are the run command's
    if argv and argv[0] in ("run", "validate", "-h", "--help", "--version"):
        return argv
    return ["run", *argv]


def _cmd_validate(path: str) -> int:
    try:
        jobs, _ = load_jobs_file(path)
    except InvalidConfig as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(f"{path}: OK, {len(jobs)} jobs")
    return 0


def _cmd_run(config: Config) -> int:
    if config.host not in LOOPBACK_HOSTS and not config.token:
        raise SchedulerError(f"refusing to bind {config.host} without a token: anyone who can "
                             f"reach it could run commands. Set TS_API_TOKEN or --token-file, "
                             f"or bind 127.0.0.1")
    service = SchedulerService(config)
    # Before any job's module is imported: a thread one starts at import is held to the
    # limit on output no run owns (_Spill) from the start.
    _capture_routers()
    try:   # the port first: a busy port must not find a scheduler already firing
        server = make_server(create_app(service), config.host, config.port,
                             config.trusted_proxies)
    except OSError as exc:
        service.engine.dispose()
        raise SchedulerError(f"cannot listen on {config.host}:{config.port}: "
                             f"{exc.strerror or exc}") from None
    service.base_url = _base_url(config.host, server.server_port)
    try:
        service.start()
    except BaseException:
        server.server_close()
        raise
    _handle_signals(service, server)
    _trim_heap()
    log.info("serving on http://%s:%d/", config.host, server.server_port)
    server.serve_forever()
    server.server_close()
    service.stop()
    return 0


def _trim_heap() -> None:
    """Hand the heap that start-up used and freed back to the system: glibc keeps it otherwise
    (~2 MiB of idle RSS with 10,000 jobs; a few milliseconds)."""
    import ctypes
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        log.debug("no malloc_trim here (not glibc)")


def _handle_signals(service: SchedulerService, server) -> None:
    """SIGTERM/SIGINT stop gracefully; a second one stops at once. SIGHUP reloads jobs.yaml."""
    asked = threading.Event()

    def on_stop(signum, _frame):
        name = signal.Signals(signum).name
        if asked.is_set():
            log.warning("%s again: stopping now; runs still going are recorded interrupted", name)
            service.hurry()
            return
        asked.set()
        log.info("%s: stopping (send it again to stop at once)", name)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    if service.reloader is not None:
        signal.signal(signal.SIGHUP, lambda *_: service.reloader.poke(0))


def _base_url(host: str, port: int) -> str:
    """How jobs of this process reach its API (the sample's self check)."""
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1" if host != "::" else "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
