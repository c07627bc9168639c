"""The JSON API's handlers: one short function per route, each handing the call to the service."""

from __future__ import annotations

import json
import re
import time
from typing import Optional

import bottle
import sqlalchemy as sa

from ..access import check_raw_run, hide_env, hide_env_yaml
from ..config import __version__
from ..errors import SchedulerError, Unavailable
from .io import (
    CURSOR_PATTERN, YAML_TYPE, CalendarQuery, EventsQuery, JobQuery, JobsQuery, OutputQuery,
    PingQuery, _content_length, _json_body, _json_response, _query_params, _raw_body, _raw_json,
    _text, audit_query, runs_query)
from ..text import _clean


def api_index(service):
    """An index of this API: its name, version, and links to the docs and main collections."""
    root = bottle.request.script_name.rstrip("/")   # where the app is mounted: "" at the top
    return {"name": "task-scheduler", "version": __version__,
            "links": {name: f"{root}{path}" for name, path in INDEX_LINKS.items()}}


INDEX_LINKS = {"docs": "/api/docs", "openapi": "/api/openapi.json", "jobs": "/api/jobs",
               "runs": "/api/runs", "events": "/api/events", "nodes": "/api/nodes",
               "status": "/api/status", "health": "/api/health", "metrics": "/metrics"}


def api_health(service):
    """Liveness: 200 when the scheduler thread runs and the database answers, else 503."""
    ok, body = service.health()
    return (200 if ok else 503), body


def api_status(service):
    """Version, node, job counts, runs of the last 24 h by status, the state of jobs.yaml."""
    return service.status()


def api_list_jobs(service):
    """Jobs by id, filtered and paged; ``total`` counts every match."""
    text = service.jobs_json(**_query_params(JobsQuery).model_dump())
    if not _hides():   # the answer is kept for everyone; env is hidden per caller
        return _raw_json(200, text)
    body = json.loads(text)
    body["jobs"] = [hide_env(job, _actor()) for job in body["jobs"]]
    return _raw_json(200, json.dumps(body, ensure_ascii=False))


def api_create_job(service):
    """Create a job (source api) from one jobs.yaml entry as JSON.

    A command job runs any program as the service's user: see Security in docs/api.md."""
    return 201, service.add_job(_json_body())


def api_get_job(service, job_id):
    """One job, with its next five fire times and last run.

    A jobs.yaml job says where it is defined (defined_at: path and line). ?format=yaml answers
    the job as a jobs.yaml entry (application/yaml), secrets hidden as in the JSON."""
    if _query_params(JobQuery).format == "yaml":
        return _text(hide_env_yaml(service.job_yaml(job_id), _actor()), YAML_TYPE)
    return _raw_json(200, _shown([service.job_json(job_id)])[0])


def api_replace_job(service, job_id):
    """Replace a job created through the API.

    A jobs.yaml job answers 409: edit the file, or use Edit on the job's GUI page, which writes
    the file (checked against changes made meanwhile, with CSRF and the GUI's login)."""
    return service.replace_job(job_id, _json_body())


def api_delete_job(service, job_id):
    """Delete a job created through the API (a jobs.yaml job: 409); its runs stay."""
    service.delete_job(job_id)
    return 204, None


def _actor():
    return bottle.request.environ.get("ts.actor")


def _hides() -> bool:
    actor = _actor()
    return actor is not None and actor.role != "admin"


def _shown(texts: list) -> list:
    """Jobs' JSON texts as the caller may see them (hide_env)."""
    if not _hides():
        return texts
    return [json.dumps(hide_env(json.loads(t), _actor()), ensure_ascii=False) for t in texts]


def api_pause_job(service, job_id):
    """Pause a job (any source); the pause survives reloads and restarts."""
    return service.pause(job_id)


def api_resume_job(service, job_id):
    """Resume a paused job."""
    return service.resume(job_id)


def api_run_job(service, job_id):
    """Queue a run now (trigger manual); 409 while max_instances runs are going.

    An optional body gives this run its own kwargs and args (python) or args and env
    (commands), checked like the job's own; the job keeps its definition."""
    body = _json_body() if _content_length(bottle.request.environ) else None
    check_raw_run(bottle.request.environ.get("ts.actor"), body)
    return 202, {"run": service.run_now(job_id, body)}


def api_ping_job(service, job_id):
    """A heartbeat job's ping: recorded as an ended run (trigger ping).

    ``?status=fail`` records it failed; the body (any type, e.g. a log) is its output, capped
    and masked as a run's output. Takes the service token or the job's ping token."""
    query = _query_params(PingQuery)
    return 201, {"run": service.promises.ping(job_id, query.status == "fail", _raw_body())}


def api_ping_token(service, job_id):
    """Create or rotate a heartbeat job's ping token (it may ping this job, nothing else).

    The answer is the only time the token is shown: only its hash is kept."""
    answer = _json_response(201, service.promises.new_token(job_id))
    answer.set_header("Cache-Control", "no-store")
    return answer


def api_rerun_run(service, run_id):
    """Run a finished run's job again with the same parameters (trigger manual, rerun_of)."""
    return 202, {"run": service.rerun(run_id)}


def api_retry_run(service, run_id):
    """Run a finished workflow run's failed and skipped steps again.

    Its succeeded steps are kept; the run goes on as its next attempt. 409 for a run that is
    not a finished workflow run (docs/workflows.md)."""
    return 202, {"run": service.runlog.retry_workflow(run_id)}


def api_list_runs(service):
    """Runs, newest first, filtered and paged.

    ``total`` counts the matches up to ``offset`` + 1,000 (store.schema.TOTAL_CAP);
    ``total_capped`` is true when there are more. ``q`` searches the output."""
    page = service.runs(**runs_query().model_dump())
    answer = {"runs": list(page), "total": page.total, "total_capped": page.capped}
    if page.window:
        answer["search_window"] = page.window
    return answer


def api_get_run(service, run_id):
    """One run with its stdout and stderr (live while it runs)."""
    return hide_env(service.run(run_id), _actor())


def api_run_stdout(service, run_id):
    """A run's stdout as text.

    ``?offset=N`` answers JSON with what came after byte N, the new offset and whether the run
    goes on; ``Accept: text/event-stream`` streams it live (SSE)."""
    return _output(service, run_id, "stdout")


def api_run_stderr(service, run_id):
    """A run's stderr, as stdout is answered."""
    return _output(service, run_id, "stderr")


def _output(service, run_id: str, stream: str):
    query = _query_params(OutputQuery)
    if "text/event-stream" in bottle.request.get_header("Accept", ""):
        return _event_stream(service, run_id, stream, query.offset or 0)
    if query.offset is not None:
        return service.output(run_id, stream, query.offset)
    return _text(service.run(run_id)[stream])


def _event_stream(service, run_id: str, stream: str, offset: int) -> bottle.HTTPResponse:
    """Server-Sent Events: an ``output`` event per new piece, ``end`` when the run ends. Each
    stream holds a server thread, so only a few at a time (clients may poll ?offset instead)."""
    service.output(run_id, stream, offset)   # 404 now, not inside the stream

    def events():
        try:
            at, quiet = offset, 0.0
            while True:
                out = service.output(run_id, stream, at)
                if out["text"] or out["offset"] != at:
                    yield _sse("output", {"text": out["text"], "offset": out["offset"]})
                    at, quiet = out["offset"], 0.0
                if not out["running"]:
                    yield _sse("end", {"status": out["status"], "offset": at})
                    return
                quiet += STREAM_POLL
                if quiet >= STREAM_KEEPALIVE:
                    yield ": still running\n\n"
                    quiet = 0.0
                time.sleep(STREAM_POLL)
        except (SchedulerError, sa.exc.SQLAlchemyError) as exc:
            yield _sse("error", {"message": str(exc)})
    return _sse_response(events, "poll with ?offset= instead")


def _sse_response(events, instead: str) -> bottle.HTTPResponse:
    """``events()`` as a text/event-stream in one of the MAX_STREAMS slots (503 when all are
    taken: ``instead`` says what to do then); the slot is free again when the stream ends,
    or when a keep-alive finds its client gone."""
    streams = bottle.request.app.config["ts.streams"]
    if not streams.acquire(blocking=False):
        raise Unavailable(f"too many live streams at once; {instead}")

    def held():
        try:
            yield "retry: 1000\n\n"
            yield from events()
        finally:
            streams.release()
    return bottle.HTTPResponse(held(), headers={
        "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no"})


def api_events(service):
    """Runs and jobs as they change, on every node: queued, started, ended; added, paused.

    ``Accept: text/event-stream`` streams events (SSE): ``run`` {id, job_id, status, node,
    trigger, started_at, finished_at}, ``job`` {id, state} (state ``deleted`` when it is gone),
    ``reset`` (more changed than is told one by one, or the stream resumed from a cursor this
    node no longer knows: read again what you show). Each event's id is a cursor; a stream
    resumes after ``Last-Event-ID`` or ``?after=``. Streams are few (each holds a server
    thread): without a free one the answer is 503, and a client polls instead: without that
    header the answer is JSON, the events after ``?after=CURSOR`` and the cursor to ask from
    next time (no ``after``: the present cursor and no events)."""
    return events_answer(service)


def events_answer(service) -> bottle.HTTPResponse:
    """``GET /api/events`` as the API and the GUI's live pages answer it (the GUI behind its
    own login)."""
    query = _query_params(EventsQuery)
    if "text/event-stream" not in bottle.request.get_header("Accept", ""):
        changes = service.changes_since(query.after)
        answer = _json_response(200, {
            "cursor": changes.cursor, "reset": changes.reset,
            "events": [{"event": kind, "data": data} for kind, data in changes.events]})
        answer.set_header("Cache-Control", "no-store")
        return answer
    resume = bottle.request.get_header("Last-Event-ID", "")
    start = service.changes_since(resume if re.fullmatch(CURSOR_PATTERN, resume)
                                  else query.after)

    def events():
        changes = start
        try:
            while not service.stopping:
                told = [("reset", {})] if changes.reset else changes.events
                for index, (kind, data) in enumerate(told):
                    last = index == len(told) - 1   # a stream that breaks resumes after it
                    yield _sse(kind, data, changes.cursor if last else None)
                if not told:
                    yield ": nothing new\n\n"   # how a stream finds its client gone
                changes = service.changes_since(changes.cursor, wait=STREAM_KEEPALIVE)
        except sa.exc.SQLAlchemyError as exc:   # the feed woke to a database that is away
            yield _sse("error", {"message": _clean(exc)})
    return _sse_response(events, "poll: GET /api/events?after=CURSOR (JSON)")


def _sse(event: str, data: dict, event_id: Optional[str] = None) -> str:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


STREAM_POLL = 0.25   # seconds between looks at a streamed run's output
MAX_STREAMS = 6      # live streams at once (output and events): each holds one of the
                     # server's 12 threads, so at least half are left for everything else
# A comment this often while a run is quiet: it keeps proxies from closing an idle stream, and
# it is how a stream finds its client gone (waitress reads nothing while it answers, so only a
# failed write tells): a killed client's slot is free again within about two of these.
STREAM_KEEPALIVE = 1.0


def api_cancel_run(service, run_id):
    """Cancel a queued run, or kill a running command's process group (TERM, then KILL).

    The answer comes at once: the run as it is then, ``cancelled`` if its command ended within
    CANCEL_WAIT of the TERM, else still ``running`` while the group is ended in the background
    (KILL after the kill grace). A cancel holds a server thread for no longer than that."""
    service.cancel(run_id, wait=CANCEL_WAIT)
    run = service.run(run_id)
    return {k: v for k, v in run.items() if k not in ("stdout", "stderr")}


CANCEL_WAIT = 0.25   # seconds a cancel waits for the command to go (30 at once: ~0.6 s of 12
                     # threads; every later cancel of the same run answers without waiting)


def api_nodes(service):
    """The cluster's nodes (on SQLite: this one), with role, labels, heartbeat age, runs."""
    return {"nodes": service.nodes()}


def api_calendar(service, name):
    """A calendar of jobs.yaml, with its business days and closed days in a range.

    The days from ``from`` to ``to`` (this month by default): business days, and the days it
    closes (holidays with their names, excluded days)."""
    query = _query_params(CalendarQuery)
    return service.calendar(name, query.from_, query.to, query.lang)


def api_reload(service):
    """Read and apply jobs.yaml now; 422 with the errors (the running jobs stay as they are)."""
    return {"config": service.reload(force=True)}


def api_audit(service):
    """The audit log, newest first: who did what to which object, when, from where.

    Filters: ``actor``, ``action`` (or a kind: ``job.``), ``object`` (``job`` or
    ``job:ID``), ``since``/``until``; pages by ``before`` = the ``next`` of the last page."""
    query = audit_query()
    return service.audit.page(query.actor, query.action, query.object, query.since,
                              query.until, query.before, query.limit)
