"""HTTP inside compositions on a real worker: Dandelion's fetch→compute, and typed egress errors."""

from __future__ import annotations

import platform
import struct
import sys
from collections.abc import Iterator

import pytest

import pappus
from pappus import Client, Item
from tests.communication.origin import Listener, origin_server
from tests.server_process import ServerProcess

FETCH_COMPUTE = """
function HTTP (requests) => (headers, bodies);
function matmul (InMats) => (OutMats);

composition fetch_compute (requests) => (result) {
    HTTP (requests = each requests) => (bodies = bodies);
    matmul (InMats = each bodies) => (result = OutMats);
}
"""


@pytest.fixture(scope="module")
def origin() -> Iterator[str]:
    with origin_server() as url:
        yield url


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    if sys.platform != "linux" or platform.machine() != "x86_64":
        pytest.skip("fetch→compute uses the process engine's matmul (Linux x86-64)")
    from pappus import sdk

    build = tmp_path_factory.mktemp("fetch") / "matmul"
    sdk.build_function([sdk.example_source("matmul")], build)
    server = ServerProcess(tmp_path_factory.mktemp("http-api"), "--egress-allow", "127.0.0.1")
    server.start()
    try:
        with Client(server.url) as c:
            c.add_function("matmul", build.read_bytes(), engine="process",
                           input_sets=["InMats"], output_sets=["OutMats"])
            c.add_compositions(FETCH_COMPUTE)
            yield c
    finally:
        server.stop()


def test_fetch_compute(client: Client, origin: str) -> None:
    result = client.invoke("fetch_compute", {"requests": [
        Item("a", 0, f"GET {origin}/matrix HTTP/1.1".encode())]})
    (item,) = result.set("result").items
    assert struct.unpack("<5q", item.data) == (2, 5, 11, 11, 25)
    assert item.key == 0


def test_http_can_be_invoked_directly(client: Client, origin: str) -> None:
    request = Item("g", 3, f"GET {origin}/get HTTP/1.1".encode())
    result = client.invoke("HTTP", {"requests": [request]})
    assert result.set("bodies").items[0].data == b"ok get"
    assert result.set("headers").items[0].data.startswith(b"HTTP/1.1 200 OK\n")
    assert result.set("headers").items[0].key == 3
    assert result.timings["io_us"] > 0 and result.timings["decode_us"] > 0


def test_denied_egress_is_a_typed_403(client: Client) -> None:
    listener = Listener("127.0.0.2")
    try:
        with pytest.raises(pappus.PappusError) as error:
            client.invoke("fetch_compute", {"requests": [
                Item("a", 0, f"GET http://127.0.0.2:{listener.port}/ HTTP/1.1".encode())]})
        assert error.value.type == "egress_denied"
        assert not listener.connected()
        with pytest.raises(pappus.PappusError) as error:
            client.invoke("HTTP", {"requests": [Item("a", 0, b"GET nowhere HTTP/1.1")]})
        assert error.value.type == "bad_request"
    finally:
        listener.close()
    assert client.health()["status"] == "ok"
