"""SLA breaches in the GUI, in English and Japanese: the ◷ badge on the job list, the job's page
and the dashboard's list of breaches; the run's page has the breach as a row of its history; a
heartbeat job shows its ping instructions and no Run button (screenshots sla-*)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from conftest import wait_for
from browser.conftest import SCREENSHOTS, _start_server
from browser.test_i18n import DESKTOP, context_for  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser-sla")]
WORDS = {"en": {"overdue": "overdue", "long_running": "running long"},
         "ja": {"overdue": "ping 途絶", "long_running": "実行時間超過"}}


@pytest.fixture(scope="module")
def sla_server(tmp_path_factory):
    server, httpd = _start_server(tmp_path_factory.mktemp("gui_sla"), None,
                                  timezone="Asia/Tokyo", sla_every=0.2)
    service = server.service
    service.add_job({"id": "external_backup", "description": "Backup run by another host's cron",
                     "trigger": {"type": "heartbeat", "every": "1s", "grace": "1s"}})
    service.add_job({"id": "nightly_report", "command": ["sleep", "30"], "timeout": 20,
                     "sla": {"start_within": "5m", "max_duration": "1s"}})
    service.run_now("nightly_report")
    wait_for(lambda: {b["event"] for b in service.promises.recent()} == {"overdue", "long_running"},
             20, 0.1, "both breaches")
    yield server
    httpd.shutdown()
    service.stop(grace=0)


@pytest.mark.parametrize("lang", ["en", "ja"])
def test_breaches_show_on_the_jobs_the_dashboard_and_the_run(sla_server, context_for,  # noqa: F811
                                                             lang):
    page = context_for(locale="ja-JP" if lang == "ja" else "en-US", viewport=DESKTOP).new_page()
    SCREENSHOTS.mkdir(exist_ok=True)
    words = WORDS[lang]
    page.goto(sla_server.url(f"/?lang={lang}"))
    breaches = page.locator('[data-testid="sla-breach"]')
    expect(breaches).to_have_count(2)
    expect(page.locator('[data-testid="sla-breach"][data-event="overdue"]')).to_contain_text(
        words["overdue"])
    page.screenshot(path=str(SCREENSHOTS / f"sla-{lang}-dashboard.png"), full_page=True)

    page.goto(sla_server.url("/jobs"))
    beat = page.locator('[data-testid="job-row"][data-job-id="external_backup"]')
    expect(beat.locator('[data-testid="sla-badge"]')).to_have_text(words["overdue"])
    expect(beat.locator('[data-testid="action-run"]')).to_have_count(0)   # pinged, not run
    report = page.locator('[data-testid="job-row"][data-job-id="nightly_report"]')
    expect(report.locator('[data-testid="sla-badge"]')).to_have_text(words["long_running"])
    page.screenshot(path=str(SCREENSHOTS / f"sla-{lang}-jobs.png"), full_page=True)

    page.goto(sla_server.url("/jobs/external_backup"))
    expect(page.locator('[data-testid="job-detail"] [data-testid="sla-badge"]')).to_have_count(1)
    expect(page.locator('[data-testid="job-ping"]')).to_contain_text(
        "/api/jobs/external_backup/ping")
    page.screenshot(path=str(SCREENSHOTS / f"sla-{lang}-heartbeat-job.png"), full_page=True)

    page.goto(sla_server.url("/jobs/nightly_report"))
    expect(page.locator('[data-testid="job-sla"]')).to_contain_text("max_duration: 1s")
    page.locator('[data-testid="run-row"] a').first.click()
    row = page.locator('[data-testid="sla-row"][data-event="long_running"]')
    expect(row).to_contain_text("max_duration")
    page.screenshot(path=str(SCREENSHOTS / f"sla-{lang}-run.png"), full_page=True)
