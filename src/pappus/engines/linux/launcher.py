"""The worker's side of ``launcher.c``: parameters, starting and arming it, starting the program.

A launcher is started ahead of time (in the warm pool's thread):
:func:`start_launcher` writes its parameter memfd (header and the seccomp
program) and starts it, without waiting for it. The launcher sets itself up
and parks in its notified ``execveat`` on its own. It is then *armed*
(:meth:`Launcher.arm`, :meth:`Launcher.try_arm`: its listener copied with
``pidfd_getfd`` and the parked call received) and usually also *bound*
(:meth:`Launcher.bind`: a function's executable installed as the descriptor
the call names), both on the pool thread before an invocation takes it; a
launcher taken too early is waited for ("armed" on its socket, then the
listener). The invocation then calls :meth:`Launcher.prepare_program` (argv,
envp, ``RLIMIT_AS``, ``RLIMIT_CPU``) and the supervisor answers the parked
call: it installs the executable unless the launcher holds it already and
lets the exec run. See ``launcher.c`` for the other side.
"""

from __future__ import annotations

import contextlib
import os
import resource
import select
import stat
import struct
import time
from dataclasses import dataclass

from pappus.engines.linux.notify import Listener, Notification, pidfd_getfd
from pappus.engines.process.pool import Runner, Zygote, start_runner
from pappus.errors import EngineUnavailable, InvocationTimeout, TooLarge

PARAMS_MAGIC = 0x324E4C5050415050  # "PPAPPLN2"
HEADER = struct.Struct("<10Qq")  # see struct params in launcher.c
BASE_OFFSET = 8 * 8
FAILURE_OFFSET = 9 * 8
PARAMS_FD = 0
LISTENER_FD = 0
EXECUTABLE_FD = 1
SYS_EXECVEAT = 322
TASK_COMM_BYTES = 15
"""The kernel keeps this much of an executable's name as the process's ``comm``."""
DESCRIPTOR_LIMIT = 1024  # the real RLIMIT_NOFILE: virtual below 512, real input files above
MAX_ARGUMENT_BYTES = 128 << 10
"""argv and environ strings together, NULs included."""
MAX_ARGUMENTS = MAX_ARGUMENT_BYTES // 2
"""argv words and environ entries, each."""
PARAMS_PAGE = 4096
ARMED_TIMEOUT_S = 5.0
LAUNCH_STEPS = {
    1: "reading its parameters",
    3: "setting limits",
    4: "dropping privileges",  # identity, capabilities, no_new_privs
    5: "signalling readiness",
    6: "installing the seccomp filter",
    7: "executing the program",
}
"""The launcher's failure steps (``check(..., step)`` in launcher.c)."""


@dataclass(frozen=True, slots=True)
class Layout:
    """Where things are in the parameter memfd, for a filter of ``filter_bytes``."""

    filter_bytes: int

    @property
    def argv_offset(self) -> int:
        return _round_up(HEADER.size + self.filter_bytes, 8)

    @property
    def envp_offset(self) -> int:
        return self.argv_offset + (MAX_ARGUMENTS + 1) * 8

    @property
    def strings_offset(self) -> int:
        return self.envp_offset + (MAX_ARGUMENTS + 1) * 8

    @property
    def size(self) -> int:
        return self.strings_offset + MAX_ARGUMENT_BYTES


def argument_block(argv: list[bytes], environ: list[bytes]) -> tuple[bytes, list[int], list[int]]:
    """The strings of ``argv`` and ``environ`` and each one's offset in them.

    Raises :class:`~pappus.errors.TooLarge` past the launcher's room
    (:data:`MAX_ARGUMENT_BYTES`, :data:`MAX_ARGUMENTS`). An embedded NUL ends
    a word, as it would for ``execve``.
    """
    if not argv:
        argv = [b"function"]
    if len(argv) > MAX_ARGUMENTS or len(environ) > MAX_ARGUMENTS:
        raise TooLarge(f"{len(argv)} arguments and {len(environ)} environment entries; at most "
                       f"{MAX_ARGUMENTS} of each are supported by the linux engine",
                       limit=MAX_ARGUMENTS)
    words = [word.split(b"\0", 1)[0] + b"\0" for word in (*argv, *environ)]
    total = sum(len(word) for word in words)
    if total > MAX_ARGUMENT_BYTES:
        raise TooLarge(f"argv and environ take {total} bytes; at most {MAX_ARGUMENT_BYTES} "
                       "are supported by the linux engine", limit=MAX_ARGUMENT_BYTES)
    offsets: list[int] = []
    position = 0
    for word in words:
        offsets.append(position)
        position += len(word)
    return b"".join(words), offsets[: len(argv)], offsets[len(argv):]


class LauncherGone(Exception):
    """The launcher ended (killed from outside) before its program could start."""


class Launcher:
    """A started launcher; once parked in its notified ``execveat``, it has a listener (owned).

    Once armed (:meth:`arm`), the parked call has been received
    (:attr:`parked_call`); once bound (:meth:`bind`), a function's executable
    is installed as the descriptor that call names, so a taken launcher may
    already be ready to run that function.
    """

    def __init__(self, runner: Runner, params_fd: int, layout: Layout) -> None:
        self.runner = runner
        self.params_fd = params_fd
        self.layout = layout
        self.listener: Listener | None = None
        self.parked_call: Notification | None = None
        self.bound_to: object | None = None
        """What :meth:`bind` installed (compared by identity), or None."""
        self.as_nobody = False
        """Whether it was asked to switch to uid/gid 65534 (see :func:`start_launcher`)."""
        self.proc_files: tuple[int, int] | None = None
        """Its ``/proc/<pid>/stat`` and ``statm``, once :meth:`open_proc_files` opened them."""
        self.base = 0

    def __repr__(self) -> str:
        state = ("bound" if self.bound_to is not None else "armed" if self.parked_call
                 else "parked" if self.listener else "starting")
        return f"<Launcher pid={self.runner.pid} {state}>"

    @property
    def pid(self) -> int:
        return self.runner.pid

    @property
    def pidfd(self) -> int:
        return self.runner.pidfd

    def alive(self) -> bool:
        """False if it died while it waited (a failed set-up, or killed by an administrator)."""
        return not _readable_now(self.runner.pidfd)

    def wait_until_parked(self, deadline: float) -> Listener:
        """Its listener, once the launcher is parked (usually at once).

        Raises :class:`~pappus.errors.InvocationTimeout` at ``deadline`` (monotonic), or
        :class:`~pappus.errors.EngineUnavailable` naming the set-up step that failed.
        """
        if self.listener is not None:
            return self.listener
        give_up = min(deadline, time.monotonic() + ARMED_TIMEOUT_S)
        fd = self._copy_listener()
        if fd is None:  # taken before it got that far: "armed" comes just before the filter
            self.runner.channel.settimeout(max(0.001, give_up - time.monotonic()))
            try:
                armed = self.runner.channel.recv(1)
            except TimeoutError:
                armed = b""
            while armed and (fd := self._copy_listener()) is None:
                if time.monotonic() > give_up or not self.alive():
                    break
                os.sched_yield()  # the seccomp() call is microseconds after "armed"
        if fd is not None:
            listener = Listener(fd)
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            if poller.poll(max(0, int((give_up - time.monotonic()) * 1000))):
                self.listener = listener
                (self.base,) = struct.unpack("<Q", os.pread(self.params_fd, 8, BASE_OFFSET))
                return listener
            listener.close()
        if time.monotonic() >= deadline and self.alive():
            raise InvocationTimeout("the sandbox did not start before the deadline")
        raise self._failed()

    def arm(self, deadline: float) -> Notification:
        """Wait until parked (:meth:`wait_until_parked`) and receive the parked call.

        Raises :class:`LauncherGone` if the launcher died while it was parked.
        """
        if self.parked_call is None:
            listener = self.wait_until_parked(deadline)
            self._receive_parked_call(listener)
        assert self.parked_call is not None
        return self.parked_call

    def try_arm(self) -> bool:
        """Arm it if it is parked already, without waiting; whether it is armed now."""
        if self.parked_call is not None:
            return True
        if self.listener is None:
            fd = self._copy_listener()
            if fd is None:
                return False
            if not _readable_now(fd):
                # Between seccomp() and execveat(): not kept, as a receive on it could
                # then wait forever should the launcher die before it parks.
                os.close(fd)
                return False
            self.listener = Listener(fd)
            (self.base,) = struct.unpack("<Q", os.pread(self.params_fd, 8, BASE_OFFSET))
        self._receive_parked_call(self.listener)  # queued (ENOENT if it died since)
        return True

    def _receive_parked_call(self, listener: Listener) -> None:
        call = listener.receive()
        if call is None:
            raise LauncherGone(f"launcher {self.pid} ended while it was parked")
        if call.nr != SYS_EXECVEAT or call.pid != self.pid:
            raise self._failed()  # not where a launcher parks: never used
        self.parked_call = call

    def bind(self, executable_fd: int, owner: object) -> None:
        """Install ``executable_fd`` as the descriptor the parked call executes (armed only).

        Raises ``ProcessLookupError`` if the launcher has died meanwhile.
        """
        assert self.listener is not None and self.parked_call is not None
        self.bound_to = None
        self.listener.add_descriptor(self.parked_call, executable_fd, EXECUTABLE_FD)
        self.bound_to = owner

    def open_proc_files(self) -> None:
        """Open ``/proc/<pid>/stat`` and ``statm`` ahead (the supervisor reads them; see
        :meth:`take_proc_files`). A read describes what the process runs at that time."""
        if self.proc_files is None:
            stat = os.open(f"/proc/{self.pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
            try:
                statm = os.open(f"/proc/{self.pid}/statm", os.O_RDONLY | os.O_CLOEXEC)
            except BaseException:
                os.close(stat)
                raise
            self.proc_files = (stat, statm)

    def take_proc_files(self) -> tuple[int, int] | None:
        """The descriptors :meth:`open_proc_files` opened (the caller's from now on), if any."""
        files, self.proc_files = self.proc_files, None
        return files

    def never_ran_a_program(self, launcher_path: str) -> bool:
        """Whether the process, now ended, was still the launcher built at ``launcher_path``.

        Its name (``comm``) changes with the exec, so one still named after the
        launcher was killed before its program started, however close to it
        (a reply that lets the exec run can still find a launcher that a
        ``SIGKILL`` has not yet woken). A program can take that name itself
        (``PR_SET_NAME``), so the name alone proves nothing: the engine also
        requires that no call came after the exec and that a ``SIGKILL`` ended it.
        Call it before the process is reaped.
        """
        with contextlib.suppress(ChildProcessError):
            os.waitid(os.P_PIDFD, self.pidfd, os.WEXITED | os.WNOWAIT)
        try:
            with open(f"/proc/{self.pid}/stat", "rb") as stat:
                record = stat.read()
        except OSError:
            return False
        comm = record[record.find(b"(") + 1:record.rfind(b")")]
        return comm == os.fsencode(os.path.basename(launcher_path))[:TASK_COMM_BYTES]

    def _copy_listener(self) -> int | None:
        try:
            fd = pidfd_getfd(self.runner.pidfd, LISTENER_FD)
        except OSError:
            return None  # not there yet (or the process is gone)
        if stat.S_IFMT(os.fstat(fd).st_mode) != 0:  # anonymous inodes have no file type
            os.close(fd)  # not installed yet: descriptor 0 is still the parameter memfd
            return None
        return fd

    def _failed(self) -> EngineUnavailable:
        self.runner.kill()
        with contextlib.suppress(ChildProcessError):
            os.waitid(os.P_PIDFD, self.runner.pidfd, os.WEXITED | os.WNOWAIT)
        step, error = self.failure()
        if step:
            reason = (f"failed {LAUNCH_STEPS.get(step, f'at step {step}')}: "
                      f"{os.strerror(error) if error else 'invalid parameters'}")
        else:
            reason = f"did not park within {ARMED_TIMEOUT_S:.0f} s"
        return EngineUnavailable(f"the linux engine's launcher {reason}", engine="linux")

    def prepare_program(self, strings: bytes, argv: list[int], envp: list[int],
                        address_space: int, cpu_seconds: int) -> None:
        """Write argv and envp (see :func:`argument_block`) and set the two invocation limits."""
        layout = self.layout
        at = self.base + layout.strings_offset
        os.pwrite(self.params_fd, strings, layout.strings_offset)
        os.pwrite(self.params_fd, struct.pack(f"<{len(argv) + 1}Q", *(at + o for o in argv), 0),
                  layout.argv_offset)
        os.pwrite(self.params_fd, struct.pack(f"<{len(envp) + 1}Q", *(at + o for o in envp), 0),
                  layout.envp_offset)
        resource.prlimit(self.pid, resource.RLIMIT_AS, (address_space, address_space))
        resource.prlimit(self.pid, resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))

    def failure(self) -> tuple[int, int]:
        """The step (0: none) and errno the launcher recorded when it failed."""
        step, error = struct.unpack("<qq", os.pread(self.params_fd, 16, FAILURE_OFFSET))
        return step, error

    def discard(self) -> None:
        """Close the listener, end the process if it is alive, reap it, close our descriptors."""
        if self.listener is not None:
            self.listener.close()
        for fd in self.take_proc_files() or ():
            os.close(fd)
        self.runner.discard()
        if self.params_fd >= 0:
            os.close(self.params_fd)
            self.params_fd = -1


CAP_SYS_RESOURCE = 24


def can_become_nobody() -> bool:
    """Whether launchers on the host can switch to uid 65534 and still have their limits set.

    Needs root (to switch) and ``CAP_SYS_RESOURCE`` (``prlimit`` on a process of
    another user); some container runtimes give root everything but the latter.
    Clones of the zygote do not need it: they switch inside its user namespace,
    which the worker owns (see ``LinuxEngine._start_launcher``).
    """
    if os.geteuid() != 0:
        return False
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_SYS_RESOURCE & 1)
    return False


def params_memfd(program: bytes, stack_bytes: int, become_nobody: bool) -> tuple[int, Layout]:
    """A parameter memfd for one launcher: header and seccomp program (the rest is sparse)."""
    layout = Layout(len(program))
    header = HEADER.pack(PARAMS_MAGIC, layout.size, DESCRIPTOR_LIMIT, stack_bytes,
                         len(program) // 8, layout.argv_offset, layout.envp_offset,
                         int(become_nobody), 0, 0, 0)
    fd = os.memfd_create("pappus-launch", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, layout.size)
        os.pwrite(fd, header + program, 0)
        # The first page of argv, envp and their strings, allocated now (off the invocation's
        # path): writing into a hole of a memfd costs a page allocation each time.
        for offset in (layout.argv_offset, layout.envp_offset, layout.strings_offset):
            os.posix_fallocate(fd, offset - offset % PARAMS_PAGE, PARAMS_PAGE)
    except BaseException:
        os.close(fd)
        raise
    return fd, layout


def start_launcher(path: str, program: bytes, stack_bytes: int,
                   become_nobody: bool, zygote: Zygote | None = None) -> Launcher:
    """Start a launcher (it sets itself up and parks; see the module docstring).

    With ``zygote`` (made with ``passed_fd=PARAMS_FD``), the launcher is a clone of
    it; otherwise it is ``posix_spawn``-ed.
    """
    params_fd, layout = params_memfd(program, stack_bytes, become_nobody)
    try:
        if zygote is not None:
            runner = zygote.start_runner(params_fd)
        else:
            runner = start_runner(path, {PARAMS_FD: params_fd})
    except BaseException:
        os.close(params_fd)
        raise
    launcher = Launcher(runner, params_fd, layout)
    launcher.as_nobody = become_nobody
    return launcher


def _round_up(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple


def _readable_now(fd: int) -> bool:
    """Whether ``fd`` is readable (for a pidfd: the process ended), without waiting.

    ``poll``, not ``select``: select refuses descriptors from 1024 up, which a
    worker with many connections or registered functions reaches.
    """
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))
