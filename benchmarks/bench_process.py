"""The process engine: cold invocation, ratio to a bare posix_spawn, throughput, HTTP.

Measured in one run:

* engine-level cold invocation of the SDK ``matmul`` on a 1x1 matrix
  (fresh context and process per call): median and p99;
* baseline: ``os.posix_spawn`` + wait of a static no-op binary (built here
  from C), and the ratio of the two medians;
* throughput with 2 parallel slots (two threads invoking flat out);
* end to end over HTTP with wrk (32 connections) against a real worker.

    python -m benchmarks.bench_process [--samples N] [--duration S]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_http import http_invocations
from benchmarks.stats import idle_policy, percentile, summary_us, verdict
from benchmarks.stats import throughput as stats_throughput
from pappus import Client, sdk
from pappus.engines.base import FunctionSpec, Limits
from pappus.engines.process import ProcessArtifact, ProcessEngine
from pappus.model import DataSet, Item

TARGET_MEDIAN_US = 300.0
TARGET_P99_US = 1000.0
TARGET_RATIO = 2.0
TARGET_THROUGHPUT = 3000.0
NOOP_C = 'void _start(void) { __asm__ volatile("mov $231, %eax\\n xor %edi, %edi\\n syscall"); }\n'
INPUT = [DataSet("", (Item("", 0, struct.pack("<2q", 1, 2)),))]


def limits() -> Limits:
    return Limits.from_timeout(10.0, 128 << 20, 1 << 20)


def build(scratch: Path) -> tuple[bytes, Path]:
    sdk.build_function([sdk.example_source("matmul")], scratch / "matmul")
    (scratch / "noop.c").write_text(NOOP_C)
    subprocess.run([sdk.find_compiler(), "-static", "-nostdlib", "-O2", "-o",
                    str(scratch / "noop"), str(scratch / "noop.c")], check=True)
    return (scratch / "matmul").read_bytes(), scratch / "noop"


def measure_spawn(noop: Path, samples: int) -> list[float]:
    times: list[float] = []
    for _ in range(samples):
        start = time.perf_counter()
        pid = os.posix_spawn(str(noop), [str(noop)], {})
        os.waitpid(pid, 0)
        times.append(time.perf_counter() - start)
    return times


def measure_engine(engine: ProcessEngine, artifact: ProcessArtifact, samples: int) -> list[float]:
    times: list[float] = []
    for _ in range(samples):
        start = time.perf_counter()
        result = engine.invoke(artifact, INPUT, limits())
        times.append(time.perf_counter() - start)
        if result.outputs[0].items[0].data != struct.pack("<2q", 1, 4):
            raise RuntimeError(f"wrong result {result!r}")
    return times


def measure_http(binary: bytes, duration: int) -> str:
    def register(client: Client) -> None:
        client.add_function("matmul", binary, engine="process", input_sets=["in"],
                            output_sets=["out"])

    item = {"name": "", "key": 0, "data": base64.b64encode(struct.pack("<2q", 1, 2)).decode()}
    body = json.dumps({"sets": [{"name": "in", "items": [item]}]})
    return http_invocations(register, "matmul", body, duration)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--duration", type=int, default=10,
                        help="seconds of wrk load over HTTP (0: skip)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        binary, noop = build(Path(scratch))
        engine = ProcessEngine(Path(scratch) / "runner")
        artifact = engine.prepare(FunctionSpec("matmul", "process", binary,
                                               hashlib.sha256(binary).hexdigest(), ("",), ("",)),
                                  None)
        measure_engine(engine, artifact, 100)  # warm-up
        measure_spawn(noop, 100)
        spawn = measure_spawn(noop, args.samples)
        cold = measure_engine(engine, artifact, args.samples)
        throughput = stats_throughput(lambda: engine.invoke(artifact, INPUT, limits()), 5.0)
        engine.close()
        http = measure_http(binary, args.duration) if args.duration > 0 else "skipped"
    median_us = statistics.median(cold) * 1e6
    p99_us = percentile(cold, 0.99) * 1e6
    ratio = statistics.median(cold) / statistics.median(spawn)
    print("process engine: SDK matmul 1x1, fresh context and process per call")
    print(f"    machine: {idle_policy()}")
    print(f"    os.posix_spawn + wait of a static no-op (baseline): {summary_us(spawn)}")
    print(f"    ProcessEngine.invoke:                              {summary_us(cold)}")
    print(f"    ratio engine/baseline (median): {ratio:.2f}")
    median_ok = verdict(median_us <= TARGET_MEDIAN_US)
    print(f"    target median <= {TARGET_MEDIAN_US:.0f} µs: {median_ok}"
          f" ({median_us:.1f} µs); p99 <= {TARGET_P99_US:.0f} µs: "
          f"{verdict(p99_us <= TARGET_P99_US)} ({p99_us:.1f} µs)")
    print(f"    target ratio <= {TARGET_RATIO:.1f}: {verdict(ratio <= TARGET_RATIO)}")
    print(f"    throughput, 2 parallel slots: {throughput:.0f} invocations/s; target >= "
          f"{TARGET_THROUGHPUT:.0f}: {verdict(throughput >= TARGET_THROUGHPUT)}")
    print(f"    HTTP end to end (wrk -c32 {args.duration}s): {http}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
