"""The service's log lines are handed to a thread of their own (cli._log_off_the_path): the
thread that logs never waits on stderr, a full queue drops lines and says how many."""

from __future__ import annotations

import logging
import queue

import task_scheduler.cli as ts_cli


def _logger(handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger("ts_test_handoff")
    logger.handlers[:] = [handler]
    logger.propagate, logger.level = False, logging.INFO
    return logger


def test_a_full_queue_drops_lines_and_the_next_line_says_how_many():
    records: queue.Queue = queue.Queue(3)
    logger = _logger(ts_cli._Handoff(records))
    for i in range(7):
        logger.info("line %d", i)
    assert [records.get_nowait().getMessage() for _ in range(3)] == ["line 0", "line 1",
                                                                     "line 2"]
    logger.warning("later")
    told = [records.get_nowait() for _ in range(records.qsize())]
    assert [r.getMessage() for r in told] == [
        "4 log lines dropped: the log could not be written as fast as they came", "later"]
    assert told[0].levelname == "WARNING"


def test_the_message_is_made_when_logged_not_when_written():
    records: queue.Queue = queue.Queue()
    logger = _logger(ts_cli._Handoff(records))
    state = {"status": "running"}
    logger.info("run %s", state)
    state["status"] = "succeeded"   # changed before the log thread writes the line
    record = records.get_nowait()
    assert record.getMessage() == "run {'status': 'running'}" and record.args is None


def test_logging_already_set_up_is_left_as_it_is(monkeypatch):
    """As logging.basicConfig: an embedding program's handlers (or pytest's) stay the only
    ones, and a second main() in one process adds no second log thread."""
    root = logging.getLogger()
    mine = logging.NullHandler()
    monkeypatch.setattr(root, "handlers", [mine])
    ts_cli._log_off_the_path("DEBUG")
    assert root.handlers == [mine]
