"""Read-API throughput: task-scheduler vs Flask-APScheduler's REST API, side by side, one run.

Both servers hold the same 1,000 jobs (half interval, half cron, all calling ``time:time``) in a
SQLite file and are served from threads of this process: ours by ``serve_in_thread`` (the server
``task-scheduler run`` uses: waitress), Flask-APScheduler's by a threaded werkzeug server. A child
process drives each endpoint with N client threads for a fixed time (the load generator in its own
process, so it does not compete with the servers for the GIL), in two modes: ``keep-alive``
(http.client connections reused, as a browser or a script with a session does) and ``new
connection`` (a new TCP connection per request with ``Connection: close``, as curl and most
monitoring probes do). It prints requests per second, p50 and p99 latency per mode, and our/their
ratios.

    pip install flask-apscheduler        # the baseline; not a dependency of task-scheduler
    python bench/api_bench.py            # --jobs 1000 --clients 8 --duration 5 --mode both

``GET /api/jobs?limit=1000`` is compared with ``GET /scheduler/jobs``: both answer all 1,000
jobs (our default page is 100; that row is printed too, for information). Not a test.
"""

from __future__ import annotations

import argparse
import http.client
import logging
import multiprocessing
import os
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import task_scheduler as ts  # noqa: E402

FUNC = "time:time"   # importable by both, harmless if it ever fired (it cannot: see _trigger)


def main() -> int:
    args = _parser().parse_args()
    try:
        import flask_apscheduler  # noqa: F401
    except ImportError:
        print("the baseline needs Flask-APScheduler: pip install flask-apscheduler")
        return 2
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)   # no access log on either side
    with tempfile.TemporaryDirectory() as tmp:
        ours, service = _serve_ours(Path(tmp), args.jobs)
        theirs, scheduler = _serve_theirs(Path(tmp), args.jobs)
        try:
            _check_same_jobs(ours, theirs, args.jobs)
            rows = _measure(ours, theirs, args)
        finally:
            scheduler.shutdown(wait=False)
            service.stop(grace=1)
    _report(rows, args)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per endpoint")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument("--mode", choices=["keep-alive", "new-connection", "both"], default="both")
    return parser


def _trigger(i: int) -> dict:
    # Far from firing during a run: hourly-or-slower intervals, crons in the small hours.
    if i % 2:
        return {"type": "interval", "hours": 1 + i % 24, "minutes": i % 60}
    return {"type": "cron", "hour": str(3 + i % 3), "minute": str(i % 60)}


def _job_ids(count: int) -> list[str]:
    return [f"job-{i:04d}" for i in range(count)]


def _serve_ours(tmp: Path, count: int):
    jobs_yaml = tmp / "jobs.yaml"
    jobs_yaml.write_text("[]\n")
    config = ts.Config(config_path=str(jobs_yaml), database_url=f"sqlite:///{tmp / 'ts.sqlite'}",
                       watch=False, poll_interval=3600)
    service = ts.SchedulerService(config).start()
    for i, job_id in enumerate(_job_ids(count)):
        service.add_job({"id": job_id, "func": FUNC, "trigger": _trigger(i),
                         "description": f"bench job {i}", "tags": ["bench"]})
    server = ts.serve_in_thread(ts.create_app(service), "127.0.0.1", 0)
    return ("127.0.0.1", server.server_port), service


def _serve_theirs(tmp: Path, count: int):
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from flask import Flask
    from flask_apscheduler import APScheduler
    from werkzeug.serving import make_server

    app = Flask("flask_apscheduler_bench")
    app.config.update(SCHEDULER_API_ENABLED=True, SCHEDULER_JOBSTORES={
        "default": SQLAlchemyJobStore(url=f"sqlite:///{tmp / 'flask.sqlite'}")})
    scheduler = APScheduler()
    scheduler.init_app(app)
    scheduler.start()
    for i, job_id in enumerate(_job_ids(count)):
        trigger = dict(_trigger(i))
        scheduler.add_job(id=job_id, func=FUNC, trigger=trigger.pop("type"), **trigger)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return ("127.0.0.1", server.server_port), scheduler


def _check_same_jobs(ours, theirs, count: int) -> None:
    import json
    got = {}
    for name, (addr, path) in {"ours": (ours, f"/api/jobs?limit={count}"),
                               "theirs": (theirs, "/scheduler/jobs")}.items():
        conn = http.client.HTTPConnection(*addr, timeout=60)
        conn.request("GET", path)
        body = json.loads(conn.getresponse().read())
        got[name] = body["jobs"] if isinstance(body, dict) else body
        conn.close()
    ids = [sorted(j["id"] for j in jobs) for jobs in got.values()]
    if ids[0] != ids[1] or len(ids[0]) != count:
        raise SystemExit(f"the servers hold different jobs: {len(ids[0])} vs {len(ids[1])}")


def _measure(ours, theirs, args) -> list:
    ids = _job_ids(args.jobs)
    cases = [
        ("list (all jobs)", ours, [f"/api/jobs?limit={args.jobs}"], theirs, ["/scheduler/jobs"]),
        ("single job", ours, [f"/api/jobs/{i}" for i in ids],
         theirs, [f"/scheduler/jobs/{i}" for i in ids]),
        ("list (default page of 100)", ours, ["/api/jobs"], None, None),
    ]
    modes = MODES if args.mode == "both" else [args.mode]
    rows = []
    ctx = multiprocessing.get_context("fork")
    for mode in modes:
        for name, our_addr, our_paths, their_addr, their_paths in cases:
            row = [mode, name, _drive(ctx, mode, our_addr, our_paths, args)]
            row.append(_drive(ctx, mode, their_addr, their_paths, args) if their_addr else None)
            rows.append(row)
    return rows


MODES = ["keep-alive", "new-connection"]


def _drive(ctx, mode, addr, paths, args) -> dict:
    """Run the load generator in a child process; returns rps, p50, p99 (ms), errors."""
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_load, args=(child, mode, addr, paths, args.clients, args.warmup,
                                           args.duration))
    proc.start()
    result = parent.recv()
    proc.join()
    return result


def _load(pipe, mode, addr, paths, clients: int, warmup: float, duration: float) -> None:
    start = time.monotonic() + warmup
    stop = start + duration
    results = [None] * clients
    get = _get_new_connection if mode == "new-connection" else _get_keep_alive

    def client(n: int) -> None:
        rng = random.Random(n)
        conn = [None]   # the keep-alive connection, made again after an error
        latencies, errors = [], 0
        while True:
            t0 = time.monotonic()
            if t0 >= stop:
                break
            ok = get(addr, rng.choice(paths), conn)
            t1 = time.monotonic()
            if t0 >= start:
                latencies.append(t1 - t0)
                errors += not ok
        if conn[0] is not None:
            conn[0].close()
        results[n] = (latencies, errors)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies = sorted(x for lat, _ in results for x in lat)
    errors = sum(e for _, e in results)
    pipe.send({"rps": len(latencies) / duration, "requests": len(latencies), "errors": errors,
               "p50": _percentile(latencies, 50) * 1000, "p99": _percentile(latencies, 99) * 1000,
               "mean": (statistics.fmean(latencies) if latencies else 0) * 1000})


def _get_keep_alive(addr, path: str, conn: list) -> bool:
    if conn[0] is None:
        conn[0] = http.client.HTTPConnection(*addr, timeout=60)
    try:
        conn[0].request("GET", path)
        resp = conn[0].getresponse()
        resp.read()
        return resp.status == 200
    except (OSError, http.client.HTTPException):
        conn[0].close()
        conn[0] = None
        return False


def _get_new_connection(addr, path: str, _conn: list) -> bool:
    """One request on its own TCP connection, read until the server closes it, as curl does."""
    try:
        with socket.create_connection(addr, timeout=60) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {addr[0]}:{addr[1]}\r\n"
                         f"Connection: close\r\n\r\n".encode())
            answer = b""
            while chunk := sock.recv(1 << 16):
                answer += chunk
    except OSError:
        return False
    return answer.startswith((b"HTTP/1.1 200 ", b"HTTP/1.0 200 "))


def _percentile(values: list, pct: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(len(values) * pct / 100))]


def _report(rows: list, args) -> None:
    print(f"\n{args.jobs} jobs, {args.clients} clients, {args.duration:g} s per endpoint, "
          f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs\n")
    head = (f"{'mode':15} {'endpoint':28} {'server':18} {'req/s':>9} {'p50 ms':>9} "
            f"{'p99 ms':>9} {'errors':>7}")
    print(head)
    print("-" * len(head))
    for mode, name, ours, theirs in rows:
        for label, r in (("task-scheduler", ours), ("Flask-APScheduler", theirs)):
            if r is not None:
                print(f"{mode:15} {name:28} {label:18} {r['rps']:9.1f} {r['p50']:9.2f} "
                      f"{r['p99']:9.2f} {r['errors']:7d}")
    print()
    for mode, name, ours, theirs in rows:
        if theirs is not None and theirs["rps"]:
            print(f"{mode}, {name}: {ours['rps'] / theirs['rps']:.2f}x the throughput, p50 "
                  f"{theirs['p50'] / ours['p50']:.2f}x, p99 {theirs['p99'] / ours['p99']:.2f}x "
                  f"lower latency")


if __name__ == "__main__":
    sys.exit(main())
