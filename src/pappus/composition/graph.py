"""Validated compositions as plain data: what the builder produces and the executor runs.

A composition numbers its sets (Dandelion's composition-wide id space):
input sets get ids ``0..P-1`` in order, output sets that are not inputs get
the next ids, then every set a statement assigns gets a fresh id in
statement order. A :class:`Statement` mirrors Dandelion's
``FunctionDependencies``: one entry per *declared* parameter (``None`` when
the application leaves it unbound) and one per declared result (``None``
when the result is dropped).
"""

from __future__ import annotations

from dataclasses import dataclass

from pappus.composition.ast import SOURCE_START, JoinKind, Position, Sharding


@dataclass(frozen=True, slots=True)
class Signature:
    """The set names of a registered function, system function or composition.

    ``min_set_bytes`` (one entry per input set, ``None`` = no minimum) asks
    ``anyEach``/``anyKeyed`` sharding to merge groups until the largest set of
    a group holds at least that many bytes (best effort).
    """

    name: str
    input_sets: tuple[str, ...]
    output_sets: tuple[str, ...]
    min_set_bytes: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class Binding:
    """A function parameter bound to a composition set: ``param = [optional] mode set``."""

    set_id: int
    sharding: Sharding
    optional: bool = False


@dataclass(frozen=True, slots=True)
class JoinPlan:
    """The order in which a statement's parameters are iterated and joined.

    ``order`` lists parameter indices, outermost loop first (the last one
    varies fastest); ``kinds[i - 1]`` says how ``order[i]`` joins what comes
    before it. Only keyed and anyKeyed parameters use their kind; everything
    else is combined as a cartesian product. The builder puts the keyed chain
    first, then anyKeyed chains, then every other parameter in parameter
    order (Dandelion's join order).
    """

    order: tuple[int, ...] = ()
    kinds: tuple[JoinKind, ...] = ()

    def __post_init__(self) -> None:
        if len(self.kinds) != max(0, len(self.order) - 1):
            raise ValueError(
                f"a join plan over {len(self.order)} parameter(s) needs "
                f"{max(0, len(self.order) - 1)} join kind(s), not {len(self.kinds)}"
            )
        if len(set(self.order)) != len(self.order) or any(i < 0 for i in self.order):
            raise ValueError(f"join order {self.order} must list distinct parameter indices")

    def kind_at(self, position: int) -> JoinKind:
        """How the parameter at ``position`` of the order joins its predecessors."""
        return self.kinds[position - 1] if position > 0 else JoinKind.CROSS


@dataclass(frozen=True, slots=True)
class Statement:
    """One validated function application."""

    function: str
    inputs: tuple[Binding | None, ...]
    """One entry per declared parameter of ``function``; ``None`` = unbound."""
    outputs: tuple[int | None, ...]
    """One entry per declared result of ``function``: the set id it feeds, or ``None``."""
    join: JoinPlan
    min_set_bytes: tuple[int, ...] | None = None
    """The function's registered ``min_set_bytes`` (per parameter), for any-sharding."""
    position: Position = SOURCE_START

    @property
    def reads(self) -> frozenset[int]:
        """The composition set ids this statement waits for."""
        return frozenset(b.set_id for b in self.inputs if b is not None)

    @property
    def writes(self) -> frozenset[int]:
        """The composition set ids this statement produces."""
        return frozenset(s for s in self.outputs if s is not None)


@dataclass(frozen=True, slots=True)
class CompositionGraph:
    """An executable composition: numbered sets and the statements that connect them."""

    name: str
    input_sets: tuple[str, ...]
    output_sets: tuple[str, ...]
    set_names: tuple[str, ...]
    """Composition set names by set id."""
    output_ids: tuple[int, ...]
    """The set id of every output, in output order (an output may be an input set)."""
    statements: tuple[Statement, ...]
    dependencies: frozenset[str]
    """The functions and compositions this composition applies."""

    @property
    def signature(self) -> Signature:
        """How enclosing compositions and callers see this composition."""
        return Signature(self.name, self.input_sets, self.output_sets)

    @property
    def output_map(self) -> dict[int, int]:
        """Set id → output index (Dandelion's ``output_map``)."""
        return {set_id: index for index, set_id in enumerate(self.output_ids)}

    def __repr__(self) -> str:
        return (
            f"<CompositionGraph {self.name} ({', '.join(self.input_sets)}) => "
            f"({', '.join(self.output_sets)}): {len(self.statements)} statement(s), "
            f"{len(self.set_names)} set(s)>"
        )
