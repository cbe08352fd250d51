"""The deadline, enforced without the guest's cooperation: one watchdog thread for all vCPUs.

An invocation registers its deadline with ``watch`` before it enters the
guest. The watchdog sleeps until the earliest deadline; when one passes while
its guest still runs, it sets ``immediate_exit`` in that vCPU's
``kvm_run`` page and sends :data:`~pappus.engines.kvm.vm.KICK_SIGNAL` to the
vCPU's thread. The signal ends a ``KVM_RUN`` in progress (``EINTR``);
``immediate_exit`` ends one that had not started yet. The signal is blocked
in vCPU threads except while ``KVM_RUN`` runs (``KVM_SET_SIGNAL_MASK``), so
it is never delivered as such — no handler, no Python code in the signal
path — and ``finish`` consumes it if it is left pending.

Two implementations of that interface (:class:`Kicker`):

* :class:`NativeWatchdog` (the default): the worker's native deadline thread
  (:mod:`pappus.engines.deadlines`), which never needs the GIL, so a guest
  stops at its deadline whatever the interpreter is doing;
* :class:`Watchdog`: the same in a Python thread, used when no C compiler is
  available to build the native one (a warning says so); it is late by as long
  as another thread holds the GIL.

Deadlines rarely get earlier than the one the thread sleeps for (they are
usually "now + the same timeout"), so registering seldom wakes the thread.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pappus.engines import deadlines, native_build
from pappus.engines.kvm.vm import KICK_SIGNAL, Machine
from pappus.errors import EngineUnavailable

logger = logging.getLogger(__name__)

PRUNE_AT = 1024
"""Finished entries tolerated in the heap before it is rebuilt without them."""
_blocked = threading.local()


def block_kick_signal() -> None:
    """Block the kick signal in the calling thread (once per thread; a vCPU thread needs it)."""
    if not getattr(_blocked, "done", False):
        signal.pthread_sigmask(signal.SIG_BLOCK, {KICK_SIGNAL})
        _blocked.done = True


@dataclass(order=True, slots=True)
class Watch:
    """One registered deadline (ordered by deadline, then registration order)."""

    deadline: float
    sequence: int
    machine: Machine = field(compare=False)
    thread: int = field(compare=False)
    done: bool = field(default=False, compare=False)
    fired: bool = field(default=False, compare=False)


class Watchdog:
    """Kicks vCPUs out of their guests at their deadlines; see the module docstring."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._heap: list[Watch] = []
        self._sequence = itertools.count()
        self._sleeping_until: float | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._finished = 0
        self.fired = 0

    def __repr__(self) -> str:
        return f"<Watchdog watching={len(self._heap)} fired={self.fired}>"

    def watch(self, deadline: float, machine: Machine) -> Watch:
        """Register the calling thread's run of ``machine``, to be stopped at ``deadline``."""
        entry = Watch(deadline, next(self._sequence), machine, threading.get_ident())
        with self._condition:
            if self._closed:
                raise RuntimeError("the watchdog is closed")
            heapq.heappush(self._heap, entry)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="pappus-kvm-watchdog", daemon=True
                )
                self._thread.start()
            elif self._sleeping_until is None or deadline < self._sleeping_until:
                self._condition.notify()
        return entry

    def finish(self, entry: object) -> bool:
        """The run is over: stop watching it. Returns whether the deadline fired."""
        assert isinstance(entry, Watch)
        with self._condition:
            entry.done = True
            fired = entry.fired
            self._finished += 1
            if self._finished > PRUNE_AT and self._finished * 2 > len(self._heap):
                # Finished runs wait in the heap until their deadline comes up; with long
                # deadlines and many runs, drop them now (amortised O(1) per run).
                self._heap = [watch for watch in self._heap if not watch.done]
                heapq.heapify(self._heap)
                self._finished = 0
        if fired:
            _consume_kick(entry.machine)
        return fired

    def _loop(self) -> None:
        with self._condition:
            while not self._closed:
                while self._heap and self._heap[0].done:
                    heapq.heappop(self._heap)
                    self._finished = max(0, self._finished - 1)
                if not self._heap:
                    self._sleeping_until = None
                    self._condition.wait()
                    continue
                first = self._heap[0]
                remaining = first.deadline - time.monotonic()
                if remaining > 0:
                    self._sleeping_until = first.deadline
                    self._condition.wait(remaining)
                    continue
                heapq.heappop(self._heap)
                first.fired = True
                self.fired += 1
                first.machine.kick()
                signal.pthread_kill(first.thread, KICK_SIGNAL)

    def close(self) -> None:
        """Stop the thread. Idempotent."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()


def _consume_kick(machine: Machine) -> None:
    # The kick may have arrived after KVM_RUN returned: consume it, or the
    # thread's next KVM_RUN would be interrupted at once.
    signal.sigtimedwait({KICK_SIGNAL}, 0)
    machine.clear_kick()


class Kicker(Protocol):
    """What the engine needs of a watchdog."""

    def watch(self, deadline: float, machine: Machine) -> object:
        """Register the calling thread's run of ``machine``, to be stopped at ``deadline``."""

    def finish(self, entry: object) -> bool:
        """The run is over: stop watching it. Returns whether the deadline fired."""

    def close(self) -> None:
        """Stop watching anything. Idempotent."""


@dataclass(slots=True)
class NativeWatch:
    """One run watched by :class:`NativeWatchdog`."""

    watch: deadlines.Watch
    machine: Machine


class NativeWatchdog:
    """Kicks vCPUs out at their deadlines from the native deadline thread (no GIL needed)."""

    def __init__(self, watchdog: deadlines.DeadlineWatchdog) -> None:
        self._watchdog = watchdog
        self._closed = False

    def __repr__(self) -> str:
        return f"<NativeWatchdog {self._watchdog!r}>"

    def watch(self, deadline: float, machine: Machine) -> NativeWatch:
        """As :meth:`Watchdog.watch` (finish it before the machine is closed)."""
        if self._closed:
            raise RuntimeError("the watchdog is closed")
        return NativeWatch(self._watchdog.kick_at(deadline, machine.immediate_exit_address,
                                                  threading.get_ident(), KICK_SIGNAL), machine)

    def finish(self, entry: object) -> bool:
        """As :meth:`Watchdog.finish`."""
        assert isinstance(entry, NativeWatch)
        fired = entry.watch.cancel()
        if fired:
            _consume_kick(entry.machine)
        return fired

    def close(self) -> None:
        """Refuse new runs (the shared thread serves the rest of the worker). Idempotent."""
        self._closed = True


def create_watchdog(helper_dir: Path | None) -> Kicker:
    """The native watchdog, or the Python one (with a warning) if it cannot be built."""
    try:
        shared = deadlines.shared_watchdog(helper_dir or native_build.default_cache_dir(), "kvm")
    except EngineUnavailable as exc:
        logger.warning("kvm engine: using a Python watchdog, whose deadlines can be late "
                       "while another thread holds the GIL: %s", exc)
        return Watchdog()
    return NativeWatchdog(shared)
