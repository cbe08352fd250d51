"""The syntax tree of the composition language: frozen dataclasses with source positions.

Every node carries the 1-based ``position`` (line, column) of its first
character, so that validation errors can point at the exact name at fault.
The tree mirrors Dandelion's ``dparser`` AST (``Module``, ``FunctionDecl``,
``Composition``, ``FunctionApplication`` with input/output descriptors and an
optional join clause); ``Statement::Loop``, which Dandelion's parser never
produces, has no counterpart.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Sharding(Enum):
    """How a statement distributes one input set over invocations."""

    ALL = "all"
    EACH = "each"
    KEYED = "keyed"
    ANY_EACH = "anyEach"
    ANY_KEYED = "anyKeyed"

    @property
    def is_keyed(self) -> bool:
        """Grouped by key (``keyed`` or ``anyKeyed``), so it may take part in a ``by`` join."""
        return self in (Sharding.KEYED, Sharding.ANY_KEYED)

    @property
    def is_any(self) -> bool:
        """The worker may merge neighbouring groups (``anyEach`` or ``anyKeyed``)."""
        return self in (Sharding.ANY_EACH, Sharding.ANY_KEYED)


class JoinKind(Enum):
    """How two keyed parameters are combined (the language's ``full`` is an outer join)."""

    CROSS = "cross"
    INNER = "inner"
    LEFT = "left"
    RIGHT = "right"
    FULL = "full"


@dataclass(frozen=True, slots=True)
class Position:
    """A 1-based line and column in the source text (columns count characters)."""

    line: int
    column: int


SOURCE_START = Position(1, 1)
"""Where every source begins: the position of a module and of synthetic nodes."""


@dataclass(frozen=True, slots=True)
class Name:
    """An identifier as written, with where it was written."""

    text: str
    position: Position


@dataclass(frozen=True, slots=True)
class FunctionDecl:
    """``function NAME (params) => (returns);``"""

    name: Name
    params: tuple[Name, ...]
    returns: tuple[Name, ...]
    position: Position

    @property
    def param_names(self) -> tuple[str, ...]:
        """The parameter (input set) names in order."""
        return tuple(n.text for n in self.params)

    @property
    def return_names(self) -> tuple[str, ...]:
        """The return (output set) names in order."""
        return tuple(n.text for n in self.returns)


@dataclass(frozen=True, slots=True)
class InputDescriptor:
    """``param = [optional] SHARDING set`` inside a statement's argument list."""

    param: Name
    set_name: Name
    sharding: Sharding
    optional: bool
    position: Position


@dataclass(frozen=True, slots=True)
class OutputDescriptor:
    """``set = result`` inside a statement's result list."""

    set_name: Name
    result: Name
    position: Position


@dataclass(frozen=True, slots=True)
class JoinClause:
    """``by A kind B kind C``: ``order`` holds one more name than ``kinds``."""

    order: tuple[Name, ...]
    kinds: tuple[JoinKind, ...]
    position: Position


@dataclass(frozen=True, slots=True)
class Application:
    """One statement: a function applied to composition sets."""

    function: Name
    inputs: tuple[InputDescriptor, ...]
    outputs: tuple[OutputDescriptor, ...]
    join: JoinClause | None
    position: Position


@dataclass(frozen=True, slots=True)
class CompositionDef:
    """``composition NAME (params) => (returns) { statements }``"""

    name: Name
    params: tuple[Name, ...]
    returns: tuple[Name, ...]
    statements: tuple[Application, ...]
    position: Position

    @property
    def param_names(self) -> tuple[str, ...]:
        """The composition's input set names in order."""
        return tuple(n.text for n in self.params)

    @property
    def return_names(self) -> tuple[str, ...]:
        """The composition's output set names in order."""
        return tuple(n.text for n in self.returns)


ModuleItem = FunctionDecl | CompositionDef
"""A top-level item of a module."""


@dataclass(frozen=True, slots=True)
class Module:
    """A parsed source: declarations and compositions in source order."""

    items: tuple[ModuleItem, ...]
    position: Position = SOURCE_START

    @property
    def functions(self) -> tuple[FunctionDecl, ...]:
        """The function declarations, in source order."""
        return tuple(i for i in self.items if isinstance(i, FunctionDecl))

    @property
    def compositions(self) -> tuple[CompositionDef, ...]:
        """The compositions, in source order."""
        return tuple(i for i in self.items if isinstance(i, CompositionDef))
