"""The dashboard's timeline and the job page's duration chart, as numbers for SVG templates.

Both are drawn in percentages of the SVG's width (no viewBox): the chart fills whatever width it
gets, a phone included, while text, markers and bar heights keep their pixel sizes. Markers are
nested ``<svg x="p%" overflow="visible">`` so that a diamond stays a diamond.

Timeline: a range picked by ``?range=`` (or from the data: the shortest that holds the last
day's runs), "now" at 80 % of the width, a quarter of the range ahead. Runs are bars of their
real duration, runs too short to see are markers, upcoming fires are diamonds; the lanes that need
attention (failing, running) come first. Where a job's bucket (an hour on the 24 h range, see
BUCKETS; edges at the viewer's hours) holds more runs than fit one by one, the store counts them
(``run_buckets``) and the bucket is one bar in the colour of its worst status, its tooltip the
counts by status, its link the run list of that hour: a million runs cost a few hundred bars, and
a failure among them stays red. The rest of the runs are drawn one by one.
"""
from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

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
MAX_RUNS = 1000            # drawn one by one at most (sparse stretches of up to 1,000 jobs)
BUCKETS = {"1h": 300, "6h": 1800, "24h": 3600, "7d": 6 * 3600}   # s counted as one, per range
RUN_ROOM = 0.6             # percent a run drawn alone needs: a bucket holding more is one bar
BUCKET_GAP = 0.15          # percent between two bucket bars
PLACE_STEPS = 1500         # the chart's clock moves by a 1,500th of the range (a day: 58 s,
                           # under a pixel): until it does, a lane's bucket bars are kept
MAX_WINDOWS = 50           # sparse stretches read each alone; more: from the first on
ACTIVE = ("queued", "running")
FAILING = ("failed", "timeout", "interrupted")
INSTANT = ("missed", "skipped", "cancelled")
WORST = ("failed", "timeout", "interrupted", "running", "queued", "missed", "cancelled",
         "skipped", "succeeded")   # a bucket bar takes the colour of the first it holds
LOOK = {"timeout": "failed", "skipped": "missed", "cancelled": "missed"}   # drawn alike
COUNT_ORDER = ("succeeded", "failed", "timeout", "interrupted", "missed", "skipped",
               "cancelled", "running", "queued")   # the order of a bucket's tooltip


def timeline(service, locale: Locale, asked: str | None, now: datetime | None = None) -> dict:
    given, now = now, now or datetime.now(UTC)
    jobs = service.jobs()
    name = asked if asked in RANGES else default_range(
        service.first_run_since(now - timedelta(days=1)), jobs, now)
    past = RANGES[name]
    drawn_at = given or _step_down(now, past // PLACE_STEPS)
    start = now - timedelta(seconds=past)
    end = now + timedelta(seconds=past * (100 - NOW_AT) / NOW_AT)
    scale = _Scale(drawn_at - timedelta(seconds=past), end - (now - drawn_at))
    width = BUCKETS[name]
    dense, sparse = _dense(service.run_buckets(start, width, _offset(locale.zone, now)),
                           width, scale, now)
    runs, truncated = _sparse_runs(service, [j["id"] for j in jobs], dense, sparse, width, now)
    by_job: dict[str, list] = {}
    for run in runs:
        if (_end_of(run, now) or now) >= start and not _in_dense(run, dense, width):
            by_job.setdefault(run["job_id"], []).append(run)
    jobs = sorted(jobs, key=lambda j: _attention(j, by_job.get(j["id"], []),
                                                 dense.get(j["id"], {}), width, now))
    lanes = [_lane(i, job, by_job.get(job["id"], []), scale, now, service, locale)
             for i, job in enumerate(jobs)]
    draw = _BucketBars(width, scale, drawn_at, locale)
    for job, lane in zip(jobs, lanes, strict=True):
        buckets = dense.get(job["id"])
        lane["buckets"] = draw.lane(job["id"], buckets) if buckets else []
        if buckets:   # the newest run may be counted in a bucket: the lane's flags say
            lane["failing"] = _last(job, by_job.get(job["id"], []), buckets).get(
                "status") in FAILING
            lane["running"] = lane["running"] or any(
                s in c for c in buckets.values() for s in ACTIVE)
    return {"range": name, "ranges": list(RANGES), "lanes": lanes,
            "height": max(len(lanes), 1) * LANE_H, "now_x": NOW_AT,
            "ticks": _ticks(name, start, end, scale, locale),
            "truncated": truncated, "max_runs": MAX_RUNS}


def _offset(zone, now: datetime) -> int:
    """The zone's UTC offset in seconds now: buckets start at its hour edges (a change of
    offset inside a week's range moves the 6 h edges after it by that much)."""
    return int(now.astimezone(zone).utcoffset().total_seconds())


def _dense(rows: list, width: int, scale: _Scale, now: datetime) -> tuple[dict, dict]:
    """({job_id: {bucket start: {status: count}}} of the buckets holding more runs than the
    width they show (the first and the current one: a part) has room for one by one,
    {job_id: the starts of its other buckets})."""
    counts: dict[str, dict] = {}
    rooms: dict[datetime, int] = {}
    step = timedelta(seconds=width)
    for job_id, begin, status, count in rows:
        counts.setdefault(job_id, {}).setdefault(begin, {})[status] = count
        if begin not in rooms:
            shown = scale(min(begin + step, now)) - scale(begin)
            rooms[begin] = max(int(shown / RUN_ROOM), 1)
    dense, sparse = {}, {}
    for job_id, buckets in counts.items():
        crowded = {b: c for b, c in buckets.items() if sum(c.values()) > rooms[b]}
        if crowded:
            dense[job_id] = crowded
        sparse[job_id] = sorted(b for b in buckets if b not in crowded)
    return dense, sparse


def _sparse_runs(service, job_ids: list, dense: dict, sparse: dict, width: int,
                 now: datetime) -> tuple[list, bool]:
    """The runs to draw one by one: those of the sparse buckets (read bucket by bucket, not
    the crowded ones between them), and of a job without a run in the range over a week (a long
    run begun earlier)."""
    week = now - timedelta(seconds=RANGES["7d"])
    if not dense:
        return service.run_spans(week, MAX_RUNS)
    step = timedelta(seconds=width)
    stretches: dict[tuple, list] = {}   # (from, to): the jobs sparse from..to
    for job_id, starts in sparse.items():
        begin = end = None
        for at in starts + [None]:   # neighbouring sparse buckets are one stretch
            if begin is not None and at != end:
                stretches.setdefault((begin, end), []).append(job_id)
                begin = None
            if at is not None:
                begin, end = begin or at, at + step
    idle = [j for j in job_ids if j not in sparse]
    if not stretches and not idle:
        return [], False
    if len(stretches) > MAX_WINDOWS:   # a statement that long costs more than it saves
        return service.run_spans(week if idle else min(a for a, _ in stretches), MAX_RUNS,
                                 idle + [j for j in sparse if sparse[j]])
    return service.run_spans(week, MAX_RUNS, idle,
                             [(tuple(jobs), a, b) for (a, b), jobs in stretches.items()])


def _in_dense(run: dict, dense: dict, width: int) -> bool:
    buckets = dense.get(run["job_id"])
    if buckets is None:
        return False
    first = min(buckets)   # buckets start at the same edges: find the run's by steps
    steps = (_moment(run["scheduled_at"]) - first).total_seconds() // width
    return first + timedelta(seconds=steps * width) in buckets


_KEPT: dict = {}   # the last pages' bucket bars per lane (see _BucketBars.lane)


def _step_down(moment: datetime, step: int) -> datetime:
    return datetime.fromtimestamp(moment.timestamp() // step * step, UTC)


class _BucketBars:
    """Crowded buckets as bars in the colour of their worst status, their tooltip the counts
    by status, their link the run list of that stretch. Neighbours drawn alike (one worst
    status, or failed and timed out: LOOK) are one bar, counted together: a day of 100 busy jobs
    is ~1,200 bars, not 2,400. What all lanes share (a bucket's place and times, a count's
    words) is made once."""

    def __init__(self, width: int, x, now: datetime, locale: Locale):
        self.width, self.x, self.now, self.locale = width, x, now, locale
        self._places: dict = {}
        self._counts: dict = {}
        self._sep = locale.t("tl.bucket_sep")

    def lane(self, job_id: str, buckets: dict) -> list[dict]:
        """The bars of one job's crowded buckets; the same buckets at the same chart clock
        (PLACE_STEPS) in the same language and zone give the bars of the last page again."""
        key = (job_id, self.width, self.now, self.locale.lang, str(self.locale.zone))
        kept = _KEPT.get(key)
        if kept is not None and kept[0] == buckets:
            return kept[1]
        bars = self._draw(job_id, buckets)
        if len(_KEPT) > 5000:   # clocks gone by
            _KEPT.clear()
        _KEPT[key] = (buckets, bars)
        return bars

    def _draw(self, job_id: str, buckets: dict) -> list[dict]:
        stretches: list[list] = []   # [first bucket, last bucket, worst, {status: count}]
        step = timedelta(seconds=self.width)
        last = None
        for begin, counts in sorted(buckets.items()):
            worst = "succeeded" if len(counts) == 1 and "succeeded" in counts else next(
                (s for s in WORST if s in counts), "succeeded")
            if last and LOOK.get(last[2], last[2]) == LOOK.get(worst, worst) \
                    and last[1] + step == begin:
                last[1], last[2] = begin, min(last[2], worst, key=WORST.index)
                for status, n in counts.items():
                    last[3][status] = last[3].get(status, 0) + n
            else:
                last = [begin, begin, worst, dict(counts)]
                stretches.append(last)
        job_query = urlencode({"job_id": job_id})
        return [self._bar(job_id, job_query, *stretch) for stretch in stretches]

    def _bar(self, job_id: str, job_query: str, first: datetime, last: datetime, worst: str,
             counts: dict) -> dict:
        begin, finish = self._places.get(first) or self._place(first), \
            self._places.get(last) or self._place(last)
        total = sum(counts.values())
        w = round(max(finish["x2"] - begin["x1"] - BUCKET_GAP, MIN_BAR), 3)
        parts = [self._count(s, counts[s]) for s in COUNT_ORDER if s in counts] \
            if len(counts) > 1 else [self._count(worst, total)]
        return {"x": begin["x1"], "w": w, "mid_x": round(begin["x1"] + w / 2, 3),
                "label": w >= 2.2, "status": worst, "n": total,
                "title": self.locale.t("tl.bucket_title", n=total, job=job_id,
                                       start=begin["start"], end=finish["end"],
                                       counts=self._sep.join(parts)),
                "href": f"/runs?{job_query}&since={begin['since']}{finish['until']}"}

    def _place(self, begin: datetime) -> dict:
        finish = min(begin + timedelta(seconds=self.width), self.now)
        place = self._places[begin] = {
            "x1": self.x(begin), "x2": self.x(finish),
            "start": begin.astimezone(self.locale.zone).strftime("%Y-%m-%d %H:%M"),
            "end": self.locale.clock(finish), "since": _iso(begin),
            # the bucket going on: the link shows its runs up to the newest
            "until": "" if finish == self.now else f"&until={_iso(finish)}"}
        return place

    def _count(self, status: str, n: int) -> str:
        text = self._counts.get((status, n))
        if text is None:
            text = self._counts[status, n] = self.locale.t(
                "tl.bucket_count", n=n, status=self.locale.word("status", status))
        return text


def _iso(moment: datetime) -> str:
    """A UTC time for a query string, short: 2026-12-05T14:00:00Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def default_range(oldest: datetime | None, jobs: list, now: datetime) -> str:
    """The shortest range that shows the last day's runs (``oldest``: when the oldest of them
    was scheduled); with none, one that shows a fire."""
    if oldest is not None:
        age = (now - oldest).total_seconds()
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


def _attention(job: dict, runs: list, buckets: dict, width: int, now: datetime) -> tuple:
    """Failing first, then running, then scheduled jobs by latest activity, paused last."""
    last = _last(job, runs, buckets)
    if last.get("status") in FAILING:
        rank = 0
    elif any(r["status"] in ACTIVE for r in runs) or \
            any(s in c for c in buckets.values() for s in ACTIVE):
        rank = 1
    else:
        rank = 2 if job.get("state") == "scheduled" else 3
    latest = max([_start_of(r, now) for r in runs] + [min(b + timedelta(seconds=width), now)
                                                      for b in buckets], default=None)
    return (rank, -(latest.timestamp() if latest else 0), job.get("next_run_time") or "~",
            job["id"])


def _last(job: dict, runs: list, buckets: dict) -> dict:
    """The job's newest run: the newest drawn alone, unless a crowded bucket is newer."""
    if runs and not (buckets and max(buckets) > _moment(runs[0]["scheduled_at"])):
        return runs[0]
    return job.get("last_run") or {}


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
