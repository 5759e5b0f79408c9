"""Scheduling against a real PostgreSQL: a hung target, or fifty (PostgreSQL and Redis), never delays a healthy
target's cycles.

A hung target is a TCP listener that accepts connections and never answers (as a frozen server or a black-holed
network does); the daemon's pollers are built from a real config by the Daemon, with its shared cycle slots.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import pytest

from pgwatch_cpa.config.settings import settings_from_mapping
from pgwatch_cpa.daemon.lifecycle import Daemon
from pgwatch_cpa.daemon.poller import TargetPoller

pytestmark = pytest.mark.integration

INTERVAL = "2s"
HEALTHY_CYCLES = 4


@pytest.fixture
def hung_port() -> Iterator[int]:
    """A loopback port whose listener accepts every connection and never sends a byte."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=256)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept_forever() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept_forever, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    listener.close()


def _daemon(pg, hung_port: int, hung_postgres: int, slots: int, hung_redis: int = 0) -> Daemon:
    postgres = [{"name": f"hung-{i:02d}", "dsn": f"postgresql://monitor@127.0.0.1:{hung_port}/cpa",
                 "connect_timeout": "1s"} for i in range(hung_postgres)]
    redis = [{"name": f"hung-redis-{i:02d}", "url": f"redis://127.0.0.1:{hung_port}/0", "timeout": "1s"}
             for i in range(hung_redis)]
    settings = settings_from_mapping({"interval": INTERVAL, "max_concurrent_cycles": slots, "redis": redis,
                                      "postgres": [{"name": "healthy", "dsn": pg.dsn()}, *postgres]}, environ={})
    return Daemon(settings)


async def _run_until_healthy_cycles(pollers: list[TargetPoller], timeout: float = 60) -> None:
    for poller in pollers:
        await poller.open()
    tasks = [asyncio.create_task(p.run()) for p in pollers]
    healthy = pollers[0]
    try:
        async with asyncio.timeout(timeout):
            while healthy.cycles_completed < HEALTHY_CYCLES or any(p.cycles_completed == 0 for p in pollers):
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"after {timeout}s the healthy target completed {healthy.cycles_completed} cycles "
                             f"(wanted {HEALTHY_CYCLES}) and {sum(p.cycles_completed == 0 for p in pollers)} "
                             "targets none") from None
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(p.close() for p in pollers), return_exceptions=True)


def _assert_healthy_on_time_and_hung_down(pollers: list[TargetPoller]) -> None:
    healthy, hung = pollers[0], pollers[1:]
    assert healthy.name == "healthy" and healthy.errors == 0
    assert healthy.cycle_overruns == 0, "the healthy target's cycles never waited behind the hung targets"
    for poller in hung:
        assert poller.errors == poller.cycles_completed >= 1, f"{poller.name} answered a probe?"
    samples = {(n, labels.get("target")): v for n, labels, v in pollers[0].store.samples()}
    assert samples[("pg_up", "healthy")] == 1.0
    assert all(samples[(p.up_metric, p.name)] == 0.0 for p in hung)
    assert samples[("pgwatch_cycle_overruns_total", "healthy")] == 0.0


async def test_a_hung_target_does_not_delay_a_healthy_one_even_with_one_slot(pg_server, hung_port):
    daemon = _daemon(pg_server, hung_port, hung_postgres=1, slots=1)
    await _run_until_healthy_cycles(daemon.pollers)
    _assert_healthy_on_time_and_hung_down(daemon.pollers)


async def test_a_burst_of_fifty_unreachable_targets_does_not_starve_the_reachable_one(pg_server, hung_port):
    daemon = _daemon(pg_server, hung_port, hung_postgres=40, hung_redis=10, slots=4)
    assert len(daemon.pollers) == 51 and daemon.pollers[0].name == "healthy"
    await _run_until_healthy_cycles(daemon.pollers)
    _assert_healthy_on_time_and_hung_down(daemon.pollers)
