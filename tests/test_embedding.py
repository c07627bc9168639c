"""The embedding example of docs/embedding.md runs as documented."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT, child_env


@pytest.mark.slow
def test_embed_example_runs_and_runs_again_on_the_same_database(tmp_path):
    for _ in range(2):   # the second start finds its jobs stored and replaces them
        result = subprocess.run([sys.executable, str(ROOT / "docs" / "examples" / "embed.py"),
                                 str(tmp_path / "ts.sqlite")],
                                capture_output=True, text=True, timeout=60, env=child_env())
        assert result.returncode == 0, result.stderr
        assert "hello: succeeded: hello, embedder" in result.stdout
        assert "uname: succeeded: Linux" in result.stdout
        assert "('uname', 'paused')" in result.stdout


SQLITE_ONLY = """
import sys
import task_scheduler as ts
service = ts.SchedulerService(ts.Config(config_path=None, database_url=sys.argv[1])).start()
service.add_job({"id": "once", "command": "true", "trigger": {"type": "interval", "hours": 1}})
run = service.run_now("once")
service.stop()
print(sorted(m for m in sys.modules if m.startswith("sqlalchemy.dialects.postgresql")))
"""


def test_a_sqlite_service_never_loads_the_postgresql_dialect(tmp_path):
    """Its modules (and its drivers') are ~2 MiB of a small server's memory: the partial
    indexes' PostgreSQL predicates and the PostgreSQL statements are made only there."""
    result = subprocess.run([sys.executable, "-c", SQLITE_ONLY,
                             f"sqlite:///{tmp_path / 'ts.sqlite'}"],
                            capture_output=True, text=True, timeout=60, env=child_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
