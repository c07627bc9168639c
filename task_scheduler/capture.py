"""Output capture for python jobs: per-thread routers for sys.stdout/sys.stderr and a logging
handler, so what a job prints or logs lands in its own run, and threads no run owns are held
to a budget (_Spill). Process-wide by nature: installed once, transparent to everything else."""

from __future__ import annotations

import contextvars
import io
import logging
import sys
import threading
import time
from typing import Optional

from .output import CappedOutput

log = logging.getLogger("task_scheduler")


class _ThreadRouter(io.TextIOBase):
    """Stands in for sys.stdout/sys.stderr: writes from a thread bound to a run go to that run's
    capture (threads a run starts are bound to it too: ``_start_bound``), everything else to
    the real stream, up to SPILL_BYTES a minute (``_Spill``)."""

    def __init__(self, original):
        self._original = original
        self._local = threading.local()
        self._spill = _Spill(original)

    def bind(self, sink: Optional[CappedOutput]) -> None:
        self._local.sink = sink

    def bound(self) -> Optional[CappedOutput]:
        return getattr(self._local, "sink", None)

    def write(self, text: str) -> int:
        sink = getattr(self._local, "sink", None)
        if sink is None:
            return self._spill.write(text)
        sink.write(text.encode("utf-8", "replace"))
        return len(text)

    def flush(self) -> None:
        if getattr(self._local, "sink", None) is None:
            self._original.flush()

    def __getattr__(self, name):
        return getattr(self._original, name)


SPILL_BYTES = 256 << 10   # characters a minute that no run owns may write to the real stream:
SPILL_WINDOW = 60.0       # the service's own prints pass, a thread printing in a loop does not


class _Spill:
    """Writes no run owns (a thread started outside any run, at an import): passed to the real
    stream up to SPILL_BYTES per SPILL_WINDOW; past that dropped, and the count logged when the
    window ends."""

    def __init__(self, original):
        self._original = original
        self._lock = threading.Lock()
        self._window_end, self._left, self._dropped = 0.0, SPILL_BYTES, 0

    def write(self, text: str) -> int:
        with self._lock:
            now, dropped = time.monotonic(), 0
            if now >= self._window_end:
                dropped, self._dropped = self._dropped, 0
                self._window_end, self._left = now + SPILL_WINDOW, SPILL_BYTES
            passed = len(text) <= self._left
            self._left -= len(text) if passed else 0
            first = not passed and not self._dropped
            self._dropped += 0 if passed else len(text)
        # Outside the lock: the log may write to this very stream.
        where = getattr(self._original, "name", "the console")
        if first:
            log.warning("output to %s that no run owns (a thread started outside any run) "
                        "passes at most %d characters a minute; the rest of this minute's is "
                        "dropped and counted", where, SPILL_BYTES)
        if dropped:
            log.warning("%d characters written to %s outside any run were dropped in the last "
                        "minute", dropped, where)
        return self._original.write(text) if passed else len(text)


def _start_bound(thread: threading.Thread, *args, **kwargs):
    """``threading.Thread.start`` while python jobs are captured: a thread started by a run
    is bound to that run (its prints, its log records, ``current_run()``)."""
    stdout, stderr, handler = sys.stdout, sys.stderr, _installed[0]
    if isinstance(stdout, _ThreadRouter) and isinstance(stderr, _ThreadRouter) and \
            handler is not None and stdout.bound() is not None:
        binding = (stdout.bound(), stderr.bound(), *handler.bound())
        context, run = contextvars.copy_context(), thread.run

        def bound_run():
            stdout.bind(binding[0])
            stderr.bind(binding[1])
            handler.bind(binding[2], binding[3])
            try:
                context.run(run)
            finally:
                stdout.bind(None)
                stderr.bind(None)
                handler.bind(None)
        thread.run = bound_run
    return _thread_start(thread, *args, **kwargs)


_thread_start = threading.Thread.start


RUN_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"   # a run's log records


class _RunLogHandler(logging.Handler):
    """Log records emitted by a thread that runs a python job go to that run's stderr; the
    same records reach the service's own log handlers only up to a budget per run (a job that
    logs 100 MB must not write 100 MB to the service log)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self._local = threading.local()
        self.setFormatter(logging.Formatter(RUN_LOG_FORMAT))

    def bind(self, sink: Optional[CappedOutput], budget: Optional[list] = None) -> None:
        self._local.sink, self._local.budget = sink, budget
        if budget is not None:   # handlers added since the last run get the budget check too
            for handler in logging.getLogger().handlers:
                if handler is not self and self.budget_filter not in handler.filters:
                    handler.addFilter(self.budget_filter)

    def bound(self) -> tuple:
        return getattr(self._local, "sink", None), getattr(self._local, "budget", None)

    def emit(self, record: logging.LogRecord) -> None:
        sink = getattr(self._local, "sink", None)
        if sink is not None:
            sink.write((self.format(record) + "\n").encode("utf-8", "replace"))

    def budget_filter(self, record: logging.LogRecord) -> bool:
        """[bytes left, bytes dropped] of the run bound to this thread; pass when unbound."""
        budget = getattr(self._local, "budget", None)
        if budget is None:
            return True
        decided = getattr(record, "_ts_pass", None)   # one record meets several handlers
        if decided is not None:
            return decided
        size = len(record.getMessage()) + 64   # the message plus time, level and name
        record._ts_pass = budget[0] >= size
        budget[0 if record._ts_pass else 1] += -size if record._ts_pass else size
        _mask_record(record, getattr(self._local, "sink", None))
        return record._ts_pass


def _mask_record(record: logging.LogRecord, sink) -> None:
    """A run's log record as the service log gets it: known secrets masked, in the message and
    in the traceback (every handler then formats the masked text)."""
    mask = getattr(sink, "_mask", None)
    if mask is None or mask.empty:
        return
    record.msg, record.args = mask.text(record.getMessage()), None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    record.exc_text = mask.text(record.exc_text)


_capture_lock = threading.Lock()
_installed: list = [None]   # the _RunLogHandler installed


def _capture_routers() -> tuple[_ThreadRouter, _ThreadRouter, _RunLogHandler]:
    """Install (once, and again if someone replaced sys.stdout since) the per-thread routers."""
    handler = _installed[0]
    if isinstance(sys.stdout, _ThreadRouter) and isinstance(sys.stderr, _ThreadRouter) and \
            handler is not None and handler in logging.getLogger().handlers:
        return sys.stdout, sys.stderr, handler   # installed: no lock on each run
    with _capture_lock:
        for name in ("stdout", "stderr"):
            if not isinstance(getattr(sys, name), _ThreadRouter):
                original = getattr(sys, name)
                setattr(sys, name, _ThreadRouter(original))
                if getattr(sys, f"__{name}__") is original:   # jobs that write there, too
                    setattr(sys, f"__{name}__", getattr(sys, name))
        threading.Thread.start = _start_bound
        root = logging.getLogger()
        handler = next((h for h in root.handlers if isinstance(h, _RunLogHandler)), None)
        if handler is None:
            handler = _RunLogHandler()
            root.addHandler(handler)
        _installed[0] = handler
        return sys.stdout, sys.stderr, handler
