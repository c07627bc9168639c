"""The JSON API's handlers: one short function per route, each handing the call to the service."""

from __future__ import annotations

import json
import time

import bottle
import sqlalchemy as sa

from ..config import __version__
from ..errors import SchedulerError, Unavailable
from .io import (
    JobsQuery, OutputQuery, _content_length, _json_body, _query_params, _raw_json, _text,
    runs_query)


def api_index(service):
    """An index of this API: its name, version, and links to the docs and main collections."""
    root = bottle.request.script_name.rstrip("/")   # where the app is mounted: "" at the top
    return {"name": "task-scheduler", "version": __version__,
            "links": {name: f"{root}{path}" for name, path in INDEX_LINKS.items()}}


INDEX_LINKS = {"docs": "/api/docs", "openapi": "/api/openapi.json", "jobs": "/api/jobs",
               "runs": "/api/runs", "nodes": "/api/nodes", "status": "/api/status",
               "health": "/api/health", "metrics": "/metrics"}


def api_health(service):
    """Liveness: 200 when the scheduler thread runs and the database answers, else 503."""
    ok, body = service.health()
    return (200 if ok else 503), body


def api_status(service):
    """Version, node, job counts, runs of the last 24 h by status, the state of jobs.yaml."""
    return service.status()


def api_list_jobs(service):
    """Jobs by id, filtered and paged; ``total`` counts every match."""
    texts, total = service.jobs_json(**_query_params(JobsQuery).model_dump())
    return _raw_json(200, f'{{"jobs": [{", ".join(texts)}], "total": {total}}}')


def api_create_job(service):
    """Create a job (source api) from one jobs.yaml entry as JSON.

    A command job runs any program as the service's user: see Security in docs/api.md."""
    return 201, service.add_job(_json_body())


def api_get_job(service, job_id):
    """One job, with its next five fire times and last run."""
    return _raw_json(200, service.job_json(job_id))


def api_replace_job(service, job_id):
    """Replace a job created through the API (a jobs.yaml job: 409, edit the file)."""
    return service.replace_job(job_id, _json_body())


def api_delete_job(service, job_id):
    """Delete a job created through the API (a jobs.yaml job: 409); its runs stay."""
    service.delete_job(job_id)
    return 204, None


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
    return 202, {"run": service.run_now(job_id, body)}


def api_rerun_run(service, run_id):
    """Run a finished run's job again with the same parameters (trigger manual, rerun_of)."""
    return 202, {"run": service.rerun(run_id)}


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
    return service.run(run_id)


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
    streams = bottle.request.app.config["ts.streams"]
    if not streams.acquire(blocking=False):
        raise Unavailable("too many live streams at once; poll with ?offset= instead")

    def events():
        try:
            yield "retry: 1000\n\n"
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
        finally:
            streams.release()
    return bottle.HTTPResponse(events(), headers={
        "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no"})


def _sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


STREAM_POLL = 0.25   # seconds between looks at a streamed run's output
MAX_STREAMS = 4      # live streams at once: each holds one of the server's threads
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


def api_reload(service):
    """Read and apply jobs.yaml now; 422 with the errors (the running jobs stay as they are)."""
    return {"config": service.reload(force=True)}
