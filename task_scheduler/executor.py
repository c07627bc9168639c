"""Running one job: a python callable in this process or a command as a process group, with its
output captured and capped, a timeout, and cancellation. Knows nothing of the database."""

from __future__ import annotations

import contextvars
import dataclasses
import datetime as dt
import logging
import os
import selectors
import signal
import subprocess
import threading
import time
import traceback
from typing import Any, Optional

from .capture import _capture_routers
from .errors import SchedulerError
from .models import Run
from .output import CappedOutput
from .processes import _command_status, _group_alive, _signal_group, kill_escaped, kill_group
from .text import _clean

log = logging.getLogger("task_scheduler")


@dataclasses.dataclass(frozen=True)
class RunContext:
    """What a python job may know of its run: ``current_run()`` inside the job."""

    service: Any
    run_id: str
    job_id: str
    scheduled_at: Optional[dt.datetime]


_current_run: contextvars.ContextVar = contextvars.ContextVar("task_scheduler_run", default=None)


def current_run() -> Optional[RunContext]:
    """The run of the python job calling this, or None outside a run."""
    return _current_run.get()


def execute_job(job_id: str) -> None:
    """The callable every APScheduler job names, so that no user callable is ever pickled
    into the job store. Nothing calls it: the leader's scheduler turns each fire into a
    queued run, and a worker on some node runs it (see _Scheduler and Runner)."""
    raise SchedulerError(f"job {job_id}: fires are queued as runs by task-scheduler's own "
                         f"scheduler; use SchedulerService.run_now() to run a job")


@dataclasses.dataclass
class _Outcome:
    status: str
    exit_code: Optional[int] = None
    error: Optional[str] = None
    stdout: str = ""
    stderr: str = ""
    truncated: bool = False
    value: Any = None   # what a python job returned (stored as the run's result)


@dataclasses.dataclass
class _ActiveRun:
    run: Run
    out: CappedOutput
    err: CappedOutput
    proc: Optional[subprocess.Popen] = None
    stop_reason: Optional[str] = None    # "cancelled" or "interrupted" once we end it
    stop_error: Optional[str] = None
    rescued: bool = False                # given up by the cluster: its end is not recorded
    flushed: tuple = (0, 0)              # output sizes last written to the database
    claimed: float = dataclasses.field(default_factory=time.monotonic)
    began: Optional[dt.datetime] = None  # when a worker took it up (claimed ahead: later)
    on_spawn: Any = None                 # told a command's pid (= its process group)
    watch: Any = None                    # told the process group (the cluster's fence watch)


def run_python(func, args: list, kwargs: dict, limit: int, out: Optional[CappedOutput] = None,
               err: Optional[CappedOutput] = None) -> _Outcome:
    """Call a python job in this thread with its output and log records captured (into ``out``
    and ``err``: readable while it runs); its log records reach the service log up to
    ``limit`` bytes. The outcome's ``value`` is what it returned."""
    out, err = out or CappedOutput(limit), err or CappedOutput(limit)
    stdout, stderr, handler = _capture_routers()
    budget, value = [limit, 0], None
    stdout.bind(out)
    stderr.bind(err)
    handler.bind(err, budget)
    try:
        value = func(*args, **kwargs)
        status, error = "succeeded", None
    except BaseException as exc:  # SystemExit and KeyboardInterrupt in a job are failures too
        status = "failed"
        # The job's own frames only: this function's frame names the service's file.
        error = f"{type(exc).__name__}: {exc}\n" + "".join(traceback.format_exception(
            type(exc), exc, exc.__traceback__.tb_next))
    finally:
        stdout.bind(None)
        stderr.bind(None)
        handler.bind(None)
    if budget[1]:
        log.warning("%s: %d bytes of its log records were not written to this log (limit %d "
                    "bytes per run); the run's stderr keeps their head and tail",
                    getattr(func, "__qualname__", func), budget[1], limit)
    return _Outcome(status, None, error, out.text(), err.text(), out.truncated or err.truncated,
                    value)


def run_command(argv: list, env: dict, cwd: str, timeout: Optional[float], limit: int,
                kill_grace: float, active: _ActiveRun) -> _Outcome:
    """Run a command in its own session (process group). On timeout or cancel the whole group
    gets TERM, then KILL after ``kill_grace``, and so do processes that left the group
    (``setsid``) but carry this run's TS_RUN_ID. Output is read until the group is gone."""
    out, err = active.out, active.err
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, cwd=cwd, env=env, start_new_session=True)
    except OSError as exc:
        return _Outcome("failed", 127 if isinstance(exc, FileNotFoundError) else 126,
                        f"cannot start {argv[0]}: {exc.strerror or exc}")
    except (ValueError, TypeError) as exc:   # what validation lets through: one line, no trace
        return _Outcome("failed", 126, f"cannot start: {_clean(exc)}")
    active.proc = proc
    if active.watch is not None:
        active.watch(proc.pid)
    if active.on_spawn is not None:
        active.on_spawn(proc.pid)
    if active.stop_reason:   # cancelled while starting
        kill_group(proc, kill_grace)
    reader = _PipeReader({proc.stdout: out, proc.stderr: err})
    timed_out = False
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        kill_group(proc, kill_grace)
        code = proc.wait()
    if timed_out or active.stop_reason:
        kill_escaped(env.get("TS_RUN_ID"), kill_grace)
    note = _finish_output(reader, proc, kill_grace)
    status, code, error = _command_status(code, timed_out, active.stop_reason, timeout)
    if note:
        err.write(f"\n[task-scheduler: {note}]\n".encode())
    return _Outcome(status, code, error, out.text(), err.text(), out.truncated or err.truncated)


class _PipeReader:
    """Reads a command's pipes from one thread, and can stop reading: a process that left the
    group may hold a pipe open long after the run is over."""

    def __init__(self, pipes: dict):
        self._selector = selectors.DefaultSelector()
        for pipe, sink in pipes.items():
            os.set_blocking(pipe.fileno(), False)
            self._selector.register(pipe, selectors.EVENT_READ, sink)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ts-pipes", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        try:
            while self._selector.get_map() and not self._stop.is_set():
                for key, _ in self._selector.select(timeout=0.1):
                    self._read(key)
        except (OSError, ValueError) as exc:
            log.debug("output pipes: %s", exc)
        finally:
            for key in list(self._selector.get_map().values()):
                self._selector.unregister(key.fileobj)
                key.fileobj.close()
            self._selector.close()

    def _read(self, key) -> None:
        try:
            data = os.read(key.fd, 65536)
        except BlockingIOError:
            return
        if data:
            key.data.write(data)
        else:
            self._selector.unregister(key.fileobj)
            key.fileobj.close()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the end of every pipe; True when all ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(1)


def _finish_output(reader: _PipeReader, proc: subprocess.Popen, grace: float) -> Optional[str]:
    """After the command ended: read what its pipes still bring. Children left in its group get
    ``grace``, then KILL; once the group is gone nothing more is waited for. Returns a note for
    the run's stderr when output was left unread."""
    if reader.join(0.05):
        return None
    deadline = time.monotonic() + grace
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        if reader.join(0.05):
            return None
    if _group_alive(proc.pid):
        _signal_group(proc.pid, signal.SIGKILL)
    if reader.join(0.2):   # what the group wrote before it went
        return None
    reader.stop()
    return ("a process that left the command's process group (setsid, a daemon) still holds "
            "its output; what it writes now is not captured")
