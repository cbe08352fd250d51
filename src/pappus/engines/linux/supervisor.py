"""The supervisor: answers a sandboxed program's notified system calls until it ends.

One supervisor serves one invocation, in the invoking thread. It receives
each call the filter sent to user space (:mod:`.notify`), looks up the
policy table's entry (:func:`~pappus.engines.linux.policy.entry_for`) and

* ``emulate``: answers it from :class:`~pappus.engines.linux.files.LinuxFiles`
  or the fixed identity below, copying arguments out of the program first,
  so the kernel never acts on memory the program could still change;
* ``kill`` (and anything the table does not know, any other architecture or
  x32): kills the process and records the call, reported as
  ``forbidden_syscall`` with its name and number.

Two calls are let through to the kernel after a check. The launcher's own
``execveat`` — the first call, made before the program exists, from
memory only the launcher and the worker write — after installing the
function's executable as the descriptor it names; and anonymous ``mmap``
(no pointer the kernel would read), after checking it
against the memory bound, so that running out of memory is *seen* (the
program gets ``ENOMEM`` and the run, if it then fails, ends as
``out_of_memory``).

Nothing a program does reaches the supervisor as an exception: a bad
pointer is ``EFAULT``, a bad path ``ENOENT``/``EINVAL``/..., and a supervisor
bug on one call is logged and answered ``ENOSYS`` rather than crashing the worker.
"""

from __future__ import annotations

import contextlib
import errno as errno_codes
import functools
import logging
import os
import resource as resources
import select
import signal
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from pappus.engines.linux import policy
from pappus.engines.linux.files import VIRTUAL_LIMIT, LinuxError, LinuxFiles, linux_errno
from pappus.engines.linux.launcher import EXECUTABLE_FD
from pappus.engines.linux.memfd import MemfdRecycler
from pappus.engines.linux.notify import Listener, MemoryFault, Notification, ProcessMemory
from pappus.engines.syscalls import AUDIT_ARCH_X86_64, X32_SYSCALL_BIT, syscall_name
from pappus.vfs import OutputLimitExceeded, SetFileSystem, VfsError

log = logging.getLogger(__name__)

RLIM_INFINITY = (1 << 64) - 1
RLIM_NLIMITS = 16
MAP_ANONYMOUS = 0x20
PAGE = 4096
UTSNAME = (b"Linux", b"pappus", b"6.1.0-pappus", b"#1 SMP pappus", b"x86_64", b"(none)")


class LetKernelRun(Exception):
    """Answer by letting the kernel run the call as made (no pointer arguments).

    ``then`` is called once the call has been let through.
    """

    def __init__(self, then: Callable[[], None] = lambda: None) -> None:
        super().__init__()
        self.then = then


@dataclass(slots=True)
class Verdict:
    """How the run ended, as the supervisor saw it."""

    forbidden: tuple[str, int, int] | None = None  # name, number, arch
    output_limit: int | None = None
    memory_refused: int | None = None  # bytes asked for when the bound was hit
    timed_out: bool = False


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
        on_exec: Callable[[], None] = lambda: None,
    ) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.listener = listener
        self.fs = fs
        self.limits = limits
        self.verdict = Verdict()
        self.calls = 0
        self._statm: int | None = None
        self._current: Notification | None = None
        self._executable_fd = executable_fd
        self._on_exec = on_exec
        self._exec_done = False
        self.exit_status: int | None = None
        """The status passed to ``exit_group``, once the program called it."""
        self.files = LinuxFiles(fs, ProcessMemory(pid), self._install_descriptor, memfds)

    # -- resources --------------------------------------------------------------------------

    def _install_descriptor(self, source_fd: int, target_fd: int) -> None:
        assert self._current is not None
        self.listener.add_descriptor(self._current, source_fd, target_fd)

    def close(self) -> None:
        """Release the supervisor's descriptors; call it once the process is gone.

        The listener belongs to the launcher (:class:`~.launcher.Launcher`).
        """
        self.files.close_all()
        if self._statm is not None:
            os.close(self._statm)

    # -- the loop ---------------------------------------------------------------------------

    def run(self, deadline: float) -> None:
        """Serve calls until the process ends, or kill it at ``deadline`` (monotonic)."""
        poller = select.poll()
        poller.register(self.listener.fd, select.POLLIN)
        while True:
            remaining_ms = max(0, int((deadline - time.monotonic()) * 1000) + 1)
            events = poller.poll(remaining_ms)
            if not events:
                if time.monotonic() >= deadline:
                    self.verdict.timed_out = True
                    self.kill()
                    return
                continue
            _, mask = events[0]
            if mask & select.POLLIN:
                notification = self.listener.receive()
                if notification is not None and not self._answer(notification):
                    return
            elif mask & (select.POLLHUP | select.POLLERR):
                return  # every task of the filter is gone

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
        handler = _handlers().get(call.nr)
        if handler is None:
            return self._forbid(call)
        try:
            value = handler(self, call.args)
        except LetKernelRun as answer:
            self.listener.let_kernel_run(call)
            answer.then()
            return self.exit_status is None
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
        raise LetKernelRun

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
        if not self._exec_done:  # the parked launcher starting the program, before it exists
            self._exec_done = True
            self._install_descriptor(self._executable_fd, EXECUTABLE_FD)
            # The exec takes a while: a good moment for the caller's background work.
            raise LetKernelRun(then=self._on_exec)
        raise LinuxError(errno_codes.EPERM)  # one program per invocation


AT_FDCWD = (1 << 64) - 100  # as the kernel passes it: an int register, sign-extended
Handler = Callable[[Supervisor, tuple[int, ...]], int]

_EMULATED: dict[str, Handler] = {
    "read": lambda s, a: s.files.read(a[0], a[1], a[2]),
    "pread64": lambda s, a: s.files.read(a[0], a[1], a[2], _nonnegative(a[3])),
    "readv": lambda s, a: s.files.readv(a[0], a[1], a[2]),
    "write": lambda s, a: s.files.write(a[0], a[1], a[2]),
    "pwrite64": lambda s, a: s.files.write(a[0], a[1], a[2], _nonnegative(a[3])),
    "writev": lambda s, a: s.files.writev(a[0], a[1], a[2]),
    "sendfile": lambda s, a: s.files.sendfile(a[0], a[1], a[2], a[3]),
    "open": lambda s, a: s.files.openat(AT_FDCWD, a[0], a[1], a[2]),
    "openat": lambda s, a: s.files.openat(a[0], a[1], a[2], a[3]),
    "close": lambda s, a: s._close(a[0]),
    "lseek": lambda s, a: s.files.lseek(a[0], a[1], a[2]),
    "fstat": lambda s, a: s.files.fstat(a[0], a[1]),
    "stat": lambda s, a: s.files.newfstatat(AT_FDCWD, a[0], a[1], 0),
    "lstat": lambda s, a: s.files.newfstatat(AT_FDCWD, a[0], a[1], 0),
    "newfstatat": lambda s, a: s.files.newfstatat(a[0], a[1], a[2], a[3]),
    "statx": lambda s, a: s.files.statx(a[0], a[1], a[2], a[4]),
    "getdents64": lambda s, a: s.files.getdents64(a[0], a[1], a[2]),
    "fcntl": lambda s, a: s.files.fcntl(a[0], a[1], a[2]),
    "dup": lambda s, a: s.files.dup(a[0]),
    "dup2": lambda s, a: s.files.dup(a[0], exact=a[1]),
    "dup3": lambda s, a: s.files.dup3(a[0], a[1], a[2]),
    "mkdir": lambda s, a: s.files.mkdirat(AT_FDCWD, a[0]),
    "mkdirat": lambda s, a: s.files.mkdirat(a[0], a[1]),
    "rmdir": lambda s, a: s.files.unlinkat(AT_FDCWD, a[0], 0x200),
    "unlink": lambda s, a: s.files.unlinkat(AT_FDCWD, a[0], 0),
    "unlinkat": lambda s, a: s.files.unlinkat(a[0], a[1], a[2]),
    "rename": lambda s, a: s.files.renameat(AT_FDCWD, a[0], AT_FDCWD, a[1]),
    "renameat": lambda s, a: s.files.renameat(a[0], a[1], a[2], a[3]),
    "renameat2": lambda s, a: s.files.renameat(a[0], a[1], a[2], a[3], a[4]),
    "access": lambda s, a: s.files.faccessat(AT_FDCWD, a[0], a[1]),
    "faccessat": lambda s, a: s.files.faccessat(a[0], a[1], a[2]),
    "faccessat2": lambda s, a: s.files.faccessat(a[0], a[1], a[2]),
    "getcwd": lambda s, a: s.files.getcwd(a[0], a[1]),
    "chdir": lambda s, a: s.files.chdir(a[0]),
    "fchdir": lambda s, a: s.files.fchdir(a[0]),
    "ftruncate": lambda s, a: s.files.ftruncate(a[0], a[1]),
    "fsync": lambda s, a: s.files.fsync(a[0]),
    "fdatasync": lambda s, a: s.files.fsync(a[0]),
    "readlink": lambda s, a: s.files.readlinkat(AT_FDCWD, a[0]),
    "readlinkat": lambda s, a: s.files.readlinkat(a[0], a[1]),
    "umask": lambda s, a: s._umask(a[0]),
    "ioctl": lambda s, a: s.files.ioctl(a[0]),
    "getuid": lambda s, a: 65534,
    "geteuid": lambda s, a: 65534,
    "getgid": lambda s, a: 65534,
    "getegid": lambda s, a: 65534,
    "getpid": lambda s, a: 1,
    "gettid": lambda s, a: 1,
    "getppid": lambda s, a: 0,
    "uname": lambda s, a: s._uname(a[0]),
    "prlimit64": lambda s, a: s._prlimit(a[0], a[1], a[2], a[3]),
    "exit_group": lambda s, a: s._exit_group(a[0]),
    "sysinfo": lambda s, a: s._sysinfo(a[0]),
    "mmap": lambda s, a: s._mmap(a[1], a[3]),
    "execveat": lambda s, a: s._execveat(),
}
"""How each emulated call is answered, from its raw arguments."""


@functools.cache
def _handlers() -> dict[int, Handler]:
    """Number → handler of every call the policy table emulates (computed once)."""
    handlers: dict[int, Handler] = {}
    for entry in policy.TABLE:
        if entry.kind == "emulate" and entry.number not in handlers:
            handler = _EMULATED.get(entry.name)
            if handler is None:
                raise RuntimeError(f"the policy emulates {entry.name} but the supervisor has "
                                   "no handler for it")
            handlers[entry.number] = handler
    return handlers


def _nonnegative(offset: int) -> int:
    if offset >= 1 << 63:
        raise LinuxError(errno_codes.EINVAL)
    return offset
