"""History at scale: the pages that read run history with 1,000 vs 1,000,000 runs, and firing
while retention prunes ~100,000 rows. One run, side by side.

Read case: two databases, one seeded with ``--base`` runs (1,000) and one with ``--runs``
(1,000,000), written straight into ``ts_runs`` (one transaction, executemany / COPY in big
chunks): 100 jobs, runs spread over the last 29 days, mostly succeeded, some failed, timed out or
missed, a line of stdout each. Each is served in-process (``serve_in_thread``, waitress) with
retention out of the way, and every page is fetched ``--requests`` times (keep-alive); it prints
p95 at the base, p95 at scale, the ratio and whether the goal (<= 3x) is met. Pages: the
dashboard ``/``, the job page ``/jobs/<id>`` and a deep page of it (the middle of the job's
history), the run list ``/runs`` and a deep page of it (the middle of all history), and
``/api/runs?job_id=<id>``. Deep pages are reached the way the GUI's own "next" link does it:
``?offset=`` or, where the GUI pages by cursor, ``?before=<run id>``.

Prune case: 50 interval jobs fire every second; 100 other jobs hold 2,000 old runs each. The
lateness (start minus fire time) p99 of the fires while nothing is pruned is compared with that
of the fires while ``Retention.prune(keep_runs=1000)`` deletes the ~100,000 runs past the limit.

    python bench/history_bench.py                 # --runs 1000000 --base 1000 --db sqlite
    python bench/history_bench.py --runs 100000   # a quick run
    python bench/history_bench.py --db postgres   # PostgreSQL at TS_BENCH_POSTGRES_URL

Not a test.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import io
import logging
import os
import random
import re
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa  # noqa: E402

import task_scheduler as ts  # noqa: E402
import task_scheduler.store.schema as ts_schema

JOBS = 100
SPAN = dt.timedelta(days=29)      # inside keep_days (30): only keep_runs prunes in the prune case
STATUSES = ["succeeded"] * 90 + ["failed"] * 7 + ["timeout", "missed", "interrupted"]
POSTGRES = os.environ.get("TS_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
COLUMNS = ("id", "job_id", "trigger", "attempt", "scheduled_at", "started_at", "finished_at",
           "status", "exit_code", "error", "stdout", "stderr", "truncated", "node", "due_at",
           "run_on", "cancel_requested")
GOAL = 3.0


def main() -> int:
    args = _parser().parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        if not args.skip_read:
            base = _measure_pages(Path(tmp) / "base", args.base, args)
            scale = _measure_pages(Path(tmp) / "scale", args.runs, args)
            rows = [(name, base[name], scale[name]) for name in base]
        prune = None if args.skip_prune else _measure_prune(Path(tmp) / "prune", args)
    _report(rows, prune, args)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1_000_000, help="runs at scale")
    parser.add_argument("--base", type=int, default=1000, help="runs of the baseline")
    parser.add_argument("--requests", type=int, default=50, help="GETs per page")
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--prune-jobs", type=int, default=50, help="interval jobs, every 1 s")
    parser.add_argument("--prunable", type=int, default=100_000)
    parser.add_argument("--window", type=float, default=15.0, help="seconds of steady firing")
    parser.add_argument("--skip-read", action="store_true")
    parser.add_argument("--skip-prune", action="store_true")
    return parser


# -- databases and seeding -------------------------------------------------------------------

def _database(tmp: Path, args) -> tuple[str, callable]:
    """A fresh database URL and a function that drops it."""
    tmp.mkdir(parents=True, exist_ok=True)
    if args.db == "sqlite":
        return f"sqlite:///{tmp / 'ts.sqlite'}", lambda: None
    schema = f"ts_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRES.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))

    def drop():
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
    return f"{POSTGRES}?options=-csearch_path%3D{schema}", drop


def _seed(url: str, per_job: dict[str, int], now: dt.datetime) -> None:
    """``per_job[job_id]`` finished runs per job, spread evenly over SPAN before ``now``,
    interleaved across jobs; ids sort by time, as ``new_run_id`` makes them."""
    engine = ts_schema.create_engine(url)
    ts_schema.migrate(engine)
    total = sum(per_job.values())
    slots = [job for job, n in per_job.items() for _ in range(n)]
    random.Random(7).shuffle(slots)
    start, step = now - SPAN, SPAN / max(total, 1)
    pick = random.Random(11).choice

    def rows():
        for i, job_id in enumerate(slots):
            at = start + step * i
            status = pick(STATUSES)
            began, ended = (None, None) if status == "missed" else \
                (at + dt.timedelta(milliseconds=40), at + dt.timedelta(seconds=1 + i % 30))
            yield (f"{int(at.timestamp() * 1e6):014x}{i % 0xFFFFFF:06x}", job_id, "schedule", 1,
                   at, began, ended, status, None if began is None else int(status != "succeeded"),
                   "Traceback: boom" if status == "failed" else None, f"line {i}\n", "", False,
                   "bench", at, "", False)
    started = time.monotonic()
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            with conn.connection.cursor() as cur, \
                    cur.copy(f"COPY ts_runs ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for row in rows():
                    copy.write_row(row)
        else:
            sql = f"INSERT INTO ts_runs ({', '.join(COLUMNS)}) " \
                  f"VALUES ({', '.join('?' * len(COLUMNS))})"
            chunk = []
            for row in rows():
                chunk.append(tuple(_sqlite_value(v) for v in row))
                if len(chunk) == 50_000:
                    conn.exec_driver_sql(sql, chunk)
                    chunk = []
            if chunk:
                conn.exec_driver_sql(sql, chunk)
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    engine.dispose()
    print(f"  seeded {total:,} runs in {time.monotonic() - started:.1f} s", flush=True)


def _sqlite_value(value):
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")   # SQLAlchemy's SQLite DateTime format
    return int(value) if isinstance(value, bool) else value


def _service(tmp: Path, url: str, keep_runs: int) -> ts.SchedulerService:
    jobs_yaml = tmp / "jobs.yaml"
    jobs_yaml.write_text("[]\n")
    config = ts.Config(config_path=str(jobs_yaml), database_url=url, watch=False,
                       poll_interval=3600, keep_runs=keep_runs, keep_days=3650)
    return ts.SchedulerService(config).start()


# -- the read case ---------------------------------------------------------------------------

def _measure_pages(tmp: Path, runs: int, args) -> dict[str, float]:
    print(f"{runs:,} runs:", flush=True)
    url, drop = _database(tmp, args)
    job_ids = [f"hist-{i:03d}" for i in range(JOBS)]
    _seed(url, {job: runs // JOBS + (i < runs % JOBS) for i, job in enumerate(job_ids)},
          dt.datetime.now(dt.UTC).replace(tzinfo=None))
    service = _service(tmp, url, keep_runs=10 ** 9)
    try:
        for job_id in job_ids:
            service.add_job({"id": job_id, "func": "time:time", "trigger": {"type": "manual"}})
        server = ts.serve_in_thread(ts.create_app(service), "127.0.0.1", 0)
        client = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=120)
        job = job_ids[JOBS // 2]
        pages = {
            "dashboard /": "/",
            "job page /jobs/<id>": f"/jobs/{job}",
            "job page, deep": _deep(client, service, f"/jobs/{job}", job),
            "run list /runs": "/runs",
            "run list, deep": _deep(client, service, "/runs", None),
            "/api/runs?job_id=<id>": f"/api/runs?job_id={job}",
        }
        result = {}
        for name, path in pages.items():
            result[name] = _p95(client, path, args.requests)
            print(f"  {name:<24} {path[:60]:<60} p95 {result[name] * 1000:8.1f} ms", flush=True)
        client.close()
        server.shutdown()
    finally:
        service.stop(grace=1)
        drop()
    return result


def _deep(client, service, path: str, job_id) -> str:
    """The page in the middle of the history, addressed as the GUI's next link addresses it."""
    body = _get(client, path)
    link = re.search(r'href="\?([^"]*)" rel="next"', body)
    total = service.runs(job_id=job_id, limit=1).total
    middle = total // 2
    if link and "before=" in link.group(1):
        run = service.runs(job_id=job_id, limit=1, offset=max(middle - 1, 0))
        return f"{path}?before={run[0]['id']}" if run else path
    return f"{path}?offset={middle}"


def _get(client, path: str) -> str:
    client.request("GET", path)
    response = client.getresponse()
    body = response.read().decode()
    if response.status != 200:
        raise SystemExit(f"GET {path}: {response.status} {body[:300]}")
    return body


def _p95(client, path: str, count: int) -> float:
    _get(client, path)   # warm: templates compiled, caches filled
    times = []
    for _ in range(count):
        started = time.perf_counter()
        _get(client, path)
        times.append(time.perf_counter() - started)
    return _percentile(times, 95)


def _percentile(values: list, pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))] \
        if ordered else float("nan")


# -- the prune case --------------------------------------------------------------------------

def _measure_prune(tmp: Path, args) -> dict:
    print(f"prune: {args.prune_jobs} jobs every 1 s, {args.prunable:,} runs past keep_runs=1000",
          flush=True)
    url, drop = _database(tmp, args)
    per_job = 1000 + args.prunable // JOBS
    _seed(url, {f"old-{i:03d}": per_job for i in range(JOBS)},
          dt.datetime.now(dt.UTC).replace(tzinfo=None))
    service = _service(tmp, url, keep_runs=10 ** 9)   # the service's own retention stays away
    try:
        for i in range(args.prune_jobs):
            service.add_job({"id": f"tick-{i:03d}", "func": "time:time",
                             "trigger": {"type": "interval", "seconds": 1}})
        time.sleep(3)   # every job has fired: steady state
        quiet = (_utc(), None)
        time.sleep(args.window)
        quiet = (quiet[0], _utc())
        time.sleep(1)
        begun = _utc()
        deleted = service.store.retention.prune(keep_runs=1000, keep_days=3650)
        # at least a second of fires, so that a short prune still has a sample
        pruning = (begun, max(_utc(), begun + dt.timedelta(seconds=1)))
        time.sleep(3)   # the fires delayed by the prune have started
        service.history.flush()
        result = {"deleted": deleted, "prune_s": (pruning[1] - pruning[0]).total_seconds()}
        for name, (since, until) in (("quiet", quiet), ("pruning", pruning)):
            late = _lateness(service, since, until)
            result[name] = (_percentile(late, 99), len(late), max(late, default=float("nan")))
    finally:
        service.stop(grace=1)
        drop()
    return result


def _utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _lateness(service, since: dt.datetime, until: dt.datetime) -> list[float]:
    with service.store.engine.connect() as conn:
        runs = ts_schema.ts_runs.c
        rows = conn.execute(sa.select(runs.scheduled_at, runs.started_at).where(
            ts_schema.ts_runs.c.job_id.like("tick-%"), ts_schema.ts_runs.c.trigger == "schedule",
            runs.scheduled_at >= since, runs.scheduled_at <= until)).all()
    # a fire that never started (missed, skipped) counts as late as the window is long
    return [((r.started_at or until) - r.scheduled_at).total_seconds() for r in rows]


# -- report ----------------------------------------------------------------------------------

def _report(rows: list, prune, args) -> None:
    out = io.StringIO()
    if rows:
        out.write(f"\nHistory pages, {args.db}: p95 of {args.requests} GETs, "
                  f"{args.base:,} vs {args.runs:,} runs\n")
        out.write(f"{'page':<24} {'p95 @' + format(args.base, ','):>12} "
                  f"{'p95 @' + format(args.runs, ','):>14} {'ratio':>7}  goal     result\n")
        for name, base, scale in rows:
            ratio = scale / base
            out.write(f"{name:<24} {base * 1000:9.1f} ms {scale * 1000:11.1f} ms {ratio:6.2f}x"
                      f"  <= {GOAL:.0f}x   {'MET' if ratio <= GOAL else 'NOT MET'}\n")
    if prune:
        quiet, pruning = prune["quiet"], prune["pruning"]
        ratio = pruning[0] / quiet[0] if quiet[0] else float("inf")
        out.write(f"\nFiring while pruning, {args.db}: {args.prune_jobs} interval jobs every 1 s; "
                  f"prune deleted {prune['deleted']:,} runs in {prune['prune_s']:.2f} s\n")
        out.write(f"{'window':<10} {'fires':>6} {'lateness p99':>13} {'max':>9}\n")
        for name, (p99, count, worst) in (("quiet", quiet), ("pruning", pruning)):
            out.write(f"{name:<10} {count:>6} {p99 * 1000:10.1f} ms {worst * 1000:6.0f} ms\n")
        out.write(f"ratio pruning/quiet p99: {ratio:.2f}x (goal: unchanged, <= 1.5x: "
                  f"{'MET' if ratio <= 1.5 else 'NOT MET'})\n")
    print(out.getvalue(), end="")


if __name__ == "__main__":
    sys.exit(main())
