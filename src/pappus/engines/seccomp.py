"""Compile a system call policy table into a classic-BPF seccomp program.

Shared by the ``process`` engine (allow three calls, trap the rest) and the
``linux`` engine (run some calls natively, send file calls to a supervisor,
refuse others with an honest errno, kill on anything unknown). A policy is an
ordered list of :class:`Rule`; for a system call the first rule whose number
matches and whose conditions all hold decides; if none does, ``default``
decides. Before any rule, a foreign architecture (``int 0x80``) or an x32
number gets ``default`` too.

The rules are compiled into a binary search on the call number (a few
comparisons per call, not one per rule): the kernel runs the program at
every system call, and once per call number when it installs the filter (to
find calls it can allow without running it), so a linear chain of a long
table would cost at every call and about 0.15 ms per sandbox start.

Conditions compare 64-bit arguments as two 32-bit halves (cBPF loads 32 bits).

A policy may also name :class:`CodeRegion` s: calls made from instructions
inside a region get that region's rules instead (seccomp sees the
instruction pointer). The process engine uses this to let its runner's
set-up code, which it unmaps before the function runs, make the calls the
function may not.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pappus.engines.syscalls import AUDIT_ARCH_X86_64, X32_SYSCALL_BIT, syscall_number

SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_TRAP = 0x00030000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_USER_NOTIF = 0x7FC00000
SECCOMP_RET_ALLOW = 0x7FFF0000

LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
JGT_K = 0x25  # BPF_JMP | BPF_JGT | BPF_K
JSET_K = 0x45  # BPF_JMP | BPF_JSET | BPF_K
RET_K = 0x06  # BPF_RET | BPF_K
JA = 0x05  # BPF_JMP | BPF_JA: unconditional, 32-bit offset
LEAF_NUMBERS = 4  # call numbers compared one by one at the bottom of the search
MAX_INSTRUCTIONS = 4096  # BPF_MAXINSNS

NR_OFFSET, ARCH_OFFSET, IP_OFFSET = 0, 4, 8


def argument_offset(index: int, high: bool) -> int:
    """Offset of the low or high 32 bits of argument ``index`` in ``struct seccomp_data``."""
    return 16 + 8 * index + (4 if high else 0)


@dataclass(frozen=True, slots=True)
class Action:
    """What the kernel does with a call: a ``SECCOMP_RET_*`` value, and a name for docs."""

    name: str
    value: int

    @staticmethod
    def errno(code: int, label: str) -> Action:
        return Action(f"errno({label})", SECCOMP_RET_ERRNO | (code & 0xFFFF))


ALLOW = Action("native", SECCOMP_RET_ALLOW)
NOTIFY = Action("emulate", SECCOMP_RET_USER_NOTIF)
TRAP = Action("trap", SECCOMP_RET_TRAP)
KILL = Action("kill", SECCOMP_RET_KILL_PROCESS)


@dataclass(frozen=True, slots=True)
class ArgumentEquals:
    """Argument ``index`` (64-bit) equals ``value``."""

    index: int
    value: int

    def describe(self) -> str:
        return f"arg{self.index} == {self.value:#x}"


@dataclass(frozen=True, slots=True)
class ArgumentHasNone:
    """Argument ``index`` has none of the bits of ``mask`` set."""

    index: int
    mask: int
    label: str = ""

    def describe(self) -> str:
        return f"arg{self.index} & {self.label or hex(self.mask)} == 0"


@dataclass(frozen=True, slots=True)
class ArgumentHasAll:
    """Argument ``index`` has every bit of ``mask`` set."""

    index: int
    mask: int
    label: str = ""

    def describe(self) -> str:
        return f"arg{self.index} has {self.label or hex(self.mask)}"


Condition = ArgumentEquals | ArgumentHasNone | ArgumentHasAll


@dataclass(frozen=True, slots=True)
class Rule:
    """``name`` gets ``action`` when every condition holds; ``note`` documents fidelity."""

    name: str
    action: Action
    conditions: tuple[Condition, ...] = ()
    note: str = ""

    @property
    def number(self) -> int:
        return syscall_number(self.name)


@dataclass(frozen=True, slots=True)
class CodeRegion:
    """Calls made from the code in ``(start, end]`` get ``rules`` (else the default).

    The bound is on the address seccomp reports, which is that of the
    instruction *after* the ``syscall``: a call made by the last instruction
    before ``end`` reports ``end``. ``start`` and ``end`` must lie in the same
    4 GiB (cBPF compares 32 bits at a time). ``name`` is for documentation.
    """

    name: str
    start: int
    end: int
    rules: tuple[Rule, ...]

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end < 1 << 64 or self.start >> 32 != self.end >> 32:
            raise ValueError(f"code region {self.name!r} ({self.start:#x}, {self.end:#x}] must "
                             "be non-empty and within one 4 GiB block")


@dataclass(frozen=True, slots=True)
class Instruction:
    """One classic-BPF instruction (``struct sock_filter``)."""

    code: int
    jt: int
    jf: int
    k: int


class _Program:
    def __init__(self) -> None:
        self.instructions: list[Instruction] = []
        self.jumps: dict[int, tuple[str, str]] = {}
        self.long_jumps: dict[int, str] = {}
        self.labels: dict[str, int] = {}
        self._fresh = 0

    def emit(self, code: int, k: int, on_true: str = "next", on_false: str = "next") -> None:
        if code in (JEQ_K, JGE_K, JGT_K, JSET_K):
            self.jumps[len(self.instructions)] = (on_true, on_false)
        self.instructions.append(Instruction(code, 0, 0, k))

    def emit_jump(self, target: str) -> None:
        self.long_jumps[len(self.instructions)] = target
        self.instructions.append(Instruction(JA, 0, 0, 0))

    def fresh(self, stem: str) -> str:
        self._fresh += 1
        return f"{stem} #{self._fresh}"

    def label(self, name: str) -> None:
        self.labels[name] = len(self.instructions)

    def resolve(self) -> list[Instruction]:
        resolved = list(self.instructions)
        for index, (on_true, on_false) in self.jumps.items():
            op = resolved[index]
            resolved[index] = Instruction(op.code, self._offset(index, on_true),
                                          self._offset(index, on_false), op.k)
        for index, target in self.long_jumps.items():
            resolved[index] = Instruction(JA, 0, 0, self.labels[target] - index - 1)
        if len(resolved) > MAX_INSTRUCTIONS:
            raise ValueError(f"seccomp program of {len(resolved)} instructions exceeds "
                             f"{MAX_INSTRUCTIONS}")
        return resolved

    def _offset(self, index: int, target: str) -> int:
        if target == "next":
            return 0
        distance = self.labels[target] - index - 1
        if not 0 <= distance <= 255:
            raise JumpOutOfRange(f"seccomp jump to {target} out of range ({distance})")
        return distance


def _emit_condition(program: _Program, condition: Condition, fail: str) -> None:
    for high in (False, True):
        program.emit(LD_W_ABS, argument_offset(condition.index, high))
        if isinstance(condition, ArgumentEquals):
            half = (condition.value >> 32) if high else condition.value & 0xFFFF_FFFF
            program.emit(JEQ_K, half, "next", fail)
            continue
        half = (condition.mask >> 32) if high else condition.mask & 0xFFFF_FFFF
        if half == 0:
            continue
        if isinstance(condition, ArgumentHasNone):
            program.emit(JSET_K, half, fail, "next")
        else:
            # every bit of ``half``: compare one bit at a time
            for bit in range(32):
                if half >> bit & 1:
                    program.emit(JSET_K, 1 << bit, "next", fail)


def compile_policy(rules: tuple[Rule, ...], default: Action,
                   regions: tuple[CodeRegion, ...] = ()) -> list[Instruction]:
    """The seccomp program for ``rules``; everything they do not decide gets ``default``.

    A call made from inside one of ``regions`` is decided by that region's
    rules instead (and ``default``), never by ``rules``.
    """
    searches = [_by_number(region.rules, default) for region in regions]
    main = _by_number(rules, default)
    try:
        return _compiled(regions, searches, main, default, far_jumps=False)
    except JumpOutOfRange:
        return _compiled(regions, searches, main, default, far_jumps=True)


_Search = tuple[list[int], dict[int, list[Rule]]]


def _by_number(rules: tuple[Rule, ...], default: Action) -> _Search:
    """The call numbers to search and each one's rules, without what ``default`` decides."""
    by_number: dict[int, list[Rule]] = {}
    for rule in rules:
        by_number.setdefault(rule.number, []).append(rule)
    for number, own in list(by_number.items()):
        # What the default decides anyway need not be compiled: the program is shorter
        # (the kernel converts and compiles it at every sandbox start) and searches less.
        decisive = next((i for i, rule in enumerate(own) if not rule.conditions), len(own) - 1)
        own[decisive + 1:] = []
        while own and own[-1].action.value == default.value and not own[-1].conditions:
            own.pop()
        if not own:
            del by_number[number]
    return sorted(by_number), by_number


def _prologue(default: Action) -> _Program:
    """Anything but a native x86-64 call (``int 0x80``, x32) gets ``default`` at once."""
    program = _Program()
    program.emit(LD_W_ABS, ARCH_OFFSET)
    program.emit(JEQ_K, AUDIT_ARCH_X86_64, "next", "foreign")
    program.emit(LD_W_ABS, NR_OFFSET)
    program.emit(JGE_K, X32_SYSCALL_BIT, "foreign", "next")
    program.emit_jump("search")
    program.label("foreign")
    program.emit(RET_K, default.value)
    program.label("search")
    return program


class JumpOutOfRange(ValueError):
    """A conditional jump of more than 255 instructions (retried with unconditional ones)."""


def _compiled(regions: tuple[CodeRegion, ...], searches: list[_Search], main: _Search,
              default: Action, far_jumps: bool) -> list[Instruction]:
    program = _prologue(default)
    for region, (numbers, by_number) in zip(regions, searches, strict=True):
        elsewhere = program.fresh("outside")
        program.emit(LD_W_ABS, IP_OFFSET + 4)
        program.emit(JEQ_K, region.start >> 32, "next", elsewhere)
        program.emit(LD_W_ABS, IP_OFFSET)
        program.emit(JGT_K, region.start & 0xFFFF_FFFF, "next", elsewhere)
        program.emit(JGT_K, region.end & 0xFFFF_FFFF, elsewhere, "next")
        program.emit(LD_W_ABS, NR_OFFSET)
        _emit_search(program, numbers, by_number, default, far_jumps)
        program.label(elsewhere)
    if regions:
        program.emit(LD_W_ABS, NR_OFFSET)
    _emit_search(program, *main, default, far_jumps)
    program.label("default")
    program.emit(RET_K, default.value)
    return program.resolve()


def _emit_search(program: _Program, numbers: list[int], by_number: dict[int, list[Rule]],
                 default: Action, far_jumps: bool) -> None:
    """Binary search over the sorted ``numbers`` (in the accumulator), then each one's rules."""
    if len(numbers) <= LEAF_NUMBERS:
        for number in numbers:
            other = program.fresh("not")
            program.emit(JEQ_K, number, "next", other)
            _emit_rules(program, by_number[number], default)
            program.label(other)
        program.emit_jump("default")
        return
    middle = len(numbers) // 2
    lower, upper = program.fresh("below"), program.fresh("from")
    if far_jumps:  # a conditional jump reaches 255 instructions; it hops over one JA instead
        program.emit(JGE_K, numbers[middle], "next", lower)
        program.emit_jump(upper)
    else:
        program.emit(JGE_K, numbers[middle], upper, "next")
    program.label(lower)
    _emit_search(program, numbers[:middle], by_number, default, far_jumps)
    program.label(upper)
    _emit_search(program, numbers[middle:], by_number, default, far_jumps)


def _emit_rules(program: _Program, rules: list[Rule], default: Action) -> None:
    """One call number's rules in order: the first whose conditions hold returns its action."""
    for rule in rules:
        if not rule.conditions:
            program.emit(RET_K, rule.action.value)
            return  # later rules for this number can never apply
        failed = program.fresh("failed")
        for condition in rule.conditions:
            _emit_condition(program, condition, failed)
        program.emit(RET_K, rule.action.value)
        program.label(failed)
    program.emit(RET_K, default.value)


def program_bytes(program: list[Instruction]) -> bytes:
    """``program`` as an array of ``struct sock_filter``."""
    return b"".join(struct.pack("<HBBI", i.code, i.jt, i.jf, i.k) for i in program)


def policy_markdown(rules: tuple[Rule, ...], default: Action) -> str:
    """``rules`` as a Markdown table (system call, number, action, condition, note)."""
    lines = ["| system call | number | action | when | note |", "|---|---|---|---|---|"]
    for rule in rules:
        when = ", ".join(c.describe() for c in rule.conditions) or "always"
        lines.append(f"| `{rule.name}` | {rule.number} | {rule.action.name} | {when} | "
                     f"{rule.note} |")
    lines.append(f"| anything else, x32, i386 (`int 0x80`) | | {default.name} | | "
                 "deny by default |")
    return "\n".join(lines) + "\n"
