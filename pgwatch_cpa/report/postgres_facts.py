"""What the PostgreSQL report reads: statistics and catalogs only, as the collectors' pg_monitor role.

One connection at a time, opened for the report and closed after it (``application_name=pgwatch-cpa-report``,
autocommit, server-side ``statement_timeout`` and ``lock_timeout`` from the target, an asyncio timeout around
every round trip). First the DSN's database: the server, settings, connections, databases and
pg_stat_statements; then each polled database in turn: its indexes and tables. SQL lives in ``report/sql``,
chosen by server and extension version like the collectors'. A failure on the DSN's database raises (the
target is unreachable); a failure on another database is kept in ``Facts.failed`` and the others go on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pgwatch_cpa.collectors.postgres.common import setting_metric
from pgwatch_cpa.collectors.postgres.encoding import CLIENT_ENCODING, lossy, use_lenient_text
from pgwatch_cpa.collectors.postgres.pg_stat_statements import EXTENSION, normalise_text
from pgwatch_cpa.collectors.postgres.sql import NoSqlForVersion, load
from pgwatch_cpa.report.postgres_rules import TOP_STATEMENTS
from pgwatch_cpa.secrets import describe

if TYPE_CHECKING:
    from psycopg import AsyncConnection

    from pgwatch_cpa.config import PostgresTarget

APPLICATION_NAME = "pgwatch-cpa-report"
SQL_PACKAGE = "pgwatch_cpa.report"
CLIENT_MARGIN = 1.0  # seconds the client waits beyond statement_timeout before it gives up on a round trip
STATEMENT_ROWS = 100  # statement rows read: the top ones by total time and the slow ones, by total time
TEXT_ROWS = 1000  # opt-in texts of the most expensive statements, to match missing-index candidates
SETTINGS = (
    "shared_buffers", "effective_cache_size", "work_mem", "maintenance_work_mem", "checkpoint_completion_target",
    "wal_buffers", "random_page_cost", "max_connections", "autovacuum", "autovacuum_vacuum_threshold",
    "autovacuum_vacuum_scale_factor", "autovacuum_freeze_max_age",
)

Row = dict[str, Any]
# Which indexes of a database (by oid) the report names, so that only their definitions are read.
Describe = Callable[[str, list[Row]], Collection[int]]


@dataclass
class DatabaseFacts:
    name: str
    indexes: list[Row]
    tables: list[Row]


@dataclass
class Facts:
    server_version_num: int
    database: str  # the DSN's
    settings: dict[str, float]
    connections: Row
    databases: list[Row]  # every connectable database, with its transaction-id age
    polled: list[str]
    database_stats: list[Row]
    statements: list[Row] | None = None  # None: pg_stat_statements cannot be read here
    statement_totals: Row | None = None
    statements_unavailable: str | None = None
    statements_reset_age: float | None = None
    # opt-in (query_text): queryid, datname, total_exec_time, text (normalised, truncated), search_text
    texts: list[Row] = field(default_factory=list)
    per_database: dict[str, DatabaseFacts] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # database -> secret-free reason


class Session:
    """One open connection: runs the report's versioned SQL, each round trip under a client-side timeout."""

    def __init__(self, conn: AsyncConnection[Any], target: PostgresTarget, extensions: Mapping[str, str]) -> None:
        self.conn = conn
        self.server_version_num = conn.info.server_version
        self.extensions = dict(extensions)
        self._timeout = float(target.statement_timeout) + CLIENT_MARGIN

    async def fetch(self, name: str, params: Mapping[str, Any] | None = None, schema: str | None = None
                    ) -> list[Row]:
        from psycopg import sql
        from psycopg.rows import dict_row

        query: Any = load(name, self.server_version_num, self.extensions, package=SQL_PACKAGE).text
        if schema is not None:
            query = sql.SQL(query).format(schema=sql.Identifier(schema))
        async with asyncio.timeout(self._timeout), self.conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(query, params)
            return await cur.fetchall()


@asynccontextmanager
async def session(target: PostgresTarget, dbname: str | None = None,
                  extensions: Mapping[str, str] | None = None) -> AsyncIterator[Session]:
    """A fresh connection to ``dbname`` (None: the DSN's database), closed on exit."""
    import psycopg

    options = (f"-c statement_timeout={int(float(target.statement_timeout) * 1000)} "
               f"-c lock_timeout={int(float(target.lock_timeout) * 1000)}")
    kwargs: dict[str, Any] = {"autocommit": True, "application_name": APPLICATION_NAME, "options": options,
                              "connect_timeout": max(1, int(target.connect_timeout)),
                              "client_encoding": CLIENT_ENCODING}
    if dbname:
        kwargs["dbname"] = dbname
    async with asyncio.timeout(float(target.connect_timeout) + CLIENT_MARGIN):
        conn = await psycopg.AsyncConnection.connect(target.conninfo, **kwargs)
    try:
        async with asyncio.timeout(float(target.connect_timeout) + CLIENT_MARGIN):
            await use_lenient_text(conn)  # hostile names and texts decode with U+FFFD, never as bytes or errors
        yield Session(conn, target, extensions or {})
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(float(target.connect_timeout)):
                await conn.close()


async def read_facts(target: PostgresTarget, describe_indexes: Describe | None = None) -> Facts:
    """Everything the report rests on. ``describe_indexes`` picks the indexes whose definitions to read."""
    describe_indexes = describe_indexes or (lambda _db, _rows: ())
    async with session(target) as s:
        server = (await s.fetch("report_server"))[0]
        s.extensions = dict(server["extensions"] or {})
        facts = await _instance_facts(s, target, server)
        if facts.database in facts.polled:
            await _database_facts(s, facts, facts.database, describe_indexes)
    for name in facts.polled:
        if name != facts.database:
            await _other_database(target, facts, name, s.extensions, describe_indexes)
    return facts


async def _instance_facts(s: Session, target: PostgresTarget, server: Row) -> Facts:
    settings = _settings(await s.fetch("report_settings", {"names": list(SETTINGS)}))
    databases = await s.fetch("report_databases")
    polled, missing = discover(target, databases, server["database"])
    facts = Facts(s.server_version_num, server["database"], settings, (await s.fetch("report_connections"))[0],
                  databases, polled, await s.fetch("report_database_stats", {"names": polled}),
                  failed={name: "does not exist or lacks CONNECT" for name in missing})
    await _statements(s, target, facts, server["pgss_schema"])
    return facts


def _settings(rows: list[Row]) -> dict[str, float]:
    """pg_settings rows -> numeric values in base units (bytes, seconds; booleans 1/0)."""
    out = {}
    for r in rows:
        converted = setting_metric(r["name"], r["setting"], r["unit"], r["vartype"])
        if converted is not None:
            out[r["name"]] = converted[1]
    return out


def discover(target: PostgresTarget, databases: list[Row], own: str) -> tuple[list[str], list[str]]:
    """The databases to read, as the poller chooses them, and the configured ones that cannot be read."""
    # a name that is not valid UTF-8 cannot be connected to by its decoded form: the poller skips it too
    existing = [d["datname"] for d in databases if d["discoverable"] and not lossy(d["datname"])]
    if target.databases is None and target.discover is None:
        return [own], []
    if target.databases is not None:
        return ([n for n in target.databases if n in existing], [n for n in target.databases if n not in existing])
    assert target.discover is not None
    return [d for d in existing if target.discover.matches(d)], []


async def _statements(s: Session, target: PostgresTarget, facts: Facts, schema: str | None) -> None:
    """pg_stat_statements, if it can be read: the listed statements, totals, reset age, opt-in texts. A query
    the server refused or that timed out leaves the statements out (said in the summary), not the target."""
    if schema is None or EXTENSION not in s.extensions:
        facts.statements_unavailable = f"extension {EXTENSION} is not installed in database {facts.database!r}"
        return
    params = {"top": TOP_STATEMENTS, "slow_ms": float(target.slow_query_threshold) * 1000, "limit": STATEMENT_ROWS}
    try:
        rows = await s.fetch("report_statements", params, schema)
        facts.statements = [r for r in rows if r["kind"] == "statement"]
        facts.statement_totals = next(r for r in rows if r["kind"] == "total")
        with contextlib.suppress(NoSqlForVersion):  # pg_stat_statements_info: 1.9+
            info = await s.fetch("report_statements_info", schema=schema)
            facts.statements_reset_age = info[0]["stats_reset_age"] if info else None
        if target.query_text:
            facts.texts = await _texts(s, target, facts, schema)
    except Exception as exc:
        if not _server_refused(exc):
            raise  # the connection itself failed: so does the target
        # read up to the failure; a failure after the numbers (texts) says so
        facts.statements_unavailable = ("statement texts: " if facts.statements is not None else "") + describe(exc)


def _server_refused(exc: BaseException) -> bool:
    """An error after which the connection is still usable: the server refused or cancelled a statement (not
    loaded, no privilege, statement_timeout), the client timed out, or no SQL file fits the extension."""
    import psycopg

    return (isinstance(exc, psycopg.Error) and exc.sqlstate is not None) or isinstance(
        exc, (TimeoutError, NoSqlForVersion))


async def _texts(s: Session, target: PostgresTarget, facts: Facts, schema: str) -> list[Row]:
    ids = [int(r["queryid"]) for r in facts.statements or []]
    rows = await s.fetch("report_statement_texts", {"databases": facts.polled, "queryids": ids, "limit": TEXT_ROWS},
                         schema)
    rows.sort(key=lambda r: (-float(r["total_exec_time"] or 0), r["queryid"]))
    # "text" is what the report shows (truncated); tables are matched on the whole normalised text
    return [{**r, "text": normalise_text(query, target.query_text_max_length),
             "search_text": normalise_text(query, len(query))}
            for r in rows for query in [r.pop("query") or ""]]


async def _database_facts(s: Session, facts: Facts, name: str, describe_indexes: Describe) -> None:
    try:
        indexes, tables = await s.fetch("report_indexes"), await s.fetch("report_tables")
        oids = sorted(describe_indexes(name, indexes))
        if oids:
            definitions = {r["index_oid"]: r["definition"]
                           for r in await s.fetch("report_index_definitions", {"oids": oids})}
            for r in indexes:
                r["definition"] = definitions.get(r["index_oid"])
        facts.per_database[name] = DatabaseFacts(name, indexes, tables)
    except Exception as exc:  # one database's failure never loses the others
        facts.failed[name] = describe(exc)


async def _other_database(target: PostgresTarget, facts: Facts, name: str, extensions: Mapping[str, str],
                          describe_indexes: Describe) -> None:
    try:
        async with session(target, name, extensions) as s:
            await _database_facts(s, facts, name, describe_indexes)
    except Exception as exc:  # cannot connect (dropped meanwhile, CONNECT revoked, too many connections)
        facts.failed[name] = describe(exc)
