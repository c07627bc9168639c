"""No one client, stream or job starves the rest (issue 20): a killed live-output client frees its
slot, cancels of a run that ignores TERM cost the health check nothing, one client holding
thousands of idle connections leaves room for everyone else, and threads a python job starts
write into its run, not into the service's log."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import socket
import struct
import sys
import threading
import urllib.request

import pytest

import task_scheduler as ts
import task_scheduler.http.api as ts_api
import task_scheduler.capture as ts_capture
import task_scheduler.models as ts_models
import task_scheduler.processes as ts_processes
import task_scheduler.http.server as ts_server
from conftest import free_port, start_process, wait_for, write_jobs

STUBBORN = {"id": "stubborn", "command": "trap '' TERM; echo started; sleep 60 & wait; sleep 60",
            "shell": True, "trigger": {"type": "manual"}}


def request(base, method, path, timeout=30.0):
    """(status, body) of one request on a fresh connection."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, body=b"" if method == "POST" else None)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def open_stream(base, run_id):
    """A live-output stream on a raw socket, its first bytes read: a client we can kill."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(f"GET /api/runs/{run_id}/stdout HTTP/1.1\r\nHost: {host}\r\n"
                 f"Accept: text/event-stream\r\n\r\n".encode())
    first = sock.recv(4096)
    return sock, first


def kill(sock):
    """Gone as a killed process's socket goes: at once, nothing more read."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_a_killed_live_stream_frees_its_slot(service, live_server):
    service.add_job({**STUBBORN, "id": "quiet", "command": "sleep 60"})
    run = service.run_now("quiet")
    wait_for(lambda: service.run(run["id"])["status"] == "running", 20)
    streams = [open_stream(live_server, run["id"]) for _ in range(ts_api.MAX_STREAMS)]
    assert all(first.startswith(b"HTTP/1.1 200") for _, first in streams)
    status, body = request(live_server, "GET", f"/api/runs/{run['id']}/stdout")
    assert status == 200   # a plain read needs no slot
    extra, first = open_stream(live_server, run["id"])
    assert first.startswith(b"HTTP/1.1 503")   # all slots taken
    extra.close()
    for sock, _ in streams:
        kill(sock)

    def slot_free():
        sock, first = open_stream(live_server, run["id"])
        sock.close()
        return first.startswith(b"HTTP/1.1 200")
    # Before the fix a slot stayed taken until a keep-alive comment failed: 15-30 s.
    wait_for(slot_free, 8, 0.2, "a slot of the killed streams to be free")
    service.cancel(run["id"])


def test_cancels_of_a_run_that_ignores_term_do_not_hold_the_server(make_service):
    service = make_service(kill_grace=15)
    server = ts.serve_in_thread(ts.create_app(service), "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        service.add_job(STUBBORN)
        run = service.run_now("stubborn")
        wait_for(lambda: "started" in service.run(run["id"])["stdout"], 20)
        with concurrent.futures.ThreadPoolExecutor(30) as pool:
            cancels = [pool.submit(request, base, "POST", f"/api/runs/{run['id']}/cancel")
                       for _ in range(30)]
            health = pool.submit(request, base, "GET", "/api/health")
            answers = [c.result() for c in cancels]
            assert health.result()[0] == 200
        # Every cancel and the health check were answered while the run still ignored TERM:
        # nobody waited out its 15 s kill grace.
        assert service.run(run["id"])["status"] == "running"
        assert all(status == 200 for status, _ in answers)
        assert {json.loads(body)["status"] for _, body in answers} == {"running"}
    finally:
        server.shutdown()
        server.server_close()
        if run["id"] in service.runner.active:
            ts_processes._signal_group(service.runner.active[run["id"]].proc.pid, 9)



THREADED_JOB = '''
import logging
import sys
import threading

import task_scheduler

log = logging.getLogger("threaded")


def work(n, lines, seen):
    seen.append(task_scheduler.current_run() is not None)
    for i in range(lines):
        print(f"thread {n} line {i}")
        sys.__stderr__.write(f"thread {n} raw {i}\\n")
        if i < 5:
            log.warning("thread %d record %d", n, i)


def threaded(lines=500):
    seen = []
    threads = [threading.Thread(target=work, args=(n, lines, seen)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print("current_run in threads:", seen)
'''


def test_threads_a_python_job_starts_write_into_its_run(make_service, tmp_path, capsys):
    (tmp_path / "threadjob.py").write_text(THREADED_JOB)
    service = make_service()
    service.add_job({"id": "threads", "func": "threadjob:threaded",
                     "trigger": {"type": "manual"}})
    run = service.run_now("threads")
    wait_for(lambda: service.run(run["id"])["status"] == "succeeded", 30)
    run = service.run(run["id"])
    assert "thread 3 line 499" in run["stdout"] and "thread 0 line 0" in run["stdout"]
    assert "current_run in threads: [True, True, True, True]" in run["stdout"]
    assert "thread 2 record 4" in run["stderr"]
    leaked = capsys.readouterr()
    assert "thread 3 line" not in leaked.out and "thread 1 line" not in leaked.err


def test_output_no_run_owns_is_limited_with_a_count(make_service, tmp_path, capsys, caplog):
    (tmp_path / "threadjob.py").write_text(THREADED_JOB)
    service = make_service()
    service.add_job({"id": "threads", "func": "threadjob:threaded",
                     "trigger": {"type": "manual"}, "kwargs": {"lines": 1}})
    run = service.run_now("threads")   # the capture is installed from here on
    wait_for(lambda: service.run(run["id"])["status"] == "succeeded", 30)
    capsys.readouterr()
    line = "a thread no run started " + "x" * 76 + "\n"   # 101 characters

    def flood():
        for _ in range(10_000):   # ~1 MB
            sys.stdout.write(line)
    thread = threading.Thread(target=flood)
    thread.start()
    thread.join()
    out = capsys.readouterr().out
    assert 0 < len(out) <= ts_capture.SPILL_BYTES
    assert any("no run owns" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_a_service_process_keeps_a_jobs_threads_and_raw_stderr_out_of_its_log(tmp_path):
    (tmp_path / "threadjob.py").write_text(THREADED_JOB + '''

def _unowned():
    for i in range(40_000):   # ~2.4 MB, from a thread started at import: no run owns it
        print(f"unowned line {i} " + "u" * 40)


threading.Thread(target=_unowned, daemon=True).start()
''')
    write_jobs(tmp_path / "jobs.yaml", """
        - id: threads
          func: 'threadjob:threaded'
          kwargs: {lines: 2000}
          trigger: {type: manual}
    """)
    port = free_port()
    proc = start_process(["--port", str(port), "--config", str(tmp_path / "jobs.yaml"),
                          "--db", f"sqlite:///{tmp_path / 'ts.sqlite'}"], tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _get(base, "/api/health"), 30, 0.2, "the service to answer")
        run = json.loads(_post(base, "/api/jobs/threads/run"))["run"]
        done = wait_for(lambda: (r := json.loads(_get(base, f"/api/runs/{run['id']}")))[
            "status"] in ts_models.FINAL_STATUSES and r, 60, 0.2, "the run to end")
        assert done["status"] == "succeeded", done
        assert "thread 3 line 1999" in done["stdout"]
        assert "thread 3 raw 1999" in done["stderr"]   # sys.__stderr__ belongs to the run too
    finally:
        proc.terminate()
        proc.wait(30)
    log = (tmp_path / "service.log").read_text(errors="replace")
    assert "thread 3 line" not in log and "thread 0 raw" not in log
    assert len(log) < 2 * ts_capture.SPILL_BYTES + 200_000, len(log)   # not the 2.4 MB written
    assert "no run owns" in log


def _get(base, path):
    try:
        with urllib.request.urlopen(base + path, timeout=10) as response:
            return response.read().decode()
    except OSError:
        return None


def _post(base, path):
    request = urllib.request.Request(base + path, data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode()


# -- one client's connections -----------------------------------------------------------------

def connect_from(source, port, timeout=30):
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    return sock


def health_from(source, port, timeout=5.0, token=None):
    """The status line of GET /api/health from ``source``; None if no answer in time."""
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    path = "/api/jobs" if token else "/api/health"
    try:
        with connect_from(source, port, timeout) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}"
                         f"Connection: close\r\n\r\n".encode())
            return sock.recv(65536).split(b"\r\n", 1)[0]
    except OSError:
        return None


@pytest.fixture
def small_server(make_service, monkeypatch):
    """A server with room for 400 connections (the real one: 4,000): a quarter per client."""
    monkeypatch.setitem(ts_server.HTTP_SETTINGS, "connection_limit", 400)
    # The sweep that closes idle connections of a full server runs every cleanup_interval (10 s
    # in production): the tests wait for it, not for those 10 s.
    monkeypatch.setitem(ts_server.HTTP_SETTINGS, "cleanup_interval", 1)
    service = make_service(token="a-token-long-enough-1234")
    server = ts.serve_in_thread(ts.create_app(service), "127.0.0.1", 0)
    yield server.server_port
    server.shutdown()
    server.server_close()


def test_one_client_holding_idle_connections_keeps_no_one_out(small_server):
    port, held = small_server, []
    try:
        for _ in range(500):   # more than the whole server holds
            try:
                held.append(connect_from("127.0.0.1", port))
            except OSError:
                break
        # Another client's health check and a logged-in user get through at once ...
        assert wait_for(lambda: health_from("127.0.0.2", port), 20, 0.2) == b"HTTP/1.1 200 OK"
        assert health_from("127.0.0.3", port, token="a-token-long-enough-1234") == \
            b"HTTP/1.1 200 OK"
        # ... and so does the holder itself, in the room of its own longest-idle connection.
        assert wait_for(lambda: health_from("127.0.0.1", port), 20, 0.2) == b"HTTP/1.1 200 OK"
    finally:
        for sock in held:
            sock.close()


def test_idle_connections_are_closed_sooner_when_the_server_fills(small_server):
    port, held = small_server, []
    try:
        for source in ("127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14"):
            for _ in range(100):   # each client its full share: the server is full
                held.append(connect_from(source, port))
        # Before: nothing was accepted until idle connections timed out after 60-70 s.
        assert wait_for(lambda: health_from("127.0.0.2", port), 30, 0.5) == b"HTTP/1.1 200 OK"
    finally:
        for sock in held:
            sock.close()
