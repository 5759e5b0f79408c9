"""The CPA archiver's progress, as it publishes it to Redis (pgwatch_cpa/cpa/archive/stats.py).

One key, no TTL: an archiver that stopped keeps its last success, and CpaArchivalStale compares it with the
schedule period. Labels: policy only (four values; never an organization).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pgwatch_cpa.collectors.base import Collector, RedisContext
from pgwatch_cpa.collectors.metric_set import MetricSet

log = logging.getLogger(__name__)


class CpaArchiveStatsCollector(Collector):
    name = "cpa_archive_stats"
    kind = "redis"

    async def collect(self, ctx: RedisContext, out: MetricSet) -> None:
        from pgwatch_cpa.cpa.archive.stats import KEY, SnapshotError, parse_snapshot

        data = await ctx.client.get(KEY)
        if data is None:
            return  # no archiver publishes to this Redis
        try:
            snapshot = parse_snapshot(data)
        except SnapshotError as exc:
            _warn_once(ctx.state, exc)
            out.gauge("cpa_archive_invalid_snapshot", "1 if the archiver's published statistics failed validation.",
                      1.0)
            return
        ctx.state.pop("invalid_warned", None)
        out.gauge("cpa_archive_invalid_snapshot", "1 if the archiver's published statistics failed validation.", 0.0)
        export_snapshot(snapshot, time.time(), out)


def _warn_once(state: dict[str, Any], exc: Exception) -> None:
    if not state.get("invalid_warned"):
        state["invalid_warned"] = True
        log.warning("ignoring the archiver's statistics: %s", exc)


def export_snapshot(snap: dict[str, Any], now: float, out: MetricSet) -> None:
    out.gauge("cpa_archive_snapshot_age_seconds", "Seconds since the archiver last published its statistics.",
              max(0.0, now - snap["published_at"]))
    for policy, stats in snap["policies"].items():
        labels = {"policy": policy}
        out.gauge("cpa_archive_schedule_period_seconds", "Seconds between two runs of the archiver's schedule "
                  "(a day when an outside scheduler runs it).", snap["schedule_period_seconds"], labels)
        if stats["last_success_at"] is not None:
            out.gauge("cpa_archive_last_success_timestamp_seconds", "End of the last run of the policy in which "
                      "every organization succeeded (unix seconds).", stats["last_success_at"], labels)
        if stats["last_run_at"] is not None:
            out.gauge("cpa_archive_last_run_timestamp_seconds", "End of the last run of the policy (unix seconds).",
                      stats["last_run_at"], labels)
        out.counter("cpa_archive_rows_archived_total", "Rows archived (exported and applied, or marked).",
                    stats["rows_archived"], labels)
        out.counter("cpa_archive_bytes_archived_total", "Compressed bytes of the exports written.",
                    stats["bytes_archived"], labels)
        out.counter("cpa_archive_batches_total", "Batches applied.", stats["batches"], labels)
        out.counter("cpa_archive_failures_total", "Organizations whose run of the policy failed (the ids are in "
                    "the archive_failures table).", stats["failures"], labels)
