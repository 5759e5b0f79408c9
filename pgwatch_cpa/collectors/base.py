"""The collector interface: async, does the I/O, writes samples into a MetricSet."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pgwatch_cpa.collectors.metric_set import MetricSet
from pgwatch_cpa.errors import CollectorError

if TYPE_CHECKING:  # psycopg and redis are imported only by the targets that use them
    from psycopg import AsyncConnection
    from redis.asyncio import Redis

    from pgwatch_cpa.config import PostgresTarget, RedisTarget


class CollectorDisabled(CollectorError):
    """Raised by a collector whose query is bound to fail on this target (missing extension, privilege).

    The poller logs it once as a WARNING, exports ``pgwatch_collector_enabled 0`` and stops calling it.
    """


@dataclass
class PgContext:
    """What a PostgreSQL collector may use during one run."""

    target: str
    conn: AsyncConnection[Any]  # in autocommit mode
    server_version_num: int
    settings: PostgresTarget
    database: str
    extensions: dict[str, str] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)  # per-target memory that survives cycles


@dataclass
class RedisContext:
    """What a Redis collector may use during one run."""

    target: str
    client: Redis
    settings: RedisTarget
    state: dict[str, Any] = field(default_factory=dict)


class Collector(ABC):
    name: ClassVar[str]
    kind: ClassVar[Literal["postgres", "redis"]]
    # None: run every cycle of the target; otherwise the minimum seconds between runs (slow collectors).
    default_interval: ClassVar[float | None] = None

    @abstractmethod
    async def collect(self, ctx: Any, out: MetricSet) -> None:
        """Query the source and add samples to ``out``; raise CollectorDisabled if it can never work here."""
