-- Per-table statistics of the current database: the top-N tables by activity (kind = 'table'), the top-N
-- tables read mostly by sequential scans (kind = 'heavy'), one totals row (kind = 'total'). ORDER BY + LIMIT
-- (top-N heap sorts) over one materialised scan. Lock-free: no size
-- functions here (sizes are the slow table_size collector). coalesce(idx_scan, 0): a table without any index
-- has idx_scan NULL and must still count as sequentially scanned.
WITH t AS MATERIALIZED (
    SELECT s.relid, s.schemaname, s.relname,
           s.seq_scan, s.seq_tup_read,
           coalesce(s.idx_scan, 0) AS idx_scan, coalesce(s.idx_tup_fetch, 0) AS idx_tup_fetch,
           s.n_tup_ins, s.n_tup_upd, s.n_tup_del, s.n_tup_hot_upd, s.n_live_tup, s.n_dead_tup,
           s.last_vacuum, s.last_autovacuum, s.last_analyze, s.last_autoanalyze,
           s.vacuum_count, s.autovacuum_count, s.analyze_count, s.autoanalyze_count,
           coalesce(io.heap_blks_read, 0) AS heap_blks_read, coalesce(io.heap_blks_hit, 0) AS heap_blks_hit,
           coalesce(io.idx_blks_read, 0) AS idx_blks_read, coalesce(io.idx_blks_hit, 0) AS idx_blks_hit,
           (s.seq_scan > coalesce(s.idx_scan, 0) AND s.seq_scan >= %(seq_scan_threshold)s) AS seq_scan_heavy
    FROM pg_catalog.pg_stat_user_tables AS s
    LEFT JOIN pg_catalog.pg_statio_user_tables AS io ON io.relid = s.relid
)
(SELECT 'table' AS kind, r.schemaname, r.relname, 1::bigint AS tables, r.seq_scan_heavy::int::bigint AS seq_scan_heavy,
       r.seq_scan, r.seq_tup_read, r.idx_scan, r.idx_tup_fetch, r.n_tup_ins, r.n_tup_upd, r.n_tup_del,
       r.n_tup_hot_upd, r.n_live_tup, r.n_dead_tup,
       extract(epoch FROM now() - r.last_vacuum) AS last_vacuum_age,
       extract(epoch FROM now() - r.last_autovacuum) AS last_autovacuum_age,
       extract(epoch FROM now() - r.last_analyze) AS last_analyze_age,
       extract(epoch FROM now() - r.last_autoanalyze) AS last_autoanalyze_age,
       r.vacuum_count, r.autovacuum_count, r.analyze_count, r.autoanalyze_count,
       r.heap_blks_read, r.heap_blks_hit, r.idx_blks_read, r.idx_blks_hit
 FROM t AS r
 ORDER BY r.seq_scan + r.idx_scan + r.n_tup_ins + r.n_tup_upd + r.n_tup_del DESC, r.relid
 LIMIT %(top_n)s)
UNION ALL
(SELECT 'heavy', r.schemaname, r.relname, 1, 1,
       r.seq_scan, r.seq_tup_read, r.idx_scan, r.idx_tup_fetch, r.n_tup_ins, r.n_tup_upd, r.n_tup_del,
       r.n_tup_hot_upd, r.n_live_tup, r.n_dead_tup,
       extract(epoch FROM now() - r.last_vacuum) AS last_vacuum_age,
       extract(epoch FROM now() - r.last_autovacuum) AS last_autovacuum_age,
       extract(epoch FROM now() - r.last_analyze) AS last_analyze_age,
       extract(epoch FROM now() - r.last_autoanalyze) AS last_autoanalyze_age,
       r.vacuum_count, r.autovacuum_count, r.analyze_count, r.autoanalyze_count,
       r.heap_blks_read, r.heap_blks_hit, r.idx_blks_read, r.idx_blks_hit
 FROM t AS r
 WHERE r.seq_scan_heavy
 ORDER BY r.seq_scan DESC, r.relid
 LIMIT %(top_n)s)
UNION ALL
SELECT 'total', '', '', count(*), coalesce(sum(t.seq_scan_heavy::int), 0),
       coalesce(sum(t.seq_scan), 0), coalesce(sum(t.seq_tup_read), 0), coalesce(sum(t.idx_scan), 0),
       coalesce(sum(t.idx_tup_fetch), 0), coalesce(sum(t.n_tup_ins), 0), coalesce(sum(t.n_tup_upd), 0),
       coalesce(sum(t.n_tup_del), 0), coalesce(sum(t.n_tup_hot_upd), 0), coalesce(sum(t.n_live_tup), 0),
       coalesce(sum(t.n_dead_tup), 0), NULL, NULL, NULL, NULL,
       coalesce(sum(t.vacuum_count), 0), coalesce(sum(t.autovacuum_count), 0), coalesce(sum(t.analyze_count), 0),
       coalesce(sum(t.autoanalyze_count), 0), coalesce(sum(t.heap_blks_read), 0), coalesce(sum(t.heap_blks_hit), 0),
       coalesce(sum(t.idx_blks_read), 0), coalesce(sum(t.idx_blks_hit), 0)
FROM t
