"""A classic-BPF interpreter for seccomp programs, independent of the compiler under test."""

from __future__ import annotations

import struct
from collections.abc import Sequence

from pappus.engines.seccomp import Instruction
from pappus.engines.syscalls import AUDIT_ARCH_X86_64

LD_W_ABS, JA, JEQ_K, JGE_K, JGT_K, JSET_K, RET_K = 0x20, 0x05, 0x15, 0x35, 0x25, 0x45, 0x06
SECCOMP_DATA = struct.Struct("<iIQ6Q")  # nr, arch, instruction_pointer, args[6]


def run(program: Sequence[Instruction], nr: int, arch: int = AUDIT_ARCH_X86_64,
        args: Sequence[int] = (), ip: int = 0x401000) -> int:
    """What ``program`` returns for one system call made at ``ip`` (the address after the
    ``syscall`` instruction), checking every load and jump."""
    data = SECCOMP_DATA.pack(nr, arch, ip, *(list(args) + [0] * (6 - len(args))))
    accumulator, pc = 0, 0
    for _ in range(len(program) + 1):  # forward jumps only: each instruction runs once
        assert 0 <= pc < len(program), f"the program runs off its end at {pc}"
        op = program[pc]
        if op.code == LD_W_ABS:
            assert op.k % 4 == 0 and op.k + 4 <= SECCOMP_DATA.size, f"bad load at {pc}"
            accumulator = int.from_bytes(data[op.k:op.k + 4], "little")
        elif op.code == JA:
            pc += op.k
        elif op.code in (JEQ_K, JGE_K, JGT_K, JSET_K):
            taken = {JEQ_K: accumulator == op.k, JGE_K: accumulator >= op.k,
                     JGT_K: accumulator > op.k, JSET_K: accumulator & op.k != 0}[op.code]
            pc += op.jt if taken else op.jf
        elif op.code == RET_K:
            return op.k
        else:
            raise AssertionError(f"unexpected opcode {op.code:#x} at {pc}")
        pc += 1
    raise AssertionError("the program loops")


def jump_targets(program: Sequence[Instruction]) -> list[tuple[int, int]]:
    """(instruction, target) for every jump, to check they land inside the program."""
    targets: list[tuple[int, int]] = []
    for index, op in enumerate(program):
        if op.code == JA:
            targets.append((index, index + 1 + op.k))
        elif op.code in (JEQ_K, JGE_K, JGT_K, JSET_K):
            targets += [(index, index + 1 + op.jt), (index, index + 1 + op.jf)]
    return targets
