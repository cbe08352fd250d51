"""WASI preview1 descriptor and path calls over :class:`pappus.vfs.DescriptorTable`.

Result pointers are checked before a call acts, so a bad pointer never leaves
a half-done operation (a file created, a position moved) behind an ``EFAULT``.
Calls the file system has no honest answer for (timestamps, links, rights)
return ``ENOTSUP``.
"""

from __future__ import annotations

from pappus.engines.wasm.memory import GuestMemory
from pappus.engines.wasm.wasi_abi import (
    ALL_RIGHTS,
    DIRENT,
    EBADF,
    EINVAL,
    ENOTSUP,
    ESUCCESS,
    FDFLAG_APPEND,
    FDSTAT,
    FILESTAT,
    FILETYPE,
    OFLAG_CREAT,
    OFLAG_DIRECTORY,
    OFLAG_EXCL,
    OFLAG_TRUNC,
    PRESTAT,
    RIGHT_FD_READ,
    RIGHT_FD_WRITE,
    CallTable,
    WasiState,
)
from pappus.vfs import Errno, Stat, VfsError, stat_node

CALLS = CallTable()
wasi = CALLS.register

MAX_TRANSFER = 16 * 1024 * 1024
"""Bytes one read or write call moves at most (a short count; libc loops)."""
ROOT_NAME = b"/"


def _signed(value: int) -> int:
    """An i64 argument arrives as its unsigned bit pattern."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _gather(memory: GuestMemory, iovs: int, count: int) -> bytes:
    vectors = memory.iovecs(iovs, count)
    if len(vectors) == 1:  # what libc stdio mostly sends
        pointer, length = vectors[0]
        return memory.read(pointer, min(length, MAX_TRANSFER))
    chunks: list[bytes] = []
    total = 0
    for pointer, length in vectors:
        take = min(length, MAX_TRANSFER - total)
        chunks.append(memory.read(pointer, take))
        total += take
        if total >= MAX_TRANSFER:
            break
    return b"".join(chunks)


def _scatter(memory: GuestMemory, vectors: list[tuple[int, int]], data: bytes) -> None:
    offset = 0
    for pointer, length in vectors:
        if offset >= len(data):
            break
        memory.write(pointer, data[offset:offset + length])
        offset += length


def _capacity(vectors: list[tuple[int, int]]) -> int:
    return min(sum(length for _, length in vectors), MAX_TRANSFER)


def _filestat(stat: Stat) -> bytes:
    return FILESTAT.pack(0, stat.inode, FILETYPE[stat.kind], stat.links, stat.size, 0, 0, 0)


# -- reading and writing ---------------------------------------------------------------


@wasi("i32", "i32", "i32", "i32")
def fd_write(state: WasiState, memory: GuestMemory, fd: int, iovs: int, count: int,
             written: int) -> int:
    memory.check(written, 4)
    data = _gather(memory, iovs, count)
    memory.put_u32(written, state.table.write(fd, data))
    return ESUCCESS


@wasi("i32", "i32", "i32", "i64", "i32")
def fd_pwrite(state: WasiState, memory: GuestMemory, fd: int, iovs: int, count: int,
              offset: int, written: int) -> int:
    memory.check(written, 4)
    data = _gather(memory, iovs, count)
    memory.put_u32(written, state.table.pwrite(fd, data, _signed(offset)))
    return ESUCCESS


@wasi("i32", "i32", "i32", "i32")
def fd_read(state: WasiState, memory: GuestMemory, fd: int, iovs: int, count: int,
            read: int) -> int:
    memory.check(read, 4)
    vectors = memory.iovecs(iovs, count)
    data = state.table.read(fd, _capacity(vectors))
    _scatter(memory, vectors, data)
    memory.put_u32(read, len(data))
    return ESUCCESS


@wasi("i32", "i32", "i32", "i64", "i32")
def fd_pread(state: WasiState, memory: GuestMemory, fd: int, iovs: int, count: int,
             offset: int, read: int) -> int:
    memory.check(read, 4)
    vectors = memory.iovecs(iovs, count)
    data = state.table.pread(fd, _capacity(vectors), _signed(offset))
    _scatter(memory, vectors, data)
    memory.put_u32(read, len(data))
    return ESUCCESS


@wasi("i32", "i64", "i32", "i32")
def fd_seek(state: WasiState, memory: GuestMemory, fd: int, offset: int, whence: int,
            result: int) -> int:
    memory.check(result, 8)
    memory.put_u64(result, state.table.seek(fd, _signed(offset), whence))
    return ESUCCESS


@wasi("i32", "i32")
def fd_tell(state: WasiState, memory: GuestMemory, fd: int, result: int) -> int:
    memory.check(result, 8)
    memory.put_u64(result, state.table.tell(fd))
    return ESUCCESS


@wasi("i32", "i64")
def fd_filestat_set_size(state: WasiState, memory: GuestMemory, fd: int, size: int) -> int:
    state.table.truncate(fd, _signed(size))
    return ESUCCESS


@wasi("i32", "i64", "i64")
def fd_allocate(state: WasiState, memory: GuestMemory, fd: int, offset: int,
                length: int) -> int:
    start, size = _signed(offset), _signed(length)
    if start < 0 or size <= 0:
        return EINVAL
    if start + size > state.table.stat(fd).size:
        state.table.truncate(fd, start + size)  # refuses streams and read-only files
    else:
        state.table.get(fd)
    return ESUCCESS


# -- descriptors -----------------------------------------------------------------------


@wasi("i32")
def fd_close(state: WasiState, memory: GuestMemory, fd: int) -> int:
    state.table.close(fd)
    return ESUCCESS


@wasi("i32", "i32")
def fd_renumber(state: WasiState, memory: GuestMemory, fd: int, to: int) -> int:
    state.table.get(to)  # WASI (unlike dup2) requires the target to be open
    state.table.renumber(fd, to)
    return ESUCCESS


@wasi("i32")
def fd_sync(state: WasiState, memory: GuestMemory, fd: int) -> int:
    state.table.get(fd)
    return ESUCCESS  # nothing is buffered below us: data is as durable as it gets


@wasi("i32")
def fd_datasync(state: WasiState, memory: GuestMemory, fd: int) -> int:
    state.table.get(fd)
    return ESUCCESS


@wasi("i32", "i64", "i64", "i32")
def fd_advise(state: WasiState, memory: GuestMemory, fd: int, offset: int, length: int,
              advice: int) -> int:
    state.table.get(fd)
    return ESUCCESS if advice <= 5 else EINVAL  # advice is a hint; ignoring it is correct


@wasi("i32", "i32")
def fd_fdstat_get(state: WasiState, memory: GuestMemory, fd: int, result: int) -> int:
    open_file = state.table.get(fd)
    kind = FILETYPE[state.table.stat(fd).kind]
    flags = FDFLAG_APPEND if open_file.append else 0
    memory.write(result, FDSTAT.pack(kind, flags, ALL_RIGHTS, ALL_RIGHTS))
    return ESUCCESS


@wasi("i32", "i32")
def fd_fdstat_set_flags(state: WasiState, memory: GuestMemory, fd: int, flags: int) -> int:
    # Only APPEND changes anything: I/O never blocks and is always synchronous.
    state.table.get(fd).append = bool(flags & FDFLAG_APPEND)
    return ESUCCESS


@wasi("i32", "i32")
def fd_filestat_get(state: WasiState, memory: GuestMemory, fd: int, result: int) -> int:
    memory.write(result, _filestat(state.table.stat(fd)))
    return ESUCCESS


@wasi("i32", "i32")
def fd_prestat_get(state: WasiState, memory: GuestMemory, fd: int, result: int) -> int:
    if not state.is_preopen(fd):
        return EBADF  # how wasi-libc learns where the preopened directories end
    memory.write(result, PRESTAT.pack(0, len(ROOT_NAME)))
    return ESUCCESS


@wasi("i32", "i32", "i32")
def fd_prestat_dir_name(state: WasiState, memory: GuestMemory, fd: int, path: int,
                        length: int) -> int:
    if not state.is_preopen(fd):
        return EBADF
    memory.write(path, ROOT_NAME[:length])
    return ESUCCESS


@wasi("i32", "i32", "i32", "i64", "i32")
def fd_readdir(state: WasiState, memory: GuestMemory, fd: int, buffer: int, length: int,
               cookie: int, used: int) -> int:
    memory.check(buffer, length)
    memory.check(used, 4)
    out = bytearray()
    listing = state.table.list_directory(fd)
    for index in range(min(cookie, len(listing)), len(listing)):
        if len(out) >= length:
            break
        name, stat = listing[index]
        encoded = name.encode()
        out += DIRENT.pack(index + 1, stat.inode, len(encoded), FILETYPE[stat.kind]) + encoded
    # A full buffer tells wasi-libc to call again (with a larger buffer if one entry
    # did not fit), continuing from the last complete entry's d_next.
    memory.write(buffer, bytes(out[:length]))
    memory.put_u32(used, min(len(out), length))
    return ESUCCESS


# -- paths -----------------------------------------------------------------------------


@wasi("i32", "i32", "i32", "i32", "i32", "i64", "i64", "i32", "i32")
def path_open(state: WasiState, memory: GuestMemory, fd: int, dirflags: int, path: int,
              length: int, oflags: int, rights: int, inheriting: int, fdflags: int,
              result: int) -> int:
    memory.check(result, 4)
    base = state.table.directory(fd)
    write = bool(rights & RIGHT_FD_WRITE) and not oflags & OFLAG_DIRECTORY
    opened = state.table.open(
        memory.path(path, length), base, read=bool(rights & RIGHT_FD_READ), write=write,
        create=bool(oflags & OFLAG_CREAT), exclusive=bool(oflags & OFLAG_EXCL),
        truncate=bool(oflags & OFLAG_TRUNC), directory=bool(oflags & OFLAG_DIRECTORY),
        append=bool(fdflags & FDFLAG_APPEND))
    memory.put_u32(result, opened)
    return ESUCCESS


@wasi("i32", "i32", "i32", "i32", "i32")
def path_filestat_get(state: WasiState, memory: GuestMemory, fd: int, flags: int, path: int,
                      length: int, result: int) -> int:
    memory.check(result, FILESTAT.size)
    node = state.fs.resolve(memory.path(path, length), state.table.directory(fd))
    memory.write(result, _filestat(stat_node(node)))
    return ESUCCESS


@wasi("i32", "i32", "i32")
def path_create_directory(state: WasiState, memory: GuestMemory, fd: int, path: int,
                          length: int) -> int:
    state.fs.mkdir(memory.path(path, length), state.table.directory(fd))
    return ESUCCESS


@wasi("i32", "i32", "i32")
def path_unlink_file(state: WasiState, memory: GuestMemory, fd: int, path: int,
                     length: int) -> int:
    state.fs.unlink(memory.path(path, length), state.table.directory(fd))
    return ESUCCESS


@wasi("i32", "i32", "i32")
def path_remove_directory(state: WasiState, memory: GuestMemory, fd: int, path: int,
                          length: int) -> int:
    state.fs.rmdir(memory.path(path, length), state.table.directory(fd))
    return ESUCCESS


@wasi("i32", "i32", "i32", "i32", "i32", "i32")
def path_rename(state: WasiState, memory: GuestMemory, fd: int, old: int, old_length: int,
                new_fd: int, new: int, new_length: int) -> int:
    state.fs.rename(memory.path(old, old_length), memory.path(new, new_length),
                    state.table.directory(fd), state.table.directory(new_fd))
    return ESUCCESS


@wasi("i32", "i32", "i32", "i32", "i32", "i32")
def path_readlink(state: WasiState, memory: GuestMemory, fd: int, path: int, length: int,
                  buffer: int, buffer_length: int, used: int) -> int:
    state.fs.resolve(memory.path(path, length), state.table.directory(fd))
    raise VfsError(Errno.INVAL)  # it exists and, as nothing here is, is not a symlink


def _refuse(name: str, *params: str) -> None:
    def refuse(state: WasiState, memory: GuestMemory, *args: int) -> int:
        return ENOTSUP

    refuse.__name__ = name
    wasi(*params)(refuse)


for _name, _params in {
    "fd_fdstat_set_rights": ("i32", "i64", "i64"),
    "fd_filestat_set_times": ("i32", "i64", "i64", "i32"),
    "path_filestat_set_times": ("i32", "i32", "i32", "i32", "i64", "i64", "i32"),
    "path_link": ("i32",) * 7,
    "path_symlink": ("i32",) * 5,
}.items():
    _refuse(_name, *_params)  # no timestamps, links or per-descriptor rights here
