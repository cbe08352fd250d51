"""Build C sources into wasm functions with clang and wasi-libc (Debian packages).

``build_wasm`` runs ``clang --target=wasm32-wasi -O2 -Wl,--strip-all``. When
the build fails, :func:`missing_packages` asks clang where each part of the
toolchain lives, so the error names the Debian packages to install instead of
leaving the user with a linker message.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

TARGET_FLAGS: tuple[str, ...] = ("--target=wasm32-wasi",)
OPTIMIZE_FLAGS = ("-O2", "-Wl,--strip-all")
DEBIAN_PACKAGES = ("clang", "lld", "wasi-libc", "libclang-rt-dev-wasm32")
BUILD_TIMEOUT_S = 120.0


class ToolchainError(Exception):
    """The toolchain is incomplete or the source does not compile (the message says which)."""


def _clang() -> str:
    clang = shutil.which("clang")
    if clang is None:
        raise ToolchainError(
            "clang is not installed; install the Debian packages: " + " ".join(DEBIAN_PACKAGES))
    return clang


def _ask(clang: str, *flags: str) -> str:
    result = subprocess.run([clang, *TARGET_FLAGS, *flags], capture_output=True, text=True,
                            check=False, timeout=BUILD_TIMEOUT_S)
    return result.stdout.strip()


def missing_packages() -> list[str]:
    """Debian packages of the wasm toolchain that are absent (empty: all present)."""
    clang = shutil.which("clang")
    if clang is None:
        return list(DEBIAN_PACKAGES)
    missing: list[str] = []
    # clang answers with the bare name when it cannot find the file.
    if not Path(_ask(clang, "-print-prog-name=wasm-ld")).is_absolute():
        missing.append("lld")
    if not Path(_ask(clang, "-print-file-name=libc.a")).is_absolute():
        missing.append("wasi-libc")
    if not Path(_ask(clang, "--rtlib=compiler-rt", "-print-libgcc-file-name")).is_file():
        missing.append("libclang-rt-dev-wasm32")
    return missing


def build_wasm(source: Path, output: Path, extra_flags: Sequence[str] = ()) -> None:
    """Compile the C file ``source`` to the WASI command module ``output``."""
    clang = _clang()
    if not source.is_file():
        raise ToolchainError(f"source file {source} does not exist")
    command = [clang, *TARGET_FLAGS, *OPTIMIZE_FLAGS, *extra_flags, str(source), "-o",
               str(output)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False,
                                timeout=BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise ToolchainError(f"building {source} took over {BUILD_TIMEOUT_S:g} s") from exc
    if result.returncode == 0:
        return
    missing = missing_packages()
    hint = ("\nthe wasm toolchain is incomplete; install the Debian packages: "
            + " ".join(missing)) if missing else ""
    raise ToolchainError(f"building {source} failed:\n{result.stderr.strip()}{hint}")
