"""The dashboard over a dense history in Chromium: crowded hours are bars with their count, a
failing hour is red, the tooltip shows the counts; screenshots in English and Japanese
(tests/browser/screenshots/timeline_dense-*)."""
from __future__ import annotations

import datetime as dt

import pytest
from playwright.sync_api import expect

from test_timeline_buckets import insert_runs

pytestmark = pytest.mark.slow


def test_dense_history_is_drawn_as_hour_bars(fresh_server, page, shot):
    service = fresh_server.service
    now = dt.datetime.now(dt.UTC)
    for n in range(6):
        job_id = f"busy-{n}"
        service.add_job({"id": job_id, "func": "time:time", "trigger": {"type": "manual"}})
        times = [now - dt.timedelta(minutes=4 * i + n) for i in range(1, 300)]
        statuses = ["failed" if (i * (n + 1)) % 97 == 0 else "succeeded"
                    for i in range(1, 300)]
        insert_runs(service, job_id, times, statuses)
    service.add_job({"id": "rare", "func": "time:time", "trigger": {"type": "manual"}})
    insert_runs(service, "rare", [now - dt.timedelta(hours=h) for h in (1, 5, 9)],
                ["succeeded", "failed", "succeeded"])
    for lang, words in (("en", "runs:"), ("ja", "件の実行")):
        page.goto(fresh_server.url(f"/?range=24h&lang={lang}"))
        buckets = page.locator("[data-testid=timeline] .tl-bucket")
        expect(buckets.first).to_be_visible()
        assert buckets.count() >= 6
        assert page.locator(".tl-bucket .bucket.bar-failed").count() >= 1
        buckets.first.hover()
        expect(page.locator(".tip")).to_contain_text(words)
        # the rare job's runs, one by one, each linking to its run page
        assert page.locator("[data-testid=timeline] a.tl-run:not(.tl-bucket)[data-tip^='rare']"
                            ).count() == 3
        shot(page, lang)
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(fresh_server.url("/?range=24h&lang=en"))
    expect(page.locator(".tl-bucket").first).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shot(page, "phone")
