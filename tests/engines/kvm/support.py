"""Helpers shared by the kvm-engine tests: specs, limits, a reference computation."""

from __future__ import annotations

import hashlib
import struct

from pappus.engines.base import Engine, FunctionSpec, InvocationResult, Limits
from pappus.engines.kvm import KvmArtifact, KvmEngine
from pappus.model import DataSet, Item

MiB = 1 << 20
MEMORY = 128 * MiB
HOSTILE_OUTPUTS = ("out",)


def spec(
    name: str,
    binary: bytes,
    inputs: tuple[str, ...] = ("in",),
    outputs: tuple[str, ...] = ("out",),
    engine: str = "kvm",
) -> FunctionSpec:
    return FunctionSpec(name, engine, binary, hashlib.sha256(binary).hexdigest(), inputs, outputs)


def limits(timeout_s: float = 5.0, memory: int = MEMORY, output: int = MiB) -> Limits:
    return Limits.from_timeout(timeout_s, memory, output)


def prepare(
    engine: KvmEngine, name: str, binary: bytes, outputs: tuple[str, ...] = ("out",)
) -> KvmArtifact:
    return engine.prepare(spec(name, binary, outputs=outputs), None)


def run_mode(
    engine: Engine,
    hostile: KvmArtifact,
    mode: str,
    address: int | None = None,
    bounds: Limits | None = None,
) -> InvocationResult:
    """Invoke the hostile function in ``mode``, passing ``address`` as its second item."""
    items = [Item("mode", 0, mode.encode())]
    if address is not None:
        items.append(Item("address", 0, struct.pack("<Q", address)))
    return engine.invoke(hostile, [DataSet("in", tuple(items))], bounds or limits())


def matrix(rows: int, values: list[int]) -> bytes:
    return struct.pack(f"<{1 + len(values)}q", rows, *values)


def gram(rows: int, values: list[int]) -> list[int]:
    """What the SDK's matmul example computes: [rows] ++ A·Aᵀ."""
    cols = len(values) // rows
    a = [values[i * cols : (i + 1) * cols] for i in range(rows)]
    return [
        rows,
        *(
            sum(x * y for x, y in zip(a[i], a[j], strict=True))
            for i in range(rows)
            for j in range(rows)
        ),
    ]


def check_matmul(engine: Engine, artifact: KvmArtifact, seed: int) -> None:
    """Run matmul on a matrix derived from ``seed`` and check every output value."""
    rows = 1 + seed % 4
    values = [(seed * 7919 + i * 104729) % 2001 - 1000 for i in range(rows * 3)]
    result = engine.invoke(
        artifact, [DataSet("in", (Item("m", seed, matrix(rows, values)),))], limits()
    )
    assert result.exit_code == 0
    (out,) = result.outputs
    (item,) = out.items
    assert item.key == seed
    assert list(struct.unpack(f"<{len(item.data) // 8}q", item.data)) == gram(rows, values)
