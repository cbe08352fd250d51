"""Build an engine's small native helper from its packaged C source, once, then cache it.

The process engine's runner, the linux engine's launcher and the linux
supervisor's fast path (a shared library loaded with ctypes) are the only
native code pappus has. Each is compiled with the system C compiler the
first time an engine needs it, into a cache directory keyed by the source,
the flags and the compiler's version, and written atomically (temporary
file, then rename), so concurrent workers and upgrades never see a
half-written or stale binary. Nothing is asked of the user; without a C
compiler the engine reports :class:`~pappus.errors.EngineUnavailable` saying
which package to install.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

from pappus import sdk
from pappus.errors import EngineUnavailable
from pappus.toolchain import ToolchainError

_lock = threading.Lock()

FREESTANDING_FLAGS = (
    "-static",
    "-nostdlib",
    "-ffreestanding",
    "-fno-stack-protector",
    "-fno-builtin",
    "-fno-asynchronous-unwind-tables",
    "-O2",
    "-Wall",
    "-Werror",
    "-Wl,-z,noexecstack",
    "-Wl,--build-id=none",
)
"""Flags every helper shares: a static, libc-free program."""


def default_cache_dir() -> Path:
    """Where built helpers are cached when an engine is given no directory."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pappus"


def packaged_source(package: str, name: str) -> bytes:
    """A C source shipped inside ``package``."""
    return resources.files(package).joinpath(name).read_bytes()


def shared_headers(*names: str) -> dict[str, bytes]:
    """Headers shared by several helpers (``pappus/engines/<name>``), for ``headers=``:
    ``quiet_thread.h`` (starting a thread in a library loaded into the worker),
    ``raw_syscall.h`` (system calls in a freestanding program) and
    ``fd_passing.h`` (SCM_RIGHTS there; it includes ``raw_syscall.h``)."""
    return {name: packaged_source("pappus.engines", name) for name in names}


FREESTANDING_HEADERS = ("raw_syscall.h", "fd_passing.h")
"""What the freestanding helpers (the runner, the launcher) include."""


def find_compiler(engine: str, what: str) -> str:
    """The C compiler to use (see :func:`pappus.sdk.find_compiler`)."""
    try:
        return sdk.find_compiler()
    except ToolchainError as exc:
        raise EngineUnavailable(
            f"the {engine} engine needs a C compiler once, to build its small {what}: {exc}",
            engine=engine,
        ) from exc


def ensure_built(
    source: bytes, flags: Sequence[str], cache_dir: Path, *, stem: str, engine: str,
    headers: Mapping[str, bytes] | None = None,
) -> Path:
    """The path of ``stem`` built from ``source`` with ``flags``, building it if needed.

    ``headers`` (file name → content) are placed beside the source, for its
    ``#include "..."`` lines; they are part of the cache key like the source.
    """
    compiler = find_compiler(engine, stem)
    version = subprocess.run([compiler, "--version"], capture_output=True, check=False).stdout
    all_flags = (*flags, *sdk.dialect_flags(compiler))
    headers = dict(sorted((headers or {}).items()))
    key = hashlib.sha256(b"\0".join([source, " ".join(all_flags).encode(), version,
                                     *(name.encode() + b"\0" + text
                                       for name, text in headers.items())]))
    target = cache_dir / f"{stem}-{key.hexdigest()[:16]}"
    if target.exists():
        return target
    with _lock:
        if target.exists():
            return target
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache_dir) as scratch:
            source_path = Path(scratch) / f"{stem}.c"
            source_path.write_bytes(source)
            for name, text in headers.items():
                (Path(scratch) / name).write_bytes(text)
            output = Path(scratch) / stem
            built = subprocess.run(
                [compiler, *all_flags, str(source_path), "-o", str(output)],
                capture_output=True,
                text=True,
                check=False,
            )
            if built.returncode != 0:
                raise EngineUnavailable(
                    f"building the {engine} engine's {stem} with {compiler} failed: "
                    f"{built.stderr.strip()[-2000:]}",
                    engine=engine,
                )
            os.chmod(output, 0o755)
            os.replace(output, target)
    return target
