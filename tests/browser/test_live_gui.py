"""Watching a run in the browser: output shows while the run is still running (and how soon),
the view follows the output, rerun from the run page, run with parameters from the job page,
notifications on the run page, and the page without script."""

from __future__ import annotations

import statistics
import time

import pytest
from playwright.sync_api import expect

# One worker per module: its module-scoped servers and Chromium start once.
pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser-live")]

RUN_DONE = 20_000
TIMED_LINES = "for i in $(seq 1 12); do date +%s.%N; sleep 0.4; done"


def add(server, **job):
    job.setdefault("trigger", {"type": "manual"})
    server.service.add_job(job)


def test_a_line_shows_while_the_run_is_still_running(fresh_server, page, shot):
    add(fresh_server, id="clock", command=TIMED_LINES, shell=True)
    run = fresh_server.service.run_now("clock")
    page.goto(fresh_server.url(f"/runs/{run['id']}"))
    detail = page.get_by_test_id("run-detail")
    expect(detail).to_have_attribute("data-status", "running", timeout=RUN_DONE)
    # Record when each printed line reaches the page (the job prints its own clock).
    page.evaluate("""() => {
        window.__seen = [];
        const pre = document.querySelector('[data-testid="run-stdout"]');
        const note = () => pre.textContent.trim().split('\\n').forEach(line => {
            if (line && !window.__seen.some(s => s[0] === line)) {
                window.__seen.push([line, Date.now() / 1000]);
            }});
        note();
        new MutationObserver(note).observe(pre, {childList: true, characterData: true,
                                                  subtree: true});
    }""")
    page.evaluate("window.__same_page = true")
    stdout = page.get_by_test_id("run-stdout")
    expect(stdout).to_contain_text(".", timeout=RUN_DONE)
    assert detail.get_attribute("data-status") == "running", "a line showed while it ran"
    elapsed = page.get_by_test_id("run-elapsed")
    first = elapsed.text_content()
    expect(elapsed).not_to_have_text(first, timeout=3000)   # the elapsed time ticks
    shot(page, "running")
    expect(detail).to_have_attribute("data-status", "succeeded", timeout=RUN_DONE)
    assert page.evaluate("window.__same_page") is True   # in place, not by navigation
    seen = page.evaluate("window.__seen")
    lines = [float(text) for text, _ in seen if text.replace(".", "").isdigit()]
    assert len(lines) == 12 and lines == sorted(lines)
    delays = sorted(arrived - float(text) for text, arrived in seen
                    if text.replace(".", "").isdigit())[2:]   # lines drawn with the page aside
    p95 = delays[int(len(delays) * 0.95) - 1] if delays else 0
    print(f"\nline printed -> shown in the browser: median {statistics.median(delays):.3f} s, "
          f"p95 {p95:.3f} s over {len(delays)} lines")
    expect(page.get_by_test_id("action-rerun")).to_be_visible()
    shot(page, "finished")


def test_the_view_follows_the_output_unless_scrolled_up(fresh_server, page):
    add(fresh_server, id="chatty", shell=True,
        command="for i in $(seq 1 300); do echo line $i; sleep 0.01; done; sleep 3")
    run = fresh_server.service.run_now("chatty")
    page.goto(fresh_server.url(f"/runs/{run['id']}"))
    stdout = page.get_by_test_id("run-stdout")
    expect(stdout).to_contain_text("line 300", timeout=RUN_DONE)
    at_bottom = "pre => pre.scrollHeight - pre.scrollTop - pre.clientHeight < 30"
    assert stdout.evaluate(at_bottom)
    assert stdout.evaluate("pre => pre.scrollHeight > pre.clientHeight")   # it did scroll


def test_rerun_from_the_run_page(fresh_server, page, shot):
    add(fresh_server, id="again", command="echo once more")
    run = fresh_server.service.run_now("again")
    page.goto(fresh_server.url(f"/runs/{run['id']}"))
    expect(page.get_by_test_id("run-detail")).to_have_attribute("data-status", "succeeded",
                                                                timeout=RUN_DONE)
    page.get_by_test_id("action-rerun").click()
    expect(page.get_by_test_id("flash")).to_contain_text(run["id"])
    detail = page.get_by_test_id("run-detail")
    assert detail.get_attribute("data-run-id") != run["id"]
    expect(detail).to_have_attribute("data-status", "succeeded", timeout=RUN_DONE)
    expect(page.get_by_role("link", name=run["id"])).to_be_visible()   # rerun of
    shot(page, "rerun")


def test_run_with_parameters_from_the_job_page(fresh_server, page, shot):
    add(fresh_server, id="greeter", command='echo "$GREETING" "$@"', shell=True,
        env={"GREETING": "hello"})
    page.goto(fresh_server.url("/jobs/greeter"))
    box = page.get_by_test_id("run-with-params")
    box.locator("summary").click()
    box.get_by_label("Arguments").fill("world 'and you'")
    box.get_by_label("Environment").fill("GREETING=good morning")
    shot(page, "params")
    box.get_by_test_id("action-run-params").click()
    page.get_by_test_id("flash").get_by_role("link").click()
    expect(page.get_by_test_id("run-detail")).to_have_attribute("data-status", "succeeded",
                                                                timeout=RUN_DONE)
    expect(page.get_by_test_id("run-stdout")).to_have_text("good morning world and you\n")
    expect(page.get_by_test_id("run-params")).to_contain_text("good morning")
    page.goto(fresh_server.url("/jobs/greeter"))
    page.get_by_test_id("run-with-params").locator("summary").click()
    page.get_by_test_id("run-with-params").get_by_label("Arguments").fill("'unbalanced")
    page.get_by_test_id("action-run-params").click()
    expect(page.get_by_test_id("flash")).to_contain_text("args")


def test_notifications_show_on_the_run_page(fresh_server, page, shot):
    add(fresh_server, id="noisy", command="false",
        notify=[{"webhook": "http://127.0.0.1:9/hook", "secret": "very-secret"}])
    run = fresh_server.service.run_now("noisy")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not fresh_server.service.run(run["id"])[
            "notifications"]:
        time.sleep(0.1)
    page.goto(fresh_server.url(f"/runs/{run['id']}"))
    rows = page.get_by_test_id("notification-row")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("webhook http://127.0.0.1:9")
    assert "very-secret" not in page.content()
    page.goto(fresh_server.url("/jobs/noisy"))
    assert "very-secret" not in page.content()
    shot(page, "notify")


def test_a_running_run_reloads_itself_without_script(fresh_server, no_js_page):
    add(fresh_server, id="slowly", command="echo first; sleep 4; echo second", shell=True)
    run = fresh_server.service.run_now("slowly")
    page = no_js_page
    page.goto(fresh_server.url(f"/runs/{run['id']}"))
    expect(page.get_by_test_id("run-stdout")).to_contain_text("second", timeout=RUN_DONE)
