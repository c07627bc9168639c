"""The bus: PostgreSQL LISTEN/NOTIFY between the nodes of a cluster (a no-op on SQLite), so a
queued run or a changed job reaches the other nodes at once instead of at their next poll."""

from __future__ import annotations

import collections
import json
import logging
import secrets
import threading
from typing import TYPE_CHECKING, Optional

import sqlalchemy as sa

from .text import _clean

if TYPE_CHECKING:
    from .store import Store

log = logging.getLogger("task_scheduler")


class Bus:
    """Tells this process what changed: its own commits at once, other nodes' through
    PostgreSQL LISTEN/NOTIFY on a connection of its own. Each time that connection is made (at
    start, and back after a loss) every subscriber hears ``None``: notifications sent before
    it listened were missed."""

    CHANNELS = ("ts_jobs", "ts_runs", "ts_lease", "ts_notes")
    POLL = 1.0   # seconds between looks at the stop flag while no notification comes

    def __init__(self, store: Store):
        self._store = store
        self._subscribers: dict[str, list] = collections.defaultdict(list)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="ts-listen", daemon=True)
        self._prefix = ""
        self._listening = threading.Event()
        # A channel of this listener's own: stop() notifies it, so the listener ends now rather
        # than at its next look (notifies() waits up to a second; ~0.9 s of every stop).
        self._wake_channel = f"ts_wake_{secrets.token_hex(8)}"
        store.on_commit.append(self.deliver)

    def subscribe(self, channel: str, callback) -> None:
        self._subscribers[channel].append(callback)

    def deliver(self, channel: str, payload: Optional[dict]) -> None:
        for callback in self._subscribers.get(channel, ()):
            try:
                callback(payload)
            except Exception:
                log.exception("bus: a %s subscriber failed", channel)

    def start(self, timeout: float = 10.0) -> None:
        """Listen; returns once LISTEN holds, so that what is read afterwards misses no change
        (later ones are announced)."""
        if self._store.clustered:
            self._thread.start()
            if not self._listening.wait(timeout):
                log.warning("bus: not listening yet after %gs; changes made meanwhile on other "
                            "nodes are taken in once it is", timeout)

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._wake_listener()
            self._thread.join(3)

    def _wake_listener(self) -> None:
        try:
            with self._store.engine.connect() as conn:
                conn.execute(sa.text(f'NOTIFY "{self._wake_channel}"'))
                conn.commit()
        except sa.exc.DBAPIError as exc:   # the database is away: the listener's poll ends it
            log.debug("bus: could not wake the listener (%s)", _clean(exc))

    def _listen(self) -> None:
        import psycopg
        delay = 0.5
        while not self._stopping.is_set():
            try:
                with psycopg.connect(_conninfo(self._store.engine), autocommit=True) as conn:
                    self._prefix = self._store.channel_prefix
                    for channel in self.CHANNELS:
                        conn.execute(f'LISTEN "{self._prefix}{channel}"')
                    conn.execute(f'LISTEN "{self._wake_channel}"')
                    self._listening.set()
                    for channel in self.CHANNELS:   # whatever happened before, look again
                        self.deliver(channel, None)
                    delay = 0.5
                    while not self._stopping.is_set():
                        for note in conn.notifies(timeout=self.POLL):
                            if self._stopping.is_set():
                                break
                            self._received(note.channel, note.payload)
            except Exception as exc:   # psycopg.Error, OSError: the server or network went away
                if self._stopping.is_set():
                    return
                log.warning("bus: LISTEN connection lost (%s); reconnecting in %ss", _clean(exc),
                            delay)
                self._stopping.wait(delay)
                delay = min(delay * 2, 10)

    def _received(self, channel: str, text: str) -> None:
        try:
            payload = json.loads(text)
        except ValueError:
            payload = None
        if isinstance(payload, dict) and payload.get("node") == self._store.node:
            return   # this node's own commit, delivered when it committed
        self.deliver(channel.removeprefix(self._prefix), payload)


def _conninfo(engine: sa.Engine) -> str:
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
