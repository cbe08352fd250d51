"""The launcher's other identity path: as uid/gid 65534, where the worker may still set limits.

A worker running as root with ``CAP_SYS_RESOURCE`` has its launchers switch to
uid/gid 65534 with no groups (:func:`~pappus.engines.linux.launcher.can_become_nobody`).
This machine's root lacks that capability, so the tests elsewhere take the
other path; here a child process is put in a new user namespace where ids
0 to 65535 map to themselves and root has every capability, and it runs
programs through a linux engine there: the launcher must be 65534 and the
limits must still be set on it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CHILD = r"""
import os, sys, time
from pathlib import Path
from pappus.engines.base import FunctionSpec, Limits
from pappus.engines.linux import LinuxEngine
from pappus.engines.linux.launcher import can_become_nobody
from pappus.model import DataSet, Item
from pappus.errors import OutOfMemory

assert can_become_nobody(), "root with every capability in the namespace"
engine = LinuxEngine(Path(sys.argv[1]), warm_launchers=1)
busybox = Path("/bin/busybox").read_bytes()
spec = FunctionSpec("busybox", "linux", busybox, "-", ("stdio",), ("stdio",))
artifact = engine.prepare(spec, None)

def run(argv, memory=256 << 20):
    inputs = [DataSet("stdio", (Item("argv", 0, argv.encode()),))]
    result = engine.invoke(artifact, inputs, Limits.from_timeout(10, memory, 1 << 20))
    return result.exit_code, result.outputs[0].items[0].data

launcher = engine.pool.take()
launcher.wait_until_parked(time.monotonic() + 5)  # its set-up is done, the identity switched
status = Path(f"/proc/{launcher.pid}/status").read_text()
uid = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
launcher.discard()
print("launcher uid", " ".join(uid))
print("id", run("id")[1].decode().strip())
print("echo", run("echo nobody works")[1].decode().strip())
try:
    run("sh -c 'x=y; while :; do x=$x$x; done'", memory=32 << 20)
    print("bomb: no error")
except OutOfMemory:
    print("bomb: out_of_memory")
engine.close()
"""


IN_NAMESPACE = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
ready_read, ready_write = os.pipe()
go_read, go_write = os.pipe()
pid = os.fork()
if pid == 0:  # a fresh, single-threaded process: safe to fork
    if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER
        os._exit(3)
    os.write(ready_write, b"u")
    os.read(go_read, 1)  # until the parent has written the id maps
    os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
os.read(ready_read, 1)
for name in ("uid_map", "gid_map"):
    with open(f"/proc/{pid}/{name}", "w") as ids:
        ids.write("0 0 65536\n")
os.write(go_write, b"g")
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def _user_namespaces_usable() -> str | None:
    if os.geteuid() != 0:
        return "mapping 65536 ids into a user namespace needs root (or newuidmap)"
    probe = subprocess.run(["unshare", "--user", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        return f"user namespaces are not available here: {probe.stderr.decode().strip()}"
    return None


@pytest.mark.skipif(_user_namespaces_usable() is not None,
                    reason=_user_namespaces_usable() or "")
def test_launchers_run_as_nobody_when_the_worker_can_still_limit_them(tmp_path: Path) -> None:
    (tmp_path / "namespace.py").write_text(IN_NAMESPACE)
    (tmp_path / "child.py").write_text(CHILD)
    done = subprocess.run(
        [sys.executable, str(tmp_path / "namespace.py"), str(tmp_path / "child.py"),
         str(tmp_path / "cache")], capture_output=True, text=True, timeout=120, check=False)
    text = done.stdout + done.stderr
    assert done.returncode == 0, text
    assert "launcher uid 65534 65534 65534 65534" in text, text
    assert "id uid=65534 gid=65534" in text, text
    assert "echo nobody works" in text, text
    assert "bomb: out_of_memory" in text, text
