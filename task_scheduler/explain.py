"""How validation errors are told to a person: pydantic's errors turned into one detail per
mistake, with the field, what was given and what is valid."""

from __future__ import annotations

import difflib
import re
from typing import Any

from .models import (
    AfterSpec, BusinessDaySpec, CronSpec, DateSpec, IntervalSpec, JobDefinition, RetrySpec,
    _CRON_FIELDS)
from .text import _short


def _pydantic_details(errors: list) -> list[dict]:
    """One detail per mistake: pydantic reports a value that fits no member of a union once per
    member (``minutes: '5'`` is neither an int nor a float); say what the field takes instead.
    When the value had the shape of one member (a list for ``command``), its errors alone count."""
    groups: dict[tuple, list] = {}
    for err in errors:
        loc = tuple(str(p) for p in err["loc"])
        cut = next((i for i, p in enumerate(loc) if _is_branch(p, i, loc) and
                    not (i == 1 and loc[0] == "trigger")), len(loc))   # a tagged union: one
        groups.setdefault(loc[:cut], []).append((err, cut < len(loc) - 1))
    details = []
    for group in groups.values():
        deeper = [err for err, deep in group if deep]
        if deeper or len(group) == 1:
            details += [_pydantic_detail(err) for err in deeper or [group[0][0]]]
        else:
            details.append(_union_detail([err for err, _ in group]))
    return details


def _pydantic_detail(err: dict) -> dict:
    """One pydantic error as a detail a person can act on."""
    loc, field = [str(p) for p in err["loc"]], _field_of(err["loc"])
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "extra_forbidden":
        return {"field": field, "message": _unknown_key(loc), "line": None}
    if kind in ("union_tag_invalid", "union_tag_not_found") and loc[:1] == ["notify"]:
        return {"field": field, "message": "a notify target needs one of webhook, slack or email",
                "line": None}
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        message = ("needs a type: interval, cron, date, business_day, manual or heartbeat"
                   if kind == "union_tag_not_found" else
                   f"type must be one of: interval, cron, date, business_day, manual, "
                   f"heartbeat; got {_short(ctx.get('tag'))}")
        return {"field": "trigger.type", "message": message, "line": None}
    if kind == "missing":
        message = "is required"
    elif kind == "string_pattern_mismatch" and loc[-1:] in (["webhook"], ["slack"]):
        message = f"must be an http:// or https:// URL, got {_short(value)}"
    elif kind == "string_pattern_mismatch" and loc[:1] == ["params"]:
        message = (f"a parameter name is a letter or '_', then letters, digits or '_' (up to "
                   f"64 characters), got {_short(value)}")
    elif kind == "string_pattern_mismatch":
        most = re.search(r"\{1,(\d+)\}", ctx.get("pattern", ""))
        message = (f"may only use letters, digits, '_', '.' and '-' (1 to "
                   f"{most[1] if most else 64} characters), got {_short(value)}")
    elif kind in _BOUNDS:
        words, key = _BOUNDS[kind]
        message = f"must be {words} {ctx.get(key)}, got {_short(value)}"
    elif kind == "too_long":
        message = (f"may have at most {ctx.get('max_length')} items, got "
                   f"{ctx.get('actual_length')}")
    elif kind in _EXPECTED:
        return _union_detail([err])
    else:
        message = err["msg"].removeprefix("Value error, ")
        if kind != "value_error" and not isinstance(value, dict):
            message = f"{message}, got {_short(value)}"
    return {"field": field, "message": message, "line": None}


def _union_detail(errs: list) -> dict:
    """A value of a type the field does not take: which types it takes, said once."""
    if any(err["type"] not in _EXPECTED for err in errs):   # a member's own rule says more
        return _pydantic_detail(next(err for err in errs if err["type"] not in _EXPECTED))
    kinds = {_EXPECTED[err["type"]] for err in errs}
    expected = " or ".join(k for k in _TYPE_ORDER if k in kinds and _SUBSUMED.get(k) not in kinds)
    value = errs[0].get("input")
    message = f"must be {expected}, got {_short(value)}"
    if isinstance(value, str) and _looks_numeric(value) and "text" not in kinds:
        message = f"must be {expected}, got the text {_short(value)}: write it without quotes"
    return {"field": _field_of(errs[0]["loc"]), "message": message, "line": None}


def _field_of(loc) -> str:
    parts = [str(p) for p in loc]
    if parts[-1:] == ["[key]"]:   # a mapping's key is wrong: the message names it
        parts = parts[:-2]
    return ".".join(p for i, p in enumerate(parts) if not _is_branch(p, i, parts))


def _is_branch(part: str, index: int, loc) -> bool:
    """Whether a part of a pydantic location names a union member (trigger.cron.minute,
    minutes.int), not a field."""
    if index == 1 and loc[0] == "trigger":
        return part in ("interval", "cron", "date", "manual", "business_day", "heartbeat")
    if index == 2 and loc[0] == "notify":   # notify.0.webhook.secret -> notify.0.secret
        return part in ("webhook", "slack", "email")
    return index > 0 and _is_member(part)


def _is_member(part: str) -> bool:
    return part in ("str", "int", "float", "bool", "dict", "datetime", "date") or \
        part.startswith(("list[", "function-"))


def _unknown_key(loc: list) -> str:
    known = _KNOWN_KEYS.get(loc[1] if loc[0] == "trigger" and len(loc) > 2 else loc[0]
                            if len(loc) > 1 else "", ())
    close = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.7)
    return f"unknown key; did you mean {close[0]!r}?" if close else "unknown key"


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


_BOUNDS = {"greater_than_equal": ("at least", "ge"), "greater_than": ("more than", "gt"),
           "less_than_equal": ("at most", "le"), "less_than": ("less than", "lt")}
_EXPECTED = {"int_type": "a whole number", "int_parsing": "a whole number",
             "int_from_float": "a whole number", "float_type": "a number",
             "float_parsing": "a number", "string_type": "text", "bool_type": "true or false",
             "bool_parsing": "true or false", "list_type": "a list", "dict_type": "a mapping",
             "model_type": "a mapping", "model_attributes_type": "a mapping",
             "datetime_type": "a date/time", "datetime_parsing": "a date/time",
             "datetime_from_date_parsing": "a date/time", "date_type": "a date/time",
             "date_parsing": "a date/time", "date_from_datetime_inexact": "a date/time"}
_TYPE_ORDER = ("text", "a whole number", "a number", "true or false", "a date/time", "a list",
               "a mapping")
_SUBSUMED = {"a whole number": "a number", "text": "a date/time"}   # the second says it all
_KNOWN_KEYS = {"": tuple(JobDefinition.model_fields), "retries": tuple(RetrySpec.model_fields),
               "after": tuple(AfterSpec.model_fields),
               **{spec.model_fields["type"].annotation.__args__[0]: tuple(spec.model_fields)
                  for spec in (IntervalSpec, CronSpec, DateSpec, BusinessDaySpec)}}


def _details_text(details: list, job_id: Any) -> str:
    head = f"job {job_id}: " if job_id else ""
    return "; ".join(f"{head}{d['field'] + ': ' if d['field'] else ''}{d['message']}"
                     for d in details)


def _config_error_text(path: str, details: list) -> str:
    lines = []
    for d in details:
        parts = [f"{path}:{d['line'] or 1}", d.get("job"), d.get("field"), d["message"]]
        lines.append(": ".join(str(p) for p in parts if p))
    return "\n".join(lines)


def _trigger_field(exc: Exception) -> str:
    text = str(exc)
    for name in ("expression", *_CRON_FIELDS, "timezone", "run_date", "start_date", "end_date"):
        if f"'{name}'" in text or text.startswith(name):
            return "." + name
    return ""
