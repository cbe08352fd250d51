"""Ordinary programs that reach past what the sandbox offers must fail honestly.

The issue's rule: a call the engine cannot honour returns an honest errno;
``forbidden_syscall`` is for calls no compute function has a reason to make.
So ``abort()`` is a crash (``SIGABRT``), not a forbidden ``tgkill``; asking
for the number of CPUs, waiting for input with ``poll``, making a pipe or a
link, or setting a file's times must give the program an answer or an errno
it can report — never a killed sandbox blamed on the program.

Each case here was once killed as ``forbidden_syscall`` because its call
was missing from the policy table (anything absent is ``kill``); the table
now gives each an honest entry. The applets must end normally (whatever
their exit status), saying why when they fail.
"""

from __future__ import annotations

import pytest

from pappus.errors import SandboxCrash
from tests.engines.linux.support import COMPILERS, Sandbox, build_c, busybox_binary

PROGRAM = r"""
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *worker(void *argument) { return argument; }

static int deeper(int n) {
    volatile char frame[1024];
    frame[0] = (char)n;
    return n < 0 ? 0 : deeper(n + 1) + frame[0];  /* never ends: n only grows */
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    if (!strcmp(mode, "abort")) abort();
    if (!strcmp(mode, "assert")) assert(argc == 100);
    if (!strcmp(mode, "raise")) raise(SIGTERM);
    if (!strcmp(mode, "kill-self")) kill(getpid(), SIGTERM);
    if (!strcmp(mode, "null")) return *(volatile int *)(argc > 100 ? argv : NULL);
    if (!strcmp(mode, "stack")) return deeper(1);
    if (!strcmp(mode, "thread")) {
        pthread_t thread;
        int error = pthread_create(&thread, NULL, worker, NULL);
        printf("pthread_create %s\n", error ? "failed" : "worked");
        return 0;
    }
    if (!strcmp(mode, "cpus")) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        printf("cpus %ld\n", cpus);
        return 0;
    }
    return 2;
}
"""



@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("ordinary")
    return {compiler: build_c(PROGRAM, out / f"ordinary-{compiler}", compiler)
            for compiler in COMPILERS}


@pytest.fixture(scope="module")
def busybox() -> bytes:
    return busybox_binary()


@pytest.mark.parametrize("compiler", COMPILERS)
@pytest.mark.parametrize(("mode", "signal_name"), [
    pytest.param("abort", "SIGABRT"),
    pytest.param("assert", "SIGABRT"),
    pytest.param("raise", "SIGTERM"),
    pytest.param("kill-self", "SIGTERM"),  # kill(getpid(), ...): getpid() is 1, the program
    pytest.param("null", "SIGSEGV"),
    pytest.param("stack", "SIGSEGV"),
])
def test_a_program_that_kills_itself_is_a_crash(sandbox: Sandbox, program: dict[str, bytes],
                                                compiler: str, mode: str,
                                                signal_name: str) -> None:
    with pytest.raises(SandboxCrash) as caught:
        sandbox.run(program[compiler], ["ordinary", mode])
    assert caught.value.detail["signal"] == signal_name


@pytest.mark.parametrize("compiler", COMPILERS)
def test_threads_are_refused_with_an_errno(sandbox: Sandbox, program: dict[str, bytes],
                                           compiler: str) -> None:
    run = sandbox.run(program[compiler], ["ordinary", "thread"])
    assert (run.exit_code, run.stdout) == (0, b"pthread_create failed\n")


@pytest.mark.parametrize("compiler", COMPILERS)
def test_asking_for_the_number_of_cpus_is_answered(sandbox: Sandbox, program: dict[str, bytes],
                                                   compiler: str) -> None:
    run = sandbox.run(program[compiler], ["ordinary", "cpus"])
    assert (run.exit_code, run.stdout) == (0, b"cpus 1\n")  # one CPU: it runs one thread


BUSYBOX_CASES = [
    pytest.param(["sh", "-c", "echo a | cat"], id="sh-pipeline"),
    pytest.param(["sh", "-c", "read line < in/text; echo $line"], id="sh-read"),
    pytest.param(["touch", "out/new"], id="touch"),
    pytest.param(["ln", "-s", "text", "out/link"], id="ln-s"),
    pytest.param(["ln", "in/text", "out/hard"], id="ln"),
    pytest.param(["mkfifo", "out/fifo"], id="mkfifo"),
    pytest.param(["nproc"], id="nproc"),
    pytest.param(["id"], id="id"),
    pytest.param(["sync"], id="sync"),
    pytest.param(["stat", "-f", "in"], id="stat-f"),
    pytest.param(["fallocate", "-l", "100", "out/space"], id="fallocate"),
    pytest.param(["sh", "-c", "true & true"], id="sh-background"),
    pytest.param(["mktemp", "-p", "out"], id="mktemp"),
    pytest.param(["chmod", "600", "in/text"], id="chmod"),
    pytest.param(["hostname"], id="hostname"),
    pytest.param(["free"], id="free"),
    pytest.param(["find", "in"], id="find"),
]


@pytest.mark.parametrize("argv", BUSYBOX_CASES)
def test_busybox_applets_fail_honestly_or_work(sandbox: Sandbox, busybox: bytes,
                                               argv: list[str]) -> None:
    """A normal result, whatever its exit status; no typed failure of the sandbox."""
    run = sandbox.run(busybox, argv, {"text": b"one line\n"})
    assert run.exit_code in (0, 1, 2)
    if run.exit_code:
        assert run.stderr, "a failing applet says why"
