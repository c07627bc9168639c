"""The dashboard's timeline and the job page's duration chart, as numbers for SVG templates.

Both are drawn in percentages of the SVG's width (no viewBox): the chart fills whatever width it
gets, a phone included, while text, markers and bar heights keep their pixel sizes. Markers are
nested ``<svg x="p%" overflow="visible">`` so that a diamond stays a diamond.

Timeline: a range picked by ``?range=`` (or from the data: the shortest that holds the last
day's runs), "now" at 80 % of the width, a quarter of the range ahead. Runs are bars of their
real duration, runs too short to see are markers, upcoming fires are diamonds; the lanes that need
attention (failing, running) come first.
"""
from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta

from task_scheduler.errors import SchedulerError

from .i18n import Locale, parse_time

RANGES = {"1h": 3600, "6h": 6 * 3600, "24h": 24 * 3600, "7d": 7 * 24 * 3600}
TICK_STEP = {"1h": 900, "6h": 3600, "24h": 4 * 3600, "7d": 24 * 3600}   # 5-9 labels a range
PHONE_TICKS = 4            # labels that fit the ~200 px a phone leaves for the chart
NOW_AT = 80.0              # percent of the width: three quarters past, one quarter to come
MIN_BAR = 0.3              # percent; a shorter bar (3 px of 1,000) is drawn as a marker
FIRE_GAP = 0.6             # percent between two fire markers; closer ones are left out
MAX_FIRES = 40             # per lane: the quarter to come holds 20 / FIRE_GAP = 33 markers
LANE_H = 24
MAX_RUNS = 1000            # drawn at most: a million runs keep the dashboard within ~2x of a few
ACTIVE = ("queued", "running")
FAILING = ("failed", "timeout", "interrupted")
INSTANT = ("missed", "skipped", "cancelled")


def timeline(service, locale: Locale, asked: str | None, now: datetime | None = None) -> dict:
    now = now or datetime.now(UTC)
    runs, truncated = service.run_spans(now - timedelta(seconds=RANGES["7d"]), MAX_RUNS)
    jobs = service.jobs()
    name = asked if asked in RANGES else default_range(runs, jobs, now)
    past = RANGES[name]
    start = now - timedelta(seconds=past)
    end = now + timedelta(seconds=past * (100 - NOW_AT) / NOW_AT)
    scale = _Scale(start, end)
    by_job: dict[str, list] = {}
    for run in runs:
        if (_end_of(run, now) or now) >= start:
            by_job.setdefault(run["job_id"], []).append(run)
    jobs = sorted(jobs, key=lambda j: _attention(j, by_job.get(j["id"], []), now))
    lanes = [_lane(i, job, by_job.get(job["id"], []), scale, now, service, locale)
             for i, job in enumerate(jobs)]
    return {"range": name, "ranges": list(RANGES), "lanes": lanes,
            "height": max(len(lanes), 1) * LANE_H, "now_x": NOW_AT,
            "ticks": _ticks(name, start, end, scale, locale),
            "truncated": truncated, "max_runs": MAX_RUNS}


def default_range(runs: list, jobs: list, now: datetime) -> str:
    """The shortest range that shows the last day's runs; with none, one that shows a fire."""
    starts = [_start_of(r, now) for r in runs]
    day = [s for s in starts if s >= now - timedelta(days=1)]
    if day:
        age = (now - min(day)).total_seconds()
        return next((n for n in ("1h", "6h") if age <= RANGES[n] * 0.9), "24h")
    fires = [t for j in jobs if (t := parse_time(j.get("next_run_time")))]
    ahead = (min(fires) - now).total_seconds() if fires else None
    if ahead is None:
        return "24h"
    return next((n for n in ("1h", "6h", "24h") if ahead <= RANGES[n] / 4), "24h")


class _Scale:
    def __init__(self, start: datetime, end: datetime):
        self.start, self.span = start, (end - start).total_seconds()

    def __call__(self, moment: datetime) -> float:
        ratio = (moment - self.start).total_seconds() / self.span
        return round(min(max(ratio, 0.0), 1.0) * 100, 3)


def _attention(job: dict, runs: list, now: datetime) -> tuple:
    """Failing first, then running, then scheduled jobs by latest activity, paused last."""
    last = runs[0] if runs else job.get("last_run") or {}
    if last.get("status") in FAILING:
        rank = 0
    elif any(r["status"] in ACTIVE for r in runs):
        rank = 1
    else:
        rank = 2 if job.get("state") == "scheduled" else 3
    latest = max((_start_of(r, now) for r in runs), default=None)
    return (rank, -(latest.timestamp() if latest else 0), job.get("next_run_time") or "~",
            job["id"])


def _lane(index: int, job: dict, runs: list, x, now: datetime, service, locale: Locale) -> dict:
    y = index * LANE_H
    last = runs[0] if runs else job.get("last_run") or {}
    bars, dots = [], []
    for run in reversed(runs):   # oldest first: the newest is drawn on top
        shape = _run_shape(run, x, now, locale)
        (dots if shape["dot"] else bars).append(shape)
    state = job.get("state", "")
    fires, band = _fires(job, x, now, service, locale)
    return {"y": y, "mid": y + LANE_H / 2, "text_y": y + LANE_H / 2 + 4, "bar_y": y + 5,
            "band_y": y + LANE_H / 2 - 1.5,
            "odd": index % 2 == 1, "job_id": job["id"], "label": _shorten(job["id"], 22),
            "state": state, "failing": last.get("status") in FAILING,
            "running": any(r["status"] in ACTIVE for r in runs), "bars": bars, "dots": dots,
            "fires": fires, "band": band,
            "title": locale.t("tl.lane_title", job=job["id"], state=locale.word("state", state))}


def _run_shape(run: dict, x, now: datetime, locale: Locale) -> dict:
    begin, finish = _start_of(run, now), _end_of(run, now) or now
    x1, x2 = x(begin), x(finish)
    status = run["status"]
    title = locale.t("tl.run_title", job=run["job_id"], status=locale.word("status", status),
                     trigger=locale.word("trigger", run.get("trigger") or "schedule"),
                     start=locale.time(run.get("started_at") or run.get("scheduled_at")),
                     duration=locale.duration(run.get("duration_s")))
    return {"x": x1, "w": round(max(x2 - x1, MIN_BAR), 3), "status": status, "title": title,
            "href": f"/runs/{run['id']}", "dot": status in INSTANT or x2 - x1 < MIN_BAR}


def _fires(job: dict, x, now: datetime, service, locale: Locale) -> tuple[list, dict | None]:
    """The next fire times inside the range as markers, one per FIRE_GAP at most; fires that
    come closer than that (every minute on a week's range) are one band from the first on."""
    if job.get("state") != "scheduled":
        return [], None
    known = [t for t in map(parse_time, job.get("next_run_times") or []) if t and t > now]
    marks, last = [], None
    dense = len(known) == 5 and x(known[-1]) < 100 and x(known[-1]) - x(known[0]) < 4 * FIRE_GAP
    for moment in known[:1] if dense else _fire_times(job, known, x, service):
        pos = x(moment)
        if pos >= 100:
            break
        if last is None or pos - last >= FIRE_GAP:
            marks.append({"x": pos, "title": locale.t("tl.fire_title", job=job["id"],
                                                      time=locale.time(moment.isoformat()))})
            last = pos
    if not dense:
        return marks, None
    every = locale.exact_span(round((known[-1] - known[0]).total_seconds() / 4, 1))
    return marks, {"x": marks[0]["x"], "w": round(100 - marks[0]["x"], 3),
                   "title": locale.t("tl.fire_band", job=job["id"], every=every)}


def _fire_times(job: dict, known: list, x, service) -> list[datetime]:
    """The known next five, continued to the end of the range when they stop short of it."""
    if len(known) < 5 or x(known[-1]) >= 100 or (job.get("definition") or {}).get("calendar"):
        return known   # past the range, all there is, or moved by a calendar the preview lacks
    gap = (known[-1] - known[0]) / 4
    end = x.start + timedelta(seconds=x.span)
    count = min(int((end - known[-1]) / gap) + 2, MAX_FIRES) if gap else MAX_FIRES
    trigger = job.get("trigger") or {}
    if trigger.get("type") == "interval":
        return known + [known[-1] + gap * i for i in range(1, count)]
    try:
        more = service.preview_trigger(trigger, count=count + 5)
    except (SchedulerError, ValueError):   # a trigger the preview cannot read: five suffice
        return known
    return known + [t for t in map(parse_time, more) if t and t > known[-1]]


def _ticks(name: str, start: datetime, end: datetime, x, locale: Locale) -> list[dict]:
    step = TICK_STEP[name]
    local = start.astimezone(locale.zone)
    offset = local.utcoffset().total_seconds() if local.utcoffset() else 0
    first = (int(start.timestamp() + offset) // step + 1) * step - offset
    ticks, moment = [], datetime.fromtimestamp(first, UTC)
    while moment < end:
        pos = x(moment)
        if abs(pos - NOW_AT) > 4 and 1 < pos < 99:   # the "now" label has the room above
            ticks.append({"x": pos, "label": locale.clock(moment, with_day=name == "7d"),
                          "anchor": "start" if pos < 8 else "end" if pos > 92 else ""})
        moment += timedelta(seconds=step)
    keep = -(-len(ticks) // PHONE_TICKS)
    for index, tick in enumerate(ticks):
        tick["minor"] = index % keep != 0   # left out on phones
    return ticks


def duration_chart(runs: list, locale: Locale) -> dict | None:
    """The recent runs of one job, oldest left, bar height by duration, colour by status."""
    runs = [r for r in reversed(runs) if r["status"] not in ACTIVE]
    timed = [r["duration_s"] for r in runs if r.get("duration_s") is not None]
    if not timed:
        return None
    longest, height = max(max(timed), 0.001), 100
    slot = 100 / max(len(runs), 12)   # a few runs do not make fat bars
    bars = []
    for i, run in enumerate(runs):
        seconds = run.get("duration_s")
        h = max(round(height * (seconds or 0) / longest, 1), 2)
        bars.append({"x": round(i * slot + slot * 0.15, 3), "w": round(slot * 0.7, 3),
                     "y": 8 + height - h, "h": h, "status": run["status"],
                     "href": f"/runs/{run['id']}",
                     "title": locale.t("chart.bar_title", status=locale.word("status",
                                                                             run["status"]),
                                       start=locale.time(run.get("started_at")
                                                         or run.get("scheduled_at")),
                                       duration=locale.duration(seconds))})
    median = statistics.median(timed)
    return {"bars": bars, "height": height + 8, "svg_height": height + 12, "count": len(runs),
            "longest": locale.duration(max(timed)), "median": locale.duration(median),
            "median_y": round(8 + height - height * median / longest, 1),
            "first": runs[0].get("started_at") or runs[0].get("scheduled_at"),
            "last": runs[-1].get("started_at") or runs[-1].get("scheduled_at")}


def _start_of(run: dict, now: datetime) -> datetime:
    return _moment(run.get("started_at")) or _moment(run.get("scheduled_at")) or now


def _end_of(run: dict, now: datetime) -> datetime | None:
    if run.get("status") in ACTIVE:
        return now
    return _moment(run.get("finished_at")) or _start_of(run, now)


def _moment(value) -> datetime | None:
    """A time of a run: an aware datetime (``run_spans``) or ISO text (the API's shape)."""
    return value if isinstance(value, datetime) else parse_time(value)


def _shorten(text: str, size: int) -> str:
    return text if len(text) <= size else text[: size - 1] + "…"
