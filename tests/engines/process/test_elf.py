"""Malformed ELF files are refused at prepare with InvalidBinary and a helpful message.

The good file is the SDK's matmul example; every bad one is a precise patch
of it (or a real program the engine must not run). Nothing may escape as any
other exception, however the file is damaged.
"""

from __future__ import annotations

import contextlib
import random
import resource
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pappus.engines.process import ProcessEngine
from pappus.engines.process.elf import SYSTEM_DATA_SYMBOL
from pappus.errors import InvalidBinary
from pappus.model import DataSet, Item
from tests.engines.process.support import check_matmul, limits, matrix, prepare, spec
from tests.engines.support import damaged_outcomes, typed_failures

EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
PHDR = struct.Struct("<IIQQQQQQ")
SHDR = struct.Struct("<IIQQQQIIQQ")
SYM = struct.Struct("<IBBHQQ")
E_TYPE, E_MACHINE, E_ENTRY, E_PHENTSIZE, E_PHNUM, E_SHENTSIZE = 16, 18, 24, 54, 56, 58
P_FLAGS, P_VADDR, P_FILESZ, P_MEMSZ = 4, 16, 32, 40
SH_OFFSET, SH_LINK, SH_ENTSIZE = 24, 40, 56
PT_LOAD, SHT_SYMTAB = 1, 2
GIB = 1 << 30


@pytest.fixture(scope="module")
def good(process_functions: dict[str, bytes]) -> bytes:
    return process_functions["matmul"]


def put(binary: bytes, offset: int, fmt: str, value: int) -> bytes:
    patched = bytearray(binary)
    struct.pack_into(fmt, patched, offset, value)
    return bytes(patched)


def loads(binary: bytes) -> list[int]:
    """File offsets of the PT_LOAD program headers, in order."""
    header = EHDR.unpack_from(binary)
    phoff, phnum = header[5], header[10]
    offsets = [phoff + i * PHDR.size for i in range(phnum)]
    return [o for o in offsets if PHDR.unpack_from(binary, o)[0] == PT_LOAD]


def load(binary: bytes, index: int) -> tuple[int, ...]:
    return PHDR.unpack_from(binary, loads(binary)[index])


def symtab(binary: bytes) -> int:
    """File offset of the section header of the symbol table."""
    header = EHDR.unpack_from(binary)
    shoff, shnum = int(header[6]), int(header[12])
    for offset in (shoff + i * SHDR.size for i in range(shnum)):
        if SHDR.unpack_from(binary, offset)[1] == SHT_SYMTAB:
            return offset
    raise AssertionError("the good file has no symbol table")


def system_data_symbol(binary: bytes) -> int:
    """File offset of the symbol-table entry of __dandelion_system_data."""
    section = SHDR.unpack_from(binary, symtab(binary))
    offset, size, link = section[4], section[5], section[6]
    header = EHDR.unpack_from(binary)
    strings = SHDR.unpack_from(binary, header[6] + link * SHDR.size)[4]
    for entry in range(offset, offset + size, SYM.size):
        name = strings + SYM.unpack_from(binary, entry)[0]
        if binary[name:name + len(SYSTEM_DATA_SYMBOL) + 1] == SYSTEM_DATA_SYMBOL + b"\0":
            return entry
    raise AssertionError("the good file has no __dandelion_system_data")


def refused(engine: ProcessEngine, binary: bytes, *fragments: str) -> InvalidBinary:
    with pytest.raises(InvalidBinary) as caught:
        engine.prepare(spec("bad", binary), None)
    error = caught.value
    assert error.type == "invalid_binary"
    assert error.detail == {"engine": "process"}
    assert error.message.startswith("not a valid process-engine function: ")
    for fragment in fragments:
        assert fragment in error.message
    return error


def test_the_good_file_prepares(process_engine: ProcessEngine, good: bytes) -> None:
    image = process_engine.prepare(spec("good", good), None).image
    assert [(s.readable, s.writable, s.executable) for s in image.segments] == [
        (True, False, False), (True, False, True), (True, True, False)]


# --- not an ELF file for us ---------------------------------------------------------------

def test_empty_file(process_engine: ProcessEngine) -> None:
    refused(process_engine, b"", "not an ELF file")


@pytest.mark.parametrize("prefix", [b"", b"\x7fELF"])
def test_garbage(process_engine: ProcessEngine, prefix: bytes) -> None:
    garbage = prefix + random.Random(7).randbytes(4096)
    refused(process_engine, garbage)


@pytest.mark.parametrize(("length", "fragment"), [
    (10, "not an ELF file"), (64, "program headers run past the end of the file (truncated?)"),
    (100, "(truncated?)"), (-2, "run past the end of the file (truncated?)"),
    (-1, "section headers run past the end of the file (truncated?)"),
])
def test_truncated(process_engine: ProcessEngine, good: bytes, length: int,
                   fragment: str) -> None:
    size = {-2: len(good) // 2, -1: len(good) - 1}.get(length, length)
    refused(process_engine, good[:size], fragment)


def test_wrong_machine(process_engine: ProcessEngine, good: bytes) -> None:
    refused(process_engine, put(good, E_MACHINE, "<H", 183), "machine 183 is not x86-64 (62)")


@pytest.mark.parametrize(("index", "value"), [(4, 1), (5, 2)], ids=["32-bit", "big-endian"])
def test_wrong_class_or_byte_order(process_engine: ProcessEngine, good: bytes, index: int,
                                   value: int) -> None:
    refused(process_engine, put(good, index, "B", value), "not a 64-bit little-endian ELF file")


def test_pie(process_engine: ProcessEngine, good: bytes) -> None:
    refused(process_engine, put(good, E_TYPE, "<H", 3), "position-independent (PIE",
            "-no-pie", "pappus sdk build")


@pytest.mark.parametrize("e_type", [0, 1, 4])
def test_not_an_executable(process_engine: ProcessEngine, good: bytes, e_type: int) -> None:
    refused(process_engine, put(good, E_TYPE, "<H", e_type), f"ELF type {e_type} is not")


# --- program headers and segments ---------------------------------------------------------

@pytest.mark.parametrize(("field", "value", "fragment"), [
    (E_PHENTSIZE, 32, "program header size 32 is not 56"),
    (E_PHNUM, 0, "0 program headers"),
    (E_PHNUM, 65, "65 program headers"),
])
def test_bad_program_header_table(process_engine: ProcessEngine, good: bytes, field: int,
                                  value: int, fragment: str) -> None:
    refused(process_engine, put(good, field, "<H", value), fragment)


@pytest.mark.parametrize("address", [0, 0x1000, 0xF000])
def test_segment_below_0x10000(process_engine: ProcessEngine, good: bytes, address: int) -> None:
    bad = put(good, loads(good)[0] + P_VADDR, "<Q", address)
    refused(process_engine, bad, f"segment 0 ({address:#x}+", "lies outside [0x10000, 0x100000000)")


@pytest.mark.parametrize("address", [1 << 32, (1 << 32) - 0x100, (1 << 64) - 0x1000])
def test_segment_beyond_4_gib(process_engine: ProcessEngine, good: bytes, address: int) -> None:
    bad = put(good, loads(good)[-1] + P_VADDR, "<Q", address)
    refused(process_engine, bad, "lies outside [0x10000, 0x100000000)")


def test_overlapping_segments(process_engine: ProcessEngine, good: bytes) -> None:
    text = load(good, 1)[3]
    bad = put(good, loads(good)[2] + P_VADDR, "<Q", text)
    refused(process_engine, bad, f"segments at {text:#x} and {text:#x} overlap or share a page")


def test_segments_sharing_a_page(process_engine: ProcessEngine, good: bytes) -> None:
    _, _, _, text, _, _, size, _ = load(good, 1)
    shared = text + size + 8  # the data would start on the code's last page
    assert shared // 4096 == (text + size - 1) // 4096
    refused(process_engine, put(good, loads(good)[2] + P_VADDR, "<Q", shared),
            "overlap or share a page")


def test_writable_and_executable_segment(process_engine: ProcessEngine, good: bytes) -> None:
    refused(process_engine, put(good, loads(good)[1] + P_FLAGS, "<I", 7),
            "is both writable and executable")


def test_file_size_beyond_memory_size(process_engine: ProcessEngine, good: bytes) -> None:
    memory = load(good, 2)[6]
    refused(process_engine, put(good, loads(good)[2] + P_FILESZ, "<Q", memory + 1),
            "exceeds memory size")


def test_segment_bytes_beyond_the_file(process_engine: ProcessEngine, good: bytes) -> None:
    bad = put(good, loads(good)[1] + P_FILESZ, "<Q", len(good))
    bad = put(bad, loads(good)[1] + P_MEMSZ, "<Q", len(good))
    refused(process_engine, bad, "its bytes run past the end of the file")


def extra_segments(good: bytes, count: int) -> bytes:
    """``good`` with ``count`` more read-only PT_LOADs, written into the padding after the table."""
    header = EHDR.unpack_from(good)
    phoff, phnum = header[5], header[10]
    end = phoff + (phnum + count) * PHDR.size
    assert end <= 0x1000 and not any(good[phoff + phnum * PHDR.size:end]), "no room"
    patched = bytearray(put(good, E_PHNUM, "<H", phnum + count))
    for i in range(count):
        address = 0x100000 + i * 0x1000
        PHDR.pack_into(patched, phoff + (phnum + i) * PHDR.size, PT_LOAD, 4, 0, address,
                       address, 0, 64, 0x1000)
    return bytes(patched)


def test_33_segments_are_refused(process_engine: ProcessEngine, good: bytes) -> None:
    with pytest.raises(InvalidBinary, match="33 loadable segments; at most 32"):
        process_engine.prepare(spec("many", extra_segments(good, 30)), None)


def test_32_segments_prepare_and_run(process_engine: ProcessEngine, good: bytes) -> None:
    artifact = process_engine.prepare(spec("many", extra_segments(good, 29)), None)
    assert len(artifact.image.segments) == 32
    check_matmul(process_engine, artifact, 3)


# --- entry point and symbol ---------------------------------------------------------------

def test_entry_point_outside_executable_segments(process_engine: ProcessEngine,
                                                 good: bytes) -> None:
    _, _, _, text, _, _, size, _ = load(good, 1)
    for entry in (0, 0x10000, load(good, 2)[3], text + size, 1 << 40):
        refused(process_engine, put(good, E_ENTRY, "<Q", entry),
                f"entry point {entry:#x} is not inside an executable segment")
    for entry in (text, text + size - 1):  # the bounds themselves are inside
        process_engine.prepare(spec("edge", put(good, E_ENTRY, "<Q", entry)), None)


def test_missing_symbol(process_engine: ProcessEngine, good: bytes) -> None:
    assert good.count(SYSTEM_DATA_SYMBOL) == 1
    renamed = good.replace(SYSTEM_DATA_SYMBOL, b"__dandelion_system_dat4")
    refused(process_engine, renamed, "no __dandelion_system_data symbol", "stripped")


@pytest.mark.skipif(shutil.which("strip") is None, reason="needs binutils' strip")
def test_stripped(process_engine: ProcessEngine, good: bytes, tmp_path: Path) -> None:
    path = tmp_path / "fn"
    path.write_bytes(good)
    subprocess.run(["strip", str(path)], check=True)
    refused(process_engine, path.read_bytes(), "no __dandelion_system_data symbol")


def test_symbol_outside_writable_memory_or_misaligned(process_engine: ProcessEngine,
                                                      good: bytes) -> None:
    value = system_data_symbol(good) + 8
    _, _, _, data, _, _, size, _ = load(good, 2)
    for address in (load(good, 1)[3], data + 4, data + size - 64, 0):
        refused(process_engine, put(good, value, "<Q", address),
                f"__dandelion_system_data at {address:#x} is not an aligned 72-byte object")


@pytest.mark.parametrize(("field", "value", "fragment"), [
    (SH_ENTSIZE, 16, "malformed symbol table"),
    (SH_OFFSET, 1 << 40, "malformed symbol table"),
    (SH_LINK, 200, "names a string table that does not exist"),
])
def test_bad_symbol_table(process_engine: ProcessEngine, good: bytes, field: int, value: int,
                          fragment: str) -> None:
    fmt = "<I" if field == SH_LINK else "<Q"
    refused(process_engine, put(good, symtab(good) + field, fmt, value), fragment)


def test_bad_section_header_size(process_engine: ProcessEngine, good: bytes) -> None:
    refused(process_engine, put(good, E_SHENTSIZE, "<H", 40), "section header size 40 is not 64")


# --- real programs that are not functions -------------------------------------------------

HELLO = '#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n'


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
@pytest.mark.parametrize(("flags", "fragments"), [
    ((), ("PIE",)),  # the distribution's default: a PIE, so e_type is ET_DYN
    (("-pie", "-fpie"), ("PIE",)),
    (("-no-pie",), ("dynamically linked",)),
    (("-static", "-no-pie"), ("no __dandelion_system_data symbol",)),
])
def test_normal_program_is_refused(process_engine: ProcessEngine, tmp_path: Path,
                                   flags: tuple[str, ...], fragments: tuple[str, ...]) -> None:
    source = tmp_path / "hello.c"
    source.write_text(HELLO)
    built = subprocess.run(["gcc", *flags, str(source), "-o", str(tmp_path / "hello")],
                           capture_output=True, text=True, check=False)
    if built.returncode != 0:
        pytest.skip(f"gcc {' '.join(flags)} failed here: {built.stderr.strip()[:200]}")
    error = refused(process_engine, (tmp_path / "hello").read_bytes())
    assert any(fragment in error.message for fragment in fragments), error.message


# --- damage of any kind -------------------------------------------------------------------

@contextlib.contextmanager
def address_space_limit(extra: int) -> Iterator[None]:
    """Cap this process's address space at its current size plus ``extra`` bytes."""
    status = Path("/proc/self/status").read_text()
    current = int(next(line for line in status.splitlines() if line.startswith("VmSize:"))
                  .split()[1]) * 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (current + extra, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def mutate(good: bytes, rng: random.Random) -> tuple[bytes, list[str]]:
    """``good`` damaged in 1 to 6 places, mostly in its headers; and what was done."""
    data = bytearray(good)
    header = EHDR.unpack_from(good)
    interesting = [*range(0, 64 + header[10] * PHDR.size),
                   *range(header[6], header[6] + header[12] * SHDR.size)]
    done: list[str] = []
    for _ in range(rng.randint(1, 6)):
        where = rng.choice(interesting) if rng.random() < 0.8 else rng.randrange(len(data))
        value = rng.choice([rng.randrange(256), data[where] ^ (1 << rng.randrange(8)), 0, 0xFF])
        data[where] = value
        done.append(f"[{where}]={value:#x}")
    if rng.random() < 0.1:
        cut = rng.randrange(len(data))
        del data[cut:]
        done.append(f"cut at {cut}")
    return bytes(data), done


def test_random_damage_is_prepared_or_refused(process_engine: ProcessEngine, good: bytes) -> None:
    rng = random.Random(0x5EED)
    outcomes = {"prepared": 0, "refused": 0}
    escaped: list[str] = []
    with address_space_limit(1 * GIB):  # a damaged size field must not take the machine down
        for index in range(100):
            damaged, done = mutate(good, rng)
            try:
                process_engine.prepare(spec(f"damaged{index}", damaged), None)
                outcomes["prepared"] += 1
            except InvalidBinary:
                outcomes["refused"] += 1
            except Exception as exc:
                escaped.append(f"mutation {index} {done}: {type(exc).__name__}: {exc}")
    assert escaped == []
    assert outcomes["refused"] >= 10, outcomes


HUGE_BSS = """
import resource, sys
from pathlib import Path
from tests.engines.process.support import spec
from pappus.engines.process import ProcessEngine
from pappus.errors import InvalidBinary

engine = ProcessEngine(Path(sys.argv[2]), warm_runners=0)
engine.prepare(spec("good", Path(sys.argv[1]).read_bytes()), None)  # builds the runner
status = Path("/proc/self/status").read_text()
size = int(next(l for l in status.splitlines() if l.startswith("VmSize:")).split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + (256 << 20),) * 2)
try:
    engine.prepare(spec("huge", Path(sys.argv[3]).read_bytes()), None)
    print("prepared")
except InvalidBinary as exc:
    print("refused", exc)
except MemoryError:
    print("MemoryError")
"""


def test_huge_bss_claim_is_not_materialised(good: bytes, tmp_path: Path,
                                            runner_dir: Path) -> None:
    # A 10 KB file claiming a bss up to 4 GiB: prepare may refuse it or keep it, but must not
    # allocate gigabytes for it (nor fail with MemoryError when it cannot).
    data = load(good, 2)[3]
    huge = put(good, loads(good)[2] + P_MEMSZ, "<Q", (1 << 32) - 0x1000 - data)
    (tmp_path / "good").write_bytes(good)
    (tmp_path / "huge").write_bytes(huge)
    root = Path(__file__).resolve().parents[3]
    run = subprocess.run([sys.executable, "-c", HUGE_BSS, str(tmp_path / "good"), str(runner_dir),
                          str(tmp_path / "huge")], capture_output=True, text=True, cwd=root,
                         timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    outcome = run.stdout.strip()
    assert outcome == "prepared" or outcome.startswith("refused"), outcome


def test_damaged_binaries_that_prepare_end_with_typed_outcomes(process_engine: ProcessEngine,
                                                               good: bytes) -> None:
    """Damage anywhere (code and data too): whatever preparation lets through runs, and
    ends as a result or a typed sandbox error; the engine then still runs the good file."""
    inputs = [DataSet("in", (Item("m", 0, matrix(2, [1, 2, 3, 4])),))]

    def run(binary: bytes, index: int) -> int:
        artifact = process_engine.prepare(spec(f"damaged{index}", binary), None)
        return process_engine.invoke(artifact, inputs, limits(timeout_s=1.0)).exit_code

    outcomes = damaged_outcomes(good, 0xDA7A, 300, run)
    assert typed_failures(outcomes) >= 5, outcomes
    check_matmul(process_engine, prepare(process_engine, "good", good), seed=3)
