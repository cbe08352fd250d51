"""Sharding and joins against Dandelion's own oracles (§9).

The inputs and expected results are those of Dandelion's
``machine_interface/src/composition/composition_tests.rs`` (join, any-sharding
and auto-sharding tests), restated for :func:`plan_shards`: a set is given
as its item keys; items are named after their position in that list and, as
in Dandelion's ``create_dummy_set``, stably sorted by key. An expected shard
lists, per parameter, ``(key, item name)`` pairs or ``None``.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from pappus.composition import (
    AnySharding,
    AnyShardingMode,
    BoundSet,
    JoinKind,
    JoinPlan,
    Sharding,
    plan_shards,
)
from pappus.model import DataSet, Item

KEY, EACH, ANY_KEY, ANY_EACH = Sharding.KEYED, Sharding.EACH, Sharding.ANY_KEYED, Sharding.ANY_EACH
INNER, LEFT, RIGHT, OUTER, CROSS = (JoinKind.INNER, JoinKind.LEFT, JoinKind.RIGHT, JoinKind.FULL,
                                    JoinKind.CROSS)
MAX = AnySharding(AnyShardingMode.MAX, 0)

Expected = list[list[list[tuple[int, int]] | None]]


def dummy(sharding: Sharding, keys: Sequence[int], sizes: Sequence[int] | None = None
          ) -> BoundSet:
    """A set of items named by their index in ``keys``, stably sorted by key.

    ``sizes`` gives payload bytes per item *after* sorting (Dandelion's
    ``set_item_sizes``).
    """
    ordered = sorted(enumerate(keys), key=lambda pair: pair[1])
    sizes = sizes or [0] * len(keys)
    items = tuple(Item(str(index), key, b"x" * size)
                  for (index, key), size in zip(ordered, sizes, strict=True))
    return BoundSet(sharding, False, DataSet("", items))


def fixed(n: int) -> AnySharding:
    return AnySharding(AnyShardingMode.FIXED, n)


def auto(offload_constant: int) -> AnySharding:
    return AnySharding(AnyShardingMode.AUTO, offload_constant)


def shard(sets: Sequence[BoundSet | None], order: Sequence[int], kinds: Sequence[JoinKind],
          mode: AnySharding = MAX, *, local: int = 2, remote: int = 0,
          min_set_bytes: Sequence[int] | None = None) -> list[list[DataSet | None]]:
    return plan_shards(sets, JoinPlan(tuple(order), tuple(kinds)), mode, local,
                       min_set_bytes=min_set_bytes, remote_cores=remote)


def described(shards: list[list[DataSet | None]]) -> Expected:
    return [[None if s is None else sorted((i.key, int(i.name)) for i in s.items) for s in row]
            for row in shards]


def check(actual: list[list[DataSet | None]], expected: Expected) -> None:
    assert described(actual) == [
        [None if s is None else sorted(s, key=lambda pair: pair[1]) for s in row]
        for row in expected
    ]


def sizes_of(shard_row: list[DataSet | None]) -> list[int | None]:
    return [None if s is None else len(s.items) for s in shard_row]


# -- joins (MaxSharding) ---------------------------------------------------------------------


def test_join_inner() -> None:
    sets = [dummy(KEY, [3, 0, 1]), dummy(KEY, [1, 0, 1, 2])]
    check(shard(sets, [0, 1], [INNER]), [
        [[(0, 1)], [(0, 1)]],
        [[(1, 2)], [(1, 0), (1, 2)]],
    ])


def test_join_left() -> None:
    sets = [dummy(KEY, [0, 1, 2]), dummy(KEY, [3, 1, 0, 1])]
    check(shard(sets, [0, 1], [LEFT]), [
        [[(0, 0)], [(0, 2)]],
        [[(1, 1)], [(1, 1), (1, 3)]],
        [[(2, 2)], None],
    ])


def test_join_right() -> None:
    sets = [dummy(KEY, [3, 1, 0, 1]), dummy(KEY, [0, 1, 2])]
    check(shard(sets, [0, 1], [RIGHT]), [
        [[(0, 2)], [(0, 0)]],
        [[(1, 1), (1, 3)], [(1, 1)]],
        [None, [(2, 2)]],
    ])


def test_join_outer() -> None:
    sets = [dummy(KEY, [0, 1, 2]), dummy(KEY, [3, 1, 0, 1])]
    check(shard(sets, [0, 1], [OUTER]), [
        [[(0, 0)], [(0, 2)]],
        [[(1, 1)], [(1, 1), (1, 3)]],
        [[(2, 2)], None],
        [None, [(3, 0)]],
    ])


def test_join_cross() -> None:
    sets = [dummy(KEY, [0, 1, 2]), dummy(KEY, [3, 1, 0, 1])]
    check(shard(sets, [0, 1], [CROSS]), [
        [[(0, 0)], [(0, 2)]],
        [[(0, 0)], [(1, 1), (1, 3)]],
        [[(0, 0)], [(3, 0)]],
        [[(1, 1)], [(0, 2)]],
        [[(1, 1)], [(1, 1), (1, 3)]],
        [[(1, 1)], [(3, 0)]],
        [[(2, 2)], [(0, 2)]],
        [[(2, 2)], [(1, 1), (1, 3)]],
        [[(2, 2)], [(3, 0)]],
    ])


def test_join_order() -> None:
    sets = [dummy(KEY, [3, 1, 0, 1]), dummy(KEY, [0, 1, 2])]
    check(shard(sets, [1, 0], [LEFT]), [
        [[(0, 2)], [(0, 0)]],
        [[(1, 1), (1, 3)], [(1, 1)]],
        [None, [(2, 2)]],
    ])


def test_join_chain_of_four_full_outer_joins() -> None:
    sets = [
        dummy(KEY, [1, 1234, 123, 124, 134]),
        dummy(KEY, [2, 234, 1234, 123, 124]),
        dummy(KEY, [3, 134, 234, 1234, 123]),
        dummy(KEY, [4, 124, 134, 234, 1234]),
    ]
    check(shard(sets, [0, 1, 2, 3], [OUTER, OUTER, OUTER]), [
        [[(1, 0)], None, None, None],
        [None, [(2, 0)], None, None],
        [None, None, [(3, 0)], None],
        [None, None, None, [(4, 0)]],
        [[(123, 2)], [(123, 3)], [(123, 4)], None],
        [[(124, 3)], [(124, 4)], None, [(124, 1)]],
        [[(134, 4)], None, [(134, 1)], [(134, 2)]],
        [None, [(234, 1)], [(234, 2)], [(234, 3)]],
        [[(1234, 1)], [(1234, 2)], [(1234, 3)], [(1234, 4)]],
    ])


# -- any sharding (FixedSharding) -------------------------------------------------------------


def test_any_simple() -> None:
    check(shard([dummy(ANY_EACH, [0, 1, 2, 3])], [0], [], fixed(2)), [
        [[(0, 0), (1, 1)]],
        [[(2, 2), (3, 3)]],
    ])


def test_any_joined_keys() -> None:
    sets = [dummy(ANY_KEY, [0, 1, 2, 3, 5]), dummy(ANY_KEY, [0, 2, 3, 4, 5])]
    check(shard(sets, [0, 1], [INNER], fixed(2)), [
        [[(0, 0), (2, 2)], [(0, 0), (2, 1)]],
        [[(3, 3), (5, 4)], [(3, 2), (5, 4)]],
    ])


def test_any_chain() -> None:
    sets = [dummy(ANY_EACH, [0, 0, 0]), dummy(ANY_KEY, [0, 1, 2, 3, 5]),
            dummy(ANY_KEY, [0, 2, 3, 4, 5])]
    check(shard(sets, [1, 2, 0], [INNER, CROSS], fixed(2)), [
        [[(0, 0), (0, 1), (0, 2)], [(0, 0), (2, 2)], [(0, 0), (2, 1)]],
        [[(0, 0), (0, 1), (0, 2)], [(3, 3), (5, 4)], [(3, 2), (5, 4)]],
    ])


@pytest.mark.parametrize(("partitions", "first_shard"), [
    (6, [2, 1, 4]), (3, [2, 2, 4]), (4, [2, 6, 1])])
def test_any_chain_1(partitions: int, first_shard: list[int]) -> None:
    sets = [dummy(ANY_EACH, [0, 1]), dummy(ANY_EACH, [0, 1, 2, 3, 4, 5]),
            dummy(ANY_EACH, [0, 1, 2, 3])]
    shards = shard(sets, [0, 1, 2], [CROSS, CROSS], fixed(partitions))
    assert len(shards) == partitions
    assert sizes_of(shards[0]) == first_shard


@pytest.mark.parametrize(("partitions", "first_shard"), [(2, [3, 1]), (3, [1, 2]), (6, [1, 1])])
def test_any_chain_2(partitions: int, first_shard: list[int]) -> None:
    sets = [dummy(ANY_EACH, [0, 1, 2]), dummy(ANY_EACH, [0, 1])]
    shards = shard(sets, [0, 1], [CROSS], fixed(partitions))
    assert len(shards) == partitions
    assert sizes_of(shards[0]) == first_shard


@pytest.mark.parametrize(("partitions", "first_shard"), [
    (2, [1, 3, 3]), (4, [1, 3, 1]), (6, [1, 1, 3])])
def test_any_chain_3_each_is_always_split(partitions: int, first_shard: list[int]) -> None:
    sets = [dummy(EACH, [0, 0]), dummy(ANY_EACH, [0, 0, 0]), dummy(ANY_KEY, [0, 1, 1])]
    shards = shard(sets, [0, 1, 2], [CROSS, CROSS], fixed(partitions))
    assert len(shards) == partitions
    assert sizes_of(shards[0]) == first_shard


@pytest.mark.parametrize(("kind", "count"), [(INNER, 4), (LEFT, 8), (RIGHT, 6), (OUTER, 10)])
def test_any_chain_4_joins_bound_the_partitions(kind: JoinKind, count: int) -> None:
    sets = [dummy(EACH, [0, 0]), dummy(ANY_KEY, [0, 2, 0, 1, 3]), dummy(ANY_KEY, [0, 1, 1, 4])]
    shards = shard(sets, [1, 2, 0], [kind, CROSS], fixed(10))
    assert len(shards) == count
    assert sizes_of(shards[0]) == [1, 2, 1]


@pytest.mark.parametrize(("partitions", "first_size"), [(2, 3), (4, 2)])
def test_any_chain_5(partitions: int, first_size: int) -> None:
    shards = shard([dummy(ANY_KEY, [0, 2, 0, 1, 3])], [0], [], fixed(partitions))
    assert len(shards) == partitions
    assert sizes_of(shards[0]) == [first_size]


def test_any_chain_6() -> None:
    sets = [dummy(ANY_KEY, [0, 1, 4]), dummy(ANY_KEY, [0, 2, 0, 3]), dummy(ANY_KEY, [0, 1, 1]),
            dummy(ANY_EACH, [5, 5])]
    order, kinds = [1, 2, 0, 3], [INNER, RIGHT, CROSS]
    two = shard(sets, order, kinds, fixed(2))
    assert len(two) == 2
    assert sizes_of(two[0]) == [3, 2, 1, 1]
    assert [[i.key for i in s.items] for s in two[0] if s] == [[0, 1, 4], [0, 0], [0], [5]]
    three = shard(sets, order, kinds, fixed(3))
    assert len(three) == 3
    assert sizes_of(three[0]) == [1, 2, 1, 2]
    assert [[i.key for i in s.items] for s in three[0] if s] == [[0], [0, 0], [0], [5, 5]]


def test_any_chain_7_absent_optional_set() -> None:
    sets = [dummy(EACH, [0]), dummy(ANY_EACH, [0]), BoundSet(ANY_KEY, True, None)]
    shards = shard(sets, [0, 1, 2], [CROSS, CROSS], fixed(2**64 - 1))
    assert described(shards) == [[[(0, 0)], [(0, 0)], None]]


# -- auto sharding ----------------------------------------------------------------------------


def test_auto_large_offload_constant_stays_local() -> None:
    sets = [dummy(ANY_EACH, [0, 1, 2, 3], [2, 2, 2, 2])]
    check(shard(sets, [0], [], auto(10), local=2, remote=2), [
        [[(0, 0), (1, 1)]],
        [[(2, 2), (3, 3)]],
    ])


def test_auto_small_offload_constant_uses_remote_cores() -> None:
    sets = [dummy(ANY_EACH, [0, 1, 2, 3], [2, 2, 2, 2])]
    check(shard(sets, [0], [], auto(1), local=2, remote=2), [
        [[(0, 0)]], [[(1, 1)]], [[(2, 2)]], [[(3, 3)]],
    ])


def test_auto_min_set_bytes_keeps_it_local() -> None:
    sets = [dummy(ANY_EACH, [0, 1, 2, 3], [2, 2, 2, 2])]
    check(shard(sets, [0], [], auto(1), local=2, remote=2, min_set_bytes=[4]), [
        [[(0, 0), (1, 1)]],
        [[(2, 2), (3, 3)]],
    ])


def test_auto_min_set_bytes_merges_small_groups_first() -> None:
    sets = [dummy(ANY_EACH, [0, 1, 2, 3], [4, 1, 1, 1])]
    check(shard(sets, [0], [], auto(1), local=2, remote=2, min_set_bytes=[3]), [
        [[(1, 1), (2, 2), (3, 3)]],
        [[(0, 0)]],
    ])


def test_auto_joined_any_chain_and_any_each() -> None:
    sets = [
        dummy(ANY_EACH, [0, 1, 2, 3], [4, 1, 3, 5]),
        dummy(ANY_KEY, [0, 1, 2, 3], [100, 4, 4, 1]),
        dummy(ANY_KEY, [1, 2, 4, 5], [1, 1, 1, 1]),
    ]
    shards = shard(sets, [1, 2, 0], [INNER, CROSS], auto(1), local=6, remote=2,
                   min_set_bytes=[4, 4, 4])
    check(shards, [
        [[(1, 1), (2, 2)], [(1, 1)], [(1, 0)]],
        [[(0, 0)], [(1, 1)], [(1, 0)]],
        [[(3, 3)], [(1, 1)], [(1, 0)]],
        [[(1, 1), (2, 2)], [(2, 2)], [(2, 1)]],
        [[(0, 0)], [(2, 2)], [(2, 1)]],
        [[(3, 3)], [(2, 2)], [(2, 1)]],
    ])
