"""A runner that cannot set itself up says which step failed, and never runs a function.

Real runner processes, started the way the engine starts them, with what
they need taken away.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from pappus.engines.process.engine import FILTER_FD
from pappus.engines.process.outcome import SETUP_STATUS_BASE, SETUP_STEPS, RunnerExit, classify_exit
from pappus.engines.process.pool import start_runner
from pappus.engines.process.runner import ensure_runner, runner_source
from pappus.errors import SandboxCrash


def ended(runner_dir: Path, descriptors: dict[int, int]) -> int:
    runner = start_runner(str(ensure_runner(runner_dir)), descriptors)
    try:
        _, status = os.waitpid(runner.pid, 0)
    finally:
        runner.channel.close()
        os.close(runner.pidfd)
    return status


@pytest.mark.parametrize("content", [None, b"", b"\x06\x00\x00\x00\x00\x00"])
def test_without_a_valid_filter_the_runner_stops_before_any_context(
        runner_dir: Path, content: bytes | None) -> None:
    descriptors: dict[int, int] = {}
    if content is not None:  # an empty or truncated program (not a whole instruction)
        fd = os.memfd_create("filter", os.MFD_CLOEXEC)
        os.write(fd, content)
        descriptors[FILTER_FD] = fd
    try:
        status = ended(runner_dir, descriptors)
    finally:
        for fd in descriptors.values():
            os.close(fd)
    assert os.WIFEXITED(status)
    assert os.WEXITSTATUS(status) == SETUP_STATUS_BASE + SETUP_STEPS.index("installing the filter")
    with pytest.raises(SandboxCrash, match=r"could not be set up \(installing the filter failed\)"):
        classify_exit("f", RunnerExit(status, False, b""))


def test_a_program_the_kernel_rejects_is_a_setup_failure_too(runner_dir: Path) -> None:
    fd = os.memfd_create("filter", os.MFD_CLOEXEC)
    os.write(fd, bytes(8))  # one instruction, "ld" of nothing: not a valid seccomp program
    try:
        status = ended(runner_dir, {FILTER_FD: fd})
    finally:
        os.close(fd)
    assert os.WEXITSTATUS(status) == SETUP_STATUS_BASE + SETUP_STEPS.index("installing the filter")


def test_every_step_the_runner_names_has_a_description() -> None:
    source = runner_source().decode()
    steps = {int(n) for n in re.findall(r"check\(.*?,\s*(\d+)\);", source, re.S)}
    steps |= {int(n) for n in re.findall(r"SETUP_STATUS_BASE \+ (\d+)", source)}
    assert steps, "no set-up steps found in runner.c"
    assert max(steps) < len(SETUP_STEPS), sorted(steps)
    # the final page's own failure status (an operand of its assembly) is the last step
    assert len(SETUP_STEPS) - 1 in steps
    assert SETUP_STEPS[-1] == "unmapping the set-up code"
