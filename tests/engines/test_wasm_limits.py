"""Bounds the wasm engine enforces without the function's cooperation: deadline, memory,
output size; and how failures are reported (timeout, out_of_memory, crash, bad_output)."""

from __future__ import annotations

import statistics
import time

import pytest

from pappus.engines.wasm import WasmEngine
from pappus.errors import BadOutput, InvalidBinary, InvocationTimeout, OutOfMemory, SandboxCrash
from pappus.model import DataSet, Item
from tests.engines.support import MiB, limits, spec, wat2wasm

FILE_FLOOD = """
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 2)
  (data (i32.const 64) "out/big")
  (func (export "_start")
    (if (call $path_open (i32.const 3) (i32.const 0) (i32.const 64) (i32.const 7)
                         (i32.const 9) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 16))
      (then (call $proc_exit (i32.const 1))))
    ;; 64 KiB per write, forever; the errno is ignored, as careless code would
    (i32.store (i32.const 0) (i32.const 65536))
    (i32.store (i32.const 4) (i32.const 65536))
    (loop $again
      (drop (call $fd_write (i32.load (i32.const 16)) (i32.const 0) (i32.const 1)
                            (i32.const 8)))
      (br $again))))
"""


def test_infinite_loop_stops_within_deadline_plus_50ms(engine: WasmEngine,
                                                       wasm_functions: dict[str, bytes]) -> None:
    artifact = engine.prepare(spec("spin", wasm_functions["spin"]), None)
    overshoots = []
    for _ in range(5):
        bound = limits(timeout_s=0.2)
        with pytest.raises(InvocationTimeout, match="deadline"):
            engine.invoke(artifact, [], bound)
        overshoots.append(time.monotonic() - bound.deadline)
    assert min(overshoots) >= 0  # never early
    assert statistics.median(overshoots) < 0.015, overshoots  # measured: ~1-3 ms
    assert max(overshoots) < 0.050, overshoots


def test_deadline_already_passed(engine: WasmEngine, wasm_functions: dict[str, bytes]) -> None:
    artifact = engine.prepare(spec("spin", wasm_functions["spin"]), None)
    with pytest.raises(InvocationTimeout, match="before starting"):
        engine.invoke(artifact, [], limits(timeout_s=-1))


def test_memory_bomb_is_out_of_memory(engine: WasmEngine, wasm_functions: dict[str, bytes]) -> None:
    artifact = engine.prepare(spec("bomb", wasm_functions["bomb"]), None)
    for bound in (2 * MiB, 32 * MiB, 100 * MiB):
        with pytest.raises(OutOfMemory) as info:
            engine.invoke(artifact, [], limits(memory=bound))
        assert info.value.detail["memory_bytes"] == bound


@pytest.mark.parametrize("ending", ["(loop $spin (br $spin))",  # times out
                                    "(call $exit (i32.const 1))"])  # exits non-zero
def test_failing_at_the_memory_bound_is_out_of_memory(engine: WasmEngine, ending: str) -> None:
    hog = wat2wasm(f"""
      (module
        (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
        (memory (export "memory") 1)
        (func (export "_start")
          (loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
          {ending}))""")
    artifact = engine.prepare(spec("hog", hog), None)
    with pytest.raises(OutOfMemory):
        engine.invoke(artifact, [], limits(timeout_s=0.1, memory=4 * MiB))


def test_a_timeout_well_below_a_small_memory_bound_is_a_timeout(
        engine: WasmEngine, wasm_functions: dict[str, bytes]) -> None:
    artifact = engine.prepare(spec("spin", wasm_functions["spin"]), None)
    with pytest.raises(InvocationTimeout):  # uses 128 KiB of 1 MiB: not out of memory
        engine.invoke(artifact, [], limits(timeout_s=0.05, memory=MiB))


def test_initial_memory_over_the_bound_is_out_of_memory(engine: WasmEngine) -> None:
    big = wat2wasm('(module (memory (export "memory") 100) (func (export "_start")))')
    artifact = engine.prepare(spec("big", big), None)
    with pytest.raises(OutOfMemory, match="6553600 bytes"):
        engine.invoke(artifact, [], limits(memory=MiB))
    assert engine.invoke(artifact, [], limits(memory=8 * MiB)).exit_code == 0


def test_trap_is_crash_with_reason_and_code(engine: WasmEngine,
                                            wasm_functions: dict[str, bytes]) -> None:
    artifact = engine.prepare(spec("trap", wasm_functions["trap"]), None)
    with pytest.raises(SandboxCrash) as info:
        engine.invoke(artifact, [], limits())
    assert "unreachable" in info.value.message
    assert info.value.detail["trap_code"] == "UNREACHABLE"
    assert info.value.detail["backtrace"]


def test_stack_overflow_is_crash(engine: WasmEngine, wasm_functions: dict[str, bytes]) -> None:
    artifact = engine.prepare(spec("stackbomb", wasm_functions["stackbomb"]), None)
    with pytest.raises(SandboxCrash, match="out of bounds"):
        engine.invoke(artifact, [], limits())


def test_crash_reports_the_tail_of_stderr(engine: WasmEngine) -> None:
    # writes "boom\n" to stderr, then traps
    module = wat2wasm("""
      (module
        (import "wasi_snapshot_preview1" "fd_write"
          (func $fd_write (param i32 i32 i32 i32) (result i32)))
        (memory (export "memory") 1)
        (data (i32.const 16) "boom\\n")
        (func (export "_start")
          (i32.store (i32.const 0) (i32.const 16))
          (i32.store (i32.const 4) (i32.const 5))
          (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
          unreachable))""")
    artifact = engine.prepare(spec("boom", module), None)
    with pytest.raises(SandboxCrash) as info:
        engine.invoke(artifact, [], limits())
    assert info.value.detail["stderr"] == "boom\n"


@pytest.mark.parametrize("outputs", [("stdio",), ()])
def test_stdout_flood_is_bad_output(engine: WasmEngine, wasm_functions: dict[str, bytes],
                                    outputs: tuple[str, ...]) -> None:
    # Captured stdout counts even when it is not emitted: it holds host memory too.
    artifact = engine.prepare(spec("flood", wasm_functions["flood"], (), outputs), None)
    with pytest.raises(BadOutput, match="output limit of 100000 bytes") as info:
        engine.invoke(artifact, [], limits(output=100_000))
    assert info.value.detail["limit"] == 100_000


def test_file_flood_is_bad_output_even_if_the_function_ignores_errors(
        engine: WasmEngine) -> None:
    artifact = engine.prepare(spec("fileflood", wat2wasm(FILE_FLOOD), (), ("out",)),
                              None)
    started = time.monotonic()
    with pytest.raises(BadOutput):
        engine.invoke(artifact, [], limits(output=MiB))
    assert time.monotonic() - started < 1.0  # ended at once, not at the deadline


def test_output_within_the_limit_is_fine(engine: WasmEngine,
                                         wasm_functions: dict[str, bytes]) -> None:
    artifact = engine.prepare(spec("fileio", wasm_functions["fileio"], ("in", "in_nested"),
                                   ("out", "out_nested")), None)
    data = b"x" * 1000
    inputs = [DataSet("in", (Item("in_file", 0, data),)), DataSet("in_nested", ())]
    assert engine.invoke(artifact, inputs, limits(output=1000)).exit_code == 0
    with pytest.raises(BadOutput):
        engine.invoke(artifact, inputs, limits(output=999))


def test_table_growth_is_bounded(engine: WasmEngine) -> None:
    # A module growing a table towards 2^32 elements must not exhaust host memory:
    # table.grow fails (-1) beyond the store's limit and the module traps on that.
    module = wat2wasm("""(module (memory (export "memory") 1) (table 1 funcref)
      (func (export "_start")
        (if (i32.eq (table.grow (ref.null func) (i32.const 200000)) (i32.const -1))
          (then unreachable))))""")
    artifact = engine.prepare(spec("tables", module), None)
    with pytest.raises(SandboxCrash, match="unreachable"):
        engine.invoke(artifact, [], limits())


def test_a_module_with_too_big_a_table_is_refused(engine: WasmEngine) -> None:
    module = wat2wasm('(module (memory (export "memory") 1) (table 200000 funcref)'
                      ' (func (export "_start")))')
    with pytest.raises(InvalidBinary):
        engine.prepare(spec("bigtable", module), None)
