"""What ``isolation: process`` costs a python job, against the default in-thread run.

    python bench/isolation_bench.py [--runs N] [--burst N]

One service (in this process, a fresh SQLite file) runs a trivial function ``noop()`` N times
in a thread and N times in a worker process, alternately, one run at a time, so both meet the
same machine. Per run, from the run's own record: ``started_at -> finished_at`` (the run itself:
for a worker, the fork, sending the call, the call, the exit and its report) and
``scheduled_at -> finished_at`` (end to end: queued, claimed, run, recorded). The first
process-isolated run (it starts the fork server) is reported on its own. Then a burst: N runs
queued at once for each kind, wall time until all ended. Then what isolation buys: a function
that loops forever, cancelled (time until its process is gone) and timed out (how long past its
timeout it ended), and the memory of a worker and of the fork server. Baseline: the thread.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import task_scheduler as ts  # noqa: E402
from task_scheduler.models import FINAL_STATUSES  # noqa: E402
from task_scheduler.processes import _pid_alive  # noqa: E402

JOBS_MODULE = """
import os, time

def noop():
    return None

def forever(pidfile):
    with open(pidfile, "w") as fh:
        fh.write(str(os.getpid()))
    while True:
        time.sleep(0.01)
"""


def jobs_yaml(tmp: Path, burst: int) -> str:
    lines = []
    for kind in ("thread", "process"):
        lines += [f"- {{id: noop_{kind}, func: 'benchjobs:noop', isolation: {kind}, "
                  f"max_instances: {burst}}}"]
    lines += [f"- {{id: forever, func: 'benchjobs:forever', isolation: process, "
              f"kwargs: {{pidfile: '{tmp}/forever.pid'}}}}",
              f"- {{id: forever_timeout, func: 'benchjobs:forever', isolation: process, "
              f"timeout: 0.5, kwargs: {{pidfile: '{tmp}/forever.pid'}}}}"]
    return "\n".join(lines) + "\n"


def wait_end(service, run_id: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = service.run(run_id)
        if run["status"] in FINAL_STATUSES:
            return run
        time.sleep(0.001)
    raise SystemExit(f"run {run_id} did not end within {timeout}s")


def seconds(run: dict, start: str, end: str) -> float:
    return (dt.datetime.fromisoformat(run[end]) - dt.datetime.fromisoformat(run[start])
            ).total_seconds()


def one(service, job_id: str) -> dict:
    run = wait_end(service, service.run_now(job_id)["id"])
    assert run["status"] == "succeeded", run
    return run


def sequential(service, runs: int) -> dict:
    """N runs of each kind, alternating: their run and end-to-end times (ms)."""
    found = {"thread": ([], []), "process": ([], [])}
    for _ in range(runs):
        for kind in ("thread", "process"):
            run = one(service, f"noop_{kind}")
            found[kind][0].append(seconds(run, "started_at", "finished_at") * 1000)
            found[kind][1].append(seconds(run, "scheduled_at", "finished_at") * 1000)
    return found


def burst(service, kind: str, count: int) -> float:
    began = time.perf_counter()
    ids = [service.run_now(f"noop_{kind}")["id"] for _ in range(count)]
    for run_id in ids:
        wait_end(service, run_id, 120)
    return time.perf_counter() - began


def stop_times(service, pidfile: Path, rounds: int) -> tuple[list, list]:
    """Cancel: ms from the cancel call until the worker is gone. Timeout: ms past 0.5 s."""
    cancels, overshoots = [], []
    for _ in range(rounds):
        pidfile.unlink(missing_ok=True)
        run_id = service.run_now("forever")["id"]
        while not (pidfile.exists() and pidfile.read_text()):
            time.sleep(0.002)
        pid = int(pidfile.read_text())
        began = time.perf_counter()
        service.cancel(run_id)
        while _pid_alive(pid):
            time.sleep(0.001)
        cancels.append((time.perf_counter() - began) * 1000)
        assert wait_end(service, run_id)["status"] == "cancelled"
        run = wait_end(service, service.run_now("forever_timeout")["id"])
        assert run["status"] == "timeout", run
        overshoots.append((seconds(run, "started_at", "finished_at") - 0.5) * 1000)
    return cancels, overshoots


def memory(service, pidfile: Path) -> tuple[int, int, int]:
    """KiB: a running worker's private memory (what it adds), its RSS, the fork server's RSS."""
    pidfile.unlink(missing_ok=True)
    run_id = service.run_now("forever")["id"]
    while not (pidfile.exists() and pidfile.read_text()):
        time.sleep(0.002)
    pid = int(pidfile.read_text())
    time.sleep(0.2)
    private = sum(kib(pid, "smaps_rollup", key) for key in ("Private_Clean:", "Private_Dirty:"))
    rss, server = kib(pid, "status", "VmRSS:"), kib(service.runner._p.forkserver.pid, "status",
                                                      "VmRSS:")
    service.cancel(run_id)
    wait_end(service, run_id)
    return private, rss, server


def kib(pid: int, name: str, key: str) -> int:
    with open(f"/proc/{pid}/{name}") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(key))


def stats(values: list) -> str:
    values = sorted(values)
    p95 = values[min(len(values) - 1, int(len(values) * 0.95))]
    return f"median {statistics.median(values):7.2f} ms   p95 {p95:7.2f} ms"


def main() -> int:
    args = parser().parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "benchjobs.py").write_text(JOBS_MODULE)
        (tmp_path / "jobs.yaml").write_text(jobs_yaml(tmp_path, args.burst))
        service = ts.SchedulerService(ts.Config(
            config_path=str(tmp_path / "jobs.yaml"), port=0, kill_grace=1,
            database_url=f"sqlite:///{tmp_path / 'ts.sqlite'}", poll_interval=3600)).start()
        try:
            one(service, "noop_thread")   # the thread pool and the imports warm
            first = one(service, "noop_process")
            found = sequential(service, args.runs)
            bursts = {kind: burst(service, kind, args.burst) for kind in ("thread", "process")}
            cancels, overshoots = stop_times(service, tmp_path / "forever.pid", args.stops)
            private, rss, server = memory(service, tmp_path / "forever.pid")
        finally:
            service.stop(grace=2)
    report(args, first, found, bursts, cancels, overshoots, (private, rss, server))
    return 0


def report(args, first, found, bursts, cancels, overshoots, mem) -> None:
    print(f"isolation bench: {args.runs} runs of noop() each way, one at a time; "
          f"{os.cpu_count()} CPUs")
    print(f"first process run (starts the fork server): "
          f"{seconds(first, 'started_at', 'finished_at') * 1000:.0f} ms run, "
          f"{seconds(first, 'scheduled_at', 'finished_at') * 1000:.0f} ms end to end")
    for label, index in (("run (started -> finished)", 0), ("end to end (queued -> finished)", 1)):
        thread, process = found["thread"][index], found["process"][index]
        extra = statistics.median(process) - statistics.median(thread)
        print(f"{label}:")
        print(f"  thread   {stats(thread)}")
        print(f"  process  {stats(process)}")
        ratio = statistics.median(process) / max(statistics.median(thread), 1e-6)
        print(f"  ratio process/thread (median) {ratio:.1f}x; "
              f"{extra:+.2f} ms per run")
    t, p = bursts["thread"], bursts["process"]
    print(f"burst of {args.burst} queued at once (10 workers): thread {t * 1000:.0f} ms "
          f"({args.burst / t:.0f} runs/s), process {p * 1000:.0f} ms ({args.burst / p:.0f} "
          f"runs/s), ratio {p / t:.1f}x")
    print(f"cancel of a loop-forever job until its process is gone ({args.stops} times): "
          f"median {statistics.median(cancels):.1f} ms, max {max(cancels):.1f} ms")
    print(f"timeout 0.5 s of a loop-forever job: ended median "
          f"{statistics.median(overshoots):.0f} ms, max {max(overshoots):.0f} ms past it")
    private, rss, server = mem
    print(f"memory: a worker adds {private / 1024:.1f} MiB of its own (RSS {rss / 1024:.1f} MiB, "
          f"mostly shared with the fork server); the fork server {server / 1024:.1f} MiB RSS")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=200, help="sequential runs of each kind")
    p.add_argument("--burst", type=int, default=200, help="runs queued at once, each kind")
    p.add_argument("--stops", type=int, default=10, help="cancels and timeouts measured")
    return p


if __name__ == "__main__":
    sys.exit(main())
