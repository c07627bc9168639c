"""Chaos run of a cluster on one PostgreSQL, with real processes (issue 19, "Must show").

    python bench/chaos.py [--rounds 1] [--jobs 10] [--db URL] [--seed N]

Three nodes, each reaching PostgreSQL through a TCP proxy of its own, share --jobs jobs that
fire every second and three long side-effecting jobs (each run appends "<run id> <time>" to a
file every 0.2 s for about 8 s; ``max_instances: 1``, retried when interrupted). Each round:

1. a silent partition (15 s) of a node running writers: its proxy stops forwarding, sockets
   stay open;
2. a SIGSTOP (15 s) of a node running writers;
3. a graceful SIGTERM of the leader (a replacement node starts);
4. a SIGKILL of the leader (a replacement node starts);
5. a database outage of 20 s for everyone: every proxy closes its sessions and refuses.

Then ts_runs and the writers' files are checked: no two copies of a writer ever wrote at once,
no fire time has two rows, every fire time of the 1 s jobs ran or is recorded missed, takeover
after the graceful stop within 2 s and after the kill within 10 s, and no run was given up
("stopped heart-beating") but those of the nodes silenced on purpose before the outage. Exit
status 1 when a check fails. The test suite runs one round (tests/test_cluster_chaos.py).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import itertools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
GRACEFUL_GOAL, KILL_GOAL = 2.0, 10.0   # seconds from the signal to the new leader's lease
WRITERS = {"wa": "a", "wb": "b", "wc": "c"}   # writer job -> the label it needs
LABELS = ["a,b", "b,c", "c,a"]                # each writer has two nodes that may run it


class Proxy:
    """A TCP proxy to PostgreSQL: ``stall()`` a silent partition, ``cut()`` an outage (sessions
    closed, connections refused), ``heal()`` ends either."""

    def __init__(self, target: tuple):
        self.target = target
        self.flowing, self.down = threading.Event(), threading.Event()
        self.flowing.set()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def stall(self) -> None:
        self.flowing.clear()

    def cut(self) -> None:
        self.down.set()
        with self.lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self.sockets.clear()

    def heal(self) -> None:
        self.down.clear()
        self.flowing.set()

    def close(self) -> None:
        self.heal()
        self.cut()
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client) -> None:
        self.flowing.wait()
        if self.down.is_set():
            client.close()
            return
        try:
            server = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        server.settimeout(None)
        with self.lock:
            self.sockets += [client, server]
        for a, b in ((client, server), (server, client)):
            threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source, sink) -> None:
        try:
            while data := source.recv(65536):
                self.flowing.wait()
                sink.sendall(data)
        except OSError:
            pass
        finally:
            # shutdown, not just close: the other pump is blocked in recv() on one of these, and
            # a close() alone leaves that connection open (PostgreSQL then keeps the session,
            # idle in transaction, holding its locks: the DROP SCHEMA at the end waited forever)
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()


class Node:
    """``python -m task_scheduler`` behind a proxy of its own."""

    def __init__(self, name: str, labels: str, folder: Path, url: str, jobs: Path):
        parts = urlsplit(url)
        self.name, self.labels, self.port = name, labels, free_port()
        self.proxy = Proxy((parts.hostname, parts.port or 5432))
        via = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{self.proxy.port}"))
        self.log = folder / f"{name}.log"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TS_NODE_LABELS": labels}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "task_scheduler", "--db", via, "--port", str(self.port),
                 "--node-id", name, "--config", str(jobs)],
                cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT)

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/status",
                                        timeout=2) as resp:
                return "role" in json.load(resp)
        except OSError:
            return False

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)


class PortBlock:
    """Free ports from a block of this pytest-xdist worker's own (``base`` + ``span`` per
    worker), below the kernel's ephemeral range, handed out in turn. A port the kernel picks
    (bind to 0) may be taken by another worker's outgoing connection before the child binds it:
    a node failed to start so under the test suite. tests/conftest.py uses its own base."""

    def __init__(self, base: int, span: int = 400, workers: int = 16):
        worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
        self.start, self.span = base + worker % workers * span, span
        self._next = os.getpid() % span   # other runs start elsewhere in the block

    def take(self) -> int:
        for _ in range(self.span):
            port, self._next = self.start + self._next, (self._next + 1) % self.span
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
        raise RuntimeError(f"no free port in {self.start}-{self.start + self.span - 1}")


free_port = PortBlock(12_000).take   # tests/conftest.py hands out 20000 and up


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout}s")
        time.sleep(interval)


class Chaos:
    def __init__(self, engine: sa.Engine, url: str, folder: Path, jobs: Path):
        self.engine, self.url, self.folder, self.jobs = engine, url, folder, jobs
        self.nodes: list[Node] = []
        self.names = (f"n{i}" for i in itertools.count(1))
        self.story: list[str] = []
        self.takeovers: dict[str, list] = {"graceful": [], "kill": []}
        self.silenced: set[str] = set()   # nodes made silent on purpose (their runs: rescued)

    def start(self, labels: str) -> Node:
        node = Node(next(self.names), labels, self.folder, self.url, self.jobs)
        self.nodes.append(node)
        return node

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def sql(self, text: str, **params) -> list:
        with self.engine.connect() as conn:
            return conn.execute(sa.text(text), params).all()

    def lease(self):
        rows = self.sql("SELECT holder, epoch, acquired_at, timezone('UTC', now()) AS now "
                        "FROM ts_lease WHERE name = 'leader' "
                        "AND expires_at > timezone('UTC', now())")
        return rows[0] if rows else None

    def db_now(self) -> dt.datetime:
        return self.sql("SELECT timezone('UTC', now())")[0][0]

    def writing_node(self, exclude: str | None = None) -> Node:
        """A live node running writers (the busiest)."""
        def busiest():
            rows = self.sql("SELECT node, count(*) FROM ts_runs WHERE status = 'running' "
                            "AND job_id IN ('wa', 'wb', 'wc') GROUP BY node ORDER BY 2 DESC")
            names = {n.name for n in self.nodes if n.proc.poll() is None}
            return next((r.node for r in rows if r.node in names and r.node != exclude), None)
        return self.node(wait_for(busiest, 30, "a node running writers", 0.2))

    def silence(self, how: str, seconds: float) -> None:
        victim = self.writing_node()
        self.silenced.add(victim.name)
        self.story.append(f"{how}: {victim.name} for {seconds:g}s")
        if how == "partition":
            victim.proxy.stall()
        else:
            victim.signal(signal.SIGSTOP)
        time.sleep(seconds)   # the fault itself
        victim.proxy.heal()
        victim.signal(signal.SIGCONT)
        wait_for(victim.answers, 30, f"{victim.name} answering again", 0.2)

    def stop_leader(self, how: str) -> None:
        old = wait_for(self.lease, 30, "a leader")
        victim = self.node(old.holder)
        wait_for(lambda: self.sql("SELECT 1 FROM ts_runs WHERE status = 'running' AND node "
                                  "= :n AND job_id IN ('wa', 'wb', 'wc')", n=victim.name),
                 30, f"{victim.name} running a writer", 0.2)
        at = self.db_now()
        victim.signal(signal.SIGTERM if how == "graceful" else signal.SIGKILL)
        new = wait_for(lambda: (row := self.lease()) and row.epoch > old.epoch and row, 30,
                       "a new leader", 0.02)
        took = (new.acquired_at - at).total_seconds()
        self.takeovers[how].append(took)
        self.story.append(f"{how} of the leader {victim.name}: {new.holder} leads "
                          f"{took:.2f}s later")
        if how == "graceful":
            victim.proc.wait(60)
        else:
            victim.proc.wait(10)
            self.silenced.add(victim.name)
            wait_for(lambda: not self.sql("SELECT 1 FROM ts_runs WHERE status = 'running' AND "
                                          "node = :n", n=victim.name), 40,
                     f"the runs of {victim.name} given up", 0.2)
        self.nodes.remove(victim)
        victim.proxy.close()
        replacement = self.start(victim.labels)
        wait_for(replacement.answers, 60, "the replacement answering", 0.2)

    def outage(self, seconds: float) -> dt.datetime:
        at = self.db_now()
        self.story.append(f"database outage for every node: {seconds:g}s")
        for node in self.nodes:
            node.proxy.cut()
        time.sleep(seconds)   # the outage itself
        for node in self.nodes:
            node.proxy.heal()
        return at

    def close(self) -> None:
        for node in self.nodes:
            node.signal(signal.SIGCONT)
            node.proxy.heal()
            node.signal(signal.SIGTERM)
        for node in self.nodes:
            try:
                node.proc.wait(60)
            except subprocess.TimeoutExpired:
                node.proc.kill()
            node.proxy.close()


def jobs_text(count: int, folder: Path) -> str:
    ticks = "".join(f"- {{id: t{i:02d}, command: 'true', trigger: {{type: interval, "
                    f"seconds: 1}}}}\n" for i in range(count))
    writers = "".join(
        f"- id: {job}\n"
        f"  command: 'for i in $(seq 1 40); do echo \"$TS_RUN_ID $(date +%s.%N)\" >> "
        f"{folder / job}.txt; sleep 0.2; done'\n"
        f"  shell: true\n  run_on: [{label}]\n  max_instances: 1\n"
        f"  retries: {{max: 5, delay: 0}}\n  trigger: {{type: interval, seconds: 4}}\n"
        for job, label in WRITERS.items())
    return ticks + writers


def overlaps(folder: Path) -> list:
    """Writers' runs whose spans of lines intersect: two copies wrote in one 0.2 s step."""
    found = []
    for job in WRITERS:
        path = folder / f"{job}.txt"
        spans: dict = {}
        for line in path.read_text().splitlines() if path.exists() else ():
            run_id, _, moment = line.partition(" ")
            first, last = spans.get(run_id, (float(moment), float(moment)))
            spans[run_id] = (min(first, float(moment)), max(last, float(moment)))
        ordered = sorted(spans.items(), key=lambda item: item[1][0])
        # (writers run one at a time: max_instances 1, so each must end before the next)
        found += [(job, a, b) for (a, sa_), (b, sb) in itertools.pairwise(ordered)
                  if sb[0] < sa_[1]]
    return found


def check(chaos: Chaos, began: dt.datetime, horizon: dt.datetime,
          outage_at: dt.datetime) -> list[str]:
    """Every failed check, as a sentence."""
    failures = []
    rows = chaos.sql("SELECT job_id, scheduled_at, status FROM ts_runs WHERE trigger IN "
                     "('schedule', 'catchup') ORDER BY job_id, scheduled_at")
    twice = [k for k, c in collections.Counter((r.job_id, r.scheduled_at) for r in rows).items()
             if c > 1]
    if twice:
        detail = chaos.sql("SELECT job_id, scheduled_at, trigger, epoch, node, status, id "
                           "FROM ts_runs WHERE (job_id, scheduled_at) IN (" + ", ".join(
                               f"('{job}', '{at.isoformat()}')" for job, at in twice[:5]) +
                           ") ORDER BY job_id, id")
        failures.append(f"fires recorded twice: {[tuple(r) for r in detail]}")
    by_job = collections.defaultdict(list)
    for row in rows:
        if row.job_id.startswith("t") and began <= row.scheduled_at <= horizon:
            by_job[row.job_id].append(row)
    lost = [(job, a.scheduled_at, b.scheduled_at) for job, job_rows in by_job.items()
            for a, b in itertools.pairwise(job_rows)
            if b.scheduled_at - a.scheduled_at > dt.timedelta(seconds=1)]
    unended = [(r.job_id, r.scheduled_at, r.status) for job_rows in by_job.values()
               for r in job_rows if r.status in ("queued", "running", "cancelled")]
    if lost or unended:
        failures.append(f"lost fire times: {lost[:5]}, not ended: {unended[:5]}")
    if overlaps(chaos.folder):
        failures.append(f"two copies of a writer ran at once: {overlaps(chaos.folder)[:5]}")
    slow = [t for t in chaos.takeovers["graceful"] if t > GRACEFUL_GOAL] + \
        [t for t in chaos.takeovers["kill"] if t > KILL_GOAL]
    if slow:
        failures.append(f"slow takeovers: {chaos.takeovers}")
    rescued = chaos.sql("SELECT id, node, finished_at, error FROM ts_runs WHERE error LIKE "
                        "'%stopped heart-beating%'")
    wrong = [r for r in rescued if r.node not in chaos.silenced or r.finished_at >= outage_at]
    if wrong:
        failures.append(f"runs of live nodes given up: {[tuple(r) for r in wrong[:5]]}")
    return failures


def summary(chaos: Chaos) -> str:
    rows = chaos.sql("SELECT job_id LIKE 'w%' AS writer, status, count(*) FROM ts_runs "
                     "GROUP BY 1, 2 ORDER BY 1, 2")
    fenced = chaos.sql("SELECT count(*) FROM ts_runs WHERE error LIKE '%self-fencing%'")[0][0]
    return (", ".join(f"{'writer' if r[0] else 'tick'} {r[1]} {r[2]}" for r in rows) +
            f"; ended by self-fencing: {fenced}")


def run(url: str, rounds: int, jobs: int, seed: int, keep: bool = False) -> int:
    rand = random.Random(seed)
    schema = f"ts_chaos_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    scoped = f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    engine = sa.create_engine(scoped.replace("postgresql://", "postgresql+psycopg://", 1))
    folder = Path(tempfile.mkdtemp(prefix="chaos-"))
    (folder / "jobs.yaml").write_text(jobs_text(jobs, folder))
    chaos = Chaos(engine, scoped, folder, folder / "jobs.yaml")
    print(f"schema {schema}, logs in {folder}, seed {seed}", flush=True)
    failures: list[str] = []
    try:
        for labels in LABELS:
            chaos.start(labels)
        wait_for(lambda: all(n.answers() for n in chaos.nodes), 60, "nodes answering", 0.2)
        wait_for(lambda: chaos.sql("SELECT count(DISTINCT job_id) FROM ts_runs")[0][0]
                 == jobs + len(WRITERS), 60, "every job fired", 0.2)
        began = chaos.db_now() + dt.timedelta(seconds=2)
        outage_at = None
        for _ in range(rounds):
            faults = ["partition", "sigstop", "graceful", "kill"]
            rand.shuffle(faults)
            for fault in faults:
                if fault in ("partition", "sigstop"):
                    chaos.silence(fault, 15)
                else:
                    chaos.stop_leader(fault)
                time.sleep(5)   # the cluster runs normally for a while between faults
            outage_at = chaos.outage(20)
            time.sleep(5)
        horizon = chaos.db_now()
        time.sleep(20)   # everything due by the horizon ends (a rescue takes node_timeout)
        wait_for(lambda: not chaos.sql(
            "SELECT 1 FROM ts_runs WHERE status IN ('queued', 'running') AND scheduled_at < "
            ":h AND job_id LIKE 't%'", h=horizon - dt.timedelta(seconds=2)), 60,
            "the fires due by the end to end", 0.5)
        failures = check(chaos, began, horizon - dt.timedelta(seconds=2), outage_at)
    except Exception as exc:
        failures.append(f"the run itself failed: {exc!r}")
    finally:
        chaos.close()
        print("\n".join(chaos.story))
        g, k = chaos.takeovers["graceful"], chaos.takeovers["kill"]
        print(f"takeover (signal -> the new leader's lease): graceful stop "
              f"{', '.join(f'{t:.2f}s' for t in g) or '-'} (goal {GRACEFUL_GOAL:g}s); "
              f"kill -9 {', '.join(f'{t:.2f}s' for t in k) or '-'} (goal {KILL_GOAL:g}s)")
        with contextlib.suppress(Exception):
            print(summary(chaos))
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
    print("FAILED:\n  " + "\n  ".join(failures) if failures else
          "all checks passed: no overlapping copies, no duplicate fires, no lost fire times, "
          "takeovers within their goals, no live node's run given up")
    if failures and not keep:
        print(f"node logs kept in {folder}")
    elif not keep:
        shutil.rmtree(folder, ignore_errors=True)
    return 1 if failures else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--db", default=os.environ.get(
        "TS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    return run(args.db, args.rounds, args.jobs, seed)


if __name__ == "__main__":
    sys.exit(main())
