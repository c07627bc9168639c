"""The command-line client of the REST API: ``task-scheduler jobs|show|run JOB|runs|logs|pause|
resume|cancel|status`` against a running service at ``--url`` (TS_URL), the token from
TS_API_TOKEN. ``ApiClient`` makes the HTTP calls (urllib: no dependency) and turns each failure
into a message that says what to do; the ``cmd_*`` functions print tables in local time, or the
API's JSON as is with ``--json``. It speaks only HTTP: it must not import the service, the store
or the web layer, so it works against any node that answers the API."""

from __future__ import annotations

import argparse
import datetime as dt
import difflib
import http.client
import json
import os
import re
import sys
import time
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any, Optional

from .config import _read_token
from .errors import SchedulerError
from .models import FINAL_STATUSES

DEFAULT_URL = "http://127.0.0.1:8000"
TIMEOUT = 30.0     # seconds one call may take: a loaded service answers well within this
FOLLOW_POLL = 0.3  # seconds between looks at a followed run's output: live to a person's eye
WAIT_POLL_MAX = 2.0  # a --wait without output backs off to one small GET every 2 s
MAX_JOBS = 10000   # the API's page limit: one call lists every job of any real service
KEY_WIDTH = 17     # the longest key of a "key  value" listing ("jobs.yaml error") and room
CLIENT_ERROR_EXIT = 2   # as the service's own errors; a run that did not succeed exits 1


class ClientError(SchedulerError):
    """A call the client could not make, or the service refused; ``http_status`` is 0 when
    nothing answered."""

    def __init__(self, message: str, http_status: int = 0):
        super().__init__(message)
        self.http_status = http_status


class ApiClient:
    """One service's API: a small method per call, each answering the API's JSON."""

    def __init__(self, url: str, token: Optional[str] = None, timeout: float = TIMEOUT):
        if not url.startswith(("http://", "https://")):
            raise ClientError(f"--url {url!r} is not an address like {DEFAULT_URL}")
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout

    def jobs(self) -> dict:
        return self.request("GET", "/api/jobs", query={"limit": MAX_JOBS})

    def job(self, job_id: str) -> dict:
        return self._on_job("GET", job_id)

    def pause(self, job_id: str) -> dict:
        return self._on_job("POST", job_id, "/pause")

    def resume(self, job_id: str) -> dict:
        return self._on_job("POST", job_id, "/resume")

    def run_job(self, job_id: str, params: Optional[dict] = None) -> dict:
        return self._on_job("POST", job_id, "/run", params)["run"]

    def runs(self, **query) -> dict:
        return self.request("GET", "/api/runs", query=query)

    def run(self, run_id: str) -> dict:
        return self.request("GET", _path("runs", run_id))

    def output(self, run_id: str, stream: str, offset: int) -> dict:
        return self.request("GET", _path("runs", run_id, stream), query={"offset": offset})

    def cancel(self, run_id: str) -> dict:
        return self.request("POST", _path("runs", run_id, "cancel"))

    def status(self) -> dict:
        return self.request("GET", "/api/status")

    def request(self, method: str, path: str, body: Any = None,
                query: Optional[dict] = None) -> Any:
        """One call; the answer's JSON, or a ClientError that says what to do."""
        query = {k: v for k, v in (query or {}).items() if v is not None}
        url = self.url + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        data = None if body is None else json.dumps(body).encode()
        try:
            request = urllib.request.Request(url, data, self._headers(data), method=method)
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                text = answer.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            raise self._refused(exc) from None
        except (ValueError, http.client.InvalidURL):   # a bad port: urllib cannot even try
            raise ClientError(f"--url {self.url!r} is not an address like {DEFAULT_URL}") from None
        except (OSError, http.client.HTTPException) as exc:   # refused, no such host, timed out
            raise ClientError(self._unreachable(exc)) from None
        return _json(text, url)

    def _headers(self, data: Optional[bytes]) -> dict:
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _refused(self, exc: urllib.error.HTTPError) -> ClientError:
        if exc.code == 401:
            said = ("TS_API_TOKEN is not its token" if self.token
                    else "set TS_API_TOKEN to its token")
            return ClientError(f"{self.url} wants a token: {said} (the client reads it only "
                               f"from the environment, where ps does not show it)", 401)
        first, newline, details = _error_message(exc).partition("\n")
        return ClientError(f"{first} (HTTP {exc.code}){newline}{details}", exc.code)

    def _unreachable(self, exc: OSError) -> str:
        reason = getattr(exc, "reason", None) or exc
        return (f"cannot reach the service at {self.url} ({reason}): is it running there? "
                f"Point the client at it with --url URL or the TS_URL variable (default "
                f"{DEFAULT_URL})")

    def _on_job(self, method: str, job_id: str, action: str = "", body: Any = None) -> Any:
        try:
            return self.request(method, _path("jobs", job_id) + action, body)
        except ClientError as exc:
            if exc.http_status != 404:
                raise
            raise ClientError(self._unknown_job(job_id), 404) from None

    def _unknown_job(self, job_id: str) -> str:
        ids = [job["id"] for job in self.jobs()["jobs"]]
        near = difflib.get_close_matches(job_id, ids, n=3, cutoff=0.6)
        hint = (f"did you mean {' or '.join(near)}?" if near
                else f"'task-scheduler jobs' lists the {len(ids)} there are")
        return f"no job {job_id!r} at {self.url}; {hint}"


def _path(collection: str, item: str, action: str = "") -> str:
    path = f"/api/{collection}/{urllib.parse.quote(item, safe='')}"
    return f"{path}/{action}" if action else path


def _json(text: str, url: str) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        raise ClientError(f"{url} answered something that is not the API's JSON: is --url the "
                          f"service's address?") from None


def _error_message(exc: urllib.error.HTTPError) -> str:
    """The API's ``error.message`` and a line per detail (a field and what is wrong with it),
    else the HTTP reason (a proxy's page, say)."""
    try:
        error = json.loads(exc.read().decode())["error"]
        details = "".join(f"\n  {d.get('field') or '-'}: {d['message']}"
                          for d in error.get("details") or ())
        return error["message"] + details
    except (ValueError, KeyError, TypeError, AttributeError, OSError):
        return str(exc.reason)


# -- commands -------------------------------------------------------------------------------


def run_command(args: argparse.Namespace) -> int:
    """One client command from the parsed command line; its exit code."""
    url = args.url or os.environ.get("TS_URL") or DEFAULT_URL
    try:
        return COMMANDS[args.command](ApiClient(url, _token()), args)
    except SchedulerError as exc:   # a ClientError, or an unreadable token file
        print(f"task-scheduler: {exc}", file=sys.stderr)
        return CLIENT_ERROR_EXIT
    except KeyboardInterrupt:   # Ctrl-C while following: the run itself goes on
        return 130
    except BrokenPipeError:   # `| head` stopped reading: not a failure of the command
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # quiet exit flush
        return 0


def _token() -> Optional[str]:
    token_file = os.environ.get("TS_API_TOKEN_FILE")
    return os.environ.get("TS_API_TOKEN") or (_read_token(token_file) if token_file else None)


def cmd_jobs(api: ApiClient, args) -> int:
    return _emit(args, api.jobs(), _jobs_table)


def cmd_show(api: ApiClient, args) -> int:
    return _emit(args, api.job(args.job), _job_text)


def cmd_pause(api: ApiClient, args) -> int:
    return _emit(args, api.pause(args.job), _job_state)


def cmd_resume(api: ApiClient, args) -> int:
    return _emit(args, api.resume(args.job), _job_state)


def cmd_status(api: ApiClient, args) -> int:
    return _emit(args, api.status(), _status_text)


def cmd_cancel(api: ApiClient, args) -> int:
    return _emit(args, api.cancel(args.run_id), _run_line)


def cmd_runs(api: ApiClient, args) -> int:
    answer = api.runs(job_id=args.job, status=args.status, since=_since(args.since),
                      until=_since(args.until, "--until"), trigger=args.trigger,
                      node=args.node, q=args.grep, limit=args.limit)
    if args.job and not answer["runs"]:
        api.job(args.job)   # no runs of a job that does not exist: say so, with a did-you-mean
    return _emit(args, answer, _runs_table)


def cmd_run(api: ApiClient, args) -> int:
    """Queue a run; with --wait or --follow, stay until it ends and exit as it did."""
    params = _run_params(api, args.job, args.param) if args.param else None
    run = api.run_job(args.job, params)
    if not (args.wait or args.follow):
        return _emit(args, run, lambda r: f"{_run_line(r)}; follow it with: "
                                          f"task-scheduler logs {r['id']} -f")
    if args.follow:   # with --json, stdout is the one JSON document: the output goes aside
        _follow(api, run["id"], sys.stderr if args.json else sys.stdout)
    final = _wait(api, run["id"])
    if args.follow and not args.json:   # stdout was the run's output: the summary goes aside
        print(_run_line(final), file=sys.stderr)
        return _exit_of(final)
    return _emit(args, final, _run_line, _exit_of(final))


def cmd_logs(api: ApiClient, args) -> int:
    """A run's stdout (and stderr, to stderr); with -f, as it comes until the run ends."""
    if args.follow:
        _follow(api, args.run_id, sys.stdout)
        return _exit_of(api.run(args.run_id))
    run = api.run(args.run_id)
    if args.json:
        return _emit(args, run, str)
    sys.stdout.write(run["stdout"])
    sys.stderr.write(run["stderr"])
    return 0


COMMANDS: dict[str, Callable[[ApiClient, Any], int]] = {
    "jobs": cmd_jobs, "show": cmd_show, "run": cmd_run, "runs": cmd_runs, "logs": cmd_logs,
    "pause": cmd_pause, "resume": cmd_resume, "cancel": cmd_cancel, "status": cmd_status,
}


def _emit(args, data: Any, human: Callable[[Any], str], code: int = 0) -> int:
    print(json.dumps(data, ensure_ascii=False, indent=2) if args.json else human(data))
    return code


def _exit_of(run: dict) -> int:
    return 0 if run["status"] == "succeeded" else 1


def _follow(api: ApiClient, run_id: str, out) -> None:
    """Print a run's stdout to ``out`` and its stderr to stderr as they come (GET ?offset=N:
    the SSE stream would hold one of the server's few stream threads), until the run ends."""
    offsets, sinks = {"stdout": 0, "stderr": 0}, {"stdout": out, "stderr": sys.stderr}
    while True:
        for stream in list(offsets):
            piece = api.output(run_id, stream, offsets[stream])
            sinks[stream].write(piece["text"])
            sinks[stream].flush()
            offsets[stream] = piece["offset"]
            if not piece["running"]:   # this answer held all there is
                del offsets[stream]
        if not offsets:
            return
        time.sleep(FOLLOW_POLL)


def _wait(api: ApiClient, run_id: str) -> dict:
    """The run once it has ended, asked often at first, then every WAIT_POLL_MAX seconds."""
    delay = 0.1
    while (run := api.run(run_id))["status"] not in FINAL_STATUSES:
        time.sleep(delay)
        delay = min(delay * 1.5, WAIT_POLL_MAX)
    return run


def _run_params(api: ApiClient, job_id: str, pairs: list) -> dict:
    """``--param k=v`` as the run's body (models.RunParams): the job's declared params when it
    declares every name given (validated by the service); else a command job gets them as
    environment variables (``env``, text); a python job as keyword arguments (``kwargs``, each
    value read as JSON when it parses: 3, true, [1, 2], "007"; else as the text given)."""
    values = dict(_pair(text) for text in pairs)
    job = api.job(job_id)
    declared = job.get("definition", {}).get("params") or {}
    if declared and set(values) <= set(declared):   # its declared params (operators may)
        return {"params": values}
    if job["kind"] == "command":
        return {"env": values}
    return {"kwargs": {key: _json_or_text(value) for key, value in values.items()}}


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ClientError(f"--param {text!r}: write it as NAME=VALUE")
    return key, value


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _since(text: Optional[str], flag: str = "--since") -> Optional[str]:
    """``--since`` (or ``--until``) as the API's ISO time: a duration back from now (30m, 2h,
    7d), or a date or time, local when it names no zone."""
    if not text:
        return None
    found = _DURATION.match(text.strip())
    if found:
        back = dt.timedelta(seconds=float(found.group(1)) * _UNIT_SECONDS[found.group(2)])
        return (dt.datetime.now(dt.UTC) - back).isoformat()
    try:
        return dt.datetime.fromisoformat(text).astimezone().isoformat()
    except ValueError:
        raise ClientError(f"{flag} {text!r} is neither a duration (30m, 2h, 7d, 1w) nor a time "
                          f"(2026-12-01 or 2026-12-01T09:00, local unless it names a zone)") \
            from None


# -- what a person reads --------------------------------------------------------------------


def _local(iso: Optional[str]) -> str:
    if not iso:
        return "-"
    return dt.datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _zone() -> str:
    return dt.datetime.now().astimezone().tzname() or "local"


def _width(text: str) -> int:
    """Columns on a terminal: East Asian wide characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _table(headers: tuple, rows: list, empty: str) -> str:
    if not rows:
        return empty
    rows = [headers, *[tuple("-" if c is None else str(c) for c in row) for row in rows]]
    widths = [max(_width(row[i]) for row in rows) for i in range(len(headers))]
    return "\n".join("  ".join(cell + " " * (w - _width(cell))
                               for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def _pairs(pairs: list) -> str:
    return "\n".join(f"{key:<{KEY_WIDTH}}{value}" for key, value in pairs
                     if value not in (None, ""))


def _last(run: Optional[dict]) -> str:
    if not run:
        return "-"
    return f"{run['status']} {_local(run['started_at'] or run['scheduled_at'])}"


def _jobs_table(answer: dict) -> str:
    rows = [(j["id"], j["state"], j["trigger_text"], _local(j["next_run_time"]),
             _last(j["last_run"])) for j in answer["jobs"]]
    return _table(("ID", "STATE", "SCHEDULE", f"NEXT RUN ({_zone()})",
                   f"LAST RUN ({_zone()})"), rows, "no jobs")


def _job_text(job: dict) -> str:
    what = job.get("func") or " ".join(job.get("command") or [])
    return _pairs([
        ("id", job["id"]), ("description", job.get("description")),
        ("kind", f"{job['kind']}: {what}"), ("schedule", job["trigger_text"]),
        ("state", job["state"]), ("source", job["source"]),
        ("tags", ", ".join(job.get("tags") or [])), ("timeout", job.get("timeout")),
        (f"next ({_zone()})", ("\n" + " " * KEY_WIDTH).join(map(_local, job["next_run_times"]))),
        ("last run", job["last_run"] and f"{_last(job['last_run'])} ({job['last_run']['id']})"),
    ])


def _job_state(job: dict) -> str:
    upcoming = job["next_run_time"] and f", next run {_local(job['next_run_time'])} ({_zone()})"
    return f"{job['id']}: {job['state']}{upcoming or ''}"


def _run_line(run: dict) -> str:
    text = f"run {run['id']} of {run['job_id']}: {run['status']}"
    if run.get("duration_s") is not None:
        text += f" in {run['duration_s']} s"
    if run.get("exit_code") is not None:
        text += f", exit code {run['exit_code']}"
    return text + (f": {run['error']}" if run.get("error") else "")


def _runs_table(answer: dict) -> str:
    rows = [(r["id"], r["job_id"], r["status"], r["trigger"],
             _local(r["started_at"] or r["scheduled_at"]), r["duration_s"], r["exit_code"])
            for r in answer["runs"]]
    more = answer["total"] - len(rows)
    tail = f"\n({more} more: --limit, or --since, --status)" if more > 0 and rows else ""
    table = _table(("ID", "JOB", "STATUS", "TRIGGER", f"STARTED ({_zone()})", "SECONDS", "EXIT"),
                   rows, "no runs match")
    if any(r.get("match") for r in answer["runs"]):   # --grep: each run's line under it
        lines = table.splitlines()
        table = "\n".join([lines[0], *(f"{line}\n    {_match_text(run.get('match'))}"
                                       for line, run in zip(lines[1:], answer["runs"],
                                                            strict=True))])
    return table + tail


def _match_text(match: Optional[dict]) -> str:
    if not match:
        return "(the output changed since)"
    return f"{match['stream']}:{match['line_number']}: {match['line']}"


def _status_text(status: dict) -> str:
    config = status.get("config") or {}
    return _pairs([
        ("version", status["version"]),
        ("node", f"{status['node']} ({status['role']}; leader {status['leader']})"),
        ("scheduler", status["scheduler"]), ("time zone", status["timezone"]),
        ("started", f"{_local(status['started_at'])} ({_zone()})"),
        ("jobs", _counts(status["jobs"]) or "none"),
        ("runs (24 h)", _counts(status["runs_24h"]) or "none"),
        ("active runs", status["active_runs"]),
        ("jobs.yaml", config.get("path") and f"{config['path']} ({config.get('jobs')} jobs)"),
        ("jobs.yaml error", config.get("error")),
    ])


def _counts(counts: dict) -> str:
    return ", ".join(f"{key} {value}" for key, value in counts.items() if value)
