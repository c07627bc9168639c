"""The SQLite lock file: one scheduler per SQLite database. It must not touch the database."""

from __future__ import annotations

import fcntl
import os
from typing import IO, Optional

from .errors import SchedulerError
from .store.schema import _sqlite_path


def lock_sqlite(database_url: str, node: str) -> Optional[IO]:
    """Two schedulers on one SQLite store run every job twice (pitfall A1): refuse. Returns the
    open lock file (held until closed), or None for a database that is not SQLite."""
    path = _sqlite_path(database_url)
    if path is None:
        return None
    lockfile = open(path + ".lock", "a+")
    try:
        fcntl.flock(lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lockfile.seek(0)
        holder = lockfile.read().strip() or "another process"
        lockfile.close()
        raise SchedulerError(f"database {path} is already used by a running task-scheduler "
                             f"({holder}); only one scheduler may use a SQLite database "
                             f"(use PostgreSQL for several nodes)") from None
    lockfile.truncate(0)
    lockfile.write(f"pid {os.getpid()} on {node}\n")
    lockfile.flush()
    return lockfile
