"""The ``linux`` engine: unmodified static Linux executables behind a user-space syscall layer.

* **Preparation** (:meth:`LinuxEngine.prepare`): check the binary is a static
  x86-64 executable (:mod:`.elf`; a dynamically linked one is
  ``invalid_binary`` with the advice to link statically) and keep it in a
  sealed, read-only memfd; build the launcher once (``launcher.c``).
* **Invocation**: a :class:`~pappus.vfs.SetFileSystem` from the inputs (the
  wasm engine's file convention, same module); a launcher process, started
  with ``posix_spawn`` ahead of time by the warm pool — the server is never
  forked — receives the executable and its parameters, sets the limits,
  installs the filter generated from the policy table (:mod:`.policy`) with a
  user-notification listener, and execs the program. The supervisor
  (:mod:`.supervisor`) takes the listener with ``pidfd_getfd`` and answers the
  notified calls in this thread until the program ends.
* **Limits**: ``RLIMIT_AS`` = the memory bound (mmap is also checked by the
  supervisor so running out is seen: ``out_of_memory``); the deadline kills
  the process from outside (``timeout``), ``RLIMIT_CPU`` is a second bound;
  output beyond ``max_output_bytes`` ends the run (``bad_output``); a call the
  table kills is ``forbidden_syscall`` naming it; a fatal signal is ``crash``.
* **Result**: the output sets and the program's exit status as ``exit_code``.
"""

from __future__ import annotations

import math
import os
import select
import socket
import struct
import time
from collections.abc import Sequence
from pathlib import Path

from pappus.engines import native_build
from pappus.engines.base import (
    Artifact,
    Engine,
    EngineStatistics,
    FunctionSpec,
    InvocationCounters,
    InvocationResult,
    Limits,
)
from pappus.engines.linux.elf import StaticExecutable, check_static_executable
from pappus.engines.linux.files import sealed_memfd
from pappus.engines.linux.notify import Listener, pidfd_getfd
from pappus.engines.linux.outcome import LAUNCH_STEPS, Ending, judge
from pappus.engines.linux.policy import compile_table
from pappus.engines.linux.supervisor import SandboxLimits, Supervisor
from pappus.engines.process.pool import Runner, RunnerPool, start_runner
from pappus.engines.seccomp import program_bytes
from pappus.errors import EngineUnavailable, InvalidBinary, InvocationTimeout, OutOfMemory
from pappus.model import DataSet
from pappus.vfs import SetFileSystem

PARAMS_MAGIC = 0x314E4C5050415050
PARAMS = struct.Struct("<9Qqq")  # see struct params in launcher.c (last two: failure report)
LISTENER_FD = 1
DESCRIPTOR_LIMIT = 1024  # the real RLIMIT_NOFILE: virtual below 512, real input files above
STACK_BYTES = 8 << 20
MAX_ARGUMENT_BYTES = 128 << 10
DEFAULT_WARM_LAUNCHERS = 2
ARMED_TIMEOUT_S = 5.0
LAUNCHER_FLAGS = (*native_build.FREESTANDING_FLAGS, "-fno-pie", "-no-pie")


def default_cache_dir() -> Path:
    """Where the launcher is cached when the engine is given no directory."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pappus"


class LinuxArtifact(Artifact):
    """A checked static executable, held in a sealed read-only memfd for ``execveat``."""

    def __init__(self, spec: FunctionSpec, executable: StaticExecutable, fd: int) -> None:
        self.spec = spec
        self.executable = executable
        self.fd = fd

    def __repr__(self) -> str:
        return f"<LinuxArtifact {self.spec.name!r} {len(self.spec.binary)} bytes>"

    def __del__(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class LinuxEngine(Engine):
    """Runs static Linux executables; see the module docstring."""

    name = "linux"

    def __init__(
        self, cache_dir: Path | None = None, *, warm_launchers: int = DEFAULT_WARM_LAUNCHERS
    ) -> None:
        self._cache_dir = cache_dir or default_cache_dir()
        self._launcher: str | None = None
        self.pool = RunnerPool(self._launcher_path, warm_launchers)
        self._filter = program_bytes(compile_table())
        self._closed = False
        self._counters = InvocationCounters(self.name)

    def __repr__(self) -> str:
        return f"<LinuxEngine {self._counters!r} pool={self.pool!r}>"

    def _launcher_path(self) -> str:
        if self._launcher is None:
            source = native_build.packaged_source("pappus.engines.linux", "launcher.c")
            self._launcher = str(
                native_build.ensure_built(
                    source, LAUNCHER_FLAGS, self._cache_dir, stem="launcher", engine="linux"
                )
            )
        return self._launcher

    def prepare(self, spec: FunctionSpec, cache_dir: Path | None) -> LinuxArtifact:
        """Check ``spec.binary`` (see :mod:`.elf`) and make sure the launcher exists."""
        executable = check_static_executable(spec.binary)
        self._launcher_path()
        self._counters.count_prepared()
        return LinuxArtifact(spec, executable, sealed_memfd(spec.binary, "pappus-executable"))

    def invoke(
        self, artifact: Artifact, inputs: Sequence[DataSet | None], limits: Limits
    ) -> InvocationResult:
        """Run the program once in a fresh process; see the module docstring."""
        if not isinstance(artifact, LinuxArtifact):
            raise TypeError(f"not a linux artifact: {artifact!r}")
        if self._closed:
            raise RuntimeError("the linux engine is closed")
        return self._counters.invoke(lambda: self._invoke(artifact, inputs, limits))

    def _invoke(
        self, artifact: LinuxArtifact, inputs: Sequence[DataSet | None], limits: Limits
    ) -> InvocationResult:
        began = time.perf_counter()
        spec = artifact.spec
        if artifact.executable.load_bytes + STACK_BYTES // 8 > limits.memory_bytes:
            raise OutOfMemory(
                f"{spec.name!r} needs {artifact.executable.load_bytes} bytes for "
                f"its program alone, more than its memory bound of "
                f"{limits.memory_bytes}",
                memory_bytes=limits.memory_bytes,
            )
        fs = SetFileSystem(
            {
                name: inputs[i] if i < len(inputs) else None
                for i, name in enumerate(spec.input_sets)
            },
            spec.output_sets,
            limits.max_output_bytes,
            program_name=spec.name,
        )
        sandbox_limits = SandboxLimits(
            limits.memory_bytes, max(1, math.ceil(limits.remaining()) + 1), STACK_BYTES
        )
        params_fd = _params_memfd(self._filter, sandbox_limits, fs.argv, fs.environ)
        runner: Runner | None = None
        supervisor: Supervisor | None = None
        try:
            runner = self._hand_over(artifact.fd, params_fd, limits.deadline)
            listener = self._take_listener(runner, limits.deadline)
            started = time.perf_counter()
            if listener is not None:
                supervisor = Supervisor(runner.pid, runner.pidfd, listener, fs, sandbox_limits)
                supervisor.run(limits.deadline)
            status = _reap(runner)
            finished = time.perf_counter()
            failure = os.pread(params_fd, 16, PARAMS.size - 16)
            step, error = struct.unpack("<qq", failure)
            ending = Ending(
                status,
                supervisor.verdict if supervisor else None,
                LAUNCH_STEPS.get(step, f"step {step}") if step else None,
                error,
            )
            exit_code = judge(spec.name, ending, fs, limits)
        finally:
            if supervisor is not None:
                supervisor.close()
            if runner is not None:
                runner.discard()
            os.close(params_fd)
        outputs = fs.collect_outputs()
        done = time.perf_counter()
        timings = {
            "sandbox_start": (started - began) * 1e6,
            "run": (finished - started) * 1e6,
            "output": (done - finished) * 1e6,
        }
        if supervisor is not None:
            timings["emulated_calls"] = float(supervisor.calls)
        return InvocationResult(outputs, exit_code, timings)

    def _hand_over(self, executable_fd: int, params_fd: int, deadline: float) -> Runner:
        """Give the program and its parameters to a started launcher."""
        length = os.fstat(params_fd).st_size
        message = [struct.pack("<Q", length)]
        runner = self.pool.take()
        try:
            socket.send_fds(runner.channel, message, [executable_fd, params_fd])
        except OSError:
            runner.discard()  # killed while it waited (e.g. by an administrator)
            runner = start_runner(self._launcher_path())
            socket.send_fds(runner.channel, message, [executable_fd, params_fd])
        return runner

    def _take_listener(self, runner: Runner, deadline: float) -> Listener | None:
        """Wait for "armed", then copy the launcher's listener (None: the launcher died)."""
        channel = runner.channel
        channel.settimeout(max(0.001, min(ARMED_TIMEOUT_S, deadline - time.monotonic())))
        try:
            armed = channel.recv(1)
        except TimeoutError:
            runner.kill()
            raise InvocationTimeout("the sandbox did not start before the deadline") from None
        if not armed:
            return None
        give_up = time.monotonic() + ARMED_TIMEOUT_S
        while True:  # the seccomp() call is microseconds after "armed"
            try:
                fd = pidfd_getfd(runner.pidfd, LISTENER_FD)
            except OSError:
                if time.monotonic() > give_up or _exited(runner):
                    return None
                os.sched_yield()
                continue
            if os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:seccomp notify":
                os.close(fd)  # not installed yet: descriptor 1 is something else
                if time.monotonic() > give_up:
                    runner.kill()
                    raise EngineUnavailable(
                        "the linux engine's launcher did not install its filter", engine="linux"
                    )
                continue
            return Listener(fd)

    def statistics(self) -> EngineStatistics:
        """Counters since the engine started."""
        return self._counters.snapshot()

    def close(self) -> None:
        """Refuse further invocations and end the warm launchers. Idempotent."""
        self._closed = True
        self.pool.close()


def _params_memfd(
    program: bytes, limits: SandboxLimits, argv: list[bytes], environ: list[bytes]
) -> int:
    """The launcher's parameters: limits, filter, argv and envp (see launcher.c)."""
    if not argv:
        argv = [b"function"]
    strings = b"".join(word.replace(b"\0", b"") + b"\0" for word in (*argv, *environ))
    if len(strings) > MAX_ARGUMENT_BYTES:
        raise InvalidBinary(
            f"argv and environ take {len(strings)} bytes; at most "
            f"{MAX_ARGUMENT_BYTES} are supported",
            engine="linux",
        )
    header = PARAMS.pack(
        PARAMS_MAGIC,
        limits.address_space,
        limits.cpu_seconds,
        DESCRIPTOR_LIMIT,
        limits.stack,
        len(program) // 8,
        len(argv),
        len(environ),
        len(strings),
        0,
        0,
    )
    fd = os.memfd_create("pappus-launch", os.MFD_CLOEXEC)
    try:
        os.write(fd, header + program + strings)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _exited(runner: Runner) -> bool:
    return bool(select.select([runner.pidfd], [], [], 0)[0])


def _reap(runner: Runner) -> int:
    """Wait for the process (the supervisor returned: it is ending or dead)."""
    _, status = os.waitpid(runner.pid, 0)
    return status


__all__ = ["LinuxArtifact", "LinuxEngine"]
