"""Building the engines' native helpers: cached by everything that goes into the build."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pappus.engines import native_build
from pappus.errors import EngineUnavailable

PROGRAM = b'#include "answer.h"\nint main(void) { return ANSWER; }\n'
FLAGS = ("-O1", "-Wall", "-Werror")


def build(cache: Path, answer: int) -> Path:
    return native_build.ensure_built(PROGRAM, FLAGS, cache, stem="answer", engine="process",
                                     headers={"answer.h": b"#define ANSWER %d\n" % answer})


def test_headers_are_placed_beside_the_source_and_part_of_the_cache_key(tmp_path: Path) -> None:
    first = build(tmp_path, 7)
    assert subprocess.run([first], check=False).returncode == 7
    assert build(tmp_path, 7) == first  # cached: same source, flags, headers
    second = build(tmp_path, 9)
    assert second != first, "a changed header must not reuse the old build"
    assert subprocess.run([second], check=False).returncode == 9


def test_a_failed_build_names_the_engine_and_the_compiler_error(tmp_path: Path) -> None:
    with pytest.raises(EngineUnavailable) as caught:
        native_build.ensure_built(PROGRAM, FLAGS, tmp_path, stem="answer", engine="process")
    assert "answer.h" in caught.value.message and "process" in caught.value.message
    assert not list(tmp_path.glob("answer-*")), "nothing half-built is left in the cache"


def test_the_shared_headers_are_packaged() -> None:
    headers = native_build.shared_headers("quiet_thread.h", *native_build.FREESTANDING_HEADERS)
    assert b"start_quiet_thread" in headers["quiet_thread.h"]
    assert b"long sys6(" in headers["raw_syscall.h"]
    assert b'#include "raw_syscall.h"' in headers["fd_passing.h"]
