"""Vendoring stays copying folders (issue 21, docs/embedding.md "Vendoring"): the core
(``task_scheduler/`` once it is a package, ``task_scheduler.py`` before) and
``task_scheduler_web/`` copied next to a program work there, with nothing else of this checkout
importable; without the second the API still serves."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT

CHILD = textwrap.dedent("""
    import io, json, sys, time, wsgiref.util
    HERE = sys.argv[1]
    sys.path.insert(0, HERE)   # what a program's own folder is to it; -I left it out
    with_gui = sys.argv[2] == "gui"
    if not with_gui:   # not copied; and a task-scheduler pip-installed here must not stand in
        sys.modules["task_scheduler_web"] = None   # import raises ModuleNotFoundError for it
    import task_scheduler
    from task_scheduler import Config, SchedulerService, create_app
    assert task_scheduler.__file__.startswith(HERE), task_scheduler.__file__
    try:
        import task_scheduler_web
    except ModuleNotFoundError:
        assert not with_gui
        task_scheduler_web = None
    else:
        assert with_gui and task_scheduler_web.__file__.startswith(HERE), \\
            task_scheduler_web.__file__

    def get(app, path):
        environ = {"PATH_INFO": path}
        wsgiref.util.setup_testing_defaults(environ)
        got = {}
        def start_response(status, headers, exc_info=None):
            got["status"], got["headers"] = int(status.split()[0]), dict(headers)
        chunks = app(environ, start_response)
        body = b"".join(chunks)
        getattr(chunks, "close", lambda: None)()
        return got["status"], got["headers"].get("Content-Type", ""), body

    service = SchedulerService(Config(config_path=None, database_url=f"sqlite:///{HERE}/ts.sqlite",
                                      port=0, watch=False, shutdown_grace=5, kill_grace=1))
    service.start()
    try:
        app = create_app(service, gui=task_scheduler_web)   # a vendored GUI is handed in
        report = {"health": get(app, "/api/health")[:2], "gui": get(app, "/")[:2],
                  "docs": list(get(app, "/api/docs")), "openapi": get(app, "/api/openapi.json")[:2]}
        page = report["docs"][2]   # the GUI's page of the API, or the fallback naming the spec
        report["docs"][2] = len(page), b"docs/api.md has examples" in page
        service.add_job({"id": "echo", "command": ["echo", "vendored"],
                         "trigger": {"type": "interval", "hours": 1}})
        service.add_job({"id": "py", "func": "builtins:print", "args": ["vendored", "python"]})
        runs = [service.run_now("echo"), service.run_now("py")]
        deadline = time.monotonic() + 20
        while any(service.run(r["id"])["status"] in ("queued", "running") for r in runs):
            assert time.monotonic() < deadline, [service.run(r["id"]) for r in runs]
            time.sleep(0.02)
        report["runs"] = [(service.run(r["id"])["status"], service.run(r["id"])["stdout"])
                          for r in runs]
    finally:
        service.stop()
    print(json.dumps(report))
""")


def vendor(dest, gui: bool):
    """Copy what docs/embedding.md says to copy, as a user would (no caches)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    if (ROOT / "task_scheduler").is_dir():   # after issue 21's split
        shutil.copytree(ROOT / "task_scheduler", dest / "task_scheduler", ignore=ignore)
    else:
        shutil.copy2(ROOT / "task_scheduler.py", dest / "task_scheduler.py")
    if gui:
        shutil.copytree(ROOT / "task_scheduler_web", dest / "task_scheduler_web", ignore=ignore)


@pytest.mark.parametrize("gui", [True, False], ids=["core+web", "core-only"])
def test_copied_folders_work_alone_in_an_isolated_interpreter(tmp_path, gui):
    app_dir = tmp_path / "myprogram"
    app_dir.mkdir()
    vendor(app_dir, gui)
    # -I: no PYTHONPATH, no user site, not even the cwd on sys.path: only the installed
    # dependencies and the copied folders (the child puts its own folder first)
    result = subprocess.run([sys.executable, "-I", "-c", CHILD, str(app_dir),
                             "gui" if gui else "nogui"],
                            cwd=app_dir, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["health"][0] == 200 and report["health"][1].startswith("application/json")
    assert report["openapi"][0] == 200
    assert report["runs"] == [["succeeded", "vendored\n"], ["succeeded", "vendored python\n"]]
    status, ctype, (size, fallback) = report["docs"]
    assert (status, ctype.split(";")[0]) == (200, "text/html")
    if gui:
        assert report["gui"][0] == 200 and report["gui"][1].startswith("text/html")
        assert not fallback and size > 5000   # /api/docs is the GUI's page of the API
    else:
        assert report["gui"][0] == 404   # no GUI: the API alone
        assert fallback       # /api/docs points at /api/openapi.json
