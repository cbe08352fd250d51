"""Runners cloned by the zygote: the worker's own children, holding only their socket. A dead
or stopped zygote is replaced, one that cannot start or keeps failing gives way to posix_spawn,
and close ends it."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from pappus.engines.process import ProcessArtifact, ProcessEngine, pool
from pappus.engines.process.pool import Zygote
from tests.engines.process.support import (
    check_matmul,
    prepare,
    runner_children,
    wait_until_full,
)


def process_facts(pid: int) -> tuple[list[bytes], int, list[str]]:
    """argv, parent pid and open descriptors of ``pid``."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
    parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return argv, parent, sorted(os.listdir(f"/proc/{pid}/fd"))


def test_runners_are_cloned_children_of_the_worker_with_only_their_socket(
        fresh_engine: ProcessEngine, fresh_matmul: ProcessArtifact) -> None:
    check_matmul(fresh_engine, fresh_matmul, 3)
    wait_until_full(fresh_engine.pool)
    zygote = fresh_engine.zygote_pid
    assert zygote is not None
    # Its socket, and the pipe its requests come down.
    assert process_facts(zygote) == ([b"pappus-runner", b"zygote"], os.getpid(), ["3", "4"])
    for runner in fresh_engine.pool.waiting():
        assert process_facts(runner.pid) == ([b"pappus-runner", b"runner"], os.getpid(), ["3"])
    assert set(runner_children()) >= {r.pid for r in fresh_engine.pool.waiting()}


def test_a_killed_zygote_is_replaced(fresh_engine: ProcessEngine,
                                     fresh_matmul: ProcessArtifact) -> None:
    check_matmul(fresh_engine, fresh_matmul, 1)
    wait_until_full(fresh_engine.pool)
    first = fresh_engine.zygote_pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    for seed in range(2, 8):  # uses up the warm runners, then needs new ones
        check_matmul(fresh_engine, fresh_matmul, seed)
    wait_until_full(fresh_engine.pool)
    assert fresh_engine.zygote_pid not in (None, first)
    assert not Path(f"/proc/{first}").exists(), "the dead zygote was not reaped"


def test_without_a_zygote_runners_are_spawned(runner_dir: Path,
                                              process_functions: dict[str, bytes],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def cannot(self: Zygote) -> None:
        raise OSError("out of processes")

    monkeypatch.setattr(Zygote, "_start_zygote", cannot)
    engine = ProcessEngine(runner_dir)
    try:
        artifact = prepare(engine, "matmul", process_functions["matmul"])
        for seed in range(4):
            check_matmul(engine, artifact, seed)
        assert engine.zygote_pid is None
    finally:
        engine.close()


def test_close_ends_the_zygote(runner_dir: Path, process_functions: dict[str, bytes]) -> None:
    engine = ProcessEngine(runner_dir)
    check_matmul(engine, prepare(engine, "matmul", process_functions["matmul"]), 5)
    zygote = engine.zygote_pid
    assert zygote is not None
    engine.close()
    assert not Path(f"/proc/{zygote}").exists()


def test_a_stopped_zygote_is_replaced_after_its_reply_timeout(
        runner_dir: Path, process_functions: dict[str, bytes],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool, "ZYGOTE_REPLY_TIMEOUT_S", 0.2)
    engine = ProcessEngine(runner_dir, warm_runners=0)
    try:
        artifact = prepare(engine, "matmul", process_functions["matmul"])
        check_matmul(engine, artifact, 1)
        stopped = engine.zygote_pid
        assert stopped is not None
        os.kill(stopped, signal.SIGSTOP)
        began = time.monotonic()
        check_matmul(engine, artifact, 2)
        assert 0.2 <= time.monotonic() - began < 2.0  # waited for the reply, then replaced it
        assert engine.zygote_pid not in (None, stopped)
        assert not Path(f"/proc/{stopped}").exists(), "the stopped zygote was not ended"
    finally:
        engine.close()


def test_zygotes_that_keep_failing_are_given_up(runner_dir: Path,
                                                process_functions: dict[str, bytes],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[int] = []
    real_start = Zygote._start_zygote

    def counting(self: Zygote) -> object:
        zygote = real_start(self)
        started.append(zygote.pid)
        return zygote

    monkeypatch.setattr(Zygote, "_start_zygote", counting)
    monkeypatch.setattr(pool, "_receive_runner", lambda zygote, wait_s: None)
    engine = ProcessEngine(runner_dir, warm_runners=0)
    try:
        artifact = prepare(engine, "matmul", process_functions["matmul"])
        for seed in range(6):
            check_matmul(engine, artifact, seed)  # served by spawned runners
        assert len(started) == 2 * pool.ZYGOTE_GIVE_UP_AFTER
        assert all(not Path(f"/proc/{pid}").exists() for pid in started)
    finally:
        engine.close()
