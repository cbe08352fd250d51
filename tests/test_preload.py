"""Dandelion deployments start pappus: its preload file, option names and environment."""

from __future__ import annotations

import json
import platform
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from pappus import Client, Item
from pappus.config import ConfigError, load_settings
from tests.server_process import ServerProcess


def test_dandelion_environment_names_and_file_keys(tmp_path: Path) -> None:
    config = tmp_path / "dandelion.config"
    config.write_text(json.dumps({"port": 9100, "min_sys_cores": 1, "folder_path": "/tmp/x",
                                  "io_concurrency": 7}))
    settings = load_settings({}, environ={"CONFIG_PATH": str(config), "TOTAL_CORES": "3",
                                          "BIN_PRELOAD_PATH": "/p.json"})
    assert (settings.port, settings.io_concurrency, settings.total_cores) == (9100, 7, 3)
    assert settings.bin_preload_path == Path("/p.json")
    # PAPPUS_ names win over Dandelion's bare ones
    assert load_settings({}, environ={"PORT": "1", "PAPPUS_PORT": "2"}).port == 2
    with pytest.raises(ConfigError, match="TOTAL_CORES"):
        load_settings({}, environ={"TOTAL_CORES": "many"})


@pytest.mark.skipif(sys.platform != "linux" or platform.machine() != "x86_64",
                    reason="preloads a process-engine function")
def test_preload_registers_functions_and_compositions_once(tmp_path: Path) -> None:
    from pappus import sdk

    sdk.build_function([sdk.example_source("matmul")], tmp_path / "matmul")
    preload = tmp_path / "preload.json"
    preload.write_text(json.dumps({
        "functions": [{"name": "matmul", "engineType": "PROCESS", "ctxSize": 0x8000000,
                       "binaryPath": str(tmp_path / "matmul"),
                       "metadata": {"inputSets": ["A"], "outputSets": ["B"]}}],
        "compositions": ["function matmul (A) => (B);\n"
                         "composition twice (x) => (y) {\n"
                         "  matmul (A = all x) => (m = B);\n"
                         "  matmul (A = all m) => (y = B);\n}\n"]}))
    data = tmp_path / "data"
    for _ in range(2):  # the second start finds everything registered already
        server = ServerProcess(data, env={"BIN_PRELOAD_PATH": str(preload)})
        server.start()
        try:
            with Client(server.url) as client:
                result = client.invoke("twice", {"x": [Item("", 0, struct.pack(
                    "<5q", 2, 1, 2, 3, 4))]})
                assert struct.unpack("<5q", result.set("y").items[0].data) == (
                    2, 146, 330, 330, 746)
                assert [f["name"] for f in client.functions()] == ["matmul"]
        finally:
            server.stop()
        assert not any("not registered" in line for line in server.output), server.output


def test_an_invalid_preload_stops_start_up_with_its_reason(tmp_path: Path) -> None:
    preload = tmp_path / "preload.json"
    preload.write_text(json.dumps({"functions": [
        {"name": "f", "engineType": "Process", "ctxSize": 0, "binaryPath": "f"}]}))
    finished = subprocess.run(
        [sys.executable, "-m", "pappus", "serve", "--port", "0", "--data-dir",
         str(tmp_path / "data"), "--bin-preload-path", str(preload)],
        capture_output=True, text=True, timeout=60, check=False)
    assert finished.returncode == 2
    assert "ctxSize must be a positive integer" in finished.stderr


def test_the_demo_keeps_a_different_function_of_its_name_and_says_so(tmp_path: Path) -> None:
    from pappus.demo import load_demo

    reverse = next(f for f in load_demo() if f.name == "reverse")
    data = tmp_path / "data"
    server = ServerProcess(data)
    server.start()
    try:
        with Client(server.url) as client:  # the user's own "upper" (it reverses)
            client.add_function("upper", reverse.binary, input_sets=["in"], output_sets=["out"])
    finally:
        server.stop()
    server = ServerProcess(data, "--demo")
    server.start()
    try:
        with Client(server.url) as client:
            result = client.invoke("upper", {"in": [Item("text", 0, b"abc")]})
            assert result.set("out").items[0].data == b"cba"  # kept, never overwritten
    finally:
        server.stop()
    assert any("demo function upper: a different function of that name is registered"
               in line for line in server.output), server.output
