"""Real-browser fixtures: a real service and server on a free port, and Debian's Chromium.

Each server gets its own tmp jobs.yaml and SQLite file; pages get a fresh browser context (no
cookies) per test. Screenshots land in tests/browser/screenshots/ (ignored by git).
"""
from __future__ import annotations

import dataclasses
import os
import re
import textwrap
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

import task_scheduler

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOTS = Path(__file__).parent / "screenshots"
TOKEN = "s3cret-gui-token"

# Far-away schedules, so that nothing fires by itself while a test looks at a page.
JOBS_YAML = textwrap.dedent("""\
    - id: echo_job
      description: Says hello on both streams
      command: ["sh", "-c", "echo hello from the job; echo warning on stderr >&2"]
      trigger: {type: interval, seconds: 3600}
      tags: [demo]
    - id: xss_job
      description: "<b>not bold</b> <script>window.__pwned = 3</script>"
      command:
        - sh
        - -c
        - echo '<script>window.__pwned = 1</script><img src=x onerror=window.__pwned=2>'
      trigger: {type: cron, expression: '0 3 1 1 *'}
    - id: pause_job
      command: "true"
      trigger: {type: interval, seconds: 3600}
    - id: slow_job
      description: Takes a moment
      command: ["sh", "-c", "echo started; sleep 2; echo finished"]
      trigger: {type: cron, expression: '0 3 1 1 *'}
    - id: sleepy_job
      command: ["sleep", "60"]
      trigger: {type: cron, expression: '0 3 1 1 *'}
    - id: clock_job
      func: "time:time"
      description: A python job
      trigger: {type: interval, seconds: 7200}
      tags: [clock]
""")


@dataclasses.dataclass
class Server:
    base_url: str
    service: object
    config_path: Path
    token: str | None

    def url(self, path: str) -> str:
        return self.base_url + path


def _start_server(folder: Path, token: str | None, **options):
    config_path = folder / "jobs.yaml"
    config_path.write_text(JOBS_YAML)
    config = task_scheduler.Config(config_path=str(config_path),
                                   database_url="sqlite:///" + str(folder / "ts.sqlite"),
                                   token=token, **options)
    service = task_scheduler.SchedulerService(config)
    service.start()
    httpd = task_scheduler.serve_in_thread(task_scheduler.create_app(service), "127.0.0.1", 0)
    base_url = f"http://127.0.0.1:{httpd.server_port}"
    return Server(base_url, service, config_path, token), httpd


@pytest.fixture(scope="module")
def gui_server(tmp_path_factory):
    server, httpd = _start_server(tmp_path_factory.mktemp("gui"), None)
    yield server
    httpd.shutdown()
    server.service.stop()


@pytest.fixture(scope="module")
def token_server(tmp_path_factory):
    server, httpd = _start_server(tmp_path_factory.mktemp("gui_token"), TOKEN)
    yield server
    httpd.shutdown()
    server.service.stop()


@pytest.fixture(scope="module")
def tokyo_server(tmp_path_factory):
    """A service whose time zone is Asia/Tokyo (TS_TIMEZONE), for the Japanese pages."""
    server, httpd = _start_server(tmp_path_factory.mktemp("gui_tokyo"), None,
                                  timezone="Asia/Tokyo")
    yield server
    httpd.shutdown()
    server.service.stop()


@pytest.fixture
def fresh_server(tmp_path):
    """A server of its own, for tests that would crowd the shared one."""
    server, httpd = _start_server(tmp_path, None)
    yield server
    httpd.shutdown()
    server.service.stop()


@pytest.fixture(scope="session")
def browser():
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: the browser tests are required in CI")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda dialog: errors.append(f"dialog: {dialog.message}"))
    yield page
    context.close()
    assert not errors, f"script errors or dialogs in the page: {errors}"


@pytest.fixture
def no_js_page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900},
                                  java_script_enabled=False)
    context.set_default_timeout(10_000)
    yield context.new_page()
    context.close()


@pytest.fixture
def shot(request):
    """shot(page, "step") saves a full-page screenshot named after the test and the step."""
    SCREENSHOTS.mkdir(exist_ok=True)
    test = re.sub(r"[^A-Za-z0-9_]+", "_", request.node.name)

    def save(page: Page, step: str) -> None:
        page.screenshot(path=str(SCREENSHOTS / f"{test}-{step}.png"), full_page=True)
    return save


@pytest.fixture(autouse=True)
def _expect_timeout():
    expect.set_options(timeout=10_000)
