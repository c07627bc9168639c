"""Business-day calendars: jobs.yaml's ``calendars:`` checked and resolved into plain rules
(``extends`` flattened), the days they make business days (national holidays from the
``holidays`` library, imported only when a calendar names a country, and cached per country,
subdivision and year), and the triggers built on them: ``BusinessDayTrigger`` (the N-th business
day of each month) and ``CalendarTrigger`` (any trigger whose fires on other days are skipped or
moved to the previous or next business day). It stores nothing: the rules travel as JSON."""

from __future__ import annotations

import calendar as stdcalendar
import datetime as dt
import difflib
import functools
import json
import re
from typing import Any, Optional

from apscheduler.triggers.base import BaseTrigger
from apscheduler.util import astimezone, convert_to_datetime
from pydantic import ValidationError

from .explain import _pydantic_details
from .models import WEEKDAYS, BusinessDaySpec, CalendarSpec, JobDefinition
from .text import _short
from .triggers import _after, _first_occurrence, _utc, _zone, build_trigger, fire_times

MAX_SHIFT_DAYS = 366     # a fire is moved at most a year; a calendar without business days
#                          for longer drops it (said in the next fire times, never a loop)
MAX_MONTHS = 120         # a business_day trigger looks ten years ahead, then gives up
MAX_STEPS = 200_000      # base fire times looked at for one moved fire time (a 1-minute cron
#                          over a week-long closing: ~10,000)
_DAY = dt.timedelta(days=1)
_SLACK = dt.timedelta(hours=2)   # more than any DST change (Lord Howe's is 30 minutes, most 1 h)
_RANGE = re.compile(r"^\s*(\d{4}-\d{2}-\d{2})\s*\.\.\s*(\d{4}-\d{2}-\d{2})\s*$")
_DATE = re.compile(r"^\s*(\d{4}-\d{2}-\d{2})()\s*$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


# jobs.yaml's calendars: checked, then resolved into rules (plain JSON)

def resolve_calendars(raw: Any) -> tuple[dict[str, dict], list[dict]]:
    """{name: rules} of a ``calendars:`` mapping, and the problems, each with the ``path``
    under ``calendars`` it is about (the caller turns paths into lines)."""
    if raw is None:
        return {}, []
    if not isinstance(raw, dict):
        return {}, [_problem([], "", "must be a mapping of calendar names to calendars")]
    specs, problems = {}, []
    for name, body in raw.items():
        if not isinstance(name, str) or not _NAME.match(name):
            problems.append(_problem([name], "", f"{_short(name)} is not a calendar name "
                                                 f"(letters, digits, '_', '.', '-')"))
            continue
        try:
            specs[name] = CalendarSpec.model_validate(body if body is not None else {})
        except ValidationError as exc:
            problems += [_problem([name, *filter(None, d["field"].split("."))], d["field"],
                                  d["message"], name) for d in _pydantic_details(exc.errors())]
            continue
        problems += _spec_problems(name, specs[name])
    problems += _extends_problems(specs)
    if problems:
        return {}, problems
    return {name: _flatten(name, specs) for name in specs}, []


def _problem(path: list, field: str, message: str, name: Any = None) -> dict:
    return {"path": ["calendars", *path], "calendar": name, "field": field, "message": message}


def _spec_problems(name: str, spec: CalendarSpec) -> list[dict]:
    problems = []
    for key in ("exclude", "include"):
        for index, item in enumerate(getattr(spec, key)):
            if isinstance(item, str) and _date_range(item) is None:
                problems.append(_problem([name, key, index], f"{key}.{index}",
                                         f"{_short(item)} is not a date 'YYYY-MM-DD' or a range "
                                         f"'YYYY-MM-DD..YYYY-MM-DD' (first day not after the "
                                         f"last)", name))
    if spec.subdiv is not None and spec.holidays is None:
        problems.append(_problem([name, "subdiv"], "subdiv", "needs holidays: COUNTRY", name))
    elif spec.holidays is not None:
        message = country_problem(spec.holidays, spec.subdiv)
        if message:
            field = "subdiv" if message.startswith("subdiv") else "holidays"
            problems.append(_problem([name, field], field, message.removeprefix("subdiv: "),
                                     name))
    return problems


def _extends_problems(specs: dict[str, CalendarSpec]) -> list[dict]:
    problems = []
    for name, spec in specs.items():
        seen, current = [name], spec.extends
        while current is not None:
            if current not in specs:
                problems.append(_problem([seen[-1], "extends"], "extends", f"calendar "
                                         f"{current!r} is not defined (defined: "
                                         f"{', '.join(sorted(specs)) or 'none'})", seen[-1]))
                break
            if current in seen:
                if current == name == min(seen):   # each cycle once, from its first name
                    problems.append(_problem([name, "extends"], "extends", "cycle: " + " -> ".join(
                        [*seen[seen.index(current):], current]), name))
                break
            seen.append(current)
            current = specs[current].extends
    return problems


def _flatten(name: str, specs: dict[str, CalendarSpec]) -> dict:
    """A calendar's own fields over its parents': weekdays and holidays the nearest given,
    exclude and include all of them together."""
    chain, current = [], name
    while current is not None:
        chain.append(specs[current])
        current = specs[current].extends
    weekdays = next((s.weekdays for s in chain if s.weekdays is not None), list(WEEKDAYS[:5]))
    country = next((s for s in chain if s.holidays is not None), None)
    ranges = {key: sorted({_date_range(item) for s in chain for item in getattr(s, key)})
              for key in ("exclude", "include")}
    return {"name": name, "weekdays": sorted(WEEKDAYS.index(d) for d in set(weekdays)),
            "holidays": country.holidays if country else None,
            "subdiv": country.subdiv if country else None,
            **{key: [[a.isoformat(), b.isoformat()] for a, b in value]
               for key, value in ranges.items()}}


def _date_range(item: Any) -> Optional[tuple[dt.date, dt.date]]:
    if isinstance(item, dt.datetime):
        item = item.date()
    if isinstance(item, dt.date):
        return item, item
    match = _RANGE.match(item) or _DATE.match(item) if isinstance(item, str) else None
    try:
        first, last = dt.date.fromisoformat(match[1]), dt.date.fromisoformat(match[2] or match[1])
    except (TypeError, ValueError):
        return None
    return (first, last) if first <= last else None


def country_problem(country: str, subdiv: Optional[str]) -> Optional[str]:
    """Why ``holidays: country`` (with ``subdiv``) is not one the holidays library knows."""
    supported = _supported()
    if country not in supported:
        codes = [code for code in supported if len(code) == 2]
        close = [country.upper()] if country.upper() in supported else \
            difflib.get_close_matches(country.upper(), codes, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        return (f"{_short(country)} is not a country code of the holidays library "
                f"(ISO 3166-1 alpha-2 such as JP, US, DE){hint}")
    if subdiv is not None and subdiv not in supported[country]:
        known = ", ".join(supported[country][:12]) or "none"
        return f"subdiv: {_short(subdiv)} is not a subdivision of {country} (known: {known}...)"
    return None


@functools.lru_cache(maxsize=1)
def _supported() -> dict:
    import holidays   # ~0.1 s and ~7 MiB: only for calendars that name a country
    return holidays.list_supported_countries()


def uses(defn: JobDefinition) -> list[str]:
    """The calendar names a job uses: its business_day trigger's and its ``calendar:``."""
    names = [defn.trigger.calendar] if isinstance(defn.trigger, BusinessDaySpec) else []
    return names + ([defn.calendar.name] if defn.calendar is not None else [])


def job_rules(defn: JobDefinition, calendars: dict[str, dict]) -> Optional[dict]:
    """The rules of the calendars a job uses ({name: rules or None when not defined}), or None
    when it uses none: what its trigger is built from, and part of its schedule's hash."""
    return rules_for(uses(defn), calendars)


def rules_for(names, calendars: dict[str, dict]) -> Optional[dict]:
    """job_rules from the calendar names a job uses (a record's facts keep them)."""
    return {name: calendars.get(name) for name in names} if names else None


def job_trigger(defn: JobDefinition, default_tz, rules: Optional[dict],
                now: Optional[dt.datetime] = None):
    """The APScheduler trigger of a job, its calendars applied (None: a manual job)."""
    spec = defn.trigger
    if isinstance(spec, BusinessDaySpec):
        tz = _zone(spec.timezone) if spec.timezone else default_tz
        base = BusinessDayTrigger(_rules(rules, spec.calendar), spec.day, spec.at, tz,
                                  spec.start_date, spec.end_date)
    else:
        base = build_trigger(spec, default_tz, now)
    if defn.calendar is None or base is None:
        return base
    return CalendarTrigger(base, _rules(rules, defn.calendar.name), defn.calendar.on_holiday,
                           _zone_of(base, default_tz))


def _rules(rules: Optional[dict], name: str) -> dict:
    found = (rules or {}).get(name)
    if found is None:
        raise ValueError(f"calendar: {name!r} is not defined in the calendars of jobs.yaml")
    return found


def _zone_of(trigger, default_tz):
    zone = getattr(trigger, "timezone", None)
    run_date = getattr(trigger, "run_date", None)
    return zone or (run_date.tzinfo if run_date is not None else default_tz)


# The days of a calendar

class Calendar:
    """A calendar's rules made fast: whether a day is a business day, and why not. Made once
    per rules (``calendar_of``); holidays come from a cache per country and year."""

    def __init__(self, rules: dict):
        self.rules, self.name = rules, rules["name"]
        self.weekdays = frozenset(rules["weekdays"])
        self.exclude = [tuple(map(dt.date.fromisoformat, r)) for r in rules["exclude"]]
        self.include = [tuple(map(dt.date.fromisoformat, r)) for r in rules["include"]]
        self._months: dict[tuple[int, int], list[dt.date]] = {}

    def holiday(self, day: dt.date, language: Optional[str] = None) -> Optional[str]:
        if not self.rules["holidays"]:
            return None
        return holiday_names(self.rules["holidays"], self.rules["subdiv"], day.year,
                             language).get(day)

    def kind(self, day: dt.date) -> str:
        """business, included (a forced business day), excluded, holiday or weekend."""
        if any(a <= day <= b for a, b in self.include):
            return "included"
        if any(a <= day <= b for a, b in self.exclude):
            return "excluded"
        if self.holiday(day) is not None:
            return "holiday"
        return "business" if day.weekday() in self.weekdays else "weekend"

    def is_business_day(self, day: dt.date) -> bool:
        return self.kind(day) in ("business", "included")

    def why_not(self, day: dt.date) -> Optional[str]:
        """None for a business day, else why it is not one."""
        kind = self.kind(day)
        if kind == "excluded":
            return "excluded by the calendar"
        if kind == "holiday":
            return f"a holiday ({self.holiday(day)})"
        return f"a {day.strftime('%A')}" if kind == "weekend" else None

    def business_days(self, year: int, month: int) -> list[dt.date]:
        key = (year, month)
        if key not in self._months:   # a race computes the same list twice: harmless
            self._months[key] = [dt.date(year, month, d) for d in range(
                1, stdcalendar.monthrange(year, month)[1] + 1)
                if self.is_business_day(dt.date(year, month, d))]
        return self._months[key]

    def shift(self, day: dt.date, step: int) -> Optional[dt.date]:
        """The nearest business day after (step 1) or before (step -1) ``day``."""
        for _ in range(MAX_SHIFT_DAYS):
            try:
                day += dt.timedelta(days=step)
            except OverflowError:
                return None
            if self.is_business_day(day):
                return day
        return None


@functools.lru_cache(maxsize=64)
def _calendar(key: str) -> Calendar:
    return Calendar(json.loads(key))


def calendar_of(rules: dict) -> Calendar:
    """The one Calendar of these rules (cached: a fire time walks many days)."""
    return _calendar(json.dumps(rules, sort_keys=True))


@functools.lru_cache(maxsize=512)
def holiday_names(country: str, subdiv: Optional[str], year: int,
                  language: Optional[str] = None) -> dict[dt.date, str]:
    """{day: name} of a country's holidays in a year (``language``: e.g. 'ja', 'en_US'; the
    country's own when None or not offered). Building a year takes milliseconds: cached."""
    import holidays   # see _supported
    plain = holidays.country_holidays(country)
    if language is not None:
        language = next((lang for lang in plain.supported_languages if lang == language or
                         lang.split("_")[0] == language.split("_")[0]), None)
    # the country's own language unless asked: the library's default follows the locale
    language = language or getattr(plain, "default_language", None)
    found = holidays.country_holidays(country, subdiv=subdiv, years=year, language=language)
    return {day: name for day, name in found.items() if day.year == year}


def month_view(rules: dict, year: int, month: int, language: Optional[str] = None) -> list:
    """The weeks of a month (Monday first) for the GUI: each day None (outside the month) or
    {date, kind, holiday}."""
    cal = calendar_of(rules)
    weeks = stdcalendar.Calendar(firstweekday=0).monthdatescalendar(year, month)
    return [[{"date": d, "kind": cal.kind(d), "holiday": cal.holiday(d, language)}
             if d.month == month else None for d in week] for week in weeks]


def days_between(rules: dict, first: dt.date, last: dt.date, language: Optional[str] = None
                 ) -> dict:
    """The API's answer: business days and the days that are not, with why."""
    cal, business, closed, day = calendar_of(rules), [], [], first
    while day <= last:
        kind = cal.kind(day)
        if kind in ("business", "included"):
            business.append(day.isoformat())
        elif kind != "weekend":
            closed.append({"date": day.isoformat(), "kind": kind,
                           "name": cal.holiday(day, language)})
        day += dt.timedelta(days=1)
    return {"business_days": business, "closed": closed}


def _at(day: dt.date, clock: dt.time, tz) -> dt.datetime:
    """A local time on a day: one that clocks skip is the first instant after the change, a
    repeated one its first occurrence (fold 0), as cron jobs fire."""
    return _first_occurrence(dt.datetime.combine(day, clock, tzinfo=tz))


# The triggers

class _ExactTrigger(BaseTrigger):
    """What the calendar triggers share: a versioned state, no jitter (a business-day or moved
    time is exact), a repr from str."""

    def _readable(self, state: dict) -> None:
        if state.get("version", 1) > 1:
            raise ValueError(f"got version {state['version']} of a {type(self).__name__}, "
                             f"but this task-scheduler reads version 1 only")
        self.jitter = None

    def __repr__(self):
        return f"<{type(self).__name__} ({self})>"


class BusinessDayTrigger(_ExactTrigger):
    """Fires on the N-th business day of each month (-1: the last) at a local time."""

    def __init__(self, rules: dict, day: int, at: str, timezone, start_date=None,
                 end_date=None):
        tz = astimezone(timezone)
        self.__setstate__({"version": 1, "rules": rules, "day": day, "at": at, "timezone": tz,
                           "start_date": convert_to_datetime(start_date, tz, "start_date"),
                           "end_date": convert_to_datetime(end_date, tz, "end_date")})

    def get_next_fire_time(self, previous_fire_time, now):
        moment = _after(previous_fire_time, now, self.start_date)
        local = moment.astimezone(self.timezone)
        year, month, clock = local.year, local.month, dt.time.fromisoformat(self.at)
        cal = calendar_of(self.rules)
        for _ in range(MAX_MONTHS):
            days = cal.business_days(year, month)
            if len(days) >= abs(self.day):
                fire = _at(days[self.day - 1 if self.day > 0 else self.day], clock, self.timezone)
                if _utc(fire) > moment:
                    end = self.end_date
                    return None if end is not None and _utc(fire) > _utc(end) else fire
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
            if year > 9998:
                return None
        return None

    def __getstate__(self):
        return {"version": 1, "rules": self.rules, "day": self.day, "at": self.at,
                "timezone": self.timezone, "start_date": self.start_date,
                "end_date": self.end_date}

    def __setstate__(self, state):
        self._readable(state)
        self.rules, self.day, self.at = state["rules"], state["day"], state["at"]
        self.timezone = state["timezone"]
        self.start_date, self.end_date = state["start_date"], state["end_date"]

    def __str__(self):
        return f"business_day[{self.rules['name']} day {self.day} at {self.at}]"


class CalendarTrigger(_ExactTrigger):
    """Another trigger under a calendar. ``skip``: the fire times stay as they are, and the
    scheduler records a fire on a day that is not a business day as ``skipped`` with
    ``skip_reason`` (so the skip is seen in the history). ``previous``/``next``: such a fire
    time is moved to that business day at the same local time, and the times are given in
    order and each once (two fires moved onto one time fire once), so APScheduler fires at the
    moved time itself: a moved fire is one fire time like any other, kept in the schedule
    table and recorded once under the unique key of its run, across restarts too."""

    def __init__(self, base, rules: dict, on_holiday: str, timezone):
        self.__setstate__({"version": 1, "base": base, "rules": rules, "on_holiday": on_holiday,
                           "timezone": astimezone(timezone)})

    def get_next_fire_time(self, previous_fire_time, now):
        if self.on_holiday == "skip":
            return self.base.get_next_fire_time(previous_fire_time, now)
        moment = _after(previous_fire_time, now, None)
        cal = calendar_of(self.rules)
        if self.on_holiday == "next":
            # a base time before ``moment`` on a closed day may move past it: start after the
            # last business day before (no look back when there is no closed day in between)
            today = moment.astimezone(self.timezone).date()
            before = cal.shift(today, -1)
            start = moment if before is None or (before + _DAY == today and
                                                 cal.is_business_day(today)) \
                else _at(before + _DAY, dt.time(0), self.timezone)
            return self._next(cal, min(start, moment, key=_utc), moment)
        return self._previous(cal, moment)

    def _next(self, cal: Calendar, start: dt.datetime, moment: dt.datetime):
        """The earliest moved time after ``moment`` of the base times from ``start`` on: a
        base time is never moved earlier, so the walk ends at the first one past the best."""
        best = None
        base = self.base.get_next_fire_time(None, start)
        for _ in range(MAX_STEPS):
            if base is None or (best is not None and _utc(base) > _utc(best)):
                break
            moved = self._moved(cal, base, 1)
            if moved is not None and _utc(moved) > moment and \
                    (best is None or _utc(moved) < _utc(best)):
                best = moved
            base = self.base.get_next_fire_time(base, base)
        return best

    def _previous(self, cal: Calendar, moment: dt.datetime):
        """The earliest moved time after ``moment``, day by day: each day's fires move to its
        business day (itself, or the one before), which never comes earlier for a later day;
        of a day only its first fire that moves past ``moment`` can be the earliest. So one
        look per day with fires (a fire a minute over a closed week is five looks, not 7,200),
        ending at a day that moves past the best found."""
        tz, local, best = self.timezone, moment.astimezone(self.timezone), None
        today = day = local.date()
        for _ in range(2 * MAX_SHIFT_DAYS):
            target = day if cal.is_business_day(day) else cal.shift(day, -1)
            if best is not None and target is not None and \
                    target > best.astimezone(tz).date():
                break
            if target is not None and target >= today:
                moved = self._first_moved(day, target, local.time() if target == today
                                          else dt.time(0), moment)
                if moved is not None and (best is None or _utc(moved) < _utc(best)):
                    best = moved
            following = self.base.get_next_fire_time(None, _at(day + _DAY, dt.time(0), tz))
            if following is None:
                break
            day = max(day + _DAY, following.astimezone(tz).date())
        return best

    def _first_moved(self, day: dt.date, target: dt.date, after: dt.time, moment):
        """The first fire of ``day`` from the local time ``after`` on, moved to ``target``,
        that comes after ``moment`` (None: none that day)."""
        # on a day clocks change, from two hours before: a search that starts right at the
        # change may step over a fire it moved (02:30 that fires at 03:00); the loop passes
        # the early ones
        slack = _SLACK if _offset(day, self.timezone) != _offset(day + _DAY, self.timezone) \
            else dt.timedelta(0)
        earlier = max(dt.datetime.combine(day, after) - slack,
                      dt.datetime.combine(day, dt.time(0)))
        base = self.base.get_next_fire_time(None, _at(day, earlier.time(), self.timezone))
        for _ in range(MAX_STEPS):
            if base is None or base.astimezone(self.timezone).date() != day:
                return None
            clock = base.astimezone(self.timezone).time().replace(fold=0)
            moved = base if target == day else _at(target, clock, self.timezone)
            if _utc(moved) > moment:
                return moved
            base = self.base.get_next_fire_time(base, base)
        return None

    def _moved(self, cal: Calendar, base: dt.datetime, step: int) -> Optional[dt.datetime]:
        local = base.astimezone(self.timezone)
        if cal.is_business_day(local.date()):
            return base
        day = cal.shift(local.date(), step)
        return None if day is None else _at(day, local.time().replace(fold=0), self.timezone)

    def skip_reason(self, moment: dt.datetime) -> Optional[str]:
        """Why a fire at ``moment`` is skipped (None: it runs)."""
        if self.on_holiday != "skip":
            return None
        day = moment.astimezone(self.timezone).date()
        why = calendar_of(self.rules).why_not(day)
        return None if why is None else \
            f"{day.isoformat()} is not a business day of calendar {self.rules['name']}: {why}"

    def __getstate__(self):
        return {"version": 1, "base": self.base, "rules": self.rules,
                "on_holiday": self.on_holiday, "timezone": self.timezone}

    def __setstate__(self, state):
        self._readable(state)
        self.base, self.rules = state["base"], state["rules"]
        self.on_holiday, self.timezone = state["on_holiday"], state["timezone"]

    def __str__(self):
        return f"calendar[{self.rules['name']}, {self.on_holiday}: {self.base}]"


def _offset(day: dt.date, tz) -> Optional[dt.timedelta]:
    return dt.datetime.combine(day, dt.time(0), tzinfo=tz).utcoffset()


def shown_fire_times(trigger, first: Optional[dt.datetime], count: int) -> list:
    """The next ``count`` fire times from ``first`` as they will run: under a ``skip``
    calendar, the skipped ones left out."""
    if first is None:
        return []
    if not isinstance(trigger, CalendarTrigger) or trigger.on_holiday != "skip":
        return fire_times(trigger, first, count)
    times, current = [], first
    for _ in range(MAX_STEPS // 100):
        if current is None or len(times) >= count:
            break
        if trigger.skip_reason(current) is None:
            times.append(current)
        try:
            following = trigger.get_next_fire_time(current, current)
        except (OverflowError, ValueError):
            break
        current = following if following is None or following.timestamp() > \
            current.timestamp() else None
    return times


# APScheduler pickles triggers by module and name: under the package's name, as the others
BusinessDayTrigger.__module__ = CalendarTrigger.__module__ = "task_scheduler"
