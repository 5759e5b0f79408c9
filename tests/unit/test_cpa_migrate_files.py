"""The CPA migration files, checked without a server: naming, markers, errata rules, package isolation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pgwatch_cpa.cpa.schema.migrate import (
    MIGRATIONS_DIR,
    MigrationError,
    load_migrations,
    split_statements,
)

CPA_DIR = Path(__file__).resolve().parents[2] / "pgwatch_cpa" / "cpa"


def test_files_are_numbered_contiguously():
    migrations = load_migrations()
    assert [int(m.version) for m in migrations] == list(range(1, len(migrations) + 1))


def test_concurrent_index_files_are_marked_and_idempotent():
    for m in load_migrations():
        has_concurrently = "CONCURRENTLY" in "\n".join(split_statements(m.text)).upper()
        assert has_concurrently == (not m.transactional), m.name
        if not m.transactional:
            for stmt in m.statements():
                assert re.search(r"IF NOT EXISTS", stmt, re.I), stmt


def test_index_predicates_follow_the_errata():
    text = "\n".join(m.text for m in load_migrations())
    for stmt in split_statements(text):
        if re.match(r"\s*CREATE\s+(UNIQUE\s+)?INDEX", stmt, re.I):
            assert "CURRENT_DATE" not in stmt.upper() and "NOW()" not in stmt.upper(), stmt
            assert "date_trunc('month', invoice_date)" not in stmt, stmt
    assert "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS idx_organizations_subdomain" in text
    assert "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS idx_users_org_email" in text


def test_splitter_respects_quotes_dollar_quotes_and_comments():
    sql = """-- a; comment
    SELECT 'a;b', "x;y" FROM t; /* c; */ DO $$ BEGIN PERFORM 1; END $$;
    SELECT $tag$ ; $tag$"""
    assert [s.splitlines()[-1].strip()[:6] for s in split_statements(sql)] == ["SELECT", "/* c; ", "SELECT"]
    assert len(split_statements(sql)) == 3


def test_bad_file_names_are_refused(tmp_path: Path):
    (tmp_path / "1_bad.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"1_bad\.sql"):
        load_migrations(tmp_path)


def test_duplicate_versions_are_refused(tmp_path: Path):
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0001_b.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="0001"):
        load_migrations(tmp_path)


def test_checksums_are_stable():
    a = load_migrations(MIGRATIONS_DIR)
    b = load_migrations(MIGRATIONS_DIR)
    assert [m.checksum for m in a] == [m.checksum for m in b]
    assert all(len(m.checksum) == 64 for m in a)


def test_cpa_package_imports_nothing_from_the_daemon():
    offenders = []
    for path in CPA_DIR.rglob("*.py"):
        for line in path.read_text().splitlines():
            match = re.match(r"\s*(?:from|import)\s+(pgwatch_cpa(?:\.\w+)*)", line)
            if match and not match[1].startswith("pgwatch_cpa.cpa"):
                offenders.append(f"{path.relative_to(CPA_DIR)}: {line.strip()}")
    assert offenders == []
