"""Warm launchers and recycled input memfds: what must hold however they are reused.

A launcher is started, confined and parked ahead of time; input files are
copied into memfds that later invocations reuse. These tests check the
confinement of a parked launcher, that a dead or broken launcher is reported
or replaced, and that a recycled memfd never shows a later program anything
of an earlier invocation.
"""

from __future__ import annotations

import hashlib
import os
import resource
import select
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pappus.engines.linux import engine as engine_module
from pappus.engines.linux.engine import LinuxEngine
from pappus.engines.linux.launcher import (
    MAX_ARGUMENT_BYTES,
    Launcher,
    argument_block,
    can_become_nobody,
)
from pappus.engines.linux.memfd import MemfdRecycler
from pappus.engines.process.pool import Runner
from pappus.errors import EngineUnavailable, InvocationTimeout, SandboxCrash, TooLarge
from tests.conftest import eventually
from tests.engines.linux.support import Sandbox, build_c, busybox_binary


@pytest.fixture(scope="module")
def busybox() -> bytes:
    return busybox_binary()


def _parked(engine: LinuxEngine) -> list[Launcher]:
    eventually(lambda: len(engine.pool.waiting()) >= engine.pool.size,
               describe=lambda: "the pool did not fill")
    waiting = engine.pool.waiting()
    for launcher in waiting:
        launcher.wait_until_parked(time.monotonic() + 5)
    return waiting


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def test_a_parked_launcher_is_confined_before_any_invocation(sandbox: Sandbox,
                                                            busybox: bytes) -> None:
    sandbox.run(busybox, ["true"])  # the pool is running
    for launcher in _parked(sandbox.engine):
        status = _status(launcher.pid)
        assert int(status["CapEff"], 16) == 0, status["CapEff"]
        assert int(status["CapPrm"], 16) == 0, status["CapPrm"]
        assert int(status["CapInh"], 16) == 0
        assert status["NoNewPrivs"].strip() == "1"
        # Real, effective, saved and file-system ids: nobody where the worker can still set
        # its limits (clones in the zygote's user namespace, which the worker owns; or root
        # with CAP_SYS_RESOURCE), else the worker's own.
        nobody = launcher.as_nobody
        expected = (sandbox.engine.clones_run_as_nobody if launcher.runner.cloned
                    else can_become_nobody())
        assert nobody == expected
        assert status["Uid"].split() == [str(65534 if nobody else os.getuid())] * 4
        assert status["Gid"].split() == [str(65534 if nobody else os.getgid())] * 4
        if nobody:
            assert status["Groups"].strip() == ""
        assert status["Seccomp"].strip() == "2"  # filter mode
        # Its descriptors: only the listener (0), the parameters were mapped and closed;
        # and, if it was bound ahead to the function just run, that executable (1).
        descriptors = sorted(os.listdir(f"/proc/{launcher.pid}/fd"))
        assert descriptors == (["0"] if launcher.bound_to is None else ["0", "1"])
        if launcher.bound_to is not None:
            assert os.readlink(f"/proc/{launcher.pid}/fd/1").startswith(
                "/memfd:pappus-executable")


@pytest.mark.skipif(os.geteuid() != 0, reason="mapping uid 65534 into a namespace needs root")
def test_as_root_launchers_run_as_nobody_in_the_zygotes_user_namespace(
        sandbox: Sandbox, busybox: bytes) -> None:
    """Root without CAP_SYS_RESOURCE could not set the limits of a uid-65534 process on the
    host; in a user namespace the worker owns it can, so the program never runs as uid 0."""
    sandbox.run(busybox, ["true"])
    zygote = sandbox.engine.zygote_pid
    assert zygote is not None
    if Path(f"/proc/{zygote}/ns/user").resolve() == Path("/proc/self/ns/user").resolve():
        pytest.skip("this kernel or container refuses the zygote a user namespace")
    assert sandbox.engine.zygote_maps_nobody and sandbox.engine.clones_run_as_nobody
    assert Path(f"/proc/{zygote}/uid_map").read_text().split() == ["65534", "65534", "1"]
    for launcher in _parked(sandbox.engine):
        assert launcher.as_nobody and launcher.runner.cloned
        assert _status(launcher.pid)["Uid"].split() == ["65534"] * 4
        assert os.readlink(f"/proc/{launcher.pid}/ns/user") == os.readlink(
            f"/proc/{zygote}/ns/user")
    # The kernel answers the identity calls there, and says what the supervisor would.
    run = sandbox.run(busybox, ["id"])
    assert run.stdout == b"uid=65534 gid=65534\n"


def test_a_waiting_launcher_that_died_is_replaced(sandbox: Sandbox, busybox: bytes) -> None:
    sandbox.run(busybox, ["true"])
    for launcher in _parked(sandbox.engine):
        os.kill(launcher.pid, signal.SIGKILL)
    for _ in range(3):
        assert sandbox.run(busybox, ["echo", "still", "here"]).stdout == b"still here\n"


def test_a_launcher_that_dies_as_it_is_taken_is_replaced(sandbox: Sandbox, busybox: bytes,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after the liveness check (here: the check is made to miss it), the launcher's
    parked call never arrives; the run is retried in a fresh one, not blamed on the program."""
    sandbox.run(busybox, ["true"])
    for launcher in _parked(sandbox.engine):
        os.kill(launcher.pid, signal.SIGKILL)
        select.select([launcher.pidfd], [], [], 5)  # it is dead now
    monkeypatch.setattr(Launcher, "alive", lambda self: True)
    assert sandbox.run(busybox, ["echo", "retried"]).stdout == b"retried\n"


def test_a_launcher_killed_before_its_exec_is_told_from_a_program_that_ran(
        sandbox: Sandbox, busybox: bytes) -> None:
    """A reply that lets the exec run can reach a launcher a SIGKILL has not woken yet; its
    end must then be a lost launcher (retried), not the program's CPU limit or crash."""
    sandbox.run(busybox, ["true"])
    path = sandbox.engine._launcher_path()
    launcher = _parked(sandbox.engine)[0]
    os.kill(launcher.pid, signal.SIGKILL)
    assert launcher.never_ran_a_program(path)
    # A program that ran and was killed is not mistaken for one: the engine reports it.
    with pytest.raises(InvocationTimeout):
        sandbox.run(busybox, ["sh", "-c", "while :; do :; done"], timeout_s=0.3)


def test_a_program_that_takes_the_launchers_name_is_still_judged_as_a_program(
        sandbox: Sandbox, tmp_path: Path) -> None:
    """A program may rename itself (prctl(PR_SET_NAME) runs natively), even to the launcher's
    name; that must not make its crash look like a launcher lost before the exec (which would
    rerun it and report engine_unavailable)."""
    name = os.path.basename(sandbox.engine._launcher_path())[:15]
    source = ("#include <sys/prctl.h>\n"
              "int main(void) {\n"
              f'    prctl(PR_SET_NAME, "{name}");\n'
              "    *(volatile int *)0 = 1;\n"
              "    return 0;\n"
              "}\n")
    impostor = build_c(source, tmp_path / "impostor", "musl-gcc")
    with pytest.raises(SandboxCrash) as caught:
        sandbox.run(impostor, ["impostor"])
    assert caught.value.detail.get("signal") == "SIGSEGV", caught.value.detail


def test_a_launcher_that_cannot_set_up_is_engine_unavailable(launcher_dir: Path,
                                                             busybox: bytes) -> None:
    engine = LinuxEngine(launcher_dir, warm_launchers=1)
    bad = bytes(8) * 4  # four "ld a, [0]" and no return: the kernel refuses it
    engine._filters = {False: bad, True: bad}
    try:
        with pytest.raises(EngineUnavailable) as caught:
            Sandbox(engine).run(busybox, ["true"])
        assert "installing the seccomp filter" in caught.value.message
        assert "Invalid argument" in caught.value.message
    finally:
        engine.close()


def test_recycled_input_memfds_show_only_the_new_content(sandbox: Sandbox,
                                                         busybox: bytes) -> None:
    reused = sandbox.engine.memfds.reused
    first = b"A" * (100 << 10)
    second = b"B" * (40 << 10)
    recycler = sandbox.engine.memfds

    def released() -> None:  # the previous run's clean-up (on the pool thread) gave it back
        eventually(lambda: recycler.kept > 0, describe=lambda: recycler)

    for data in (first, second, first):
        run = sandbox.run(busybox, ["sha256sum", "/in/data"], {"data": data})
        assert run.stdout == f"{hashlib.sha256(data).hexdigest()}  /in/data\n".encode()
        released()
    # Past the end of a smaller input there is nothing, not the bigger one's bytes.
    run = sandbox.run(busybox, ["dd", "if=/in/data", "bs=1024", "skip=39", "status=none"],
                      {"data": second})
    assert run.stdout == b"B" * 1024
    assert sandbox.engine.memfds.reused >= reused + 3, "the test did not exercise recycling"


def test_the_recycler_reuses_the_best_fit_and_bounds_what_it_keeps() -> None:
    recycler = MemfdRecycler(max_files=2, max_bytes=1 << 20)
    try:
        small, large = recycler.acquire(b"s" * 10), recycler.acquire(b"L" * 5000)
        recycler.release(small)
        recycler.release(large)
        again = recycler.acquire(b"x" * 4000)  # the smallest that fits: the 5000-byte one
        assert again == large and os.pread(again, 10000, 0) == b"x" * 4000
        assert os.fstat(again).st_size == 4000
        recycler.release(again)
        assert recycler.kept == 2
        too_big = recycler.acquire(b"y" * (2 << 20))
        recycler.release(too_big)  # beyond max_bytes: closed, not kept
        assert recycler.kept == 1
        assert (recycler.created, recycler.reused) == (2, 2)
    finally:
        recycler.close()


def test_argument_block_offsets_and_limits() -> None:
    strings, argv, envp = argument_block([b"prog", b"a\0hidden", b""], [b"K=v"])
    assert strings == b"prog\0a\0\0K=v\0"
    assert (argv, envp) == ([0, 5, 7], [8])
    assert argument_block([], [])[0] == b"function\0"
    with pytest.raises(TooLarge):
        argument_block([b"x" * MAX_ARGUMENT_BYTES], [])
    with pytest.raises(TooLarge):
        argument_block([b""] * (MAX_ARGUMENT_BYTES // 2 + 1), [])


def _argv_and_parent(pid: int) -> tuple[list[bytes], int]:
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
    return argv, int(_status(pid)["PPid"])


def test_launchers_are_clones_of_the_zygote_and_children_of_the_worker(
        sandbox: Sandbox, busybox: bytes) -> None:
    sandbox.run(busybox, ["true"])
    parked = _parked(sandbox.engine)  # the pool is full: the zygote is not cloning now
    zygote = sandbox.engine.zygote_pid
    assert zygote is not None
    assert _argv_and_parent(zygote) == ([b"pappus-runner", b"zygote"], os.getpid())
    # Its socket, nothing else (once it has closed its copies of the last clone's descriptors,
    # which it does just after sending them).
    eventually(lambda: sorted(os.listdir(f"/proc/{zygote}/fd")) == ["3"],
               describe=lambda: os.listdir(f"/proc/{zygote}/fd"))
    for launcher in parked:
        assert _argv_and_parent(launcher.pid) == ([b"pappus-runner", b"launch"], os.getpid())


def test_a_killed_zygote_is_replaced_and_close_ends_it(launcher_dir: Path,
                                                       busybox: bytes) -> None:
    engine = LinuxEngine(launcher_dir, warm_launchers=1)
    try:
        sandbox = Sandbox(engine)
        sandbox.run(busybox, ["true"])
        first = engine.zygote_pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        for word in ("one", "two", "three"):
            assert sandbox.run(busybox, ["echo", word]).stdout == f"{word}\n".encode()
        second = engine.zygote_pid
        assert second not in (None, first)
        assert not Path(f"/proc/{first}").exists(), "the dead zygote was not reaped"
    finally:
        engine.close()
    assert not Path(f"/proc/{second}").exists(), "close did not end the zygote"


def test_a_launcher_bound_ahead_runs_only_the_function_it_was_bound_for(
        sandbox: Sandbox, busybox: bytes, tmp_path: Path) -> None:
    """After a run, the next waiting launcher gets that function's executable ahead (a guess
    that it runs again). The guess must save the work when right and never run the wrong
    program when wrong."""
    first, second = (
        build_c(f'#include <stdio.h>\nint main(void) {{ puts("{word}"); return 0; }}\n',
                tmp_path / word, "musl-gcc") for word in ("first", "second"))
    engine = sandbox.engine
    artifact = sandbox.prepare(first)

    def next_is_bound_to_first() -> bool:
        waiting = engine.pool.waiting()
        return bool(waiting) and waiting[0].bound_to is artifact

    assert sandbox.run(first, ["first"]).stdout == b"first\n"
    eventually(next_is_bound_to_first, describe=engine.pool.waiting)
    hits = engine.bound_ahead
    assert sandbox.run(first, ["first"]).stdout == b"first\n"
    assert engine.bound_ahead == hits + 1, "the launcher bound ahead was not used"
    eventually(next_is_bound_to_first, describe=engine.pool.waiting)
    assert sandbox.run(second, ["second"]).stdout == b"second\n"  # bound to first: rebound
    assert engine.bound_ahead == hits + 1
    assert sandbox.run(busybox, ["echo", "third"]).stdout == b"third\n"
    assert sandbox.run(first, ["first"]).stdout == b"first\n"


@pytest.mark.parametrize(("answer", "maps"), [(b"n", False), (b"u", False), (b"u", True)])
def test_the_zygote_handshake_decides_the_clones_identity(
        launcher_dir: Path, monkeypatch: pytest.MonkeyPatch, answer: bytes, maps: bool) -> None:
    """'n' (no user namespace): the host's rule; 'u': 65534 exactly when the map could be
    written (an unmapped namespace allows no switch, whatever the worker's capabilities)."""
    engine = LinuxEngine(launcher_dir, warm_launchers=1)
    mapped: list[int] = []

    def map_nobody(pid: int) -> bool:
        mapped.append(pid)
        return maps

    monkeypatch.setattr(engine_module, "_map_nobody", map_nobody)
    ours, theirs = socket.socketpair()
    try:
        theirs.send(answer)
        engine._zygote_handshake(Runner(4242, -1, ours))
        assert engine.zygote_maps_nobody is (answer == b"u" and maps)
        expected = maps if answer == b"u" else can_become_nobody()
        assert engine.clones_run_as_nobody is expected
        assert mapped == ([4242] if answer == b"u" else [])
    finally:
        ours.close()
        theirs.close()
        engine.close()


def test_a_zygote_that_says_nothing_sensible_is_not_used(launcher_dir: Path) -> None:
    engine = LinuxEngine(launcher_dir, warm_launchers=1)
    ours, theirs = socket.socketpair()
    try:
        theirs.send(b"?")
        with pytest.raises(ConnectionError, match="user namespace"):
            engine._zygote_handshake(Runner(4242, -1, ours))
        theirs.close()  # and one that closes its socket without a word
        with pytest.raises(ConnectionError):
            engine._zygote_handshake(Runner(4242, -1, ours))
    finally:
        ours.close()
        engine.close()


def test_mapping_into_a_namespace_we_do_not_own_fails_honestly() -> None:
    """The worker's own namespace (the initial one here) cannot be mapped again."""
    assert engine_module._map_nobody(os.getpid()) is False


@pytest.fixture
def descriptors_past_1024() -> Iterator[None]:
    """The lowest free descriptor is above 1024 (select's FD_SETSIZE) for the test."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1200
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below {wanted}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    held = []
    try:
        with open(os.devnull, "rb") as null:
            while (fd := os.dup(null.fileno())) < 1100:
                held.append(fd)
            held.append(fd)
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.usefixtures("descriptors_past_1024")
def test_launchers_work_with_descriptors_above_1024(launcher_dir: Path, busybox: bytes) -> None:
    """A worker with many connections or functions: pidfds and listeners past select's limit."""
    engine = LinuxEngine(launcher_dir, warm_launchers=2)
    try:
        sandbox = Sandbox(engine)
        for number in range(6):
            run = sandbox.run(busybox, ["expr", str(number), "+", "1"])
            assert (run.exit_code, run.stdout) == (0, f"{number + 1}\n".encode())
        assert min(launcher.pidfd for launcher in _parked(engine)) > 1024
    finally:
        engine.close()
