"""Prometheus metrics, fed by the dispatcher's observer hook.

Each worker owns its own ``CollectorRegistry`` so several workers (tests)
never share counters. With ``serve --processes N`` every server process
writes its values to a shared directory (``prometheus_client``'s multi-process
mode) and a scrape, whichever process answers it, sums them all.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import values as prometheus_values
from prometheus_client.multiprocess import MultiProcessCollector

from pappus.engines.base import InvocationResult
from pappus.invocation import InvocationObserver

LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0,
)
SANDBOX_START_BUCKETS = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.1,
)


class Metrics(InvocationObserver):
    """The worker's Prometheus collectors.

    Labelled children are looked up once and kept: ``labels()`` costs a lock
    and several dictionary operations on every call, on the request path.

    ``multiprocess_dir`` switches this *process* to multi-process values in
    that directory (a server process of ``serve --processes``; it must be set
    before any metric exists, so only there).
    """

    def __init__(self, multiprocess_dir: Path | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        if multiprocess_dir is not None:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(multiprocess_dir)
            prometheus_values.ValueClass = prometheus_values.MultiProcessValue()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        self._gauges: list[tuple[Gauge, Callable[[], float]]] = []
        self.invocations = Counter(
            "pappus_function_invocations", "Function invocations by function and outcome",
            ["function", "outcome"], registry=self.registry,
        )
        self.latency = Histogram(
            "pappus_function_latency_seconds",
            "Time from sandbox start to result, per function invocation",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.sandbox_start = Histogram(
            "pappus_sandbox_start_seconds", "Time to create a fresh sandbox (store+instance)",
            buckets=SANDBOX_START_BUCKETS, registry=self.registry,
        )
        self.requests = Counter(
            "pappus_http_requests", "HTTP invocation requests by outcome",
            ["outcome"], registry=self.registry,
        )
        self._invocation_children: dict[tuple[str, str], Any] = {}
        self._request_children: dict[str, Any] = {}

    def function_finished(
        self, name: str, outcome: str, seconds: float, result: InvocationResult | None
    ) -> None:
        """Count one function run and observe its latency and sandbox start time."""
        child = self._invocation_children.get((name, outcome))
        if child is None:
            child = self.invocations.labels(function=name, outcome=outcome)
            self._invocation_children[(name, outcome)] = child
        child.inc()
        self.latency.observe(seconds)
        if result is not None and "sandbox_start" in result.timings_us:
            self.sandbox_start.observe(result.timings_us["sandbox_start"] / 1e6)

    def request_finished(self, outcome: str) -> None:
        """Count one HTTP invocation request that ended with ``outcome``."""
        child = self._request_children.get(outcome)
        if child is None:
            child = self._request_children[outcome] = self.requests.labels(outcome=outcome)
        child.inc()

    def add_gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """Expose a value computed at scrape time.

        With several processes, the sum over the live ones: each process sets
        its own value when scraped and on :meth:`refresh_gauges`.
        """
        if self.multiprocess_dir is None:
            gauge = Gauge(name, documentation, registry=self.registry)
            gauge.set_function(read)
            return
        gauge = Gauge(name, documentation, registry=self.registry, multiprocess_mode="livesum")
        gauge.set(read())
        self._gauges.append((gauge, read))

    def refresh_gauges(self) -> None:
        """Publish this process's current gauge values (multi-process mode)."""
        for gauge, read in self._gauges:
            gauge.set(read())

    def render(self) -> bytes:
        """The Prometheus text exposition (of every server process)."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        self.refresh_gauges()
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=str(self.multiprocess_dir))  # type: ignore[no-untyped-call]
        return generate_latest(merged)
