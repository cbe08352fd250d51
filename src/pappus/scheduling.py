"""The dispatcher's scheduling decision, as pure functions.

Nothing here does I/O, reads a clock or touches a lock: the dispatcher
passes in a snapshot (waiting jobs, idle slots, the time) and carries out the
returned :class:`Decision`. That keeps the policy unit-testable without a
sandbox, in the style of httpcore's ``_assign_requests_to_connections``.

Policy: first-in first-out onto idle compute slots; a job whose deadline has
passed while it waited is expired (answered ``timeout``) instead of started,
so a backlog never spends sandbox time on answers nobody awaits any more.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WaitingJob:
    """What the policy needs to know about a queued job."""

    job_id: int
    deadline: float


@dataclass(frozen=True, slots=True)
class Decision:
    """Jobs to start now (in order) and jobs to fail as expired."""

    start: tuple[int, ...] = ()
    expire: tuple[int, ...] = ()


def decide(waiting: Iterable[WaitingJob], idle_slots: int, now: float) -> Decision:
    """Choose which waiting jobs start on the ``idle_slots`` free slots.

    ``waiting`` is in arrival order and is consumed lazily: the scan stops
    once every idle slot has a live job, so a deep queue costs nothing per
    decision. Expired jobs met on the way are returned in ``expire``; jobs
    behind them expire when they reach the head of the queue.
    """
    start: list[int] = []
    expire: list[int] = []
    for job in waiting:
        if job.deadline <= now:
            expire.append(job.job_id)
        elif len(start) < idle_slots:
            start.append(job.job_id)
        if len(start) >= idle_slots:
            break
    return Decision(tuple(start), tuple(expire))


def admits(queued: int, capacity: int) -> bool:
    """Whether one more job fits in a queue holding ``queued`` of ``capacity``."""
    return queued < capacity


def effective_timeout_ms(function_timeout_ms: int, requested_ms: int | None) -> int:
    """A request may lower a function's deadline, never raise it."""
    if requested_ms is None:
        return function_timeout_ms
    return max(1, min(function_timeout_ms, requested_ms))



INLINE_SHARE = 0.25
"""An inline run is *long* when it took more CPU time than this share of the budget."""
INLINE_WINDOW = 5
"""A function moves off the fast path only when its last this many inline runs were all
long (or one was abandoned): slow runs among short ones (the first few after start-up run
on cold pooled instances at 3-5x their later cost; others are charged with the kernel's
network work) do not count against a short function."""
INLINE_MAX_INPUT_BYTES = 256 * 1024
"""Inputs are copied into the sandbox before the budget can stop anything: keep that short."""
INLINE_MAX_MEMORY_BYTES = 256 * 1024 * 1024
"""A bulk memory instruction (``memory.fill``/``memory.copy``) runs to its end before the
engine can stop it, and can span the whole memory: ~15-30 ms per 128 MiB here. Functions
allowed more memory than this never run inline."""
BACKOFF_MIN = 8
BACKOFF_MAX = 1024
"""A function that proves long goes to slots for its next runs; the count doubles from
:data:`BACKOFF_MIN` to :data:`BACKOFF_MAX` while its inline runs stay long."""


@dataclass(frozen=True, slots=True)
class InlineRecord:
    """What the inline decision remembers about one function."""

    recent: tuple[float, ...] = ()
    """CPU seconds of its last (up to :data:`INLINE_WINDOW`) inline runs, oldest first."""
    skip: int = 0
    """Runs still to send to slots before trying inline again."""
    backoff: int = 0
    """The length of the current skip; 0 while the function is short."""

    def skipped(self) -> InlineRecord:
        """The record after one run sent to a slot."""
        return InlineRecord(self.recent, max(0, self.skip - 1), self.backoff)


def runs_inline(*, budget_s: float, preemptible: bool, input_bytes: int, memory_bytes: int,
                record: InlineRecord) -> bool:
    """Whether a job :func:`decide` starts should run on the event loop's thread.

    Inline runs save the hand-over to a slot thread and back, which costs more
    than a short function itself. The run still takes the slot ``decide``
    gave it, in queue order. It is bounded by ``budget_s``: the engine
    abandons it there, and the job goes to a slot thread. Chosen only where
    that stays rare: the engine can preempt, the inputs are small (copying
    them in cannot be interrupted), the memory bound is moderate (one bulk
    memory instruction cannot be interrupted either), and the function is not
    backing off after proving long (see :func:`after_inline`).
    """
    return (budget_s > 0 and preemptible and input_bytes <= INLINE_MAX_INPUT_BYTES
            and memory_bytes <= INLINE_MAX_MEMORY_BYTES and record.skip == 0)


def runs_apart(*, startable: bool, input_bytes: int) -> bool:
    """Whether a job that does not run inline should be waited for by the event loop.

    Engines whose sandboxes run on their own (processes) can be started from
    the loop and waited for on a descriptor, which saves the hand-over to a
    slot thread and back. Setting up copies the inputs on the loop's thread,
    so only small inputs go this way; larger ones are set up on a slot thread.
    """
    return startable and input_bytes <= INLINE_MAX_INPUT_BYTES


def after_inline(record: InlineRecord, observed_s: float, budget_s: float, *,
                 preempted: bool) -> InlineRecord:
    """The record after an inline run that took ``observed_s`` of CPU (or was abandoned).

    A function proves long when a run is abandoned, or when its last
    :data:`INLINE_WINDOW` inline runs each took more than :data:`INLINE_SHARE`
    of the budget: it would hold the loop longer than the hand-over it saves,
    and leave the other cores idle. Its next runs then go to slots, twice as
    many each time it proves long again, so a long function costs the loop at
    most one budget per :data:`BACKOFF_MAX` runs. One short run brings it back.
    Slot runs are not measured: under load their times include waits for the
    interpreter lock, not the function's own work.
    """
    recent = (*record.recent, max(observed_s, budget_s) if preempted else observed_s)
    recent = recent[-INLINE_WINDOW:]
    threshold = budget_s * INLINE_SHARE
    long = preempted or (len(recent) == INLINE_WINDOW and min(recent) > threshold)
    if not long:
        return InlineRecord(recent)
    backoff = min(BACKOFF_MAX, max(BACKOFF_MIN, record.backoff * 2))
    return InlineRecord(recent, skip=backoff, backoff=backoff)
