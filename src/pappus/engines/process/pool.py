"""A warm pool of runner processes, started ahead of time and each used exactly once.

Starting a process (``posix_spawn`` + exec) is the largest fixed cost of an
invocation. The pool keeps a few runners already started and blocked in
``recvmsg`` on their socket, so an invocation only hands its context over.
Every runner still serves exactly one invocation: nothing is reused, and a
waiting runner holds nothing but its own empty image (the context arrives
with the invocation). A background thread refills the pool after each take;
when it is empty a runner is started on the spot.

A waiting runner exits by itself when its socket reaches end-of-file: when
:meth:`RunnerPool.close` closes the worker's ends, or when the worker dies.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


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
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        os.close(self.pidfd)


def start_runner(path: str) -> Runner:
    """``posix_spawn`` the runner at ``path`` with a fresh socket pair on descriptor 3."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    if theirs.fileno() == 3:  # dup2(3, 3) would leave close-on-exec set: move it
        moved = theirs.dup()
        theirs.close()
        theirs = moved
    try:
        pid = os.posix_spawn(path, ["pappus-runner"], {},
                             file_actions=[(os.POSIX_SPAWN_DUP2, theirs.fileno(), 3)],
                             setsigmask=())
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


class RunnerPool:
    """Keeps up to ``size`` runners of ``path()`` started; :meth:`take` hands one out."""

    def __init__(self, path: Callable[[], str], size: int) -> None:
        if size < 0:
            raise ValueError(f"pool size must be >= 0, not {size}")
        self._path = path
        self.size = size
        self._ready: deque[Runner] = deque()
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.started = 0
        self.started_on_demand = 0

    def __repr__(self) -> str:
        return (f"<RunnerPool ready={len(self._ready)}/{self.size} started={self.started} "
                f"on_demand={self.started_on_demand}>")

    def take(self) -> Runner:
        """A started runner: a waiting one, or (pool empty) one started now."""
        with self._condition:
            if self._closed:
                raise RuntimeError("the runner pool is closed")
            if self._thread is None and self.size:
                self._thread = threading.Thread(target=self._refill, name="pappus-runner-pool",
                                                daemon=True)
                self._thread.start()
            runner = self._ready.popleft() if self._ready else None
            self._condition.notify()
        if runner is not None:
            return runner
        runner = start_runner(self._path())
        with self._condition:
            self.started += 1
            self.started_on_demand += 1
        return runner

    def _refill(self) -> None:
        while True:
            with self._condition:
                while not self._closed and len(self._ready) >= self.size:
                    self._condition.wait()
                if self._closed:
                    return
            try:
                runner = start_runner(self._path())
            except OSError:
                return  # take() starts runners itself and reports the error to its caller
            with self._condition:
                self.started += 1
                if self._closed:
                    runner.discard()
                    return
                self._ready.append(runner)

    def close(self) -> None:
        """Stop refilling and end every waiting runner. Idempotent."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
            waiting = list(self._ready)
            self._ready.clear()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        for runner in waiting:
            runner.discard()
