"""The PostgreSQL report's rules on synthetic statistics rows: thresholds, ids that survive a week, the SQL they
recommend, and silence on what must not be reported (primary keys, unique indexes, small tables)."""

from __future__ import annotations

from typing import Any

import pytest

from pgwatch_cpa.config import settings_from_mapping
from pgwatch_cpa.report.postgres_facts import discover
from pgwatch_cpa.report.postgres_rules import (
    GIB,
    MIB,
    Rules,
    cache_hit_finding,
    connection_finding,
    human_bytes,
    index_findings,
    indexes_to_describe,
    oldest_tables,
    ordered,
    pg_memory,
    quote_ident,
    setting_findings,
    statement_findings,
    statement_tables,
    table_findings,
    xid_findings,
)

RULES = Rules("main", slow_query_seconds=1.0, seq_scan_threshold=1000)
SETTINGS = {"autovacuum": 1.0, "autovacuum_vacuum_threshold": 50.0, "autovacuum_vacuum_scale_factor": 0.2}
_oids = iter(range(10_000, 1_000_000))


def idx(name: str, columns: tuple[str, ...] = ("a",), *, table: str = "t", table_oid: int = 1, key: int | None = None,
        **kw: Any) -> dict[str, Any]:
    """An index row as report_indexes_v13.sql returns it; a big, busy table and a never-scanned btree by default."""
    key = len(columns) if key is None else key
    row = {"index_oid": next(_oids), "table_oid": table_oid, "schema": "public", "table": table, "index": name,
           "method": "btree", "idx_scan": 0, "size_bytes": 819200.0, "table_bytes": 8e6, "table_rows": 100000.0,
           "table_writes": 50000.0, "is_unique": False, "is_primary": False, "is_exclusion": False,
           "is_valid": True, "is_replica_identity": False, "backs_constraint": False, "building": False,
           "key_columns": key, "columns": list(columns), "opclasses": " ".join(["1978"] * key),
           "collations": " ".join(["0"] * key), "options": " ".join(["0"] * key), "predicate": None,
           "definition": f"CREATE INDEX {name} ON public.{table} USING btree ({', '.join(columns[:key])})"}
    return row | kw


def tbl(name: str, **kw: Any) -> dict[str, Any]:
    row = {"table_oid": next(_oids), "schema": "public", "table": name, "seq_scan": 0, "seq_tup_read": 0,
           "idx_scan": 10, "n_live_tup": 100000, "n_dead_tup": 0, "n_mod_since_analyze": 0,
           "last_vacuum_age": 3600.0, "last_autovacuum_age": None, "last_analyze_age": 3600.0,
           "last_autoanalyze_age": None, "reltuples": 100000.0, "table_bytes": 8e6, "reloptions": None,
           "frozen_xid_age": 1000}
    return row | kw


def stmt(queryid: str, rank: int, calls: float, total_ms: float, **kw: Any) -> dict[str, Any]:
    row = {"kind": "statement", "queryid": queryid, "datname": "cpa", "rank": rank, "calls": calls,
           "total_exec_time": total_ms, "max_exec_time": total_ms / max(calls, 1) * 2, "rows": calls,
           "shared_blks_hit": 1000.0, "shared_blks_read": 0.0, "temp_blks_written": 0.0, "blk_read_time": 0.0}
    return row | kw


def kinds(findings) -> dict[str, str]:
    return {f.object: f.kind for f in findings}


# ------------------------------------------------------------------ formatting


@pytest.mark.parametrize(("name", "quoted"), [
    ("idx_x", "idx_x"), ("user", '"user"'), ("order", '"order"'), ("abort", "abort"), ("Sales", '"Sales"'),
    ('we"ird', '"we""ird"'), ("a$b", '"a$b"'), ("1st", '"1st"'), ("name", "name"),
])
def test_identifiers_are_quoted_like_quote_ident(name, quoted):
    assert quote_ident(name) == quoted


def test_units():
    assert human_bytes(81920) == "80 kB" and human_bytes(155648) == "152 kB" and human_bytes(3 * GIB) == "3 GB"
    assert pg_memory(4 * GIB) == "4GB" and pg_memory(768 * MIB) == "768MB" and pg_memory(1.5 * GIB) == "1536MB"


# ------------------------------------------------------------------ indexes


def test_unused_index_score_id_and_sql():
    row = idx("idx_orders_status", table="orders")
    [f] = index_findings(RULES, "cpa", [row], stats_reset_age=86400.0)
    assert f.id == "unused_index:main:cpa:public.idx_orders_status"
    assert f.kind == "unused_index" and f.severity == "info" and f.score == 819200.0
    assert f.evidence["idx_scan"] == 0 and f.evidence["stats_reset_age_seconds"] == 86400.0
    assert f.recommendation.splitlines()[0] == "DROP INDEX CONCURRENTLY public.idx_orders_status;"
    assert "800 kB" in f.expected_effect
    # the same statistics next week: the same id
    assert [g.id for g in index_findings(RULES, "cpa", [dict(row)])] == [f.id]


def test_large_unused_index_is_a_warning_and_names_are_quoted():
    [f] = index_findings(RULES, "cpa", [idx("user", schema="Sales", size_bytes=2.0 * GIB)])
    assert f.severity == "warning" and f.object == '"Sales"."user"'
    assert f.recommendation.startswith('DROP INDEX CONCURRENTLY "Sales"."user";')


@pytest.mark.parametrize("flags", [
    {"is_primary": True, "is_unique": True, "backs_constraint": True},
    {"is_unique": True},
    {"is_unique": True, "backs_constraint": True},
    {"backs_constraint": True},  # e.g. an exclusion constraint's or one named by pg_constraint.conindid
    {"is_exclusion": True, "backs_constraint": True},
    {"is_replica_identity": True},
])
def test_no_finding_on_indexes_that_enforce_something(flags):
    assert index_findings(RULES, "cpa", [idx("enforcing", **flags)]) == []


def test_no_usage_finding_on_small_tables():
    assert index_findings(RULES, "cpa", [idx("small_a", table_rows=999.0)]) == []
    assert index_findings(RULES, "cpa", [idx("small_b", table_rows=999.0, idx_scan=3, table_writes=1e6)]) == []


@pytest.mark.parametrize(("scans", "writes", "found"), [
    (10, 100_000, True), (49, 4_900, False), (49, 10_000, True), (50, 1e6, False), (10, 999, False),
    (200, 1e7, False),
])
def test_low_usage_threshold(scans, writes, found):
    findings = index_findings(RULES, "cpa", [idx("rare", idx_scan=scans, table_writes=writes)])
    assert [f.kind for f in findings] == (["low_usage_index"] if found else [])
    if found:
        assert findings[0].severity == "info" and findings[0].evidence["idx_scan"] == scans


def test_duplicate_keeps_the_constraint_then_the_most_scanned():
    pkey = idx("t_pkey", ("id",), is_primary=True, is_unique=True, backs_constraint=True, idx_scan=500)
    copy = idx("t_id_copy", ("id",), is_unique=True, idx_scan=900)
    a1, a2 = idx("t_a_1", idx_scan=5), idx("t_a_2", idx_scan=400)
    found = index_findings(RULES, "cpa", [pkey, copy, a1, a2])
    assert kinds(found) == {"public.t_id_copy": "duplicate_index", "public.t_a_1": "duplicate_index"}
    dup = {f.object: f for f in found}
    assert dup["public.t_id_copy"].evidence["duplicate_of"] == "public.t_pkey"
    assert dup["public.t_a_1"].evidence["duplicate_of"] == "public.t_a_2"
    assert dup["public.t_a_1"].recommendation == "DROP INDEX CONCURRENTLY public.t_a_1;"
    assert dup["public.t_a_1"].severity == "warning" and dup["public.t_a_1"].score == 819200.0


def test_not_duplicates_when_opclass_order_predicate_method_or_table_differ():
    base = idx("d_base", idx_scan=100)
    others = [idx("d_opclass", opclasses="3128", idx_scan=100), idx("d_desc", options="3", idx_scan=100),
              idx("d_partial", predicate="(a > 0)", idx_scan=100), idx("d_hash", method="hash", idx_scan=100),
              idx("d_other_table", table_oid=2, table="u", idx_scan=100),
              idx("d_collation", collations="950", idx_scan=100)]
    assert index_findings(RULES, "cpa", [base, *others]) == []


def test_two_unique_constraints_alike_are_left_alone():
    one = idx("u1", is_unique=True, backs_constraint=True, idx_scan=10)
    two = idx("u2", is_unique=True, backs_constraint=True, idx_scan=10)
    assert index_findings(RULES, "cpa", [one, two]) == []


def test_redundant_prefix():
    ab = idx("r_ab", ("a", "b"), idx_scan=300)
    a = idx("r_a", idx_scan=20, table_writes=100.0)
    [f] = index_findings(RULES, "cpa", [a, ab])
    assert f.id == "redundant_index:main:cpa:public.r_a" and f.severity == "info"
    assert f.evidence["covered_by"] == "public.r_ab" and f.recommendation == "DROP INDEX CONCURRENTLY public.r_a;"
    expr = [idx("r_lower", ("lower(email)",), idx_scan=5, table_writes=10.0),
            idx("r_lower_org", ("lower(email)", "org_id"), idx_scan=5, table_writes=10.0)]
    assert kinds(index_findings(RULES, "cpa", expr)) == {"public.r_lower": "redundant_index"}


@pytest.mark.parametrize("shorter", [
    idx("n_unique", is_unique=True, idx_scan=5),
    idx("n_partial", predicate="(b IS NULL)", idx_scan=5),
    idx("n_include", ("a", "c"), key=1, idx_scan=5),  # INCLUDE (c): may serve index-only scans
    idx("n_other_column", ("b",), idx_scan=5),
    idx("n_hash", method="hash", idx_scan=5, opclasses="1977"),
    idx("n_desc", options="3", idx_scan=5),
])
def test_not_redundant(shorter):
    longer = idx("n_ab", ("a", "b"), idx_scan=300)
    assert [f for f in index_findings(RULES, "cpa", [shorter, longer]) if f.kind == "redundant_index"] == []


def test_duplicate_not_reported_again_as_redundant_or_counted_as_the_longer_one():
    a1, a2, ab = idx("x_a1", idx_scan=9), idx("x_a2", idx_scan=1), idx("x_ab", ("a", "b"), idx_scan=50)
    found = kinds(index_findings(RULES, "cpa", [a1, a2, ab]))
    assert found == {"public.x_a2": "duplicate_index", "public.x_a1": "redundant_index"}


def test_only_the_named_indexes_are_described():
    rows = [idx("k_a1", idx_scan=9), idx("k_a2", idx_scan=1), idx("k_b", ("b",), idx_scan=500),
            idx("k_pkey", ("id",), is_primary=True, is_unique=True, backs_constraint=True)]
    assert indexes_to_describe(RULES, "cpa", rows) == {rows[0]["index_oid"], rows[1]["index_oid"]}
    [f] = index_findings(RULES, "cpa", [idx("nodef", definition=None)])  # not read: no "recreate" line
    assert f.recommendation == "DROP INDEX CONCURRENTLY public.nodef;" and f.evidence["definition"] is None


def test_invalid_index():
    plain = idx("inv_a", is_valid=False)
    unique = idx("inv_u", is_valid=False, is_unique=True, table_rows=3.0)
    leftover = idx("inv_u_ccnew", is_valid=False, is_unique=True)
    building = idx("being_built", is_valid=False, building=True)
    found = {f.object: f for f in index_findings(RULES, "cpa", [plain, unique, leftover, building])}
    assert set(found) == {"public.inv_a", "public.inv_u", "public.inv_u_ccnew"}
    assert all(f.kind == "invalid_index" and f.severity == "warning" for f in found.values())
    assert found["public.inv_a"].recommendation == "REINDEX INDEX CONCURRENTLY public.inv_a;"
    assert found["public.inv_u"].recommendation.endswith("REINDEX INDEX CONCURRENTLY public.inv_u;")
    assert "duplicate keys" in found["public.inv_u"].recommendation
    assert found["public.inv_u_ccnew"].recommendation.endswith("DROP INDEX CONCURRENTLY public.inv_u_ccnew;")


# ------------------------------------------------------------------ tables


@pytest.mark.parametrize(("row", "found"), [
    ({"seq_scan": 5, "idx_scan": None, "seq_tup_read": 100_000, "n_live_tup": 20_000}, True),  # no index at all
    ({"seq_scan": 5, "idx_scan": 4, "seq_tup_read": 100_000, "n_live_tup": 20_000}, True),
    ({"seq_scan": 5, "idx_scan": 5, "seq_tup_read": 100_000, "n_live_tup": 20_000}, False),
    ({"seq_scan": 5, "idx_scan": None, "seq_tup_read": 5_000, "n_live_tup": 1_000}, False),  # not > 1,000 rows
    ({"seq_scan": 1, "idx_scan": 0, "seq_tup_read": 0, "n_live_tup": 5_000}, False),  # an index build, empty table
])
def test_missing_index_candidate_rule(row, found):
    findings = [f for f in table_findings(RULES, "cpa", [tbl("big", **row)], SETTINGS)
                if f.kind == "missing_index_candidate"]
    assert len(findings) == int(found)
    if found:
        f = findings[0]
        assert f.id == "missing_index_candidate:main:cpa:public.big" and f.score == row["seq_tup_read"]
        assert f.evidence["seq_scan"] == row["seq_scan"] and f.evidence["idx_scan"] == row["idx_scan"]
        assert f.severity == "info" and "public.big" in f.recommendation


def test_missing_index_ranked_by_rows_read_and_warning_above_seq_scan_threshold():
    tables = [tbl("small_reads", seq_scan=2000, idx_scan=0, seq_tup_read=50_000),
              tbl("big_reads", seq_scan=20, idx_scan=1, seq_tup_read=9_000_000)]
    found = [f for f in table_findings(RULES, "cpa", tables, SETTINGS)]
    assert [f.object for f in ordered(found)] == ["public.small_reads", "public.big_reads"]  # warning first
    assert [f.severity for f in ordered(found)] == ["warning", "info"]
    assert [f.object for f in sorted(found, key=lambda f: -f.score)] == ["public.big_reads", "public.small_reads"]


def test_statement_text_of_a_candidate_only_with_query_text():
    tables = [tbl("t_1", seq_scan=10, idx_scan=0, seq_tup_read=1e6), tbl("t_10", seq_scan=10, idx_scan=0,
                                                                          seq_tup_read=2e6)]
    texts = [{"queryid": "11", "total_exec_time": 9000.0, "text": "SELECT * FROM app.t_10 WHERE a = $1"},
             {"queryid": "12", "total_exec_time": 5000.0, "text": "select count(*) from T_1 where b = $1"},
             {"queryid": "13", "total_exec_time": 4000.0, "text": "INSERT INTO t_1 VALUES ($1)"},
             {"queryid": "14", "total_exec_time": 3000.0, "text": "SELECT 1 FROM t_100"}]
    mapping = statement_tables(tables, texts)
    assert [t["queryid"] for t in mapping["public.t_1"]] == ["12"]
    assert [t["queryid"] for t in mapping["public.t_10"]] == ["11"]
    with_text = {f.object: f for f in table_findings(Rules("main", query_text=True), "cpa", tables, SETTINGS, texts)}
    assert "count(*) from T_1" in with_text["public.t_1"].recommendation
    assert "queryid 12" in with_text["public.t_1"].recommendation
    without = table_findings(RULES, "cpa", tables, SETTINGS, texts)  # query_text off: never any statement text
    assert all("queryid" not in f.recommendation and "SELECT" not in f.recommendation.upper().replace(
        "CREATE INDEX", "") for f in without)


@pytest.mark.parametrize(("dead", "live", "options", "found"), [
    (10_001, 40_000, None, True),  # 25% of live
    (9_999, 10_000, None, False),  # under the 10,000 floor
    (15_000, 100_000, None, False),  # 15%, under autovacuum's 50 + 0.2 x 100,000
    (15_000, 100_000, ["autovacuum_vacuum_scale_factor=0.05"], True),  # over the table's own threshold
])
def test_dead_tuples_thresholds(dead, live, options, found):
    row = tbl("bloated", n_dead_tup=dead, n_live_tup=live, reltuples=float(live), reloptions=options)
    findings = [f for f in table_findings(RULES, "cpa", [row], SETTINGS) if f.kind == "dead_tuples"]
    assert len(findings) == int(found)
    if found:
        f = findings[0]
        assert f.score == dead and f.evidence["n_dead_tup"] == dead and f.evidence["n_live_tup"] == live
        assert f.recommendation == "VACUUM (ANALYZE) public.bloated;" and f.evidence["autovacuum_enabled"] is True
        assert f.evidence["last_vacuum_age_seconds"] == 3600.0 and f.evidence["last_autovacuum_age_seconds"] is None


def test_dead_tuples_with_autovacuum_off_server_wide():
    row = tbl("t", n_dead_tup=30_000, n_live_tup=20_000)
    [f] = table_findings(RULES, "cpa", [row], {**SETTINGS, "autovacuum": 0.0})
    assert f.evidence["autovacuum_enabled"] is False
    assert f.recommendation.splitlines()[-2:] == ["ALTER SYSTEM SET autovacuum = on;", "SELECT pg_reload_conf();"]


def test_dead_tuples_with_autovacuum_disabled_gives_it_back():
    row = tbl("off", n_dead_tup=30_000, n_live_tup=20_000, reloptions=["autovacuum_enabled=false"],
              n_mod_since_analyze=50_000)
    found = table_findings(RULES, "cpa", [row], SETTINGS)
    assert [f.kind for f in found] == ["dead_tuples"]  # VACUUM (ANALYZE) covers the stale statistics too
    assert found[0].evidence["autovacuum_enabled"] is False
    assert found[0].recommendation.splitlines() == [
        "VACUUM (ANALYZE) public.off;", "-- autovacuum is disabled on this table; give it back:",
        "ALTER TABLE public.off RESET (autovacuum_enabled);"]


@pytest.mark.parametrize(("row", "found"), [
    ({"n_live_tup": 5000, "last_analyze_age": None, "last_autoanalyze_age": None}, True),  # never analyzed
    ({"n_live_tup": 500, "last_analyze_age": None, "last_autoanalyze_age": None}, False),  # small
    ({"n_live_tup": 10_000, "n_mod_since_analyze": 2_001}, True),
    ({"n_live_tup": 10_000, "n_mod_since_analyze": 2_000}, False),
    ({"n_live_tup": 2_000, "n_mod_since_analyze": 900}, False),  # under the 1,000 floor
])
def test_stale_statistics(row, found):
    findings = [f for f in table_findings(RULES, "cpa", [tbl("s", **row)], SETTINGS) if f.kind == "stale_statistics"]
    assert len(findings) == int(found)
    if found:
        assert findings[0].recommendation == "ANALYZE public.s;" and findings[0].severity == "info"


def test_clean_small_tables_get_nothing():
    tables = [tbl("lookup", seq_scan=5000, idx_scan=0, seq_tup_read=500_000, n_live_tup=100, reltuples=100.0)]
    indexes = [idx("lookup_pkey", ("id",), is_primary=True, is_unique=True, backs_constraint=True, table_rows=100.0),
               idx("lookup_code_key", ("code",), is_unique=True, backs_constraint=True, table_rows=100.0)]
    assert table_findings(RULES, "cpa", tables, SETTINGS) == []
    assert index_findings(RULES, "cpa", indexes) == []


# ------------------------------------------------------------------ statements


def test_slow_and_top_statements():
    rows = [stmt("101", 1, calls=10, total_ms=25_000, temp_blks_written=2560.0, shared_blks_read=9000.0),
            stmt("102", 2, calls=100_000, total_ms=20_000),  # fast, but #2 by total time
            stmt("103", 6, calls=10_000, total_ms=1_500),  # fast and not in the top 5
            stmt("104", 3, calls=100, total_ms=500)]  # top 5, but half a second in all: not worth a line
    found = {f.object: f for f in statement_findings(RULES, rows, {"101": "SELECT secret"}, 50_000.0)}
    assert set(found) == {"101", "102"}
    slow = found["101"]
    assert slow.id == "slow_statement:main:cpa:101" and slow.severity == "warning" and slow.score == 25.0
    assert slow.evidence["mean_seconds"] == 2.5 and slow.evidence["calls"] == 10
    assert slow.evidence["temp_blks_written"] == 2560 and slow.evidence["share_of_total_time"] == 0.5
    assert "20 MB to temporary files" in slow.recommendation and "missed the buffer cache" in slow.recommendation
    assert "SELECT query FROM pg_stat_statements WHERE queryid = 101;" in slow.recommendation
    assert "secret" not in str(slow) and "query" not in slow.evidence  # query_text is off
    assert found["102"].severity == "info"


def test_statement_text_only_with_query_text():
    rules = Rules("main", slow_query_seconds=0.2, query_text=True)
    [f] = statement_findings(rules, [stmt("7", 1, calls=2, total_ms=600)], {"7": "SELECT pg_sleep($1)"}, 600.0)
    assert f.evidence["query"] == "SELECT pg_sleep($1)"
    assert "EXPLAIN (ANALYZE, BUFFERS) SELECT pg_sleep($1)" in f.recommendation


# ------------------------------------------------------------------ instance


def test_xid_age_thresholds_and_the_oldest_tables():
    dbs = [{"datname": "young", "frozen_xid_age": 150_000_000}, {"datname": "old", "frozen_xid_age": 250_000_000},
           {"datname": "ancient", "frozen_xid_age": 1_200_000_000}]
    tables = [tbl("t1", frozen_xid_age=240_000_000), tbl("t2", frozen_xid_age=10), tbl("t3", frozen_xid_age=2e8)]
    found = {f.database: f for f in xid_findings(RULES, dbs, {"old": oldest_tables(tables)})}
    assert {d: f.severity for d, f in found.items()} == {"old": "warning", "ancient": "critical"}
    assert found["old"].id == "xid_age:main:old:-" and found["old"].score == 250_000_000
    lines = found["old"].recommendation.splitlines()
    assert lines[1].startswith("VACUUM (FREEZE, VERBOSE) public.t1;") and lines[2].startswith(
        "VACUUM (FREEZE, VERBOSE) public.t3;")
    assert "VACUUM (FREEZE, VERBOSE);" in found["ancient"].recommendation  # not polled: the whole database


@pytest.mark.parametrize(("hit", "read", "severity"), [
    (90_000, 10_000, "warning"), (7_000, 3_000, "critical"), (9_000, 500, None), (97_000, 3_000, None),
])
def test_cache_hit_ratio(hit, read, severity):
    f = cache_hit_finding(RULES, hit, read, {"shared_buffers": 128 * MIB}, None)
    assert (f.severity if f else None) == severity
    if f:
        assert f.id == "cache_hit_ratio:main:-:-" and f.score == read
        assert f.evidence["cache_hit_ratio"] == round(hit / (hit + read), 4)
    sized = cache_hit_finding(RULES, 90_000, 10_000, {}, 64 * GIB)
    assert "ALTER SYSTEM SET shared_buffers = '16GB';" in sized.recommendation


@pytest.mark.parametrize(("connections", "severity"), [(77, None), (78, "warning"), (92, "warning"),
                                                       (93, "critical")])
def test_connection_utilisation(connections, severity):
    f = connection_finding(RULES, connections, 97, 100)  # 100 - 3 superuser-reserved
    assert (f.severity if f else None) == severity
    if f:
        assert f.evidence["connection_utilisation"] == round(connections / 97, 4)
        assert "pool" in f.recommendation.lower()


def test_settings_without_host_memory_leave_sizes_out():
    current = {"shared_buffers": 128 * MIB, "effective_cache_size": 4 * GIB, "work_mem": 4 * MIB,
               "maintenance_work_mem": 64 * MIB, "wal_buffers": 4 * MIB, "checkpoint_completion_target": 0.5,
               "random_page_cost": 4.0, "max_connections": 100.0}
    unsized = {f.object: f for f in setting_findings(RULES, current, None)}
    assert set(unsized) == {"checkpoint_completion_target", "random_page_cost"}
    assert unsized["random_page_cost"].recommendation == "ALTER SYSTEM SET random_page_cost = 1.1;\n" \
                                                         "SELECT pg_reload_conf();"
    sized = {f.object: f for f in setting_findings(RULES, current, 16 * GIB)}
    assert sized["shared_buffers"].recommendation == "ALTER SYSTEM SET shared_buffers = '4GB';\n-- needs a restart"
    assert sized["shared_buffers"].evidence["recommended"] == 4 * GIB and sized["shared_buffers"].score == \
        4 * GIB - 128 * MIB
    assert sized["effective_cache_size"].evidence["recommended"] == 12 * GIB
    assert sized["maintenance_work_mem"].evidence["recommended"] == GIB
    assert sized["wal_buffers"].evidence["needs_restart"] is True
    assert sized["work_mem"].evidence["recommended"] == 40 * MIB  # 16 GB / 4 / 100 connections, whole MB
    # the guide's own host (1 GB): its numbers, so its defaults pass
    guide = {"shared_buffers": 256 * MIB, "effective_cache_size": 768 * MIB, "work_mem": 4 * MIB,
             "maintenance_work_mem": 64 * MIB, "wal_buffers": 8 * MIB, "checkpoint_completion_target": 0.9,
             "random_page_cost": 1.1, "max_connections": 100.0}
    assert setting_findings(RULES, guide, GIB) == []


def test_ids_unique_and_stable_and_order_worst_first():
    indexes = [idx("a1"), idx("a2"), idx("ab", ("a", "b")), idx("bad", is_valid=False)]
    tables = [tbl("x", n_dead_tup=50_000, n_live_tup=10_000), tbl("y", seq_scan=9, idx_scan=0, seq_tup_read=9e5)]
    run = lambda: ordered(index_findings(RULES, "cpa", indexes) + table_findings(RULES, "cpa", tables, SETTINGS))  # noqa: E731
    first, second = run(), run()
    assert [f.id for f in first] == [f.id for f in second]
    assert len({f.id for f in first}) == len(first)
    severities = [f.severity for f in first]
    assert severities == sorted(severities, key=["critical", "warning", "info"].index)


# ------------------------------------------------------------------ which databases


def _target(**extra: Any):
    raw = {"name": "main", "dsn": "postgresql://monitor@db.example/cpa", **extra}
    return settings_from_mapping({"postgres": [raw]}, {}).postgres[0]


DATABASES = [{"datname": n, "discoverable": n not in {"template1", "locked"}}
             for n in ("cpa", "cpa_a", "cpa_b", "cpa_test", "locked", "postgres", "template1")]


@pytest.mark.parametrize(("extra", "polled", "missing"), [
    ({}, ["cpa"], []),
    ({"databases": ["cpa_b", "gone", "locked"]}, ["cpa_b"], ["gone", "locked"]),
    ({"discover": {"include": "cpa_.*", "exclude": "cpa_test"}}, ["cpa_a", "cpa_b"], []),
    ({"discover": {}}, ["cpa", "cpa_a", "cpa_b", "cpa_test", "postgres"], []),
])
def test_databases_chosen_like_the_poller(extra, polled, missing):
    assert discover(_target(**extra), DATABASES, "cpa") == (polled, missing)


# ------------------------------------------------------------------ the report's SQL files


def test_report_sql_covers_13_to_18_and_stays_apart_from_the_collectors():
    import re

    from pgwatch_cpa.collectors.postgres.sql import choose, packaged_files

    report_files = packaged_files("pgwatch_cpa.report")
    families = {f.name for f in report_files}
    assert families == {"report_server", "report_settings", "report_connections", "report_databases",
                        "report_database_stats", "report_statements", "report_statements_info",
                        "report_statement_texts", "report_indexes", "report_index_definitions", "report_tables"}
    assert not families & {f.name for f in packaged_files()}  # the collectors' default is unchanged
    for server, pgss in ((130000, "1.8"), (140000, "1.9"), (150000, "1.10"), (160000, "1.10"), (170000, "1.11"),
                         (180000, "1.12")):
        for family in families - {"report_statements_info"}:
            choose(report_files, family, server, {"pg_stat_statements": pgss})
    assert choose(report_files, "report_statements", 180000, {"pg_stat_statements": "1.10"}).filename == \
        "report_statements_v13.sql"  # upgraded server, extension not updated: the old columns
    assert choose(report_files, "report_statements", 170000, {"pg_stat_statements": "1.11"}).filename == \
        "report_statements_v17.sql"
    assert choose(report_files, "report_connections", 160000).filename == "report_connections_v16.sql"
    for f in report_files:  # catalog objects schema-qualified; values are parameters, never formatted in
        code = re.sub(r"'[^']*'", "''", "\n".join(line.split("--")[0] for line in f.text.splitlines()))
        assert not [w for w in re.findall(r"(?<![\w.])pg_[a-z_]+", code) if w != "pg_catalog"], f.filename
        assert "pg_stat_activity.query" not in code and "a.query" not in code
