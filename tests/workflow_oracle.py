"""Random workflow graphs and an oracle of how they end, written apart from
task_scheduler.workflow (which the tests check against it): a step's final status follows from
its upstream steps' final statuses, its ``when`` and its drawn outcomes, whatever the order in
which ends arrive."""

from __future__ import annotations

import random

FAILED = ("failed", "timeout", "interrupted", "cancelled", "missed")
OUTCOMES = ("succeeded", "succeeded", "succeeded", "failed", "timeout", "interrupted")


def random_graph(rng: random.Random, most: int = 9) -> dict:
    """A random DAG: step i comes after some of the steps before it; random when, retries."""
    count = rng.randint(1, most)
    steps = []
    for index in range(count):
        after = sorted(rng.sample([f"s{j}" for j in range(index)], rng.randint(0, min(index, 3))))
        retries = {"max": rng.choice([0, 0, 1, 2]), "delay": 0, "backoff": 1}
        steps.append({"id": f"s{index}", "after": after,
                      "when": rng.choice(["all_succeeded", "all_succeeded", "all_done",
                                          "any_failed"]),
                      "output": None, "retries": retries, "run_on": ""})
    return {"steps": steps, "base": {}}


def outcome(seed: int, step_id: str, attempt: int) -> str:
    """The drawn end of a step's attempt (the same for every caller)."""
    return random.Random(f"{seed}:{step_id}:{attempt}").choice(OUTCOMES)


def expected(graph: dict, seed: int) -> tuple[dict, dict, str]:
    """({step: final status}, {step: attempts run}, the workflow's status)."""
    final, tries = {}, {}
    for step in graph["steps"]:   # random_graph lists each step after its upstream ones
        ups = [final[a] for a in step["after"]]
        runs = (step["when"] == "all_done" or
                (step["when"] == "all_succeeded" and all(u == "succeeded" for u in ups)) or
                (step["when"] == "any_failed" and any(u in FAILED for u in ups)))
        if not runs:
            final[step["id"]], tries[step["id"]] = "skipped", 0
            continue
        attempt = 1
        while True:
            got = outcome(seed, step["id"], attempt)
            if got == "succeeded" or attempt > step["retries"]["max"]:
                break
            attempt += 1
        final[step["id"]], tries[step["id"]] = got, attempt
    counted = [s for s in final.values() if s != "skipped"]
    rank = ("failed", "timeout", "interrupted", "cancelled", "missed", "succeeded")
    status = min(counted, key=rank.index) if counted else "skipped"
    return final, tries, status
