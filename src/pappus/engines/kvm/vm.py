"""One reusable microVM: a KVM VM with one vCPU and one context's worth of guest memory.

Creating a VM, a vCPU and mapping memory costs ~1 ms; resetting one costs a
few tens of microseconds. So each compute slot keeps a :class:`Machine` and
:meth:`Machine.reset` returns it to a state no invocation can tell from a
fresh one:

* **memory**: guest memory is two KVM memory slots over one anonymous
  mapping: the function's part ``[0, table_base)`` with dirty-page logging,
  and the system pages above it (page tables, GDT/TSS/IDT, handler stubs;
  supervisor-only, so ring-3 code cannot write them). After a run, every
  page the guest dirtied (KVM's dirty log, which also covers writes KVM makes
  on the guest's behalf) and every range the engine wrote itself (image,
  inputs) is zeroed, as is the interrupt stack. Everything else was zero and
  was not written since: the memory is all zero again.
* **registers**: general registers, ``rflags`` and the special registers
  (segments incl. FS/GS base, control registers) are rewritten through the
  ``kvm_run`` page (``KVM_CAP_SYNC_REGS``: no ioctl); the x87/SSE/AVX/AVX-512
  state is replaced by the clean XSAVE image the vCPU had when it was made
  (``KVM_SET_XSAVE``). Ring 3 can write no other register or MSR:
  ``wrmsr``, ``swapgs``, ``xsetbv``, ``mov cr``, ``lgdt`` all fault.

A run ends at the first exit: normal completion, any exception (handled by
a ring-0 stub that does ``out $vector``), or anything else — see
:mod:`pappus.engines.kvm.exits`.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import mmap
import os
import signal
import struct

from pappus.engines.kvm import abi
from pappus.engines.kvm.guest import PAGE, RFLAGS, GuestLayout

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
)
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_MAP_FAILED = ctypes.c_void_p(-1).value
_MAP_NORESERVE = 0x4000

KICK_SIGNAL = signal.SIGRTMIN + 3
"""Sent to a vCPU thread to end its ``KVM_RUN`` (blocked except while the vCPU runs)."""
XCR0_WANTED = 0x7 | 0xE0
"""x87, SSE, AVX, and the AVX-512 components where the host has them."""


class MachineError(Exception):
    """KVM refused to create or set up a machine (the message says which step)."""


def _ioctl(fd: int, request: int, argument: int | bytes | bytearray, what: str) -> int:
    # fcntl copies an immutable argument through a 1 KiB buffer; a bytearray is passed in place.
    if isinstance(argument, bytes) and len(argument) > 1024:
        argument = bytearray(argument)
    try:
        result = fcntl.ioctl(fd, request, argument)
    except OSError as exc:
        raise MachineError(f"{what} failed: {exc.strerror}") from exc
    return result if isinstance(result, int) else 0  # bytes: a copied-back struct we ignore


def open_kvm() -> int:
    """``/dev/kvm`` opened, with the API version checked; raises :class:`MachineError`."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise MachineError(f"cannot open /dev/kvm: {exc.strerror}") from exc
    try:
        version = _ioctl(fd, abi.KVM_GET_API_VERSION, 0, "KVM_GET_API_VERSION")
        if version != abi.API_VERSION:
            raise MachineError(f"KVM API version {version}, not {abi.API_VERSION}")
        for capability, name in (
            (abi.KVM_CAP_SYNC_REGS, "sync registers"),
            (abi.KVM_CAP_IMMEDIATE_EXIT, "immediate exit"),
            (abi.KVM_CAP_XSAVE, "XSAVE"),
            (abi.KVM_CAP_XCRS, "XCRs"),
        ):
            if not _ioctl(fd, abi.KVM_CHECK_EXTENSION, capability, "KVM_CHECK_EXTENSION"):
                raise MachineError(f"this KVM lacks the {name} capability")
    except BaseException:
        os.close(fd)
        raise
    return fd


def supported_cpuid(kvm: int) -> bytes:
    """``struct kvm_cpuid2`` with every leaf KVM supports (the guest gets the host's features)."""
    for count in (64, 128, 256):
        buffer = bytearray(abi.CPUID2_HEADER.pack(count, 0) + bytes(count * abi.CPUID_ENTRY_SIZE))
        try:
            fcntl.ioctl(kvm, abi.KVM_GET_SUPPORTED_CPUID, buffer)
        except OSError as exc:
            if exc.errno == 7:  # E2BIG: more leaves than room
                continue
            raise MachineError(f"KVM_GET_SUPPORTED_CPUID failed: {exc.strerror}") from exc
        used = abi.CPUID2_HEADER.unpack_from(buffer)[0]
        return bytes(buffer[: abi.CPUID2_HEADER.size + used * abi.CPUID_ENTRY_SIZE])
    raise MachineError("KVM reports more than 256 CPUID leaves")


def _xcr0(cpuid: bytes) -> int:
    """The XSAVE components to enable: the wanted ones the host supports (leaf 0xD.0 eax)."""
    count = abi.CPUID2_HEADER.unpack_from(cpuid)[0]
    for index in range(count):
        function, subleaf, _flags, eax = struct.unpack_from(
            "<IIII", cpuid, abi.CPUID2_HEADER.size + index * abi.CPUID_ENTRY_SIZE
        )
        if function == 0xD and subleaf == 0:
            return int(eax) & XCR0_WANTED
    return 0x3


class Machine:
    """A VM + vCPU + guest memory for contexts of exactly ``layout.size`` bytes."""

    def __init__(self, kvm: int, cpuid: bytes, layout: GuestLayout, system_pages: bytes) -> None:
        self.layout = layout
        self.vm = self.vcpu = -1
        self.memory = 0
        self.run: mmap.mmap | None = None
        self.immediate_exit_address = 0
        """Where ``kvm_run.immediate_exit`` is, for the native deadline thread's kick (0
        once closed)."""
        self.written: list[tuple[int, int]] = []
        """Ranges the engine wrote since the last reset (the dirty log does not see them)."""
        try:
            self._create(kvm, cpuid, system_pages)
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"<Machine {self.layout.size >> 20} MiB vm={self.vm} vcpu={self.vcpu}>"

    def _create(self, kvm: int, cpuid: bytes, system_pages: bytes) -> None:
        size, base = self.layout.size, self.layout.table_base
        self.vm = _ioctl(kvm, abi.KVM_CREATE_VM, 0, "KVM_CREATE_VM")
        address = _libc.mmap(
            None,
            size,
            mmap.PROT_READ | mmap.PROT_WRITE,
            mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_NORESERVE,
            -1,
            0,
        )
        if address in (None, _MAP_FAILED):
            raise MachineError(f"cannot map {size} bytes of guest memory")
        self.memory = int(address)
        ctypes.memmove(self.memory + base, system_pages, len(system_pages))
        _ioctl(
            self.vm,
            abi.KVM_SET_USER_MEMORY_REGION,
            abi.USER_MEMORY_REGION.pack(0, abi.KVM_MEM_LOG_DIRTY_PAGES, 0, base, self.memory),
            "adding the function's memory",
        )
        _ioctl(
            self.vm,
            abi.KVM_SET_USER_MEMORY_REGION,
            abi.USER_MEMORY_REGION.pack(1, 0, base, size - base, self.memory + base),
            "adding the system pages",
        )
        self._bitmap = ctypes.create_string_buffer((base // PAGE + 63) // 64 * 8)
        self._dirty_log = abi.DIRTY_LOG.pack(0, ctypes.addressof(self._bitmap))
        self.vcpu = _ioctl(self.vm, abi.KVM_CREATE_VCPU, 0, "KVM_CREATE_VCPU")
        run_size = _ioctl(kvm, abi.KVM_GET_VCPU_MMAP_SIZE, 0, "KVM_GET_VCPU_MMAP_SIZE")
        self.run = mmap.mmap(self.vcpu, run_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        flag = ctypes.c_uint8.from_buffer(self.run, abi.RUN_IMMEDIATE_EXIT)
        self.immediate_exit_address = ctypes.addressof(flag)
        del flag  # no export left on the mapping: close() can unmap it
        _ioctl(self.vcpu, abi.KVM_SET_CPUID2, cpuid, "KVM_SET_CPUID2")
        _ioctl(self.vcpu, abi.KVM_SET_XCRS, abi.XCRS.pack(1, 0, 0, 0, _xcr0(cpuid)), "KVM_SET_XCRS")
        others = {s for s in range(1, signal.NSIG) if s != KICK_SIGNAL}
        mask = sum(1 << (s - 1) for s in others if s <= 64)
        _ioctl(
            self.vcpu, abi.KVM_SET_SIGNAL_MASK, struct.pack("<IQ", 8, mask), "KVM_SET_SIGNAL_MASK"
        )
        self._sregs = self.layout.special_registers().pack()
        # Sets CR4.OSXSAVE first, so the image below is taken with XCR0's components.
        _ioctl(self.vcpu, abi.KVM_SET_SREGS, self._sregs, "KVM_SET_SREGS")
        clean = bytearray(abi.XSAVE_SIZE)
        _ioctl(self.vcpu, abi.KVM_GET_XSAVE, clean, "KVM_GET_XSAVE")
        self._clean_xsave = clean  # passed in place: KVM_SET_XSAVE only reads it
        self.run[abi.RUN_VALID_REGS : abi.RUN_VALID_REGS + 8] = struct.pack(
            "<Q", abi.KVM_SYNC_X86_REGS | abi.KVM_SYNC_X86_SREGS
        )

    def write(self, address: int, data: bytes) -> None:
        """Copy ``data`` into guest memory at ``address`` (within the function's part)."""
        if not data:
            return
        if address < 0 or address + len(data) > self.layout.table_base:
            raise ValueError(f"{len(data)} bytes at {address:#x} leave the function's memory")
        ctypes.memmove(self.memory + address, data, len(data))
        self.written.append((address, len(data)))

    def read(self, address: int, length: int) -> bytes:
        """``length`` bytes of guest memory at ``address`` (the caller checked the bounds)."""
        if address < 0 or address + length > self.layout.size:
            raise ValueError(f"{length} bytes at {address:#x} leave the guest's memory")
        return ctypes.string_at(self.memory + address, length)

    def start(self, entry: int, stack: int) -> None:
        """Load the initial registers: ring 3 at ``entry``, ``rsp = stack``, clean FPU/SIMD."""
        if self.run is None:
            raise MachineError("the machine is closed")
        registers = [0] * 18
        registers[abi.REG_RIP], registers[abi.REG_RSP] = entry, stack
        registers[abi.REG_RFLAGS] = RFLAGS
        self.run[abi.RUN_SYNC_REGS : abi.RUN_SYNC_REGS + abi.REGS.size] = abi.REGS.pack(*registers)
        self.run[abi.RUN_SYNC_SREGS : abi.RUN_SYNC_SREGS + abi.SREGS_SIZE] = self._sregs
        self.run[abi.RUN_DIRTY_REGS : abi.RUN_DIRTY_REGS + 8] = struct.pack(
            "<Q", abi.KVM_SYNC_X86_REGS | abi.KVM_SYNC_X86_SREGS
        )
        _ioctl(self.vcpu, abi.KVM_SET_XSAVE, self._clean_xsave, "KVM_SET_XSAVE")

    def enter(self) -> int:
        """``KVM_RUN`` once (the GIL is released meanwhile); the exit reason.

        Returns :data:`abi.EXIT_INTR` when a kick (signal + ``immediate_exit``)
        ended the run.
        """
        if self.run is None:
            raise MachineError("the machine is closed")
        try:
            fcntl.ioctl(self.vcpu, abi.KVM_RUN, 0)
        except InterruptedError:
            return abi.EXIT_INTR
        except OSError as exc:
            raise MachineError(f"KVM_RUN failed: {exc.strerror}") from exc
        return int(struct.unpack_from("<I", self.run, abi.RUN_EXIT_REASON)[0])

    def kick(self) -> None:
        """Make the current or next :meth:`enter` return (the caller signals the thread)."""
        if self.run is not None:
            self.run[abi.RUN_IMMEDIATE_EXIT] = 1

    def clear_kick(self) -> None:
        if self.run is not None:
            self.run[abi.RUN_IMMEDIATE_EXIT] = 0

    @property
    def kicked(self) -> bool:
        """Whether a kick was made since :meth:`clear_kick` (only the watchdog kicks)."""
        return self.run is not None and self.run[abi.RUN_IMMEDIATE_EXIT] == 1

    def registers(self) -> tuple[int, ...]:
        """The general registers at the last exit (rax ... rip, rflags)."""
        if self.run is None:
            raise MachineError("the machine is closed")
        return abi.REGS.unpack_from(self.run, abi.RUN_SYNC_REGS)

    def special_registers(self) -> bytes:
        """The packed ``struct kvm_sregs`` at the last exit."""
        if self.run is None:
            raise MachineError("the machine is closed")
        return bytes(self.run[abi.RUN_SYNC_SREGS : abi.RUN_SYNC_SREGS + abi.SREGS_SIZE])

    def exit_data(self) -> bytes:
        """The exit-reason union of ``kvm_run`` (``io``, ``mmio``, ...)."""
        if self.run is None:
            raise MachineError("the machine is closed")
        return bytes(self.run[abi.RUN_EXIT_DATA : abi.RUN_EXIT_DATA + 32])

    def reset(self) -> None:
        """Zero every byte the last invocation could have changed (see the module docstring)."""
        for address, length in self.written:
            ctypes.memset(self.memory + address, 0, length)
        self.written.clear()
        _ioctl(self.vm, abi.KVM_GET_DIRTY_LOG, self._dirty_log, "KVM_GET_DIRTY_LOG")
        bits = int.from_bytes(self._bitmap.raw, "little")
        while bits:
            first = (bits & -bits).bit_length() - 1
            shifted = bits >> first
            count = (~shifted & (shifted + 1)).bit_length() - 1  # trailing ones: a run of pages
            ctypes.memset(self.memory + first * PAGE, 0, count * PAGE)
            bits &= ~(((1 << count) - 1) << first)
        # Every exit through a handler (on nested KVM, even the normal one) leaves a frame
        # here; the dirty log does not cover the system pages. One page: cheaper than asking.
        ctypes.memset(self.memory + self.layout.interrupt_stack, 0, PAGE)

    def close(self) -> None:
        """Release the vCPU, the VM and the guest memory. Idempotent."""
        if self.run is not None:
            self.run.close()
            self.run = None
            self.immediate_exit_address = 0
        for fd in (self.vcpu, self.vm):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.vcpu = self.vm = -1
        if self.memory:
            _libc.munmap(self.memory, self.layout.size)
            self.memory = 0
