"""Dandelion's item formats for the ``HTTP`` function (reference §6).

Request item (text)::

    METHOD absolute-URL VERSION
    name:value            (header lines, split at the first ':'; value kept as is)
                          (an empty line)
    body...               (everything after the first empty line)

Unlike Dandelion, ``\\r\\n`` line endings are accepted as well. Header item
of a response: ``VERSION CODE REASON\\n`` then one ``name:value\\n`` per
header (lower-case names, no space after the colon). The body item is the raw
body.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import urlsplit

from pappus.errors import BadRequest

VERSIONS = ("HTTP/0.9", "HTTP/1.0", "HTTP/1.1", "HTTP/2.0", "HTTP/3.0")
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HEADER_VALUE_FORBIDDEN = re.compile(r"[\x00\r\n]")


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One parsed request item."""

    method: str
    url: str
    version: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


def parse_request(item_name: str, data: bytes) -> HttpRequest:
    """Parse a request item; :class:`BadRequest` names the item and what is wrong."""

    def bad(reason: str) -> BadRequest:
        return BadRequest(f"HTTP request item {item_name!r}: {reason}", item=item_name)

    head, separator, body = _split_head(data)
    if not separator:
        body = b""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad("the request line and headers are not UTF-8") from exc
    lines = text.split("\n")
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    parts = lines[0].split()
    if len(parts) != 3:
        raise bad(f"the first line must be 'METHOD URL VERSION', not {lines[0][:200]!r}")
    method, url, version = parts
    if not _TOKEN.match(method):
        raise bad(f"{method[:50]!r} is not a valid HTTP method")
    if version not in VERSIONS:
        raise bad(f"unknown HTTP version {version[:20]!r} (expected one of {', '.join(VERSIONS)})")
    split = urlsplit(url)
    if split.scheme not in ("http", "https") or not split.hostname:
        raise bad(f"{url[:200]!r} is not an absolute http(s) URL")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            raise bad(f"header line {line[:200]!r} has no ':'")
        if not _TOKEN.match(name):
            raise bad(f"{name[:50]!r} is not a valid header name")
        if _HEADER_VALUE_FORBIDDEN.search(value):
            raise bad(f"the value of header {name!r} contains a control character")
        headers.append((name, value))
    return HttpRequest(method, url, version, tuple(headers), body)


def _split_head(data: bytes) -> tuple[bytes, bool, bytes]:
    """Split at the first empty line (``\\n\\n`` or ``\\r\\n\\r\\n``, whichever comes first)."""
    candidates = [(data.find(sep), sep) for sep in (b"\n\n", b"\r\n\r\n", b"\n\r\n")]
    found = [(index, sep) for index, sep in candidates if index >= 0]
    if not found:
        return data.rstrip(b"\r\n"), False, b""
    index, sep = min(found)
    return data[:index], True, data[index + len(sep):]


def format_header_item(http_version: str, status: int,
                       headers: list[tuple[str, str]]) -> bytes:
    """``HTTP/1.1 200 OK\\n`` then ``name:value\\n`` lines, as Dandelion writes them."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    lines = [f"{http_version} {status} {reason}\n"]
    lines.extend(f"{name.lower()}:{value}\n" for name, value in headers)
    return "".join(lines).encode("utf-8", "replace")
