"""Evaluation time of a realistic rule set (~25 rules) over a history of ~25,000 synthetic series.

The series mimic what the large catalog produces (per-table, per-index, per-statement and per-database families);
history holds 70 minutes at a 30 s poll interval for the metric names the rules read. Prints the median time of
one evaluation cycle of every rule (target: <= 20 ms).

    python bench/bench_alerts.py
"""

from __future__ import annotations

import random
import statistics
import time
from pathlib import Path

import yaml

from pgwatch_cpa.alerts.engine import AlertEngine
from pgwatch_cpa.alerts.history import History
from pgwatch_cpa.alerts.rules import parse_rules

REALISTIC = Path(__file__).resolve().parents[1] / "tests" / "e2e" / "cases" / "realistic_rules.yml"
EXTRA = """
  - name: catalog
    rules:
      - alert: TableDeadTuplesHigh
        expr: |
          pg_stat_user_tables_n_dead_tup / (pg_stat_user_tables_n_live_tup + pg_stat_user_tables_n_dead_tup) > 0.2
          and pg_stat_user_tables_n_dead_tup > 10000
        for: 15m
      - alert: TableSeqScansHigh
        expr: rate(pg_stat_user_tables_seq_scan_total[5m]) > 5 and pg_stat_user_tables_n_live_tup > 100000
        for: 10m
      - alert: TableAutovacuumStale
        expr: pg_stat_user_tables_last_autovacuum_age_seconds > 3 * 86400
      - alert: TableWriteBurst
        expr: sum by (target, datname) (rate(pg_stat_user_tables_n_tup_upd_total[5m])) > 5000
      - alert: IndexUnused
        expr: increase(pg_stat_user_indexes_idx_scan_total[1h]) == 0 and pg_stat_user_indexes_size_bytes > 1e8
      - alert: StatementSlow
        expr: |
          rate(pg_stat_statements_exec_time_seconds_total[5m])
            / clamp_min(rate(pg_stat_statements_calls_total[5m]), 0.001) > 0.5
        for: 5m
      - alert: StatementTempSpill
        expr: rate(pg_stat_statements_temp_blks_written_total[5m]) > 1000
      - alert: StatementCacheMisses
        expr: |
          rate(pg_stat_statements_shared_blks_read_total[5m])
            / (rate(pg_stat_statements_shared_blks_hit_total[5m]) + rate(pg_stat_statements_shared_blks_read_total[5m]))
          > 0.5
      - alert: DatabaseWraparound
        expr: pg_database_age_xid > 1.5e9
      - alert: DatabaseTempFiles
        expr: increase(pg_stat_database_temp_bytes_total[15m]) > 1e9
      - alert: LongTransactions
        expr: max by (target) (pg_stat_activity_max_tx_duration_seconds) > 600
        for: 2m
      - alert: ActivityIdleInTransaction
        expr: sum by (target, datname) (pg_stat_activity_count{state="idle in transaction"}) > 10
"""

TABLES, INDEXES, STATEMENTS, DATABASES = 2000, 2000, 300, 50
TABLE_METRICS = ["n_live_tup", "n_dead_tup", "seq_scan_total", "idx_scan_total", "n_tup_ins_total",
                 "n_tup_upd_total", "n_tup_del_total", "last_autovacuum_age_seconds"]
STATEMENT_METRICS = ["calls_total", "exec_time_seconds_total", "rows_total", "shared_blks_hit_total",
                     "shared_blks_read_total", "temp_blks_written_total"]
DB_METRICS = ["blks_hit_total", "blks_read_total", "xact_commit_total", "xact_rollback_total", "deadlocks_total",
              "temp_bytes_total", "tup_returned_total", "tup_fetched_total", "conflicts_total", "size_bytes"]
STATES = ["active", "idle", "idle in transaction", "idle in transaction (aborted)", "fastpath", "disabled"]


def catalog() -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, per-second slope) of every synthetic series."""
    out = []
    for i in range(TABLES):
        labels = {"target": f"db{i % 2}", "datname": f"cpa{i % 10}", "schemaname": "public", "relname": f"t{i}"}
        out += [(f"pg_stat_user_tables_{m}", labels, random.random() * 10) for m in TABLE_METRICS]
    for i in range(INDEXES):
        labels = {"target": f"db{i % 2}", "datname": f"cpa{i % 10}", "relname": f"t{i}", "indexrelname": f"i{i}"}
        out += [("pg_stat_user_indexes_idx_scan_total", labels, random.random()),
                ("pg_stat_user_indexes_size_bytes", labels, 0.0)]
    for i in range(STATEMENTS):
        labels = {"target": f"db{i % 2}", "datname": f"cpa{i % 10}", "queryid": str(10**12 + i)}
        out += [(f"pg_stat_statements_{m}", labels, random.random() * 100) for m in STATEMENT_METRICS]
    for d in range(DATABASES):
        for target in ("db0", "db1"):
            labels = {"target": target, "datname": f"cpa{d}"}
            out += [(f"pg_stat_database_{m}", labels, random.random() * 1000) for m in DB_METRICS]
            out += [("pg_database_age_xid", labels, 10.0), ("pg_database_size_bytes", labels, 1e4)]
            out += [("pg_stat_activity_count", {**labels, "state": s}, 0.0) for s in STATES]
            out += [("pg_stat_activity_max_tx_duration_seconds", {**labels, "state": s}, 0.0) for s in STATES]
    for target in ("db0", "db1"):
        out += [("pg_up", {"target": target, "job": "pgwatch"}, 0.0), ("pg_settings_max_connections",
                {"target": target}, 0.0), ("pg_replication_lag_seconds", {"target": target}, 0.0)]
        out += [("pgwatch_collector_success", {"target": target, "collector": f"c{i}"}, 0.0) for i in range(20)]
    return out


def main() -> None:
    random.seed(42)
    doc = yaml.safe_load(REALISTIC.read_text())
    doc["groups"] += yaml.safe_load("groups:" + EXTRA)["groups"]
    rules = parse_rules(yaml.safe_dump(doc), source="bench")
    series = catalog()
    history = History.for_rules(rules)
    engine = AlertEngine(rules, history)
    step, start = 30.0, 1_700_000_000.0
    t = start
    for i in range(140):  # 70 minutes of history
        t = start + i * step
        history.ingest(((n, lb, 1000.0 + slope * i * step) for n, lb, slope in series), t)
    times = []
    for j in range(30):
        now = t + j * 0.001  # same data, fresh evaluation each time
        began = time.perf_counter()
        engine.evaluate(now, all_groups=True)
        times.append(time.perf_counter() - began)
    per_group = {}
    for group, states in engine._groups:
        samples = []
        for j in range(10):
            began = time.perf_counter()
            for state in states:
                engine._eval_rule(state, t + 1 + j * 0.001)
            samples.append(time.perf_counter() - began)
        per_group[group.name] = statistics.median(samples) * 1000
    n_rules = sum(1 for _ in rules.rules())
    print(f"rules: {n_rules}, series generated: {len(series)}, series kept in history: {len(history)}, "
          f"samples kept: {history.samples_count()}")
    print(f"evaluation cycle: median {statistics.median(times) * 1000:.1f} ms, "
          f"min {min(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms (target <= 20 ms)")
    print("median per group: " + ", ".join(f"{g} ({len(r.rules)} rules) {per_group[g]:.1f} ms"
                                           for g, r in ((g.name, g) for g in rules.groups)))
    print(f"alerts by state: {engine.stats().alerts_by_state}")


if __name__ == "__main__":
    main()
