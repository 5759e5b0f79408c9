"""Binds the query layer's :class:`~pgwatch_cpa.cpa.queries.Cache` protocol to the Redis :class:`CacheService`.

    async with CacheService.create(url, app_instance="web-1") as service:
        cache = QueryCache(service)
        rows = await list_clients(pool, org_id, cache=cache)      # cache-aside through typed, tenant-scoped keys

queries.py names a cached result by plain ``key_parts`` (``("client_list", org, status, page, per_page)``); the
service wants a typed :class:`~pgwatch_cpa.cpa.cache.keys.CacheKey` whose family decides TTL and which write events
invalidate it. :func:`cache_key` is that translation, one entry per cached query:

==================  ===================  ==========================================================================
key_parts[0]        family               invalidated by (invalidation.EVENTS)
==================  ===================  ==========================================================================
client_list         client_list          client.*, invoice.*, quickbooks.sync
dashboard           dashboard_metrics    client.*, document.upload/delete, task.*, invoice.*, quickbooks.sync
client_dashboard    dashboard_metrics    same: its document, engagement and invoice counts change with all of them
ar_aging            invoice_list         invoice.*, client.update/delete, quickbooks.sync
==================  ===================  ==========================================================================

``organization.update`` invalidates all of them (it bumps the org generation).

An unknown first part is a programming error (a new cached query without a family) and raises ``ValueError``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from pgwatch_cpa.cpa.cache import families as fam
from pgwatch_cpa.cpa.cache import keys
from pgwatch_cpa.cpa.cache.keys import CacheKey

if TYPE_CHECKING:
    from pgwatch_cpa.cpa.cache.service import CacheService

T = TypeVar("T")


def _client_list(org: str, status: str, page: str, per_page: str) -> CacheKey:
    return keys.client_list(org, {"status": status, "page": int(page), "per_page": int(per_page)})


def _dashboard(org: str, what: str = "metrics") -> CacheKey:
    return keys.dashboard_metrics(org) if what == "metrics" else keys.family_key(fam.DASHBOARD_METRICS, org, what)


def _client_dashboard(org: str, limit: str, after: str) -> CacheKey:
    return keys.family_key(fam.DASHBOARD_METRICS, org, "client_dashboard",
                           filters={"limit": int(limit), "after": json.loads(after)})


def _ar_aging(org: str) -> CacheKey:
    return keys.invoice_list(org, {"view": "ar_aging"})


_BUILDERS: dict[str, Callable[..., CacheKey]] = {
    "client_list": _client_list,
    "dashboard": _dashboard,
    "client_dashboard": _client_dashboard,
    "ar_aging": _ar_aging,
}


def cache_key(key_parts: Sequence[str]) -> CacheKey:
    """The typed key of a queries.py ``key_parts`` tuple (``(name, org_id, *rest)``)."""
    if len(key_parts) < 2:
        raise ValueError(f"key_parts must start with a query name and an org id, got {tuple(key_parts)!r}")
    name, org, *rest = key_parts
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise ValueError(f"no cache family for query {name!r}; add it to cache_adapter._BUILDERS") from None
    return builder(org, *rest)


class QueryCache:
    """queries.Cache over a CacheService: same fail-open, single-flight and tenant checks as the service."""

    def __init__(self, service: CacheService) -> None:
        self.service = service

    async def get_or_load(self, key_parts: Sequence[str], loader: Callable[[], Awaitable[T]]) -> T:
        return await self.service.get_or_load(cache_key(key_parts), loader)
