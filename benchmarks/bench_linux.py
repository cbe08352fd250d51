"""The linux engine: busybox per invocation, per emulated call, and bwrap as the baseline.

Measured in one run:

* engine-level invocation of Debian's static ``busybox true`` and of
  ``busybox sha256sum`` on a 1 MiB input item (fresh process per call):
  median and p99;
* the cost of one emulated system call: a static C program (built here from
  our source) making N emulated calls against the same program making none,
  ``(t_N - t_0) / N``; for ``getppid`` (answered by the supervisor's fast path
  in C) and ``getcwd`` (answered by its Python handlers, with a copy into the
  program's memory), the two kinds of emulated call;
* baseline: ``bwrap --unshare-all`` running the same busybox commands on the
  same file (bind-mounted read-only), and the ratio of the medians;
* for reference: the same commands run natively with ``posix_spawn``, and a
  static C program that does nothing (musl and glibc), in pappus and natively:
  the difference is the sandbox's own cost per invocation, without the
  program's start-up (glibc's static start-up alone costs ~0.3 ms on a VM
  where each CPUID instruction traps to the hypervisor);
* for reference: ``busybox true`` end to end over HTTP with wrk (32
  connections) against a real worker.

    python -m benchmarks.bench_linux [--samples N] [--http-duration S]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.bench_http import http_invocations
from benchmarks.stats import idle_policy, percentile, summary_us, verdict
from pappus import Client
from pappus.engines.base import FunctionSpec, Limits
from pappus.engines.linux import LinuxEngine
from pappus.engines.linux.engine import LinuxArtifact
from pappus.model import DataSet, Item

BUSYBOX = Path("/bin/busybox")
TARGET_TRUE_US = 600.0
TARGET_SHA_US = 3000.0
TARGET_CALL_US = 20.0
TARGET_BWRAP_RATIO = 4.0
CALLS = 2000
COMPILERS = ("musl-gcc", "gcc")
NOTHING_C = "int main(void) { return 0; }\n"
CALLS_C = """#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 0;
    int cwd = argc > 2 && strcmp(argv[2], "getcwd") == 0;
    char buffer[64];
    for (long i = 0; i < n; i++) {
        if (cwd) syscall(SYS_getcwd, buffer, sizeof buffer);
        else syscall(SYS_getppid);
    }
    return 0;
}
"""


def limits() -> Limits:
    return Limits.from_timeout(30.0, 256 << 20, 16 << 20)


def stdio(argv: str) -> DataSet:
    return DataSet("stdio", (Item("argv", 0, argv.encode()),))


def timed(call: Callable[[], object], samples: int) -> list[float]:
    times: list[float] = []
    for _ in range(samples):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def prepare(engine: LinuxEngine, name: str, binary: bytes) -> LinuxArtifact:
    spec = FunctionSpec(name, "linux", binary, hashlib.sha256(binary).hexdigest(),
                        ("stdio", "in"), ("stdio",))
    return engine.prepare(spec, None)


def invoker(engine: LinuxEngine, artifact: LinuxArtifact, argv: str,
            files: tuple[Item, ...] = (), expect: bytes | None = None) -> Callable[[], object]:
    inputs = [stdio(argv), DataSet("in", files)]

    def call() -> None:
        result = engine.invoke(artifact, inputs, limits())
        if result.exit_code != 0:
            raise RuntimeError(f"{argv!r} exited {result.exit_code}: {result!r}")
        if expect is not None and result.outputs[0].items[0].data != expect:
            raise RuntimeError(f"{argv!r}: wrong output {result.outputs[0].items[0].data!r}")
    return call


def spawner(argv: list[str]) -> Callable[[], object]:
    def call() -> None:
        pid = os.posix_spawn(argv[0], argv, {}, file_actions=[
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)])
        _, status = os.waitpid(pid, 0)
        if status != 0:
            raise RuntimeError(f"{argv} failed with status {status}")
    return call


def bwrap(scratch: Path, command: list[str]) -> list[str]:
    binary = shutil.which("bwrap")
    if binary is None:
        raise RuntimeError("bwrap is not installed (scripts/setup installs bubblewrap)")
    return [binary, "--unshare-all", "--die-with-parent", "--ro-bind", str(BUSYBOX),
            "/bin/busybox", "--ro-bind", str(scratch / "in"), "/in", "/bin/busybox", *command]


def build(scratch: Path) -> None:
    """The C helpers: N emulated calls, and a program that does nothing (musl and glibc)."""
    (scratch / "calls.c").write_text(CALLS_C)
    subprocess.run(["gcc", "-static", "-O2", "-o", str(scratch / "calls"),
                    str(scratch / "calls.c")], check=True)
    (scratch / "nothing.c").write_text(NOTHING_C)
    for compiler in COMPILERS:
        subprocess.run([compiler, "-static", "-O2", "-o", str(scratch / f"nothing-{compiler}"),
                        str(scratch / "nothing.c")], check=True)


def measure(scratch: Path, data: bytes, samples: int) -> dict[str, list[float]]:
    """Every series, in one run (seconds per call)."""
    expect = f"{hashlib.sha256(data).hexdigest()}  /in/data\n".encode()
    engine = LinuxEngine(scratch / "cache")
    busybox = prepare(engine, "busybox", BUSYBOX.read_bytes())
    calls = prepare(engine, "calls", (scratch / "calls").read_bytes())
    files = (Item("data", 0, data),)
    series: dict[str, tuple[Callable[[], object], int]] = {
        "true": (invoker(engine, busybox, "true"), samples),
        "sha": (invoker(engine, busybox, "sha256sum /in/data", files, expect), samples // 3),
        "calls_none": (invoker(engine, calls, "calls 0"), samples // 3),
        "calls_many": (invoker(engine, calls, f"calls {CALLS}"), samples // 6),
        "calls_many_python": (invoker(engine, calls, f"calls {CALLS} getcwd"), samples // 6),
        "bwrap_true": (spawner(bwrap(scratch, ["true"])), samples // 3),
        "bwrap_sha": (spawner(bwrap(scratch, ["sha256sum", "/in/data"])), samples // 3),
        "native_true": (spawner([str(BUSYBOX), "true"]), samples),
        "native_sha": (spawner([str(BUSYBOX), "sha256sum", str(scratch / "in" / "data")]),
                       samples // 3),
    }
    for compiler in COMPILERS:
        binary = scratch / f"nothing-{compiler}"
        artifact = prepare(engine, f"nothing-{compiler}", binary.read_bytes())
        series[f"nothing_{compiler}"] = (invoker(engine, artifact, "nothing"), samples // 3)
        series[f"native_nothing_{compiler}"] = (spawner([str(binary)]), samples // 3)
    try:
        for call, _ in series.values():
            timed(call, 10)  # warm-up
        return {name: timed(call, max(count, 10)) for name, (call, count) in series.items()}
    finally:
        engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--http-duration", type=int, default=10,
                        help="seconds of wrk load over HTTP (0: skip)")
    args = parser.parse_args()
    data = os.urandom(1 << 20)
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        (scratch / "in").mkdir()
        (scratch / "in" / "data").write_bytes(data)
        build(scratch)
        results = measure(scratch, data, args.samples)
    report(results)
    if args.http_duration > 0:
        print(f"busybox true over HTTP (wrk -c32 {args.http_duration}s): "
              f"{measure_http(args.http_duration)}")


def measure_http(duration: int) -> str:
    def register(client: Client) -> None:
        client.add_function("busybox", BUSYBOX.read_bytes(), engine="linux",
                            input_sets=["stdio"], output_sets=["stdio"])

    argv = {"name": "argv", "text": "busybox\0true\0"}
    body = json.dumps({"sets": [{"name": "stdio", "items": [argv]}]})
    return http_invocations(register, "busybox", body, duration)


def report(results: dict[str, list[float]]) -> None:
    """Print the series, the derived figures and the targets."""
    median = {name: statistics.median(times) * 1e6 for name, times in results.items()}
    per_call_c = (median["calls_many"] - median["calls_none"]) / CALLS
    per_call = (median["calls_many_python"] - median["calls_none"]) / CALLS
    best_sha_ratio = median["bwrap_sha"] / median["native_sha"]
    true_ratio = median["bwrap_true"] / median["true"]
    sha_ratio = median["bwrap_sha"] / median["sha"]
    print("linux engine: Debian's static busybox, fresh process per invocation")
    print(f"    machine: {idle_policy()}")
    print(f"    busybox true, LinuxEngine.invoke:          {summary_us(results['true'])}")
    print(f"    busybox sha256sum 1 MiB, LinuxEngine.invoke: {summary_us(results['sha'])}")
    print(f"    busybox true, bwrap --unshare-all:          {summary_us(results['bwrap_true'])}")
    print(f"    busybox sha256sum 1 MiB, bwrap:             {summary_us(results['bwrap_sha'])}")
    print(f"    busybox true, native posix_spawn:          {summary_us(results['native_true'])}")
    print(f"    busybox sha256sum 1 MiB, native:            {summary_us(results['native_sha'])}")
    for compiler in COMPILERS:
        pappus, native = median[f"nothing_{compiler}"], median[f"native_nothing_{compiler}"]
        print(f"    static C no-op ({compiler}): pappus {pappus:.0f} us, native {native:.0f} us "
              f"(median); the sandbox adds {pappus - native:.0f} us")
    print(f"    C program, 0 / {CALLS} emulated getppid / {CALLS} getcwd: "
          f"{median['calls_none']:.0f} / {median['calls_many']:.0f} / "
          f"{median['calls_many_python']:.0f} us (median)")
    print(f"    per emulated system call: {per_call_c:.1f} us answered in C (getppid), "
          f"{per_call:.1f} us answered in Python (getcwd)")
    print(f"    ratio bwrap/pappus (median): true {true_ratio:.2f}, sha256sum {sha_ratio:.2f} "
          f"(at most {best_sha_ratio:.2f} for any sandbox: bwrap / native busybox)")
    print("targets:")
    print(f"    busybox true median <= {TARGET_TRUE_US:.0f} us: {median['true']:.0f} us "
          f"({verdict(median['true'] <= TARGET_TRUE_US)})")
    print(f"    sha256sum 1 MiB median <= {TARGET_SHA_US:.0f} us: {median['sha']:.0f} us "
          f"({verdict(median['sha'] <= TARGET_SHA_US)}); native busybox itself: "
          f"{median['native_sha']:.0f} us")
    print(f"    per emulated call <= {TARGET_CALL_US:.0f} us: {per_call:.1f} us in Python, "
          f"{per_call_c:.1f} us in C ({verdict(max(per_call, per_call_c) <= TARGET_CALL_US)})")
    print(f"    pappus >= {TARGET_BWRAP_RATIO:.0f}x faster than bwrap: true {true_ratio:.2f}x, "
          f"sha256sum {sha_ratio:.2f}x "
          f"({verdict(min(true_ratio, sha_ratio) >= TARGET_BWRAP_RATIO)})")
    p99 = percentile(results["true"], 0.99) * 1e6
    print(f"    (busybox true p99 {p99:.0f} us)")


if __name__ == "__main__":
    main()
