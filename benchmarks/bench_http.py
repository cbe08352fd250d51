"""(b) Invocations through the HTTP API under load, and (c) the ratio to a bare
ASGI echo endpoint on the same server stack, measured in the same run with wrk.

    python -m benchmarks.bench_http [--duration 20] [--connections 32]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.server_process import ServerProcess

from benchmarks.trivial import trivial_module
from pappus import Client

TARGET_RPS = 2000.0
TARGET_P99_MS = 20.0
TARGET_RATIO = 0.5


@dataclass(frozen=True)
class LoadResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


def _to_ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(url: str, body: str, duration: int, connections: int) -> LoadResult:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write('wrk.method = "POST"\n')
        script.write('wrk.headers["Content-Type"] = "application/json"\n')
        script.write(f"wrk.body = {json.dumps(body)}\n")
    command = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency",
               "-s", script.name, url]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    Path(script.name).unlink()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _to_ms(re.search(r"\s50%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    p99 = _to_ms(re.search(r"\s99%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    errors_match = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    errors = int(errors_match.group(1)) if errors_match else 0
    if socket_errors:
        errors += sum(int(n) for n in re.findall(r"\d+", socket_errors.group(1)))
    return LoadResult(rps, p50, p99, errors)


def http_invocations(register: Callable[[Client], None], function: str, body: str,
                     duration: int, connections: int = 32) -> str:
    """Start a worker, ``register`` a function with it, and load ``function`` with wrk.

    A one-line summary (req/s, p50, p99, errors), or why it was skipped.
    """
    if shutil.which("wrk") is None:
        return "skipped: wrk is not installed (scripts/setup installs it)"
    with tempfile.TemporaryDirectory() as data:
        server = ServerProcess(Path(data))
        url = server.start()
        try:
            with Client(url) as client:
                register(client)
            run_wrk(f"{url}/v1/invoke/{function}", body, 3, connections)  # warm-up
            load = run_wrk(f"{url}/v1/invoke/{function}", body, duration, connections)
        finally:
            server.stop()
    return (f"{load.requests_per_s:.0f} req/s, p50 {load.p50_ms:.2f} ms, "
            f"p99 {load.p99_ms:.2f} ms, errors {load.errors}")


def _load_pappus(processes: int, duration: int, connections: int,
                 command: list[str] | None = None) -> LoadResult:
    """Register the trivial function with a fresh worker and load it with wrk."""
    body = json.dumps({"sets": []})
    with tempfile.TemporaryDirectory() as data:
        options = ["--processes", str(processes)]
        if command is None:
            server = ServerProcess(Path(data), *options)
        else:
            server = ServerProcess(Path(data), command=[
                *command, "serve", "--port", "0", "--data-dir", data, "--log-level", "warning",
                *options])
        url = server.start()
        try:
            with Client(url) as client:
                client.add_function("trivial", trivial_module(), input_sets=["stdio"],
                                    output_sets=["stdio"])
                check = client.invoke("trivial")
                if check.set("stdio").items[0].data != b"ok\n":
                    sys.exit(f"unexpected output {check!r}")
            run_wrk(url + "/v1/invoke/trivial", body, 3, connections)  # warm-up
            return run_wrk(url + "/v1/invoke/trivial", body, duration, connections)
        finally:
            server.stop()


def measure(processes: int, duration: int,
            connections: int) -> tuple[LoadResult, LoadResult, LoadResult]:
    """pappus, the same route with no sandbox (a stored result), and the bare echo,
    each served by ``processes`` server processes."""
    pappus_load = _load_pappus(processes, duration, connections)
    stored_load = _load_pappus(processes, duration, connections,
                               [sys.executable, "-m", "benchmarks.stored_server"])
    body = json.dumps({"sets": []})
    echo = ServerProcess(Path("."), command=[sys.executable, "-m", "benchmarks.echo_server",
                                             "--processes", str(processes)])
    echo_url = echo.start()
    try:
        run_wrk(echo_url + "/echo", body, 3, connections)
        echo_load = run_wrk(echo_url + "/echo", body, duration, connections)
    finally:
        echo.stop()
    return pappus_load, stored_load, echo_load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--processes", type=int, nargs="+", default=None, metavar="N",
                        help="server processes to measure with, pappus and echo alike "
                             "(default: 1 and the number of CPU cores)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: run scripts/setup (Debian package 'wrk')")
    counts = args.processes or sorted({1, os.cpu_count() or 1})
    print(f"(b) HTTP invoke of a trivial wasm function, wrk -c{args.connections} "
          f"{args.duration}s; (c) its ratio to a bare ASGI echo on the same stack with as "
          "many server processes")
    for processes in counts:
        pappus_load, stored_load, echo_load = measure(processes, args.duration,
                                                      args.connections)
        ratio = pappus_load.requests_per_s / echo_load.requests_per_s
        bound = stored_load.requests_per_s / echo_load.requests_per_s
        print(f"  --processes {processes}")
        print(f"    pappus: {pappus_load.requests_per_s:8.0f} req/s, p50 "
              f"{pappus_load.p50_ms:.2f} ms, p99 {pappus_load.p99_ms:.2f} ms, "
              f"errors {pappus_load.errors}")
        print(f"    bare ASGI echo, same stack: {echo_load.requests_per_s:8.0f} req/s, "
              f"p50 {echo_load.p50_ms:.2f} ms, p99 {echo_load.p99_ms:.2f} ms")
        print(f"    (c) ratio pappus/echo: {ratio:.2f}")
        print(f"    the same route with no sandbox (a stored result): "
              f"{stored_load.requests_per_s:8.0f} req/s, p99 {stored_load.p99_ms:.2f} ms; "
              f"ratio to echo {bound:.2f}, the most (c) can reach on this request path")
        verdicts = [
            ("throughput >= 2000 req/s", pappus_load.requests_per_s >= TARGET_RPS),
            ("p99 <= 20 ms", pappus_load.p99_ms <= TARGET_P99_MS),
            ("ratio >= 0.5", ratio >= TARGET_RATIO),
            ("no errors", pappus_load.errors == 0),
        ]
        for name, ok in verdicts:
            print(f"    target {name}: {'MET' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
