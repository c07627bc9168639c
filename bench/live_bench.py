"""Live pages: what N open pages cost the database, and how soon a run shows. One run, side by
side.

One service (SQLite, ``--jobs`` jobs) served by waitress from this process. Three ways to keep
N pages current, each for ``--duration`` seconds while a run is started every second:

- baseline, ``reload``: each page fetches the job list (``GET /jobs``) once a second, the way
  a page without a feed would (a meta refresh, or a script that reloads);
- ``poll``: each page asks the change feed ``GET /live?after=CURSOR`` once a second, as a page
  refused a stream does (and fetches the page only when something changed);
- ``stream``: up to MAX_STREAMS pages hold a Server-Sent Events stream (``GET /live``), the
  rest poll.

A last row, ``none``, has no page open: what the runs alone cost.

It prints, per way: SQL statements the service ran per second (counted on its engine), HTTP
requests per second, and for the feed, how long from ``run_now`` until a reader heard the run
(median and p95). Ratios are against the baseline.

    python bench/live_bench.py            # --pages 30 --jobs 100 --duration 8

Not a test.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa  # noqa: E402

import task_scheduler as ts  # noqa: E402
import task_scheduler.http.api as ts_api  # noqa: E402
from task_scheduler.changes import ChangeFeed  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=30, help="pages open at once")
    parser.add_argument("--jobs", type=int, default=100, help="jobs in the list")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per way")
    return parser


def main() -> int:
    args = _parser().parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        service = ts.SchedulerService(ts.Config(
            config_path=None, database_url=f"sqlite:///{tmp}/ts.sqlite", port=0)).start()
        server = ts.serve_in_thread(ts.create_app(service), "127.0.0.1", 0)
        try:
            for n in range(args.jobs):
                service.add_job({"id": f"job{n:04d}", "command": "true",
                                 "trigger": {"type": "interval", "hours": 24}})
            service.add_job({"id": "ping", "command": "true", "trigger": {"type": "manual"},
                             "max_instances": 100})
            rows = [_measure(service, server.server_port, way, args)
                    for way in ("reload", "poll", "stream", "none")]
        finally:
            server.shutdown()
            service.stop(grace=1)
    base = rows[0]
    print(f"\n{args.pages} open pages, {args.jobs} jobs, a run started every second, "
          f"{args.duration:g} s each")
    print(f"{'way':<8} {'SQL/s':>8} {'vs reload':>10} {'HTTP req/s':>11}   a run heard after "
          f"(median / p95)")
    for row in rows:
        heard = "; ".join(f"{kind}: {_spread(times)}" for kind, times in row["heard"].items()
                          if times) or "-"
        print(f"{row['way']:<8} {row['sql']:>8.1f} {row['sql'] / base['sql']:>9.2f}x "
              f"{row['http']:>11.1f}   {heard}")
    return 0


def _spread(times: list) -> str:
    ordered = sorted(times)
    return (f"{statistics.median(ordered) * 1000:.0f} / "
            f"{ordered[max(int(len(ordered) * 0.95) - 1, 0)] * 1000:.0f} ms ({len(ordered)})")


def _measure(service, port: int, way: str, args) -> dict:
    statements = [0]

    def count(*_args):
        statements[0] += 1
    sa.event.listen(service.engine, "before_cursor_execute", count)
    stop = threading.Event()
    requests, heard, started = [0], [], {}
    streams = min(args.pages, ts_api.MAX_STREAMS) if way == "stream" else 0
    readers = [threading.Thread(target=_stream_reader, args=(port, stop, started, heard, requests))
               for _ in range(streams)]
    readers += [threading.Thread(target=_poller, args=(port, way, stop, started, heard, requests))
                for _ in range(args.pages - streams if way != "none" else 0)]
    for reader in readers:
        reader.start()
    time.sleep(1.5 if readers else ChangeFeed.IDLE + 1)   # pages open (none: feed asleep)
    statements[0], requests[0] = 0, 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < args.duration:
        at = time.monotonic()
        started[service.run_now("ping")["id"]] = at
        time.sleep(1.0)
    elapsed = time.monotonic() - t0
    sql, http = statements[0] / elapsed, requests[0] / elapsed
    stop.set()
    for reader in readers:
        reader.join(5)
    sa.event.remove(service.engine, "before_cursor_execute", count)
    return {"way": way, "sql": sql, "http": http,
            "heard": {kind: [seen[i] - at for k, seen in heard if k == kind
                             for i, at in started.items() if i in seen]
                      for kind in ("stream", "poll")} if way != "reload" else {}}


def _poller(port, way, stop, started, heard, requests) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    cursor, seen = None, {}
    heard.append(("poll", seen))
    while not stop.is_set():
        path = "/jobs" if way == "reload" else "/live" + (f"?after={cursor}" if cursor else "")
        conn.request("GET", path)
        body = conn.getresponse().read()
        requests[0] += 1
        if way != "reload":
            answer = json.loads(body)
            cursor = answer["cursor"]
            _note(answer["events"], seen)
        stop.wait(1.0)
    conn.close()


def _stream_reader(port, stop, started, heard, requests) -> None:
    sock = socket.create_connection(("127.0.0.1", port), timeout=2)
    sock.sendall(b"GET /live HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
    requests[0] += 1
    buffer, seen = b"", {}
    heard.append(("stream", seen))
    while not stop.is_set():
        try:
            buffer += sock.recv(65536)
        except TimeoutError:
            continue
        *blocks, buffer = buffer.split(b"\n\n")
        for block in blocks:
            lines = dict(line.split(": ", 1) for line in block.decode().splitlines()
                         if ": " in line and not line.startswith(":"))
            if lines.get("event") == "run":
                _note([{"event": "run", "data": json.loads(lines["data"])}], seen)
    sock.close()


def _note(events, seen: dict) -> None:
    """When this reader first heard of each run (queued, running or ended)."""
    now = time.monotonic()
    for event in events:
        if event["event"] == "run":
            seen.setdefault(event["data"]["id"], now)


if __name__ == "__main__":
    sys.exit(main())
