"""Helpers shared by the engine tests."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import wasmtime

from pappus.engines.base import FunctionSpec, InvocationResult, Limits
from pappus.engines.wasm.ticker import NATIVE_THREAD_NAME
from pappus.errors import SandboxError
from pappus.model import DataSet, Item
from tests.conftest import eventually, wait_until

MiB = 1024 * 1024


def spec(name: str, binary: bytes, inputs: tuple[str, ...] = (),
         outputs: tuple[str, ...] = ()) -> FunctionSpec:
    return FunctionSpec(name, "wasm", binary, hashlib.sha256(binary).hexdigest(), inputs,
                        outputs)


def limits(timeout_s: float = 10.0, memory: int = 64 * MiB, output: int = MiB) -> Limits:
    return Limits.from_timeout(timeout_s, memory, output)


def stdio_set(stdin: bytes = b"", argv: bytes = b"", environ: bytes = b"") -> DataSet:
    items = [Item("stdin", 0, stdin)]
    if argv:
        items.append(Item("argv", 0, argv))
    if environ:
        items.append(Item("environ", 0, environ))
    return DataSet("stdio", tuple(items))


def items(result: InvocationResult, set_name: str) -> list[tuple[str, int, bytes]]:
    """``(name, key, data)`` of every item of output set ``set_name``, in order."""
    (found,) = [s for s in result.outputs if s.name == set_name]
    return [(i.name, i.key, i.data) for i in found.items]


def by_name(result: InvocationResult, set_name: str) -> dict[str, bytes]:
    return {name: data for name, _, data in items(result, set_name)}


def wat2wasm(text: str) -> bytes:
    """A module from WebAssembly text."""
    return bytes(wasmtime.wat2wasm(text))


class Heartbeat:
    """Measures the longest gap between turns of the event loop."""

    def __init__(self) -> None:
        self.longest = 0.0
        self.beats = 0
        self._task = asyncio.get_running_loop().create_task(self._beat())

    async def _beat(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.0005)
            now = time.monotonic()
            self.longest = max(self.longest, now - last)
            self.beats += 1
            last = now

    async def started(self) -> Heartbeat:
        await wait_until(lambda: self.beats > 0)
        return self

    def stop(self) -> float:
        self._task.cancel()
        return self.longest


def native_tickers() -> int:
    """Live native epoch-ticker threads of this process (by their name in ``/proc``)."""
    count = 0
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
            count += Path(f"/proc/self/task/{tid}/comm").read_text().strip() == NATIVE_THREAD_NAME
    return count


def hold_the_gil(stop: threading.Event) -> None:
    """Until ``stop``: one C call after another, each holding the GIL ~50 ms (as
    ``json.loads`` of a 10 MB body does)."""
    while not stop.is_set():
        sum(range(5_000_000))


def thread_cpu_s(thread: threading.Thread) -> float:
    """CPU time ``thread`` has used (its sandbox spins on it, without the GIL); inf once it
    has ended."""
    assert thread.ident is not None
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    except OSError:  # the thread has ended already
        return math.inf


def busiest_child_cpu_s(thread: threading.Thread) -> float:
    """The most CPU time any live child process of this one has used (a sandbox process
    spinning); inf once ``thread`` has ended."""
    if not thread.is_alive():
        return math.inf
    me, busiest = os.getpid(), 0.0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:  # ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # state, ppid, ..., utime, stime
        if int(fields[1]) == me:
            busiest = max(busiest, (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS)
    return busiest


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def run_beside_gil_holders(run: Callable[[], None], spinning_for_s: float, holders: int = 2,
                           cpu_s: Callable[[threading.Thread], float] = thread_cpu_s) -> None:
    """Run ``run`` on a thread; once its sandbox has used ``spinning_for_s`` of CPU
    (``cpu_s``: on that thread, or in a child process), start ``holders`` threads that hold
    the GIL until ``run`` returns."""
    stop = threading.Event()
    runner = threading.Thread(target=run)
    runner.start()
    eventually(lambda: cpu_s(runner) >= spinning_for_s)
    hogs = [threading.Thread(target=hold_the_gil, args=(stop,)) for _ in range(holders)]
    for hog in hogs:
        hog.start()
    runner.join()
    stop.set()
    for hog in hogs:
        hog.join()


def damaged_outcomes(good: bytes, seed: int, count: int, run: Callable[[bytes, int], int], *,
                     near_start: float = 0.0) -> dict[str, int]:
    """Run ``count`` randomly damaged copies of ``good``; how many ended which way.

    Each copy has 1 to 4 random bytes changed anywhere (with probability
    ``near_start`` each within its first 4 KiB: headers and early code).
    ``run(binary, index)`` registers and invokes one copy and returns its exit
    code (``exit N``); a typed :class:`~pappus.errors.SandboxError` counts under
    its type. Any other exception fails the calling test, listing every such copy.
    """
    rng = random.Random(seed)
    outcomes: dict[str, int] = {}
    escaped: list[str] = []
    for index in range(count):
        damaged = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            where = (rng.randrange(min(64, len(damaged)), min(4096, len(damaged)))
                     if rng.random() < near_start else rng.randrange(len(damaged)))
            damaged[where] = rng.randrange(256)
        try:
            outcome = f"exit {run(bytes(damaged), index)}"
        except SandboxError as error:
            outcome = error.type
        except Exception as exc:
            escaped.append(f"copy {index}: {type(exc).__name__}: {exc}")
            continue
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert escaped == [], escaped
    return outcomes


def typed_failures(outcomes: dict[str, int]) -> int:
    """How many :func:`damaged_outcomes` runs ended in a typed error rather than an exit."""
    return sum(n for outcome, n in outcomes.items() if not outcome.startswith("exit "))
