"""SLOWLOG: how many slow commands, the latest one's id, and the slowest recent durations.

Only the id, timestamp and duration of an entry are read. Its arguments can hold client data (names, tax ids)
and are never decoded or exported. Managed services may rename or forbid SLOWLOG: the first refusal disables the
collector for the target (one WARNING from the poller).
"""

from __future__ import annotations

from pgwatch_cpa.collectors.base import Collector, CollectorDisabled, RedisContext
from pgwatch_cpa.collectors.metric_set import MetricSet
from pgwatch_cpa.collectors.redis.common import is_forbidden, raw_commands


class RedisSlowlogCollector(Collector):
    name = "slowlog"
    kind = "redis"

    async def collect(self, ctx: RedisContext, out: MetricSet) -> None:
        n = ctx.settings.slowlog_entries
        length, entries = await raw_commands(ctx.client, ("SLOWLOG", "LEN"), ("SLOWLOG", "GET", n))
        for reply in (length, entries):
            if isinstance(reply, Exception):
                if is_forbidden(reply):
                    raise CollectorDisabled(f"SLOWLOG is not available on this server: {reply}")
                raise reply
        export_slowlog(int(length), entries, out)


def export_slowlog(length: int, entries: list, out: MetricSet) -> None:
    """``entries`` as SLOWLOG GET returns them, newest first: [id, unix time, microseconds, args, ...]."""
    out.gauge("redis_slowlog_length", "Entries in the slow log.", length)
    parsed = [(int(e[0]), int(e[1]), int(e[2])) for e in entries if isinstance(e, list | tuple) and len(e) >= 3]
    last_id, last_time, last_usec = max(parsed) if parsed else (-1, 0, 0)
    out.gauge("redis_slowlog_last_id", "Id of the newest slow log entry (-1 if none since the server started "
              "or the log was reset); its increase counts slow commands.", last_id)
    if parsed:
        out.gauge("redis_slowlog_last_slow_execution_duration_seconds", "Duration of the newest slow log entry.",
                  last_usec / 1e6)
        out.gauge("redis_slowlog_last_timestamp_seconds", "Unix time of the newest slow log entry.", last_time)
    out.gauge("redis_slowlog_recent_max_duration_seconds", "Longest duration among the most recent slow log "
              "entries read (SLOWLOG GET slowlog_entries); 0 if none.", max((p[2] for p in parsed), default=0) / 1e6)
    out.gauge("redis_slowlog_recent_entries", "Slow log entries read this cycle (at most slowlog_entries).",
              len(parsed))
