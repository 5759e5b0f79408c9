"""What each application event invalidates, and the admin-only SCAN purge.

Invalidation cost grows with what is invalidated, never with the size of Redis: a family is invalidated by one
INCR of its generation counter (part of every key of that family, so old entries simply stop being read and
expire by TTL), an org by one INCR of the org generation, an entity by UNLINK of its exact key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis

from pgwatch_cpa.cpa.cache import families as f
from pgwatch_cpa.cpa.cache import keys
from pgwatch_cpa.cpa.cache.families import Family


@dataclass(frozen=True, slots=True)
class ExactKey:
    """An entity key the event names by id: UNLINKed if the id is given, else its family generation is bumped."""

    family: Family
    param: str
    build: Callable[[str, str], keys.CacheKey]


@dataclass(frozen=True, slots=True)
class EventRule:
    families: tuple[Family, ...] = ()  # generations bumped
    exact: tuple[ExactKey, ...] = ()  # exact keys deleted
    org_wide: bool = False  # bump the org generation: everything of the org


_USER = ExactKey(f.USER_PROFILE, "user_id", keys.user_profile)
_SESSION = ExactKey(f.SESSION, "session_id", keys.session)
_CLIENT_VIEWS = (f.CLIENT_LIST, f.INVOICE_LIST, f.DASHBOARD_METRICS)  # lists showing client names/balances
_MONEY = (f.INVOICE_LIST, f.CLIENT_LIST, f.DASHBOARD_METRICS, f.REPORT_DATA)

EVENTS: dict[str, EventRule] = {
    "client.create": EventRule(families=(f.CLIENT_LIST, f.DASHBOARD_METRICS)),
    "client.update": EventRule(families=_CLIENT_VIEWS),
    "client.delete": EventRule(families=(*_CLIENT_VIEWS, f.DOCUMENT_LIST, f.TASK_LIST, f.REPORT_DATA)),
    "document.upload": EventRule(families=(f.DOCUMENT_LIST, f.DASHBOARD_METRICS)),
    "document.update": EventRule(families=(f.DOCUMENT_LIST,)),
    "document.delete": EventRule(families=(f.DOCUMENT_LIST, f.DASHBOARD_METRICS)),
    "task.create": EventRule(families=(f.TASK_LIST, f.DASHBOARD_METRICS)),
    "task.update": EventRule(families=(f.TASK_LIST, f.DASHBOARD_METRICS)),
    "task.complete": EventRule(families=(f.TASK_LIST, f.DASHBOARD_METRICS)),
    "invoice.create": EventRule(families=_MONEY),
    "invoice.update": EventRule(families=_MONEY),
    "invoice.paid": EventRule(families=_MONEY),
    "user.update": EventRule(exact=(_USER,)),
    "user.delete": EventRule(families=(f.TASK_LIST,), exact=(_USER,)),
    "session.revoke": EventRule(exact=(_SESSION,)),
    "quickbooks.sync": EventRule(families=(f.QUICKBOOKS_DATA, *_MONEY)),
    "report.regenerate": EventRule(families=(f.REPORT_DATA,)),
    "organization.update": EventRule(org_wide=True),
}


def rule_for(event: str) -> EventRule:
    try:
        return EVENTS[event]
    except KeyError:
        raise ValueError(f"unknown cache event {event!r}; known: {', '.join(sorted(EVENTS))}") from None


# ---------------------------------------------------------------- admin tool (never on a request path)


async def scan_unlink(redis: Redis, match: str, count: int = 1000) -> int:
    """UNLINK every key matching ``match``, SCAN batch by batch; O(keyspace). Returns keys removed.

    For operators (purging a deleted tenant, clearing after a format change). Requests use generations.
    """
    removed = 0
    async for batch in _batches(redis, match, count):
        removed += int(await redis.unlink(*batch))
    return removed


async def _batches(redis: Redis, match: str, count: int):
    cursor = 0
    while True:
        cursor, found = await redis.scan(cursor=cursor, match=match, count=count)
        if found:
            yield found
        if int(cursor) == 0:
            return


async def purge_org(redis: Redis, org_id: str) -> int:
    """Delete every cached value of one org (generation counters stay: they must only ever grow)."""
    return await scan_unlink(redis, keys.org_data_pattern(org_id))


async def purge_all(redis: Redis) -> int:
    """The guide's clearCache(): every cached value of every org. Generation counters stay (see purge_org)."""
    return await scan_unlink(redis, keys.DATA_PREFIX + "*")
