"""Instance-wide findings: transaction-id age, cache-hit ratio, connection utilisation, settings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pgwatch_cpa.report.model import Finding
from pgwatch_cpa.report.postgres_rules.common import (
    CACHE_HIT_MIN,
    CACHE_MIN_BLOCKS,
    CONNECTIONS_CRITICAL,
    CONNECTIONS_WARNING,
    GIB,
    MIB,
    OLDEST_TABLES,
    XID_CRITICAL,
    XID_WARNING,
    Row,
    Rules,
    human_bytes,
    number,
    pg_memory,
    table_name,
)


def xid_findings(rules: Rules, databases: Sequence[Row], oldest: Mapping[str, Sequence[Row]]) -> list[Finding]:
    """Transaction-id age of every connectable database: > 200M warning, > 1B critical (wraparound at 2^31)."""
    out = []
    for d in databases:
        age = number(d["frozen_xid_age"])
        if age <= XID_WARNING:
            continue
        name = d["datname"]
        tables = [t for t in oldest.get(name, ()) if number(t["frozen_xid_age"]) > XID_WARNING / 2]
        sql = "\n".join(f"VACUUM (FREEZE, VERBOSE) {table_name(t)};  -- age {number(t['frozen_xid_age']):.0f}"
                        for t in tables) or "VACUUM (FREEZE, VERBOSE);"
        sql = (f"-- connected to {name}, as a superuser or the tables' owners, oldest tables first:\n{sql}\n"
               "-- and find what holds freezing back: long transactions, abandoned replication slots, prepared "
               "transactions")
        out.append(rules.finding(
            "xid_age", "critical" if age > XID_CRITICAL else "warning", name, None,
            f"Database {name} is {age / 1e6:.0f} million transactions from its last freeze",
            {"frozen_xid_age": age, "wraparound_at": 2**31, "share_to_wraparound": round(age / 2**31, 4)},
            age, sql, f"brings the age of {name} from {age / 1e6:.0f} million back towards zero, far from the "
                      f"forced shutdown at {2**31 / 1e6:.0f} million"))
    return out


def oldest_tables(tables: Sequence[Row], n: int = OLDEST_TABLES) -> list[Row]:
    return sorted(tables, key=lambda t: (-number(t["frozen_xid_age"]), table_name(t)))[:n]


def cache_hit_finding(rules: Rules, hit: float, read: float, settings: Mapping[str, float],
                      host_memory: int | None) -> Finding | None:
    if hit + read < CACHE_MIN_BLOCKS or hit / (hit + read) >= CACHE_HIT_MIN:
        return None
    ratio, shared = hit / (hit + read), settings.get("shared_buffers")
    advice = "-- first the statements with the most shared_blks_read (slow_statement findings) and the " \
             "missing-index candidates; if the working set is larger than the cache:"
    if host_memory:
        advice += (f"\nALTER SYSTEM SET shared_buffers = '{pg_memory(host_memory / 4)}';  -- needs a restart"
                   f"\nALTER SYSTEM SET effective_cache_size = '{pg_memory(host_memory * 3 / 4)}';"
                   "\nSELECT pg_reload_conf();")
    else:
        advice += ("\n-- raise shared_buffers towards 25% of the host's memory (restart) and effective_cache_size "
                   "to 75%: ALTER SYSTEM SET shared_buffers = '<25% of RAM>';")
    return rules.finding(
        "cache_hit_ratio", "critical" if ratio < 0.8 else "warning", None, None,
        f"Buffer cache hit ratio {ratio:.1%} (below {CACHE_HIT_MIN:.0%})",
        {"cache_hit_ratio": round(ratio, 4), "blks_hit": hit, "blks_read": read, "shared_buffers_bytes": shared,
         "effective_cache_size_bytes": settings.get("effective_cache_size"), "host_memory_bytes": host_memory},
        read, advice, f"{read:.0f} block reads from outside shared_buffers ({1 - ratio:.1%} of accesses) served "
                      "from memory instead")


def connection_finding(rules: Rules, connections: float, available: float, max_connections: float
                       ) -> Finding | None:
    """``connections`` counts every client backend (the report's own too); ``available`` is max_connections
    minus the reserved slots, as the activity collector computes utilisation."""
    utilisation = connections / max(available, 1.0)
    if utilisation <= CONNECTIONS_WARNING:
        return None
    pool = max(1, int(available * 0.5))
    return rules.finding(
        "connection_utilisation", "critical" if utilisation > CONNECTIONS_CRITICAL else "warning", None, None,
        f"{utilisation:.0%} of the connection slots are in use ({connections:.0f} of {available:.0f})",
        {"connections": connections, "available": available, "max_connections": max_connections,
         "connection_utilisation": round(utilisation, 4)},
        utilisation,
        "-- pool the application's connections (PgBouncer, pool_mode = transaction) and keep the sum of the "
        f"pools well under {available:.0f}, e.g.:\n-- pgbouncer.ini: default_pool_size = {pool}\n"
        "-- raising max_connections instead needs a restart and memory for every slot",
        f"utilisation from {utilisation:.0%} down to about {pool / available:.0%}: room for bursts and for "
        "maintenance sessions")


# ------------------------------------------------------------------ settings


@dataclass(frozen=True)
class Advice:
    name: str
    value: float  # base units: bytes for memory
    low: float  # a finding when the current value < value x low ...
    high: float  # ... or > value x high
    restart: bool
    why: str
    memory: bool = True


def setting_advice(host_memory: int | None, max_connections: float) -> list[Advice]:
    """The guide's postgresql.conf, scaled: its numbers assume a 1 GB host (shared_buffers 256MB = 25%)."""
    advice = [
        Advice("checkpoint_completion_target", 0.9, 1.0, 1.12, False, "spreads checkpoint writes", memory=False),
        Advice("random_page_cost", 1.1, 0.5, 2.0, False,
               "on SSD storage (the guide's assumption; keep 4 on spinning disks) random reads cost "
               "about as much as sequential ones, so the planner may choose index scans", memory=False),
    ]
    if not host_memory:
        return advice
    shared = _mb(host_memory / 4)
    work_mem = max(4 * MIB, min(host_memory / 256, host_memory / 4 / max(max_connections, 1)))
    return [
        *advice,
        Advice("shared_buffers", shared, 0.5, 1.6, True, "25% of the host's memory"),
        Advice("effective_cache_size", _mb(host_memory * 3 / 4), 0.5, 1.34, False,
               "75% of the host's memory (shared_buffers plus the OS cache)"),
        Advice("maintenance_work_mem", _mb(min(max(host_memory / 16, 64 * MIB), 2 * GIB)), 0.5, 4.0, False,
               "1/16 of the host's memory (64MB for the guide's 1 GB), at most 2GB"),
        Advice("work_mem", _mb(work_mem), 0.5, 4.0, False,
               "4MB per GB of memory, bounded by 25% of memory over max_connections"),
        Advice("wal_buffers", _mb(min(16 * MIB, shared / 32)), 1.0, float("inf"), True,
               "1/32 of shared_buffers, at most 16MB"),
    ]


def _mb(value: float) -> float:
    """Rounded down to whole MB, as the ALTER SYSTEM value is written (at least 1MB)."""
    return float(max(MIB, value // MIB * MIB))


def setting_findings(rules: Rules, settings: Mapping[str, float], host_memory: int | None) -> list[Finding]:
    out = []
    for a in setting_advice(host_memory, settings.get("max_connections", 100.0)):
        current = settings.get(a.name)
        if current is None or current < 0 or a.value * a.low <= current <= a.value * a.high:
            continue
        out.append(_setting_finding(rules, a, current, host_memory))
    return out


def _setting_finding(rules: Rules, a: Advice, current: float, host_memory: int | None) -> Finding:
    def show(v: float) -> str:
        return human_bytes(v) if a.memory else f"{v:g}"

    value = f"'{pg_memory(a.value)}'" if a.memory else f"{a.value:g}"
    apply = "-- needs a restart" if a.restart else "SELECT pg_reload_conf();"
    return rules.finding(
        "setting", "info", None, a.name, f"{a.name} = {show(current)}; the guide's value here is {show(a.value)}",
        {"current": current, "recommended": a.value, "unit": "bytes" if a.memory else None,
         "host_memory_bytes": host_memory if a.memory else None, "needs_restart": a.restart},
        abs(a.value - current), f"ALTER SYSTEM SET {a.name} = {value};\n{apply}",
        f"{a.name} from {show(current)} to {show(a.value)}: {a.why}")
