"""How the supervisor answers each emulated call: a handler per call, from the policy table.

A handler takes the supervisor and the call's six raw arguments and returns
the value to answer, or raises what :meth:`Supervisor._answer
<pappus.engines.linux.supervisor.Supervisor._answer>` turns into an errno,
a kill or a call let through to the kernel.
"""

from __future__ import annotations

import errno as errno_codes
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from pappus.engines.linux import policy
from pappus.engines.linux.fastpath import CONSTANT_ANSWERS
from pappus.engines.linux.files import LinuxError

if TYPE_CHECKING:
    from pappus.engines.linux.supervisor import Supervisor

AT_FDCWD = (1 << 64) - 100  # as the kernel passes it: an int register, sign-extended
Handler = Callable[["Supervisor", tuple[int, ...]], int]


def _constant(value: int) -> Handler:
    return lambda s, a: value


EMULATED: dict[str, Handler] = {
    "read": lambda s, a: s.files.read(a[0], a[1], a[2]),
    "pread64": lambda s, a: s.files.read(a[0], a[1], a[2], nonnegative(a[3])),
    "readv": lambda s, a: s.files.readv(a[0], a[1], a[2]),
    "write": lambda s, a: s.files.write(a[0], a[1], a[2]),
    "pwrite64": lambda s, a: s.files.write(a[0], a[1], a[2], nonnegative(a[3])),
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
    "statx": lambda s, a: s.files.statx(a[0], a[1], a[2], a[3], a[4]),
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
    "faccessat2": lambda s, a: s.files.faccessat(a[0], a[1], a[2], a[3]),
    "getcwd": lambda s, a: s.files.getcwd(a[0], a[1]),
    "chdir": lambda s, a: s.files.chdir(a[0]),
    "fchdir": lambda s, a: s.files.fchdir(a[0]),
    "ftruncate": lambda s, a: s.files.ftruncate(a[0], a[1]),
    "fsync": lambda s, a: s.files.fsync(a[0]),
    "fdatasync": lambda s, a: s.files.fsync(a[0]),
    "readlink": lambda s, a: s.files.readlinkat(AT_FDCWD, a[0], a[2]),
    "readlinkat": lambda s, a: s.files.readlinkat(a[0], a[1], a[3]),
    "umask": lambda s, a: s._umask(a[0]),
    "ioctl": lambda s, a: s.files.ioctl(a[0]),
    "uname": lambda s, a: s._uname(a[0]),
    "prlimit64": lambda s, a: s._prlimit(a[0], a[1], a[2], a[3]),
    "exit_group": lambda s, a: s._exit_group(a[0]),
    "sysinfo": lambda s, a: s._sysinfo(a[0]),
    "mmap": lambda s, a: s._mmap(a[1], a[3]),
    "execveat": lambda s, a: s._execveat(),
    "brk": lambda s, a: s._brk(a[0]),
    "kill": lambda s, a: s._kill(a[0], a[1]),
    "tkill": lambda s, a: s._tkill(a[0], a[1]),
    "tgkill": lambda s, a: s._tgkill(a[0], a[1], a[2]),
    "poll": lambda s, a: s._poll(a[0], a[1], a[2]),
    "ppoll": lambda s, a: s._ppoll(a[0], a[1], a[2], a[3], a[4]),
    "sched_getaffinity": lambda s, a: s._sched_getaffinity(a[0], a[1], a[2]),
    "getgroups": lambda s, a: s._getgroups(a[0]),
    "syncfs": lambda s, a: s.files.fsync(a[0]),
    "statfs": lambda s, a: s.files.statfs(a[0], a[1]),
    "fstatfs": lambda s, a: s.files.fstatfs(a[0], a[1]),
    "fallocate": lambda s, a: s.files.fallocate(a[0], a[1], a[2], a[3]),
    "utimensat": lambda s, a: s.files.utimensat(a[0], a[1], a[2], a[3]),
    "futimesat": lambda s, a: s.files.futimesat(a[0], a[1], a[2]),
    "utimes": lambda s, a: s.files.futimesat(AT_FDCWD, a[0], a[1]),
    "utime": lambda s, a: s.files.utime(a[0], a[1]),
    "mknod": lambda s, a: s.files.mknodat(AT_FDCWD, a[0], a[1]),
    "mknodat": lambda s, a: s.files.mknodat(a[0], a[1], a[2]),
}
EMULATED.update({name: _constant(value) for name, value in CONSTANT_ANSWERS.items()})
"""How each emulated call is answered, from its raw arguments: the file calls by
:class:`~pappus.engines.linux.files.LinuxFiles`, the rest by the supervisor, the fixed
answers from :data:`~pappus.engines.linux.fastpath.CONSTANT_ANSWERS` (which the fast path
also gives)."""


@functools.cache
def handlers() -> dict[int, Handler]:
    """Number → handler of every call the policy table emulates (computed once)."""
    by_number: dict[int, Handler] = {}
    for entry in policy.TABLE:
        if entry.kind == "emulate" and entry.number not in by_number:
            handler = EMULATED.get(entry.name)
            if handler is None:
                raise RuntimeError(f"the policy emulates {entry.name} but the supervisor has "
                                   "no handler for it")
            by_number[entry.number] = handler
    return by_number


def nonnegative(offset: int) -> int:
    if offset >= 1 << 63:
        raise LinuxError(errno_codes.EINVAL)
    return offset
