"""task-scheduler: a resilient, persistent, observable task scheduler.

One process runs APScheduler 3 with its jobs and every run's history in a database (SQLite by
default, PostgreSQL for production), applies edits of ``jobs.yaml`` live, and serves a JSON REST API
and a web GUI from one Bottle app on one port (served by waitress).

Run it::

    python -m task_scheduler                 # or: task-scheduler run --config jobs.yaml
    task-scheduler validate jobs.yaml        # check a file before saving it

Embed it::

    from task_scheduler import Config, SchedulerService, create_app
    service = SchedulerService(Config(config_path="jobs.yaml", database_url="sqlite:///ts.sqlite"))
    service.start()
    app = create_app(service)          # a WSGI app
    service.stop()

This file is the public surface and nothing else: each concept lives in the module named after it
(docs/architecture.md draws the floors). ``execute_job`` and the trigger classes are also here
because databases store them by the name ``task_scheduler.<name>``: those names must keep loading.
"""

from __future__ import annotations

from .builtin import http_check
from .cli import main
from .config import Config, __version__
from .errors import (BadRequest, InvalidConfig, InvalidJob, JobConflict, JobNotFound,
                     RunNotFound, SchedulerError)
from .executor import RunContext, current_run, execute_job
from .http.app import create_app
from .http.server import serve_in_thread
from .jobsfile import load_jobs_file
from .models import JobDefinition
from .service import SchedulerService
from .calendars import BusinessDayTrigger, CalendarTrigger
from .triggers import CrontabTrigger, DstSafeCronTrigger

__all__ = [
    "Config",
    "SchedulerService",
    "create_app",
    "serve_in_thread",
    "execute_job",
    "JobDefinition",
    "SchedulerError",
    "JobNotFound",
    "RunNotFound",
    "InvalidJob",
    "InvalidConfig",
    "JobConflict",
    "BadRequest",
    "load_jobs_file",
    "current_run",
    "RunContext",
    "http_check",
    "main",
]
# Stored, not exported: APScheduler rows name these as task_scheduler.<name> (see triggers.py).
_STORED_NAMES = (CrontabTrigger, DstSafeCronTrigger, BusinessDayTrigger, CalendarTrigger,
                 __version__)
