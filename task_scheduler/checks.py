"""Checks of one job definition beyond its schema: trigger fields, dates, callables and their
arguments, commands and shell syntax, params of a run. Each problem names its field."""

from __future__ import annotations

import contextlib
import datetime as dt
import difflib
import functools
import importlib
import importlib.util
import inspect
import logging
import os
import re
import shlex
import shutil
import sys
import threading
import time
from typing import Any, Optional

from apscheduler.util import convert_to_datetime
from pydantic import ValidationError

from .errors import InvalidJob
from .explain import _details_text, _pydantic_detail, _pydantic_details, _trigger_field
from .models import (
    BusinessDaySpec, CronSpec, HeartbeatSpec, JobDefinition, ManualSpec, RunParams, _CRON_FIELDS,
    _argv_problem)
from .text import _clean, _type_name
from .workflow import graph_problems, merge_step
from .triggers import _aps_field_problem, _zone, build_trigger, crontab_problems

log = logging.getLogger("task_scheduler")


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
    return details + _step_problems(defn, base_dir)


def _step_problems(defn: JobDefinition, base_dir: str) -> list[dict]:
    """A workflow's graph (workflow.graph_problems) and each step's target, as a job's."""
    if defn.steps is None:
        return []
    found = [{"field": f, "message": m, "line": None} for f, m in graph_problems(defn.steps)]
    for index, step in enumerate(defn.steps):
        problem = _target_problem(merge_step(defn, step), base_dir)
        if problem:
            found.append({"field": f"steps.{index}.{problem[0]}", "message": problem[1],
                          "line": None})
    return found


def trigger_problems(spec) -> list[tuple[str, str]]:
    """Each wrong part of a trigger as (field, message), field by field."""
    utc = dt.UTC
    if isinstance(spec, (ManualSpec, HeartbeatSpec)):
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
    if not problems and not isinstance(spec, BusinessDaySpec):   # its calendar: jobsfile
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
    if defn.kind in ("heartbeat", "workflow"):
        return None   # nothing runs here
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
    """Parameters of one run, validated like the job's own; InvalidJob naming what is wrong.
    Declared params (``params``) come back whole: the defaults filled in, so a rerun repeats
    exactly these values."""
    if (params is None or params == {}) and not defn.params:
        return None
    try:
        given = RunParams.model_validate(params or {})
    except ValidationError as exc:
        details = [_pydantic_detail(e) for e in exc.errors()]
        raise InvalidJob(_details_text(details, defn.id), details) from None
    if defn.params or given.params is not None:
        given.params = check_declared(defn, given.params or {})
    if defn.kind == "workflow":
        return _workflow_params(defn, given)
    wrong = "kwargs" if defn.kind == "command" else "env" if defn.isolation == "thread" else ""
    if wrong and getattr(given, wrong) is not None:
        message = ("env is for command jobs and python jobs with isolation: process only"
                   if wrong == "env" else "kwargs are for python jobs only")
        raise InvalidJob(f"job {defn.id}: {wrong}: {message}",
                         [{"field": wrong, "message": message, "line": None}])
    if defn.kind == "command" and given.args is not None and _argv_problem(given.args):
        problem = _argv_problem(given.args)
        raise InvalidJob(f"job {defn.id}: {problem}",
                         [{"field": "args", "message": problem, "line": None}])
    if defn.kind == "python":
        func = resolve_callable(defn.func, base_dir)
        args = defn.args if given.args is None else given.args
        problem = _call_problem(func, args, {**defn.kwargs, **(given.params or {}),
                                             **(given.kwargs or {})})
        if problem:
            raise InvalidJob(f"job {defn.id}: {problem[0]}: {problem[1]}",
                             [{"field": problem[0], "message": problem[1], "line": None}])
    return given.model_dump(exclude_none=True)


def check_declared(defn: JobDefinition, values: dict) -> dict:
    """A run's values of the job's declared params: each given one valid (a string, among the
    choices, matching the pattern whole), the others their defaults; InvalidJob (422) naming
    each parameter that is unknown, wrong or missing, and what is valid."""
    details = [{"field": f"params.{name}", "line": None, "message": problem} for name, problem
               in _declared_problems(defn, values)]
    if details:
        raise InvalidJob(_details_text(details, defn.id), details)
    return {name: values.get(name, spec.default) for name, spec in defn.params.items()
            if name in values or spec.default is not None}


def _declared_problems(defn: JobDefinition, values: dict):
    declared = ", ".join(defn.params) or "none"
    for name, value in values.items():
        spec = defn.params.get(name)
        if spec is None:
            yield name, f"is not a parameter of job {defn.id} (declared: {declared})"
        elif spec.problem(value):
            yield name, spec.problem(value)
    for name, spec in defn.params.items():
        if name not in values and spec.default is None:
            yield name, "is required (it has no default)"


def declared_values(defn: JobDefinition, params: dict) -> dict:
    """A run's parameters with its declared params applied: a command's env gets
    ``TS_PARAM_NAME``, a python function keyword arguments; a run that gave none (a scheduled
    fire) takes the defaults. Raw env and kwargs of the run win over them."""
    if not defn.params:
        return params
    values = {name: spec.default for name, spec in defn.params.items()
              if spec.default is not None}
    values.update(params.get("params") or {})
    if defn.kind == "command":
        env = {f"TS_PARAM_{name}": value for name, value in values.items()}
        return {**params, "env": {**env, **params.get("env", {})}}
    return {**params, "kwargs": {**values, **params.get("kwargs", {})}}
def _workflow_params(defn: JobDefinition, given: RunParams) -> dict:
    """A workflow run's parameters: env only, given to every step."""
    wrong = next((name for name in ("args", "kwargs") if getattr(given, name) is not None), None)
    if wrong:
        message = "a workflow run takes env only (given to every step)"
        raise InvalidJob(f"job {defn.id}: {wrong}: {message}",
                         [{"field": wrong, "message": message, "line": None}])
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



def seal_environ(config) -> None:
    """Take the service's secrets out of os.environ: python jobs share the process and read
    os.environ (command jobs get no TS_* variable anyway: ``_job_env``)."""
    given = {"TS_API_TOKEN": config.token, "TS_SMTP_URL": config.smtp_url,
             "TS_DATABASE_URL": config.database_url}
    for name in SECRET_ENV:
        if os.environ.get(name) and os.environ.get(name) == given[name]:
            del os.environ[name]

def _job_env(defn: JobDefinition, passed: Optional[dict] = None) -> dict:
    """The environment a command job starts from: the service's, less every ``TS_*`` variable
    (the service's own settings, its token, database and SMTP URLs among them), plus what
    --pass-env (TS_PASS_ENV) names and the job's own ``env``. The runner adds TS_JOB_ID,
    TS_RUN_ID and TS_SCHEDULED_AT, and a run's own ``env`` parameters."""
    own = {name: value for name, value in os.environ.items() if not name.startswith("TS_")}
    return {**own, **(passed or {}), **defn.env}


SECRET_ENV = ("TS_API_TOKEN", "TS_SMTP_URL", "TS_DATABASE_URL")   # held by the service alone
