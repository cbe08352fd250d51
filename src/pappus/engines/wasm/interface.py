"""What a module must look like to run here: a WASI command importing only our preview1 layer."""

from __future__ import annotations

from dataclasses import dataclass

import wasmtime

from pappus.engines.wasm.wasi import known_calls
from pappus.engines.wasm.wasi_abi import MODULE
from pappus.errors import InvalidBinary

WASM_MAGIC = b"\0asm"


@dataclass(frozen=True, slots=True)
class ModuleInterface:
    """Facts about a checked module the engine needs per invocation."""

    min_memory_bytes: int


def _types(types: list[wasmtime.ValType]) -> list[str]:
    return [str(t) for t in types]


def check_magic(binary: bytes) -> None:
    """Refuse anything that is not even a WebAssembly binary, with a hint."""
    if binary[:4] != WASM_MAGIC:
        raise InvalidBinary(
            "not a WebAssembly module (it does not start with '\\0asm'); build C with "
            "`pappus build` or clang --target=wasm32-wasi")


def check_interface(module: wasmtime.Module) -> ModuleInterface:
    """Check imports and exports; raise :class:`InvalidBinary` naming the first problem."""
    known = known_calls()
    for imported in module.imports:
        name = f"{imported.module}.{imported.name}"
        if imported.module != MODULE or imported.name is None or imported.name not in known:
            raise InvalidBinary(
                f"module imports {name}, which pappus does not provide (only the WASI "
                f"preview1 calls of {MODULE!r})", import_name=name)
        params, results = known[imported.name]
        kind = imported.type
        if not isinstance(kind, wasmtime.FuncType) or (
                _types(kind.params), _types(kind.results)) != (params, results):
            raise InvalidBinary(
                f"module imports {name} with the wrong type (expected a function "
                f"({', '.join(params)}) -> ({', '.join(results)}))", import_name=name)
    exports = {export.name: export.type for export in module.exports}
    start = exports.get("_start")
    if not isinstance(start, wasmtime.FuncType) or start.params or start.results:
        raise InvalidBinary("module exports no '_start' function of type () -> () "
                            "(build a WASI command, not a library or reactor)")
    memory = exports.get("memory")
    if not isinstance(memory, wasmtime.MemoryType):
        raise InvalidBinary("module exports no linear memory named 'memory'")
    if memory.is_64 or memory.is_shared:
        raise InvalidBinary("module's memory is 64-bit or shared; WASI preview1 "
                            "functions use one unshared 32-bit memory")
    return ModuleInterface(min_memory_bytes=memory.limits.min * memory.page_size)
