"""The Linux KVM user-space ABI the ``kvm`` engine uses: ioctl numbers and struct layouts.

Only what the engine needs, written out from ``<linux/kvm.h>`` (x86-64). The
structs are packed with :mod:`struct` rather than ctypes classes: each is
written or read once per use, and a packed ``bytes`` is what ``ioctl`` wants.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# -- ioctl numbers (_IO/_IOR/_IOW/_IOWR with type 0xAE) ---------------------------------------

_KVMIO = 0xAE


def _ioc(direction: int, number: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (_KVMIO << 8) | number


def _io(number: int) -> int:
    return _ioc(0, number, 0)


def _iow(number: int, size: int) -> int:
    return _ioc(1, number, size)


def _ior(number: int, size: int) -> int:
    return _ioc(2, number, size)


def _iowr(number: int, size: int) -> int:
    return _ioc(3, number, size)


REGS = struct.Struct("<18Q")
"""``struct kvm_regs``: rax rbx rcx rdx rsi rdi rsp rbp r8-r15 rip rflags."""
SEGMENT = struct.Struct("<QIH9Bx")
"""``struct kvm_segment``: base, limit, selector, type, present, dpl, db, s, l, g, avl, unusable."""
DTABLE = struct.Struct("<QH6x")
"""``struct kvm_dtable``: base, limit."""
SREGS_TAIL = struct.Struct("<7Q4Q")
"""After the segments and tables: cr0 cr2 cr3 cr4 cr8 efer apic_base, interrupt_bitmap[4]."""
SREGS_SIZE = 8 * SEGMENT.size + 2 * DTABLE.size + SREGS_TAIL.size
XSAVE_SIZE = 4096
XCRS = struct.Struct("<II" + "IIQ" + "16x" * 15 + "128x")
"""``struct kvm_xcrs`` with one entry: nr_xcrs, flags, {xcr, reserved, value}, the rest zero."""
USER_MEMORY_REGION = struct.Struct("<IIQQQ")
"""``struct kvm_userspace_memory_region``: slot, flags, guest address, size, host address."""
DIRTY_LOG = struct.Struct("<I4xQ")
"""``struct kvm_dirty_log``: slot, padding, bitmap pointer."""
CPUID2_HEADER = struct.Struct("<II")
CPUID_ENTRY_SIZE = 40

KVM_GET_API_VERSION = _io(0x00)
KVM_CREATE_VM = _io(0x01)
KVM_CHECK_EXTENSION = _io(0x03)
KVM_GET_VCPU_MMAP_SIZE = _io(0x04)
KVM_GET_SUPPORTED_CPUID = _iowr(0x05, CPUID2_HEADER.size)
KVM_CREATE_VCPU = _io(0x41)
KVM_GET_DIRTY_LOG = _iow(0x42, DIRTY_LOG.size)
KVM_SET_USER_MEMORY_REGION = _iow(0x46, USER_MEMORY_REGION.size)
KVM_RUN = _io(0x80)
KVM_GET_REGS = _ior(0x81, REGS.size)
KVM_SET_REGS = _iow(0x82, REGS.size)
KVM_GET_SREGS = _ior(0x83, SREGS_SIZE)
KVM_SET_SREGS = _iow(0x84, SREGS_SIZE)
KVM_SET_SIGNAL_MASK = _iow(0x8B, 4)
KVM_SET_CPUID2 = _iow(0x90, CPUID2_HEADER.size)
KVM_GET_XSAVE = _ior(0xA4, XSAVE_SIZE)
KVM_SET_XSAVE = _iow(0xA5, XSAVE_SIZE)
KVM_SET_XCRS = _iow(0xA7, XCRS.size)

API_VERSION = 12
KVM_CAP_IMMEDIATE_EXIT = 136
KVM_CAP_SYNC_REGS = 74
KVM_CAP_XSAVE = 55
KVM_CAP_XCRS = 56
KVM_MEM_LOG_DIRTY_PAGES = 1
KVM_SYNC_X86_REGS = 1
KVM_SYNC_X86_SREGS = 2

# -- exit reasons -------------------------------------------------------------------------------

EXIT_IO = 2
EXIT_HLT = 5
EXIT_MMIO = 6
EXIT_SHUTDOWN = 8
EXIT_FAIL_ENTRY = 9
EXIT_INTR = 10
EXIT_INTERNAL_ERROR = 17
EXIT_NAMES = {
    0: "unknown",
    1: "exception",
    2: "io",
    3: "hypercall",
    4: "debug",
    5: "hlt",
    6: "mmio",
    7: "irq_window_open",
    8: "shutdown (triple fault)",
    9: "fail_entry",
    10: "intr",
    17: "internal_error",
}
IO_DIRECTION_OUT = 1

# -- struct kvm_run (the vCPU's mmap'd page) ----------------------------------------------------

RUN_IMMEDIATE_EXIT = 1
RUN_EXIT_REASON = 8
RUN_EXIT_DATA = 32
"""Start of the per-exit union (``io``, ``mmio``, ``fail_entry``, ...)."""
RUN_VALID_REGS = 288
RUN_DIRTY_REGS = 296
RUN_SYNC_REGS = 304
"""``s.regs``: ``struct kvm_regs`` then ``struct kvm_sregs`` (with KVM_CAP_SYNC_REGS)."""
RUN_SYNC_SREGS = RUN_SYNC_REGS + REGS.size
EXIT_IO_LAYOUT = struct.Struct("<BBHIQ")
"""``run.io``: direction, size, port, count, data_offset."""
EXIT_MMIO_LAYOUT = struct.Struct("<Q8sIB")
"""``run.mmio``: phys_addr, data, len, is_write."""
REG_RIP = 16
REG_RFLAGS = 17
REG_RAX = 0
REG_RSP = 6


@dataclass(frozen=True, slots=True)
class Segment:
    """One ``struct kvm_segment`` (the hidden part of a segment register)."""

    base: int
    limit: int
    selector: int
    type: int
    present: int = 1
    dpl: int = 0
    db: int = 0
    s: int = 1
    l: int = 0  # noqa: E741 - the field's name in <linux/kvm.h>
    g: int = 1
    avl: int = 0

    def pack(self) -> bytes:
        return SEGMENT.pack(
            self.base,
            self.limit,
            self.selector,
            self.type,
            self.present,
            self.dpl,
            self.db,
            self.s,
            self.l,
            self.g,
            self.avl,
            0 if self.present else 1,
        )


@dataclass(frozen=True, slots=True)
class SpecialRegisters:
    """The ``struct kvm_sregs`` fields the engine sets (everything else zero)."""

    code: Segment
    data: Segment
    task: Segment
    gdt: tuple[int, int]
    idt: tuple[int, int]
    cr0: int
    cr3: int
    cr4: int
    efer: int

    def pack(self) -> bytes:
        segments = (
            self.code,
            self.data,
            self.data,
            self.data,
            self.data,
            self.data,
            self.task,
            Segment(0, 0, 0, 2, present=0, s=0, g=0),
        )  # cs ds es fs gs ss tr ldt
        return (
            b"".join(s.pack() for s in segments)
            + DTABLE.pack(*self.gdt)
            + DTABLE.pack(*self.idt)
            + SREGS_TAIL.pack(self.cr0, 0, self.cr3, self.cr4, 0, self.efer, 0, 0, 0, 0, 0)
        )


def code_selector(sregs: bytes) -> int:
    """The ``cs`` selector in a packed ``struct kvm_sregs`` (its low two bits are the CPL)."""
    return int(SEGMENT.unpack_from(sregs, 0)[2])


def control_register_2(sregs: bytes) -> int:
    """``cr2`` (the last page-fault address) in a packed ``struct kvm_sregs``."""
    return int(struct.unpack_from("<Q", sregs, 8 * SEGMENT.size + 2 * DTABLE.size + 8)[0])
