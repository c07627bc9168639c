"""GroupCommit: each caller gets its own item's result, every item is written exactly once,
writes never overlap, and a failed write fails exactly the callers whose items it carried."""

from __future__ import annotations

import random
import threading

import pytest

from task_scheduler.groupcommit import GroupCommit


def test_a_lone_item_is_written_at_once_and_alone():
    calls = []
    group = GroupCommit(lambda items: calls.append(list(items)) or [i * 2 for i in items])
    assert group.submit(21) == 42
    assert calls == [[21]]


@pytest.mark.parametrize("seed", range(5))
def test_many_threads_each_get_their_own_result_and_items_are_written_once(seed):
    rng = random.Random(seed)
    written, in_write, overlaps = [], [0], []
    lock = threading.Lock()
    release = threading.Event()

    def write(items):
        with lock:
            in_write[0] += 1
            if in_write[0] > 1:
                overlaps.append(items)
        if not release.is_set():   # the first write holds until the others queued
            release.wait(5)
        elif rng.random() < 0.5:
            threading.Event().wait(rng.random() / 1000)
        with lock:
            in_write[0] -= 1
            written.extend(items)
        return [("done", i) for i in items]

    group = GroupCommit(write)
    results, errors = {}, []

    def worker(i):
        try:
            results[i] = group.submit(i)
        except Exception as exc:   # pragma: no cover - the assertion below names it
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(60)]
    for t in threads[:20]:
        t.start()
    deadline = threading.Event()
    for _ in range(500):   # wait for the 20 first to queue behind the held write
        if len(group._waiting) >= 19:
            break
        deadline.wait(0.01)
    release.set()
    for t in threads[20:]:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors and not overlaps
    assert results == {i: ("done", i) for i in range(60)}
    assert sorted(written) == list(range(60))          # each exactly once
    assert len(written) == 60


def test_the_items_that_wait_behind_a_write_go_together_in_the_next():
    batches = []
    hold, holding = threading.Event(), threading.Event()

    def write(items):
        batches.append(list(items))
        if len(batches) == 1:
            holding.set()
            hold.wait(5)
        return list(items)

    group = GroupCommit(write)
    first = threading.Thread(target=group.submit, args=("a",))
    first.start()
    assert holding.wait(5)
    rest = [threading.Thread(target=group.submit, args=(x,)) for x in "bcd"]
    for t in rest:
        t.start()
    for _ in range(500):
        if len(group._waiting) == 3:
            break
        threading.Event().wait(0.01)
    hold.set()
    for t in [first, *rest]:
        t.join(5)
    assert batches[0] == ["a"]
    assert sorted(batches[1]) == ["b", "c", "d"] and len(batches) == 2


def test_a_failed_write_fails_the_callers_it_carried_and_the_next_write_goes_on():
    fail = [True]

    def write(items):
        if fail[0]:
            fail[0] = False
            raise RuntimeError("database gone")
        return items

    group = GroupCommit(write)
    with pytest.raises(RuntimeError, match="database gone"):
        group.submit(1)
    assert group.submit(2) == 2


def test_a_write_that_returns_the_wrong_count_is_an_error_not_a_wrong_answer():
    group = GroupCommit(lambda items: [])
    with pytest.raises(RuntimeError, match="0 results for 1 items"):
        group.submit("x")
