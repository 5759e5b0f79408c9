"""INFO: one ``INFO all`` per cycle, parsed once, exported under redis_exporter's names where they are clean.

maxmemory and maxclients come from INFO, not CONFIG GET: managed Redis services forbid CONFIG.
"""

from __future__ import annotations

from pgwatch_cpa.collectors.base import Collector, RedisContext
from pgwatch_cpa.collectors.metric_set import MetricSet
from pgwatch_cpa.collectors.redis.common import (
    StickyTopN,
    label_value,
    number,
    parse_fields,
    parse_info,
    raw_command,
)

G, C = "gauge", "counter"

# (INFO field, metric, type, help, divisor to base units). A field the server does not report is skipped.
FIELDS: tuple[tuple[str, str, str, str, float], ...] = (
    ("uptime_in_seconds", "redis_uptime_in_seconds", G, "Seconds since the server started.", 1),
    ("connected_clients", "redis_connected_clients", G, "Client connections (replicas excluded).", 1),
    ("blocked_clients", "redis_blocked_clients", G, "Clients blocked in a blocking call (BLPOP, WAIT...).", 1),
    ("tracking_clients", "redis_tracking_clients", G, "Clients with client-side caching tracking enabled.", 1),
    ("maxclients", "redis_config_maxclients", G, "The maxclients setting, as INFO reports it.", 1),
    ("rejected_connections", "redis_rejected_connections_total", C,
     "Connections rejected because maxclients was reached.", 1),
    ("total_connections_received", "redis_connections_received_total", C, "Connections accepted.", 1),
    ("used_memory", "redis_memory_used_bytes", G, "Bytes allocated by the server's allocator.", 1),
    ("used_memory_rss", "redis_memory_used_rss_bytes", G, "Resident set size of the server process.", 1),
    ("used_memory_peak", "redis_memory_used_peak_bytes", G, "Peak of used_memory.", 1),
    ("used_memory_dataset", "redis_memory_used_dataset_bytes", G, "used_memory minus the server's overhead.", 1),
    ("maxmemory", "redis_memory_max_bytes", G, "The maxmemory setting (0: no limit), as INFO reports it.", 1),
    ("mem_fragmentation_ratio", "redis_mem_fragmentation_ratio", G, "used_memory_rss / used_memory.", 1),
    ("total_commands_processed", "redis_commands_processed_total", C, "Commands processed.", 1),
    ("total_net_input_bytes", "redis_net_input_bytes_total", C, "Bytes read from the network.", 1),
    ("total_net_output_bytes", "redis_net_output_bytes_total", C, "Bytes written to the network.", 1),
    ("keyspace_hits", "redis_keyspace_hits_total", C, "Successful key lookups.", 1),
    ("keyspace_misses", "redis_keyspace_misses_total", C, "Failed key lookups.", 1),
    ("evicted_keys", "redis_evicted_keys_total", C, "Keys evicted because of maxmemory.", 1),
    ("expired_keys", "redis_expired_keys_total", C, "Keys deleted because their TTL expired.", 1),
    ("total_error_replies", "redis_error_replies_total", C, "Error replies sent to clients.", 1),
    ("latest_fork_usec", "redis_latest_fork_seconds", G, "Duration of the latest fork.", 1e6),
    ("pubsub_channels", "redis_pubsub_channels", G, "Pub/sub channels with subscribers.", 1),
    ("connected_slaves", "redis_connected_slaves", G, "Connected replicas.", 1),
    ("master_repl_offset", "redis_master_repl_offset", G, "Replication offset of this server (bytes).", 1),
    ("slave_repl_offset", "redis_slave_repl_offset", G, "Replication offset processed by this replica.", 1),
    ("master_last_io_seconds_ago", "redis_master_last_io_seconds_ago", G,
     "Seconds since this replica last heard from its primary.", 1),
    ("master_sync_in_progress", "redis_master_sync_in_progress", G, "1 while a replica syncs from its primary.", 1),
    ("loading", "redis_loading_dump_file", G, "1 while the server loads a dump file.", 1),
    ("rdb_changes_since_last_save", "redis_rdb_changes_since_last_save", G, "Writes since the last RDB save.", 1),
    ("rdb_bgsave_in_progress", "redis_rdb_bgsave_in_progress", G, "1 while an RDB save runs.", 1),
    ("rdb_last_save_time", "redis_rdb_last_save_timestamp_seconds", G, "Unix time of the last successful save.", 1),
    ("aof_enabled", "redis_aof_enabled", G, "1 if the append-only file is enabled.", 1),
    ("aof_rewrite_in_progress", "redis_aof_rewrite_in_progress", G, "1 while an AOF rewrite runs.", 1),
    ("used_cpu_sys", "redis_cpu_sys_seconds_total", C, "System CPU consumed by the server.", 1),
    ("used_cpu_user", "redis_cpu_user_seconds_total", C, "User CPU consumed by the server.", 1),
    ("used_cpu_sys_children", "redis_cpu_sys_children_seconds_total", C,
     "System CPU consumed by the server's children (saves, rewrites).", 1),
    ("used_cpu_user_children", "redis_cpu_user_children_seconds_total", C,
     "User CPU consumed by the server's children (saves, rewrites).", 1),
)
# Fields that are -1 until the first event: exported only once they mean something.
NON_NEGATIVE = {
    "rdb_last_bgsave_time_sec": ("redis_rdb_last_bgsave_duration_seconds", "Duration of the last RDB save."),
    "aof_last_rewrite_time_sec": ("redis_aof_last_rewrite_duration_seconds", "Duration of the last AOF rewrite."),
}
STATUS = {
    "rdb_last_bgsave_status": ("redis_rdb_last_bgsave_status", "1 if the last RDB save succeeded.", "ok"),
    "aof_last_bgrewrite_status": ("redis_aof_last_bgrewrite_status", "1 if the last AOF rewrite succeeded.", "ok"),
    "aof_last_write_status": ("redis_aof_last_write_status", "1 if the last AOF write succeeded.", "ok"),
    "master_link_status": ("redis_master_link_up", "1 if this replica's link to its primary is up.", "up"),
}
PERCENTILES = {"p50": "50", "p99": "99", "p99.9": "99.9"}


class RedisInfoCollector(Collector):
    name = "info"
    kind = "redis"

    async def collect(self, ctx: RedisContext, out: MetricSet) -> None:
        info = parse_info(await raw_command(ctx.client, "INFO", "all"))
        state = ctx.state
        if "commands" not in state:
            state["commands"] = StickyTopN(ctx.settings.top_commands)
            state["errors"] = StickyTopN(ctx.settings.top_errors)
        export_info(info, out, state["commands"], state["errors"])


def export_info(info: dict[str, str], out: MetricSet, commands: StickyTopN, errors: StickyTopN) -> None:
    """Turn a parsed INFO into samples (a pure function: the unit tests feed it INFO text)."""
    out.info("redis_instance_info", "Server identity (always 1).", {
        "redis_version": info.get("redis_version", ""),
        "redis_mode": info.get("redis_mode") or info.get("server_mode") or "standalone",
        "role": info.get("role", ""),
        "server_name": info.get("server_name", "redis"),
        "server_version": info.get("valkey_version") or info.get("redis_version", ""),
        "maxmemory_policy": info.get("maxmemory_policy", ""),
    })
    for field, metric, typ, doc, scale in FIELDS:
        value = number(info.get(field))
        if value is None:
            continue
        if typ == C:
            out.counter(metric, doc, value / scale)
        else:
            out.gauge(metric, doc, value / scale)
    for field, (metric, doc) in NON_NEGATIVE.items():
        value = number(info.get(field))
        if value is not None and value >= 0:
            out.gauge(metric, doc, value)
    for field, (metric, doc, good) in STATUS.items():
        if field in info:
            out.gauge(metric, doc, 1.0 if info[field].strip() == good else 0.0)
    _keyspace(info, out)
    _replicas(info, out)
    _commandstats(info, out, commands)
    _errorstats(info, out, errors)


def _keyspace(info: dict[str, str], out: MetricSet) -> None:
    for key, value in info.items():
        if not (key.startswith("db") and key[2:].isdigit()):
            continue
        fields = parse_fields(value)
        labels = {"db": key}
        for field, metric, doc, scale in (
            ("keys", "redis_db_keys", "Keys in the database.", 1),
            ("expires", "redis_db_keys_expiring", "Keys with a TTL in the database.", 1),
            ("avg_ttl", "redis_db_avg_ttl_seconds", "Average TTL of the database's expiring keys (estimate).", 1e3),
        ):
            number_ = number(fields.get(field))
            if number_ is not None:
                out.gauge(metric, doc, number_ / scale, labels)


def _replicas(info: dict[str, str], out: MetricSet) -> None:
    master_offset = number(info.get("master_repl_offset"))
    for key, value in info.items():
        if not (key.startswith("slave") and key[5:].isdigit()):
            continue
        fields = parse_fields(value)
        labels = {"slave_ip": fields.get("ip", ""), "slave_port": fields.get("port", ""),
                  "slave_state": fields.get("state", "")}
        offset, lag = number(fields.get("offset")), number(fields.get("lag"))
        if offset is not None:
            out.gauge("redis_connected_slave_offset_bytes", "Replication offset acknowledged by the replica.",
                      offset, labels)
            if master_offset is not None:
                out.gauge("redis_connected_slave_repl_lag_bytes", "master_repl_offset minus the replica's offset.",
                          max(0.0, master_offset - offset), labels)
        if lag is not None:
            out.gauge("redis_connected_slave_lag_seconds", "Seconds since the replica's last acknowledgement.",
                      lag, labels)


def _commandstats(info: dict[str, str], out: MetricSet, top: StickyTopN) -> None:
    stats: dict[str, dict[str, float]] = {}
    for key, value in info.items():
        if key.startswith("cmdstat_"):
            fields = parse_fields(value)
            stats[label_value(key[len("cmdstat_"):])] = {
                k: number(fields.get(k)) or 0.0 for k in ("calls", "usec", "rejected_calls", "failed_calls")}
    if not stats:
        return
    members, _ = top.split({cmd: s["calls"] for cmd, s in stats.items()})
    rest = [s for cmd, s in stats.items() if cmd not in set(members)]
    rows = [(cmd, stats[cmd]) for cmd in members]
    if rest or len(top.chosen) >= top.limit:
        rows.append(("other", {k: sum(s[k] for s in rest) for k in ("calls", "usec", "rejected_calls",
                                                                      "failed_calls")}))
    for cmd, s in rows:
        labels = {"cmd": cmd}
        out.counter("redis_commands_total", "Calls per command (top commands by calls, the rest as other).",
                    s["calls"], labels)
        out.counter("redis_commands_duration_seconds_total", "Time spent executing the command.",
                    s["usec"] / 1e6, labels)
        out.counter("redis_commands_rejected_calls_total", "Calls rejected before execution (ACL, OOM...).",
                    s["rejected_calls"], labels)
        out.counter("redis_commands_failed_calls_total", "Calls that failed during execution.",
                    s["failed_calls"], labels)
    for cmd in members:
        fields = parse_fields(info.get(f"latency_percentiles_usec_{cmd}", ""))
        for name, percentile in PERCENTILES.items():
            usec = number(fields.get(name))
            if usec is not None:
                out.gauge("redis_commands_latency_seconds", "Latency percentiles of the command since the last "
                          "stats reset (Redis 7+).", usec / 1e6, {"cmd": cmd, "percentile": percentile})


def _errorstats(info: dict[str, str], out: MetricSet, top: StickyTopN) -> None:
    counts = {label_value(key[len("errorstat_"):]): number(parse_fields(value).get("count")) or 0.0
              for key, value in info.items() if key.startswith("errorstat_")}
    if not counts:
        return
    members, other = top.split(counts)
    for err in members:
        out.counter("redis_errors_total", "Error replies by error prefix (top prefixes, the rest as other).",
                    counts[err], {"err": err})
    if other or len(top.chosen) >= top.limit:
        out.counter("redis_errors_total", "Error replies by error prefix (top prefixes, the rest as other).",
                    other, {"err": "other"})
