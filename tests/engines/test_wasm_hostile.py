"""Hostile modules: invalid binaries are refused at preparation; bad pointers, lengths,
descriptors and paths get an errno; a failing host call is a crash, never a dead worker."""

from __future__ import annotations

import pytest

from pappus.engines.wasm import WasmEngine, wasi
from pappus.errors import InvalidBinary, SandboxCrash
from tests.engines.support import by_name, limits, spec, wat2wasm

EFAULT, EBADF, EINVAL, EILSEQ, ENOSYS, ENOTSUP, ENOTDIR, ESPIPE = 21, 8, 28, 25, 52, 58, 54, 70


def wat(imports: str, body: str, memory_pages: int = 1) -> bytes:
    return wat2wasm(f"""
      (module
        (import "wasi_snapshot_preview1" "fd_write"
          (func $fd_write (param i32 i32 i32 i32) (result i32)))
        {imports}
        (memory (export "memory") {memory_pages})
        (func $report (param $errno i32)
          ;; one byte per result on stdout, through a valid iovec at 0
          (i32.store8 (i32.const 100) (local.get $errno))
          (i32.store (i32.const 0) (i32.const 100))
          (i32.store (i32.const 4) (i32.const 1))
          (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
        (func (export "_start") {body}))""")


@pytest.mark.parametrize(("binary", "needle"), [
    (b"", "not a WebAssembly module"),
    (b"\x7fELF\x02\x01\x01", "not a WebAssembly module"),
    (b"\0asm\x01\0\0\0\x01\xff", "invalid WebAssembly module"),
    (wat2wasm('(module (import "env" "f" (func)) (memory (export "memory") 1)'
                       ' (func (export "_start")))'), "imports env.f"),
    (wat2wasm('(module (import "wasi_snapshot_preview1" "no_such_call" (func))'
                       ' (memory (export "memory") 1) (func (export "_start")))'),
     "no_such_call"),
    (wat2wasm('(module (import "wasi_snapshot_preview1" "fd_write" (func))'
                       ' (memory (export "memory") 1) (func (export "_start")))'),
     r"fd_write with the wrong type \(expected a function \(i32, i32, i32, i32\) -> \(i32\)\)"),
    (wat2wasm('(module (import "env" "memory" (memory 1)) (func (export "_start")))'),
     "env.memory"),
    (wat2wasm('(module (memory (export "memory") 1))'), "_start"),
    (wat2wasm('(module (memory (export "memory") 1) (func (export "_start")'
                       ' (param i32)))'), "_start"),
    (wat2wasm('(module (func (export "_start")))'), "memory"),
    (wat2wasm('(module (memory (export "memory") i64 1) (func (export "_start")))'),
     "64-bit"),
    (wat2wasm('(module (memory (export "memory") 1) (func (export "_start"))'
                       ' (data (i32.const 70000) "x"))'), "cannot be instantiated"),
    (wat2wasm('(module (memory (export "memory") 1) (func (export "_start"))'
                       ' (func $s unreachable) (start $s))'), "cannot be instantiated"),
    (wat2wasm('(module (memory (export "memory") 1) (func (export "_start"))'
                       ' (func $s (loop $l (br $l))) (start $s))'), "cannot be instantiated"),
])
def test_invalid_binaries(engine: WasmEngine, binary: bytes, needle: str) -> None:
    with pytest.raises(InvalidBinary, match=needle):
        engine.prepare(spec("bad", binary), None)


def test_truncated_module(engine: WasmEngine, wasm_functions: dict[str, bytes]) -> None:
    binary = wasm_functions["stdio"]
    with pytest.raises(InvalidBinary, match="invalid WebAssembly module"):
        engine.prepare(spec("cut", binary[: len(binary) // 2]), None)


HOSTILE_IMPORTS = """
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_readdir"
    (func $fd_readdir (param i32 i32 i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_seek" (func $fd_seek (param i32 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get"
    (func $fd_prestat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get"
    (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_recv"
    (func $sock_recv (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_raise" (func $proc_raise (param i32) (result i32)))
  (data (i32.const 200) "in\\ffx")
  (data (i32.const 210) "in\\00x")
"""

HOSTILE_BODY = """
  ;; 1 iovec pointing past the end of memory
  (i32.store (i32.const 16) (i32.const 65000))
  (i32.store (i32.const 20) (i32.const 10000))
  (call $report (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 8)))
  ;; 2 iovec array out of bounds, absurd count
  (call $report (call $fd_write (i32.const 1) (i32.const -8) (i32.const -1) (i32.const 8)))
  ;; 3 path of absurd length
  (call $report (call $path_open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const -1)
                                 (i32.const 0) (i64.const 0) (i64.const 0) (i32.const 0)
                                 (i32.const 8)))
  ;; 4 result pointer out of bounds
  (call $report (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 70000)))
  ;; 5 unknown descriptor
  (call $report (call $fd_write (i32.const 99) (i32.const 0) (i32.const 1) (i32.const 8)))
  ;; 6 argv written to an out-of-bounds buffer
  (call $report (call $args_get (i32.const 65534) (i32.const 65535)))
  ;; 7 a path that is not UTF-8, 8 a path with a NUL
  (call $report (call $path_open (i32.const 3) (i32.const 0) (i32.const 200) (i32.const 4)
                                 (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0)
                                 (i32.const 8)))
  (call $report (call $path_open (i32.const 3) (i32.const 0) (i32.const 210) (i32.const 4)
                                 (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0)
                                 (i32.const 8)))
  ;; 9 readdir into a buffer reaching past memory
  (call $report (call $fd_readdir (i32.const 3) (i32.const 65000) (i32.const 4096)
                                  (i64.const 0) (i32.const 8)))
  ;; 10 fd_read scattering into an out-of-bounds iovec
  (i32.store (i32.const 16) (i32.const 65530))
  (i32.store (i32.const 20) (i32.const 100))
  (call $report (call $fd_read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 8)))
  ;; 11 seek on a stream
  (call $report (call $fd_seek (i32.const 1) (i64.const 0) (i32.const 0) (i32.const 8)))
  ;; 12 a path relative to a descriptor that is not a directory
  (call $report (call $path_open (i32.const 0) (i32.const 0) (i32.const 200) (i32.const 1)
                                 (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0)
                                 (i32.const 8)))
  ;; 13 no preopen at 4, 14 random bytes out of bounds, 15 unknown clock
  (call $report (call $fd_prestat_get (i32.const 4) (i32.const 8)))
  (call $report (call $random_get (i32.const 65530) (i32.const 100)))
  (call $report (call $clock_time_get (i32.const 99) (i64.const 0) (i32.const 8)))
  ;; 16 poll with no subscriptions, 17 sockets, 18 signals
  (call $report (call $poll_oneoff (i32.const 0) (i32.const 64) (i32.const 0) (i32.const 8)))
  (call $report (call $sock_recv (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 0)
                                 (i32.const 0) (i32.const 0)))
  (call $report (call $proc_raise (i32.const 9)))
  ;; 19 closing stdin, then reading it
  (drop (call $fd_close (i32.const 0)))
  (i32.store (i32.const 16) (i32.const 300))
  (i32.store (i32.const 20) (i32.const 10))
  (call $report (call $fd_read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 8)))
"""


def test_hostile_arguments_get_an_errno_not_a_crash(engine: WasmEngine) -> None:
    artifact = engine.prepare(spec("hostile", wat(HOSTILE_IMPORTS, HOSTILE_BODY), (),
                                   ("stdio",)), None)
    result = engine.invoke(artifact, [], limits())
    assert list(by_name(result, "stdio")["stdout"]) == [
        EFAULT, EFAULT, EFAULT, EFAULT, EBADF, EFAULT, EILSEQ, EINVAL, EFAULT, EFAULT, ESPIPE,
        ENOTDIR, EBADF, EFAULT, EINVAL, EINVAL, ENOTSUP, ENOSYS, EBADF]
    assert engine.invoke(artifact, [], limits()).exit_code == 0  # and the engine is fine


def test_a_failing_host_call_is_a_crash(monkeypatch: pytest.MonkeyPatch,
                                        wasm_functions: dict[str, bytes]) -> None:
    params, _ = wasi.CALLS["fd_write"]

    def broken(*args: int) -> int:
        raise KeyError("a pappus bug")

    monkeypatch.setitem(wasi.CALLS, "fd_write", (params, broken))
    engine = WasmEngine()
    try:
        artifact = engine.prepare(spec("stdio", wasm_functions["stdio"], ("stdio",),
                                       ("stdio",)), None)
        with pytest.raises(SandboxCrash, match="host call fd_write failed") as info:
            engine.invoke(artifact, [None], limits())
        assert info.value.detail["host_call"] == "fd_write"
        assert engine.statistics().failures == 1
    finally:
        engine.close()
