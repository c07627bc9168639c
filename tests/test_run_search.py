"""Finding runs (issue 25, item 3): GET /api/runs filters by since/until, trigger and node, and
``q`` finds runs whose stdout or stderr holds a phrase (SQLite FTS5 trigram, PostgreSQL pg_trgm),
Japanese too, as typed (no operators, no wildcards), any case; each run then carries its first
matching line, masked as output is. The index follows every write: ended runs, runs ending,
runs deleted by retention; a database of an older release gains it."""
from __future__ import annotations

import datetime as dt
import html
import itertools
import shutil
import sqlite3

import pytest
import sqlalchemy as sa

import task_scheduler as ts
import task_scheduler.store.queries as ts_queries
import task_scheduler.store.schema as ts_schema
from conftest import Client, final_runs, wait_for
from task_scheduler.output import MATCH_LINE, match_line
from test_old_database import OLD_DB, OLD_JOBS_YAML

T0 = dt.datetime(2026, 11, 1, 12, 0)
ATTEMPTS = itertools.count(1)


def seed(service, *runs: dict) -> list[str]:
    """Runs written straight into ts_runs, oldest first, an hour apart from T0 (ended unless
    they say otherwise): the ids, oldest first."""
    rows = []
    for n, fields in enumerate(runs):
        at = T0 + dt.timedelta(hours=n)
        rows.append({"id": ts_schema.new_run_id(), "job_id": "job", "trigger": "schedule",
                     "attempt": next(ATTEMPTS),   # a fire key of its own at any time
                     "scheduled_at": at, "started_at": at, "finished_at": at,
                     "status": "succeeded", "stdout": "", "stderr": "", **fields})
    service.store.runs.queue_runs(rows)
    return [r["id"] for r in rows]


def search(client, q: str, **query) -> dict:
    answer = client.get("/api/runs", query={"q": q, **query})
    assert answer.status == 200, answer
    return answer.json


def found(client, q: str, **query) -> list[str]:
    return [r["id"] for r in search(client, q, **query)["runs"]]


def fts_consistent(service) -> None:
    """SQLite: the FTS index agrees with ts_runs (FTS5's own check; it raises if not)."""
    if service.store.engine.dialect.name == "sqlite":
        with service.store.engine.begin() as conn:
            conn.exec_driver_sql(f"INSERT INTO {ts_schema.SEARCH_TABLE}"
                                 f"({ts_schema.SEARCH_TABLE}, rank) VALUES ('integrity-check', 1)")


@pytest.mark.both_databases
def test_a_phrase_is_found_in_stdout_or_stderr_in_any_case(client, service):
    first, second, _ = seed(
        service, {"stdout": "backup started\nCopied 3 files to the Archive\n"},
        {"stdout": "ok\n", "stderr": "retrying\nERROR: Connection timed out after 30s\n"},
        {"stdout": "nothing here\n"})
    answer = search(client, "connection TIMED out")
    assert [r["id"] for r in answer["runs"]] == [second] and answer["total"] == 1
    assert answer["runs"][0]["match"] == {
        "stream": "stderr", "line": "ERROR: Connection timed out after 30s", "line_number": 2,
        "start": 7, "length": len("connection TIMED out")}
    match = search(client, "files to the archive")["runs"][0]["match"]
    assert found(client, "files to the archive") == [first]
    assert (match["stream"], match["line_number"]) == ("stdout", 2)
    line = match["line"]
    assert line[match["start"]:match["start"] + match["length"]] == "files to the Archive"
    assert found(client, "no such phrase") == []
    assert "search_window" not in search(client, "no such phrase")


@pytest.mark.both_databases
def test_a_japanese_phrase_is_found_and_its_line_shown(client, service):
    backup, error = seed(service, {"stdout": "開始\nバックアップ完了 (120 MB)\n"},
                         {"stderr": "エラー: 接続がタイムアウトしました\n"})
    assert found(client, "バックアップ完了") == [backup]
    answer = search(client, "タイムアウト")
    assert [r["id"] for r in answer["runs"]] == [error]
    match = answer["runs"][0]["match"]
    assert match == {"stream": "stderr", "line": "エラー: 接続がタイムアウトしました",
                     "line_number": 1, "start": 8, "length": 6}
    assert found(client, "接続が") == [error]   # three characters: through the index too


@pytest.mark.both_databases
def test_what_a_person_types_is_searched_literally(client, service):
    texts = ['say "hi" now', "a*b glob", "100% done", "1000 done", "a_b under", "axb under",
             "x-y minus", "this OR that", "NEAR(a b)", "back\\slash", "it's quoted"]
    ids = dict(zip(texts, seed(service, *({"stdout": text + "\n"} for text in texts)),
                   strict=True))
    for phrase, text in [('"hi"', 'say "hi" now'), ("a*b", "a*b glob"), ("100%", "100% done"),
                         ("a_b", "a_b under"), ("x-y", "x-y minus"), ("OR that", "this OR that"),
                         ("NEAR(a", "NEAR(a b)"), ("k\\s", "back\\slash"), ("t's", "it's quoted")]:
        assert found(client, phrase) == [ids[text]], phrase
    # FTS5 syntax and LIKE wildcards are text: these match nothing, and nothing fails
    for phrase in ['hi" OR "done', "a* OR b", "%done", "1_00", "NEAR(a b, 3)", "-x", "a%"]:
        assert found(client, phrase) == [], phrase
    assert found(client, '"') == [ids['say "hi" now']] and found(client, "*") == [ids["a*b glob"]]


@pytest.mark.both_databases
def test_a_short_phrase_is_looked_for_in_the_newest_runs(client, service, monkeypatch):
    monkeypatch.setattr(ts_queries, "SEARCH_SCAN", 3)
    old, *_, new = seed(service, {"stdout": "ok\n"}, {"stdout": "-\n"}, {"stdout": "-\n"},
                        {"stdout": "fine, OK\n"})
    answer = search(client, "ok")
    assert [r["id"] for r in answer["runs"]] == [new] and answer["search_window"] == 3
    assert answer["runs"][0]["match"]["start"] == 6
    assert found(client, "ok", before=new) == [old]   # the window follows the cursor
    assert found(client, "%") == [] and found(client, "_") == [] and found(client, "-") != []


@pytest.mark.both_databases
def test_runs_deleted_by_retention_leave_the_index(client, service):
    ids = seed(service, *({"stdout": f"needle {n}\n"} for n in range(6)))
    assert found(client, "needle") == ids[::-1]
    assert service.store.retention.prune(keep_runs=2, keep_days=100000) == 4
    assert found(client, "needle") == ids[:-3:-1]
    assert search(client, "needle 0")["total"] == 0
    fts_consistent(service)
    seed(service, {"stdout": "needle again\n"})   # the index takes new rows after deletes
    assert search(client, "needle")["total"] == 3
    fts_consistent(service)


@pytest.mark.both_databases
def test_a_running_runs_output_is_found_and_indexed_when_it_ends(client, service):
    node = service.store.node
    run_id, = seed(service, {"status": "running", "finished_at": None, "node": node,
                             "stdout": "progress 50%\n"})
    assert found(client, "progress 50") == [run_id]
    with service.store.write() as conn:   # as the history writer ends a run
        service.store.runs.finish_runs(conn, [(run_id, {"status": "failed",
                                                        "stdout": "progress 100%\nall done\n"})])
    assert found(client, "progress 50") == [] and found(client, "all done") == [run_id]
    assert search(client, "all done")["runs"][0]["match"]["line_number"] == 2
    with service.store.write() as conn:   # an ended run's output changed: the index follows
        conn.execute(ts_schema.ts_runs.update().where(ts_schema.ts_runs.c.id == run_id)
                     .values(stdout="rewritten\n"))
    assert found(client, "all done") == [] and found(client, "rewritten") == [run_id]
    fts_consistent(service)


@pytest.mark.both_databases
def test_filters_combine_with_the_phrase_and_pages_follow_by_cursor(client, service):
    ids = seed(service, *({"stdout": f"needle {n}\n" if n % 4 else f"hay {n}\n",
                           "trigger": "manual" if n % 2 else "schedule",
                           "node": "node-a" if n < 6 else "node-b"} for n in range(12)))
    needles = [i for n, i in enumerate(ids) if n % 4][::-1]
    assert found(client, "needle", limit=50) == needles
    at = lambda n: (T0 + dt.timedelta(hours=n)).isoformat() + "Z"   # noqa: E731
    assert found(client, "needle", since=at(3), until=at(7)) == [ids[7], ids[6], ids[5], ids[3]]
    assert found(client, "needle", trigger="manual", node="node-b") == [ids[11], ids[9], ids[7]]
    assert found(client, "needle", node="node-a", until=at(2)) == [ids[2], ids[1]]
    assert [r["id"] for r in client.get("/api/runs", query={"node": "node-b", "since": at(10)})
            .json["runs"]] == [ids[11], ids[10]]
    pages, before = [], None   # two at a time, each page from the last one's last id
    while True:
        answer = search(client, "needle", limit=2, **({"before": before} if before else {}))
        if not answer["runs"]:
            break
        pages.append([r["id"] for r in answer["runs"]])
        assert answer["total"] == len(needles) - 2 * (len(pages) - 1)
        before = pages[-1][-1]
    assert [i for page in pages for i in page] == needles and len(pages) == 5
    newer = client.get("/api/runs", query={"q": "needle", "after": needles[4]})   # not a param
    assert newer.status == 400
    page = service.runs(q="needle", after=needles[4], limit=2)   # the GUI's "previous" link
    assert [r["id"] for r in page] == needles[2:4]


@pytest.mark.both_databases
def test_bad_filters_are_refused_with_their_name(client, service):
    seed(service, {"stdout": "x\n"})
    late = client.get("/api/runs", query={"since": "2026-01-02T00:00:00Z",
                                          "until": "2026-01-01T00:00:00Z"})
    assert late.status == 422 and late.json["error"]["details"][0]["field"] == "until"
    assert "before since" in late.json["error"]["message"]
    long = client.get("/api/runs", query={"q": "x" * (ts_schema.SEARCH_MAX + 1)})
    assert long.status == 400 and long.json["error"]["details"][0]["field"] == "q"
    assert search(client, "x" * ts_schema.SEARCH_MAX)["total"] == 0   # the limit itself is fine
    assert search(client, "   ")["total"] == 1   # blank: no search
    nul, = seed(service, {"stdout": "find \0 this\n".replace("\0", "\ufffd")})   # as stored
    assert found(client, "d \0 t") == [nul] and found(client, "\0") == [nul]
    for name, value in [("trigger", "cron"), ("until", "tomorrow"), ("node", ""),
                        ("node", "a\0b")]:
        answer = client.get("/api/runs", query={name: value})
        assert answer.status == 400 and name in answer.json["error"]["message"], answer


def test_the_matching_line_is_masked_and_a_secret_is_not_found(make_service, jobs_file):
    jobs_file.write_text("- id: leak\n  command: ['sh', '-c', 'echo start; "
                         "echo \"password=hunter2-secret-value ok\"']\n"
                         "  trigger: {type: manual}\n")
    service = make_service()
    service.secrets.append("hunter2-secret-value")
    client = Client(ts.create_app(service))
    service.run_now("leak")
    assert final_runs(service, "leak")[0]["status"] == "succeeded"
    service.flush()   # final_runs may see the end in the runner's memory before the database
    match = search(client, "password=")["runs"][0]["match"]
    assert match["line"] == "password=*** ok" and match["line_number"] == 2
    assert search(client, "hunter2")["total"] == 0


def test_a_long_line_is_shown_around_the_phrase():
    line = "x" * 1000 + "FOUND" + "y" * 1000
    shown = match_line(line, 1000, 5)
    assert len(shown["line"]) == MATCH_LINE + 2 and shown["line"][0] == shown["line"][-1] == "…"
    assert shown["line"][shown["start"]:shown["start"] + 5] == "FOUND"
    assert match_line("a\nb FOUND c\r\nd", 4, 5) == {"line": "b FOUND c", "start": 2, "length": 5}
    cut = match_line("ab FOUND cd", 3, 5, cut_left=True, cut_right=True)   # a window of more
    assert cut == {"line": "…ab FOUND cd…", "start": 4, "length": 5}


@pytest.mark.both_databases
def test_a_long_output_answers_its_line_from_a_window(client, service):
    long = "".join(f"line {n}\n" for n in range(20000)) + "the needle is here\n" + "z" * 5000
    run_id, = seed(service, {"stdout": "head\n", "stderr": long})
    match = search(client, "needle is")["runs"][0]["match"]
    assert match == {"stream": "stderr", "line": "the needle is here", "line_number": 20001,
                     "start": 4, "length": 9}
    tail = search(client, "zzzz")["runs"][0]["match"]
    assert tail["line"].startswith("z") and tail["line"].endswith("…")
    assert tail["line_number"] == 20002 and run_id


def test_an_older_database_gains_the_index(tmp_path):
    db = tmp_path / "ts.sqlite"
    shutil.copyfile(OLD_DB, db)
    shutil.copyfile(OLD_JOBS_YAML, tmp_path / "jobs.yaml")
    conn = sqlite3.connect(db)
    before = conn.execute("SELECT count(*) FROM ts_runs WHERE stdout LIKE '%hi from params%'"
                          ).fetchone()[0]
    conn.close()
    service = ts.SchedulerService(ts.Config(
        config_path=str(tmp_path / "jobs.yaml"), database_url=f"sqlite:///{db}", port=0,
        poll_interval=3600, keep_days=100000)).start()
    try:
        client = Client(ts.create_app(service))
        answer = search(client, "HI FROM PARAMS")
        assert before > 0 and answer["total"] == before
        assert {r["job_id"] for r in answer["runs"]} == {"yaml_manual"}
        assert found(client, "crontab-err") and found(client, "failing")
        fts_consistent(service)
    finally:
        service.stop(grace=2)


@pytest.mark.postgres
def test_without_pg_trgm_search_still_works_by_a_scan(postgres_url, tmp_path, monkeypatch,
                                                     caplog):
    monkeypatch.setattr(ts_schema, "_trigram_found", lambda conn: None)   # as if not there
    (tmp_path / "jobs.yaml").write_text("[]\n")
    service = ts.SchedulerService(ts.Config(
        config_path=str(tmp_path / "jobs.yaml"), database_url=postgres_url, port=0,
        poll_interval=3600)).start()
    try:
        with service.store.engine.connect() as conn:
            names = {i["name"] for i in sa.inspect(conn).get_indexes("ts_runs")}
        assert not {n for n in names if n.endswith("_trgm")}
        run_id, = seed(service, {"stdout": "バックアップ完了\n"})
        assert found(Client(ts.create_app(service)), "バックアップ") == [run_id]
        said = [r.message for r in caplog.records if "pg_trgm" in r.message]
        assert len(said) == 1 and "could not be created" in said[0]
    finally:
        service.stop(grace=2)


def test_the_runs_page_filters_and_marks_the_phrase(client, service):
    hit, _ = seed(service, {"stdout": "<script>alert(1)</script> found the NEEDLE here\n",
                            "trigger": "manual", "node": "n1"},
                  {"stdout": "needle\n", "trigger": "schedule", "node": "n2"})
    page = client.get("/runs", query={"q": "needle", "trigger": "manual", "node": "n1",
                                      "since": "2026-10-01T00:00", "until": "2026-12-01T00:00"})
    assert page.status == 200
    body = page.text
    assert 'data-testid="run-search"' in body and 'value="needle"' in body
    assert body.count('data-testid="run-row"') == 1 and f'data-run-id="{hit}"' in body
    assert 'data-testid="run-match"' in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt; found the <mark>NEEDLE</mark> here" in body
    assert "<script>alert(1)" not in body
    assert "stdout line 1:" in body
    bad = client.get("/runs", query={"since": "yesterday", "until": "",
                                     "trigger": "cron", "q": "x" * 201})
    assert bad.status == 200
    errors = {f.split('"')[0] for f in bad.text.split('data-testid="form-error" data-field="')[1:]}
    assert errors == {"since", "trigger", "q"} and bad.text.count('data-testid="run-row"') == 2
    assert html.escape("yesterday") in bad.text
    short = client.get("/runs", query={"q": "ne"})
    assert 'data-testid="search-window"' in short.text
    ja = client.get("/runs", query={"q": "needle", "lang": "ja"})
    assert "出力を検索" in ja.text and "stdout 1 行目:" in ja.text


@pytest.mark.postgres
def test_a_long_history_is_indexed_concurrently_after_start(postgres_url, tmp_path,
                                                           monkeypatch):
    """More runs than migrate indexes inline: built CONCURRENTLY beside the running service
    (an invalid leftover of an interrupted build is replaced); searches work all along."""
    monkeypatch.setattr(ts_schema, "SEARCH_INLINE", 1)
    engine = ts_schema.create_engine(postgres_url)
    ts_schema.migrate(engine)   # two runs already: migrate leaves the index to after start
    with engine.begin() as conn:
        conn.execute(ts_schema.ts_runs.insert(), [
            {"id": ts_schema.new_run_id(), "job_id": "old", "trigger": "schedule",
             "scheduled_at": T0 + dt.timedelta(hours=n), "status": "succeeded", "attempt": 1,
             "truncated": False, "run_on": "", "cancel_requested": False,
             "stdout": f"old run {n} バックアップ完了\n"} for n in range(2)])
        conn.exec_driver_sql("DROP INDEX IF EXISTS ix_ts_runs_stdout_trgm, ix_ts_runs_stderr_trgm")
        conn.exec_driver_sql("CREATE INDEX ix_ts_runs_stdout_trgm ON ts_runs (stdout)")
        conn.exec_driver_sql("UPDATE pg_index SET indisvalid = false WHERE indexrelid = "
                             "'ix_ts_runs_stdout_trgm'::regclass")   # as a crash leaves it
    ts_schema.migrate(engine)
    assert ts_schema._index_valid(engine.connect(), "ix_ts_runs_stderr_trgm") is None
    (tmp_path / "jobs.yaml").write_text("[]\n")
    service = ts.SchedulerService(ts.Config(
        config_path=str(tmp_path / "jobs.yaml"), database_url=postgres_url, port=0,
        poll_interval=3600, keep_days=100000)).start()
    try:
        client = Client(ts.create_app(service))
        assert search(client, "バックアップ")["total"] == 2   # before, while, after: the same

        def built():
            with engine.connect() as conn:
                return all(ts_schema._index_valid(conn, name)
                           for name, _ in ts_schema._TRIGRAM_INDEXES)
        wait_for(built, 30, message="the concurrent index build")
        with engine.connect() as conn:
            definition = conn.exec_driver_sql(
                "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_ts_runs_stdout_trgm'"
            ).scalar()
        assert "gin_trgm_ops" in definition and "status" in definition
        assert search(client, "バックアップ")["total"] == 2
        assert not ts_schema.build_search_index(engine)   # done: nothing to build again
    finally:
        service.stop(grace=2)
        engine.dispose()
