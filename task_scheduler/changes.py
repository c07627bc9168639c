"""The change feed: runs queued, started and ended, and jobs added, changed, paused or deleted,
told to every live page and API stream of this process. One feed per process, however many
readers: it hears this process's own commits at once and other nodes' NOTIFY through the bus,
and while anyone reads it looks at the database itself every CHECK seconds (a run started or
ended on another node sends no NOTIFY, a NOTIFY can be missed, another process may write a
SQLite file). Readers never touch the database: they read what the feed keeps. It writes
nothing."""

from __future__ import annotations

import collections
import dataclasses
import secrets
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Optional

from .loops import SupervisedLoop
from .timeutil import _iso

if TYPE_CHECKING:
    from .bus import Bus
    from .store import Store

ACTIVE = frozenset(("queued", "running"))


@dataclasses.dataclass
class Changes:
    """What a reader gets: the events after its cursor, the cursor to ask from next time, and
    ``reset``: the feed cannot say what changed since that cursor (it was from before the feed
    last woke, from another process or node, or too old); read everything again."""
    cursor: str
    events: list   # [(kind, data)]: ("run", {...}), ("job", {...}), ("reset", {})
    reset: bool = False


class ChangeFeed:
    """Events with sequence numbers in a ring of the last KEEP; a cursor is the feed's epoch
    and a sequence number. The feed looks at the database only while someone read within
    IDLE seconds; when it wakes it takes a new epoch (older cursors get ``reset``)."""

    CHECK = 0.5    # s between looks while read: the backstop for what no commit or NOTIFY tells
    GAP = 0.1      # s at least between looks: a busy node commits hundreds of times a second
    IDLE = 15.0    # s without a reader before the feed stops looking (pollers ask every 1-2 s)
    WINDOW = 2.0   # s of run ids looked at again: a run committed after a newer id was seen
    CAP = 200      # runs told one by one per look; more is one ``reset`` (a burst, a backlog)
    KEEP = 2000    # events kept for pollers and reconnecting streams

    def __init__(self, store: Store, bus: Bus, job_state: Callable[[str], Optional[str]],
                 told: Callable[[], None] = lambda: None):
        # ``told``: called before readers hear of changes, so what they read then is fresh
        # (the job list keeps its states between this process's own commits: JobCatalog)
        self._store, self._job_state, self._told = store, job_state, told
        self._cond = threading.Condition()
        self._events: collections.deque = collections.deque(maxlen=self.KEEP)
        self._seq = 0
        self._epoch = secrets.token_hex(4)
        self._looking = threading.Lock()   # one look or sync at a time
        self._synced = False
        self._wanted_until = 0.0
        self._last_look = 0.0
        self._runs: dict = {}       # id -> row: runs queued or running, or newer than the floor
        self._floor = ""            # runs with a greater id are read at each look
        self._overflow = None       # what the last look too big to tell one by one looked like
        self._jobs_mark: Optional[tuple] = None
        self._job_sigs: dict = {}
        self._told_jobs: set = set()   # ids the bus named since the last look
        self._loop = SupervisedLoop("change feed", "ts-changes", self._look, every=self._every)
        # After the service's own subscriber: a job another node changed is in the book first.
        bus.subscribe("ts_runs", lambda _payload: self._poke())
        bus.subscribe("ts_jobs", self._jobs_told)
        store.committed.append(self._poke)

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop(2)
        with self._cond:
            self._cond.notify_all()

    def read(self, cursor: Optional[str], wait: float = 0.0) -> Changes:
        """The events after ``cursor`` (none given: the present cursor, no events), waiting up
        to ``wait`` seconds for one. Keeps the feed looking for IDLE seconds more."""
        self._want()
        with self._cond:
            if cursor is None:
                return Changes(self._cursor(), [])
            epoch, _, text = cursor.partition(".")
            seq = int(text) if text.isdigit() else -1
            if wait and epoch == self._epoch and seq == self._seq:
                self._cond.wait(wait)
            first = self._events[0][0] if self._events else self._seq + 1
            if epoch != self._epoch or not first - 1 <= seq <= self._seq:
                return Changes(self._cursor(), [], reset=True)
            events = [(kind, data) for at, kind, data in self._events if at > seq]
            return Changes(self._cursor(), events)

    def _cursor(self) -> str:
        return f"{self._epoch}.{self._seq}"

    def _want(self) -> None:
        self._wanted_until = time.monotonic() + self.IDLE
        if not self._synced:
            with self._looking:
                if not self._synced:
                    self._sync()
            self._loop.wake()

    def _wanted(self) -> bool:
        return self._wanted_until > time.monotonic()

    def _every(self) -> float:
        return self.CHECK if self._wanted() or self._synced else 3600.0

    def _poke(self) -> None:
        if self._wanted():   # nobody reads: a commit costs nothing more
            self._loop.wake()

    def _jobs_told(self, payload: Optional[dict]) -> None:
        ids = payload.get("ids") if payload else None
        with self._cond:
            self._told_jobs.update(ids if ids is not None else [None])
        self._poke()

    # looking

    def _look(self) -> None:
        time.sleep(max(0.0, self._last_look + self.GAP - time.monotonic()))
        self._last_look = time.monotonic()
        with self._looking:
            if not self._wanted():
                if self._synced:   # nobody reads: forget, and look no more until asked
                    self._synced, self._runs, self._job_sigs = False, {}, {}
                return
            if not self._synced:
                self._sync()
                return
            self._publish(self._run_changes() + self._job_changes())

    def _sync(self) -> None:
        """What is there now, told to nobody: later looks tell what changed from it."""
        newest = self._store.queries.newest_run_id() or ""
        self._floor = _back(newest, self.WINDOW)
        fresh, active = self._store.queries.live_runs(self._floor, self.CAP)
        self._runs = {row.id: row for row in (*fresh, *active)}
        self._jobs_mark = self._store.jobs.jobs_mark()
        self._job_sigs = self._store.jobs.job_signatures()
        with self._cond:
            self._told_jobs.clear()
            self._epoch = secrets.token_hex(4)
            self._events.clear()
            self._cond.notify_all()   # waiting readers find their cursor gone: reset
        self._synced, self._overflow = True, None

    def _run_changes(self) -> list:
        fresh, active = self._store.queries.live_runs(self._floor, self.CAP)
        if len(fresh) > self.CAP or len(active) > self.CAP:
            return self._too_many(fresh, active)
        seen = {row.id: row for row in (*fresh, *active)}
        left = [i for i, row in self._runs.items() if i not in seen and row.status in ACTIVE]
        if left:   # no longer queued or running: how they ended (a pruned one is just gone)
            seen.update((row.id, row) for row in self._store.queries.live_runs_by_id(left))
        events = [("run", _run_data(row)) for run_id, row in sorted(seen.items())
                  if tuple(self._runs.get(run_id) or ()) != tuple(row)]
        if fresh:
            self._floor = max(self._floor, _back(fresh[-1].id, self.WINDOW))
        self._runs = {i: row for i, row in seen.items()
                      if row.status in ACTIVE or i > self._floor}
        self._overflow = None
        return events

    def _too_many(self, fresh: list, active: list) -> list:
        """More changes than are worth telling one by one: one ``reset`` when what is there
        differs from the last look (not one every look while a backlog waits)."""
        newest = self._store.queries.newest_run_id() or ""
        mark = hash((newest, tuple(map(tuple, active))))   # not the window: it slides alone
        self._floor = max(self._floor, _back(newest, self.WINDOW))
        self._runs = {row.id: row for row in (*fresh, *active)}
        told, self._overflow = self._overflow != mark, mark
        return [("reset", {})] if told else []

    def _job_changes(self) -> list:
        with self._cond:
            told, self._told_jobs = self._told_jobs, set()
        mark = self._store.jobs.jobs_mark()
        if mark != self._jobs_mark or None in told:
            sigs = self._store.jobs.job_signatures()
            told |= {i for i in set(sigs) | set(self._job_sigs)
                     if sigs.get(i) != self._job_sigs.get(i)}
            self._jobs_mark, self._job_sigs = mark, sigs
        return [("job", {"id": job_id, "state": self._job_state(job_id) or "deleted"})
                for job_id in sorted(told - {None})]

    def _publish(self, events: list) -> None:
        if not events:
            return
        self._told()
        with self._cond:
            for kind, data in events:
                self._seq += 1
                self._events.append((self._seq, kind, data))
            self._cond.notify_all()


def _run_data(row) -> dict:
    return {"id": row.id, "job_id": row.job_id, "status": row.status, "node": row.node,
            "trigger": row.trigger, "started_at": _iso(row.started_at),
            "finished_at": _iso(row.finished_at)}


def _back(run_id: str, seconds: float) -> str:
    """A run id ``seconds`` older than ``run_id`` (ids begin with 14 hex digits of
    microseconds); an id of another form is its own floor."""
    try:
        micros = int(run_id[:14], 16) - int(seconds * 1_000_000)
    except ValueError:
        return run_id
    return f"{max(micros, 0):014x}" if len(run_id) >= 14 else run_id
