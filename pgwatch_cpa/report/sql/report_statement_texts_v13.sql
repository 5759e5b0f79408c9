-- requires: pg_stat_statements >= 1.8
-- Opt-in (query_text): the text of the most expensive statements of the polled databases (to name the
-- statements that read a missing-index candidate) and of the given statements (the slow ones). Reads the
-- query text file; the text is normalised and truncated before it goes anywhere.
WITH t AS (
    SELECT p.queryid, d.datname, sum(p.total_exec_time) AS total_exec_time, min(p.query) AS query
    FROM {schema}.pg_stat_statements(true) AS p
    JOIN pg_catalog.pg_database AS d ON d.oid = p.dbid
    WHERE (d.datname = ANY(%(databases)s::text[]) OR p.queryid = ANY(%(queryids)s::bigint[]))
      AND p.userid IS DISTINCT FROM (SELECT r.oid FROM pg_catalog.pg_roles AS r WHERE r.rolname = current_user)
      AND p.queryid IS NOT NULL
    GROUP BY p.queryid, d.datname
)
(SELECT t.queryid::text AS queryid, t.datname, t.total_exec_time, t.query
 FROM t WHERE t.datname = ANY(%(databases)s::text[])
 ORDER BY t.total_exec_time DESC, t.queryid LIMIT %(limit)s)
UNION
SELECT t.queryid::text, t.datname, t.total_exec_time, t.query FROM t WHERE t.queryid = ANY(%(queryids)s::bigint[])
