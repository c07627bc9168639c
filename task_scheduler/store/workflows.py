"""Workflow runs in ts_runs: a workflow run started (its graph kept on its row, its first
steps queued), and what follows a step's end decided in the transaction that records the end
(``settle``, called by every path that ends runs: the history writer, claims, cancel, rescue,
sweep), by the pure rules of workflow.py over the sibling rows read under a lock of the parent
row. So two nodes ending sibling steps take turns, and a failover neither loses nor doubles a
step: the unique index (parent_run, step_id, attempt) holds each step's row once per attempt.
Cancel and retry of a whole workflow run are here too. It calls into no part."""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Optional

import sqlalchemy as sa

from .database import Database
from .schema import _SUMMARY_COLUMNS, _TAKEN, new_run_id, ts_runs
from ..models import FINAL_STATUSES
from ..workflow import Decision, decide, last_line, rerun_base

if TYPE_CHECKING:
    from .after import AfterStore

_STEP_ROW = (ts_runs.c.id, ts_runs.c.step_id, ts_runs.c.attempt, ts_runs.c.status,
             ts_runs.c.step_output, ts_runs.c.node, ts_runs.c.started_at,
             ts_runs.c.finished_at, ts_runs.c.error)


def ends_recorded(conn, run_ids: list, retried: bool, workflows: WorkflowStore,
                  after: AfterStore) -> list:
    """What the ends of ``run_ids``, written in ``conn``, call for, in the same transaction:
    their workflow runs decided (steps queued or skipped, a workflow run ended), then the runs
    that follow the ended runs queued (``after:``; a step starts none: its workflow run's end
    does, and that end is final: a workflow run is never retried). ``retried``: the path that
    ended them retries failures by the job's ``retries``. Returns the workflow runs ended."""
    settled = workflows.settle(conn, run_ids)
    after.follow(conn, run_ids, retried=retried)
    after.follow(conn, [r.id for r in settled], retried=False)
    return settled


class WorkflowStore:
    """The steps of workflow runs: started, decided after each end, cancelled, retried."""

    def __init__(self, db: Database):
        self.db = db

    def start(self, run_id: str, graph: dict) -> bool:
        """A claimed workflow run begins: it reads ``running`` (held by no node: its steps are
        what runs, and what heartbeats) with its graph, and its first steps are queued, in one
        transaction. False when the run is no longer this node's to start (cancelled)."""
        with self.db.write() as conn:
            now = self.db.dialect.now_value(conn)
            if not conn.execute(ts_runs.update().where(
                    ts_runs.c.id == run_id, ts_runs.c.status == "queued",
                    ts_runs.c.node == self.db.node).values(
                    status="running", started_at=now, node=None, heartbeat_at=None,
                    workflow=json.dumps(graph))).rowcount:
                return False
            self._settle_one(conn, run_id, now)
        return True

    def settle(self, conn, run_ids) -> list:
        """After runs ended in this transaction: decide the workflow runs of those that are
        steps (in parent id order: two writers lock parents alike). Returns the workflow runs
        ended (summary rows), for their notifications after the commit."""
        run_ids = list(run_ids)
        if not run_ids:
            return []
        parents = sorted(set(conn.execute(sa.select(ts_runs.c.parent_run).where(
            ts_runs.c.id.in_(run_ids), ts_runs.c.parent_run.is_not(None))).scalars()))
        if not parents:
            return []
        now = self.db.dialect.now_value(conn)
        return [row for p in parents if (row := self._settle_one(conn, p, now)) is not None]

    def _settle_one(self, conn, parent_id: str, now: dt.datetime):
        """Decide one workflow run under the lock of its row (PostgreSQL: sibling ends on two
        nodes wait here for each other, and the later sees the earlier's rows)."""
        parent = conn.execute(sa.select(
            ts_runs.c.id, ts_runs.c.job_id, ts_runs.c.status, ts_runs.c.workflow,
            ts_runs.c.scheduled_at, ts_runs.c.cancel_requested, ts_runs.c.params)
            .where(ts_runs.c.id == parent_id).with_for_update()).first()
        if parent is None or parent.status != "running" or not parent.workflow:
            return None
        graph = json.loads(parent.workflow)
        rows = self._step_rows(conn, parent_id, graph)
        decision = decide(graph, rows, bool(parent.cancel_requested))
        self._apply(conn, parent, graph, decision, now)
        if decision.end is None:
            return None
        return conn.execute(ts_runs.update().where(
            ts_runs.c.id == parent_id, ts_runs.c.status == "running")
            .values(status=decision.end, finished_at=now, error=_end_error(decision.end, rows))
            .returning(*_SUMMARY_COLUMNS)).first()

    def _step_rows(self, conn, parent_id: str, graph: dict) -> list[dict]:
        """The workflow run's step rows; a succeeded step with ``output:`` gets its exported
        value from its stdout now, once (any node running a later step reads it)."""
        rows = [dict(r._mapping) for r in conn.execute(
            sa.select(*_STEP_ROW).where(ts_runs.c.parent_run == parent_id))]
        exported = {s["id"] for s in graph["steps"] if s.get("output")}
        for row in rows:
            if row["step_id"] in exported and row["status"] == "succeeded" and \
                    row["step_output"] is None:
                stdout = conn.execute(sa.select(ts_runs.c.stdout).where(
                    ts_runs.c.id == row["id"])).scalar()
                row["step_output"] = last_line(stdout) or ""
                conn.execute(ts_runs.update().where(ts_runs.c.id == row["id"])
                             .values(step_output=row["step_output"]))
        return [{**r, "output": r["step_output"]} for r in rows]

    def _apply(self, conn, parent, graph: dict, decision: Decision, now: dt.datetime) -> None:
        """Insert the rows the decision names (each once: the unique index leaves out one that
        another writer inserted already)."""
        index = {s["id"]: i for i, s in enumerate(graph["steps"])}
        steps = {s["id"]: s for s in graph["steps"]}
        given_env = (json.loads(parent.params or "null") or {}).get("env", {})

        def row(sid: str, attempt: int, **fields) -> dict:
            # scheduled_at apart by the step's place: the fire key (job, time, trigger,
            # attempt) must not join two steps of one run
            at = parent.scheduled_at + dt.timedelta(microseconds=index[sid] + 1)
            return {"id": new_run_id(), "job_id": parent.job_id, "trigger": "step",
                    "attempt": attempt, "scheduled_at": at, "due_at": now,
                    "run_on": steps[sid]["run_on"], "parent_run": parent.id, "step_id": sid,
                    **fields}

        rows = [row(sid, attempt, status="queued", params=_env_params({**given_env, **env}))
                for sid, attempt, env in decision.start]
        rows += [row(sid, attempt, status="queued", due_at=now + dt.timedelta(seconds=delay),
                     params=_env_params(given_env) if given_env else None)
                 for sid, attempt, delay in decision.retry]
        rows += [row(sid, attempt, status=status, finished_at=now, error=reason)
                 for status, ended in (("skipped", decision.skip),
                                       ("cancelled", decision.cancel))
                 for sid, attempt, reason in ended]
        if not rows:
            return
        self.db.dialect.insert_runs(conn, [_full_row(r) for r in rows])
        if decision.start or decision.retry:
            self.db.notify(conn, "ts_runs")

    def cancel(self, run_id: str) -> Optional[list]:
        """Cancel a running workflow run: steps not started are cancelled (queued ones at once,
        the rest by the decision), running ones asked to stop (their node ends them); the run
        ends ``cancelled`` when its last step has. Returns the step runs asked to stop, or None
        when ``run_id`` is no running workflow run. The steps are locked before the workflow
        run's row, as a step's end locks them (PostgreSQL: no deadlock with it); steps queued
        meanwhile are taken after the lock, skipping those an end holds (it decides them)."""
        with self.db.write() as conn:
            now = self.db.dialect.now_value(conn)
            if conn.execute(sa.select(ts_runs.c.id).where(
                    ts_runs.c.id == run_id, ts_runs.c.status == "running",
                    ts_runs.c.workflow.is_not(None))).first() is None:
                return None
            asked = self._stop_steps(conn, run_id, now, skip_locked=False)
            if conn.execute(sa.select(ts_runs.c.status).where(ts_runs.c.id == run_id)
                            .with_for_update()).scalar() != "running":
                return asked   # it ended meanwhile
            conn.execute(ts_runs.update().where(ts_runs.c.id == run_id)
                         .values(cancel_requested=True))
            asked += self._stop_steps(conn, run_id, now, skip_locked=True)
            self._settle_one(conn, run_id, now)
            self.db.notify(conn, "ts_runs")
        return asked

    def _stop_steps(self, conn, run_id: str, now: dt.datetime, skip_locked: bool) -> list:
        """Queued steps no node holds end ``cancelled``; steps a node holds are asked to stop.
        Returns the ids of the latter."""
        query = sa.select(ts_runs.c.id, ts_runs.c.node, ts_runs.c.status).where(
            ts_runs.c.parent_run == run_id, _TAKEN | (ts_runs.c.status == "queued")) \
            .order_by(ts_runs.c.id)
        rows = conn.execute(self.db.dialect.skip_locked(query) if skip_locked
                            else query.with_for_update()).all()
        waiting = [r.id for r in rows if r.status == "queued" and r.node is None]
        held = [r.id for r in rows if r.id not in waiting]
        if waiting:
            conn.execute(ts_runs.update().where(ts_runs.c.id.in_(waiting)).values(
                status="cancelled", finished_at=now,
                error="the workflow run was cancelled before this step started"))
        if held:
            conn.execute(ts_runs.update().where(ts_runs.c.id.in_(held))
                         .values(cancel_requested=True))
        return held

    def retry(self, run_id: str) -> Optional[list]:
        """A finished workflow run again, as its next attempt: the steps that did not succeed
        run again (their new rows attempt past their old ones), the succeeded ones are kept.
        Returns the step ids run again; None when ``run_id`` is no finished workflow run or
        every step succeeded."""
        with self.db.write() as conn:
            now = self.db.dialect.now_value(conn)
            parent = conn.execute(sa.select(
                ts_runs.c.id, ts_runs.c.status, ts_runs.c.workflow, ts_runs.c.attempt)
                .where(ts_runs.c.id == run_id).with_for_update()).first()
            if parent is None or not parent.workflow or parent.status not in FINAL_STATUSES:
                return None
            rows = [dict(r._mapping) for r in conn.execute(
                sa.select(*_STEP_ROW).where(ts_runs.c.parent_run == run_id))]
            graph, again = rerun_base(json.loads(parent.workflow), rows)
            if not again:
                return None
            conn.execute(ts_runs.update().where(ts_runs.c.id == run_id).values(
                status="running", finished_at=None, error=None, cancel_requested=False,
                attempt=parent.attempt + 1, workflow=json.dumps(graph)))
            self._settle_one(conn, run_id, now)
        return again

    def steps_of(self, run_id: str) -> list:
        """The step rows of a workflow run (every attempt), oldest first."""
        with self.db.engine.connect() as conn:
            return conn.execute(sa.select(*_STEP_ROW).where(ts_runs.c.parent_run == run_id)
                                .order_by(ts_runs.c.id)).all()


def _env_params(env: dict) -> Optional[str]:
    return json.dumps({"env": env}) if env else None


def _end_error(status: str, rows: list[dict]) -> Optional[str]:
    if status in ("succeeded", "skipped"):
        return None
    bad = sorted({r["step_id"] for r in rows if r["status"] not in ("succeeded", "skipped")
                  and r["status"] in FINAL_STATUSES})
    return f"workflow {status}: steps not succeeded: {', '.join(bad)}" if bad else None


def _full_row(fields: dict) -> dict:
    row = {c.name: None for c in ts_runs.c}
    row.update(truncated=False, cancel_requested=False)
    row.update(fields)
    return row
