"""Start-up time and idle memory of the service, against the cost of importing its dependencies.

    python bench/startup_bench.py [--jobs N]

Baseline: a python process that only imports APScheduler, SQLAlchemy, pydantic, PyYAML, watchdog
and Bottle. Measured: `python -m task_scheduler` on a fresh SQLite file with N command jobs (default
the sample jobs.yaml's), timed from exec to the first 200 of /api/health, and its RSS after idling.
Prints ratios against the baseline.

With --jobs N, a second baseline: a bare APScheduler BackgroundScheduler (MemoryJobStore, the
default thread pool) in its own process holding the same N jobs (the same interval triggers),
timed from exec until it is started with all N added, and its RSS after the same idle time. Goals
for 10,000 jobs: ready-to-serve on a restart (the interesting case: the database exists) <= 1.5 s,
idle RSS <= 2x bare APScheduler's.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMPORTS = ("import apscheduler.schedulers.background, apscheduler.jobstores.sqlalchemy, sqlalchemy,"
           " pydantic, yaml, watchdog.observers, bottle, psycopg")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))


def baseline() -> tuple[float, int]:
    code = f"import time, sys; t = time.perf_counter(); {IMPORTS}; " \
           "print(time.perf_counter() - t, flush=True); sys.stdin.read()"
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    seconds = float(proc.stdout.readline())
    time.sleep(1)
    rss = rss_kib(proc.pid)
    proc.communicate("")
    return seconds, rss


def bare_apscheduler(jobs: int, idle: float) -> tuple[float, int]:
    """A BackgroundScheduler with ``jobs`` jobs in memory: seconds from exec to started, RSS."""
    code = ("import time, sys; t = time.perf_counter()\n"
            "from apscheduler.schedulers.background import BackgroundScheduler\n"
            "scheduler = BackgroundScheduler()\n"
            f"for i in range({jobs}):\n"
            "    scheduler.add_job('time:time', 'interval', hours=1 + i % 24, id=f'j{i}')\n"
            "scheduler.start()\n"
            "print(time.perf_counter() - t, flush=True); sys.stdin.read()")
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    float(proc.stdout.readline())
    ready = time.perf_counter() - started
    time.sleep(idle)
    rss = rss_kib(proc.pid)
    proc.communicate("")
    return ready, rss


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def service(folder: Path, jobs: int | None, idle: float) -> tuple[float, int]:
    config = ROOT / "jobs.yaml"
    if jobs:
        config = folder / "jobs.yaml"
        config.write_text("".join(
            f"- {{id: j{i}, command: 'true', trigger: {{type: interval, hours: {1 + i % 24}}}}}\n"
            for i in range(jobs)))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TS_LOG_LEVEL": "WARNING"}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "task_scheduler", "--config", str(config),
                             "--db", f"sqlite:///{folder / 'ts.sqlite'}", "--port", str(port)],
                            env=env, cwd=folder)
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1) as r:
                    if json.load(r)["status"] == "ok":
                        break
            except OSError:
                time.sleep(0.01)
        ready = time.perf_counter() - started
        time.sleep(idle)
        return ready, rss_kib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=None, help="generate N jobs instead of the "
                        "sample jobs.yaml")
    parser.add_argument("--idle", type=float, default=5.0)
    args = parser.parse_args()
    base_time, base_rss = baseline()
    with tempfile.TemporaryDirectory() as tmp:
        cold_ready, _ = service(Path(tmp), args.jobs, 0)
        warm_ready, rss = service(Path(tmp), args.jobs, args.idle)   # on the existing database
    print(f"{'':34}{'seconds':>10}{'RSS MiB':>10}")
    print(f"{'baseline: import dependencies':34}{base_time:>10.3f}{base_rss / 1024:>10.1f}")
    print(f"{'service, new database':34}{cold_ready:>10.3f}")
    print(f"{'service, restart on its database':34}{warm_ready:>10.3f}{rss / 1024:>10.1f}")
    print(f"ready-to-serve / import time: {warm_ready / base_time:.2f}x   "
          f"idle RSS / import RSS: {rss / base_rss:.2f}x")
    if args.jobs:
        aps_ready, aps_rss = bare_apscheduler(args.jobs, args.idle)
        print(f"{'bare APScheduler, same jobs':34}{aps_ready:>10.3f}{aps_rss / 1024:>10.1f}")
        print(f"ready-to-serve with {args.jobs} jobs: new database {cold_ready:.3f} s, restart "
              f"{warm_ready:.3f} s; goal restart <= 1.5 s: {_met(warm_ready <= 1.5)}")
        print(f"idle RSS: ours {rss / 1024:.1f} MiB, bare APScheduler {aps_rss / 1024:.1f} MiB, "
              f"{rss / aps_rss:.2f}x; goal <= 2x: {_met(rss <= 2 * aps_rss)}")


def _met(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


if __name__ == "__main__":
    main()
