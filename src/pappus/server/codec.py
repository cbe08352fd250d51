"""JSON v1 wire format: decode request bodies with precise errors, encode results.

Every decoder raises :class:`pappus.errors.BadRequest` whose message names
the offending field path (``sets[1].items[0].key``), so a client can fix the
request without guessing. Item data travels as standard base64.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Any

from pappus.errors import BadRequest
from pappus.model import MAX_KEY, DataSet, Item
from pappus.registry import ENGINE_NAMES, FunctionRegistration


def parse_json(body: bytes) -> dict[str, Any]:
    """Parse a request body that must be a strict JSON object.

    Everything JSON forbids or Python cannot hold is ``bad_request``, not a
    500: ``NaN``/``Infinity``, nesting too deep for the decoder, and integers
    too long to convert.
    """
    try:
        value = json.loads(body, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise BadRequest("request body is nested too deeply") from exc
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise BadRequest("request body must be a JSON object")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _field(obj: dict[str, Any], name: str, kind: type | tuple[type, ...], path: str,
           required: bool = True) -> Any:
    if name not in obj or obj[name] is None:
        if required:
            raise BadRequest(f"missing field {path}{name}", field=f"{path}{name}")
        return None
    value = obj[name]
    # bool is an int subclass; never accept true/false for a number.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        expected = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise BadRequest(
            f"field {path}{name} must be of type {expected}, got {type(value).__name__}",
            field=f"{path}{name}",
        )
    if isinstance(value, str) and not _is_unicode(value):
        surrogate = next(ord(c) for c in value if 0xD800 <= ord(c) <= 0xDFFF)
        raise BadRequest(f"field {path}{name} holds a lone surrogate (\\u{surrogate:04x}): "
                         "strings must be valid Unicode", field=f"{path}{name}")
    return value


def _is_unicode(text: str) -> bool:
    """Whether ``text`` has no lone surrogate (JSON's ``"\\ud800"``), so it can be UTF-8."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def decode_base64(text: str, path: str) -> bytes:
    """Strict base64 → bytes; error names ``path``."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"{path} is not valid base64: {exc}", field=path) from exc


def encode_base64(data: bytes) -> str:
    """bytes → standard base64 text."""
    return base64.b64encode(data).decode("ascii")


def decode_items(raw: Any, path: str) -> tuple[Item, ...]:
    """A JSON list of ``{"name", "key", "data"}`` objects → items."""
    if not isinstance(raw, list):
        raise BadRequest(f"{path} must be a list of items", field=path)
    items: list[Item] = []
    for index, entry in enumerate(raw):
        item_path = f"{path}[{index}]."
        if not isinstance(entry, dict):
            raise BadRequest(f"{path}[{index}] must be an object", field=f"{path}[{index}]")
        name = _field(entry, "name", str, item_path, required=False) or ""
        key = _field(entry, "key", int, item_path, required=False) or 0
        if not 0 <= key <= MAX_KEY:
            raise BadRequest(
                f"{item_path}key {key} is outside 0..{MAX_KEY}", field=f"{item_path}key"
            )
        if "text" in entry and "data" not in entry:
            # Convenience for humans with curl: UTF-8 text instead of base64.
            data = _field(entry, "text", str, item_path).encode("utf-8")
        else:
            data = decode_base64(_field(entry, "data", str, item_path), f"{item_path}data")
        items.append(Item(name, key, data))
    return tuple(items)


def decode_registration(body: dict[str, Any], max_binary_bytes: int) -> FunctionRegistration:
    """``POST /v1/functions`` body → :class:`FunctionRegistration`."""
    name = _field(body, "name", str, "")
    engine = _field(body, "engine", str, "")
    if engine not in ENGINE_NAMES:
        raise BadRequest(
            f"engine must be one of {list(ENGINE_NAMES)}, got {engine!r}", field="engine"
        )
    binary_text = _field(body, "binary", str, "")
    if len(binary_text) > (max_binary_bytes * 4) // 3 + 4:
        from pappus.errors import TooLarge

        raise TooLarge(
            f"binary exceeds the limit of {max_binary_bytes} bytes", limit=max_binary_bytes
        )
    binary = decode_base64(binary_text, "binary")
    input_sets = _string_list(body, "input_sets")
    output_sets = _string_list(body, "output_sets")
    static_raw = _field(body, "static_sets", dict, "", required=False) or {}
    static_sets = {
        str(set_name): decode_items(items, f"static_sets.{set_name}")
        for set_name, items in static_raw.items()
    }
    return FunctionRegistration(
        name=name,
        engine=engine,
        binary=binary,
        input_sets=input_sets,
        output_sets=output_sets,
        static_sets=static_sets,
        timeout_ms=_field(body, "timeout_ms", int, "", required=False),
        memory_bytes=_field(body, "memory_bytes", int, "", required=False),
        context_size=_field(body, "context_size", int, "", required=False),
    )


def decode_source(body: dict[str, Any]) -> str:
    """``POST /v1/compositions`` body → the composition source."""
    source: str = _field(body, "source", str, "")
    return source


def _string_list(body: dict[str, Any], name: str) -> tuple[str, ...]:
    values = _field(body, name, list, "", required=False) or []
    for index, value in enumerate(values):
        if not isinstance(value, str):
            raise BadRequest(f"{name}[{index}] must be a string", field=f"{name}[{index}]")
    return tuple(values)


def decode_invocation(
    body: dict[str, Any], input_sets: Sequence[str]
) -> tuple[list[DataSet | None], int | None]:
    """``POST /v1/invoke/{name}`` body → input slots (bound by name) and timeout."""
    raw_sets = _field(body, "sets", list, "", required=False) or []
    slots: list[DataSet | None] = [None] * len(input_sets)
    positions = {name: index for index, name in enumerate(input_sets)}
    for index, raw in enumerate(raw_sets):
        path = f"sets[{index}]."
        if not isinstance(raw, dict):
            raise BadRequest(f"sets[{index}] must be an object", field=f"sets[{index}]")
        set_name = _field(raw, "name", str, path)
        position = positions.get(set_name)
        if position is None:
            raise BadRequest(
                f"{path}name {set_name!r} is not an input set; declared input sets are "
                f"{list(input_sets)}",
                field=f"{path}name",
            )
        if slots[position] is not None:
            raise BadRequest(f"input set {set_name!r} is given twice", field=f"{path}name")
        items = decode_items(_field(raw, "items", list, path, required=False) or [],
                             f"{path}items")
        slots[position] = DataSet(set_name, items)
    timeout_ms = _field(body, "timeout_ms", int, "", required=False)
    if timeout_ms is not None and timeout_ms <= 0:
        raise BadRequest("timeout_ms must be positive", field="timeout_ms")
    return slots, timeout_ms


def _encode_item(item: Item, as_text: bool) -> dict[str, Any]:
    if as_text:
        try:
            return {"name": item.name, "key": item.key, "text": item.data.decode("utf-8")}
        except UnicodeDecodeError:
            pass  # not text: fall back to base64 for this item
    return {"name": item.name, "key": item.key, "data": encode_base64(item.data)}


def encode_sets(sets: Sequence[DataSet], *, as_text: bool = False) -> list[dict[str, Any]]:
    """Output sets → JSON: data as base64, or (``as_text``) as ``text`` when valid UTF-8."""
    return [
        {"name": data_set.name, "items": [_encode_item(i, as_text) for i in data_set.items]}
        for data_set in sets
    ]
