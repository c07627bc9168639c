"""Time: UTC now, naive-UTC for the database, ISO 8601 for answers, the local zone."""

from __future__ import annotations

import datetime as dt
from typing import Optional


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _naive_utc(value: Optional[dt.datetime]) -> Optional[dt.datetime]:
    """A time as naive UTC (the database's form); beyond what datetime can hold in UTC (a
    fire time late on 9999-12-31 west of UTC, an API query's ``since``), the earliest or the
    latest time: no loop dies of an overflow, and a query past the end matches nothing."""
    if value is None or value.tzinfo is None:
        return value
    try:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    except OverflowError:
        return dt.datetime.min if value.year < 2000 else dt.datetime.max


def _iso(value: Optional[dt.datetime]) -> Optional[str]:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat()


def _aware(value) -> Optional[dt.datetime]:
    """A stored time (naive UTC, or ISO text in a live run) as an aware UTC datetime."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value is None or value.tzinfo is None:
        return value and value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def _local_zone():
    from tzlocal import get_localzone   # APScheduler's own dependency
    return get_localzone()

