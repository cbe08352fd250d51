"""The supervisor's fast path (``fastpath.c``): the same answers as Python, without Python.

The C loop answers fixed-value calls, memory checks that clearly pass and
``exit_group``; Python's handlers stay the reference. These tests check the
tables against those handlers, run the same programs with the fast path and
without it, and check that the fast path really answers without Python.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path

import pytest

from pappus.engines.linux import fastpath, policy, supervisor
from pappus.engines.linux.dispatch import handlers
from pappus.engines.linux.engine import LinuxEngine
from pappus.engines.syscalls import syscall_number
from pappus.errors import EngineUnavailable
from tests.engines.linux.support import Sandbox, build_with_each_compiler

PROGRAM = r"""
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int tid_word = 0;
    printf("pid %ld tid %ld ppid %ld\n", syscall(SYS_getpid), syscall(SYS_gettid),
           syscall(SYS_getppid));
    printf("uid %ld euid %ld gid %ld egid %ld\n", syscall(SYS_getuid), syscall(SYS_geteuid),
           syscall(SYS_getgid), syscall(SYS_getegid));
    printf("set_tid_address %ld\n", syscall(SYS_set_tid_address, &tid_word));
    char *end = (char *)syscall(SYS_brk, 0);
    char *grown = (char *)syscall(SYS_brk, end + (1 << 20));
    printf("brk grew %d\n", grown == end + (1 << 20));
    if (grown == end + (1 << 20)) memset(end, 1, 1 << 20);
    void *mapped = mmap(NULL, 4 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                        -1, 0);
    printf("mmap %s\n", mapped == MAP_FAILED ? "failed" : "ok");
    if (mapped != MAP_FAILED) memset(mapped, 2, 4 << 20);
    if (argc > 2) { /* past the bound: refused (and the run, if it then failed, out of memory) */
        char *far = (char *)syscall(SYS_brk, end + (1L << 40));
        printf("brk past the bound refused %d\n", far != end + (1L << 40));
        void *huge = mmap(NULL, 1L << 40, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        printf("huge mmap %s\n", huge == MAP_FAILED ? "refused" : "ok");
    }
    fflush(stdout);
    syscall(SYS_exit_group, argc > 1 ? atoi(argv[1]) : 0);
    return 99;
}
"""


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return build_with_each_compiler(PROGRAM, tmp_path_factory.mktemp("fast-path"), "fast")


@pytest.fixture(scope="module")
def python_only(launcher_dir: Path) -> Iterator[Sandbox]:
    engine = LinuxEngine(launcher_dir, warm_launchers=1, fast_path=False)
    yield Sandbox(engine)
    engine.close()


@pytest.mark.parametrize("as_nobody", [False, True])
def test_fixed_answers_are_the_python_handlers_answers(as_nobody: bool) -> None:
    kinds, values = fastpath.actions(policy.table_for(as_nobody))
    constants = [number for number, kind in enumerate(kinds) if kind == fastpath.CONSTANT]
    assert constants, "no call is answered with a fixed value"
    for number in constants:
        handler = handlers()[number]
        assert handler(None, (0,) * 6) == values[number]  # type: ignore[arg-type]


@pytest.mark.parametrize("as_nobody", [False, True])
def test_only_calls_the_policy_emulates_are_answered_in_c(as_nobody: bool) -> None:
    table = policy.table_for(as_nobody)
    kinds, _ = fastpath.actions(table)
    emulated = {entry.number for entry in table if entry.kind == "emulate"}
    answered_in_c = {number for number, kind in enumerate(kinds) if kind != fastpath.ASK_PYTHON}
    assert answered_in_c <= emulated
    assert {syscall_number("brk"), syscall_number("mmap"), syscall_number("exit_group"),
            syscall_number("getpid")} <= answered_in_c
    for name in ("read", "openat", "kill", "tgkill", "execveat", "prlimit64"):
        assert kinds[syscall_number(name)] == fastpath.ASK_PYTHON, name
    if as_nobody:  # the kernel answers these itself: never notified, never in the table
        assert kinds[syscall_number("getuid")] == fastpath.ASK_PYTHON


@pytest.mark.parametrize("compiler", ["musl-gcc", "gcc"])
def test_the_same_program_gets_the_same_answers_with_and_without_the_fast_path(
        sandbox: Sandbox, python_only: Sandbox, programs: dict[str, bytes], compiler: str) -> None:
    common = [
        "pid 1 tid 1 ppid 0",
        "uid 65534 euid 65534 gid 65534 egid 65534",
        "set_tid_address 1",
        "brk grew 1",
        "mmap ok",
    ]
    past_the_bound = [*common, "brk past the bound refused 1", "huge mmap refused"]
    for argv, exit_code, lines in ((["fast", "7"], 7, common),
                                   (["fast", "0", "limits"], 0, past_the_bound)):
        fast = sandbox.run(programs[compiler], argv, memory_bytes=64 << 20)
        slow = python_only.run(programs[compiler], argv, memory_bytes=64 << 20)
        assert (fast.exit_code, fast.stdout) == (slow.exit_code, slow.stdout)
        assert fast.exit_code == exit_code
        assert fast.stdout.decode().splitlines() == lines


def test_the_c_loop_answers_without_python(sandbox: Sandbox, programs: dict[str, bytes],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    answered_in_python: list[str] = []
    answer = supervisor.Supervisor._answer

    def counting(self: supervisor.Supervisor, call: supervisor.Notification) -> bool:
        answered_in_python.append(supervisor.syscall_name(call.nr))
        return answer(self, call)

    monkeypatch.setattr(supervisor.Supervisor, "_answer", counting)
    run = sandbox.run(programs["musl-gcc"], ["fast", "0", "limits"], memory_bytes=64 << 20)
    assert run.exit_code == 0
    # Python answered the launcher's exec, the output and what came near the bound, not
    # the identity calls, the brk and mmap that fit or the exit.
    for name in ("getpid", "gettid", "getppid", "set_tid_address", "exit_group"):
        assert name not in answered_in_python, answered_in_python
    assert answered_in_python.count("mmap") == 1, answered_in_python  # the huge one
    assert "execveat" in answered_in_python


def test_a_library_built_for_another_layout_is_refused() -> None:
    class Function:
        def __init__(self, value: int) -> None:
            self.value = value
            self.restype: object = None
            self.argtypes: object = None

        def __call__(self) -> int:
            return self.value

    class Library:
        pappus_serve_state_size = Function(7)
        pappus_serve_notification_offset = Function(0)
        pappus_serve = Function(0)

    with pytest.raises(EngineUnavailable, match="layout"):
        fastpath.FastPath(Library(), policy.TABLE)  # type: ignore[arg-type]


PROBES = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static char buffer[8192];

static void report(const char *call, const char *label, long result) {
    printf("%s %s -> %ld %d\n", call, label, result, result < 0 ? errno : 0);
}

static void probe(const char *label, const char *path) {
    struct stat st;
    char target[64];
    errno = 0;
    report("readlink", label, readlink(path, target, sizeof target));
    report("readlinkat", label, syscall(SYS_readlinkat, AT_FDCWD, path, target, sizeof target));
    report("readlinkat-badfd", label, syscall(SYS_readlinkat, 999, path, target, sizeof target));
    report("stat", label, syscall(SYS_stat, path, &st));
    report("lstat", label, syscall(SYS_lstat, path, &st));
    report("newfstatat", label, syscall(SYS_newfstatat, AT_FDCWD, path, &st, 0));
    report("newfstatat-nofollow", label,
           syscall(SYS_newfstatat, AT_FDCWD, path, &st, AT_SYMLINK_NOFOLLOW));
    report("statx", label, syscall(SYS_statx, AT_FDCWD, path, 0, 0x7ff, buffer));
    report("access", label, syscall(SYS_access, path, R_OK));
    report("faccessat", label, syscall(SYS_faccessat, AT_FDCWD, path, R_OK));
    report("faccessat2", label, syscall(SYS_faccessat2, AT_FDCWD, path, R_OK, 0));
    /* checked before the lookup: EINVAL whatever the path */
    report("readlink-size0", label, syscall(SYS_readlink, path, target, 0));
    report("access-badmode", label, syscall(SYS_access, path, 8));
    report("statx-badflags", label, syscall(SYS_statx, AT_FDCWD, path, 1, 0x7ff, buffer));
}

int main(void) {
    probe("proc-self-exe", "/proc/self/exe");
    probe("etc", "/etc/busybox.conf");
    probe("double-slash", "//proc");
    probe("dot", "/./proc/x");
    probe("dot-dot", "/../proc");
    probe("through-input", "/in/../proc");
    probe("input", "/in");
    probe("output-slash", "/out/");
    probe("root", "/");
    probe("relative", "proc");
    probe("empty", "");
    probe("not-ascii", "/pr\xc3\xb6" "c");
    probe("bad-utf8", "/pr\xff");
    memset(buffer, 'a', sizeof buffer - 1);
    buffer[0] = '/';
    buffer[5000] = '\0';
    probe("too-long", buffer);
    memcpy(buffer, "/etc/", 5);
    buffer[300] = '\0';
    probe("long-name", buffer);
    buffer[255 + 5] = '\0';
    probe("longest-name", buffer);
    probe("null", NULL);
    char *pages = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    munmap(pages + 4096, 4096);
    memcpy(pages + 4096 - 6, "/proc", 6); /* the NUL is the page's last byte */
    probe("page-end", pages + 4096 - 6);
    memcpy(pages + 4096 - 5, "/proc", 5); /* no NUL before the unmapped page */
    probe("unterminated", pages + 4096 - 5);
    return 0;
}
"""


@pytest.fixture(scope="module")
def probes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return build_with_each_compiler(PROBES, tmp_path_factory.mktemp("probes"), "probes")


@pytest.mark.parametrize("compiler", ["musl-gcc", "gcc"])
def test_path_probes_get_the_same_answers_with_and_without_the_fast_path(
        sandbox: Sandbox, python_only: Sandbox, probes: dict[str, bytes], compiler: str) -> None:
    files = {"data": b"x"}
    fast = sandbox.run(probes[compiler], ["probes"], files)
    slow = python_only.run(probes[compiler], ["probes"], files)
    assert fast.exit_code == slow.exit_code == 0
    assert fast.stdout.decode().splitlines() == slow.stdout.decode().splitlines()
    answers = {}
    for line in fast.stdout.decode().splitlines():
        probe, answer = line.split(" -> ")
        result, code = answer.split()
        answers[probe] = f"{result} {errno.errorcode[int(code)]}" if int(code) else result
    assert answers["readlink proc-self-exe"] == "-1 ENOENT"
    assert answers["stat etc"] == "-1 ENOENT"
    assert answers["newfstatat input"] == "0"
    assert answers["readlinkat-badfd proc-self-exe"] == "-1 EBADF"
    assert answers["stat long-name"] == "-1 ENAMETOOLONG"
    assert answers["stat too-long"] == "-1 ENAMETOOLONG"
    assert answers["stat null"] == "-1 EFAULT"
    assert answers["stat page-end"] == "-1 ENOENT"
    assert answers["stat unterminated"] == "-1 EFAULT"
    for probe in ("proc-self-exe", "input", "null"):
        assert answers[f"readlink-size0 {probe}"] == "-1 EINVAL"
    assert answers["access-badmode proc-self-exe"] == "-1 EINVAL"
    assert answers["statx-badflags etc"] == "-1 EINVAL"


def test_absent_paths_are_answered_without_python(sandbox: Sandbox, probes: dict[str, bytes],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    looked_up: list[str] = []
    checked: list[str] = []  # readlink with a bufsiz of 0: the kernel's EINVAL is Python's
    answer = supervisor.Supervisor._answer

    def counting(self: supervisor.Supervisor, call: supervisor.Notification) -> bool:
        if supervisor.syscall_name(call.nr) == "readlink":
            try:
                path = self.files.memory.read_string(call.args[0], 8192).decode("latin-1")
            except (supervisor.MemoryFault, ValueError):
                path = "(unreadable)"
            (looked_up if call.args[2] else checked).append(path)
        return answer(self, call)

    monkeypatch.setattr(supervisor.Supervisor, "_answer", counting)
    assert sandbox.run(probes["musl-gcc"], ["probes"], {"data": b"x"}).exit_code == 0
    assert "/proc/self/exe" not in looked_up
    assert "/etc/busybox.conf" not in looked_up
    assert "/../proc" in looked_up  # ".." first: Python's to walk
    assert "/in" in looked_up  # an entry of the root
    assert "/proc/self/exe" in checked  # not plain: left to Python
