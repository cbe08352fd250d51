"""Fixtures for engine tests: our C test functions, built once per session with the real toolchain.

A missing toolchain fails the session with the packages to install; it never
skips, so a green run always means the C programs really ran.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path

import pytest

from pappus.engines.wasm import WasmEngine
from pappus.toolchain import ToolchainError, build_wasm

SOURCES = Path(__file__).parent.parent / "functions" / "wasm"


@pytest.fixture(scope="session")
def wasm_functions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """tests/functions/wasm/*.c built with clang --target=wasm32-wasi, by file stem."""
    out = tmp_path_factory.mktemp("engine-wasm")
    sources = sorted(SOURCES.glob("*.c"))

    def build(source: Path) -> tuple[str, bytes]:
        target = out / f"{source.stem}.wasm"
        build_wasm(source, target)
        return source.stem, target.read_bytes()

    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            return dict(pool.map(build, sources))
    except ToolchainError as exc:
        pytest.fail(f"cannot build the C test functions: {exc}", pytrace=False)


@pytest.fixture
def engine() -> Iterator[WasmEngine]:
    e = WasmEngine()
    yield e
    e.close()
