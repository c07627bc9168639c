"""Job management: jobs read as views (with their next fire and last run) and changed (add, replace,
delete, pause, resume, reconcile) through the book's one reconcile path, the schedule told after.
It must not parse jobs.yaml (reload.py) nor touch runs (runner.py)."""

from __future__ import annotations

import datetime as dt
import calendar as stdcalendar
import itertools
import threading
import time
from typing import TYPE_CHECKING, Optional
from collections.abc import Callable

from pydantic import ValidationError

from .checks import parse_job, trigger_problems
from .errors import InvalidJob, InvalidQuery, JobConflict, JobNotFound
from .explain import _details_text, _pydantic_detail
from .calendars import days_between, job_rules, job_trigger, month_view, uses
from .models import WEEKDAYS, BusinessDaySpec, DateSpec, JobDefinition, Page, run_to_dict
from .notify import restore_secrets
from .timeutil import _iso
from .triggers import build_trigger, fire_times

if TYPE_CHECKING:
    from .audit import AuditLog
    from .book import JobBook, JobRecord
    from .config import Config
    from .runner import Runner
    from .store import Store


class JobCatalog:
    """The jobs as the API and the GUI see them. Every write goes through ``book.reconcile``
    under the book's lock; then, when this node leads, ``ask`` has the schedule follow (waiting
    a moment for it, never inside a transaction); otherwise the leader hears it by NOTIFY."""

    def __init__(self, config: Config, book: JobBook, store: Store, runner: Runner, timezone,
                 *, leading: Callable[[], bool], ask: Callable, now: Callable[[], dt.datetime],
                 audit: AuditLog):
        self.config, self.book, self.store, self.runner = config, book, store, runner
        self.timezone, self.audit = timezone, audit
        self._leading, self._ask, self._now = leading, ask, now
        self._states = KeptStates(store, book)
        self._answer: Optional[tuple] = None   # (key, text) of the last list answered

    # reads

    def page(self, q=None, state=None, source=None, kind=None, tag=None, limit=None,
             offset: int = 0) -> Page:
        """Jobs matching every given filter, by id; ``.total`` counts all matches."""
        views, total = self._page(q, state, source, kind, tag, limit, offset)
        page = Page(dict(view[0]) for view in views)
        page.total = total
        return page

    def page_json(self, q=None, state=None, source=None, kind=None, tag=None, limit=None,
                  offset: int = 0, full: bool = False) -> str:
        """``{"jobs": [Job], "total": N}`` as the API answers it, each Job without its
        ``definition`` unless ``full`` (GET /api/jobs/{id} has it). The text is kept while
        nothing it shows can have changed (``_mark``, the book, the runs ended here): a list
        of 1,000 jobs polled by many clients is built once, not once per request."""
        recent = self.runner.recent
        key = (q, state, source, kind, tag, limit, offset, full, self._states.mark(),
               self.book.changes, len(recent) and next(reversed(recent), None))
        kept = self._answer
        if kept is not None and kept[0] == key:
            return kept[1]
        views, total = self._page(q, state, source, kind, tag, limit, offset)
        texts = ", ".join(view[1 if full else 2] for view in views)
        text = f'{{"jobs": [{texts}], "total": {total}}}'
        self._answer = (key, text)
        return text

    def job(self, job_id: str, upcoming: int = 0) -> dict:
        """A job's dict; with ``upcoming``, ``next_fire_times``: that many next fire times,
        calendar applied (the job page shows 10)."""
        rec = self.book.require(job_id)
        job = dict(self._views([rec])[0][0])
        if not upcoming:
            return job
        first = job["next_run_times"][0] if job["next_run_times"] else None
        job["next_fire_times"] = [_iso(t) for t in self.book.fire_times_of(
            rec, first and dt.datetime.fromisoformat(first), upcoming)]
        return job

    def job_json(self, job_id: str) -> str:
        return self._views([self.book.require(job_id)])[0][1]

    def preview_trigger(self, trigger: dict, count: int = 5) -> list:
        """The next fire times of a trigger spec (for forms); raises InvalidJob."""
        try:
            defn = JobDefinition.model_validate({"id": "preview", "command": "true",
                                                 "trigger": trigger})
            spec = defn.trigger
        except ValidationError as exc:
            details = [_pydantic_detail(e) for e in exc.errors()]
            raise InvalidJob(_details_text(details, None), details) from None
        details = [{"field": f"trigger.{f}" if f else "trigger", "message": m, "line": None}
                   for f, m in trigger_problems(spec)]
        if details:
            raise InvalidJob(_details_text(details, None), details)
        try:
            trig = job_trigger(defn, self.timezone, job_rules(defn, self.book.calendars))
        except ValueError as exc:   # a calendar not defined
            details = [{"field": "trigger.calendar", "message": str(exc), "line": None}]
            raise InvalidJob(_details_text(details, None), details) from None
        first = trig.get_next_fire_time(None, dt.datetime.now(self.timezone)) if trig else None
        return [_iso(t) for t in fire_times(trig, first, count)] if first else []

    def calendar(self, name: str, first: Optional[str] = None, last: Optional[str] = None,
                 language: Optional[str] = None, month: Optional[str] = None) -> dict:
        """A calendar's business days from ``first`` to ``last`` (ISO dates; this month by
        default, at most MAX_CALENDAR_DAYS), and its closed days with their names; with
        ``month`` (not None), that month laid out for the GUI instead (``calendar_month``)."""
        if month is not None:
            return self.calendar_month(name, month, language)
        rules = self._calendar_rules(name)
        today = self._now().astimezone(self.timezone).date()
        start = _day("from", first) if first else today.replace(day=1)
        end = _day("to", last) if last else _month_end(start)
        if end < start or (end - start).days >= MAX_CALENDAR_DAYS:
            raise InvalidQuery(f"from..to must run forward and span at most {MAX_CALENDAR_DAYS} "
                               f"days, got {start}..{end}",
                               [{"field": "to", "message": "out of range"}])
        return {**self._calendar_head(name, rules), "from": start.isoformat(),
                "to": end.isoformat(), **days_between(rules, start, end, language)}

    def calendar_month(self, name: str, month: Optional[str] = None,
                       language: Optional[str] = None) -> dict:
        """A month of a calendar for the GUI (``month`` 'YYYY-MM'; this month if not one)."""
        rules = self._calendar_rules(name)
        today = self._now().astimezone(self.timezone).date()
        try:
            first = dt.date.fromisoformat(f"{month}-01") if month else today.replace(day=1)
        except ValueError:
            first = today.replace(day=1)
        last_month = first - dt.timedelta(days=1)
        return {**self._calendar_head(name, rules), "month": first.strftime("%Y-%m"),
                "year": first.year, "month_number": first.month, "today": today,
                "month_name": stdcalendar.month_name[first.month],   # English: the GUI's en
                "weeks": month_view(rules, first.year, first.month, language),
                "previous": last_month.strftime("%Y-%m"),
                "next": (_month_end(first) + dt.timedelta(days=1)).strftime("%Y-%m")}

    def _calendar_rules(self, name: str) -> dict:
        rules = self.book.calendars.get(name)
        if rules is None:
            raise JobNotFound(f"calendar {name!r} is not defined (defined: "
                              f"{', '.join(sorted(self.book.calendars)) or 'none'})")
        return rules

    def _calendar_head(self, name: str, rules: dict) -> dict:
        return {"name": name, "weekdays": [WEEKDAYS[d] for d in rules["weekdays"]],
                "holidays": rules["holidays"], "subdiv": rules["subdiv"],
                "exclude": rules["exclude"], "include": rules["include"],
                "jobs": sorted(i for i, r in self.book.records.items()
                               if name in (r.rules or {}))}

    def _page(self, q, state, source, kind, tag, limit, offset) -> tuple[list, int]:
        matches = self.book.select(q, state, source, kind, tag)
        return self._views(matches[offset:offset + limit if limit is not None else None]), \
            len(matches)

    def _views(self, records: list) -> list:
        next_times, last = self._states.read([r.id for r in records])
        for run in self.runner.recent.values():   # ended here, maybe not yet in the table
            if run.job_id in last and run.id >= last[run.job_id]["id"] and not run.step_id:
                last[run.job_id] = run_to_dict(run)
        self._breaches(records, last)
        return [self.book.view(r, next_times.get(r.id), last.get(r.id))
                for r in records]

    def _breaches(self, records: list, last: dict) -> None:
        """The SLA breaches of each promising job's newest run, as ``sla_breaches`` on it (the
        badge of the job list, page and dashboard); no query when no job promises anything."""
        promised = [last[r.id]["id"] for r in records if r.id in last
                    and (r.facts.promises or r.watched)]
        found = self.store.sla.breaches_of(promised) if promised else {}
        for run in last.values():
            if run["id"] in found:
                run["sla_breaches"] = [b.event for b in found[run["id"]]]

    # writes (all through the one reconcile path)

    def add(self, definition: dict, source: str = "api") -> dict:
        """Add a job; with ``replace_existing: true`` in the definition an existing job of that
        id and source is replaced instead (so a program can add its jobs at every start)."""
        defn = parse_job(definition, self.config.base_dir)
        self._refuse_past_date(defn)
        with self.book.lock:
            rec = self.book.get(defn.id)
            if rec is not None and rec.source == "yaml" and source != "yaml":
                raise self._in_file(defn.id)   # what PUT and DELETE answer too: one story
            if rec is not None and not (definition.get("replace_existing") is True
                                        and rec.source == source):
                raise JobConflict(f"job {defn.id!r} already exists (source {rec.source}); "
                                  f"replace it instead of adding it")
            self._write(defn, source, rec)
        return self.job(defn.id)

    def clone(self, source_id: str, definition: dict) -> dict:
        """Add a copy of a job (the GUI's Clone): notify secrets shown hidden are the source's."""
        if isinstance(definition, dict) and "notify" in definition:
            definition = {**definition, "notify": restore_secrets(
                definition["notify"], self.book.require(source_id).definition.notify)}
        return self.add(definition, "api")

    def replace(self, job_id: str, definition: dict) -> dict:
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
            self._write(defn, "api", self._editable(job_id))
        return self.job(job_id)

    def delete(self, job_id: str) -> None:
        with self.book.lock:
            rec = self._editable(job_id)
            with self.store.audit.attached([self.audit.job_change(
                    "job.delete", job_id, rec.definition, None)]):
                self.store.jobs.write_jobs([], [job_id])
            self.book.forget(job_id)
        self._apply({"removed": [job_id]})

    def set_paused(self, job_id: str, paused: bool) -> dict:
        with self.audit.attached("job.pause" if paused else "job.resume", ("job", job_id)) \
                as attached:
            if self.book.set_paused(job_id, paused):
                self._apply({"modified": [job_id]})
            else:
                attached.clear()   # paused already (resumed already): nothing happened
        return self.job(job_id)

    def _write(self, defn: JobDefinition, source: str, rec: Optional[JobRecord]) -> None:
        """Reconcile one job, recorded with its actor in the same transaction: an unchanged
        definition writes nothing and records nothing."""
        row = self.audit.job_change("job.replace" if rec else "job.create", defn.id,
                                    rec and rec.definition, defn)
        with self.store.audit.attached([row]) as attached:
            changes = self.book.reconcile({defn.id: defn}, source, remove_missing=False)
            if changes["unchanged"]:
                attached.clear()
        self._apply(changes)

    def stale(self) -> None:
        """The change feed heard of a change (another node's run, say): the states kept for
        the job list are old, whatever this process committed."""
        self._states.committed()

    def changed_elsewhere(self, payload: Optional[dict]) -> None:
        """Another node changed jobs (NOTIFY): the book reads them, the schedule follows."""
        if payload and payload.get("node") == self.store.node:
            return   # this node's own change: its book has it already
        changed = self.book.refresh(payload.get("ids") if payload else None)
        if changed and self._leading():
            self._ask(changed)

    def reconcile(self, desired: dict, source: str, remove_missing: bool = True) -> dict:
        changes = self.book.reconcile(desired, source, remove_missing)
        self._apply(changes)
        return changes

    def follow(self, changes: dict) -> None:
        """Have the schedule follow changes made to the book directly (new calendars)."""
        self._apply(changes)

    def _apply(self, changes: dict) -> None:
        ids = [i for kind, ids in changes.items() if kind != "unchanged" for i in ids]
        if ids and self._leading():
            self._ask(ids).wait(5)

    def _editable(self, job_id: str) -> JobRecord:
        rec = self.book.require(job_id)
        if rec.source == "yaml":
            raise self._in_file(job_id)
        return rec

    def _in_file(self, job_id: str) -> JobConflict:
        return JobConflict(f"job {job_id!r} is defined in {self.config.config_path}; edit the "
                           f"file to change or remove it, or use Edit on its GUI page, which "
                           f"writes the file (/jobs/{job_id}/edit); pause, resume and run "
                           f"work here")

    def _refuse_past_date(self, defn: JobDefinition) -> None:
        """A date job whose time (and grace) has passed would never fire: say so. (And an
        API job's calendars must be among jobs.yaml's.)"""
        missing = [(field, name) for field, name in zip(
            ("trigger.calendar" if isinstance(defn.trigger, BusinessDaySpec) else "calendar.name",
             "calendar.name"), uses(defn), strict=False) if name not in self.book.calendars]
        if missing:
            details = [{"field": field, "message": f"calendar {name!r} is not defined in the "
                        f"calendars of jobs.yaml (defined: "
                        f"{', '.join(sorted(self.book.calendars)) or 'none'})", "line": None}
                       for field, name in missing]
            raise InvalidJob(_details_text(details, defn.id), details)
        if not isinstance(defn.trigger, DateSpec):
            return
        when = build_trigger(defn.trigger, self.timezone).run_date
        grace = defn.misfire_grace_time
        # seconds compared, not when + grace: a huge grace overflows a datetime
        if grace is not None and (self._now() - when).total_seconds() > grace:
            message = (f"{_iso(when)} has passed (misfire_grace_time {grace:g}s): a date job "
                       f"runs once, at a time to come; run it now instead, or give a later date")
            raise InvalidJob(f"job {defn.id}: trigger.run_date: {message}",
                             [{"field": "trigger.run_date", "message": message, "line": None}])


class KeptStates:
    """The jobs' next fire times and newest runs as the database has them, kept between reads
    (JobCatalog's views): two queries were most of a job list's cost."""

    def __init__(self, store: Store, book: JobBook):
        self.store, self.book = store, book
        self._commits, self._commit_count = 0, itertools.count(1)
        self._kept: Optional[tuple] = None     # (mark, ids, next fire times, newest runs, at)
        self._reading_all = threading.Lock()
        store.committed.append(self.committed)

    def read(self, ids: list) -> tuple[dict, dict]:
        """(next fire times, newest runs) of these jobs as the database has them. They are
        kept until this process commits anything or REFRESH passes (a write of another node
        or process tells nothing here): the two queries were most of a list's cost. One job
        read while they are stale reads its own two rows, or, at most once a REFRESH and
        with a small book, every job's (then the next reads cost no query); while another
        thread reads every job's, and nothing was committed here, the kept ones do."""
        mark = self.mark()   # before the queries: a commit meanwhile makes them stale
        kept = self._kept
        if kept is not None and kept[0] == mark and kept[1].issuperset(ids):
            return kept[2], dict(kept[3])
        every = len(ids) == 1
        if every and (len(self.book.records) > self.READ_ALL_MAX or (
                kept is not None and kept[0][1] == mark[1])   # read all once a REFRESH
                or not self._reading_all.acquire(blocking=False)):   # (by one thread)
            if kept is not None and kept[0][0] == mark[0] and kept[1].issuperset(ids) and \
                    time.monotonic() - kept[4] < 2 * self.REFRESH and self._reading_all.locked():
                return kept[2], dict(kept[3])   # being read again; nothing committed here
            next_time, newest = self.store.queries.job_state(ids[0])
            return ({ids[0]: next_time} if next_time is not None else {},
                    {ids[0]: newest} if newest is not None else {})
        try:
            covered = frozenset(self.book.records) if every else frozenset(ids)
            next_times = self.store.jobs.next_run_times(None if every else ids) if ids else {}
            last = self.store.queries.last_runs(None if every else ids) if ids else {}
            self._kept = (mark, covered, next_times, last, time.monotonic())
        finally:
            if every:
                self._reading_all.release()
        return next_times, dict(last)

    REFRESH = 1.0
    READ_ALL_MAX = 2000   # jobs whose state one job's read may refresh (~10 reads' cost)

    def mark(self) -> tuple:
        """Changes when what ``read`` read may have: any commit of this process, and every
        REFRESH seconds for what others wrote (the change feed looks as often)."""
        return self._commits, int(time.monotonic() / self.REFRESH)

    def committed(self) -> None:
        self._commits = next(self._commit_count)   # atomic: commits end on many threads


MAX_CALENDAR_DAYS = 732   # two years of days in one answer: a year's plan and the next


def _day(name: str, text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise InvalidQuery(f"query parameter {name}: {text[:40]!r} is not a date (YYYY-MM-DD)",
                           [{"field": name, "message": "not a date (YYYY-MM-DD)"}]) from None


def _month_end(day: dt.date) -> dt.date:
    return day.replace(day=stdcalendar.monthrange(day.year, day.month)[1])
