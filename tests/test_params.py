"""Declared run parameters (issue 24): a job's ``params`` are validated with their lines; a run
gives values for them (422 naming the parameter and what is valid for anything else), missing
ones take their defaults; commands get TS_PARAM_NAME, python functions keyword arguments; a
rerun repeats them and a scheduled fire uses the defaults."""
from __future__ import annotations

import json
import sys

import pytest

import task_scheduler as ts
from conftest import Client, wait_for
from task_scheduler.errors import InvalidConfig
from task_scheduler.jobsfile import parse_jobs_text

PARAMS = {"ENV": {"choices": ["staging", "prod"], "default": "staging",
                  "description": "where to deploy"},
          "VERSION": {"pattern": r"v\d+\.\d+", "description": "release tag"},
          "NOTE": {"default": "none"}}
JOBS = """
def echo(**kwargs):
    return kwargs
"""


@pytest.fixture
def paramjobs(tmp_path):
    (tmp_path / "paramjobs.py").write_text(JOBS)
    yield "paramjobs"
    sys.modules.pop("paramjobs", None)


def command_job(job_id="deploy", **extra) -> dict:
    return {"id": job_id, "command": ["sh", "-c", 'echo "$TS_PARAM_ENV/$TS_PARAM_VERSION/'
                                                   '$TS_PARAM_NOTE"'],
            "params": PARAMS, "trigger": {"type": "manual"}, **extra}


@pytest.mark.parametrize("entry, line, words", [
    ("params: {1bad: {default: x}}", 4, "a parameter name is a letter"),
    ("params: {P: {pattern: '(['}}", 4, "is not a regular expression"),
    ("params: {P: {choices: [a, b], default: c}}", 4, "'c' is not one of 'a', 'b'"),
    ("params: {P: {pattern: 'v\\d+', default: x1}}", 4, "does not match the pattern"),
    ("params: {P: {default: 3}}", 4, "params.P.default"),
    ("params: {P: {color: red}}", 4, "params.P.color"),
])
def test_declarations_are_checked_with_their_line(entry, line, words):
    text = f"- id: ok\n  command: 'true'\n- id: bad\n  {entry}\n  command: 'true'\n"
    with pytest.raises(InvalidConfig) as caught:
        parse_jobs_text(text, "jobs.yaml")
    assert f"jobs.yaml:{line}:" in str(caught.value), str(caught.value)
    assert words in str(caught.value), str(caught.value)


def test_good_declarations_parse():
    jobs = parse_jobs_text(f"- id: d\n  command: 'true'\n  params: {json.dumps(PARAMS)}\n")
    assert jobs[0].params["ENV"].choices == ["staging", "prod"]
    assert jobs[0].params["VERSION"].default is None


@pytest.mark.parametrize("body, field, words", [
    ({"params": {"VERSION": "v1.2", "COLOR": "red"}}, "params.COLOR",
     "not a parameter of job deploy (declared: ENV, VERSION, NOTE)"),
    ({"params": {"VERSION": "v1.2", "ENV": "dev"}}, "params.ENV",
     "'dev' is not one of 'staging', 'prod'"),
    ({"params": {"VERSION": "1.2"}}, "params.VERSION", "does not match the pattern"),
    ({"params": {"VERSION": "v1.2x"}}, "params.VERSION", "does not match"),   # fullmatch
    ({"params": {"VERSION": 12}}, "params.VERSION", "must be a string, got int"),
    ({"params": {}}, "params.VERSION", "is required (it has no default)"),
    ({}, "params.VERSION", "is required"),
    ({"params": ["VERSION"]}, "params", ""),
])
def test_bad_values_are_422_naming_the_parameter(service, body, field, words):
    client = Client(ts.create_app(service))
    assert client.post("/api/jobs", command_job()).status == 201
    answer = client.post("/api/jobs/deploy/run", body if body else None)
    assert answer.status == 422, answer
    error = answer.json["error"]
    assert any(d["field"] == field for d in error["details"]), error
    assert words in error["message"], error


@pytest.mark.both_databases
def test_values_reach_the_job_on_both_databases(make_service, paramjobs):
    service = make_service()
    client = Client(ts.create_app(service))
    assert client.post("/api/jobs", command_job()).status == 201
    queued = client.post("/api/jobs/deploy/run", {"params": {"VERSION": "v2.0", "ENV": "prod"}})
    assert queued.status == 202, queued
    run = finished(service, queued.json["run"]["id"])
    assert run["stdout"].strip() == "prod/v2.0/none"
    assert run["params"] == {"params": {"ENV": "prod", "VERSION": "v2.0", "NOTE": "none"}}
    again = client.post(f"/api/runs/{run['id']}/rerun")
    assert again.status == 202, again
    assert finished(service, again.json["run"]["id"])["stdout"].strip() == "prod/v2.0/none"
    py = {"id": "py", "func": f"{paramjobs}:echo", "trigger": {"type": "manual"},
          "params": {"WHO": {"default": "me"}, "N": {"choices": ["1", "2"]}}}
    assert client.post("/api/jobs", py).status == 201
    queued = client.post("/api/jobs/py/run", {"params": {"N": "2"}})
    assert queued.status == 202, queued
    assert finished(service, queued.json["run"]["id"])["result"] == {"WHO": "me", "N": "2"}


def test_a_scheduled_fire_uses_the_defaults(make_service, paramjobs):
    service = make_service()
    service.add_job({"id": "tick", "func": f"{paramjobs}:echo", "params": {
        "WHO": {"default": "schedule"}, "MODE": {"choices": ["a", "b"], "default": "b"}},
        "trigger": {"type": "interval", "seconds": 1}})

    def fired():
        service.flush()
        runs = [r for r in service.runs(job_id="tick") if r["status"] == "succeeded"]
        return runs[0] if runs else None
    run = service.run(wait_for(fired, 15, message="a scheduled fire")["id"])
    assert run["trigger"] == "schedule"
    assert run["result"] == {"WHO": "schedule", "MODE": "b"}
    assert run["started_by"] is None


def test_raw_params_stay_a_separate_path(service):
    """Declared values travel under "params" only: a role check can tell them from raw
    args/kwargs/env by the body's keys (models.RAW_RUN_PARAMS)."""
    assert ts.models.RAW_RUN_PARAMS == ("args", "kwargs", "env")
    service.add_job(command_job())
    run = service.run_now("deploy", {"params": {"VERSION": "v1.0"}, "env": {"X": "1"}})
    stored = service.run(run["id"])["params"]
    assert stored == {"params": {"ENV": "staging", "VERSION": "v1.0", "NOTE": "none"},
                      "env": {"X": "1"}}


def finished(service, run_id: str) -> dict:
    def final():
        service.flush()
        run = service.run(run_id)
        return run if run["status"] not in ("queued", "running") else None
    run = wait_for(final, 15, message=f"the end of run {run_id}")
    assert run["status"] == "succeeded", run
    return run


def test_the_clis_param_flag_sends_declared_params():
    from task_scheduler.client import _run_params

    class Api:
        def job(self, job_id):
            return {"kind": "command", "definition": {"params": PARAMS}}
    assert _run_params(Api(), "deploy", ["VERSION=v1.0"]) == {"params": {"VERSION": "v1.0"}}
    assert _run_params(Api(), "deploy", ["OTHER=1"]) == {"env": {"OTHER": "1"}}


def test_the_gui_form_runs_with_declared_params(service):
    from test_security import Browser
    service.add_job(command_job())
    browser = Browser(ts.create_app(service))
    status, _, page = browser.request("GET", "/jobs/deploy")
    assert page.count('data-testid="run-param"') == 3 and 'data-testid="run-params-form"' in page
    form = {"csrf_token": browser.csrf("/jobs/deploy"), "next": "/jobs/deploy",
            "param.ENV": "prod", "param.VERSION": "v9.1", "param.NOTE": ""}
    assert browser.request("POST", "/jobs/deploy/run", form=form)[0] == 303
    run = finished(service, service.runs(job_id="deploy")[0]["id"])
    assert run["stdout"].strip() == "prod/v9.1/none" and run["started_by"] == "local"
    status, _, page = browser.request("GET", f"/runs/{run['id']}")
    assert 'data-testid="run-started-by">local<' in page
    bad = {**form, "param.VERSION": "9"}
    status, headers, _ = browser.request("POST", "/jobs/deploy/run", form=bad)
    assert status == 303 and len(service.runs(job_id="deploy")) == 1   # refused, said in flash
