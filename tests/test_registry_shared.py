"""Several registries (as in several processes) on one data directory stay in agreement."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pappus.errors import Conflict, NotFound
from pappus.registry import (
    RegisteredComposition,
    RegisteredFunction,
    Registry,
)
from pappus.store import Store
from tests.fakes import FakeEngine
from tests.test_registry import CHAIN, reg

USES_MM = CHAIN.replace("composition chain", "composition twice")


def open_registry(data: Path, engine: FakeEngine | None = None) -> Registry:
    registry = Registry(Store(data), {"wasm": engine or FakeEngine()},
                        default_timeout_ms=5000, default_memory_bytes=1 << 26)
    registry.restore()
    return registry


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Registry, Registry]]:
    first, second = open_registry(tmp_path / "data"), open_registry(tmp_path / "data")
    yield first, second
    first.store.close()
    second.store.close()


def test_a_registration_elsewhere_is_seen_after_sync(pair: tuple[Registry, Registry]) -> None:
    first, second = pair
    assert not second.stale()
    entry = first.add_function(reg("mm"))
    assert not first.stale()  # its own change does not make it stale
    assert second.stale()
    with pytest.raises(NotFound):
        second.get("mm")
    second.sync()
    assert not second.stale()
    seen = second.get("mm")
    assert isinstance(seen, RegisteredFunction)
    assert seen.record == entry.record


def test_a_deletion_elsewhere_is_seen_after_sync(pair: tuple[Registry, Registry]) -> None:
    first, second = pair
    first.add_function(reg("mm"))
    second.sync()
    first.remove("mm", RegisteredFunction)
    assert second.stale()
    second.sync()
    with pytest.raises(NotFound):
        second.get("mm")


def test_a_name_taken_elsewhere_is_a_conflict_without_a_sync(
        pair: tuple[Registry, Registry]) -> None:
    first, second = pair
    first.add_function(reg("mm"))
    with pytest.raises(Conflict, match="already registered"):
        second.add_function(reg("mm", b"echo"))
    with pytest.raises(Conflict):
        second.add_compositions("composition mm (A) => (B) { }")
    assert [f.record.name for f in second.functions()] == ["mm"]


def test_compositions_and_deletions_see_the_other_process(
        pair: tuple[Registry, Registry]) -> None:
    first, second = pair
    first.add_function(reg("mm"))
    # The second never synced explicitly: the composition's check catches up itself.
    assert [c.record.name for c in second.add_compositions(USES_MM)] == ["twice"]
    with pytest.raises(Conflict, match="used by composition"):
        first.remove("mm", RegisteredFunction)
    second.remove("twice", RegisteredComposition)
    first.remove("mm", RegisteredFunction)
    second.sync()
    assert second.functions() == [] and second.compositions() == []


def test_unchanged_entries_are_not_prepared_again(tmp_path: Path) -> None:
    engine = FakeEngine()
    first, second = open_registry(tmp_path / "data"), open_registry(tmp_path / "data", engine)
    first.add_function(reg("mm"))
    second.sync()
    kept = second.get("mm")
    first.add_function(reg("other"))
    second.sync()
    assert second.get("mm") is kept
    assert engine.prepared == 2
    # A name deleted and registered again with another binary is a new entry.
    first.remove("mm", RegisteredFunction)
    first.add_function(reg("mm", b"echo"))
    second.sync()
    replaced = second.get("mm")
    assert isinstance(replaced, RegisteredFunction) and replaced is not kept
    assert replaced.artifact.spec.binary == b"echo"  # type: ignore[attr-defined]


def test_a_change_whose_hint_was_lost_is_published_by_the_next_start(tmp_path: Path) -> None:
    first, second = open_registry(tmp_path / "data"), open_registry(tmp_path / "data")
    before = first.store.hint.read()
    first.add_function(reg("mm"))
    first.store.hint.publish(before)  # as if the process died between commit and publish
    assert not second.stale()
    third = open_registry(tmp_path / "data")  # a restarted process
    assert second.stale()
    second.sync()
    assert isinstance(second.get("mm"), RegisteredFunction)
    assert isinstance(third.get("mm"), RegisteredFunction)


def test_restore_waits_for_a_change_in_progress(pair: tuple[Registry, Registry],
                                                tmp_path: Path) -> None:
    first, _ = pair
    finished = threading.Event()

    def restore() -> None:
        open_registry(tmp_path / "data")
        finished.set()

    with first.store.lock.held():
        thread = threading.Thread(target=restore)
        thread.start()
        time.sleep(0.2)
        assert not finished.is_set(), "restore (and its garbage collection) ran during a change"
    thread.join(timeout=10)
    assert finished.is_set()


def _register_all(data: str, names: list[str], results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    registry = open_registry(Path(data))
    for name in names:
        try:
            registry.add_function(reg(name))
            results.put((name, "registered"))
        except Conflict:
            results.put((name, "conflict"))


def test_two_processes_registering_the_same_names(tmp_path: Path) -> None:
    data = tmp_path / "data"
    open_registry(data).store.close()  # create the directory before the race
    names = [f"f{i}" for i in range(40)]
    context = multiprocessing.get_context("fork")
    results: multiprocessing.Queue = context.Queue()  # type: ignore[type-arg]
    workers = [context.Process(target=_register_all, args=(str(data), order, results))
               for order in (names, names[::-1])]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=60) for _ in range(2 * len(names))]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    registered = sorted(name for name, outcome in outcomes if outcome == "registered")
    assert registered == sorted(names), "every name is registered exactly once"
    assert sum(outcome == "conflict" for _, outcome in outcomes) == len(names)
    assert sorted(f.record.name for f in open_registry(data).functions()) == sorted(names)
