"""``task-scheduler user ...`` and ``token ...``: people and their API tokens, written straight
into the database (``--db``/TS_DATABASE_URL), as an admin tool on the server. It works with the
service stopped, which is how the first admin is made; the nodes see the change at their next
request (nothing is cached longer than half a second). The rules are access.py's."""

from __future__ import annotations

import argparse
import getpass
import json
import sys

from .access import Access
from .audit import AuditLog, acting
from .client import _local, _table
from .config import Config
from .errors import SchedulerError
from .models import Actor
from .output import service_secrets
from .store import Store
from .store.schema import create_engine, migrate, new_run_id

DB_HELP = ("the database (TS_DATABASE_URL; default sqlite:///task_scheduler.sqlite): these "
           "commands write it directly, the service may be running or not")


def add_commands(sub) -> None:
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument("--db", help=DB_HELP)
    db.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    user = sub.add_parser("user", help="add, list, change or delete users (in the database)")
    users = user.add_subparsers(dest="action", required=True)
    add = users.add_parser("add", parents=[db], help="add a user; the password is asked twice")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=("viewer", "operator", "admin"))
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from the first line of stdin")
    add.add_argument("--no-password", action="store_true",
                     help="no password: the user signs in by API token or SSO only")
    users.add_parser("list", parents=[db], help="the users, their roles and state")
    role = users.add_parser("set-role", parents=[db], help="change a user's role")
    role.add_argument("name")
    role.add_argument("role", choices=("viewer", "operator", "admin"))
    for action, text in (("disable", "refuse a user's password, sessions and tokens"),
                         ("enable", "let a disabled user in again"),
                         ("set-password", "change a user's password"),
                         ("del", "delete a user with their tokens and sessions")):
        parser = users.add_parser(action, parents=[db], help=text)
        parser.add_argument("name")
        if action == "set-password":
            parser.add_argument("--password-stdin", action="store_true")
    token = sub.add_parser("token", help="create, list or revoke API tokens (in the database)")
    tokens = token.add_subparsers(dest="action", required=True)
    create = tokens.add_parser("create", parents=[db], help="create a token; printed once")
    create.add_argument("--user", required=True)
    create.add_argument("--name", required=True)
    create.add_argument("--expires", help="90d, 12h, ... (default: never)")
    listing = tokens.add_parser("list", parents=[db], help="tokens (never their secrets)")
    listing.add_argument("--user")
    revoke = tokens.add_parser("revoke", parents=[db], help="revoke a token at once")
    revoke.add_argument("--user", required=True)
    revoke.add_argument("--name", required=True)


def run(args: argparse.Namespace) -> int:
    try:
        access = _access(args.db)
        # Recorded in the audit log as the OS user who ran the command: there is no login.
        with acting(Actor(f"cli:{_os_user()}", "cli", "admin")):
            return (_user if args.command == "user" else _token)(access, args)
    except SchedulerError as exc:
        print(f"task-scheduler: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, EOFError):
        print("task-scheduler: cancelled", file=sys.stderr)
        return 2


def _access(url) -> Access:
    config = Config.from_env(database_url=url)
    engine = create_engine(config.database_url, config.busy_timeout)
    migrate(engine)
    store = Store(engine, "cli")
    return Access(store, config, AuditLog(store, new_run_id, service_secrets(config)))


def _user(access: Access, args) -> int:
    if args.action == "list":
        users = access.list_users()
        return _print(args, users, _table(("NAME", "ROLE", "STATE", "CREATED"), [
            (u["name"], u["role"], "disabled" if u["disabled"] else "active",
             _local(u["created_at"])) for u in users], "no users"))
    if args.action == "add":
        password = None if args.no_password else _password(args.password_stdin)
        done = access.add_user(args.name, args.role, password)
    elif args.action == "set-role":
        done = access.update_user(args.name, role=args.role)
    elif args.action in ("disable", "enable"):
        done = access.update_user(args.name, disabled=args.action == "disable")
    elif args.action == "set-password":
        done = access.update_user(args.name, password=_password(args.password_stdin))
    else:
        access.delete_user(args.name)
        return _print(args, {"deleted": args.name}, f"user {args.name} deleted")
    state = "disabled" if done["disabled"] else "active"
    return _print(args, done, f"user {done['name']}: {done['role']}, {state}")


def _token(access: Access, args) -> int:
    if args.action == "create":
        made = access.create_token(args.user, args.name, args.expires)
        return _print(args, made, f"{made['token']}\n(token {made['name']} of {made['user_name']}"
                                  f"; shown this once: only its hash is kept)")
    if args.action == "revoke":
        access.revoke_named(args.user, args.name)
        return _print(args, {"revoked": args.name}, f"token {args.name} of {args.user} revoked")
    tokens = access.list_tokens(args.user)
    return _print(args, tokens, _table(("USER", "NAME", "CREATED", "EXPIRES", "LAST USED",
                                        "REVOKED"), [
        (t["user_name"], t["name"], _local(t["created_at"]), _local(t["expires_at"]),
         _local(t["last_used_at"]), _local(t["revoked_at"])) for t in tokens], "no tokens"))


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):   # no login name, no passwd entry (a bare container)
        return "unknown"


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise SchedulerError("the two passwords differ; nothing was changed")
    return first


def _print(args, data, text: str) -> int:
    print(json.dumps(data, ensure_ascii=False, indent=2) if args.json else text)
    return 0
