"""Dispatcher behaviour with the fake engine: results, sharding, limits, errors, stats."""

import asyncio
import struct

import pytest

from pappus.engines.base import InvocationResult, PendingRun
from pappus.errors import FunctionFailed, InvocationTimeout, Overloaded, SandboxCrash
from pappus.model import DataSet, Item
from pappus.registry import FunctionRegistration, Registry
from tests.conftest import make_dispatcher, wait_until
from tests.fakes import FakeEngine


def mat(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}q", *values)


def unmat(data: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(data) // 8}q", data))


def add(registry: Registry, name: str, binary: bytes, inputs: tuple[str, ...] = ("InMats",),
        outputs: tuple[str, ...] = ("OutMats",), **kw: object) -> None:
    registry.add_function(FunctionRegistration(name, "wasm", binary, inputs, outputs, **kw))  # type: ignore[arg-type]


CHAIN = """
function mm (InMats) => (OutMats);
composition chain (CompIn) => (CompOut) {
    mm (InMats = all CompIn) => (Inter = OutMats);
    mm (InMats = all Inter) => (CompOut = OutMats);
}
composition parallel (CompIn) => (CompOut) {
    mm (InMats = each CompIn) => (CompOut = OutMats);
}
"""


async def test_single_function(registry: Registry) -> None:
    add(registry, "mm", b"matmul")
    d = make_dispatcher(registry)
    result = await d.invoke("mm", [DataSet("InMats", (Item("", 0, mat(2, 1, 2, 3, 4)),))])
    assert [s.name for s in result.outputs] == ["OutMats"]
    assert unmat(result.outputs[0].items[0].data) == [2, 5, 11, 11, 25]
    assert result.timings.functions == 1
    assert result.timings.run_us == 2.0
    await d.close()


async def test_chain_and_each(registry: Registry) -> None:
    add(registry, "mm", b"matmul")
    registry.add_compositions(CHAIN)
    d = make_dispatcher(registry)
    chained = await d.invoke("chain", [DataSet("CompIn", (Item("", 0, mat(2, 1, 2, 3, 4)),))])
    assert unmat(chained.outputs[0].items[0].data) == [2, 146, 330, 330, 746]
    assert chained.timings.functions == 2
    items = (Item("a", 1, mat(2, 1, 2, 3, 4)), Item("b", 0, mat(2, 1, 2, 3, 4)))
    parallel = await d.invoke("parallel", [DataSet("CompIn", items)])
    out = parallel.outputs[0]
    assert out.name == "CompOut"
    assert [i.key for i in out.items] == [0, 1]  # sorted by key
    assert all(unmat(i.data) == [2, 5, 11, 11, 25] for i in out.items)
    await d.close()


async def test_absent_input_skips_composition_function(registry: Registry) -> None:
    add(registry, "mm", b"matmul")
    registry.add_compositions(CHAIN)
    d = make_dispatcher(registry)
    result = await d.invoke("chain", [None])
    assert result.outputs == (DataSet("CompOut", ()),)
    assert result.timings.functions == 0
    await d.close()


async def test_static_set_overrides_supplied(registry: Registry) -> None:
    add(registry, "mm", b"matmul",
        static_sets={"InMats": (Item("", 0, mat(1, 3)),)})
    d = make_dispatcher(registry)
    result = await d.invoke("mm", [DataSet("InMats", (Item("", 0, mat(1, 100)),))])
    assert unmat(result.outputs[0].items[0].data) == [1, 9]
    await d.close()


async def test_nonzero_exit_is_function_error(registry: Registry) -> None:
    add(registry, "f", b"fail")
    d = make_dispatcher(registry)
    with pytest.raises(FunctionFailed) as info:
        await d.invoke("f", [None])
    assert info.value.detail["exit_code"] == 3
    assert d.statistics().failed == {"function_error": 1}
    await d.close()


async def test_engine_errors_are_typed(registry: Registry) -> None:
    add(registry, "c", b"crash")
    add(registry, "b", b"bug")
    d = make_dispatcher(registry)
    with pytest.raises(SandboxCrash, match="fake trap"):
        await d.invoke("c", [None])
    with pytest.raises(SandboxCrash, match="ZeroDivisionError") as info:
        await d.invoke("b", [None])
    assert info.value.detail["internal"] is True
    # the worker still serves
    add(registry, "e", b"echo")
    assert (await d.invoke("e", [DataSet("InMats", (Item("x", 1, b"y"),))])).outputs[0].items
    await d.close()


async def test_two_slots_run_in_parallel(registry: Registry, fake_engine: FakeEngine) -> None:
    add(registry, "s", b"sleep50ms")
    d = make_dispatcher(registry, slots=2)
    await asyncio.gather(*(d.invoke("s", [None]) for _ in range(6)))
    assert fake_engine.max_concurrent == 2
    stats = d.statistics()
    assert (stats.completed, stats.queued, stats.running) == (6, 0, 0)
    await d.close()


async def test_full_queue_answers_overloaded(registry: Registry) -> None:
    add(registry, "s", b"sleep50ms")
    d = make_dispatcher(registry, slots=1, queue_size=3)
    results = await asyncio.gather(*(d.invoke("s", [None]) for _ in range(10)),
                                   return_exceptions=True)
    overloaded = [r for r in results if isinstance(r, Overloaded)]
    done = [r for r in results if not isinstance(r, BaseException)]
    assert len(done) + len(overloaded) == 10
    assert len(done) == 4  # one running + three queued
    assert d.statistics().failed["overloaded"] == 6
    await d.close()


async def test_deadline_passing_in_queue_is_timeout(registry: Registry) -> None:
    add(registry, "slow", b"sleep1s")
    add(registry, "quick", b"echo")
    d = make_dispatcher(registry, slots=1)
    slow = asyncio.create_task(d.invoke("slow", [None]))
    await wait_until(lambda: d.statistics().running == 1)
    with pytest.raises(InvocationTimeout) as info:
        await d.invoke("quick", [None], timeout_ms=100)
    assert info.value.detail["queued"] is True
    await slow
    await d.close()


async def test_request_cannot_extend_function_timeout(registry: Registry) -> None:
    add(registry, "slow", b"sleep1s", timeout_ms=100)
    d = make_dispatcher(registry)
    with pytest.raises(InvocationTimeout):
        await d.invoke("slow", [None], timeout_ms=60_000)
    await d.close()


async def test_repr_and_statistics(registry: Registry) -> None:
    d = make_dispatcher(registry, slots=2, queue_size=9)
    assert "slots=2" in repr(d)
    assert "queued=0/9" in repr(d)
    stats = d.statistics()
    assert (stats.slots, stats.queue_capacity, stats.completed) == (2, 9, 0)
    await d.close()


class _UnwatchablePending(PendingRun):
    """A started run whose descriptor the event loop cannot watch (an engine bug)."""

    def __init__(self) -> None:
        self.stopped = self.finished = False

    def fileno(self) -> int:
        return -1

    def stop(self) -> None:
        self.stopped = True

    def finish(self) -> InvocationResult:
        self.finished = True
        raise AssertionError("no result for a run that never ran")


async def test_an_unwatchable_started_run_is_a_crash_not_a_hang(
        registry: Registry, fake_engine: FakeEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    pending = _UnwatchablePending()
    monkeypatch.setattr(fake_engine, "startable", True, raising=False)
    monkeypatch.setattr(fake_engine, "start", lambda *args: pending, raising=False)
    add(registry, "e", b"echo")
    d = make_dispatcher(registry)
    with pytest.raises(SandboxCrash, match="failed unexpectedly") as info:
        await asyncio.wait_for(d.invoke("e", [None]), 5)
    assert info.value.detail["internal"] is True
    assert pending.stopped and pending.finished
    assert d.statistics().running == 0
    monkeypatch.setattr(fake_engine, "startable", False)  # the worker still serves
    assert (await d.invoke("e", [DataSet("InMats", (Item("x", 1, b"y"),))])).outputs[0].items
    await d.close()


async def test_an_engine_bug_inline_is_a_crash_and_the_slot_is_free(
        registry: Registry, fake_engine: FakeEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> InvocationResult:
        raise ZeroDivisionError("inline bug")

    monkeypatch.setattr(fake_engine, "preemptible", True, raising=False)
    monkeypatch.setattr(fake_engine, "invoke_preemptible", broken, raising=False)
    add(registry, "e", b"echo")
    d = make_dispatcher(registry)
    with pytest.raises(SandboxCrash, match="ZeroDivisionError: inline bug") as info:
        await d.invoke("e", [None])
    assert info.value.detail["internal"] is True
    stats = d.statistics()
    assert (stats.running, stats.inline, stats.failed) == (0, 1, {"crash": 1})
    await d.close()


async def test_the_inline_decision_remembers_a_bounded_number_of_functions(
        registry: Registry, fake_engine: FakeEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    import pappus.dispatcher as dispatcher_module

    monkeypatch.setattr(dispatcher_module, "INLINE_RECORDS_MAX", 3)
    monkeypatch.setattr(fake_engine, "preemptible", True, raising=False)
    monkeypatch.setattr(fake_engine, "invoke_preemptible",
                        lambda artifact, inputs, limits, budget: fake_engine.invoke(
                            artifact, inputs, limits), raising=False)
    names = [f"f{n}" for n in range(6)]
    for name in names:
        add(registry, name, b"echo")
    d = make_dispatcher(registry)
    for name in names:
        await d.invoke(name, [DataSet("InMats", (Item("x", 1, b"y"),))])
    assert d.statistics().inline == len(names)
    assert list(d._inline) == names[-3:]  # the oldest are forgotten first
    await d.close()
