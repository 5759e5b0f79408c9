-- The server, the database of the DSN, its extensions (pg_stat_statements' columns follow its installed
-- version, not the server's) and the schema pg_stat_statements lives in.
SELECT pg_catalog.current_setting('server_version_num')::int AS server_version_num,
       pg_catalog.current_database() AS database,
       coalesce((SELECT pg_catalog.json_object_agg(e.extname, e.extversion) FROM pg_catalog.pg_extension AS e),
                '{}') AS extensions,
       (SELECT n.nspname FROM pg_catalog.pg_extension AS e
        JOIN pg_catalog.pg_namespace AS n ON n.oid = e.extnamespace
        WHERE e.extname = 'pg_stat_statements') AS pgss_schema
