"""The calendar month view and a job's calendar-applied next fire times, in Japanese in
Chromium; screenshots in tests/browser/screenshots/calendar-*."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from playwright.sync_api import expect

import task_scheduler
from test_calendars import JP_BUSINESS

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser-calendar")]

SCREENSHOTS = Path(__file__).parent / "screenshots"
JOBS_YAML = JP_BUSINESS + textwrap.dedent("""\
    jobs:
      - id: month_end_close
        description: 月次締め
        command: ['true']
        trigger: {type: business_day, calendar: jp_business, day: -1, at: '18:00',
                  timezone: Asia/Tokyo}
      - id: weekday_report
        command: ['true']
        trigger: {type: cron, expression: '0 8 * * 1-5', timezone: Asia/Tokyo}
        calendar: {name: jp_business, on_holiday: previous}
    """)


@pytest.fixture(scope="module")
def calendar_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("calendar_gui")
    (folder / "jobs.yaml").write_text(JOBS_YAML)
    service = task_scheduler.SchedulerService(task_scheduler.Config(
        config_path=str(folder / "jobs.yaml"), database_url=f"sqlite:///{folder}/ts.sqlite",
        timezone="Asia/Tokyo")).start()
    httpd = task_scheduler.serve_in_thread(task_scheduler.create_app(service), "127.0.0.1", 0)
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    service.stop()


@pytest.fixture
def ja_page(browser):
    context = browser.new_context(locale="ja-JP", timezone_id="Asia/Tokyo",
                                  viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    yield context.new_page()
    context.close()


def test_silver_week_2026_in_the_month_view(calendar_server, ja_page):
    SCREENSHOTS.mkdir(exist_ok=True)
    page = ja_page
    page.goto(f"{calendar_server}/calendars/jp_business?month=2026-09&lang=ja")
    expect(page.get_by_test_id("calendar-title")).to_have_text("2026年9月")
    month = page.get_by_test_id("calendar-month")
    for day, kind, name in (("2026-09-21", "holiday", "敬老の日"), ("2026-09-22", "holiday",
                            "国民の休日"), ("2026-09-23", "holiday", "秋分の日")):
        cell = month.locator(f'[data-date="{day}"]')
        expect(cell).to_have_attribute("data-kind", kind)
        expect(cell).to_contain_text(name)
    expect(month.locator('[data-date="2026-09-19"]')).to_have_attribute("data-kind", "weekend")
    expect(month.locator('[data-date="2026-09-24"]')).to_have_attribute("data-kind", "business")
    page.screenshot(path=str(SCREENSHOTS / "calendar-ja-2026-09.png"), full_page=True)
    page.get_by_test_id("calendar-next").click()   # a month later, then the New Year closing
    expect(page.get_by_test_id("calendar-title")).to_have_text("2026年10月")
    page.goto(f"{calendar_server}/calendars/jp_business?month=2026-12&lang=ja")
    expect(month.locator('[data-date="2026-12-29"]')).to_have_attribute("data-kind", "excluded")
    expect(month.locator('[data-date="2026-12-29"]')).to_contain_text("休業日")
    page.screenshot(path=str(SCREENSHOTS / "calendar-ja-2026-12.png"), full_page=True)
    page.goto(f"{calendar_server}/calendars/jp_business?month=2027-01&lang=en")
    expect(month.locator('[data-date="2027-01-01"]')).to_contain_text("New Year's Day")
    expect(month.locator('[data-date="2027-01-04"]')).to_have_attribute("data-kind", "included")
    expect(month.locator('[data-date="2027-01-11"]')).to_contain_text("Coming of Age Day")
    page.screenshot(path=str(SCREENSHOTS / "calendar-en-2027-01.png"), full_page=True)


def test_job_page_links_its_calendar_and_lists_ten_fire_times(calendar_server, ja_page):
    page = ja_page
    page.goto(f"{calendar_server}/jobs/month_end_close?lang=ja")
    expect(page.get_by_test_id("job-detail")).to_contain_text("毎月最終営業日 18:00")
    expect(page.get_by_test_id("next-fires").locator("li")).to_have_count(10)
    page.screenshot(path=str(SCREENSHOTS / "calendar-ja-job.png"), full_page=True)
    page.get_by_test_id("calendar-link").click()
    expect(page.get_by_test_id("calendar")).to_be_visible()
    expect(page.get_by_test_id("calendar-job")).to_have_count(2)
