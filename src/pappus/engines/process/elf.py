"""Validate a Dandelion-ABI ELF function once, at registration, and extract its static image.

The binary is untrusted: every offset, size and count is checked against the
file and the address space before use, and every refusal is an
:class:`~pappus.errors.InvalidBinary` naming the problem and, where there is
one, the fix. What is accepted (reference: Dandelion's loader, tightened):

* ELF64, little-endian, x86-64, ``ET_EXEC`` (not PIE: the ABI's addresses are
  context offsets, so the binary must be linked at fixed addresses);
* no ``PT_INTERP``/``PT_DYNAMIC`` (statically linked, nothing to relocate);
* ``PT_LOAD`` segments inside ``[0x10000, MAX_IMAGE_END)``, ``p_filesz <=
  p_memsz``, file ranges inside the file, no two segments sharing a page
  (their protections could not both hold), none writable and executable;
* the entry point inside an executable segment;
* the symbol ``__dandelion_system_data`` (exact name; the struct is 72 bytes)
  inside a writable segment, 8-byte aligned.

A small parser over :mod:`struct` rather than a general ELF library: we need
a dozen fields, each with a security check, and precise messages for hostile
files; a general parser's exceptions on malformed input are not a contract.
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass

from pappus.errors import InvalidBinary

FUNCTION_BASE = 0x10000
"""Lowest address a function may use; the context's first 64 KiB hold runner parameters."""
MAX_IMAGE_END = 1 << 32
"""Highest end of a static image (4 GiB): far more than any real function needs."""
PAGE = 4096
SYSTEM_DATA_SYMBOL = b"__dandelion_system_data"
SYSTEM_DATA_SIZE = 72
MAX_PROGRAM_HEADERS = 64
MAX_SYMBOLS = 1 << 20

PF_X, PF_W, PF_R = 1, 2, 4
PT_LOAD, PT_DYNAMIC, PT_INTERP = 1, 2, 3
SHT_SYMTAB = 2
ET_EXEC, ET_DYN = 2, 3
EM_X86_64 = 62

_HEADER = struct.Struct("<16sHHIQQQIHHHHHH")
_PROGRAM_HEADER = struct.Struct("<IIQQQQQQ")
_SECTION_HEADER = struct.Struct("<IIQQQQIIQQ")
_SYMBOL = struct.Struct("<IBBHQQ")

_BUILD_HINT = "build it with `pappus sdk build fn.c -o fn`"


@dataclass(frozen=True, slots=True)
class Segment:
    """One ``PT_LOAD`` segment: where it goes, what the file provides, how it is protected."""

    address: int
    memory_size: int
    data: bytes
    readable: bool
    writable: bool
    executable: bool

    @property
    def end(self) -> int:
        return self.address + self.memory_size

    @property
    def page_range(self) -> tuple[int, int]:
        """The pages the segment touches: ``[first, end)``, page aligned."""
        return self.address & ~(PAGE - 1), _round_up(self.end, PAGE)


@dataclass(frozen=True, slots=True)
class FunctionImage:
    """A validated function: its segments, entry point and system-data address."""

    segments: tuple[Segment, ...]
    entry: int
    system_data_address: int
    end: int = 0
    """First address after the static image, page aligned (where inputs may start)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "end", max(s.page_range[1] for s in self.segments))


def _round_up(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment


def _refuse(reason: str) -> InvalidBinary:
    return InvalidBinary(f"not a valid process-engine function: {reason}", engine="process")


def load_image(binary: bytes) -> FunctionImage:
    """Validate ``binary`` and return its image; raise :class:`InvalidBinary` otherwise."""
    if len(binary) < _HEADER.size or binary[:4] != b"\x7fELF":
        raise _refuse("not an ELF file (no \\x7fELF magic)")
    (ident, e_type, e_machine, _version, entry, phoff, shoff, _flags, _ehsize, phentsize,
     phnum, shentsize, shnum, _shstrndx) = _HEADER.unpack_from(binary)
    if ident[4] != 2 or ident[5] != 1:
        raise _refuse("not a 64-bit little-endian ELF file; the process engine runs x86-64")
    if e_machine != EM_X86_64:
        raise _refuse(f"machine {e_machine} is not x86-64 (62)")
    if e_type == ET_DYN:
        raise _refuse("position-independent (PIE or shared object); link at 0x10000 "
                      f"with -no-pie, or {_BUILD_HINT}")
    if e_type != ET_EXEC:
        raise _refuse(f"ELF type {e_type} is not an executable")
    segments = _load_segments(binary, phoff, phentsize, phnum)
    if not any(s.executable and s.address <= entry < s.end for s in segments):
        raise _refuse(f"entry point {entry:#x} is not inside an executable segment")
    address = _find_system_data(binary, shoff, shentsize, shnum)
    if address % 8 or not any(s.writable and s.address <= address and
                              address + SYSTEM_DATA_SIZE <= s.end for s in segments):
        raise _refuse(f"__dandelion_system_data at {address:#x} is not an aligned 72-byte "
                      "object inside a writable segment")
    return FunctionImage(tuple(segments), entry, address)


def _load_segments(binary: bytes, phoff: int, phentsize: int, phnum: int) -> list[Segment]:
    if phentsize != _PROGRAM_HEADER.size:
        raise _refuse(f"program header size {phentsize} is not {_PROGRAM_HEADER.size}")
    if not 0 < phnum <= MAX_PROGRAM_HEADERS:
        raise _refuse(f"{phnum} program headers (expected 1 to {MAX_PROGRAM_HEADERS})")
    if phoff + phnum * phentsize > len(binary):
        raise _refuse("program headers run past the end of the file (truncated?)")
    segments: list[Segment] = []
    for index in range(phnum):
        (p_type, p_flags, p_offset, p_vaddr, _paddr, p_filesz, p_memsz,
         _align) = _PROGRAM_HEADER.unpack_from(binary, phoff + index * phentsize)
        if p_type in (PT_INTERP, PT_DYNAMIC):
            raise _refuse(f"dynamically linked (program header {index}); link statically, or "
                          f"{_BUILD_HINT}")
        if p_type != PT_LOAD or p_memsz == 0:
            continue
        where = f"segment {index} ({p_vaddr:#x}+{p_memsz:#x})"
        if p_filesz > p_memsz:
            raise _refuse(f"{where}: file size {p_filesz:#x} exceeds memory size")
        if p_offset + p_filesz > len(binary):
            raise _refuse(f"{where}: its bytes run past the end of the file (truncated?)")
        if p_vaddr < FUNCTION_BASE or p_vaddr + p_memsz > MAX_IMAGE_END:
            raise _refuse(f"{where} lies outside [{FUNCTION_BASE:#x}, {MAX_IMAGE_END:#x}); "
                          f"functions are linked at 0x10000: {_BUILD_HINT}")
        if p_flags & PF_W and p_flags & PF_X:
            raise _refuse(f"{where} is both writable and executable")
        segments.append(Segment(p_vaddr, p_memsz, bytes(binary[p_offset:p_offset + p_filesz]),
                                bool(p_flags & PF_R), bool(p_flags & PF_W),
                                bool(p_flags & PF_X)))
    if not segments:
        raise _refuse("no loadable segment")
    ordered = sorted(segments, key=lambda s: s.address)
    for before, after in itertools.pairwise(ordered):
        if before.page_range[1] > after.page_range[0]:
            raise _refuse(f"segments at {before.address:#x} and {after.address:#x} overlap or "
                          "share a page")
    return ordered


def _find_system_data(binary: bytes, shoff: int, shentsize: int, shnum: int) -> int:
    try:
        found = symbol_values(binary, shoff, shentsize, shnum, {SYSTEM_DATA_SYMBOL})
    except ValueError as exc:
        raise _refuse(str(exc)) from None
    if SYSTEM_DATA_SYMBOL not in found:
        raise _refuse("no __dandelion_system_data symbol (was the binary stripped, or not "
                      f"built against the SDK?); {_BUILD_HINT}")
    return found[SYSTEM_DATA_SYMBOL]


def symbol_values(binary: bytes, shoff: int, shentsize: int, shnum: int,
                  wanted: set[bytes]) -> dict[bytes, int]:
    """The value of each symbol in ``wanted`` that the symbol table has (the first, if
    several); :class:`ValueError` naming what is malformed. Every offset is checked."""
    if shnum == 0 or shoff == 0:
        return {}
    if shentsize != _SECTION_HEADER.size:
        raise ValueError(f"section header size {shentsize} is not {_SECTION_HEADER.size}")
    if shoff + shnum * shentsize > len(binary):
        raise ValueError("section headers run past the end of the file (truncated?)")
    sections = [_SECTION_HEADER.unpack_from(binary, shoff + i * shentsize) for i in range(shnum)]
    window = max(map(len, wanted), default=0) + 1  # a name and its NUL: never scan further
    found: dict[bytes, int] = {}
    for header in sections:
        _name, sh_type, _flags, _addr, offset, size, link, _info, _align, entsize = header
        if sh_type != SHT_SYMTAB:
            continue
        if entsize != _SYMBOL.size or offset + size > len(binary) or size // entsize > MAX_SYMBOLS:
            raise ValueError("malformed symbol table")
        if link >= shnum:
            raise ValueError("symbol table names a string table that does not exist")
        strings = sections[link]
        str_offset, str_size = strings[4], strings[5]
        if str_offset + str_size > len(binary):
            raise ValueError("string table runs past the end of the file (truncated?)")
        names = binary[str_offset:str_offset + str_size]
        for index in range(size // entsize):
            st_name, _info, _other, _shndx, value, _size = _SYMBOL.unpack_from(
                binary, offset + index * entsize)
            candidate = names[st_name:st_name + window]
            if b"\0" not in candidate:
                continue
            name = candidate[:candidate.index(b"\0")]
            if name in wanted and name not in found:
                found[name] = int(value)
    return found


def symbols(binary: bytes, wanted: set[bytes]) -> dict[bytes, int]:
    """:func:`symbol_values` for a whole ELF64 file; :class:`ValueError` if it is not one."""
    if len(binary) < _HEADER.size or binary[:4] != b"\x7fELF":
        raise ValueError("not an ELF file")
    header = _HEADER.unpack_from(binary)
    return symbol_values(binary, header[6], header[11], header[12], wanted)


def executable_ranges(binary: bytes) -> list[tuple[int, int]]:
    """``[start, end)`` of each executable ``PT_LOAD`` segment; :class:`ValueError` if malformed."""
    if len(binary) < _HEADER.size or binary[:4] != b"\x7fELF":
        raise ValueError("not an ELF file")
    header = _HEADER.unpack_from(binary)
    phoff, phentsize, phnum = header[5], header[9], header[10]
    if phentsize != _PROGRAM_HEADER.size or phoff + phnum * phentsize > len(binary):
        raise ValueError("malformed program headers")
    ranges: list[tuple[int, int]] = []
    for index in range(phnum):
        p_type, p_flags, _offset, p_vaddr, _paddr, _filesz, p_memsz, _align = (
            _PROGRAM_HEADER.unpack_from(binary, phoff + index * phentsize))
        if p_type == PT_LOAD and p_flags & PF_X:
            ranges.append((p_vaddr, p_vaddr + p_memsz))
    return ranges
