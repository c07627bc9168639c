"""Notifications: webhook, Slack and mail targets of a job, queued with the end of a run and sent by
the leader with deadlines, no redirects, and secrets kept out of logs and answers."""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import datetime as dt
import functools
import hashlib
import hmac
import http.client
import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING, Any, Optional
from collections.abc import Callable

import sqlalchemy as sa

from .errors import InvalidJob, SchedulerError
from .models import (
    JobDefinition, NOTIFY_EVENTS, SECRET_SHOWN, _notify_kind, redact_target, run_to_dict,
    target_text)
from .store.schema import new_run_id
from .text import _clean, _short
from .timeutil import _iso

if TYPE_CHECKING:
    from .book import JobBook, JobRecord
    from .bus import Bus
    from .config import Config
    from .store import Store

log = logging.getLogger("task_scheduler")


class Notifier:
    """Tells people how runs ended. What to send is queued in the database in the transaction
    that ends the run (a restart or a failover loses nothing, and a run never waits for it); the
    leader sends it, retrying with backoff for ``notify_retry_for`` seconds, and each attempt is
    recorded on the run. Secrets (webhook secrets and headers, Slack URLs, the SMTP password)
    never reach the API, the GUI or the log. ``base_url`` is where the API is served (links to
    runs), known only once the server listens."""

    def __init__(self, config: Config, store: Store, bus: Bus, book: JobBook, *,
                 now: Callable[[], dt.datetime], leading: Callable[[], bool],
                 base_url: Callable[[], Optional[str]]):
        self.config, self.store, self.bus, self.book = config, store, bus, book
        self._now, self._leading, self._base_url = now, leading, base_url
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ts-notify", daemon=True)
        # Each destination is sent to by one sender at a time, destinations side by side: a
        # slow or dead one holds its own notices only.
        self._senders = concurrent.futures.ThreadPoolExecutor(NOTIFY_SENDERS, "ts-notify-send")
        self._busy: set = set()            # destinations a sender works for
        self._queues: dict = {}            # destination -> deque of notice rows
        self._queued: set = set()          # ids of the notices in those queues
        self._busy_lock = threading.Lock()

    def start(self) -> None:
        self.bus.subscribe("ts_notes", lambda _payload: self._wake.set())
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(15)
        self._senders.shutdown(wait=True, cancel_futures=True)   # a delivery: NOTIFY_TIMEOUT
        waiting = [row for queue in self._queues.values() for row in queue]
        for row in waiting:   # due again now, not when their hold runs out: a restart sends
            try:
                self.store.notes.record_note(row.id, next_at=row.next_at)
            except sa.exc.DBAPIError as exc:
                log.warning("notifications: %s stays held a while: %s", row.id, _clean(exc))

    def swept(self, runs: list) -> None:
        """Runs a crash left running were ended: tell whom their jobs' notify names."""
        self.book.load()   # the notifications name the jobs' targets
        self.store.notes.queue_notes(self.notes_for(runs))

    def notes_for(self, runs: list, previous: Optional[str] = None) -> list[dict]:
        """The notifications the ends of these runs call for (by each job's ``notify``)."""
        notes = []
        for run in runs:
            rec = self.book.get(run["job_id"])
            if rec is None or not rec.facts.notifies or run.get("step_id"):
                continue   # a workflow's steps: its run's end tells (docs/workflows.md)
            events = _events(run["status"], previous, _will_retry(rec.definition, run))
            for target in rec.definition.notify:
                for event in events & set(target.on):
                    notes.append(self._note(run, rec, event, target))
        return notes

    def breach_notes(self, event: str, run: dict, detail: str) -> list[dict]:
        """The notifications an SLA breach calls for: opt-in, only targets whose ``on`` names
        the event (``late``, ``long_running``, ``overdue``)."""
        rec = self.book.get(run["job_id"])
        if rec is None or not rec.facts.notifies:
            return []
        return [self._note(run, rec, event, target, detail)
                for target in rec.definition.notify if event in target.on]

    def wants_previous(self, job_id: str) -> bool:
        rec = self.book.get(job_id)
        return rec is not None and rec.facts.notifies and \
            any("recovered" in t.on for t in rec.definition.notify)

    def _note(self, run: dict, rec: JobRecord, event: str, target,
              detail: Optional[str] = None) -> dict:
        now = self._now()
        payload = self._payload(run, rec, event)
        if detail is not None:   # an SLA breach: what was promised and what happened
            payload["detail"] = detail
        return {"id": new_run_id(), "run_id": run["id"], "job_id": run["job_id"],
                "event": event, "target": json.dumps(target.model_dump()),
                "payload": json.dumps(payload, ensure_ascii=False),
                "status": "pending", "attempts": 0, "next_at": now, "created_at": now,
                "log": "[]"}

    def _payload(self, run: dict, rec: JobRecord, event: str) -> dict:
        shown = run_to_dict(run)
        lines = {name: (run.get(name) or "").splitlines()[-NOTIFY_LINES:]
                 for name in ("stdout", "stderr")}
        base = (self.config.public_url or self._base_url() or "").rstrip("/")
        return {"event": event, "job": {"id": rec.definition.id,
                                        "description": rec.definition.description},
                "run": {k: shown[k] for k in ("id", "status", "trigger", "attempt",
                                              "scheduled_at", "started_at", "finished_at",
                                              "duration_s", "exit_code", "error", "node")},
                "output": lines, "url": f"{base}/runs/{run['id']}" if base else None}

    # sending (the leader)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            if not self._leading():
                continue
            try:
                self._dispatch()
            except sa.exc.DBAPIError as exc:
                log.warning("notifications: database error: %s", _clean(exc))
            except Exception:
                log.exception("notifications: unexpected error; continuing")

    def _dispatch(self) -> None:
        """Queue due notices by destination; a destination with no sender at work gets one.
        A notice already queued (taken again once its hold ran out) is not queued twice."""
        for row in self.store.notes.take_notes(20, hold=NOTIFY_TIMEOUT * 3):
            where = _destination(json.loads(row.target))
            with self._busy_lock:
                if row.id in self._queued:
                    continue
                self._queued.add(row.id)
                self._queues.setdefault(where, collections.deque()).append(row)
                idle = where not in self._busy
                self._busy.add(where)
            if idle:
                self._senders.submit(self._send_queue, where)

    def _send_queue(self, where: str) -> None:
        """One destination's notices in order, until none is left. After a failure the rest
        wait for their turn (the destination is down: each would take the whole deadline);
        they are due again when their hold runs out."""
        try:
            while not self._stopping.is_set():
                with self._busy_lock:
                    queue = self._queues.get(where)
                    if not queue:   # at once with the check: a notice queued now finds no
                        self._busy.discard(where)   # sender and starts one
                        self._queues.pop(where, None)
                        return
                    row = queue.popleft()
                try:
                    ok = self._attempt(row)
                finally:
                    with self._busy_lock:
                        self._queued.discard(row.id)
                if not ok:
                    break
        except Exception:
            log.exception("notifications to %s: unexpected error; continuing", where)
        with self._busy_lock:   # failed: what waits is due again when its hold runs out
            if not self._stopping.is_set():   # stopping: stop() releases what waits
                for row in self._queues.pop(where, ()):
                    self._queued.discard(row.id)
            self._busy.discard(where)
        self._wake.set()

    def _attempt(self, row) -> bool:
        target = json.loads(row.target)
        try:
            detail, ok = self._send(target, row), True
        except Exception as exc:   # a refused connection, an HTTP error, SMTP's complaint
            detail, ok = _clean(exc), False
        attempts = row.attempts + 1
        now = self._now()
        history = [*json.loads(row.log), {"at": _iso(now), "ok": ok, "detail": detail[:300]}]
        given_up = not ok and (now - row.created_at).total_seconds() >= self.config.\
            notify_retry_for
        delay = self.config.notify_delays[min(attempts, len(self.config.notify_delays)) - 1]
        self.store.notes.record_note(
            row.id, attempts=attempts, log=json.dumps(history[-20:]),
            status="sent" if ok else "failed" if given_up else "pending",
            next_at=now + dt.timedelta(seconds=0 if ok or given_up else delay))
        level = logging.INFO if ok else logging.WARNING
        log.log(level, "notification %s of run %s (%s to %s): %s%s", row.id, row.run_id,
                row.event, target_text(target), "sent" if ok else "failed: " + detail,
                "; given up" if given_up else "" if ok else f"; again in {delay:g}s")
        return ok

    def _send(self, target: dict, row) -> str:
        payload = json.loads(row.payload)
        if "webhook" in target:
            body = json.dumps(payload, ensure_ascii=False).encode()
            headers = {"Content-Type": "application/json", **target.get("headers", {}),
                       "X-Task-Scheduler-Event": row.event,
                       "X-Task-Scheduler-Delivery": row.id}
            if target.get("secret"):
                digest = hmac.new(target["secret"].encode(), body, hashlib.sha256).hexdigest()
                headers["X-Task-Scheduler-Signature-256"] = f"sha256={digest}"
            return _post(target["webhook"], body, headers)
        if "slack" in target:
            body = json.dumps({"text": _summary(payload, link=True)}, ensure_ascii=False)
            return _post(target["slack"], body.encode(), {"Content-Type": "application/json"})
        return self._mail(target["email"], payload)

    def _mail(self, addresses: list, payload: dict) -> str:
        import smtplib
        from email.message import EmailMessage
        if not self.config.smtp_url:
            raise SchedulerError("no SMTP server is set up (--smtp-url or TS_SMTP_URL)")
        url = urllib.parse.urlsplit(self.config.smtp_url)
        sender = dict(urllib.parse.parse_qsl(url.query)).get(
            "from", f"task-scheduler@{socket.gethostname()}")
        message = EmailMessage()
        message["Subject"] = _summary(payload, link=False).splitlines()[0][:200]
        message["From"], message["To"] = sender, ", ".join(addresses)
        message.set_content(_mail_text(payload))
        secure = url.scheme == "smtps"
        deadline = time.monotonic() + NOTIFY_TIMEOUT
        smtp = (smtplib.SMTP_SSL if secure else smtplib.SMTP)(
            url.hostname or "localhost", url.port or (465 if secure else 587),
            timeout=NOTIFY_TIMEOUT)
        with smtp, _deadline(lambda: smtp.sock, deadline):
            smtp.ehlo()
            if not secure and smtp.has_extn("starttls"):
                smtp.starttls()
                smtp.ehlo()
            elif not secure and url.username:
                raise SchedulerError(f"{url.hostname} offers no STARTTLS: the password is not "
                                     f"sent in clear (use smtps://)")
            if url.username:
                smtp.login(urllib.parse.unquote(url.username),
                           urllib.parse.unquote(url.password or ""))
            smtp.send_message(message)
        return f"mailed {len(addresses)} address(es) through {url.hostname}"


NOTIFY_LINES = 20     # last lines of each stream in a notification
NOTIFY_TIMEOUT = 10   # seconds one delivery may take, all of it (not each read)
NOTIFY_SENDERS = 8    # destinations sent to at once (each slow one holds one sender)


def _will_retry(defn: JobDefinition, run: dict) -> bool:
    """A failed or timed-out attempt that its job's ``retries`` run again (Runner._retry)."""
    return run["status"] in ("failed", "timeout") and defn.retries is not None and \
        run.get("attempt", 1) <= defn.retries.max and defn.steps is None


def _events(status: str, previous: Optional[str], retrying: bool = False) -> set:
    if retrying:   # 'failed' and 'timeout' go out once, for the last attempt
        return {"retrying"}
    if status == "succeeded":
        recovered = previous in ("failed", "timeout", "interrupted")
        return {"succeeded", "recovered"} if recovered else {"succeeded"}
    return {status} & set(NOTIFY_EVENTS)


def _post(url: str, body: bytes, headers: dict) -> str:
    """POST within NOTIFY_TIMEOUT in all. A redirect is not followed: it would carry the
    Authorization header and the signature to wherever the target points."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    deadline = time.monotonic() + NOTIFY_TIMEOUT
    opener = urllib.request.build_opener(_NoRedirect, _DeadlineHTTPHandler(deadline),
                                         _DeadlineHTTPSHandler(deadline))
    try:
        with opener.open(request, timeout=NOTIFY_TIMEOUT) as response:
            return f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        where = target_text({'webhook': url})
        if 300 <= exc.code < 400:
            location = urllib.parse.urlsplit(exc.headers.get("Location") or "")
            raise SchedulerError(
                f"HTTP {exc.code} from {where}: redirects are not followed (Location: "
                f"{_short(location._replace(query='', fragment='').geturl())}); set the "
                f"target's final address") from None
        raise SchedulerError(f"HTTP {exc.code} from {where}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        if time.monotonic() >= deadline:
            raise SchedulerError(f"{target_text({'webhook': url})}: no complete answer within "
                                 f"{NOTIFY_TIMEOUT}s") from None
        reason = getattr(exc, "reason", exc)   # the URL, with its secret, stays out
        raise SchedulerError(f"{target_text({'webhook': url})}: {_clean(reason)}") from None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None   # urllib then raises the 3xx as an HTTPError


class _DeadlineMixin:
    """An http.client connection whose socket is shut down at ``deadline`` (monotonic): a
    target that trickles a byte every few seconds cannot stretch the per-read timeout."""

    def __init__(self, *args, deadline: float, **kwargs):
        super().__init__(*args, **kwargs)
        self._deadline = deadline

    def connect(self) -> None:
        super().connect()
        self._ts_guard = _deadline(lambda sock=self.sock: sock, self._deadline)
        self._ts_guard.__enter__()

    def close(self) -> None:
        guard = getattr(self, "_ts_guard", None)
        if guard is not None:
            guard.__exit__(None, None, None)
        super().close()


class _DeadlineHTTP(_DeadlineMixin, http.client.HTTPConnection):
    pass


class _DeadlineHTTPS(_DeadlineMixin, http.client.HTTPSConnection):
    pass


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: float):
        super().__init__()
        self._deadline = deadline

    def http_open(self, req):
        return self.do_open(functools.partial(_DeadlineHTTP, deadline=self._deadline), req)


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: float):
        super().__init__()
        self._deadline = deadline

    def https_open(self, req):
        return self.do_open(functools.partial(_DeadlineHTTPS, deadline=self._deadline), req,
                            context=self._context)


class _deadline:
    """Shut down the socket ``get_sock()`` gives at ``deadline`` (monotonic), unless left
    before: a read blocked on it returns at once."""

    def __init__(self, get_sock, deadline: float):
        self._timer = threading.Timer(max(deadline - time.monotonic(), 0), self._cut, (get_sock,))
        self._timer.daemon = True

    def __enter__(self):
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()

    @staticmethod
    def _cut(get_sock) -> None:
        sock = get_sock()
        if sock is not None:   # closed already (an answer in time): shutdown() just fails
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _destination(target: dict) -> str:
    """Where a notice goes, as far as slowness goes: a web server, or the mail server."""
    if "email" in target:
        return "smtp"
    url = urllib.parse.urlsplit(target.get("webhook") or target.get("slack") or "")
    return f"{url.scheme}://{url.netloc.rpartition('@')[2]}"


def _summary(payload: dict, link: bool) -> str:
    run, job = payload["run"], payload["job"]
    mark = {"succeeded": "✓", "recovered": "✓"}.get(payload["event"], "✗")
    text = f"{mark} task-scheduler: job {job['id']} {payload['event']} (run {run['id']})"
    if payload.get("detail"):
        text += f"\n{payload['detail'][:300]}"
    elif run.get("error"):
        text += f"\n{run['error'].splitlines()[0][:300]}"
    if link and payload.get("url"):
        text += f"\n<{payload['url']}|Open the run>"
    return text


def _mail_text(payload: dict) -> str:
    run = payload["run"]
    lines = [_summary(payload, link=False), "", *(f"{k}: {v}" for k, v in run.items()
                                                  if v is not None)]
    if payload.get("url"):
        lines += ["", payload["url"]]
    for name, tail in payload["output"].items():
        if tail:
            lines += ["", f"--- last lines of {name} ---", *tail]
    return "\n".join(lines) + "\n"


def restore_secrets(given: Any, stored: list) -> Any:
    """A notify list sent back as it was shown (secrets hidden, as the GUI's edit form and a
    GET-then-PUT do): each hidden value is taken from the stored target at the same place, when
    that target goes the same way. A secret is bound to its URL: a target whose URL changed
    gets no stored secret, and a hidden placeholder sent with it is refused."""
    if not isinstance(given, list):
        return given
    restored = []
    for index, target in enumerate(given):
        old = stored[index].model_dump() if index < len(stored) else {}
        if isinstance(target, dict) and _notify_kind(target) == _notify_kind(old):
            target = dict(target)
            for key in ("webhook", "slack"):
                if key in target and old.get(key) and target[key] == redact_target(old)[key]:
                    target[key] = old[key]
            _refuse_moved_secret(index, target, old)
            if target.get("secret") == SECRET_SHOWN:
                target["secret"] = old.get("secret")
            if isinstance(target.get("headers"), dict):
                target["headers"] = {name: old.get("headers", {}).get(name, value)
                                     if value == SECRET_SHOWN else value
                                     for name, value in target["headers"].items()}
        restored.append(target)
    return restored


def _refuse_moved_secret(index: int, target: dict, old: dict) -> None:
    if target.get("webhook") == old.get("webhook"):
        return
    hidden = [f"notify.{index}.secret"] if target.get("secret") == SECRET_SHOWN else []
    if isinstance(target.get("headers"), dict):
        hidden += [f"notify.{index}.headers.{name}" for name, value in target["headers"].items()
                   if value == SECRET_SHOWN]
    if hidden:
        message = (f"the webhook's URL changed, and a secret stays with the URL it was given for "
                   f"({target_text(old)}): give {', '.join(hidden)} again for the new URL, or "
                   f"leave them out")
        raise InvalidJob(f"{hidden[0]}: {message}",
                         [{"field": field, "message": message, "line": None} for field in hidden])
