"""The runner's own code is out of the function's reach.

The filter is installed before the context arrives and lets the runner's
set-up code make the runner's calls; the runner unmaps that code before it
jumps to the function (see runner.c). These tests aim at the runner's code
from a real function in a real runner: unmapping it, jumping into it, and
jumping to the one ``syscall`` left mapped (on the final page) with other
calls or arguments.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from pappus.engines.process import ProcessArtifact, ProcessEngine
from pappus.engines.process.runner import RunnerLayout, ensure_runner, runner_layout
from pappus.errors import ForbiddenSyscall, SandboxCrash
from pappus.model import DataSet, Item
from tests.engines.process.support import check_matmul, code_bytes, limits

MUNMAP, MMAP = 11, 9
UNMAP_THEN_SYSCALL = b"\xb8\x0b\x00\x00\x00\x0f\x05"  # mov $11, %eax; syscall (enter_function)


@pytest.fixture(scope="module")
def runner(runner_dir: Path) -> tuple[bytes, RunnerLayout]:
    binary = ensure_runner(runner_dir).read_bytes()
    return binary, runner_layout(binary)


def attack(engine: ProcessEngine, hostile: ProcessArtifact, mode: str,
           *values: int) -> None:
    given = struct.pack("<4Q", *values)
    engine.invoke(hostile, [DataSet("in", (Item("mode", 0, mode.encode()),
                                           Item("given", 0, given)))], limits())


def final_syscall(binary: bytes, layout: RunnerLayout) -> int:
    """The address of the final page's ``syscall`` instruction (the unmap's)."""
    code = code_bytes(binary, layout.final_start, layout.final_end)
    assert code.count(UNMAP_THEN_SYSCALL) == 1
    return layout.final_start + code.index(UNMAP_THEN_SYSCALL) + 5


def test_the_function_cannot_unmap_the_runner_code_itself(
        process_engine: ProcessEngine, hostile: ProcessArtifact,
        runner: tuple[bytes, RunnerLayout]) -> None:
    _, layout = runner
    with pytest.raises(ForbiddenSyscall) as caught:
        attack(process_engine, hostile, "runner_unmap", 0, 0, layout.setup_start,
               layout.setup_length)
    assert caught.value.detail["name"] == "munmap"
    address = int(caught.value.detail["address"], 16)
    assert any(s.executable and s.address <= address < s.end for s in hostile.image.segments)


@pytest.mark.parametrize("offset", [0x1000, 0x1008])
def test_the_set_up_code_is_gone_when_the_function_runs(
        process_engine: ProcessEngine, hostile: ProcessArtifact,
        runner: tuple[bytes, RunnerLayout], offset: int) -> None:
    _, layout = runner
    target = layout.setup_start + offset  # the runner's _start and its first code
    assert target < layout.final_start
    with pytest.raises(SandboxCrash) as caught:
        attack(process_engine, hostile, "jump", target, MMAP, 0, 4096)
    assert caught.value.detail["signal"] == "SIGSEGV"
    assert int(caught.value.detail["rip"], 16) == target
    assert int(caught.value.detail["address"], 16) == target


@pytest.mark.parametrize(("number", "first", "second", "name"), [
    (MMAP, 0, 4096, "mmap"),
    (MUNMAP, 0x10000, 0x1000, "munmap"),  # the function's own memory
    (59, 0, 0, "execve"),
])
def test_the_final_pages_syscall_makes_nothing_else(
        process_engine: ProcessEngine, hostile: ProcessArtifact,
        runner: tuple[bytes, RunnerLayout], number: int, first: int, second: int,
        name: str) -> None:
    binary, layout = runner
    site = final_syscall(binary, layout)
    with pytest.raises(ForbiddenSyscall) as caught:
        attack(process_engine, hostile, "jump", site, number, first, second)
    assert caught.value.detail["name"] == name
    assert layout.final_start < int(caught.value.detail["address"], 16) <= layout.final_end


def test_the_engine_serves_on_after_the_attacks(
        process_engine: ProcessEngine, hostile: ProcessArtifact, matmul: ProcessArtifact,
        runner: tuple[bytes, RunnerLayout]) -> None:
    binary, layout = runner
    for seed in range(3):
        with pytest.raises(ForbiddenSyscall):
            attack(process_engine, hostile, "jump", final_syscall(binary, layout), MMAP, 0, 1)
        check_matmul(process_engine, matmul, seed)
