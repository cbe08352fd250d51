"""A warm pool of sandbox processes, started ahead of time and each used exactly once.

Starting a process (``posix_spawn`` + exec) is the largest fixed cost of an
invocation. The pool keeps a few already started (the process engine's
runners blocked in ``recvmsg`` on their socket; the linux engine's launchers
parked in their first notified call), so an invocation only hands its work
over. Every process still serves exactly one invocation: nothing is reused,
and a waiting one holds nothing but its own empty image (the work arrives
with the invocation). A background thread refills the pool after each take;
when it is empty one is started on the spot. Processes are started with
:func:`pappus.engines.spawn.spawn` (``posix_spawn``: the worker is never
forked), or, for the process engine, cloned by a :class:`Zygote` runner.

A waiting runner exits by itself when its socket reaches end-of-file: when
:meth:`RunnerPool.close` closes the worker's ends, or when the worker dies.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from pappus.engines.spawn import spawn

log = logging.getLogger(__name__)
CHANNEL_FD = 3
ZYGOTE_REPLY_TIMEOUT_S = 2.0
"""How long a zygote may take to deliver a runner before it is replaced."""
ZYGOTE_GIVE_UP_AFTER = 3
"""Requests in a row that no zygote could serve, after which runners are only spawned."""


@dataclass(frozen=True, slots=True)
class Runner:
    """A started runner waiting for its context: process id, pidfd and the worker's socket end."""

    pid: int
    pidfd: int
    channel: socket.socket

    def kill(self) -> None:
        """SIGKILL the process (it may already be gone)."""
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)

    def discard(self) -> None:
        """Close our ends, make sure the process is gone, and reap it (if not reaped yet)."""
        self.channel.close()
        self.kill()
        with contextlib.suppress(ChildProcessError):  # reaped already
            # By pidfd, not pid: once reaped, the pid may belong to a newer process.
            os.waitid(os.P_PIDFD, self.pidfd, os.WEXITED)
        os.close(self.pidfd)


def start_runner(path: str, descriptors: Mapping[int, int] | None = None, *,
                 argv: Sequence[str] = ("pappus-runner",)) -> Runner:
    """Start the runner at ``path`` with a fresh socket pair on descriptor 3.

    ``descriptors`` (child number → ours) are passed as well; nothing else is.
    """
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        pid = spawn(path, list(argv), {**(descriptors or {}), CHANNEL_FD: theirs.fileno()})
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    try:
        pidfd = os.pidfd_open(pid)
    except BaseException:
        ours.close()
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    return Runner(pid, pidfd, ours)


class Zygote:
    """Starts runners by cloning one that waits in "zygote" mode (``runner.c``, ``launcher.c``).

    A clone of the tiny zygote is cheaper than ``posix_spawn`` + exec of a new
    runner, and the worker is still never forked: the zygote is itself a
    runner started by ``posix_spawn`` that never receives any work. Its clones
    are the worker's children (``CLONE_PARENT``), so the worker reaps them as
    before. If the zygote cannot deliver (killed, stopped, or out of
    processes), it is replaced once, and then runners are started with
    ``posix_spawn``; after :data:`ZYGOTE_GIVE_UP_AFTER` such requests in a row,
    only with ``posix_spawn``.
    ``passed_fd`` is where each runner expects the descriptor given to
    :meth:`start_runner` (the linux launcher's parameters: 0). Thread-safe.
    """

    def __init__(self, path: str, *, passed_fd: int | None = None) -> None:
        self._path = path
        self._passed_fd = passed_fd
        self._lock = threading.Lock()
        self._zygote: Runner | None = None
        self._closed = False
        self._failed_in_a_row = 0

    def __repr__(self) -> str:
        return f"<Zygote pid={self.pid}>"

    def start_runner(self, descriptor: int | None = None) -> Runner:
        """A new runner, given ``descriptor`` (if this zygote passes one)."""
        if (descriptor is None) != (self._passed_fd is None):
            raise ValueError("pass a descriptor exactly when the zygote was made to pass one")
        with self._lock:
            for _ in range(2):
                if self._closed or self._failed_in_a_row >= ZYGOTE_GIVE_UP_AFTER:
                    break
                try:
                    zygote = self._zygote or self._start_zygote()
                except OSError as exc:
                    log.warning("cannot start a runner zygote (%s); spawning runners", exc)
                    break
                runner = _clone_runner(zygote, descriptor)
                if runner is not None:
                    self._failed_in_a_row = 0
                    return runner
                self._zygote = None
                zygote.discard()
            else:
                self._failed_in_a_row += 1
                if self._failed_in_a_row == ZYGOTE_GIVE_UP_AFTER:
                    log.warning("runner zygotes failed %d times in a row; spawning runners "
                                "from now on", ZYGOTE_GIVE_UP_AFTER)
        if self._passed_fd is not None and descriptor is not None:
            return start_runner(self._path, {self._passed_fd: descriptor})
        return start_runner(self._path)

    def _start_zygote(self) -> Runner:
        zygote = start_runner(self._path, argv=("pappus-runner", "zygote"))
        zygote.channel.settimeout(ZYGOTE_REPLY_TIMEOUT_S)  # a stopped zygote must not hang us
        self._zygote = zygote
        return zygote

    @property
    def pid(self) -> int | None:
        """The zygote's process id, while one runs."""
        return self._zygote.pid if self._zygote is not None else None

    def close(self) -> None:
        """End the zygote (its socket reaches end-of-file). Idempotent."""
        with self._lock:
            self._closed = True
            if self._zygote is not None:
                self._zygote.discard()
                self._zygote = None


def _clone_runner(zygote: Runner, descriptor: int | None) -> Runner | None:
    """Ask ``zygote`` for one runner (handing it ``descriptor``); ``None`` if none came."""
    try:
        if descriptor is None:
            zygote.channel.sendall(b"r")
        else:
            socket.send_fds(zygote.channel, [b"r"], [descriptor])
        data, descriptors, _, _ = socket.recv_fds(zygote.channel, 4, 1)
    except OSError:
        return None
    if len(data) != 4 or len(descriptors) != 1:
        for received in descriptors:
            os.close(received)
        return None
    channel = socket.socket(fileno=descriptors[0])
    pid = int.from_bytes(data, "little")
    try:
        pidfd = os.pidfd_open(pid)  # our child (CLONE_PARENT), not reaped: the pid is its own
    except OSError:
        channel.close()
        return None
    return Runner(pid, pidfd, channel)


T = TypeVar("T")


class RunnerPool(Generic[T]):
    """Keeps up to ``size`` results of ``start()`` ready; :meth:`take` hands one out.

    One background thread refills the pool and runs clean-ups handed to it
    (:meth:`clean_up_later`: reaping a finished process, closing its
    descriptors), so neither is on an invocation's path. By default a
    :meth:`take` wakes it; an engine that knows a better moment — when the
    invoking thread will be waiting on the kernel, not running Python — passes
    ``refill_on_take=False`` and calls :meth:`refill_soon` then. Clean-ups
    nobody wakes the thread for run within ``cleanup_delay_s``; past
    ``max_backlog`` waiting ones, :meth:`clean_up_later` runs the call itself.

    ``discard`` ends one that is no longer wanted (on :meth:`close`). A start
    that fails in the background is logged and stops the refilling until the
    next :meth:`take`, which starts one itself and so reports the error to its caller.
    """

    def __init__(self, start: Callable[[], T], size: int, discard: Callable[[T], None], *,
                 refill_on_take: bool = True, cleanup_delay_s: float = 0.01,
                 max_backlog: int = 64) -> None:
        if size < 0:
            raise ValueError(f"pool size must be >= 0, not {size}")
        self._start = start
        self._discard = discard
        self.size = size
        self.refill_on_take = refill_on_take
        self.cleanup_delay_s = cleanup_delay_s
        self.max_backlog = max_backlog
        self._ready: deque[T] = deque()
        self._cleanups: list[Callable[[], None]] = []
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None
        self._wake = False
        self._refilling = True
        self._closed = False
        self.started = 0
        self.started_on_demand = 0
        self.failed = 0

    def __repr__(self) -> str:
        return (f"<RunnerPool ready={len(self._ready)}/{self.size} started={self.started} "
                f"on_demand={self.started_on_demand} failed={self.failed} "
                f"cleanups={len(self._cleanups)}>")

    def take(self) -> T:
        """A started one: a waiting one, or (pool empty) one started now."""
        with self._condition:
            if self._closed:
                raise RuntimeError("the runner pool is closed")
            self._refilling = True  # after a failure: try again
            self._ensure_thread()
            ready = self._ready.popleft() if self._ready else None
            if self.refill_on_take or not self._ready:
                self._notify()  # an empty pool refills now, whoever was to say when
        if ready is not None:
            return ready
        started = self._start()
        with self._condition:
            self.started += 1
            self.started_on_demand += 1
        return started

    def waiting(self) -> list[T]:
        """The ones ready now (for inspection; they stay in the pool)."""
        with self._condition:
            return list(self._ready)

    def refill_soon(self) -> None:
        """Wake the background thread to refill (and run waiting clean-ups) now."""
        with self._condition:
            self._notify()

    def clean_up_later(self, call: Callable[[], None]) -> None:
        """Run ``call`` on the background thread, soon (see the class docstring)."""
        with self._condition:
            queued = not self._closed and len(self._cleanups) < self.max_backlog
            if queued:
                self._ensure_thread()
                self._cleanups.append(call)
                if len(self._cleanups) == 1:
                    self._condition.notify()  # a thread waiting with no timeout: start the delay
        if not queued:
            _run_logged(call)

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pappus-runner-pool",
                                            daemon=True)
            self._thread.start()

    def _notify(self) -> None:
        self._wake = True
        self._condition.notify()

    def _run(self) -> None:
        while True:
            with self._condition:
                while not (self._closed or self._wake):
                    timeout = self.cleanup_delay_s if self._cleanups else None
                    if not self._condition.wait(timeout) and self._cleanups:
                        break  # clean-ups waited long enough
                self._wake = False
                cleanups, self._cleanups = self._cleanups, []
                closed = self._closed
                wanted = self.size - len(self._ready) if self._refilling and not closed else 0
            for call in cleanups:
                _run_logged(call)
            if closed:
                return
            for _ in range(wanted):
                if not self._start_one():
                    break

    def _start_one(self) -> bool:
        try:
            started = self._start()
        except Exception:
            log.warning("starting a warm sandbox process failed; starting them on demand",
                        exc_info=True)
            with self._condition:
                self.failed += 1
                self._refilling = False  # the next take() tries again
            return False
        with self._condition:
            self.started += 1
            if not self._closed and len(self._ready) < self.size:
                self._ready.append(started)
                return True
        self._discard(started)
        return False

    def close(self) -> None:
        """Stop refilling, run waiting clean-ups, end every waiting one. Idempotent."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
            waiting = list(self._ready)
            self._ready.clear()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        with self._condition:
            cleanups, self._cleanups = self._cleanups, []
        for call in cleanups:
            _run_logged(call)
        for started in waiting:
            self._discard(started)


def _run_logged(call: Callable[[], None]) -> None:
    try:
        call()
    except Exception:
        log.exception("a background clean-up failed")
