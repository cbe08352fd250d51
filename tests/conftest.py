"""Shared fixtures. Child processes started by tests are reaped by the tests themselves."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from pappus.composition import parse_any_sharding_mode
from pappus.dispatcher import Dispatcher
from pappus.registry import Registry
from pappus.store import Store
from tests.fakes import FakeEngine

MATMUL_SIGNATURE = ("InMats",), ("OutMats",)


@pytest.fixture
def fake_engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "data")
    yield s
    s.close()


@pytest.fixture
def registry(store: Store, fake_engine: FakeEngine) -> Registry:
    return Registry(store, {"wasm": fake_engine}, default_timeout_ms=5000,
                    default_memory_bytes=1 << 26)


async def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll ``condition`` on the event loop until it holds (fail after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.001)


def eventually(condition: Callable[[], bool], timeout_s: float = 5.0, *,
               describe: Callable[[], object] = lambda: "condition not reached") -> None:
    """Poll ``condition`` until it holds; fail after ``timeout_s`` with ``describe()``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, describe()
        time.sleep(0.001)


def make_dispatcher(registry: Registry, *, slots: int = 2, queue_size: int = 64,
                    default_timeout_ms: int = 5000) -> Dispatcher:
    return Dispatcher(registry, slots=slots, queue_size=queue_size, max_output_bytes=1 << 20,
                      default_timeout_ms=default_timeout_ms,
                      sharding=parse_any_sharding_mode("auto:2"))


@pytest.fixture
async def dispatcher(registry: Registry) -> AsyncIterator[Dispatcher]:
    d = make_dispatcher(registry)
    yield d
    await d.close()


FUNCTIONS_DIR = Path(__file__).parent / "functions" / "api"


@pytest.fixture(scope="session")
def api_functions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Our C test functions (tests/functions/api/*.c) built to wasm with clang."""
    from pappus.toolchain import build_wasm

    out_dir = tmp_path_factory.mktemp("wasm")
    built: dict[str, bytes] = {}
    for source in sorted(FUNCTIONS_DIR.glob("*.c")):
        target = out_dir / (source.stem + ".wasm")
        build_wasm(source, target)
        built[source.stem] = target.read_bytes()
    return built
