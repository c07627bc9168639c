"""The store: every SQL statement of the service, in sub-stores that each own one concept and
share one Database (engine, dialect, write transaction). Callers hold a ``Store`` and name the
sub-store: ``store.runs.claim(...)``, ``store.queries.runs(...)``. It takes data and returns
rows; it calls into no other part while a write transaction is open."""

from __future__ import annotations

import sqlalchemy as sa

from .audit import AuditStore
from .after import AfterStore
from .database import Database
from .jobs import JobStore
from .liveness import RunLiveness
from .nodes import NodeStore
from .notes import NoteStore
from .queries import RunQueries
from .retention import Retention
from .runs import Admission, RunStore
from .sessions import SessionStore
from .sla import SlaStore
from .starts import StartWriter
from .users import UserStore
from .workflows import WorkflowStore

__all__ = ["Admission", "Store"]


class Store(Database):
    """The database and its sub-stores, built on one engine for one node."""

    def __init__(self, engine: sa.Engine, node: str):
        super().__init__(engine, node)
        self.jobs = JobStore(self)            # job definitions, meta, next fire times
        self.notes = NoteStore(self)          # the notifications queue
        self.workflows = WorkflowStore(self)  # steps of workflow runs, decided at each end
        self.after = AfterStore(self)         # runs queued by other runs' ends (after:)
        self.runs = RunStore(self, self.notes, self.workflows)   # insert, claim, start, end
        self.starts = StartWriter(self)       # claimed runs marked running, batch by batch
        self.liveness = RunLiveness(self, self.workflows)   # heartbeats, rescue, sweep
        self.queries = RunQueries(self)       # reads of run history
        self.nodes = NodeStore(self)          # nodes and the leader lease
        self.sessions = SessionStore(self)    # GUI sessions
        self.users = UserStore(self)          # users and their API tokens
        self.retention = Retention(self)      # pruning of history
        self.audit = AuditStore(self)         # the audit log: appended, read, pruned
        self.sla = SlaStore(self, self.runs, self.notes, self.nodes)   # breaches, pings
