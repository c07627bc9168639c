"""The GUI for each role, in a real browser: a viewer, an operator and an admin log in by name
and password and see what they may do (the rest hidden), their name and role in the top bar;
an API token made on /account is shown once; the admin's /users page; English and Japanese."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from task_scheduler.access import Access

from .conftest import _start_server

PASSWORD = "correct horse battery"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def people_server(tmp_path_factory):
    server, httpd = _start_server(tmp_path_factory.mktemp("gui_roles"), None)
    access = Access(server.service.store, server.service.config)
    for role in ("viewer", "operator", "admin"):
        access.add_user(f"{role}1", role, PASSWORD)
    yield server
    httpd.shutdown()
    server.service.stop()


def log_in(page, server, who: str, lang: str = "en") -> None:
    page.goto(server.url(f"/login?lang={lang}"))
    page.locator("#f-name").fill(who)
    page.locator("#f-token").fill(PASSWORD)
    page.locator("form[data-testid=login-form] button[type=submit]").click()
    expect(page.get_by_test_id("whoami")).to_contain_text(who)


@pytest.mark.parametrize("lang", ["en", "ja"])
def test_each_role_sees_what_it_may_do(page, people_server, shot, lang):
    for role in ("viewer", "operator", "admin"):
        page.context.clear_cookies()
        log_in(page, people_server, f"{role}1", lang)
        expect(page.get_by_test_id("whoami")).to_have_attribute("data-role", role)
        page.goto(people_server.url("/jobs/pause_job"))
        run = page.locator("[data-testid=action-run]")
        expect(run).to_have_count(0 if role == "viewer" else 1)
        expect(page.get_by_test_id("action-edit")).to_have_count(1 if role == "admin" else 0)
        expect(page.locator("nav.nav a[href='/users']")).to_have_count(
            1 if role == "admin" else 0)
        shot(page, f"{lang}-{role}-job")
        page.goto(people_server.url("/jobs/new"))
        if role == "admin":
            expect(page.locator("form")).not_to_have_count(0)
        else:
            assert page.locator("h1").inner_text()   # the 403 page, in this language
            expect(page.locator("main")).to_contain_text("admin" if lang == "en" else "管理者")
            shot(page, f"{lang}-{role}-forbidden")


def test_account_tokens_and_the_users_page(page, people_server, shot):
    log_in(page, people_server, "operator1")
    page.goto(people_server.url("/account"))
    page.locator("form[data-testid=token-form] input[name=name]").fill("laptop")
    page.get_by_test_id("token-create").click()
    secret = page.get_by_test_id("token-secret").inner_text().strip()
    assert secret.startswith("tsu_")
    shot(page, "account-created")
    page.reload()
    expect(page.get_by_test_id("token-secret")).to_have_count(0)   # shown once
    expect(page.get_by_test_id("token-row")).to_have_count(1)
    page.get_by_test_id("token-revoke").click()
    expect(page.get_by_test_id("flash")).to_contain_text("laptop")
    page.context.clear_cookies()
    log_in(page, people_server, "admin1", "ja")
    page.goto(people_server.url("/users"))
    expect(page.get_by_test_id("user-row")).to_have_count(3)
    form = page.get_by_test_id("user-form")
    form.locator("input[name=name]").fill("newcomer")
    form.locator("input[name=password]").fill(PASSWORD)
    page.get_by_test_id("user-add").click()
    expect(page.get_by_test_id("user-row")).to_have_count(4)
    row = page.locator("[data-testid=user-row][data-user=newcomer]")
    row.get_by_test_id("user-toggle").click()
    expect(page.locator("[data-testid=user-row][data-user=newcomer]")).to_have_attribute(
        "data-disabled", "1")
    shot(page, "users-ja")
