"""Seccomp user notification and the sandboxed process's memory, from Python.

The kernel stops a sandboxed thread at each call the filter marks
``SECCOMP_RET_USER_NOTIF`` and queues a notification on the listener
descriptor; :class:`Listener` receives it (``SECCOMP_IOCTL_NOTIF_RECV``),
answers with a return value or an errno (``NOTIF_SEND``), can let the kernel
run the call after all (``SECCOMP_USER_NOTIF_FLAG_CONTINUE`` — only ever for
calls whose arguments the kernel does not read from the program's memory),
and can install a descriptor in the program (``NOTIF_ADDFD``).

:class:`ProcessMemory` reads and writes the program's memory with
``process_vm_readv`` and ``process_vm_writev``. Everything read is data the program
controls: callers bound every length before reading and never hand a
pointer back to the kernel — the supervisor copies what it needs and acts
on its copy.

``fcntl.ioctl`` releases the GIL while the kernel blocks, so supervisors of
concurrent invocations run in parallel.
"""

from __future__ import annotations

import ctypes
import errno as errno_codes
import fcntl
import os
import struct
from dataclasses import dataclass

NOTIF = struct.Struct("<QIIiIQ6Q")  # id, pid, flags, nr, arch, instruction_pointer, args
RESPONSE = struct.Struct("<QqiI")  # id, val, error, flags
ADDFD = struct.Struct("<QIIII")  # id, flags, srcfd, newfd, newfd_flags
IOCTL_RECV = 0xC0502100  # _IOWR('!', 0, struct seccomp_notif)
IOCTL_SEND = 0xC0182101  # _IOWR('!', 1, struct seccomp_notif_resp)
IOCTL_ADDFD = 0x40182103  # _IOW('!', 3, struct seccomp_notif_addfd)
IOCTL_SET_FLAGS = 0x40082104  # _IOW('!', 4, __u64), Linux 6.6
FLAG_CONTINUE = 1
FD_SYNC_WAKE_UP = 1
ADDFD_FLAG_SETFD = 1
O_CLOEXEC = 0o2000000
SYS_PIDFD_GETFD = 438


@dataclass(frozen=True, slots=True)
class Notification:
    """One stopped system call: who made it, which call, its six raw arguments."""

    id: int
    pid: int
    nr: int
    arch: int
    ip: int
    args: tuple[int, int, int, int, int, int]


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def pidfd_getfd(pidfd: int, target_fd: int) -> int:
    """A copy of descriptor ``target_fd`` of the process behind ``pidfd`` (close-on-exec)."""
    result = _syscall(
        ctypes.c_long(SYS_PIDFD_GETFD),
        ctypes.c_int(pidfd),
        ctypes.c_int(target_fd),
        ctypes.c_uint(0),
    )
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return int(result)


SYS_PIDFD_SEND_SIGNAL, SI_QUEUE = 424, -1
SIGINFO = struct.Struct("<iiiiiI")  # signo, errno, code, padding, pid, uid (of 128 bytes)


def send_signal(pidfd: int, number: int, *, sender_pid: int, sender_uid: int) -> None:
    """``pidfd_send_signal`` with a siginfo naming the sender as ``sender_pid``/``sender_uid``.

    ``signal.pidfd_send_signal`` takes no siginfo, and the kernel's default one
    would carry the worker's pid and uid into a ``SA_SIGINFO`` handler. The
    kernel allows another process only negative codes, so it is ``SI_QUEUE``.
    A process already gone (``ESRCH``) is not an error.
    """
    info = ctypes.create_string_buffer(
        SIGINFO.pack(number, 0, SI_QUEUE, 0, sender_pid, sender_uid).ljust(128, b"\0"), 128)
    result = _syscall(ctypes.c_long(SYS_PIDFD_SEND_SIGNAL), ctypes.c_int(pidfd),
                      ctypes.c_int(number), info, ctypes.c_uint(0))
    if result < 0:
        code = ctypes.get_errno()
        if code != errno_codes.ESRCH:
            raise OSError(code, os.strerror(code))


class Listener:
    """A seccomp notification listener descriptor (owned: :meth:`close` closes it)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buffer = bytearray(NOTIF.size)
        self.sync_wake_up = _try_sync_wake_up(fd)

    def __repr__(self) -> str:
        return f"<Listener fd={self.fd} sync_wake_up={self.sync_wake_up}>"

    def receive(self) -> Notification | None:
        """The next notification; None if the process is gone (``ENOENT``) or it was withdrawn."""
        buffer = self._buffer
        buffer[:] = bytes(NOTIF.size)  # the kernel requires a zeroed buffer
        try:
            fcntl.ioctl(self.fd, IOCTL_RECV, buffer, True)
        except OSError as exc:
            if exc.errno in (errno_codes.ENOENT, errno_codes.EINTR):
                return None
            raise
        id_, pid, _flags, nr, arch, ip, *args = NOTIF.unpack(buffer)
        return Notification(
            id_, pid, nr, arch, ip, (args[0], args[1], args[2], args[3], args[4], args[5])
        )

    def reply(self, notification: Notification, value: int = 0, error: int = 0) -> bool:
        """Finish the call with ``value`` (or ``-error``). False if the caller is gone."""
        return self._send(RESPONSE.pack(notification.id, value, -error if error else 0, 0))

    def let_kernel_run(self, notification: Notification, *, elsewhere: bool = False) -> bool:
        """Let the kernel run the call as made. Only for calls without pointer arguments.

        ``elsewhere``: wake the caller without the synchronous hand-over, so a
        long call (an exit) can run on another CPU while we go on.
        """
        if elsewhere and self.sync_wake_up:
            fcntl.ioctl(self.fd, IOCTL_SET_FLAGS, 0)
            try:
                return self._send(RESPONSE.pack(notification.id, 0, 0, FLAG_CONTINUE))
            finally:
                fcntl.ioctl(self.fd, IOCTL_SET_FLAGS, FD_SYNC_WAKE_UP)
        return self._send(RESPONSE.pack(notification.id, 0, 0, FLAG_CONTINUE))

    def _send(self, response: bytes) -> bool:
        try:
            fcntl.ioctl(self.fd, IOCTL_SEND, response)
        except OSError as exc:
            if exc.errno == errno_codes.ENOENT:  # killed or interrupted meanwhile
                return False
            raise
        return True

    def add_descriptor(self, notification: Notification, source_fd: int, target_fd: int) -> None:
        """Install ``source_fd``'s open file in the caller as ``target_fd`` (close-on-exec).

        Raises ``ProcessLookupError`` if the call is gone (the caller was killed).
        """
        request = ADDFD.pack(notification.id, ADDFD_FLAG_SETFD, source_fd, target_fd, O_CLOEXEC)
        try:
            fcntl.ioctl(self.fd, IOCTL_ADDFD, request)
        except OSError as exc:
            if exc.errno == errno_codes.ENOENT:
                raise ProcessLookupError(exc.errno, "the call is gone") from None
            raise

    def close(self) -> None:
        """Close the listener: a call still waiting on it fails with ``ENOSYS``."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _try_sync_wake_up(fd: int) -> bool:
    """Ask the kernel (≥ 6.6) to run supervisor and caller back to back on one CPU."""
    try:
        fcntl.ioctl(fd, IOCTL_SET_FLAGS, FD_SYNC_WAKE_UP)  # the flags are the argument itself
    except OSError:
        return False
    return True


class MemoryFault(Exception):
    """An address range of the program is not mapped (the call gets ``EFAULT``)."""


PAGE = 4096
FIRST_STRING_READ = 256


class _IoVec(ctypes.Structure):
    _fields_ = (("base", ctypes.c_void_p), ("length", ctypes.c_size_t))


_VM_ARGUMENTS = (
    ctypes.c_int,
    ctypes.POINTER(_IoVec),
    ctypes.c_ulong,
    ctypes.POINTER(_IoVec),
    ctypes.c_ulong,
    ctypes.c_ulong,
)
_process_vm_readv = _libc.process_vm_readv
_process_vm_readv.restype = ctypes.c_ssize_t
_process_vm_readv.argtypes = _VM_ARGUMENTS
_process_vm_writev = _libc.process_vm_writev
_process_vm_writev.restype = ctypes.c_ssize_t
_process_vm_writev.argtypes = _VM_ARGUMENTS


class ProcessMemory:
    """A stopped program's memory, read and written with ``process_vm_readv``/``writev``.

    Both honour page protections as the kernel's own copies would: a buffer
    in read-only memory (the program's code, say) gets ``EFAULT`` when
    written, where ``/proc/<pid>/mem`` would force the write. Nothing is
    opened, so the first access costs no more than the next.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        # Most copies are a path or a small record: one page, with its two iovecs, made once.
        self._page = ctypes.create_string_buffer(PAGE)
        self._page_address = ctypes.addressof(self._page)
        self._local = _IoVec(self._page_address, 0)
        self._remote = _IoVec(0, 0)
        self._local_ref = ctypes.byref(self._local)
        self._remote_ref = ctypes.byref(self._remote)

    def read(self, address: int, length: int) -> bytes:
        """Exactly ``length`` bytes at ``address`` (:class:`MemoryFault` if any is unmapped)."""
        if length == 0:
            return b""
        if address < 0 or address + length > 1 << 47:
            raise MemoryFault(f"{address:#x}+{length}")
        if length <= PAGE:
            self._local.length = self._remote.length = length
            self._remote.base = address
            done = _process_vm_readv(self.pid, self._local_ref, 1, self._remote_ref, 1, 0)
            if done != length:
                raise MemoryFault(f"{address:#x}+{length}")
            return ctypes.string_at(self._page_address, length)
        target = ctypes.create_string_buffer(length)
        local = _IoVec(ctypes.cast(target, ctypes.c_void_p), length)
        remote = _IoVec(address, length)
        done = _process_vm_readv(self.pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
        if done != length:
            raise MemoryFault(f"{address:#x}+{length}")
        return target.raw

    def read_string(self, address: int, limit: int) -> bytes:
        """A NUL-terminated string of at most ``limit`` bytes (without the NUL).

        Reads page by page, so a short string near the end of a mapping is fine.
        Raises :class:`MemoryFault`, or ``ValueError`` when no NUL comes within ``limit``.
        """
        collected = bytearray()
        first = True
        while len(collected) <= limit:
            chunk_length = PAGE - (address % PAGE)
            if first:  # most strings are short paths: try a small read first
                chunk_length = min(chunk_length, FIRST_STRING_READ)
                first = False
            chunk = self.read(address, chunk_length)
            end = chunk.find(0)
            if end >= 0:
                collected += chunk[:end]
                break
            collected += chunk
            address += chunk_length
        if len(collected) > limit:
            raise ValueError("string too long")
        return bytes(collected)

    def write(self, address: int, data: bytes) -> None:
        """Write ``data`` at ``address`` (:class:`MemoryFault` if it is not mapped)."""
        if not data:
            return
        if address < 0 or address + len(data) > 1 << 47:
            raise MemoryFault(f"{address:#x}+{len(data)}")
        length = len(data)
        if length <= PAGE:
            ctypes.memmove(self._page_address, bytes(data), length)  # (bytes(bytes) is free)
            self._local.length = self._remote.length = length
            self._remote.base = address
            written = _process_vm_writev(self.pid, self._local_ref, 1, self._remote_ref, 1, 0)
        else:
            source = ctypes.create_string_buffer(data, length)
            local = _IoVec(ctypes.cast(source, ctypes.c_void_p), length)
            remote = _IoVec(address, length)
            written = _process_vm_writev(self.pid, ctypes.byref(local), 1, ctypes.byref(remote),
                                         1, 0)
        if written != length:
            raise MemoryFault(f"{address:#x}+{length}")

