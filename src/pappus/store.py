"""Durable storage for the registry: SQLite metadata plus content-addressed blobs.

Layout of the data directory::

    registry.sqlite3        metadata (functions, compositions), WAL mode
    blobs/ab/abcdef...      binaries, named by their sha256
    cache/<engine>/         compiled artifacts, owned by each engine
    registry.lock           held while the registry changes (see pappus.coherence)
    generation              the registry's change counter, mirrored for cheap reads

Crash safety (``kill -9`` at any instant): a blob is written to a temporary
file, fsynced and atomically renamed into place *before* the metadata row that
names it is committed in one SQLite transaction. A crash before the commit
leaves at most an orphan blob (collected by :meth:`Store.collect_garbage`),
never a row without its binary, so a function is either fully registered or
not at all.

Every change increases the ``generation`` counter in the same transaction
and then publishes it to the shared hint, so other processes on the same
directory notice it (:mod:`pappus.coherence`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pappus.coherence import DataDirectoryLock, GenerationHint
from pappus.model import Item

SCHEMA = """
CREATE TABLE IF NOT EXISTS functions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    engine TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    binary_size INTEGER NOT NULL,
    input_sets TEXT NOT NULL,
    output_sets TEXT NOT NULL,
    static_sets TEXT NOT NULL,
    timeout_ms INTEGER NOT NULL,
    memory_bytes INTEGER NOT NULL,
    context_size INTEGER,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS compositions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    module_seq INTEGER NOT NULL,
    source TEXT NOT NULL,
    input_sets TEXT NOT NULL,
    output_sets TEXT NOT NULL,
    dependencies TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class FunctionRecord:
    """The stored description of a registered function."""

    name: str
    engine: str
    sha256: str
    binary_size: int
    input_sets: tuple[str, ...]
    output_sets: tuple[str, ...]
    static_sets: dict[str, tuple[Item, ...]]
    timeout_ms: int
    memory_bytes: int
    context_size: int | None
    created_at: float

    def to_json(self) -> dict[str, Any]:
        """The record as the HTTP API shows it (static item data as base64)."""
        return {
            "name": self.name,
            "kind": "function",
            "engine": self.engine,
            "sha256": self.sha256,
            "binary_size": self.binary_size,
            "input_sets": list(self.input_sets),
            "output_sets": list(self.output_sets),
            "static_sets": encode_static_sets(self.static_sets),
            "timeout_ms": self.timeout_ms,
            "memory_bytes": self.memory_bytes,
            "context_size": self.context_size,
            "created_at": self.created_at,
        }


@dataclass(frozen=True, slots=True)
class CompositionRecord:
    """The stored description of a registered composition (its module's source)."""

    name: str
    module_seq: int
    source: str
    input_sets: tuple[str, ...]
    output_sets: tuple[str, ...]
    dependencies: tuple[str, ...]
    created_at: float

    def to_json(self) -> dict[str, Any]:
        """The record as the HTTP API shows it."""
        return {
            "name": self.name,
            "kind": "composition",
            "input_sets": list(self.input_sets),
            "output_sets": list(self.output_sets),
            "dependencies": list(self.dependencies),
            "source": self.source,
            "created_at": self.created_at,
        }


def encode_static_sets(static_sets: dict[str, tuple[Item, ...]]) -> dict[str, Any]:
    """Static sets as JSON: ``{set: [{"name", "key", "data": base64}]}``."""
    return {
        set_name: [
            {"name": i.name, "key": i.key, "data": base64.b64encode(i.data).decode("ascii")}
            for i in items
        ]
        for set_name, items in static_sets.items()
    }


def decode_static_sets(raw: dict[str, Any]) -> dict[str, tuple[Item, ...]]:
    """Inverse of :func:`encode_static_sets` for trusted (stored) data."""
    return {
        set_name: tuple(
            Item(str(i["name"]), int(i["key"]), base64.b64decode(i["data"])) for i in items
        )
        for set_name, items in raw.items()
    }


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Store:
    """Thread-safe access to the data directory. All methods are blocking."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.blob_dir = data_dir / "blobs"
        self.cache_dir = data_dir / "cache"
        for directory in (data_dir, self.blob_dir, self.cache_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            data_dir / "registry.sqlite3", check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self.lock = DataDirectoryLock(data_dir / "registry.lock")
        """Held by whoever changes the registry (any thread, any process)."""
        self.hint = GenerationHint(data_dir / "generation")

    def close(self) -> None:
        """Close the database and the shared files. Idempotent."""
        with self._lock:
            self._db.close()
        self.lock.close()
        self.hint.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextlib.contextmanager
    def _change(self) -> Iterator[sqlite3.Connection]:
        """A transaction that changes the registry: bumps and then publishes the generation."""
        with self._transaction() as db:
            yield db
            db.execute(
                "INSERT INTO counters (name, value) VALUES ('generation', 1)"
                " ON CONFLICT(name) DO UPDATE SET value = value + 1"
            )
            generation = _generation(db)
        self.hint.publish(generation)

    def generation(self) -> int:
        """The registry's generation as committed (0 before any change)."""
        with self._lock:
            return _generation(self._db)

    def repair_hint(self) -> None:
        """Publish the committed generation (a process may have died before publishing).

        Callers hold :attr:`lock`.
        """
        self.hint.publish(self.generation())

    def snapshot(self) -> Snapshot:
        """The generation with every function and composition row, read consistently."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                generation = _generation(self._db)
                functions = _read_functions(self._db)
                compositions = _read_compositions(self._db)
            finally:
                self._db.execute("COMMIT")
        return Snapshot(generation, functions, compositions)

    # -- blobs ---------------------------------------------------------------

    def blob_path(self, sha256: str) -> Path:
        """Where the blob with this digest lives."""
        return self.blob_dir / sha256[:2] / sha256

    def put_blob(self, sha256: str, data: bytes) -> Path:
        """Durably store ``data`` under its digest (no-op if present)."""
        path = self.blob_path(sha256)
        if path.exists() and path.stat().st_size == len(data):
            return path
        path.parent.mkdir(exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as tmp:
                tmp.write(data)
                tmp.flush()
                os.fsync(tmp.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        _fsync_directory(path.parent)
        return path

    def get_blob(self, sha256: str) -> bytes:
        """Read a stored blob."""
        return self.blob_path(sha256).read_bytes()

    def collect_garbage(self) -> int:
        """Delete temporaries and blobs no function references; return how many."""
        with self._lock:
            used = {row[0] for row in self._db.execute("SELECT sha256 FROM functions")}
        removed = 0
        for path in self.blob_dir.glob("*/*"):
            if path.name.startswith(".tmp-") or path.name not in used:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed += 1
        return removed

    # -- functions -----------------------------------------------------------

    def insert_function(self, record: FunctionRecord) -> None:
        """Commit a function row (its blob must already be stored)."""
        with self._change() as db:
            db.execute(
                "INSERT INTO functions (name, engine, sha256, binary_size, input_sets,"
                " output_sets, static_sets, timeout_ms, memory_bytes, context_size, created_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    record.name, record.engine, record.sha256, record.binary_size,
                    json.dumps(record.input_sets), json.dumps(record.output_sets),
                    json.dumps(encode_static_sets(record.static_sets)), record.timeout_ms,
                    record.memory_bytes, record.context_size, record.created_at,
                ),
            )

    def delete_function(self, name: str) -> bool:
        """Delete a function row; True if it existed."""
        with self._change() as db:
            deleted = db.execute("DELETE FROM functions WHERE name = ?", (name,)).rowcount > 0
        return deleted

    def load_functions(self) -> list[FunctionRecord]:
        """Every function row, in registration order."""
        with self._lock:
            return _read_functions(self._db)

    # -- compositions --------------------------------------------------------

    def next_module_seq(self) -> int:
        """A fresh, increasing number identifying one composition module."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO counters (name, value) VALUES ('module', 1)"
                " ON CONFLICT(name) DO UPDATE SET value = value + 1"
            )
            row = db.execute("SELECT value FROM counters WHERE name = 'module'").fetchone()
        return int(row[0])

    def insert_compositions(self, records: list[CompositionRecord]) -> None:
        """Commit all compositions of one module atomically."""
        with self._change() as db:
            db.executemany(
                "INSERT INTO compositions (name, module_seq, source, input_sets, output_sets,"
                " dependencies, created_at) VALUES (?,?,?,?,?,?,?)",
                [
                    (
                        r.name, r.module_seq, r.source, json.dumps(r.input_sets),
                        json.dumps(r.output_sets), json.dumps(r.dependencies), r.created_at,
                    )
                    for r in records
                ],
            )

    def delete_composition(self, name: str) -> bool:
        """Delete a composition row; True if it existed."""
        with self._change() as db:
            deleted = db.execute("DELETE FROM compositions WHERE name = ?", (name,)).rowcount > 0
        return deleted

    def load_compositions(self) -> list[CompositionRecord]:
        """Every composition row, in registration order."""
        with self._lock:
            return _read_compositions(self._db)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the registry held at one generation."""

    generation: int
    functions: list[FunctionRecord]
    compositions: list[CompositionRecord]


def _generation(db: sqlite3.Connection) -> int:
    row = db.execute("SELECT value FROM counters WHERE name = 'generation'").fetchone()
    return int(row[0]) if row else 0


def _read_functions(db: sqlite3.Connection) -> list[FunctionRecord]:
    rows = db.execute(
        "SELECT name, engine, sha256, binary_size, input_sets, output_sets, static_sets,"
        " timeout_ms, memory_bytes, context_size, created_at FROM functions ORDER BY seq"
    ).fetchall()
    return [
        FunctionRecord(
            name=row[0], engine=row[1], sha256=row[2], binary_size=row[3],
            input_sets=tuple(json.loads(row[4])), output_sets=tuple(json.loads(row[5])),
            static_sets=decode_static_sets(json.loads(row[6])), timeout_ms=row[7],
            memory_bytes=row[8], context_size=row[9], created_at=row[10],
        )
        for row in rows
    ]


def _read_compositions(db: sqlite3.Connection) -> list[CompositionRecord]:
    rows = db.execute(
        "SELECT name, module_seq, source, input_sets, output_sets, dependencies,"
        " created_at FROM compositions ORDER BY seq"
    ).fetchall()
    return [
        CompositionRecord(
            name=row[0], module_seq=row[1], source=row[2],
            input_sets=tuple(json.loads(row[3])), output_sets=tuple(json.loads(row[4])),
            dependencies=tuple(json.loads(row[5])), created_at=row[6],
        )
        for row in rows
    ]
