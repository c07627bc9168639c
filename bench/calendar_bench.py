"""Business calendars: what a fire time costs with a calendar, against the same schedule
without one (the baseline), side by side in one run.

For each schedule it walks N fire times the way the scheduler does (each time fed back as the
previous one) and prints microseconds per fire time: on the first walk (each month's business
days and each year's holidays built as they are met), on a second walk (cached, as a running
service mostly is), and for the plain trigger, with the ratio of the second to the plain:

- ``business_day`` (the last business day of each month, Japan's holidays) against a monthly
  cron on the last day (``0 18 L * *``);
- a weekday cron with ``on_holiday: skip``, ``previous`` and ``next`` against the cron alone;
- a per-minute cron with ``previous`` across Golden Week (the costly case: a closed day's
  fires move back to the day before), against the cron alone.

It also prints the cost of the first computation in a fresh process (the holidays library
imported, a country's year of holidays built) and what the caches save: the same calendar's
month list again. Not a test.

    python bench/calendar_bench.py            # --fires 500
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
import time
import zoneinfo
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from task_scheduler.calendars import (  # noqa: E402
    BusinessDayTrigger, CalendarTrigger, calendar_of)
from task_scheduler.triggers import crontab_trigger  # noqa: E402

TOKYO = zoneinfo.ZoneInfo("Asia/Tokyo")
RULES = {"name": "jp_business", "weekdays": [0, 1, 2, 3, 4], "holidays": "JP", "subdiv": None,
         "exclude": [["2026-12-29", "2027-01-03"], ["2027-08-13", "2027-08-13"]],
         "include": [["2027-01-04", "2027-01-04"]]}
START = dt.datetime(2026, 4, 27, 12, tzinfo=TOKYO)   # the Monday before Golden Week


def per_fire(trigger, fires: int) -> float:
    """Microseconds per fire time, walking ``fires`` of them from START."""
    began = time.perf_counter()
    current = trigger.get_next_fire_time(None, START)
    for _ in range(fires):
        current = trigger.get_next_fire_time(current, current)
    return (time.perf_counter() - began) / (fires + 1) * 1e6


def first_use() -> str:
    """A fresh process: the first business_day fire time, holidays imported and built."""
    script = ("import time, datetime as dt, zoneinfo; "
              "from task_scheduler.calendars import BusinessDayTrigger; "
              "began = time.perf_counter(); "
              f"t = BusinessDayTrigger({RULES!r}, -1, '18:00', zoneinfo.ZoneInfo('Asia/Tokyo')); "
              "t.get_next_fire_time(None, dt.datetime(2026, 4, 27, tzinfo=dt.UTC)); "
              "print(f'{(time.perf_counter() - began) * 1000:.0f}')")
    root = Path(__file__).resolve().parent.parent
    return subprocess.run([sys.executable, "-c", script], cwd=root, check=True,
                          capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fires", type=int, default=500)
    fires = parser.parse_args().fires
    weekday = crontab_trigger("0 8 * * 1-5", TOKYO)
    minutely = crontab_trigger("* * * * *", TOKYO)
    rows = [
        ("business_day day -1", BusinessDayTrigger(RULES, -1, "18:00", TOKYO),
         crontab_trigger("0 18 L * *", TOKYO), fires // 10),
        ("weekdays, skip", CalendarTrigger(weekday, RULES, "skip", TOKYO), weekday, fires),
        ("weekdays, previous", CalendarTrigger(weekday, RULES, "previous", TOKYO), weekday,
         fires),
        ("weekdays, next", CalendarTrigger(weekday, RULES, "next", TOKYO), weekday, fires),
        ("every minute, previous", CalendarTrigger(minutely, RULES, "previous", TOKYO), minutely,
         fires),
    ]
    print(f"{'schedule':24} {'first walk µs':>14} {'calendar µs':>12} {'plain µs':>10} "
          f"{'ratio':>7}")
    for name, with_calendar, plain, count in rows:
        first = per_fire(with_calendar, count)   # months and years met for the first time
        ours, base = per_fire(with_calendar, count), per_fire(plain, count)
        print(f"{name:24} {first:14.1f} {ours:12.1f} {base:10.1f} {ours / base:7.2f}")
    cal = calendar_of(RULES)
    began = time.perf_counter()
    for _ in range(1000):
        cal.business_days(2026, 5)
    cached = (time.perf_counter() - began) / 1000 * 1e6
    cal._months.clear()
    began = time.perf_counter()
    for _ in range(100):
        cal._months.clear()
        cal.business_days(2026, 5)
    fresh = (time.perf_counter() - began) / 100 * 1e6
    print(f"a month's business days: {fresh:.1f} µs built, {cached:.2f} µs cached "
          f"(ratio {fresh / cached:.0f})")
    print(f"first fire time in a fresh process (holidays imported, JP's holidays built): "
          f"{first_use()} ms")


if __name__ == "__main__":
    main()
