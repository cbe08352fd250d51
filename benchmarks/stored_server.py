"""``pappus serve`` with every wasm run answered from a stored result, no sandbox at all.

For ``bench_http`` only: it measures what (c) could reach on this request path
(HTTP, JSON, dispatcher, metrics) if the sandbox cost nothing. The stored
result is exactly what the benchmark's trivial function produces, so the
responses are byte for byte the same size.

    python -m benchmarks.stored_server serve --port 0 --data-dir DIR [--processes N]
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pappus.cli import main as pappus_main
from pappus.engines.base import Artifact, InvocationResult, Limits
from pappus.engines.wasm.engine import WasmEngine
from pappus.model import DataSet, Item

STORED = InvocationResult(
    (DataSet("stdio", (Item("stdout", 0, b"ok\n"), Item("stderr", 0, b""))),),
    0, {"sandbox_start": 0.0, "run": 0.0, "output": 0.0})
"""The trivial function's result (``benchmarks.trivial``)."""


def _stored(self: WasmEngine, artifact: Artifact, inputs: Sequence[DataSet | None],
            limits: Limits, *budget: float) -> InvocationResult:
    return STORED


def main() -> None:
    # Both paths the dispatcher may take: the inline fast path and a slot thread.
    WasmEngine.invoke_preemptible = _stored  # type: ignore[method-assign,assignment]
    WasmEngine.invoke = _stored  # type: ignore[method-assign]
    sys.exit(pappus_main(sys.argv[1:]))


if __name__ == "__main__":
    main()
