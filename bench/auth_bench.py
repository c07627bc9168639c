"""What a credential costs per request: ``GET /api/jobs/{id}`` of a real ``task-scheduler``
process, one keep-alive client, with the legacy token (compared in memory) and with an API
token (one indexed read of ts_api_tokens joined to ts_users, no cache, so a revoke holds at
once on every node). Not a test: it prints figures.

    python bench/auth_bench.py [--db sqlite|postgres] [--requests 3000]
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LEGACY = "bench-legacy-token-0123456789"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite", choices=("sqlite", "postgres"))
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        url = _schema(args.db, folder)
        (folder / "jobs.yaml").write_text(
            "- {id: j, command: 'true', trigger: {type: interval, hours: 1}}\n")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TS_API_TOKEN": LEGACY}
        cli = [sys.executable, "-m", "task_scheduler"]
        subprocess.run([*cli, "user", "add", "bench", "--role", "viewer", "--no-password",
                        "--db", url], check=True, env=env, capture_output=True)
        made = subprocess.run([*cli, "token", "create", "--user", "bench", "--name",
                               f"t{time.time_ns()}", "--db", url], check=True, env=env,
                              capture_output=True, text=True).stdout.split()[0]
        port = _free_port()
        proc = subprocess.Popen([*cli, "--config", str(folder / "jobs.yaml"), "--db", url,
                                 "--port", str(port), "--log-level", "WARNING"], env=env,
                                cwd=folder)
        try:
            _wait(port)
            for name, token in (("legacy token", LEGACY), ("API token", made)) * 2:
                times = _measure(port, token, args.requests)
                print(f"{args.db:8} {name:12} {len(times)} requests: mean "
                      f"{statistics.mean(times) * 1e3:.3f} ms, p50 "
                      f"{statistics.median(times) * 1e3:.3f} ms, p99 "
                      f"{sorted(times)[int(len(times) * 0.99)] * 1e3:.3f} ms")
        finally:
            proc.terminate()
            proc.wait(30)
            if args.db == "postgres":
                _drop(url)


SCHEMA = f"ts_auth_bench_{os.getpid()}"


def _schema(db: str, folder: Path) -> str:
    """SQLite in the folder, or a schema of its own on TS_TEST_POSTGRES_URL (dropped after)."""
    if db == "sqlite":
        return f"sqlite:///{folder / 'bench.sqlite'}"
    base = os.environ["TS_TEST_POSTGRES_URL"]
    subprocess.run(["psql", base, "-qc", f"CREATE SCHEMA {SCHEMA}"], check=True)
    return f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{SCHEMA}"


def _drop(url: str) -> None:
    subprocess.run(["psql", url.split("?")[0], "-qc", f"DROP SCHEMA {SCHEMA} CASCADE"],
                   capture_output=True, check=True)


def _measure(port: int, token: str, count: int) -> list:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    headers = {"Authorization": f"Bearer {token}"}
    times = []
    for _ in range(count):
        start = time.perf_counter()
        conn.request("GET", "/api/jobs/j", headers=headers)
        response = conn.getresponse()
        response.read()
        times.append(time.perf_counter() - start)
        assert response.status == 200, response.status
    conn.close()
    return times


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the service did not start")


if __name__ == "__main__":
    main()
