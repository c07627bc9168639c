"""Jobs that start when others end (a job's ``after: {job, on}``): the checks across jobs (a
name that no job has, a loop of jobs starting each other) and the plan the store applies when
runs end (``build_plan``: plain data built from the jobs as applied, read inside the transaction
that records an end, so that the store never calls back into a part). It runs no SQL."""

from __future__ import annotations

import types
from collections.abc import Iterable, Mapping
from typing import NamedTuple, Optional

from .models import JobDefinition

RETRIED = frozenset(("failed", "timeout", "interrupted"))   # what Runner's retry runs again


class Downstream(NamedTuple):
    """One job to queue when a run of its upstream ends with a status in ``on``;
    ``held``: why it is recorded ``skipped`` instead (paused, disabled), or None."""

    job_id: str
    on: frozenset
    run_on: str
    held: Optional[str]


class Upstream(NamedTuple):
    """An upstream job's part of the plan: its ``retries.max`` (None: no retries) and the jobs
    that follow it."""

    retry_max: Optional[int]
    jobs: tuple


def build_plan(jobs: Iterable[tuple[JobDefinition, bool]]) -> Mapping[str, Upstream]:
    """{upstream job id: Upstream} of (definition, paused) pairs, read-only."""
    jobs = list(jobs)
    retries = {d.id: (d.retries.max if d.retries else None) for d, _ in jobs}
    following: dict[str, list] = {}
    for defn, paused in jobs:
        if defn.after is not None:
            held = "disabled" if not defn.is_enabled else "paused" if paused else None
            following.setdefault(defn.after.job, []).append(Downstream(
                defn.id, frozenset(defn.after.on), ",".join(sorted(set(defn.run_on))), held))
    return types.MappingProxyType({
        up: Upstream(retries.get(up), tuple(sorted(downs))) for up, downs in following.items()})


def matches(upstream: Upstream, down: Downstream, status: str, attempt: int,
            retried: bool) -> bool:
    """Whether an end (``status``, ``attempt``) queues ``down``. ``retried``: the path that
    recorded the end retries per the job's ``retries`` (a run's own end, a rescue); a failure
    retried then is not the final one, and only the last attempt counts (as notifications'
    ``failed``). So an upstream that fails and then succeeds on a retry starts its
    ``succeeded`` jobs once, and its ``failed`` jobs never."""
    if status not in down.on:
        return False
    return not (retried and status in RETRIED and upstream.retry_max is not None
                and attempt <= upstream.retry_max)


def applied_with(records: Mapping, desired: Mapping[str, JobDefinition], source: str,
                 remove_missing: bool) -> dict[str, JobDefinition]:
    """All jobs as they would be once ``desired`` is reconciled (JobBook.reconcile): the
    applied ones (``records``: id -> JobRecord) the reconcile keeps, and the desired ones."""
    jobs = {i: r.definition for i, r in records.items()
            if not (remove_missing and r.source == source and i not in desired)}
    jobs.update(desired)
    return jobs


def after_problems(jobs: Mapping[str, JobDefinition], checked: Iterable[str],
                   names: bool = True) -> list[dict]:
    """Problems of the ``after:`` of the ``checked`` jobs among all ``jobs`` (those applied
    and those about to be): a job that does not exist (unless not ``names``: a file alone
    cannot tell, its jobs may follow API jobs), and loops (``a -> b -> a``: each end would
    start the next, forever). Details ``{job, field, message}``."""
    details = []
    for job_id in checked if names else ():
        spec = jobs[job_id].after
        if spec is not None and spec.job not in jobs:
            details.append({"job": job_id, "field": "after.job", "message": (
                f"job {spec.job!r} does not exist (after: names a job of jobs.yaml or one "
                f"created through the API)")})
    for path in cycles(jobs, checked):
        details.append({"job": path[0], "field": "after.job", "message": (
            f"a cycle of jobs starting each other: {' -> '.join(path)}; remove after: from "
            f"one of them")})
    return details


def cycles(jobs: Mapping[str, JobDefinition], starts: Iterable[str]) -> list[list[str]]:
    """Each loop through ``starts`` once, as its path in the order the jobs start each other
    (``[a, b, a]``: a's end starts b, b's starts a). Every job names at most one upstream, so
    following ``after`` from a job either ends or comes back: no search, no recursion."""
    found, seen = [], set()
    for start in starts:
        path, job_id = [start], start
        while True:
            spec = jobs[job_id].after if job_id in jobs else None
            if spec is None or spec.job in seen:
                break
            if spec.job in path:
                loop = path[path.index(spec.job):] + [spec.job]
                found.append(loop[::-1])
                break
            path.append(spec.job)
            job_id = spec.job
        seen.update(path)
    return found
