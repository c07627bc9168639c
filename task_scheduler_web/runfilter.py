"""The runs page's filter form: what a person typed (times in the page's zone, a trigger, a node,
a phrase to find in the output) read into ``service.runs`` arguments, with a message for each
value that cannot be used (that filter is left out, the page still answers). It also splits a
run's matching line around the phrase for the template, which only escapes and prints."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo

from task_scheduler.models import RUN_TRIGGERS
from task_scheduler.store.schema import SEARCH_MAX, SEARCH_MIN  # noqa: F401 (the page says it)

FIELDS = ("job_id", "status", "trigger", "node", "since", "until", "q")


def read_filters(filters: dict[str, str], zone: tzinfo, t) -> tuple[dict, dict[str, str]]:
    """(keyword arguments for ``service.runs``, {field: message} for values left out)."""
    query: dict = {"job_id": filters["job_id"] or None, "status": filters["status"] or None}
    problems: dict[str, str] = {}
    if filters["trigger"] in RUN_TRIGGERS:
        query["trigger"] = filters["trigger"]
    elif filters["trigger"]:
        problems["trigger"] = t("runs.bad_trigger", value=filters["trigger"])
    query["node"] = filters["node"] or None
    for name in ("since", "until"):
        query[name] = _time(filters[name], zone)
        if filters[name] and query[name] is None:
            problems[name] = t("runs.bad_time", value=filters[name])
    if query["since"] and query["until"] and query["until"] < query["since"]:
        problems["until"], query["until"] = t("runs.until_before"), None
    if len(filters["q"]) > SEARCH_MAX:
        problems["q"] = t("runs.too_long", max=SEARCH_MAX)
    else:
        query["q"] = filters["q"] or None
    return query, problems


def _time(text: str, zone: tzinfo):
    """A datetime-local value (or any ISO 8601 time) as naive UTC; None when it is not one."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(UTC).replace(tzinfo=None)


def match_parts(runs: list[dict]) -> None:
    """Each run's matching line as (before, the phrase, after): the template marks the middle."""
    for run in runs:
        found = run.get("match")
        if found:
            start, end = found["start"], found["start"] + found["length"]
            found["parts"] = (found["line"][:start], found["line"][start:end],
                              found["line"][end:])
