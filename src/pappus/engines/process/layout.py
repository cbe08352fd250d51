"""Dandelion's context layout: write a function's inputs in, read its outputs back out.

A *context* is the function's whole address space, ``[0, size)``, where
context offset == virtual address (reference §4.2). Shared by the ``process``
engine and, later, ``kvm``. Layout, bottom up::

    [0, 0x10000)            engine-private (runner parameters); never mapped for the function
    [0x10000, image.end)    the static image: PT_LOAD segments, bss zero
    ...                     input items, each 128-byte aligned
    ...                     names (not NUL-terminated), then the descriptor arrays
    heap_begin .. heap_end  the function's heap (heap_end = size - 128)
    ... size - 32           initial stack pointer (the stack grows down into the heap)
    [size - 32, size)       engine report area (above the stack)

Everything read back is untrusted: :func:`read_outputs` checks every pointer,
length and count against the context before using it and reports the first
violation as :class:`~pappus.errors.BadOutput` naming it.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pappus.engines.process.elf import FUNCTION_BASE, FunctionImage
from pappus.errors import BadOutput, OutOfMemory
from pappus.model import MAX_KEY, DataSet, Item

CONTEXT_ALIGNMENT = 1 << 20
"""Context sizes are rounded up to 1 MiB, as Dandelion's ``mmu`` engine does."""
MAX_CONTEXT_SIZE = 16 << 30
ITEM_ALIGNMENT = 128
STACK_OFFSET = 32
HEAP_END_OFFSET = 128
MIN_FREE_BYTES = 64 << 10
"""Heap and stack a function gets at least; fewer left after the inputs is out of memory."""
MAX_OUTPUT_ITEMS = 1_000_000

SYSTEM_DATA = struct.Struct("<i4xQQQQQQQQ")  # exit_code, heap_begin, heap_end, sets, bufs...
SET_INFO = struct.Struct("<QQQ")  # ident, ident_len, offset
BUFFER = struct.Struct("<QQQQQ")  # ident, ident_len, data, data_len, key
INITIAL_EXIT_CODE = -1


def context_size_for(requested: int) -> int:
    """``requested`` bytes rounded up to whole MiB; :class:`OutOfMemory` beyond the maximum."""
    size = (requested + CONTEXT_ALIGNMENT - 1) // CONTEXT_ALIGNMENT * CONTEXT_ALIGNMENT
    if size > MAX_CONTEXT_SIZE:
        raise OutOfMemory(f"a context of {requested} bytes exceeds the maximum of "
                          f"{MAX_CONTEXT_SIZE} bytes", memory_bytes=requested)
    return size


def bounded_context_size(function: str, requested: int | None, memory_bytes: int) -> int:
    """The context for one invocation: the function's own size, or the memory bound's.

    A function that asks for more than its memory bound allows is ``out_of_memory``.
    """
    bound = context_size_for(memory_bytes)
    size = context_size_for(requested) if requested is not None else bound
    if size > bound:
        raise OutOfMemory(f"{function!r} asks for a {size}-byte context, more than its memory "
                          f"bound of {memory_bytes} bytes", memory_bytes=memory_bytes)
    return size


def image_bytes(image: FunctionImage) -> bytes:
    """The file-backed part of the image: ``[FUNCTION_BASE, end of the last file bytes)``.

    It also covers the system data (which the engine fills in, even if it is
    in bss). Zero-filled memory beyond it (bss) is not materialised: the
    context starts zeroed, so a binary claiming a huge bss costs nothing here.
    """
    end = max([s.address + len(s.data) for s in image.segments]
              + [image.system_data_address + SYSTEM_DATA.size])
    buffer = bytearray(end - FUNCTION_BASE)
    for segment in image.segments:
        start = segment.address - FUNCTION_BASE
        buffer[start:start + len(segment.data)] = segment.data
    return bytes(buffer)


@dataclass(frozen=True, slots=True)
class Context:
    """A context ready to map: ``image`` belongs at ``FUNCTION_BASE`` and ``inputs`` at
    ``inputs_address``; everything else is zero."""

    size: int
    image: bytes
    inputs_address: int
    inputs: bytes
    output_sets_address: int
    heap_begin: int


class _Writer:
    """Appends objects from ``start`` on, tracking their addresses."""

    def __init__(self, start: int) -> None:
        self.start = start
        self.buffer = bytearray()

    @property
    def address(self) -> int:
        return self.start + len(self.buffer)

    def put(self, data: bytes, alignment: int) -> int:
        if not data:
            return 0
        padding = -self.address % alignment
        self.buffer += bytes(padding)
        address = self.address
        self.buffer += data
        return address


def build_context(image: FunctionImage, static: bytes, inputs: Sequence[DataSet | None], *,
                  input_names: Sequence[str], output_names: Sequence[str],
                  size: int) -> Context:
    """Lay out ``inputs`` after the image and fill in the system data (reference §4.2).

    ``static`` is :func:`image_bytes` of ``image``.
    """
    if image.end + MIN_FREE_BYTES + HEAP_END_OFFSET > size:
        raise OutOfMemory(f"the {image.end - FUNCTION_BASE}-byte image does not fit a "
                          f"{size}-byte context with room for heap and stack; raise the memory "
                          "bound", memory_bytes=size)
    writer = _Writer(image.end)
    buffers: list[bytes] = []
    offsets: list[int] = []
    item_positions: list[tuple[int, int, int]] = []  # data address, length, key
    for data_set in inputs:
        offsets.append(len(item_positions))
        for item in data_set.items if data_set is not None else ():
            item_positions.append((writer.put(item.data, ITEM_ALIGNMENT), len(item.data), item.key))
    total_items = len(item_positions)

    def name(text: str) -> tuple[int, int]:
        encoded = text.encode()
        return writer.put(encoded, 1), len(encoded)

    input_set_names = [name(set_name) if data_set is not None else (0, 0)
                       for set_name, data_set in zip(input_names, inputs, strict=True)]
    item_names = [name(item.name) for data_set in inputs if data_set is not None
                  for item in data_set.items]
    output_set_names = [name(set_name) for set_name in output_names]
    input_sets = b"".join(SET_INFO.pack(*ident, offset)
                          for ident, offset in zip(input_set_names, offsets, strict=True))
    input_sets += SET_INFO.pack(0, 0, total_items)
    output_sets = b"".join(SET_INFO.pack(*ident, 0) for ident in output_set_names)
    output_sets += SET_INFO.pack(0, 0, 0)
    for (data_address, length, key), (ident, ident_len) in zip(item_positions, item_names,
                                                               strict=True):
        buffers.append(BUFFER.pack(ident, ident_len, data_address, length, key))
    input_sets_address = writer.put(input_sets, 8)
    output_sets_address = writer.put(output_sets, 8)
    input_bufs_address = writer.put(b"".join(buffers), 8)
    heap_begin = writer.address
    heap_end = size - HEAP_END_OFFSET
    if heap_begin + MIN_FREE_BYTES > heap_end:
        raise OutOfMemory(f"the inputs need {heap_begin - image.end} bytes after the "
                          f"{image.end - FUNCTION_BASE}-byte image, which leaves less than "
                          f"{MIN_FREE_BYTES} bytes of a {size}-byte context for heap and stack; "
                          "raise the memory bound", memory_bytes=size)
    system_data = SYSTEM_DATA.pack(INITIAL_EXIT_CODE, heap_begin, heap_end, len(inputs),
                                   input_sets_address, len(output_names), output_sets_address,
                                   input_bufs_address, 0)
    offset = image.system_data_address - FUNCTION_BASE
    patched = bytearray(static)
    patched[offset:offset + SYSTEM_DATA.size] = system_data
    return Context(size, bytes(patched), image.end, bytes(writer.buffer), output_sets_address,
                   heap_begin)


Reader = Callable[[int, int], bytes]
"""Reads ``length`` bytes at a context address (the caller has bounds-checked them)."""


class _Checked:
    """Bounds-checked reads of the function-visible part of a context."""

    def __init__(self, read: Reader, size: int) -> None:
        self._read = read
        self.size = size

    def read(self, address: int, length: int, what: str) -> bytes:
        if length == 0:
            return b""
        if address < FUNCTION_BASE or length < 0 or address + length > self.size:
            raise BadOutput(f"{what} points outside the context: {length} bytes at {address:#x}, "
                            f"context [{FUNCTION_BASE:#x}, {self.size:#x})")
        return self._read(address, length)


@dataclass(frozen=True, slots=True)
class SystemData:
    """The two system-data fields read back after a run."""

    exit_code: int
    output_bufs: int


def read_system_data(read: Reader, image: FunctionImage) -> SystemData:
    """The function's ``exit_code`` and ``output_bufs`` (the struct lies inside the image)."""
    fields = SYSTEM_DATA.unpack(read(image.system_data_address, SYSTEM_DATA.size))
    return SystemData(fields[0], fields[8])


def read_outputs(read: Reader, context: Context, system_data: SystemData,
                 output_names: Sequence[str], max_output_bytes: int) -> tuple[DataSet, ...]:
    """The output sets the function described (reference §4.2 step 5), every value checked.

    The set descriptors are read from where the engine put them (the function
    only fills in their offsets); ``output_bufs`` comes from the system data.
    """
    checked = _Checked(read, context.size)
    output_bufs = system_data.output_bufs
    count = len(output_names)
    infos = checked.read(context.output_sets_address, SET_INFO.size * (count + 1),
                         "output set descriptors")
    offsets = [SET_INFO.unpack_from(infos, SET_INFO.size * i)[2] for i in range(count + 1)]
    total = offsets[-1]
    if total > MAX_OUTPUT_ITEMS:
        raise BadOutput(f"the function claims {total} output items; at most "
                        f"{MAX_OUTPUT_ITEMS} are allowed", items=total)
    if offsets[0] != 0 or any(a > b for a, b in itertools.pairwise(offsets)):
        raise BadOutput(f"output set offsets {offsets[:8]} are not ascending from 0",
                        offsets=offsets[:8])
    if total == 0:
        return tuple(DataSet(set_name, ()) for set_name in output_names)
    table = checked.read(output_bufs, BUFFER.size * total, "output_bufs")
    budget = max_output_bytes
    sets: list[DataSet] = []
    for index, set_name in enumerate(output_names):
        items: list[Item] = []
        for position in range(offsets[index], offsets[index + 1]):
            ident, ident_len, data, data_len, key = BUFFER.unpack_from(
                table, BUFFER.size * position)
            where = f"output item {position} of set {set_name!r}"
            if data_len + ident_len > budget:
                raise BadOutput(f"{where} claims {data_len} bytes (name {ident_len}); the outputs "
                                f"may total {max_output_bytes} bytes",
                                max_output_bytes=max_output_bytes)
            budget -= data_len + ident_len
            if key > MAX_KEY:
                raise BadOutput(f"{where} has key {key}, beyond 2^32 - 1")
            # As in Dandelion, item names are read only for named sets.
            raw_name = checked.read(ident, ident_len, f"the name of {where}") if set_name else b""
            items.append(Item(raw_name.decode("utf-8", "replace"), key,
                              checked.read(data, data_len, f"the data of {where}")))
        sets.append(DataSet(set_name, tuple(items)))
    return tuple(sets)
