"""Promises kept (issue 26): the leader's watch over jobs' ``sla`` (``late``, ``long_running``)
and heartbeat jobs (``overdue``), and the pings that heartbeat jobs receive. It decides breaches
on the database's clock and hands them to the store, which records each once with its
notifications (sent later by the Notifier); it sends nothing and runs no SQL itself."""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Optional

from .errors import JobConflict, NotLeader
from .loops import SupervisedLoop
from .models import duration_seconds, run_to_dict
from .output import CappedOutput
from .store.schema import new_run_id
from .timeutil import _aware, _iso, _naive_utc

if TYPE_CHECKING:
    from .audit import AuditLog
    from .book import JobBook, JobRecord
    from .cluster import Cluster
    from .config import Config
    from .notify import Notifier
    from .runner import Runner
    from .store import Store

log = logging.getLogger("task_scheduler")
LATE_TRIGGERS = ("schedule", "catchup")   # fires of a schedule: what start_within promises


class Promises:
    """This node's part in promises kept: the watch (acting while the node leads) and the desk
    that takes pings. The API, the guard and the GUI call it through the service."""

    def __init__(self, config: Config, store: Store, book: JobBook, notifier: Notifier,
                 runner: Runner, cluster: Cluster, *, now: Callable[[], dt.datetime],
                 audit: AuditLog):
        new_id = lambda: new_run_id(cluster.offset)   # noqa: E731  (the database's clock)
        self.store = store
        self.watch = SlaWatch(config, store, book, notes_for=notifier.breach_notes,
                              leading=cluster.leads, epoch=lambda: cluster.epoch, new_id=new_id)
        self.desk = PingDesk(config, store, book, notes_for=notifier.notes_for,
                             wants_previous=notifier.wants_previous,
                             mask_for=lambda job_id: runner.mask_for(job_id).bytes, now=now,
                             new_id=new_id, audit=audit)
        self._now = now
        self.start, self.stop, self.check = self.watch.start, self.watch.stop, self.watch.check
        self.ping, self.new_token = self.desk.ping, self.desk.new_token
        self.token_valid = self.desk.token_valid

    def recent(self, within: float = 86400, limit: int = 50) -> list[dict]:
        """Breaches detected in the last ``within`` seconds, newest first (times ISO, UTC)."""
        since = self._now() - dt.timedelta(seconds=within)
        return [{**row._mapping, "due_at": _iso(row.due_at), "detected_at": _iso(row.detected_at)}
                for row in self.store.sla.recent(since, limit)]


class SlaWatch:
    """Each ``config.sla_every`` seconds, while this node leads: the queued and running runs of
    jobs with an ``sla`` and the newest run of each heartbeat job are read; what broke a
    promise becomes a breach, recorded in one fenced transaction with its notifications (the
    unique key (job, event, subject) makes a breach once, whoever looks again: this node next
    round, or a new leader after a failover; a breach recorded is never lost, its notices are
    in the queue the next leader sends)."""

    def __init__(self, config: Config, store: Store, book: JobBook, *,
                 notes_for: Callable[[str, dict, str], list], leading: Callable[[], bool],
                 epoch: Callable[[], Optional[int]], new_id: Callable[[], str]):
        self.config, self.store, self.book = config, store, book
        self._notes_for, self._leading, self._epoch, self._new_id = notes_for, leading, epoch, \
            new_id
        self._loop = SupervisedLoop("sla", "ts-sla", self.check, lambda: config.sla_every)

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop(5)

    def check(self) -> list[dict]:
        """One look; the breaches recorded by it (none when this node does not lead)."""
        if not self._leading():
            return []
        promised = {i: r for i, r in self.book.records.items()
                    if r.facts.promises and r.facts.enabled}
        watched = {i: r for i, r in self.book.records.items()
                   if r.watched and r.state == "scheduled"}
        if not promised and not watched:
            return []   # nothing promised: not a statement a second for nothing
        now, rows = self.store.sla.open_runs(list(promised))
        found = [b for row in rows if row.job_id in promised
                 for b in _run_breaches(promised[row.job_id], dict(row._mapping), now)]
        last = self.store.queries.last_runs(list(watched)) if watched else {}
        for job_id, rec in watched.items():
            found += self._overdue(rec, last.get(job_id), now)
        return self._record(found, now) if found else []

    def _overdue(self, rec: JobRecord, last: Optional[dict], now: dt.datetime) -> list:
        """A heartbeat job silent for ``every + grace`` since its last ping (or since it was
        added): a ``missed`` run of trigger ``heartbeat`` records the silence in its history,
        at the time the ping was expected."""
        if last and last["trigger"] == "heartbeat":
            return []   # told already; the next ping ends the silence
        spec = rec.definition.trigger
        since = _naive_utc(_aware(last["scheduled_at"])) if last else rec.created_at
        every, grace = duration_seconds(spec.every), duration_seconds(spec.grace)
        if now < since + dt.timedelta(seconds=every + grace):
            return []
        expected = since + dt.timedelta(seconds=every)
        what = "the last ping" if last else "the job was added"
        grace = f" with a grace of {spec.grace}" if spec.grace else ""
        detail = (f"no ping since {_utc_text(since)} ({what}): one was expected by "
                  f"{_utc_text(expected)}, every {spec.every}{grace}")
        run = {"id": self._new_id(), "job_id": rec.definition.id, "trigger": "heartbeat",
               "attempt": 1, "scheduled_at": expected, "due_at": expected, "status": "missed",
               "finished_at": now, "error": detail}
        return [("overdue", since.isoformat(), run, expected, detail, True)]

    def _record(self, found: list, now: dt.datetime) -> list[dict]:
        breaches, rows, notes = [], [], {}
        for event, subject, run, due, detail, new_row in found:
            breach = {"id": self._new_id(), "job_id": run["job_id"], "event": event,
                      "subject": subject, "run_id": run["id"], "due_at": due,
                      "detected_at": now, "detail": detail}
            breaches.append(breach)
            notes[breach["id"]] = self._notes_for(event, run, detail)
            if new_row:
                rows.append(run)
        try:
            recorded = self.store.sla.record(breaches, rows, notes, self._epoch())
        except NotLeader as exc:   # the lease moved on: the new leader looks again
            log.info("sla: not recorded, %s", exc)
            return []
        for breach in recorded:
            log.warning("job %s: %s: %s (run %s)", breach["job_id"], breach["event"],
                        breach["detail"], breach["run_id"])
        return recorded


def _utc_text(moment: dt.datetime) -> str:
    """A stored (naive UTC) time for a message: to the second, the zone named."""
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def _run_breaches(rec: JobRecord, run: dict, now: dt.datetime) -> list:
    """``late``: a fire of its schedule not started ``start_within`` after its time;
    ``long_running``: a run going on ``max_duration`` after its start."""
    sla, found = rec.definition.sla, []
    if sla.start_within is not None and run["trigger"] in LATE_TRIGGERS:
        due = run["scheduled_at"] + dt.timedelta(seconds=duration_seconds(sla.start_within))
        started = run["started_at"]
        if now >= due and (started is None or started > due):
            detail = (f"not started {sla.start_within} after its time "
                      f"{_utc_text(run['scheduled_at'])} (start_within)")
            found.append(("late", run["scheduled_at"].isoformat(), run, due, detail, False))
    if sla.max_duration is not None and run["status"] == "running" and run["started_at"]:
        due = run["started_at"] + dt.timedelta(seconds=duration_seconds(sla.max_duration))
        if now >= due:
            detail = (f"still running {sla.max_duration} after its start "
                      f"{_utc_text(run['started_at'])} (max_duration); it goes on")
            found.append(("long_running", run["id"], run, due, detail, False))
    return found


class PingDesk:
    """Pings of heartbeat jobs, and their tokens. A ping is an ended run (trigger ``ping``):
    ``succeeded``, or ``failed`` when it says ``status=fail``, its body the run's output
    (capped and masked as any run's output), its end notified as any run's end. A job's ping
    token may ping that job and do nothing else; only its hash is kept, it is shown once."""

    def __init__(self, config: Config, store: Store, book: JobBook, *,
                 notes_for: Callable[[list, Optional[str]], list],
                 wants_previous: Callable[[str], bool], mask_for: Callable[[str], Callable],
                 now: Callable[[], dt.datetime], new_id: Callable[[], str], audit: AuditLog):
        self.config, self.store, self.book, self.audit = config, store, book, audit
        self._notes_for, self._wants_previous, self._mask_for = notes_for, wants_previous, \
            mask_for
        self._now, self._new_id = now, new_id

    def ping(self, job_id: str, failed: bool, body: bytes) -> dict:
        rec = self._heartbeat(job_id)
        out = CappedOutput(self.config.output_limit)
        out.write(self._mask_for(job_id)(body))
        now = self._now()
        run = {"id": self._new_id(), "job_id": job_id, "trigger": "ping", "attempt": 1,
               "scheduled_at": now, "due_at": now, "started_at": now, "finished_at": now,
               "status": "failed" if failed else "succeeded", "stdout": out.text(),
               "stderr": "", "truncated": out.truncated, "run_on": rec.run_on,
               "error": "the ping said status=fail" if failed else None}
        previous = None
        if self._wants_previous(job_id):
            last = self.store.queries.last_runs([job_id]).get(job_id)
            previous = last["status"] if last else None
        self.store.sla.record_ping(run, self._notes_for([run], previous))
        return run_to_dict(run)

    def new_token(self, job_id: str) -> dict:
        """Create (or rotate: the old one stops working) the job's ping token; the answer is
        the only time it is shown."""
        self._heartbeat(job_id)
        token = "tsp_" + secrets.token_urlsafe(24)
        with self.audit.attached("job.ping_token", ("job", job_id)):
            self.store.sla.set_ping_token(job_id, token)
        return {"job_id": job_id, "token": token, "ping": f"/api/jobs/{job_id}/ping",
                "note": "shown once: only its hash is kept; POST /ping-token again to replace it"}

    def token_valid(self, job_id: str, token: str) -> bool:
        return bool(token) and self.store.sla.ping_token_matches(job_id, token)

    def _heartbeat(self, job_id: str) -> JobRecord:
        rec = self.book.require(job_id)
        if not rec.watched:
            raise JobConflict(f"job {job_id!r} is not a heartbeat job (trigger type "
                              f"heartbeat): only those take pings")
        return rec
