"""Process groups of command runs: finding, signalling and reaping them, including the leftovers of
a previous life of this node (found by TS_RUN_ID in /proc)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from typing import Optional

log = logging.getLogger("task_scheduler")


def _signal_reaches(send, target: int) -> bool:
    """Whether signal 0 sent by ``send`` (os.kill, os.killpg) finds ``target``: another
    user's process exists too, though we may not signal it."""
    try:
        send(target, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _group_alive(pgid: int) -> bool:
    return _signal_reaches(os.killpg, pgid)


def kill_escaped(run_id: Optional[str], grace: float) -> int:
    """TERM, then KILL, the processes of this user that carry ``TS_RUN_ID=run_id`` in their
    environment: descendants of a run that left its process group. Linux only (/proc); a
    process that cleared its environment is not found. Returns how many were signalled."""
    if not run_id or not os.path.isdir("/proc"):
        return 0
    needle = f"TS_RUN_ID={run_id}\0".encode()
    pids = [pid for pid in _proc_pids() if pid != os.getpid() and needle in _environ_of(pid)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while sig == signal.SIGTERM and time.monotonic() < deadline and any(
                _pid_alive(p) for p in pids):
            time.sleep(0.05)
    if pids:
        log.info("run %s: ended %d processes that had left its process group", run_id,
                 len(pids))
    return len(pids)


def run_processes() -> dict[str, list[int]]:
    """The processes of this user that carry a ``TS_RUN_ID`` (runs' commands and what they
    started), by run id; Linux only (/proc)."""
    found: dict[str, list[int]] = {}
    if not os.path.isdir("/proc"):
        return found
    for pid in _proc_pids():
        if pid == os.getpid():
            continue
        for entry in _environ_of(pid).split(b"\0"):
            if entry.startswith(b"TS_RUN_ID="):
                found.setdefault(entry[10:].decode("utf-8", "replace"), []).append(pid)
                break
    return found


def end_processes(pids: list[int], grace: float) -> list[int]:
    """TERM the process groups of ``pids`` and the processes themselves, KILL what is left
    after ``grace`` seconds; never this service's own group. Returns the groups signalled."""
    own = os.getpgrp()
    groups = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            groups.add(os.getpgid(pid))
    groups -= {own, 0, 1}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for group in groups:
            _signal_group(group, sig)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_pid_alive(p) for p in pids):
            time.sleep(0.05)
        if not any(_pid_alive(p) for p in pids):
            break
    return sorted(groups)


def _proc_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _environ_of(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return fh.read() + b"\0"
    except OSError:   # gone, or another user's
        return b""


def _pid_alive(pid: int) -> bool:
    return _signal_reaches(os.kill, pid) and os.path.exists(f"/proc/{pid}") \
        and not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return False


def kill_group(proc: subprocess.Popen, grace: float) -> None:
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass  # still alive after TERM: KILL follows
    _signal_group(proc.pid, signal.SIGKILL)   # also children that ignored TERM


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        log.debug("process group %d already gone", pgid)


def _command_status(code: int, timed_out: bool, stop_reason: Optional[str], timeout) -> tuple:
    if stop_reason == "cancelled":
        return "cancelled", code, "cancelled by request"
    if stop_reason == "interrupted":
        return "interrupted", code, "the service stopped; process group killed"
    if timed_out:
        return "timeout", code, f"timed out after {timeout:g}s; process group killed"
    if code == 0:
        return "succeeded", 0, None
    if code < 0:
        return "failed", code, f"killed by signal {signal.Signals(-code).name}"
    return "failed", code, f"exit code {code}"
