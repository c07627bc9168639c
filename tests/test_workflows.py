"""Workflows (issue 23): steps inside a job run as child runs in dependency order, their
dependents decided where each end is recorded; failure skips, when:, output passing, retry of
a workflow run, cancel, the API and validation with lines."""

from __future__ import annotations

import datetime as dt
import json
import textwrap

import pytest

import task_scheduler as ts
from task_scheduler.errors import InvalidConfig
from task_scheduler.jobsfile import parse_jobs_text

from conftest import Client, wait_for, write_jobs


def _script(path, body: str):
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return path


@pytest.fixture
def etl(tmp_path):
    """The issue's example with small shell scripts: each step appends 'start NAME' and
    'end NAME' lines with times to a log; load.sh waits until both loads have started (so
    they must overlap), transform fails when the FAIL file exists."""
    log = tmp_path / "log.txt"
    _script(tmp_path / "step.sh", f"""\
        echo "start $1 $(date +%s.%N)" >> {log}
        [ "$1" = transform ] && [ -e {tmp_path}/FAIL ] && {{ echo broken >&2; exit 3; }}
        if [ "$1" = load_a ] || [ "$1" = load_b ]; then
          n=0
          while [ $(grep -c '^start load_' {log}) -lt 2 ] && [ $n -lt 100 ]; do
            sleep 0.05; n=$((n+1)); done
        fi
        echo "end $1 rows=$ROWS $(date +%s.%N)" >> {log}
        echo "some output"
        echo "42 rows"
        """)
    return tmp_path, log


ETL_YAML = """\
- id: nightly_etl
  trigger: {type: manual}
  steps:
    - id: extract
      command: ['./step.sh', 'extract']
      output: ROWS
    - id: transform
      command: ['./step.sh', 'transform']
      after: [extract]
    - id: load_a
      command: ['./step.sh', 'load_a']
      after: [transform]
    - id: load_b
      command: ['./step.sh', 'load_b']
      after: [transform]
    - id: report
      command: './step.sh report'
      shell: true
      after: [load_a, load_b]
      when: all_done
"""


def _lines(log) -> list[list[str]]:
    return [line.split() for line in log.read_text().splitlines()]


def _finished(service, run_id: str, timeout: float = 20.0) -> dict:
    def done():
        service.flush()
        run = service.run(run_id)
        return run if run["status"] in ts.models.FINAL_STATUSES else None
    return wait_for(done, timeout, message=f"workflow run {run_id} ends")


@pytest.fixture
def etl_service(etl, make_service, jobs_file):
    tmp, log = etl
    write_jobs(jobs_file, ETL_YAML.replace("./step.sh", f"{tmp}/step.sh"))
    return make_service(max_workers=4), log


def test_steps_run_in_dependency_order_with_the_loads_overlapping(etl_service):
    service, log = etl_service
    run = service.run_now("nightly_etl")
    done = _finished(service, run["id"])
    assert done["status"] == "succeeded", done
    events = _lines(log)
    order = [(kind, name) for kind, name, *_ in events]
    at = {(kind, name): i for i, (kind, name) in enumerate(order)}
    assert at[("end", "extract")] < at[("start", "transform")]
    assert at[("end", "transform")] < min(at[("start", "load_a")], at[("start", "load_b")])
    assert max(at[("end", "load_a")], at[("end", "load_b")]) < at[("start", "report")]
    # the loads overlap: each started before the other ended
    assert at[("start", "load_a")] < at[("end", "load_b")]
    assert at[("start", "load_b")] < at[("end", "load_a")]
    # each step ran once
    assert sorted(name for kind, name in order if kind == "start") == \
        ["extract", "load_a", "load_b", "report", "transform"]
    # extract's last stdout line reached the later steps as $ROWS
    assert all(line[2] == "rows=42" for line in events if line[0] == "end"
               and line[1] != "extract"), events
    steps = {s["step_id"]: s for s in done["steps"]}
    assert [s["step_id"] for s in done["steps"]] == ["extract", "transform", "load_a",
                                                      "load_b", "report"]
    assert all(s["status"] == "succeeded" and s["attempt"] == 1 for s in steps.values())
    assert steps["extract"]["output"] == "42 rows"
    step_run = service.run(steps["load_a"]["run_id"])
    assert step_run["parent_run"] == run["id"] and step_run["step_id"] == "load_a"
    assert step_run["trigger"] == "step" and "42 rows" in step_run["stdout"]


@pytest.mark.both_databases
def test_a_failed_step_skips_its_dependents_and_retry_runs_only_those(etl_service, etl):
    service, log = etl_service
    tmp, _ = etl
    (tmp / "FAIL").write_text("")
    run = service.run_now("nightly_etl")
    done = _finished(service, run["id"])
    steps = {s["step_id"]: s for s in done["steps"]}
    assert done["status"] == "failed"
    assert steps["transform"]["status"] == "failed"
    assert steps["load_a"]["status"] == steps["load_b"]["status"] == "skipped"
    assert "transform" in steps["load_a"]["error"]
    assert steps["report"]["status"] == "succeeded"   # when: all_done
    started = [name for kind, name, *_ in _lines(log) if kind == "start"]
    assert sorted(started) == ["extract", "report", "transform"]
    # the default listing shows the workflow run, not its steps; trigger=step lists them
    assert [r["id"] for r in service.runs(job_id="nightly_etl")] == [run["id"]]
    assert len(service.runs(job_id="nightly_etl", trigger="step")) == 5

    (tmp / "FAIL").unlink()
    log.write_text("")
    client = Client(ts.create_app(service))
    answer = client.post(f"/api/runs/{run['id']}/retry")
    assert answer.status == 202, answer.text
    assert answer.json["run"]["status"] == "running" and answer.json["run"]["attempt"] == 2
    again = _finished(service, run["id"])
    assert again["status"] == "succeeded" and again["attempt"] == 2
    started = [name for kind, name, *_ in _lines(log) if kind == "start"]
    # extract and report succeeded and are kept; the failed and the skipped ones ran again
    assert sorted(started) == ["load_a", "load_b", "transform"]
    steps = {s["step_id"]: s for s in again["steps"]}
    assert steps["extract"]["attempt"] == 1 and steps["transform"]["attempt"] == 2
    assert len(steps["transform"]["runs"]) == 2
    # the earlier attempt's rows stay
    assert service.run(steps["transform"]["runs"][0])["status"] == "failed"
    assert client.post(f"/api/runs/{run['id']}/retry").status == 409   # all succeeded


def test_retry_of_a_run_that_is_no_finished_workflow_run_is_409(service, jobs_file):
    write_jobs(jobs_file, "- id: plain\n  command: ['true']\n")
    service.reload()
    run = service.run_now("plain")
    wait_for(lambda: service.flush() and service.run(run["id"])["status"] == "succeeded")
    client = Client(ts.create_app(service))
    answer = client.post(f"/api/runs/{run['id']}/retry")
    assert answer.status == 409, answer.text
    assert "no workflow run" in answer.json["error"]["message"]
    assert client.post("/api/runs/nosuchrun/retry").status == 404


def test_step_retries_follow_the_steps_retries(make_service, jobs_file, tmp_path):
    count = tmp_path / "count"
    _script(tmp_path / "flaky.sh", f"""\
        echo x >> {count}
        [ $(wc -l < {count}) -ge 3 ]
        """)
    write_jobs(jobs_file, f"""\
        - id: flow
          retries: {{max: 5, delay: 0}}
          steps:
            - id: flaky
              command: ['{tmp_path}/flaky.sh']
            - id: after
              command: ['true']
              after: [flaky]
              retries: {{max: 0}}
        """)
    service = make_service()
    run = service.run_now("flow")
    done = _finished(service, run["id"])
    assert done["status"] == "succeeded"
    steps = {s["step_id"]: s for s in done["steps"]}
    assert steps["flaky"]["attempt"] == 3 and len(steps["flaky"]["runs"]) == 3
    assert count.read_text().count("x") == 3
    assert steps["after"]["status"] == "succeeded"


@pytest.mark.both_databases
def test_cancel_of_a_workflow_run_cancels_its_steps(make_service, jobs_file, tmp_path):
    write_jobs(jobs_file, """\
        - id: slow
          steps:
            - id: wait
              command: ['sleep', '30']
            - id: next
              command: ['true']
              after: [wait]
        """)
    service = make_service()
    run = service.run_now("slow")
    wait_for(lambda: service.flush() and
             service.run(run["id"]).get("steps", [{}])[0].get("status") == "running")
    service.cancel(run["id"], wait=5)
    done = _finished(service, run["id"])
    assert done["status"] == "cancelled"
    statuses = {s["step_id"]: s["status"] for s in done["steps"]}
    assert statuses == {"wait": "cancelled", "next": "cancelled"}


def test_get_job_carries_the_step_graph(etl_service):
    service, _ = etl_service
    job = Client(ts.create_app(service)).get("/api/jobs/nightly_etl").json
    assert job["kind"] == "workflow"
    graph = {s["id"]: s for s in job["steps"]}
    assert graph["report"]["after"] == ["load_a", "load_b"]
    assert graph["report"]["when"] == "all_done" and graph["extract"]["output"] == "ROWS"
    assert graph["extract"]["kind"] == "command"


def test_steps_do_not_count_against_max_instances_nor_as_the_last_run(etl_service):
    service, _ = etl_service
    client = Client(ts.create_app(service))   # its counters start now
    run = service.run_now("nightly_etl")
    _finished(service, run["id"])
    assert service.job("nightly_etl")["last_run"]["id"] == run["id"]
    metrics = client.get("/metrics").text
    assert 'task_scheduler_step_runs_finished_total{job_id="nightly_etl",step_id="load_a",' \
        'status="succeeded"} 1' in metrics
    assert 'runs_finished_total{job_id="nightly_etl",status="succeeded"} 1' in metrics


@pytest.mark.parametrize("steps, line, words", [
    ("""\
    - id: a
      command: ['true']
      after: [b]
    - id: b
      command: ['true']
      after: [a]
""", 6, ["cycle", "a -> b -> a"]),
    ("""\
    - id: a
      command: ['true']
      after: [nope]
""", 6, ["unknown step 'nope'"]),
    ("""\
    - id: a
      command: ['true']
    - id: a
      command: ['true']
""", 6, ["duplicate step id 'a'"]),
    ("""\
    - id: a
      command: ['true']
      after: [a]
""", 6, ["after itself", "a -> a"]),
    ("""\
    - id: a
      after: []
""", 4, ["exactly one of func"]),
    ("""\
    - id: a
      command: ['true']
      when: sometimes
""", 6, ["when"]),
])
def test_invalid_graphs_are_errors_with_lines(steps, line, words):
    text = "- id: flow\n  trigger: {type: manual}\n  steps:\n" + textwrap.indent(
        textwrap.dedent(steps), "  ")
    with pytest.raises(InvalidConfig) as info:
        parse_jobs_text(text, "jobs.yaml")
    message = str(info.value)
    assert f"jobs.yaml:{line}:" in message, message
    for word in words:
        assert word in message, message


def test_a_workflow_job_has_no_command_of_its_own():
    with pytest.raises(InvalidConfig) as info:
        parse_jobs_text("- id: flow\n  command: ['true']\n  steps:\n    - id: a\n"
                        "      command: ['true']\n", "jobs.yaml")
    assert "no command of its own" in str(info.value)


def test_workflow_run_notifies_once_at_its_end(make_service, jobs_file):
    write_jobs(jobs_file, """\
        - id: flow
          notify: [{webhook: 'http://127.0.0.1:9/hook', on: [failed, succeeded]}]
          steps:
            - id: a
              command: ['true']
            - id: b
              command: ['false']
              after: [a]
        """)
    service = make_service()
    run = service.run_now("flow")
    _finished(service, run["id"])
    with service.engine.connect() as conn:
        notes = conn.exec_driver_sql("SELECT run_id, event FROM ts_notifications").all()
    assert [(n.run_id, n.event) for n in notes] == [(run["id"], "failed")]


def test_old_and_new_columns(service):
    with service.engine.connect() as conn:
        columns = {c["name"] for c in __import__("sqlalchemy").inspect(conn).get_columns(
            "ts_runs")}
    assert {"parent_run", "step_id", "workflow", "step_output"} <= columns
    assert json is not None and dt is not None


def test_retention_keeps_the_steps_of_a_workflow_run_still_going(make_service, jobs_file):
    write_jobs(jobs_file, """\
        - id: flow
          steps:
            - id: quick
              command: ['true']
            - id: slow
              command: ['sleep', '30']
              after: [quick]
        """)
    service = make_service()
    run = service.run_now("flow")
    wait_for(lambda: service.flush() and
             service.run(run["id"]).get("steps", [{}, {}])[1].get("status") == "running")
    quick = service.run(run["id"])["steps"][0]["run_id"]
    service.store.retention.prune(keep_runs=1, keep_days=30)
    assert service.store.queries.run(quick).status == "succeeded"   # its workflow run goes on
    service.cancel(run["id"], wait=5)
    assert _finished(service, run["id"])["status"] == "cancelled"
    service.store.retention.prune(keep_runs=1, keep_days=30)
    assert service.store.queries.run(quick) is None


def test_gui_pages_of_a_workflow_render(etl_service):
    service, _ = etl_service
    run = service.run_now("nightly_etl")
    _finished(service, run["id"])
    client = Client(ts.create_app(service))
    for path in ("/jobs", "/jobs/nightly_etl", "/runs", "/runs?trigger=step", "/",
                 f"/runs/{run['id']}", "/jobs/nightly_etl/yaml"):
        answer = client.get(path)
        assert answer.status == 200, (path, answer.text[:500])
    page = client.get(f"/runs/{run['id']}").text
    assert page.count('data-testid="step-row"') == 5 and 'data-step-id="load_b"' in page


def test_a_workflow_runs_env_reaches_every_step(make_service, jobs_file):
    write_jobs(jobs_file, """\
        - id: flow
          steps:
            - {id: a, command: 'echo day=$DAY', shell: true}
            - {id: b, command: 'echo day=$DAY', shell: true, after: [a]}
        """)
    service = make_service()
    with pytest.raises(ts.errors.InvalidJob, match="env only"):
        service.run_now("flow", {"args": ["x"]})
    run = service.run_now("flow", {"env": {"DAY": "2026-12-05"}})
    done = _finished(service, run["id"])
    for step in done["steps"]:
        assert service.run(step["run_id"])["stdout"] == "day=2026-12-05\n"
