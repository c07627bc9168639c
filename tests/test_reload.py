"""The reloader: real watchdog events for each editor's way of saving, the hash poll, SIGHUP and
POST /api/reload; every kind of bad file changes nothing and is reported once; apply by id keeps
the schedule phase of what did not change; API jobs and running runs are never disturbed."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

import sqlalchemy as sa
import task_scheduler as ts
import task_scheduler.reload as ts_reload
import task_scheduler.store.schema as ts_schema
from conftest import final_runs, free_port, start_process, wait_for, write_jobs

GOOD = """\
- id: alpha
  command: 'true'
  trigger: {type: interval, hours: 1}
- id: beta
  command: 'true'
  trigger: {type: cron, expression: '30 2 * * *'}
"""

# A bad file also carries a valid edit (alpha's trigger) and a valid new job (delta): if either
# shows up, part of a bad file was applied.
VALID_EDITS = """\
- id: alpha
  command: 'true'
  trigger: {type: interval, hours: 5}
- id: delta
  command: 'true'
  trigger: {type: interval, minutes: 7}
"""

# (name, text appended to VALID_EDITS, line of the error in the whole file, words in the error)
BAD_FILES = [
    ("yaml_syntax", "- id: [broken\n", 7, "YAML syntax"),
    ("yaml_unquoted_step", "- {id: e, command: 'true', trigger: {type: cron, minute: */5}}\n", 7,
     "`*/5` must be quoted"),
    ("yaml_boolean", "- id: e\n  command: 'true'\n  description: no\n"
                     "  trigger: {type: interval, hours: 1}\n", 9,
     "YAML reads unquoted no as a boolean"),
    ("schema_type", "- id: e\n  command: 'true'\n  max_instances: two\n"
                    "  trigger: {type: interval, hours: 1}\n", 9, "max_instances"),
    ("unknown_key", "- id: e\n  command: 'true'\n  colour: red\n"
                    "  trigger: {type: interval, hours: 1}\n", 9, "colour: unknown key"),
    ("invalid_cron", "- id: e\n  command: 'true'\n"
                     "  trigger: {type: cron, expression: '61 * * * *'}\n", 9,
     "not a valid minute field"),
    ("unimportable_callable", "- id: e\n  func: 'no_such_module_xyz:run'\n"
                              "  trigger: {type: interval, hours: 1}\n", 8,
     "cannot import module 'no_such_module_xyz'"),
    ("duplicate_id", "- id: delta\n  command: 'true'\n  trigger: {type: interval, hours: 1}\n", 7,
     "duplicate id (first defined on line 4)"),
    ("api_id_conflict", "- id: mine\n  command: 'true'\n  trigger: {type: interval, hours: 1}\n",
     7, "already used by jobs created through the API"),
]


# saving the way editors do

def save_in_place(path: Path, text: str) -> None:
    """Truncate and write the same inode (nano, VS Code, `cat > jobs.yaml`)."""
    path.write_text(text)


def save_atomic(path: Path, text: str) -> None:
    """Write a temporary file and rename it over jobs.yaml (many editors, Ansible, sed -i)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_vim(path: Path, text: str) -> None:
    """Vim's default: rename jobs.yaml away to a backup, create a new file, drop the backup."""
    backup = path.with_name(path.name + "~")
    os.rename(path, backup)
    path.write_text(text)
    backup.unlink()


SAVE_STYLES = {"in_place": save_in_place, "atomic": save_atomic, "vim": save_vim}


# reading the service

def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def applied(service, text: str) -> bool:
    """True once exactly ``text`` is the applied configuration, without error."""
    config = service.status()["config"]
    return config["hash"] == sha(text) and config["error"] is None


def wait_applied(service, text: str, timeout: float = 5.0) -> dict:
    wait_for(lambda: applied(service, text), timeout, message="the saved jobs.yaml to apply")
    return service.status()["config"]


def snapshot(service) -> dict:
    """What a reload must not change for a job it does not touch."""
    return {j["id"]: (j["next_run_time"], j["state"], j["source"], j["trigger"], j["updated_at"])
            for j in service.jobs()}


def not_applied_records(caplog) -> list:
    return [r for r in caplog.records
            if r.name.startswith("task_scheduler") and "jobs.yaml not applied" in r.getMessage()]


# each way of saving, seen by real watchdog events

@pytest.mark.parametrize("style", SAVE_STYLES)
def test_each_save_style_is_applied_by_events(style, jobs_file, make_service):
    write_jobs(jobs_file, GOOD)
    service = make_service()
    assert {j["id"] for j in service.jobs()} == {"alpha", "beta"}
    new = GOOD + "- {id: gamma, command: 'true', trigger: {type: interval, minutes: 3}}\n"
    SAVE_STYLES[style](jobs_file, new)
    config = wait_applied(service, new, timeout=3)   # poll_interval is 3600: only events
    assert {j["id"] for j in service.jobs()} == {"alpha", "beta", "gamma"}
    assert config["jobs"] == 3 and config["changes"]["added"] == 1
    assert service.reloader._observer.is_alive()


def test_configmap_symlink_swap_is_found_by_the_hash_poll(tmp_path, make_service):
    """Kubernetes updates a ConfigMap by swapping a ``..data`` symlink: no event names
    jobs.yaml, so only the poll sees it."""
    folder = tmp_path / "configmap"
    (folder / "..v1").mkdir(parents=True)
    write_jobs(folder / "..v1" / "jobs.yaml", GOOD)
    os.symlink("..v1", folder / "..data")
    os.symlink("..data/jobs.yaml", folder / "jobs.yaml")
    service = make_service(config_path=str(folder / "jobs.yaml"), poll_interval=0.3)
    assert {j["id"] for j in service.jobs()} == {"alpha", "beta"}
    new = GOOD.replace("hours: 1", "hours: 4")
    (folder / "..v2").mkdir()
    write_jobs(folder / "..v2" / "jobs.yaml", new)
    os.symlink("..v2", folder / "..data_tmp")
    os.replace(folder / "..data_tmp", folder / "..data")   # the atomic swap kubelet does
    shutil.rmtree(folder / "..v1")
    config = wait_applied(service, new)
    assert config["changes"]["rescheduled"] == 1
    assert service.job("alpha")["trigger"]["hours"] == 4


# every kind of bad file: nothing applied, error reported with its line, logged once, cleared

@pytest.mark.parametrize("name,extra,line,words", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_file_changes_nothing_until_a_good_save(name, extra, line, words, jobs_file,
                                                    make_service, caplog):
    write_jobs(jobs_file, GOOD)
    service = make_service()
    if name == "api_id_conflict":
        service.add_job({"id": "mine", "command": "true",
                         "trigger": {"type": "interval", "hours": 2}})
    service.pause("beta")
    before, config_before = snapshot(service), service.status()["config"]
    bad = VALID_EDITS + extra
    save_in_place(jobs_file, bad)
    config = wait_for(lambda: service.status()["config"]["error"] and service.status()["config"],
                      5, message="the error to be reported")
    assert f"{jobs_file}:{line}:" in config["error"], config["error"]
    assert words in config["error"], config["error"]
    assert any(d["line"] == line for d in config["errors"]), config["errors"]
    assert_unchanged(service, before, config_before)
    assert_logged_once(service, caplog, words)
    fixed = GOOD + "- {id: gamma, command: 'true', trigger: {type: interval, minutes: 3}}\n"
    save_atomic(jobs_file, fixed)
    config = wait_applied(service, fixed)
    assert config["errors"] == [] and config["changes"]["added"] == 1
    assert service.job("beta")["state"] == "paused"
    assert service.job("alpha")["next_run_time"] == before["alpha"][0]


def test_deleted_file_changes_nothing_until_it_is_back(jobs_file, make_service, caplog):
    write_jobs(jobs_file, GOOD)
    service = make_service()
    before, config_before = snapshot(service), service.status()["config"]
    jobs_file.unlink()
    config = wait_for(lambda: service.status()["config"]["error"] and service.status()["config"],
                      5, message="the error to be reported")
    assert f"{jobs_file}: cannot read: No such file or directory" in config["error"]
    assert_unchanged(service, before, config_before)
    assert_logged_once(service, caplog, "cannot read")
    save_in_place(jobs_file, GOOD)
    config = wait_applied(service, GOOD)
    assert config["changes"] == {"added": 0, "rescheduled": 0, "modified": 0, "removed": 0,
                                 "unchanged": 2}
    assert snapshot(service) == before


def test_empty_file_is_an_error_not_remove_everything(jobs_file, make_service):
    write_jobs(jobs_file, GOOD)
    service = make_service()
    before = snapshot(service)
    save_in_place(jobs_file, "")
    error = wait_for(lambda: service.status()["config"]["error"], 5)
    assert f"{jobs_file}:1: file is empty; write [] to remove every job" in error
    assert snapshot(service) == before
    save_in_place(jobs_file, "[]\n")
    wait_applied(service, "[]\n")
    assert service.jobs() == []


def assert_unchanged(service, before: dict, config_before: dict) -> None:
    assert snapshot(service) == before
    config = service.status()["config"]
    assert (config["hash"], config["loaded_at"], config["jobs"]) == (
        config_before["hash"], config_before["loaded_at"], config_before["jobs"])
    assert service.scheduler.get_job("delta") is None
    assert service.scheduler.get_job("alpha").trigger.interval.total_seconds() == 3600


def assert_logged_once(service, caplog, words: str) -> None:
    """The events of one save, the poll and manual reloads all retry a bad file: it is still
    logged once."""
    for _ in range(2):
        with pytest.raises(ts.InvalidConfig):
            service.reload()
    with pytest.raises(ts.InvalidConfig):
        service.reload(force=True)
    records = not_applied_records(caplog)
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].levelno == logging.ERROR and words in records[0].getMessage()


# apply by id: what keeps and what moves a schedule

PHASE = """\
- id: options
  command: 'true'
  args: [one]
  trigger: {type: interval, hours: 1}
- id: retimed
  command: 'true'
  trigger: {type: interval, hours: 1}
- id: untouched
  command: 'true'
  trigger: {type: interval, hours: 1}
- id: untouched_paused
  command: 'true'
  trigger: {type: cron, expression: '0 4 * * *'}
- id: retimed_paused
  command: 'true'
  trigger: {type: interval, hours: 1}
"""


def test_options_keep_the_phase_trigger_moves_it_untouched_stay_identical(jobs_file,
                                                                          make_service):
    write_jobs(jobs_file, PHASE)
    service = make_service()
    service.pause("untouched_paused")
    service.pause("retimed_paused")
    # A job wrongly rescheduled gets a later phase: phases are kept to the microsecond, so the
    # reload alone makes that visible; 50 ms more to be sure.
    time.sleep(0.05)
    before = {j["id"]: j for j in service.jobs()}
    edited = (PHASE.replace("args: [one]", "args: [two]\n  timeout: 9\n  description: new")
              .replace("- id: retimed\n  command: 'true'\n  trigger: {type: interval, hours: 1}",
                       "- id: retimed\n  command: 'true'\n  trigger: {type: interval, hours: 2}")
              .replace("- id: retimed_paused\n  command: 'true'\n  trigger: {type: interval, "
                       "hours: 1}", "- id: retimed_paused\n  command: 'true'\n  trigger: "
                       "{type: interval, minutes: 30}"))
    save_atomic(jobs_file, edited)
    config = wait_applied(service, edited)
    assert config["changes"] == {"added": 0, "rescheduled": 2, "modified": 1, "removed": 0,
                                 "unchanged": 2}
    after = {j["id"]: j for j in service.jobs()}
    options = after["options"]
    assert (options["args"], options["timeout"], options["description"]) == (["two"], 9, "new")
    assert options["next_run_time"] == before["options"]["next_run_time"]   # phase kept
    assert after["retimed"]["next_run_time"] > before["retimed"]["next_run_time"]
    assert after["retimed"]["trigger"]["hours"] == 2
    assert after["retimed_paused"]["state"] == "paused"               # pause survives a retime
    assert service.scheduler.get_job("retimed_paused").next_run_time is None
    for job_id in ("untouched", "untouched_paused"):
        assert after[job_id] == before[job_id]                             # identical dicts
    assert after["untouched_paused"]["state"] == "paused"


def test_removed_job_keeps_its_run_history(jobs_file, make_service):
    write_jobs(jobs_file, GOOD)
    service = make_service()
    run = service.run_now("beta")
    final_runs(service, "beta")
    only_alpha = GOOD.split("- id: beta")[0]
    save_vim(jobs_file, only_alpha)
    config = wait_applied(service, only_alpha)
    assert config["changes"]["removed"] == 1
    with pytest.raises(ts.JobNotFound):
        service.job("beta")
    assert service.scheduler.get_job("beta") is None
    assert service.run(run["id"])["status"] == "succeeded"
    assert [r["id"] for r in service.runs(job_id="beta")] == [run["id"]]


def test_api_job_survives_every_reload(jobs_file, make_service):
    write_jobs(jobs_file, GOOD)
    service = make_service()
    service.add_job({"id": "mine", "command": "true", "trigger": {"type": "interval",
                                                                  "hours": 2}})
    service.pause("mine")
    before = service.job("mine")
    for text in (GOOD.replace("hours: 1", "hours: 3"), "[]\n", GOOD):
        save_atomic(jobs_file, text)
        wait_applied(service, text)
        assert service.job("mine") == before
    assert {j["id"] for j in service.jobs()} == {"alpha", "beta", "mine"}
    assert service.jobs(source="api").total == 1


def test_running_run_survives_a_reload_that_changes_then_removes_its_job(jobs_file,
                                                                         make_service):
    slow = "- {id: slow, command: 'sleep 3', trigger: {type: interval, hours: 1}}\n"
    write_jobs(jobs_file, GOOD + slow)
    service = make_service()
    run = service.run_now("slow")
    wait_for(lambda: service.run(run["id"])["status"] == "running", 5)
    retimed = GOOD + slow.replace("hours: 1", "hours: 2").replace("sleep 3", "sleep 4")
    save_in_place(jobs_file, retimed)
    assert wait_applied(service, retimed)["changes"]["rescheduled"] == 1
    save_atomic(jobs_file, GOOD)
    assert wait_applied(service, GOOD)["changes"]["removed"] == 1
    assert service.run(run["id"])["status"] == "running"
    (done,) = final_runs(service, "slow", timeout=10)
    assert done["id"] == run["id"] and done["status"] == "succeeded", done
    assert done["duration_s"] >= 2.9 and done["exit_code"] == 0


# a burst of saves

def test_burst_of_20_quick_saves_ends_in_the_last_file(jobs_file, make_service):
    write_jobs(jobs_file, GOOD)
    service = make_service()
    alpha = service.job("alpha")
    styles = list(SAVE_STYLES.values())
    texts = []
    for i in range(20):
        text = GOOD + "".join(
            f"- {{id: burst_{k}, command: 'true', trigger: {{type: interval, minutes: {i + 1}}}}}\n"
            for k in range(i % 7))
        texts.append(text)
        styles[i % 3](jobs_file, text)
        time.sleep((0, 0.03, 0.15)[i % 3])   # pacing: some saves land between two reloads
    final = texts[-1]
    config = wait_applied(service, final)
    assert config["hash"] == sha(jobs_file.read_text()) == sha(final)
    expected = {"alpha", "beta", *(f"burst_{k}" for k in range(19 % 7))}
    assert {j["id"] for j in service.jobs()} == expected
    assert {service.job(f"burst_{k}")["trigger"]["minutes"] for k in range(19 % 7)} == {20}
    assert service.job("alpha") == alpha   # untouched through all 20 saves
    with service.engine.connect() as conn:
        rows = conn.execute(sa.select(ts_schema.ts_jobs.c.id)).scalars().all()
        aps = conn.execute(sa.text(f"SELECT id FROM {ts_schema.APS_TABLE}")).scalars().all()
    assert set(rows) == expected and set(aps) == expected


# robustness: handler and reload exceptions

@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify's event mask")
def test_writes_to_a_file_beside_jobs_yaml_wake_no_handler(jobs_file, make_service,
                                                           monkeypatch):
    """The database's WAL beside jobs.yaml is written at every commit: inotify is not asked
    for those writes (reload._file_events), so watchdog's thread does not read them."""
    write_jobs(jobs_file, GOOD)
    service = make_service()
    events = []
    monkeypatch.setattr(ts_reload._FileEvents, "dispatch",
                        lambda self, event: events.append(event))
    beside = jobs_file.parent / "other.sqlite-wal"
    with open(beside, "wb") as wal:   # held open, as SQLite holds its WAL
        wal.write(b"x")
        wal.flush()
        wait_for(lambda: events, 5, message="the created event of the new file")
        events.clear()
        for _ in range(50):
            wal.write(b"x" * 100)
            wal.flush()
            os.fsync(wal.fileno())
        save_in_place(jobs_file, GOOD.replace("hours: 1", "hours: 4"))   # an event after them
        wait_for(lambda: any(str(e.src_path).endswith("jobs.yaml") for e in events), 5,
                 message="the save's event")
        seen = list(events)   # before the close below: closing a written file is an event
    assert not [e for e in seen if str(e.src_path).endswith("-wal")], seen
    assert service.reloader._observer.is_alive()


def test_exception_in_the_event_handler_does_not_kill_the_observer(jobs_file, make_service,
                                                                    monkeypatch, caplog):
    write_jobs(jobs_file, GOOD)
    service = make_service()
    real_poke, raised = service.reloader.poke, threading.Event()

    def poke_failing_once(*args, **kwargs):
        if not raised.is_set():
            raised.set()
            raise RuntimeError("boom in a watchdog handler")
        return real_poke(*args, **kwargs)
    monkeypatch.setattr(service.reloader, "poke", poke_failing_once)
    first = GOOD.replace("hours: 1", "hours: 2")
    save_in_place(jobs_file, first)
    wait_for(raised.is_set, 5, message="the handler to raise")
    wait_for(lambda: any("reloader: bad file event" in r.getMessage() for r in caplog.records), 5)
    second = GOOD.replace("hours: 1", "hours: 3")
    save_atomic(jobs_file, second)
    wait_applied(service, second)
    assert service.job("alpha")["trigger"]["hours"] == 3
    assert service.reloader._observer.is_alive()


def test_unexpected_error_in_a_reload_does_not_stop_the_reloader(jobs_file, make_service,
                                                                 monkeypatch, caplog):
    write_jobs(jobs_file, GOOD)
    service = make_service()
    real_reconcile, raised = service.catalog.reconcile, threading.Event()

    def reconcile_failing_once(*args, **kwargs):
        if not raised.is_set():
            raised.set()
            raise RuntimeError("boom in reconcile")
        return real_reconcile(*args, **kwargs)
    monkeypatch.setattr(service.catalog, "reconcile", reconcile_failing_once)
    first = GOOD.replace("hours: 1", "hours: 2")
    save_in_place(jobs_file, first)
    wait_for(lambda: any("reloader: unexpected error" in r.getMessage()
                         for r in caplog.records), 5)
    assert service.status()["config"]["hash"] == sha(GOOD)   # not marked as applied
    second = GOOD.replace("hours: 1", "hours: 3")
    save_in_place(jobs_file, second)
    wait_applied(service, second)
    assert service.job("alpha")["trigger"]["hours"] == 3


def test_reloads_run_off_the_observer_thread(jobs_file, make_service, monkeypatch):
    write_jobs(jobs_file, GOOD)
    service = make_service()
    real_reload, threads = service.jobs_file.reload, []

    def recording_reload(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return real_reload(*args, **kwargs)
    monkeypatch.setattr(service.jobs_file, "reload", recording_reload)
    new = GOOD.replace("hours: 1", "hours: 2")
    save_atomic(jobs_file, new)
    wait_applied(service, new)
    assert threads and set(threads) == {"ts-reloader"}


# POST /api/reload and status

def test_post_api_reload_applies_or_answers_422(jobs_file, service, client):
    save_in_place(jobs_file, GOOD)
    response = client.post("/api/reload")
    assert response.status == 200, response
    config = response.json["config"]
    assert config["hash"] == sha(GOOD) and config["jobs"] == 2 and config["error"] is None
    assert config["path"] == str(jobs_file) and config["loaded_at"]
    status = client.get("/api/status").json["config"]
    assert {k: status[k] for k in ("path", "hash", "jobs", "error")} == {
        "path": str(jobs_file), "hash": sha(GOOD), "jobs": 2, "error": None}
    bad = GOOD + "- id: gamma\n  command: 'true'\n  trigger: {type: cron, minute: 75}\n"
    save_in_place(jobs_file, bad)
    response = client.post("/api/reload")
    assert response.status == 422, response
    error = response.json["error"]
    assert error["code"] == "invalid_config"
    assert f"{jobs_file}:9: gamma: trigger.minute:" in error["message"]
    assert [(d["line"], d["job"], d["field"]) for d in error["details"]] == [
        (9, "gamma", "trigger.minute")]
    status = client.get("/api/status").json["config"]
    assert status["hash"] == sha(GOOD) and status["error"] == error["message"]
    assert {j["id"] for j in client.get("/api/jobs").json["jobs"]} == {"alpha", "beta"}
    save_in_place(jobs_file, GOOD)
    response = client.post("/api/reload")
    assert response.status == 200 and response.json["config"]["error"] is None


# SIGHUP on the real process

@pytest.mark.slow
def test_sighup_reloads_a_change_no_event_reports(tmp_path, database_url):
    """jobs.yaml is a symlink into a subfolder; an in-place write there raises no event in the
    watched folder, and the hash poll of the CLI is 30 s away: only SIGHUP can apply it fast."""
    (tmp_path / "real").mkdir()
    target = write_jobs(tmp_path / "real" / "jobs.yaml", GOOD)
    os.symlink("real/jobs.yaml", tmp_path / "jobs.yaml")
    port = free_port()
    proc = start_process(["--config", str(tmp_path / "jobs.yaml"), "--db", database_url,
                          "--port", str(port)], tmp_path)
    base = f"http://127.0.0.1:{port}/api"
    try:
        try:
            wait_for(lambda: _get(base + "/health", "status") == "ok", 30, 0.1, "the service")
        except AssertionError:
            raise AssertionError((tmp_path / "service.log").read_text()[-3000:]) from None
        assert _job_ids(base) == {"alpha", "beta"}
        new = GOOD + "- {id: gamma, command: 'true', trigger: {type: interval, minutes: 3}}\n"
        target.write_text(new)
        os.kill(proc.pid, signal.SIGHUP)
        # The status's hash is a reload's last step (after the jobs are applied and the applied
        # hash is written for the other nodes): waiting for the jobs and then reading the hash
        # raced that write under load.
        wait_for(lambda: (_get(base + "/status", "config") or {}).get("hash") == sha(new), 30,
                 0.05, "the reload")
        assert _job_ids(base) == {"alpha", "beta", "gamma"}
        assert proc.poll() is None   # SIGHUP reloads; it does not end the process
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    log_text = (tmp_path / "service.log").read_text()
    assert "reconcile (yaml): added 1" in log_text, log_text[-3000:]


def _get(url: str, key: str):
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.loads(resp.read())[key]
    except OSError:
        return None


def _job_ids(base: str) -> set:
    return {j["id"] for j in _get(base + "/jobs", "jobs") or []}


BOMB = """\
- id: bomb
  command: 'true'
  trigger: {type: interval, hours: 1}
  kwargs:
    a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
    b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
    d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
    e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
    f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
    g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
    h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
    i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def poison_bomb(path: Path) -> None:
    save_in_place(path, BOMB)


def poison_zero(path: Path) -> None:
    path.unlink()
    path.symlink_to("/dev/zero")


def poison_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def poison_huge(path: Path) -> None:
    save_in_place(path, GOOD + "# " + "x" * 2_000_000 + "\n")


@pytest.mark.parametrize("poison, words", [
    (poison_bomb, "aliases expand"), (poison_zero, "not a regular file (a character device)"),
    (poison_fifo, "not a regular file (a FIFO)"), (poison_huge, "larger than 1000000 bytes"),
])
def test_poisoned_file_is_a_config_error_and_reloading_goes_on(jobs_file, make_service, poison,
                                                               words):
    write_jobs(jobs_file, GOOD)
    service = make_service(max_config_bytes=1_000_000)
    before, config_before = snapshot(service), service.status()["config"]
    poison(jobs_file)
    error = wait_for(lambda: service.status()["config"]["error"], 10, message="the error")
    assert words in error
    assert_unchanged(service, before, config_before)
    # The reloader is not stuck: a good file is applied again.
    jobs_file.unlink()
    write_jobs(jobs_file, GOOD.replace("hours: 1", "hours: 2", 1))
    service.reload()
    assert service.status()["config"]["error"] is None


def test_validate_refuses_a_bomb_quickly(tmp_path):
    path = tmp_path / "jobs.yaml"
    path.write_text(BOMB)
    started = time.monotonic()
    with pytest.raises(ts.InvalidConfig, match="aliases expand"):
        ts.load_jobs_file(str(path))
    assert time.monotonic() - started < 5
