"""The Redis collectors through the real RedisPoller and SnapshotStore, against every available server build."""

from __future__ import annotations

import logging
import subprocess

import pytest
from redis import Redis

from pgwatch_cpa.collectors import REDIS_COLLECTORS
from pgwatch_cpa.config import settings_from_mapping
from pgwatch_cpa.daemon.exposition import Exposition
from pgwatch_cpa.daemon.redis_poller import RedisPoller
from pgwatch_cpa.daemon.snapshot import SnapshotStore
from pgwatch_cpa.sandbox import RedisSandbox
from tests.conftest import require_tool

pytestmark = pytest.mark.integration

INTERVAL = 0.5  # every collector is due on every poll_once (the poller allows 0.5 s of jitter)


class Harness:
    def __init__(self, url: str, **settings) -> None:
        self.settings = settings_from_mapping({"redis": [{"name": "rd", "url": url, **settings}]}, {}).redis[0]
        self.store = SnapshotStore()
        self.poller = RedisPoller("rd", INTERVAL, [c() for c in REDIS_COLLECTORS], self.settings, self.store)

    async def __aenter__(self) -> Harness:
        await self.poller.open()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.poller.close()

    async def cycle(self, n: int = 1) -> None:
        for _ in range(n):
            await self.poller.poll_once()

    def value(self, name: str, **labels: str) -> float | None:
        for sample_name, sample_labels, value in self.store.samples():
            if sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items()):
                return value
        return None

    def by_label(self, name: str, label: str) -> dict[str, float]:
        return {lab[label]: v for n, lab, v in self.store.samples() if n == name}

    @property
    def passes(self) -> int:
        scan = self.poller._state["key_families"].get("scan")
        return scan.passes if scan is not None else 0

    @property
    def scan(self):
        return self.poller._state["key_families"]["scan"]


@pytest.fixture
def client(redis_server):
    r = Redis.from_url(redis_server.url)
    r.flushall()
    yield r
    r.config_set("slowlog-log-slower-than", 10000)
    r.close()


async def test_info_reports_what_the_server_holds(redis_server, client):
    for i in range(10):
        client.set(f"plain:{i}", "v", ex=600 if i < 4 else None)
    client.execute_command("SELECT", 3)
    db3 = Redis.from_url(redis_server.url.rsplit("/", 1)[0] + "/3")
    for i in range(5):
        db3.set(f"k:{i}", "v")
    db3.close()
    async with Harness(redis_server.url) as h:
        await h.cycle()
        assert h.value("redis_up") == 1
        for collector in ("info", "slowlog", "latency", "key_families"):
            assert h.value("pgwatch_collector_success", collector=collector) == 1, collector
        assert h.by_label("redis_db_keys", "db") == {"db0": 10, "db3": 5}
        assert h.by_label("redis_db_keys_expiring", "db") == {"db0": 4, "db3": 0}
        assert h.value("redis_config_maxclients") == int(client.config_get("maxclients")["maxclients"])
        assert h.value("redis_memory_max_bytes") == 0
        assert h.value("redis_memory_used_bytes") > 0
        assert h.value("redis_connected_clients") >= 2
        assert h.value("redis_cpu_user_seconds_total") is not None
        assert h.value("redis_cpu_sys_seconds_total") is not None
        info = h.value("redis_instance_info", role="master", redis_mode="standalone")
        assert info == 1

        before = h.value("redis_commands_total", cmd="set")
        processed = h.value("redis_commands_processed_total")
        for i in range(50):
            client.set(f"more:{i}", "v")
        client.get("plain:0")
        client.get("missing")
        await h.cycle()
        assert h.value("redis_commands_total", cmd="set") == before + 50
        assert h.value("redis_commands_duration_seconds_total", cmd="set") > 0
        assert h.value("redis_commands_processed_total") >= processed + 52
        assert h.value("redis_keyspace_hits_total") >= 1 and h.value("redis_keyspace_misses_total") >= 1


async def test_maxmemory_is_read_from_info(redis_server):
    with RedisSandbox(server=redis_server.server, extra_args=["--maxmemory", "64mb"]) as rd:
        async with Harness(rd.url) as h:
            await h.cycle()
            assert h.value("redis_memory_max_bytes") == 64 * 2**20


async def test_slowlog_picks_up_slow_commands_without_their_arguments(redis_server, client):
    async with Harness(redis_server.url) as h:
        await h.cycle()
        assert h.value("redis_slowlog_length") == 0
        client.config_set("slowlog-log-slower-than", 0)
        client.set("secret-key", "SSN-123-45-6789")
        client.config_set("slowlog-log-slower-than", 10000)
        await h.cycle()
        assert h.value("redis_slowlog_length") >= 2
        assert h.value("redis_slowlog_last_id") >= 1
        assert h.value("redis_slowlog_recent_max_duration_seconds") >= 0
        assert h.value("redis_slowlog_last_slow_execution_duration_seconds") is not None
        body, _ = await Exposition(h.store).render(None)
        assert b"SSN-123" not in body and b"secret-key" not in body


async def test_key_family_counts_after_incremental_passes(redis_server, client):
    created = {"user_profile": 600, "client_list": 900, "cache_generation": 300, "report_data": 450, "other": 750}
    pipe = client.pipeline(transaction=False)
    for i in range(600):
        pipe.set(f"cpa:v1:d:org_{i % 7}:up:1.1:u{i}", "x" * 100, ex=3600)
    for i in range(900):
        pipe.set(f"client:{i}:metrics", "y" * 20, ex=1800)
    for i in range(300):
        pipe.set(f"cpa:v1:g:org_{i}", i)  # no TTL
    for i in range(450):
        pipe.rpush(f"report:{i}:data", "a", "b", "c")
    for i in range(750):
        pipe.set(f"misc:{i}", "z")
    pipe.execute()
    budget, cap = 0.0003, 400
    async with Harness(redis_server.url, key_scan_budget=budget, key_scan_count=100, key_scan_max_keys=cap) as h:
        cycles = 0
        while h.passes == 0 and cycles < 300:
            await h.cycle()
            cycles += 1
            assert h.value("pgwatch_collector_success", collector="key_families") == 1
            # The hard cap holds on every cycle, whatever the measured cost (SCAN COUNT is a hint: a few more).
            assert h.scan.last_cycle_count <= cap
            assert 0 < h.value("redis_key_family_scan_cycle_keys") <= cap * 1.1
        assert h.passes == 1, f"no complete pass after {cycles} cycles"
        assert cycles >= 3000 // cap  # the pass was spread over cycles, never one blocking sweep
        counts = h.by_label("redis_key_family_keys", "family")
        assert {f: counts[f] for f in created} == created
        assert sum(counts.values()) == 3000
        # Redis time per cycle (INFO commandstats), after the first cycle taught the collector the cost per key.
        spent = [seconds for _keys, seconds in h.scan.history[1:]]
        assert spent and max(spent) <= budget * 1.5, spent
        memory = h.by_label("redis_key_family_memory_bytes", "family")
        assert memory["user_profile"] > 600 * 100 and memory["session"] == 0
        assert h.value("redis_key_family_no_ttl_ratio", family="cache_generation") == 1
        assert h.value("redis_key_family_no_ttl_ratio", family="client_list") == 0
        assert 0 < h.value("redis_key_family_ttl_seconds", family="client_list", percentile="50") <= 1800
        assert h.value("redis_key_family_scan_cycles") == cycles
        # The counts stay published while the next pass runs.
        await h.cycle()
        assert h.value("redis_key_family_keys", family="client_list") == 900


async def test_forbidden_commands_disable_collectors_once(redis_server, client, caplog):
    client.execute_command("ACL", "SETUSER", "monitor", "on", ">monitor-pw", "~*", "&*", "+@all", "-slowlog",
                           "-latency", "-memory")
    client.set("client:1", "v")
    url = redis_server.url.replace("redis://", "redis://monitor:monitor-pw@")
    try:
        with caplog.at_level(logging.WARNING):
            async with Harness(url) as h:
                await h.cycle(3)
                assert h.value("pgwatch_collector_enabled", collector="slowlog") == 0
                assert h.value("pgwatch_collector_enabled", collector="latency") == 0
                assert h.value("pgwatch_collector_success", collector="info") == 1
                assert h.value("pgwatch_collector_success", collector="key_families") == 1
                assert h.value("redis_key_family_keys", family="client_list") == 1
                assert h.value("redis_key_family_memory_bytes", family="client_list") is None
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert sum("collector slowlog disabled" in w for w in warnings) == 1
        assert sum("collector latency disabled" in w for w in warnings) == 1
        assert sum("MEMORY USAGE is not available" in w for w in warnings) == 1
        assert not any("monitor-pw" in w for w in warnings)
    finally:
        client.execute_command("ACL", "DELUSER", "monitor")


async def test_redis_up_follows_the_server_without_restarting_the_poller(redis_server):
    with RedisSandbox(server=redis_server.server) as rd:
        async with Harness(rd.url) as h:
            await h.cycle()
            assert h.value("redis_up") == 1
            rd.stop()
            await h.cycle()
            assert h.value("redis_up") == 0
            assert h.value("redis_connected_clients") is None  # no stale samples while down
            rd.start_again()
            for _ in range(5):
                await h.cycle()
                if h.value("redis_up") == 1:
                    break
            assert h.value("redis_up") == 1
            assert h.value("pgwatch_collector_success", collector="info") == 1


async def test_promtool_accepts_the_exposition(redis_server, client):
    promtool = require_tool("promtool")
    for i in range(200):
        client.set(f"client:{i}", "v", ex=60)
    client.config_set("slowlog-log-slower-than", 0)
    client.get("client:1")
    client.config_set("slowlog-log-slower-than", 10000)
    async with Harness(redis_server.url) as h:
        await h.cycle(3)
        assert h.passes >= 1
        body, _ = await Exposition(h.store).render(None)
    result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, check=False)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        result.stdout.decode() + result.stderr.decode())
