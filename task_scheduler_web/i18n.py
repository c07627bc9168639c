"""Languages and time zones of the GUI.

Every string the GUI shows is a key of the message catalogs in ``messages/<lang>.json``: one flat
JSON object per language, ``{"key": "text with {placeholders}"}``; a value may be
``{"one": ..., "other": ...}`` where English needs a plural. Adding a language is adding one file.

The core writes its validation messages in English (the log and ``task-scheduler validate`` stay
English). The ``v.*`` keys of en.json repeat those messages as patterns; ``translate_message``
matches a core message against them and renders the same key of the chosen language, so the GUI
shows config and form errors in that language with line numbers, field names and values
unchanged. A placeholder ``{name:ns}`` in an English pattern is itself translated: by the value of
the ``ns.*`` key whose English text it is, else by the ``ns.*`` patterns. A message that matches
nothing is shown as it is.

Times are shown in the service's time zone, or in the browser's when the person asked for it
(the ``ts_tz`` cookie, set by ``?tz=``); the zone is always named next to the times.
"""
from __future__ import annotations

import functools
import json
import os
import re
import zoneinfo
from datetime import UTC, datetime, tzinfo

HERE = os.path.dirname(os.path.abspath(__file__))
MESSAGES = os.path.join(HERE, "messages")
DEFAULT_LANGUAGE = "en"
LANG_COOKIE, TZ_COOKIE = "ts_lang", "ts_tz"
_ZONE_NAME = re.compile(r"[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+){0,2}")
_UNITS = (("weeks", 604800), ("days", 86400), ("hours", 3600), ("minutes", 60), ("seconds", 1))
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([a-z_]+)(?::([a-z]+))?\}")


@functools.cache
def catalogs() -> dict[str, dict]:
    """Every catalog by language code (the file name), English first."""
    found = {}
    for name in sorted(os.listdir(MESSAGES), key=lambda n: (n != "en.json", n)):
        if name.endswith(".json"):
            with open(os.path.join(MESSAGES, name), encoding="utf-8") as fh:
                found[name.removesuffix(".json")] = json.load(fh)
    return found


def languages() -> list[tuple[str, str]]:
    """(code, name in that language) of every catalog, for the language switch."""
    return [(code, messages.get("_name", code)) for code, messages in catalogs().items()]


def choose_language(asked: str | None, cookie: str | None, accept: str | None) -> str:
    """The language to speak: ``?lang=``, else the cookie, else Accept-Language, else English."""
    known = catalogs()
    for candidate in (asked, cookie):
        if candidate in known:
            return candidate
    for tag in _accepted(accept or ""):
        base = tag.split("-")[0]
        if base in known:
            return base
    return DEFAULT_LANGUAGE


def _accepted(header: str) -> list[str]:
    """The language tags of an Accept-Language header, most wanted first (q=0 left out)."""
    ranked = []
    for index, item in enumerate(header.split(",")):
        tag, _, params = item.strip().lower().partition(";")
        weight = re.search(r"q=([0-9.]+)", params)
        quality = float(weight[1]) if weight and _is_float(weight[1]) else 1.0
        if tag and quality > 0:
            ranked.append((-quality, index, tag))
    return [tag for _, _, tag in sorted(ranked)]


def _is_float(text: str) -> bool:
    return bool(re.fullmatch(r"[0-9]+(\.[0-9]*)?|\.[0-9]+", text))


def zone_named(name: str | None) -> tzinfo | None:
    """The IANA zone of a cookie or query value, or None when it is not one."""
    if not name or len(name) > 64 or not _ZONE_NAME.fullmatch(name):
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


class Locale:
    """What a page needs to speak one language and show times in one zone."""

    def __init__(self, lang: str, zone: tzinfo, service_zone: tzinfo):
        self.lang, self.zone, self.service_zone = lang, zone, service_zone
        self.messages, self.english = catalogs()[lang], catalogs()[DEFAULT_LANGUAGE]
        self.browser_zone = str(zone) != str(service_zone)
        self._words: dict = {}

    def t(self, key: str, **params) -> str:
        """The text of ``key`` in this language (English when missing), placeholders filled."""
        text = self.messages.get(key, self.english.get(key, key))
        if isinstance(text, dict):
            text = text["one"] if params.get("n") == 1 and "one" in text else text["other"]
        return text.format(**params) if params else text

    def word(self, namespace: str, value) -> str:
        """A status, state or role word: ``word("status", "failed")``; unknown ones as they are.
        Remembered for this page: a timeline asks for a few words a thousand times."""
        key = f"{namespace}.{value}"
        word = self._words.get(key)
        if word is None:
            word = self._words[key] = self.t(key) if key in self.english else str(value)
        return word

    # times

    def time(self, iso: str | datetime | None) -> str:
        moment = iso if isinstance(iso, datetime) else parse_time(iso)
        return moment.astimezone(self.zone).strftime(self._datetime_format) if moment else "—"

    @functools.cached_property
    def _datetime_format(self) -> str:
        return self.t("fmt.datetime")

    def clock(self, moment: datetime, with_day: bool = False) -> str:
        """A tick label: the wall-clock time, or the day for week-long ranges."""
        local = moment.astimezone(self.zone)
        if not with_day:
            return local.strftime("%H:%M")
        weekday = self.t("fmt.weekdays").split()[local.weekday()]
        return self.t("fmt.day_tick", wd=weekday, d=local.day, m=local.month)

    def ago(self, iso: str | None, now: datetime | None = None) -> str:
        moment = parse_time(iso)
        if not moment:
            return ""
        seconds = (moment - (now or datetime.now(UTC))).total_seconds()
        if abs(seconds) < 1:
            return self.t("time.now")
        key = "time.in" if seconds > 0 else "time.ago"
        return self.t(key, span=self.span(abs(seconds)))

    def since(self, seconds: float) -> str:
        """``3 min ago`` from an age in seconds (a node's heartbeat)."""
        return self.t("time.now") if seconds < 1 else self.t("time.ago", span=self.span(seconds))

    def span(self, seconds: float) -> str:
        for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
            if seconds >= size:
                return self.t(f"span.{unit}", n=int(seconds // size))
        return self.t("span.s", n=int(seconds))

    def duration(self, seconds: float | None) -> str:
        if seconds is None:
            return "—"
        if seconds < 0.005:   # would print as 0.00 s
            return self.t("duration.tiny")
        if seconds < 60:
            return self.t("duration.s", n=f"{seconds:.2f}" if seconds < 10 else f"{seconds:.1f}")
        minutes, rest = divmod(int(seconds), 60)
        if minutes < 60:
            return self.t("duration.min_s", m=minutes, s=rest)
        return self.t("duration.h_min", h=minutes // 60, m=minutes % 60)

    def trigger(self, job: dict) -> str:
        """A job's trigger in words: intervals and dates in this language, with every unit
        (``every 1 h 30 min``); crontab lines as they are written."""
        trigger = job.get("trigger") or {}
        zone = f" ({trigger['timezone']})" if trigger.get("timezone") else ""
        if trigger.get("type") == "interval":
            seconds = sum(float(trigger.get(unit) or 0) * size for unit, size in _UNITS)
            return self.t("trig.every", every=self.exact_span(seconds)) + zone
        if trigger.get("type") == "date":
            return self.t("trig.once", when=str(trigger.get("run_date"))) + zone
        if trigger.get("type") == "manual" and job.get("after"):   # no schedule of its own
            return self.t("trig.after", job=job["after"]["job"])
        if trigger.get("type") == "heartbeat":
            return self.t("trig.heartbeat", every=trigger.get("every"),
                          grace=trigger.get("grace") or 0)
        if trigger.get("type") == "business_day":
            day = int(trigger.get("day") or 1)
            key = "trig.bday" if day > 0 else "trig.bday_last" if day == -1 else "trig.bday_end"
            return self.t(key, n=abs(day), at=trigger.get("at") or "00:00",
                          calendar=trigger.get("calendar")) + zone
        return str(job.get("trigger_text") or "")

    def exact_span(self, seconds: float) -> str:
        parts = []
        for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
            count, seconds = divmod(seconds, size)
            if count:
                parts.append(self.t(f"span.{unit}", n=int(count)))
        if seconds or not parts:
            parts.append(self.t("span.s", n=f"{seconds:g}"))
        return self.t("span.join").join(parts)

    def zone_label(self, zone: tzinfo | None = None) -> str:
        """``Asia/Tokyo (UTC+09:00)``: the name people know and the offset of right now."""
        zone = zone or self.zone
        offset = datetime.now(zone).strftime("%z")
        return f"{zone} (UTC{offset[:3]}:{offset[3:]})"

    def winter_summer(self) -> str:
        """The service zone's offsets on 1 January and 1 July, as JavaScript's
        getTimezoneOffset() gives them (minutes behind UTC): the browser's zone is offered only
        when it differs ('UTC' and 'Etc/UTC' do not)."""
        year = datetime.now(UTC).year
        return ",".join(str(int(-datetime(year, month, 1, tzinfo=self.service_zone)
                                .utcoffset().total_seconds() // 60)) for month in (1, 7))

    # messages of the core

    def message(self, text: str) -> str:
        """A core message (validation, conflicts, not found) in this language, where it is one
        of ours; anything else as it is."""
        if self.lang == DEFAULT_LANGUAGE:
            return text
        return translate_message(text, self.lang) or text


def parse_time(iso: str | None) -> datetime | None:
    try:
        moment = datetime.fromisoformat(iso) if iso else None
    except (TypeError, ValueError):
        return None
    return moment.replace(tzinfo=UTC) if moment and not moment.tzinfo else moment


def translate_message(text: str, lang: str, namespace: str = "v") -> str | None:
    """``text`` rendered by the ``namespace`` key whose English pattern it matches, or None."""
    target = catalogs()[lang]
    for key, pattern, converters in _patterns(namespace):
        match = pattern.fullmatch(text)
        if match and key in target:
            values = {name: _convert(value, converters.get(name), lang)
                      for name, value in match.groupdict().items()}
            return target[key].format(**values)
    return None


def _convert(value: str, namespace: str | None, lang: str) -> str:
    if not namespace or not value:
        return value
    english, target = catalogs()[DEFAULT_LANGUAGE], catalogs()[lang]
    for key, text in english.items():
        if key.startswith(namespace + ".") and text == value and key in target:
            return target[key]
    if " or " in value:   # a list of types: 'text or a list'
        parts = [_convert(part, namespace, lang) for part in value.split(" or ")]
        return target.get("v.or", " or ").join(parts)
    return translate_message(value, lang, namespace) or value


@functools.cache
def _patterns(namespace: str) -> list[tuple[str, re.Pattern, dict]]:
    """The English texts of ``namespace.*`` as regular expressions, the most literal first."""
    found = []
    for key, text in catalogs()[DEFAULT_LANGUAGE].items():
        if key.startswith(namespace + ".") and isinstance(text, str):
            regex, converters = _pattern(text)
            found.append((len(_PLACEHOLDER.sub("", text)), key, regex, converters))
    found.sort(key=lambda item: -item[0])
    return [(key, re.compile(regex, re.DOTALL), conv) for _, key, regex, conv in found]


def _pattern(text: str) -> tuple[str, dict]:
    parts, seen, converters, last = [], set(), {}, 0
    for match in _PLACEHOLDER.finditer(text):
        parts.append(re.escape(text[last:match.start()]))
        last = match.end()
        name = match[1]
        if name is None:
            parts.append(re.escape(match[0][0]))
        elif name in seen:
            parts.append(f"(?P={name})")
        else:
            seen.add(name)
            converters[name] = match[2]
            parts.append(f"(?P<{name}>.*?)")
    parts.append(re.escape(text[last:]))
    return "".join(parts), converters
