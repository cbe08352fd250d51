"""Hostile sources: nothing but the two typed errors ever leaves the parser and the builder.

More than 10,000 cases in total: a deterministic mutation loop over every
Appendix A source (character insertions, deletions, swaps, truncations, raw
bytes decoded with surrogates, NULs), random text, token soup, and
grammar-shaped modules whose graphs are then also executed.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pappus.composition import (
    CompositionGraph,
    Signature,
    build_compositions,
    parse_any_sharding_mode,
    parse_module,
    run_composition,
)
from pappus.errors import CompositionInvalid, CompositionSyntaxError
from pappus.model import DataSet, Item
from tests.composition import sources

SEEDS = [sources.A1_EXAMPLE, sources.A2_OLD_SYNTAX, sources.A3_README_TYPO,
         sources.A3_README_TYPO.replace("compositon", "composition"), sources.A6_HTTP_REGISTRY,
         sources.A7_CHAIN, sources.A7_REUSE_OUTPUT, *sources.A4_ALL.values()]
SIGNATURES = {s.name: s for s in (
    Signature("Access", ("AccessToken",), ("HTTPRequest",)),
    Signature("FanOut", ("HTTPResponse", "Topic"), ("HTTPRequests",)),
    Signature("Render", ("HTTPResponses",), ("HTMLOutput",)),
    Signature("HTTP", ("Request",), ("Response",)),
    Signature("MakePNGGrayscaleS3", ("S3GetResponse",), ("S3PutRequest",)),
    Signature("FunA", ("A", "B"), ("C",)),
    Signature("FunB", ("A", "B", "C"), ("D",)),
    Signature("FunC", ("D",), ("E",)),
    Signature("classify", ("pics",), ("tagged_pics", "archives")),
    Signature("compress", ("pics", "archives"), ("put_requests",)),
    Signature("matmul_1_1", ("InMats",), ("OutMats",)),
    Signature("matmul", ("matrix_in",), ("matrix_out",)),
    Signature("matmac", ("mul_left", "add_left", "add_right"), ("matrix_out",)),
)}
KINDS = {"InvalidFunctionDeclaration", "DuplicateIdentifier", "DuplicateSetName",
         "UnknownFunction", "InvalidFunctionApplication", "UndefinedDataSet",
         "InvalidSecondJoin", "InvalidJoinSharding"}
ALPHABET = "(){}=>;,/ \n\t\r_0189AaXyz" + "".join(
    ["all", "each", "keyed", "anyEach", "anyKeyed", "optional", "by", "inner", "left", "right",
     "full", "cross", "function", "composition"])
MUTATIONS = 8_000


def check_error(error: CompositionSyntaxError | CompositionInvalid) -> None:
    """A typed error is well formed: located, with a caret excerpt and a message."""
    assert isinstance(error.message, str) and error.message
    assert error.detail["line"] >= 1 and error.detail["column"] >= 1
    assert isinstance(error.detail["excerpt"], str)
    if isinstance(error, CompositionInvalid):
        assert error.detail["kind"] in KINDS
        assert "^" in error.detail["excerpt"]


def build(source: str, signatures: dict[str, Signature] = SIGNATURES
          ) -> list[CompositionGraph] | None:
    try:
        return build_compositions(source, signatures.get)
    except (CompositionSyntaxError, CompositionInvalid) as error:
        check_error(error)
        return None


def mutate(rng: random.Random, text: str) -> str:
    chars = list(text)
    for _ in range(rng.randint(1, 5)):
        operation = rng.randrange(7)
        position = rng.randrange(len(chars) + 1)
        if operation == 0:
            chars.insert(position, rng.choice(ALPHABET))
        elif operation == 1 and chars:
            del chars[min(position, len(chars) - 1)]
        elif operation == 2 and len(chars) > 1:
            other = rng.randrange(len(chars))
            position = min(position, len(chars) - 1)
            chars[position], chars[other] = chars[other], chars[position]
        elif operation == 3:
            chars = chars[:position]
        elif operation == 4:
            raw = bytes(rng.randrange(256) for _ in range(rng.randint(1, 6)))
            chars[position:position] = raw.decode("utf-8", errors="surrogateescape")
        elif operation == 5:
            chars.insert(position, chr(rng.choice([0, 0xD800, 0xFEFF, 0x2028, 0x10FFFF,
                                                   rng.randrange(0x110000)])))
        else:  # duplicate a slice, which tends to produce repeated names and clauses
            start = rng.randrange(len(chars) + 1)
            chars[position:position] = chars[start:start + rng.randint(1, 40)]
    return "".join(chars)


def test_mutated_appendix_sources_only_raise_typed_errors() -> None:
    rng = random.Random(20261123)
    built = 0
    for index in range(MUTATIONS):
        if build(mutate(rng, SEEDS[index % len(SEEDS)])):
            built += 1
    assert built > 0  # some mutations stay valid, so the builder's success path is fuzzed too


def test_every_unmutated_seed_parses_or_fails_typed() -> None:
    outcomes = [build(seed) is not None for seed in SEEDS]
    assert outcomes.count(True) >= 5


@settings(max_examples=1500, deadline=None)
@given(st.text(max_size=300))
def test_random_text_only_raises_syntax_errors(source: str) -> None:
    try:
        parse_module(source)
    except CompositionSyntaxError as error:
        check_error(error)


TOKENS = ["function", "composition", "FunA", "FunB", "A", "B", "C", "D", "x", "y", "(", ")",
          "{", "}", "=>", "=", ";", ",", "all", "keyed", "each", "anyKeyed", "anyEach",
          "optional", "by", "inner", "left", "right", "full", "cross", "//", "\n"]


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=60))
def test_token_soup_only_raises_typed_errors(tokens: list[str]) -> None:
    build(" ".join(tokens))


# -- grammar-shaped modules, which mostly reach the builder, then the executor ---------------------

FUNCTIONS = {"FunA": (("A", "B"), ("C",)), "FunB": (("A", "B", "C"), ("D",)),
             "FunC": (("D",), ("E",))}
SHARDINGS = ["all", "each", "keyed", "anyEach", "anyKeyed"]
JOINS = ["inner", "left", "right", "full", "cross"]


def usually(draw: st.DrawFn, right: list[str], wrong: list[str]) -> str:
    """Mostly a name that fits, sometimes one that does not (to reach every error)."""
    return draw(st.sampled_from(right)) if draw(st.integers(0, 9)) else draw(
        st.sampled_from(wrong))


@st.composite
def statement(draw: st.DrawFn, sets: list[str], returns: list[str], counter: list[int]) -> str:
    function = usually(draw, list(FUNCTIONS), ["Nope", "Comp"])
    params, results = FUNCTIONS.get(function, (("A",), ("C",)))
    bound = draw(st.lists(st.sampled_from(params), unique=True, max_size=len(params)))
    if not draw(st.integers(0, 19)):
        bound.append(draw(st.sampled_from(["A", "Z"])))
    arguments = []
    for param in bound:
        optional = "optional " if draw(st.integers(0, 3)) == 0 else ""
        sharding = draw(st.sampled_from(SHARDINGS))
        arguments.append(f"{param} = {optional}{sharding} {usually(draw, sets, ['undefined'])}")
    outputs = []
    for result in draw(st.lists(st.sampled_from(results), unique=True, max_size=len(results))):
        counter[0] += 1
        target = draw(st.sampled_from([*returns, f"s{counter[0]}"])) if returns else \
            f"s{counter[0]}"
        outputs.append(f"{target} = {usually(draw, [result], ['Q'])}")
    text = f"{function} ({', '.join(arguments)}) => ({', '.join(outputs)})"
    by = draw(st.lists(st.sampled_from(bound or ["Z"]), max_size=3)) if draw(st.booleans()) else []
    if by:
        kinds = draw(st.lists(st.sampled_from(JOINS), min_size=len(by) - 1,
                              max_size=len(by) - 1))
        text += " by " + " ".join(f"{k} {n}" for k, n in zip(["", *kinds], by, strict=True))
    return text + ";"


@st.composite
def modules(draw: st.DrawFn) -> str:
    lines = [f"function {name} ({', '.join(params)}) => ({', '.join(results)});"
             for name, (params, results) in FUNCTIONS.items() if draw(st.integers(0, 9))]
    if not draw(st.integers(0, 9)):
        lines.append(draw(st.sampled_from(["function FunA (B, A) => (C);",
                                           "function Nope () => ();"])))
    counter = [0]
    for number in range(draw(st.integers(1, 2))):
        name = usually(draw, [f"Comp{number}"], ["Comp0", "FunA"])
        params = draw(st.lists(st.sampled_from(["a", "b", "c"]), unique=True, max_size=3))
        returns = draw(st.lists(st.sampled_from(["r", "q", "a"]), unique=True, max_size=2))
        sets = [*params, *returns] or ["a"]
        body = []
        for _ in range(draw(st.integers(0, 4))):
            body.append(draw(statement(sets, returns, counter)))
            sets = [*sets, *(f"s{i}" for i in range(1, counter[0] + 1))]
        lines.append(f"composition {name} ({', '.join(params)}) => ({', '.join(returns)}) {{")
        lines.extend(f"  {line}" for line in body)
        lines.append("}")
    return "\n".join(lines)


async def fake_call(name: str, inputs: list[DataSet | None]) -> Sequence[DataSet | None]:
    items = tuple(item for data in inputs if data is not None for item in data.items)
    return [DataSet(name, items[:3])]


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(modules(), st.sampled_from(["max", "fixed:3", "auto:2"]))
def test_grammar_shaped_modules_build_or_fail_typed_and_run(source: str, mode: str) -> None:
    graphs = build(source)
    for graph in graphs or ():
        for statement in graph.statements:
            signature = SIGNATURES[statement.function]
            assert len(statement.inputs) == len(signature.input_sets)
            assert len(statement.outputs) == len(signature.output_sets)
            assert sorted(statement.join.order) == list(range(len(signature.input_sets)))
            assert all(b.set_id < len(graph.set_names) for b in statement.inputs if b)
        inputs = [DataSet(n, (Item("i", key, b"x"), Item("j", 1, b"y")))
                  for key, n in enumerate(graph.input_sets)]
        outputs = asyncio.run(run_composition(graph, inputs, fake_call,
                                              sharding=parse_any_sharding_mode(mode),
                                              local_cores=2))
        assert len(outputs) == len(graph.output_sets)
