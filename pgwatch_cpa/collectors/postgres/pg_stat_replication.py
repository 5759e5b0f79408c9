"""Replication: role, standby replay lag, per-replica lag (pg_stat_replication), slots (pg_replication_slots)."""

from __future__ import annotations

from pgwatch_cpa.collectors.base import PgContext
from pgwatch_cpa.collectors.metric_set import MetricSet
from pgwatch_cpa.collectors.postgres.common import PgCollector, exportable, fetch, num


class ReplicationCollector(PgCollector):
    name = "replication"

    async def collect(self, ctx: PgContext, out: MetricSet) -> None:
        role = (await fetch(ctx, "pg_replication"))[0]
        out.gauge("pg_replication_is_replica", "1 if the server is a standby (pg_is_in_recovery).",
                  1.0 if role["in_recovery"] else 0.0)
        if role["in_recovery"]:
            out.gauge("pg_replication_lag_seconds",
                      "Standby: seconds since the last replayed transaction (0 when all received WAL is replayed).",
                      num(role["replay_lag_seconds"]) or 0.0)
        for r in await fetch(ctx, "pg_stat_replication"):
            if not exportable(ctx, "replica application_name", r["application_name"]):
                continue  # the server cleans application_name to ASCII: should not happen
            labels = {"application_name": r["application_name"], "client_addr": r["client_addr"]}
            out.info("pg_stat_replication_info", "A connected replica and its state.", {**labels, "state": r["state"]})
            for kind in ("write", "flush", "replay"):
                value = num(r[f"{kind}_lag"])
                out.gauge("pg_stat_replication_lag_seconds", "Replica lag by stage (write, flush, replay).",
                          value or 0.0, {**labels, "kind": kind})
            if r["lag_bytes"] is not None:
                out.gauge("pg_stat_replication_lag_bytes", "WAL bytes not yet replayed by the replica.",
                          r["lag_bytes"], labels)
        for r in await fetch(ctx, "pg_replication_slots"):
            if not exportable(ctx, "replication slot name", r["slot_name"]):
                continue  # slot names are [a-z0-9_]: should not happen
            labels = {"slot_name": r["slot_name"], "slot_type": r["slot_type"]}
            out.gauge("pg_replication_slots_active", "1 if a consumer is connected to the slot.",
                      1.0 if r["active"] else 0.0, labels)
            if r["retained_bytes"] is not None:
                out.gauge("pg_replication_slots_retained_wal_bytes",
                          "WAL kept on disk for the slot (current LSN minus restart_lsn).", r["retained_bytes"],
                          labels)
