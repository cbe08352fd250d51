"""Hostile programs: each ends with the right typed outcome, and the engine keeps serving.

A call the policy refuses with an errno is a normal run whose program saw
the error (it prints it and fails); a call the policy kills is
``forbidden_syscall`` naming the call; resource abuse is ``out_of_memory``,
``timeout`` or ``bad_output``; a binary that can never run is refused at
registration as ``invalid_binary``. After every case a plain ``busybox echo
ok`` must still work in the same engine.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import hashlib
import os
import random
import resource
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pappus.engines.base import FunctionSpec
from pappus.engines.linux.engine import LinuxEngine
from pappus.errors import (
    BadOutput,
    ForbiddenSyscall,
    InvalidBinary,
    InvocationTimeout,
    OutOfMemory,
    SandboxError,
    TooLarge,
)
from tests.engines.linux.support import (
    COMPILERS,
    Sandbox,
    build_c,
    build_with_each_compiler,
    busybox_binary,
)
from tests.engines.support import (
    busiest_child_cpu_s,
    damaged_outcomes,
    run_beside_gil_holders,
    typed_failures,
)

HOSTILE = Path(__file__).parents[2] / "functions" / "linux" / "hostile.c"
"""The hostile program; its first argument picks what it tries."""

MEMORY = 256 << 20


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The hostile program built with ``musl-gcc -static`` and ``gcc -static``."""
    out = tmp_path_factory.mktemp("hostile")
    return build_with_each_compiler(HOSTILE.read_text(), out, "hostile")


@pytest.fixture(scope="module")
def busybox() -> bytes:
    return busybox_binary()


@pytest.fixture
def still_serving(sandbox: Sandbox, busybox: bytes) -> Iterator[None]:
    """After the test, the same engine still runs an ordinary program."""
    yield
    run = sandbox.run(busybox, ["echo", "ok"])
    assert (run.exit_code, run.stdout, run.stderr) == (0, b"ok\n", b"")


pytestmark = pytest.mark.usefixtures("still_serving")
INPUTS = {"data": b"abcdefgh" * 8, "big": bytes(range(256)) * 256}


# -- busybox: the host, the network and other processes are out of reach -----------------


def test_host_files_are_not_there(sandbox: Sandbox, busybox: bytes) -> None:
    run = sandbox.run(busybox, ["cat", "/etc/passwd"])
    assert run.exit_code == 1
    assert run.stdout == b""
    assert b"No such file" in run.stderr


@pytest.mark.parametrize("path", ["/proc", "/proc/self/maps", "/dev/null", "/sys", "/tmp"])
def test_no_proc_dev_or_sys(sandbox: Sandbox, busybox: bytes, path: str) -> None:
    run = sandbox.run(busybox, ["ls", path])
    assert run.exit_code == 1
    assert b"No such file" in run.stderr


def test_the_root_holds_only_the_sets(sandbox: Sandbox, busybox: bytes) -> None:
    run = sandbox.run(busybox, ["ls", "-a", "/"], INPUTS)
    assert run.exit_code == 0
    assert run.stdout.split() == [b".", b"..", b".pappus", b"in", b"out", b"stdio"]


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A loopback TCP listener the sandbox must not reach."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.setblocking(False)
    yield server
    server.close()


def _assert_no_connection(server: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        server.accept()


@pytest.mark.parametrize("applet", ["wget", "nc"])
def test_no_network(sandbox: Sandbox, busybox: bytes, listener: socket.socket,
                    applet: str) -> None:
    port = listener.getsockname()[1]
    argv = (["wget", "-O", "-", f"http://127.0.0.1:{port}/"] if applet == "wget"
            else ["nc", "127.0.0.1", str(port)])
    run = sandbox.run(busybox, argv, stdin=b"GET / HTTP/1.0\r\n\r\n")
    assert run.exit_code != 0
    assert b"socket: Permission denied" in run.stderr
    _assert_no_connection(listener)


def test_no_fork_in_the_shell(sandbox: Sandbox, busybox: bytes) -> None:
    """``x & x`` needs a new process: the shell gets EPERM and says so; nothing is started."""
    run = sandbox.run(busybox, ["sh", "-c", "true & true; echo after"])
    assert run.exit_code != 0
    assert b"can't fork: Operation not permitted" in run.stderr
    assert b"after" not in run.stdout


# -- our own hostile program --------------------------------------------------------------


@pytest.mark.parametrize("compiler", COMPILERS)
@pytest.mark.parametrize("call", ["execve", "execveat"])
def test_execve_gets_eperm(sandbox: Sandbox, hostile: dict[str, bytes], compiler: str,
                           call: str) -> None:
    """``execveat`` is let through once, for the launcher; the program's own gets EPERM."""
    run = sandbox.run(hostile[compiler], ["hostile", call], INPUTS)
    assert run.stdout == f"{call}=-1 errno={errno.EPERM}\n".encode()
    assert run.exit_code == 0


@pytest.mark.parametrize(("mode", "expected"), [("fork", errno.EPERM),
                                                ("socket", errno.EACCES)])
def test_refused_calls_return_an_honest_errno(sandbox: Sandbox, hostile: dict[str, bytes],
                                             mode: str, expected: int) -> None:
    run = sandbox.run(hostile["musl-gcc"], ["hostile", mode])
    assert run.stdout == f"{mode}=-1 errno={expected}\n".encode()
    assert run.exit_code == 0


KILLED = ("ptrace", "kill", "tkill", "tgkill", "mount", "unshare", "io_uring_setup")


@pytest.mark.parametrize("compiler", COMPILERS)
@pytest.mark.parametrize("mode", KILLED)
def test_forbidden_calls_are_reported_by_name(sandbox: Sandbox, hostile: dict[str, bytes],
                                              mode: str, compiler: str) -> None:
    """Each call is killed and reported by name.

    The signal calls aim at other processes (``kill(-1, ...)``: every process
    it may signal; ``tkill``/``tgkill`` at pid 2). ``kill(1, SIGKILL)`` was
    here once, but the program sees itself as pid 1 (``getpid``,
    ``set_tid_address``), so pid 1 *is* the program: ``kill(getpid(), ...)``
    is how ``raise`` was written before threads, and is delivered
    (``test_ordinary_programs.py``: a crash with that signal).
    """
    with pytest.raises(ForbiddenSyscall) as caught:
        sandbox.run(hostile[compiler], ["hostile", mode])
    assert caught.value.detail["name"] == mode
    assert mode in caught.value.message


@pytest.mark.parametrize("compiler", COMPILERS)
def test_int_0x80_is_forbidden_as_i386(sandbox: Sandbox, hostile: dict[str, bytes],
                                       compiler: str) -> None:
    with pytest.raises(ForbiddenSyscall) as caught:
        sandbox.run(hostile[compiler], ["hostile", "int80"])
    assert caught.value.detail["name"] == "i386 getpid"
    assert caught.value.detail["syscall"] == 20


def test_x32_calls_are_forbidden(sandbox: Sandbox, hostile: dict[str, bytes]) -> None:
    with pytest.raises(ForbiddenSyscall) as caught:
        sandbox.run(hostile["musl-gcc"], ["hostile", "x32"])
    assert caught.value.detail["name"] == "x32 getpid"


def test_oversized_arguments_are_refused_with_a_typed_error(sandbox: Sandbox,
                                                            busybox: bytes) -> None:
    with pytest.raises(TooLarge) as caught:  # the request's argv: 413, not a sandbox outcome
        sandbox.run(busybox, ["echo", *["word"] * 40_000])
    assert "argv" in caught.value.message
    assert caught.value.detail["limit"] == 128 << 10
    words = ["w"] * 60_000  # 120,000 bytes of argv: fits
    assert sandbox.run(busybox, ["echo", *words]).stdout == " ".join(words).encode() + b"\n"


def test_an_expired_deadline_is_a_timeout(sandbox: Sandbox, busybox: bytes) -> None:
    with pytest.raises(InvocationTimeout):
        sandbox.run(busybox, ["echo", "late"], timeout_s=-1)  # the deadline passed a second ago


@pytest.mark.parametrize("compiler", COMPILERS)
@pytest.mark.parametrize("memory", [64 << 20, MEMORY])
def test_memory_bomb_is_out_of_memory(sandbox: Sandbox, hostile: dict[str, bytes],
                                      compiler: str, memory: int) -> None:
    started = time.monotonic()
    with pytest.raises(OutOfMemory) as caught:
        sandbox.run(hostile[compiler], ["hostile", "bomb"], memory_bytes=memory)
    assert caught.value.detail["memory_bytes"] == memory
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(("compiler", "mode"), [("gcc", "sbrk-bomb"), ("gcc", "brk-bomb"),
                                               ("musl-gcc", "brk-bomb")])
def test_a_brk_only_memory_bomb_is_out_of_memory(sandbox: Sandbox, hostile: dict[str, bytes],
                                                 compiler: str, mode: str) -> None:
    """Growing the heap with ``sbrk``/``brk`` alone (no ``mmap`` fallback) past the bound.

    The supervisor checks a growing ``brk`` against the bound and the kernel
    refuses it (the old break comes back): the program gives up, and the run
    is ``out_of_memory``, not a normal exit 1.
    """
    started = time.monotonic()
    with pytest.raises(OutOfMemory) as caught:
        sandbox.run(hostile[compiler], ["hostile", mode], memory_bytes=64 << 20)
    assert caught.value.detail["memory_bytes"] == 64 << 20
    assert time.monotonic() - started < 5


def test_a_bound_below_the_program_size_is_out_of_memory(sandbox: Sandbox,
                                                          busybox: bytes) -> None:
    with pytest.raises(OutOfMemory) as caught:
        sandbox.run(busybox, ["true"], memory_bytes=1 << 20)
    assert "link" not in caught.value.message
    assert caught.value.detail["memory_bytes"] == 1 << 20


def test_output_files_count_against_the_output_limit(sandbox: Sandbox, busybox: bytes) -> None:
    with pytest.raises(BadOutput):
        sandbox.run(busybox, ["dd", "if=in/big", "of=out/copy"], INPUTS,
                    max_output_bytes=32 << 10)


def test_infinite_loop_is_stopped_at_the_deadline(sandbox: Sandbox,
                                                  hostile: dict[str, bytes]) -> None:
    timeout = 0.5
    started = time.monotonic()
    with pytest.raises(InvocationTimeout):
        sandbox.run(hostile["musl-gcc"], ["hostile", "spin"], timeout_s=timeout)
    assert time.monotonic() - started < timeout + 0.2


def test_a_loop_is_killed_on_time_while_other_threads_hold_the_gil(
        sandbox: Sandbox, hostile: dict[str, bytes]) -> None:
    """The native deadline thread sends the kill, without waiting for the GIL that two
    threads hold in long C calls (as when decoding large JSON bodies)."""
    spun_ms: list[float] = []

    def run() -> None:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        with pytest.raises(InvocationTimeout):
            sandbox.run(hostile["musl-gcc"], ["hostile", "spin"], timeout_s=0.2)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)  # reaped: the spinner's CPU
        spun_ms.append((after.ru_utime + after.ru_stime - before.ru_utime
                        - before.ru_stime) * 1e3)

    with pytest.raises(InvocationTimeout):  # warm: nothing is built during the measured runs
        sandbox.run(hostile["musl-gcc"], ["hostile", "spin"], timeout_s=0.05)
    for _ in range(3):  # the holders start once the program is spinning
        run_beside_gil_holders(run, spinning_for_s=0.02, cpu_s=busiest_child_cpu_s)
    assert len(spun_ms) == 3
    assert all(ms <= 220 for ms in spun_ms) and max(spun_ms) >= 100, spun_ms


def test_a_loop_of_emulated_calls_is_stopped_at_the_deadline(sandbox: Sandbox,
                                                            hostile: dict[str, bytes]) -> None:
    """The supervisor is never idle here: the deadline must be checked between calls too."""
    timeout = 0.5
    started = time.monotonic()
    with pytest.raises(InvocationTimeout) as caught:
        sandbox.run(hostile["musl-gcc"], ["hostile", "spin-calls"], timeout_s=timeout)
    assert time.monotonic() - started < timeout + 0.2
    assert "deadline" in caught.value.message


def test_sleeping_past_the_deadline_is_a_timeout(sandbox: Sandbox, busybox: bytes) -> None:
    timeout = 0.5
    started = time.monotonic()
    with pytest.raises(InvocationTimeout):
        sandbox.run(busybox, ["sleep", "100"], timeout_s=timeout)
    assert time.monotonic() - started < timeout + 0.2


def test_a_gigabyte_of_stdout_is_bad_output(sandbox: Sandbox,
                                            hostile: dict[str, bytes]) -> None:
    started = time.monotonic()
    with pytest.raises(BadOutput) as caught:
        sandbox.run(hostile["musl-gcc"], ["hostile", "flood"], max_output_bytes=1 << 20)
    assert caught.value.detail["limit"] == 1 << 20
    assert time.monotonic() - started < 2


def test_a_million_tiny_files_end_promptly_with_enospc(sandbox: Sandbox,
                                                       hostile: dict[str, bytes]) -> None:
    """The file system holds 65,536 nodes; the program sees ENOSPC and stops by itself."""
    started = time.monotonic()
    run = sandbox.run(hostile["musl-gcc"], ["hostile", "files", "1000000"], timeout_s=60)
    elapsed = time.monotonic() - started
    assert run.stdout == f"created 65536 files, then errno={errno.ENOSPC}\n".encode()
    assert run.exit_code == 1
    assert len(run.out) == 65536
    assert run.out[0].name == "f0" and run.out[-1].name == "f65535"
    assert all(item.data == b"x" for item in run.out)
    assert elapsed < 15


@pytest.mark.parametrize(("path", "opened"), [
    ("/in/data", 509),  # descriptors 3 to 511, served by the supervisor
    ("/in/big", 512),  # large inputs: real read-only memfds at descriptors 512 to 1023
])
def test_descriptors_run_out_with_emfile(sandbox: Sandbox, hostile: dict[str, bytes],
                                         path: str, opened: int) -> None:
    run = sandbox.run(hostile["musl-gcc"], ["hostile", "reopen", path], INPUTS)
    first = INPUTS[path.removeprefix("/in/")][0]
    assert run.stdout == f"opened {opened} errno={errno.EMFILE} sum={first * opened}\n".encode()
    assert run.exit_code == 0


def _shared_memory() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("Shmem:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no Shmem line in /proc/meminfo")


def test_reopening_a_large_input_does_not_multiply_worker_memory(
        sandbox: Sandbox, hostile: dict[str, bytes]) -> None:
    """300 descriptors of one 4 MiB input must not make the worker hold 300 copies (1.2 GiB).

    The program's memory bound cannot count what the supervisor allocates for it, so
    the copy behind large input files must be shared by every open of the same file.
    """
    size, opens = 4 << 20, 300
    before = _shared_memory()
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.005):
            peak = max(peak, _shared_memory())

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        run = sandbox.run(hostile["musl-gcc"], ["hostile", "reopen", "/in/big", str(opens)],
                          {"big": b"\x01" * size})
    finally:
        done.set()
        sampler.join()
    assert run.stdout == f"opened {opens} errno=0 sum={opens}\n".encode()
    assert peak - before < 50 * size, f"the worker's shared memory grew by {peak - before} bytes"


@pytest.mark.parametrize("compiler", COMPILERS)
def test_no_new_executable_memory(sandbox: Sandbox, hostile: dict[str, bytes],
                                  compiler: str) -> None:
    run = sandbox.run(hostile[compiler], ["hostile", "exec-memory"], INPUTS)
    assert run.stdout.decode().splitlines() == [
        f"mmap-exec=-1 errno={errno.EACCES}",
        "mmap-data=0 errno=0",
        f"mprotect-exec=-1 errno={errno.EACCES}",
        f"mmap-file-exec=-1 errno={errno.EACCES}",
    ]
    assert run.exit_code == 0


@pytest.mark.parametrize("compiler", COMPILERS)
def test_wild_pointers_get_efault(sandbox: Sandbox, hostile: dict[str, bytes],
                                  compiler: str) -> None:
    run = sandbox.run(hostile[compiler], ["hostile", "wild"], INPUTS)
    fault = errno.EFAULT
    assert run.stdout.decode().splitlines() == [
        f"read-wild=-1 errno={fault}",
        f"read-big-wild=-1 errno={fault}",
        f"read-into-code=-1 errno={fault}",
        f"write-wild=-1 errno={fault}",
        f"open-wild=-1 errno={fault}",
        f"stat-wild=-1 errno={fault}",
        "read-after=4 errno=0",
        "data=abcd",
    ]
    assert run.exit_code == 0


@pytest.mark.parametrize("compiler", COMPILERS)
def test_the_program_never_learns_a_host_pid(sandbox: Sandbox, hostile: dict[str, bytes],
                                             compiler: str) -> None:
    """``set_tid_address`` answers 1 like getpid/gettid (musl keeps it as its thread id)."""
    run = sandbox.run(hostile[compiler], ["hostile", "identity"])
    assert run.stdout == b"set_tid_address=1 getpid=1 gettid=1 getppid=0\n"


# -- binaries refused at registration -----------------------------------------------------


def _spec(binary: bytes) -> FunctionSpec:
    return FunctionSpec(name="refused", engine="linux", binary=binary, sha256="-",
                        input_sets=("stdio",), output_sets=("stdio",))


@pytest.fixture(scope="module")
def dynamic_binary(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    source = "#include <stdio.h>\nint main(void) { puts(\"dynamic\"); return 0; }\n"
    return build_c(source, tmp_path_factory.mktemp("dynamic") / "dynamic", "gcc", static=False)


def test_a_dynamically_linked_binary_is_refused(linux_engine: LinuxEngine,
                                                dynamic_binary: bytes) -> None:
    with pytest.raises(InvalidBinary) as caught:
        linux_engine.prepare(_spec(dynamic_binary), None)
    assert "dynamically linked" in caught.value.message
    assert "link it statically" in caught.value.message


@pytest.mark.parametrize("binary", [
    pytest.param(b"#!/bin/sh\necho hi\n", id="shell-script"),
    pytest.param(random.Random(5).randbytes(4096), id="random-bytes"),
    pytest.param(b"\x7fELF" + random.Random(6).randbytes(200), id="random-after-elf-magic"),
    pytest.param(b"", id="empty"),
])
def test_non_executables_are_refused(linux_engine: LinuxEngine, binary: bytes) -> None:
    with pytest.raises(InvalidBinary):
        linux_engine.prepare(_spec(binary), None)


@pytest.fixture(scope="module")
def hello(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    source = "#include <stdio.h>\nint main(void) { puts(\"hello\"); return 0; }\n"
    return build_c(source, tmp_path_factory.mktemp("hello") / "hello", "musl-gcc")


def test_damaged_binaries_end_with_typed_outcomes(sandbox: Sandbox, hello: bytes) -> None:
    """Damage anywhere in a static binary: refused at registration, or run to a result or
    a typed sandbox error, never an exception of the engine's own."""
    outcomes = damaged_outcomes(
        hello, 0xB1A5, 300,
        lambda binary, _: sandbox.run(binary, ["hello"], timeout_s=1.0).exit_code,
        near_start=0.5)
    assert typed_failures(outcomes) >= 10, outcomes


# -- concurrency --------------------------------------------------------------------------


def test_two_invocations_at_once_both_succeed(sandbox: Sandbox, busybox: bytes) -> None:
    rng = random.Random(11)
    payloads = [rng.randbytes(200_000), rng.randbytes(3_000)]
    barrier = threading.Barrier(2)

    def invoke(data: bytes) -> list[bytes]:
        barrier.wait()
        results = []
        for _ in range(10):
            run = sandbox.run(busybox, ["sha256sum", "in/data"], {"data": data})
            assert run.exit_code == 0
            results.append(run.stdout)
        return results

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(invoke, payloads))
    for data, results in zip(payloads, outcomes, strict=True):
        expected = hashlib.sha256(data).hexdigest().encode() + b"  in/data\n"
        assert results == [expected] * 10


def test_a_spinning_neighbour_does_not_hold_up_other_invocations(
        sandbox: Sandbox, busybox: bytes, hostile: dict[str, bytes]) -> None:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        spinner = pool.submit(sandbox.run, hostile["musl-gcc"], ["hostile", "spin"],
                              timeout_s=1.0)
        started = time.monotonic()
        for number in range(5):
            run = sandbox.run(busybox, ["expr", str(number), "*", "3"])
            assert run.stdout == f"{number * 3}\n".encode()
        assert time.monotonic() - started < 0.9
        assert not spinner.done()
        with pytest.raises(InvocationTimeout):
            spinner.result()


def test_processes_are_reaped(sandbox: Sandbox, busybox: bytes) -> None:
    """No zombie children are left behind by runs (the warm launchers are alive, not zombies).

    A program that called exit_group is reaped in the background, after its result is
    returned: the zombies must be gone shortly after, not necessarily at once.
    """
    for argv in (["true"], ["false"], ["sh", "-c", "kill -9 $$"]):
        with contextlib.suppress(SandboxError):
            sandbox.run(busybox, argv)
    deadline = time.monotonic() + 5
    while (zombies := _zombie_children()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert zombies == []


def _zombie_children() -> list[str]:
    zombies = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == os.getpid():
            zombies.append(entry.name)
    return zombies
