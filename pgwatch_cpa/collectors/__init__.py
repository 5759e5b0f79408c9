"""Collector registry: a new metric family is one new file plus one entry in a tuple below."""

from __future__ import annotations

from pgwatch_cpa.collectors.base import Collector
from pgwatch_cpa.collectors.postgres import (
    ActivityCollector,
    BgwriterCollector,
    DatabaseCollector,
    DatabaseSizeCollector,
    IndexesCollector,
    LocksCollector,
    ReplicationCollector,
    SettingsCollector,
    StatementsCollector,
    TablesCollector,
    TableSizeCollector,
    WalCollector,
)
from pgwatch_cpa.collectors.redis.cpa_archive_stats import CpaArchiveStatsCollector
from pgwatch_cpa.collectors.redis.cpa_cache_stats import CpaCacheStatsCollector
from pgwatch_cpa.collectors.redis.redis_info import RedisInfoCollector
from pgwatch_cpa.collectors.redis.redis_key_families import RedisKeyFamiliesCollector
from pgwatch_cpa.collectors.redis.redis_latency import RedisLatencyCollector
from pgwatch_cpa.collectors.redis.redis_slowlog import RedisSlowlogCollector

POSTGRES_COLLECTORS: tuple[type[Collector], ...] = (
    ActivityCollector, StatementsCollector, DatabaseCollector, DatabaseSizeCollector, LocksCollector,
    ReplicationCollector, BgwriterCollector, WalCollector, SettingsCollector, TablesCollector, IndexesCollector,
    TableSizeCollector,
)
REDIS_COLLECTORS: tuple[type[Collector], ...] = (
    RedisInfoCollector,
    RedisSlowlogCollector,
    RedisLatencyCollector,
    RedisKeyFamiliesCollector,
    CpaCacheStatsCollector,
    CpaArchiveStatsCollector,
)
