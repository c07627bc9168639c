"""The job book: every job as applied on this node (definition, source, state, trigger), its
listing and search, and the API's Job shape. It owns no SQL and starts no run."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import shlex
import sys
import threading
import types
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, Optional

from pydantic import ValidationError

from .errors import InvalidJob, JobConflict, JobNotFound
from .explain import _details_text
from .models import (
    JobDefinition, definition_hash, duration_seconds, redact_target, share_fields)
from .text import _clean, _json_default
from .timeutil import _iso, _utcnow
from .after import after_problems, applied_with, build_plan
from .calendars import job_trigger, rules_for, shown_fire_times, uses
from .triggers import trigger_text
from .workflow import graph_view

if TYPE_CHECKING:
    from .store import Store

log = logging.getLogger("task_scheduler")


class JobFacts(NamedTuple):
    """What the reads of every job need (its state, claims' limits, its schedule's hash, the
    after: plan, masks, SLAs, filters), taken from its definition when its record is made:
    jobs alike share one (JobBook._shared), so 10,000 jobs hold a few dozen."""

    enabled: bool
    trigger_type: str
    kind: str
    max_instances: int
    misfire_grace_time: Optional[float]
    run_on: str                    # its labels, sorted and joined: what a run row carries
    spec: str                      # the trigger spec's JSON, sorted: schedule_hash
    calendars: tuple               # the calendar names it uses (calendars.uses)
    tags: tuple
    notifies: bool
    promises: bool                 # an sla
    follows: bool                  # an after:


def job_facts(defn: JobDefinition) -> JobFacts:
    return JobFacts(
        defn.is_enabled, defn.trigger.type, defn.kind, defn.max_instances,
        defn.misfire_grace_time, ",".join(sorted(set(defn.run_on))),
        json.dumps(defn.trigger.model_dump(mode="json"), sort_keys=True), tuple(uses(defn)),
        tuple(defn.tags), bool(defn.notify), defn.sla is not None, defn.after is not None)


class Definitions:
    """The definitions last built from records' texts. A record keeps its definition as the
    JSON text stored (~120 bytes) and builds the pydantic model when a job is looked at or run:
    10,000 models held cost ~9 MiB of an idle service. Keyed by the text, so a record always
    gets its own definition, never an older one of the same job."""

    SIZE = 256   # the jobs looked at or run lately; ~1.3 KB each

    def __init__(self):
        self._built: dict[str, JobDefinition] = {}
        self._lock = threading.Lock()   # held for dict steps only, never while validating

    def get(self, text: str) -> JobDefinition:
        defn = self._built.get(text)
        if defn is None:
            defn = self.put(text, share_fields(JobDefinition.model_validate(json.loads(text))))
        return defn

    def put(self, text: str, defn: JobDefinition) -> JobDefinition:
        with self._lock:
            if len(self._built) >= self.SIZE:
                self._built.pop(next(iter(self._built)))   # the oldest built
            self._built[text] = defn
        return defn


@dataclasses.dataclass(slots=True)   # no __dict__: ~100 bytes less on each of 10,000 jobs
class JobRecord:
    """A job definition as applied: one row of ts_jobs, kept in memory for fast reads."""

    id: str
    text: str          # the definition as stored (JSON); ``definition`` builds it
    source: str
    paused: bool
    hash: str
    created_at: dt.datetime
    updated_at: dt.datetime
    facts: JobFacts
    definitions: Definitions = dataclasses.field(repr=False, compare=False)
    trigger: Any = None   # the built APScheduler trigger, for next fire times
    rules: Optional[dict] = None   # the calendars it uses, resolved (calendars.job_rules)
    view: Optional[tuple] = None   # (key, job dict, JSON) cached by JobBook.view

    @property
    def definition(self) -> JobDefinition:
        return self.definitions.get(self.text)

    @property
    def state(self) -> str:
        if not self.facts.enabled:
            return "disabled"
        if self.facts.trigger_type == "manual":
            return "manual"
        if self.finished():
            return "finished"
        return "paused" if self.paused else "scheduled"

    @property
    def watched(self) -> bool:
        """A heartbeat job: its work runs elsewhere and pings; nothing fires here."""
        return self.facts.trigger_type == "heartbeat"

    def finished(self) -> bool:
        """A date job whose time has come: it fires at once (or has), and never again."""
        return self.facts.trigger_type == "date" and self.trigger is not None and \
            self.trigger.run_date <= dt.datetime.now(dt.UTC)

    @property
    def run_on(self) -> str:
        return self.facts.run_on

    def schedule_hash(self, timezone) -> str:
        """definition:trigger-spec:trigger-code: what the APScheduler job was built from. The
        spec part says whether the schedule itself changed (the phase starts again)."""
        spec = self.facts.spec
        if self.rules is not None:   # a calendar changed: the schedule changed
            calendar = self.definition.calendar
            spec += json.dumps([calendar and calendar.model_dump(), self.rules], sort_keys=True)
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
        self.calendars: dict[str, dict] = {}   # jobs.yaml's calendars as the leader applied them
        self.lock = threading.RLock()   # one writer at a time; taken before any transaction
        self._changes = 0               # bumped by every change of records: limits() cache key
        self._limits: tuple = (-1, types.MappingProxyType({}))
        self.definitions = Definitions()
        self._facts: dict = {}   # one of each equal facts and time: jobs alike share it

    @property
    def changes(self) -> int:
        """A number that every change of the records changes (a cache key)."""
        return self._changes

    def limits(self) -> Mapping[str, tuple]:
        """{job id: (max_instances, misfire_grace_time)} of every job, what a claim admits by:
        built once per change of the book, not per claim (10,000 jobs: ~2 ms each time)."""
        changes, limits = self._limits
        if changes != self._changes:
            changes = self._changes
            shared: dict = {}   # one tuple per distinct pair: 10,000 jobs share a few
            limits = types.MappingProxyType({
                i: shared.setdefault(pair, pair) for i, r in list(self.records.items())
                if (pair := (r.facts.max_instances, r.facts.misfire_grace_time))})
            self._limits = (changes, limits)
        return limits

    def _changed(self) -> None:
        """After every change of ``records``: the limits are built again when asked, and the
        store gets the jobs that follow others (what a run's end queues, read inside the
        transaction that records it)."""
        self._changes += 1
        self.store.after.plan = build_plan((r.definition, r.paused)
                                           for r in _planned(dict(self.records)))

    def forget(self, job_id: str) -> None:
        """A job deleted from ts_jobs (JobCatalog.delete): out of the book."""
        with self.lock:
            if self.records.pop(job_id, None) is not None:
                self._changed()

    def downstream(self, job_id: str) -> list[str]:
        """The jobs whose ``after:`` names this job."""
        found = (self.store.after.plan or {}).get(job_id)
        return [d.job_id for d in found.jobs] if found else []

    def load(self) -> None:
        with self.lock:
            self.calendars = self._stored_calendars()
            self.records = dict(filter(None, map(self._record, self.store.jobs.job_rows())))
            self._changed()

    def refresh(self, ids: Optional[list] = None) -> list[str]:
        """Take in changes made elsewhere (all jobs when ``ids`` is None); the ids changed."""
        with self.lock:
            if ids is None:
                signatures = self.store.jobs.job_signatures()
                ids = [i for i, sig in signatures.items() if (rec := self.records.get(i)) is None
                       or (rec.hash, rec.paused) != sig]
                ids += [i for i in self.records if i not in signatures]
            changed = self._follow_calendars(self._stored_calendars())
            rows = dict(filter(None, map(self._record, self.store.jobs.job_rows(ids)))) \
                if ids else {}
            for job_id in ids:
                old, new = self.records.get(job_id), rows.get(job_id)
                if new is None:
                    if self.records.pop(job_id, None) is not None:
                        changed.append(job_id)
                elif old is None or (old.hash, old.paused) != (new.hash, new.paused):
                    self.records[job_id] = new
                    changed.append(job_id)
            if changed:
                self._changed()
            return list(dict.fromkeys(changed))

    def set_calendars(self, calendars: dict[str, dict]) -> list[str]:
        """The leader applies jobs.yaml's calendars: stored for every node (ts_meta, told by
        NOTIFY with the ids of the jobs that use a changed one); those ids are returned."""
        with self.lock:
            if calendars == self.calendars:
                return []
            ids = sorted(i for i, r in self.records.items()
                         if rules_for(r.facts.calendars, calendars) != r.rules)
            self.store.jobs.set_meta("calendars", json.dumps(calendars, sort_keys=True), ids)
            return self._follow_calendars(calendars)

    def _follow_calendars(self, calendars: dict[str, dict]) -> list[str]:
        """Take in new calendars: the ids of the jobs whose calendars changed."""
        if calendars == self.calendars:
            return []
        self.calendars, changed = calendars, []
        for job_id, rec in list(self.records.items()):
            rules = rules_for(rec.facts.calendars, calendars)
            if rules != rec.rules:
                self.records[job_id] = dataclasses.replace(rec, rules=rules, trigger=None,
                                                           view=None)
                changed.append(job_id)
        self._changes += 1
        return changed

    def _stored_calendars(self) -> dict[str, dict]:
        text = self.store.jobs.get_meta("calendars")
        try:
            return json.loads(text) if text else {}
        except ValueError:
            log.error("the stored calendars are not JSON, none used: %.80s", text)
            return {}

    def get(self, job_id: str) -> Optional[JobRecord]:
        return self.records.get(job_id)

    def state_of(self, job_id: str) -> Optional[str]:
        rec = self.records.get(job_id)
        return rec.state if rec is not None else None

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
            self._check_after(desired, source, remove_missing)
            upserts, now = [], _utcnow()
            for job_id, defn in desired.items():
                rec = self.records.get(job_id)
                if rec is not None and rec.source != source:
                    raise JobConflict(f"job {job_id!r} already exists with source {rec.source}")
                kind = _change_kind(rec, defn)
                changes[kind].append(job_id)
                if kind != "unchanged":
                    upserts.append({"_new": rec is None, "id": job_id, "source": source,
                                    "definition": json.dumps(defn.dump()),
                                    "definition_hash": definition_hash(defn),
                                    "paused": rec.paused if rec else False, "updated_at": now,
                                    **({"created_at": now} if rec is None else {})})
            if remove_missing:
                changes["removed"] = sorted(i for i, r in self.records.items()
                                            if r.source == source and i not in desired)
            self.store.jobs.write_jobs(upserts, changes["removed"])
            for values in upserts:
                self.records[values["id"]] = self._new_record(values, desired[values["id"]])
            for job_id in changes["removed"]:
                self.records.pop(job_id, None)
            self._changed()
        touched = {k: v for k, v in changes.items() if v and k != "unchanged"}
        if touched:
            log.info("reconcile (%s): %s", source,
                     ", ".join(f"{k} {len(v)}" for k, v in touched.items()))
        return changes

    def _check_after(self, desired: dict, source: str, remove_missing: bool) -> None:
        """The desired jobs' ``after:`` names jobs that exist and starts no loop (InvalidJob).
        jobs.yaml's are checked before, with their lines (reload.py); this is for the API."""
        if not any(d.after is not None for d in desired.values()):
            return
        details = after_problems(applied_with(self.records, desired, source, remove_missing),
                                 desired)
        if details:
            raise InvalidJob(_details_text(details, details[0]["job"]),
                             [{**d, "line": None} for d in details])

    def set_paused(self, job_id: str, paused: bool) -> bool:
        """Pause or resume; True when that changed anything."""
        with self.lock:
            rec = self.require(job_id)
            if rec.paused == paused:
                return False
            if not self.store.jobs.set_paused(job_id, paused):
                raise JobNotFound(f"job {job_id!r} does not exist")
            self.records[job_id] = dataclasses.replace(rec, paused=paused, view=None)
            self._changed()
        log.info("job %s %s", job_id, "paused" if paused else "resumed")
        return True

    def select(self, q=None, state=None, source=None, kind=None, tag=None) -> list[JobRecord]:
        needle = q.lower() if q else None
        states = set(state.split(",") if isinstance(state, str) else state) if state else None
        return [r for _, r in sorted(self.records.items())
                if (states is None or r.state in states)
                and (source is None or r.source == source)
                and (kind is None or r.facts.kind == kind)
                and (tag is None or tag in r.facts.tags)
                and (needle is None or needle in _search_text(r))]

    def view(self, rec: JobRecord, next_ts: Optional[float], last_run: Optional[dict]
             ) -> tuple[dict, str, str]:
        """A job's dict, its JSON, and its JSON as a list item (without ``definition``, which
        repeats the rest: half of a list's bytes with real definitions), kept on its record
        until its state, next fire time or last run changes (a new definition is a new
        record): computing next fire times is the bulk of the cost, so a list of 1,000 jobs
        is answered in milliseconds."""
        key = (rec.paused, rec.state, next_ts, last_run and (
            last_run["id"], last_run["status"], tuple(last_run.get("sla_breaches", ()))),
            tuple(self.downstream(rec.id)))
        if rec.view is None or rec.view[0] != key:
            job = self._job_dict(rec, next_ts, last_run)
            item = {k: v for k, v in job.items() if k != "definition"}
            rec.view = (key, job, json.dumps(job, default=_json_default, ensure_ascii=False),
                        json.dumps(item, default=_json_default, ensure_ascii=False))
        return rec.view[1:]

    def trigger_of(self, rec: JobRecord):
        if rec.trigger is None:
            rec.trigger = job_trigger(rec.definition, self.timezone, rec.rules)
        return rec.trigger

    def fire_times_of(self, rec: JobRecord, first: Optional[dt.datetime], count: int) -> list:
        """The next ``count`` fire times from the schedule's next one, calendar applied (a
        heartbeat job: only the ping expected next)."""
        if rec.watched:
            return [first] if first is not None else []
        try:
            return shown_fire_times(self.trigger_of(rec), first, count)
        except ValueError:   # a calendar no longer defined: the scheduler says why
            return []

    def _job_dict(self, rec: JobRecord, next_ts: Optional[float], last_run) -> dict:
        d = rec.definition
        next_time = (dt.datetime.fromtimestamp(next_ts, dt.UTC)
                     if next_ts is not None and rec.state == "scheduled" else None)
        if rec.watched and rec.state == "scheduled":
            next_time = expected_ping(rec, last_run)
        times = self.fire_times_of(rec, next_time, 5)
        definition = d.dump()
        if definition.get("notify"):   # the API and the GUI never show a secret
            definition["notify"] = [redact_target(t) for t in definition["notify"]]
        return {
            "id": d.id, "description": d.description, "kind": d.kind, "func": d.func,
            "command": _command_list(d), "args": d.args, "kwargs": d.kwargs,
            "trigger": d.trigger.model_dump(mode="json", exclude_none=True),
            "trigger_text": trigger_text(d.trigger), "source": rec.source, "state": rec.state,
            "next_run_time": _iso(times[0] if times else None),
            "next_run_times": [_iso(t) for t in times],
            "calendars": [n for n in (rec.rules or {})],
            "max_instances": d.max_instances, "coalesce": d.coalesce,
            "misfire_grace_time": d.misfire_grace_time, "timeout": d.timeout, "tags": d.tags,
            "isolation": d.isolation if d.kind == "python" else None,
            "run_on": d.run_on, "notify": definition.get("notify", []),
            "sla": definition.get("sla"), "after": d.after and d.after.model_dump(mode="json"),
            "downstream": self.downstream(d.id),
            "is_enabled": d.is_enabled, "paused": rec.paused,
            "last_run": last_run, "definition": definition,
            "created_at": _iso(rec.created_at), "updated_at": _iso(rec.updated_at),
            "steps": graph_view(d),
        }

    def _shared(self, value):
        """The one equal ``value`` (facts, a time: a reconcile's jobs share its instant)."""
        if len(self._facts) > 4 * len(self.records) + 100:   # edits left old ones behind
            self._facts.clear()
        return self._facts.setdefault(value, value)

    def _record(self, row) -> Optional[tuple[str, JobRecord]]:
        """A stored job's record; its definition is validated here for its facts and then let
        go (Definitions builds it again on use)."""
        try:
            defn = JobDefinition.model_validate(json.loads(row.definition))
        except (ValidationError, ValueError) as exc:
            log.error("job %s in the database no longer validates, skipped: %s", row.id,
                      _clean(exc))
            return None
        # an interned source: not one more string per job
        rec = self._make_record(row.id, row.definition, sys.intern(row.source), row.paused,
                                row.definition_hash, row.created_at, row.updated_at, defn)
        return rec.id, rec   # the id interned: the schedules' copy of it is the same string

    def _new_record(self, values: dict, defn: JobDefinition) -> JobRecord:
        old = self.records.get(values["id"])
        self.definitions.put(values["definition"], share_fields(defn))   # likely looked at next
        return self._make_record(values["id"], values["definition"], values["source"],
                                 values["paused"],
                                 values["definition_hash"],
                                 old.created_at if old else values["updated_at"],
                                 values["updated_at"], defn)

    def _make_record(self, job_id: str, text: str, source: str, paused: bool, digest: str,
                     created_at: dt.datetime, updated_at: dt.datetime,
                     defn: JobDefinition) -> JobRecord:
        facts = self._shared(job_facts(defn))
        rec = JobRecord(sys.intern(job_id), text, source, paused, digest,
                        self._shared(created_at), self._shared(updated_at), facts,
                        self.definitions, rules=rules_for(facts.calendars, self.calendars))
        if facts.trigger_type == "date":
            # Only a date job's state needs its trigger (finished()); the others build theirs
            # when a view asks: 10,000 eager triggers cost ~2 MiB and a tenth of a second.
            rec.trigger = job_trigger(defn, self.timezone, rec.rules)
        return rec


def expected_ping(rec: JobRecord, last_run: Optional[dict]) -> dt.datetime:
    """When a heartbeat job's next ping is due: ``every`` after its last ping (or after it was
    added); after an ``overdue`` row, that row's time (still due)."""
    spec = rec.definition.trigger
    if last_run and last_run.get("trigger") == "heartbeat":
        return dt.datetime.fromisoformat(last_run["scheduled_at"])
    since = (dt.datetime.fromisoformat(last_run["scheduled_at"]) if last_run
             else rec.created_at.replace(tzinfo=dt.UTC))
    return since + dt.timedelta(seconds=duration_seconds(spec.every))


def _planned(records: dict[str, JobRecord]) -> list[JobRecord]:
    """The jobs the after: plan is built from: those that follow a job, and the jobs they
    follow (their retries): the other definitions are not built for it."""
    following = [r for r in records.values() if r.facts.follows]
    ups = {r.definition.after.job for r in following}
    return following + [records[i] for i in sorted(ups)
                        if i in records and not records[i].facts.follows]


def _change_kind(rec: Optional[JobRecord], defn: JobDefinition) -> str:
    if rec is None:
        return "added"
    if rec.hash == definition_hash(defn):
        return "unchanged"
    old = rec.definition
    if old.is_enabled != defn.is_enabled or old.trigger != defn.trigger:
        return "rescheduled"
    return "modified"


def _command_list(defn: JobDefinition) -> Optional[list]:
    if defn.command is None:
        return [defn.func, *map(str, defn.args)] if defn.kind == "command" else None
    if isinstance(defn.command, list) or defn.shell:
        return [defn.command] if defn.shell else list(defn.command)
    return shlex.split(defn.command)


def _search_text(rec: JobRecord) -> str:
    d = rec.definition
    return " ".join([d.id, d.description, d.func or "", str(d.command or ""), *d.tags]).lower()
