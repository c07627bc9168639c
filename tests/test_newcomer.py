"""A newcomer's path: the README's first command on the sample jobs.yaml serves /api/health and
the sample jobs record runs within a minute."""

from __future__ import annotations

import json
import shutil
import signal
import urllib.request

import pytest

from conftest import ROOT, free_port, start_process, wait_for


@pytest.mark.slow
def test_sample_service_serves_health_and_records_runs(tmp_path):
    shutil.copy(ROOT / "jobs.yaml", tmp_path / "jobs.yaml")
    (tmp_path / "docs").symlink_to(ROOT / "docs")   # the disabled backup example's script
    port = free_port()
    # Defaults otherwise: ./jobs.yaml and ./task_scheduler.sqlite in the working directory.
    proc = start_process(["--port", str(port)], tmp_path)

    def get(path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
                return json.load(resp)
        except OSError:
            return None
    try:
        health = wait_for(lambda: get("/api/health"), 30, 0.1, "the service to answer")
        assert health == {"status": "ok", "scheduler": "running", "db": "ok"}
        jobs = {j["id"]: j["state"] for j in get("/api/jobs")["jobs"]}
        assert jobs["nightly_backup"] == "disabled" and jobs["disk_usage"] == "scheduled"
        runs = wait_for(lambda: (get("/api/runs") or {}).get("runs"), 65, 0.5,
                        "the sample jobs to record a run")
        assert runs[0]["job_id"] in jobs
        assert (tmp_path / "task_scheduler.sqlite").exists()
        # The self check follows the port the service really listens on (not 8000).
        checks = wait_for(lambda: (get("/api/runs?job_id=self_health_check&status=succeeded,"
                                       "failed") or {}).get("runs"), 45, 0.5, "a self check")
        assert checks[0]["status"] == "succeeded", checks[0]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
