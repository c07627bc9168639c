"""Execution: python and command runs record status, output, exit code and duration; timeouts
kill whole process groups; output is capped; retries; anything a job raises is a failed run."""

from __future__ import annotations

import logging
import os
import random
import time

import pytest

import task_scheduler as ts
import task_scheduler.models as ts_models
import task_scheduler.output as ts_output
from conftest import final_runs, wait_for

TASKS = '''
import logging
import sys
import time

def hello(name, punctuation="!"):
    print(f"hello {name}{punctuation}")
    print("to stderr", file=sys.stderr)
    logging.getLogger("tasks").warning("a log record")

def boom():
    raise ValueError("kaputt")

def leave():
    sys.exit(3)

def interrupt():
    raise KeyboardInterrupt

def slow(seconds):
    time.sleep(seconds)
'''


@pytest.fixture
def tasks(tmp_path):
    (tmp_path / "ts_test_tasks.py").write_text(TASKS)
    return tmp_path


def add(service, **definition):
    definition.setdefault("trigger", {"type": "interval", "hours": 1})
    return service.add_job(definition)


def run_and_wait(service, job_id, timeout=15.0):
    run = service.run_now(job_id)
    assert run["status"] == "queued" and run["trigger"] == "manual"
    wait_for(lambda: service.run(run["id"])["status"] in ts_models.FINAL_STATUSES, timeout,
             message=f"run of {job_id} to finish")
    service.flush()
    return service.run(run["id"])


def test_python_job_output_log_and_duration(tasks, service):
    add(service, id="hello", func="ts_test_tasks:hello", args=["world"],
        kwargs={"punctuation": "?"})
    run = run_and_wait(service, "hello")
    assert run["status"] == "succeeded"
    assert run["stdout"] == "hello world?\n"
    assert "to stderr" in run["stderr"] and "WARNING tasks: a log record" in run["stderr"]
    assert run["duration_s"] is not None and run["duration_s"] >= 0
    assert run["started_at"] <= run["finished_at"]


@pytest.mark.parametrize("func, error", [
    ("ts_test_tasks:boom", "ValueError: kaputt"),
    ("ts_test_tasks:leave", "SystemExit: 3"),
    ("ts_test_tasks:interrupt", "KeyboardInterrupt"),
])
def test_python_job_raising_anything_is_a_failed_run(tasks, service, func, error):
    add(service, id="bad", func=func)
    run = run_and_wait(service, "bad")
    assert run["status"] == "failed"
    assert run["error"].startswith(error) and "Traceback" in run["error"]
    assert service.health()[0], "a failing job must not harm the scheduler"


def test_command_job_status_output_exit_code(service):
    add(service, id="cmd", command="sh -c 'echo out; echo err >&2; exit 3'")
    run = run_and_wait(service, "cmd")
    assert (run["status"], run["exit_code"], run["error"]) == ("failed", 3, "exit code 3")
    assert (run["stdout"], run["stderr"]) == ("out\n", "err\n")
    ok = add(service, id="ok", command=["echo", "fine"], args=["and", "dandy"])
    assert ok["kind"] == "command"
    run = run_and_wait(service, "ok")
    assert (run["status"], run["exit_code"], run["stdout"]) == ("succeeded", 0, "fine and dandy\n")


def test_command_env_cwd_and_run_variables(tmp_path, service):
    (tmp_path / "work").mkdir()
    add(service, id="envjob", command='echo "$GREETING $TS_JOB_ID $(pwd)"', shell=True,
        env={"GREETING": "hi"}, cwd="work")
    run = run_and_wait(service, "envjob")
    assert run["stdout"].strip() == f"hi envjob {tmp_path / 'work'}"


def test_script_job_relative_to_jobs_folder(tmp_path, service):
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho \"script says $1\"\n")
    script.chmod(0o755)
    add(service, id="script", func="./script.sh", args=["moo"])
    run = run_and_wait(service, "script")
    assert (run["status"], run["stdout"]) == ("succeeded", "script says moo\n")


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:   # a zombie counts as gone
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_timeout_kills_the_whole_process_group(tmp_path, service):
    pidfile = tmp_path / "child.pid"
    add(service, id="hang", shell=True, timeout=1,
        command=f"sleep 300 & echo $! > {pidfile}; trap '' TERM; sleep 300")
    started = time.monotonic()
    run = run_and_wait(service, "hang", timeout=20)
    assert run["status"] == "timeout" and "timed out after 1s" in run["error"]
    assert time.monotonic() - started < 10
    child = int(pidfile.read_text())
    wait_for(lambda: not pid_alive(child), 5, message="the background child to be killed")


def test_output_is_capped_head_and_tail_kept(make_service):
    service = make_service(output_limit=1000)
    add(service, id="flood", shell=True,
        command="echo START; head -c 5000000 /dev/zero | tr '\\0' x; echo; echo END")
    run = run_and_wait(service, "flood")
    assert run["status"] == "succeeded" and run["truncated"] is True
    assert run["stdout"].startswith("START\n") and run["stdout"].endswith("END\n")
    assert "bytes truncated" in run["stdout"] and len(run["stdout"]) < 1200


def test_undecodable_output_is_replaced(service):
    add(service, id="binary", command=["printf", "ok \\377\\376 done"])
    run = run_and_wait(service, "binary")
    assert run["stdout"] == "ok \ufffd\ufffd done"


def test_missing_program_is_a_failed_run(tmp_path, service):
    script = tmp_path / "gone.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    add(service, id="gone", func="./gone.sh")
    script.unlink()
    run = run_and_wait(service, "gone")
    assert run["status"] == "failed" and run["exit_code"] == 127
    assert "cannot start" in run["error"]


@pytest.mark.both_databases
def test_retries_run_again_with_trigger_retry(service):
    add(service, id="flaky", command=["false"], retries={"max": 2, "delay": 0.1, "backoff": 2})
    service.run_now("flaky")
    runs = final_runs(service, "flaky", count=3)
    assert sorted((r["trigger"], r["attempt"]) for r in runs) == \
        [("manual", 1), ("retry", 2), ("retry", 3)]   # attempts count from 1, as the GUI says
    assert all(r["status"] == "failed" for r in runs)
    assert len({r["scheduled_at"] for r in runs}) == 1   # attempts of one fire


@pytest.mark.both_databases
def test_scheduled_runs_are_recorded(service):
    add(service, id="tick", command=["echo", "tick"], trigger={"type": "interval", "seconds": 0.3})

    def two_ran():   # on a loaded machine a fire may be skipped or coalesced (missed) between
        service.flush()
        ran = [r for r in service.runs(job_id="tick", limit=1000) if r["status"] == "succeeded"]
        return ran if len(ran) >= 2 else None
    runs = wait_for(two_ran, 30, message="two succeeded runs of tick")
    assert all(r["trigger"] == "schedule" and r["exit_code"] == 0 for r in runs)
    assert runs[0]["scheduled_at"] > runs[1]["scheduled_at"]   # newest first


@pytest.mark.both_databases
def test_overlapping_fires_are_skipped(service):
    add(service, id="long", command=["sleep", "2"], max_instances=1,
        trigger={"type": "interval", "seconds": 0.3})
    skipped = wait_for(lambda: service.flush() and service.runs(job_id="long", status="skipped"),
                       10, message="a skipped fire")
    assert "max_instances=1" in skipped[0]["error"]


@pytest.mark.both_databases
def test_manual_run_beyond_max_instances_is_a_conflict(service):
    add(service, id="busy", command=["sleep", "5"])
    first = service.run_now("busy")
    with pytest.raises(ts.JobConflict, match="already running"):
        service.run_now("busy")
    service.cancel(first["id"])


def test_cancel_kills_a_running_command(service):
    add(service, id="sleepy", command=["sleep", "60"])
    run = service.run_now("sleepy")
    wait_for(lambda: service.run(run["id"])["status"] == "running", 5)
    wait_for(lambda: service.runner.active[run["id"]].proc is not None, 5)
    service.cancel(run["id"])
    wait_for(lambda: service.run(run["id"])["status"] == "cancelled", 10)
    with pytest.raises(ts.JobConflict, match="not running"):
        service.cancel(run["id"])


def test_python_job_capture_is_per_thread(tasks, service):
    add(service, id="a", func="ts_test_tasks:hello", args=["a"], max_instances=5)
    add(service, id="b", func="ts_test_tasks:hello", args=["b"], max_instances=5)
    runs = [service.run_now(j) for j in ("a", "b", "a", "b")]
    for run in runs:
        wait_for(lambda r=run: service.run(r["id"])["status"] == "succeeded", 10)
        assert service.run(run["id"])["stdout"] == f"hello {run['job_id']}!\n"


def test_capped_output_unit():
    out = ts_output.CappedOutput(10)
    for chunk in (b"abc", b"defgh", b"ijklmnop", b"qrstuvwxyz"):
        out.write(chunk)
    text = out.text()
    assert text.startswith("abcde") and text.endswith("vwxyz") and out.truncated
    assert "[... 16 bytes truncated ...]" in text


def test_capped_output_says_truncated_however_the_bytes_were_read():
    """``truncated`` agrees with the stored text for every way of cutting the same bytes into
    reads: one big read (a loaded machine's pipe) once left it False under a cut text."""
    data = bytes(range(97, 123)) * 3   # 78 bytes
    rng = random.Random(7)
    for limit in (1, 10, 40, 77, 78, 200):
        for _ in range(200):
            out, at = ts_output.CappedOutput(limit), 0
            while at < len(data):
                step = rng.choice((1, 3, 20, 50, len(data)))
                out.write(data[at:at + step])
                at += step
            head, tail, total = out.parts()
            assert out.truncated == (total > len(head) + len(tail)) == \
                ("bytes truncated" in out.text()), (limit, head, tail)
            assert out.truncated == (len(data) > 2 * max(limit // 2, 1))


def test_setsid_grandchild_cannot_hold_a_timed_out_run_open(tmp_path, make_service):
    """A grandchild that calls setsid leaves the process group; it still carries TS_RUN_ID, so
    the timeout ends it too, and the run does not wait on the pipe it holds."""
    service = make_service(kill_grace=1)
    pidfile = tmp_path / "escaped.pid"
    add(service, id="escape", shell=True, timeout=1,
        command=f"setsid sh -c 'echo $$ > {pidfile}; sleep 300' & sleep 300")
    started = time.monotonic()
    run = run_and_wait(service, "escape", timeout=20)
    assert run["status"] == "timeout"
    assert time.monotonic() - started < 6, "the run waited on a pipe held by an escaped process"
    escaped = int(wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 5))
    wait_for(lambda: not pid_alive(escaped), 5, message="the setsid grandchild to be killed")


def test_daemon_left_by_a_successful_run_does_not_hold_it_open(tmp_path, make_service):
    """A run that ends normally but leaves a setsid daemon holding stdout is finished once its
    own process group is gone; the daemon is left alone and the run says what happened."""
    service = make_service(kill_grace=1)
    pidfile = tmp_path / "daemon.pid"
    add(service, id="daemonize", shell=True,
        command=f"echo before; setsid sh -c 'echo $$ > {pidfile}; sleep 30' &")
    started = time.monotonic()
    run = run_and_wait(service, "daemonize", timeout=20)
    daemon = int(wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 5))
    try:
        assert run["status"] == "succeeded" and run["stdout"] == "before\n"
        assert "still holds its output" in run["stderr"]
        assert time.monotonic() - started < 5
        assert pid_alive(daemon)
    finally:
        os.kill(daemon, 9)


LOGGER_TASKS = '''
import logging

def chatty(megabytes):
    line = "x" * 1000
    for _ in range(megabytes * 1000):
        logging.getLogger("chatty").warning(line)
'''


def test_python_job_logging_a_flood_is_capped_in_the_service_log(tmp_path, make_service):
    (tmp_path / "ts_test_logger.py").write_text(LOGGER_TASKS)
    service = make_service(output_limit=100_000)
    written = []

    class Counting(logging.Handler):
        def emit(self, record):
            written.append(len(record.getMessage()))
    handler = Counting()
    logging.getLogger().addHandler(handler)
    try:
        add(service, id="chatty", func="ts_test_logger:chatty", args=[5])
        run = run_and_wait(service, "chatty", timeout=60)
    finally:
        logging.getLogger().removeHandler(handler)
    assert run["status"] == "succeeded" and run["truncated"]
    chatty = sum(size for size in written if size == 1000)
    assert 50_000 < chatty <= 100_000, chatty   # 5 MB logged, the budget passed
    notes = [size for size in written if size != 1000]
    assert notes, "one line says how much was dropped"
