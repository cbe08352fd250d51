"""The ``linux`` engine: unmodified static Linux executables behind a user-space syscall layer.

* **Preparation** (:meth:`LinuxEngine.prepare`): check the binary is a static
  x86-64 executable (:mod:`.elf`; a dynamically linked one is
  ``invalid_binary`` with the advice to link statically) and keep it in a
  sealed, read-only memfd; build the launcher once (``launcher.c``).
* **Invocation**: a :class:`~pappus.vfs.SetFileSystem` from the inputs (the
  wasm engine's file convention, same module); a launcher process, started
  ahead of time by the warm pool (cloned by a zygote that was
  ``posix_spawn``-ed — the server is never forked), has already set its fixed
  limits, dropped privileges, installed the filter generated from the policy
  table (:mod:`.policy`) and parked in its first notified call
  (:mod:`.launcher`); the pool thread has usually received that call and
  installed the executable of the function that ran last (a guess that it
  runs again). The invocation writes argv and envp, sets the memory and CPU
  limits, and the supervisor (:mod:`.supervisor`) answers the parked call by
  installing this function's executable (unless the launcher holds it
  already) and letting the exec run, then answers the program's notified
  calls in this thread until it ends — those that need no file system in C,
  without the GIL (:mod:`.fastpath`).
* **Limits**: ``RLIMIT_AS`` = the memory bound (mmap is also checked by the
  supervisor so running out is seen: ``out_of_memory``); the deadline kills
  the process from outside (``timeout``): the worker's native deadline thread
  (:mod:`pappus.engines.deadlines`) sends the ``SIGKILL`` without waiting for
  the GIL, the supervisor also kills it once it sees the deadline pass, and
  ``RLIMIT_CPU`` is a third bound;
  output beyond ``max_output_bytes`` ends the run (``bad_output``); a call the
  table kills is ``forbidden_syscall`` naming it; a fatal signal is ``crash``.
* **Result**: the output sets and the program's exit status as ``exit_code``.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import signal
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
from pappus.engines.deadlines import shared_watchdog
from pappus.engines.linux import fastpath
from pappus.engines.linux.elf import StaticExecutable, check_static_executable
from pappus.engines.linux.launcher import (
    LAUNCH_STEPS,
    PARAMS_FD,
    Launcher,
    LauncherGone,
    argument_block,
    can_become_nobody,
    start_launcher,
)
from pappus.engines.linux.memfd import MemfdRecycler, sealed_memfd
from pappus.engines.linux.outcome import STDERR_TAIL_BYTES, Ending, judge
from pappus.engines.linux.policy import compile_table, table_for
from pappus.engines.linux.supervisor import SandboxLimits, Supervisor
from pappus.engines.process.pool import Runner, RunnerPool, Zygote
from pappus.engines.seccomp import program_bytes
from pappus.errors import EngineUnavailable, OutOfMemory
from pappus.model import DataSet
from pappus.vfs import SetFileSystem

log = logging.getLogger(__name__)

STACK_BYTES = 8 << 20
NOBODY = 65534
ZYGOTE_HANDSHAKE_S = 2.0
LAUNCH_ATTEMPTS = 2
DEFAULT_WARM_LAUNCHERS = 2
LAUNCHER_FLAGS = (*native_build.FREESTANDING_FLAGS, "-fno-pie", "-no-pie")


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
        self, cache_dir: Path | None = None, *, warm_launchers: int = DEFAULT_WARM_LAUNCHERS,
        fast_path: bool = True,
    ) -> None:
        """``fast_path=False`` has Python answer every call (see :mod:`.fastpath`): slower,
        for comparing the two."""
        self._cache_dir = cache_dir or native_build.default_cache_dir()
        self._use_fast_path = fast_path
        self._launcher: str | None = None
        self._zygote: Zygote | None = None
        self._become_nobody = can_become_nobody()
        self._filters = {nobody: program_bytes(compile_table(table_for(nobody)))
                         for nobody in (False, True)}
        self._fast_paths: dict[bool, fastpath.FastPath] = {}
        self._clones_nobody = False
        self._zygote_maps_nobody = False
        """Whether the current zygote's clones become uid/gid 65534 (set by its handshake)."""
        # Refilled while the invoking thread waits for the program's exec (refill_soon
        # below), not when it takes a launcher and still has Python to run.
        self.pool: RunnerPool[Launcher] = RunnerPool(
            self._start_launcher, warm_launchers, Launcher.discard, refill_on_take=False,
            get_ready=self._get_ready)
        self._last_started: LinuxArtifact | None = None
        self.bound_ahead = 0
        """Invocations whose launcher had their executable installed ahead (see _get_ready)."""
        self.memfds = MemfdRecycler()
        self._closed = False
        self._counters = InvocationCounters(self.name)

    def __repr__(self) -> str:
        return f"<LinuxEngine {self._counters!r} pool={self.pool!r}>"

    def _launcher_path(self) -> str:
        if self._launcher is None:
            source = native_build.packaged_source("pappus.engines.linux", "launcher.c")
            self._launcher = str(
                native_build.ensure_built(
                    source, LAUNCHER_FLAGS, self._cache_dir, stem="launcher", engine="linux",
                    headers=native_build.shared_headers(*native_build.FREESTANDING_HEADERS),
                )
            )
        return self._launcher

    def _fast_path(self, as_nobody: bool) -> fastpath.FastPath | None:
        """The supervisor's fast path for the policy of a launcher (built once)."""
        if not self._use_fast_path:
            return None
        fast = self._fast_paths.get(as_nobody)
        if fast is None:
            fast = fastpath.load(self._cache_dir, table_for(as_nobody))
            self._fast_paths[as_nobody] = fast
        return fast

    @property
    def zygote_pid(self) -> int | None:
        """The process id of the zygote that clones launchers, once one runs."""
        return self._zygote.pid if self._zygote is not None else None

    @property
    def clones_run_as_nobody(self) -> bool:
        """Whether the zygote's clones switch to uid/gid 65534 (see :meth:`_start_launcher`)."""
        return self._clones_nobody

    @property
    def zygote_maps_nobody(self) -> bool:
        """Whether the zygote has a user namespace with uid/gid 65534 mapped into it."""
        return self._zygote_maps_nobody

    def _start_launcher(self) -> Launcher:
        """A new launcher: a clone of the zygote, or (none can serve) spawned.

        Clones live in the zygote's user namespace, where they become uid/gid
        65534 and let the kernel answer the identity calls (the worker, owner of
        the namespace, can still set their limits); spawned ones become 65534 only
        where the worker has ``CAP_SYS_RESOURCE``, and have the supervisor answer.
        """
        path = self._launcher_path()
        if self._zygote is None:
            self._zygote = Zygote(path, passed_fd=PARAMS_FD, on_start=self._zygote_handshake)
        if self._zygote.ensure_started():
            nobody = self._clones_nobody
            launcher = start_launcher(path, self._filters[nobody], STACK_BYTES, nobody,
                                      self._zygote)
            if launcher.runner.cloned and nobody == self._clones_nobody:
                return launcher
            launcher.discard()  # the zygote was replaced meanwhile: maybe the wrong identity
        return start_launcher(path, self._filters[self._become_nobody], STACK_BYTES,
                              self._become_nobody)

    def _zygote_handshake(self, zygote: Runner) -> None:
        """A new zygote says whether it has its own user namespace; if so, map 65534 into it."""
        zygote.channel.settimeout(ZYGOTE_HANDSHAKE_S)
        try:
            answer = zygote.channel.recv(1)
        except TimeoutError:
            answer = b""
        if answer not in (b"u", b"n"):
            raise ConnectionError("the linux engine's zygote did not say whether it has a "
                                  "user namespace")
        # In an unmapped namespace no switch is possible; without one, the host's rule.
        self._zygote_maps_nobody = answer == b"u" and _map_nobody(zygote.pid)
        self._clones_nobody = self._zygote_maps_nobody if answer == b"u" else (
            self._become_nobody)

    def prepare(self, spec: FunctionSpec, cache_dir: Path | None) -> LinuxArtifact:
        """Check ``spec.binary`` (see :mod:`.elf`) and make sure the launcher exists."""
        executable = check_static_executable(spec.binary)
        self._launcher_path()
        self._fast_path(self._become_nobody)  # built now, so a missing compiler shows here
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
        block = argument_block(fs.argv, fs.environ)
        for attempt in range(LAUNCH_ATTEMPTS):
            # A launcher killed from outside just before it was taken can still look alive;
            # it is noticed when its parked call never arrives. Only then is a fresh one
            # tried: the program has not started, so nothing of it is repeated.
            launcher = self._take_launcher() if attempt == 0 else self._start_launcher()
            try:
                exit_code, supervisor, started, finished = self._run(
                    launcher, artifact, fs, limits=limits, sandbox_limits=sandbox_limits,
                    block=block)
            except _LauncherLost:
                continue
            outputs = fs.collect_outputs()
            done = time.perf_counter()
            timings = {
                "sandbox_start": (started - began) * 1e6,
                "run": (finished - started) * 1e6,
                "output": (done - finished) * 1e6,
                "emulated_calls": float(supervisor.calls),
            }
            stderr = fs.stderr_tail(STDERR_TAIL_BYTES) if exit_code else b""
            return InvocationResult(outputs, exit_code, timings, stderr)
        raise EngineUnavailable(
            f"the linux engine's launchers died before starting the program, "
            f"{LAUNCH_ATTEMPTS} times in a row", engine="linux")

    def _run(self, launcher: Launcher, artifact: LinuxArtifact, fs: SetFileSystem, *,
             limits: Limits, sandbox_limits: SandboxLimits,
             block: tuple[bytes, list[int], list[int]]) -> tuple[int, Supervisor, float, float]:
        """Start the program in ``launcher`` and supervise it to the end (see the module docstring).

        Returns the exit code, the supervisor and when the program started and ended;
        raises the run's typed outcome, or :class:`_LauncherLost`.
        """
        supervisor: Supervisor | None = None
        try:
            try:
                parked_call = launcher.arm(limits.deadline)  # usually armed already
                launcher.prepare_program(*block, sandbox_limits.address_space,
                                         sandbox_limits.cpu_seconds)
            except (ProcessLookupError, LauncherGone):
                raise _LauncherLost from None
            assert launcher.listener is not None
            if launcher.bound_to is artifact:
                self.bound_ahead += 1
            supervisor = Supervisor(launcher.pid, launcher.pidfd, launcher.listener, fs,
                                    sandbox_limits, executable_fd=artifact.fd,
                                    memfds=self.memfds,
                                    executable_installed=launcher.bound_to is artifact,
                                    proc_files=launcher.take_proc_files(),
                                    on_exec=functools.partial(self._exec_started, artifact),
                                    fast_path=self._fast_path(launcher.as_nobody))
            started = time.perf_counter()
            watch = shared_watchdog(self._cache_dir, self.name).kill_at(limits.deadline,
                                                                        launcher.pidfd)
            try:
                supervisor.run(limits.deadline, first=parked_call)
            finally:  # before _end closes the pidfd
                if watch.cancel():
                    supervisor.verdict.timed_out = True
            if supervisor.exit_status is not None:  # exit_group: the kernel is ending it
                status, step, error = supervisor.exit_status << 8, 0, 0
            else:  # it has ended some other way, or is being killed
                # Lost before its exec ran: it still has the launcher's name, made no call
                # after the exec was let run, and a SIGKILL came from outside. A program can
                # take that name itself (PR_SET_NAME), but not the other two.
                maybe_lost = (supervisor.calls <= 1
                              and launcher.never_ran_a_program(self._launcher_path()))
                _, status = os.waitpid(launcher.pid, 0)
                killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
                started_program = supervisor.program_started and not (maybe_lost and killed)
                step, error = launcher.failure()
                if not (started_program or step or supervisor.verdict.timed_out):
                    raise _LauncherLost
            finished = time.perf_counter()
            ending = Ending(
                status,
                supervisor.verdict,
                LAUNCH_STEPS.get(step, f"step {step}") if step else None,
                error,
            )
            return judge(artifact.spec.name, ending, fs, limits), supervisor, started, finished
        finally:
            if supervisor is not None and supervisor.exit_status is not None:
                self.pool.clean_up_later(functools.partial(_end, launcher, supervisor))
            else:
                _end(launcher, supervisor)

    def _exec_started(self, artifact: LinuxArtifact) -> None:
        # The kernel is loading the program; the pool thread has the CPU time meanwhile.
        self._last_started = artifact
        self.pool.refill_soon()

    def _get_ready(self, launcher: Launcher) -> None:
        """On the pool thread: arm the next launcher and bind it to the function started last
        (a guess that it runs again), so neither is on that invocation's path."""
        artifact = self._last_started
        if artifact is not None and launcher.bound_to is not artifact and launcher.try_arm():
            launcher.bind(artifact.fd, artifact)
            launcher.open_proc_files()

    def _take_launcher(self) -> Launcher:
        """A launcher from the pool (a fresh one if the waiting one died)."""
        launcher = self.pool.take()
        if launcher.alive():
            return launcher
        launcher.discard()  # killed while it waited (e.g. by an administrator)
        return self._start_launcher()

    def statistics(self) -> EngineStatistics:
        """Counters since the engine started."""
        return self._counters.snapshot()

    def close(self) -> None:
        """Refuse further invocations, end the warm launchers, finish clean-ups. Idempotent."""
        self._closed = True
        self.pool.close()
        if self._zygote is not None:
            self._zygote.close()
        self.memfds.close()


def _map_nobody(pid: int) -> bool:
    """Map uid and gid 65534 (only) into the user namespace of process ``pid``.

    Needs ``CAP_SETUID``/``CAP_SETGID`` on the host (root); without them the
    namespace stays unmapped and its launchers keep the worker's identity.
    """
    try:
        for table in ("uid_map", "gid_map"):
            with open(f"/proc/{pid}/{table}", "w", encoding="ascii") as ids:
                ids.write(f"{NOBODY} {NOBODY} 1\n")
    except OSError as exc:
        log.info("launchers keep the worker's identity: cannot map uid/gid %d into the "
                 "zygote's user namespace (%s)", NOBODY, exc)
        return False
    return True


class _LauncherLost(Exception):
    """The launcher died before the program started (killed from outside)."""


def _end(launcher: Launcher, supervisor: Supervisor | None) -> None:
    """Reap the process and release its descriptors; in this order, so no file is recycled
    while the program could still read it."""
    launcher.discard()
    if supervisor is not None:
        supervisor.close()


__all__ = ["LinuxArtifact", "LinuxEngine"]
