"""Bounds-checked access to a guest's linear memory.

Every pointer and length a guest passes to a host call is untrusted: each
access checks ``0 <= offset`` and ``offset + length <= memory size`` before
touching memory and raises :class:`Fault` otherwise, which the WASI layer
answers with ``EFAULT``. (The explicit check matters: slicing a memoryview
out of range would silently truncate instead of failing.)

A :class:`GuestMemory` is a memoryview over the instance's memory, used only
inside host calls: no wasm runs during a host call, so the memory cannot grow
or move underneath it (the adapter makes a new view when it has). Access through the view costs
~0.1 µs against ~0.4 µs for ``ctypes.memmove``/``string_at`` per access.
"""

from __future__ import annotations

import ctypes
import functools
import struct

from pappus.vfs import decode_path

U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")
IOVEC = struct.Struct("<II")
MAX_IOVECS = 1024
"""As ``IOV_MAX`` on Linux."""


class Fault(Exception):
    """A guest pointer or length is outside linear memory."""


@functools.lru_cache(maxsize=256)
def _array_type(size: int) -> type[ctypes.Array[ctypes.c_ubyte]]:
    return ctypes.c_ubyte * size


class GuestMemory:
    """A view of one instance's memory, valid for the duration of one host call."""

    __slots__ = ("base", "size", "view")

    def __init__(self, base: int, size: int) -> None:
        self.base = base
        self.size = size
        # cast: ctypes views have format "<B", which slice assignment refuses
        self.view = memoryview(_array_type(size).from_address(base)).cast("B") if (
            base and size) else memoryview(b"")

    def check(self, offset: int, length: int) -> None:
        """Raise :class:`Fault` unless ``[offset, offset+length)`` lies in memory."""
        if offset < 0 or length < 0 or offset + length > self.size:
            raise Fault(f"guest range {offset}+{length} outside memory of {self.size} bytes")

    def read(self, offset: int, length: int) -> bytes:
        """Copy ``length`` bytes out of guest memory."""
        self.check(offset, length)
        return bytes(self.view[offset:offset + length])

    def write(self, offset: int, data: bytes) -> None:
        """Copy ``data`` into guest memory."""
        self.check(offset, len(data))
        self.view[offset:offset + len(data)] = data

    def u32(self, offset: int) -> int:
        """Read a little-endian u32."""
        self.check(offset, 4)
        value: int = U32.unpack_from(self.view, offset)[0]
        return value

    def u64(self, offset: int) -> int:
        """Read a little-endian u64."""
        self.check(offset, 8)
        value: int = U64.unpack_from(self.view, offset)[0]
        return value

    def put_u32(self, offset: int, value: int) -> None:
        """Write a little-endian u32."""
        self.check(offset, 4)
        U32.pack_into(self.view, offset, value & 0xFFFFFFFF)

    def put_u64(self, offset: int, value: int) -> None:
        """Write a little-endian u64."""
        self.check(offset, 8)
        U64.pack_into(self.view, offset, value & 0xFFFFFFFFFFFFFFFF)

    def iovecs(self, offset: int, count: int) -> list[tuple[int, int]]:
        """Read ``count`` (pointer, length) iovecs, each checked against memory."""
        if count < 0 or count > MAX_IOVECS:
            raise Fault(f"iovec count {count} out of range")
        end = offset + count * IOVEC.size
        self.check(offset, end - offset)
        vectors = list(IOVEC.iter_unpack(self.view[offset:end]))
        for pointer, length in vectors:  # both unsigned: only the end can be out of range
            if pointer + length > self.size:
                raise Fault(f"iovec {pointer}+{length} outside memory of {self.size} bytes")
        return vectors

    def path(self, offset: int, length: int) -> str:
        """A guest path (UTF-8, no NUL; see :func:`pappus.vfs.decode_path`)."""
        return decode_path(self.read(offset, length))
