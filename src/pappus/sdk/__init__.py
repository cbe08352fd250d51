"""The function SDK for the ``process`` and ``kvm`` engines: C header, runtime, examples, build.

``build_function(["fn.c"], Path("fn"))`` compiles C sources with the system
C compiler against ``include/pappus/function.h`` and ``runtime/start.c`` into
a static, freestanding x86-64 executable linked at 0x10000 — Dandelion's
native ABI (``pappus sdk build fn.c -o fn`` on the command line). With
``target="kvm"`` (``--target kvm``) the same sources build for Dandelion's
KVM ABI: only the runtime's exit (``int $32``) and thread-pointer set-up
(``wrfsbase``) differ. Examples in ``examples/``: ``matmul``, ``matmac``,
``wordcount``, ``groupby``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from pappus.toolchain import ToolchainError

BUILD_TIMEOUT_S = 120.0
FLAGS: tuple[str, ...] = (
    "-static", "-nostdlib", "-ffreestanding", "-fno-pie", "-no-pie", "-fno-stack-protector",
    "-fno-builtin", "-fno-asynchronous-unwind-tables",
    "-mno-red-zone", "-O2", "-Wall", "-Wextra",
    # The ABI: context offset == address, lowest address 0x10000, no W+X segment.
    "-Wl,-Ttext-segment=0x10000", "-Wl,-z,noexecstack", "-Wl,-z,separate-code",
    "-Wl,--build-id=none",
)
"""Compiler flags of every SDK build (the engine's loader relies on them)."""
TARGETS: dict[str, tuple[str, ...]] = {"process": (), "kvm": ("-DPAPPUS_TARGET_KVM",)}
"""Build targets (the engine a function is for) and the flags each adds."""


def sdk_root() -> Path:
    """The directory holding ``include/``, ``runtime/`` and ``examples/``."""
    return Path(str(resources.files("pappus.sdk")))


def example_source(name: str) -> Path:
    """The path of example function ``name`` (``matmul``, ``wordcount``, ...)."""
    path = sdk_root() / "examples" / f"{name}.c"
    if not path.is_file():
        raise FileNotFoundError(f"no SDK example called {name!r}")
    return path


def find_compiler() -> str:
    """``$CC``, else ``cc``, ``gcc`` or ``clang`` on ``PATH``."""
    for candidate in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if candidate and shutil.which(candidate):
            return candidate
    raise ToolchainError("no C compiler found: install gcc (Debian: apt-get install gcc) or set CC")


def is_clang(compiler: str) -> bool:
    """Whether ``compiler`` is clang (which lacks some GCC-only flags)."""
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True,
                             check=False, timeout=BUILD_TIMEOUT_S).stdout
    return "clang" in version


def dialect_flags(compiler: str) -> tuple[str, ...]:
    """Flags only one compiler family understands.

    GCC turns byte loops into calls to ``memcpy``/``memset`` even with
    ``-fno-builtin`` — inside our own ``memcpy`` that would recurse forever;
    clang honours ``-fno-builtin`` for this already.
    """
    if is_clang(compiler):
        return ("-Wno-unused-command-line-argument",)  # clang ignores -no-pie with -static
    return ("-fno-tree-loop-distribute-patterns",)


def build_function(sources: Sequence[Path], output: Path,
                   extra_flags: Sequence[str] = (), *, target: str = "process") -> None:
    """Compile ``sources`` (C files) and the SDK runtime into the function ``output``.

    ``target`` is the engine the function is for: ``process`` or ``kvm``.
    """
    if target not in TARGETS:
        raise ToolchainError(f"unknown build target {target!r}; choose one of "
                             f"{', '.join(TARGETS)}")
    for source in sources:
        if not Path(source).is_file():
            raise ToolchainError(f"source file {source} does not exist")
    root = sdk_root()
    compiler = find_compiler()
    command = [compiler, *FLAGS, *dialect_flags(compiler), *TARGETS[target],
               f"-I{root / 'include'}", *extra_flags,
               *(str(s) for s in sources), str(root / "runtime" / "start.c"), "-o", str(output)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False,
                                timeout=BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise ToolchainError(f"the build took longer than {BUILD_TIMEOUT_S:.0f} s") from exc
    if result.returncode != 0:
        raise ToolchainError(f"the build failed:\n{result.stderr.strip()}")
