"""The epoch ticker: deadlines never early, late only by wake-up latency, no drift."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import wasmtime

from pappus.engines.wasm.ticker import (
    LINGER_S,
    EpochTicker,
    NativeEpochTicker,
    Ticker,
    create_ticker,
)
from tests.conftest import eventually
from tests.engines.support import native_tickers, run_beside_gil_holders, wat2wasm

MakeTicker = Callable[[wasmtime.Engine, float], Ticker]


@pytest.fixture(params=["native", "python"])
def make_ticker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                ) -> Iterator[MakeTicker]:
    """Each test runs against both implementations of the one interface."""
    made: list[Ticker] = []
    helpers = tmp_path_factory.getbasetemp() / "helpers"

    def make(engine: wasmtime.Engine, tick_s: float) -> Ticker:
        ticker: Ticker = (NativeEpochTicker(engine, tick_s, helpers)
                          if request.param == "native" else EpochTicker(engine, tick_s))
        made.append(ticker)
        return ticker

    yield make
    for ticker in made:
        ticker.close()


class Target:
    def __init__(self) -> None:
        self.ticks: int | None = None

    def set_epoch_deadline(self, ticks_beyond_current: int) -> None:
        self.ticks = ticks_beyond_current


def test_arming_counts_ticks_to_the_deadline(make_ticker: MakeTicker) -> None:
    ticker = make_ticker(wasmtime.Engine(), 0.01)
    target = Target()
    with ticker:
        ticker.arm(target, time.monotonic() + 0.1)
        assert target.ticks is not None
        assert 9 <= target.ticks <= 11
        ticker.arm(target, time.monotonic() - 5)
        assert target.ticks == 1  # already due: the next tick
    ticker.close()


def test_the_epoch_follows_the_clock_not_the_wakeups(make_ticker: MakeTicker) -> None:
    ticker = make_ticker(wasmtime.Engine(), 0.002)
    with ticker:
        started = time.monotonic()
        deadline = started + 0.25
        while time.monotonic() < deadline:
            time.sleep(0.01)
        elapsed_ticks = (time.monotonic() - started) / 0.002
        # however late the thread woke, it caught up with the clock
        assert ticker.epoch >= elapsed_ticks - 10
    ticker.close()


def test_idle_time_does_not_count(make_ticker: MakeTicker) -> None:
    ticker = make_ticker(wasmtime.Engine(), 0.002)
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


def test_keeps_ticking_briefly_after_the_last_invocation(make_ticker: MakeTicker) -> None:
    ticker = make_ticker(wasmtime.Engine(), 0.002)
    with ticker:
        time.sleep(0.01)
    epoch = ticker.epoch
    time.sleep(LINGER_S / 2)
    assert ticker.epoch > epoch  # still ticking: the next invocation need not wake it
    ticker.close()


def test_stops_a_loop_on_time(make_ticker: MakeTicker) -> None:
    engine_config = wasmtime.Config()
    engine_config.epoch_interruption = True
    engine = wasmtime.Engine(engine_config)
    store = wasmtime.Store(engine)
    module = wasmtime.Module(engine, wat2wasm(
        '(module (func (export "spin") (loop $l (br $l))))'))
    spin = wasmtime.Instance(store, module, []).exports(store)["spin"]
    assert isinstance(spin, wasmtime.Func)
    ticker = make_ticker(engine, 0.002)

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


def test_native_close_stops_its_thread_and_refuses_new_work(tmp_path: Path) -> None:
    before = native_tickers()
    ticker = NativeEpochTicker(wasmtime.Engine(), 0.002, tmp_path)
    assert native_tickers() == before  # started by the first invocation
    with ticker:
        assert native_tickers() == before + 1
    ticker.close()
    ticker.close()
    eventually(lambda: native_tickers() == before)  # joined; its /proc entry goes next
    assert "closed" in repr(ticker)
    with pytest.raises(RuntimeError, match="closed"), ticker:
        pass
    with pytest.raises(ValueError):
        NativeEpochTicker(wasmtime.Engine(), 0, tmp_path)


def test_a_dropped_native_ticker_stops_its_thread(tmp_path: Path) -> None:
    before = native_tickers()
    ticker = NativeEpochTicker(wasmtime.Engine(), 0.002, tmp_path)
    with ticker:
        pass
    assert native_tickers() == before + 1
    del ticker  # no close(): the finalizer stops the thread before the engine goes
    eventually(lambda: native_tickers() == before)


def test_a_loop_stops_on_time_while_another_thread_holds_the_gil(tmp_path: Path) -> None:
    """The native ticker needs no GIL: the spinning sandbox stops at its deadline even while
    Python is busy in long C calls, as when a worker decodes a large JSON request body
    (``json.loads`` of 40 MB holds the GIL ~0.2 s). With the Python ticker, it spun
    for up to 447 ms of its 200."""
    engine_config = wasmtime.Config()
    engine_config.epoch_interruption = True
    engine = wasmtime.Engine(engine_config)
    module = wasmtime.Module(engine, wat2wasm('(module (func (export "spin") (loop $l (br $l))))'))
    ticker = NativeEpochTicker(engine, 0.002, tmp_path)
    spun_ms: list[float] = []

    def run() -> None:
        store = wasmtime.Store(engine)
        spin = wasmtime.Instance(store, module, []).exports(store)["spin"]
        assert isinstance(spin, wasmtime.Func)

        class StoreTarget:
            def set_epoch_deadline(self, ticks: int) -> None:
                store.set_epoch_deadline(ticks)

        with ticker:
            ticker.arm(StoreTarget(), time.monotonic() + 0.2)
            began = time.thread_time()  # CPU time: the spin, not waits for the GIL
            with pytest.raises(wasmtime.Trap):
                spin(store)
            spun_ms.append((time.thread_time() - began) * 1e3)

    for _ in range(3):  # the loop is spinning (without the GIL) when the holders start
        run_beside_gil_holders(run, spinning_for_s=0.02)
    ticker.close()
    assert len(spun_ms) == 3
    # CPU time: a busy machine may give the loop less than 200 ms of it, never more than
    # its deadline allows
    assert all(ms <= 220 for ms in spun_ms) and max(spun_ms) >= 100, spun_ms



def test_without_a_compiler_the_python_ticker_is_used_and_said_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no cc, gcc or clang
    monkeypatch.delenv("CC", raising=False)
    with caplog.at_level(logging.WARNING, logger="pappus.engines.wasm.ticker"):
        ticker = create_ticker(wasmtime.Engine(), 0.002, tmp_path / "fresh")
    assert isinstance(ticker, EpochTicker)
    assert "Python epoch ticker" in caplog.text and "C compiler" in caplog.text
    ticker.close()
    monkeypatch.undo()
    native = create_ticker(wasmtime.Engine(), 0.002, tmp_path / "fresh")
    assert isinstance(native, NativeEpochTicker)
    native.close()
