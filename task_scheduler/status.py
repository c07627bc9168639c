"""The service's state as /health, /api/status, /api/nodes and /metrics report it: assembled from
the parts' own state. It must not change anything but its cache of run counts."""

from __future__ import annotations

import collections
import datetime as dt
import os
import socket
import time
from typing import TYPE_CHECKING, Optional

import sqlalchemy as sa

from .config import __version__
from .models import JOB_STATES
from .store.schema import SCHEMA_VERSION
from .text import _clean
from .timeutil import _iso, _utcnow

if TYPE_CHECKING:
    from .book import JobBook
    from .cluster import Cluster
    from .config import Config
    from .history import HistoryWriter
    from .reload import JobsFile
    from .runner import Runner
    from .scheduler import _Scheduler
    from .store import Store


CHANGED_AGE = 1.0   # s: counts a live dashboard shows move once a second at most


class StatusBoard:
    """Reads the parts' state into the shapes the API answers. ``started_at`` and ``stopping``
    are set by the service as it starts and stops."""

    def __init__(self, config: Config, store: Store, book: JobBook,
                 cluster: Cluster,
                 scheduler: _Scheduler, runner: Runner, history: HistoryWriter,
                 jobs_file: JobsFile, timezone):
        self.config, self.store, self.book = config, store, book
        self.cluster = cluster
        self.scheduler, self.runner, self.history = scheduler, runner, history
        self.jobs_file, self.timezone = jobs_file, timezone
        self.started_at: Optional[dt.datetime] = None
        self.stopping = False
        self._counts: tuple = (-float("inf"), None, {})   # (monotonic time, key, runs_24h)

    def health(self) -> tuple[bool, dict]:
        scheduler_ok = self.scheduler.alive() and not self.scheduler.last_error
        try:
            self.store.ping()
            db = "ok"
        except sa.exc.SQLAlchemyError as exc:
            db = f"error: {_clean(exc)}"
        body = {"status": "ok" if scheduler_ok and db == "ok" else "unavailable",
                "scheduler": self._scheduler_state() if scheduler_ok else "down", "db": db}
        return body["status"] == "ok", body

    def status(self, counts_max_age: float = 0, counts_key=None) -> dict:
        counts = collections.Counter(r.state for r in self.book.records.values())
        return {
            "version": __version__,
            "started_at": _iso(self.started_at),
            "uptime_s": round((_utcnow() - self.started_at).total_seconds(), 1)
            if self.started_at else 0,
            "node": self.store.node,
            "role": self.cluster.role,
            "leader": self._leader(),
            "scheduler": self._scheduler_state(),
            "timezone": str(self.timezone),
            "jobs": {"total": len(self.book.records), **{s: counts.get(s, 0) for s in JOB_STATES}},
            "runs_24h": self._run_counts(counts_max_age, counts_key),
            "active_runs": len(self.runner.active),
            "config": self.jobs_file.status(),
        }

    def nodes(self) -> list[dict]:
        """The cluster's nodes (SQLite: this one), the leader marked."""
        if not self.cluster.clustered:
            return [{"id": self.store.node, "host": socket.gethostname(), "pid": os.getpid(),
                     "role": "leader", "labels": list(self.config.labels),
                     "heartbeat_age_s": 0.0, "running": len(self.runner.active),
                     "version": __version__, "config_hash": self.jobs_file.state.hash,
                     "alive": True, "started_at": _iso(self.started_at),
                     "schema_version": SCHEMA_VERSION}]
        leader = self._leader()
        return [{"id": row.id, "host": row.host, "pid": row.pid,
                 "role": "leader" if row.id == leader else "follower",
                 "labels": [x for x in row.labels.split(",") if x],
                 "heartbeat_age_s": round(age, 1), "running": row.running,
                 "version": row.version, "config_hash": row.config_hash,
                 "alive": age < self.config.node_timeout, "started_at": _iso(row.started_at),
                 "schema_version": row.schema_version}
                for row, age in self.store.nodes.all()]

    def metrics_state(self) -> dict:
        state = self.jobs_file.state
        return {"reloads": state.reloads, "reload_failures": state.failures,
                "history_dropped": self.history.dropped, "failovers": self.cluster.failovers}

    def _run_counts(self, max_age: float, key=None) -> dict:
        """A day of a million-run history costs most of a dashboard: counted at most every
        ``max_age`` seconds, or every CHANGED_AGE while ``key`` (what changed) moves."""
        at, counted_key, counts = self._counts
        age = time.monotonic() - at
        if age > max_age or (key != counted_key and age > min(max_age, CHANGED_AGE)):
            counts = self.store.queries.run_counts(_utcnow() - dt.timedelta(hours=24))
            self._counts = (time.monotonic(), key, counts)
        return dict(counts)

    def _leader(self) -> Optional[str]:
        if not self.cluster.clustered:
            return self.store.node
        holder, _, left = self.store.nodes.lease()
        return holder if left > 0 else None

    def _scheduler_state(self) -> str:
        if self.stopping or not self.scheduler.running:
            return "stopped"
        if not self.scheduler.alive():
            return "down"
        return "running" if self.cluster.leads() else "standby"
