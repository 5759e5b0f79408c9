"""The report for one Redis target: its memory against maxmemory, and the application cache's hit rate per family.

Reads one ``INFO`` and the statistics the CPA caching service publishes (through its wire-format module only,
like the daemon's collector): no ``CONFIG`` (managed Redis forbids it), no ``SCAN``, nothing written.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from pgwatch_cpa.config import RedisTarget
from pgwatch_cpa.report.model import Finding, Scalar, Severity, TargetReport

CLIENT_NAME = "pgwatch-cpa-report"
MEMORY_WARNING, MEMORY_CRITICAL = 0.80, 0.90  # used_memory / maxmemory
HIT_RATE_TARGET = 0.90  # the guide's cache hit rate
MIN_REQUESTS = 100  # a family with fewer lookups says nothing about its hit rate
MAX_INSTANCES = 200
INDEX_HORIZON = 3600.0  # index members older than this are not looked up (their snapshots expired long ago)
MIN_SUGGESTED_MAXMEMORY = 256 * 1024**2


async def redis_target_report(target: RedisTarget) -> TargetReport:
    """Raises when the target cannot be read at all (connection refused, timeout, authentication)."""
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    client = Redis.from_url(target.resolved_url, socket_timeout=target.timeout,
                            socket_connect_timeout=target.timeout, client_name=CLIENT_NAME,
                            retry=Retry(NoBackoff(), 0), max_connections=1)
    try:
        info = await client.info()
        cache = await read_cache_stats(client, time.time())
    finally:
        await client.aclose()
    return build_target_report(target.name, info, cache)


class CacheStats:
    """The application cache's lookups summed over the live app instances, per family."""

    def __init__(self) -> None:
        self.instances: list[str] = []
        self.invalid = 0
        self.unreadable: str | None = None  # why the statistics could not be read (e.g. an ACL), else None
        self.families: dict[str, dict[str, int]] = {}
        self.maxmemory_policy: str | None = None

    def add(self, snapshot: Mapping[str, Any]) -> None:
        self.instances.append(snapshot["app_instance"])
        self.maxmemory_policy = self.maxmemory_policy or snapshot["maxmemory_policy"]
        for family, stats in snapshot["families"].items():
            totals = self.families.setdefault(family, {"hit": 0, "miss": 0, "stale": 0, "error": 0, "loads": 0,
                                                       "fail_opens": 0})
            for result, count in stats["requests"].items():
                totals[result] = totals.get(result, 0) + count
            totals["loads"] += stats["loads"]
            totals["fail_opens"] += stats["fail_opens"]


async def read_cache_stats(client: Any, now: float) -> CacheStats:
    """Every live instance's snapshot (index, then one MGET), as the daemon's cpa_cache_stats collector reads them."""
    from redis.exceptions import ResponseError

    from pgwatch_cpa.cpa.cache.stats import INDEX_KEY, INSTANCE_KEY_PREFIX, SnapshotError, parse_snapshot

    stats = CacheStats()
    try:
        members = await client.zrevrangebyscore(INDEX_KEY, "+inf", now - INDEX_HORIZON, start=0, num=MAX_INSTANCES)
        names = [m.decode() if isinstance(m, bytes) else str(m) for m in members]
        raw = await client.mget([INSTANCE_KEY_PREFIX + n for n in names]) if names else []
    except ResponseError as exc:  # NOPERM under an ACL, WRONGTYPE: memory can still be reported
        stats.unreadable = " ".join(str(exc).split())[:200]
        return stats
    for data in raw:
        if data is None:
            continue  # the instance stopped publishing: its key expired
        try:
            stats.add(parse_snapshot(data))
        except SnapshotError:
            stats.invalid += 1
    return stats


def build_target_report(name: str, info: Mapping[str, Any], cache: CacheStats) -> TargetReport:
    used, maxmemory = _int(info, "used_memory"), _int(info, "maxmemory")
    hits, misses = _int(info, "keyspace_hits"), _int(info, "keyspace_misses")
    app_requests = sum(_requests(f) for f in cache.families.values())
    app_hits = sum(_hits(f) for f in cache.families.values())
    summary: dict[str, Scalar] = {
        "used_memory": used,
        "maxmemory": maxmemory,
        "memory_utilisation": used / maxmemory if maxmemory else None,
        "maxmemory_policy": str(info.get("maxmemory_policy") or "") or None,
        "evicted_keys": _int(info, "evicted_keys"),
        "keyspace_hit_ratio": hits / (hits + misses) if hits + misses else None,
        "app_cache_hit_ratio": app_hits / app_requests if app_requests else None,
        "app_cache_requests": app_requests,
        "app_instances": len(cache.instances),
        "uptime_seconds": _int(info, "uptime_in_seconds"),
    }
    if cache.unreadable:
        summary["app_cache_unreadable"] = cache.unreadable
    if cache.invalid:
        summary["app_cache_invalid_snapshots"] = cache.invalid
    findings = [f for f in (memory_finding(name, info, cache),) if f is not None]
    findings += cache_hit_findings(name, cache)
    return TargetReport(name, "redis", summary, findings)


def _int(info: Mapping[str, Any], key: str) -> int:
    try:
        return int(info.get(key) or 0)
    except (TypeError, ValueError):
        return 0


def _keys_with_ttl(info: Mapping[str, Any]) -> int:
    return sum(_int(db, "expires") for key, db in info.items() if key.startswith("db") and isinstance(db, Mapping))


def memory_finding(name: str, info: Mapping[str, Any], cache: CacheStats) -> Finding | None:
    """One ``redis_memory`` finding per target (one id: memory pressure is one problem), at the worst of: used_memory
    above 80% (warning) or 90% (critical) of maxmemory; no maxmemory on a cache (warning); evictions (warning).

    A target is a cache when the CPA caching service publishes to it or it holds keys with a TTL. The score is the
    utilisation in percent (used_memory in bytes without maxmemory), so next week's diff compares like with like.
    """
    used, maxmemory, evicted = _int(info, "used_memory"), _int(info, "maxmemory"), _int(info, "evicted_keys")
    policy = str(info.get("maxmemory_policy") or "noeviction")
    ttl_keys = _keys_with_ttl(info)
    is_cache = bool(cache.instances) or ttl_keys > 0
    utilisation = used / maxmemory if maxmemory else None
    evidence: dict[str, Scalar] = {"used_memory": used, "maxmemory": maxmemory, "memory_utilisation": utilisation,
                                   "maxmemory_policy": policy, "evicted_keys": evicted,
                                   "uptime_seconds": _int(info, "uptime_in_seconds"), "keys_with_ttl": ttl_keys,
                                   "app_instances": len(cache.instances)}
    suggested = _suggested(used)
    settings = [f"maxmemory {suggested // 1024**2}mb"]
    if not policy.startswith("volatile-"):
        settings.append("maxmemory-policy volatile-lru")
    setting = (f"Set {' and '.join(settings)} in redis.conf (on a running server: "
               f"{' and '.join('CONFIG SET ' + x for x in settings)}; on managed Redis: its parameter group)")
    policy_note = ("" if policy.startswith("volatile-") else
                   " A volatile-* policy evicts only keys with a TTL: the caching service's generation counters have "
                   "none and must never be evicted.")
    severity: Severity
    if utilisation is not None and utilisation > MEMORY_WARNING:
        severity = "critical" if utilisation > MEMORY_CRITICAL else "warning"
        title = f"Redis uses {utilisation:.0%} of maxmemory ({_mib(used)} of {_mib(maxmemory)})"
        recommendation = (f"{setting}: twice today's use; or shorten the TTL of the largest key family "
                          f"(redis_key_family_memory_bytes).{policy_note}")
        effect = (f"used_memory back under {MEMORY_WARNING:.0%} of maxmemory: no evictions, cached values live until "
                  "their TTL and PostgreSQL is not asked again")
    elif maxmemory == 0 and is_cache:
        severity = "warning"
        title = f"Redis has no maxmemory: the cache ({_mib(used)} now) may grow until the host runs out of memory"
        recommendation = (f"{setting}: twice today's use and at least 256 MB, at most what the host can "
                          f"spare.{policy_note}")
        effect = ("memory bounded: at the limit Redis evicts keys that have a TTL instead of the host swapping or the "
                  "OOM killer stopping Redis")
    elif evicted > 0:
        severity = "warning"
        title = f"Redis evicted {evicted:,} keys since it started (maxmemory {_mib(maxmemory)}, {policy})"
        recommendation = (f"{setting}, or shorten the TTL of the largest key family.{policy_note} evicted_keys "
                          "counts since the server started: compare with the next report.")
        effect = "no evictions: cached values live until their TTL, fewer misses fall through to PostgreSQL"
    else:
        return None
    if evicted > 0 and "evicted" not in title:
        title += f"; {evicted:,} keys evicted since start"
    score = utilisation * 100 if utilisation is not None else float(used)
    return Finding("redis_memory", severity, name, None, None, title, evidence, score, recommendation, effect)


def _suggested(used: int) -> int:
    """Twice today's use, at least 256 MB, rounded up to a multiple of 64 MB."""
    step = 64 * 1024**2
    wanted = max(2 * used, MIN_SUGGESTED_MAXMEMORY)
    return -(-wanted // step) * step


def _mib(n: int) -> str:
    return f"{n / 1024**2:,.1f} MiB" if n < 1024**3 else f"{n / 1024**3:,.2f} GiB"


def _requests(family: Mapping[str, int]) -> int:
    return sum(family.get(r, 0) for r in ("hit", "miss", "stale", "error"))


def _hits(family: Mapping[str, int]) -> int:
    # Like the CpaCacheHitRateLow alert: a stale value served while one caller refreshes counts as a hit.
    return family.get("hit", 0) + family.get("stale", 0)


def cache_hit_findings(name: str, cache: CacheStats) -> list[Finding]:
    """A ``cache_hit_rate`` finding per family under the guide's 90% with at least MIN_REQUESTS lookups."""
    findings = []
    for family, totals in sorted(cache.families.items()):
        requests = _requests(totals)
        if requests < MIN_REQUESTS:
            continue
        ratio = _hits(totals) / requests
        if ratio >= HIT_RATE_TARGET:
            continue
        excess = round(requests - _hits(totals) - (1 - HIT_RATE_TARGET) * requests)
        evidence: dict[str, Scalar] = {"hit_ratio": ratio, "requests": requests, "hits": totals.get("hit", 0),
                                       "stale": totals.get("stale", 0), "misses": totals.get("miss", 0),
                                       "errors": totals.get("error", 0), "loads": totals["loads"],
                                       "fail_opens": totals["fail_opens"], "app_instances": len(cache.instances),
                                       "target_ratio": HIT_RATE_TARGET}
        title = f"Application cache hit rate of {family} is {ratio:.1%} (guide: > {HIT_RATE_TARGET:.0%})"
        recommendation = (f"Look at the invalidations of {family} (cpa_cache_invalidations_total) for a storm of "
                          "writes or event invalidations, compare its TTL with how often the same key is read (a TTL "
                          "shorter than the re-read interval never hits), and check cpa_cache_tenant_mismatch_total "
                          "and fail-opens (errors count as misses here).")
        effect = (f"at {HIT_RATE_TARGET:.0%}, about {excess:,} fewer loads from PostgreSQL for the same "
                  f"{requests:,} lookups (counted since each app instance started)")
        findings.append(Finding("cache_hit_rate", "warning", name, None, family, title, evidence,
                                round(1.0 - ratio, 6), recommendation, effect))
    return findings
