"""The HTTP server under many clients: waitress (what ``task-scheduler run`` serves with) against
the hand-written threaded wsgiref server it replaced, side by side, one run.

Two cases, each server in its own process serving the real app (SQLite, no jobs):

* concurrent: N connections opened at once, each sending one ``GET /api/health`` with
  ``Connection: close`` (as curl does); how many are answered within the time-out, how long
  they took, and the most threads the server process had meanwhile;
* idle: M connections opened and left silent (from four client addresses), then
  ``GET /api/health`` asked again and again on new connections: its latency, and the server
  process's threads;
* one client: H connections opened and left silent by one client address (127.0.0.1), the way
  one client locked everyone out before (issue 20), and ``GET /api/health`` from another
  (127.0.0.2) beside it: waitress as served now (a quarter of the connections per client,
  idle ones closed sooner when it fills) against the same waitress without that gate.

The baseline is the old server's code taken from this repository's history (``git show
BASELINE_REV:task_scheduler.py``); without git, a plain threaded wsgiref server built here.

    python bench/http_load_bench.py      # --concurrent 1000 --idle 2000 --hog 4100
    python bench/http_load_bench.py --only-hog      # the one-client case alone

Linux only (thread counts come from /proc). Not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import multiprocessing
import os
import resource
import selectors
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import wsgiref.simple_server
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import task_scheduler as ts  # noqa: E402
import task_scheduler.http.server as ts_server  # noqa: E402

BASELINE_REV = "1be30ab"   # the last commit serving with the threaded wsgiref server
HEALTH = b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


def main() -> int:
    args = _parser().parse_args()
    _raise_file_limit(2 * (args.concurrent + args.idle + args.hog) + 512)
    if args.hog:
        hogs = []
        for name, make in (("waitress (now)", ts_server.make_server),
                           ("waitress, no per-client gate", _ungated_make_server)):
            with _server_process(make) as (port, pid):
                hogs.append((name, _hog(port, pid, args.hog, args.probes)))
            print(f"{name}: done", file=sys.stderr)
        _report_hog(hogs, args)
    if args.only_hog:
        return 0
    baseline, label = _baseline_make_server()
    rows = []
    for name, make in (("waitress (now)", ts_server.make_server), (label, baseline)):
        with _server_process(make) as (port, pid):
            concurrent = _concurrent(port, pid, args.concurrent, args.timeout)
            idle = _idle(port, pid, args.idle, args.probes)
        rows.append((name, concurrent, idle))
        print(f"{name}: done", file=sys.stderr)
    _report(rows, args)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrent", type=int, default=1000)
    parser.add_argument("--idle", type=int, default=2000)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per connection")
    parser.add_argument("--probes", type=int, default=50, help="health requests while idle")
    parser.add_argument("--hog", type=int, default=4100,
                        help="idle connections one client holds (0: skip that case)")
    parser.add_argument("--only-hog", action="store_true", help="the one-client case alone")
    return parser


def _ungated_make_server(app, host: str, port: int):
    """``ts_server.make_server`` as it was before the per-client gate: waitress's own channels and
    idle sweep."""
    server = ts_server.make_server(app, host, port)
    del server._server.channel_class, server._server.maintenance   # back to the class's
    return server


def _hog(port: int, pid: int, count: int, probes: int) -> dict:
    """One client address holds ``count`` silent connections; health from another."""
    sel, held, base = selectors.DefaultSelector(), [], _files(pid)
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.bind(("127.0.0.1", 0))
        sock.connect_ex(("127.0.0.1", port))
        sel.register(sock, selectors.EVENT_WRITE)
        held.append(sock)
    deadline = time.monotonic() + 60
    while sel.get_map() and (left := deadline - time.monotonic()) > 0:
        for key, _ in sel.select(left):
            sel.unregister(key.fileobj)
    try:
        # As in _idle: the server takes connections from a full accept queue as the clients'
        # handshake retransmissions come (1, 3, 7, 15 s): wait until it has taken no more for
        # 16 s, and until it holds all it will.
        accepted, last_change = 0, time.monotonic()
        while time.monotonic() - last_change < 16 and time.monotonic() < deadline + 60:
            if (now := _files(pid) - base) != accepted:
                accepted, last_change = now, time.monotonic()
            time.sleep(0.1)
        latencies = []
        for _ in range(probes):
            start = time.monotonic()
            ok = _get(port, timeout=10, source="127.0.0.2").startswith(b"HTTP/1.1 200 ")
            latencies.append(time.monotonic() - start if ok else float("inf"))
    finally:
        for sock in held:
            sock.close()
    answered = [x for x in latencies if x != float("inf")]
    return {"held": accepted, "answered": len(answered), "p50": _pct(latencies, 50),
            "p99": _pct(latencies, 99), "max": max(latencies)}


def _report_hog(rows: list, args) -> None:
    print(f"\none client (127.0.0.1) opens {args.hog} idle connections; then {args.probes} "
          f"GET /api/health from 127.0.0.2 (10 s time-out each; inf = not answered):")
    print(f"  {'server':32} {'held':>6} {'answered':>8} {'p50 ms':>8} {'p99 ms':>9} "
          f"{'max ms':>9}")
    for name, h in rows:
        print(f"  {name:32} {h['held']:6d} {h['answered']:8d} {h['p50'] * 1000:8.1f} "
              f"{h['p99'] * 1000:9.1f} {h['max'] * 1000:9.1f}")


def _raise_file_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE,
                           (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard), hard))


def _baseline_make_server():
    """The old ``make_server`` from git history; else a threaded wsgiref server built here."""
    try:
        source = subprocess.run(["git", "-C", str(ROOT), "show",
                                 f"{BASELINE_REV}:task_scheduler.py"],
                                capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return _inline_threaded_server, "threaded wsgiref (inline)"
    path = Path(tempfile.mkdtemp()) / "old_task_scheduler.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("old_task_scheduler", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module.make_server, f"threaded wsgiref ({BASELINE_REV})"


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, wsgiref.simple_server.WSGIServer):
    daemon_threads = True


def _inline_threaded_server(app, host: str, port: int):
    return wsgiref.simple_server.make_server(host, port, app, server_class=_ThreadingWSGIServer)


@contextlib.contextmanager
def _server_process(make):
    """Serve the real app with ``make`` in a child process; yields its port and pid."""
    ctx = multiprocessing.get_context("fork")   # before this process starts any thread
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=(child, make), daemon=True)
    proc.start()
    port = parent.recv()
    try:
        yield port, proc.pid
    finally:
        parent.send("stop")
        proc.join(30)
        if proc.is_alive():
            proc.kill()


def _serve(pipe, make) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        jobs = Path(tmp) / "jobs.yaml"
        jobs.write_text("[]\n")
        service = ts.SchedulerService(ts.Config(
            config_path=str(jobs), database_url=f"sqlite:///{Path(tmp) / 'ts.sqlite'}",
            watch=False, poll_interval=3600)).start()
        server = make(ts.create_app(service), "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        pipe.send(server.server_port)
        pipe.recv()
        server.shutdown()
        server.server_close()
        service.stop(grace=1)


def _threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("Threads:"))


def _files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _concurrent(port: int, pid: int, count: int, timeout: float) -> dict:
    """``count`` connections at once, one request each, driven by one selector loop."""
    sel = selectors.DefaultSelector()
    started = time.monotonic()
    answers, took = {}, {}
    for i in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        sel.register(sock, selectors.EVENT_WRITE, i)
        answers[i] = b""
    deadline, peak = started + timeout, _threads(pid)
    while sel.get_map() and (left := deadline - time.monotonic()) > 0:
        for key, events in sel.select(min(left, 0.05)):
            sock, i = key.fileobj, key.data
            try:
                if events & selectors.EVENT_WRITE:
                    sock.sendall(HEALTH)
                    sel.modify(sock, selectors.EVENT_READ, i)
                    continue
                chunk = sock.recv(1 << 16)
            except OSError:   # refused or reset: counted as an error below
                chunk, answers[i] = b"", b""
            answers[i] += chunk
            if not chunk:
                took[i] = time.monotonic() - started
                sel.unregister(sock)
                sock.close()
        peak = max(peak, _threads(pid))
    timed_out = len(sel.get_map())
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    ok = [took[i] for i, answer in answers.items() if answer.startswith(b"HTTP/1.1 200 ")]
    return {"answered": len(ok), "timed_out": timed_out, "errors": count - len(ok) - timed_out,
            "wall": time.monotonic() - started, "p50": _pct(ok, 50), "p99": _pct(ok, 99),
            "threads": peak}


def _idle(port: int, pid: int, count: int, probes: int) -> dict:
    """``count`` silent connections opened at once and held; then /api/health on new ones.
    From four client addresses: one address holds at most a quarter of the server's."""
    sel, idle, base = selectors.DefaultSelector(), [], _files(pid)
    for i in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.bind((f"127.0.0.{10 + i % 4}", 0))
        sock.connect_ex(("127.0.0.1", port))
        sel.register(sock, selectors.EVENT_WRITE)
        idle.append(sock)
    deadline = time.monotonic() + 120
    while sel.get_map() and (left := deadline - time.monotonic()) > 0:
        for key, _ in sel.select(left):
            sel.unregister(key.fileobj)
    try:
        # Connected here does not mean accepted there: with a full accept queue Linux drops the
        # handshake's last ACK and the server takes the connection on a later retransmission.
        # Wait until the server holds them all, or has taken no more for 20 s (the handshake's
        # retransmissions come 1, 3, 7, 15 and 31 s after the first).
        accepted, last_change = 0, time.monotonic()
        while accepted < count and time.monotonic() - last_change < 20 and \
                time.monotonic() < deadline:
            if (now := _files(pid) - base) != accepted:
                accepted, last_change = now, time.monotonic()
            time.sleep(0.1)
        latencies = []
        for _ in range(probes):
            start = time.monotonic()
            ok = _get(port, timeout=10).startswith(b"HTTP/1.1 200 ")
            latencies.append(time.monotonic() - start if ok else float("inf"))
        threads = _threads(pid)
    finally:
        for sock in idle:
            sock.close()
    return {"accepted": accepted, "p50": _pct(latencies, 50), "p99": _pct(latencies, 99),
            "max": max(latencies), "threads": threads}


def _get(port: int, timeout: float, source: str = "127.0.0.1") -> bytes:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                      source_address=(source, 0)) as sock:
            sock.sendall(HEALTH)
            answer = b""
            while chunk := sock.recv(1 << 16):
                answer += chunk
            return answer
    except OSError:
        return b""


def _pct(values: list, pct: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * pct / 100))] if values else float("nan")


def _report(rows: list, args) -> None:
    print(f"\npython {sys.version.split()[0]}, {os.cpu_count()} CPUs; server and clients on "
          f"one machine, the server in its own process\n")
    print(f"{args.concurrent} connections at once, one GET /api/health each, "
          f"{args.timeout:g} s time-out:")
    head = (f"  {'server':32} {'answered':>8} {'timed out':>9} {'errors':>6} {'wall s':>7} "
            f"{'p50 s':>7} {'p99 s':>7} {'threads':>7}")
    print(head)
    for name, c, _ in rows:
        print(f"  {name:32} {c['answered']:8d} {c['timed_out']:9d} {c['errors']:6d} "
              f"{c['wall']:7.2f} {c['p50']:7.3f} {c['p99']:7.3f} {c['threads']:7d}")
    print(f"\n{args.idle} idle connections held open, then {args.probes} GET /api/health "
          f"on new connections:")
    print(f"  {'server':32} {'accepted':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
          f"{'threads':>7}")
    for name, _, i in rows:
        print(f"  {name:32} {i['accepted']:8d} {i['p50'] * 1000:8.1f} {i['p99'] * 1000:8.1f} "
              f"{i['max'] * 1000:8.1f} {i['threads']:7d}")
    (_, new_c, new_i), (old_name, old_c, old_i) = rows
    print(f"\nconcurrent: {new_c['answered']} vs {old_c['answered']} of {args.concurrent} "
          f"answered; the {args.concurrent} took {new_c['wall']:.2f} s vs {old_c['wall']:.2f} s")
    print(f"idle: health p50 {new_i['p50'] * 1000:.1f} ms vs {old_i['p50'] * 1000:.1f} ms; "
          f"{new_i['threads']} threads vs {old_i['threads']}")


if __name__ == "__main__":
    sys.exit(main())
