"""Captured output: capped head-and-tail buffers, reading output back from an offset, masking
of secrets (the service's token, notification secrets, a run's env) in what a job prints, and a
python job's return value as stored (JSON, capped, masked)."""

from __future__ import annotations

import collections
import json
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Optional

from .config import Config


class CappedOutput:
    """Bytes of one stream, capped: the head and the tail are kept, a marker stands between.
    ``total`` counts every byte written: a reader tails by byte offsets into that stream."""

    def __init__(self, limit: int):
        self._half = max(limit // 2, 1)
        self._head = bytearray()
        self._tail: collections.deque = collections.deque()
        self._tail_size = 0
        self.dropped = 0
        self.total = 0
        self.nuls = 0   # NUL bytes seen: stored text shows them as U+FFFD (see output_text)
        self._lock = threading.Lock()

    def write(self, data: bytes) -> None:
        with self._lock:
            self.total += len(data)
            self.nuls += data.count(0)
            room = self._half - len(self._head)
            if room > 0:
                self._head += data[:room]
                data = data[room:]
            if not data:
                return
            self._tail.append(bytes(data))
            self._tail_size += len(data)
            while self._tail_size - len(self._tail[0]) >= self._half:
                self._tail_size -= len(self._tail[0])
                self.dropped += len(self._tail.popleft())

    @property
    def truncated(self) -> bool:
        """Whether the stored text leaves bytes out: also when no chunk was dropped whole but
        the one tail chunk is longer than the half kept of it (one big read: what a loaded
        machine's pipe hands over)."""
        with self._lock:
            return self.total > len(self._head) + min(self._tail_size, self._half)

    def parts(self) -> tuple[bytes, bytes, int]:
        """(head, tail, total): what is kept of the stream, and how long it is."""
        with self._lock:
            tail, head, total = b"".join(self._tail), bytes(self._head), self.total
        return head, tail[max(len(tail) - self._half, 0):], total

    def text(self) -> str:
        return output_text(*self.parts())


def output_text(head: bytes, tail: bytes, total: int) -> str:
    """The stored text of a stream: UTF-8 with replacement, and NUL (``find -print0``) as
    U+FFFD, which every database holds (PostgreSQL refuses NUL in text)."""
    dropped = total - len(head) - len(tail)
    if not dropped:
        return (head + tail).decode("utf-8", "replace").replace("\0", "\ufffd")
    return (head.decode("utf-8", "replace") + f"\n[... {dropped} bytes truncated ...]\n"
            + tail.decode("utf-8", "replace")).replace("\0", "\ufffd")


def _nul_note(out: CappedOutput, err: CappedOutput) -> str:
    """What a run's stderr says about NUL bytes replaced in its stored output."""
    said = [f"{n} NUL byte(s) of its {name}" for n, name in ((out.nuls, "stdout"),
                                                             (err.nuls, "stderr")) if n]
    return f"\n[task-scheduler: {' and '.join(said)} are stored as U+FFFD]\n" if said else ""


_TRUNCATED = re.compile(r"\n\[\.\.\. (\d+) bytes truncated \.\.\.\]\n")


def output_parts(text: str) -> tuple[bytes, bytes, int]:
    """``CappedOutput.parts`` of a stored output (``output_text`` read back)."""
    found = _TRUNCATED.search(text)
    if found is None:
        data = text.encode()
        return data, b"", len(data)
    head, tail = text[:found.start()].encode(), text[found.end():].encode()
    return head, tail, len(head) + int(found.group(1)) + len(tail)


def output_since(head: bytes, tail: bytes, total: int, offset: int) -> tuple[str, int]:
    """What came after byte ``offset`` of a stream that is still kept (a note stands for a
    dropped middle), and the offset to ask from next. A character cut by the end of what was
    written so far is left for the next call."""
    tail_start = max(total - len(tail), len(head))
    data = head[offset:]
    gap = tail_start - max(offset, len(head))
    if gap > 0:
        data += f"\n[... {gap} bytes not kept ...]\n".encode()
    data += tail[max(offset - tail_start, 0):]
    keep = len(data) - _partial_utf8(data)
    return data[:keep].decode("utf-8", "replace"), max(total - (len(data) - keep), offset)


MATCH_LINE = 240   # characters of a matching line shown: around the phrase when it is longer


def match_line(text: str, at: int, length: int, cut_left: bool = False,
               cut_right: bool = False) -> dict:
    """The line of ``text`` holding the match at ``at`` (``length`` characters), at most
    MATCH_LINE characters around it; ``cut_left``/``cut_right``: ``text`` is a window of a
    longer output. ``start`` is where the match begins in ``line`` (to highlight it)."""
    begin = text.rfind("\n", 0, at) + 1
    end = text.find("\n", at + length)
    cut_left, cut_right = cut_left and begin == 0, cut_right and end < 0
    line = text[begin:end if end >= 0 else len(text)].rstrip("\r")
    start = at - begin
    if len(line) > MATCH_LINE:   # keep the match, with what came just before it
        left = max(0, min(start - MATCH_LINE // 4, len(line) - MATCH_LINE))
        cut_left, cut_right = cut_left or left > 0, cut_right or left + MATCH_LINE < len(line)
        line, start = line[left:left + MATCH_LINE], start - left
    if cut_left:
        line, start = "…" + line, start + 1
    if cut_right:
        line += "…"
    return {"line": line, "start": start, "length": min(length, len(line) - start)}


def find_line(streams: dict, phrase: str) -> Optional[dict]:
    """The first line of ``streams`` ({name: text}) holding ``phrase``, any case; None when
    none does."""
    folded = phrase.casefold()
    for stream, text in streams.items():
        for number, line in enumerate(text.splitlines(), 1):
            found = re.search(re.escape(phrase), line, re.IGNORECASE)
            if found is None and folded not in line.casefold():
                continue
            at = found.start() if found else 0
            return {"stream": stream, **match_line(line, at, len(phrase)),
                    "line_number": number}
    return None


def _partial_utf8(data: bytes) -> int:
    """How many bytes at the end of ``data`` begin a UTF-8 character not yet complete."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:   # the first byte of a character: does it need more?
            need = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else \
                4 if byte & 0xF8 == 0xF0 else 1
            return back if need > back else 0
    return 0


MASK_REFRESH = 5.0   # seconds a run may go on masking every job's secrets as they were
MIN_MASKED = 4   # shorter values would mask ordinary text (a password "pw" in every "pwd")
MASK = b"***"


class SecretMask:
    """Known secret values (the token, passwords in the database and SMTP URLs, notify targets'
    secrets, headers and URLs), replaced by ``***`` in what a run writes, as CI systems mask
    secrets in their logs. A stream is masked as it is captured: the end of a piece that could
    begin a secret is held back until the next piece tells (``split``)."""

    def __init__(self, values):
        found = sorted({v.encode() for v in values if isinstance(v, str) and
                        len(v.strip()) >= MIN_MASKED}, key=len, reverse=True)
        self.empty = not found
        self._pattern = re.compile(b"|".join(map(re.escape, found))) if found else None
        self._prefixes = {s[:k] for s in found for k in range(1, len(s))}
        self._ends = {p[-1] for p in self._prefixes}   # a piece ending in "\n" holds nothing
        self._longest = max(map(len, found), default=0)

    def bytes(self, data: bytes) -> bytes:
        return data if self._pattern is None else self._pattern.sub(MASK, data)

    def text(self, text: Optional[str]) -> Optional[str]:
        if self._pattern is None or not text:
            return text
        return self.bytes(text.encode("utf-8", "surrogatepass")).decode("utf-8", "replace")

    def split(self, data: bytes) -> tuple[bytes, bytes]:
        """(masked, held back): ``data`` masked up to where a secret may have begun."""
        if self._pattern is None:
            return data, b""
        hold = 0 if not data or data[-1] not in self._ends else next(
            (k for k in range(min(self._longest - 1, len(data)), 0, -1)
             if data[-k:] in self._prefixes), 0)
        cut, pos, parts = len(data) - hold, 0, []
        for found in self._pattern.finditer(data):
            if found.start() >= cut:
                break
            parts += [data[pos:found.start()], MASK]
            pos = found.end()
        cut = max(cut, pos)   # a secret that ran into the held-back end is masked whole
        parts.append(data[pos:cut])
        return b"".join(parts), data[cut:]


def service_secrets(config: Config) -> list:
    """The secret values a service holds by its configuration."""
    values = [config.token]
    for url in (config.database_url, config.smtp_url):
        password = urllib.parse.urlsplit(url).password if url else None
        if password:
            values += [password, urllib.parse.unquote(password)]
    return values


def notify_secrets(targets: list) -> list:
    """The secret values of notify targets: what ``redact_target`` hides from the API."""
    values = []
    for target in targets:
        values += [getattr(target, "secret", None), getattr(target, "slack", None),
                   *(getattr(target, "headers", None) or {}).values()]
        url = urllib.parse.urlsplit(getattr(target, "webhook", None) or "")
        if url.path not in ("", "/") or url.query:   # where redact_target hides the path
            values.append(url.geturl())
    return values


class MaskedOutput(CappedOutput):
    """A CappedOutput that never holds a secret: what is written is masked before it is kept
    (so the head/tail cap and live readers only ever see ``***``)."""

    def __init__(self, limit: int, mask: SecretMask):
        super().__init__(limit)
        self._mask, self._held, self._mask_lock = mask, b"", threading.Lock()

    def write(self, data: bytes) -> None:
        if self._mask.empty:
            return super().write(data)
        with self._mask_lock:   # one order of pieces: threads of a python job write too
            ready, self._held = self._mask.split(self._held + bytes(data))
            if ready:
                super().write(ready)

    def settle(self) -> str:
        """The stream has ended: what was held back goes in, masked. Returns the final text."""
        with self._mask_lock:
            held, self._held = self._held, b""
            if held:
                super().write(self._mask.bytes(held))
        return self.text()


# Bytes of a result's JSON text: a value to pass on (a count, an id, a small report), not a data
# set; one over it is refused whole rather than cut, as cut JSON would not parse.
RESULT_LIMIT = 64 * 1024


def result_text(value: Any, mask: SecretMask, limit: int = RESULT_LIMIT
                ) -> tuple[Optional[str], str]:
    """A python job's return value as stored: (its JSON text with secrets masked, or None; a
    note for the run's stderr saying why a value was not recorded, or ""). None is no result."""
    if value is None:
        return None, ""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, default=_not_json)
    except (TypeError, ValueError, RecursionError) as exc:
        return None, (f"\n[task-scheduler: its return value was not recorded as the run's "
                      f"result: {exc}]\n")
    size = len(text.encode())
    if size > limit:
        return None, (f"\n[task-scheduler: its return value was not recorded as the run's "
                      f"result: {size} bytes of JSON, over the {limit}-byte limit]\n")
    return mask.text(text), ""


def _not_json(value: Any) -> Any:
    raise TypeError(f"a {type(value).__qualname__} is not JSON-serialisable")
