"""The wasm engine's preemptible invocation: the budget abandons a run, every other outcome is
final, and an abandoned run is counted apart from invocations."""

from __future__ import annotations

import time

import pytest

from pappus.engines.wasm import WasmEngine
from pappus.errors import InvocationTimeout, SandboxCrash
from tests.engines.support import by_name, limits, spec, stdio_set

BUDGET_S = 0.001
ABANDON_BOUND_S = 1.0
"""Far below the run's 10 s deadline, so an abandonment at the budget is told apart from
a run to its deadline. Typically ~2-4 ms (the budget plus a few 2 ms epoch ticks and the
ticker's wake-up), but a stall of this noisy 2-vCPU VM once made one take 184 ms under a
50 ms bound: how fast is the benchmarks' business (docs/spec.md), not this test's."""


def test_a_short_function_finishes_within_the_budget(engine: WasmEngine,
                                                     wasm_functions: dict[str, bytes]) -> None:
    artifact = engine.prepare(spec("stdio", wasm_functions["stdio"], ("stdio",), ("stdio",)),
                              None)
    engine.invoke(artifact, [stdio_set(b"warm")], limits())  # first use of a pool slot
    result = engine.invoke_preemptible(artifact, [stdio_set(b"hello")], limits(), 0.5)
    assert result is not None
    expected = engine.invoke(artifact, [stdio_set(b"hello")], limits())
    assert by_name(result, "stdio") == by_name(expected, "stdio")
    assert engine.statistics().preempted == 0


def test_a_spinning_function_is_abandoned_at_the_budget(engine: WasmEngine,
                                                        wasm_functions: dict[str, bytes]) -> None:
    artifact = engine.prepare(spec("spin", wasm_functions["spin"]), None)
    before = engine.statistics()
    for _ in range(5):
        began = time.monotonic()
        assert engine.invoke_preemptible(artifact, [], limits(timeout_s=10), BUDGET_S) is None
        elapsed = time.monotonic() - began
        assert BUDGET_S <= elapsed < ABANDON_BOUND_S, elapsed
    after = engine.statistics()
    assert after.preempted - before.preempted == 5
    assert (after.invocations, after.failures) == (before.invocations, before.failures)


def test_a_deadline_before_the_budget_is_a_real_timeout(engine: WasmEngine,
                                                         wasm_functions: dict[str, bytes]) -> None:
    artifact = engine.prepare(spec("spin", wasm_functions["spin"]), None)
    bound = limits(timeout_s=0.005)
    with pytest.raises(InvocationTimeout, match="deadline"):
        engine.invoke_preemptible(artifact, [], bound, 1.0)
    assert time.monotonic() >= bound.deadline
    assert engine.statistics().failures == 1 and engine.statistics().preempted == 0


def test_a_trap_is_final(engine: WasmEngine, wasm_functions: dict[str, bytes]) -> None:
    artifact = engine.prepare(spec("trap", wasm_functions["trap"]), None)
    with pytest.raises(SandboxCrash, match="trap"):
        engine.invoke_preemptible(artifact, [], limits(), 0.5)
    assert engine.statistics().failures == 1


def test_gives_up_at_once_when_every_pooled_instance_is_taken(
        wasm_functions: dict[str, bytes]) -> None:
    engine = WasmEngine(pool_size=1)
    try:
        artifact = engine.prepare(spec("spin", wasm_functions["spin"]), None)
        assert engine.pool is not None
        with engine._slot():  # hold the only instance, as a running call would
            began = time.monotonic()
            assert engine.invoke_preemptible(artifact, [], limits(), 5.0) is None
            assert time.monotonic() - began < 0.5  # did not wait for the instance
        assert engine.statistics().preempted == 0
    finally:
        engine.close()
