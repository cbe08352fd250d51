"""Malformed JSON v1 requests: always a typed 4xx answer, never a 500 or a dropped connection.

The decoders are fed random and mutated bodies in process (Hypothesis); a real
worker on loopback is then sent mutated requests over one kept-alive
connection, and must still hold and run what was registered before.
"""

from __future__ import annotations

import base64
import json
import random
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from benchmarks.trivial import trivial_module
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.types import Receive, Scope, Send

from pappus import Client
from pappus.errors import BadRequest, PappusError
from pappus.registry import MAX_MEMORY_BYTES, MAX_TIMEOUT_MS
from pappus.server import codec
from pappus.server.app import AnswerUnexpectedErrors, bind_socket
from tests.conftest import eventually
from tests.server_process import ServerProcess

INPUT_SETS = ("stdio", "in")
MAX_BINARY = 1 << 20


def _only_typed_client_errors(body: bytes) -> None:
    """What the invoke and the registration routes decode from ``body`` either works
    or is a typed 4xx error; any other exception fails the test."""
    try:
        parsed = codec.parse_json(body)
    except PappusError as error:
        assert 400 <= error.http_status < 500, (body[:200], error)
        return
    for decode in (lambda: codec.decode_invocation(parsed, INPUT_SETS),
                   lambda: codec.decode_registration(parsed, MAX_BINARY),
                   lambda: codec.decode_source(parsed)):
        try:
            decode()
        except PappusError as error:
            assert 400 <= error.http_status < 500, (body[:200], error)


def _valid_invocation() -> dict[str, Any]:
    return {"sets": [{"name": "stdio", "items": [
                {"name": "stdin", "key": 7, "data": base64.b64encode(b"hi").decode()},
                {"name": "argv", "text": "prog -v"}]},
             {"name": "in", "items": []}],
            "timeout_ms": 500}


def _valid_registration() -> dict[str, Any]:
    return {"name": "fuzzed", "engine": "wasm",
            "binary": base64.b64encode(trivial_module()).decode(),
            "input_sets": ["stdio"], "output_sets": ["stdio"],
            "static_sets": {"stdio": [{"name": "argv", "text": "x"}]},
            "timeout_ms": 1000, "memory_bytes": 1 << 24}


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(st.characters(codec="utf-8") | st.sampled_from("\ud800\udfff/.\n\x00")),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["sets", "name", "items", "key", "data", "text", "timeout_ms",
                         "engine", "binary", "input_sets", "output_sets", "static_sets",
                         "memory_bytes", "context_size", "stdio", "in"]), inner, max_size=6),
    max_leaves=20,
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON_VALUES)
def test_random_json_values_are_typed_client_errors(value: Any) -> None:
    _only_typed_client_errors(json.dumps(value).encode())


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_are_typed_client_errors(body: bytes) -> None:
    _only_typed_client_errors(body)


def _mutations(body: bytes, rng: random.Random, count: int) -> Iterator[bytes]:
    """``body`` with bytes flipped, dropped, duplicated or replaced by JSON's odd tokens."""
    odd = [b"NaN", b"-Infinity", b"1e999", b"9" * 5000, b'"\\ud800"', b"[" * 50000,
           b"true", b"null", b"{}", b"[]", b'"\\u0000"', b"-1", b"4294967296"]
    for _ in range(count):
        mutated = bytearray(body)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(mutated) or 1)
            choice = rng.random()
            if choice < 0.3:
                mutated[at:at + 1] = bytes([rng.randrange(256)])
            elif choice < 0.5:
                del mutated[at:at + rng.randint(1, 8)]
            elif choice < 0.7:
                mutated[at:at] = mutated[at:at + rng.randint(1, 16)]
            else:
                end = at + rng.randint(0, 12)
                mutated[at:end] = rng.choice(odd)
        yield bytes(mutated)


def test_mutated_valid_bodies_are_typed_client_errors() -> None:
    rng = random.Random(2026)
    for valid in (_valid_invocation(), _valid_registration()):
        for body in _mutations(json.dumps(valid).encode(), rng, 3000):
            _only_typed_client_errors(body)


@pytest.mark.parametrize(("body", "says"), [
    pytest.param(b"[" * 100_000 + b"]" * 100_000, "nested too deeply", id="deep-nesting"),
    pytest.param(b'{"sets": NaN}', "NaN is not a JSON value", id="nan"),
    pytest.param(b'{"timeout_ms": -Infinity}', "-Infinity is not", id="infinity"),
    pytest.param(b'{"timeout_ms": ' + b"1" * 5000 + b"}", "not valid JSON", id="huge-integer"),
    pytest.param(b'{"sets": [{"name": "stdio", "items": [{"name": "\\udc80", "data": ""}]}]}',
                 "sets[0].items[0].name holds a lone surrogate (\\udc80)", id="surrogate-name"),
    pytest.param(b'{"sets": [{"name": "stdio", "items": [{"name": "x", "text": "a\\ud800"}]}]}',
                 "sets[0].items[0].text holds a lone surrogate", id="surrogate-text"),
])
def test_what_json_forbids_or_python_cannot_hold_is_a_bad_request(body: bytes,
                                                                   says: str) -> None:
    with pytest.raises(BadRequest) as caught:
        codec.decode_invocation(codec.parse_json(body), INPUT_SETS)
    assert says in caught.value.message


# -- a real worker ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def worker_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = ServerProcess(tmp_path_factory.mktemp("fuzz-data"))
    url = server.start()
    with Client(url) as client:
        client.add_function("trivial", trivial_module(), input_sets=["stdio", "in"],
                            output_sets=["stdio"])
        client.add_compositions("function trivial (stdio, in) => (stdio);\n"
                                "composition twice (a) => (b) {\n"
                                "  trivial (stdio = each a) => (b = stdio);\n}\n")
    yield url
    server.stop()
    log = "".join(server.output)
    assert "Traceback" not in log and "Exception in ASGI" not in log, log[-3000:]


@pytest.mark.parametrize(("field", "value", "maximum"), [
    ("timeout_ms", 10**30, MAX_TIMEOUT_MS),
    ("timeout_ms", MAX_TIMEOUT_MS + 1, MAX_TIMEOUT_MS),
    ("memory_bytes", 1 << 70, MAX_MEMORY_BYTES),
    ("context_size", MAX_MEMORY_BYTES + 1, MAX_MEMORY_BYTES),
])
def test_registration_bounds_are_bad_requests(worker_url: str, field: str, value: int,
                                              maximum: int) -> None:
    body = {**_valid_registration(), "name": f"bounded_{field}", field: value}
    response = httpx.post(f"{worker_url}/v1/functions", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["field"], error["maximum"]) == ("bad_request", field, maximum)


def test_a_lone_surrogate_in_a_comment_is_refused_before_it_is_stored(worker_url: str) -> None:
    """The parser skips comments, so only the decoder can keep such a source out of SQLite."""
    source = "// \ud800\nfunction trivial (stdio, in) => (stdio);\n" + (
        "composition odd (a) => (b) {\n  trivial (stdio = all a) => (b = stdio);\n}\n")
    response = httpx.post(f"{worker_url}/v1/compositions",
                          content=json.dumps({"source": source}).encode())
    assert response.status_code == 400, response.text
    assert response.json()["error"]["field"] == "source"


def test_mutated_requests_over_one_connection(worker_url: str) -> None:
    rng = random.Random(7)
    invocation = json.dumps(_valid_invocation()).encode()
    registration = json.dumps(_valid_registration()).encode()
    composition = json.dumps({"source": "composition c (a) => (b) {\n"
                                        "  trivial (stdio = all a) => (b = stdio);\n}"}).encode()
    requests = [("/v1/invoke/trivial", body) for body in _mutations(invocation, rng, 200)]
    requests += [("/v1/functions", body) for body in _mutations(registration, rng, 100)]
    requests += [("/v1/compositions", body) for body in _mutations(composition, rng, 100)]
    rng.shuffle(requests)
    statuses: dict[int, int] = {}
    # One connection: a server that dropped it after a bad request would fail the next one.
    with httpx.Client(base_url=worker_url, timeout=30,
                      limits=httpx.Limits(max_connections=1)) as http:
        for path, body in requests:
            response = http.post(path, content=body)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            assert response.status_code < 500, (path, body[:300], response.text)
            if response.status_code >= 400:
                assert response.json()["error"]["type"], response.text
    assert statuses.get(400, 0) > 100, statuses  # the mutations really were malformed
    with Client(worker_url) as client:
        assert {"trivial", "twice"} <= {entry["name"] for entry in client.functions()} | {
            entry["name"] for entry in client.compositions()}
        assert client.invoke("trivial").set("stdio").items[0].data == b"ok\n"


# -- the unexpected-error middleware ------------------------------------------------------


async def _sometimes_broken(scope: Scope, receive: Receive, send: Send) -> None:
    """A stand-in for a route with a bug: ``/boom`` raises, anything else answers."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/boom":
        raise RuntimeError("a bug")
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def broken_server() -> Iterator[int]:
    sock = bind_socket("127.0.0.1", 0)
    config = uvicorn.Config(AnswerUnexpectedErrors(_sometimes_broken), log_level="critical",
                            lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        eventually(lambda: server.started or not thread.is_alive(), timeout_s=10)
        assert server.started, "uvicorn did not start"
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _exchange(connection: socket.socket, path: str) -> bytes:
    connection.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head, _, rest = _read_until(connection, b"\r\n\r\n").partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(rest) < length:
        rest += connection.recv(65536)
    return head.split(b"\r\n")[0] + b"\n" + rest


def _read_until(connection: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = connection.recv(65536)
        if not chunk:
            raise ConnectionError(f"the server closed the connection after {data!r}")
        data += chunk
    return data


def test_an_unexpected_error_is_a_json_500_and_the_connection_stays_open(
        broken_server: int, caplog: pytest.LogCaptureFixture) -> None:
    with socket.create_connection(("127.0.0.1", broken_server), timeout=10) as connection:
        status, _, body = _exchange(connection, "/boom").partition(b"\n")
        assert status == b"HTTP/1.1 500 Internal Server Error"
        assert json.loads(body) == {"error": {"type": "internal",
                                              "message": "internal error: RuntimeError: a bug"}}
        assert _exchange(connection, "/fine") == b"HTTP/1.1 200 OK\nok"
    assert "unexpected error handling GET /boom" in caplog.text
