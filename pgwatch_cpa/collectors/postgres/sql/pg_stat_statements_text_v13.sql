-- requires: pg_stat_statements >= 1.8
-- Normalised text (constants replaced by $n) of the given statements; only used when query_text is enabled.
SELECT DISTINCT ON (p.queryid) p.queryid::text AS queryid, p.query
FROM {schema}.pg_stat_statements(true) AS p
WHERE p.queryid = ANY(%(queryids)s::bigint[])
