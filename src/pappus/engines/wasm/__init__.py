"""The ``wasm`` engine (Wasmtime) and its own WASI preview1 layer over :mod:`pappus.vfs`."""

from pappus.engines.wasm.engine import DEFAULT_TICK_S as DEFAULT_TICK_S
from pappus.engines.wasm.engine import WasmArtifact as WasmArtifact
from pappus.engines.wasm.engine import WasmEngine as WasmEngine
from pappus.engines.wasm.pooling import DEFAULT_INSTANCES as DEFAULT_INSTANCES

__all__ = ["DEFAULT_INSTANCES", "DEFAULT_TICK_S", "WasmArtifact", "WasmEngine"]
