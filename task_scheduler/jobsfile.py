"""jobs.yaml: reading the file safely, parsing it with line numbers, and validating every job,
with a message per mistake that names the file, line, job and field."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from typing import Any, Optional

import yaml
from pydantic import ValidationError

from .after import after_problems
from .calendars import resolve_calendars, uses
from .checks import _target_problem, parse_job, trigger_problems
from .config import MAX_ALIAS_NODES, MAX_CONFIG_BYTES, _ANCHOR
from .errors import InvalidConfig, InvalidJob
from .explain import _config_error_text
from .models import JobDefinition
from .text import _type_name


class JobList(list):
    """The jobs of a jobs.yaml, and ``calendars``: {name: rules} of its ``calendars:``."""

    calendars: dict = {}


def load_jobs_file(path: str, parser: Optional[JobsParser] = None,
                   limit: int = MAX_CONFIG_BYTES) -> tuple[list[JobDefinition], str]:
    """Read, parse and validate a whole jobs.yaml. Returns (jobs, sha256); raises InvalidConfig."""
    text, digest = read_jobs_file(path, limit)
    return (parser or JobsParser()).parse(text, path), digest


def read_jobs_file(path: str, limit: int = MAX_CONFIG_BYTES) -> tuple[str, str]:
    """The text of jobs.yaml and the sha256 of its bytes; InvalidConfig if it cannot be read.
    Only a regular file of at most ``limit`` bytes is read, and the open never blocks: a FIFO
    would hang the reloader, /dev/zero would fill the memory."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise _unreadable(path, f"cannot read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _unreadable(path, f"not a regular file ({_file_kind(info.st_mode)}); "
                                    f"jobs.yaml must be a plain file")
        raw = fh.read(limit + 1) if info.st_size <= limit else b""
    if info.st_size > limit or len(raw) > limit:
        raise _unreadable(path, f"larger than {limit} bytes (max_config_bytes); split it, or "
                                f"raise the limit")
    return raw.decode("utf-8", "replace"), hashlib.sha256(raw).hexdigest()


def _unreadable(path: str, message: str) -> InvalidConfig:
    return InvalidConfig(f"{path}: {message}",
                         [{"line": None, "job": None, "field": "", "message": message}])


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISDIR, "a directory"))
    return next((name for test, name in kinds if test(mode)), "not a plain file")


class JobsParser:
    """Parses jobs.yaml fast, remembering the entries of its last good parse: a one-job edit of a
    10,000-job file re-reads and re-validates that job only. The fast path uses libyaml and
    builds no YAML nodes; any doubt or error falls back to ``parse_jobs_text``, the one path that
    reports errors with line numbers."""

    def __init__(self):
        # digest of a top-level item's text -> its definition: only that, as the book shares the
        # definitions; the loaded items and JSON keys kept besides cost ~15 MiB per 10,000 jobs
        self._known: dict[bytes, JobDefinition] = {}

    def parse(self, text: str, path: str = "jobs.yaml") -> JobList:
        jobs = self._parse_fast(text, path)
        return JobList(jobs) if jobs is not None else parse_jobs_text(text, path)

    def _parse_fast(self, text: str, path: str) -> Optional[list[JobDefinition]]:
        if _ANCHOR.search(text):
            return None   # aliases are expanded only on the path that bounds them
        try:
            keyed = self._load(text)
        except (yaml.YAMLError, ValueError):
            return None
        if keyed is None:
            return None
        base_dir = os.path.dirname(os.path.abspath(path))
        known, targets, jobs = {}, {}, []
        for key, item in keyed:
            defn = self._known.get(key) if item is None else _fast_definition(item)
            if defn is None or uses(defn) or defn.steps is not None:
                return None   # a calendar's name must be checked against the file's calendars;
                #               a workflow's graph and steps on the full path
            target = (defn.func, json.dumps(defn.command), defn.shell, json.dumps(defn.args,
                      default=str), json.dumps(defn.kwargs, default=str, sort_keys=True),
                      defn.env.get("PATH"), defn.cwd)
            if target not in targets:   # one look-up per distinct program, not per job
                targets[target] = _target_problem(defn, base_dir)
            if targets[target] is not None:
                return None
            if key is not None:
                known[key] = defn
            jobs.append(defn)
        if len({j.id for j in jobs}) != len(jobs) or \
                after_problems({j.id: j for j in jobs}, [j.id for j in jobs], names=False):
            return None
        self._known = known   # only what this file uses
        return jobs

    def _load(self, text: str) -> Optional[list[tuple[Optional[bytes], Any]]]:
        """(digest of the item's text, the loaded item or None when the digest is known) per
        job; digest None for a file loaded whole; None for an empty or odd file."""
        if not text.strip():
            return None
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        chunks = _top_level_items(text)
        if chunks is not None:
            try:
                keys = [hashlib.blake2b(c.encode(), digest_size=16).digest() for c in chunks]
                return [(k, None if k in self._known else _load_one(c, loader))
                        for k, c in zip(keys, chunks, strict=True)]
            except (yaml.YAMLError, ValueError):
                pass   # an alias to another item, an odd layout: load the whole file
        data = yaml.load(text, Loader=loader)
        if isinstance(data, dict) and data.get("calendars") is not None:
            return None   # calendars are checked on the path that tells lines
        items, problems = _job_items(None, data) if data is not None else ([], ["empty"])
        return None if problems else [(None, item) for item in items]


def _fast_definition(item: Any) -> Optional[JobDefinition]:
    """A loaded item's definition, or None to let the full parse report on it."""
    if not isinstance(item, dict):
        return None
    try:
        json.dumps(item, sort_keys=True)
    except (TypeError, ValueError):   # YAML dates, sets, mixed keys: the full path decides
        return None
    try:
        defn = JobDefinition.model_validate(item)
    except ValidationError:
        return None
    return None if trigger_problems(defn.trigger) else defn


def _top_level_items(text: str) -> Optional[list[str]]:
    """The text of each item of a top-level block sequence (``- ...`` at column 0), or None when
    the file has another shape (a mapping, directives, several documents)."""
    chunks: list[list[str]] = []
    for line in text.splitlines(keepends=True):
        if line.startswith("- ") or line.rstrip() == "-":
            chunks.append([line])
        elif chunks and line[:1] in (" ", "\t", "#", "\n", "\r"):
            chunks[-1].append(line)
        elif chunks or line.strip()[:1] not in ("", "#"):
            return None   # text before the first item, or at column 0 between items
    return ["".join(c) for c in chunks] or None


def _load_one(chunk: str, loader) -> Any:
    loaded = yaml.load(chunk, Loader=loader)
    if not isinstance(loaded, list) or len(loaded) != 1:
        raise ValueError("not exactly one item")
    return loaded[0]


def parse_jobs_text(text: str, path: str = "jobs.yaml") -> JobList:
    """Validate a whole file; any error rejects all of it (``file:line: job: field: message``)."""
    base_dir = os.path.dirname(os.path.abspath(path))
    root, data = _yaml_compose(text, path)
    items, details = _job_items(root, data)
    calendars, problems = resolve_calendars(data.get("calendars") if isinstance(data, dict)
                                            and not details else None)
    details += [{"line": _line_of(root, p.pop("path")), "job": None,
                 **{**p, "field": f"calendars.{p['calendar']}.{p['field']}".rstrip(".")
                    if p["calendar"] else "calendars"}} for p in problems]
    prefix = ["jobs"] if isinstance(data, dict) else []
    jobs, first_line, wheres = [], {}, {}
    for index, item in enumerate(items):
        jid = item.get("id") if isinstance(item, dict) else None
        where = [*prefix, index]
        if isinstance(jid, str) and jid in first_line:
            details.append({"line": _line_of(root, [*where, "id"]), "job": jid, "field": "id",
                            "message": f"duplicate id (first defined on line {first_line[jid]})"})
            continue
        if isinstance(jid, str):
            first_line[jid] = _line_of(root, [*where, "id"])
        try:
            jobs.append(parse_job(item, base_dir))
            wheres[jobs[-1].id] = where
            details += _calendar_references(root, where, jobs[-1], calendars, problems)
        except InvalidJob as exc:
            for d in exc.details:
                fpath = d["field"].split(".")
                details.append({**d, "job": jid or f"#{index + 1}",
                                "line": _line_of(root, [*where, *fpath]),
                                "message": d["message"] + _yaml_hint(root, [*where, *fpath])})
    details += [{**d, "line": _line_of(root, [*wheres[d["job"]], "after", "job"])}
                for d in after_problems({j.id: j for j in jobs}, wheres, names=False)]
    if details:
        details.sort(key=lambda d: d["line"] or 0)   # stable: a line's details keep their order
        raise InvalidConfig(_config_error_text(path, details), details)
    jobs = JobList(jobs)
    jobs.calendars = calendars
    return jobs


def _calendar_references(root, where: list, defn: JobDefinition, calendars: dict,
                         problems: list) -> list[dict]:
    """A job's calendar names that the file does not define (said only when the calendars
    themselves are valid: a broken calendar is reported once, where it is)."""
    fields = (["trigger", "calendar"], ["calendar", "name"])
    found = [f for f in fields if f[0] == "trigger" and getattr(defn.trigger, "calendar", None)
             or f[0] == "calendar" and defn.calendar is not None]
    details = []
    for field, name in zip(found, uses(defn), strict=True):
        if name not in calendars and not problems:
            details.append({"line": _line_of(root, [*where, *field]), "job": defn.id,
                            "field": ".".join(field), "message": f"calendar {name!r} is not "
                            f"defined (calendars: {', '.join(sorted(calendars)) or 'none'})"})
    return details


def _yaml_compose(text: str, path: str):
    if not text.strip():
        detail = {"line": 1, "job": None, "field": "",
                  "message": "file is empty; write [] to remove every job"}
        raise InvalidConfig(_config_error_text(path, [detail]), [detail])
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        _check_expansion(root, path)
        return root, loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        detail = _yaml_error_detail(exc, text)
        raise InvalidConfig(_config_error_text(path, [detail]), [detail]) from None
    except RecursionError:
        detail = {"line": None, "job": None, "field": "", "message": "YAML nested too deeply"}
        raise InvalidConfig(_config_error_text(path, [detail]), [detail]) from None
    finally:
        loader.dispose()


def _check_expansion(root, path: str) -> None:
    """Refuse aliases that expand to far more than the file holds (a 'billion laughs'): the
    parsed document shares the aliased values, but validating and storing them copies each."""
    sizes: dict[int, int] = {}

    def size(node) -> int:
        if id(node) not in sizes:
            children = (node.value if isinstance(node, yaml.SequenceNode) else
                        [n for pair in node.value for n in pair]
                        if isinstance(node, yaml.MappingNode) else [])
            sizes[id(node)] = 1 + sum(size(child) for child in children)
        return sizes[id(node)]
    if root is not None and size(root) > len(sizes) + MAX_ALIAS_NODES:
        detail = {"line": None, "job": None, "field": "",
                  "message": f"YAML aliases expand to {size(root)} values, more than "
                             f"{MAX_ALIAS_NODES} beyond what the file holds; write the values "
                             f"out or use fewer aliases"}
        raise InvalidConfig(_config_error_text(path, [detail]), [detail])


def _yaml_error_detail(exc: yaml.YAMLError, text: str) -> dict:
    mark = getattr(exc, "context_mark", None) or getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark else None
    message = f"YAML syntax: {getattr(exc, 'problem', None) or exc}"
    for mark in (getattr(exc, "context_mark", None), getattr(exc, "problem_mark", None)):
        token = _token_at(text, mark)
        if token[:1] in ("*", "%", "@", "`"):
            return {"line": mark.line + 1, "job": None, "field": "",
                    "message": f"`{token}` must be quoted in YAML: '{token}'"}
    return {"line": line, "job": None, "field": "", "message": message}


def _token_at(text: str, mark) -> str:
    """The plain token around a YAML error mark (``*/5`` for an unquoted cron step)."""
    if mark is None:
        return ""
    lines = text.splitlines()
    source = lines[mark.line] if mark.line < len(lines) else ""
    start = mark.column
    while start > 0 and source[start - 1] not in " \t{[,:":
        start -= 1
    rest = source[start:]
    end = next((i for i, ch in enumerate(rest) if ch in " \t,}]#"), len(rest))
    return rest[:end]


def _job_items(root, data) -> tuple[list, list]:
    """The list of job mappings of either form, with ``defaults`` merged in."""
    if data is None:
        return [], []
    if isinstance(data, list):
        return data, []
    if not isinstance(data, dict):
        return [], [{"line": 1, "job": None, "field": "",
                     "message": f"expected a list of jobs or {{defaults, jobs}}, got "
                                f"{_type_name(data)}"}]
    unknown = sorted(set(data) - {"defaults", "jobs", "calendars"})
    if "id" in data:
        return [], [{"line": 1, "job": None, "field": "",
                     "message": "this is one job, not a list: start each job with '- ', or use "
                                "{defaults: ..., jobs: [...]}"}]
    if unknown:
        return [], [{"line": _line_of(root, [unknown[0]]), "job": None, "field": unknown[0],
                     "message": "unknown top-level key (valid: defaults, jobs, calendars)"}]
    defaults, jobs = data.get("defaults") or {}, data.get("jobs") or []
    if not isinstance(defaults, dict) or not isinstance(jobs, list):
        return [], [{"line": 1, "job": None, "field": "defaults" if not isinstance(defaults, dict)
                     else "jobs", "message": "defaults must be a mapping and jobs a list"}]
    return [{**defaults, **j} if isinstance(j, dict) else j for j in jobs], []


def _node_at(root, path: list):
    node = root
    for key in path:
        if isinstance(node, yaml.MappingNode):
            match = [v for k, v in node.value if k.value == str(key)]
            if not match:
                return node
            node = match[0]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        elif isinstance(node, yaml.SequenceNode) and str(key).isdigit():
            idx = int(key)
            if idx >= len(node.value):
                return node
            node = node.value[idx]
        else:
            return node
    return node


def _line_of(root, path: list) -> Optional[int]:
    node = _node_at(root, [p for p in path if p != ""]) if root is not None else None
    return node.start_mark.line + 1 if node is not None else None


def _yaml_hint(root, path: list) -> str:
    """Explain YAML 1.1 surprises at the failing value: on/no, 12:30, 010."""
    node = _node_at(root, [p for p in path if p != ""]) if root is not None else None
    if not isinstance(node, yaml.ScalarNode) or node.style is not None:
        return ""
    value, tag = node.value, node.tag.rsplit(":", 1)[-1]
    if tag == "bool" and value.lower() not in ("true", "false"):
        return f" (YAML reads unquoted {value} as a boolean; quote it: '{value}')"
    if tag in ("int", "float") and ":" in value:
        return f" (YAML reads unquoted {value} as a base-60 number; quote it: '{value}')"
    if tag == "int" and len(value) > 1 and value.startswith("0") and value.isdigit():
        return f" (YAML reads unquoted {value} as an octal number; quote it: '{value}')"
    return ""
