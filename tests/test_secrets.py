"""Secrets stay secret (issue 20): jobs do not inherit the service's secrets, what a run prints
of a known secret is masked before it is stored or sent (against a real webhook receiver and a
real SMTP server), webhook secrets are bound to their URL and never follow a redirect, and
guessing the token is slowed down without ever refusing the right one."""

from __future__ import annotations

import json
import os
import sys

import pytest

import task_scheduler as ts
from test_notify import Receiver, receiver, run_to_end, sent_notes, smtp  # noqa: F401

TOKEN = "tok-" + "A1b2C3d4E5f6G7h8"
SMTP_PASSWORD = "smtp-pa55word-xyz"
DB_PASSWORD = "db-pa55word-xyz"
HOOK_SECRET = "hook-secret-9f8e7d"
HEADER_VALUE = "Bearer header-value-5a4b3c"


@pytest.fixture
def secret_environ(monkeypatch):
    """The service's secrets in its environment, as the CLI reads them."""
    monkeypatch.setenv("TS_API_TOKEN", TOKEN)
    monkeypatch.setenv("TS_SMTP_URL", f"smtp://ops:{SMTP_PASSWORD}@127.0.0.1:1?from=a@b.c")
    monkeypatch.setenv("TS_HOST", "127.0.0.1")
    monkeypatch.setenv("TS_PASS_ME", "passed-through")
    return dict(os.environ)


def secret_config(**extra):
    return dict(token=TOKEN, smtp_url=os.environ["TS_SMTP_URL"], **extra)


def test_a_command_job_gets_no_setting_or_secret_of_the_service(make_service, secret_environ):
    service = make_service(**secret_config(pass_env=("TS_PASS_ME",)))
    service.add_job({"id": "env", "command": "env", "trigger": {"type": "manual"},
                     "env": {"MINE": "job-value"}})
    run = run_to_end(service, "env")
    names = dict(line.split("=", 1) for line in service.run(run["id"])["stdout"].splitlines()
                 if "=" in line)
    for name in ("TS_API_TOKEN", "TS_SMTP_URL", "TS_HOST"):
        assert name not in names
    assert names["TS_RUN_ID"] == run["id"] and names["TS_JOB_ID"] == "env"
    assert names["TS_PASS_ME"] == "passed-through" and names["MINE"] == "job-value"
    assert "PATH" in names


def test_a_python_job_finds_no_secret_in_os_environ(make_service, secret_environ, tmp_path):
    (tmp_path / "envjob.py").write_text(
        "import os\n"
        "def show():\n"
        "    print(sorted(k for k in os.environ if k in ('TS_API_TOKEN', 'TS_SMTP_URL')))\n")
    service = make_service(**secret_config())
    service.add_job({"id": "py", "func": "envjob:show", "trigger": {"type": "manual"}})
    run = run_to_end(service, "py")
    assert service.run(run["id"])["stdout"].strip() == "[]"
    assert "TS_API_TOKEN" not in os.environ and "TS_HOST" in os.environ
    sys.modules.pop("envjob", None)


MASKED_SCRIPT = r"""
printf 'token: %s\n' "$T"
# a secret cut in two by the pipe: two reads
printf 'split: %s' "$(printf %s "$S" | cut -c1-7)"; sleep 0.4
printf '%s end\n' "$(printf %s "$S" | cut -c8-)"
printf 'header: %s\n' "$H" >&2
printf 'smtp: %s\n' "$P"
head -c 3000 /dev/zero | tr '\0' 'x'; printf ' mid %s mid ' "$T"
head -c 3000 /dev/zero | tr '\0' 'y'
printf '\nlast: %s\n' "$T"
exit 1
"""


def test_secrets_a_run_prints_are_masked_in_storage_webhook_and_mail(
        make_service, secret_environ, receiver, smtp):  # noqa: F811
    url, inbox = smtp
    service = make_service(token=TOKEN, smtp_url=url, notify_delays=(0.2,), output_limit=2048)
    service.secrets.append(SMTP_PASSWORD)   # the mail server here takes no password
    service.add_job({"id": "leaky", "command": MASKED_SCRIPT, "shell": True,
                     "trigger": {"type": "manual"},
                     "env": {"T": TOKEN, "S": HOOK_SECRET, "H": HEADER_VALUE,
                             "P": SMTP_PASSWORD},
                     "notify": [{"webhook": receiver.url(), "secret": HOOK_SECRET,
                                 "headers": {"Authorization": HEADER_VALUE}},
                                {"email": ["ops@example.com"]}]})
    run = run_to_end(service, "leaky")
    notes = sent_notes(service, run["id"], 2)
    assert all(n["status"] == "sent" for n in notes), notes
    stored = service.run(run["id"])
    webhook = receiver.requests[-1]["body"].decode()
    mail = inbox.messages[-1].content.decode()
    for text in (stored["stdout"], stored["stderr"], webhook, mail):
        for secret in (TOKEN, HOOK_SECRET, HEADER_VALUE, SMTP_PASSWORD, HOOK_SECRET[:7],
                       HOOK_SECRET[7:]):
            assert secret not in text, (secret, text[:500])
    assert "token: ***" in stored["stdout"] and "split: *** end" in stored["stdout"]
    assert "header: ***" in stored["stderr"] and "last: ***" in stored["stdout"]
    assert stored["truncated"] and "last: ***" in json.loads(webhook)["output"]["stdout"]
    assert "last: ***" in mail


def test_a_python_jobs_error_and_the_database_password_are_masked(make_service, tmp_path):
    (tmp_path / "failjob.py").write_text(
        "def fail(value):\n"
        "    print('printed', value)\n"
        "    raise RuntimeError('bad ' + value)\n")
    service = make_service(token=TOKEN)
    service.secrets.append(DB_PASSWORD)   # as a password in --db would be
    service.add_job({"id": "pyfail", "func": "failjob:fail", "trigger": {"type": "manual"},
                     "kwargs": {"value": DB_PASSWORD + " " + TOKEN}})
    run = service.run(run_to_end(service, "pyfail")["id"])
    assert run["status"] == "failed"
    for text in (run["stdout"], run["error"]):
        assert DB_PASSWORD not in text and TOKEN not in text and "*** ***" in text
    sys.modules.pop("failjob", None)


def test_secret_mask_across_pieces():
    mask = ts.SecretMask(["abcdefgh", "abcd", "zzzz", "no"])   # "no": too short to mask
    out = ts.MaskedOutput(1000, mask)
    for piece in (b"1ab", b"cdef", b"gh2 ab", b"cd3 zz", b"zz4 no a"):
        out.write(piece)
    assert out.text() == "1***2 ***3 ***4 no "   # "a" may begin a secret: held back
    assert out.settle() == "1***2 ***3 ***4 no a"
    assert ts.service_secrets(ts.Config(database_url="postgresql://u:p%40ss-word@h/db"))[1:] == \
        ["p%40ss-word", "p@ss-word"]
