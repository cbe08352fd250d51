"""WASI preview1 calls about the process: arguments, environment, clocks, randomness, exit.

* **Clocks** are a per-invocation *logical* clock: every clock starts at 0 ns
  (1970-01-01 for ``realtime``), each read advances it by 1 µs, and sleeping
  (``poll_oneoff`` on a clock) advances it by the time asked for, at once.
  Functions thus get no host time to measure or signal with, runs are
  reproducible, and code that waits for time to pass still makes progress.
* **random_get** returns bytes from the host's CSPRNG (``os.urandom``).
  Entropy carries no information about the host or other invocations, and
  functions that make nonces, UUIDs or hash-table seeds need it unpredictable;
  a fixed stream would make such functions silently insecure.
* **poll_oneoff**: clock subscriptions fire after advancing the logical clock;
  descriptors are always ready (in-memory files never block).
* **proc_exit(n)** ends the run with exit code ``n``.
* Sockets and ``proc_raise`` answer ``ENOTSUP``/``ENOSYS``: no networking, no signals.
"""

from __future__ import annotations

import os
from typing import Any

from pappus.engines.wasm.memory import GuestMemory
from pappus.engines.wasm.wasi_abi import (
    CLOCK_READ_STEP_NS,
    EBADF,
    EINVAL,
    ENOSYS,
    ENOTSUP,
    ESUCCESS,
    EVENT,
    SUBSCRIPTION,
    CallTable,
    ProcExit,
    WasiState,
    put_sizes,
    put_strings,
)

CALLS = CallTable()
wasi = CALLS.register

CLOCKS = range(4)  # realtime, monotonic, process cputime, thread cputime
SUBSCRIPTION_CLOCK, SUBSCRIPTION_FD_READ, SUBSCRIPTION_FD_WRITE = 0, 1, 2
ABSTIME = 1
MAX_SUBSCRIPTIONS = 1024


@wasi("i32", "i32")
def args_sizes_get(state: WasiState, memory: GuestMemory, count: int, size: int) -> int:
    put_sizes(memory, state.fs.argv, count, size)
    return ESUCCESS


@wasi("i32", "i32")
def args_get(state: WasiState, memory: GuestMemory, pointers: int, buffer: int) -> int:
    put_strings(memory, state.fs.argv, pointers, buffer)
    return ESUCCESS


@wasi("i32", "i32")
def environ_sizes_get(state: WasiState, memory: GuestMemory, count: int, size: int) -> int:
    put_sizes(memory, state.fs.environ, count, size)
    return ESUCCESS


@wasi("i32", "i32")
def environ_get(state: WasiState, memory: GuestMemory, pointers: int, buffer: int) -> int:
    put_strings(memory, state.fs.environ, pointers, buffer)
    return ESUCCESS


@wasi("i32")
def proc_exit(state: WasiState, memory: GuestMemory, code: int) -> int:
    raise ProcExit(code)


@wasi("i32")
def proc_raise(state: WasiState, memory: GuestMemory, signal: int) -> int:
    return ENOSYS  # no signals; removed from WASI after preview1


@wasi("i32", "i64", "i32")
def clock_time_get(state: WasiState, memory: GuestMemory, clock: int, precision: int,
                   result: int) -> int:
    if clock not in CLOCKS:
        return EINVAL
    memory.check(result, 8)
    state.clock_ns += CLOCK_READ_STEP_NS
    memory.put_u64(result, state.clock_ns)
    return ESUCCESS


@wasi("i32", "i32")
def clock_res_get(state: WasiState, memory: GuestMemory, clock: int, result: int) -> int:
    if clock not in CLOCKS:
        return EINVAL
    memory.put_u64(result, CLOCK_READ_STEP_NS)
    return ESUCCESS


@wasi("i32", "i32")
def random_get(state: WasiState, memory: GuestMemory, buffer: int, length: int) -> int:
    memory.check(buffer, length)
    memory.write(buffer, os.urandom(length))
    return ESUCCESS


@wasi()
def sched_yield(state: WasiState, memory: GuestMemory) -> int:
    return ESUCCESS  # one thread: nothing else to run


@wasi("i32", "i32", "i32", "i32")
def poll_oneoff(state: WasiState, memory: GuestMemory, subscriptions: int,  # noqa: PLR0917
                events: int, count: int, written: int) -> int:  # (the ABI's arguments)
    if count == 0 or count > MAX_SUBSCRIPTIONS:
        return EINVAL
    raw = memory.read(subscriptions, count * SUBSCRIPTION.size)
    memory.check(events, count * EVENT.size)
    memory.check(written, 4)
    parsed = [SUBSCRIPTION.unpack_from(raw, i * SUBSCRIPTION.size) for i in range(count)]
    clocks = [(userdata, _wake_time(state, timeout, flags))
              for userdata, tag, _, timeout, _, flags in parsed if tag == SUBSCRIPTION_CLOCK]
    out = bytearray()
    for userdata, tag, fd_or_clock, _, _, _ in parsed:
        if tag in (SUBSCRIPTION_FD_READ, SUBSCRIPTION_FD_WRITE):
            error = ESUCCESS if fd_or_clock in state.table else EBADF
            out += EVENT.pack(userdata, error, tag, 0, 0)
        elif tag != SUBSCRIPTION_CLOCK:
            out += EVENT.pack(userdata, EINVAL, tag, 0, 0)
    if not out and clocks and all(wake > state.clock_ns for _, wake in clocks):
        # Nothing ready: "sleep" until the earliest clock fires (instantly, logically).
        state.clock_ns = min(wake for _, wake in clocks)
    for userdata, wake in clocks:
        if wake <= state.clock_ns:
            out += EVENT.pack(userdata, ESUCCESS, SUBSCRIPTION_CLOCK, 0, 0)
    memory.write(events, bytes(out))
    memory.put_u32(written, len(out) // EVENT.size)
    return ESUCCESS


def _wake_time(state: WasiState, timeout: int, flags: int) -> int:
    return timeout if flags & ABSTIME else state.clock_ns + timeout


def _refuse(name: str, errno: int, *params: str) -> None:
    def refuse(state: WasiState, memory: GuestMemory, *args: Any) -> int:
        return errno

    refuse.__name__ = name
    wasi(*params)(refuse)


for _name, _params in {
    "sock_accept": ("i32", "i32", "i32"), "sock_recv": ("i32",) * 6,
    "sock_send": ("i32",) * 5, "sock_shutdown": ("i32", "i32"),
}.items():
    _refuse(_name, ENOTSUP, *_params)  # no networking
