"""jobs.yaml as text to edit: where each job's entry starts (file:line), one entry rewritten in
place keeping the comments, order and formatting of everything else, a job exported as an entry,
and the difference between two versions of the file. It reads and writes no file (yamledit.py
does) and applies nothing.

The rewrite takes the entry's lines (from its ``- `` to the next entry's), edits them with
ruamel.yaml's round-trip loader (comments, key order, quoting and flow style of what is
untouched stay) and splices them back: every other line of the file stays byte for byte.
ruamel.yaml is imported here only when an entry is rewritten, so a service that never writes
never pays for it (about 10 ms and 3 MiB)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import functools
import io
import json
import re
from typing import Any, Optional

import yaml
from pydantic import ValidationError

from .config import _ANCHOR
from .errors import JobConflict
from .models import JobDefinition

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_RESOLVER = yaml.resolver.Resolver()
WIDE = 4096   # ruamel folds lines past its width (80): a rewritten entry keeps its long lines


class NotEditable(JobConflict):
    """The entry cannot be rewritten safely (odd layout, anchors): edit the file by hand."""


@dataclasses.dataclass
class Entry:
    """Where a job's entry is: its lines [first, end) (0-based), the column of its ``- ``, the
    item as read, and the file's ``defaults`` (merged into every job)."""

    first: int
    end: int
    column: int
    item: dict
    defaults: dict
    offset: int = 0   # columns from the ``jobs:`` key to its dashes

def entry_lines(text: str) -> dict[str, int]:
    """{job id: line (1-based) of its entry's ``- ``} of a jobs.yaml text; {} when it has no
    list of jobs to find. Entries that all start ``- id: ...`` are found by a look at each line
    (a 10,000-job file: 20 ms, where composing its nodes takes over a second)."""
    fast = _entry_lines_fast(text.splitlines())
    if fast is not None:
        return fast
    try:
        items, _ = _items(yaml.compose(text, Loader=_LOADER))
    except yaml.YAMLError:
        return {}
    lines: dict[str, int] = {}
    for node in items:
        job_id = _id_of(node)
        if job_id is not None:
            lines.setdefault(job_id, node.start_mark.line + 1)
    return lines


def _entry_lines_fast(lines: list[str]) -> Optional[dict[str, int]]:
    """The lines when every item of the jobs list starts ``- id: ID`` at one column (each id
    once, and no other item at that column); None to compose the file instead."""
    found: dict[str, int] = {}
    column = None
    for number, line in enumerate(lines, 1):
        match = _ENTRY_LINE.match(line)
        if match:
            column = len(match[1]) if column is None else column
            if len(match[1]) != column or match[3] in found:
                return None
            found[match[3]] = number
    if column is None:
        return None
    dash = " " * column + "-"
    items = sum(1 for line in lines
                if line.startswith(dash) and line[column + 1:column + 2] in ("", " "))
    return found if items == len(found) else None


_ENTRY_LINE = re.compile(r"( *)- +id: *(['\"]?)([A-Za-z0-9_.-]{1,64})\2 *(?:#.*)?")


def _items(root) -> tuple[list, Optional[int]]:
    """The job item nodes and the line (0-based) where the list ends when a key follows it."""
    if isinstance(root, yaml.SequenceNode):
        return root.value, None
    if isinstance(root, yaml.MappingNode):
        for index, (key, value) in enumerate(root.value):
            if key.value == "jobs" and isinstance(value, yaml.SequenceNode):
                after = root.value[index + 1][0].start_mark.line if index + 1 < len(
                    root.value) else None
                return value.value, after
    return [], None


def _id_of(node) -> Optional[str]:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == "id" and isinstance(value, yaml.ScalarNode):
                return value.value
    return None


def locate(text: str, job_id: str) -> Entry:
    """The entry of ``job_id``; NotEditable when it is not there or not laid out as a block
    item (``- id: ...`` starting its line)."""
    root = yaml.compose(text, Loader=_LOADER)
    items, after = _items(root)
    lines = text.splitlines(keepends=True)
    found = [i for i, node in enumerate(items) if _id_of(node) == job_id]
    if not found:
        raise NotEditable(f"job {job_id!r} is not in the file any more; reload the page")
    index = found[0]
    mark = items[index].start_mark
    prefix = lines[mark.line][:mark.column] if mark.line < len(lines) else ""
    if prefix.strip() != "-":
        raise NotEditable(f"job {job_id!r} is not written as a block item ('- id: ...' on its "
                          f"own line); edit the file by hand")
    end = items[index + 1].start_mark.line if index + 1 < len(items) else (
        after if after is not None else len(lines))
    item = _construct(items[index])   # only what is needed: the item, the defaults
    defaults = next((_construct(value) for key, value in root.value if key.value == "defaults"),
                    None) if isinstance(root, yaml.MappingNode) else None
    defaults = defaults if isinstance(defaults, dict) else {}
    column = prefix.index("-")
    offset = column - _indent_of(lines[_jobs_key_line(root)]) if isinstance(
        root, yaml.MappingNode) else 0
    return Entry(mark.line, end, column, item, defaults, max(offset, 0))


def _construct(node) -> Any:
    loader = _LOADER("")
    try:
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _jobs_key_line(root) -> int:
    return next(key.start_mark.line for key, _ in root.value if key.value == "jobs")


def entry_keys(definition: dict, entry: Entry) -> dict:
    """The keys to write for ``definition``: it as given, less the keys the entry did not have
    whose value holds without them (a default), plus any default it must override."""
    want = _full(definition)
    keys = dict(definition)
    for key in [k for k in keys if k != "id" and k not in entry.item]:
        trial = {**entry.defaults, **{k: v for k, v in keys.items() if k != key}}
        if _full(trial, quiet=True) == want:
            del keys[key]
    for key in entry.defaults:
        if key not in keys and _full({**entry.defaults, **keys}, quiet=True) != want:
            keys[key] = want[key]
    return keys


def _full(definition: dict, quiet: bool = False) -> Optional[dict]:
    try:
        return JobDefinition.model_validate(definition).model_dump(mode="json")
    except ValidationError:
        if quiet:
            return None
        raise


def rewrite_entry(text: str, entry: Entry, keys: dict) -> str:
    """``text`` with the entry's mapping changed to ``keys``: kept keys keep their place,
    comments and style, removed keys go, new keys come last. Only the entry's lines change."""
    from ruamel.yaml import YAML

    lines = text.splitlines(keepends=True)
    newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    own = [line.rstrip("\r\n") for line in lines[entry.first:entry.end]]
    chunk = "\n".join(own) + "\n"   # at its own columns: comments keep theirs
    if _ANCHOR.search(chunk) or "*" in chunk and _has_alias(chunk):
        raise NotEditable("this job's entry uses YAML anchors or aliases; edit the file by hand")
    mapping, offset = _guess_style(chunk.splitlines(), entry.offset)
    ruamel = YAML()   # round-trip
    ruamel.preserve_quotes, ruamel.width = True, WIDE
    ruamel.Representer = _representer()

    ruamel.indent(mapping=mapping, sequence=offset + 2, offset=offset)
    seq = ruamel.load(chunk)
    _update(seq[0], keys)
    out = io.StringIO()
    ruamel.dump(seq, out)
    dumped = out.getvalue().splitlines()
    first = next((line for line in dumped if line.lstrip().startswith("-")), "-")
    shift = entry.column - _indent_of(first)   # where ruamel put the dash, and where it goes
    new = [line if not line.strip() or line.lstrip().startswith("#") else
           " " * shift + line if shift >= 0 else _dedent(line, -shift) for line in dumped]
    body = "".join(line + newline for line in new)
    if entry.end == len(lines) and lines and not lines[-1].endswith("\n"):
        body = body[:-len(newline)]   # the file had no newline at its end: still none
    return "".join(lines[:entry.first]) + body + "".join(lines[entry.end:])


@functools.cache
def _representer():
    """ruamel's round-trip representer writing None as ``null`` (not an empty value); a
    subclass, so a python job using ruamel.yaml in this process is not changed."""
    from ruamel.yaml.representer import RoundTripRepresenter

    class Representer(RoundTripRepresenter):
        pass
    Representer.add_representer(type(None), lambda r, _: r.represent_scalar(
        "tag:yaml.org,2002:null", "null"))
    return Representer


def _guess_style(lines: list[str], offset: int) -> tuple[int, int]:
    """(mapping indent, sequence dash offset) of an entry's lines: from its first nested block
    mapping and block sequence; the dash offset of the jobs list itself when it has none."""
    mapping = None
    for line, after in zip(lines, lines[1:], strict=False):
        if not line.rstrip().endswith(":") or line.lstrip().startswith("#"):
            continue
        head = _indent_of(line) + (2 if line.lstrip().startswith("- ") else 0)
        if after.lstrip().startswith("- ") and _indent_of(after) >= head:
            return mapping or 2, _indent_of(after) - head
        if mapping is None and _indent_of(after) > head and not after.lstrip().startswith("#"):
            mapping = _indent_of(after) - head
    return mapping or 2, offset


def _dedent(line: str, column: int) -> str:
    return line[min(column, _indent_of(line)):]


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _has_alias(chunk: str) -> bool:
    try:
        return any(isinstance(e, yaml.AliasEvent) for e in yaml.parse(chunk, Loader=_LOADER))
    except yaml.YAMLError:
        return True


def _update(node, keys: dict) -> None:
    """Change a round-trip mapping in place to hold ``keys``."""
    for key in [k for k in node if k not in keys]:
        last = key == list(node)[-1]
        tail = _take_tail(node, key) if last else None
        del node[key]
        if tail and len(node):   # the comment and blank lines after a removed last key (the
            _give_tail(node, tail)   # next entry's heading, say) follow the new last key
    for key, value in keys.items():
        node[key] = _merge(node[key], value) if key in node else _fresh(value)


def _block_map(value) -> bool:
    return isinstance(value, dict) and len(value) > 0 and not value.fa.flow_style()


def _take_tail(node, key) -> str:
    """The comment lines after ``key``'s value (not its own end-of-line comment), taken off."""
    value = node[key]
    if _block_map(value):
        return _take_tail(value, list(value)[-1])
    slot = node.ca.items.get(key)
    if not slot or len(slot) < 3 or slot[2] is None:
        return ""
    own, _, rest = slot[2].value.partition("\n")
    slot[2].value = own + "\n"
    return rest


def _give_tail(node, tail: str) -> None:
    from ruamel.yaml.error import CommentMark
    from ruamel.yaml.tokens import CommentToken

    key = list(node)[-1]
    if _block_map(node[key]):
        return _give_tail(node[key], tail)
    slot = node.ca.items.setdefault(key, [None, None, None, None])
    if slot[2] is None:
        slot[2] = CommentToken("\n" + tail, CommentMark(0), None)
    else:
        slot[2].value += tail


def _merge(old: Any, new: Any) -> Any:
    """``new`` in the place of ``old``: ``old`` itself when it says the same (its style and
    comments stay), mappings changed key by key, quoting and flow style carried over."""
    if same_json(_plain(old), new):
        return old
    if isinstance(old, dict) and isinstance(new, dict):
        _update(old, new)
        return old
    fresh = _fresh(new)
    if isinstance(old, list) and isinstance(new, list):
        if old.fa.flow_style():
            fresh.fa.set_flow_style()
        quoted = next((type(v) for v in old if isinstance(v, str) and type(v) is not str), None)
        for index, value in enumerate(fresh):   # ['a', 'b'] stays quoted as it was
            if quoted is not None and type(value) is str:
                fresh[index] = quoted(value)
    if isinstance(old, str) and isinstance(new, str) and type(old) is not str \
            and hasattr(old, "style"):
        return type(old)(new)   # 'quoted' stays 'quoted', "double" stays "double"
    return fresh


def _plain(value: Any) -> Any:
    """A round-trip value as the JSON of a definition says it (times in ISO form)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, bool):
        return bool(value)
    for kind in (int, float, str):
        if isinstance(value, kind):
            return kind(value)
    return value


def _fresh(value: Any) -> Any:
    """A new value for the round-trip dumper: strings PyYAML (YAML 1.1, what reads jobs.yaml)
    would take for something else are quoted ('on', '12:30', '010')."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq
    from ruamel.yaml.scalarstring import SingleQuotedScalarString

    if isinstance(value, dict):
        fresh = CommentedMap()
        for k, v in value.items():
            fresh[_fresh(k) if isinstance(k, str) else k] = _fresh(v)
        return fresh
    if isinstance(value, list):
        return CommentedSeq(_fresh(v) for v in value)
    if isinstance(value, str) and (_RESOLVER.resolve(yaml.ScalarNode, value, (True, False))
                                   != "tag:yaml.org,2002:str" or value != value.strip()):
        return SingleQuotedScalarString(value)
    return value


def export_entry(definition: dict, notes: list[str]) -> str:
    """A job as a jobs.yaml entry (a one-item list, ready to paste under ``jobs:``), headed by
    ``notes`` as comments."""
    head = "".join(f"# {note}\n" for note in notes)
    return head + yaml.safe_dump([definition], sort_keys=False, allow_unicode=True,
                                 default_flow_style=False, width=WIDE)


def file_diff(old: str, new: str, path: str) -> str:
    """What changed between two versions of the file, as a unified diff."""
    return "".join(difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True),
        fromfile=f"{path} (when the page was loaded)", tofile=f"{path} (now)", n=2))


def same_json(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)
