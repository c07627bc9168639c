"""Editing a jobs.yaml job in a real browser (issue 25, item 4): the edit is written back into the
file with its comments intact and applied; an edit of a file that changed since the page was
loaded is refused with the difference shown; clone and export work for every job. In English
and in Japanese."""
from __future__ import annotations

import pytest
import yaml
from playwright.sync_api import expect

from conftest import wait_for
from test_yaml_edit import SAMPLE as COMMENTED, changed_lines as changed

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.xdist_group("browser-yaml")]

@pytest.fixture
def yaml_server(fresh_server):
    fresh_server.config_path.write_text(COMMENTED)
    fresh_server.service.reload(force=True)
    return fresh_server


@pytest.mark.parametrize("lang", ["en", "ja"])
def test_a_yaml_job_edited_in_the_gui_is_written_back_with_its_comments_and_applied(
        yaml_server, page, shot, lang):
    words = {"en": ("Edit", "Save", "Written to", "and applied"),
             "ja": ("編集", "保存", "に書き込み", "反映しました")}[lang]
    page.goto(yaml_server.url(f"/jobs/disk?lang={lang}"))
    expect(page.get_by_test_id("defined-at")).to_have_text(f"{yaml_server.config_path}:14")
    shot(page, f"detail_{lang}")
    page.get_by_test_id("action-edit").click()
    expect(page.get_by_test_id("yaml-edit-note")).to_contain_text("jobs.yaml:14")
    page.locator('[name="timeout"]').fill("90")
    page.locator('[name="description"]').fill("Disk usage of every mount")
    shot(page, f"edit_form_{lang}")
    page.get_by_role("button", name=words[1], exact=True).click()
    expect(page.get_by_test_id("flash")).to_contain_text(words[2])
    expect(page.get_by_test_id("flash")).to_contain_text(words[3])
    expect(page.get_by_test_id("job-detail")).to_contain_text("Disk usage of every mount")
    shot(page, f"saved_{lang}")
    text = yaml_server.config_path.read_text()
    assert changed(COMMENTED, text) == ['-    description: "Disk usage"',
                                        '+    description: "Disk usage of every mount"',
                                        "-    timeout: 60", "+    timeout: 90"]
    assert "# every 5 minutes" in text and "# Our jobs. Keep the comments!" in text
    assert yaml_server.service.job("disk")["timeout"] == 90


@pytest.mark.parametrize("lang", ["en", "ja"])
def test_a_conflicting_edit_is_refused_with_the_difference_shown(yaml_server, page, shot, lang):
    heading = {"en": "changed since this page was loaded",
               "ja": "このページを開いた後に jobs.yaml が変更されました"}[lang]
    save = {"en": "Save", "ja": "保存"}[lang]
    page.goto(yaml_server.url(f"/jobs/disk/edit?lang={lang}"))
    page.locator('[name="timeout"]').fill("45")
    # meanwhile someone edits the file by hand (and the reloader applies it)
    edited = COMMENTED.replace("seconds: 30}", "seconds: 20}").replace(
        "'Checks health.'", "'Checks <b>health</b>.'")
    yaml_server.config_path.write_text(edited)
    wait_for(lambda: yaml_server.service.job("health")["trigger"].get("seconds") == 20,
             message="the hand edit applied")
    page.get_by_role("button", name=save, exact=True).click()
    conflict = page.get_by_test_id("yaml-conflict")
    expect(conflict).to_contain_text(heading)
    diff = page.get_by_test_id("yaml-diff")
    expect(diff).to_contain_text("-    trigger: {type: interval, seconds: 30}")
    expect(diff).to_contain_text("+    trigger: {type: interval, seconds: 20}")
    expect(diff).to_contain_text("'Checks <b>health</b>.'")   # shown as text, not markup
    expect(page.locator('[name="timeout"]')).to_have_value("45")   # the entered value kept
    assert yaml_server.config_path.read_text() == edited          # nothing written
    shot(page, f"conflict_{lang}")
    page.get_by_role("button", name=save, exact=True).click()      # knowingly, over the new file
    expect(page.get_by_test_id("flash")).to_be_visible()
    text = yaml_server.config_path.read_text()
    assert changed(edited, text) == ["-    timeout: 60", "+    timeout: 45"]
    assert yaml_server.service.job("disk")["timeout"] == 45


def test_clone_and_export_any_job(yaml_server, page, shot):
    page.goto(yaml_server.url("/jobs/disk"))
    page.get_by_test_id("action-clone").click()
    expect(page.get_by_test_id("clone-note")).to_contain_text("disk")
    expect(page.locator('[name="id"]')).to_have_value("disk_copy")
    expect(page.locator('[name="cron_expression"]')).to_have_value("*/5 * * * *")
    shot(page, "clone_form")
    page.get_by_role("button", name="Create job").click()
    expect(page.get_by_test_id("flash")).to_contain_text("disk_copy")
    copy = yaml_server.service.job("disk_copy")
    assert copy["source"] == "api" and copy["command"] == ["df", "-h"]
    assert yaml_server.config_path.read_text() == COMMENTED   # a clone is not written to the file
    for job_id in ("disk", "disk_copy"):
        page.goto(yaml_server.url(f"/jobs/{job_id}"))
        with page.expect_download() as download:
            page.get_by_test_id("action-export").click()
        assert download.value.suggested_filename == f"{job_id}.yaml"
        [entry] = yaml.safe_load(open(download.value.path()).read())
        assert entry["id"] == job_id and entry["command"] == ["df", "-h"]
