"""(a) Engine-level cold invocation of a trivial wasm function.

Each sample = fresh Store + instance, call, read the output item, through
``WasmEngine.invoke``. Baseline in the same run: the raw Wasmtime public API
(new Store + Instance of an import-free module + call), i.e. the cheapest
possible fresh sandbox without any of pappus' layers.

    python -m benchmarks.bench_engine [--samples N]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import statistics
import threading
import time

import wasmtime
from tests.engines.support import run_beside_gil_holders

from benchmarks.stats import percentile, summary_us
from benchmarks.trivial import bare_module, trivial_module
from pappus.engines.base import Artifact, FunctionSpec, Limits
from pappus.engines.wasm import WasmEngine
from pappus.errors import InvocationTimeout

TARGET_MEDIAN_US = 60.0


def measure_engine(samples: int) -> list[float]:
    engine = WasmEngine()
    binary = trivial_module()
    spec = FunctionSpec("trivial", "wasm", binary, hashlib.sha256(binary).hexdigest(),
                        ("stdio",), ("stdio",))
    artifact = engine.prepare(spec, None)
    times: list[float] = []
    for index in range(samples + 200):
        limits = Limits.from_timeout(10.0, 64 << 20, 1 << 20)
        start = time.perf_counter()
        result = engine.invoke(artifact, [None], limits)
        stdout = result.outputs[0].items[0].data if result.outputs[0].items else b""
        elapsed = time.perf_counter() - start
        if b"ok" not in b"".join(i.data for i in result.outputs[0].items):
            raise RuntimeError(f"unexpected output {result.outputs!r} ({stdout!r})")
        if index >= 200:  # warm-up: caches, allocator pools
            times.append(elapsed)
    engine.close()
    return times


def measure_baseline(samples: int) -> list[float]:
    config = wasmtime.Config()
    engine = wasmtime.Engine(config)
    module = wasmtime.Module(engine, bare_module())
    times: list[float] = []
    for index in range(samples + 200):
        start = time.perf_counter()
        store = wasmtime.Store(engine)
        instance = wasmtime.Instance(store, module, [])
        start_fn = instance.exports(store)["_start"]
        assert isinstance(start_fn, wasmtime.Func)
        start_fn(store)
        memory = instance.exports(store)["memory"]
        assert isinstance(memory, wasmtime.Memory)
        memory.read(store, 0, 4)
        del instance, store
        elapsed = time.perf_counter() - start
        if index >= 200:
            times.append(elapsed)
    return times


LOOP_WAT = '(module (memory (export "memory") 1) (func (export "_start") (loop (br 0))))'


def measure_deadline_overshoot(samples: int, timeout_s: float = 0.1,
                               load_threads: int = 0) -> list[float]:
    """How long after its deadline an infinite loop is stopped.

    With ``load_threads``, that many threads invoke the trivial function flat
    out meanwhile, contending for the GIL with the engine's ticker thread.
    """
    engine = WasmEngine()
    binary = bytes(wasmtime.wat2wasm(LOOP_WAT))
    spec = FunctionSpec("loop", "wasm", binary, hashlib.sha256(binary).hexdigest(), (), ())
    artifact = engine.prepare(spec, None)
    trivial = trivial_module()
    trivial_artifact = engine.prepare(FunctionSpec(
        "trivial", "wasm", trivial, hashlib.sha256(trivial).hexdigest(), ("stdio",),
        ("stdio",)), None)
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            engine.invoke(trivial_artifact, [None], Limits.from_timeout(10.0, 64 << 20, 1 << 20))

    workers = [threading.Thread(target=load, daemon=True) for _ in range(load_threads)]
    for worker in workers:
        worker.start()
    try:
        return _overshoots(engine, artifact, samples, timeout_s)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
        engine.close()


def _overshoots(engine: WasmEngine, artifact: Artifact, samples: int,
                timeout_s: float) -> list[float]:
    overshoots: list[float] = []
    for _ in range(samples):
        limits = Limits.from_timeout(timeout_s, 64 << 20, 1 << 20)
        try:
            engine.invoke(artifact, [], limits)
        except InvocationTimeout:
            overshoots.append(time.monotonic() - limits.deadline)
        else:
            raise RuntimeError("the infinite loop returned")
    return overshoots


def measure_spin_past_deadline(samples: int, *, native_ticker: bool, timeout_s: float = 0.2,
                               hogs: int = 2) -> list[float]:
    """CPU time an infinite loop runs past its deadline while ``hogs`` threads hold the GIL.

    The hogs start once the loop is spinning. CPU time of the invoking thread
    (``thread_time``), so waiting for the GIL after the stop does not count:
    this is how long the sandbox kept a core busy past its deadline.
    """
    engine = WasmEngine(native_ticker=native_ticker)
    binary = bytes(wasmtime.wat2wasm(LOOP_WAT))
    artifact = engine.prepare(FunctionSpec(
        "loop", "wasm", binary, hashlib.sha256(binary).hexdigest(), (), ()), None)
    past: list[float] = []

    def run() -> None:
        began = time.thread_time()
        with contextlib.suppress(InvocationTimeout):
            engine.invoke(artifact, [], Limits.from_timeout(timeout_s, 64 << 20, 1 << 20))
        past.append(time.thread_time() - began - timeout_s)

    try:
        for _ in range(samples):
            run_beside_gil_holders(run, spinning_for_s=timeout_s / 10, holders=hogs)
    finally:
        engine.close()
    return past


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5000)
    args = parser.parse_args()
    baseline = measure_baseline(args.samples)
    pappus_times = measure_engine(args.samples)
    ratio = statistics.median(pappus_times) / statistics.median(baseline)
    print("(a) engine-level cold invocation, trivial wasm function")
    print(f"    raw wasmtime Store+Instance+call (baseline): {summary_us(baseline)}")
    print(f"    pappus WasmEngine.invoke:                    {summary_us(pappus_times)}")
    print(f"    ratio pappus/baseline (median): {ratio:.2f}")
    median_us = statistics.median(pappus_times) * 1e6
    verdict = "MET" if median_us <= TARGET_MEDIAN_US else "MISSED"
    print(f"    target median <= {TARGET_MEDIAN_US:.0f} µs: {verdict} ({median_us:.1f} µs); "
          f"p99 {percentile(pappus_times, 0.99) * 1e6:.1f} µs")
    for load_threads in (0, 2):
        overshoot = measure_deadline_overshoot(30, load_threads=load_threads)
        worst_ms = max(overshoot) * 1000
        print(f"    deadline overshoot of an infinite loop (100 ms deadline, {load_threads} "
              f"threads invoking meanwhile): median {statistics.median(overshoot) * 1000:.1f} ms,"
              f" max {worst_ms:.1f} ms; target <= 50 ms: {'MET' if worst_ms <= 50 else 'MISSED'}")
    for native in (True, False):
        past = measure_spin_past_deadline(10, native_ticker=native)
        worst_ms = max(past) * 1000
        print(f"    CPU time an infinite loop ran past its 200 ms deadline while 2 threads held "
              f"the GIL ({'native' if native else 'Python'} ticker): median "
              f"{statistics.median(past) * 1000:.1f} ms, max {worst_ms:.1f} ms; "
              f"target <= 50 ms: {'MET' if worst_ms <= 50 else 'MISSED'}")


if __name__ == "__main__":
    main()
