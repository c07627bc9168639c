"""Bad input gets a 4xx naming what was wrong, never a 500: GUI paging past every database's
integers, JSON in the job form that the API refuses too, args nested past what can be stored."""

from __future__ import annotations

import re

import pytest

import task_scheduler as ts
from test_security import Browser

HUGE = "99999999999999999999"


@pytest.fixture
def browser(service):
    return Browser(ts.create_app(service))


@pytest.mark.parametrize("path", [f"/runs?offset={HUGE}", f"/jobs?offset={HUGE}",
                                  f"/runs?before=0661&pos={HUGE}"])
def test_gui_paging_past_the_databases_integers_is_a_400(browser, path):
    status, _, page = browser.request("GET", path)
    assert status == 400, page
    assert re.search(r"(offset|pos): at most 1000000000", page)


DEEP = "[" * 5000 + "]" * 5000


@pytest.mark.parametrize("field, text, message", [
    ("args", DEEP, "maximum recursion depth"),
    ("kwargs", '{"a": ' + DEEP + "}", "maximum recursion depth"),
    ("args", "[" * 300 + "]" * 300, "nested deeper than 100 levels"),
    ("args", '["m", NaN]', "NaN is not a JSON number"),
    ("kwargs", '{"a": Infinity}', "Infinity is not a JSON number"),
    ("args", '["\\ud800"]', "surrogates not allowed"),
], ids=["args-5000-deep", "kwargs-5000-deep", "args-300-deep", "nan", "infinity", "surrogate"])
def test_gui_job_form_json_the_api_refuses_is_a_422_on_the_field(browser, service, field, text,
                                                                 message):
    form = {"csrf_token": browser.csrf("/jobs/new"), "id": "deep", "kind": "python",
            "target": "logging:debug", "trigger_type": "manual", "max_instances": "1",
            "shell": "auto", field: text}
    status, _, page = browser.request("POST", "/jobs/new", form=form)
    assert status == 422, page[:500]
    assert message in page.replace("&#039;", "'")
    assert service.book.get("deep") is None


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("field, value", [("args", ["m", _nested(300)]),
                                          ("kwargs", {"msg": "m", "a": _nested(300)})],
                         ids=["args", "kwargs"])
def test_api_args_nested_past_what_can_be_stored_is_a_422_naming_the_field(client, field, value):
    answer = client.post("/api/jobs", {"id": "deep", "func": "logging:debug", field: value})
    assert answer.status == 422, answer   # was a 500: pydantic's dump gave up past ~255 levels
    assert answer.json["error"]["details"][0]["field"] == field
    shallow = ["m", _nested(50)] if field == "args" else {"msg": "m", "a": _nested(50)}
    answer = client.post("/api/jobs", {"id": "deep", "func": "logging:debug", field: shallow})
    assert answer.status == 201, answer
    answer = client.post("/api/jobs/deep/run", {field: value})
    assert answer.status == 422, answer
    assert field in answer.json["error"]["message"]
