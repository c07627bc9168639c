"""The front door: SchedulerService builds the parts, starts and stops them, and hands each call
of the API, the GUI and embedders to the part that owns it."""

from __future__ import annotations

import collections
import datetime as dt
import fcntl
import json
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Optional

import sqlalchemy as sa
import sqlalchemy.dialects.postgresql
import sqlalchemy.dialects.sqlite
from pydantic import ValidationError

from .book import JobBook
from .bus import Bus
from .checks import SECRET_ENV, check_params, parse_job, trigger_problems
from .cluster import Cluster
from .config import Config, __version__, check_token
from .errors import BadRequest, InvalidConfig, InvalidJob, JobConflict, RunNotFound, SchedulerError
from .explain import _details_text, _pydantic_detail
from .history import HistoryWriter
from .jobsfile import JobsParser, read_jobs_file
from .models import (
    DateSpec, FINAL_STATUSES, JOB_STATES, JobDefinition, Page, run_to_dict, target_text)
from .notify import Notifier, restore_secrets
from .output import output_parts, output_since, service_secrets
from .reload import Reloader, _api_id_conflict
from .runner import Runner
from .scheduler import _Scheduler
from .store import Store
from .store.schedules import ScheduleStore
from .store.schema import RUN_SPAN_COLUMNS, SCHEMA_VERSION, _sqlite_path, create_engine, migrate
from .text import _clean
from .timeutil import _aware, _iso, _local_zone, _naive_utc, _utcnow
from .triggers import _zone, build_trigger, fire_times

if TYPE_CHECKING:
    from .book import JobRecord

log = logging.getLogger("task_scheduler")


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
            counts = self.store.queries.run_counts(_utcnow() - dt.timedelta(hours=24))
            self._counts = (time.monotonic(), counts)
        return dict(counts)

    def _leader(self) -> Optional[str]:
        if not self.cluster.clustered:
            return self.store.node
        holder, _, left = self.store.nodes.lease()
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
                for row, age in self.store.nodes.all()]

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
            next_time, newest = self.store.queries.job_state(ids[0])
            next_times = {ids[0]: next_time} if next_time is not None else {}
            last = {ids[0]: newest} if newest is not None else {}
        else:
            next_times = self.store.jobs.next_run_times(ids) if ids else {}
            last = self.store.queries.last_runs(ids) if ids else {}
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
            self.store.jobs.write_jobs([], [job_id])
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
                self.store.jobs.set_meta("config", json.dumps(applied))
                state.update(changes={k: len(v) for k, v in changes.items()}, applied=applied)
            else:
                applied = self.store.jobs.get_meta("config")
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
        applied = self.store.jobs.get_meta("config")
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
        cap: ``.capped``); ``before``/``after`` are run-id cursors (see ``RunQueries.runs``)."""
        page = self.store.queries.runs(job_id, status, since, limit, offset, trigger, before, after)
        for index, run in enumerate(page):
            live = self._live(run["id"])
            page[index] = self._explain(run_to_dict(live) if live is not None else run)
        return page

    def run_spans(self, since: dt.datetime, limit: int) -> tuple[list[dict], bool]:
        """For the timeline: the newest ``limit`` runs since ``since`` as dicts of the
        RUN_SPAN_COLUMNS (times aware, UTC) and ``duration_s``, and whether there were more.
        At a million runs this is several times cheaper than ``runs()``."""
        rows = self.store.queries.run_spans(since, limit)
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
            row = self.store.queries.run(run_id)
            if row is None:
                raise RunNotFound(f"run {run_id!r} does not exist")
            run = self._explain(run_to_dict(row, output=True))
        run["notifications"] = [
            {"id": n.id, "event": n.event, "target": target_text(json.loads(n.target)),
             "status": n.status, "attempts": n.attempts, "log": json.loads(n.log)}
            for n in self.store.notes.notes_of(run_id)] if run["status"] in FINAL_STATUSES else []
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
        return self.store.retention.prune(self.config.keep_runs, self.config.keep_days,
                                          stopping=lambda: self.history.stopping)
