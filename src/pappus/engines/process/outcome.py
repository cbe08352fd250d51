"""How a runner process ended → the invocation's typed outcome (a pure decision).

The runner's signal handler leaves a 32-byte report at the top of the context
and exits with :data:`REPORT_STATUS`; a process killed outright (by us at
the deadline, by RLIMIT_CPU, or by a signal the handler could not catch) is
judged by its wait status alone. The report lives in memory the function can
write, so a function can only ever forge an error about itself.
"""

from __future__ import annotations

import os
import signal
import struct
from dataclasses import dataclass

from pappus.engines.syscalls import syscall_name
from pappus.errors import (
    ForbiddenSyscall,
    FunctionFailed,
    InvocationTimeout,
    SandboxCrash,
)

REPORT = struct.Struct("<IHhiIQQ")  # magic, signal, si_code, syscall, arch, address, rip
REPORT_MAGIC = 0x50525050
REPORT_STATUS = 239
SETUP_STATUS_BASE = 240
SYS_SECCOMP = 1  # si_code of a SIGSYS raised by a seccomp filter
SETUP_STEPS = ("reading parameters", "checking parameters", "mapping the context",
               "protecting segments", "closing descriptors", "setting limits",
               "installing signal handlers", "setting no_new_privs", "installing the filter",
               "cloning a runner", "unmapping the set-up code")
"""The runner's set-up steps, by exit status - SETUP_STATUS_BASE (``check(..., step)`` in
runner.c)."""


@dataclass(frozen=True, slots=True)
class RunnerExit:
    """What the engine observed: the wait status, whether it killed the process, the report."""

    status: int
    killed_at_deadline: bool
    report: bytes


def signal_name(number: int) -> str:
    """``SIGSEGV`` for 11; ``signal N`` for numbers Python does not name."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def classify_exit(function: str, run: RunnerExit) -> None:
    """Raise the typed outcome of an abnormal end; return if the process exited with 0."""
    if run.killed_at_deadline:
        raise InvocationTimeout(f"{function!r} ran past its deadline and was killed",
                                function=function)
    if os.WIFSIGNALED(run.status):
        number = os.WTERMSIG(run.status)
        if number in (signal.SIGXCPU, signal.SIGKILL):
            raise InvocationTimeout(f"{function!r} used up its CPU-time limit and was killed",
                                    function=function, signal=signal_name(number))
        if number == signal.SIGSYS:
            raise ForbiddenSyscall(f"{function!r} made a forbidden system call (killed by the "
                                   "filter before it could be reported)", function=function)
        raise SandboxCrash(f"{function!r} was killed by {signal_name(number)}",
                           function=function, signal=signal_name(number))
    code = os.WEXITSTATUS(run.status)
    if code == REPORT_STATUS and len(run.report) == REPORT.size:
        magic, number, si_code, syscall, arch, address, rip = REPORT.unpack(run.report)
        if magic == REPORT_MAGIC:
            _raise_reported(function, number, si_code, syscall=syscall, arch=arch,
                            address=address, rip=rip)
    if code >= SETUP_STATUS_BASE:
        step = SETUP_STEPS[code - SETUP_STATUS_BASE] if (
            code - SETUP_STATUS_BASE < len(SETUP_STEPS)) else f"step {code - SETUP_STATUS_BASE}"
        raise SandboxCrash(f"the sandbox for {function!r} could not be set up ({step} failed)",
                           function=function, runner_status=code)
    if code != 0:
        raise FunctionFailed(f"{function!r} exited with status {code} through a raw exit_group, "
                             "bypassing the SDK's exit (its outputs were not published)",
                             function=function, exit_code=code)


def _raise_reported(function: str, number: int, si_code: int, *, syscall: int, arch: int,
                    address: int, rip: int) -> None:
    if number == signal.SIGSYS and si_code == SYS_SECCOMP:
        name = syscall_name(syscall, arch)
        raise ForbiddenSyscall(f"{function!r} called {name} (system call {syscall}), which the "
                               "process engine forbids", function=function, syscall=syscall,
                               name=name, arch=f"{arch:#x}", address=f"{address:#x}")
    raise SandboxCrash(f"{function!r} crashed with {signal_name(number)} at rip {rip:#x} "
                       f"(fault address {address:#x})", function=function,
                       signal=signal_name(number), si_code=si_code, address=f"{address:#x}",
                       rip=f"{rip:#x}")
