"""The supervisor's fast path: calls whose answer needs no file system, answered in C.

A cold notified call costs the Python supervisor 15 to 20 µs of CPU (the loop,
the dispatch, taking the GIL back), most of a short program's overhead.
``fastpath.c``, built once like the launcher and loaded with ctypes, runs the
wait-receive-answer loop without the GIL and answers itself:

* ``CONSTANT`` — a call whose emulation is a fixed value (``getpid`` → 1,
  ``getppid`` → 0, ``getuid`` → 65534, ...): the value is the one the Python
  handler returns (:data:`CONSTANT_ANSWERS` is the single source of both);
* ``GROW_BRK`` and ``ANONYMOUS_MMAP`` — only when the call clearly fits the
  memory bound (the same first test as the Python handler, on the same
  ``/proc`` files); anything closer to the bound goes to Python, which looks
  harder and records a refusal;
* ``EXIT_GROUP`` — records the status and lets the exit run;
* ``LOOK_UP_PATH`` and ``LOOK_UP_PATH_AT`` (``readlink``, ``stat``, ``access``
  and their ``*at`` forms from ``AT_FDCWD``) — ``ENOENT`` for an absolute
  path whose first component is not in the root directory, the start-up
  probes of ``/proc/self/exe``, ``/etc/...`` most programs make. Only a plain
  ASCII path with no component over 255 bytes; the root's entries are fixed
  for the run (the root is read-only), so the answer is the one
  :meth:`SetFileSystem.resolve <pappus.vfs.SetFileSystem.resolve>` gives.

Everything else — file calls, signals, forbidden calls, other architectures
— comes back to Python as a notification for :meth:`Supervisor._answer`,
whose handlers stay the reference. The tables are generated here from the
policy table, so an entry the policy does not emulate is never answered in C.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Mapping
from pathlib import Path

from pappus.engines import native_build
from pappus.engines.linux import policy
from pappus.engines.linux.notify import Notification
from pappus.errors import EngineUnavailable

TABLE_SIZE = 512
ASK_PYTHON, CONSTANT, GROW_BRK, ANONYMOUS_MMAP, EXIT_GROUP, LOOK_UP_PATH, LOOK_UP_PATH_AT = range(7)
SERVE_CALL, SERVE_EXITED, SERVE_DEADLINE, SERVE_GONE, SERVE_INTERRUPTED = range(5)
FLAGS = ("-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-Wl,-z,noexecstack")

IDENTITY_PID, IDENTITY_UID = 1, 65534
CONSTANT_ANSWERS: Mapping[str, int] = {
    "getpid": IDENTITY_PID,
    "gettid": IDENTITY_PID,
    "set_tid_address": IDENTITY_PID,
    "getppid": 0,
    "getuid": IDENTITY_UID,
    "geteuid": IDENTITY_UID,
    "getgid": IDENTITY_UID,
    "getegid": IDENTITY_UID,
    "sync": 0,
}
"""Emulated calls answered with a fixed value: the program is pid and tid 1 of
uid/gid 65534, with no parent it can see."""

_CHECKED = {
    "brk": GROW_BRK, "mmap": ANONYMOUS_MMAP, "exit_group": EXIT_GROUP,
    # The handlers of these look the path up before anything else (dispatch.EMULATED):
    "readlink": LOOK_UP_PATH, "stat": LOOK_UP_PATH, "lstat": LOOK_UP_PATH,
    "access": LOOK_UP_PATH,
    "readlinkat": LOOK_UP_PATH_AT, "newfstatat": LOOK_UP_PATH_AT, "statx": LOOK_UP_PATH_AT,
    "faccessat": LOOK_UP_PATH_AT, "faccessat2": LOOK_UP_PATH_AT,
}

CHECK_POSITIVE, CHECK_BITS = 1, 2
_PLAIN_ARGUMENTS: dict[str, tuple[tuple[int, int, int], ...]] = {
    "readlink": ((2, CHECK_POSITIVE, 0),), "readlinkat": ((3, CHECK_POSITIVE, 0),),
    "access": ((1, CHECK_BITS, 0x7),), "faccessat": ((2, CHECK_BITS, 0x7),),
    "faccessat2": ((2, CHECK_BITS, 0x7), (3, CHECK_BITS, 0x1300)),
    "newfstatat": ((3, CHECK_BITS, 0x1900),),
    "statx": ((2, CHECK_BITS, 0x1900), (3, CHECK_BITS, 0xFF_FFFF)),
}
"""For a path call answered in C: the other arguments the kernel checks *before* the lookup
(``EINVAL`` even for a missing path), as ``(argument, rule, allowed bits)``. C answers only
when they are plainly valid (a bufsiz > 0; no bit outside a common set) and leaves the rest
to the Python handler, which has the kernel's exact rules. At most two per call."""


def _encode_checks(checks: tuple[tuple[int, int, int], ...]) -> int:
    """Two 32-bit words: argument (bits 0-2), rule (4-7), allowed bits (8-31); as int64."""
    encoded = 0
    for position, (argument, rule, allowed) in enumerate(checks):
        if not (0 <= argument < 6 and allowed < 1 << 24) or position > 1:
            raise ValueError(f"cannot encode the argument check {checks!r}")
        encoded |= (argument | rule << 4 | allowed << 8) << (32 * position)
    return encoded - (1 << 64) if encoded >= 1 << 63 else encoded


class _Notification(ctypes.Structure):
    _fields_ = (
        ("id", ctypes.c_uint64),
        ("pid", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("nr", ctypes.c_int32),
        ("arch", ctypes.c_uint32),
        ("ip", ctypes.c_uint64),
        ("args", ctypes.c_uint64 * 6),
    )


class ServeState(ctypes.Structure):
    """``struct serve_state`` of ``fastpath.c``: one per supervised program."""

    _fields_ = (
        ("pid", ctypes.c_int32),
        ("listener", ctypes.c_int32),
        ("statm", ctypes.c_int32),
        ("stat", ctypes.c_int32),
        ("sync_wake_up", ctypes.c_uint32),
        ("address_space", ctypes.c_uint64),
        ("heap_start", ctypes.c_uint64),
        ("deadline_ns", ctypes.c_int64),
        ("calls", ctypes.c_uint64),
        ("exit_status", ctypes.c_int32),
        ("python_only", ctypes.c_uint32),
        ("continue_pending", ctypes.c_uint32),
        ("continue_id", ctypes.c_uint64),
        ("actions", ctypes.c_void_p),
        ("values", ctypes.c_void_p),
        ("root_names", ctypes.c_char_p),
        ("root_names_length", ctypes.c_uint64),
        ("notification", _Notification),
    )

    def received(self) -> Notification:
        """The call ``serve`` handed back, as the Python supervisor takes it."""
        call = self.notification
        args = call.args
        return Notification(call.id, call.pid, call.nr, call.arch, call.ip,
                            (args[0], args[1], args[2], args[3], args[4], args[5]))


def actions(table: tuple[policy.Entry, ...] = policy.TABLE) -> tuple[bytes, list[int]]:
    """The action and constant-answer tables, by call number, for the emulated calls of
    ``table``: a call's first ``emulate`` entry decides, as in the supervisor's dispatch,
    unless an unconditional entry of another kind comes first (the call never reaches
    it). Any other call is Python's, which kills or answers it."""
    kinds = bytearray(TABLE_SIZE)
    values = [0] * TABLE_SIZE
    decided: set[int] = set()
    for entry in table:
        number = entry.number
        if number in decided or number >= TABLE_SIZE:
            continue
        if entry.kind != "emulate":
            if not entry.conditions:
                decided.add(number)
            continue
        decided.add(number)
        if entry.name in CONSTANT_ANSWERS:
            kinds[number], values[number] = CONSTANT, CONSTANT_ANSWERS[entry.name]
        elif entry.name in _CHECKED:
            kinds[number] = _CHECKED[entry.name]
            values[number] = _encode_checks(_PLAIN_ARGUMENTS.get(entry.name, ()))
    return bytes(kinds), values


class FastPath:
    """The loaded library and the tables of one policy; see the module docstring."""

    def __init__(self, library: ctypes.CDLL, table: tuple[policy.Entry, ...]) -> None:
        size = library.pappus_serve_state_size
        size.restype = ctypes.c_size_t
        offset = library.pappus_serve_notification_offset
        offset.restype = ctypes.c_size_t
        if (size() != ctypes.sizeof(ServeState)
                or offset() != ServeState.notification.offset):
            raise EngineUnavailable("the linux engine's fast path was built with another "
                                    "layout of its state than this version expects",
                                    engine="linux")
        self._serve = library.pappus_serve
        self._serve.restype = ctypes.c_int
        self._serve.argtypes = (ctypes.POINTER(ServeState),)
        kinds, values = actions(table)
        self._actions = ctypes.create_string_buffer(kinds, TABLE_SIZE)
        self._values = (ctypes.c_int64 * TABLE_SIZE)(*values)

    def state(self, pid: int, listener: int, sync_wake_up: bool, address_space: int,
              root_names: bytes) -> ServeState:
        """A fresh state for one program (the caller fills the ``/proc`` files and deadline).

        ``root_names``: the root directory's entries, each followed by a NUL; the caller
        keeps the object alive while the state is in use.
        """
        return ServeState(pid=pid, listener=listener, statm=-1, stat=-1,
                          sync_wake_up=sync_wake_up, address_space=address_space,
                          actions=ctypes.addressof(self._actions),
                          values=ctypes.addressof(self._values),
                          root_names=root_names, root_names_length=len(root_names))

    def serve(self, state: ServeState) -> int:
        """Run the loop (without the GIL) until it returns one of the ``SERVE_`` outcomes.

        Raises ``OSError`` for an error of the listener itself.
        """
        outcome = int(self._serve(ctypes.byref(state)))
        if outcome < 0:
            raise OSError(-outcome, "the linux engine's fast path failed on the listener")
        return outcome


@functools.cache
def _library(path: Path) -> ctypes.CDLL:
    return ctypes.CDLL(str(path))


def load(cache_dir: Path, table: tuple[policy.Entry, ...]) -> FastPath:
    """Build (once) and load the fast path, with the tables of ``table``."""
    source = native_build.packaged_source("pappus.engines.linux", "fastpath.c")
    path = native_build.ensure_built(source, FLAGS, cache_dir, stem="libfastpath",
                                     engine="linux")
    return FastPath(_library(path), table)


__all__ = ["CONSTANT_ANSWERS", "FastPath", "ServeState", "actions", "load"]
