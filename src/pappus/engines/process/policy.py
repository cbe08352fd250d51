"""The process engine's system call policy, as data, and the seccomp filter generated from it.

:data:`POLICY` is the single source of truth for the function: the
classic-BPF program the runner installs is compiled from it
(:func:`compile_filter`), and the table in ``docs/process-engine.md`` is
printed from it (:func:`policy_markdown`; a test keeps the page in sync).
Everything not listed is denied.

The runner installs the filter *before* the context arrives (and a zygote
once for all its clones), so its own set-up calls after that are told apart
by where they are made: :data:`SETUP_CALLS` from the runner's set-up code,
:func:`final_calls` from its final page, which unmaps the set-up code before
jumping to the function (see ``runner.c``). Once the function runs, no
set-up code is mapped and the function cannot map any, so only
:data:`POLICY` is left to it.

The filter, in order:

1. architecture other than x86-64 (``int 0x80`` i386 calls) → deny;
2. x32 system call numbers (bit 30 set) → deny;
3. a call from the runner's set-up code: :data:`SETUP_CALLS` → allow, else deny;
4. a call from its final page: :func:`final_calls` → allow, else deny;
5. each rule of :data:`POLICY`: the system call number, then its argument
   conditions → allow;
6. anything else → deny.

"Deny" is ``SECCOMP_RET_TRAP``: the kernel refuses the call and raises
SIGSYS, which the runner's handler turns into a report (number,
architecture, address) and an immediate exit — the function never runs on
after a forbidden call, and the worker reports ``forbidden_syscall`` naming
it. (``SECCOMP_RET_KILL_PROCESS`` would kill as surely but lose the number.)
"""

from __future__ import annotations

from dataclasses import dataclass

from pappus.engines import seccomp
from pappus.engines.process.runner import RunnerLayout
from pappus.engines.seccomp import SECCOMP_RET_ALLOW, SECCOMP_RET_TRAP, ArgumentEquals, Instruction
from pappus.engines.syscalls import syscall_number

ARCH_SET_FS = 0x1002
CLONE_RUNNER = 0x8000 | 17  # CLONE_PARENT | SIGCHLD, the zygote's only clone
RLIMIT_CPU = 0
PR_SET_DUMPABLE = 4

__all__ = ["POLICY", "SECCOMP_RET_ALLOW", "SECCOMP_RET_TRAP", "SETUP_CALLS", "ArgumentEquals",
           "Instruction", "Rule", "compile_filter", "filter_bytes", "final_calls",
           "policy_markdown", "runner_calls_markdown"]


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


SETUP_CALLS: tuple[Rule, ...] = (
    Rule("recvmsg", (), "receiving the context descriptor"),
    Rule("pread64", (), "reading the runner parameters from the context"),
    Rule("mmap", (), "mapping the context at its own addresses (MAP_FIXED_NOREPLACE)"),
    Rule("mprotect", (), "each segment's protection"),
    Rule("close_range", (), "closing every descriptor"),
    Rule("setrlimit", (ArgumentEquals(0, RLIMIT_CPU),), "the function's CPU-time limit"),
    Rule("prctl", (ArgumentEquals(0, PR_SET_DUMPABLE),), "not dumpable"),
    Rule("read", (), "zygote: a request for a runner"),
    Rule("socketpair", (), "zygote: a new runner's socket"),
    Rule("clone", (ArgumentEquals(0, CLONE_RUNNER),), "zygote: a new runner (CLONE_PARENT)"),
    Rule("dup3", (), "zygote's clone: its socket onto descriptor 3"),
    Rule("sendmsg", (), "zygote: the new runner's socket and pid, to the worker"),
)
"""What the runner's set-up code (unmapped before the function runs) may call once the
filter is in force. Limits, signal handlers and no_new_privs are set before it is."""


def final_calls(layout: RunnerLayout) -> tuple[Rule, ...]:
    """What the runner's final page (mapped while the function runs) may call."""
    return (
        Rule("munmap", (ArgumentEquals(0, layout.setup_start),
                        ArgumentEquals(1, layout.setup_length)),
             "exactly the unmapping of the set-up code, before the jump to the function"),
        Rule("exit_group", (), "every exit of the runner's own: a set-up failure, the report "
             "handler's, the zygote's"),
    )


def _allow(rules: tuple[Rule, ...]) -> tuple[seccomp.Rule, ...]:
    return tuple(seccomp.Rule(rule.name, seccomp.ALLOW, rule.conditions) for rule in rules)


def compile_filter(layout: RunnerLayout, policy: tuple[Rule, ...] = POLICY) -> list[Instruction]:
    """The seccomp program for the runner at ``layout`` and ``policy``: see the module docstring."""
    regions = (
        seccomp.CodeRegion("runner set-up code", layout.setup_start, layout.final_start,
                           _allow(SETUP_CALLS)),
        seccomp.CodeRegion("runner final page", layout.final_start, layout.final_end,
                           _allow(final_calls(layout))),
    )
    return seccomp.compile_policy(_allow(policy), seccomp.TRAP, regions)


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


def runner_calls_markdown() -> str:
    """The runner's own calls, by where they are made (the second table in
    ``docs/process-engine.md``)."""
    lines = ["| made from | system call | allowed when | why |", "|---|---|---|---|"]
    for rule in SETUP_CALLS:
        when = ", ".join(c.describe() for c in rule.conditions) or "always"
        lines.append(f"| set-up code | `{rule.name}` | {when} | {rule.why} |")
    symbolic = RunnerLayout(0, 1, 2)  # the conditions name the layout; the docs name its parts
    for rule in final_calls(symbolic):
        when = "arg0, arg1 == the set-up code's start and length" if rule.conditions else "always"
        lines.append(f"| final page | `{rule.name}` | {when} | {rule.why} |")
    lines.append("| either | anything else | never: SIGSYS | deny by default |")
    return "\n".join(lines) + "\n"
