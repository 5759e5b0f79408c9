"""The cache's circuit breaker and single flight (no server)."""

from __future__ import annotations

import asyncio

import pytest

from pgwatch_cpa.cpa.cache.breaker import BreakerState, CircuitBreaker
from pgwatch_cpa.cpa.cache.singleflight import SingleFlight


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(**kw) -> tuple[CircuitBreaker, Clock]:
    clock = Clock()
    return CircuitBreaker(clock=clock, **({"failure_threshold": 3, "reset_timeout": 5.0} | kw)), clock


def test_opens_after_consecutive_failures_only() -> None:
    b, _ = make()
    b.record_failure()
    b.record_failure()
    b.record_success()  # resets the streak
    b.record_failure()
    b.record_failure()
    assert b.state is BreakerState.CLOSED and b.allow()
    b.record_failure()
    assert b.state is BreakerState.OPEN and not b.allow() and b.opens == 1


def test_half_opens_after_reset_timeout_and_closes_on_success() -> None:
    b, clock = make()
    for _ in range(3):
        b.record_failure()
    clock.now += 4.9
    assert not b.allow()
    clock.now += 0.2
    assert b.state is BreakerState.HALF_OPEN
    assert b.allow()  # the probe
    assert not b.allow()  # only one probe at a time
    b.record_success()
    assert b.state is BreakerState.CLOSED and b.allow()


def test_failed_probe_reopens_and_restarts_the_timer() -> None:
    b, clock = make()
    for _ in range(3):
        b.record_failure()
    clock.now += 5
    assert b.allow()
    b.record_failure()
    assert b.state is BreakerState.OPEN and b.opens == 2
    clock.now += 4
    assert not b.allow()
    clock.now += 1
    assert b.allow()


def test_a_probe_that_never_reports_does_not_wedge_half_open() -> None:
    b, clock = make()
    for _ in range(3):
        b.record_failure()
    clock.now += 5
    assert b.allow()  # this probe's task is cancelled: no report
    assert not b.allow()
    clock.now += 5
    assert b.allow()


def test_success_threshold_and_probe_budget() -> None:
    b, clock = make(half_open_max_calls=2, success_threshold=2)
    for _ in range(3):
        b.record_failure()
    clock.now += 5
    assert b.allow() and b.allow() and not b.allow()
    b.record_success()
    assert b.state is BreakerState.HALF_OPEN
    b.record_success()
    assert b.state is BreakerState.CLOSED


@pytest.mark.parametrize("kw", [{"failure_threshold": 0}, {"reset_timeout": 0}, {"half_open_max_calls": 0}])
def test_invalid_settings(kw: dict) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(**kw)


# ---------------------------------------------------------------- single flight


async def test_single_flight_runs_once_for_concurrent_callers() -> None:
    sf, calls = SingleFlight(), 0

    async def work() -> dict:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return {"v": calls}

    results = await asyncio.gather(*(sf.do("k", work) for _ in range(50)))
    assert calls == 1 and len(sf) == 0
    assert [shared for _, shared in results].count(False) == 1
    assert all(value == {"v": 1} for value, _ in results)


async def test_single_flight_shares_errors_and_forgets_them() -> None:
    sf = SingleFlight()

    async def boom() -> None:
        await asyncio.sleep(0.01)
        raise KeyError("x")

    results = await asyncio.gather(*(sf.do("k", boom) for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, KeyError) for r in results)
    assert not sf.in_flight("k")


async def test_cancelled_leader_hands_over_instead_of_cancelling_joiners() -> None:
    sf, calls = SingleFlight(), 0

    async def work() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return calls

    leader = asyncio.create_task(sf.do("k", work))
    await asyncio.sleep(0)
    joiner = asyncio.create_task(sf.do("k", work))
    await asyncio.sleep(0.01)
    leader.cancel()
    value, shared = await joiner
    assert value == 2 and shared is False and calls == 2  # the joiner became the next leader
    with pytest.raises(asyncio.CancelledError):
        await leader
