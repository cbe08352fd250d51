"""The WASI preview1 layer called directly (no wasm): struct layouts, errno mapping, the calls
C programs rarely reach (readdir continuation, poll, renumber, allocate, readlink...)."""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Iterator

import pytest

from pappus.engines.wasm import wasi
from pappus.engines.wasm.memory import GuestMemory
from pappus.engines.wasm.wasi_abi import DIRENT, EVENT, FILESTAT, SUBSCRIPTION, WASI_ERRNO
from pappus.model import DataSet, Item
from pappus.vfs import Errno, SetFileSystem

PREVIEW1 = {
    "args_get", "args_sizes_get", "environ_get", "environ_sizes_get", "clock_res_get",
    "clock_time_get", "fd_advise", "fd_allocate", "fd_close", "fd_datasync", "fd_fdstat_get",
    "fd_fdstat_set_flags", "fd_fdstat_set_rights", "fd_filestat_get", "fd_filestat_set_size",
    "fd_filestat_set_times", "fd_pread", "fd_prestat_get", "fd_prestat_dir_name", "fd_pwrite",
    "fd_read", "fd_readdir", "fd_renumber", "fd_seek", "fd_sync", "fd_tell", "fd_write",
    "path_create_directory", "path_filestat_get", "path_filestat_set_times", "path_link",
    "path_open", "path_readlink", "path_remove_directory", "path_rename", "path_symlink",
    "path_unlink_file", "poll_oneoff", "proc_exit", "proc_raise", "sched_yield", "random_get",
    "sock_accept", "sock_recv", "sock_send", "sock_shutdown",
}
EBADF, EINVAL, ENOENT, ENOTSUP, ESPIPE = 8, 28, 44, 58, 70


class Guest:
    """A WASI state over a fake 64 KiB linear memory, calling the layer like wasm would."""

    def __init__(self, buffer: ctypes.Array[ctypes.c_char], fs: SetFileSystem) -> None:
        self.buffer = buffer
        self.memory = GuestMemory(ctypes.addressof(buffer), len(buffer))
        self.state = wasi.new_state(fs)

    @property
    def host_state(self) -> object:  # what the adapter's InvocationContext offers
        return self.state

    def guest_memory(self) -> GuestMemory:
        return self.memory

    def __call__(self, name: str, *args: int) -> int:
        _, impl = wasi.CALLS[name]
        return wasi._host(name, impl)(self, *args)

    def put(self, offset: int, data: bytes) -> int:
        self.memory.write(offset, data)
        return len(data)

    def get(self, offset: int, length: int) -> bytes:
        return self.memory.read(offset, length)


@pytest.fixture
def guest() -> Iterator[Guest]:
    buffer = ctypes.create_string_buffer(65536)
    fs = SetFileSystem({"in": DataSet("in", (Item("a", 1, b"abc"), Item("bb", 2, b"")))},
                       ("out",), 1 << 20)
    yield Guest(buffer, fs)


def test_every_preview1_call_is_defined() -> None:
    assert set(wasi.known_calls()) == PREVIEW1
    assert wasi.signature("proc_exit") == (["i32"], [])
    assert wasi.signature("fd_seek") == (["i32", "i64", "i32", "i32"], ["i32"])
    assert set(WASI_ERRNO) == set(Errno)  # every file-system error has a WASI number


def test_readdir_continues_where_a_small_buffer_stopped(guest: Guest) -> None:
    fd_in = 100
    assert guest("path_open", 3, 0, 200, guest.put(200, b"in"), 2, 0, 0, 0, fd_in) == 0
    fd = guest.memory.u32(fd_in)
    names: list[bytes] = []
    cookie = 0
    while True:
        # a 30-byte buffer holds one 24-byte header and at most a 6-byte name
        assert guest("fd_readdir", fd, 1000, 30, cookie, 8) == 0
        used = guest.memory.u32(8)
        raw = guest.get(1000, used)
        if used < DIRENT.size:
            break
        next_cookie, inode, length, kind = DIRENT.unpack_from(raw)
        if DIRENT.size + length > used:  # truncated entry: wasi-libc retries bigger
            assert guest("fd_readdir", fd, 2000, 1000, cookie, 8) == 0
            raw = guest.get(2000, guest.memory.u32(8))
            next_cookie, inode, length, kind = DIRENT.unpack_from(raw)
        names.append(raw[DIRENT.size:DIRENT.size + length])
        assert inode > 0 and kind in (3, 4)
        cookie = next_cookie
    assert names == [b".", b"..", b"a", b"bb"]


def test_filestat_and_prestat_layouts(guest: Guest) -> None:
    assert guest("path_filestat_get", 3, 0, 200, guest.put(200, b"in/a"), 300) == 0
    _, _, kind, links, size, *times = FILESTAT.unpack(guest.get(300, FILESTAT.size))
    assert (kind, links, size, times) == (4, 1, 3, [0, 0, 0])
    assert guest("fd_prestat_get", 3, 400) == 0
    assert guest.get(400, 8) == b"\0\0\0\0\x01\0\0\0"  # directory, name length 1
    assert guest("fd_prestat_dir_name", 3, 410, 1) == 0
    assert guest.get(410, 1) == b"/"
    assert guest("fd_prestat_get", 4, 400) == EBADF
    assert guest("fd_fdstat_get", 1, 500) == 0
    assert guest.get(500, 1) == b"\x02"  # stdout is a character device


def test_readlink_link_and_times(guest: Guest) -> None:
    assert guest("path_readlink", 3, 200, guest.put(200, b"in/a"), 300, 10, 8) == EINVAL
    assert guest("path_readlink", 3, 200, guest.put(200, b"in/zz"), 300, 10, 8) == ENOENT
    assert guest("path_symlink", 200, 1, 3, 210, 1) == ENOTSUP
    assert guest("fd_filestat_set_times", 3, 0, 0, 0) == ENOTSUP


def test_renumber_allocate_and_positional_io(guest: Guest) -> None:
    path = guest.put(200, b"out/f")
    assert guest("path_open", 3, 0, 200, path, 1, (1 << 1) | (1 << 6), 0, 0, 100) == 0
    fd = guest.memory.u32(100)
    assert guest("fd_allocate", fd, 0, 5) == 0
    assert guest("fd_allocate", 1, 0, 5) == EINVAL  # not on a stream
    guest.put(0, struct.pack("<II", 300, guest.put(300, b"XY")))
    assert guest("fd_pwrite", fd, 0, 1, 2, 8) == 0
    assert guest("fd_tell", fd, 16) == 0 and guest.memory.u64(16) == 0
    assert guest("fd_renumber", fd, 2) == 0  # now stderr is the file
    assert guest("fd_renumber", 2, 77) == EBADF  # WASI: the target must be open
    guest.put(0, struct.pack("<II", 400, 10))
    assert guest("fd_pread", 2, 0, 1, 0, 8) == 0
    assert guest.get(400, guest.memory.u32(8)) == b"\0\0XY\0"
    assert guest("fd_seek", 0, 0, 0, 16) == ESPIPE
    assert guest("fd_close", fd) == EBADF  # moved away


def test_poll_oneoff_sleeps_on_the_logical_clock(guest: Guest) -> None:
    assert guest("clock_time_get", 1, 0, 16) == 0
    before = guest.memory.u64(16)
    relative = SUBSCRIPTION.pack(7, 0, 1, 5_000_000, 0, 0)
    absolute = SUBSCRIPTION.pack(8, 0, 1, before + 9_000_000, 0, 1)
    guest.put(1000, relative + absolute)
    assert guest("poll_oneoff", 1000, 2000, 2, 8) == 0
    assert guest.memory.u32(8) == 1  # the earliest clock fired
    assert EVENT.unpack(guest.get(2000, EVENT.size))[:3] == (7, 0, 0)
    assert guest("clock_time_get", 0, 0, 16) == 0
    assert guest.memory.u64(16) >= before + 5_000_000
    ready = SUBSCRIPTION.pack(9, 1, 0, 0, 0, 0)  # fd 0 readable: at once, no sleep
    closed = SUBSCRIPTION.pack(10, 2, 99, 0, 0, 0)
    guest.put(1000, ready + closed + absolute)
    assert guest("poll_oneoff", 1000, 2000, 3, 8) == 0
    events = [EVENT.unpack_from(guest.get(2000, 3 * EVENT.size), i * EVENT.size)[:3]
              for i in range(guest.memory.u32(8))]
    assert events == [(9, 0, 1), (10, EBADF, 2)]
    assert guest("clock_res_get", 0, 16) == 0 and guest.memory.u64(16) == 1000
