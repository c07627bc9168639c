"""Triggers: job specs to APScheduler trigger objects. A crontab line means what Debian's cron
makes of it, DST included (CrontabTrigger over cronsim); fields only APScheduler can express
keep its CronTrigger with the same DST rules (DstSafeCronTrigger)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import re
import zoneinfo
from typing import Optional

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.cron.fields import DEFAULT_VALUES
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from apscheduler.util import astimezone, convert_to_datetime
from cronsim import CronSim, CronSimError

from .models import (
    BusinessDaySpec, DateSpec, HeartbeatSpec, IntervalSpec, ManualSpec, _CRON_FIELDS,
    _interval_seconds)
from .timeutil import _local_zone


_CRON_RANGES = {"year": "1970-9999", "month": "1-12 or jan-dec",
                "day": "1-31, last, '1st mon'-'5th sun', 'last fri'", "week": "1-53",
                "day_of_week": "0-6 with 0 = Monday, or mon-sun", "hour": "0-23",
                "minute": "0-59", "second": "0-59"}


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
    if isinstance(spec, (ManualSpec, HeartbeatSpec)):
        return None
    if isinstance(spec, BusinessDaySpec):
        raise ValueError("calendar: a business_day trigger is built with its calendar "
                         "(calendars.job_trigger)")
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
    if isinstance(spec, HeartbeatSpec):
        grace = f" (grace {spec.grace})" if spec.grace else ""
        return f"heartbeat: a ping every {spec.every}{grace}"
    zone = f" ({spec.timezone})" if spec.timezone else ""
    if isinstance(spec, IntervalSpec):
        return f"every {_duration_text(_interval_seconds(spec))}{zone}"
    if isinstance(spec, DateSpec):
        return f"once at {spec.run_date}{zone}"
    if isinstance(spec, BusinessDaySpec):
        nth = f"business day {spec.day}" if spec.day > 0 else \
            "last business day" if spec.day == -1 else f"business day {spec.day} (from the end)"
        return f"{nth} of the month at {spec.at}, calendar {spec.calendar}{zone}"
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


# APScheduler pickles triggers into its table by module and name. Stored under the package's own
# name (task_scheduler/__init__.py exports them), they load whichever module defines them now.
CrontabTrigger.__module__ = DstSafeCronTrigger.__module__ = "task_scheduler"
