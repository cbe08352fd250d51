"""The C-API adapter (pappus.engines.wasm.native): raw host calls, parked stops, sandboxes."""

from __future__ import annotations

import concurrent.futures
from typing import NamedTuple

import pytest
import wasmtime

from pappus.engines.wasm import native
from tests.engines.support import wat2wasm

CALLER = wat2wasm("""
  (module
    (import "test" "add" (func $add (param i32 i64) (result i32)))
    (import "test" "stop" (func $stop (param i32)))
    (memory (export "memory") 1 4)
    (func (export "_start")
      ;; memory[0] = add(-1, 2^40 + 5); then stop(memory[0])
      (i32.store (i32.const 0) (call $add (i32.const -1) (i64.const 1099511627781)))
      (call $stop (i32.load (i32.const 0)))
      (i32.store (i32.const 4) (i32.const 1))))  ;; never reached
""")


class Stop(Exception):
    def __init__(self, value: int, state: object) -> None:
        super().__init__(value)
        self.value = value
        self.state = state


class Linked(NamedTuple):
    engine: wasmtime.Engine
    pre: wasmtime.InstancePre
    seen: list[object]
    callbacks: list[object]  # must outlive the linker's functions


@pytest.fixture
def linked() -> Linked:
    engine = wasmtime.Engine()
    linker = wasmtime.Linker(engine)
    seen: list[object] = []

    def add(context: native.InvocationContext, small: int, wide: int) -> int:
        seen.append((small, wide, context.guest_memory().size))
        return (small + wide) & 0xFFFFFFFF

    def stop(context: native.InvocationContext, value: int) -> int:
        raise Stop(value, context.host_state)

    callbacks = [native.define_host_function(linker, "test", "add", ["i32", "i64"],
                                        returns_i32=True, impl=add),
            native.define_host_function(linker, "test", "stop", ["i32"],
                                        returns_i32=False, impl=stop)]
    return Linked(engine, linker.instantiate_pre(wasmtime.Module(engine, CALLER)), seen, callbacks)


def test_host_calls_get_unsigned_arguments_and_parked_stops_surface(
        linked: Linked) -> None:
    engine, pre, seen, _ = linked
    with native.Sandbox(engine, 1 << 20, host_state="state A") as sandbox:
        sandbox.set_epoch_deadline(1 << 40)
        sandbox.instantiate(pre)
        assert sandbox.memory_size() == 65536
        with pytest.raises(Stop) as info:
            sandbox.call_start()
    assert seen[0] == (0xFFFFFFFF, 2**40 + 5, 65536)
    assert info.value.value == 4  # (2^32 - 1 + 2^40 + 5) mod 2^32
    assert info.value.state == "state A"


def test_stops_stay_on_their_own_thread(
        linked: Linked) -> None:
    engine, pre, _, _ = linked

    def run(index: int) -> object:
        with native.Sandbox(engine, 1 << 20, host_state=index) as sandbox:
            sandbox.set_epoch_deadline(1 << 40)
            sandbox.instantiate(pre)
            try:
                sandbox.call_start()
            except Stop as stop:
                return stop.state
        return None

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        assert list(pool.map(run, range(400))) == list(range(400))


def test_memory_limit_and_traps() -> None:
    engine = wasmtime.Engine()
    module = wasmtime.Module(engine, wat2wasm("""
      (module (memory (export "memory") 1)
        (func (export "_start")
          (if (i32.ne (memory.grow (i32.const 1)) (i32.const -1)) (then unreachable))))"""))
    pre = wasmtime.Linker(engine).instantiate_pre(module)
    with native.Sandbox(engine, 65536) as sandbox:  # room for the first page only
        sandbox.set_epoch_deadline(1 << 40)
        sandbox.instantiate(pre)
        sandbox.call_start()  # grow refused: returns -1, no trap
        assert sandbox.memory_size() == 65536
    with native.Sandbox(engine, 1 << 20) as sandbox:
        sandbox.set_epoch_deadline(1 << 40)
        sandbox.instantiate(pre)
        with pytest.raises(wasmtime.Trap) as info:
            sandbox.call_start()  # grow allowed: traps on purpose
        assert info.value.trap_code == wasmtime.TrapCode.UNREACHABLE


def test_a_module_without_memory_or_start() -> None:
    engine = wasmtime.Engine()
    pre = wasmtime.Linker(engine).instantiate_pre(
        wasmtime.Module(engine, wat2wasm("(module)")))
    with native.Sandbox(engine, 1 << 20) as sandbox:
        sandbox.instantiate(pre)
        assert sandbox.memory_size() == 0
        assert sandbox.invocation.guest_memory().size == 0
        with pytest.raises(wasmtime.WasmtimeError, match="_start"):
            sandbox.call_start()
