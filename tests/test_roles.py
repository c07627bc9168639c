"""The role matrix (issue 24), generated from API_ROUTES and the GUI's routes: for every route
and for no credentials, a viewer, an operator, an admin and the legacy token, the status it
gets; a 403 names the role needed. A route with no declared role fails here, so a new route
cannot be forgotten. Also: raw run parameters and command jobs are admin-only, the single
sign-on header counts only from a trusted proxy, and a revoke or a disable made on one
PostgreSQL node is refused on another within a second. The audit log: every write a role may
make leaves a row naming its actor, and no password, token or hash is in it."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

import task_scheduler as ts
import task_scheduler.cli as ts_cli
import task_scheduler.http.app as ts_app
import task_scheduler_web as web
from task_scheduler.access import RANK, Access
from task_scheduler.store.schema import ts_api_tokens, ts_audit, ts_users
from task_scheduler_web import access as web_access
from conftest import child_env, final_runs, wait_for
from test_security import Browser

TOKEN = "legacy-token-0123456789"
PASSWORD = "correct horse battery"
PEOPLE = ("viewer", "operator", "admin")
WHO = ("none", *PEOPLE, "legacy")
API = [(m, p) for m, p, _ in ts_app.API_ROUTES]
GUI = [(m, p) for m, p, _ in web.GUI_ROUTES + web_access.ACCESS_ROUTES]
FILL = {"job_id": "j", "user_name": "nobody", "token_id": "0000000000000000",
        "name": "nocalendar", "stream:re:stdout|stderr": "stdout",
        "action:re:run|pause|resume": "run"}


def test_every_route_declares_its_role():
    assert not [r for r in API if r not in ts_app.API_ROLES], "give these a role in API_ROLES"
    assert not [r for r in GUI if r not in web_access.GUI_ROLES], "give these a role in GUI_ROLES"
    roles = set(ts_app.API_ROLES.values()) | set(web_access.GUI_ROLES.values())
    assert roles <= {"open", *PEOPLE}


@pytest.fixture
def world(make_service, jobs_file):
    jobs_file.write_text("- {id: j, command: 'true', trigger: {type: interval, hours: 1}}\n")
    service = make_service(token=TOKEN)
    service.run_now("j")
    run = final_runs(service, "j")[0]
    access, tokens = Access(service.store, service.config), {}
    for role in PEOPLE:
        access.add_user(f"{role}1", role, PASSWORD)
        tokens[role] = access.create_token(f"{role}1", "t")["token"]
    tokens["legacy"] = TOKEN
    return ts.create_app(service), tokens, run["id"], access


def call(app, method, path, token=None, body=None, headers=None, remote="127.0.0.1"):
    """One API request in-process; (status, parsed JSON or text)."""
    headers = {"Host": "127.0.0.1:8000", **(headers or {})}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else b""
    path, _, query = path.partition("?")
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
               "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "wsgi.url_scheme": "http",
               "wsgi.input": io.BytesIO(data), "wsgi.errors": sys.stderr,
               "CONTENT_LENGTH": str(len(data)), "REMOTE_ADDR": remote}
    if body is not None:
        environ["CONTENT_TYPE"] = "application/json"
    environ.update({"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()})
    answer = {}
    text = b"".join(app(environ, lambda s, h, e=None: answer.update(status=int(s[:3]))))
    try:
        return answer["status"], json.loads(text)
    except ValueError:
        return answer["status"], text.decode()


def fill(path: str, run_id: str) -> str:
    return re.sub(r"<([^>]+)>", lambda m: run_id if m.group(1) == "run_id" else FILL[m.group(1)],
                  path)


def expect(who: str, needed: str, status: int, text: str, what: str) -> None:
    if needed == "open":   # a wrong login is a 401, never a 403
        assert status != 403, (what, who, status, text)
    elif who == "none":
        assert status in (401, 303), (what, who, status, text)
    elif who == "legacy" or RANK[who] >= RANK[needed]:
        assert status not in (401, 403), (what, who, status, text[:300])
    else:
        assert status == 403, (what, who, status, text[:300])
        assert f"needs the {needed} role" in text and f"you are {who}" in text, (what, text)


@pytest.mark.parametrize("method,path", API, ids=[f"{m} {p}" for m, p in API])
def test_api_role_matrix(world, method, path):
    app, tokens, run_id, _ = world
    needed = ts_app.API_ROLES[method, path]
    url = fill(path, run_id) + ("?after=0" if path == "/api/events" else "")
    for who in WHO:
        body = {} if method in ("POST", "PUT") else None
        status, answer = call(app, method, url, tokens.get(who), body)
        text = json.dumps(answer) if isinstance(answer, dict) else answer
        expect(who, needed, status, text, f"{method} {path}")
        if status == 403:
            assert answer["error"]["code"] == "forbidden"


def gui_browser(app, who: str) -> Browser:
    browser = Browser(app)
    if who != "none":
        csrf = browser.csrf("/login")
        form = {"token": TOKEN} if who == "legacy" else {"name": f"{who}1", "token": PASSWORD}
        status, _, _ = browser.request("POST", "/login", form={**form, "csrf_token": csrf})
        assert status == 303
    return browser


@pytest.mark.parametrize("method,path", GUI, ids=[f"{m} {p}" for m, p in GUI])
def test_gui_role_matrix(world, method, path):
    app, _, run_id, _ = world
    needed = web_access.GUI_ROLES[method, path]
    for who in WHO:
        browser = gui_browser(app, who)
        form = None
        if method == "POST":
            form = {"csrf_token": browser.csrf("/login" if who == "none" else "/account")}
        status, headers, page = browser.request(method, fill(path, run_id), form=form)
        if status == 303 and who == "none" and needed != "open":
            assert headers["Location"].split("?")[0].endswith("/login"), (path, headers)
        elif status == 303 and path not in ("/login", "/logout"):   # those go there anyway
            assert "/login" not in headers["Location"].split("?")[0], (path, who, headers)
        expect(who, needed, status, page, f"GUI {method} {path}")


def test_a_viewer_gets_403_on_every_write_but_their_own_tokens(world):
    app, tokens, run_id, _ = world
    writes = [(m, p) for m, p in API if m != "GET" and p not in ("/api/tokens",
                                                                 "/api/tokens/<token_id>")]
    assert len(writes) >= 12
    for method, path in writes:
        status, answer = call(app, method, fill(path, run_id), tokens["viewer"], {})
        assert status == 403, (method, path, answer)


def test_an_operator_runs_and_pauses_but_not_raw_env_nor_a_command_job(world):
    app, tokens, _, _ = world
    op = tokens["operator"]
    assert call(app, "POST", "/api/jobs/j/run", tokens["admin"],
                {"env": {"GREETING": "hi"}})[0] == 202
    wait_for(lambda: call(app, "POST", "/api/jobs/j/run", op, {})[0] == 202, 10, 0.05,
             "the admin's run to end")
    assert call(app, "POST", "/api/jobs/j/pause", op)[0] == 200
    for raw in ({"env": {"LD_PRELOAD": "/tmp/x.so"}}, {"args": ["--evil"]}):
        status, answer = call(app, "POST", "/api/jobs/j/run", op, raw)
        assert status == 403 and "needs the admin role" in answer["error"]["message"]
    job = {"id": "rce", "command": "touch /tmp/pwned", "trigger": {"type": "manual"}}
    status, answer = call(app, "POST", "/api/jobs", op, job)
    assert status == 403 and "needs the admin role; you are operator" in \
        answer["error"]["message"]


def test_whoami_tokens_and_users_through_the_api(world):
    app, tokens, _, access = world
    status, me = call(app, "GET", "/api/whoami", tokens["operator"])
    assert status == 200 and me["name"] == "operator1" and me["role"] == "operator" \
        and me["token_name"] == "t"
    assert call(app, "GET", "/api/whoami", TOKEN)[1]["kind"] == "legacy"
    status, made = call(app, "POST", "/api/tokens", tokens["viewer"], {"name": "ci",
                                                                        "expires": "90d"})
    assert status == 201 and made["token"].startswith("tsu_")
    assert call(app, "GET", "/api/whoami", made["token"])[1]["name"] == "viewer1"
    listed = call(app, "GET", "/api/tokens", tokens["viewer"])[1]["tokens"]
    assert {t["user_name"] for t in listed} == {"viewer1"} and "token" not in listed[0]
    assert call(app, "GET", "/api/tokens?user=admin1", tokens["viewer"])[0] == 403
    theirs = call(app, "GET", "/api/tokens?user=admin1", tokens["admin"])[1]["tokens"][0]
    assert call(app, "DELETE", f"/api/tokens/{theirs['id']}", tokens["viewer"])[0] == 403
    assert call(app, "DELETE", f"/api/tokens/{made['id']}", tokens["viewer"])[0] == 204
    assert call(app, "GET", "/api/whoami", made["token"])[0] == 401
    assert call(app, "POST", "/api/users", tokens["admin"],
                {"name": "eve@example.com", "role": "operator", "password": "x" * 8})[0] == 201
    assert call(app, "POST", "/api/users", tokens["admin"],
                {"name": "eve@example.com", "role": "admin"})[0] == 409
    assert call(app, "POST", "/api/users", tokens["admin"],
                {"name": "bad name", "role": "admin"})[0] == 422
    assert call(app, "PUT", "/api/users/operator1", tokens["admin"], {"role": "viewer"})[0] == 200
    assert call(app, "POST", "/api/jobs/j/pause", tokens["operator"])[0] == 403   # at once
    assert call(app, "PUT", "/api/users/viewer1", tokens["admin"], {"disabled": True})[0] == 200
    assert call(app, "GET", "/api/jobs", tokens["viewer"])[0] == 401
    users = call(app, "GET", "/api/users", tokens["admin"])[1]["users"]
    assert "password_hash" not in users[0] and len(users) == 4
    assert call(app, "DELETE", "/api/users/admin1", TOKEN)[0] == 204
    assert call(app, "GET", "/api/jobs", tokens["admin"])[0] == 401


def test_without_credentials_configured_everyone_local_is_admin(make_service, jobs_file):
    app = ts.create_app(make_service())
    status, me = call(app, "GET", "/api/whoami")
    assert status == 200 and me["kind"] == "local" and me["role"] == "admin"
    app.config["ts.access"].add_user("first", "admin", PASSWORD)
    # the first user locks the door within USERS_TTL
    wait_for(lambda: call(app, "GET", "/api/jobs")[0] == 401, 2, 0.05, "401 without a token")
    assert call(app, "GET", "/api/health")[0] == 200


def test_sso_header_counts_only_from_a_trusted_proxy(make_service, jobs_file):
    service = make_service(auth_header="X-Forwarded-User", trusted_proxies=("10.0.0.1",))
    app = ts.create_app(service)
    Access(service.store, service.config).add_user("ops", "operator")
    sso = {"X-Forwarded-User": "ops"}
    status, me = call(app, "GET", "/api/whoami", headers=sso, remote="10.0.0.1")
    assert status == 200 and (me["name"], me["kind"], me["role"]) == ("ops", "sso", "operator")
    assert call(app, "GET", "/api/whoami", headers=sso, remote="10.0.0.9")[0] == 401
    assert call(app, "GET", "/api/whoami", headers=sso)[0] == 401   # loopback is no proxy
    stranger = {"X-Forwarded-User": "newcomer"}
    status, me = call(app, "GET", "/api/whoami", headers=stranger, remote="10.0.0.1")
    assert status == 200 and me["role"] == "viewer"
    status, answer = call(app, "POST", "/api/jobs/x/pause", headers=stranger, remote="10.0.0.1")
    assert status == 403 and "needs the operator role; you are viewer" in \
        answer["error"]["message"]


def test_sso_refuses_unknown_users_when_the_default_role_is_none(make_service, jobs_file):
    service = make_service(auth_header="X-Forwarded-User", trusted_proxies=("10.0.0.1",),
                           auth_header_default_role="none")
    app = ts.create_app(service)
    assert call(app, "GET", "/api/whoami", headers={"X-Forwarded-User": "who"},
                remote="10.0.0.1")[0] == 401


def test_the_gui_shows_each_role_what_it_may_do(world):
    app, _, run_id, _ = world
    seen = {}
    for who in ("viewer", "operator", "admin"):
        browser = gui_browser(app, who)
        page = browser.request("GET", "/jobs/j")[2]
        seen[who] = ('data-action="run"' in page, 'data-testid="action-edit"' in page,
                     f'data-role="{who}"' in page and f"{who}1" in page)
        assert ('href="/users"' in browser.request("GET", "/")[2]) == (who == "admin")
    assert seen == {"viewer": (False, False, True), "operator": (True, False, True),
                    "admin": (True, True, True)}


def test_a_password_login_and_a_disabled_user(world):
    app, _, _, access = world
    browser = gui_browser(app, "operator")
    assert browser.request("GET", "/account")[0] == 200
    access.update_user("operator1", disabled=True)
    status, headers, _ = browser.request("GET", "/account")
    assert status == 303 and "/login" in headers["Location"]
    browser = Browser(app)
    csrf = browser.csrf("/login")
    status, _, page = browser.request("POST", "/login", form={
        "name": "operator1", "token": PASSWORD, "csrf_token": csrf})
    assert status == 401 and "not valid" in page


def test_the_cli_makes_the_first_admin_and_a_token(tmp_path):
    db = f"sqlite:///{tmp_path / 'cli.sqlite'}"
    cli = [sys.executable, "-m", "task_scheduler"]

    def run(*args, stdin=""):
        done = subprocess.run([*cli, *args, "--db", db], input=stdin, capture_output=True,
                              text=True, env=child_env(), timeout=60)
        return done.returncode, done.stdout + done.stderr
    assert run("user", "add", "root", "--role", "admin", "--password-stdin",
               stdin=PASSWORD + "\n")[0] == 0
    assert ts_cli._users_exist(db)   # now the service may bind beyond loopback without a token
    assert not ts_cli._users_exist(f"sqlite:///{tmp_path / 'none.sqlite'}")
    assert not (tmp_path / "none.sqlite").exists()
    assert run("user", "add", "root", "--role", "admin", "--password-stdin",
               stdin=PASSWORD + "\n")[0] == 2
    code, out = run("token", "create", "--user", "root", "--name", "ci", "--expires", "90d")
    secret = out.split()[0]
    assert code == 0 and secret.startswith("tsu_")
    code, out = run("token", "list")
    assert code == 0 and "root" in out and secret not in out
    assert run("user", "set-role", "root", "viewer")[0] == 0
    code, out = run("user", "list", "--json")
    assert json.loads(out)[0]["role"] == "viewer"
    assert run("user", "set-password", "root", "--password-stdin", stdin=NEW_PASSWORD)[0] == 0
    assert run("token", "revoke", "--user", "root", "--name", "ci")[0] == 0
    assert run("token", "revoke", "--user", "root", "--name", "ci")[0] == 2
    assert run("user", "enable", "root")[0] == 0   # enabled already: nothing to record
    assert run("user", "disable", "root")[0] == 0
    assert run("user", "del", "root")[0] == 0
    assert "no users" in run("user", "list")[1]
    rows = table_text(sa.create_engine(db), ts_audit)
    assert [r[6] for r in sorted(json.loads(rows))] == [
        "user.add", "token.create", "user.set_role", "user.set_password", "token.revoke",
        "user.disable", "user.delete"]   # the second add and revoke failed: no row
    assert {(r[3], r[2].startswith("cli:")) for r in json.loads(rows)} == {("cli", True)}
    assert not [s for s in (PASSWORD, NEW_PASSWORD, secret) if s in rows]


def table_text(engine, table) -> str:
    """Every row of a table as text (JSON lists of str), to search for a value anywhere."""
    with engine.connect() as conn:
        return json.dumps([list(map(str, row)) for row in conn.execute(sa.select(table))])


def test_no_password_nor_token_value_is_in_the_audit_log(world):
    app, tokens, _, access = world
    admin = tokens["admin"]
    assert call(app, "POST", "/api/users", admin, {"name": "eve", "role": "operator",
                                                   "password": NEW_PASSWORD})[0] == 201
    assert call(app, "PUT", "/api/users/viewer1", admin, {"password": NEW_PASSWORD + "!"}
                )[0] == 200
    status, made = call(app, "POST", "/api/tokens", tokens["viewer"], {"name": "ci"})
    assert status == 201
    assert call(app, "DELETE", f"/api/tokens/{made['id']}", admin)[0] == 204
    browser = gui_browser(app, "admin")
    status, _, page = browser.request("POST", "/account/tokens", form={
        "name": "gui", "csrf_token": browser.csrf("/account")})
    shown = re.findall(r"tsu_[A-Za-z0-9_-]+", page)
    assert status == 200 and shown
    for path, form in (("/users", {"name": "gus", "role": "viewer", "password": NEW_PASSWORD}),
                       ("/users/gus", {"action": "disable"})):
        assert browser.request("POST", path, form={**form, "csrf_token": browser.csrf(
            "/users")})[0] == 303
    engine = access.users.db.engine
    text = table_text(engine, ts_audit)
    hashes = table_text(engine, ts_users) + table_text(engine, ts_api_tokens)
    secrets = [PASSWORD, NEW_PASSWORD, made["token"], *shown, *tokens.values(),
               *re.findall(r"scrypt\$[^\"]+|\b[0-9a-f]{64}\b", hashes)]
    assert len(secrets) > 8 and not [s for s in secrets if s in text]
    actions = {(r["actor"], r["action"]) for r in call(app, "GET", "/api/audit", TOKEN)[1][
        "entries"]}
    assert {("admin1", "user.add"), ("admin1", "user.set_password"),
            ("viewer1", "token.create"), ("admin1", "token.revoke"),
            ("admin1", "token.create"), ("admin1", "user.disable")} <= actions
    assert ("admin1", "user.add") in {(r["actor"], r["action"]) for r in call(
        app, "GET", "/api/audit?object=user:gus", TOKEN)[1]["entries"]}   # by the GUI


@pytest.mark.slow
@pytest.mark.postgres
def test_a_revoke_and_a_disable_hold_on_another_node_within_a_second(tmp_path, postgres_url):
    from test_cluster import Node
    from conftest import write_jobs
    write_jobs(tmp_path / "jobs.yaml", "[]\n")
    cli = [sys.executable, "-m", "task_scheduler"]
    for name, role in (("boss", "admin"), ("bob", "operator")):
        subprocess.run([*cli, "user", "add", name, "--role", role, "--no-password", "--db",
                        postgres_url], check=True, env=child_env(), timeout=60)
    tokens = {}
    for name, token in (("boss", "a"), ("bob", "b1"), ("bob", "b2")):
        out = subprocess.run([*cli, "token", "create", "--user", name, "--name", token, "--db",
                              postgres_url], check=True, env=child_env(), timeout=60,
                             capture_output=True, text=True).stdout
        tokens[token] = out.split()[0]
    a, b = Node(tmp_path, postgres_url, "node-a"), Node(tmp_path, postgres_url, "node-b")
    try:
        for node in (a, b):
            assert node_status(node, "/api/whoami", tokens["b1"]) == 200
        token_id = next(t["id"] for t in node_json(a, "/api/tokens?user=bob", tokens["a"])
                        ["tokens"] if t["name"] == "b1")
        assert node_status(a, f"/api/tokens/{token_id}", tokens["a"], "DELETE") == 204
        refused_within(b, tokens["b1"], 1.0)
        assert node_status(b, "/api/whoami", tokens["b2"]) == 200
        assert node_status(a, "/api/users/bob", tokens["a"], "PUT", {"disabled": True}) == 200
        refused_within(b, tokens["b2"], 1.0)
    finally:
        a.stop()
        b.stop()


def refused_within(node, token: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while node_status(node, "/api/whoami", token) != 401:
        assert time.monotonic() < deadline, f"still accepted on {node.id} after {seconds}s"


def node_status(node, path, token, method="GET", body=None) -> int:
    import urllib.error
    import urllib.request
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{node.port}{path}", data=data,
                                     method=method, headers={
                                         "Authorization": f"Bearer {token}",
                                         **({"Content-Type": "application/json"} if data
                                            else {})})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def node_json(node, path, token):
    import urllib.request
    request = urllib.request.Request(f"http://127.0.0.1:{node.port}{path}",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def test_viewers_and_operators_never_see_env_values_or_notify_secrets(world):
    app, tokens, _, _ = world
    job = {"id": "s", "command": "true", "trigger": {"type": "manual"},
           "env": {"PASSWORD": "hunter2"},
           "notify": [{"on": ["failed"], "webhook": "https://example.com/h", "secret": "sec9"}]}
    assert call(app, "POST", "/api/jobs", tokens["admin"], job)[0] == 201
    status, answer = call(app, "POST", "/api/jobs/s/run", tokens["admin"],
                          {"env": {"API_KEY": "key9"}})
    run_id = answer["run"]["id"]
    # the list with ?full=1: a list leaves each definition (and so its env) out otherwise
    paths = ("/api/jobs/s", "/api/jobs?full=1", "/api/jobs/s?format=yaml", f"/api/runs/{run_id}")
    for who in ("viewer", "operator", "admin"):
        for path in paths:
            status, answer = call(app, "GET", path, tokens[who])
            text = json.dumps(answer) if isinstance(answer, dict) else answer
            assert status == 200 and "sec9" not in text
            assert ("hunter2" in text or "key9" in text) == (who == "admin"), (who, path)
        browser = gui_browser(app, who)
        for page in ("/jobs/s", "/jobs/s/yaml", f"/runs/{run_id}"):
            text = browser.request("GET", page)[2]
            assert ("hunter2" in text or "key9" in text) == (who == "admin"), (who, page)
            assert "sec9" not in text


# The audit log (issue 24): every write the matrix allows, done so that it succeeds and
# changes something, leaves a row naming its actor; the bodies and the state made before each
# call are these (a route absent here is called as the matrix calls it).
NEW_PASSWORD = "another horse battery"
WRITES = [r for r in API if r[0] != "GET"]
def job_body(job_id: str, hours: int = 1) -> dict:
    return {"id": job_id, "command": "true", "trigger": {"type": "interval", "hours": hours}}


AUDIT_BODIES = {("POST", "/api/jobs"): lambda who: job_body(f"new-{who}"),
                ("PUT", "/api/jobs/<job_id>"): lambda who: job_body(f"api-{who}", 2),
                ("POST", "/api/users"): lambda who: {"name": f"new-{who}", "role": "viewer",
                                                     "password": NEW_PASSWORD},
                ("PUT", "/api/users/<user_name>"): lambda who: {"password": NEW_PASSWORD},
                ("POST", "/api/tokens"): lambda who: {"name": f"audit-{who}"}}
# Writes whose success changes nothing the log keeps (each explained): none may be added
# without saying why.
UNRECORDED = {
    # A heartbeat from the job itself: its record is the run it ends (started_by null), as
    # for a fire; docs/security.md lists what the log records.
    ("POST", "/api/jobs/<job_id>/ping"),
}


def actor_name(who: str) -> str:
    return "token" if who == "legacy" else f"{who}1"


def audit_rows(app, who: str) -> list:
    """The rows of who's actions. A reload acts as jobs.yaml (its rows are the file's changes)
    and names who asked for it in ``detail.asked_by``."""
    name, rows = actor_name(who), []
    for query in (f"actor={name}", "action=config.reload"):
        status, page = call(app, "GET", f"/api/audit?{query}&limit=500", TOKEN)
        assert status == 200, page
        rows += [r for r in page["entries"] if name in (r["actor"], r["detail"].get("asked_by"))]
    return rows


def prepare(world, method: str, path: str, who: str) -> str:
    """The state a call needs to change something; its URL."""
    app, _, run_id, access = world
    fills = dict(FILL)
    if path in ("/api/jobs/<job_id>/pause", "/api/jobs/<job_id>/resume"):   # the other state
        other = "resume" if path.endswith("pause") else "pause"
        assert call(app, "POST", f"/api/jobs/j/{other}", TOKEN)[0] == 200
    if path == "/api/jobs/<job_id>" and method != "POST":   # the API's own job: editable
        fills["job_id"] = f"api-{who}"
        assert call(app, "POST", "/api/jobs", TOKEN, job_body(fills["job_id"]))[0] == 201
    if path.startswith("/api/jobs/<job_id>/ping"):   # a heartbeat job: made once
        fills["job_id"] = "beat"
        call(app, "POST", "/api/jobs", TOKEN, {"id": "beat",
                                               "trigger": {"type": "heartbeat", "every": "1h"}})
    if path == "/api/users/<user_name>":
        fills["user_name"] = f"target-{who}"
        access.add_user(fills["user_name"], "viewer", PASSWORD)
    if path == "/api/tokens/<token_id>":
        owner = "admin1" if who == "legacy" else actor_name(who)
        fills["token_id"] = access.create_token(owner, f"victim-{who}")["id"]
    return re.sub(r"<([^>]+)>", lambda m: run_id if m.group(1) == "run_id"
                  else fills[m.group(1)], path)


@pytest.mark.parametrize("method,path", WRITES, ids=[f"{m} {p}" for m, p in WRITES])
def test_every_allowed_write_is_in_the_audit_log_with_its_actor(world, method, path):
    assert UNRECORDED <= set(WRITES)   # no stale entry
    app = world[0]
    body = AUDIT_BODIES.get((method, path), lambda who: {} if method in ("POST", "PUT")
                            else None)
    for who in (*PEOPLE, "legacy"):
        if who != "legacy" and RANK[who] < RANK[ts_app.API_ROLES[method, path]]:
            continue
        url, before = prepare(world, method, path, who), len(audit_rows(app, who))
        status, answer = call(app, method, url, world[1][who], body(who))
        if 200 <= status < 300 and (method, path) not in UNRECORDED:
            assert len(audit_rows(app, who)) > before, (method, path, who, status, answer)
