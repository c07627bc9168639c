"""A seeded, model-based soak of the real service (issue 18, "A soak that would have found these").

Random operations (jobs of every trigger type created, replaced, deleted, paused, resumed, run
and cancelled through the API; jobs.yaml saved good and broken; SIGTERM and ``kill -9``
restarts; command output with NUL, binary and over-long lines; long sleeps under max_instances)
go to real ``python -m task_scheduler`` processes: one on SQLite, or two nodes on one PostgreSQL
schema. After each step the invariants of ``Checker`` are checked against the database, the API
and ``/proc``. A step is plain data: the list is written to ``steps.json`` and printed with the
seed on a violation; ``--seed N`` draws the same steps again and ``--replay FILE`` applies a saved
list as it is.

    python bench/soak.py --minutes 30 --db sqlite --seed 7
    python bench/soak.py --minutes 30 --db postgres        # TS_TEST_POSTGRES_URL, two nodes
    python bench/soak.py --replay /tmp/soak-xyz/steps.json --db sqlite

The step generator (``Plan``) draws from the seed alone, never from answers, so a seed gives the
same steps on every run; what the service then does with them depends on timing, which is why
the saved list and the service logs (in the work folder, kept on a violation) come with it.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import datetime as dt
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Optional
from collections.abc import Callable

import sqlalchemy as sa
import yaml

ROOT = Path(__file__).resolve().parent.parent
UTC = dt.UTC
SETTLE = 12.0        # seconds a fire may take to have its row on a loaded two-core machine
DISTURBANCE = 12.0   # seconds around a restart in which interval fires may be coalesced away
HISTORY = 600.0      # fires older than this are not looked for (retention keeps 1000 per job)
STUCK_WAIT = 30.0    # a queued/running row with no process moves by then (node_timeout is 10)
WORKERS = 10         # a node's workers (Config.max_workers): past them, queued rows wait
READY_WAIT = 30.0    # a started node answers HTTP within this
YAML_WAIT = 30.0     # a good jobs.yaml save is listed by every node by then (failover: ~6 s)
HEALTH_WAIT = 10.0   # ... and its scheduler runs this soon after (it starts after the port)

INVARIANTS = {
    "no_double_fire": "no (job_id, scheduled_at) has two runs with trigger schedule/catchup",
    "every_fire_has_row": "every fire the model can compute that came due has a row",
    "scheduler_up": "every node answers /api/health 200 with the scheduler running",
    "nothing_stuck": "once settled, no queued/running row lacks a live run",
    "max_instances_processes": "the live runs (processes in /proc) of a job <= max_instances",
    "no_server_error": "no API answer is a 500 (or no answer from a live node)",
    "yaml_jobs_match": "the yaml jobs listed are the last good jobs.yaml's, whatever came after",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(UTC)


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --------------------------------------------------------------------------------------------
# Steps: what the plan draws. Plain data; times relative ({"$in": seconds}) until applied.
# --------------------------------------------------------------------------------------------

PAYLOADS = {   # name -> job fields of a command job
    "echo": {"command": ["echo", "soak"]},
    "fail": {"command": ["sh", "-c", "echo no >&2; exit 3"]},
    "nul": {"command": ["printf", "before\\000after\\n"]},           # as `find -print0` writes
    "binary": {"command": ["printf", "\\377\\376\\200bin\\n"]},       # not UTF-8
    "huge": {"command": "head -c 1200000 /dev/zero | tr '\\0' x; echo; "
                        "head -c 300000 /dev/urandom >&2", "shell": True},   # a 1.2 MB line
    "sleep": {"command": ["sleep", "{sleep}"]},
}
EDGE_DATES = ["3026-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "9999-12-31T23:59:59+14:00",
              "2999-06-30T12:00:00+05:30"]


class Plan:
    """Draws steps from the seed and what it drew before (never from the service's answers)."""

    OPS = {"create": 22, "update": 8, "delete": 6, "pause": 5, "resume": 5, "run": 12,
           "cancel": 5, "yaml_save": 6, "yaml_broken": 3, "wait": 14, "sigterm": 3, "kill9": 3,
           "fire_then_restart": 3, "sleepers_then_kill9": 2}
    GUARANTEE = 12   # steps within which each essential operation comes at least once

    def __init__(self, seed: int, nodes: int, skip: tuple = ()):
        self.rng = random.Random(seed)
        self.nodes, self.serial = nodes, 0
        self.api_ids: list[str] = []
        self.yaml_jobs: dict[str, dict] = {}
        self.ops = {op: w for op, w in self.OPS.items() if op not in skip}
        self.pending: list[dict] = []   # the rest of a scenario's steps
        self.count, self.drawn = 0, {}   # steps drawn; op -> the step it was last drawn at
        self.skip = set(skip)

    def starved(self) -> Optional[str]:
        """An essential operation not drawn for GUARANTEE steps: even a short run has each."""
        for op in ("create", "run", "yaml_save", "yaml_broken", "sigterm", "kill9"):
            if op in self.ops and self.count - self.drawn.get(op, 0) >= self.GUARANTEE:
                return op
        return None

    def next(self) -> dict:
        if self.pending:
            step = self.pending.pop(0)
        else:
            op = self.starved() or self.rng.choices(list(self.ops),
                                                    weights=list(self.ops.values()))[0]
            self.drawn[op] = self.count
            step = getattr(self, f"_{op}")()
        self.count += 1
        if step["op"] not in ("yaml_save", "yaml_broken", "wait"):
            step.setdefault("node", self.rng.randrange(self.nodes))
        return step

    # ---- job bodies ----
    def new_id(self, kind: str) -> str:
        self.serial += 1
        jid = f"sk{self.serial}-{kind}"
        if self.rng.random() < 0.1:   # the longest id validation accepts
            jid = (jid + "-" + "x" * 64)[:64]
        return jid

    def trigger(self, edge: bool = True) -> tuple[str, dict]:
        rng = self.rng
        kinds = ["interval", "interval", "date_soon", "date_soon", "cron_fields", "cron_expr",
                 "manual"]
        if edge and "edge" not in self.skip:
            kinds += ["far_date", "far_cron"]
        kind = rng.choice(kinds)
        if kind == "interval":   # a start_date fixes the phase: the model can compute each fire
            return kind, {"type": "interval", "seconds": rng.choice([1, 2, 3, 5, 7]),
                          "start_date": {"$in": rng.randint(1, 4)}}
        if kind == "date_soon":
            return kind, {"type": "date", "run_date": {"$in": rng.randint(1, 6)}}
        if kind == "cron_fields":
            return kind, {"type": "cron", "second": rng.choice(["*/5", "*/10", "7,37"]),
                          "minute": "*"}
        if kind == "cron_expr":
            return kind, {"type": "cron", "expression": rng.choice(["* * * * *", "*/2 * * * *"])}
        if kind == "far_date":
            return kind, {"type": "date", "run_date": rng.choice(EDGE_DATES)}
        if kind == "far_cron":
            return kind, {"type": "cron", "year": rng.choice(["2400", "2999", 9999]),
                          "month": "1", "day": "1", "hour": "0"}
        return kind, {"type": "manual"}

    def body(self, jid: str, edge: bool = True) -> tuple[str, dict]:
        """A job; ``edge``: its trigger may be one validation accepts at the edge (jobs.yaml
        jobs get none: one refused job would refuse every later save of the file)."""
        rng = self.rng
        payload = rng.choice(["echo", "echo", "fail", "nul", "binary", "huge", "sleep", "sleep"])
        tkind, trigger = self.trigger(edge)
        if payload == "huge" and tkind == "interval":
            trigger["seconds"] = 15   # 1.5 MB a run: often enough
        job = {"id": jid, **json.loads(json.dumps(PAYLOADS[payload])), "trigger": trigger}
        if payload == "sleep":
            job["command"][1] = str(rng.choice([4, 6, 10]))   # SIGTERM waits for them
            job["max_instances"] = rng.randint(1, 4)
            if tkind == "interval":
                trigger["seconds"] = max(trigger["seconds"], 3)
        elif rng.random() < 0.2:
            job["max_instances"] = rng.choice([1, 1000])   # the edges validation accepts
        if rng.random() < 0.3:
            job["misfire_grace_time"] = None
        if rng.random() < 0.15:
            job["description"] = "d" * rng.choice([1, 5000])
        if rng.random() < 0.1:
            job["tags"] = [f"t{i}" for i in range(rng.randint(1, 10))]
        return f"{tkind}/{payload}", job

    # ---- operations ----
    def _create(self) -> dict:
        kind, job = self.body(self.new_id("api"))
        self.api_ids.append(job["id"])
        return {"op": "create", "kind": kind, "job": job}

    def _update(self) -> dict:
        if not self.api_ids:
            return self._create()
        jid = self.rng.choice(self.api_ids)
        kind, job = self.body(jid)
        return {"op": "update", "kind": kind, "job": job}

    def _delete(self) -> dict:
        if not self.api_ids:
            return self._create()
        jid = self.rng.choice(self.api_ids)
        self.api_ids.remove(jid)
        return {"op": "delete", "id": jid}

    def any_id(self) -> Optional[str]:
        ids = self.api_ids + list(self.yaml_jobs)
        return self.rng.choice(ids) if ids else None

    def _by_id(self, op: str) -> dict:
        jid = self.any_id()
        return {"op": op, "id": jid} if jid else self._create()

    def _pause(self) -> dict:
        return self._by_id("pause")

    def _resume(self) -> dict:
        return self._by_id("resume")

    def _run(self) -> dict:
        step = self._by_id("run")
        if step["op"] == "run":
            step["times"] = self.rng.choice([1, 1, 2, 5])   # past max_instances at times
        return step

    def _cancel(self) -> dict:
        return self._by_id("cancel")

    def _yaml_save(self) -> dict:
        rng = self.rng
        action = rng.choice(["add", "add", "change", "remove"]) if self.yaml_jobs else "add"
        if action == "add" or not self.yaml_jobs:
            _, job = self.body(self.new_id("yaml"), edge=False)
            self.yaml_jobs[job["id"]] = job
        else:
            jid = rng.choice(sorted(self.yaml_jobs))
            if action == "remove":
                del self.yaml_jobs[jid]
            else:
                self.yaml_jobs[jid] = self.body(jid, edge=False)[1]
        return {"op": "yaml_save", "kind": action, "jobs": list(self.yaml_jobs.values())}

    def _yaml_broken(self) -> dict:
        kind = self.rng.choice(["unknown_key", "bad_yaml", "duplicate", "bad_cron"])
        return {"op": "yaml_broken", "kind": kind, "jobs": list(self.yaml_jobs.values())}

    # ---- scenarios: a few steps in a row that the defects of issue 18 need ----
    def _fire_then_restart(self) -> dict:
        """A date job due in seconds, its fire, then a restart: the fire must not run again."""
        jid = self.new_id("api")
        self.api_ids.append(jid)
        job = {"id": jid, "command": ["echo", "once"],
               "trigger": {"type": "date", "run_date": {"$in": self.rng.randint(1, 3)}}}
        if self.rng.random() < 0.5:
            job["misfire_grace_time"] = None
        self.pending = [{"op": "wait", "seconds": 5}, self.rng.choice([self._sigterm,
                                                                       self._kill9])()]
        return {"op": "create", "kind": "scenario/date_then_restart", "job": job}

    def _sleepers_then_kill9(self) -> dict:
        """Runs of a long sleep up to max_instances, then kill -9 and more runs: the orphans of
        the killed service count toward max_instances."""
        jid = self.new_id("api")
        self.api_ids.append(jid)
        limit = self.rng.randint(2, 4)
        job = {"id": jid, "command": ["sleep", "12"], "max_instances": limit,
               "trigger": {"type": "manual"}}
        self.pending = [{"op": "run", "id": jid, "times": limit}, {"op": "wait", "seconds": 1},
                        self._kill9(), {"op": "run", "id": jid, "times": limit}]
        return {"op": "create", "kind": "scenario/sleepers_then_kill9", "job": job}

    def _wait(self) -> dict:
        return {"op": "wait", "seconds": self.rng.choice([1, 2, 3, 5])}

    def _sigterm(self) -> dict:
        return {"op": "restart", "kind": "sigterm"}

    def _kill9(self) -> dict:
        return {"op": "restart", "kind": "kill9"}


def broken_yaml(kind: str, jobs: list[dict]) -> str:
    """The good jobs plus one fault that makes validation refuse the whole file."""
    if kind == "bad_yaml":
        return yaml.safe_dump(jobs, sort_keys=False) + "- id: [unclosed\n"
    bad = {"id": "broken", "command": ["true"], "trigger": {"type": "manual"}}
    if kind == "unknown_key":
        bad["colour"] = "red"
    elif kind == "bad_cron":
        bad["trigger"] = {"type": "cron", "minute": "*/61"}
    extra = [bad, dict(bad)] if kind == "duplicate" else [bad]
    return yaml.safe_dump(jobs + extra, sort_keys=False)


def resolve(value: Any, now: dt.datetime) -> Any:
    """``{"$in": s}`` -> the ISO time s seconds from now, on a whole second."""
    if isinstance(value, dict):
        if set(value) == {"$in"}:
            moment = now + dt.timedelta(seconds=value["$in"])
            return iso(moment.replace(microsecond=0) + dt.timedelta(seconds=1))
        return {k: resolve(v, now) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, now) for v in value]
    return value


def describe(index: int, step: dict) -> str:
    detail = {k: v for k, v in step.items() if k not in ("op", "jobs", "text")}
    if "job" in detail:
        job = detail.pop("job")
        detail["job"] = {k: (v[:40] + "..." if isinstance(v, str) and len(v) > 40 else v)
                         for k, v in job.items()}
    if "jobs" in step:
        detail["jobs"] = [j["id"] for j in step["jobs"]]
    return f"{index:4d} {step['op']} {json.dumps(detail, default=str)}"


# --------------------------------------------------------------------------------------------
# The service: real processes on free ports, each with an HTTP client
# --------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env() -> dict:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


class Node:
    """One ``python -m task_scheduler`` process; restartable on the same port."""

    def __init__(self, name: str, folder: Path, db_url: str, jobs: Path):
        self.name, self.folder, self.db_url, self.jobs = name, folder, db_url, jobs
        self.port, self.proc = free_port(), None
        folder.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        with open(self.folder / "service.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "task_scheduler", "--config", str(self.jobs), "--db",
                 self.db_url, "--port", str(self.port), "--node-id", self.name],
                cwd=self.folder, stdout=log, stderr=subprocess.STDOUT, env=child_env())

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int, timeout: float = 90.0) -> None:
        """``sig`` and wait for the exit; SIGKILL if it outlives ``timeout``."""
        if not self.alive():
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@dataclasses.dataclass
class Answer:
    status: int            # 0: no answer
    body: Any


class Api:
    """JSON over HTTP to the nodes; every answer goes through ``observe`` (the no-500 check)."""

    def __init__(self, observe: Callable[[str, str, Answer], None]):
        self.observe = observe

    def call(self, node: Node, method: str, path: str, body: Any = None,
             timeout: float = 30.0) -> Answer:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(node.url(path), data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                answer = Answer(resp.status, _json(resp.read()))
        except urllib.error.HTTPError as exc:
            answer = Answer(exc.code, _json(exc.read()))
        except OSError as exc:
            answer = Answer(0, str(exc))
        self.observe(method, f"{node.name}:{path}", answer)
        return answer


def _json(data: bytes) -> Any:
    try:
        return json.loads(data) if data else None
    except ValueError:
        return data[:300].decode(errors="replace")


# --------------------------------------------------------------------------------------------
# The model: what the service should hold, from the answers it gave
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class JobModel:
    id: str
    source: str
    job: dict                       # the definition as accepted (times resolved)
    since: dt.datetime              # the answer that made this trigger current
    max_instances_seen: int = 1     # the highest limit it ever had: runs of an old one go on
    paused: list = dataclasses.field(default_factory=list)   # [start, end or None]
    deleted_at: Optional[dt.datetime] = None

    def fires(self, lo: dt.datetime, hi: dt.datetime) -> list[dt.datetime]:
        """The fire times in [lo, hi] this model can compute simply; [] for the others."""
        trig = self.job["trigger"]
        if trig["type"] == "date":
            when = parse_time(trig["run_date"])
            return [when] if when and lo <= when <= hi else []
        if trig["type"] != "interval" or "start_date" not in trig:
            return []
        start, step = parse_time(trig["start_date"]), trig["seconds"]
        first = max(0, math.ceil((lo - start).total_seconds() / step))
        times, k = [], first
        while (moment := start + dt.timedelta(seconds=k * step)) <= hi:
            times.append(moment)
            k += 1
        return times

    def paused_near(self, moment: dt.datetime, margin: float) -> bool:
        pad = dt.timedelta(seconds=margin)
        return any(start - pad <= moment and (end is None or moment <= end + pad)
                   for start, end in self.paused)


def parse_time(text: Any) -> Optional[dt.datetime]:
    try:
        moment = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def as_utc(value: Any) -> dt.datetime:
    """A ts_runs time (naive UTC; SQLite gives it as text to a raw query) as aware UTC."""
    moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)
    return moment.replace(tzinfo=UTC)


class Model:
    """Jobs as the service accepted them, and when the service was disturbed."""

    def __init__(self):
        self.jobs: dict[str, JobModel] = {}
        self.yaml_ids: set[str] = set()
        self.disturbed: list[list] = []    # [start, end or None] of restarts
        self.ready_at = utcnow()

    def accept(self, source: str, job: dict, now: dt.datetime) -> None:
        old = self.jobs.get(job["id"])
        limit = job.get("max_instances", 1)
        if old and old.deleted_at is None:
            old.max_instances_seen = max(old.max_instances_seen, limit)
            if old.job.get("trigger") != job.get("trigger"):
                old.since = now
            old.job = job
            return
        self.jobs[job["id"]] = JobModel(job["id"], source, job, now, limit)

    def live(self) -> list[JobModel]:
        return [j for j in self.jobs.values() if j.deleted_at is None]

    def disturbed_near(self, moment: dt.datetime) -> bool:
        pad = dt.timedelta(seconds=DISTURBANCE)
        return any(start - pad <= moment and (end is None or moment <= end + pad)
                   for start, end in self.disturbed)


# --------------------------------------------------------------------------------------------
# Invariants: one method each, named as in INVARIANTS; each returns its violations' messages
# --------------------------------------------------------------------------------------------

ACTIVE = ("queued", "running")


class Checker:
    def __init__(self, engine: sa.Engine, model: Model, marker: str, nodes: int = 1):
        self.engine, self.model, self.marker, self.nodes = engine, model, marker, nodes
        self.seen_doubles: set = set()
        self.seen_missing: set = set()
        self.over: set = set()   # jobs over max_instances at the last look

    def query(self, sql: str, **params) -> list:
        with self.engine.connect() as conn:
            return conn.execute(sa.text(sql), params).fetchall()

    def no_double_fire(self) -> list[str]:
        rows = self.query("SELECT job_id, scheduled_at, COUNT(*) FROM ts_runs WHERE trigger IN "
                          "('schedule', 'catchup') GROUP BY job_id, scheduled_at "
                          "HAVING COUNT(*) > 1")
        new = [r for r in rows if (r[0], r[1]) not in self.seen_doubles]
        self.seen_doubles.update((r[0], r[1]) for r in new)
        return [f"{r[0]} at {r[1]}: {r[2]} runs ({self.describe_runs(r[0], r[1])})" for r in new]

    def describe_runs(self, job_id: str, scheduled_at: Any) -> str:
        rows = self.query("SELECT trigger, status, node FROM ts_runs WHERE job_id = :j AND "
                          "scheduled_at = :s", j=job_id, s=scheduled_at)
        return ", ".join("/".join(map(str, r)) for r in rows)

    def every_fire_has_row(self, now: dt.datetime) -> list[str]:
        """Interval (phase fixed by start_date) and date jobs: each fire before now - SETTLE,
        since the job got its trigger, has a row. Interval fires next to a restart and any fire
        next to a pause are exempt (coalesced or legitimately not fired)."""
        if now - self.model.ready_at < dt.timedelta(seconds=SETTLE):
            return []
        hi, problems = now - dt.timedelta(seconds=SETTLE), []
        for job in self.model.jobs.values():
            lo = max(job.since + dt.timedelta(seconds=1), now - dt.timedelta(seconds=HISTORY))
            end = job.deleted_at - dt.timedelta(seconds=SETTLE) if job.deleted_at else hi
            due = [t for t in job.fires(lo, min(hi, end)) if not self.exempt(job, t)]
            if not due:
                continue
            have = {as_utc(r[0]).replace(microsecond=0) for r in self.query(
                "SELECT scheduled_at FROM ts_runs WHERE job_id = :j", j=job.id)}
            missing = [t for t in due if t.replace(microsecond=0) not in have
                       and (job.id, t) not in self.seen_missing]
            self.seen_missing.update((job.id, t) for t in missing)
            if missing:
                problems.append(f"{job.id}: no row for {len(missing)} fire(s), first "
                                f"{iso(missing[0])} ({job.job['trigger']})")
        return problems

    def exempt(self, job: JobModel, moment: dt.datetime) -> bool:
        if job.paused_near(moment, SETTLE):
            return True
        return job.job["trigger"]["type"] == "interval" and self.model.disturbed_near(moment)

    def nothing_stuck(self, wait: float) -> list[str]:
        """Rows queued/running with no process carrying their run id, unchanged for ``wait``
        seconds (a queued row of a job already at max_instances, or while every worker runs
        something, is waiting, not stuck: a long soak piles up more sleeps than workers)."""
        def suspects() -> dict:
            live = live_runs(self.marker)
            rows = self.query("SELECT id, job_id, status FROM ts_runs WHERE status IN "
                              "('queued', 'running')")
            per_job = collections.Counter(job for job in live.values())
            busy = len(live) >= WORKERS * self.nodes
            return {r[0]: (r[1], r[2]) for r in rows if r[0] not in live
                    and not (r[2] == "queued" and (busy or per_job[r[1]] >= self.limit(r[1])))}
        first = suspects()
        deadline = time.monotonic() + wait
        while first and time.monotonic() < deadline:
            time.sleep(1.0)
            now = suspects()
            first = {k: v for k, v in first.items() if now.get(k) == v}
        if not first:
            return []
        jobs = collections.Counter(f"{job}/{status}" for job, status in first.values())
        rid, (job, status) = next(iter(first.items()))
        return [f"{len(first)} runs stay queued/running with no process for {wait:.0f}s "
                f"(job/status: {dict(jobs)}), e.g. run {rid} of {job} ({status})"]

    def limit(self, job_id: str) -> int:
        job = self.model.jobs.get(job_id)
        return job.max_instances_seen if job else 1

    def max_instances_processes(self) -> list[str]:
        """Reported once per job while it stays over its limit."""
        per_job: dict[str, set] = collections.defaultdict(set)
        for run_id, job_id in live_runs(self.marker).items():
            per_job[job_id].add(run_id)
        over = {job for job, runs in per_job.items() if len(runs) > self.limit(job)}
        new, self.over = over - self.over, over
        return [f"{job}: {len(per_job[job])} runs have live processes, max_instances "
                f"{self.limit(job)} ({sorted(per_job[job])})" for job in sorted(new)]


def live_runs(marker: str) -> dict[str, str]:
    """{run id: job id} of the live processes (zombies have no environ) carrying ``marker``."""
    found = {}
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if marker.encode() not in environ:
            continue
        env = dict(item.split(b"=", 1) for item in environ.split(b"\0") if b"=" in item)
        if b"TS_RUN_ID" in env:
            found[env[b"TS_RUN_ID"].decode()] = env.get(b"TS_JOB_ID", b"?").decode()
    return found


def kill_marked(marker: str) -> int:
    """SIGKILL the processes that carry this soak's marker (only jobs this soak defined)."""
    pids = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        with contextlib.suppress(OSError):
            if marker.encode() in Path(f"/proc/{pid}/environ").read_bytes():
                pids.append(int(pid))
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


# --------------------------------------------------------------------------------------------
# The soak: apply a step, check, record
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Violation:
    invariant: str
    step: int
    message: str


@dataclasses.dataclass
class Report:
    seed: Optional[int]
    db: str
    steps: list
    counts: collections.Counter
    checks: collections.Counter
    violations: list
    folder: Path

    def broken(self) -> set[str]:
        return {v.invariant for v in self.violations}

    def text(self, show_steps: bool = True) -> str:
        origin = "a replayed step list" if self.seed is None else f"seed {self.seed}"
        lines = [f"soak on {self.db}: {origin}, {len(self.steps)} steps, work folder "
                 f"{self.folder}", "steps by operation:"]
        lines += [f"  {op:32s} {n}" for op, n in sorted(self.counts.items())]
        lines.append("invariants checked (times):")
        lines += [f"  {name:26s} {self.checks[name]:5d}  {INVARIANTS[name]}"
                  for name in INVARIANTS]
        by_name = collections.defaultdict(list)
        for v in self.violations:
            by_name[v.invariant].append(v)
        lines.append(f"violations: {len(self.violations)}"
                     + (f" of {', '.join(sorted(by_name))}" if by_name else ""))
        for name, found in sorted(by_name.items()):
            lines.append(f"  {name}: {len(found)}")
            lines += [f"    step {v.step}: {v.message[:400]}" for v in found[:8]]
        if self.violations and show_steps:
            again = "" if self.seed is None else f"--seed {self.seed} --steps {len(self.steps)}"
            lines.append(f"replay: python bench/soak.py --db {self.db} {again}   (or --replay "
                         f"{self.folder / 'steps.json'})")
            lines += [describe(i, s) for i, s in enumerate(self.steps)]
        return "\n".join(lines)


class Soak:
    def __init__(self, db: str, db_url: str, folder: Path, seed: Optional[int] = None,
                 nodes: int = 1, skip: tuple = ()):
        self.db, self.seed, self.folder = db, seed, folder
        self.jobs_path = folder / "jobs.yaml"
        self.jobs_path.write_text("[]\n")
        self.marker = f"TS_SOAK={uuid.uuid4().hex}"
        self.nodes = [Node(f"n{i}", folder / f"n{i}", db_url, self.jobs_path)
                      for i in range(nodes)]
        self.engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://",
                                                      1))
        self.model = Model()
        self.checker = Checker(self.engine, self.model, self.marker, len(self.nodes))
        self.api = Api(self.observe)
        self.plan = Plan(seed if seed is not None else 0, nodes, skip)
        self.steps: list[dict] = []
        self.resolved: dict[str, dict] = {}   # plan yaml job (JSON) -> as written
        self.known_down: set[str] = set()     # nodes whose scheduler was down at the last look
        self.counts: collections.Counter = collections.Counter()
        self.checks: collections.Counter = collections.Counter()
        self.violations: list[Violation] = []

    # ---- running ----
    def run(self, seconds: float = 60.0, max_steps: Optional[int] = None,
            replay: Optional[list] = None, min_steps: int = 0) -> Report:
        """Steps for ``seconds`` (and at least ``min_steps``, at most ``max_steps``)."""
        try:
            self.start_all()
            self.check_after("start")
            began = time.monotonic()
            deadline = began + seconds
            source = iter(replay) if replay is not None else None
            while ((time.monotonic() < deadline or len(self.steps) < min_steps)
                   and (max_steps is None or len(self.steps) < max_steps)):
                step = next(source, None) if source is not None else self.plan.next()
                if step is None:
                    break
                self.steps.append(step)
                print(f"{time.monotonic() - began:7.1f}s {describe(len(self.steps) - 1, step)}"
                      [:200], flush=True)
                self.counts[f"{step['op']}:{step.get('kind', '')}".rstrip(":")] += 1
                self.apply(step)
                self.check_after(step["op"])
            self.settle()
        finally:
            (self.folder / "steps.json").write_text(json.dumps(self.steps, indent=1))
            self.shutdown()
        return Report(self.seed, self.db, self.steps, self.counts, self.checks,
                      self.violations, self.folder)

    def start_all(self) -> None:
        for node in self.nodes:
            node.start()
        self.wait_ready()

    def shutdown(self) -> None:
        for node in self.nodes:
            node.stop(signal.SIGTERM, timeout=60)
        kill_marked(self.marker)
        self.engine.dispose()

    def violation(self, invariant: str, messages: list[str], count: bool = True) -> None:
        self.checks[invariant] += count
        for message in messages:
            self.violations.append(Violation(invariant, len(self.steps) - 1, message))
            print(f"VIOLATION {invariant} at step {len(self.steps) - 1}: {message[:300]}",
                  file=sys.stderr, flush=True)

    def observe(self, method: str, where: str, answer: Answer) -> None:
        self.checks["no_server_error"] += 1
        if answer.status == 500 or answer.status == 0:
            self.violation("no_server_error", [f"{method} {where} -> {answer.status} "
                                               f"{str(answer.body)[:300]}"], count=False)

    # ---- checks ----
    def check_after(self, op: str) -> None:
        self.violation("scheduler_up", self.scheduler_up())
        self.violation("no_double_fire", self.checker.no_double_fire())
        self.violation("every_fire_has_row", self.checker.every_fire_has_row(utcnow()))
        self.violation("max_instances_processes", self.checker.max_instances_processes())
        if op in ("start", "restart"):
            self.violation("nothing_stuck", self.checker.nothing_stuck(STUCK_WAIT))
        if op in ("start", "restart", "yaml_broken"):
            self.violation("yaml_jobs_match", self.yaml_jobs_match(wait=HEALTH_WAIT))

    def settle(self) -> None:
        """The end: no new work, let what runs end, then look once more at everything."""
        self.wait_for_quiet(STUCK_WAIT)
        self.violation("nothing_stuck", self.checker.nothing_stuck(STUCK_WAIT))
        self.check_after("settle")

    def wait_for_quiet(self, wait: float) -> None:
        for job in self.model.live():
            self.api.call(self.pick(0), "POST", f"/api/jobs/{job.id}/pause")
            job.paused.append([utcnow() - dt.timedelta(seconds=1), None])
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and live_runs(self.marker):
            time.sleep(1.0)

    def scheduler_up(self) -> list[str]:
        """Each node's health, polled up to HEALTH_WAIT; a node already found down (and not
        restarted since) gets a short look, or a dead scheduler would stall every step."""
        problems = []
        for node in self.nodes:
            if not node.alive():
                problems.append(f"node {node.name} exited with {node.proc.returncode}")
                continue
            was_down = node.name in self.known_down
            answer = self.health(node, 0.0 if was_down else HEALTH_WAIT)
            if answer.status == 200:
                self.known_down.discard(node.name)
            elif not was_down:   # reported when it goes down, not again at every step
                self.known_down.add(node.name)
                problems.append(f"node {node.name}: /api/health -> {answer.status} "
                                f"{answer.body}")
        return problems

    def health(self, node: Node, wait: float) -> Answer:
        deadline = time.monotonic() + wait
        while True:
            answer = self.api.call(node, "GET", "/api/health", timeout=10)
            if answer.status == 200 or not node.alive() or time.monotonic() > deadline:
                return answer
            time.sleep(0.5)

    def yaml_jobs_match(self, wait: float = 0.0) -> list[str]:
        """Every node lists the yaml jobs of the last good save, within ``wait`` seconds (in a
        cluster only the leader applies a save: after a failover that takes a lease's time)."""
        deadline = time.monotonic() + wait
        while True:
            problems = [p for p in map(self.yaml_mismatch, self.nodes) if p]
            if not problems or time.monotonic() > deadline:
                return problems
            time.sleep(0.5)

    def yaml_mismatch(self, node: Node) -> Optional[str]:
        answer = self.api.call(node, "GET", "/api/jobs?source=yaml&limit=1000")
        if answer.status != 200:
            return None   # the 500 check has it
        listed = {j["id"] for j in answer.body["jobs"]}
        if listed == self.model.yaml_ids:
            return None
        return (f"node {node.name} lists yaml jobs {sorted(listed)}, the last good jobs.yaml "
                f"has {sorted(self.model.yaml_ids)}")

    def wait_ready(self) -> None:
        for node in self.nodes:
            deadline = time.monotonic() + READY_WAIT
            while time.monotonic() < deadline and node.alive():
                with contextlib.suppress(OSError):
                    with urllib.request.urlopen(node.url("/api/health"), timeout=5):
                        break
                with contextlib.suppress(OSError):   # 503: up, but the scheduler is not
                    urllib.request.urlopen(node.url("/api/status"), timeout=5).close()
                    break
                time.sleep(0.2)
        self.model.ready_at = utcnow()

    # ---- steps ----
    def pick(self, index: int) -> Node:
        return self.nodes[index % len(self.nodes)]

    def apply(self, step: dict) -> None:
        getattr(self, f"do_{step['op']}")(step)

    def with_marker(self, job: dict) -> dict:
        return {**job, "env": {**job.get("env", {}), **dict([self.marker.split("=")])}}

    def do_create(self, step: dict) -> None:
        job = self.with_marker(resolve(step["job"], utcnow()))
        answer = self.api.call(self.pick(step["node"]), "POST", "/api/jobs", job)
        if answer.status == 201:
            self.model.accept("api", job, utcnow())

    def do_update(self, step: dict) -> None:
        job = self.with_marker(resolve(step["job"], utcnow()))
        answer = self.api.call(self.pick(step["node"]), "PUT", f"/api/jobs/{job['id']}", job)
        if answer.status == 200 and job["id"] in self.model.jobs:
            self.model.accept("api", job, utcnow())

    def do_delete(self, step: dict) -> None:
        sent = utcnow()
        answer = self.api.call(self.pick(step["node"]), "DELETE", f"/api/jobs/{step['id']}")
        if answer.status == 204 and step["id"] in self.model.jobs:
            self.model.jobs[step["id"]].deleted_at = sent

    def do_pause(self, step: dict) -> None:
        sent = utcnow()
        answer = self.api.call(self.pick(step["node"]), "POST", f"/api/jobs/{step['id']}/pause")
        job = self.model.jobs.get(step["id"])
        if answer.status == 200 and job and not (job.paused and job.paused[-1][1] is None):
            job.paused.append([sent, None])

    def do_resume(self, step: dict) -> None:
        answer = self.api.call(self.pick(step["node"]), "POST", f"/api/jobs/{step['id']}/resume")
        job = self.model.jobs.get(step["id"])
        if answer.status == 200 and job and job.paused and job.paused[-1][1] is None:
            job.paused[-1][1] = utcnow()

    def do_run(self, step: dict) -> None:
        for _ in range(step.get("times", 1)):
            self.api.call(self.pick(step["node"]), "POST", f"/api/jobs/{step['id']}/run")

    def do_cancel(self, step: dict) -> None:
        node = self.pick(step["node"])
        answer = self.api.call(node, "GET", f"/api/runs?job_id={step['id']}&status=running"
                                            f"&limit=5")
        runs = answer.body.get("runs", []) if answer.status == 200 else []
        if runs:
            self.api.call(node, "POST", f"/api/runs/{runs[0]['id']}/cancel")

    def do_wait(self, step: dict) -> None:
        time.sleep(step["seconds"])

    def write_jobs(self, text: str) -> None:
        tmp = self.jobs_path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.jobs_path)   # as editors save: by rename

    def reload_all(self) -> list[Answer]:
        return [self.api.call(node, "POST", "/api/reload") for node in self.nodes]

    def yaml_jobs(self, plan_jobs: list[dict]) -> list[dict]:
        """The plan's yaml jobs with their times resolved once, when first written: a save
        that leaves a job alone leaves its trigger alone."""
        jobs = []
        for plan_job in plan_jobs:
            key = json.dumps(plan_job, sort_keys=True)
            if key not in self.resolved:
                self.resolved[key] = self.with_marker(resolve(plan_job, utcnow()))
            jobs.append(self.resolved[key])
        return jobs

    def do_yaml_save(self, step: dict) -> None:
        jobs, sent = self.yaml_jobs(step["jobs"]), utcnow()
        self.write_jobs(yaml.safe_dump(jobs, sort_keys=False, allow_unicode=True))
        answers = self.reload_all()
        if all(a.status == 200 for a in answers):
            self.accept_yaml(jobs, sent)
            self.violation("yaml_jobs_match", self.yaml_jobs_match(wait=YAML_WAIT))

    def accept_yaml(self, jobs: list[dict], sent: dt.datetime) -> None:
        for gone in self.model.yaml_ids - {j["id"] for j in jobs}:
            self.model.jobs[gone].deleted_at = sent
        for job in jobs:
            self.model.accept("yaml", job, utcnow())
        self.model.yaml_ids = {j["id"] for j in jobs}

    def do_yaml_broken(self, step: dict) -> None:
        self.write_jobs(broken_yaml(step["kind"], self.yaml_jobs(step["jobs"])))
        for answer in self.reload_all():
            if answer.status == 200:
                self.violation("yaml_jobs_match", [f"a broken jobs.yaml ({step['kind']}) was "
                                                   f"accepted: {str(answer.body)[:200]}"])

    def do_restart(self, step: dict) -> None:
        node = self.pick(step["node"])
        window = [utcnow(), None]
        self.model.disturbed.append(window)
        node.stop(signal.SIGTERM if step["kind"] == "sigterm" else signal.SIGKILL)
        self.known_down.discard(node.name)
        node.start()
        self.wait_ready()
        window[1] = utcnow()


# --------------------------------------------------------------------------------------------
# Databases and the command line
# --------------------------------------------------------------------------------------------

@contextlib.contextmanager
def database(db: str, folder: Path, pg_base: Optional[str] = None):
    """A fresh SQLite file, or a fresh schema on the PostgreSQL at ``pg_base`` (dropped after)."""
    if db == "sqlite":
        yield f"sqlite:///{folder / 'soak.sqlite'}"
        return
    base = pg_base or os.environ.get("TS_TEST_POSTGRES_URL")
    if not base:
        raise SystemExit("PostgreSQL: set TS_TEST_POSTGRES_URL or --pg-url")
    schema = f"ts_soak_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(base.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()


def soak(db: str, seconds: float, seed: Optional[int] = None, folder: Optional[Path] = None,
         max_steps: Optional[int] = None, replay: Optional[list] = None,
         skip: tuple = (), pg_base: Optional[str] = None, min_steps: int = 0) -> Report:
    """One soak: SQLite with one node, or PostgreSQL with two nodes on one schema."""
    if seed is None and replay is None:
        seed = random.randrange(1 << 31)
    folder = Path(folder or tempfile.mkdtemp(prefix=f"soak-{db}-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"soak on {db}: seed {seed if replay is None else '- (a replay)'}, work folder "
          f"{folder}", flush=True)
    with database(db, folder, pg_base) as url:
        runner = Soak(db, url, folder, seed, nodes=1 if db == "sqlite" else 2, skip=skip)
        return runner.run(seconds, max_steps, replay, min_steps)


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--steps", type=int, help="stop after this many steps (a replay)")
    parser.add_argument("--replay", type=Path, help="apply this steps.json as it is")
    parser.add_argument("--skip", default="", help="operations or 'edge' to leave out, "
                                                   "comma-separated (e.g. edge,kill9)")
    parser.add_argument("--folder", type=Path, help="work folder (default: a new temp folder)")
    parser.add_argument("--pg-url", help="PostgreSQL base URL (default TS_TEST_POSTGRES_URL)")
    args = parser.parse_args(argv)
    replay = json.loads(args.replay.read_text()) if args.replay else None
    report = soak(args.db, args.minutes * 60, args.seed, args.folder, args.steps, replay,
                  tuple(s for s in args.skip.split(",") if s), args.pg_url)
    print(report.text())
    if not report.violations and not args.folder:
        shutil.rmtree(report.folder, ignore_errors=True)
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
