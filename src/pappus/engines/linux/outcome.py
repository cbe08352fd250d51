"""How a sandboxed Linux program ended → the invocation's typed outcome (a pure decision).

Inputs: the wait status, what the supervisor saw (:class:`~.supervisor.Verdict`)
and, when the launcher failed before the program ran, which step and errno.
The order matters: what the supervisor *did* (killed at the deadline, for a
forbidden call, for too much output) explains a ``SIGKILL`` better than the
signal does; a refused allocation explains a failure that follows it.
"""

from __future__ import annotations

import errno as errno_codes
import os
import signal
from dataclasses import dataclass

from pappus.engines.base import Limits
from pappus.engines.linux.supervisor import Verdict
from pappus.engines.process.outcome import signal_name
from pappus.errors import (
    BadOutput,
    ForbiddenSyscall,
    InvocationTimeout,
    OutOfMemory,
    SandboxCrash,
)
from pappus.vfs import SetFileSystem

STDERR_TAIL_BYTES = 2048


@dataclass(frozen=True, slots=True)
class Ending:
    """What the engine observed when the process was gone."""

    status: int
    verdict: Verdict | None
    failed_step: str | None
    failed_errno: int


def judge(function: str, ending: Ending, fs: SetFileSystem, limits: Limits) -> int:
    """The program's exit code, or raise the typed outcome of an abnormal end."""
    verdict = ending.verdict or Verdict()
    if verdict.forbidden is not None:
        name, number, arch = verdict.forbidden
        raise ForbiddenSyscall(
            f"{function!r} called {name} (system call {number}), which the linux engine forbids",
            function=function,
            syscall=number,
            name=name,
            arch=f"{arch:#x}",
            **fs.stderr_detail(STDERR_TAIL_BYTES),
        )
    if verdict.output_limit is not None:
        raise BadOutput(
            f"{function!r} wrote more than its output limit of "
            f"{verdict.output_limit} bytes (files in output sets plus stdout and "
            "stderr)",
            limit=verdict.output_limit,
        )
    if verdict.timed_out:
        raise InvocationTimeout(
            f"{function!r} ran past its deadline and was killed",
            function=function,
            **fs.stderr_detail(STDERR_TAIL_BYTES),
        )
    if ending.failed_step is not None:
        reason = errno_codes.errorcode.get(ending.failed_errno, str(ending.failed_errno))
        if ending.failed_errno == errno_codes.ENOMEM or (
            ending.failed_step == "executing the program"
            and ending.failed_errno in (errno_codes.E2BIG, errno_codes.EFAULT)
        ):
            raise OutOfMemory(
                f"{function!r} could not start within its memory bound of "
                f"{limits.memory_bytes} bytes ({reason} while "
                f"{ending.failed_step})",
                memory_bytes=limits.memory_bytes,
            )
        raise SandboxCrash(
            f"the sandbox for {function!r} could not be set up ({reason} while "
            f"{ending.failed_step})",
            function=function,
            step=ending.failed_step,
            errno=reason,
        )
    status = ending.status
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        if number in (signal.SIGXCPU, signal.SIGKILL) and verdict.raised != number:
            raise InvocationTimeout(
                f"{function!r} used up its CPU-time limit and was killed",
                function=function,
                signal=signal_name(number),
            )
        if verdict.memory_refused is not None:
            raise _out_of_memory(function, verdict.memory_refused, fs, limits)
        raise SandboxCrash(
            f"{function!r} was killed by {signal_name(number)}",
            function=function,
            signal=signal_name(number),
            **fs.stderr_detail(STDERR_TAIL_BYTES),
        )
    code = os.WEXITSTATUS(status)
    if code != 0 and verdict.memory_refused is not None:
        raise _out_of_memory(function, verdict.memory_refused, fs, limits)
    return code


def _out_of_memory(function: str, refused: int, fs: SetFileSystem, limits: Limits) -> OutOfMemory:
    return OutOfMemory(
        f"{function!r} asked for {refused} more bytes beyond its memory bound of "
        f"{limits.memory_bytes} bytes, was refused, and then failed; raise its "
        "memory bound or use less",
        memory_bytes=limits.memory_bytes,
        **fs.stderr_detail(STDERR_TAIL_BYTES),
    )
