"""Hot reload at scale: a one-line save in a 10,000-job jobs.yaml, against loading it at start-up.

    python bench/reload_bench.py [--jobs 10000] [--edits 5] [--debounce 0.3]

Generates jobs.yaml in a temporary folder (interval and cron command jobs), starts a
SchedulerService on a temporary SQLite file with the real watchdog reloader, and prints:
- start-up: ``service.start()`` until every job is live (the baseline),
- one-line edit: from the moment the edited file is written and closed until the changed job
  shows its new trigger (median and max of --edits saves), debounce included,
- how many jobs each edit touched (the reload's change counts), and the ratio start-up / edit.
Not a test: it asserts nothing but prints the numbers for docs/reload.md.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import sqlalchemy as sa
import task_scheduler as ts  # noqa: E402
import task_scheduler.store.schema as ts_schema


def job_line(i: int, seconds: int | None = None) -> str:
    """One job per line, so that a one-line edit changes one job."""
    if i % 2:
        seconds = seconds or 60 + i % 3600
        trigger = f"{{type: interval, seconds: {seconds}}}"
    else:
        trigger = f"{{type: cron, expression: '{i % 60} {i % 24} * * *'}}"
    return f"- {{id: job_{i:05d}, command: 'true', trigger: {trigger}}}\n"


def wait_until(predicate, timeout: float = 60.0, interval: float = 0.002) -> float:
    """Poll ``predicate``; return the perf_counter time it first held."""
    deadline = time.perf_counter() + timeout
    while not predicate():
        if time.perf_counter() > deadline:
            raise SystemExit(f"timed out after {timeout}s")
        time.sleep(interval)
    return time.perf_counter()


def start_up(config: ts.Config, count: int) -> tuple[ts.SchedulerService, float]:
    started = time.perf_counter()
    service = ts.SchedulerService(config).start()
    with service.engine.connect() as conn:
        live = conn.execute(sa.text(f"SELECT count(*) FROM {ts_schema.APS_TABLE}")).scalar()
    elapsed = time.perf_counter() - started
    if live != count or len(service.jobs()) != count:
        raise SystemExit(f"start-up loaded {live} schedules, expected {count}")
    return service, elapsed


def one_line_edit(service, path: Path, lines: list, index: int, seconds: int) -> tuple:
    """Rewrite jobs.yaml in place with one job's interval changed; time until it is live."""
    job_id = f"job_{index:05d}"
    old_next = service.job(job_id)["next_run_time"]
    lines[index] = job_line(index, seconds)
    text = "".join(lines)
    with open(path, "w") as fh:
        fh.write(text)
    saved = time.perf_counter()
    digest = hashlib.sha256(text.encode()).hexdigest()
    live = wait_until(lambda: service.job(job_id)["trigger"].get("seconds") == seconds)
    done = wait_until(lambda: service.config_status()["hash"] == digest)   # reload finished
    config = service.config_status()
    if service.job(job_id)["next_run_time"] == old_next:
        raise SystemExit(f"{job_id} was not rescheduled")
    touched = sum(n for kind, n in config["changes"].items() if kind != "unchanged")
    return live - saved, touched, config["changes"], done - saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--edits", type=int, default=5)
    parser.add_argument("--debounce", type=float, default=0.3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="ts-reload-bench-") as tmp:
        path = Path(tmp) / "jobs.yaml"
        lines = [job_line(i) for i in range(args.jobs)]
        path.write_text("".join(lines))
        parse_started = time.perf_counter()
        ts.load_jobs_file(str(path))
        parse_s = time.perf_counter() - parse_started
        config = ts.Config(config_path=str(path), database_url=f"sqlite:///{tmp}/bench.sqlite",
                           watch=True, debounce=args.debounce, poll_interval=3600, port=0)
        service, startup_s = start_up(config, args.jobs)
        try:
            results = [one_line_edit(service, path, lines, 2 * k + 1, 7 + k)
                       for k in range(args.edits)]
            forced_started = time.perf_counter()
            service.reload(force=True)
            forced_s = time.perf_counter() - forced_started
        finally:
            service.stop(0)
    report(args, startup_s, parse_s, forced_s, results)


def report(args, startup_s: float, parse_s: float, forced_s: float, results: list) -> None:
    latencies = [r[0] for r in results]
    median = statistics.median(latencies)
    touched = sorted({r[1] for r in results})
    rows = [
        ("jobs in jobs.yaml", f"{args.jobs:,}"),
        ("start-up load (baseline)", f"{startup_s:.2f} s"),
        ("  of which parse + validate", f"{parse_s:.2f} s"),
        (f"one-line edit, median of {len(latencies)}", f"{median:.3f} s"),
        ("one-line edit, max", f"{max(latencies):.3f} s"),
        ("  reload finished (median)", f"{statistics.median(r[3] for r in results):.3f} s"),
        ("  of which debounce", f"{args.debounce:.3f} s"),
        ("jobs touched per edit", ", ".join(map(str, touched))),
        ("last edit's changes", str(results[-1][2])),
        ("forced reload, nothing changed", f"{forced_s:.3f} s"),
        ("ratio start-up / edit (median)", f"{startup_s / median:.1f}x"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"\nreload benchmark (python {sys.version.split()[0]}, {os.cpu_count()} CPUs)")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


if __name__ == "__main__":
    main()
