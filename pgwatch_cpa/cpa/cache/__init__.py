"""The CPA application's Redis caching service.

    async with CacheService.create("redis://...", app_instance="web-1") as cache:
        clients = await cache.get_or_load(keys.client_list(org_id, filters), load_clients)
        await cache.invalidate("client.update", org_id)

Imports nothing from the pgwatch-cpa daemon; the daemon reads what this package publishes (see stats.py).
"""

from pgwatch_cpa.cpa.cache import keys
from pgwatch_cpa.cpa.cache.breaker import BreakerState, CircuitBreaker
from pgwatch_cpa.cpa.cache.families import FAMILIES, TTL, Family
from pgwatch_cpa.cpa.cache.invalidation import EVENTS, purge_all, purge_org, scan_unlink
from pgwatch_cpa.cpa.cache.keys import CacheKey
from pgwatch_cpa.cpa.cache.serializers import SerializationError
from pgwatch_cpa.cpa.cache.service import CacheConfig, CacheService
from pgwatch_cpa.cpa.cache.stats import SnapshotError, parse_snapshot

__all__ = [
    "EVENTS", "FAMILIES", "TTL", "BreakerState", "CacheConfig", "CacheKey", "CacheService", "CircuitBreaker",
    "Family", "SerializationError", "SnapshotError", "keys", "parse_snapshot", "purge_all", "purge_org",
    "scan_unlink",
]
