"""Several nodes on one PostgreSQL, as real processes: a worker killed mid-run has its run
interrupted (naming it) and retried; run_on places runs only on nodes with those labels, and a
run no live node can take says why; a node that starts again leaves the other nodes' runs alone;
the nodes API, a job change on a follower reaching the leader at once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from conftest import child_env, free_port, start_process, wait_for, write_jobs

pytestmark = pytest.mark.postgres


class Node:
    """A real ``task-scheduler`` process of the cluster under test."""

    def __init__(self, folder, url: str, node_id: str, labels: str = ""):
        self.folder, self.url, self.id, self.labels = folder, url, node_id, labels
        self.port = free_port()
        args = ["--config", str(folder / "jobs.yaml"), "--db", url, "--port", str(self.port),
                "--node-id", node_id]
        self.proc: subprocess.Popen = start_process(args + (["--labels", labels] if labels
                                                            else []), folder)
        wait_for(lambda: self.get("/api/health"), 30, 0.1, f"node {node_id} to answer")

    def call(self, path: str, method: str = "GET", body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data,
                                         method=method,
                                         headers={"Content-Type": "application/json"} if data
                                         else {})
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.load(response) if response.status != 204 else None

    def get(self, path: str):
        try:
            return self.call(path)
        except (OSError, urllib.error.HTTPError):
            return None

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def cluster(tmp_path, postgres_url):
    nodes: list[Node] = []

    def start(node_id: str, labels: str = "") -> Node:
        node = Node(tmp_path, postgres_url, node_id, labels)
        nodes.append(node)
        return node
    yield start
    for node in nodes:
        node.stop()


def leader_of(nodes) -> str:
    return wait_for(lambda: next((n.get("/api/status") or {}).get("leader") for n in nodes
                                 if n.proc.poll() is None), 20, 0.1, "a leader")


def test_worker_killed_mid_run_is_interrupted_naming_it_and_retried(tmp_path, cluster):
    write_jobs(tmp_path / "jobs.yaml", """
        - id: long
          command: "if [ -e marker ]; then echo second try; else touch marker; sleep 60; fi"
          shell: true
          run_on: [worker]
          retries: {max: 1, delay: 0}
          trigger: {type: interval, hours: 24}
    """)
    boss = cluster("boss")
    worker = cluster("worker-1", labels="worker")
    run = boss.call("/api/jobs/long/run", "POST")["run"]
    wait_for(lambda: (boss.get(f"/api/runs/{run['id']}") or {}).get("status") == "running",
             15, 0.1, "the run to start on the worker")
    assert boss.get(f"/api/runs/{run['id']}")["node"] == "worker-1"
    worker.kill()
    ended = wait_for(lambda: (r := boss.get(f"/api/runs/{run['id']}")) and
                     r["status"] != "running" and r, 30, 0.2, "the run to be rescued")
    assert ended["status"] == "interrupted" and "worker-1" in ended["error"]
    retry = wait_for(lambda: [r for r in boss.get("/api/runs?job_id=long")["runs"]
                              if r["trigger"] == "retry"], 10, 0.2, "the retry")[0]
    assert retry["attempt"] == 2 and retry["status"] == "queued"
    assert "no live node has the labels worker" in boss.get(f"/api/runs/{retry['id']}")["waiting"]
    cluster("worker-2", labels="worker")
    done = wait_for(lambda: (r := boss.get(f"/api/runs/{retry['id']}")) and
                    r["status"] == "succeeded" and r, 20, 0.2, "the retry to run")
    assert done["node"] == "worker-2" and done["stdout"] == "second try\n"


def test_run_on_places_runs_only_on_matching_nodes(tmp_path, cluster):
    write_jobs(tmp_path / "jobs.yaml", """
        - {id: on_db, command: 'true', run_on: [db], trigger: {type: interval, hours: 24}}
        - {id: on_web, command: 'true', run_on: [web], trigger: {type: interval, hours: 24}}
        - {id: on_both, command: 'true', run_on: [db, web], trigger: {type: interval, hours: 24}}
        - {id: anywhere, command: 'true', max_instances: 10, trigger: {type: interval, hours: 24}}
    """)
    a, b = cluster("node-a", labels="db"), cluster("node-b", labels="web,extra")
    runs = {job: [a.call(f"/api/jobs/{job}/run", "POST")["run"]["id"]]
            for job in ("on_db", "on_web", "on_both")}
    runs["anywhere"] = [b.call("/api/jobs/anywhere/run", "POST")["run"]["id"] for _ in range(6)]

    def final(run_id):
        run = a.get(f"/api/runs/{run_id}")
        return run if run and run["status"] == "succeeded" else None
    assert wait_for(lambda: final(runs["on_db"][0]), 15)["node"] == "node-a"
    assert wait_for(lambda: final(runs["on_web"][0]), 15)["node"] == "node-b"
    for run_id in runs["anywhere"]:
        assert wait_for(lambda run_id=run_id: final(run_id), 15)["node"] in ("node-a", "node-b")
    stuck = a.get(f"/api/runs/{runs['on_both'][0]}")
    assert stuck["status"] == "queued" and "db, web" in stuck["waiting"]
    nodes = {n["id"]: n for n in a.get("/api/nodes")["nodes"]}
    assert nodes["node-b"]["labels"] == ["extra", "web"]
    assert sorted(n["role"] for n in nodes.values()) == ["follower", "leader"]


def test_a_restarted_node_leaves_the_other_nodes_runs_alone(tmp_path, cluster):
    write_jobs(tmp_path / "jobs.yaml", """
        - {id: long_a, command: 'sleep 60', run_on: [a], trigger: {type: interval, hours: 24}}
        - {id: long_b, command: 'sleep 60', run_on: [b], trigger: {type: interval, hours: 24}}
    """)
    a, b = cluster("node-a", labels="a"), cluster("node-b", labels="b")
    run_a = a.call("/api/jobs/long_a/run", "POST")["run"]["id"]
    run_b = a.call("/api/jobs/long_b/run", "POST")["run"]["id"]
    for run_id in (run_a, run_b):
        wait_for(lambda run_id=run_id: (a.get(f"/api/runs/{run_id}") or {}).get("status")
                 == "running", 15, 0.1, "both runs to start")
    b.kill()
    b2 = cluster("node-b", labels="b")   # the same node, started again at once
    ended = a.get(f"/api/runs/{run_b}")
    assert ended["status"] == "interrupted" and "found at start-up on node-b" in ended["error"]
    assert a.get(f"/api/runs/{run_a}")["status"] == "running"   # node-a's run goes on
    assert b2.get(f"/api/runs/{run_a}")["status"] == "running"
    a.call(f"/api/runs/{run_a}/cancel", "POST")   # or stopping node-a waits out its grace


def test_a_change_on_a_follower_reaches_the_leader_at_once(tmp_path, cluster):
    write_jobs(tmp_path / "jobs.yaml", "[]\n")
    first = cluster("first")
    second = cluster("second")
    nodes = [first, second]
    follower = next(n for n in nodes if n.id != leader_of(nodes))
    follower.call("/api/jobs", "POST", {"id": "soon", "command": "echo hi",
                                        "trigger": {"type": "interval", "seconds": 1}})
    # The leader schedules it: its first fire comes within a couple of seconds (no poll delay).
    run = wait_for(lambda: (follower.get("/api/runs?job_id=soon&status=succeeded") or {})
                   .get("runs"), 6, 0.1, "the leader to fire the job added on a follower")[0]
    assert run["trigger"] == "schedule"
    follower.call("/api/jobs/soon/pause", "POST")
    leader = next(n for n in nodes if n is not follower)
    wait_for(lambda: leader.get("/api/jobs/soon")["state"] == "paused", 5, 0.1)
    assert leader.get("/api/jobs/soon")["next_run_time"] is None


def test_jobs_yaml_drift_is_reported_and_the_leaders_file_applies(tmp_path, postgres_url,
                                                                   caplog):
    import task_scheduler as ts
    paths = {}
    for node, job in (("a", "from_a"), ("b", "from_b")):
        (tmp_path / node).mkdir()
        paths[node] = write_jobs(tmp_path / node / "jobs.yaml",
                                 f"- {{id: {job}, command: 'true', trigger: {{type: manual}}}}\n")
    services = [ts.SchedulerService(ts.Config(config_path=str(paths[node]), node=node,
                                              database_url=postgres_url, watch=False)).start()
                for node in ("a", "b")]
    try:
        leader, follower = services
        assert (leader.status()["role"], follower.status()["role"]) == ("leader", "follower")
        drift = follower.status()["config"]["drift"]
        assert drift["leader"] == "a" and drift["this_hash"] != drift["leader_hash"]
        assert leader.status()["config"]["drift"] is None
        assert [j["id"] for j in follower.jobs()] == ["from_a"]   # no fight over the jobs
        assert any("differs from what the leader a applied" in r.getMessage()
                   for r in caplog.records)
        nodes = {n["id"]: n for n in leader.nodes()}
        wait_for(lambda: {n["id"]: n for n in leader.nodes()}["b"]["config_hash"] ==
                 drift["this_hash"], 10, 0.2, "node b's hash in ts_nodes")
        assert nodes["a"]["role"] == "leader"
    finally:
        for service in reversed(services):
            service.stop(grace=0.5)


@pytest.fixture
def db(postgres_url):
    import task_scheduler.store.schema as ts_schema
    engine = ts_schema.create_engine(postgres_url)
    yield engine
    engine.dispose()


def _lease(db):
    """The live lease row, or None (none yet, or no tables yet)."""
    import sqlalchemy as sa
    try:
        with db.connect() as conn:
            return conn.execute(sa.text(
                "SELECT holder, epoch, acquired_at, timezone('UTC', now()) AS now FROM ts_lease "
                "WHERE name = 'leader' AND expires_at > timezone('UTC', now())")).first()
    except sa.exc.ProgrammingError:
        return None


def _db_now(db):
    import sqlalchemy as sa
    with db.connect() as conn:
        return conn.execute(sa.text("SELECT timezone('UTC', now())")).scalar()


@pytest.mark.slow
def test_a_stopping_leader_hands_over_at_once_and_its_killed_run_is_retried(tmp_path, cluster,
                                                                              db):
    """SIGTERM of the leader while it has a long run: the lease is handed over before the
    runs are waited for (the old order kept renewing it through the 30 s grace: no fires for
    30 s), and the run the stop kills is retried on the other node as the job allows."""
    write_jobs(tmp_path / "jobs.yaml", """
        - {id: tick, command: 'true', trigger: {type: interval, seconds: 1}}
        - id: long
          command: "if [ -e marker ]; then echo second try; else touch marker; sleep 60; fi"
          shell: true
          retries: {max: 1, delay: 0}
          trigger: {type: manual}
    """)
    first = cluster("first")
    run = first.call("/api/jobs/long/run", "POST")["run"]
    wait_for(lambda: (first.get(f"/api/runs/{run['id']}") or {}).get("status") == "running",
             15, 0.1, "the long run to start on the only node")
    second = cluster("second")
    old = wait_for(lambda: _lease(db), 10, 0.1, "a lease")
    assert old.holder == "first"
    stopped_at = _db_now(db)
    first.proc.send_signal(signal.SIGTERM)
    new = wait_for(lambda: (row := _lease(db)) and row.epoch > old.epoch and row, 10, 0.05,
                   "the second node to lead while the first waits for its run")
    assert new.holder == "second"
    took = (new.acquired_at - stopped_at).total_seconds()
    assert took < 3, f"took over {took:.1f}s after the stop"
    assert first.proc.poll() is None, "the first node still waits for its long run"
    fired = wait_for(lambda: [r for r in second.get("/api/runs?job_id=tick&limit=200")["runs"]
                              if r["node"] == "second" and r["status"] == "succeeded"],
                     10, 0.1, "a fire by the new leader")
    assert fired

    first.proc.send_signal(signal.SIGTERM)   # again: stop now, the long run is killed
    assert first.proc.wait(30) == 0
    ended = second.get(f"/api/runs/{run['id']}")
    assert ended["status"] == "interrupted", ended
    retry = wait_for(lambda: [r for r in second.get("/api/runs?job_id=long")["runs"]
                              if r["trigger"] == "retry" and r["status"] == "succeeded"],
                     20, 0.2, "the retry to run on the second node")[0]
    assert retry["attempt"] == 2 and retry["node"] == "second"
    assert second.get(f"/api/runs/{retry['id']}")["stdout"] == "second try\n"
    ticks = sorted((r for r in second.get("/api/runs?job_id=tick&limit=500")["runs"]
                    if r["trigger"] in ("schedule", "catchup")), key=lambda r: r["scheduled_at"])
    assert not [r for r in ticks if r["status"] == "missed"], "fire times missed at the handover"


PREVIOUS_RELEASE = "b505db3"   # the release before nodes recorded their schema version


@pytest.fixture
def previous_release(tmp_path):
    """The previous release's code (the module and the GUI package), from git."""
    import io
    import tarfile
    from conftest import ROOT
    found = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e",
                            f"{PREVIOUS_RELEASE}^{{commit}}"], capture_output=True)
    if found.returncode:
        pytest.skip(f"commit {PREVIOUS_RELEASE} is not in this clone")
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", PREVIOUS_RELEASE,
                              "task_scheduler.py", "task_scheduler_web"],
                             capture_output=True, check=True).stdout
    folder = tmp_path / "previous-release"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


@pytest.mark.slow
def test_a_rolling_upgrade_runs_both_releases_on_one_database(tmp_path, postgres_url, db,
                                                               previous_release, cluster):
    """A node of the previous release leads; a node of this one joins (its migration only
    adds a nullable column, which the old node's statements leave alone), says plainly that
    releases are mixed, lists both with their schema versions, and takes over when the old
    node stops. A node whose code is older than the database's schema refuses to start and
    says what to do."""
    import sqlalchemy as sa

    import task_scheduler.store.schema as ts_schema
    write_jobs(tmp_path / "jobs.yaml",
               "- {id: tick, command: 'true', trigger: {type: interval, seconds: 1}}\n"
               "- {id: there, command: 'echo ran', run_on: [new], trigger: {type: manual}}\n")
    port = free_port()
    old = start_process(["--config", str(tmp_path / "jobs.yaml"), "--db", postgres_url,
                         "--port", str(port), "--node-id", "old"], tmp_path,
                        env={"PYTHONPATH": str(previous_release)})
    try:
        wait_for(lambda: (_lease(db) or (None,))[0] == "old", 30, 0.1, "the old node leading")
        new = cluster("new", labels="new")
        listed = {n["id"]: n for n in new.get("/api/nodes")["nodes"]}
        assert listed["old"]["schema_version"] is None and listed["old"]["alive"]
        assert listed["new"]["schema_version"] == ts_schema.SCHEMA_VERSION
        assert "joins nodes of other releases: old" in (tmp_path / "service.log").read_text()
        with urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{port}/api/jobs/there/run", data=b"{}", method="POST",
                headers={"Content-Type": "application/json"}),
                timeout=10) as resp:   # queued by the old node, run by the new one
            run_id = json.load(resp)["run"]["id"]
        ran = wait_for(lambda: (r := new.get(f"/api/runs/{run_id}")) and
                       r["status"] == "succeeded" and r, 20, 0.2, "the new node's run")
        assert ran["node"] == "new" and ran["stdout"] == "ran\n"
        old.send_signal(signal.SIGTERM)
        assert old.wait(30) == 0
        wait_for(lambda: (_lease(db) or (None,))[0] == "new", 15, 0.1, "the new node leading")
        wait_for(lambda: [r for r in new.get("/api/runs?job_id=tick")["runs"]
                          if r["node"] == "new" and r["status"] == "succeeded"],
                 20, 0.2, "the new leader firing")
    finally:
        if old.poll() is None:
            old.kill()
            old.wait(10)
    with db.begin() as conn:   # as the next release's migration would leave it
        conn.execute(sa.text("UPDATE ts_meta SET value = :v WHERE key = 'schema_version'"),
                     {"v": str(ts_schema.SCHEMA_VERSION + 1)})
    refused = subprocess.run([sys.executable, "-m", "task_scheduler", "--config",
                              str(tmp_path / "jobs.yaml"), "--db", postgres_url, "--port",
                              str(free_port()), "--node-id", "late"], cwd=tmp_path,
                             env=child_env(), capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2, refused
    assert "Upgrade task-scheduler on this node" in refused.stderr, refused.stderr



def test_a_stopping_bus_wakes_its_listener_instead_of_waiting_for_its_poll(tmp_path,
                                                                          postgres_url,
                                                                          monkeypatch):
    """Bus.stop notifies the listener's own channel: a stop does not wait out the listener's
    poll (it was ~0.9 s of every PostgreSQL service's stop)."""
    import task_scheduler as ts
    import task_scheduler.bus as ts_bus
    monkeypatch.setattr(ts_bus.Bus, "POLL", 60.0)
    jobs = write_jobs(tmp_path / "jobs.yaml", "[]\n")
    service = ts.SchedulerService(ts.Config(config_path=str(jobs), database_url=postgres_url,
                                            watch=False)).start()
    try:
        assert service.bus._thread.is_alive()
        service.bus.stop()   # joins for at most 3 s: the poll alone would take 60
        assert not service.bus._thread.is_alive()
    finally:
        service.stop(grace=1)
