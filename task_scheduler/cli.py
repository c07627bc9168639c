"""The command line: ``task-scheduler run|validate`` and the API client's commands. The
composition root: it builds the Config, the service and the app, and hands the GUI package to
the app (the core never imports it); the client's commands go to client.py."""

from __future__ import annotations

import argparse
import atexit
import logging
import logging.handlers
import os
import queue
import signal
import sys
import threading
from typing import Optional

import sqlalchemy as sa

from . import usercli
from .capture import _capture_routers
from .client import DEFAULT_URL, run_command
from .config import Config, LOOPBACK_HOSTS, __version__
from .errors import InvalidConfig, SchedulerError
from .http.app import create_app, discover_gui
from .http.server import make_server
from .jobsfile import load_jobs_file
from .service import SchedulerService
from .store import Store
from .store.schema import create_engine

log = logging.getLogger("task_scheduler")


def main(argv: Optional[list] = None) -> int:
    """``task-scheduler [run] [...]``, ``task-scheduler validate [PATH]``, ``--version``."""
    parser = _parser()
    args = parser.parse_args(_default_command(sys.argv[1:] if argv is None else argv))
    if args.command == "run":
        _check_run(parser, args)
    if args.command == "validate":
        return _cmd_validate(args.path)
    if args.command in ("user", "token"):
        return usercli.run(args)
    if args.command in CLIENT_COMMANDS or getattr(args, "job", None):
        return run_command(args)
    try:
        config = Config.from_args(args)
        explicit = args.config or os.environ.get("TS_CONFIG")
        if explicit and not os.path.exists(explicit):
            raise SchedulerError(f"config file {explicit} does not exist (--config or "
                                 f"TS_CONFIG); create it (an empty list is []) or leave the "
                                 f"setting out to use ./jobs.yaml")
        _log_off_the_path(config.log_level.upper())
        if args.token:
            log.warning("--token shows in ps to every user of this machine; prefer "
                        "TS_API_TOKEN or --token-file")
        return _cmd_run(config)
    except SchedulerError as exc:
        print(f"task-scheduler: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="task-scheduler", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"task-scheduler {__version__}")
    sub = parser.add_subparsers(dest="command")
    client = _client_flags()
    run = sub.add_parser("run", parents=[client], help="run the scheduler with its API and GUI "
                         "(the default); 'run JOB' asks a running service to run a job",
                         description="Run the scheduler with its API and GUI (the default "
                                     "command).\nFlags win over the environment variables "
                                     "named.\nWith a JOB, ask a running service (--url) to run "
                                     "that job now instead.",
                         epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("job", nargs="?", help="a job to run now on a running service (the "
                                            "client); without it, run the service")
    run.add_argument("--param", action="append", metavar="K=V",
                     help="with JOB: this run's environment variable (command job) or keyword "
                          "argument (python job, the value read as JSON when it parses); again "
                          "for more")
    run.add_argument("--wait", action="store_true",
                     help="with JOB: wait for the run to end; exit 0 if it succeeded, else 1")
    run.add_argument("--follow", action="store_true",
                     help="with JOB: print the run's output as it comes, then exit as --wait")
    for flag, text in SERVICE_FLAGS:
        run.add_argument(flag, help=text)
    val = sub.add_parser("validate", help="check a jobs.yaml; exit 1 with file:line errors")
    val.add_argument("path", nargs="?", default=os.environ.get("TS_CONFIG", "jobs.yaml"))
    _add_client_commands(sub, client)
    usercli.add_commands(sub)
    return parser


SERVICE_FLAGS = (
    ("--config", "jobs.yaml path (TS_CONFIG; default ./jobs.yaml; a path given here must "
                 "exist)"),
    ("--db", "database URL (TS_DATABASE_URL; default sqlite:///./task_scheduler.sqlite; "
             "postgresql://user@host/db for production and for several nodes)"),
    ("--host", "bind address (TS_HOST; default 127.0.0.1; anything else needs a token)"),
    ("--port", "port (TS_PORT; default 8000)"),
    ("--token", "API/GUI bearer token (TS_API_TOKEN); visible in ps: prefer the variable "
                "or --token-file"),
    ("--token-file", "read the token from this file (TS_API_TOKEN_FILE)"),
    ("--allowed-hosts", "comma-separated Host names to answer besides loopback and the "
                        "bound address, e.g. the name a reverse proxy passes "
                        "(TS_ALLOWED_HOSTS; '.example.com' allows subdomains)"),
    ("--node-id", "this node's name in a cluster (TS_NODE_ID; default the host name; "
                  "each node of one database needs its own)"),
    ("--labels", "comma-separated labels of this node, for jobs' run_on (TS_NODE_LABELS; "
                 "e.g. db,backup)"),
    ("--public-url", "this service's address as people reach it, for links in "
                     "notifications (TS_PUBLIC_URL; e.g. https://sched.example.com)"),
    ("--smtp-url", "mail server for email notifications (TS_SMTP_URL; "
                   "smtp://user:pass@host:587?from=me@example.com uses STARTTLS, smtps:// "
                   "TLS); visible in ps: prefer the variable"),
    ("--pass-env", "comma-separated TS_* variables command jobs get all the same "
                   "(TS_PASS_ENV; jobs get no TS_* variable of the service otherwise)"),
    ("--trusted-proxies", "comma-separated addresses (or networks, 10.0.0.0/8) of reverse "
                          "proxies whose X-Forwarded-For names the client, for the limit on "
                          "wrong tokens and connections (TS_TRUSTED_PROXIES)"),
    ("--auth-header", "single sign-on: the request header a trusted proxy names the user in, "
                      "e.g. X-Forwarded-User (TS_AUTH_HEADER; needs --trusted-proxies)"),
    ("--auth-header-default-role", "the role of an SSO user not added with 'user add': "
                                   "viewer (default), operator, admin, or none to refuse "
                                   "(TS_AUTH_HEADER_DEFAULT_ROLE)"),
    ("--workers", "runs this node runs at once, each in a thread (TS_WORKERS; default 10)"),
    ("--keep-runs", "finished runs kept per job; older ones are pruned (TS_KEEP_RUNS; "
                    "default 1000)"),
    ("--keep-days", "days a finished run is kept (TS_KEEP_DAYS; default 30; fractions "
                    "allowed)"),
    ("--keep-audit-days", "days an audit log row is kept (TS_KEEP_AUDIT_DAYS; default 365)"),
    ("--log-level", "DEBUG, INFO, WARNING, ERROR (TS_LOG_LEVEL)"),
)
CLIENT_COMMANDS = ("jobs", "show", "runs", "logs", "pause", "resume", "cancel", "status")
RUN_EPILOG = f"""\
Other commands ('task-scheduler COMMAND --help' for one):
  validate [PATH]                 check a jobs.yaml
  --version                       this version

Commands for a running service, at --url or TS_URL (default {DEFAULT_URL}), with the
token from TS_API_TOKEN; tables in local time, --json for the API's JSON:
  jobs                            the jobs, their state, next and last run
  show JOB                        one job
  run JOB [--param K=V] [--wait] [--follow]
                                  run a job now (--wait: exit as the run did)
  runs [--job J] [--status S] [--since 2h]
                                  runs, newest first
  logs RUN [-f]                   a run's output (-f: as it comes, until it ends)
  pause JOB, resume JOB           stop or restart a job's schedule
  cancel RUN                      cancel a queued or running run
  status                          version, node, job and run counts, jobs.yaml

People and API tokens, written into the database (--db or TS_DATABASE_URL; works with the
service stopped, which is how the first admin is made; docs/security.md):
  user add NAME --role viewer|operator|admin [--password-stdin]
  user list, user set-role NAME ROLE, user disable|enable|set-password|del NAME
  token create --user NAME --name N [--expires 90d]   prints the token once
  token list [--user NAME], token revoke --user NAME --name N
"""


def _client_flags() -> argparse.ArgumentParser:
    """--url and --json, shared by every client command."""
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument("--url", help=f"the service's address (TS_URL; default {DEFAULT_URL}); "
                                     f"the token comes from TS_API_TOKEN only")
    flags.add_argument("--json", action="store_true", help="print the API's JSON (for scripts)")
    return flags


def _add_client_commands(sub, client: argparse.ArgumentParser) -> None:
    def command(name: str, text: str, *positional: str) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, parents=[client], help=text, description=text)
        for dest in positional:
            parser.add_argument(dest, metavar=dest.upper().removesuffix("_ID"))
        return parser
    command("jobs", "list the jobs of a running service")
    command("show", "show one job", "job")
    runs = command("runs", "list runs, newest first")
    runs.add_argument("--job", help="runs of this job")
    runs.add_argument("--status", help="succeeded, failed, running... or several: failed,timeout")
    runs.add_argument("--since", help="runs since then: 30m, 2h, 7d, or a local time "
                                      "(2026-12-01T09:00)")
    runs.add_argument("--until", help="runs until then: as --since (2h: until two hours ago)")
    runs.add_argument("--trigger", help="schedule, manual, retry, catchup, ping, heartbeat "
                                        "or after")
    runs.add_argument("--node", help="runs of this node (task-scheduler status names it)")
    runs.add_argument("--grep", metavar="PHRASE", help="runs whose output holds this text (any "
                                                       "case, no wildcards); prints the line")
    runs.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    logs = command("logs", "print a run's output", "run_id")
    logs.add_argument("-f", "--follow", action="store_true",
                      help="print it as it comes until the run ends; exit 0 if it succeeded")
    command("pause", "pause a job's schedule", "job")
    command("resume", "resume a paused job", "job")
    command("cancel", "cancel a queued or running run", "run_id")
    command("status", "the service's version, node, counts and jobs.yaml")


def _default_command(argv: list) -> list:
    if argv in (["-h"], ["--help"]):
        return ["run", "--help"]   # the flags people look for are the run command's
    if argv and (argv[0] in ("-h", "--help", "--version") or not argv[0].startswith("-")):
        return argv   # a command; an unknown word is argparse's "invalid choice", not a job
    return ["run", *argv]


def _check_run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``run JOB`` is the client and ``run [flags]`` the service: never a mix of the two."""
    service = [flag for flag, _ in SERVICE_FLAGS if getattr(args, _dest(flag)) is not None]
    client = [flag for flag in ("--param", "--wait", "--follow", "--url", "--json")
              if getattr(args, _dest(flag)) not in (None, False)]
    if args.job and service:
        parser.error(f"{', '.join(service)}: flags of the service; 'run {args.job}' asks a "
                     f"running service (--url) to run the job")
    if not args.job and client:
        parser.error(f"{', '.join(client)} needs a JOB: task-scheduler run JOB {client[0]}")


def _dest(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")


def _cmd_validate(path: str) -> int:
    try:
        jobs, _ = load_jobs_file(path)
    except InvalidConfig as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(f"{path}: OK, {len(jobs)} jobs")
    return 0


def _cmd_run(config: Config) -> int:
    if config.host not in LOOPBACK_HOSTS and not config.token and not config.auth_header \
            and not _users_exist(config.database_url):
        raise SchedulerError(f"refusing to bind {config.host} without a token or a user: anyone "
                             f"who can reach it could run commands. Set TS_API_TOKEN or "
                             f"--token-file, add an admin (task-scheduler user add NAME --role "
                             f"admin), or bind 127.0.0.1")
    service = SchedulerService(config)
    # Before any job's module is imported: a thread one starts at import is held to the
    # limit on output no run owns (_Spill) from the start.
    _capture_routers()
    try:   # the port first: a busy port must not find a scheduler already firing
        server = make_server(create_app(service, gui=_gui()), config.host, config.port,
                             config.trusted_proxies)
    except OSError as exc:
        service.engine.dispose()
        raise SchedulerError(f"cannot listen on {config.host}:{config.port}: "
                             f"{exc.strerror or exc}") from None
    service.base_url = _base_url(config.host, server.server_port)
    try:
        service.start()
    except BaseException:
        server.server_close()
        raise
    _handle_signals(service, server)
    _trim_heap()
    log.info("serving on http://%s:%d/", config.host, server.server_port)
    server.serve_forever()
    server.server_close()
    service.stop()
    return 0


def _users_exist(url: str) -> bool:
    """Some user is in the database; a database not made yet is not made here."""
    if url.startswith("sqlite") and not os.path.exists(sa.engine.make_url(url).database or ""):
        return False
    engine = create_engine(url)
    try:
        return Store(engine, "cli").users.any_user()
    except sa.exc.DBAPIError:   # no table yet: no user yet
        return False
    finally:
        engine.dispose()


class _Handoff(logging.handlers.QueueHandler):
    """Hands a record to the log thread: the message is made here (its arguments may change
    later), the line is formatted and written there. A full queue (stderr blocked, a storm of
    lines) drops lines and says how many, rather than stopping the thread that logs."""

    def __init__(self, records: queue.Queue):
        super().__init__(records)
        self.dropped = 0

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record.msg, record.args = record.getMessage(), None
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            if self.dropped:
                self.queue.put_nowait(logging.makeLogRecord({
                    "name": "task_scheduler", "levelno": logging.WARNING,
                    "levelname": "WARNING", "msg": f"{self.dropped} log lines dropped: "
                    "the log could not be written as fast as they came"}))
                self.dropped = 0
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1


LOG_QUEUE = 20_000   # lines waiting to be written at most (a few MiB)


def _log_off_the_path(level: str) -> None:
    """Log lines to stderr, written by a thread of their own. Workers logging each run's end
    at 200 runs a second waited a quarter of their busy time on the stream handler's lock
    (py-spy: ``Handler.acquire``); now a record is put on a queue and the worker goes on.
    What is queued is written at exit (atexit stops the listener, which drains the queue).
    As logging.basicConfig, it does nothing when the root logger has handlers already (an
    embedding program's, or a second main() in one process)."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    records: queue.Queue = queue.Queue(LOG_QUEUE)
    listener = logging.handlers.QueueListener(records, handler)
    root.setLevel(level)
    root.addHandler(_Handoff(records))
    listener.start()
    atexit.register(listener.stop)


def _trim_heap() -> None:
    """Hand the heap that start-up used and freed back to the system: glibc keeps it otherwise
    (~2 MiB of idle RSS with 10,000 jobs; a few milliseconds)."""
    import ctypes
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        log.debug("no malloc_trim here (not glibc)")


def _handle_signals(service: SchedulerService, server) -> None:
    """SIGTERM/SIGINT stop gracefully; a second one stops at once. SIGHUP reloads jobs.yaml."""
    asked = threading.Event()

    def on_stop(signum, _frame):
        name = signal.Signals(signum).name
        if asked.is_set():
            log.warning("%s again: stopping now; runs still going are recorded interrupted", name)
            service.hurry()
            return
        asked.set()
        log.info("%s: stopping (send it again to stop at once)", name)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    if service.reloader is not None:
        signal.signal(signal.SIGHUP, lambda *_: service.reloader.poke(0))


def _base_url(host: str, port: int) -> str:
    """How jobs of this process reach its API (the sample's self check)."""
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1" if host != "::" else "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _gui():
    """The GUI package next to this one (the CLI assembles both), else whatever is installed."""
    try:
        import task_scheduler_web
    except ModuleNotFoundError as exc:
        if exc.name != "task_scheduler_web":
            raise
        return discover_gui()
    return task_scheduler_web
