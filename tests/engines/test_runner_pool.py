"""RunnerPool: refilling, clean-ups on its thread, failures and closing (with plain objects).

The pool's logic does not depend on what it keeps ready, so these tests give
it counters instead of processes; the engines' own tests cover it with real
runners and launchers.
"""

from __future__ import annotations

import functools
import itertools
import threading
import time

import pytest

from pappus.engines.process.pool import RunnerPool
from tests.conftest import eventually


class Starter:
    def __init__(self) -> None:
        self.numbers = itertools.count()
        self.discarded: list[int] = []
        self.fail = False

    def start(self) -> int:
        if self.fail:
            raise OSError("cannot start")
        return next(self.numbers)


def test_a_pool_refills_to_its_size_after_each_take() -> None:
    starter = Starter()
    pool = RunnerPool(starter.start, 2, starter.discarded.append)
    try:
        first = pool.take()  # empty: started on demand; the thread then fills the pool
        assert first == 0 and pool.started_on_demand == 1
        eventually(lambda: len(pool.waiting()) == 2)
        ready = pool.waiting()
        assert pool.take() == ready[0]  # the oldest ready one is handed out...
        eventually(lambda: len(pool.waiting()) == 2)  # ...and replaced
        assert pool.started == 4
    finally:
        pool.close()
    assert sorted(starter.discarded) == [2, 3]  # the ready ones are ended on close


def test_refill_waits_for_refill_soon_when_told_to() -> None:
    starter = Starter()
    pool = RunnerPool(starter.start, 2, starter.discarded.append, refill_on_take=False)
    try:
        pool.take()  # empty pool: it refills anyway
        eventually(lambda: len(pool.waiting()) == 2)
        pool.take()
        time.sleep(0.05)
        assert len(pool.waiting()) == 1  # one left: no refill until asked
        pool.refill_soon()
        eventually(lambda: len(pool.waiting()) == 2)
    finally:
        pool.close()


def test_clean_ups_run_on_the_pool_thread_soon_and_on_close() -> None:
    """Soon even when nothing else wakes the thread (an idle worker must not keep zombies)."""
    starter = Starter()
    pool = RunnerPool(starter.start, 1, starter.discarded.append, refill_on_take=False,
                      cleanup_delay_s=0.01)
    threads: list[str] = []
    try:
        pool.take()
        pool.clean_up_later(lambda: threads.append(threading.current_thread().name))
        eventually(lambda: threads == ["pappus-runner-pool"])  # nobody woke it: the delay did
        pool.clean_up_later(lambda: threads.append("at close"))
    finally:
        pool.close()
    assert threads[-1] == "at close"
    ran_inline: list[bool] = []
    pool.clean_up_later(lambda: ran_inline.append(True))  # closed: runs at once
    assert ran_inline == [True]


def _has_length(items: list[int], length: int) -> bool:
    return len(items) == length


def test_clean_ups_run_soon_whether_the_thread_lingers_or_sleeps() -> None:
    """While clean-ups keep coming the thread waits with a timeout and is not woken for each;
    after ``linger_s`` without any it sleeps until woken. Either way one runs within about
    ``cleanup_delay_s``, not only when something else wakes the thread."""
    starter = Starter()
    pool = RunnerPool(starter.start, 1, starter.discarded.append, refill_on_take=False,
                      cleanup_delay_s=0.01)
    pool.linger_s = 0.1
    ran: list[int] = []
    try:
        pool.take()
        eventually(lambda: len(pool.waiting()) == 1)
        for number in range(3):  # back to back: the thread lingers between them
            pool.clean_up_later(functools.partial(ran.append, number))
            eventually(functools.partial(_has_length, ran, number + 1), timeout_s=1.0)
        # past linger_s with nothing handed over: the thread sleeps with no timeout now
        eventually(lambda: pool._untimed, describe=lambda: "the thread never slept untimed")
        pool.clean_up_later(lambda: ran.append(3))
        eventually(lambda: len(ran) == 4, timeout_s=1.0,
                   describe=lambda: "a clean-up for a sleeping thread never ran")
        assert ran == [0, 1, 2, 3]
    finally:
        pool.close()


def test_a_failing_start_stops_refilling_and_take_reports_it() -> None:
    starter = Starter()
    pool = RunnerPool(starter.start, 2, starter.discarded.append)
    try:
        starter.fail = True
        with pytest.raises(OSError, match="cannot start"):
            pool.take()
        eventually(lambda: pool.failed >= 1)
        starter.fail = False
        pool.take()  # works again (no exception), and refilling resumes
        eventually(lambda: len(pool.waiting()) == 2)
    finally:
        pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        pool.take()


def test_get_ready_works_on_the_first_waiting_one_and_a_failure_discards_it() -> None:
    starter = Starter()
    readied: list[int] = []
    refuse = {"now": False}

    def get_ready(number: int) -> None:
        if refuse["now"]:
            raise OSError("it died")
        readied.append(number)

    pool = RunnerPool(starter.start, 2, starter.discarded.append, refill_on_take=False,
                      get_ready=get_ready)
    try:
        pool.take()  # empty: it refills (and gets the first waiting one ready once it can)
        eventually(lambda: len(pool.waiting()) == 2)
        pool.refill_soon()
        eventually(lambda: bool(readied))
        first = pool.waiting()[0]
        assert readied[-1] == first  # the one the next take() hands out, still in place
        assert pool.take() == first
        refuse["now"] = True
        pool.refill_soon()
        eventually(lambda: bool(starter.discarded), describe=lambda: "nothing was discarded")
        failed = starter.discarded[0]
        assert failed not in pool.waiting()  # a launcher that failed is never handed out
        eventually(lambda: len(pool.waiting()) == 2)  # and it is replaced
    finally:
        pool.close()
