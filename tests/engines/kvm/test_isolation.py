"""Nothing of one invocation is visible to the next on the same reused machine; slots run in
parallel.

The secret-leak test: ``secret_write`` leaves a secret in its heap, stack,
static data, read-only data, general registers, x87/SSE/AVX (and AVX-512 where
the CPU has it) registers, FS/GS base, MXCSR, the x87 control word and
RFLAGS (DF, AC), then exits without cleaning up. ``secret_scan`` on the same
machine reports the registers it was handed (captured at its entry point,
before any SDK code ran) and scans every word of its free memory.
"""

from __future__ import annotations

import concurrent.futures
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pappus.engines.kvm import KvmArtifact, KvmEngine
from pappus.engines.kvm.guest import GuestLayout
from tests.engines.kvm.support import MiB, check_matmul, limits, prepare, run_mode

SECRET = struct.pack("<Q", 0x5EC2E75EC2E75EC2)
MEMORY = 64 * MiB
FCW_DEFAULT, MXCSR_DEFAULT = 0x37F, 0x1F80
DIRECTION_FLAG, ALIGNMENT_CHECK = 1 << 10, 1 << 18


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[KvmEngine]:
    fresh = KvmEngine(tmp_path)
    yield fresh
    fresh.close()


def test_no_secret_survives_into_the_next_invocation(
    engine: KvmEngine, kvm_functions: dict[str, bytes]
) -> None:
    hostile = prepare(engine, "hostile", kvm_functions["hostile"])
    bounds = limits(memory=MEMORY)
    written = run_mode(engine, hostile, "secret_write", bounds=bounds)
    assert written.exit_code == -1  # left through its own `int $32`, before main returned
    result = run_mode(engine, hostile, "secret_scan", bounds=bounds)
    assert engine.machines_created == 1, "the second invocation must reuse the first's VM"
    assert result.exit_code == 0
    found = {item.name: item.data for item in result.outputs[0].items}
    for name, data in found.items():
        assert SECRET not in data, f"the secret leaked into {name}"
        assert SECRET[:4] not in data, f"half of the secret leaked into {name}"
    registers = struct.unpack("<20Q", found["registers"])
    table_base = GuestLayout(MEMORY).table_base
    general = list(registers[:16])
    assert general[6] == table_base - 32  # rsp as the ABI says
    del general[6]
    assert general == [0] * 15, "general registers are not all zero at entry"
    rflags, fs_base, gs_base, control = registers[16:20]
    assert rflags & (DIRECTION_FLAG | ALIGNMENT_CHECK) == 0
    assert (fs_base, gs_base) == (0, 0)
    assert (control & 0xFFFFFFFF, control >> 32 & 0xFFFF) == (MXCSR_DEFAULT, FCW_DEFAULT)
    assert found["ymm"] == bytes(512), "vector registers are not zero at entry"
    assert found["fxsave"][32:160] == bytes(128), "x87 registers are not zero at entry"
    assert found["zmm"] == bytes(len(found["zmm"]))
    assert found["static"] == bytes(4096)
    nonzero_words, first_address, pattern, _ = struct.unpack("<4Q", found["memory"])
    assert (nonzero_words, first_address) == (0, 0), f"non-zero memory at {first_address:#x}"
    assert pattern == 1, "the image's read-only data kept the previous invocation's write"


def test_scan_after_hostile_runs_finds_clean_memory(
    engine: KvmEngine, kvm_functions: dict[str, bytes]
) -> None:
    """Faults, timeouts and a deep-memory write leave nothing behind either."""
    hostile = prepare(engine, "hostile", kvm_functions["hostile"])
    bounds = limits(memory=MEMORY)
    for mode, address in (("write", MEMORY // 2), ("write", 0x10000), ("divide", None)):
        with pytest.raises(Exception):  # noqa: B017 - crash or success, only the trace matters
            run_mode(engine, hostile, mode, address, bounds=bounds)
            raise RuntimeError("no crash")
    with pytest.raises(Exception):  # noqa: B017
        run_mode(engine, hostile, "loop", bounds=limits(timeout_s=0.05, memory=MEMORY))
    result = run_mode(engine, hostile, "secret_scan", bounds=bounds)
    found = {item.name: item.data for item in result.outputs[0].items}
    assert struct.unpack("<4Q", found["memory"])[:3] == (0, 0, 1)
    assert engine.machines_created == 1


def test_two_slots_run_in_parallel(engine: KvmEngine, kvm_functions: dict[str, bytes]) -> None:
    """KVM_RUN releases the GIL: two guests computing at once take about as long as one."""
    hostile = prepare(engine, "hostile", kvm_functions["hostile"])
    iterations = 600_000_000

    def spin() -> float:
        start = time.perf_counter()
        assert run_mode(engine, hostile, "spin", iterations).exit_code == 0
        return time.perf_counter() - start

    spin()  # create the first machine
    attempts = []
    # The machine is a 2-vCPU VM whose host sometimes runs only one of them for a while:
    # one clean attempt of six, spread over ~3 s, suffices. Were KVM_RUN holding the GIL,
    # every attempt would take twice as long.
    for attempt in range(6):
        if attempt:
            time.sleep(0.3)
        alone = min(spin() for _ in range(2))
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            start = time.perf_counter()
            list(pool.map(lambda _: spin(), range(2)))
            together = time.perf_counter() - start
        assert alone > 0.05, "the busy loop is too short to measure"
        attempts.append((round(together, 3), round(alone, 3)))
        if together < 1.5 * alone:
            break
    else:
        pytest.fail(f"two guests at once were not faster than serial: (both, one) {attempts}")
    assert engine.machines_created == 2


def test_context_size_changes_get_their_own_machines(
    engine: KvmEngine, kvm_functions: dict[str, bytes]
) -> None:
    matmul: KvmArtifact = prepare(engine, "matmul", kvm_functions["matmul"])
    for memory in (16 * MiB, 64 * MiB, 16 * MiB):
        result = engine.invoke(matmul, [None], limits(memory=memory))
        assert result.exit_code == -2  # an absent input set: matmul's own error code
    assert engine.machines_created == 2
    check_matmul(engine, matmul, seed=9)
