"""A workflow run's page in English and Japanese: its steps listed (status, node, times, a
link to each step's run), a skipped step saying why, and the Retry button re-running the
failed and skipped steps (a POST with CSRF; screenshots workflow-*)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from conftest import wait_for
from browser.conftest import SCREENSHOTS, _start_server
from browser.test_i18n import DESKTOP, context_for  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser-wf")]


@pytest.fixture(scope="module")
def wf_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gui_wf")
    server, httpd = _start_server(folder, None)
    flag = folder / "broken"
    flag.write_text("")
    server.service.add_job({"id": "etl", "steps": [
        {"id": "extract", "command": ["sh", "-c", "echo 42 rows"], "output": "ROWS"},
        {"id": "transform", "command": ["sh", "-c", f"test ! -e {flag}"],
         "after": ["extract"]},
        {"id": "load", "command": ["sh", "-c", "echo loaded $ROWS"], "after": ["transform"]},
        {"id": "report", "command": ["true"], "after": ["load"], "when": "all_done"}]})
    server.flag = flag
    yield server
    httpd.shutdown()
    server.service.stop(grace=0)


def _row(page, step_id):
    return page.locator(f'[data-testid="step-row"][data-step-id="{step_id}"]')


def _node(page, step_id):
    return page.locator(f'[data-testid="graph-node"][data-step-id="{step_id}"]')


def _ended(service, run_id):
    def done():
        service.flush()
        run = service.run(run_id)
        return run if run["status"] not in ("queued", "running") else None
    return wait_for(done, 20, 0.05, "the workflow run ends")


@pytest.mark.parametrize("lang", ["en", "ja"])
def test_the_run_page_lists_steps_and_retries_the_failed_ones(wf_server, context_for,  # noqa: F811
                                                               lang):
    service = wf_server.service
    wf_server.flag.write_text("")
    run = service.run_now("etl")
    _ended(service, run["id"])
    page = context_for(locale="ja-JP" if lang == "ja" else "en-US", viewport=DESKTOP).new_page()
    SCREENSHOTS.mkdir(exist_ok=True)
    page.goto(wf_server.url(f"/runs/{run['id']}?lang={lang}"))
    rows = page.locator('[data-testid="step-row"]')
    expect(rows).to_have_count(4)
    expect(_row(page, "transform")).to_have_attribute("data-status", "failed")
    expect(_row(page, "load")).to_have_attribute("data-status", "skipped")
    expect(_row(page, "load")).to_contain_text("transform")
    expect(_row(page, "extract")).to_contain_text("42 rows")
    page.screenshot(path=str(SCREENSHOTS / f"workflow-{lang}-failed.png"), full_page=True)

    _row(page, "extract").locator("a").click()   # the step's own run
    expect(page.locator('[data-testid="run-parent"]')).to_contain_text(run["id"])
    expect(page.locator('[data-testid="run-stdout"]')).to_contain_text("42 rows")
    page.go_back()
    expect(page.locator('[data-testid="step-graph"]')).to_be_visible()   # the graph, coloured
    expect(_node(page, "transform")).to_have_attribute("data-status", "failed")
    expect(_node(page, "load")).to_have_attribute("data-status", "skipped")
    expect(_node(page, "report")).to_have_attribute("data-status", "succeeded")

    wf_server.flag.unlink()
    page.locator('[data-testid="action-retry"]').click()
    expect(page.locator('[data-testid="run-status"]')).to_have_attribute("data-status",
                                                                         "running")
    done = _ended(service, run["id"])
    assert done["status"] == "succeeded" and done["attempt"] == 2
    page.goto(wf_server.url(f"/runs/{run['id']}"))
    expect(_row(page, "load")).to_have_attribute("data-status", "succeeded")
    expect(page.locator('[data-testid="action-retry"]')).to_have_count(0)
    page.screenshot(path=str(SCREENSHOTS / f"workflow-{lang}-retried.png"), full_page=True)
    load = service.run(next(s["run_id"] for s in done["steps"] if s["step_id"] == "load"))
    assert "loaded 42 rows" in load["stdout"]


def test_a_running_workflow_runs_steps_show_live(wf_server, context_for):  # noqa: F811
    service = wf_server.service
    service.add_job({"id": "slowflow", "steps": [
        {"id": "first", "command": ["sleep", "1.5"]},
        {"id": "second", "command": ["sleep", "4"], "after": ["first"]}]})
    run = service.run_now("slowflow")
    wait_for(lambda: service.flush() and service.run(run["id"])["status"] == "running", 10,
             0.05, "the workflow run to start")
    page = context_for(locale="en-US", viewport=DESKTOP).new_page()
    page.goto(wf_server.url(f"/runs/{run['id']}"))
    expect(_row(page, "second")).to_have_attribute("data-status", "pending")
    page.evaluate("window.__same_page = true")
    expect(_row(page, "second")).to_have_attribute("data-status", "running",
                                                                       timeout=15000)
    # a step's change shows while the workflow run still goes on
    expect(page.locator('[data-testid="run-status"]')).to_have_attribute("data-status",
                                                                         "running")
    expect(_row(page, "first")).to_have_attribute("data-status", "succeeded")
    expect(page.locator('[data-testid="run-status"]')).to_have_attribute(
        "data-status", "succeeded", timeout=15000)
    expect(_row(page, "second")).to_have_attribute("data-status",
                                                                      "succeeded")
    assert page.evaluate("window.__same_page") is True   # redrawn in place, not reloaded


@pytest.mark.parametrize("lang", ["en", "ja"])
def test_the_job_page_draws_the_step_graph(wf_server, context_for, lang):  # noqa: F811
    page = context_for(locale="ja-JP" if lang == "ja" else "en-US", viewport=DESKTOP).new_page()
    page.goto(wf_server.url(f"/jobs/etl?lang={lang}"))
    graph = page.locator('[data-testid="step-graph"]')
    expect(graph).to_be_visible()
    expect(graph.locator('[data-testid="graph-node"]')).to_have_count(4)
    boxes = {step: _node(page, step).bounding_box() for step in ("extract", "transform",
                                                                 "load", "report")}
    xs = [boxes[s]["x"] for s in ("extract", "transform", "load", "report")]
    assert xs == sorted(xs) and len(set(xs)) == 4   # each after the one it depends on
    page.screenshot(path=str(SCREENSHOTS / f"workflow-{lang}-job-graph.png"), full_page=True)
