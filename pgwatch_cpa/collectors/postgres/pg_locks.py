"""Locks by database, mode and whether they are granted (pg_locks)."""

from __future__ import annotations

from pgwatch_cpa.collectors.base import PgContext
from pgwatch_cpa.collectors.metric_set import MetricSet
from pgwatch_cpa.collectors.postgres.common import PgCollector, exportable, fetch


class LocksCollector(PgCollector):
    name = "locks"

    async def collect(self, ctx: PgContext, out: MetricSet) -> None:
        waiting = 0.0
        for r in await fetch(ctx, "pg_locks"):
            if not r["granted"]:
                waiting += r["locks"]
            if exportable(ctx, "database name", r["datname"]):
                out.gauge("pg_locks", "Locks held or awaited, by database ('' for cluster-wide), mode and granted.",
                          r["locks"], {"datname": r["datname"], "mode": r["mode"],
                                       "granted": "true" if r["granted"] else "false"})
        out.gauge("pg_locks_waiting", "Lock requests not granted yet.", waiting)
