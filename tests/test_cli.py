"""The CLI, run in-process against a real worker on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pappus.cli import EXIT_ERROR, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, main, parse_set_arguments
from pappus.model import DataSet, Item
from tests.server_process import ServerProcess


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = ServerProcess(tmp_path_factory.mktemp("cli-data"), "--demo")
    yield server.start()
    server.stop()


def test_set_arguments(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_bytes(b"file")
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "sub" / "x").write_bytes(b"x")
    sets = parse_set_arguments([
        f"in=@{tmp_path / 'f.txt'}", "stdio/argv=prog a", f"in/renamed@9=@{tmp_path / 'f.txt'}",
        f"tree=@{tmp_path / 'd'}",
    ])
    assert sets == [
        DataSet("in", (Item("f.txt", 0, b"file"), Item("renamed", 9, b"file"))),
        DataSet("stdio", (Item("argv", 0, b"prog a"),)),
        DataSet("tree", (Item("sub/x", 0, b"x"),)),
    ]


def test_help_and_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "invoke" in capsys.readouterr().out
    assert main(["invoke", "x", "--set", "nonsense"]) == EXIT_USAGE
    assert main(["function", "add", "f", "/nonexistent/file.wasm"]) == EXIT_USAGE


def test_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--url", "http://127.0.0.1:9", "function", "list"]) == EXIT_UNREACHABLE
    assert "cannot reach" in capsys.readouterr().err


def test_register_compose_invoke(url: str, tmp_path: Path, api_functions: dict[str, bytes],
                                 capsys: pytest.CaptureFixture[str]) -> None:
    wasm = tmp_path / "echo.wasm"
    wasm.write_bytes(api_functions["echo"])
    assert main(["--url", url, "function", "add", "cli_echo", str(wasm),
                 "--input-sets", "stdio", "--output-sets", "stdio"]) == EXIT_OK
    source = tmp_path / "c.comp"
    source.write_text("function cli_echo (stdio) => (stdio);\n"
                      "composition cli_twice (a) => (b) {\n"
                      "  cli_echo (stdio = all a) => (b = stdio);\n}\n")
    assert main(["--url", url, "composition", "add", str(source)]) == EXIT_OK
    capsys.readouterr()
    assert main(["--url", url, "function", "list"]) == EXIT_OK
    assert "cli_echo" in capsys.readouterr().out
    assert main(["--url", url, "invoke", "cli_echo", "--set", "stdio/stdin=hello"]) == EXIT_OK
    assert capsys.readouterr().out == "hello"
    out_dir = tmp_path / "out"
    assert main(["--url", url, "invoke", "cli_twice", "--set", "a/stdin=hi",
                 "--out", str(out_dir)]) == EXIT_OK
    assert (out_dir / "b" / "stdout").read_bytes() == b"hi"
    # typed errors from the worker: exit 1, type printed
    assert main(["--url", url, "composition", "add", str(source)]) == EXIT_ERROR
    assert "conflict" in capsys.readouterr().err
    assert main(["--url", url, "composition", "rm", "cli_twice"]) == EXIT_OK
    assert main(["--url", url, "function", "rm", "cli_echo"]) == EXIT_OK
    assert main(["--url", url, "invoke", "cli_echo"]) == EXIT_ERROR


def test_demo_is_preloaded(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--url", url, "invoke", "upper", "--set", "in/text=shout"]) == EXIT_OK
    assert capsys.readouterr().out == "== out/text (key 0, 5 bytes) ==\nSHOUT\n"
    assert main(["--url", url, "invoke", "shout_backwards", "--set", "text/text=abc",
                 "--set", "text/text@1=xyz"]) == EXIT_OK
    assert capsys.readouterr().out == (
        "== result/text (key 0, 3 bytes) ==\nCBA\n== result/text (key 0, 3 bytes) ==\nZYX\n")


def test_a_demo_function_says_why_it_failed(url: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    greeting = tmp_path / "greeting.txt"  # becomes item "greeting.txt", not "text"
    greeting.write_text("hi")
    assert main(["--url", url, "invoke", "upper", "--set", f"in=@{greeting}"]) == EXIT_ERROR
    printed = capsys.readouterr()
    assert "exited with code 1" in printed.err
    assert 'no item named "text"' in printed.err  # its stderr, though stdio is no output set


def test_run_locally_without_server(tmp_path: Path, api_functions: dict[str, bytes],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    wasm = tmp_path / "io.wasm"
    wasm.write_bytes(api_functions["io"])
    (tmp_path / "a").write_bytes(b"A")
    (tmp_path / "b").write_bytes(b"B")
    code = main(["run", str(wasm), "--set", f"in=@{tmp_path / 'a'}",
                 "--set", f"in/dir/b=@{tmp_path / 'b'}", "--set", "stdio/argv=p",
                 "--input-sets", "in,stdio", "--output-sets", "out,stdio",
                 "--out", str(tmp_path / "res")])
    assert code == EXIT_OK
    assert (tmp_path / "res" / "out" / "joined").read_bytes() == b"A+B"
    assert (tmp_path / "res" / "out" / "keyed@42").read_bytes() == b"k"


def test_build_command(tmp_path: Path) -> None:
    source = tmp_path / "hello.c"
    source.write_text('#include <stdio.h>\nint main(void){puts("hi");return 0;}\n')
    assert main(["build", str(source), "-o", str(tmp_path / "hello.wasm")]) == EXIT_OK
    assert (tmp_path / "hello.wasm").read_bytes()[:4] == b"\0asm"
    broken = tmp_path / "broken.c"
    broken.write_text("int main(void) { return }")
    assert main(["build", str(broken)]) == EXIT_USAGE
