"""Builder: Dandelion's A.5 oracles, the registry/server sources, and every §3.3 error kind."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from pappus.composition import (
    Binding,
    CompositionGraph,
    JoinKind,
    JoinPlan,
    Sharding,
    Signature,
    build_compositions,
)
from pappus.errors import CompositionInvalid, CompositionSyntaxError
from tests.composition import sources

ALL, KEYED, ANY_KEYED = Sharding.ALL, Sharding.KEYED, Sharding.ANY_KEYED
CROSS, INNER, LEFT, RIGHT, FULL = (JoinKind.CROSS, JoinKind.INNER, JoinKind.LEFT, JoinKind.RIGHT,
                                   JoinKind.FULL)


def registry(*signatures: Signature) -> Callable[[str], Signature | None]:
    table = {s.name: s for s in signatures}
    return table.get


def build(source: str, *signatures: Signature) -> list[CompositionGraph]:
    return build_compositions(source, registry(*signatures))


def build_one(source: str, *signatures: Signature) -> CompositionGraph:
    (graph,) = build(source, *signatures)
    return graph


def invalid(source: str, *signatures: Signature) -> CompositionInvalid:
    with pytest.raises(CompositionInvalid) as info:
        build(source, *signatures)
    error = info.value
    line, column = error.detail["line"], error.detail["column"]
    text, caret = error.detail["excerpt"].splitlines()
    assert caret.index("^") == 4 + column - 1
    assert text[4:] == source.splitlines()[line - 1].replace("\t", " ")
    assert error.message.startswith(f"line {line}, column {column}: ")
    return error


def located(error: CompositionInvalid) -> tuple[str, int, int]:
    return error.detail["kind"], error.detail["line"], error.detail["column"]


FUNCTION = Signature("Function", ("Fin",), ("Fout",))
FUN_A = Signature("FunA", ("A", "B"), ("C",))
FUN_B = Signature("FunB", ("A", "B", "C"), ("D",))
FUN_C = Signature("FunC", ("D",), ("E",))
DECLARE_FUN_B = "function FunB (A, B, C) => (D);\n"


# -- A.5: dispatcher/src/tests/composition_tests.rs ---------------------------------------------


def test_declaring_an_unregistered_function() -> None:
    error = invalid("function not_registered () => ();")
    assert located(error) == ("InvalidFunctionDeclaration", 1, 10)
    assert "not registered" in error.message


def test_declaring_a_registered_function() -> None:
    assert build("function registered () => ();", Signature("registered", (), ())) == []


def test_minimal_composition() -> None:
    graph = build_one(
        "function Function () => ();\n"
        "composition Composition () => () {\n    Function () => ();\n}",
        Signature("Function", (), ()))
    assert graph.dependencies == {"Function"}
    assert graph.set_names == ()
    assert graph.output_map == {}
    (statement,) = graph.statements
    assert (statement.function, statement.inputs, statement.outputs) == ("Function", (), ())
    assert graph.signature == Signature("Composition", (), ())


def test_minimal_composition_with_inputs() -> None:
    graph = build_one(
        "function Function (Fin) => (Fout);\n"
        "composition Composition (Cin) => (Cout) { Function (Fin = all Cin) => (Cout = Fout); }",
        FUNCTION)
    (statement,) = graph.statements
    assert statement.inputs == (Binding(0, ALL, optional=False),)
    assert statement.outputs == (1,)
    assert graph.output_map == {1: 0}
    assert graph.signature == Signature("Composition", ("Cin",), ("Cout",))
    assert graph.set_names == ("Cin", "Cout")


def test_function_with_unused_input() -> None:
    graph = build_one(
        "function Function (Fin, Unused) => (Fout);\n"
        "composition Composition (Cin) => (Cout) { Function (Fin = all Cin) => (Cout = Fout); }",
        Signature("Function", ("Fin", "Unused"), ("Fout",)))
    assert graph.statements[0].inputs == (Binding(0, ALL), None)
    assert graph.statements[0].outputs == (1,)
    assert graph.output_map == {1: 0}


def test_function_with_unused_output() -> None:
    graph = build_one(
        "function Function (Fin) => (Fout, Unused);\n"
        "composition Composition (Cin) => (Cout) { Function (Fin = all Cin) => (Cout = Fout); }",
        Signature("Function", ("Fin",), ("Fout", "Unused")))
    assert graph.statements[0].inputs == (Binding(0, ALL),)
    assert graph.statements[0].outputs == (1, None)


def test_missing_input_set() -> None:
    error = invalid(
        "function Function (Fin) => (Fout);\n"
        "composition Composition (Cin) => (Cout) {\n"
        "    Function (Fin = all NonExistent) => (Cout = Fout);\n}", FUNCTION)
    assert located(error) == ("UndefinedDataSet", 3, 25)
    assert "'NonExistent'" in error.message


def test_missing_output_is_valid_but_never_produced() -> None:
    graph = build_one(
        "function Function (Fin) => ();\n"
        "composition Composition (Cin) => (Cout) { Function (Fin = all Cin) => (); }",
        Signature("Function", ("Fin",), ()))
    assert graph.output_ids == (1,)
    assert graph.statements[0].outputs == ()
    assert all(1 not in s.writes for s in graph.statements)


# -- A.1, A.6, A.7 with matching registrations ----------------------------------------------------


def test_example_input_with_its_functions_registered() -> None:
    graph = build_one(
        sources.A1_EXAMPLE,
        Signature("Access", ("AccessToken",), ("HTTPRequest",)),
        Signature("FanOut", ("HTTPResponse", "Topic"), ("HTTPRequests",)),
        Signature("Render", ("HTTPResponses",), ("HTMLOutput",)),
        Signature("HTTP", ("Request",), ("Response",)))
    assert graph.dependencies == {"Access", "FanOut", "Render", "HTTP"}
    assert graph.set_names == ("InputAccessToken", "InputTopic", "HTMLOutput", "AuthRequest",
                               "AuthResponse", "LogRequests", "LogResponses")
    fan_out = graph.statements[2]
    assert fan_out.inputs == (Binding(4, ALL), Binding(1, ALL))
    assert graph.statements[4].outputs == (2,)


def test_registry_source_with_the_http_system_function() -> None:
    http = Signature("HTTP", ("requests",), ("headers", "bodies"))
    graph = build_one(sources.A6_HTTP_REGISTRY, http)
    assert graph.signature == Signature("Composition", ("comp_requests",),
                                        ("comp_headers", "comp_bodies"))
    assert graph.statements[0].outputs == (1, 2)
    # The README's HTTP signature does not match the registered one.
    error = invalid("function HTTP(requests) => (responses);", http)
    assert located(error) == ("InvalidFunctionDeclaration", 1, 10)
    assert "HTTP (requests) => (headers, bodies)" in error.message


def test_server_chain_and_reuse_output() -> None:
    chain = build_one(sources.A7_CHAIN, Signature("matmul_1_1", ("InMats",), ("OutMats",)))
    assert [s.inputs[0] for s in chain.statements] == [Binding(0, ALL), Binding(2, ALL)]
    assert [s.outputs for s in chain.statements] == [(2,), (1,)]
    reuse = build_one(
        sources.A7_REUSE_OUTPUT,
        Signature("matmul", ("matrix_in",), ("matrix_out",)),
        Signature("matmac", ("mul_left", "add_left", "add_right"), ("matrix_out",)))
    assert reuse.set_names == ("CompIn", "CompOut", "MatrixA", "MatrixB")
    matmac = reuse.statements[2]
    assert matmac.inputs == (None, Binding(2, ALL), Binding(3, ALL))
    assert matmac.join == JoinPlan((0, 1, 2), (CROSS, CROSS))
    assert reuse.dependencies == {"matmul", "matmac"}


def test_fetch_compute_equivalent_source() -> None:
    graph = build_one(
        "function HTTP (requests) => (headers, bodies); function M (in) => (out);\n"
        "composition C (req) => (res) { HTTP (requests = each req) => (b = bodies);"
        " M (in = each b) => (res = out); }",
        Signature("HTTP", ("requests",), ("headers", "bodies")), Signature("M", ("in",), ("out",)))
    assert graph.statements[0].outputs == (None, 2)
    assert graph.statements[1].inputs == (Binding(2, Sharding.EACH),)


def test_nested_composition_is_declared_like_a_function() -> None:
    inner = build_one(sources.A7_CHAIN, Signature("matmul_1_1", ("InMats",), ("OutMats",)))
    outer = build_one(
        "function chain_1_1 (CompInMats) => (CompOutMats);\n"
        "composition twice (x) => (y) {\n"
        "  chain_1_1 (CompInMats = all x) => (m = CompOutMats);\n"
        "  chain_1_1 (CompInMats = all m) => (y = CompOutMats);\n}",
        inner.signature)
    assert outer.dependencies == {"chain_1_1"}


def test_several_compositions_in_a_module_do_not_see_each_other() -> None:
    graphs = build(
        "function Function (Fin) => (Fout);\n"
        "composition First (a) => (b) { Function (Fin = all a) => (b = Fout); }\n"
        "composition Second (a) => (b) { Function (Fin = each a) => (b = Fout); }", FUNCTION)
    assert [g.name for g in graphs] == ["First", "Second"]
    error = invalid(
        "function Function (Fin) => (Fout);\n"
        "composition First (a) => (b) { Function (Fin = all a) => (b = Fout); }\n"
        "function First (a) => (b);", FUNCTION)
    assert located(error) == ("InvalidFunctionDeclaration", 3, 10)


def test_graphs_are_frozen_data() -> None:
    graph = build_one(
        "function Function (Fin) => (Fout);\n"
        "composition C (a) => (b) { Function (Fin = all a) => (b = Fout); }", FUNCTION)
    with pytest.raises(dataclasses.FrozenInstanceError):
        graph.name = "D"  # type: ignore[misc]
    assert hash(graph) == hash(build_one(
        "function Function (Fin) => (Fout);\n"
        "composition C (a) => (b) { Function (Fin = all a) => (b = Fout); }", FUNCTION))
    assert repr(graph) == "<CompositionGraph C (a) => (b): 1 statement(s), 2 set(s)>"


def test_output_that_is_an_input_passes_through() -> None:
    graph = build_one("composition C (x, y) => (y, z) { }")
    assert graph.output_ids == (1, 2)
    assert graph.output_map == {1: 0, 2: 1}


def test_composition_outputs_may_have_several_writers() -> None:
    graph = build_one(
        "function Function (Fin) => (Fout);\n"
        "composition C (a, b) => (r) {\n"
        "  Function (Fin = all a) => (r = Fout);\n"
        "  Function (Fin = all b) => (r = Fout);\n}", FUNCTION)
    assert [s.outputs for s in graph.statements] == [(2,), (2,)]


def test_syntax_errors_come_through_unchanged() -> None:
    with pytest.raises(CompositionSyntaxError):
        build("compositon C () => () {}")


# -- §3.3 error kinds -----------------------------------------------------------------------------


@pytest.mark.parametrize("declaration", [
    "function Function (Other) => (Fout);",
    "function Function (Fin) => (Other);",
    "function Function (Fin, Fout) => ();",
    "function Function () => (Fout);",
    "function Function (Fin) => (Fout, Fout);",
])
def test_declaration_must_repeat_the_registered_names(declaration: str) -> None:
    assert located(invalid(declaration, FUNCTION)) == ("InvalidFunctionDeclaration", 1, 10)


def test_declaration_order_must_match() -> None:
    error = invalid("function FunA (B, A) => (C);", FUN_A)
    assert located(error) == ("InvalidFunctionDeclaration", 1, 10)


def test_duplicate_identifier() -> None:
    registered = Signature("Taken", (), ())
    error = invalid("composition Taken () => () { }", registered)
    assert located(error) == ("DuplicateIdentifier", 1, 13)
    error = invalid("composition Twice () => () { }\n\ncomposition Twice () => () { }")
    assert located(error) == ("DuplicateIdentifier", 3, 13)
    error = invalid("function Function (Fin) => (Fout);\ncomposition Function () => () { }",
                    FUNCTION)
    assert located(error) == ("DuplicateIdentifier", 2, 13)


@pytest.mark.parametrize(("body", "line", "column"), [
    ("composition C (a, a) => () { }", 1, 19),
    ("composition C (a) => (b, b) { }", 1, 26),
    ("composition C (a) => (b) {\n  Function (Fin = all a) => (a = Fout);\n}", 2, 30),
    ("composition C (a) => (a) {\n  Function (Fin = all a) => (a = Fout);\n}", 2, 30),
    ("composition C (a) => (b) {\n  Function (Fin = all a) => (m = Fout);\n"
     "  Function (Fin = all a) => (m = Fout);\n}", 3, 30),
    ("composition C (a) => (b) {\n  Function2 (Fin = all a) => (m = Fout, m = Other);\n}", 2, 41),
])
def test_duplicate_set_name(body: str, line: int, column: int) -> None:
    source = "function Function (Fin) => (Fout);\nfunction Function2 (Fin) => (Fout, Other);\n"
    error = invalid(source + body, FUNCTION, Signature("Function2", ("Fin",), ("Fout", "Other")))
    assert located(error) == ("DuplicateSetName", line + 2, column)


def test_unknown_function_even_if_registered() -> None:
    error = invalid("composition C (a) => (b) {\n  Function (Fin = all a) => (b = Fout);\n}",
                    FUNCTION)
    assert located(error) == ("UnknownFunction", 2, 3)
    assert "not declared" in error.message


@pytest.mark.parametrize(("statement", "column", "needle"), [
    ("Function (Fin = all a, Extra = all a) => (b = Fout);", 3, "applied to 2"),
    ("Function (Fin = all a) => (b = Fout, c = Fout);", 3, "2 result"),
    ("Function (Fon = all a) => (b = Fout);", 13, "no input set 'Fon'"),
    ("Function (Fin = all a) => (b = Fut);", 34, "no output set 'Fut'"),
    ("Function2 (Fin = all a, Fin = all a) => (b = Fout);", 27, "bound twice"),
    ("Function2 (Fin = all a) => (b = Fout, c = Fout);", 45, "assigned twice"),
    ("Function2 (Fin = keyed a, Other = keyed a) => (b = Fout) by Fin inner Nope;", 73,
     "'Nope'"),
])
def test_invalid_function_application(statement: str, column: int, needle: str) -> None:
    source = ("function Function (Fin) => (Fout);\n"
              "function Function2 (Fin, Other) => (Fout, Other);\n"
              f"composition C (a) => (b, c) {{\n  {statement}\n}}")
    error = invalid(source, FUNCTION, Signature("Function2", ("Fin", "Other"), ("Fout", "Other")))
    assert located(error) == ("InvalidFunctionApplication", 4, column)
    assert needle in error.message


def test_undefined_data_set_in_dandelions_sharding_test() -> None:
    error = invalid(sources.A4_SHARDING_TEST, FUN_A, FUN_B, FUN_C)
    assert error.detail["kind"] == "UndefinedDataSet"
    assert "'InputC'" in error.message


def test_invalid_second_join() -> None:
    error = invalid(DECLARE_FUN_B + "composition C (a) => () {\n"
                    "  FunB (A = keyed a, B = keyed a) => () by A inner B left A;\n}", FUN_B)
    assert located(error) == ("InvalidSecondJoin", 3, 59)


@pytest.mark.parametrize(("statement", "column", "needle"), [
    ("FunB (A = keyed a, B = all a) => () by A inner B;", 50, "sharded 'all'"),
    ("FunB (A = each a) => () by A;", 30, "sharded 'each'"),
    ("FunB (A = keyed a, B = anyKeyed a) => () by A inner B;", 55, "anyKeyed"),
    ("FunB (A = anyKeyed a, B = keyed a) => () by A full B;", 54, "anyKeyed"),
    ("FunB (A = keyed a) => () by A inner B;", 39, "not bound"),
])
def test_invalid_join_sharding(statement: str, column: int, needle: str) -> None:
    error = invalid(DECLARE_FUN_B + f"composition C (a) => () {{\n  {statement}\n}}", FUN_B)
    assert located(error) == ("InvalidJoinSharding", 3, column)
    assert needle in error.message


# -- join plans -----------------------------------------------------------------------------------


def plan(statement: str) -> JoinPlan:
    graph = build_one(DECLARE_FUN_B + f"composition C (a, b, c) => () {{ {statement} }}", FUN_B)
    return graph.statements[0].join


@pytest.mark.parametrize(("statement", "expected"), [
    # Dandelion's join_test clauses (with every set defined).
    ("FunB (A = keyed a, B = keyed b) => () by A right B;", JoinPlan((0, 1, 2), (RIGHT, CROSS))),
    ("FunB (A = keyed a, B = keyed b, C = keyed c) => () by A left B full C;",
     JoinPlan((0, 1, 2), (LEFT, FULL))),
    ("FunB (A = keyed a, B = keyed b, C = keyed c) => () by A cross B inner C;",
     JoinPlan((0, 1, 2), (CROSS, INNER))),
    # `by` order first, then the other keyed inputs as cross products, then the rest.
    ("FunB (A = all a, B = keyed b, C = keyed c) => () by C inner B;",
     JoinPlan((2, 1, 0), (INNER, CROSS))),
    ("FunB (A = each a, B = keyed b, C = keyed c) => ();", JoinPlan((1, 2, 0), (CROSS, CROSS))),
    # Dandelion's sharding_test FunB: keyed first, anyKeyed and anyEach in parameter order.
    ("FunB (A = keyed a, B = anyKeyed b, C = anyEach c) => ();",
     JoinPlan((0, 1, 2), (CROSS, CROSS))),
    # anyKeyed chains come after every keyed input.
    ("FunB (A = keyed a, B = anyKeyed b, C = anyKeyed c) => () by C left B;",
     JoinPlan((0, 2, 1), (CROSS, LEFT))),
    # a cross product separates a keyed chain from an anyKeyed one.
    ("FunB (A = anyKeyed a, B = keyed b, C = anyKeyed c) => () by A inner C cross B;",
     JoinPlan((1, 0, 2), (CROSS, INNER))),
    # unbound parameters take their place among the rest.
    ("FunB (B = each b) => ();", JoinPlan((0, 1, 2), (CROSS, CROSS))),
    # a single name is honoured (Dandelion ignores it): C leads the keyed chain.
    ("FunB (A = keyed a, C = keyed c) => () by C;", JoinPlan((2, 0, 1), (CROSS, CROSS))),
])
def test_join_plans(statement: str, expected: JoinPlan) -> None:
    assert plan(statement) == expected


def test_min_set_bytes_travel_with_the_statement() -> None:
    signature = dataclasses.replace(FUN_B, min_set_bytes=(1, 2, 3))
    graph = build_one(DECLARE_FUN_B + "composition C (a) => () { FunB (A = anyEach a) => (); }",
                      signature)
    assert graph.statements[0].min_set_bytes == (1, 2, 3)


def test_join_plan_rejects_inconsistent_shapes() -> None:
    with pytest.raises(ValueError, match="join kind"):
        JoinPlan((0, 1), ())
    with pytest.raises(ValueError, match="distinct"):
        JoinPlan((0, 0), (CROSS,))
