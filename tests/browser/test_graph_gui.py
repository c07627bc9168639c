"""The step graph and the links of ``after:`` in Chromium, in English and Japanese, light and
dark (screenshots graph-*). The steps come from a fake answer of the service (the job's
definition's ``steps``, the run's ``steps`` of DESIGN 6), as the schema of steps lands apart;
the links of ``after:`` are real."""

from __future__ import annotations

import sys

import pytest
from playwright.sync_api import expect

from conftest import wait_for
from browser.conftest import SCREENSHOTS, _start_server
from browser.test_i18n import DESKTOP, context_for  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser-graph")]
PY = sys.executable
STEPS = [{"id": "extract"}, {"id": "transform", "after": ["extract"]},
         {"id": "load_a", "after": ["transform"]}, {"id": "load_b", "after": ["transform"]},
         {"id": "report_with_a_rather_long_step_name", "after": ["load_a", "load_b"]}]
STATUS = {"extract": "succeeded", "transform": "succeeded", "load_a": "failed",
          "load_b": "running", "report_with_a_rather_long_step_name": "queued"}


@pytest.fixture(scope="module")
def graph_server(tmp_path_factory):
    server, httpd = _start_server(tmp_path_factory.mktemp("gui_graph"), None)
    service = server.service
    service.add_job({"id": "nightly_etl", "command": [PY, "-c", "pass"]})
    service.add_job({"id": "publish", "command": [PY, "-c", "pass"],
                     "after": {"job": "nightly_etl", "on": ["succeeded"]}})
    service.add_job({"id": "alert_team", "command": [PY, "-c", "pass"],
                     "after": {"job": "nightly_etl", "on": ["failed", "timeout"]}})
    first = service.run_now("nightly_etl")
    wait_for(lambda: service.flush() and service.runs(job_id="publish"), 15, 0.1, "publish")
    real_job, real_run = service.job, service.run

    def job(job_id, upcoming=0):
        found = real_job(job_id, upcoming)
        if job_id != "nightly_etl":
            return found
        return {**found, "definition": {**found["definition"], "steps": STEPS}}

    def run(run_id):
        found = real_run(run_id)
        if run_id != first["id"]:
            return found
        return {**found, "steps": [{"step_id": s["id"], "run_id": f"{i:020x}",
                                    "status": STATUS[s["id"]], "after": s.get("after", [])}
                                   for i, s in enumerate(STEPS)]}
    service.job, service.run = job, run
    server.first_run = first["id"]
    yield server
    httpd.shutdown()
    service.stop(grace=0)


@pytest.mark.parametrize("lang,scheme", [("en", "light"), ("ja", "light"), ("en", "dark")])
def test_graph_and_links_on_job_and_run_pages(graph_server, context_for, lang,  # noqa: F811
                                              scheme):
    page = context_for(locale="ja-JP" if lang == "ja" else "en-US", viewport=DESKTOP,
                       color_scheme=scheme).new_page()
    SCREENSHOTS.mkdir(exist_ok=True)
    page.goto(graph_server.url(f"/jobs/nightly_etl?lang={lang}"))
    svg = page.locator('[data-testid="step-graph"]')
    expect(svg).to_be_visible()
    nodes = svg.locator('[data-testid="graph-node"]')
    expect(nodes).to_have_count(5)
    boxes = {s["id"]: nodes.locator(f'xpath=self::*[@data-step-id="{s["id"]}"]').bounding_box()
             for s in STEPS}
    assert boxes["extract"]["x"] < boxes["transform"]["x"] < boxes["load_a"]["x"] \
        < boxes["report_with_a_rather_long_step_name"]["x"]
    assert boxes["load_a"]["x"] == boxes["load_b"]["x"] and \
        boxes["load_a"]["y"] != boxes["load_b"]["y"]
    down = page.locator('[data-testid="job-downstream"]')
    expect(down.locator("a")).to_have_count(2)
    page.screenshot(path=str(SCREENSHOTS / f"graph-{lang}-{scheme}-job.png"), full_page=True)

    page.goto(graph_server.url(f"/runs/{graph_server.first_run}"))
    failed = page.locator('[data-testid="graph-node"][data-step-id="load_a"]')
    expect(failed).to_have_attribute("data-status", "failed")
    expect(failed).to_have_attribute("href", f"/runs/{2:020x}")
    page.screenshot(path=str(SCREENSHOTS / f"graph-{lang}-{scheme}-run.png"), full_page=True)

    page.goto(graph_server.url("/jobs/publish"))
    up = page.locator('[data-testid="job-upstream"]')
    expect(up).to_contain_text("nightly_etl")
    page.screenshot(path=str(SCREENSHOTS / f"graph-{lang}-{scheme}-publish.png"),
                    full_page=True)
    up.locator("a").click()
    expect(page).to_have_url(graph_server.url("/jobs/nightly_etl"))
    after_run = graph_server.service.runs(job_id="publish")[0]
    page.goto(graph_server.url(f"/runs/{after_run['id']}"))
    expect(page.locator('[data-testid="run-upstream"]')).to_have_text(graph_server.first_run)
