"""Validation of parsed modules into composition graphs (Dandelion's composition builder).

Items are processed in source order. A ``function`` declaration must name a
registered function, system function or previously *registered* composition
and repeat its set names exactly; a composition defined earlier in the same
module is not visible to later ones (as in Dandelion). Every rule broken
raises :class:`pappus.errors.CompositionInvalid` whose ``kind`` is
Dandelion's error name and whose ``line``/``column``/``excerpt`` point at the
offending name.

Where pappus is stricter than Dandelion (each of these is silently accepted
there, with a surprising result at run time):

* a composition listing the same output set twice → ``DuplicateSetName``;
* a statement binding the same parameter twice, or assigning the same result
  to two sets → ``InvalidFunctionApplication``;
* a ``by`` clause with a single name is validated (Dandelion ignores it), and
  naming a parameter the statement leaves unbound → ``InvalidJoinSharding``.

``cross`` inside ``by`` means a cartesian product (Dandelion panics), and
join kinds always line up with the parameters they join.
"""

from __future__ import annotations

from collections.abc import Callable

from pappus.composition.ast import (
    Application,
    CompositionDef,
    FunctionDecl,
    JoinKind,
    Name,
    Position,
    Sharding,
)
from pappus.composition.graph import Binding, CompositionGraph, JoinPlan, Signature, Statement
from pappus.composition.parser import excerpt, parse_module
from pappus.errors import CompositionInvalid

Lookup = Callable[[str], Signature | None]
"""The registry as the builder sees it: a name → its registered signature, or ``None``."""


class _Checker:
    """Raises located :class:`CompositionInvalid` errors for one source text."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, kind: str, where: Position | Name, message: str) -> CompositionInvalid:
        position = where.position if isinstance(where, Name) else where
        return CompositionInvalid(
            f"line {position.line}, column {position.column}: {message}",
            kind=kind, line=position.line, column=position.column,
            excerpt=excerpt(self.source, position.line, position.column),
        )


def build_compositions(source: str, lookup: Lookup) -> list[CompositionGraph]:
    """Parse ``source`` and validate every composition in it against ``lookup``.

    Returns the compositions in source order. Raises
    :class:`~pappus.errors.CompositionSyntaxError` if the text does not
    parse and :class:`~pappus.errors.CompositionInvalid` if it breaks a rule.
    """
    module = parse_module(source)
    check = _Checker(source)
    declared: dict[str, Signature] = {}
    graphs: list[CompositionGraph] = []
    seen: set[str] = set()
    for item in module.items:
        if isinstance(item, FunctionDecl):
            declared[item.name.text] = _check_declaration(check, item, lookup)
            continue
        name = item.name.text
        if name in seen or lookup(name) is not None:
            raise check.fail("DuplicateIdentifier", item.name,
                             f"the name {name!r} is already taken by a registered function, "
                             "composition or an earlier composition of this module")
        seen.add(name)
        graphs.append(_build(check, item, declared))
    return graphs


def _check_declaration(check: _Checker, decl: FunctionDecl, lookup: Lookup) -> Signature:
    name = decl.name.text
    registered = lookup(name)
    if registered is None:
        raise check.fail("InvalidFunctionDeclaration", decl.name,
                         f"function {name!r} is declared but not registered; register it "
                         "first (a composition defined in this module cannot be declared)")
    if (decl.param_names, decl.return_names) != (registered.input_sets, registered.output_sets):
        raise check.fail(
            "InvalidFunctionDeclaration", decl.name,
            f"declaration {_shape(name, decl.param_names, decl.return_names)} does not match "
            f"the registered {_shape(name, registered.input_sets, registered.output_sets)}: "
            "set names, order and count must be the same",
        )
    return registered


def _shape(name: str, inputs: tuple[str, ...], outputs: tuple[str, ...]) -> str:
    return f"{name} ({', '.join(inputs)}) => ({', '.join(outputs)})"


def _build(check: _Checker, comp: CompositionDef, declared: dict[str, Signature]
           ) -> CompositionGraph:
    ids = _number_sets(check, comp)
    statements = tuple(_statement(check, app, declared, ids) for app in comp.statements)
    names = [""] * len(ids)
    for set_name, set_id in ids.items():
        names[set_id] = set_name
    return CompositionGraph(
        name=comp.name.text,
        input_sets=comp.param_names,
        output_sets=comp.return_names,
        set_names=tuple(names),
        output_ids=tuple(ids[n] for n in comp.return_names),
        statements=statements,
        dependencies=frozenset(s.function for s in statements),
    )


def _number_sets(check: _Checker, comp: CompositionDef) -> dict[str, int]:
    """Give every set of the composition its id (see :mod:`pappus.composition.graph`)."""
    ids: dict[str, int] = {}
    for param in comp.params:
        if param.text in ids:
            raise check.fail("DuplicateSetName", param,
                             f"input set {param.text!r} is listed twice")
        ids[param.text] = len(ids)
    outputs: set[str] = set()
    for result in comp.returns:
        if result.text in outputs:
            raise check.fail("DuplicateSetName", result,
                             f"output set {result.text!r} is listed twice")
        outputs.add(result.text)
        # An output that is also an input is passed through under the input's id.
        ids.setdefault(result.text, len(ids))
    first_output_id = len(comp.params)
    for app in comp.statements:
        for out in app.outputs:
            set_name = out.set_name.text
            if set_name not in ids:
                ids[set_name] = len(ids)
            elif set_name not in outputs or ids[set_name] < first_output_id:
                # Only composition outputs (that are not also inputs) may be
                # assigned, and by several statements.
                raise check.fail("DuplicateSetName", out.set_name,
                                 f"set {set_name!r} is already defined; every set except the "
                                 "composition's outputs is assigned exactly once")
    return ids


def _statement(check: _Checker, app: Application, declared: dict[str, Signature],
               ids: dict[str, int]) -> Statement:
    function = app.function.text
    signature = declared.get(function)
    if signature is None:
        raise check.fail("UnknownFunction", app.function,
                         f"{function!r} is applied but not declared in this module; add "
                         f"'function {function} (...) => (...);' before the composition")
    params, results = signature.input_sets, signature.output_sets
    if len(app.inputs) > len(params) or len(app.outputs) > len(results):
        raise check.fail(
            "InvalidFunctionApplication", app.function,
            f"{function} is applied to {len(app.inputs)} set(s) and {len(app.outputs)} "
            f"result(s) but declares {len(params)} and {len(results)}",
        )
    inputs: list[Binding | None] = [None] * len(params)
    for desc in app.inputs:
        if desc.param.text not in params:
            raise check.fail("InvalidFunctionApplication", desc.param,
                             f"{function} has no input set {desc.param.text!r}; its inputs are "
                             f"({', '.join(params)})")
        index = params.index(desc.param.text)
        if inputs[index] is not None:
            raise check.fail("InvalidFunctionApplication", desc.param,
                             f"input set {desc.param.text!r} of {function} is bound twice")
        if desc.set_name.text not in ids:
            raise check.fail("UndefinedDataSet", desc.set_name,
                             f"set {desc.set_name.text!r} is not an input of the composition "
                             "and no statement produces it")
        inputs[index] = Binding(ids[desc.set_name.text], desc.sharding, desc.optional)
    join = _join_plan(check, app, params, inputs)
    outputs: list[int | None] = [None] * len(results)
    for out in app.outputs:
        if out.result.text not in results:
            raise check.fail("InvalidFunctionApplication", out.result,
                             f"{function} has no output set {out.result.text!r}; its outputs "
                             f"are ({', '.join(results)})")
        index = results.index(out.result.text)
        if outputs[index] is not None:
            raise check.fail("InvalidFunctionApplication", out.result,
                             f"output set {out.result.text!r} of {function} is assigned twice")
        outputs[index] = ids[out.set_name.text]
    return Statement(function, tuple(inputs), tuple(outputs), join,
                     signature.min_set_bytes, app.position)


def _join_plan(check: _Checker, app: Application, params: tuple[str, ...],
               inputs: list[Binding | None]) -> JoinPlan:
    """Dandelion's join order: the keyed chain, other keyed inputs, anyKeyed chains, the rest.

    A ``by`` clause splits at ``cross`` into chains; each chain is all
    ``keyed`` or all ``anyKeyed``. Keyed chains form the outermost loop (in
    ``by`` order, then the remaining keyed parameters as cross products);
    anyKeyed chains follow; every other parameter comes last in parameter
    order.
    """
    keyed: list[tuple[int, JoinKind]] = []
    any_chains: list[list[tuple[int, JoinKind]]] = []
    joined: set[int] = set()
    if app.join is not None:
        chain_is_any: bool | None = None
        for position, name in enumerate(app.join.order):
            kind = app.join.kinds[position - 1] if position > 0 else JoinKind.CROSS
            if kind is JoinKind.CROSS:
                chain_is_any = None  # a cross product starts a new chain
            index = _joined_param(check, app, name, params=params, inputs=inputs, joined=joined)
            joined.add(index)
            is_any = _is_any_keyed(inputs[index])
            if chain_is_any is not None and chain_is_any != is_any:
                raise check.fail("InvalidJoinSharding", name,
                                 f"{name.text!r} joins a keyed with an anyKeyed input; use "
                                 "one mode for the whole chain or separate them with 'cross'")
            chain_is_any = is_any
            if not is_any:
                keyed.append((index, kind))
            elif kind is JoinKind.CROSS or not any_chains:
                any_chains.append([(index, JoinKind.CROSS)])
            else:
                any_chains[-1].append((index, kind))
    for index, binding in enumerate(inputs):
        if index not in joined and binding is not None and binding.sharding is Sharding.KEYED:
            keyed.append((index, JoinKind.CROSS))
            joined.add(index)
    steps = keyed + [step for chain in any_chains for step in chain]
    steps += [(index, JoinKind.CROSS) for index in range(len(params)) if index not in joined]
    return JoinPlan(tuple(i for i, _ in steps), tuple(k for _, k in steps[1:]))


def _joined_param(check: _Checker, app: Application, name: Name, *, params: tuple[str, ...],
                  inputs: list[Binding | None], joined: set[int]) -> int:
    function = app.function.text
    if name.text not in params:
        raise check.fail("InvalidFunctionApplication", name,
                         f"'by' names {name.text!r}, which is not an input set of {function}; "
                         f"'by' takes the function's parameter names ({', '.join(params)})")
    index = params.index(name.text)
    if index in joined:
        raise check.fail("InvalidSecondJoin", name, f"{name.text!r} is joined twice")
    binding = inputs[index]
    if binding is None:
        raise check.fail("InvalidJoinSharding", name,
                         f"{name.text!r} is not bound in this application, so it cannot be "
                         "joined")
    if not binding.sharding.is_keyed:
        raise check.fail("InvalidJoinSharding", name,
                         f"{name.text!r} is sharded '{binding.sharding.value}'; only keyed and "
                         "anyKeyed inputs can be joined")
    return index


def _is_any_keyed(binding: Binding | None) -> bool:
    return binding is not None and binding.sharding is Sharding.ANY_KEYED
