"""Dandelion's preload file: functions and compositions registered when the worker starts.

Format (reference §7.1)::

    {"functions": [{"name": "matmul", "engineType": "Process", "ctxSize": 134217728,
                    "binaryPath": "bin/matmul",
                    "metadata": {"inputSets": ["A"], "outputSets": ["B"],
                                 "minSetBytes": [0]}}],
     "compositions": ["composition c (x) => (y) { ... }"]}

Engine types are case-insensitive; ``binaryPath`` is relative to the worker's
working directory. As in Dandelion, an entry with an empty name, engine or
path, or a zero ``ctxSize``, makes the whole file invalid (nothing is
registered); unlike Dandelion that is an error at start-up, not a silent
skip. Entries already registered (the registry persists across restarts) are
skipped; any other per-entry failure is logged and reported, and the others
are still registered.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pappus.config import ConfigError, read_json_object
from pappus.errors import Conflict, PappusError
from pappus.registry import FunctionRegistration, Registry

logger = logging.getLogger(__name__)


@dataclass
class PreloadReport:
    """What a preload did: registered, already present, and failed entries (with reasons)."""

    registered: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Function:
    name: str
    engine: str
    context_size: int
    binary_path: Path
    input_sets: tuple[str, ...]
    output_sets: tuple[str, ...]


def read_preload(path: Path) -> tuple[list[_Function], list[str]]:
    """Parse and check the file; :class:`ConfigError` naming the problem if it is invalid."""
    raw = read_json_object(path, "preload file")
    functions = [_function(path, index, entry)
                 for index, entry in enumerate(_list(raw, "functions", path))]
    compositions = _list(raw, "compositions", path)
    if not all(isinstance(source, str) for source in compositions):
        raise ConfigError(f"preload file {path}: compositions must be strings of source")
    return functions, compositions


def _list(raw: dict[str, Any], key: str, path: Path) -> list[Any]:
    value = raw.get(key, [])
    if not isinstance(value, list):
        raise ConfigError(f"preload file {path}: {key!r} must be a list")
    return value


def _function(path: Path, index: int, entry: Any) -> _Function:
    where = f"preload file {path}, functions[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be an object")
    name, engine = entry.get("name"), entry.get("engineType")
    context_size, binary = entry.get("ctxSize"), entry.get("binaryPath")
    metadata = entry.get("metadata") or {}
    if not (isinstance(name, str) and name and isinstance(engine, str) and engine
            and isinstance(binary, str) and binary):
        raise ConfigError(f"{where}: name, engineType and binaryPath must be non-empty strings")
    if not isinstance(context_size, int) or isinstance(context_size, bool) or context_size <= 0:
        raise ConfigError(f"{where}: ctxSize must be a positive integer")
    inputs, outputs = metadata.get("inputSets", []), metadata.get("outputSets", [])
    if not (isinstance(inputs, list) and all(isinstance(s, str) for s in inputs)
            and isinstance(outputs, list) and all(isinstance(s, str) for s in outputs)):
        raise ConfigError(f"{where}: metadata.inputSets/outputSets must be lists of strings")
    return _Function(name, engine.lower(), context_size, Path(binary), tuple(inputs),
                     tuple(outputs))


def apply_preload(path: Path, registry: Registry, max_binary_bytes: int) -> PreloadReport:
    """Register everything in the preload file at ``path`` that is not registered yet."""
    functions, compositions = read_preload(path)
    report = PreloadReport()
    for function in functions:
        try:
            if function.binary_path.stat().st_size > max_binary_bytes:
                raise ConfigError(f"{function.binary_path} exceeds the binary limit")
            binary = function.binary_path.read_bytes()
            registry.add_function(FunctionRegistration(
                name=function.name, engine=function.engine, binary=binary,
                input_sets=function.input_sets, output_sets=function.output_sets,
                context_size=function.context_size))
            report.registered.append(function.name)
        except Conflict:
            report.present.append(function.name)
        except (PappusError, OSError, ConfigError) as exc:
            message = f"preload: function {function.name!r} not registered: {exc}"
            logger.error(message)
            report.failed.append(message)
    for index, source in enumerate(compositions):
        try:
            entries = registry.add_compositions(source)
            report.registered.extend(entry.record.name for entry in entries)
        except Conflict:
            report.present.append(f"compositions[{index}]")
        except PappusError as exc:
            message = f"preload: compositions[{index}] not registered: {exc}"
            logger.error(message)
            report.failed.append(message)
    return report
