"""/metrics rendering in-process: content negotiation, render-once caching, live self-metrics, parseability."""

from __future__ import annotations

import asyncio

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from pgwatch_cpa.collectors.metric_set import MetricSet
from pgwatch_cpa.daemon.exposition import Exposition
from pgwatch_cpa.daemon.snapshot import SnapshotStore

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_ACCEPT = "application/openmetrics-text; version=1.0.0"


def fill(store: SnapshotStore, connections: float = 7.0) -> None:
    out = MetricSet({"target": "db1"})
    out.gauge("pg_connections", "Connections by state.", connections, {"state": "active"})
    out.counter("pg_xact_commit_total", "Committed transactions.", 123)
    out.histogram("pg_query_seconds", "Query latency.", [0.1, 1.0], [3, 5, 6], 2.5)
    store.put("db1", "activity", out.families())


def samples(body: str, parse=parse_text) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in parse(body) for s in f.samples}


def one(parsed: dict, name: str, **labels: str) -> float:
    found = [v for (n, lab), v in parsed.items() if n == name and all(dict(lab).get(k) == x for k, x in labels.items())]
    assert len(found) == 1, f"{name}{labels}: {found}"
    return found[0]


async def test_text_format_without_accept_or_for_text_plain():
    store = SnapshotStore()
    fill(store)
    exposition = Exposition(store)
    for accept in (None, "", "text/plain", "text/plain;version=0.0.4", "*/*"):
        body, content_type = await exposition.render(accept)
        assert content_type == TEXT_CONTENT_TYPE, accept
        text = body.decode()
        assert "# EOF" not in text
        parsed = samples(text)
        assert one(parsed, "pg_connections", target="db1", state="active") == 7.0
        assert one(parsed, "pg_xact_commit_total", target="db1") == 123.0
        assert one(parsed, "pg_query_seconds_bucket", target="db1", le="1.0") == 5.0
        assert one(parsed, "pgwatch_build_info") == 1.0
        assert one(parsed, "pgwatch_scrapes_total") >= 1.0


async def test_openmetrics_when_asked_with_a_single_eof_at_the_very_end():
    store = SnapshotStore()
    fill(store)
    exposition = Exposition(store)
    body, content_type = await exposition.render(OPENMETRICS_ACCEPT)
    assert content_type.startswith("application/openmetrics-text")
    assert "version=1.0.0" in content_type
    text = body.decode()
    assert text.endswith("# EOF\n")
    assert text.count("# EOF") == 1
    # The OpenMetrics parser is strict: it rejects an EOF in the middle, a missing EOF and repeated families.
    parsed = samples(text, parse_openmetrics)
    assert one(parsed, "pg_connections", target="db1", state="active") == 7.0
    assert one(parsed, "pg_xact_commit_total", target="db1") == 123.0
    assert one(parsed, "pg_query_seconds_count", target="db1") == 6.0
    assert one(parsed, "pgwatch_scrapes_total") == 1.0

    # A second scrape in each format (served from the cache) is still well-formed.
    again, _ = await exposition.render(OPENMETRICS_ACCEPT)
    assert again.decode().count("# EOF") == 1 and again.endswith(b"# EOF\n")
    plain, _ = await exposition.render(None)
    assert b"# EOF" not in plain


async def test_snapshot_rendered_once_per_store_change_while_self_metrics_stay_live():
    store = SnapshotStore()
    fill(store, connections=7.0)
    exposition = Exposition(store)

    first = samples((await exposition.render(None))[0].decode())
    second = samples((await exposition.render(None))[0].decode())
    assert one(first, "pgwatch_render_duration_seconds_count") == 1.0
    assert one(second, "pgwatch_render_duration_seconds_count") == 1.0, "no store change: no second render"
    assert one(first, "pgwatch_scrapes_total") == 1.0
    assert one(second, "pgwatch_scrapes_total") == 2.0, "the self-metrics are live on every scrape"

    fill(store, connections=9.0)
    third = samples((await exposition.render(None))[0].decode())
    assert one(third, "pgwatch_render_duration_seconds_count") == 2.0, "a store change renders again"
    assert one(third, "pg_connections", state="active") == 9.0
    assert one(third, "pgwatch_scrapes_total") == 3.0


async def test_concurrent_scrapes_share_one_render():
    store = SnapshotStore()
    fill(store)
    exposition = Exposition(store)
    bodies = await asyncio.gather(*(exposition.render(None) for _ in range(5)))
    parsed = [samples(body.decode()) for body, _ in bodies]
    assert [one(p, "pgwatch_render_duration_seconds_count") for p in parsed] == [1.0] * 5
    assert {one(p, "pg_connections", state="active") for p in parsed} == {7.0}
    assert max(one(p, "pgwatch_scrapes_total") for p in parsed) == 5.0


def _result(target: str, collector: str, value: float) -> tuple:
    out = MetricSet({"target": target})
    out.gauge("pgwatch_collector_success", "1 if the last run succeeded.", 1.0, {"collector": collector})
    out.counter(f"{collector}_calls_total", "Calls.", value)
    out.histogram("shared_seconds", "A family every result writes into.", [0.1, 1.0], [1, 2, value], value,
                  {"collector": collector})
    out.info("pgwatch_target_info", "Target.", {"collector": collector})
    return out.families()


def _whole_render(store: SnapshotStore, openmetrics_format: bool) -> dict:
    """What one render of every family merged by name gives (the reference the incremental render must equal)."""
    from prometheus_client import CollectorRegistry
    from prometheus_client import generate_latest as text_latest
    from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

    from pgwatch_cpa.collectors.metric_set import merge_families
    from pgwatch_cpa.daemon.exposition import _Families, build_info

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families([build_info(), *merge_families(list(store.results().values()))]))
    body = (openmetrics_latest if openmetrics_format else text_latest)(registry).decode()
    return samples(body, parse_openmetrics if openmetrics_format else parse_text)


async def test_incremental_render_equals_a_whole_render_and_redoes_only_what_changed(monkeypatch):
    from pgwatch_cpa.daemon import exposition as module

    rendered: list[str] = []
    real = module._generate_families

    def counting(families, openmetrics_format):
        families = list(families)
        rendered.extend(f.name for f in families)
        return real(families, openmetrics_format)

    monkeypatch.setattr(module, "_generate_families", counting)
    store = SnapshotStore()
    for target in ("db1", "db2", "db3"):
        for collector in ("activity", "statements"):
            store.put(target, collector, _result(target, collector, 3.0))
    exposition = Exposition(store)
    for accept, parse, om in ((None, parse_text, False), (OPENMETRICS_ACCEPT, parse_openmetrics, True)):
        body, _ = await exposition.render(accept)
        if om:
            assert body.decode().count("# EOF") == 1
        assert _whole_render(store, om).items() <= samples(body.decode(), parse).items()
        for name in ("shared_seconds", "pgwatch_collector_success"):  # one header for every result's samples
            assert body.decode().count(f"# TYPE {name} ") == 1

    rendered.clear()
    store.put("db2", "statements", _result("db2", "statements", 9.0))  # one result changes, one goes away
    store.put("db3", "activity", ())
    body, _ = await exposition.render(None)
    assert sorted(rendered) == sorted(f.name for f in _result("db2", "statements", 9.0))
    parsed = samples(body.decode())
    assert _whole_render(store, False).items() <= parsed.items()
    assert one(parsed, "statements_calls_total", target="db2") == 9.0
    assert not [k for k in parsed if dict(k[1]).get("target") == "db3" and dict(k[1]).get("collector") == "activity"]


async def test_a_scrape_during_a_render_gets_the_previous_render_at_once():
    store = SnapshotStore()
    fill(store, connections=7.0)
    exposition = Exposition(store)
    await exposition.render(None)
    fill(store, connections=9.0)
    async with exposition._lock:  # a render is under way (refresh_forever's, or another scrape's)
        body, _ = await asyncio.wait_for(exposition.render(None), 1.0)
    assert one(samples(body.decode()), "pg_connections", state="active") == 7.0
    body, _ = await exposition.render(None)
    assert one(samples(body.decode()), "pg_connections", state="active") == 9.0


async def test_the_background_render_keeps_openmetrics_ready_once_it_was_asked_for():
    store = SnapshotStore()
    fill(store, connections=7.0)
    exposition = Exposition(store)
    await exposition.render(OPENMETRICS_ACCEPT)
    refresher = asyncio.create_task(exposition.refresh_forever())
    try:
        fill(store, connections=9.0)
        version = store.version
        for _ in range(100):
            if exposition._cache[True][0] == version and exposition._cache[False][0] == version:
                break
            await asyncio.sleep(0.02)
        assert exposition._cache[True][0] == version, "OpenMetrics re-rendered in the background"
        assert exposition._cache[False][0] == version, "and the text format"
    finally:
        refresher.cancel()
