-- Per-table statistics of the current database: the top-N tables by activity (kind = 'table'), the top-N
-- tables read mostly by sequential scans (kind = 'heavy'), one totals row (kind = 'total'). ORDER BY + LIMIT
-- (top-N heap sorts) over one materialised scan. "Mostly sequential" is the guide's rule: seq_scan > idx_scan on a
-- table of more than min_live_rows live rows (smaller tables are read whole, index or not). Lock-free: no size
-- functions here (sizes are the slow table_size collector). coalesce(idx_scan, 0): a table without any index
-- has idx_scan NULL and must still count as sequentially scanned.
-- The pg_stat_get_* functions are called directly with the definitions of pg_stat_user_tables and
-- pg_statio_user_tables: joining those two views costs several times more on a 2,000-table catalog.
WITH idx AS (
    SELECT x.indrelid,
           sum(pg_catalog.pg_stat_get_numscans(x.indexrelid)) AS scans,
           sum(pg_catalog.pg_stat_get_tuples_fetched(x.indexrelid)) AS fetched,
           sum(pg_catalog.pg_stat_get_blocks_fetched(x.indexrelid)
               - pg_catalog.pg_stat_get_blocks_hit(x.indexrelid)) AS blks_read,
           sum(pg_catalog.pg_stat_get_blocks_hit(x.indexrelid)) AS blks_hit
    FROM pg_catalog.pg_index AS x
    GROUP BY x.indrelid
), t AS MATERIALIZED (
    SELECT c.oid AS relid, n.nspname AS schemaname, c.relname,
           pg_catalog.pg_stat_get_numscans(c.oid) AS seq_scan,
           pg_catalog.pg_stat_get_tuples_returned(c.oid) AS seq_tup_read,
           coalesce(idx.scans, 0) AS idx_scan,
           coalesce(idx.fetched + pg_catalog.pg_stat_get_tuples_fetched(c.oid), 0) AS idx_tup_fetch,
           pg_catalog.pg_stat_get_tuples_inserted(c.oid) AS n_tup_ins,
           pg_catalog.pg_stat_get_tuples_updated(c.oid) AS n_tup_upd,
           pg_catalog.pg_stat_get_tuples_deleted(c.oid) AS n_tup_del,
           pg_catalog.pg_stat_get_tuples_hot_updated(c.oid) AS n_tup_hot_upd,
           pg_catalog.pg_stat_get_live_tuples(c.oid) AS n_live_tup,
           pg_catalog.pg_stat_get_dead_tuples(c.oid) AS n_dead_tup,
           pg_catalog.pg_stat_get_last_vacuum_time(c.oid) AS last_vacuum,
           pg_catalog.pg_stat_get_last_autovacuum_time(c.oid) AS last_autovacuum,
           pg_catalog.pg_stat_get_last_analyze_time(c.oid) AS last_analyze,
           pg_catalog.pg_stat_get_last_autoanalyze_time(c.oid) AS last_autoanalyze,
           pg_catalog.pg_stat_get_vacuum_count(c.oid) AS vacuum_count,
           pg_catalog.pg_stat_get_autovacuum_count(c.oid) AS autovacuum_count,
           pg_catalog.pg_stat_get_analyze_count(c.oid) AS analyze_count,
           pg_catalog.pg_stat_get_autoanalyze_count(c.oid) AS autoanalyze_count,
           pg_catalog.pg_stat_get_blocks_fetched(c.oid) - pg_catalog.pg_stat_get_blocks_hit(c.oid) AS heap_blks_read,
           pg_catalog.pg_stat_get_blocks_hit(c.oid) AS heap_blks_hit,
           coalesce(idx.blks_read, 0) AS idx_blks_read, coalesce(idx.blks_hit, 0) AS idx_blks_hit,
           (pg_catalog.pg_stat_get_numscans(c.oid) > coalesce(idx.scans, 0)
            AND pg_catalog.pg_stat_get_live_tuples(c.oid) > %(min_live_rows)s) AS seq_scan_heavy
    FROM pg_catalog.pg_class AS c
    JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
    LEFT JOIN idx ON idx.indrelid = c.oid
    WHERE c.relkind IN ('r', 't', 'm', 'p')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'
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
