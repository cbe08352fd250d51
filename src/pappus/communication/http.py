"""The ``HTTP`` communication function: trusted I/O on behalf of pure compute functions.

``function HTTP (requests) => (headers, bodies);`` — every item of
``requests`` is one request in Dandelion's text format
(:mod:`.http_items`); the response's header item and body item keep the
request item's name and key. Requests run concurrently on the event loop
(never on a compute slot), at most ``io_concurrency`` at once per worker,
through one pooled ``httpx`` client (HTTP/1.1, and HTTP/2 where the server
offers it over TLS).

Every destination — the first one and every redirect — is checked against the
:class:`~.egress.EgressPolicy` on the addresses the host resolves to, and the
connection goes to exactly the checked address (the URL is rewritten to the
address; ``Host`` and TLS SNI/verification keep the name), so a second DNS
answer cannot redirect it. Proxies from the environment are ignored for the
same reason. HTTP error statuses are data, not errors; a malformed request
item is ``bad_request``, a denied destination ``egress_denied``, and a
connection failure, timeout, oversized or truncated response
``communication_failed``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from pappus.communication.egress import EgressPolicy, IPAddress
from pappus.communication.http_items import HttpRequest, format_header_item, parse_request
from pappus.composition import Signature
from pappus.errors import CommunicationFailed, EgressDenied, first_error
from pappus.model import DataSet, Item

MAX_REDIRECTS = 10
REDIRECT_CODES = (301, 302, 303, 307, 308)
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]
"""Resolves a host name and port to addresses (tests substitute their own DNS)."""


async def resolve_with_system(host: str, port: int) -> list[IPAddress]:
    """The system resolver (``getaddrinfo``), on the event loop's executor."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return []
    found: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(sockaddr[0])
        if address not in found:
            found.append(address)
    return found


class HttpFunction:
    """The ``HTTP`` system function. Create and use inside one event loop; ``await aclose()``."""

    name = "HTTP"
    signature = Signature("HTTP", ("requests",), ("headers", "bodies"))

    def __init__(self, policy: EgressPolicy, *, timeout_s: float, max_response_bytes: int,
                 io_concurrency: int, resolver: Resolver | None = None) -> None:
        self.policy = policy
        self.timeout_s = timeout_s
        self.max_response_bytes = max_response_bytes
        self.io_concurrency = io_concurrency
        self._resolve = resolver or resolve_with_system
        self._semaphore: asyncio.Semaphore | None = None
        self._client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"<HttpFunction concurrency={self.io_concurrency} {self.policy!r}>"

    def _http(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        if self._client is None or self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.io_concurrency)
            self._client = httpx.AsyncClient(
                http2=True, trust_env=False, follow_redirects=False,
                limits=httpx.Limits(max_connections=self.io_concurrency * 4))
        return self._client, self._semaphore

    async def aclose(self) -> None:
        """Close pooled connections."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def run(self, inputs: Sequence[DataSet | None], deadline: float) -> list[DataSet | None]:
        """Send every request item of ``inputs[0]``; one header and one body item each."""
        requests = inputs[0].items if inputs and inputs[0] is not None else ()
        parsed = [parse_request(item.name, item.data) for item in requests]  # all or none
        try:
            async with asyncio.TaskGroup() as group:  # one failure cancels the others
                tasks = [group.create_task(self._fetch(request, deadline)) for request in parsed]
        except BaseExceptionGroup as failures:
            raise first_error(failures) from None
        headers, bodies = [], []
        for item, task in zip(requests, tasks, strict=True):
            header, body = task.result()
            headers.append(Item(item.name, item.key, header))
            bodies.append(Item(item.name, item.key, body))
        return [DataSet("headers", tuple(headers)), DataSet("bodies", tuple(bodies))]

    async def _fetch(self, request: HttpRequest, deadline: float) -> tuple[bytes, bytes]:
        client, semaphore = self._http()
        async with semaphore:
            method, url, body = request.method, request.url, request.body
            headers = [(name, value.strip()) for name, value in request.headers]
            for _hop in range(MAX_REDIRECTS + 1):
                response, content = await self._send_once(client, method, url, headers=headers,
                                                           body=body, deadline=deadline)
                location = response.headers.get("location")
                if response.status_code not in REDIRECT_CODES or location is None:
                    version = "HTTP/2.0" if response.http_version == "HTTP/2" else (
                        response.http_version)
                    header = format_header_item(version, response.status_code,
                                                list(response.headers.multi_items()))
                    return header, content
                url = urljoin(url, location)
                if response.status_code == 303 or (
                        response.status_code in (301, 302) and method == "POST"):
                    method, body = "GET", b""
                    headers = [(n, v) for n, v in headers if n.lower() != "content-length"]
            raise CommunicationFailed(f"{request.url}: more than {MAX_REDIRECTS} redirects",
                                      url=request.url)

    async def _send_once(self, client: httpx.AsyncClient, method: str, url: str, *,
                         headers: list[tuple[str, str]], body: bytes,
                         deadline: float) -> tuple[httpx.Response, bytes]:
        split = urlsplit(url)
        host = split.hostname or ""
        port = split.port or (443 if split.scheme == "https" else 80)
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        addresses = [literal] if literal is not None else await self._resolve(host, port)
        decision = self.policy.decide(host, port, addresses)
        if not decision.allowed:
            raise EgressDenied(f"request to {url} denied: {decision.reason}", url=url,
                               reason=decision.reason)
        target = addresses[0]
        netloc = f"[{target}]" if target.version == 6 else str(target)
        pinned = urlunsplit((split.scheme, f"{netloc}:{port}", split.path or "/", split.query,
                             ""))
        send_headers = [(n, v) for n, v in headers if n.lower() != "host"]
        send_headers.append(("Host", split.netloc.rpartition("@")[2]))
        remaining = min(self.timeout_s, deadline - time.monotonic())
        if remaining <= 0:
            raise CommunicationFailed(f"{url}: no time left before the invocation's deadline",
                                      url=url)
        extensions = {"sni_hostname": host, "timeout": httpx.Timeout(remaining).as_dict()}
        outgoing = client.build_request(method, pinned, headers=send_headers, content=body,
                                        extensions=extensions)
        try:
            async with asyncio.timeout(remaining):
                response = await client.send(outgoing, stream=True)
                try:
                    content = await self._read_limited(response, url)
                finally:
                    await response.aclose()
        except TimeoutError as exc:
            raise CommunicationFailed(f"{url}: no complete response within {remaining:.3g} s",
                                      url=url) from exc
        except httpx.HTTPError as exc:
            raise CommunicationFailed(f"{url}: {type(exc).__name__}: {exc}", url=url) from exc
        return response, content

    async def _read_limited(self, response: httpx.Response, url: str) -> bytes:
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_response_bytes:
            raise CommunicationFailed(f"{url}: the response declares {declared} bytes, more than "
                                      f"the limit of {self.max_response_bytes}", url=url)
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():  # decoded, as a client would read it
            size += len(chunk)
            if size > self.max_response_bytes:
                raise CommunicationFailed(f"{url}: the response exceeds the limit of "
                                          f"{self.max_response_bytes} bytes", url=url)
            chunks.append(chunk)
        content = b"".join(chunks)
        if declared is not None and declared.isdigit() and int(declared) != len(content) and (
                "content-encoding" not in response.headers):
            raise CommunicationFailed(f"{url}: Content-Length {declared} but {len(content)} bytes "
                                      "received", url=url)
        return content
