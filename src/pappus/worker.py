"""The worker: engines, registry, dispatcher and metrics wired together.

:class:`Worker` is what the HTTP server, the CLI's ``serve`` and the tests
start. It owns every long-lived resource and releases them in ``stop``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping

from pappus.communication.egress import EgressPolicy
from pappus.communication.http import HttpFunction
from pappus.composition import parse_any_sharding_mode
from pappus.config import Settings
from pappus.dispatcher import Dispatcher
from pappus.engines import create_engines
from pappus.engines.base import Engine
from pappus.errors import Conflict
from pappus.registry import FunctionRegistration, RegisteredFunction, Registry
from pappus.server.metrics import Metrics
from pappus.store import Store

logger = logging.getLogger(__name__)


class Worker:
    """A running pappus worker node (without its HTTP front end)."""

    def __init__(self, settings: Settings, engines: Mapping[str, Engine] | None = None,
                 *, metrics: Metrics | None = None, process_index: int = 0) -> None:
        self.settings = settings
        self._engines = dict(engines) if engines is not None else None
        self.metrics = metrics if metrics is not None else Metrics()
        self.process_index = process_index
        """Which server process this is (0..processes-1; see :mod:`pappus.server.processes`)."""
        self._store: Store | None = None
        self._registry: Registry | None = None
        self._dispatcher: Dispatcher | None = None
        self.http: HttpFunction | None = None

    @property
    def registry(self) -> Registry:
        """The function/composition registry (after :meth:`start`)."""
        if self._registry is None:
            raise RuntimeError("the worker is not started")
        return self._registry

    @property
    def dispatcher(self) -> Dispatcher:
        """The dispatcher (after :meth:`start`)."""
        if self._dispatcher is None:
            raise RuntimeError("the worker is not started")
        return self._dispatcher

    async def start(self) -> None:
        """Open the data directory, restore the registry, start the compute slots."""
        settings = self.settings
        try:
            sharding = parse_any_sharding_mode(settings.any_sharding_mode)
        except ValueError as exc:
            from pappus.config import ConfigError

            raise ConfigError(f"option 'any_sharding_mode': {exc}") from exc
        if self._engines is None:
            self._engines = create_engines(settings)
        self._store = await asyncio.to_thread(Store, settings.resolved_data_dir)
        self.http = HttpFunction(
            EgressPolicy(settings.effective_egress_allow),
            timeout_s=settings.http_timeout_ms / 1000,
            max_response_bytes=settings.http_max_response_bytes,
            io_concurrency=settings.io_concurrency,
        )
        system_functions = {self.http.name: self.http}
        self._registry = Registry(
            self._store,
            self._engines,
            default_timeout_ms=settings.default_timeout_ms,
            default_memory_bytes=settings.default_memory_bytes,
            system_functions={name: f.signature for name, f in system_functions.items()},
        )
        await asyncio.to_thread(self._registry.restore)
        self._dispatcher = Dispatcher(
            self._registry,
            slots=settings.slots_per_process,
            queue_size=settings.queue_size,
            max_output_bytes=settings.max_output_bytes,
            default_timeout_ms=settings.default_timeout_ms,
            sharding=sharding,
            observer=self.metrics,
            system_functions=system_functions,
            inline_budget_s=settings.inline_budget_us / 1e6,
        )
        if settings.bin_preload_path is not None:
            from pappus.preload import apply_preload

            report = await asyncio.to_thread(apply_preload, settings.bin_preload_path,
                                             self._registry, settings.max_binary_bytes)
            self.registry.restore_errors.extend(report.failed)
            logger.info("preload %s: %d registered, %d already present, %d failed",
                        settings.bin_preload_path, len(report.registered), len(report.present),
                        len(report.failed))
        if settings.demo:
            await asyncio.to_thread(self.install_demo)
        logger.info(
            "worker ready: %d function(s), %d composition(s), %d compute slot(s), data in %s",
            len(self._registry.functions()), len(self._registry.compositions()),
            settings.slots_per_process, settings.resolved_data_dir,
        )

    def install_demo(self) -> None:
        """Register the demo functions and composition unless already present."""
        from pappus.demo import DEMO_COMPOSITION, load_demo

        registry = self.registry
        for demo in load_demo():
            try:
                registry.add_function(
                    FunctionRegistration(
                        name=demo.name, engine=demo.engine, binary=demo.binary,
                        input_sets=tuple(demo.input_sets), output_sets=tuple(demo.output_sets),
                    )
                )
            except Conflict:
                entry = registry.get(demo.name)
                digest = hashlib.sha256(demo.binary).hexdigest()
                if not (isinstance(entry, RegisteredFunction) and entry.record.sha256 == digest):
                    # Never overwritten: it may be the user's own function of that name.
                    logger.warning("demo function %s: a different function of that name is "
                                   "registered and is kept; delete it to get this version's "
                                   "demo", demo.name)
                else:
                    logger.debug("demo function %s already registered", demo.name)
        try:
            registry.add_compositions(DEMO_COMPOSITION)
        except Conflict:
            logger.debug("demo composition already registered")

    async def stop(self) -> None:
        """Drain the dispatcher, close engines and the store. Idempotent."""
        if self._dispatcher is not None:
            await self._dispatcher.close()
            self._dispatcher = None
        if self.http is not None:
            await self.http.aclose()
        for engine in (self._engines or {}).values():
            await asyncio.to_thread(engine.close)
        if self._store is not None:
            self._store.close()
            self._store = None
