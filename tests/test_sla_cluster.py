"""SLA breaches across a failover, with real `task-scheduler` processes on PostgreSQL: the leader
records a late start, a long run and a silent heartbeat and queues their notifications, is
killed (kill -9) before any is delivered (the receiver refuses its attempts), and the next
leader delivers each exactly once, deciding none of them again."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from conftest import wait_for, write_jobs
from test_cluster import cluster, db, leader_of  # noqa: F401  (fixtures)
from test_notify import receiver  # noqa: F401  (the fixture: a real local webhook receiver)
from test_sla import soon

pytestmark = pytest.mark.postgres
SLA_EVENTS = ["late", "long_running", "overdue"]


def table(engine, name: str) -> list:
    with engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT * FROM {name} ORDER BY id")).all()


@pytest.mark.slow
def test_a_killed_leaders_breaches_are_delivered_once_by_the_next(
        tmp_path, cluster, db, receiver):  # noqa: F811  (the fixtures imported above)
    receiver.status = 503   # every attempt of the first leader fails: it dies with them unsent
    write_jobs(tmp_path / "jobs.yaml", f"""
        - id: stuck
          command: 'true'
          run_on: [nowhere]
          trigger: {{type: date, run_date: '{soon(3)}'}}
          sla: {{start_within: 1s}}
          notify: [{{webhook: '{receiver.url()}', on: [late]}}]
        - id: slow
          command: sleep 60
          timeout: 8
          trigger: {{type: manual}}
          sla: {{max_duration: 1s}}
          notify: [{{webhook: '{receiver.url()}', on: [long_running]}}]
        - id: backup
          trigger: {{type: heartbeat, every: 2s}}
          notify: [{{webhook: '{receiver.url()}', on: [overdue]}}]
    """)
    first, second = cluster("node-a"), cluster("node-b")
    assert leader_of([first, second]) == "node-a"
    first.call("/api/jobs/slow/run", "POST")   # ends by its timeout, after the alert
    # Recorded with their notifications, and tried: the receiver refuses, so none is delivered.
    # (After a refusal the leader holds that destination's other notices for a while.)
    wait_for(lambda: sorted(b.event for b in table(db, "ts_sla_breaches")) == SLA_EVENTS, 30,
             0.1, "the three breaches")
    assert sorted(n.event for n in table(db, "ts_notifications")) == SLA_EVENTS
    wait_for(lambda: receiver.requests, 30, 0.1, "the first leader's (refused) first attempt")
    first.kill()
    refused = len(receiver.requests)
    receiver.status = 200
    wait_for(lambda: all(n.status == "sent" for n in table(db, "ts_notifications")), 90, 0.2,
             "the next leader to deliver the notifications")
    delivered = receiver.requests[refused:]
    assert sorted(r["headers"]["X-Task-Scheduler-Event"] for r in delivered) == SLA_EVENTS
    assert len({r["headers"]["X-Task-Scheduler-Delivery"] for r in delivered}) == 3
    assert second.get("/api/status")["leader"] == "node-b"
    # the next leader looked again (every second) and decided nothing twice
    assert sorted(b.event for b in table(db, "ts_sla_breaches")) == SLA_EVENTS
    assert len(table(db, "ts_notifications")) == 3
