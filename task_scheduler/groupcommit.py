"""Group commit: many threads each need an item written before they go on; the first to arrive
writes whatever is waiting then in one call, and the items that arrive while it writes go
together in the next call. Nobody lingers for company: a lone item is written at once, and under
load each write carries everything that queued behind the one before."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import Any


class _Waiter:
    __slots__ = ("item", "event", "result", "error", "leads")

    def __init__(self, item: Any):
        self.item, self.event = item, threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.leads = False   # handed the next write rather than a result


class GroupCommit:
    """``submit(item)`` returns ``write(items)[i]`` for its item, where ``write`` takes the
    items waiting together and returns one result per item, in order. A ``write`` that raises
    raises in every thread whose item it carried. Calls of ``write`` never overlap."""

    def __init__(self, write: Callable[[list], Iterable]):
        self._write = write
        self._lock = threading.Lock()
        self._waiting: list[_Waiter] = []
        self._busy = False

    def submit(self, item: Any) -> Any:
        me = _Waiter(item)
        with self._lock:
            self._waiting.append(me)
            leads, self._busy = not self._busy, True
        if not leads:
            me.event.wait()
            if not me.leads:
                return _outcome(me)
        self._lead()
        return _outcome(me)

    def _lead(self) -> None:
        """Write what waits now (this thread's item among it), then hand on: the results to
        their threads, the next write to the first thread that queued meanwhile."""
        os.sched_yield()   # let threads runnable now (about to submit) join this write
        with self._lock:
            batch, self._waiting = self._waiting, []
        try:
            results = list(self._write([w.item for w in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"a group write returned {len(results)} results "
                                   f"for {len(batch)} items")
            for waiter, result in zip(batch, results, strict=True):
                waiter.result = result
        except BaseException as exc:   # each caller decides what a failed write means to it
            for waiter in batch:
                waiter.error = exc
        with self._lock:
            following = self._waiting[0] if self._waiting else None
            self._busy = following is not None
        for waiter in batch:
            waiter.event.set()
        if following is not None:
            following.leads = True
            following.event.set()


def _outcome(waiter: _Waiter) -> Any:
    if waiter.error is not None:
        raise waiter.error
    return waiter.result
