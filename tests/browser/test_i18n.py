"""The GUI in Japanese and English, times in the service's zone or the browser's, the timeline,
the duration chart, the full job form; screenshots of every main page in both languages at
desktop and phone widths (tests/browser/screenshots/i18n-*)."""
from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from pathlib import Path

import pytest
from playwright.sync_api import expect

import task_scheduler
import task_scheduler.models as ts_models
from conftest import wait_for

# One worker per module: its module-scoped servers and Chromium start once.
pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser-i18n")]

RUN_DONE = 30_000
TOKYO = zoneinfo.ZoneInfo("Asia/Tokyo")
SCREENSHOTS = Path(__file__).parent / "screenshots"
DESKTOP, PHONE = {"width": 1280, "height": 900}, {"width": 390, "height": 844}


@pytest.fixture
def context_for(browser):
    """context_for(locale, timezone_id, **options): a fresh browser context, closed after."""
    contexts = []

    def make(locale="ja-JP", timezone_id="Asia/Tokyo", viewport=DESKTOP, **options):
        context = browser.new_context(locale=locale, timezone_id=timezone_id,
                                      viewport=viewport, **options)
        context.set_default_timeout(10_000)
        contexts.append(context)
        return context
    yield make
    for context in contexts:
        context.close()


def row(page, job_id):
    return page.locator(f'[data-testid="job-row"][data-job-id="{job_id}"]')


def finished_run(server, job_id):
    """Run a job now and wait for its end (the previous run may still be winding down)."""
    service = server.service

    def queued():
        try:
            return service.run_now(job_id)
        except task_scheduler.JobConflict:
            return None
    run = wait_for(queued, RUN_DONE / 1000, 0.05, f"{job_id} to accept a run")
    wait_for(lambda: service.run(run["id"])["status"] in ts_models.FINAL_STATUSES,
             RUN_DONE / 1000, 0.05, f"the run of {job_id} to end")
    return service.run(run["id"])


def tokyo_text(iso: str) -> str:
    moment = dt.datetime.fromisoformat(iso).astimezone(TOKYO)
    return moment.strftime("%Y/%m/%d %H:%M:%S JST")


# -- Japanese pages ------------------------------------------------------------------------------

def test_dashboard_and_job_list_in_japanese_with_tokyo_times(tokyo_server, context_for, shot):
    page = context_for().new_page()
    page.goto(tokyo_server.url("/"))
    expect(page.locator("html")).to_have_attribute("lang", "ja")
    expect(page.get_by_test_id("status")).to_contain_text("稼働中")
    expect(page.locator("main h1")).to_have_text("ダッシュボード")
    timeline = page.get_by_test_id("timeline")
    expect(timeline.locator("h2")).to_have_text("タイムライン")
    expect(timeline.locator(".now-label")).to_have_text("現在")
    expect(timeline.locator("text.lane-label", has_text="echo_job")).to_have_count(1)
    footer = page.get_by_test_id("time-zone")
    expect(footer).to_contain_text("Asia/Tokyo (UTC+09:00)")
    expect(footer).to_contain_text("サービスのタイムゾーン")
    shot(page, "dashboard_ja")
    page.goto(tokyo_server.url("/jobs"))
    expect(page.locator("main h1")).to_have_text("ジョブ一覧")
    expect(row(page, "pause_job").get_by_test_id("action-pause")).to_have_text("一時停止")
    row(page, "pause_job").get_by_test_id("action-pause").click()
    expect(page.get_by_test_id("flash")).to_have_text("ジョブ pause_job を一時停止しました。")
    expect(row(page, "pause_job").locator(".badge").first).to_have_text("一時停止中")
    row(page, "pause_job").get_by_test_id("action-resume").click()
    expect(page.get_by_test_id("flash")).to_contain_text("再開しました")
    assert tokyo_server.service.job("pause_job")["state"] == "scheduled"
    next_fire = tokyo_server.service.job("echo_job")["next_run_time"]
    cell = row(page, "echo_job").locator("td").nth(4)
    expect(cell).to_contain_text(re.compile(r"\d+(分|時間|秒)後"))   # "59分後"
    expect(cell.locator("span")).to_have_attribute("title", tokyo_text(next_fire))
    shot(page, "jobs_ja")


def test_run_page_in_japanese(tokyo_server, context_for, shot):
    page = context_for().new_page()
    page.goto(tokyo_server.url("/jobs"))
    row(page, "echo_job").get_by_test_id("action-run").click()
    flash = page.get_by_test_id("flash")
    expect(flash).to_contain_text("echo_job の実行を受け付けました。")
    flash.get_by_role("link", name="実行結果を開く").click()
    detail = page.get_by_test_id("run-detail")
    expect(detail).to_have_attribute("data-status", "succeeded", timeout=RUN_DONE)
    expect(page.get_by_test_id("run-status")).to_have_text("成功")
    expect(page.get_by_test_id("run-stdout")).to_contain_text("hello from the job")
    run = tokyo_server.service.run(detail.get_attribute("data-run-id"))
    started = detail.locator(f'time[datetime="{run["started_at"]}"]')
    expect(started).to_have_text(tokyo_text(run["started_at"]))
    expect(detail).to_contain_text("所要時間")
    expect(page.locator("html")).to_have_attribute("lang", "ja")
    shot(page, "run_ja")


def test_form_errors_in_japanese(tokyo_server, context_for, shot):
    folder = tokyo_server.config_path.parent
    (folder / "monitoring_ja.py").write_text(
        "def check_api_status(api_endpoint, timeout=10.0):\n    return api_endpoint\n")
    page = context_for().new_page()
    page.goto(tokyo_server.url("/jobs/new"))
    form = page.get_by_test_id("job-form")
    form.locator('[name="id"]').fill("bad one")
    form.locator('input[name="kind"][value="python"]').check()
    form.locator('[name="target"]').fill("monitoring_ja:check_api_status")
    form.locator('input[name="trigger_type"][value="cron"]').check()
    form.locator('[name="cron_expression"]').fill("61 * * * *")
    form.locator('[name="timeout"]').fill("soon")
    page.get_by_role("button", name="ジョブを作成").click()
    errors = page.get_by_test_id("form-error")
    field = page.locator(".field", has=page.locator('[name="timeout"]'))
    expect(field.get_by_test_id("form-error")).to_have_text("✗ 'soon' は数値ではありません。")
    form.locator('[name="timeout"]').fill("")
    page.get_by_role("button", name="ジョブを作成").click()
    for name, text in (
            ("id", "使えるのは英数字と「_」「.」「-」だけで、長さは1～64文字です"
                   "（指定値: 'bad one'）"),
            ("cron_expression", "'61' は分のフィールドとして正しくありません。'61' は 0～59 の"
                                "範囲外です（使える値: 0-59。"),
            ("kwargs", "check_api_status() には引数 'api_endpoint' が必要です。"
                       "kwargs で指定してください")):
        field = page.locator(".field", has=page.locator(f'[name="{name}"]'))
        expect(field.get_by_test_id("form-error")).to_contain_text(text)
    expect(errors).to_have_count(3)   # one message per mistake
    expect(page.get_by_test_id("advanced")).to_have_attribute("open", "")   # kwargs is in there
    shot(page, "form_errors_ja")
    with pytest.raises(task_scheduler.SchedulerError):
        tokyo_server.service.job("bad one")


def test_config_errors_in_japanese_keep_lines_and_fields(tokyo_server, context_for):
    good = tokyo_server.config_path.read_text()
    tokyo_server.config_path.write_text(good + "- id: broken_job\n  command: 'true'\n"
                                               "  trigger: {type: cron, minute: '*/61'}\n")
    try:
        with pytest.raises(task_scheduler.InvalidConfig):
            tokyo_server.service.reload()
        line = len(good.splitlines()) + 3
        for path, name in (("/", "dashboard"), ("/config", "config")):
            page = context_for().new_page()
            page.goto(tokyo_server.url(path))
            banner = page.get_by_test_id("config-error")
            item = banner.get_by_test_id("config-errors").locator("li")
            expect(item).to_have_count(1)
            expect(item.locator(".where")).to_have_text(f"{line}行目 · broken_job · trigger.minute")
            expect(item.locator(".what")).to_have_text(
                "'*/61' は分のフィールドとして正しくありません（0-59、'*'、'*/N'、'a-b'、'a-b/N'、"
                "リスト 'a,b'）")
            expect(item.locator(".what")).to_have_attribute("lang", "ja")
            page.screenshot(path=str(SCREENSHOTS / f"i18n-ja-desktop-{name}_config_error.png"),
                            full_page=True)
    finally:
        tokyo_server.config_path.write_text(good)
        tokyo_server.service.reload()
    assert not tokyo_server.service.status()["config"]["error"]


def test_login_page_in_japanese(token_server, context_for):
    page = context_for().new_page()
    page.goto(token_server.url("/jobs"))
    expect(page.locator("main h1")).to_have_text("ログイン")
    page.get_by_label("トークン").fill("wrong")
    page.get_by_role("button", name="ログイン").click()
    expect(page.get_by_test_id("form-error")).to_have_text(
        "✗ ユーザー名とパスワード、またはトークンが正しくありません。")
    page.screenshot(path=str(SCREENSHOTS / "i18n-ja-desktop-login.png"), full_page=True)
    page.get_by_label("トークン").fill(token_server.token)
    page.get_by_role("button", name="ログイン").click()
    expect(page.get_by_test_id("flash")).to_have_text("ログインしました。")
    expect(page.locator("main h1")).to_have_text("ジョブ一覧")


# -- Switching language and time zone --------------------------------------------------------------

def test_language_switch_is_remembered(gui_server, context_for, shot):
    page = context_for(locale="en-US", timezone_id="UTC").new_page()
    page.goto(gui_server.url("/jobs?state=scheduled"))
    expect(page.locator("html")).to_have_attribute("lang", "en")
    switch = page.get_by_test_id("lang-switch")
    expect(switch.locator('[aria-current="true"]')).to_have_text("English")
    switch.get_by_role("link", name="日本語").click()
    expect(page).to_have_url(re.compile(r"/jobs\?state=scheduled&lang=ja$"))   # filter kept
    expect(page.locator("html")).to_have_attribute("lang", "ja")
    expect(page.locator("main h1")).to_have_text("ジョブ一覧")
    page.goto(gui_server.url("/runs"))   # the cookie remembers it
    expect(page.locator("main h1")).to_have_text("実行履歴")
    cookie = next(c for c in page.context.cookies() if c["name"] == "ts_lang")
    assert cookie["value"] == "ja" and cookie["expires"] > dt.datetime.now().timestamp() + 86400
    page.goto(gui_server.url("/no/such/page"))
    expect(page.locator("main h1")).to_contain_text("404 · 見つかりません")
    page.get_by_test_id("lang-switch").get_by_role("link", name="English").click()
    expect(page.locator("main h1")).to_contain_text("404 · Not found")
    page.goto(gui_server.url("/"))
    expect(page.locator("html")).to_have_attribute("lang", "en")


def test_browser_time_zone_toggle(tokyo_server, context_for, shot):
    run = finished_run(tokyo_server, "clock_job")
    page = context_for(locale="en-GB", timezone_id="Europe/Berlin").new_page()
    page.goto(tokyo_server.url(f"/runs/{run['id']}"))
    started = page.locator(f'time[datetime="{run["started_at"]}"]').first
    expect(started).to_have_text(re.compile(r" JST$"))
    footer = page.get_by_test_id("time-zone")
    expect(footer).to_contain_text("Times in Asia/Tokyo (UTC+09:00), the service's time zone.")
    offer = footer.get_by_test_id("tz-browser")
    expect(offer).to_have_text("Show times in your browser's zone (Europe/Berlin)")
    offer.click()
    expect(started).to_have_text(re.compile(r" CES?T$"))
    berlin = dt.datetime.fromisoformat(run["started_at"]).astimezone(
        zoneinfo.ZoneInfo("Europe/Berlin"))
    expect(started).to_have_text(berlin.strftime("%Y-%m-%d %H:%M:%S %Z"))
    expect(footer).to_contain_text("your browser's time zone")
    shot(page, "browser_zone")
    page.goto(tokyo_server.url("/jobs"))   # remembered
    expect(page.get_by_test_id("time-zone")).to_contain_text("Europe/Berlin")
    page.get_by_test_id("tz-service").click()
    expect(page.get_by_test_id("time-zone")).to_contain_text("Asia/Tokyo")
    same = context_for(locale="en-GB", timezone_id="Asia/Tokyo").new_page()
    same.goto(tokyo_server.url("/"))
    expect(same.get_by_test_id("tz-browser")).to_be_hidden()   # nothing to offer
    no_js = context_for(locale="en-GB", timezone_id="Europe/Berlin",
                        java_script_enabled=False).new_page()
    no_js.goto(tokyo_server.url("/"))
    expect(no_js.get_by_test_id("time-zone")).to_contain_text("Asia/Tokyo")
    expect(no_js.get_by_test_id("tz-browser")).to_be_hidden()


# -- Timeline and duration chart -----------------------------------------------------------------

def test_timeline_ranges_attention_and_run_tips(fresh_server, context_for, shot):
    service = fresh_server.service
    service.add_job({"id": "zz_failing", "command": ["sh", "-c", "exit 3"],
                     "trigger": {"type": "interval", "hours": 1}})
    failed = finished_run(fresh_server, "zz_failing")
    finished_run(fresh_server, "echo_job")
    page = context_for(locale="en-US", timezone_id="UTC").new_page()
    page.goto(fresh_server.url("/"))
    timeline = page.get_by_test_id("timeline")
    expect(timeline).to_have_attribute("data-range", "1h")   # a young install: the last hour
    labels = timeline.locator("text.lane-label")
    expect(labels.first).to_have_text("zz_failing")   # failing first
    expect(labels.nth(1)).to_have_text("echo_job")    # then the recently active
    run = timeline.locator(f'a[href="/runs/{failed["id"]}"]')
    expect(run.locator(".run-dot")).to_have_count(1)   # a short run is a marker, not a hairline
    run.hover()
    expect(page.locator(".tip")).to_contain_text("zz_failing: failed (manual)")
    shot(page, "timeline_tip")
    run.click()
    expect(page).to_have_url(fresh_server.url(f"/runs/{failed['id']}"))
    page.goto(fresh_server.url("/"))
    timeline.get_by_test_id("timeline-range").get_by_role("link", name="7 d").click()
    expect(timeline).to_have_attribute("data-range", "7d")
    expect(timeline.locator(".tick-label").first).to_have_text(re.compile(r"^\w{3} \d+$"))
    page.set_viewport_size(PHONE)
    now = timeline.locator(".now-label").bounding_box()
    assert 0 < now["x"] and now["x"] + now["width"] < PHONE["width"]   # "now" stays in view
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    shot(page, "timeline_phone_7d")
    touch = context_for(locale="en-US", timezone_id="UTC", viewport=PHONE, has_touch=True,
                        is_mobile=True).new_page()
    touch.goto(fresh_server.url("/"))
    target = touch.get_by_test_id("timeline").locator(f'a[href="/runs/{failed["id"]}"]')
    target.tap()   # the first tap shows the run ...
    expect(touch.locator(".tip")).to_contain_text("zz_failing: failed")
    expect(touch).to_have_url(fresh_server.url("/"))
    target.tap()   # ... the second opens it
    expect(touch).to_have_url(fresh_server.url(f"/runs/{failed['id']}"))


def test_job_page_charts_recent_durations(fresh_server, context_for, shot):
    for _ in range(3):
        finished_run(fresh_server, "echo_job")
    page = context_for(locale="ja-JP").new_page()
    page.goto(fresh_server.url("/jobs/echo_job"))
    chart = page.get_by_test_id("duration-chart")
    expect(chart.locator("h2")).to_have_text("最近の実行の所要時間")
    expect(chart.locator("rect.bar-succeeded")).to_have_count(3)
    expect(chart).to_contain_text("直近 3 件")
    shot(page, "duration_chart_ja")


# -- The whole job form ----------------------------------------------------------------------------

def test_form_says_everything_jobs_yaml_can(gui_server, context_for, shot):
    folder = gui_server.config_path.parent
    (folder / "greeter.py").write_text("def greet(name, punctuation='!'):\n"
                                       "    print('hello ' + name + punctuation)\n")
    page = context_for(locale="en-US", timezone_id="UTC").new_page()
    page.goto(gui_server.url("/jobs/new"))
    form = page.get_by_test_id("job-form")
    expect(form.locator('[name="kwargs"]')).to_be_hidden()   # folded away
    form.locator('[name="id"]').fill("greeter")
    form.locator('[name="target"]').fill("greeter:greet")
    form.locator('input[name="trigger_type"][value="interval"]').check()
    form.locator('[name="interval_seconds"]').fill("600")
    page.get_by_test_id("advanced").locator("summary").click()
    expect(form.locator('[name="env"]')).to_be_hidden()   # command only
    form.locator('[name="kwargs"]').fill('{"name": "world"}')
    form.locator('[name="jitter"]').fill("5")
    form.locator('[name="misfire_grace_time"]').fill("none")
    form.locator('input[type="checkbox"][name="coalesce"]').uncheck()
    form.locator('[name="retries_max"]').fill("2")
    form.locator('[name="retries_delay"]').fill("30")
    form.locator('[name="run_on"]').fill("")
    form.locator('input[type="checkbox"][name="isolation"]').check()   # a worker process
    shot(page, "full_form")
    page.get_by_role("button", name="Create job").click()
    expect(page.get_by_test_id("flash")).to_contain_text("greeter created")
    definition = gui_server.service.job("greeter")["definition"]
    assert definition["kwargs"] == {"name": "world"} and definition["coalesce"] is False
    assert definition["misfire_grace_time"] is None and definition["retries"] == {
        "max": 2, "delay": 30}
    assert definition["trigger"] == {"type": "interval", "seconds": 600, "jitter": 5}
    assert definition["isolation"] == "process"
    run = finished_run(gui_server, "greeter")
    assert run["stdout"] == "hello world!\n"
    page.get_by_role("link", name="Edit").click()
    expect(form.locator('[name="kwargs"]')).to_have_value('{"name": "world"}')
    expect(form.locator('input[type="checkbox"][name="coalesce"]')).not_to_be_checked()
    expect(form.locator('input[type="checkbox"][name="isolation"]')).to_be_checked()
    expect(page.get_by_test_id("advanced")).to_have_attribute("open", "")


def test_command_with_a_pipe_gets_a_shell(gui_server, context_for):
    page = context_for(locale="en-US", timezone_id="UTC").new_page()
    page.goto(gui_server.url("/jobs/new"))
    form = page.get_by_test_id("job-form")
    form.locator('[name="id"]').fill("piped")
    form.locator('input[name="kind"][value="command"]').check()
    form.locator('[name="target"]').fill("echo a | tr a b")
    form.locator('[name="cron_expression"]').fill("0 4 * * *")
    expect(form.locator('[name="shell"]')).to_have_value("auto")
    page.get_by_role("button", name="Create job").click()
    expect(page.get_by_test_id("flash")).to_contain_text("piped created")
    assert gui_server.service.job("piped")["definition"]["shell"] is True
    assert finished_run(gui_server, "piped")["stdout"] == "b\n"
    page.get_by_role("link", name="Edit").click()   # refusing the shell is said, next to it
    form.locator('[name="shell"]').select_option("no")
    page.get_by_role("button", name="Save").click()
    field = page.locator(".field", has=page.locator('[name="target"]'))
    expect(field.get_by_test_id("form-error")).to_contain_text(
        "'|' is shell syntax, but this command runs without a shell")


# -- Screenshots of every main page, both languages, desktop and phone --------------------------

PAGES = ("/", "/jobs", "/jobs/echo_job", "/jobs/new", "/runs", "/runs/{run}", "/config",
         "/jobs/no_such_job", "/api/docs")


@pytest.mark.parametrize("lang", ["en", "ja"])
def test_screenshots_of_every_page(tokyo_server, context_for, lang):
    service = tokyo_server.service
    if "shot_failing" not in {j["id"] for j in service.jobs()}:
        service.add_job({"id": "shot_failing", "description": "Fails on purpose",
                         "command": ["sh", "-c", "echo broken >&2; exit 2"],
                         "trigger": {"type": "cron", "expression": "*/10 * * * *"}})
        finished_run(tokyo_server, "shot_failing")
    run = finished_run(tokyo_server, "echo_job")
    for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        page = context_for(locale="ja-JP" if lang == "ja" else "en-US",
                           viewport=viewport).new_page()
        for path in PAGES:
            response = page.goto(tokyo_server.url(path.format(run=run["id"])))
            assert response.status == (404 if "no_such" in path else 200), path
            expect(page.locator("html")).to_have_attribute("lang", lang)
            if path == "/jobs/new":
                page.get_by_test_id("advanced").locator("summary").click()   # all of the form
                page.evaluate("window.scrollTo(0, 0)")   # the sticky bar at the top
            assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"], \
                f"{path} sticks out sideways at {viewport['width']} px"
            slug = path.strip("/").replace("/", "_").format(run="run") or "dashboard"
            slug = slug.replace(run["id"], "run")
            page.screenshot(path=str(SCREENSHOTS / f"i18n-{lang}-{name}-{slug}.png"),
                            full_page=True)
