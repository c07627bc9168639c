"""Supervised loops: a background thread that runs one step again and again (every so many
seconds, or at once when woken) until told to stop. It never dies of an error: a database error
is logged once until the database answers again, any other is logged with its traceback, and
the loop goes on. It knows nothing of what its steps do."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Optional

import sqlalchemy as sa

from .text import _clean

log = logging.getLogger("task_scheduler")


def _never(_exc: Exception) -> bool:
    return False


class SupervisedLoop:
    """Each round runs ``step``, then ``after`` (guarded on its own: it runs even when the
    step failed, e.g. to act on an outage). A round starts ``every()`` seconds after the last
    one, or when ``wake()`` is called. ``busy(exc)`` says which database errors of the step
    are a busy row, not an outage: those are logged at info and do not count as failing."""

    def __init__(self, name: str, thread_name: str, step: Callable[[], None],
                 every: Callable[[], float], busy: Callable[[Exception], bool] = _never,
                 after: Optional[Callable[[], None]] = None):
        self.name, self._step, self._every, self._busy = name, step, every, busy
        self._after = after
        self.failing = False
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float) -> None:
        """Run no further round; wait up to ``timeout`` seconds for the one going on."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self._every())
            self._wake.clear()
            if self._stopping.is_set():
                return
            self.run_step()
            if self._after is not None:
                try:
                    self._after()
                except Exception:
                    log.exception("%s: unexpected error after a round; continuing", self.name)

    def run_step(self) -> None:
        """The step once, its errors logged (and the database's outage said once)."""
        try:
            self._step()
        except sa.exc.DBAPIError as exc:
            if self._busy(exc):   # a bounded wait on another node's lock: next round
                log.info("%s: a row was busy; trying again", self.name)
                return
            if not self.failing:
                log.warning("%s: database error: %s", self.name, _clean(exc))
            self.failing = True
            return
        except Exception:
            log.exception("%s: unexpected error; continuing", self.name)
            return
        if self.failing:
            log.info("%s: the database answers again", self.name)
        self.failing = False
