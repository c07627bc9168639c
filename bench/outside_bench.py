"""The service measured from outside, as a user measures it: a real ``task-scheduler`` process
started from the CLI with its jobs in jobs.yaml, the times read back from ``GET /api/runs``
(``started_at - scheduled_at``), beside a baseline in a process of its own in the same run.

    python bench/outside_bench.py [--db sqlite|postgres|both] [--cases steady,date,cron,api]
                                  [--log-level INFO] [--repeat N]

Cases (goals from the performance issue):

- ``steady``: 200 python interval jobs every second, all loaded at start (one phase), lateness of
  each start over a window of ``--seconds``; baseline a bare APScheduler BackgroundScheduler with
  its MemoryJobStore and the same jobs. Goal: p99 <= 2x the baseline's, p50 <= 20 ms.
- ``date``: 1,000 python date jobs due at one instant; the drain is the last start after that
  instant. Baseline: APScheduler with its SQLAlchemyJobStore on the same kind of database. Goal:
  ours >= 5x faster.
- ``cron``: 1,000 cron jobs sharing one minute (``M H * * *``: a real midnight burst, at the next
  whole minute far enough ahead); drain and baseline as for ``date``. Waits up to a minute for it.
- ``api``: ``GET /api/jobs?limit=1000`` and ``GET /api/jobs/{id}`` of a service holding 1,000
  jobs, 8 clients in a load process of their own, with a new connection per request (as curl) and
  with keep-alive; baseline Flask-APScheduler's REST API (SQLAlchemyJobStore on SQLite) in its
  own process. Goals: list >= 5x, one job >= 1.5x, with new connections.

Ours runs with ``--log-level INFO`` (the default a user gets) unless told otherwise. Both sides'
jobs call a do-nothing function in a module next to jobs.yaml. Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import math
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path


BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from api_bench import _load as load_clients  # noqa: E402  (the same load generator)
from fire_bench import database as fire_database  # noqa: E402  (SQLite file or a schema)

UTC = dt.UTC
JOBS_MODULE = "def tick():\n    pass\n"
GOALS = {"steady": "p99 <= 2x, p50 <= 20 ms", "date": ">= 5x", "cron": ">= 5x",
         "api list": ">= 5x", "api one job": ">= 1.5x"}


# --- the service, as a user starts it ------------------------------------------------------------

class Service:
    """``python -m task_scheduler`` on ``folder``'s jobs.yaml; stopped with SIGTERM on exit."""

    def __init__(self, folder: Path, jobs_yaml: str, db_url: str, log_level: str, jobs: int):
        (folder / "jobs.yaml").write_text(jobs_yaml)
        (folder / "benchjobs.py").write_text(JOBS_MODULE)
        self.port = free_port()
        self.log = open(folder / "service.log", "w")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "task_scheduler", "--config", str(folder / "jobs.yaml"),
             "--db", db_url, "--port", str(self.port), "--log-level", log_level],
            cwd=folder, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.addr = ("127.0.0.1", self.port)
        wait_for(lambda: self._loaded(jobs), 120, "the service to load its jobs")

    def _loaded(self, jobs: int) -> bool:
        if self.proc.poll() is not None:
            raise SystemExit(f"the service exited ({self.proc.returncode}); see its log")
        try:
            return get_json(self.addr, "/api/jobs?limit=1")["total"] >= jobs
        except (OSError, http.client.HTTPException, ValueError, KeyError):
            return False

    def runs(self) -> list:
        """Every run, read back page by page through the API."""
        runs, before = [], None
        while True:
            page = get_json(self.addr, "/api/runs?limit=1000" + (f"&before={before}"
                                                                  if before else ""))["runs"]
            runs += page
            if len(page) < 1000:
                return runs
            before = page[-1]["id"]

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


# --- the baseline: APScheduler in a process of its own -------------------------------------------

BASELINE = textwrap.dedent("""
    import json, sys, time, datetime as dt
    from apscheduler.schedulers.background import BackgroundScheduler
    import benchjobs
    spec = json.loads(sys.argv[1])
    if spec["store"] == "memory":
        scheduler, func = BackgroundScheduler(), benchjobs.tick
    else:   # a stored job names its function
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
        store = SQLAlchemyJobStore(url=spec["store"])
        scheduler, func = BackgroundScheduler(jobstores={"default": store}), "benchjobs:tick"
    scheduler.start()
    at = dt.datetime.fromtimestamp(spec["at"], dt.timezone.utc)
    when = {"interval": {"seconds": 1, "start_date": at}, "date": {"run_date": at},
            "cron": {"minute": at.minute, "hour": at.hour, "timezone": "UTC"}}[spec["kind"]]
    for i in range(spec["jobs"]):
        scheduler.add_job(func, spec["kind"], id=f"j{i}", misfire_grace_time=600, **when)
    ready = time.time()
    deadline = spec["at"] + spec["wait"]
    while time.time() < deadline and len(benchjobs.starts) < spec["expect"]:
        time.sleep(0.05)
    scheduler.shutdown(wait=False)
    print(json.dumps({"ready": ready, "starts": benchjobs.starts}), flush=True)
""")
BASELINE_JOBS = "import time\nstarts = []\ndef tick():\n    starts.append(time.time())\n"


def baseline(folder: Path, spec: dict) -> list:
    """Start times (epoch seconds) of the baseline's runs of ``spec``: APScheduler with the
    jobs ``spec`` names, in its own process; ``spec["at"]`` must come after its jobs are added."""
    (folder / "benchjobs.py").write_text(BASELINE_JOBS)
    proc = subprocess.run([sys.executable, "-c", BASELINE, json.dumps(spec)], cwd=folder,
                          capture_output=True, text=True, timeout=spec["at"] - time.time()
                          + spec["wait"] + 120, env={**os.environ, "PYTHONPATH": str(folder)})
    if proc.returncode:
        raise SystemExit(f"the baseline failed:\n{proc.stderr}")
    out = json.loads(proc.stdout.splitlines()[-1])
    if out["ready"] > spec["at"]:
        raise SystemExit(f"the baseline added its jobs {out['ready'] - spec['at']:.1f} s after "
                         f"the instant they were due: give it more --lead")
    return out["starts"]


# --- the cases -----------------------------------------------------------------------------------

def case_steady(db: str, args, tmp: Path) -> dict:
    jobs = args.steady_jobs
    yaml = "".join(f"- {{id: s{i}, func: 'benchjobs:tick', "
                   f"trigger: {{type: interval, seconds: 1}}}}\n" for i in range(jobs))
    folder = fresh(tmp, f"steady-{db}")
    with database(db, folder) as url, \
            Service(folder, yaml, url, args.log_level, jobs) as service:
        began = time.time()
        time.sleep(args.warmup + args.seconds + 1)
        runs = service.runs()
    late = [seconds(r["started_at"]) - seconds(r["scheduled_at"]) for r in runs
            if r["started_at"] and began + args.warmup <= seconds(r["scheduled_at"])
            <= began + args.warmup + args.seconds]
    at = math.ceil(time.time()) + 3
    starts = baseline(fresh(tmp, f"steady-base-{db}"), {
        "store": "memory", "kind": "interval", "jobs": jobs, "at": at,
        "wait": args.warmup + args.seconds + 1, "expect": 10 ** 9})
    base = [s - (at + math.floor(s - at)) for s in starts
            if at + args.warmup <= s <= at + args.warmup + args.seconds]
    ours_p50, ours_p99 = pct(late, 50), pct(late, 99)
    base_p99 = pct(base, 99)
    return {"ours": f"p50 {ms(ours_p50)}, p99 {ms(ours_p99)} ({len(late)} runs)",
            "base": f"p50 {ms(pct(base, 50))}, p99 {ms(base_p99)} ({len(base)} runs)",
            "ratio": f"p99 {ours_p99 / base_p99:.1f}x",
            "met": ours_p99 <= 2 * base_p99 and ours_p50 <= 0.020}


def case_burst(db: str, args, tmp: Path, kind: str) -> dict:
    jobs = args.burst_jobs
    at = burst_instant(kind, args)
    when = dt.datetime.fromtimestamp(at, UTC)
    trigger = (f"{{type: date, run_date: '{when.isoformat()}'}}" if kind == "date" else
               f"{{type: cron, expression: '{when.minute} {when.hour} * * *', timezone: UTC}}")
    yaml = "".join(f"- {{id: b{i}, func: 'benchjobs:tick', misfire_grace_time: 600, "
                   f"trigger: {trigger}}}\n" for i in range(jobs))
    folder = fresh(tmp, f"{kind}-{db}")
    with database(db, folder) as url, \
            Service(folder, yaml, url, args.log_level, jobs) as service:
        if time.time() > at - 1:
            raise SystemExit(f"the service took too long to start for the {kind} burst")
        wait_for(lambda: started(service) >= jobs, max(0, at - time.time()) + 120,
                 f"{jobs} runs of the {kind} burst")
        runs = service.runs()
    ours = max(seconds(r["started_at"]) for r in runs) - at
    folder = fresh(tmp, f"{kind}-base-{db}")
    with database(db, folder) as url:
        at = burst_instant(kind, args)
        starts = baseline(folder, {"store": url.replace("postgresql://", "postgresql+psycopg://"),
                                   "kind": kind, "jobs": jobs, "at": at, "wait": 120,
                                   "expect": jobs})
    base = max(starts) - at if len(starts) >= jobs else float("nan")
    return {"ours": f"drain {ours:.3f} s ({len(runs)} runs)",
            "base": f"drain {base:.3f} s ({len(starts)} runs)",
            "ratio": f"{base / ours:.1f}x", "met": base / ours >= 5}


def database(kind: str, folder: Path):
    """A SQLite file in ``folder``, or a fresh PostgreSQL schema dropped afterwards."""
    return fire_database("ours", kind, str(folder), None)


def burst_instant(kind: str, args) -> float:
    """The burst's instant: a few seconds ahead, or (cron) the next whole minute that far ahead."""
    ahead = time.time() + args.lead
    return float(math.ceil(ahead)) if kind == "date" else float(math.ceil(ahead / 60) * 60)


def started(service: Service) -> int:
    page = get_json(service.addr, "/api/runs?status=succeeded&limit=1")
    if page.get("total_capped"):   # the total stops counting at 1,000: count them all
        return sum(r["status"] == "succeeded" for r in service.runs())
    return page["total"]


def case_api(db: str, args, tmp: Path) -> list:
    jobs = 1000
    yaml = "".join(f"- {{id: job-{i:05d}, func: 'benchjobs:tick', trigger: {api_trigger(i)}}}\n"
                   for i in range(jobs))
    folder = fresh(tmp, f"api-{db}")
    ids = [f"job-{i:05d}" for i in range(jobs)]
    ctx = multiprocessing.get_context("spawn")
    rows = []
    with database(db, folder) as url, \
            Service(folder, yaml, url, args.log_level, jobs) as service, \
            Flask(fresh(tmp, f"api-base-{db}"), jobs) as theirs:
        for mode in ("new-connection", "keep-alive"):
            for name, ours_paths, their_paths in (
                    ("api list", [f"/api/jobs?limit={jobs}"], ["/scheduler/jobs"]),
                    ("api one job", [f"/api/jobs/{i}" for i in ids],
                     [f"/scheduler/jobs/{i}" for i in ids])):
                ours = drive(ctx, mode, service.addr, ours_paths, args)
                base = drive(ctx, mode, theirs.addr, their_paths, args)
                goal = 5 if name == "api list" else 1.5
                ratio = ours["rps"] / base["rps"]
                rows.append((f"{name}, {mode}",
                             {"ours": f"{ours['rps']:.0f} req/s, p99 {ours['p99']:.0f} ms"
                                      f"{err(ours)}",
                              "base": f"{base['rps']:.0f} req/s, p99 {base['p99']:.0f} ms"
                                      f"{err(base)}",
                              "ratio": f"{ratio:.1f}x",
                              "met": ratio >= goal if mode == "new-connection" else None}))
    return rows


def api_trigger(i: int) -> str:
    # far from firing during the run: hourly-or-slower intervals, crons in the small hours
    if i % 2:
        return f"{{type: interval, hours: {1 + i % 24}, minutes: {i % 60}}}"
    return f"{{type: cron, expression: '{i % 60} {3 + i % 3} * * *'}}"


FLASK = textwrap.dedent("""
    import sys, logging
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from flask import Flask
    from flask_apscheduler import APScheduler
    from werkzeug.serving import make_server
    logging.basicConfig(level=logging.WARNING)
    app = Flask("baseline")
    app.config.update(SCHEDULER_API_ENABLED=True, SCHEDULER_JOBSTORES={
        "default": SQLAlchemyJobStore(url=sys.argv[1])})
    scheduler = APScheduler()
    scheduler.init_app(app)
    scheduler.start()
    for i in range(int(sys.argv[3])):
        trigger = ({"trigger": "interval", "hours": 1 + i % 24, "minutes": i % 60} if i % 2 else
                   {"trigger": "cron", "hour": str(3 + i % 3), "minute": str(i % 60)})
        scheduler.add_job(id=f"job-{i:05d}", func="benchjobs:tick", **trigger)
    server = make_server("127.0.0.1", int(sys.argv[2]), app, threaded=True)
    print("ready", flush=True)
    server.serve_forever()
""")


class Flask:
    """Flask-APScheduler's REST API over the same 1,000 jobs, in a process of its own."""

    def __init__(self, folder: Path, jobs: int):
        (folder / "benchjobs.py").write_text(JOBS_MODULE)
        port = free_port()
        self.addr = ("127.0.0.1", port)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", FLASK, f"sqlite:///{folder / 'flask.sqlite'}", str(port),
             str(jobs)], cwd=folder, env={**os.environ, "PYTHONPATH": str(folder)},
            stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            raise SystemExit("Flask-APScheduler did not start (pip install flask-apscheduler)")

    def __enter__(self) -> Flask:
        return self

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def drive(ctx, mode: str, addr, paths: list, args) -> dict:
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=load_clients, args=(child, mode, addr, paths, args.clients,
                                                  args.api_warmup, args.api_seconds))
    proc.start()
    result = parent.recv()
    proc.join()
    return result


def err(result: dict) -> str:
    return f", {result['errors']} errors" if result["errors"] else ""


# --- small helpers -------------------------------------------------------------------------------

def get_json(addr, path: str):
    conn = http.client.HTTPConnection(*addr, timeout=60)
    try:
        conn.request("GET", path)
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what} after {timeout:.0f} s")
        time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fresh(tmp: Path, name: str) -> Path:
    folder = tmp / name
    folder.mkdir()
    return folder


def seconds(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


def pct(values: list, q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q / 100))] if values else float("nan")


def ms(x: float) -> str:
    return f"{x * 1000:.0f} ms"


def report(db: str, rows: list) -> None:
    print(f"\n{db}, python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print(f"{'case':30} {'ours':38} {'baseline':38} {'ratio':>9}  goal")
    for name, r in rows:
        goal = GOALS[name.split(",")[0]]
        met = "" if r["met"] is None else ("MET" if r["met"] else "NOT MET")
        print(f"{name:30} {r['ours']:38} {r['base']:38} {r['ratio']:>9}  {goal} {met}")


def main() -> int:
    args = parser().parse_args()
    dbs = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    cases = args.cases.split(",")
    for _ in range(args.repeat):
        for db in dbs:
            rows = []
            with tempfile.TemporaryDirectory() as tmp:
                if "steady" in cases:
                    rows.append(("steady", case_steady(db, args, Path(tmp))))
                for kind in ("date", "cron"):
                    if kind in cases:
                        rows.append((kind, case_burst(db, args, Path(tmp), kind)))
                if "api" in cases:
                    rows += case_api(db, args, Path(tmp))
            report(db, rows)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", choices=["sqlite", "postgres", "both"], default="sqlite")
    p.add_argument("--cases", default="steady,date,cron,api")
    p.add_argument("--log-level", default="INFO", help="ours; INFO is what a user gets")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--steady-jobs", type=int, default=200)
    p.add_argument("--seconds", type=float, default=10.0, help="steady: the measured window")
    p.add_argument("--warmup", type=float, default=2.0, help="steady: seconds not counted")
    p.add_argument("--burst-jobs", type=int, default=1000)
    p.add_argument("--lead", type=float, default=12.0,
                   help="bursts: seconds from start to the burst (time to load the jobs)")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--api-seconds", type=float, default=5.0)
    p.add_argument("--api-warmup", type=float, default=1.0)
    return p


if __name__ == "__main__":
    sys.exit(main())
