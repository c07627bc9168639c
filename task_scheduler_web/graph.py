"""The step graph of a workflow as numbers for an SVG template (``_step_graph.tpl``): drawn on
the server, no script and no CDN. Steps stand in columns by longest path (a step one column
right of its latest dependency), ordered in each column by where their dependencies stand (so
edges cross less), boxes coloured by status with the classes of the status badges, arrows from
each dependency to its step.

``layout`` is pure: steps in, geometry out. A graph arrives already validated (a cycle is a
validation error), but a cycle here must not hang the page: the steps of one are put in the
column after the others, their back edges drawn all the same."""

from __future__ import annotations

from typing import Any, Optional

BOX_W, BOX_H = 168, 34     # px: an 18-character id in the monospace font at 12 px, a glyph
COL_GAP, ROW_GAP = 46, 14  # px between columns (room for an arrow) and between boxes
PAD = 6                    # px around the drawing: the arrows' heads and the focus ring
MAX_LABEL = 18             # characters of an id shown in a box; the whole id is its tooltip
MAX_STEPS = 500            # drawn at most: a bigger graph says so instead (a page stays light)
GLYPHS = {"succeeded": "✓", "failed": "✗", "timeout": "◔", "running": "▶", "queued": "…",
          "interrupted": "⚠", "missed": "○", "skipped": "↷", "cancelled": "⊘"}   # the badges'


def layout(steps: list[dict]) -> Optional[dict]:
    """``steps``: ``[{"id", "after": [ids], "status"?, "href"?}]`` (ids after: that are not
    steps are left out). Returns ``{"width", "height", "nodes", "edges", "more"}`` for the
    template, or None for no steps."""
    steps = [s for s in steps if isinstance(s, dict) and s.get("id") is not None][:MAX_STEPS]
    if not steps:
        return None
    ids = list(dict.fromkeys(str(s["id"]) for s in steps))
    given = {str(s["id"]): s for s in steps}
    after = {i: [str(a) for a in (given[i].get("after") or []) if str(a) in given and
                 str(a) != i] for i in ids}
    columns = _columns(_layers(ids, after), after, ids)
    places = {i: (c, r) for c, column in enumerate(columns) for r, i in enumerate(column)}
    rows = max(len(column) for column in columns)
    nodes = [_node(given[i], *places[i], rows, len(columns[places[i][0]])) for i in ids]
    at = {n["id"]: n for n in nodes}
    edges = [_edge(at[a], at[i]) for i in ids for a in after[i]]
    return {"width": len(columns) * (BOX_W + COL_GAP) - COL_GAP + 2 * PAD,
            "height": rows * (BOX_H + ROW_GAP) - ROW_GAP + 2 * PAD,
            "nodes": nodes, "edges": edges, "more": max(0, len(steps) - MAX_STEPS)}


def _layers(ids: list[str], after: dict[str, list[str]]) -> dict[str, int]:
    """Each step's column: 0 without dependencies, else one past its latest dependency's
    (Kahn's order, so each step is looked at once). Steps left in a cycle go one past all."""
    waiting = {i: len(after[i]) for i in ids}
    followers: dict[str, list[str]] = {i: [] for i in ids}
    for i in ids:
        for a in after[i]:
            followers[a].append(i)
    ready = [i for i in ids if not waiting[i]]
    layer: dict[str, int] = {}
    while ready:
        step = ready.pop(0)
        layer[step] = 1 + max((layer[a] for a in after[step]), default=-1)
        for follower in followers[step]:
            waiting[follower] -= 1
            if not waiting[follower]:
                ready.append(follower)
    last = max(layer.values(), default=-1)
    return {i: layer.get(i, last + 1) for i in ids}


def _columns(layer: dict[str, int], after: dict[str, list[str]], ids: list[str]) -> list:
    """The steps of each column, each column ordered by the mean row of the step's
    dependencies in earlier columns (the barycentre heuristic, one pass), else as given."""
    columns: list[list[str]] = [[] for _ in range(max(layer.values()) + 1)]
    for i in ids:
        columns[layer[i]].append(i)
    given = {i: n for n, i in enumerate(ids)}
    row = {i: r for r, i in enumerate(columns[0])}
    for column in columns[1:]:
        keys = {}
        for step in column:
            placed = [row[a] for a in after[step] if a in row]
            keys[step] = (sum(placed) / len(placed) if placed else len(row), given[step])
        column.sort(key=keys.__getitem__)
        row.update({i: r for r, i in enumerate(column)})
    return columns


def _node(step: dict, column: int, row: int, rows: int, in_column: int) -> dict:
    """A box; a shorter column is centred against the tallest."""
    text = str(step["id"])
    top = (rows - in_column) * (BOX_H + ROW_GAP) / 2
    status = step.get("status")
    return {"id": text, "label": text if len(text) <= MAX_LABEL else text[:MAX_LABEL - 1] + "…",
            "clipped": len(text) > MAX_LABEL, "status": status if isinstance(status, str)
            and status.isidentifier() else None, "glyph": GLYPHS.get(status, ""),
            "href": _href(step.get("href")),
            "x": PAD + column * (BOX_W + COL_GAP), "y": PAD + top + row * (BOX_H + ROW_GAP),
            "w": BOX_W, "h": BOX_H}


def _href(value: Any) -> Optional[str]:
    """Only links within this site (a step's run page): never a scheme a page could abuse."""
    return value if isinstance(value, str) and value.startswith("/") and \
        not value.startswith("//") else None


def _edge(source: dict, target: dict) -> dict:
    """A curve from the right of ``source`` to the left of ``target`` (a back edge of a
    cycle, right to left, bends the same way)."""
    x1, y1 = source["x"] + source["w"], source["y"] + source["h"] / 2
    x2, y2 = target["x"] - 3, target["y"] + target["h"] / 2   # 3: the arrow's head
    bend = max(COL_GAP / 2, abs(x2 - x1) / 2)
    return {"d": f"M{x1:g},{y1:g} C{x1 + bend:g},{y1:g} {x2 - bend:g},{y2:g} {x2:g},{y2:g}",
            "source": source["id"], "target": target["id"]}


def job_graph(job: dict) -> Optional[dict]:
    """The job page's graph: its definition's ``steps`` (no status yet)."""
    steps = (job.get("definition") or {}).get("steps")
    if not isinstance(steps, list):
        return None
    return layout([{"id": s.get("id"), "after": s.get("after") or []} for s in steps
                   if isinstance(s, dict)])


def run_graph(run: dict) -> Optional[dict]:
    """The run page's graph: the run's ``steps`` (DESIGN 6: ``{step_id, run_id, status,
    after, ...}``), each box linking to its step's run."""
    steps = run.get("steps")
    if not isinstance(steps, list):
        return None
    return layout([{"id": s.get("step_id"), "after": s.get("after") or [],
                    "status": s.get("status"),
                    "href": f"/runs/{s['run_id']}" if s.get("run_id") else None}
                   for s in steps if isinstance(s, dict)])
