"""Make ``db-main-11b5a2a.sqlite``: a database as today's code leaves it, for
tests/test_old_database.py ("databases written by main keep loading", issue 21).

The committed file was made by this script run with ``task_scheduler.py`` of commit 11b5a2a
(main before the split into a package), Python 3, APScheduler 3.11, SQLite, timezone UTC:

    python tests/data/make_old_db.py          # from the repository root

Do not re-run it after the split: the point of the file is that *old* code wrote it. Its
APScheduler rows (table ``ts_apscheduler_jobs``) hold pickles naming ``task_scheduler:execute_job``
and trigger classes pickled under the module name ``task_scheduler``; our ``ts_*`` tables hold job
definitions (JSON), runs with their output, retries, notifications, nodes and the lease.

What it holds (the test asserts this, keep both in step):

- from jobs.yaml (``db-main-11b5a2a.jobs.yaml``, written next to it from ``JOBS_YAML`` below):
  ``yaml_cron_tz`` (cron fields, Europe/Berlin, retries, timeout), ``yaml_crontab`` (a crontab
  line, America/New_York, shell), ``yaml_interval`` (python, every 2 s: has scheduled runs),
  ``yaml_disabled`` (is_enabled false, ``task_scheduler:http_check``), ``yaml_manual`` (no
  trigger, env), ``yaml_date_future`` (date in 3026), ``yaml_notify`` (fails; retries; a webhook
  with a secret)
- from the API (``service.add_job``): ``api_python`` (interval, args and kwargs),
  ``api_cron_paused`` (crontab line, paused), ``api_date_fired`` (a date that fired while this
  script ran: finished), ``api_date_future`` (date with a timezone), ``api_fails`` (python, manual,
  raises), ``api_jitter`` (interval with start_date and jitter, max_instances 2, coalesce false,
  misfire_grace_time null)
- runs: manual runs with stdout and stderr, one with params, a rerun, failures with tracebacks, a
  retry (attempt 2), scheduled runs of the interval job and the fired date job.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))   # the checkout's task_scheduler, not an installed one

from task_scheduler import FINAL_STATUSES, Config, SchedulerService  # noqa: E402

NAME = "db-main-11b5a2a"
NODE = "old-main-node"

JOBS_YAML = """\
# jobs.yaml of the old-database fixture (tests/data/make_old_db.py)
defaults:
  misfire_grace_time: 300

jobs:
  - id: yaml_cron_tz
    command: ['sh', '-c', 'echo cron-out']
    description: 'cron fields in a time zone'
    tags: [reports]
    trigger: {type: cron, day_of_week: 'mon-fri', hour: '9', minute: '15',
              timezone: Europe/Berlin}
    timeout: 30
    retries: {max: 2, delay: 60, backoff: 2}

  - id: yaml_crontab
    command: 'echo crontab-out; echo crontab-err >&2'
    shell: true
    trigger: {type: cron, expression: '30 2 * * *', timezone: America/New_York}

  - id: yaml_interval
    func: 'builtins:print'
    args: ['tick']
    tags: [fast]
    trigger: {type: interval, seconds: 2}

  - id: yaml_disabled
    func: 'task_scheduler:http_check'
    kwargs: {url: '/api/health', timeout: 5}
    is_enabled: false
    trigger: {type: cron, expression: '0 * * * *'}

  - id: yaml_manual
    command: ['sh', '-c', 'echo "$GREETING" "$@"', 'sh']
    env: {GREETING: hello}

  - id: yaml_date_future
    command: ['true']
    trigger: {type: date, run_date: '3026-01-01 00:00:00'}

  - id: yaml_notify
    command: ['sh', '-c', 'echo about to fail; echo failing >&2; exit 3']
    retries: {max: 1, delay: 1}
    notify:
      - {webhook: 'http://127.0.0.1:9/hook', secret: 's3cret', on: [failed]}
"""


def wait(predicate, timeout=30.0, what=""):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def final(service, run_id):
    return service.run(run_id)["status"] in FINAL_STATUSES


def main() -> int:
    out = HERE / f"{NAME}.sqlite"
    jobs_yaml = HERE / f"{NAME}.jobs.yaml"
    jobs_yaml.write_text(JOBS_YAML)
    work = Path(tempfile.mkdtemp(prefix="ts-old-db-"))
    config = Config(config_path=str(jobs_yaml), database_url=f"sqlite:///{work / 'ts.sqlite'}",
                    timezone="UTC", node=NODE, watch=False, poll_interval=3600,
                    shutdown_grace=5, kill_grace=1)
    service = SchedulerService(config).start()
    try:
        add = service.add_job
        add({"id": "api_python", "func": "builtins:print", "args": ["hello", "api"],
             "kwargs": {"sep": ", "}, "tags": ["api"],
             "trigger": {"type": "interval", "minutes": 10}})
        add({"id": "api_cron_paused", "command": ["echo", "paused"],
             "trigger": {"type": "cron", "expression": "0 * * * *"}})
        service.pause("api_cron_paused")
        soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
        add({"id": "api_date_fired", "command": ["sh", "-c", "echo fired-once"],
             "trigger": {"type": "date", "run_date": soon.isoformat()}})
        add({"id": "api_date_future", "command": ["true"], "description": "far away",
             "trigger": {"type": "date", "run_date": "2099-06-01 12:00:00",
                         "timezone": "Asia/Tokyo"}})
        add({"id": "api_fails", "func": "builtins:int", "args": ["not a number"]})
        add({"id": "api_jitter", "command": ["true"], "max_instances": 2, "coalesce": False,
             "misfire_grace_time": None, "run_on": [],
             "trigger": {"type": "interval", "hours": 1, "jitter": 5,
                         "start_date": "2026-01-01 00:00:00"}})

        runs = [service.run_now("yaml_manual", {"args": ["from", "params"],
                                                "env": {"GREETING": "hi"}}),
                service.run_now("yaml_crontab"), service.run_now("api_python"),
                service.run_now("api_fails"), service.run_now("yaml_notify")]
        for run in runs:
            wait(lambda r=run: final(service, r["id"]), what=f"run of {run['job_id']}")
        rerun = service.rerun(runs[0]["id"])
        wait(lambda: final(service, rerun["id"]), what="the rerun")

        def done(job_id, count, trigger=None):
            service.flush()
            return len([r for r in service.runs(job_id=job_id, limit=100)
                        if r["status"] in FINAL_STATUSES
                        and (trigger is None or r["trigger"] == trigger)]) >= count
        wait(lambda: done("yaml_notify", 1, "retry"), what="the retry of yaml_notify")
        wait(lambda: done("api_date_fired", 1), what="the date job's fire")
        wait(lambda: done("yaml_interval", 2, "schedule"), what="two interval fires")
        service.flush()
    finally:
        service.stop()

    # Compact it into the committed file: no WAL, no free pages.
    if out.exists():
        out.unlink()
    with sqlite3.connect(work / "ts.sqlite") as conn:
        conn.execute("VACUUM INTO ?", (str(out),))
    with sqlite3.connect(out) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")
        summary = {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                   for (table,) in conn.execute(
                       "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")}
    conn.close()
    shutil.rmtree(work)
    os.chmod(out, 0o644)
    print(f"{out}: {out.stat().st_size} bytes; rows: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
