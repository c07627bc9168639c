"""Secrets stay secret (issue 20): jobs do not inherit the service's secrets, what a run prints
of a known secret is masked before it is stored or sent (against a real webhook receiver and a
real SMTP server), webhook secrets are bound to their URL and never follow a redirect, and
guessing the token is slowed down without ever refusing the right one."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import task_scheduler as ts

import task_scheduler.notify as ts_notify
import task_scheduler.http.guard as ts_guard
import task_scheduler.output as ts_output
from conftest import Client, child_env, wait_for
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


def test_a_python_jobs_error_and_the_database_password_are_masked(make_service, tmp_path,
                                                                   caplog):
    (tmp_path / "failjob.py").write_text(
        "import logging\n"
        "def fail(value):\n"
        "    print('printed', value)\n"
        "    logging.getLogger('failjob').warning('logged %s', value)\n"
        "    raise RuntimeError('bad ' + value)\n")
    service = make_service(token=TOKEN)
    service.secrets.append(DB_PASSWORD)   # as a password in --db would be
    service.add_job({"id": "pyfail", "func": "failjob:fail", "trigger": {"type": "manual"},
                     "kwargs": {"value": DB_PASSWORD + " " + TOKEN}})
    run = service.run(run_to_end(service, "pyfail")["id"])
    assert run["status"] == "failed"
    for text in (run["stdout"], run["error"]):
        assert DB_PASSWORD not in text and TOKEN not in text and "*** ***" in text
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "RuntimeError: bad *** ***" in logged and "logged *** ***" in logged
    assert DB_PASSWORD not in logged and TOKEN not in logged
    assert "logged *** ***" in run["stderr"]
    sys.modules.pop("failjob", None)


def test_secret_mask_across_pieces():
    mask = ts_output.SecretMask(["abcdefgh", "abcd", "zzzz", "no"])   # "no": too short to mask
    out = ts_output.MaskedOutput(1000, mask)
    for piece in (b"1ab", b"cdef", b"gh2 ab", b"cd3 zz", b"zz4 no a"):
        out.write(piece)
    assert out.text() == "1***2 ***3 ***4 no "   # "a" may begin a secret: held back
    assert out.settle() == "1***2 ***3 ***4 no a"
    config = ts.Config(database_url="postgresql://u:p%40ss-word@h/db")
    assert ts_output.service_secrets(config)[1:] == ["p%40ss-word", "p@ss-word"]


class Recorder:
    """A local web server that records every request (any method) and answers ``answer``:
    (status, headers)."""

    def __init__(self, answer=(200, {})):
        self.requests: list[dict] = []
        self.answer = answer
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def handle_any(self):
                length = int(self.headers.get("Content-Length") or 0)
                recorder.requests.append({"method": self.command, "path": self.path,
                                          "headers": dict(self.headers),
                                          "body": self.rfile.read(length)})
                status, headers = recorder.answer
                self.send_response(status)
                for name, value in {**headers, "Content-Length": "0"}.items():
                    self.send_header(name, value)
                self.end_headers()

            do_GET = do_POST = do_PUT = handle_any

            def log_message(self, *args):
                pass
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path="/hook"):
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorders():
    made = []

    def make(answer=(200, {})):
        made.append(Recorder(answer))
        return made[-1]
    yield make
    for recorder in made:
        recorder.close()


def test_a_redirect_is_not_followed_and_the_location_is_recorded(make_service, recorders):
    elsewhere = recorders()
    hook = recorders((302, {"Location": elsewhere.url("/stolen?x=1")}))
    service = make_service(notify_delays=(60,))
    service.add_job({"id": "r", "command": "false", "trigger": {"type": "manual"},
                     "notify": [{"webhook": hook.url(), "secret": HOOK_SECRET,
                                 "headers": {"Authorization": HEADER_VALUE}}]})
    run = run_to_end(service, "r")
    note = wait_for(lambda: (n := service.run(run["id"])["notifications"]) and n[0]["attempts"]
                    and n[0], 20, 0.1, "the first attempt")
    assert note["status"] == "pending" and not note["log"][0]["ok"]
    detail = note["log"][0]["detail"]
    assert "HTTP 302" in detail and "redirects are not followed" in detail
    assert f"127.0.0.1:{elsewhere.port}/stolen" in detail and "x=1" not in detail
    assert len(hook.requests) == 1 and elsewhere.requests == []


def test_a_new_webhook_url_does_not_keep_the_stored_secret(make_service, recorders):
    first, second = recorders(), recorders()
    service = make_service()
    client = Client(ts.create_app(service))
    job = {"id": "w", "command": "false", "trigger": {"type": "manual"},
           "notify": [{"webhook": first.url(), "secret": HOOK_SECRET,
                       "headers": {"Authorization": HEADER_VALUE, "X-Plain": "plain-value"}}]}
    assert client.post("/api/jobs", job).status == 201
    shown = client.get("/api/jobs/w").json
    assert shown["notify"][0]["secret"] == "(hidden)"
    moved = {k: shown[k] for k in ("id", "command", "trigger")}
    moved["notify"] = [{**shown["notify"][0], "webhook": second.url()}]
    response = client.put("/api/jobs/w", moved)
    assert response.status == 422, response
    error = response.json["error"]
    assert "notify.0.secret" in error["message"] and "URL changed" in error["message"]
    assert {d["field"] for d in error["details"]} == {
        "notify.0.secret", "notify.0.headers.Authorization", "notify.0.headers.X-Plain"}
    # Sent back unchanged (the URL as shown), the secrets stay; a new URL with new secrets is
    # taken as given.
    same = {**moved, "notify": [shown["notify"][0]]}
    assert client.put("/api/jobs/w", same).status == 200
    kept = service.book.get("w").definition.notify[0]
    assert kept.secret == HOOK_SECRET and kept.headers["Authorization"] == HEADER_VALUE
    fresh = {**moved, "notify": [{"webhook": second.url(), "secret": "another-secret-42"}]}
    assert client.put("/api/jobs/w", fresh).status == 200
    assert service.book.get("w").definition.notify[0].secret == "another-secret-42"


class Trickler:
    """A web server that answers one byte at a time, ``every`` seconds apart, and never ends;
    it notes when each client hung up."""

    def __init__(self, every=1.0):
        self.every, self.opened, self.closed = every, 0, 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.opened += 1
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn):
        with conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n" * 100:
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    break
                if self.stop.wait(self.every):
                    break
        self.closed += 1

    def url(self):
        return f"http://127.0.0.1:{self.port}/slow"

    def close(self):
        self.stop.set()
        self.sock.close()


def test_a_trickling_webhook_neither_holds_others_nor_outlasts_its_deadline(
        make_service, recorders, monkeypatch):
    monkeypatch.setattr(ts_notify, "NOTIFY_TIMEOUT", 5)   # room for a loaded machine
    slow, fast = Trickler(every=0.5), recorders()
    try:
        service = make_service(notify_delays=(60,))
        service.add_job({"id": "slow", "command": "false", "trigger": {"type": "manual"},
                         "notify": [{"webhook": slow.url()}]})
        service.add_job({"id": "fast", "command": "false", "trigger": {"type": "manual"},
                         "notify": [{"webhook": fast.url()}]})
        slow_run = run_to_end(service, "slow")
        wait_for(lambda: slow.opened, 20, message="the slow target to be called")
        fast_run = run_to_end(service, "fast")
        wait_for(lambda: fast.requests, 20, message="the fast target's notice")
        # The fast one got its notice while the slow one was still being sent to.
        assert slow.closed == 0 and service.run(slow_run["id"])["notifications"][0][
            "attempts"] == 0
        assert sent_notes(service, fast_run["id"])[0]["status"] == "sent"
        note = wait_for(lambda: (n := service.run(slow_run["id"])["notifications"][0])[
            "attempts"] and n, 30, 0.1, "the slow delivery to end")
        assert "no complete answer within 5s" in note["log"][0]["detail"]
        # cut at the deadline, although a byte came every half second (the server sees it at its
        # next byte)
        wait_for(lambda: slow.closed == 1, 10, message="the slow connection to be cut")
    finally:
        slow.close()


# -- guessing the token ----------------------------------------------------------------------

def api_get(base, token=None, forwarded=None):
    """GET /api/jobs on the real server; (status, headers)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if forwarded:
        headers["X-Forwarded-For"] = forwarded
    request = urllib.request.Request(base + "/api/jobs", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


def test_wrong_tokens_are_limited_per_client_and_the_right_one_always_passes(make_service):
    service = make_service(token=TOKEN, trusted_proxies=("127.0.0.1",))
    server = ts.serve_in_thread(ts.create_app(service), "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        guesser, user = "203.0.113.7", "198.51.100.1, 203.0.113.8"
        for _ in range(ts_guard.TOKEN_FAILURES):
            assert api_get(base, "guess-" + "x" * 20, guesser)[0] == 401
        status, headers = api_get(base, "guess-" + "y" * 20, guesser)
        assert status == 429 and int(headers["Retry-After"]) > 0
        assert api_get(base, TOKEN, guesser)[0] == 200   # the right token is never refused
        # Another client behind the same proxy has a limit of its own (the proxy's nearest
        # hop counts; what the client wrote before it does not).
        assert api_get(base, "guess-" + "z" * 20, user)[0] == 401
        assert api_get(base, TOKEN, user)[0] == 200
        assert api_get(base)[0] == 401   # no token at all is no guess
    finally:
        server.shutdown()
        server.server_close()


def test_forwarded_for_is_believed_only_from_trusted_proxies(make_service):
    client = Client(ts.create_app(make_service(token=TOKEN)), token="wrong-" + "w" * 20)
    statuses = [client.get("/api/jobs", headers={"X-Forwarded-For": f"192.0.2.{i}"}).status
                for i in range(ts_guard.TOKEN_FAILURES + 1)]
    assert statuses == [401] * ts_guard.TOKEN_FAILURES + [429]   # all one client: the peer
    assert ts_guard.client_address({"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR":
                              "6.6.6.6, 192.0.2.9, 10.0.0.3"},
                             ts_guard.trusted_networks(["10.0.0.0/8"])) == "192.0.2.9"
    with pytest.raises(ts.SchedulerError, match="not an IP address or network"):
        ts_guard.trusted_networks(["proxy.example.com"])


@pytest.mark.parametrize("weak", ["", " ", "short-token", " padded-token-1234567 "])
def test_a_weak_token_is_refused_with_a_recipe(make_config, weak):
    with pytest.raises(ts.SchedulerError, match="secrets.token_urlsafe") as error:
        ts.SchedulerService(make_config(token=weak))
    assert "token" in str(error.value)


@pytest.mark.slow
def test_the_cli_refuses_a_blank_token_before_binding_every_address(tmp_path):
    (tmp_path / "jobs.yaml").write_text("[]\n")
    result = subprocess.run(
        [sys.executable, "-m", "task_scheduler", "--host", "0.0.0.0", "--port", "0",
         "--config", str(tmp_path / "jobs.yaml"), "--db", f"sqlite:///{tmp_path / 'ts.db'}"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env=child_env(TS_API_TOKEN=" "))
    assert result.returncode == 2 and "secrets.token_urlsafe(32)" in result.stderr


def test_gui_login_limits_each_client_behind_a_trusted_proxy(make_service):
    from test_security import Browser
    app = ts.create_app(make_service(token=TOKEN, trusted_proxies=("127.0.0.1",)))
    guesser, user = Browser(app), Browser(app)

    def login(browser, token, client):
        csrf = browser.csrf("/login")
        return browser.request("POST", "/login", form={"token": token, "csrf_token": csrf},
                               headers={"X-Forwarded-For": client})[0]
    assert [login(guesser, "guess", "203.0.113.7") for _ in range(6)] == [401] * 5 + [429]
    # Another user behind the same proxy is not locked out by the guesser ...
    assert login(user, "typo", "203.0.113.8") == 401
    assert login(user, TOKEN, "203.0.113.8") == 303
    # ... and the guesser's address still logs in with the right token.
    assert login(guesser, TOKEN, "203.0.113.7") == 303
