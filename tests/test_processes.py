"""``serve --processes 2``: two real server processes on one port and one data directory."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pappus import Client, Item
from pappus.errors import PappusError
from tests.conftest import eventually
from tests.server_process import ServerProcess

ATTEMPTS = 200
"""Fresh connections tried to reach every server process (the kernel picks by hash)."""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "data", "--processes", "2")
    process.start()
    yield process
    process.stop()


def per_process(url: str, action: str, function: str) -> dict[int, object]:
    """Do ``action`` on fresh connections until each server process has done it once.

    Each connection first asks ``/v1/stats`` which process it reached, then does
    the action on the same (kept-alive) connection. Maps process index to result.
    """
    results: dict[int, object] = {}
    for _ in range(ATTEMPTS):
        with Client(url) as client:
            index = client.stats()["process"]["index"]
            if index in results:
                continue
            try:
                if action == "invoke":
                    out = client.invoke(function, {"stdio": [Item("stdin", 0, b"hi")]})
                    results[index] = {i.name: i.data for i in out.set("stdio").items}["stdout"]
                else:
                    results[index] = [f["name"] for f in client.functions()]
            except PappusError as error:
                results[index] = error.type
        if len(results) == 2:
            return results
    raise AssertionError(f"reached only server process(es) {sorted(results)}")


def server_pids(url: str, count: int) -> set[int]:
    """The pids of the ``count`` server processes behind ``url``."""
    pids: set[int] = set()
    for _ in range(ATTEMPTS):
        with Client(url) as client:
            pids.add(client.stats()["process"]["pid"])
        if len(pids) == count:
            return pids
    raise AssertionError(f"reached only {len(pids)} of {count} server processes")


def test_every_process_sees_registrations_and_deletions(
        server: ServerProcess, api_functions: dict[str, bytes]) -> None:
    with Client(server.url) as client:
        client.add_function("echo", api_functions["echo"], input_sets=["stdio"],
                            output_sets=["stdio"])
    assert per_process(server.url, "list", "echo") == {0: ["echo"], 1: ["echo"]}
    assert per_process(server.url, "invoke", "echo") == {0: b"hi", 1: b"hi"}
    with Client(server.url) as client:
        client.remove_function("echo")
    assert per_process(server.url, "invoke", "echo") == {0: "not_found", 1: "not_found"}


def test_metrics_count_the_invocations_of_every_process(
        server: ServerProcess, api_functions: dict[str, bytes]) -> None:
    with Client(server.url) as client:
        client.add_function("echo", api_functions["echo"], input_sets=["stdio"],
                            output_sets=["stdio"])
    served: set[int] = set()
    invocations = 0
    while len(served) < 2 or invocations < 10:
        assert invocations < ATTEMPTS, "one server process was never reached"
        with Client(server.url) as client:
            served.add(client.stats()["process"]["index"])
            client.invoke("echo", {"stdio": [Item("stdin", 0, b"x")]})
            invocations += 1
    for _ in range(5):  # whichever process answers the scrape, the totals are the same
        with Client(server.url) as client:
            text = client.metrics()
        count = re.search(
            r'^pappus_function_invocations_total\{function="echo",outcome="ok"\} (\S+)$', text,
            re.MULTILINE)
        assert count is not None, text
        assert float(count.group(1)) == invocations
        slots = re.search(r"^pappus_compute_slots (\S+)$", text, re.MULTILINE)
        assert slots is not None and float(slots.group(1)) >= 2  # one or more per process


def test_a_killed_process_is_replaced_and_the_port_keeps_serving(
        server: ServerProcess, api_functions: dict[str, bytes]) -> None:
    with Client(server.url) as client:
        client.add_function("echo", api_functions["echo"], input_sets=["stdio"],
                            output_sets=["stdio"])
        victim = client.stats()["process"]
    os.kill(victim["pid"], signal.SIGKILL)
    # Connections hashed to the dead process's socket wait in its backlog for the new one.
    for _ in range(20):
        with Client(server.url) as client:
            out = client.invoke("echo", {"stdio": [Item("stdin", 0, b"alive")]})
            assert {i.name: i.data for i in out.set("stdio").items}["stdout"] == b"alive"

    def replaced() -> bool:
        with Client(server.url) as client:
            process = client.stats()["process"]
        return bool(process["index"] == victim["index"] and process["pid"] != victim["pid"])

    eventually(replaced, 60, describe=lambda: "the killed server process was not replaced")
    assert "starting it again" in "".join(server.output)


def test_sigterm_stops_every_process(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", "--processes", "3")
    server.start()
    pids = server_pids(server.url, 3)
    assert server.stop() == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_processes_is_validated(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", "--processes", "0")
    with pytest.raises(RuntimeError, match=r"'processes' must be 1\.\.256"):
        server.start()


def test_killing_the_supervisor_stops_the_server_processes(server: ServerProcess) -> None:
    pids = server_pids(server.url, 2)
    server.stop(kill=True)
    eventually(lambda: not any(_alive(pid) for pid in pids), 30,
               describe=lambda: "server processes outlived their supervisor")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_only_the_metrics_of_dead_supervisors_are_removed(tmp_path: Path) -> None:
    from pappus.server.multiprocess import remove_orphaned_metrics

    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = tmp_path / f"pappus-metrics-{dead.pid}-abc"
    live = tmp_path / f"pappus-metrics-{os.getpid()}-def"
    unrelated = tmp_path / "pappus-metrics-notapid-x"
    for directory in (orphan, live, unrelated):
        directory.mkdir()
        (directory / "counter_1.db").write_bytes(b"x")
    assert remove_orphaned_metrics(tmp_path) == [orphan]
    assert not orphan.exists() and live.exists() and unrelated.exists()


def test_serve_raises_its_descriptor_limit_to_the_hard_limit(tmp_path: Path) -> None:
    """Started with the usual soft limit of 1024, every server process may use the hard one."""
    wrapper = ("import resource, runpy, sys; "
               "resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 4096)); "
               "sys.argv = ['pappus', *sys.argv[1:]]; "
               "runpy.run_module('pappus', run_name='__main__')")
    server = ServerProcess(tmp_path, command=[
        sys.executable, "-c", wrapper, "serve", "--port", "0", "--data-dir", str(tmp_path),
        "--log-level", "warning", "--processes", "2"])
    url = server.start()
    try:
        assert server.process is not None
        pids = [server.process.pid, *_children(server.process.pid)]
        assert len(pids) == 3  # the supervisor and its two server processes
        for pid in pids:
            limits = Path(f"/proc/{pid}/limits").read_text()
            assert re.search(r"Max open files\s+4096\s+4096", limits), (pid, limits)
        with Client(url) as client:
            assert client.health()["status"] == "ok"
    finally:
        server.stop()


def _children(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task")
    return [int(child) for task in tasks.iterdir()
            for child in (task / "children").read_text().split()]
