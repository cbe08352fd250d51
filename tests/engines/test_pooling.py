"""The pooling-allocator adapter (pappus.engines.wasm.pooling)."""

from __future__ import annotations

import pytest
import wasmtime

from pappus.engines.wasm import native
from pappus.engines.wasm.pooling import PoolSettings, can_reserve, pooled_engine
from tests.engines.support import wat2wasm

MODULE = '(module (memory (export "memory") 1) (func (export "_start")))'


def test_settings_are_validated_and_fingerprinted() -> None:
    with pytest.raises(ValueError):
        PoolSettings(instances=0)
    assert PoolSettings(instances=8).fingerprint != PoolSettings(instances=9).fingerprint
    assert PoolSettings(instances=2, max_memory_bytes=1 << 20).reservation_bytes > 2 << 20


def test_the_pool_caps_live_instances() -> None:
    engine, settings = pooled_engine(PoolSettings(instances=2, max_memory_bytes=1 << 20))
    assert settings is not None
    pre = wasmtime.Linker(engine).instantiate_pre(wasmtime.Module(engine, wat2wasm(
        MODULE)))
    with native.Sandbox(engine, 1 << 20) as first, native.Sandbox(engine, 1 << 20) as second:
        first.instantiate(pre)
        second.instantiate(pre)
        with native.Sandbox(engine, 1 << 20) as third, pytest.raises(wasmtime.WasmtimeError):
            third.instantiate(pre)  # why the engine bounds sandboxes by a semaphore
    with native.Sandbox(engine, 1 << 20) as again:
        again.instantiate(pre)  # slots come back when stores die


def test_memory_beyond_the_pool_slot_is_refused_at_compilation() -> None:
    engine, _ = pooled_engine(PoolSettings(instances=1, max_memory_bytes=1 << 20))
    with pytest.raises(wasmtime.WasmtimeError, match="pooling allocator"):
        wasmtime.Module(engine, wat2wasm(
            '(module (memory (export "memory") 32) (func (export "_start")))'))  # 2 MiB


def test_an_unreservable_pool_falls_back_instead_of_aborting() -> None:
    # Wasmtime would abort the process here; the adapter checks first.
    huge = PoolSettings(instances=1_000_000)
    assert not can_reserve(huge.reservation_bytes)
    engine, settings = pooled_engine(huge)
    assert settings is None
    assert wasmtime.Module(engine, wat2wasm(MODULE))
    assert pooled_engine(None)[1] is None
    assert can_reserve(1 << 30)
