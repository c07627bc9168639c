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
    expect(page.locator('[data-step-id="transform"]')).to_have_attribute("data-status", "failed")
    expect(page.locator('[data-step-id="load"]')).to_have_attribute("data-status", "skipped")
    expect(page.locator('[data-step-id="load"]')).to_contain_text("transform")
    expect(page.locator('[data-step-id="extract"]')).to_contain_text("42 rows")
    page.screenshot(path=str(SCREENSHOTS / f"workflow-{lang}-failed.png"), full_page=True)

    page.locator('[data-step-id="extract"] a').click()   # the step's own run
    expect(page.locator('[data-testid="run-parent"]')).to_contain_text(run["id"])
    expect(page.locator('[data-testid="run-stdout"]')).to_contain_text("42 rows")
    page.go_back()

    wf_server.flag.unlink()
    page.locator('[data-testid="action-retry"]').click()
    expect(page.locator('[data-testid="run-status"]')).to_have_attribute("data-status",
                                                                         "running")
    done = _ended(service, run["id"])
    assert done["status"] == "succeeded" and done["attempt"] == 2
    page.goto(wf_server.url(f"/runs/{run['id']}"))
    expect(page.locator('[data-step-id="load"]')).to_have_attribute("data-status", "succeeded")
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
    expect(page.locator('[data-step-id="second"]')).to_have_attribute("data-status", "pending")
    page.evaluate("window.__same_page = true")
    expect(page.locator('[data-step-id="second"]')).to_have_attribute("data-status", "running",
                                                                       timeout=15000)
    # a step's change shows while the workflow run still goes on
    expect(page.locator('[data-testid="run-status"]')).to_have_attribute("data-status",
                                                                         "running")
    expect(page.locator('[data-step-id="first"]')).to_have_attribute("data-status", "succeeded")
    expect(page.locator('[data-testid="run-status"]')).to_have_attribute(
        "data-status", "succeeded", timeout=15000)
    expect(page.locator('[data-step-id="second"]')).to_have_attribute("data-status",
                                                                      "succeeded")
    assert page.evaluate("window.__same_page") is True   # redrawn in place, not reloaded
