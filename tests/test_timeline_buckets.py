"""The timeline's dense stretches: the store counts runs by (job, bucket, status) on both
databases, with bucket edges at the viewer's hours (UTC and a zone half an hour off it); the
dashboard draws a crowded hour as one bar in its worst status's colour with an escaped tooltip,
and a job with few runs one run at a time."""
from __future__ import annotations

import datetime as dt
import html
import re
import uuid

import pytest
import sqlalchemy as sa

import task_scheduler as ts
from conftest import Client
from task_scheduler.store.schema import ts_runs

UTC = dt.UTC
KOLKATA = 5 * 3600 + 1800   # Asia/Kolkata, UTC+05:30: its hours start at UTC's half hours


def insert_runs(service, job_id: str, times: list, status="succeeded") -> None:
    """Finished runs written straight into ts_runs, as a long history would hold them."""
    statuses = status if isinstance(status, list) else [status] * len(times)
    rows = []
    for at, state in zip(times, statuses, strict=True):
        naive = at.astimezone(UTC).replace(tzinfo=None)
        rows.append({"id": f"{int(at.timestamp() * 1e6):014x}{uuid.uuid4().hex[:6]}",
                     "job_id": job_id, "trigger": "schedule", "attempt": 1,
                     "scheduled_at": naive, "started_at": naive,
                     "finished_at": naive + dt.timedelta(seconds=1), "status": state,
                     "truncated": False, "node": "t", "run_on": "", "cancel_requested": False})
    with service.store.engine.begin() as conn:
        conn.execute(sa.insert(ts_runs), rows)


def counts(service, since, width, offset=0) -> dict:
    return {(job, start, status): n
            for job, start, status, n in service.run_buckets(since, width, offset)}


def hour(day_hour: str) -> dt.datetime:
    return dt.datetime.fromisoformat(f"2030-06-01T{day_hour}+00:00")


@pytest.mark.both_databases
def test_counts_by_status_per_bucket_with_edges_at_utc_hours(service):
    insert_runs(service, "a", [hour("10:00:00"), hour("10:59:59.999"), hour("10:30")],
                ["succeeded", "failed", "succeeded"])
    insert_runs(service, "a", [hour("11:00:00")], "timeout")
    insert_runs(service, "b", [hour("10:15")], "succeeded")
    insert_runs(service, "a", [hour("09:59:59")], "failed")   # before the asked bucket
    found = counts(service, hour("10:20"), 3600)   # the bucket holding 10:20 on
    assert found == {("a", hour("10:00"), "succeeded"): 2, ("a", hour("10:00"), "failed"): 1,
                     ("a", hour("11:00"), "timeout"): 1, ("b", hour("10:00"), "succeeded"): 1}


@pytest.mark.both_databases
def test_bucket_edges_follow_a_zone_half_an_hour_off_utc(service):
    # Kolkata's 16:00-17:00 is 10:30-11:30 UTC
    insert_runs(service, "a", [hour("10:29:59"), hour("10:30:00"), hour("11:29:59"),
                               hour("11:30:00")])
    found = counts(service, hour("10:00"), 3600, KOLKATA)
    assert found == {("a", hour("09:30"), "succeeded"): 1, ("a", hour("10:30"), "succeeded"): 2,
                     ("a", hour("11:30"), "succeeded"): 1}
    assert counts(service, hour("10:00"), 300) [("a", hour("10:25"), "succeeded")] == 1


@pytest.mark.both_databases
def test_old_buckets_are_kept_and_new_runs_still_counted(service):
    """Sealed buckets (long ended) come from memory; runs since are counted on every call."""
    now = dt.datetime.now(UTC)
    old = now.replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=3)
    insert_runs(service, "a", [old + dt.timedelta(minutes=m) for m in range(5)])
    since = now - dt.timedelta(hours=6)
    first = counts(service, since, 3600)
    assert first[("a", old, "succeeded")] == 5
    insert_runs(service, "a", [now - dt.timedelta(seconds=5)], "failed")
    second = counts(service, since, 3600)
    assert second[("a", old, "succeeded")] == 5
    assert sum(n for (_, _, status), n in second.items() if status == "failed") == 1


def dashboard(service, lang="en", tz="UTC", range_="24h") -> str:
    response = Client(ts.create_app(service)).get(f"/?range={range_}&lang={lang}&tz={tz}")
    assert response.status == 200, response
    return response.text


def buckets_of(page: str) -> list[tuple[str, str, str]]:
    """(href, tooltip, status) of each bucket bar on the page."""
    return re.findall(r'<a href="([^"]*)" class="tl-run tl-bucket" data-tip="([^"]*)"><rect '
                      r'class="bar bucket bar-([a-z]+)"', page)


@pytest.mark.both_databases
def test_dashboard_draws_a_dense_hour_as_one_bar_and_sparse_runs_one_by_one(service):
    for job_id in ("busy.job-1", "quiet"):
        service.add_job({"id": job_id, "func": "time:time", "trigger": {"type": "manual"}})
    now = dt.datetime.now(UTC)
    top = now.replace(minute=0, second=0, microsecond=0)
    dense_hour = top - dt.timedelta(hours=5)
    times = [dense_hour + dt.timedelta(minutes=2 * i) for i in range(30)]
    statuses = ["succeeded"] * 29 + ["failed"]
    statuses[10] = "failed"
    insert_runs(service, "busy.job-1", times, statuses)
    insert_runs(service, "quiet", [top - dt.timedelta(hours=h, minutes=7) for h in (2, 3, 4)],
                "failed")
    # two runs of the busy job in a later hour: that hour is sparse, drawn run by run
    insert_runs(service, "busy.job-1", [top - dt.timedelta(hours=2, minutes=m) for m in (10, 20)])
    page = dashboard(service)
    bars = buckets_of(page)
    assert len(bars) == 1
    href, tip, status = bars[0]
    assert status == "failed"   # two failures among 30: the hour is red
    assert "<" not in tip and "&amp;" not in href.replace("&amp;since", "").replace(
        "&amp;until", "")   # an attribute's text, escaped: the link's & are &amp;
    tip = html.unescape(tip)
    assert tip.startswith("busy.job-1, ") and tip.endswith("30 runs: 28 succeeded, 2 failed")
    assert html.unescape(href).startswith("/runs?job_id=busy.job-1&since=")
    # the quiet job's three runs: each its own marker, linked to its run page
    quiet = re.findall(r'<a href="/runs/([0-9a-f]+)" class="tl-run" data-tip="quiet: ', page)
    assert len(quiet) == 3
    busy = re.findall(r'<a href="/runs/([0-9a-f]+)" class="tl-run" data-tip="busy.job-1: ', page)
    assert len(busy) == 2
    # the run list the bar links to holds the hour's 30 runs
    runs = Client(ts.create_app(service)).get(html.unescape(href)).text
    assert len(set(re.findall(r'href="/runs/([0-9a-f]{20})"', runs))) == 30


@pytest.mark.both_databases
def test_dashboard_in_japanese_and_a_zone_off_the_hour(service):
    service.add_job({"id": "busy", "func": "time:time", "trigger": {"type": "manual"}})
    now = dt.datetime.now(UTC)
    # a local (Kolkata) hour five hours ago, crowded with 20 runs of which one timed out
    local_top = (now + dt.timedelta(seconds=KOLKATA)).replace(minute=0, second=0,
                                                                microsecond=0)
    begin = local_top - dt.timedelta(seconds=KOLKATA) - dt.timedelta(hours=5)
    insert_runs(service, "busy", [begin + dt.timedelta(minutes=3 * i) for i in range(20)],
                ["succeeded"] * 19 + ["timeout"])
    bars = buckets_of(dashboard(service, "ja", "Asia/Kolkata"))
    assert [status for _, _, status in bars] == ["timeout"]
    tip = html.unescape(bars[0][1])
    assert "20 件の実行: 成功 19 件、タイムアウト 1 件" in tip, tip
    since = re.search(r"since=([0-9T:\-Z]+)", html.unescape(bars[0][0])).group(1)
    assert since == begin.strftime("%Y-%m-%dT%H:%M:%SZ")   # a Kolkata hour edge: :30 UTC


@pytest.mark.both_databases
def test_a_run_counted_into_a_kept_bar_changes_it(service):
    """Bars are kept while the chart's clock stands still, but only for the same counts."""
    service.add_job({"id": "busy", "func": "time:time", "trigger": {"type": "manual"}})
    now = dt.datetime.now(UTC)
    top = now.replace(minute=0, second=0, microsecond=0)   # the hour going on: counted anew
    gap = (now - top) / 25                                 # on each page (RunLog keeps ended
    insert_runs(service, "busy", [top + gap * i for i in range(20)])   # hours only)
    assert [s for _, _, s in buckets_of(dashboard(service))] == ["succeeded"]
    insert_runs(service, "busy", [top + gap * 21], "failed")
    bars = buckets_of(dashboard(service))
    assert [s for _, _, s in bars] == ["failed"]
    assert html.unescape(bars[0][1]).endswith("21 runs: 20 succeeded, 1 failed")
