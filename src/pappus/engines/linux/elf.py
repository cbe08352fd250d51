"""Check at registration that a binary is a static x86-64 Linux executable.

The kernel loads the program (``execveat`` of a sealed memfd), so this is
not a loader: it refuses, with a message a user can act on, what could never
run in the sandbox — other formats, architectures, 32-bit or big-endian
files, shared libraries, and dynamically linked programs (which need an
interpreter, ``ld.so``, and shared libraries from the host's file system,
which the sandbox does not have). Offsets and counts are checked against
the file before use; a malformed header is :class:`~pappus.errors.InvalidBinary`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pappus.errors import InvalidBinary

ET_EXEC, ET_DYN = 2, 3
EM_X86_64 = 62
PT_LOAD, PT_INTERP = 1, 3
MAX_PROGRAM_HEADERS = 256
_HEADER = struct.Struct("<16sHHIQQQIHHHHHH")
_PROGRAM_HEADER = struct.Struct("<IIQQQQQQ")
_STATIC_HINT = (
    "link it statically (for example `gcc -static` or `musl-gcc -static`); "
    "the sandbox has no dynamic loader and no shared libraries"
)


@dataclass(frozen=True, slots=True)
class StaticExecutable:
    """What registration learned: position independence, entry, loadable bytes."""

    position_independent: bool
    entry: int
    load_bytes: int


def _refuse(reason: str) -> InvalidBinary:
    return InvalidBinary(reason, engine="linux")


def check_static_executable(binary: bytes) -> StaticExecutable:
    """Validate ``binary``; raise :class:`InvalidBinary` saying what is wrong and how to fix it."""
    if binary.startswith(b"#!"):
        raise _refuse("a script, not an executable: register a static ELF program")
    if len(binary) < _HEADER.size or binary[:4] != b"\x7fELF":
        raise _refuse("not an ELF file: register a static x86-64 Linux executable")
    (
        ident,
        kind,
        machine,
        _version,
        entry,
        ph_offset,
        _sh_offset,
        _flags,
        _eh_size,
        ph_size,
        ph_count,
        _sh_size,
        _sh_count,
        _sh_names,
    ) = _HEADER.unpack_from(binary)
    if ident[4] != 2:
        raise _refuse("a 32-bit ELF file: build it for x86-64")
    if ident[5] != 1:
        raise _refuse("a big-endian ELF file: build it for x86-64")
    if machine != EM_X86_64:
        raise _refuse(f"built for ELF machine {machine}, not x86-64 (62)")
    if kind not in (ET_EXEC, ET_DYN):
        raise _refuse(
            f"ELF type {kind} is not an executable (relocatable objects and core files cannot run)"
        )
    if ph_count == 0 or ph_count > MAX_PROGRAM_HEADERS or ph_size != _PROGRAM_HEADER.size:
        raise _refuse(f"implausible program header table ({ph_count} entries of {ph_size} bytes)")
    if ph_offset + ph_count * ph_size > len(binary):
        raise _refuse("the program header table lies outside the file (truncated?)")
    loads = 0
    load_bytes = 0
    for index in range(ph_count):
        p_type, _p_flags, offset, _vaddr, _paddr, file_size, memory_size, _align = (
            _PROGRAM_HEADER.unpack_from(binary, ph_offset + index * ph_size)
        )
        if p_type == PT_INTERP:
            raise _refuse(
                f"dynamically linked (it asks for the interpreter "
                f"{_interpreter(binary, offset, file_size)}): {_STATIC_HINT}"
            )
        if p_type == PT_LOAD:
            if offset + file_size > len(binary) or file_size > memory_size:
                raise _refuse(
                    f"loadable segment {index} lies outside the file or is "
                    "inconsistent (truncated?)"
                )
            loads += 1
            load_bytes += memory_size
    if loads == 0:
        raise _refuse("no loadable segment: nothing to run")
    if entry == 0:
        raise _refuse("no entry point (a shared library?): register an executable, " + _STATIC_HINT)
    return StaticExecutable(kind == ET_DYN, entry, load_bytes)


def _interpreter(binary: bytes, offset: int, size: int) -> str:
    raw = binary[offset : offset + min(size, 256)].split(b"\0")[0]
    return repr(raw.decode("utf-8", "replace")) if raw else "(unreadable)"
