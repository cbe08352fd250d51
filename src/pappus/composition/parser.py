"""Parser for Dandelion's composition language (Lark, LALR, contextual lexer).

Grammar (Dandelion's ``dparser``, plus ``//`` line comments)::

    module        = { function_decl | composition }
    function_decl = "function" NAME "(" [names] ")" "=>" "(" [names] ")" ";"
    composition   = "composition" NAME "(" [names] ")" "=>" "(" [names] ")"
                    "{" { statement } "}"
    statement     = NAME "(" [in_desc {"," in_desc}] ")" "=>" "(" [out_desc {"," out_desc}] ")"
                    [ "by" NAME { JOIN NAME } ] ";"
    in_desc       = NAME "=" ["optional"] SHARDING NAME      (* param = mode set *)
    out_desc      = NAME "=" NAME                            (* set = result *)
    SHARDING      = "all" | "each" | "keyed" | "anyEach" | "anyKeyed"
    JOIN          = "cross" | "inner" | "left" | "right" | "full"
    NAME          = [A-Za-z_][A-Za-z0-9_]*

Where pappus deliberately differs from Dandelion's parser:

* A keyword never swallows the prefix of an identifier: ``A = allX`` is an
  error (``allX`` is one name where a sharding mode is expected), and
  ``functionF`` is a name, not ``function F``. Dandelion matches keywords as
  prefixes and reads ``all X`` / ``function F``.
* Keywords are only keywords where the grammar expects one, so functions,
  parameters and sets may be called ``left``, ``all`` or ``by``.
* Whitespace is free everywhere, including inside empty parentheses
  (``function F ( ) => ();`` fails in Dandelion).
* ``//`` starts a comment that runs to the end of the line.

Every failure, for any input string whatsoever, is a
:class:`pappus.errors.CompositionSyntaxError` whose message says what was
expected and what was found, with ``line``, ``column`` and an ``excerpt``
(the source line and a caret under the column) in its detail.
"""

from __future__ import annotations

from collections.abc import Collection

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import (
    LarkError,
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
)

from pappus.composition.ast import (
    Application,
    CompositionDef,
    FunctionDecl,
    InputDescriptor,
    JoinClause,
    JoinKind,
    Module,
    ModuleItem,
    Name,
    OutputDescriptor,
    Position,
    Sharding,
)
from pappus.errors import CompositionSyntaxError

MAX_SOURCE_CHARS = 1_000_000
"""Longest source accepted; larger ones are refused before parsing (bounded time and memory)."""

EXCERPT_WIDTH = 120
"""Characters of the offending line shown around the column in an error excerpt."""

# Keywords are regular expressions that refuse to be followed by an identifier
# character, so that a keyword can never be the prefix of a longer name. Under
# the contextual lexer a keyword is only tried where the grammar expects one,
# which keeps every keyword usable as an ordinary name elsewhere.
_WORD_END = r"(?![A-Za-z0-9_])"

GRAMMAR = rf"""
start: _item*
_item: function_decl | composition

function_decl: FUNCTION NAME decl_params _ARROW decl_returns _SEMICOLON
composition: COMPOSITION NAME comp_params _ARROW comp_returns _LBRACE statement* _RBRACE
// Four identical name lists, so that LALR never merges their states: an error
// right after one of them then expects exactly what may follow it there.
decl_params: _LPAR (NAME (_COMMA NAME)*)? _RPAR
decl_returns: _LPAR (NAME (_COMMA NAME)*)? _RPAR
comp_params: _LPAR (NAME (_COMMA NAME)*)? _RPAR
comp_returns: _LPAR (NAME (_COMMA NAME)*)? _RPAR

statement: NAME in_list _ARROW out_list by_clause? _SEMICOLON
in_list: _LPAR (in_desc (_COMMA in_desc)*)? _RPAR
out_list: _LPAR (out_desc (_COMMA out_desc)*)? _RPAR
in_desc: NAME _EQUAL optional sharding NAME
optional: OPTIONAL?
out_desc: NAME _EQUAL NAME
by_clause: BY NAME (join NAME)*

sharding: ALL | EACH | KEYED | ANY_EACH | ANY_KEYED
join: INNER | LEFT | RIGHT | FULL | CROSS

FUNCTION: /function{_WORD_END}/
COMPOSITION: /composition{_WORD_END}/
OPTIONAL: /optional{_WORD_END}/
BY: /by{_WORD_END}/
ALL: /all{_WORD_END}/
EACH: /each{_WORD_END}/
KEYED: /keyed{_WORD_END}/
ANY_EACH: /anyEach{_WORD_END}/
ANY_KEYED: /anyKeyed{_WORD_END}/
INNER: /inner{_WORD_END}/
LEFT: /left{_WORD_END}/
RIGHT: /right{_WORD_END}/
FULL: /full{_WORD_END}/
CROSS: /cross{_WORD_END}/

NAME: /[A-Za-z_][A-Za-z0-9_]*/
_ARROW: "=>"
_EQUAL: "="
_LPAR: "("
_RPAR: ")"
_LBRACE: "{{"
_RBRACE: "}}"
_COMMA: ","
_SEMICOLON: ";"

WHITESPACE: /\s+/
COMMENT: /\/\/[^\n]*/
%ignore WHITESPACE
%ignore COMMENT
"""

_SHARDING_TERMINALS = frozenset({"ALL", "EACH", "KEYED", "ANY_EACH", "ANY_KEYED"})
_JOIN_TERMINALS = frozenset({"INNER", "LEFT", "RIGHT", "FULL", "CROSS"})
_IGNORED_TERMINALS = frozenset({"WHITESPACE", "COMMENT"})

_TERMINAL_TEXT = {
    "FUNCTION": "'function'",
    "COMPOSITION": "'composition'",
    "OPTIONAL": "'optional'",
    "BY": "'by'",
    "NAME": "a name",
    "_ARROW": "'=>'",
    "_EQUAL": "'='",
    "_LPAR": "'('",
    "_RPAR": "')'",
    "_LBRACE": "'{'",
    "_RBRACE": "'}'",
    "_COMMA": "','",
    "_SEMICOLON": "';'",
    "$END": "the end of the source",
}


def _position(token: Token) -> Position:
    return Position(token.line or 1, token.column or 1)


def _name(token: Token) -> Name:
    return Name(str(token), _position(token))


@v_args(inline=True)
class _ToAst(Transformer[Token, Module]):
    """Turns parse-tree nodes into :mod:`pappus.composition.ast` nodes while parsing.

    Positions come from the tokens themselves (every node starts with one),
    which is exact even where a rule's own metadata would be empty.
    """

    def start(self, *items: ModuleItem) -> Module:
        return Module(items)

    def decl_params(self, *tokens: Token) -> tuple[Name, ...]:
        return tuple(_name(t) for t in tokens)

    decl_returns = comp_params = comp_returns = decl_params

    def function_decl(self, keyword: Token, name: Token, params: tuple[Name, ...],
                      returns: tuple[Name, ...]) -> FunctionDecl:
        return FunctionDecl(_name(name), params, returns, _position(keyword))

    def composition(self, keyword: Token, name: Token, params: tuple[Name, ...],
                    returns: tuple[Name, ...], *statements: Application) -> CompositionDef:
        return CompositionDef(_name(name), params, returns, statements, _position(keyword))

    def statement(self, function: Token, inputs: tuple[InputDescriptor, ...],
                  outputs: tuple[OutputDescriptor, ...], join: JoinClause | None = None
                  ) -> Application:
        return Application(_name(function), inputs, outputs, join, _position(function))

    def in_list(self, *descriptors: InputDescriptor) -> tuple[InputDescriptor, ...]:
        return descriptors

    def out_list(self, *descriptors: OutputDescriptor) -> tuple[OutputDescriptor, ...]:
        return descriptors

    def in_desc(self, param: Token, optional: bool, sharding: Sharding, set_name: Token
                ) -> InputDescriptor:
        return InputDescriptor(_name(param), _name(set_name), sharding, optional,
                               _position(param))

    def optional(self, *keyword: Token) -> bool:
        return bool(keyword)

    def out_desc(self, set_name: Token, result: Token) -> OutputDescriptor:
        return OutputDescriptor(_name(set_name), _name(result), _position(set_name))

    def by_clause(self, keyword: Token, first: Token, *rest: Token | JoinKind) -> JoinClause:
        # ``rest`` alternates join kind, name, join kind, name, ...
        names = [_name(first), *(_name(t) for t in rest if isinstance(t, Token))]
        kinds = tuple(k for k in rest if isinstance(k, JoinKind))
        return JoinClause(tuple(names), kinds, _position(keyword))

    def sharding(self, keyword: Token) -> Sharding:
        return Sharding(str(keyword))

    def join(self, keyword: Token) -> JoinKind:
        return JoinKind(str(keyword))


# The transformer runs inline (LALR only): no intermediate tree is kept.
_PARSER = Lark(GRAMMAR, parser="lalr", lexer="contextual", propagate_positions=True,
               transformer=_ToAst())


def parse_module(source: str) -> Module:
    """Parse composition source text into a :class:`~pappus.composition.ast.Module`.

    Raises :class:`~pappus.errors.CompositionSyntaxError` (and nothing else)
    when the text is not a valid module.
    """
    if not isinstance(source, str):
        raise CompositionSyntaxError(
            f"composition source must be text, not {type(source).__name__}",
            line=1, column=1, excerpt="",
        )
    if len(source) > MAX_SOURCE_CHARS:
        raise CompositionSyntaxError(
            f"composition source has {len(source)} characters; the limit is "
            f"{MAX_SOURCE_CHARS}: split it into several modules",
            line=1, column=1, excerpt=excerpt(source[:EXCERPT_WIDTH], 1, 1),
        )
    try:
        module = _PARSER.parse(source)
    except UnexpectedInput as exc:
        raise _syntax_error(source, exc) from exc
    except (LarkError, RecursionError, MemoryError) as exc:
        # Not expected for any input (the grammar is flat and bounded in size),
        # but the contract is that only CompositionSyntaxError escapes.
        raise CompositionSyntaxError(
            f"composition source could not be parsed: {exc}",
            line=1, column=1, excerpt=excerpt(source, 1, 1),
        ) from exc
    if not isinstance(module, Module):  # the transformer always builds one; keeps mypy exact
        raise CompositionSyntaxError("composition source could not be parsed",
                                     line=1, column=1, excerpt=excerpt(source, 1, 1))
    return module


def excerpt(source: str, line: int, column: int) -> str:
    """The source line ``line`` and a caret under ``column`` (both 1-based), indented.

    Tabs and other unprintable characters are shown as one character each so
    the caret stays aligned; very long lines are cut to a window around the
    column.
    """
    # Lines as the lexer counts them: only "\n" ends a line.
    lines = source.split("\n")
    text = lines[line - 1].removesuffix("\r") if 0 < line <= len(lines) else ""
    start = 0
    if len(text) > EXCERPT_WIDTH:
        start = max(0, min(column - 1 - EXCERPT_WIDTH // 2, len(text) - EXCERPT_WIDTH))
        text = text[start:start + EXCERPT_WIDTH]
    shown = "".join(ch if ch.isprintable() else (" " if ch == "\t" else "?") for ch in text)
    caret = " " * max(0, column - 1 - start)
    return f"    {shown}\n    {caret}^"


def _syntax_error(source: str, exc: UnexpectedInput) -> CompositionSyntaxError:
    line, column = max(1, exc.line or 1), max(1, exc.column or 1)
    if isinstance(exc, UnexpectedToken):
        expected = _describe_expected(exc.expected)
        if exc.token.type == "$END":
            # Lark places the end marker on the last token; point just past it.
            line, column = _end_of_last_token(exc.token, source)
            message = f"expected {expected} but the source ended"
        else:
            line, column = _position(exc.token).line, _position(exc.token).column
            message = f"expected {expected} but found {_show(str(exc.token))}"
    elif isinstance(exc, UnexpectedCharacters):
        where = exc.pos_in_stream if isinstance(exc.pos_in_stream, int) else -1
        found = source[where] if 0 <= where < len(source) else ""
        allowed = set(exc.allowed or ()) - _IGNORED_TERMINALS
        message = f"unexpected character {found!r}"
        if allowed:
            message += f"; expected {_describe_expected(allowed)}"
    elif isinstance(exc, UnexpectedEOF):
        line, column = _end_of_source(source)
        wanted = {str(getattr(t, "name", t)) for t in exc.expected}
        message = f"expected {_describe_expected(wanted)} but the source ended"
    else:
        message = str(exc)
    return CompositionSyntaxError(
        f"line {line}, column {column}: {message}",
        line=line, column=column, excerpt=excerpt(source, line, column),
    )


def _describe_expected(terminals: Collection[str]) -> str:
    names = set(terminals) - _IGNORED_TERMINALS
    options: list[str] = []
    if names & _SHARDING_TERMINALS:
        options.append("a sharding mode (all, each, keyed, anyEach, anyKeyed)")
        names -= _SHARDING_TERMINALS
    if names & _JOIN_TERMINALS:
        options.append("a join (inner, left, right, full, cross)")
        names -= _JOIN_TERMINALS
    options.extend(sorted(_TERMINAL_TEXT.get(n, n) for n in names))
    if not options:
        return "something else"
    if len(options) == 1:
        return options[0]
    return ", ".join(options[:-1]) + " or " + options[-1]


def _show(text: str) -> str:
    """A found token for a message: quoted, escaped, and cut if long."""
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _end_of_last_token(token: Token, source: str) -> tuple[int, int]:
    end_line, end_column = getattr(token, "end_line", None), getattr(token, "end_column", None)
    if isinstance(end_line, int) and isinstance(end_column, int) and end_line >= 1:
        return end_line, max(1, end_column)
    return _end_of_source(source)


def _end_of_source(source: str) -> tuple[int, int]:
    lines = source.split("\n")
    return len(lines), len(lines[-1]) + 1
