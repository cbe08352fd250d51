"""The ``process`` engine: Dandelion-SDK ELF functions in a fresh, seccomp-confined process.

* **Preparation** (:meth:`ProcessEngine.prepare`): validate the ELF
  (:mod:`.elf`) and keep its static image as bytes; build the runner once
  (:mod:`.runner`).
* **Invocation**: lay the inputs out in a new context (:mod:`.layout`) held
  by a memfd; write the runner's parameters (segment protections, limits)
  into the context's private first 64 KiB; hand the memfd to a runner cloned
  ahead of time by a zygote that was ``posix_spawn``-ed with an empty
  environment (:mod:`.clone_pool`, :mod:`.pool`), used for this one
  invocation only. The server is never forked, so nothing of its memory
  reaches the function; the runner maps only the context.
* **Filter**: the seccomp program generated from :mod:`.policy` for the
  built runner's layout is given to the zygote once (descriptor 5), which
  installs it before it clones any runner: each runner inherits it instead
  of installing it on the invocation's path (~20 µs each).
* **Deadline**: the worker's native deadline thread
  (:mod:`pappus.engines.deadlines`) kills the process (``SIGKILL`` by pidfd)
  at the deadline — no cooperation needed, and no wait for the GIL, which a
  Python timer would need. Whoever waits for the run (the dispatcher's event
  loop via :meth:`ProcessEngine.start`, or :meth:`ProcessEngine.invoke`) also
  kills it once it sees the deadline pass, and ``RLIMIT_CPU`` (deadline + 1 s)
  is a third, independent bound.
* **Memory**: the context is the function's only writable memory besides the
  runner's few pages; ``mmap``/``brk`` are denied, so the context size (the
  memory bound, rounded up to 1 MiB) bounds it.
* **Outcomes**: SIGSYS from the filter → ``forbidden_syscall`` (number and
  name); a fault or other signal → ``crash`` (signal, address, ``rip``); the
  deadline or RLIMIT_CPU → ``timeout``; malformed output descriptors →
  ``bad_output``. The function's ``exit_code`` is returned in the result,
  where the dispatcher turns a non-zero code into ``function_error``
  (Dandelion ignores it); the SDK's out-of-memory code 259 is
  ``out_of_memory``.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from pappus.engines.base import (
    Artifact,
    Engine,
    EngineStatistics,
    FunctionSpec,
    InvocationCounters,
    InvocationResult,
    Limits,
    PendingRun,
)
from pappus.engines.deadlines import Watch, shared_watchdog
from pappus.engines.native_build import default_cache_dir
from pappus.engines.process import layout
from pappus.engines.process.clone_pool import ClonePool
from pappus.engines.process.elf import FUNCTION_BASE, FunctionImage, load_image
from pappus.engines.process.outcome import REPORT_STATUS, RunnerExit, classify_exit
from pappus.engines.process.policy import compile_filter, filter_bytes
from pappus.engines.process.pool import Runner, Zygote
from pappus.engines.process.runner import ensure_runner, runner_layout
from pappus.errors import InvalidBinary, OutOfMemory, SandboxError
from pappus.model import DataSet

PARAMS = struct.Struct("<7Q")
SEGMENT = struct.Struct("<3Q")
MAX_SEGMENTS = 32
MAX_FILTER = 6000
PARAMS_MAGIC = 0x3252554E52505050  # "PPPRNUR2"
FILTER_FD = 5
"""Where the runner and its zygote read the seccomp program when they start."""
SDK_EXIT_OUT_OF_MEMORY = 259
PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4
MERGE_GAP_BYTES = 16 << 10
RETIRE_AT_MOST_BYTES = 1 << 20
"""Contexts holding at most this much memory are closed later (see :class:`_Retired`)."""
RETIRE_AT_MOST_COUNT = 12
DEFAULT_WARM_RUNNERS = 2
"""Runners kept started ahead of time (one per compute slot on a 2-core machine)."""


class ProcessArtifact(Artifact):
    """A validated function image and the parts of its runner parameters fixed at registration."""

    def __init__(self, spec: FunctionSpec, image: FunctionImage) -> None:
        self.spec = spec
        self.image = image
        self.static = layout.image_bytes(image)
        self.segment_count = len(image.segments)
        segment_table = b"".join(
            SEGMENT.pack(start, end - start, _protection(s.readable, s.writable, s.executable))
            for s in image.segments for start, end in [s.page_range])
        padding = bytes((MAX_SEGMENTS - self.segment_count) * SEGMENT.size)
        self.params_tail = segment_table + padding
        """Everything of the runner parameters after the header: fixed at registration."""

    def __repr__(self) -> str:
        return (f"<ProcessArtifact {self.spec.name!r} image={self.image.end - FUNCTION_BASE} "
                f"bytes entry={self.image.entry:#x}>")


def _protection(readable: bool, writable: bool, executable: bool) -> int:
    return (PROT_READ if readable else 0) | (PROT_WRITE if writable else 0) | (
        PROT_EXEC if executable else 0)


class ProcessEngine(Engine):
    """Runs ELF functions built for Dandelion's native ABI; see the module docstring."""

    name = "process"

    def __init__(self, runner_dir: Path | None = None, *,
                 warm_runners: int = DEFAULT_WARM_RUNNERS) -> None:
        self._runner_dir = runner_dir or default_cache_dir()
        self._runner: str | None = None
        self._warm_runners = warm_runners
        self._pool: ClonePool | None = None
        self._pool_lock = threading.Lock()
        self._filter_fd = -1
        self._closed = False
        self._counters = InvocationCounters(self.name)
        self._retired = _Retired()

    def __repr__(self) -> str:
        return f"<ProcessEngine {self._counters!r} pool={self._pool!r}>"

    def _runner_path(self) -> str:
        if self._runner is None:
            self._runner = str(ensure_runner(self._runner_dir))
        return self._runner

    @property
    def pool(self) -> ClonePool:
        """The warm runners (made on first use: it needs the runner built)."""
        with self._pool_lock:
            if self._pool is None:
                path = self._runner_path()
                self._filter_fd = filter_memfd(path)
                self._pool = ClonePool(Zygote(path, descriptors={FILTER_FD: self._filter_fd}),
                                       self._warm_runners)
            return self._pool

    @property
    def zygote_pid(self) -> int | None:
        """The process id of the zygote that clones runners, once one runs."""
        return self._pool.zygote.pid if self._pool is not None else None

    def prepare(self, spec: FunctionSpec, cache_dir: Path | None) -> ProcessArtifact:
        """Validate ``spec.binary`` (see :mod:`.elf`); make sure the runner exists."""
        image = load_image(spec.binary)
        if len(image.segments) > MAX_SEGMENTS:
            raise InvalidBinary(f"{len(image.segments)} loadable segments; at most "
                                f"{MAX_SEGMENTS} are supported", engine="process")
        if spec.context_size is not None:
            size = layout.context_size_for(spec.context_size)
            if image.end + layout.MIN_FREE_BYTES + layout.HEAP_END_OFFSET > size:
                raise InvalidBinary(f"the image ends at {image.end:#x}, too close to the end of "
                                    f"its {size}-byte context", engine="process")
        self.pool.refill()  # builds the runner if needed; the first invocation finds one ready
        self._counters.count_prepared()
        return ProcessArtifact(spec, image)

    startable = True

    def invoke(self, artifact: Artifact, inputs: Sequence[DataSet | None],
               limits: Limits) -> InvocationResult:
        """Run the function once in a fresh process; see the module docstring."""
        pending = self.start(artifact, inputs, limits)
        try:
            pending.wait(limits.deadline)
        except BaseException:
            pending.stop()
            with contextlib.suppress(Exception):
                pending.finish()
            raise
        return pending.finish()

    def start(self, artifact: Artifact, inputs: Sequence[DataSet | None],
              limits: Limits) -> _PendingProcess:
        """Build the context and hand it to a started runner; the process then runs alone."""
        if not isinstance(artifact, ProcessArtifact):
            raise TypeError(f"not a process artifact: {artifact!r}")
        if self._closed:
            raise RuntimeError("the process engine is closed")
        try:
            return self._start(artifact, inputs, limits)
        except SandboxError:
            self._counters.count_failure()
            raise

    def _start(self, artifact: ProcessArtifact, inputs: Sequence[DataSet | None],
               limits: Limits) -> _PendingProcess:
        started = time.perf_counter()
        spec = artifact.spec
        size = layout.bounded_context_size(spec.name, spec.context_size, limits.memory_bytes)
        context = layout.build_context(artifact.image, artifact.static, inputs,
                                       input_names=spec.input_sets,
                                       output_names=spec.output_sets, size=size)
        memfd = _context_memfd(self._params(artifact, context, limits), context)
        watchdog = shared_watchdog(self._runner_dir, self.name)
        try:
            runner = self._hand_over(memfd)
        except BaseException:
            os.close(memfd)
            raise
        try:  # the function runs from here; its pidfd stays open until the watch is cancelled
            watch = watchdog.kill_at(limits.deadline, runner.pidfd)
        except BaseException:  # no deadline would hold: the function must not run
            runner.discard()
            os.close(memfd)
            raise
        self._retired.close_all()  # while the function runs, not on anyone's path
        return _PendingProcess(self._counters, artifact, limits=limits, context=context,
                               memfd=memfd, runner=runner, watch=watch, started=started,
                               after_run=self.pool.refill, retire=self._retired.retire)

    def _hand_over(self, memfd: int) -> Runner:
        """Give the context to a started runner (a fresh one if a waiting one died)."""
        pool = self.pool
        runner = pool.take()
        try:
            socket.send_fds(runner.channel, [b"c"], [memfd])
        except OSError:
            runner.discard()  # killed while it waited (e.g. by an administrator)
            runner = pool.zygote.start_runner()
            socket.send_fds(runner.channel, [b"c"], [memfd])
        return runner

    def _params(self, artifact: ProcessArtifact, context: layout.Context, limits: Limits) -> bytes:
        cpu_seconds = max(1, math.ceil(limits.remaining()) + 1)
        header = PARAMS.pack(PARAMS_MAGIC, context.size, artifact.image.entry,
                             context.size - layout.STACK_OFFSET, cpu_seconds,
                             context.size - layout.STACK_OFFSET, artifact.segment_count)
        return header + artifact.params_tail

    def statistics(self) -> EngineStatistics:
        """Counters since the engine started."""
        return self._counters.snapshot()

    def close(self) -> None:
        """Refuse further invocations and end the warm runners. Idempotent."""
        self._closed = True
        self._retired.close_all()
        with self._pool_lock:
            pool = self._pool
            filter_fd, self._filter_fd = self._filter_fd, -1
        if pool is not None:
            pool.close()
        if filter_fd >= 0:  # after the pool: a zygote replaced while closing still reads it
            os.close(filter_fd)


# No ``setsigdef``: exec already resets caught signals, the runner installs its own
# handlers for the faults it reports, and glibc would spend ~64 rt_sigaction calls on it.
# ``setsigmask=()`` unblocks everything (a blocked SIGXCPU would defeat RLIMIT_CPU's soft limit).


def runner_filter(path: str) -> bytes:
    """The seccomp program for the runner built at ``path`` (see :mod:`.policy`)."""
    program = filter_bytes(compile_filter(runner_layout(Path(path).read_bytes())))
    if len(program) // 8 > MAX_FILTER:
        raise RuntimeError("the seccomp program is longer than the runner accepts")
    return program


def filter_memfd(path: str) -> int:
    """A memfd holding :func:`runner_filter` of ``path``: the zygote's and spawned runners'
    descriptor :data:`FILTER_FD` (they read it when they start). The caller closes it."""
    program = runner_filter(path)
    fd = os.memfd_create("pappus-filter", os.MFD_CLOEXEC)
    try:
        os.pwrite(fd, program, 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _context_memfd(params: bytes, context: layout.Context) -> int:
    """A memfd holding the context: parameters at 0, the image and inputs at 0x10000."""
    fd = os.memfd_create("pappus-context", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, context.size)
        os.pwrite(fd, params, 0)
        gap = context.inputs_address - FUNCTION_BASE - len(context.image)
        if context.inputs and gap <= MERGE_GAP_BYTES:  # one write instead of two
            os.pwrite(fd, context.image + bytes(gap) + context.inputs, FUNCTION_BASE)
        else:
            os.pwrite(fd, context.image, FUNCTION_BASE)
            if context.inputs:
                os.pwrite(fd, context.inputs, context.inputs_address)
    except BaseException:
        os.close(fd)
        raise
    return fd


class _Retire(Protocol):
    def __call__(self, fd: int, *, small: bool = False) -> None: ...


class _Retired:
    """Descriptors of finished runs (context memfd, pidfd, socket), closed later, off the path.

    Closing a memfd frees the context's pages (~7 µs for a small one), a
    socket ~2 µs. They are kept until the next invocation has handed its
    context over and closed then, while that function runs. A memfd that
    holds more than :data:`RETIRE_AT_MOST_BYTES` is closed at once, so an idle
    engine never keeps much memory. Thread-safe.
    """

    def __init__(self) -> None:
        self._retired: list[int] = []
        self._lock = threading.Lock()

    def retire(self, fd: int, *, small: bool = False) -> None:
        """Close ``fd`` later, or now if it holds much memory (not known to be ``small``)."""
        if not small:
            try:
                small = os.fstat(fd).st_blocks * 512 <= RETIRE_AT_MOST_BYTES
            except OSError:
                small = False
        with self._lock:
            keep = small and len(self._retired) < RETIRE_AT_MOST_COUNT
            if keep:
                self._retired.append(fd)
        if not keep:
            os.close(fd)

    def close_all(self) -> None:
        """Close every descriptor retired so far."""
        with self._lock:
            retired, self._retired = self._retired, []
        for fd in retired:
            os.close(fd)


class _PendingProcess(PendingRun):
    """A runner that has its context and runs the function on its own."""

    def __init__(self, counters: InvocationCounters, artifact: ProcessArtifact, *,
                 limits: Limits, context: layout.Context, memfd: int, runner: Runner,
                 watch: Watch, started: float, after_run: Callable[[], None],
                 retire: _Retire) -> None:
        self._counters = counters
        self._after_run = after_run
        self._retire = retire
        self._artifact = artifact
        self._limits = limits
        self._context = context
        self._memfd = memfd
        self._runner = runner
        self._watch = watch
        self._started = started
        self._spawned = time.perf_counter()
        self._killed = False
        self._finished = False

    def __repr__(self) -> str:
        return f"<pending {self._artifact.spec.name!r} pid={self._runner.pid}>"

    def fileno(self) -> int:
        """The runner's pidfd: readable once the process has exited."""
        return self._runner.pidfd

    def wait(self, deadline: float) -> None:
        """Block until the process exits, stopping it at ``deadline``."""
        poller = select.poll()
        poller.register(self._runner.pidfd, select.POLLIN)
        while True:
            remaining_ms = max(0, math.ceil((deadline - time.monotonic()) * 1000))
            if poller.poll(remaining_ms):
                return
            if time.monotonic() >= deadline:
                self.stop()
                return

    def stop(self) -> None:
        """SIGKILL the process (the deadline passed); the run is then a ``timeout``."""
        if not self._finished:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._runner.pidfd, signal.SIGKILL)
            self._killed = True

    def finish(self) -> InvocationResult:
        """Reap the process, then classify its end and read the outputs (counted)."""
        if self._finished:
            raise RuntimeError(f"{self!r} is already finished")
        self._finished = True
        return self._counters.invoke(self._finish)

    def _finish(self) -> InvocationResult:
        spec, limits, context, memfd = (self._artifact.spec, self._limits, self._context,
                                        self._memfd)
        size = context.size
        try:
            try:
                _, status = os.waitpid(self._runner.pid, 0)
                # The next runner is cloned now, while we read the outputs: not beside the run.
                self._after_run()
            finally:
                if self._watch.cancel():  # first: the watchdog must be done with the pidfd
                    self._killed = True
                # After the exit (closing earlier costs a wake-up), and later (see _Retired).
                self._retire(self._runner.pidfd, small=True)
                self._retire(self._runner.channel.detach(), small=True)
            finished = time.perf_counter()

            def read(address: int, length: int) -> bytes:
                return os.pread(memfd, length, address)

            reported = os.WIFEXITED(status) and os.WEXITSTATUS(status) == REPORT_STATUS
            report = read(size - layout.STACK_OFFSET, layout.STACK_OFFSET) if reported else b""
            classify_exit(spec.name, RunnerExit(status, self._killed, report))
            system_data = layout.read_system_data(read, self._artifact.image)
            if system_data.exit_code == SDK_EXIT_OUT_OF_MEMORY:
                raise OutOfMemory(f"{spec.name!r} ran out of heap (SDK exit code 259) in its "
                                  f"{size}-byte context; raise the memory bound",
                                  memory_bytes=limits.memory_bytes)
            outputs = layout.read_outputs(read, context, system_data, spec.output_sets,
                                          limits.max_output_bytes)
            exit_code = system_data.exit_code
        finally:
            self._retire(memfd)
        done = time.perf_counter()
        return InvocationResult(outputs, exit_code, {
            "sandbox_start": (self._spawned - self._started) * 1e6,
            "run": (finished - self._spawned) * 1e6,
            "output": (done - finished) * 1e6,
        })
