-- requires: pg_stat_statements >= 1.9
-- When pg_stat_statements was last reset: the window the statement numbers cover.
SELECT extract(epoch FROM now() - i.stats_reset)::float8 AS stats_reset_age
FROM {schema}.pg_stat_statements_info AS i
