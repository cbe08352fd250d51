"""The dispatcher's inline fast path with the real wasm engine: short functions run on the
event loop's thread, long ones are abandoned at the budget and finish on a slot with their
own deadline, and the loop stays responsive throughout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from pappus.composition import parse_any_sharding_mode
from pappus.dispatcher import Dispatcher
from pappus.engines.wasm import WasmEngine
from pappus.errors import InvocationTimeout, SandboxCrash
from pappus.model import DataSet, Item
from pappus.registry import FunctionRegistration, Registry
from pappus.scheduling import BACKOFF_MIN, INLINE_MAX_INPUT_BYTES, INLINE_MAX_MEMORY_BYTES
from pappus.store import Store
from tests.conftest import wait_until
from tests.engines.support import Heartbeat, stdio_set, wat2wasm

LOOP_STALL_BOUND_S = 0.050
"""Longest the event loop may stall while a spinning function is abandoned (budget 1 ms
plus epoch ticks of 2 ms and the ticker's wake-up; measured: a few ms)."""
BULK_STALL_BOUND_S = 0.5
"""The same for a function of bulk memory instructions, which the engine cannot stop
midway; 64 MiB of memory: measured 30-40 ms."""

FILLER = wat2wasm("""(module (memory (export "memory") 1)
  (func (export "_start")
    (drop (memory.grow (i32.const 900)))
    """ + "\n".join(f"(memory.fill (i32.const 0) (i32.const {n}) (i32.const 58000000))"
                     for n in range(20)) + """
    (loop $forever (br $forever))))""")


@pytest.fixture
def registry(tmp_path: Path, wasm_functions: dict[str, bytes]) -> Iterator[Registry]:
    engine = WasmEngine()
    store = Store(tmp_path / "data")
    registry = Registry(store, {"wasm": engine}, default_timeout_ms=5000,
                        default_memory_bytes=1 << 26)
    for name in ("stdio", "spin", "trap"):
        registry.add_function(FunctionRegistration(name, "wasm", wasm_functions[name],
                                                   ("stdio",), ("stdio",)))
    registry.add_function(FunctionRegistration("filler", "wasm", FILLER, ("stdio",),
                                               ("stdio",)))
    registry.add_function(FunctionRegistration("roomy", "wasm", wasm_functions["stdio"],
                                               ("stdio",), ("stdio",),
                                               memory_bytes=INLINE_MAX_MEMORY_BYTES * 2))
    yield registry
    engine.close()
    store.close()


def make(registry: Registry, budget_s: float = 0.001) -> Dispatcher:
    return Dispatcher(registry, slots=2, queue_size=64, max_output_bytes=1 << 20,
                      default_timeout_ms=5000, sharding=parse_any_sharding_mode("auto:2"),
                      inline_budget_s=budget_s)


@pytest.fixture
async def dispatcher(registry: Registry) -> AsyncIterator[Dispatcher]:
    d = make(registry)
    yield d
    await d.close()


def stdout(result_sets: tuple[DataSet, ...]) -> bytes:
    (stdio,) = result_sets
    return b"".join(i.data for i in stdio.items if i.name == "stdout")


async def test_short_functions_run_inline_with_the_same_results(dispatcher: Dispatcher) -> None:
    runs = 60
    for n in range(runs):
        result = await dispatcher.invoke("stdio", [stdio_set(f"in {n}".encode())])
        assert f"in {n}".encode() in stdout(result.outputs)
    stats = dispatcher.statistics()
    assert stats.completed == runs
    # Proving long takes five slow runs in a row (the first runs after start-up are 3-5x
    # slower); allow that twice on a busy machine: 8, then 16 runs on slots.
    assert stats.inline >= runs - 3 * BACKOFF_MIN, stats
    assert stats.preempted == 0


async def test_a_spinning_function_is_moved_to_a_slot_and_keeps_its_deadline(
        dispatcher: Dispatcher) -> None:
    heartbeat = await Heartbeat().started()
    began = time.monotonic()
    with pytest.raises(InvocationTimeout, match="deadline"):
        await dispatcher.invoke("spin", [None], timeout_ms=300)
    elapsed = time.monotonic() - began
    stall = heartbeat.stop()
    assert elapsed >= 0.3, elapsed  # the abandoned inline run did not end it early
    assert stall < LOOP_STALL_BOUND_S, stall
    stats = dispatcher.statistics()
    assert stats.preempted == 1 and stats.failed == {"timeout": 1}
    # Backing off: the next run goes straight to a slot, no second inline attempt.
    with pytest.raises(InvocationTimeout):
        await dispatcher.invoke("spin", [None], timeout_ms=50)
    assert dispatcher.statistics().preempted == 1


async def test_short_functions_run_while_a_long_one_holds_a_slot(dispatcher: Dispatcher) -> None:
    spinning = asyncio.ensure_future(dispatcher.invoke("spin", [None], timeout_ms=2000))
    await wait_until(lambda: dispatcher.statistics().preempted == 1)  # now on a slot thread
    heartbeat = await Heartbeat().started()
    began = time.monotonic()
    for n in range(30):
        result = await dispatcher.invoke("stdio", [stdio_set(str(n).encode())])
        assert str(n).encode() in stdout(result.outputs)
    assert time.monotonic() - began < 1.0
    assert not spinning.done()
    assert heartbeat.stop() < LOOP_STALL_BOUND_S
    spinning.cancel()
    with pytest.raises(asyncio.CancelledError):
        await spinning


async def test_bulk_memory_instructions_stall_the_loop_once_and_boundedly(
        dispatcher: Dispatcher) -> None:
    heartbeat = await Heartbeat().started()
    with pytest.raises(InvocationTimeout):
        await dispatcher.invoke("filler", [None], timeout_ms=400)
    assert heartbeat.stop() < BULK_STALL_BOUND_S
    assert dispatcher.statistics().preempted == 1
    with pytest.raises(InvocationTimeout):  # backing off: straight to a slot
        await dispatcher.invoke("filler", [None], timeout_ms=100)
    assert dispatcher.statistics().preempted == 1


async def test_a_large_memory_bound_never_runs_inline(dispatcher: Dispatcher) -> None:
    for _ in range(3):
        await dispatcher.invoke("roomy", [stdio_set(b"x")])
    assert dispatcher.statistics().inline == 0


async def test_a_trap_inline_is_a_crash(dispatcher: Dispatcher) -> None:
    with pytest.raises(SandboxCrash, match="trap"):
        await dispatcher.invoke("trap", [None])
    stats = dispatcher.statistics()
    assert stats.failed == {"crash": 1} and stats.inline == 1


async def test_large_inputs_and_a_zero_budget_use_slots(registry: Registry) -> None:
    big = DataSet("stdio", (Item("stdin", 0, b"x" * (INLINE_MAX_INPUT_BYTES + 1)),))
    d = make(registry)
    try:
        await d.invoke("stdio", [big])
        assert d.statistics().inline == 0 and d.statistics().completed == 1
    finally:
        await d.close()
    off = make(registry, budget_s=0.0)
    try:
        for _ in range(3):
            await off.invoke("stdio", [stdio_set(b"x")])
        assert off.statistics().inline == 0 and off.statistics().completed == 3
    finally:
        await off.close()
