"""The front door: SchedulerService builds the parts, starts and stops them, and hands each call
of the API, the GUI and embedders to the part that owns it. It holds no logic of its own but the
order of start and stop."""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
from typing import Optional

from .audit import AuditLog
from .book import JobBook
from .bus import Bus
from .changes import ChangeFeed, Changes
from .checks import check_params, seal_environ
from .cluster import Cluster, NodeHooks
from .config import Config, __version__, check_token
from .executor import RunContext
from .history import HistoryWriter
from .jobs import JobCatalog
from .lockfile import lock_sqlite
from .models import Page
from .notify import Notifier
from .output import service_secrets
from .runlog import RunLog
from .sla import Promises
from .reload import JobsFile, Reloader
from .runner import Runner, RunnerParts
from .scheduler import SchedulerParts, _Scheduler
from .status import StatusBoard
from .store import Store
from .store.schedules import ScheduleStore
from .store.schema import create_engine, migrate, new_run_id
from .timeutil import _local_zone, _naive_utc, _utcnow
from .triggers import _zone
from .yamledit import JobsFileEditor

log = logging.getLogger("task_scheduler")


class SchedulerService:
    """Everything but HTTP, thread-safe. Its parts: the store, the bus, the job book, the history
    writer, the cluster, the runner, the notifier, the schedule (APScheduler), the job catalog,
    jobs.yaml and its reloader, the status board and the run log."""

    def __init__(self, config: Config):
        check_token(config.token)
        self.config = config
        self.secrets = service_secrets(config)
        # Read before start() takes the secrets out of os.environ: passed on as they were.
        self.passed_env = {n: os.environ[n] for n in config.pass_env if n in os.environ}
        self.engine = create_engine(config.database_url, config.busy_timeout)
        self.timezone = _zone(config.timezone) if config.timezone else _local_zone()
        self.base_url: Optional[str] = None   # how jobs reach this service's API (http_check)
        self.store = Store(self.engine, config.node)
        self.audit = AuditLog(self.store, lambda: new_run_id(self.cluster.offset), self.secrets)
        self.bus = Bus(self.store)
        self.book = JobBook(self.store, self.timezone)
        self.history = HistoryWriter(self.store, prune=self.prune)
        # The runner and the scheduler read the cluster's clock, so it comes first; what it
        # tells them goes through these callables, called only once start() has run.
        self.cluster = Cluster(config, self.store, self.bus, NodeHooks(
            lead=self.lead, step_down=lambda: self.scheduler.step_down(),
            swept=lambda runs: self.notifier.swept(runs), running=lambda: len(self.runner.active),
            after_heartbeat=lambda *args: self.runner.after_heartbeat(*args),
            after_rescue=lambda rows: self.runner.after_rescue(rows),
            fence_if_due=lambda: self.runner.fence_if_due(),
            config_hash=lambda: self.jobs_file.state.hash))
        self.notifier = Notifier(config, self.store, self.bus, self.book, now=self.now,
                                 leading=self.cluster.leads, base_url=lambda: self.base_url)
        self.runner = Runner(RunnerParts(
            config, self.store, self.history, self.book, now=self.now,
            new_id=lambda: new_run_id(self.cluster.offset), notes_for=self.notifier.notes_for,
            wants_previous=self.notifier.wants_previous, secrets=self.secrets,
            passed_env=self.passed_env, run_context=functools.partial(RunContext, self),
            audit=self.audit))
        self.promises = Promises(config, self.store, self.book, self.notifier, self.runner,
                                 self.cluster, now=self.now, audit=self.audit)
        self.scheduler = _Scheduler(SchedulerParts(
            ScheduleStore(self.store), self.book, now=self.cluster.now,
            may_fire=self.cluster.may_fire, lost=self.cluster.lost,
            new_id=lambda: new_run_id(self.cluster.offset), notes_for=self.notifier.notes_for,
            admission_for=self.runner.admission_for, take=self.runner.take, wake=self.runner.wake),
            timezone=self.timezone)
        self.catalog = JobCatalog(config, self.book, self.store, self.runner, self.timezone,
                                  leading=self.cluster.leads, ask=self.scheduler.ask,
                                  now=self.cluster.now, audit=self.audit)
        self.jobs_file = JobsFile(config, self.store, self.book, self.catalog,
                                  leading=self.cluster.leads, audit=self.audit)
        self.reloader = Reloader(config, self.jobs_file) if config.config_path else None
        self.editor = JobsFileEditor(config, self.book, self.jobs_file, leading=self.cluster.leads)
        self.board = StatusBoard(config, self.store, self.book, self.cluster,
                                 self.scheduler, self.runner, self.history, self.jobs_file,
                                 self.timezone)
        self.runlog = RunLog(self.store, self.runner, nodes=self.board.nodes,
                            now=self.cluster.now)
        self._lockfile = None
        self.bus.subscribe("ts_jobs", self.catalog.changed_elsewhere)
        self.bus.subscribe("ts_runs", self.runner.wake)
        self.changes = ChangeFeed(self.store, self.bus, self.book.state_of, self.catalog.stale)

    # lifecycle

    def start(self) -> SchedulerService:
        """Migrate, recover from a crash, join the cluster (leading at once on SQLite: jobs.yaml
        is applied before the first fire), then serve. Returns at once."""
        self._lockfile = lock_sqlite(self.config.database_url, self.config.node)
        migrate(self.engine)
        self.runlog.build_search_index()
        seal_environ(self.config)
        self.board.started_at = _utcnow()
        self.cluster.join()
        self.runner.end_leftovers(self.cluster.clustered)
        self.bus.start()   # listening before the book is read: no change of jobs falls between
        self.book.load()
        self.history.start()
        self.scheduler.start(paused=True)
        self.runner.start()
        self.notifier.start()
        self.promises.start()
        self.cluster.start()
        self.changes.start()
        if self.reloader is not None:
            if not self.cluster.leads():
                self.jobs_file.reload_quietly()   # validate this copy; the leader applies its own
            self.reloader.start()
        log.info("task-scheduler %s started as %s (node %s): %d jobs, database %s", __version__,
                 self.cluster.role, self.store.node, len(self.book.records),
                 self.engine.url.render_as_string(hide_password=True))
        return self

    def lead(self, epoch: Optional[int], initial: bool = False) -> None:
        """This node leads from now: jobs.yaml is applied here, and the schedule fires here."""
        if initial:
            self.jobs_file.reload_quietly()
        elif self.reloader is not None:
            self.reloader.poke(0)   # off the cluster thread: a big file takes a moment
        synced = self.scheduler.lead(epoch)
        if initial:   # start() returns with every job scheduled
            synced.wait(10)

    def stop(self, grace: Optional[float] = None) -> None:
        """Stop firing, give running runs ``grace`` seconds, end what is left, record it all."""
        if self.board.stopping:
            return
        self.board.stopping = True
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
        self.promises.stop()
        self.cluster.stop()
        self.changes.stop()
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

    def clock(self) -> float:
        """The database's time in seconds since the epoch: the clock of run ids."""
        return self.cluster.now().timestamp()

    @property
    def started_at(self) -> Optional[dt.datetime]:
        return self.board.started_at

    @property
    def stopping(self) -> bool:
        return self.board.stopping

    def changes_since(self, cursor: Optional[str], wait: float = 0.0) -> Changes:
        """Runs and jobs that changed after ``cursor`` (see ``ChangeFeed.read``): what live
        pages and ``/api/events`` tell, from memory, however many read."""
        return self.changes.read(cursor, wait)

    # health and status

    def health(self) -> tuple[bool, dict]:
        return self.board.health()

    def status(self, counts_max_age: float = 0, counts_key=None) -> dict:
        """The service's state; ``runs_24h`` may be up to ``counts_max_age`` seconds old (the
        dashboard: counting a day of a million-run history is most of what it costs), or a
        second when ``counts_key`` (the change feed's cursor) differs from the last count's."""
        return self.board.status(counts_max_age, counts_key)

    def nodes(self) -> list[dict]:
        """The cluster's nodes (SQLite: this one), the leader marked."""
        return self.board.nodes()

    def config_status(self) -> dict:
        return self.jobs_file.status()

    def metrics_state(self) -> dict:
        return self.board.metrics_state()

    # jobs

    def jobs(self, q: Optional[str] = None, state: Optional[str] = None,
             source: Optional[str] = None, kind: Optional[str] = None, tag: Optional[str] = None,
             limit: Optional[int] = None, offset: int = 0) -> Page:
        """Jobs matching every given filter, by id; ``.total`` counts all matches."""
        return self.catalog.page(q, state, source, kind, tag, limit, offset)

    def jobs_json(self, **query) -> str:
        """``jobs()`` as the API's JSON answer (JobCatalog.page_json: its fast path)."""
        return self.catalog.page_json(**query)

    def job(self, job_id: str, upcoming: int = 0) -> dict:
        """One job; a jobs.yaml job also says where it is defined (``defined_at``)."""
        return self.editor.located(self.catalog.job(job_id, upcoming))

    def job_json(self, job_id: str) -> str:
        return self.editor.located_json(job_id, self.catalog.job_json(job_id))

    def job_yaml(self, job_id: str) -> str:
        """A job as a jobs.yaml entry (secrets hidden as the API hides them)."""
        return self.editor.export(self.job(job_id))

    def yaml_snapshot(self, job_id: str) -> dict:
        return self.editor.snapshot(job_id)

    def edit_yaml_job(self, job_id: str, definition: dict, base_hash: str) -> dict:
        """Write a jobs.yaml job into the file and apply it: ``JobsFileEditor.edit``."""
        return self.editor.edit(job_id, definition, base_hash)

    def calendar(self, name: str, first=None, last=None, language=None, month=None) -> dict:
        """A calendar's days (``JobCatalog.calendar``); with ``month``, the GUI's month."""
        return self.catalog.calendar(name, first, last, language, month)

    def preview_trigger(self, trigger: dict, count: int = 5) -> list:
        """The next fire times of a trigger spec (for forms); raises InvalidJob."""
        return self.catalog.preview_trigger(trigger, count)

    def add_job(self, definition: dict, source: str = "api") -> dict:
        """Add a job; with ``replace_existing: true`` in the definition an existing API job of
        that id is replaced instead (so a program can add its jobs at every start)."""
        return self.catalog.add(definition, source)

    def clone_job(self, source_id: str, definition: dict) -> dict:
        return self.catalog.clone(source_id, definition)

    def replace_job(self, job_id: str, definition: dict) -> dict:
        return self.catalog.replace(job_id, definition)

    def delete_job(self, job_id: str) -> None:
        self.catalog.delete(job_id)

    def pause(self, job_id: str) -> dict:
        return self.catalog.set_paused(job_id, True)

    def resume(self, job_id: str) -> dict:
        return self.catalog.set_paused(job_id, False)

    def reconcile(self, desired: dict, source: str, remove_missing: bool = True) -> dict:
        return self.catalog.reconcile(desired, source, remove_missing)

    def reload(self, initial: bool = False, force: bool = False) -> dict:
        """Read jobs.yaml and apply it if it validates (``JobsFile.reload``): the config
        status; InvalidConfig when the file is bad, the running jobs kept."""
        return self.jobs_file.reload(initial, force)

    # runs

    def runs(self, job_id: Optional[str] = None, status=None,
             since: Optional[dt.datetime] = None, limit: int = 50, offset: int = 0,
             trigger: Optional[str] = None, before: Optional[str] = None,
             after: Optional[str] = None, *, until: Optional[dt.datetime] = None,
             node: Optional[str] = None, q: Optional[str] = None) -> Page:
        """Runs newest first, without output; ``.total`` counts the matches up to a cap. The
        filters, the run-id cursors and ``q`` (a phrase in the output): ``RunLog.runs``."""
        return self.runlog.runs(job_id, status, since, limit, offset, trigger, before, after,
                                until=until, node=node, q=q)

    def run_spans(self, since: dt.datetime, limit: int, job_ids=None, windows=()) -> tuple:
        """For the timeline: RunQueries.run_spans as dicts (+duration_s), and if there were more."""
        return self.runlog.run_spans(since, limit, job_ids, windows)

    def run_buckets(self, since: dt.datetime, width: int, offset: int = 0) -> list[tuple]:
        """For the timeline: RunQueries.run_buckets; long-ended buckets may be a minute old."""
        return self.runlog.run_buckets(since, width, offset)

    def first_run_since(self, since: dt.datetime) -> Optional[dt.datetime]:
        return self.runlog.first_run_since(since)

    def run(self, run_id: str) -> dict:
        """One run with its stdout and stderr (live output for a run still going), and what
        was sent about it."""
        return self.runlog.run(run_id)

    def output(self, run_id: str, stream: str, offset: int = 0) -> dict:
        """A run's stdout or stderr after byte ``offset``, to tail a run that goes on: from
        memory on the node running it, else as that node last wrote it (under a second old)."""
        return self.runlog.output(run_id, stream, offset)

    def run_now(self, job_id: str, params: Optional[dict] = None) -> dict:
        """Queue a manual run, optionally with parameters of its own (``RunParams``: args,
        kwargs, env); returns it (status queued, trigger manual)."""
        rec = self.book.require(job_id)
        return self.runner.run_now(job_id, check_params(rec.definition, params,
                                                        self.config.base_dir))

    def rerun(self, run_id: str) -> dict:
        """Run a finished run's job again, with the same parameters; linked by rerun_of."""
        return self.runlog.rerun(run_id)

    def cancel(self, run_id: str, wait: float = 0.0) -> dict:
        """Cancel a queued run, or kill a running command's process group (any node); ``wait``
        seconds at most for a command this node runs to go."""
        return self.runner.cancel(run_id, wait)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the run history written so far is in the database (tests, shutdown)."""
        return self.history.flush(timeout)

    def prune(self) -> int:
        return self.store.retention.prune(self.config.keep_runs, self.config.keep_days,
                                          lambda: self.history.stopping,
                                          self.config.keep_audit_days)
