"""The run log: the runs as the API and the GUI read them, from the store and, for runs still going
or just ended here, from the runner's memory; why a queued run waits. It must not change a run
(runner.py does)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Optional
from collections.abc import Callable

from .errors import JobConflict, RunNotFound
from .models import FINAL_STATUSES, Page, run_to_dict, target_text
from .output import output_parts, output_since
from .store.schema import RUN_SPAN_COLUMNS, build_search_index
from .timeutil import _aware, _iso
from .workflow import steps_view

log = logging.getLogger("task_scheduler")

SEAL_AFTER = 300.0   # s: a bucket of counts that ended this long ago, with no run queued or
SEAL_AGE = 60.0      # running, is kept and not read again for this long (a run recorded late
                     # by another node, a prune: seen within a minute)
ACTIVE = ("queued", "running")

if TYPE_CHECKING:
    from .runner import Runner
    from .store import Store


class RunLog:
    """Reads runs: the store's rows, overlaid with the runner's live state (output so far, a
    status not yet written), and explains a queued run's wait by ``nodes`` and ``now``."""

    def __init__(self, store: Store, runner: Runner, *, nodes: Callable[[], list],
                 now: Callable[[], dt.datetime]):
        self.store, self.runner = store, runner
        self._nodes, self._now = nodes, now
        self._sealed: dict = {}   # (width, offset) -> (monotonic time, first, end, rows)
        self._sealed_lock = threading.Lock()

    def runs(self, job_id: Optional[str] = None, status=None,
             since: Optional[dt.datetime] = None, limit: int = 50, offset: int = 0,
             trigger: Optional[str] = None, before: Optional[str] = None,
             after: Optional[str] = None, **search) -> Page:
        """Runs newest first (without their output); ``.total`` counts the matches (up to a
        cap: ``.capped``); ``before``/``after`` are run-id cursors (see ``Store.runs``).
        ``since``/``until`` bound ``scheduled_at``; ``q`` is a phrase searched in stdout and
        stderr (any case; each run then has ``match``: its first line holding it, docs/api.md)."""
        page = self.store.queries.runs(job_id, status, since, limit, offset, trigger, before,
                                       after, **search)
        matches = self.store.queries.matches([r["id"] for r in page], search.get("q"))
        for index, run in enumerate(page):
            live = self._live(run["id"])
            page[index] = self._explain(run_to_dict(live) if live is not None else run)
            if search.get("q"):
                page[index]["match"] = matches.get(run["id"])
        return page

    def rerun(self, run_id: str) -> dict:
        """Queue a finished run's job again, with the same parameters, linked by rerun_of."""
        run = self.run(run_id)
        if run["status"] not in FINAL_STATUSES:
            raise JobConflict(f"run {run_id} is {run['status']}; rerun it once it has ended")
        return self.runner.run_now(run["job_id"], run.get("params"), rerun_of=run_id)

    def retry_workflow(self, run_id: str) -> dict:
        """Run a finished workflow run's failed and skipped steps again (its succeeded steps
        kept), as the run's next attempt; 409 for any other run."""
        again = self.store.workflows.retry(run_id)
        if again is None:
            run = self.run(run_id)   # 404 for an unknown run
            what = ("is no workflow run" if "steps" not in run else f"is {run['status']}"
                    if run["status"] not in FINAL_STATUSES else "has no failed or skipped step")
            raise JobConflict(f"run {run_id} {what}: only a finished workflow run with failed "
                              f"or skipped steps can be retried (POST /api/runs/{run_id}/rerun "
                              f"runs a job again)")
        self.runner.wake()
        log.info("workflow run %s: retrying steps %s", run_id, ", ".join(again))
        return self.run(run_id)

    def build_search_index(self) -> None:
        """PostgreSQL: the output search index of a long history, built in a thread beside
        the service (store.schema.build_search_index); searches read the runs until then."""
        threading.Thread(target=self._build_search_index, name="ts-search-index",
                         daemon=True).start()

    def _build_search_index(self) -> None:
        try:
            build_search_index(self.store.engine)
        except Exception:
            log.exception("output search: building the index failed; searches read the runs "
                          "instead; it is tried again at the next start")

    def run_spans(self, since: dt.datetime, limit: int, job_ids: Optional[list] = None,
                  windows: tuple = ()) -> tuple[list[dict], bool]:
        """For the timeline; see ``SchedulerService.run_spans``."""
        rows = self.store.queries.run_spans(since, limit, job_ids, windows)
        spans = []
        for row in rows[:limit]:
            live = self._live(row.id) if row.status in ("queued", "running") else None
            values = [live.get(k, v) for k, v in zip(RUN_SPAN_COLUMNS, row, strict=True)] \
                if live is not None else row
            run_id, job_id, trigger, status, scheduled, began, ended = values
            scheduled, began, ended = _aware(scheduled), _aware(began), _aware(ended)
            spans.append({"id": run_id, "job_id": job_id, "trigger": trigger, "status": status,
                          "scheduled_at": scheduled, "started_at": began, "finished_at": ended,
                          "duration_s": round((ended - began).total_seconds(), 3)
                          if began and ended else None})
        return spans, len(rows) > limit

    def run_buckets(self, since: dt.datetime, width: int, offset: int) -> list[tuple]:
        """For the timeline; see ``SchedulerService.run_buckets``. A day of a million-run
        history is ~35,000 rows to count: the buckets that can no longer change (ended
        SEAL_AFTER ago, nothing queued or running in them) are counted once a SEAL_AGE, and
        each call counts only the ones after them."""
        first = (int(since.timestamp()) + offset) // width
        key, now = (width, offset), time.monotonic()
        with self._sealed_lock:
            made, low, end, sealed = self._sealed.get(key, (-SEAL_AGE, 0, 0, []))
        if now - made < SEAL_AGE and low <= first:
            rows = [r for r in sealed if r[1] >= first] + list(self.store.queries.run_buckets(
                _bucket_start(max(end, first), width, offset), width, offset))
        else:
            rows = list(self.store.queries.run_buckets(_bucket_start(first, width, offset),
                                                       width, offset))
            ended = (int(time.time() - SEAL_AFTER) + offset) // width   # buckets before it
            end = min([ended] + [r[1] for r in rows if r[2] in ACTIVE])
            with self._sealed_lock:
                if len(self._sealed) > 16:   # ranges times zones asked for: a few
                    self._sealed.clear()
                self._sealed[key] = (now, first, end, [r for r in rows if r[1] < end])
        starts: dict = {}   # a day of 100 jobs: 5,000 rows, 25 buckets
        return [(job_id, starts.get(bucket) or starts.setdefault(
            bucket, _bucket_start(bucket, width, offset)), status, count)
            for job_id, bucket, status, count in rows]

    def first_run_since(self, since: dt.datetime) -> Optional[dt.datetime]:
        """When the oldest run scheduled since ``since`` was scheduled (aware, UTC)."""
        return _aware(self.store.queries.first_run_since(since))

    def run(self, run_id: str) -> dict:
        """One run with its stdout and stderr (live output for a run still going), and what
        was sent about it."""
        live = self._live(run_id)
        if live is not None:
            run = run_to_dict(live, output=True)
        else:
            row = self.store.queries.run(run_id)
            if row is None:
                raise RunNotFound(f"run {run_id!r} does not exist")
            run = self._explain(run_to_dict(row, output=True))
            if row.workflow:
                run["steps"] = steps_view(json.loads(row.workflow), [
                    dict(r._mapping) for r in self.store.workflows.steps_of(run_id)])
        run["notifications"] = [
            {"id": n.id, "event": n.event, "target": target_text(json.loads(n.target)),
             "status": n.status, "attempts": n.attempts, "log": json.loads(n.log)}
            for n in self.store.notes.notes_of(run_id)] if run["status"] in FINAL_STATUSES else []
        run["sla_breaches"] = [   # promises it broke: a row of its history each
            {"event": b.event, "due_at": _iso(b.due_at), "detected_at": _iso(b.detected_at),
             "detail": b.detail} for b in self.store.sla.breaches_of([run_id]).get(run_id, [])]
        return run

    def output(self, run_id: str, stream: str, offset: int = 0) -> dict:
        """A run's stdout or stderr after byte ``offset``, to tail a run that goes on: from
        memory on the node running it, else as that node last wrote it (under a second old)."""
        active = self.runner.active.get(run_id)
        if active is not None:
            parts, status = (active.out if stream == "stdout" else active.err).parts(), \
                active.run.status
        else:
            run = self.run(run_id)
            parts, status = output_parts(run[stream]), run["status"]
        text, after = output_since(*parts, min(offset, parts[2]))
        return {"text": text, "offset": after, "status": status,
                "running": status in ("queued", "running"),
                "truncated": parts[2] > len(parts[0]) + len(parts[1])}

    def _explain(self, run: dict) -> dict:
        """Why a queued run has not started: no live node has its labels, or a retry's delay."""
        if run["status"] != "queued":
            return run
        if run.get("node"):
            run["waiting"] = f"claimed by node {run['node']}: waits for a free worker there"
        elif run["run_on"] and not any(set(run["run_on"]) <= set(node["labels"])
                                     for node in self._nodes() if node["alive"]):
            run["waiting"] = (f"no live node has the labels {', '.join(run['run_on'])}; it "
                              f"starts when one does (--labels)")
        elif run.get("due_at") and dt.datetime.fromisoformat(run["due_at"]) > self._now():
            run["waiting"] = f"a retry: due at {run['due_at']}"
        return run

    def _live(self, run_id: str) -> Optional[dict]:
        active = self.runner.active.get(run_id)
        if active is not None:
            return {**active.run.to_row(), "stdout": active.out.text(),
                    "stderr": active.err.text()}
        ended = self.runner.recent.get(run_id)
        return ended.to_row() if ended is not None else None


def _bucket_start(bucket: int, width: int, offset: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(bucket * width - offset, dt.UTC)
