"""task-scheduler: a resilient, persistent, observable task scheduler in one module.

One process runs APScheduler 3 with its jobs and every run's history in a database (SQLite by
default, PostgreSQL for production), applies edits of ``jobs.yaml`` live, and serves a JSON REST API
and a web GUI from one Bottle app on one threaded port.

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

import argparse
import collections
import concurrent.futures
import contextlib
import contextvars
import dataclasses
import datetime as dt
import fcntl
import functools
import hashlib
import hmac
import importlib
import io
import json
import logging
import os
import pickle
import random
import re
import secrets
import shlex
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import traceback
import wsgiref.simple_server
import zoneinfo
from typing import Annotated, Any, Literal, Optional, Union

import bottle
import sqlalchemy as sa
import yaml
from apscheduler.executors.pool import BasePoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_RUNNING
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.cron.fields import DEFAULT_VALUES
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from apscheduler.util import astimezone, convert_to_datetime, datetime_to_utc_timestamp
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
    "http_check",
    "main",
]
log = logging.getLogger("task_scheduler")


# --------------------------------------------------------------------------------------------
# Constants and configuration
# --------------------------------------------------------------------------------------------

SCHEMA_VERSION = 1
RUN_STATUSES = ("queued", "running", "succeeded", "failed", "timeout", "interrupted", "missed",
                "skipped", "cancelled")
FINAL_STATUSES = frozenset(RUN_STATUSES) - {"queued", "running"}
RUN_TRIGGERS = ("schedule", "manual", "retry", "catchup")
JOB_STATES = ("scheduled", "paused", "disabled")
SCRIPT_SUFFIXES = (".sh", ".bash", ".bat", ".cmd", ".ps1", ".py")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


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

    _ENV = {"config_path": "TS_CONFIG", "database_url": "TS_DATABASE_URL", "host": "TS_HOST",
            "port": "TS_PORT", "token": "TS_API_TOKEN", "log_level": "TS_LOG_LEVEL",
            "timezone": "TS_TIMEZONE"}

    @classmethod
    def from_env(cls, env: Optional[dict] = None, **overrides: Any) -> Config:
        env = os.environ if env is None else env
        values = {name: env[var] for name, var in cls._ENV.items() if env.get(var)}
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "port" in values:
            values["port"] = _parse_port(values["port"])
        return cls(**values)

    @classmethod
    def from_args(cls, args: argparse.Namespace, env: Optional[dict] = None) -> Config:
        return cls.from_env(env, config_path=args.config, database_url=args.db, host=args.host,
                            port=args.port, token=args.token, log_level=args.log_level)

    @property
    def base_dir(self) -> str:
        """The folder of jobs.yaml: relative scripts and python modules resolve against it."""
        return os.path.dirname(os.path.abspath(self.config_path or "jobs.yaml"))


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
class JobNotFound(SchedulerError, LookupError): status = 404; code = "not_found"  # noqa: E701,E702
class RunNotFound(SchedulerError, LookupError): status = 404; code = "not_found"  # noqa: E701,E702
class JobConflict(SchedulerError): status = 409; code = "conflict"  # noqa: E701,E702
class PayloadTooLarge(SchedulerError): status = 413; code = "too_large"  # noqa: E701,E702
class UnsupportedMedia(SchedulerError): status = 415; code = "unsupported_media_type"  # noqa: E701,E702
class InvalidJob(SchedulerError, ValueError): status = 422; code = "invalid"  # noqa: E701,E702
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


TriggerSpec = Annotated[Union[IntervalSpec, CronSpec, DateSpec], Field(discriminator="type")]
_CRON_FIELDS = ("year", "month", "day", "week", "day_of_week", "hour", "minute", "second")


class RetrySpec(_Model):
    max: Annotated[StrictInt, Field(ge=0, le=100)] = 0
    delay: Annotated[Number, Field(ge=0)] = 0
    backoff: Annotated[Number, Field(ge=1)] = 1


class JobDefinition(_Model):
    """One entry of jobs.yaml, and the body of ``POST /api/jobs``."""

    id: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    func: Optional[StrictStr] = Field(None, description="pkg.mod:func, or a script path")
    command: Union[StrictStr, list[StrictStr], None] = None
    shell: StrictBool = False
    args: list[Any] = []
    kwargs: dict[StrictStr, Any] = {}
    description: StrictStr = ""
    tags: list[StrictStr] = []
    is_enabled: StrictBool = True
    trigger: TriggerSpec
    max_instances: Annotated[StrictInt, Field(ge=1, le=1000)] = 1
    coalesce: StrictBool = True
    misfire_grace_time: Optional[Annotated[Number, Field(gt=0)]] = 60
    timeout: Optional[Annotated[Number, Field(gt=0)]] = None
    retries: Optional[RetrySpec] = None
    env: dict[StrictStr, StrictStr] = {}
    cwd: Optional[StrictStr] = None
    replace_existing: StrictBool = True

    @model_validator(mode="after")
    def _one_target(self) -> JobDefinition:
        if (self.func is None) == (self.command is None):
            raise ValueError("give exactly one of func (a python callable or a script) or command")
        if self.command is not None and not self.command:
            raise ValueError("command: must not be empty")
        if self.shell and not isinstance(self.command, str):
            raise ValueError("shell: true needs command as a string")
        return self

    @property
    def kind(self) -> str:
        return "command" if self.command is not None or _is_script(self.func) else "python"

    def dump(self) -> dict:
        """The definition as given (defaults left out), JSON- and YAML-ready."""
        return self.model_dump(mode="json", exclude_unset=True)


def _is_script(func: Optional[str]) -> bool:
    return bool(func) and ("/" in func or "\\" in func or func.lower().endswith(SCRIPT_SUFFIXES))


def _interval_seconds(spec: IntervalSpec) -> float:
    return (spec.weeks * 604800 + spec.days * 86400 + spec.hours * 3600 + spec.minutes * 60
            + spec.seconds)


def definition_hash(defn: JobDefinition) -> str:
    return hashlib.sha256(json.dumps(defn.dump(), sort_keys=True).encode()).hexdigest()


def parse_job(data: Any, base_dir: str) -> JobDefinition:
    """Validate one job (a dict) fully: schema, trigger, callable or script. Raises InvalidJob."""
    if not isinstance(data, dict):
        raise InvalidJob(f"a job must be a mapping, got {_type_name(data)}",
                         [{"field": "", "message": "must be a mapping", "line": None}])
    try:
        defn = JobDefinition.model_validate(data)
    except ValidationError as exc:
        details = [_pydantic_detail(err) for err in exc.errors()]
        details += _partial_checks(data, details, base_dir)
        raise InvalidJob(_details_text(details, data.get("id")), details) from None
    details = check_job(defn, base_dir)
    if details:
        raise InvalidJob(_details_text(details, defn.id), details)
    return defn


def check_job(defn: JobDefinition, base_dir: str) -> list[dict]:
    """What pydantic cannot see: the trigger builds, the callable imports, the script exists."""
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
    if spec.timezone:
        try:
            _zone(spec.timezone)
        except ValueError as exc:
            return [("timezone", str(exc).removeprefix("timezone: "))]
    problems = []
    for name in ("run_date", "start_date", "end_date"):
        value = getattr(spec, name, None)
        if isinstance(value, str):
            try:
                convert_to_datetime(value, utc, name)
            except ValueError:
                problems.append((name, f"{value!r} is not a date/time (ISO 8601, e.g. "
                                       f"'2026-12-24 18:00:00' or '2026-12-24T18:00:00+01:00')"))
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
            resolve_callable(defn.func, base_dir)
        except InvalidJob as exc:
            return "func", str(exc)
        return None
    if defn.shell:
        return None
    field = "func" if defn.command is None else "command"
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


def resolve_callable(ref: str, base_dir: Optional[str] = None):
    """Import ``pkg.mod:func`` or ``pkg.mod.func``; the folder of jobs.yaml is importable."""
    if base_dir and base_dir not in sys.path:
        sys.path.insert(0, base_dir)
    module_name, sep, attr = ref.partition(":")
    if not sep:
        module_name, _, attr = ref.rpartition(".")
    if not module_name or not attr:
        raise InvalidJob(f"{ref!r} is not a callable reference (use 'package.module:function')")
    try:
        obj = importlib.import_module(module_name)
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


def _job_env(defn: JobDefinition) -> dict:
    return {**os.environ, **defn.env}


def load_jobs_file(path: str, parser: Optional[JobsParser] = None
                   ) -> tuple[list[JobDefinition], str]:
    """Read, parse and validate a whole jobs.yaml. Returns (jobs, sha256); raises InvalidConfig."""
    text, digest = read_jobs_file(path)
    return (parser or JobsParser()).parse(text, path), digest


def read_jobs_file(path: str) -> tuple[str, str]:
    """The text of jobs.yaml and the sha256 of its bytes; InvalidConfig if it cannot be read."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        detail = {"line": None, "job": None, "field": "", "message": f"cannot read: {exc.strerror}"}
        raise InvalidConfig(f"{path}: cannot read: {exc.strerror}", [detail]) from None
    return raw.decode("utf-8", "replace"), hashlib.sha256(raw).hexdigest()


class JobsParser:
    """Parses jobs.yaml fast, remembering the entries of its last good parse: a one-job edit of a
    10,000-job file re-reads and re-validates that job only. The fast path uses libyaml and
    builds no YAML nodes; any doubt or error falls back to ``parse_jobs_text``, the one path that
    reports errors with line numbers."""

    def __init__(self):
        self._chunks: dict[str, Any] = {}            # text of a top-level item -> loaded item
        self._definitions: dict[str, JobDefinition] = {}   # canonical JSON -> definition

    def parse(self, text: str, path: str = "jobs.yaml") -> list[JobDefinition]:
        jobs = self._parse_fast(text, path)
        return jobs if jobs is not None else parse_jobs_text(text, path)

    def _parse_fast(self, text: str, path: str) -> Optional[list[JobDefinition]]:
        try:
            items, chunks = self._load(text)
        except (yaml.YAMLError, ValueError):
            return None
        items, problems = _job_items(None, items) if items is not None else ([], ["empty"])
        if problems:
            return None
        base_dir = os.path.dirname(os.path.abspath(path))
        definitions, targets, jobs = {}, {}, []
        for item in items:
            defn, key = self._definition(item)
            if defn is None:
                return None
            target = (defn.func, json.dumps(defn.command), defn.shell, json.dumps(defn.args,
                      default=str), defn.env.get("PATH"), defn.cwd)
            if target not in targets:   # one look-up per distinct program, not per job
                targets[target] = _target_problem(defn, base_dir)
            if targets[target] is not None:
                return None
            definitions[key] = defn
            jobs.append(defn)
        if len({j.id for j in jobs}) != len(jobs):
            return None
        self._chunks, self._definitions = chunks, definitions   # only what this file uses
        return jobs

    def _definition(self, item: Any) -> tuple[Optional[JobDefinition], str]:
        if not isinstance(item, dict):
            return None, ""
        try:
            key = json.dumps(item, sort_keys=True)
        except (TypeError, ValueError):   # YAML dates, sets, mixed keys: the full path decides
            return None, ""
        defn = self._definitions.get(key)
        if defn is None:
            try:
                defn = JobDefinition.model_validate(item)
            except ValidationError:
                return None, key
            if trigger_problems(defn.trigger):
                return None, key
        return defn, key

    def _load(self, text: str) -> tuple[Any, dict]:
        if not text.strip():
            return None, {}
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        chunks = _top_level_items(text)
        if chunks is not None:
            try:
                loaded = {c: self._chunks[c] if c in self._chunks else _load_one(c, loader)
                          for c in chunks}
                return [loaded[c] for c in chunks], loaded
            except (yaml.YAMLError, ValueError):
                pass   # an alias to another item, an odd layout: load the whole file
        return yaml.load(text, Loader=loader), {}


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
        return root, loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        detail = _yaml_error_detail(exc, text)
        raise InvalidConfig(_config_error_text(path, [detail]), [detail]) from None
    finally:
        loader.dispose()


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


def _pydantic_detail(err: dict) -> dict:
    loc = [str(p) for p in err["loc"]]
    # Drop the union branch names pydantic inserts (trigger.cron.minute -> trigger.minute).
    if len(loc) >= 2 and loc[0] == "trigger" and loc[1] in ("interval", "cron", "date"):
        loc = [loc[0], *loc[2:]]
    loc = [p for p in loc if not (p.startswith(("str", "int", "float", "list[", "datetime", "date",
                                                 "function-")) or p in ("bool", "dict"))]
    field = ".".join(loc)
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        message = "unknown key"
    elif err["type"] == "union_tag_invalid" or err["type"] == "union_tag_not_found":
        message = "type must be one of: interval, cron, date"
        field = "trigger.type"
    elif "input" in err and err["type"] not in ("missing",) and not isinstance(err["input"], dict):
        message = f"{message} (got {_short(err['input'])})"
    return {"field": field, "message": message, "line": None}


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

def build_trigger(spec, default_tz):
    """An APScheduler trigger for a spec; ``default_tz`` applies where the spec names none."""
    tz = _zone(spec.timezone) if spec.timezone else default_tz
    if isinstance(spec, IntervalSpec):
        return IntervalTrigger(weeks=0, days=0, hours=0, minutes=0, seconds=_interval_seconds(spec),
                               start_date=spec.start_date, end_date=spec.end_date, timezone=tz,
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


def trigger_is_current(stored, spec, default_tz) -> bool:
    """Whether ``stored``, a trigger unpickled from APScheduler's job table, is what
    ``build_trigger(spec, default_tz)`` builds today (same class, same state).

    Stores written before issue 14 hold DstSafeCronTrigger and OrTrigger objects for cron jobs.
    They still load and fire, but to give such a job today's trigger without moving its
    schedule, call ``scheduler.modify_job(job_id, trigger=build_trigger(spec, default_tz))``:
    modify_job keeps the job's next_run_time (pitfall A15), so the next fire stays where it was
    and the new trigger continues from it. reschedule_job would recompute it from now."""
    fresh = build_trigger(spec, default_tz)
    return type(stored) is type(fresh) and _comparable(stored, spec) == _comparable(fresh, spec)


def crontab_trigger(expression: str, tz=None, jitter=None, start_date=None, end_date=None):
    """The trigger of a crontab line; ``tz`` defaults to the system's zone."""
    return CrontabTrigger(expression, tz if tz is not None else _local_zone(),
                          start_date=start_date, end_date=end_date, jitter=jitter)


def _comparable(trigger, spec) -> dict:
    state = dict(trigger.__getstate__())
    if "fields" in state:   # APScheduler's range expressions compare equal whatever their step
        state["fields"] = [(f.name, str(f), f.is_default) for f in state["fields"]]
    if isinstance(spec, IntervalSpec) and spec.start_date is None:
        state.pop("start_date", None)   # "now + interval" when built; next_run_time holds the phase
    return state


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


def run_to_dict(row: Any, output: bool = False) -> dict:
    """A run row (or live run dict) in the API's Run shape."""
    get = row.get if isinstance(row, dict) else row._mapping.get
    started, finished = get("started_at"), get("finished_at")
    out = {
        "id": get("id"), "job_id": get("job_id"), "status": get("status"),
        "trigger": get("trigger"), "attempt": get("attempt") or 0,
        "scheduled_at": _iso(get("scheduled_at")), "started_at": _iso(started),
        "finished_at": _iso(finished),
        "duration_s": round((finished - started).total_seconds(), 3)
        if started and finished else None,
        "exit_code": get("exit_code"), "error": get("error"), "truncated": bool(get("truncated")),
        "node": get("node"),
    }
    if output:
        out["stdout"], out["stderr"] = get("stdout") or "", get("stderr") or ""
    return out


class Page(list):
    """A list of results with the ``total`` count of all matches (before limit/offset)."""

    total: int = 0


# --------------------------------------------------------------------------------------------
# Store: tables, migrations, the history writer
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
    sa.Column("attempt", sa.Integer, nullable=False, default=0),
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
    sa.UniqueConstraint("job_id", "scheduled_at", "trigger", "attempt", name="uq_ts_runs_fire"),
    sa.Index("ix_ts_runs_job_id", "job_id", "id"),
    sa.Index("ix_ts_runs_scheduled_at", "scheduled_at"),
    sa.Index("ix_ts_runs_status", "status"),
)
APS_TABLE = "ts_apscheduler_jobs"
_SUMMARY_COLUMNS = [c for c in ts_runs.c if c.name not in ("stdout", "stderr")]


def new_run_id() -> str:
    """Sortable by creation time (microseconds, hex) with random bits against collisions."""
    return f"{time.time_ns() // 1000:014x}{secrets.token_hex(3)}"


def create_engine(url: str, busy_timeout: float = 30.0) -> sa.Engine:
    """An engine tuned for us: SQLite in WAL mode with a private file; PostgreSQL with pre-ping."""
    if url.startswith("sqlite"):
        _make_private_sqlite(url)
        engine = sa.create_engine(url, connect_args={"timeout": busy_timeout})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    connect_args = {"application_name": "task-scheduler"} if "postgresql" in url else {}
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
    """Create or upgrade our tables; refuse a schema newer than this code. Returns the version."""
    _metadata.create_all(engine)
    with engine.begin() as conn:
        row = conn.execute(sa.select(ts_meta.c.value).where(ts_meta.c.key == "schema_version"))
        version = int(row.scalar() or 0)
        if version > SCHEMA_VERSION:
            raise SchedulerError(f"the database has schema version {version}, newer than this "
                                 f"task-scheduler {__version__} knows ({SCHEMA_VERSION}); "
                                 f"upgrade task-scheduler")
        for step in range(version + 1, SCHEMA_VERSION + 1):
            _MIGRATIONS.get(step, lambda c: None)(conn)
        if version == 0:
            conn.execute(ts_meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
        elif version < SCHEMA_VERSION:
            conn.execute(ts_meta.update().where(ts_meta.c.key == "schema_version")
                         .values(value=str(SCHEMA_VERSION)))
    return SCHEMA_VERSION


# Forward migrations by target version: {2: lambda conn: conn.execute(sa.text("ALTER ..."))}.
_MIGRATIONS: dict = {}


class BatchingJobStore(SQLAlchemyJobStore):
    """APScheduler's SQLAlchemy store, except that inside ``batch()`` one thread's writes are
    committed together: one transaction per scheduler wakeup however many jobs fired, and one
    per reconcile however many jobs changed (APScheduler commits each job on its own)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._local = threading.local()

    @contextlib.contextmanager
    def batch(self):
        if getattr(self._local, "ops", None) is not None:
            yield   # already batching in this thread
            return
        self._local.ops = []
        try:
            yield
        finally:
            self.flush()
            self._local.ops = None

    def flush(self) -> None:
        ops = getattr(self._local, "ops", None)
        if not ops:
            return
        self._local.ops = []
        table = self.jobs_t
        with self.engine.begin() as conn:
            for kind, job_id, values in ops:
                if kind == "remove":
                    conn.execute(table.delete().where(table.c.id == job_id))
                elif conn.execute(table.update().where(table.c.id == job_id)
                                  .values(**values)).rowcount == 0 and kind == "add":
                    conn.execute(table.insert().values(id=job_id, **values))

    def add_job(self, job):
        if not self._queue("add", job.id, self._values(job)):
            super().add_job(job)

    def update_job(self, job):
        if not self._queue("update", job.id, self._values(job)):
            super().update_job(job)

    def remove_job(self, job_id):
        if not self._queue("remove", job_id, None):
            super().remove_job(job_id)

    def get_next_run_time(self):
        self.flush()   # the scheduler asks this after its updates: answer from the database
        return super().get_next_run_time()

    def lookup_job(self, job_id):
        self.flush()
        return super().lookup_job(job_id)

    def _queue(self, kind: str, job_id: str, values: Optional[dict]) -> bool:
        ops = getattr(self._local, "ops", None)
        if ops is None:
            return False
        ops.append((kind, job_id, values))
        return True

    def _values(self, job) -> dict:
        return {"next_run_time": datetime_to_utc_timestamp(job.next_run_time),
                "job_state": pickle.dumps(job.__getstate__(), self.pickle_protocol)}


class _Write:
    __slots__ = ("kind", "run_id", "fields", "done", "ok")

    def __init__(self, kind: str, run_id: Optional[str] = None, fields: Optional[dict] = None,
                 wait: bool = False):
        self.kind, self.run_id, self.fields = kind, run_id, fields or {}
        self.done = threading.Event() if wait else None
        self.ok = True


class HistoryWriter:
    """One thread owns every write to ts_runs: runs are inserted and updated in batches, so the
    scheduler and the workers never wait on the database (only a claim waits, see ``insert``)."""

    BATCH = 500
    RETRY_DELAYS = (0.5, 1, 2, 4, 8, 15, 30)   # about a minute of outage is bridged

    def __init__(self, engine: sa.Engine, prune=None, prune_every: float = 600):
        self._engine, self._prune = engine, prune
        self._queue: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._prune_every, self._next_prune = prune_every, time.monotonic() + 5
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="ts-history", daemon=True)
        self.dropped = 0

    def start(self) -> None:
        self._thread.start()

    def insert(self, fields: dict, wait: Optional[float] = None) -> Optional[bool]:
        """Queue a new run. With ``wait``, block until written: False if the unique key
        (job, scheduled time, trigger, attempt) already exists, None on time-out."""
        item = self._put(_Write("insert", fields["id"], dict(fields), wait is not None))
        if wait is None:
            return True
        return item.ok if item.done.wait(wait) else None

    def update(self, run_id: str, **fields: Any) -> None:
        self._put(_Write("update", run_id, fields))

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued before this call is committed."""
        return self._put(_Write("barrier", wait=True)).done.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        self.flush(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)

    def _put(self, item: _Write) -> _Write:
        with self._cond:
            self._queue.append(item)
            self._cond.notify()
        return item

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._stopping, timeout=30)
                if self._stopping and not self._queue:
                    return
                batch = [self._queue.popleft() for _ in range(min(self.BATCH, len(self._queue)))]
            try:
                self._write_with_retry(batch)
                self._maybe_prune()
            except Exception:
                log.exception("history writer: unexpected error; continuing")

    def _write_with_retry(self, batch: list) -> None:
        writes = [w for w in batch if w.kind != "barrier"]
        for delay in (*self.RETRY_DELAYS, None):
            try:
                self._write(writes)
                break
            except sa.exc.DBAPIError as exc:
                if delay is None or self._stopping:
                    self.dropped += len(writes)
                    log.error("history writer: dropping %d run records after retries: %s",
                              len(writes), _clean(exc))
                    break
                log.warning("history writer: database error, retrying in %ss: %s", delay,
                            _clean(exc))
                time.sleep(delay)
        for w in batch:
            if w.done is not None:
                w.done.set()

    def _write(self, writes: list) -> None:
        merged: dict[str, _Write] = {}
        for w in writes:
            prev = merged.get(w.run_id)
            if prev is not None and prev.kind == "insert" and w.kind == "update":
                prev.fields.update(w.fields)
            elif prev is not None and w.kind == "update":
                prev.fields.update(w.fields)
            else:
                merged[w.run_id] = w
        inserts = [w for w in merged.values() if w.kind == "insert"]
        updates = [w for w in merged.values() if w.kind == "update"]
        with self._engine.begin() as conn:
            self._insert_all(conn, inserts)
            for w in updates:
                conn.execute(ts_runs.update().where(ts_runs.c.id == w.run_id).values(**w.fields))

    def _insert_all(self, conn, inserts: list) -> None:
        if not inserts:
            return
        try:
            with conn.begin_nested():
                conn.execute(ts_runs.insert(), [_row_defaults(w.fields) for w in inserts])
            return
        except sa.exc.IntegrityError:
            pass  # a duplicate fire in the batch: find it row by row below
        for w in inserts:
            try:
                with conn.begin_nested():
                    conn.execute(ts_runs.insert().values(**_row_defaults(w.fields)))
            except sa.exc.IntegrityError:
                w.ok = False

    def _maybe_prune(self) -> None:
        if self._prune and time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + self._prune_every
            self._prune()


def _row_defaults(fields: dict) -> dict:
    row = {c.name: None for c in ts_runs.c}
    row.update(attempt=0, truncated=False)
    row.update(fields)
    return row


def prune_runs(engine: sa.Engine, keep_runs: int, keep_days: float) -> int:
    """Retention: delete finished runs older than keep_days, and all but keep_runs per job."""
    cutoff = _utcnow() - dt.timedelta(days=keep_days)
    deleted = 0
    with engine.begin() as conn:
        deleted += conn.execute(ts_runs.delete().where(
            ts_runs.c.scheduled_at < cutoff, ts_runs.c.status.in_(FINAL_STATUSES))).rowcount
        counts = conn.execute(sa.select(ts_runs.c.job_id).group_by(ts_runs.c.job_id)
                              .having(sa.func.count() > keep_runs)).scalars().all()
        for job_id in counts:
            edge = conn.execute(sa.select(ts_runs.c.id).where(ts_runs.c.job_id == job_id)
                                .order_by(ts_runs.c.id.desc()).offset(keep_runs - 1)
                                .limit(1)).scalar()
            deleted += conn.execute(ts_runs.delete().where(
                ts_runs.c.job_id == job_id, ts_runs.c.id < edge)).rowcount
    if deleted:
        log.info("retention: pruned %d runs", deleted)
    return deleted


# --------------------------------------------------------------------------------------------
# Executor: execute_job(), python and command runners, output capture
# --------------------------------------------------------------------------------------------

_fire: contextvars.ContextVar = contextvars.ContextVar("task_scheduler_fire")


def execute_job(job_id: str) -> None:
    """The one function every APScheduler job calls. Our executor sets the context (service,
    scheduled time) around the call; user callables are never pickled into the job store."""
    try:
        service, scheduled_at, trigger = _fire.get()
    except LookupError:
        raise SchedulerError("execute_job runs only inside a task-scheduler executor") from None
    service._execute(job_id, scheduled_at, trigger)


class CappedOutput:
    """Bytes of one stream, capped: the head and the tail are kept, a marker stands between."""

    def __init__(self, limit: int):
        self._half = max(limit // 2, 1)
        self._head = bytearray()
        self._tail: collections.deque = collections.deque()
        self._tail_size = 0
        self.dropped = 0
        self._lock = threading.Lock()

    def write(self, data: bytes) -> None:
        with self._lock:
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

    def text(self) -> str:
        with self._lock:
            tail = b"".join(self._tail)
            extra = max(len(tail) - self._half, 0)
            dropped = self.dropped + extra
            tail = tail[extra:]
            head = bytes(self._head)
        if not dropped:
            return (head + tail).decode("utf-8", "replace")
        return (head.decode("utf-8", "replace") + f"\n[... {dropped} bytes truncated ...]\n"
                + tail.decode("utf-8", "replace"))


class _ThreadRouter(io.TextIOBase):
    """Stands in for sys.stdout/sys.stderr: writes from a thread bound to a run go to that run's
    capture, everything else to the real stream."""

    def __init__(self, original):
        self._original = original
        self._local = threading.local()

    def bind(self, sink: Optional[CappedOutput]) -> None:
        self._local.sink = sink

    def write(self, text: str) -> int:
        sink = getattr(self._local, "sink", None)
        if sink is None:
            return self._original.write(text)
        sink.write(text.encode("utf-8", "replace"))
        return len(text)

    def flush(self) -> None:
        if getattr(self._local, "sink", None) is None:
            self._original.flush()

    def __getattr__(self, name):
        return getattr(self._original, name)


class _RunLogHandler(logging.Handler):
    """Log records emitted by a thread that runs a python job go to that run's stderr."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self._local = threading.local()
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def bind(self, sink: Optional[CappedOutput]) -> None:
        self._local.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        sink = getattr(self._local, "sink", None)
        if sink is not None:
            sink.write((self.format(record) + "\n").encode("utf-8", "replace"))


_capture_lock = threading.Lock()


def _capture_routers() -> tuple[_ThreadRouter, _ThreadRouter, _RunLogHandler]:
    """Install (once, and again if someone replaced sys.stdout since) the per-thread routers."""
    with _capture_lock:
        for name in ("stdout", "stderr"):
            if not isinstance(getattr(sys, name), _ThreadRouter):
                setattr(sys, name, _ThreadRouter(getattr(sys, name)))
        root = logging.getLogger()
        handler = next((h for h in root.handlers if isinstance(h, _RunLogHandler)), None)
        if handler is None:
            handler = _RunLogHandler()
            root.addHandler(handler)
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
    proc: Optional[subprocess.Popen] = None
    stop_reason: Optional[str] = None    # "cancelled" or "interrupted" once we end it


def run_python(func, args: list, kwargs: dict, limit: int) -> _Outcome:
    """Call a python job in this thread with its output and log records captured."""
    out, err = CappedOutput(limit), CappedOutput(limit)
    stdout, stderr, handler = _capture_routers()
    for target, sink in ((stdout, out), (stderr, err), (handler, err)):
        target.bind(sink)
    try:
        func(*args, **kwargs)
        status, error = "succeeded", None
    except BaseException as exc:  # SystemExit and KeyboardInterrupt in a job are failures too
        status = "failed"
        error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
    finally:
        for target in (stdout, stderr, handler):
            target.bind(None)
    return _Outcome(status, None, error, out.text(), err.text(), out.truncated or err.truncated)


def run_command(argv: list, env: dict, cwd: str, timeout: Optional[float], limit: int,
                kill_grace: float, active: _ActiveRun) -> _Outcome:
    """Run a command in its own session (process group); on timeout or cancel the whole group
    gets TERM, then KILL after ``kill_grace``."""
    out, err = CappedOutput(limit), CappedOutput(limit)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, cwd=cwd, env=env, start_new_session=True)
    except OSError as exc:
        return _Outcome("failed", 127 if isinstance(exc, FileNotFoundError) else 126,
                        f"cannot start {argv[0]}: {exc.strerror or exc}")
    active.proc = proc
    if active.stop_reason:   # cancelled while starting
        kill_group(proc, kill_grace)
    pumps = [threading.Thread(target=_pump, args=(pipe, sink), daemon=True)
             for pipe, sink in ((proc.stdout, out), (proc.stderr, err))]
    for p in pumps:
        p.start()
    timed_out = False
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        kill_group(proc, kill_grace)
        code = proc.wait()
    _drain(pumps, proc, kill_grace)
    return _Outcome(*_command_status(code, timed_out, active.stop_reason, timeout), out.text(),
                    err.text(), out.truncated or err.truncated)


def _pump(pipe, sink: CappedOutput) -> None:
    try:
        for chunk in iter(functools.partial(pipe.read1, 65536), b""):
            sink.write(chunk)
    except (OSError, ValueError) as exc:
        log.debug("output pipe closed: %s", exc)
    finally:
        pipe.close()


def _drain(pumps: list, proc: subprocess.Popen, grace: float) -> None:
    """Children that outlive the command keep its pipes open: give them ``grace``, then end them."""
    for p in pumps:
        p.join(grace)
    if any(p.is_alive() for p in pumps):
        _signal_group(proc.pid, signal.SIGKILL)
        for p in pumps:
            p.join(grace)


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
# Scheduler service
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class JobRecord:
    """A job definition as applied: one row of ts_jobs, kept in memory for fast reads."""

    definition: JobDefinition
    source: str
    paused: bool
    hash: str
    created_at: dt.datetime
    updated_at: dt.datetime
    trigger: Any = None   # the built APScheduler trigger, for next fire times
    view: Optional[tuple] = None   # (key, job dict, JSON) cached by SchedulerService._view

    @property
    def state(self) -> str:
        if not self.definition.is_enabled:
            return "disabled"
        return "paused" if self.paused else "scheduled"


class _Scheduler(BackgroundScheduler):
    """APScheduler's scheduler, made to survive database errors in its loop (pitfall A8) and to
    process nothing once it is stopping (pitfall A9)."""

    retry_wait = 5.0

    def _process_jobs(self):
        if self.state != STATE_RUNNING:
            return None
        try:
            with self._jobstores["default"].batch():
                wait = super()._process_jobs()
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {_clean(exc)}"
            log.error("scheduler loop: %s; retrying in %ss", self.last_error, self.retry_wait)
            return self.retry_wait
        self.last_error = None
        return wait

    def alive(self) -> bool:
        thread = getattr(self, "_thread", None)
        return self.running and thread is not None and thread.is_alive()


class _RunExecutor(BasePoolExecutor):
    """Runs fires in a thread pool and tells the service each fire's scheduled time."""

    def __init__(self, service: SchedulerService, max_workers: int):
        super().__init__(concurrent.futures.ThreadPoolExecutor(max_workers, "ts-run"))
        self._service = service

    def _do_submit_job(self, job, run_times):
        future = self._pool.submit(self._service._run_fires, job, list(run_times))
        future.add_done_callback(functools.partial(self._done, job.id))

    def _done(self, job_id: str, future: concurrent.futures.Future) -> None:
        exc = future.exception()
        if exc is not None:
            self._run_job_error(job_id, exc, exc.__traceback__)
        else:
            self._run_job_success(job_id, [])

    def submit(self, fn, *args):
        return self._pool.submit(fn, *args)


class SchedulerService:
    """The scheduler, its store, reloader and history: everything but HTTP. Thread-safe."""

    def __init__(self, config: Config):
        self.config = config
        self.engine = create_engine(config.database_url, config.busy_timeout)
        self.timezone = _zone(config.timezone) if config.timezone else _local_zone()
        self._lock = threading.RLock()
        self._records: dict[str, JobRecord] = {}
        self._active: dict[str, _ActiveRun] = {}
        self._running = collections.Counter()
        self._last_runs: dict[str, dict] = {}
        self._recent: collections.OrderedDict = collections.OrderedDict()   # finished, maybe
        # not yet committed by the history writer: reads must still find them
        self._timers: set[threading.Timer] = set()
        self._config_state = {"path": config.config_path and os.path.abspath(config.config_path),
                              "loaded_at": None, "hash": None, "jobs": 0, "error": None,
                              "errors": [], "reloads": 0, "failures": 0}
        self._seen_hash: Optional[str] = None
        self._parser = JobsParser()
        self._lockfile = None
        self.started_at: Optional[dt.datetime] = None
        self.stopping = False
        self._executor = _RunExecutor(self, config.max_workers)
        self._store = BatchingJobStore(engine=self.engine, tablename=APS_TABLE, pickle_protocol=4)
        self.scheduler = _Scheduler(
            jobstores={"default": self._store},
            executors={"default": self._executor}, timezone=self.timezone)
        self.history = HistoryWriter(self.engine, prune=self.prune)
        self.reloader = Reloader(self) if config.config_path else None

    # lifecycle

    def start(self) -> SchedulerService:
        """Migrate, recover from a crash, apply jobs.yaml, then start firing. Returns at once."""
        self._lock_database()
        migrate(self.engine)
        self.started_at = _utcnow()
        self._recover_interrupted()
        self._load_records()
        self.history.start()
        self.scheduler.add_listener(self._on_aps_event, _APS_EVENTS)
        self.scheduler.start(paused=True)
        self._ensure_scheduled()
        if self.config.config_path:
            try:
                self.reload(initial=True)
            except InvalidConfig:
                log.warning("starting with the jobs stored in the database")
        self.scheduler.resume()
        if self.reloader is not None:
            self.reloader.start()
        log.info("task-scheduler %s started: %d jobs, database %s", __version__,
                 len(self._records), self.engine.url.render_as_string(hide_password=True))
        return self

    def stop(self, grace: Optional[float] = None) -> None:
        """Stop firing, give running runs ``grace`` seconds, end what is left, record it all."""
        if self.stopping:
            return
        self.stopping = True
        grace = self.config.shutdown_grace if grace is None else grace
        if self.reloader is not None:
            self.reloader.stop()
        for timer in list(self._timers):
            timer.cancel()
        if self.scheduler.running:
            self.scheduler.pause()
        self._wait_active(grace)
        self._end_active()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        self._executor._pool.shutdown(wait=False, cancel_futures=True)
        self.history.stop()
        self.engine.dispose()
        if self._lockfile is not None:
            self._lockfile.close()
        log.info("task-scheduler stopped")

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
                                 f"({holder}); only one scheduler may use a database") from None
        self._lockfile.truncate(0)
        self._lockfile.write(f"pid {os.getpid()} on {self.config.node}\n")
        self._lockfile.flush()

    def _wait_active(self, grace: float) -> None:
        deadline = time.monotonic() + grace
        while self._active and time.monotonic() < deadline:
            time.sleep(0.05)

    def _end_active(self) -> None:
        """Commands still running get TERM then KILL; python threads cannot be killed, so their
        runs are recorded as interrupted now."""
        for active in list(self._active.values()):
            if active.proc is not None and active.proc.poll() is None:
                active.stop_reason = "interrupted"
                kill_group(active.proc, self.config.kill_grace)
        self._wait_active(self.config.kill_grace + 1)
        now = _utcnow()
        for active in list(self._active.values()):
            self._finish_run(active.run, _Outcome("interrupted", error="service stopped"), now)

    def _recover_interrupted(self) -> None:
        with self.engine.begin() as conn:
            result = conn.execute(
                ts_runs.update().where(ts_runs.c.status.in_(("running", "queued")))
                .values(status="interrupted", finished_at=_utcnow(),
                        error=f"interrupted: the service stopped without finishing this run "
                              f"(found at start-up on {self.config.node})"))
        if result.rowcount:
            log.warning("marked %d runs interrupted (left running by a crash)", result.rowcount)

    def _load_records(self) -> None:
        with self.engine.begin() as conn:
            rows = conn.execute(sa.select(ts_jobs)).all()
            last = conn.execute(
                sa.select(*_SUMMARY_COLUMNS).where(ts_runs.c.id.in_(
                    sa.select(sa.func.max(ts_runs.c.id)).group_by(ts_runs.c.job_id)))).all()
        self._records.clear()
        for row in rows:
            try:
                defn = JobDefinition.model_validate(json.loads(row.definition))
            except (ValidationError, ValueError) as exc:
                log.error("job %s in the database no longer validates, skipped: %s", row.id,
                          _clean(exc))
                continue
            self._records[row.id] = JobRecord(defn, row.source, row.paused, row.definition_hash,
                                              row.created_at, row.updated_at)
        self._last_runs = {r.job_id: run_to_dict(r) for r in last}

    def _ensure_scheduled(self) -> None:
        """Jobs whose APScheduler row is missing (a lost store, or a restored DB) get one again;
        rows of jobs we no longer know are removed. Existing rows are never touched."""
        with self.engine.begin() as conn:
            aps_ids = set(conn.execute(sa.text(f"SELECT id FROM {APS_TABLE}")).scalars())
        with self._store.batch():
            for job_id, rec in self._records.items():
                if job_id not in aps_ids and rec.definition.is_enabled:
                    self._aps_add(rec, only_future=True)
            for job_id in aps_ids - set(self._records):
                self._aps_remove(job_id)

    # health and status

    def health(self) -> tuple[bool, dict]:
        scheduler_ok = self.scheduler.alive() and not getattr(self.scheduler, "last_error", None)
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            db = "ok"
        except sa.exc.SQLAlchemyError as exc:
            db = f"error: {_clean(exc)}"
        body = {"status": "ok" if scheduler_ok and db == "ok" else "unavailable",
                "scheduler": "running" if scheduler_ok else "down", "db": db}
        return body["status"] == "ok", body

    def status(self) -> dict:
        counts = collections.Counter(r.state for r in self._records.values())
        return {
            "version": __version__,
            "started_at": _iso(self.started_at),
            "uptime_s": round((_utcnow() - self.started_at).total_seconds(), 1)
            if self.started_at else 0,
            "node": self.config.node,
            "role": "leader",
            "scheduler": self._scheduler_state(),
            "timezone": str(self.timezone),
            "jobs": {"total": len(self._records), **{s: counts.get(s, 0) for s in JOB_STATES}},
            "runs_24h": self.run_counts(_utcnow() - dt.timedelta(hours=24)),
            "active_runs": len(self._active),
            "config": self.config_status(),
        }

    def _scheduler_state(self) -> str:
        if self.stopping or not self.scheduler.running:
            return "stopped"
        return "running" if self.scheduler.alive() else "down"

    def config_status(self) -> dict:
        state = self._config_state
        return {"changes": state.get("changes"),   # counts by kind of the last applied reload
                **{k: state[k] for k in ("path", "loaded_at", "hash", "jobs", "error", "errors")}}

    def metrics_state(self) -> dict:
        return {"reloads": self._config_state["reloads"],
                "reload_failures": self._config_state["failures"],
                "history_dropped": self.history.dropped}

    def run_counts(self, since: dt.datetime) -> dict:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(ts_runs.c.status, sa.func.count())
                                .where(ts_runs.c.scheduled_at >= since)
                                .group_by(ts_runs.c.status)).all()
        return {status: count for status, count in rows}

    # jobs: reads

    def jobs(self, q: Optional[str] = None, state: Optional[str] = None,
             source: Optional[str] = None, kind: Optional[str] = None, tag: Optional[str] = None,
             limit: Optional[int] = None, offset: int = 0) -> Page:
        """Jobs matching every given filter, by id; ``.total`` counts all matches."""
        views, total = self._select(q, state, source, kind, tag, limit, offset)
        page = Page(dict(view[0]) for view in views)
        page.total = total
        return page

    def jobs_json(self, q: Optional[str] = None, state: Optional[str] = None,
                  source: Optional[str] = None, kind: Optional[str] = None,
                  tag: Optional[str] = None, limit: Optional[int] = None,
                  offset: int = 0) -> tuple[list[str], int]:
        """``jobs()`` as one JSON text per job, and the total: the API's fast path."""
        views, total = self._select(q, state, source, kind, tag, limit, offset)
        return [view[1] for view in views], total

    def job(self, job_id: str) -> dict:
        return dict(self._view(self._record(job_id), self._next_run_time(job_id))[0])

    def job_json(self, job_id: str) -> str:
        return self._view(self._record(job_id), self._next_run_time(job_id))[1]

    def _next_run_time(self, job_id: str) -> Optional[float]:
        return self._next_run_times([job_id]).get(job_id)

    def _select(self, q, state, source, kind, tag, limit, offset) -> tuple[list, int]:
        needle = q.lower() if q else None
        matches = [r for _, r in sorted(self._records.items())
                   if (state is None or r.state == state)
                   and (source is None or r.source == source)
                   and (kind is None or r.definition.kind == kind)
                   and (tag is None or tag in r.definition.tags)
                   and (needle is None or needle in _search_text(r))]
        page = matches[offset:offset + limit if limit is not None else None]
        next_times = self._next_run_times([r.definition.id for r in page])
        return [self._view(r, next_times.get(r.definition.id)) for r in page], len(matches)

    def _view(self, rec: JobRecord, next_ts: Optional[float]) -> tuple[dict, str]:
        """A job's dict and JSON, kept on its record until its pause state, next fire time or
        last run changes (a new definition is a new record): computing next fire times is the
        bulk of the cost, so a list of 1,000 jobs is answered in milliseconds."""
        key = (rec.paused, next_ts, self._last_runs.get(rec.definition.id))
        if rec.view is None or rec.view[0] != key:
            job = self._job_dict(rec, next_ts)
            rec.view = (key, job, json.dumps(job, default=_json_default))
        return rec.view[1], rec.view[2]

    def _record(self, job_id: str) -> JobRecord:
        rec = self._records.get(job_id)
        if rec is None:
            raise JobNotFound(f"job {job_id!r} does not exist")
        return rec

    def _next_run_times(self, ids: list) -> dict:
        if not ids:
            return {}
        table = sa.table(APS_TABLE, sa.column("id"), sa.column("next_run_time"))
        query = sa.select(table.c.id, table.c.next_run_time)
        if len(ids) < 500:   # an IN list of a page; a full scan beats a huge IN list
            query = query.where(table.c.id.in_(ids))
        with self.engine.connect() as conn:
            return {i: t for i, t in conn.execute(query) if t is not None}

    def _job_dict(self, rec: JobRecord, next_ts: Optional[float]) -> dict:
        d = rec.definition
        next_time = (dt.datetime.fromtimestamp(next_ts, dt.UTC)
                     if next_ts is not None and rec.state == "scheduled" else None)
        return {
            "id": d.id, "description": d.description, "kind": d.kind, "func": d.func,
            "command": _command_list(d), "args": d.args, "kwargs": d.kwargs,
            "trigger": d.trigger.model_dump(mode="json", exclude_none=True),
            "trigger_text": trigger_text(d.trigger), "source": rec.source, "state": rec.state,
            "next_run_time": _iso(next_time),
            "next_run_times": [_iso(t) for t in self._fire_times(rec, next_time, 5)],
            "max_instances": d.max_instances, "coalesce": d.coalesce,
            "misfire_grace_time": d.misfire_grace_time, "timeout": d.timeout, "tags": d.tags,
            "is_enabled": d.is_enabled, "paused": rec.paused,
            "last_run": self._last_runs.get(d.id), "definition": d.dump(),
            "created_at": _iso(rec.created_at), "updated_at": _iso(rec.updated_at),
        }

    def _fire_times(self, rec: JobRecord, first: Optional[dt.datetime], count: int) -> list:
        if first is None:
            return []
        if rec.trigger is None:
            rec.trigger = build_trigger(rec.definition.trigger, self.timezone)
        return fire_times(rec.trigger, first, count)

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
        first = trig.get_next_fire_time(None, dt.datetime.now(self.timezone))
        return [_iso(t) for t in fire_times(trig, first, count)] if first else []

    # jobs: writes (all through reconcile)

    def add_job(self, definition: dict, source: str = "api") -> dict:
        defn = parse_job(definition, self.config.base_dir)
        with self._lock:
            if defn.id in self._records:
                raise JobConflict(f"job {defn.id!r} already exists (source "
                                  f"{self._records[defn.id].source}); use PUT to replace it")
            self.reconcile({defn.id: defn}, source, remove_missing=False)
        return self.job(defn.id)

    def replace_job(self, job_id: str, definition: dict) -> dict:
        if isinstance(definition, dict) and definition.get("id", job_id) != job_id:
            raise InvalidJob(f"id: {definition.get('id')!r} in the body differs from {job_id!r} "
                             f"in the path", [{"field": "id", "message": "differs from the path",
                                               "line": None}])
        defn = parse_job({**definition, "id": job_id} if isinstance(definition, dict)
                         else definition, self.config.base_dir)
        with self._lock:
            self._editable(job_id)
            self.reconcile({job_id: defn}, "api", remove_missing=False)
        return self.job(job_id)

    def delete_job(self, job_id: str) -> None:
        with self._lock, self._changing() as conn:
            self._editable(job_id)
            self._remove(conn, job_id)

    def _editable(self, job_id: str) -> JobRecord:
        rec = self._record(job_id)
        if rec.source == "yaml":
            raise JobConflict(f"job {job_id!r} is defined in {self.config.config_path}; edit the "
                              f"file to change or remove it (pause, resume and run work here)")
        return rec

    def pause(self, job_id: str) -> dict:
        return self._set_paused(job_id, True)

    def resume(self, job_id: str) -> dict:
        return self._set_paused(job_id, False)

    def _set_paused(self, job_id: str, paused: bool) -> dict:
        with self._lock:
            rec = self._record(job_id)
            if rec.paused != paused:
                with self.engine.begin() as conn:
                    conn.execute(ts_jobs.update().where(ts_jobs.c.id == job_id)
                                 .values(paused=paused, updated_at=_utcnow()))
                rec.paused = paused
                if rec.definition.is_enabled:
                    self._aps_call("pause_job" if paused else "resume_job", job_id)
                log.info("job %s %s", job_id, "paused" if paused else "resumed")
        return self.job(job_id)

    def reconcile(self, desired: dict, source: str, remove_missing: bool = True) -> dict:
        """The one path every change takes: diff desired definitions against the applied ones by
        id and hash; add, reschedule (trigger changed), modify (options only: the next fire time
        is kept) or remove. Untouched jobs keep their schedule and pause state."""
        changes: dict[str, list] = {"added": [], "rescheduled": [], "modified": [],
                                    "removed": [], "unchanged": []}
        with self._lock:
            try:
                with self._changing() as conn:
                    for job_id, defn in desired.items():
                        rec = self._records.get(job_id)
                        if rec is not None and rec.source != source:
                            raise JobConflict(f"job {job_id!r} already exists with source "
                                              f"{rec.source}")
                        changes[self._apply(conn, rec, defn, source)].append(job_id)
                    if remove_missing:
                        for job_id in [i for i, r in self._records.items()
                                       if r.source == source and i not in desired]:
                            self._remove(conn, job_id)
                            changes["removed"].append(job_id)
            except Exception:
                self._load_records()   # memory follows what the database kept
                raise
        touched = {k: v for k, v in changes.items() if v and k != "unchanged"}
        if touched:
            log.info("reconcile (%s): %s", source,
                     ", ".join(f"{k} {len(v)}" for k, v in touched.items()))
        return changes

    @contextlib.contextmanager
    def _changing(self):
        """A transaction on ts_jobs, then the APScheduler rows of the same change in one batch:
        ts_jobs commits first, so two write transactions are never open at once (on SQLite the
        second would wait for the first)."""
        with self._store.batch(), self.engine.begin() as conn:
            yield conn
        self.scheduler.wakeup()   # its last look at the store may predate the batch

    def _apply(self, conn, rec: Optional[JobRecord], defn: JobDefinition, source: str) -> str:
        digest = definition_hash(defn)
        if rec is not None and rec.hash == digest:
            return "unchanged"
        now = _utcnow()
        new = JobRecord(defn, source, rec.paused if rec else False, digest,
                        rec.created_at if rec else now, now)
        values = dict(source=source, definition=json.dumps(defn.dump()), definition_hash=digest,
                      paused=new.paused, updated_at=now)
        if rec is None:
            conn.execute(ts_jobs.insert().values(id=defn.id, created_at=now, **values))
        else:
            conn.execute(ts_jobs.update().where(ts_jobs.c.id == defn.id).values(**values))
        self._records[defn.id] = new
        if rec is None:
            if defn.is_enabled:
                self._aps_add(new)
            return "added"
        old = rec.definition
        if old.is_enabled != defn.is_enabled or old.trigger != defn.trigger:
            self._aps_remove(defn.id)
            if defn.is_enabled:
                self._aps_add(new)
            return "rescheduled"
        if defn.is_enabled:
            self._aps_call("modify_job", defn.id, **_aps_options(defn))
        return "modified"

    def _remove(self, conn, job_id: str) -> None:
        conn.execute(ts_jobs.delete().where(ts_jobs.c.id == job_id))
        self._records.pop(job_id, None)
        self._aps_remove(job_id)

    def _aps_add(self, rec: JobRecord, only_future: bool = False) -> None:
        defn = rec.definition
        rec.trigger = build_trigger(defn.trigger, self.timezone)
        now = dt.datetime.now(self.timezone)
        first = rec.trigger.get_next_fire_time(None, now)
        if first is None or (only_future and isinstance(defn.trigger, DateSpec) and first < now):
            return   # a date job whose time has passed: nothing left to schedule
        self.scheduler.add_job(
            "task_scheduler:execute_job", trigger=rec.trigger, args=[defn.id], id=defn.id,
            name=defn.id, replace_existing=True, **_aps_options(defn),
            **({"next_run_time": None} if rec.paused else {}))

    def _aps_remove(self, job_id: str) -> None:
        try:
            self.scheduler.remove_job(job_id)
        except JobLookupError:
            log.debug("job %s had no APScheduler entry", job_id)

    def _aps_call(self, method: str, job_id: str, **kwargs) -> None:
        try:
            getattr(self.scheduler, method)(job_id, **kwargs)
        except JobLookupError:
            log.debug("job %s has no APScheduler entry (done or disabled)", job_id)

    # reload

    def reload(self, initial: bool = False, force: bool = False) -> dict:
        """Read jobs.yaml and apply it if it validates; else keep everything and record why.
        Content already applied (same hash) is skipped unless ``force``. The file is parsed
        outside the service lock: fires and API calls never wait on a big file. Returns the
        config status; raises InvalidConfig when the file is bad."""
        path = self.config.config_path
        if not path or self.reloader is None:
            raise BadRequest("this service has no jobs.yaml (config_path is not set)")
        with self.reloader.lock:   # one reload at a time: the file read last is applied last
            try:
                text, digest = read_jobs_file(path)
            except InvalidConfig as exc:
                return self._reload_failed(exc, None)
            if digest == self._seen_hash and not force and not self._config_state["error"]:
                return self.config_status()
            try:
                jobs = self._parser.parse(text, path)
            except InvalidConfig as exc:
                return self._reload_failed(exc, digest)
            with self._lock:
                conflict = _api_id_conflict(self._records, path, jobs)
                if conflict is not None:
                    return self._reload_failed(conflict, digest)
                changes = self.reconcile({j.id: j for j in jobs}, "yaml")
                self._seen_hash = digest
                self._config_state.update(
                    loaded_at=_iso(_utcnow()), hash=digest, jobs=len(jobs), error=None,
                    errors=[], changes={k: len(v) for k, v in changes.items()},
                    reloads=self._config_state["reloads"] + (0 if initial else 1))
        return self.config_status()

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

    # runs: reads

    def runs(self, job_id: Optional[str] = None, status: Optional[str] = None,
             since: Optional[dt.datetime] = None, limit: int = 50, offset: int = 0,
             trigger: Optional[str] = None) -> Page:
        """Runs newest first (without their output); ``.total`` counts all matches."""
        conds = []
        if job_id:
            conds.append(ts_runs.c.job_id == job_id)
        if status:
            conds.append(ts_runs.c.status == status)
        if trigger:
            conds.append(ts_runs.c.trigger == trigger)
        if since:
            conds.append(ts_runs.c.scheduled_at >= _naive_utc(since))
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(*_SUMMARY_COLUMNS).where(*conds)
                                .order_by(ts_runs.c.id.desc()).limit(limit).offset(offset)).all()
            total = conn.execute(sa.select(sa.func.count()).select_from(ts_runs)
                                 .where(*conds)).scalar()
        page = Page(self._fresh(run_to_dict(r)) for r in rows)
        page.total = total
        return page

    def run(self, run_id: str) -> dict:
        """One run with its stdout and stderr (live output for a run still going)."""
        live = self._active.get(run_id)
        live = live.run if live is not None else self._recent.get(run_id)
        if live is not None:
            return run_to_dict(live, output=True)
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(ts_runs).where(ts_runs.c.id == run_id)).first()
        if row is None:
            raise RunNotFound(f"run {run_id!r} does not exist")
        return run_to_dict(row, output=True)

    def _fresh(self, run: dict) -> dict:
        active = self._active.get(run["id"])
        return run_to_dict(active.run) if active is not None else run

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the run history written so far is in the database (tests, shutdown)."""
        return self.history.flush(timeout)

    # runs: writes

    def run_now(self, job_id: str) -> dict:
        """Queue a manual run; returns it (status queued, trigger manual)."""
        rec = self._record(job_id)
        with self._lock:
            if self._running[job_id] >= rec.definition.max_instances:
                raise JobConflict(f"job {job_id!r} is already running "
                                  f"(max_instances={rec.definition.max_instances})")
            now = _utcnow()
            run = self._new_run(job_id, "manual", now, status="queued")
            self._running[job_id] += 1
            self._active[run["id"]] = _ActiveRun(run)
        queued = run_to_dict(run)   # before a worker starts changing it
        self.history.insert(run)
        self._executor.submit(self._execute_queued, run)
        return queued

    def cancel(self, run_id: str) -> dict:
        """Cancel a queued run, or kill a running command's process group."""
        active = self._active.get(run_id)
        if active is None:
            run = self.run(run_id)
            raise JobConflict(f"run {run_id} is not running (status {run['status']})")
        rec = self._records.get(active.run["job_id"])
        if active.run["status"] == "running" and rec and rec.definition.kind == "python":
            raise JobConflict(f"run {run_id} is a python job; a running thread cannot be "
                              f"stopped from outside (make the job return, or run it as a "
                              f"command job to get timeout and cancel)")
        with self._lock:
            active.stop_reason = "cancelled"
            queued = active.run["status"] == "queued"
        if queued:
            self._finish_run(active.run, _Outcome("cancelled", error="cancelled before it "
                                                                    "started"), _utcnow())
        elif active.proc is not None:
            threading.Thread(target=kill_group, args=(active.proc, self.config.kill_grace),
                             daemon=True).start()
        log.info("run %s of %s cancelled", run_id, active.run["job_id"])
        return run_to_dict(active.run)

    def _new_run(self, job_id: str, trigger: str, scheduled_at: dt.datetime, status: str,
                 attempt: int = 0) -> dict:
        return {"id": new_run_id(), "job_id": job_id, "trigger": trigger, "attempt": attempt,
                "scheduled_at": _naive_utc(scheduled_at), "started_at": None,
                "finished_at": None, "status": status, "exit_code": None, "error": None,
                "truncated": False, "node": self.config.node}

    def _run_fires(self, job, run_times: list) -> None:
        """Called in a worker for each APScheduler submission: one fire per scheduled time."""
        for run_time in run_times:
            late = (dt.datetime.now(dt.UTC) - run_time).total_seconds()
            if job.misfire_grace_time is not None and late > job.misfire_grace_time:
                self._record_only(job.id, run_time, "missed",
                                  f"missed by {late:.1f}s (misfire_grace_time "
                                  f"{job.misfire_grace_time:g}s)")
                continue
            trigger = "catchup" if _naive_utc(run_time) < self.started_at else "schedule"
            token = _fire.set((self, run_time, trigger))
            try:
                job.func(*job.args, **job.kwargs)
            finally:
                _fire.reset(token)

    def _execute(self, job_id: str, scheduled_at: dt.datetime, trigger: str) -> None:
        rec = self._records.get(job_id)
        if rec is None or self.stopping:
            return
        with self._lock:
            if self._running[job_id] >= rec.definition.max_instances:
                running = self._running[job_id]
                skip = True
            else:
                self._running[job_id] += 1
                skip = False
        if skip:
            self._record_only(job_id, scheduled_at, "skipped",
                              f"{running} run(s) still going (max_instances="
                              f"{rec.definition.max_instances})")
            return
        run = self._new_run(job_id, trigger, scheduled_at, "running")
        run["started_at"] = _utcnow()
        self._active[run["id"]] = _ActiveRun(run)
        if self.history.insert(run, wait=10) is False:
            # Another process already ran this fire (the unique key): don't run it twice.
            log.warning("fire of %s at %s already recorded; not running it again", job_id,
                        scheduled_at)
            self._release(run["id"], job_id)
            return
        self._run_and_finish(rec, run)

    def _execute_queued(self, run: dict) -> None:
        rec = self._records.get(run["job_id"])
        with self._lock:   # against cancel(): a queued run either starts or is cancelled
            active = self._active.get(run["id"])
            if active is None or active.stop_reason:
                return   # cancel() or stop() records it
            if rec is not None and not self.stopping:
                run.update(status="running", started_at=_utcnow())
        if run["status"] != "running":
            self._finish_run(run, _Outcome("cancelled", error="job removed or service "
                                                               "stopping"), _utcnow())
            return
        self.history.update(run["id"], status="running", started_at=run["started_at"])
        self._run_and_finish(rec, run)

    def _run_and_finish(self, rec: JobRecord, run: dict) -> None:
        try:
            outcome = self._run_job(rec.definition, self._active[run["id"]])
        except Exception as exc:  # our own failure: record it rather than lose the run
            log.exception("run %s of %s failed inside task-scheduler", run["id"], run["job_id"])
            outcome = _Outcome("failed", error=f"task-scheduler error: {exc}\n"
                                                f"{traceback.format_exc()}")
        self._finish_run(run, outcome, _utcnow())
        self._maybe_retry(rec.definition, run, outcome)

    def _run_job(self, defn: JobDefinition, active: _ActiveRun) -> _Outcome:
        limit = self.config.output_limit
        if defn.kind == "python":
            try:
                func = resolve_callable(defn.func, self.config.base_dir)
            except InvalidJob as exc:
                return _Outcome("failed", error=f"func: {exc}")
            return run_python(func, defn.args, defn.kwargs, limit)
        env = {**_job_env(defn), "TS_JOB_ID": defn.id, "TS_RUN_ID": active.run["id"],
               "TS_SCHEDULED_AT": _iso(active.run["scheduled_at"]) or ""}
        cwd = _resolve_path(defn.cwd, self.config.base_dir) if defn.cwd else self.config.base_dir
        return run_command(command_argv(defn, self.config.base_dir), env, cwd, defn.timeout,
                           limit, self.config.kill_grace, active)

    def _finish_run(self, run: dict, outcome: _Outcome, now: dt.datetime) -> None:
        if not self._release(run["id"], run["job_id"]):
            return   # already recorded (the service stopped while this run went on)
        fields = dict(status=outcome.status, finished_at=now, exit_code=outcome.exit_code,
                      error=outcome.error, stdout=outcome.stdout, stderr=outcome.stderr,
                      truncated=outcome.truncated)
        run.update(fields)
        self.history.update(run["id"], **fields)
        self._remember(run)
        level = logging.INFO if outcome.status == "succeeded" else logging.WARNING
        log.log(level, "run %s of %s: %s%s", run["id"], run["job_id"], outcome.status,
                f" ({_clean(Exception(outcome.error))})" if outcome.error else "")

    def _remember(self, run: dict) -> None:
        self._last_runs[run["job_id"]] = run_to_dict(run)
        with self._lock:
            self._recent[run["id"]] = run
            while len(self._recent) > 500:   # far more than one writer batch can hold back
                self._recent.popitem(last=False)

    def _release(self, run_id: str, job_id: str) -> bool:
        """Forget an active run; False if it was already forgotten."""
        with self._lock:
            if self._active.pop(run_id, None) is None:
                return False
            self._running[job_id] -= 1
            if self._running[job_id] <= 0:
                del self._running[job_id]
            return True

    def _record_only(self, job_id: str, scheduled_at: dt.datetime, status: str, error: str):
        """A fire that did not run (missed, skipped) still gets a row: the history shows gaps."""
        run = self._new_run(job_id, "schedule", scheduled_at, status)
        run.update(finished_at=_utcnow(), error=error)
        self.history.insert(run)
        self._remember(run)
        log.warning("fire of %s at %s %s: %s", job_id, _iso(run["scheduled_at"]), status, error)

    def _maybe_retry(self, defn: JobDefinition, run: dict, outcome: _Outcome) -> None:
        spec = defn.retries
        if (spec is None or outcome.status not in ("failed", "timeout") or self.stopping
                or run["attempt"] >= spec.max):
            return
        delay = spec.delay * spec.backoff ** run["attempt"]
        timer = threading.Timer(delay, self._start_retry, args=(defn.id, run))
        timer.daemon = True
        self._timers.add(timer)
        timer.start()
        log.info("run %s of %s will be retried in %ss (attempt %d of %d)", run["id"], defn.id,
                 delay, run["attempt"] + 1, spec.max)

    def _start_retry(self, job_id: str, failed: dict) -> None:
        self._timers = {t for t in self._timers if t.is_alive()}
        rec = self._records.get(job_id)
        if rec is None or self.stopping:
            return
        with self._lock:
            run = self._new_run(job_id, "retry", failed["scheduled_at"], "queued",
                                failed["attempt"] + 1)
            self._running[job_id] += 1
            self._active[run["id"]] = _ActiveRun(run)
        self.history.insert(run)
        self._executor.submit(self._execute_queued, run)

    def _on_aps_event(self, event) -> None:
        if event.code == _EVENT_MAX_INSTANCES:
            rec = self._records.get(event.job_id)
            limit = rec.definition.max_instances if rec else "?"
            for run_time in event.scheduled_run_times:
                self._record_only(event.job_id, run_time, "skipped",
                                  f"previous run still going (max_instances={limit})")

    def prune(self) -> int:
        return prune_runs(self.engine, self.config.keep_runs, self.config.keep_days)


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


from apscheduler.events import EVENT_JOB_MAX_INSTANCES as _EVENT_MAX_INSTANCES  # noqa: E402

_APS_EVENTS = _EVENT_MAX_INSTANCES


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
        with open(path, encoding="utf-8", errors="replace") as fh:
            root, _ = _yaml_compose(fh.read(), path)
    except (OSError, InvalidConfig):
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


class JobsQuery(_Model):
    """The query string of ``GET /api/jobs``: every filter given must match."""

    q: Optional[StrictStr] = Field(None, description="text in the id, description, func, "
                                   "command or tags (case-insensitive)")
    state: Optional[Literal[JOB_STATES]] = None
    source: Optional[Literal["yaml", "api"]] = None
    kind: Optional[Literal["python", "command"]] = None
    tag: Optional[StrictStr] = Field(None, description="jobs carrying this tag")
    limit: Annotated[int, Field(ge=1, le=10000)] = 100
    offset: Annotated[int, Field(ge=0, le=MAX_OFFSET)] = 0


class RunsQuery(_Model):
    """The query string of ``GET /api/runs``; runs come newest first."""

    job_id: Optional[Annotated[StrictStr, Field(pattern=ID_PATTERN)]] = None
    status: Optional[Literal[RUN_STATUSES]] = None
    trigger: Optional[Literal[RUN_TRIGGERS]] = None
    since: Optional[dt.datetime] = Field(None, description="runs scheduled at or after this "
                                         "time (ISO 8601; UTC when it has no offset)")
    limit: Annotated[int, Field(ge=1, le=1000)] = 50
    offset: Annotated[int, Field(ge=0, le=MAX_OFFSET)] = 0


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
    """Queue a run now (trigger manual); 409 while max_instances runs are going."""
    return 202, {"run": service.run_now(job_id)}


def api_list_runs(service):
    """Runs, newest first, filtered and paged; ``total`` counts every match."""
    query = _query_params(RunsQuery).model_dump()
    query["since"] = _utc_naive(query["since"])
    page = service.runs(**query)
    return {"runs": list(page), "total": page.total}


def api_get_run(service, run_id):
    """One run with its stdout and stderr (live while it runs)."""
    return service.run(run_id)


def api_run_stdout(service, run_id):
    """A run's stdout as text."""
    return _text(service.run(run_id)["stdout"])


def api_run_stderr(service, run_id):
    """A run's stderr as text."""
    return _text(service.run(run_id)["stderr"])


def api_cancel_run(service, run_id):
    """Cancel a queued run, or kill a running command's process group (TERM, then KILL).

    A running command's run is answered once it has ended (status cancelled), or after
    kill_grace + 2 s; a queued run ends cancelled at once."""
    service.cancel(run_id)
    deadline = time.monotonic() + service.config.kill_grace + 2
    run = service.run(run_id)
    while run["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.02)
        run = service.run(run_id)
    return {k: v for k, v in run.items() if k not in ("stdout", "stderr")}


def api_reload(service):
    """Read and apply jobs.yaml now; 422 with the errors (the running jobs stay as they are)."""
    return {"config": service.reload(force=True)}


def api_openapi(service):
    """This API as an OpenAPI 3.1 document, generated from the models that validate requests."""
    return _raw_json(200, openapi_json(bool(service.config.token)))


def api_docs(service):
    """A readable page of this API, rendered on the server from the OpenAPI document."""
    return bottle.HTTPResponse(docs_html(bool(service.config.token)), headers={
        "Content-Type": "text/html; charset=utf-8", "Content-Security-Policy": DOCS_CSP})


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
    ("POST", "/api/reload", api_reload),
    ("GET", "/api/openapi.json", api_openapi),
    ("GET", "/api/docs", api_docs),
    ("GET", "/metrics", api_metrics),
]
_OPEN_ROUTES = {"/api/health"}   # everything else needs the token when one is configured


def create_app(service: SchedulerService) -> bottle.Bottle:
    """The WSGI app: the JSON API under /api and the GUI, on one Bottle app."""
    app = bottle.Bottle(catchall=True)
    app.config.update({"json.enable": False, "ts.run_stats": RunStats()})
    for method, path, handler in API_ROUTES:
        app.route(path, method, functools.partial(_call_api, service, handler, path))
    for code in (c for c in bottle.HTTP_CODES if c >= 400):
        app.error(code)(_error_page)
    app.add_hook("after_request", _common_headers)
    try:
        import task_scheduler_web
    except ImportError:
        log.debug("task_scheduler_web is not installed: API only")
    else:
        task_scheduler_web.install_gui(app, service)
    return app


def _call_api(service, handler, path, **kwargs):
    try:
        if path not in _OPEN_ROUTES:
            _check_token(service)
        for name, value in kwargs.items():
            if not (0 < len(value) <= 64 and _ID_CHARS.issuperset(value)):
                # No job or run has such an id; the database is not asked (PostgreSQL
                # refuses NUL characters in a query, for one).
                raise (JobNotFound if name == "job_id" else RunNotFound)(
                    f"{name.removesuffix('_id')} {value!r} does not exist")
        result = handler(service, **kwargs)
    except SchedulerError as exc:
        response = _json_response(exc.status, _error_body(exc.code, str(exc), exc.details))
        if isinstance(exc, Unauthorized):
            response.set_header("WWW-Authenticate", 'Bearer realm="task-scheduler"')
        return response
    except bottle.HTTPResponse:
        raise
    except sa.exc.DBAPIError as exc:   # the database is down or locked: not the caller's fault
        log.error("API %s %s: database error: %s", bottle.request.method, bottle.request.path,
                  _clean(exc))
        return _json_response(503, _error_body("unavailable", "the database is not answering; "
                                               "try again shortly"))
    except Exception:
        log.exception("API %s %s failed", bottle.request.method, bottle.request.path)
        return _json_response(500, _error_body("internal", "internal error; see the server log"))
    if isinstance(result, bottle.HTTPResponse):
        return result
    status, body = result if isinstance(result, tuple) else (200, result)
    return _json_response(status, body)


def _check_token(service) -> None:
    token = service.config.token
    if not token:
        return
    given = bottle.request.get_header("Authorization", "")
    scheme, _, value = given.partition(" ")
    # Header values arrive as latin-1 text: back to their bytes, compared in constant time.
    given_bytes = value.strip().encode("latin-1", "replace")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given_bytes, token.encode()):
        raise Unauthorized("missing or wrong token: send 'Authorization: Bearer <token>'")


def _json_response(status: int, body: Any) -> bottle.HTTPResponse:
    if body is None:
        return bottle.HTTPResponse(status=status)
    return _raw_json(status, json.dumps(body, default=_json_default))


def _raw_json(status: int, text: str) -> bottle.HTTPResponse:
    return bottle.HTTPResponse(text, status=status, headers={"Content-Type": "application/json"})


def _json_default(value: Any):
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return str(value)


def _error_body(code: str, message: str, details: Optional[list] = None) -> dict:
    return {"error": {"code": code, "message": message, "details": details or []}}


def _text(body: str) -> bottle.HTTPResponse:
    return bottle.HTTPResponse(body, headers={"Content-Type": "text/plain; charset=utf-8"})


def _error_page(error: bottle.HTTPError):
    """Bottle's own errors (unknown route, wrong method): JSON under /api, plain text elsewhere."""
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
        bottle.response.content_type = "application/json"
        return json.dumps(_error_body(_ERROR_CODES.get(status, "internal" if status >= 500 else
                                                       "error"), message))
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


class _ThreadingServer(socketserver.ThreadingMixIn, wsgiref.simple_server.WSGIServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address) -> None:
        # The app's errors are answered by Bottle; what reaches here is the connection's own.
        log.debug("http connection from %s failed", client_address, exc_info=True)


class _ThreadingServer6(_ThreadingServer):
    address_family = socket.AF_INET6


class _ServerHandler(wsgiref.simple_server.ServerHandler):
    http_version = "1.1"

    def cleanup_headers(self) -> None:
        super().cleanup_headers()
        if self.request_handler.close_connection or "Content-Length" not in self.headers:
            self.request_handler.close_connection = True
            self.headers["Connection"] = "close"


class _RequestHandler(wsgiref.simple_server.WSGIRequestHandler):
    """wsgiref's handler answers one request per connection; this one keeps HTTP/1.1
    connections open (clients and proxies reuse them), batches each response into one write
    and times out idle or stalled clients."""

    protocol_version = "HTTP/1.1"
    timeout = 60           # seconds an idle or stalled connection may hold its thread
    wbufsize = 1 << 16     # status line, headers and body leave in one send, not five
    drain_limit = 4 << 20  # an unread body up to this size is skipped; a bigger one closes
    disable_nagle_algorithm = True   # one write per answer: nothing to coalesce, only to delay

    def handle(self) -> None:
        self.close_connection = True
        self._handle_one()
        while not self.close_connection:
            self._handle_one()

    def _handle_one(self) -> None:
        try:
            self.raw_requestline = self.rfile.readline(65537)
        except OSError:   # idle past the timeout, or the client went away
            self.raw_requestline = b""
        if not self.raw_requestline:
            self.close_connection = True
            return
        if len(self.raw_requestline) > 65536:
            self.requestline = self.request_version = self.command = ""
            self.send_error(414)
            return
        if not self.parse_request():
            return
        body = _RequestBody(self.rfile, self.headers)
        if body.chunked or body.left > self.drain_limit:
            self.close_connection = True   # announced in the answer's Connection header
        handler = _ServerHandler(body if not body.chunked else self.rfile, self.wfile,
                                 self.get_stderr(), self.get_environ(), multithread=True)
        handler.request_handler = self
        handler.run(self.server.get_app())
        self.wfile.flush()
        if not body.skip(self.drain_limit):
            self.close_connection = True
            self._linger()

    def handle_expect_100(self) -> bool:
        super().handle_expect_100()
        self.wfile.flush()   # curl waits a second for this before it sends a body over 1 KiB
        return True

    def _linger(self) -> None:
        """After answering a client that is still sending a body nobody reads: stop writing
        and drain for a moment, so that it reads the answer rather than a connection reset."""
        try:
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(0.5)
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline and self.connection.recv(1 << 16):
                pass
        except OSError as exc:
            log.debug("http %s: %s while draining an unread body", self.address_string(), exc)

    def log_message(self, fmt, *args) -> None:
        log.debug("http %s - %s", self.address_string(), fmt % args)


class _RequestBody:
    """``wsgi.input`` that ends at Content-Length, so the next request on the connection
    is never read as part of this one's body."""

    def __init__(self, rfile, headers):
        self.rfile = rfile
        self.chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        length = headers.get("Content-Length", "0").strip() or "0"
        self.left = int(length) if length.isascii() and length.isdigit() else 0

    def read(self, size: Optional[int] = -1) -> bytes:
        size = self.left if size is None or size < 0 else min(size, self.left)
        data = self.rfile.read(size) if size else b""
        self.left -= len(data)
        return data

    def readline(self, size: Optional[int] = -1) -> bytes:
        size = self.left if size is None or size < 0 else min(size, self.left)
        data = self.rfile.readline(size) if size else b""
        self.left -= len(data)
        return data

    def readlines(self, hint: int = -1) -> list:
        return list(iter(self.readline, b""))

    def __iter__(self):
        return iter(self.readline, b"")

    def skip(self, limit: int) -> bool:
        """Read and drop what the app left unread; False if that is over ``limit`` or fails."""
        if self.left > limit:
            return False
        try:
            self.read()
        except OSError:
            return False
        return self.left == 0


def make_server(app, host: str, port: int) -> _ThreadingServer:
    """The threaded stdlib server (wsgiref alone serves one request at a time), with
    HTTP/1.1 keep-alive."""
    server_class = _ThreadingServer6 if ":" in host else _ThreadingServer
    return wsgiref.simple_server.make_server(host, port, app, server_class=server_class,
                                             handler_class=_RequestHandler)


def serve_in_thread(app, host: str = "127.0.0.1", port: int = 0) -> _ThreadingServer:
    """Serve ``app`` from a background thread; ``server.server_port`` tells the port."""
    server = make_server(app, host, port)
    threading.Thread(target=server.serve_forever, name="ts-http", daemon=True).start()
    return server


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
    node: Optional[str]


class ApiRunDetail(ApiRun):
    """A run with its output (each stream capped; truncated says if a middle was cut)."""

    stdout: str
    stderr: str


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
    """A page of runs, newest first; total counts all matches."""

    runs: list[ApiRun]
    total: int


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
    scheduler: str
    db: str


class ApiConfig(_Out):
    """The state of jobs.yaml: when it was last applied, and the errors of the last reload."""

    path: Optional[str]
    loaded_at: Optional[dt.datetime]
    hash: Optional[str]
    jobs: int
    error: Optional[str]
    errors: list[dict[str, Any]]


class ApiStatus(_Out):
    """The service at a glance."""

    version: str
    started_at: Optional[dt.datetime]
    uptime_s: float
    node: str
    role: str
    scheduler: str
    timezone: str
    jobs: dict[str, int]
    runs_24h: dict[str, int]
    active_runs: int
    config: ApiConfig


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
    api_run_job: _Op(202, ApiRunQueued, "jobs", errors=(409,)),
    api_list_runs: _Op(200, ApiRunPage, "runs", query=RunsQuery),
    api_get_run: _Op(200, ApiRunDetail, "runs"),
    api_run_stdout: _Op(200, "text/plain", "runs"),
    api_run_stderr: _Op(200, "text/plain", "runs"),
    api_cancel_run: _Op(200, ApiRun, "runs", errors=(409,)),
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
    models = [(JobDefinition, "validation"), *((m, "serialization") for m in _RESPONSE_MODELS)]
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
        out["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": _REF.format(model=op.body.__name__)}}}}
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
    codes = [400, 404, 405, 413, 415, 422, 503, *op.errors, *([401] if secured else [])]
    for code in sorted(codes):
        out[str(code)] = _json_answer(_ERROR_TEXTS[code], "ApiError")
    out["405"]["headers"] = {"Allow": {"required": True, "schema": {"type": "string"},
                                       "description": "the methods this path answers"}}
    if secured:
        out["401"]["headers"] = {"WWW-Authenticate": {"required": True,
                                                      "schema": {"type": "string"}}}
    if handler is api_health:
        out["503"] = _json_answer("The scheduler thread or the database is down", "ApiHealth")
    return out


def _json_answer(text: Optional[str], model: str) -> dict:
    return {"description": (text or model).strip().splitlines()[0],
            "content": {"application/json": {"schema": {"$ref": _REF.format(model=model)}}}}


_RESPONSE_MODELS = (ApiJob, ApiJobPage, ApiRun, ApiRunDetail, ApiRunPage, ApiRunQueued,
                    ApiError, ApiHealth, ApiStatus, ApiReload)


# The /api/docs page: plain HTML from the document, no script, no external asset

@functools.lru_cache(maxsize=2)
def docs_html(secured: bool) -> str:
    doc = openapi_document(secured)
    esc = bottle.html_escape
    out = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{esc(doc['info']['title'])} API</title>",
           '<link rel="stylesheet" href="/static/app.css"></head><body><main>',
           f"<h1>{esc(doc['info']['title'])} API {esc(doc['info']['version'])}</h1>",
           *(f"<p>{esc(p.replace('**', '').replace('`', ''))}</p>"   # Markdown, read plain
             for p in doc["info"]["description"].split("\n\n")),
           '<p>Machine-readable: <a href="/api/openapi.json">/api/openapi.json</a> '
           "(OpenAPI 3.1). Examples: docs/api.md.</p>", "<h2>Operations</h2>", "<ul>"]
    ops = [(path, method, op) for path, item in doc["paths"].items()
           for method, op in item.items()]
    out += [f'<li><a href="#{esc(op["operationId"])}"><code>{method.upper()} {esc(path)}'
            f"</code></a> {esc(op['summary'])}</li>" for path, method, op in ops]
    out.append("</ul>")
    for path, method, op in ops:
        out += _docs_operation(path, method, op, secured)
    out.append("<h2>Schemas</h2>")
    for name, schema in doc["components"]["schemas"].items():
        out += _docs_schema(name, schema)
    out.append("</main></body></html>")
    return "\n".join(out)


def _docs_operation(path: str, method: str, op: dict, secured: bool) -> list:
    esc = bottle.html_escape
    out = [f'<section id="{esc(op["operationId"])}"><h3><code>{method.upper()} {esc(path)}'
           f"</code></h3>", f"<p>{esc(op['summary'])} {esc(op.get('description', ''))}</p>"]
    if op["parameters"]:
        out.append("<table><tr><th>parameter</th><th>in</th><th>type</th><th>about</th></tr>")
        out += [f"<tr><td><code>{esc(p['name'])}</code></td><td>{p['in']}</td>"
                f"<td>{_type_html(p['schema'])}</td><td>{esc(p.get('description', ''))}</td></tr>"
                for p in op["parameters"]]
        out.append("</table>")
    if "requestBody" in op:
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        out.append(f"<p>Body (application/json): {_type_html(schema)}</p>")
    answers = [(code, r) for code, r in op["responses"].items() if code < "400"]
    out += [f"<p>Answer: <b>{code}</b> {esc(r['description'])} "
            + " ".join(_type_html(c["schema"]) for c in r.get("content", {}).values()) + "</p>"
            for code, r in answers]
    error = {"$ref": _REF.format(model="ApiError")}
    out.append(f"<p>Errors ({_type_html(error)}): " + ", ".join(
        f'<abbr title="{esc(r["description"])}">{code}</abbr>'
        + "".join(f" ({_type_html(c['schema'])})" for c in r["content"].values()
                  if c["schema"] != error)
        for code, r in op["responses"].items() if code >= "400") + "</p>")
    out.append(f"<pre>{esc(_curl(path, method, op, secured))}</pre></section>")
    return out


def _curl(path: str, method: str, op: dict, secured: bool) -> str:
    parts = ["curl -s"] + ([f"-X {method.upper()}"] if method != "get" else [])
    if secured and op.get("security") != []:
        parts.append("-H 'Authorization: Bearer $TS_API_TOKEN'")
    if "requestBody" in op:
        parts.append("-H 'Content-Type: application/json' -d @job.json")
    return " ".join(parts + [f"http://127.0.0.1:8000{path}"])


def _docs_schema(name: str, schema: dict) -> list:
    esc = bottle.html_escape
    out = [f'<section id="schema-{esc(name)}"><h3>{esc(name)}</h3>']
    if schema.get("description"):
        out.append(f"<p>{esc(schema['description'])}</p>")
    required = set(schema.get("required", []))
    if schema.get("properties"):
        out.append("<table><tr><th>field</th><th>type</th><th>required</th><th>about</th></tr>")
        out += [f"<tr><td><code>{esc(field)}</code></td><td>{_type_html(prop)}</td>"
                f"<td>{'yes' if field in required else ''}</td>"
                f"<td>{esc(str(prop.get('description', '')))}</td></tr>"
                for field, prop in schema["properties"].items()]
        out.append("</table>")
    out.append(f"<details><summary>JSON Schema</summary><pre>"
               f"{esc(json.dumps(schema, indent=2))}</pre></details></section>")
    return out


def _type_html(schema: dict) -> str:
    """A short readable type: links for references, | for alternatives, bounds and patterns."""
    esc = bottle.html_escape
    if "$ref" in schema:
        name = schema["$ref"].rpartition("/")[2]
        return f'<a href="#schema-{esc(name)}">{esc(name)}</a>'
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " | ".join(_type_html(s) for s in schema[key])
    if "enum" in schema or "const" in schema:
        return " | ".join(esc(json.dumps(v)) for v in schema.get("enum", [schema.get("const")]))
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_type_html(schema.get('items', {}))}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"object of {_type_html(schema['additionalProperties'])}"
    extra = [f"{schema['format']}" for _ in [0] if "format" in schema]
    extra += [f"{word} {schema[key]}" for key, word in (
        ("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("pattern", "matching"))
        if key in schema]
    return esc(f"{kind} ({', '.join(map(str, extra))})" if extra else str(kind))


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
    status, state = service.status(), service.metrics_state()
    prefix = "task_scheduler_"
    families = [
        ("info", "gauge", "Version and node of this process",
         [("", {"version": __version__, "node": service.config.node}, 1)]),
        ("scheduler_running", "gauge", "1 while the scheduler thread is running",
         [("", {}, int(status["scheduler"] == "running"))]),
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
    """A health check: GET ``url``; fails (raises) unless the status and body are as expected."""
    import urllib.error
    import urllib.request
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
        logging.basicConfig(level=config.log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return _cmd_run(config)
    except SchedulerError as exc:
        print(f"task-scheduler: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="task-scheduler", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"task-scheduler {__version__}")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run the scheduler with its API and GUI (the default)")
    run.add_argument("--config", help="jobs.yaml path (TS_CONFIG; default ./jobs.yaml)")
    run.add_argument("--db", help="database URL (TS_DATABASE_URL; default "
                                  "sqlite:///./task_scheduler.sqlite)")
    run.add_argument("--host", help="bind address (TS_HOST; default 127.0.0.1)")
    run.add_argument("--port", help="port (TS_PORT; default 8000)")
    run.add_argument("--token", help="API/GUI bearer token (TS_API_TOKEN)")
    run.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR (TS_LOG_LEVEL)")
    val = sub.add_parser("validate", help="check a jobs.yaml; exit 1 with file:line errors")
    val.add_argument("path", nargs="?", default=os.environ.get("TS_CONFIG", "jobs.yaml"))
    return parser


def _default_command(argv: list) -> list:
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
                             f"reach it could run commands. Set --token or TS_API_TOKEN, or bind "
                             f"127.0.0.1")
    service = SchedulerService(config)
    service.start()
    try:
        server = make_server(create_app(service), config.host, config.port)
    except OSError as exc:
        service.stop(0)
        raise SchedulerError(f"cannot listen on {config.host}:{config.port}: {exc.strerror}") \
            from None
    stop = threading.Event()

    def on_stop(signum, _frame):
        log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    if service.reloader is not None:
        signal.signal(signal.SIGHUP, lambda *_: service.reloader.poke(0))
    log.info("serving on http://%s:%d/", config.host, server.server_port)
    server.serve_forever()
    server.server_close()
    service.stop()
    return 0


if __name__ == "__main__":
    import task_scheduler   # one copy of the module: job references resolve to it
    sys.exit(task_scheduler.main())
