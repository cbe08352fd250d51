"""Linux file system calls answered from the set-backed file system (:mod:`pappus.vfs`).

This is the linux engine's front end to the same :class:`~pappus.vfs.SetFileSystem`
and :class:`~pappus.vfs.DescriptorTable` the wasm engine's WASI layer uses:
paths, permissions, outputs, keys and limits behave identically in both.
Each method takes a call's raw arguments (untrusted: pointers are read and
written through :class:`~pappus.engines.linux.notify.ProcessMemory`, which
bounds every access, and every length is capped before anything is read)
and returns the call's result, or raises :class:`LinuxError` with the errno.

**Descriptor numbers.** The program sees descriptors below
:data:`VIRTUAL_LIMIT` (512) for everything the supervisor serves, and its
``RLIMIT_NOFILE`` reads 512. Large input files opened read-only get a real,
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

import errno as errno_codes
import os
import struct
from collections.abc import Callable

from pappus.engines.linux.memfd import MemfdRecycler, reopen_read_only
from pappus.engines.linux.notify import MemoryFault, ProcessMemory
from pappus.vfs import (
    MAX_PATH_BYTES,
    DescriptorTable,
    Directory,
    File,
    NodeKind,
    OpenFile,
    SetFileSystem,
    Stat,
    VfsError,
    decode_path,
    stat_node,
)

VIRTUAL_LIMIT = 512
"""Descriptors the supervisor serves are below this; it is the program's RLIMIT_NOFILE."""
REAL_BASE = 512
"""Real (memfd) input descriptors start here; the filter tests bit 9 of the descriptor."""
REAL_LIMIT = 1024
REAL_FILE_MIN_BYTES = 32 << 10
"""Input files at least this big are served as real memfds (smaller ones: one round trip)."""
MAX_TRANSFER = 1 << 20
"""At most this many bytes per read/write call; a shorter count is legal POSIX."""
IOV_MAX = 1024
AT_FDCWD = -100
AT_EMPTY_PATH, AT_REMOVEDIR, AT_SYMLINK_NOFOLLOW = 0x1000, 0x200, 0x100
O_ACCMODE, O_WRONLY, O_RDWR = 0o3, 0o1, 0o2
O_CREAT, O_EXCL, O_TRUNC, O_APPEND = 0o100, 0o200, 0o1000, 0o2000
O_DIRECTORY, O_TMPFILE_ONLY = 0o200000, 0o20000000
F_DUPFD, F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_DUPFD_CLOEXEC = 0, 1, 2, 3, 4, 1030
SEEK_DATA, SEEK_HOLE = 3, 4
UID = GID = 65534
DEVICE = 0x50A5
STAT = struct.Struct("<QQQIIIiQqqq6q3q")
DIRENT_HEAD = struct.Struct("<QqHB")
IOVEC = struct.Struct("<QQ")
_MODE = {NodeKind.DIRECTORY: 0o040000, NodeKind.FILE: 0o100000, NodeKind.STREAM: 0o020000}
_DTYPE = {NodeKind.DIRECTORY: 4, NodeKind.FILE: 8, NodeKind.STREAM: 2}


class LinuxError(Exception):
    """The call fails with this errno (a normal error return, not a sandbox failure)."""

    def __init__(self, code: int) -> None:
        super().__init__(errno_codes.errorcode.get(code, str(code)))
        self.code = code


def linux_errno(error: VfsError) -> int:
    """The Linux errno for a file-system error."""
    return int(getattr(errno_codes, "E" + error.errno.name))


class LinuxFiles:
    """Per-invocation state of the file calls: the table, the working directory, real files.

    ``install_real`` puts a supervisor descriptor into the program at a given
    number (seccomp ``ADDFD`` for the call being answered).
    """

    def __init__(
        self,
        fs: SetFileSystem,
        memory: ProcessMemory,
        install_real: Callable[[int, int], None],
        memfds: MemfdRecycler,
    ) -> None:
        self.fs = fs
        self.table = DescriptorTable.with_standard_streams(fs, limit=REAL_LIMIT)
        self.cwd: Directory = fs.root
        self.umask = 0o022
        self.cloexec: set[int] = set()
        self.real: dict[int, int] = {}  # program descriptor -> supervisor's descriptor
        self.copies: dict[File, int] = {}
        """Input file → one memfd holding it (from ``memfds``), shared by every open of it."""
        self.listings: dict[OpenFile, list[tuple[str, Stat]]] = {}
        """Directory listings being read, taken at the first read (see :meth:`getdents64`)."""
        self.memory = memory
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

    # -- helpers -----------------------------------------------------------------------

    def _path(self, address: int) -> str:
        try:
            raw = self.memory.read_string(address, MAX_PATH_BYTES)
        except ValueError:
            raise LinuxError(errno_codes.ENAMETOOLONG) from None
        if not raw:
            raise LinuxError(errno_codes.ENOENT)
        return decode_path(raw)

    def _base(self, dirfd: int) -> Directory:
        dirfd = _signed32(dirfd)
        if dirfd == AT_FDCWD:
            return self.cwd
        return self.table.directory(dirfd)

    def _fd(self, raw: int) -> int:
        fd = _signed32(raw)
        if fd < 0 or fd not in self.table:
            raise LinuxError(errno_codes.EBADF)
        return fd

    def _put(self, address: int, data: bytes) -> None:
        self.memory.write(address, data)

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
                return os.lseek(real, _signed64(offset), whence)
            except OSError as exc:
                raise LinuxError(exc.errno or errno_codes.EINVAL) from None
        open_file = self.table.get(fd)
        if isinstance(open_file.node, Directory):
            return self._seek_directory(open_file, _signed64(offset), whence)
        if whence in (SEEK_DATA, SEEK_HOLE) and not open_file.stream:
            # No holes here: all data up to the end, then the implicit hole at the end.
            size, start = len(open_file.node.data), _signed64(offset)
            if not 0 <= start < size:
                raise LinuxError(errno_codes.ENXIO)
            open_file.position = start if whence == SEEK_DATA else size
            return open_file.position
        return self.table.seek(fd, _signed64(offset), whence)

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
        self.table.truncate(fd, _signed64(length))
        return 0

    def fsync(self, fd: int) -> int:
        self._fd(fd)
        return 0

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
            target = _signed32(exact)
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
        if _signed32(fd) == _signed32(target):
            raise LinuxError(errno_codes.EINVAL)
        return self.dup(fd, exact=target, cloexec=bool(flags & os.O_CLOEXEC))

    def fcntl(self, fd: int, command: int, argument: int) -> int:
        fd = self._fd(fd)
        if command in (F_DUPFD, F_DUPFD_CLOEXEC):
            return self.dup(fd, lowest=_signed32(argument), cloexec=command == F_DUPFD_CLOEXEC)
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

    # -- metadata ------------------------------------------------------------------------

    def _stat_at(self, dirfd: int, path_address: int, flags: int) -> tuple[Stat, bool]:
        """Metadata of a path (or, with ``AT_EMPTY_PATH`` and "", of ``dirfd``) and writability."""
        if flags & AT_EMPTY_PATH:
            raw = self.memory.read_string(path_address, MAX_PATH_BYTES) if path_address else b""
            if not raw:
                if _signed32(dirfd) == AT_FDCWD:
                    return stat_node(self.cwd), self.cwd.writable
                open_file = self.table.get(self._fd(dirfd))
                return self.table.stat(_signed32(dirfd)), open_file.node.writable
        node = self.fs.resolve(self._path(path_address), self._base(dirfd))
        return stat_node(node), node.writable

    @staticmethod
    def _mode(stat: Stat, writable: bool) -> int:
        permissions = (
            0o666
            if stat.kind is NodeKind.STREAM
            else (
                (0o755 if writable else 0o555)
                if stat.kind is NodeKind.DIRECTORY
                else (0o644 if writable else 0o444)
            )
        )
        return _MODE[stat.kind] | permissions

    def _pack_stat(self, stat: Stat, writable: bool) -> bytes:
        blocks = (stat.size + 511) // 512
        return STAT.pack(
            DEVICE,
            stat.inode,
            stat.links,
            self._mode(stat, writable),
            UID,
            GID,
            0,
            0,
            stat.size,
            4096,
            blocks,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
        )

    def fstat(self, fd: int, buffer: int) -> int:
        fd = self._fd(fd)
        open_file = self.table.get(fd)
        stat = self.table.stat(fd)
        self._put(buffer, self._pack_stat(stat, open_file.node.writable))
        return 0

    def newfstatat(self, dirfd: int, path_address: int, buffer: int, flags: int) -> int:
        stat, writable = self._stat_at(dirfd, path_address, flags)
        self._put(buffer, self._pack_stat(stat, writable))
        return 0

    def statx(self, dirfd: int, path_address: int, flags: int, buffer: int) -> int:
        stat, writable = self._stat_at(dirfd, path_address, flags)
        mode = self._mode(stat, writable)
        record = bytearray(256)
        struct.pack_into("<IIQIIIH", record, 0, 0x7FF, 4096, 0, stat.links, UID, GID, mode)
        struct.pack_into("<QQQ", record, 32, stat.inode, stat.size, (stat.size + 511) // 512)
        struct.pack_into("<II", record, 136, DEVICE >> 8, DEVICE & 0xFF)
        self._put(buffer, bytes(record))
        return 0

    def getdents64(self, fd: int, buffer: int, count: int) -> int:
        fd = self._fd(fd)
        open_file = self.table.get(fd)
        if not isinstance(open_file.node, Directory):
            raise LinuxError(errno_codes.ENOTDIR)
        # The listing is taken at the first read (and again after a rewind, lseek to 0), and
        # positions index into it: removing entries while reading (``rm -r``) must not shift
        # the entries not yet read. POSIX leaves open whether entries added or removed since
        # the rewind are seen.
        listing = self.listings.get(open_file)
        if listing is None:
            listing = self.table.list_directory(fd)
            self.listings[open_file] = listing
        out = bytearray()
        index = open_file.position
        while index < len(listing):
            name, stat = listing[index]
            encoded = name.encode() + b"\0"
            length = (DIRENT_HEAD.size + len(encoded) + 7) & ~7
            if len(out) + length > min(count, MAX_TRANSFER):
                if not out:
                    raise LinuxError(errno_codes.EINVAL)
                break
            out += DIRENT_HEAD.pack(stat.inode, index + 1, length, _DTYPE[stat.kind])
            out += encoded + bytes(length - DIRENT_HEAD.size - len(encoded))
            index += 1
        self._put(buffer, bytes(out))
        open_file.position = index
        return len(out)

    def faccessat(self, dirfd: int, path_address: int, mode: int) -> int:
        node = self.fs.resolve(self._path(path_address), self._base(dirfd))
        if mode & 2 and not node.writable:  # W_OK
            raise LinuxError(errno_codes.EROFS)
        if mode & 1 and isinstance(node, File):  # X_OK: nothing here is executable
            raise LinuxError(errno_codes.EACCES)
        return 0

    def readlinkat(self, dirfd: int, path_address: int) -> int:
        self.fs.resolve(self._path(path_address), self._base(dirfd))
        raise LinuxError(errno_codes.EINVAL)  # it exists, and there are no symbolic links

    # -- the tree --------------------------------------------------------------------------

    def mkdirat(self, dirfd: int, path_address: int) -> int:
        self.fs.mkdir(self._path(path_address), self._base(dirfd))
        return 0

    def unlinkat(self, dirfd: int, path_address: int, flags: int) -> int:
        if flags & ~AT_REMOVEDIR:
            raise LinuxError(errno_codes.EINVAL)
        path, base = self._path(path_address), self._base(dirfd)
        if flags & AT_REMOVEDIR:
            self.fs.rmdir(path, base)
        else:
            self.fs.unlink(path, base)
        return 0

    def renameat(
        self, old_dirfd: int, old_address: int, new_dirfd: int, new_address: int, flags: int = 0
    ) -> int:
        if flags:
            raise LinuxError(errno_codes.EINVAL)
        self.fs.rename(
            self._path(old_address),
            self._path(new_address),
            self._base(old_dirfd),
            self._base(new_dirfd),
        )
        return 0

    def chdir(self, path_address: int) -> int:
        node = self.fs.resolve(self._path(path_address), self.cwd)
        if not isinstance(node, Directory):
            raise LinuxError(errno_codes.ENOTDIR)
        self.cwd = node
        return 0

    def fchdir(self, fd: int) -> int:
        self.cwd = self.table.directory(self._fd(fd))
        return 0

    def getcwd(self, buffer: int, size: int) -> int:
        names: list[str] = []
        node = self.cwd
        while node.parent is not None:
            parent = node.parent
            names.append(next(name for name, child in parent.entries.items() if child is node))
            node = parent
        path = ("/" + "/".join(reversed(names))).encode() + b"\0"
        if len(path) > size:
            raise LinuxError(errno_codes.ERANGE)
        self._put(buffer, path)
        return len(path)


def _signed32(value: int) -> int:
    value &= 0xFFFF_FFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value
