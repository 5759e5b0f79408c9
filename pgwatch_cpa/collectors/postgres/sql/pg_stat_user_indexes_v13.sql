-- Index usage of the current database: top-N indexes by scans, the largest unused and invalid indexes, and a
-- totals row (kind = 'total'). "Unused" = never scanned, valid, and enforcing no constraint (primary keys,
-- unique and exclusion indexes are needed even if never scanned; every index backing a p/u/x constraint has
-- indisprimary/indisunique/indisexclusion set, so pg_constraint, which has no index on conindid, is not read). Sizes are pg_class.relpages x block_size
-- (as of the last VACUUM / ANALYZE / CREATE INDEX): lock-free and cheap, unlike pg_relation_size.
WITH f AS MATERIALIZED (
    SELECT s.indexrelid, s.schemaname, s.relname, s.indexrelname,
           s.idx_scan, s.idx_tup_read, s.idx_tup_fetch, x.indisvalid,
           c.relpages::float8 * pg_catalog.current_setting('block_size')::float8 AS size_bytes,
           (s.idx_scan = 0 AND x.indisvalid
            AND NOT (x.indisunique OR x.indisprimary OR x.indisexclusion)) AS unused
    FROM pg_catalog.pg_stat_user_indexes AS s
    JOIN pg_catalog.pg_index AS x ON x.indexrelid = s.indexrelid
    JOIN pg_catalog.pg_class AS c ON c.oid = s.indexrelid
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
