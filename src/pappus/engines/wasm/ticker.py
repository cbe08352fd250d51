"""The epoch ticker of a wasm engine: deadlines without the function's cooperation.

Wasmtime checks the engine's *epoch* at function entries and loop headers;
a store whose epoch deadline has passed traps with ``INTERRUPT``. The ticker
advances the epoch so that ``epoch == floor((now - origin) / tick_s)``: it
*catches up* after a late wake-up instead of counting its own wake-ups. A
store is armed for the first epoch at or after its deadline, so it is never
stopped early.

Two implementations of one interface (:class:`Ticker`):

* :class:`NativeEpochTicker` (the default): a thread in native code
  (``ticker.c``, built once like the other engines' helpers and loaded with
  ctypes) that never needs the GIL. A sandbox therefore stops at its deadline
  whatever the interpreter is doing: with another thread decoding a 40 MB JSON
  body in a loop (``json.loads`` holds the GIL ~0.2 s per call), an infinite
  loop with a 100 ms deadline stopped 536 ms late (median; 802 ms max) with
  the Python ticker, and on time with this one.
* :class:`EpochTicker`: the same in a Python thread, used when no C compiler
  is available to build the native one (a warning says so). Under GIL
  contention it is late by the GIL hand-off latency (a few ms with two busy
  threads; hundreds of ms behind a long call that holds the GIL).

Either starts with the first invocation and sleeps (no wake-ups) once no
invocation has run for :data:`LINGER_S`; ``close`` stops it. The linger matters
for short invocations back to back (the inline fast path runs them one after
another on one thread): parking after each one would make the next one wake
the thread every few invocations. On resuming, the origin is rebased so that
idle time never produces a burst of catch-up ticks (which could race with a
store being armed).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import math
import threading
import time
import weakref
from pathlib import Path
from typing import Protocol

import wasmtime
from wasmtime import _ffi

from pappus.engines import native_build
from pappus.errors import EngineUnavailable

logger = logging.getLogger(__name__)

LINGER_S = 0.1
"""How long the ticker keeps ticking after the last invocation ended."""


class Armable(Protocol):
    """Something with an epoch deadline (a :class:`~pappus.engines.wasm.native.Sandbox`)."""

    def set_epoch_deadline(self, ticks_beyond_current: int) -> None:
        """Trap once the epoch has advanced this many ticks."""


class Ticker(Protocol):
    """What the engine needs of a ticker; ``with ticker:`` around each invocation."""

    tick_s: float

    @property
    def epoch(self) -> int:
        """Ticks issued so far."""

    def __enter__(self) -> Ticker:
        """Keep ticking until the matching ``__exit__``; ``RuntimeError`` once closed."""

    def __exit__(self, *exc_info: object) -> None:
        """One invocation fewer."""

    def arm(self, target: Armable, deadline: float) -> None:
        """Make ``target`` trap at the first tick at or after ``deadline`` (monotonic)."""

    def close(self) -> None:
        """Stop the thread. Idempotent."""


def _ticks_to(deadline: float, origin: float, tick_s: float, epoch: int) -> int:
    """Ticks from ``epoch`` to the first tick at or after ``deadline`` (at least one)."""
    return max(1, math.ceil((deadline - origin) / tick_s) - epoch)


class EpochTicker:
    """Advances ``engine``'s epoch every ``tick_s`` seconds while invocations run (Python)."""

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
        target.set_epoch_deadline(_ticks_to(deadline, self._origin, self.tick_s, self._epoch))

    def close(self) -> None:
        """Stop the thread. Idempotent."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()


class _View(ctypes.Structure):
    """``struct ticker_view`` of ``ticker.c``: the fields Python reads without a call."""

    _fields_ = (("epoch", ctypes.c_uint64), ("origin_ns", ctypes.c_int64),
                ("tick_ns", ctypes.c_int64))


TICKER_FLAGS = ("-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-pthread",
                "-Wl,-z,noexecstack")
NATIVE_THREAD_NAME = "pappus-epoch"
"""The native thread's name in ``/proc/<pid>/task/<tid>/comm``."""


class _Library:
    """The loaded ``ticker.c``, its functions typed."""

    def __init__(self, path: Path) -> None:
        # PyDLL: these calls are short and never block on Python, so they keep the GIL
        # rather than pay for releasing and taking it back (~1 µs per call).
        library = ctypes.PyDLL(str(path))
        view_size = library.pappus_ticker_view_size
        view_size.restype = ctypes.c_size_t
        if view_size() != ctypes.sizeof(_View):
            raise EngineUnavailable("the wasm engine's native ticker was built with another "
                                    "layout than this version expects", engine="wasm")
        self.new = library.pappus_ticker_new
        self.new.restype = ctypes.c_void_p
        self.new.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)
        self.enter = library.pappus_ticker_enter
        self.enter.restype = ctypes.c_int
        self.enter.argtypes = (ctypes.c_void_p,)
        self.exit = library.pappus_ticker_exit
        self.exit.restype = None
        self.exit.argtypes = (ctypes.c_void_p,)
        # Joining the thread waits up to one tick: release the GIL meanwhile.
        self.free = ctypes.CDLL(str(path)).pappus_ticker_free
        self.free.restype = None
        self.free.argtypes = (ctypes.c_void_p,)


@functools.cache
def _load(helper_dir: Path) -> _Library:
    source = native_build.packaged_source("pappus.engines.wasm", "ticker.c")
    path = native_build.ensure_built(source, TICKER_FLAGS, helper_dir, stem="libepochticker",
                                     engine="wasm",
                                     headers=native_build.shared_headers("quiet_thread.h"))
    return _Library(path)


_INCREMENT_EPOCH = ctypes.cast(_ffi.dll.wasmtime_engine_increment_epoch, ctypes.c_void_p).value


class NativeEpochTicker:
    """Advances ``engine``'s epoch from a native thread that never needs the GIL.

    ``helper_dir`` is where the built library is cached. Raises
    :class:`~pappus.errors.EngineUnavailable` if it cannot be built.
    """

    def __init__(self, engine: wasmtime.Engine, tick_s: float, helper_dir: Path) -> None:
        if tick_s <= 0:
            raise ValueError(f"tick_s must be positive, not {tick_s}")
        self._library = library = _load(helper_dir)
        self.tick_s = tick_s
        engine_address = ctypes.cast(engine.ptr(), ctypes.c_void_p).value
        handle = library.new(_INCREMENT_EPOCH, engine_address, round(tick_s * 1e9),
                             round(LINGER_S * 1e9))
        if not handle:
            raise MemoryError("cannot allocate the wasm engine's epoch ticker")
        self._handle: int | None = handle
        self._view = _View.from_address(handle)
        # Stop the thread before the engine can be freed, even without close(): the
        # finalizer's arguments keep the engine alive until it has run.
        self._finalizer = weakref.finalize(self, _stop, library, handle, engine)

    def __repr__(self) -> str:
        state = "closed" if self._handle is None else f"epoch={self._view.epoch}"
        return f"<NativeEpochTicker tick={self.tick_s * 1e3:g}ms {state}>"

    @property
    def epoch(self) -> int:
        """Ticks issued so far."""
        return 0 if self._handle is None else int(self._view.epoch)

    def __enter__(self) -> NativeEpochTicker:
        """Keep the ticker going until the matching ``__exit__`` (one per invocation)."""
        if self._handle is None or self._library.enter(self._handle) != 0:
            raise RuntimeError("the wasm engine is closed" if self._handle is None
                               else "the wasm engine's epoch ticker thread cannot start")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._handle is not None:
            self._library.exit(self._handle)

    def arm(self, target: Armable, deadline: float) -> None:
        """As :meth:`EpochTicker.arm`: a tick between reading and arming moves it later."""
        if self._handle is None:  # the view's memory is freed with the ticker
            raise RuntimeError("the wasm engine is closed")
        view = self._view
        epoch, origin = view.epoch, view.origin_ns / 1e9
        target.set_epoch_deadline(_ticks_to(deadline, origin, self.tick_s, epoch))

    def close(self) -> None:
        """Stop the thread and free the ticker. Idempotent."""
        if self._handle is not None:
            self._handle = None
            self._finalizer()


def _stop(library: _Library, handle: int, engine: wasmtime.Engine) -> None:
    library.free(handle)  # joins the thread: ``engine`` is not ticked afterwards


def create_ticker(engine: wasmtime.Engine, tick_s: float, helper_dir: Path | None) -> Ticker:
    """The native ticker, or the Python one (with a warning) if it cannot be built."""
    try:
        return NativeEpochTicker(engine, tick_s, helper_dir or native_build.default_cache_dir())
    except EngineUnavailable as exc:
        logger.warning("wasm engine: using the Python epoch ticker, whose deadlines can be "
                       "late while another thread holds the GIL: %s", exc)
        return EpochTicker(engine, tick_s)
