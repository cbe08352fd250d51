"""The trivial wasm function used by the benchmarks: writes "ok\\n" to stdout, one host call."""

from __future__ import annotations

import wasmtime

TRIVIAL_WAT = """
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "ok\\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 3))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"""

BARE_WAT = """
(module
  (memory (export "memory") 1)
  (func (export "_start") (i32.store (i32.const 0) (i32.const 42))))
"""


def trivial_module() -> bytes:
    """The benchmark function as a wasm binary."""
    return bytes(wasmtime.wat2wasm(TRIVIAL_WAT))


def bare_module() -> bytes:
    """A module with no imports, for the raw-Wasmtime baseline."""
    return bytes(wasmtime.wat2wasm(BARE_WAT))
