"""pappus.toolchain: C to wasm with the Debian clang/wasi-libc packages, and clear errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pappus import toolchain
from pappus.toolchain import ToolchainError, build_wasm, missing_packages


def test_builds_a_wasi_command(tmp_path: Path) -> None:
    source = tmp_path / "hello.c"
    source.write_text('#include <stdio.h>\nint main(void) { puts("hi"); return 0; }\n')
    build_wasm(source, tmp_path / "hello.wasm", extra_flags=["-DUNUSED=1"])
    binary = (tmp_path / "hello.wasm").read_bytes()
    assert binary[:4] == b"\0asm"
    assert b"name" not in binary[-200:]  # --strip-all: no name section


def test_the_toolchain_is_complete_here() -> None:
    assert missing_packages() == []


def test_compile_errors_are_reported(tmp_path: Path) -> None:
    source = tmp_path / "broken.c"
    source.write_text("int main(void) { return }\n")
    with pytest.raises(ToolchainError, match="expected expression") as info:
        build_wasm(source, tmp_path / "broken.wasm")
    assert "install" not in str(info.value)  # the toolchain is fine; the code is not
    with pytest.raises(ToolchainError, match="does not exist"):
        build_wasm(tmp_path / "missing.c", tmp_path / "missing.wasm")


def test_a_missing_compiler_names_the_packages(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    source = tmp_path / "x.c"
    source.write_text("int main(void) { return 0; }\n")
    with pytest.raises(ToolchainError, match="clang lld wasi-libc libclang-rt-dev-wasm32"):
        build_wasm(source, tmp_path / "x.wasm")
    assert missing_packages() == list(toolchain.DEBIAN_PACKAGES)


def test_a_missing_libc_names_its_package(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    source = tmp_path / "x.c"
    source.write_text("int main(void) { return 0; }\n")
    # Point clang at an empty sysroot: as if wasi-libc were not installed.
    monkeypatch.setattr(toolchain, "TARGET_FLAGS",
                        ("--target=wasm32-wasi", f"--sysroot={tmp_path}"))
    with pytest.raises(ToolchainError, match=r"install the Debian packages: wasi-libc$"):
        build_wasm(source, tmp_path / "x.wasm")
