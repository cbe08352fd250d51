"""Parser: every Appendix A source parses (A.2 and the A.3 typo fail), with located errors."""

from __future__ import annotations

import pytest

from pappus.composition import (
    CompositionDef,
    FunctionDecl,
    JoinKind,
    Module,
    Position,
    Sharding,
    parse_module,
)
from pappus.composition.parser import MAX_SOURCE_CHARS, excerpt
from pappus.errors import CompositionSyntaxError
from tests.composition import sources


def syntax_error(source: str) -> CompositionSyntaxError:
    with pytest.raises(CompositionSyntaxError) as info:
        parse_module(source)
    return info.value


def only_composition(module: Module) -> CompositionDef:
    (composition,) = module.compositions
    return composition


@pytest.mark.parametrize("name", sorted(sources.A4_ALL))
def test_dandelion_parser_unit_sources_parse(name: str) -> None:
    module = parse_module(sources.A4_ALL[name])
    assert [f.name.text for f in module.functions][:1] in (["Access"], ["HTTP"], ["FunA"])


def test_function_test_declarations_keep_names_in_order() -> None:
    module = parse_module(sources.A4_FUNCTION_TEST)
    assert [(f.name.text, f.param_names, f.return_names) for f in module.functions] == [
        ("Access", ("AccessToken",), ("HTTPRequest",)),
        ("FanOut", ("HTTPResponse", "Topic"), ("HTTPRequests",)),
        ("Render", ("HTTPResponses",), ("HTMLOutput",)),
        ("HTTP", ("Request",), ("Response",)),
    ]
    assert module.compositions == ()


def test_example_input_structure() -> None:
    module = parse_module(sources.A1_EXAMPLE)
    assert [f.name.text for f in module.functions] == ["Access", "FanOut", "Render", "HTTP"]
    composition = only_composition(module)
    assert composition.name.text == "RenderLogs"
    assert composition.param_names == ("InputAccessToken", "InputTopic")
    assert composition.return_names == ("HTMLOutput",)
    assert [s.function.text for s in composition.statements] == [
        "Access", "HTTP", "FanOut", "HTTP", "Render"]
    fan_out = composition.statements[2]
    assert [(d.param.text, d.set_name.text, d.sharding, d.optional) for d in fan_out.inputs] == [
        ("HTTPResponse", "AuthResponse", Sharding.ALL, False),
        ("Topic", "InputTopic", Sharding.ALL, False)]
    assert [(o.set_name.text, o.result.text) for o in fan_out.outputs] == [
        ("LogRequests", "HTTPRequests")]
    assert composition.statements[1].inputs[0].sharding is Sharding.EACH


def test_positions_on_every_node() -> None:
    module = parse_module(sources.A1_EXAMPLE)
    access = module.functions[0]
    assert access.position == Position(2, 1)
    assert access.name.position == Position(2, 10)
    assert access.params[0].position == Position(2, 17)
    composition = only_composition(module)
    assert composition.position == Position(8, 1)
    assert composition.name.position == Position(8, 13)
    statement = composition.statements[0]
    assert statement.position == Position(9, 5)
    assert statement.inputs[0].position == Position(9, 12)
    assert statement.inputs[0].set_name.position == Position(9, 30)
    assert statement.outputs[0].position == Position(9, 52)
    assert statement.outputs[0].result.position == Position(9, 66)


def test_registry_and_server_sources_parse() -> None:
    for source in (sources.A6_HTTP_REGISTRY, sources.A7_CHAIN, sources.A7_REUSE_OUTPUT):
        composition = only_composition(parse_module(source))
        assert composition.statements
    reuse = only_composition(parse_module(sources.A7_REUSE_OUTPUT))
    assert [d.param.text for d in reuse.statements[2].inputs] == ["add_left", "add_right"]


def test_simple_test_has_a_statement_without_results() -> None:
    composition = only_composition(parse_module(sources.A4_SIMPLE_TEST))
    assert composition.return_names == ()
    assert composition.statements[2].outputs == ()
    assert all(s.inputs[0].sharding is Sharding.KEYED for s in composition.statements)


def test_optional_and_keyed() -> None:
    first, second, third = only_composition(parse_module(sources.A4_OPTIONAL_TEST)).statements
    assert first.inputs[0].optional and first.inputs[0].sharding is Sharding.KEYED
    assert second.inputs[0].optional and second.inputs[0].sharding is Sharding.KEYED
    assert not third.inputs[0].optional


def test_sharding_modes() -> None:
    statements = only_composition(parse_module(sources.A4_SHARDING_TEST)).statements
    assert [d.sharding for d in statements[1].inputs] == [
        Sharding.KEYED, Sharding.ANY_KEYED, Sharding.ANY_EACH]
    assert statements[0].join is None


def test_join_clauses() -> None:
    statements = only_composition(parse_module(sources.A4_JOIN_TEST)).statements
    joins = [s.join for s in statements]
    assert joins[0] is not None and [n.text for n in joins[0].order] == ["A", "B"]
    assert joins[0].kinds == (JoinKind.RIGHT,)
    assert joins[1] is not None and joins[1].kinds == (JoinKind.LEFT, JoinKind.FULL)
    assert joins[2] is not None and joins[2].kinds == (JoinKind.CROSS, JoinKind.INNER)
    assert [n.text for n in joins[2].order] == ["A", "B", "C"]
    assert joins[3] is None


def test_old_syntax_fails_at_its_first_character() -> None:
    error = syntax_error(sources.A2_OLD_SYNTAX)
    assert (error.detail["line"], error.detail["column"]) == (2, 1)
    assert "'('" in error.message and "'function'" in error.message


def test_readme_typo_fails_naming_the_word() -> None:
    error = syntax_error(sources.A3_README_TYPO)
    assert (error.detail["line"], error.detail["column"]) == (6, 1)
    assert "'compositon'" in error.message
    assert "'composition'" in error.message
    assert error.detail["excerpt"].splitlines() == [
        "    compositon image_process (images) => (status) {", "    ^"]


def test_readme_example_with_the_typo_fixed_parses() -> None:
    fixed = sources.A3_README_TYPO.replace("compositon", "composition")
    statements = only_composition(parse_module(fixed)).statements
    compress = statements[2]
    assert compress.join is not None
    assert [n.text for n in compress.join.order] == ["classified", "fetched_archives"]


@pytest.mark.parametrize(
    ("source", "line", "column", "needles"),
    [
        ("function F(a) => (b)", 1, 21, ["';'", "ended"]),
        ("function F(a) (b);", 1, 15, ["'=>'", "'('"]),
        ("function F(a,) => (b);", 1, 14, ["a name", "')'"]),
        ("composition C (a) => (b)", 1, 25, ["'{'"]),
        ("composition C (a) => (b) {\n  F(x = every a) => ();\n}", 2, 9, ["sharding", "'every'"]),
        ("composition C (a) => (b) {\n  F(x = all a) => () by x outer y;\n}", 2, 27,
         ["a join", "'outer'"]),
        ("composition C (a) => (b) {\n  F(x = all a) => (b = y)\n}", 3, 1, ["';'", "'by'"]),
        ("function F-G () => ();", 1, 11, ["'-'"]),
        ("function F (a) => (b); // comment\nfunction", 2, 9, ["a name"]),
        ("function F (a) => (b);\n\tfunction G(x) => (y)", 2, 22, ["';'"]),
        ("\x00", 1, 1, ["'\\x00'"]),
        ("function é () => ();", 1, 10, ["'é'"]),
    ],
)
def test_errors_are_located(source: str, line: int, column: int, needles: list[str]) -> None:
    error = syntax_error(source)
    assert (error.detail["line"], error.detail["column"]) == (line, column)
    for needle in needles:
        assert needle in error.message
    assert error.message.startswith(f"line {line}, column {column}: ")
    source_line, caret_line = error.detail["excerpt"].splitlines()
    assert caret_line == " " * (4 + column - 1) + "^"
    assert source_line.startswith("    ")


def test_keywords_do_not_swallow_identifier_prefixes() -> None:
    # Dandelion reads `allX` as `all X`; pappus reads one name and says so.
    error = syntax_error("composition C (X) => () { F (A = allX) => (); }")
    assert (error.detail["line"], error.detail["column"]) == (1, 34)
    assert "'allX'" in error.message and "sharding mode" in error.message
    error = syntax_error("functionF () => ();")
    assert "'functionF'" in error.message
    error = syntax_error(
        "composition C (a) => () { F (A = keyed a, B = keyed a) => () by A innerB; }")
    assert "'innerB'" in error.message


def test_keywords_are_ordinary_names_where_a_name_is_expected() -> None:
    module = parse_module(
        "function left (all, by) => (optional);\n"
        "composition function (each) => (keyed) {\n"
        "  left (all = all each, by = optional keyed each) => (keyed = optional) by all left by;\n"
        "}\n")
    decl = module.functions[0]
    assert (decl.name.text, decl.param_names, decl.return_names) == (
        "left", ("all", "by"), ("optional",))
    statement = only_composition(module).statements[0]
    assert [(d.param.text, d.sharding, d.optional, d.set_name.text) for d in statement.inputs] == [
        ("all", Sharding.ALL, False, "each"), ("by", Sharding.KEYED, True, "each")]
    assert statement.join is not None
    assert [n.text for n in statement.join.order] == ["all", "by"]
    assert statement.join.kinds == (JoinKind.LEFT,)


def test_comments_and_free_whitespace() -> None:
    module = parse_module(
        "// header\nfunction F ( ) => ( ) ; // empty lists with spaces\n"
        "composition\u2003C\t(\n a // input\n) => ( ) {\r\n}\n")
    assert module.functions == (FunctionDecl(module.functions[0].name, (), (), Position(2, 1)),)
    assert only_composition(module).param_names == ("a",)


def test_several_compositions_in_one_module() -> None:
    module = parse_module("composition A () => () { }\ncomposition B (x) => (x) { }")
    assert [c.name.text for c in module.compositions] == ["A", "B"]


@pytest.mark.parametrize("source", ["", "   \n\t", "// only a comment", "// a\n// b\n"])
def test_empty_modules(source: str) -> None:
    assert parse_module(source) == Module(())


def test_huge_source_is_refused_with_a_syntax_error() -> None:
    error = syntax_error("function F () => ();" * (MAX_SOURCE_CHARS // 20 + 1))
    assert "limit" in error.message
    assert (error.detail["line"], error.detail["column"]) == (1, 1)


def test_long_module_parses() -> None:
    source = "".join(f"function F{i} (a{i}, b) => (c);\n" for i in range(5000))
    assert len(parse_module(source).functions) == 5000


def test_non_text_is_a_syntax_error() -> None:
    with pytest.raises(CompositionSyntaxError):
        parse_module(b"function F () => ();")  # type: ignore[arg-type]


def test_excerpt_of_a_long_line_keeps_the_caret_on_the_column() -> None:
    line = "x" * 500 + "!" + "y" * 500
    shown, caret = excerpt(line, 1, 501).splitlines()
    assert shown[caret.index("^")] == "!"
    assert len(shown) < 200


def test_excerpt_replaces_unprintable_characters() -> None:
    shown, caret = excerpt("a\tb\x00c\ud800d", 1, 7).splitlines()
    assert shown == "    a b?c?d"
    assert shown[caret.index("^")] == "d"


def test_only_newlines_end_lines_as_the_lexer_counts_them() -> None:
    # U+2028 is whitespace to the lexer but not a line break; CRLF is one break.
    error = syntax_error("function F (a) => (b);\u2028function\r\nG")
    assert (error.detail["line"], error.detail["column"]) == (2, 2)
    assert error.detail["excerpt"].splitlines() == ["    G", "     ^"]
    error = syntax_error("function F (a) => (b);\u2028function G (")
    assert error.detail["line"] == 1
    assert error.detail["excerpt"].splitlines()[0] == "    function F (a) => (b);?function G ("
