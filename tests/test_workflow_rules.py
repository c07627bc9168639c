"""The pure rules of workflows (task_scheduler.workflow): graph checks, order, cycles, and
decide() over random graphs with ends in random order against an oracle written apart."""

from __future__ import annotations

import random

import pytest

from task_scheduler.models import JobDefinition
from task_scheduler.workflow import (
    decide, find_cycle, graph_of, last_line, order, rerun_base, step_definition, worst)

from workflow_oracle import expected, outcome, random_graph


def test_find_cycle_names_the_path():
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": [], "b": ["a"], "c": ["a", "b"]}) is None
    assert find_cycle({"x": ["x"]}) == ["x", "x"]


def test_find_cycle_of_a_long_chain_does_not_recurse():
    chain = {f"s{i}": [f"s{i + 1}"] for i in range(5000)}
    chain["s5000"] = ["s0"]
    assert len(find_cycle(chain)) == 5002


def test_order_puts_each_step_after_its_upstream():
    graph = [{"id": "c", "after": ["a", "b"]}, {"id": "a", "after": []},
             {"id": "b", "after": ["a"]}]
    assert [s["id"] for s in order(graph)] == ["a", "b", "c"]
    with pytest.raises(ValueError):
        order([{"id": "a", "after": ["b"]}, {"id": "b", "after": ["a"]}])


def test_last_line_is_capped_and_skips_blank_lines():
    assert last_line("one\ntwo\n\n  \n") == "two"
    assert last_line("") is None and last_line(None) is None
    assert last_line("x" * 10000) == "x" * 4096
    assert last_line("é" * 3000).encode() == ("é" * 2048).encode()


def test_step_definition_takes_the_jobs_settings_as_defaults():
    job = JobDefinition.model_validate({
        "id": "j", "env": {"A": "1", "B": "1"}, "timeout": 5, "run_on": ["db"],
        "retries": {"max": 2}, "steps": [
            {"id": "x", "command": ["true"], "env": {"B": "2"}},
            {"id": "y", "command": ["true"], "timeout": 9, "run_on": [], "after": ["x"],
             "retries": {"max": 0}}]})
    x, y = step_definition(job, "x"), step_definition(job, "y")
    assert x.env == {"A": "1", "B": "2"} and x.timeout == 5 and x.run_on == ["db"]
    assert y.timeout == 9 and y.run_on == [] and x.kind == "command" and x.steps is None
    graph = graph_of(job)
    assert [s["retries"]["max"] for s in graph["steps"]] == [2, 0]
    assert [s["run_on"] for s in graph["steps"]] == ["db", ""]
    assert step_definition(job, "nope") is None


def test_worst_leaves_skipped_steps_aside():
    assert worst(["succeeded", "skipped"]) == "succeeded"
    assert worst(["succeeded", "timeout", "failed"]) == "failed"
    assert worst(["skipped"]) == "skipped"


def _simulate(graph: dict, seed: int, rng: random.Random, rows: list | None = None) -> list:
    """End the active rows one at a time in random order, deciding after each end, as the
    store does; returns all rows."""
    rows = rows if rows is not None else []

    def apply(decision):
        for sid, attempt, _env in decision.start:
            rows.append({"step_id": sid, "attempt": attempt, "status": "queued"})
        for sid, attempt, _delay in decision.retry:
            rows.append({"step_id": sid, "attempt": attempt, "status": "queued"})
        for status, ended in (("skipped", decision.skip), ("cancelled", decision.cancel)):
            for sid, attempt, _reason in ended:
                rows.append({"step_id": sid, "attempt": attempt, "status": status})
        return decision.end

    end = apply(decide(graph, rows))
    while end is None:
        active = [r for r in rows if r["status"] == "queued"]
        assert active, "a workflow with nothing left to run did not end"
        row = rng.choice(active)
        tries = row["attempt"] - graph["base"].get(row["step_id"], 1) + 1
        row["status"] = outcome(seed, row["step_id"], tries)
        end = apply(decide(graph, rows))
        # deciding again (a second writer, a rescue) names only rows that exist: the store's
        # unique index leaves them out
        again = decide(graph, rows)
        named = [(x[0], x[1]) for part in (again.start, again.retry, again.skip, again.cancel)
                 for x in part]
        assert set(named) <= {(r["step_id"], r["attempt"]) for r in rows}
        assert again.end == end
    return rows, end


@pytest.mark.parametrize("seed", range(300))
def test_random_graphs_end_as_the_oracle_says_in_any_order(seed):
    rng = random.Random(seed)
    graph = random_graph(rng)
    rows, end = _simulate(graph, seed, rng)
    final, tries, status = expected(graph, seed)
    assert end == status
    for step in graph["steps"]:
        mine = [r for r in rows if r["step_id"] == step["id"]]
        attempts = sorted(r["attempt"] for r in mine)
        assert attempts == list(range(1, len(mine) + 1)), mine   # each attempt once
        assert mine[-1]["status"] == final[step["id"]], (step, mine)
        assert len(mine) == max(tries[step["id"]], 1)
        # a step started only once its upstream steps had ended: by construction of rows,
        # an upstream row still queued would have left this step without a row
    # no decision after the end adds anything
    again = decide(graph, rows)
    assert not (again.start or again.retry or again.skip or again.cancel)


@pytest.mark.parametrize("seed", range(100))
def test_a_retried_workflow_reruns_only_what_did_not_succeed(seed):
    rng = random.Random(seed)
    graph = random_graph(rng)
    rows, _ = _simulate(graph, seed, rng)
    before = {(r["step_id"], r["attempt"]) for r in rows}
    final, _, _ = expected(graph, seed)
    graph2, again = rerun_base(graph, rows)
    assert set(again) == {s for s, st in final.items() if st != "succeeded"}
    rows, end = _simulate(graph2, seed + 1000, rng, rows)
    assert end is not None
    new = [r for r in rows if (r["step_id"], r["attempt"]) not in before]
    assert {r["step_id"] for r in new} <= set(again)
    assert all(r["attempt"] >= graph2["base"][r["step_id"]] for r in new)


def test_cancel_ends_pending_steps_and_the_run():
    graph = random_graph(random.Random(7), 5)
    graph["steps"] = [{**s, "after": [], "when": "all_succeeded"} if i == 0 else
                      {**s, "after": ["s0"], "when": "all_done"}
                      for i, s in enumerate(graph["steps"])]
    first = decide(graph, [])
    assert [s[0] for s in first.start] == ["s0"]
    rows = [{"step_id": "s0", "attempt": 1, "status": "cancelled"}]
    done = decide(graph, rows, cancelled=True)
    assert not done.start and not done.retry
    assert {c[0] for c in done.cancel} == {s["id"] for s in graph["steps"][1:]}
    assert done.end == "cancelled"
