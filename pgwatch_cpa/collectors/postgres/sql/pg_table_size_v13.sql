-- Sizes of the user tables of the current database. Ranking and totals come from pg_class.relpages (catalog
-- only; refreshed by VACUUM, ANALYZE and CREATE INDEX), so only the top-N tables pay for the exact size
-- functions, which stat every file and take a lock (lock_timeout bounds the wait). Runs on a slow interval.
WITH idx AS (
    SELECT x.indrelid, sum(greatest(i.relpages, 0))::bigint AS pages
    FROM pg_catalog.pg_index AS x
    JOIN pg_catalog.pg_class AS i ON i.oid = x.indexrelid
    GROUP BY x.indrelid
), est AS (
    SELECT c.oid AS relid, n.nspname AS schemaname, c.relname,
           (greatest(c.relpages, 0) + coalesce(greatest(t.relpages, 0), 0))::bigint
               * pg_catalog.current_setting('block_size')::bigint AS table_est,
           coalesce(idx.pages, 0) * pg_catalog.current_setting('block_size')::bigint AS index_est
    FROM pg_catalog.pg_class AS c
    JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
    LEFT JOIN pg_catalog.pg_class AS t ON t.oid = c.reltoastrelid
    LEFT JOIN idx ON idx.indrelid = c.oid
    WHERE c.relkind IN ('r', 'p', 'm')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'
), top AS (
    SELECT * FROM est ORDER BY table_est + index_est DESC, relid LIMIT %(top_n)s
)
SELECT 'table' AS kind, top.schemaname, top.relname, 1::bigint AS tables,
       pg_catalog.pg_table_size(top.relid) AS table_bytes, pg_catalog.pg_indexes_size(top.relid) AS index_bytes
FROM top
UNION ALL
SELECT 'total', '', '', count(*), coalesce(sum(est.table_est), 0), coalesce(sum(est.index_est), 0) FROM est
