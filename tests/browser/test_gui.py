"""The web GUI in a real browser (DESIGN section 7): forms, actions, safety, login."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

import task_scheduler

# One worker per module: its module-scoped servers and Chromium start once.
pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser-gui")]

RUN_DONE = 30_000  # ms: a run goes queued -> running -> done through the real executor


def row(page, job_id):
    return page.locator(f'[data-testid="job-row"][data-job-id="{job_id}"]')


def assert_no_job(service, job_id):
    with pytest.raises(task_scheduler.SchedulerError):
        service.job(job_id)


def fill_job_form(page, **fields):
    form = page.get_by_test_id("job-form")
    for name, value in fields.items():
        if name in ("kind", "trigger_type"):
            form.locator(f'input[name="{name}"][value="{value}"]').check()
        else:
            form.locator(f'[name="{name}"]').fill(value)
    return form


def create_in_form(page, server, **fields):
    """Fill the new-job form and press Create job."""
    page.goto(server.url("/jobs/new"))
    fill_job_form(page, **fields)
    page.get_by_role("button", name="Create job").click()


# -- Pages -------------------------------------------------------------------------------------

def test_dashboard_shows_status_counts_and_timeline(gui_server, page, shot):
    page.goto(gui_server.url("/"))
    status = page.get_by_test_id("status")
    expect(status).to_contain_text("running")
    total = gui_server.service.status()["jobs"]["total"]
    expect(status).to_contain_text(str(total))
    timeline = page.get_by_test_id("timeline")
    expect(timeline.locator("svg.timeline")).to_be_visible()
    expect(timeline.locator("text.lane-label", has_text="echo_job")).to_have_count(1)
    # Upcoming fires of the next hours are drawn as markers with a hover title.
    expect(timeline.locator("polygon.fire").first).to_be_attached()
    expect(page.get_by_test_id("config-error")).to_have_count(0)
    shot(page, "dashboard")


def test_every_page_renders_for_screenshots(gui_server, page, shot):
    for path, name in (("/jobs", "jobs"), ("/jobs/echo_job", "job_detail_yaml"),
                       ("/jobs/new", "job_new"), ("/runs", "runs"), ("/config", "config")):
        response = page.goto(gui_server.url(path))
        assert response.status == 200, path
        expect(page.locator("main h1")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280, path
        shot(page, name)
    page.set_viewport_size({"width": 390, "height": 844})
    for path, name in (("/", "phone_dashboard"), ("/jobs", "phone_jobs"),
                       ("/jobs/new", "phone_job_new")):
        page.goto(gui_server.url(path))
        # Nothing sticks out sideways on a phone except inside scrollable boxes.
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, path
        shot(page, name)
    response = page.goto(gui_server.url("/jobs/no_such_job"))
    assert response.status == 404
    shot(page, "not_found")


def test_security_headers(gui_server, page):
    response = page.goto(gui_server.url("/jobs"))
    headers = response.headers
    assert "default-src 'self'" in headers["content-security-policy"]
    assert "unsafe-inline" not in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"


# -- Jobs: create, validate, preview, edit, delete ----------------------------------------------

def test_create_job_with_the_form(gui_server, page, shot):
    page.goto(gui_server.url("/jobs"))
    page.get_by_role("link", name="New job").first.click()
    fill_job_form(page, id="made_in_form", description="Created <by> the form",
                  kind="command", target="echo made", trigger_type="cron",
                  cron_expression="15 4 * * *", max_instances="2", timeout="30",
                  tags="gui, nightly")
    shot(page, "filled")
    page.get_by_role("button", name="Create job").click()
    expect(page).to_have_url(gui_server.url("/jobs/made_in_form"))
    expect(page.get_by_test_id("flash")).to_contain_text("made_in_form created")
    detail = page.get_by_test_id("job-detail")
    expect(detail).to_contain_text("Created <by> the form")
    expect(page.get_by_test_id("next-fires").locator("li")).to_have_count(10)   # issue 26
    shot(page, "created")
    job = gui_server.service.job("made_in_form")
    assert job["source"] == "api" and job["kind"] == "command"
    assert job["trigger"]["expression"] == "15 4 * * *"
    assert job["max_instances"] == 2 and job["timeout"] == 30
    assert job["tags"] == ["gui", "nightly"]


def test_bad_cron_shows_form_error_and_creates_nothing(gui_server, page, shot):
    create_in_form(page, gui_server, id="bad_cron_job", kind="command", target="echo x",
                   trigger_type="cron", cron_expression="61 * * * *")
    error = page.get_by_test_id("form-error")
    expect(error).to_have_count(1)
    # The error sits in the cron field's block, and the entered values are kept.
    field = page.locator(".field", has=page.locator('[name="cron_expression"]'))
    expect(field.get_by_test_id("form-error")).to_be_visible()
    expect(page.locator('[name="id"]')).to_have_value("bad_cron_job")
    expect(page.locator('[name="cron_expression"]')).to_have_value("61 * * * *")
    expect(page.locator('input[name="kind"][value="command"]')).to_be_checked()
    shot(page, "bad_cron")
    assert_no_job(gui_server.service, "bad_cron_job")


def test_an_error_in_more_options_is_summed_up_at_the_top_with_a_link(gui_server, page, shot):
    create_in_form(page, gui_server, id="needs_kwargs", kind="python", target="shutil:copyfile",
                   trigger_type="interval", interval_seconds="3600")
    summary = page.get_by_test_id("error-summary")
    expect(summary).to_be_in_viewport()   # seen at once, not only inside "More options"
    expect(summary).to_contain_text("1 field needs a change")
    link = summary.get_by_role("link", name="Keyword arguments (kwargs, JSON)")
    expect(link).to_have_attribute("href", "#f-kwargs")
    expect(summary).to_contain_text("copyfile() needs the argument 'src'")
    shot(page, "summary")
    page.evaluate("window.scrollTo(0, 0)")
    link.click()
    kwargs = page.locator("#f-kwargs")
    expect(kwargs).to_be_in_viewport()
    field = page.locator(".field", has=kwargs)
    # the field's label is not hidden under the sticky top bar
    topbar = page.locator("header.topbar").bounding_box()
    label = field.locator("label").bounding_box()
    assert label["y"] >= topbar["y"] + topbar["height"], (label, topbar)
    expect(field.get_by_test_id("form-error")).to_contain_text("needs the argument 'src'")
    shot(page, "field")
    # what the reader sees after the click: the field itself, not only the page's top
    page.screenshot(path=str(Path(__file__).parent / "screenshots" / "error_summary-view.png"))
    assert_no_job(gui_server.service, "needs_kwargs")


def test_non_numeric_fields_are_form_errors(gui_server, page, shot):
    page.goto(gui_server.url("/jobs/new"))
    fill_job_form(page, id="bad_numbers", kind="command", target="echo x",
                  trigger_type="interval", interval_seconds="ten", timeout="soon")
    page.get_by_role("button", name="Create job").click()
    for name, message in (("interval_seconds", "'ten' is not a whole number"),
                          ("timeout", "'soon' is not a number")):
        field = page.locator(".field", has=page.locator(f'[name="{name}"]'))
        expect(field.get_by_test_id("form-error")).to_contain_text(message)
    shot(page, "bad_numbers")
    assert_no_job(gui_server.service, "bad_numbers")


def test_preview_shows_next_fire_times_and_creates_nothing(gui_server, page, shot):
    page.goto(gui_server.url("/jobs/new"))
    fill_job_form(page, id="preview_only", kind="command", target="echo x",
                  trigger_type="interval", interval_seconds="90")
    page.get_by_role("button", name="Preview").click()
    expect(page.get_by_test_id("preview").locator("li")).to_have_count(5)
    expect(page).to_have_url(re.compile(r"#preview$"))  # scrolled to the times
    expect(page.locator('[name="interval_seconds"]')).to_have_value("90")
    shot(page, "preview")
    assert_no_job(gui_server.service, "preview_only")


def test_edit_and_delete_an_api_job(gui_server, page, shot):
    gui_server.service.add_job({"id": "editable", "command": "echo one",
                                "trigger": {"type": "interval", "seconds": 600, "jitter": 5}})
    page.goto(gui_server.url("/jobs/editable"))
    page.get_by_role("link", name="Edit").click()
    expect(page.locator('[name="interval_seconds"]')).to_have_value("600")
    expect(page.locator('[name="id"]')).to_have_js_property("readOnly", True)
    fill_job_form(page, description="Edited in the GUI")
    shot(page, "edit_form")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_test_id("flash")).to_contain_text("editable saved")
    expect(page.get_by_test_id("job-detail")).to_contain_text("Edited in the GUI")
    # The trigger was not touched in the form: what the form cannot show (jitter) is kept.
    assert gui_server.service.job("editable")["trigger"]["jitter"] == 5
    page.get_by_role("link", name="Edit").click()
    fill_job_form(page, interval_seconds="1200")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_test_id("flash")).to_contain_text("editable saved")
    job = gui_server.service.job("editable")
    assert job["trigger"]["seconds"] == 1200 and job["description"] == "Edited in the GUI"
    page.locator("summary", has_text="Delete").click()
    page.get_by_role("button", name="Delete editable").click()
    expect(page).to_have_url(gui_server.url("/jobs"))
    expect(page.get_by_test_id("flash")).to_contain_text("deleted")
    assert_no_job(gui_server.service, "editable")


def test_yaml_job_says_where_it_is_defined_and_edits_write_the_file(gui_server, page):
    page.goto(gui_server.url("/jobs/echo_job"))
    expect(page.get_by_test_id("job-detail")).to_contain_text("Edit writes a change into the file")
    expect(page.get_by_test_id("defined-at")).to_have_text(f"{gui_server.config_path}:1")
    expect(page.get_by_role("link", name="Edit")).to_have_count(1)
    expect(page.get_by_test_id("job-definition")).to_contain_text("id: echo_job")


# -- Runs ---------------------------------------------------------------------------------------

def test_run_from_the_list_and_read_the_output(gui_server, page, shot):
    page.goto(gui_server.url("/jobs"))
    row(page, "echo_job").get_by_role("button", name="Run").click()
    flash = page.get_by_test_id("flash")
    expect(flash).to_contain_text("echo_job")
    shot(page, "run_queued")
    flash.get_by_role("link").click()
    detail = page.get_by_test_id("run-detail")
    # The page refreshes itself (app.js) while the run is queued or running.
    expect(detail).to_have_attribute("data-status", "succeeded", timeout=RUN_DONE)
    expect(page.get_by_test_id("run-stdout")).to_contain_text("hello from the job")
    expect(page.get_by_test_id("run-stderr")).to_contain_text("warning on stderr")
    expect(page.get_by_test_id("run-exit-code")).to_have_text("0")
    shot(page, "run_done")
    href = page.get_by_role("link", name="Download").first.get_attribute("href")
    download = page.request.get(gui_server.url(href))
    assert download.ok and "hello from the job" in download.text()
    page.goto(gui_server.url("/runs?job_id=echo_job&status=succeeded"))
    expect(page.get_by_test_id("run-row").first).to_contain_text("echo_job")
    shot(page, "runs_filtered")


def test_script_in_output_is_shown_as_text_and_never_runs(gui_server, page, shot):
    page.goto(gui_server.url("/jobs/xss_job"))
    expect(page.get_by_test_id("job-detail")).to_contain_text("<b>not bold</b>")
    page.get_by_test_id("job-detail").get_by_role("button", name="Run").click()
    page.get_by_test_id("flash").get_by_role("link").click()
    detail = page.get_by_test_id("run-detail")
    expect(detail).to_have_attribute("data-status", "succeeded", timeout=RUN_DONE)
    stdout = page.get_by_test_id("run-stdout")
    expect(stdout).to_contain_text("<script>window.__pwned = 1</script>")
    assert stdout.locator("script, img").count() == 0
    assert page.evaluate("window.__pwned") is None
    shot(page, "xss_output")
    page.goto(gui_server.url("/jobs?q=xss"))
    expect(row(page, "xss_job")).to_contain_text("<b>not bold</b>")
    assert page.evaluate("window.__pwned") is None


def test_running_run_page_refreshes_itself(gui_server, page, shot):
    run = gui_server.service.run_now("slow_job")
    page.goto(gui_server.url(f"/runs/{run['id']}"))
    detail = page.get_by_test_id("run-detail")
    expect(detail).to_have_attribute("data-autorefresh", re.compile(r"\d+"))
    expect(detail).to_have_attribute("data-status", re.compile("queued|running"))
    shot(page, "running")
    page.evaluate("window.__same_page = true")
    expect(detail).to_have_attribute("data-status", "succeeded", timeout=RUN_DONE)
    expect(page.get_by_test_id("run-stdout")).to_contain_text("finished")
    expect(detail).not_to_have_attribute("data-autorefresh", re.compile(".*"))
    # Updated in place by app.js, not by a navigation.
    assert page.evaluate("window.__same_page") is True
    shot(page, "finished")


@pytest.mark.parametrize("job_id", ["sleepy_job", "sleepy_python"])
def test_cancel_a_running_run(gui_server, page, shot, job_id, request):
    if job_id == "sleepy_python":   # a python job in a worker process stops as a command does
        gui_server.service.add_job({"id": job_id, "func": "time:sleep", "args": [60],
                                    "isolation": "process"})
        request.addfinalizer(lambda: gui_server.service.delete_job(job_id))
    page.goto(gui_server.url(f"/jobs/{job_id}"))
    page.get_by_test_id("job-detail").get_by_role("button", name="Run").click()
    page.get_by_test_id("flash").get_by_role("link").click()
    detail = page.get_by_test_id("run-detail")
    expect(detail).to_have_attribute("data-status", "running", timeout=RUN_DONE)
    run_id = detail.get_attribute("data-run-id")
    page.get_by_role("button", name="Cancel").click()
    expect(page.get_by_test_id("flash")).to_contain_text("cancel")
    expect(detail).to_have_attribute("data-status", "cancelled", timeout=RUN_DONE)
    expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
    shot(page, f"cancelled_{job_id}")
    assert gui_server.service.run(run_id)["status"] == "cancelled"


def test_timeline_stays_readable_with_100_jobs(fresh_server, page, shot):
    service = fresh_server.service
    for i in range(100):
        service.add_job({"id": f"bulk_{i:03d}", "command": "true",
                         "trigger": {"type": "interval", "seconds": 1800 + 60 * i}})
    run = service.run_now("bulk_057")
    page.goto(fresh_server.url(f"/runs/{run['id']}"))
    expect(page.get_by_test_id("run-detail")).to_have_attribute("data-status", "succeeded",
                                                                timeout=RUN_DONE)
    page.goto(fresh_server.url("/"))
    labels = page.get_by_test_id("timeline").locator("text.lane-label")
    expect(labels).to_have_count(len(service.jobs()))
    expect(labels.first).to_have_text("bulk_057")  # most recently active first
    lanes = page.locator(".timeline-y")
    assert lanes.evaluate("el => el.scrollHeight > el.clientHeight + 100")  # lanes scroll
    assert page.evaluate("document.documentElement.scrollHeight") < 2000  # the page does not
    shot(page, "dashboard_100_jobs")
    page.goto(fresh_server.url("/jobs"))
    expect(page.get_by_test_id("job-row")).to_have_count(100)
    expect(page.locator(".pager")).to_contain_text("1–100 of 106")
    page.get_by_role("link", name="Next →").click()
    expect(page.get_by_test_id("job-row")).to_have_count(6)
    expect(page.locator(".pager")).to_contain_text("101–106 of 106")


def test_pause_and_resume_from_the_list(gui_server, page, shot):
    page.goto(gui_server.url("/jobs"))
    row(page, "pause_job").get_by_role("button", name="Pause").click()
    expect(page.get_by_test_id("flash")).to_contain_text("pause_job paused")
    expect(row(page, "pause_job").locator(".badge").first).to_have_text("paused")
    assert gui_server.service.job("pause_job")["state"] == "paused"
    shot(page, "paused")
    row(page, "pause_job").get_by_role("button", name="Resume").click()
    expect(page.get_by_test_id("flash")).to_contain_text("pause_job resumed")
    expect(row(page, "pause_job").locator(".badge").first).to_have_text("scheduled")
    assert gui_server.service.job("pause_job")["state"] == "scheduled"


def test_filtering_jobs_with_a_bookmarkable_query(gui_server, page, shot):
    gui_server.service.add_job({"id": "filter_paused", "func": "time:time",
                                "trigger": {"type": "interval", "seconds": 900}})
    gui_server.service.pause("filter_paused")
    page.goto(gui_server.url("/jobs"))
    form = page.get_by_test_id("job-filter")
    form.locator('select[name="kind"]').select_option("python")
    form.get_by_role("button", name="Filter").click()
    expect(page.get_by_test_id("job-row")).to_have_count(
        len(gui_server.service.jobs(kind="python")))
    expect(row(page, "clock_job")).to_be_visible()
    expect(row(page, "echo_job")).to_have_count(0)
    form = page.get_by_test_id("job-filter")
    form.locator('select[name="state"]').select_option("paused")
    form.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"state=paused"))
    expect(page.get_by_test_id("job-row")).to_have_count(1)
    expect(row(page, "filter_paused")).to_be_visible()
    shot(page, "filtered")
    bookmark = page.url
    page.goto(gui_server.url("/"))
    page.goto(bookmark)
    expect(page.get_by_test_id("job-row")).to_have_count(1)
    expect(page.locator('select[name="state"]')).to_have_value("paused")
    page.goto(gui_server.url("/jobs?q=hello"))
    expect(page.get_by_test_id("job-row")).to_have_count(1)
    expect(row(page, "echo_job")).to_be_visible()
    page.goto(gui_server.url("/jobs?source=yaml&kind=command"))
    ids = page.get_by_test_id("job-row").evaluate_all(
        "rows => rows.map(r => r.dataset.jobId).sort()")
    assert ids == ["echo_job", "pause_job", "sleepy_job", "slow_job", "xss_job"]


# -- Configuration --------------------------------------------------------------------------------

def test_broken_jobs_yaml_shows_on_the_dashboard(gui_server, page, shot):
    good = gui_server.config_path.read_text()
    gui_server.config_path.write_text(good + "- id: broken_job\n  trigger: {type: nope}\n")
    try:
        page.goto(gui_server.url("/config"))
        page.get_by_role("button", name="Reload jobs.yaml").click()
        expect(page.get_by_test_id("flash")).to_be_visible()
        expect(page.get_by_test_id("config-error")).to_contain_text("broken_job")
        shot(page, "config_error")
        page.goto(gui_server.url("/"))
        banner = page.get_by_test_id("config-error")
        expect(banner).to_contain_text("broken_job")
        shot(page, "dashboard_config_error")
        assert_no_job(gui_server.service, "broken_job")
        gui_server.service.job("echo_job")  # the running configuration stays
    finally:
        gui_server.config_path.write_text(good)
        _reload_until_valid(gui_server.service)
    page.goto(gui_server.url("/"))
    expect(page.get_by_test_id("config-error")).to_have_count(0)


def _reload_until_valid(service):
    try:
        service.reload()
    except task_scheduler.SchedulerError:
        pass
    assert not service.status()["config"]["error"]


# -- Safety ---------------------------------------------------------------------------------------

def test_post_without_csrf_token_changes_nothing(gui_server, page, shot):
    page.goto(gui_server.url("/jobs"))  # the browser now holds the CSRF cookie
    before = gui_server.service.job("pause_job")["state"]
    assert before == "scheduled"
    for form in ({"next": "/jobs"}, {"next": "/jobs", "csrf_token": "forged"}):
        response = page.request.post(gui_server.url("/jobs/pause_job/pause"), form=form,
                                     max_redirects=0)
        assert response.status == 403
        assert "Nothing was changed" in response.text()
    response = page.request.post(gui_server.url("/jobs/new"), max_redirects=0, form={
        "id": "csrf_job", "kind": "command", "target": "echo x", "trigger_type": "interval",
        "interval_seconds": "60"})
    assert response.status == 403
    assert gui_server.service.job("pause_job")["state"] == "scheduled"
    assert_no_job(gui_server.service, "csrf_job")
    page.set_content(response.text())
    shot(page, "forbidden")


def test_works_without_javascript(gui_server, no_js_page, shot):
    page = no_js_page
    page.goto(gui_server.url("/jobs"))
    row(page, "pause_job").get_by_role("button", name="Pause").click()
    expect(page.get_by_test_id("flash")).to_contain_text("paused")
    row(page, "pause_job").get_by_role("button", name="Resume").click()
    expect(page.get_by_test_id("flash")).to_contain_text("resumed")
    assert gui_server.service.job("pause_job")["state"] == "scheduled"
    page.goto(gui_server.url("/jobs/new"))
    # Without script every trigger field is still reachable; the form posts as usual.
    fill_job_form(page, id="no_js_job", kind="command", target="echo nojs",
                  trigger_type="interval", interval_seconds="300")
    page.get_by_role("button", name="Create job").click()
    expect(page.get_by_test_id("flash")).to_contain_text("no_js_job created")
    shot(page, "no_js_created")
    assert gui_server.service.job("no_js_job")["trigger"]["seconds"] == 300


def test_login_with_a_token(token_server, page, shot):
    response = page.goto(token_server.url("/jobs?state=paused"))
    expect(page).to_have_url(re.compile(r"/login\?next="))
    assert response.status == 200
    shot(page, "login")
    page.get_by_label("Token").fill("wrong")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_test_id("form-error")).to_contain_text("not valid")
    page.get_by_label("Token").fill(token_server.token)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(token_server.url("/jobs?state=paused"))
    expect(page.get_by_test_id("flash")).to_contain_text("Logged in")
    cookie = next(c for c in page.context.cookies() if c["name"] == "ts_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert token_server.token not in cookie["value"]
    page.goto(token_server.url("/"))
    expect(page.get_by_test_id("status")).to_be_visible()
    shot(page, "logged_in")
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login"))
    page.goto(token_server.url("/config"))
    expect(page).to_have_url(re.compile(r"/login\?next="))


def test_forged_session_cookie_is_refused(token_server, page):
    page.context.add_cookies([{"name": "ts_session", "value": "session:9999999999|00",
                               "url": token_server.base_url}])
    page.goto(token_server.url("/"))
    expect(page).to_have_url(re.compile(r"/login"))
    response = page.request.post(token_server.url("/jobs/echo_job/pause"), max_redirects=0)
    assert response.status == 303
    assert token_server.service.job("echo_job")["state"] == "scheduled"
