"""The linux engine through the HTTP API of a real worker: busybox registered and invoked.

Registration of a dynamically linked binary is refused; a composition chains
two busybox applets; hostile invocations get typed outcomes while normal ones
keep running; everything survives a restart.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import platform
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import pappus
from pappus import Client, Item
from tests.server_process import ServerProcess

BUSYBOX = Path("/bin/busybox")
pytestmark = [
    pytest.mark.skipif(sys.platform != "linux" or platform.machine() != "x86_64",
                       reason="the linux engine runs x86-64 Linux executables only"),
    pytest.mark.skipif(not BUSYBOX.exists(),
                       reason="Debian's busybox-static is missing (scripts/setup installs it)"),
]

COMPOSITION = """
function Sort(stdio, in) => (stdio);
function Sum(stdio, in) => (stdio);
composition SortThenHash(Argv, HashArgv, Text) => (Out) {
    Sort(stdio = all Argv, in = all Text) => (Sorted = stdio);
    Sum(stdio = all HashArgv, in = all Sorted) => (Out = stdio);
}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("linux-api"))
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[Client]:
    with Client(server.url) as c:
        busybox = BUSYBOX.read_bytes()
        for name in ("busybox", "Sort", "Sum"):
            c.add_function(name, busybox, engine="linux", input_sets=["stdio", "in"],
                           output_sets=["stdio"], timeout_ms=2000)
        yield c


def stdio(argv: str, stdin: bytes | None = None) -> list[Item]:
    items = [Item("argv", 0, argv.encode())]
    if stdin is not None:
        items.append(Item("stdin", 0, stdin))
    return items


def stdout(result: pappus.client.InvokeResult) -> bytes:
    return result.set("stdio").items[0].data


def test_busybox_applets_over_http(client: Client) -> None:
    data = b"pappus\n" * 1000 + b"end\n"
    result = client.invoke("busybox", {"stdio": stdio("sha256sum /in/data"),
                                       "in": [Item("data", 0, data)]})
    assert stdout(result) == f"{hashlib.sha256(data).hexdigest()}  /in/data\n".encode()
    counted = client.invoke("busybox", {"stdio": stdio("wc -l", stdin=data)})
    assert stdout(counted).strip() == b"1001"


def test_a_composition_of_two_applets(client: Client) -> None:
    client.add_compositions(COMPOSITION)
    text = b"pear\napple\nfig\n"
    # Sort writes /stdio/stdout; the next function reads the item "stdout" as /in/stdout.
    result = client.invoke("SortThenHash", {
        "Argv": stdio("sort /in/text"), "HashArgv": stdio("md5sum /in/stdout"),
        "Text": [Item("text", 0, text)]})
    expected = hashlib.md5(b"apple\nfig\npear\n").hexdigest()
    assert result.set("Out").items[0].data == f"{expected}  /in/stdout\n".encode()


def test_a_failing_applet_is_a_function_error_with_its_stderr(client: Client) -> None:
    with pytest.raises(pappus.FunctionFailed) as failure:
        client.invoke("busybox", {"stdio": stdio("cat /etc/passwd")})
    assert failure.value.detail["exit_code"] == 1
    assert "No such file" in failure.value.detail.get("stderr", "")


def test_dynamically_linked_binaries_are_refused(client: Client, tmp_path: Path) -> None:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is missing (scripts/setup installs it)")
    (tmp_path / "hello.c").write_text('#include <stdio.h>\nint main(void){puts("hi");}\n')
    subprocess.run(["gcc", "-O1", "-o", str(tmp_path / "hello"), str(tmp_path / "hello.c")],
                   check=True)
    with pytest.raises(pappus.InvalidBinary) as refusal:
        client.add_function("dynamic", (tmp_path / "hello").read_bytes(), engine="linux")
    assert "link it statically" in refusal.value.message


def test_hostile_invocations_get_typed_outcomes_while_others_run(client: Client) -> None:
    def call(argv: str) -> str:
        try:
            result = client.invoke("busybox", {"stdio": stdio(argv)})
        except pappus.PappusError as error:
            return error.type
        return stdout(result).decode()

    hostile = ["sh -c 'while :; do :; done'", "ls /proc", "sh -c 'true & true'"]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(call, hostile + ["echo ok"] * 8))
    assert outcomes[0] == "timeout"
    assert outcomes[1] == "function_error"  # ENOENT: there is no /proc
    assert outcomes[2] == "function_error"  # fork is EPERM: the shell reports it
    assert outcomes[3:] == ["ok\n"] * 8
    assert client.health()["status"] == "ok"


def test_an_oversized_argv_is_413_too_large(client: Client) -> None:
    with pytest.raises(pappus.TooLarge) as refusal:
        client.invoke("busybox", {"stdio": stdio("echo " + "word " * 40_000)})
    assert refusal.value.http_status == 413
    assert "argv" in refusal.value.message
    assert stdout(client.invoke("busybox", {"stdio": stdio("echo fine")})) == b"fine\n"


def test_registrations_survive_a_restart(server: ServerProcess, client: Client) -> None:
    server.stop()
    server.start()
    with Client(server.url) as fresh:
        result = fresh.invoke("busybox", {"stdio": stdio("echo again")})
        assert stdout(result) == b"again\n"
