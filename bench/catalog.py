"""The benchmark catalog of BENCHMARK-CATALOG.md, built fast on a PostgreSQL sandbox.

large: 2,000 tables in 4 schemas, 6,000 indexes, every 10th table with 3,000 rows, ~4,850 distinct normalised
statements in pg_stat_statements (pg_stat_statements.max = 5000); small: 50 tables, 150 indexes, 500 statements.
Everything is generated server-side (DO blocks in batches, so no transaction holds thousands of locks).

    python -m bench.catalog large     # build on the newest PostgreSQL, print counts, keep it up until Ctrl-C
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import psycopg

from pgwatch_cpa.sandbox import PgBuild, PostgresSandbox, find_pg_builds

SCHEMAS = ("app", "billing", "analytics", "audit")
MONITOR_ROLE = "monitor"
MONITOR_PASSWORD = "bench-monitor-pw"
SERVER_SETTINGS = {"pg_stat_statements.max": "5000", "max_locks_per_transaction": "256"}


@dataclass(frozen=True)
class Shape:
    name: str
    tables: int
    statements: int


SHAPES = {"large": Shape("large", 2000, 4850), "small": Shape("small", 50, 500)}

# The 12 statement shapes; %s is the table (format()). Constants are replaced by pg_stat_statements, so a statement is
# distinct by (table, shape) only: statement k uses table 1 + k mod N and shape (k div N) mod 12.
STATEMENT_SHAPES = (
    "SELECT count(*) FROM %s WHERE a = 5",
    "SELECT sum(e) FROM %s WHERE a BETWEEN 1 AND 10",
    "SELECT * FROM %s WHERE id = 42",
    "SELECT max(d) FROM %s",
    "SELECT avg(e) FROM %s WHERE b > 3",
    "SELECT id, c FROM %s ORDER BY d DESC LIMIT 10",
    "SELECT count(DISTINCT b) FROM %s",
    "SELECT count(*) FROM %s WHERE c LIKE 'ab%%'",
    "SELECT a, count(*) FROM %s GROUP BY a ORDER BY 2 DESC LIMIT 5",
    "SELECT * FROM %s WHERE a = 1 AND b = 2",
    "SELECT sum(e) FROM %s WHERE id BETWEEN 100 AND 200",
    "SELECT * FROM %s WHERE d > now() - interval '1 hour' ORDER BY d DESC LIMIT 20",
)

_CREATE_BATCH = """
DO $$
DECLARE
    schemas text[] := %(schemas)s;
    s text;
BEGIN
    FOR i IN %(first)s..%(last)s LOOP
        s := schemas[1 + i %% 4];
        EXECUTE format('CREATE TABLE %%I.t_%%s (id bigint PRIMARY KEY, a int NOT NULL, b int, c text, '
                       'd timestamptz, e numeric)', s, i);
        EXECUTE format('CREATE INDEX t_%%s_a ON %%I.t_%%s (a)', i, s, i);
        EXECUTE format('CREATE INDEX t_%%s_b_d ON %%I.t_%%s (b, d)', i, s, i);
        IF i %% 10 = 0 THEN
            EXECUTE format('INSERT INTO %%I.t_%%s SELECT g, g %%%% 97, g %%%% 31, md5(g::text), '
                           'now() - g * interval ''1 minute'', g * 1.5 FROM generate_series(1, 3000) g', s, i);
        END IF;
    END LOOP;
END
$$
"""

_STATEMENTS = """
DO $$
DECLARE
    schemas text[] := %(schemas)s;
    shapes text[] := %(shapes)s;
    n int := %(tables)s;
    t int;
    q text;
BEGIN
    FOR k IN 0..%(statements)s - 1 LOOP
        t := 1 + k %% n;
        q := format(shapes[1 + (k / n) %% 12], format('%%I.t_%%s', schemas[1 + t %% 4], t));
        FOR r IN 1..(1 + k %% 3) LOOP
            EXECUTE q;
        END LOOP;
    END LOOP;
END
$$
"""


def build_catalog(pg: PostgresSandbox, shape: Shape, batch: int = 100) -> dict[str, float]:
    """Create the catalog in the sandbox's ``postgres`` database and the pg_monitor-only role; return counts."""
    started = time.monotonic()
    # DO bodies cannot take bound parameters: values are merged client-side (ClientCursor quotes them).
    with psycopg.connect(pg.dsn(), autocommit=True, cursor_factory=psycopg.ClientCursor) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute(f"CREATE ROLE {MONITOR_ROLE} LOGIN PASSWORD '{MONITOR_PASSWORD}' IN ROLE pg_monitor")
        for schema in SCHEMAS:
            conn.execute(f"CREATE SCHEMA {schema}")
        for first in range(1, shape.tables + 1, batch):
            last = min(shape.tables, first + batch - 1)
            conn.execute(_CREATE_BATCH, {"schemas": list(SCHEMAS), "first": first, "last": last})
        conn.execute("VACUUM ANALYZE")
        conn.execute("SELECT pg_stat_statements_reset()")
        conn.execute(_STATEMENTS, {"schemas": list(SCHEMAS), "shapes": list(STATEMENT_SHAPES), "tables": shape.tables,
                                   "statements": shape.statements})
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM pg_stat_user_tables), (SELECT count(*) FROM pg_stat_user_indexes), "
            "(SELECT count(*) FROM pg_stat_statements), pg_database_size(current_database())").fetchone()
    return {"tables": counts[0], "indexes": counts[1], "statements": counts[2], "db_bytes": counts[3],
            "build_seconds": time.monotonic() - started}


def start_catalog(build: PgBuild | None, shape: Shape) -> tuple[PostgresSandbox, dict[str, float]]:
    pg = PostgresSandbox(build=build, settings=dict(SERVER_SETTINGS)).start()
    try:
        return pg, build_catalog(pg, shape)
    except BaseException:
        pg.close()
        raise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shape", choices=sorted(SHAPES))
    parser.add_argument("--pg-major", type=int, default=None)
    args = parser.parse_args()
    builds = [b for b in find_pg_builds() if args.pg_major in (None, b.major)]
    pg, counts = start_catalog(builds[0] if builds else None, SHAPES[args.shape])
    try:
        print(f"PostgreSQL {pg.build.version if pg.build else '?'} {args.shape}: {counts}")
        print(f"monitor DSN: {pg.dsn(MONITOR_ROLE, MONITOR_PASSWORD)}  (Ctrl-C to stop)")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    finally:
        pg.close()


if __name__ == "__main__":
    main()
