"""Deadlines enforced by a native thread that never needs the GIL (``deadlines.c``).

A sandbox must stop at its deadline whatever the interpreter is doing. A
Python timer or watchdog thread cannot promise that: it needs the GIL to send
the kill, and a thread holding the GIL in a long C call (``json.loads`` of a
40 MB request body holds it ~0.2 s) delays it. Measured beside two such
threads, a process-engine loop with a 200 ms deadline used 202 to 421 ms of CPU
before its kill arrived.

:class:`DeadlineWatchdog` wraps one native thread that serves every deadline
of a worker process:

* :meth:`~DeadlineWatchdog.kill_at` sends ``SIGKILL`` through a pidfd (the
  ``process`` and ``linux`` engines' sandboxes);
* :meth:`~DeadlineWatchdog.kick_at` sets a byte and signals a thread (the
  ``kvm`` engine's ``immediate_exit`` and vCPU kick).

Each returns a :class:`Watch`, which the owner must :meth:`~Watch.cancel`
exactly once, *before* it closes the pidfd (or unmaps the byte, or lets the
thread end); ``cancel`` says whether the deadline fired. :func:`shared_watchdog`
gives the worker process's one instance (the thread starts at the first
watch, parks while there is none, and is recreated in a forked child).

The library is built once from its packaged C source like the other
engines' helpers (:mod:`pappus.engines.native_build`); without a C compiler
:class:`~pappus.errors.EngineUnavailable` says so.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import threading
from pathlib import Path

from pappus.engines import native_build

FLAGS = ("-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-pthread", "-Wl,-z,noexecstack")
THREAD_NAME = "pappus-deadline"
"""The native thread's name in ``/proc/<pid>/task/<tid>/comm``."""


class _Library:
    """The loaded ``deadlines.c``, its functions typed."""

    def __init__(self, path: Path) -> None:
        # PyDLL: every call is short and never waits on Python (the lock is held by the
        # thread only to fire), so they keep the GIL rather than pay to release it.
        library = ctypes.PyDLL(str(path))
        self.new = library.pappus_watchdog_new
        self.new.restype = ctypes.c_void_p
        self.new.argtypes = ()
        self.kill_at = library.pappus_watchdog_kill_at
        self.kill_at.restype = ctypes.c_void_p
        self.kill_at.argtypes = (ctypes.c_void_p, ctypes.c_int64, ctypes.c_int)
        self.kick_at = library.pappus_watchdog_kick_at
        self.kick_at.restype = ctypes.c_void_p
        self.kick_at.argtypes = (ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p,
                                 ctypes.c_ulong, ctypes.c_int)
        self.cancel = library.pappus_watchdog_cancel
        self.cancel.restype = ctypes.c_int
        self.cancel.argtypes = (ctypes.c_void_p, ctypes.c_void_p)
        self.fired = library.pappus_watchdog_fired
        self.fired.restype = ctypes.c_uint64
        self.fired.argtypes = (ctypes.c_void_p,)
        # Joining the thread: release the GIL meanwhile.
        self.free = ctypes.CDLL(str(path)).pappus_watchdog_free
        self.free.restype = None
        self.free.argtypes = (ctypes.c_void_p,)


@functools.cache
def _load(helper_dir: Path, engine: str) -> _Library:
    source = native_build.packaged_source("pappus.engines", "deadlines.c")
    headers = native_build.shared_headers("quiet_thread.h")
    return _Library(native_build.ensure_built(source, FLAGS, helper_dir, stem="libdeadlines",
                                              engine=engine, headers=headers))


def _deadline_ns(deadline: float) -> int:
    """A ``time.monotonic()`` deadline as CLOCK_MONOTONIC nanoseconds (inf: far away)."""
    return round(min(deadline, 1e9) * 1e9) if not math.isnan(deadline) else 0


class Watch:
    """One registered deadline; :meth:`cancel` it exactly once (see the module docstring)."""

    __slots__ = ("_handle", "_watchdog", "fired")

    def __init__(self, watchdog: DeadlineWatchdog, handle: int) -> None:
        self._watchdog = watchdog
        self._handle: int | None = handle
        self.fired = False
        """Whether the deadline fired (known once cancelled)."""

    def cancel(self) -> bool:
        """Stop watching; whether the deadline fired. Idempotent."""
        handle, self._handle = self._handle, None
        if handle is not None:
            self.fired = self._watchdog._cancel(handle)
        return self.fired


class DeadlineWatchdog:
    """One native thread that acts at deadlines; see the module docstring.

    ``helper_dir`` is where the built library is cached; ``engine`` names the
    engine in the :class:`~pappus.errors.EngineUnavailable` raised if it cannot
    be built.
    """

    def __init__(self, helper_dir: Path, engine: str) -> None:
        self._library = _load(helper_dir, engine)
        handle = self._library.new()
        if not handle:
            raise MemoryError("cannot allocate the deadline watchdog")
        self._handle: int | None = handle
        self._lock = threading.Lock()  # close() against cancel(): never use a freed watchdog

    def __repr__(self) -> str:
        state = "closed" if self._handle is None else f"fired={self.fired}"
        return f"<DeadlineWatchdog {state}>"

    @property
    def fired(self) -> int:
        """Deadlines fired so far."""
        handle = self._handle
        return 0 if handle is None else int(self._library.fired(handle))

    def kill_at(self, deadline: float, pidfd: int) -> Watch:
        """``SIGKILL`` the process behind ``pidfd`` at ``deadline`` (``time.monotonic()``)."""
        with self._lock:
            handle = self._handle and self._library.kill_at(self._handle,
                                                            _deadline_ns(deadline), pidfd)
        return self._watch(handle)

    def kick_at(self, deadline: float, flag_address: int, thread: int, signo: int) -> Watch:
        """At ``deadline``, store 1 to the byte at ``flag_address``, then send ``signo`` to
        ``thread`` (a ``threading.get_ident()``)."""
        with self._lock:
            handle = self._handle and self._library.kick_at(
                self._handle, _deadline_ns(deadline), flag_address, thread, signo)
        return self._watch(handle)

    def _watch(self, handle: int | None) -> Watch:
        if not handle:
            raise RuntimeError("the deadline watchdog is closed" if self._handle is None
                               else "the deadline watchdog's thread cannot start")
        return Watch(self, handle)

    def _cancel(self, handle: int) -> bool:
        with self._lock:
            if self._handle is None:  # freed, and the watch with it: it never fired since
                return False
            return bool(self._library.cancel(self._handle, handle))

    def close(self) -> None:
        """Stop the thread and free the watchdog (pending watches never fire). Idempotent."""
        with self._lock:
            handle, self._handle = self._handle, None
        if handle is not None:
            self._library.free(handle)


class _PerProcess:
    """The worker process's watchdog (recreated in a forked child)."""

    def __init__(self) -> None:
        self.watchdog: DeadlineWatchdog | None = None
        self.lock = threading.Lock()


_per_process = _PerProcess()


def shared_watchdog(helper_dir: Path, engine: str) -> DeadlineWatchdog:
    """This process's watchdog, made at the first call (built into ``helper_dir`` if needed).

    Never closed: its thread parks while no deadline is watched. A forked
    child makes its own (the parent's thread does not exist there).
    """
    state = _per_process
    watchdog = state.watchdog
    if watchdog is None:
        with state.lock:
            if state.watchdog is None:
                state.watchdog = DeadlineWatchdog(helper_dir, engine)
            watchdog = state.watchdog
    return watchdog


def _forget_in_child() -> None:
    global _per_process  # noqa: PLW0603 - a fresh state, including its lock, after fork
    _per_process = _PerProcess()


os.register_at_fork(after_in_child=_forget_in_child)
