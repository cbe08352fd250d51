"""What the dispatcher hands out and takes in: results, timings, statistics, hooks.

Kept apart from :mod:`pappus.dispatcher` so the frontends and metrics can use
these types without the scheduling machinery.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from pappus.composition import Signature
from pappus.engines.base import InvocationResult
from pappus.model import DataSet


class SystemFunction(Protocol):
    """A trusted communication function run by the worker itself (e.g. ``HTTP``)."""

    name: str
    signature: Signature

    async def run(self, inputs: Sequence[DataSet | None],
                  deadline: float) -> list[DataSet | None]:
        """Perform the I/O for ``inputs`` before ``deadline`` (monotonic seconds)."""
        ...


@dataclass(frozen=True, slots=True)
class DispatcherStatistics:
    """A snapshot of the dispatcher's state."""

    slots: int
    queue_capacity: int
    queued: int
    running: int
    completed: int
    failed: dict[str, int]
    inline: int = 0
    """Function runs completed on the event loop's thread (the inline fast path)."""
    preempted: int = 0
    """Inline runs abandoned at the budget and run again on a slot."""
    apart: int = 0
    """Runs started from the event loop and waited for there (process engine)."""


@dataclass(slots=True)
class Timings:
    """Per-invocation timing record (microseconds), summed over all function runs.

    Comparable to Dandelion's timestamps: ``decode_us`` (request
    deserialisation, set by the frontend), ``queue_us`` (waiting for a compute
    slot), ``sandbox_start_us`` (preparing the sandbox: context or file
    system, instance or process), ``run_us``, ``output_us`` (reading outputs
    back), ``io_us`` (communication functions), ``total_us`` (dispatcher entry
    to result). Registration-time preparation (compilation, ELF checks) is
    not part of an invocation.
    """

    decode_us: float = 0.0
    queue_us: float = 0.0
    sandbox_start_us: float = 0.0
    run_us: float = 0.0
    output_us: float = 0.0
    io_us: float = 0.0
    functions: int = 0
    total_us: float = 0.0

    def add(self, queue_us: float, result: InvocationResult) -> None:
        """Account one finished function run."""
        self.functions += 1
        self.queue_us += queue_us
        self.sandbox_start_us += result.timings_us.get("sandbox_start", 0.0)
        self.run_us += result.timings_us.get("run", 0.0)
        self.output_us += result.timings_us.get("output", 0.0)

    def to_json(self) -> dict[str, float]:
        """Rounded figures for the API response."""
        return {
            "decode_us": round(self.decode_us, 1),
            "queue_us": round(self.queue_us, 1),
            "sandbox_start_us": round(self.sandbox_start_us, 1),
            "run_us": round(self.run_us, 1),
            "output_us": round(self.output_us, 1),
            "io_us": round(self.io_us, 1),
            "functions": self.functions,
            "total_us": round(self.total_us, 1),
        }


@dataclass(frozen=True, slots=True)
class Invocation:
    """The result of a top-level invocation: one set per declared output, in order."""

    outputs: tuple[DataSet, ...]
    timings: Timings


class InvocationObserver:
    """Hook for metrics: called on the event loop after every function run."""

    def function_finished(
        self, name: str, outcome: str, seconds: float, result: InvocationResult | None
    ) -> None:
        """One function invocation ended with ``outcome`` (``ok`` or an error type)."""
