"""jobs.yaml: the schema, line-numbered errors, YAML traps, the CLI's validate and settings."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

import task_scheduler as ts
import task_scheduler.checks as ts_checks
import task_scheduler.cli as ts_cli
import task_scheduler.config as ts_config
import task_scheduler.jobsfile as ts_jobsfile
import task_scheduler.models as ts_models
import task_scheduler.triggers as ts_triggers
from conftest import ROOT, child_env, write_jobs

SEED = ROOT / "docs" / "examples" / "seed"


def errors_of(tmp_path, text):
    path = write_jobs(tmp_path / "jobs.yaml", text)
    with pytest.raises(ts.InvalidConfig) as info:
        ts.load_jobs_file(str(path))
    return str(info.value), info.value.details


def test_seed_readme_examples_load_unchanged(tmp_path):
    folder = tmp_path / "seed"
    shutil.copytree(SEED, folder)
    jobs, digest = ts.load_jobs_file(str(folder / "jobs.yaml"))
    by_id = {j.id: j for j in jobs}
    assert set(by_id) == {"api_health_check", "daily_backup"}
    assert by_id["api_health_check"].kind == "python"
    assert by_id["api_health_check"].description == "5分ごとにAPIのヘルスチェックを実行します。"
    assert by_id["api_health_check"].kwargs == {"api_endpoint": "http://127.0.0.1:8000/"}
    assert by_id["daily_backup"].kind == "command"
    assert ts_triggers.trigger_text(by_id["daily_backup"].trigger) == \
        "cron day_of_week=mon-sun hour=2 minute=30"
    assert len(digest) == 64


def test_sample_jobs_yaml_is_valid():
    jobs, _ = ts.load_jobs_file(str(ROOT / "jobs.yaml"))
    assert {"self_health_check", "disk_usage", "nightly_backup"} <= {j.id for j in jobs}
    assert {j.id: j.is_enabled for j in jobs}["nightly_backup"] is False


def test_mapping_form_with_defaults(tmp_path):
    path = write_jobs(tmp_path / "jobs.yaml", """
        defaults: {timeout: 30, tags: [ops]}
        jobs:
          - {id: a, command: 'true', trigger: {type: interval, seconds: 5}}
          - {id: b, command: 'true', timeout: 5, trigger: {type: interval, seconds: 5}}
    """)
    jobs, _ = ts.load_jobs_file(str(path))
    assert [(j.id, j.timeout, j.tags) for j in jobs] == [("a", 30, ["ops"]), ("b", 5, ["ops"])]


@pytest.mark.parametrize("text, expected", [
    # unknown key, with its line
    ("- id: a\n  command: 'true'\n  trigger: {type: interval, seconds: 1}\n  colour: red\n",
     "jobs.yaml:4: a: colour: unknown key"),
    # wrong type
    ("- id: a\n  command: 'true'\n  max_instances: many\n  trigger: {type: interval, seconds: 1}\n",
     "jobs.yaml:3: a: max_instances: must be a whole number, got 'many'"),
    # invalid cron field
    ("- id: a\n  command: 'true'\n  trigger: {type: cron, minute: '*/61'}\n",
     "jobs.yaml:3: a: trigger.minute: '*/61' is not a valid minute field (0-59"),
    # invalid crontab expression
    ("- id: a\n  command: 'true'\n  trigger: {type: cron, expression: '61 * * * *'}\n",
     "a: trigger.expression: '61' is not a valid minute field"),
    # unknown trigger type
    ("- id: a\n  command: 'true'\n  trigger: {type: weekly}\n",
     "jobs.yaml:3: a: trigger.type: type must be one of: interval, cron, date"),
    # duplicate id
    ("- {id: a, command: 'true', trigger: {type: interval, seconds: 1}}\n"
     "- {id: a, command: 'true', trigger: {type: interval, seconds: 1}}\n",
     "jobs.yaml:2: a: id: duplicate id (first defined on line 1)"),
    # unimportable callable
    ("- id: a\n  func: 'no_such_pkg.mod:run'\n  trigger: {type: interval, seconds: 1}\n",
     "jobs.yaml:2: a: func: cannot import module 'no_such_pkg.mod'"),
    # missing attribute
    ("- id: a\n  func: 'os:no_such_function'\n  trigger: {type: interval, seconds: 1}\n",
     "a: func: module 'os' has no attribute 'no_such_function'"),
    # missing script
    ("- id: a\n  func: './missing.sh'\n  trigger: {type: interval, seconds: 1}\n",
     "missing.sh does not exist"),
    # unknown program
    ("- id: a\n  command: 'no-such-program-xyz --flag'\n  trigger: {type: interval, seconds: 1}\n",
     "a: command: program 'no-such-program-xyz' is not found on PATH"),
    # neither func nor command
    ("- id: a\n  trigger: {type: interval, seconds: 1}\n",
     "give exactly one of func"),
    # bad id
    ("- id: 'has space'\n  command: 'true'\n  trigger: {type: interval, seconds: 1}\n",
     "jobs.yaml:1: has space: id: may only use letters, digits, '_', '.' and '-' (1 to 64 "
     "characters), got 'has space'"),
    # zero interval
    ("- id: a\n  command: 'true'\n  trigger: {type: interval}\n",
     "a: trigger: an interval needs one of weeks"),
    # bad time zone
    ("- id: a\n  command: 'true'\n  trigger: {type: cron, hour: 1, timezone: Mars/Base}\n",
     "a: trigger.timezone: 'Mars/Base' is not a known IANA time zone"),
    # bad date
    ("- id: a\n  command: 'true'\n  trigger: {type: date, run_date: soon}\n",
     "a: trigger.run_date: 'soon' is not a date/time"),
    # not a list
    ("id: a\n", "jobs.yaml:1: this is one job, not a list: start each job with '- '"),
    ("jobs: []\nextra: 1\n",
     "jobs.yaml:2: extra: unknown top-level key (valid: defaults, jobs, calendars)"),
    ("just text\n", "expected a list of jobs or {defaults, jobs}, got a string"),
    # empty file
    ("\n", "file is empty; write [] to remove every job"),
])
def test_each_error_class_names_job_field_and_line(tmp_path, text, expected):
    message, details = errors_of(tmp_path, text)
    assert expected in message, message
    assert details and all("message" in d for d in details)


@pytest.mark.parametrize("text, expected", [
    ("- id: a\n  command: 'true'\n  trigger:\n    type: cron\n    minute: */5\n",
     "jobs.yaml:5: `*/5` must be quoted in YAML: '*/5'"),
    ("- id: a\n  command: 'true'\n  tags: [on]\n  trigger: {type: interval, seconds: 1}\n",
     "YAML reads unquoted on as a boolean; quote it: 'on'"),
    ("- id: a\n  command: 'true'\n  trigger: {type: cron, hour: 12:30}\n",
     "jobs.yaml:3: a: trigger.hour: 750 is not a valid hour field"),
    ("- id: a\n  command: 'true'\n  trigger: {type: cron, hour: 12:30}\n",
     "YAML reads unquoted 12:30 as a base-60 number; quote it: '12:30'"),
    ("- id: a\n  command: 'true'\n  env: {MODE: 010}\n  trigger: {type: interval, seconds: 1}\n",
     "YAML reads unquoted 010 as an octal number"),
    ("- id: a\n  command: 'true'\n  trigger: {type: interval, seconds: 1\n",
     "jobs.yaml:3: YAML syntax: expected ',' or '}'"),
])
def test_yaml_traps_are_explained(tmp_path, text, expected):
    message, _ = errors_of(tmp_path, text)
    assert expected in message, message


def test_all_errors_of_a_file_are_reported_at_once(tmp_path):
    message, details = errors_of(tmp_path, """\
        - id: a
          command: 'true'
          trigger: {type: cron, minute: '99'}
          bogus: 1
        - id: b
          func: 'os:nothing_here'
          trigger: {type: interval, seconds: 1}
    """)
    fields = {(d["job"], d["field"]) for d in details}
    assert {("a", "bogus"), ("a", "trigger.minute"), ("b", "func")} <= fields


@pytest.mark.parametrize("value, field, message", [
    ("trigger: {type: interval, minutes: '5'}", "trigger.minutes",
     "must be a number, got the text '5': write it without quotes"),
    ("trigger: {type: cron, hour: [1]}", "trigger.hour", "must be text or a whole number"),
    ("trigger: {type: date, run_date: [1]}", "trigger.run_date", "must be a date/time, got [1]"),
    ("command: 5\n  trigger: {type: interval, seconds: 1}", "command",
     "must be text or a list, got 5"),
])
def test_one_message_per_mistake(tmp_path, value, field, message):
    text = f"- id: a\n  {value}\n" if "command" in value else \
        f"- id: a\n  command: 'true'\n  {value}\n"
    _, details = errors_of(tmp_path, text)
    assert [(d["field"], message in d["message"]) for d in details] == [(field, True)], details


def test_command_list_item_is_named_alone(tmp_path):
    _, details = errors_of(tmp_path, "- {id: a, command: ['echo', 1], trigger: {type: interval, "
                                     "seconds: 1}}\n")
    assert [(d["field"], d["message"]) for d in details] == [("command.1", "must be text, got 1")]


def test_errors_are_sorted_by_line(tmp_path):
    message, details = errors_of(tmp_path, """\
        - id: a
          bogus: 1
          command: 'true'
          max_instances: many
          trigger: {type: cron, minute: '99'}
        - id: 'b c'
          command: 'true'
          trigger: {type: interval, seconds: 1}
    """)
    lines = [d["line"] for d in details]
    assert lines == sorted(lines) and lines == [2, 4, 5, 6], details
    assert [line.split(":")[1] for line in message.splitlines()] == ["2", "4", "5", "6"]


def test_unknown_key_names_the_key_it_resembles(tmp_path):
    message, _ = errors_of(tmp_path, "- id: a\n  comand: 'true'\n  trigger: {type: interval, "
                                     "minute: 5}\n")
    assert "a: comand: unknown key; did you mean 'command'?" in message
    assert "a: trigger.minute: unknown key; did you mean 'minutes'?" in message


MONITORING = "def check_api_status(api_endpoint, timeout=10.0):\n    return api_endpoint\n"


@pytest.mark.parametrize("options, field, message", [
    ("", "kwargs", "check_api_status() needs the argument 'api_endpoint': give it in kwargs"),
    ("kwargs: {url: 'http://x/'}", "kwargs", "check_api_status() has no parameter 'url'"),
    ("args: [1, 2, 3]", "args",
     "check_api_status() takes fewer positional arguments than the 3 in args"),
    ("args: ['http://x/']\n  kwargs: {api_endpoint: 'http://y/'}", "kwargs",
     "check_api_status() would get 'api_endpoint' twice: from args and from kwargs"),
])
def test_python_target_is_checked_against_its_signature(tmp_path, options, field, message):
    (tmp_path / "monitoring.py").write_text(MONITORING)
    text = f"- id: check\n  func: 'monitoring:check_api_status'\n  {options}\n" \
           f"  trigger: {{type: interval, minutes: 5}}\n"
    _, details = errors_of(tmp_path, text)
    assert [(d["field"], d["message"]) for d in details] == [(field, message)]


def test_signature_check_on_the_fast_path_and_the_api(tmp_path, service):
    """JobsParser's fast path caches target checks: jobs that differ only in kwargs differ."""
    (tmp_path / "monitoring.py").write_text(MONITORING)
    text = textwrap.dedent("""\
        - {id: good, func: 'monitoring:check_api_status', kwargs: {api_endpoint: x},
           trigger: {type: interval, minutes: 5}}
        - {id: bad, func: 'monitoring:check_api_status', kwargs: {endpoint: x},
           trigger: {type: interval, minutes: 5}}
    """)
    with pytest.raises(ts.InvalidConfig) as info:
        ts_jobsfile.JobsParser().parse(text, str(tmp_path / "jobs.yaml"))
    assert "jobs.yaml:3: bad: kwargs: check_api_status() has no parameter 'endpoint'" in \
        str(info.value)
    with pytest.raises(ts.InvalidJob) as info:
        service.add_job({"id": "api", "func": "json:dumps", "trigger": {"type": "interval",
                                                                         "minutes": 5}})
    assert info.value.details[0]["field"] == "kwargs"
    assert "dumps() needs the argument 'obj'" in str(info.value)


def test_callables_without_a_readable_signature_are_accepted(tmp_path):
    path = write_jobs(tmp_path / "jobs.yaml", """
        - {id: a, func: 'time:sleep', trigger: {type: interval, seconds: 60}}
        - {id: b, func: 'os.path:join', args: [a, b], trigger: {type: interval, seconds: 60}}
    """)
    jobs, _ = ts.load_jobs_file(str(path))
    assert [j.id for j in jobs] == ["a", "b"]


@pytest.mark.parametrize("command, syntax", [
    ("echo a | tr a b", "|"), ("echo x > out.txt", ">"), ("true && echo ok", "&&"),
    ("echo $HOME", "$HOME"), ('echo "$(date)"', "$("), ("sleep 1; echo", ";"),
    ("echo `date`", "`"),
])
def test_shell_syntax_without_a_shell_is_an_error(tmp_path, command, syntax):
    message, details = errors_of(tmp_path, f"- id: a\n  command: {json.dumps(command)}\n"
                                           f"  trigger: {{type: interval, seconds: 60}}\n")
    assert details[0]["field"] == "command"
    assert f"{syntax!r} is shell syntax, but this command runs without a shell: add shell: " \
           f"true, or quote it" in message


@pytest.mark.parametrize("command", [
    "echo 'a | b'", "echo 'cost: $5'", "printf '%s\\n' x", "echo a\\|b", "sh -c 'echo $HOME'",
])
def test_quoted_shell_characters_are_fine(tmp_path, command):
    assert ts_checks.shell_syntax(command) is None
    path = write_jobs(tmp_path / "jobs.yaml", f"- id: a\n  command: {json.dumps(command)}\n"
                                              f"  trigger: {{type: interval, seconds: 60}}\n")
    ts.load_jobs_file(str(path))
    shelled = write_jobs(tmp_path / "shell.yaml", "- {id: a, command: 'echo a | tr a b', shell: "
                                                  "true, trigger: {type: interval, seconds: 60}}\n")
    ts.load_jobs_file(str(shelled))


def test_script_must_be_executable(tmp_path):
    script = tmp_path / "noexec.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    message, _ = errors_of(tmp_path, "- {id: a, func: ./noexec.sh, trigger: {type: interval, "
                                     "seconds: 1}}\n")
    assert "is not executable (chmod +x" in message


def test_jobs_folder_is_importable(tmp_path):
    (tmp_path / "mytasks.py").write_text("def work(n):\n    print('n =', n)\n")
    path = write_jobs(tmp_path / "jobs.yaml", """
        - {id: a, func: 'mytasks.work', args: [3], trigger: {type: interval, seconds: 1}}
    """)
    jobs, _ = ts.load_jobs_file(str(path))
    assert jobs[0].kind == "python"


@pytest.mark.parametrize("expression, days", [
    ("0 9 * * 0", "sun"), ("0 9 * * 7", "sun"), ("0 9 * * 1-5", "mon,tue,wed,thu,fri"),
    ("0 9 * * */2", "sun,tue,thu,sat"), ("0 9 * * sat,sun", "sun,sat"),
    ("0 9 * * 5-7", "fri,sat,sun"),
])
def test_crontab_day_of_week_means_what_cron_means(expression, days):
    import datetime as dt
    trig = ts_triggers.crontab_trigger(expression, dt.UTC)
    start = dt.datetime(2026, 11, 29, tzinfo=dt.UTC)   # a Sunday: one week of fires
    fires = ts_triggers.fire_times(trig, trig.get_next_fire_time(None, start), 8)
    week = {f.strftime("%a").lower() for f in fires if f < start + dt.timedelta(days=7)}
    assert week == set(days.split(","))


def test_crontab_sunday_fires_on_sunday():
    import datetime as dt
    trig = ts_triggers.crontab_trigger("0 9 * * 0", dt.UTC)
    start = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)   # a Monday
    fire = trig.get_next_fire_time(None, start)
    assert fire.weekday() == 6 and fire.hour == 9   # Sunday


def test_crontab_day_and_weekday_fire_on_either():
    import datetime as dt
    trig = ts_triggers.crontab_trigger("0 0 13 * 5", dt.UTC)   # the 13th, or any Friday
    start = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    fires = ts_triggers.fire_times(trig, trig.get_next_fire_time(None, start), 4)
    assert [f.day for f in fires] == [6, 13, 20, 27]   # Fridays 6, 20, 27 and Friday the 13th


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "task_scheduler", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=60, env=child_env())


def test_cli_validate_ok_and_errors(tmp_path):
    good = write_jobs(tmp_path / "good.yaml", "- {id: a, command: 'true', trigger: "
                                              "{type: interval, seconds: 1}}\n")
    bad = write_jobs(tmp_path / "bad.yaml", "- id: a\n  command: 'true'\n  trigger: "
                                            "{type: cron, minute: '*/61'}\n")
    ok = cli("validate", str(good))
    assert ok.returncode == 0 and "OK, 1 jobs" in ok.stdout
    failed = cli("validate", str(bad))
    assert failed.returncode == 1
    assert f"{bad}:3: a: trigger.minute: '*/61' is not a valid minute field" in failed.stderr


def test_cli_version():
    result = cli("--version")
    assert result.returncode == 0 and ts_config.__version__ in result.stdout


def test_cli_refuses_public_bind_without_token(tmp_path):
    result = cli("--host", "0.0.0.0", "--db", f"sqlite:///{tmp_path / 'x.sqlite'}",
                 "--config", str(ROOT / "jobs.yaml"), cwd=tmp_path)
    assert result.returncode == 2
    assert "refusing to bind 0.0.0.0 without a token" in result.stderr


def test_config_from_env_and_flags_win():
    env = {"TS_CONFIG": "/etc/jobs.yaml", "TS_PORT": "9000", "TS_API_TOKEN": "s3cret",
           "TS_DATABASE_URL": "sqlite:///x.db", "TS_HOST": "0.0.0.0", "TS_LOG_LEVEL": "DEBUG"}
    config = ts.Config.from_env(env)
    assert (config.config_path, config.port, config.token, config.host) == \
        ("/etc/jobs.yaml", 9000, "s3cret", "0.0.0.0")
    args = ts_cli._parser().parse_args(["run", "--port", "9100", "--config", "mine.yaml"])
    config = ts.Config.from_args(args, env)
    assert (config.port, config.config_path, config.token) == (9100, "mine.yaml", "s3cret")
    with pytest.raises(ts.SchedulerError, match="port: 'eighty' is not a number"):
        ts.Config.from_env({"TS_PORT": "eighty"})


def test_workers_and_retention_come_from_flags_and_the_environment(capsys):
    env = {"TS_WORKERS": "4", "TS_KEEP_RUNS": "200", "TS_KEEP_DAYS": "7.5"}
    config = ts.Config.from_env(env)
    assert (config.max_workers, config.keep_runs, config.keep_days) == (4, 200, 7.5)
    args = ts_cli._parser().parse_args(["run", "--workers", "2", "--keep-runs", "50",
                                        "--keep-days", "0.5"])
    config = ts.Config.from_args(args, env)
    assert (config.max_workers, config.keep_runs, config.keep_days) == (2, 50, 0.5)
    defaults = ts.Config.from_args(ts_cli._parser().parse_args(["run"]), {})
    assert (defaults.max_workers, defaults.keep_runs, defaults.keep_days) == (10, 1000, 30)
    with pytest.raises(SystemExit):
        ts.main(["--help"])
    listed = capsys.readouterr().out
    assert all(f"{flag} " in listed for flag in ("--workers", "--keep-runs", "--keep-days"))


@pytest.mark.parametrize("flag, value, words", [
    ("--workers", "ten", "--workers (TS_WORKERS): 'ten' is not a whole number"),
    ("--workers", "0", "--workers (TS_WORKERS): '0' is out of range"),
    ("--workers", "2.5", "is not a whole number"),
    ("--keep-runs", "-5", "--keep-runs (TS_KEEP_RUNS): '-5' is out of range"),
    ("--keep-days", "-1", "--keep-days (TS_KEEP_DAYS): '-1' is out of range"),
    ("--keep-days", "a week", "'a week' is not a number"),
    ("--keep-days", "nan", "out of range"),
    ("--keep-days", "1e9", "out of range"),
])
def test_bad_workers_and_retention_are_a_clear_error_not_a_traceback(tmp_path, capsys, flag,
                                                                     value, words):
    # a public host without a token: a value let through is refused next, not served forever
    code = ts.main(["run", f"{flag}={value}", "--db", f"sqlite:///{tmp_path / 'ts.sqlite'}",
                    "--host", "0.0.0.0"])
    err = capsys.readouterr().err
    assert code == 2 and words in err and "Traceback" not in err, err
    assert not (tmp_path / "ts.sqlite").exists()
    variable = {"--workers": "TS_WORKERS", "--keep-runs": "TS_KEEP_RUNS",
                "--keep-days": "TS_KEEP_DAYS"}[flag]
    with pytest.raises(ts.SchedulerError, match=variable):
        ts.Config.from_env({variable: value})


def readme_yaml(name: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", (ROOT / name).read_text(), re.DOTALL)


def test_readme_examples_pass_validate_beside_their_stand_ins_and_name_their_placeholders(
        tmp_path, monkeypatch):
    # A seed test before this one imported the stand-in and left its folder on sys.path.
    for module in [m for m in sys.modules if m.split(".")[0] == "modules"]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if not os.path.isdir(
        os.path.join(p or ".", "modules"))])
    seed, bare = tmp_path / "seed", tmp_path / "bare"
    shutil.copytree(SEED, seed)
    bare.mkdir()
    english = readme_yaml("README.md")[0]
    message, _ = errors_of(bare, english)
    (seed / "readme.yaml").write_text(english)
    assert ts_cli.main(["validate", str(seed / "readme.yaml")]) == 0
    placeholders = ["modules.scheduler.tasks.monitoring", "backup_script.sh", "reindex.sh"]
    assert len(message.strip().splitlines()) == len(placeholders), message
    prose = re.sub(r"```.*?```", "", (ROOT / "README.md").read_text(), flags=re.DOTALL)
    for name in placeholders:
        assert name in message and name in prose, name
    first, second, third = readme_yaml("README.ja.md")[:3]
    (seed / "ja.yaml").write_text(first + second.replace("/path/to/your/", "./"))
    (seed / "ja3.yaml").write_text(third)
    assert ts_cli.main(["validate", str(seed / "ja.yaml")]) == 0
    assert ts_cli.main(["validate", str(seed / "ja3.yaml")]) == 0
    japanese = (ROOT / "README.ja.md").read_text()
    assert "最初の README" not in japanese and "仮の名前" in japanese


PARSER_FILES = [
    "- {id: a, command: 'true', trigger: {type: interval, seconds: 5}}\n"
    "- id: b\n  func: 'os:getcwd'\n  trigger: {type: cron, expression: '0 9 * * 1-5'}\n",
    "# comment first\n\n- id: a\n  command: ['echo', 'x']\n  trigger: {type: date, run_date: "
    "'2030-01-01 10:00:00'}\n",
    "defaults: {timeout: 5}\njobs:\n  - {id: a, command: 'true', trigger: {type: interval, "
    "seconds: 5}}\n",
    "- &base {id: a, command: 'true', trigger: {type: interval, seconds: 5}}\n"
    "- {<<: *base, id: b}\n",
    "- id: a\n  command: 'true'\n  trigger: {type: date, run_date: 2030-01-01}\n",
]


@pytest.mark.parametrize("text", PARSER_FILES)
def test_fast_parser_matches_the_full_parse(tmp_path, text):
    path = str(tmp_path / "jobs.yaml")
    expected = [j.dump() for j in ts_jobsfile.parse_jobs_text(text, path)]
    parser = ts_jobsfile.JobsParser()
    assert [j.dump() for j in parser.parse(text, path)] == expected
    assert [j.dump() for j in parser.parse(text, path)] == expected   # from its memory


def test_fast_parser_remembers_good_entries_but_never_hides_errors(tmp_path):
    path = str(tmp_path / "jobs.yaml")
    good = "".join(f"- {{id: j{i}, command: 'true', "
                   f"trigger: {{type: interval, seconds: {i + 1}}}}}\n" for i in range(50))
    parser = ts_jobsfile.JobsParser()
    assert len(parser.parse(good, path)) == 50
    edited = good.replace("seconds: 7}", "seconds: 70}")
    jobs = {j.id: j for j in parser.parse(edited, path)}
    assert jobs["j6"].trigger.seconds == 70 and jobs["j7"].trigger.seconds == 8
    broken = edited + "- {id: j3, command: 'true', trigger: {type: interval, seconds: 1}}\n"
    with pytest.raises(ts.InvalidConfig, match=r"jobs.yaml:51: j3: id: duplicate id"):
        parser.parse(broken, path)
    bad_cron = edited.replace("{type: interval, seconds: 3}", "{type: cron, minute: '99'}")
    with pytest.raises(ts.InvalidConfig, match=r"jobs.yaml:3: j2: trigger.minute: '99'"):
        parser.parse(bad_cron, path)
    script = tmp_path / "s.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    with_script = edited + "- {id: s, func: ./s.sh, trigger: {type: interval, seconds: 1}}\n"
    assert len(parser.parse(with_script, path)) == 51
    script.unlink()
    with pytest.raises(ts.InvalidConfig, match="s.sh does not exist"):
        parser.parse(with_script, path)   # the file is unchanged; the check is not remembered


def test_book_definitions_share_their_sets_of_given_fields_safely():
    """share_fields saves two sets a job; a copy with changes still works, the shared set not."""
    a, b = (ts_models.share_fields(ts.JobDefinition.model_validate(
        {"id": i, "command": "true", "trigger": {"type": "interval", "hours": 1}})) for i in "ab")
    assert a.model_fields_set is b.model_fields_set
    assert a.trigger.model_fields_set is b.trigger.model_fields_set
    copy = a.model_copy(update={"args": ["x"]})
    assert copy.dump()["args"] == ["x"] and "args" not in a.dump() and "args" not in b.dump()
    with pytest.raises(TypeError):
        a.model_fields_set.add("args")


def test_book_definitions_share_empty_fields_and_equal_triggers_safely():
    """Empty lists and dicts, and equal trigger specs, are one object for many definitions:
    changing one in place is refused, copies are plain, and what a definition dumps (and so
    its hash) is what it was given, even when a spec equal in value was given other fields."""
    def shared(job_id, **trigger):
        return ts_models.share_fields(ts.JobDefinition.model_validate(
            {"id": job_id, "command": "true", "trigger": {"type": "interval", **trigger}}))
    plain = ts.JobDefinition.model_validate({"id": "c", "command": "true",
                                             "trigger": {"type": "interval", "hours": 1,
                                                         "minutes": 0}})
    a, b, c = shared("a", hours=1), shared("b", hours=1), shared("c", hours=1, minutes=0)
    assert a.args is b.args and a.env is b.kwargs and a.trigger is b.trigger
    assert c.trigger is not a.trigger and c.dump() == plain.dump()
    assert ts_models.definition_hash(c) == ts_models.definition_hash(plain)
    assert a.args == [] and a.kwargs == {} and "args" not in a.dump()
    for change in (lambda: a.args.append(1), lambda: a.tags.extend(["x"]),
                   lambda: a.env.update(X="1"), lambda: a.kwargs.__setitem__("k", 1)):
        with pytest.raises(TypeError):
            change()
    copied = copy.deepcopy(a)
    copied.args.append(1)
    assert copied.args == [1] and a.args == [] and b.args == []
    assert a.model_copy(update={"tags": ["t"]}).tags == ["t"] and b.tags == []
