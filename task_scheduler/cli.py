"""The command line: ``task-scheduler run|validate``. The composition root: it builds the Config,
the service and the app, and hands the GUI package to the app (the core never imports it)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Optional

from .capture import _capture_routers
from .config import Config, LOOPBACK_HOSTS, __version__
from .errors import InvalidConfig, SchedulerError
from .http.app import create_app, discover_gui
from .http.server import make_server
from .jobsfile import load_jobs_file
from .service import SchedulerService

log = logging.getLogger("task_scheduler")


def main(argv: Optional[list] = None) -> int:
    """``task-scheduler [run] [...]``, ``task-scheduler validate [PATH]``, ``--version``."""
    args = _parser().parse_args(_default_command(sys.argv[1:] if argv is None else argv))
    if args.command == "validate":
        return _cmd_validate(args.path)
    try:
        config = Config.from_args(args)
        explicit = args.config or os.environ.get("TS_CONFIG")
        if explicit and not os.path.exists(explicit):
            raise SchedulerError(f"config file {explicit} does not exist (--config or "
                                 f"TS_CONFIG); create it (an empty list is []) or leave the "
                                 f"setting out to use ./jobs.yaml")
        logging.basicConfig(level=config.log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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
    run = sub.add_parser("run", help="run the scheduler with its API and GUI (the default)",
                         description="Run the scheduler with its API and GUI (the default "
                                     "command). Flags win over the environment variables named.",
                         epilog="Other commands: 'task-scheduler validate [PATH]' checks a "
                                "jobs.yaml; 'task-scheduler --version'.")
    flags = (
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
        ("--workers", "runs this node runs at once, each in a thread (TS_WORKERS; default 10)"),
        ("--keep-runs", "finished runs kept per job; older ones are pruned (TS_KEEP_RUNS; "
                        "default 1000)"),
        ("--keep-days", "days a finished run is kept (TS_KEEP_DAYS; default 30; fractions "
                        "allowed)"),
        ("--log-level", "DEBUG, INFO, WARNING, ERROR (TS_LOG_LEVEL)"),
    )
    for flag, text in flags:
        run.add_argument(flag, help=text)
    val = sub.add_parser("validate", help="check a jobs.yaml; exit 1 with file:line errors")
    val.add_argument("path", nargs="?", default=os.environ.get("TS_CONFIG", "jobs.yaml"))
    return parser


def _default_command(argv: list) -> list:
    if argv in (["-h"], ["--help"]):
        return ["run", "--help"]   # the flags people look for are the run command's
    if argv and argv[0] in ("run", "validate", "-h", "--help", "--version"):
        return argv
    return ["run", *argv]


def _cmd_validate(path: str) -> int:
    try:
        jobs, _ = load_jobs_file(path)
    except InvalidConfig as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(f"{path}: OK, {len(jobs)} jobs")
    return 0


def _cmd_run(config: Config) -> int:
    if config.host not in LOOPBACK_HOSTS and not config.token:
        raise SchedulerError(f"refusing to bind {config.host} without a token: anyone who can "
                             f"reach it could run commands. Set TS_API_TOKEN or --token-file, "
                             f"or bind 127.0.0.1")
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
