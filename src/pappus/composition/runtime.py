"""The dataflow executor: runs a composition graph through a ``call`` callback (Dandelion §3.4).

A statement starts as soon as every set it reads is available. If a
non-``optional`` input is absent (``None``; an empty set counts as absent),
the statement is skipped and all its outputs become absent, which
propagates. Otherwise it is sharded (:func:`~pappus.composition.sharding.plan_shards`)
and all shards run concurrently; output ``k`` is the concatenation of the
shards' outputs ``k`` in shard order, stably sorted by key, and absent if
empty. The composition finishes when nothing is left that can run; outputs
never produced are ``None``.

A set becomes available when every statement assigning it has finished.
Only composition outputs may have several writers; the value is then that
of the last writer in source order that produced items, so a skipped
alternative never erases a result and the outcome does not depend on timing
(Dandelion keeps whichever writer happened to finish last).

Concurrency is structured: every statement and shard is a task of an
:class:`asyncio.TaskGroup`. When a call raises, everything still running is
cancelled and the first :class:`~pappus.errors.PappusError` raised is
re-raised as itself, never wrapped in an exception group.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from pappus.composition.graph import CompositionGraph, Statement
from pappus.composition.sharding import AnySharding, BoundSet, plan_shards
from pappus.errors import PappusError, first_error
from pappus.model import DataSet, absent_if_empty

CallFunction = Callable[[str, list[DataSet | None]], Awaitable[Sequence[DataSet | None]]]
"""``call(function_name, inputs)``: one input slot per declared parameter of that
function (``None`` = absent); returns one slot per declared output."""


async def run_composition(
    graph: CompositionGraph,
    inputs: Sequence[DataSet | None],
    call: CallFunction,
    *,
    sharding: AnySharding,
    local_cores: int,
) -> list[DataSet | None]:
    """Run ``graph`` on ``inputs`` (one slot per composition input set) and return its outputs.

    Missing input slots count as absent and extra ones are ignored. Returns
    one slot per composition output set, ``None`` where nothing was produced.
    """
    run = _Run(graph, inputs, call, sharding, local_cores)
    await run.execute()
    return run.outputs()


class _Run:
    """The state of one composition run: which sets exist and which statements started."""

    def __init__(self, graph: CompositionGraph, inputs: Sequence[DataSet | None],
                 call: CallFunction, sharding: AnySharding, local_cores: int) -> None:
        self.graph = graph
        self.call = call
        self.sharding = sharding
        self.local_cores = local_cores
        self.available: dict[int, DataSet | None] = {
            set_id: absent_if_empty(inputs[set_id]) if set_id < len(inputs) else None
            for set_id in range(len(graph.input_sets))
        }
        self.writers_left: dict[int, int] = {}
        for statement in graph.statements:
            for set_id in statement.writes:
                self.writers_left[set_id] = self.writers_left.get(set_id, 0) + 1
        self.produced: dict[int, dict[int, DataSet | None]] = {}
        self.started: set[int] = set()

    def __repr__(self) -> str:
        return (f"<composition run {self.graph.name}: {len(self.started)}/"
                f"{len(self.graph.statements)} statement(s) started, "
                f"{len(self.available)} set(s) available>")

    async def execute(self) -> None:
        """Run every statement that can run; return when none is left running."""
        try:
            async with asyncio.TaskGroup() as group:
                self._launch_ready(group)
        except BaseExceptionGroup as errors:
            failure = first_error(errors)
        else:
            return
        # Raised outside the handler so the error keeps its own cause and
        # context instead of pointing back at the group that carried it.
        raise failure

    def _launch_ready(self, group: asyncio.TaskGroup) -> None:
        for index, statement in enumerate(self.graph.statements):
            if index not in self.started and all(s in self.available for s in statement.reads):
                self.started.add(index)
                group.create_task(self._run(index, statement, group),
                                  name=f"{self.graph.name}: {statement.function}")

    async def _run(self, index: int, statement: Statement, group: asyncio.TaskGroup) -> None:
        results = await self._run_statement(statement)
        for result_index, set_id in enumerate(statement.outputs):
            if set_id is not None:
                self._record(set_id, index, results[result_index])
        self._launch_ready(group)

    def _record(self, set_id: int, statement_index: int, value: DataSet | None) -> None:
        self.produced.setdefault(set_id, {})[statement_index] = value
        self.writers_left[set_id] -= 1
        if self.writers_left[set_id] == 0:
            self.available[set_id] = self._resolve(set_id)

    def _resolve(self, set_id: int) -> DataSet | None:
        """The last writer's result in source order that has items."""
        by_writer = self.produced.get(set_id, {})
        for statement_index in sorted(by_writer, reverse=True):
            if by_writer[statement_index] is not None:
                return by_writer[statement_index]
        return None

    async def _run_statement(self, statement: Statement) -> list[DataSet | None]:
        """All shards of one statement; one combined set (or ``None``) per declared output."""
        bound = [
            BoundSet(b.sharding, b.optional, self.available[b.set_id]) if b is not None else None
            for b in statement.inputs
        ]
        shards = plan_shards(bound, statement.join, self.sharding, self.local_cores,
                             min_set_bytes=statement.min_set_bytes)
        if not shards:
            return [None] * len(statement.outputs)
        results = await call_all(self.call, statement.function, shards)
        return [combine([r[k] if k < len(r) else None for r in results])
                for k in range(len(statement.outputs))]

    def outputs(self) -> list[DataSet | None]:
        """One slot per composition output (partial multi-writer results count)."""
        return [
            self.available[set_id] if set_id in self.available else self._resolve(set_id)
            for set_id in self.graph.output_ids
        ]


async def call_all(call: CallFunction, function: str, shards: list[list[DataSet | None]]
                   ) -> list[Sequence[DataSet | None]]:
    """``call`` once per shard, all concurrently; results in shard order.

    The first failure cancels the other shards and is re-raised as itself.
    """
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_invoke(call, function, shard)) for shard in shards]
    except BaseExceptionGroup as errors:
        failure = first_error(errors)
    else:
        return [task.result() for task in tasks]
    raise failure


async def _invoke(call: CallFunction, function: str, inputs: list[DataSet | None]
                  ) -> Sequence[DataSet | None]:
    # A coroutine of our own: ``call`` may return any awaitable, a task needs a coroutine.
    try:
        return await call(function, inputs)
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # we are being cancelled: let it through
        # A callee that cancels itself would otherwise vanish silently: a
        # cancelled child is not an error to a TaskGroup.
        raise PappusError(f"the call to {function!r} was cancelled by the callee",
                          function=function) from exc


def combine(parts: Sequence[DataSet | None]) -> DataSet | None:
    """Concatenate sets in order, stably sorted by key; named after the first with items."""
    present = [part for part in parts if part is not None and part.items]
    if not present:
        return None
    items = sorted((item for part in present for item in part.items), key=lambda i: i.key)
    return DataSet(present[0].name, tuple(items))
