"""The registry of functions and compositions: validated, prepared and persisted.

Functions, compositions and system functions share one namespace. A
registration is validated, prepared by its engine (compilation happens here,
once), and only then persisted; see :mod:`pappus.store` for crash safety. On
start the registry restores every entry from the data directory, preparing
functions from the engines' on-disk caches and rebuilding compositions from
their module sources in registration order.

Several processes may share one data directory (``serve --processes``): each
change is made under the directory's lock after catching up with what the
others committed, and :meth:`Registry.stale` / :meth:`Registry.sync` let a
process catch up before it serves a request (see :mod:`pappus.coherence`).

All methods are blocking; the HTTP layer calls them from worker threads.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pappus.composition import CompositionGraph, Signature, build_compositions
from pappus.engines.base import Artifact, Engine, FunctionSpec
from pappus.errors import BadRequest, CompositionInvalid, Conflict, NotFound, PappusError
from pappus.model import Item
from pappus.store import CompositionRecord, FunctionRecord, Snapshot, Store

logger = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
"""Function, composition and set names: identifiers, as in the composition language."""

ENGINE_NAMES = ("wasm", "process", "linux", "kvm")

MAX_TIMEOUT_MS = 24 * 3600 * 1000
"""The longest deadline a function may be registered with (a day)."""

MAX_MEMORY_BYTES = 1 << 40
"""The largest memory bound or context a function may be registered with (1 TiB): far
past any machine this runs on, and well inside what SQLite and the engines' 64-bit
arguments hold, so an absurd value is a ``bad_request`` rather than a failure later."""


@dataclass(frozen=True, slots=True)
class FunctionRegistration:
    """A request to register a function (already decoded from JSON/BSON)."""

    name: str
    engine: str
    binary: bytes
    input_sets: tuple[str, ...]
    output_sets: tuple[str, ...]
    static_sets: dict[str, tuple[Item, ...]] = field(default_factory=dict)
    timeout_ms: int | None = None
    memory_bytes: int | None = None
    context_size: int | None = None


@dataclass(frozen=True, slots=True)
class RegisteredFunction:
    """A function ready to invoke."""

    record: FunctionRecord
    engine: Engine
    artifact: Artifact

    @property
    def signature(self) -> Signature:
        """Its set names, as compositions see them."""
        return Signature(self.record.name, self.record.input_sets, self.record.output_sets)


@dataclass(frozen=True, slots=True)
class RegisteredComposition:
    """A composition ready to run."""

    record: CompositionRecord
    graph: CompositionGraph

    @property
    def signature(self) -> Signature:
        """Its set names, as enclosing compositions see them."""
        return self.graph.signature


Entry = RegisteredFunction | RegisteredComposition


def check_name(kind: str, name: object) -> str:
    """Validate an identifier; raise :class:`BadRequest` naming ``kind``."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise BadRequest(
            f"{kind} {name!r} is not a valid name: use letters, digits and '_', "
            "not starting with a digit, at most 128 characters",
            field=kind,
        )
    return name


def check_set_names(kind: str, names: Sequence[object]) -> tuple[str, ...]:
    """Validate a list of set names (identifiers, no duplicates)."""
    checked = tuple(check_name(kind, n) for n in names)
    if len(set(checked)) != len(checked):
        raise BadRequest(f"{kind} contains a duplicate name: {list(checked)}", field=kind)
    return checked


class Registry:
    """Functions and compositions by name. Thread-safe; blocking."""

    def __init__(
        self,
        store: Store,
        engines: Mapping[str, Engine],
        *,
        system_functions: Mapping[str, Signature] | None = None,
        default_timeout_ms: int,
        default_memory_bytes: int,
    ) -> None:
        self.store = store
        self.engines = dict(engines)
        self.system_functions = dict(system_functions or {})
        self.default_timeout_ms = default_timeout_ms
        self.default_memory_bytes = default_memory_bytes
        self._lock = threading.RLock()
        self._entries: dict[str, Entry] = {}
        self._reserved: set[str] = set()
        self._generation = -1
        """The store generation ``_entries`` reflects (-1: not loaded yet)."""
        self.restore_errors: list[str] = []

    def __repr__(self) -> str:
        functions = sum(isinstance(e, RegisteredFunction) for e in self._entries.values())
        return (
            f"<Registry functions={functions} "
            f"compositions={len(self._entries) - functions} dir={self.store.data_dir}>"
        )

    # -- lookup --------------------------------------------------------------

    def get(self, name: str) -> Entry:
        """The entry called ``name``; :class:`NotFound` otherwise."""
        entry = self._entries.get(name)
        if entry is None:
            raise NotFound(f"no function or composition named {name!r} is registered", name=name)
        return entry

    def functions(self) -> list[RegisteredFunction]:
        """Registered functions in registration order."""
        return [e for e in self._entries.values() if isinstance(e, RegisteredFunction)]

    def compositions(self) -> list[RegisteredComposition]:
        """Registered compositions in registration order."""
        return [e for e in self._entries.values() if isinstance(e, RegisteredComposition)]

    def signature(self, name: str) -> Signature | None:
        """The signature compositions may declare for ``name`` (None if unknown)."""
        entry = self._entries.get(name)
        if entry is not None:
            return entry.signature
        return self.system_functions.get(name)

    # -- functions -----------------------------------------------------------

    def add_function(self, request: FunctionRegistration) -> RegisteredFunction:
        """Validate, prepare and persist a function. Raises on any problem."""
        name = check_name("function name", request.name)
        engine = self.engines.get(request.engine)
        if engine is None:
            available = ", ".join(sorted(self.engines)) or "none"
            raise BadRequest(
                f"engine {request.engine!r} is not available on this worker "
                f"(available: {available})",
                field="engine",
            )
        inputs = check_set_names("input_sets", request.input_sets)
        outputs = check_set_names("output_sets", request.output_sets)
        for set_name in request.static_sets:
            if set_name not in inputs:
                raise BadRequest(
                    f"static set {set_name!r} is not one of the input sets {list(inputs)}",
                    field="static_sets",
                )
        timeout_ms = self._bounded("timeout_ms", request.timeout_ms, self.default_timeout_ms,
                                   MAX_TIMEOUT_MS)
        memory = self._bounded("memory_bytes", request.memory_bytes, self.default_memory_bytes,
                               MAX_MEMORY_BYTES)
        if request.context_size is not None:
            self._bounded("context_size", request.context_size, 0, MAX_MEMORY_BYTES)
            if request.memory_bytes is None:
                memory = max(memory, request.context_size)  # a Dandelion client's only bound
            elif request.context_size > memory:
                raise BadRequest(f"context_size {request.context_size} exceeds memory_bytes "
                                 f"{memory}: the context is the function's memory",
                                 field="context_size")
        sha256 = hashlib.sha256(request.binary).hexdigest()
        with self._lock:
            self._reserve(name)
        try:
            spec = FunctionSpec(
                name=name, engine=request.engine, binary=request.binary, sha256=sha256,
                input_sets=inputs, output_sets=outputs, context_size=request.context_size,
            )
            artifact = engine.prepare(spec, self.store.cache_dir / request.engine)
            with self._lock, self.store.lock.held():
                self._sync_locked()  # another process may have taken the name meanwhile
                self._check_free(name)
                self.store.put_blob(sha256, request.binary)
                record = FunctionRecord(
                    name=name, engine=request.engine, sha256=sha256,
                    binary_size=len(request.binary), input_sets=inputs, output_sets=outputs,
                    static_sets=dict(request.static_sets), timeout_ms=timeout_ms,
                    memory_bytes=memory, context_size=request.context_size,
                    created_at=time.time(),
                )
                self.store.insert_function(record)
                entry = RegisteredFunction(record, engine, artifact)
                self._entries[name] = entry
                self._generation = self.store.generation()
            return entry
        finally:
            with self._lock:
                self._reserved.discard(name)

    @staticmethod
    def _bounded(field_name: str, value: int | None, default: int, maximum: int) -> int:
        """``value`` (``default`` if not given), refused unless in ``1..maximum``."""
        if value is None:
            return default
        if value <= 0:
            raise BadRequest(f"{field_name} must be positive, got {value}", field=field_name)
        if value > maximum:
            raise BadRequest(f"{field_name} {value} exceeds the maximum of {maximum}",
                             field=field_name, maximum=maximum)
        return value

    def _reserve(self, name: str) -> None:
        """Claim ``name`` for a registration in progress (caller holds the lock)."""
        self._check_free(name)
        if name in self._reserved:
            raise Conflict(f"{name!r} is being registered by another request", name=name)
        self._reserved.add(name)

    def _check_free(self, name: str) -> None:
        if name in self.system_functions:
            raise Conflict(f"{name!r} is a system function and cannot be replaced", name=name)
        existing = self._entries.get(name)
        if existing is not None:
            kind = "function" if isinstance(existing, RegisteredFunction) else "composition"
            raise Conflict(f"a {kind} named {name!r} is already registered", name=name)

    def remove(self, name: str, kind: type[Entry]) -> None:
        """Delete a function or composition; refuse while a composition uses it."""
        with self._lock, self.store.lock.held():
            self._sync_locked()
            entry = self._entries.get(name)
            if not isinstance(entry, kind):
                noun = "function" if kind is RegisteredFunction else "composition"
                raise NotFound(f"no {noun} named {name!r} is registered", name=name)
            users = [c.record.name for c in self.compositions() if name in c.graph.dependencies]
            if users:
                raise Conflict(
                    f"{name!r} is used by composition(s) {users}; delete those first",
                    name=name, used_by=users,
                )
            if isinstance(entry, RegisteredFunction):
                self.store.delete_function(name)
            else:
                self.store.delete_composition(name)
            del self._entries[name]
            self._generation = self.store.generation()

    # -- compositions --------------------------------------------------------

    def add_compositions(self, source: str) -> list[RegisteredComposition]:
        """Parse, validate and persist every composition in ``source`` (all or nothing)."""
        with self._lock, self.store.lock.held():
            self._sync_locked()
            try:
                graphs = build_compositions(source, self.signature)
            except CompositionInvalid as exc:
                if exc.detail.get("kind") == "DuplicateIdentifier":
                    raise Conflict(exc.message, **exc.detail) from exc
                raise
            for graph in graphs:
                if graph.name in self._reserved or graph.name in self.system_functions:
                    raise Conflict(f"{graph.name!r} is already taken", name=graph.name)
            module_seq = self.store.next_module_seq()
            now = time.time()
            entries = [
                RegisteredComposition(
                    CompositionRecord(
                        name=g.name, module_seq=module_seq, source=source,
                        input_sets=g.input_sets, output_sets=g.output_sets,
                        dependencies=tuple(sorted(g.dependencies)), created_at=now,
                    ),
                    g,
                )
                for g in graphs
            ]
            self.store.insert_compositions([e.record for e in entries])
            for entry in entries:
                self._entries[entry.record.name] = entry
            self._generation = self.store.generation()
            return entries

    # -- restore and catching up ----------------------------------------------

    def restore(self) -> None:
        """Load every stored entry. A broken entry is logged and skipped, never fatal."""
        with self._lock, self.store.lock.held():
            self.store.repair_hint()
            self._apply(self.store.snapshot())
            # Under the lock: no other process is between storing a blob and its row.
            self.store.collect_garbage()

    def stale(self) -> bool:
        """Whether another process may have changed the registry since the last sync.

        One shared-memory read: cheap enough to ask before every request.
        """
        return self.store.hint.read() != self._generation

    def sync(self) -> None:
        """Catch up with what every process has committed (blocking: may prepare functions)."""
        with self._lock:
            self._sync_locked()

    def _sync_locked(self) -> None:
        if self.store.generation() != self._generation:
            self._apply(self.store.snapshot())

    def _apply(self, snapshot: Snapshot) -> None:
        """Make the entries those of ``snapshot``, keeping every entry that did not change."""
        entries: dict[str, Entry] = {}
        for record in snapshot.functions:
            kept = self._entries.get(record.name)
            if isinstance(kept, RegisteredFunction) and kept.record == record:
                entries[record.name] = kept
                continue
            try:
                entries[record.name] = self._prepare_stored(record)
            except (PappusError, OSError) as exc:
                self._report(f"function {record.name!r} could not be restored: {exc}")
        for composition in snapshot.compositions:
            kept = self._entries.get(composition.name)
            if isinstance(kept, RegisteredComposition) and kept.record == composition:
                entries[composition.name] = kept
                continue
            try:
                entries[composition.name] = self._build_stored(composition, entries)
            except PappusError as exc:
                self._report(f"composition {composition.name!r} could not be restored: {exc}")
        self._entries = entries
        self._generation = snapshot.generation

    def _report(self, message: str) -> None:
        logger.error(message)
        if message not in self.restore_errors:
            self.restore_errors.append(message)

    def _prepare_stored(self, record: FunctionRecord) -> RegisteredFunction:
        engine = self.engines.get(record.engine)
        if engine is None:
            raise BadRequest(f"engine {record.engine!r} is not available on this worker")
        binary = self.store.get_blob(record.sha256)
        if hashlib.sha256(binary).hexdigest() != record.sha256:
            raise BadRequest(f"stored binary {record.sha256} is corrupt")
        spec = FunctionSpec(
            name=record.name, engine=record.engine, binary=binary, sha256=record.sha256,
            input_sets=record.input_sets, output_sets=record.output_sets,
            context_size=record.context_size,
        )
        artifact = engine.prepare(spec, self.store.cache_dir / record.engine)
        return RegisteredFunction(record, engine, artifact)

    def _build_stored(self, record: CompositionRecord,
                      entries: Mapping[str, Entry]) -> RegisteredComposition:
        def earlier(name: str) -> Signature | None:
            # Only what existed when the module was registered is visible to it.
            entry = entries.get(name)
            if entry is None:
                return self.system_functions.get(name)
            if isinstance(entry, RegisteredComposition) and (
                entry.record.module_seq >= record.module_seq
            ):
                return None
            return entry.signature

        graphs = {g.name: g for g in build_compositions(record.source, earlier)}
        graph = graphs.get(record.name)
        if graph is None:
            raise BadRequest(f"composition {record.name!r} is missing from its stored source")
        return RegisteredComposition(record, graph)
