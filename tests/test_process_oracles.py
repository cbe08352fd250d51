"""The process engine reproduces Dandelion's oracles (reference §5) with our SDK's examples.

Engine level: matmul single and the n = 2..15 sweep, exit codes, keys,
wordcount and groupby. Through the HTTP API on a real worker: chain, `each`,
the matmac diamond and static input sets overriding supplied ones.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import platform
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import pappus
from pappus import Client, Item
from pappus.engines.base import Engine, FunctionSpec, InvocationResult, Limits
from pappus.model import DataSet
from pappus.toolchain import ToolchainError
from tests.server_process import ServerProcess

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or platform.machine() != "x86_64",
    reason="the process engine runs x86-64 ELF functions on Linux only")

EXAMPLES = ("matmul", "matmac", "wordcount", "groupby")
LIMITS = dict(memory_bytes=128 << 20, max_output_bytes=1 << 20)


def matrix(rows: int, *values: int) -> bytes:
    return struct.pack(f"<{len(values) + 1}q", rows, *values)


def values(data: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(data) // 8}q", data))


@pytest.fixture(scope="module")
def examples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    from pappus import sdk

    out = tmp_path_factory.mktemp("sdk-examples")
    built: dict[str, bytes] = {}
    for name in EXAMPLES:
        try:
            sdk.build_function([sdk.example_source(name)], out / name)
        except ToolchainError as exc:
            pytest.skip(f"no C toolchain for SDK functions: {exc}")
        built[name] = (out / name).read_bytes()
    return built


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    from pappus.engines.process import ProcessEngine

    process_engine = ProcessEngine(tmp_path_factory.mktemp("runner"))
    yield process_engine
    process_engine.close()


def run(engine: Engine, binary: bytes, inputs: list[DataSet | None],
        input_names: tuple[str, ...], output_names: tuple[str, ...] = ("",)
        ) -> InvocationResult:
    spec = FunctionSpec("f", "process", binary, hashlib.sha256(binary).hexdigest(), input_names,
                        output_names)
    artifact = engine.prepare(spec, None)
    return engine.invoke(artifact, inputs, Limits.from_timeout(5.0, **LIMITS))


def test_matmul_single(engine: Engine, examples: dict[str, bytes]) -> None:
    result = run(engine, examples["matmul"], [DataSet("", (Item("", 0, matrix(1, 2)),))], ("",))
    assert len(result.outputs) == 1 and len(result.outputs[0].items) == 1
    assert result.outputs[0].items[0].data == matrix(1, 4)
    assert result.exit_code == 0


@pytest.mark.parametrize("n", range(2, 16))
def test_matmul_size_sweep(engine: Engine, examples: dict[str, bytes],
                           n: int) -> None:
    a = list(range(n * n))
    result = run(engine, examples["matmul"], [DataSet("", (Item("", 7, matrix(n, *a)),))], ("",))
    (item,) = result.outputs[0].items
    assert len(item.data) == (n * n + 1) * 8
    expected = [sum(a[i * n + k] * a[j * n + k] for k in range(n))
                for i in range(n) for j in range(n)]
    assert values(item.data) == [n, *expected]
    assert item.key == 7  # the input item's key is kept


def test_exit_codes_are_reported(engine: Engine,
                                 examples: dict[str, bytes]) -> None:
    two_items = DataSet("", (Item("", 0, matrix(1, 2)), Item("", 1, matrix(1, 3))))
    assert run(engine, examples["matmul"], [two_items], ("",)).exit_code == -2
    assert run(engine, examples["matmul"], [None], ("",)).exit_code == -2
    short = DataSet("", (Item("", 0, b"\x01" * 8),))
    assert run(engine, examples["matmul"], [short], ("",)).exit_code == -3
    assert run(engine, examples["matmul"], [], ()).exit_code == -1


def test_wordcount_and_groupby(engine: Engine,
                               examples: dict[str, bytes]) -> None:
    text = DataSet("text", (Item("a", 0, b"the cat and the hat"), Item("b", 0, b"the end\n")))
    counts = run(engine, examples["wordcount"], [text], ("text",), ("counts",))
    assert [(i.name, i.data) for i in counts.outputs[0].items] == [
        ("the", b"3"), ("cat", b"1"), ("and", b"1"), ("hat", b"1"), ("end", b"1")]
    rows = DataSet("rows", (Item("x", 2, b"x2"), Item("y", 1, b"y1"), Item("z", 2, b"z2")))
    groups = run(engine, examples["groupby"], [rows], ("rows",), ("groups",))
    assert [(i.name, i.key, i.data) for i in groups.outputs[0].items] == [
        ("y", 1, b"y1"), ("x", 2, b"x2\nz2")]


# -- through the HTTP API ------------------------------------------------------------------

COMPOSITIONS = """
function matmul (InMats) => (OutMats);
function matmac (A, B, C) => (D);

composition chain (In) => (Out) {
    matmul (InMats = all In) => (Mid = OutMats);
    matmul (InMats = all Mid) => (Out = OutMats);
}

composition every (In) => (Out) {
    matmul (InMats = each In) => (Out = OutMats);
}

// reference §5, matmac diamond: C = A·B, D = Bᵀ·A, E = B + C, G = D·C, Result = D·E + G
composition diamond (A, B, Bt) => (Result) {
    matmac (A = all A, B = all B) => (C = D);
    matmac (A = all Bt, B = all A) => (D = D);
    matmac (B = all B, C = all C) => (E = D);
    matmac (A = all D, B = all C) => (G = D);
    matmac (A = all D, B = all E, C = all G) => (Result = D);
}
"""


HOSTILE_SOURCE = Path(__file__).resolve().parent / "functions" / "process" / "hostile.c"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    from pappus import sdk

    target = tmp_path_factory.mktemp("hostile") / "hostile"
    sdk.build_function([HOSTILE_SOURCE], target)
    return target.read_bytes()


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, examples: dict[str, bytes],
           hostile: bytes) -> Iterator[Client]:
    server = ServerProcess(tmp_path_factory.mktemp("process-api"))
    server.start()
    try:
        with Client(server.url) as c:
            c.add_function("matmul", examples["matmul"], engine="process",
                           input_sets=["InMats"], output_sets=["OutMats"])
            c.add_function("matmac", examples["matmac"], engine="process",
                           input_sets=["A", "B", "C"], output_sets=["D"])
            c.add_function("hostile", hostile, engine="process", input_sets=["in"],
                           output_sets=["out", "more"], timeout_ms=300)
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
    result = client.invoke("every", {"In": [Item("a", 0, matrix(2, 1, 2, 3, 4)),
                                            Item("b", 1, matrix(2, 1, 2, 3, 4))]})
    items = result.set("Out").items
    assert [(i.key, values(i.data)) for i in items] == [(0, [2, 5, 11, 11, 25]),
                                                       (1, [2, 5, 11, 11, 25])]
    assert result.timings["functions"] == 2


def test_http_matmac_diamond(client: Client) -> None:
    result = client.invoke("diamond", {"A": [Item("", 0, matrix(1, 7))],
                                       "B": [Item("", 0, matrix(1, 1, 2, 3, 5))],
                                       "Bt": [Item("", 0, matrix(4, 1, 2, 3, 5))]})
    assert values(result.set("Result").items[0].data) == [
        4, 105, 210, 315, 525, 210, 420, 630, 1050, 315, 630, 945, 1575, 525, 1050, 1575, 2625]


@pytest.mark.parametrize(("static_position", "expected"), [(0, 11), (1, 11), (2, 17)])
def test_http_static_sets_override_supplied_ones(client: Client, examples: dict[str, bytes],
                                                 static_position: int, expected: int) -> None:
    names = ["A", "B", "C"]
    static_name = names[static_position]
    function = f"matmac_static_{static_position}"
    client.add_function(function, examples["matmac"], engine="process", input_sets=names,
                        output_sets=["D"], static_sets={static_name: [Item("", 0, matrix(1, 2))]})
    provided = iter([matrix(1, 3), matrix(1, 5)])
    inputs = {name: [Item("", 0, next(provided))] for name in names if name != static_name}
    result = client.invoke(function, inputs)
    assert values(result.set("D").items[0].data) == [1, expected]
    # supplying the static position too does not change the result
    inputs[static_name] = [Item("", 0, matrix(1, 100))]
    assert values(client.invoke(function, inputs).set("D").items[0].data) == [1, expected]


def test_http_non_zero_exit_is_a_function_error(client: Client) -> None:
    with pytest.raises(pappus.FunctionFailed) as failure:
        client.invoke("matmul", {"InMats": [Item("a", 0, matrix(1, 2)),
                                            Item("b", 1, matrix(1, 3))]})
    assert failure.value.detail["exit_code"] == -2


def test_http_registration_refuses_a_bad_elf(client: Client) -> None:
    with pytest.raises(pappus.InvalidBinary) as refusal:
        client.add_function("not_elf", b"\x7fELF" + b"\x00" * 10, engine="process")
    assert "ELF" in refusal.value.message or "elf" in refusal.value.message



def test_http_hostile_functions_get_typed_outcomes_while_others_run(client: Client) -> None:
    def call(mode: str) -> str:
        try:
            if mode == "matmul":
                result = client.invoke("matmul", {"InMats": [Item("m", 0, matrix(2, 1, 2, 3, 4))]})
                return str(values(result.set("OutMats").items[0].data))
            client.invoke("hostile", {"in": [Item("mode", 0, mode.encode())]})
        except pappus.PappusError as error:
            return f"{error.type}:{error.detail.get('name', error.detail.get('signal', ''))}"
        return "no error"

    modes = ["socket", "open", "execve", "fork", "ptrace", "kill", "mmap", "x32", "int80",
             "loop", "write_past"]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(call, modes + ["matmul"] * 10))
    assert outcomes[:len(modes)] == [
        "forbidden_syscall:socket", "forbidden_syscall:open", "forbidden_syscall:execve",
        "forbidden_syscall:fork", "forbidden_syscall:ptrace", "forbidden_syscall:kill",
        "forbidden_syscall:mmap", "forbidden_syscall:x32 getpid", "forbidden_syscall:i386 getpid",
        "timeout:", "crash:SIGSEGV"]
    assert outcomes[len(modes):] == ["[2, 5, 11, 11, 25]"] * 10
    assert client.health()["status"] == "ok"


def test_statistics_and_repr(tmp_path_factory: pytest.TempPathFactory,
                             examples: dict[str, bytes]) -> None:
    from pappus.engines.process import ProcessEngine

    fresh = ProcessEngine(tmp_path_factory.mktemp("stats-runner"), warm_runners=1)
    try:
        run(fresh, examples["matmul"], [DataSet("", (Item("", 0, matrix(1, 2)),))], ("",))
        with pytest.raises(pappus.OutOfMemory):
            spec = FunctionSpec("big", "process", examples["matmul"], "x", ("",), ("",))
            artifact = fresh.prepare(spec, None)
            fresh.invoke(artifact, [DataSet("", (Item("", 0, bytes(1_000_000)),))],
                         Limits.from_timeout(5.0, 1 << 20, 1 << 20))  # inputs fill the context
        stats = fresh.statistics()
        assert (stats.engine, stats.prepared, stats.invocations, stats.failures) == (
            "process", 2, 2, 1)
        assert stats.mean_sandbox_start_us > 0
        assert "prepared=2 invocations=2 failures=1" in repr(fresh)
    finally:
        fresh.close()
