"""What the service says when it starts and stops: no jobs.yaml is not an error, and the
shutdown's "waiting up to" counts down."""

from __future__ import annotations

import logging
import re
import signal
import urllib.request

import pytest

import task_scheduler as ts
from conftest import free_port, start_process, wait_for, write_jobs


def test_starting_without_jobs_yaml_is_not_an_error(tmp_path, make_service, caplog):
    caplog.set_level(logging.INFO, logger="task_scheduler")
    (tmp_path / "here").mkdir()
    missing = tmp_path / "here" / "jobs.yaml"
    service = make_service(config_path=str(missing))
    assert service.config_status()["error"] is None and service.config_status()["errors"] == []
    assert service.health()[0]
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert (logging.INFO, f"no jobs.yaml ({missing}), starting with none") in messages
    assert not [m for level, m in messages if level >= logging.ERROR or (
        level >= logging.WARNING and ("jobs.yaml" in m or "keeping" in m))], messages
    service.reload()   # the poll: still said once, still no error
    assert service.config_status()["error"] is None
    assert sum("no jobs.yaml" in r.getMessage() for r in caplog.records) == 1
    write_jobs(missing, "- {id: later, command: 'true', trigger: {type: interval, hours: 1}}\n")
    assert service.reload()["jobs"] == 1 and service.job("later")["source"] == "yaml"


@pytest.mark.slow
def test_the_cli_in_a_folder_without_jobs_yaml_starts_quietly(tmp_path):
    port = free_port()
    proc = start_process(["--port", str(port)], tmp_path)
    log = tmp_path / "service.log"
    try:
        wait_for(lambda: b"serving on" in log.read_bytes(), 30, 0.1, "the service")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=5) as resp:
            assert b'"error": null' in resp.read()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = log.read_text()
    assert "no jobs.yaml" in text and " ERROR " not in text and " WARNING " not in text, text


def test_the_shutdown_countdown_counts_down(tmp_path, make_config, caplog):
    """The grace, then TERM and KILL: one countdown of the time left (it said "up to 5s", then
    "up to 6s" when the kill phase began)."""
    caplog.set_level(logging.INFO, logger="task_scheduler")
    service = ts.SchedulerService(make_config(shutdown_grace=2, kill_grace=1)).start()
    pidfile = tmp_path / "pid"
    service.add_job({"id": "stubborn", "shell": True,
                     "command": f"echo $$ > {pidfile}; trap '' TERM; sleep 60"})
    service.run_now("stubborn")
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 10)
    service.stop()
    left = [int(m.group(1)) for r in caplog.records
            if (m := re.match(r"stopping: waiting up to (\d+)s", r.getMessage()))]
    assert len(left) >= 2 and left == sorted(left, reverse=True) and len(set(left)) == len(left), \
        left
