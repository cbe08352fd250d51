"""The ``wasm`` engine: WebAssembly modules on Wasmtime, a fresh Store and instance per call.

* **Preparation** (registration and restart): validate and compile, or load
  the compiled form from the on-disk cache (:mod:`.cache`); check the
  interface (:mod:`.interface`: only our WASI layer may be imported, ``_start``
  and ``memory`` exported); pre-link (``InstancePre``); instantiate once
  without running ``_start``, so data segments, table sizes and a start
  function are checked at registration rather than failing every call.
* **Invocation**: a :class:`~pappus.vfs.SetFileSystem` from the inputs, a new
  Store with the memory bound, an instance, ``_start``; outputs are the files
  the function left in its output set directories. ``proc_exit(n)`` or a
  return from ``_start`` (``n = 0``) gives an :class:`InvocationResult` with
  ``exit_code = n``: the dispatcher, not the engine, decides what a non-zero
  code means.
* **Deadline**: epoch interruption driven by one ticker thread per engine
  (:mod:`.ticker`; native, so it never waits for the GIL); an infinite loop
  stops within about one tick (2 ms) plus the ticker's wake-up latency of its
  deadline → ``timeout``. Measured
  (``python -m benchmarks.bench_engine``, 100 ms deadline): median 1.6 ms,
  max 2.3 ms late; with two other threads invoking host-call-heavy functions
  flat out, max 7 ms.
* **Memory**: the Store's limiter bounds linear memory. WebAssembly's
  ``memory.grow`` returns -1 at the bound instead of trapping, and Wasmtime's
  C API reports no refused grow, so a program only *notices* (``malloc``
  returns NULL) and fails in its own way: it traps (``abort``), exits
  non-zero, or spins until the deadline. The engine reports ``out_of_memory``
  when a run ends in one of those ways while its memory is within
  ``max(1 MiB, bound / 16)`` of the bound (but at least half of it is used),
  and when the module's minimum memory exceeds the bound. Why not "no room
  for one more 64 KiB page": the request that failed is usually bigger than a
  page — a C program taking 1 MiB blocks fails with 896 KiB still free
  (measured at bounds of 2 to 257 MiB) — so a page-sized margin would call
  most real exhaustion a crash.
  The price: a run that fails for another reason while within that margin is
  also reported as out of memory.
* **Parallelism**: ``invoke`` is thread-safe; ctypes releases the GIL while
  wasm runs, so calls on different threads run in parallel, each reaching its
  own state through the thread's :class:`~pappus.engines.wasm.native.InvocationContext`.
  The pooling allocator (:mod:`.pooling`) caps live instances, so at most
  that many sandboxes exist at once and further calls wait for a slot.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import wasmtime

from pappus.engines.base import (
    Artifact,
    Engine,
    EngineStatistics,
    FunctionSpec,
    InvocationCounters,
    InvocationResult,
    Limits,
)
from pappus.engines.wasm import native
from pappus.engines.wasm.cache import ModuleCache, fingerprint
from pappus.engines.wasm.interface import check_interface, check_magic
from pappus.engines.wasm.pooling import DEFAULT_INSTANCES, WASM32_MAX_MEMORY, PoolSettings
from pappus.engines.wasm.pooling import pooled_engine as _pooled_engine
from pappus.engines.wasm.ticker import EpochTicker, create_ticker
from pappus.engines.wasm.wasi import define_wasi, new_state
from pappus.engines.wasm.wasi_abi import HostCallFailed, ProcExit
from pappus.errors import (
    BadOutput,
    InvalidBinary,
    InvocationTimeout,
    OutOfMemory,
    SandboxCrash,
)
from pappus.model import DataSet
from pappus.vfs import OutputLimitExceeded, SetFileSystem

logger = logging.getLogger(__name__)

OOM_MARGIN_BYTES = 1024 * 1024
OOM_MARGIN_DIVISOR = 16
"""A failed run within max(1 MiB, bound/16) of its memory bound (and using at least half
of it) is out of memory."""
DEFAULT_TICK_S = 0.002
PREPARE_TIMEOUT_S = 1.0
"""How long a module's start function may run when it is checked at preparation."""
STDERR_TAIL_BYTES = 1024
_NUMBERED = re.compile(r"^\d+:\s*")


class WasmArtifact(Artifact):
    """A compiled, checked and pre-linked module."""

    def __init__(self, spec: FunctionSpec, module: wasmtime.Module, pre: wasmtime.InstancePre,
                 min_memory_bytes: int) -> None:
        self.spec = spec
        self.module = module
        self.pre = pre
        self.min_memory_bytes = min_memory_bytes

    def __repr__(self) -> str:
        return f"<WasmArtifact {self.spec.name!r} min_memory={self.min_memory_bytes}>"


class WasmEngine(Engine):
    """WebAssembly functions on Wasmtime with pappus' own WASI layer.

    ``tick_s`` is the epoch period (deadline resolution). ``pool_size`` is the
    number of instance slots of the pooling allocator, i.e. the most sandboxes
    alive at once (more calls wait); ``None`` allocates each instance on demand.
    ``helper_dir`` caches the native epoch ticker once built (default: the user's
    cache directory; see :mod:`.ticker`); ``native_ticker=False`` uses the Python
    one instead (for comparison).
    """

    name = "wasm"

    def __init__(self, *, tick_s: float = DEFAULT_TICK_S,
                 pool_size: int | None = DEFAULT_INSTANCES,
                 helper_dir: Path | None = None, native_ticker: bool = True) -> None:
        settings = PoolSettings(instances=pool_size) if pool_size else None
        self._engine, self.pool = _pooled_engine(settings)
        self._slots = threading.BoundedSemaphore(self.pool.instances) if self.pool else None
        self._linker = wasmtime.Linker(self._engine)
        self._callbacks = define_wasi(self._linker)  # kept alive as long as the linker
        self._ticker = (create_ticker(self._engine, tick_s, helper_dir) if native_ticker
                        else EpochTicker(self._engine, tick_s))
        pool_print = self.pool.fingerprint if self.pool else "pool=none"
        self._cache = ModuleCache(self._engine, fingerprint("epoch=1", pool_print))
        self._lock = threading.Lock()
        self._compiled = 0
        self._counters = InvocationCounters(self.name)

    def __repr__(self) -> str:
        pool = self.pool.instances if self.pool else "none"
        return f"<WasmEngine pool={pool} compiled={self._compiled} {self._counters!r}>"

    @property
    def compiled(self) -> int:
        """Modules compiled by this engine (not loaded from the on-disk cache)."""
        return self._compiled

    # -- preparation -----------------------------------------------------------------

    def prepare(self, spec: FunctionSpec, cache_dir: Path | None) -> WasmArtifact:
        """Validate, compile (or load from the cache), check and pre-link ``spec.binary``."""
        check_magic(spec.binary)
        digest = hashlib.sha256(spec.binary).hexdigest()  # never trust a caller's digest
        module = self._cache.load(cache_dir, digest)
        if module is None:
            module = self._compile(spec.binary)
            self._cache.store(cache_dir, digest, module)
        interface = check_interface(module)
        try:
            pre = self._linker.instantiate_pre(module)
        except wasmtime.WasmtimeError as exc:
            raise InvalidBinary(f"module cannot be linked: {_first_line(exc)}") from exc
        artifact = WasmArtifact(spec, module, pre, interface.min_memory_bytes)
        self._check_instantiation(artifact)
        self._counters.count_prepared()
        return artifact

    def _compile(self, binary: bytes) -> wasmtime.Module:
        try:
            module = wasmtime.Module(self._engine, binary)
        except wasmtime.WasmtimeError as exc:
            raise InvalidBinary(f"invalid WebAssembly module: {_first_line(exc)}") from exc
        with self._lock:
            self._compiled += 1
        return module

    def _check_instantiation(self, artifact: WasmArtifact) -> None:
        fs = SetFileSystem({}, (), 0, program_name=artifact.spec.name)
        deadline = time.monotonic() + PREPARE_TIMEOUT_S
        with self._ticker, self._slot():
            try:
                with native.Sandbox(self._engine, WASM32_MAX_MEMORY, new_state(fs)) as sandbox:
                    self._ticker.arm(sandbox, deadline)
                    sandbox.instantiate(artifact.pre)
            except Exception as exc:
                reason = _describe_trap(exc)[0] if isinstance(exc, wasmtime.Trap) else (
                    _first_line(exc))
                raise InvalidBinary(f"module cannot be instantiated: {reason}") from exc

    def _slot(self) -> contextlib.AbstractContextManager[object]:
        return self._slots if self._slots is not None else contextlib.nullcontext()

    # -- invocation --------------------------------------------------------------------

    def invoke(self, artifact: Artifact, inputs: Sequence[DataSet | None],
               limits: Limits) -> InvocationResult:
        """Run the module's ``_start`` in a fresh Store and instance (blocking, thread-safe).

        ``timings_us``: ``sandbox_start`` (file system, Store, instance),
        ``run`` (``_start``), ``output`` (sandbox teardown, output sets).
        """
        checked = _checked(artifact)
        return self._counters.invoke(
            lambda: self._invoke(checked, inputs, limits, self._slot(), None))

    preemptible = True

    def invoke_preemptible(self, artifact: Artifact, inputs: Sequence[DataSet | None],
                           limits: Limits, budget_s: float) -> InvocationResult | None:
        """:meth:`invoke`, stopped by the epoch ticker at the first tick after ``budget_s``.

        Gives up at once (``None``) when every pooled instance is in use, so the
        caller never waits for one.
        """
        checked = _checked(artifact)
        if self._slots is not None and not self._slots.acquire(blocking=False):
            return None
        preempt_at = time.monotonic() + budget_s
        try:
            return self._counters.invoke(
                lambda: self._invoke(checked, inputs, limits, contextlib.nullcontext(),
                                     preempt_at if preempt_at < limits.deadline else None))
        except _Preempted:
            self._counters.count_preempted()
            return None
        finally:
            if self._slots is not None:
                self._slots.release()

    def _invoke(self, artifact: WasmArtifact, inputs: Sequence[DataSet | None],
                limits: Limits, slot: contextlib.AbstractContextManager[object],
                preempt_at: float | None) -> InvocationResult:
        """One run; with ``preempt_at``, an interrupt (at that time) is :class:`_Preempted`."""
        spec = artifact.spec
        began = time.perf_counter()
        if artifact.min_memory_bytes > limits.memory_bytes:
            raise OutOfMemory(
                f"{spec.name!r} needs {artifact.min_memory_bytes} bytes of memory to start, "
                f"more than its bound of {limits.memory_bytes}",
                memory_bytes=limits.memory_bytes)
        fs = SetFileSystem(
            {name: inputs[i] if i < len(inputs) else None
             for i, name in enumerate(spec.input_sets)},
            spec.output_sets, limits.max_output_bytes, program_name=spec.name)
        with self._ticker, slot:
            if limits.remaining() <= 0:
                raise InvocationTimeout(f"{spec.name!r} reached its deadline before starting")
            with native.Sandbox(self._engine, limits.memory_bytes, new_state(fs)) as sandbox:
                self._ticker.arm(sandbox, preempt_at if preempt_at is not None
                                 else limits.deadline)
                guard = _Guard(spec, fs, sandbox, limits, preempted=preempt_at is not None)
                guard.run(sandbox.instantiate, artifact.pre)
                started = time.perf_counter()
                exit_code = guard.run(sandbox.call_start)
                finished = time.perf_counter()
        outputs = fs.collect_outputs()
        ended = time.perf_counter()
        timings = {"sandbox_start": (started - began) * 1e6,
                   "run": (finished - started) * 1e6, "output": (ended - finished) * 1e6}
        stderr = fs.stderr_tail(STDERR_TAIL_BYTES) if exit_code else b""
        return InvocationResult(outputs, exit_code, timings, stderr)

    # -- observation and shutdown --------------------------------------------------------

    def statistics(self) -> EngineStatistics:
        """Counters since the engine was created."""
        return self._counters.snapshot()

    def close(self) -> None:
        """Stop the epoch ticker. Idempotent; the engine cannot run calls afterwards."""
        self._ticker.close()


class _Preempted(Exception):
    """A preemptible run reached its budget (not its deadline); its outputs are discarded."""


class _Guard:
    """Runs a step (instantiate or ``_start``) and translates how it ended into an exit code."""

    def __init__(self, spec: FunctionSpec, fs: SetFileSystem, sandbox: native.Sandbox,
                 limits: Limits, *, preempted: bool) -> None:
        self.spec, self.fs, self.sandbox, self.limits = spec, fs, sandbox, limits
        self.preempted = preempted
        """Whether an interrupt means the budget of :meth:`WasmEngine.invoke_preemptible`."""

    def run(self, step: Callable[..., None], *args: object) -> int:
        spec, fs, sandbox, limits = self.spec, self.fs, self.sandbox, self.limits
        try:
            step(*args)
            exit_code = 0
        except ProcExit as exit_signal:
            code = exit_signal.code & 0xFFFFFFFF
            exit_code = code - (1 << 32) if code >= 1 << 31 else code
        except OutputLimitExceeded as exc:
            raise BadOutput(f"{spec.name!r}: {exc}", limit=exc.limit) from exc
        except HostCallFailed as exc:
            logger.error("host call failed in %r", spec.name, exc_info=exc)
            raise SandboxCrash(f"{spec.name!r}: {exc} (a pappus bug)", host_call=exc.call,
                               **fs.stderr_detail(STDERR_TAIL_BYTES)) from exc
        except wasmtime.Trap as trap:
            if _memory_exhausted(sandbox, limits):
                raise _out_of_memory(spec, fs, limits) from trap
            if trap.trap_code == wasmtime.TrapCode.INTERRUPT:
                if self.preempted:
                    raise _Preempted from trap
                raise InvocationTimeout(f"{spec.name!r} ran past its deadline and was stopped",
                                        **fs.stderr_detail(STDERR_TAIL_BYTES)) from trap
            reason, backtrace = _describe_trap(trap)
            kind = trap.trap_code.name if trap.trap_code is not None else "UNKNOWN"
            raise SandboxCrash(f"{spec.name!r} trapped: {reason}", trap=reason, trap_code=kind,
                               backtrace=backtrace, **fs.stderr_detail(STDERR_TAIL_BYTES)) from trap
        except wasmtime.WasmtimeError as exc:
            message = _first_line(exc)
            if "memory" in message and ("limit" in message or "exceed" in message):
                raise _out_of_memory(spec, fs, limits) from exc
            raise SandboxCrash(f"{spec.name!r} failed: {message}", trap=message,
                               **fs.stderr_detail(STDERR_TAIL_BYTES)) from exc
        if exit_code != 0 and _memory_exhausted(sandbox, limits):
            raise _out_of_memory(spec, fs, limits)
        return exit_code


def _checked(artifact: Artifact) -> WasmArtifact:
    if not isinstance(artifact, WasmArtifact):
        raise TypeError(f"the wasm engine cannot run {artifact!r}")
    return artifact


def _memory_exhausted(sandbox: native.Sandbox, limits: Limits) -> bool:
    margin = min(max(OOM_MARGIN_BYTES, limits.memory_bytes // OOM_MARGIN_DIVISOR),
                 limits.memory_bytes // 2)  # tiny bounds: not every failure is memory
    return sandbox.memory_size() + margin > limits.memory_bytes


def _out_of_memory(spec: FunctionSpec, fs: SetFileSystem, limits: Limits) -> OutOfMemory:
    return OutOfMemory(
        f"{spec.name!r} used (nearly) all {limits.memory_bytes} bytes of memory it may use "
        "and then failed; raise its memory bound or use less", memory_bytes=limits.memory_bytes,
        **fs.stderr_detail(STDERR_TAIL_BYTES))


def _describe_trap(trap: wasmtime.Trap) -> tuple[str, list[str]]:
    """The trap's reason and its first backtrace lines, from Wasmtime's message.

    The message is ``<backtrace> Caused by: 0: <detail> 1: <trap>``; the
    reason puts the trap first: ``wasm trap: ... (<detail>)``.
    """
    head, _, cause = str(trap.message).partition("Caused by:")
    causes = [_NUMBERED.sub("", line.strip()) for line in cause.splitlines() if line.strip()]
    if causes:
        reason = causes[-1] + (f" ({'; '.join(causes[:-1])})" if causes[:-1] else "")
    else:
        reason = _first_line(trap)
    backtrace = [line.strip() for line in head.splitlines() if _NUMBERED.match(line.strip())]
    return reason, backtrace[:10]


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "message", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__
