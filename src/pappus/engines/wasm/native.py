"""Adapter over Wasmtime's C API (the bindings bundled in wasmtime-py) for the hot path.

Why not the public wasmtime-py API here:

* **Correctness.** wasmtime-py's host-call trampoline stores a Python
  exception raised by a host function in a *module-global* variable and
  re-raises it from whichever thread next sees a trap. With several compute
  slots running wasm at once, one invocation's ``proc_exit`` could surface in
  another invocation. Here host functions never let an exception cross the
  boundary: a control-flow event (exit, output limit, unexpected error) is
  parked in the invocation's own :class:`InvocationContext` and the host
  returns a plain trap; :meth:`Sandbox.call_start` re-raises it on the
  invocation's own thread.
* **Speed.** Unchecked host calls, direct instantiation and a direct call of
  ``_start`` skip the per-call type checks and export enumeration of the
  public API.

``wasmtime`` is pinned in ``pyproject.toml`` because this module uses its
private ``_bindings``; ``tests/engines/test_native.py`` covers it directly.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import wasmtime
from wasmtime import _bindings as ffi
from wasmtime import _ffi

from pappus.engines.wasm.memory import GuestMemory

HostImpl = Callable[..., int]
"""``impl(context, *args) -> result``: the guest's arguments as unsigned integers."""

_NO_FINALIZER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lambda _: None)
_TRAP_MESSAGE = b"pappus: a host call ended the run"
_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF
EXTERN_FUNC, EXTERN_MEMORY = 0, 3  # wasmtime_extern_kind_t (wasmtime/extern.h)
# Everything a module can make the host allocate is bounded per store, not only memory.
MAX_TABLE_ELEMENTS = 100_000
MAX_INSTANCES = 1
MAX_TABLES = 10
MAX_MEMORIES = 1


# Our own prototype of wasmtime_memory_data returning the address as an integer: the
# bindings' version returns a ctypes pointer that costs a cast per host call.
_memory_data = _ffi.dll._FuncPtr(("wasmtime_memory_data", _ffi.dll))
_memory_data.restype = ctypes.c_size_t
_memory_data.argtypes = [ctypes.POINTER(ffi.wasmtime_context_t),
                         ctypes.POINTER(ffi.wasmtime_memory_t)]
_memory_size = ffi.wasmtime_memory_data_size
_NO_MEMORY = GuestMemory(0, 0)


@dataclass(eq=False)
class InvocationContext:
    """What host calls on this thread need: store, memory, per-invocation state, a parked stop.

    ``host_state`` belongs to whoever defined the host functions (the WASI
    layer keeps its :class:`~pappus.engines.wasm.wasi_abi.WasiState` there).
    """

    context: ctypes._Pointer  # type: ignore[type-arg]
    host_state: object = None
    memory: ffi.wasmtime_memory_t | None = None
    stopped_by: BaseException | None = None
    _view: GuestMemory = _NO_MEMORY

    def guest_memory(self) -> GuestMemory:
        """A bounds-checked view of linear memory, valid for this host call.

        The view of the previous call is reused while the memory has neither
        grown nor moved (only wasm code can grow it, and none runs meanwhile).
        """
        if self.memory is None:
            return _NO_MEMORY
        memory = ctypes.byref(self.memory)
        size = _memory_size(self.context, memory)
        base = _memory_data(self.context, memory)
        view = self._view
        if view.size != size or view.base != base:
            view = self._view = GuestMemory(base, size)
        return view


_current = threading.local()


def current() -> InvocationContext:
    """The invocation running on this thread (only valid inside a host call)."""
    context: InvocationContext = _current.context
    return context


def define_host_function(linker: wasmtime.Linker, module: str, name: str,
                         params: list[str], *, returns_i32: bool, impl: HostImpl) -> object:
    """Define ``module.name`` with raw (unchecked) argument passing.

    ``params`` are ``"i32"``/``"i64"``. ``impl`` receives the current
    :class:`InvocationContext` and the arguments; an exception from it is
    parked in that context and turned into a trap. Returns the native
    callback, which the caller must keep alive as long as ``linker`` lives.
    """
    wide = [p == "i64" for p in params]
    types = [wasmtime.ValType.i64() if w else wasmtime.ValType.i32() for w in wide]
    functype = wasmtime.FuncType(types, [wasmtime.ValType.i32()] if returns_i32 else [])

    def callback(env: int | None, caller: object, values: ctypes.Array,  # type: ignore[type-arg]
                 count: int) -> int:
        context: InvocationContext | None = getattr(_current, "context", None)
        try:
            if context is None:  # not inside a Sandbox: nothing to act on, just trap
                raise RuntimeError(f"host function {name} called outside a sandbox")
            args = [values[i].i64 & _U64 if w else values[i].i32 & _U32
                    for i, w in enumerate(wide)]
            result = impl(context, *args)
            if returns_i32:
                values[0].i32 = result
            return 0
        except BaseException as stop:  # parked, re-raised by the Sandbox on this thread
            if context is not None and context.stopped_by is None:
                context.stopped_by = stop
            trap = ffi.wasmtime_trap_new(_TRAP_MESSAGE, len(_TRAP_MESSAGE))
            return ctypes.cast(trap, ctypes.c_void_p).value or 0

    native = ffi.wasmtime_func_unchecked_callback_t(callback)
    encoded_module, encoded_name = module.encode(), name.encode()
    error = ffi.wasmtime_linker_define_func_unchecked(
        linker.ptr(), encoded_module, len(encoded_module), encoded_name, len(encoded_name),
        functype.ptr(), native, None, _NO_FINALIZER)
    if error:
        raise wasmtime.WasmtimeError._from_ptr(error)
    return native


class Sandbox:
    """One fresh Store + instance; a context manager (the store dies on exit).

    ``memory_bytes`` bounds linear memory (``memory.grow`` returns -1 past it).
    The epoch deadline starts at 0 ticks: call :meth:`set_epoch_deadline`
    before running anything.
    """

    def __init__(self, engine: wasmtime.Engine, memory_bytes: int,
                 host_state: object = None) -> None:
        self._store = ffi.wasmtime_store_new(engine.ptr(), None, _NO_FINALIZER)
        self.context = ffi.wasmtime_store_context(self._store)
        ffi.wasmtime_store_limiter(self._store, memory_bytes, MAX_TABLE_ELEMENTS, MAX_INSTANCES,
                                   MAX_TABLES, MAX_MEMORIES)
        self._instance = ffi.wasmtime_instance_t()
        self.invocation = InvocationContext(self.context, host_state)

    def __enter__(self) -> Sandbox:
        _current.context = self.invocation
        return self

    def __exit__(self, *exc_info: object) -> None:
        _current.context = None
        ffi.wasmtime_store_delete(self._store)

    def set_epoch_deadline(self, ticks_beyond_current: int) -> None:
        """Trap (``INTERRUPT``) once the engine's epoch advances this many ticks."""
        ffi.wasmtime_context_set_epoch_deadline(self.context, ticks_beyond_current)

    def instantiate(self, pre: wasmtime.InstancePre) -> None:
        """Instantiate the pre-linked module; raises Trap, WasmtimeError or a parked stop."""
        trap = ctypes.POINTER(ffi.wasm_trap_t)()
        error = ffi.wasmtime_instance_pre_instantiate(
            pre.ptr(), self.context, ctypes.byref(self._instance), ctypes.byref(trap))
        self._check(error, trap)
        memory = ffi.wasmtime_extern_t()
        if ffi.wasmtime_instance_export_get(self.context, ctypes.byref(self._instance),
                                            b"memory", 6, ctypes.byref(memory)) and (
                cast(int, memory.kind) == EXTERN_MEMORY):
            self.invocation.memory = memory.of.memory

    def call_start(self) -> None:
        """Call ``_start``; re-raise a parked host stop, else a trap or error."""
        start = ffi.wasmtime_extern_t()
        if not ffi.wasmtime_instance_export_get(self.context, ctypes.byref(self._instance),
                                                b"_start", 6, ctypes.byref(start)) or (
                cast(int, start.kind) != EXTERN_FUNC):
            raise wasmtime.WasmtimeError("module exports no '_start' function")
        trap = ctypes.POINTER(ffi.wasm_trap_t)()
        error = ffi.wasmtime_func_call(self.context, ctypes.byref(start.of.func), None, 0,
                                       None, 0, ctypes.byref(trap))
        self._check(error, trap)

    def _check(self, error: ctypes._Pointer, trap: ctypes._Pointer) -> None:  # type: ignore[type-arg]
        # Take ownership of both (their destructors free them) before re-raising a stop.
        trap_object = wasmtime.Trap._from_ptr(trap) if trap else None
        error_object = wasmtime.WasmtimeError._from_ptr(error) if error else None
        stopped = self.invocation.stopped_by
        if stopped is not None:
            raise stopped
        if trap_object is not None:
            raise trap_object
        if error_object is not None:
            raise error_object

    def memory_size(self) -> int:
        """Current size of the instance's memory in bytes (0 if none)."""
        return self.invocation.guest_memory().size
