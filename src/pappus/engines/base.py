"""The one contract every isolation engine implements.

An engine turns a registered binary into a prepared *artifact* once
(:meth:`Engine.prepare`), then runs that artifact in a fresh sandbox per call
(:meth:`Engine.invoke`). ``invoke`` is blocking and thread-safe: the
dispatcher calls it from its compute-slot threads, never from the event loop.

Failures are reported only as :class:`pappus.errors.SandboxError` subclasses
(``timeout``, ``out_of_memory``, ``forbidden_syscall``, ``crash``,
``bad_output``, ``invalid_binary``, ``function_error``). Anything else escaping
an engine is a pappus bug.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pappus.errors import SandboxError
from pappus.model import DataSet


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """What an engine needs to know about a function to prepare it.

    ``input_sets``/``output_sets`` are the declared set names, in order.
    ``context_size`` is the engine-specific sandbox memory size (process/kvm
    engines); ``None`` lets the engine choose.
    """

    name: str
    engine: str
    binary: bytes
    sha256: str
    input_sets: tuple[str, ...]
    output_sets: tuple[str, ...]
    context_size: int | None = None


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds one invocation must respect without the function's cooperation.

    ``deadline`` is an absolute :func:`time.monotonic` time. ``memory_bytes``
    bounds the sandbox's memory. ``max_output_bytes`` bounds the total size of
    the output items (exceeding it is ``bad_output``).
    """

    deadline: float
    memory_bytes: int
    max_output_bytes: int

    @classmethod
    def from_timeout(
        cls, timeout_s: float, memory_bytes: int, max_output_bytes: int
    ) -> Limits:
        """Limits with a deadline ``timeout_s`` seconds from now."""
        return cls(time.monotonic() + timeout_s, memory_bytes, max_output_bytes)

    def remaining(self) -> float:
        """Seconds left before the deadline (may be negative)."""
        return self.deadline - time.monotonic()


@dataclass(frozen=True, slots=True)
class InvocationResult:
    """What a successful invocation produced.

    ``outputs`` holds exactly one set per declared output set, in order
    (empty sets included). ``timings_us`` holds the engine's phases in
    microseconds, e.g. ``sandbox_start``, ``run``, ``output``. ``stderr`` is
    the tail of what the function wrote to stderr when it exited non-zero,
    also when ``stdio`` is not a declared output set (the dispatcher quotes it
    in ``function_error``).
    """

    outputs: tuple[DataSet, ...]
    exit_code: int = 0
    timings_us: dict[str, float] = field(default_factory=dict)
    stderr: bytes = b""


@dataclass(frozen=True, slots=True)
class EngineStatistics:
    """A snapshot of an engine's counters."""

    engine: str
    prepared: int
    invocations: int
    failures: int
    mean_sandbox_start_us: float
    preempted: int = 0
    """Runs abandoned at a short budget by :meth:`Engine.invoke_preemptible` (then run
    again in full); not counted in ``invocations``."""


class InvocationCounters:
    """The thread-safe counters behind every engine's :meth:`Engine.statistics`.

    Engines count through :meth:`invoke` (which wraps their own invocation
    function) and :meth:`count_prepared`, so the bookkeeping lives in one place.
    """

    def __init__(self, engine: str) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self.prepared = self.invocations = self.failures = self.preempted = 0
        self._start_us_total = 0.0

    def __repr__(self) -> str:
        return (f"prepared={self.prepared} invocations={self.invocations} "
                f"failures={self.failures}")

    def count_prepared(self) -> None:
        """One more function prepared."""
        with self._lock:
            self.prepared += 1

    def count_preempted(self) -> None:
        """One run abandoned at its budget (see :meth:`Engine.invoke_preemptible`)."""
        with self._lock:
            self.preempted += 1

    def invoke(self, call: Callable[[], InvocationResult]) -> InvocationResult:
        """Run ``call`` and count it; a :class:`~pappus.errors.SandboxError` is a failure."""
        try:
            result = call()
        except SandboxError:
            self.count_failure()
            raise
        with self._lock:
            self.invocations += 1
            self._start_us_total += result.timings_us.get("sandbox_start", 0.0)
        return result

    def count_failure(self) -> None:
        """One invocation that ended with a typed outcome before producing a result."""
        with self._lock:
            self.invocations += 1
            self.failures += 1

    def snapshot(self) -> EngineStatistics:
        """The counters as an :class:`EngineStatistics` record."""
        with self._lock:
            succeeded = self.invocations - self.failures
            mean = self._start_us_total / succeeded if succeeded else 0.0
            return EngineStatistics(self.engine, self.prepared, self.invocations,
                                    self.failures, mean, self.preempted)


class Artifact(ABC):
    """An engine's prepared, immutable form of one function (compiled module, ELF image...)."""

    spec: FunctionSpec


class PendingRun(ABC):
    """A sandbox started by :meth:`Engine.start` that runs on its own (a process).

    The owner waits until :meth:`fileno` is readable, or calls :meth:`stop` when
    the deadline passes (the descriptor becomes readable soon after), then calls
    :meth:`finish` exactly once.
    """

    @abstractmethod
    def fileno(self) -> int:
        """A descriptor that becomes readable when the sandbox has ended."""

    @abstractmethod
    def stop(self) -> None:
        """End the sandbox now (the deadline passed); :meth:`finish` then reports ``timeout``."""

    @abstractmethod
    def finish(self) -> InvocationResult:
        """Release the sandbox; its outputs, or the typed outcome, as :meth:`Engine.invoke`.

        Call only once :meth:`fileno` is readable or after :meth:`stop` (it may
        wait for the sandbox to end otherwise).
        """


class Engine(ABC):
    """An isolation backend. See the module docstring for the contract."""

    name: str
    """The engine's registration name: ``wasm``, ``process``, ``linux`` or ``kvm``."""

    @abstractmethod
    def prepare(self, spec: FunctionSpec, cache_dir: Path | None) -> Artifact:
        """Validate and prepare ``spec.binary`` once, at registration (or at restart).

        ``cache_dir`` is a directory the engine may use to persist compiled
        forms across restarts. Raises :class:`pappus.errors.InvalidBinary` with
        a reason a user can act on. Blocking.
        """

    @abstractmethod
    def invoke(
        self, artifact: Artifact, inputs: Sequence[DataSet | None], limits: Limits
    ) -> InvocationResult:
        """Run ``artifact`` in a fresh sandbox. Blocking and thread-safe.

        ``inputs`` has one slot per declared input set (``None`` = absent).
        Returns the outputs, or raises a :class:`pappus.errors.SandboxError`.
        """

    preemptible: bool = False
    """Whether :meth:`invoke_preemptible` can run functions on the caller's thread."""

    def invoke_preemptible(
        self, artifact: Artifact, inputs: Sequence[DataSet | None], limits: Limits,
        budget_s: float,
    ) -> InvocationResult | None:
        """Like :meth:`invoke`, but give up after about ``budget_s`` seconds and return ``None``.

        This lets the dispatcher run a short function on the event loop's own
        thread, saving two thread hand-overs. Functions are pure (they see only
        their inputs, and their outputs are discarded unless the run finishes),
        so an abandoned run has no observable effect and is simply run again in
        full on a compute slot. Every outcome other than running out of budget
        (outputs, ``crash``, ``out_of_memory``...) is final, exactly as from
        :meth:`invoke`. Only engines that stop a run within about the budget
        without the function's cooperation, and never wait on I/O meanwhile, set
        :attr:`preemptible`; the default gives up at once.
        """
        return None

    startable: bool = False
    """Whether :meth:`start` runs sandboxes on their own, to be waited for on a descriptor."""

    def start(self, artifact: Artifact, inputs: Sequence[DataSet | None],
              limits: Limits) -> PendingRun:
        """Start ``artifact`` in a fresh sandbox and return without waiting for it.

        The dispatcher waits on :meth:`PendingRun.fileno` in its event loop
        instead of holding a slot thread, which saves two thread hand-overs per
        invocation. Only engines whose sandbox runs on its own (a process) set
        :attr:`startable`; their :meth:`invoke` is ``start``, a wait and
        ``finish``. Setting up may block briefly (building the sandbox's memory).
        Raises a :class:`pappus.errors.SandboxError` if the sandbox cannot start.
        """
        raise NotImplementedError(f"the {self.name} engine cannot start runs on their own")

    @abstractmethod
    def statistics(self) -> EngineStatistics:
        """A snapshot of this engine's counters."""

    @abstractmethod
    def close(self) -> None:
        """Release threads, pools and caches. Idempotent."""
