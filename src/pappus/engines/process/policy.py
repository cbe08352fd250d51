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

from dataclasses import dataclass

from pappus.engines import seccomp
from pappus.engines.seccomp import SECCOMP_RET_ALLOW, SECCOMP_RET_TRAP, ArgumentEquals, Instruction
from pappus.engines.syscalls import syscall_number

ARCH_SET_FS = 0x1002

__all__ = ["POLICY", "SECCOMP_RET_ALLOW", "SECCOMP_RET_TRAP", "ArgumentEquals", "Instruction",
           "Rule", "compile_filter", "filter_bytes", "policy_markdown"]


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


def compile_filter(policy: tuple[Rule, ...] = POLICY) -> list[Instruction]:
    """The seccomp program for ``policy``: check the ABI first, then allow-list, else deny."""
    rules = tuple(seccomp.Rule(rule.name, seccomp.ALLOW, rule.conditions) for rule in policy)
    return seccomp.compile_policy(rules, seccomp.TRAP)


def filter_bytes(program: list[Instruction]) -> bytes:
    """``program`` as an array of ``struct sock_filter``."""
    return seccomp.program_bytes(program)


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
