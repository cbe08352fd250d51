"""The process engine's native runner: built from ``runner.c`` on first use, then cached.

The runner is the only native code of the engine (see ``runner.c`` for what
it does); :mod:`pappus.engines.native_build` compiles it once with the system
C compiler and caches it.

The runner is linked at :data:`RUNNER_ADDRESS`, far above any context (which
starts at 0x10000 and is at most :data:`~pappus.engines.process.layout.MAX_CONTEXT_SIZE`),
so mapping the context with ``MAP_FIXED_NOREPLACE`` can never collide with it.
"""

from __future__ import annotations

from pathlib import Path

from pappus.engines import native_build

RUNNER_ADDRESS = 0x7E00_0000_0000
"""Where the runner's text starts (well below the kernel's stack and mmap area)."""

# -fpie: RIP-relative code, which works at the high link address; -no-pie: no relocation
# at run time (there is no dynamic loader).
COMPILE_FLAGS = (
    *native_build.FREESTANDING_FLAGS,
    "-fpie",
    "-no-pie",
    f"-Wl,-Ttext-segment={RUNNER_ADDRESS:#x}",
)


def runner_source() -> bytes:
    """The runner's C source, as shipped in the package."""
    return native_build.packaged_source("pappus.engines.process", "runner.c")


def find_compiler() -> str:
    """The C compiler to use (see :func:`pappus.sdk.find_compiler`)."""
    return native_build.find_compiler("process", "runner")


def ensure_runner(cache_dir: Path) -> Path:
    """Return the path of a runner built from the current source, building it if needed."""
    return native_build.ensure_built(
        runner_source(), COMPILE_FLAGS, cache_dir, stem="runner", engine="process"
    )
