"""Descriptors of finished runs are closed off the invocation's path, but never pile up: a
context holding much memory is closed at once, at most a few small ones wait for the next
invocation, and closing the engine closes them all."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pappus.engines.process import ProcessEngine
from pappus.engines.process import engine as engine_module
from pappus.errors import SandboxCrash
from tests.engines.process.support import check_matmul, prepare, run_mode


def context_memfds() -> dict[int, int]:
    """Our open context memfds: descriptor → bytes of memory they hold."""
    found: dict[int, int] = {}
    for entry in Path("/proc/self/fd").iterdir():
        try:
            if os.readlink(entry).startswith("/memfd:pappus-context"):
                found[int(entry.name)] = os.fstat(int(entry.name)).st_blocks * 512
        except OSError:
            continue  # the listing's own descriptor, or one closed meanwhile
    return found


def test_finished_runs_leave_few_small_descriptors_and_close_ends_them(
        runner_dir: Path, process_functions: dict[str, bytes]) -> None:
    before = set(context_memfds())
    engine = ProcessEngine(runner_dir)
    try:
        matmul = prepare(engine, "matmul", process_functions["matmul"])
        hostile = prepare(engine, "hostile", process_functions["hostile"],
                          outputs=("out", "more"))
        with pytest.raises(SandboxCrash):
            run_mode(engine, hostile, "stack_overflow")  # writes its whole 128 MiB context
        big = {fd: size for fd, size in context_memfds().items()
               if fd not in before and size > engine_module.RETIRE_AT_MOST_BYTES}
        assert big == {}, "a context holding much memory was kept open"
        for seed in range(20):
            check_matmul(engine, matmul, seed)
        kept = {fd: size for fd, size in context_memfds().items() if fd not in before}
        assert 1 <= len(kept) <= engine_module.RETIRE_AT_MOST_COUNT // 3, kept
    finally:
        engine.close()
    assert set(context_memfds()) <= before, "closing the engine left context memfds open"
