"""The scheduler: APScheduler 3 as the leader's clock. Each fire becomes queued runs in the store
(or a missed row), never a call of the job itself. It must not hold the service nor run a job."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import logging
import threading
import types
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Optional

import sqlalchemy as sa
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_RUNNING

from .calendars import job_trigger
from .errors import NotLeader
from .models import JobDefinition
from .text import _clean
from .timeutil import _iso, _naive_utc

if TYPE_CHECKING:
    from .book import JobBook, JobRecord
    from .store.schedules import ScheduleStore

log = logging.getLogger("task_scheduler")


@dataclasses.dataclass(frozen=True)
class SchedulerParts:
    """What the scheduler is given: the schedule's store, the job book, the cluster's clock
    (aware, the database's) and lease (``may_fire``; ``lost`` when a write was fenced off),
    new run ids, the notices of missed fires, and the runner's entry points for the fires
    (``admission_for`` before the commit, ``take`` after it, ``wake`` for the rest)."""

    store: ScheduleStore
    book: JobBook
    now: Callable[[], dt.datetime]
    may_fire: Callable[[], bool]
    lost: Callable[[str], None]
    new_id: Callable[[], str]
    notes_for: Callable[[list], list]
    admission_for: Callable[[list], Any]
    take: Callable[[list, list], None]
    wake: Callable[[], None]


class _Scheduler(BackgroundScheduler):
    """APScheduler's loop, run by the leader only. Each wakeup applies the job changes asked
    for, turns due fires into rows (queued; or missed, saying why: past the grace, or coalesced
    into a later fire, never a silent gap) and commits both with the schedule in one fenced
    transaction. It fires on the database's clock. A database error does not end the loop
    (pitfall A8): the wakeup is retried from the stored state. It holds no service: what it
    uses is given (SchedulerParts)."""

    retry_wait = 2.0
    max_wait = 3600.0   # the longest sleep: a wait of centuries overflows the thread's timer

    def __init__(self, parts: SchedulerParts, **kwargs):
        super().__init__(jobstores={"default": parts.store}, **kwargs)
        self._p, self._store, self._book = parts, parts.store, parts.book
        self.last_error: Optional[str] = None
        self.leading_since: Optional[dt.datetime] = None
        self._asked: set = set()
        self._asked_all = False
        self._waiters: list = []
        self._asked_lock = threading.Lock()
        self._broken: dict[str, tuple] = {}   # id -> (definition hash, reason) last recorded

    def lead(self, epoch: Optional[int]) -> threading.Event:
        """Fire from now on: the schedule is read afresh from the table and checked against
        every job definition before the first fire (the event: that is done)."""
        self._store.epoch = epoch
        self._store.invalidate()
        self.leading_since = _naive_utc(self._p.now())
        self.resume()
        return self.ask(None)

    def step_down(self) -> None:
        if self.state == STATE_RUNNING:
            self.pause()
        self._store.epoch = None
        self._store.invalidate()
        self._release_waiters()

    def ask(self, ids: Optional[Iterable] = None) -> threading.Event:
        """Make APScheduler's jobs match these definitions (all when None) at the next wakeup,
        which comes at once; the event is set when that wakeup has committed."""
        done = threading.Event()
        with self._asked_lock:
            if ids is None:
                self._asked_all = True
            else:
                self._asked.update(ids)
            self._waiters.append(done)
        if self.state == STATE_RUNNING:
            self.wakeup()
        else:
            done.set()   # not leading: the leader applies it
        return done

    def alive(self) -> bool:
        thread = getattr(self, "_thread", None)
        return self.running and thread is not None and thread.is_alive()

    def _process_jobs(self):
        if self.state != STATE_RUNNING:
            return None
        if not self._p.may_fire():
            return 0.2   # not renewed lately: fire nothing until it is (or this node steps down)
        try:
            wait = self._wakeup()
        except NotLeader as exc:
            self._forget()
            self._p.lost(str(exc))
            return None
        except Exception as exc:
            self._forget()
            self.last_error = f"{type(exc).__name__}: {_clean(exc)}"
            log.error("scheduler loop: %s; retrying in %ss", self.last_error, self.retry_wait)
            return self.retry_wait
        self.last_error = None
        return wait

    def _wakeup(self) -> Optional[float]:
        epoch = self._store.epoch   # the lease this wakeup fires under, to the end
        now = self._p.now().astimezone(self.timezone)
        self._store.now = now   # what a schedule computed in this wakeup is computed at
        with self._asked_lock:
            ids, everything, waiters = self._asked, self._asked_all, self._waiters
            self._asked, self._asked_all, self._waiters = set(), False, []
        try:
            with self._jobstores_lock:
                if everything:
                    ids = set(self._store.ids()) | set(self._book.records)
                self._store.preload([i for i in ids if not self._in_step(i)])
                fires: list = []
                for job_id in sorted(ids):
                    try:
                        self._sync(job_id, now)
                    except _LOOP_ERRORS:
                        raise
                    except Exception as exc:
                        fires += self._set_aside(job_id, None, now, exc)
                # A burst is recorded a chunk per wakeup, each committed and started before
                # the next is computed (what is left stays due: the next wakeup is at once):
                # the first of 1,000 fires started after all 1,000 were written (~75 ms).
                for job in self._store.get_due_jobs(now, FIRE_CHUNK):
                    try:
                        fires += self._fire(job, now)
                    except _LOOP_ERRORS:
                        raise
                    except Exception as exc:
                        fires += self._set_aside(job.id, job.next_run_time, now, exc)
                missed = [row for row in fires if row["status"] == "missed"]
                inserted, started = self._store.commit(
                    fires, self._p.notes_for(missed), self._p.admission_for(fires), epoch)
                next_time = self._store.get_next_run_time()
        except Exception:
            with self._asked_lock:   # ask again after the retry; release the callers now
                self._asked.update(ids)
                self._asked_all = self._asked_all or everything
            raise
        finally:
            for done in waiters:
                done.set()
        if started:
            self._p.take(started, [])
        if len(inserted) > len(started):
            self._p.wake()   # what this node did not take: its next claim
        if next_time is None:
            return None
        return min(max((next_time - self._p.now()).total_seconds(), 0.0),
                   self.max_wait)

    def _set_aside(self, job_id: str, moment: Optional[dt.datetime], now: dt.datetime,
                   exc: Exception) -> list[dict]:
        """One job's schedule could not be computed (its trigger raised): it is logged, taken
        off the schedule and recorded once as a missed fire saying why, and the other jobs fire
        on. A new definition of it (or the next start) schedules it again."""
        reason = (f"not scheduled: its trigger failed ({type(exc).__name__}: {_clean(exc)}); "
                  f"it is scheduled again when its definition changes")
        log.error("job %s: %s", job_id, reason, exc_info=exc)
        if self._store.stamp(job_id)[0]:
            self._store.remove_job(job_id)
        rec = self._book.get(job_id)
        if rec is None or self._broken.get(job_id) == (rec.hash, reason):
            return []
        self._broken[job_id] = (rec.hash, reason)
        return [self._row(types.SimpleNamespace(id=job_id), moment or now, rec, "missed",
                          reason)]

    def _forget(self) -> None:
        """After a failed commit: memory is ahead of the table; read it again, check it all."""
        self._store.invalidate()
        with self._asked_lock:
            self._asked_all = True

    def _release_waiters(self) -> None:
        with self._asked_lock:
            waiters, self._waiters = self._waiters, []
        for done in waiters:
            done.set()

    def _sync(self, job_id: str, now: dt.datetime) -> None:
        """Make APScheduler's job match its definition: add, rebuild, pause or remove it."""
        rec = self._book.get(job_id)
        if self._in_step(job_id):
            return   # every job on a restart: unpickling 10,000 jobs took seconds
        job = self._store.lookup_job(job_id) if self._store.stamp(job_id)[0] else None
        if rec is None or not rec.facts.enabled or rec.state == "manual" or rec.watched:
            if job is not None:
                self._store.remove_job(job_id)
            return
        want = rec.schedule_hash(self.timezone)
        if job is None:
            trigger = job_trigger(rec.definition, self.timezone, rec.rules, now)
            first = None if rec.paused else trigger.get_next_fire_time(None, now)
            if first is not None or (rec.paused and not rec.finished()):
                self._store.hashes[job_id] = want
                self.add_job(EXECUTE_JOB, trigger=trigger, args=[job_id], id=job_id,
                             name=job_id, next_run_time=first, **_aps_options(rec.definition))
            return
        if self._store.hashes.get(job_id) != want:
            self._rebuild(rec, job, want, now)
        elif rec.paused != (job.next_run_time is None) and job_id not in self._store.done:
            first = None if rec.paused else job.trigger.get_next_fire_time(None, now)
            if first is None and not rec.paused:
                self._store.remove_job(job_id)   # resumed after its only fire time
            else:
                self.modify_job(job_id, next_run_time=first)

    def _in_step(self, job_id: str) -> bool:
        """Does the stored schedule match the definition (known without unpickling)?"""
        rec = self._book.get(job_id)
        stored, stamp = self._store.stamp(job_id)
        return stored and rec is not None and rec.facts.enabled and \
            rec.state != "manual" and not rec.watched and (rec.paused == (stamp is None) or
                                       job_id in self._store.done) and \
            self._store.hashes.get(job_id) == rec.schedule_hash(self.timezone)

    def _rebuild(self, rec: JobRecord, job, want: str, now: dt.datetime) -> None:
        """A changed definition: a new schedule starts from now; the same schedule on today's
        trigger code keeps its next fire time (and so its phase); options change in place."""
        have = (self._store.hashes.get(rec.id) or "").split(":")
        new_def, new_spec, new_code = want.split(":")
        changes = _aps_options(rec.definition)
        trigger = job_trigger(rec.definition, self.timezone, rec.rules, now)
        if len(have) == 3 and have[1] != new_spec:
            first = None if rec.paused else trigger.get_next_fire_time(None, now)
            if first is None and not rec.paused:
                self._store.remove_job(job.id)
                return
            self._store.done.discard(job.id)   # a new schedule: fire times again
            changes.update(trigger=trigger, next_run_time=first)
        else:
            if len(have) != 3 or have[2] != new_code:   # stored by older code (or before v2)
                changes["trigger"] = trigger
            if rec.paused != (job.next_run_time is None) and job.id not in self._store.done:
                changes["next_run_time"] = None if rec.paused else trigger.get_next_fire_time(
                    None, now)
        self._store.hashes[job.id] = want
        self.modify_job(job.id, **changes)

    def _fire(self, job, now: dt.datetime) -> list[dict]:
        """The rows of a due job's fire times, and its schedule moved past them."""
        times, left_out, following = _due_times(job, now)
        rec = self._book.get(job.id)
        skip_reason = getattr(job.trigger, "skip_reason", None)   # a calendar's holiday
        skipped = {t: why for t in times if skip_reason and (why := skip_reason(t))}
        rows = [self._row(job, t, rec, "skipped", why) for t, why in skipped.items()]
        times = [t for t in times if t not in skipped]
        if job.coalesce and len(times) > 1:
            reason = f"coalesced: the fire at {_iso(times[-1])} ran in its place"
            rows += [self._row(job, t, rec, "missed", reason) for t in times[:-1]]
            times = times[-1:]
        for moment in times:
            late = (now - moment).total_seconds()
            if job.misfire_grace_time is not None and late > job.misfire_grace_time:
                rows.append(self._row(job, moment, rec, "missed", f"missed by {late:.1f}s "
                                      f"(misfire_grace_time {job.misfire_grace_time:g}s)"))
            else:
                rows.append(self._row(job, moment, rec, "queued", None))
        if left_out:
            rows[0]["error"] += f"; and {left_out} earlier fire times were missed as well"
        if following is None:
            self._store.finish_job(job)
        else:
            self._store.move_job(job, following)
        return rows

    def _row(self, job, moment: dt.datetime, rec: Optional[JobRecord], status: str,
             error: Optional[str]) -> dict:
        scheduled = _naive_utc(moment)
        late_start = self.leading_since is not None and scheduled < self.leading_since
        row = {"id": self._p.new_id(), "job_id": job.id,
               "status": status, "attempt": 1,
               "trigger": "catchup" if late_start and status == "queued" else "schedule",
               "scheduled_at": scheduled, "due_at": scheduled, "error": error,
               "epoch": self._store.epoch, "run_on": rec.run_on if rec else ""}
        if status != "queued":
            row["finished_at"] = _naive_utc(self._p.now())
        return row


EXECUTE_JOB = "task_scheduler:execute_job"
FIRE_CHUNK = 250   # jobs fired per wakeup at most (a burst is written and started in chunks)
# The loop's own errors end a wakeup (retried from the table, or the node steps down); any other
# error while scheduling a job is that job's, which is set aside while the others fire on.
_LOOP_ERRORS = (sa.exc.SQLAlchemyError, NotLeader)
MAX_MISSED_ROWS = 100   # missed fire times recorded one by one per job and wakeup; more are
#                         counted in the first row (a job every second, down for a day)


def _due_times(job, now: dt.datetime, limit: int = 100_000) -> tuple[list, int, Any]:
    """The fire times of ``job`` due by ``now`` (the last MAX_MISSED_ROWS + 1 of them), how many
    more were due, and the next fire time after them. After ``limit`` steps behind, the next
    fire time is taken from now on (APScheduler would walk every missed time)."""
    times: collections.deque = collections.deque(maxlen=MAX_MISSED_ROWS + 1)
    current, count = job.next_run_time, 0
    while current is not None and current <= now and count < limit:
        times.append(current)
        count += 1
        current = job.trigger.get_next_fire_time(current, now)
    if current is not None and current <= now:
        current = job.trigger.get_next_fire_time(None, now)
    return list(times), count - len(times), current


def _aps_options(defn: JobDefinition) -> dict:
    return dict(max_instances=defn.max_instances, coalesce=defn.coalesce,
                misfire_grace_time=defn.misfire_grace_time)
