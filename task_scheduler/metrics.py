"""Prometheus metrics: the /metrics text from the service's counts and this process's run
statistics (durations, lateness)."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .config import __version__
from .models import FINAL_STATUSES, JOB_STATES

if TYPE_CHECKING:
    from .service import SchedulerService
    from .store.queries import RunQueries


DURATION_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600)   # a quick check .. an hour's backup
LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 30, 60)       # a fire on time is well under 0.1 s


# /metrics: Prometheus text format, written by hand

class RunStats:
    """Counters of finished runs for /metrics. At each scrape the runs created since the last
    one are read from ts_runs (so runs of every node count) and counted once when final: the
    counters only grow, as Prometheus expects, and start at zero with the process."""

    overlap = 300.0   # seconds of runs re-read each scrape: history rows commit a little late

    def __init__(self, clock: Callable[[], float] = time.time):
        # Run ids carry their creation time on the database's clock (new_run_id): the floor is
        # read on the same clock, or a run made just after start could sort below it.
        self.clock = clock
        self.lock = threading.Lock()
        self.started = self.floor = clock()
        self.counted: set = set()       # final runs in the overlap window, already counted
        self.pending: set = set()       # runs seen queued or running
        self.by_status: collections.Counter = collections.Counter()   # (job_id, status)
        self.by_step: collections.Counter = collections.Counter()   # (job_id, step_id, status)
        self.job_seconds: dict = {}     # job_id -> [sum of run seconds, runs]
        self.duration = _Histogram(DURATION_BUCKETS)
        self.lateness = _Histogram(LATENESS_BUCKETS)

    def update(self, queries: RunQueries) -> None:
        with self.lock:
            now = self.clock()
            # Run ids begin with their creation time, microseconds in 14 hex digits (new_run_id).
            floor = f"{int(self.floor * 1e6):014x}"
            rows = queries.scrape(floor, self.pending)
            self.pending = set()   # every one of them is in rows (or gone): _take says again
            for row in rows:
                self._take(row)
            self.floor = max(self.started, now - self.overlap)
            self.counted = {i for i in self.counted if i >= floor}

    def _take(self, row) -> None:
        if row.id in self.counted:
            return
        if row.status not in FINAL_STATUSES:
            self.pending.add(row.id)
            return
        self.pending.discard(row.id)
        self.counted.add(row.id)
        if row.step_id is not None:   # a workflow's step: counted apart from the job's runs
            self.by_step[row.job_id, row.step_id, row.status] += 1
            return
        self.by_status[row.job_id, row.status] += 1
        if row.started_at and row.finished_at:
            seconds = max(0.0, (row.finished_at - row.started_at).total_seconds())
            self.duration.observe(seconds)
            total = self.job_seconds.setdefault(row.job_id, [0.0, 0])
            total[0] += seconds
            total[1] += 1
        if row.started_at and row.trigger in ("schedule", "catchup"):
            self.lateness.observe(max(0.0, (row.started_at - row.scheduled_at).total_seconds()))


class _Histogram:
    def __init__(self, bounds: tuple):
        self.bounds = tuple(float(b) for b in bounds) + (float("inf"),)
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[next(i for i, b in enumerate(self.bounds) if value <= b)] += 1
        self.sum += value

    def samples(self) -> list:
        cumulative = [sum(self.counts[:i + 1]) for i in range(len(self.counts))]
        return ([("_bucket", {"le": b}, n) for b, n in zip(self.bounds, cumulative, strict=True)]
                + [("_sum", {}, self.sum), ("_count", {}, cumulative[-1])])


def metrics_text(service: SchedulerService, stats: RunStats) -> str:
    """The metrics of ``service`` in the Prometheus text exposition format 0.0.4."""
    stats.update(service.store.queries)
    status, state, nodes = service.status(), service.metrics_state(), service.nodes()
    prefix = "task_scheduler_"
    families = [
        ("info", "gauge", "Version and node of this process",
         [("", {"version": __version__, "node": service.config.node}, 1)]),
        ("scheduler_running", "gauge", "1 while the scheduler thread is running and leads",
         [("", {}, int(status["scheduler"] == "running"))]),
        ("leader", "gauge", "1 while this node holds the leader lease",
         [("", {"node": service.config.node}, int(status["role"] == "leader"))]),
        ("nodes", "gauge", "Nodes of the cluster by liveness (SQLite: this one)",
         [("", {"alive": str(alive).lower()}, sum(1 for n in nodes if n["alive"] == alive))
          for alive in (True, False)]),
        ("failovers_total", "counter", "Times this node saw the lease move to a new leader",
         [("", {}, state.get("failovers", 0))]),
        ("jobs", "gauge", "Jobs by state",
         [("", {"state": s}, status["jobs"].get(s, 0)) for s in JOB_STATES]),
        ("runs_active", "gauge", "Runs queued or running in this process",
         [("", {}, status["active_runs"])]),
        ("runs_finished_total", "counter", "Runs finished since this process started, by job "
         "and final status", [("", {"job_id": j, "status": s}, n)
                              for (j, s), n in sorted(stats.by_status.items())]),
        ("step_runs_finished_total", "counter", "Workflow steps' runs finished since this "
         "process started, by job, step and final status (not in runs_finished_total)",
         [("", {"job_id": j, "step_id": st, "status": s}, n)
          for (j, st, s), n in sorted(stats.by_step.items())]),
        ("run_duration_seconds", "histogram", "Run time from start to end, all jobs",
         stats.duration.samples()),
        ("job_run_duration_seconds", "summary", "Run time from start to end, by job",
         [(suffix, {"job_id": j}, v) for j, (total, count) in sorted(stats.job_seconds.items())
          for suffix, v in (("_sum", total), ("_count", count))]),
        ("fire_lateness_seconds", "histogram", "Start of a scheduled run after its fire time",
         stats.lateness.samples()),
        ("reloads_total", "counter", "jobs.yaml reloads applied", [("", {}, state["reloads"])]),
        ("reload_failures_total", "counter", "jobs.yaml reloads rejected as invalid",
         [("", {}, state["reload_failures"])]),
        ("config_error", "gauge", "1 while the last jobs.yaml reload failed",
         [("", {}, int(bool(status["config"]["error"])))]),
        ("history_dropped_total", "counter", "Run history writes given up on",
         [("", {}, state.get("history_dropped", 0))]),
    ]
    # Named by issue 26 as users alert on it (ts_, not task_scheduler_); one row per breach in
    # the database, so every node answers the same count, and a failover does not reset it.
    families.append(("ts_sla_breaches_total", "counter", "SLA breaches by job and event (late, "
                     "long_running, overdue), as recorded by the leader; kept as long as runs",
                     [("", {"job": j, "event": e}, n) for j, e, n in service.store.sla.counts()]))
    lines = []
    for name, kind, text, samples in families:
        name = name if name.startswith("ts_") else prefix + name
        lines += [f"# HELP {name} {_help_text(text)}", f"# TYPE {name} {kind}"]
        lines += [f"{name}{suffix}{_labels(labels)} {_number(value)}"
                  for suffix, labels, value in samples]
    return "\n".join(lines) + "\n"


def _labels(labels: dict) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_label_value(v)}"' for k, v in labels.items()) + "}"


def _label_value(value: Any) -> str:
    text = _number(value) if isinstance(value, float) else str(value)
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _help_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: Any) -> str:
    if isinstance(value, float):
        if value != value:
            return "NaN"
        if value in (float("inf"), float("-inf")):
            return "+Inf" if value > 0 else "-Inf"
        return repr(value)
    return str(int(value))
