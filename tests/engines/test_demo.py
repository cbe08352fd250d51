"""The demo functions (our own WAT) through the wasm engine, and the demo compositions."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from pappus.composition import Signature, build_compositions, parse_any_sharding_mode
from pappus.composition import run_composition as run
from pappus.demo import DEMO_COMPOSITION, DemoFunction, load_demo
from pappus.engines.base import Artifact
from pappus.engines.wasm import WasmEngine
from pappus.model import DataSet, Item
from tests.engines.support import items, limits, spec


@pytest.fixture(scope="module")
def demo() -> dict[str, DemoFunction]:
    return {function.name: function for function in load_demo()}


def prepare(engine: WasmEngine, function: DemoFunction) -> Artifact:
    return engine.prepare(spec(function.name, function.binary, function.input_sets,
                               function.output_sets), None)


def test_the_demo_functions(demo: dict[str, DemoFunction]) -> None:
    assert sorted(demo) == ["reverse", "upper", "wordcount"]
    assert all(f.engine == "wasm" and f.binary[:4] == b"\0asm" for f in demo.values())
    assert (demo["wordcount"].input_sets, demo["wordcount"].output_sets) == (("text",),
                                                                            ("counts",))


def test_upper_and_reverse(engine: WasmEngine, demo: dict[str, DemoFunction]) -> None:
    text = DataSet("in", (Item("text", 0, b"Hello, pappus!"),))
    upper = engine.invoke(prepare(engine, demo["upper"]), [text], limits())
    assert items(upper, "out") == [("text", 0, b"HELLO, PAPPUS!")]
    backwards = engine.invoke(prepare(engine, demo["reverse"]), [text], limits())
    assert items(backwards, "out") == [("text", 0, b"!suppap ,olleH")]
    missing = engine.invoke(prepare(engine, demo["upper"]), [None], limits())
    assert missing.exit_code == 1  # no /in/text
    assert items(missing, "out") == []
    # stdio is not an output set of the demo functions, yet the reason travels with the exit
    assert b'no item named "text"' in missing.stderr


def test_upper_takes_one_mib_and_refuses_more_aloud(engine: WasmEngine,
                                                    demo: dict[str, DemoFunction]) -> None:
    upper = prepare(engine, demo["upper"])
    largest = engine.invoke(upper, [DataSet("in", (Item("text", 0, b"a" * (1 << 20)),))],
                            limits())
    assert largest.exit_code == 0 and largest.stderr == b""
    assert items(largest, "out") == [("text", 0, b"A" * (1 << 20))]
    too_large = engine.invoke(upper, [DataSet("in", (Item("text", 0, b"a" * ((1 << 20) + 1)),))],
                              limits())
    assert too_large.exit_code == 3
    assert items(too_large, "out") == []  # never a silently truncated item
    assert b"larger than its 1 MiB limit" in too_large.stderr


def test_wordcount_keeps_names_and_keys(engine: WasmEngine,
                                        demo: dict[str, DemoFunction]) -> None:
    text = DataSet("text", (
        Item("a", 3, b"hello  world\n\tfoo "),
        Item("dir/b c", 7, b""),
        Item("big", 2**32 - 1, b"word " * 30_000),  # several reads
        Item("", 9, b"no name: not a file, not counted"),
    ))
    result = engine.invoke(prepare(engine, demo["wordcount"]), [text], limits())
    assert result.exit_code == 0
    assert items(result, "counts") == [
        ("a", 3, b"3\n"), ("dir/b c", 7, b"0\n"), ("big", 2**32 - 1, b"30000\n")]


@pytest.mark.parametrize(("text", "exit_code", "reason"), [
    (DataSet("text", (Item("/".join(["n" * 200] * 25), 0, b"x"),)), 5, b"4000-byte limit"),
    (DataSet("text", tuple(Item(f"{i:0200}", i, b"x") for i in range(400))), 4,
     b"64 KiB listing limit"),
])
def test_wordcount_says_why_it_fails(engine: WasmEngine, demo: dict[str, DemoFunction],
                                     text: DataSet | None, exit_code: int,
                                     reason: bytes) -> None:
    result = engine.invoke(prepare(engine, demo["wordcount"]), [text], limits())
    assert result.exit_code == exit_code
    assert reason in result.stderr


def test_the_demo_compositions(engine: WasmEngine, demo: dict[str, DemoFunction]) -> None:
    artifacts = {name: prepare(engine, function) for name, function in demo.items()}

    def lookup(name: str) -> Signature | None:
        function = demo.get(name)
        return Signature(name, function.input_sets, function.output_sets) if function else None

    graphs = {graph.name: graph for graph in build_compositions(DEMO_COMPOSITION, lookup)}
    assert sorted(graphs) == ["loud_word_counts", "shout_backwards"]

    async def call(name: str, inputs: list[DataSet | None]) -> Sequence[DataSet | None]:
        result = await asyncio.to_thread(engine.invoke, artifacts[name], inputs, limits())
        return result.outputs

    text = DataSet("text", (Item("text", 0, b"one two"), Item("text", 1, b"three")))

    async def both() -> tuple[list[DataSet | None], list[DataSet | None]]:
        sharding = parse_any_sharding_mode("auto:2")
        return (await run(graphs["shout_backwards"], [text], call, sharding=sharding,
                          local_cores=2),
                await run(graphs["loud_word_counts"], [text], call, sharding=sharding,
                          local_cores=2))

    backwards, counts = asyncio.run(both())
    assert backwards[0] is not None
    assert [i.data for i in backwards[0].items] == [b"OWT ENO", b"EERHT"]
    assert counts[0] is not None
    assert sorted(i.data for i in counts[0].items) == [b"1\n", b"2\n"]
