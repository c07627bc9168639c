"""Declared parameters and the audit log in a real browser, in English and Japanese: the job
page's run form has a field per declared param (a select for choices, a text field with the
pattern otherwise, the description as a hint), running with it queues a run started by the
actor with those values; the audit page lists it, filters by action and pages on (screenshots
audit-*)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from conftest import wait_for
from browser.conftest import SCREENSHOTS, _start_server
from browser.test_i18n import DESKTOP, context_for  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser-audit")]
WORDS = {"en": {"heading": "Audit log", "run": "Run with its parameters"},
         "ja": {"heading": "監査ログ", "run": "パラメーターを指定して実行"}}


@pytest.fixture(scope="module")
def audit_server(tmp_path_factory):
    server, httpd = _start_server(tmp_path_factory.mktemp("gui_audit"), None)
    service = server.service
    service.add_job({"id": "deploy", "description": "Deploys a release",
                     "command": ["sh", "-c", "echo $TS_PARAM_ENV $TS_PARAM_VERSION"],
                     "params": {"ENV": {"choices": ["staging", "prod"], "default": "staging",
                                        "description": "where to deploy"},
                                "VERSION": {"pattern": "v[0-9]+", "description":
                                            "release tag, e.g. v12"}}})
    for n in range(60):   # more than a page of the audit log
        service.pause("pause_job") if n % 2 == 0 else service.resume("pause_job")
    SCREENSHOTS.mkdir(exist_ok=True)
    try:
        yield server
    finally:
        httpd.shutdown()
        service.stop(grace=0)


@pytest.mark.parametrize("lang, locale", [("en", "en-US"), ("ja", "ja-JP")])
def test_run_with_declared_params_then_see_it_in_the_audit_log(audit_server, context_for,  # noqa: F811
                                                                lang, locale):
    page = context_for(locale=locale, viewport=DESKTOP).new_page()
    page.goto(audit_server.url(f"/jobs/deploy?lang={lang}"))
    form = page.locator('[data-testid="run-params-form"]')
    expect(page.get_by_role("heading", name=WORDS[lang]["run"])).to_be_visible()
    expect(form.locator('[data-testid="run-param"]')).to_have_count(2)
    env = form.locator('[data-testid="run-param"][data-name="ENV"] select')
    expect(env).to_have_value("staging")
    version = form.locator('[data-testid="run-param"][data-name="VERSION"] input')
    expect(version).to_have_attribute("pattern", "v[0-9]+")
    expect(form).to_contain_text("release tag, e.g. v12")
    env.select_option("prod")
    version.fill("12")   # not matching: the browser keeps the form
    form.locator('[data-testid="action-run-declared"]').click()
    assert version.evaluate("el => !el.validity.valid")   # the browser kept the form back
    version.fill(f"v{len(lang)}")
    page.screenshot(path=str(SCREENSHOTS / f"audit-{lang}-run-params.png"), full_page=True)
    form.locator('[data-testid="action-run-declared"]').click()
    service = audit_server.service

    def ran():
        service.flush()
        runs = [r for r in service.runs(job_id="deploy") if r["status"] == "succeeded"]
        return service.run(runs[0]["id"]) if runs else None
    run = wait_for(ran, 15, message="the run with params")
    assert run["stdout"].strip() == f"prod v{len(lang)}"
    page.goto(audit_server.url(f"/runs/{run['id']}"))
    expect(page.locator('[data-testid="run-started-by"]')).to_have_text("local")

    page.goto(audit_server.url("/audit"))
    expect(page.get_by_role("heading", name=WORDS[lang]["heading"])).to_be_visible()
    rows = page.locator('[data-testid="audit-row"]')
    expect(rows).to_have_count(50)
    expect(rows.first).to_have_attribute("data-action", "run.now")
    expect(rows.first).to_contain_text(f"'VERSION': 'v{len(lang)}'")
    page.screenshot(path=str(SCREENSHOTS / f"audit-{lang}-log.png"), full_page=True)
    page.locator('[data-testid="audit-next"]').click()
    expect(rows.first).to_have_attribute("data-action", re.compile(r"job\.(pause|resume)"))
    page.goto(audit_server.url("/audit?action=run."))
    expect(rows).to_have_count(1 if lang == "en" else 2)
    page.fill('input[name="action"]', "job.create")
    page.fill('input[name="object"]', "job:deploy")
    page.locator('[data-testid="audit-filter"] button[type="submit"]').click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("deploy")
    page.screenshot(path=str(SCREENSHOTS / f"audit-{lang}-filtered.png"), full_page=True)
