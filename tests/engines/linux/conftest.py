"""Fixtures for the linux-engine tests: one real engine per module, real static binaries.

The engine runs unmodified static x86-64 Linux executables, so these tests
need Linux on x86-64, Debian's ``busybox-static`` at ``/bin/busybox`` and the
C compilers our own test programs are built with (``musl-gcc`` from
``musl-tools``, ``gcc`` with the static glibc); ``scripts/setup`` installs all
three. Without any of them every test here is skipped, saying what is missing.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pappus.engines.linux.engine import LinuxEngine
from tests.engines.linux.support import UNSUPPORTED, Sandbox


@pytest.fixture(scope="session", autouse=True)
def _linux_engine_supported() -> None:
    if UNSUPPORTED is not None:
        pytest.skip(UNSUPPORTED)


@pytest.fixture(autouse=True)
def _no_supervisor_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The supervisor logs a call it failed to emulate (and answers ENOSYS): always a bug."""
    yield
    errors = [record.getMessage() for record in caplog.get_records("call")
              if record.name.startswith("pappus.engines.linux") and record.levelno >= logging.ERROR]
    assert not errors, f"the linux engine logged errors: {errors}"


@pytest.fixture(scope="session")
def launcher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One launcher cache for the session, so the launcher is compiled once."""
    return tmp_path_factory.mktemp("linux-launcher")


@pytest.fixture(scope="module")
def linux_engine(launcher_dir: Path) -> Iterator[LinuxEngine]:
    engine = LinuxEngine(launcher_dir, warm_launchers=2)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def sandbox(linux_engine: LinuxEngine) -> Sandbox:
    """Runs programs in ``linux_engine`` with the stdio/in → stdio/out convention."""
    return Sandbox(linux_engine)


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """An empty directory for native runs, on tmpfs (``/dev/shm``) when there is one.

    Creating and removing thousands of files on this machine's ext4 costs seconds of
    journal work; on tmpfs it costs milliseconds, and the results are the same.
    """
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(dir=shm, prefix="pappus-linux-") as directory:
        yield Path(directory).resolve()
