"""The thread-free pool of cloned runners: runners asked for ahead of time wait in the worker's
socket buffer, are found ready by the next invocation, and are all reaped when a zygote dies or
the pool closes."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from pappus.engines.process import ProcessArtifact, ProcessEngine
from pappus.engines.process.clone_pool import ClonePool
from pappus.engines.process.pool import Zygote
from tests.conftest import eventually
from tests.engines.process.support import (
    assert_no_stray_runners,
    check_matmul,
    runner_children,
    wait_until_full,
)


def test_registration_asks_for_runners_and_invocations_find_them_ready(
        fresh_engine: ProcessEngine, fresh_matmul: ProcessArtifact) -> None:
    wait_until_full(fresh_engine.pool)  # asked for by prepare, before any invocation
    threads = threading.active_count()
    for seed in range(6):
        check_matmul(fresh_engine, fresh_matmul, seed)
        wait_until_full(fresh_engine.pool)  # refilled after each run, without our help
    assert fresh_engine.pool.taken == 6
    assert fresh_engine.pool.waited_for == 0, fresh_engine.pool
    assert threading.active_count() == threads, "the pool started a thread"


def test_back_to_back_invocations_never_start_more_than_the_pool_holds(
        fresh_engine: ProcessEngine, fresh_matmul: ProcessArtifact) -> None:
    for seed in range(40):
        check_matmul(fresh_engine, fresh_matmul, seed)
    pool = fresh_engine.pool
    assert len(pool.waiting()) + pool.zygote.outstanding <= pool.size
    wait_until_full(pool)
    assert_no_stray_runners(pool.size)


def test_runners_delivered_before_the_zygote_died_are_used_then_the_zygote_is_replaced(
        fresh_engine: ProcessEngine, fresh_matmul: ProcessArtifact) -> None:
    wait_until_full(fresh_engine.pool)
    first = fresh_engine.zygote_pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    for seed in range(8):
        check_matmul(fresh_engine, fresh_matmul, seed)
    wait_until_full(fresh_engine.pool)
    assert fresh_engine.zygote_pid not in (None, first)
    assert not Path(f"/proc/{first}").exists(), "the dead zygote was not reaped"
    assert_no_stray_runners(fresh_engine.pool.size)


def test_closing_with_runners_on_their_way_reaps_every_one(runner_zygote: Zygote) -> None:
    pool = ClonePool(runner_zygote, 8)
    pool.refill()  # eight clones asked for, none received yet
    assert pool.zygote.outstanding == 8
    # made and sent, still in our socket's buffer
    eventually(lambda: len(runner_children()) >= 8, describe=runner_children)
    assert pool.zygote.outstanding == 8
    pool.close()
    assert pool.zygote.outstanding == 0
    assert runner_children() == {}, "a clone on its way was left unreaped"
    with pytest.raises(RuntimeError, match="closed"):
        pool.take()


def test_a_stopped_zygote_with_runners_asked_for_is_replaced(
        runner_zygote: Zygote, monkeypatch: pytest.MonkeyPatch) -> None:
    from pappus.engines.process import pool as pool_module

    monkeypatch.setattr(pool_module, "ZYGOTE_REPLY_TIMEOUT_S", 0.2)
    pool = ClonePool(runner_zygote, 2)
    try:
        pool.refill()
        wait_until_full(pool)
        stopped = pool.zygote.pid
        assert stopped is not None
        os.kill(stopped, signal.SIGSTOP)
        pool.take().discard()
        pool.take().discard()  # the last ready one: asks the stopped zygote for more
        began = time.monotonic()
        runner = pool.take()  # waits for a delivery that cannot come, then replaces it
        assert 0.2 <= time.monotonic() - began < 2.0
        runner.discard()
        assert pool.zygote.pid not in (None, stopped)
        assert not Path(f"/proc/{stopped}").exists(), "the stopped zygote was not ended"
    finally:
        pool.close()
    assert runner_children() == {}
