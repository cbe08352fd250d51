"""The dispatcher: runs functions and composition DAGs on a bounded set of compute slots.

Every function invocation becomes a *job* in one bounded FIFO queue (capacity
``queue_size``; a full queue answers :class:`pappus.errors.Overloaded` instead
of growing). Jobs start on compute slots (one thread each, default one per
core) according to :func:`pappus.scheduling.decide`; the blocking
``Engine.invoke`` runs on the slot thread, so the event loop never waits on a
sandbox for long. The one exception is the *inline* fast path
(:func:`pappus.scheduling.runs_inline`): a job of a short function on a
preemptible engine runs on the event loop's thread, in the slot it was given,
bounded by ``inline_budget_s``; a run that reaches the budget is abandoned
(functions are pure, so nothing of it is observable) and goes to the slot's
thread like any other. Jobs on engines whose sandboxes run on their own
(processes, :attr:`pappus.engines.base.Engine.startable`) are started from the
loop and waited for on a descriptor (:func:`pappus.scheduling.runs_apart`),
still one per slot. Compositions are executed by :func:`pappus.composition.run_composition`,
whose ``call`` re-enters :meth:`Dispatcher._run_entry` for every shard, so nested
compositions and sharded functions share the same queue and slots.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pappus.composition import (
    AnySharding,
    CompositionGraph,
    build_compositions,
    run_composition,
)
from pappus.engines.base import InvocationResult, Limits, PendingRun
from pappus.errors import (
    CompositionInvalid,
    FunctionFailed,
    InvocationTimeout,
    NotFound,
    Overloaded,
    PappusError,
    SandboxCrash,
)
from pappus.invocation import (
    DispatcherStatistics,
    Invocation,
    InvocationObserver,
    SystemFunction,
    Timings,
)
from pappus.model import DataSet, absent_if_empty
from pappus.registry import Entry, RegisteredFunction, Registry
from pappus.scheduling import (
    InlineRecord,
    WaitingJob,
    admits,
    after_inline,
    decide,
    effective_timeout_ms,
    runs_apart,
    runs_inline,
)

STDERR_TAIL_BYTES = 4096


COMPOSITION_GRACE_S = 0.5
"""Extra time a composition waits past its deadline for engines to report ``timeout``."""
DEFAULT_INLINE_BUDGET_S = 0.001
"""How long an inline run may hold the event loop before it is moved to a slot."""
INLINE_RECORDS_MAX = 4096
"""Functions the inline decision remembers; past that the oldest record is forgotten
(functions come and go by name, and a forgotten one simply starts afresh)."""


@dataclass(slots=True)
class _Job:
    job_id: int
    function: RegisteredFunction
    inputs: list[DataSet | None]
    limits: Limits
    future: asyncio.Future[InvocationResult]
    enqueued_at: float
    started_at: float = 0.0


@dataclass(slots=True)
class _Counters:
    completed: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    inline: int = 0
    preempted: int = 0
    apart: int = 0


class Dispatcher:
    """Runs invocations; create inside a running event loop, then ``await close()``."""

    def __init__(
        self,
        registry: Registry,
        *,
        slots: int,
        queue_size: int,
        max_output_bytes: int,
        default_timeout_ms: int,
        sharding: AnySharding,
        observer: InvocationObserver | None = None,
        system_functions: Mapping[str, SystemFunction] | None = None,
        inline_budget_s: float = DEFAULT_INLINE_BUDGET_S,
    ) -> None:
        self.registry = registry
        self.slots = slots
        self.queue_size = queue_size
        self.max_output_bytes = max_output_bytes
        self.default_timeout_ms = default_timeout_ms
        self.sharding = sharding
        self.observer = observer or InvocationObserver()
        self.system_functions = dict(system_functions or {})
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=slots, thread_name_prefix="pappus-slot"
        )
        self._waiting: deque[_Job] = deque()
        self._running = 0
        self._ids = itertools.count(1)
        self._counters = _Counters()
        self._closed = False
        self.inline_budget_s = inline_budget_s
        self._inline: dict[str, InlineRecord] = {}
        """The inline decision's memory, per function name."""
        self._apart: dict[PendingRun, _Job] = {}
        """Runs started on their own, waited for by the event loop."""

    def __repr__(self) -> str:
        return (
            f"<Dispatcher slots={self.slots} queued={len(self._waiting)}/{self.queue_size} "
            f"running={self._running} completed={self._counters.completed}>"
        )

    def statistics(self) -> DispatcherStatistics:
        """Queued, running, completed and failed-by-outcome counts."""
        return DispatcherStatistics(
            slots=self.slots,
            queue_capacity=self.queue_size,
            queued=len(self._waiting),
            running=self._running,
            completed=self._counters.completed,
            failed=dict(self._counters.failed),
            inline=self._counters.inline,
            preempted=self._counters.preempted,
            apart=self._counters.apart,
        )

    async def close(self) -> None:
        """Fail waiting jobs, wait for running sandboxes to end, stop the slot threads."""
        self._closed = True
        while self._waiting:
            job = self._waiting.popleft()
            if not job.future.done():
                job.future.set_exception(Overloaded("the worker is shutting down"))
        await asyncio.to_thread(self._executor.shutdown, wait=True)
        while self._apart:  # each ends by its deadline at the latest
            await asyncio.sleep(0.005)

    # -- public entry --------------------------------------------------------

    async def catch_up(self) -> None:
        """Bring the registry up to date if another process changed it (one memory read if not)."""
        if self.registry.stale():
            await asyncio.to_thread(self.registry.sync)

    async def invoke(
        self, name: str, inputs: Sequence[DataSet | None], *, timeout_ms: int | None = None
    ) -> Invocation:
        """Run function or composition ``name`` on ``inputs`` (one slot per input set)."""
        started = time.perf_counter()
        await self.catch_up()
        system = self.system_functions.get(name)
        if system is not None:
            budget_ms = effective_timeout_ms(self.default_timeout_ms, timeout_ms)
            timings = Timings()
            results = await self._run_system(system, list(inputs),
                                             time.monotonic() + budget_ms / 1000, timings)
            timings.total_us = (time.perf_counter() - started) * 1e6
            return Invocation(tuple(
                DataSet(set_name, result.items if result is not None else ())
                for set_name, result in zip(system.signature.output_sets, results, strict=True)
            ), timings)
        entry = self.registry.get(name)
        return await self._invoke_entry(entry, inputs, timeout_ms, started)

    async def invoke_source(
        self, source: str, inputs: Sequence[DataSet | None], *, timeout_ms: int | None = None
    ) -> Invocation:
        """Run a single-use composition given as source (Dandelion's ``composition`` field).

        The source must define exactly one composition over registered
        functions; it is built and run, never registered.
        """
        started = time.perf_counter()
        await self.catch_up()
        graphs = build_compositions(source, self.registry.signature)
        if len(graphs) != 1:
            raise CompositionInvalid(
                f"a single-use composition source must define exactly one composition, "
                f"not {len(graphs)}", kind="InvalidComposition")
        return await self._invoke_entry(graphs[0], inputs, timeout_ms, started)

    async def _invoke_entry(self, entry: Entry | CompositionGraph,
                            inputs: Sequence[DataSet | None], timeout_ms: int | None,
                            started: float) -> Invocation:
        name = entry.record.name if not isinstance(entry, CompositionGraph) else entry.name
        if isinstance(entry, RegisteredFunction):
            budget_ms = effective_timeout_ms(entry.record.timeout_ms, timeout_ms)
        else:
            budget_ms = effective_timeout_ms(self.default_timeout_ms, timeout_ms)
        deadline = time.monotonic() + budget_ms / 1000
        timings = Timings()
        coroutine = self._run_entry(entry, list(inputs), deadline, timings)
        if isinstance(entry, RegisteredFunction):
            results = await coroutine
        else:
            # Engines enforce each sandbox's deadline; this bounds time spent queued.
            try:
                results = await asyncio.wait_for(
                    coroutine, budget_ms / 1000 + COMPOSITION_GRACE_S
                )
            except TimeoutError as exc:
                raise InvocationTimeout(
                    f"composition {name!r} did not finish within {budget_ms} ms",
                    timeout_ms=budget_ms,
                ) from exc
        timings.total_us = (time.perf_counter() - started) * 1e6
        output_names = entry.signature.output_sets
        outputs = tuple(
            DataSet(set_name, result.items if result is not None else ())
            for set_name, result in zip(output_names, results, strict=True)
        )
        return Invocation(outputs, timings)

    # -- execution -----------------------------------------------------------

    async def _run_entry(
        self, entry: Entry | CompositionGraph, inputs: list[DataSet | None], deadline: float,
        timings: Timings
    ) -> list[DataSet | None]:
        if isinstance(entry, RegisteredFunction):
            result = await self._run_function(entry, inputs, deadline, timings)
            return [absent_if_empty(s) for s in result.outputs]
        graph = entry if isinstance(entry, CompositionGraph) else entry.graph

        async def call(name: str, shard_inputs: list[DataSet | None]) -> list[DataSet | None]:
            system = self.system_functions.get(name)
            if system is not None:
                return await self._run_system(system, shard_inputs, deadline, timings)
            try:
                callee = self.registry.get(name)
            except NotFound as exc:
                raise NotFound(
                    f"composition {graph.name!r} applies {name!r}, which is not "
                    "registered on this worker",
                    name=name,
                ) from exc
            return await self._run_entry(callee, shard_inputs, deadline, timings)

        return await run_composition(
            graph, inputs, call, sharding=self.sharding, local_cores=self.slots
        )

    async def _run_system(self, system: SystemFunction, inputs: list[DataSet | None],
                          deadline: float, timings: Timings) -> list[DataSet | None]:
        """A communication function, on the event loop (never on a compute slot)."""
        began = time.perf_counter()
        try:
            results = await system.run(inputs, deadline)
            timings.io_us += (time.perf_counter() - began) * 1e6
        except PappusError as exc:
            self._counters.failed[exc.type] += 1
            self.observer.function_finished(system.name, exc.type,
                                            time.perf_counter() - began, None)
            raise
        self._counters.completed += 1
        self.observer.function_finished(system.name, "ok", time.perf_counter() - began, None)
        return [absent_if_empty(s) for s in results]

    async def _run_function(
        self,
        function: RegisteredFunction,
        inputs: list[DataSet | None],
        deadline: float,
        timings: Timings,
    ) -> InvocationResult:
        record = function.record
        slots: list[DataSet | None] = []
        for index, set_name in enumerate(record.input_sets):
            static = record.static_sets.get(set_name)
            if static is not None:
                # Static sets override whatever the caller supplied (Dandelion semantics).
                slots.append(DataSet(set_name, static))
            else:
                supplied = inputs[index] if index < len(inputs) else None
                slots.append(supplied)
        if self._closed:
            raise Overloaded("the worker is shutting down")
        if not admits(len(self._waiting), self.queue_size):
            self._counters.failed["overloaded"] += 1
            raise Overloaded(
                f"the invocation queue is full ({self.queue_size} waiting); retry later",
                queue_size=self.queue_size,
            )
        function_deadline = min(deadline, time.monotonic() + record.timeout_ms / 1000)
        loop = asyncio.get_running_loop()
        job = _Job(
            job_id=next(self._ids),
            function=function,
            inputs=slots,
            limits=Limits(function_deadline, record.memory_bytes, self.max_output_bytes),
            future=loop.create_future(),
            enqueued_at=time.perf_counter(),
        )
        self._waiting.append(job)
        self._pump()
        try:
            result = await job.future
        except PappusError as exc:
            self._record(record.name, exc.type, job, None)
            raise
        queue_us = (job.started_at - job.enqueued_at) * 1e6
        timings.add(queue_us, result)
        if result.exit_code != 0:
            error = self._function_failed(record.name, result)
            self._record(record.name, error.type, job, result)
            raise error
        self._record(record.name, "ok", job, result)
        return result

    def _record(
        self, name: str, outcome: str, job: _Job, result: InvocationResult | None
    ) -> None:
        if outcome == "ok":
            self._counters.completed += 1
        else:
            self._counters.failed[outcome] += 1
        began = job.started_at or job.enqueued_at
        self.observer.function_finished(name, outcome, time.perf_counter() - began, result)

    @staticmethod
    def _function_failed(name: str, result: InvocationResult) -> FunctionFailed:
        stderr = b""
        for data_set in result.outputs:
            if data_set.name == "stdio":
                stderr = b"".join(i.data for i in data_set.items if i.name == "stderr")
        stderr = stderr or result.stderr  # captured even where stdio is not an output set
        tail = stderr[-STDERR_TAIL_BYTES:].decode("utf-8", "replace")
        return FunctionFailed(
            f"function {name!r} exited with code {result.exit_code}",
            function=name, exit_code=result.exit_code, stderr=tail,
        )

    def _pump(self) -> None:
        """Apply the scheduling decision until no job can start.

        Jobs run inline hand their slot back at once, so the decision is taken
        again; after ``inline_budget_s`` of that, the rest waits for the next
        turn of the event loop, which has requests of its own to serve.
        """
        began = time.perf_counter()
        while self._pump_once():
            if time.perf_counter() - began > self.inline_budget_s:
                asyncio.get_running_loop().call_soon(self._pump)
                return

    def _pump_once(self) -> bool:
        """One scheduling decision, carried out; whether a slot was handed back meanwhile."""
        idle = self.slots - self._running
        if not self._waiting or (idle <= 0 and self._waiting[0].limits.deadline > time.monotonic()):
            return False
        snapshot = (WaitingJob(j.job_id, j.limits.deadline) for j in self._waiting)
        decision = decide(snapshot, idle, time.monotonic())
        if not decision.start and not decision.expire:
            return False
        # Chosen jobs are always a prefix-ordered subset from the head of the queue.
        chosen = set(decision.start) | set(decision.expire)
        by_id: dict[int, _Job] = {}
        while len(by_id) < len(chosen):
            job = self._waiting.popleft()
            if job.job_id in chosen:
                by_id[job.job_id] = job
            else:  # a live job skipped because no slot was left: keep its place
                self._waiting.appendleft(job)
                break
        for job_id in decision.expire:
            job = by_id[job_id]
            if not job.future.done():
                job.future.set_exception(
                    InvocationTimeout(
                        f"function {job.function.record.name!r} reached its deadline "
                        "while waiting for a compute slot",
                        queued=True,
                    )
                )
        handed_back = bool(decision.expire)
        for job_id in decision.start:
            handed_back |= self._start(by_id[job_id])
        return handed_back

    def _start(self, job: _Job) -> bool:
        """Start ``job`` in a slot; whether it is already done (inline, or abandoned)."""
        if job.future.done():  # the caller went away while the job waited
            return True
        job.started_at = time.perf_counter()
        if self._run_inline(job):
            return True
        engine = job.function.engine
        if runs_apart(startable=engine.startable, input_bytes=_input_bytes(job)):
            return self._start_apart(job)
        self._running += 1
        loop = asyncio.get_running_loop()
        self._executor.submit(self._execute, loop, job)
        return False

    def _start_apart(self, job: _Job) -> bool:
        """Start ``job``'s sandbox from the loop and wait for it there; whether it is done."""
        function = job.function
        try:
            pending = function.engine.start(function.artifact, job.inputs, job.limits)
        except Exception as exception:  # settled here; the caller takes the next decision
            self._settle(job, None, exception)
            return True
        loop = asyncio.get_running_loop()
        descriptor = pending.fileno()
        timer = loop.call_later(max(0.0, job.limits.deadline - time.monotonic()), pending.stop)

        def ended() -> None:
            loop.remove_reader(descriptor)
            timer.cancel()
            del self._apart[pending]
            try:
                result = pending.finish()
            except Exception as exception:
                self._finish(job, None, exception)
            else:
                self._finish(job, result, None)

        try:
            loop.add_reader(descriptor, ended)
        except Exception as exception:  # the loop cannot watch it: stop it and report
            timer.cancel()
            pending.stop()
            with contextlib.suppress(Exception):
                pending.finish()
            self._settle(job, None, exception)
            return True
        self._running += 1
        self._counters.apart += 1
        self._apart[pending] = job
        return False

    def _run_inline(self, job: _Job) -> bool:
        """The inline fast path: whether ``job`` ran (and is done) on the event loop's thread."""
        function = job.function
        engine = function.engine
        if not engine.preemptible or self.inline_budget_s <= 0:
            return False
        name = function.record.name
        record = self._inline.get(name, InlineRecord())
        if not runs_inline(budget_s=self.inline_budget_s, preemptible=engine.preemptible,
                           input_bytes=_input_bytes(job), memory_bytes=job.limits.memory_bytes,
                           record=record):
            if record.skip:
                self._inline[name] = record.skipped()
            return False
        self._running += 1
        result: InvocationResult | None = None
        failure: Exception | None = None
        cpu_began = time.thread_time()  # not wall time: waits for the GIL are not the function's
        try:
            result = engine.invoke_preemptible(function.artifact, job.inputs, job.limits,
                                               self.inline_budget_s)
        except Exception as exception:  # typed outcomes are final, as from a slot
            failure = exception
        finally:
            self._running -= 1
        abandoned = result is None and failure is None
        if name not in self._inline and len(self._inline) >= INLINE_RECORDS_MAX:
            del self._inline[next(iter(self._inline))]
        self._inline[name] = after_inline(record, time.thread_time() - cpu_began,
                                          self.inline_budget_s, preempted=abandoned)
        if abandoned:
            self._counters.preempted += 1
            return False
        self._counters.inline += 1
        self._settle(job, result, failure)
        return True

    def _execute(self, loop: asyncio.AbstractEventLoop, job: _Job) -> None:
        """Runs on a slot thread: invoke, then hand the outcome back to the loop once."""
        function = job.function
        try:
            result = function.engine.invoke(function.artifact, job.inputs, job.limits)
        except BaseException as exception:  # reported on the loop, never lost
            loop.call_soon_threadsafe(self._finish, job, None, exception)
        else:
            loop.call_soon_threadsafe(self._finish, job, result, None)

    def _finish(self, job: _Job, result: InvocationResult | None,
                exception: BaseException | None) -> None:
        """A slot thread's job ended: settle it and hand the slot to the next one."""
        self._running -= 1
        self._settle(job, result, exception)
        self._pump()

    @staticmethod
    def _settle(job: _Job, result: InvocationResult | None,
                exception: BaseException | None) -> None:
        if not job.future.done():
            if isinstance(exception, PappusError):
                job.future.set_exception(exception)
            elif exception is not None:
                job.future.set_exception(_engine_bug(job.function, exception))
            elif result is not None:
                job.future.set_result(result)


def _input_bytes(job: _Job) -> int:
    return sum(len(item.data) for data_set in job.inputs if data_set is not None
               for item in data_set.items)


def _engine_bug(function: RegisteredFunction, exception: BaseException) -> SandboxCrash:
    """An engine bug must not take the worker down; it is reported as a crash."""
    return SandboxCrash(
        f"engine {function.engine.name!r} failed unexpectedly: "
        f"{type(exception).__name__}: {exception}",
        internal=True,
    )
