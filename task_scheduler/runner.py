"""The runner: the life of a run on this node (claim, execute, finish, retry, cancel), bounded by
its workers, with the fence watch holding what it runs to the cluster's lease. It receives its
collaborators (the store, the history writer, the job book, a clock, callables); it must not
hold the service nor call into the cluster or the scheduler."""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Optional

import sqlalchemy as sa

from .audit import AuditLog, current_actor, run_detail
from .checks import _job_env, _resolve_path, command_argv, declared_values, resolve_callable
from .config import Config, label_sets
from .errors import InvalidJob, JobConflict, RunNotFound
from .executor import (RunContext, _ActiveRun, _Outcome, _current_run, run_command,
                       run_isolated, run_python)
from .fence import Fencing
from .groupcommit import GroupCommit
from .forkserver import ForkServer
from .history import _db_text
from .loops import SupervisedLoop
from .workflow import graph_of, step_definition
from .models import ENDED_STATUSES, FINAL_STATUSES, JobDefinition, Run, run_to_dict
from .output import (MASK_REFRESH, MaskedOutput, SecretMask, _nul_note, notify_secrets,
                     result_text)
from .processes import end_processes, kill_group, run_processes
from .store import Admission
from .store.runs import _run_row
from .text import _clean
from .timeutil import _iso

if TYPE_CHECKING:
    from .book import JobBook
    from .history import HistoryWriter
    from .store import Store

log = logging.getLogger("task_scheduler")


OUTPUT_FLUSH = 0.4   # seconds between writes of running output: a line shows on any node in <1 s
CLAIM_AHEAD = 500       # runs a node claims beyond its workers, at most (see _Starter.capacity)


@dataclasses.dataclass(frozen=True)
class RunnerParts:
    """What the runner is given: the store, the history writer, the job book, the clock (the
    database's, naive UTC), new run ids, and what the notifier says of ended runs."""

    config: Config
    store: Store
    history: HistoryWriter
    book: JobBook
    now: Callable[[], dt.datetime]
    new_id: Callable[[], str]
    notes_for: Callable[..., list]              # (runs, previous=None) -> notice rows
    wants_previous: Callable[[str], bool]       # does the job's notify ask for "recovered"?
    secrets: Iterable[str] = ()                 # the service's own (read at each run)
    passed_env: dict = dataclasses.field(default_factory=dict)
    run_context: Callable[..., RunContext] = functools.partial(RunContext, None)
    # where python jobs with isolation: process run (started by their first run)
    forkserver: ForkServer = dataclasses.field(
        default_factory=lambda: ForkServer("task_scheduler.executor:worker_main"))
    audit: Optional[AuditLog] = None            # records who runs, reruns and cancels


class _RunTable:
    """The runs of this node in memory: those going on (``active``), those ended here whose
    end the history writer may not have committed yet (``recent``: reads must still find
    them), and the moving average of how long a run takes here."""

    def __init__(self) -> None:
        self.active: dict[str, _ActiveRun] = {}
        self.recent: collections.OrderedDict = collections.OrderedDict()
        self.lock = threading.Lock()
        self.stopping = False
        # Seconds a run here takes (a moving average), for the claim-ahead; until runs tell,
        # taken to be long: nothing is claimed ahead of free workers.
        self.typical = 10.0

    def remember(self, run: Run) -> None:
        with self.lock:
            self.recent[run.id] = run
            while len(self.recent) > 500:   # far more than one writer batch can hold back
                self.recent.popitem(last=False)

    def took(self, seconds: float) -> None:
        # Half-way each run: a burst of short runs at a fresh start claimed one run at a time
        # until ~25 had told (weight 0.2); one long run makes the node careful again at once.
        self.typical += (max(seconds, 0.0) - self.typical) * 0.5


class _Masks:
    """The secrets masked in a run's output: the service's, this job's notify targets' (as they
    are now) and every job's (as they were at most MASK_REFRESH seconds ago: the book is not
    walked for each run)."""

    def __init__(self, book: JobBook, secrets: Iterable[str]):
        self._book, self._secrets = book, secrets   # the service's list: read at each run
        self._every: tuple = (0.0, [])   # (monotonic refresh time, every job's secrets)
        self._masks: dict = {}

    def mask_for(self, job_id: str) -> SecretMask:
        now = time.monotonic()
        if now >= self._every[0]:
            values = [v for rec in list(self._book.records.values())
                      if rec.facts.notifies for v in notify_secrets(rec.definition.notify)]
            self._every = (now + MASK_REFRESH, values)
        rec = self._book.get(job_id)
        own = notify_secrets(rec.definition.notify) if rec is not None and rec.facts.notifies \
            else []
        key = frozenset([*self._secrets, *self._every[1], *own])
        if key not in self._masks:
            if len(self._masks) > 64:
                self._masks.clear()
            self._masks[key] = SecretMask(key)
        return self._masks[key]


class _Finisher:
    """The end of a run: recorded through the history writer (with its notifications), kept in
    memory until written, and its retry queued. On PostgreSQL a retry is held until its run's
    end is committed: another node's claim would count the run as still going
    (max_instances) and skip the retry. Retries the database refused wait there too."""

    def __init__(self, parts: RunnerParts, runs: _RunTable, masks: _Masks, fencing: Fencing,
                 wake: Callable[[], None], backlog: Callable[[], bool]):
        self._p, self._runs, self._masks, self._fencing, self._wake, self._backlog = \
            parts, runs, masks, fencing, wake, backlog
        self.held: list = []   # (retry row, id of the run whose end it waits for)

    def finish(self, active: _ActiveRun, outcome: _Outcome) -> None:
        run = active.run
        with self._runs.lock:
            if self._runs.active.pop(run.id, None) is None:
                return   # already recorded (the service stopped while this run went on)
        if active.began is None and self._runs.stopping and outcome.status == "interrupted":
            # Claimed but never started: back to the queue (the next start, another node).
            self._p.history.update(run.id, node=None, heartbeat_at=None)
            return
        if active.proc is not None:
            self._fencing.release(active.proc.pid)
        outcome = self._as_stopped(active, outcome)
        fields = self._end_fields(active, outcome)
        run.update(**fields)
        if not active.rescued:
            previous = self._previous(run) if outcome.status == "succeeded" and \
                self._p.wants_previous(run.job_id) else None
            self._p.history.update(run.id, notes=self._p.notes_for([run.to_row()], previous),
                                   **fields)
        self._runs.remember(run)
        level = logging.INFO if outcome.status == "succeeded" else logging.WARNING
        log.log(level, "run %s of %s: %s%s", run.id, run.job_id, outcome.status,
                f" ({_clean(Exception(fields['error']))})" if outcome.error else "")
        if not active.rescued and outcome.status in ("failed", "timeout", "interrupted"):
            self.retry(run)   # interrupted: by this node's stop or its self-fencing
            self._wake()
        elif self._backlog():   # a worker is free for what the last claim left queued
            self._wake()

    def _as_stopped(self, active: _ActiveRun, outcome: _Outcome) -> _Outcome:
        """The outcome of a run this node ended (stop, self-fencing) says so."""
        if active.stop_reason is None and outcome.status == "failed" and \
                active.proc is not None and self._fencing.due():
            # Killed by the fence watch while this process was paused (SIGSTOP): say so.
            active.stop_reason, active.stop_error = "interrupted", self._fencing.reason()
        if active.stop_reason == "interrupted" and outcome.status != "interrupted":
            outcome = dataclasses.replace(outcome, status="interrupted",
                                          error=active.stop_error or outcome.error)
        return outcome

    def _end_fields(self, active: _ActiveRun, outcome: _Outcome) -> dict:
        mask = self._masks.mask_for(active.run.job_id)
        result, note = result_text(outcome.value, mask)
        fields = dict(status=outcome.status, finished_at=self._p.now(),
                      exit_code=outcome.exit_code, stdout=outcome.stdout,
                      error=mask.text(outcome.error), result=result,
                      stderr=outcome.stderr + _nul_note(active.out, active.err) + note,
                      truncated=outcome.truncated)
        fields = _db_text(fields)   # as stored: the API, notifications and the row agree
        fields["started_at"] = active.began   # None: ended before a worker took it up
        if active.began is not None:
            self._runs.took((fields["finished_at"] - active.began).total_seconds())
        return fields

    def _previous(self, run: Run) -> Optional[str]:
        """How the job's run before this one ended: the later of the table's answer and the
        runs ended here whose end the history writer has not written yet."""
        found = self._p.store.queries.previous_outcome(run.job_id, run.id)
        best = tuple(found) if found else ("", None)
        with self._runs.lock:
            for other in self._runs.recent.values():
                if other.job_id == run.job_id and best[0] < other.id < run.id \
                        and other.status in ENDED_STATUSES:
                    best = (other.id, other.status)
        return best[1]

    def retry(self, run: Run) -> None:
        """Queue the next attempt of a failed run (durable: it survives a restart)."""
        rec = self._p.book.get(run.job_id)
        spec = rec.definition.retries if rec else None
        if spec is None or run.attempt > spec.max or run.step_id or rec.definition.steps:
            return   # a workflow's steps retry as their end is recorded (store/workflows.py)
        delay = spec.delay * spec.backoff ** (run.attempt - 1)
        retry = {"id": self._p.new_id(), "job_id": run.job_id, "trigger": "retry",
                 "attempt": run.attempt + 1, "scheduled_at": run.scheduled_at,
                 "due_at": self._p.now() + dt.timedelta(seconds=delay),
                 "status": "queued", "run_on": run.run_on or "", "params": run.params}
        if self._p.store.clustered:
            with self._runs.lock:
                self.held.append((retry, run.id))
            self.queue_held()
        else:   # one node: its claims leave out runs whose end is not written yet
            try:
                self._p.store.runs.queue_runs([retry])
            except sa.exc.DBAPIError as exc:
                log.error("run %s of %s: could not queue its retry: %s", run.id,
                          run.job_id, _clean(exc))
                return
        log.info("run %s of %s will be retried in %ss (attempt %d of %d)", run.id,
                 run.job_id, delay, retry["attempt"], spec.max + 1)

    def after_rescue(self, rows: list) -> None:
        """Runs the leader found orphaned (their node went silent): tell, retry where allowed."""
        self._p.store.notes.queue_notes(self._p.notes_for([dict(r._mapping) for r in rows]))
        for row in rows:
            run = Run.from_row(row)
            log.warning("run %s of %s: %s", run.id, run.job_id, run.error)
            self.retry(run)

    def workflows_ended(self, rows: list) -> None:
        """Workflow runs the end of a step ended (after its commit): their notifications."""
        runs = [dict(r._mapping) for r in rows]
        for run in runs:
            log.log(logging.INFO if run["status"] == "succeeded" else logging.WARNING,
                    "workflow run %s of %s: %s", run["id"], run["job_id"], run["status"])
        self._p.store.notes.queue_notes(self._p.notes_for(runs))

    def queue_held(self) -> None:
        """Queue the held retries whose run's end is committed (the unique fire key drops one
        that the leader's rescue queued already)."""
        unsettled = self._p.history.unsettled_ids()
        with self._runs.lock:
            ready = [retry for retry, after in self.held if after not in unsettled]
            self.held = [(retry, after) for retry, after in self.held if after in unsettled]
        if not ready:
            return
        try:
            self._p.store.runs.queue_runs(ready)
        except sa.exc.DBAPIError as exc:
            log.warning("could not queue %d retries yet (%s); trying again", len(ready),
                        _clean(exc))
            with self._runs.lock:
                self.held.extend((retry, None) for retry in ready)


class _Starter:
    """Claiming and executing: what this node's free workers (and the claim-ahead) can start,
    taken from the queue or from the leader's fresh fires, run in the thread pool."""

    def __init__(self, parts: RunnerParts, runs: _RunTable, masks: _Masks, fencing: Fencing,
                 finish: Callable[[_ActiveRun, _Outcome], None]):
        self._p, self._runs, self._masks, self._fencing, self._finish = \
            parts, runs, masks, fencing, finish
        self.config = parts.config
        self.pool = concurrent.futures.ThreadPoolExecutor(self.config.max_workers, "ts-run")
        self._starts = GroupCommit(self._write_starts)
        self._labels_ok = label_sets(self.config.labels)
        self.backlog = True   # the queue may hold runs no claim has looked at yet

    def capacity(self) -> int:
        """How many runs this node holds at once: its workers, and as many more as they
        would start within about a second at the typical run time here. Short runs are so
        claimed a batch per transaction, not one per free worker (a burst of 200 no-op runs:
        2 claims, not 20); long runs are claimed one per free worker, so that another node
        can start what this one cannot yet. Claimed-ahead runs say ``queued`` (with this
        node) while they wait; a worker makes them ``running``, with its ``started_at``."""
        workers = self.config.max_workers
        return workers + min(CLAIM_AHEAD, int(workers * 1.0 / max(self._runs.typical, 0.002)))

    def _free(self) -> int:
        if self._runs.stopping or self._fencing.due():   # fenced: it would end them
            return 0
        return self.capacity() - len(self._runs.active)

    def _worth_a_claim(self, free: int) -> bool:
        """Claim when a worker would otherwise idle, or when half the claim-ahead is free:
        topping the claimed-ahead runs up as each batch ended, a burst of 1,000 took ~90
        claims of ~10 runs each (each a write transaction), not three."""
        ahead = self.capacity() - self.config.max_workers
        return free > 0 and (len(self._runs.active) < self.config.max_workers or
                             free >= max(1, ahead // 2))

    def claim_while_free(self) -> None:
        """Claim while workers are free and the queue gives what was asked. ``backlog`` says
        whether the queue may hold more than the last claim took: a run's end wakes the claim
        only then. Waking it at every end, 200 runs a second made 200 claims that found
        nothing, each a write transaction the workers' starts waited behind."""
        while self._worth_a_claim(free := self._free()):
            asked = min(free, 200)
            started, ended = self._p.store.runs.claim(self._admission(asked))
            self.take(started, ended)
            self._queue_notes(ended)
            self.backlog = len(started) + len(ended) >= asked
            if len(started) + len(ended) < free:
                return
        self.backlog = True   # no worker free: what is queued waits for one

    def admission_for(self, fires: list[dict]) -> Optional[Admission]:
        """Which of the leader's fresh fires this node's free workers may take in its wakeup:
        values built before the wakeup's transaction (None: none)."""
        free = self._free()
        return self._admission(free, {f["job_id"] for f in fires}) if free > 0 else None

    def _admission(self, limit: int, job_ids: Optional[set] = None) -> Admission:
        """What a claim may start: each job's (max_instances, misfire_grace_time) as the book
        says now (all jobs, or ``job_ids``), taken before the transaction: the store decides
        from these values, never by calling back here."""
        limits = self._p.book.limits()
        if job_ids is not None:
            limits = {i: limits[i] for i in job_ids if i in limits}
        return Admission(tuple(self._labels_ok), limit, limits,
                         frozenset(self._p.history.unsettled_ids()))

    def _queue_notes(self, ended: list) -> None:
        """The notifications of runs a claim ended, after its commit."""
        if not ended:
            return
        try:
            self._p.store.notes.queue_notes(self._p.notes_for(ended))
        except sa.exc.DBAPIError as exc:
            log.error("could not queue the notifications of %d runs ended unstarted: %s",
                      len(ended), _clean(exc))

    def take(self, started: list, ended: list) -> None:
        """Start claimed runs (store rows) in the pool; remember the ones the claim ended."""
        for run in map(Run.from_row, ended):
            self._runs.remember(run)
            log.warning("run %s of %s %s: %s", run.id, run.job_id, run.status,
                        run.error)
        for run in map(Run.from_row, started):
            mask = self._masks.mask_for(run.job_id)
            active = _ActiveRun(run, MaskedOutput(self.config.output_limit, mask),
                                MaskedOutput(self.config.output_limit, mask))
            active.on_spawn = functools.partial(self._spawned, run.id)
            active.watch = self._fencing.watch and self._fencing.watch.add
            with self._runs.lock:
                self._runs.active[run.id] = active
            try:
                self.pool.submit(self._execute, active)
            except RuntimeError:   # the service stopped between the claim and now
                self._finish(active, _Outcome("interrupted", error="service stopped"))

    def _spawned(self, run_id: str, pid: int) -> None:
        """A command started: its row keeps the process group, to be found after a crash."""
        self._p.history.update(run_id, pid=pid)

    def flush_output(self) -> None:
        """Output of running runs reaches the database while it changes, a batch at a time:
        any node can show it, and a crash keeps what was written."""
        for active in list(self._runs.active.values()):
            written = (active.out.total, active.err.total)
            if written != active.flushed:
                active.flushed = written
                self._p.history.update(active.run.id, stdout=active.out.text(),
                                       stderr=active.err.text(),
                                       truncated=active.out.truncated or active.err.truncated)

    def _execute(self, active: _ActiveRun) -> None:
        run = active.run
        if active.stop_reason is not None:   # cancelled while it waited for a worker
            run.started_at = None
            self._finish(active, _Outcome(active.stop_reason, error=active.stop_error or
                                          "cancelled before it started"))
            return
        rec = self._p.book.get(run.job_id)
        if rec is not None and rec.definition.steps is not None and run.step_id is None:
            self._start_workflow(active, rec.definition)
            return
        # Only now does the run read running (a claimed run waits for a worker as queued),
        # and its start time is when its code starts: after the start is committed.
        if not self._record_start(run):
            with self._runs.lock:
                self._runs.active.pop(run.id, None)
            return
        active.began = self._p.now()
        run.update(status="running", started_at=active.began)
        token = _current_run.set(self._p.run_context(run.id, run.job_id,
                                                     run.scheduled_at))
        try:
            outcome = self._run_job(rec.definition, active) if rec is not None else \
                _Outcome("cancelled", error="the job was removed before it started")
        except Exception as exc:  # our own failure: record it rather than lose the run; the
            # traceback (the service's files) goes to the service log only
            log.exception("run %s of %s failed inside task-scheduler", run.id, run.job_id)
            outcome = _Outcome("failed", error=f"task-scheduler could not run it: "
                                                f"{type(exc).__name__}: {_clean(exc)}")
        finally:
            _current_run.reset(token)
        try:
            self._finish(active, outcome)
        except Exception:   # a pool's worker would swallow it: the run would stay running
            log.exception("run %s of %s: its end could not be recorded", run.id, run.job_id)

    def _record_start(self, run: Run) -> bool:
        """The start, committed before the code starts. A node killed after it leaves a run
        that reads running, which the rescue interrupts and its retries follow; were the start
        still unwritten, the run would read claimed and never started, and the rescue would
        queue it to run again from the beginning. The workers waiting at once share one
        transaction (``GroupCommit``: through the history writer, starts waited behind batches
        of ends; one transaction each, 200 starts at once took 200 commits). False: the run is
        no longer this node's (rescued or cancelled while this node was silent)."""
        try:
            if self._starts.submit(run.id):
                return True
        except Exception as exc:   # an outage: run it, its start goes with its end
            log.warning("run %s of %s: its start could not be written (%s); running it anyway",
                        run.id, run.job_id, _clean(exc))
            self._p.history.update(run.id, status="running", started_at=self._p.now())
            return True
        log.info("run %s of %s: no longer this node's to start (rescued or cancelled)",
                 run.id, run.job_id)
        return False

    def _write_starts(self, run_ids: list[str]) -> list[bool]:
        return self._p.store.starts.mark(run_ids, self._p.now())

    def _start_workflow(self, active: _ActiveRun, defn: JobDefinition) -> None:
        """A workflow run claimed here: its first steps are queued for any node (the store
        decides the rest at each step's end); it holds no worker."""
        run = active.run
        with self._runs.lock:
            self._runs.active.pop(run.id, None)
        try:
            if self._p.store.workflows.start(run.id, graph_of(defn)):
                log.info("run %s of %s: workflow started", run.id, run.job_id)
        except Exception:
            log.exception("run %s of %s: could not start the workflow; back to the queue",
                          run.id, run.job_id)
            self._p.history.update(run.id, node=None, heartbeat_at=None)

    def _run_job(self, defn: JobDefinition, active: _ActiveRun) -> _Outcome:
        if active.run.step_id is not None:
            step = step_definition(defn, active.run.step_id)
            if step is None:
                return _Outcome("failed", error=f"step {active.run.step_id!r} is no longer "
                                                f"in job {defn.id!r}")
            defn = step
        params = declared_values(defn, json.loads(active.run.params or "null") or {})
        limit, base_dir = self.config.output_limit, self.config.base_dir
        if defn.kind == "python" and defn.isolation == "process":
            return self._run_isolated(defn, active, params)
        if defn.kind == "python":
            try:
                func = resolve_callable(defn.func, base_dir, seen_within=1.0)
            except InvalidJob as exc:
                return _Outcome("failed", error=f"func: {exc}")
            return _settled(active, run_python(func, params.get("args", defn.args),
                                               {**defn.kwargs, **params.get("kwargs", {})},
                                               limit, active.out, active.err))
        env = self._env(defn, active.run, params)
        cwd = _resolve_path(defn.cwd, base_dir) if defn.cwd else base_dir
        argv = command_argv(defn.model_copy(update={"args": params.get("args", defn.args)}),
                            base_dir)
        return _settled(active, run_command(argv, env, cwd, defn.timeout, limit,
                                            self.config.kill_grace, active))

    def _env(self, defn: JobDefinition, run: Run, params: dict) -> dict:
        """The environment of a run's process (a command, a python job's worker)."""
        return {**_job_env(defn, self._p.passed_env), **params.get("env", {}),
                "TS_JOB_ID": defn.id, "TS_RUN_ID": run.id,
                "TS_SCHEDULED_AT": _iso(run.scheduled_at) or "",
                **({"TS_STEP_ID": run.step_id, "TS_WORKFLOW_RUN": run.parent_run}
                   if run.step_id else {})}

    def _run_isolated(self, defn: JobDefinition, active: _ActiveRun, params: dict) -> _Outcome:
        """A python job with ``isolation: process``: in a worker forked by the fork server."""
        base_dir = self.config.base_dir
        spec = {"func": defn.func, "base_dir": base_dir, "job_id": defn.id,
                "args": params.get("args", defn.args),
                "kwargs": {**defn.kwargs, **params.get("kwargs", {})},
                "env": self._env(defn, active.run, params), "scheduled_at":
                active.run.scheduled_at, "log_level": logging.getLogger().getEffectiveLevel(),
                "cwd": _resolve_path(defn.cwd, base_dir) if defn.cwd else None}
        return _settled(active, run_isolated(self._p.forkserver, spec, defn.timeout,
                                             self.config.kill_grace, active))


class Runner:
    """Runs queued runs on this node: the leader's fires, manual runs and retries all take this
    one path. Its starter claims what its free workers can start and runs it in its thread
    pool, its finisher writes the end through the history writer and queues the retry; it
    queues manual runs, ends runs asked to stop (cancel, self-fencing, rescue) and stops."""

    def __init__(self, parts: RunnerParts):
        self._p, self.config = parts, parts.config
        self.runs = _RunTable()
        self.active, self.recent = self.runs.active, self.runs.recent
        self._hurry = threading.Event()
        self.fencing = Fencing(parts.store.node, self.config.node_timeout)
        self._masks = _Masks(parts.book, parts.secrets)
        self.mask_for = self._masks.mask_for
        self._finisher = _Finisher(parts, self.runs, self._masks, self.fencing, self.wake,
                                   lambda: self._starter.backlog)
        self._starter = _Starter(parts, self.runs, self._masks, self.fencing,
                                 self._finisher.finish)
        self.finish, self.take = self._finisher.finish, self._starter.take
        self.admission_for, self.after_rescue = (self._starter.admission_for,
                                                  self._finisher.after_rescue)
        self.queue_held = self._finisher.queue_held
        parts.history.settled = self._finisher.workflows_ended
        self._loop = SupervisedLoop("runner", "ts-runner", self._claim,
                                    lambda: self.config.queue_poll)
        self._flusher = SupervisedLoop("output", "ts-output", self._starter.flush_output,
                                       lambda: OUTPUT_FLUSH)

    def start(self) -> None:
        if self._p.store.clustered:   # other nodes may give this node's runs up
            self.fencing.start()
            self._fenced_until(time.monotonic())
        self._loop.start()
        self._flusher.start()

    def wake(self, _payload: Any = None) -> None:
        self._loop.wake()

    def hurry(self) -> None:
        self._hurry.set()

    def _claim(self) -> None:
        self.queue_held()
        self._starter.claim_while_free()

    def run_now(self, job_id: str, params: Optional[dict] = None, rerun_of: Optional[str] = None
                ) -> dict:
        """Queue a manual run of the job (409 while max_instances of it go on)."""
        rec = self._p.book.require(job_id)
        if rec.watched:
            raise JobConflict(f"job {job_id!r} is a heartbeat job: its work runs elsewhere and "
                              f"reports with POST /api/jobs/{job_id}/ping; nothing runs here")
        limit = rec.facts.max_instances
        if self._p.store.runs.active_count(job_id, self._p.history.unsettled_ids()) >= limit:
            raise JobConflict(f"job {job_id!r} is already running (max_instances={limit})")
        now = self._p.now()
        run = {"id": self._p.new_id(), "job_id": job_id, "trigger": "manual", "attempt": 1,
               "scheduled_at": now, "due_at": now, "status": "queued", "run_on": rec.run_on,
               "params": json.dumps(params) if params else None, "rerun_of": rerun_of,
               "started_by": current_actor().name}
        with self._audited("run.rerun" if rerun_of else "run.now", ("job", job_id),
                           {"run": run["id"], "rerun_of": rerun_of, **run_detail(params)}):
            self._p.store.runs.queue_runs([run])
        self.wake()
        return run_to_dict(_run_row(run))

    def _audited(self, action: str, obj: tuple, detail: Optional[dict] = None):
        audit = self._p.audit
        return contextlib.nullcontext() if audit is None else audit.attached(action, obj, detail)

    def end_leftovers(self, clustered: bool) -> None:
        """At start-up, before any run starts: processes of runs this node left (a crash, a
        ``kill -9``) still run and carry TS_RUN_ID. End them (TERM their groups, KILL after
        the grace), so that they never run beside new runs nor past max_instances, and say so
        in each run. On PostgreSQL only this node's runs (by node id): another node's
        processes on this host are its own."""
        found = run_processes()
        if not found:
            return
        store = self._p.store
        for row in store.liveness.runs_of_processes(sorted(found)):
            if clustered and row.node != store.node:
                continue
            groups = end_processes(found[row.id], self.config.kill_grace)
            shown = ", ".join(map(str, groups or found[row.id]))
            note = (f"; its process group {shown} was still running and was ended at the "
                    f"restart of {store.node}")
            log.warning("run %s of %s: %d processes left by the service's last life were "
                        "still running (group %s); ended them", row.id, row.job_id,
                        len(found[row.id]), shown)
            store.runs.add_to_error(row.id, note)

    # ending runs from outside their worker: cancel, rescue, self-fencing

    def after_heartbeat(self, alive: set, cancels: set, since: float) -> None:
        """Runs of this node the database no longer shows running were rescued while this node
        was silent (stopped, cut off): end them here, or they would run twice."""
        self._fenced_until(since)
        self.queue_held()
        for run_id, active in list(self.active.items()):
            if run_id in cancels:
                self._stop_asked(active)
            elif run_id not in alive and active.claimed < since:
                active.rescued = True
                self._stop(active, "interrupted", "interrupted: this node was silent too long "
                           "and the run was given up (and retried) elsewhere")

    def _stop_asked(self, active: _ActiveRun) -> None:
        """A cancel asked by another node (a run, or a step of a cancelled workflow run)."""
        try:
            self._stop(active, "cancelled")
        except JobConflict:   # a python step in a thread: it ends when it returns
            log.info("run %s: cancel asked, but a python job in a thread runs on until it "
                     "returns", active.run.id)

    def _fenced_until(self, heartbeat_sent: float) -> None:
        if self.fencing.due():      # back after the deadline (a pause): runs the watch
            self.fence_if_due()     # ended are marked before it moves on
        self.fencing.heard(heartbeat_sent)

    def fence_if_due(self) -> None:
        """Self-fencing: this node has not heart-beaten its runs for FENCE_AT of node_timeout
        (the database is unreachable from here, or this process was paused), so the leader may
        soon give them up and retry them elsewhere. End its command runs now, before that can
        happen; their end (and why) is written when the database answers again. A python
        job's thread cannot be ended: it goes on (docs/cluster.md)."""
        if not self.fencing.due():
            return
        ending = [a for a in list(self.active.values()) if a.stop_reason is None
                  and (a.proc is not None or a.began is None)]
        if ending:
            log.warning("node %s: no heartbeat got through for %.0fs; ending its %d command "
                        "runs before another node may give them up (self-fencing)",
                        self._p.store.node, self.fencing.silent(), len(ending))
        for active in ending:
            self._stop(active, "interrupted", self.fencing.reason())

    def cancel(self, run_id: str, wait: float = 0.0) -> dict:
        """Cancel a queued run, or end a running command (on whichever node runs it). With
        ``wait``, give a command this node is ending that long to go (most end within
        milliseconds of TERM); a run already being ended is not waited for again."""
        active = self.active.get(run_id)
        again = active is not None and active.stop_reason is not None
        with self._audited("run.cancel", ("run", run_id)):
            run = self._cancel(run_id)
        deadline = time.monotonic() + (0 if again else wait)
        while run_id in self.active and time.monotonic() < deadline:
            time.sleep(0.01)
        return run

    def _cancel(self, run_id: str) -> dict:
        store = self._p.store
        asked = store.workflows.cancel(run_id)
        if asked is not None:   # a workflow run: its steps stop here or on their nodes
            for step_run in asked:
                if step_run in self.active:
                    self._stop_asked(self.active[step_run])
            log.info("workflow run %s cancelled", run_id)
            return run_to_dict(store.queries.run(run_id))
        for _ in range(3):   # a queued run may be claimed meanwhile: look again
            active = self.active.get(run_id)
            if active is not None:
                self._stop(active, "cancelled")
                waiting = active.began is None   # claimed ahead: no worker will run it now
                return run_to_dict(dataclasses.replace(active.run, status="cancelled",
                                                       started_at=None)
                                   if waiting else active.run)
            row = store.queries.run(run_id)
            if row is None:
                raise RunNotFound(f"run {run_id!r} does not exist")
            if row.status == "queued" and store.runs.cancel_queued(run_id):
                log.info("run %s of %s cancelled before it started", run_id, row.job_id)
                return run_to_dict(store.queries.run(run_id))
            if row.status in ("queued", "running") and \
                    row.node not in (None, store.node):   # held by another node
                if row.status == "running":
                    self._refuse_python(row.job_id, run_id)
                store.runs.request_cancel(run_id)
                log.info("run %s of %s: cancel asked of node %s", run_id, row.job_id, row.node)
                return run_to_dict(row)
            if row.status in FINAL_STATUSES:
                break
        raise JobConflict(f"run {run_id} is not running (status {row.status})")

    def _stop(self, active: _ActiveRun, reason: str, error: Optional[str] = None) -> None:
        if reason == "cancelled" and active.began is not None:
            self._refuse_python(active.run.job_id, active.run.id)
        ending = active.stop_reason is not None   # a killer is at work already
        active.stop_reason, active.stop_error = reason, error
        if active.proc is not None and not ending:
            threading.Thread(target=kill_group, args=(active.proc, self.config.kill_grace),
                             daemon=True).start()
        log.info("run %s of %s: %s", active.run.id, active.run.job_id,
                 "cancelled" if reason == "cancelled" else "being ended")

    def _refuse_python(self, job_id: str, run_id: str) -> None:
        rec = self._p.book.get(job_id)
        if rec is not None and rec.definition.kind == "python" and \
                rec.definition.isolation == "thread":
            raise JobConflict(f"run {run_id} is a python job run in a thread, which cannot be "
                              f"stopped from outside (make the job return, or give it "
                              f"isolation: process to get timeout and cancel)")

    # stopping

    _stop_by: Optional[float] = None   # monotonic time by which stop() is done, once it began

    def stop(self, grace: float) -> None:
        """Claim nothing more; give running runs ``grace`` seconds (saying what is awaited);
        then end commands (TERM, KILL) and record what is left as interrupted."""
        self.runs.stopping = True
        self._flusher.stop(0)
        self._loop.stop(5)
        # what the log counts down: the time left for the whole stop, TERM and KILL included
        self._stop_by = time.monotonic() + grace + self.config.kill_grace + 1
        self._wait(grace)
        for active in list(self.active.values()):
            if active.proc is not None and active.proc.poll() is None:
                active.stop_reason = "interrupted"
                grace_kill = 0 if self._hurry.is_set() else self.config.kill_grace
                threading.Thread(target=kill_group, args=(active.proc, grace_kill),
                                 daemon=True).start()
        self._wait(0.5 if self._hurry.is_set() else self.config.kill_grace + 1)
        for active in list(self.active.values()):
            self.finish(active, _Outcome("interrupted", error="service stopped"))
        self._starter.pool.shutdown(wait=False, cancel_futures=True)
        self._p.store.starts.close(final=True)
        self._p.forkserver.close(self.config.kill_grace)
        if self._finisher.held and self._p.history.flush(10):
            self.queue_held()   # their runs' ends are written: other nodes may take them
        self.fencing.close()

    def _wait(self, seconds: float) -> None:
        deadline, next_note = time.monotonic() + seconds, time.monotonic()
        while self.active and time.monotonic() < deadline and not self._hurry.is_set():
            if time.monotonic() >= next_note and seconds > 1:
                next_note = time.monotonic() + 5
                left = ", ".join(f"{a.run.job_id} ({a.run.id}, "
                                 f"{time.monotonic() - a.claimed:.0f}s)"
                                 for a in list(self.active.values())[:5])
                log.info("stopping: waiting up to %.0fs for %d running runs: %s",
                         max((self._stop_by or deadline) - time.monotonic(), 0),
                         len(self.active), left)
            self._hurry.wait(0.05)


def _settled(active: _ActiveRun, outcome: _Outcome) -> _Outcome:
    """The outcome with the run's output as it ends: masked to the last byte."""
    if not isinstance(active.out, MaskedOutput):
        return outcome
    return dataclasses.replace(outcome, stdout=active.out.settle(), stderr=active.err.settle())
