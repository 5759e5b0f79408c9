"""Scheduling of the target pollers without servers: phases spread over the interval, overruns counted and never
stacked, collections bounded by shared slots that a probing (unreachable) target never takes.

The fake target kind is tests/unit/test_poller.py's FakePoller, a subclass of the real TargetPoller.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from pgwatch_cpa.collectors.base import Collector
from pgwatch_cpa.collectors.metric_set import MetricSet
from pgwatch_cpa.daemon.poller import TargetPoller, start_phase
from pgwatch_cpa.daemon.snapshot import SnapshotStore
from tests.unit.test_poller import FakePoller, Scripted, make, run_cycles, value

pytest_plugins = ["tests.unit.test_poller"]  # its `clock` fixture


def test_phases_of_a_hundred_targets_spread_over_the_interval():
    interval = 15.0
    phases = [start_phase("postgres", f"org-shard-{i:03d}", interval) for i in range(100)]
    assert all(0.0 <= p < interval for p in phases)
    assert len(set(phases)) == 100, "no two targets start at the same instant"
    tenths = {int(p / interval * 10) for p in phases}
    assert tenths == set(range(10)), f"every tenth of the interval has a target starting in it: {sorted(tenths)}"


def test_phase_is_the_same_in_another_process_and_differs_by_kind():
    code = "from pgwatch_cpa.daemon.poller import start_phase; print(repr(start_phase('postgres', 'main', 15.0)))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert float(other) == start_phase("postgres", "main", 15.0), "a restart keeps the target's phase"
    assert start_phase("redis", "main", 15.0) != start_phase("postgres", "main", 15.0)


async def test_cycles_start_on_the_targets_phase_after_the_first(monkeypatch, clock):
    poller, _store = make([Scripted("quick")], interval=10.0)
    poller.phase = 7.0
    delays = await run_cycles(poller, monkeypatch, clock, 3)
    assert poller.cycles_completed == 3
    assert delays == pytest.approx([7.0, 10.0, 10.0]), "first cycle at start, then at anchor + 7 s + k * 10 s"


async def test_an_overrun_is_counted_and_the_next_cycle_starts_at_once(monkeypatch, clock):
    poller, store = make([Scripted("slow", on_collect=lambda: clock.advance(15.0))], interval=10.0)
    poller.phase = 0.0
    delays = await run_cycles(poller, monkeypatch, clock, 3)
    assert delays == [0.0, 0.0, 0.0], "a cycle longer than the interval is followed at once, not skipped"
    assert value(store, "pgwatch_cycle_overruns_total", target="db1") == 3
    assert value(store, "pgwatch_cycle_duration_seconds", target="db1") == pytest.approx(15.0)


async def test_a_cycle_on_time_is_no_overrun(monkeypatch, clock):
    poller, store = make([Scripted("quick", on_collect=lambda: clock.advance(2.0))], interval=10.0)
    await run_cycles(poller, monkeypatch, clock, 3)
    assert value(store, "pgwatch_cycle_overruns_total", target="db1") == 0
    assert value(store, "pgwatch_cycle_duration_seconds", target="db1") == pytest.approx(2.0)


class InFlight(Collector):
    """Sleeps ``seconds`` of real time, counting how many runs of any InFlight sharing ``gauge`` overlap."""

    kind = "postgres"

    def __init__(self, name: str, seconds: float, gauge: dict[str, int]) -> None:
        self.name = name  # type: ignore[misc]
        self.default_interval = None  # type: ignore[misc]
        self.seconds, self.gauge = seconds, gauge

    async def collect(self, ctx: object, out: MetricSet) -> None:
        self.gauge["now"] += 1
        self.gauge["max"] = max(self.gauge["max"], self.gauge["now"])
        try:
            await asyncio.sleep(self.seconds)
        finally:
            self.gauge["now"] -= 1


async def _run_until(pollers: list[TargetPoller], done, timeout: float, what: str) -> None:
    tasks = [asyncio.create_task(p.run()) for p in pollers]
    try:
        async with asyncio.timeout(timeout):
            while not done():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_overrunning_cycles_never_stack():
    gauge = {"now": 0, "max": 0}
    poller = FakePoller("slow", 0.1, [InFlight("slow", 0.25, gauge)], object(), SnapshotStore())
    await _run_until([poller], lambda: poller.cycles_completed >= 4, 30, "four cycles")
    assert gauge["max"] == 1, "a target never runs two cycles at once"
    assert poller.cycle_overruns == poller.cycles_completed


async def test_shared_slots_bound_the_collections_running_at_once():
    gauge = {"now": 0, "max": 0}
    pollers: list[TargetPoller] = [FakePoller(f"t{i}", 0.2, [InFlight("c", 0.1, gauge)], object(), SnapshotStore())
                                   for i in range(6)]
    share_cycle_slots(pollers, 2)
    await _run_until(pollers, lambda: all(p.cycles_completed >= 2 for p in pollers), 30, "two cycles of each")
    assert gauge["max"] == 2, f"at most 2 collections at once with 2 slots, saw {gauge['max']}"


def share_cycle_slots(pollers: list[TargetPoller], slots: int) -> None:
    """What the Fleet does: one semaphore for every target's collections."""
    semaphore = asyncio.Semaphore(slots)
    for poller in pollers:
        poller.cycle_slots = semaphore


class HungProbe(FakePoller):
    """A target whose probe never answers: it ends at the probe timeout, as a hung server's would."""

    async def probe(self) -> None:
        await asyncio.Event().wait()


async def test_a_probing_target_holds_no_slot():
    hung = HungProbe("hung", 1.0, [Scripted("c")], object(), SnapshotStore())
    healthy = FakePoller("healthy", 1.0, [Scripted("c")], object(), SnapshotStore())
    share_cycle_slots([hung, healthy], 1)
    await _run_until([hung, healthy], lambda: healthy.cycles_completed >= 3 and hung.cycles_completed >= 1, 30,
                     "three cycles of the healthy target beside a hung one, with one slot")
    assert hung.errors == hung.cycles_completed >= 1, "the hung target is down: every probe timed out"
    assert healthy.cycle_overruns == 0, "the healthy target never waited for the slot through the hung one's probe"


@pytest.mark.parametrize("bad", [0, 1001, "many"])
def test_max_concurrent_cycles_out_of_bounds_is_an_error_with_its_path(bad):
    from pgwatch_cpa.config.settings import settings_from_mapping
    from pgwatch_cpa.errors import ConfigError

    assert settings_from_mapping({}, environ={}).max_concurrent_cycles == 16
    with pytest.raises(ConfigError, match="max_concurrent_cycles"):
        settings_from_mapping({"max_concurrent_cycles": bad}, environ={})
