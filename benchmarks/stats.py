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
