"""The dispatcher waits for process-engine runs on the event loop (no slot thread): results,
deadlines, the slot bound and shutdown, with real runners."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from pappus.composition import parse_any_sharding_mode
from pappus.dispatcher import Dispatcher
from pappus.engines.process import ProcessEngine
from pappus.errors import ForbiddenSyscall, InvocationTimeout
from pappus.model import DataSet, Item
from pappus.registry import FunctionRegistration, Registry
from pappus.scheduling import INLINE_MAX_INPUT_BYTES
from pappus.store import Store
from tests.conftest import wait_until
from tests.engines.process.support import HOSTILE_OUTPUTS, gram, matrix
from tests.engines.support import Heartbeat

LOOP_STALL_BOUND_S = 0.050


@pytest.fixture
def registry(tmp_path: Path, runner_dir: Path,
             process_functions: dict[str, bytes]) -> Iterator[Registry]:
    engine = ProcessEngine(runner_dir)
    store = Store(tmp_path / "data")
    registry = Registry(store, {"process": engine}, default_timeout_ms=5000,
                        default_memory_bytes=16 << 20)
    registry.add_function(FunctionRegistration("matmul", "process", process_functions["matmul"],
                                               ("in",), ("out",)))
    registry.add_function(FunctionRegistration("hostile", "process",
                                               process_functions["hostile"], ("in",),
                                               HOSTILE_OUTPUTS))
    yield registry
    engine.close()
    store.close()


@pytest.fixture
async def dispatcher(registry: Registry) -> AsyncIterator[Dispatcher]:
    d = Dispatcher(registry, slots=2, queue_size=64, max_output_bytes=1 << 20,
                   default_timeout_ms=5000, sharding=parse_any_sharding_mode("auto:2"))
    yield d
    await d.close()


def mode(name: str) -> list[DataSet | None]:
    return [DataSet("in", (Item("mode", 0, name.encode()),))]


def product(result_sets: tuple[DataSet, ...]) -> list[int]:
    import struct

    data = result_sets[0].items[0].data
    return list(struct.unpack(f"<{len(data) // 8}q", data))


async def test_results_come_back_without_a_slot_thread(dispatcher: Dispatcher) -> None:
    for n in range(1, 6):
        values = list(range(n * n))
        result = await dispatcher.invoke("matmul", [DataSet("in", (
            Item("", 0, matrix(n, values)),))])
        assert product(result.outputs) == gram(n, values)
    stats = dispatcher.statistics()
    assert stats.apart == 5 and stats.completed == 5 and stats.inline == 0


async def test_a_loop_is_stopped_at_its_deadline_while_the_loop_keeps_serving(
        dispatcher: Dispatcher) -> None:
    heartbeat = await Heartbeat().started()
    began = time.monotonic()
    spinning = asyncio.ensure_future(dispatcher.invoke("hostile", mode("loop"), timeout_ms=300))
    for n in range(10):  # meanwhile, on the other slot
        result = await dispatcher.invoke("matmul", [DataSet("in", (Item("", 0, matrix(1, [n])),))])
        assert product(result.outputs) == [1, n * n]
    assert not spinning.done()
    with pytest.raises(InvocationTimeout):
        await spinning
    assert time.monotonic() - began >= 0.3
    assert heartbeat.stop() < LOOP_STALL_BOUND_S
    assert dispatcher.statistics().failed == {"timeout": 1}


async def test_typed_outcomes_arrive_through_the_loop(dispatcher: Dispatcher) -> None:
    with pytest.raises(ForbiddenSyscall, match="socket"):
        await dispatcher.invoke("hostile", mode("socket"))
    assert dispatcher.statistics().failed == {"forbidden_syscall": 1}


async def test_at_most_one_run_per_slot(dispatcher: Dispatcher) -> None:
    runs = [asyncio.ensure_future(dispatcher.invoke("hostile", mode("loop"), timeout_ms=200))
            for _ in range(4)]
    await wait_until(lambda: dispatcher.statistics().running + dispatcher.statistics().queued
                     == 4)
    stats = dispatcher.statistics()
    assert (stats.running, stats.queued) == (2, 2)
    for run in runs:
        with pytest.raises(InvocationTimeout):
            await run


async def test_close_waits_for_runs_in_flight(registry: Registry) -> None:
    d = Dispatcher(registry, slots=2, queue_size=64, max_output_bytes=1 << 20,
                   default_timeout_ms=5000, sharding=parse_any_sharding_mode("auto:2"))
    spinning = asyncio.ensure_future(d.invoke("hostile", mode("loop"), timeout_ms=200))
    await wait_until(lambda: d.statistics().running == 1)
    await d.close()
    assert spinning.done()
    with pytest.raises(InvocationTimeout):
        await spinning


async def test_large_inputs_are_set_up_on_a_slot_thread(dispatcher: Dispatcher) -> None:
    big = matrix(1, [3]) + bytes(INLINE_MAX_INPUT_BYTES)
    result = await dispatcher.invoke("matmul", [DataSet("in", (Item("", 0, big),))])
    assert product(result.outputs) == [1, 9]
    assert dispatcher.statistics().apart == 0
