"""custom_queries: postgres_exporter's queries.yaml format, read strictly (no server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgwatch_cpa.config import settings_from_mapping
from pgwatch_cpa.errors import ConfigError

GOOD = """\
pg_database:
  query: "SELECT pg_database.datname, pg_database_size(pg_database.datname) as size FROM pg_database;"
  master: true
  cache_seconds: 30
  timeout: 2s
  max_rows: 50
  metrics:
    - datname:
        usage: "LABEL"
        description: "Name of the database"
    - size:
        usage: "GAUGE"
        description: "Disk space used by the database"
app_events:
  query: SELECT kind, n, n AS n_total, 'x' AS junk FROM events
  interval: 1m
  metrics:
    - kind: {usage: LABEL}
    - n: {usage: COUNTER}
      n_total: {usage: COUNTER}
    - junk: {usage: DISCARD}
"""
# The shape of the archiving helper's shipped cpa_archive.yaml.
ARCHIVE_SHAPE = """\
cpa_archive_backlog:
  query: SELECT 'audit_logs' AS policy, 12.5 AS oldest_due_age_seconds, 3 AS rows_due
  master: true
  metrics:
    - policy: {usage: LABEL, description: Retention policy}
    - oldest_due_age_seconds: {usage: GAUGE, description: Age of the oldest row due}
    - rows_due: {usage: GAUGE, description: Rows due}
"""


def load(tmp_path: Path, files: dict[str, str], top: list[str] | None = None, **target: object):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    raw: dict = {"custom_queries": top if top is not None else list(files)}
    raw["postgres"] = [{"name": "db", "dsn": "dbname=x", **target}]
    return settings_from_mapping(raw, {}, base_dir=tmp_path)


def problems(tmp_path: Path, files: dict[str, str], **kwargs: object) -> str:
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, files, **kwargs)
    return "\n".join(exc.value.problems)


def test_a_postgres_exporter_file_and_our_own_fields(tmp_path):
    settings = load(tmp_path, {"q.yaml": GOOD})
    db, events = settings.queries_for(settings.postgres[0])
    assert (db.key, db.master, db.interval, db.timeout, db.max_rows) == ("pg_database", True, 30.0, 2.0, 50)
    assert db.sql.endswith("FROM pg_database")  # the terminator is dropped (DECLARE takes one statement)
    assert db.labels == ("datname",) and [db.metric_name(c) for c in db.values] == ["pg_database_size"]
    assert (events.master, events.interval, events.timeout, events.max_rows) == (False, 60.0, None, 1000)
    assert [(c.name, c.usage) for c in events.columns] == [("kind", "LABEL"), ("n", "COUNTER"),
                                                           ("n_total", "COUNTER"), ("junk", "DISCARD")]


def test_the_archive_helpers_file_shape_loads(tmp_path):
    settings = load(tmp_path, {"cpa_archive.yaml": ARCHIVE_SHAPE})
    (query,) = settings.queries_for(settings.postgres[0])
    assert [query.metric_name(c) for c in query.values] == ["cpa_archive_backlog_oldest_due_age_seconds",
                                                            "cpa_archive_backlog_rows_due"]


def test_files_of_the_target_add_to_the_top_level_ones(tmp_path):
    (tmp_path / "own.yaml").write_text(ARCHIVE_SHAPE)
    settings = load(tmp_path, {"q.yaml": GOOD}, custom_queries=["own.yaml"])
    assert [q.key for q in settings.queries_for(settings.postgres[0])] == ["pg_database", "app_events",
                                                                           "cpa_archive_backlog"]


def test_the_shipped_business_file_loads_by_its_builtin_name(tmp_path):
    settings = load(tmp_path, {}, top=["builtin:cpa_business.yaml"])
    assert all(q.key.startswith("cpa_business_") for q in settings.queries_for(settings.postgres[0]))
    message = problems(tmp_path, {}, top=["builtin:nope.yaml"])
    assert "custom_queries[0]: unknown shipped query file 'builtin:nope.yaml'" in message
    assert "builtin:cpa_business.yaml" in message


@pytest.mark.parametrize(("text", "expected"), [
    ("a:\n  query: SELECT 1 AS n\n  metrics: [{n: {usage: GAUGE}}]\n  cache: 5\n", "q.yaml: a.cache: unknown key"),
    ("a:\n  query: SELECT 1 AS n\n  metrics: [{n: {usage: GAUGE, help: x}}]\n",
     "q.yaml: a.metrics[0].n.help: unknown key"),
    ("a:\n  query: SELECT 1 AS n\n  metrics: [{n: {usage: MAPPEDMETRIC}}]\n",
     "a.metrics[0].n.usage: MAPPEDMETRIC is not supported"),
    ("a:\n  query: SELECT 1 AS n\n  metrics: [{n: {usage: DURATION}}]\n", "a.metrics[0].n.usage: DURATION is not"),
    ("a:\n  query: SELECT 1 AS n\n  metrics: [{n: {usage: gauge}}]\n", "unknown usage 'gauge'"),
    ("a:\n  query: SELECT 1 AS n\n  runonserver: '>=10.0.0'\n  metrics: [{n: {usage: GAUGE}}]\n",
     "a.runonserver: runonserver is not supported"),
    ("a:\n  metrics: [{n: {usage: GAUGE}}]\n", "q.yaml: a.query: Field required"),
    ("a:\n  query: SELECT 1 AS n\n  timeout: 5m\n  metrics: [{n: {usage: GAUGE}}]\n", "a.timeout: must be between"),
    ("a:\n  query: SELECT 1 AS n\n  metrics: [{n: {usage: LABEL}}]\n", "a.metrics: no GAUGE or COUNTER column"),
    ("a:\n  query: SELECT 1 AS n\n  metrics: [{n: {usage: GAUGE}}, {n: {usage: GAUGE}}]\n",
     "a.metrics[1].n: column described twice"),
    ("a-b:\n  query: SELECT 1 AS n\n  metrics: [{n: {usage: GAUGE}}]\n", "'a-b': not a valid metric namespace"),
    ("[1, 2]\n", "q.yaml: must map metric namespaces to queries"),
    ("a:\n  query: x\n  query: y\n", "q.yaml: line 3, column 3: invalid YAML: duplicate key 'query'"),
])
def test_a_bad_file_is_refused_naming_file_key_and_problem(tmp_path, text, expected):
    assert expected in problems(tmp_path, {"q.yaml": text})


@pytest.mark.parametrize(("column", "usage", "expected"), [
    ("responseTime", "GAUGE", "a_responseTime is camelCase"),
    ("time_milliseconds", "GAUGE", "base unit seconds, not milliseconds"),
    ("size_kb", "GAUGE", "abbreviated unit 'kb'"),
    ("rows_count", "GAUGE", "a_rows_count ends in a suffix promtool reserves"),
    ("queue_gauge", "GAUGE", "contains its type 'gauge'"),
    ("target", "LABEL", "label name 'target' is reserved"),
    ("__name", "LABEL", "label name '__name' is reserved"),
    ("9lives", "GAUGE", "not a valid column name"),
])
def test_names_promtool_would_refuse_are_load_errors(tmp_path, column, usage, expected):
    text = f"a:\n  query: SELECT 1\n  metrics: [{{{column}: {{usage: {usage}}}}}, {{v: {{usage: GAUGE}}}}]\n"
    assert expected in problems(tmp_path, {"q.yaml": text})


def test_a_counter_column_ending_in_count_is_allowed(tmp_path):
    # exported untyped (promtool lints _count only on gauges and counters)
    load(tmp_path, {"q.yaml": "a:\n  query: SELECT 1 AS vacuum_count\n  metrics: [{vacuum_count: {usage: COUNTER}}]\n"})


def test_a_metric_name_exported_twice_is_a_load_error(tmp_path):
    other = "pg_database:\n  query: SELECT 1 AS size\n  metrics: [{size: {usage: GAUGE}}]\n"
    message = problems(tmp_path, {"q.yaml": GOOD, "r.yaml": other})
    assert "custom_queries: r.yaml: key pg_database is also defined in q.yaml" in message
    renamed = "pg:\n  query: SELECT 1 AS database_size\n  metrics: [{database_size: {usage: GAUGE}}]\n"
    message = problems(tmp_path, {"q.yaml": GOOD, "r.yaml": renamed})
    assert "r.yaml: metric pg_database_size (key pg) is also exported by key pg_database of q.yaml" in message


def test_a_name_of_a_built_in_collector_is_refused_unless_that_collector_is_disabled(tmp_path):
    text = "pg_stat_user_tables:\n  query: SELECT 1 AS n_live_tup\n  metrics: [{n_live_tup: {usage: GAUGE}}]\n"
    message = problems(tmp_path, {"q.yaml": text})
    assert ("postgres[0].custom_queries: q.yaml: metric pg_stat_user_tables_n_live_tup (key pg_stat_user_tables) "
            "is already exported by collector tables; rename the key, or disable the collector") in message
    load(tmp_path, {"q.yaml": text}, collectors={"tables": {"enabled": False}})
    daemon = "pgwatch:\n  query: SELECT 1 AS up\n  metrics: [{up: {usage: GAUGE}}]\n"
    assert "metric pgwatch_up (key pgwatch) is already exported by the daemon" in problems(tmp_path,
                                                                                          {"q.yaml": daemon})


def test_a_missing_or_oversized_file_is_reported(tmp_path):
    assert "custom_queries[0]: nope.yaml: cannot read" in problems(tmp_path, {}, top=["nope.yaml"])
    big = "# " + "x" * (1024 * 1024) + "\n"
    assert "q.yaml: query file is larger than 1 MiB" in problems(tmp_path, {"q.yaml": big})
