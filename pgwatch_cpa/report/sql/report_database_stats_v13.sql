-- Size, buffer-cache counters and statistics age of the polled databases. pg_database_size needs CONNECT or
-- pg_read_all_stats (part of pg_monitor) and takes no lock.
SELECT s.datname,
       pg_catalog.pg_database_size(s.datid)::float8 AS size_bytes,
       s.blks_hit, s.blks_read,
       extract(epoch FROM now() - s.stats_reset)::float8 AS stats_reset_age
FROM pg_catalog.pg_stat_database AS s
WHERE s.datname = ANY(%(names)s::text[])
