"""This node in a cluster: its row in ts_nodes, the heartbeat, the leader lease, rescue of runs of
dead nodes, and stepping down. On SQLite the one node always leads."""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Optional

import sqlalchemy as sa
import sqlalchemy.dialects.postgresql
import sqlalchemy.dialects.sqlite

from .config import __version__
from .store.schema import SCHEMA_VERSION
from .text import _clean

if TYPE_CHECKING:
    from .service import SchedulerService

log = logging.getLogger("task_scheduler")


class Cluster:
    """This process as a node: its row in ts_nodes and heartbeat, the leader lease (taken,
    renewed, handed back; each take a new epoch that fences the leader's writes), the rescue of
    runs whose node went silent, and the offset of this machine's clock from the database's.
    On SQLite there is one node: it leads from the start and none of the rest runs."""

    def __init__(self, service: SchedulerService):
        self._service, self.config, self.store = service, service.config, service.store
        self.role = "follower"
        self.epoch: Optional[int] = None
        self.offset = 0.0          # database clock minus this machine's clock, seconds
        self.failovers = 0         # times this node saw the lease move to a new holder
        self._fire_until = 0.0     # monotonic: firing stops then unless the lease is renewed
        self._next_heartbeat = 0.0
        self._last_holder: Optional[str] = None
        self._failing = False
        self._resigned = False     # stopping: never take or renew the lease again
        self._lease_lock = threading.Lock()   # the loop's lease statements, and resign()
        self._reached_last = -float("inf")   # monotonic: the last tick that reached the
        self._reached_since = 0.0            # database, and the start of that unbroken run
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ts-cluster", daemon=True)

    @property
    def clustered(self) -> bool:
        return self.store.clustered

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
            self._service.book.load()   # the notifications name the jobs' targets
            self.store.notes.queue_notes(self._service.notifier.notes_for(
                [dict(r._mapping) for r in swept]))

    def start(self) -> None:
        """Lead at once on SQLite; on PostgreSQL try for the lease now, then keep at it."""
        if not self.clustered:
            self.role, self._fire_until = "leader", float("inf")
            self._service.lead(None, initial=True)
            return
        self._service.bus.subscribe("ts_lease", lambda _payload: self._wake.set())
        try:
            self._tick(initial=True)
        except sa.exc.DBAPIError as exc:
            if not _lock_busy(exc):
                raise
            log.info("cluster: the lease row is busy (a frozen leader?); trying again")
        self._thread.start()

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
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(5)
        if not self.clustered:
            return
        try:
            if self.role == "leader" and self.epoch is not None:
                self._service.scheduler.step_down()
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
            self._wake.set()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            started = time.monotonic()
            self._wake.wait(max(0.0, self.config.lease_renew - (time.monotonic() - started)))
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                self._tick()
                if self._failing:
                    log.info("cluster: the database answers again")
                self._failing = False
            except sa.exc.DBAPIError as exc:
                if _lock_busy(exc):   # bounded wait on another node's lock: next tick
                    log.info("cluster: a lease or heartbeat row was busy; trying again")
                elif not self._failing:
                    log.warning("cluster: database error: %s", _clean(exc))
                self._failing = self._failing or not _lock_busy(exc)
            except Exception:
                log.exception("cluster: unexpected error; continuing")
            if self.role == "leader" and time.monotonic() >= self._fire_until:
                self._step_down("the lease could not be renewed in time")
            try:
                self._service.runner.fence_if_due()
            except Exception:
                log.exception("cluster: self-fencing failed; continuing")

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
        runner = self._service.runner
        since = time.monotonic()
        self.store.nodes.heartbeat_node(self.role, len(runner.active),
                                        self._service.config_status().get("hash"))
        alive, cancels = self.store.liveness.heartbeat_runs()
        runner.after_heartbeat(alive, cancels, since)
        if self.role == "leader" and self.may_rescue():
            runner.after_rescue(self.store.liveness.rescue(self.config.node_timeout))
        holder = self.store.nodes.lease()[0]
        if holder and holder != self._last_holder:
            if self._last_holder is not None:
                self.failovers += 1
            self._last_holder = holder

    def _take_lead(self, epoch: int, initial: bool) -> None:
        self.role, self.epoch = "leader", epoch
        log.warning("node %s leads now (lease epoch %d)", self.store.node, epoch)
        self._service.lead(epoch, initial=initial)

    def _step_down(self, reason: str) -> None:
        log.warning("node %s stops leading: %s", self.store.node, reason)
        self.role, self.epoch, self._fire_until = "follower", None, 0.0
        self._service.scheduler.step_down()


LEASE_MARGIN = 1.5   # seconds a leader stops firing before its lease could expire


def _lock_busy(exc: sa.exc.DBAPIError) -> bool:
    """PostgreSQL's lock_timeout (55P03): a row was busy, the database is fine."""
    return getattr(exc.orig, "sqlstate", None) == "55P03"
