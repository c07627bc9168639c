"""The job form: a jobs.yaml entry <-> the fields of the new/edit form.

The basic fields keep the names of DESIGN section 7 (id, description, kind, target,
trigger_type, cron_expression, interval_seconds, run_date, timezone, max_instances, timeout)
and stay in view. Every other jobs.yaml key is a `Field` of a `Group` in GROUPS, folded away
under "More options". To add a group (notifications, say), append one `Group` to GROUPS and give
its fields catalog keys (``group.<name>``, ``field.<name>``, ``hint.<name>``): the form shows it,
reads it into the definition, fills it from a job and puts validation errors next to it.
"""
from __future__ import annotations

import dataclasses
import json
import math
import shlex
from collections.abc import Callable
from typing import Any

import yaml

from task_scheduler.checks import shell_syntax

OMIT = object()   # a reader's answer for "leave the key out": the default applies
TRIGGER_FIELD = {"cron": "cron_expression", "interval": "interval_seconds", "date": "run_date",
                 "manual": None}
BASIC_FIELDS = ("id", "description", "kind", "target", "shell", "trigger_type",
                "cron_expression", "interval_seconds", "run_date", "timezone", "max_instances",
                "timeout", "tags")
SHELL_CHOICES = ("auto", "yes", "no")


class FieldError(ValueError):
    """A value the form cannot read: the catalog key of the message, and its values."""

    def __init__(self, key: str, **params):
        super().__init__(key)
        self.key, self.params = key, params


# -- Readers (form text -> value) and writers (value -> form text) ---------------------------

def read_text(text: str):
    return text or OMIT


def read_whole(text: str):
    try:
        number = read_number(text)
    except FieldError:
        number = None
    if number is not OMIT and not isinstance(number, int):
        raise FieldError("form.not_whole", value=repr(text))
    return number


def read_number(text: str):
    if not text:
        return OMIT
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise FieldError("form.not_number", value=repr(text))
    return int(number) if number.is_integer() else number


def read_grace(text: str):
    """Seconds a late fire may still run; ``none`` means however late (null in jobs.yaml)."""
    if text.lower() in ("none", "null", "なし"):
        return None
    return read_number(text)


def read_json(text: str):
    """JSON as the API takes it: no NaN or Infinity, no unpaired surrogate, and not nested past
    what the parser follows (a RecursionError was a 500)."""
    try:
        value = json.loads(text, parse_constant=_not_json)
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except json.JSONDecodeError as exc:
        raise FieldError("form.not_json", error=exc.msg, line=exc.lineno) from None
    except (ValueError, RecursionError) as exc:   # ValueError: also UnicodeEncodeError
        raise FieldError("form.not_json", error=str(exc), line=1) from None
    return value


def _not_json(name: str):
    raise ValueError(f"{name} is not a JSON number")


def read_json_object(text: str):
    if not text:
        return OMIT
    value = read_json(text)
    if not isinstance(value, dict):
        raise FieldError("form.not_object")
    return value


def read_args(text: str):
    """A JSON list (``[1, "a"]``), or words split as a shell would split them."""
    if not text:
        return OMIT
    if text.startswith("["):
        value = read_json(text)
        if not isinstance(value, list):
            raise FieldError("form.not_list")
        return value
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise FieldError("form.not_split", error=str(exc)) from None


def read_pairs(text: str):
    """``NAME=value`` lines (env)."""
    pairs = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            raise FieldError("form.not_pair", line=number)
        pairs[name.strip()] = value
    return pairs or OMIT


def read_words(text: str):
    words = [w.strip() for w in text.replace("\n", ",").split(",") if w.strip()]
    return words or OMIT


def checkbox(default: bool) -> Callable[[str], Any]:
    """A checkbox posts "1", its hidden twin "0"; only a change from the default is written."""
    def read(text: str):
        value = text == "1" if text in ("0", "1") else default
        return OMIT if value == default else value
    return read


def read_isolation(text: str):
    """The "own process" checkbox of a python job: isolation process, else the default."""
    return "process" if checkbox(False)(text) is True else OMIT


def show_isolation(value) -> str:
    return "1" if value == "process" else "0"


def read_notify(text: str):
    """The notify list as YAML (as in jobs.yaml: ``- webhook: https://...``)."""
    if not text.strip():
        return OMIT
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise FieldError("form.not_yaml", line=mark.line + 1 if mark else 1) from None
    if not isinstance(value, list):
        raise FieldError("form.not_notify_list")
    return value


def show_notify(value) -> str:
    if value in (OMIT, None, []):
        return ""
    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True, default_flow_style=False)


def show_text(value) -> str:
    return "" if value is OMIT or value is None else str(value)


def show_grace(value) -> str:
    return "none" if value is None else show_text(value)


def show_json(value) -> str:
    return "" if value in (OMIT, None, {}, []) else json.dumps(value, ensure_ascii=False)


def show_args(value) -> str:
    if value in (OMIT, None, []):
        return ""
    if all(isinstance(v, str) for v in value):
        return shlex.join(value)
    return json.dumps(value, ensure_ascii=False)


def show_pairs(value) -> str:
    return "" if value in (OMIT, None) else "\n".join(f"{k}={v}" for k, v in value.items())


def show_words(value) -> str:
    return "" if value in (OMIT, None) else ", ".join(value)


def show_checkbox(default: bool) -> Callable[[Any], str]:
    return lambda value: "1" if (default if value is OMIT else bool(value)) else "0"


# -- The folded-away groups -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Field:
    name: str                           # the form field; catalog: field.<name>, hint.<name>
    key: str                            # its place in the job definition, dotted: retries.max
    read: Callable[[str], Any] = read_text
    show: Callable[[Any], str] = show_text
    widget: str = "text"                # text | number | textarea | checkbox
    only: str = ""                      # python | command | timed (not date): else hidden
    placeholder: str = ""               # an example value, not a sentence
    mono: bool = False


@dataclasses.dataclass(frozen=True)
class Group:
    name: str                           # catalog: group.<name>
    fields: tuple[Field, ...]


GROUPS: tuple[Group, ...] = (
    Group("arguments", (
        Field("args", "args", read_args, show_args, mono=True, placeholder='["a", 1]'),
        Field("kwargs", "kwargs", read_json_object, show_json, "textarea", "python", mono=True,
              placeholder='{"api_endpoint": "http://127.0.0.1:8000/"}'),
        Field("env", "env", read_pairs, show_pairs, "textarea", "command", mono=True,
              placeholder="BACKUP_DEST=/srv/backups"),
        Field("cwd", "cwd", only="command", mono=True, placeholder="/srv/app"),
    )),
    Group("schedule", (
        Field("jitter", "trigger.jitter", read_number, widget="number"),
        Field("start_date", "trigger.start_date", only="timed", mono=True,
              placeholder="2030-01-31 00:00:00"),
        Field("end_date", "trigger.end_date", only="timed", mono=True,
              placeholder="2030-12-31 23:59:59"),
        Field("misfire_grace_time", "misfire_grace_time", read_grace, show_grace,
              placeholder="60"),
        Field("coalesce", "coalesce", checkbox(True), show_checkbox(True), "checkbox"),
    )),
    Group("retries", (
        Field("retries_max", "retries.max", read_whole, widget="number", placeholder="0"),
        Field("retries_delay", "retries.delay", read_number, widget="number", placeholder="0"),
        Field("retries_backoff", "retries.backoff", read_number, widget="number",
              placeholder="1"),
    )),
    Group("placement", (
        Field("run_on", "run_on", read_words, show_words, mono=True, placeholder="gpu, eu"),
        Field("is_enabled", "is_enabled", checkbox(True), show_checkbox(True), "checkbox"),
        Field("isolation", "isolation", read_isolation, show_isolation, "checkbox", "python"),
    )),
    Group("notify", (
        Field("notify", "notify", read_notify, show_notify, "textarea", mono=True,
              placeholder="- webhook: https://ops.example.com/hooks/x\n  on: [failed, recovered]"),
    )),
)
FIELDS = tuple(field for group in GROUPS for field in group.fields)
FORM_FIELDS = BASIC_FIELDS + tuple(field.name for field in FIELDS)
MANAGED = {"id", "func", "command", "shell", "description", "tags", "trigger", "max_instances",
           "timeout"} | {field.key.split(".")[0] for field in FIELDS}


# -- Form -> definition -------------------------------------------------------------------------

def new_form() -> dict[str, str]:
    form = dict.fromkeys(FORM_FIELDS, "")
    form.update(kind="python", trigger_type="cron", max_instances="1", shell="auto")
    form.update({f.name: f.show(OMIT) for f in FIELDS})
    return form


def form_to_definition(form: dict[str, str], say: Callable[..., str], job: dict | None = None
                       ) -> tuple[dict, dict[str, str]]:
    """A jobs.yaml entry from the form, and {field: message} for what cannot be read. An edited
    job keeps what the form does not manage (replace_existing, keys added later)."""
    errors: dict[str, str] = {}
    base = (job or {}).get("definition") or {}
    definition = {k: v for k, v in base.items() if k not in MANAGED}
    definition["id"] = form["id"]
    if form["description"]:
        definition["description"] = form["description"]
    _read_target(form, definition, errors, say, base)
    keep_trigger = job is not None and base.get("trigger") and _same_trigger(form, job_to_form(job))
    definition["trigger"] = base["trigger"] if keep_trigger else _read_trigger(form, errors, say)
    for name, reader in (("max_instances", read_whole), ("timeout", read_number),
                         ("tags", read_words)):
        _put_read(definition, errors, say, name, name, reader, form[name])
    for field in FIELDS:
        if _applies(field, form) and not (keep_trigger and field.key.startswith("trigger.")):
            _put_read(definition, errors, say, field.name, field.key, field.read, form[field.name])
    return definition, errors


def _read_target(form, definition: dict, errors: dict, say, base: dict) -> None:
    if form["kind"] not in ("python", "command"):
        errors["kind"] = say("form.choose_kind")
    if form["kind"] != "command" or (base.get("func") and base["func"] == form["target"]):
        definition["func"] = form["target"]   # a callable, or a script kept as func:
        return
    command = base.get("command")
    if isinstance(command, list) and shlex.join(command) == form["target"] and \
            form["shell"] != "yes":
        definition["command"] = command   # an argv list the form did not change stays a list
        return
    definition["command"] = form["target"]
    choice = form["shell"] if form["shell"] in SHELL_CHOICES else "auto"
    if choice == "yes" or (choice == "auto" and shell_syntax(form["target"])):
        definition["shell"] = True


def _read_trigger(form: dict[str, str], errors: dict, say) -> dict:
    kind = form["trigger_type"]
    if kind not in TRIGGER_FIELD:
        errors["trigger_type"] = say("form.choose_trigger")
        return {}
    trigger: dict[str, Any] = {"type": kind}
    if kind == "manual":
        return trigger
    if kind == "cron":
        trigger["expression"] = form["cron_expression"]
    elif kind == "date":
        trigger["run_date"] = form["run_date"]
    else:
        _put_read(trigger, errors, say, "interval_seconds", "seconds", read_whole,
                  form["interval_seconds"])
    if not form[TRIGGER_FIELD[kind]]:
        errors[TRIGGER_FIELD[kind]] = say("form.required_for", kind=kind)
    if form["timezone"]:
        trigger["timezone"] = form["timezone"]
    return trigger


def _applies(field: Field, form: dict[str, str]) -> bool:
    if field.only == "timed":
        return form["trigger_type"] not in ("date", "manual")
    return not field.only or field.only == form["kind"]


def _put_read(definition: dict, errors: dict, say, name: str, key: str, reader, text: str):
    try:
        value = reader(text)
    except FieldError as exc:
        errors[name] = say(exc.key, **exc.params)
        return
    if value is not OMIT:
        *parents, last = key.split(".")
        for part in parents:
            definition = definition.setdefault(part, {})
        definition[last] = value


def _same_trigger(form: dict[str, str], before: dict[str, str]) -> bool:
    names = ("trigger_type", "timezone",
             TRIGGER_FIELD.get(form["trigger_type"]) or "trigger_type",
             *(f.name for f in FIELDS if f.key.startswith("trigger.")))
    return all(form[name] == before[name] for name in names)


# -- Job -> form --------------------------------------------------------------------------------

def job_to_form(job: dict) -> dict[str, str]:
    d = job.get("definition") or {}
    trigger = d.get("trigger") or job.get("trigger") or {}
    kind = job.get("kind") or ("command" if d.get("command") else "python")
    target = d.get("command") or d.get("func") or ""
    target = shlex.join(target) if isinstance(target, list) else str(target)
    form = new_form()
    form.update(id=job["id"], description=d.get("description") or "", kind=kind, target=target,
                shell=_shell_choice(d, target), trigger_type=trigger.get("type", "cron"),
                timezone=trigger.get("timezone") or "",
                max_instances=show_text(d.get("max_instances", OMIT)) or "1",
                timeout=show_text(d.get("timeout")), tags=show_words(d.get("tags") or OMIT))
    form.update(_trigger_to_form(trigger))
    form.update({f.name: f.show(_lookup(d, f.key)) for f in FIELDS})
    return form


def _shell_choice(definition: dict, target: str) -> str:
    if definition.get("shell"):
        return "yes" if not shell_syntax(target) else "auto"
    return "no" if definition.get("command") and shell_syntax(target) else "auto"


def _lookup(definition: dict, key: str):
    value: Any = definition
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return OMIT
        value = value[part]
    return value


def _trigger_to_form(trigger: dict) -> dict[str, str]:
    if trigger.get("type") == "interval":
        units = {"weeks": 604800, "days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}
        total = sum(float(trigger.get(u) or 0) * n for u, n in units.items())
        return {"interval_seconds": str(int(total)) if total.is_integer() else str(total)}
    if trigger.get("type") == "date":
        return {"run_date": show_text(trigger.get("run_date"))}
    if trigger.get("expression"):
        return {"cron_expression": trigger["expression"]}
    fields = ("minute", "hour", "day", "month", "day_of_week")
    return {"cron_expression": " ".join(str(trigger.get(f, "*")) for f in fields)}


def copy_id(job_id: str, taken: Callable[[str], bool]) -> str:
    """A free id for a copy of ``job_id``: ``<id>_copy``, then ``<id>_copy2``... (the id cut
    to fit 64 characters)."""
    for n in range(1, 1000):
        suffix = "_copy" if n == 1 else f"_copy{n}"
        candidate = job_id[:64 - len(suffix)] + suffix
        if not taken(candidate):
            return candidate
    return job_id[:59] + "_copy"


def advanced_in_use(form: dict[str, str], errors: dict[str, str]) -> bool:
    """Whether the folded-away part must start open: a value off its default, or an error."""
    fresh = new_form()
    return any(form[f.name] != fresh[f.name] or f.name in errors for f in FIELDS)


# The id of each field's input where it is not f-<name> (views/_job_form.tpl); a choice links
# to its first radio button, which exists whatever was posted
_INPUT_IDS = {"cron_expression": "f-cron", "interval_seconds": "f-interval",
              "run_date": "f-run-date", "max_instances": "f-max", "trigger_type": "tt-cron",
              "kind": "kind-python"}


def error_links(errors: dict[str, str]) -> list[dict[str, str]]:
    """The form's errors in the order of its fields, each with its field's label (catalog key)
    and the id of its input: the summary at the top links to fields that may sit folded away
    in "More options". The general error is shown at the top already."""
    links = []
    for name in (n for n in FORM_FIELDS if n in errors):
        label = "form.trigger" if name == "trigger_type" else f"field.{name}"
        links.append({"anchor": _INPUT_IDS.get(name, f"f-{name}"), "label": label,
                      "message": errors[name]})
    return links


def error_field(field: str, trigger_type: str) -> str:
    """The form field that shows a validation error of jobs.yaml field ``field``."""
    head, _, rest = field.partition(".")
    if head == "trigger":
        if rest == "timezone":
            return "timezone"
        by_key = {f.key.removeprefix("trigger."): f.name for f in FIELDS
                  if f.key.startswith("trigger.")}
        return by_key.get(rest, TRIGGER_FIELD.get(trigger_type) or "trigger_type")
    if head in ("func", "command"):
        return "target"
    by_key = {f.key: f.name for f in FIELDS}
    if field in by_key or head in by_key:
        return by_key.get(field, by_key.get(head))
    if head == "retries":
        return "retries_max"
    return head if head in BASIC_FIELDS else "_general"


def read_declared(form) -> dict:
    """The job page's fields of declared params (``param.NAME``) as a run's body part: an
    empty field is left out (the default applies); nothing when the form has none."""
    values = {name.removeprefix("param."): form.getunicode(name) or "" for name in form
              if name.startswith("param.")}
    given = {name: value for name, value in values.items() if value != ""}
    return {"params": given} if values else {}
