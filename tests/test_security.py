"""The default install cannot be driven by a web page the user visits (Host, Origin, content
type), the login redirects only within the site, GUI sessions end for real at logout (on every
node, across restarts), CSRF tokens are bound to the session, and guessing the token is slow."""

from __future__ import annotations

import io
import re
import sys
from http.cookies import SimpleCookie
from urllib.parse import urlencode, urlsplit

import pytest

import task_scheduler as ts

TOKEN = "s3cret-token-for-tests"


class Browser:
    """Calls the WSGI app like a browser would: keeps cookies, sends Host and Origin."""

    def __init__(self, app, host="127.0.0.1:8000"):
        self.app, self.host, self.cookies = app, host, {}

    def request(self, method, path, form=None, body=b"", headers=None):
        headers = {"Host": self.host, **(headers or {})}
        if form is not None:
            body = urlencode(form).encode()
            headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        path, _, query = path.partition("?")
        environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
                   "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000",
                   "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.input": io.BytesIO(body),
                   "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
                   "CONTENT_LENGTH": str(len(body)), "REMOTE_ADDR": "127.0.0.1",
                   "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False}
        if "Content-Type" in headers:
            environ["CONTENT_TYPE"] = headers.pop("Content-Type")
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        for name, value in headers.items():
            environ["HTTP_" + name.upper().replace("-", "_")] = value
        answer = {}

        def start_response(status, header_list, exc_info=None):
            answer["status"], answer["headers"] = int(status.split()[0]), header_list
        data = b"".join(self.app(environ, start_response))
        for name, value in answer["headers"]:
            if name.lower() == "set-cookie":
                for key, morsel in SimpleCookie(value).items():
                    if morsel["max-age"] == "-1" or morsel.value in ("", '""'):
                        self.cookies.pop(key, None)
                    else:
                        self.cookies[key] = morsel.value
        return answer["status"], dict(answer["headers"]), data.decode()

    def csrf(self, path="/jobs"):
        status, _, page = self.request("GET", path)
        return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


@pytest.fixture
def app(make_service, jobs_file):
    jobs_file.write_text("- {id: j, command: 'true', trigger: {type: interval, hours: 1}}\n")
    return ts.create_app(make_service())


@pytest.fixture
def token_app(make_service, jobs_file):
    jobs_file.write_text("- {id: j, command: 'true', trigger: {type: interval, hours: 1}}\n")
    service = make_service(token=TOKEN)
    return ts.create_app(service), service


# 1. Drive-by control of the default install

@pytest.mark.parametrize("headers", [
    {"Content-Type": "application/x-www-form-urlencoded", "Origin": "http://evil.example"},
    {"Content-Type": "text/plain", "Origin": "http://evil.example"},
    {"Origin": "http://evil.example"},
    {"Origin": "null"},
    {"Content-Type": "application/x-www-form-urlencoded"},
    {"Content-Type": "multipart/form-data; boundary=x"},
])
def test_a_cross_site_post_changes_nothing(app, headers):
    browser = Browser(app)
    status, _, body = browser.request("POST", "/api/jobs/j/pause", body=b"", headers=headers)
    assert status in (403, 415), body
    status, _, body = browser.request("POST", "/api/jobs/j/run", body=b"x=1", headers=headers)
    assert status in (403, 415), body
    assert '"paused": false' in browser.request("GET", "/api/jobs/j")[2]


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:8000",
                                  "127.0.0.1.attacker.example", "localhost.evil"])
def test_dns_rebinding_host_is_refused_everywhere(app, host):
    browser = Browser(app, host=host)
    status, headers, body = browser.request(
        "POST", "/api/jobs", body=b'{"id": "rce", "command": "touch /tmp/pwned", '
                                  b'"trigger": {"type": "interval", "hours": 1}}',
        headers={"Content-Type": "application/json"})
    assert status == 403 and "allowed-hosts" in body
    for path in ("/api/jobs", "/", "/jobs"):
        status, headers, body = browser.request("GET", path)
        assert status == 403, (path, body)
    assert headers["Content-Type"].startswith("text/html")   # the GUI's own error page
    assert Browser(app).request("GET", "/api/jobs/rce")[0] == 404


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost:8000", "[::1]:8000", "localhost",
                                  "app.localhost:8000", "192.168.1.20:8000"])
def test_loopback_names_and_ip_literals_are_answered(app, host):
    assert Browser(app, host=host).request("GET", "/api/health")[0] == 200


def test_allowed_hosts_open_a_name_for_a_reverse_proxy(make_service):
    service = make_service(allowed_hosts=("sched.example.com", ".corp.example"))
    app = ts.create_app(service)
    for host in ("sched.example.com", "a.corp.example:443", "corp.example"):
        assert Browser(app, host=host).request("GET", "/api/status")[0] == 200, host
    assert Browser(app, host="other.example.com").request("GET", "/api/status")[0] == 403
    # the proxy's public origin may post, though the proxy passed another Host
    status, _, _ = Browser(app).request("POST", "/api/reload", headers={
        "Origin": "https://sched.example.com"})
    assert status != 403


def test_config_reads_allowed_hosts_from_env_and_flags():
    config = ts.Config.from_env({"TS_ALLOWED_HOSTS": "a.example,b.example"})
    assert config.allowed_hosts == ("a.example", "b.example")


def test_curl_the_gui_and_same_origin_pages_keep_working(app):
    browser = Browser(app)
    assert browser.request("POST", "/api/jobs/j/pause")[0] == 200            # curl -X POST
    assert browser.request("POST", "/api/jobs/j/resume", headers={
        "Origin": "http://127.0.0.1:8000"})[0] == 200                        # a same-origin page
    status, _, _ = browser.request("POST", "/api/jobs", body=b'{"id": "k", "command": "true", '
                                   b'"trigger": {"type": "interval", "hours": 1}}',
                                   headers={"Content-Type": "application/json"})
    assert status == 201
    csrf = browser.csrf()
    status, headers, _ = browser.request("POST", "/jobs/j/pause", form={
        "csrf_token": csrf, "next": "/jobs"}, headers={"Origin": "http://127.0.0.1:8000"})
    assert status == 303 and headers["Location"].endswith("/jobs")
    status, _, body = browser.request("POST", "/jobs/j/resume", form={"csrf_token": csrf},
                                      headers={"Origin": "http://evil.example"})
    assert status == 403 and "cross-site" in body


# 2. Open redirect after login

@pytest.mark.parametrize("target", ["/\t/evil.com", "/\r\n/evil.com", "/\n/evil.com", "//evil.com",
                                    "/\\evil.com", "\\/evil.com", "https://evil.com",
                                    "javascript:alert(1)", "/%09/evil.com", " /x", "/\x00/x"])
def test_login_redirects_only_within_the_site(token_app, target):
    app, _ = token_app
    browser = Browser(app)
    status, _, page = browser.request("GET", "/login?" + urlencode({"next": target}))
    assert status == 200
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    status, headers, _ = browser.request("POST", "/login", form={
        "token": TOKEN, "csrf_token": csrf, "next": target})
    assert status == 303
    location = urlsplit(headers["Location"])
    assert location.netloc in ("127.0.0.1:8000", "") and location.path.startswith("/")
    assert not location.path.startswith("//") and not re.search(r"[\s\\]", location.path)


def test_login_keeps_a_local_next(token_app):
    app, _ = token_app
    browser = Browser(app)
    csrf = browser.csrf("/login")
    status, headers, _ = browser.request("POST", "/login", form={
        "token": TOKEN, "csrf_token": csrf, "next": "/jobs?state=paused"})
    assert status == 303 and headers["Location"].endswith("/jobs?state=paused")


# 3. Sessions end at logout, CSRF tokens belong to their session, guessing is slow

def log_in(app) -> Browser:
    browser = Browser(app)
    csrf = browser.csrf("/login")
    status, _, _ = browser.request("POST", "/login", form={"token": TOKEN, "csrf_token": csrf})
    assert status == 303 and "ts_session" in browser.cookies
    return browser


def test_a_copied_session_cookie_dies_with_logout(token_app):
    app, _ = token_app
    browser = log_in(app)
    copied = dict(browser.cookies)
    assert browser.request("GET", "/jobs")[0] == 200
    csrf = browser.csrf()
    assert browser.request("POST", "/logout", form={"csrf_token": csrf})[0] == 303
    thief = Browser(app)
    thief.cookies = copied
    status, headers, _ = thief.request("GET", "/jobs")
    assert status == 303 and "/login" in headers["Location"]


@pytest.mark.both_databases
def test_logout_holds_across_restarts_and_other_nodes(make_config, jobs_file):
    config = make_config(token=TOKEN)
    first = ts.SchedulerService(config).start()
    try:
        browser = log_in(ts.create_app(first))
        kept = log_in(ts.create_app(first))
        copied = dict(browser.cookies)
        browser.request("POST", "/logout", form={"csrf_token": browser.csrf()})
    finally:
        first.stop(grace=1)
    second = ts.SchedulerService(config).start()   # a restart, or another node: same store
    try:
        app = ts.create_app(second)
        thief = Browser(app)
        thief.cookies = copied
        assert thief.request("GET", "/jobs")[0] == 303
        kept.app = app
        assert kept.request("GET", "/jobs")[0] == 200   # a live session survives the restart
    finally:
        second.stop(grace=1)


def test_csrf_token_from_the_login_page_is_refused_after_login(token_app):
    app, service = token_app
    browser = Browser(app)
    _, _, page = browser.request("GET", "/login")
    anonymous_csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    browser.request("POST", "/login", form={"token": TOKEN, "csrf_token": anonymous_csrf})
    assert "ts_session" in browser.cookies
    status, _, body = browser.request("POST", "/jobs/j/pause", form={
        "csrf_token": anonymous_csrf})
    assert status == 403
    assert service.job("j")["state"] == "scheduled"
    other = log_in(app)
    status, _, _ = browser.request("POST", "/jobs/j/pause", form={"csrf_token": other.csrf()})
    assert status == 403   # another session's token
    status, _, _ = browser.request("POST", "/jobs/j/pause", form={"csrf_token": browser.csrf()})
    assert status == 303 and service.job("j")["state"] == "paused"


def test_guessing_the_token_is_rate_limited_with_a_clear_message(token_app):
    app, _ = token_app
    browser = Browser(app)
    csrf = browser.csrf("/login")
    for _ in range(5):
        status, _, page = browser.request("POST", "/login", form={"token": "guess",
                                                                  "csrf_token": csrf})
        assert status == 401 and "not valid" in page
    status, headers, page = browser.request("POST", "/login", form={"token": "guess",
                                                                    "csrf_token": csrf})
    assert status == 429 and "Too many" in page and int(headers["Retry-After"]) > 0
    assert "ts_session" not in browser.cookies
    # The right token still passes: behind a proxy, a guesser must not lock everyone out.
    status, _, _ = browser.request("POST", "/login", form={"token": TOKEN, "csrf_token": csrf})
    assert status == 303 and "ts_session" in browser.cookies
