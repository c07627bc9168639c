"""The fence watch: a tiny separate process that kills this node's commands when the node cannot
prove it still holds its runs (a partition or a frozen process), before another node rescues
them."""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import threading
import time
from typing import Optional

log = logging.getLogger("task_scheduler")


# Self-fencing. The leader gives a node's runs up (and retries them elsewhere) once their
# heartbeat is ``node_timeout`` old on the database clock. A node that cannot heartbeat ends
# its own command runs first: TERM at FENCE_AT of node_timeout after the last heartbeat that
# got through (counted from when it was sent, so never later than the database's stamp), KILL
# at FENCE_KILL. The rest of node_timeout is the margin for a slow kill and a late tick.
FENCE_AT = 0.5
FENCE_KILL = 0.7



_FENCE_WATCH = r"""
import os, select, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
kill_after, fd = float(sys.argv[1]), sys.stdin.fileno()
groups, termed, deadline, buf = set(), set(), float("inf"), b""
def end(pgids, sig):
    for pgid in pgids:
        try:
            os.killpg(pgid, sig)
        except OSError:
            pass
while True:
    if select.select([fd], [], [], 0.1)[0]:
        data = os.read(fd, 65536)
        if not data:
            if groups:
                end(groups, signal.SIGTERM)
                time.sleep(min(kill_after, 1.0))
                end(groups, signal.SIGKILL)
            break
        *lines, buf = (buf + data).split(b"\n")
        for line in lines:
            op, _, arg = line.partition(b" ")
            if op == b"D":
                deadline, termed = float(arg), set()
            elif op == b"+":
                groups.add(int(arg))
            elif op == b"-":
                groups.discard(int(arg))
    now = time.monotonic()
    if now >= deadline and groups:
        end(groups - termed, signal.SIGTERM)
        termed |= groups
        if now >= deadline + kill_after:
            end(groups, signal.SIGKILL)
            groups.clear()
"""


class _FenceWatch:
    """A tiny process beside this node (python -S, no imports of ours) that ends the process
    groups of this node's command runs when the node stops heart-beating them: past the
    fencing deadline it sends TERM, ``kill_after`` seconds later KILL; when this node dies
    (its pipe closes) at once. It acts while this process cannot: paused (SIGSTOP) or dead."""

    def __init__(self, kill_after: float):
        self._lock = threading.Lock()
        self._broken = False
        self._proc = subprocess.Popen([sys.executable, "-S", "-c", _FENCE_WATCH,
                                       f"{kill_after:g}"], stdin=subprocess.PIPE,
                                      start_new_session=True, close_fds=True)

    def deadline(self, at: float) -> None:
        self._send(f"D {at!r}")

    def add(self, pgid: int) -> None:
        self._send(f"+ {pgid}")

    def remove(self, pgid: int) -> None:
        self._send(f"- {pgid}")

    def close(self) -> None:
        with self._lock, contextlib.suppress(OSError):
            self._proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(3)

    def _send(self, line: str) -> None:
        with self._lock:
            try:
                self._proc.stdin.write(line.encode() + b"\n")
                self._proc.stdin.flush()
            except (OSError, ValueError) as exc:   # it died, or was closed at stop
                if not self._broken:
                    log.error("fence watch: cannot reach it (%s); runs of this node are not "
                              "ended by it if this node pauses", exc)
                self._broken = True


class Fencing:
    """This node's self-fencing deadline (monotonic): FENCE_AT of ``node_timeout`` after the
    last heartbeat that got through, told to the fence watch (on PostgreSQL only: on SQLite no
    other node can give this node's runs up, and the deadline stays at infinity)."""

    def __init__(self, node: str, node_timeout: float):
        self.node, self.node_timeout = node, node_timeout
        self.at = float("inf")
        self.watch: Optional[_FenceWatch] = None

    def start(self) -> None:
        try:
            self.watch = _FenceWatch(self.node_timeout * (FENCE_KILL - FENCE_AT))
        except OSError as exc:
            log.error("fence watch: cannot start %s (%s); this node's commands are ended "
                      "by itself only, not while it is paused", sys.executable, exc)

    def due(self) -> bool:
        return time.monotonic() >= self.at

    def heard(self, heartbeat_sent: float) -> None:
        """A heartbeat sent at ``heartbeat_sent`` (monotonic) got through: a new deadline."""
        self.at = heartbeat_sent + self.node_timeout * FENCE_AT
        if self.watch is not None:
            self.watch.deadline(self.at)

    def silent(self) -> float:
        """Seconds since the last heartbeat that got through was sent."""
        return time.monotonic() - self.at + self.node_timeout * FENCE_AT

    def reason(self) -> str:
        return (f"interrupted: node {self.node} could not heartbeat for {self.silent():.0f}s "
                f"(database unreachable, or the node paused), so it ended the run itself "
                f"before another node could give it up (self-fencing)")

    def release(self, pgid: int) -> None:
        if self.watch is not None:
            self.watch.remove(pgid)

    def close(self) -> None:
        if self.watch is not None:
            self.watch.close()
