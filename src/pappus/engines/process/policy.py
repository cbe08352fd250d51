"""The process engine's system call policy, as data, and the seccomp filter generated from it.

:data:`POLICY` is the single source of truth: the classic-BPF program the
runner installs is compiled from it (:func:`compile_filter`), and the table in
``docs/process-engine.md`` is printed from it (:func:`policy_markdown`; a test
keeps the page in sync). Everything not listed is denied.

The filter, in order:

1. architecture other than x86-64 (``int 0x80`` i386 calls) → deny;
2. x32 system call numbers (bit 30 set) → deny;
3. each rule: the system call number, then its argument conditions → allow;
4. anything else → deny.

"Deny" is ``SECCOMP_RET_TRAP``: the kernel refuses the call and raises
SIGSYS, which the runner's handler turns into a report (number,
architecture, address) and an immediate exit — the function never runs on
after a forbidden call, and the worker reports ``forbidden_syscall`` naming
it. (``SECCOMP_RET_KILL_PROCESS`` would kill as surely but lose the number.)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pappus.engines.process.syscalls import (
    AUDIT_ARCH_X86_64,
    X32_SYSCALL_BIT,
    syscall_number,
)

SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_TRAP = 0x00030000
ARCH_SET_FS = 0x1002

# classic BPF opcodes
_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K

# offsets in struct seccomp_data
_NR, _ARCH = 0, 4


def _argument_low(index: int) -> int:
    return 16 + 8 * index


def _argument_high(index: int) -> int:
    return 16 + 8 * index + 4


@dataclass(frozen=True, slots=True)
class ArgumentEquals:
    """Condition: 64-bit argument ``index`` (0-based) equals ``value``."""

    index: int
    value: int

    def describe(self) -> str:
        return f"arg{self.index} == {self.value:#x}"


@dataclass(frozen=True, slots=True)
class Rule:
    """Allow system call ``name`` when every condition holds; ``why`` is documentation."""

    name: str
    conditions: tuple[ArgumentEquals, ...]
    why: str

    @property
    def number(self) -> int:
        return syscall_number(self.name)


POLICY: tuple[Rule, ...] = (
    Rule("exit", (), "end the process (the SDK uses exit_group; exit is harmless)"),
    Rule("exit_group", (), "the SDK's normal exit, after it wrote its outputs"),
    Rule("arch_prctl", (ArgumentEquals(0, ARCH_SET_FS),),
         "the SDK sets its thread pointer (TLS, stack-protector canary) at start"),
)
"""Exactly what a function may do; every other system call is denied."""


@dataclass(frozen=True, slots=True)
class Instruction:
    """One classic-BPF instruction (``struct sock_filter``)."""

    code: int
    jt: int
    jf: int
    k: int


def compile_filter(policy: tuple[Rule, ...] = POLICY) -> list[Instruction]:
    """The seccomp program for ``policy``: check the ABI first, then allow-list, else deny."""
    program: list[Instruction] = []
    jumps: dict[int, tuple[str, str]] = {}  # instruction index → (label if true, if false)
    labels: dict[str, int] = {}

    def emit(code: int, k: int, on_true: str = "next", on_false: str = "next") -> None:
        if code in (_JEQ_K, _JGE_K):
            jumps[len(program)] = (on_true, on_false)
        program.append(Instruction(code, 0, 0, k))

    emit(_LD_W_ABS, _ARCH)
    emit(_JEQ_K, AUDIT_ARCH_X86_64, "next", "deny")
    emit(_LD_W_ABS, _NR)
    emit(_JGE_K, X32_SYSCALL_BIT, "deny", "next")
    for rule in policy:
        if not rule.conditions:
            emit(_JEQ_K, rule.number, "allow", "next")
            continue
        skip = f"after {rule.name}"
        emit(_JEQ_K, rule.number, "next", skip)
        for condition in rule.conditions:
            emit(_LD_W_ABS, _argument_low(condition.index))
            emit(_JEQ_K, condition.value & 0xFFFF_FFFF, "next", "deny")
            emit(_LD_W_ABS, _argument_high(condition.index))
            emit(_JEQ_K, condition.value >> 32, "next", "deny")
        emit(_RET_K, SECCOMP_RET_ALLOW)
        labels[skip] = len(program)
        emit(_LD_W_ABS, _NR)  # the conditions replaced the number: reload it
    # Deny comes first: it is where the last rule falls through to. Allow is
    # reached only by an explicit jump.
    labels["deny"] = len(program)
    emit(_RET_K, SECCOMP_RET_TRAP)
    labels["allow"] = len(program)
    emit(_RET_K, SECCOMP_RET_ALLOW)
    for index, (on_true, on_false) in jumps.items():
        instruction = program[index]
        program[index] = Instruction(instruction.code, _offset(labels, index, on_true),
                                     _offset(labels, index, on_false), instruction.k)
    return program


def _offset(labels: dict[str, int], index: int, target: str) -> int:
    if target == "next":
        return 0
    distance = labels[target] - index - 1
    if not 0 <= distance <= 255:
        raise ValueError(f"seccomp jump to {target} out of range ({distance})")
    return distance


def filter_bytes(program: list[Instruction]) -> bytes:
    """``program`` as an array of ``struct sock_filter``."""
    return b"".join(struct.pack("<HBBI", i.code, i.jt, i.jf, i.k) for i in program)


def policy_markdown(policy: tuple[Rule, ...] = POLICY) -> str:
    """The policy as a Markdown table (the one in ``docs/process-engine.md``)."""
    lines = ["| system call | number | allowed when | why |", "|---|---|---|---|"]
    for rule in policy:
        when = ", ".join(c.describe() for c in rule.conditions) or "always"
        lines.append(f"| `{rule.name}` | {rule.number} | {when} | {rule.why} |")
    lines.append("| any other x86-64 call | | never: SIGSYS → `forbidden_syscall` "
                 "| deny by default |")
    lines.append("| x32 calls (number bit 30) | | never | not our ABI |")
    lines.append("| i386 calls (`int 0x80`), any other architecture | | never | not our ABI |")
    return "\n".join(lines) + "\n"
