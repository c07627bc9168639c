"""Live lists (issue 25): an open dashboard and job list show a run started elsewhere (the API;
on PostgreSQL another node, a real process, runs it) as queued, running and ended without a
reload, a
job's page shows the run started from it, a filter being typed keeps its text and focus while
the rows are redrawn, and a page refused a stream polls instead."""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import expect

import task_scheduler.http.api as ts_api

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from conftest import write_jobs   # noqa: E402
from test_changes import open_events   # noqa: E402
from test_cluster import Node   # noqa: E402
from test_starvation import kill   # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser-lists")]

SHOWN = 5_000   # ms: the design shows a change within about a second; this leaves room for a
#                 busy two-core machine, never for a page that waits for a reload


def api_run(base_url: str, job_id: str) -> dict:
    request = urllib.request.Request(f"{base_url}/api/jobs/{job_id}/run", data=b"{}",
                                     method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["run"]


def same_page(page):
    page.evaluate("window.__same_page = true")
    return lambda: page.evaluate("window.__same_page") is True


def timeline_run(page, run_id: str, status: str):
    return page.locator(f'[data-testid="timeline"] a.tl-run[href="/runs/{run_id}"] '
                        f'.bar-{status}')


def last_run(page, job_id: str, run_id: str):
    return page.locator(f'[data-testid="job-row"][data-job-id="{job_id}"] '
                        f'a[href="/runs/{run_id}"] .badge')


def test_a_run_started_by_the_api_shows_on_the_open_dashboard_and_job_list(
        fresh_server, browser, shot):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        dash, jobs = context.new_page(), context.new_page()
        dash.goto(fresh_server.url("/"))
        jobs.goto(fresh_server.url("/jobs"))
        for page in (dash, jobs):
            expect(page.get_by_test_id("live")).to_have_attribute("data-state", "stream")
        unchanged = [same_page(dash), same_page(jobs)]
        started = time.monotonic()
        run = api_run(fresh_server.base_url, "slow_job")   # sleeps 2 s
        expect(last_run(jobs, "slow_job", run["id"])).to_have_text("running", timeout=SHOWN)
        expect(timeline_run(dash, run["id"], "running")).to_have_count(1, timeout=SHOWN)
        shown = time.monotonic() - started
        expect(dash.get_by_test_id("status")).to_contain_text("1 active run")
        shot(dash, "dashboard-running")
        shot(jobs, "jobs-running")
        expect(last_run(jobs, "slow_job", run["id"])).to_have_text("succeeded", timeout=SHOWN)
        expect(timeline_run(dash, run["id"], "succeeded")).to_have_count(1, timeout=SHOWN)
        shot(dash, "dashboard-ended")
        shot(jobs, "jobs-ended")
        assert all(check() for check in unchanged), "redrawn in place, never reloaded"
        print(f"\nrun started via the API -> running on both pages after {shown:.2f} s")
    finally:
        context.close()


def test_a_queued_run_shows_and_a_paused_job_too(fresh_server, page, shot):
    fresh_server.service.add_job({"id": "waits", "command": "true", "trigger": {"type": "manual"},
                                  "run_on": ["no-node-has-this"]})
    page.goto(fresh_server.url("/jobs"))
    expect(page.get_by_test_id("live")).to_have_attribute("data-state", "stream")
    unchanged = same_page(page)
    run = api_run(fresh_server.base_url, "waits")
    expect(last_run(page, "waits", run["id"])).to_have_text("queued", timeout=SHOWN)
    fresh_server.service.pause("pause_job")
    row = page.locator('[data-testid="job-row"][data-job-id="pause_job"]')
    expect(row).to_have_attribute("data-state", "paused", timeout=SHOWN)
    shot(page, "queued-and-paused")
    fresh_server.service.cancel(run["id"])
    expect(last_run(page, "waits", run["id"])).to_have_text("cancelled", timeout=SHOWN)
    fresh_server.service.resume("pause_job")
    expect(row).to_have_attribute("data-state", "scheduled", timeout=SHOWN)
    assert unchanged()


def test_the_job_page_shows_its_run_running_then_ended(fresh_server, page, shot):
    page.goto(fresh_server.url("/jobs/slow_job"))
    page.get_by_test_id("action-run").first.click()
    expect(page.get_by_test_id("flash")).to_be_visible()   # the POST's redirect: a new page
    unchanged = same_page(page)
    row = page.get_by_test_id("run-row").first
    expect(row).to_have_attribute("data-status", "running", timeout=SHOWN)
    shot(page, "running")
    expect(row).to_have_attribute("data-status", "succeeded", timeout=SHOWN)
    expect(page.get_by_test_id("duration-chart")).not_to_contain_text("No finished runs")
    shot(page, "ended")
    assert unchanged(), "the run's end was drawn without a reload"


def test_the_run_list_follows_on_its_newest_page_only(fresh_server, page, shot):
    page.goto(fresh_server.url("/runs"))
    expect(page.get_by_test_id("live")).to_have_attribute("data-state", "stream")
    unchanged = same_page(page)
    run = api_run(fresh_server.base_url, "echo_job")
    row = page.locator(f'[data-testid="run-row"][data-run-id="{run["id"]}"]')
    expect(row).to_have_attribute("data-status", "succeeded", timeout=SHOWN)
    shot(page, "newest")
    assert unchanged()
    page.goto(fresh_server.url(f"/runs?before={run['id']}"))   # an older page: as drawn
    expect(page.get_by_test_id("live")).to_have_count(0)


def test_a_filter_being_typed_keeps_its_text_and_focus_while_rows_redraw(fresh_server, page,
                                                                         shot):
    page.goto(fresh_server.url("/jobs"))
    expect(page.get_by_test_id("live")).to_have_attribute("data-state", "stream")
    search = page.get_by_test_id("job-filter").locator('input[name="q"]')
    search.click()
    search.type("slo")
    run = api_run(fresh_server.base_url, "slow_job")
    expect(last_run(page, "slow_job", run["id"])).to_have_text("running", timeout=SHOWN)
    expect(search).to_have_value("slo")
    expect(search).to_be_focused()
    search.type("w")
    expect(search).to_have_value("slow")
    shot(page, "typing")


def test_a_page_refused_a_stream_polls_instead(fresh_server, page, shot):
    held = [open_events(fresh_server.base_url) for _ in range(ts_api.MAX_STREAMS)]
    try:
        assert all(first.startswith(b"HTTP/1.1 200") for _, first in held)
        page.goto(fresh_server.url("/jobs"))
        expect(page.get_by_test_id("live")).to_have_attribute("data-state", "poll")
        unchanged = same_page(page)
        run = api_run(fresh_server.base_url, "echo_job")
        expect(last_run(page, "echo_job", run["id"])).to_have_text("succeeded", timeout=SHOWN)
        shot(page, "polling")
        assert unchanged()
    finally:
        for sock, _ in held:
            kill(sock)


def test_the_pages_work_without_script(fresh_server, no_js_page):
    no_js_page.goto(fresh_server.url("/jobs"))
    expect(no_js_page.get_by_test_id("job-row")).to_have_count(6)
    expect(no_js_page.get_by_test_id("live")).to_be_hidden()


@pytest.mark.postgres
def test_a_run_started_on_another_node_shows_on_this_nodes_pages(tmp_path, postgres_url,
                                                                  browser, shot):
    write_jobs(tmp_path / "jobs.yaml", """\
        - id: elsewhere
          command: ["sh", "-c", "sleep 2"]
          trigger: {type: manual}
          run_on: [worker]
        """)
    nodes = []
    try:
        nodes.append(Node(tmp_path, postgres_url, "gui-node"))
        nodes.append(Node(tmp_path, postgres_url, "api-node", labels="worker"))
        here, there = nodes
        base = f"http://127.0.0.1:{here.port}"
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        dash, jobs = context.new_page(), context.new_page()
        dash.goto(base + "/")
        jobs.goto(base + "/jobs")
        for page in (dash, jobs):
            expect(page.get_by_test_id("live")).to_have_attribute("data-state", "stream")
        expect(dash.get_by_test_id("node-row")).to_have_count(2)
        unchanged = [same_page(dash), same_page(jobs)]
        started = time.monotonic()
        run = api_run(f"http://127.0.0.1:{there.port}", "elsewhere")
        expect(last_run(jobs, "elsewhere", run["id"])).to_have_text("running", timeout=SHOWN)
        expect(timeline_run(dash, run["id"], "running")).to_have_count(1, timeout=SHOWN)
        shown = time.monotonic() - started
        shot(dash, "dashboard-running")
        shot(jobs, "jobs-running")
        expect(last_run(jobs, "elsewhere", run["id"])).to_have_text("succeeded", timeout=SHOWN)
        expect(timeline_run(dash, run["id"], "succeeded")).to_have_count(1, timeout=SHOWN)
        shot(dash, "dashboard-ended")
        assert all(check() for check in unchanged)
        # It ran there: its start and end reached this node by the feed's own look.
        assert there.get(f"/api/runs/{run['id']}")["node"] == "api-node"
        print(f"\nrun started on another node -> running on this node's pages after "
              f"{shown:.2f} s")
        context.close()
    finally:
        for node in nodes:
            node.stop()
