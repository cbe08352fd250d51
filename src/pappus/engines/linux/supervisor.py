"""The supervisor: answers a sandboxed program's notified system calls until it ends.

One supervisor serves one invocation, in the invoking thread. With a
:class:`~.fastpath.FastPath`, a loop in C waits for the calls and answers
those that need no file system (fixed answers, memory checks that clearly
pass, ``exit_group``); every other call comes here. It receives each call
the filter sent to user space (:mod:`.notify`), looks up the policy table's
entry (:func:`~pappus.engines.linux.policy.entry_for`; the handlers are in
:mod:`.dispatch`) and

* ``emulate``: answers it from :class:`~pappus.engines.linux.files.LinuxFiles`
  or the fixed identity below, copying arguments out of the program first,
  so the kernel never acts on memory the program could still change;
* ``kill`` (and anything the table does not know, any other architecture or
  x32): kills the process and records the call, reported as
  ``forbidden_syscall`` with its name and number.

Three calls are let through to the kernel after a check. The launcher's own
``execveat`` — the first call, made before the program exists, from
memory only the launcher and the worker write — after installing the
function's executable as the descriptor it names; anonymous ``mmap`` and a
growing ``brk`` (no pointer the kernel would read), after checking them
against the memory bound, so that running out of memory is *seen*: the
program gets ``ENOMEM`` from ``mmap`` (``brk`` is refused by the kernel
itself, which checks the same bound as ``RLIMIT_AS`` and returns the old
break), and the run, if it then fails, ends as ``out_of_memory``.

The program sees itself as pid and tid 1 (``getpid``, ``gettid``,
``set_tid_address``). A signal it sends itself (``raise``, ``abort``,
``kill(getpid(), ...)``) is delivered by the supervisor through its pidfd
before the call is answered, so a fatal one ends the run as a crash with that
signal and a handler runs before the call returns; a signal aimed at anything
else kills the sandbox (``forbidden_syscall``). A ``poll`` that nothing can
satisfy sleeps out its timeout here, never past the invocation's deadline.

Nothing a program does reaches the supervisor as an exception: a bad
pointer is ``EFAULT``, a bad path ``ENOENT``/``EINVAL``/..., and a supervisor
bug on one call is logged and answered ``ENOSYS`` rather than crashing the worker.
"""

from __future__ import annotations

import contextlib
import errno as errno_codes
import logging
import math
import os
import resource as resources
import select
import signal
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from pappus.engines.linux import fastpath
from pappus.engines.linux.dispatch import handlers
from pappus.engines.linux.fastpath import IDENTITY_PID, IDENTITY_UID, FastPath
from pappus.engines.linux.files import VIRTUAL_LIMIT, LinuxError, LinuxFiles, linux_errno
from pappus.engines.linux.launcher import EXECUTABLE_FD
from pappus.engines.linux.memfd import MemfdRecycler
from pappus.engines.linux.notify import (
    Listener,
    MemoryFault,
    Notification,
    ProcessMemory,
    send_signal,
)
from pappus.engines.linux.paths import signed32
from pappus.engines.syscalls import AUDIT_ARCH_X86_64, X32_SYSCALL_BIT, syscall_name, syscall_number
from pappus.vfs import OutputLimitExceeded, SetFileSystem, VfsError

log = logging.getLogger(__name__)

RLIM_INFINITY = (1 << 64) - 1
RLIM_NLIMITS = 16
MAP_ANONYMOUS = 0x20
PAGE = 4096
MAX_SIGNAL = 64
UTSNAME = (b"Linux", b"pappus", b"6.1.0-pappus", b"#1 SMP pappus", b"x86_64", b"(none)")


class _Forbidden(Exception):
    """The call is killed and reported, as if the table had said ``kill``."""


class _Replied(Exception):
    """The handler has answered the call itself."""


class _DeadlineReached(Exception):
    """A wait reached the invocation's deadline: the run ends as a timeout."""


class LetKernelRun(Exception):
    """Answer by letting the kernel run the call as made (no pointer arguments).

    ``then`` is called once the call has been let through. ``last``: the call
    ends Python's part of this round, so with a fast path the call is let
    through by it, right before it waits for the next (``then`` runs first).
    """

    def __init__(self, then: Callable[[], None] = lambda: None, *, elsewhere: bool = False,
                 last: bool = False) -> None:
        super().__init__()
        self.then = then
        self.elsewhere = elsewhere
        self.last = last


@dataclass(slots=True)
class Verdict:
    """How the run ended, as the supervisor saw it."""

    forbidden: tuple[str, int, int] | None = None  # name, number, arch
    output_limit: int | None = None
    memory_refused: int | None = None  # bytes asked for when the bound was hit
    timed_out: bool = False
    raised: int | None = None
    """The last signal the program sent itself (a ``SIGKILL`` from ``kill(getpid(), 9)``
    is then the program's own doing, not the supervisor's)."""


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """What the program may use: bytes of address space, CPU seconds, stack bytes."""

    address_space: int
    cpu_seconds: int
    stack: int


class Supervisor:
    """Answers the notified calls of one sandboxed process (see the module docstring)."""

    def __init__(
        self,
        pid: int,
        pidfd: int,
        listener: Listener,
        fs: SetFileSystem,
        limits: SandboxLimits,
        *,
        executable_fd: int,
        memfds: MemfdRecycler,
        executable_installed: bool = False,
        proc_files: tuple[int, int] | None = None,
        on_exec: Callable[[], None] = lambda: None,
        fast_path: FastPath | None = None,
    ) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.listener = listener
        self.fs = fs
        self.limits = limits
        self.verdict = Verdict()
        self.calls = 0
        # /proc/<pid>/stat and statm (ours to close), opened ahead if the caller could:
        # they describe whatever the process runs at the time of each read.
        self._stat: int | None = proc_files[0] if proc_files is not None else None
        self._statm: int | None = proc_files[1] if proc_files is not None else None
        self._current: Notification | None = None
        self._executable_fd = executable_fd
        self._executable_installed = executable_installed
        self._on_exec = on_exec
        self.program_started = False
        self.exit_status: int | None = None
        """The status passed to ``exit_group``, once the program called it."""
        self._deadline = math.inf
        self._interrupted: tuple[int, tuple[int, ...], int] | None = None
        self._heap_base: int | None = None
        self.files: LinuxFiles = LinuxFiles(fs, ProcessMemory(pid), self._install_descriptor,
                                            memfds)
        self._fast = fast_path
        # Fixed for the run: nothing can be created in the read-only root.
        self._root_names = b"".join(name.encode() + b"\0" for name in fs.root.entries)
        self._fast_state = (None if fast_path is None else
                            fast_path.state(pid, listener.fd, listener.sync_wake_up,
                                            limits.address_space, self._root_names))

    # -- resources --------------------------------------------------------------------------

    def _install_descriptor(self, source_fd: int, target_fd: int) -> None:
        assert self._current is not None
        self.listener.add_descriptor(self._current, source_fd, target_fd)

    def close(self) -> None:
        """Release the supervisor's descriptors; call it once the process is gone.

        The listener belongs to the launcher (:class:`~.launcher.Launcher`).
        """
        self.files.close_all()
        for fd in (self._stat, self._statm):
            if fd is not None:
                os.close(fd)
        self._stat = self._statm = None

    # -- the loop ---------------------------------------------------------------------------

    def run(self, deadline: float, first: Notification | None = None) -> None:
        """Serve calls until the process ends, or kill it at ``deadline`` (monotonic).

        ``first``: the launcher's parked call, if it was received already.
        """
        self._deadline = deadline
        if first is not None and not self._answer(first):
            return
        if self._fast is not None and self._fast_state is not None:
            self._run_fast(self._fast, self._fast_state, deadline)
            return
        poller = select.poll()
        poller.register(self.listener.fd, select.POLLIN)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:  # checked before every call: a busy program must stop too
                self.verdict.timed_out = True
                self.kill()
                return
            events = poller.poll(int(remaining * 1000) + 1)
            if not events:
                continue
            _, mask = events[0]
            if mask & select.POLLIN:
                notification = self.listener.receive()
                if notification is not None and not self._answer(notification):
                    return
            elif mask & (select.POLLHUP | select.POLLERR):
                return  # every task of the filter is gone

    def _run_fast(self, fast: FastPath, state: fastpath.ServeState, deadline: float) -> None:
        """:meth:`run`'s loop in C (:mod:`.fastpath`): it answers what needs no file system
        and hands every other call to :meth:`_answer`."""
        state.deadline_ns = int(min(deadline, 1e9) * 1e9)  # (a monotonic clock: decades)
        while True:
            # What Python may have learnt or opened since the last round, and back.
            state.statm = -1 if self._statm is None else self._statm
            state.stat = -1 if self._stat is None else self._stat
            state.heap_start = self._heap_base or 0
            state.python_only = self._interrupted is not None  # getpid/gettid must reset it
            outcome = fast.serve(state)
            self.calls += state.calls
            state.calls = 0
            self._heap_base = state.heap_start or None
            if outcome == fastpath.SERVE_CALL:
                if not self._answer(state.received()):
                    return
            elif outcome == fastpath.SERVE_EXITED:
                self.exit_status = state.exit_status
                return
            elif outcome == fastpath.SERVE_DEADLINE:
                self.verdict.timed_out = True
                self.kill()
                return
            elif outcome == fastpath.SERVE_GONE:
                return
            # SERVE_INTERRUPTED: a signal for this thread; Python's handlers run, then on

    def kill(self) -> None:
        """SIGKILL the process (it may already be gone)."""
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)

    def _answer(self, call: Notification) -> bool:
        """Answer one call; False when the process was killed (stop serving)."""
        self.calls += 1
        self._current = call
        if call.arch != AUDIT_ARCH_X86_64 or call.nr & X32_SYSCALL_BIT:
            return self._forbid(call)
        handler = handlers().get(call.nr)
        if handler is None:
            return self._forbid(call)
        if self._interrupted is not None and call.nr in _NEW_SIGNAL_CALL:
            # glibc's raise() asks for its tid and pid before every tgkill, kill(getpid(), ...)
            # for its pid: what follows is a new call, not a restart (see _signal_self)
            self._interrupted = None
        try:
            value = handler(self, call.args)
        except _Replied:
            return True
        except _Forbidden:
            return self._forbid(call)
        except _DeadlineReached:
            self.verdict.timed_out = True
            self.kill()
            return False
        except LetKernelRun as answer:
            if answer.last and self._fast_state is not None:
                self._fast_state.continue_id = call.id
                self._fast_state.continue_pending = True
                answer.then()
                return True
            if not self.listener.let_kernel_run(call, elsewhere=answer.elsewhere):
                return True  # the call is gone (the process is being killed)
            answer.then()
            return self.exit_status is None
        except ProcessLookupError:
            return False  # killed meanwhile (from outside, or at the deadline)
        except LinuxError as error:
            self.listener.reply(call, error=error.code)
            return True
        except VfsError as error:
            self.listener.reply(call, error=linux_errno(error))
            return True
        except MemoryFault:
            self.listener.reply(call, error=errno_codes.EFAULT)
            return True
        except OutputLimitExceeded as exc:
            self.verdict.output_limit = exc.limit
            self.kill()
            return False
        except Exception:  # a supervisor bug must not take the worker down
            log.exception("linux engine: emulating %s failed", syscall_name(call.nr))
            self.listener.reply(call, error=errno_codes.ENOSYS)
            return True
        self.listener.reply(call, value=value)
        return True

    def _forbid(self, call: Notification) -> bool:
        self.verdict.forbidden = (syscall_name(call.nr, call.arch), call.nr, call.arch)
        self.kill()
        return False

    # -- dispatch, generated from the policy table ---------------------------------------------

    # -- emulated calls that are not files -----------------------------------------------------

    def _close(self, fd: int) -> int:
        real = fd in self.files.real and fd >= VIRTUAL_LIMIT
        self.files.close(fd)
        if real:
            raise LetKernelRun  # the program's own copy of the memfd: the kernel closes it
        return 0

    def _umask(self, mask: int) -> int:
        old, self.files.umask = self.files.umask, mask & 0o777
        return old

    def _uname(self, buffer: int) -> int:
        self.files.memory.write(buffer, b"".join(field.ljust(65, b"\0") for field in UTSNAME))
        return 0

    def _prlimit(self, pid: int, resource: int, new: int, old: int) -> int:
        if pid not in (0, 1):
            raise LinuxError(errno_codes.ESRCH)
        if new:
            raise LinuxError(errno_codes.EPERM)  # the sandbox's limits are fixed
        if resource >= RLIM_NLIMITS:
            raise LinuxError(errno_codes.EINVAL)
        # What the native call (pid 0) reads: the process's real limits.
        soft, hard = resources.prlimit(self.pid, resource)
        if old:
            self.files.memory.write(old, struct.pack("<QQ", soft & RLIM_INFINITY,
                                                     hard & RLIM_INFINITY))
        return 0

    def _exit_group(self, status: int) -> int:
        # The run is over: every output call has been answered. Record the status so the
        # result need not wait for the kernel to tear the process down.
        self.exit_status = status & 0xFF
        raise LetKernelRun(elsewhere=True)  # its teardown need not delay us

    def _address_space_in_use(self) -> int:
        if self._statm is None:
            self._statm = os.open(f"/proc/{self.pid}/statm", os.O_RDONLY | os.O_CLOEXEC)
        return int(os.pread(self._statm, 64, 0).split()[0]) * PAGE

    def _sysinfo(self, buffer: int) -> int:
        total = self.limits.address_space
        free = max(0, total - self._address_space_in_use())
        record = struct.pack("<q3Q6QHHxxxxQQI", 0, 0, 0, 0, total, free, 0, 0, 0, 0, 1, 0, 0, 0, 1)
        self.files.memory.write(buffer, record.ljust(112, b"\0"))
        return 0

    def _mmap(self, length: int, flags: int) -> int:
        # The filter only notifies anonymous, private mappings without PROT_EXEC.
        if not flags & MAP_ANONYMOUS:
            raise LinuxError(errno_codes.EACCES)
        in_use = self._address_space_in_use()
        if in_use + length > self.limits.address_space:
            self.verdict.memory_refused = length
            raise LinuxError(errno_codes.ENOMEM)
        raise LetKernelRun

    def _execveat(self) -> int:
        if self.program_started or self.calls > 1:
            raise LinuxError(errno_codes.EPERM)  # one program per invocation
        # The parked launcher starting the program, before it exists.
        if not self._executable_installed:
            self._install_descriptor(self._executable_fd, EXECUTABLE_FD)
        # Let run by the fast path, if any, as it starts waiting: the exec is not delayed
        # by what this thread still does (the new program runs on this CPU).
        raise LetKernelRun(then=self._exec_started, last=True)

    def _exec_started(self) -> None:
        self.program_started = True
        self._heap_base = None  # the program's heap, not the launcher's
        self._on_exec()  # the exec takes a while: a good moment for background work

    # -- memory: the heap -----------------------------------------------------------------------

    def _brk(self, address: int) -> int:
        """A new break (``brk(0)``, the query, runs natively): see if the bound allows it.

        The kernel decides either way: past the bound it refuses, as ``RLIMIT_AS``
        is the same bound, and returns the old break — the exact value glibc keeps,
        which the supervisor could not know. Here the refusal is only *seen*, so the
        run is ``out_of_memory`` if the program then fails.
        """
        bound = self.limits.address_space // PAGE * PAGE
        in_use = self._address_space_in_use()
        target = _page_up(address)
        if in_use + target - _page_up(self._heap_start()) <= bound:
            raise LetKernelRun  # fits even if the heap were empty: no need to find its end
        growth = target - self._heap_end()
        if growth > 0 and in_use + growth > bound:
            self.verdict.memory_refused = growth
        raise LetKernelRun

    def _heap_start(self) -> int:
        """Where the heap starts (``start_brk``, field 47 of ``/proc/<pid>/stat``), read once."""
        if self._heap_base is None:
            if self._stat is None:
                self._stat = os.open(f"/proc/{self.pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
            fields = os.pread(self._stat, 4096, 0).rsplit(b")", 1)[1].split()
            self._heap_base = int(fields[47 - 3])
        return self._heap_base

    def _heap_end(self) -> int:
        """The current break, rounded up to a page: the end of the ``[heap]`` mapping."""
        end = _page_up(self._heap_start())  # no [heap] line: the break is still at the start
        with open(f"/proc/{self.pid}/maps", "rb") as maps:
            for line in maps:
                if line.rstrip().endswith(b"[heap]"):
                    end = max(end, int(line.split(b" ", 1)[0].split(b"-")[1], 16))
        return end

    # -- signals: only to itself --------------------------------------------------------------

    def _kill(self, pid: int, number: int) -> int:
        # The program is pid 1 (getpid), alone in its process group (0).
        return self._signal_self(signed32(pid) in (0, IDENTITY_PID), number)

    def _tkill(self, tid: int, number: int) -> int:
        if signed32(tid) <= 0:
            raise LinuxError(errno_codes.EINVAL)
        return self._signal_self(signed32(tid) == IDENTITY_PID, number)

    def _tgkill(self, tgid: int, tid: int, number: int) -> int:
        if signed32(tgid) <= 0 or signed32(tid) <= 0:
            raise LinuxError(errno_codes.EINVAL)
        return self._signal_self(signed32(tgid) == signed32(tid) == IDENTITY_PID, number)

    def _signal_self(self, to_itself: bool, raw_number: int) -> int:
        """Deliver signal ``raw_number`` to the program, then answer 0.

        Sent while the caller is still stopped, so that a fatal signal ends the
        run before the program can do anything else, and a handler runs before
        the call returns. The launcher installs the filter with
        ``SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV`` (Linux ≥ 5.19), so a received
        call's wait is interrupted by fatal signals only and the answer always
        arrives. On older kernels a handled signal may interrupt the wait first
        (the reply then finds no call: ``ENOENT``): the kernel runs the handler,
        then restarts the call (``SA_RESTART``) or returns ``EINTR``. The restart
        — the same call from the same place, with no ``getpid`` or ``gettid`` in
        between (glibc's ``raise`` makes both before each ``tgkill``) — is
        answered 0 without sending the signal again; there, a handler that asks
        for its pid may run twice, and after ``EINTR`` the same raw call repeated
        with neither in between is taken for the restart.
        """
        if not to_itself:
            raise _Forbidden  # another process: none exists for it to reach
        number = signed32(raw_number)
        if not 0 <= number <= MAX_SIGNAL:
            raise LinuxError(errno_codes.EINVAL)
        if number == 0:
            return 0  # a probe: the program exists
        call = self._current
        assert call is not None
        identity = _identity(call)
        if self._interrupted == identity:
            self._interrupted = None  # the restart of the call the signal interrupted
            return 0
        self._interrupted = None
        self.verdict.raised = number
        send_signal(self.pidfd, number, sender_pid=IDENTITY_PID, sender_uid=IDENTITY_UID)
        if not self.listener.reply(call, value=0):
            self._interrupted = identity
        raise _Replied

    # -- waiting --------------------------------------------------------------------------------

    def _poll(self, address: int, count: int, timeout_ms: int) -> int:
        ready = self.files.poll(address, count & 0xFFFF_FFFF)
        timeout = signed32(timeout_ms)
        if ready or timeout == 0:
            return ready
        self._wait(None if timeout < 0 else timeout / 1000)
        return 0

    def _ppoll(self, address: int, count: int, timeout_address: int, mask_address: int,
               mask_size: int) -> int:
        timeout = self.files.ppoll_timeout(timeout_address, mask_address, mask_size)
        ready = self.files.poll(address, count & 0xFFFF_FFFF)
        if ready or timeout == 0:
            return ready
        self._wait(timeout)
        self.files.timeout_spent(timeout_address)
        return 0

    def _wait(self, seconds: float | None) -> None:
        """Sleep out a wait that nothing can end early: no descriptor here ever changes.

        Never past the deadline: a wait that reaches it (``seconds`` None: forever)
        ends the run as a timeout. Ends early if the process dies meanwhile.
        """
        end = self._deadline if seconds is None else min(time.monotonic() + seconds,
                                                          self._deadline)
        waiter = select.poll()
        waiter.register(self.pidfd, select.POLLIN)  # readable once the process has ended
        while (left := end - time.monotonic()) > 0:
            if waiter.poll(math.ceil(left * 1000)):
                return  # gone: the answer will find no call to answer
        if end >= self._deadline:
            raise _DeadlineReached

    # -- identity and the machine ---------------------------------------------------------------

    def _sched_getaffinity(self, pid: int, length: int, mask: int) -> int:
        length &= 0xFFFF_FFFF  # an unsigned int for the kernel
        if length == 0 or length % 8:
            raise LinuxError(errno_codes.EINVAL)  # the kernel's checks, for one CPU
        if signed32(pid) not in (0, IDENTITY_PID):
            raise LinuxError(errno_codes.ESRCH)  # no other process exists for it
        self.files.memory.write(mask, (1).to_bytes(8, "little"))  # CPU 0 only
        return 8  # as the kernel: the bytes written (one word of mask)

    @staticmethod
    def _getgroups(size: int) -> int:
        if signed32(size) < 0:
            raise LinuxError(errno_codes.EINVAL)
        return 0  # no supplementary groups: nothing to write


_NEW_SIGNAL_CALL = frozenset({syscall_number("gettid"), syscall_number("getpid")})


def _identity(call: Notification) -> tuple[int, tuple[int, ...], int]:
    """What a restarted call has in common with the one it restarts."""
    return call.nr, call.args, call.ip


def _page_up(address: int) -> int:
    return (address + PAGE - 1) // PAGE * PAGE
