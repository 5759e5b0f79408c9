-- PG 16 added reserved_connections (slots for roles with pg_use_reserved_connections).
SELECT (SELECT count(*) FROM pg_catalog.pg_stat_activity AS a WHERE a.backend_type = 'client backend')
                                                                        AS connections,
       pg_catalog.current_setting('max_connections')::int                AS max_connections,
       pg_catalog.current_setting('superuser_reserved_connections')::int AS superuser_reserved_connections,
       pg_catalog.current_setting('reserved_connections')::int           AS reserved_connections
