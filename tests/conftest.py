"""Shared fixtures: throwaway servers from the sandbox, one per available build.

With PGWATCH_REQUIRE_ALL=1 (CI) a missing server build is a failure, never a skip.
"""

from __future__ import annotations

import os

import pytest

from pgwatch_cpa.sandbox import PostgresSandbox, RedisSandbox, find_pg_builds, find_redis_servers

REQUIRE_ALL = os.environ.get("PGWATCH_REQUIRE_ALL") == "1"
PG_BUILDS = find_pg_builds()
REDIS_SERVERS = find_redis_servers()


def require(what: str) -> None:
    """Skip when a server or tool is missing locally; fail in CI."""
    if REQUIRE_ALL:
        pytest.fail(f"{what} is required (PGWATCH_REQUIRE_ALL=1) but was not found")
    pytest.skip(f"{what} not available")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if REQUIRE_ALL:
        majors = {b.major for b in PG_BUILDS}
        missing = [m for m in (15, 18) if m not in majors]
        if missing or len(REDIS_SERVERS) < 2:
            raise pytest.UsageError(f"PGWATCH_REQUIRE_ALL=1 but PostgreSQL {missing} or a Redis build is missing: "
                                    f"pg={[b.version for b in PG_BUILDS]} redis={REDIS_SERVERS}")


@pytest.fixture(scope="module", params=PG_BUILDS or [None], ids=lambda b: f"pg{b.major}" if b else "pg-missing")
def pg_server(request: pytest.FixtureRequest):
    """A running PostgreSQL sandbox (one per available build), shared by a test module."""
    if request.param is None:
        require("a PostgreSQL server build")
    with PostgresSandbox(build=request.param) as pg:
        yield pg


@pytest.fixture(scope="module", params=REDIS_SERVERS or [None], ids=lambda s: s.name if s else "redis-missing")
def redis_server(request: pytest.FixtureRequest):
    """A running Redis-protocol sandbox (one per available server binary), shared by a test module."""
    if request.param is None:
        require("a Redis server")
    with RedisSandbox(server=request.param) as rd:
        yield rd


@pytest.fixture
def fresh_pg_server():
    """A PostgreSQL sandbox of the newest build for one test (for tests that stop or break the server)."""
    if not PG_BUILDS:
        require("a PostgreSQL server build")
    with PostgresSandbox(build=PG_BUILDS[0]) as pg:
        yield pg
