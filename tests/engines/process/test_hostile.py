"""Hostile functions in the process engine: every attack ends in its precise typed outcome.

Each test runs tests/functions/process/hostile.c in one mode (its first input
item) in a real runner under the real seccomp filter, and checks the error
type and its detail. The last tests check that the engine is unharmed:
normal functions still compute the right answer, alone and interleaved with
attacks, and no descriptor or process is left behind.
"""

from __future__ import annotations

import concurrent.futures
import os
import resource
import signal
import time

import pytest

from pappus.engines.process import ProcessArtifact, ProcessEngine
from pappus.errors import (
    BadOutput,
    ForbiddenSyscall,
    FunctionFailed,
    InvocationTimeout,
    OutOfMemory,
    SandboxCrash,
    SandboxError,
)
from pappus.model import DataSet, Item
from tests.engines.process.support import (
    HOSTILE_OUTPUTS,
    MEMORY,
    MiB,
    assert_no_stray_runners,
    check_matmul,
    limits,
    prepare,
    run_mode,
)
from tests.engines.support import busiest_child_cpu_s, run_beside_gil_holders

X86_64 = "0xc000003e"
I386 = "0x40000003"
X32 = 0x40000000
FUNCTION_BASE = 0x10000


def forbidden(engine: ProcessEngine, hostile: ProcessArtifact, mode: str) -> ForbiddenSyscall:
    with pytest.raises(ForbiddenSyscall) as caught:
        run_mode(engine, hostile, mode)
    error = caught.value
    assert error.type == "forbidden_syscall"
    assert error.detail["function"] == "hostile"
    address = int(error.detail["address"], 16)
    assert any(s.executable and s.address <= address < s.end for s in hostile.image.segments), \
        f"the reported call site {address:#x} is not in the function's code"
    return error


def crash(engine: ProcessEngine, hostile: ProcessArtifact, mode: str,
          expected: signal.Signals = signal.SIGSEGV) -> SandboxCrash:
    with pytest.raises(SandboxCrash) as caught:
        run_mode(engine, hostile, mode)
    error = caught.value
    assert error.type == "crash"
    assert error.detail["signal"] == expected.name
    return error


def bad_output(engine: ProcessEngine, hostile: ProcessArtifact, mode: str,
               max_output_bytes: int = MiB) -> BadOutput:
    with pytest.raises(BadOutput) as caught:
        run_mode(engine, hostile, mode, limits(output=max_output_bytes))
    assert caught.value.type == "bad_output"
    return caught.value


# --- forbidden system calls ---------------------------------------------------------------

@pytest.mark.parametrize(("mode", "number", "name"), [
    ("socket", 41, "socket"),
    ("open", 2, "open"),
    ("openat", 257, "openat"),
    ("execve", 59, "execve"),
    ("fork", 57, "fork"),
    ("vfork", 58, "vfork"),
    ("clone", 56, "clone"),
    ("clone3", 435, "clone3"),
    ("ptrace", 101, "ptrace"),
    ("kill", 62, "kill"),
    ("mmap", 9, "mmap"),
    ("mprotect", 10, "mprotect"),
    ("write", 1, "write"),
    ("rt_sigreturn", 15, "rt_sigreturn"),
    ("unknown_number", 0xFFFF, "syscall_65535"),
])
def test_forbidden_x86_64_call_is_reported_by_name(process_engine: ProcessEngine,
                                                   hostile: ProcessArtifact, mode: str,
                                                   number: int, name: str) -> None:
    error = forbidden(process_engine, hostile, mode)
    assert error.detail["syscall"] == number
    assert error.detail["name"] == name
    assert error.detail["arch"] == X86_64
    assert f"called {name} (system call {number})" in error.message


@pytest.mark.parametrize(("mode", "number", "name"), [
    ("x32", 39 | X32, "x32 getpid"),
    ("x32_exit_group", 231 | X32, "x32 exit_group"),  # allowed as x86-64, not as x32
])
def test_x32_call_is_forbidden(process_engine: ProcessEngine, hostile: ProcessArtifact,
                               mode: str, number: int, name: str) -> None:
    error = forbidden(process_engine, hostile, mode)
    assert error.detail["name"].startswith("x32")
    assert error.detail["name"] == name
    assert error.detail["syscall"] == number


@pytest.mark.parametrize(("mode", "number", "name"), [
    ("int80", 20, "i386 getpid"),
    ("int80_exit", 1, "i386 exit"),  # exit is allowed as x86-64, not through int 0x80
])
def test_int80_call_is_forbidden(process_engine: ProcessEngine, hostile: ProcessArtifact,
                                 mode: str, number: int, name: str) -> None:
    error = forbidden(process_engine, hostile, mode)
    assert error.detail["name"].startswith("i386")
    assert error.detail["name"] == name
    assert error.detail["syscall"] == number
    assert error.detail["arch"] == I386


@pytest.mark.parametrize("mode", ["arch_get_fs", "arch_set_gs", "arch_high"])
def test_arch_prctl_other_than_set_fs_is_forbidden(process_engine: ProcessEngine,
                                                   hostile: ProcessArtifact, mode: str) -> None:
    # arch_high passes 0x1_0000_1002: the kernel would truncate it to ARCH_SET_FS, so the
    # filter must compare the argument's upper half too.
    error = forbidden(process_engine, hostile, mode)
    assert error.detail["syscall"] == 158
    assert error.detail["name"] == "arch_prctl"


def test_vsyscall_page_is_no_way_around_the_filter(process_engine: ProcessEngine,
                                                   hostile: ProcessArtifact) -> None:
    # Emulated vsyscalls go through seccomp; with vsyscall=none the call faults instead.
    with pytest.raises((ForbiddenSyscall, SandboxCrash)) as caught:
        run_mode(process_engine, hostile, "vsyscall")
    if isinstance(caught.value, ForbiddenSyscall):
        assert caught.value.detail["name"] == "gettimeofday"
    else:
        assert caught.value.detail["signal"] == "SIGSEGV"


# --- time ---------------------------------------------------------------------------------

def test_infinite_loop_is_killed_at_its_deadline(process_engine: ProcessEngine,
                                                 hostile: ProcessArtifact) -> None:
    started = time.monotonic()
    bounds = limits(timeout_s=0.3)
    with pytest.raises(InvocationTimeout) as caught:
        run_mode(process_engine, hostile, "loop", bounds)
    stopped = time.monotonic()
    assert 0.3 <= stopped - started <= 0.4
    assert caught.value.type == "timeout"
    assert caught.value.detail["function"] == "hostile"
    assert stopped >= bounds.deadline, "the function was stopped before its deadline"
    assert stopped - bounds.deadline <= 0.1, \
        f"stopped {stopped - bounds.deadline:.3f} s after the deadline"
    assert_no_stray_runners(process_engine.pool.size)


def test_a_loop_is_killed_on_time_while_other_threads_hold_the_gil(
        process_engine: ProcessEngine, hostile: ProcessArtifact) -> None:
    """The native deadline thread sends the kill: it does not wait for the GIL, which two
    threads hold in long C calls (as when decoding large JSON bodies). When the waiting
    thread sent it, the loop used up to 421 ms of CPU for its 200 ms deadline."""
    spun_ms: list[float] = []

    def run() -> None:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        with pytest.raises(InvocationTimeout):
            run_mode(process_engine, hostile, "loop", limits(timeout_s=0.2))
        after = resource.getrusage(resource.RUSAGE_CHILDREN)  # reaped: the spinner's CPU
        spun_ms.append((after.ru_utime + after.ru_stime - before.ru_utime
                        - before.ru_stime) * 1e3)

    with pytest.raises(InvocationTimeout):  # warm: nothing is built during the measured runs
        run_mode(process_engine, hostile, "loop", limits(timeout_s=0.05))
    for _ in range(3):  # the holders start once the runner is spinning
        run_beside_gil_holders(run, spinning_for_s=0.02, cpu_s=busiest_child_cpu_s)
    assert len(spun_ms) == 3
    assert all(ms <= 220 for ms in spun_ms) and max(spun_ms) >= 100, spun_ms
    assert_no_stray_runners(process_engine.pool.size)


def test_killed_runner_is_reaped(cold_engine: ProcessEngine,
                                 process_functions: dict[str, bytes]) -> None:
    hostile = prepare(cold_engine, "hostile", process_functions["hostile"], HOSTILE_OUTPUTS)
    with pytest.raises(InvocationTimeout):
        run_mode(cold_engine, hostile, "loop", limits(timeout_s=0.05))
    assert_no_stray_runners()  # what is left: other engines' warm runners


def test_past_deadline_invocation_still_times_out(process_engine: ProcessEngine,
                                                  hostile: ProcessArtifact) -> None:
    with pytest.raises(InvocationTimeout):
        run_mode(process_engine, hostile, "loop", limits(timeout_s=-1.0))
    assert_no_stray_runners(process_engine.pool.size)


# --- memory -------------------------------------------------------------------------------

@pytest.mark.parametrize(("mode", "address"), [
    ("write_low", 0x8),
    ("write_private", 0x1000),  # the runner's parameters: never mapped for the function
    ("write_past", MEMORY + 4096),  # the context is exactly the memory bound
])
def test_write_outside_the_context_crashes(process_engine: ProcessEngine,
                                           hostile: ProcessArtifact, mode: str,
                                           address: int) -> None:
    error = crash(process_engine, hostile, mode)
    assert error.detail["address"] == f"{address:#x}"
    assert f"fault address {address:#x}" in error.message


def test_write_to_own_code_crashes(process_engine: ProcessEngine,
                                   hostile: ProcessArtifact) -> None:
    error = crash(process_engine, hostile, "write_text")
    address = int(error.detail["address"], 16)
    assert any(s.executable and not s.writable and s.address <= address < s.end
               for s in hostile.image.segments)


@pytest.mark.parametrize("mode", ["exec_data", "exec_heap", "exec_stack"])
def test_executing_a_data_page_crashes(process_engine: ProcessEngine, hostile: ProcessArtifact,
                                       mode: str) -> None:
    error = crash(process_engine, hostile, mode)
    address = int(error.detail["address"], 16)
    assert error.detail["rip"] == error.detail["address"], "the fault is not the jump target"
    assert error.detail["si_code"] == 2  # SEGV_ACCERR: mapped, but not executable
    if mode == "exec_data":
        assert any(s.writable and s.address <= address < s.end for s in hostile.image.segments)
    else:
        assert hostile.image.end <= address < MEMORY


@pytest.mark.parametrize("mode", ["stack_overflow", "wild_stack"])
def test_stack_faults_are_reported_as_crashes(process_engine: ProcessEngine,
                                              hostile: ProcessArtifact, mode: str) -> None:
    # The handler runs on its own stack, so even rsp = 0 is reported.
    crash(process_engine, hostile, mode)


def test_illegal_instruction_crashes(process_engine: ProcessEngine,
                                     hostile: ProcessArtifact) -> None:
    error = crash(process_engine, hostile, "ud2", signal.SIGILL)
    assert error.detail["rip"] == error.detail["address"]


def test_heap_exhaustion_is_out_of_memory(process_engine: ProcessEngine,
                                          hostile: ProcessArtifact) -> None:
    with pytest.raises(OutOfMemory) as caught:
        run_mode(process_engine, hostile, "heap_exhausted")
    assert caught.value.detail["memory_bytes"] == MEMORY


# --- exits --------------------------------------------------------------------------------

def test_raw_exit_group_with_status_is_function_failed(process_engine: ProcessEngine,
                                                       hostile: ProcessArtifact) -> None:
    with pytest.raises(FunctionFailed) as caught:
        run_mode(process_engine, hostile, "raw_exit")
    assert caught.value.detail["exit_code"] == 3


def test_exit_code_of_main_is_returned(process_engine: ProcessEngine,
                                       hostile: ProcessArtifact) -> None:
    assert run_mode(process_engine, hostile, "return7").exit_code == 7
    assert run_mode(process_engine, hostile, "noop").exit_code == 0


# --- forged output descriptors ------------------------------------------------------------

@pytest.mark.parametrize(("mode", "where"), [
    ("bufs_low", "output_bufs points outside the context: 40 bytes at 0x1000"),
    ("bufs_past_end", f"output_bufs points outside the context: 40 bytes at {MEMORY - 8:#x}"),
    ("bufs_top", "output_bufs points outside the context: 40 bytes at 0xfffffffffffffff0"),
    ("data_outside", "the data of output item 0 of set 'out' points outside the context: "
                     "16 bytes at 0x8"),
    ("name_outside", "the name of output item 0 of set 'out' points outside the context: "
                     f"4 bytes at {MEMORY + 4096:#x}"),
])
def test_descriptor_pointing_outside_the_context_is_bad_output(
        process_engine: ProcessEngine, hostile: ProcessArtifact, mode: str, where: str) -> None:
    assert where in bad_output(process_engine, hostile, mode).message


@pytest.mark.parametrize(("mode", "count"), [("count_2_32", 1 << 32),
                                             ("count_too_many", 1_000_001)])
def test_absurd_output_count_is_bad_output(process_engine: ProcessEngine,
                                           hostile: ProcessArtifact, mode: str,
                                           count: int) -> None:
    error = bad_output(process_engine, hostile, mode)
    assert error.detail["items"] == count
    assert f"claims {count} output items" in error.message


def test_zero_length_item_is_one_empty_item(process_engine: ProcessEngine,
                                            hostile: ProcessArtifact) -> None:
    # Its data pointer is garbage, but zero bytes are read from it.
    result = run_mode(process_engine, hostile, "empty_item")
    assert result.exit_code == 0
    assert result.outputs == (DataSet("out", (Item("", 5, b""),)), DataSet("more", ()))


def test_gib_item_is_bad_output(process_engine: ProcessEngine, hostile: ProcessArtifact) -> None:
    error = bad_output(process_engine, hostile, "gib_item")
    assert "claims 1073741824 bytes" in error.message
    assert error.detail["max_output_bytes"] == MiB
    # With room in the output budget, the claim still runs past the 128 MiB context.
    error = bad_output(process_engine, hostile, "gib_item", max_output_bytes=4 << 30)
    assert "the data of output item 0 of set 'out' points outside the context" in error.message


def test_huge_name_length_is_bad_output(process_engine: ProcessEngine,
                                        hostile: ProcessArtifact) -> None:
    error = bad_output(process_engine, hostile, "huge_name", max_output_bytes=1 << 62)
    assert "output item 0 of set 'out'" in error.message


def test_key_beyond_32_bits_is_bad_output(process_engine: ProcessEngine,
                                          hostile: ProcessArtifact) -> None:
    error = bad_output(process_engine, hostile, "big_key")
    assert "has key 4294967296, beyond 2^32 - 1" in error.message


@pytest.mark.parametrize(("mode", "offsets"), [("descending", [0, 2, 1]),
                                               ("nonzero_start", [1, 1, 1])])
def test_offsets_not_ascending_from_zero_are_bad_output(
        process_engine: ProcessEngine, hostile: ProcessArtifact, mode: str,
        offsets: list[int]) -> None:
    error = bad_output(process_engine, hostile, mode)
    assert error.detail["offsets"] == offsets


def test_well_formed_forgery_is_read_faithfully(process_engine: ProcessEngine,
                                                hostile: ProcessArtifact) -> None:
    # The control for the tests above: hand-written descriptors that are valid are accepted.
    result = run_mode(process_engine, hostile, "valid_forgery")
    assert result.outputs == (DataSet("out", (Item("", 1, b"pa"),)),
                              DataSet("more", (Item("n", 2**32 - 1, b"ylo"),)))


# --- the engine afterwards ----------------------------------------------------------------

ATTACKS = ("socket", "int80", "x32", "write_low", "exec_data", "bufs_low", "count_2_32",
           "big_key", "raw_exit")


def test_engine_works_after_attacks_and_leaks_nothing(
        cold_engine: ProcessEngine, process_functions: dict[str, bytes]) -> None:
    hostile = prepare(cold_engine, "hostile", process_functions["hostile"], HOSTILE_OUTPUTS)
    matmul = prepare(cold_engine, "matmul", process_functions["matmul"])
    check_matmul(cold_engine, matmul, 0)
    descriptors = sorted(os.listdir("/proc/self/fd"))
    before = cold_engine.statistics()
    outcomes: dict[str, str] = {}
    for mode in ATTACKS:
        try:
            run_mode(cold_engine, hostile, mode)
            outcomes[mode] = "returned"
        except SandboxError as exc:
            outcomes[mode] = exc.type
        check_matmul(cold_engine, matmul, len(mode))
    after = cold_engine.statistics()
    failed = sum(outcome != "returned" for outcome in outcomes.values())
    assert after.invocations - before.invocations == 2 * len(ATTACKS)
    assert after.failures - before.failures == failed
    assert sorted(os.listdir("/proc/self/fd")) == descriptors
    assert_no_stray_runners()
    assert "returned" not in outcomes.values(), f"attacks that ran to the end: {outcomes}"


def test_attacks_and_normal_functions_concurrently(process_engine: ProcessEngine,
                                                   hostile: ProcessArtifact,
                                                   matmul: ProcessArtifact) -> None:
    expected: dict[str, type[SandboxError]] = {
        "socket": ForbiddenSyscall, "fork": ForbiddenSyscall, "write_past": SandboxCrash,
        "bufs_top": BadOutput, "loop": InvocationTimeout,
    }
    modes = [list(expected)[i % len(expected)] for i in range(20)]

    def attack(mode: str) -> type[BaseException] | None:
        bounds = limits(timeout_s=0.2 if mode == "loop" else 5.0)
        try:
            run_mode(process_engine, hostile, mode, bounds)
        except SandboxError as exc:
            return type(exc)
        return None

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        attacks = [pool.submit(attack, mode) for mode in modes]
        normal = [pool.submit(check_matmul, process_engine, matmul, seed) for seed in range(20)]
        for future in normal:
            future.result()  # raises if any result was wrong
        outcomes = [future.result() for future in attacks]
    assert outcomes == [expected[mode] for mode in modes]
    assert_no_stray_runners(process_engine.pool.size)
