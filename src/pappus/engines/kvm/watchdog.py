"""The deadline, enforced without the guest's cooperation: one watchdog thread for all vCPUs.

An invocation registers its deadline with :meth:`Watchdog.watch` before it
enters the guest. The watchdog sleeps until the earliest deadline; when one
passes while its guest still runs, it sets ``immediate_exit`` in that vCPU's
``kvm_run`` page and sends :data:`~pappus.engines.kvm.vm.KICK_SIGNAL` to the
vCPU's thread. The signal ends a ``KVM_RUN`` in progress (``EINTR``);
``immediate_exit`` ends one that had not started yet. The signal is blocked
in vCPU threads except while ``KVM_RUN`` runs (``KVM_SET_SIGNAL_MASK``), so
it is never delivered as such — no handler, no Python code in the signal
path — and :meth:`Watchdog.finish` consumes it if it is left pending.

Deadlines rarely get earlier than the one the thread sleeps for (they are
usually "now + the same timeout"), so registering seldom wakes the thread.
"""

from __future__ import annotations

import heapq
import itertools
import signal
import threading
import time
from dataclasses import dataclass, field

from pappus.engines.kvm.vm import KICK_SIGNAL, Machine

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

    def finish(self, entry: Watch) -> bool:
        """The run is over: stop watching it. Returns whether the deadline fired."""
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
            # The kick may have arrived after KVM_RUN returned: consume it, or the
            # thread's next KVM_RUN would be interrupted at once.
            signal.sigtimedwait({KICK_SIGNAL}, 0)
            entry.machine.clear_kick()
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
