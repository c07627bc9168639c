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

import task_scheduler as ts
from conftest import wait_for

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
    streams = [open_stream(live_server, run["id"]) for _ in range(ts.MAX_STREAMS)]
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
            ts._signal_group(service.runner.active[run["id"]].proc.pid, 9)

