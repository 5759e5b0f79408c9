"""The aiohttp app in-process (aiohttp's TestServer on loopback): /readyz, /healthz, /metrics, /alerts."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from pgwatch_cpa.collectors.metric_set import MetricSet
from pgwatch_cpa.daemon.exposition import Exposition
from pgwatch_cpa.daemon.http import build_app
from pgwatch_cpa.daemon.snapshot import SnapshotStore


class Targets:
    """A small readiness object: ready once every target has completed one poll."""

    def __init__(self, *names: str) -> None:
        self.polled = dict.fromkeys(names, False)

    def ready(self) -> tuple[bool, list[str]]:
        waiting = [name for name, done in self.polled.items() if not done]
        return not waiting, waiting


@pytest.fixture
async def app_parts() -> AsyncIterator[tuple[TestClient, Targets, SnapshotStore]]:
    store = SnapshotStore()
    out = MetricSet({"target": "db1"})
    out.gauge("pg_up", "1 if the target answered.", 1.0)
    store.put("db1", "_poller", out.families())
    targets = Targets("db1", "cache")
    async with TestClient(TestServer(build_app(Exposition(store), targets))) as client:
        yield client, targets, store


async def test_readyz_is_503_naming_the_waiting_targets_until_all_have_polled(app_parts):
    client, targets, _store = app_parts

    response = await client.get("/readyz")
    assert response.status == 503
    assert await response.json() == {"ready": False, "waiting_for": ["db1", "cache"]}

    targets.polled["db1"] = True
    response = await client.get("/readyz")
    assert response.status == 503
    assert (await response.json())["waiting_for"] == ["cache"]

    targets.polled["cache"] = True
    response = await client.get("/readyz")
    assert response.status == 200
    assert await response.json() == {"ready": True, "waiting_for": []}


async def test_healthz_is_200_even_before_readiness(app_parts):
    client, _targets, _store = app_parts
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_metrics_negotiates_the_content_type_through_the_app(app_parts):
    client, _targets, _store = app_parts

    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = {f.name: f for f in text_string_to_metric_families(await response.text())}
    assert [s.value for s in families["pg_up"].samples] == [1.0]

    response = await client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    body = await response.text()
    assert body.endswith("# EOF\n") and body.count("# EOF") == 1


async def test_alerts_without_an_engine_is_an_empty_prometheus_shaped_list(app_parts):
    client, _targets, _store = app_parts
    for path in ("/alerts", "/api/v1/alerts"):
        response = await client.get(path)
        assert response.status == 200
        assert await response.json() == {"status": "success", "data": {"alerts": []}}
