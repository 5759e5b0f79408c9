-- requires: pg_stat_statements >= 1.8
-- Top-N statements by total execution time (ORDER BY ... LIMIT: a top-N heap sort) plus one row of totals
-- over every statement (kind = 'all'); the collector derives 'other' = all - top, so sums stay exact.
-- pg_stat_statements(false): numbers only, the query text file is not read. The monitoring role's own
-- statements are excluded by userid. Rows of the same statement (toplevel true/false, PG 14+) are merged.
-- Sums are float8: numeric sums of bigint columns cost several times more (exact below 2^53 anyway).
WITH s AS MATERIALIZED (
    SELECT p.queryid, p.userid, p.dbid,
           sum(p.calls::float8)            AS calls,
           sum(p.total_exec_time)          AS total_exec_time,
           max(p.max_exec_time)            AS max_exec_time,
           sum(p.rows::float8)             AS rows,
           sum(p.shared_blks_hit::float8)  AS shared_blks_hit,
           sum(p.shared_blks_read::float8) AS shared_blks_read,
           sum(p.temp_blks_written::float8) AS temp_blks_written,
           sum(p.blk_read_time)      AS blk_read_time,
           sum(p.blk_write_time)      AS blk_write_time,
           sum(p.wal_bytes::float8)        AS wal_bytes
    FROM {schema}.pg_stat_statements(false) AS p
    WHERE p.userid IS DISTINCT FROM (SELECT r.oid FROM pg_catalog.pg_roles AS r WHERE r.rolname = current_user)
      AND p.queryid IS NOT NULL
    GROUP BY p.queryid, p.userid, p.dbid
)
SELECT 'top' AS kind, t.queryid::text AS queryid, coalesce(d.datname, '') AS datname,
       coalesce(u.rolname, '') AS "user", 1::bigint AS statements,
       (t.calls > 0 AND t.total_exec_time / t.calls > %(slow_ms)s)::int::bigint AS slow,
       t.calls, t.total_exec_time, t.max_exec_time, t.rows, t.shared_blks_hit, t.shared_blks_read,
       t.temp_blks_written, t.blk_read_time, t.blk_write_time, t.wal_bytes
FROM (SELECT * FROM s ORDER BY s.total_exec_time DESC, s.queryid LIMIT %(top_n)s) AS t
LEFT JOIN pg_catalog.pg_database AS d ON d.oid = t.dbid
LEFT JOIN pg_catalog.pg_roles AS u ON u.oid = t.userid
UNION ALL
SELECT 'all', 'all', '', '', count(*),
       count(*) FILTER (WHERE s.calls > 0 AND s.total_exec_time / s.calls > %(slow_ms)s),
       coalesce(sum(s.calls), 0), coalesce(sum(s.total_exec_time), 0), coalesce(max(s.max_exec_time), 0),
       coalesce(sum(s.rows), 0), coalesce(sum(s.shared_blks_hit), 0), coalesce(sum(s.shared_blks_read), 0),
       coalesce(sum(s.temp_blks_written), 0), coalesce(sum(s.blk_read_time), 0),
       coalesce(sum(s.blk_write_time), 0), coalesce(sum(s.wal_bytes), 0)
FROM s
