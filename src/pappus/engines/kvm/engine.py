"""The ``kvm`` engine: Dandelion-SDK functions in a microVM with no guest OS (reference §4.5).

* **Preparation** (:meth:`KvmEngine.prepare`): the same ELF validation and
  static image as the process engine (:mod:`pappus.engines.process.elf`).
  Build functions with ``pappus sdk build --target kvm``.
* **Invocation**: the context is built by the process engine's own code
  (:func:`pappus.engines.process.layout.build_context`) for the function's
  part of the context, ``[0, table_base)``; the page tables, GDT/TSS/IDT
  and handler stubs sit above it (:mod:`.guest`). A compute slot's
  :class:`~.vm.Machine` (VM + vCPU + memory, reused) gets the image and the
  inputs, fresh registers, and runs the guest at ring 3 from ``e_entry``
  with ``rsp = table_base - 32`` until its first exit (:mod:`.exits`).
* **Isolation between invocations**: after every invocation the machine is
  reset — all memory the guest or the engine wrote is zeroed, every register
  the guest could change is rewritten (:meth:`.vm.Machine.reset`,
  :meth:`.vm.Machine.start`). A machine whose vCPU ended in a state KVM
  could not continue from (triple fault, internal error) is discarded.
* **Deadline**: :mod:`.watchdog` kicks the vCPU out at the deadline →
  ``timeout``, from the native deadline thread (no wait for the GIL).
  **Memory**: the context is the guest's only memory; nothing else is mapped.
* **Outcomes**: normal exit → outputs read back with the process engine's
  checks (:func:`~pappus.engines.process.layout.read_outputs`); SDK exit code
  259 → ``out_of_memory``; any fault or unexpected exit → ``crash`` with the
  vector and ``rip``.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from pappus.engines.base import (
    Artifact,
    Engine,
    EngineStatistics,
    FunctionSpec,
    InvocationCounters,
    InvocationResult,
    Limits,
)
from pappus.engines.kvm import abi
from pappus.engines.kvm.exits import Stop, classify
from pappus.engines.kvm.guest import GuestLayout
from pappus.engines.kvm.vm import (
    KICK_SIGNAL,
    Machine,
    MachineError,
    open_kvm,
    supported_cpuid,
)
from pappus.engines.kvm.watchdog import block_kick_signal, create_watchdog
from pappus.engines.process import layout
from pappus.engines.process.elf import FUNCTION_BASE, FunctionImage, load_image
from pappus.errors import (
    EngineUnavailable,
    InvalidBinary,
    InvocationTimeout,
    OutOfMemory,
    SandboxCrash,
)
from pappus.model import DataSet

SDK_EXIT_OUT_OF_MEMORY = 259
MAX_IDLE_MACHINES = 8
"""Idle machines kept per context size (one per compute slot is what a worker needs)."""
BROKEN_EXITS = frozenset({abi.EXIT_SHUTDOWN, abi.EXIT_INTERNAL_ERROR, abi.EXIT_FAIL_ENTRY})
"""Exits after which the vCPU is not trusted to be reusable: the machine is discarded."""


def kvm_available() -> bool:
    """Whether ``/dev/kvm`` can be opened read-write here."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


class KvmArtifact(Artifact):
    """A validated function image, ready to be copied into a machine."""

    def __init__(self, spec: FunctionSpec, image: FunctionImage) -> None:
        self.spec = spec
        self.image = image
        self.static = layout.image_bytes(image)

    def __repr__(self) -> str:
        return (
            f"<KvmArtifact {self.spec.name!r} image={self.image.end - FUNCTION_BASE} "
            f"bytes entry={self.image.entry:#x}>"
        )


class KvmEngine(Engine):
    """Runs SDK functions built for Dandelion's KVM ABI; see the module docstring."""

    name = "kvm"

    def __init__(self, helper_dir: Path | None = None) -> None:
        """``helper_dir``: where the native deadline thread's library is built and cached."""
        try:
            self._kvm = open_kvm()
            self._cpuid = supported_cpuid(self._kvm)
        except MachineError as exc:
            raise EngineUnavailable(
                f"the kvm engine cannot use /dev/kvm: {exc}", engine="kvm"
            ) from exc
        self._lock = threading.Lock()
        self._idle: dict[int, list[Machine]] = {}
        self._system_pages: dict[int, bytes] = {}
        self._watchdog = create_watchdog(helper_dir)
        self._counters = InvocationCounters(self.name)
        self._closed = False
        self.machines_created = 0

    def __repr__(self) -> str:
        idle = sum(len(machines) for machines in self._idle.values())
        return (
            f"<KvmEngine {self._counters!r} machines={self.machines_created} idle={idle} "
            f"watchdog={self._watchdog!r}>"
        )

    def prepare(self, spec: FunctionSpec, cache_dir: Path | None) -> KvmArtifact:
        """Validate ``spec.binary`` as the process engine does (an SDK build for ``kvm``)."""
        try:
            image = load_image(spec.binary)
        except InvalidBinary as exc:
            raise InvalidBinary(
                exc.message.replace("process-engine", "kvm-engine"), engine="kvm"
            ) from exc
        if spec.context_size is not None:
            guest = GuestLayout(layout.context_size_for(spec.context_size))
            if image.end + layout.MIN_FREE_BYTES + layout.HEAP_END_OFFSET > guest.table_base:
                raise InvalidBinary(
                    f"the image ends at {image.end:#x}, too close to the end of "
                    f"its {guest.size}-byte context",
                    engine="kvm",
                )
        self._counters.count_prepared()
        return KvmArtifact(spec, image)

    def invoke(
        self, artifact: Artifact, inputs: Sequence[DataSet | None], limits: Limits
    ) -> InvocationResult:
        """Run the function once in a reset machine; see the module docstring."""
        if not isinstance(artifact, KvmArtifact):
            raise TypeError(f"not a kvm artifact: {artifact!r}")
        if self._closed:
            raise RuntimeError("the kvm engine is closed")
        return self._counters.invoke(lambda: self._invoke(artifact, inputs, limits))

    def _invoke(
        self, artifact: KvmArtifact, inputs: Sequence[DataSet | None], limits: Limits
    ) -> InvocationResult:
        started = time.perf_counter()
        spec = artifact.spec
        guest = GuestLayout(layout.bounded_context_size(
            artifact.spec.name, artifact.spec.context_size, limits.memory_bytes))
        context = layout.build_context(
            artifact.image,
            artifact.static,
            inputs,
            input_names=spec.input_sets,
            output_names=spec.output_sets,
            size=guest.table_base,
        )
        block_kick_signal()
        machine = self._take(guest)
        reusable = False
        try:
            machine.write(FUNCTION_BASE, context.image)
            machine.write(context.inputs_address, context.inputs)
            machine.start(artifact.image.entry, guest.table_base - layout.STACK_OFFSET)
            entered = time.perf_counter()
            stop = self._run(machine, limits.deadline)
            finished = time.perf_counter()
            reusable = stop.reason not in BROKEN_EXITS
            if stop.reason == abi.EXIT_INTR:
                raise InvocationTimeout(
                    f"{spec.name!r} ran past its deadline and was stopped", function=spec.name
                )
            classify(spec.name, guest, stop, machine.read)
            system_data = layout.read_system_data(machine.read, artifact.image)
            if system_data.exit_code == SDK_EXIT_OUT_OF_MEMORY:
                raise OutOfMemory(
                    f"{spec.name!r} ran out of heap (SDK exit code 259) in its "
                    f"{guest.size}-byte context; raise the memory bound",
                    memory_bytes=limits.memory_bytes,
                )
            outputs = layout.read_outputs(
                machine.read, context, system_data, spec.output_sets, limits.max_output_bytes
            )
        except MachineError as exc:
            raise SandboxCrash(
                f"the virtual machine for {spec.name!r} failed: {exc}", function=spec.name
            ) from exc
        finally:
            self._release(machine, reusable)
        done = time.perf_counter()
        return InvocationResult(
            outputs,
            system_data.exit_code,
            {
                "sandbox_start": (entered - started) * 1e6,
                "run": (finished - entered) * 1e6,
                "output": (done - finished) * 1e6,
            },
        )

    def _run(self, machine: Machine, deadline: float) -> Stop:
        """Run the guest until its first real exit, or kick it out at ``deadline``.

        A kicked run returns a stop with reason :data:`abi.EXIT_INTR`.
        """
        machine.clear_kick()
        watch = self._watchdog.watch(deadline, machine)
        try:
            while True:
                reason = machine.enter()
                if reason != abi.EXIT_INTR or machine.kicked:
                    break
                signal.sigtimedwait({KICK_SIGNAL}, 0)  # a stray kick: never leave it pending
        finally:
            self._watchdog.finish(watch)
        return Stop(reason, machine.registers(), machine.special_registers(), machine.exit_data())

    def _take(self, guest: GuestLayout) -> Machine:
        """An idle machine for contexts of ``guest.size`` bytes, or a new one."""
        with self._lock:
            idle = self._idle.get(guest.size)
            if idle:
                return idle.pop()
            pages = self._system_pages.get(guest.size)
        if pages is None:
            pages = guest.system_pages()
            with self._lock:
                self._system_pages[guest.size] = pages
        try:
            machine = Machine(self._kvm, self._cpuid, guest, pages)
        except MachineError as exc:
            raise SandboxCrash(f"cannot create a virtual machine: {exc}") from exc
        with self._lock:
            self.machines_created += 1
        return machine

    def _release(self, machine: Machine, reusable: bool) -> None:
        """Reset ``machine`` and keep it idle, or close it (broken, closed engine, pool full)."""
        if reusable:
            try:
                machine.reset()
            except MachineError:
                reusable = False
        with self._lock:
            idle = self._idle.setdefault(machine.layout.size, [])
            keep = reusable and not self._closed and len(idle) < MAX_IDLE_MACHINES
            if keep:
                idle.append(machine)
        if not keep:
            machine.close()

    def statistics(self) -> EngineStatistics:
        """Counters since the engine started."""
        return self._counters.snapshot()

    def close(self) -> None:
        """Refuse further invocations, stop the watchdog, release idle machines. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            machines = [m for idle in self._idle.values() for m in idle]
            self._idle.clear()
        self._watchdog.close()
        for machine in machines:
            machine.close()
        os.close(self._kvm)
