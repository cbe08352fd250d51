"""The wasm engine as a whole: parallel invocations, isolation between concurrent ones,
bounded pool slots, the compiled-module cache across restarts, statistics."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from pathlib import Path

import pytest

from pappus.engines.wasm import WasmEngine
from pappus.errors import InvocationTimeout, SandboxCrash
from tests.conftest import eventually
from tests.engines.support import by_name, limits, native_tickers, spec, stdio_set


def test_two_invocations_run_in_parallel(engine: WasmEngine,
                                         wasm_functions: dict[str, bytes]) -> None:
    artifact = engine.prepare(spec("spin", wasm_functions["spin"]), None)
    barrier = threading.Barrier(2)

    def spin() -> tuple[float, float]:
        barrier.wait()
        began = time.monotonic()
        with pytest.raises(InvocationTimeout):
            engine.invoke(artifact, [], limits(timeout_s=0.4))
        return began, time.monotonic()

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        (a_start, a_end), (b_start, b_end) = pool.map(lambda _: spin(), range(2))
    overlap = min(a_end, b_end) - max(a_start, b_start)
    assert overlap > 0.3  # both spun at the same time, not one after the other
    assert max(a_end, b_end) - min(a_start, b_start) < 0.7  # clearly less than 2 x 0.4 s


def test_concurrent_exits_never_cross(engine: WasmEngine,
                                      wasm_functions: dict[str, bytes]) -> None:
    """Each invocation sees its own exit code, trap or output, never another's."""
    exits = engine.prepare(spec("exit", wasm_functions["exit_code"], ("stdio",), ("stdio",)),
                           None)
    trap = engine.prepare(spec("trap", wasm_functions["trap"]), None)

    def run(index: int) -> str:
        if index % 3 == 2:
            try:
                engine.invoke(trap, [], limits())
            except SandboxCrash:
                return "crash"
            return "no crash"
        code = index % 50
        result = engine.invoke(exits, [stdio_set(argv=f"p {code}".encode())], limits())
        return f"{result.exit_code}:{by_name(result, 'stdio')['stdout'].decode()}"

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(run, range(300)))
    assert outcomes == ["crash" if i % 3 == 2 else f"{i % 50}:{i % 50}" for i in range(300)]


def test_timeout_in_one_thread_does_not_disturb_another(
        engine: WasmEngine, wasm_functions: dict[str, bytes]) -> None:
    spin = engine.prepare(spec("spin", wasm_functions["spin"]), None)
    stdio = engine.prepare(spec("stdio", wasm_functions["stdio"], ("stdio",), ("stdio",)), None)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        spinning = pool.submit(engine.invoke, spin, [], limits(timeout_s=0.3))
        results = []
        while not spinning.done():
            results.append(engine.invoke(stdio, [stdio_set(b"x")], limits()))
        with pytest.raises(InvocationTimeout):
            spinning.result()
    assert len(results) > 10
    assert all(r.exit_code == 0 for r in results)
    assert all(b"read 1 characters from stdin\nx" in by_name(r, "stdio")["stdout"]
               for r in results)


def test_calls_beyond_the_pool_wait_for_a_slot(wasm_functions: dict[str, bytes]) -> None:
    engine = WasmEngine(pool_size=2)
    try:
        assert engine.pool is not None
        assert engine.pool.instances == 2
        artifact = engine.prepare(spec("exit", wasm_functions["exit_code"], ("stdio",),
                                       ("stdio",)), None)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(
                lambda i: engine.invoke(artifact, [stdio_set(argv=f"p {i}".encode())],
                                        limits()).exit_code, range(64)))
        assert codes == list(range(64))  # none failed for lack of a slot
    finally:
        engine.close()


def test_on_demand_allocation_without_a_pool(wasm_functions: dict[str, bytes]) -> None:
    engine = WasmEngine(pool_size=None)
    try:
        assert engine.pool is None
        artifact = engine.prepare(spec("stdio", wasm_functions["stdio"], ("stdio",),
                                       ("stdio",)), None)
        assert engine.invoke(artifact, [None], limits()).exit_code == 0
    finally:
        engine.close()


def test_compiled_module_cache_survives_a_restart(tmp_path: Path,
                                                  wasm_functions: dict[str, bytes]) -> None:
    function = spec("stdio", wasm_functions["stdio"], ("stdio",), ("stdio",))
    first = WasmEngine()
    first.prepare(function, tmp_path)
    assert first.compiled == 1
    first.close()
    (entry,) = tmp_path.glob("*.cwasm")
    assert entry.name.startswith(function.sha256)

    second = WasmEngine()  # a restarted worker
    artifact = second.prepare(function, tmp_path)
    assert second.compiled == 0  # loaded from the cache, not recompiled
    assert second.invoke(artifact, [stdio_set()], limits()).exit_code == 0

    entry.write_bytes(b"corrupt")  # rewritten in place while `second` still uses it
    third = WasmEngine()
    third.prepare(function, tmp_path)
    assert third.compiled == 1  # a corrupt entry is recompiled, not fatal
    assert second.invoke(artifact, [stdio_set()], limits()).exit_code == 0
    for engine in (second, third):
        engine.close()


def test_cache_entries_depend_on_the_engine_configuration(
        tmp_path: Path, wasm_functions: dict[str, bytes]) -> None:
    function = spec("stdio", wasm_functions["stdio"], ("stdio",), ("stdio",))
    pooled, unpooled = WasmEngine(), WasmEngine(pool_size=None)
    try:
        pooled.prepare(function, tmp_path)
        unpooled.prepare(function, tmp_path)
        assert (pooled.compiled, unpooled.compiled) == (1, 1)
        assert len(list(tmp_path.glob("*.cwasm"))) == 2
    finally:
        pooled.close()
        unpooled.close()


def test_statistics_and_repr(engine: WasmEngine, wasm_functions: dict[str, bytes]) -> None:
    trap = engine.prepare(spec("trap", wasm_functions["trap"]), None)
    stdio = engine.prepare(spec("stdio", wasm_functions["stdio"], ("stdio",), ("stdio",)), None)
    with pytest.raises(SandboxCrash):
        engine.invoke(trap, [], limits())
    engine.invoke(stdio, [None], limits())
    stats = engine.statistics()
    assert (stats.engine, stats.prepared, stats.invocations, stats.failures) == ("wasm", 2, 2, 1)
    assert stats.mean_sandbox_start_us > 0
    assert "invocations=2 failures=1" in repr(engine)


def test_close_stops_the_ticker_and_is_idempotent(wasm_functions: dict[str, bytes]) -> None:
    before = native_tickers()
    engine = WasmEngine()
    assert native_tickers() == before  # started lazily
    artifact = engine.prepare(spec("stdio", wasm_functions["stdio"], ("stdio",), ("stdio",)),
                              None)
    engine.invoke(artifact, [None], limits())
    assert native_tickers() == before + 1
    engine.close()
    engine.close()
    eventually(lambda: native_tickers() == before)
    with pytest.raises(RuntimeError, match="closed"):
        engine.invoke(artifact, [None], limits())


def test_another_engines_artifact_is_refused(engine: WasmEngine) -> None:
    with pytest.raises(TypeError):
        engine.invoke(object(), [], limits())  # type: ignore[arg-type]
