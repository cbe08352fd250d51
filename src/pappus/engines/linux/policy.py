"""The linux engine's system call policy: one table, from which the filter and the dispatch come.

Every entry says what happens to a system call of an unmodified static Linux
binary:

* ``native`` — the kernel runs it (memory and thread set-up within bounds);
* ``emulate`` — the kernel stops the caller and the supervisor answers from
  the set-backed file system (seccomp user notification);
* ``errno`` — refused with an honest error (``EACCES`` for the network,
  ``EPERM`` for processes, pipes, links and clocks), never a faked success;
* ``kill`` — the sandbox is killed and the call reported as
  ``forbidden_syscall``.

Anything not in the table is ``kill``. Conditions narrow an entry (an
anonymous private mapping without ``PROT_EXEC`` is native; any other
``mmap`` falls through to the next entry for the same call). The seccomp
program (:func:`seccomp_rules`) and the supervisor's dispatch
(:func:`entry_for`) are both generated from :data:`TABLE`; ``kill`` and
``emulate`` both go to the supervisor, which kills and reports, so the number
of a forbidden call is never lost. ``docs/linux-engine.md`` prints the table
(:func:`table_markdown`).

The census of what static musl and glibc programs and busybox applets call
(``docs/linux-census.md``) is covered: a test checks every call there has an
entry that is not ``kill``.
"""

from __future__ import annotations

import errno as errno_codes
from dataclasses import dataclass
from typing import Literal

from pappus.engines import seccomp
from pappus.engines.seccomp import ArgumentEquals, ArgumentHasAll, ArgumentHasNone, Condition
from pappus.engines.syscalls import syscall_number

Kind = Literal["native", "emulate", "errno", "kill"]

PROT_EXEC = 0x4
MAP_SHARED, MAP_ANONYMOUS = 0x01, 0x20
ARCH_SET_FS = 0x1002
PR_SET_NAME, PR_GET_NAME = 15, 16


@dataclass(frozen=True, slots=True)
class Entry:
    """What happens to system call ``name`` when ``conditions`` hold."""

    name: str
    kind: Kind
    note: str
    conditions: tuple[Condition, ...] = ()
    errno: int | None = None

    @property
    def number(self) -> int:
        return syscall_number(self.name)


def _native(name: str, note: str, *conditions: Condition) -> Entry:
    return Entry(name, "native", note, conditions)


def _emulate(name: str, note: str) -> Entry:
    return Entry(name, "emulate", note)


def _refuse(name: str, code: int, note: str) -> Entry:
    return Entry(name, "errno", note, errno=code)


def _kill(name: str, note: str) -> Entry:
    return Entry(name, "kill", note)


_NO_EXEC = ArgumentHasNone(2, PROT_EXEC, "PROT_EXEC")
REAL_DESCRIPTOR_BIT = 0x200
_REAL_FILE = ArgumentHasAll(0, REAL_DESCRIPTOR_BIT, "0x200 (a real input file)")
_FILES = "served by the supervisor from the invocation's sets"
_NETWORK = "no network: communication is done by trusted functions outside"
_PROCESSES = "one process per invocation: no new processes or programs"
_NO_TIMES = "the set file system keeps no times (all read 0)"
_TIMES_REFUSED = ("EPERM once the path is found (EROFS on inputs; ENOENT if absent, so touch "
                  "creates the file)")

TABLE: tuple[Entry, ...] = (
    # -- process and thread set-up, run natively ---------------------------------------
    _native("exit", "ends the thread"),
    _emulate("exit_group", "ends the run: the supervisor records the status (the exit code) "
             "and lets the kernel end the process"),
    _native("arch_prctl", "thread pointer for TLS", ArgumentEquals(0, ARCH_SET_FS)),
    _refuse("arch_prctl", errno_codes.EINVAL, "other arch_prctl codes"),
    _emulate("set_tid_address", "libc start-up: answers 1, the thread id getpid and gettid "
             "show (never the host's); the exit-time clear address is not registered, as "
             "only other threads (refused) could wait on it"),
    _native("set_robust_list", "libc start-up"),
    _native("rseq", "glibc start-up (restartable sequences)"),
    _native("futex", "one process: only its own words"),
    _native("sched_yield", "harmless"),
    _native("rt_sigaction", "the program's own signal handlers"),
    _native("rt_sigprocmask", "the program's own signal mask"),
    _native("rt_sigpending", "the program's own pending signals"),
    _native("rt_sigreturn", "return from its own handler"),
    _native("sigaltstack", "its own signal stack"),
    _native("getrandom", "entropy carries no host information"),
    *(_emulate(name, "to itself only (pid and tid 1, or 0: its own group): the supervisor "
               "delivers the signal before answering 0 (signal 0 probes), so abort() or raise() "
               "ends the run as a crash with that signal and a handler runs first; a handler "
               "sees si_code SI_QUEUE from pid 1, uid 65534; the signal may interrupt the "
               "answer, so without SA_RESTART glibc's raise() may return EINTR after its "
               "handler ran; aimed at any other process: killed (forbidden_syscall)")
      for name in ("kill", "tkill", "tgkill")),
    # -- memory, natively within RLIMIT_AS and without new executable memory --------------
    _native("brk", "reading the current break", ArgumentEquals(0, 0)),
    _emulate("brk", "a new break: growth is checked against the memory bound, then run by the "
             "kernel, which refuses it past the bound (RLIMIT_AS) and returns the old break; the "
             "run is out_of_memory if it then fails"),
    Entry("mmap", "emulate", "anonymous private memory: checked against the memory bound, "
          "then run by the kernel (ENOMEM past it, and the run is out_of_memory if it fails)",
          (_NO_EXEC, ArgumentHasAll(3, MAP_ANONYMOUS, "MAP_ANONYMOUS"),
           ArgumentHasNone(3, MAP_SHARED, "MAP_SHARED"))),
    _refuse("mmap", errno_codes.EACCES, "no executable, shared or file mappings"),
    _native("mprotect", "within its own mappings", _NO_EXEC),
    _refuse("mprotect", errno_codes.EACCES, "no new executable memory"),
    _native("munmap", "its own mappings"),
    _native("mremap", "its own mappings; protections are kept"),
    _native("madvise", "hints on its own mappings"),
    # -- files, emulated over the set-backed file system ----------------------------------
    *(_native(name, "large input files are read-only memfd copies at descriptors 512+",
              _REAL_FILE) for name in ("read", "pread64", "readv", "lseek")),
    *(_emulate(name, _FILES) for name in (
        "read", "write", "readv", "writev", "pread64", "pwrite64", "open", "openat", "close",
        "lseek", "fstat", "stat", "lstat", "newfstatat", "statx", "getdents64", "fcntl",
        "dup", "dup2", "dup3", "mkdir", "mkdirat", "rmdir", "unlink", "unlinkat", "rename",
        "renameat", "renameat2", "access", "faccessat", "faccessat2", "getcwd", "chdir", "fchdir",
        "ftruncate", "fsync", "fdatasync", "sendfile", "readlink", "readlinkat",
        "umask")),
    _emulate("ioctl", "terminal queries answer ENOTTY: there is no terminal"),
    *(_emulate(name, "readiness of the virtual descriptors: every open one is ready for what "
               "it asks (files and stdio never block), one not open is POLLNVAL; with none "
               "ready the timeout is slept out, never past the deadline (forever: a timeout); "
               "nfds above 1024 (RLIMIT_NOFILE) is EINVAL; ppoll's signal mask is checked, "
               "not applied (no signal arrives from outside)") for name in ("poll", "ppoll")),
    *(_emulate(name, "the file system is in memory: nothing to flush")
      for name in ("sync", "syncfs")),
    *(_emulate(name, "a fixed description of the set file system, never the host's: type "
               "0x50a55e75, 4 KiB blocks counting the output limit (free: what may still be "
               "written), inodes counting the 65,536 nodes a run may create, names up to 255 "
               "bytes, nosuid, nodev, noexec, noatime, rdonly on inputs")
      for name in ("statfs", "fstatfs")),
    _emulate("fallocate", "mode 0 on a file open for writing extends it with zeros, counted as "
             "output (ENOSPC past the output limit, as a full disk); other modes (keep size, "
             "holes) are EOPNOTSUPP: there is no disk to reserve"),
    _emulate("utimensat", f"{_NO_TIMES}: a request that changes none (both UTIME_OMIT) "
             f"succeeds; any other is {_TIMES_REFUSED}"),
    *(_emulate(name, f"{_NO_TIMES}: any request is {_TIMES_REFUSED}")
      for name in ("futimesat", "utimes", "utime")),
    *(_emulate(name, "a regular file is created as by open with O_CREAT and O_EXCL; FIFOs, "
               "devices and sockets are EPERM: the set file system has none")
      for name in ("mknod", "mknodat")),
    *(_refuse(name, errno_codes.EPERM, "the set file system has no hard or symbolic links")
      for name in ("link", "linkat", "symlink", "symlinkat")),
    # -- identity and limits, emulated with fixed, documented answers ----------------------
    *(_emulate(name, "a fixed identity: uid/gid 65534, pid 1; the host's are never shown")
      for name in ("getuid", "geteuid", "getgid", "getegid", "getpid", "gettid", "getppid")),
    _emulate("uname", "a fixed system name (\"pappus\"), not the host's"),
    _native("prlimit64", "reading its own limits (the sandbox's: RLIMIT_AS is the memory bound)",
            ArgumentEquals(0, 0), ArgumentEquals(2, 0)),
    _emulate("prlimit64", "pid 1 reads its own limits too; changing them is EPERM"),
    _native("prctl", "its own thread name", ArgumentEquals(0, PR_SET_NAME)),
    _native("prctl", "its own thread name", ArgumentEquals(0, PR_GET_NAME)),
    _refuse("prctl", errno_codes.EINVAL, "other options"),
    _emulate("sysinfo", "the sandbox's memory bound, not the host's"),
    _emulate("sched_getaffinity", "one CPU, CPU 0 (the program runs one thread), not the "
             "host's; the mask length is checked as the kernel does (a multiple of 8) and 8 "
             "bytes are written"),
    _emulate("getgroups", "no supplementary groups"),
    # -- time: reading is harmless (the vDSO bypasses seccomp anyway); setting is refused ---
    _native("clock_gettime", "read only"),
    _native("gettimeofday", "read only"),
    _native("time", "read only"),
    _native("clock_getres", "read only"),
    _native("nanosleep", "bounded by the invocation's deadline"),
    _native("clock_nanosleep", "bounded by the invocation's deadline"),
    *(_refuse(name, errno_codes.EPERM, "no clock manipulation")
      for name in ("clock_settime", "settimeofday", "adjtimex", "clock_adjtime")),
    # -- refused honestly --------------------------------------------------------------
    *(_refuse(name, errno_codes.EACCES, _NETWORK) for name in (
        "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4",
        "sendto", "recvfrom", "sendmsg", "recvmsg", "shutdown", "getsockopt", "setsockopt",
        "getsockname", "getpeername")),
    *(_refuse(name, errno_codes.EPERM, _PROCESSES) for name in (
        "fork", "vfork", "clone", "clone3", "execve", "wait4", "waitid")),
    *(_refuse(name, errno_codes.EPERM, "no pipes: one process per invocation, so no other "
              "process could hold the other end (a shell pipeline's fork is EPERM too)")
      for name in ("pipe", "pipe2")),
    _emulate("execveat", "the launcher's own start of the program passes once; any later "
             "call is EPERM (one program per invocation)"),
    *(_refuse(name, errno_codes.EPERM, "no ownership or permission changes")
      for name in ("chmod", "fchmod", "fchmodat", "chown", "fchown", "lchown", "fchownat",
                   "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid")),
    # -- killed and reported ---------------------------------------------------------------
    *(_kill(name, "never legitimate for a compute function") for name in (
        "ptrace", "process_vm_readv", "process_vm_writev", "mount", "umount2", "unshare",
        "setns", "pivot_root", "chroot", "bpf",
        "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
        "io_uring_register", "kexec_load", "kexec_file_load", "init_module",
        "finit_module", "delete_module", "keyctl", "add_key", "request_key",
        "personality", "seccomp", "memfd_create", "pidfd_open", "pidfd_getfd",
        "pidfd_send_signal", "reboot", "swapon", "swapoff", "acct", "quotactl")),
)
"""The policy. First matching entry wins; anything absent is ``kill``."""


AS_NOBODY: tuple[Entry, ...] = tuple(
    _native(name, "the launcher switched to uid/gid 65534 with no groups, so the kernel's own "
            "answer is the fixed identity (no round trip to the supervisor)")
    for name in ("getuid", "geteuid", "getgid", "getegid", "getgroups"))
"""Put ahead of :data:`TABLE` for launchers that run as uid/gid 65534 (in the zygote's
user namespace, or with ``CAP_SYS_RESOURCE``); otherwise these calls are emulated with
the same answers."""


def table_for(as_nobody: bool) -> tuple[Entry, ...]:
    """The policy for launchers that do (``as_nobody``) or do not switch to uid/gid 65534."""
    return AS_NOBODY + TABLE if as_nobody else TABLE


def seccomp_rules(table: tuple[Entry, ...] = TABLE) -> tuple[seccomp.Rule, ...]:
    """The table as seccomp rules: emulate and kill both notify the supervisor."""
    rules: list[seccomp.Rule] = []
    for entry in table:
        if entry.kind == "native":
            action = seccomp.ALLOW
        elif entry.kind == "errno":
            code = entry.errno if entry.errno is not None else errno_codes.ENOSYS
            action = seccomp.Action.errno(code, errno_codes.errorcode[code])
        else:
            action = seccomp.NOTIFY
        rules.append(seccomp.Rule(entry.name, action, entry.conditions, entry.note))
    return tuple(rules)


DEFAULT = seccomp.NOTIFY
"""Unknown calls go to the supervisor, which kills the sandbox and reports the call."""


def compile_table(table: tuple[Entry, ...] = TABLE) -> list[seccomp.Instruction]:
    """The linux engine's seccomp program."""
    return seccomp.compile_policy(seccomp_rules(table), DEFAULT)


def entry_for(number: int, table: tuple[Entry, ...] = TABLE) -> Entry | None:
    """The supervisor's dispatch: the first emulate/kill entry for ``number`` (None: kill).

    Conditions are not re-checked here: the kernel only notifies calls whose
    native and errno entries did not apply.
    """
    for entry in table:
        if entry.number == number and entry.kind in ("emulate", "kill"):
            return entry
    return None


def table_markdown(table: tuple[Entry, ...] = TABLE,
                   as_nobody: tuple[Entry, ...] = AS_NOBODY) -> str:
    """The table for ``docs/linux-engine.md`` (the ``as_nobody`` rows first)."""
    lines = ["| system call | action | when | fidelity |", "|---|---|---|---|"]
    for entry in as_nobody + table:
        when = ", ".join(c.describe() for c in entry.conditions) or (
            "launchers run as uid/gid 65534" if entry in as_nobody else "always")
        action = (f"errno {errno_codes.errorcode[entry.errno]}" if entry.kind == "errno"
                  and entry.errno is not None else entry.kind)
        lines.append(f"| `{entry.name}` | {action} | {when} | {entry.note} |")
    lines.append("| anything else, x32, i386 (`int 0x80`) | kill | | deny by default, "
                 "reported as `forbidden_syscall` |")
    return "\n".join(lines) + "\n"
