"""The guest's machine state for Dandelion's KVM ABI (reference §4.5), as bytes and numbers.

Pure functions: given a context size, where the system tables go and what
they contain. Guest-physical == guest-virtual == context offset. The top of
the context, downward::

    size - 4 KiB    handler page: one 8-byte stub per vector: ``out %al, $vector; hlt``
    size - 8 KiB    descriptor page: GDT (12 slots) at +0, TSS at +128, IDT (33 gates) at +256
    size - 12 KiB   interrupt stack (IST1 = its top = size - 8 KiB)
    size - 16 KiB   PML4
    size - 20 KiB   PDPT
    ...             one PD per GiB of context, then one PT per 2 MiB
    table_base      = the lowest table page; the function sees [0, table_base)

Every one of those pages is mapped *supervisor-only*: ring-3 guest code can
neither read nor write them, so the tables stay as the engine wrote them for
the life of the VM. The function's part is mapped page by page with 4 KiB
pages, user read/write/execute, except ``[0, 0x10000)``, which is not mapped
at all (as in the process engine). Nothing beyond the context is mapped.
Accessed and dirty bits are preset so the CPU never writes the tables.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pappus.engines.kvm.abi import Segment, SpecialRegisters
from pappus.engines.process.elf import FUNCTION_BASE

PAGE = 4096
ENTRIES = 512
FIXED_PAGES = 5  # handler, descriptors, interrupt stack, PML4, PDPT
EXIT_VECTOR = 32
"""Dandelion's exit: ``int $32``."""
VECTORS = 33
ERROR_CODE_VECTORS = frozenset({8, 10, 11, 12, 13, 14, 17, 21, 29, 30})
VECTOR_NAMES = {
    0: "#DE divide error",
    1: "#DB debug",
    2: "NMI",
    3: "#BP breakpoint",
    4: "#OF overflow",
    5: "#BR bound range",
    6: "#UD invalid opcode",
    7: "#NM device not available",
    8: "#DF double fault",
    10: "#TS invalid TSS",
    11: "#NP segment not present",
    12: "#SS stack fault",
    13: "#GP general protection",
    14: "#PF page fault",
    16: "#MF x87 error",
    17: "#AC alignment check",
    18: "#MC machine check",
    19: "#XM SIMD error",
    20: "#VE virtualization",
    21: "#CP control protection",
}
STUB_SIZE = 8

KERNEL_CODE, KERNEL_DATA, USER_CODE, USER_DATA, TASK = 0x10, 0x20, 0x33, 0x43, 0x50
GDT_SLOTS = 12
TSS_OFFSET, IDT_OFFSET = 128, 256
TSS_SIZE = 104

PTE_PRESENT, PTE_WRITE, PTE_USER, PTE_ACCESSED, PTE_DIRTY = 1, 2, 4, 0x20, 0x40
PTE_NO_EXECUTE = 1 << 63
CR0 = 0x1 | 0x2 | 0x10 | 0x20 | 0x10000 | 0x40000 | 0x80000000  # PE MP ET NE WP AM PG
CR4 = 0x20 | 0x200 | 0x400 | 0x10000 | 0x40000  # PAE OSFXSR OSXMMEXCPT FSGSBASE OSXSAVE
EFER = 0x100 | 0x400 | 0x800  # LME LMA NXE; no SCE: `syscall` is #UD, reported as such
RFLAGS = 0x2
"""Only the always-one bit: IOPL 0, so ring-3 ``out``, ``cli`` and ``sti`` fault (#GP).

IOPL 3 would let ring-3 ``out`` exit to the host without a handler, but
Dandelion's exit is ``int $32``, which never needs it; and on real KVM it
would let the function ``cli``. Nested KVM (pvm) ignores IOPL 3 anyway."""


def _pages(length: int) -> int:
    return (length + PAGE - 1) // PAGE


@dataclass(frozen=True, slots=True)
class GuestLayout:
    """Where everything lives in a context of ``size`` bytes (see the module docstring)."""

    size: int

    @property
    def handler(self) -> int:
        return self.size - PAGE

    @property
    def descriptors(self) -> int:
        return self.size - 2 * PAGE

    @property
    def interrupt_stack(self) -> int:
        """The interrupt stack page; IST1 points at its top."""
        return self.size - 3 * PAGE

    @property
    def pml4(self) -> int:
        return self.size - 4 * PAGE

    @property
    def pdpt(self) -> int:
        return self.size - 5 * PAGE

    @property
    def directory_count(self) -> int:
        return (self.size + (1 << 30) - 1) >> 30

    @property
    def table_count(self) -> int:
        return (self.size + (1 << 21) - 1) >> 21

    @property
    def directories(self) -> int:
        return self.pdpt - self.directory_count * PAGE

    @property
    def tables(self) -> int:
        return self.directories - self.table_count * PAGE

    @property
    def table_base(self) -> int:
        """The lowest system page: the function's part of the context is ``[0, table_base)``."""
        return self.tables

    def stub(self, vector: int) -> int:
        """The address of the handler stub of ``vector``."""
        return self.handler + vector * STUB_SIZE

    def exception_frame(self, vector: int) -> int:
        """Where the CPU pushed ``[error code,] rip, cs, rflags, rsp, ss`` for ``vector``."""
        words = 6 if vector in ERROR_CODE_VECTORS else 5
        return self.interrupt_stack + PAGE - 8 * words

    def system_pages(self) -> bytes:
        """The bytes of ``[table_base, size)``: page tables, descriptors, handler stubs."""
        memory = bytearray(self.size - self.table_base)

        def put(address: int, data: bytes) -> None:
            offset = address - self.table_base
            memory[offset : offset + len(data)] = data

        put(self.pml4, _entry(self.pdpt, user=True))
        put(
            self.pdpt,
            b"".join(
                _entry(self.directories + i * PAGE, user=True) for i in range(self.directory_count)
            ),
        )
        put(
            self.directories,
            b"".join(_entry(self.tables + i * PAGE, user=True) for i in range(self.table_count)),
        )
        put(self.tables, b"".join(self._leaf(page * PAGE) for page in range(self.size // PAGE)))
        put(self.descriptors, self._descriptor_page())
        put(
            self.handler,
            b"".join(
                bytes([0xE6, vector, 0xF4, 0xEB, 0xFD]).ljust(STUB_SIZE, b"\xcc")
                for vector in range(VECTORS)
            ),
        )  # out %al, $vector; 1: hlt; jmp 1b
        return bytes(memory)

    def _leaf(self, address: int) -> bytes:
        if address < FUNCTION_BASE:
            return bytes(8)  # not present: null pointers and the first 64 KiB fault
        if address < self.table_base:
            return _entry(address, user=True)
        return _entry(address, user=False, executable=address == self.handler)

    def _descriptor_page(self) -> bytes:
        page = bytearray(PAGE)
        gdt = {
            KERNEL_CODE: 0x00AF9B000000FFFF,
            KERNEL_DATA: 0x00CF93000000FFFF,
            USER_CODE & ~3: 0x00AFFB000000FFFF,
            USER_DATA & ~3: 0x00CFF3000000FFFF,
        }
        for selector, descriptor in gdt.items():
            struct.pack_into("<Q", page, selector, descriptor)
        tss = self.descriptors + TSS_OFFSET
        struct.pack_into(
            "<HHBBBBII",
            page,
            TASK,
            TSS_SIZE - 1,
            tss & 0xFFFF,
            (tss >> 16) & 0xFF,
            0x8B,
            0,
            (tss >> 24) & 0xFF,
            tss >> 32,
            0,
        )  # busy 64-bit TSS
        stack_top = self.interrupt_stack + PAGE
        struct.pack_into("<IQ", page, TSS_OFFSET, 0, stack_top)  # rsp0
        struct.pack_into("<Q", page, TSS_OFFSET + 0x24, stack_top)  # ist1
        struct.pack_into("<H", page, TSS_OFFSET + 102, TSS_SIZE)  # no I/O bitmap
        for vector in range(VECTORS):
            target = self.stub(vector)
            # Interrupt gate, IST 1. Only the exit vector may be raised by `int` from ring 3.
            access = 0xEE if vector == EXIT_VECTOR else 0x8E
            struct.pack_into(
                "<HHBBHII",
                page,
                IDT_OFFSET + 16 * vector,
                target & 0xFFFF,
                KERNEL_CODE,
                1,
                access,
                (target >> 16) & 0xFFFF,
                target >> 32,
                0,
            )
        return bytes(page)

    def special_registers(self) -> SpecialRegisters:
        """Long mode, ring 3, identity paging, this layout's GDT/TSS/IDT."""
        code = Segment(0, 0xFFFFFFFF, USER_CODE, 11, dpl=3, l=1)
        data = Segment(0, 0xFFFFFFFF, USER_DATA, 3, dpl=3, db=1)
        task = Segment(self.descriptors + TSS_OFFSET, TSS_SIZE - 1, TASK, 11, s=0, g=0)
        return SpecialRegisters(
            code,
            data,
            task,
            (self.descriptors, GDT_SLOTS * 8 - 1),
            (self.descriptors + IDT_OFFSET, VECTORS * 16 - 1),
            CR0,
            self.pml4,
            CR4,
            EFER,
        )


def _entry(address: int, *, user: bool, executable: bool = True) -> bytes:
    """A page-table entry; system pages are writable only where the CPU itself writes."""
    flags = PTE_PRESENT | PTE_WRITE | PTE_ACCESSED | PTE_DIRTY
    if user:
        flags |= PTE_USER
    if not executable:
        flags |= PTE_NO_EXECUTE
    return struct.pack("<Q", address | flags)


def vector_name(vector: int) -> str:
    """``#PF page fault`` etc.; ``vector N`` for the rest."""
    return VECTOR_NAMES.get(vector, f"vector {vector}")
