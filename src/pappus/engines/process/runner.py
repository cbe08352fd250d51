"""The process engine's native runner: built from ``runner.c`` on first use, then cached.

The runner is the only native code of the engine (see ``runner.c`` for what
it does). It is compiled with the system C compiler the first time an engine
needs it, into a cache directory keyed by the source, the flags and the
compiler's version, and written atomically (temporary file, then rename), so
concurrent workers and upgrades never see a half-written or stale runner.
Nothing is asked of the user; without a C compiler the engine reports
:class:`~pappus.errors.EngineUnavailable` saying which package to install.

The runner is linked at :data:`RUNNER_ADDRESS`, far above any context (which
starts at 0x10000 and is at most :data:`~pappus.engines.process.layout.MAX_CONTEXT_SIZE`),
so mapping the context with ``MAP_FIXED_NOREPLACE`` can never collide with it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import threading
from importlib import resources
from pathlib import Path

from pappus import sdk
from pappus.errors import EngineUnavailable
from pappus.toolchain import ToolchainError

RUNNER_ADDRESS = 0x7E00_0000_0000
"""Where the runner's text starts (well below the kernel's stack and mmap area)."""

# -fpie: RIP-relative code, which works at the high link address; -no-pie: no relocation
# at run time (there is no dynamic loader).
COMPILE_FLAGS = (
    "-static", "-nostdlib", "-ffreestanding", "-fpie", "-no-pie", "-fno-stack-protector",
    "-fno-builtin", "-fno-asynchronous-unwind-tables",
    "-O2", "-Wall", "-Werror", f"-Wl,-Ttext-segment={RUNNER_ADDRESS:#x}",
    "-Wl,-z,noexecstack", "-Wl,--build-id=none",
)

_lock = threading.Lock()


def runner_source() -> bytes:
    """The runner's C source, as shipped in the package."""
    return resources.files("pappus.engines.process").joinpath("runner.c").read_bytes()


def find_compiler() -> str:
    """The C compiler to use (see :func:`pappus.sdk.find_compiler`)."""
    try:
        return sdk.find_compiler()
    except ToolchainError as exc:
        raise EngineUnavailable(f"the process engine needs a C compiler once, to build its "
                                f"small runner: {exc}", engine="process") from exc


def ensure_runner(cache_dir: Path) -> Path:
    """Return the path of a runner built from the current source, building it if needed."""
    compiler = find_compiler()
    version = subprocess.run([compiler, "--version"], capture_output=True, check=False).stdout
    source = runner_source()
    flags = (*COMPILE_FLAGS, *sdk.dialect_flags(compiler))
    key = hashlib.sha256(b"\0".join([source, " ".join(flags).encode(), version]))
    target = cache_dir / f"runner-{key.hexdigest()[:16]}"
    if target.exists():
        return target
    with _lock:
        if target.exists():
            return target
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache_dir) as scratch:
            source_path = Path(scratch) / "runner.c"
            source_path.write_bytes(source)
            output = Path(scratch) / "runner"
            built = subprocess.run([compiler, *flags, str(source_path), "-o", str(output)],
                                   capture_output=True, text=True, check=False)
            if built.returncode != 0:
                raise EngineUnavailable(
                    f"building the process engine's runner with {compiler} failed: "
                    f"{built.stderr.strip()[-2000:]}", engine="process")
            os.chmod(output, 0o755)
            os.replace(output, target)
    return target
