"""The dataflow executor with fake functions: skipping, optional, sharding, ordering, errors."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Sequence

import pytest

from pappus.composition import (
    AnySharding,
    AnyShardingMode,
    CompositionGraph,
    Signature,
    build_compositions,
    parse_any_sharding_mode,
    run_composition,
)
from pappus.errors import FunctionFailed, PappusError, SandboxCrash
from pappus.model import DataSet, Item

MAX = parse_any_sharding_mode("max")

SIGNATURES = {s.name: s for s in (
    Signature("basic", ("A", "B"), ("X", "Y")),
    Signature("matmul", ("InMats",), ("OutMats",)),
    Signature("concat", ("In",), ("Out",)),
    Signature("pair", ("L", "R"), ("Out",)),
    Signature("backwards", ("In",), ("Out",)),
    Signature("const", (), ("Out",)),
    Signature("fail", ("In",), ("Out",)),
    Signature("hang", ("In",), ("Out",)),
)}
DECLARATIONS = "".join(
    f"function {s.name} ({', '.join(s.input_sets)}) => ({', '.join(s.output_sets)});\n"
    for s in SIGNATURES.values())


def matrix(n: int, values: Sequence[int]) -> bytes:
    """Dandelion's matmul format: the dimension, then the row-major matrix, as u64s."""
    return struct.pack(f"<{1 + n * n}Q", n, *values)


def unpack(data: bytes) -> list[int]:
    n = struct.unpack_from("<Q", data)[0]
    return list(struct.unpack_from(f"<{n * n}Q", data, 8))


def matmul(data: bytes) -> bytes:
    n = struct.unpack_from("<Q", data)[0]
    m = unpack(data)
    return matrix(n, [sum(m[r * n + k] * m[k * n + c] for k in range(n))
                      for r in range(n) for c in range(n)])


class Functions:
    """Fake functions behind a `call`; records every call and lets tests gate them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[DataSet | None]]] = []
        self.cancelled = 0
        self.started = asyncio.Event()
        self.gate: Callable[[], None] | None = None

    async def __call__(self, name: str, inputs: list[DataSet | None]
                       ) -> Sequence[DataSet | None]:
        self.calls.append((name, inputs))
        if self.gate is not None:
            self.gate()
        first = inputs[0] if inputs else None
        if name == "basic":
            marker = DataSet("Y", (Item("absent", 0, b"B was absent"),))
            return [DataSet("X", first.items) if first else None, inputs[1] or marker]
        if name == "matmul":
            assert first is not None
            return [DataSet("OutMats", tuple(Item(i.name, i.key, matmul(i.data))
                                             for i in first.items))]
        if name == "concat":
            data = b"+".join(i.data for i in first.items) if first else b"-"
            return [DataSet("Out", (Item("joined", first.items[0].key if first else 0, data),))]
        if name == "pair":
            left = b",".join(i.data for i in first.items) if first else b"_"
            right = b",".join(i.data for i in inputs[1].items) if inputs[1] else b"_"
            key = (first or inputs[1] or DataSet("")).items[0].key
            return [DataSet("Out", (Item("pair", key, left + b"|" + right),))]
        if name == "backwards":
            assert first is not None
            # Keys descending, and an empty extra set slot the executor must ignore.
            return [DataSet("Out", tuple(Item(f"{i.name}'", 100 - i.key, i.data)
                                         for i in first.items)), DataSet("extra")]
        if name == "const":
            return [DataSet("Out", (Item("c", 7, b"constant"),))]
        if name == "fail":
            await asyncio.sleep(0)
            raise SandboxCrash("the function trapped", trap="unreachable")
        if name == "hang":
            self.started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        raise AssertionError(f"unexpected function {name}")

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


def graph(body: str, name: str = "C", params: str = "a", returns: str = "r"
          ) -> CompositionGraph:
    source = f"{DECLARATIONS}composition {name} ({params}) => ({returns}) {{\n{body}\n}}"
    (built,) = build_compositions(source, SIGNATURES.get)
    return built


async def run(built: CompositionGraph, inputs: Sequence[DataSet | None],
              functions: Functions | None = None, sharding: AnySharding = MAX,
              local_cores: int = 2) -> list[DataSet | None]:
    return await run_composition(built, inputs, functions or Functions(), sharding=sharding,
                                 local_cores=local_cores)


def items(name: str, *keys: int) -> DataSet:
    return DataSet(name, tuple(Item(f"{name}{i}", k, f"{name}{i}".encode())
                               for i, k in enumerate(keys)))


def payloads(data: DataSet | None) -> list[bytes] | None:
    return None if data is None else [i.data for i in data.items]


# -- skipping and optional (§9's four optional cases, with `basic`) ------------------------------


async def test_absent_input_skips_the_statement_and_everything_downstream() -> None:
    functions = Functions()
    built = graph("basic (A = all a) => (m = X);\nconcat (In = all m) => (r = Out);")
    assert await run(built, [None], functions) == [None]
    assert functions.calls == []
    assert await run(built, [DataSet("a")], functions) == [None]  # empty counts as absent
    assert functions.calls == []


async def test_optional_case_1_non_optional_absent_input() -> None:
    built = graph("basic (A = all a, B = all b) => (r = Y);", params="a, b")
    assert await run(built, [items("a", 0), None]) == [None]


async def test_optional_case_2_optional_absent_input() -> None:
    built = graph("basic (A = all a, B = optional all b) => (r = Y);", params="a, b")
    (result,) = await run(built, [items("a", 0), None])
    assert payloads(result) == [b"B was absent"]


async def test_optional_case_3_non_optional_absent_intermediate() -> None:
    built = graph("basic (A = optional all b, B = all a) => (m = X);\n"
                  "basic (A = all a, B = all m) => (r = Y);", params="a, b")
    functions = Functions()
    assert await run(built, [items("a", 0), None], functions) == [None]
    assert functions.names() == ["basic"]


async def test_optional_case_4_optional_absent_intermediate() -> None:
    built = graph("basic (A = optional all b, B = all a) => (m = X);\n"
                  "basic (A = all a, B = optional all m) => (r = Y);", params="a, b")
    functions = Functions()
    (result,) = await run(built, [items("a", 0), None], functions)
    assert payloads(result) == [b"B was absent"]
    assert functions.names() == ["basic", "basic"]


async def test_a_statement_without_inputs_runs_once() -> None:
    functions = Functions()
    built = graph("const () => (r = Out);", params="")
    (result,) = await run(built, [], functions)
    assert payloads(result) == [b"constant"]
    assert functions.calls == [("const", [])]


# -- sharding through the executor ----------------------------------------------------------------


async def test_each_then_all_through_matmul() -> None:
    functions = Functions()
    built = graph("matmul (InMats = each a) => (m = OutMats);\n"
                  "concat (In = all m) => (r = Out);")
    mats = DataSet("a", (Item("x", 1, matrix(2, [1, 2, 3, 4])), Item("y", 0, matrix(1, [3]))))
    (result,) = await run(built, [mats], functions)
    assert functions.names() == ["matmul", "matmul", "concat"]
    assert [len(inputs[0].items) for _, inputs in functions.calls[:2] if inputs[0]] == [1, 1]
    # concat saw the matmul outputs sorted by key: y (key 0) before x (key 1).
    (concat_input,) = functions.calls[2][1]
    assert concat_input is not None and [i.name for i in concat_input.items] == ["y", "x"]
    assert payloads(result) == [matrix(1, [9]) + b"+" + matrix(2, [7, 10, 15, 22])]


async def test_keyed_groups_through_two_stages() -> None:
    functions = Functions()
    built = graph("concat (In = keyed a) => (m = Out);\nconcat (In = keyed m) => (r = Out);")
    (result,) = await run(built, [items("a", 2, 1, 2, 1)], functions)
    first_stage = [[i.name for i in inputs[0].items] for _, inputs in functions.calls[:2]
                   if inputs[0]]
    assert first_stage == [["a1", "a3"], ["a0", "a2"]]
    assert result is not None
    assert [(i.key, i.data) for i in result.items] == [(1, b"a1+a3"), (2, b"a0+a2")]


async def test_outputs_are_stably_sorted_by_key() -> None:
    built = graph("backwards (In = each a) => (r = Out);")
    (result,) = await run(built, [items("a", 1, 2, 1)])
    assert result is not None
    assert [(i.name, i.key) for i in result.items] == [("a1'", 98), ("a0'", 99), ("a2'", 99)]
    assert result.name == "Out"


async def test_join_through_the_executor() -> None:
    functions = Functions()
    built = graph("pair (L = keyed a, R = keyed b) => (r = Out) by L full R;", params="a, b")
    (result,) = await run(built, [items("a", 0, 1), items("b", 1, 2)], functions)
    assert payloads(result) == [b"a0|_", b"a1|b0", b"_|b1"]


async def test_any_each_merges_to_the_fixed_target() -> None:
    functions = Functions()
    built = graph("concat (In = anyEach a) => (r = Out);")
    (result,) = await run(built, [items("a", 0, 1, 2, 3)], functions,
                          sharding=AnySharding(AnyShardingMode.FIXED, 2))
    assert payloads(result) == [b"a0+a1", b"a2+a3"]
    (result,) = await run(built, [items("a", 0, 1, 2, 3)], functions,
                          sharding=parse_any_sharding_mode("auto:2"), local_cores=4)
    assert payloads(result) == [b"a0", b"a1", b"a2", b"a3"]


async def test_shards_run_concurrently() -> None:
    functions = Functions()
    arrived = 0
    everyone = asyncio.Event()

    def gate() -> None:
        nonlocal arrived
        arrived += 1
        if arrived == 3:
            everyone.set()

    functions.gate = gate

    async def call(name: str, inputs: list[DataSet | None]) -> Sequence[DataSet | None]:
        result = await functions(name, inputs)
        # Every shard waits until all three have started: only possible concurrently.
        await asyncio.wait_for(everyone.wait(), timeout=5)
        return result

    built = graph("concat (In = each a) => (r = Out);")
    (result,) = await run_composition(built, [items("a", 0, 1, 2)], call, sharding=MAX,
                                      local_cores=1)
    assert payloads(result) == [b"a0", b"a1", b"a2"]


# -- sets, writers and odd graphs -----------------------------------------------------------------


async def test_inputs_short_long_and_passed_through() -> None:
    built = graph("concat (In = all a) => (r = Out);", params="a, b", returns="r, b")
    result = await run(built, [items("a", 0)])
    assert [payloads(s) for s in result] == [[b"a0"], None]
    result = await run(built, [items("a", 0), items("b", 5), items("extra", 1)])
    assert [payloads(s) for s in result] == [[b"a0"], [b"b0"]]


async def test_a_skipped_writer_never_erases_a_composition_output() -> None:
    built = graph("concat (In = all a) => (r = Out);\nconcat (In = all b) => (r = Out);",
                  params="a, b")
    cases: list[tuple[list[DataSet | None], list[bytes] | None]] = [
        ([items("a", 0), None], [b"a0"]), ([None, items("b", 0)], [b"b0"]),
        ([items("a", 0), items("b", 0)], [b"b0"]), ([None, None], None)]
    for inputs, expected in cases:
        (result,) = await run(built, inputs)
        assert payloads(result) == expected


async def test_readers_of_a_shared_output_wait_for_every_writer() -> None:
    functions = Functions()
    built = graph("concat (In = all a) => (o = Out);\nconcat (In = all b) => (o = Out);\n"
                  "concat (In = all o) => (r = Out);", params="a, b", returns="r, o")
    result = await run(built, [items("a", 0), items("b", 0)], functions)
    assert [payloads(s) for s in result] == [[b"b0"], [b"b0"]]
    assert functions.names() == ["concat"] * 3


async def test_cycles_never_run_and_the_run_still_ends() -> None:
    functions = Functions()
    built = graph("concat (In = all y) => (x = Out);\nconcat (In = all x) => (y = Out);\n"
                  "concat (In = all a) => (r = Out);")
    (result,) = await run(built, [items("a", 0)], functions)
    assert payloads(result) == [b"a0"]
    assert functions.names() == ["concat"]


async def test_an_output_nothing_produces_stays_absent() -> None:
    built = graph("concat (In = all a) => ();", returns="r")
    assert await run(built, [items("a", 0)]) == [None]


# -- errors ---------------------------------------------------------------------------------------


async def test_a_failing_shard_cancels_the_others_and_raises_itself() -> None:
    functions = Functions()
    built = graph("hang (In = all a) => (h = Out);\nfail (In = each a) => (r = Out);",
                  returns="r, h")
    with pytest.raises(SandboxCrash) as info:
        await run(built, [items("a", 0, 1)], functions)
    assert info.value.detail == {"trap": "unreachable"}
    assert not isinstance(info.value, BaseExceptionGroup)
    assert functions.cancelled == 1


async def test_the_first_error_wins_and_keeps_its_cause() -> None:
    async def call(name: str, inputs: list[DataSet | None]) -> Sequence[DataSet | None]:
        key = inputs[0].items[0].key if inputs[0] else 0
        for _ in range(key * 3):
            await asyncio.sleep(0)  # later keys fail later
        try:
            raise OSError(f"pipe {key}")
        except OSError as exc:
            raise FunctionFailed(f"shard {key} failed", exit_code=key) from exc

    built = graph("concat (In = each a) => (r = Out);")
    with pytest.raises(FunctionFailed) as info:
        await run_composition(built, [items("a", 0, 1, 2)], call, sharding=MAX, local_cores=2)
    assert info.value.detail == {"exit_code": 0}
    assert isinstance(info.value.__cause__, OSError)


async def test_errors_other_than_pappus_errors_are_not_wrapped() -> None:
    async def call(name: str, inputs: list[DataSet | None]) -> Sequence[DataSet | None]:
        raise KeyError(name)

    built = graph("concat (In = all a) => (r = Out);")
    with pytest.raises(KeyError):
        await run_composition(built, [items("a", 0)], call, sharding=MAX, local_cores=2)


async def test_a_callee_cancelling_itself_is_an_error_not_a_silent_gap() -> None:
    async def call(name: str, inputs: list[DataSet | None]) -> Sequence[DataSet | None]:
        raise asyncio.CancelledError

    built = graph("concat (In = all a) => (r = Out);")
    with pytest.raises(PappusError, match="cancelled by the callee") as info:
        await run_composition(built, [items("a", 0)], call, sharding=MAX, local_cores=2)
    assert info.value.detail == {"function": "concat"}


async def test_cancelling_the_run_cancels_every_call() -> None:
    functions = Functions()
    built = graph("hang (In = each a) => (r = Out);")
    task = asyncio.create_task(run(built, [items("a", 0, 1)], functions))
    await asyncio.wait_for(functions.started.wait(), timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert functions.cancelled == 2


# -- nesting --------------------------------------------------------------------------------------


async def test_nested_composition_through_a_recursive_call() -> None:
    functions = Functions()
    (inner,) = build_compositions(
        DECLARATIONS + "composition square_each (In) => (Out) {\n"
        "  matmul (InMats = each In) => (Out = OutMats);\n}", SIGNATURES.get)
    registry: dict[str, Signature] = {**SIGNATURES, "square_each": inner.signature}
    (outer,) = build_compositions(
        DECLARATIONS + "function square_each (In) => (Out);\n"
        "composition fourth (a) => (r) {\n"
        "  square_each (In = all a) => (s = Out);\n"
        "  square_each (In = all s) => (r = Out);\n}", registry.get)
    compositions = {"square_each": inner}

    async def call(name: str, inputs: list[DataSet | None]) -> Sequence[DataSet | None]:
        if name in compositions:
            return await run_composition(compositions[name], inputs, call, sharding=MAX,
                                         local_cores=2)
        return await functions(name, inputs)

    mats = DataSet("a", (Item("m", 0, matrix(2, [1, 1, 0, 1])), Item("n", 1, matrix(1, [2]))))
    (result,) = await run_composition(outer, [mats], call, sharding=MAX, local_cores=2)
    assert result is not None
    assert [unpack(i.data) for i in result.items] == [[1, 4, 0, 1], [16]]
    assert functions.names() == ["matmul"] * 4
