"""Every error pappus raises on purpose, as one tree.

::

    PappusError                      type string          HTTP
    ├── BadRequest                   bad_request          400
    ├── NotFound                     not_found            404
    ├── Conflict                     conflict             409
    ├── TooLarge                     too_large            413
    ├── Overloaded                   overloaded           503
    ├── EngineUnavailable            engine_unavailable   503
    ├── CompositionSyntaxError       composition_syntax   400
    ├── CompositionInvalid           composition_invalid  400
    ├── CommunicationError (a communication function's outcome)
    │   ├── EgressDenied             egress_denied        403
    │   └── CommunicationFailed      communication_failed 502
    └── SandboxError  (an invocation or registration outcome from an engine)
        ├── InvalidBinary            invalid_binary       400
        ├── InvocationTimeout        timeout              504
        ├── OutOfMemory              out_of_memory        422
        ├── ForbiddenSyscall         forbidden_syscall    422
        ├── SandboxCrash             crash                422
        ├── BadOutput                bad_output           422
        └── FunctionFailed           function_error       422

Each boundary translates foreign exceptions into this tree with
``raise X(...) from exc``; nothing else may escape to a client. The ``type``
string and ``detail`` mapping are what the HTTP API puts in its error body.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar


class PappusError(Exception):
    """Base of every deliberate pappus error.

    ``message`` says what happened and, where possible, how to fix it;
    ``detail`` carries machine-readable fields (JSON-serialisable).
    """

    type: ClassVar[str] = "internal"
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.detail: dict[str, Any] = detail

    def to_dict(self) -> dict[str, Any]:
        """The JSON error body: ``{"type", "message", **detail}``."""
        body: dict[str, Any] = {"type": self.type, "message": self.message}
        body.update(self.detail)
        return body

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> PappusError:
        """Rebuild the matching error class from a JSON error body (used by the client)."""
        error_type = str(body.get("type", "internal"))
        message = str(body.get("message", ""))
        detail = {k: v for k, v in body.items() if k not in ("type", "message")}
        error_class = ERROR_TYPES.get(error_type, PappusError)
        error = error_class.__new__(error_class)
        PappusError.__init__(error, message, **detail)
        return error

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, {self.detail!r})"


class BadRequest(PappusError):
    """The request is malformed: bad JSON, a missing field, a wrong type, an unknown set."""

    type = "bad_request"
    http_status = 400


class NotFound(PappusError):
    """No function or composition of that name is registered."""

    type = "not_found"
    http_status = 404


class Conflict(PappusError):
    """The name is already taken by a function, a composition or a system function."""

    type = "conflict"
    http_status = 409


class TooLarge(PappusError):
    """A request body, binary or input exceeds a configured size limit."""

    type = "too_large"
    http_status = 413


class Overloaded(PappusError):
    """The dispatcher queue is full; retry later."""

    type = "overloaded"
    http_status = 503


class EngineUnavailable(PappusError):
    """An engine cannot run on this machine as set up (detail: ``engine``; message: the fix)."""

    type = "engine_unavailable"
    http_status = 503


class CompositionSyntaxError(PappusError):
    """Composition source does not parse. Detail: ``line``, ``column``, ``excerpt``."""

    type = "composition_syntax"
    http_status = 400


class CompositionInvalid(PappusError):
    """Composition source parses but breaks a rule (undeclared function, unknown set, ...).

    Detail ``kind`` names Dandelion's error case (``InvalidFunctionDeclaration``,
    ``UndefinedDataSet``, ...); ``line``/``column``/``excerpt`` locate it.
    """

    type = "composition_invalid"
    http_status = 400


class CommunicationError(PappusError):
    """Base of the outcomes of communication functions (``HTTP``)."""

    http_status = 502


class EgressDenied(CommunicationError):
    """The egress policy does not allow the destination (detail: ``url``, ``reason``)."""

    type = "egress_denied"
    http_status = 403


class CommunicationFailed(CommunicationError):
    """The request could not be completed: connection error, timeout, size limit, truncation."""

    type = "communication_failed"


class SandboxError(PappusError):
    """Base of the typed outcomes an engine reports for a registration or invocation."""

    http_status = 422


class InvalidBinary(SandboxError):
    """The binary was refused at registration (not a valid module/ELF for the engine)."""

    type = "invalid_binary"
    http_status = 400


class InvocationTimeout(SandboxError):
    """The function ran past its deadline and was stopped without its cooperation."""

    type = "timeout"
    http_status = 504


class OutOfMemory(SandboxError):
    """The function needed more memory than its bound allows."""

    type = "out_of_memory"


class ForbiddenSyscall(SandboxError):
    """The function attempted a system call its policy forbids (detail: number, name)."""

    type = "forbidden_syscall"


class SandboxCrash(SandboxError):
    """The function trapped or was killed by a signal (detail: trap or signal)."""

    type = "crash"


class BadOutput(SandboxError):
    """The function's outputs were malformed or exceeded the output limit."""

    type = "bad_output"


class FunctionFailed(SandboxError):
    """The function ran to completion but exited with a non-zero exit code.

    Detail: ``exit_code`` and the tail of its ``stderr`` item, if any.
    """

    type = "function_error"


ERROR_TYPES: dict[str, type[PappusError]] = {
    cls.type: cls
    for cls in (
        BadRequest,
        NotFound,
        Conflict,
        TooLarge,
        Overloaded,
        EngineUnavailable,
        CompositionSyntaxError,
        CompositionInvalid,
        EgressDenied,
        CommunicationFailed,
        InvalidBinary,
        InvocationTimeout,
        OutOfMemory,
        ForbiddenSyscall,
        SandboxCrash,
        BadOutput,
        FunctionFailed,
    )
}
"""Error ``type`` string → class, for clients rebuilding errors from JSON."""

OUTCOME_TYPES: tuple[str, ...] = (
    "timeout",
    "out_of_memory",
    "forbidden_syscall",
    "crash",
    "bad_output",
    "invalid_binary",
    "function_error",
)
"""The sandbox outcome type strings, in the order metrics list them."""


def first_error(errors: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first :class:`PappusError` in a (nested) exception group, else its first exception."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [errors]
    while pending:
        error = pending.pop(0)
        if isinstance(error, BaseExceptionGroup):
            pending[0:0] = list(error.exceptions)
        else:
            leaves.append(error)
    for leaf in leaves:
        if isinstance(leaf, PappusError):
            return leaf
    return leaves[0] if leaves else errors
