"""Helpers shared by the engine tests."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import wasmtime

from pappus.engines.base import FunctionSpec, InvocationResult, Limits
from pappus.engines.wasm.ticker import NATIVE_THREAD_NAME
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


def run_beside_gil_holders(run: Callable[[], None], spinning_for_s: float,
                           holders: int = 2) -> None:
    """Run ``run`` on a thread; once that thread has used ``spinning_for_s`` of CPU (its
    sandbox is spinning, without the GIL), start ``holders`` threads that hold the GIL
    until it returns."""
    stop = threading.Event()
    runner = threading.Thread(target=run)
    runner.start()
    assert runner.ident is not None
    clock = time.pthread_getcpuclockid(runner.ident)

    def spinning() -> bool:
        try:
            return time.clock_gettime(clock) >= spinning_for_s
        except OSError:  # the thread has ended already
            return True

    eventually(spinning)
    hogs = [threading.Thread(target=hold_the_gil, args=(stop,)) for _ in range(holders)]
    for hog in hogs:
        hog.start()
    runner.join()
    stop.set()
    for hog in hogs:
        hog.join()
