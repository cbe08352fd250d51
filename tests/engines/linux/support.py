"""Helpers for the linux-engine tests: build static C programs, run binaries in the sandbox.

The sandbox convention (see :mod:`pappus.vfs`): input set ``in`` item ``I`` is
``/in/I``; the writable output directory ``/out/``; set ``stdio`` carries
``argv`` (words), ``environ`` and ``stdin`` in, ``stdout`` and ``stderr`` out.
:meth:`Sandbox.run` takes argv as a list of words and quotes them so that
:func:`pappus.vfs.split_words` gives exactly those words back.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pappus.engines.base import FunctionSpec, Limits
from pappus.engines.linux.engine import LinuxArtifact, LinuxEngine
from pappus.model import DataSet, Item
from pappus.vfs import split_words

BUSYBOX = Path("/bin/busybox")
INPUT_SETS = ("stdio", "in")
OUTPUT_SETS = ("stdio", "out")
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MEMORY = 256 << 20
DEFAULT_MAX_OUTPUT = 64 << 20
SETUP_HINT = "scripts/setup installs busybox-static, musl-tools and gcc"


def _unsupported() -> str | None:
    if sys.platform != "linux" or platform.machine() != "x86_64":
        return (f"the linux engine needs Linux on x86-64 (this is {sys.platform} "
                f"{platform.machine()})")
    if not BUSYBOX.is_file():
        return f"the linux engine tests need Debian's busybox-static at {BUSYBOX} ({SETUP_HINT})"
    for compiler in ("musl-gcc", "gcc"):
        if shutil.which(compiler) is None:
            return f"the linux engine tests need {compiler} ({SETUP_HINT})"
    return None


UNSUPPORTED = _unsupported()


def build_c(source: str, target: Path, compiler: str, *, static: bool = True) -> bytes:
    """Compile ``source`` with ``compiler`` (``-static`` unless told otherwise); the binary."""
    source_path = target.with_suffix(".c")
    source_path.write_text(source)
    command = [compiler, "-O1", "-Wall", "-Werror", *(["-static"] if static else []),
               "-o", str(target), str(source_path)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr}")
    return target.read_bytes()


COMPILERS = ("musl-gcc", "gcc")


def build_with_each_compiler(source: str, directory: Path, stem: str) -> dict[str, bytes]:
    """``source`` built static with musl and with glibc, in parallel: compiler → binary."""
    def build(compiler: str) -> tuple[str, bytes]:
        return compiler, build_c(source, directory / f"{stem}-{compiler}", compiler)

    with concurrent.futures.ThreadPoolExecutor(len(COMPILERS)) as pool:
        return dict(pool.map(build, COMPILERS))


def quote_words(words: Sequence[str | bytes]) -> bytes:
    """The ``argv``/``environ`` item whose words (by :func:`split_words`) are ``words``."""
    quoted: list[bytes] = []
    for word in words:
        raw = word.encode() if isinstance(word, str) else word
        if raw and b" " not in raw and b"'" not in raw and b'"' not in raw:
            quoted.append(raw)
        elif b"'" not in raw:
            quoted.append(b"'" + raw + b"'")
        elif b'"' not in raw:
            quoted.append(b'"' + raw + b'"')
        else:
            raise ValueError(f"cannot quote a word holding both quote characters: {raw!r}")
    text = b" ".join(quoted)
    expected = [w.encode() if isinstance(w, str) else w for w in words]
    if split_words(text) != expected:
        raise ValueError(f"{words!r} does not survive quoting as {text!r}")
    return text


@dataclass(frozen=True)
class Run:
    """What one sandboxed invocation produced."""

    exit_code: int
    stdout: bytes
    stderr: bytes
    out: tuple[Item, ...]


class Sandbox:
    """Prepares binaries once (by content) and runs them in a linux engine."""

    def __init__(self, engine: LinuxEngine) -> None:
        self.engine = engine
        self._artifacts: dict[str, LinuxArtifact] = {}
        self._lock = threading.Lock()

    def prepare(self, binary: bytes, name: str = "program") -> LinuxArtifact:
        digest = hashlib.sha256(binary).hexdigest()
        with self._lock:
            artifact = self._artifacts.get(digest)
            if artifact is None:
                spec = FunctionSpec(name=name, engine="linux", binary=binary, sha256=digest,
                                    input_sets=INPUT_SETS, output_sets=OUTPUT_SETS)
                artifact = self._artifacts[digest] = self.engine.prepare(spec, None)
            return artifact

    def run(
        self,
        binary: bytes,
        argv: Sequence[str | bytes],
        files: Mapping[str, bytes] | None = None,
        *,
        stdin: bytes | None = None,
        environ: Sequence[str] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        memory_bytes: int = DEFAULT_MEMORY,
        max_output_bytes: int = DEFAULT_MAX_OUTPUT,
    ) -> Run:
        """Run ``binary`` with ``argv`` on input files ``files`` (items of set ``in``)."""
        artifact = self.prepare(binary)
        stdio = [Item("argv", 0, quote_words(argv))]
        if stdin is not None:
            stdio.append(Item("stdin", 0, stdin))
        if environ is not None:
            stdio.append(Item("environ", 0, quote_words(environ)))
        inputs = [DataSet("stdio", tuple(stdio)),
                  DataSet("in", tuple(Item(name, 0, data) for name, data in (files or {}).items()))]
        limits = Limits.from_timeout(timeout_s, memory_bytes, max_output_bytes)
        result = self.engine.invoke(artifact, inputs, limits)
        stdio_out, out = result.outputs
        assert stdio_out.name == "stdio" and out.name == "out"
        streams = {item.name: item.data for item in stdio_out.items[:2]}
        return Run(result.exit_code, streams["stdout"], streams["stderr"], out.items)


def busybox_binary() -> bytes:
    return BUSYBOX.read_bytes()


def native_environment(words: Sequence[str]) -> dict[str, str]:
    """The environment a native run gets: exactly ``NAME=value`` words, nothing inherited."""
    return dict(word.split("=", 1) for word in words)


def mtime_zero(path: Path) -> None:
    """Give a native file the time the sandbox reports for every file (the epoch)."""
    os.utime(path, (0, 0))
