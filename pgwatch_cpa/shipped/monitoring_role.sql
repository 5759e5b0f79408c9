-- The PostgreSQL role pgwatch-cpa connects as: pg_monitor and nothing else (README, "PostgreSQL" / "Privileges").
-- Run it once per server as a superuser (or a role with CREATEROLE and ADMIN OPTION on pg_monitor), e.g.
--   psql -d cpa -f monitoring_role.sql && psql -d cpa -c '\password pgwatch'
-- (`pgwatch-cpa export-assets --to DIR` writes this file out; tests/integration/test_least_privilege.py runs the
-- daemon and `pgwatch-cpa report` as this role, exactly as created here.)
--
-- pg_monitor gives pg_read_all_stats (every session's pg_stat_activity row and every role's pg_stat_statements
-- entry), pg_read_all_settings and pg_stat_scan_tables; no table of the application is readable. The daemon never
-- writes: every session is read-only by default. CONNECTION LIMIT: the daemon holds at most `max_connections`
-- (default 2) per target and `pgwatch-cpa report` at most 2 more; 5 leaves one for an operator's psql. Set the
-- password with \password (never on a command line) or use certificate / peer authentication in pg_hba.conf.

CREATE ROLE pgwatch LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT
    IN ROLE pg_monitor CONNECTION LIMIT 5;
ALTER ROLE pgwatch SET default_transaction_read_only = on;

-- Only where CONNECT was revoked from PUBLIC: for the DSN's database and each database the per-database
-- collectors visit (`databases:` or `discover:` in the config).
--   GRANT CONNECT ON DATABASE cpa TO pgwatch;
--
-- pg_stat_statements (the statements collector and the report's slow_statement findings), as a superuser:
--   postgresql.conf: shared_preload_libraries = 'pg_stat_statements' (restart), then in the DSN's database:
--   CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
-- pg_monitor is enough to read it; no GRANT is needed. Without the extension the statements collector is
-- disabled on that target after one WARNING (pgwatch_collector_enabled 0) and the rest runs on.
