"""Embedding task-scheduler in your own program: run it with `python docs/examples/embed.py`.

It starts a service on a SQLite file (in a temp folder, or the path given as its argument: run
it twice on one file and it starts where it left off), adds a python job and a command job, runs
them, prints their output, serves the API and GUI for a moment, and stops.
"""

import sys
import tempfile
import time
from pathlib import Path

from task_scheduler import Config, SchedulerService, create_app, serve_in_thread


def hello(name):
    print(f"hello, {name}")


def main() -> int:
    database = sys.argv[1] if len(sys.argv) > 1 else \
        str(Path(tempfile.mkdtemp(prefix="ts-embed-")) / "ts.sqlite")
    service = SchedulerService(Config(config_path=None,   # no jobs.yaml: jobs come from code
                                      database_url=f"sqlite:///{database}"))
    service.start()
    server = serve_in_thread(create_app(service), "127.0.0.1", 0)
    try:
        # replace_existing: the jobs are still there from the last start: replace, don't fail
        service.add_job({"id": "hello", "func": "embed:hello", "args": ["embedder"],
                         "trigger": {"type": "interval", "seconds": 30},
                         "replace_existing": True})
        service.add_job({"id": "uname", "command": ["uname", "-s"],
                         "trigger": {"type": "cron", "expression": "0 * * * *"},
                         "replace_existing": True})
        runs = [service.run_now("hello"), service.run_now("uname")]
        service.pause("uname")
        for run in runs:
            while service.run(run["id"])["status"] in ("queued", "running"):
                time.sleep(0.05)
            done = service.run(run["id"])
            print(f"{done['job_id']}: {done['status']}: {done['stdout'].strip()}")
        print("jobs:", [(j["id"], j["state"]) for j in service.jobs()])
        print("runs of hello:", len(service.runs(job_id="hello")))
        print(f"API and GUI were at http://127.0.0.1:{server.server_port}/")
    finally:
        server.shutdown()
        service.stop()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))   # so "embed:hello" imports this file
    sys.exit(main())
