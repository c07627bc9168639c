"""Editing jobs.yaml jobs from the GUI (issue 25, item 4): the round-trip writer changes only the
edited entry (comments, order, flow style, quoting of the rest kept), an edit is refused with the
difference when the file changed since the form was loaded, invalid edits and unwritable files
change nothing, and every job can be exported as a jobs.yaml entry and cloned."""

from __future__ import annotations

import difflib
import os
import re
import stat
import textwrap

import pytest
import yaml

import task_scheduler as ts
from conftest import write_jobs
from task_scheduler.errors import InvalidJob
from task_scheduler.jobsfile import parse_jobs_text
from task_scheduler.yamledit import FileChanged, NotWritable
from task_scheduler.yamltext import NotEditable, entry_keys, entry_lines, locate, rewrite_entry
from task_scheduler_web import forms
from test_security import Browser

SAMPLE = textwrap.dedent("""\
    # Our jobs. Keep the comments!
    defaults:
      misfire_grace_time: 300      # late fires still run

    jobs:
      # Health, twice a minute.
      - id: health
        command: ['true']            # argv, quoted
        description: 'Checks health.'
        tags: [monitoring, web]
        trigger: {type: interval, seconds: 30}

      # Disk usage every five minutes.
      - id: disk
        command: ['df', '-h']
        description: "Disk usage"
        trigger: {type: cron, expression: '*/5 * * * *'}   # every 5 minutes
        timeout: 60

      # The last one, in block style.
      - id: last
        command:
          - echo
          - bye
        trigger:
          type: manual
    """)


def rewrite(text: str, job_id: str, change, path: str = "/tmp/jobs.yaml") -> str:
    """The text with ``change`` applied to the job's definition as the service has it."""
    jobs = {j.id: j for j in parse_jobs_text(text, path)}
    definition = jobs[job_id].dump()
    change(definition)
    entry = locate(text, job_id)
    return rewrite_entry(text, entry, entry_keys(definition, entry))


def changed_lines(old: str, new: str) -> list[str]:
    return [line for line in difflib.unified_diff(old.splitlines(), new.splitlines(), n=0,
                                                  lineterm="")
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


# -- the round-trip writer ---------------------------------------------------------------------

@pytest.mark.parametrize("job_id", ["health", "disk", "last"])
def test_an_edit_that_changes_nothing_leaves_the_file_byte_for_byte(job_id):
    assert rewrite(SAMPLE, job_id, lambda d: None) == SAMPLE


def test_the_sample_jobs_yaml_round_trips_unchanged():
    text = (ts_root() / "jobs.yaml").read_text()
    for job_id in entry_lines(text):
        assert rewrite(text, job_id, lambda d: None, str(ts_root() / "jobs.yaml")) == text


def ts_root():
    from conftest import ROOT
    return ROOT


def test_only_the_edited_values_change_and_comments_order_flow_and_quotes_stay():
    def change(d):
        d["timeout"] = 90
        d["description"] = "Disk usage of every mount"
        d["command"] = ["df", "-h", "-P"]
    new = rewrite(SAMPLE, "disk", change)
    assert changed_lines(SAMPLE, new) == [
        "-    command: ['df', '-h']",
        '-    description: "Disk usage"',
        "+    command: ['df', '-h', '-P']",
        '+    description: "Disk usage of every mount"',
        "-    timeout: 60",
        "+    timeout: 90"]
    assert "# every 5 minutes" in new and "# Disk usage every five minutes." in new
    jobs = {j.id: j for j in parse_jobs_text(new, "/tmp/jobs.yaml")}
    assert jobs["disk"].timeout == 90 and jobs["disk"].command == ["df", "-h", "-P"]


def test_a_nested_flow_mapping_is_edited_in_place():
    new = rewrite(SAMPLE, "health", lambda d: d["trigger"].update(seconds=45))
    assert changed_lines(SAMPLE, new) == ["-    trigger: {type: interval, seconds: 30}",
                                          "+    trigger: {type: interval, seconds: 45}"]


def test_removing_the_last_key_keeps_the_next_entrys_heading_comment():
    new = rewrite(SAMPLE, "disk", lambda d: d.pop("timeout"))
    assert changed_lines(SAMPLE, new) == ["-    timeout: 60"]
    assert "  # The last one, in block style.\n  - id: last" in new


def test_new_keys_come_last_and_strings_yaml_would_misread_are_quoted():
    def change(d):
        d["description"] = "yes"
        d["tags"] = ["12:30", "on", "010"]
    new = rewrite(SAMPLE, "last", change)
    assert "    description: 'yes'\n" in new
    assert "    tags:\n      - '12:30'\n      - 'on'\n      - '010'\n" in new   # as command:
    last = {j.id: j for j in parse_jobs_text(new, "/tmp/jobs.yaml")}["last"]
    assert last.description == "yes" and last.tags == ["12:30", "on", "010"]
    assert new.startswith(SAMPLE[:SAMPLE.index("  - id: last")])


def test_a_value_equal_to_the_files_defaults_is_not_written_and_an_override_is():
    new = rewrite(SAMPLE, "health", lambda d: d.update(max_instances=1))
    assert new == SAMPLE   # 1 is the default: the entry does not say it
    new = rewrite(SAMPLE, "health", lambda d: d.update(misfire_grace_time=300))
    assert new == SAMPLE   # what defaults: gives
    new = rewrite(SAMPLE, "health", lambda d: d.update(misfire_grace_time=30))
    assert changed_lines(SAMPLE, new) == ["+    misfire_grace_time: 30"]


def test_a_top_level_list_file_and_windows_line_ends():
    text = "- id: a   # first\r\n  command: 'true'\r\n- id: b\r\n  command: 'false'\r\n"
    new = rewrite(text, "a", lambda d: d.update(description="A"))
    assert new == ("- id: a   # first\r\n  command: 'true'\r\n  description: A\r\n"
                   "- id: b\r\n  command: 'false'\r\n")


def test_anchors_in_the_edited_entry_are_refused_and_elsewhere_are_fine():
    text = textwrap.dedent("""\
        - id: a
          command: 'true'
          tags: &common [x]
        - id: b
          command: 'true'
          tags: *common
        """)
    with pytest.raises(NotEditable, match="anchors or aliases"):
        rewrite(text, "b", lambda d: d.update(description="B"))
    with pytest.raises(NotEditable, match="anchors or aliases"):
        rewrite(text, "a", lambda d: d.update(description="A"))
    text += "- id: c\n  command: 'true'\n"
    new = rewrite(text, "c", lambda d: d.update(description="C"))
    assert changed_lines(text, new) == ["+  description: C"]


def test_an_entry_not_laid_out_as_a_block_item_is_refused():
    with pytest.raises(NotEditable, match="block item"):
        rewrite("[{id: a, command: 'true'}]\n", "a", lambda d: d.update(description="A"))


def test_a_one_line_flow_item_keeps_its_flow_style():
    text = ("- {id: a, command: 'true', trigger: {type: interval, hours: 1}}\n"
            "- {id: b, command: 'false'}\n")
    new = rewrite(text, "a", lambda d: d["trigger"].update(hours=2))
    assert new == ("- {id: a, command: 'true', trigger: {type: interval, hours: 2}}\n"
                   "- {id: b, command: 'false'}\n")


def test_entry_lines_name_the_line_of_each_entry():
    assert entry_lines(SAMPLE) == {"health": 7, "disk": 14, "last": 21}
    assert entry_lines(": not yaml [") == {}
    # an entry whose id is not its first key: the file is composed, same answer
    assert entry_lines("- command: 'true'\n  id: a\n- id: b\n  command: 'true'\n") == \
        {"a": 1, "b": 3}
    # a nested '- id:' line does not pass for an entry
    assert entry_lines("- id: a\n  args:\n    - id: b\n- id: b\n  command: x\n") == \
        {"a": 1, "b": 4}


# -- the service: write, conflict, refusals ------------------------------------------------------

@pytest.fixture
def yaml_service(make_service, jobs_file):
    write_jobs(jobs_file, SAMPLE)
    return make_service()


def test_an_edit_is_written_with_its_comments_and_applied(yaml_service, jobs_file):
    os.chmod(jobs_file, 0o640)
    snap = yaml_service.yaml_snapshot("disk")
    assert snap["line"] == 14 and snap["path"] == str(jobs_file)
    definition = dict(yaml_service.job("disk")["definition"], timeout=120)
    done = yaml_service.edit_yaml_job("disk", definition, snap["hash"])
    assert done["changed"] and done["applied"] and done["line"] == 14
    text = jobs_file.read_text()
    assert changed_lines(SAMPLE, text) == ["-    timeout: 60", "+    timeout: 120"]
    assert yaml_service.job("disk")["timeout"] == 120
    assert yaml_service.config_status()["hash"] == done["hash"]
    assert stat.S_IMODE(os.stat(jobs_file).st_mode) == 0o640
    assert not [p for p in os.listdir(jobs_file.parent) if p.endswith(".tmp")]


def test_an_edit_of_a_changed_file_is_refused_with_the_difference(yaml_service, jobs_file):
    snap = yaml_service.yaml_snapshot("disk")
    changed = SAMPLE.replace("seconds: 30}", "seconds: 20}")
    jobs_file.write_text(changed)
    definition = dict(yaml_service.job("disk")["definition"], timeout=120)
    with pytest.raises(FileChanged) as caught:
        yaml_service.edit_yaml_job("disk", definition, snap["hash"])
    assert jobs_file.read_text() == changed   # nothing written
    diff = caught.value.diff
    assert "-    trigger: {type: interval, seconds: 30}" in diff
    assert "+    trigger: {type: interval, seconds: 20}" in diff
    assert caught.value.status == 409
    # with the version it was shown, the same edit goes through
    yaml_service.edit_yaml_job("disk", definition, caught.value.hash)
    assert "timeout: 120" in jobs_file.read_text() and "seconds: 20}" in jobs_file.read_text()


def test_an_invalid_edit_is_refused_with_its_field_and_the_file_is_untouched(yaml_service,
                                                                               jobs_file):
    snap = yaml_service.yaml_snapshot("disk")
    definition = yaml_service.job("disk")["definition"]
    bad = dict(definition, trigger={"type": "cron", "expression": "61 * * * *"})
    with pytest.raises(InvalidJob) as caught:
        yaml_service.edit_yaml_job("disk", bad, snap["hash"])
    assert [d["field"] for d in caught.value.details] == ["trigger.expression"]
    with pytest.raises(InvalidJob) as caught:
        yaml_service.edit_yaml_job("disk", dict(definition, timeout=-1), snap["hash"])
    assert caught.value.details[0]["field"] == "timeout"
    assert jobs_file.read_bytes() == SAMPLE.encode()
    assert yaml_service.job("disk")["timeout"] == 60


def test_an_edit_is_refused_when_the_whole_file_would_not_validate(yaml_service, jobs_file):
    broken = SAMPLE.replace("type: manual", "type: manual\n      bogus: 1")
    jobs_file.write_text(broken)   # another job broken by hand, not reloaded yet
    snap = yaml_service.yaml_snapshot("disk")
    definition = dict(yaml_service.job("disk")["definition"], timeout=5)
    with pytest.raises(InvalidJob) as caught:
        yaml_service.edit_yaml_job("disk", definition, snap["hash"])
    assert "last" in caught.value.details[0]["message"]
    assert caught.value.details[0]["field"] == ""   # not a field of this job's form
    assert jobs_file.read_text() == broken


def test_a_read_only_file_is_refused_clearly_and_nothing_is_lost(yaml_service, jobs_file):
    snap = yaml_service.yaml_snapshot("disk")
    os.chmod(jobs_file, 0o444)
    definition = dict(yaml_service.job("disk")["definition"], timeout=120)
    with pytest.raises(NotWritable, match="cannot write .*read-only; nothing was changed"):
        yaml_service.edit_yaml_job("disk", definition, snap["hash"])
    assert jobs_file.read_text() == SAMPLE and yaml_service.job("disk")["timeout"] == 60
    assert not [p for p in os.listdir(jobs_file.parent) if p.endswith(".tmp")]


def test_an_api_job_is_not_written_to_the_file(yaml_service, jobs_file):
    yaml_service.add_job({"id": "mine", "command": "true"})
    with pytest.raises(ts.JobConflict, match="created through the API"):
        yaml_service.yaml_snapshot("mine")
    with pytest.raises(ts.JobConflict, match="created through the API"):
        yaml_service.edit_yaml_job("mine", {"id": "mine", "command": "false"}, "x")
    assert jobs_file.read_text() == SAMPLE


def test_ruamel_is_imported_only_when_a_file_is_written():
    import subprocess
    import sys
    code = ("import sys, task_scheduler, task_scheduler_web, task_scheduler.yamledit;"
            "print('ruamel' in ' '.join(sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ts_root(), check=True)
    assert out.stdout.strip() == "False"


# -- the API: defined_at, export, PUT -------------------------------------------------------------

def test_the_api_says_where_a_yaml_job_is_defined(yaml_service, jobs_file, client_for):
    client = client_for(yaml_service)
    job = client.get("/api/jobs/last").json
    assert job["defined_at"] == {"path": str(jobs_file), "line": 21}
    client.post("/api/jobs", {"id": "mine", "command": "true"})
    assert "defined_at" not in client.get("/api/jobs/mine").json


def test_put_on_a_yaml_job_names_the_gui_edit(yaml_service, client_for):
    client = client_for(yaml_service)
    answer = client.put("/api/jobs/disk", {"id": "disk", "command": "true"})
    assert answer.status == 409 and "/jobs/disk/edit" in answer.json["error"]["message"]


def test_export_as_yaml_round_trips_into_a_new_api_job(yaml_service, client_for):
    client = client_for(yaml_service)
    answer = client.get("/api/jobs/disk", query={"format": "yaml"})
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "application/yaml; charset=utf-8"
    assert answer.text.startswith("# job disk exported from task-scheduler\n")
    [entry] = yaml.safe_load(answer.text)
    created = client.post("/api/jobs", {**entry, "id": "disk2"})
    assert created.status == 201
    original = client.get("/api/jobs/disk").json
    assert {**created.json["definition"], "id": "disk"} == original["definition"]
    assert created.json["trigger"] == original["trigger"]
    assert client.get("/api/jobs/disk", query={"format": "xml"}).status == 400


def test_export_hides_notify_secrets_as_the_api_does(make_service, jobs_file, client_for):
    write_jobs(jobs_file, """\
        - id: hooked
          command: 'true'
          notify: [{webhook: 'https://hooks.example.com/T0/secret-path', secret: s3cr3t}]
        """)
    client = client_for(make_service())
    text = client.get("/api/jobs/hooked", query={"format": "yaml"}).text
    assert "s3cr3t" not in text and "secret-path" not in text
    assert "# notify secrets are hidden" in text


@pytest.fixture
def client_for():
    from conftest import Client
    return lambda service: Client(ts.create_app(service))


# -- the GUI: the edit form, conflicts, CSRF, clone, export -------------------------------------

def csrf_of(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def hash_of(page: str) -> str:
    return re.search(r'name="file_hash" value="([0-9a-f]+)"', page).group(1)


def edit_form(service, job_id, page, **changes) -> dict:
    form = forms.job_to_form(service.job(job_id))
    form.update(changes, csrf_token=csrf_of(page), file_hash=hash_of(page))
    return form


def test_the_gui_edits_a_yaml_job_into_the_file(yaml_service, jobs_file):
    browser = Browser(ts.create_app(yaml_service))
    status, _, page = browser.request("GET", "/jobs/disk")
    assert re.search(r'data-testid="defined-at">[^<]*jobs.yaml:14<', page)
    status, _, page = browser.request("GET", "/jobs/disk/edit")
    assert status == 200 and 'data-testid="yaml-edit-note"' in page
    form = edit_form(yaml_service, "disk", page, timeout="30", id="health")
    status, headers, _ = browser.request("POST", "/jobs/disk/edit", form=form)
    assert status == 303 and headers["Location"].endswith("/jobs/disk")
    assert changed_lines(SAMPLE, jobs_file.read_text()) == ["-    timeout: 60",
                                                            "+    timeout: 30"]
    assert yaml_service.job("health")["timeout"] is None   # the id in the form wrote nothing
    _, _, page = browser.request("GET", "/jobs/disk")
    assert "Written to" in page and "jobs.yaml:14 and applied" in page


def test_the_gui_refuses_a_conflicting_edit_showing_the_difference(yaml_service, jobs_file):
    browser = Browser(ts.create_app(yaml_service))
    _, _, page = browser.request("GET", "/jobs/disk/edit")
    form = edit_form(yaml_service, "disk", page, timeout="30")
    jobs_file.write_text(SAMPLE.replace("'Checks health.'", "'<b>Checks</b> health.'"))
    status, _, page = browser.request("POST", "/jobs/disk/edit", form=form)
    assert status == 409 and 'data-testid="yaml-conflict"' in page
    assert "&lt;b&gt;Checks&lt;/b&gt;" in page and "<b>Checks" not in page   # escaped
    assert 'name="timeout" value="30"' in page.replace('type="number" ', "") or \
        re.search(r'name="timeout"[^>]*value="30"', page)   # the entered value is kept
    assert "timeout: 60" in jobs_file.read_text()
    form["file_hash"] = hash_of(page)   # the new version's hash: saving again writes
    status, _, _ = browser.request("POST", "/jobs/disk/edit", form=form)
    assert status == 303 and "timeout: 30" in jobs_file.read_text()
    assert "'<b>Checks</b> health.'" in jobs_file.read_text()


def test_the_gui_edit_needs_the_csrf_token(yaml_service, jobs_file):
    browser = Browser(ts.create_app(yaml_service))
    _, _, page = browser.request("GET", "/jobs/disk/edit")
    form = edit_form(yaml_service, "disk", page, timeout="30")
    form.pop("csrf_token")
    status, _, _ = browser.request("POST", "/jobs/disk/edit", form=form)
    assert status == 403 and jobs_file.read_text() == SAMPLE


def test_the_gui_shows_field_errors_and_writes_nothing(yaml_service, jobs_file):
    browser = Browser(ts.create_app(yaml_service))
    _, _, page = browser.request("GET", "/jobs/disk/edit")
    form = edit_form(yaml_service, "disk", page, cron_expression="61 * * * *")
    status, _, page = browser.request("POST", "/jobs/disk/edit", form=form)
    assert status == 422 and 'data-testid="error-summary"' in page
    assert jobs_file.read_text() == SAMPLE


def test_the_gui_says_when_the_file_is_read_only(yaml_service, jobs_file):
    browser = Browser(ts.create_app(yaml_service))
    _, _, page = browser.request("GET", "/jobs/disk/edit")
    os.chmod(jobs_file, 0o444)
    form = edit_form(yaml_service, "disk", page, timeout="30")
    status, _, page = browser.request("POST", "/jobs/disk/edit", form=form)
    assert status == 409 and "read-only; nothing was changed" in page
    assert 'value="30"' in page and jobs_file.read_text() == SAMPLE


def test_clone_prefills_the_new_job_form_and_creates_an_api_job(yaml_service):
    browser = Browser(ts.create_app(yaml_service))
    status, _, page = browser.request("GET", "/jobs/new?clone=disk")
    assert status == 200 and 'value="disk_copy"' in page and 'name="clone_of"' in page
    form = forms.job_to_form(yaml_service.job("disk"))
    form.update(id="disk_copy", clone_of="disk", csrf_token=csrf_of(page))
    status, headers, _ = browser.request("POST", "/jobs/new", form=form)
    assert status == 303 and headers["Location"].endswith("/jobs/disk_copy")
    copy, original = yaml_service.job("disk_copy"), yaml_service.job("disk")
    assert copy["source"] == "api"
    assert (copy["trigger"], copy["command"], copy["timeout"], copy["misfire_grace_time"]) == \
        (original["trigger"], original["command"], original["timeout"],
         original["misfire_grace_time"])
    _, _, page = browser.request("GET", "/jobs/new?clone=disk")
    assert 'value="disk_copy2"' in page


def test_clone_keeps_the_hidden_notify_secrets(make_service, jobs_file):
    write_jobs(jobs_file, """\
        - id: hooked
          command: 'true'
          notify: [{webhook: 'https://hooks.example.com/T0/secret-path', secret: s3cr3t}]
        """)
    service = make_service()
    browser = Browser(ts.create_app(service))
    _, _, page = browser.request("GET", "/jobs/new?clone=hooked")
    assert "s3cr3t" not in page and "secret-path" not in page
    form = forms.job_to_form(service.job("hooked"))
    form.update(id="hooked_copy", clone_of="hooked", csrf_token=csrf_of(page))
    status, _, _ = browser.request("POST", "/jobs/new", form=form)
    assert status == 303
    target = service.book.get("hooked_copy").definition.notify[0]
    assert (target.webhook, target.secret) == ("https://hooks.example.com/T0/secret-path",
                                               "s3cr3t")


def test_export_from_the_gui_downloads_the_entry(yaml_service):
    browser = Browser(ts.create_app(yaml_service))
    status, headers, text = browser.request("GET", "/jobs/health/yaml")
    assert status == 200 and headers["Content-Type"].startswith("application/yaml")
    assert headers["Content-Disposition"] == 'attachment; filename="health.yaml"'
    assert yaml.safe_load(text)[0]["id"] == "health"


def test_the_last_entry_before_another_top_level_key_leaves_that_key_alone():
    text = textwrap.dedent("""\
        jobs:
        - id: a
          command: 'true'
          timeout: 5

        # shared settings
        defaults:
          timeout: 9
        """)
    new = rewrite(text, "a", lambda d: d.pop("timeout"))   # no timeout: null beats the default
    assert changed_lines(text, new) == ["-  timeout: 5", "+  timeout: null"]
    new = rewrite(text, "a", lambda d: d.update(timeout=9))   # what defaults: says
    assert changed_lines(text, new) == ["-  timeout: 5", "+  timeout: 9"]
    new = rewrite(text, "a", lambda d: d.update(description="A"))
    assert changed_lines(text, new) == ["+  description: A"]


def test_a_follower_does_not_write_its_file(yaml_service, jobs_file):
    snap = yaml_service.yaml_snapshot("disk")
    yaml_service.editor._leading = lambda: False   # as a node that does not hold the lease
    definition = dict(yaml_service.job("disk")["definition"], timeout=120)
    with pytest.raises(ts.JobConflict, match="this node follows"):
        yaml_service.edit_yaml_job("disk", definition, snap["hash"])
    assert jobs_file.read_text() == SAMPLE


def test_a_symlinked_file_is_written_where_it_points(make_service, tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    write_jobs(real / "jobs.yaml", SAMPLE)
    link = tmp_path / "linked.yaml"
    link.symlink_to(real / "jobs.yaml")
    service = make_service(config_path=str(link))
    snap = service.yaml_snapshot("disk")
    service.edit_yaml_job("disk", dict(service.job("disk")["definition"], timeout=7),
                          snap["hash"])
    assert link.is_symlink() and "timeout: 7" in (real / "jobs.yaml").read_text()
    assert service.job("disk")["timeout"] == 7


def test_a_conflict_whose_first_version_is_forgotten_has_no_diff(yaml_service, jobs_file):
    snap = yaml_service.yaml_snapshot("disk")
    yaml_service.editor._texts.clear()   # another node rendered the form, or long ago
    jobs_file.write_text(SAMPLE + "\n")
    with pytest.raises(FileChanged) as caught:
        yaml_service.edit_yaml_job("disk", yaml_service.job("disk")["definition"],
                                   snap["hash"])
    assert caught.value.diff == "" and jobs_file.read_text() == SAMPLE + "\n"
