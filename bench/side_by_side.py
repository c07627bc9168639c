"""Every benchmark of two commits, side by side: each bench of the base commit and of this
checkout, run one after the other (base first, then this), their summaries printed together.

Used for issue 21 (the single file cut into a package): a restructuring must leave every figure
within noise. Each bench already runs its own baseline in the same run and prints ratios; this
runs the whole set for two versions of the code, so the ratios can be compared too.

    python bench/side_by_side.py --base 11b5a2a              # the quick set, about 15 minutes
    python bench/side_by_side.py --base 11b5a2a --only startup_bench,api_bench

Each bench runs with its own version's bench script (the scripts moved with the code). Not a test.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POSTGRES = os.environ.get("TS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

# Quick settings: long enough that each figure is a steady one, short enough to run the set.
BENCHES = {
    "startup_bench": ["--jobs", "2000"],
    "api_bench": ["--jobs", "1000", "--duration", "3"],
    "reload_bench": ["--jobs", "2000", "--edits", "3"],
    "history_bench": ["--runs", "100000"],
    "fire_bench": ["--db", "sqlite", "--case", "all", "--seconds", "5", "--warmup", "2",
                   "--minute", "10"],
    "http_load_bench": ["--concurrent", "200", "--idle", "300", "--hog", "600"],
    "failover_bench": ["--kills", "3", "--stops", "3", "--db", POSTGRES],
}


def checkout(rev: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="ts-base-")) / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(folder), rev],
                   check=True)
    return folder


def run(tree: Path, bench: str, args: list) -> tuple[str, float]:
    began = time.monotonic()
    env = {**os.environ, "PYTHONPATH": str(tree), "TS_TEST_POSTGRES_URL": POSTGRES}
    result = subprocess.run([sys.executable, str(tree / "bench" / f"{bench}.py"), *args],
                            cwd=tree, env=env, capture_output=True, text=True, timeout=1800)
    text = result.stdout + (f"\n[exit {result.returncode}]\n{result.stderr[-2000:]}"
                            if result.returncode else "")
    return text, time.monotonic() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the commit to compare with")
    parser.add_argument("--only", default="", help="comma-separated bench names")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or list(BENCHES)
    base = checkout(args.base)
    try:
        for name in names:
            for label, tree in ((f"base {args.base}", base), ("this checkout", ROOT)):
                text, took = run(tree, name, BENCHES[name])
                print(f"\n===== {name} — {label} ({took:.0f} s) =====\n{text.strip()}", flush=True)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
