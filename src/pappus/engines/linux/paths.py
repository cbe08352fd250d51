"""Linux calls that name a file by path or describe one, over the set-backed file system.

The other half of :mod:`.files` (which serves the descriptor calls: reading,
writing, opening, polling): metadata (``stat``, ``statx``, ``statfs`` and the
records they fill in), directory listings (``getdents64``), the tree
(``mkdir``, ``mknod``, ``unlink``, ``rename``), file times and the working
directory. :class:`FileState` holds what both halves share: the file system,
the descriptor table, the working directory and the program's memory, with the
helpers that read untrusted paths and descriptor numbers.

The set file system keeps no times, owners, permissions, links or device
nodes, and every answer here says so honestly: every time reads 0, setting one
is ``EPERM``, a FIFO or device node is ``EPERM``. ``statfs`` describes the set
file system itself with fixed, documented values (:func:`statfs_record`),
never the host's.
"""

from __future__ import annotations

import errno as errno_codes
import struct

from pappus.engines.linux.notify import ProcessMemory
from pappus.vfs import (
    MAX_NAME_BYTES,
    MAX_PATH_BYTES,
    DescriptorTable,
    Directory,
    File,
    Node,
    NodeKind,
    OpenFile,
    SetFileSystem,
    Stat,
    VfsError,
    decode_path,
    stat_node,
)

MAX_TRANSFER = 1 << 20
"""At most this many bytes per read/write call; a shorter count is legal POSIX."""
AT_FDCWD = -100
AT_EMPTY_PATH, AT_REMOVEDIR, AT_SYMLINK_NOFOLLOW = 0x1000, 0x200, 0x100
AT_EACCESS, AT_NO_AUTOMOUNT, AT_STATX_SYNC_TYPE = 0x200, 0x800, 0x6000
STAT_FLAGS = AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT | AT_EMPTY_PATH | AT_STATX_SYNC_TYPE
"""Flags a stat call accepts (the kernel's ``vfs_statx``); any other is ``EINVAL``."""
ACCESS_FLAGS = AT_EACCESS | AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH
STATX_RESERVED = 0x8000_0000
# The argument checks below come before the path is looked up, as in the kernel: a bad
# argument is EINVAL even for a path that does not exist (tests/engines/linux/test_file_calls).
UID = GID = 65534
DEVICE = 0x50A5
STAT = struct.Struct("<QQQIIIiQqqq6q3q")
DIRENT_HEAD = struct.Struct("<QqHB")
STATFS = struct.Struct("<qqQQQQQiiqqq4q")  # struct statfs on x86-64: 120 bytes
TIMESPEC_PAIR = struct.Struct("<qqqq")
UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2
S_IFMT, S_IFREG, S_IFDIR = 0o170000, 0o100000, 0o040000
S_IFIFO, S_IFCHR, S_IFBLK, S_IFSOCK = 0o010000, 0o020000, 0o060000, 0o140000
SET_FS_MAGIC = 0x50A55E75
"""``f_type`` of the set file system: its own, so no program mistakes it for tmpfs or ext4."""
BLOCK = 4096
ST_RDONLY, ST_NOSUID, ST_NODEV, ST_NOEXEC, ST_VALID, ST_NOATIME = 1, 2, 4, 8, 0x20, 0x400
_MODE = {NodeKind.DIRECTORY: S_IFDIR, NodeKind.FILE: S_IFREG, NodeKind.STREAM: S_IFCHR}
_DTYPE = {NodeKind.DIRECTORY: 4, NodeKind.FILE: 8, NodeKind.STREAM: 2}


class LinuxError(Exception):
    """The call fails with this errno (a normal error return, not a sandbox failure)."""

    def __init__(self, code: int) -> None:
        super().__init__(errno_codes.errorcode.get(code, str(code)))
        self.code = code


def linux_errno(error: VfsError) -> int:
    """The Linux errno for a file-system error."""
    return int(getattr(errno_codes, "E" + error.errno.name))


def signed32(value: int) -> int:
    """A raw register as the kernel reads an ``int`` argument (the upper half ignored)."""
    value &= 0xFFFF_FFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def signed64(value: int) -> int:
    """A raw register as a signed 64-bit value (``off_t``, ``long``)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def file_mode(stat: Stat, writable: bool) -> int:
    """``st_mode``: the kind, and permissions that say what the program may do."""
    if stat.kind is NodeKind.STREAM:
        permissions = 0o666
    elif stat.kind is NodeKind.DIRECTORY:
        permissions = 0o755 if writable else 0o555
    else:
        permissions = 0o644 if writable else 0o444
    return _MODE[stat.kind] | permissions


def stat_record(stat: Stat, writable: bool) -> bytes:
    """``struct stat`` (x86-64) for ``stat``: owner nobody, every time 0."""
    blocks = (stat.size + 511) // 512
    return STAT.pack(DEVICE, stat.inode, stat.links, file_mode(stat, writable), UID, GID, 0, 0,
                     stat.size, BLOCK, blocks, *(0,) * 9)


def statx_record(stat: Stat, writable: bool) -> bytes:
    """``struct statx`` (256 bytes) for ``stat``: the basic fields, every time 0."""
    record = bytearray(256)
    struct.pack_into("<IIQIIIH", record, 0, 0x7FF, BLOCK, 0, stat.links, UID, GID,
                     file_mode(stat, writable))
    struct.pack_into("<QQQ", record, 32, stat.inode, stat.size, (stat.size + 511) // 512)
    struct.pack_into("<II", record, 136, DEVICE >> 8, DEVICE & 0xFF)
    return bytes(record)


def statfs_record(fs: SetFileSystem, writable: bool) -> bytes:
    """``struct statfs`` describing the set file system (never the host's).

    Blocks of 4 KiB count the output limit (free: what the program may still
    write), inodes the files and directories a run may create (free: those it
    has not), names are at most 255 bytes; always ``nosuid``, ``nodev``,
    ``noexec`` and ``noatime`` (no times are kept), ``rdonly`` where the path
    (an input) is read-only.
    """
    free_bytes = max(0, fs.max_output_bytes - fs.output_bytes)
    flags = ST_VALID | ST_NOSUID | ST_NODEV | ST_NOEXEC | ST_NOATIME
    if not writable:
        flags |= ST_RDONLY
    return STATFS.pack(SET_FS_MAGIC, BLOCK, fs.max_output_bytes // BLOCK, free_bytes // BLOCK,
                       free_bytes // BLOCK, fs.max_nodes, max(0, fs.max_nodes - fs.created_nodes),
                       DEVICE, 0, MAX_NAME_BYTES, BLOCK, flags, 0, 0, 0, 0)


class FileState:
    """What the file calls share: the tree, the descriptor table, the working directory.

    ``memory`` is the program's (every pointer argument is read and written
    through it, bounded); ``listings`` holds directory listings being read
    (see :meth:`PathCalls.getdents64`).
    """

    def __init__(self, fs: SetFileSystem, table: DescriptorTable, memory: ProcessMemory) -> None:
        self.fs = fs
        self.table = table
        self.memory = memory
        self.cwd: Directory = fs.root
        self.umask = 0o022
        self.listings: dict[OpenFile, list[tuple[str, Stat]]] = {}
        """Directory listings being read, taken at the first read (see ``getdents64``)."""

    def _path(self, address: int) -> str:
        try:
            raw = self.memory.read_string(address, MAX_PATH_BYTES)
        except ValueError:
            raise LinuxError(errno_codes.ENAMETOOLONG) from None
        if not raw:
            raise LinuxError(errno_codes.ENOENT)
        return decode_path(raw)

    def _base(self, dirfd: int) -> Directory:
        dirfd = signed32(dirfd)
        if dirfd == AT_FDCWD:
            return self.cwd
        return self.table.directory(dirfd)

    def _fd(self, raw: int) -> int:
        fd = signed32(raw)
        if fd < 0 or fd not in self.table:
            raise LinuxError(errno_codes.EBADF)
        return fd

    def _put(self, address: int, data: bytes) -> None:
        self.memory.write(address, data)

    def _node_at(self, dirfd: int, path_address: int, flags: int) -> Node:
        """The node a ``*at`` call names: the path, or ``dirfd`` itself for an empty path
        with ``AT_EMPTY_PATH`` (the working directory for ``AT_FDCWD``)."""
        if flags & AT_EMPTY_PATH:
            raw = self.memory.read_string(path_address, MAX_PATH_BYTES) if path_address else b""
            if not raw:
                if signed32(dirfd) == AT_FDCWD:
                    return self.cwd
                return self.table.get(self._fd(dirfd)).node
        return self.fs.resolve(self._path(path_address), self._base(dirfd))


class PathCalls(FileState):
    """Metadata, listings, the tree, times and the working directory (see the module)."""

    # -- metadata ------------------------------------------------------------------------

    def _stat_at(self, dirfd: int, path_address: int, flags: int) -> tuple[Stat, bool]:
        """Metadata of a path (or, with ``AT_EMPTY_PATH`` and "", of ``dirfd``) and writability."""
        if flags & 0xFFFF_FFFF & ~STAT_FLAGS:
            raise LinuxError(errno_codes.EINVAL)
        if flags & AT_EMPTY_PATH and signed32(dirfd) != AT_FDCWD:
            raw = self.memory.read_string(path_address, MAX_PATH_BYTES) if path_address else b""
            if not raw:  # a descriptor: stdio streams report as character devices
                fd = self._fd(dirfd)
                return self.table.stat(fd), self.table.get(fd).node.writable
        node = self._node_at(dirfd, path_address, flags)
        return stat_node(node), node.writable

    def fstat(self, fd: int, buffer: int) -> int:
        fd = self._fd(fd)
        self._put(buffer, stat_record(self.table.stat(fd), self.table.get(fd).node.writable))
        return 0

    def newfstatat(self, dirfd: int, path_address: int, buffer: int, flags: int) -> int:
        self._put(buffer, stat_record(*self._stat_at(dirfd, path_address, flags)))
        return 0

    def statx(self, dirfd: int, path_address: int, flags: int, mask: int,
              buffer: int) -> int:
        if mask & STATX_RESERVED or flags & AT_STATX_SYNC_TYPE == AT_STATX_SYNC_TYPE:
            raise LinuxError(errno_codes.EINVAL)
        self._put(buffer, statx_record(*self._stat_at(dirfd, path_address, flags)))
        return 0

    def statfs(self, path_address: int, buffer: int) -> int:
        node = self.fs.resolve(self._path(path_address), self.cwd)
        self._put(buffer, statfs_record(self.fs, node.writable))
        return 0

    def fstatfs(self, fd: int, buffer: int) -> int:
        node = self.table.get(self._fd(fd)).node
        self._put(buffer, statfs_record(self.fs, node.writable))
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

    def faccessat(self, dirfd: int, path_address: int, mode: int, flags: int = 0) -> int:
        if mode & 0xFFFF_FFFF & ~7 or flags & 0xFFFF_FFFF & ~ACCESS_FLAGS:  # R_OK|W_OK|X_OK
            raise LinuxError(errno_codes.EINVAL)
        node = self.fs.resolve(self._path(path_address), self._base(dirfd))
        if mode & 2 and not node.writable:  # W_OK
            raise LinuxError(errno_codes.EROFS)
        if mode & 1 and isinstance(node, File):  # X_OK: nothing here is executable
            raise LinuxError(errno_codes.EACCES)
        return 0

    def readlinkat(self, dirfd: int, path_address: int, size: int) -> int:
        if signed32(size) <= 0:
            raise LinuxError(errno_codes.EINVAL)
        self.fs.resolve(self._path(path_address), self._base(dirfd))
        raise LinuxError(errno_codes.EINVAL)  # it exists, and there are no symbolic links

    # -- times: none are kept --------------------------------------------------------------

    def utimensat(self, dirfd: int, path_address: int, times: int, flags: int) -> int:
        """``utimensat``/``futimens``: only a request that changes nothing succeeds."""
        if flags & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH):
            raise LinuxError(errno_codes.EINVAL)
        if times:
            _, nanos_a, _, nanos_m = TIMESPEC_PAIR.unpack(
                self.memory.read(times, TIMESPEC_PAIR.size))
            if nanos_a == UTIME_OMIT and nanos_m == UTIME_OMIT:
                return 0  # as the kernel: nothing to do, and the path is not even looked up
            for nanos in (nanos_a, nanos_m):
                if nanos not in (UTIME_NOW, UTIME_OMIT) and not 0 <= nanos < 1_000_000_000:
                    raise LinuxError(errno_codes.EINVAL)
        if not path_address and signed32(dirfd) != AT_FDCWD:  # futimens(fd, ...)
            if flags:
                raise LinuxError(errno_codes.EINVAL)
            return self._refuse_times(self.table.get(self._fd(dirfd)).node)
        return self._refuse_times(self._node_at(dirfd, path_address, flags))

    def futimesat(self, dirfd: int, path_address: int, times: int) -> int:
        """``futimesat``/``utimes``: a pair of ``struct timeval`` (or NULL for now)."""
        if times:
            _, micros_a, _, micros_m = TIMESPEC_PAIR.unpack(
                self.memory.read(times, TIMESPEC_PAIR.size))
            if not (0 <= micros_a < 1_000_000 and 0 <= micros_m < 1_000_000):
                raise LinuxError(errno_codes.EINVAL)
        if not path_address and signed32(dirfd) != AT_FDCWD:
            return self._refuse_times(self.table.get(self._fd(dirfd)).node)
        return self._refuse_times(self.fs.resolve(self._path(path_address), self._base(dirfd)))

    def utime(self, path_address: int, times: int) -> int:
        """``utime``: a ``struct utimbuf`` (two seconds fields), or NULL for now."""
        if times:
            self.memory.read(times, 16)  # EFAULT as the kernel, before the path
        return self._refuse_times(self.fs.resolve(self._path(path_address), self.cwd))

    @staticmethod
    def _refuse_times(node: Node) -> int:
        # The set file system keeps no times (every time reads 0): claiming to have set one
        # would be a lie. Inputs are a read-only file system, as for writing.
        raise LinuxError(errno_codes.EPERM if node.writable else errno_codes.EROFS)

    # -- the tree --------------------------------------------------------------------------

    def mkdirat(self, dirfd: int, path_address: int) -> int:
        self.fs.mkdir(self._path(path_address), self._base(dirfd))
        return 0

    def mknodat(self, dirfd: int, path_address: int, mode: int) -> int:
        """A regular file (as ``open(O_CREAT|O_EXCL)``); no FIFOs, devices or sockets."""
        kind = mode & S_IFMT
        if kind == S_IFDIR:
            raise LinuxError(errno_codes.EPERM)  # the kernel's answer: mkdir makes directories
        if kind not in (0, S_IFREG, S_IFIFO, S_IFCHR, S_IFBLK, S_IFSOCK):
            raise LinuxError(errno_codes.EINVAL)
        path, base = self._path(path_address), self._base(dirfd)
        if kind not in (0, S_IFREG):
            self.fs.parent_of(path, base)  # a missing parent is still ENOENT
            raise LinuxError(errno_codes.EPERM)  # the set file system has no such nodes
        if path.endswith("/"):
            raise LinuxError(errno_codes.ENOENT if not _exists(self.fs, path, base)
                             else errno_codes.EEXIST)
        self.fs.open(path, base, create=True, exclusive=True, write=True)
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

    # -- the working directory -------------------------------------------------------------

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


def _exists(fs: SetFileSystem, path: str, base: Directory) -> bool:
    try:
        fs.resolve(path.rstrip("/") or "/", base)
    except VfsError:
        return False
    return True
