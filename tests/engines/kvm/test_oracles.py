"""The kvm engine reproduces Dandelion's oracles (reference §5) with the KVM build of the SDK
examples, exactly as tests/test_process_oracles.py does for the process engine, and a
differential test runs every SDK example on both engines and compares the outputs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

import pappus
from pappus import Client, Item
from pappus.engines.base import Engine, FunctionSpec, InvocationResult, Limits
from pappus.engines.kvm import KvmEngine
from pappus.model import DataSet
from tests.server_process import ServerProcess
from tests.test_process_oracles import COMPOSITIONS, EXAMPLES, LIMITS, matrix, values


def run(
    engine: Engine,
    binary: bytes,
    inputs: list[DataSet | None],
    input_names: tuple[str, ...],
    output_names: tuple[str, ...] = ("",),
) -> InvocationResult:
    spec = FunctionSpec(
        "f", engine.name, binary, hashlib.sha256(binary).hexdigest(), input_names, output_names
    )
    artifact = engine.prepare(spec, None)
    return engine.invoke(artifact, inputs, Limits.from_timeout(5.0, **LIMITS))


def test_matmul_single(kvm_engine: KvmEngine, kvm_functions: dict[str, bytes]) -> None:
    result = run(
        kvm_engine, kvm_functions["matmul"], [DataSet("", (Item("", 0, matrix(1, 2)),))], ("",)
    )
    assert len(result.outputs) == 1 and len(result.outputs[0].items) == 1
    assert result.outputs[0].items[0].data == matrix(1, 4)
    assert result.exit_code == 0


@pytest.mark.parametrize("n", range(2, 16))
def test_matmul_size_sweep(kvm_engine: KvmEngine, kvm_functions: dict[str, bytes], n: int) -> None:
    a = list(range(n * n))
    result = run(
        kvm_engine, kvm_functions["matmul"], [DataSet("", (Item("", 7, matrix(n, *a)),))], ("",)
    )
    (item,) = result.outputs[0].items
    assert len(item.data) == (n * n + 1) * 8
    expected = [
        sum(a[i * n + k] * a[j * n + k] for k in range(n)) for i in range(n) for j in range(n)
    ]
    assert values(item.data) == [n, *expected]
    assert item.key == 7


def test_exit_codes_are_reported(kvm_engine: KvmEngine, kvm_functions: dict[str, bytes]) -> None:
    two_items = DataSet("", (Item("", 0, matrix(1, 2)), Item("", 1, matrix(1, 3))))
    assert run(kvm_engine, kvm_functions["matmul"], [two_items], ("",)).exit_code == -2
    assert run(kvm_engine, kvm_functions["matmul"], [None], ("",)).exit_code == -2
    short = DataSet("", (Item("", 0, b"\x01" * 8),))
    assert run(kvm_engine, kvm_functions["matmul"], [short], ("",)).exit_code == -3
    assert run(kvm_engine, kvm_functions["matmul"], [], ()).exit_code == -1


def test_out_of_heap_is_out_of_memory(
    kvm_engine: KvmEngine, kvm_functions: dict[str, bytes]
) -> None:
    with pytest.raises(pappus.OutOfMemory):
        spec = FunctionSpec("big", "kvm", kvm_functions["matmul"], "x", ("",), ("",))
        kvm_engine.invoke(
            kvm_engine.prepare(spec, None),
            [DataSet("", (Item("", 0, bytes(1_000_000)),))],
            Limits.from_timeout(5.0, 1 << 20, 1 << 20),
        )  # inputs fill the context


# -- differential: every SDK example on both engines -----------------------------------------

CASES: list[tuple[str, tuple[str, ...], tuple[str, ...], list[DataSet | None]]] = [
    ("matmul", ("",), ("",), [DataSet("", (Item("m", 3, matrix(3, *range(-4, 5))),))]),
    ("matmul", ("",), ("",), [DataSet("", (Item("m", 0, matrix(2, 1, 2, 3)),))]),
    (
        "matmac",
        ("A", "B", "C"),
        ("D",),
        [
            DataSet("A", (Item("", 0, matrix(2, 1, 2, 3, 4)),)),
            DataSet("B", (Item("", 0, matrix(2, 5, 6, 7, 8)),)),
            DataSet("C", (Item("", 0, matrix(2, 1, 1, 1, 1)),)),
        ],
    ),
    (
        "matmac",
        ("A", "B", "C"),
        ("D",),
        [
            None,
            DataSet("B", (Item("", 0, matrix(1, 9)),)),
            DataSet("C", (Item("", 0, matrix(1, 1)),)),
        ],
    ),
    ("matmac", ("A", "B", "C"), ("D",), [None, None, None]),
    (
        "wordcount",
        ("text",),
        ("counts",),
        [DataSet("text", (Item("a", 0, b"the cat and the hat"), Item("b", 0, b"the end\n")))],
    ),
    ("wordcount", ("text",), ("counts",), [DataSet("text", ())]),
    (
        "groupby",
        ("rows",),
        ("groups",),
        [DataSet("rows", tuple(Item(f"r{i}", i % 3, b"x" * i) for i in range(20)))],
    ),
]


@pytest.fixture(scope="module")
def process_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    from pappus.engines.process import ProcessEngine

    engine = ProcessEngine(tmp_path_factory.mktemp("runner"))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def process_functions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    from pappus import sdk

    out = tmp_path_factory.mktemp("process-examples")
    for name in EXAMPLES:
        sdk.build_function([sdk.example_source(name)], out / name)
    return {name: (out / name).read_bytes() for name in EXAMPLES}


def test_every_sdk_example_is_covered() -> None:
    assert {case[0] for case in CASES} == set(EXAMPLES)


@pytest.mark.parametrize(
    ("name", "inputs_names", "output_names", "inputs"),
    CASES,
    ids=[f"{case[0]}-{i}" for i, case in enumerate(CASES)],
)
def test_process_and_kvm_agree(
    kvm_engine: KvmEngine,
    process_engine: Engine,
    kvm_functions: dict[str, bytes],
    process_functions: dict[str, bytes],
    name: str,
    inputs_names: tuple[str, ...],
    output_names: tuple[str, ...],
    inputs: list[DataSet | None],
) -> None:
    on_kvm = run(kvm_engine, kvm_functions[name], inputs, inputs_names, output_names)
    on_process = run(process_engine, process_functions[name], inputs, inputs_names, output_names)
    assert kvm_functions[name] != process_functions[name]  # really the two builds
    assert (on_kvm.exit_code, on_kvm.outputs) == (on_process.exit_code, on_process.outputs)


# -- through the HTTP API, with engine "kvm" ---------------------------------------------------


@pytest.fixture(scope="module")
def client(
    tmp_path_factory: pytest.TempPathFactory, kvm_functions: dict[str, bytes]
) -> Iterator[Client]:
    server = ServerProcess(tmp_path_factory.mktemp("kvm-api"))
    server.start()
    try:
        with Client(server.url) as c:
            c.add_function(
                "matmul",
                kvm_functions["matmul"],
                engine="kvm",
                input_sets=["InMats"],
                output_sets=["OutMats"],
            )
            c.add_function(
                "matmac",
                kvm_functions["matmac"],
                engine="kvm",
                input_sets=["A", "B", "C"],
                output_sets=["D"],
            )
            c.add_function(
                "hostile",
                kvm_functions["hostile"],
                engine="kvm",
                input_sets=["in"],
                output_sets=["out"],
                timeout_ms=300,
            )
            c.add_compositions(COMPOSITIONS)
            yield c
    finally:
        server.stop()


def test_http_matmul_and_chain(client: Client) -> None:
    result = client.invoke("matmul", {"InMats": [Item("m", 0, matrix(2, 1, 2, 3, 4))]})
    assert values(result.set("OutMats").items[0].data) == [2, 5, 11, 11, 25]
    chained = client.invoke("chain", {"In": [Item("m", 0, matrix(2, 1, 2, 3, 4))]})
    assert values(chained.set("Out").items[0].data) == [2, 146, 330, 330, 746]


def test_http_each(client: Client) -> None:
    result = client.invoke(
        "every", {"In": [Item("a", 0, matrix(2, 1, 2, 3, 4)), Item("b", 1, matrix(2, 1, 2, 3, 4))]}
    )
    items = result.set("Out").items
    assert [(i.key, values(i.data)) for i in items] == [
        (0, [2, 5, 11, 11, 25]),
        (1, [2, 5, 11, 11, 25]),
    ]
    assert result.timings["functions"] == 2


def test_http_matmac_diamond(client: Client) -> None:
    result = client.invoke(
        "diamond",
        {
            "A": [Item("", 0, matrix(1, 7))],
            "B": [Item("", 0, matrix(1, 1, 2, 3, 5))],
            "Bt": [Item("", 0, matrix(4, 1, 2, 3, 5))],
        },
    )
    assert values(result.set("Result").items[0].data) == [
        4,
        105,
        210,
        315,
        525,
        210,
        420,
        630,
        1050,
        315,
        630,
        945,
        1575,
        525,
        1050,
        1575,
        2625,
    ]


@pytest.mark.parametrize(("static_position", "expected"), [(0, 11), (1, 11), (2, 17)])
def test_http_static_sets_override_supplied_ones(
    client: Client, kvm_functions: dict[str, bytes], static_position: int, expected: int
) -> None:
    names = ["A", "B", "C"]
    static_name = names[static_position]
    function = f"matmac_static_{static_position}"
    client.add_function(
        function,
        kvm_functions["matmac"],
        engine="kvm",
        input_sets=names,
        output_sets=["D"],
        static_sets={static_name: [Item("", 0, matrix(1, 2))]},
    )
    provided = iter([matrix(1, 3), matrix(1, 5)])
    inputs = {name: [Item("", 0, next(provided))] for name in names if name != static_name}
    assert values(client.invoke(function, inputs).set("D").items[0].data) == [1, expected]
    inputs[static_name] = [Item("", 0, matrix(1, 100))]
    assert values(client.invoke(function, inputs).set("D").items[0].data) == [1, expected]


def test_http_non_zero_exit_is_a_function_error(client: Client) -> None:
    with pytest.raises(pappus.FunctionFailed) as failure:
        client.invoke(
            "matmul", {"InMats": [Item("a", 0, matrix(1, 2)), Item("b", 1, matrix(1, 3))]}
        )
    assert failure.value.detail["exit_code"] == -2


def test_http_hostile_guests_get_typed_outcomes_and_the_worker_keeps_serving(
    client: Client,
) -> None:
    outcomes = []
    for mode in ("divide", "hlt", "cli", "out", "cr3", "lgdt", "ud2", "loop"):
        with pytest.raises(pappus.PappusError) as error:
            client.invoke("hostile", {"in": [Item("mode", 0, mode.encode())]})
        outcomes.append((error.value.type, error.value.detail.get("vector")))
        result = client.invoke("matmul", {"InMats": [Item("m", 0, matrix(2, 1, 2, 3, 4))]})
        assert values(result.set("OutMats").items[0].data) == [2, 5, 11, 11, 25]
    assert outcomes == [("crash", 0)] + [("crash", 13)] * 5 + [("crash", 6), ("timeout", None)]
    assert client.health()["status"] == "ok"


def test_process_target_binary_on_kvm_crashes_cleanly(
    tmp_path: Path, kvm_engine: KvmEngine
) -> None:
    """A function built for ``process`` makes a system call at start-up: a crash, not a hang."""
    from pappus import sdk

    sdk.build_function([sdk.example_source("matmul")], tmp_path / "matmul")
    with pytest.raises(pappus.SandboxCrash):
        run(
            kvm_engine,
            (tmp_path / "matmul").read_bytes(),
            [DataSet("", (Item("", 0, matrix(1, 2)),))],
            ("",),
        )
