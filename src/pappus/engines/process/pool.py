"""A warm pool of sandbox processes, started ahead of time and each used exactly once.

Starting a process (``posix_spawn`` + exec) is the largest fixed cost of an
invocation. The pool keeps a few already started (the process engine's
runners blocked in ``recvmsg`` on their socket; the linux engine's launchers
parked in their first notified call), so an invocation only hands its work
over. Every process still serves exactly one invocation: nothing is reused,
and a waiting one holds nothing but its own empty image (the work arrives
with the invocation). In :class:`RunnerPool` (the linux engine's) a
background thread refills the pool after each take; when it is empty one is
started on the spot. Processes are started with
:func:`pappus.engines.spawn.spawn` (``posix_spawn``: the worker is never
forked), or cloned by a :class:`Zygote`. The process engine keeps its runners
without a thread (:mod:`pappus.engines.process.clone_pool`).

A waiting runner exits by itself when its socket reaches end-of-file: when
:meth:`RunnerPool.close` closes the worker's ends, or when the worker dies.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import select
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from pappus.engines.spawn import spawn

log = logging.getLogger(__name__)
CHANNEL_FD = 3
REQUEST_FD = 4
"""Where a zygote whose runners are passed no descriptor reads its requests (a pipe)."""
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
    cloned: bool = False
    """Cloned by a :class:`Zygote` (not started with ``posix_spawn``)."""

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
    :meth:`start_runner` (the linux launcher's parameters: 0). ``descriptors``
    (child number → ours) are passed to the zygote and to every runner
    started with ``posix_spawn`` instead (the process runner's filter).
    ``on_start`` is called with each new zygote before anything is asked of it
    (an :class:`OSError` from it counts as a zygote that cannot start). Thread-safe.

    Without a descriptor to pass, runners can also be asked for ahead of time
    (:meth:`request`): the zygote clones them on its own while the worker goes
    on, and their sockets wait in the worker's receive buffer until
    :meth:`collect` or :meth:`start_runner` picks them up. No thread of the
    worker is involved (see :class:`~pappus.engines.process.clone_pool.ClonePool`).
    """

    def __init__(self, path: str, *, passed_fd: int | None = None,
                 descriptors: Mapping[int, int] | None = None,
                 on_start: Callable[[Runner], None] | None = None) -> None:
        self._path = path
        self._passed_fd = passed_fd
        self._descriptors = dict(descriptors or {})
        self._on_start = on_start
        self._lock = threading.Lock()
        self._zygote: Runner | None = None
        self._requests: int | None = None
        """Our end of the zygote's request pipe (runners that are passed no descriptor)."""
        self._closed = False
        self._failed_in_a_row = 0
        self._outstanding = 0

    def __repr__(self) -> str:
        return f"<Zygote pid={self.pid} outstanding={self._outstanding}>"

    @property
    def outstanding(self) -> int:
        """Runners asked for with :meth:`request` and not picked up yet."""
        return self._outstanding

    def start_runner(self, descriptor: int | None = None) -> Runner:
        """A new runner, given ``descriptor`` (if this zygote passes one).

        One asked for earlier with :meth:`request` if any is on its way (it is
        waited for), else one asked for now.
        """
        if (descriptor is None) != (self._passed_fd is None):
            raise ValueError("pass a descriptor exactly when the zygote was made to pass one")
        with self._lock:
            for _ in range(2):
                if not self._usable():
                    break
                try:
                    zygote = self._zygote or self._start_zygote()
                except OSError as exc:
                    log.warning("cannot start a runner zygote (%s); spawning runners", exc)
                    break
                runner = self._ask_and_receive(zygote, descriptor)
                if runner is not None:
                    self._failed_in_a_row = 0
                    return runner
                self._drop_zygote()
            else:
                self._failed_in_a_row += 1
                if self._failed_in_a_row == ZYGOTE_GIVE_UP_AFTER:
                    log.warning("runner zygotes failed %d times in a row; spawning runners "
                                "from now on", ZYGOTE_GIVE_UP_AFTER)
        if self._passed_fd is not None and descriptor is not None:
            return start_runner(self._path, {**self._descriptors, self._passed_fd: descriptor})
        return start_runner(self._path, self._descriptors)

    def ensure_started(self) -> bool:
        """Start the zygote now if none runs and one may; whether one runs afterwards."""
        with self._lock:
            if self._zygote is None and self._usable():
                try:
                    self._start_zygote()
                except OSError as exc:
                    log.warning("cannot start a runner zygote (%s); spawning runners", exc)
            return self._zygote is not None

    def _ask_and_receive(self, zygote: Runner, descriptor: int | None) -> Runner | None:
        """One runner from ``zygote``: one already asked for, or one asked for now."""
        try:
            if self._outstanding == 0:
                if descriptor is None:
                    self._send_requests(zygote, 1)
                else:
                    socket.send_fds(zygote.channel, [b"r"], [descriptor])
                self._outstanding += 1
            runner = _receive_runner(zygote, ZYGOTE_REPLY_TIMEOUT_S)
        except OSError:
            return None
        if runner is not None:
            self._outstanding -= 1
        return runner

    def request(self, count: int) -> int:
        """Ask for ``count`` more runners without waiting for them; how many were asked for.

        Nothing is asked for (0) when no zygote can serve; :meth:`start_runner`
        then starts runners itself.
        """
        if self._passed_fd is not None:
            raise ValueError("runners that are passed a descriptor cannot be asked for ahead")
        with self._lock:
            if count <= 0 or not self._usable():
                return 0
            try:
                zygote = self._zygote or self._start_zygote()
                self._send_requests(zygote, count)
            except OSError:
                self._drop_zygote()  # the next start_runner replaces it or gives up
                return 0
            self._outstanding += count
            return count

    def collect(self) -> list[Runner]:
        """The runners asked for with :meth:`request` that have arrived; never waits."""
        with self._lock:
            arrived, broken = self._take_arrived(0.0)
            if broken:
                self._drop_zygote()  # the next start_runner replaces it or gives up
        return arrived

    def _take_arrived(self, wait_s: float, *,
                      unasked_too: bool = False) -> tuple[list[Runner], bool]:
        """Runners the zygote delivered (waiting up to ``wait_s`` in all for those asked
        for), and whether its socket broke. ``unasked_too``: drain whatever is there."""
        arrived: list[Runner] = []
        give_up = time.monotonic() + wait_s
        while self._zygote is not None and (self._outstanding or unasked_too):
            try:
                runner = _receive_runner(self._zygote, max(0.0, give_up - time.monotonic()))
            except OSError:
                return arrived, True
            if runner is None:
                break
            self._outstanding = max(0, self._outstanding - 1)
            arrived.append(runner)
        return arrived, False

    def _usable(self) -> bool:
        return not self._closed and self._failed_in_a_row < ZYGOTE_GIVE_UP_AFTER

    def _start_zygote(self) -> Runner:
        if self._passed_fd is not None:
            zygote = start_runner(self._path, self._descriptors,
                                  argv=("pappus-runner", "zygote"))
        else:
            # Requests go down a pipe, runners come back on the socket (see runner.c).
            theirs, ours = os.pipe2(os.O_CLOEXEC)
            os.set_blocking(ours, False)  # theirs blocks: the zygote sleeps in read
            try:
                zygote = start_runner(self._path, {**self._descriptors, REQUEST_FD: theirs},
                                      argv=("pappus-runner", "zygote"))
            except BaseException:
                os.close(ours)
                raise
            finally:
                os.close(theirs)
            self._requests = ours
        if self._on_start is not None:
            try:
                self._on_start(zygote)  # before any request (the linux zygote's handshake)
            except BaseException:
                zygote.discard()
                raise
        # Never block on the zygote: waits for it are polls with a timeout, so a stopped
        # zygote cannot hang us (see _receive_runner).
        zygote.channel.setblocking(False)
        self._zygote = zygote
        return zygote

    def _send_requests(self, zygote: Runner, count: int) -> None:
        """Ask ``zygote`` for ``count`` runners (:class:`OSError` if it cannot take them)."""
        if self._requests is None:
            zygote.channel.send(b"r" * count)
        elif os.write(self._requests, b"r" * count) != count:
            raise BlockingIOError("the zygote's request pipe is full")

    def _drop_zygote(self) -> None:
        """End the current zygote (it failed to deliver) and any runner it already delivered.

        Runners delivered but not picked up are received and ended here: once
        our end of the socket is closed they would exit unseen and never be reaped.
        """
        if self._zygote is not None:
            for runner in self._take_arrived(0.0, unasked_too=True)[0]:
                runner.discard()
            self._zygote.discard()
            self._zygote = None
        if self._requests is not None:
            os.close(self._requests)
            self._requests = None
        self._outstanding = 0

    @property
    def pid(self) -> int | None:
        """The zygote's process id, while one runs."""
        return self._zygote.pid if self._zygote is not None else None

    def close(self, *, wait_s: float = ZYGOTE_REPLY_TIMEOUT_S) -> list[Runner]:
        """End the zygote (its socket reaches end-of-file). Idempotent.

        Runners asked for and still on their way are waited for (up to
        ``wait_s`` in all) and returned, so that the caller can end and reap
        them: closing our end first would leave them unreaped.
        """
        with self._lock:
            self._closed = True
            arrived = self._take_arrived(wait_s)[0]
            self._drop_zygote()
        return arrived


def _receive_runner(zygote: Runner, wait_s: float) -> Runner | None:
    """The next runner ``zygote`` delivered, waiting up to ``wait_s``; ``None`` if none came.

    Raises :class:`OSError` if the zygote's socket is broken or the delivery
    malformed. The zygote's socket is non-blocking.
    """
    if wait_s > 0:
        poller = select.poll()
        poller.register(zygote.channel, select.POLLIN)
        if not poller.poll(math.ceil(wait_s * 1000)):
            return None
    try:
        data, descriptors, _, _ = socket.recv_fds(zygote.channel, 4, 1)
    except BlockingIOError:
        return None
    if len(data) != 4 or len(descriptors) != 1:
        for received in descriptors:
            os.close(received)
        raise ConnectionError("the zygote's delivery was malformed or it closed its socket")
    channel = socket.socket(fileno=descriptors[0])
    pid = int.from_bytes(data, "little")
    try:
        pidfd = os.pidfd_open(pid)  # our child (CLONE_PARENT), not reaped: the pid is its own
    except OSError:
        channel.close()
        raise
    return Runner(pid, pidfd, channel, cloned=True)


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
    For ``linger_s`` after a clean-up was handed over, the thread sleeps with
    that timeout instead of being woken for the next one, so a steady stream
    of invocations hands clean-ups over without waking it each time.

    ``get_ready`` (optional) does more for the next one to be taken, on the
    thread, when it is woken to refill; it is out of the pool meanwhile, and
    discarded if ``get_ready`` raises.

    ``discard`` ends one that is no longer wanted (on :meth:`close`). A start
    that fails in the background is logged and stops the refilling until the
    next :meth:`take`, which starts one itself and so reports the error to its caller.
    """

    def __init__(self, start: Callable[[], T], size: int, discard: Callable[[T], None], *,
                 refill_on_take: bool = True, cleanup_delay_s: float = 0.01,
                 max_backlog: int = 64, get_ready: Callable[[T], None] | None = None) -> None:
        if size < 0:
            raise ValueError(f"pool size must be >= 0, not {size}")
        self._start = start
        self._discard = discard
        self._get_ready = get_ready
        self.size = size
        self.refill_on_take = refill_on_take
        self.cleanup_delay_s = cleanup_delay_s
        self.max_backlog = max_backlog
        self._ready: deque[T] = deque()
        self._cleanups: list[Callable[[], None]] = []
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None
        self._wake = False
        self._untimed = False
        self._cleanups_since = self._last_cleanup = -math.inf
        self.linger_s = 1.0
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
                    self._cleanups_since = time.monotonic()
                    self._last_cleanup = self._cleanups_since
                    if self._untimed:
                        self._condition.notify()  # asleep with no timeout: start the delay
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
                    now = time.monotonic()
                    if self._cleanups and now - self._cleanups_since >= self.cleanup_delay_s:
                        break  # clean-ups waited long enough
                    # While clean-ups keep coming, wait with a timeout rather than be woken
                    # for each (a wake-up is a GIL hand-over on an invocation's path).
                    lingering = now - self._last_cleanup < self.linger_s
                    timeout = self.cleanup_delay_s if (self._cleanups or lingering) else None
                    self._untimed = timeout is None
                    self._condition.wait(timeout)
                    self._untimed = False
                self._wake = False
                cleanups, self._cleanups = self._cleanups, []
                closed = self._closed
                wanted = self.size - len(self._ready) if self._refilling and not closed else 0
            for call in cleanups:
                _run_logged(call)
            if closed:
                return
            if not self._get_first_ready():
                wanted += 1  # it was discarded: replace it too
            for _ in range(wanted):
                if not self._start_one():
                    break

    def _get_first_ready(self) -> bool:
        """Run ``get_ready`` on the first waiting one, taken out of the pool meanwhile;
        False if it failed (and was discarded)."""
        if self._get_ready is None:
            return True
        with self._condition:
            first = self._ready.popleft() if self._ready else None
        if first is None:
            return True
        try:
            self._get_ready(first)
        except Exception:  # it died or failed: it must not be taken
            log.debug("a warm sandbox process could not be made ready", exc_info=True)
            self._discard(first)
            return False
        with self._condition:
            if not self._closed:
                self._ready.appendleft(first)
                return True
        self._discard(first)
        return True

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
