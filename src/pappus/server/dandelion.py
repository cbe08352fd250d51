"""Dandelion's BSON wire protocol, alongside the JSON API, so Dandelion clients work unchanged.

Routes (reference §2; the method is ignored, as in Dandelion):

* ``/register/function`` — BSON ``{name, engine_type, context_size, binary,
  input_sets, output_sets[, local_path, min_set_bytes]}``; ``binary`` and
  static item bytes as arrays of int32 (the Rust bson crate's ``Vec<u8>``)
  or BSON binary; ``engine_type`` ``Process``/``Kvm`` → engines ``process``/
  ``kvm``. Answers ``Function registered``.
* ``/register/composition`` — ``{composition: source}``.
* ``/hot/<anything>``, ``/cold/<anything>`` — invocation: exactly ``name``
  (or ``composition``) and ``sets``; sets ``{identifier, items}``, items
  ``{identifier, key (int32/int64, ≤ 2³²-1), data (binary)}``; sets bind by
  position. The answer is what a standard BSON encoder produces for
  ``{sets: [{identifier, items: [{identifier, key: int64, data: binary}]}]}``
  with empty output sets omitted; ``?timings=1`` adds ``timestamps`` (the
  timing record as a JSON string).

Where Dandelion drops the connection (panics), pappus answers with a status
and a one-line text message: malformed BSON 400, unknown engine 400,
duplicate 409, execution errors with their API status.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import bson
from bson.binary import Binary
from bson.errors import BSONError
from bson.int64 import Int64
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from pappus.errors import BadRequest, PappusError, TooLarge
from pappus.model import MAX_KEY, DataSet, Item
from pappus.registry import FunctionRegistration

ENGINE_TYPES = {"Process": "process", "Kvm": "kvm"}
"""Dandelion ``engine_type`` → pappus engine (case-sensitive, as Dandelion's HTTP API)."""
REGISTERED = "Function registered"

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def _text_error(error: PappusError) -> Response:
    return PlainTextResponse(f"{error.type}: {error.message}\n", status_code=error.http_status)


def _guarded(handler: Handler) -> Handler:
    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except PappusError as error:
            return _text_error(error)

    return guarded


def decode_document(data: bytes) -> dict[str, Any]:
    """A BSON document; :class:`BadRequest` if malformed, truncated or followed by bytes."""
    try:
        document = bson.decode(data)
    except (BSONError, ValueError, TypeError, OverflowError) as exc:
        raise BadRequest(f"malformed BSON body: {exc}") from exc
    return document


def _bytes(value: Any, field: str) -> bytes:
    """BSON binary, or an array of int32 0..255 (how the Rust bson crate writes ``Vec<u8>``)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool)
                                       for v in value):
        try:
            return bytes(value)
        except ValueError as exc:
            raise BadRequest(f"{field}: array values must be bytes 0..255") from exc
    raise BadRequest(f"{field} must be BSON binary or an array of int32 bytes")


def decode_function_registration(document: dict[str, Any], *, max_binary_bytes: int,
                                 local_path_root: Path | None) -> FunctionRegistration:
    """Dandelion's ``RegisterFunction`` document → a registration (reference §2.1)."""
    name = document.get("name")
    if not isinstance(name, str):
        raise BadRequest("field name must be a string")
    engine_type = document.get("engine_type")
    if engine_type not in ENGINE_TYPES:
        raise BadRequest(f"engine_type {engine_type!r} is not one of {sorted(ENGINE_TYPES)}",
                         field="engine_type")
    context_size = document.get("context_size")
    if context_size is not None and (not isinstance(context_size, int) or context_size <= 0):
        raise BadRequest("context_size must be a positive integer", field="context_size")
    local_path = document.get("local_path") or ""
    if not isinstance(local_path, str):
        raise BadRequest("local_path must be a string", field="local_path")
    if local_path:
        binary = _read_local(local_path, local_path_root, max_binary_bytes)
    else:
        binary = _bytes(document.get("binary"), "binary")
    if len(binary) > max_binary_bytes:
        raise TooLarge(f"binary exceeds the limit of {max_binary_bytes} bytes")
    inputs: list[str] = []
    static: dict[str, tuple[Item, ...]] = {}
    raw_inputs = document.get("input_sets")
    if not isinstance(raw_inputs, list):
        raise BadRequest("input_sets must be an array of [name, static items or null]")
    for index, entry in enumerate(raw_inputs):
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
            raise BadRequest(f"input_sets[{index}] must be [name, static items or null]")
        set_name, items = entry
        inputs.append(set_name)
        if items is not None:
            if not isinstance(items, list):
                raise BadRequest(f"input_sets[{index}] static items must be an array")
            static[set_name] = tuple(_static_item(item, f"input_sets[{index}]") for item in items)
    outputs = document.get("output_sets")
    if not isinstance(outputs, list) or not all(isinstance(o, str) for o in outputs):
        raise BadRequest("output_sets must be an array of strings")
    return FunctionRegistration(name=name, engine=ENGINE_TYPES[engine_type], binary=binary,
                                input_sets=tuple(inputs), output_sets=tuple(outputs),
                                static_sets=static, context_size=context_size)


def _static_item(item: Any, where: str) -> Item:
    if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
        raise BadRequest(f"{where}: a static item must be [name, bytes]")
    return Item(item[0], 0, _bytes(item[1], f"{where} static item {item[0]!r}"))


def _read_local(path: str, root: Path | None, limit: int) -> bytes:
    if root is None:
        raise BadRequest("local_path is disabled on this worker (set option local_path_root "
                         "to a directory of binaries to allow it)", field="local_path")
    resolved = (root / path).resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise BadRequest(f"local_path {path!r} is outside local_path_root", field="local_path")
    try:
        if resolved.stat().st_size > limit:
            raise TooLarge(f"{path} exceeds the binary limit of {limit} bytes")
        return resolved.read_bytes()
    except OSError as exc:
        raise BadRequest(f"local_path {path!r} cannot be read: {exc.strerror}",
                         field="local_path") from exc


def decode_invocation(document: dict[str, Any]) -> tuple[str | None, str | None,
                                                         list[DataSet | None]]:
    """Dandelion's strict invocation document → (name, composition source, sets by position)."""
    keys = set(document)
    if keys not in ({"name", "sets"}, {"composition", "sets"}):
        raise BadRequest(f"an invocation has exactly the fields name (or composition) and "
                         f"sets, not {sorted(keys)}")
    target = document.get("name", document.get("composition"))
    if not isinstance(target, str):
        raise BadRequest("name/composition must be a string")
    raw_sets = document["sets"]
    if not isinstance(raw_sets, list):
        raise BadRequest("sets must be an array")
    sets: list[DataSet | None] = []
    for index, raw in enumerate(raw_sets):
        if not isinstance(raw, dict) or set(raw) != {"identifier", "items"}:
            raise BadRequest(f"sets[{index}] must be a document with exactly identifier and items")
        if not isinstance(raw["identifier"], str) or not isinstance(raw["items"], list):
            raise BadRequest(f"sets[{index}]: identifier must be a string and items an array")
        items = tuple(_item(item, f"sets[{index}].items[{n}]")
                      for n, item in enumerate(raw["items"]))
        sets.append(DataSet(raw["identifier"], items) if items else None)
    name = document.get("name")
    source = document.get("composition")
    return (name if isinstance(name, str) else None,
            source if isinstance(source, str) else None, sets)


def _item(raw: Any, where: str) -> Item:
    if not isinstance(raw, dict) or set(raw) != {"identifier", "key", "data"}:
        raise BadRequest(f"{where} must be a document with exactly identifier, key and data")
    identifier, key, data = raw["identifier"], raw["key"], raw["data"]
    if not isinstance(identifier, str):
        raise BadRequest(f"{where}.identifier must be a string")
    if isinstance(key, bool) or not isinstance(key, int) or not 0 <= key <= MAX_KEY:
        raise BadRequest(f"{where}.key must be an int32/int64 in 0..2^32-1")
    if not isinstance(data, bytes):
        raise BadRequest(f"{where}.data must be BSON binary")
    return Item(identifier, int(key), bytes(data))


def encode_response(outputs: tuple[DataSet, ...], timings: dict[str, float] | None) -> bytes:
    """The response document, as a standard BSON encoder writes it (reference §2.4)."""
    document: dict[str, Any] = {"sets": [
        {"identifier": data_set.name, "items": [
            {"identifier": item.name, "key": Int64(item.key), "data": Binary(item.data, 0)}
            for item in data_set.items]}
        for data_set in outputs if data_set.items]}
    if timings is not None:
        document["timestamps"] = json.dumps(timings, sort_keys=True)
    return bson.encode(document)


def dandelion_routes(worker: Any, read_body: Callable[[Request], Coroutine[Any, Any, bytes]]
                     ) -> list[Route]:
    """The wire-protocol routes for ``worker`` (a :class:`pappus.worker.Worker`)."""
    import asyncio

    settings = worker.settings

    async def register_function(request: Request) -> Response:
        document = decode_document(await read_body(request))
        registration = decode_function_registration(
            document, max_binary_bytes=settings.max_binary_bytes,
            local_path_root=settings.local_path_root)
        await asyncio.to_thread(worker.registry.add_function, registration)
        return PlainTextResponse(REGISTERED)

    async def register_composition(request: Request) -> Response:
        document = decode_document(await read_body(request))
        source = document.get("composition")
        if set(document) != {"composition"} or not isinstance(source, str):
            raise BadRequest("expected exactly {composition: <source string>}")
        await asyncio.to_thread(worker.registry.add_compositions, source)
        return PlainTextResponse(REGISTERED)

    async def invoke(request: Request) -> Response:
        raw = await read_body(request)
        decoding = time.perf_counter()
        name, source, sets = decode_invocation(decode_document(raw))
        decode_us = (time.perf_counter() - decoding) * 1e6
        if source is not None:
            result = await worker.dispatcher.invoke_source(source, sets)
        else:
            result = await worker.dispatcher.invoke(name or "", sets)
        result.timings.decode_us = decode_us
        timings = result.timings.to_json() if request.query_params.get("timings") else None
        return Response(encode_response(result.outputs, timings))

    methods = ["GET", "POST", "PUT"]
    return [
        Route("/register/function", _guarded(register_function), methods=methods),
        Route("/register/composition", _guarded(register_composition), methods=methods),
        Route("/hot/{rest:path}", _guarded(invoke), methods=methods),
        Route("/cold/{rest:path}", _guarded(invoke), methods=methods),
    ]
