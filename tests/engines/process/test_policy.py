"""The seccomp program generated from the policy: its structure, and what it decides.

A small classic-BPF interpreter runs the generated program on ``struct
seccomp_data`` values, so the tests check the filter's decisions (the
program the kernel will run), not just its shape.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from pappus.engines.process.engine import MAX_FILTER
from pappus.engines.process.policy import (
    ARCH_SET_FS,
    POLICY,
    SECCOMP_RET_ALLOW,
    SECCOMP_RET_TRAP,
    SETUP_CALLS,
    ArgumentEquals,
    Instruction,
    Rule,
    compile_filter,
    filter_bytes,
    policy_markdown,
    runner_calls_markdown,
)
from pappus.engines.process.runner import (
    RUNNER_ADDRESS,
    RunnerLayout,
    ensure_runner,
    runner_layout,
)
from pappus.engines.syscalls import (
    AUDIT_ARCH_I386,
    AUDIT_ARCH_X86_64,
    X32_SYSCALL_BIT,
    X86_64,
    syscall_name,
)
from tests.engines import bpf
from tests.engines.bpf import JA, JEQ_K, JGE_K, JGT_K, LD_W_ABS, RET_K
from tests.engines.process.support import code_bytes

BPF_MAXINSNS = 4096
ALLOWED = {"exit": 60, "exit_group": 231, "arch_prctl": 158}
LAYOUT = RunnerLayout(0x7E00_0000_0000, 0x7E00_0000_2000, 0x7E00_0000_4000)
"""A runner's code as built (set-up code, then two final pages)."""
FUNCTION_IP = 0x401000


def run(program: list[Instruction], nr: int, arch: int = AUDIT_ARCH_X86_64,
        args: tuple[int, ...] = (0,) * 6, ip: int = FUNCTION_IP) -> int:
    """What ``program`` returns for one system call (a classic-BPF interpreter)."""
    return bpf.run(program, nr, arch, args, ip)


@pytest.fixture(scope="module")
def program() -> list[Instruction]:
    return compile_filter(LAYOUT)


def allow(program: list[Instruction], nr: int, arch: int = AUDIT_ARCH_X86_64,
          args: tuple[int, ...] = (ARCH_SET_FS, 0, 0, 0, 0, 0), ip: int = FUNCTION_IP) -> bool:
    verdict = run(program, nr, arch, args, ip)
    assert verdict in (SECCOMP_RET_ALLOW, SECCOMP_RET_TRAP), f"verdict {verdict:#x}"
    return verdict == SECCOMP_RET_ALLOW


# --- structure ----------------------------------------------------------------------------

def test_the_policy_is_exactly_three_calls() -> None:
    assert {rule.name: rule.number for rule in POLICY} == ALLOWED
    (arch_prctl,) = [rule for rule in POLICY if rule.conditions]
    assert arch_prctl.name == "arch_prctl"
    assert arch_prctl.conditions == (ArgumentEquals(0, ARCH_SET_FS),)


def test_first_instruction_loads_the_architecture(program: list[Instruction]) -> None:
    assert program[0] == Instruction(LD_W_ABS, 0, 0, 4)  # offsetof(seccomp_data, arch)
    check = program[1]
    assert (check.code, check.k, check.jt) == (JEQ_K, AUDIT_ARCH_X86_64, 0)
    # a foreign architecture goes straight to a RET SECCOMP_RET_TRAP
    assert program[2 + check.jf] == Instruction(RET_K, 0, 0, SECCOMP_RET_TRAP)


def test_deny_is_trap_and_nothing_else_is_returned(program: list[Instruction]) -> None:
    returns = {op.k for op in program if op.code == RET_K}
    assert returns == {SECCOMP_RET_ALLOW, SECCOMP_RET_TRAP}
    assert SECCOMP_RET_TRAP == 0x00030000


def test_every_jump_lands_inside_the_program(program: list[Instruction]) -> None:
    assert program[-1].code == RET_K, "the last instruction must return"
    assert {op.code for op in program} <= {LD_W_ABS, JA, JEQ_K, JGE_K, JGT_K, RET_K}
    for index, target in bpf.jump_targets(program):
        assert index < target < len(program)


def test_fits_the_kernel_and_the_runner(program: list[Instruction]) -> None:
    assert len(program) <= min(BPF_MAXINSNS, MAX_FILTER)
    raw = filter_bytes(program)
    assert len(raw) == 8 * len(program)
    decoded = [Instruction(*struct.unpack_from("<HBBI", raw, 8 * i)) for i in range(len(program))]
    assert decoded == program


# --- decisions ----------------------------------------------------------------------------

def test_only_the_three_calls_are_allowed(program: list[Instruction]) -> None:
    numbers = [*X86_64, *range(335, 600), 0xFFFF, 0x3FFFFFFF, -1, -100]
    allowed = {nr for nr in numbers if allow(program, nr)}
    assert {syscall_name(nr) for nr in allowed} == set(ALLOWED), \
        f"allowed besides the policy: {sorted(allowed - set(ALLOWED.values()))[:20]}"


@pytest.mark.parametrize("name", ["socket", "open", "openat", "execve", "fork", "clone", "vfork",
                                  "ptrace", "kill", "mmap", "mprotect", "brk", "read", "write"])
def test_dangerous_calls_trap(program: list[Instruction], name: str) -> None:
    nr = next(number for number, known in X86_64.items() if known == name)
    assert run(program, nr) == SECCOMP_RET_TRAP, f"{name} ({nr}) is not denied"


@pytest.mark.parametrize("nr", [60, 231])
def test_exits_are_allowed_whatever_their_arguments(program: list[Instruction], nr: int) -> None:
    for args in [(0,) * 6, (259, 1, 2, 3, 4, 5), (2**64 - 1,) * 6]:
        assert allow(program, nr, args=args)


@pytest.mark.parametrize(("option", "allowed"), [
    (ARCH_SET_FS, True),
    (0x1001, False),  # ARCH_SET_GS
    (0x1003, False),  # ARCH_GET_FS
    (0x1004, False),  # ARCH_GET_GS
    (ARCH_SET_FS | 1 << 32, False),  # the kernel truncates to int: must compare all 64 bits
    (ARCH_SET_FS | 1 << 63, False),
    (0, False),
])
def test_arch_prctl_only_sets_fs(program: list[Instruction], option: int,
                                 allowed: bool) -> None:
    assert allow(program, 158, args=(option, 0x12345, 0, 0, 0, 0)) is allowed


@pytest.mark.parametrize("nr", [60, 231, 158, 41])
def test_x32_numbers_trap(program: list[Instruction], nr: int) -> None:
    assert not allow(program, nr | X32_SYSCALL_BIT)


@pytest.mark.parametrize("arch", [AUDIT_ARCH_I386, 0, 0x4000003E, 0xC00000B7])
@pytest.mark.parametrize("nr", [1, 60, 158, 231, 252])
def test_other_architectures_trap(program: list[Instruction], arch: int, nr: int) -> None:
    assert not allow(program, nr, arch=arch)


def test_conditions_are_compiled_faithfully() -> None:
    # A policy with two conditions on one call, between unconditional ones.
    policy = (Rule("exit", (), "x"),
              Rule("read", (ArgumentEquals(0, 3), ArgumentEquals(2, 1 << 33 | 7)), "y"),
              Rule("exit_group", (), "z"))
    program = compile_filter(LAYOUT, policy)
    assert allow(program, 0, args=(3, 99, 1 << 33 | 7, 0, 0, 0))
    assert not allow(program, 0, args=(3, 99, 7, 0, 0, 0))
    assert not allow(program, 0, args=(4, 99, 1 << 33 | 7, 0, 0, 0))
    assert not allow(program, 0, args=(3 | 1 << 40, 99, 1 << 33 | 7, 0, 0, 0))
    assert allow(program, 60) and allow(program, 231)
    assert not allow(program, 1)


def test_a_long_policy_compiles_to_a_search_and_decides_every_call() -> None:
    # 300 calls: a linear chain could not jump past them (8-bit offsets) and would
    # compare up to 300 times per call; the search compares about log2(300) times.
    names = list(X86_64.values())[:300]
    policy = tuple(Rule(name, (), "many") for name in names)
    program = compile_filter(LAYOUT, policy)
    assert len(program) <= BPF_MAXINSNS
    allowed = {syscall_name(nr) for nr in [*X86_64, *range(335, 600)] if allow(program, nr)}
    assert allowed == set(names)
    longest = max(_steps(program, nr) for nr in X86_64)
    assert longest <= 30, longest


def _steps(program: list[Instruction], nr: int) -> int:
    """Instructions run for call ``nr`` (straight-line: every jump goes forward)."""
    pc, steps = 0, 0
    accumulator = 0
    while program[pc].code != RET_K:
        op = program[pc]
        steps += 1
        pc += 1
        if op.code == LD_W_ABS:
            accumulator = {0: nr, 4: AUDIT_ARCH_X86_64, 8: FUNCTION_IP, 12: 0}.get(op.k,
                                                                                  ARCH_SET_FS)
        elif op.code == JA:
            pc += op.k
        else:
            taken = {JEQ_K: accumulator == op.k, JGE_K: accumulator >= op.k,
                     JGT_K: accumulator > op.k}[op.code]
            pc += op.jt if taken else op.jf
    return steps


# --- the runner's own calls, told apart by where they are made ---------------------------

SETUP_IPS = [LAYOUT.setup_start + 1, LAYOUT.setup_start + 0x1234, LAYOUT.final_start]
"""Addresses seccomp reports for calls in the set-up code: the instruction after the
``syscall``, so a call ending exactly at the final page's start is still set-up code."""
FINAL_IPS = [LAYOUT.final_start + 1, LAYOUT.final_start + 0x1800, LAYOUT.final_end]
OUTSIDE_IPS = [FUNCTION_IP, LAYOUT.setup_start, LAYOUT.final_end + 1, 0x10000,
               LAYOUT.setup_start & 0xFFFF_FFFF, LAYOUT.final_start & 0xFFFF_FFFF | 1 << 32,
               LAYOUT.final_start + (1 << 32), 2**64 - 2]
"""Function code, the bounds just outside, and addresses whose low or high 32 bits alone
fall inside a region."""
MUNMAP, MMAP = 11, 9


def _calls(names: list[str]) -> set[int]:
    return {number for number, known in X86_64.items() if known in names}


@pytest.mark.parametrize("ip", SETUP_IPS)
def test_the_set_up_code_may_make_exactly_its_own_calls(program: list[Instruction],
                                                        ip: int) -> None:
    other = (0xDEAD,) * 6  # no condition holds for these arguments
    allowed = {nr for nr in X86_64 if allow(program, nr, args=other, ip=ip)}
    unconditional = {rule.number for rule in SETUP_CALLS if not rule.conditions}
    assert allowed == unconditional, sorted(syscall_name(nr) for nr in allowed ^ unconditional)
    assert allow(program, 56, args=(0x8011, 0, 0, 0, 0, 0), ip=ip)  # the zygote's clone
    assert not allow(program, 56, args=(0x8011 | 0x100, 0, 0, 0, 0, 0), ip=ip)  # CLONE_VM too
    assert allow(program, 160, args=(0, 0, 0, 0, 0, 0), ip=ip)  # RLIMIT_CPU
    assert not allow(program, 160, args=(7, 0, 0, 0, 0, 0), ip=ip)  # RLIMIT_NOFILE
    assert allow(program, 157, args=(4, 0, 0, 0, 0, 0), ip=ip)  # PR_SET_DUMPABLE
    assert not allow(program, 157, args=(38, 0, 0, 0, 0, 0), ip=ip)  # anything else
    # not even the function's calls: the set-up code exits through the final page
    assert not allow(program, 231, args=(0,) * 6, ip=ip)
    assert not allow(program, 158, ip=ip)


@pytest.mark.parametrize("ip", FINAL_IPS)
def test_the_final_page_may_only_unmap_the_set_up_code_and_exit(program: list[Instruction],
                                                                ip: int) -> None:
    exact = (LAYOUT.setup_start, LAYOUT.setup_length, 0, 0, 0, 0)
    assert allow(program, MUNMAP, args=exact, ip=ip)
    for wrong in [(LAYOUT.setup_start, LAYOUT.setup_length + 4096), (0x10000, 0x1000),
                  (LAYOUT.setup_start + (1 << 32), LAYOUT.setup_length),
                  (LAYOUT.final_start, 0x2000)]:
        assert not allow(program, MUNMAP, args=(*wrong, 0, 0, 0, 0), ip=ip), wrong
    assert allow(program, 231, args=(0,) * 6, ip=ip)
    allowed = {nr for nr in X86_64 if allow(program, nr, args=exact, ip=ip)}
    assert allowed == {MUNMAP, 231}, sorted(syscall_name(nr) for nr in allowed)


@pytest.mark.parametrize("ip", OUTSIDE_IPS)
def test_anywhere_else_only_the_function_policy_holds(program: list[Instruction],
                                                      ip: int) -> None:
    exact = (LAYOUT.setup_start, LAYOUT.setup_length, 0, 0, 0, 0)
    assert not allow(program, MUNMAP, args=exact, ip=ip)
    assert not allow(program, MMAP, args=(0x10000, 4096, 7, 0x32, 0, 0), ip=ip)
    allowed = {nr for nr in X86_64 if allow(program, nr, ip=ip)}
    assert {syscall_name(nr) for nr in allowed} == set(ALLOWED)


@pytest.mark.parametrize("ip", [*SETUP_IPS, *FINAL_IPS])
def test_no_region_lets_another_abi_through(program: list[Instruction], ip: int) -> None:
    assert not allow(program, 0, arch=AUDIT_ARCH_I386, ip=ip)
    assert not allow(program, 0 | X32_SYSCALL_BIT, ip=ip)
    assert not allow(program, 231 | X32_SYSCALL_BIT, ip=ip)


def test_the_built_runner_is_laid_out_as_its_filter_expects(runner_dir: Path) -> None:
    binary = ensure_runner(runner_dir).read_bytes()
    layout = runner_layout(binary)
    assert layout.setup_start == RUNNER_ADDRESS
    assert layout.setup_start < layout.final_start < layout.final_end
    assert layout.final_start % 4096 == 0 and layout.final_end % 4096 == 0
    # Every syscall instruction (0f 05) of the set-up code is inside the set-up region
    # and every one of the final page inside the final region: found in the file's bytes.
    program = compile_filter(layout)
    recvmsg = (47, (0,) * 6)
    unmap = (MUNMAP, (layout.setup_start, layout.setup_length, 0, 0, 0, 0))
    for start, end, (nr, args) in [(layout.setup_start, layout.final_start, recvmsg),
                                   (layout.final_start, layout.final_end, unmap)]:
        code = code_bytes(binary, start, end)
        sites = [start + i + 2 for i in range(len(code) - 1) if code[i:i + 2] == b"\x0f\x05"]
        assert sites, f"no syscall instruction in [{start:#x}, {end:#x})"
        for site in sites:
            assert allow(program, nr, args=args, ip=site), f"{syscall_name(nr)} at {site:#x}"


def test_a_runner_built_otherwise_is_refused() -> None:
    with pytest.raises(RuntimeError, match="unreadable"):
        runner_layout(b"not an ELF file")


# --- documentation ------------------------------------------------------------------------

def test_policy_markdown_lists_each_rule() -> None:
    lines = policy_markdown().splitlines()
    assert lines[0] == "| system call | number | allowed when | why |"
    for rule in POLICY:
        when = ", ".join(c.describe() for c in rule.conditions) or "always"
        assert f"| `{rule.name}` | {rule.number} | {when} | {rule.why} |" in lines
    assert "| `arch_prctl` | 158 | arg0 == 0x1002 |" in policy_markdown()
    defaults = lines[2 + len(POLICY):]
    assert len(defaults) == 3
    assert "forbidden_syscall" in defaults[0]
    assert "x32" in defaults[1] and "i386" in defaults[2]


def test_runner_calls_markdown_lists_each_call_by_where_it_is_made() -> None:
    lines = runner_calls_markdown().splitlines()
    assert lines[0] == "| made from | system call | allowed when | why |"
    for rule in SETUP_CALLS:
        assert any(line.startswith(f"| set-up code | `{rule.name}` |") for line in lines)
    final = [line for line in lines if line.startswith("| final page |")]
    assert [line.split("|")[2].strip() for line in final] == ["`munmap`", "`exit_group`"]
    assert "start and length" in final[0]
    assert lines[-1].startswith("| either | anything else | never")
