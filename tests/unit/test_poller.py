"""The poller base (TargetPoller) in-process: a fake target and scripted collectors, a fake clock, no servers.

Only the public surface is exercised (poll_once, run, the metrics put in the SnapshotStore, the log lines), so the
tests hold whatever a target kind does to group its collectors.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import pytest

from pgwatch_cpa.collectors.base import Collector, CollectorDisabled
from pgwatch_cpa.collectors.metric_set import MetricSet
from pgwatch_cpa.config.settings import CollectorSettings
from pgwatch_cpa.daemon import poller as poller_module
from pgwatch_cpa.daemon.poller import TargetPoller
from pgwatch_cpa.daemon.snapshot import SnapshotStore
from pgwatch_cpa.secrets import REDACTOR

_real_sleep = asyncio.sleep


class FakeClock:
    """Stands in for time.monotonic in the poller module: time passes only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(poller_module, "time", SimpleNamespace(monotonic=fake))
    return fake


class FakePoller(TargetPoller):
    kind = "fake"
    up_metric = "fake_up"
    up_help = "1 if the fake target answered its probe."

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.probe_error: BaseException | None = None

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def probe(self) -> None:
        if self.probe_error is not None:
            raise self.probe_error

    @asynccontextmanager
    async def context(self, collector: Collector) -> AsyncIterator[Any]:
        yield SimpleNamespace(target=self.name)


class Scripted(Collector):
    """Writes ``fake_<name>_value`` unless ``error`` is set, in which case it raises it."""

    kind = "postgres"

    def __init__(self, name: str, error: BaseException | None = None, default_interval: float | None = None,
                 on_collect: Any = None) -> None:
        self.name = name  # type: ignore[misc]
        self.default_interval = default_interval  # type: ignore[misc]
        self.error = error
        self.on_collect = on_collect
        self.calls = 0

    async def collect(self, ctx: Any, out: MetricSet) -> None:
        self.calls += 1
        if self.on_collect is not None:
            self.on_collect()
        if self.error is not None:
            raise self.error
        out.gauge(f"fake_{self.name}_value", "A value from a fake collector.", 42.0, {"kind": "test"})


def value(store: SnapshotStore, name: str, **labels: str) -> float | None:
    """The one sample called ``name`` whose labels include ``labels``, or None."""
    found = [v for n, lab, v in store.samples() if n == name and all(lab.get(k) == x for k, x in labels.items())]
    assert len(found) <= 1, f"{name}{labels} is exported {len(found)} times"
    return found[0] if found else None


def poller_logs(caplog: pytest.LogCaptureFixture, *words: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.name.startswith("pgwatch_cpa") and all(w in r.getMessage() for w in words)]


def make(collectors: list[Collector], interval: float = 10.0, settings: Any = None) -> tuple[FakePoller,
                                                                                          SnapshotStore]:
    store = SnapshotStore()
    return FakePoller("db1", interval, collectors, settings or SimpleNamespace(), store), store


class _StopLoop(Exception):
    pass


class SleepRecorder:
    """Replaces asyncio.sleep: records the delay run() asks for, lets the fake clock pass it, stops after n."""

    def __init__(self, clock: FakeClock, stop_after: int) -> None:
        self.clock = clock
        self.stop_after = stop_after
        self.delays: list[float] = []

    async def __call__(self, delay: float, result: Any = None) -> Any:
        self.delays.append(delay)
        self.clock.advance(delay)
        if len(self.delays) >= self.stop_after:
            raise _StopLoop
        await _real_sleep(0)
        return result


async def run_cycles(poller: TargetPoller, monkeypatch: pytest.MonkeyPatch, clock: FakeClock, n: int) -> list[float]:
    recorder = SleepRecorder(clock, n)
    monkeypatch.setattr(asyncio, "sleep", recorder)
    with pytest.raises(_StopLoop):
        await poller.run()
    return recorder.delays


# -- scheduling


async def test_run_backs_off_doubling_up_to_the_interval_and_resets_after_success(monkeypatch, clock):
    poller, _store = make([Scripted("ok")], interval=10.0)
    outcomes = iter([False] * 5 + [True] + [False] * 2)

    async def probe() -> None:
        if not next(outcomes):
            raise ConnectionRefusedError("connection refused")

    poller.probe = probe  # type: ignore[method-assign]
    delays = await run_cycles(poller, monkeypatch, clock, 8)

    first = delays[0]
    assert 0 < first < 10.0, "a failed probe is retried sooner than the interval"
    expected = [min(first * 2**i, 10.0) for i in range(5)]
    assert delays[:5] == pytest.approx(expected)
    assert expected[-1] == 10.0, "five failures in a row reach the cap (the interval)"
    up_started = 1000.0 + sum(delays[:5])
    next_start = up_started + delays[5]
    assert 5.0 <= delays[5] <= 15.0, "after a success the loop waits about an interval"
    slots = (next_start - 1000.0 - poller.phase) / 10.0
    assert slots == pytest.approx(round(slots), abs=1e-6), \
        "after a success the target rejoins its phase of the interval"
    assert delays[6:] == pytest.approx([first, 2 * first]), "the backoff starts over after a success"
    assert poller.attempts == 8 and poller.errors == 7


async def test_run_keeps_its_cadence_by_subtracting_the_cycle_duration(monkeypatch, clock):
    poller, _store = make([Scripted("slowish", on_collect=lambda: clock.advance(3.0))], interval=10.0)
    poller.phase = 0.0
    delays = await run_cycles(poller, monkeypatch, clock, 2)
    assert delays == pytest.approx([7.0, 7.0])


async def test_collectors_with_a_longer_interval_run_only_when_due(clock):
    every = Scripted("every_cycle")
    slow = Scripted("slow", default_interval=60.0)
    tuned = Scripted("tuned")  # on the target's interval by default, every 30 s through the config
    off = Scripted("off")
    settings = SimpleNamespace(collectors={"tuned": CollectorSettings(interval=30),
                                           "off": CollectorSettings(enabled=False)})
    poller, store = make([every, slow, tuned, off], interval=10.0, settings=settings)

    calls = []
    for _ in range(7):  # t = 0, 10, ..., 60
        assert await poller.poll_once()
        calls.append((every.calls, slow.calls, tuned.calls))
        clock.advance(10.0)

    assert [c[0] for c in calls] == [1, 2, 3, 4, 5, 6, 7]
    assert [c[1] for c in calls] == [1, 1, 1, 1, 1, 1, 2]
    assert [c[2] for c in calls] == [1, 1, 1, 2, 2, 2, 3]
    assert off.calls == 0
    assert value(store, "pgwatch_collector_enabled", collector="off") is None, "a collector off in config is absent"
    # A collector that is not due keeps its last samples and stays healthy.
    assert value(store, "fake_slow_value", target="db1") == 42.0
    assert value(store, "pgwatch_collector_success", collector="slow") == 1.0


# -- collector faults


async def test_collector_disabled_after_one_failure_logged_once_and_exported(caplog, clock):
    caplog.set_level(logging.INFO)
    missing = Scripted("statements", error=CollectorDisabled("extension pg_stat_statements is not installed"))
    ok = Scripted("ok")
    poller, store = make([missing, ok])

    for _ in range(4):
        assert await poller.poll_once()
        clock.advance(10.0)

    assert missing.calls == 1, "a disabled collector is never called again"
    assert ok.calls == 4
    logged = poller_logs(caplog, "statements")
    assert len(logged) == 1
    assert logged[0].levelno == logging.WARNING
    assert "pg_stat_statements is not installed" in logged[0].getMessage()
    assert value(store, "pgwatch_collector_enabled", target="db1", collector="statements") == 0.0
    assert value(store, "pgwatch_collector_success", target="db1", collector="statements") == 0.0
    assert value(store, "pgwatch_collector_enabled", target="db1", collector="ok") == 1.0
    assert value(store, "pgwatch_collector_success", target="db1", collector="ok") == 1.0


async def test_a_failing_collector_does_not_hide_another_collectors_samples(clock):
    broken = Scripted("broken", error=RuntimeError("relation does not exist"))
    ok = Scripted("ok")
    poller, store = make([broken, ok])

    assert await poller.poll_once(), "a collector failure does not make the target down"
    assert value(store, "fake_ok_value", target="db1", kind="test") == 42.0
    assert value(store, "fake_broken_value") is None
    assert value(store, "pgwatch_collector_success", collector="broken") == 0.0
    assert value(store, "pgwatch_collector_success", collector="ok") == 1.0
    assert value(store, "fake_up", target="db1") == 1.0


async def test_collector_health_transitions_log_once_per_state_change(caplog, clock):
    caplog.set_level(logging.INFO)
    flaky = Scripted("flaky")
    poller, store = make([flaky])
    script = [None, RuntimeError("boom"), RuntimeError("boom again"), None, None]

    success, samples = [], []
    for error in script:
        flaky.error = error
        await poller.poll_once()
        success.append(value(store, "pgwatch_collector_success", collector="flaky"))
        samples.append(value(store, "fake_flaky_value"))
        clock.advance(10.0)

    assert success == [1.0, 0.0, 0.0, 1.0, 1.0]
    assert samples == [42.0, None, None, 42.0, 42.0], "a failed run does not keep serving the previous samples"
    failed = poller_logs(caplog, "flaky", "failed")
    assert [r.levelno for r in failed] == [logging.WARNING], "failed -> failed logs nothing more"
    assert "boom" in failed[0].getMessage() and "boom again" not in failed[0].getMessage()
    recovered = poller_logs(caplog, "flaky", "recovered")
    assert [r.levelno for r in recovered] == [logging.INFO]
    assert len(poller_logs(caplog, "flaky")) == 2


async def test_target_up_down_transitions_metric_and_logs(caplog, clock):
    caplog.set_level(logging.INFO)
    ok = Scripted("ok")
    poller, store = make([ok])
    script = [None, ConnectionRefusedError("refused"), ConnectionRefusedError("refused"), None]

    up, success, samples = [], [], []
    for error in script:
        poller.probe_error = error
        assert await poller.poll_once() is (error is None)
        up.append(value(store, "fake_up", target="db1"))
        success.append(value(store, "pgwatch_collector_success", collector="ok"))
        samples.append(value(store, "fake_ok_value"))
        clock.advance(10.0)

    assert up == [1.0, 0.0, 0.0, 1.0]
    assert success == [1.0, 0.0, 0.0, 1.0], "a down target's collectors are not reported healthy"
    assert samples == [42.0, None, None, 42.0], "a down target serves no stale samples"
    assert ok.calls == 2, "collectors do not run while the target is down"
    assert value(store, "pgwatch_connection_attempts_total", target="db1") == 4.0
    assert value(store, "pgwatch_connection_errors_total", target="db1") == 2.0

    down = poller_logs(caplog, "db1", "is down")
    assert [r.levelno for r in down] == [logging.WARNING], "down -> down logs nothing more"
    assert "refused" in down[0].getMessage()
    assert [r.levelno for r in poller_logs(caplog, "db1", "is up")] == [logging.INFO, logging.INFO]
    assert len(poller_logs(caplog, "db1")) == 3
    assert poller.cycles_completed == 4, "a failed poll still completes a cycle (readiness counts it)"


async def test_errors_are_logged_on_one_line_without_registered_secrets(caplog, clock):
    secret = "pw-" + secrets.token_hex(8)
    REDACTOR.add(secret)
    caplog.set_level(logging.INFO)  # caplog's handler has no RedactingFilter: the poller itself must redact
    leaky = Scripted("leaky", error=RuntimeError(f"query failed\nDETAIL: dsn host=db password={secret}"))
    poller, _store = make([leaky])

    await poller.poll_once()
    poller.probe_error = OSError(f"could not connect: password authentication failed for '{secret}'")
    await poller.poll_once()

    messages = [r.getMessage() for r in poller_logs(caplog, "db1")]
    failed = [m for m in messages if "leaky failed" in m]
    down = [m for m in messages if "is down" in m]
    assert len(failed) == 1 and len(down) == 1
    for message in failed + down:
        assert secret not in message
        assert "****" in message
        assert "\n" not in message
    assert "RuntimeError" in failed[0] and "DETAIL" in failed[0]
    assert "OSError" in down[0] and "password authentication failed" in down[0]
