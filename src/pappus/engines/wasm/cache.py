"""The on-disk cache of compiled modules, so a restarted worker does not recompile.

Entries are ``<sha256 of the binary>-<engine fingerprint>.cwasm``, the
fingerprint covering the Wasmtime version and every engine setting compiled
code depends on. They are written to a temporary file and renamed into place.
An entry that fails to load (corrupt, stale, foreign) is deleted and the
module recompiled.

Entries are *read* and deserialized from memory, not loaded with
``Module.deserialize_file``: that maps the file for the module's lifetime, and
anything truncating or rewriting it in place (``cp`` over it, a corrupting
test) kills the whole worker with ``SIGBUS``. The price is paid once per
function at registration or restart: 90 µs instead of 34 µs for a 32 KB C
program (91 KB compiled), measured with both loaders side by side.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import tempfile
from pathlib import Path

import wasmtime

WASMTIME_VERSION = importlib.metadata.version("wasmtime")
SUFFIX = ".cwasm"


def fingerprint(*settings: str) -> str:
    """A short digest of the Wasmtime version and ``settings``."""
    text = ";".join((f"wasmtime={WASMTIME_VERSION}", *settings))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ModuleCache:
    """Loads and stores compiled modules of one engine configuration."""

    def __init__(self, engine: wasmtime.Engine, engine_fingerprint: str) -> None:
        self._engine = engine
        self.fingerprint = engine_fingerprint

    def path(self, cache_dir: Path, digest: str) -> Path:
        """Where the module with binary sha256 ``digest`` is cached."""
        return cache_dir / f"{digest}-{self.fingerprint}{SUFFIX}"

    def load(self, cache_dir: Path | None, digest: str) -> wasmtime.Module | None:
        """The cached module, or ``None`` (absent or unusable, then deleted)."""
        if cache_dir is None:
            return None
        path = self.path(cache_dir, digest)
        if not path.is_file():
            return None
        try:
            return wasmtime.Module.deserialize(self._engine, path.read_bytes())
        except (wasmtime.WasmtimeError, OSError):
            with contextlib.suppress(OSError):
                path.unlink()
            return None

    def store(self, cache_dir: Path | None, digest: str, module: wasmtime.Module) -> None:
        """Persist ``module``; a failure to write only costs a recompile later."""
        if cache_dir is None:
            return
        temporary = ""
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=cache_dir, prefix=".tmp-", suffix=SUFFIX)
            with os.fdopen(fd, "wb") as handle:
                handle.write(module.serialize())
            os.replace(temporary, self.path(cache_dir, digest))
        except OSError:
            if temporary:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
