"""The process engine's native runner: built from ``runner.c`` on first use, then cached.

The runner is the only native code of the engine (see ``runner.c`` for what
it does); :mod:`pappus.engines.native_build` compiles it once with the system
C compiler and caches it.

The runner is linked at :data:`RUNNER_ADDRESS`, far above any context (which
starts at 0x10000 and is at most :data:`~pappus.engines.process.layout.MAX_CONTEXT_SIZE`),
so mapping the context with ``MAP_FIXED_NOREPLACE`` can never collide with it.

Its code is in two parts (:class:`RunnerLayout`, read from the built file):
the set-up code, which the seccomp filter lets make the runner's own calls
and which the runner unmaps before it jumps to the function, and the final
page(s), which stay mapped (the report handler lives there) and may only
make that unmap and ``exit_group``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pappus.engines import native_build
from pappus.engines.process import elf

RUNNER_ADDRESS = 0x7E00_0000_0000
"""Where the runner's text starts (well below the kernel's stack and mmap area)."""

# -fpie: RIP-relative code, which works at the high link address; -no-pie: no relocation
# at run time (there is no dynamic loader).
COMPILE_FLAGS = (
    *native_build.FREESTANDING_FLAGS,
    "-fpie",
    "-no-pie",
    f"-Wl,-Ttext-segment={RUNNER_ADDRESS:#x}",
    # Each function whole in its own section: no cold parts moved to .text (see runner.c).
    "-fno-reorder-blocks-and-partition",
)
PAGE = 4096
FINAL_FUNCTIONS = (b"leave", b"on_signal", b"restore", b"enter_function")
"""The functions on the final page (``FINAL`` in runner.c)."""


def runner_source() -> bytes:
    """The runner's C source, as shipped in the package."""
    return native_build.packaged_source("pappus.engines.process", "runner.c")


def find_compiler() -> str:
    """The C compiler to use (see :func:`pappus.sdk.find_compiler`)."""
    return native_build.find_compiler("process", "runner")


def ensure_runner(cache_dir: Path) -> Path:
    """Return the path of a runner built from the current source, building it if needed."""
    return native_build.ensure_built(
        runner_source(), COMPILE_FLAGS, cache_dir, stem="runner", engine="process",
        headers=native_build.shared_headers(*native_build.FREESTANDING_HEADERS),
    )


@dataclass(frozen=True, slots=True)
class RunnerLayout:
    """Where the runner's code is: set-up ``[setup_start, final_start)``, final
    ``[final_start, final_end)``."""

    setup_start: int
    final_start: int
    final_end: int

    @property
    def setup_length(self) -> int:
        """Bytes the runner unmaps (its set-up code) before it jumps to the function."""
        return self.final_start - self.setup_start


def runner_layout(binary: bytes) -> RunnerLayout:
    """The layout of a runner built from ``runner.c``; :class:`RuntimeError` if it is not as
    the runner and its filter expect (a toolchain that placed code differently)."""
    wanted = {b"__executable_start", b"__start_pappus_final", *FINAL_FUNCTIONS}
    try:
        found = elf.symbols(binary, wanted)
        executable = elf.executable_ranges(binary)
    except ValueError as exc:
        raise RuntimeError(f"the process runner's ELF file is unreadable: {exc}") from None
    if missing := sorted(name.decode() for name in wanted - found.keys()):
        raise RuntimeError(f"the process runner lacks the symbols {', '.join(missing)}")
    start, final = found[b"__executable_start"], found[b"__start_pappus_final"]
    if len(executable) != 1:
        raise RuntimeError(f"the process runner has {len(executable)} executable segments, not 1")
    ((code_start, code_end),) = executable
    layout = RunnerLayout(start, final, -(-code_end // PAGE) * PAGE)
    if not (start <= code_start < final < code_end and start % PAGE == 0 and final % PAGE == 0):
        raise RuntimeError(f"the process runner's code is not laid out as expected: {layout}")
    if stray := [name.decode() for name in FINAL_FUNCTIONS
                 if not final <= found[name] < layout.final_end]:
        raise RuntimeError(f"the process runner's final functions {stray} are not on its final "
                           "page")
    return layout
