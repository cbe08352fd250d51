"""Fixtures for the kvm-engine tests: a real /dev/kvm, real guests built with the SDK, no mocks.

Without /dev/kvm (or without a C compiler) the whole directory is skipped,
saying which is missing; where /dev/kvm opens, everything runs.
"""

from __future__ import annotations

import concurrent.futures
import platform
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pappus.engines.kvm import KvmArtifact, KvmEngine, kvm_available
from pappus.toolchain import ToolchainError
from tests.engines.kvm.support import HOSTILE_OUTPUTS, prepare

SOURCES = Path(__file__).parent / "functions"
EXAMPLES = ("matmul", "matmac", "wordcount", "groupby")


def _unsupported() -> str | None:
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return f"the kvm engine needs Linux on x86-64 (this is {sys.platform} {platform.machine()})"
    if not kvm_available():
        return "the kvm engine needs /dev/kvm, which does not exist or cannot be opened here"
    from pappus import sdk

    try:
        sdk.find_compiler()
    except ToolchainError as exc:
        return f"the kvm engine tests need a C compiler: {exc}"
    return None


UNSUPPORTED = _unsupported()


@pytest.fixture(scope="session", autouse=True)
def _kvm_supported() -> None:
    if UNSUPPORTED is not None:
        pytest.skip(UNSUPPORTED)


@pytest.fixture(scope="session")
def kvm_functions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The SDK examples and tests/functions/kvm/*.c built for the kvm target, by name."""
    from pappus import sdk

    out = tmp_path_factory.mktemp("kvm-functions")
    jobs = [(name, sdk.example_source(name), ()) for name in EXAMPLES]
    jobs += [
        (source.stem, source, ("-Wl,-e,capture_entry",)) for source in sorted(SOURCES.glob("*.c"))
    ]

    def build(job: tuple[str, Path, tuple[str, ...]]) -> tuple[str, bytes]:
        name, source, flags = job
        sdk.build_function([source], out / name, flags, target="kvm")
        return name, (out / name).read_bytes()

    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            return dict(pool.map(build, jobs))
    except ToolchainError as exc:
        pytest.fail(f"cannot build the kvm test functions: {exc}", pytrace=False)


@pytest.fixture(scope="module")
def kvm_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KvmEngine]:
    engine = KvmEngine(tmp_path_factory.mktemp("kvm-helpers"))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def hostile(kvm_engine: KvmEngine, kvm_functions: dict[str, bytes]) -> KvmArtifact:
    return prepare(kvm_engine, "hostile", kvm_functions["hostile"], HOSTILE_OUTPUTS)


@pytest.fixture(scope="module")
def matmul(kvm_engine: KvmEngine, kvm_functions: dict[str, bytes]) -> KvmArtifact:
    return prepare(kvm_engine, "matmul", kvm_functions["matmul"])
