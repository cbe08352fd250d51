"""Small statistics helpers for benchmark output."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Sequence


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in 0..1)."""
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


def summary_us(samples: Sequence[float]) -> str:
    """'median X µs, p99 Y µs' for samples in seconds."""
    return (f"median {statistics.median(samples) * 1e6:7.1f} µs, "
            f"p99 {percentile(samples, 0.99) * 1e6:7.1f} µs (n={len(samples)})")


def verdict(ok: bool) -> str:
    """How a target fared, as printed."""
    return "MET" if ok else "MISSED"


def throughput(call: Callable[[], object], seconds: float, threads: int = 2) -> float:
    """Calls per second of ``call`` run flat out by ``threads`` threads for ``seconds``."""
    counts = [0] * threads
    stop = time.monotonic() + seconds

    def loop(index: int) -> None:
        while time.monotonic() < stop:
            call()
            counts[index] += 1

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(counts) / (time.monotonic() - started)


CPUIDLE_DRIVER = "/sys/devices/system/cpu/cpuidle/current_driver"
HALT_POLL_NS = "/sys/module/haltpoll/parameters/guest_halt_poll_ns"


def idle_policy(driver_path: str = CPUIDLE_DRIVER, halt_poll_path: str = HALT_POLL_NS) -> str:
    """How this machine's idle CPUs wait, as printed beside latency figures.

    On a virtual machine whose idle vCPUs halt at once (``haltpoll`` with
    ``guest_halt_poll_ns`` 0), every wake-up of a sleeping process on an idle
    vCPU costs a VM exit; runs that sleep and wake twice (a sandbox handed its
    work, the worker waiting for it to end) pay that where a bare
    ``posix_spawn`` mostly does not. See ``docs/spec.md``.
    """
    def read(path: str) -> str | None:
        try:
            with open(path, encoding="ascii") as file:
                return file.read().strip()
        except OSError:
            return None

    driver = read(driver_path)
    if driver is None:
        return "cpuidle driver unknown"
    poll_ns = read(halt_poll_path)
    if driver != "haltpoll" or poll_ns is None:
        return f"cpuidle driver {driver}"
    if poll_ns == "0":
        return ("cpuidle haltpoll, guest_halt_poll_ns 0: idle vCPUs halt at once, so each "
                "wake-up of a sleeping process costs a VM exit (see docs/spec.md)")
    return f"cpuidle haltpoll, guest_halt_poll_ns {poll_ns}"
