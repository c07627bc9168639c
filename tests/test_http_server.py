"""The HTTP server under load: many concurrent clients, many idle ones, a slowloris, IPv6.

The hand-written threaded server these replace left 54 of 200 concurrent clients timing out
(backlog 5), spent a thread on every idle connection, and let a client trickling header lines
hold a thread for hours. Each test here fails on that design."""

from __future__ import annotations

import contextlib
import http.client
import resource
import selectors
import socket
import threading
import time

import pytest
from conftest import wait_for

import task_scheduler as ts
import task_scheduler.http.server as ts_server

HEALTH = b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


@pytest.fixture(scope="module")
def file_limit():
    """Room for both ends of a few thousand loopback connections in this one process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 10_000 if hard == resource.RLIM_INFINITY else min(hard, 10_000)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    yield max(soft, wanted)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("http")
    (tmp / "jobs.yaml").write_text("[]\n")
    service = ts.SchedulerService(ts.Config(
        config_path=str(tmp / "jobs.yaml"), database_url=f"sqlite:///{tmp / 'ts.sqlite'}",
        watch=False, poll_interval=3600)).start()
    yield service
    service.stop(grace=1)


@pytest.fixture(scope="module")
def server(service, file_limit):
    server = ts.serve_in_thread(ts.create_app(service), "127.0.0.1", 0)
    yield server
    server.shutdown()


def exchange(address, requests: list, timeout: float) -> list:
    """Open one connection per request, all at once, send each request and read each answer
    until the server closes; an answer not complete within ``timeout`` is None."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    sel = selectors.DefaultSelector()
    answers, done = [b""] * len(requests), [False] * len(requests)
    for i in range(len(requests)):
        sock = socket.socket(family)
        sock.setblocking(False)
        sock.connect_ex(address)
        sel.register(sock, selectors.EVENT_WRITE, i)
    deadline = time.monotonic() + timeout
    try:
        while sel.get_map() and (left := deadline - time.monotonic()) > 0:
            for key, events in sel.select(left):
                sock, i = key.fileobj, key.data
                if events & selectors.EVENT_WRITE:
                    sock.sendall(requests[i])   # a few dozen bytes: the buffer takes them
                    sel.modify(sock, selectors.EVENT_READ, i)
                    continue
                chunk = sock.recv(65536)
                answers[i] += chunk
                if not chunk:
                    done[i] = True
                    sel.unregister(sock)
                    sock.close()
    finally:
        for key in list(sel.get_map().values()):
            key.fileobj.close()
    return [answer if ok else None for answer, ok in zip(answers, done, strict=True)]


def get(address, request: bytes = HEALTH, timeout: float = 10) -> bytes:
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_a_thousand_concurrent_connections_are_all_answered(server):
    """The old server: backlog 5, a thread per connection; about 400 of 1,000 timed out."""
    answers = exchange(("127.0.0.1", server.server_port), [HEALTH] * 1000, timeout=30)
    timed_out = sum(answer is None for answer in answers)
    statuses = {answer.split(b"\r\n", 1)[0] for answer in answers if answer is not None}
    assert timed_out == 0, f"{timed_out} of 1000 connections were not answered within 30 s"
    assert statuses == {b"HTTP/1.1 200 OK"}


def test_two_thousand_idle_connections_cost_no_thread(server):
    address = ("127.0.0.1", server.server_port)
    get(address)   # the server's threads exist from the start
    threads = threading.active_count()
    with contextlib.ExitStack() as stack:
        # From four client addresses: one address holds at most a quarter of the server's
        # connections (tests/test_starvation.py).
        idle = [stack.enter_context(socket.create_connection(
            address, timeout=10, source_address=(f"127.0.0.{2 + i % 4}", 0)))
                for i in range(2000)]
        get(address, timeout=30)   # answered once every idle connection before it is accepted
        latencies = []
        for _ in range(20):
            start = time.monotonic()
            assert get(address).startswith(b"HTTP/1.1 200 ")
            latencies.append(time.monotonic() - start)
        assert threading.active_count() <= threads + 1, "idle connections took threads"
        for sock in idle[:3] + idle[-3:]:   # they are live connections, served when they speak
            sock.sendall(HEALTH)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    latencies.sort()
    assert latencies[len(latencies) // 2] < 0.05, f"/api/health took {latencies} s"
    assert threading.active_count() <= threads + 1


def test_a_slowloris_holds_no_worker_thread(server):
    """More trickling clients than worker threads: other requests are answered meanwhile, and
    no thread is started for them (the old server started one each)."""
    address = ("127.0.0.1", server.server_port)
    get(address)
    threads = threading.active_count()
    slow = [socket.create_connection(address, timeout=10)
            for _ in range(2 * ts_server.HTTP_SETTINGS["threads"])]
    try:
        for sock in slow:
            sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        for line in range(5):
            for sock in slow:
                sock.sendall(f"X-Slow-{line}: {'x' * 50}\r\n".encode())
            assert get(address, timeout=5).startswith(b"HTTP/1.1 200 ")
        assert threading.active_count() <= threads + 1
        for sock in slow:   # the slow requests are whole at last: each gets its answer
            sock.sendall(b"Connection: close\r\n\r\n")
        for sock in slow:
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    finally:
        for sock in slow:
            sock.close()


def test_ipv6_loopback(service):
    if not socket.has_ipv6:
        pytest.skip("this Python has no IPv6")
    try:
        server = ts.serve_in_thread(ts.create_app(service), "::1", 0)
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    try:
        answers = exchange(("::1", server.server_port), [HEALTH] * 50, timeout=30)
        assert all(answer and answer.startswith(b"HTTP/1.1 200 ") for answer in answers)
    finally:
        server.shutdown()


def test_shutdown_ends_the_threads_and_closes_the_port(service):
    before = set(threading.enumerate())
    server = ts.serve_in_thread(ts.create_app(service), "127.0.0.1", 0)
    started = set(threading.enumerate()) - before
    assert len(started) == 1 + ts_server.HTTP_SETTINGS["threads"]   # the loop and the workers
    conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
    conn.request("GET", "/api/health")
    assert conn.getresponse().read() and conn.sock is not None   # kept alive
    server.shutdown()   # an open keep-alive connection does not hold it up
    assert conn.sock.recv(1) == b""
    conn.close()
    wait_for(lambda: not any(t.is_alive() for t in started), 5, message="the threads to end")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.server_port), timeout=10).close()
