SELECT coalesce(d.datname, '') AS datname, l.mode, l.granted, count(*) AS locks
FROM pg_catalog.pg_locks AS l
LEFT JOIN pg_catalog.pg_database AS d ON d.oid = l.database
WHERE l.pid IS DISTINCT FROM pg_catalog.pg_backend_pid()
GROUP BY 1, 2, 3
