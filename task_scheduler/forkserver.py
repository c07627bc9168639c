"""The fork server of python jobs with ``isolation: process``: a clean python process, started on
the first such run (an idle service never pays for it), that forks one worker process per run.
The service itself is never forked (its threads, locks and database connections would be copied
half-held). This module knows processes and file descriptors only: what a worker does is the
function it is given (``executor.worker_main``), and what a run means is the runner's."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import pickle
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from typing import Optional
from collections.abc import Callable

log = logging.getLogger("task_scheduler")

# The fork server's environment carries this placeholder; a worker writes its run id over it in
# its own memory, so /proc/PID/environ shows TS_RUN_ID=<id> as a command's does: a restart after
# a crash finds and ends it (processes.run_processes), and so does kill_escaped. Run ids are 20
# characters; 64 leaves room.
RUN_ID_SLOT = "-" * 64
START_TIMEOUT = 30.0   # seconds the fork server may take to import the package on a busy machine
_STATUS = struct.Struct("!i")

# The fork server imports what a worker needs, not the whole package: the package's __init__
# (the service, HTTP, SQLAlchemy) runs only if a job imports task_scheduler itself. Each 20 MB
# less in the fork server is less to copy and to tear down per worker.
_BOOT = """
import importlib.util, json, sys, types
sys.path[:] = json.loads(sys.argv[2])
spec = importlib.util.find_spec("task_scheduler")
package = types.ModuleType("task_scheduler")
package.__spec__, package.__path__ = spec, list(spec.submodule_search_locations)
package.__file__, package.__package__ = spec.origin, "task_scheduler"
def whole(name):   # the real __init__, once a job asks for more than was imported
    del package.__getattr__
    spec.loader.exec_module(package)
    return getattr(package, name)
package.__getattr__ = whole
sys.modules["task_scheduler"] = package
from task_scheduler.forkserver import serve
serve(int(sys.argv[1]), sys.argv[3], float(sys.argv[4]))
"""


class ForkServerError(OSError):
    """The fork server could not be started or reached."""


class Worker:
    """One worker process as the runner sees it, shaped like ``subprocess.Popen`` where the
    runner and ``processes.kill_group`` look (``pid``, ``poll``, ``wait``): the worker is the
    fork server's child, so its exit status comes from the fork server over ``_job``."""

    def __init__(self, pid: int, job: socket.socket, pipes: dict):
        self.pid, self._job, self.pipes = pid, job, pipes   # pipes: name -> read end (file)
        self.returncode: Optional[int] = None
        self.lost = False          # the fork server ended before it told this worker's end
        self._lock = threading.Lock()

    def poll(self) -> Optional[int]:
        try:
            return self.wait(0)
        except subprocess.TimeoutExpired:
            return None

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ended():
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            if not self._lock.acquire(timeout=-1 if left is None else left):
                raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout)
            try:
                if not self._ended() and not self._read_status(left):
                    raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout)
            finally:
                self._lock.release()
        return self.returncode

    def _ended(self) -> bool:
        return self.returncode is not None or self.lost

    def _read_status(self, timeout: Optional[float]) -> bool:
        if not select.select([self._job], [], [], timeout)[0]:
            return False
        data = _recv_exactly(self._job, _STATUS.size)
        if data is None:
            self.lost = True
        else:
            self.returncode = _STATUS.unpack(data)[0]
        self._job.close()
        return True


class ForkServer:
    """The service's handle on its fork server: started by the first ``spawn``, ended by
    ``close`` (and by itself when this process dies: its socket closes). ``target`` names the
    function a worker runs, ``pkg.mod:func``, called as ``func(run_id, payload)`` -> exit code."""

    def __init__(self, target: str, kill_grace: float = 5.0):
        self._target, self._grace = target, kill_grace
        self._lock = threading.Lock()
        self._proc: Optional[subprocess.Popen] = None
        self._ctl: Optional[socket.socket] = None
        self._closed = False

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc is not None else None

    def spawn(self, run_id: str, payload: bytes) -> Worker:
        """A new worker for the run, sent ``payload`` (what to call); its output pipes are in
        ``pipes`` (``stdout``, ``stderr``, ``report``). Raises ForkServerError."""
        job, job_child = socket.socketpair()
        pipes = [os.pipe() for _ in range(3)]
        try:
            self._request(run_id, [job_child.fileno(), *(w for _, w in pipes)])
        except BaseException:
            job.close()
            for fd in (r for r, _ in pipes):
                os.close(fd)
            raise
        finally:
            job_child.close()
            for _, fd in pipes:
                os.close(fd)
        files = {name: os.fdopen(r, "rb", buffering=0)
                 for name, (r, _) in zip(("stdout", "stderr", "report"), pipes, strict=True)}
        job.settimeout(START_TIMEOUT)
        pid = _recv_exactly(job, _STATUS.size)
        if pid is None:
            job.close()
            for f in files.values():
                f.close()
            raise ForkServerError("the fork server ended before it started the worker")
        job.settimeout(None)
        worker = Worker(_STATUS.unpack(pid)[0], job, files)
        with contextlib.suppress(OSError):   # gone already (killed): its status says how
            job.sendall(payload)
            job.shutdown(socket.SHUT_WR)
        return worker

    def _request(self, run_id: str, fds: list) -> None:
        with self._lock:
            if self._closed:
                raise ForkServerError("the service is stopping")
            for attempt in (1, 2):   # a fork server that died is started again, once
                if self._proc is None or self._proc.poll() is not None:
                    self._start()
                try:
                    socket.send_fds(self._ctl, [run_id.encode()], fds)
                    return
                except OSError as exc:
                    if attempt == 2:
                        raise ForkServerError(f"cannot reach the fork server: {exc}") from exc
                    self._end(0)

    def _start(self) -> None:
        """A fresh interpreter (never a fork of this process), its environment without the
        service's TS_* variables, its sys.path this process's; it answers once it has imported
        what workers need."""
        self._end(0)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TS_")}
        env["TS_RUN_ID"] = RUN_ID_SLOT
        began = time.monotonic()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(theirs.fileno()), json.dumps(sys.path),
                 self._target, f"{self._grace:g}"], pass_fds=[theirs.fileno()], env=env,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True)
            # stdout: a sys.stdout a worker can point at its pipe even if the service has
            # none (a daemon); stderr stays the service's, for the fork server's own troubles
        except OSError as exc:
            ours.close()
            raise ForkServerError(f"cannot start {sys.executable}: {exc}") from exc
        finally:
            theirs.close()
        self._ctl = ours
        ours.settimeout(START_TIMEOUT)
        try:
            ready = ours.recv(16)
        except OSError:
            ready = b""
        ours.settimeout(None)
        if ready != b"ready":
            self._end(0)
            raise ForkServerError("the fork server did not start (see the service's stderr)")
        log.info("fork server for isolated python jobs started (pid %d) in %.0f ms",
                 self._proc.pid, (time.monotonic() - began) * 1000)

    def close(self, grace: float = 5.0) -> None:
        """End the fork server: its workers still running get TERM, KILL after ``grace``."""
        with self._lock:
            self._closed = True
            self._end(grace)

    def _end(self, grace: float) -> None:
        if self._ctl is not None:
            self._ctl.close()
            self._ctl = None
        if self._proc is not None:
            try:
                self._proc.wait(grace + 5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None


def _recv_exactly(sock: socket.socket, size: int) -> Optional[bytes]:
    data = b""
    while len(data) < size:
        try:
            chunk = sock.recv(size - len(data))
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    return data


# The fork server's side: it runs in its own interpreter, never in the service.

def serve(ctl_fd: int, target: str, grace: float = 5.0) -> None:
    """Fork a worker per request until the service's end of ``ctl_fd`` closes; then TERM the
    workers still running, KILL them after ``grace``, and exit."""
    module, _, name = target.partition(":")
    main = getattr(__import__(module, fromlist=[name]), name)   # imported once: workers share it
    ctl = socket.socket(fileno=ctl_fd)
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    workers: dict[int, int] = {}   # pid -> its job socket's fd (where its status goes)
    gc.freeze()   # a worker's collections never touch (so copy) the pages of what is imported
    ctl.send(b"ready")
    while True:
        try:
            readable = select.select([ctl, wake_r], [], [])[0]
        except InterruptedError:
            continue
        if wake_r in readable:
            os.read(wake_r, 4096)
        _reap(workers)
        if ctl in readable:
            try:
                message, fds, _, _ = socket.recv_fds(ctl, 256, 4)
            except OSError:
                message, fds = b"", []
            if not message:
                break
            _fork(message.decode(), fds, workers, (ctl.fileno(), wake_r, wake_w), main)
    _end_workers(workers, grace)


def _fork(run_id: str, fds: list, workers: dict, own: tuple, main: Callable) -> None:
    job, out, err, report = fds
    pid = os.fork()
    if pid == 0:   # the worker: never returns
        code = 70   # EX_SOFTWARE: what went wrong is on its stderr
        try:
            os.setpgid(0, 0)
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            for fd in (*own, *workers.values()):
                os.close(fd)
            os.dup2(out, 1)
            os.dup2(err, 2)
            for fd in (out, err):
                os.close(fd)
            _mark_environ(run_id)
            code = main(run_id, _read_all(job), report)
        except BaseException:   # anything at all: said on its stderr, the exit code tells
            traceback.print_exc()
        finally:
            with contextlib.suppress(BaseException):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
    with contextlib.suppress(OSError):
        os.setpgid(pid, pid)   # as the worker does: a kill of its group never misses it
    for fd in (out, err, report):
        os.close(fd)
    workers[pid] = job
    try:
        os.write(job, _STATUS.pack(pid))
    except OSError:
        pass   # the service gave up on it: it is reaped as any other


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def _reap(workers: dict) -> None:
    while workers:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        job = workers.pop(pid, None)
        if job is not None:
            with contextlib.suppress(OSError):
                os.write(job, _STATUS.pack(os.waitstatus_to_exitcode(status)))
            os.close(job)


def _end_workers(workers: dict, grace: float) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in list(workers):
            with contextlib.suppress(OSError):
                os.killpg(pid, sig)
        deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 1.0)
        while workers and time.monotonic() < deadline:
            time.sleep(0.02)
            _reap(workers)


def _mark_environ(run_id: str) -> None:
    """Write ``run_id`` over RUN_ID_SLOT in this process's initial environment block, the
    memory /proc/PID/environ shows (Linux; elsewhere nothing is shown anyway)."""
    try:
        with open("/proc/self/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        env_start = int(fields[47])   # field 50 of proc(5); this list starts at field 3
        with open("/proc/self/environ", "rb") as fh:
            at = fh.read().find(f"TS_RUN_ID={RUN_ID_SLOT}\0".encode())
        if at < 0 or len(run_id) > len(RUN_ID_SLOT):
            return
        with open("/proc/self/mem", "r+b", buffering=0) as mem:
            mem.seek(env_start + at + len("TS_RUN_ID="))
            mem.write(run_id.encode().ljust(len(RUN_ID_SLOT), b"\0"))
    except (OSError, IndexError, ValueError):
        pass   # not Linux, or /proc is not ours: the worker is found by its pid column only


def dumps(spec: dict) -> bytes:
    """What a worker is sent: pickled (args from YAML may hold dates JSON cannot)."""
    return pickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL)
