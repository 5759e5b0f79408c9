-- requires: pg_stat_statements >= 1.8
-- Statements for the report: the top-N by total execution time and every statement whose mean execution time
-- exceeds the slow threshold (at most 'limit' rows, by total time), plus one row of totals over every statement
-- (kind = 'total'). Numbers only: pg_stat_statements(false) does not read the query text file. The monitoring
-- role's own statements are left out (as the statements collector does); rows of one statement (per user,
-- toplevel or not) are merged per database, so a queryid appears once per database.
WITH s AS MATERIALIZED (
    SELECT p.queryid, p.dbid,
           sum(p.calls::float8)             AS calls,
           sum(p.total_exec_time)           AS total_exec_time,
           max(p.max_exec_time)             AS max_exec_time,
           sum(p.rows::float8)              AS rows,
           sum(p.shared_blks_hit::float8)   AS shared_blks_hit,
           sum(p.shared_blks_read::float8)  AS shared_blks_read,
           sum(p.temp_blks_written::float8) AS temp_blks_written,
           sum(p.blk_read_time) AS blk_read_time
    FROM {schema}.pg_stat_statements(false) AS p
    WHERE p.userid IS DISTINCT FROM (SELECT r.oid FROM pg_catalog.pg_roles AS r WHERE r.rolname = current_user)
      AND p.queryid IS NOT NULL
    GROUP BY p.queryid, p.dbid
), ranked AS (
    SELECT s.*, row_number() OVER (ORDER BY s.total_exec_time DESC, s.queryid, s.dbid) AS rank,
           (s.calls > 0 AND s.total_exec_time / s.calls > %(slow_ms)s) AS slow
    FROM s
)
(SELECT 'statement' AS kind, r.queryid::text AS queryid, coalesce(d.datname, '') AS datname, r.rank,
        1::bigint AS statements, r.slow::int::bigint AS slow_statements, r.calls, r.total_exec_time,
        r.max_exec_time, r.rows, r.shared_blks_hit, r.shared_blks_read, r.temp_blks_written, r.blk_read_time
 FROM ranked AS r
 LEFT JOIN pg_catalog.pg_database AS d ON d.oid = r.dbid
 WHERE r.rank <= %(top)s OR r.slow
 ORDER BY r.rank
 LIMIT %(limit)s)
UNION ALL
SELECT 'total', NULL, NULL, NULL, count(*), count(*) FILTER (WHERE r.slow), coalesce(sum(r.calls), 0),
       coalesce(sum(r.total_exec_time), 0), NULL, NULL, NULL, NULL, NULL, NULL
FROM ranked AS r
