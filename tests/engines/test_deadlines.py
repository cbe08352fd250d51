"""The native deadline watchdog (``pappus.engines.deadlines``): kills and kicks on time, never
after a cancel, and without the GIL."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pappus.engines import deadlines
from pappus.engines.deadlines import THREAD_NAME, DeadlineWatchdog, shared_watchdog
from pappus.engines.kvm.watchdog import NativeWatchdog, Watchdog, create_watchdog
from tests.conftest import eventually
from tests.engines.support import hold_the_gil

KICK = signal.SIGRTMIN + 5


@pytest.fixture
def watchdog(tmp_path: Path) -> Iterator[DeadlineWatchdog]:
    dog = DeadlineWatchdog(tmp_path, "process")
    yield dog
    dog.close()


@contextlib.contextmanager
def sleeper() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A process that would sleep a minute, and its pidfd."""
    process = subprocess.Popen(["sleep", "60"])
    pidfd = os.pidfd_open(process.pid)
    try:
        yield process, pidfd
    finally:
        process.kill()
        process.wait()
        os.close(pidfd)


def deadline_threads() -> int:
    count = 0
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(FileNotFoundError):
            count += Path(f"/proc/self/task/{tid}/comm").read_text().strip() == THREAD_NAME
    return count


def deadline_thread_waiting() -> bool:
    """Whether a deadline thread of this process is asleep (state S in ``/proc``)."""
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(FileNotFoundError):
            stat = Path(f"/proc/self/task/{tid}/stat").read_text()
            name, state = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2]
            if name == THREAD_NAME and state == "S":
                return True
    return False


def test_kills_at_the_deadline_not_before(watchdog: DeadlineWatchdog) -> None:
    with sleeper() as (process, pidfd):
        deadline = time.monotonic() + 0.1
        watch = watchdog.kill_at(deadline, pidfd)
        assert process.wait(timeout=5) == -signal.SIGKILL
        ended = time.monotonic()
        assert watch.cancel() is True and watch.fired
        assert ended >= deadline
    assert watchdog.fired == 1


def test_a_cancelled_watch_never_fires(watchdog: DeadlineWatchdog) -> None:
    with sleeper() as (process, pidfd):
        watch = watchdog.kill_at(time.monotonic() + 0.05, pidfd)
        assert watch.cancel() is False
        assert watch.cancel() is False  # idempotent
        time.sleep(0.15)
        assert process.poll() is None, "killed after its watch was cancelled"
    assert watchdog.fired == 0


def test_an_earlier_deadline_added_later_fires_first(watchdog: DeadlineWatchdog) -> None:
    """The thread sleeps for the earliest deadline; a new, earlier one must wake it."""
    with sleeper() as (late, late_fd), sleeper() as (early, early_fd):
        late_watch = watchdog.kill_at(time.monotonic() + 30, late_fd)
        eventually(deadline_thread_waiting)  # asleep until the late deadline
        deadline = time.monotonic() + 0.05
        early_watch = watchdog.kill_at(deadline, early_fd)
        assert early.wait(timeout=5) == -signal.SIGKILL
        assert time.monotonic() - deadline < 1
        assert late.poll() is None
        assert early_watch.cancel() and not late_watch.cancel()


def test_a_past_deadline_fires_at_once(watchdog: DeadlineWatchdog) -> None:
    with sleeper() as (process, pidfd):
        watch = watchdog.kill_at(time.monotonic() - 1, pidfd)
        assert process.wait(timeout=5) == -signal.SIGKILL
        assert watch.cancel()


def test_many_watches_each_fire_once_in_deadline_order(watchdog: DeadlineWatchdog) -> None:
    with contextlib.ExitStack() as stack:
        sleepers = [stack.enter_context(sleeper()) for _ in range(6)]
        now = time.monotonic()
        offsets = [0.25, 0.05, 0.2, 0.1, 0.3, 0.15]
        watches = [watchdog.kill_at(now + offset, pidfd)
                   for offset, (_, pidfd) in zip(offsets, sleepers, strict=True)]
        ended: dict[int, float] = {}

        def all_ended() -> bool:
            for index, (process, _) in enumerate(sleepers):
                if index not in ended and process.poll() is not None:
                    ended[index] = time.monotonic()
            return len(ended) == len(sleepers)

        eventually(all_ended)
        order = sorted(ended, key=lambda index: ended[index])
        assert order == sorted(range(6), key=lambda index: offsets[index])
        assert all(watch.cancel() for watch in watches)
    assert watchdog.fired == 6


def test_a_kick_sets_the_byte_then_signals_the_thread(watchdog: DeadlineWatchdog) -> None:
    flag = ctypes.c_uint8(0)
    seen: list[tuple[int | None, int]] = []
    armed = threading.Event()

    def vcpu() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {KICK})  # as a vCPU thread has it
        armed.set()
        info = signal.sigtimedwait({KICK}, 5)
        seen.append((info.si_signo if info else None, flag.value))

    thread = threading.Thread(target=vcpu)
    thread.start()
    armed.wait()
    assert thread.ident is not None
    watch = watchdog.kick_at(time.monotonic() + 0.05, ctypes.addressof(flag), thread.ident,
                             KICK)
    thread.join()
    assert watch.cancel()
    assert seen == [(KICK, 1)], "the byte must be set before the signal arrives"


def test_one_thread_started_by_the_first_watch_and_gone_after_close(tmp_path: Path) -> None:
    before = deadline_threads()
    dog = DeadlineWatchdog(tmp_path, "process")
    assert deadline_threads() == before  # no thread until something is watched
    with sleeper() as (_, pidfd):
        watches = [dog.kill_at(time.monotonic() + 60, pidfd) for _ in range(3)]
        assert deadline_threads() == before + 1
        for watch in watches:
            assert not watch.cancel()
    dog.close()
    dog.close()
    eventually(lambda: deadline_threads() == before)
    with pytest.raises(RuntimeError, match="closed"):
        dog.kill_at(time.monotonic() + 1, 0)


def test_watches_outliving_a_closed_watchdog_never_fire(tmp_path: Path) -> None:
    dog = DeadlineWatchdog(tmp_path, "process")
    with sleeper() as (process, pidfd):
        watch = dog.kill_at(time.monotonic() + 0.05, pidfd)
        dog.close()
        time.sleep(0.15)
        assert process.poll() is None
        assert watch.cancel() is False


def test_kills_on_time_while_other_threads_hold_the_gil(watchdog: DeadlineWatchdog) -> None:
    """The point of native code: a Python timer waits for the GIL (≈50 ms per C call of a
    holder here) before it can send the kill. Measured as the CPU time the killed spinner
    used (the kernel's count, which no GIL delays): it starts spinning only once the watch
    is armed, so on time it spins at most until the deadline."""
    stop = threading.Event()
    holders = [threading.Thread(target=hold_the_gil, args=(stop,)) for _ in range(2)]
    spun_ms: list[float] = []
    try:
        for holder in holders:
            holder.start()
        for _ in range(4):
            spinner = subprocess.Popen(["sh", "-c", "read go; while :; do :; done"],
                                       stdin=subprocess.PIPE)
            assert spinner.stdin is not None
            pidfd = os.pidfd_open(spinner.pid)
            watch = watchdog.kill_at(time.monotonic() + 0.2, pidfd)
            os.write(spinner.stdin.fileno(), b"go\n")
            _, status, usage = os.wait4(spinner.pid, 0)
            spinner.returncode = os.waitstatus_to_exitcode(status)
            assert watch.cancel() and spinner.returncode == -signal.SIGKILL
            os.close(pidfd)
            spinner.stdin.close()
            spun_ms.append((usage.ru_utime + usage.ru_stime) * 1e3)
    finally:
        stop.set()
        for holder in holders:
            holder.join()
    assert all(ms <= 220 for ms in spun_ms) and max(spun_ms) >= 100, spun_ms


def test_the_shared_watchdog_is_one_per_process(tmp_path: Path) -> None:
    assert shared_watchdog(tmp_path, "process") is shared_watchdog(tmp_path / "other", "linux")


def test_kvm_falls_back_to_its_python_watchdog_without_a_compiler_and_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(deadlines, "_per_process", deadlines._PerProcess())  # none made yet
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no cc, gcc or clang
    monkeypatch.delenv("CC", raising=False)
    with caplog.at_level(logging.WARNING, logger="pappus.engines.kvm.watchdog"):
        kicker = create_watchdog(tmp_path / "fresh")
    assert isinstance(kicker, Watchdog)
    assert "Python watchdog" in caplog.text and "C compiler" in caplog.text
    kicker.close()
    monkeypatch.undo()
    native = create_watchdog(tmp_path / "fresh")
    assert isinstance(native, NativeWatchdog)
    native.close()
