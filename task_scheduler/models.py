"""The data shapes: the jobs.yaml schema (JobDefinition and its triggers, retries, notification
targets), run statuses, params of a run, the typed run (Run), and the dict shapes the API
answers with."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
import datetime as dt
import functools
import hashlib
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (
    AfterValidator, BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, StrictBool,
    StrictFloat, StrictInt, StrictStr, Tag, ValidationInfo, field_validator, model_validator)

from .timeutil import _iso


RUN_STATUSES = ("queued", "running", "succeeded", "failed", "timeout", "interrupted", "missed",
                "skipped", "cancelled")
FINAL_STATUSES = frozenset(RUN_STATUSES) - {"queued", "running"}
ENDED_STATUSES = ("succeeded", "failed", "timeout", "interrupted")   # what "recovered" looks at
RUN_TRIGGERS = ("schedule", "manual", "retry", "catchup", "ping", "heartbeat", "step", "after")
STEP_WHEN = ("all_succeeded", "all_done", "any_failed")
JOB_STATES = ("scheduled", "paused", "disabled", "finished", "manual")
SCRIPT_SUFFIXES = (".sh", ".bash", ".bat", ".cmd", ".ps1", ".py")



Number = Union[StrictInt, StrictFloat]
CronField = Union[StrictStr, StrictInt]
DateValue = Union[StrictStr, dt.datetime, dt.date]
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_DURATION = 366 * 86400   # a year: longer promises are no alerts anyone waits for


def duration_seconds(value: Union[int, float, str]) -> float:
    """A duration as given in jobs.yaml (seconds, or '30s', '5m', '2h', '1d') in seconds."""
    if isinstance(value, str):
        text = value.strip().lower()
        unit = _DURATION_UNITS.get(text[-1:]) if text else None
        number = text[:-1] if unit else text
        try:
            return float(number) * (unit or 1)
        except ValueError:
            raise ValueError(f"{value!r} is not a duration: give seconds, or a number with s, "
                             f"m, h or d ('30s', '5m', '2h', '1d')") from None
    return float(value)


def _check_duration(value: Union[int, float, str]) -> Union[int, float, str]:
    """The duration as given (a definition shows '5m' as written), once known to be one."""
    seconds = duration_seconds(value)
    if not 0 <= seconds <= MAX_DURATION:
        raise ValueError(f"{value!r} must be between 0 and a year")
    return value


Duration = Annotated[Union[StrictInt, StrictFloat, StrictStr], AfterValidator(_check_duration)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


CALENDAR_NAME = r"^[A-Za-z0-9_.-]{1,64}$"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class CalendarSpec(_Model):
    """A named business-day calendar of jobs.yaml's top-level ``calendars:``."""

    weekdays: Optional[list[Literal[WEEKDAYS]]] = None   # None: the parent's, else mon-fri
    holidays: Optional[StrictStr] = None   # a country code of the holidays library
    subdiv: Optional[StrictStr] = None
    exclude: list[Union[StrictStr, dt.date]] = []   # dates and ranges 'YYYY-MM-DD..YYYY-MM-DD'
    include: list[Union[StrictStr, dt.date]] = []
    extends: Optional[Annotated[StrictStr, Field(pattern=CALENDAR_NAME)]] = None


class CalendarUse(_Model):
    """A job's ``calendar:``: fires on days that are not business days are skipped or moved."""

    name: Annotated[StrictStr, Field(pattern=CALENDAR_NAME)]
    on_holiday: Literal["skip", "previous", "next"] = "skip"


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


class HeartbeatSpec(_Model):
    """No schedule here: something elsewhere runs the work and pings ``POST
    /api/jobs/{id}/ping``; silence past ``every + grace`` since the last ping is ``overdue``."""

    type: Literal["heartbeat"]
    every: Duration
    grace: Duration = 0

    @model_validator(mode="after")
    def _some_time(self) -> HeartbeatSpec:
        if duration_seconds(self.every) < 1:
            raise ValueError("every: must be at least a second (e.g. every: 1d)")
        return self


class BusinessDaySpec(_Model):
    """The N-th business day of each month of a named calendar (-1: the last), at a local time."""

    type: Literal["business_day"]
    calendar: Annotated[StrictStr, Field(pattern=CALENDAR_NAME)]
    day: Annotated[StrictInt, Field(ge=-23, le=23)]   # no month has more than 23 weekdays
    at: Annotated[StrictStr, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")] = "00:00"
    timezone: Optional[StrictStr] = None
    start_date: Optional[DateValue] = None
    end_date: Optional[DateValue] = None

    @field_validator("day")
    @classmethod
    def _not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("day counts from 1 (the first business day) or from -1 (the last)")
        return value


TriggerSpec = Annotated[Union[IntervalSpec, CronSpec, DateSpec, ManualSpec, HeartbeatSpec,
                          BusinessDaySpec],
                        Field(discriminator="type")]
_CRON_FIELDS = ("year", "month", "day", "week", "day_of_week", "hour", "minute", "second")


SLA_EVENTS = ("late", "long_running", "overdue")   # promises broken (sla.py decides them)
NOTIFY_EVENTS = ("failed", "timeout", "interrupted", "missed", "succeeded", "recovered",
                 "retrying", *SLA_EVENTS)
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


class SlaSpec(_Model):
    """What a job promises: each fire starts within ``start_within`` of its time (else
    ``late``), each run ends within ``max_duration`` (else ``long_running``; it runs on)."""

    start_within: Optional[Duration] = None
    max_duration: Optional[Duration] = None

    @model_validator(mode="after")
    def _something(self) -> SlaSpec:
        if self.start_within is None and self.max_duration is None:
            raise ValueError("give start_within, max_duration or both (e.g. start_within: 5m)")
        return self


JOB_ID = r"^[A-Za-z0-9_.-]{1,64}$"
AFTER_ON = tuple(s for s in RUN_STATUSES if s in FINAL_STATUSES)


class AfterSpec(_Model):
    """A job's ``after:``: one run of this job per end of a run of ``job`` whose final status
    is in ``on`` (an end its retries run again is not final). after.py checks the names."""

    job: Annotated[StrictStr, Field(pattern=JOB_ID)]
    on: Annotated[list[Literal[AFTER_ON]], Field(min_length=1)] = ["succeeded"]


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


PARAM_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"


class ParamSpec(_Model):
    """A declared run parameter (``params: {NAME: ...}``): a run may set it (an operator may,
    raw args/kwargs/env need an admin); commands get ``TS_PARAM_NAME``, python functions a
    keyword argument. Without a default it must be given; scheduled fires use defaults."""

    default: Optional[StrictStr] = None
    choices: Optional[Annotated[list[StrictStr], Field(min_length=1, max_length=200)]] = None
    pattern: Optional[StrictStr] = None
    description: StrictStr = ""

    @model_validator(mode="after")
    def _default_valid(self) -> ParamSpec:
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern: {self.pattern!r} is not a regular expression "
                                 f"({exc})") from None
        if self.default is not None and self.problem(self.default):
            raise ValueError(f"default: {self.problem(self.default)}")
        return self

    def problem(self, value: Any) -> Optional[str]:
        """What is wrong with a value given for this parameter (None: nothing)."""
        if not isinstance(value, str):
            return f"must be a string, got {type(value).__name__}"
        if self.choices is not None and value not in self.choices:
            return f"{value[:100]!r} is not one of {', '.join(map(repr, self.choices))}"
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            return f"{value[:100]!r} does not match the pattern {self.pattern!r}"
        return None

_STEP_ID = r"^[A-Za-z0-9_.-]{1,64}$"
_LABEL = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_.-]{1,32}$")]


class StepDefinition(_Model):
    """One step of a workflow (a job's ``steps:``): what a job runs, plus its place in the
    graph. Fields left out take the job's value (workflow.step_definition)."""

    id: Annotated[StrictStr, Field(pattern=_STEP_ID)]
    after: list[Annotated[StrictStr, Field(pattern=_STEP_ID)]] = []
    when: Literal[STEP_WHEN] = "all_succeeded"
    output: Optional[Annotated[StrictStr, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]] = \
        None
    func: Optional[CString] = None
    command: Union[CString, list[CString], None] = None
    shell: StrictBool = False
    args: Annotated[list[Any], AfterValidator(_shallow)] = []
    kwargs: Annotated[dict[StrictStr, Any], AfterValidator(_shallow)] = {}
    env: EnvMap = {}
    cwd: Optional[CString] = None
    timeout: Optional[Annotated[Number, Field(gt=0)]] = None
    retries: Optional[RetrySpec] = None
    run_on: Annotated[list[_LABEL], Field(max_length=8)] = []
    isolation: Literal["thread", "process"] = "thread"

    @model_validator(mode="after")
    def _one_target(self) -> StepDefinition:
        if (self.func is None) == (self.command is None):
            raise ValueError("a step needs exactly one of func (a python callable or a script) "
                             "or command")
        if self.command is not None and not self.command:
            raise ValueError("command: must not be empty")
        if self.shell and not isinstance(self.command, str):
            raise ValueError("shell: true needs command as a string")
        return self


class JobDefinition(_Model):
    """One entry of jobs.yaml, and the body of ``POST /api/jobs``."""

    id: Annotated[StrictStr, Field(pattern=JOB_ID)]
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
    sla: Optional[SlaSpec] = None
    calendar: Optional[CalendarUse] = None
    params: dict[Annotated[StrictStr, Field(pattern=PARAM_NAME)], ParamSpec] = Field(
        {}, description="declared run parameters: {NAME: {default, choices, pattern, "
                        "description}}")
    after: Annotated[Optional[AfterSpec], BeforeValidator(_yaml_on)] = Field(
        None, description="{job: ID, on: [succeeded, ...]}: run once per matching end of that "
                          "job's runs (besides the trigger, or instead of one)")
    isolation: Literal["thread", "process"] = Field(
        "thread", description="python jobs: thread (in the service) or process (a worker "
                              "process: cancel and timeout end it)")
    steps: Optional[Annotated[list[StepDefinition], Field(min_length=1, max_length=200)]] = \
        Field(None, description="a workflow: steps run as child runs in dependency order")

    @field_validator("isolation")
    @classmethod
    def _python_only(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("command") is not None or _is_script(info.data.get("func")):
            raise ValueError("is for python jobs only: a command job always runs as a process "
                             "of its own (cancel and timeout end it)")
        return value

    @model_validator(mode="after")
    def _one_target(self) -> JobDefinition:
        if isinstance(self.trigger, HeartbeatSpec):
            return _heartbeat_job(self)
        if self.steps is not None:
            return _workflow_job(self)
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
        if isinstance(self.trigger, HeartbeatSpec):
            return "heartbeat"
        if self.steps is not None:
            return "workflow"
        return "command" if self.command is not None or _is_script(self.func) else "python"

    def dump(self) -> dict:
        """The definition as given (defaults left out), JSON- and YAML-ready."""
        return self.model_dump(mode="json", exclude_unset=True)


def _heartbeat_job(defn: JobDefinition) -> JobDefinition:
    """A heartbeat job runs nowhere here: it has nothing to run, and no SLA but its trigger."""
    given = [name for name in ("func", "command") if getattr(defn, name) is not None]
    if given:
        raise ValueError(f"a heartbeat job has no {' or '.join(given)}: its work runs "
                         f"elsewhere and reports with POST /api/jobs/{defn.id}/ping; remove "
                         f"{given[0]}, or use another trigger type to run it here")
    if defn.after is not None:
        raise ValueError("after: a heartbeat job runs nowhere here, so nothing can start it; "
                         "remove after, or use another trigger type")
    if defn.sla is not None:
        raise ValueError("sla: a heartbeat job's promise is its trigger's every + grace (event "
                         "overdue); remove sla")
    return defn


RAW_RUN_PARAMS = ("args", "kwargs", "env")   # a run's own code inputs: admin only (issue 24);
                                             # declared ``params`` are the operator's


def _workflow_job(defn: JobDefinition) -> JobDefinition:
    """A workflow runs its steps: it has no command or func of its own."""
    given = [name for name in ("func", "command") if getattr(defn, name) is not None]
    if given:
        raise ValueError(f"a job with steps has no {' or '.join(given)} of its own: each step "
                         f"names what it runs; move {given[0]} into a step")
    return defn


class RunParams(_Model):
    """The optional body of ``POST /api/jobs/{id}/run``: parameters of this run only. args
    replace the job's args; kwargs and env are merged over the job's."""

    args: Optional[Annotated[list[Any], AfterValidator(_shallow)]] = Field(
        None, description="positional arguments (python) or extra argv (commands)")
    kwargs: Optional[Annotated[dict[StrictStr, Any], AfterValidator(_shallow)]] = Field(
        None, description="python jobs only")
    env: Optional[EnvMap] = Field(None, description="command jobs and python jobs with "
                                                    "isolation: process")
    params: Optional[dict[StrictStr, Any]] = Field(
        None, description="values of the job's declared params (strings), by name")


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


class _SharedEmptyList(list):
    """The one empty list of every definition's empty list fields (pydantic copies a default
    ``[]`` for each model: six lists and dicts, ~350 bytes a job); refuses changes, as the
    shared sets of fields do."""

    __slots__ = ()

    def __copy__(self) -> list:
        return []

    def __deepcopy__(self, memo) -> list:
        return []

    def _refuse(self, *args, **kwargs):
        raise TypeError("an empty list shared by many definitions cannot change")

    append = extend = insert = remove = pop = clear = sort = reverse = _refuse
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse


class _SharedEmptyDict(dict):
    """The one empty dict of every definition's empty dict fields (see _SharedEmptyList)."""

    __slots__ = ()

    def __copy__(self) -> dict:
        return {}

    def __deepcopy__(self, memo) -> dict:
        return {}

    def _refuse(self, *args, **kwargs):
        raise TypeError("an empty dict shared by many definitions cannot change")

    update = setdefault = pop = popitem = clear = __setitem__ = __delitem__ = _refuse
    __ior__ = _refuse


_EMPTY = {list: _SharedEmptyList(), dict: _SharedEmptyDict()}
_SHARED_TRIGGERS: dict = {}   # trigger spec JSON -> one spec object for the jobs that have it
MAX_SHARED_TRIGGERS = 4096    # distinct schedules; past that, start again (no unbounded growth)


def share_fields(defn: JobDefinition) -> JobDefinition:
    """``defn`` (and the models in it) with their sets of given fields shared, its empty lists
    and dicts the shared empty ones, and its trigger spec the one object of jobs with the same
    schedule (10,000 jobs on a few dozen schedules: ~7 MiB less). Definitions are never
    changed in place."""
    for model in (defn, defn.trigger, defn.retries, *defn.notify):
        if model is not None:
            object.__setattr__(model, "__pydantic_fields_set__",
                               _shared_fields(frozenset(model.__pydantic_fields_set__)))
    for name, value in defn.__dict__.items():
        if not value and type(value) in _EMPTY:
            defn.__dict__[name] = _EMPTY[type(value)]
    spec = defn.trigger   # the fields given too: dump() and the definition's hash tell them
    key = f"{type(spec).__name__}:{sorted(spec.__pydantic_fields_set__)}:{spec.model_dump_json()}"
    if len(_SHARED_TRIGGERS) >= MAX_SHARED_TRIGGERS:
        _SHARED_TRIGGERS.clear()
    defn.__dict__["trigger"] = _SHARED_TRIGGERS.setdefault(key, spec)
    return defn


def definition_hash(defn: JobDefinition) -> str:
    return hashlib.sha256(json.dumps(defn.dump(), sort_keys=True).encode()).hexdigest()


@dataclasses.dataclass(slots=True)
class Run:
    """A run as it travels inside the core (claimed, running, ended on this node): the columns
    of ts_runs, typed. Made from a store row with ``Run.from_row`` (rows come from the store as
    dicts or SQLAlchemy rows; the store is not changed for it), answered with ``run_to_dict``.
    Its fields change in place as the run goes on (status, started_at, the end)."""

    id: str
    job_id: str
    trigger: str = "manual"
    attempt: int = 1
    scheduled_at: Optional[dt.datetime] = None
    started_at: Optional[dt.datetime] = None
    finished_at: Optional[dt.datetime] = None
    status: str = "queued"
    exit_code: Optional[int] = None
    error: Optional[str] = None
    stdout: Optional[str] = None
    stderr: Optional[str] = None
    truncated: bool = False
    node: Optional[str] = None
    due_at: Optional[dt.datetime] = None
    heartbeat_at: Optional[dt.datetime] = None
    epoch: Optional[int] = None
    run_on: str = ""
    params: Optional[str] = None
    rerun_of: Optional[str] = None
    cancel_requested: bool = False
    pid: Optional[int] = None
    result: Optional[str] = None   # a python job's return value, as JSON text
    started_by: Optional[str] = None   # who asked for it (an actor's name); None: the schedule
    parent_run: Optional[str] = None   # a step: its workflow run
    step_id: Optional[str] = None
    step_output: Optional[str] = None
    upstream_run: Optional[str] = None   # trigger after: the run whose end queued this one

    @classmethod
    def from_row(cls, row: Any) -> Run:
        """From a store row: a dict (claims, fires) or a SQLAlchemy row; unknown keys dropped."""
        values = row if isinstance(row, dict) else row._mapping
        return cls(**{k: values[k] for k in _RUN_FIELDS if k in values and
                      (values[k] is not None or k not in _RUN_NOT_NULL)})

    def to_row(self) -> dict:
        """As a dict of its columns (what the notifier and the store's callers read)."""
        return {name: getattr(self, name) for name in _RUN_FIELDS}

    def update(self, **fields: Any) -> None:
        for name, value in fields.items():
            setattr(self, name, value)


_RUN_FIELDS = tuple(f.name for f in dataclasses.fields(Run))
_RUN_NOT_NULL = ("attempt", "truncated", "run_on", "cancel_requested")


def run_to_dict(row: Any, output: bool = False) -> dict:
    """A run row (or live run dict, or Run) in the API's Run shape."""
    row = row.to_row() if isinstance(row, Run) else row
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
        "rerun_of": get("rerun_of"), "started_by": get("started_by"),
        "upstream_run": get("upstream_run"),
    }
    if get("status") == "queued":
        out["due_at"] = _iso(get("due_at"))
    if get("step_id"):
        out.update(parent_run=get("parent_run"), step_id=get("step_id"),
                   output=get("step_output"))
    if output:
        out["stdout"], out["stderr"] = get("stdout") or "", get("stderr") or ""
        out["params"] = json.loads(get("params") or "null")
        out["result"] = _result_value(get("result"))
    return out


def _result_value(text: Optional[str]) -> Any:
    """A stored result decoded; as the text itself should masking have made it JSON no more
    (a secret that was a whole number)."""
    try:
        return None if text is None else json.loads(text)
    except ValueError:
        return text


class Page(list):
    """A list of results with the ``total`` count of all matches (before limit/offset);
    ``capped``: there are more than ``total`` (counting stopped, see ``TOTAL_CAP``);
    ``window``: a search read only this many of the newest runs (a short phrase)."""

    total: int = 0
    capped: bool = False
    window: Optional[int] = None


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
ROLES = ("viewer", "operator", "admin")


@dataclass(frozen=True)
class Actor:
    """Who asks: a user (by password, session, API token or SSO header), the legacy token,
    jobs.yaml, or the scheduler itself. Audit rows and ``started_by`` name it."""
    name: str                         # user name; "token" (legacy); "jobs.yaml"; "system"; "local"
    kind: str                         # user | legacy | sso | yaml | system | local | cli
    role: str                         # viewer | operator | admin
    token_name: Optional[str] = None  # the API token used, if any
    address: Optional[str] = None     # the client's address


SYSTEM = Actor("system", "system", "admin")
ANONYMOUS = Actor("anonymous", "anonymous", "viewer")   # no credentials: health, pings, login
