"""The GUI's audit log page (``/audit``): the filters (actor, action, object), the newest
entries first in a table, and a link to the next page (keyset: older than the last entry shown).
The rendering helpers are the package's own, reached when a page is drawn (the package imports
this module while it is being set up)."""

from __future__ import annotations

from urllib.parse import urlencode

import task_scheduler_web as web

FILTERS = ("actor", "action", "object")
PAGE_SIZE = 50


def gui_audit(service) -> str:
    """The audit log, newest first, filtered; a bad cursor shows the first page."""
    filters = web._query(FILTERS)
    before = web._query(("before",))["before"]
    before = before if before and len(before) <= 32 and all(
        c in "0123456789abcdef" for c in before) else None
    page = service.audit.page(filters["actor"] or None, filters["action"] or None,
                              filters["object"] or None, before=before, limit=PAGE_SIZE)
    kept = {k: v for k, v in filters.items() if v}
    following = f"/audit?{urlencode({**kept, 'before': page['next']})}" if page["next"] else None
    return web._render("audit", nav="audit", title=web._t("title.audit"), filters=filters,
                       entries=[{**e, "detail_text": detail_text(e["detail"])}
                                for e in page["entries"]], following=following)


def detail_text(detail: dict) -> str:
    """An entry's detail in one line for the table: what changed, the params, the hash."""
    parts = []
    if detail.get("changed"):
        parts.append("changed: " + ", ".join(detail["changed"]))
    for key in ("params", "kwargs_names", "env_names", "run", "rerun_of", "asked_by", "hash"):
        value = detail.get(key)
        if value:
            parts.append(f"{key}: {value if not isinstance(value, str) else value[:16]}")
    return "; ".join(parts)


GUI_ROUTES = [("GET", "/audit", gui_audit)]
