"""Benchmark of the Redis collectors on the benchmark catalog's Redis (docs: shared/design/BENCHMARK-CATALOG.md).

Populates a sandbox Redis per available server build with 100,000 keys (TTLs 1 h-24 h: 40% strings under
``client:``, 30% hashes under ``user:``, 20% ~300-byte strings under ``dashboard:``, 10% lists under ``report:``),
runs the RedisPoller with every Redis collector until two full key-family passes complete, and prints the
redis-server CPU per collection cycle (INFO cpu delta / cycles, minus the server's idle CPU over the same wall
time), cycles per full pass, collector durations and the family counts, which must equal the populated counts.

    .venv/bin/python bench/bench_redis.py [--keys 100000] [--passes 2]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time

from redis import Redis

from pgwatch_cpa.collectors import REDIS_COLLECTORS
from pgwatch_cpa.config import settings_from_mapping
from pgwatch_cpa.daemon.redis_poller import RedisPoller
from pgwatch_cpa.daemon.snapshot import SnapshotStore
from pgwatch_cpa.sandbox import RedisSandbox, find_redis_servers

SHAPE = (("client_list", "client:", 0.4), ("user_profile", "user:", 0.3), ("dashboard_metrics", "dashboard:", 0.2),
         ("report_data", "report:", 0.1))
CYCLE_SPACING = 0.2  # seconds between cycles (a real daemon waits its interval; idle CPU is subtracted below)


def populate(url: str, total: int) -> dict[str, int]:
    rng = random.Random(42)
    r = Redis.from_url(url)
    expected: dict[str, int] = {}
    pipe = r.pipeline(transaction=False)
    n = 0
    for family, prefix, share in SHAPE:
        count = int(total * share)
        expected[family] = count
        for i in range(count):
            key = f"{prefix}{i}:{rng.getrandbits(32):08x}"
            ttl = rng.randint(3600, 86400)
            if prefix == "client:":
                pipe.set(key, f"client-{i}-metrics", ex=ttl)
            elif prefix == "user:":
                pipe.hset(key, mapping={"name": f"User {i}", "email": f"u{i}@example.test", "role": "staff"})
                pipe.expire(key, ttl)
            elif prefix == "dashboard:":
                pipe.set(key, "x" * 300, ex=ttl)
            else:
                pipe.rpush(key, *(f"row-{j}" for j in range(5)))
                pipe.expire(key, ttl)
            n += 1
            if n % 5000 == 0:
                pipe.execute()
    pipe.execute()
    assert r.dbsize() == total, r.dbsize()
    r.close()
    return expected


def server_cpu(r: Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def run_poller(url: str, passes: int) -> tuple[RedisPoller, SnapshotStore, list[dict[str, float]], float]:
    settings = settings_from_mapping({"redis": [{"name": "bench", "url": url}]}, {}).redis[0]
    store = SnapshotStore()
    poller = RedisPoller("bench", CYCLE_SPACING, [c() for c in REDIS_COLLECTORS], settings, store)
    await poller.open()
    durations: list[dict[str, float]] = []
    started = time.monotonic()
    try:
        while _passes(poller) < passes:
            await poller.poll_once()
            durations.append({name: d for name, (_ok, d) in poller._health.items()})
            await asyncio.sleep(CYCLE_SPACING)
    finally:
        await poller.close()
    return poller, store, durations, time.monotonic() - started


def _passes(poller: RedisPoller) -> int:
    st = poller._state["key_families"].get("scan")
    return st.passes if st is not None else 0


def sample(store: SnapshotStore, name: str) -> dict[str, float]:
    return {labels.get("family", ""): value for n, labels, value in store.samples() if n == name}


def bench(server, total: int, passes: int) -> None:
    with RedisSandbox(server=server) as rd:
        r = Redis.from_url(rd.url)
        print(f"\n== {server.name} {rd.version()} ({r.info('server')['redis_version']} protocol), {total:,} keys")
        t0 = time.monotonic()
        expected = populate(rd.url, total)
        print(f"populated in {time.monotonic() - t0:.1f}s: " + ", ".join(f"{k}={v:,}" for k, v in expected.items()))
        time.sleep(1.0)

        # Idle CPU of the server (serverCron, active expiry) over a window, to subtract from the daemon's window.
        c0, w0 = server_cpu(r), time.monotonic()
        time.sleep(5.0)
        idle_rate = (server_cpu(r) - c0) / (time.monotonic() - w0)

        c0 = server_cpu(r)
        poller, store, durations, wall = asyncio.run(run_poller(rd.url, passes))
        cpu = server_cpu(r) - c0
        cycles = len(durations)
        net = cpu - idle_rate * wall
        st = poller._state["key_families"]["scan"]
        print(f"cycles: {cycles} in {wall:.1f}s wall; redis-server CPU {cpu * 1e3:.1f} ms total, "
              f"idle baseline {idle_rate * 1e3:.2f} ms/s")
        print(f"redis-server CPU per collection cycle: {cpu / cycles * 1e3:.2f} ms raw, "
              f"{net / cycles * 1e3:.2f} ms net of idle  (target <= 5 ms)")
        print(f"cycles per full family pass: {st.last.cycles} (passes completed: {st.passes}); "
              f"pass wall time {st.last.duration:.1f}s at {CYCLE_SPACING}s spacing; "
              f"learned SCAN cost {st.cost_per_key * 1e6:.2f} us/key -> "
              f"{int(settings_budget(poller) / st.cost_per_key):,} keys/cycle")
        measured = [d for _k, d in st.history[1:]]
        print(f"key-family Redis time per cycle (commandstats): median {statistics.median(measured) * 1e3:.2f} ms, "
              f"max {max(measured) * 1e3:.2f} ms (budget {settings_budget(poller) * 1e3:.1f} ms)")
        print("collector durations (wall, ms): " + ", ".join(
            f"{name} median {statistics.median(d[name] for d in durations) * 1e3:.1f} / "
            f"max {max(d[name] for d in durations) * 1e3:.1f}" for name in durations[0]))
        counts = sample(store, "redis_key_family_keys")
        memory = sample(store, "redis_key_family_memory_bytes")
        print("family counts (last complete pass):")
        ok = True
        for family, count in sorted(counts.items(), key=lambda kv: -kv[1]):
            want = expected.get(family, 0)
            ok &= int(count) == want
            print(f"  {family:<18} {int(count):>8,}  expected {want:>8,}  "
                  f"est. memory {memory.get(family, 0) / 2**20:8.2f} MiB")
        used = float(r.info("memory")["used_memory_dataset"])
        print(f"  sum of estimated family memory {sum(memory.values()) / 2**20:.2f} MiB vs used_memory_dataset "
              f"{used / 2**20:.2f} MiB")
        print("family counts equal the populated counts: " + ("yes" if ok else "NO"))

        # For comparison: one blocking full pass the way per-scrape exporters do it.
        c0 = server_cpu(r)
        cursor, t0 = 0, time.monotonic()
        while True:
            cursor, _keys = r.scan(cursor, count=1000)
            if cursor == 0:
                break
        print(f"reference: one full SCAN pass in a single scrape costs {(server_cpu(r) - c0) * 1e3:.1f} ms of "
              f"redis-server CPU ({(time.monotonic() - t0) * 1e3:.0f} ms wall)")
        r.close()
        if not ok:
            raise SystemExit("family counts differ from the populated counts")


def settings_budget(poller: RedisPoller) -> float:
    return float(poller.settings.key_scan_budget)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--passes", type=int, default=2)
    args = parser.parse_args()
    servers = find_redis_servers()
    if not servers:
        raise SystemExit("no redis-server found")
    for server in servers:
        bench(server, args.keys, args.passes)


if __name__ == "__main__":
    main()
