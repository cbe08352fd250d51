"""How a guest run ended → normal completion or a typed outcome (a pure decision).

The exit protocol (see ``docs/kvm-engine.md``):

* Every IDT gate (vectors 0-32) leads to a ring-0 stub ``out %al, $vector``,
  which exits to the host with ``KVM_EXIT_IO`` on that port. It is a
  *handler exit* only if the vCPU is at ring 0 exactly after that stub's
  ``out``; the CPU pushed the exception frame (``[error code,] rip, cs,
  rflags, rsp, ss``) on the interrupt stack, which the function cannot touch.
* **Normal completion** is Dandelion's ``int $32``: on real KVM it arrives
  through the vector-32 gate (the only gate ring 3 may use); on nested KVM
  (pvm) ``int n`` from ring 3 arrives as #UD, so a #UD whose faulting ring-3
  instruction is ``cd 20`` counts too.
* Anything else is a ``crash`` naming the vector and the guest ``rip``: any
  other exception (#PF also names the address), I/O from ring 3, MMIO
  (guest-physical memory outside the slot), a triple fault (shutdown), hlt,
  or an exit KVM could not handle.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from pappus.engines.kvm import abi
from pappus.engines.kvm.guest import (
    ERROR_CODE_VECTORS,
    EXIT_VECTOR,
    USER_CODE,
    VECTORS,
    GuestLayout,
    vector_name,
)
from pappus.engines.process.elf import FUNCTION_BASE
from pappus.errors import SandboxCrash

INVALID_OPCODE, PAGE_FAULT = 6, 14
INT_32 = b"\xcd\x20"
OUT_IMMEDIATE_SIZE = 2


@dataclass(frozen=True, slots=True)
class Stop:
    """What the host saw when ``KVM_RUN`` returned."""

    reason: int
    registers: tuple[int, ...]
    special_registers: bytes
    exit_data: bytes


@dataclass(frozen=True, slots=True)
class Fault:
    """An exception the guest raised, read from the frame the CPU pushed."""

    vector: int
    rip: int
    code_selector: int
    error_code: int | None


Reader = Callable[[int, int], bytes]
"""Reads guest memory: (address, length) → bytes."""


def handler_vector(layout: GuestLayout, stop: Stop) -> int | None:
    """The vector whose ring-0 stub made this exit, or ``None`` if no stub did."""
    if stop.reason != abi.EXIT_IO:
        return None
    direction, size, port, _count, _offset = abi.EXIT_IO_LAYOUT.unpack_from(stop.exit_data)
    ring = abi.code_selector(stop.special_registers) & 3
    rip = stop.registers[abi.REG_RIP]
    if (
        direction != abi.IO_DIRECTION_OUT
        or size != 1
        or ring != 0
        or port >= VECTORS
        or rip != layout.stub(port) + OUT_IMMEDIATE_SIZE
    ):
        return None
    return int(port)


def read_fault(layout: GuestLayout, vector: int, read: Reader) -> Fault:
    """The frame the CPU pushed on the interrupt stack for ``vector``."""
    has_code = vector in ERROR_CODE_VECTORS
    words = struct.unpack(
        "<6Q" if has_code else "<5Q", read(layout.exception_frame(vector), 48 if has_code else 40)
    )
    error_code, rest = (words[0], words[1:]) if has_code else (None, words)
    return Fault(vector, rest[0], rest[1], error_code)


def is_normal_exit(layout: GuestLayout, fault: Fault, read: Reader) -> bool:
    """Whether ``fault`` is Dandelion's ``int $32`` (directly, or as #UD on nested KVM)."""
    if fault.code_selector != USER_CODE:
        return False  # raised by ring-0 code: a fault inside a handler
    if fault.vector == EXIT_VECTOR:
        return True
    return (
        fault.vector == INVALID_OPCODE
        and FUNCTION_BASE <= fault.rip <= layout.table_base - len(INT_32)
        and read(fault.rip, len(INT_32)) == INT_32
    )


def classify(function: str, layout: GuestLayout, stop: Stop, read: Reader) -> None:
    """Return if the run ended normally; raise :class:`SandboxCrash` otherwise."""
    vector = handler_vector(layout, stop)
    if vector is not None:
        fault = read_fault(layout, vector, read)
        if is_normal_exit(layout, fault, read):
            return
        raise _crash(function, fault, abi.control_register_2(stop.special_registers))
    rip = stop.registers[abi.REG_RIP]
    if stop.reason == abi.EXIT_IO:
        _direction, _size, port, _count, _offset = abi.EXIT_IO_LAYOUT.unpack_from(stop.exit_data)
        raise SandboxCrash(
            f"{function!r} accessed I/O port {port:#x} at rip {rip:#x}",
            function=function,
            exit="io",
            port=port,
            rip=f"{rip:#x}",
        )
    if stop.reason == abi.EXIT_MMIO:
        address = abi.EXIT_MMIO_LAYOUT.unpack_from(stop.exit_data)[0]
        raise SandboxCrash(
            f"{function!r} reached guest-physical address {address:#x}, outside "
            f"its memory, at rip {rip:#x}",
            function=function,
            exit="mmio",
            address=f"{address:#x}",
            rip=f"{rip:#x}",
        )
    name = abi.EXIT_NAMES.get(stop.reason, f"exit reason {stop.reason}")
    raise SandboxCrash(
        f"{function!r} stopped the virtual CPU ({name}) at rip {rip:#x}",
        function=function,
        exit=name,
        rip=f"{rip:#x}",
    )


def _crash(function: str, fault: Fault, fault_address: int) -> SandboxCrash:
    name = vector_name(fault.vector)
    where = "" if fault.code_selector == USER_CODE else " while handling an earlier fault"
    detail: dict[str, object] = {
        "function": function,
        "vector": fault.vector,
        "trap": name,
        "rip": f"{fault.rip:#x}",
    }
    message = f"{function!r} raised {name} (vector {fault.vector}) at rip {fault.rip:#x}{where}"
    if fault.vector == PAGE_FAULT:
        detail["address"] = f"{fault_address:#x}"
        message += f", accessing {fault_address:#x}"
    if fault.error_code is not None:
        detail["error_code"] = fault.error_code
    return SandboxCrash(message, **detail)
