"""Connections and long-running work from pg_stat_activity (never its ``query`` column: literal client data)."""

from __future__ import annotations

from collections import defaultdict

from pgwatch_cpa.collectors.base import PgContext
from pgwatch_cpa.collectors.metric_set import MetricSet
from pgwatch_cpa.collectors.postgres.common import PgCollector, exportable, fetch, num, top_n_with_other
from pgwatch_cpa.collectors.postgres.encoding import lossy

IDLE_IN_TRANSACTION = ("idle in transaction", "idle in transaction (aborted)")


class ActivityCollector(PgCollector):
    name = "activity"

    async def collect(self, ctx: PgContext, out: MetricSet) -> None:
        s = ctx.settings
        rows = await fetch(ctx, "pg_stat_activity", {"long_query_seconds": float(s.long_query_threshold)})
        limits = (await fetch(ctx, "pg_connection_limits"))[0]

        by_db_state: dict[tuple[str, str], float] = defaultdict(float)
        by_wait: dict[str, float] = defaultdict(float)
        by_app: dict[str, float] = defaultdict(float)
        oldest_xact: dict[str, float] = {"active": 0.0, "idle in transaction": 0.0}
        oldest_query = idle_in_xact = 0.0
        long_running = blocked = total = 0.0
        for r in rows:
            n = float(r["connections"])
            total += n  # a row skipped below still counts here: the connections are real
            if exportable(ctx, "database name", r["datname"]):
                by_db_state[(r["datname"], r["state"])] += n
            # The server cleans application_name to ASCII; should one arrive invalid, it joins the rest.
            by_app["other" if lossy(r["application_name"]) else r["application_name"]] += n
            if r["state"] == "active":
                by_wait[r["wait_event_type"]] += n
            if r["oldest_xact_age"] is not None:
                oldest_xact[r["state"]] = max(oldest_xact.get(r["state"], 0.0), num(r["oldest_xact_age"]) or 0.0)
            if r["oldest_query_age"] is not None:
                oldest_query = max(oldest_query, num(r["oldest_query_age"]) or 0.0)
            if r["state"] in IDLE_IN_TRANSACTION and r["oldest_state_age"] is not None:
                idle_in_xact = max(idle_in_xact, num(r["oldest_state_age"]) or 0.0)
            long_running += r["long_running"]
            blocked += r["blocked"]

        for (datname, state), n in sorted(by_db_state.items()):
            out.gauge("pg_stat_activity_connections", "Client connections by database and state (ours excluded).",
                      n, {"datname": datname, "state": state})
        for wait, n in sorted(by_wait.items()):
            out.gauge("pg_stat_activity_active_wait_event_type_connections",
                      "Active client connections by what they wait on ('none': running on CPU).",
                      n, {"wait_event_type": wait})
        for app, n in top_n_with_other(by_app, s.application_top_n).items():
            out.gauge("pg_stat_activity_application_connections",
                      "Client connections by application_name (top N, the rest as 'other').",
                      n, {"application_name": app})
        for state, age in sorted(oldest_xact.items()):
            out.gauge("pg_stat_activity_oldest_xact_age_seconds",
                      "Age of the oldest open transaction, by session state.", age, {"state": state})
        out.gauge("pg_stat_activity_oldest_query_age_seconds", "Age of the oldest running (active) query.",
                  oldest_query)
        out.gauge("pg_stat_activity_idle_in_transaction_seconds",
                  "Longest time a session has been idle inside an open transaction.", idle_in_xact)
        out.gauge("pg_stat_activity_long_running_queries",
                  "Non-idle sessions whose query started more than long_query_threshold ago.", long_running)
        out.gauge("pg_stat_activity_long_running_threshold_seconds", "The long_query_threshold setting.",
                  float(s.long_query_threshold))
        out.gauge("pg_stat_activity_idle_in_transaction_threshold_seconds",
                  "The idle_in_transaction_threshold setting (the PostgresIdleInTransaction alert compares to it).",
                  float(s.idle_in_transaction_threshold))
        out.gauge("pg_stat_activity_blocked_backends", "Sessions waiting for a lock held by another session.",
                  blocked)

        max_conn = float(limits["max_connections"])
        su_reserved = float(limits["superuser_reserved_connections"])
        reserved = float(limits["reserved_connections"])
        out.gauge("pg_settings_max_connections", "Server setting max_connections.", max_conn)
        out.gauge("pg_settings_superuser_reserved_connections", "Server setting superuser_reserved_connections.",
                  su_reserved)
        if ctx.server_version_num >= 160000:
            out.gauge("pg_settings_reserved_connections", "Server setting reserved_connections.", reserved)
        available = max(1.0, max_conn - su_reserved - reserved)
        # Our own backend holds a slot too, so it counts here although the connection gauges exclude it.
        out.gauge("pg_connections_utilization_ratio",
                  "Client connections / connections available to ordinary roles (max minus reserved).",
                  (total + 1) / available)
