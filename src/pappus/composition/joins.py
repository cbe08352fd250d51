"""Key groups and keyed joins, as pure functions over rows.

A *row* is one combination of groups: a key and, per parameter index, the
group chosen for that parameter (``None`` where a join found no partner).
A keyed set becomes one row per key, ascending; a chain of keyed sets is
joined left to right:

* ``cross``: every left row with every right group (left varies slowest);
  the row takes the right group's key, which later joins in the chain use;
* ``inner``: left rows whose key the right side has;
* ``left``: every left row, with the right group of its key or ``None``;
* ``right``: every right group, with the left rows of its key or ``None``;
* ``full``: the union of keys, ascending, each side present or ``None``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pappus.composition.ast import JoinKind
from pappus.model import DataSet


@dataclass(frozen=True, slots=True)
class Row:
    """One combination of groups: ``sets`` maps parameter index → group (or ``None``)."""

    key: int | None
    sets: Mapping[int, DataSet | None]


def key_groups(data: DataSet) -> list[tuple[int, DataSet]]:
    """The set's items grouped by key, ascending.

    The set is stably sorted by key first: Dandelion groups *consecutive*
    equal keys and so splits a key into several groups when request input
    arrives unsorted; pappus never does.
    """
    ordered = sorted(data.items, key=lambda item: item.key)
    return [(key, DataSet(data.name, tuple(items)))
            for key, items in itertools.groupby(ordered, key=lambda item: item.key)]


def keyed_rows(index: int, data: DataSet) -> list[Row]:
    """One row per key of ``data`` for parameter ``index``."""
    return [Row(key, {index: group}) for key, group in key_groups(data)]


def join(rows: Sequence[Row], index: int, groups: Sequence[tuple[int, DataSet]],
         kind: JoinKind, params: Sequence[int]) -> list[Row]:
    """Join the chain so far (``rows`` over ``params``) with parameter ``index``'s groups."""
    if kind is JoinKind.CROSS:
        return [Row(key, {**row.sets, index: group}) for row in rows for key, group in groups]
    by_key: dict[int | None, DataSet] = dict(groups)
    if kind is JoinKind.INNER:
        return [Row(row.key, {**row.sets, index: by_key[row.key]})
                for row in rows if row.key in by_key]
    if kind is JoinKind.LEFT:
        return [Row(row.key, {**row.sets, index: by_key.get(row.key)}) for row in rows]
    absent: dict[int, DataSet | None] = dict.fromkeys(params)
    rows_by_key: dict[int | None, list[Row]] = {}
    for row in rows:
        rows_by_key.setdefault(row.key, []).append(row)
    if kind is JoinKind.RIGHT:
        keys = [key for key, _ in groups]
    else:  # FULL: every key of either side, ascending
        keys = sorted({row.key for row in rows if row.key is not None}
                      | {key for key, _ in groups})
    joined: list[Row] = []
    for key in keys:
        group = by_key.get(key)
        matches = rows_by_key.get(key, [])
        if matches:
            joined += [Row(key, {**row.sets, index: group}) for row in matches]
        else:
            joined.append(Row(key, {**absent, index: group}))
    return joined


def merge_rows(rows: Sequence[Row], params: Sequence[int]) -> Row:
    """Several rows as one: per parameter, all their groups' items, stably sorted by key."""
    merged: dict[int, DataSet | None] = {}
    for index in params:
        parts = [row.sets.get(index) for row in rows]
        present = [part for part in parts if part is not None]
        if not present:
            merged[index] = None
            continue
        items = sorted((item for part in present for item in part.items),
                       key=lambda item: item.key)
        merged[index] = DataSet(present[0].name, tuple(items))
    return Row(rows[0].key if rows else None, merged)
