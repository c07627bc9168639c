"""The soak of issue 18 in CI: bench/soak.py's engine, about 35 s of random steps per database.

One soak runs per database (SQLite with one node; PostgreSQL with two nodes on one schema);
each invariant of ``bench.soak.INVARIANTS`` is then its own test, so a failure names the
invariant that broke (``test_invariant[sqlite-no_double_fire]``) and prints the seed, the step
list and the command that replays it. ``TS_SOAK_SEED`` fixes the seed (default: a new one each
run, printed); ``TS_SOAK_SECONDS`` the length.

KNOWN_DEFECTS: invariants a known, not yet fixed defect breaks. A broken invariant listed there
is reported as xfail (with the violations) instead of failing; one that holds passes. It is empty:
issue 18's fixes have landed, and any violation fails the build.
"""

from __future__ import annotations

import os
import random

import pytest

from bench import soak
from conftest import wait_for

KNOWN_DEFECTS: dict[str, str] = {
    # invariant -> the defect that breaks it today, while a fix is on its way (an xfail that
    # shows the violations). Empty: since issue 18's fixes landed any violation fails.
}

SECONDS = float(os.environ.get("TS_SOAK_SECONDS", "35"))
MIN_STEPS = 20   # with Plan.GUARANTEE 12: each essential operation at least once
# One soak per database and worker (the module's ``reports``): each database's tests share a worker.
DATABASES = [pytest.param("sqlite", marks=pytest.mark.xdist_group("soak-sqlite")),
             pytest.param("postgres", marks=[pytest.mark.postgres,
                                             pytest.mark.xdist_group("soak-postgres")])]


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """{database: Report}, each soak run once for all the invariant tests of its database."""
    done: dict[str, soak.Report] = {}

    def report_for(db: str) -> soak.Report:
        if db not in done:
            done[db] = run_soak(db, tmp_path_factory.mktemp(f"soak-{db}"))
        return done[db]
    return report_for


def run_soak(db: str, folder) -> soak.Report:
    if db == "postgres" and not os.environ.get("TS_TEST_POSTGRES_URL"):
        if os.environ.get("CI"):
            pytest.fail("TS_TEST_POSTGRES_URL is not set: PostgreSQL tests are required in CI")
        pytest.skip("TS_TEST_POSTGRES_URL is not set")
    seed = int(os.environ.get("TS_SOAK_SEED") or random.randrange(1 << 31))
    return soak.soak(db, SECONDS, seed, folder, min_steps=MIN_STEPS)


@pytest.mark.slow
@pytest.mark.parametrize("invariant", list(soak.INVARIANTS))
@pytest.mark.parametrize("db", DATABASES)
def test_invariant(reports, db, invariant):
    report = reports(db)
    assert report.checks[invariant] > 0, f"{invariant} was never checked\n{report.text()}"
    found = [v for v in report.violations if v.invariant == invariant]
    if found and invariant in KNOWN_DEFECTS:
        pytest.xfail(f"known defect ({KNOWN_DEFECTS[invariant]}): {len(found)} violation(s), "
                     f"first at step {found[0].step}: {found[0].message[:300]}")
    assert not found, (f"invariant {invariant} ({soak.INVARIANTS[invariant]}) broken "
                       f"{len(found)} time(s)\n{report.text()}")


@pytest.mark.slow
@pytest.mark.parametrize("db", DATABASES)
def test_soak_ran_every_kind_of_step(reports, db):
    """A soak that drew no restart or no jobs.yaml save would check little: a short run still
    covers each operation."""
    report = reports(db)
    ops = {name.split(":")[0] for name in report.counts}
    assert {"create", "run", "yaml_save", "restart"} <= ops, report.text(show_steps=False)


# ---- the invariant checks themselves can fail (quick: a crafted ts_runs, no service) ----

@pytest.fixture
def checker(tmp_path):
    engine = soak.sa.create_engine(f"sqlite:///{tmp_path / 'runs.sqlite'}")
    with engine.begin() as conn:
        conn.execute(soak.sa.text("CREATE TABLE ts_runs (id TEXT PRIMARY KEY, job_id TEXT, "
                                  "trigger TEXT, scheduled_at DATETIME, status TEXT, node TEXT)"))
    model = soak.Model()
    model.ready_at -= soak.dt.timedelta(seconds=600)
    yield soak.Checker(engine, model, f"TS_SOAK={soak.uuid.uuid4().hex}")
    engine.dispose()


def add_run(checker, run_id, job_id, trigger, at, status="succeeded"):
    with checker.engine.begin() as conn:
        conn.execute(soak.sa.text("INSERT INTO ts_runs VALUES (:i, :j, :t, :s, :st, 'n0')"),
                     dict(i=run_id, j=job_id, t=trigger, s=at.replace(tzinfo=None), st=status))


def test_no_double_fire_sees_a_catchup_of_a_fire_that_ran(checker):
    at = soak.utcnow().replace(microsecond=0)
    add_run(checker, "r1", "once", "schedule", at)
    add_run(checker, "r2", "other", "manual", at)
    add_run(checker, "r3", "other", "schedule", at)
    assert checker.no_double_fire() == []
    add_run(checker, "r4", "once", "catchup", at)
    found = checker.no_double_fire()
    assert len(found) == 1 and found[0].startswith("once at")
    assert checker.no_double_fire() == []   # a pair is reported once


def test_every_fire_has_row_sees_a_missing_fire(checker):
    now = soak.utcnow().replace(microsecond=0)
    start = now - soak.dt.timedelta(seconds=60)
    job = {"id": "tick", "trigger": {"type": "interval", "seconds": 10,
                                     "start_date": soak.iso(start)}}
    checker.model.accept("api", job, start - soak.dt.timedelta(seconds=5))
    for k in range(6):   # start .. start+50 s: every fire before now - SETTLE (12 s) but one
        if k != 3:
            add_run(checker, f"r{k}", "tick", "schedule", start + soak.dt.timedelta(seconds=10 * k))
    found = checker.every_fire_has_row(now)
    assert len(found) == 1 and "tick: no row for 1 fire(s)" in found[0]
    add_run(checker, "r3", "tick", "schedule", start + soak.dt.timedelta(seconds=30), "missed")
    assert checker.every_fire_has_row(now) == []


def test_nothing_stuck_sees_a_running_row_without_a_process(checker):
    add_run(checker, "gone", "job", "manual", soak.utcnow(), "running")
    found = checker.nothing_stuck(wait=1)
    assert len(found) == 1 and "run gone of job (running)" in found[0]


def test_max_instances_processes_counts_runs_in_proc(checker):
    checker.model.accept("api", {"id": "sleepy", "trigger": {"type": "manual"},
                                 "max_instances": 1}, soak.utcnow())
    name, value = checker.marker.split("=")
    procs = [soak.subprocess.Popen(["sleep", "30"], env={**os.environ, name: value,
                                                          "TS_JOB_ID": "sleepy",
                                                          "TS_RUN_ID": f"run{i}"})
             for i in range(2)]
    try:   # until both have exec'd: before that /proc shows this process's environment
        wait_for(lambda: len(soak.live_runs(checker.marker)) == 2, 10, message="two sleeps")
        found = checker.max_instances_processes()
        assert len(found) == 1 and found[0].startswith("sleepy: 2 runs have live processes")
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    assert checker.max_instances_processes() == []
