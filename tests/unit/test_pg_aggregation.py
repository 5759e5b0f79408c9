"""Top-N + 'other' aggregation, settings unit conversion, statement text scrubbing (no server needed)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.core import Metric

from pgwatch_cpa.collectors.metric_set import merge_families
from pgwatch_cpa.collectors.postgres.common import setting_metric, top_n_with_other
from pgwatch_cpa.collectors.postgres.pg_stat_statements import normalise_text, other_row


def test_top_n_keeps_largest_and_sums_rest():
    counts = {"web": 50.0, "worker": 20.0, "cron": 5.0, "psql": 1.0, "": 3.0}
    assert top_n_with_other(counts, 2) == {"web": 50.0, "worker": 20.0, "other": 9.0}


def test_top_n_always_has_other_and_folds_a_literal_other():
    assert top_n_with_other({"a": 1.0}, 5) == {"a": 1.0, "other": 0.0}
    assert top_n_with_other({"a": 3.0, "other": 2.0, "b": 1.0}, 1) == {"a": 3.0, "other": 3.0}


def test_top_n_ties_are_stable():
    counts = {"b": 1.0, "a": 1.0, "c": 1.0}
    assert list(top_n_with_other(counts, 2)) == ["a", "b", "other"]


@given(st.dictionaries(st.text(max_size=5), st.integers(0, 1000).map(float), max_size=30), st.integers(1, 10))
def test_top_n_total_is_exact_and_bounded(counts, n):
    out = top_n_with_other(counts, n)
    assert sum(out.values()) == sum(counts.values())
    assert len(out) <= n + 1


def test_settings_in_base_units():
    assert setting_metric("shared_buffers", "16384", "8kB", "integer") == ("pg_settings_shared_buffers_bytes",
                                                                            16384 * 8192)
    assert setting_metric("work_mem", "4096", "kB", "integer") == ("pg_settings_work_mem_bytes", 4096 * 1024)
    assert setting_metric("max_wal_size", "1024", "MB", "integer") == ("pg_settings_max_wal_size_bytes", 1024**3)
    assert setting_metric("checkpoint_timeout", "300", "s", "integer") == ("pg_settings_checkpoint_timeout_seconds",
                                                                           300.0)
    assert setting_metric("autovacuum_naptime", "1", "min", "integer")[1] == 60.0
    assert setting_metric("log_min_duration_statement", "-1", "ms", "integer") == (
        "pg_settings_log_min_duration_statement_seconds", -1.0)  # "disabled" stays -1
    assert setting_metric("random_page_cost", "1.1", None, "real") == ("pg_settings_random_page_cost", 1.1)
    assert setting_metric("track_io_timing", "on", None, "bool") == ("pg_settings_track_io_timing", 1.0)
    assert setting_metric("pg_stat_statements.max", "5000", None, "integer")[0] == "pg_settings_pg_stat_statements_max"
    assert setting_metric("huge_pages", "try", None, "enum") is None


def test_statement_text_is_scrubbed_and_truncated():
    text = "SELECT *\n  FROM clients WHERE id = $1 AND ssn = '123-45-6789' AND amount > 1200.50 LIMIT 10"
    out = normalise_text(text, 200)
    assert "123-45-6789" not in out and "1200" not in out
    assert out == "SELECT * FROM clients WHERE id = $1 AND ssn = '?' AND amount > ? LIMIT ?"
    assert normalise_text("ALTER ROLE x PASSWORD 'it''s secret'", 200) == "ALTER ROLE x PASSWORD '?'"
    assert normalise_text("DO $body$ BEGIN PERFORM 42; END $body$", 200) == "DO '?'"
    assert normalise_text("SELECT col1 FROM t2 WHERE a = $12", 200) == "SELECT col1 FROM t2 WHERE a = $12"
    long = normalise_text("SELECT " + "a, " * 100 + "b", 40)
    assert len(long) == 40 and long.endswith("...")


def test_merge_families_across_databases():
    a, b = Metric("pg_tables", "doc", "gauge"), Metric("pg_tables", "doc", "gauge")
    a.add_sample("pg_tables", {"datname": "a"}, 1.0)
    b.add_sample("pg_tables", {"datname": "b"}, 2.0)
    merged = merge_families([(a,), (b,)])
    assert len(merged) == 1 and [s.labels["datname"] for s in merged[0].samples] == ["a", "b"]
    assert len(a.samples) == 1  # inputs untouched


def _row(queryid: str, calls: float, total: float) -> dict:
    return {"kind": "top", "queryid": queryid, "datname": "cpa", "user": "app", "statements": 1, "calls": calls,
            "total_exec_time": total, "max_exec_time": total, "rows": calls, "shared_blks_hit": 10.0,
            "shared_blks_read": 1.0, "temp_blks_written": 0.0, "blk_read_time": 0.5, "blk_write_time": None,
            "wal_bytes": 0.0}


def test_statements_other_row_is_totals_minus_top():
    top = [_row("1", 10, 500.0), _row("2", 3, 120.5)]
    totals = {**_row("all", 20, 700.25), "kind": "all", "statements": 7, "shared_blks_hit": 100.0,
              "blk_read_time": 2.0}
    other = other_row(totals, top)
    assert other["queryid"] == "other" and other["statements"] == 5
    assert other["calls"] == 7 and other["total_exec_time"] == pytest.approx(79.75)
    assert other["shared_blks_hit"] == 80 and other["blk_read_time"] == pytest.approx(1.0)
    assert other["blk_write_time"] is None and other["max_exec_time"] is None
    for column in ("calls", "total_exec_time", "rows", "shared_blks_hit"):
        assert sum(r[column] for r in top) + other[column] == pytest.approx(totals[column])


def test_statements_other_row_never_negative():
    top = [_row("1", 1, 0.1 + 0.2)]
    totals = {**_row("all", 1, 0.3), "kind": "all", "statements": 1}
    other = other_row(totals, top)
    assert other["total_exec_time"] == 0.0 and other["calls"] == 0 and other["statements"] == 0


def test_statement_text_loses_its_comments_and_every_literal():
    sql = ("SELECT a -- client 4711 Smith\n FROM t /* acct 12345 /* nested */ still hidden */ "
           "WHERE e = E'it\\'s' AND u = U&'d\\0061t' AND d = $q$ 123-45-6789 $q$ AND x = .5e3")
    assert normalise_text(sql, 500) == "SELECT a FROM t WHERE e = '?' AND u = '?' AND d = '?' AND x = ?"
    assert normalise_text("SELECT 'unterminated 123", 200) == "SELECT '?'"
    assert normalise_text("SELECT $x$ unterminated 123", 200) == "SELECT '?'"
    assert normalise_text("SELECT 1 /* unterminated 4711", 200) == "SELECT ?"
    assert normalise_text('SELECT "Weird ""Name"" 1" FROM t', 200) == 'SELECT "Weird ""Name"" 1" FROM t'


def test_statement_text_normalisation_handles_hostile_statements():
    """Inputs that made the old regex pass backtrack (8,000 dollar-quote tags took 2.6 s) or recurse."""
    tags = "SELECT " + " ".join(f"$t{i}$ x $t{i}$" for i in range(8000))
    assert normalise_text(tags, 200).startswith("SELECT '?' '?' '?'")
    assert normalise_text("SELECT 1 " + "/*" * 10000 + "x" + "*/" * 10000 + " FROM t", 200) == "SELECT ? FROM t"
    huge = normalise_text("SELECT " + "a, " * 500_000 + "b", 50)
    assert len(huge) == 50 and huge.endswith("...")
