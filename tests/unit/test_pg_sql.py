"""The versioned SQL chooser: newest file the server and the installed extension support (no server needed)."""

from __future__ import annotations

import pytest

from pgwatch_cpa.collectors.postgres.sql import NoSqlForVersion, choose, packaged_files, parse_file, parse_version


def files(*specs: tuple[str, str]):
    return [parse_file(name, text) for name, text in specs]


PGSS = files(
    ("pg_stat_statements_v13.sql", "-- requires: pg_stat_statements >= 1.8\nSELECT blk_read_time"),
    ("pg_stat_statements_v17.sql", "-- requires: pg_stat_statements >= 1.11\nSELECT shared_blk_read_time"),
    ("pg_stat_wal_v14.sql", "SELECT wal_write FROM pg_stat_wal"),
    ("pg_stat_wal_v18.sql", "SELECT writes FROM pg_stat_io"),
)


def test_parse_version_is_numeric():
    assert parse_version("1.10") > parse_version("1.9")
    assert parse_version("1.11") == (1, 11)
    assert parse_version("17beta1") == (17,)
    assert parse_version("") == ()


def test_parse_file_reads_band_and_requirements():
    f = parse_file("pg_stat_statements_v17.sql", "-- requires: pg_stat_statements >= 1.11\nSELECT 1")
    assert f.name == "pg_stat_statements" and f.min_server == 170000
    assert f.requires == (("pg_stat_statements", (1, 11)),)
    assert parse_file("README.md", "") is None
    assert parse_file("pg_stat_wal.sql", "") is None  # no version band


@pytest.mark.parametrize(("server", "ext", "expected"), [
    (180006, "1.12", "pg_stat_statements_v17.sql"),
    (170002, "1.11", "pg_stat_statements_v17.sql"),
    (160004, "1.10", "pg_stat_statements_v13.sql"),
    (150018, "1.10", "pg_stat_statements_v13.sql"),
    # pg_upgrade to 18 without ALTER EXTENSION ... UPDATE: the old columns are still the ones that exist.
    (180006, "1.10", "pg_stat_statements_v13.sql"),
    (130000, "1.8", "pg_stat_statements_v13.sql"),
])
def test_statements_chosen_by_server_and_extension_version(server, ext, expected):
    assert choose(PGSS, "pg_stat_statements", server, {"pg_stat_statements": ext}).filename == expected


def test_extension_too_old_or_missing_has_no_file():
    with pytest.raises(NoSqlForVersion, match=r"pg_stat_statements 1\.7"):
        choose(PGSS, "pg_stat_statements", 130000, {"pg_stat_statements": "1.7"})
    with pytest.raises(NoSqlForVersion):
        choose(PGSS, "pg_stat_statements", 150000, {})


@pytest.mark.parametrize(("server", "expected"), [
    (180000, "pg_stat_wal_v18.sql"), (170005, "pg_stat_wal_v14.sql"), (140000, "pg_stat_wal_v14.sql")])
def test_server_band_newest_first(server, expected):
    assert choose(PGSS, "pg_stat_wal", server).filename == expected


def test_server_older_than_every_band():
    with pytest.raises(NoSqlForVersion, match="server 130012"):
        choose(PGSS, "pg_stat_wal", 130012)


def test_unknown_family():
    with pytest.raises(NoSqlForVersion, match="no SQL files"):
        choose(PGSS, "pg_nothing", 180000)


def test_packaged_files_cover_supported_versions():
    shipped = packaged_files()
    names = {f.name for f in shipped}
    for family in ("pg_stat_activity", "pg_stat_statements", "pg_stat_database", "pg_stat_user_tables",
                   "pg_stat_user_indexes", "pg_locks", "pg_stat_bgwriter", "pg_settings", "pg_table_size"):
        assert family in names
        for server in (130000, 150000, 170000, 180000):
            choose(shipped, family, server, {"pg_stat_statements": "1.8" if server < 170000 else "1.11"})
    assert choose(shipped, "pg_stat_bgwriter", 170000).filename == "pg_stat_bgwriter_v17.sql"
    assert choose(shipped, "pg_stat_wal", 180000).filename == "pg_stat_wal_v18.sql"
    assert choose(shipped, "pg_connection_limits", 160000).filename == "pg_connection_limits_v16.sql"


def test_packaged_sql_never_reads_activity_query_column():
    for f in packaged_files():
        if "pg_stat_activity" in f.text:
            assert ".query" not in f.text.replace("query_start", "")
