"""Dandelion's BSON wire protocol on a real worker (reference §2 and the §9 server tests).

Functions are the SDK's matmul on the process engine, registered exactly as a
Dandelion client does (engine_type Process, binary as an array of int32).
"""

from __future__ import annotations

import json
import platform
import random
import struct
import sys
from collections.abc import Iterator

import bson
import httpx
import pytest
from bson.binary import Binary
from bson.int64 import Int64

from pappus.model import DataSet, Item
from pappus.server.dandelion import encode_response
from tests.server_process import ServerProcess

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or platform.machine() != "x86_64",
    reason="registers Dandelion 'Process' functions, which need the process engine")

CHAIN = """
function matmul (InMats) => (OutMats);
composition chain (A) => (B) {
    matmul (InMats = all A) => (M = OutMats);
    matmul (InMats = all M) => (B = OutMats);
}
"""


def ones_3x3() -> bytes:
    return struct.pack("<10Q", 3, *([1] * 9))


def invocation(name: str, *sets: tuple[str, list[tuple[str, int, bytes]]]) -> bytes:
    return bson.encode({"name": name, "sets": [
        {"identifier": set_name, "items": [
            {"identifier": ident, "key": key, "data": Binary(data)} for ident, key, data in items]}
        for set_name, items in sets]})


@pytest.fixture(scope="module")
def matmul_binary(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    from pappus import sdk

    build = tmp_path_factory.mktemp("wire") / "matmul"
    sdk.build_function([sdk.example_source("matmul")], build)
    return build.read_bytes()


def register(client: httpx.Client, binary: bytes) -> None:
    registration = bson.encode({
        "name": "matmul", "context_size": Int64(0x8020000), "engine_type": "Process",
        "binary": list(binary),  # Vec<u8> as the Rust bson crate writes it
        "input_sets": [["InMats", None]], "output_sets": ["OutMats"]})
    answer = client.post("/register/function", content=registration)
    assert (answer.status_code, answer.text) == (200, "Function registered")
    answer = client.post("/register/composition", content=bson.encode({"composition": CHAIN}))
    assert (answer.status_code, answer.text) == (200, "Function registered")


def check_invocations(client: httpx.Client) -> None:
    for path, name, expected in (("/hot/matmul", "matmul", 3), ("/cold/matmul", "matmul", 3),
                                 ("/hot/anything", "chain", 27)):
        answer = client.post(path, content=invocation(name, ("whatever", [("m", 0, ones_3x3())])))
        assert answer.status_code == 200, answer.text
        document = bson.decode(answer.content)
        (out,) = document["sets"]
        (item,) = out["items"]
        assert len(item["data"]) == (9 + 1) * 8
        assert struct.unpack_from("<2Q", item["data"]) == (3, expected)
        assert isinstance(item["key"], Int64)


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory, matmul_binary: bytes) -> Iterator[str]:
    server = ServerProcess(tmp_path_factory.mktemp("wire-data"))
    base = server.start()
    try:
        with httpx.Client(base_url=base) as client:
            register(client, matmul_binary)
        yield base
    finally:
        server.stop()


def test_response_bytes_are_a_standard_encoding() -> None:
    encoded = encode_response((DataSet("out", (Item("i", 7, b"ab"),)), DataSet("empty", ())),
                              None)
    # Hand-assembled: {sets: [{identifier: "out", items: [{identifier: "i", key: int64 7,
    # data: binary subtype 0 "ab"}]}]}; the empty set is omitted.
    item = (b"\x02identifier\x00" + struct.pack("<i", 2) + b"i\x00"
            + b"\x12key\x00" + struct.pack("<q", 7)
            + b"\x05data\x00" + struct.pack("<i", 2) + b"\x00ab")
    item_doc = struct.pack("<i", len(item) + 5) + item + b"\x00"
    items = b"\x030\x00" + item_doc
    items_doc = struct.pack("<i", len(items) + 5) + items + b"\x00"
    set_body = (b"\x02identifier\x00" + struct.pack("<i", 4) + b"out\x00"
                + b"\x04items\x00" + items_doc)
    set_doc = struct.pack("<i", len(set_body) + 5) + set_body + b"\x00"
    sets = b"\x030\x00" + set_doc
    sets_doc = struct.pack("<i", len(sets) + 5) + sets + b"\x00"
    body = b"\x04sets\x00" + sets_doc
    assert encoded == struct.pack("<i", len(body) + 5) + body + b"\x00"
    assert encoded == bson.encode({"sets": [{"identifier": "out", "items": [
        {"identifier": "i", "key": Int64(7), "data": Binary(b"ab", 0)}]}]})


def test_invoke_function_and_chain_over_http1(url: str) -> None:
    with httpx.Client(base_url=url) as client:
        check_invocations(client)


def test_register_invoke_and_chain_over_http2_and_http1(
        tmp_path_factory: pytest.TempPathFactory, matmul_binary: bytes) -> None:
    server = ServerProcess(tmp_path_factory.mktemp("wire-h2"), "--http2")
    base = server.start()
    try:
        with httpx.Client(base_url=base, http1=False, http2=True) as client:
            register(client, matmul_binary)
            check_invocations(client)
            assert client.post("/hot/x", content=b"junk").http_version == "HTTP/2"
        with httpx.Client(base_url=base) as client:  # the same port still speaks HTTP/1.1
            check_invocations(client)
            answer = client.post("/hot/x", content=b"junk")
            assert (answer.http_version, answer.status_code) == ("HTTP/1.1", 400)
    finally:
        server.stop()


def test_single_use_composition_and_timings(url: str) -> None:
    source = CHAIN.replace("composition chain", "composition once")
    body = bson.encode({"composition": source, "sets": [
        {"identifier": "", "items": [{"identifier": "", "key": 0, "data": Binary(ones_3x3())}]}]})
    answer = httpx.post(url + "/hot/x?timings=1", content=body)
    assert answer.status_code == 200, answer.text
    document = bson.decode(answer.content)
    assert struct.unpack_from("<2Q", document["sets"][0]["items"][0]["data"]) == (3, 27)
    recorded = json.loads(document["timestamps"])
    assert recorded["functions"] == 2 and recorded["run_us"] > 0 and recorded["decode_us"] > 0
    listed = httpx.get(url + "/v1/compositions").json()["compositions"]
    assert [c["name"] for c in listed] == ["chain"]  # not registered


def test_errors_are_statuses_with_text(url: str) -> None:
    unknown_engine = bson.encode({"name": "f", "engine_type": "Wasm", "binary": [],
                                  "input_sets": [], "output_sets": []})
    answer = httpx.post(url + "/register/function", content=unknown_engine)
    assert answer.status_code == 400 and "engine_type" in answer.text
    duplicate = httpx.post(url + "/register/composition",
                           content=bson.encode({"composition": CHAIN}))
    assert duplicate.status_code == 409 and duplicate.text.startswith("conflict:")
    missing = httpx.post(url + "/hot/x", content=invocation("nope", ("a", [])))
    assert missing.status_code == 404 and missing.text.startswith("not_found:")
    failing = httpx.post(url + "/hot/x", content=invocation(
        "matmul", ("a", [("m", 0, b"\x01" * 8)])))  # matmul exits -3
    assert failing.status_code == 422 and "exited with code -3" in failing.text
    local = bson.encode({"name": "g", "engine_type": "Process", "binary": [],
                         "local_path": "/etc/passwd", "input_sets": [], "output_sets": []})
    answer = httpx.post(url + "/register/function", content=local)
    assert answer.status_code == 400 and "local_path is disabled" in answer.text


def test_two_hundred_malformed_bodies_get_400(url: str) -> None:
    good = invocation("matmul", ("s", [("m", 0, ones_3x3())]))
    rng = random.Random(4)
    truncated = [good[:cut] for cut in range(len(good))]  # every truncation, including empty
    structural = [bson.encode(doc) for doc in (
        {"name": "matmul"}, {"sets": []}, {"name": "matmul", "sets": [], "extra": 1},
        {"name": 5, "sets": []}, {"name": "matmul", "sets": {}},
        {"name": "matmul", "composition": "x", "sets": []},
        {"name": "matmul", "sets": [1]}, {"name": "matmul", "sets": [{"identifier": "s"}]},
        {"name": "matmul", "sets": [{"identifier": 1, "items": []}]},
        {"name": "matmul", "sets": [{"identifier": "s", "items": [{"identifier": "i"}]}]},
        {"name": "matmul", "sets": [{"identifier": "s", "items": [
            {"identifier": "i", "key": -1, "data": Binary(b"")}]}]},
        {"name": "matmul", "sets": [{"identifier": "s", "items": [
            {"identifier": "i", "key": Int64(1 << 33), "data": Binary(b"")}]}]},
        {"name": "matmul", "sets": [{"identifier": "s", "items": [
            {"identifier": "i", "key": 0, "data": "text"}]}]},
        {"name": "matmul", "sets": [{"identifier": "s", "items": [
            {"identifier": "i", "key": 1.5, "data": Binary(b"")}]}]})]
    structural += [good + b"\x00", good + good, struct.pack("<i", len(good) + 1) + good[4:],
                   struct.pack("<i", 3) + good[4:], good[:-1] + b"\x01"]
    bodies = truncated + structural
    while len(bodies) < 200:  # random garbage with a plausible length prefix
        tail = rng.randbytes(rng.randint(1, 64))
        bodies.append(struct.pack("<i", len(tail) + 4) + tail)
    assert len(bodies) >= 200
    with httpx.Client(base_url=url) as client:
        for body in bodies:
            answer = client.post("/hot/matmul", content=body)
            assert answer.status_code == 400, (body[:40], answer.status_code, answer.text)
            assert answer.text.startswith("bad_request:")
        assert client.post("/hot/matmul", content=good).status_code == 200  # still serving
