"""This node in a cluster: its row in ts_nodes, the heartbeat, the leader lease, rescue of runs of
dead nodes, and stepping down. On SQLite the one node always leads."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Optional
from collections.abc import Callable

import sqlalchemy as sa

from .config import __version__
from .loops import SupervisedLoop
from .store.schema import SCHEMA_VERSION
from .text import _clean

if TYPE_CHECKING:
    from .bus import Bus
    from .config import Config
    from .store import Store

log = logging.getLogger("task_scheduler")


@dataclasses.dataclass
class NodeHooks:
    """What the cluster tells the rest of this node, and asks it. Callables: the runner and the
    scheduler are built after the cluster (they read its clock)."""

    lead: Callable[[Optional[int], bool], None]   # leads from now: (lease epoch, at start-up)
    step_down: Callable[[], None]                 # stop firing now
    swept: Callable[[list], None]                 # runs a crash left running, ended (as dicts)
    running: Callable[[], int]                    # runs going on this node
    after_heartbeat: Callable[[set, list, float], None]   # (alive runs, cancels, sent at)
    after_rescue: Callable[[list], None]          # runs given up by dead nodes
    fence_if_due: Callable[[], None]              # kill runs whose heartbeat failed too long
    config_hash: Callable[[], Optional[str]]      # jobs.yaml as this node read it


class Cluster:
    """This process as a node: its row in ts_nodes and heartbeat, the leader lease (taken,
    renewed, handed back; each take a new epoch that fences the leader's writes), the rescue of
    runs whose node went silent, and the offset of this machine's clock from the database's.
    On SQLite there is one node: it leads from the start and none of the rest runs."""

    def __init__(self, config: Config, store: Store, bus: Bus, hooks: NodeHooks):
        self.config, self.store, self._bus, self._hooks = config, store, bus, hooks
        self.role = "follower"
        self.epoch: Optional[int] = None
        self.offset = 0.0          # database clock minus this machine's clock, seconds
        self.failovers = 0         # times this node saw the lease move to a new holder
        self._fire_until = 0.0     # monotonic: firing stops then unless the lease is renewed
        self._next_heartbeat = 0.0
        self._last_holder: Optional[str] = None
        self._resigned = False     # stopping: never take or renew the lease again
        self._lease_lock = threading.Lock()   # the loop's lease statements, and resign()
        self._reached_last = -float("inf")   # monotonic: the last tick that reached the
        self._reached_since = 0.0            # database, and the start of that unbroken run
        self._loop = SupervisedLoop("cluster", "ts-cluster", self._tick,
                                    lambda: self.config.lease_renew, busy=_lock_busy,
                                    after=self._after_tick)

    @property
    def clustered(self) -> bool:
        return self.store.clustered

    def leads(self) -> bool:
        return self.role == "leader"

    def join(self) -> None:
        """Register this node (a live node with the same id is refused) and interrupt the runs
        this node's previous life left running (SQLite: every such run)."""
        if self.clustered:
            others = self.store.nodes.register_node(
                {"host": socket.gethostname(), "pid": os.getpid(), "version": __version__,
                 "labels": ",".join(self.config.labels), "role": "follower",
                 "schema_version": SCHEMA_VERSION}, self.config.node_timeout)
            mixed = [f"{node} ({version}, schema {schema or 'older'})"
                     for node, version, schema in others
                     if (version, schema) != (__version__, SCHEMA_VERSION)]
            if mixed:   # a rolling upgrade: fine for a while (docs/cluster.md)
                log.warning("node %s (%s, schema %d) joins nodes of other releases: %s; "
                            "upgrade them all to one release", self.store.node, __version__,
                            SCHEMA_VERSION, ", ".join(mixed))
        swept = self.store.liveness.sweep(self.store.node if self.clustered else None)
        if swept:
            log.warning("marked %d runs interrupted (left running by a crash)", len(swept))
            self._hooks.swept([dict(r._mapping) for r in swept])

    def start(self) -> None:
        """Lead at once on SQLite; on PostgreSQL try for the lease now, then keep at it."""
        if not self.clustered:
            self.role, self._fire_until = "leader", float("inf")
            self._hooks.lead(None, True)
            return
        self._bus.subscribe("ts_lease", lambda _payload: self._loop.wake())
        try:
            self._tick(initial=True)
        except sa.exc.DBAPIError as exc:
            if not _lock_busy(exc):
                raise
            log.info("cluster: the lease row is busy (a frozen leader?); trying again")
        self._loop.start()

    def resign(self) -> None:
        """A stopping node hands the lease over before it waits for its runs (for up to the
        shutdown grace): another node leads within about a second (the release is announced),
        while this one goes on heart-beating the runs it still has."""
        self._resigned = True
        if not self.clustered:
            return
        with self._lease_lock:
            epoch = self.epoch if self.role == "leader" else None
            if epoch is None:
                return
            self._step_down("this node is stopping; the lease is handed over")
            try:
                self.store.nodes.release_lease(epoch)
            except sa.exc.DBAPIError as exc:
                log.warning("cluster: could not hand the lease back (%s); it expires by "
                            "itself", _clean(exc))

    def stop(self) -> None:
        """Hand the lease back at once (the others need not wait for it to expire) and leave."""
        self._loop.stop(5)
        if not self.clustered:
            return
        try:
            if self.role == "leader" and self.epoch is not None:
                self._hooks.step_down()
                self.store.nodes.release_lease(self.epoch)
            self.store.nodes.leave()
        except sa.exc.DBAPIError as exc:
            log.warning("cluster: could not leave cleanly (%s); the lease expires by itself",
                        _clean(exc))
        self.role = "follower"

    def may_fire(self) -> bool:
        """True while this node leads and its lease was renewed recently enough: a leader that
        cannot renew stops firing before the lease can expire."""
        return self.role == "leader" and time.monotonic() < self._fire_until

    def now(self) -> dt.datetime:
        """The database's time (UTC, aware), from this machine's clock and the last offset."""
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.offset)

    def lost(self, reason: str) -> None:
        """The scheduler found its write fenced off: step down now."""
        if self.role == "leader":
            self._step_down(reason)
            self._loop.wake()

    def _after_tick(self) -> None:
        """Each round, whether the database answered or not: stop firing on a lease that
        could not be renewed, and end this node's commands if its heartbeat is overdue."""
        if self.role == "leader" and time.monotonic() >= self._fire_until:
            self._step_down("the lease could not be renewed in time")
        self._hooks.fence_if_due()

    def _tick(self, initial: bool = False) -> None:
        busy = None
        try:
            with self._lease_lock:
                self._lease_tick(initial)
        except sa.exc.DBAPIError as exc:   # a busy lease row must not hold the heartbeat back
            if not _lock_busy(exc):
                raise
            busy = exc
        reached = time.monotonic()
        if reached - self._reached_last > self.config.heartbeat_every * 1.5:
            self._reached_since = reached   # back from an outage, or from a pause of its own
        self._reached_last = reached
        if time.monotonic() >= self._next_heartbeat:
            self._next_heartbeat = time.monotonic() + self.config.heartbeat_every
            self._heartbeat()
        if busy is not None:
            raise busy

    def _lease_tick(self, initial: bool) -> None:
        sent, local = time.monotonic(), time.time()
        epoch = None
        if self.role == "leader":
            db_now = self.store.nodes.renew_lease(self.epoch, self.config.lease_ttl)
            if db_now is None:
                self._step_down("another node holds the lease")
                db_now = self.store.db_time()
            else:
                self._fire_until = sent + self.config.lease_ttl - LEASE_MARGIN
        elif self._resigned:
            db_now = self.store.db_time()
        else:
            epoch, db_now = self.store.nodes.acquire_lease(self.config.lease_ttl)
        # Before leading: the new leader's first wakeup builds the schedule by this offset (at
        # start-up the first tick leads with none measured yet).
        self.offset = db_now.replace(tzinfo=dt.UTC).timestamp() - (local + time.time()) / 2
        if epoch is not None:
            self._fire_until = sent + self.config.lease_ttl - LEASE_MARGIN
            self._take_lead(epoch, initial)

    def may_rescue(self) -> bool:
        """A node's silence proves it dead only while this node could itself have heard it:
        after an outage of the database (or a pause of this process) every node's heartbeat
        is old, and the live ones heartbeat again within seconds. So this node gives nothing up
        until it has reached the database without a break for ``node_timeout`` itself."""
        return time.monotonic() - self._reached_since >= self.config.node_timeout

    def _heartbeat(self) -> None:
        since = time.monotonic()
        self.store.nodes.heartbeat_node(self.role, self._hooks.running(), self._hooks.config_hash())
        alive, cancels = self.store.liveness.heartbeat_runs()
        self._hooks.after_heartbeat(alive, cancels, since)
        if self.role == "leader" and self.may_rescue():
            self._hooks.after_rescue(self.store.liveness.rescue(self.config.node_timeout))
        holder = self.store.nodes.lease()[0]
        if holder and holder != self._last_holder:
            if self._last_holder is not None:
                self.failovers += 1
            self._last_holder = holder

    def _take_lead(self, epoch: int, initial: bool) -> None:
        self.role, self.epoch = "leader", epoch
        log.warning("node %s leads now (lease epoch %d)", self.store.node, epoch)
        self._hooks.lead(epoch, initial)

    def _step_down(self, reason: str) -> None:
        log.warning("node %s stops leading: %s", self.store.node, reason)
        self.role, self.epoch, self._fire_until = "follower", None, 0.0
        self._hooks.step_down()


LEASE_MARGIN = 1.5   # seconds a leader stops firing before its lease could expire


def _lock_busy(exc: sa.exc.DBAPIError) -> bool:
    """PostgreSQL's lock_timeout (55P03): a row was busy, the database is fine."""
    return getattr(exc.orig, "sqlstate", None) == "55P03"
