"""The command-line client (task_scheduler/client.py): every command run as a real
``python -m task_scheduler ...`` against a real service process, on SQLite and a PostgreSQL node;
plus the parsing that keeps ``task-scheduler run`` starting the service."""

from __future__ import annotations

import datetime as dt
import json
import queue
import signal
import subprocess
import sys
import threading
import urllib.request
import uuid

import pytest

import task_scheduler.cli as ts_cli
import task_scheduler.client as ts_client
from conftest import child_env, free_port, start_process, wait_for, write_jobs

TOKEN = "a-token-of-twenty-chars"


def jobs_yaml(folder) -> None:
    """Jobs for every command: a gated one waits for a file, so a test knows it still runs."""
    module = f"cli_jobs_{uuid.uuid4().hex[:8]}"
    (folder / f"{module}.py").write_text(
        "def greet(name='x', times=1):\n    print(name * times)\n")
    write_jobs(folder / "jobs.yaml", f"""
        - {{id: ok, command: 'echo hello', trigger: {{type: manual}}}}
        - {{id: bad, command: "sh -c 'echo oops >&2; exit 3'", trigger: {{type: manual}}}}
        - id: gated
          command: [sh, -c, 'echo first; while [ ! -e "$GATE" ]; do sleep 0.05; done; echo second']
          env: {{GATE: /nonexistent}}
          timeout: 120
          max_instances: 3
          trigger: {{type: manual}}
        - {{id: nightly_backup, command: 'true', trigger: {{type: interval, hours: 1}}}}
        - {{id: greet, func: '{module}:greet', trigger: {{type: manual}}}}
    """)


def serve(folder, db_url: str, token: str | None = None):
    """A real service on a free port; (process, url)."""
    jobs_yaml(folder)
    port = free_port()
    env = {"TS_API_TOKEN": token} if token else {}
    proc = start_process(["--config", str(folder / "jobs.yaml"), "--db", db_url,
                          "--port", str(port)], folder, env)
    log = folder / "service.log"
    wait_for(lambda: b"serving on" in log.read_bytes() or proc.poll() is not None, 60, 0.1,
             "the service")
    assert proc.poll() is None, log.read_text()
    return proc, f"http://127.0.0.1:{port}"


def stop(proc) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    folder = tmp_path_factory.mktemp("client")
    proc, address = serve(folder, f"sqlite:///{folder / 'ts.sqlite'}")
    yield address
    stop(proc)


def client_env(token: str | None = None, **extra) -> dict:
    env = child_env(**extra)
    env.pop("TS_URL", None)
    env.pop("TS_API_TOKEN", None)
    env.pop("TS_API_TOKEN_FILE", None)
    if token:
        env["TS_API_TOKEN"] = token
    return env


def cli(*args: str, url: str, token: str | None = None, **env) -> subprocess.CompletedProcess:
    """The real command line, as a user types it."""
    return subprocess.run([sys.executable, "-m", "task_scheduler", *args, "--url", url],
                          capture_output=True, text=True, timeout=90,
                          env=client_env(token, **env))


def api(url: str, path: str, token: str | None = None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url + path, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def start_run(url: str, job: str, *params: str) -> str:
    args = [item for p in params for item in ("--param", p)]
    result = cli("run", job, *args, "--json", url=url)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["id"]


def status_of(url: str, run_id: str) -> str:
    return api(url, f"/api/runs/{run_id}")["status"]


class Lines:
    """A child's stdout read line by line on a thread, so a test waits with a deadline."""

    def __init__(self, proc):
        self.proc, self.lines = proc, queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)

    def next(self, timeout: float = 30.0) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line within {timeout}s") from None


def follow(url: str, *args: str) -> tuple[subprocess.Popen, Lines]:
    proc = subprocess.Popen([sys.executable, "-m", "task_scheduler", *args, "--url", url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=client_env())
    return proc, Lines(proc)


# -- against a real service ------------------------------------------------------------------


@pytest.mark.slow
def test_jobs_and_show_print_local_time_and_name_the_zone(url):
    tokyo = cli("jobs", url=url, TZ="Asia/Tokyo")
    assert tokyo.returncode == 0, tokyo.stderr
    header, *rows = tokyo.stdout.splitlines()
    assert header.split()[:3] == ["ID", "STATE", "SCHEDULE"] and "NEXT RUN (JST)" in header
    assert [row.split()[0] for row in rows] == ["bad", "gated", "greet", "nightly_backup", "ok"]
    job = api(url, "/api/jobs/nightly_backup")
    next_utc = dt.datetime.fromisoformat(job["next_run_time"])
    in_tokyo = (next_utc + dt.timedelta(hours=9)).strftime("%Y-%m-%d %H:%M:%S")
    assert in_tokyo in next(row for row in rows if row.startswith("nightly_backup"))
    shown = cli("show", "nightly_backup", url=url, TZ="Asia/Tokyo")
    assert shown.returncode == 0, shown.stderr
    assert "every 1h" in shown.stdout and "next (JST)" in shown.stdout
    assert in_tokyo in shown.stdout and "command: true" in shown.stdout


@pytest.mark.slow
def test_json_is_the_apis_json(url):
    jobs = cli("jobs", "--json", url=url)
    assert json.loads(jobs.stdout) == api(url, "/api/jobs?limit=10000")
    status = json.loads(cli("status", "--json", url=url).stdout)
    assert status["node"] == api(url, "/api/status")["node"] and "runs_24h" in status
    show = json.loads(cli("show", "ok", "--json", url=url).stdout)
    assert show["id"] == "ok" and show["kind"] == "command"


@pytest.mark.slow
def test_run_wait_exits_as_the_run_did(url):
    good = cli("run", "ok", "--wait", url=url)
    assert good.returncode == 0, good.stderr
    assert "of ok: succeeded" in good.stdout and "exit code 0" in good.stdout
    failed = cli("run", "bad", "--wait", url=url)
    assert failed.returncode == 1, failed.stderr
    assert "of bad: failed" in failed.stdout and "exit code 3" in failed.stdout
    as_json = cli("run", "bad", "--wait", "--json", url=url)
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["stderr"] == "oops\n"


@pytest.mark.slow
def test_run_prints_the_run_and_logs_prints_its_output(url):
    queued = cli("run", "ok", url=url)
    assert queued.returncode == 0 and "task-scheduler logs" in queued.stdout
    run_id = queued.stdout.split()[1]
    wait_for(lambda: status_of(url, run_id) == "succeeded", 30, 0.1, "the run")
    logs = cli("logs", run_id, url=url)
    assert (logs.returncode, logs.stdout) == (0, "hello\n")
    bad_id = start_run(url, "bad")
    wait_for(lambda: status_of(url, bad_id) == "failed", 30, 0.1, "the failing run")
    logs = cli("logs", bad_id, url=url)
    assert (logs.stdout, logs.stderr) == ("", "oops\n")
    missing = cli("logs", "0123456789abcdef", url=url)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


@pytest.mark.slow
def test_logs_follow_prints_lines_while_the_run_is_still_running(url, tmp_path):
    gate = tmp_path / "go"
    run_id = start_run(url, "gated", f"GATE={gate}")
    proc, lines = follow(url, "logs", run_id, "-f")
    try:
        assert lines.next() == "first\n"
        assert status_of(url, run_id) == "running"   # it waits for the gate: the line came live
        gate.touch()
        assert lines.next() == "second\n"
        assert proc.wait(30) == 0
    finally:
        gate.touch()
        proc.kill()
    assert status_of(url, run_id) == "succeeded"


@pytest.mark.slow
def test_run_follow_streams_the_output_then_exits_as_the_run(url, tmp_path):
    gate = tmp_path / "go"
    proc, lines = follow(url, "run", "gated", "--follow", "--param", f"GATE={gate}")
    try:
        assert lines.next() == "first\n"
        # not ended (the gate is shut); its row may still say queued for a moment after the
        # process started, until the history writer records it running
        newest = api(url, "/api/runs?job_id=gated&limit=1")["runs"]
        assert newest and newest[0]["status"] in ("queued", "running"), \
            f"the run ended before its first line was shown: {newest}"
        gate.touch()
        assert lines.next() == "second\n"
        assert proc.wait(30) == 0
        assert "of gated: succeeded" in proc.stderr.read()   # stdout is the run's output alone
    finally:
        gate.touch()
        proc.kill()


@pytest.mark.slow
def test_params_are_env_for_commands_and_kwargs_for_python(url, tmp_path):
    gate = tmp_path / "open"
    gate.touch()
    result = cli("run", "gated", "--param", f"GATE={gate}", "--wait", "--json", url=url)
    assert result.returncode == 0, result.stderr
    run = api(url, f"/api/runs/{json.loads(result.stdout)['id']}")
    assert run["params"]["env"] == {"GATE": str(gate)}
    result = cli("run", "greet", "--param", "name=ab", "--param", "times=3", "--wait", "--json",
                 url=url)
    assert result.returncode == 0, result.stderr
    run = json.loads(result.stdout)
    assert run["stdout"] == "ababab\n" and run["params"]["kwargs"] == {"name": "ab", "times": 3}
    wrong = cli("run", "greet", "--param", "nope", url=url)
    assert wrong.returncode == 2 and "NAME=VALUE" in wrong.stderr
    unknown = cli("run", "greet", "--param", "colour=red", url=url)
    assert unknown.returncode == 2 and "(HTTP 422)" in unknown.stderr
    assert "colour" in unknown.stderr, unknown.stderr


@pytest.mark.slow
def test_runs_filters_and_since(url):
    assert cli("run", "bad", "--wait", url=url).returncode == 1
    result = cli("runs", "--job", "bad", "--status", "failed", "--since", "2h", "--json", url=url)
    runs = json.loads(result.stdout)["runs"]
    assert runs and {(r["job_id"], r["status"]) for r in runs} == {("bad", "failed")}
    table = cli("runs", "--job", "bad", "--limit", "1", url=url, TZ="UTC")
    header, first, *rest = table.stdout.splitlines()
    assert "STARTED (UTC)" in header and first.split()[:3] == [runs[0]["id"], "bad", "failed"]
    future = cli("runs", "--since", "2099-01-01", url=url)
    assert future.stdout.strip() == "no runs match"
    wrong = cli("runs", "--since", "yesterday", url=url)
    assert wrong.returncode == 2 and "neither a duration" in wrong.stderr


@pytest.mark.slow
def test_runs_grep_prints_the_matching_line_and_the_new_filters(url):
    assert cli("run", "bad", "--wait", url=url).returncode == 1
    result = cli("runs", "--grep", "OOPS", "--trigger", "manual", "--since", "1h", url=url)
    header, first, line, *rest = result.stdout.splitlines()
    assert first.split()[1:3] == ["bad", "failed"] and line == "    stderr:1: oops"
    assert all(r.startswith("    stderr:1") or r.split()[1] == "bad" for r in rest
               if not r.startswith("("))
    assert cli("runs", "--grep", "oops", "--until", "2000-01-01", url=url).stdout.strip() == \
        "no runs match"
    assert cli("runs", "--grep", "oops", "--node", "elsewhere", url=url).stdout.strip() == \
        "no runs match"
    as_json = json.loads(cli("runs", "--grep", "oops", "--json", url=url).stdout)
    assert as_json["runs"][0]["match"]["line"] == "oops"
    wrong = cli("runs", "--until", "soon", url=url)
    assert wrong.returncode == 2 and "--until 'soon' is neither" in wrong.stderr
    bad = cli("runs", "--trigger", "cron", url=url)
    assert bad.returncode == 2 and "trigger" in bad.stderr


@pytest.mark.slow
def test_pause_resume_and_status(url):
    paused = cli("pause", "nightly_backup", url=url)
    assert paused.returncode == 0 and "nightly_backup: paused" in paused.stdout
    assert api(url, "/api/jobs/nightly_backup")["state"] == "paused"
    resumed = cli("resume", "nightly_backup", url=url)
    assert resumed.returncode == 0 and "nightly_backup: scheduled" in resumed.stdout
    assert api(url, "/api/jobs/nightly_backup")["state"] == "scheduled"
    status = cli("status", url=url)
    assert status.returncode == 0
    node = api(url, "/api/status")["node"]
    assert f"{node} (leader" in status.stdout and "jobs.yaml" in status.stdout


@pytest.mark.slow
def test_cancel_a_running_command(url):
    run_id = start_run(url, "gated")   # its gate never opens
    wait_for(lambda: status_of(url, run_id) == "running", 30, 0.1, "the run to start")
    result = cli("cancel", run_id, url=url)
    assert result.returncode == 0, result.stderr
    assert f"run {run_id} of gated:" in result.stdout
    wait_for(lambda: status_of(url, run_id) == "cancelled", 30, 0.1, "the cancel")
    again = cli("cancel", run_id, url=url)
    assert again.returncode == 2 and "(HTTP 409)" in again.stderr


@pytest.mark.slow
def test_an_unknown_job_gets_a_did_you_mean(url):
    for args in (("show", "nigthly_backup"), ("run", "nigthly_backup", "--wait"),
                 ("pause", "nightly-backup"), ("runs", "--job", "nightly_backup_")):
        result = cli(*args, url=url)
        assert result.returncode == 2, args
        assert "did you mean nightly_backup?" in result.stderr, result.stderr
    far = cli("show", "zzzzzz", url=url)
    assert far.returncode == 2 and "lists the 5 there are" in far.stderr


@pytest.mark.slow
def test_a_token_protected_service_says_to_set_ts_api_token(tmp_path):
    proc, address = serve(tmp_path, f"sqlite:///{tmp_path / 'ts.sqlite'}", token=TOKEN)
    try:
        missing = cli("jobs", url=address)
        assert missing.returncode == 2 and "set TS_API_TOKEN" in missing.stderr
        wrong = cli("jobs", url=address, token="not-the-token-at-all")
        assert wrong.returncode == 2 and "TS_API_TOKEN is not its token" in wrong.stderr
        right = cli("run", "ok", "--wait", url=address, token=TOKEN)
        assert right.returncode == 0, right.stderr
    finally:
        stop(proc)


@pytest.mark.slow
@pytest.mark.postgres
def test_the_client_on_a_postgresql_node(tmp_path, postgres_url):
    proc, address = serve(tmp_path, postgres_url)
    try:
        assert cli("run", "ok", "--wait", url=address).returncode == 0
        assert cli("run", "bad", "--wait", url=address).returncode == 1
        gate = tmp_path / "go"
        run_id = start_run(address, "gated", f"GATE={gate}")
        follower, lines = follow(address, "logs", run_id, "-f")
        try:
            assert lines.next() == "first\n"
            assert status_of(address, run_id) == "running"
            gate.touch()
            assert lines.next() == "second\n" and follower.wait(30) == 0
        finally:
            gate.touch()
            follower.kill()
        runs = json.loads(cli("runs", "--json", url=address).stdout)["runs"]
        assert {r["job_id"] for r in runs} == {"ok", "bad", "gated"}
    finally:
        stop(proc)


# -- without a service -----------------------------------------------------------------------


def test_an_unreachable_url_says_so_and_names_url(capsys):
    port = free_port()   # nothing listens there
    assert ts_cli.main(["jobs", "--url", f"http://127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert f"cannot reach the service at http://127.0.0.1:{port}" in err
    assert "--url" in err and "TS_URL" in err
    assert ts_cli.main(["status", "--url", "localhost:8000"]) == 2
    assert "is not an address like http://127.0.0.1:8000" in capsys.readouterr().err


def test_ts_url_is_read_when_there_is_no_flag(capsys, monkeypatch):
    port = free_port()
    monkeypatch.setenv("TS_URL", f"http://127.0.0.1:{port}")
    assert ts_cli.main(["jobs"]) == 2
    assert f"http://127.0.0.1:{port}" in capsys.readouterr().err


def parse(*argv: str):
    return ts_cli._parser().parse_args(ts_cli._default_command(list(argv)))


def test_run_without_a_job_is_still_the_service():
    for argv in ([], ["run"], ["run", "--config", "x.yaml"], ["--port", "9000"]):
        args = parse(*argv)
        assert args.command == "run" and args.job is None, argv
    args = parse("run", "backup", "--wait", "--param", "a=1", "--param", "b=2")
    assert (args.job, args.wait, args.param) == ("backup", True, ["a=1", "b=2"])


@pytest.mark.parametrize("argv, said", [
    (["run", "backup", "--port", "9000"], "--port: flags of the service"),
    (["run", "--wait"], "--wait needs a JOB"),
    (["run", "--config", "x.yaml", "--url", "http://h:1"], "--url needs a JOB"),
    (["backup"], "invalid choice: 'backup'"),
])
def test_the_service_and_the_client_do_not_mix(argv, said, capsys):
    with pytest.raises(SystemExit) as stopped:
        ts_cli.main(argv)
    assert stopped.value.code == 2 and said in capsys.readouterr().err


def test_help_lists_the_client_commands(capsys):
    with pytest.raises(SystemExit):
        ts_cli.main(["--help"])
    out = capsys.readouterr().out
    for command in ("jobs", "show JOB", "run JOB [--param K=V] [--wait] [--follow]", "runs [--job",
                    "logs RUN [-f]", "pause JOB", "resume JOB", "cancel RUN", "status",
                    "TS_API_TOKEN", "--config"):
        assert command in out, command


def test_since_is_a_duration_back_or_a_local_time():
    before = dt.datetime.now(dt.UTC)
    two_hours = dt.datetime.fromisoformat(ts_client._since("2h"))
    after = dt.datetime.now(dt.UTC)
    assert before - dt.timedelta(hours=2) <= two_hours <= after - dt.timedelta(hours=2)
    assert dt.datetime.fromisoformat(ts_client._since("90m")) < two_hours + dt.timedelta(
        minutes=31)
    assert dt.datetime.fromisoformat(ts_client._since("2026-12-01T09:00+09:00")) == \
        dt.datetime(2026, 12, 1, 0, 0, tzinfo=dt.UTC)
    assert dt.datetime.fromisoformat(ts_client._since("2026-12-01")).tzinfo is not None
    with pytest.raises(ts_client.ClientError, match="neither a duration"):
        ts_client._since("2 hours ago")


def test_tables_keep_wide_characters_in_their_columns():
    text = ts_client._table(("ID", "STATE"), [("データ", "paused"), ("ab", None)], "none")
    header, wide, narrow = text.splitlines()
    assert header.index("STATE") == 8   # 3 wide characters fill the 6 columns: no padding
    assert wide.index("paused") == 5
    assert narrow == "ab      -"
    assert ts_client._table(("ID",), [], "no jobs") == "no jobs"


def test_params_map_to_env_for_commands_and_kwargs_for_python():
    class Api:
        def __init__(self, kind):
            self.kind = kind

        def job(self, job_id):
            return {"id": job_id, "kind": self.kind}
    pairs = ["n=3", "flag=true", "name=report", "code=\"007\"", "x=a=b"]
    assert ts_client._run_params(Api("command"), "j", pairs) == {"env": {
        "n": "3", "flag": "true", "name": "report", "code": "\"007\"", "x": "a=b"}}
    assert ts_client._run_params(Api("python"), "j", pairs) == {"kwargs": {
        "n": 3, "flag": True, "name": "report", "code": "007", "x": "a=b"}}
