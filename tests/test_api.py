"""The HTTP API end to end: a real worker process on loopback, real wasm sandboxes."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import pappus
from pappus import Client, Item
from tests.server_process import ServerProcess

WC = """
function tokenize (text) => (words);
function join (words) => (summary);
composition wc (docs) => (groups) {
    tokenize (text = each docs) => (w = words);   // one sandbox per document
    join (words = keyed w) => (groups = summary);  // one sandbox per word length
}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("api-data"))
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def client(server: ServerProcess, api_functions: dict[str, bytes]) -> Iterator[Client]:
    with Client(server.url) as c:
        add = c.add_function
        add("io", api_functions["io"], input_sets=["in", "stdio"], output_sets=["out", "stdio"])
        add("tokenize", api_functions["tokenize"], input_sets=["text"], output_sets=["words"])
        add("join", api_functions["join"], input_sets=["words"], output_sets=["summary"])
        add("spin", api_functions["spin"], input_sets=["stdio"], output_sets=["stdio"],
            timeout_ms=300)
        add("bomb", api_functions["bomb"], memory_bytes=16 << 20)
        add("trap", api_functions["trap"])
        add("echo", api_functions["echo"], input_sets=["stdio"], output_sets=["stdio"])
        c.add_compositions(WC)
        yield c


def test_health_and_metrics(client: Client) -> None:
    assert client.health()["status"] == "ok"
    client.invoke("echo", {"stdio": [Item("stdin", 0, b"x")]})
    text = client.metrics()
    assert 'pappus_function_invocations_total{function="echo",outcome="ok"}' in text
    assert "pappus_function_latency_seconds_bucket" in text
    assert "pappus_queue_depth" in text
    assert "pappus_sandbox_start_seconds_count" in text


def test_c_program_sees_files_stdin_argv_environment(client: Client) -> None:
    result = client.invoke("io", {
        "in": [Item("a", 0, b"alpha"), Item("dir/b", 0, b"beta")],
        "stdio": [Item("stdin", 0, b"from stdin"), Item("argv", 0, b"prog one two"),
                  Item("environ", 0, b"GREETING=hello")],
    })
    stdio = {i.name: i.data for i in result.set("stdio").items}
    assert stdio["stdout"] == (b"argc=3 [prog] [one] [two]\nenv=hello\nstdin=from stdin")
    assert stdio["stderr"] == b"warning: 10 bytes of stdin\n"
    out = {(i.name, i.key): i.data for i in result.set("out").items}
    assert out == {("joined", 0): b"alpha+beta", ("keyed", 42): b"k"}
    assert [s.name for s in result.sets] == ["out", "stdio"]
    assert result.timings["functions"] == 1


def test_composition_each_then_keyed(client: Client) -> None:
    result = client.invoke("wc", {"docs": [Item("d1", 0, b"a bb"), Item("d2", 0, b"cc d eee")]})
    groups = [(i.key, i.data) for i in result.set("groups").items]
    assert groups == [(1, b"a d"), (2, b"bb cc"), (3, b"eee")]
    assert result.timings["functions"] == 2 + 3  # two documents, three key groups


def test_infinite_loop_times_out_within_deadline(client: Client) -> None:
    started = time.monotonic()
    with pytest.raises(pappus.InvocationTimeout):
        client.invoke("spin", {"stdio": [Item("stdin", 0, b"go")]}, timeout_ms=200)
    elapsed = time.monotonic() - started
    assert elapsed < 0.200 + 0.050 + 0.100  # deadline + 50 ms + HTTP/loopback overhead


def test_hostile_functions_get_typed_outcomes_and_do_not_disturb_others(client: Client) -> None:
    def run(name: str) -> str:
        try:
            if name == "echo":
                data = client.invoke("echo", {"stdio": [Item("stdin", 0, b"fine")]})
                return data.set("stdio").items[0].data.decode()
            client.invoke(name, {"stdio": [Item("stdin", 0, b"go")]} if name == "spin" else {})
        except pappus.PappusError as error:
            return error.type
        return "no error"

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        names = ["spin", "bomb", "trap"] + ["echo"] * 5
        outcomes = list(pool.map(run, names))
    assert outcomes == ["timeout", "out_of_memory", "crash"] + ["fine"] * 5


def test_malformed_module_refused_at_registration(client: Client) -> None:
    with pytest.raises(pappus.InvalidBinary):
        client.add_function("garbage", b"\x00asm\x01\x00\x00\x00\xff\xff")
    with pytest.raises(pappus.NotFound):
        client.function("garbage")


def test_registration_errors(client: Client, api_functions: dict[str, bytes]) -> None:
    with pytest.raises(pappus.Conflict):
        client.add_function("echo", api_functions["echo"])
    with pytest.raises(pappus.BadRequest, match="engine"):
        client.add_function("x", b"", engine="nonsense")
    with pytest.raises(pappus.CompositionSyntaxError) as syntax:
        client.add_compositions("composition broken (a) => (b) {\n  f(x = all a) => (b = y)\n}")
    assert syntax.value.detail["line"] == 3
    with pytest.raises(pappus.CompositionInvalid) as invalid:
        client.add_compositions("function nope (a) => (b);")
    assert invalid.value.detail["kind"] == "InvalidFunctionDeclaration"


def test_raw_http_errors_are_json(server: ServerProcess, client: Client) -> None:
    cases = [
        ("POST", "/v1/invoke/echo", b"{not json", 400, "bad_request"),
        ("POST", "/v1/invoke/echo", b'{"sets": [{"name": "nope", "items": []}]}', 400,
         "bad_request"),
        ("POST", "/v1/invoke/echo",
         b'{"sets": [{"name": "stdio", "items": [{"name": "stdin", "key": -1, "data": ""}]}]}',
         400, "bad_request"),
        ("POST", "/v1/invoke/echo",
         b'{"sets": [{"name": "stdio", "items": [{"name": "stdin", "data": "***"}]}]}',
         400, "bad_request"),
        ("POST", "/v1/invoke/missing", b"{}", 404, "not_found"),
        ("GET", "/v1/functions/missing", b"", 404, "not_found"),
        ("POST", "/v1/functions", b'{"name": "f"}', 400, "bad_request"),
        ("POST", "/v1/functions", b"[1, 2]", 400, "bad_request"),
    ]
    with httpx.Client(base_url=server.url) as http:
        for method, path, body, status, kind in cases:
            response = http.request(method, path, content=body)
            assert response.status_code == status, (path, body, response.text)
            assert response.json()["error"]["type"] == kind


def test_too_large_body(server: ServerProcess, client: Client) -> None:
    with httpx.Client(base_url=server.url) as http:
        response = http.post("/v1/invoke/echo", content=b"x" * (65 * 1024 * 1024))
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "too_large"


def test_list_get_delete(client: Client, api_functions: dict[str, bytes]) -> None:
    record = client.add_function("temp", api_functions["echo"], input_sets=["stdio"])
    assert len(record["sha256"]) == 64
    assert "temp" in [f["name"] for f in client.functions()]
    assert client.function("temp")["input_sets"] == ["stdio"]
    assert "wc" in [c["name"] for c in client.compositions()]
    with pytest.raises(pappus.Conflict, match="wc"):
        client.remove_function("join")
    client.remove_function("temp")
    with pytest.raises(pappus.NotFound):
        client.function("temp")


def test_text_convenience(server: ServerProcess, client: Client) -> None:
    body = {"sets": [{"name": "stdio", "items": [{"name": "stdin", "text": "héllo"}]}]}
    with httpx.Client(base_url=server.url) as http:
        response = http.post("/v1/invoke/echo?output=text", json=body)
    items = response.json()["sets"][0]["items"]
    assert {"name": "stdout", "key": 0, "text": "héllo"} in items


def test_stats(client: Client) -> None:
    stats = client.stats()
    assert stats["slots"] >= 1
    assert stats["completed"] > 0
    assert 0 < stats["inline"] <= stats["completed"] + sum(stats["failed"].values())
    assert stats["preempted"] >= 0 and stats["engines"]["wasm"]["preempted"] >= 0
    assert "wasm" in stats["engines"]


def test_unreachable_worker() -> None:
    with Client("http://127.0.0.1:9", timeout=2) as c, pytest.raises(pappus.WorkerUnreachable):
        c.health()


def test_demo_files_are_packaged() -> None:
    from pappus.demo import DEMO_COMPOSITION, load_demo

    assert load_demo()
    assert "composition" in DEMO_COMPOSITION
    assert Path(pappus.__file__).parent.joinpath("py.typed").exists()


def test_failures_inside_compositions_and_exit_codes(client: Client,
                                                     api_functions: dict[str, bytes]) -> None:
    client.add_compositions(
        "function trap () => ();\n"
        "composition boom (x) => (y) { trap () => (); }\n")
    with pytest.raises(pappus.SandboxCrash) as crash:
        client.invoke("boom")
    assert "unreachable" in crash.value.message
    assert crash.value.detail["trap_code"] == "UNREACHABLE"
    # io exits with code 2 and says why on stderr when its inputs are missing
    with pytest.raises(pappus.FunctionFailed) as failed:
        client.invoke("io", {"stdio": [Item("stdin", 0, b"")]})
    assert failed.value.detail["exit_code"] == 2
    assert failed.value.detail["stderr"] == "missing input\n"
    text = client.metrics()
    assert 'pappus_function_invocations_total{function="trap",outcome="crash"}' in text
    assert 'pappus_function_invocations_total{function="io",outcome="function_error"}' in text
    assert 'pappus_http_requests_total{outcome="crash"}' in text
