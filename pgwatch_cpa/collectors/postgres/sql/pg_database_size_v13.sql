-- pg_database_size stats every file of the database: this runs on a slow interval.
SELECT d.datname, pg_catalog.pg_database_size(d.oid) AS size_bytes
FROM pg_catalog.pg_database AS d
WHERE d.datallowconn AND NOT d.datistemplate
