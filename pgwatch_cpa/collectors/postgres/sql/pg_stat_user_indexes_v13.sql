-- Index usage of the current database: top-N indexes by scans, the largest unused and invalid indexes, and a
-- totals row (kind = 'total'). "Unused" = never scanned, valid, and enforcing no constraint (primary keys,
-- unique and exclusion indexes are needed even if never scanned; every index backing a p/u/x constraint has
-- indisprimary/indisunique/indisexclusion set, so pg_constraint, which has no index on conindid, is not read). Sizes are pg_class.relpages x block_size
-- (as of the last VACUUM / ANALYZE / CREATE INDEX): lock-free and cheap, unlike pg_relation_size. The
-- pg_stat_get_* functions are called directly (the definition of pg_stat_user_indexes, minus its extra joins).
WITH f AS MATERIALIZED (
    SELECT x.indexrelid, n.nspname AS schemaname, c.relname, i.relname AS indexrelname,
           pg_catalog.pg_stat_get_numscans(x.indexrelid) AS idx_scan,
           pg_catalog.pg_stat_get_tuples_returned(x.indexrelid) AS idx_tup_read,
           pg_catalog.pg_stat_get_tuples_fetched(x.indexrelid) AS idx_tup_fetch, x.indisvalid,
           i.relpages::float8 * pg_catalog.current_setting('block_size')::float8 AS size_bytes,
           (pg_catalog.pg_stat_get_numscans(x.indexrelid) = 0 AND x.indisvalid
            AND NOT (x.indisunique OR x.indisprimary OR x.indisexclusion)) AS unused
    FROM pg_catalog.pg_index AS x
    JOIN pg_catalog.pg_class AS c ON c.oid = x.indrelid
    JOIN pg_catalog.pg_class AS i ON i.oid = x.indexrelid
    JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 't', 'm', 'p')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'
)
(SELECT 'index' AS kind, f.schemaname, f.relname, f.indexrelname, 1::bigint AS indexes, f.unused::int::bigint AS unused,
        (NOT f.indisvalid)::int::bigint AS invalid, f.idx_scan, f.idx_tup_read, f.idx_tup_fetch, f.size_bytes
 FROM f ORDER BY f.idx_scan DESC, f.indexrelid LIMIT %(top_n)s)
UNION ALL
(SELECT 'unused', f.schemaname, f.relname, f.indexrelname, 1, 1, 0, f.idx_scan, f.idx_tup_read, f.idx_tup_fetch,
        f.size_bytes
 FROM f WHERE f.unused ORDER BY f.size_bytes DESC, f.indexrelid LIMIT %(top_n)s)
UNION ALL
(SELECT 'invalid', f.schemaname, f.relname, f.indexrelname, 1, 0, 1, f.idx_scan, f.idx_tup_read, f.idx_tup_fetch,
        f.size_bytes
 FROM f WHERE NOT f.indisvalid ORDER BY f.indexrelid LIMIT %(top_n)s)
UNION ALL
SELECT 'total', '', '', '', count(*), count(*) FILTER (WHERE f.unused), count(*) FILTER (WHERE NOT f.indisvalid),
       coalesce(sum(f.idx_scan), 0), coalesce(sum(f.idx_tup_read), 0), coalesce(sum(f.idx_tup_fetch), 0),
       coalesce(sum(f.size_bytes) FILTER (WHERE f.unused), 0)
FROM f
