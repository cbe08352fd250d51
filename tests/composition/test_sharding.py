"""Sharding beyond Dandelion's oracles: modes, absent inputs, orders and pappus's deviations."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pappus.composition import (
    AnySharding,
    AnyShardingMode,
    BoundSet,
    JoinKind,
    JoinPlan,
    Sharding,
    parse_any_sharding_mode,
    plan_shards,
)
from pappus.model import DataSet, Item

MAX = AnySharding(AnyShardingMode.MAX, 0)
CROSS, INNER = JoinKind.CROSS, JoinKind.INNER


def keyed_set(name: str, keys: Sequence[int], sizes: Sequence[int] | None = None) -> DataSet:
    """Items named '<set><index>' with the given keys, in the given (unsorted) order."""
    sizes = sizes or [0] * len(keys)
    return DataSet(name, tuple(Item(f"{name}{i}", k, b"x" * s)
                               for i, (k, s) in enumerate(zip(keys, sizes, strict=True))))


def bound(sharding: Sharding, data: DataSet | None, *, optional: bool = False) -> BoundSet:
    return BoundSet(sharding, optional, data)


def names(data: DataSet | None) -> list[str] | None:
    return None if data is None else [item.name for item in data.items]


def shard(params: Sequence[BoundSet | None], order: Sequence[int] = (),
          kinds: Sequence[JoinKind] = (), mode: AnySharding = MAX, local_cores: int = 2,
          min_set_bytes: Sequence[int] | None = None) -> list[list[list[str] | None]]:
    shards = plan_shards(params, JoinPlan(tuple(order), tuple(kinds)), mode, local_cores,
                         min_set_bytes=min_set_bytes)
    return [[names(s) for s in row] for row in shards]


# -- the any-sharding option ----------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected", "shown"), [
    ("max", AnySharding(AnyShardingMode.MAX, 0), "max"),
    (" MAX ", AnySharding(AnyShardingMode.MAX, 0), "max"),
    ("fixed:3", AnySharding(AnyShardingMode.FIXED, 3), "fixed:3"),
    ("Fixed:12", AnySharding(AnyShardingMode.FIXED, 12), "fixed:12"),
    ("auto:4", AnySharding(AnyShardingMode.AUTO, 4), "auto:4"),
    ("AUTO:0", AnySharding(AnyShardingMode.AUTO, 0), "auto:0"),
    ("auto", AnySharding(AnyShardingMode.AUTO, 2), "auto:2"),
])
def test_parse_any_sharding_mode(text: str, expected: AnySharding, shown: str) -> None:
    mode = parse_any_sharding_mode(text)
    assert mode == expected
    assert str(mode) == shown
    assert parse_any_sharding_mode(str(mode)) == mode


@pytest.mark.parametrize("text", [
    "", "fixed", "fixed:", "fixed:0", "fixed:-1", "fixed:+2", "fixed: 2", "fixed:2.5",
    "fixed:\u0663", "auto:x", "sometimes", "max:3", "fixed:2:3", "1" * 30, "fixed:" + "9" * 40,
])
def test_bad_any_sharding_modes(text: str) -> None:
    with pytest.raises(ValueError, match=r"not an any-sharding mode: use 'max', 'fixed:N'"):
        parse_any_sharding_mode(text)


def test_any_sharding_values_are_checked() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        AnySharding(AnyShardingMode.FIXED, 0)
    with pytest.raises(ValueError, match="negative"):
        AnySharding(AnyShardingMode.AUTO, -1)
    assert AnySharding() == AnySharding(AnyShardingMode.AUTO, 2)


# -- all, each, keyed and the iteration order -----------------------------------------------------


def test_each_all_and_last_parameter_varies_fastest() -> None:
    params = [bound(Sharding.EACH, keyed_set("x", [0, 1])), bound(Sharding.ALL, keyed_set(
        "y", [0, 0])), bound(Sharding.EACH, keyed_set("z", [5, 6]))]
    assert shard(params) == [
        [["x0"], ["y0", "y1"], ["z0"]], [["x0"], ["y0", "y1"], ["z1"]],
        [["x1"], ["y0", "y1"], ["z0"]], [["x1"], ["y0", "y1"], ["z1"]],
    ]


def test_each_keeps_item_order_and_keyed_sorts_by_key() -> None:
    assert shard([bound(Sharding.EACH, keyed_set("e", [3, 1, 2]))]) == [
        [["e0"]], [["e1"]], [["e2"]]]
    # Dandelion groups *consecutive* keys and would make four groups here.
    assert shard([bound(Sharding.KEYED, keyed_set("k", [2, 1, 2, 1]))], [0]) == [
        [["k1", "k3"]], [["k0", "k2"]]]


def test_keyed_chain_is_the_outermost_loop() -> None:
    params = [bound(Sharding.EACH, keyed_set("e", [0, 0])),
              bound(Sharding.KEYED, keyed_set("k", [1, 0]))]
    assert shard(params, [1, 0], [CROSS]) == [
        [["e0"], ["k1"]], [["e1"], ["k1"]], [["e0"], ["k0"]], [["e1"], ["k0"]]]


def test_plan_without_order_iterates_in_parameter_order() -> None:
    params = [bound(Sharding.EACH, keyed_set("a", [0, 1])),
              bound(Sharding.EACH, keyed_set("b", [0, 1]))]
    assert shard(params) == [[["a0"], ["b0"]], [["a0"], ["b1"]], [["a1"], ["b0"]],
                             [["a1"], ["b1"]]]


def test_cross_then_join_uses_the_right_hand_keys() -> None:
    # `by A cross B inner C`: Dandelion panics on cross; pappus joins C on B's keys.
    params = [bound(Sharding.KEYED, keyed_set("a", [0, 1])),
              bound(Sharding.KEYED, keyed_set("b", [1, 2])),
              bound(Sharding.KEYED, keyed_set("c", [2]))]
    assert shard(params, [0, 1, 2], [CROSS, INNER]) == [
        [["a0"], ["b1"], ["c0"]], [["a1"], ["b1"], ["c0"]]]


def test_join_without_matching_keys_makes_no_invocations() -> None:
    params = [bound(Sharding.KEYED, keyed_set("a", [0])), bound(Sharding.KEYED, keyed_set(
        "b", [1])), bound(Sharding.ALL, keyed_set("c", [0]))]
    assert shard(params, [0, 1, 2], [INNER, CROSS]) == []


# -- absent inputs --------------------------------------------------------------------------------


def test_a_non_optional_absent_input_skips_the_function() -> None:
    params = [bound(Sharding.EACH, keyed_set("a", [0])), bound(Sharding.ALL, None)]
    assert shard(params) == []
    assert shard([bound(Sharding.ALL, DataSet("empty"))]) == []


def test_optional_absent_inputs_are_none_in_every_invocation() -> None:
    params = [bound(Sharding.EACH, keyed_set("a", [0, 1])),
              bound(Sharding.ALL, DataSet("empty"), optional=True)]
    assert shard(params) == [[["a0"], None], [["a1"], None]]


def test_no_inputs_runs_once() -> None:
    assert shard([]) == [[]]
    assert shard([None, None]) == [[None, None]]
    assert shard([bound(Sharding.KEYED, None, optional=True), None], [0]) == [[None, None]]


def test_absent_optional_set_takes_no_part_in_a_join() -> None:
    params = [bound(Sharding.KEYED, keyed_set("a", [0, 1])),
              bound(Sharding.KEYED, None, optional=True)]
    assert shard(params, [0, 1], [INNER]) == [[["a0"], None], [["a1"], None]]


def test_a_cross_boundary_survives_an_absent_set() -> None:
    params = [bound(Sharding.ANY_KEYED, keyed_set("a", [0, 1])),
              bound(Sharding.ANY_KEYED, None, optional=True),
              bound(Sharding.ANY_KEYED, keyed_set("c", [1, 2]))]
    # a and c are separate any chains (the absent b started the second one), so
    # they are crossed rather than inner-joined.
    assert len(shard(params, [0, 1, 2], [CROSS, INNER])) == 4
    assert len(shard(params, [0, 2, 1], [INNER, CROSS])) == 1


# -- any sharding ---------------------------------------------------------------------------------


def test_max_mode_is_each_and_keyed() -> None:
    params = [bound(Sharding.ANY_EACH, keyed_set("a", [0, 0, 0]))]
    assert shard(params) == [[["a0"]], [["a1"]], [["a2"]]]


def test_fixed_target_larger_than_the_groups() -> None:
    params = [bound(Sharding.ANY_KEYED, keyed_set("a", [0, 1, 1]))]
    assert shard(params, [0], mode=AnySharding(AnyShardingMode.FIXED, 9)) == [
        [["a0"]], [["a1", "a2"]]]


def test_auto_targets_the_local_cores() -> None:
    params = [bound(Sharding.ANY_EACH, keyed_set("a", list(range(8)), [1000] * 8))]
    shards = shard(params, mode=AnySharding(AnyShardingMode.AUTO, 2), local_cores=2)
    assert shards == [[["a0", "a1", "a2", "a3"]], [["a4", "a5", "a6", "a7"]]]
    assert len(shard(params, mode=AnySharding(AnyShardingMode.AUTO, 2), local_cores=3)) == 3


def test_any_factors_merge_into_one_group_when_the_rest_already_fills_the_target() -> None:
    params = [bound(Sharding.EACH, keyed_set("e", [0, 0, 0])),
              bound(Sharding.ANY_EACH, keyed_set("a", [0, 1]))]
    assert shard(params, mode=AnySharding(AnyShardingMode.FIXED, 2)) == [
        [["e0"], ["a0", "a1"]], [["e1"], ["a0", "a1"]], [["e2"], ["a0", "a1"]]]


def test_greedy_assignment_prefers_the_earlier_factor_on_a_tie() -> None:
    params = [bound(Sharding.ANY_EACH, keyed_set("a", [0, 1, 2])),
              bound(Sharding.ANY_EACH, keyed_set("b", [0, 1, 2]))]
    shards = shard(params, mode=AnySharding(AnyShardingMode.FIXED, 4))
    assert [[len(s or []) for s in row] for row in shards] == [[1, 3], [1, 3], [1, 3]]


def test_min_set_bytes_is_looked_up_per_parameter() -> None:
    # The any set is parameter 1 but first in the join order; Dandelion would
    # read min_set_bytes[0] (= 0) and keep four groups.
    params = [bound(Sharding.ALL, keyed_set("x", [0])),
              bound(Sharding.ANY_EACH, keyed_set("a", [0, 1, 2, 3], [1, 1, 1, 1]))]
    shards = shard(params, [1, 0], [CROSS], AnySharding(AnyShardingMode.FIXED, 4),
                   min_set_bytes=[0, 3])
    assert [row[1] for row in shards] == [["a0", "a1", "a2"], ["a3"]]


def test_largest_set_tie_goes_to_the_later_parameter() -> None:
    params = [bound(Sharding.ANY_KEYED, keyed_set("a", [0, 1, 2, 3], [1] * 4)),
              bound(Sharding.ANY_KEYED, keyed_set("b", [0, 1, 2, 3], [1] * 4))]
    mode = AnySharding(AnyShardingMode.FIXED, 4)
    assert len(shard(params, [0, 1], [INNER], mode, min_set_bytes=[5, 1])) == 4
    assert len(shard(params, [0, 1], [INNER], mode, min_set_bytes=[1, 5])) == 1


def test_plans_naming_unknown_parameters_are_rejected() -> None:
    with pytest.raises(ValueError, match="beyond"):
        shard([bound(Sharding.ALL, keyed_set("a", [0]))], [0, 1], [CROSS])


# -- properties -----------------------------------------------------------------------------------

MODES = st.sampled_from([MAX, AnySharding(AnyShardingMode.AUTO, 2)]) | st.builds(
    lambda n: AnySharding(AnyShardingMode.FIXED, n), st.integers(1, 12))


@settings(max_examples=300, deadline=None)
@given(keys=st.lists(st.integers(0, 5), min_size=1, max_size=12),
       sharding=st.sampled_from([Sharding.ANY_EACH, Sharding.ANY_KEYED, Sharding.EACH,
                                 Sharding.KEYED]),
       mode=MODES, cores=st.integers(1, 8))
def test_one_parameter_is_partitioned_without_loss(keys: list[int], sharding: Sharding,
                                                   mode: AnySharding, cores: int) -> None:
    data = keyed_set("s", keys)
    shards = plan_shards([bound(sharding, data)], JoinPlan((0,), ()), mode, cores)
    parts = [row[0] for row in shards]
    assert all(part is not None and part.items for part in parts)
    assert Counter(i.name for p in parts if p for i in p.items) == Counter(
        i.name for i in data.items)
    if sharding.is_keyed:
        # a key never straddles two invocations
        owners = Counter(key for p in parts if p for key in {i.key for i in p.items})
        assert set(owners.values()) == {1}


@settings(max_examples=200, deadline=None)
@given(left=st.lists(st.integers(0, 4), min_size=1, max_size=6),
       right=st.lists(st.integers(0, 4), min_size=1, max_size=6),
       kind=st.sampled_from(list(JoinKind)))
def test_two_set_joins_match_their_definition(left: list[int], right: list[int],
                                              kind: JoinKind) -> None:
    params = [bound(Sharding.KEYED, keyed_set("l", left)),
              bound(Sharding.KEYED, keyed_set("r", right))]
    shards = plan_shards(params, JoinPlan((0, 1), (kind,)), MAX, 2)
    pairs = [(row[0].items[0].key if row[0] else None, row[1].items[0].key if row[1] else None)
             for row in shards]
    lk, rk = sorted(set(left)), sorted(set(right))
    expected = {
        JoinKind.CROSS: [(a, b) for a in lk for b in rk],
        JoinKind.INNER: [(k, k) for k in lk if k in rk],
        JoinKind.LEFT: [(k, k if k in rk else None) for k in lk],
        JoinKind.RIGHT: [(k if k in lk else None, k) for k in rk],
        JoinKind.FULL: [(k if k in lk else None, k if k in rk else None)
                        for k in sorted(set(lk) | set(rk))],
    }[kind]
    assert pairs == expected
