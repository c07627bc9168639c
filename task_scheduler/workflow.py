"""The rules of workflows (a job's ``steps:``): the graph checked (unknown ids, duplicates,
cycles named as their path), a step's definition with the job's settings as its defaults, and
what happens next given the steps' rows: which steps start, retry, are skipped or cancelled,
and how the workflow run ends. Pure functions of values: the store applies them inside the
transaction that records a step's end (store/workflows.py), so nothing here may touch the
database or a part."""

from __future__ import annotations

import dataclasses
from typing import Optional

from .models import JobDefinition, StepDefinition
from .timeutil import _iso

OUTPUT_CAP = 4096   # bytes of a step's exported output: an environment variable, not a file
ACTIVE = ("queued", "running")
FAILED = ("failed", "timeout", "interrupted", "cancelled", "missed")
RETRIED = ("failed", "timeout", "interrupted")   # as a job's retries: what a retry may mend
# the workflow run's status: the worst of its steps' (skipped ones do not count: a step left
# out by its ``when`` is the graph working as written)
WORST = ("failed", "timeout", "interrupted", "cancelled", "missed", "succeeded")


def graph_problems(steps: list[StepDefinition]) -> list[tuple[str, str]]:
    """(field, message) per mistake of the graph: duplicate ids, ``after`` naming an unknown
    step or the step itself, and a cycle (named as its path, ``a -> b -> a``)."""
    problems, seen = [], {}
    for index, step in enumerate(steps):
        if step.id in seen:
            problems.append((f"steps.{index}.id", f"duplicate step id {step.id!r} (first "
                                                  f"used by step {seen[step.id] + 1})"))
        seen.setdefault(step.id, index)
    for index, step in enumerate(steps):
        for name in step.after:
            if name == step.id:
                problems.append((f"steps.{index}.after", f"step {step.id!r} cannot come "
                                                         f"after itself (a cycle: {name} -> "
                                                         f"{name})"))
            elif name not in seen:
                problems.append((f"steps.{index}.after", f"unknown step {name!r}; the steps "
                                                          f"are: {', '.join(seen)}"))
    cycle = find_cycle({s.id: [a for a in s.after if a in seen and a != s.id] for s in steps})
    if cycle:
        problems.append((f"steps.{seen[cycle[0]]}.after", "the steps form a cycle (each comes "
                         "after the next): " + " -> ".join(cycle)))
    return problems


def find_cycle(after: dict[str, list]) -> Optional[list[str]]:
    """A cycle of the graph (step -> the steps it comes after) as a path whose first and last
    ids are the same, or None. Iterative: a graph of many steps does not hit the recursion
    limit."""
    color: dict[str, int] = {}   # 1: on the current path, 2: done
    for root in after:
        if color.get(root):
            continue
        path, stack = [root], [iter(after.get(root, ()))]
        color[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                color[path.pop()] = 2
                stack.pop()
            elif color.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not color.get(nxt) and nxt in after:
                color[nxt] = 1
                path.append(nxt)
                stack.append(iter(after.get(nxt, ())))
    return None


def order(graph: list[dict]) -> list[dict]:
    """The steps with each after the ones it depends on (the file's order where free)."""
    done, out, left = set(), [], list(graph)
    while left:
        ready = [s for s in left if set(s["after"]) <= done]
        if not ready:
            raise ValueError("the steps form a cycle")
        for step in ready:
            done.add(step["id"])
            out.append(step)
        left = [s for s in left if s["id"] not in done]
    return out


def graph_of(defn: JobDefinition) -> dict:
    """What a workflow run keeps of its job's steps when it starts (the parent row's
    ``steps``): the graph and what the store decides with, frozen for the run; ``base``:
    each step's first attempt that counts (a retry of the workflow run moves it)."""
    steps = []
    for step in defn.steps or []:
        retries = step.retries if "retries" in step.model_fields_set else defn.retries
        steps.append({"id": step.id, "after": list(step.after), "when": step.when,
                      "output": step.output, "retries": retries.model_dump() if retries
                      else None, "run_on": ",".join(sorted(
                          step.run_on if "run_on" in step.model_fields_set else defn.run_on))})
    return {"steps": order(steps), "base": {}}


_STEP_FIELDS = ("func", "command", "shell", "args", "kwargs", "cwd", "timeout", "retries",
                "run_on", "isolation")


def step_definition(defn: JobDefinition, step_id: str) -> Optional[JobDefinition]:
    """What one step runs: the job's definition with the step's fields over it (env merged);
    None when the job has no such step (any more)."""
    step = next((s for s in defn.steps or [] if s.id == step_id), None)
    return None if step is None else merge_step(defn, step)


def merge_step(defn: JobDefinition, step: StepDefinition) -> JobDefinition:
    """``step`` over the job's settings (its defaults)."""
    given = step.model_fields_set
    update = {name: getattr(step, name) for name in _STEP_FIELDS
              if name in given or name in ("func", "command")}
    update.update(steps=None, env={**defn.env, **step.env})
    return defn.model_copy(update=update)


def last_line(text: Optional[str], cap: int = OUTPUT_CAP) -> Optional[str]:
    """A step's exported output: its last non-empty stdout line, at most ``cap`` bytes of
    UTF-8 (cut at a character), without NUL (an environment variable cannot hold one)."""
    for line in reversed((text or "").splitlines()):
        if line.strip():
            line = line.replace("\0", "")
            return line.encode()[:cap].decode(errors="ignore")
    return None


@dataclasses.dataclass
class Decision:
    """What the store writes after a step's end: rows to insert (``start``: queued, with the
    environment of the outputs so far; ``retry``: queued after ``delay`` seconds; ``skip`` and
    ``cancel``: ended at once with the reason) and the workflow run's end status, if it ends."""

    start: list = dataclasses.field(default_factory=list)    # (step_id, attempt, env)
    retry: list = dataclasses.field(default_factory=list)    # (step_id, attempt, delay)
    skip: list = dataclasses.field(default_factory=list)     # (step_id, attempt, reason)
    cancel: list = dataclasses.field(default_factory=list)   # (step_id, attempt, reason)
    end: Optional[str] = None


def current(graph: dict, rows: list[dict]) -> dict[str, dict]:
    """Each step's row of the workflow run's current attempt (its newest attempt at or past
    the step's ``base``); steps with none are left out."""
    base, latest = graph.get("base", {}), {}
    for row in rows:
        sid = row["step_id"]
        if row["attempt"] >= base.get(sid, 1) and \
                (sid not in latest or row["attempt"] > latest[sid]["attempt"]):
            latest[sid] = row
    return latest


def decide(graph: dict, rows: list[dict], cancelled: bool = False) -> Decision:
    """What comes next for a workflow run whose step rows are ``rows`` (dicts with step_id,
    attempt, status, output); ``cancelled``: the run was asked to stop (nothing new starts,
    the steps not started are cancelled). Deterministic: the same rows give the same answer,
    so deciding twice (two nodes, a rescue after an end) inserts nothing twice."""
    decision, base = Decision(), graph.get("base", {})
    rows_now = current(graph, rows)
    final, env = {}, {}
    for step in graph["steps"]:
        row = rows_now.get(step["id"])
        if row is None or row["status"] in ACTIVE:
            continue
        tries = row["attempt"] - base.get(step["id"], 1) + 1
        spec = step.get("retries")
        if row["status"] in RETRIED and not cancelled and spec and tries <= spec["max"]:
            delay = spec["delay"] * spec["backoff"] ** (tries - 1)
            decision.retry.append((step["id"], row["attempt"] + 1, delay))
            continue
        final[step["id"]] = row["status"]
        if row["status"] == "succeeded" and step.get("output") and row.get("output") is not None:
            env[step["output"]] = row["output"]
    retrying = {r[0] for r in decision.retry}
    for step in graph["steps"]:   # in order: a skip reaches the steps after it at once
        sid = step["id"]
        if sid in rows_now or sid in final:
            continue
        attempt = base.get(sid, 1)
        if cancelled:
            decision.cancel.append((sid, attempt, "the workflow run was cancelled"))
            final[sid] = "cancelled"
        elif all(a in final for a in step["after"]):
            reason = _skip_reason(step, final)
            if reason is None:
                decision.start.append((sid, attempt, dict(env)))
            else:
                decision.skip.append((sid, attempt, reason))
                final[sid] = "skipped"
    if len(final) == len(graph["steps"]) and not retrying:
        decision.end = "cancelled" if cancelled else worst(final.values())
    return decision


def _skip_reason(step: dict, final: dict) -> Optional[str]:
    """Why a step whose upstream steps all ended does not run (None: it runs)."""
    ups = [(a, final[a]) for a in step["after"]]
    if step["when"] == "all_done":
        return None
    if step["when"] == "any_failed":
        if any(status in FAILED for _, status in ups):
            return None
        return "when: any_failed, and no upstream step failed"
    bad = next(((a, s) for a, s in ups if s != "succeeded"), None)
    return None if bad is None else f"upstream step {bad[0]} ended {bad[1]} (when: all_succeeded)"


def worst(statuses) -> str:
    """The workflow run's status: the worst of its steps' (skipped ones aside)."""
    counted = [s for s in statuses if s != "skipped"]
    if not counted:
        return "skipped"
    return min(counted, key=lambda s: WORST.index(s) if s in WORST else 0)


def rerun_base(graph: dict, rows: list[dict]) -> tuple[dict, list]:
    """For a retry of a finished workflow run: the graph with ``base`` moved past the current
    rows of the steps that did not succeed, and those steps' ids."""
    rows_now = current(graph, rows)
    base, again = dict(graph.get("base", {})), []
    for step in graph["steps"]:
        row = rows_now.get(step["id"])
        if row is None or row["status"] != "succeeded":
            newest = max((r["attempt"] for r in rows if r["step_id"] == step["id"]), default=0)
            base[step["id"]] = newest + 1
            again.append(step["id"])
    return {**graph, "base": base}, again


def graph_view(defn: JobDefinition) -> Optional[list[dict]]:
    """A job's steps as the API shows them (None: no workflow)."""
    if defn.steps is None:
        return None
    return [{"id": step.id, "after": list(step.after), "when": step.when,
             "kind": merge_step(defn, step).kind, "output": step.output,
             "run_on": step.run_on or defn.run_on} for step in defn.steps]


def steps_view(graph: dict, rows: list[dict]) -> list[dict]:
    """A workflow run's steps as the API shows them, in the graph's order: each step's newest
    row (``pending``: none yet) and the ids of all its runs (retries, earlier attempts)."""
    out = []
    for step in graph["steps"]:
        mine = sorted((r for r in rows if r["step_id"] == step["id"]),
                      key=lambda r: r["attempt"])
        row = mine[-1] if mine else {}
        out.append({"step_id": step["id"], "after": step["after"], "when": step["when"],
                    "run_id": row.get("id"), "status": row.get("status", "pending"),
                    "attempt": row.get("attempt"), "node": row.get("node"),
                    "started_at": _iso(row.get("started_at")),
                    "finished_at": _iso(row.get("finished_at")),
                    "output": row.get("step_output"), "error": row.get("error"),
                    "runs": [r["id"] for r in mine]})
    return out
