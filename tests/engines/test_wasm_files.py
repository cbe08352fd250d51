"""C programs on the wasm engine see exactly the file convention: Dandelion's stdio and fileio
oracles, our own round trip, directories, keys, confinement, clocks and randomness."""

from __future__ import annotations

from pappus.engines.wasm import WasmEngine
from pappus.model import DataSet, Item
from tests.engines.support import by_name, items, limits, spec, stdio_set

FILEIO_INPUTS = [
    DataSet("in", (Item("in_file", 0, b"Test file 0\n line 2\n"),)),
    DataSet("in_nested", (
        Item("in_file", 0, b"Test file 1 \n line 2\n"),
        Item("in_folder/in_file", 0, b"Test file 2 \n line 2\n"),
        Item("in_folder/in_file_two", 0, b"Test file 3 \n line 2\n"),
        Item("in_folder/in_folder_two/in_file", 0, b"Test file 4 \n line 2\n"),
    )),
]


def test_dandelion_stdio_oracle(engine: WasmEngine, wasm_functions: dict[str, bytes]) -> None:
    artifact = engine.prepare(spec("stdio", wasm_functions["stdio"], ("stdio",), ("stdio",)), None)
    result = engine.invoke(artifact, [stdio_set(b"Test line \n line 2\n", b"stdio flag0 flag1",
                                                b"HOME=test_home\0")], limits())
    assert [s.name for s in result.outputs] == ["stdio"]
    assert items(result, "stdio") == [
        ("stdout", 0, b"Test string to stdout\nread 19 characters from stdin\nTest line \n line 2\n"
                      b"argument 0 is stdio\nargument 1 is flag0\nargument 2 is flag1\n"
                      b"environmental variable HOME is test_home\n"),
        ("stderr", 0, b"Test string to stderr\n"),
    ]


def test_dandelion_fileio_oracle(engine: WasmEngine, wasm_functions: dict[str, bytes]) -> None:
    artifact = engine.prepare(spec("fileio", wasm_functions["fileio"], ("in", "in_nested"),
                                   ("stdio", "out", "out_nested")), None)
    result = engine.invoke(artifact, FILEIO_INPUTS, limits())
    assert result.exit_code == 0
    assert [s.name for s in result.outputs] == ["stdio", "out", "out_nested"]
    assert items(result, "out") == [("out_file", 0, b"Test file 0\n line 2\n")]
    assert sorted(items(result, "out_nested")) == [
        ("out_file", 0, b"Test file 1 \n line 2\n"),
        ("out_folder/out_file", 0, b"Test file 2 \n line 2\n"),
        ("out_folder/out_file_two", 0, b"Test file 3 \n line 2\n"),
        ("out_folder/out_folder_two/out_file", 0, b"Test file 4 \n line 2\n"),
    ]


def test_round_trip_of_files_stdin_argv_environment(engine: WasmEngine,
                                                    wasm_functions: dict[str, bytes]) -> None:
    artifact = engine.prepare(spec("roundtrip", wasm_functions["roundtrip"], ("in", "stdio"),
                                   ("out", "stdio")), None)
    inputs = [
        DataSet("in", (Item("a", 1, b"AAA"), Item("dir/b", 2, b"BB"))),
        stdio_set(b"hello", b"prog 'one two' three", b"GREETING=hi X=1"),
    ]
    result = engine.invoke(artifact, inputs, limits())
    assert result.exit_code == 0
    assert items(result, "out") == [  # creation order; the @42 suffix became the key
        ("joined", 0, b"AAA+BB"),
        ("nested/deep/file", 0, b"deep"),
        ("keyed", 42, b"forty-two"),
    ]
    assert items(result, "stdio") == [
        ("stdout", 0, b"argc=3 [prog] [one two] [three]\ngreeting=hi\nstdin=hello\n"),
        ("stderr", 0, b"read 5 bytes of stdin\n"),
    ]
    assert set(result.timings_us) == {"sandbox_start", "run", "output"}


def test_directories_metadata_seeking_and_errors(engine: WasmEngine,
                                                 wasm_functions: dict[str, bytes]) -> None:
    artifact = engine.prepare(spec("tree", wasm_functions["tree"], ("in",), ("out", "stdio")),
                              None)
    inputs = [DataSet("in", (Item("a", 1, b"abcdefgh"), Item("dir/b", 2, b"BB"),
                             Item("dir/sub/c", 7, b"C")))]
    result = engine.invoke(artifact, inputs, limits())
    assert result.exit_code == 0
    assert by_name(result, "stdio")["stdout"].decode().splitlines() == [
        "/in: ./ ../ a(8) dir/",
        "/in/dir: ./ ../ b(2) sub/",
        "seek 2 read 3: cde, tell 5",
        "last byte: h",
        "pwrite: 3",
        "truncate: ok",
        "mkdir: ok",
        "mkdir again: File exists",
        "mkdir in input: Read-only file system",
        "mkdir at root: Read-only file system",
        "rmdir non-empty: Directory not empty",
        "rename: ok",
        "open missing: No such file or directory",
        "file as dir: Not a directory",
        "dir for writing: Is a directory",
        "unlink: ok",
        "unlink again: No such file or directory",
        "unlink output dir: Read-only file system",
        "dotdot: ok",
        "above root: ok",
        "/out: ./ ../ cut(4) d/ log(8)",
        "/out/d: ./ ../ kept@5(9)",
        "key line: 1 a",
        "key line: 2 dir/b",
        "key line: 7 dir/sub/c",
    ]
    assert items(result, "out") == [
        ("log", 0, b"ONE\ntwo\n"), ("cut", 0, b"0123"), ("d/kept", 5, b"temporary")]


def test_file_system_confinement(engine: WasmEngine, wasm_functions: dict[str, bytes]) -> None:
    artifact = engine.prepare(spec("ro", wasm_functions["readonly"], ("in",), ("stdio",)), None)
    result = engine.invoke(artifact, [DataSet("in", (Item("a", 3, b"x"),))], limits())
    assert by_name(result, "stdio")["stdout"].decode().splitlines() == [
        "write input: Read-only file system",
        "create in input set: Read-only file system",
        "host passwd: No such file or directory",
        "dotdot: No such file or directory",
        "keys: ok",
        "unlink input: Read-only file system",
    ]


def test_stdout_is_captured_but_not_emitted_without_a_stdio_output_set(
        engine: WasmEngine, wasm_functions: dict[str, bytes]) -> None:
    artifact = engine.prepare(spec("roundtrip", wasm_functions["roundtrip"], ("in", "stdio"),
                                   ("out",)), None)
    inputs = [DataSet("in", (Item("a", 1, b"A"), Item("dir/b", 2, b"B"))), stdio_set()]
    result = engine.invoke(artifact, inputs, limits())
    assert [s.name for s in result.outputs] == ["out"]
    assert len(items(result, "out")) == 3


def test_absent_and_empty_sets(engine: WasmEngine, wasm_functions: dict[str, bytes]) -> None:
    artifact = engine.prepare(spec("fileio", wasm_functions["fileio"], ("in", "in_nested"),
                                   ("stdio", "out", "out_nested")), None)
    result = engine.invoke(artifact, [None], limits())  # second input missing entirely
    assert result.exit_code == 0
    assert [(s.name, len(s.items)) for s in result.outputs] == [
        ("stdio", 2), ("out", 0), ("out_nested", 0)]


def test_clocks_are_logical_and_randomness_is_fresh(
        engine: WasmEngine, wasm_functions: dict[str, bytes]) -> None:
    artifact = engine.prepare(spec("clock", wasm_functions["clock"], (), ("stdio",)), None)
    runs = [by_name(engine.invoke(artifact, [], limits()), "stdio")["stdout"].decode().splitlines()
            for _ in range(2)]
    assert runs[0][:3] == runs[1][:3]  # the clock carries nothing from the host
    assert runs[0][3] != runs[1][3]  # entropy does: 8 CSPRNG bytes never repeat in practice
    lines = runs[0]
    assert lines[0] == "monotonic 1000 then 2000"  # +1 µs per read
    assert lines[1] == "time 0"
    assert int(lines[2].split()[-1]) >= 2_000_000_000  # sleep(2) advanced the logical clock
    assert len(lines[3]) == 16


def test_exit_code_is_reported_with_outputs(engine: WasmEngine,
                                            wasm_functions: dict[str, bytes]) -> None:
    artifact = engine.prepare(spec("exit", wasm_functions["exit_code"], ("stdio",), ("stdio",)),
                              None)
    for code in (0, 7, 255, -3):
        result = engine.invoke(artifact, [stdio_set(argv=f"prog {code}".encode())], limits())
        assert result.exit_code == code
        assert by_name(result, "stdio")["stdout"] == str(code).encode()


def test_argv_defaults_to_the_function_name(engine: WasmEngine,
                                            wasm_functions: dict[str, bytes]) -> None:
    artifact = engine.prepare(spec("echoargs", wasm_functions["stdio"], ("stdio",), ("stdio",)),
                              None)
    stdout = by_name(engine.invoke(artifact, [None], limits()), "stdio")["stdout"]
    assert b"argument 0 is echoargs\n" in stdout
    assert b"read 0 characters from stdin\n" in stdout
