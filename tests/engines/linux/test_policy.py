"""The linux engine's policy table: what the generated seccomp program decides, call by call.

A small classic-BPF interpreter runs the generated program, so these tests
check verdicts, not instruction shapes. The census of real static programs
(docs/linux-census.md) must be covered by entries that are not ``kill``.
"""

from __future__ import annotations

import errno
import re
from pathlib import Path

import pytest

from pappus.engines import seccomp
from pappus.engines.linux.policy import (
    AS_NOBODY,
    TABLE,
    compile_table,
    entry_for,
    table_for,
    table_markdown,
)
from pappus.engines.syscalls import AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, X86_64, syscall_number
from tests.engines.bpf import run

CENSUS = Path(__file__).resolve().parents[3] / "docs" / "linux-census.md"
PROGRAM = compile_table()


def verdict(name_or_number: str | int, *args: int, arch: int = AUDIT_ARCH_X86_64) -> int:
    number = name_or_number if isinstance(name_or_number, int) else syscall_number(name_or_number)
    return run(PROGRAM, number, arch, args)


def errno_of(value: int) -> int:
    assert value & 0xFFFF0000 == seccomp.SECCOMP_RET_ERRNO, hex(value)
    return value & 0xFFFF


def census_calls() -> list[str]:
    return re.findall(r"^\| `([a-z_0-9]+)` \|", CENSUS.read_text(), re.MULTILINE)


def test_every_census_call_has_an_honest_entry() -> None:
    calls = census_calls()
    assert len(calls) >= 15, calls
    for call in calls:
        result = verdict(call, 0, 0, 3, 0x22)  # mmap-like arguments: RW, private anonymous
        assert result != seccomp.SECCOMP_RET_KILL_PROCESS
        if result == seccomp.SECCOMP_RET_USER_NOTIF:
            entry = entry_for(syscall_number(call))
            assert entry is not None and entry.kind == "emulate", call


def test_memory_calls_allow_no_new_executable_memory() -> None:
    prot_rw, prot_rwx = 3, 7
    private_anonymous, shared_anonymous, private_file = 0x22, 0x21, 0x02
    # anonymous private memory is checked against the bound by the supervisor first
    assert verdict("mmap", 0, 4096, prot_rw, private_anonymous) == seccomp.SECCOMP_RET_USER_NOTIF
    entry = entry_for(syscall_number("mmap"))
    assert entry is not None and entry.kind == "emulate"
    assert errno_of(verdict("mmap", 0, 4096, prot_rwx, private_anonymous)) == errno.EACCES
    assert errno_of(verdict("mmap", 0, 4096, prot_rw, shared_anonymous)) == errno.EACCES
    assert errno_of(verdict("mmap", 0, 4096, prot_rw, private_file)) == errno.EACCES
    # PROT_EXEC is bit 2 of the low word; high garbage bits do not hide it
    assert errno_of(verdict("mmap", 0, 4096, prot_rwx | (1 << 34), private_anonymous)) == (
        errno.EACCES)
    assert verdict("mprotect", 0x1000, 4096, prot_rw) == seccomp.SECCOMP_RET_ALLOW
    assert errno_of(verdict("mprotect", 0x1000, 4096, prot_rwx)) == errno.EACCES
    assert verdict("brk", 0) == seccomp.SECCOMP_RET_ALLOW  # reading the break
    # a new break is checked against the bound by the supervisor first
    assert verdict("brk", 0x1000_0000) == seccomp.SECCOMP_RET_USER_NOTIF
    assert verdict("brk", 1 << 32) == seccomp.SECCOMP_RET_USER_NOTIF  # not just the low half


def test_only_real_input_descriptors_are_read_natively() -> None:
    for name in ("read", "pread64", "readv", "lseek"):
        assert verdict(name, 512) == seccomp.SECCOMP_RET_ALLOW, name
        assert verdict(name, 1023) == seccomp.SECCOMP_RET_ALLOW, name
        assert verdict(name, 3) == seccomp.SECCOMP_RET_USER_NOTIF, name
        assert verdict(name, 511) == seccomp.SECCOMP_RET_USER_NOTIF, name
    assert verdict("write", 512) == seccomp.SECCOMP_RET_USER_NOTIF
    assert verdict("close", 512) == seccomp.SECCOMP_RET_USER_NOTIF


def test_execveat_goes_to_the_supervisor_execve_is_refused() -> None:
    assert verdict("execveat", 0) == seccomp.SECCOMP_RET_USER_NOTIF
    assert errno_of(verdict("execve")) == errno.EPERM


def test_arch_prctl_sets_fs_only() -> None:
    assert verdict("arch_prctl", 0x1002, 0x1000) == seccomp.SECCOMP_RET_ALLOW
    assert errno_of(verdict("arch_prctl", 0x1001, 0x1000)) == errno.EINVAL
    assert errno_of(verdict("arch_prctl", 0x1_0000_1002, 0)) == errno.EINVAL


@pytest.mark.parametrize(("name", "code"), [
    ("socket", errno.EACCES), ("connect", errno.EACCES), ("fork", errno.EPERM),
    ("clone", errno.EPERM), ("execve", errno.EPERM), ("clock_settime", errno.EPERM),
    ("chmod", errno.EPERM)])
def test_refusals_are_honest_errors(name: str, code: int) -> None:
    assert errno_of(verdict(name)) == code


@pytest.mark.parametrize("name", ["read", "openat", "getdents64", "ioctl", "getuid", "uname"])
def test_file_and_identity_calls_go_to_the_supervisor(name: str) -> None:
    assert verdict(name) == seccomp.SECCOMP_RET_USER_NOTIF
    entry = entry_for(syscall_number(name))
    assert entry is not None and entry.kind == "emulate"


@pytest.mark.parametrize("name", ["ptrace", "bpf", "mount", "process_vm_readv",
                                  "pidfd_send_signal"])
def test_dangerous_calls_reach_the_supervisor_to_be_killed(name: str) -> None:
    assert verdict(name) == seccomp.SECCOMP_RET_USER_NOTIF
    entry = entry_for(syscall_number(name))
    assert entry is not None and entry.kind == "kill"


@pytest.mark.parametrize("name", ["kill", "tkill", "tgkill", "set_tid_address", "poll", "ppoll",
                                  "sched_getaffinity", "getgroups", "utimensat", "statfs",
                                  "fallocate", "mknodat", "sync"])
def test_signals_waits_and_metadata_are_answered_by_the_supervisor(name: str) -> None:
    """Signals are delivered only to the program itself; the rest have honest answers."""
    assert verdict(name) == seccomp.SECCOMP_RET_USER_NOTIF
    entry = entry_for(syscall_number(name))
    assert entry is not None and entry.kind == "emulate"


@pytest.mark.parametrize("name", ["pipe", "pipe2", "link", "linkat", "symlink", "symlinkat"])
def test_pipes_and_links_are_refused_with_eperm(name: str) -> None:
    assert errno_of(verdict(name)) == errno.EPERM


def test_unknown_calls_and_other_abis_are_killed_and_reported() -> None:
    unlisted = [n for n, name in X86_64.items() if not any(e.name == name for e in TABLE)]
    assert unlisted
    for number in unlisted[:50]:
        assert verdict(number) == seccomp.SECCOMP_RET_USER_NOTIF
        assert entry_for(number) is None  # the supervisor kills what it cannot dispatch
    assert verdict(0xFFFF) == seccomp.SECCOMP_RET_USER_NOTIF
    assert verdict(1 | 0x40000000) == seccomp.SECCOMP_RET_USER_NOTIF  # x32 write
    assert verdict(1, arch=AUDIT_ARCH_I386) == seccomp.SECCOMP_RET_USER_NOTIF


IDENTITY = ["getuid", "geteuid", "getgid", "getegid", "getgroups"]


@pytest.mark.parametrize("name", IDENTITY)
def test_identity_is_the_kernels_answer_only_where_the_launcher_is_nobody(name: str) -> None:
    """Launchers that switched to uid/gid 65534 (no groups) let the kernel answer; the others
    keep the worker's identity, so the supervisor answers 65534 for them."""
    number = syscall_number(name)
    as_nobody = compile_table(table_for(True))
    assert run(as_nobody, number, AUDIT_ARCH_X86_64, ()) == seccomp.SECCOMP_RET_ALLOW
    assert run(compile_table(table_for(False)), number, AUDIT_ARCH_X86_64, ()) == (
        seccomp.SECCOMP_RET_USER_NOTIF)
    entry = entry_for(number)
    assert entry is not None and entry.kind == "emulate"  # the same answer, by the supervisor
    # nothing else changes: the as-nobody program decides every other call the same way
    for other in ("read", "openat", "mmap", "ptrace", "socket", "set_tid_address"):
        assert run(as_nobody, syscall_number(other), AUDIT_ARCH_X86_64, (0, 0, 3, 0x22)) == (
            verdict(other, 0, 0, 3, 0x22)), other
    assert {entry.name for entry in AS_NOBODY} == set(IDENTITY)


def test_the_program_fits_and_the_table_is_documented() -> None:
    assert len(PROGRAM) <= seccomp.MAX_INSTRUCTIONS
    assert len(compile_table(table_for(True))) <= seccomp.MAX_INSTRUCTIONS
    text = table_markdown()
    for entry in (*AS_NOBODY, *TABLE):
        assert f"| `{entry.name}` |" in text
    assert "| `getuid` | native | launchers run as uid/gid 65534 |" in text
    assert "deny by default" in text
