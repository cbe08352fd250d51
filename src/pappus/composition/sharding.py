"""Sharding: which invocations one statement makes, as a pure function (Dandelion §3.5).

Per parameter, the bound set becomes a list of groups: ``all`` → the whole
set; ``each``/``anyEach`` → one group per item, in item order;
``keyed``/``anyKeyed`` → one group per key, ascending (see
:func:`pappus.composition.joins.key_groups`). Following the statement's
:class:`~pappus.composition.graph.JoinPlan`, consecutive keyed parameters
form one joined chain, consecutive non-``cross`` anyKeyed parameters form an
any chain, and every other parameter stands alone. The invocations are the
cartesian product of these *factors* in plan order: the first (the keyed
chain) is the outermost loop and the last varies fastest.

``anyEach``/``anyKeyed`` factors may then be merged into fewer, larger groups
(:class:`AnySharding`): ``max`` never merges; ``fixed:N`` aims for N
invocations in total; ``auto:C`` aims for the local cores, or local plus
remote cores when the any sets are large (product of their largest sets'
bytes > C * max(1, sum of min_set_bytes) * local cores). The target is spread
over the any factors with Dandelion's greedy rule, and each factor is cut
into even runs of neighbouring groups, or, with ``min_set_bytes``, groups
sorted by size are merged until the largest set of each run reaches the
minimum. Dandelion's own tests (§9) are the oracle for these orders.

Deliberate differences from Dandelion (all where it crashes, drops data or
depends on an accident of its iterators):

* an absent (empty) optional set takes no part in joins and is ``None`` in
  every invocation; a ``cross`` boundary it carried is kept;
* a join with no matching keys yields no invocations (Dandelion then runs
  the function without the keyed inputs);
* ``min_set_bytes`` is looked up per parameter (Dandelion indexes it by join
  position);
* ``auto`` measures a factor's bytes over all its groups (Dandelion skips the
  first group, and stops merging altogether when that measure is 0, which
  happens for every single-group any set); its own tests give the same
  results either way.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from pappus.composition.ast import JoinKind, Sharding
from pappus.composition.graph import JoinPlan
from pappus.composition.joins import Row, join, key_groups, keyed_rows, merge_rows
from pappus.model import DataSet, absent_if_empty

DEFAULT_OFFLOAD_CONSTANT = 2
"""``auto`` without a number: Dandelion's ``DEFAULT_AUTOSHARDING_OFFLOAD_CONST``."""


class AnyShardingMode(Enum):
    """How ``anyEach``/``anyKeyed`` groups are merged."""

    MAX = "max"
    FIXED = "fixed"
    AUTO = "auto"


@dataclass(frozen=True, slots=True)
class AnySharding:
    """The any-sharding policy.

    ``value`` is the target number of invocations for ``fixed`` and the
    offload constant for ``auto``; ``max`` ignores it.
    """

    mode: AnyShardingMode = AnyShardingMode.AUTO
    value: int = DEFAULT_OFFLOAD_CONSTANT

    def __post_init__(self) -> None:
        if self.mode is AnyShardingMode.FIXED and self.value < 1:
            raise ValueError(f"fixed any-sharding needs at least 1 partition, not {self.value}")
        if self.value < 0:
            raise ValueError(f"any-sharding value must not be negative, not {self.value}")

    def __str__(self) -> str:
        if self.mode is AnyShardingMode.MAX:
            return "max"
        return f"{self.mode.value}:{self.value}"


_MODE_SYNTAX = re.compile(r"(max)|(fixed|auto):([0-9]{1,18})|(auto)")


def parse_any_sharding_mode(text: str) -> AnySharding:
    """Parse ``max``, ``fixed:N`` (N ≥ 1) or ``auto:C`` (case-insensitive; ``auto`` = ``auto:2``).

    Raises ``ValueError`` naming the accepted forms for anything else.
    """
    match = _MODE_SYNTAX.fullmatch(text.strip().lower()) if isinstance(text, str) else None
    if match is not None:
        if match.group(1) or match.group(4):
            return (AnySharding(AnyShardingMode.MAX, 0) if match.group(1)
                    else AnySharding(AnyShardingMode.AUTO, DEFAULT_OFFLOAD_CONSTANT))
        mode, value = AnyShardingMode(match.group(2)), int(match.group(3))
        if mode is not AnyShardingMode.FIXED or value >= 1:
            return AnySharding(mode, value)
    raise ValueError(
        f"{text!r} is not an any-sharding mode: use 'max', 'fixed:N' (N ≥ 1 invocations) "
        "or 'auto:C' (C = offload constant, e.g. auto:2)"
    )


@dataclass(frozen=True, slots=True)
class BoundSet:
    """A parameter's input at run time: its sharding, whether optional, and the set."""

    sharding: Sharding
    optional: bool
    data: DataSet | None


@dataclass(slots=True)
class _Factor:
    """One independent loop of the product: a keyed chain, an any chain or one parameter."""

    sharding: Sharding
    params: list[int]
    rows: list[Row]
    chain_open: bool = True
    target: int = 1
    processed: bool = False
    largest_param: int = 0
    largest_bytes: int = 0
    min_bytes: int = 0
    max_partitions: int = field(init=False, default=0)


def plan_shards(
    params: Sequence[BoundSet | None],
    join_plan: JoinPlan,
    any_sharding: AnySharding,
    local_cores: int,
    *,
    min_set_bytes: Sequence[int] | None = None,
    remote_cores: int = 0,
) -> list[list[DataSet | None]]:
    """The inputs of every invocation of one statement, in invocation order.

    ``params`` has one entry per declared parameter (``None`` = unbound);
    each returned list has one slot per parameter. An empty list means the
    function does not run: a non-optional input is absent, or a join matched
    nothing. With no present input at all it runs once with every slot
    ``None``. ``remote_cores`` only matters for ``auto`` (pappus runs on one
    node, so callers leave it 0; Dandelion's tests use it).
    """
    present: dict[int, BoundSet] = {}
    for index, param in enumerate(params):
        if param is None:
            continue
        data = absent_if_empty(param.data)
        if data is None:
            if not param.optional:
                return []  # a non-optional absent input skips the function
            continue
        present[index] = BoundSet(param.sharding, param.optional, data)
    factors = _factors(present, _full_order(join_plan, len(params)))
    if any(not factor.rows for factor in factors):
        return []
    for factor in factors:
        if factor.sharding.is_any:
            _measure(factor, min_set_bytes or ())
    target = _target_partitions(factors, any_sharding, max(1, local_cores), remote_cores)
    if target is not None:
        _assign_any_partitions(factors, target)
        for factor in factors:
            if factor.sharding.is_any:
                factor.rows = _merge_groups(factor)
    shards: list[list[DataSet | None]] = []
    for combination in itertools.product(*(factor.rows for factor in factors)):
        slots: list[DataSet | None] = [None] * len(params)
        for row in combination:
            for index, group in row.sets.items():
                slots[index] = group
        shards.append(slots)
    return shards


def _full_order(join_plan: JoinPlan, param_count: int) -> list[tuple[int, JoinKind]]:
    """The plan's (parameter, join kind) steps, plus any parameter it leaves out (cross)."""
    if any(index >= param_count for index in join_plan.order):
        raise ValueError(f"join order {join_plan.order} names a parameter beyond the "
                         f"function's {param_count}")
    steps = [(index, join_plan.kind_at(i)) for i, index in enumerate(join_plan.order)]
    listed = set(join_plan.order)
    steps += [(index, JoinKind.CROSS) for index in range(param_count) if index not in listed]
    return steps


def _factors(present: dict[int, BoundSet], steps: list[tuple[int, JoinKind]]) -> list[_Factor]:
    factors: list[_Factor] = []
    pending_cross = False
    for index, step_kind in steps:
        bound = present.get(index)
        if bound is None or bound.data is None:
            # Absent: no part in any join; a chain boundary it carried survives.
            pending_cross = pending_cross or step_kind is JoinKind.CROSS
            continue
        kind = JoinKind.CROSS if pending_cross else step_kind
        pending_cross = False
        data, sharding = bound.data, bound.sharding
        last = factors[-1] if factors else None
        if last is not None and _continues_chain(last, sharding, kind):
            last.rows = join(last.rows, index, key_groups(data), kind, last.params)
            last.params.append(index)
        else:
            if last is not None:
                last.chain_open = False
            factors.append(_Factor(sharding, [index], _rows(index, sharding, data)))
    return factors


def _continues_chain(last: _Factor, sharding: Sharding, kind: JoinKind) -> bool:
    """Whether a keyed/anyKeyed parameter joins the chain ``last`` instead of starting one.

    The keyed chain takes every keyed parameter that follows it (a ``cross``
    stays inside the chain, whose later joins then use the right-hand keys);
    an anyKeyed chain ends at ``cross``, since each any chain is merged on
    its own.
    """
    if not last.chain_open or sharding is not last.sharding:
        return False
    return sharding is Sharding.KEYED or (
        sharding is Sharding.ANY_KEYED and kind is not JoinKind.CROSS)


def _rows(index: int, sharding: Sharding, data: DataSet) -> list[Row]:
    if sharding is Sharding.ALL:
        return [Row(None, {index: data})]
    if sharding in (Sharding.EACH, Sharding.ANY_EACH):
        return [Row(item.key, {index: DataSet(data.name, (item,))}) for item in data.items]
    return keyed_rows(index, data)


def _target_partitions(factors: list[_Factor], mode: AnySharding, local_cores: int,
                       remote_cores: int) -> int | None:
    """Total invocations to aim for; ``None`` = no merging (``max``)."""
    any_factors = [f for f in factors if f.sharding.is_any]
    if mode.mode is AnyShardingMode.MAX:
        return None
    if mode.mode is AnyShardingMode.FIXED:
        return mode.value
    size_product = 1
    for factor in any_factors:
        size_product *= factor.largest_bytes
    smallest = max(1, sum(f.min_bytes for f in any_factors))
    if size_product > mode.value * smallest * local_cores:
        return local_cores + remote_cores  # big enough to be worth offloading
    return local_cores


def _measure(factor: _Factor, min_set_bytes: Sequence[int]) -> None:
    """The factor's largest set (ties go to the later one, as in Dandelion) and its bytes."""
    factor.max_partitions = len(factor.rows)
    for index in factor.params:
        size = sum(_bytes(row.sets.get(index)) for row in factor.rows)
        if size >= factor.largest_bytes:
            factor.largest_param, factor.largest_bytes = index, size
    position = factor.largest_param
    factor.min_bytes = min_set_bytes[position] if position < len(min_set_bytes) else 0


def _bytes(data: DataSet | None) -> int:
    return data.total_bytes if data is not None else 0


def _assign_any_partitions(factors: list[_Factor], target: int) -> None:
    """Spread ``target`` over the any factors (Dandelion's greedy rule).

    Repeatedly pick the unprocessed factor whose group count divides the
    remaining parallelism best (exact divisor first, else smallest relative
    remainder). A factor smaller than what remains is used in full and the
    search continues for the rest; otherwise it gets what remains, and the
    search stops. Factors never picked stay at one group.
    """
    fixed = 1
    for factor in factors:
        if not factor.sharding.is_any:
            fixed *= len(factor.rows)
    any_factors = [f for f in factors if f.sharding.is_any]
    if fixed >= target or not any_factors:
        return
    leftover = target // fixed
    while True:
        best, best_distance = any_factors[0], 0.0
        for factor in any_factors:
            if factor.processed:
                continue
            remainder = factor.max_partitions % leftover
            if remainder == 0:
                best, best_distance = factor, 0.0
                break
            distance = remainder / factor.max_partitions
            if best_distance == 0.0 or distance < best_distance:
                best, best_distance = factor, distance
        if best_distance >= 1.0:
            best.target = best.max_partitions
            leftover //= best.max_partitions
            if leftover <= 1:
                return
            best.processed = True
        else:
            if not best.processed:
                best.target = min(leftover, best.max_partitions)
            return


def _merge_groups(factor: _Factor) -> list[Row]:
    """Cut the factor's rows into ``factor.target`` runs (fewer with ``min_bytes``)."""
    rows, parts = factor.rows, max(1, factor.target)
    if factor.min_bytes <= 0 and parts >= len(rows):
        return rows
    base, extra = divmod(len(rows), parts)
    merged: list[Row] = []
    if factor.min_bytes <= 0:
        start = 0
        for part in range(parts):
            end = start + base + (1 if part < extra else 0)
            merged.append(merge_rows(rows[start:end], factor.params))
            start = end
        return merged
    # Smallest groups first, so that merging them evens out the partitions.
    ordered = sorted(rows, key=lambda row: _bytes(row.sets.get(factor.largest_param)))
    current, minimum_end = 0, 0
    for part in range(parts):
        if current >= len(ordered):
            break
        minimum_end += base + (1 if part < extra else 0)
        start, size = current, 0
        while current < len(ordered) and (current < minimum_end or size < factor.min_bytes):
            size += _bytes(ordered[current].sets.get(factor.largest_param))
            current += 1
        merged.append(merge_rows(ordered[start:current], factor.params))
    return merged
