"""No stalls under load, no lost fires across a database outage: API writes and jobs.yaml saves
while 20 jobs fire every second never wait on the fire loop (it once deadlocked for the 30 s
busy timeout), and every fire time gets exactly one row, through an outage and after it."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from urllib.parse import urlsplit, urlunsplit

import pytest

import task_scheduler as ts
from bench import chaos
from conftest import Client, wait_for, write_jobs

TWENTY = "".join(f"- {{id: tick{i:02d}, command: 'true', "
                 f"trigger: {{type: interval, seconds: 1}}}}\n" for i in range(20))


def fire_times_of(service, job_id):
    service.flush()
    runs = service.runs(job_id=job_id, limit=1000)
    return sorted((r for r in runs if r["trigger"] in ("schedule", "catchup")),
                  key=lambda r: r["scheduled_at"])


def assert_every_second_has_one_row(runs, since, until):
    """Fire times one second apart from the first to the last: none left out, none twice."""
    times = [dt.datetime.fromisoformat(r["scheduled_at"]) for r in runs]
    times = [t for t in times if since <= t <= until]
    assert len(times) == len(set(times)), "a fire time has two rows"
    gaps = [(a, b) for a, b in zip(times, times[1:], strict=False)
            if (b - a).total_seconds() > 1.5]
    assert not gaps, f"fire times without a row between {gaps[:3]}"
    return times


def test_api_writes_and_saves_never_wait_on_the_fire_loop(tmp_path, make_service, caplog):
    caplog.set_level(logging.WARNING, logger="task_scheduler")
    jobs = write_jobs(tmp_path / "jobs.yaml", TWENTY)
    service = make_service(config_path=str(jobs), max_workers=30, debounce=0.05)
    client = Client(ts.create_app(service))
    started = dt.datetime.now(dt.UTC)
    stop, slowest, failures = threading.Event(), [0.0], []

    def timed(call, *args):
        begin = time.monotonic()
        response = call(*args)
        slowest[0] = max(slowest[0], time.monotonic() - begin)
        return response

    def churn():   # an API client creating and deleting jobs in a loop
        n = 0
        while not stop.is_set():
            n += 1
            created = timed(client.post, "/api/jobs", {
                "id": f"churn{n}", "command": "true", "trigger": {"type": "interval",
                                                                  "seconds": 1}})
            deleted = timed(client.delete, f"/api/jobs/churn{n}")
            if (created.status, deleted.status) != (201, 204):
                failures.append((created, deleted))

    def saves():   # a jobs.yaml save every 0.3 s
        n = 0
        while not stop.wait(0.3):
            n += 1
            write_jobs(jobs, TWENTY + f"# save {n}\n")

    def health():
        while not stop.wait(0.1):
            response = timed(client.get, "/api/health")
            if response.status != 200:
                failures.append(response)
    threads = [threading.Thread(target=f) for f in (churn, saves, health)]
    for thread in threads:
        thread.start()
    time.sleep(8)   # the load itself runs for this long
    stop.set()
    for thread in threads:
        thread.join(30)
    ended = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=2)
    assert not failures, failures[:3]
    print(f"slowest request under load: {slowest[0] * 1000:.0f} ms")
    assert slowest[0] < 1.0, f"a request took {slowest[0]:.2f}s"   # the deadlock took 30 s
    assert not [r for r in caplog.records if "locked" in r.getMessage()]
    for i in range(20):
        runs = fire_times_of(service, f"tick{i:02d}")
        assert_every_second_has_one_row(runs, started, ended)
        assert not [r for r in runs if r["status"] == "missed"], "a fire was missed"


class Outage(chaos.Proxy):
    """bench/chaos.py's TCP proxy in front of PostgreSQL: ``cut()`` closes every connection and
    refuses new ones (the database goes away, as far as the service can tell); ``restore()``
    ends that."""

    restore = chaos.Proxy.heal


@pytest.mark.slow
@pytest.mark.postgres
def test_every_fire_gets_one_row_through_a_database_outage(postgres_url, make_service):
    parts = urlsplit(postgres_url)
    outage = Outage((parts.hostname, parts.port or 5432))
    url = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{outage.port}"))
    try:
        service = make_service(database_url=url, config_path=None)
        service.add_job({"id": "tick", "command": "true", "misfire_grace_time": 30,
                         "trigger": {"type": "interval", "seconds": 1}})
        wait_for(lambda: len(fire_times_of(service, "tick")) >= 2, 10, message="first fires")
        started = dt.datetime.fromisoformat(fire_times_of(service, "tick")[0]["scheduled_at"])
        outage.cut()
        time.sleep(6)   # the outage itself
        outage.restore()
        cut_at = dt.datetime.now(dt.UTC)
        wait_for(lambda: len([r for r in fire_times_of(service, "tick")
                              if r["status"] == "succeeded"
                              and dt.datetime.fromisoformat(r["scheduled_at"]) > cut_at]) >= 5,
                 30, message="fires after the outage")
        runs = fire_times_of(service, "tick")
        ended = dt.datetime.fromisoformat(runs[-1]["scheduled_at"])
        assert_every_second_has_one_row(runs, started, ended)
        after = [r for r in runs if dt.datetime.fromisoformat(r["scheduled_at"]) > cut_at]
        assert not [r for r in after if r["status"] == "skipped"], "fires skipped after it"
        during = [r for r in runs if r["status"] == "missed"]
        assert during, "the fires due during the outage are recorded (coalesced: missed)"
    finally:
        outage.close()
