"""Calendars in the service: jobs.yaml validation with lines, fires skipped on a closed day
recorded with the reason, a calendar change rescheduling its jobs, API jobs using jobs.yaml's
calendars, GET /api/calendars/{name} and the GUI's month view."""

from __future__ import annotations

import datetime as dt

import pytest

import task_scheduler as ts
from conftest import Client, final_runs, wait_for, write_jobs
from test_calendars import JP_BUSINESS as CALENDARS


def errors_of(tmp_path, text):
    path = write_jobs(tmp_path / "jobs.yaml", text)
    with pytest.raises(ts.InvalidConfig) as info:
        ts.load_jobs_file(str(path))
    return str(info.value)


JOB = "jobs:\n  - id: a\n    command: ['true']\n"


@pytest.mark.parametrize("text, expected", [
    ("calendars:\n  c: {holidays: XX}\n" + JOB,
     "jobs.yaml:2: calendars.c.holidays: 'XX' is not a country code of the holidays library"),
    ("calendars:\n  c: {holidays: JP}\n  d:\n    holidays: jp\n" + JOB,
     "jobs.yaml:4: calendars.d.holidays: 'jp' is not a country code of the holidays library "
     "(ISO 3166-1 alpha-2 such as JP, US, DE); did you mean JP?"),
    ("calendars:\n  c:\n    holidays: US\n    subdiv: ZZ\n" + JOB,
     "jobs.yaml:4: calendars.c.subdiv: 'ZZ' is not a subdivision of US"),
    ("calendars:\n  c:\n    exclude: ['2026-12-29..2027-01-03', '2026-02-30']\n" + JOB,
     "jobs.yaml:3: calendars.c.exclude.1: '2026-02-30' is not a date 'YYYY-MM-DD'"),
    ("calendars:\n  c:\n    include:\n      - '2027-01-04..2027-01-01'\n" + JOB,
     "jobs.yaml:4: calendars.c.include.0: '2027-01-04..2027-01-01' is not a date"),
    ("calendars:\n  a: {extends: b}\n  b: {extends: c}\n  c: {extends: a}\n" + JOB,
     "jobs.yaml:2: calendars.a.extends: cycle: a -> b -> c -> a"),
    ("calendars:\n  a: {extends: nowhere}\n" + JOB,
     "jobs.yaml:2: calendars.a.extends: calendar 'nowhere' is not defined (defined: a)"),
    ("calendars:\n  a:\n    weekdays: [mon, funday]\n" + JOB,
     "jobs.yaml:3: calendars.a.weekdays.1:"),
    ("calendars:\n  a: {}\n" + JOB + "    trigger: {type: business_day, calendar: b, day: 1}\n",
     "jobs.yaml:6: a: trigger.calendar: calendar 'b' is not defined (calendars: a)"),
    ("calendars:\n  a: {}\n" + JOB + "    trigger: {type: cron, expression: '0 8 * * *'}\n"
     "    calendar:\n      name: b\n",
     "jobs.yaml:8: a: calendar.name: calendar 'b' is not defined (calendars: a)"),
    (JOB + "    trigger: {type: business_day, calendar: a, day: 0}\n",
     "a: trigger.day: day counts from 1 (the first business day) or from -1 (the last)"),
    ("calendars:\n  a: {}\n" + JOB +
     "    trigger: {type: business_day, calendar: a, day: 1, at: 18:00}\n",
     "YAML reads unquoted 18:00 as a base-60 number; quote it: '18:00'"),
    ("calendars:\n  a: {}\n" + JOB +
     "    calendar: {name: a, on_holiday: later}\n    trigger: {type: interval, seconds: 5}\n",
     "jobs.yaml:6: a: calendar.on_holiday: Input should be 'skip', 'previous' or 'next'"),
])
def test_each_bad_calendar_is_named_with_its_line(tmp_path, text, expected):
    message = errors_of(tmp_path, text)
    assert expected in message, message


def test_the_sample_calendar_loads(tmp_path):
    path = write_jobs(tmp_path / "jobs.yaml", CALENDARS + JOB +
                      "    trigger: {type: business_day, calendar: jp_business, day: -1, "
                      "at: '18:00', timezone: Asia/Tokyo}\n")
    jobs, _ = ts.load_jobs_file(str(path))
    assert jobs.calendars["jp_business"]["holidays"] == "JP"
    assert jobs.calendars["jp_business"]["exclude"][0] == ["2026-12-29", "2027-01-03"]


def closed_around_today() -> str:
    """A calendar that closes yesterday to tomorrow (any zone): every fire now is skipped."""
    today = dt.datetime.now(dt.UTC).date()
    first, last = today - dt.timedelta(days=1), today + dt.timedelta(days=1)
    return (f"calendars:\n  closed:\n    exclude: ['{first}..{last}']\n"
            f"  open:\n    weekdays: [mon, tue, wed, thu, fri, sat, sun]\n")


def test_a_fire_on_a_closed_day_is_recorded_skipped_with_the_reason(make_service, jobs_file):
    write_jobs(jobs_file, closed_around_today() +
               "jobs:\n  - id: tick\n    command: ['true']\n"
               "    trigger: {type: interval, seconds: 1}\n    calendar: {name: closed}\n")
    service = make_service()
    runs = final_runs(service, "tick", count=2)
    assert {r["status"] for r in runs} == {"skipped"}
    assert all(r["trigger"] == "schedule" for r in runs)
    today = dt.datetime.now(dt.UTC).date()
    assert any(r["error"] == f"{d} is not a business day of calendar closed: excluded by the "
               f"calendar" for r in runs for d in (today, today - dt.timedelta(days=1)))


def test_a_changed_calendar_reschedules_its_jobs(make_service, jobs_file):
    head = "jobs:\n  - id: tick\n    command: ['true']\n" \
           "    trigger: {type: interval, seconds: 1}\n    calendar: {name: cal}\n"
    closed = closed_around_today().replace("closed:", "cal:").replace("open:", "other:")
    write_jobs(jobs_file, closed + head)
    service = make_service()
    final_runs(service, "tick", count=1)
    assert service.job("tick")["calendars"] == ["cal"]
    # the same job, the calendar now open every day: fires run
    write_jobs(jobs_file, closed.replace("cal:", "was:").replace("other:", "cal:") + head)
    service.reload(force=True)

    def succeeded():
        service.flush()
        return [r for r in service.runs(job_id="tick", limit=100) if r["status"] == "succeeded"]
    wait_for(succeeded, 15, message="a run after the calendar opened")


def test_api_jobs_use_the_calendars_of_jobs_yaml(make_service, jobs_file):
    write_jobs(jobs_file, CALENDARS + "jobs: []\n")
    service = make_service()
    client = Client(ts.create_app(service, gui=None))
    job = {"id": "close", "command": ["true"],
           "trigger": {"type": "business_day", "calendar": "jp_business", "day": -1,
                       "at": "18:00", "timezone": "Asia/Tokyo"}}
    answer = client.post("/api/jobs", job)
    assert answer.status == 201, answer
    body = answer.json
    assert body["calendars"] == ["jp_business"] and len(body["next_run_times"]) == 5
    for iso in body["next_run_times"]:   # 18:00 in Tokyo, on a business day
        local = dt.datetime.fromisoformat(iso).astimezone(dt.timezone(dt.timedelta(hours=9)))
        assert local.strftime("%H:%M") == "18:00" and local.weekday() < 5
    bad = client.post("/api/jobs", {**job, "id": "bad", "trigger": {**job["trigger"],
                                                                   "calendar": "nope"}})
    assert bad.status == 422 and "calendar 'nope' is not defined" in bad.text, bad


def test_the_calendar_api_lists_business_days_and_named_holidays(make_service, jobs_file):
    write_jobs(jobs_file, CALENDARS + "jobs: []\n")
    client = Client(ts.create_app(make_service(), gui=None))
    body = client.get("/api/calendars/jp_business?from=2026-09-17&to=2026-09-25&lang=ja").json
    assert body["business_days"] == ["2026-09-17", "2026-09-18", "2026-09-24", "2026-09-25"]
    assert body["closed"] == [{"date": "2026-09-21", "kind": "holiday", "name": "敬老の日"},
                              {"date": "2026-09-22", "kind": "holiday", "name": "国民の休日"},
                              {"date": "2026-09-23", "kind": "holiday", "name": "秋分の日"}]
    english = client.get("/api/calendars/jp_business?from=2026-12-28&to=2027-01-05&lang=en").json
    assert english["business_days"] == ["2026-12-28", "2027-01-04", "2027-01-05"]
    assert {"date": "2027-01-01", "kind": "excluded", "name": "New Year's Day"} \
        in english["closed"]   # closed anyway: the holiday is named too
    assert client.get("/api/calendars/nope").status == 404
    for query in ("from=2026-02-30", "from=2026-09-10&to=2026-09-01",
                  "from=2026-01-01&to=2029-01-01"):
        answer = client.get(f"/api/calendars/jp_business?{query}")
        assert answer.status == 422 and answer.json["error"]["details"], (query, answer)
    assert client.get("/api/calendars/jp_business?month=1").status == 400   # unknown parameter
    paths = client.get("/api/openapi.json").json["paths"]
    assert "/api/calendars/{name}" in paths


def test_the_month_view_in_japanese(make_service, jobs_file):
    write_jobs(jobs_file, CALENDARS + "jobs:\n  - id: close\n    command: ['true']\n"
               "    trigger: {type: business_day, calendar: jp_business, day: -1, "
               "at: '18:00', timezone: Asia/Tokyo}\n")
    client = Client(ts.create_app(make_service()))
    page = client.get("/calendars/jp_business?month=2026-09&lang=ja")
    assert page.status == 200, page
    html = page.text
    assert "2026年9月" in html and "国民の休日" in html and "敬老の日" in html
    assert 'data-date="2026-09-22" data-kind="holiday"' in html
    assert 'data-date="2026-09-24" data-kind="business"' in html
    assert 'href="/jobs/close"' in html
    job_page = client.get("/jobs/close?lang=ja").text
    assert 'href="/calendars/jp_business"' in job_page and "毎月最終営業日 18:00" in job_page
    assert client.get("/calendars/nope").status == 404


@pytest.mark.postgres
def test_a_follower_uses_the_leaders_calendars_and_follows_their_change(tmp_path, postgres_url):
    """Only the leader applies jobs.yaml: the follower (whose own copy has no calendars) shows
    the leader's calendar and next fire times, and follows a change of the calendar."""
    job = ("jobs:\n  - id: close\n    command: ['true']\n    trigger: {type: business_day, "
           "calendar: jp_business, day: -1, at: '18:00', timezone: Asia/Tokyo}\n")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    leader_file = write_jobs(tmp_path / "a" / "jobs.yaml", CALENDARS + job)
    write_jobs(tmp_path / "b" / "jobs.yaml", "[]\n")
    services = [ts.SchedulerService(ts.Config(config_path=str(path), node=node,
                                              database_url=postgres_url, watch=False)).start()
                for node, path in (("a", leader_file), ("b", tmp_path / "b" / "jobs.yaml"))]
    try:
        leader, follower = services
        assert (leader.status()["role"], follower.status()["role"]) == ("leader", "follower")
        days = follower.calendar("jp_business", "2026-09-17", "2026-09-25")
        assert days["business_days"] == ["2026-09-17", "2026-09-18", "2026-09-24", "2026-09-25"]
        assert follower.job("close")["next_run_times"] == leader.job("close")["next_run_times"]
        # the next 400 days closed: the next month end comes after them, on both nodes
        today = dt.datetime.now(dt.timezone(dt.timedelta(hours=9))).date()
        end = today + dt.timedelta(days=400)
        write_jobs(leader_file, f"calendars:\n  jp_business:\n    holidays: JP\n"
                                f"    exclude: ['{today}..{end}']\n" + job)
        leader.reload(force=True)
        moved = leader.job("close")["next_run_times"]
        assert moved and dt.datetime.fromisoformat(moved[0]).date() > end, moved
        wait_for(lambda: follower.job("close")["next_run_times"] == moved, 10,
                 message="the follower to take in the changed calendar")
        assert follower.calendar("jp_business", str(today), str(today))["business_days"] == []
    finally:
        for service in reversed(services):
            service.stop(grace=0.5)
