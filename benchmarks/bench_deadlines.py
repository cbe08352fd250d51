"""Deadlines that hold while Python is busy: how long an infinite loop runs past its deadline.

For the ``process``, ``linux`` and ``kvm`` engines (those this machine has), an
infinite loop is invoked with a 200 ms deadline, ten times alone and ten
times while two threads hold the GIL in long C calls (as a worker decoding
large JSON bodies does; they start once the loop is spinning). Printed: the
CPU time the sandbox used past its deadline, median and max, in both
conditions (the alone run is the baseline). The kill or kick comes from the
native deadline thread (:mod:`pappus.engines.deadlines`); before it, the
process engine's loop ran up to 221 ms past its deadline beside the holders.
(The wasm engine's equivalent figure is printed by ``bench_engine``.)

    python -m benchmarks.bench_deadlines [--samples N]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import resource
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.engines.support import busiest_child_cpu_s, run_beside_gil_holders, thread_cpu_s

from pappus import sdk
from pappus.engines.base import Engine, FunctionSpec, Limits
from pappus.errors import EngineUnavailable, InvocationTimeout
from pappus.model import DataSet, Item

TIMEOUT_S = 0.2
TARGET_MS = 50.0
"""The issues' bound: a timeout within deadline + 50 ms."""
SDK_LOOP = '#include <pappus/function.h>\nint main(void) { for (;;) __asm__ volatile("");}\n'
LINUX_LOOP = 'int main(void) { for (;;) __asm__ volatile(""); }\n'

Spinner = Callable[[], float]
"""Invoke the loop once (a timeout); the CPU time its sandbox used, in seconds."""
Measured = tuple[Engine, Spinner, Callable[[threading.Thread], float]]
"""An engine, its spinner, and how to see the spinner's sandbox spin."""


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _spinner(engine: Engine, binary: bytes, inputs: list[DataSet], *,
             in_child: bool) -> tuple[Spinner, Callable[[threading.Thread], float]]:
    """A :data:`Spinner` for ``binary`` on ``engine``, and how to see its sandbox spin."""
    spec = FunctionSpec("loop", engine.name, binary, hashlib.sha256(binary).hexdigest(),
                        tuple(s.name for s in inputs), ())
    artifact = engine.prepare(spec, None)

    def spin() -> float:
        clock = _children_cpu_s if in_child else time.thread_time
        began = clock()
        with contextlib.suppress(InvocationTimeout):
            engine.invoke(artifact, inputs, Limits.from_timeout(TIMEOUT_S, 64 << 20, 1 << 20))
        return clock() - began

    return spin, busiest_child_cpu_s if in_child else thread_cpu_s


def _engines(scratch: Path) -> dict[str, Measured]:
    from pappus.engines.kvm import KvmEngine, kvm_available
    from pappus.engines.linux import LinuxEngine
    from pappus.engines.process import ProcessEngine

    helpers = scratch / "helpers"
    (scratch / "loop.c").write_text(SDK_LOOP)
    (scratch / "linux-loop.c").write_text(LINUX_LOOP)
    found: dict[str, Measured] = {}
    sdk.build_function([scratch / "loop.c"], scratch / "loop-process")
    process = ProcessEngine(helpers)
    found["process"] = (process, *_spinner(process, (scratch / "loop-process").read_bytes(),
                                           [], in_child=True))
    subprocess.run(["gcc", "-O1", "-static", "-o", str(scratch / "loop-linux"),
                    str(scratch / "linux-loop.c")], check=True)
    linux = LinuxEngine(helpers)
    found["linux"] = (linux, *_spinner(linux, (scratch / "loop-linux").read_bytes(),
                                       [DataSet("stdio", (Item("argv", 0, b"loop"),))],
                                       in_child=True))
    if kvm_available():
        sdk.build_function([scratch / "loop.c"], scratch / "loop-kvm", target="kvm")
        with contextlib.suppress(EngineUnavailable):
            kvm = KvmEngine(helpers)
            found["kvm"] = (kvm, *_spinner(kvm, (scratch / "loop-kvm").read_bytes(), [],
                                           in_child=False))
    return found


def measure(spin: Spinner, sandbox_cpu_s: Callable[[threading.Thread], float],
            samples: int, holders: int) -> list[float]:
    """CPU seconds past the deadline, one per sample."""
    past: list[float] = []

    def run() -> None:
        past.append(spin() - TIMEOUT_S)

    for _ in range(samples):
        if holders:
            run_beside_gil_holders(run, spinning_for_s=TIMEOUT_S / 10, holders=holders,
                                   cpu_s=sandbox_cpu_s)
        else:
            run()
    return past


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        engines = _engines(Path(scratch))
        try:
            print(f"CPU time an infinite loop ran past its {TIMEOUT_S * 1e3:.0f} ms deadline "
                  f"({args.samples} runs each)")
            for name, (_, spin, sandbox_cpu_s) in engines.items():
                spin()  # warm: pools filled, helpers built
                alone = measure(spin, sandbox_cpu_s, args.samples, holders=0)
                busy = measure(spin, sandbox_cpu_s, args.samples, holders=2)
                worst = max(busy) * 1e3
                print(f"    {name:8} alone: median {statistics.median(alone) * 1e3:6.1f} ms, "
                      f"max {max(alone) * 1e3:6.1f} ms; beside 2 GIL holders: median "
                      f"{statistics.median(busy) * 1e3:6.1f} ms, max {worst:6.1f} ms; "
                      f"target <= {TARGET_MS:.0f} ms: "
                      f"{'MET' if worst <= TARGET_MS else 'MISSED'}")
        finally:
            for engine, _, _ in engines.values():
                engine.close()


if __name__ == "__main__":
    main()
