"""Helpers shared by the process-engine tests: specs, limits, a reference function."""

from __future__ import annotations

import hashlib
import os
import struct
import time
from pathlib import Path

from pappus.engines.base import FunctionSpec, InvocationResult, Limits
from pappus.engines.process import ProcessArtifact, ProcessEngine
from pappus.engines.process.clone_pool import ClonePool
from pappus.model import DataSet, Item
from tests.conftest import eventually

MiB = 1 << 20
MEMORY = 128 * MiB
"""The memory bound of most invocations: the context is exactly this big."""
HOSTILE_OUTPUTS = ("out", "more")


def spec(name: str, binary: bytes, inputs: tuple[str, ...] = ("in",),
         outputs: tuple[str, ...] = ("out",)) -> FunctionSpec:
    return FunctionSpec(name, "process", binary, hashlib.sha256(binary).hexdigest(), inputs,
                        outputs)


def limits(timeout_s: float = 5.0, memory: int = MEMORY, output: int = MiB) -> Limits:
    return Limits.from_timeout(timeout_s, memory, output)


def prepare(engine: ProcessEngine, name: str, binary: bytes,
            outputs: tuple[str, ...] = ("out",)) -> ProcessArtifact:
    return engine.prepare(spec(name, binary, outputs=outputs), None)


def run_mode(engine: ProcessEngine, hostile: ProcessArtifact, mode: str,
             bounds: Limits | None = None) -> InvocationResult:
    """Invoke the hostile function in ``mode`` (its first input item's data)."""
    return engine.invoke(hostile, [DataSet("in", (Item("mode", 0, mode.encode()),))],
                         bounds or limits())


def matrix(rows: int, values: list[int]) -> bytes:
    return struct.pack(f"<{1 + len(values)}q", rows, *values)


def gram(rows: int, values: list[int]) -> list[int]:
    """What the SDK's matmul example computes: [rows] ++ A·Aᵀ."""
    cols = len(values) // rows
    a = [values[i * cols:(i + 1) * cols] for i in range(rows)]
    return [rows, *(sum(x * y for x, y in zip(a[i], a[j], strict=True))
                    for i in range(rows) for j in range(rows))]


def check_matmul(engine: ProcessEngine, artifact: ProcessArtifact, seed: int) -> None:
    """Run the matmul example on a matrix derived from ``seed`` and check every output value."""
    rows = 1 + seed % 4
    values = [(seed * 7919 + i * 104729) % 2001 - 1000 for i in range(rows * 3)]
    result = engine.invoke(artifact, [DataSet("in", (Item("m", seed, matrix(rows, values)),))],
                           limits())
    assert result.exit_code == 0
    (out,) = result.outputs
    assert out.name == "out"
    (item,) = out.items
    assert item.key == seed
    assert list(struct.unpack(f"<{len(item.data) // 8}q", item.data)) == gram(rows, values)


def is_zygote(pid: int) -> bool:
    """Whether ``pid`` is a process engine's zygote (it starts runners, it is not one)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[1:2] == [b"zygote"]
    except OSError:
        return False


def runner_children() -> dict[int, str]:
    """Our child processes that are runners (waiting, running or zombie): pid → state letter.

    Zygotes (which clone runners) are not counted.
    """
    found: dict[int, str] = {}
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            try:
                stat = Path(f"/proc/{child}/stat").read_text()
            except OSError:
                continue
            # "pid (comm) state ...": comm is the runner file's name, also for a zombie.
            command, state = stat.split("(", 1)[1].rsplit(")", 1)
            if command.startswith("runner-") and not is_zygote(int(child)):
                found[int(child)] = state.split()[0]
    return found


def assert_no_stray_runners(waiting_at_most: int | None = None) -> None:
    """Every runner child is a warm one blocked waiting for work: none runs on, none is a zombie.

    A runner just started by a pool is briefly running before it blocks, so the
    check is retried for up to a second; a stray one stays running or a zombie.
    """
    give_up = time.monotonic() + 1.0
    while set((children := runner_children()).values()) - {"S"} and time.monotonic() < give_up:
        time.sleep(0.01)
    assert set(children.values()) <= {"S"}, f"runners running on or unreaped: {children}"
    if waiting_at_most is not None:
        assert len(children) <= waiting_at_most, f"more runners than warm ones: {children}"


def wait_until_full(pool: ClonePool) -> None:
    """Wait (up to 5 s) until ``pool`` has as many runners ready as it keeps."""
    eventually(lambda: len(pool.waiting()) >= pool.size, describe=lambda: pool)


def code_bytes(binary: bytes, start: int, end: int) -> bytes:
    """The bytes of ELF file ``binary`` that load at ``[start, end)`` (zero where none do)."""
    phoff, = struct.unpack_from("<Q", binary, 32)
    phentsize, phnum = struct.unpack_from("<HH", binary, 54)
    out = bytearray(end - start)
    for index in range(phnum):
        p_type, _flags, offset, vaddr, _paddr, filesz, _memsz, _align = struct.unpack_from(
            "<IIQQQQQQ", binary, phoff + index * phentsize)
        low, high = max(start, vaddr), min(end, vaddr + filesz)
        if p_type == 1 and low < high:  # PT_LOAD
            out[low - start:high - start] = binary[offset + low - vaddr:offset + high - vaddr]
    return bytes(out)
