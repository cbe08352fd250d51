"""Worker configuration as one typed value object.

Sources, highest precedence first:

1. command-line options (``--kebab-case``),
2. environment variables ``PAPPUS_UPPER_SNAKE``, then Dandelion's bare names
   for the options Dandelion has (``PORT``, ``TOTAL_CORES``, ``IO_CONCURRENCY``,
   ``ANY_SHARDING_MODE``, ``BIN_PRELOAD_PATH``; ``CONFIG_PATH`` for the file),
   so a Dandelion deployment's environment starts pappus; a ``PAPPUS_`` name
   wins over the bare one,
3. a JSON file (``--config FILE``, ``PAPPUS_CONFIG`` or Dandelion's
   ``CONFIG_PATH``), keys ``snake_case``; Dandelion's options that have no
   meaning here (:data:`DANDELION_IGNORED`) are accepted and logged,
4. the defaults below.

A source only overrides when it actually sets a value: unlike Dandelion, a CLI
value equal to the default still wins over the file. Unknown keys in the file
and malformed values anywhere raise :class:`ConfigError` naming the source and
the option. The environment is read only here, at the edge.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_PORT = 8080
DEFAULT_HOST = "127.0.0.1"
DEFAULT_QUEUE_SIZE = 4096
DEFAULT_TIMEOUT_MS = 10_000
DEFAULT_MEMORY_BYTES = 128 * 1024 * 1024
DEFAULT_MAX_OUTPUT_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_BINARY_BYTES = 32 * 1024 * 1024
DEFAULT_ANY_SHARDING_MODE = "auto:2"
DEFAULT_IO_CONCURRENCY = 15
DEFAULT_INLINE_BUDGET_US = 1000
DEFAULT_HTTP_TIMEOUT_MS = 10_000
DEFAULT_HTTP_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
DEMO_EGRESS_ALLOW = ("127.0.0.0/8", "::1")
MAX_PROCESSES = 256
ENV_PREFIX = "PAPPUS_"
DANDELION_ENV = ("port", "total_cores", "io_concurrency", "any_sharding_mode",
                 "bin_preload_path")
"""Options also read from Dandelion's bare environment variable names."""
DANDELION_IGNORED = frozenset({
    "min_sys_cores", "max_sys_cores", "data_concurrency", "timestamp_count",
    "virtual_max_ram_multiplier", "folder_path", "node_id", "multinode_config",
    "multinode_timeout_ms", "test_mode",
})
"""Dandelion options a Dandelion config file may hold that pappus accepts and ignores
(core pinning, memory pools, the binary folder and multinode are not part of pappus)."""

logger = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A configuration value is malformed or unknown; the message names the source."""


def default_data_dir() -> Path:
    """Per-user data directory: ``$XDG_DATA_HOME/pappus`` or ``~/.local/share/pappus``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "pappus"


@dataclass(frozen=True, slots=True)
class Settings:
    """Every worker option. See ``docs/configuration.md`` for the table."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    data_dir: Path | None = None
    """``None`` means :func:`default_data_dir`."""
    total_cores: int | None = None
    """Compute slots (sandboxes running at once); ``None`` = one per CPU core."""
    processes: int = 1
    """Server processes sharing the port and the data directory (``total_cores`` and the
    compute slots are divided among them; ``queue_size`` is per process)."""
    queue_size: int = DEFAULT_QUEUE_SIZE
    inline_budget_us: int = DEFAULT_INLINE_BUDGET_US
    """How long a short function may run on the event loop's thread before it is moved
    to a compute slot (wasm only; ``0`` turns the inline fast path off)."""
    default_timeout_ms: int = DEFAULT_TIMEOUT_MS
    default_memory_bytes: int = DEFAULT_MEMORY_BYTES
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_binary_bytes: int = DEFAULT_MAX_BINARY_BYTES
    any_sharding_mode: str = DEFAULT_ANY_SHARDING_MODE
    io_concurrency: int = DEFAULT_IO_CONCURRENCY
    egress_allow: tuple[str, ...] | None = None
    """Destinations communication functions may reach (see :mod:`pappus.communication.egress`);
    ``None`` = nothing, or loopback only for ``--demo``."""
    http_timeout_ms: int = DEFAULT_HTTP_TIMEOUT_MS
    http_max_response_bytes: int = DEFAULT_HTTP_MAX_RESPONSE_BYTES
    bin_preload_path: Path | None = None
    """A Dandelion preload file (functions and compositions registered at start)."""
    http2: bool = False
    """Serve HTTP/2 (h2c) as well as HTTP/1.1, with Hypercorn instead of uvicorn."""
    local_path_root: Path | None = None
    """Directory Dandelion's ``local_path`` registrations may read binaries from;
    ``None`` refuses ``local_path``."""
    demo: bool = False
    log_level: str = "info"

    @property
    def resolved_data_dir(self) -> Path:
        """The data directory actually used."""
        return self.data_dir if self.data_dir is not None else default_data_dir()

    @property
    def effective_egress_allow(self) -> tuple[str, ...]:
        """The egress rules in force (the demo's default is loopback only)."""
        if self.egress_allow is not None:
            return self.egress_allow
        return DEMO_EGRESS_ALLOW if self.demo else ()

    @property
    def compute_slots(self) -> int:
        """Number of compute slots actually used."""
        return self.total_cores if self.total_cores is not None else (os.cpu_count() or 1)

    @property
    def slots_per_process(self) -> int:
        """Compute slots of each server process: the slots divided among the processes."""
        return max(1, self.compute_slots // self.processes)

    def validate(self) -> Settings:
        """Check ranges; raise :class:`ConfigError` naming the first bad option."""
        positive = (
            "queue_size", "default_timeout_ms", "default_memory_bytes", "max_output_bytes",
            "max_request_bytes", "max_binary_bytes", "io_concurrency", "http_timeout_ms",
            "http_max_response_bytes",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"option {name!r} must be positive, got {getattr(self, name)}")
        if self.egress_allow is not None:
            from pappus.communication.egress import EgressRuleError, parse_rule

            for rule in self.egress_allow:
                try:
                    parse_rule(rule)
                except EgressRuleError as exc:
                    raise ConfigError(f"option 'egress_allow': {exc}") from exc
        if self.inline_budget_us < 0:
            raise ConfigError(
                f"option 'inline_budget_us' must be 0 or positive, got {self.inline_budget_us}")
        if self.total_cores is not None and self.total_cores <= 0:
            raise ConfigError(f"option 'total_cores' must be positive, got {self.total_cores}")
        if not 1 <= self.processes <= MAX_PROCESSES:
            raise ConfigError(
                f"option 'processes' must be 1..{MAX_PROCESSES}, got {self.processes}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"option 'port' must be 0..65535, got {self.port}")
        return self


_FIELD_TYPES: dict[str, str] = {f.name: str(f.type) for f in fields(Settings)}


def _coerce(name: str, value: Any, source: str) -> Any:
    """Convert ``value`` to the type of option ``name``; strings come from CLI/env."""
    kind = _FIELD_TYPES[name]
    try:
        if kind in ("int", "int | None"):
            if isinstance(value, bool):
                raise TypeError("a boolean is not an integer")
            return int(value)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"not a boolean: {value!r}")
        if kind == "Path | None":
            return Path(str(value)).expanduser()
        if kind == "tuple[str, ...] | None":
            items = value.split(",") if isinstance(value, str) else value
            if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
                raise TypeError("expected a comma-separated string or a list of strings")
            return tuple(i.strip() for i in items if i.strip())
        if not isinstance(value, str):
            raise TypeError(f"expected a string, got {type(value).__name__}")
        return value
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: option {name!r}: {exc}") from exc


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """A JSON file holding an object; :class:`ConfigError` naming ``what`` and ``path`` if not."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{what} {path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} {path} must hold a JSON object")
    return raw


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a JSON config file into ``{option: value}``; unknown keys are an error."""
    raw = read_json_object(path, "config file")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key in DANDELION_IGNORED:
            logger.warning("config file %s: Dandelion option %r has no meaning in pappus and "
                           "is ignored", path, key)
            continue
        if key not in _FIELD_TYPES:
            known = ", ".join(sorted(_FIELD_TYPES))
            raise ConfigError(f"config file {path}: unknown option {key!r} (known: {known})")
        values[key] = _coerce(key, value, f"config file {path}")
    return values


def read_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """Options set as ``PAPPUS_UPPER_SNAKE`` environment variables."""
    values: dict[str, Any] = {}
    for name in DANDELION_ENV:
        if name.upper() in environ:
            values[name] = _coerce(name, environ[name.upper()], f"environment {name.upper()}")
    for name in _FIELD_TYPES:
        env_name = ENV_PREFIX + name.upper()
        if env_name in environ:
            values[name] = _coerce(name, environ[env_name], f"environment {env_name}")
    return values


def load_settings(
    cli: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Merge defaults < file < environment < CLI; ``None`` values in ``cli`` mean unset."""
    env = dict(os.environ if environ is None else environ)
    if config_file is None and env.get(ENV_PREFIX + "CONFIG"):
        config_file = Path(env[ENV_PREFIX + "CONFIG"])
    if config_file is None and env.get("CONFIG_PATH"):  # Dandelion's name
        config_file = Path(env["CONFIG_PATH"])
    merged: dict[str, Any] = {}
    if config_file is not None:
        merged.update(read_config_file(config_file))
    merged.update(read_environment(env))
    for name, value in (cli or {}).items():
        if value is None:
            continue
        if name not in _FIELD_TYPES:
            raise ConfigError(f"unknown option {name!r}")
        merged[name] = _coerce(name, value, f"option --{name.replace('_', '-')}")
    return replace(Settings(), **merged).validate()
