"""The epoch ticker: deadlines never early, late only by wake-up latency, no drift."""

from __future__ import annotations

import threading
import time

import pytest
import wasmtime

from pappus.engines.wasm.ticker import LINGER_S, EpochTicker
from tests.engines.support import wat2wasm


class Target:
    def __init__(self) -> None:
        self.ticks: int | None = None

    def set_epoch_deadline(self, ticks_beyond_current: int) -> None:
        self.ticks = ticks_beyond_current


def test_arming_counts_ticks_to_the_deadline() -> None:
    ticker = EpochTicker(wasmtime.Engine(), 0.01)
    target = Target()
    with ticker:
        ticker.arm(target, time.monotonic() + 0.1)
        assert target.ticks is not None
        assert 9 <= target.ticks <= 11
        ticker.arm(target, time.monotonic() - 5)
        assert target.ticks == 1  # already due: the next tick
    ticker.close()


def test_the_epoch_follows_the_clock_not_the_wakeups() -> None:
    ticker = EpochTicker(wasmtime.Engine(), 0.002)
    with ticker:
        started = time.monotonic()
        deadline = started + 0.25
        while time.monotonic() < deadline:
            time.sleep(0.01)
        elapsed_ticks = (time.monotonic() - started) / 0.002
        # however late the thread woke, it caught up with the clock
        assert ticker.epoch >= elapsed_ticks - 10
    ticker.close()


def test_idle_time_does_not_count() -> None:
    ticker = EpochTicker(wasmtime.Engine(), 0.002)
    with ticker:
        time.sleep(0.02)
    time.sleep(LINGER_S + 0.05)  # lingers, then parks
    epoch = ticker.epoch
    time.sleep(0.1)  # parked: no ticks, and no burst of catch-up ticks afterwards
    assert ticker.epoch == epoch
    target = Target()
    with ticker:
        assert ticker.epoch <= epoch + 1
        ticker.arm(target, time.monotonic() + 0.02)
        assert target.ticks is not None
        assert target.ticks <= 11
    ticker.close()


def test_keeps_ticking_briefly_after_the_last_invocation() -> None:
    ticker = EpochTicker(wasmtime.Engine(), 0.002)
    with ticker:
        time.sleep(0.01)
    epoch = ticker.epoch
    time.sleep(LINGER_S / 2)
    assert ticker.epoch > epoch  # still ticking: the next invocation need not wake it
    ticker.close()


def test_stops_a_loop_on_time() -> None:
    engine_config = wasmtime.Config()
    engine_config.epoch_interruption = True
    engine = wasmtime.Engine(engine_config)
    store = wasmtime.Store(engine)
    module = wasmtime.Module(engine, wat2wasm(
        '(module (func (export "spin") (loop $l (br $l))))'))
    spin = wasmtime.Instance(store, module, []).exports(store)["spin"]
    assert isinstance(spin, wasmtime.Func)
    ticker = EpochTicker(engine, 0.002)

    class StoreTarget:
        def set_epoch_deadline(self, ticks: int) -> None:
            store.set_epoch_deadline(ticks)

    with ticker:
        deadline = time.monotonic() + 0.1
        ticker.arm(StoreTarget(), deadline)
        with pytest.raises(wasmtime.Trap):
            spin(store)
        assert 0 <= time.monotonic() - deadline < 0.05
    ticker.close()


def test_close_is_idempotent_and_refuses_new_work() -> None:
    ticker = EpochTicker(wasmtime.Engine(), 0.002)
    with ticker:
        pass
    ticker.close()
    ticker.close()
    assert "closed" in repr(ticker)
    with pytest.raises(RuntimeError), ticker:
        pass
    assert not any(t.name == "pappus-wasm-epoch" and t.is_alive()
                   for t in threading.enumerate() if t is not threading.current_thread()
                   and getattr(t, "_target", None) == ticker._run)
    with pytest.raises(ValueError):
        EpochTicker(wasmtime.Engine(), 0)
