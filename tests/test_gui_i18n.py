"""The GUI's languages and charts without a browser: the catalogs are complete, templates hold no
untranslated text, the language and zone are chosen as documented, core messages translate,
the timeline and the duration chart compute what they draw, the job form round-trips, and
/api/docs renders from the web package (or points to the JSON without it)."""
from __future__ import annotations

import datetime as dt
import html
import json
import re
import sys
from pathlib import Path

import pytest

import task_scheduler as ts
import task_scheduler.http.app as ts_app
import task_scheduler.models as ts_models
import task_scheduler.http.openapi as ts_openapi
import task_scheduler.timeutil as ts_timeutil
import task_scheduler_web as web
from conftest import Client, write_jobs
from task_scheduler_web import charts, forms, i18n

WEB = Path(web.__file__).parent
UTC = dt.UTC
PLACEHOLDER = re.compile(r"\{([a-z_]+)(?::[a-z]+)?\}")


def placeholders(value) -> set[str]:
    texts = value.values() if isinstance(value, dict) else [value]
    return {name for text in texts for name in PLACEHOLDER.findall(text.replace("{{", ""))}


# -- Catalogs -------------------------------------------------------------------------------------

def test_every_catalog_has_every_key_with_the_same_placeholders():
    catalogs = i18n.catalogs()
    english = catalogs["en"]
    assert {"en", "ja"} <= set(catalogs)
    for lang, messages in catalogs.items():
        assert set(messages) == set(english), (lang, set(english) ^ set(messages))
        for key, value in messages.items():
            assert value or key == "span.join", (lang, key)
            extra = EXTRA_PARAMS.get(key, set())   # offered by the code, unused in English
            assert placeholders(value) - extra == placeholders(english[key]), (lang, key)
            if lang != "en" and key.startswith(("nav.", "title.", "status.", "form.", "run.")):
                assert value != english[key] or key in SAME_IN_JAPANESE, (lang, key)


SAME_IN_JAPANESE = {"form.trigger.cron"}
EXTRA_PARAMS = {"fmt.day_tick": {"m"}}


def test_every_key_the_gui_asks_for_exists():
    english = i18n.catalogs()["en"]
    used = set()
    for path in [*WEB.glob("views/*.tpl"), *WEB.glob("*.py")]:
        text = path.read_text()
        used |= set(re.findall(r"""\b(?:t|_t|say|locale\.t)\(\s*["']([a-z0-9_.]+)["']""", text))
        used |= set(re.findall(r"""FieldError\(\s*["']([a-z0-9_.]+)["']""", text))
        used |= set(re.findall(r"""_redirect\([^)]*?["'](flash\.[a-z_]+)["']""", text))
    used |= {f"nav.{key}" for key, _ in web.NAV}
    used |= {f"status.{s}" for s in web.RUN_STATUSES} | {f"state.{s}" for s in web.JOB_STATES}
    used |= {f"flash.job_{action}d" for action in ("pause", "resume")}
    used |= {f"tl.range.{name}" for name in charts.RANGES}
    used |= {f"form.shell.{choice}" for choice in forms.SHELL_CHOICES}
    used |= {f"{kind}.{field.name}" for field in forms.FIELDS for kind in ("field", "hint")}
    used |= {f"group.{group.name}" for group in forms.GROUPS}
    used |= {f"error.{code}" for code in (400, 403, 404, 405, 413, 500, 503)}
    used = {key for key in used if not key.endswith(".")}   # t('nav.' + key): listed above
    assert len(used) > 200
    assert sorted(used - set(english)) == []


def untranslated(template: str) -> list[str]:
    """Text a template would show that is not a catalog lookup: words between tags, and the
    literal part of attributes people read (title, aria-label, placeholder, ...)."""
    body = "\n".join(line for line in template.splitlines() if not line.lstrip().startswith("%"))
    body = re.sub(r"\{\{.*?\}\}", " ", body, flags=re.DOTALL)
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", body, flags=re.DOTALL)
    found = [m.strip() for m in re.findall(r">([^<]+)<", body)]
    found += re.findall(r"""\b(?:title|aria-label|alt|placeholder|data-label|data-empty)"""
                        r"""="([^"]*)\"""", body)
    return [text for text in found if re.search(r"[^\W\d_]", text)
            and not re.fullmatch(r"/[\w/.-]*", text)]   # a path such as /api/openapi.json


def test_a_third_language_is_one_file(tmp_path, monkeypatch, client):
    folder = tmp_path / "messages"
    folder.mkdir()
    for catalog in (WEB / "messages").glob("*.json"):
        (folder / catalog.name).write_text(catalog.read_text())
    french = {**i18n.catalogs()["en"], "_name": "Français", "nav.jobs": "Tâches"}
    (folder / "fr.json").write_text(json.dumps(french))
    monkeypatch.setattr(i18n, "MESSAGES", str(folder))
    i18n.catalogs.cache_clear()
    try:
        page = html.unescape(client.get("/jobs", headers={"Accept-Language": "fr"}).text)
        assert '<html lang="fr">' in page and ">Tâches</a>" in page
        assert re.search(r'hreflang="fr"[^>]*>Français</a>', page)
        assert 'hreflang="ja">日本語</a>' in page
    finally:
        monkeypatch.undo()
        i18n.catalogs.cache_clear()
    assert "fr" not in i18n.catalogs()


def test_no_template_holds_untranslated_text():
    assert untranslated('<p class="x">Run it</p>') == ["Run it"]       # the check can fail
    assert untranslated('<input placeholder="any job">') == ["any job"]
    assert untranslated("<p>{{t('a')}} · 3</p>\n% if x:\n<b>→</b>") == []
    for path in WEB.glob("views/*.tpl"):
        assert untranslated(path.read_text()) == [], path.name
    assert '<html lang="{{lang}}">' in (WEB / "views" / "base.tpl").read_text()


# -- Language and time zone ------------------------------------------------------------------------

@pytest.mark.parametrize("query, cookie, accept, lang", [
    ("", None, None, "en"),
    ("", None, "ja-JP,ja;q=0.9,en;q=0.8", "ja"),
    ("", None, "fr-CH, fr;q=0.9, en;q=0.8, ja;q=0.7", "en"),
    ("", None, "de;q=1.0, ja;q=0.5, en;q=0", "ja"),
    ("", "ja", "en", "ja"),
    ("lang=en", "ja", "ja", "en"),
    ("lang=xx", None, "ja", "ja"),
])
def test_language_follows_the_query_the_cookie_then_accept_language(service, query, cookie,
                                                                    accept, lang):
    headers = {"Accept-Language": accept} if accept else {}
    if cookie:
        headers["Cookie"] = f"ts_lang={cookie}"
    status, cookies, page = get(ts.create_app(service), f"/jobs?{query}", headers)
    assert status == 200
    assert f'<html lang="{lang}">' in page
    assert (f"ts_lang={lang}" in cookies) == (query == f"lang={lang}")   # remembered


def get(app, path: str, headers: dict) -> tuple[int, str, str]:
    """GET through the WSGI app, keeping every Set-Cookie (the test Client keeps one)."""
    response = Client(app)
    captured = []
    original = response.app

    def app_keeping_headers(environ, start_response):
        def start(status, response_headers, exc_info=None):
            captured.extend(v for k, v in response_headers if k.lower() == "set-cookie")
            return start_response(status, response_headers, exc_info)
        return original(environ, start)
    response.app = app_keeping_headers
    answer = response.get(path, headers=headers)
    return answer.status, "; ".join(captured), html.unescape(answer.text)


def test_times_in_the_service_zone_with_the_zone_named(make_service):
    service = make_service(timezone="Asia/Tokyo")
    service.add_job({"id": "soon", "command": "true",
                     "trigger": {"type": "date", "run_date": "2031-01-02 03:04:05"}})
    app = ts.create_app(service)
    _, _, page = get(app, "/jobs/soon", {"Accept-Language": "ja"})
    assert "2031/01/02 03:04:05 JST" in page   # the trigger's wall clock, in Tokyo
    assert "Asia/Tokyo (UTC+09:00)" in page
    assert "all times in UTC" not in page
    _, cookies, berlin = get(app, "/jobs/soon?tz=Europe/Berlin", {})
    assert "2031-01-01 19:04:05 CET" in berlin
    assert re.search(r'ts_tz="?Europe/Berlin"?;', cookies)
    _, cookies, remembered = get(app, "/jobs/soon", {"Cookie": "ts_tz=Europe/Berlin"})
    assert "2031-01-01 19:04:05 CET" in remembered
    _, cookies, bogus = get(app, "/jobs/soon?tz=Not/AZone", {})
    assert "JST" in bogus and "ts_tz" not in cookies
    json_answer = Client(ts.create_app(service)).get("/api/jobs/soon").json
    assert json_answer["next_run_time"] == "2031-01-01T18:04:05+00:00"   # the API: ISO, offset


def test_relative_times_and_durations_in_both_languages():
    now = dt.datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    ja, en = i18n.Locale("ja", UTC, UTC), i18n.Locale("en", UTC, UTC)
    three_ago, in_five = (now - dt.timedelta(minutes=3)).isoformat(), \
        (now + dt.timedelta(minutes=5)).isoformat()
    assert (ja.ago(three_ago, now), ja.ago(in_five, now)) == ("3分前", "5分後")
    assert (en.ago(three_ago, now), en.ago(in_five, now)) == ("3 min ago", "in 5 min")
    assert (ja.duration(65), en.duration(65)) == ("1分5秒", "1 min 5 s")
    assert ja.trigger({"trigger": {"type": "interval", "hours": 1, "minutes": 30}}) == \
        "1時間30分ごと"
    assert en.trigger({"trigger": {"type": "cron", "expression": "0 3 * * *"},
                       "trigger_text": "cron 0 3 * * *"}) == "cron 0 3 * * *"


# -- Core messages in the chosen language ----------------------------------------------------------

BAD_FILES = [
    "- id: w\n  steps:\n    - {id: a, command: 'true', after: [b]}\n"
    "    - {id: b, command: 'true', after: [a, zz]}\n    - {id: b, command: 'true'}\n",
    "- id: w\n  command: 'true'\n  steps:\n    - {id: a, after: [a]}\n",
    "- id: 'a b'\n  command: 'true'\n  trigger: {type: interval, minutes: '5'}\n",
    "- id: a\n  comand: 'true'\n  trigger: {type: interval, minute: 5}\n",
    "- id: a\n  command: 'true'\n  max_instances: 0\n  timeout: -1\n  trigger: {type: weekly}\n",
    "- id: a\n  command: 'true'\n  trigger: {type: cron, minute: '*/61'}\n",
    "- id: a\n  command: 'true'\n  trigger: {type: cron, expression: '61 * * * *'}\n",
    "- id: a\n  command: 'true'\n  trigger: {type: cron, expression: '* * *'}\n",
    "- id: a\n  command: 'true'\n  trigger: {type: cron, expression: '0 0 31 2 *'}\n",
    "- id: a\n  command: 'true'\n  trigger: {type: cron, hour: 1, timezone: Mars/Base}\n",
    "- id: a\n  command: 'true'\n  trigger: {type: date, run_date: soon}\n",
    "- id: a\n  command: 'true'\n  trigger: {type: interval}\n",
    "- id: a\n  command: 'true'\n  trigger: {minutes: 5}\n",
    "- id: a\n  trigger: {type: interval, seconds: 1}\n",
    "- id: a\n  func: 'no_such_pkg.mod:run'\n  trigger: {type: interval, seconds: 1}\n",
    "- id: a\n  func: 'os:no_such_function'\n  trigger: {type: interval, seconds: 1}\n",
    "- id: a\n  func: 'json:dumps'\n  trigger: {type: interval, seconds: 1}\n",
    "- id: a\n  func: 'json:dumps'\n  kwargs: {objx: 1}\n  trigger: {type: interval, seconds: 1}\n",
    "- id: a\n  func: './missing.sh'\n  trigger: {type: interval, seconds: 1}\n",
    "- id: a\n  command: 'no-such-program-xyz --flag'\n  trigger: {type: interval, seconds: 1}\n",
    "- id: a\n  command: 'echo a | tr a b'\n  trigger: {type: interval, seconds: 1}\n",
    "- id: a\n  command: 'true'\n  tags: [on]\n  trigger: {type: interval, seconds: 1}\n",
    "- id: a\n  command: 'true'\n  trigger: {type: cron, hour: 12:30}\n",
    "- id: a\n  command: 'true'\n  trigger:\n    type: cron\n    minute: */5\n",
    "- id: a\n  command: 'true'\n  trigger: {type: interval, seconds: 1\n",
    "- {id: a, command: 'true', trigger: {type: interval, seconds: 1}}\n"
    "- {id: a, command: 'true', trigger: {type: interval, seconds: 1}}\n",
    "id: a\n", "jobs: []\nextra: 1\n", "just text\n", "\n",
    "calendars:\n  c: {holidays: XX, exclude: ['2026-02-30']}\njobs: []\n",
    "calendars:\n  c: {subdiv: BY}\n  d: {holidays: US, subdiv: ZZ}\njobs: []\n",
    "calendars:\n  a: {extends: b}\n  b: {extends: a}\n  c: {extends: x}\njobs: []\n",
    "calendars:\n  a: {}\njobs:\n  - id: a\n    command: 'true'\n"
    "    trigger: {type: business_day, calendar: b, day: 1}\n",
    "- id: a\n  command: 'true'\n  trigger: {type: business_day, calendar: b, day: 0}\n",
]


def test_every_validation_message_has_a_japanese_translation(tmp_path):
    ja = i18n.Locale("ja", UTC, UTC)
    seen = 0
    for text in BAD_FILES:
        path = write_jobs(tmp_path / "jobs.yaml", text)
        with pytest.raises(ts.InvalidConfig) as info:
            ts.load_jobs_file(str(path))
        for detail in info.value.details:
            translated = ja.message(detail["message"])
            assert translated != detail["message"], detail["message"]
            assert not re.search(r"\b(must|is not|needs|cannot|give|unknown)\b", translated), \
                translated
            seen += 1
    assert seen >= len(BAD_FILES)


def test_service_messages_translate_too():
    ja = i18n.Locale("ja", UTC, UTC)
    assert ja.message("job 'x' does not exist") == "ジョブ 'x' は存在しません"
    assert ja.message("no route for GET /nope") == "GET /nope に対応するページはありません"
    assert ja.message("something we never wrote") == "something we never wrote"


def test_config_errors_keep_line_and_field_and_speak_the_language(make_service, jobs_file):
    service = make_service()
    write_jobs(jobs_file, "- id: broken\n  command: 'true'\n  trigger: {type: cron, "
                          "minute: '*/61'}\n  colour: red\n")
    with pytest.raises(ts.InvalidConfig):
        service.reload()
    app = ts.create_app(service)
    for path in ("/", "/config"):
        ja = get(app, path, {"Accept-Language": "ja"})[2]
        assert "3行目 · broken · trigger.minute" in ja and "4行目 · broken · colour" in ja
        assert "'*/61' は分のフィールドとして正しくありません" in ja
        assert "このキーは使えません" in ja
        assert "broken: colour: unknown key" in ja   # the log's text, folded away
        en = get(app, path, {"Accept-Language": "en"})[2]
        assert "line 3 · broken · trigger.minute" in en
        assert "'*/61' is not a valid minute field" in en


# -- Timeline and duration chart ------------------------------------------------------------------

NOW = dt.datetime(2030, 6, 1, 12, 0, tzinfo=UTC)


def iso(minutes: float) -> str:
    return (NOW + dt.timedelta(minutes=minutes)).isoformat()


def run(job_id, status, start, minutes, trigger="schedule"):
    return {"id": f"{job_id}-{start}", "job_id": job_id, "status": status, "trigger": trigger,
            "scheduled_at": iso(start), "started_at": iso(start),
            "finished_at": None if status in ("running", "queued") else iso(start + minutes),
            "duration_s": None if status == "running" else minutes * 60}


def job(job_id, state="scheduled", every=None, last=None):
    fires = [iso(every * i) for i in range(1, 6)] if every else []
    return {"id": job_id, "state": state, "next_run_time": fires[0] if fires else None,
            "next_run_times": fires, "last_run": last,
            "trigger": {"type": "interval", "minutes": every} if every else {"type": "cron"}}


class FakeService:
    def __init__(self, jobs, runs):
        self._jobs, self._runs = jobs, runs

    def jobs(self):
        return list(self._jobs)

    def runs(self, since=None, limit=50):
        runs = sorted(self._runs, key=lambda r: r["started_at"], reverse=True)
        return ts_models.Page(r for r in runs if r["started_at"] >= since.isoformat())

    def run_spans(self, since, limit, job_ids=None, windows=()):
        def wanted(r):
            at = dt.datetime.fromisoformat(r["scheduled_at"])
            return job_ids is None or r["job_id"] in job_ids or any(
                r["job_id"] in jobs and a <= at < b for jobs, a, b in windows)
        return [r for r in self.runs(since - dt.timedelta(days=7), limit) if wanted(r)], False

    def run_buckets(self, since, width, offset=0):
        counts = {}
        first = (int(since.timestamp()) + offset) // width
        for r in self._runs:
            bucket = (int(dt.datetime.fromisoformat(r["scheduled_at"]).timestamp()) + offset) \
                // width
            if bucket >= first:
                key = (r["job_id"], dt.datetime.fromtimestamp(bucket * width - offset, UTC),
                       r["status"])
                counts[key] = counts.get(key, 0) + 1
        return [(*key, n) for key, n in counts.items()]

    def first_run_since(self, since):
        return min((dt.datetime.fromisoformat(r["scheduled_at"]) for r in self._runs
                    if r["scheduled_at"] >= since.isoformat()), default=None)

    def preview_trigger(self, trigger, count=5):
        raise ts.InvalidJob("no preview here")


@pytest.mark.parametrize("starts, fire_in, expected", [
    ([-10], None, "1h"), ([-200], None, "6h"), ([-20 * 60], None, "24h"),
    ([-3 * 24 * 60], 10, "1h"), ([], 60, "6h"), ([], 5 * 60, "24h"), ([], None, "24h"),
])
def test_default_range_fits_the_data(starts, fire_in, expected):
    oldest = FakeService([], [run("a", "succeeded", start, 1) for start in starts]) \
        .first_run_since(NOW - dt.timedelta(days=1))
    jobs = [job("a", every=fire_in)] if fire_in else [job("a")]
    assert charts.default_range(oldest, jobs, NOW) == expected


def test_timeline_bars_markers_fires_and_attention():
    jobs = [job("quiet", every=60), job("later", every=30), job("broken", every=15),
            job("busy", every=120), job("paused", state="paused")]
    runs = [run("later", "succeeded", -300, 120), run("broken", "failed", -60, 0.01),
            run("busy", "running", -30, 0), run("later", "succeeded", -20, 0.001)]
    ja = i18n.Locale("ja", UTC, UTC)
    timeline = charts.timeline(FakeService(jobs, runs), ja, "24h", now=NOW)
    lanes = {lane["job_id"]: lane for lane in timeline["lanes"]}
    assert [lane["job_id"] for lane in timeline["lanes"]] == [
        "broken", "busy", "later", "quiet", "paused"]   # failing, running, active, idle, paused
    long_bar = lanes["later"]["bars"][0]
    assert long_bar["w"] == pytest.approx(120 / (30 * 60) * 100, abs=0.01)   # real duration
    assert long_bar["x"] == pytest.approx(80 - 300 / (24 * 60) * 80, abs=0.01)
    assert [d["status"] for d in lanes["later"]["dots"]] == ["succeeded"]   # 0.06 s: a marker
    assert lanes["broken"]["dots"][0]["title"].startswith("broken: 失敗（スケジュール）")
    assert lanes["busy"]["bars"][0]["x"] + lanes["busy"]["bars"][0]["w"] == \
        pytest.approx(80, abs=0.01)   # a running run reaches "now"
    assert len(lanes["later"]["fires"]) > 5   # extrapolated beyond the next five
    fires = [fire["x"] for fire in lanes["later"]["fires"]]
    gaps = [later - earlier for earlier, later in zip(fires, fires[1:], strict=False)]
    assert min(gaps) >= charts.FIRE_GAP
    assert lanes["paused"]["fires"] == []
    assert all(abs(t["x"] - 80) > 4 for t in timeline["ticks"])   # "now" is never crowded
    assert timeline["now_x"] == 80 and timeline["range"] == "24h"


def test_fires_closer_than_a_marker_are_one_band():
    ja = i18n.Locale("ja", UTC, UTC)
    timeline = charts.timeline(FakeService([job("often", every=1), job("rare", every=600)], []),
                               ja, "7d", now=NOW)
    lanes = {lane["job_id"]: lane for lane in timeline["lanes"]}
    band = lanes["often"]["band"]
    assert len(lanes["often"]["fires"]) == 1 and band["x"] + band["w"] == pytest.approx(100)
    assert band["title"] == "often: ここから 1分ごとに実行"
    assert lanes["rare"]["band"] is None and len(lanes["rare"]["fires"]) > 1


def test_duration_chart_scales_to_the_longest_run():
    runs = [run("a", "succeeded", -i * 10, m) for i, m in enumerate((1, 2, 4, 0.5))]
    chart = charts.duration_chart(runs, i18n.Locale("en", UTC, UTC))
    assert [b["h"] for b in chart["bars"]] == [12.5, 100, 50, 25]   # oldest first: 0.5 .. 1 min
    assert chart["longest"] == "4 min 0 s" and chart["median"] == "1 min 30 s"
    assert chart["bars"][-1]["href"] == "/runs/a-0"   # the newest on the right
    assert charts.duration_chart([run("a", "running", 0, 0)], i18n.Locale("en", UTC, UTC)) \
        is None


# -- The job form ----------------------------------------------------------------------------------

def say(key, **params):
    return i18n.Locale("en", UTC, UTC).t(key, **params)


def test_form_round_trips_every_jobs_yaml_key():
    definition = {
        "id": "full", "description": "All of it", "command": "backup.sh --all", "shell": True,
        "args": ["--fast"], "env": {"MODE": "x=y"}, "cwd": "/srv", "timeout": 30,
        "retries": {"max": 2, "delay": 5, "backoff": 2}, "max_instances": 2,
        "misfire_grace_time": None, "coalesce": False, "tags": ["a", "b"], "run_on": ["gpu"],
        "is_enabled": False, "replace_existing": True,
        "trigger": {"type": "cron", "expression": "0 3 * * *", "timezone": "Asia/Tokyo",
                    "jitter": 10, "start_date": "2030-01-01 00:00:00"},
    }
    job = {"id": "full", "kind": "command", "definition": definition}
    form = forms.job_to_form(job)
    assert form["shell"] == "yes" and form["env"] == "MODE=x=y"
    assert form["misfire_grace_time"] == "none" and form["coalesce"] == "0"
    rebuilt, errors = forms.form_to_definition(form, say, job)
    assert errors == {} and rebuilt == definition
    form.update(trigger_type="interval", interval_seconds="90")
    changed, _ = forms.form_to_definition(form, say, job)
    assert changed["trigger"] == {"type": "interval", "seconds": 90, "timezone": "Asia/Tokyo",
                                  "jitter": 10, "start_date": "2030-01-01 00:00:00"}


def test_form_python_kwargs_and_shell_choice():
    form = forms.new_form()
    form.update(id="p", target="mod:func", kwargs='{"a": 1}', env="IGNORED=1",
                cron_expression="* * * * *")
    definition, errors = forms.form_to_definition(form, say)
    assert errors == {} and definition["kwargs"] == {"a": 1} and "env" not in definition
    form.update(kwargs="[1]")
    assert forms.form_to_definition(form, say)[1] == {
        "kwargs": "Write a JSON object: {\"name\": value, ...}."}
    form.update(isolation="1")
    assert forms.form_to_definition(form, say)[0]["isolation"] == "process"
    assert forms.job_to_form({"id": "p", "kind": "python", "definition": {
        "id": "p", "func": "mod:func", "isolation": "process"}})["isolation"] == "1"
    form.update(kind="command", target="echo a | tr a b", kwargs="")
    assert "isolation" not in forms.form_to_definition(form, say)[0]   # python jobs only
    assert forms.form_to_definition(form, say)[0]["shell"] is True
    form.update(target="echo plain")
    assert "shell" not in forms.form_to_definition(form, say)[0]


def test_a_new_group_is_one_entry(monkeypatch):
    """What the notifications engineer will do: one Group, and the form carries it."""
    group = forms.Group("notify", (forms.Field("notify_to", "notify", forms.read_words,
                                               forms.show_words),))
    monkeypatch.setattr(forms, "GROUPS", (*forms.GROUPS, group))
    monkeypatch.setattr(forms, "FIELDS", (*forms.FIELDS, *group.fields))
    monkeypatch.setattr(forms, "FORM_FIELDS", (*forms.FORM_FIELDS, "notify_to"))
    monkeypatch.setattr(forms, "MANAGED", forms.MANAGED | {"notify"})
    form = forms.new_form()
    form.update(id="n", target="m:f", cron_expression="* * * * *", notify_to="ops, dev")
    definition, _ = forms.form_to_definition(form, say)
    assert definition["notify"] == ["ops", "dev"]
    assert forms.job_to_form({"id": "n", "definition": definition})["notify_to"] == "ops, dev"
    assert forms.error_field("notify.0", "cron") == "notify_to"



@pytest.mark.parametrize("lang, heading", [("en", "2 fields need a change"),
                                           ("ja", "保存する前に 2 か所を直してください")])
def test_form_errors_are_summed_up_at_the_top_linking_to_each_field(service, lang, heading):
    from test_security import Browser
    browser = Browser(ts.create_app(service))
    browser.cookies[i18n.LANG_COOKIE] = lang
    form = {"csrf_token": browser.csrf("/jobs/new"), "id": "two_errors", "kind": "command",
            "target": "true", "trigger_type": "interval", "interval_seconds": "ten",
            "max_instances": "1", "shell": "auto", "retries_delay": "soon"}
    status, _, page = browser.request("POST", "/jobs/new", form=form)
    assert status == 422
    summary = re.search(r'<div class="error-summary" data-testid="error-summary".*?</div>', page,
                        re.DOTALL)
    assert summary and page.index("error-summary") < page.index('name="id"'), page[:3000]
    links = re.findall(r'<a href="#([\w-]+)">([^<]+)</a>: ([^<]+)</li>', summary.group(0))
    assert [anchor for anchor, _, _ in links] == ["f-interval", "f-retries_delay"]
    assert all(f'id="{anchor}"' in page for anchor, _, _ in links)   # each link has its field
    assert [label for _, label, _ in links] == [i18n.catalogs()[lang]["field.interval_seconds"],
                                                i18n.catalogs()[lang]["field.retries_delay"]]
    assert heading in summary.group(0) and "ten" in links[0][2] and "soon" in links[1][2]
    assert page.count('data-testid="form-error"') == 2   # the fields keep their own messages
    status, _, page = browser.request("GET", "/jobs/new")
    assert "error-summary" not in page


def test_error_links_point_at_inputs_the_form_has(service):
    page = Client(ts.create_app(service)).get("/jobs/new").text
    errors = dict.fromkeys([*forms.FORM_FIELDS, "_general"], "wrong")
    links = forms.error_links(errors)
    assert len(links) == len(forms.FORM_FIELDS)   # the general error is shown on its own
    missing = [link["anchor"] for link in links if f'id="{link["anchor"]}"' not in page]
    assert missing == []
    english = i18n.catalogs()["en"]
    assert [link["label"] for link in links if link["label"] not in english] == []


# -- /api/docs ------------------------------------------------------------------------------------

def test_api_docs_follow_the_language(client):
    page = client.get("/api/docs", headers={"Accept-Language": "ja"})
    assert page.status == 200 and '<html lang="ja">' in page.text and "操作一覧" in page.text
    assert "GET /api/jobs" in page.text


def test_api_docs_without_the_gui_package_point_to_the_json(service, monkeypatch):
    monkeypatch.setitem(sys.modules, "task_scheduler_web", None)   # vendored alone
    answer = ts_app.api_docs(service)
    assert answer.status_code == 200 and 'href="/api/openapi.json"' in answer.body
    assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
    document = ts_openapi.openapi_json(tuple(ts_app.API_ROUTES), False)
    assert json.loads(document)["paths"]["/api/docs"]


# -- README.ja.md ---------------------------------------------------------------------------------

def test_japanese_readme_is_linked_and_parallel_to_the_readme():
    root = WEB.parent
    readme, japanese = (root / "README.md").read_text(), (root / "README.ja.md").read_text()
    assert "](README.ja.md)" in readme.split("\n\n", 2)[1]   # at the top
    headings = [re.findall(r"^(#+) ", text, re.MULTILINE) for text in (readme, japanese)]
    assert headings[0] == headings[1]   # section by section
    # the same commands; their trailing comments are in each README's language
    commands = [[re.sub(r"\s+# .*$", "", line) for line in
                 re.findall(r"^(?:curl|pip|task-scheduler)\b.*$", text, re.MULTILINE)]
                for text in (readme, japanese)]
    assert commands[0] == commands[1]
    assert "func: 'modules.scheduler.tasks.monitoring.check_api_status'" in japanese
    assert "day_of_week: 'mon-sun'" in japanese


def test_run_list_pages_by_cursor_forward_and_back(client, service, monkeypatch):
    now = ts_timeutil._utcnow()
    with service.store.write() as conn:
        service.store.runs.insert_runs(conn, [
            {"id": f"00{i}", "job_id": "p", "trigger": "manual", "status": "succeeded",
             "scheduled_at": now.replace(microsecond=i), "finished_at": now} for i in range(5)])
    monkeypatch.setattr(web, "PAGE_SIZE", 2)

    def visit(query):
        page = html.unescape(client.get("/runs" + query).text)
        links = {rel: href for href, rel in re.findall(r'href="(\?[^"]*)" rel="(\w+)"', page)}
        return re.findall(r'href="/runs/(00\d)"', page), re.search(r"(\d+)–(\d+) of (\d+)",
                                                                  page).groups(), links
    runs, shown, links = visit("?job_id=p")
    assert (runs, shown, links.get("prev")) == (["004", "003"], ("1", "2", "5"), None)
    assert links["next"] == "?job_id=p&before=003&pos=2"
    runs, shown, links = visit(links["next"])
    assert (runs, shown) == (["002", "001"], ("3", "4", "5"))
    runs, shown, links = visit(links["next"])
    assert (runs, shown, links.get("next")) == (["000"], ("5", "5", "5"), None)
    runs, shown, links = visit(links["prev"])
    assert (runs, shown) == (["002", "001"], ("3", "4", "5"))
    assert visit(links["prev"])[:2] == (["004", "003"], ("1", "2", "5"))
    assert visit("?job_id=p&offset=2")[:2] == (["002", "001"], ("3", "4", "5"))   # still works
