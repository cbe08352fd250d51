"""Linux file system calls answered from the set-backed file system (:mod:`pappus.vfs`).

This is the linux engine's front end to the same :class:`~pappus.vfs.SetFileSystem`
and :class:`~pappus.vfs.DescriptorTable` the wasm engine's WASI layer uses:
paths, permissions, outputs, keys and limits behave identically in both.
Each method takes a call's raw arguments (untrusted: pointers are read and
written through :class:`~pappus.engines.linux.notify.ProcessMemory`, which
bounds every access, and every length is capped before anything is read)
and returns the call's result, or raises :class:`LinuxError` with the errno.
This module serves the descriptor calls (reading, writing, opening,
``fcntl``, ``fallocate``, ``poll``); the calls that name paths or describe
files (``stat``, ``statfs``, ``getdents64``, the tree, times) are in
:mod:`.paths`, whose :class:`~.paths.PathCalls` :class:`LinuxFiles` extends.

**Descriptor numbers.** The program sees descriptors below
:data:`VIRTUAL_LIMIT` (512) for everything the supervisor serves; its
``RLIMIT_NOFILE`` reads 1024 (:data:`REAL_LIMIT`). Large input files opened read-only get a real,
read-only descriptor of a memfd copy instead (:mod:`.memfd`), installed in the program at a number
from 512 up (:data:`REAL_BASE`): the filter lets ``read``, ``pread64``,
``readv`` and ``lseek`` on those numbers run natively, which takes the
supervisor off the data path (a 1 MiB ``sha256sum`` would otherwise cost 256
round trips). The supervisor keeps a descriptor for the same open file
description, so the program's offset and the supervisor's view never
diverge, and every other call on those descriptors (``fstat``,
``fcntl``, ``close``...) still comes here.
"""

from __future__ import annotations

import contextlib
import errno as errno_codes
import os
import struct
from collections.abc import Callable

from pappus.engines.linux.memfd import MemfdRecycler, reopen_read_only
from pappus.engines.linux.notify import MemoryFault, ProcessMemory
from pappus.engines.linux.paths import (
    MAX_TRANSFER,
    LinuxError,
    PathCalls,
    linux_errno,
    signed32,
    signed64,
)
from pappus.vfs import DescriptorTable, Directory, File, OpenFile, SetFileSystem

__all__ = [  # LinuxError and linux_errno live in .paths; the supervisor takes them from here
    "REAL_BASE",
    "REAL_LIMIT",
    "VIRTUAL_LIMIT",
    "LinuxError",
    "LinuxFiles",
    "linux_errno",
]

VIRTUAL_LIMIT = 512
"""Descriptors the supervisor serves are below this."""
REAL_BASE = 512
"""Real (memfd) input descriptors start here; the filter tests bit 9 of the descriptor."""
REAL_LIMIT = 1024
"""Every descriptor is below this: the program's ``RLIMIT_NOFILE`` (set by the launcher)."""
REAL_FILE_MIN_BYTES = 32 << 10
"""Input files at least this big are served as real memfds (smaller ones: one round trip)."""
IOV_MAX = 1024
O_ACCMODE, O_WRONLY, O_RDWR = 0o3, 0o1, 0o2
O_CREAT, O_EXCL, O_TRUNC, O_APPEND = 0o100, 0o200, 0o1000, 0o2000
O_DIRECTORY, O_TMPFILE_ONLY = 0o200000, 0o20000000
F_DUPFD, F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_DUPFD_CLOEXEC = 0, 1, 2, 3, 4, 1030
SEEK_DATA, SEEK_HOLE = 3, 4
IOVEC = struct.Struct("<QQ")
TIMESPEC = struct.Struct("<qq")
SIGSET_BYTES = 8
POLLFD = struct.Struct("<iHH")  # fd, events, revents (shorts, read as the kernel's u16)
POLLIN, POLLOUT, POLLERR, POLLHUP, POLLNVAL = 0x1, 0x4, 0x8, 0x10, 0x20
POLLRDNORM, POLLWRNORM = 0x40, 0x100
ALWAYS_READY = POLLIN | POLLOUT | POLLRDNORM | POLLWRNORM
"""What the kernel reports for files that cannot block (``DEFAULT_POLLMASK``)."""
FILE_OFFSET_LIMIT = (1 << 63) - 1


class LinuxFiles(PathCalls):
    """Per-invocation state of the file calls: the table, the working directory, real files.

    ``install_real`` puts a supervisor descriptor into the program at a given
    number (seccomp ``ADDFD`` for the call being answered). The calls that name
    paths or describe files come from :class:`~.paths.PathCalls`.
    """

    def __init__(
        self,
        fs: SetFileSystem,
        memory: ProcessMemory,
        install_real: Callable[[int, int], None],
        memfds: MemfdRecycler,
    ) -> None:
        super().__init__(fs, DescriptorTable.with_standard_streams(fs, limit=REAL_LIMIT), memory)
        self.cloexec: set[int] = set()
        self.real: dict[int, int] = {}  # program descriptor -> supervisor's descriptor
        self.copies: dict[File, int] = {}
        """Input file → one memfd holding it (from ``memfds``), shared by every open of it."""
        self._install_real = install_real
        self._memfds = memfds

    def close_all(self) -> None:
        """Close the supervisor's side of every real file; only once the program is gone."""
        for fd in self.real.values():
            os.close(fd)
        for fd in self.copies.values():
            self._memfds.release(fd)
        self.real.clear()
        self.copies.clear()

    # -- reading and writing -------------------------------------------------------------

    def _read_into(self, fd: int, count: int, offset: int | None) -> bytes:
        real = self.real.get(fd)
        if real is not None:
            try:
                return os.pread(real, count, offset) if offset is not None else os.read(real, count)
            except OSError as exc:
                raise LinuxError(exc.errno or errno_codes.EIO) from None
        if offset is not None:
            return self.table.pread(fd, count, offset)
        return self.table.read(fd, count)

    def _unread(self, fd: int, length: int) -> None:
        """Give back bytes read but not delivered (the buffer faulted), as the kernel does."""
        if length <= 0:
            return
        real = self.real.get(fd)
        if real is not None:
            os.lseek(real, -length, os.SEEK_CUR)
        else:
            self.table.get(fd).position -= length

    def read(self, fd: int, buffer: int, count: int, offset: int | None = None) -> int:
        fd = self._fd(fd)
        data = self._read_into(fd, min(count, MAX_TRANSFER), offset)
        try:
            self._put(buffer, data)
        except MemoryFault:
            if offset is None:
                self._unread(fd, len(data))
            raise
        return len(data)

    def readv(self, fd: int, vector: int, count: int) -> int:
        fd = self._fd(fd)
        pieces = self._iovecs(vector, count)
        total = min(sum(length for _, length in pieces), MAX_TRANSFER)
        data = self._read_into(fd, total, None)
        done = 0
        for base, length in pieces:
            if done >= len(data):
                break
            chunk = data[done : done + length]
            try:
                self._put(base, chunk)
            except MemoryFault:
                # As the kernel: the bytes delivered so far count, the rest stay unread;
                # only a fault before any byte is EFAULT.
                self._unread(fd, len(data) - done)
                if done == 0:
                    raise
                return done
            done += len(chunk)
        return len(data)

    def _writable(self, fd: int) -> int:
        """``fd``, checked open for writing before anything else (``EBADF``, not ``EISDIR``)."""
        fd = self._fd(fd)
        if fd in self.real or not self.table.get(fd).writable:
            raise LinuxError(errno_codes.EBADF)  # input files and directories are read-only
        return fd

    def write(self, fd: int, buffer: int, count: int, offset: int | None = None) -> int:
        fd = self._writable(fd)
        data = self.memory.read(buffer, min(count, MAX_TRANSFER))
        if offset is not None and not self.table.get(fd).append:
            return self.table.pwrite(fd, data, offset)
        if offset is not None:  # Linux appends even for pwrite on an O_APPEND descriptor
            open_file = self.table.get(fd)
            position = open_file.position
            written = self.table.write(fd, data)
            open_file.position = position
            return written
        return self.table.write(fd, data)

    def writev(self, fd: int, vector: int, count: int) -> int:
        fd = self._writable(fd)
        data = bytearray()
        for base, length in self._iovecs(vector, count):
            take = min(length, MAX_TRANSFER - len(data))
            data += self.memory.read(base, take)
            if len(data) >= MAX_TRANSFER:
                break
        return self.table.write(fd, bytes(data))

    def _iovecs(self, vector: int, count: int) -> list[tuple[int, int]]:
        if count > IOV_MAX:
            raise LinuxError(errno_codes.EINVAL)
        raw = self.memory.read(vector, count * IOVEC.size)
        pieces = [IOVEC.unpack_from(raw, i * IOVEC.size) for i in range(count)]
        if any(length >= 1 << 63 for _, length in pieces):
            raise LinuxError(errno_codes.EINVAL)
        return pieces

    def sendfile(self, out_fd: int, in_fd: int, offset_pointer: int, count: int) -> int:
        # Both descriptors are checked before anything moves, as the kernel does: a failed
        # call consumes no input and leaves the offset where it was.
        in_fd = self._fd(in_fd)
        if in_fd not in self.real and not self.table.get(in_fd).readable:
            raise LinuxError(errno_codes.EBADF)
        out_fd = self._writable(out_fd)
        count = min(count, MAX_TRANSFER)
        if offset_pointer:
            (offset,) = struct.unpack("<q", self.memory.read(offset_pointer, 8))
            if offset < 0:
                raise LinuxError(errno_codes.EINVAL)
            data = self._read_into(in_fd, count, offset)
            written = self.table.write(out_fd, data)
            self._put(offset_pointer, struct.pack("<q", offset + written))
            return written
        data = self._read_into(in_fd, count, None)
        return self.table.write(out_fd, data)

    def lseek(self, fd: int, offset: int, whence: int) -> int:
        fd = self._fd(fd)
        whence &= 0xFFFF_FFFF  # an unsigned int for the kernel: the upper half is ignored
        if whence > SEEK_HOLE:
            raise LinuxError(errno_codes.EINVAL)
        real = self.real.get(fd)
        if real is not None:
            try:
                return os.lseek(real, signed64(offset), whence)
            except OSError as exc:
                raise LinuxError(exc.errno or errno_codes.EINVAL) from None
        open_file = self.table.get(fd)
        if isinstance(open_file.node, Directory):
            return self._seek_directory(open_file, signed64(offset), whence)
        if whence in (SEEK_DATA, SEEK_HOLE) and not open_file.stream:
            # No holes here: all data up to the end, then the implicit hole at the end.
            size, start = len(open_file.node.data), signed64(offset)
            if not 0 <= start < size:
                raise LinuxError(errno_codes.ENXIO)
            open_file.position = start if whence == SEEK_DATA else size
            return open_file.position
        return self.table.seek(fd, signed64(offset), whence)

    def _seek_directory(self, open_file: OpenFile, offset: int, whence: int) -> int:
        """``rewinddir``/``seekdir``: the position is an entry index (``d_off`` cookies)."""
        if whence == os.SEEK_SET:
            position = offset
        elif whence == os.SEEK_CUR:
            position = open_file.position + offset
        else:
            raise LinuxError(errno_codes.EINVAL)  # as tmpfs: no SEEK_END on directories
        if position < 0:
            raise LinuxError(errno_codes.EINVAL)
        open_file.position = position
        if position == 0:
            self.listings.pop(open_file, None)  # rewound: see the directory as it is now
        return position

    def ftruncate(self, fd: int, length: int) -> int:
        fd = self._fd(fd)
        open_file = self.table.get(fd)
        if fd in self.real or not open_file.writable or isinstance(open_file.node, Directory):
            raise LinuxError(errno_codes.EINVAL)  # the kernel's answer for a read-only descriptor
        self.table.truncate(fd, signed64(length))
        return 0

    def fallocate(self, fd: int, mode: int, offset: int, length: int) -> int:
        """Mode 0 only: extend the file with zeros to ``offset + length``, as output bytes.

        There is no disk to reserve, so the other modes (keep the size, punch or
        collapse a hole...) are ``EOPNOTSUPP``. Past the output limit it is
        ``ENOSPC``, as on a full file system: nothing was written yet.
        """
        fd = self._fd(fd)
        offset, length = signed64(offset), signed64(length)
        if offset < 0 or length <= 0:
            raise LinuxError(errno_codes.EINVAL)
        if mode & 0xFFFF_FFFF:
            raise LinuxError(errno_codes.EOPNOTSUPP)
        open_file = self.table.get(fd)
        if fd in self.real or not open_file.writable:
            raise LinuxError(errno_codes.EBADF)
        node = open_file.node
        if open_file.stream or not isinstance(node, File):
            raise LinuxError(errno_codes.ENODEV)  # the kernel's answer for a character device
        if offset + length > FILE_OFFSET_LIMIT:
            raise LinuxError(errno_codes.EFBIG)
        extra = offset + length - len(node.data)
        if extra > 0:
            if self.fs.output_bytes + extra > self.fs.max_output_bytes:
                raise LinuxError(errno_codes.ENOSPC)
            self.fs.truncate(node, offset + length)
        return 0

    def fsync(self, fd: int) -> int:
        """``fsync``, ``fdatasync``, ``syncfs``: in memory, nothing to flush."""
        self._fd(fd)
        return 0

    # -- waiting -------------------------------------------------------------------------

    def poll(self, address: int, count: int) -> int:
        """``poll``'s readiness: fill in every ``revents``, return how many are not 0.

        Nothing here ever blocks, so every open descriptor is ready for what it
        asks (regular files, directories and the stdio streams alike, as the
        kernel reports files without a poll method); a descriptor that is not
        open is ``POLLNVAL``, a negative one is skipped. ``count`` is capped at
        the descriptor limit (``EINVAL`` beyond, as the kernel's RLIMIT_NOFILE
        check), so at most 8 KiB is read.
        """
        if count > REAL_LIMIT:
            raise LinuxError(errno_codes.EINVAL)
        raw = bytearray(self.memory.read(address, count * POLLFD.size))
        ready = 0
        for index in range(count):
            fd, events, _ = POLLFD.unpack_from(raw, index * POLLFD.size)
            if fd < 0:
                revents = 0
            elif fd not in self.table:
                revents = POLLNVAL
            else:
                revents = ALWAYS_READY & (events | POLLERR | POLLHUP)
            struct.pack_into("<H", raw, index * POLLFD.size + 6, revents)
            ready += revents != 0
        self._put(address, bytes(raw))
        return ready

    def ppoll_timeout(self, timeout_address: int, mask_address: int,
                      mask_size: int) -> float | None:
        """``ppoll``'s timeout in seconds (None: forever), checked as the kernel does.

        The signal mask is read (``EFAULT``) but not applied: no signal comes
        from outside while the program waits.
        """
        timeout: float | None = None
        if timeout_address:
            seconds, nanoseconds = TIMESPEC.unpack(self.memory.read(timeout_address,
                                                                    TIMESPEC.size))
            if seconds < 0 or not 0 <= nanoseconds < 1_000_000_000:
                raise LinuxError(errno_codes.EINVAL)
            timeout = seconds + nanoseconds / 1e9
        if mask_address:
            if mask_size != SIGSET_BYTES:
                raise LinuxError(errno_codes.EINVAL)
            self.memory.read(mask_address, SIGSET_BYTES)
        return timeout

    def timeout_spent(self, timeout_address: int) -> None:
        """After a whole wait, write back the time left (none), as Linux does for ``ppoll``."""
        if timeout_address:
            with contextlib.suppress(MemoryFault):  # a read-only timespec is fine (as Linux)
                self._put(timeout_address, bytes(TIMESPEC.size))

    # -- opening and descriptors ------------------------------------------------------------

    def openat(self, dirfd: int, path_address: int, flags: int, mode: int) -> int:
        path = self._path(path_address)
        base = self._base(dirfd)
        if flags & O_TMPFILE_ONLY:
            raise LinuxError(errno_codes.EOPNOTSUPP)
        access = flags & O_ACCMODE
        write = access in (O_WRONLY, O_RDWR)
        fd = self.table.open(
            path,
            base,
            read=access != O_WRONLY,
            write=write,
            create=bool(flags & O_CREAT),
            exclusive=bool(flags & O_EXCL),
            truncate=bool(flags & O_TRUNC),
            directory=bool(flags & O_DIRECTORY),
            append=bool(flags & O_APPEND),
        )
        node = self.table.get(fd).node
        if flags & O_CREAT and isinstance(node, Directory):
            self.table.close(fd)
            raise LinuxError(errno_codes.EISDIR)
        if (
            not write
            and isinstance(node, File)
            and not node.writable
            and len(node.data) >= REAL_FILE_MIN_BYTES
        ):
            fd = self._make_real(fd, node)
        else:
            fd = self._below_virtual_limit(fd)
        if flags & os.O_CLOEXEC:
            self.cloexec.add(fd)
        return fd

    def _below_virtual_limit(self, fd: int) -> int:
        if fd >= VIRTUAL_LIMIT:
            self.table.close(fd)
            raise LinuxError(errno_codes.EMFILE)
        return fd

    def _copy(self, node: File) -> int:
        """A memfd holding ``node``, made once per input file and invocation.

        Every open of the file shares this one copy: copying per open would let a program
        make the worker hold its input hundreds of times over (once per descriptor), memory
        its own bound does not count.
        """
        copy = self.copies.get(node)
        if copy is None:
            copy = self.copies[node] = self._memfds.acquire(node.data)
        return copy

    def _make_real(self, fd: int, node: File) -> int:
        """Serve ``node`` (read-only input) from a memfd installed read-only at ≥ REAL_BASE."""
        open_file = self.table.get(fd)
        self.table.close(fd)
        # A new open file description of the shared copy: its own offset, the same pages.
        reader = reopen_read_only(self._copy(node))
        try:
            number = self.table.install(open_file, REAL_BASE)
            if number >= REAL_LIMIT:
                self.table.close(number)
                raise LinuxError(errno_codes.EMFILE)
            self._install_real(reader, number)
        except BaseException:
            os.close(reader)
            raise
        self.real[number] = reader
        return number

    def close(self, fd: int) -> int:
        fd = self._fd(fd)
        self.listings.pop(self.table.get(fd), None)
        self.table.close(fd)
        self.cloexec.discard(fd)
        real = self.real.pop(fd, None)
        if real is not None:
            os.close(real)
        return 0

    def dup(self, fd: int, lowest: int = 0, exact: int | None = None, cloexec: bool = False) -> int:
        fd = self._fd(fd)
        open_file = self.table.get(fd)
        if exact is not None:
            target = signed32(exact)
            if not 0 <= target < VIRTUAL_LIMIT:
                raise LinuxError(errno_codes.EBADF)
            if target == fd:
                return target
            if target in self.table:
                self.close(target)
            self.table.renumber(self.table.install(open_file), target)
        else:
            if not 0 <= lowest < VIRTUAL_LIMIT:
                raise LinuxError(errno_codes.EINVAL)
            target = self._below_virtual_limit(self.table.install(open_file, lowest))
        real = self.real.get(fd)
        if real is not None:  # the same open file description: the offset stays shared
            self.real[target] = os.dup(real)
        if cloexec:
            self.cloexec.add(target)
        return target

    def dup3(self, fd: int, target: int, flags: int) -> int:
        if flags & ~os.O_CLOEXEC:
            raise LinuxError(errno_codes.EINVAL)
        if signed32(fd) == signed32(target):
            raise LinuxError(errno_codes.EINVAL)
        return self.dup(fd, exact=target, cloexec=bool(flags & os.O_CLOEXEC))

    def fcntl(self, fd: int, command: int, argument: int) -> int:
        fd = self._fd(fd)
        if command in (F_DUPFD, F_DUPFD_CLOEXEC):
            return self.dup(fd, lowest=signed32(argument), cloexec=command == F_DUPFD_CLOEXEC)
        if command == F_GETFD:
            return 1 if fd in self.cloexec else 0
        if command == F_SETFD:
            (self.cloexec.add if argument & 1 else self.cloexec.discard)(fd)
            return 0
        open_file = self.table.get(fd)
        if command == F_GETFL:
            access = (
                O_RDWR
                if open_file.readable and open_file.writable
                else O_WRONLY
                if open_file.writable
                else 0
            )
            return access | (O_APPEND if open_file.append else 0)
        if command == F_SETFL:
            if open_file.writable:
                open_file.append = bool(argument & O_APPEND)
            return 0
        raise LinuxError(errno_codes.EINVAL)

    def ioctl(self, fd: int) -> int:
        self._fd(fd)
        raise LinuxError(errno_codes.ENOTTY)  # no terminals, no devices
