"""The history writer: one thread that batches run updates (status, output) into the store, so a
run's progress never waits on the database. Falls back row by row on a bad row."""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Optional

import sqlalchemy as sa

from .models import FINAL_STATUSES
from .text import _clean

if TYPE_CHECKING:
    from .store import Store

log = logging.getLogger("task_scheduler")


class HistoryWriter:
    """One thread writes the ends of runs (status, output) in batches, so workers never wait on
    the database; retention runs now and then in a thread of its own (a prune of many rows
    takes seconds, and run ends are written meanwhile)."""

    BATCH = 500
    LINGER = 0.05   # seconds a write waits for more: a burst's ends go in a few transactions,
    #                 not one per run, and leave the database (and the GIL) to the starts
    RETRY_DELAYS = (0.5, 1, 2, 4, 8, 15, 30)   # about a minute of outage is bridged

    def __init__(self, store: Store, prune=None, prune_every: float = 600, settled=None):
        self._store, self._prune = store, prune
        # told, after the commit, of the workflow runs the steps' ends ended (notifications)
        self.settled = settled
        self._queue: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._prune_every, self._next_prune = prune_every, time.monotonic() + 5
        self._stopping = False
        self._urgent = 0   # flushes waiting: no lingering then
        self._thread = threading.Thread(target=self._loop, name="ts-history", daemon=True)
        self._pruner: Optional[threading.Thread] = None
        self.dropped = 0
        # Runs ended here whose end is not written yet: the table still says "running", and a
        # claim must not count them against max_instances (a retry, the next fire).
        self.unsettled: set = set()

    def start(self) -> None:
        self._thread.start()

    def update(self, run_id: str, notes: Optional[list] = None, **fields: Any) -> None:
        """Change a run of this node (its start, output, end); ``notes`` are queued if it ends
        here."""
        if fields.get("status") in FINAL_STATUSES:
            with self._cond:
                self.unsettled.add(run_id)
        self._put((run_id, fields, notes or []))

    def unsettled_ids(self) -> frozenset:
        with self._cond:
            return frozenset(self.unsettled)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued before this call is committed."""
        done = threading.Event()
        with self._cond:
            self._urgent += 1
        self._put(done)
        return done.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        self.flush(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)
        if self._pruner:
            self._pruner.join(timeout)   # it stops at its next chunk

    def _put(self, item) -> None:
        with self._cond:
            self._queue.append(item)
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._stopping, timeout=30)
                self._cond.wait_for(lambda: self._urgent or self._stopping or
                                    len(self._queue) >= self.BATCH, timeout=self.LINGER)
                if self._stopping and not self._queue:
                    return
                batch = [self._queue.popleft() for _ in range(min(self.BATCH, len(self._queue)))]
                self._urgent -= sum(isinstance(item, threading.Event) for item in batch)
            try:
                self._write_with_retry(batch)
                self._maybe_prune()
            except Exception:
                log.exception("history writer: unexpected error; continuing")

    def _write_with_retry(self, batch: list) -> None:
        merged: dict[str, dict] = {}
        notes: dict[str, list] = {}
        for item in batch:
            if isinstance(item, tuple):
                merged.setdefault(item[0], {}).update(_db_text(item[1]))
                notes.setdefault(item[0], []).extend(item[2])
        pending = list(merged.items())
        for delay in (*self.RETRY_DELAYS, None):
            try:
                if pending:
                    self._write(pending, notes)
                break
            except Exception as exc:
                # One row the database refuses (or any error of a batch) must not hold or drop
                # the others: write them one at a time; only an outage is waited out.
                if not _transient(exc):
                    log.warning("history writer: %d run records were refused together (%s); "
                                "writing them one at a time", len(pending), _clean(exc))
                    pending = self._write_each(pending, notes)
                    if not pending:
                        break
                if delay is None or self._stopping:
                    self.dropped += len(pending)
                    log.error("history writer: dropping %d run records after retries: %s",
                              len(pending), _clean(exc))
                    break
                log.warning("history writer: database error, retrying in %ss: %s", delay,
                            _clean(exc))
                time.sleep(delay)
        with self._cond:
            self.unsettled -= {run_id for run_id, fields in merged.items()
                               if fields.get("status") in FINAL_STATUSES}
        for item in batch:
            if isinstance(item, threading.Event):
                item.set()

    def _write(self, updates: list, notes: dict) -> None:
        with self._store.write() as conn:
            ended = self._store.runs.finish_runs(conn, updates, notes)
        if ended and self.settled is not None:
            try:
                self.settled(ended)
            except Exception:
                log.exception("history writer: the end of %d workflow runs could not be "
                              "told", len(ended))

    def _write_each(self, updates: list, notes: dict) -> list:
        """Write each row in a transaction of its own. A row the database refuses for what it
        holds is written again in a minimal form (its state, no output) that says why. Returns
        the rows left when an outage began, to be tried again."""
        for index, (run_id, fields) in enumerate(updates):
            for attempt in range(2):
                try:
                    if fields:
                        self._write([(run_id, fields)], notes)
                    break
                except Exception as exc:
                    if _transient(exc):
                        return updates[index:]
                    log.error("history writer: run %s: the database refused its record (%s); "
                              "%s", run_id, _clean(exc),
                              "dropped" if attempt else "writing it without its output")
                    self.dropped += attempt
                    fields = _minimal_fields(fields, exc)
        return []

    @property
    def stopping(self) -> bool:
        return self._stopping

    def _maybe_prune(self) -> None:
        if not self._prune or time.monotonic() < self._next_prune or \
                (self._pruner and self._pruner.is_alive()):
            return
        self._next_prune = time.monotonic() + self._prune_every
        self._pruner = threading.Thread(target=self._run_prune, name="ts-prune", daemon=True)
        self._pruner.start()

    def _run_prune(self) -> None:
        try:
            self._prune()
        except Exception:
            log.exception("retention: prune failed; trying again next time")


def _db_text(fields: dict) -> dict:
    """Text a database can hold: PostgreSQL refuses NUL in text (a job's output, its error),
    so NUL becomes U+FFFD on both databases alike."""
    return {k: v.replace("\0", "\ufffd") if isinstance(v, str) and "\0" in v else v
            for k, v in fields.items()}


def _transient(exc: BaseException) -> bool:
    """An outage or a lock (wait and try again), not a row the database refuses."""
    return isinstance(exc, sa.exc.OperationalError) or \
        getattr(exc, "connection_invalidated", False)


def _minimal_fields(fields: dict, exc: Optional[BaseException]) -> dict:
    """A run's record without its output, saying why the output is missing."""
    keep = {k: v for k, v in fields.items()
            if k in ("status", "started_at", "finished_at", "exit_code", "truncated")}
    if exc is not None and "status" in fields:
        reason = _clean(exc).splitlines()[0][:300].replace("\0", "\ufffd")
        keep["error"] = f"task-scheduler could not record this run's output and error: {reason}"
    return keep
