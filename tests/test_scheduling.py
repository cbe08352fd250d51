
from pappus.scheduling import (
    BACKOFF_MAX,
    BACKOFF_MIN,
    INLINE_MAX_INPUT_BYTES,
    INLINE_MAX_MEMORY_BYTES,
    INLINE_SHARE,
    INLINE_WINDOW,
    Decision,
    InlineRecord,
    WaitingJob,
    admits,
    after_inline,
    decide,
    effective_timeout_ms,
    runs_inline,
)


def test_fifo_onto_idle_slots() -> None:
    waiting = [WaitingJob(i, deadline=100.0) for i in (5, 6, 7)]
    assert decide(waiting, idle_slots=2, now=0.0) == Decision(start=(5, 6))


def test_no_idle_slot_starts_nothing() -> None:
    assert decide([WaitingJob(1, 10.0)], idle_slots=0, now=0.0) == Decision()


def test_expired_jobs_met_before_the_slots_fill_are_expired() -> None:
    waiting = [WaitingJob(1, 5.0), WaitingJob(2, 50.0), WaitingJob(3, 4.0)]
    assert decide(waiting, idle_slots=1, now=10.0) == Decision(start=(2,), expire=(1,))
    assert decide(waiting, idle_slots=2, now=10.0) == Decision(start=(2,), expire=(1, 3))


def test_scan_stops_when_slots_are_full() -> None:
    def endless():  # type: ignore[no-untyped-def]
        job_id = 0
        while True:
            job_id += 1
            yield WaitingJob(job_id, 100.0)

    assert decide(endless(), idle_slots=2, now=0.0) == Decision(start=(1, 2))


def test_expired_job_does_not_consume_a_slot() -> None:
    waiting = [WaitingJob(1, 1.0), WaitingJob(2, 50.0), WaitingJob(3, 50.0)]
    assert decide(waiting, idle_slots=1, now=2.0) == Decision(start=(2,), expire=(1,))


def test_admission_bound() -> None:
    assert admits(0, 1)
    assert not admits(1, 1)
    assert not admits(4096, 4096)


def test_request_may_lower_but_not_raise_timeout() -> None:
    assert effective_timeout_ms(1000, None) == 1000
    assert effective_timeout_ms(1000, 200) == 200
    assert effective_timeout_ms(1000, 5000) == 1000
    assert effective_timeout_ms(1000, 0) == 1


# -- the inline fast path's decision --------------------------------------------------

BUDGET = 0.001
SHORT = BUDGET * INLINE_SHARE / 4
LONG = BUDGET * INLINE_SHARE * 2


FRESH = InlineRecord()


def inline(record: InlineRecord = FRESH, **overrides: object) -> bool:
    facts: dict[str, object] = {"budget_s": BUDGET, "preemptible": True, "input_bytes": 0,
                                "memory_bytes": 64 << 20, "record": record}
    facts.update(overrides)
    return runs_inline(**facts)  # type: ignore[arg-type]


def test_inline_needs_a_preemptible_engine_a_budget_small_inputs_and_memory() -> None:
    assert inline()
    assert not inline(preemptible=False)
    assert not inline(budget_s=0.0)
    assert inline(input_bytes=INLINE_MAX_INPUT_BYTES)
    assert not inline(input_bytes=INLINE_MAX_INPUT_BYTES + 1)
    assert inline(memory_bytes=INLINE_MAX_MEMORY_BYTES)
    assert not inline(memory_bytes=INLINE_MAX_MEMORY_BYTES + 1)
    assert not inline(InlineRecord(skip=1))


def test_short_runs_stay_inline() -> None:
    record = InlineRecord()
    for _ in range(100):
        record = after_inline(record, SHORT, BUDGET, preempted=False)
        assert inline(record)
    assert record.recent == (SHORT,) * INLINE_WINDOW


def test_slow_runs_among_short_ones_do_not_count() -> None:
    record = InlineRecord()
    for observed in (LONG * 10, SHORT, LONG, LONG, SHORT, LONG, LONG):  # cold first, outliers
        record = after_inline(record, observed, BUDGET, preempted=False)
        assert inline(record), record


def test_a_long_function_proves_long_after_a_window_of_long_runs() -> None:
    record = InlineRecord()
    for _ in range(INLINE_WINDOW - 1):
        record = after_inline(record, LONG, BUDGET, preempted=False)
        assert inline(record)
    record = after_inline(record, LONG, BUDGET, preempted=False)
    assert not inline(record) and record.skip == BACKOFF_MIN


def test_a_long_function_backs_off_doubling_up_to_the_cap() -> None:
    record = InlineRecord((LONG,) * INLINE_WINDOW)
    record = after_inline(record, LONG, BUDGET, preempted=False)
    skips = []
    for _ in range(12):
        assert record.skip == record.backoff
        skips.append(record.skip)
        for _ in range(record.skip):
            assert not inline(record)
            record = record.skipped()
        assert inline(record)  # tried again after the back-off: one run
        record = after_inline(record, LONG, BUDGET, preempted=False)
    assert skips[:4] == [BACKOFF_MIN, 2 * BACKOFF_MIN, 4 * BACKOFF_MIN, 8 * BACKOFF_MIN]
    assert max(skips) == BACKOFF_MAX and skips[-1] == BACKOFF_MAX


def test_an_abandoned_run_backs_off_at_once_even_if_it_was_cheap() -> None:
    record = after_inline(InlineRecord(), 0.0, BUDGET, preempted=True)
    assert not inline(record) and record.skip == BACKOFF_MIN


def test_one_short_run_after_a_back_off_ends_it() -> None:
    record = after_inline(InlineRecord((LONG,) * INLINE_WINDOW), LONG, BUDGET, preempted=False)
    for _ in range(record.skip):
        record = record.skipped()
    record = after_inline(record, SHORT, BUDGET, preempted=False)
    assert inline(record) and (record.skip, record.backoff) == (0, 0)
