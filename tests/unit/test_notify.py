"""Notification delivery against a real HTTP receiver on loopback (aiohttp server, no mocks)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time

import aiohttp
import pytest

from pgwatch_cpa.alerts import notify
from pgwatch_cpa.alerts.delivery import Endpoint, sign
from pgwatch_cpa.alerts.notify import (
    DEFAULT_INHIBIT,
    AlertmanagerReceiver,
    GroupingPolicy,
    NotifyMetrics,
    OutgoingAlert,
    WebhookReceiver,
    apply_inhibition,
)
from pgwatch_cpa.demo.sink import WebhookSink


@pytest.fixture
async def sink():
    """The shared webhook sink; the tests set its ``status`` to play a failing receiver."""
    sink = await WebhookSink().start()
    yield sink
    await sink.close()


def alert(name: str, target: str = "main", resolved_at: float | None = None, **labels: str) -> OutgoingAlert:
    return OutgoingAlert({"alertname": name, "target": target, **labels}, {"summary": f"{name} on {target}"},
                         starts_at=1_700_000_000.0, ends_at=resolved_at)


async def run_receiver(receiver, seconds: float):
    stop = asyncio.Event()
    async with aiohttp.ClientSession() as session:
        task = asyncio.create_task(receiver.run(session, stop))
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.wait_for(task, 5)


def webhook(sink: WebhookSink, **policy) -> WebhookReceiver:
    endpoint = Endpoint(sink.url, timeout=1, max_attempts=3, backoff_initial=0.05, backoff_max=0.1)
    return WebhookReceiver("oncall", endpoint, GroupingPolicy(**policy), "http://pgwatch", NotifyMetrics(None))


async def test_alerts_of_one_group_arrive_together_in_v4_shape(sink):
    receiver = webhook(sink, group_by=("target",), group_wait=0.3, group_interval=10, repeat_interval=10)
    receiver.update([alert("A")], time.time())
    await asyncio.sleep(0.1)
    receiver.update([alert("A"), alert("B")], time.time())
    await run_receiver(receiver, 1.0)
    assert len(sink.requests) == 1
    body = sink.requests[0].body
    assert body["version"] == "4" and body["status"] == "firing" and body["receiver"] == "oncall"
    assert body["groupLabels"] == {"target": "main"}
    assert body["commonLabels"] == {"target": "main"}
    assert sorted(a["labels"]["alertname"] for a in body["alerts"]) == ["A", "B"]
    assert body["alerts"][0]["startsAt"] == "2023-11-14T22:13:20.000Z"
    assert body["alerts"][0]["endsAt"] == "0001-01-01T00:00:00Z"


async def test_resolve_is_delivered_after_group_interval(sink):
    receiver = webhook(sink, group_wait=0.1, group_interval=0.3, repeat_interval=100)
    receiver.update([alert("A")], time.time())
    await run_receiver(receiver, 0.5)
    receiver.update([alert("A", resolved_at=time.time())], time.time())
    await run_receiver(receiver, 0.8)
    assert [r.body["status"] for r in sink.requests] == ["firing", "resolved"]
    assert sink.requests[1].body["alerts"][0]["status"] == "resolved"
    await run_receiver(receiver, 0.6)
    assert len(sink.requests) == 2  # nothing left to say


async def test_receiver_down_then_up_loses_nothing_and_does_not_duplicate(sink):
    receiver = webhook(sink, group_by=("target",), group_wait=0.1, group_interval=0.4, repeat_interval=100)
    sink.status = 503
    receiver.update([alert("A")], time.time())
    await run_receiver(receiver, 0.3)
    failed_attempts = len(sink.requests)
    assert failed_attempts == 3  # max_attempts, then it waits for group_interval
    receiver.update([alert("A", resolved_at=time.time()), alert("B")], time.time())
    sink.status = 200
    await run_receiver(receiver, 1.5)
    delivered = sink.requests[failed_attempts:]
    assert len(delivered) == 1, "the current state once, not a backlog"
    states = {a["labels"]["alertname"]: a["status"] for a in delivered[0].body["alerts"]}
    assert states == {"A": "resolved", "B": "firing"}


async def test_client_error_is_not_retried(sink):
    receiver = webhook(sink, group_wait=0.05, group_interval=100, repeat_interval=100)
    sink.status = 400
    receiver.update([alert("A")], time.time())
    await run_receiver(receiver, 0.8)
    assert len(sink.requests) == 1
    assert receiver.metrics.failed.labels("oncall", "rejected")._value.get() == 1


async def test_repeat_interval_resends_a_still_firing_group(sink):
    receiver = webhook(sink, group_wait=0.05, group_interval=0.1, repeat_interval=0.5)
    receiver.update([alert("A")], time.time())
    await run_receiver(receiver, 0.3)
    assert len(sink.requests) == 1
    await run_receiver(receiver, 0.6)
    assert len(sink.requests) == 2


async def test_a_hanging_receiver_gets_every_group_attempted_within_a_few_timeouts(sink):
    """19 groups against a receiver that never answers within the 1 s timeout: delivered MAX_IN_FLIGHT at a time,
    every group is attempted after ceil(19 / 8) - 1 = 2 timeouts, not one group after another (18 timeouts)."""
    sink.delay = 30.0
    endpoint = Endpoint(sink.url, timeout=1, max_attempts=1)
    policy = GroupingPolicy(group_by=("alertname",), group_wait=0.05, group_interval=100, repeat_interval=100)
    receiver = WebhookReceiver("oncall", endpoint, policy, "", NotifyMetrics(None))
    receiver.update([alert(f"A{i}") for i in range(19)], time.time())
    stop = asyncio.Event()
    async with aiohttp.ClientSession() as session:
        task = asyncio.create_task(receiver.run(session, stop))
        started = time.monotonic()
        await asyncio.sleep(0.6)
        in_flight_at_once = len(sink.requests)
        while len(sink.requests) < 19 and time.monotonic() - started < 20:
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - started
        stop.set()
        await asyncio.wait_for(task, 5)
    assert sorted(r.body["groupLabels"]["alertname"] for r in sink.requests) == sorted(f"A{i}" for i in range(19))
    assert elapsed < 10.0, f"19 groups took {elapsed:.1f} s to be attempted (one after another: 18 s)"
    assert in_flight_at_once == notify.MAX_IN_FLIGHT, "groups are delivered concurrently, no more than the bound"
    assert receiver.metrics.failed.labels("oncall", "unreachable")._value.get() == 19


async def test_bearer_and_standard_webhooks_signature(sink):
    secret = "whsec_" + base64.b64encode(b"0123456789abcdef").decode()
    endpoint = Endpoint(sink.url, bearer_token="tok", hmac_secret=secret)
    receiver = WebhookReceiver("signed", endpoint, GroupingPolicy(group_wait=0.05), "", NotifyMetrics(None))
    receiver.update([alert("A")], time.time())
    await run_receiver(receiver, 0.4)
    headers, raw = sink.requests[0].headers, sink.requests[0].raw
    assert headers["Authorization"] == "Bearer tok"
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + raw
    expected = base64.b64encode(hmac.new(b"0123456789abcdef", signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == "v1," + expected
    assert sign(secret, "id", 1, b"x") != sign(secret, "id", 2, b"x")


async def test_alertmanager_push_to_every_replica(sink):
    second = await WebhookSink().start()
    try:
        replicas = [Endpoint(sink.base_url), Endpoint(second.base_url)]
        receiver = AlertmanagerReceiver("am", replicas, NotifyMetrics(None), resend_delay=0.3)
        receiver.update([alert("A")], time.time())
        await run_receiver(receiver, 0.5)
        for target in (sink, second):
            assert target.requests, "every replica receives the alerts"
            assert {r.path for r in target.requests} == {"/api/v2/alerts"}
            sent = target.requests[0].body[0]
            assert sent["labels"]["alertname"] == "A" and sent["endsAt"] > sent["startsAt"]
        receiver.update([alert("A", resolved_at=time.time())], time.time())
        await run_receiver(receiver, 0.2)
        assert sink.requests[-1].body[0]["endsAt"] < sink.requests[0].body[0]["endsAt"]
    finally:
        await second.close()


def test_target_down_inhibits_that_targets_other_alerts():
    alerts = [alert("PostgresDown", "a"), alert("PostgresHighConnections", "a"),
              alert("PostgresHighConnections", "b")]
    kept = apply_inhibition(alerts, DEFAULT_INHIBIT)
    assert [(a.labels["alertname"], a.labels["target"]) for a in kept] == [
        ("PostgresDown", "a"), ("PostgresHighConnections", "b")]
