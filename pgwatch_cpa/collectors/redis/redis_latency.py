"""LATENCY LATEST: the latest and the largest latency spike per event, where the latency monitor is enabled.

With ``latency-monitor-threshold 0`` (the default) the server records nothing and no series are exported. A
server that renamed or forbids LATENCY disables the collector after one refusal (one WARNING from the poller).
"""

from __future__ import annotations

from pgwatch_cpa.collectors.base import Collector, CollectorDisabled, RedisContext
from pgwatch_cpa.collectors.metric_set import MetricSet
from pgwatch_cpa.collectors.redis.common import is_forbidden, label_value, raw_commands, text

MAX_EVENTS = 32  # the server has a few dozen fixed event names; bound the labels anyway


class RedisLatencyCollector(Collector):
    name = "latency"
    kind = "redis"

    async def collect(self, ctx: RedisContext, out: MetricSet) -> None:
        (reply,) = await raw_commands(ctx.client, ("LATENCY", "LATEST"))
        if isinstance(reply, Exception):
            if is_forbidden(reply):
                raise CollectorDisabled(f"LATENCY is not available on this server: {reply}")
            raise reply
        export_latency(reply, out)


def export_latency(events: list, out: MetricSet) -> None:
    """``events`` as LATENCY LATEST returns them: [name, unix time, latest ms, max ms, ...]."""
    rows = [e for e in events if isinstance(e, list | tuple) and len(e) >= 4][:MAX_EVENTS]
    for event in rows:
        labels = {"event_name": label_value(text(event[0]))}
        out.gauge("redis_latency_spike_last_timestamp_seconds", "Unix time of the event's latest latency spike.",
                  int(event[1]), labels)
        out.gauge("redis_latency_spike_duration_seconds", "Duration of the event's latest latency spike.",
                  int(event[2]) / 1e3, labels)
        out.gauge("redis_latency_spike_max_duration_seconds", "Longest latency spike of the event since the "
                  "server started or LATENCY RESET.", int(event[3]) / 1e3, labels)
