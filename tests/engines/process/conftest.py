"""Fixtures for the process-engine tests: real runners, real C functions, no mocks.

The tests need Linux on x86-64 (seccomp, memfd, pidfd, x86-64 ELF) and a C
compiler (the SDK build and the engine's runner); without them the whole
directory is skipped, saying which is missing.
"""

from __future__ import annotations

import concurrent.futures
import os
import platform
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pappus.engines.process import ProcessArtifact, ProcessEngine
from pappus.engines.process.engine import FILTER_FD, filter_memfd
from pappus.engines.process.pool import Zygote
from pappus.engines.process.runner import ensure_runner
from pappus.toolchain import ToolchainError
from tests.engines.process.support import HOSTILE_OUTPUTS, prepare

SOURCES = Path(__file__).parent.parent.parent / "functions" / "process"


def _unsupported() -> str | None:
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return (f"the process engine needs Linux on x86-64 (this is {sys.platform} "
                f"{platform.machine()})")
    from pappus import sdk

    try:
        sdk.find_compiler()
    except ToolchainError as exc:
        return f"the process engine tests need a C compiler: {exc}"
    return None


UNSUPPORTED = _unsupported()


@pytest.fixture(scope="session", autouse=True)
def _process_engine_supported() -> None:
    if UNSUPPORTED is not None:
        pytest.skip(UNSUPPORTED)


@pytest.fixture(scope="session")
def process_functions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """tests/functions/process/*.c and the SDK's matmul example, built by file stem."""
    from pappus import sdk

    out = tmp_path_factory.mktemp("process-functions")
    sources = [*sorted(SOURCES.glob("*.c")), sdk.example_source("matmul")]

    def build(source: Path) -> tuple[str, bytes]:
        target = out / source.stem
        sdk.build_function([source], target)
        return source.stem, target.read_bytes()

    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            return dict(pool.map(build, sources))
    except ToolchainError as exc:
        pytest.fail(f"cannot build the process test functions: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def runner_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One runner cache for the session, so the runner is compiled once."""
    return tmp_path_factory.mktemp("process-runner")


@pytest.fixture
def runner_zygote(runner_dir: Path) -> Iterator[Zygote]:
    """A zygote of the process runner with its filter, as the engine makes it (the test
    closes it, or a pool it gives it to does)."""
    path = str(ensure_runner(runner_dir))
    fd = filter_memfd(path)
    try:
        yield Zygote(path, descriptors={FILTER_FD: fd})
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def process_engine(runner_dir: Path) -> Iterator[ProcessEngine]:
    engine = ProcessEngine(runner_dir)
    yield engine
    engine.close()


@pytest.fixture
def cold_engine(runner_dir: Path) -> Iterator[ProcessEngine]:
    """An engine without warm runners: every process it starts is one invocation's."""
    engine = ProcessEngine(runner_dir, warm_runners=0)
    yield engine
    engine.close()


@pytest.fixture
def fresh_engine(runner_dir: Path) -> Iterator[ProcessEngine]:
    """An engine of the test's own, with its own zygote and warm runners."""
    engine = ProcessEngine(runner_dir)
    yield engine
    engine.close()


@pytest.fixture
def fresh_matmul(fresh_engine: ProcessEngine,
                 process_functions: dict[str, bytes]) -> ProcessArtifact:
    return prepare(fresh_engine, "matmul", process_functions["matmul"])


@pytest.fixture(scope="module")
def hostile(process_engine: ProcessEngine, process_functions: dict[str, bytes]) -> ProcessArtifact:
    return prepare(process_engine, "hostile", process_functions["hostile"], HOSTILE_OUTPUTS)


@pytest.fixture(scope="module")
def matmul(process_engine: ProcessEngine, process_functions: dict[str, bytes]) -> ProcessArtifact:
    return prepare(process_engine, "matmul", process_functions["matmul"])
