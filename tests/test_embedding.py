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
