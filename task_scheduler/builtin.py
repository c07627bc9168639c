"""Jobs that ship with task-scheduler (``task_scheduler:http_check``), for jobs.yaml to name."""

from __future__ import annotations

import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Optional

from .executor import _current_run


def http_check(url: str, timeout: float = 10.0, expect_status: int = 200,
               contains: Optional[str] = None) -> None:
    """A health check: GET ``url``; fails (raises) unless the status and body are as expected.
    A path (``/api/health``) means this service's own address, whatever port it listens on."""
    if url.startswith("/"):
        context = _current_run.get()
        base = context.service.base_url if context is not None else None
        if not base:
            raise RuntimeError(f"{url} is a path: it needs the address of the service running "
                               f"this job (task-scheduler run sets it); give a full URL")
        url = base + url
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            status, body = resp.status, resp.read(1 << 20).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read(1 << 20).decode("utf-8", "replace")
    elapsed = time.monotonic() - started
    print(f"GET {url} -> {status} in {elapsed * 1000:.0f} ms")
    if status != expect_status:
        raise RuntimeError(f"{url} answered {status}, expected {expect_status}")
    if contains is not None and contains not in body:
        raise RuntimeError(f"{url} answered without {contains!r}")
