"""WASI preview1 numbers and layouts, the per-invocation state and the call table.

The numbers follow ``wasi_snapshot_preview1.witx`` (errno, filetype, flags)
and the C layouts of wasi-libc's ``<wasi/api.h>`` (structs below, all
little-endian).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from pappus.engines.wasm.memory import GuestMemory
from pappus.vfs import DescriptorTable, Errno, NodeKind, OpenFile, SetFileSystem

MODULE = "wasi_snapshot_preview1"

ESUCCESS, EBADF, EFAULT, EINVAL, ENOSYS, ENOTSUP = 0, 8, 21, 28, 52, 58
WASI_ERRNO: dict[Errno, int] = {
    Errno.ACCES: 2, Errno.BADF: 8, Errno.EXIST: 20, Errno.FBIG: 22, Errno.ILSEQ: 25,
    Errno.INVAL: 28, Errno.ISDIR: 31, Errno.MFILE: 33, Errno.NAMETOOLONG: 37,
    Errno.NOENT: 44, Errno.NOSPC: 51, Errno.NOTDIR: 54, Errno.NOTEMPTY: 55,
    Errno.ROFS: 69, Errno.SPIPE: 70,
}
FILETYPE = {NodeKind.STREAM: 2, NodeKind.DIRECTORY: 3, NodeKind.FILE: 4}
OFLAG_CREAT, OFLAG_DIRECTORY, OFLAG_EXCL, OFLAG_TRUNC = 1, 2, 4, 8
FDFLAG_APPEND = 1
RIGHT_FD_READ, RIGHT_FD_WRITE = 1 << 1, 1 << 6
ALL_RIGHTS = (1 << 29) - 1
"""Rights are advisory in preview1 (and dropped in preview2); we report them all."""

DIRENT = struct.Struct("<QQIB3x")  # d_next, d_ino, d_namlen, d_type
FILESTAT = struct.Struct("<QQB7xQQQQQ")  # dev, ino, filetype, nlink, size, atim, mtim, ctim
FDSTAT = struct.Struct("<BxHxxxxQQ")  # filetype, flags, rights base, rights inheriting
PRESTAT = struct.Struct("<B3xI")  # tag (0 = directory), name length
SUBSCRIPTION = struct.Struct("<QB7xIxxxxQQH6x")  # userdata, tag, clock id/fd, timeout, ...
EVENT = struct.Struct("<QHB5xQH6x")  # userdata, error, type, nbytes, flags

PREOPEN_FD = 3
"""wasi-libc learns its root from the preopened directory: fd 3, named ``/``."""
CLOCK_READ_STEP_NS = 1_000
"""Each clock read advances the invocation's logical clock by 1 µs (see :mod:`.wasi_process`)."""


class ProcExit(Exception):
    """Raised by ``proc_exit`` to unwind the guest with an exit code."""

    def __init__(self, code: int) -> None:
        super().__init__(f"proc_exit({code})")
        self.code = code


class HostCallFailed(Exception):
    """A host call raised something unexpected: a pappus bug, reported as a crash."""

    def __init__(self, name: str, error: BaseException) -> None:
        super().__init__(f"host call {name} failed: {type(error).__name__}: {error}")
        self.call = name


@dataclass(eq=False)
class WasiState:
    """Everything one invocation's WASI calls share."""

    fs: SetFileSystem
    table: DescriptorTable
    clock_ns: int = 0
    host_calls: int = 0


    @classmethod
    def create(cls, fs: SetFileSystem) -> WasiState:
        """Descriptors 0 to 2 are the standard streams, 3 the preopened root ``/``."""
        table = DescriptorTable.with_standard_streams(fs)
        table.install(OpenFile(fs.root, readable=False, writable=False), PREOPEN_FD)
        return cls(fs, table)

    def is_preopen(self, fd: int) -> bool:
        """Whether ``fd`` is still the preopened root."""
        return fd == PREOPEN_FD and fd in self.table and self.table.get(fd).node is self.fs.root


HostImpl = Callable[..., int]
"""``impl(state, memory, *args) -> errno`` (arguments as unsigned integers)."""


class CallTable:
    """The preview1 calls one module of the layer implements: name → (param types, impl)."""

    def __init__(self) -> None:
        self.calls: dict[str, tuple[list[str], HostImpl]] = {}

    def register(self, *params: str) -> Callable[[HostImpl], HostImpl]:
        """Decorator: implement the call named like the function, with these wasm params."""

        def add(impl: HostImpl) -> HostImpl:
            self.calls[impl.__name__] = (list(params), impl)
            return impl

        return add


def put_sizes(memory: GuestMemory, strings: list[bytes], count: int, size: int) -> None:
    """``args_sizes_get``/``environ_sizes_get``: the count and the NUL-terminated total."""
    memory.check(count, 4)
    memory.put_u32(size, sum(len(s) + 1 for s in strings))
    memory.put_u32(count, len(strings))


def put_strings(memory: GuestMemory, strings: list[bytes], pointers: int, buffer: int) -> None:
    """``args_get``/``environ_get``: NUL-terminated strings and a pointer array."""
    memory.check(pointers, 4 * len(strings))
    memory.check(buffer, sum(len(s) + 1 for s in strings))
    offset = buffer
    for index, value in enumerate(strings):
        memory.put_u32(pointers + 4 * index, offset)
        memory.write(offset, value + b"\0")
        offset += len(value) + 1
