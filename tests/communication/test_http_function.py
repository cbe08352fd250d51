"""The HTTP communication function against a real origin server on loopback.

Dandelion's oracle (reference §6), request parsing errors, error statuses as
data, truncated and oversized responses, and the egress policy: denied
hosts, metadata addresses, names resolving to denied addresses and redirects
to them — each checked with a listening socket that must see no connection.
"""

from __future__ import annotations

import ipaddress
import struct
import time
from collections.abc import Iterator

import pytest

from pappus.communication.egress import EgressPolicy, IPAddress
from pappus.communication.http import HttpFunction
from pappus.errors import BadRequest, CommunicationFailed, EgressDenied
from pappus.model import DataSet, Item
from tests.communication.origin import Listener, origin_server


@pytest.fixture(scope="module")
def origin() -> Iterator[str]:
    with origin_server() as url:
        yield url


@pytest.fixture
def denied_listener() -> Iterator[Listener]:
    listener = Listener("127.0.0.2")
    yield listener
    listener.close()


def make(rules: list[str], names: dict[str, list[str]] | None = None,
         max_response_bytes: int = 1 << 20) -> HttpFunction:
    async def resolve(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address(a) for a in (names or {}).get(host, [])]

    return HttpFunction(EgressPolicy(rules), timeout_s=5.0, max_response_bytes=max_response_bytes,
                        io_concurrency=4, resolver=resolve if names is not None else None)


async def fetch(function: HttpFunction, *requests: bytes) -> tuple[list[Item], list[Item]]:
    items = tuple(Item(f"r{i}", 10 + i, data) for i, data in enumerate(requests))
    try:
        headers, bodies = await function.run([DataSet("requests", items)],
                                             time.monotonic() + 10)
    finally:
        await function.aclose()
    assert headers is not None and bodies is not None
    return list(headers.items), list(bodies.items)


async def test_dandelion_oracle_get_large_post(origin: str) -> None:
    function = make(["127.0.0.1"])
    headers, bodies = await fetch(
        function,
        f"GET {origin}/get HTTP/1.1".encode(),
        f"GET {origin}/get_large HTTP/1.1".encode(),
        f"POST {origin}/post HTTP/1.1\nContent-Type: text/plain\n\nhello".encode())
    assert [(i.name, i.key) for i in headers] == [("r0", 10), ("r1", 11), ("r2", 12)]
    assert [(i.name, i.key) for i in bodies] == [("r0", 10), ("r1", 11), ("r2", 12)]
    assert headers[0].data.startswith(b"HTTP/1.1 200 OK\n")
    assert b"\ncontent-type:text/plain\n" in headers[0].data
    assert bodies[0].data == b"ok get"
    assert bodies[1].data == b"a" * 8192
    assert bodies[2].data == b"ok post"
    assert b"x-received:5\n" in headers[2].data  # the body was sent


async def test_crlf_requests_and_error_statuses_are_data(origin: str) -> None:
    crlf = f"GET {origin}/status/404 HTTP/1.1\r\nAccept: */*\r\n\r\n".encode()
    headers, bodies = await fetch(make(["127.0.0.1"]), crlf,
                                  f"GET {origin}/status/503 HTTP/1.1".encode())
    assert headers[0].data.startswith(b"HTTP/1.1 404 Not Found\n")
    assert headers[1].data.startswith(b"HTTP/1.1 503 Service Unavailable\n")
    assert bodies[0].data == b"status body"


@pytest.mark.parametrize(("request_text", "complaint"), [
    (b"GET /relative HTTP/1.1", "absolute"),
    (b"GET http://127.0.0.1/ HTTP/4.2", "version"),
    (b"G(T http://127.0.0.1/ HTTP/1.1", "method"),
    (b"GET http://127.0.0.1/ HTTP/1.1\nno colon here", "':'"),
    (b"GET http://127.0.0.1/", "METHOD URL VERSION"),
    (b"\xff\xfe", "UTF-8"),
])
async def test_malformed_request_items_are_bad_requests(request_text: bytes,
                                                        complaint: str) -> None:
    with pytest.raises(BadRequest) as error:
        await fetch(make(["127.0.0.1"]), request_text)
    assert complaint in error.value.message
    assert error.value.detail["item"] == "r0"


async def test_truncated_and_oversized_responses_fail(origin: str) -> None:
    with pytest.raises(CommunicationFailed):
        await fetch(make(["127.0.0.1"]), f"GET {origin}/short HTTP/1.1".encode())
    with pytest.raises(CommunicationFailed) as error:
        await fetch(make(["127.0.0.1"], max_response_bytes=1000),
                    f"GET {origin}/big?n=5000 HTTP/1.1".encode())
    assert "limit" in error.value.message


async def test_connection_refused_is_communication_failed() -> None:
    listener = Listener()
    port = listener.port
    listener.close()  # nothing listens there now
    with pytest.raises(CommunicationFailed):
        await fetch(make(["127.0.0.1"]), f"GET http://127.0.0.1:{port}/ HTTP/1.1".encode())


async def test_deny_by_default(denied_listener: Listener) -> None:
    url = f"http://127.0.0.2:{denied_listener.port}/get"
    with pytest.raises(EgressDenied) as error:
        await fetch(make([]), f"GET {url} HTTP/1.1".encode())
    assert error.value.detail["url"] == url
    with pytest.raises(EgressDenied) as error:
        await fetch(make(["127.0.0.1"]), f"GET {url} HTTP/1.1".encode())
    assert "no egress rule allows 127.0.0.2" in error.value.message
    assert not denied_listener.connected()


async def test_metadata_address_needs_an_explicit_rule() -> None:
    request = b"GET http://169.254.169.254/latest/meta-data/ HTTP/1.1"
    for rules in (["0.0.0.0/0"], ["169.0.0.0/8"], ["*.internal"]):
        with pytest.raises(EgressDenied) as error:
            await fetch(make(rules, names={}), request)
        assert "metadata/link-local" in error.value.message or "no egress rule" in (
            error.value.message)
    decision = EgressPolicy(["169.254.169.254"]).decide(
        "169.254.169.254", 80, [ipaddress.ip_address("169.254.169.254")])
    assert decision.allowed  # listed explicitly


async def test_a_name_resolving_to_a_denied_address_is_denied(denied_listener: Listener) -> None:
    names = {"service.test": ["127.0.0.2"], "rebind.example.com": ["127.0.0.1"]}
    with pytest.raises(EgressDenied) as error:
        await fetch(make(["127.0.0.1"], names),
                    f"GET http://service.test:{denied_listener.port}/ HTTP/1.1".encode())
    assert "127.0.0.2" in error.value.message
    # a host-name rule never opens a non-public address (DNS rebinding)
    with pytest.raises(EgressDenied) as error:
        await fetch(make(["rebind.example.com"], names),
                    b"GET http://rebind.example.com/ HTTP/1.1")
    assert "non-public" in error.value.message
    assert not denied_listener.connected()


async def test_a_name_resolving_to_an_allowed_address_connects_to_that_address(
        origin: str) -> None:
    port = origin.rsplit(":", 1)[1]
    _, bodies = await fetch(make(["127.0.0.1"], {"origin.test": ["127.0.0.1"]}),
                                  f"GET http://origin.test:{port}/get HTTP/1.1".encode())
    assert bodies[0].data == b"ok get"


async def test_redirect_to_a_denied_address_is_denied(origin: str,
                                                      denied_listener: Listener) -> None:
    target = f"http://127.0.0.2:{denied_listener.port}/get"
    with pytest.raises(EgressDenied) as error:
        await fetch(make(["127.0.0.1"]), f"GET {origin}/redirect?to={target} HTTP/1.1".encode())
    assert error.value.detail["url"] == target
    assert not denied_listener.connected()
    _, bodies = await fetch(make(["127.0.0.1"]),
                            f"GET {origin}/redirect?to={origin}/get HTTP/1.1".encode())
    assert bodies[0].data == b"ok get"  # an allowed redirect is followed


async def test_matrix_route_feeds_binary_bodies(origin: str) -> None:
    _, bodies = await fetch(make(["127.0.0.1:" + origin.rsplit(":", 1)[1]]),
                            f"GET {origin}/matrix HTTP/1.1".encode())
    assert struct.unpack("<5Q", bodies[0].data) == (2, 1, 2, 3, 4)


def test_rules_are_validated() -> None:
    from pappus.communication.egress import EgressRuleError, parse_rule

    assert parse_rule("10.0.0.0/8:443").port == 443
    assert parse_rule("[::1]:8080").port == 8080
    assert parse_rule("*.example.com").host_pattern == "*.example.com"
    for bad in ("", "10.0.0.0/8:99999", "exa mple.com", "[::1", "a..b"):
        with pytest.raises(EgressRuleError):
            parse_rule(bad)
