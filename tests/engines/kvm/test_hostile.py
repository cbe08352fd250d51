"""Hostile guests end with the right typed outcome, and the engine keeps serving afterwards.

Each case runs real guest code (tests/engines/kvm/functions/hostile.c, built with the
SDK's kvm target) on a real /dev/kvm, then a normal matmul on the same engine
— usually on the very machine the hostile guest just used.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import pappus
from pappus.engines.kvm import KvmArtifact, KvmEngine
from pappus.engines.kvm.guest import GuestLayout
from pappus.model import DataSet, Item
from tests.engines.kvm.support import MEMORY, check_matmul, limits, matrix, prepare, run_mode
from tests.engines.support import damaged_outcomes, run_beside_gil_holders, typed_failures

LAYOUT = GuestLayout(MEMORY)
DIVIDE, DEBUG_TRAP, INVALID_OPCODE, GENERAL_PROTECTION, PAGE_FAULT = 0, 3, 6, 13, 14

FAULTS = [
    ("divide", None, DIVIDE),
    ("ud2", None, INVALID_OPCODE),
    ("int3", None, DEBUG_TRAP),
    ("hlt", None, GENERAL_PROTECTION),
    ("cli", None, GENERAL_PROTECTION),
    ("out", None, GENERAL_PROTECTION),
    ("out_exit_port", None, GENERAL_PROTECTION),
    ("cr3", None, GENERAL_PROTECTION),
    ("lgdt", None, GENERAL_PROTECTION),
    # below the function's memory: [0, 0x10000) is not mapped
    ("read", 0x0, PAGE_FAULT),
    ("read", 0xFFF8, PAGE_FAULT),
    # the system pages above table_base are supervisor-only: no read, write or jump
    ("read", LAYOUT.table_base, PAGE_FAULT),
    ("write", LAYOUT.pml4, PAGE_FAULT),
    ("write", LAYOUT.descriptors, PAGE_FAULT),
    ("jump", LAYOUT.stub(32), PAGE_FAULT),
    # page-table walks beyond the slot: past the context, past its page directory,
    # past its PML4 entry, and a non-canonical address
    ("read", MEMORY, PAGE_FAULT),
    ("read", MEMORY + (1 << 30), PAGE_FAULT),
    ("write", 1 << 40, PAGE_FAULT),
    ("read", (1 << 47) - 8, PAGE_FAULT),
    ("read", 1 << 63, GENERAL_PROTECTION),
]


@pytest.mark.parametrize(
    ("mode", "address", "vector"),
    FAULTS,
    ids=[f"{m}-{a:#x}" if a is not None else m for m, a, _ in FAULTS],
)
def test_fault_is_a_crash_naming_vector_and_rip(
    kvm_engine: KvmEngine,
    hostile: KvmArtifact,
    matmul: KvmArtifact,
    mode: str,
    address: int | None,
    vector: int,
) -> None:
    with pytest.raises(pappus.SandboxCrash) as crash:
        run_mode(kvm_engine, hostile, mode, address)
    detail = crash.value.detail
    assert detail["vector"] == vector, crash.value.message
    assert int(detail["rip"], 16) >= 0x10000  # the guest's instruction, not a handler's
    if vector == PAGE_FAULT:
        assert int(detail["address"], 16) == (address or 0) or mode == "jump"
        assert f"accessing {detail['address']}" in crash.value.message
    check_matmul(kvm_engine, matmul, seed=vector)


def test_system_call_instruction_is_a_crash(
    kvm_engine: KvmEngine, hostile: KvmArtifact, matmul: KvmArtifact
) -> None:
    """``syscall`` is disabled (EFER.SCE = 0): #UD on KVM; pvm sends it to rip 0 (#PF)."""
    with pytest.raises(pappus.SandboxCrash) as crash:
        run_mode(kvm_engine, hostile, "syscall")
    assert crash.value.detail["vector"] in (INVALID_OPCODE, PAGE_FAULT)
    check_matmul(kvm_engine, matmul, seed=1)


def test_infinite_loop_times_out_within_100_ms_of_the_deadline(
    kvm_engine: KvmEngine, hostile: KvmArtifact, matmul: KvmArtifact
) -> None:
    for _ in range(3):
        bounds = limits(timeout_s=0.2)
        with pytest.raises(pappus.InvocationTimeout):
            run_mode(kvm_engine, hostile, "loop", bounds=bounds)
        overshoot = time.monotonic() - bounds.deadline
        assert 0 <= overshoot < 0.1, overshoot
        check_matmul(kvm_engine, matmul, seed=2)


def test_a_loop_is_kicked_out_on_time_while_other_threads_hold_the_gil(
    kvm_engine: KvmEngine, hostile: KvmArtifact
) -> None:
    """The native deadline thread kicks the vCPU without waiting for the GIL, which two
    threads hold in long C calls (as when decoding large JSON bodies). The guest's time
    is the vCPU thread's CPU time (KVM_RUN runs on it)."""
    spun_ms: list[float] = []

    def run() -> None:
        began = time.thread_time()
        with pytest.raises(pappus.InvocationTimeout):
            run_mode(kvm_engine, hostile, "loop", bounds=limits(timeout_s=0.2))
        spun_ms.append((time.thread_time() - began) * 1e3)

    for _ in range(3):  # the holders start once the guest is spinning
        run_beside_gil_holders(run, spinning_for_s=0.02)
    assert len(spun_ms) == 3
    assert all(ms <= 220 for ms in spun_ms) and max(spun_ms) >= 100, spun_ms


def test_deadline_already_passed_is_a_timeout(
    kvm_engine: KvmEngine, hostile: KvmArtifact, matmul: KvmArtifact
) -> None:
    with pytest.raises(pappus.InvocationTimeout):
        run_mode(kvm_engine, hostile, "loop", bounds=limits(timeout_s=-1.0))
    check_matmul(kvm_engine, matmul, seed=3)


def test_machines_are_reused_across_hostile_guests(kvm_functions: dict[str, bytes],
                                                   tmp_path: Path) -> None:
    """Faults and timeouts do not cost the machine: one VM serves them all."""
    from tests.engines.kvm.support import prepare

    engine = KvmEngine(tmp_path)
    try:
        hostile = prepare(engine, "hostile", kvm_functions["hostile"])
        matmul = prepare(engine, "matmul", kvm_functions["matmul"])
        for mode in ("divide", "hlt", "ud2"):
            with pytest.raises(pappus.SandboxCrash):
                run_mode(engine, hostile, mode)
            check_matmul(engine, matmul, seed=4)
        with pytest.raises(pappus.InvocationTimeout):
            run_mode(engine, hostile, "loop", bounds=limits(timeout_s=0.05))
        check_matmul(engine, matmul, seed=5)
        assert engine.machines_created == 1
        stats = engine.statistics()
        assert (stats.engine, stats.invocations, stats.failures) == ("kvm", 8, 4)
        assert "invocations=8 failures=4" in repr(engine)
    finally:
        engine.close()


def test_damaged_binaries_end_with_typed_outcomes(kvm_engine: KvmEngine,
                                                  kvm_functions: dict[str, bytes]) -> None:
    """Damage anywhere in a good function: refused at registration, or run to a result or
    a typed sandbox error in the guest, never an exception of the engine's own."""
    good = kvm_functions["matmul"]
    inputs = [DataSet("in", (Item("m", 0, matrix(2, [1, 2, 3, 4])),))]

    def run(binary: bytes, index: int) -> int:
        artifact = prepare(kvm_engine, f"damaged{index}", binary)
        return kvm_engine.invoke(artifact, inputs, limits(1.0)).exit_code

    outcomes = damaged_outcomes(good, 0x4B564D, 300, run)
    assert typed_failures(outcomes) >= 5, outcomes
    check_matmul(kvm_engine, prepare(kvm_engine, "good", good), seed=5)
