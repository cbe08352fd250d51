"""Load: 10,000 fetch→compute invocations at concurrency 64 on a real worker.

Every invocation is the composition ``HTTP (each) → tokenize (each)``: the
worker's ``HTTP`` function fetches ``/echo?id=N`` from an origin on loopback
(which answers ``id N N²``) and the wasm ``tokenize`` function splits that
body into words. Every invocation carries a unique id, so the test checks that
each result came back exactly once and belongs to its own request (nothing
lost, duplicated or crossed), that the origin saw each id exactly once, and
that the worker's resident memory stays bounded (peak, and growth between the
2,000th and the 10,000th invocation), sampled from ``/proc/<pid>/status``.
Run with ``pytest -s`` to see throughput, latency and RSS.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

import pappus
from pappus import Client, Item
from tests.server_process import ServerProcess

INVOCATIONS = 10_000
CONCURRENCY = 64
CHECKPOINT = 2_000  # RSS here vs. after the last invocation: memory must not keep growing
MIB = 1 << 20
PEAK_RSS_BOUND = 600 * MIB
GROWTH_BOUND = 100 * MIB
SAMPLE_INTERVAL_S = 0.02

FETCH_TOKENIZE = """
function HTTP (requests) => (headers, bodies);
function tokenize (text) => (words);

composition fetch_tokenize (requests) => (words, headers) {
    HTTP (requests = each requests) => (bodies = bodies, headers = headers);
    tokenize (text = each bodies) => (words = words);
}
"""


# -- an origin that answers every request with something derived from its id --


class _EchoServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the worker may open many pooled connections at once

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _EchoHandler)
        self.hits: Counter[int] = Counter()
        self.hits_lock = threading.Lock()


class _EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _EchoServer

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output clean

    def do_GET(self) -> None:
        split = urlsplit(self.path)
        ids = parse_qs(split.query).get("id", [])
        if split.path != "/echo" or len(ids) != 1 or not ids[0].isdigit():
            status, body = 404, b"not found"
        else:
            request_id = int(ids[0])
            with self.server.hits_lock:
                self.server.hits[request_id] += 1
            status, body = 200, _origin_body(request_id)
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _origin_body(request_id: int) -> bytes:
    return f"id {request_id} {request_id * request_id}".encode()


@contextmanager
def echo_origin() -> Iterator[tuple[str, _EchoServer]]:
    server = _EchoServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# -- resident memory of the worker process --


def _status_bytes(pid: int, field: str) -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``), in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"{field} missing from /proc/{pid}/status")


class RssSampler:
    """Samples a process's VmRSS every ``SAMPLE_INTERVAL_S`` on a thread until stopped."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(_status_bytes(self.pid, "VmRSS"))
            self._stop.wait(SAMPLE_INTERVAL_S)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- the load --


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one invocation returned, reduced to what the checks need."""

    request_id: int
    words: tuple[tuple[str, int, bytes], ...] = ()  # (name, key, data), sorted
    headers: tuple[tuple[str, int, bytes], ...] = ()  # (name, key, status line)
    error: str = ""
    latency_s: float = 0.0


def _expected_words(request_id: int) -> tuple[tuple[str, int, bytes], ...]:
    """tokenize's items for the origin's body: word ``w`` is item ``w`` with key ``len(w)``.

    A repeated word is one file, so one item (``id 1 1`` gives ``id`` and ``1``).
    """
    words = set(_origin_body(request_id).decode().split())
    return tuple(sorted((w, len(w), w.encode()) for w in words))


def _request_item(origin: str, request_id: int) -> Item:
    return Item(f"r{request_id}", request_id,
                f"GET {origin}/echo?id={request_id} HTTP/1.1".encode())


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="reads the worker's RSS from /proc")
def test_ten_thousand_fetch_compute_invocations(tmp_path: Path,
                                                 api_functions: dict[str, bytes]) -> None:
    server = ServerProcess(tmp_path / "data", "--egress-allow", "127.0.0.1")
    with echo_origin() as (origin, echo):
        server.start()
        try:
            assert server.process is not None
            pid = server.process.pid
            with Client(server.url) as client:
                client.add_function("tokenize", api_functions["tokenize"],
                                    input_sets=["text"], output_sets=["words"])
                client.add_compositions(FETCH_TOKENIZE)
                before = client.stats()
                rss_start = _status_bytes(pid, "VmRSS")

                done = 0
                done_lock = threading.Lock()
                rss_at_checkpoint: list[int] = []

                local = threading.local()
                thread_clients: list[Client] = []

                def own_client() -> Client:
                    # One client (one connection pool) per thread: a shared httpx pool
                    # under 64 threads is not what a load generator should measure.
                    if not hasattr(local, "client"):
                        local.client = Client(server.url)
                        with done_lock:
                            thread_clients.append(local.client)
                    return local.client  # type: ignore[no-any-return]

                def invoke(request_id: int) -> Outcome:
                    nonlocal done
                    started = time.perf_counter()
                    try:
                        result = own_client().invoke(
                            "fetch_tokenize", {"requests": [_request_item(origin, request_id)]})
                        outcome = Outcome(
                            request_id,
                            words=tuple(sorted((i.name, i.key, i.data)
                                               for i in result.set("words").items)),
                            headers=tuple((i.name, i.key, i.data.split(b"\n", 1)[0])
                                          for i in result.set("headers").items),
                            latency_s=time.perf_counter() - started)
                    except pappus.PappusError as error:  # includes WorkerUnreachable
                        outcome = Outcome(request_id, error=f"{error.type}: {error}")
                    with done_lock:
                        done += 1
                        if done == CHECKPOINT:
                            rss_at_checkpoint.append(_status_bytes(pid, "VmRSS"))
                    return outcome

                with RssSampler(pid) as sampler:
                    started = time.monotonic()
                    with ThreadPoolExecutor(CONCURRENCY) as pool:
                        outcomes = list(pool.map(invoke, range(INVOCATIONS)))
                    elapsed = time.monotonic() - started
                for each in thread_clients:
                    each.close()
                rss_end = _status_bytes(pid, "VmRSS")
                peak = _status_bytes(pid, "VmHWM")  # the kernel's high-water mark: the true peak
                after = client.stats()
                assert client.health()["status"] == "ok"
        finally:
            code = server.stop()
    log = "".join(server.output)

    # -- the report --
    ok = sorted(o.latency_s for o in outcomes if not o.error)
    throughput = INVOCATIONS / elapsed
    (rss_checkpoint,) = rss_at_checkpoint
    growth = rss_end - rss_checkpoint
    report = (
        f"{INVOCATIONS} invocations at concurrency {CONCURRENCY} in {elapsed:.1f} s "
        f"= {throughput:.0f} invocations/s"
        + (f"; latency p50 {ok[len(ok) // 2] * 1e3:.0f} ms, "
           f"p99 {ok[len(ok) * 99 // 100] * 1e3:.0f} ms" if ok else "")
        + f"; worker RSS: start {rss_start / MIB:.0f} MiB, after {CHECKPOINT} invocations "
        f"{rss_checkpoint / MIB:.0f} MiB, after {INVOCATIONS} {rss_end / MIB:.0f} MiB, "
        f"peak (VmHWM) {peak / MIB:.0f} MiB, peak sampled "
        f"{max(sampler.samples) / MIB:.0f} MiB ({len(sampler.samples)} samples)")
    print("\n" + report)

    # -- no lost, failed, duplicated or crossed results --
    failures = [o for o in outcomes if o.error]
    assert not failures, (f"{len(failures)} of {INVOCATIONS} failed, first: "
                          f"{[(o.request_id, o.error) for o in failures[:5]]}; {report}")
    assert [o.request_id for o in outcomes] == list(range(INVOCATIONS))
    wrong = [o for o in outcomes
             if o.words != _expected_words(o.request_id)
             or o.headers != ((f"r{o.request_id}", o.request_id, b"HTTP/1.1 200 OK"),)]
    assert not wrong, (f"{len(wrong)} results do not match their request, first: "
                       f"{wrong[:3]}; {report}")
    assert echo.hits == Counter(range(INVOCATIONS)), (
        "the origin did not see every id exactly once: "
        f"missing {sorted(set(range(INVOCATIONS)) - set(echo.hits))[:10]}, "
        f"repeated {[i for i, n in echo.hits.items() if n > 1][:10]}")
    assert after["failed"] == before["failed"], report
    # one HTTP run (on the event loop) and one tokenize run (on a compute slot) each
    assert after["completed"] - before["completed"] == 2 * INVOCATIONS, (after, before)

    # -- bounded memory --
    assert peak < PEAK_RSS_BOUND, f"peak RSS {peak / MIB:.0f} MiB; {report}"
    assert growth < GROWTH_BOUND, (
        f"RSS grew {growth / MIB:.0f} MiB from invocation {CHECKPOINT} to {INVOCATIONS}; "
        f"{report}")

    # -- and the worker stayed healthy and quiet --
    assert code in (0, -15), log  # uvicorn re-raises SIGTERM after a graceful shutdown
    assert "Traceback" not in log and "ERROR" not in log, log
