"""jobs.yaml at run time: JobsFile reads, validates and (on the leader) applies it, keeping its
state for /api/status; the Reloader watches its folder, debounces events and asks JobsFile to
reload. A broken edit is reported and changes nothing. Neither edits jobs but through the
``reconcile`` callable it is given."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Optional
from collections.abc import Callable

import yaml

from .audit import YAML_ACTOR, current_actor
from .after import after_problems, applied_with
from .errors import BadRequest, InvalidConfig
from .explain import _config_error_text
from .jobsfile import JobsParser, _node_at, _yaml_compose, read_jobs_file
from .text import _clean
from .timeutil import _iso, _utcnow

if TYPE_CHECKING:
    from .audit import AuditLog
    from .book import JobBook
    from .config import Config
    from .jobs import JobCatalog
    from .store import Store

log = logging.getLogger("task_scheduler")


RELOAD_ACTIONS = (("added", "job.create"), ("rescheduled", "job.replace"),
                  ("modified", "job.replace"), ("removed", "job.delete"))
_NO_FILE = "no jobs.yaml"   # ConfigState.seen_hash while there is none (said once)


@dataclasses.dataclass
class ConfigState:
    """jobs.yaml as this node last read it, for /api/status (``JobsFile.status``)."""

    path: Optional[str]
    loaded_at: Optional[str] = None
    hash: Optional[str] = None
    jobs: int = 0
    error: Optional[str] = None
    errors: list = dataclasses.field(default_factory=list)
    reloads: int = 0
    failures: int = 0
    applied: Optional[dict] = None   # {"hash", "node", "at"} the leader last applied
    changes: Optional[dict] = None   # counts by kind of the last applied reload
    seen_hash: Optional[str] = None  # the content last looked at, good or bad (or _NO_FILE)


class JobsFile:
    """Reads jobs.yaml and, when this node leads, applies it if it validates; else keeps
    everything and records why. One reload at a time (``lock``): the file read last is applied
    last. Followers validate their copy and report drift from the leader's."""

    def __init__(self, config: Config, store: Store, book: JobBook, catalog: JobCatalog, *,
                 leading: Callable[[], bool], audit: AuditLog):
        self.config, self.store, self.book, self.catalog = config, store, book, catalog
        self.audit = audit
        self._leading = leading
        path = config.config_path
        self.state = ConfigState(path=path and os.path.abspath(path))
        self.lock = threading.Lock()
        self._parser = JobsParser()
        self._checked: Optional[tuple[str, list]] = None   # (sha256, jobs) of validate()

    def status(self) -> dict:
        state = self.state
        out = {"changes": state.changes, "path": state.path, "loaded_at": state.loaded_at,
               "hash": state.hash, "jobs": state.jobs, "error": state.error,
               "errors": state.errors}
        applied = state.applied
        out["drift"] = None if not applied or not state.hash or applied["hash"] == \
            state.hash else {"leader": applied.get("node"), "leader_hash": applied["hash"],
                             "this_hash": state.hash}
        return out

    def reload(self, initial: bool = False, force: bool = False) -> dict:
        """Read jobs.yaml and, when this node leads, apply it if it validates; else keep
        everything and record why. A file already applied (same hash) is skipped unless
        ``force``. Followers validate their copy and report drift from the leader's. Returns
        the config status; raises InvalidConfig when the file is bad. The file is parsed
        outside every other lock: fires and API calls never wait on a big file."""
        path = self.config.config_path
        if not path:
            raise BadRequest("this service has no jobs.yaml (config_path is not set)")
        with self.lock:
            leading = self._leading()
            try:
                text, digest = read_jobs_file(path, self.config.max_config_bytes)
            except InvalidConfig as exc:
                if not os.path.lexists(path) and not any(
                        r.source == "yaml" for r in self.book.records.values()):
                    return self._no_jobs_file(path)
                return self._failed(exc, None)
            if self._seen(digest, leading, force):
                return self.status()
            if initial and leading and not force and self._kept_as_applied(digest):
                return self.status()
            checked, self._checked = self._checked, None
            try:
                jobs = checked[1] if checked and checked[0] == digest else \
                    self._parser.parse(text, path)
            except InvalidConfig as exc:
                return self._failed(exc, digest)
            if leading:
                self._apply(path, digest, jobs)
            else:
                self._follow(digest)
            state = self.state
            state.seen_hash = digest
            state.loaded_at, state.hash, state.jobs = _iso(_utcnow()), digest, len(jobs)
            state.error, state.errors = None, []
            state.reloads += 0 if initial else 1
        return self.status()

    def validate(self, text: str, path: str) -> list:
        """The jobs of a jobs.yaml text about to be written, validated as a reload would
        (InvalidConfig, with lines, if not): quick for a text close to the file last read, and
        the reload that finds this text in the file takes these jobs instead of parsing again."""
        with self.lock:
            jobs = self._parser.parse(text, path)
            conflict = _after_conflict(self.book.records, path, jobs)
            if conflict is not None:
                raise conflict
            self._checked = (hashlib.sha256(text.encode("utf-8")).hexdigest(), jobs)
        return jobs

    def reload_quietly(self) -> None:
        """At start and on leading: a bad file is logged and recorded, never raised."""
        if not self.config.config_path:
            return
        try:
            self.reload(initial=True)
        except InvalidConfig:
            log.warning("keeping the jobs stored in the database")

    def _seen(self, digest: str, leading: bool, force: bool) -> bool:
        """This content was looked at already, and (leading) it is what was applied."""
        state = self.state
        return digest == state.seen_hash and not force and not state.error and (
            not leading or (state.applied or {}).get("hash") == digest)

    def _apply(self, path: str, digest: str, jobs: list) -> None:
        with self.book.lock:
            conflict = _api_id_conflict(self.book.records, path, jobs) or \
                _after_conflict(self.book.records, path, jobs)
            if conflict is not None:
                self._failed(conflict, digest)
            before = {i: r for i, r in self.book.records.items() if r.source == "yaml"}
            recalendared = self.book.set_calendars(getattr(jobs, "calendars", {}))
            changes = self.catalog.reconcile({j.id: j for j in jobs}, "yaml")
            self.catalog.follow({"rescheduled": recalendared})
        applied = {"hash": digest, "node": self.store.node, "at": _iso(_utcnow())}
        self.store.jobs.set_meta("config", json.dumps(applied))
        self.state.changes = {k: len(v) for k, v in changes.items()}
        self.state.applied = applied
        self._record(changes, before, {j.id: j for j in jobs}, digest)

    def _record(self, changes: dict, before: dict, after: dict, digest: str) -> None:
        """The reload in the audit log, as jobs.yaml with the file's hash, and each job it
        added, changed or removed: right after the commits (a reload is several transactions:
        calendars, jobs, the hash applied), never for one that failed."""
        asked_by = current_actor().name   # who asked: the API's caller, or system (file, HUP)
        rows = [self.audit.row(YAML_ACTOR, "config.reload", ("config", "jobs.yaml"), {
            "hash": digest, "asked_by": asked_by, "path": self.state.path,
            "changes": {k: len(v) for k, v in changes.items()}})]
        for kind, action in RELOAD_ACTIONS:
            rows += [self.audit.job_change(action, i, before[i].definition if i in before
                                           else None, after.get(i), YAML_ACTOR,
                                           {"hash": digest, "change": kind})
                     for i in changes[kind]]
        self.store.audit.append(rows)

    def _follow(self, digest: str) -> None:
        applied = self.store.jobs.get_meta("config")
        self.state.applied = applied = json.loads(applied) if applied else None
        if applied and applied["hash"] != digest:
            log.warning("jobs.yaml here (%s) differs from what the leader %s applied (%s): "
                        "the leader's applies", digest[:12], applied["node"],
                        applied["hash"][:12])

    def _no_jobs_file(self, path: str) -> dict:
        """No jobs.yaml, and no job from one: not an error (a service may run on API jobs
        alone, and the file may come later). Said once; a jobs.yaml that goes away after its
        jobs were applied is still an error (they are kept, and the file should say so)."""
        state = self.state
        if state.seen_hash != _NO_FILE:
            log.info("no jobs.yaml (%s), starting with none", os.path.abspath(path))
            state.seen_hash = _NO_FILE
        state.error, state.errors, state.hash, state.jobs = None, [], None, 0
        return self.status()

    def _kept_as_applied(self, digest: str) -> bool:
        """A start on the very file ts_jobs was last reconciled with (its hash is written after
        that commit): nothing to parse, validate or write. Parsing 10,000 jobs took a second;
        the parser learns the file at the first reload that changes it."""
        applied = self.store.jobs.get_meta("config")
        applied = json.loads(applied) if applied else None
        if not applied or applied.get("hash") != digest:
            return False
        count = sum(1 for r in self.book.records.values() if r.source == "yaml")
        self.state = dataclasses.replace(
            self.state, seen_hash=digest, applied=applied, loaded_at=_iso(_utcnow()),
            hash=digest, jobs=count, error=None, errors=[],
            changes={"added": 0, "rescheduled": 0, "modified": 0, "removed": 0,
                     "unchanged": count})
        log.info("jobs.yaml is as last applied (%s): %d jobs kept", digest[:12], count)
        return True

    def _failed(self, exc: InvalidConfig, digest: Optional[str]):
        """Keep the error for /api/status and raise it; log it once per file content and error
        (the poll and repeated events retry a bad file without flooding the log)."""
        state = self.state
        new_error = digest != state.seen_hash or state.error != str(exc)
        state.seen_hash, state.error, state.errors = digest, str(exc), exc.details
        if new_error:
            state.failures += 1
            log.error("jobs.yaml not applied, the running configuration is kept:\n%s", exc)
        raise exc


class Reloader:
    """Watches the folder of jobs.yaml (editors save by rename), debounces bursts of events, and
    has ``jobs_file`` reload in its own thread; a slow hash poll catches what events miss (NFS,
    symlink swaps)."""

    def __init__(self, config: Config, jobs_file: JobsFile):
        self.config, self.jobs_file = config, jobs_file
        self._path = os.path.abspath(config.config_path)
        self._cond = threading.Condition()
        self._due: Optional[float] = None
        self._stopping = False
        self._observer = None
        self._thread = threading.Thread(target=self._loop, name="ts-reloader", daemon=True)

    def start(self) -> None:
        if self.config.watch:
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
            self._due = time.monotonic() + (self.config.debounce if delay is None
                                            else delay)
            self._cond.notify()

    def _watch(self):
        from watchdog.observers import Observer
        observer = Observer()
        try:
            observer.schedule(_FileEvents(self), os.path.dirname(self._path), recursive=False,
                              event_filter=_file_events())
            observer.start()
        except OSError as exc:
            log.warning("cannot watch %s (%s); polling every %ss instead", self._path,
                        _clean(exc), self.config.poll_interval)
            return None
        return observer

    def _loop(self) -> None:
        poll = self.config.poll_interval
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
            self.jobs_file.reload()
        except InvalidConfig:
            pass  # recorded and logged by reload(); the running configuration stays
        except Exception:
            log.exception("reloader: unexpected error; the running configuration is kept")


def _file_events() -> Optional[list]:
    """The events inotify is asked for (Linux; elsewhere all). The database usually sits beside
    jobs.yaml (the default layout) and every commit writes its WAL: reported as modified, those
    writes kept watchdog's thread reading (7.6% of a busy node's samples at 200 runs/s). A
    save still shows: in place as closed, atomic as moved, vim-style as created."""
    if not sys.platform.startswith("linux"):
        return None
    from watchdog.events import (
        FileClosedEvent, FileCreatedEvent, FileDeletedEvent, FileMovedEvent)
    return [FileClosedEvent, FileCreatedEvent, FileDeletedEvent, FileMovedEvent]


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


def _after_conflict(records: dict, path: str, jobs: list) -> Optional[InvalidConfig]:
    """The file's ``after:`` among all jobs (API jobs too): names no job has, loops."""
    if not any(j.after is not None for j in jobs):
        return None
    desired = {j.id: j for j in jobs}
    details = after_problems(applied_with(records, desired, "yaml", True), desired)
    if not details:
        return None
    lines = _id_lines(path, [d["job"] for d in details], "after")
    details = [{**d, "line": lines.get(d["job"])} for d in details]
    return InvalidConfig(_config_error_text(path, details), details)


def _id_lines(path: str, ids: list, key: str = "id") -> dict:
    """{id: line} of jobs in jobs.yaml (the line of their ``key``, else of their id);
    re-reads the file, so only for error messages."""
    try:
        root, _ = _yaml_compose(read_jobs_file(path)[0], path)
    except InvalidConfig:
        return {}   # the file changed since it validated: the next reload reports it
    items = root if isinstance(root, yaml.SequenceNode) else _node_at(root, ["jobs"])
    lines = {}
    for item in items.value if isinstance(items, yaml.SequenceNode) else []:
        pairs = {k.value: v for k, v in item.value} if isinstance(item, yaml.MappingNode) else {}
        job_id = getattr(pairs.get("id"), "value", None)
        if job_id in ids:
            lines.setdefault(job_id, pairs.get(key, pairs["id"]).start_mark.line + 1)
    return lines
