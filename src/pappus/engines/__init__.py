"""Isolation engines behind one contract (:mod:`pappus.engines.base`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pappus.engines.base import (
    Artifact as Artifact,
)
from pappus.engines.base import (
    Engine as Engine,
)
from pappus.engines.base import (
    EngineStatistics as EngineStatistics,
)
from pappus.engines.base import (
    FunctionSpec as FunctionSpec,
)
from pappus.engines.base import (
    InvocationResult as InvocationResult,
)
from pappus.engines.base import (
    Limits as Limits,
)

if TYPE_CHECKING:
    from pappus.config import Settings


def create_engines(settings: Settings) -> dict[str, Engine]:
    """Instantiate every engine available on this machine, by registration name.

    ``process`` and ``linux`` need Linux on x86-64 (their ABI and seccomp
    filters are x86-64's); elsewhere they are simply absent, and registering a function for
    them names the engines that are available. ``kvm`` also needs ``/dev/kvm``
    to open read-write.
    """
    import platform
    import sys

    from pappus.engines.wasm import WasmEngine

    helpers = settings.resolved_data_dir / "runner"  # native helpers, built once
    engines: dict[str, Engine] = {"wasm": WasmEngine(helper_dir=helpers)}
    if sys.platform == "linux" and platform.machine() in ("x86_64", "AMD64"):
        from pappus.engines.process import ProcessEngine

        engines["process"] = ProcessEngine(helpers)
        from pappus.engines.linux import LinuxEngine

        engines["linux"] = LinuxEngine(helpers)
        from pappus.engines.kvm import KvmEngine, kvm_available

        if kvm_available():  # absent, like ``process`` elsewhere, where /dev/kvm does not open
            engines["kvm"] = KvmEngine(helpers)
    return engines
