"""Nodes and the leader lease (PostgreSQL): a node's row and heartbeat, who is alive, the lease
taken, renewed, released, and the fence that proves it inside a leader's write. Every time
compared here is the database's."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Optional

import sqlalchemy as sa

from ..errors import NotLeader, SchedulerError
from ..processes import _pid_alive
from .database import Database
from .schema import LEASE, ts_lease, ts_nodes

log = logging.getLogger("task_scheduler")


class NodeStore:
    """ts_nodes and ts_lease."""

    def __init__(self, db: Database):
        self.db = db
        self.node = db.node

    def register_node(self, values: dict, silent_for: float) -> list:
        """Add this node; refuse when a live node (another process) already has its id.
        Returns the other live nodes: (id, version, schema_version)."""
        clock = self.db.dialect
        with self.db.write() as conn:
            row = conn.execute(sa.select(ts_nodes, (ts_nodes.c.heartbeat_at > clock.ago(
                silent_for)).label("alive")).where(ts_nodes.c.id == self.node)
                .with_for_update()).first()
            if row is not None and row.alive and (row.host, row.pid) != (values["host"],
                                                                        values["pid"]) \
                    and not (row.host == values["host"] and not _pid_alive(row.pid)):
                raise SchedulerError(f"node id {self.node!r} is in use by a live node (pid "
                                     f"{row.pid} on {row.host}); give each node its own "
                                     f"--node-id (TS_NODE_ID)")
            conn.execute(ts_nodes.delete().where(ts_nodes.c.id == self.node))
            conn.execute(ts_nodes.insert().values(id=self.node, started_at=clock.now(),
                                                  heartbeat_at=clock.now(), **values))
            return [(r.id, r.version, r.schema_version) for r in conn.execute(
                sa.select(ts_nodes).where(ts_nodes.c.id != self.node,
                                          ts_nodes.c.heartbeat_at > clock.ago(silent_for)))]

    def heartbeat_node(self, role: str, running: int, config_hash: Optional[str]) -> None:
        with self.db.write(quiet=True) as conn:
            self.db.bounded(conn)
            if not conn.execute(ts_nodes.update().where(ts_nodes.c.id == self.node).values(
                    heartbeat_at=self.db.now(), role=role, running=running,
                    config_hash=config_hash)).rowcount:
                log.warning("node %s: its row was gone (pruned while silent?); joining again",
                            self.node)

    def leave(self) -> None:
        with self.db.write() as conn:
            conn.execute(ts_nodes.delete().where(ts_nodes.c.id == self.node))

    def all(self) -> list:
        """Every node's row and the seconds since its heartbeat, by the database clock."""
        with self.db.engine.connect() as conn:
            now = self.db.dialect.now_value(conn)
            return [(r, (now - r.heartbeat_at).total_seconds()) for r in conn.execute(
                sa.select(ts_nodes).order_by(ts_nodes.c.id))]

    def lease(self):
        """(holder, epoch, seconds left) of the leader lease as the database sees it now."""
        with self.db.engine.connect() as conn:
            row = conn.execute(sa.select(ts_lease.c.holder, ts_lease.c.epoch,
                                         ts_lease.c.expires_at, self.db.now().label("now"))
                               .where(ts_lease.c.name == LEASE)).first()
        if row is None or row.expires_at is None:
            return None, 0, 0.0
        return row.holder, row.epoch, (row.expires_at - row.now).total_seconds()

    def acquire_lease(self, ttl: float) -> tuple[Optional[int], dt.datetime]:
        """Take the lease when it is free or expired (each take is a new epoch); returns
        (epoch or None, database time)."""
        clock = self.db.dialect
        with self.db.write(quiet=True) as conn:
            self.db.bounded(conn)
            row = conn.execute(ts_lease.update().where(
                ts_lease.c.name == LEASE,
                sa.or_(ts_lease.c.holder.is_(None), ts_lease.c.expires_at < clock.now()))
                .values(holder=self.node, epoch=ts_lease.c.epoch + 1,
                        expires_at=clock.later(ttl), acquired_at=clock.now())
                .returning(ts_lease.c.epoch, clock.now().label("now"))).first()
            if row is not None:
                self.db.notify(conn, "ts_lease")
        return (row.epoch, row.now) if row else (None, self.db.db_time())

    def renew_lease(self, epoch: int, ttl: float) -> Optional[dt.datetime]:
        """Extend the lease held with ``epoch``; the database time, or None when lost."""
        clock = self.db.dialect
        with self.db.write(quiet=True) as conn:
            self.db.bounded(conn)
            row = conn.execute(ts_lease.update().where(
                ts_lease.c.name == LEASE, ts_lease.c.holder == self.node,
                ts_lease.c.epoch == epoch, ts_lease.c.expires_at > clock.now())
                .values(expires_at=clock.later(ttl))
                .returning(clock.now().label("now"))).first()
        return row.now if row else None

    def release_lease(self, epoch: int) -> None:
        """Hand the lease back at once (a graceful stop): the others take it without waiting."""
        with self.db.write() as conn:
            self.db.bounded(conn)
            if conn.execute(ts_lease.update().where(
                    ts_lease.c.name == LEASE, ts_lease.c.holder == self.node,
                    ts_lease.c.epoch == epoch).values(holder=None, expires_at=None)).rowcount:
                self.db.notify(conn, "ts_lease")

    def fence(self, conn, epoch: Optional[int]) -> None:
        """Inside a leader's write: prove the lease is still ours with ``epoch``. The row lock
        (FOR SHARE) makes a takeover wait for this transaction, or this one see the takeover.
        One node (SQLite) has no lease to prove; on PostgreSQL no epoch proves nothing."""
        if not self.db.clustered:
            return
        if epoch is None:   # stepped down while this write was built: it must not commit
            raise NotLeader(f"node {self.node} does not lead")
        held = conn.execute(sa.select(ts_lease.c.epoch).where(
            ts_lease.c.name == LEASE, ts_lease.c.holder == self.node, ts_lease.c.epoch == epoch,
            ts_lease.c.expires_at > self.db.now()).with_for_update(read=True)).first()
        if held is None:
            raise NotLeader(f"node {self.node} no longer holds the lease of epoch {epoch}")
