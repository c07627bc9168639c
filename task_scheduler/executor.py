"""Running one job: a python callable in this process or a command as a process group, with its
output captured and capped, a timeout, and cancellation. Knows nothing of the database."""

from __future__ import annotations

import contextvars
import dataclasses
import datetime as dt
import json
import logging
import os
import pickle
import selectors
import signal
import subprocess
import sys
import threading
import time
import traceback
from typing import Any, Optional

from .capture import RUN_LOG_FORMAT, _capture_routers
from .checks import resolve_callable
from .errors import InvalidJob, SchedulerError
from .forkserver import dumps
from .models import Run
from .output import RESULT_LIMIT, CappedOutput, SecretMask, result_text
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
        status, error = "failed", _error_text(exc)
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


def _error_text(exc: BaseException) -> str:
    """An exception of a python job as its run's error: the message, then the job's own frames
    (the first frame, the caller's, names the service's file)."""
    return f"{type(exc).__name__}: {exc}\n" + "".join(traceback.format_exception(
        type(exc), exc, exc.__traceback__.tb_next))


def run_command(argv: list, env: dict, cwd: str, timeout: Optional[float], limit: int,
                kill_grace: float, active: _ActiveRun) -> _Outcome:
    """Run a command in its own session (process group). On timeout or cancel the whole group
    gets TERM, then KILL after ``kill_grace``, and so do processes that left the group
    (``setsid``) but carry this run's TS_RUN_ID. Output is read until the group is gone."""
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, cwd=cwd, env=env, start_new_session=True)
    except OSError as exc:
        return _Outcome("failed", 127 if isinstance(exc, FileNotFoundError) else 126,
                        f"cannot start {argv[0]}: {exc.strerror or exc}")
    except (ValueError, TypeError) as exc:   # what validation lets through: one line, no trace
        return _Outcome("failed", 126, f"cannot start: {_clean(exc)}")
    code, timed_out = _watch_group(proc, {proc.stdout: active.out, proc.stderr: active.err},
                                   env.get("TS_RUN_ID"), timeout, kill_grace, active)
    return _group_outcome(code, timed_out, timeout, active)


def _watch_group(proc, pipes: dict, run_id: Optional[str], timeout: Optional[float],
                 kill_grace: float, active: _ActiveRun) -> tuple[Optional[int], bool]:
    """A started process group until it ends (a command, a worker): its pipes read into their
    sinks, ended on timeout or cancel. Returns (its exit code, whether it timed out)."""
    active.proc = proc
    if active.watch is not None:
        active.watch(proc.pid)
    if active.on_spawn is not None:
        active.on_spawn(proc.pid)
    if active.stop_reason:   # cancelled while starting
        kill_group(proc, kill_grace)
    reader = _PipeReader(pipes)
    timed_out = False
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        kill_group(proc, kill_grace)
        code = proc.wait()
    if timed_out or active.stop_reason:
        kill_escaped(run_id, kill_grace)
    note = _finish_output(reader, proc, kill_grace)
    if note:
        active.err.write(f"\n[task-scheduler: {note}]\n".encode())
    return code, timed_out


def _group_outcome(code: Optional[int], timed_out: bool, timeout: Optional[float],
                   active: _ActiveRun) -> _Outcome:
    status, code, error = _command_status(code, timed_out, active.stop_reason, timeout)
    out, err = active.out, active.err
    return _Outcome(status, code, error, out.text(), err.text(), out.truncated or err.truncated)


def run_isolated(server, spec: dict, timeout: Optional[float], kill_grace: float,
                 active: _ActiveRun) -> _Outcome:
    """A python job in a worker process forked by ``server`` (a ForkServer): cancel and timeout
    end its process group as a command's; its output is read live from its pipes; what it
    returned (JSON) or raised comes back on a pipe of its own (``worker_main``)."""
    try:
        proc = server.spawn(active.run.id, dumps(spec))
    except OSError as exc:
        return _Outcome("failed", error=f"cannot start a worker process: {_clean(exc)}")
    report = _Report()
    pipes = {proc.pipes["stdout"]: active.out, proc.pipes["stderr"]: active.err,
             proc.pipes["report"]: report}
    code, timed_out = _watch_group(proc, pipes, active.run.id, timeout, kill_grace, active)
    if proc.lost:
        return _Outcome("failed", error="the fork server ended while the worker ran; "
                                        "its worker was ended")
    outcome = _group_outcome(code, timed_out, timeout, active)
    said = report.decoded()
    if outcome.status == "failed" and code == WORKER_FAILED and said.get("error"):
        return dataclasses.replace(outcome, error=said["error"])
    if outcome.status == "succeeded":
        if "result" not in said:   # os._exit(0) in the job: it never returned
            return dataclasses.replace(outcome, status="failed", error=(
                "the worker process exited (code 0) before the function returned"))
        value = json.loads(said["result"]) if said["result"] is not None else None
        return dataclasses.replace(outcome, value=value, stderr=outcome.stderr + said["note"])
    return outcome


WORKER_FAILED = 1   # a worker's exit code when its function raised (or could not be imported)
REPORT_BYTES = RESULT_LIMIT + (1 << 20)   # a result at its limit, and an error's traceback


class _Report:
    """What a worker reports on its own pipe (a JSON object), kept up to REPORT_BYTES."""

    def __init__(self):
        self._data = bytearray()

    def write(self, data: bytes) -> None:
        self._data += data[:REPORT_BYTES - len(self._data)]

    def decoded(self) -> dict:
        try:
            said = json.loads(self._data.decode("utf-8", "replace"))
        except ValueError:   # cut off (killed while it wrote), or nothing
            return {}
        return said if isinstance(said, dict) else {}


def worker_main(run_id: str, payload: bytes, report: int) -> int:
    """A worker process (forked by the fork server): call the job's function as ``spec`` says,
    with the job's environment, and report on ``report`` what it returned (as JSON, refused
    as in-thread runs refuse it) or raised. Its stdout and stderr are the run's pipes already.
    Returns its exit code: 0, or WORKER_FAILED."""
    spec = pickle.loads(payload)
    os.environ.clear()
    os.environ.update(spec["env"])
    if spec["cwd"]:
        os.chdir(spec["cwd"])
    sys.stdout.reconfigure(line_buffering=True)   # a print shows while the run goes on
    sys.stderr.reconfigure(line_buffering=True)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(RUN_LOG_FORMAT))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(spec["log_level"])
    _current_run.set(RunContext(None, run_id, spec["job_id"], spec["scheduled_at"]))
    try:
        func = resolve_callable(spec["func"], spec["base_dir"])
        said = {"error": None}
    except InvalidJob as exc:
        said, func = {"error": f"func: {exc}"}, None
    if func is not None:
        said = _call_in_worker(func, spec["args"], spec["kwargs"])
    with os.fdopen(report, "w", encoding="utf-8") as fh:
        json.dump(said, fh)
    return WORKER_FAILED if said.get("error") else 0


def _call_in_worker(func, args: list, kwargs: dict) -> dict:
    try:
        value = func(*args, **kwargs)
    except BaseException as exc:   # SystemExit and KeyboardInterrupt too, as in a thread
        traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next)   # as python does
        return {"error": _error_text(exc)}
    result, note = result_text(value, SecretMask(()))
    return {"result": result, "note": note}


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
