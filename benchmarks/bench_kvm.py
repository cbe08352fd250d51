"""The kvm engine: cold invocation, the same on the process engine, their ratio, throughput.

Measured in one run:

* engine-level cold invocation of the SDK ``matmul`` (KVM build) on a 1x1
  matrix: context built, copied into a reset machine, run to its exit,
  outputs read, machine reset — median and p99;
* the same function (process build) on the process engine, and the ratio
  of the two medians;
* throughput with 2 parallel slots (two threads invoking flat out).

    python -m benchmarks.bench_kvm [--samples N] [--seconds S]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.stats import percentile, summary_us, verdict
from benchmarks.stats import throughput as stats_throughput
from pappus import sdk
from pappus.engines.base import Artifact, Engine, FunctionSpec, Limits
from pappus.engines.kvm import KvmEngine
from pappus.engines.process import ProcessEngine
from pappus.model import DataSet, Item

TARGET_MEDIAN_US = 150.0
TARGET_P99_US = 1000.0
TARGET_THROUGHPUT = 5000.0
INPUT = [DataSet("", (Item("", 0, struct.pack("<2q", 1, 2)),))]
EXPECTED = struct.pack("<2q", 1, 4)


def limits() -> Limits:
    return Limits.from_timeout(10.0, 128 << 20, 1 << 20)


def prepare(engine: Engine, binary: bytes) -> Artifact:
    spec = FunctionSpec(
        "matmul", engine.name, binary, hashlib.sha256(binary).hexdigest(), ("",), ("",)
    )
    return engine.prepare(spec, None)


def measure(engine: Engine, artifact: Artifact, samples: int) -> list[float]:
    times: list[float] = []
    for _ in range(samples):
        start = time.perf_counter()
        result = engine.invoke(artifact, INPUT, limits())
        times.append(time.perf_counter() - start)
        if result.outputs[0].items[0].data != EXPECTED:
            raise RuntimeError(f"wrong result {result!r}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        source = [sdk.example_source("matmul")]
        sdk.build_function(source, Path(scratch) / "matmul-kvm", target="kvm")
        sdk.build_function(source, Path(scratch) / "matmul-process")
        kvm, process = KvmEngine(), ProcessEngine(Path(scratch) / "runner")
        try:
            kvm_matmul = prepare(kvm, (Path(scratch) / "matmul-kvm").read_bytes())
            process_matmul = prepare(process, (Path(scratch) / "matmul-process").read_bytes())
            measure(kvm, kvm_matmul, 200)  # warm-up: machines, page tables, shadow pages
            measure(process, process_matmul, 200)
            on_kvm = measure(kvm, kvm_matmul, args.samples)
            on_process = measure(process, process_matmul, args.samples)
            throughput = stats_throughput(lambda: kvm.invoke(kvm_matmul, INPUT, limits()),
                                          args.seconds)
            machines = kvm.machines_created
        finally:
            kvm.close()
            process.close()
    median_us = statistics.median(on_kvm) * 1e6
    p99_us = percentile(on_kvm, 0.99) * 1e6
    ratio = statistics.median(on_process) / statistics.median(on_kvm)
    print("kvm engine: SDK matmul 1x1, reset VM per call (context + run + outputs + reset)")
    print(f"    KvmEngine.invoke:     {summary_us(on_kvm)}")
    print(f"    ProcessEngine.invoke: {summary_us(on_process)}")
    print(f"    ratio process/kvm (median): {ratio:.2f}x")
    print(
        f"    target median <= {TARGET_MEDIAN_US:.0f} µs: "
        f"{verdict(median_us <= TARGET_MEDIAN_US)} ({median_us:.1f} µs); "
        f"p99 <= {TARGET_P99_US:.0f} µs: {verdict(p99_us <= TARGET_P99_US)} ({p99_us:.1f} µs)"
    )
    print(
        f"    throughput, 2 parallel slots: {throughput:.0f} invocations/s; target >= "
        f"{TARGET_THROUGHPUT:.0f}: {verdict(throughput >= TARGET_THROUGHPUT)} "
        f"({machines} machines created)"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
