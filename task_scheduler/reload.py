"""The reloader: watches the folder of jobs.yaml, debounces events, and applies a valid file
through the service; a broken edit is reported and changes nothing."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Optional

import yaml

from .errors import InvalidConfig
from .explain import _config_error_text
from .jobsfile import _node_at, _yaml_compose, read_jobs_file
from .text import _clean

if TYPE_CHECKING:
    from .service import SchedulerService

log = logging.getLogger("task_scheduler")


class Reloader:
    """Watches the folder of jobs.yaml (editors save by rename), debounces bursts of events, and
    reloads in its own thread; a slow hash poll catches what events miss (NFS, symlink swaps)."""

    def __init__(self, service: SchedulerService):
        self._service = service
        self._path = os.path.abspath(service.config.config_path)
        self._cond = threading.Condition()
        self._due: Optional[float] = None
        self._stopping = False
        self._observer = None
        self._thread = threading.Thread(target=self._loop, name="ts-reloader", daemon=True)
        self.lock = threading.Lock()   # held by SchedulerService.reload: one reload at a time

    def start(self) -> None:
        if self._service.config.watch:
            self._observer = self._watch()
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(5)
        if self._thread.is_alive():   # never started when the service failed to start
            self._thread.join(5)

    def poke(self, delay: Optional[float] = None) -> None:
        """Ask for a reload after the debounce delay (a later poke pushes it back)."""
        with self._cond:
            self._due = time.monotonic() + (self._service.config.debounce if delay is None
                                            else delay)
            self._cond.notify()

    def _watch(self):
        from watchdog.observers import Observer
        observer = Observer()
        try:
            observer.schedule(_FileEvents(self), os.path.dirname(self._path), recursive=False)
            observer.start()
        except OSError as exc:
            log.warning("cannot watch %s (%s); polling every %ss instead", self._path,
                        _clean(exc), self._service.config.poll_interval)
            return None
        return observer

    def _loop(self) -> None:
        poll = self._service.config.poll_interval
        next_poll = time.monotonic() + poll
        while self._wait(next_poll):
            next_poll = time.monotonic() + poll
            self._reload()

    def _wait(self, next_poll: float) -> bool:
        """Sleep until a poke's debounce ends or the poll is due; False when stopping. Each wake
        recomputes the deadline: Condition.wait_for would keep the first one (the slow poll)."""
        with self._cond:
            while not self._stopping:
                now = time.monotonic()
                if self._due is not None and self._due <= now:
                    self._due = None
                    return True
                if now >= next_poll:
                    return True
                self._cond.wait(min(next_poll, self._due if self._due is not None
                                    else next_poll) - now)
            return False

    def _reload(self) -> None:
        try:
            self._service.reload()
        except InvalidConfig:
            pass  # recorded and logged by reload(); the running configuration stays
        except Exception:
            log.exception("reloader: unexpected error; the running configuration is kept")


class _FileEvents:
    """A watchdog handler that only pokes the reloader; it can never raise (pitfall C5)."""

    def __init__(self, reloader: Reloader):
        self._reloader = reloader
        self._name = os.path.basename(reloader._path)

    def dispatch(self, event) -> None:
        try:
            if event.event_type not in ("created", "modified", "moved", "closed", "deleted"):
                return
            paths = (getattr(event, "dest_path", "") or "", event.src_path or "")
            if any(os.path.basename(os.fsdecode(p)) == self._name for p in paths):
                self._reloader.poke()
        except Exception:
            log.exception("reloader: bad file event %r", event)


def _api_id_conflict(records: dict, path: str, jobs: list) -> Optional[InvalidConfig]:
    """The error for jobs.yaml ids already taken by API jobs (DESIGN 5), with their lines."""
    ids = [j.id for j in jobs if j.id in records and records[j.id].source != "yaml"]
    if not ids:
        return None
    lines = _id_lines(path, ids)
    details = [{"line": lines.get(i), "job": i, "field": "id", "message": "already used by jobs "
                "created through the API: rename it here, or delete the API job"} for i in ids]
    return InvalidConfig(_config_error_text(path, details), details)


def _id_lines(path: str, ids: list) -> dict:
    """{id: line} of jobs in jobs.yaml; re-reads the file, so only for error messages."""
    try:
        root, _ = _yaml_compose(read_jobs_file(path)[0], path)
    except InvalidConfig:
        return {}   # the file changed since it validated: the next reload reports it
    items = root if isinstance(root, yaml.SequenceNode) else _node_at(root, ["jobs"])
    lines = {}
    for item in items.value if isinstance(items, yaml.SequenceNode) else []:
        for key, value in item.value if isinstance(item, yaml.MappingNode) else []:
            if key.value == "id" and value.value in ids:
                lines.setdefault(value.value, value.start_mark.line + 1)
    return lines
