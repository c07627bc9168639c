"""Business-day calendars: the business_day trigger and on_holiday against hand-checked dates.

Every Japanese date below was checked three ways: the Act on National Holidays (国民の祝日に関
する法律: substitute holidays under article 3-2, citizens' holidays under 3-3), the Cabinet
Office's published list for 2026 and 2027 (内閣府「国民の祝日について」), and the holidays
library (0.109, ``holidays.JP``). The weekday of each date was checked with a calendar. US dates
come from 5 U.S.C. 6103 (a Saturday holiday is observed on the Friday, a Sunday one on the
Monday) and the same library; DST changes from the Energy Policy Act of 2005 (second Sunday of
March, first Sunday of November)."""

from __future__ import annotations

import datetime as dt
import pickle
import random
import subprocess
import sys
import zoneinfo

import pytest

from task_scheduler.calendars import (
    CalendarTrigger, calendar_of, holiday_names, job_rules, job_trigger, shown_fire_times)
import task_scheduler.calendars as ts_calendars
from task_scheduler.jobsfile import parse_jobs_text
from task_scheduler.triggers import crontab_trigger
from conftest import ROOT

TOKYO = zoneinfo.ZoneInfo("Asia/Tokyo")
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
UTC = dt.UTC

# The calendar: weekdays, Japan's holidays, the company's New Year closing, Obon day
# (the other calendar tests use it too).
JP_BUSINESS = """\
calendars:
  jp_business:
    weekdays: [mon, tue, wed, thu, fri]
    holidays: JP
    exclude: ['2026-12-29..2027-01-03', '2027-08-13']
    include: ['2027-01-04']
"""
JP_CALENDAR = JP_BUSINESS + """\
  us_business:
    holidays: US
  us_sundays:                  # only Sundays work: to land fires on the days clocks change
    weekdays: [sun]
    holidays: US
  us_not_saturday:
    weekdays: [sun, mon, tue, wed, thu, fri]
  us_not_monday:
    weekdays: [sun, tue, wed, thu, fri, sat]
jobs:
"""


def trigger(tmp_path, trigger_yaml: str, calendar_yaml: str = ""):
    """The trigger of one job in a jobs.yaml with the calendars above."""
    text = JP_CALENDAR + f"  - id: j\n    command: ['true']\n    trigger: {trigger_yaml}\n"
    if calendar_yaml:
        text += f"    calendar: {calendar_yaml}\n"
    jobs = parse_jobs_text(text, str(tmp_path / "jobs.yaml"))
    return job_trigger(jobs[0], UTC, job_rules(jobs[0], jobs.calendars))


def fires(trig, start: dt.datetime, count: int) -> list[dt.datetime]:
    """The next ``count`` fire times from ``start``, as the scheduler walks them (each fire
    fed back as the previous one), calendar applied (skipped days left out)."""
    return shown_fire_times(trig, trig.get_next_fire_time(None, start), count)


def utc(times) -> list[dt.datetime]:
    """In UTC: Python never finds a time of a repeated hour equal to one in another zone."""
    return [t.astimezone(UTC) for t in times]


def days(times) -> list[str]:
    return [t.strftime("%Y-%m-%d %H:%M") for t in times]


JAPAN_HOLIDAYS = {
    # 2026: 5/3 (憲法記念日) is a Sunday: its substitute is the next day that is no holiday,
    # 5/6. 9/22 lies between 敬老の日 (third Monday of September) and 秋分の日 (9/23): a
    # citizens' holiday, so Silver Week runs from Saturday 9/19 to Wednesday 9/23.
    "2026-01-01": "元日", "2026-01-12": "成人の日", "2026-02-11": "建国記念の日",
    "2026-02-23": "天皇誕生日", "2026-03-20": "春分の日", "2026-04-29": "昭和の日",
    "2026-05-03": "憲法記念日", "2026-05-04": "みどりの日", "2026-05-05": "こどもの日",
    "2026-05-06": "振替休日", "2026-07-20": "海の日", "2026-08-11": "山の日",
    "2026-09-21": "敬老の日", "2026-09-22": "国民の休日", "2026-09-23": "秋分の日",
    "2026-10-12": "スポーツの日", "2026-11-03": "文化の日", "2026-11-23": "勤労感謝の日",
    # 2027: 春分の日 3/21 is a Sunday: 3/22 is its substitute. No citizens' holiday in
    # September (敬老の日 9/20 and 秋分の日 9/23 are two days apart).
    "2027-01-01": "元日", "2027-01-11": "成人の日", "2027-02-11": "建国記念の日",
    "2027-02-23": "天皇誕生日", "2027-03-21": "春分の日", "2027-03-22": "振替休日",
    "2027-04-29": "昭和の日", "2027-05-03": "憲法記念日", "2027-05-04": "みどりの日",
    "2027-05-05": "こどもの日", "2027-07-19": "海の日", "2027-08-11": "山の日",
    "2027-09-20": "敬老の日", "2027-09-23": "秋分の日", "2027-10-11": "スポーツの日",
    "2027-11-03": "文化の日", "2027-11-23": "勤労感謝の日",
}


def test_the_library_agrees_with_the_hand_checked_japanese_holidays():
    found = {**holiday_names("JP", None, 2026, "ja"), **holiday_names("JP", None, 2027, "ja")}
    assert {d.isoformat(): name for d, name in found.items()} == JAPAN_HOLIDAYS


# First business day of each month, 2026-2027: 1/1 and weekends pass over; 2027-01-01..03 are
# closed (New Year), 1/4 forced open; May 2027 opens on the 6th after Golden Week (5/3-5/5 on
# Monday-Wednesday after a weekend).
MONTH_STARTS = ["2026-01-02", "2026-02-02", "2026-03-02", "2026-04-01", "2026-05-01",
                "2026-06-01", "2026-07-01", "2026-08-03", "2026-09-01", "2026-10-01",
                "2026-11-02", "2026-12-01", "2027-01-04", "2027-02-01", "2027-03-01",
                "2027-04-01", "2027-05-06", "2027-06-01", "2027-07-01", "2027-08-02",
                "2027-09-01", "2027-10-01", "2027-11-01", "2027-12-01"]
# Last business day: weekends pass back; 2026-12-29..31 are closed, so December closes on
# Monday the 28th.
MONTH_ENDS = ["2026-01-30", "2026-02-27", "2026-03-31", "2026-04-30", "2026-05-29",
              "2026-06-30", "2026-07-31", "2026-08-31", "2026-09-30", "2026-10-30",
              "2026-11-30", "2026-12-28", "2027-01-29", "2027-02-26", "2027-03-31",
              "2027-04-30", "2027-05-31", "2027-06-30", "2027-07-30", "2027-08-31",
              "2027-09-30", "2027-10-29", "2027-11-30", "2027-12-31"]


def test_first_business_day_of_each_month_in_tokyo(tmp_path):
    trig = trigger(tmp_path, "{type: business_day, calendar: jp_business, day: 1, at: '09:00', "
                             "timezone: Asia/Tokyo}")
    times = fires(trig, dt.datetime(2026, 1, 1, tzinfo=TOKYO), 24)
    assert days(t.astimezone(TOKYO) for t in times) == [f"{d} 09:00" for d in MONTH_STARTS]
    assert times[0] == dt.datetime(2026, 1, 2, 0, 0, tzinfo=UTC)   # 09:00 JST is 00:00 UTC


def test_last_business_day_of_each_month_in_tokyo(tmp_path):
    trig = trigger(tmp_path, "{type: business_day, calendar: jp_business, day: -1, at: '18:00', "
                             "timezone: Asia/Tokyo}")
    times = fires(trig, dt.datetime(2026, 1, 1, tzinfo=TOKYO), 24)
    assert days(t.astimezone(TOKYO) for t in times) == [f"{d} 18:00" for d in MONTH_ENDS]


@pytest.mark.parametrize("day, start, expected", [
    (2, "2026-05-01", "2026-05-07"),     # 5/1 Fri, then 5/4-5/6 holidays: the 2nd is 5/7
    (3, "2026-09-01", "2026-09-03"),
    (-2, "2026-09-01", "2026-09-29"),    # 9/30 Wed is the last, 9/29 the one before
    (-3, "2026-12-01", "2026-12-24"),    # 12/28, 12/25, 12/24 (29-31 closed)
    (5, "2027-01-01", "2027-01-08"),     # 1/4 is the first (1/1-1/3 closed), so 1/8 Fri
    (22, "2026-07-01", "2026-07-31"),    # July 2026: 23 weekdays less 海の日 (7/20): 22
    (21, "2026-08-01", "2026-10-30"),    # August has 20 (山の日), September 19: October's 21st
])
def test_nth_business_day(tmp_path, day, start, expected):
    trig = trigger(tmp_path, f"{{type: business_day, calendar: jp_business, day: {day}, "
                             f"at: '10:30', timezone: Asia/Tokyo}}")
    first = trig.get_next_fire_time(None, dt.datetime.fromisoformat(start).replace(tzinfo=TOKYO))
    assert first.astimezone(TOKYO).strftime("%Y-%m-%d %H:%M") == f"{expected} 10:30"


# on_holiday: a monthly cron on the 22nd and on the 6th meets Silver Week, Golden Week and the
# 2027 substitute holiday; each is moved to the business day before or after, or skipped.
ON_HOLIDAY = {
    "previous": ["2026-08-21", "2026-09-18", "2026-10-22", "2026-11-20", "2026-12-22",
                 "2027-01-22", "2027-02-22", "2027-03-19"],
    # 8/22 Sat -> 8/24 Mon; 9/22 (国民の休日) -> 9/24 (9/23 秋分の日); 11/22 Sun and 11/23
    # 勤労感謝の日 -> 11/24; 2027-03-22 振替休日 -> 3/23
    "next": ["2026-08-24", "2026-09-24", "2026-10-22", "2026-11-24", "2026-12-22",
             "2027-01-22", "2027-02-22", "2027-03-23"],
    "skip": ["2026-10-22", "2026-12-22", "2027-01-22", "2027-02-22", "2027-04-22",
             "2027-06-22", "2027-07-22", "2027-09-22"],
}


@pytest.mark.parametrize("mode", sorted(ON_HOLIDAY))
def test_on_holiday_moves_or_skips_in_tokyo(tmp_path, mode):
    trig = trigger(tmp_path, "{type: cron, expression: '0 9 22 * *', timezone: Asia/Tokyo}",
                   f"{{name: jp_business, on_holiday: {mode}}}")
    times = fires(trig, dt.datetime(2026, 8, 1, tzinfo=TOKYO), 8)
    assert days(t.astimezone(TOKYO) for t in times) == [f"{d} 09:00" for d in ON_HOLIDAY[mode]]


@pytest.mark.parametrize("mode, expected", [
    ("previous", "2026-05-01"),   # 5/6 振替休日, 5/4-5/5 holidays, 5/2-5/3 weekend
    ("next", "2026-05-07"),
])
def test_golden_week_substitute_holiday(tmp_path, mode, expected):
    trig = trigger(tmp_path, "{type: cron, expression: '0 9 6 * *', timezone: Asia/Tokyo}",
                   f"{{name: jp_business, on_holiday: {mode}}}")
    first = trig.get_next_fire_time(None, dt.datetime(2026, 4, 7, tzinfo=TOKYO))
    assert days([first.astimezone(TOKYO)]) == [f"{expected} 09:00"]


def test_new_year_closing_moves_the_first_to_the_28th_or_the_4th(tmp_path):
    for mode, expected in (("previous", "2026-12-28"), ("next", "2027-01-04")):
        trig = trigger(tmp_path, "{type: cron, expression: '0 9 1 * *', timezone: Asia/Tokyo}",
                       f"{{name: jp_business, on_holiday: {mode}}}")
        times = fires(trig, dt.datetime(2026, 12, 2, tzinfo=TOKYO), 2)
        assert days(t.astimezone(TOKYO) for t in times)[0] == f"{expected} 09:00", mode


def test_moved_fires_onto_existing_ones_fire_once(tmp_path):
    """Weekday mornings through Golden Week 2026: 4/29 (Wed) and 5/4-5/6 fall onto fires that
    exist anyway; each time comes once, in order."""
    expected = {"previous": ["2026-04-27", "2026-04-28", "2026-04-30", "2026-05-01",
                             "2026-05-07", "2026-05-08"],
                "next": ["2026-04-27", "2026-04-28", "2026-04-30", "2026-05-01",
                         "2026-05-07", "2026-05-08"]}
    for mode, want in expected.items():
        trig = trigger(tmp_path, "{type: cron, expression: '0 8 * * 1-5', "
                                 "timezone: Asia/Tokyo}",
                       f"{{name: jp_business, on_holiday: {mode}}}")
        times = fires(trig, dt.datetime(2026, 4, 27, tzinfo=TOKYO), 6)
        assert days(t.astimezone(TOKYO) for t in times) == [f"{d} 08:00" for d in want], mode


def test_skip_reason_names_the_holiday(tmp_path):
    trig = trigger(tmp_path, "{type: cron, expression: '0 9 22 * *', timezone: Asia/Tokyo}",
                   "{name: jp_business}")
    assert isinstance(trig, CalendarTrigger)
    reason = trig.skip_reason(dt.datetime(2026, 9, 22, 9, tzinfo=TOKYO))
    assert reason == ("2026-09-22 is not a business day of calendar jp_business: a holiday "
                      "(国民の休日)")
    assert "excluded" in trig.skip_reason(dt.datetime(2026, 12, 29, 9, tzinfo=TOKYO))
    assert trig.skip_reason(dt.datetime(2026, 9, 24, 9, tzinfo=TOKYO)) is None
    # the unmoved fire time still fires (the scheduler records it skipped, with the reason)
    first = trig.get_next_fire_time(None, dt.datetime(2026, 9, 1, tzinfo=TOKYO))
    assert first.astimezone(TOKYO).date() == dt.date(2026, 9, 22)


def test_a_moved_fire_comes_once_across_a_restart(tmp_path):
    """The schedule table keeps the next (moved) fire time and the pickled trigger; after a
    restart the scheduler goes on from them, or computes afresh from now: either way the moved
    fire comes once. Saturday 2026-09-19 to Wednesday 9/23 (Silver Week), weekday 08:00
    fires moved to the next business day collapse onto Thursday 9/24 08:00."""
    trig = trigger(tmp_path, "{type: cron, expression: '0 8 * * *', timezone: Asia/Tokyo}",
                   "{name: jp_business, on_holiday: next}")
    friday = dt.datetime(2026, 9, 18, 8, tzinfo=TOKYO)
    moved = trig.get_next_fire_time(friday, friday)
    assert moved.astimezone(TOKYO) == dt.datetime(2026, 9, 24, 8, tzinfo=TOKYO)
    restored = pickle.loads(pickle.dumps(trig))   # as the job store keeps it
    assert type(restored).__module__ == "task_scheduler"
    # stored next time fired, then on: Friday the 25th, not the 24th again
    after = restored.get_next_fire_time(moved, moved)
    assert after.astimezone(TOKYO) == dt.datetime(2026, 9, 25, 8, tzinfo=TOKYO)
    # a schedule computed afresh on Monday 9/21 (a resume, a takeover) finds the 24th once
    fresh = restored.get_next_fire_time(None, dt.datetime(2026, 9, 21, 12, tzinfo=TOKYO))
    assert fresh == moved
    assert restored.get_next_fire_time(fresh, fresh) == after


# A DST zone: New York with US federal holidays

def test_business_day_with_us_holidays_in_new_york(tmp_path):
    trig = trigger(tmp_path, "{type: business_day, calendar: us_business, day: 3, at: '09:00', "
                             "timezone: America/New_York}")
    # July 2026: 7/1 Wed, 7/2 Thu, 7/3 Fri is Independence Day observed (7/4 is a Saturday)
    first = trig.get_next_fire_time(None, dt.datetime(2026, 6, 5, tzinfo=NEW_YORK))
    assert first == dt.datetime(2026, 7, 6, 13, 0, tzinfo=UTC)   # 09:00 EDT
    first = trig.get_next_fire_time(None, dt.datetime(2026, 12, 5, tzinfo=NEW_YORK))
    assert first == dt.datetime(2027, 1, 6, 14, 0, tzinfo=UTC)   # 1/1 Fri off: 4, 5, 6; EST


def test_business_day_at_a_time_clocks_skip_fires_right_after(tmp_path):
    # 2026-03-08, the second Sunday: 02:00 EST jumps to 03:00 EDT; 02:30 does not exist
    trig = trigger(tmp_path, "{type: business_day, calendar: us_sundays, day: 2, at: '02:30', "
                             "timezone: America/New_York}")
    times = fires(trig, dt.datetime(2026, 2, 20, tzinfo=NEW_YORK), 2)
    assert utc(times)[0] == dt.datetime(2026, 3, 8, 7, 0, tzinfo=UTC)    # 03:00 EDT
    assert utc(times)[1] == dt.datetime(2026, 4, 12, 6, 30, tzinfo=UTC)  # 02:30 EDT


def test_business_day_at_a_repeated_time_fires_once(tmp_path):
    # 2026-11-01, the first Sunday: 01:30 happens twice (EDT, then EST): fires at the first
    trig = trigger(tmp_path, "{type: business_day, calendar: us_sundays, day: 1, at: '01:30', "
                             "timezone: America/New_York}")
    times = fires(trig, dt.datetime(2026, 10, 20, tzinfo=NEW_YORK), 2)
    assert utc(times) == [dt.datetime(2026, 11, 1, 5, 30, tzinfo=UTC),    # 01:30 EDT
                     dt.datetime(2026, 12, 6, 6, 30, tzinfo=UTC)]    # 01:30 EST


@pytest.mark.parametrize("expression, use, start, expected", [
    # Saturday 2026-03-07 02:30 -> Sunday 3/8 02:30, which does not exist -> 03:00 EDT (from
    # Monday 3/2: Saturday 2/28 moved to Sunday 3/1 has passed)
    ("30 2 * * 6", "{name: us_not_saturday, on_holiday: next}", dt.date(2026, 3, 2),
     [(2026, 3, 8, 7, 0), (2026, 3, 15, 6, 30)]),
    # Monday 2026-11-02 01:30 -> Sunday 11/1 01:30, which happens twice -> once, the first (EDT)
    ("30 1 * * 1", "{name: us_not_monday, on_holiday: previous}", dt.date(2026, 10, 27),
     [(2026, 11, 1, 5, 30), (2026, 11, 8, 6, 30)]),
])
def test_a_fire_moved_onto_a_dst_change_fires_once(tmp_path, expression, use, start, expected):
    trig = trigger(tmp_path, f"{{type: cron, expression: '{expression}', "
                             f"timezone: America/New_York}}", use)
    times = fires(trig, dt.datetime.combine(start, dt.time(0), tzinfo=NEW_YORK), 2)
    assert utc(times) == [dt.datetime(*t, tzinfo=UTC) for t in expected]


@pytest.mark.parametrize("mode, expected", [
    ("previous", dt.datetime(2026, 11, 25, 14, 0, tzinfo=UTC)),   # Thanksgiving 11/26 (Thu)
    ("next", dt.datetime(2026, 11, 27, 14, 0, tzinfo=UTC)),       # 09:00 EST
])
def test_thanksgiving_moves_in_new_york(tmp_path, mode, expected):
    trig = trigger(tmp_path, "{type: cron, expression: '0 9 26 * *', "
                             "timezone: America/New_York}",
                   f"{{name: us_business, on_holiday: {mode}}}")
    assert trig.get_next_fire_time(None, dt.datetime(2026, 11, 1, tzinfo=NEW_YORK)) == expected


def test_extends_adds_closings_and_overrides_weekdays(tmp_path):
    text = ("calendars:\n  base: {holidays: JP, exclude: ['2026-08-13..2026-08-14']}\n"
            "  plant: {extends: base, weekdays: [mon, tue, wed, thu, fri, sat], "
            "exclude: ['2026-08-12']}\njobs: []\n")
    rules = parse_jobs_text(text, str(tmp_path / "jobs.yaml")).calendars
    plant = calendar_of(rules["plant"])
    assert plant.kind(dt.date(2026, 8, 8)) == "business"    # a Saturday: the plant works
    assert plant.kind(dt.date(2026, 8, 11)) == "holiday"    # 山の日, from the parent
    assert [plant.kind(dt.date(2026, 8, d)) for d in (12, 13, 14)] == ["excluded"] * 3
    assert calendar_of(rules["base"]).kind(dt.date(2026, 8, 12)) == "business"


def test_holidays_is_imported_only_for_a_calendar_that_names_a_country(tmp_path):
    """The library costs ~11 MiB and ~0.1 s: a service without such a calendar never pays."""
    (tmp_path / "plain.yaml").write_text(
        "calendars:\n  c: {weekdays: [mon], exclude: ['2026-01-05']}\njobs:\n"
        "  - id: j\n    command: ['true']\n    trigger: {type: business_day, calendar: c, "
        "day: 1}\n")
    (tmp_path / "jp.yaml").write_text("calendars:\n  c: {holidays: JP}\njobs: []\n")
    script = ("import sys, task_scheduler as ts; ts.load_jobs_file(sys.argv[1]); "
              "print('holidays' in sys.modules)")
    seen = [subprocess.run([sys.executable, "-c", script, str(tmp_path / name)], check=True,
                           capture_output=True, text=True, cwd=ROOT).stdout.strip()
            for name in ("plain.yaml", "jp.yaml")]
    assert seen == ["False", "True"]


@pytest.mark.parametrize("seed", range(12))
def test_moved_fires_match_a_brute_force_reference(seed):
    """previous/next against the plain definition: every base time in a wide window moved,
    repeats dropped, sorted; the trigger must give the same times from any moment."""
    rng = random.Random(seed)
    zone = rng.choice([TOKYO, NEW_YORK])
    closed = [dt.date(2026, 3, 1) + dt.timedelta(days=rng.randrange(60)) for _ in range(8)]
    rules = {"name": "r", "weekdays": sorted(rng.sample(range(7), rng.randint(3, 6))),
             "holidays": None, "subdiv": None,
             "exclude": [[d.isoformat(), d.isoformat()] for d in closed], "include": []}
    expression = rng.choice(["0 8 * * *", "30 2 * * *", "0 9,17 * * 1-5", "15 */6 * * *",
                             "0 0 1,15 * *", "45 1 * * 6"])
    mode = rng.choice(["previous", "next"])
    base = crontab_trigger(expression, zone)
    trig = CalendarTrigger(base, rules, mode, zone)
    cal = calendar_of(rules)
    step = 1 if mode == "next" else -1
    window_start = dt.datetime(2026, 2, 1, tzinfo=zone)
    times, current = [], base.get_next_fire_time(None, window_start)
    while current < dt.datetime(2026, 9, 1, tzinfo=zone):   # past the 6th after any moment
        times.append(current)
        current = base.get_next_fire_time(current, current)
    reference = sorted({_moved(t, cal, step, zone).timestamp() for t in times})
    for _ in range(5):
        moment = dt.datetime(2026, 3, 1, tzinfo=zone) + dt.timedelta(
            minutes=rng.randrange(60 * 24 * 45))
        want = [t for t in reference if t > moment.timestamp() - 1e-6][:6]
        got, current = [], trig.get_next_fire_time(None, moment)
        while len(got) < 6:
            got.append(current.timestamp())
            current = trig.get_next_fire_time(current, current)
        assert got == want, (seed, expression, mode, moment)


def _moved(moment, cal, step, zone):
    local = moment.astimezone(zone)
    if cal.is_business_day(local.date()):
        return moment
    return ts_calendars._at(cal.shift(local.date(), step), local.time().replace(fold=0), zone)
