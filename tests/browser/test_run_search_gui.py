"""The runs page's filters and output search in a real browser: type a phrase, see the runs whose
output holds it with the matching line and the phrase marked (escaped), in English and Japanese,
on a wide and a narrow screen."""
from __future__ import annotations

import datetime as dt

import pytest
from playwright.sync_api import expect

import task_scheduler.store.schema as ts_schema

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser-search")]

OUTPUTS = [
    ("backup", "schedule", "開始\nバックアップ完了 (120 MB)\n", ""),
    ("backup", "schedule", "開始\n", "エラー: 接続がタイムアウトしました (db-3)\n"),
    ("etl", "manual", "loading 3 tables\n<b>not bold</b> ERROR: connection timed out after 30s\n",
     ""),
    ("etl", "schedule", "loading 3 tables\ndone\n", ""),
]


def seed(service) -> list[str]:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    rows = [{"id": ts_schema.new_run_id(), "job_id": job, "trigger": trigger,
             "scheduled_at": now - dt.timedelta(minutes=10 - n), "started_at": None,
             "finished_at": now - dt.timedelta(minutes=9 - n), "status": "failed" if err else
             "succeeded", "stdout": out, "stderr": err, "node": service.store.node}
            for n, (job, trigger, out, err) in enumerate(OUTPUTS)]
    service.store.runs.queue_runs(rows)
    return [r["id"] for r in rows]


def test_searching_the_output_shows_the_matching_lines(fresh_server, page, shot):
    ids = seed(fresh_server.service)
    page.goto(fresh_server.url("/runs"))
    box = page.get_by_test_id("run-search")
    box.fill("Connection timed out")
    box.press("Enter")
    rows = page.get_by_test_id("run-row")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-run-id", ids[2])
    match = page.get_by_test_id("run-match")
    expect(match).to_contain_text("stdout line 2:")
    expect(match.locator("mark")).to_have_text("connection timed out")
    expect(match).to_contain_text("<b>not bold</b>")   # shown as text, never as markup
    assert match.locator("b").count() == 0
    expect(box).to_have_value("Connection timed out")
    shot(page, "english")

    page.goto(fresh_server.url("/runs?lang=ja"))
    page.get_by_test_id("run-search").fill("タイムアウト")
    page.get_by_test_id("run-search").press("Enter")
    expect(page.get_by_test_id("run-row")).to_have_count(1)
    expect(page.get_by_test_id("run-match").locator("mark")).to_have_text("タイムアウト")
    expect(page.get_by_test_id("run-match")).to_contain_text("stderr 1 行目:")
    shot(page, "japanese")

    page.goto(fresh_server.url("/runs?lang=en"))
    page.locator('select[name="trigger"]').select_option("schedule")
    page.get_by_test_id("run-search").fill("loading")
    page.get_by_test_id("run-search").press("Enter")
    expect(page.get_by_test_id("run-row")).to_have_count(1)
    expect(page.get_by_test_id("run-row").first).to_have_attribute("data-run-id", ids[3])
    page.set_viewport_size({"width": 390, "height": 844})
    shot(page, "narrow")
