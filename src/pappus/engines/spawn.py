"""Start a helper program with ``posix_spawn`` without holding the GIL.

``os.posix_spawn`` keeps the GIL while the C library clones and the child
execs (~120 µs here): a warm pool refilling in a background thread would
stall every other thread of the worker — a supervisor answering a sandbox's
system call, the HTTP server — for that long, once per invocation. Calling
the C library's ``posix_spawn`` through :mod:`ctypes` releases the GIL for
the call. The child gets only the descriptors given in ``descriptors``
(everything else of ours is close-on-exec), an empty signal mask, default
dispositions for the signals Python ignores (``SIGPIPE``, ``SIGXFSZ``), and
an empty environment.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
from collections.abc import Mapping, Sequence

_OPAQUE_BYTES = 1024  # larger than glibc's and musl's posix_spawn_file_actions_t / attr_t
POSIX_SPAWN_SETSIGDEF = 0x04
POSIX_SPAWN_SETSIGMASK = 0x08
SIGSET_BYTES = 128

_libc = ctypes.CDLL(None, use_errno=True)


def spawn(path: str, argv: Sequence[str], descriptors: Mapping[int, int]) -> int:
    """Start ``path`` with ``argv``; ``descriptors`` maps child descriptor → ours. Returns the pid.

    Raises ``OSError`` when the program cannot be started.
    """
    # A source that is also some target could be overwritten before it is duplicated,
    # and dup2(n, n) would leave close-on-exec set: give such sources a fresh number.
    moved: list[int] = []
    try:
        sources = {}
        for target, source in descriptors.items():
            if source in descriptors:
                moved.append(os.dup(source))
            sources[target] = moved[-1] if source in descriptors else source
        return _spawn(path, argv, sources)
    finally:
        for fd in moved:
            os.close(fd)


def _spawn(path: str, argv: Sequence[str], descriptors: Mapping[int, int]) -> int:
    actions = ctypes.create_string_buffer(_OPAQUE_BYTES)
    _check(_libc.posix_spawn_file_actions_init(actions))
    try:
        for target, source in descriptors.items():
            _check(_libc.posix_spawn_file_actions_adddup2(actions, source, target))
        arguments = (ctypes.c_char_p * (len(argv) + 1))(
            *(os.fsencode(word) for word in argv), None)
        environment = (ctypes.c_char_p * 1)(None)
        pid = ctypes.c_int(0)
        error = _libc.posix_spawn(ctypes.byref(pid), os.fsencode(path), actions, _attributes(),
                                  arguments, environment)
        if error:
            raise OSError(error, f"{os.strerror(error)}: {path}")
        return pid.value
    finally:
        _libc.posix_spawn_file_actions_destroy(actions)


@functools.cache
def _attributes() -> ctypes.Array[ctypes.c_char]:
    """The spawn attributes, the same for every child: made once, only ever read after."""
    attributes = ctypes.create_string_buffer(_OPAQUE_BYTES)
    _check(_libc.posix_spawnattr_init(attributes))
    empty = ctypes.create_string_buffer(SIGSET_BYTES)
    _check(_libc.sigemptyset(empty))
    _check(_libc.posix_spawnattr_setsigmask(attributes, empty))
    defaults = ctypes.create_string_buffer(SIGSET_BYTES)
    _check(_libc.sigemptyset(defaults))
    for number in (signal.SIGPIPE, signal.SIGXFSZ):
        _check(_libc.sigaddset(defaults, int(number)))
    _check(_libc.posix_spawnattr_setsigdefault(attributes, defaults))
    _check(_libc.posix_spawnattr_setflags(
        attributes, ctypes.c_short(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF)))
    return attributes


def _check(result: int) -> None:
    if result != 0:
        # posix_spawn_* return the error number; sigemptyset/sigaddset return -1 and set errno.
        code = ctypes.get_errno() if result == -1 else result
        raise OSError(code, os.strerror(code))
