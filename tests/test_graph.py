"""The step graph (task_scheduler_web/graph.py): columns by longest path, no overlaps, a cycle
that cannot hang the page, escaping, and the job and run pages drawing it from the steps
contract (DESIGN 6) with a fake service answer; the job pages' links of ``after:``."""

from __future__ import annotations

import itertools
import random
import sys
import time

import pytest

from task_scheduler_web import graph

PY = sys.executable


def _columns(drawn: dict) -> dict:
    xs = sorted({n["x"] for n in drawn["nodes"]})
    return {n["id"]: xs.index(n["x"]) for n in drawn["nodes"]}


def test_columns_follow_the_longest_path():
    drawn = graph.layout([{"id": "extract"}, {"id": "transform", "after": ["extract"]},
                          {"id": "load_a", "after": ["transform"]},
                          {"id": "load_b", "after": ["transform"]},
                          {"id": "report", "after": ["load_a", "load_b", "extract"]}])
    assert _columns(drawn) == {"extract": 0, "transform": 1, "load_a": 2, "load_b": 2,
                               "report": 3}
    assert len(drawn["edges"]) == 6
    assert {(e["source"], e["target"]) for e in drawn["edges"]} >= {("extract", "report")}


def _overlap(a: dict, b: dict) -> bool:
    return a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"] and \
        a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]


def test_random_graphs_have_no_overlaps_and_fit_their_svg():
    rng = random.Random(7)
    for _ in range(200):
        n = rng.randint(1, 25)
        steps = [{"id": f"s{i}", "after": rng.sample([f"s{j}" for j in range(i)],
                                                     min(i, rng.randint(0, 3)))}
                 for i in range(n)]
        drawn = graph.layout(steps)
        columns = _columns(drawn)
        for step in steps:   # every step stands right of each of its dependencies
            assert all(columns[a] < columns[step["id"]] for a in step["after"])
        for a, b in itertools.combinations(drawn["nodes"], 2):
            assert not _overlap(a, b), (a, b)
        assert all(0 <= n["x"] and n["x"] + n["w"] <= drawn["width"] and 0 <= n["y"]
                   and n["y"] + n["h"] <= drawn["height"] for n in drawn["nodes"])


def test_order_in_a_column_follows_the_dependencies():
    drawn = graph.layout([{"id": "a"}, {"id": "b"}, {"id": "from_b", "after": ["b"]},
                          {"id": "from_a", "after": ["a"]}])
    y = {n["id"]: n["y"] for n in drawn["nodes"]}
    assert y["from_a"] < y["from_b"]   # no crossing: a's follower beside a


def test_a_cycle_does_not_hang_and_is_drawn():
    started = time.monotonic()
    drawn = graph.layout([{"id": "a", "after": ["c"]}, {"id": "b", "after": ["a"]},
                          {"id": "c", "after": ["b"]}, {"id": "d"},
                          {"id": "self", "after": ["self", "nowhere"]}])
    assert time.monotonic() - started < 1
    assert {n["id"] for n in drawn["nodes"]} == {"a", "b", "c", "d", "self"}
    assert len(drawn["edges"]) == 3   # a self-reference and an unknown step are left out


def test_nothing_to_draw():
    assert graph.layout([]) is None
    assert graph.job_graph({"definition": {}}) is None
    assert graph.run_graph({"id": "r"}) is None


def test_long_ids_are_clipped_and_links_stay_on_the_site():
    long = "x" * 40
    drawn = graph.layout([{"id": long, "href": "javascript:alert(1)"},
                          {"id": "ok", "href": "/runs/abc"}, {"id": "far", "href": "//evil"}])
    node = {n["id"]: n for n in drawn["nodes"]}
    assert node[long]["clipped"] and len(node[long]["label"]) == graph.MAX_LABEL
    assert node[long]["label"].endswith("…")
    assert [node[i]["href"] for i in (long, "ok", "far")] == [None, "/runs/abc", None]


def test_run_graph_reads_the_steps_contract():
    drawn = graph.run_graph({"steps": [
        {"step_id": "extract", "run_id": "r1", "status": "succeeded", "after": []},
        {"step_id": "load", "run_id": "r2", "status": "failed", "after": ["extract"]}]})
    node = {n["id"]: n for n in drawn["nodes"]}
    assert (node["load"]["status"], node["load"]["href"]) == ("failed", "/runs/r2")
    assert node["extract"]["glyph"] == "✓"


# the pages, with the steps a workflow job and run carry (a fake answer of the service)


@pytest.fixture
def workflow(service, client, monkeypatch):
    service.add_job({"id": "wf", "command": [PY, "-c", "pass"]})
    run = service.run_now("wf")
    real_job, real_run = service.job, service.run
    steps = [{"id": "<b>extract</b>"}, {"id": "load", "after": ["<b>extract</b>"]}]

    def job(job_id, upcoming=0):
        found = real_job(job_id, upcoming)
        return {**found, "definition": {**found["definition"], "steps": steps}}

    def one_run(run_id):
        found = real_run(run_id)
        shape = {"attempt": 1, "node": "n1", "started_at": None, "finished_at": None,
                 "output": None}   # the contract's fields of a step (DESIGN section 6)
        return {**found, "steps": [
            {**shape, "step_id": "<b>extract</b>", "run_id": "0" * 20, "status": "succeeded",
             "after": []},
            {**shape, "step_id": "load", "run_id": "1" * 20, "status": "running",
             "after": ["<b>extract</b>"]}]}
    monkeypatch.setattr(service, "job", job)
    monkeypatch.setattr(service, "run", one_run)
    return run


def test_job_and_run_pages_draw_the_graph_escaped(client, workflow):
    page = client.get("/jobs/wf").text
    assert 'data-testid="step-graph"' in page and page.count('data-testid="graph-node"') == 2
    assert "<b>extract" not in page and "&lt;b&gt;extract&lt;/b&gt;" in page
    run_page = client.get(f"/runs/{workflow['id']}").text
    assert 'data-status="running"' in run_page and f'href="/runs/{"1" * 20}"' in run_page
    assert "<b>extract" not in run_page


def test_pages_without_steps_draw_no_graph(client, service):
    service.add_job({"id": "plain", "command": [PY, "-c", "pass"]})
    assert 'data-testid="step-graph"' not in client.get("/jobs/plain").text


def test_job_pages_link_upstream_and_downstream_both_ways(client, service):
    service.add_job({"id": "a", "command": [PY, "-c", "pass"]})
    service.add_job({"id": "b", "command": [PY, "-c", "pass"],
                     "after": {"job": "a", "on": ["failed"]}})
    service.add_job({"id": "c", "command": [PY, "-c", "pass"], "after": {"job": "a"}})
    page_a = client.get("/jobs/a").text
    assert 'data-testid="job-downstream"' in page_a and 'href="/jobs/b"' in page_a \
        and 'href="/jobs/c"' in page_a and 'data-testid="job-upstream"' not in page_a
    page_b = client.get("/jobs/b?lang=ja").text
    assert 'data-testid="job-upstream" data-job-id="a"' in page_b and "先行ジョブ" in page_b
    assert "a の終了時" in page_b   # its trigger: no schedule, it runs after a
    assert 'data-testid="job-downstream"' not in page_b
