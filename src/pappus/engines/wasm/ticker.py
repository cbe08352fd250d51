"""The one epoch-ticker thread of a wasm engine: deadlines without the function's cooperation.

Wasmtime checks the engine's *epoch* at function entries and loop headers;
a store whose epoch deadline has passed traps with ``INTERRUPT``. The ticker
advances the epoch so that ``epoch == floor((now - origin) / tick_s)``: it
*catches up* after sleeping late instead of counting its own wake-ups. That
matters: under GIL contention a Python thread's ``sleep(2 ms)`` can take
several milliseconds. With three CPU-bound Python threads competing, a ticker
that merely counted wake-ups stopped a 0.5 s deadline about 5 s late; this
one stops it 40-140 ms late (the GIL hand-off latency, no drift), and with
two threads invoking functions flat out at most 7 ms late. A store is armed
for the first epoch at or after its deadline, so it is never stopped early.

The thread starts with the first invocation and sleeps (on a condition, not
ticking) once no invocation has run for :data:`LINGER_S`; :meth:`EpochTicker.close`
stops it. The linger matters for short invocations back to back (the inline fast
path runs them one after another on one thread): parking after each one would make
the next one wake the thread, which then competes for the GIL, every few invocations.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Protocol

import wasmtime

LINGER_S = 0.1
"""How long the ticker keeps ticking after the last invocation ended."""


class Armable(Protocol):
    """Something with an epoch deadline (a :class:`~pappus.engines.wasm.native.Sandbox`)."""

    def set_epoch_deadline(self, ticks_beyond_current: int) -> None:
        """Trap once the epoch has advanced this many ticks."""


class EpochTicker:
    """Advances ``engine``'s epoch every ``tick_s`` seconds while invocations run."""

    def __init__(self, engine: wasmtime.Engine, tick_s: float) -> None:
        if tick_s <= 0:
            raise ValueError(f"tick_s must be positive, not {tick_s}")
        self._engine = engine
        self.tick_s = tick_s
        self._condition = threading.Condition(threading.Lock())  # not an RLock: cheaper
        self._active = 0
        self._idle_since = 0.0
        self._closed = False
        self._thread: threading.Thread | None = None
        self._epoch = 0
        self._origin = time.monotonic()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"active={self._active}"
        return f"<EpochTicker tick={self.tick_s * 1e3:g}ms epoch={self._epoch} {state}>"

    @property
    def epoch(self) -> int:
        """Ticks issued so far."""
        return self._epoch

    def _run(self) -> None:
        while True:
            with self._condition:
                while (self._active == 0 and not self._closed
                       and time.monotonic() - self._idle_since >= LINGER_S):
                    self._condition.wait()
                if self._closed:
                    return
            time.sleep(self.tick_s)
            with self._condition:
                target = math.floor((time.monotonic() - self._origin) / self.tick_s)
                while self._epoch < target:
                    self._engine.increment_epoch()
                    self._epoch += 1

    def __enter__(self) -> EpochTicker:
        """Keep the ticker going until the matching ``__exit__`` (one per invocation)."""
        with self._condition:
            if self._closed:
                raise RuntimeError("the wasm engine is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pappus-wasm-epoch",
                                                daemon=True)
                self._thread.start()
            if self._active == 0:  # resume without a burst of catch-up ticks for idle time
                self._origin = time.monotonic() - self._epoch * self.tick_s
            self._active += 1
            if self._active == 1:
                self._condition.notify_all()
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self._condition:
            self._active -= 1
            if self._active == 0:
                self._idle_since = time.monotonic()

    def arm(self, target: Armable, deadline: float) -> None:
        """Make ``target`` trap at the first tick at or after ``deadline`` (monotonic time).

        Call inside ``with ticker:`` (so the origin is not rebased meanwhile).
        Deliberately lock-free: if a tick lands between reading the epoch and
        arming, the deadline moves one tick *later*, never earlier.
        """
        due = math.ceil((deadline - self._origin) / self.tick_s)
        target.set_epoch_deadline(max(1, due - self._epoch))

    def close(self) -> None:
        """Stop the thread. Idempotent."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
