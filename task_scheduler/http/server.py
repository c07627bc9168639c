"""The HTTP server: waitress with bounded threads and connections, a per-client share of
connections, trusted proxies, started in a thread for tests and embedders."""

from __future__ import annotations

import collections
import contextlib
import logging
import resource
import socket
import threading
import time
import warnings

import waitress

from .guard import _in_networks, trusted_networks
from .io import MAX_BODY

log = logging.getLogger("task_scheduler")


HTTP_SETTINGS = {   # waitress's, each for a reason
    # Handlers mostly wait on the database (a cancel, up to the kill grace): 12 may wait while
    # others answer, within the database pool (SQLite 5+10, PostgreSQL 10+10) with room for the
    # scheduler's own use; more would only contend for the GIL. Further requests queue.
    "threads": 12,
    "connection_limit": 4000,   # idle connections cost a descriptor and a few KiB each
    "backlog": 2048,        # a burst of new connections waits in the kernel, not refused (the
                            # stdlib's 5 refused them); Linux caps it at net.core.somaxconn
    "channel_timeout": 60,  # an idle or stalled connection is closed after a minute,
    "cleanup_interval": 10,  # looked for every 10 s (waitress's 30 s made that up to 90 s)
    "ident": None,          # no Server header: no telling scanners the server and its version
    "asyncore_use_poll": True,   # select() cannot watch descriptors above 1023
    # No proxy is trusted with X-Forwarded-Host/-Proto: Bottle would build redirects and the
    # cookies' Secure flag from them. _proxy_headers drops them (and keeps X-Forwarded-For
    # aside for --trusted-proxies), not waitress, whose one trusted proxy would replace
    # REMOTE_ADDR for every request.
    "clear_untrusted_proxy_headers": False,
    # A body a little over MAX_BODY is read and gets the API's JSON 413; past this, waitress
    # answers a plain 413 at the headers without reading the body.
    "max_request_body_size": 4 * MAX_BODY,
    # What a client can make us hold in memory before the app (and its token check) sees the
    # request: browsers send under 8 KiB of headers; bodies past 64 KiB wait in a temp file.
    "max_request_header_size": 64 << 10,
    "inbuf_overflow": 64 << 10,
    "log_socket_errors": False,   # a client resetting its connection is not a server error
    # Send what the app writes at once: a live stream's small events would otherwise wait for
    # 18 KB; other answers are written in one piece anyway.
    "send_bytes": 1,
}


def make_server(app, host: str, port: int, trusted_proxies: tuple = ()) -> _HttpServer:
    """waitress on ``host:port``, listening when this returns. One thread reads and writes every
    connection and only complete requests reach the bounded pool of threads that run ``app``, so
    slow and idle clients cost a file descriptor, not a thread; no one client address (but a
    trusted proxy's) holds more than a quarter of the connections (``_ChannelGate``)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # restart at once, even
        sock.bind((host, port))                                      # with old connections
        return _HttpServer(app, sock, trusted_proxies)               # in TIME_WAIT
    except BaseException:
        sock.close()
        raise


def serve_in_thread(app, host: str = "127.0.0.1", port: int = 0) -> _HttpServer:
    """Serve ``app`` from a background thread; ``server.server_port`` tells the port."""
    server = make_server(app, host, port)
    threading.Thread(target=server.serve_forever, name="ts-http", daemon=True).start()
    return server


class _HttpServer:
    """waitress's server with the socketserver methods the CLI and the tests use:
    ``serve_forever()``, ``shutdown()`` from another thread (it returns once serving has
    stopped and the worker threads are gone), ``server_close()``."""

    def __init__(self, app, sock: socket.socket, trusted_proxies: tuple = ()):
        self.server_port = sock.getsockname()[1]
        self._map: dict = {}
        self._done = threading.Event()
        settings = {**HTTP_SETTINGS, "connection_limit": _connection_limit()}
        with warnings.catch_warnings():   # send_bytes is deprecated, and still what we need
            warnings.simplefilter("ignore", DeprecationWarning)
            self._server = waitress.create_server(_proxy_headers(app), map=self._map,
                                                  sockets=[sock], **settings)
        self._server.task_dispatcher.queue_logger = _QueueLog()
        # waitress makes each connection with server.channel_class(server, conn, addr, adj,
        # map=...): an instance attribute puts the gate in that one place.
        gate = _ChannelGate(settings["connection_limit"], trusted_networks(trusted_proxies))
        self._server.channel_class = gate
        maintenance = self._server.maintenance   # every cleanup_interval, even when full

        def sweep(now: float) -> None:
            maintenance(now)
            if len(self._server.active_channels) >= gate.pressure:
                gate.sweep(self._server)
        self._server.maintenance = sweep

    def serve_forever(self) -> None:
        try:
            self._server.run()   # until _close has emptied the socket map
        finally:
            self.server_close()

    def shutdown(self) -> None:
        with contextlib.suppress(OSError):   # the wake-up pipe is closed: serving has ended
            self._server.trigger.pull_trigger(self._close)   # runs in the serving thread
        self._done.wait()

    def server_close(self) -> None:
        self._close()
        self._server.task_dispatcher.shutdown()   # lets a running request finish, up to 5 s
        self._done.set()

    def _close(self) -> None:
        self._server.close()   # the listening socket and the wake-up pipe
        for channel in list(self._server.active_channels.values()):
            channel.handle_close()   # also wakes a worker thread waiting to write to it


class _ChannelGate:
    """Where waitress makes a connection's channel: a client address past its share of the
    connections (a quarter of the limit) gets room by closing its own longest-idle connection,
    or is closed at once; and once the server is three quarters full, connections idle for
    IDLE_UNDER_PRESSURE are closed (not after channel_timeout). One client holding thousands of
    idle connections so cannot keep a health check or another user out. Runs in the serving
    thread; channels close in it too, but a lock keeps the counts right whatever closes them."""

    def __init__(self, limit: int, trusted: tuple):
        self.per_client, self.pressure = max(limit // 4, 16), limit * 3 // 4
        self.trusted = trusted
        self.counts: collections.Counter = collections.Counter()
        self._lock = threading.Lock()
        self._next_sweep = self._quiet_until = 0.0

    def __call__(self, server, conn, addr, adj, map=None):
        client = addr[0] if isinstance(addr, tuple) else str(addr)
        if len(server.active_channels) >= self.pressure:
            self.sweep(server)
        with self._lock:
            full = self.counts[client] >= self.per_client
        if full and not _in_networks(client, self.trusted) and not self._evict(server, client):
            self._refuse(conn, client)
            return None
        channel = _GatedChannel(server, conn, addr, adj, map=map)
        channel.ts_gate, channel.ts_client = self, client
        with self._lock:
            self.counts[client] += 1
        return channel

    def left(self, client: str) -> None:
        with self._lock:
            self.counts[client] -= 1
            if self.counts[client] <= 0:
                del self.counts[client]

    def _evict(self, server, client: str) -> bool:
        cutoff = time.time() - 1   # a connection opened this very second is not idle yet
        idle = [c for c in list(server.active_channels.values())
                if getattr(c, "ts_client", None) == client and not c.requests
                and c.last_activity < cutoff]
        if not idle:
            return False
        min(idle, key=lambda c: c.last_activity).handle_close()
        return True

    def sweep(self, server) -> None:
        now = time.time()
        if now < self._next_sweep:
            return
        self._next_sweep = now + 1
        for channel in list(server.active_channels.values()):
            if not channel.requests and channel.last_activity < now - IDLE_UNDER_PRESSURE:
                channel.will_close = True   # as waitress's maintenance: the loop closes it

    def _refuse(self, conn, client: str) -> None:
        with contextlib.suppress(OSError):
            conn.close()
        if time.monotonic() >= self._quiet_until:   # once a minute: a flood is one line
            self._quiet_until = time.monotonic() + 60
            log.warning("%s holds %d connections, none of them idle: more are refused (at most "
                        "%d per client address; a reverse proxy belongs in --trusted-proxies)",
                        client, self.per_client, self.per_client)


class _GatedChannel(waitress.channel.HTTPChannel):
    def del_channel(self, map=None):
        gate = self.__dict__.pop("ts_gate", None)   # once, however often it is closed
        if gate is not None:
            gate.left(self.ts_client)
        super().del_channel(map)


IDLE_UNDER_PRESSURE = 5.0   # seconds an idle connection is kept once the server is 3/4 full


_PROXY_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_HOST", "HTTP_X_FORWARDED_PROTO",
                  "HTTP_X_FORWARDED_PORT", "HTTP_X_FORWARDED_BY", "HTTP_FORWARDED")


def _proxy_headers(app):
    """Forwarding headers never reach the app; X-Forwarded-For is kept aside as
    ``ts.forwarded_for``, which ``client_address`` believes from a trusted proxy only."""
    def strip(environ, start_response):
        environ["ts.forwarded_for"] = environ.get("HTTP_X_FORWARDED_FOR")
        for name in _PROXY_HEADERS:
            environ.pop(name, None)
        return app(environ, start_response)
    return strip


class _QueueLog:
    """waitress logs a warning for every request that waits for a worker thread: thousands of
    lines in a burst of clients, when a queue is how a bounded pool is meant to work. Only a
    lasting queue says something (too few threads, or slow handlers), so pass on one a minute."""

    def __init__(self):
        self.quiet_until = 0.0

    def warning(self, msg: str, *args) -> None:
        if time.monotonic() >= self.quiet_until:
            self.quiet_until = time.monotonic() + 60
            logging.getLogger("waitress.queue").warning(
                msg + " (requests wait for a free thread; shown once a minute at most)", *args)


def _connection_limit() -> int:
    """HTTP_SETTINGS' connection_limit within the limit on open files, raising the soft limit
    toward the hard one (systemd's default soft limit is 1024): past it accept() fails, and
    waitress retries it in a busy loop. 256 descriptors stay for the database, pipes and logs."""
    wanted = HTTP_SETTINGS["connection_limit"]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted + 256:
        soft = wanted + 256 if hard == resource.RLIM_INFINITY else min(wanted + 256, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return wanted if soft == resource.RLIM_INFINITY else max(64, min(wanted, soft - 256))
