"""isolation: process (issue 25 item 5): a python job run in a worker process forked by the fork
server, so that cancel and timeout end it as they end a command; its result, exception, output,
arguments and environment as in a thread; a crash of the worker, a child it started, the stop of
the service and a crash of the service leave no process behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

import task_scheduler as ts
import task_scheduler.models as ts_models
from conftest import free_port, wait_for, write_jobs
from task_scheduler.processes import _pid_alive
from test_run_records import _call, _fence_watches, _run_pids, _serve, _stored_pid

JOBS = """
import logging, os, signal, subprocess, sys, time

def forever(pidfile):
    with open(pidfile, "w") as fh:
        fh.write(str(os.getpid()))
    while True:
        time.sleep(0.01)

def add(a, b=0, *, scale=1):
    print("adding", a, b)
    logging.getLogger("isojobs").warning("about to add")
    return {"sum": (a + b) * scale, "foo": os.environ.get("FOO"),
            "run": os.environ.get("TS_RUN_ID"), "job": os.environ.get("TS_JOB_ID"),
            "token": os.environ.get("TS_API_TOKEN"), "cwd": os.getcwd(),
            "pid": os.getpid()}

def boom():
    print("before the boom")
    raise ValueError("bad thing")

def crash(how):
    if how == "exit":
        os._exit(3)
    os.kill(os.getpid(), signal.SIGSEGV)

def talk(gate):
    print("first line", flush=False)   # line-buffered in a worker: shows at once
    sys.stderr.write("a warning\\n")
    while not os.path.exists(gate):
        time.sleep(0.02)
    print("last line")
    return "done"

def parent(pidfile, escape=False):
    child = subprocess.Popen(["sleep", "100"], start_new_session=escape)
    with open(pidfile, "w") as fh:
        fh.write(f"{os.getpid()} {child.pid}")
    while True:
        time.sleep(0.01)

def leaky(token):
    print("the token is", token)
    return {"token": token}

def ok():
    return 1

def whoami():
    from task_scheduler import current_run   # the package as a job sees it in a worker
    run = current_run()
    return [run.run_id, run.job_id, run.service is None]
"""

TOKEN = "isolation-token-0123456789abcdef"


@pytest.fixture
def isojobs(tmp_path):
    (tmp_path / "isojobs.py").write_text(JOBS)
    yield "isojobs"
    sys.modules.pop("isojobs", None)


def start(service, **job) -> str:
    job.setdefault("isolation", "process")
    job.setdefault("trigger", {"type": "manual"})
    service.add_job(job)
    return service.run_now(job["id"])["id"]


def ended(service, run_id: str, timeout: float = 15) -> dict:
    def final():
        service.flush()
        run = service.run(run_id)
        return run if run["status"] in ts_models.FINAL_STATUSES else None
    return wait_for(final, timeout, message=f"the end of run {run_id}")


def pids_in(path, count=1) -> list[int]:
    text = wait_for(lambda: path.exists() and path.read_text().strip(), 15,
                    message=f"{path} written")
    pids = [int(p) for p in text.split()]
    assert len(pids) == count
    return pids


def start_forever(service, tmp_path, **job) -> tuple[str, int]:
    """Start a run of ``forever``: its id and its worker's pid (once the worker runs)."""
    pidfile = tmp_path / "forever.pid"
    run_id = start(service, id="forever", func="isojobs:forever",
                   kwargs={"pidfile": str(pidfile)}, **job)
    [pid] = pids_in(pidfile)
    return run_id, pid


def gone(pids, within: float, what: str) -> None:
    wait_for(lambda: not any(_pid_alive(p) for p in pids), within, 0.01, what)


# -- stopping it: cancel, timeout -----------------------------------------------------------

@pytest.mark.both_databases
def test_cancel_ends_a_python_job_that_loops_forever(make_service, isojobs, tmp_path):
    service = make_service()
    run_id, pid = start_forever(service, tmp_path)
    wait_for(lambda: service.run(run_id)["status"] == "running", 10)
    service.cancel(run_id)
    gone([pid], 2, "the worker ended by the cancel (TERM: it does not catch it)")
    run = ended(service, run_id)
    assert run["status"] == "cancelled" and run["error"] == "cancelled by request"
    assert run["exit_code"] == -signal.SIGTERM
    service.flush()
    assert service.store.queries.run(run_id).pid == pid   # recorded like a command's group


@pytest.mark.both_databases
def test_timeout_ends_a_python_job_that_loops_forever(make_service, isojobs, tmp_path):
    service = make_service()
    run_id, pid = start_forever(service, tmp_path, timeout=0.5)
    run = ended(service, run_id)
    assert run["status"] == "timeout"
    assert run["error"] == "timed out after 0.5s; process group killed"
    assert not _pid_alive(pid)


def test_a_thread_job_still_cannot_be_cancelled_and_says_what_can(make_service, isojobs,
                                                                   tmp_path):
    service = make_service()
    gate = tmp_path / "gate"
    run_id = start(service, id="talk", func=f"{isojobs}:talk", isolation="thread",
                   kwargs={"gate": str(gate)})
    wait_for(lambda: service.run(run_id)["status"] == "running", 10)
    with pytest.raises(ts.JobConflict, match="isolation: process"):
        service.cancel(run_id)
    gate.write_text("")
    assert ended(service, run_id)["status"] == "succeeded"


def test_a_child_the_job_started_is_ended_with_it(make_service, isojobs, tmp_path):
    service = make_service()
    runs = {}
    for escape in (False, True):   # in its process group, and one that left it (setsid)
        pidfile = tmp_path / f"parent-{escape}.pid"
        run_id = start(service, id=f"parent{int(escape)}", func=f"{isojobs}:parent",
                       kwargs={"pidfile": str(pidfile), "escape": escape})
        runs[run_id] = pids_in(pidfile, 2)
    for run_id, pids in runs.items():
        service.cancel(run_id)
        gone(pids, 5, "the worker and the sleep it started")
        assert ended(service, run_id)["status"] == "cancelled"


# -- what it gives back: result, exception, output -------------------------------------------

@pytest.mark.both_databases
def test_result_arguments_and_environment_of_a_worker(make_service, isojobs, tmp_path):
    service = make_service(token=TOKEN)
    (tmp_path / "work").mkdir()
    run_id = start(service, id="add", func=f"{isojobs}:add", args=[2], kwargs={"b": 3},
                   env={"FOO": "bar"}, cwd="work")
    run = ended(service, run_id)
    assert run["status"] == "succeeded" and run["exit_code"] == 0 and run["error"] is None
    result = run["result"]
    assert result["sum"] == 5 and result["foo"] == "bar" and result["job"] == "add"
    assert result["run"] == run_id and result["token"] is None   # the service's own: never
    assert result["cwd"] == str(tmp_path / "work") and result["pid"] != os.getpid()
    assert run["stdout"] == "adding 2 3\n"
    assert "WARNING isojobs: about to add" in run["stderr"]
    again = service.run_now("add", {"args": [10], "kwargs": {"scale": 2},
                                    "env": {"FOO": "baz"}})["id"]
    result = ended(service, again)["result"]   # kwargs and env merged over the job's
    assert result["sum"] == 26 and result["foo"] == "baz"


def test_current_run_in_a_worker(make_service, isojobs):
    service = make_service()
    run_id = start(service, id="whoami", func=f"{isojobs}:whoami")
    assert ended(service, run_id)["result"] == [run_id, "whoami", True]


def test_a_secret_in_the_result_and_output_is_masked(make_service, isojobs):
    service = make_service(token=TOKEN)
    run = ended(service, start(service, id="leaky", func=f"{isojobs}:leaky",
                               kwargs={"token": TOKEN}))
    assert run["result"] == {"token": "***"} and run["stdout"] == "the token is ***\n"


@pytest.mark.both_databases
def test_an_exception_fails_the_run_with_its_traceback(make_service, isojobs):
    service = make_service()
    run = ended(service, start(service, id="boom", func=f"{isojobs}:boom"))
    assert run["status"] == "failed" and run["exit_code"] == 1
    assert run["error"].startswith("ValueError: bad thing\nTraceback (most recent call last)")
    assert 'in boom\n    raise ValueError("bad thing")' in run["error"]
    assert "executor.py" not in run["error"]   # the job's frames, not the service's
    assert run["stdout"] == "before the boom\n"
    assert run["stderr"].startswith("Traceback") and "ValueError: bad thing" in run["stderr"]


def test_output_shows_while_the_worker_runs(make_service, isojobs, tmp_path):
    service = make_service()
    gate = tmp_path / "gate"
    run_id = start(service, id="talk", func=f"{isojobs}:talk", kwargs={"gate": str(gate)})
    wait_for(lambda: service.output(run_id, "stdout")["text"] == "first line\n"
             and service.output(run_id, "stderr")["text"] == "a warning\n", 10,
             message="the first lines while it runs")
    assert service.run(run_id)["status"] == "running"
    gate.write_text("")
    run = ended(service, run_id)
    assert run["stdout"] == "first line\nlast line\n" and run["result"] == "done"


@pytest.mark.parametrize("how, code, error", [
    ("exit", 3, "exit code 3"), ("segfault", -11, "killed by signal SIGSEGV")])
def test_a_worker_that_dies_fails_the_run_with_its_exit_code(make_service, isojobs, how,
                                                              code, error):
    service = make_service()
    run = ended(service, start(service, id=f"crash-{how}", func=f"{isojobs}:crash",
                               kwargs={"how": how}))
    assert (run["status"], run["exit_code"], run["error"]) == ("failed", code, error)
    assert ended(service, service.run_now(f"crash-{how}")["id"])["exit_code"] == code
    again = ended(service, start(service, id="ok", func=f"{isojobs}:ok"))   # and it goes on
    assert again["status"] == "succeeded" and again["result"] == 1


def test_a_func_that_no_longer_imports_fails_clearly(make_service, isojobs, tmp_path):
    service = make_service()
    service.add_job({"id": "ok", "func": f"{isojobs}:ok", "isolation": "process",
                     "trigger": {"type": "manual"}})
    (tmp_path / "isojobs.py").write_text("def ok(:\n")   # broken after validation
    run = ended(service, service.run_now("ok")["id"])
    assert run["status"] == "failed" and run["exit_code"] == 1
    assert run["error"].startswith("func: cannot import module 'isojobs': ")


# -- the service's stop, its crash ----------------------------------------------------------

def test_stopping_the_service_leaves_no_process(make_service, isojobs, tmp_path):
    service = make_service()
    run_id, pid = start_forever(service, tmp_path)
    server = service.runner._p.forkserver.pid
    assert server is not None and _pid_alive(server)
    service.stop(grace=0.2)
    assert not _pid_alive(pid) and not _pid_alive(server)
    row = service.store.queries.run(run_id)
    assert row.status == "interrupted"
    assert row.error == "the service stopped; process group killed"   # as a command


def test_a_fork_server_that_died_is_started_again(make_service, isojobs):
    service = make_service()
    assert ended(service, start(service, id="ok", func=f"{isojobs}:ok"))["status"] == "succeeded"
    server = service.runner._p.forkserver.pid
    os.kill(server, signal.SIGKILL)
    gone([server], 5, "the fork server")
    run = ended(service, service.run_now("ok")["id"])
    assert run["status"] == "succeeded" and run["result"] == 1
    assert service.runner._p.forkserver.pid not in (None, server)


def test_a_worker_whose_fork_server_died_is_ended_and_failed(make_service, isojobs, tmp_path):
    service = make_service()
    run_id, pid = start_forever(service, tmp_path)
    os.kill(service.runner._p.forkserver.pid, signal.SIGKILL)
    run = ended(service, run_id)
    assert run["status"] == "failed"
    assert run["error"] == "the fork server ended while the worker ran; its worker was ended"
    assert not _pid_alive(pid)


def test_an_idle_service_starts_no_fork_server(make_service, isojobs):
    service = make_service()
    ended(service, start(service, id="thread", func=f"{isojobs}:ok", isolation="thread"))
    assert service.runner._p.forkserver.pid is None


@pytest.mark.slow
@pytest.mark.both_databases
def test_a_crashed_service_leaves_no_worker(tmp_path, database_url, isojobs):
    """kill -9 of the service: its fork server sees its socket close and ends the workers.
    kill -9 of both (the fork server first): the next start finds the worker by its TS_RUN_ID
    as it finds a command's processes, and ends it."""
    write_jobs(tmp_path / "jobs.yaml", f"""
        - {{id: forever, func: '{isojobs}:forever', isolation: process, max_instances: 2,
            kwargs: {{pidfile: '{tmp_path}/forever.pid'}}, trigger: {{type: manual}}}}
    """)
    port = free_port()
    proc = _serve(tmp_path, database_url, port)
    try:
        first = _call(port, "/api/jobs/forever/run", "POST")["run"]["id"]
        wait_for(lambda: _run_pids([first]), 30, 0.05, "the worker with its TS_RUN_ID")
        [worker] = _run_pids([first])[first]
        server = _parent_of(worker)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        gone([worker, server], 10, "the fork server and its worker after the crash")

        proc = _serve(tmp_path, database_url, port)
        second = _call(port, "/api/jobs/forever/run", "POST")["run"]["id"]
        wait_for(lambda: _run_pids([second]), 30, 0.05, "the worker with its TS_RUN_ID")
        [worker] = _run_pids([second])[second]
        wait_for(lambda: _stored_pid(database_url, second) == worker, 30, 0.05,
                 "the worker's pid recorded")
        proc.send_signal(signal.SIGSTOP)   # it must not see the fork server go
        for watch in _fence_watches(proc.pid):   # PostgreSQL: it would end the worker too
            os.kill(watch, signal.SIGKILL)
        os.kill(_parent_of(worker), signal.SIGKILL)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert _pid_alive(worker), "left running by the double crash (what is to be fixed)"
        proc = _serve(tmp_path, database_url, port)
        gone([worker], 10, "the orphaned worker, ended at the restart")
        run = _call(port, f"/api/runs/{second}")
        assert run["status"] == "interrupted"
        assert f"its process group {worker} was still running" in run["error"]
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        for pids in _run_pids([locals().get("first"), locals().get("second")]).values():
            for pid in pids:
                os.kill(pid, signal.SIGKILL)


def _parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


# -- validation ----------------------------------------------------------------------------

def test_isolation_is_for_python_jobs_and_takes_two_values(service, isojobs):
    with pytest.raises(ts.InvalidJob) as caught:
        service.add_job({"id": "cmd", "command": "true", "isolation": "process"})
    assert caught.value.details == [{"field": "isolation", "line": None, "message": (
        "is for python jobs only: a command job always runs as a process of its own (cancel "
        "and timeout end it)")}]
    with pytest.raises(ts.InvalidJob) as caught:
        service.add_job({"id": "py", "func": f"{isojobs}:ok", "isolation": "fork"})
    [detail] = caught.value.details
    assert detail["field"] == "isolation" and "'thread' or 'process'" in detail["message"]
    assert "'fork'" in detail["message"]
    service.add_job({"id": "py", "func": f"{isojobs}:ok", "isolation": "thread"})
    assert service.job("py")["isolation"] == "thread"

