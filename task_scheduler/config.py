"""Settings: the Config dataclass (from flags, environment and defaults), tokens, labels and the
hosts a request may name. No I/O beyond reading a token file."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import os
import re
import socket
from typing import Any, Optional

from .errors import SchedulerError


__version__ = "0.1.0"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
LABEL_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,32}")
MAX_LABELS = 8                # a node matches run_on by its label subsets: 2**8 at most
MAX_CONFIG_BYTES = 16 << 20   # a 10,000-job jobs.yaml is about 2 MB
MAX_ALIAS_NODES = 1_000_000   # values YAML aliases may add to a file: far beyond honest use
_ANCHOR = re.compile(r"(^|[\s\[{,:-])&\S", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class Config:
    """Every setting of one service; build it with ``from_env()``/``from_args()`` or by hand."""

    config_path: Optional[str] = "jobs.yaml"
    database_url: str = "sqlite:///task_scheduler.sqlite"
    host: str = "127.0.0.1"
    port: int = 8000
    token: Optional[str] = None
    log_level: str = "INFO"
    timezone: Optional[str] = None        # default for triggers without one; None: the system's
    node: str = dataclasses.field(default_factory=socket.gethostname)
    max_workers: int = 10
    output_limit: int = 1 << 20           # bytes kept per stream and run (head + tail)
    keep_runs: int = 1000                 # runs kept per job
    keep_days: float = 30                 # runs older than this are pruned
    keep_audit_days: float = 365          # audit rows older than this are pruned
    shutdown_grace: float = 30.0          # seconds running runs get on stop
    kill_grace: float = 5.0               # seconds between TERM and KILL
    watch: bool = True                    # watchdog on the folder of config_path
    poll_interval: float = 30.0           # hash poll for file systems without events
    debounce: float = 0.3                 # one editor save is several events
    busy_timeout: float = 30.0            # SQLite: seconds a writer waits for a lock
    allowed_hosts: tuple = ()             # Host names to answer besides loopback (reverse proxy)
    max_config_bytes: int = MAX_CONFIG_BYTES
    labels: tuple = ()                    # this node's labels, for jobs' run_on
    queue_poll: float = 1.0               # seconds between looks at the run queue (NOTIFY wakes)
    lease_ttl: float = 5.0                # a leader's lease; failover takes about this plus 1 s
    lease_renew: float = 1.0              # seconds between renewals (and takeover attempts)
    heartbeat_every: float = 2.0          # seconds between node and run heartbeats
    node_timeout: float = 10.0            # a node silent this long is dead; its runs rescued
    public_url: Optional[str] = None      # this service's address in notifications' links
    smtp_url: Optional[str] = None        # smtp://user:pass@host:587?from=... for mail
    notify_retry_for: float = 3600.0      # seconds a notification is retried before giving up
    notify_delays: tuple = (10, 30, 60, 120, 300, 600)   # between attempts; the last repeats
    sla_every: float = 1.0                # seconds between the leader's looks at SLAs, heartbeats
    pass_env: tuple = ()                  # TS_* variables command jobs get all the same
    trusted_proxies: tuple = ()           # peers whose X-Forwarded-For names the client
    auth_header: Optional[str] = None     # SSO: the header a trusted proxy names the user in
    auth_header_default_role: str = "viewer"   # for SSO users not in ts_users; "none" refuses

    _ENV = {"config_path": "TS_CONFIG", "database_url": "TS_DATABASE_URL", "host": "TS_HOST",
            "port": "TS_PORT", "token": "TS_API_TOKEN", "log_level": "TS_LOG_LEVEL",
            "timezone": "TS_TIMEZONE", "allowed_hosts": "TS_ALLOWED_HOSTS",
            "labels": "TS_NODE_LABELS", "node": "TS_NODE_ID", "public_url": "TS_PUBLIC_URL",
            "smtp_url": "TS_SMTP_URL", "pass_env": "TS_PASS_ENV",
            "trusted_proxies": "TS_TRUSTED_PROXIES", "max_workers": "TS_WORKERS",
            "keep_runs": "TS_KEEP_RUNS", "keep_days": "TS_KEEP_DAYS",
            "keep_audit_days": "TS_KEEP_AUDIT_DAYS",
            "auth_header": "TS_AUTH_HEADER",
            "auth_header_default_role": "TS_AUTH_HEADER_DEFAULT_ROLE"}

    @classmethod
    def from_env(cls, env: Optional[dict] = None, **overrides: Any) -> Config:
        env = os.environ if env is None else env
        values = {name: env[var] for name, var in cls._ENV.items() if env.get(var)}
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "port" in values:
            values["port"] = _parse_port(values["port"])
        for name, (parse, low, high, unit) in _LIMITS.items():
            if name in values:
                values[name] = _parse_limit(name, values[name], parse, low, high, unit)
        if isinstance(values.get("allowed_hosts"), str):
            values["allowed_hosts"] = tuple(h for h in values["allowed_hosts"].split(",") if h)
        if isinstance(values.get("labels"), str):
            values["labels"] = _parse_labels(values["labels"])
        for name in ("pass_env", "trusted_proxies"):
            if isinstance(values.get(name), str):
                values[name] = tuple(x.strip() for x in values[name].split(",") if x.strip())
        _check_sso(values)
        return cls(**values)

    @classmethod
    def from_args(cls, args: argparse.Namespace, env: Optional[dict] = None) -> Config:
        env = os.environ if env is None else env
        token_file = args.token_file or env.get("TS_API_TOKEN_FILE")
        token = args.token or (_read_token(token_file) if token_file else None)
        config = cls.from_env(env, config_path=args.config, database_url=args.db,
                              host=args.host, port=args.port, token=token,
                              log_level=args.log_level, allowed_hosts=args.allowed_hosts,
                              labels=args.labels, node=args.node_id,
                              public_url=args.public_url, smtp_url=args.smtp_url,
                              pass_env=getattr(args, "pass_env", None),
                              trusted_proxies=getattr(args, "trusted_proxies", None),
                              max_workers=getattr(args, "workers", None),
                              keep_runs=getattr(args, "keep_runs", None),
                              keep_days=getattr(args, "keep_days", None),
                              keep_audit_days=getattr(args, "keep_audit_days", None),
                              auth_header=getattr(args, "auth_header", None),
                              auth_header_default_role=getattr(
                                  args, "auth_header_default_role", None))
        return config

    @functools.cached_property
    def base_dir(self) -> str:
        """The folder of jobs.yaml: relative scripts and python modules resolve against it."""
        return os.path.dirname(os.path.abspath(self.config_path or "jobs.yaml"))


def _check_sso(values: dict) -> None:
    role = values.get("auth_header_default_role", "viewer")
    if role not in ("viewer", "operator", "admin", "none"):
        raise SchedulerError(f"--auth-header-default-role (TS_AUTH_HEADER_DEFAULT_ROLE): "
                             f"{role!r} is not viewer, operator, admin or none")
    if values.get("auth_header") and not values.get("trusted_proxies"):
        raise SchedulerError("--auth-header (TS_AUTH_HEADER) needs --trusted-proxies "
                             "(TS_TRUSTED_PROXIES): the header is honoured only from them")


def _parse_labels(text: str) -> tuple:
    labels = tuple(sorted({x.strip() for x in text.split(",") if x.strip()}))
    bad = [x for x in labels if not LABEL_PATTERN.fullmatch(x)]
    if bad:
        raise SchedulerError(f"labels: {bad[0]!r} is not a label (letters, digits, _ . -; "
                             f"up to 32)")
    if len(labels) > MAX_LABELS:
        raise SchedulerError(f"labels: {len(labels)} given; a node has at most {MAX_LABELS}")
    return labels


def _read_token(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            token = fh.read().strip()
    except OSError as exc:
        raise SchedulerError(f"cannot read the token file {path}: {exc.strerror}") from None
    if not token:
        raise SchedulerError(f"the token file {path} is empty")
    return token


MIN_TOKEN = 16   # characters; a short token is guessed, even at the rate the API allows


def check_token(token: Optional[str]) -> None:
    """Refuse a token that is empty, blank or short, saying how to make a good one."""
    if token is None:
        return
    problem = ("is empty or blank" if not token.strip() else
               "has spaces or line breaks at its ends" if token != token.strip() else
               f"has {len(token)} characters; at least {MIN_TOKEN} are needed"
               if len(token) < MIN_TOKEN else None)
    if problem:
        raise SchedulerError(f"the API token {problem}. Make one with: python -c \"import "
                             f"secrets; print(secrets.token_urlsafe(32))\"")


def _parse_port(value: Any) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise SchedulerError(f"port: {value!r} is not a number (1-65535, or 0 for any)") from None
    if not 0 <= port <= 65535:
        raise SchedulerError(f"port: {port} is out of range (1-65535, or 0 for any)")
    return port


# Settings given as text: (parse, lowest, highest, what a value counts), checked by from_env.
_LIMITS = {
    "max_workers": (int, 1, 1000, "runs at once; each is a thread"),
    "keep_runs": (int, 1, 10 ** 9, "runs kept per job"),
    # 0 keeps no finished run past the next prune; 100 years is more than any history needs,
    # and far more overflows the date arithmetic of pruning
    "keep_days": (float, 0, 36500, "days a finished run is kept"),
    "keep_audit_days": (float, 0, 36500, "days an audit row is kept"),
}
_FLAGS = {"max_workers": "--workers", "keep_runs": "--keep-runs", "keep_days": "--keep-days",
          "keep_audit_days": "--keep-audit-days"}


def _parse_limit(name: str, value: Any, parse, low: int, high: int, unit: str):
    """A number setting within [low, high]: a message naming the flag, its variable and the
    valid range for anything else (a word, a fraction where a count is meant, nan, -1)."""
    where = f"{_FLAGS[name]} ({Config._ENV[name]})"
    try:
        number = parse(str(value).strip()) if isinstance(value, str) else parse(value)
    except (TypeError, ValueError, OverflowError):
        kind = "a whole number" if parse is int else "a number"
        raise SchedulerError(f"{where}: {value!r} is not {kind} ({unit}; {low:,} to "
                             f"{high:,})") from None
    if not low <= number <= high:   # also nan, which compares false
        raise SchedulerError(f"{where}: {value!r} is out of range ({unit}; {low:,} to "
                             f"{high:,})")
    return number


def label_sets(labels: tuple) -> list[str]:
    """Every ``run_on`` a node with ``labels`` may run: the sorted subsets, comma-joined."""
    ordered = sorted(set(labels))
    return [",".join(c) for n in range(len(ordered) + 1)
            for c in itertools.combinations(ordered, n)]


def allowed_hosts(config: Config) -> dict:
    """The names a request's Host may carry: loopback, the bound address, this machine's names
    and --allowed-hosts (``.example.com`` also allows subdomains; ``*`` allows any)."""
    explicit = {h.strip().lower().rstrip(".") for h in config.allowed_hosts if h.strip()}
    names = {config.host.lower(), socket.gethostname().lower()}
    return {"explicit": explicit, "names": names | explicit}
